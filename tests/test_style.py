"""The code stays ruff-clean and type-checks (configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent


def test_ruff_is_clean():
    out = subprocess.run([BIN / "ruff", "check", "spxdask", "tests", "benchmarks"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout[-3000:]


def test_mypy_is_clean():
    out = subprocess.run([BIN / "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]


def test_every_row_of_the_fault_table_names_tests_that_exist():
    """docs/faults.md: each row names its tests as ``file.py::test`` (or a file), and each
    exists, so a renamed or removed test cannot leave a row pointing at nothing."""
    import re

    tests = Path(__file__).parent
    rows = [line for line in (tests.parent / "docs" / "faults.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| fault") and not line.startswith("|---")]
    assert len(rows) > 30
    for row in rows:
        refs = re.findall(r"`(test_\w+\.py)(?:::(test_\w+))?", row.rsplit("|", 2)[1])
        assert refs, f"no test named in: {row}"
        for file, name in refs:
            source = (tests / file).read_text()
            assert not name or f"def {name}(" in source, f"{file}::{name} does not exist ({row[:60]}…)"
