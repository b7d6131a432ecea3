"""Shared fixtures: where the real MNIST files are.

The real files are never copied into the repository. They are found through
``$DEEPLEARNING_TUTORIALS_MNIST`` (a folder holding the four IDX ``.gz`` files, with
``mnist.pkl.gz`` beside it, i.e. ``<that>/../mnist.pkl.gz``), or else in
``<repo>/../shared/data/mnist``. Without them the tests that need them skip, except under CI
(``$CI`` set), where a missing dataset is an error rather than a silent pass.
"""

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

MNIST_ENV = "DEEPLEARNING_TUTORIALS_MNIST"
REPO_ROOT = Path(__file__).resolve().parents[1]
# PyTensor's default (3.0 and 3.3): platform, processor and Python version.
COMPILEDIR_FORMAT = "compiledir_%(short_platform)s-%(processor)s-%(python_version)s-%(python_bitwidth)s"


def _own_compiledir_per_worker():
    """Under pytest-xdist (``-n``), give each worker a C compile cache of its own,
    and one BLAS thread.

    PyTensor holds its C cache's lock while the compiler runs: workers sharing one
    would compile one at a time.  The worker's name goes into the C cache's folder
    name (``compiledir_format``), under the one ``base_compiledir``, so that the
    workers still share PyTensor's Numba cache (``<base_compiledir>/numba``), which
    takes no lock.  Runs before any test module imports PyTensor or NumPy, which
    read these once.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    flags = [flag for flag in os.environ.get("PYTENSOR_FLAGS", "").split(",")
             if flag and not flag.startswith("compiledir_format=")]
    flags.append(f"compiledir_format=xdist-{worker}-{COMPILEDIR_FORMAT}")
    os.environ["PYTENSOR_FLAGS"] = ",".join(flags)
    # One BLAS thread per worker: the workers already fill the cores, and
    # OpenBLAS threads waiting for work would take turns with the other workers.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


_own_compiledir_per_worker()


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


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs: ``tmpfs(size="64k", read_only=False)`` returns its folder."""
    mounted = []

    def mount(size="64k", read_only=False):
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture(scope="module")
def jax_x64():
    """JAX with 64-bit types for a module's tests, whatever ran before (float64 stays float64)."""
    if importlib.util.find_spec("jax") is None:
        yield
        return
    import jax
    import pytensor.link.jax.dispatch  # noqa: F401 (sets x64 from floatX on first import)

    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
