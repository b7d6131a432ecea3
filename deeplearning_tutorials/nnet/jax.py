"""The JAX implementations of the convolution and max-pooling Ops.

Importing this module (which imports JAX and PyTensor's JAX backend) registers
them with that backend (``jax_funcify``), for these Ops only;
:mod:`deeplearning_tutorials.nnet` imports it the first time a graph holding
these Ops is compiled for JAX.

Each convolution Op has two JAX versions, chosen when a function is compiled
(:func:`conv_algorithm`):

* ``xla``: ``lax.conv_general_dilated`` (a cross-correlation) with spatially
  flipped kernels, which makes it the true convolution Theano computes; XLA hands
  it to the platform's convolution library (cuDNN on NVIDIA GPUs);
* ``gemm``: the patches of the image laid out as a matrix (im2col) and one matrix
  product, as the C backends do; the input gradient adds the product's columns
  back into place (col2im). It is used on a GPU, and for float64 on a CPU.

The products run at ``lax.Precision.HIGHEST``: float32 arithmetic in float32, as
on the CPU backends, where a GPU would otherwise multiply in TF32. The gradients
are written out rather than left to JAX autodiff, so each PyTensor gradient Op
has its own JAX function; the max-pool gradient compares every input with its
window's max, giving ties the gradient as Theano did (``jax.grad`` of
``reduce_window`` would pick a single element).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from pytensor.link.jax.dispatch import jax_funcify

from deeplearning_tutorials.nnet.conv import Conv2d, Conv2dGradFilters, Conv2dGradInputs
from deeplearning_tutorials.nnet.general_pool import (
    Pool2d,
    Pool2dGrad,
    lowest,
    pool_output_length,
    windows,
)
from deeplearning_tutorials.nnet.pad import Crop2d, Pad2d, padded_size
from deeplearning_tutorials.nnet.pool import MaxPool2d, MaxPool2dGrad

_DN = ("NCHW", "OIHW", "NCHW")
_HIGHEST = lax.Precision.HIGHEST


def conv_algorithm(platform, dtype):
    """``"gemm"`` on a GPU and for float64, ``"xla"`` for float32 on a CPU."""
    if platform in ("gpu", "cuda", "rocm") or str(dtype) == "float64":
        return "gemm"
    return "xla"


def jax_conv2d(x, w, precision=_HIGHEST):
    """True 'valid' convolution, ``x`` (B, C, H, W), ``w`` (F, C, kh, kw) -> (B, F, oh, ow)."""
    return lax.conv_general_dilated(
        x,
        w[:, :, ::-1, ::-1],
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=_DN,
        precision=precision,
    )


def jax_conv2d_grad_inputs(gz, w, precision=_HIGHEST):
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


def jax_conv2d_grad_filters(x, gz, precision=_HIGHEST):
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


def _columns(x, kh, kw):
    """im2col: ``x`` (B, C, H, W) -> (C*kh*kw, B*oh*ow).

    Row ``(c, u, v)`` holds channel ``c`` of every image, shifted by ``(u, v)``:
    the matrix is ``kh*kw`` contiguous copies of the channels, which a GPU writes
    at full speed (a patch per row, the layout of the C backends, interleaves
    them).
    """
    B, C, H, W = x.shape
    oh, ow = H - kh + 1, W - kw + 1
    xc = jnp.swapaxes(x, 0, 1)  # (C, B, H, W)
    cols = jnp.stack(
        [xc[:, :, u : u + oh, v : v + ow] for u in range(kh) for v in range(kw)], axis=1
    )  # (C, kh*kw, B, oh, ow)
    return cols.reshape(C * kh * kw, B * oh * ow)


def _filter_matrix(w):
    """The flipped filters as an (F, C*kh*kw) matrix, rows matching :func:`_columns`."""
    F, C, kh, kw = w.shape
    return w[:, :, ::-1, ::-1].reshape(F, C * kh * kw)


def jax_conv2d_gemm(x, w, precision=_HIGHEST):
    """:func:`jax_conv2d` as one matrix product: (F, CK) x (CK, B*oh*ow)."""
    B, _, H, W = x.shape
    F, _, kh, kw = w.shape
    oh, ow = H - kh + 1, W - kw + 1
    out = jnp.dot(_filter_matrix(w), _columns(x, kh, kw), precision=precision)
    return jnp.swapaxes(out.reshape(F, B, oh, ow), 0, 1)


def jax_conv2d_grad_filters_gemm(x, gz, precision=_HIGHEST):
    """:func:`jax_conv2d_grad_filters` as one matrix product: (F, P) x (P, CK)."""
    B, C, H, W = x.shape
    _, F, oh, ow = gz.shape
    kh, kw = H - oh + 1, W - ow + 1
    g = jnp.swapaxes(gz, 0, 1).reshape(F, B * oh * ow)
    gwf = lax.dot_general(g, _columns(x, kh, kw), (((1,), (1,)), ((), ())), precision=precision)
    return gwf.reshape(F, C, kh, kw)[:, :, ::-1, ::-1]


def jax_conv2d_grad_inputs_gemm(gz, w, precision=_HIGHEST):
    """:func:`jax_conv2d_grad_inputs` as one matrix product and col2im.

    ``(CK, F) x (F, P)`` gives each tap's contribution; the ``kh*kw`` shifted
    blocks are then added into the image (one fused loop on a GPU).
    """
    B, F, oh, ow = gz.shape
    _, C, kh, kw = w.shape
    g = jnp.swapaxes(gz, 0, 1).reshape(F, B * oh * ow)
    cg = lax.dot_general(_filter_matrix(w), g, (((0,), (0,)), ((), ())), precision=precision)
    cg = cg.reshape(C, kh, kw, B, oh, ow)
    gx = None
    for u in range(kh):
        for v in range(kw):
            block = jnp.pad(cg[:, u, v], ((0, 0), (0, 0), (u, kh - 1 - u), (v, kw - 1 - v)))
            gx = block if gx is None else gx + block
    return jnp.swapaxes(gx, 0, 1)


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


_KERNELS = {
    "xla": (jax_conv2d, jax_conv2d_grad_inputs, jax_conv2d_grad_filters),
    "gemm": (jax_conv2d_gemm, jax_conv2d_grad_inputs_gemm, jax_conv2d_grad_filters_gemm),
}


def _check_conv_shapes(which, a, b):
    """Refuse, while JAX traces, the shapes the other backends refuse when they run."""
    if which == 0:  # (x, w)
        fits = a.shape[1] == b.shape[1] and b.shape[2] <= a.shape[2] and b.shape[3] <= a.shape[3]
    elif which == 1:  # (gz, w)
        fits = a.shape[1] == b.shape[0]
    else:  # (x, gz)
        fits = a.shape[0] == b.shape[0] and b.shape[2] <= a.shape[2] and b.shape[3] <= a.shape[3]
    if not fits:
        what = "conv2d" if which == 0 else "conv2d gradient"
        raise ValueError(f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not fit")


def _conv_kernel(which, node):
    """Kernel ``which`` (0 forward, 1 input gradient, 2 filter gradient) for ``node``."""
    dtype = node.outputs[0].dtype if node is not None else "float32"
    kernel = _KERNELS[conv_algorithm(jax.default_backend(), dtype)][which]

    def conv(a, b):
        _check_conv_shapes(which, a, b)
        return kernel(a, b)

    return conv


@jax_funcify.register(Conv2d)
def jax_funcify_Conv2d(op, node=None, **kwargs):
    return _conv_kernel(0, node)


@jax_funcify.register(Conv2dGradInputs)
def jax_funcify_Conv2dGradInputs(op, node=None, **kwargs):
    return _conv_kernel(1, node)


@jax_funcify.register(Conv2dGradFilters)
def jax_funcify_Conv2dGradFilters(op, node=None, **kwargs):
    return _conv_kernel(2, node)


@jax_funcify.register(MaxPool2d)
def jax_funcify_MaxPool2d(op, **kwargs):
    ws, ignore_border = op.ws, op.ignore_border

    def max_pool(x):
        return jax_max_pool(x, ws, ignore_border)

    return max_pool


@jax_funcify.register(MaxPool2dGrad)
def jax_funcify_MaxPool2dGrad(op, **kwargs):
    ws, ignore_border = op.ws, op.ignore_border

    def max_pool_grad(x, maxout, gz):
        return jax_max_pool_grad(x, maxout, gz, ws, ignore_border)

    return max_pool_grad


class _PoolLayout:
    """Where :class:`Pool2d`'s windows lie in an input of ``x``'s shape.

    The windows tile the input padded by ``pad`` before and by ``high`` after
    (negative: cut) each pooled axis, an extent of ``(out - 1) * stride + ws``.
    Computed from the concrete shape JAX traces with.
    """

    def __init__(self, op, shape):
        self.op, self.lead, (h, w) = op, len(shape) - 2, shape[-2:]
        self.out = tuple(pool_output_length(n, k, s, p, op.ignore_border)
                         for n, k, s, p in zip((h, w), op.ws, op.stride, op.pad))
        self.high = tuple((o - 1) * s + k - p - n
                          for o, n, k, s, p in zip(self.out, (h, w), op.ws, op.stride, op.pad))
        self.counts = None
        if op.mode.startswith("average"):
            rows, cols = (windows(n, k, s, p, op.ignore_border, op.mode)[2]
                          for n, k, s, p in zip((h, w), op.ws, op.stride, op.pad))
            self.counts = np.multiply.outer(rows, cols)

    def empty(self):
        return 0 in self.out

    def config(self, sign=1):
        return [(0, 0, 0)] * self.lead + [(sign * p, sign * q, 0)
                                          for p, q in zip(self.op.pad, self.high)]

    def offsets(self):
        return itertools.product(range(self.op.ws[0]), range(self.op.ws[1]))

    def window_slice(self, xp, u, v):
        """The (u, v)-th input of every window, (..., oh, ow)."""
        (oh, ow), (sh, sw) = self.out, self.op.stride
        start = (0,) * self.lead + (u, v)
        limit = xp.shape[:-2] + (u + (oh - 1) * sh + 1, v + (ow - 1) * sw + 1)
        return lax.slice(xp, start, limit, (1,) * self.lead + (sh, sw))

    def spread(self, g, u, v, shape):
        """``g`` (..., oh, ow) put where :meth:`window_slice` took its inputs from."""
        (oh, ow), (sh, sw) = self.out, self.op.stride
        rows = (u, shape[-2] - u - (oh - 1) * sh - 1, sh - 1)
        cols = (v, shape[-1] - v - (ow - 1) * sw - 1, sw - 1)
        return lax.pad(g, jnp.zeros((), g.dtype), [(0, 0, 0)] * self.lead + [rows, cols])


def _divide(total, counts, dtype):
    if jnp.issubdtype(dtype, jnp.floating):
        return (total / counts).astype(dtype)
    return jnp.trunc(total / counts).astype(dtype)


@jax_funcify.register(Pool2d)
def jax_funcify_Pool2d(op, **kwargs):
    def pool(x):
        layout = _PoolLayout(op, x.shape)
        if layout.empty():
            return jnp.zeros(x.shape[:-2] + layout.out, x.dtype)
        is_max = op.mode == "max"
        init = jnp.asarray(lowest(x.dtype) if is_max else 0, x.dtype)
        xp = lax.pad(x, init, layout.config())
        z = lax.reduce_window(xp, init, lax.max if is_max else lax.add,
                              (1,) * layout.lead + op.ws, (1,) * layout.lead + op.stride,
                              "VALID")
        return z if layout.counts is None else _divide(z, layout.counts, x.dtype)

    return pool


@jax_funcify.register(Pool2dGrad)
def jax_funcify_Pool2dGrad(op, **kwargs):
    def pool_grad(x, z, gz):
        layout = _PoolLayout(op, x.shape)
        if layout.empty():
            return jnp.zeros_like(x)
        if layout.counts is not None:
            gz = (gz / layout.counts).astype(x.dtype)
        xp = lax.pad(x, jnp.asarray(lowest(x.dtype), x.dtype), layout.config())
        gxp = jnp.zeros(xp.shape, x.dtype)
        for u, v in layout.offsets():
            g = gz
            if op.mode == "max":
                g = jnp.where(layout.window_slice(xp, u, v) == z, gz, 0)
            gxp = gxp + layout.spread(g, u, v, xp.shape)
        return lax.pad(gxp, jnp.zeros((), x.dtype), layout.config(-1))

    return pool_grad


@jax_funcify.register(Pad2d)
def jax_funcify_Pad2d(op, **kwargs):
    def pad2d(x):
        h, w = x.shape[-2:]  # concrete while JAX traces
        config = [(0, 0, 0)] * (x.ndim - 2)
        for n, b, a, m, i in zip((h, w), op.before, op.after, op.at_least, op.interior):
            inner = n + max(n - 1, 0) * i
            config.append((b, padded_size(n, b, a, m, i) - inner - b, i if n > 0 else 0))
        return lax.pad(x, jnp.asarray(op.value, dtype=x.dtype), config)

    return pad2d


@jax_funcify.register(Crop2d)
def jax_funcify_Crop2d(op, **kwargs):
    (b0, b1), (s0, s1) = op.before, op.step

    def crop2d(gy, x):
        h, w = x.shape[-2:]
        return gy[..., b0 : b0 + (h - 1) * s0 + 1 : s0, b1 : b1 + (w - 1) * s1 + 1 : s1]

    return crop2d
