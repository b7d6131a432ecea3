"""The Numba implementations of the convolution and max-pooling Ops.

Importing this module registers them with PyTensor's Numba backend
(``numba_funcify``, through its cache-key helper), for these Ops only.

The convolution kernels use im2col + one GEMM per chunk of the batch: the
column matrix has shape ``(C*kh*kw, nb*oh*ow)``, so building it and scattering
it back (col2im) both read and write contiguous rows of ``ow`` elements, and the
products go to BLAS through ``np.dot`` (Numba calls SciPy's BLAS). The batch is
cut in chunks so that the column matrix stays a few MiB.

The pooling kernels are plain loops over non-overlapping windows; the gradient
follows Theano's rule: every input equal to its window's maximum receives the
window's upstream gradient (ties included).

The kernels are module-level ``numba.njit(cache=True)`` functions, so their
machine code is cached on disk and shared by every compiled PyTensor function.
"""

import numba
import numpy as np
from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_default_op_cache_key

from deeplearning_tutorials.nnet.conv import Conv2d, Conv2dGradFilters, Conv2dGradInputs
from deeplearning_tutorials.nnet.general_pool import Pool2d, Pool2dGrad
from deeplearning_tutorials.nnet.pad import Crop2d, Pad2d
from deeplearning_tutorials.nnet.pool import MaxPool2d, MaxPool2dGrad

# Elements in one chunk's column matrix: 2**20 elements (8 MiB in float64,
# 4 MiB in float32) keeps the buffer cache-friendly while each GEMM still has
# thousands of columns, which is what BLAS needs to run near its peak.
_COLS_CHUNK_ELEMS = 1 << 20

_njit = numba.njit(cache=True, nogil=True, boundscheck=False)


