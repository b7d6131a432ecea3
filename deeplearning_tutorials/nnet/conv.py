"""Theano's legacy 2-D convolution (``theano.tensor.nnet.conv.conv2d``) as PyTensor Ops.

Port note: PyTensor removed ``nnet`` (its last convolution Op went in 2.36.3), and
``pytensor.tensor.signal.convolve2d`` is a per-slice 2-D convolution run by
Blockwise through SciPy, far too slow for LeNet5 and without a JAX
implementation. This module brings back the 4-D operation the tutorial calls,
with the semantics of the original: a TRUE convolution (kernels flipped), 'valid'
border mode, summed over input feature maps.

Three Ops make up the operation and its gradient:

* :class:`Conv2d` -- ``(x, w) -> z``, the forward convolution;
* :class:`Conv2dGradInputs` -- ``(gz, w) -> gx``, the gradient with respect to ``x``;
* :class:`Conv2dGradFilters` -- ``(x, gz) -> gw``, the gradient with respect to ``w``.

Each has a NumPy ``perform`` (im2col + one matrix product) and C code (``c/conv.c``,
im2col + the GEMM of the BLAS SciPy ships); :mod:`.numba` and :mod:`.jax` register
their Numba and JAX implementations.
"""

from pathlib import Path

import numpy as np
import pytensor.tensor as pt
from numpy.lib.stride_tricks import sliding_window_view
from pytensor.graph.basic import Apply
from pytensor.link.c.op import COp
from pytensor.scalar import upcast

from deeplearning_tutorials.nnet.pad import Pad2d

__all__ = ["conv2d", "general_conv2d", "Conv2d", "Conv2dGradInputs", "Conv2dGradFilters"]

# ---------------------------------------------------------------------------
# NumPy reference kernels (used by ``perform``)
# ---------------------------------------------------------------------------

def _patches(x, kh, kw):
    """Column matrix of ``x`` as ``(B*oh*ow, C*kh*kw)``, patches un-flipped.

    Parameters
    ----------
    x : ndarray, shape (B, C, H, W)
    kh, kw : int
        Filter height and width.
    """
    B, C, H, W = x.shape
    oh, ow = H - kh + 1, W - kw + 1
    # (B, C, oh, ow, kh, kw) view, then one copy into GEMM layout.
    view = sliding_window_view(x, (kh, kw), axis=(2, 3))
    return view.transpose(0, 2, 3, 1, 4, 5).reshape(B * oh * ow, C * kh * kw)

def _flipped_matrix(w):
    """Filters flipped in both spatial axes, as a ``(F, C*kh*kw)`` matrix."""
    F, C, kh, kw = w.shape
    return np.ascontiguousarray(w[:, :, ::-1, ::-1]).reshape(F, C * kh * kw)

def _check_conv_shapes(x_shape, w_shape):
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(
            f"conv2d needs 4-D input and filters, got shapes {x_shape} and {w_shape}"
        )
    if x_shape[1] != w_shape[1]:
        raise ValueError(
            f"conv2d: input has {x_shape[1]} feature maps but the filters expect {w_shape[1]} "
            f"(input shape {x_shape}, filter shape {w_shape})"
        )
    if w_shape[2] > x_shape[2] or w_shape[3] > x_shape[3]:
        raise ValueError(
            f"conv2d 'valid': filter {w_shape[2:]} is larger than the image {x_shape[2:]}"
        )

def conv2d_valid_numpy(x, w):
    """True 'valid' convolution summed over input maps (NumPy).

    Parameters
    ----------
    x : ndarray, shape (B, C, H, W)
    w : ndarray, shape (F, C, kh, kw)

    Returns
    -------
    ndarray, shape (B, F, H-kh+1, W-kw+1)
    """
    _check_conv_shapes(x.shape, w.shape)
    B, C, H, W = x.shape
    F, _, kh, kw = w.shape
    oh, ow = H - kh + 1, W - kw + 1
    res = _patches(x, kh, kw) @ _flipped_matrix(w).T  # (B*oh*ow, F)
    return np.ascontiguousarray(res.reshape(B, oh, ow, F).transpose(0, 3, 1, 2))

