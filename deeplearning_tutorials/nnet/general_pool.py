"""Theano's ``Pool`` and ``MaxPoolGrad``/``AveragePoolGrad`` in general, as PyTensor Ops.

Pooling of the last two axes with any window, stride and padding, both
``ignore_border`` rules, and the modes 'max', 'sum', 'average_inc_pad' and
'average_exc_pad' (:func:`deeplearning_tutorials.signal.pool.pool_2d` builds
them; the tutorial's case stays :class:`~deeplearning_tutorials.nnet.pool.MaxPool2d`).

* :class:`Pool2d` -- ``x -> z``;
* :class:`Pool2dGrad` -- ``(x, z, gz) -> gx``, Theano's rules: a window's
  gradient goes to every input equal to the window's maximum (ties included)
  and adds up where windows overlap; a sum's to every input of the window; an
  average's, divided by the inputs it counted, to every input of the window.

Window ``i`` of an axis of ``n`` inputs starts at ``i * stride - pad`` (image
coordinates) and covers ``ws`` positions; :func:`windows` says which inputs
each one reads and how many an average counts. The NumPy code here, the Numba
code (:mod:`.numba`), the JAX code (:mod:`.jax`, ``lax.reduce_window``) and
the C code here (float32 and float64; other types run the NumPy code) all
follow it.
"""

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.utils import MethodNotDefined
from pytensor.link.c.op import COp

__all__ = ["Pool2d", "Pool2dGrad", "MODES", "pool_output_length", "windows", "lowest"]

MODES = ("max", "sum", "average_inc_pad", "average_exc_pad")


