"""The package's C modes: the tutorials' graphs as C code, and NumPy where it is quicker.

PyTensor's mode ``C`` cannot compile the tutorials' functions as they come, and
``CVM`` runs some of their nodes in Python or in slow C:

* a pip-installed PyTensor finds no BLAS to link against, and its products
  (``Dot22``, ``Gemm``) then have no C code: the package's modes replace each
  product of two float matrices with :class:`MatMul`, whose C code calls the
  ``sgemm`` / ``dgemm`` that the convolutions use (``nnet/c/blas.h``);
* ``Softmax`` and ``LogSoftmax`` have no C code in PyTensor 3.0: they are
  inlined, into elementwise and reduction nodes that have;
* the likelihood's pick ``log(p)[arange(n), y]`` and its gradient
  (``AdvancedSubtensor`` / ``AdvancedIncSubtensor`` with two index vectors) have
  none either: in ``DLT_C``, whose single module needs C code for every node
  (:data:`C_TAG`), they become a flat take of the raveled matrix, which has;
* PyTensor's C code for ``tanh`` calls the C library's scalar ``tanh`` per
  element: in float32 the package's modes compute it with NumPy's ``tanh``
  (:class:`NumPyTanh`, a layer's bias added in the same node), whose vector
  kernels are many times faster and differ from the C library's by up to a
  few units in the last place; float64 keeps the C library's, the original's,
  in the same node (``NumPyTanh(libm=True)``), whose C code, the same for any
  number of dimensions, is one compiled module for every layer;
* a convolution and the max pooling of its output run image by image
  (:class:`Conv2dMaxPool`), each image pooled while it is in the cache, and so
  do a first layer's pooling gradient and filter gradient
  (:class:`MaxPoolConv2dGradFilters`).

In ``DLT_CVM`` a last rewrite, under :data:`CVM_TAG`, runs the nodes whose work
is a NumPy call of microseconds through their Ops' own ``perform``
(:class:`PythonNode`): shapes, views, indexing, integer results, exact float
arithmetic; float32 sums accumulated in float64 become
:class:`NumPySum`.  The CVM linker would compile a C module for each, about half
a second apiece.

The rewrites are registered under the package's own tags, which only the
package's C modes include; they give the same numbers as PyTensor's own nodes
(the same sums in the same order, on the same BLAS as NumPy's products up to
its choice of kernel; float32 ``tanh`` as NumPy computes it; a float32 sum
accumulated in float64 in NumPy's order, whose last float64 bits the float32
result does not show but on a rounding boundary).
"""

import math

import numpy as np
import pytensor.tensor as pt
from pytensor.compile import optdb
from pytensor.compile.builders import OpFromGraph
from pytensor.graph.basic import Apply
from pytensor.graph.rewriting.basic import copy_stack_trace, dfs_rewriter, node_rewriter
from pytensor.graph.op import Op
from pytensor.link.c.op import COp
from pytensor.raise_op import Assert, CheckAndRaise
from pytensor.scalar.basic import Add, Maximum, Minimum, Mul, Neg, Sub, Tanh, TrueDiv
from pytensor.tensor.basic import Alloc, ARange, MakeVector, ScalarFromTensor, TensorFromScalar
from pytensor.tensor.elemwise import CAReduce, DimShuffle, Elemwise
from pytensor.tensor.math import Argmax, Dot
from pytensor.tensor.shape import Reshape, Shape, Shape_i, SpecifyShape
from pytensor.tensor.special import LogSoftmax, Softmax
from pytensor.tensor.subtensor import AdvancedIncSubtensor, AdvancedSubtensor, Subtensor

try:  # PyTensor 3.0; later versions merged these into the Ops above, with C code.
    from pytensor.tensor.subtensor import AdvancedIncSubtensor1, AdvancedSubtensor1
except ImportError:
    AdvancedIncSubtensor1 = AdvancedSubtensor1 = None

from deeplearning_tutorials.nnet.conv import (Conv2d, Conv2dGradFilters, c_support_code, c_type_name,
                                              conv2d_grad_filters_numpy, conv2d_valid_numpy)
from deeplearning_tutorials.nnet.pool import (MaxPool2d, MaxPool2dGrad, max_pool_grad_numpy,
                                              max_pool_numpy)

__all__ = ["TAG", "C_TAG", "CVM_TAG", "MatMul", "matmul", "NumPyTanh", "numpy_tanh", "NumPySum",
           "Conv2dMaxPool", "MaxPoolConv2dGradFilters",
           "PythonNode"]

#: The tag of the rewrites only the package's C modes run.
TAG = "deeplearning_tutorials_c"
#: The tag of the rewrites only ``DLT_C`` runs: its whole-graph C module needs C
#: code for every node, where ``DLT_CVM`` runs a node without it in Python.
C_TAG = "deeplearning_tutorials_whole_c"