def conv2d_grad_inputs_numpy(gz, w):
    """Gradient of the convolution with respect to its input (NumPy).

    Parameters
    ----------
    gz : ndarray, shape (B, F, oh, ow)
    w : ndarray, shape (F, C, kh, kw)

    Returns
    -------
    ndarray, shape (B, C, oh+kh-1, ow+kw-1)
    """
    B, F, oh, ow = gz.shape
    _, C, kh, kw = w.shape
    if w.shape[0] != F:
        raise ValueError(f"conv2d grad: {F} output maps but {w.shape[0]} filters")
    gzm = gz.transpose(0, 2, 3, 1).reshape(B * oh * ow, F)
    dcols = (gzm @ _flipped_matrix(w)).reshape(B, oh, ow, C, kh, kw)
    gx = np.zeros((B, C, oh + kh - 1, ow + kw - 1), dtype=gz.dtype)
    for u in range(kh):
        for v in range(kw):
            gx[:, :, u : u + oh, v : v + ow] += dcols[:, :, :, :, u, v].transpose(0, 3, 1, 2)
    return gx

def conv2d_grad_filters_numpy(x, gz):
    """Gradient of the convolution with respect to its filters (NumPy).

    Parameters
    ----------
    x : ndarray, shape (B, C, H, W)
    gz : ndarray, shape (B, F, oh, ow)

    Returns
    -------
    ndarray, shape (F, C, H-oh+1, W-ow+1)
    """
    B, C, H, W = x.shape
    _, F, oh, ow = gz.shape
    if gz.shape[0] != B:
        raise ValueError(f"conv2d grad: batch {B} but output gradient batch {gz.shape[0]}")
    kh, kw = H - oh + 1, W - ow + 1
    gzm = gz.transpose(1, 0, 2, 3).reshape(F, B * oh * ow)
    gwf = (gzm @ _patches(x, kh, kw)).reshape(F, C, kh, kw)
    return np.ascontiguousarray(gwf[:, :, ::-1, ::-1])

# ---------------------------------------------------------------------------
# Ops
# ---------------------------------------------------------------------------

def _as_float4(var, name):
    var = pt.as_tensor_variable(var)
    if var.type.ndim != 4:
        raise ValueError(f"conv2d: {name} must be 4-D, got {var.type.ndim}-D ({var.type})")
    if var.type.dtype not in ("float32", "float64"):
        raise TypeError(f"conv2d: {name} must be float32 or float64, got {var.type.dtype}")
    return var

def _common_dtype(*vars_):
    dtype = upcast(*(v.type.dtype for v in vars_))
    return [pt.cast(v, dtype) if v.type.dtype != dtype else v for v in vars_]

def _diff_plus_one(a, b):
    return None if a is None or b is None else a - b + 1

_C_DIR = Path(__file__).with_name("c")
_C_TYPES = {"float32": "npy_float32", "float64": "npy_float64"}

def c_support_code(*files):
    """``c/blas.h`` and one copy per C type of each file of ``c/`` named in ``files``.

    Each copy is guarded, so that a whole-graph C module may hold the support
    code of several Ops that share files.
    """
    parts = [(_C_DIR / "blas.h").read_text(), (_C_DIR / "rows.h").read_text()]
    for name, ctype in (("float", "npy_float32"), ("double", "npy_float64")):
        parts.append(f"#define DLT_T {ctype}\n#define DLT_FN(f) f##_{name}")
        for f in files:
            guard = f"DLT_HAVE_{Path(f).stem.upper()}_{name.upper()}"
            parts.append(f"#ifndef {guard}\n#define {guard}\n{(_C_DIR / f).read_text()}\n#endif")
        parts.append("#undef DLT_T\n#undef DLT_FN")
    return "\n".join(parts)

def c_type_name(dtype):
    """The suffix of the C kernels' copy for ``dtype``: ``float`` or ``double``."""
    return {"float32": "float", "float64": "double"}[dtype]

