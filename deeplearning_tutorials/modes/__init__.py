"""The package's named modes: PyTensor's backends with the rewrites the tutorials want.

Importing this package registers four modes with
:func:`pytensor.compile.mode.register_mode`, one per backend:

=============  ==============================================================
``DLT_NUMBA``  PyTensor's ``NUMBA`` mode (the programs' default), with a
               shape check and a constant array that compile in a fraction
               of the time (:mod:`.numba`)
``DLT_CVM``    PyTensor's ``CVM`` mode (a C module per node, run by a C loop),
               with matrix products through SciPy's BLAS, a convolution and
               its pooling in one node (:mod:`.c`), the nodes whose work is a
               NumPy call of microseconds in Python, and each node's arrays
               kept from one call to the next (PyTensor's ``cvm_nogc`` linker)
``DLT_C``      PyTensor's ``C`` mode (the whole function as one C module,
               compiled without debugging information), with the same C code
``DLT_JAX``    PyTensor's ``JAX`` mode with the minibatch slices of ``givens``
               made static-length (:mod:`.jax`), and the datasets kept on the
               device
=============  ==============================================================

Use them by name once this package is imported::

    import deeplearning_tutorials.modes
    f = pytensor.function([index], cost, givens=..., mode="DLT_CVM")

The rewrites these modes add are registered under the package's own tags, so
PyTensor's own modes never run them: ``mode="NUMBA"``, ``"CVM"``, ``"C"`` and
``"JAX"`` stay PyTensor's, and the package's Ops work there too.
"""

from pytensor.compile.mode import Mode, get_mode, predefined_modes, register_mode
from pytensor.link.c.basic import CLinker

from deeplearning_tutorials import dispatch
from deeplearning_tutorials.modes import c, jax, numba

__all__ = ["MODES", "PYTENSOR_MODES", "DEFAULT_MODE", "WholeGraphCLinker"]

#: The package's modes, and PyTensor's own that the programs also accept.
MODES = ("DLT_NUMBA", "DLT_CVM", "DLT_C", "DLT_JAX")
PYTENSOR_MODES = ("NUMBA", "CVM", "C", "JAX", "FAST_COMPILE")
DEFAULT_MODE = "DLT_NUMBA"


class WholeGraphCLinker(CLinker):
    """PyTensor's whole-graph C linker, compiling without debugging information.

    Mode ``C`` compiles a whole function into one C module; PyTensor asks the
    compiler for debugging information (``-g``), about half of the compile time
    for a module of this size. ``-g0`` overrides it; the code and its
    optimisation (``-O3``) are unchanged, and the flag is part of the module's
    cache key.
    """

    def compile_args(self):
        return [*super().compile_args(), "-g0"]


def _c_mode(name, linker=None, *tags):
    mode = get_mode(name).including(c.TAG, *tags).excluding(dispatch.NUMBA_TAG)
    return mode if linker is None else Mode(linker, mode.provided_optimizer)


def _register():
    if "DLT_NUMBA" in predefined_modes:
        return
    register_mode("DLT_NUMBA", get_mode("NUMBA").including(numba.TAG))
    # Without garbage collection between nodes, each node's C code writes into
    # the arrays of the previous call instead of new ones: a training step
    # allocates (and the system zeroes) no fresh memory. It keeps the arrays
    # of every node alive between calls, memory PyTensor would free.
    register_mode("DLT_CVM", _c_mode("CVM", "cvm_nogc", c.CVM_TAG))
    register_mode("DLT_C", _c_mode("C", WholeGraphCLinker(), c.C_TAG))
    register_mode("DLT_JAX", jax.jax_mode())


_register()