def pool_output_length(size, ws, stride, pad, ignore_border):
    """Outputs along one axis of ``size`` inputs (Theano's ``Pool.out_shape``).

    Parameters
    ----------
    size, ws, stride, pad : int
    ignore_border : bool

    Returns
    -------
    int
    """
    n = size + 2 * pad
    if ignore_border:
        return n // stride if ws == stride else max((n - ws) // stride + 1, 0)
    if stride >= ws:
        return (n - 1) // stride + 1
    return max((n - 1 - ws + stride) // stride, 0) + 1


def windows(size, ws, stride, pad, ignore_border, mode):
    """The windows along one axis of ``size`` inputs.

    Returns
    -------
    lo, hi : ndarray of int64, one per output
        The inputs ``lo[i]:hi[i]`` window ``i`` reads.
    count : ndarray of int64
        How many positions an average counts: those of the padded image
        ('average_inc_pad'), else the inputs read.
    """
    out = pool_output_length(size, ws, stride, pad, ignore_border)
    start = np.arange(out, dtype=np.int64) * stride - pad
    lo, hi = np.maximum(start, 0), np.minimum(start + ws, size)
    if mode == "average_inc_pad":
        count = np.minimum(start + ws, size + pad) - start
    else:
        count = hi - lo
    return lo, hi, count


def lowest(dtype):
    """The value a 'max' window's padding holds: below every input."""
    dtype = np.dtype(dtype)
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _divide(total, count, dtype):
    if np.dtype(dtype).kind == "f":
        return (total / count).astype(dtype, copy=False)
    return np.trunc(total / count).astype(dtype)


def _planes(x):
    return int(np.prod(x.shape[:-2], dtype=np.int64))


def pool_numpy(x, ws, stride, pad, ignore_border, mode):
    """:class:`Pool2d` in NumPy: ``x`` (..., h, w) -> (..., oh, ow)."""
    (h, w), dtype = x.shape[-2:], x.dtype
    rows = windows(h, ws[0], stride[0], pad[0], ignore_border, mode)
    cols = windows(w, ws[1], stride[1], pad[1], ignore_border, mode)
    x3 = x.reshape((_planes(x), h, w))
    reduce = np.max if mode == "max" else np.sum
    z = np.empty((x3.shape[0], len(rows[0]), len(cols[0])), dtype=dtype)
    for i, (r0, r1) in enumerate(zip(rows[0], rows[1])):
        for j, (c0, c1) in enumerate(zip(cols[0], cols[1])):
            z[:, i, j] = reduce(x3[:, r0:r1, c0:c1], axis=(1, 2))
    if mode.startswith("average"):
        z = _divide(z, np.multiply.outer(rows[2], cols[2]), dtype)
    return z.reshape(x.shape[:-2] + z.shape[1:])


def pool_grad_numpy(x, z, gz, ws, stride, pad, ignore_border, mode):
    """:class:`Pool2dGrad` in NumPy."""
    (h, w) = x.shape[-2:]
    rows = windows(h, ws[0], stride[0], pad[0], ignore_border, mode)
    cols = windows(w, ws[1], stride[1], pad[1], ignore_border, mode)
    n = _planes(x)
    x3 = x.reshape((n, h, w))
    z3, g3 = z.reshape((n,) + z.shape[-2:]), gz.reshape((n,) + gz.shape[-2:])
    if mode.startswith("average"):
        g3 = g3 / np.multiply.outer(rows[2], cols[2])
    gx = np.zeros(x3.shape, dtype=x.dtype)
    for i, (r0, r1) in enumerate(zip(rows[0], rows[1])):
        for j, (c0, c1) in enumerate(zip(cols[0], cols[1])):
            g = g3[:, i, j, None, None]
            if mode == "max":
                g = np.where(x3[:, r0:r1, c0:c1] == z3[:, i, j, None, None], g, 0)
            gx[:, r0:r1, c0:c1] += g
    return gx.reshape(x.shape)


# The C code of both Ops over ``n`` planes of H x W: the windows of each axis
# (general_pool.windows), then the pooling loops; the gradient's z and gz are
# NULL in the forward Op.  MODE: 0 max, 1 sum, 2 an average.
_C_CODE = """
{
    PyArrayObject *cx = PyArray_GETCONTIGUOUS(%(x)s), *cz = NULL, *cg = NULL;
    npy_intp dims[%(nd)s];
    long n = 1, size[2], out[2], *lo[2] = {NULL, NULL}, *hi[2] = {NULL, NULL},
         *cnt[2] = {NULL, NULL};
    const long ws[2] = {%(ws0)s, %(ws1)s}, st[2] = {%(st0)s, %(st1)s}, pad[2] = {%(pad0)s, %(pad1)s};
    int d, a, ok = 0;
    if (cx == NULL) goto fail_%(name)s;
    for (d = 0; d < %(nd)s - 2; ++d) { dims[d] = PyArray_DIMS(cx)[d]; n *= dims[d]; }
    for (a = 0; a < 2; ++a) {
        long k, all = PyArray_DIMS(cx)[%(nd)s - 2 + a] + 2 * pad[a], t;
        size[a] = PyArray_DIMS(cx)[%(nd)s - 2 + a];
        if (%(ib)s) out[a] = ws[a] == st[a] ? all / st[a] : (all < ws[a] ? 0 : (all - ws[a]) / st[a] + 1);
        else if (st[a] >= ws[a]) out[a] = all == 0 ? 0 : (all - 1) / st[a] + 1;
        else { t = all - 1 - ws[a] + st[a]; out[a] = (t > 0 ? t / st[a] : 0) + 1; }
        lo[a] = (long*)malloc(sizeof(long) * (out[a] + 1));
        hi[a] = (long*)malloc(sizeof(long) * (out[a] + 1));
        cnt[a] = (long*)malloc(sizeof(long) * (out[a] + 1));
        if (!lo[a] || !hi[a] || !cnt[a]) { PyErr_NoMemory(); goto fail_%(name)s; }
        for (k = 0; k < out[a]; ++k) {
            long start = k * st[a] - pad[a], end = start + ws[a];
            lo[a][k] = start > 0 ? start : 0;
            hi[a][k] = end < size[a] ? end : size[a];
            cnt[a][k] = %(inc)s ? (end < size[a] + pad[a] ? end : size[a] + pad[a]) - start
                                : hi[a][k] - lo[a][k];
        }
    }
    dims[%(nd)s - 2] = %(grad)s ? size[0] : out[0];
    dims[%(nd)s - 1] = %(grad)s ? size[1] : out[1];
    if (%(grad)s) {
        cz = PyArray_GETCONTIGUOUS((PyArrayObject*)%(z)s);
        cg = PyArray_GETCONTIGUOUS((PyArrayObject*)%(gz)s);
        if (cz == NULL || cg == NULL) goto fail_%(name)s;
        if (PyArray_SIZE(cz) != n * out[0] * out[1] || PyArray_SIZE(cg) != n * out[0] * out[1]) {
            PyErr_SetString(PyExc_ValueError, "pooling gradient: z and gz do not fit x");
            goto fail_%(name)s;
        }
    }
    if (%(y)s == NULL || !PyArray_IS_C_CONTIGUOUS(%(y)s)
        || !PyArray_CompareLists(PyArray_DIMS(%(y)s), dims, %(nd)s)) {
        Py_XDECREF(%(y)s);
        %(y)s = (PyArrayObject*)PyArray_EMPTY(%(nd)s, dims, %(typenum)s, 0);
        if (%(y)s == NULL) goto fail_%(name)s;
    }
    {
        const %(ctype)s *x = (const %(ctype)s*)PyArray_DATA(cx);
        %(ctype)s *y = (%(ctype)s*)PyArray_DATA(%(y)s);
        const long H = size[0], W = size[1], oh = out[0], ow = out[1];
        long p, i, j, r, c;
        if (%(grad)s) memset(y, 0, sizeof(%(ctype)s) * n * H * W);
        for (p = 0; p < n; ++p) {
            const %(ctype)s *xp = x + p * H * W;
            %(ctype)s *yp = y + p * (%(grad)s ? H * W : oh * ow);
            for (i = 0; i < oh; ++i)
                for (j = 0; j < ow; ++j) {
                    if (%(grad)s) {
                        const %(ctype)s m = ((const %(ctype)s*)PyArray_DATA(cz))[(p * oh + i) * ow + j];
                        %(ctype)s g = ((const %(ctype)s*)PyArray_DATA(cg))[(p * oh + i) * ow + j];
                        if (%(mode)s == 2) g = g / (%(ctype)s)(cnt[0][i] * cnt[1][j]);
                        for (r = lo[0][i]; r < hi[0][i]; ++r)
                            for (c = lo[1][j]; c < hi[1][j]; ++c)
                                if (%(mode)s != 0 || xp[r * W + c] == m) yp[r * W + c] += g;
                    } else if (%(mode)s == 0) {
                        %(ctype)s m = xp[lo[0][i] * W + lo[1][j]];
                        for (r = lo[0][i]; r < hi[0][i]; ++r)
                            for (c = lo[1][j]; c < hi[1][j]; ++c) {
                                const %(ctype)s v = xp[r * W + c];
                                if (v > m || v != v) m = v;
                            }
                        yp[i * ow + j] = m;
                    } else {
                        %(ctype)s total = 0;
                        for (r = lo[0][i]; r < hi[0][i]; ++r)
                            for (c = lo[1][j]; c < hi[1][j]; ++c) total += xp[r * W + c];
                        yp[i * ow + j] = %(mode)s == 1 ? total
                                         : total / (%(ctype)s)(cnt[0][i] * cnt[1][j]);
                    }
                }
        }
    }
    ok = 1;
  fail_%(name)s:
    Py_XDECREF(cx);
    Py_XDECREF(cz);
    Py_XDECREF(cg);
    for (a = 0; a < 2; ++a) { free(lo[a]); free(hi[a]); free(cnt[a]); }
    if (!ok) { %(fail)s }
}
"""


class _Pool2dBase(COp):
    __props__ = ("ws", "stride", "pad", "ignore_border", "mode")

    def __init__(self, ws, stride, pad, ignore_border, mode):
        self.ws = tuple(int(s) for s in ws)
        self.stride = tuple(int(s) for s in stride)
        self.pad = tuple(int(p) for p in pad)
        self.ignore_border = bool(ignore_border)
        if mode not in MODES:
            raise ValueError(f"pool_2d: mode must be one of {MODES}, got {mode!r}")
        self.mode = mode

    def args(self):
        return self.ws, self.stride, self.pad, self.ignore_border, self.mode

    def c_code_cache_version(self):
        return (1,)

    def _c_code(self, node, name, x, z, gz, y, sub):
        dtype = node.inputs[0].type.dtype
        if dtype not in ("float32", "float64"):
            raise MethodNotDefined("c_code", type(self), f"pooling of {dtype}")
        (ws0, ws1), (st0, st1), (pad0, pad1) = self.ws, self.stride, self.pad
        return _C_CODE % dict(
            x=x, z=z, gz=gz, y=y, name=name, fail=sub["fail"], nd=node.inputs[0].type.ndim,
            ws0=ws0, ws1=ws1, st0=st0, st1=st1, pad0=pad0, pad1=pad1,
            ib=int(self.ignore_border), inc=int(self.mode == "average_inc_pad"),
            mode={"max": 0, "sum": 1}.get(self.mode, 2), grad=int(z != "NULL"),
            ctype=f"npy_{dtype}", typenum=f"NPY_{dtype.upper()}",
        )

    def output_length(self, axis, size):
        if size is None:
            return None
        return pool_output_length(size, self.ws[axis], self.stride[axis], self.pad[axis],
                                  self.ignore_border)


class Pool2d(_Pool2dBase):
    """Pool the last two axes of a tensor (see the module)."""

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        if x.type.ndim < 2:
            raise ValueError(f"pool_2d needs a tensor of at least 2 dimensions, got {x.type}")
        h, w = x.type.shape[-2:]
        shape = x.type.shape[:-2] + (self.output_length(0, h), self.output_length(1, w))
        return Apply(self, [x], [pt.tensor(dtype=x.type.dtype, shape=shape)])

    def perform(self, node, inputs, output_storage):
        output_storage[0][0] = pool_numpy(inputs[0], *self.args())

    def infer_shape(self, *args):
        # PyTensor 3.0 passes (fgraph, node, shapes); later versions (node, shapes).
        node, ((*lead, h, w),) = args[-2:]
        shape = tuple(lead)
        for axis, size in enumerate((h, w)):
            n = size + 2 * self.pad[axis]
            ws, s = self.ws[axis], self.stride[axis]
            if self.ignore_border:
                length = pt.maximum((n - ws) // s + 1, 0)
            elif s >= ws:
                length = (n - 1) // s + 1
            else:
                length = pt.maximum((n - 1 - ws + s) // s, 0) + 1
            shape += (length,)
        return [shape]

    def pullback(self, inputs, outputs, output_grads):
        (x,), (z,), (gz,) = inputs, outputs, output_grads
        return [Pool2dGrad(*self.args())(x, z, gz)]

    def c_code(self, node, name, inputs, outputs, sub):
        return self._c_code(node, name, inputs[0], "NULL", "NULL", outputs[0], sub)


class Pool2dGrad(_Pool2dBase):
    """The gradient of :class:`Pool2d`: ``(x, z, gz) -> gx`` (see the module)."""

    def make_node(self, x, z, gz):
        x, z, gz = (pt.as_tensor_variable(v) for v in (x, z, gz))
        if not x.type.ndim == z.type.ndim == gz.type.ndim:
            raise ValueError("Pool2dGrad: x, z and gz must have the same rank")
        z, gz = (v if v.type.dtype == x.type.dtype else pt.cast(v, x.type.dtype) for v in (z, gz))
        return Apply(self, [x, z, gz], [x.type()])

    def perform(self, node, inputs, output_storage):
        output_storage[0][0] = pool_grad_numpy(*inputs, *self.args())

    def infer_shape(self, *args):
        node, shapes = args[-2:]
        return [shapes[0]]

    def pullback(self, inputs, outputs, output_grads):
        return [grad_not_implemented(self, i, inp, "second derivative of pooling")
                for i, inp in enumerate(inputs)]

    def c_code(self, node, name, inputs, outputs, sub):
        return self._c_code(node, name, *inputs, outputs[0], sub)
