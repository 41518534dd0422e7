"""The reference package's knobs that spxdask accepts and ignores, in one place.

spxquery 0.4.1 sized thread and process pools and hash buckets by hand; here Dask schedules
the work and the light curves are partitions of a HATS catalog, so these settings have no effect. They are kept
so that the reference's code and configuration files run unchanged, and setting one to
anything but the reference's default says so with a :class:`ReferenceKnobWarning` at the call.
"""

from __future__ import annotations

import warnings
from typing import Any

_NO_BUCKETS = "light curves are HEALPix partitions of a catalog, not hash-bucket CSV files"
#: knob -> (reference default, why it has no effect)
KNOBS: dict[str, tuple[Any, str]] = {
    "BatchConfig.max_extract_workers": (12, "the Dask cluster decides how many images are measured at once"),
    "BatchConfig.num_buckets": (64, _NO_BUCKETS),
    "BatchConfig.keep_bucket_files": (False, _NO_BUCKETS),
    "PhotometryConfig.max_processing_workers": (10, "the Dask cluster decides how work runs in parallel"),
    "Drizzle3DConfig.skip_existing": (True, "drizzle cubes are replaced only with overwrite=True"),
    "run_extraction.n_workers": (12, "the Dask cluster decides how many images are measured at once"),
    "aggregate_lightcurves.bucket_dir": (None, _NO_BUCKETS),
    "aggregate_lightcurves.num_buckets": (64, _NO_BUCKETS),
    "aggregate_lightcurves.keep_bucket_files": (False, _NO_BUCKETS),
}


#: The functions whose signatures are the reference's (spxquery 0.4.1): their parameters keep
#: the reference's names and order, and may be given by position. Every other public function
#: takes its options (parameters with defaults) by keyword only (``tests/test_api.py``).
REFERENCE_SIGNATURES = frozenset({
    "spxdask.batch.aggregate_lightcurves", "spxdask.batch.load_catalog", "spxdask.batch.process_single_image",
    "spxdask.batch.query_region_observations", "spxdask.batch.run_batch", "spxdask.batch.run_extraction",
    "spxdask.batch.BatchPipeline.run_query", "spxdask.batch.BatchPipeline.run_download",
    "spxdask.batch.BatchPipeline.run_extract", "spxdask.batch.BatchPipeline.run_aggregate",
    "spxdask.batch.BatchPipeline.run_all",
    "spxdask.drizzle3d.drizzle", "spxdask.drizzle3d.drizzle_detector", "spxdask.drizzle3d.build_output_wcs",
    "spxdask.drizzle3d.build_z_grid_custom", "spxdask.drizzle3d.build_z_grid_native",
    "spxdask.drizzle3d.build_z_grid_oversampled", "spxdask.drizzle3d.compute_spatial_mapping",
    "spxdask.drizzle3d.load_cube", "spxdask.drizzle3d.save_cube",
})


class ReferenceKnobWarning(UserWarning):
    """A setting of the reference package was given a value that spxdask ignores."""


def ignored(owner: str, _stacklevel: int = 3, **values: Any) -> None:
    """Warn for each of ``owner``'s reference-only settings given a non-default value
    (``_stacklevel``: the caller to blame, as for :func:`warnings.warn`)."""
    for name, value in values.items():
        default, why = KNOBS[f"{owner}.{name}"]
        if value != default:
            warnings.warn(f"{owner}.{name}={value!r} is accepted for compatibility with spxquery and ignored: {why}",
                          ReferenceKnobWarning, stacklevel=_stacklevel)


def check_config(config: Any) -> None:
    """:func:`ignored` for every reference-only field of a config dataclass (called from its
    ``__post_init__``: the warning points at the code that built the config)."""
    owner = type(config).__name__
    fields = [k.split(".", 1)[1] for k in KNOBS if k.startswith(owner + ".")]
    ignored(owner, 6, **{name: getattr(config, name) for name in fields})  # 6: past the configs' metaclass call
