"""Sphinx configuration for the samprompt documentation."""

from __future__ import annotations

import samprompt

project = "samprompt"
author = "samprompt developers"
release = samprompt.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
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
html_static_path: list[str] = []
exclude_patterns = ["_build"]
