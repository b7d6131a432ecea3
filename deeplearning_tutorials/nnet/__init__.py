"""What Theano had and PyTensor lost: convolution and pooling, under Theano's names.

* :func:`conv2d` -- Theano 1.0's ``theano.tensor.nnet.conv2d`` (:mod:`.abstract_conv`):
  the convolution of ``(batch, in_maps, h, w)`` images with ``(n_filters, in_maps, kh, kw)``
  filters, every border mode, strides, dilation, flipped filters or not; the legacy
  ``conv.conv2d`` is :func:`.conv.conv2d`;
* :func:`pool_2d` and :func:`max_pool_2d` -- the tutorial's max pooling of the last two
  axes over non-overlapping windows (every other pooling: :mod:`deeplearning_tutorials.signal`);
* :func:`sigmoid`, :func:`hard_sigmoid`, :func:`softplus`, :func:`softmax`, :func:`relu`,
  :func:`categorical_crossentropy`, :func:`binary_crossentropy` -- Theano's ``nnet``
  functions, on PyTensor's (:mod:`.nnet`).

The Ops carry their own NumPy and C implementations. Their Numba (:mod:`.numba`)
and JAX (:mod:`.jax`) implementations are registered with PyTensor's backends the
first time a graph holding them is compiled (see :func:`register_numba` and
:func:`register_jax`). Nothing else of PyTensor changes.
"""

from pytensor.compile import optdb
from pytensor.graph.rewriting.basic import dfs_rewriter, node_rewriter

from deeplearning_tutorials.nnet.abstract_conv import conv2d
from deeplearning_tutorials.nnet.conv import Conv2d, Conv2dGradFilters, Conv2dGradInputs
from deeplearning_tutorials.nnet.nnet import (
    binary_crossentropy,
    categorical_crossentropy,
    hard_sigmoid,
    relu,
    sigmoid,
    softmax,
    softplus,
)
from deeplearning_tutorials.nnet.general_pool import Pool2d, Pool2dGrad
from deeplearning_tutorials.nnet.pad import Crop2d, Pad2d
from deeplearning_tutorials.nnet.pool import MaxPool2d, MaxPool2dGrad, max_pool_2d, pool_2d


_OPS = [Conv2d, Conv2dGradInputs, Conv2dGradFilters, MaxPool2d, MaxPool2dGrad, Pool2d, Pool2dGrad,
        Pad2d, Crop2d]


@node_rewriter(_OPS)
def register_numba(fgraph, node):
    """Register the Ops' Numba implementations; change nothing in the graph.

    Port note: importing PyTensor's Numba dispatch (which :mod:`.numba` must do
    to register) imports Numba and SciPy's BLAS, whose threads start as it loads;
    so it is not done at import, but by this rewrite, which runs in every
    ``fast_run`` mode (PyTensor's default Numba mode asks for no tag of its own),
    only on graphs that hold these Ops, before any linker converts them.
    """
    try:
        from deeplearning_tutorials.nnet import numba  # noqa: F401 (registers)
    except OSError:
        # PyTensor's Numba backend cannot start here (its cache folder, say):
        # its linker meets the same error when it imports that backend, and
        # raises it where the program can report it.
        pass
    return None


@node_rewriter(_OPS)
def register_jax(fgraph, node):
    """Register the Ops' JAX implementations; change nothing in the graph.

    Port note: importing PyTensor's JAX dispatch (which :mod:`.jax` must do to
    register) sets JAX's 64-bit flag from the ``floatX`` of that moment, so it is
    not done at import. This rewrite runs only in modes that include PyTensor's
    ``"jax"`` tag, only on graphs with these Ops, just before PyTensor's JAX
    linker imports the same dispatch itself.
    """
    from deeplearning_tutorials.nnet import jax  # noqa: F401 (registers)

    return None


optdb.register("deeplearning_tutorials_nnet_numba", dfs_rewriter(register_numba), "fast_run",
               position=0)
optdb.register("deeplearning_tutorials_nnet_jax", dfs_rewriter(register_jax), "jax", position=0)

__all__ = [
    "conv2d",
    "pool_2d",
    "max_pool_2d",
    "sigmoid",
    "hard_sigmoid",
    "softplus",
    "softmax",
    "relu",
    "categorical_crossentropy",
    "binary_crossentropy",
    "Conv2d",
    "Conv2dGradInputs",
    "Conv2dGradFilters",
    "MaxPool2d",
    "MaxPool2dGrad",
]