_C_CODE = """
{
    PyArrayObject *ca = NULL, *cb = NULL;
    npy_intp dims[2];
    char ta, tb;
    int lda, ldb, ok = 0;
    if (dlt_blas_init() != 0) { %(fail)s }
    /* A transposed view is passed as it is, with BLAS's transpose flag. */
    if (PyArray_IS_C_CONTIGUOUS(%(x)s)) { ca = %(x)s; Py_INCREF(ca); ta = 'N'; }
    else if (PyArray_IS_F_CONTIGUOUS(%(x)s)) { ca = %(x)s; Py_INCREF(ca); ta = 'T'; }
    else { ca = PyArray_GETCONTIGUOUS(%(x)s); ta = 'N'; }
    if (PyArray_IS_C_CONTIGUOUS(%(y)s)) { cb = %(y)s; Py_INCREF(cb); tb = 'N'; }
    else if (PyArray_IS_F_CONTIGUOUS(%(y)s)) { cb = %(y)s; Py_INCREF(cb); tb = 'T'; }
    else { cb = PyArray_GETCONTIGUOUS(%(y)s); tb = 'N'; }
    if (ca == NULL || cb == NULL) goto fail_%(name)s;
    if (PyArray_DIMS(ca)[1] != PyArray_DIMS(cb)[0]) {
        PyErr_Format(PyExc_ValueError, "matmul: shapes (%%ld, %%ld) and (%%ld, %%ld) do not fit",
                     (long)PyArray_DIMS(ca)[0], (long)PyArray_DIMS(ca)[1],
                     (long)PyArray_DIMS(cb)[0], (long)PyArray_DIMS(cb)[1]);
        goto fail_%(name)s;
    }
    dims[0] = PyArray_DIMS(ca)[0];
    dims[1] = PyArray_DIMS(cb)[1];
    if (dlt_output(&%(z)s, 2, dims, %(typenum)s) != 0) goto fail_%(name)s;
    lda = ta == 'N' ? (int)PyArray_DIMS(ca)[1] : (int)PyArray_DIMS(ca)[0];
    ldb = tb == 'N' ? (int)PyArray_DIMS(cb)[1] : (int)PyArray_DIMS(cb)[0];
    if (lda < 1) lda = 1;
    if (ldb < 1) ldb = 1;
    if (dims[0] > 0 && dims[1] > 0 && PyArray_DIMS(ca)[1] == 0)
        memset(PyArray_DATA(%(z)s), 0, PyArray_NBYTES(%(z)s));
    else if (dims[0] > 0 && dims[1] > 0)
        dlt_gemm_%(sfx)s(ta, tb, (int)dims[0], (int)dims[1], (int)PyArray_DIMS(ca)[1], 1,
                         (%(ctype)s*)PyArray_DATA(ca), lda, (%(ctype)s*)PyArray_DATA(cb), ldb,
                         0, (%(ctype)s*)PyArray_DATA(%(z)s), dims[1] > 1 ? (int)dims[1] : 1);
    ok = 1;
  fail_%(name)s:
    Py_XDECREF(ca);
    Py_XDECREF(cb);
    if (!ok) { %(fail)s }
}
"""


class MatMul(COp):
    """The product of two float32 or float64 matrices of one dtype, through SciPy's BLAS."""

    __props__ = ()

    def make_node(self, x, y):
        x, y = pt.as_tensor_variable(x), pt.as_tensor_variable(y)
        if x.type.ndim != 2 or y.type.ndim != 2:
            raise TypeError(f"MatMul needs two matrices, got {x.type} and {y.type}")
        if x.type.dtype != y.type.dtype or x.type.dtype not in ("float32", "float64"):
            raise TypeError(f"MatMul needs two float32 or float64 matrices, got {x.type}, {y.type}")
        out = pt.tensor(dtype=x.type.dtype, shape=(x.type.shape[0], y.type.shape[1]))
        return Apply(self, [x, y], [out])

    def perform(self, node, inputs, output_storage):
        x, y = inputs
        output_storage[0][0] = x @ y

    def pullback(self, inputs, outputs, output_grads):
        x, y = inputs
        (gz,) = output_grads
        return [self(gz, y.T), self(x.T, gz)]

    def c_code_cache_version(self):
        return (4,)

    def c_support_code(self, **kwargs):
        return c_support_code()

    def c_code(self, node, name, inputs, outputs, sub):
        dtype = node.outputs[0].dtype
        return _C_CODE % dict(
            x=inputs[0], y=inputs[1], z=outputs[0], name=name, fail=sub["fail"],
            sfx=c_type_name(dtype), ctype={"float32": "npy_float32", "float64": "npy_float64"}[dtype],
            typenum=f"NPY_{dtype.upper()}",
        )


matmul = MatMul()


@node_rewriter([Dot])
def local_dot_to_matmul(fgraph, node):
    """``dot(x, y)`` of two float matrices of one dtype -> :class:`MatMul`."""
    x, y = node.inputs
    out = node.outputs[0]
    if not (x.type.ndim == y.type.ndim == 2 and x.type.dtype == y.type.dtype == out.type.dtype
            and out.type.dtype in ("float32", "float64")):
        return None
    new = matmul(x, y)
    copy_stack_trace(out, new)
    return [new]


# Before PyTensor's BlasOpt (1.7), which would turn the products into Dot22 and Gemm.
optdb.register(
    "deeplearning_tutorials_matmul", dfs_rewriter(local_dot_to_matmul), TAG, position=1.69,
    use_db_name_as_tag=False,
)


