"""Theano's max pooling (``pool_2d`` / ``downsample.max_pool_2d``) as PyTensor Ops.

Port note: PyTensor removed ``tensor.signal.pool``; this module brings back the
non-overlapping max pooling the tutorial uses (stride = window, no padding).

* :class:`MaxPool2d` -- max over ``ws`` windows of the last two axes of an
  N-d (N >= 2) tensor;
* :class:`MaxPool2dGrad` -- ``(x, maxout, gz) -> gx``, Theano's ``MaxPoolGrad``
  rule: the upstream gradient of a window goes to EVERY input equal to the
  window's maximum (ties included), the other inputs, and inputs in dropped
  border rows/columns, get zero.
"""

import warnings

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.link.c.op import COp

from deeplearning_tutorials.nnet.conv import c_support_code, c_type_name

__all__ = ["pool_2d", "max_pool_2d", "MaxPool2d", "MaxPool2dGrad"]


def _out_len(n, ws, ignore_border):
    if ignore_border:
        return n // ws
    return -(-n // ws)


def _padded(x, ws, ignore_border, fill):
    """``x`` cut (ignore_border) or padded with ``fill`` to whole windows."""
    wh, ww = ws
    H, W = x.shape[-2:]
    oh, ow = _out_len(H, wh, ignore_border), _out_len(W, ww, ignore_border)
    if ignore_border:
        return x[..., : oh * wh, : ow * ww], oh, ow
    pad = [(0, 0)] * (x.ndim - 2) + [(0, oh * wh - H), (0, ow * ww - W)]
    return np.pad(x, pad, constant_values=fill), oh, ow


def max_pool_numpy(x, ws, ignore_border):
    """Max over non-overlapping ``ws`` windows of the last two axes of ``x``.

    Parameters
    ----------
    x : ndarray, shape (..., H, W)
    ws : (int, int)
    ignore_border : bool

    Returns
    -------
    ndarray, shape (..., oh, ow)
        ``oh = H // wh`` if ``ignore_border`` else ``ceil(H / wh)``; same for ``ow``.
    """
    wh, ww = ws
    fill = -np.inf
    xp, oh, ow = _padded(x, ws, ignore_border, fill)
    xw = xp.reshape(x.shape[:-2] + (oh, wh, ow, ww))
    return np.ascontiguousarray(xw.max(axis=(-3, -1)))


def max_pool_grad_numpy(x, maxout, gz, ws, ignore_border):
    """Theano's max-pool gradient: ``gz`` goes to every input equal to its window's max.

    Parameters
    ----------
    x : ndarray, shape (..., H, W)
    maxout : ndarray, shape (..., oh, ow)
        ``max_pool_numpy(x, ws, ignore_border)``.
    gz : ndarray, shape (..., oh, ow)
    ws : (int, int)
    ignore_border : bool

    Returns
    -------
    ndarray, shape (..., H, W)
    """
    wh, ww = ws
    H, W = x.shape[-2:]
    oh, ow = maxout.shape[-2:]
    # NaN fill never equals the max, so padded cells take no gradient.
    xp, _, _ = _padded(x, ws, ignore_border, np.nan)
    xw = xp.reshape(x.shape[:-2] + (oh, wh, ow, ww))
    hit = xw == maxout[..., :, None, :, None]
    gxw = np.where(hit, gz[..., :, None, :, None], 0).astype(x.dtype, copy=False)
    gxp = gxw.reshape(x.shape[:-2] + (oh * wh, ow * ww))
    gx = np.zeros_like(x)
    rows, cols = min(H, oh * wh), min(W, ow * ww)
    gx[..., :rows, :cols] = gxp[..., :rows, :cols]
    return gx


def _check_ws(ws):
    try:
        ws = tuple(ws)
    except TypeError:
        raise ValueError(f"pool_2d: ws must be a pair of positive ints, got {ws!r}") from None
    if len(ws) != 2 or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) and s >= 1
        for s in ws
    ):
        raise ValueError(f"pool_2d: ws must be a pair of positive ints, got {ws!r}")
    return (int(ws[0]), int(ws[1]))


def as_pool_input(x):
    x = pt.as_tensor_variable(x)
    if x.type.ndim < 2:
        raise ValueError(f"pool_2d needs a tensor of at least 2 dimensions, got {x.type}")
    return x


