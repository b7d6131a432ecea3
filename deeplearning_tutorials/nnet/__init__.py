"""What Theano had and PyTensor lost: convolution and pooling, under Theano's names.

* :func:`conv2d` -- Theano's legacy ``conv.conv2d``: a true ('valid', flipped-kernel)
  convolution of ``(batch, in_maps, h, w)`` images with ``(n_filters, in_maps, kh, kw)`` filters;
* :func:`pool_2d` and :func:`max_pool_2d` -- non-overlapping max pooling of the last two axes.

Importing this package registers the Numba and (when JAX is installed) JAX
implementations of the Ops with PyTensor's backends.
"""

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


def _register_backends():
    from deeplearning_tutorials.nnet import numba_kernels

    numba_kernels.register_numba_dispatch()
    try:
        import jax  # noqa: F401
    except ImportError:  # JAX is optional: without it the JAX backend is simply unavailable.
        return
    from deeplearning_tutorials.nnet import jax_kernels

    jax_kernels.register_jax_dispatch()


_register_backends()

# JAX minibatch slicing, softmax on C, BLAS fallback, device-resident datasets (importable without JAX).
from deeplearning_tutorials.nnet import jax_givens  # noqa: E402, F401
