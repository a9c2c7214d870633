"""Sphinx configuration of the astrogen docs (``make docs``)."""
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))

from astrogen.version import __version__  # noqa: E402

project = "astrogen"
author = "astrogen developers"
release = version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "astrogen_docs",
]
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
exclude_patterns = ["_build", "tutorials/*.py", "_generated/tutorials/*/*"]
html_theme = "pydata_sphinx_theme"
html_title = f"astrogen {version}"