@_njit
def _chunk_size(batch, n_cols_per_image, n_rows):
    per_image = max(1, n_cols_per_image * n_rows)
    return max(1, min(batch, _COLS_CHUNK_ELEMS // per_image))


@_njit
def _flip_filters_2d(w):
    """Return ``w`` flipped in both spatial axes as a ``(F, C*kh*kw)`` matrix."""
    F, C, kh, kw = w.shape
    wf = np.empty((F, C * kh * kw), dtype=w.dtype)
    for f in range(F):
        for c in range(C):
            for u in range(kh):
                for v in range(kw):
                    wf[f, (c * kh + u) * kw + v] = w[f, c, kh - 1 - u, kw - 1 - v]
    return wf


# The rows that im2col copies (and col2im adds back) are only ``ow`` elements
# long: 8 and 24 in LeNet5. With the length a literal the compiler unrolls and
# vectorises each row, so those two lengths get loops of their own (as in the C
# kernels, where this made the second layer's im2col four times faster).


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _im2col_rows_n(x, b0, nb, c, u, v, oh, n, row, P):
    for bb in range(nb):
        for i in range(oh):
            base = bb * P + i * n
            for j in range(n):
                row[base + j] = x[b0 + bb, c, i + u, j + v]


@_njit
def _im2col_rows(x, b0, nb, c, u, v, oh, ow, row, P):
    # Inlined with n a literal in the first two calls.
    if ow == 8:
        _im2col_rows_n(x, b0, nb, c, u, v, oh, 8, row, P)
    elif ow == 24:
        _im2col_rows_n(x, b0, nb, c, u, v, oh, 24, row, P)
    else:
        _im2col_rows_n(x, b0, nb, c, u, v, oh, ow, row, P)


@_njit
def _im2col(x, b0, nb, kh, kw, cols):
    """Fill ``cols`` (C*kh*kw, nb*oh*ow) with the patches of images ``b0:b0+nb``."""
    _, C, H, W = x.shape
    oh = H - kh + 1
    ow = W - kw + 1
    P = oh * ow
    for c in range(C):
        for u in range(kh):
            for v in range(kw):
                k = (c * kh + u) * kw + v
                _im2col_rows(x, b0, nb, c, u, v, oh, ow, cols[k], P)


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _col2im_rows_n(row, b0, nb, c, u, v, oh, n, gx, P):
    for bb in range(nb):
        for i in range(oh):
            base = bb * P + i * n
            for j in range(n):
                gx[b0 + bb, c, i + u, j + v] += row[base + j]


@_njit
def _col2im_rows(row, b0, nb, c, u, v, oh, ow, gx, P):
    if ow == 8:
        _col2im_rows_n(row, b0, nb, c, u, v, oh, 8, gx, P)
    elif ow == 24:
        _col2im_rows_n(row, b0, nb, c, u, v, oh, 24, gx, P)
    else:
        _col2im_rows_n(row, b0, nb, c, u, v, oh, ow, gx, P)


@_njit
def _col2im_add(dcols, b0, nb, kh, kw, gx):
    """Scatter-add ``dcols`` (C*kh*kw, nb*oh*ow) into images ``b0:b0+nb`` of ``gx``."""
    _, C, H, W = gx.shape
    oh = H - kh + 1
    ow = W - kw + 1
    P = oh * ow
    for c in range(C):
        for u in range(kh):
            for v in range(kw):
                k = (c * kh + u) * kw + v
                _col2im_rows(dcols[k], b0, nb, c, u, v, oh, ow, gx, P)


@_njit
def _gather_gz(gz, b0, nb, gzm):
    """Copy ``gz[b0:b0+nb]`` (nb, F, oh, ow) into ``gzm`` (F, nb*oh*ow)."""
    F, oh, ow = gz.shape[1], gz.shape[2], gz.shape[3]
    P = oh * ow
    for f in range(F):
        for bb in range(nb):
            for i in range(oh):
                for j in range(ow):
                    gzm[f, bb * P + i * ow + j] = gz[b0 + bb, f, i, j]


# The shape checks of the convolution kernels: each returns the result's shape.
@_njit
def _conv_out_shape(x, w):
    B, C, H, W = x.shape
    F, C2, kh, kw = w.shape
    if C2 != C:
        raise ValueError("conv2d: input maps and filter input maps differ")
    if kh > H or kw > W:
        raise ValueError("conv2d: filter larger than the image")
    return (B, F, H - kh + 1, W - kw + 1)


@_njit
def _conv_gi_shape(gz, w):
    B, F, oh, ow = gz.shape
    F2, C, kh, kw = w.shape
    if F2 != F:
        raise ValueError("conv2d grad: output maps and filters differ")
    return (B, C, oh + kh - 1, ow + kw - 1)


@_njit
def _conv_gw_shape(x, gz):
    B, C, H, W = x.shape
    B2, F, oh, ow = gz.shape
    if B2 != B:
        raise ValueError("conv2d grad: batch sizes differ")
    if oh > H or ow > W:
        raise ValueError("conv2d grad: input and output gradient shapes disagree")
    return (F, C, H - oh + 1, W - ow + 1)


@_njit
def conv2d_valid(x, w):
    """True 'valid' 2-D convolution summed over input maps.

    Parameters
    ----------
    x : ndarray, shape (B, C, H, W)
    w : ndarray, shape (F, C, kh, kw)

    Returns
    -------
    ndarray, shape (B, F, H-kh+1, W-kw+1)
    """
    B, F, oh, ow = _conv_out_shape(x, w)
    C, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    P = oh * ow
    K = C * kh * kw
    out = np.empty((B, F, oh, ow), dtype=x.dtype)
    if B == 0 or F == 0:
        return out
    wf = _flip_filters_2d(w)
    chunk = _chunk_size(B, P, K)
    buf = np.empty(K * chunk * P, dtype=x.dtype)
    res_buf = np.empty(F * chunk * P, dtype=x.dtype)
    for b0 in range(0, B, chunk):
        nb = min(chunk, B - b0)
        cols = buf[: K * nb * P].reshape((K, nb * P))
        _im2col(x, b0, nb, kh, kw, cols)
        res = res_buf[: F * nb * P].reshape((F, nb * P))
        np.dot(wf, cols, res)
        for bb in range(nb):
            for f in range(F):
                for i in range(oh):
                    for j in range(ow):
                        out[b0 + bb, f, i, j] = res[f, bb * P + i * ow + j]
    return out


@_njit
def conv2d_grad_inputs(gz, w):
    """Gradient of :func:`conv2d_valid` with respect to its input.

    Parameters
    ----------
    gz : ndarray, shape (B, F, oh, ow)
    w : ndarray, shape (F, C, kh, kw)

    Returns
    -------
    ndarray, shape (B, C, oh+kh-1, ow+kw-1)
    """
    B, C, H, W = _conv_gi_shape(gz, w)
    F, oh, ow = gz.shape[1], gz.shape[2], gz.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    P = oh * ow
    K = C * kh * kw
    gx = np.zeros((B, C, H, W), dtype=gz.dtype)
    if B == 0 or P == 0:
        return gx
    wft = np.ascontiguousarray(_flip_filters_2d(w).T)  # (K, F)
    chunk = _chunk_size(B, P, max(K, F))
    gz_buf = np.empty(F * chunk * P, dtype=gz.dtype)
    dcols_buf = np.empty(K * chunk * P, dtype=gz.dtype)
    for b0 in range(0, B, chunk):
        nb = min(chunk, B - b0)
        gzm = gz_buf[: F * nb * P].reshape((F, nb * P))
        _gather_gz(gz, b0, nb, gzm)
        dcols = dcols_buf[: K * nb * P].reshape((K, nb * P))
        np.dot(wft, gzm, dcols)
        _col2im_add(dcols, b0, nb, kh, kw, gx)
    return gx


@_njit
def conv2d_grad_filters(x, gz):
    """Gradient of :func:`conv2d_valid` with respect to its filters.

    Parameters
    ----------
    x : ndarray, shape (B, C, H, W)
    gz : ndarray, shape (B, F, oh, ow)

    Returns
    -------
    ndarray, shape (F, C, H-oh+1, W-ow+1)
    """
    F, C, kh, kw = _conv_gw_shape(x, gz)
    B, H, W = x.shape[0], x.shape[2], x.shape[3]
    oh, ow = gz.shape[2], gz.shape[3]
    P = oh * ow
    K = C * kh * kw
    gwf = np.zeros((F, K), dtype=x.dtype)
    if B > 0 and P > 0:
        chunk = _chunk_size(B, P, max(K, F))
        buf = np.empty(K * chunk * P, dtype=x.dtype)
        gz_buf = np.empty(F * chunk * P, dtype=x.dtype)
        part = np.empty((F, K), dtype=x.dtype)
        for b0 in range(0, B, chunk):
            nb = min(chunk, B - b0)
            cols = buf[: K * nb * P].reshape((K, nb * P))
            _im2col(x, b0, nb, kh, kw, cols)
            gzm = gz_buf[: F * nb * P].reshape((F, nb * P))
            _gather_gz(gz, b0, nb, gzm)
            np.dot(gzm, cols.T, part)
            gwf += part
    gw = np.empty((F, C, kh, kw), dtype=x.dtype)
    for f in range(F):
        for c in range(C):
            for u in range(kh):
                for v in range(kw):
                    gw[f, c, kh - 1 - u, kw - 1 - v] = gwf[f, (c * kh + u) * kw + v]
    return gw


@_njit
def _pool_out_size(n, ws, ignore_border):
    if ignore_border:
        return n // ws
    return (n + ws - 1) // ws


@_njit
def _max_pool_2x2(x3, oh, ow):
    """2x2 windows that all lie inside ``x3`` (LeNet5's pooling): a fixed-shape loop.

    The maximum is taken in the generic kernel's order (a new value wins when
    strictly greater, and a NaN always, as in NumPy's max), with selects the
    compiler vectorises.
    """
    M = x3.shape[0]
    out = np.empty((M, oh, ow), dtype=x3.dtype)
    for m in range(M):
        for i in range(oh):
            for j in range(ow):
                mx = x3[m, 2 * i, 2 * j]
                v = x3[m, 2 * i, 2 * j + 1]
                mx = v if v > mx or v != v else mx
                v = x3[m, 2 * i + 1, 2 * j]
                mx = v if v > mx or v != v else mx
                v = x3[m, 2 * i + 1, 2 * j + 1]
                mx = v if v > mx or v != v else mx
                out[m, i, j] = mx
    return out


@_njit
def _max_pool_grad_2x2(x3, out3, gz3):
    """The gradient for :func:`_max_pool_2x2`, written row by row without a branch.

    ``g if x == max else 0`` is a select, not a branch: real data takes it one
    time in four, at random, which a branch mispredicts (the C kernel measured
    13 ms with a branch against 3.5 ms without for LeNet5's first layer). A NaN
    or infinite ``g`` is passed on unchanged, as the generic kernel does.
    """
    M, H, W = x3.shape
    oh, ow = out3.shape[1], out3.shape[2]
    gx = np.empty((M, H, W), dtype=x3.dtype)
    zero = x3.dtype.type(0)
    for m in range(M):
        for r in range(H):
            i = r >> 1
            if i >= oh:
                for c in range(W):
                    gx[m, r, c] = zero
                continue
            for c in range(2 * ow):
                j = c >> 1
                mx = out3[m, i, j]
                g = gz3[m, i, j]
                gx[m, r, c] = g if x3[m, r, c] == mx else zero
            for c in range(2 * ow, W):
                gx[m, r, c] = zero
    return gx


@_njit
def max_pool_3d(x3, wh, ww, ignore_border):
    """Max over non-overlapping ``(wh, ww)`` windows of ``x3`` (M, H, W).

    Row-oriented: each input row is read once, contiguously, and folded into
    its output row, which keeps the inner loop free of window bookkeeping.
    """
    M, H, W = x3.shape
    oh = _pool_out_size(H, wh, ignore_border)
    ow = _pool_out_size(W, ww, ignore_border)
    if wh == 2 and ww == 2 and 2 * oh <= H and 2 * ow <= W:
        return _max_pool_2x2(x3, oh, ow)
    out = np.empty((M, oh, ow), dtype=x3.dtype)
    for m in range(M):
        for i in range(oh):
            r0 = i * wh
            r1 = min(r0 + wh, H)
            for r in range(r0, r1):
                for j in range(ow):
                    c0 = j * ww
                    c1 = min(c0 + ww, W)
                    mx = x3[m, r, c0] if r == r0 else out[m, i, j]
                    for c in range(c0, c1):
                        val = x3[m, r, c]
                        if val > mx or val != val:
                            mx = val
                    out[m, i, j] = mx
    return out


@_njit
def max_pool_grad_3d(x3, out3, gz3, wh, ww):
    """Theano's max-pool gradient on ``(M, H, W)`` stacks: ties all receive ``gz``.

    Every element of the result is written exactly once, row by row, so no
    zero-fill pass is needed.
    """
    M, H, W = x3.shape
    oh, ow = out3.shape[1], out3.shape[2]
    if wh == 2 and ww == 2 and 2 * oh <= H and 2 * ow <= W:
        return _max_pool_grad_2x2(x3, out3, gz3)
    gx = np.empty((M, H, W), dtype=x3.dtype)
    zero = x3.dtype.type(0)
    for m in range(M):
        for r in range(H):
            i = r // wh
            if i >= oh:
                for c in range(W):
                    gx[m, r, c] = zero
                continue
            for j in range(ow):
                mx = out3[m, i, j]
                g = gz3[m, i, j]
                c0 = j * ww
                c1 = min(c0 + ww, W)
                for c in range(c0, c1):
                    gx[m, r, c] = g if x3[m, r, c] == mx else zero
            for c in range(ow * ww, W):
                gx[m, r, c] = zero
    return gx


# Bump when a kernel changes, so that PyTensor's on-disk cache is not reused stale.
_VERSION = 3


@register_funcify_default_op_cache_key(Conv2d)
def numba_funcify_Conv2d(op, node=None, **kwargs):
    @numba_njit
    def conv2d(x, w):
        return conv2d_valid(x, w)

    return conv2d, _VERSION


@register_funcify_default_op_cache_key(Conv2dGradInputs)
def numba_funcify_Conv2dGradInputs(op, node=None, **kwargs):
    @numba_njit
    def conv2d_gi(gz, w):
        return conv2d_grad_inputs(gz, w)

    return conv2d_gi, _VERSION


@register_funcify_default_op_cache_key(Conv2dGradFilters)
def numba_funcify_Conv2dGradFilters(op, node=None, **kwargs):
    @numba_njit
    def conv2d_gw(x, gz):
        return conv2d_grad_filters(x, gz)

    return conv2d_gw, _VERSION


@register_funcify_default_op_cache_key(MaxPool2d)
def numba_funcify_MaxPool2d(op, node=None, **kwargs):
    wh, ww = op.ws
    ignore_border = bool(op.ignore_border)

    @numba_njit
    def max_pool(x):
        H, W = x.shape[-2], x.shape[-1]
        x3 = np.ascontiguousarray(x).reshape((-1, H, W))
        out3 = max_pool_3d(x3, wh, ww, ignore_border)
        return out3.reshape(x.shape[:-2] + (out3.shape[1], out3.shape[2]))

    return max_pool, _VERSION


@register_funcify_default_op_cache_key(MaxPool2dGrad)
def numba_funcify_MaxPool2dGrad(op, node=None, **kwargs):
    wh, ww = op.ws

    @numba_njit
    def max_pool_grad(x, out, gz):
        H, W = x.shape[-2], x.shape[-1]
        oh, ow = out.shape[-2], out.shape[-1]
        x3 = np.ascontiguousarray(x).reshape((-1, H, W))
        out3 = np.ascontiguousarray(out).reshape((-1, oh, ow))
        gz3 = np.ascontiguousarray(gz).reshape((-1, oh, ow))
        return max_pool_grad_3d(x3, out3, gz3, wh, ww).reshape(x.shape)

    return max_pool_grad, _VERSION


@_njit
def _pad(x, sizes, value):
    b0, b1, a0, a1, m0, m1, i0, i1 = sizes
    h, w = x.shape[-2], x.shape[-1]
    x3 = np.ascontiguousarray(x).reshape((-1, h, w))
    y3 = np.empty((x3.shape[0], max(h + max(h - 1, 0) * i0 + b0 + a0, m0),
                   max(w + max(w - 1, 0) * i1 + b1 + a1, m1)), dtype=x.dtype)
    y3.fill(value)
    for p in range(x3.shape[0]):
        for r in range(h):
            for c in range(w):
                y3[p, b0 + r * (i0 + 1), b1 + c * (i1 + 1)] = x3[p, r, c]
    return y3.reshape(x.shape[:-2] + (y3.shape[1], y3.shape[2]))


@_njit
def _crop(gy, x, sizes):
    b0, b1, s0, s1 = sizes
    h, w = x.shape[-2], x.shape[-1]
    gy3 = np.ascontiguousarray(gy).reshape((-1, gy.shape[-2], gy.shape[-1]))
    out = np.empty((gy3.shape[0], h, w), dtype=gy.dtype)
    for p in range(gy3.shape[0]):
        for r in range(h):
            for c in range(w):
                out[p, r, c] = gy3[p, b0 + r * s0, b1 + c * s1]
    return out.reshape(x.shape)


# Pad2d and Crop2d: each node's function only passes its Op's constants to the
# cached kernels above, so that a node compiles in a fraction of a second. The
# sizes go in an array: integer constants would each compile a kernel of their own.
@register_funcify_default_op_cache_key(Pad2d)
def numba_funcify_Pad2d(op, node=None, **kwargs):
    sizes = np.array([*op.before, *op.after, *op.at_least, *op.interior], dtype=np.int64)
    value = op.value

    @numba_njit
    def pad2d(x):
        return _pad(x, sizes, value)

    return pad2d, _VERSION


@register_funcify_default_op_cache_key(Crop2d)
def numba_funcify_Crop2d(op, node=None, **kwargs):
    sizes = np.array([*op.before, *op.step], dtype=np.int64)

    @numba_njit
    def crop2d(gy, x):
        return _crop(gy, x, sizes)

    return crop2d, _VERSION


# --------------------------------------------------------------------------
# general pooling (Pool2d, Pool2dGrad): loops over the windows that
# general_pool.windows describes; mode 0 max, 1 sum, 2 an average


@_njit
def _windows(size, ws, stride, pad, ignore_border, inc_pad):
    n = size + 2 * pad
    if ignore_border:
        out = n // stride if ws == stride else max((n - ws) // stride + 1, 0)
    elif stride >= ws:
        out = (n - 1) // stride + 1
    else:
        out = max((n - 1 - ws + stride) // stride, 0) + 1
    lo, hi, count = np.empty(out, np.int64), np.empty(out, np.int64), np.empty(out, np.int64)
    for i in range(out):
        start = i * stride - pad
        lo[i], hi[i] = max(start, 0), min(start + ws, size)
        count[i] = min(start + ws, size + pad) - start if inc_pad else hi[i] - lo[i]
    return lo, hi, count


@_njit
def _pool_3d(x, rows, cols, mode):
    (rlo, rhi, rn), (clo, chi, cn) = rows, cols
    z = np.empty((x.shape[0], rlo.size, clo.size), dtype=x.dtype)
    zero = np.zeros(1, dtype=x.dtype)[0]
    for p in range(x.shape[0]):
        for i in range(rlo.size):
            for j in range(clo.size):
                if mode == 0:
                    acc = x[p, rlo[i], clo[j]]
                    for r in range(rlo[i], rhi[i]):
                        for c in range(clo[j], chi[j]):
                            v = x[p, r, c]
                            if v > acc or v != v:
                                acc = v
                    z[p, i, j] = acc
                else:
                    total = zero
                    for r in range(rlo[i], rhi[i]):
                        for c in range(clo[j], chi[j]):
                            total += x[p, r, c]
                    z[p, i, j] = total if mode == 1 else total / (rn[i] * cn[j])
    return z


@_njit
def _pool_grad_3d(x, z, gz, rows, cols, mode):
    (rlo, rhi, rn), (clo, chi, cn) = rows, cols
    gx = np.zeros_like(x)
    for p in range(x.shape[0]):
        for i in range(rlo.size):
            for j in range(clo.size):
                g = gz[p, i, j]
                if mode == 2:
                    g = g / (rn[i] * cn[j])
                for r in range(rlo[i], rhi[i]):
                    for c in range(clo[j], chi[j]):
                        if mode != 0 or x[p, r, c] == z[p, i, j]:
                            gx[p, r, c] += g
    return gx


@_njit
def _planes(size, h, w):
    return size // (h * w) if h * w > 0 else 0


@_njit
def _pool_windows(h, w, params):
    wh, ww, sh, sw, ph, pw, ib, inc = params[:8]
    return _windows(h, wh, sh, ph, ib != 0, inc != 0), _windows(w, ww, sw, pw, ib != 0, inc != 0)


def _pool_params(op):
    """The Op's constants, for the cached kernels: as an array, since integer
    constants would each compile a kernel of their own."""
    (wh, ww), (sh, sw), (ph, pw) = op.ws, op.stride, op.pad
    mode = {"max": 0, "sum": 1}.get(op.mode, 2)
    return np.array([wh, ww, sh, sw, ph, pw, op.ignore_border, op.mode == "average_inc_pad", mode],
                    dtype=np.int64)


@_njit
def _pool(x, params):
    h, w = x.shape[-2], x.shape[-1]
    rows, cols = _pool_windows(h, w, params)
    n = _planes(x.size, h, w)
    z3 = _pool_3d(np.ascontiguousarray(x).reshape((n, h, w)), rows, cols, params[8])
    return z3.reshape(x.shape[:-2] + (z3.shape[1], z3.shape[2]))


@_njit
def _pool_grad(x, z, gz, params):
    h, w = x.shape[-2], x.shape[-1]
    oh, ow = z.shape[-2], z.shape[-1]
    rows, cols = _pool_windows(h, w, params)
    n = _planes(x.size, h, w)
    gx3 = _pool_grad_3d(np.ascontiguousarray(x).reshape((n, h, w)),
                        np.ascontiguousarray(z).reshape((n, oh, ow)),
                        np.ascontiguousarray(gz).reshape((n, oh, ow)), rows, cols, params[8])
    return gx3.reshape(x.shape)


@register_funcify_default_op_cache_key(Pool2d)
def numba_funcify_Pool2d(op, node=None, **kwargs):
    params = _pool_params(op)

    @numba_njit
    def pool(x):
        return _pool(x, params)

    return pool, _VERSION


@register_funcify_default_op_cache_key(Pool2dGrad)
def numba_funcify_Pool2dGrad(op, node=None, **kwargs):
    params = _pool_params(op)

    @numba_njit
    def pool_grad(x, z, gz):
        return _pool_grad(x, z, gz, params)

    return pool_grad, _VERSION
