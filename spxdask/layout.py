"""The folder of a run: the one place its files' names are spelled.

::

    <root>/
      query.parquet, query_summary.yaml   observations found
      archive_index.parquet               the index of a remote archive (remote roots stay read-only)
      images/D<n>/<file>.fits             downloads (none when files are read in place)
      targets/<role>-<key>/               flat input catalogs laid out as HATS (:mod:`spxdask.targets`)
      per_image/<obs_id>_D<n>.parquet     one file per image (:mod:`spxdask.per_image`)
      catalog/                            the HATS collection: catalog and margin (a link to its current version)
      spectra/, sources.parquet           flat channel spectra; per-source summaries
      lightcurves_csv/<targetid>.csv      optional, reference-compatible export
      manifest.parquet                    per image: status, error, timings
      run.yaml                            how the run was made: config, versions, times, summary
      report.html                         the run at a glance (one self-contained page)
      performance-report-<stage>.html     Dask's performance report of each stage
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunLayout", "catalog_folder"]


@dataclass(frozen=True)
class RunLayout:
    """Where each output of a run lies.

    Parameters
    ----------
    root : Path
        The run folder (``BatchConfig.output_dir``, ``Drizzle3DConfig.output_dir``).
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def query(self) -> Path:
        """The observations found (Parquet)."""
        return self.root / "query.parquet"

    @property
    def query_summary(self) -> Path:
        """The reference's summary of the query (YAML)."""
        return self.root / "query_summary.yaml"

    @property
    def archive_index(self) -> Path:
        """The index of a remote archive, kept in the run (a remote root is only read)."""
        return self.root / "archive_index.parquet"

    @property
    def images(self) -> Path:
        """Downloaded files, in ``D<n>/`` folders."""
        return self.root / "images"

    @property
    def targets(self) -> Path:
        """The input catalogs (targets, neighbours) laid out for per-image reads."""
        return self.root / "targets"

    @property
    def per_image(self) -> Path:
        """The per-image Parquet files."""
        return self.root / "per_image"

    @property
    def catalog(self) -> Path:
        """The HATS catalog of light curves and spectra."""
        return self.root / "catalog"

    @property
    def spectra(self) -> Path:
        """A link to the catalog's flat channel spectra."""
        return self.root / "spectra"

    @property
    def sources(self) -> Path:
        """Per-source summaries (Parquet)."""
        return self.root / "sources.parquet"

    @property
    def csv(self) -> Path:
        """The reference-layout per-source CSV files."""
        return self.root / "lightcurves_csv"

    @property
    def manifest(self) -> Path:
        """Per image: status, error, timings (Parquet)."""
        return self.root / "manifest.parquet"

    @property
    def run_record(self) -> Path:
        """How the run was made: its config, versions, stage times and summary (YAML)."""
        return self.root / "run.yaml"

    @property
    def report(self) -> Path:
        """The run at a glance: one self-contained HTML page."""
        return self.root / "report.html"

    def performance_report(self, stage: str) -> Path:
        """Dask's performance report of one stage.

        Parameters
        ----------
        stage : str
            "download", "extract", "aggregate", "drizzle".

        Returns
        -------
        Path
        """
        return self.root / f"performance-report-{stage}.html"

    def is_run(self) -> bool:
        """Whether the folder holds a run's catalog or per-image files."""
        return self.catalog.is_symlink() or self.catalog.is_dir() or self.per_image.is_dir()


def catalog_folder(path: str | Path) -> Path:
    """The catalog a reader opens: ``path`` itself when it is a catalog (or nothing yet), its
    ``catalog/`` when ``path`` is a run folder.

    Parameters
    ----------
    path : path
        A catalog folder (as ``lsdb.open_catalog`` takes), or a run folder.

    Returns
    -------
    Path
        The catalog folder.
    """
    path = Path(path)
    run = RunLayout(path)
    if not path.is_symlink() and run.is_run() and not (path / "properties").exists():
        return run.catalog
    return path
