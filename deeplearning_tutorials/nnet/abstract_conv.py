"""Theano 1.0's ``theano.tensor.nnet.conv2d`` (``abstract_conv``), on :class:`.conv.Conv2d`.

* :func:`conv2d` -- the convolution Theano 0.9 and 1.0 programs call, with every
  border mode, strides, dilation and the choice of flipping the filters;
* :func:`get_conv_output_shape` -- the output shape it gives;
* :func:`conv2d_grad_wrt_inputs`, :func:`conv2d_grad_wrt_weights` -- its
  gradients as functions of their own (the transposed convolution of
  Theano-era decoders and generators).

Every form is a graph around the one convolution Op (see
:func:`.conv.general_conv2d`), so gradients and the C, Numba and JAX code come
with it.
"""

import numbers

import pytensor
import pytensor.tensor as pt

from deeplearning_tutorials.nnet.conv import general_conv2d, int_pair

__all__ = ["conv2d", "get_conv_output_shape", "conv2d_grad_wrt_inputs", "conv2d_grad_wrt_weights"]


def conv2d(input, filters, input_shape=None, filter_shape=None, border_mode="valid",
           subsample=(1, 1), filter_flip=True, image_shape=None, filter_dilation=(1, 1)):
    """Convolve a batch of multi-map images with a bank of filters (Theano's ``nnet.conv2d``).

    Parameters
    ----------
    input : TensorVariable, shape (batch, in_maps, h, w)
    filters : TensorVariable, shape (n_filters, in_maps, kh, kw)
    input_shape : tuple of 4 int or None, optional
        Declared shape of ``input`` (entries may be None); checked against the
        variable's static shape and ``filter_shape`` when the graph is built.
    filter_shape : tuple of 4 int or None, optional
        Declared shape of ``filters``.
    border_mode : 'valid', 'full', 'half', int or (int, int)
        Zero padding of the input each side: none ('valid'), the dilated filter
        size minus one ('full'), half the dilated filter size rounded down
        ('half': the output keeps the input's size), or the given rows and columns.
    subsample : (int, int)
        Strides of the output.
    filter_flip : bool
        True (the default) flips the filters: a true convolution; False: a
        cross-correlation.
    image_shape : tuple of 4 int or None, optional
        Deprecated name of ``input_shape``.
    filter_dilation : (int, int)
        Spacing between the filter's taps (1: adjacent).

    Returns
    -------
    TensorVariable, shape (batch, n_filters, oh, ow)
        See :func:`get_conv_output_shape`.

    Raises
    ------
    ValueError
        For an unknown ``border_mode``, strides or dilations below 1, inputs that
        are not 4-D, declared shapes inconsistent with each other or with the
        variables, or a (dilated) filter larger than the padded image.
    """
    if image_shape is not None:
        if input_shape is not None and tuple(input_shape) != tuple(image_shape):
            raise ValueError(f"conv2d: input_shape {input_shape} and image_shape {image_shape} "
                             "(its deprecated name) differ")
        input_shape = image_shape
    return general_conv2d(input, filters, input_shape=input_shape, filter_shape=filter_shape,
                          border_mode=border_mode, subsample=subsample, filter_flip=filter_flip,
                          filter_dilation=filter_dilation)


