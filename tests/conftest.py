"""Shared fixtures: where the real MNIST files are.

The real files are never copied into the repository. They are found through
``$DEEPLEARNING_TUTORIALS_MNIST`` (a folder holding the four IDX ``.gz`` files, with
``mnist.pkl.gz`` beside it, i.e. ``<that>/../mnist.pkl.gz``), or else in
``<repo>/../shared/data/mnist``. Without them the tests that need them skip, except under CI
(``$CI`` set), where a missing dataset is an error rather than a silent pass.
"""

import os
from pathlib import Path

import pytest

MNIST_ENV = "DEEPLEARNING_TUTORIALS_MNIST"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _missing(what):
    message = (
        f"real MNIST not found ({what}); set ${MNIST_ENV} to the folder holding the IDX files"
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _mnist_folder():
    override = os.environ.get(MNIST_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / "data" / "mnist").resolve()


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder holding the four real MNIST IDX files (``pathlib.Path``)."""
    folder = _mnist_folder()
    if not folder.is_dir():
        _missing(f"no folder {folder}")
    return folder


@pytest.fixture(scope="session")
def mnist_pkl():
    """The real ``mnist.pkl.gz``, beside the IDX folder (``pathlib.Path``)."""
    path = _mnist_folder().parent / "mnist.pkl.gz"
    if not path.is_file():
        _missing(f"no file {path}")
    return path