# Each Op's C code: ``a`` and ``b`` are its two inputs made contiguous, ``dims``
# the output's shape; ``{check}`` refuses mismatched shapes, ``{call}`` runs the kernel.
_CONV_C_CODE = """
{
    PyArrayObject *ca = NULL, *cb = NULL;
    npy_intp dims[4];
    int ok = 0;
    if (dlt_blas_init() != 0) { %(fail)s }
    ca = PyArray_GETCONTIGUOUS(%(a)s);
    cb = PyArray_GETCONTIGUOUS(%(b)s);
    if (ca == NULL || cb == NULL) goto fail_%(name)s;
    #define A(i) PyArray_DIMS(ca)[i]
    #define B(i) PyArray_DIMS(cb)[i]
    if (!(%(check)s)) {
        PyErr_Format(PyExc_ValueError, "%(what)s: shapes (%%ld, %%ld, %%ld, %%ld) and "
                     "(%%ld, %%ld, %%ld, %%ld) do not fit", (long)A(0), (long)A(1), (long)A(2),
                     (long)A(3), (long)B(0), (long)B(1), (long)B(2), (long)B(3));
        goto fail_%(name)s;
    }
    dims[0] = %(d0)s; dims[1] = %(d1)s; dims[2] = %(d2)s; dims[3] = %(d3)s;
    if (dlt_output(&%(z)s, 4, dims, %(typenum)s) != 0) goto fail_%(name)s;
    if (%(kernel)s_%(sfx)s((%(ctype)s*)PyArray_DATA(ca), (%(ctype)s*)PyArray_DATA(cb),
                           (%(ctype)s*)PyArray_DATA(%(z)s), (int)%(args)s) != 0) {
        PyErr_NoMemory();
        goto fail_%(name)s;
    }
    #undef A
    #undef B
    ok = 1;
  fail_%(name)s:
    Py_XDECREF(ca);
    Py_XDECREF(cb);
    if (!ok) { %(fail)s }
}
"""

class _ConvOpBase(COp):
    """What the three convolution Ops share: their C code's plumbing."""

    __props__ = ()
    #: kernel name in c/conv.c, what the C error message calls the Op, the shape
    #: check, the output's dimensions and the kernel's int arguments (``A(i)`` and
    #: ``B(i)`` are the inputs' dimensions).
    _c = None

    def c_code_cache_version(self):
        return (17,)

    def c_support_code(self, **kwargs):
        return c_support_code("conv.c")

    def c_code(self, node, name, inputs, outputs, sub):
        kernel, what, check, dims, args = self._c
        dtype = node.outputs[0].dtype
        return _CONV_C_CODE % dict(
            a=inputs[0], b=inputs[1], z=outputs[0], fail=sub["fail"], name=name,
            kernel=kernel, what=what, check=check, d0=dims[0], d1=dims[1], d2=dims[2],
            d3=dims[3], args=", (int)".join(args), sfx=c_type_name(dtype),
            ctype=_C_TYPES[dtype], typenum=f"NPY_{dtype.upper()}",
        )

class Conv2d(_ConvOpBase):
    """True 'valid' 2-D convolution of a batch of multi-map images.

    Inputs ``x`` (B, C, H, W) and ``w`` (F, C, kh, kw); output
    ``z`` (B, F, H-kh+1, W-kw+1) with
    ``z[b, f] = sum_c scipy.signal.convolve2d(x[b, c], w[f, c], 'valid')``.
    """

    _c = ("dlt_conv_fwd", "conv2d", "A(1) == B(1) && B(2) <= A(2) && B(3) <= A(3)",
          ("A(0)", "B(0)", "A(2) - B(2) + 1", "A(3) - B(3) + 1"),
          ("A(0)", "A(1)", "A(2)", "A(3)", "B(0)", "B(2)", "B(3)"))

    def make_node(self, x, w):
        x = _as_float4(x, "input")
        w = _as_float4(w, "filters")
        x, w = _common_dtype(x, w)
        xs, ws = x.type.shape, w.type.shape
        if None not in (xs[1], ws[1]) and xs[1] != ws[1]:
            raise ValueError(f"conv2d: input has {xs[1]} feature maps, filters expect {ws[1]}")
        out_shape = (xs[0], ws[0], _diff_plus_one(xs[2], ws[2]), _diff_plus_one(xs[3], ws[3]))
        out = pt.tensor(dtype=x.type.dtype, shape=out_shape)
        return Apply(self, [x, w], [out])

    def perform(self, node, inputs, output_storage):
        x, w = inputs
        output_storage[0][0] = conv2d_valid_numpy(x, w).astype(node.outputs[0].dtype, copy=False)

    def pullback(self, inputs, outputs, output_grads):
        x, w = inputs
        (gz,) = output_grads
        return [Conv2dGradInputs()(gz, w), Conv2dGradFilters()(x, gz)]

