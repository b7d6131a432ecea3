"""JAX implementations of the convolution and max-pooling Ops.

Imported (and registered) by :mod:`deeplearning_tutorials.nnet` only when JAX is
installed. The convolution is ``lax.conv_general_dilated`` (a cross-correlation)
with spatially flipped kernels, which makes it the true convolution Theano computes.
The gradients are written out explicitly rather than left to JAX autodiff, so each
PyTensor gradient Op has its own JAX function; the max-pool gradient compares
every input with its window's max, giving ties the gradient as Theano did
(``jax.grad`` of ``reduce_window`` would pick a single element).
"""

import os

import jax.numpy as jnp
from jax import lax
from pytensor.link.jax.dispatch import jax_funcify

from deeplearning_tutorials.nnet.conv import Conv2d, Conv2dGradFilters, Conv2dGradInputs
from deeplearning_tutorials.nnet.pool import MaxPool2d, MaxPool2dGrad

_DN = ("NCHW", "OIHW", "NCHW")


#: The environment variable that sets the convolutions' precision on the JAX backend.
PRECISION_ENV = "DEEPLEARNING_TUTORIALS_JAX_PRECISION"
_PRECISIONS = {"highest": lax.Precision.HIGHEST, "high": lax.Precision.HIGH,
               "default": lax.Precision.DEFAULT}


def conv_precision():
    """The ``lax.Precision`` of the JAX convolutions, from ``$DEEPLEARNING_TUTORIALS_JAX_PRECISION``.

    ``highest`` (the default) computes float32 convolutions in float32, as the
    CPU backends do. On NVIDIA GPUs since Ampere, ``default`` lets XLA use
    TF32 (10-bit mantissas) instead: faster, and no longer float32 arithmetic,
    like PyTorch's cuDNN convolutions by default. Read when a function is compiled.
    """
    name = os.environ.get(PRECISION_ENV, "highest").strip().lower()
    if name not in _PRECISIONS:
        raise ValueError(
            f"{PRECISION_ENV}={name!r}: choose one of {', '.join(_PRECISIONS)}"
        )
    return _PRECISIONS[name]


def jax_conv2d(x, w, precision=lax.Precision.HIGHEST):
    """True 'valid' convolution, ``x`` (B, C, H, W), ``w`` (F, C, kh, kw) -> (B, F, oh, ow)."""
    return lax.conv_general_dilated(
        x,
        w[:, :, ::-1, ::-1],
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=_DN,
        precision=precision,
    )


def jax_conv2d_grad_inputs(gz, w, precision=lax.Precision.HIGHEST):
    """``gx`` (B, C, oh+kh-1, ow+kw-1): full correlation of ``gz`` with ``w``."""
    kh, kw = w.shape[2], w.shape[3]
    # gx[b,c] = sum_f full_correlate(gz[b,f], w[f,c]): a convolution of the
    # zero-padded gz with w swapped to (C, F) and flipped once more.
    return lax.conv_general_dilated(
        gz,
        jnp.swapaxes(w, 0, 1),
        window_strides=(1, 1),
        padding=((kh - 1, kh - 1), (kw - 1, kw - 1)),
        dimension_numbers=_DN,
        precision=precision,
    )


def jax_conv2d_grad_filters(x, gz, precision=lax.Precision.HIGHEST):
    """``gw`` (F, C, kh, kw) with ``kh = H - oh + 1``."""
    # gwf[f,c,u,v] = sum_{b,i,j} gz[b,f,i,j] x[b,c,i+u,j+v]: a correlation over
    # the batch axis, expressed by treating C as the batch and B as the channel.
    gwf = lax.conv_general_dilated(
        jnp.swapaxes(x, 0, 1),  # (C, B, H, W)
        jnp.swapaxes(gz, 0, 1),  # (F, B, oh, ow) as OIHW
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=_DN,
        precision=precision,
    )  # (C, F, kh, kw)
    return jnp.swapaxes(gwf, 0, 1)[:, :, ::-1, ::-1]


