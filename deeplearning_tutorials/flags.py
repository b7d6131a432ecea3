"""Choosing the backend and float precision of a whole tutorial run.

The original tutorials never name a backend: Theano compiled every function in
the mode its global configuration named.  We keep the lessons' calls to
``pytensor.function`` exactly as the original wrote them, and let a run pick
its backend and ``floatX`` by setting PyTensor's global flags for its duration.
A global mode is also what PyTensor 3.0.7 needs for ``softmax``, whose inner
graph compiles with the global default mode whatever ``function(mode=...)`` says.
"""

import functools
import inspect

import pytensor

MODES = ("NUMBA", "CVM", "C", "JAX", "FAST_COMPILE")
FLOATX = ("float32", "float64")


def check_mode(mode):
    """Return ``mode`` normalised to one of :data:`MODES`, or raise ValueError."""
    if mode is None:
        return None
    name = str(mode).upper()
    if name not in MODES:
        raise ValueError(
            f"unknown mode {mode!r}: choose one of {', '.join(MODES)}"
        )
    if name == "JAX":
        try:
            import jax  # noqa: F401
        except ImportError:
            raise ValueError(
                "mode 'JAX' needs jax: pip install 'deeplearning_tutorials[jax]'"
            ) from None
        from deeplearning_tutorials import training
        from deeplearning_tutorials.nnet.jax_kernels import conv_algorithm, conv_precision

        try:
            # $DEEPLEARNING_TUTORIALS_JAX_PRECISION and _JAX_CONV, before any compile
            conv_precision()
            conv_algorithm(platform="cpu")
        except ValueError as err:
            raise training.ArgumentError(str(err)) from None
    if name == "CVM":
        from deeplearning_tutorials import training
        from deeplearning_tutorials.parallel_c import compile_jobs

        try:
            compile_jobs()  # $DLT_COMPILE_JOBS, before any compile
        except ValueError as err:
            raise training.ArgumentError(str(err)) from None
    return name


def check_floatX(floatX):
    """Return ``floatX`` if it is ``'float32'`` or ``'float64'``, else raise ValueError."""
    if floatX is None:
        return None
    if floatX not in FLOATX:
        raise ValueError(f"unknown floatX {floatX!r}: choose float32 or float64")
    return floatX


def _compiles_with_numba() -> bool:
    """Whether ``pytensor.function`` compiles with Numba under the current flags."""
    try:
        from pytensor.compile.mode import get_default_mode
        from pytensor.link.numba.linker import NumbaLinker

        return isinstance(get_default_mode().linker, NumbaLinker)
    except Exception:  # a PyTensor without Numba, a mode it cannot build
        return False


def with_flags(function):
    """Give a tutorial function keyword-only ``mode`` and ``floatX`` arguments.

    The wrapped function runs with ``pytensor.config.mode`` and
    ``pytensor.config.floatX`` set to them (when given), so every
    ``pytensor.function`` it compiles uses that backend, and inside
    :func:`~deeplearning_tutorials.backend.heap_for_large_arrays`, so that the
    minibatches reuse freed memory instead of faulting in fresh pages.
    """

    @functools.wraps(function)
    def wrapper(*args, mode=None, floatX=None, **kwargs):
        from deeplearning_tutorials.backend import heap_for_large_arrays

        flags = {}
        if check_mode(mode) is not None:
            flags["mode"] = check_mode(mode)
        if check_floatX(floatX) is not None:
            flags["floatX"] = floatX
        with pytensor.config.change_flags(**flags), heap_for_large_arrays():
            if _compiles_with_numba():
                # The C kernels' library built while the lesson reads its data.
                from deeplearning_tutorials.nnet import numba_c

                numba_c.prefetch()
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
