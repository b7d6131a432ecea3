"""The small functions of Theano's ``theano.tensor.nnet.nnet``, built on PyTensor.

* :func:`sigmoid` -- the logistic function (PyTensor's ``sigmoid``);
* :func:`hard_sigmoid` -- Theano's piecewise-linear sigmoid;
* :func:`softplus` -- ``log(1 + exp(x))`` (PyTensor's ``softplus``);
* :func:`softmax` -- row-wise softmax of a vector or a matrix (PyTensor's
  ``softmax`` over the last axis);
* :func:`relu` -- Theano 1.0's rectifier, leaky with ``alpha``;
* :func:`categorical_crossentropy` -- against a distribution or integer labels;
* :func:`binary_crossentropy` -- elementwise, Theano's formula.

They build ordinary PyTensor graphs (no Ops of their own), so every backend
compiles them and PyTensor's rewrites (stable log-softmax, ``log1p``, ...) apply.
"""

import warnings

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable
from pytensor.tensor.special import softmax as _pt_softmax
from pytensor.tensor.type import float_dtypes, integer_dtypes

__all__ = ["sigmoid", "hard_sigmoid", "softplus", "softmax", "relu", "categorical_crossentropy",
           "binary_crossentropy"]


def sigmoid(x):
    """The logistic function ``1 / (1 + exp(-x))``, elementwise.

    Parameters
    ----------
    x : tensor_like
        The pre-activations.

    Returns
    -------
    TensorVariable
        Same shape as ``x``; integer inputs give floats, as in Theano.
    """
    return pt.sigmoid(x)


def hard_sigmoid(x):
    """Theano's ``hard_sigmoid``: ``clip(0.2 * x + 0.5, 0, 1)``, elementwise.

    Parameters
    ----------
    x : tensor_like

    Returns
    -------
    TensorVariable
        Same shape as ``x``; 0.2 and 0.5 are Python numbers, so float32 stays float32.
    """
    return pt.clip(pt.as_tensor_variable(x) * 0.2 + 0.5, 0, 1)


def softplus(x):
    """``log(1 + exp(x))``, elementwise, computed without overflow (PyTensor's ``softplus``).

    Parameters
    ----------
    x : tensor_like

    Returns
    -------
    TensorVariable
        Same shape as ``x``.
    """
    return pt.softplus(x)


def softmax(c):
    """Softmax of each row: ``exp(c) / sum(exp(c), axis=-1, keepdims=True)``.

    Parameters
    ----------
    c : tensor_like
        A vector or a matrix of floats; a matrix is normalized row by row.

    Returns
    -------
    TensorVariable
        Same shape as ``c``.

    Raises
    ------
    ValueError
        If ``c`` has another number of dimensions than 1 or 2, or is not float.

    Notes
    -----
    Port note: Theano 1.0 turned a vector into a ``(1, n)`` row (announcing, in
    a deprecation warning, that vectors would give vectors); here a vector gives
    a vector. As in Theano, a last axis of static length 1 draws a warning (its
    softmax is 1 whatever ``c`` is).
    """
    c = pt.as_tensor_variable(c)
    if c.type.ndim not in (1, 2) or c.type.dtype not in float_dtypes:
        raise ValueError(f"x must be 1-d or 2-d tensor of floats. Got {c.type}")
    if c.type.shape[-1] == 1:
        warnings.warn(
            "The softmax is applied on a dimension of shape 1, which does not have a semantic "
            "meaning.",
            stacklevel=2,
        )
    return _pt_softmax(c, axis=-1)


def relu(x, alpha=0):
    """The rectifier ``max(x, 0)``, or the leaky ``max(x, alpha * x)``, elementwise.

    Parameters
    ----------
    x : tensor_like
        The pre-activations.
    alpha : scalar or tensor_like
        The slope for negative ``x`` (0: the plain rectifier).

    Returns
    -------
    TensorVariable
        ``0.5 * (x + abs(x))`` when ``alpha`` is the number 0, else
        ``f1 * x + f2 * abs(x)`` with ``f1 = 0.5 * (1 + alpha)`` and
        ``f2 = 0.5 * (1 - alpha)``: Theano 1.0's formulas, whose gradient at
        ``x = 0`` is ``0.5 * (1 + alpha)``.
    """
    x = pt.as_tensor_variable(x)
    if not isinstance(alpha, Variable) and np.ndim(alpha) == 0 and alpha == 0:
        return 0.5 * (x + abs(x))
    # As in Theano: 0.5 and 1 are Python numbers, so a float32 alpha keeps float32.
    alpha = pt.as_tensor_variable(alpha)
    f1 = 0.5 * (1 + alpha)
    f2 = 0.5 * (1 - alpha)
    return f1 * x + f2 * abs(x)


def categorical_crossentropy(coding_dist, true_dist):
    """Cross-entropy between predicted distributions and the true ones (or labels).

    Parameters
    ----------
    coding_dist : tensor_like
        Predicted probabilities, the classes on the last axis (e.g. a softmax
        output, ``(n, k)``).
    true_dist : tensor_like
        Either distributions of the same shape as ``coding_dist`` (one-hot rows,
        say), or integer labels with one dimension less: then ``coding_dist`` must
        be a matrix and ``true_dist`` a vector of class indices.

    Returns
    -------
    TensorVariable
        ``-sum(true_dist * log(coding_dist), axis=-1)`` for distributions,
        ``-log(coding_dist[arange(n), true_dist])`` for labels.

    Raises
    ------
    TypeError
        If the numbers of dimensions do not fit either form, if labels are not
        integers, or if labels go with a ``coding_dist`` that is not a matrix.

    Notes
    -----
    Port note: Theano accepted int32 and int64 labels only; any integer dtype
    works here.
    """
    coding_dist = pt.as_tensor_variable(coding_dist)
    true_dist = pt.as_tensor_variable(true_dist)
    if true_dist.type.ndim == coding_dist.type.ndim:
        return -pt.sum(true_dist * pt.log(coding_dist), axis=coding_dist.type.ndim - 1)
    if true_dist.type.ndim == coding_dist.type.ndim - 1:
        if coding_dist.type.ndim != 2:
            raise TypeError(f"matrix required for argument: coding_dist, got {coding_dist.type}")
        if true_dist.type.dtype not in integer_dtypes:
            raise TypeError(
                f"integer vector required for argument: true_one_of_n, got {true_dist.type}"
            )
        return -pt.log(coding_dist[pt.arange(true_dist.shape[0]), true_dist])
    raise TypeError("rank mismatch between coding and true distributions")


def binary_crossentropy(output, target):
    """Elementwise cross-entropy of Bernoulli outputs against targets.

    Parameters
    ----------
    output : tensor_like
        Predicted probabilities, in ``(0, 1)``.
    target : tensor_like
        Targets in ``[0, 1]``, broadcastable against ``output``.

    Returns
    -------
    TensorVariable
        ``-(target * log(output) + (1 - target) * log(1 - output))``.
    """
    output = pt.as_tensor_variable(output)
    target = pt.as_tensor_variable(target)
    return -(target * pt.log(output) + (1.0 - target) * pt.log(1.0 - output))
