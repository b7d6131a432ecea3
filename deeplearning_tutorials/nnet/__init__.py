"""What Theano had and PyTensor lost: convolution and pooling, under Theano's names.

* :func:`conv2d` -- Theano's legacy ``conv.conv2d``: a true ('valid', flipped-kernel)
  convolution of ``(batch, in_maps, h, w)`` images with ``(n_filters, in_maps, kh, kw)`` filters;
* :func:`pool_2d` and :func:`max_pool_2d` -- non-overlapping max pooling of the last two axes.

Importing this package registers the JAX implementations of the Ops (when JAX is
installed) with PyTensor's backends, and the Numba ones the first time PyTensor's
Numba backend compiles a graph (:func:`register_numba`).
"""

import functools

from deeplearning_tutorials.nnet.conv import (
    Conv2d,
    Conv2dGradFilters,
    Conv2dGradInputs,
    conv2d,
)
from deeplearning_tutorials.nnet.pool import MaxPool2d, MaxPool2dGrad, max_pool_2d, pool_2d

__all__ = [
    "conv2d",
    "pool_2d",
    "max_pool_2d",
    "Conv2d",
    "Conv2dGradInputs",
    "Conv2dGradFilters",
    "MaxPool2d",
    "MaxPool2dGrad",
]


_numba = {"registered": False}


def register_numba():
    """Register the Numba implementations of the Ops (and of the backend's own Ops), once.

    Port note: this imports Numba and PyTensor's Numba backend, half a second
    that a run on the C or JAX backend need not pay; importing this package
    therefore makes PyTensor call it the first time its Numba linker converts a
    graph (:func:`_register_numba_on_first_use`), before any Numba function of
    these Ops is asked for.
    """
    if _numba["registered"]:
        return
    from deeplearning_tutorials import backend, numba_ops
    from deeplearning_tutorials.nnet import numba_kernels

    numba_kernels.register_numba_dispatch()
    backend.register_numba_funcify()
    numba_ops.register_numba_funcify()
    _numba["registered"] = True


def _register_numba_on_first_use():
    try:
        from pytensor.link.numba.linker import NumbaLinker
    except ImportError:  # a PyTensor without a Numba backend
        return
    # Even when PyTensor's Numba backend is already imported, registering waits
    # for the first conversion: this runs while ``backend`` is still being
    # imported (it imports this package), so registering now would find its
    # Numba functions not yet defined.
    convert = NumbaLinker.fgraph_convert
    if getattr(convert, "registers_deeplearning_tutorials", False):
        return
    jit_compile = NumbaLinker.jit_compile

    @functools.wraps(convert)
    def fgraph_convert(self, *args, **kwargs):
        register_numba()
        # The order of the graph function's calls, for numba_ahead.
        self._dlt_order = kwargs.get("order")
        return convert(self, *args, **kwargs)

    @functools.wraps(jit_compile)
    def jit_compile_entry_point(self, fn_and_key):
        # The graph's own function as the entry point: one pass of LLVM less
        # over the whole graph (numba_ops.entry_point says why).
        from deeplearning_tutorials import numba_ops

        entry = numba_ops.entry_point(fn_and_key)
        if entry is None:
            return jit_compile(self, fn_and_key)
        order = getattr(self, "_dlt_order", None)
        if order is not None:
            # Its node functions compiled on the second core meanwhile.
            from deeplearning_tutorials import numba_ahead

            numba_ahead.start(entry, list(order))
        return entry

    fgraph_convert.registers_deeplearning_tutorials = True
    NumbaLinker.fgraph_convert = fgraph_convert
    NumbaLinker.jit_compile = jit_compile_entry_point


def _register_backends():
    _register_numba_on_first_use()
    try:
        import jax  # noqa: F401
    except ImportError:  # JAX is optional: without it the JAX backend is simply unavailable.
        return
    from deeplearning_tutorials.nnet import jax_kernels

    jax_kernels.register_jax_dispatch()


_register_backends()

# JAX minibatch slicing, softmax on C, BLAS fallback, device-resident datasets (importable without JAX).
from deeplearning_tutorials.nnet import jax_givens  # noqa: E402, F401
