"""The run at a glance: one self-contained page per run, made from the run's own outputs
(:mod:`.facts` what it shows, read in bounded amounts; :mod:`.figures` the figures;
:mod:`.page` the HTML)."""

from .facts import RunFacts, counts, gather
from .page import render, write_report

__all__ = ["RunFacts", "counts", "gather", "render", "write_report"]