def _pool_geometry(shape, ws, ignore_border):
    H, W = shape[-2], shape[-1]
    wh, ww = ws
    if ignore_border:
        oh, ow = H // wh, W // ww
    else:
        oh, ow = -(-H // wh), -(-W // ww)
    return H, W, oh, ow


def jax_max_pool(x, ws, ignore_border):
    """Max over non-overlapping ``ws`` windows of the last two axes."""
    H, W, oh, ow = _pool_geometry(x.shape, ws, ignore_border)
    wh, ww = ws
    nd = x.ndim
    pad = [(0, 0)] * (nd - 2) + [(0, max(0, oh * wh - H)), (0, max(0, ow * ww - W))]
    init = jnp.array(-jnp.inf, dtype=x.dtype)
    return lax.reduce_window(
        x,
        init,
        lax.max,
        window_dimensions=(1,) * (nd - 2) + (wh, ww),
        window_strides=(1,) * (nd - 2) + (wh, ww),
        padding=pad,
    )


def jax_max_pool_grad(x, maxout, gz, ws, ignore_border):
    """Theano's rule: ``gz`` goes to every input equal to its window's max."""
    H, W, oh, ow = _pool_geometry(x.shape, ws, ignore_border)
    wh, ww = ws
    lead = x.shape[:-2]
    rows, cols = oh * wh, ow * ww
    if ignore_border:
        xp = x[..., :rows, :cols]
    else:
        pad = [(0, 0)] * (x.ndim - 2) + [(0, rows - H), (0, cols - W)]
        # NaN never equals the max, so padding takes no gradient.
        xp = jnp.pad(x, pad, constant_values=jnp.nan)
    xw = xp.reshape(lead + (oh, wh, ow, ww))
    hit = xw == maxout[..., :, None, :, None]
    gxw = jnp.where(hit, gz[..., :, None, :, None], jnp.zeros((), x.dtype))
    gxp = gxw.reshape(lead + (rows, cols))
    r, c = min(H, rows), min(W, cols)
    gxp = gxp[..., :r, :c]
    return jnp.pad(gxp, [(0, 0)] * (x.ndim - 2) + [(0, H - r), (0, W - c)])


def register_jax_dispatch():
    """Register the JAX implementations with PyTensor's JAX backend."""

    def with_precision(kernel):
        precision = conv_precision()

        def conv(a, b):
            return kernel(a, b, precision=precision)

        return conv

    @jax_funcify.register(Conv2d)
    def _jax_funcify_conv2d(op, **kwargs):
        return with_precision(jax_conv2d)

    @jax_funcify.register(Conv2dGradInputs)
    def _jax_funcify_conv2d_gi(op, **kwargs):
        return with_precision(jax_conv2d_grad_inputs)

    @jax_funcify.register(Conv2dGradFilters)
    def _jax_funcify_conv2d_gw(op, **kwargs):
        return with_precision(jax_conv2d_grad_filters)

    @jax_funcify.register(MaxPool2d)
    def _jax_funcify_max_pool(op, **kwargs):
        ws, ignore_border = op.ws, op.ignore_border

        def max_pool(x):
            return jax_max_pool(x, ws, ignore_border)

        return max_pool

    @jax_funcify.register(MaxPool2dGrad)
    def _jax_funcify_max_pool_grad(op, **kwargs):
        ws, ignore_border = op.ws, op.ignore_border

        def max_pool_grad(x, maxout, gz):
            return jax_max_pool_grad(x, maxout, gz, ws, ignore_border)

        return max_pool_grad

    _register_careduce_in_output_dtype()


def _register_careduce_in_output_dtype():
    """Make JAX reductions return their node's dtype, as the other backends do.

    PyTensor 3's JAX ``CAReduce`` returns its *accumulator* dtype: a float32
    ``Sum{acc=float64}`` (which every mean in the tutorial's cost becomes) gives a
    float64 array when JAX runs with 64-bit types, and that float64 then spreads
    through the whole gradient graph of a float32 model until
    ``lax.conv_general_dilated`` refuses the mix. Accumulating in float64 and
    rounding to the output type is what the C and Numba backends do.
    """
    from pytensor.link.jax.dispatch.elemwise import jax_funcify_CAReduce
    from pytensor.tensor.elemwise import CAReduce

    @jax_funcify.register(CAReduce)
    def _jax_funcify_careduce(op, node=None, **kwargs):
        reduce = jax_funcify_CAReduce(op, node=node, **kwargs)
        if node is None:
            return reduce
        dtype = node.outputs[0].dtype

        def careduce(x):
            return jnp.asarray(reduce(x)).astype(dtype)

        return careduce


__all__ = [
    "PRECISION_ENV",
    "conv_precision",
    "register_jax_dispatch",
    "jax_conv2d",
    "jax_conv2d_grad_inputs",
    "jax_conv2d_grad_filters",
    "jax_max_pool",
    "jax_max_pool_grad",
]
