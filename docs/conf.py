"""Sphinx configuration of spxdask's docs (``make docs``: warnings are errors)."""

import shutil
from pathlib import Path

from spxdask import __version__

HERE = Path(__file__).parent
# the notebooks live beside the package (the test suite runs them); the docs render a copy
shutil.copytree(HERE.parent / "notebooks", HERE / "notebooks", dirs_exist_ok=True)

project = "spxdask"
author = "the spxdask developers"
copyright = "2026, the spxdask developers"  # noqa: A001 - Sphinx's name
release = version = __version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "numpydoc", "myst_nb"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "notebooks/.ipynb_checkpoints"]
nb_execution_mode = "off"  # executed by tests/test_notebooks.py; no network, no cluster at build time
myst_heading_anchors = 3

autosummary_generate = True
templates_path = ["_templates"]  # classes: their own members, not those of dict, enum or WorkerPlugin
autodoc_typehints = "none"  # numpydoc sections say the types
autodoc_default_options = {"members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = {"PR01", "PR02", "PR03", "PR10"}  # every parameter, by its name, in order

html_theme = "alabaster"
html_title = f"spxdask {release}"
html_static_path: list[str] = []
