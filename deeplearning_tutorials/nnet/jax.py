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

import jax
import jax.numpy as jnp
from jax import lax
from pytensor.link.jax.dispatch import jax_funcify

from deeplearning_tutorials.nnet.conv import Conv2d, Conv2dGradFilters, Conv2dGradInputs
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


@jax_funcify.register(Pad2d)
def jax_funcify_Pad2d(op, **kwargs):
    def pad2d(x):
        h, w = x.shape[-2:]  # concrete while JAX traces
        extra = [padded_size(n, b, a, m) - n - b
                 for n, b, a, m in zip((h, w), op.before, op.after, op.at_least)]
        widths = [(0, 0)] * (x.ndim - 2) + list(zip(op.before, extra))
        return jnp.pad(x, widths, constant_values=jnp.asarray(op.value, dtype=x.dtype))

    return pad2d


@jax_funcify.register(Crop2d)
def jax_funcify_Crop2d(op, **kwargs):
    (b0, b1) = op.before

    def crop2d(gy, x):
        h, w = x.shape[-2:]
        return gy[..., b0 : b0 + h, b1 : b1 + w]

    return crop2d