@node_rewriter([Softmax, LogSoftmax])
def local_inline_softmax(fgraph, node):
    """Inline a ``Softmax`` / ``LogSoftmax`` that is an ``OpFromGraph`` (PyTensor 3.0)."""
    if not isinstance(node.op, OpFromGraph):
        return None
    from pytensor.tensor.rewriting.ofg import inline_ofg_node

    outs = inline_ofg_node(node)
    copy_stack_trace(node.outputs, outs)
    return outs


def _is_matrix_pair(op, x, indices):
    """Whether ``op`` indexes the matrix ``x`` as ``x[rows, cols]`` with two integer vectors."""
    return (x.ndim == 2 and len(indices) == 2 and getattr(op, "idx_list", (0, 1)) == (0, 1)
            and all(i.ndim == 1 and i.type.dtype.startswith(("int", "uint")) for i in indices))


def _flat_pair_index(x, rows, cols):
    """The flat index of ``x[rows, cols]`` in ``x.ravel()``, negative indices wrapped."""
    n_rows, n_cols = Shape_i(0)(x), Shape_i(1)(x)
    rows = pt.switch(pt.lt(rows, 0), rows + n_rows, rows)
    cols = pt.switch(pt.lt(cols, 0), cols + n_cols, cols)
    # The flat index would lose the bounds checks: keep them.
    rows = Assert("index out of bounds in the row axis")(
        rows, pt.all(pt.ge(rows, 0) & pt.lt(rows, n_rows))
    )
    cols = Assert("index out of bounds in the column axis")(
        cols, pt.all(pt.ge(cols, 0) & pt.lt(cols, n_cols))
    )
    return rows.astype("int64") * n_cols + cols.astype("int64")


@node_rewriter([AdvancedSubtensor, AdvancedIncSubtensor])
def local_pair_indexing(fgraph, node):
    """``x[rows, cols]`` of a matrix (and its gradient) as a take of ``x.ravel()``."""
    if isinstance(node.op, AdvancedIncSubtensor):
        x, y, *indices = node.inputs
    else:
        x, *indices = node.inputs
    if not _is_matrix_pair(node.op, x, indices):
        return None
    flat = _flat_pair_index(x, *indices)
    if isinstance(node.op, AdvancedIncSubtensor):
        if y.ndim > 1 or getattr(node.op, "ignore_duplicates", False):
            return None
        if y.type.broadcastable != flat.type.broadcastable:
            # AdvancedIncSubtensor1 has C code only for a y as long as the index.
            y = pt.alloc(y, Shape_i(0)(flat))
        if AdvancedIncSubtensor1 is not None:
            inc = AdvancedIncSubtensor1(set_instead_of_inc=node.op.set_instead_of_inc)
            out = inc(x.reshape((-1,)), y, flat)
        else:
            target = x.reshape((-1,))[flat]
            out = (pt.set_subtensor(target, y) if node.op.set_instead_of_inc
                   else pt.inc_subtensor(target, y))
        out = out.reshape((Shape_i(0)(x), Shape_i(1)(x)))
    elif AdvancedSubtensor1 is not None:
        out = AdvancedSubtensor1()(x.reshape((-1,)), flat)
    else:
        out = x.reshape((-1,))[flat]
    if out.type.broadcastable != node.outputs[0].type.broadcastable:
        return None
    copy_stack_trace(node.outputs, [out])
    return [out]


# In ``specialize``, after ``stabilize`` has turned ``log(softmax(x))`` into ``LogSoftmax``.
optdb["specialize"].register("deeplearning_tutorials_inline_softmax", local_inline_softmax, TAG,
                             use_db_name_as_tag=False)
# After ``specialize``, so that no later simplification folds the explicit
# broadcast of the gradient's ``y`` back into a broadcastable one.
optdb.register(
    "deeplearning_tutorials_pair_indexing", dfs_rewriter(local_pair_indexing), C_TAG, position=48.7,
    use_db_name_as_tag=False,
)


_TANH_SUPPORT_CODE = """
static PyObject *dlt_tanh_ufunc = NULL, *dlt_add_ufunc = NULL;

/* z = numpy.tanh(x, z), or numpy.tanh(numpy.add(x, b, z), z) when b is not NULL;
   with libm, the C library's tanh of each float64 element in place of NumPy's;
   0, or -1 with a Python exception set. */
static int dlt_numpy_tanh(PyArrayObject* x, PyArrayObject* b, PyArrayObject* z, int libm)
{
    PyObject* result;
    if (dlt_tanh_ufunc == NULL) {
        PyObject* numpy = PyImport_ImportModule("numpy");
        if (numpy == NULL) return -1;
        dlt_tanh_ufunc = PyObject_GetAttrString(numpy, "tanh");
        dlt_add_ufunc = PyObject_GetAttrString(numpy, "add");
        Py_DECREF(numpy);
        if (dlt_tanh_ufunc == NULL || dlt_add_ufunc == NULL) return -1;
    }
    if (b != NULL) {
        result = PyObject_CallFunctionObjArgs(dlt_add_ufunc, (PyObject*)x, (PyObject*)b,
                                              (PyObject*)z, NULL);
        if (result == NULL) return -1;
        Py_DECREF(result);
        x = z;
    }
    if (libm) {  /* the C library's tanh, as PyTensor's own C code calls it */
        npy_float64* d = (npy_float64*)PyArray_DATA(z);
        npy_intp i, n = PyArray_SIZE(z);
        if (x != z && PyArray_CopyInto(z, x) != 0) return -1;
        for (i = 0; i < n; i++) d[i] = tanh(d[i]);
        return 0;
    }
    result = PyObject_CallFunctionObjArgs(dlt_tanh_ufunc, (PyObject*)x, (PyObject*)z, NULL);
    if (result == NULL) return -1;
    Py_DECREF(result);
    return 0;
}
"""

