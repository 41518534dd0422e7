"""Which archive a run reads: a local / fsspec archive of L2 files, or a TAP service."""

from __future__ import annotations

from pathlib import Path

from .._io import is_remote
from ..cluster import setting
from ..layout import RunLayout
from .irsa import IrsaArchive
from .local import LocalArchive


def open_archive(*, archive: str | None = None, tap_url: str | None = None, run_dir: str | Path | None = None,
                 index_path: str | Path | None = None, storage_options: dict | None = None,
                 client=None) -> LocalArchive | IrsaArchive:
    """The archive to query, for the batch pipeline and the drizzle alike.

    Parameters
    ----------
    archive : str, optional
        A local folder or fsspec URL of L2 files, only ever read. Its index is kept at
        ``index_path``, else in ``run_dir`` when it is remote, else in the user's cache
        (:func:`~spxdask.archive.local.default_index`), where later runs reuse it.
    tap_url : str, optional
        The TAP service to query when no ``archive`` is given (default: the
        ``spxdask.irsa.tap_url`` setting, IRSA; download URLs start with the
        ``spxdask.irsa.data_root`` setting).
    run_dir : path, optional
        The run folder (its ``archive_index.parquet`` holds a remote archive's index).
    index_path : path, optional
        Where the archive's index lives (``BatchConfig.archive_index``, ``--index``).
    storage_options : dict, optional
        fsspec options for a remote archive.
    client : distributed.Client, optional
        Where an archive's index is brought up to date (default: the running Client, else threads).

    Returns
    -------
    LocalArchive or IrsaArchive
        Its ``query`` answers a :class:`~spxdask.archive.RegionQuery`.
    """
    if archive:
        if index_path is None and run_dir is not None and is_remote(archive):
            index_path = RunLayout(Path(run_dir)).archive_index
        return LocalArchive(archive, index_path=index_path, storage_options=storage_options, client=client)
    return IrsaArchive(tap_url or setting("irsa.tap_url"), data_root=setting("irsa.data_root"))
