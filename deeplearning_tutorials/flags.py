"""Choosing the backend and float precision of a whole tutorial run.

The original tutorials never name a backend: Theano compiled every function in
the mode its global configuration named.  We keep the lessons' calls to
``pytensor.function`` exactly as the original wrote them, and let a run pick
its mode and ``floatX`` by setting PyTensor's global flags for its duration.
The mode is one of the package's named modes (:mod:`deeplearning_tutorials.modes`,
``DLT_NUMBA`` by default) or one of PyTensor's own.  A global mode is also what
PyTensor 3.0.7 needs for ``softmax``, whose inner graph compiles with the global
default mode whatever ``function(mode=...)`` says.
"""

import contextlib
import functools
import importlib.util
import inspect
import warnings

import pytensor
from pytensor.compile.mode import get_mode

from deeplearning_tutorials.modes import DEFAULT_MODE, MODES as PACKAGE_MODES, PYTENSOR_MODES

MODES = PACKAGE_MODES + PYTENSOR_MODES
FLOATX = ("float32", "float64")


def check_mode(mode):
    """Return ``mode`` normalised to one of :data:`MODES`, or raise ValueError."""
    if mode is None:
        return None
    name = str(mode).upper()
    if name not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if name.endswith("JAX") and importlib.util.find_spec("jax") is None:
        raise ValueError(f"mode {name!r} needs jax: pip install 'deeplearning_tutorials[jax]'")
    return name


def check_floatX(floatX):
    """Return ``floatX`` if it is ``'float32'`` or ``'float64'``, else raise ValueError."""
    if floatX is None:
        return None
    if floatX not in FLOATX:
        raise ValueError(f"unknown floatX {floatX!r}: choose float32 or float64")
    return floatX


def with_flags(function):
    """Give a tutorial function keyword-only ``mode`` and ``floatX`` arguments.

    The wrapped function runs with ``pytensor.config.mode`` set to the mode named
    ``mode`` (:data:`~deeplearning_tutorials.modes.DEFAULT_MODE` when None) and
    ``pytensor.config.floatX`` to ``floatX`` (when given), so every
    ``pytensor.function`` it compiles uses them.
    """

    @functools.wraps(function)
    def wrapper(*args, mode=None, floatX=None, **kwargs):
        name = check_mode(mode) or DEFAULT_MODE
        flags = {"mode": get_mode(name)}
        if check_floatX(floatX) is not None:
            flags["floatX"] = floatX
        with pytensor.config.change_flags(**flags), _quiet_about_blas(name):
            return function(*args, **kwargs)

    signature = inspect.signature(function)
    extra = [
        inspect.Parameter("mode", inspect.Parameter.KEYWORD_ONLY, default=None),
        inspect.Parameter("floatX", inspect.Parameter.KEYWORD_ONLY, default=None),
    ]
    wrapper.__signature__ = signature.replace(
        parameters=list(signature.parameters.values()) + extra
    )
    return wrapper


@contextlib.contextmanager
def _quiet_about_blas(mode):
    """In the package's C modes, silence PyTensor's warning that it found no BLAS.

    A pip-installed PyTensor warns, at its first C compilation, that products
    will be slow; in ``DLT_CVM`` and ``DLT_C`` they go through SciPy's BLAS
    (:class:`~deeplearning_tutorials.modes.c.MatMul`), so the warning is wrong
    there.  PyTensor's own modes keep it.  The filters are restored on exit.
    """
    with warnings.catch_warnings():
        if mode in ("DLT_CVM", "DLT_C"):
            warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS",
                                    category=UserWarning)
        yield


def mode_name():
    """The name under which ``pytensor.config.mode`` is registered (or its ``str``)."""
    from pytensor.compile.mode import predefined_modes

    mode = pytensor.config.mode
    if isinstance(mode, str):
        return mode
    for name, registered in predefined_modes.items():
        if registered is mode:
            return name
    return type(mode.linker).__name__
