"""Sphinx configuration for the annotated tutorial (English master, Chinese via gettext).

Build the two editions with::

    sphinx-build -W -b html docs docs/_build/html/en
    sphinx-build -W -b html -D language=zh_CN docs docs/_build/html/zh_CN

and refresh the Chinese catalogs after changing English prose with::

    sphinx-build -b gettext docs docs/_build/gettext
    sphinx-intl update -p docs/_build/gettext -l zh_CN -d docs/locale
"""

import os
import sys

# The package is installed (editable) in the project's environment; the path
# below lets a bare checkout build too.  autodoc imports the package, which
# needs neither MNIST nor the network.
sys.path.insert(0, os.path.abspath(".."))

project = "Deep Learning Tutorials for PyTensor"
author = "the deeplearning_tutorials authors"
copyright = "2008-2013, LISA lab (original tutorials); the port's authors (this port)"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
]

# No network at build time: no intersphinx, no remote images.
templates_path = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "locale"]
html_theme = "alabaster"
html_static_path = []
html_theme_options = {
    "page_width": "1100px",
    "sidebar_width": "230px",
    "fixed_sidebar": True,
}

# Chinese edition: gettext catalogs in docs/locale/<lang>/LC_MESSAGES/<page>.po,
# one catalog per page.
locale_dirs = ["locale/"]
gettext_compact = False
gettext_uuid = False
gettext_location = False

# autodoc / numpydoc
autodoc_member_order = "bysource"
# Inherited docstrings belong to PyTensor and are not written for these pages.
autodoc_inherit_docstrings = False
autodoc_default_options = {"members": True, "undoc-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# literalinclude of the lessons: the code is Python throughout.
highlight_language = "python3"


def _no_docstrings_in_catalogs(app, what, name, obj, options, lines):
    """Keep API docstrings out of the translation catalogs.

    The API reference shows the docstrings as the code states them, in English,
    in both editions; translating them would make every docstring edit an
    untranslated catalog entry.  Only the gettext builder is affected.
    """
    if app.builder is not None and app.builder.name == "gettext":
        lines[:] = []


def _skip_undocumented(app, what, name, obj, skip, options):
    """Leave out members without a docstring of their own.

    With ``autodoc_inherit_docstrings`` off, an Op's ``perform`` or
    ``c_code_cache_version`` without a docstring would still be formatted by
    numpydoc from PyTensor's inherited text; such members are not the
    tutorial's API.
    """
    if skip:
        return True
    if callable(obj) and getattr(obj, "__doc__", None) is None:
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_undocumented)
    # after numpydoc (priority 500) has rewritten the docstring
    app.connect("autodoc-process-docstring", _no_docstrings_in_catalogs, priority=900)