# The C code of both pooling Ops over the last two axes of an N-d array: ``n``
# planes of H x W; ``m`` and ``g`` (the gradient's maxout and gz) are NULL for the
# forward Op, whose output planes are oh x ow where the gradient's are H x W.
_POOL_C_CODE = """
{
    PyArrayObject *cx = PyArray_GETCONTIGUOUS(%(x)s), *cm = NULL, *cg = NULL;
    npy_intp dims[%(nd)s];
    long n = 1, H, W, oh, ow;
    int d, ok = 0;
    if (cx == NULL) goto fail_%(name)s;
    for (d = 0; d < %(nd)s - 2; ++d) { dims[d] = PyArray_DIMS(cx)[d]; n *= dims[d]; }
    H = PyArray_DIMS(cx)[%(nd)s - 2]; W = PyArray_DIMS(cx)[%(nd)s - 1];
    oh = %(ib)s ? H / %(wh)s : (H + %(wh)s - 1) / %(wh)s;
    ow = %(ib)s ? W / %(ww)s : (W + %(ww)s - 1) / %(ww)s;
    dims[%(nd)s - 2] = %(grad)s ? H : oh; dims[%(nd)s - 1] = %(grad)s ? W : ow;
    if (%(grad)s) {
        cm = PyArray_GETCONTIGUOUS((PyArrayObject*)%(m)s);
        cg = PyArray_GETCONTIGUOUS((PyArrayObject*)%(g)s);
        if (cm == NULL || cg == NULL) goto fail_%(name)s;
        if (PyArray_SIZE(cm) != n * oh * ow || PyArray_SIZE(cg) != n * oh * ow) {
            PyErr_SetString(PyExc_ValueError, "max pooling gradient: maxout and gz do not fit x");
            goto fail_%(name)s;
        }
    }
    if (dlt_output(&%(z)s, %(nd)s, dims, %(typenum)s) != 0) goto fail_%(name)s;
    if (%(grad)s)
        dlt_max_pool_grad_%(sfx)s((%(ctype)s*)PyArray_DATA(cx), (%(ctype)s*)PyArray_DATA(cm),
                                  (%(ctype)s*)PyArray_DATA(cg), (%(ctype)s*)PyArray_DATA(%(z)s),
                                  n, (int)H, (int)W, %(wh)s, %(ww)s, (int)oh, (int)ow);
    else
        dlt_max_pool_%(sfx)s((%(ctype)s*)PyArray_DATA(cx), (%(ctype)s*)PyArray_DATA(%(z)s), n,
                             (int)H, (int)W, %(wh)s, %(ww)s, (int)oh, (int)ow);
    ok = 1;
  fail_%(name)s:
    Py_XDECREF(cx);
    Py_XDECREF(cm);
    Py_XDECREF(cg);
    if (!ok) { %(fail)s }
}
"""


class _PoolOpBase(COp):
    """What the two pooling Ops share: their window and their C code's plumbing."""

    __props__ = ("ws", "ignore_border")

    def __init__(self, ws, ignore_border):
        self.ws = _check_ws(ws)
        self.ignore_border = bool(ignore_border)

    def c_code_cache_version(self):
        return (11,)

    def c_support_code(self, **kwargs):
        return c_support_code("pool.c")

    def _c_code(self, node, name, x, m, g, z, sub, grad):
        dtype = node.outputs[0].dtype
        ctype = {"float32": "npy_float32", "float64": "npy_float64"}[dtype]
        return _POOL_C_CODE % dict(
            x=x, m=m, g=g, z=z, name=name, fail=sub["fail"], nd=node.inputs[0].type.ndim,
            ib=int(self.ignore_border), wh=self.ws[0], ww=self.ws[1], grad=int(bool(grad)),
            sfx=c_type_name(dtype), ctype=ctype, typenum=f"NPY_{dtype.upper()}",
        )


