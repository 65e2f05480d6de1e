"""Sphinx configuration of the scclust documentation (offline: no intersphinx, no network)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent / "src"))  # document the source tree this conf.py belongs to

project = "scclust"
author = "scclust developers"
copyright = "scclust developers"
# the version of the source tree documented (what `scclust --version` prints once installed)
release = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]["version"]
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "scclust_docs",  # generates the config reference and the walkthrough page before reading sources
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "README.md"]
templates_path = ["_templates"]

myst_enable_extensions = ["colon_fence", "deflist", "attrs_inline", "attrs_block"]
myst_heading_anchors = 3

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_member_order = "bysource"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = [("Writes", "returns_style")]

smartquotes = False  # keep "--no-resume" and quotes in option names as typed

html_theme = "furo"
html_title = f"scclust {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
