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
    "myst_parser",
    "astrogen_docs",
]
# the user guide, the SLURM and architecture pages and the generated benchmarks page are
# Markdown (MyST: the README's former sections, tables as written)
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
autosummary_generate = True
autosummary_imported_members = False
# ignore-module-all: a module page documents what the module defines, not what it re-exports
# (``astrogen`` and the subpackages re-export names documented on their own modules' pages)
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_typehints = "none"
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
# the "Output" section of the stage docstrings (what the stage passes on)
napoleon_custom_sections = ["Output"]
# an ambiguous cross-reference (the same attribute name on several classes, e.g. ``kind``)
# resolves to one of them; not an error of the docstrings
suppress_warnings = ["ref.python"]
exclude_patterns = ["_build", "tutorials/*.py", "_generated/tutorials/*/*"]
html_theme = "pydata_sphinx_theme"
html_title = f"astrogen {version}"


def _skip_keras_docstrings(app, what, name, obj, skip, options):
    """Leave out methods without a docstring of their own whose text would be inherited from
    Keras (``from_config``, ``get_config``...): Keras's docstrings are not numpydoc."""
    if skip or not callable(obj) or getattr(obj, "__doc__", "") is not None:
        return None
    import keras

    if hasattr(keras.Model, name) or hasattr(keras.layers.Layer, name):
        return True
    return None


def setup(app):
    """Connect the docs' own event handlers."""
    app.connect("autodoc-skip-member", _skip_keras_docstrings)