class MaxPool2d(_PoolOpBase):
    """Max pooling over non-overlapping ``ws`` windows of the last two axes.

    Parameters
    ----------
    ws : (int, int)
        Window (and stride) height and width.
    ignore_border : bool
        True drops partial windows (``oh = H // wh``), False keeps them
        (``oh = ceil(H / wh)``).
    """

    def _out_static(self, shape):
        lead, (H, W) = shape[:-2], shape[-2:]
        oh = None if H is None else _out_len(H, self.ws[0], self.ignore_border)
        ow = None if W is None else _out_len(W, self.ws[1], self.ignore_border)
        return tuple(lead) + (oh, ow)

    def make_node(self, x):
        x = as_pool_input(x)
        out = pt.tensor(dtype=x.type.dtype, shape=self._out_static(x.type.shape))
        return Apply(self, [x], [out])

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        output_storage[0][0] = max_pool_numpy(x, self.ws, self.ignore_border)


    def pullback(self, inputs, outputs, output_grads):
        (x,) = inputs
        (gz,) = output_grads
        (maxout,) = outputs
        return [MaxPool2dGrad(self.ws, self.ignore_border)(x, maxout, gz)]

    def c_code(self, node, name, inputs, outputs, sub):
        (x,) = inputs
        return self._c_code(node, name, x, "NULL", "NULL", outputs[0], sub, "")


class MaxPool2dGrad(_PoolOpBase):
    """Gradient of :class:`MaxPool2d`: inputs ``(x, maxout, gz)``, output ``gx`` like ``x``.

    Every input equal to its window's maximum gets the window's ``gz`` (Theano's
    ``MaxPoolGrad`` compares the input with the max, so tied inputs all receive it).
    """

    def make_node(self, x, maxout, gz):
        x = as_pool_input(x)
        maxout = pt.as_tensor_variable(maxout)
        gz = pt.as_tensor_variable(gz)
        if maxout.type.ndim != x.type.ndim or gz.type.ndim != x.type.ndim:
            raise ValueError("MaxPool2dGrad: x, maxout and gz must have the same rank")
        if maxout.type.dtype != x.type.dtype:
            maxout = pt.cast(maxout, x.type.dtype)
        if gz.type.dtype != x.type.dtype:
            gz = pt.cast(gz, x.type.dtype)
        return Apply(self, [x, maxout, gz], [x.type()])

    def perform(self, node, inputs, output_storage):
        x, maxout, gz = inputs
        output_storage[0][0] = max_pool_grad_numpy(x, maxout, gz, self.ws, self.ignore_border)

    def infer_shape(self, *args):
        # PyTensor 3.0 passes (fgraph, node, shapes); later versions (node, shapes).
        node, shapes = args[-2:]
        return [shapes[0]]

    def pullback(self, inputs, outputs, output_grads):
        # Second derivatives of max pooling are not needed by the tutorials.
        return [
            grad_not_implemented(self, i, inp, "second derivative of max pooling")
            for i, inp in enumerate(inputs)
        ]

    def c_code(self, node, name, inputs, outputs, sub):
        x, maxout, gz = inputs
        return self._c_code(node, name, x, maxout, gz, outputs[0], sub, "_grad")


def pool_2d(input, ws, ignore_border=True, mode="max"):
    """Max-pool the last two axes of ``input`` over non-overlapping ``ws`` windows.

    Parameters
    ----------
    input : TensorVariable, shape (..., H, W), at least 2-D
    ws : (int, int)
        Window height and width; the stride equals the window.
    ignore_border : bool, default True
        True drops partial windows at the bottom/right border
        (``oh = H // wh``); False keeps them (``oh = ceil(H / wh)``).
    mode : {'max'}
        Only 'max' is implemented.

    Returns
    -------
    TensorVariable, shape (..., oh, ow)
    """
    if mode != "max":
        raise ValueError(f"pool_2d: only mode='max' is implemented, got {mode!r}")
    if ignore_border is None:
        ignore_border = False
    return MaxPool2d(_check_ws(ws), ignore_border)(as_pool_input(input))


def max_pool_2d(input, ds, ignore_border=None):
    """The original's spelling (``theano.tensor.signal.downsample.max_pool_2d``).

    Parameters
    ----------
    input : TensorVariable, shape (..., H, W)
    ds : (int, int)
        Window height and width.
    ignore_border : bool or None
        None means False, as in old Theano, which warned that the default would
        change; this warns too. The tutorial passes True.

    Returns
    -------
    TensorVariable, shape (..., oh, ow)
    """
    if ignore_border is None:
        warnings.warn(
            "max_pool_2d: ignore_border=None is treated as False, as old Theano did; "
            "pass ignore_border explicitly (the tutorial uses True).",
            stacklevel=2,
        )
        ignore_border = False
    return pool_2d(input, ds, ignore_border=ignore_border, mode="max")