class Conv2dGradInputs(_ConvOpBase):
    """Gradient of :class:`Conv2d` with respect to its input.

    Inputs ``gz`` (B, F, oh, ow) and ``w`` (F, C, kh, kw); output
    ``gx`` (B, C, oh+kh-1, ow+kw-1) (a 'full' correlation of ``gz`` with ``w``).
    """

    _c = ("dlt_conv_gi", "conv2d gradient", "A(1) == B(0)",
          ("A(0)", "B(1)", "A(2) + B(2) - 1", "A(3) + B(3) - 1"),
          ("A(0)", "A(1)", "A(2)", "A(3)", "B(1)", "B(2)", "B(3)"))

    def make_node(self, gz, w):
        gz = _as_float4(gz, "output gradient")
        w = _as_float4(w, "filters")
        gz, w = _common_dtype(gz, w)
        gs, ws = gz.type.shape, w.type.shape
        out_shape = (
            gs[0],
            ws[1],
            None if None in (gs[2], ws[2]) else gs[2] + ws[2] - 1,
            None if None in (gs[3], ws[3]) else gs[3] + ws[3] - 1,
        )
        out = pt.tensor(dtype=gz.type.dtype, shape=out_shape)
        return Apply(self, [gz, w], [out])

    def perform(self, node, inputs, output_storage):
        gz, w = inputs
        output_storage[0][0] = conv2d_grad_inputs_numpy(gz, w).astype(
            node.outputs[0].dtype, copy=False
        )

    def pullback(self, inputs, outputs, output_grads):
        # gx is bilinear in (gz, w): gx = conv^T(gz; w), so
        # d<ggx, gx>/dgz = conv(ggx, w) and d<ggx, gx>/dw = gradW(ggx, gz).
        gz, w = inputs
        (ggx,) = output_grads
        return [Conv2d()(ggx, w), Conv2dGradFilters()(ggx, gz)]

class Conv2dGradFilters(_ConvOpBase):
    """Gradient of :class:`Conv2d` with respect to its filters.

    Inputs ``x`` (B, C, H, W) and ``gz`` (B, F, oh, ow); output
    ``gw`` (F, C, H-oh+1, W-ow+1).
    """

    _c = ("dlt_conv_gw", "conv2d gradient", "A(0) == B(0) && B(2) <= A(2) && B(3) <= A(3)",
          ("B(1)", "A(1)", "A(2) - B(2) + 1", "A(3) - B(3) + 1"),
          ("A(0)", "A(1)", "A(2)", "A(3)", "B(1)", "B(2)", "B(3)"))

    def make_node(self, x, gz):
        x = _as_float4(x, "input")
        gz = _as_float4(gz, "output gradient")
        x, gz = _common_dtype(x, gz)
        xs, gs = x.type.shape, gz.type.shape
        out_shape = (gs[1], xs[1], _diff_plus_one(xs[2], gs[2]), _diff_plus_one(xs[3], gs[3]))
        out = pt.tensor(dtype=x.type.dtype, shape=out_shape)
        return Apply(self, [x, gz], [out])

    def perform(self, node, inputs, output_storage):
        x, gz = inputs
        output_storage[0][0] = conv2d_grad_filters_numpy(x, gz).astype(
            node.outputs[0].dtype, copy=False
        )

    def pullback(self, inputs, outputs, output_grads):
        # gw is bilinear in (x, gz): d<ggw, gw>/dx = gradX(gz; ggw), d/dgz = conv(x, ggw).
        x, gz = inputs
        (ggw,) = output_grads
        return [Conv2dGradInputs()(gz, ggw), Conv2d()(x, ggw)]

