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

from docutils import nodes
from sphinx.transforms import SphinxTransform

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
# docs/benchmarks/ holds tables the benchmarks write; pages include them.
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "locale", "benchmarks"]
html_theme = "alabaster"
html_static_path = ["_static"]
html_css_files = ["tables.css"]
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


class _MeasuredFiguresUntranslated(SphinxTransform):
    """Leave measured figures out of translation.

    Two kinds of content hold names and numbers that change with every run:
    the tables the benchmarks write (``docs/benchmarks/``, included by the
    pages) and the body of a table marked ``:class: measured``.  Marking them
    untranslatable keeps them out of the catalogs, so that new figures need no
    new translation; the Chinese edition shows them as they are, with its own
    column headings.
    """

    default_priority = 5  # before Sphinx's Locale transform (20)

    def apply(self, **kwargs):
        generated = os.path.join(os.path.abspath(self.env.srcdir), "benchmarks") + os.sep
        for node in self.document.findall(nodes.Element):
            if node.source and os.path.abspath(node.source).startswith(generated):
                node["translatable"] = False
        for table in self.document.findall(nodes.table):
            if "measured" in table["classes"]:
                for body in table.findall(nodes.tbody):
                    for node in body.findall(nodes.Element):
                        node["translatable"] = False


def setup(app):
    app.add_transform(_MeasuredFiguresUntranslated)
    app.connect("autodoc-skip-member", _skip_undocumented)
    # after numpydoc (priority 500) has rewritten the docstring
    app.connect("autodoc-process-docstring", _no_docstrings_in_catalogs, priority=900)
