"""README's tour runs as written: its shell block, then its Python block, in a fresh folder,
so its ids exist and its radii find sources."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

README = Path(__file__).parents[1] / "README.md"
SPXDASK = str(Path(sys.executable).with_name("spxdask"))


def _tour() -> tuple[list[list[str]], str]:
    """The tour's shell commands (comments dropped) and its Python block."""
    text = README.read_text().split("## A short tour", 1)[1]
    shell = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    python = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    commands = [shlex.split(line, comments=True) for line in shell.splitlines()]
    return [c for c in commands if c], python


def test_the_readme_tour_runs_as_written(tmp_path, monkeypatch):
    commands, python = _tour()
    assert [c[:2] for c in commands] == [["spxdask", "simulate"], ["spxdask", "batch"], ["spxdask", "lightcurve"],
                                         ["spxdask", "report"], ["spxdask", "drizzle"]]
    for command in commands:
        done = subprocess.run([SPXDASK, *command[1:]], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    for written in ("lc.png", "spec.png", "run/report.html", "cubes/drizzle_D2.fits"):
        assert (tmp_path / written).is_file(), written
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(python, str(README), "exec"), names)  # noqa: S102 - the README's own code
    assert names["summary"].measured == 0 and names["summary"].images == 36  # the shell's run, resumed
    truth = pd.read_parquet(tmp_path / "sky" / "truth" / "sources.parquet").set_index("targetid")
    tid = int(names["rows"].targetid.iloc[0])
    assert len(names["rows"]) >= 8 and len(names["spec"]) >= 3 and truth.loc[tid].amplitude > 0  # a variable source
    assert len(names["near"]) >= 10
    assert names["cubes"][2].is_file()