# ---------------------------------------------------------------------------
# The user-facing functions
# ---------------------------------------------------------------------------


def _normalize_shape(shape, what):
    if shape is None:
        return None
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"conv2d: {what} must be a tuple of 4 ints, got {shape!r}") from None
    if len(shape) != 4:
        raise ValueError(f"conv2d: {what} must have 4 entries, got {len(shape)}: {shape}")
    out = []
    for s in shape:
        if s is None:
            out.append(None)
            continue
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"conv2d: {what} entries must be positive ints or None, got {shape}")
        out.append(int(s))
    return tuple(out)


def _merge_static(declared, static, what):
    """Combine a declared shape with a static type shape, raising on conflicts."""
    if declared is None:
        return static
    merged = []
    for d, s in zip(declared, static):
        if d is not None and s is not None and d != s:
            raise ValueError(
                f"conv2d: declared {what} {declared} contradicts the variable's static shape {static}"
            )
        merged.append(d if d is not None else s)
    return tuple(merged)


def int_pair(value, what, minimum):
    """``value`` as a pair of ints ``>= minimum`` (an int stands for both), or ValueError."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= minimum
        for v in pair
    ):
        raise ValueError(f"{what} must be a pair of ints >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _border_pads(border_mode, dilated_kernel, modes):
    """The zero padding each side of (rows, columns) that ``border_mode`` asks for."""
    if isinstance(border_mode, str):
        if border_mode not in modes:
            raise ValueError(f"conv2d: border_mode must be one of {modes} (or a padding), "
                             f"got {border_mode!r}")
        if border_mode == "valid":
            return 0, 0
        if None in dilated_kernel:
            raise ValueError(f"conv2d: border_mode={border_mode!r} needs the filter height and "
                             "width: declare filter_shape")
        if border_mode == "full":
            return dilated_kernel[0] - 1, dilated_kernel[1] - 1
        return dilated_kernel[0] // 2, dilated_kernel[1] // 2  # 'half'
    if "half" not in modes:  # the legacy function: only 'valid' and 'full'
        raise ValueError(f"conv2d: border_mode must be one of {modes}, got {border_mode!r}")
    return int_pair(border_mode, "conv2d: border_mode", 0)


def general_conv2d(input, filters, input_shape=None, filter_shape=None, border_mode="valid",
                   subsample=(1, 1), filter_flip=True, filter_dilation=(1, 1),
                   border_modes=("valid", "full", "half")):
    """Theano's 2-D convolution in all its forms, as a graph around :class:`Conv2d`.

    The tutorial's case ('valid', no stride, no dilation, flipped filters) is
    one :class:`Conv2d` node. The others are that node on rewritten operands:
    the input zero-padded (``border_mode``), the filters flipped back
    (``filter_flip=False``: a correlation) and spread with zeros between their
    taps (``filter_dilation``), and the output taken every ``subsample`` rows
    and columns. Their gradients and their C, Numba and JAX code are those of
    :class:`Conv2d` and of PyTensor's own indexing.

    Port note: Theano's Ops computed strided and dilated convolutions directly;
    here a stride ``s`` computes ``s * s`` times the outputs it keeps and a
    dilation multiplies by the zeros it inserts. The results are Theano's.

    See :func:`deeplearning_tutorials.nnet.conv2d` for the arguments.
    """
    input_shape = _normalize_shape(input_shape, "input_shape")
    filter_shape = _normalize_shape(filter_shape, "filter_shape")
    subsample = int_pair(subsample, "conv2d: subsample", 1)
    dilation = int_pair(filter_dilation, "conv2d: filter_dilation", 1)
    input = _as_float4(input, "input")
    filters = _as_float4(filters, "filters")
    xs = _merge_static(input_shape, input.type.shape, "input_shape")
    ws = _merge_static(filter_shape, filters.type.shape, "filter_shape")
    if None not in (xs[1], ws[1]) and xs[1] != ws[1]:
        raise ValueError(
            f"conv2d: input has {xs[1]} feature maps (shape {xs}) but the filters "
            f"expect {ws[1]} (shape {ws})"
        )
    dilated = tuple(None if k is None else (k - 1) * d + 1 for k, d in zip(ws[2:], dilation))
    pads = _border_pads(border_mode, dilated, border_modes)
    for axis, name in ((2, "height"), (3, "width")):
        size, k, p = xs[axis], dilated[axis - 2], pads[axis - 2]
        if None not in (size, k) and k > size + 2 * p:
            raise ValueError(
                f"conv2d: the filter {name} {k} (dilated) exceeds the image {name} {size}"
                + (f" padded by {p} each side" if p else "")
                + f" (input shape {xs}, filter shape {ws}, border_mode={border_mode!r})"
            )
    # Port note: Theano's Op carried imshp/kshp itself; here declared shapes
    # become ``specify_shape`` nodes, which every backend already implements
    # (a runtime check) and which give the Op's output its static shape.
    if xs != input.type.shape:
        input = pt.specify_shape(input, xs)
    if ws != filters.type.shape:
        filters = pt.specify_shape(filters, ws)
    input, filters = _common_dtype(input, filters)
    # Every size below is computed inside an Op from the arrays themselves, so
    # that JAX, which needs concrete sizes, traces it whatever static shapes
    # the variables have.
    if not filter_flip:
        filters = filters[:, :, ::-1, ::-1]
    if dilation != (1, 1):  # d - 1 zeros between each two taps
        filters = Pad2d((0, 0), (0, 0), interior=(dilation[0] - 1, dilation[1] - 1))(filters)
    if pads != (0, 0):
        input = Pad2d(pads, pads)(input)
    out = Conv2d()(input, filters)
    if subsample != (1, 1):
        out = out[:, :, :: subsample[0], :: subsample[1]]
    return out


# Keyword arguments of Theano's legacy ConvOp that tune its C code (loop
# unrolling, OpenMP, logging); they do not change the result, and are ignored.
_LEGACY_TUNING = frozenset({"unroll_batch", "unroll_kern", "unroll_patch", "verbose", "openmp",
                            "version", "direction_hint"})


def conv2d(input, filters, filter_shape=None, image_shape=None, border_mode="valid",
           subsample=(1, 1), **kargs):
    """Convolve a batch of multi-map images with a bank of filters (Theano's ``conv.conv2d``).

    The legacy ``theano.tensor.nnet.conv.conv2d``: a true convolution (filters
    flipped), summed over input maps::

        out[b, f] = sum_c scipy.signal.convolve2d(input[b, c], filters[f, c], border_mode)

    then taken every ``subsample`` rows and columns.

    Parameters
    ----------
    input : TensorVariable, shape (batch, in_maps, h, w)
    filters : TensorVariable, shape (n_filters, in_maps, kh, kw)
    filter_shape : tuple of 4 int or None, optional
        Declared shape of ``filters``; checked against ``image_shape`` and the
        static type, and used to give the output a static shape.
    image_shape : tuple of 4 int or None, optional
        Declared shape of ``input``.
    border_mode : {'valid', 'full'}
        'valid': ``(h - kh + 1, w - kw + 1)`` outputs; 'full': ``(h + kh - 1, w + kw - 1)``.
    subsample : (int, int)
        Strides of the output.
    **kargs
        Theano's tuning options (``unroll_batch``, ``unroll_kern``, ``unroll_patch``,
        ``verbose``, ``openmp``, ...) are accepted and ignored; others are an error.

    Returns
    -------
    TensorVariable, shape (batch, n_filters, oh, ow)
        ``oh = (h - kh) // subsample[0] + 1`` ('valid') or
        ``(h + kh - 2) // subsample[0] + 1`` ('full'); the same for ``ow``.

    Raises
    ------
    ValueError
        For another ``border_mode``, a bad ``subsample``, inputs that are not 4-D,
        or declared shapes inconsistent with each other or with the variables.
    """
    unknown = sorted(set(kargs) - _LEGACY_TUNING)
    if unknown:
        raise TypeError(f"conv2d() got unexpected keyword arguments {unknown}")
    return general_conv2d(input, filters, input_shape=image_shape, filter_shape=filter_shape,
                          border_mode=border_mode, subsample=subsample,
                          border_modes=("valid", "full"))