_TANH_C_CODE = """
{
    if (%(z)s == NULL || !PyArray_IS_C_CONTIGUOUS(%(z)s)
        || PyArray_NDIM(%(z)s) != PyArray_NDIM(%(x)s)
        || !PyArray_CompareLists(PyArray_DIMS(%(z)s), PyArray_DIMS(%(x)s), PyArray_NDIM(%(x)s))) {
        Py_XDECREF(%(z)s);
        %(z)s = (PyArrayObject*)PyArray_EMPTY(PyArray_NDIM(%(x)s), PyArray_DIMS(%(x)s),
                                              %(typenum)s, 0);
        if (%(z)s == NULL) { %(fail)s }
    }
    if (dlt_numpy_tanh(%(x)s, %(b)s, %(z)s, %(libm)s) != 0) { %(fail)s }
}
"""


class NumPyTanh(COp):
    """``tanh(x)``, or ``tanh(x + b)``, of float32 or float64 tensors, computed by NumPy.

    With a second input ``b`` (of ``x``'s dtype and number of dimensions, its
    broadcastable dimensions repeated over ``x``'s) NumPy's ``add`` writes
    ``x + b`` into the output, and ``tanh`` takes it from there in place: the
    sum and the ``tanh`` in one pass over memory less, with the same numbers as
    ``tanh`` of PyTensor's ``Add`` (one rounding of each sum).

    ``NumPyTanh(libm=True)`` (float64 only) takes the ``tanh`` of each element
    from the C library, as PyTensor's C code does, instead of NumPy's: the same
    numbers as PyTensor's ``tanh``, and, its C code being the same whatever
    the number of dimensions, one compiled module for every layer's ``tanh``.
    """

    __props__ = ("libm",)

    def __init__(self, libm=False):
        self.libm = bool(libm)

    def make_node(self, x, b=None):
        x = pt.as_tensor_variable(x)
        inputs = [x] if b is None else [x, pt.as_tensor_variable(b)]
        for v in inputs:
            if v.type.dtype not in ("float32", "float64") or v.type.dtype != x.type.dtype:
                raise TypeError(f"NumPyTanh: float32 or float64 tensors of one dtype are needed, "
                                f"got {[str(v.type) for v in inputs]}")
        if b is not None and (inputs[1].type.ndim != x.type.ndim or any(
                sb != 1 and sx != sb for sx, sb in zip(x.type.shape, inputs[1].type.shape)
                if sb is not None and sx is not None)):
            raise TypeError(f"NumPyTanh: a bias {inputs[1].type} that does not fit {x.type}")
        if self.libm and x.type.dtype != "float64":
            raise TypeError(f"NumPyTanh(libm=True) computes float64 tensors, got {x.type}")
        return Apply(self, inputs, [x.type()])

    def perform(self, node, inputs, output_storage):
        x = inputs[0]
        z = output_storage[0][0]
        if z is None or z.shape != x.shape:
            z = np.empty(x.shape, dtype=x.dtype)
        if len(inputs) == 2:
            x = np.add(x, inputs[1], out=z)
        if self.libm:
            z[...] = _LIBM_TANH(x)
            output_storage[0][0] = z
        else:
            output_storage[0][0] = np.tanh(x, out=z)

    def infer_shape(self, *args):
        # PyTensor 3.0 passes (fgraph, node, shapes); later versions (node, shapes).
        return [args[-1][0]]

    def pullback(self, inputs, outputs, output_grads):
        (y,), (gz,) = outputs, output_grads
        g = gz * (1 - pt.sqr(y))
        if len(inputs) == 1:
            return [g]
        x, b = inputs
        axes = [i for i, (sb, sx) in enumerate(zip(b.type.shape, x.type.shape)) if sb == 1 != sx]
        return [g, pt.sum(g, axis=axes, keepdims=True) if axes else g]

    def c_code_cache_version(self):
        return (3,)

    def c_support_code(self, **kwargs):
        return _TANH_SUPPORT_CODE

    def c_code(self, node, name, inputs, outputs, sub):
        dtype = node.outputs[0].dtype
        return _TANH_C_CODE % dict(x=inputs[0], b=inputs[1] if len(inputs) == 2 else "NULL",
                                   z=outputs[0], fail=sub["fail"], typenum=f"NPY_{dtype.upper()}",
                                   libm=int(self.libm))

    def __str__(self):
        return "NumPyTanh{libm}" if self.libm else "NumPyTanh"


# The C library's tanh (Python's math.tanh calls it), element by element.
_LIBM_TANH = np.frompyfunc(math.tanh, 1, 1)

