"""Sphinx configuration for the samprompt documentation."""

from __future__ import annotations

import sys
from pathlib import Path

import samprompt

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "samprompt"
author = "samprompt developers"
release = samprompt.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
    "cli_reference",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
nitpicky = False
html_theme = "furo"
html_title = f"samprompt {release}"
html_static_path = ["_static"]
pygments_style = "friendly"
exclude_patterns = ["_build", "_results_table.rst"]
