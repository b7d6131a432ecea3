"""The package's Numba and JAX code, registered with PyTensor when a graph first needs it.

Each backend's code for the package's Ops lives in a module that registers it
with PyTensor when imported (``numba_funcify`` or ``jax_funcify``, for those Op
types only): :mod:`.nnet.numba`, :mod:`.nnet.jax`, :mod:`.modes.numba_dispatch`
and :mod:`.modes.jax_dispatch`. The Op's own module names that module here::

    dispatch.NUMBA.add("deeplearning_tutorials.nnet.numba", Conv2d, ...)

None of them is imported with the package: importing PyTensor's Numba dispatch
imports Numba, whose threads start as it loads, and importing its JAX dispatch
fixes JAX's 64-bit flag from the ``floatX`` of that moment. Instead,
:data:`NUMBA` runs last in every ``fast_run`` mode (PyTensor's Numba modes ask
for no tag of their own) and :data:`JAX` last in every mode with PyTensor's
``"jax"`` tag: each looks for the package's Op types in the graph about to be
linked, imports the modules that hold their code, and changes nothing in the
graph.
"""

import importlib

from pytensor.compile import optdb
from pytensor.graph.rewriting.basic import GraphRewriter

__all__ = ["LazyDispatch", "NUMBA", "JAX", "NUMBA_TAG"]


class LazyDispatch(GraphRewriter):
    """Imports the module that holds a backend's code for each Op type in a graph.

    Parameters
    ----------
    backend : str
        The backend's name, for messages.
    unavailable : tuple of exception types
        What importing PyTensor's dispatch raises where the backend cannot run
        here (Numba's cache folder is a file; JAX is not installed). Then
        nothing is registered, and PyTensor's linker, importing the same
        dispatch, raises the error where the program reports it.
    """

    def __init__(self, backend, unavailable):
        self.backend = backend
        self.unavailable = unavailable
        self.modules = {}

    def add(self, module, *op_types):
        """Name ``module`` as the one that registers ``op_types``' code."""
        for op_type in op_types:
            self.modules[op_type] = module

    def load(self, op_type):
        """Import the module with ``op_type``'s code; whether it is registered."""
        try:
            importlib.import_module(self.modules[op_type])
        except self.unavailable:
            return False
        return True

    def apply(self, fgraph):
        for op_type in {type(node.op) for node in fgraph.apply_nodes} & self.modules.keys():
            self.load(op_type)

    def __str__(self):
        return f"LazyDispatch({self.backend})"


#: The Numba code of the package's Ops.
NUMBA = LazyDispatch("numba", (OSError,))
#: The JAX code of the package's Ops.
JAX = LazyDispatch("jax", (ImportError,))

#: The name (and tag) of :data:`NUMBA` in PyTensor's rewrite database. The
#: package's C and JAX modes exclude it: their linkers never call Numba, so
#: compiling in them need not import it.
NUMBA_TAG = "deeplearning_tutorials_numba_dispatch"

# After every rewrite (the last of PyTensor's run at 110), so that the Ops a
# rewrite introduces are seen too.
optdb.register(NUMBA_TAG, NUMBA, "fast_run", position=1000)
optdb.register("deeplearning_tutorials_jax_dispatch", JAX, "jax", position=1000)