def get_conv_output_shape(image_shape, kernel_shape, border_mode, subsample,
                          filter_dilation=None):
    """The shape :func:`conv2d` gives (Theano's function of the same name).

    Parameters
    ----------
    image_shape : tuple of 4 int
        (batch, in_maps, h, w); entries may be None.
    kernel_shape : tuple of 4 int
        (n_filters, in_maps, kh, kw).
    border_mode, subsample, filter_dilation
        As :func:`conv2d` takes them (``filter_dilation`` None: no dilation).

    Returns
    -------
    tuple of 4 int or None
        ``(batch, n_filters, oh, ow)`` with
        ``oh = (h + 2 * pad_h - ((kh - 1) * dilation_h + 1)) // subsample_h + 1``.
    """
    subsample = int_pair(subsample, "subsample", 1)
    dilation = int_pair((1, 1) if filter_dilation is None else filter_dilation,
                        "filter_dilation", 1)
    out = [image_shape[0], kernel_shape[0]]
    for i in range(2):
        size, k = image_shape[2 + i], kernel_shape[2 + i]
        if size is None or k is None:
            out.append(None)
            continue
        dk = (k - 1) * dilation[i] + 1
        if border_mode == "valid":
            pad = 0
        elif border_mode == "full":
            pad = dk - 1
        elif border_mode == "half":
            pad = dk // 2
        else:
            pad = int_pair(border_mode, "border_mode", 0)[i]
        out.append((size + 2 * pad - dk) // subsample[i] + 1)
    return tuple(out)


def _declared(shape):
    """``shape`` as :func:`conv2d` takes it: its int entries, None for symbolic ones."""
    return tuple(int(n) if isinstance(n, numbers.Integral) else None for n in shape)


def _placeholder(shape, dtype):
    """Zeros of ``shape`` (ints or scalars): the operand a gradient is taken with respect to.

    The convolution is linear in it, so its gradient uses only its shape, and
    PyTensor's rewrites leave nothing of the zeros but that shape.
    """
    if len(shape) != 4:
        raise ValueError(f"conv2d: a shape of 4 entries is needed, got {shape!r}")
    return pt.zeros(tuple(shape), dtype=dtype)


def conv2d_grad_wrt_inputs(output_grad, filters, input_shape, filter_shape=None,
                           border_mode="valid", subsample=(1, 1), filter_flip=True,
                           filter_dilation=(1, 1)):
    """The gradient of :func:`conv2d` with respect to its input (Theano's function).

    Parameters
    ----------
    output_grad : TensorVariable, shape (batch, n_filters, oh, ow)
    filters : TensorVariable, shape (n_filters, in_maps, kh, kw)
    input_shape : tuple of 4 ints or scalar variables
        The input's shape, which the strides leave open (several sizes give
        the same output size).
    filter_shape, border_mode, subsample, filter_flip, filter_dilation
        As :func:`conv2d` takes them.

    Returns
    -------
    TensorVariable, shape ``input_shape``
        ``grad(sum(conv2d(input, filters, ...) * output_grad), input)``.

    Notes
    -----
    With ``subsample`` and sizes not known when the graph is built (a
    symbolic entry of ``input_shape``, or filters of unknown shape without
    ``filter_shape``), the graph convolves zeros of ``input_shape`` to learn
    the unstrided output's size; with ints and ``filter_shape`` it does not.
    """
    output_grad = pt.as_tensor_variable(output_grad)
    x = _placeholder(input_shape, output_grad.type.dtype)
    z = conv2d(x, filters, input_shape=_declared(input_shape), filter_shape=filter_shape,
               border_mode=border_mode, subsample=subsample, filter_flip=filter_flip,
               filter_dilation=filter_dilation)
    return pytensor.grad(None, x, known_grads={z: output_grad})


def conv2d_grad_wrt_weights(input, output_grad, filter_shape, input_shape=None,
                            border_mode="valid", subsample=(1, 1), filter_flip=True,
                            filter_dilation=(1, 1)):
    """The gradient of :func:`conv2d` with respect to its filters (Theano's function).

    Parameters
    ----------
    input : TensorVariable, shape (batch, in_maps, h, w)
    output_grad : TensorVariable, shape (batch, n_filters, oh, ow)
    filter_shape : tuple of 4 ints or scalar variables
    input_shape, border_mode, subsample, filter_flip, filter_dilation
        As :func:`conv2d` takes them.

    Returns
    -------
    TensorVariable, shape ``filter_shape``
        ``grad(sum(conv2d(input, filters, ...) * output_grad), filters)``.
    """
    output_grad = pt.as_tensor_variable(output_grad)
    w = _placeholder(filter_shape, output_grad.type.dtype)
    z = conv2d(input, w, input_shape=input_shape, filter_shape=_declared(filter_shape),
               border_mode=border_mode, subsample=subsample, filter_flip=filter_flip,
               filter_dilation=filter_dilation)
    return pytensor.grad(None, w, known_grads={z: output_grad})