numpy_tanh = NumPyTanh()
libm_tanh = NumPyTanh(libm=True)


def _tanh_bias(fgraph, x):
    """``(a, b)`` when ``x`` is ``a + b`` of two float tensors that only this
    ``tanh`` reads, ``a`` of the sum's type and ``b`` broadcast over it; else None."""
    node = x.owner
    if (node is None or not isinstance(node.op, Elemwise) or not isinstance(node.op.scalar_op, Add)
            or len(node.inputs) != 2 or len(fgraph.clients[x]) != 1):
        return None
    a, b = node.inputs
    if a.type != x.type:
        a, b = b, a
    if a.type != x.type or b.type.dtype != x.type.dtype or b.type.ndim != x.type.ndim:
        return None
    return a, b


@node_rewriter([Elemwise])
def local_numpy_tanh(fgraph, node):
    """``tanh(x)`` of a float32 tensor -> :class:`NumPyTanh`; ``tanh(a + b)``
    (a bias added to a layer's output, maybe reshaped between) -> ``NumPyTanh(a, b)``;
    in float64 the same with ``NumPyTanh(libm=True)``."""
    if not isinstance(node.op.scalar_op, Tanh):
        return None
    (x,), (out,) = node.inputs, node.outputs
    if x.type != out.type or out.type.dtype not in ("float32", "float64"):
        return None
    op = libm_tanh if out.type.dtype == "float64" else numpy_tanh
    reshape = x.owner if x.owner is not None and isinstance(x.owner.op, Reshape) else None
    if reshape is not None and len(fgraph.clients[x]) == 1:
        pair = _tanh_bias(fgraph, reshape.inputs[0])
        new = None if pair is None else reshape.op(op(*pair), *reshape.inputs[1:])
    else:
        pair = _tanh_bias(fgraph, x)
        new = None if pair is None else op(*pair)
    if new is None or new.type != out.type:
        new = op(x)
    copy_stack_trace(out, new)
    return [new]


# Before the elemwise fusion (49), which would hide the tanh in a Composite.
optdb.register(
    "deeplearning_tutorials_tanh", dfs_rewriter(local_numpy_tanh), TAG, position=48.8,
    use_db_name_as_tag=False,
)


