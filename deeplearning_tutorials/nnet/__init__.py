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
first time a graph holding them is compiled (:mod:`deeplearning_tutorials.dispatch`).
Nothing else of PyTensor changes.
"""

from deeplearning_tutorials import dispatch
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


dispatch.NUMBA.add("deeplearning_tutorials.nnet.numba", *_OPS)
dispatch.JAX.add("deeplearning_tutorials.nnet.jax", *_OPS)

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
