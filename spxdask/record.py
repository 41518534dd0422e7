"""``run.yaml``: how a run was made (its config, the versions, stage times and summary),
rewritten as each stage ends. Secrets never reach it: storage options keep their keys only."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from ._io import atomic_path

#: the packages whose versions a run records
PACKAGES = ("spxdask", "numpy", "astropy", "pandas", "pyarrow", "dask", "distributed", "hats", "lsdb", "numba")


def versions() -> dict[str, str]:
    """The installed versions of :data:`PACKAGES`."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _redacted(value: Any) -> Any:
    """Storage options with every value hidden (keys, secrets and tokens live there)."""
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return "<redacted>"


def write_run_record(path: Path, config: dict[str, Any], summary: Any) -> None:
    """Write ``run.yaml`` atomically.

    Parameters
    ----------
    path : Path
        ``RunLayout.run_record``.
    config : dict
        The run's config (``BatchConfig.to_dict()``); its ``storage_options`` are redacted.
    summary : RunSummary
        What the run did so far.
    """
    config = dict(config)
    if config.get("storage_options"):
        config["storage_options"] = _redacted(config["storage_options"])
    record = {"written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "versions": versions(),
              "config": config, "summary": asdict(summary)}
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(record, sort_keys=False))


def read_run_record(path: Path) -> dict[str, Any]:
    """A ``run.yaml`` (an empty record when there is none).

    Parameters
    ----------
    path : Path

    Returns
    -------
    dict
        ``written``, ``versions``, ``config``, ``summary``.
    """
    if not Path(path).exists():
        return {}
    return yaml.safe_load(Path(path).read_text()) or {}