_CONV_POOL_C_CODE = """
{
    PyArrayObject *ca = NULL, *cb = NULL;
    npy_intp zd[4], pd[4];
    int ok = 0;
    if (dlt_blas_init() != 0) { %(fail)s }
    ca = PyArray_GETCONTIGUOUS(%(x)s);
    cb = PyArray_GETCONTIGUOUS(%(w)s);
    if (ca == NULL || cb == NULL) goto fail_%(name)s;
    #define A(i) PyArray_DIMS(ca)[i]
    #define B(i) PyArray_DIMS(cb)[i]
    if (!(%(check)s)) {
        PyErr_Format(PyExc_ValueError, "conv2d: shapes (%%ld, %%ld, %%ld, %%ld) and "
                     "(%%ld, %%ld, %%ld, %%ld) do not fit", (long)A(0), (long)A(1), (long)A(2),
                     (long)A(3), (long)B(0), (long)B(1), (long)B(2), (long)B(3));
        goto fail_%(name)s;
    }
    zd[0] = pd[0] = A(0); zd[1] = pd[1] = B(0);
    zd[2] = A(2) - B(2) + 1; zd[3] = A(3) - B(3) + 1;
    pd[2] = %(ib)s ? zd[2] / %(wh)s : (zd[2] + %(wh)s - 1) / %(wh)s;
    pd[3] = %(ib)s ? zd[3] / %(ww)s : (zd[3] + %(ww)s - 1) / %(ww)s;
    if (dlt_output(&%(p)s, 4, pd, %(typenum)s) != 0) goto fail_%(name)s;
    %(keep_z)s
    if (dlt_conv_fwd_pool_%(sfx)s((%(ctype)s*)PyArray_DATA(ca), (%(ctype)s*)PyArray_DATA(cb),
                                  %(z_data)s, (%(ctype)s*)PyArray_DATA(%(p)s),
                                  (int)A(0), (int)A(1), (int)A(2), (int)A(3), (int)B(0),
                                  (int)B(2), (int)B(3), %(wh)s, %(ww)s, (int)pd[2], (int)pd[3]) != 0) {
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

class Conv2dMaxPool(COp):
    """:class:`~deeplearning_tutorials.nnet.conv.Conv2d` and the
    :class:`~deeplearning_tutorials.nnet.pool.MaxPool2d` of its output, image by image.

    Outputs the pooled maps, and the convolution too when ``keep_conv`` (its
    gradient reads it).  Each image's convolution is pooled while it is in the
    cache, where the two Ops one after the other write the batch's convolution to
    memory and read it back; without ``keep_conv`` it never goes to memory.  The
    same numbers as the two Ops.
    """

    __props__ = ("ws", "ignore_border", "keep_conv")

    def __init__(self, ws, ignore_border, keep_conv):
        self.ws, self.ignore_border, self.keep_conv = tuple(ws), bool(ignore_border), bool(keep_conv)

    def make_node(self, x, w):
        conv = Conv2d().make_node(x, w)
        pooled = MaxPool2d(self.ws, self.ignore_border).make_node(conv.outputs[0]).outputs[0]
        outputs = [pooled.type()] + ([conv.outputs[0].type()] if self.keep_conv else [])
        return Apply(self, conv.inputs, outputs)

    def perform(self, node, inputs, output_storage):
        z = conv2d_valid_numpy(*inputs).astype(node.outputs[0].dtype, copy=False)
        output_storage[0][0] = max_pool_numpy(z, self.ws, self.ignore_border)
        if self.keep_conv:
            output_storage[1][0] = z

    def c_code_cache_version(self):
        return (3,)

    def c_support_code(self, **kwargs):
        return c_support_code("conv.c", "pool.c", "conv_pool.c")

    def c_code(self, node, name, inputs, outputs, sub):
        dtype = node.outputs[0].dtype
        ctype = {"float32": "npy_float32", "float64": "npy_float64"}[dtype]
        names = dict(x=inputs[0], w=inputs[1], p=outputs[0], name=name, fail=sub["fail"],
                     check=Conv2d._c[2],
                     ib=int(self.ignore_border), wh=self.ws[0], ww=self.ws[1],
                     sfx=c_type_name(dtype), ctype=ctype, typenum=f"NPY_{dtype.upper()}")
        if self.keep_conv:
            z = outputs[1]
            names.update(keep_z=f"if (dlt_output(&{z}, 4, zd, {names['typenum']}) != 0) goto fail_{name};",
                         z_data=f"({ctype}*)PyArray_DATA({z})")
        else:
            names.update(keep_z="", z_data="NULL")
        return _CONV_POOL_C_CODE % names


_GW_POOL_C_CODE = """
{
    PyArrayObject *cx = NULL, *cz = NULL, *cp = NULL, *cg = NULL;
    npy_intp dims[4];
    long ph, pw;
    int ok = 0;
    if (dlt_blas_init() != 0) { %(fail)s }
    cx = PyArray_GETCONTIGUOUS(%(x)s);
    cz = PyArray_GETCONTIGUOUS(%(z)s);
    cp = PyArray_GETCONTIGUOUS(%(pooled)s);
    cg = PyArray_GETCONTIGUOUS(%(gp)s);
    if (cx == NULL || cz == NULL || cp == NULL || cg == NULL) goto fail_%(name)s;
    #define X(i) PyArray_DIMS(cx)[i]
    #define Z(i) PyArray_DIMS(cz)[i]
    ph = %(ib)s ? Z(2) / %(wh)s : (Z(2) + %(wh)s - 1) / %(wh)s;
    pw = %(ib)s ? Z(3) / %(ww)s : (Z(3) + %(ww)s - 1) / %(ww)s;
    if (!(X(0) == Z(0) && Z(2) <= X(2) && Z(3) <= X(3))
        || PyArray_DIMS(cp)[0] != Z(0) || PyArray_DIMS(cp)[1] != Z(1)
        || PyArray_DIMS(cp)[2] != ph || PyArray_DIMS(cp)[3] != pw
        || !PyArray_CompareLists(PyArray_DIMS(cp), PyArray_DIMS(cg), 4)) {
        PyErr_SetString(PyExc_ValueError, "conv2d gradient: the input, the convolution, its "
                        "pooling and the pooling's gradient do not fit");
        goto fail_%(name)s;
    }
    dims[0] = Z(1); dims[1] = X(1); dims[2] = X(2) - Z(2) + 1; dims[3] = X(3) - Z(3) + 1;
    if (dlt_output(&%(gw)s, 4, dims, %(typenum)s) != 0) goto fail_%(name)s;
    if (dlt_conv_gw_pool_%(sfx)s((%(ctype)s*)PyArray_DATA(cx), (%(ctype)s*)PyArray_DATA(cz),
                                 (%(ctype)s*)PyArray_DATA(cp), (%(ctype)s*)PyArray_DATA(cg),
                                 (%(ctype)s*)PyArray_DATA(%(gw)s), (int)X(0), (int)X(1), (int)X(2),
                                 (int)X(3), (int)Z(1), (int)Z(2), (int)Z(3), %(wh)s, %(ww)s,
                                 (int)ph, (int)pw) != 0) {
        PyErr_NoMemory();
        goto fail_%(name)s;
    }
    #undef X
    #undef Z
    ok = 1;
  fail_%(name)s:
    Py_XDECREF(cx);
    Py_XDECREF(cz);
    Py_XDECREF(cp);
    Py_XDECREF(cg);
    if (!ok) { %(fail)s }
}
"""


class MaxPoolConv2dGradFilters(COp):
    """The filters' gradient of a convolution followed by max pooling, from the
    pooling's output gradient: ``Conv2dGradFilters(x, MaxPool2dGrad(z, pooled, gp))``.

    Inputs ``x``, the convolution ``z``, its pooling ``pooled`` and the pooling's
    output gradient ``gp``.  Each image's gradient of ``z`` stays in the cache,
    where the two Ops one after the other write the whole batch's to memory and
    read it back.  The same numbers as the two Ops.
    """

    __props__ = ("ws", "ignore_border")

    def __init__(self, ws, ignore_border):
        self.ws, self.ignore_border = tuple(ws), bool(ignore_border)

    def make_node(self, x, z, pooled, gp):
        grad = Conv2dGradFilters().make_node(x, z)
        x, z = grad.inputs
        pooled, gp = (pt.as_tensor_variable(v) for v in (pooled, gp))
        if not (pooled.type.dtype == gp.type.dtype == z.type.dtype
                and pooled.type.ndim == gp.type.ndim == 4):
            raise TypeError(f"MaxPoolConv2dGradFilters: pooled {pooled.type} and its gradient "
                            f"{gp.type} do not fit the convolution {z.type}")
        return Apply(self, [x, z, pooled, gp], [grad.outputs[0].type()])

    def perform(self, node, inputs, output_storage):
        x, z, pooled, gp = inputs
        gz = max_pool_grad_numpy(z, pooled, gp, self.ws, self.ignore_border)
        output_storage[0][0] = conv2d_grad_filters_numpy(x, gz).astype(x.dtype, copy=False)

    def c_code_cache_version(self):
        return (2,)

    def c_support_code(self, **kwargs):
        return c_support_code("conv.c", "pool.c", "conv_pool.c")

    def c_code(self, node, name, inputs, outputs, sub):
        dtype = node.outputs[0].dtype
        x, z, pooled, gp = inputs
        return _GW_POOL_C_CODE % dict(
            x=x, z=z, pooled=pooled, gp=gp, gw=outputs[0], name=name, fail=sub["fail"],
            ib=int(self.ignore_border), wh=self.ws[0], ww=self.ws[1], sfx=c_type_name(dtype),
            ctype={"float32": "npy_float32", "float64": "npy_float64"}[dtype],
            typenum=f"NPY_{dtype.upper()}")


@node_rewriter([Conv2d])
def local_conv_max_pool(fgraph, node):
    """``MaxPool2d(Conv2d(x, w))`` -> :class:`Conv2dMaxPool` (the convolution kept
    when something else reads it: the pooling's gradient)."""
    (z,) = node.outputs
    pools = [client for client, _ in fgraph.clients[z] if isinstance(client.op, MaxPool2d)]
    if len(pools) != 1:
        return None
    keep = len(fgraph.clients[z]) > 1
    new = Conv2dMaxPool(pools[0].op.ws, pools[0].op.ignore_border, keep).make_node(*node.inputs)
    if new.outputs[0].type != pools[0].outputs[0].type or (keep and new.outputs[1].type != z.type):
        return None
    replacements = {pools[0].outputs[0]: new.outputs[0]}
    if keep:
        replacements[z] = new.outputs[1]
    copy_stack_trace(pools[0].outputs + [z], new.outputs)
    return replacements


@node_rewriter([Conv2dGradFilters])
def local_max_pool_conv_grad_filters(fgraph, node):
    """``Conv2dGradFilters(x, MaxPool2dGrad(z, pooled, gp))``, the pooling's gradient
    read by nothing else (a first layer's) -> :class:`MaxPoolConv2dGradFilters`."""
    x, g = node.inputs
    pool_grad = g.owner
    if (pool_grad is None or not isinstance(pool_grad.op, MaxPool2dGrad)
            or len(fgraph.clients[g]) != 1):
        return None
    new = MaxPoolConv2dGradFilters(pool_grad.op.ws, pool_grad.op.ignore_border)(
        x, *pool_grad.inputs)
    if new.type != node.outputs[0].type:
        return None
    copy_stack_trace(node.outputs, [new])
    return [new]


optdb.register(
    "deeplearning_tutorials_conv_max_pool",
    dfs_rewriter(local_conv_max_pool, local_max_pool_conv_grad_filters), TAG, position=48.9,
    use_db_name_as_tag=False,
)


# ---------------------------------------------------------------------------
# DLT_CVM: bookkeeping nodes in Python
# ---------------------------------------------------------------------------

#: The tag of the rewrite only ``DLT_CVM`` runs.
CVM_TAG = "deeplearning_tutorials_cvm"

# Ops that only move or check shapes, views and indices: their ``perform`` costs
# microseconds whatever the arrays, while compiling their C code costs a third of
# a second each.
_BOOKKEEPING = (Shape, Shape_i, ScalarFromTensor, TensorFromScalar, MakeVector, CheckAndRaise,
                SpecifyShape, Reshape, DimShuffle, Subtensor, AdvancedSubtensor,
                AdvancedIncSubtensor, ARange, Alloc, Argmax)
if AdvancedSubtensor1 is not None:
    _BOOKKEEPING += (AdvancedSubtensor1, AdvancedIncSubtensor1)

# Float arithmetic whose every result NumPy rounds as C does: one correctly
# rounded operation per element, as fast in NumPy as in C.  (``Elemwise.perform``
# writes an in-place node's result into its input by a copy: a millisecond on
# LeNet5's largest such node, the second layer's bias.)
_EXACT = (Add, Sub, Mul, TrueDiv, Neg, Maximum, Minimum)


def _apply_like(op, node):
    """``op`` applied to ``node``'s inputs, with fresh outputs of ``node``'s types."""
    return Apply(op, list(node.inputs), [out.type() for out in node.outputs])


class PythonNode(Op):
    """A node run through its Op's own ``perform`` instead of C code (``DLT_CVM``).

    For a node whose work is bookkeeping (shapes, views, indexing, checks) or
    whose results are integers or booleans, compiling C code costs far more
    time than running it in Python ever does: the Op's ``perform`` gives the
    same numbers, and the function compiles a C module less.  The wrapper keeps
    the Op's view and destroy maps.
    """

    __props__ = ("op",)

    def __init__(self, op):
        self.op = op
        self.view_map = op.view_map
        self.destroy_map = op.destroy_map

    def make_node(self, *inputs):
        node = self.op.make_node(*inputs)
        return Apply(self, node.inputs, [out.type() for out in node.outputs])

    def make_thunk(self, node, storage_map, compute_map, no_recycling, impl=None):
        inner = _apply_like(self.op, node)
        pairs = list(zip(node.inputs, inner.inputs)) + list(zip(node.outputs, inner.outputs))
        storage = {new: storage_map[old] for old, new in pairs}
        computed = {new: compute_map[old] for old, new in pairs}
        return self.op.make_thunk(inner, storage, computed, no_recycling, impl="py")

    def perform(self, node, inputs, output_storage):
        inner = _apply_like(self.op, node)
        self.op.prepare_node(inner, None, None, "py")
        self.op.perform(inner, inputs, output_storage)

    def infer_shape(self, *args):
        return self.op.infer_shape(*args)

    def __str__(self):
        return f"Python{{{self.op}}}"


def _runs_in_python(node):
    op = node.op
    if isinstance(op, _BOOKKEEPING):
        return True
    if isinstance(op, NumPyTanh):  # its C code calls NumPy anyway; the C library's tanh stays C
        return not op.libm
    if not isinstance(op, (Elemwise, CAReduce)):
        return False
    spec = getattr(op, "nfunc_spec", None)
    if isinstance(op, Elemwise) and (spec is None or len(node.inputs) != spec[1]):
        # A Composite: its ``perform`` runs the scalar ops' Python code per
        # element, slowly, and on Python integers, which NumPy 2 refuses to cast
        # into a small integer type where C wraps around.
        return False
    if all(out.type.dtype.startswith(("int", "uint", "bool")) for out in node.outputs):
        return True
    if isinstance(op, Elemwise):
        return isinstance(op.scalar_op, _EXACT)
    # A maximum is the same whatever the order of its elements; a sum is not.
    return isinstance(op.scalar_op, (Maximum, Minimum)) and all(out.type.ndim <= 2 for out in node.outputs)


class NumPySum(Op):
    """A float32 sum accumulated in float64 (PyTensor's ``Sum{acc=float64}``), by NumPy.

    NumPy adds in float64 in its own order (pairwise along the last axis), where
    PyTensor's C code adds one element after the other: the float64 sums differ
    in their last bits, and the float32 results they round to only when a sum
    lies within those bits of a float32 rounding boundary.  NumPy's reduction
    casts as it goes, where ``CAReduce.perform`` copies the whole input to float64
    first.
    """

    __props__ = ("axis",)

    def __init__(self, axis):
        self.axis = None if axis is None else tuple(axis)

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        if x.type.dtype != "float32":
            raise TypeError(f"NumPySum sums float32 tensors, got {x.type}")
        axes = range(x.type.ndim) if self.axis is None else self.axis
        shape = [s for i, s in enumerate(x.type.shape) if i not in axes]
        return Apply(self, [x], [pt.tensor(dtype="float32", shape=shape)])

    def perform(self, node, inputs, output_storage):
        total = np.add.reduce(inputs[0], axis=self.axis, dtype=np.float64)
        output_storage[0][0] = np.asarray(total, dtype=np.float32)

    def infer_shape(self, *args):
        node, (shape,) = args[-2], args[-1]
        axes = range(len(shape)) if self.axis is None else self.axis
        return [tuple(s for i, s in enumerate(shape) if i not in axes)]


def _numpy_sum(node):
    """A :class:`NumPySum` for a float32 ``Sum{acc=float64}`` node, else None."""
    op = node.op
    if not (isinstance(op, CAReduce) and isinstance(op.scalar_op, Add) and op.acc_dtype == "float64"
            and node.inputs[0].type.dtype == node.outputs[0].type.dtype == "float32"):
        return None
    (x,), (out,) = node.inputs, node.outputs
    new = NumPySum(op.axis)(x)
    return new if new.type == out.type else None


@node_rewriter(None)
def local_python_node(fgraph, node):
    """Run a bookkeeping node through its Op's ``perform`` (:class:`PythonNode`)."""
    if isinstance(node.op, (PythonNode, NumPySum)):
        return None
    total = _numpy_sum(node)
    if total is not None:
        copy_stack_trace(node.outputs, [total])
        return [total]
    if not _runs_in_python(node):
        return None
    new = _apply_like(PythonNode(node.op), node)
    copy_stack_trace(node.outputs, new.outputs)
    return new.outputs


# Last, after the in-place rewrites and the final merge (100): no later rewrite
# looks for the Ops it wraps.
optdb.register(
    "deeplearning_tutorials_python_nodes", dfs_rewriter(local_python_node), CVM_TAG,
    position=100.5, use_db_name_as_tag=False,
)
