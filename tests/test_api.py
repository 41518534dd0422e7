"""The public API's shape: options are keyword-only, except in the reference's signatures
(listed in ``spxdask.compat``), as photutils holds its API."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

from spxdask.compat import REFERENCE_SIGNATURES

PUBLIC = ["spxdask", "spxdask.archive", "spxdask.batch", "spxdask.catalog", "spxdask.cluster", "spxdask.drizzle3d",
          "spxdask.layout", "spxdask.manifest", "spxdask.per_image", "spxdask.photometry", "spxdask.report", "spxdask.simulate",
          "spxdask.spectra", "spxdask.spherex", "spxdask.targets"]
#: a config object, the subject of the function it is given to, may come by position
SUBJECT = "config"


def _public_callables():
    """(qualified public name, function) of every public function and public method of a public
    class, each once, under the first package that exports it."""
    seen: set = set()
    for package in PUBLIC:
        module = importlib.import_module(package)
        names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        for name in names:
            obj = getattr(module, name)
            if not getattr(obj, "__module__", "").startswith("spxdask"):
                continue
            members = [(name, obj)] if inspect.isfunction(obj) else []
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    function = value.__func__ if isinstance(value, classmethod | staticmethod) else value
                    if not attr.startswith("_") and inspect.isfunction(function):
                        members.append((f"{name}.{attr}", function))
            for qualname, function in members:
                if function not in seen:
                    seen.add(function)
                    yield f"{package}.{qualname}", function


def test_the_walk_finds_the_api():
    names = {name for name, _ in _public_callables()}
    assert {"spxdask.batch.run_batch", "spxdask.drizzle3d.drizzle", "spxdask.per_image.write",
            "spxdask.L2File.image", "spxdask.archive.open_archive"} <= names
    assert len(names) > 100


def test_options_are_keyword_only_outside_the_reference_signatures():
    positional_options = {}
    for name, function in _public_callables():
        if name in REFERENCE_SIGNATURES:
            continue
        options = [p.name for p in inspect.signature(function).parameters.values()
                   if p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty and p.name != SUBJECT]
        if options:
            positional_options[name] = options
    assert not positional_options


def test_the_reference_signatures_keep_the_reference_order():
    """Each listed signature exists, and spxdask's own additions to it are keyword-only."""
    from spxdask.batch import aggregate_lightcurves, run_batch
    from spxdask.drizzle3d import compute_spatial_mapping, drizzle_detector

    names = {name for name, _ in _public_callables()}
    assert REFERENCE_SIGNATURES <= names
    assert list(inspect.signature(run_batch).parameters)[:4] == ["catalog", "center_ra", "center_dec", "radius"]
    assert list(inspect.signature(aggregate_lightcurves).parameters)[:6] == [
        "image_csv_dir", "lightcurve_dir", "bucket_dir", "num_buckets", "clean", "keep_bucket_files"]
    for function, added in ((drizzle_detector, "storage_options"), (compute_spatial_mapping, "kernel"),
                            (aggregate_lightcurves, "spectra")):
        assert inspect.signature(function).parameters[added].kind == inspect.Parameter.KEYWORD_ONLY


def test_the_api_reference_lists_every_public_function_and_class():
    """docs/api.rst lists them, so ``make docs`` (numpydoc validation, warnings as errors) holds
    every one to numpy sections documenting each parameter."""
    listed: dict[str, set[str]] = {}
    module = None
    for line in (Path(__file__).parents[1] / "docs" / "api.rst").read_text().splitlines():
        if line.startswith(".. currentmodule::"):
            module = line.split("::")[1].strip()
        elif re.fullmatch(r"   [A-Za-z_][A-Za-z0-9_]*", line) and module:
            listed.setdefault(module, set()).add(line.strip())
    documented = {getattr(importlib.import_module(m), n) for m, names in listed.items() for n in names}
    missing = []
    for package in PUBLIC:
        module_ = importlib.import_module(package)
        for name in module_.__all__:
            obj = getattr(module_, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj not in documented and name != "Flag":
                missing.append(f"{package}.{name}")
    assert not missing


def test_configs_show_their_fields_as_their_signature():
    """The configs' metaclass checks keywords before building; inspect, the docs (numpydoc) and
    IDEs must still see each config's own fields, not the check's (*args, **kwargs)."""
    import dataclasses

    from spxdask import PhotometryConfig
    from spxdask.archive import FetchConfig
    from spxdask.batch import BatchConfig, SpectraConfig
    from spxdask.drizzle3d import Drizzle3DConfig
    from spxdask.simulate import SimConfig

    for config in (BatchConfig, PhotometryConfig, SpectraConfig, Drizzle3DConfig, FetchConfig, SimConfig):
        assert list(inspect.signature(config).parameters) == [f.name for f in dataclasses.fields(config)], config
