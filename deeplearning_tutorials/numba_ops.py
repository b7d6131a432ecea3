"""Stand-ins that Numba compiles quickly, for ten PyTensor Ops in Numba graphs.

Port note: PyTensor's Numba backend compiles one Numba function per node of a
graph, one after the other, and a cold first call of LeNet5's training
function spent most of its time there (25.6 s on the machines of the
benchmark, 60 s on a slower one). A handful of nodes cost far more than the
rest, not because they compute much but because of how PyTensor writes them:

* ``Softmax`` and ``LogSoftmax`` are ``OpFromGraph`` nodes; Numba compiles each
  inner graph (maximum, subtraction, exponential, sum, ...) node by node, and
  the first of them brings in Numba's generic reduction machinery (13 s of 60);
* ``Alloc`` fills its output with a broadcasting ``res[...] = val`` (5 s);
* ``SpecifyShape`` formats its error message with f-strings, which compiles
  Numba's Unicode library (4 s);
* the negative log-likelihood's ``x[arange(n), y]`` (``AdvancedSubtensor``)
  and its gradient (``AdvancedIncSubtensor``) go through Numba's general
  fancy indexing (3 s);
* ``Sum`` with a float64 accumulator goes through the generic reduction (5 s);
* ``Dot`` of two matrices goes through PyTensor's general BLAS product, which
  handles every stride and layout in one function (4.5 s for LeNet5's six
  products, on the twelfth session's machine).

And some cost the nodes after them: ``DimShuffle`` (a bias's new axes, a
weight matrix's transpose) and ``Subtensor`` (the minibatch's rows) return
arrays whose layout Numba cannot know, so every node that takes them is
compiled for general strided arrays, with run-time checks and copies (the
largest code of the graph: about 10 % of its LLVM code, and 3 s of a first
call of 28 s on the tenth session's machine).

The rewrite here (tagged ``"numba"``, so the C and JAX backends never see
them) replaces those nodes, when they have the shapes the tutorials give them,
by Ops of this module that compute the same thing with a few plain loops, or
with the NumPy view whose layout Numba knows:

* :class:`RowSoftmax`: ``Softmax`` or ``LogSoftmax`` of a matrix along its rows;
* :class:`PairTake`: ``x[rows, cols]`` of a matrix and two integer vectors;
* :class:`PairInc`: ``inc_subtensor`` or ``set_subtensor`` of ``x[rows, cols]``;
* :class:`Fill`: ``alloc`` of a single value;
* :class:`CheckShape`: ``specify_shape`` with constant sizes;
* :class:`SumAcc64`: ``sum`` of a vector, or of a matrix along one axis or
  both, with a float64 accumulator;
* :class:`AddAxes`: ``DimShuffle`` that only inserts axes (a reshape: C-ordered
  from a C-ordered input);
* :class:`Transposed`: the transpose of a matrix (``x.T``: Fortran-ordered from
  a C-ordered input);
* :class:`RowSlice`: ``x[start:stop]`` (C-ordered from a C-ordered input);
* :class:`MatMul`: ``dot`` of two matrices of one float dtype, the same BLAS
  call as PyTensor's, made from the C kernels' library.

They keep PyTensor's arithmetic: the same float64 accumulator for the sums, the
maximum subtracted before the exponential, a float32 ``log`` of the float32
sum; Numba's ``fastmath`` is off for them, so the sums add in index order. They
keep NumPy's rules and errors too: negative indices count from the end, an
index out of range is an ``IndexError``, index vectors of different lengths
broadcast only from length 1, and a wrong shape for ``specify_shape`` is an
``AssertionError`` that says the expected shape.

Measured with Numba's compile events (LeNet5 float32, cold cache, the 2-core
machine of the ninth session): the training function's first call went from
60.1 s to 31.1 s with the first six; the docs' results page has the
benchmark, and the tenth session's figures for the last three and for
:func:`entry_point`.
"""

from __future__ import annotations

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.compile import optdb
from pytensor.graph.basic import Apply, Constant
from pytensor.graph.op import Op
from pytensor.graph.rewriting.basic import copy_stack_trace, in2out, node_rewriter
from pytensor.tensor.basic import Alloc, infer_static_shape
from pytensor.tensor.elemwise import DimShuffle
from pytensor.tensor.math import Dot, Sum
from pytensor.tensor.shape import SpecifyShape
from pytensor.tensor.special import LogSoftmax, Softmax
from pytensor.tensor.subtensor import AdvancedIncSubtensor, AdvancedSubtensor, Subtensor

# The package's hook that registers the Numba functions (this module's among
# them) when PyTensor's Numba backend first converts a graph.
import deeplearning_tutorials.nnet  # noqa: E402, F401

__all__ = ["AddAxes", "CheckShape", "Fill", "MatMul", "PairInc", "PairTake", "RowSlice", "RowSoftmax",
           "SumAcc64", "Transposed", "entry_point", "quick_final_pass",
           "is_matrix_pair", "local_quick_numba_ops", "register_numba_funcify"]

FLOATS = ("float32", "float64")
INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


# --------------------------------------------------------------------------
# Softmax along the rows of a matrix
# --------------------------------------------------------------------------


class RowSoftmax(Op):
    """``softmax(x, axis=1)`` (or ``log_softmax`` with ``log=True``) of a float matrix.

    As PyTensor's inner graph: ``xs = x - x.max(axis=1)``, then
    ``exp(xs) / s`` or ``xs - log(s)`` with ``s`` the sum of ``exp(xs)``
    accumulated in float64 and cast to the input's dtype.
    """

    __props__ = ("log",)

    def __init__(self, log=False):
        self.log = bool(log)

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        if x.ndim != 2 or x.type.dtype not in FLOATS:
            raise TypeError("RowSoftmax takes a float32 or float64 matrix")
        return Apply(self, [x], [x.type()])

    def perform(self, node, inputs, outputs):
        (x,) = inputs
        if x.shape[1] == 0 and x.shape[0]:
            raise ValueError("softmax of a row with no element")
        if x.size == 0:
            outputs[0][0] = x.copy()
            return
        xs = x - x.max(axis=1, keepdims=True)
        e = np.exp(xs)
        s = e.sum(axis=1, keepdims=True, dtype="float64").astype(x.dtype)
        outputs[0][0] = np.asarray(xs - np.log(s) if self.log else e / s, dtype=x.dtype)

    def infer_shape(self, *args):
        # (fgraph, node, shapes) before PyTensor 3.3, (node, shapes) after.
        node, shapes = args[-2:]
        return [shapes[0]]


# --------------------------------------------------------------------------
# x[rows, cols] of a matrix, and its increment
# --------------------------------------------------------------------------


def _pair_length(a, b):
    """The static length of ``rows`` and ``cols`` broadcast together (None if unknown)."""
    if a == 1:
        return b
    if b == 1 or b is None:
        return a
    if a is None:
        return b
    if a != b:
        raise TypeError(f"index vectors of lengths {a} and {b} cannot be broadcast together")
    return a


def _check_pair_inputs(x, rows, cols):
    if x.ndim != 2:
        raise TypeError("the array must be a matrix")
    for i in (rows, cols):
        if i.ndim != 1 or i.type.dtype not in INTS:
            raise TypeError("the indices must be two integer vectors")


def _pair_flat_indices(x, rows, cols):
    """NumPy's rules for ``x[rows, cols]``: the flat indices, or the error NumPy raises."""
    n = len(rows) if len(rows) == len(cols) or len(cols) == 1 else len(cols)
    if len(rows) not in (1, n) or len(cols) not in (1, n):
        raise IndexError("shape mismatch: indexing arrays could not be broadcast together")
    r = np.broadcast_to(rows, (n,)).astype(np.int64)
    c = np.broadcast_to(cols, (n,)).astype(np.int64)
    nr, nc = x.shape
    if np.any((r < -nr) | (r >= nr)) or np.any((c < -nc) | (c >= nc)):
        raise IndexError("index out of bounds")
    return np.where(r < 0, r + nr, r), np.where(c < 0, c + nc, c)


class PairTake(Op):
    """``x[rows, cols]`` of a matrix ``x`` and two integer vectors (advanced indexing)."""

    __props__ = ()

    def make_node(self, x, rows, cols):
        x, rows, cols = map(pt.as_tensor_variable, (x, rows, cols))
        _check_pair_inputs(x, rows, cols)
        n = _pair_length(rows.type.shape[0], cols.type.shape[0])
        return Apply(self, [x, rows, cols], [pt.tensor(dtype=x.type.dtype, shape=(n,))])

    def perform(self, node, inputs, outputs):
        x, rows, cols = inputs
        r, c = _pair_flat_indices(x, rows, cols)
        outputs[0][0] = np.asarray(x[r, c])

    def infer_shape(self, *args):
        node, shapes = args[-2:]
        (n_rows,), (n_cols,) = shapes[1:]
        return [(pt.switch(pt.eq(n_rows, 1), n_cols, n_rows),)]


class PairInc(Op):
    """``x[rows, cols] += y`` (or ``= y``) on a copy of the matrix ``x``; repeated pairs add up."""

    __props__ = ("set_instead_of_inc",)

    def __init__(self, set_instead_of_inc=False):
        self.set_instead_of_inc = bool(set_instead_of_inc)

    def make_node(self, x, y, rows, cols):
        x, y, rows, cols = map(pt.as_tensor_variable, (x, y, rows, cols))
        _check_pair_inputs(x, rows, cols)
        _pair_length(rows.type.shape[0], cols.type.shape[0])
        if y.ndim > 1 or y.type.dtype != x.type.dtype:
            raise TypeError("the values must be a scalar or a vector of the array's dtype")
        return Apply(self, [x, y, rows, cols], [x.type()])

    def perform(self, node, inputs, outputs):
        x, y, rows, cols = inputs
        r, c = _pair_flat_indices(x, rows, cols)
        y = np.asarray(y)
        if y.ndim == 1 and len(y) not in (1, len(r)):
            raise ValueError("the values do not have the length of the indices")
        out = x.copy()
        if self.set_instead_of_inc:
            out[r, c] = y
        else:
            np.add.at(out, (r, c), np.broadcast_to(y, r.shape))
        outputs[0][0] = out

    def infer_shape(self, *args):
        node, shapes = args[-2:]
        return [shapes[0]]


# --------------------------------------------------------------------------
# alloc of a single value, specify_shape with constant sizes
# --------------------------------------------------------------------------


def _constant_int(var):
    if isinstance(var, Constant) and np.ndim(var.data) == 0:
        return int(var.data)
    return None


class Fill(Op):
    """An array of shape ``shape`` (scalar inputs) filled with the single element of ``value``."""

    __props__ = ("ndim",)

    def __init__(self, ndim):
        self.ndim = int(ndim)

    def make_node(self, value, *shape):
        value = pt.as_tensor_variable(value)
        shape = [pt.as_tensor_variable(s) for s in shape]
        if len(shape) != self.ndim or not all(value.type.broadcastable):
            raise TypeError("Fill takes a value of one element and one size per dimension")
        if value.ndim > self.ndim or any(s.ndim or s.type.dtype not in INTS for s in shape):
            raise TypeError("Fill's sizes must be integer scalars")
        # As Alloc does: sizes that constant folding can tell become static.
        _, static = infer_static_shape(shape)
        static = tuple(None if s is None else int(s) for s in static)
        return Apply(self, [value, *shape], [pt.tensor(dtype=value.type.dtype, shape=static)])

    def perform(self, node, inputs, outputs):
        value, *shape = inputs
        outputs[0][0] = np.full(tuple(int(s) for s in shape), np.asarray(value).item(),
                                dtype=node.outputs[0].type.dtype)

    def infer_shape(self, *args):
        node, shapes = args[-2:]
        return [tuple(node.inputs[1:])]


class CheckShape(Op):
    """``x`` itself, once its shape is checked against ``shape`` (None: any size)."""

    __props__ = ("shape",)
    view_map = {0: [0]}

    def __init__(self, shape):
        self.shape = tuple(None if s is None else int(s) for s in shape)

    def message(self):
        return f"SpecifyShape: the input's shape is not {self.shape} (None: any size)"

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        if x.ndim != len(self.shape):
            raise TypeError(f"CheckShape{self.shape} takes a {len(self.shape)}-D tensor")
        static = []
        for have, want in zip(x.type.shape, self.shape):
            if have is not None and want is not None and have != want:
                raise TypeError(self.message())
            static.append(want if want is not None else have)
        return Apply(self, [x], [pt.tensor(dtype=x.type.dtype, shape=tuple(static))])

    def perform(self, node, inputs, outputs):
        (x,) = inputs
        if any(w is not None and h != w for h, w in zip(x.shape, self.shape)):
            raise AssertionError(self.message())
        outputs[0][0] = x

    def infer_shape(self, *args):
        node, shapes = args[-2:]
        return [tuple(shapes[0][i] if s is None else s for i, s in enumerate(self.shape))]


# --------------------------------------------------------------------------
# Sums with a float64 accumulator
# --------------------------------------------------------------------------


class SumAcc64(Op):
    """``x.sum(axis)`` of a float vector or matrix, accumulated in float64, in ``x``'s dtype."""

    __props__ = ("axis",)

    def __init__(self, axis):
        self.axis = tuple(sorted(int(a) for a in axis))

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        if x.type.dtype not in FLOATS or (x.ndim, self.axis) not in (
            (1, (0,)), (2, (0,)), (2, (1,)), (2, (0, 1))
        ):
            raise TypeError("SumAcc64 sums a float vector, or a float matrix along one axis or both")
        shape = tuple(s for i, s in enumerate(x.type.shape) if i not in self.axis)
        return Apply(self, [x], [pt.tensor(dtype=x.type.dtype, shape=shape)])

    def perform(self, node, inputs, outputs):
        (x,) = inputs
        outputs[0][0] = np.asarray(x.sum(axis=self.axis, dtype="float64"), dtype=x.dtype)

    def infer_shape(self, *args):
        node, shapes = args[-2:]
        return [tuple(s for i, s in enumerate(shapes[0]) if i not in self.axis)]


# --------------------------------------------------------------------------
# New axes of length one
# --------------------------------------------------------------------------


class AddAxes(Op):
    """``x`` with axes of length one inserted at ``axes`` (of the output), as a view.

    PyTensor's ``DimShuffle`` that only inserts axes (``ExpandDims``). Its Numba
    function reshapes, so that a C-contiguous input gives a C-contiguous output
    (``DimShuffle``'s own gives an array of unknown layout, for which Numba
    compiles every later node's general, strided code).
    """

    __props__ = ("axes",)
    view_map = {0: [0]}

    def __init__(self, axes):
        self.axes = tuple(sorted(int(a) for a in axes))

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        ndim = x.ndim + len(self.axes)
        if len(set(self.axes)) != len(self.axes) or not all(0 <= a < ndim for a in self.axes):
            raise TypeError("AddAxes inserts distinct axes into a tensor")
        return Apply(self, [x], [pt.tensor(dtype=x.type.dtype, shape=self._shape(x.type.shape))])

    def _shape(self, shape):
        sizes = iter(shape)
        return tuple(1 if d in self.axes else next(sizes) for d in range(len(shape) + len(self.axes)))

    def perform(self, node, inputs, outputs):
        (x,) = inputs
        outputs[0][0] = np.expand_dims(x, self.axes)

    def infer_shape(self, *args):
        node, shapes = args[-2:]
        return [self._shape(shapes[0])]


class Transposed(Op):
    """``x.T`` of a matrix, as a view (PyTensor's ``MatrixTranspose``).

    Its Numba function is ``x.T``, which Numba knows to be Fortran-ordered when
    ``x`` is C-ordered (``DimShuffle``'s own result has an unknown layout).
    """

    __props__ = ()
    view_map = {0: [0]}

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        if x.ndim != 2:
            raise TypeError("Transposed takes a matrix")
        return Apply(self, [x], [pt.tensor(dtype=x.type.dtype, shape=x.type.shape[::-1])])

    def perform(self, node, inputs, outputs):
        outputs[0][0] = inputs[0].T

    def infer_shape(self, *args):
        node, shapes = args[-2:]
        return [tuple(shapes[0][::-1])]


# --------------------------------------------------------------------------
# A slice of the first axis
# --------------------------------------------------------------------------


class RowSlice(Op):
    """``x[start:stop]`` (either bound may be absent), as a view: a ``Subtensor`` of one slice.

    The minibatches the tutorials slice out of their shared datasets. Its Numba
    function writes the slice as ``x[start:stop]``, which Numba knows to be
    C-ordered when ``x`` is (``Subtensor``'s own builds a ``slice`` object, and
    its result has an unknown layout).
    """

    __props__ = ("has_start", "has_stop")
    view_map = {0: [0]}

    def __init__(self, has_start, has_stop):
        self.has_start = bool(has_start)
        self.has_stop = bool(has_stop)

    def make_node(self, x, *bounds):
        x = pt.as_tensor_variable(x)
        bounds = [ps.as_scalar(b) for b in bounds]
        if x.ndim < 1 or len(bounds) != self.has_start + self.has_stop or any(
            b.type.dtype not in INTS for b in bounds
        ):
            raise TypeError("RowSlice takes a tensor and its integer scalar bounds")
        return Apply(self, [x, *bounds],
                     [pt.tensor(dtype=x.type.dtype, shape=(None, *x.type.shape[1:]))])

    def _slice(self, bounds):
        bounds = iter(bounds)
        return slice(next(bounds) if self.has_start else None,
                     next(bounds) if self.has_stop else None)

    def perform(self, node, inputs, outputs):
        x, *bounds = inputs
        outputs[0][0] = x[self._slice(int(b) for b in bounds)]

    def infer_shape(self, *args):
        # Subtensor's own, for the same inputs: (fgraph, node, shapes), or (node, shapes).
        node, shapes = args[-2:]
        x, *bounds = node.inputs
        subtensor = Subtensor((self._slice(range(len(bounds))),))  # bounds by position
        return subtensor.infer_shape(*args[:-2], subtensor.make_node(x, *bounds), shapes)


# --------------------------------------------------------------------------
# The product of two matrices
# --------------------------------------------------------------------------


class MatMul(Op):
    """``dot(x, y)`` of two matrices of one float dtype (PyTensor's ``Dot`` of matrices).

    Its Numba function asks the BLAS (SciPy's, as PyTensor's does) for the product
    through the C kernels' library (:mod:`.nnet.numba_c`): the same ``sgemm`` or
    ``dgemm`` call as PyTensor's own Numba ``Dot`` makes for C- and Fortran-ordered
    operands, in a function that Numba compiles in a fraction of the time.
    """

    __props__ = ()

    def make_node(self, x, y):
        x, y = map(pt.as_tensor_variable, (x, y))
        if x.ndim != 2 or y.ndim != 2 or x.type.dtype not in FLOATS or y.type.dtype != x.type.dtype:
            raise TypeError("MatMul takes two float matrices of one dtype")
        if None not in (x.type.shape[1], y.type.shape[0]) and x.type.shape[1] != y.type.shape[0]:
            raise TypeError(f"MatMul: shapes {x.type.shape} and {y.type.shape} are not aligned")
        return Apply(self, [x, y], [pt.tensor(dtype=x.type.dtype,
                                              shape=(x.type.shape[0], y.type.shape[1]))])

    def perform(self, node, inputs, outputs):
        x, y = inputs
        if x.shape[1] != y.shape[0]:
            raise ValueError("dot: the matrices' shapes are not aligned")
        outputs[0][0] = np.asarray(np.dot(x, y), dtype=node.outputs[0].type.dtype)

    def infer_shape(self, *args):
        node, shapes = args[-2:]
        return [(shapes[0][0], shapes[1][1])]


# --------------------------------------------------------------------------
# The rewrite
# --------------------------------------------------------------------------


def is_matrix_pair(op, x, indices):
    """True when ``op`` indexes the matrix ``x`` as ``x[rows, cols]`` with two integer vectors.

    The negative log-likelihood's pick, ``log(p)[arange(n), y]``, and its gradient;
    the C backends' rewrite of the same nodes (``backend.local_pair_indexing_for_c``)
    asks the same question.
    """
    return (x.ndim == 2 and len(indices) == 2 and getattr(op, "idx_list", (0, 1)) == (0, 1)
            and all(i.ndim == 1 and i.type.dtype in INTS for i in indices))


def _replacement(node):
    op = node.op
    if isinstance(op, (Softmax, LogSoftmax)):
        (x,) = node.inputs
        if x.ndim == 2 and x.type.dtype in FLOATS and tuple(op.axis or ()) in ((1,), (-1,)):
            return RowSoftmax(log=isinstance(op, LogSoftmax))(x)
    elif isinstance(op, AdvancedIncSubtensor):
        x, y, *indices = node.inputs
        if (y.ndim <= 1 and y.type.dtype == x.type.dtype
                and not getattr(op, "ignore_duplicates", False) and is_matrix_pair(op, x, indices)):
            return PairInc(op.set_instead_of_inc)(x, y, *indices)
    elif isinstance(op, AdvancedSubtensor):
        x, *indices = node.inputs
        if is_matrix_pair(op, x, indices):
            return PairTake()(x, *indices)
    elif isinstance(op, Alloc):
        value, *shape = node.inputs
        if all(value.type.broadcastable) and value.ndim <= len(shape) and all(
            s.ndim == 0 and s.type.dtype in INTS for s in shape
        ):
            return Fill(len(shape))(value, *shape)
    elif isinstance(op, SpecifyShape):
        x, *shape = node.inputs
        sizes = []
        for s in shape:
            if isinstance(s, Constant) and s.data is None:  # a dimension left free
                sizes.append(None)
            elif (size := _constant_int(s)) is not None:
                sizes.append(size)
            else:
                return None  # a size known only when the function runs
        return CheckShape(sizes)(x)
    elif isinstance(op, DimShuffle):
        (x,) = node.inputs
        if op.is_expand_dims:
            return AddAxes(op.augment)(x)
        if x.ndim == 2 and tuple(op.new_order) == (1, 0):
            return Transposed()(x)
    elif type(op) is Subtensor:
        x, *bounds = node.inputs
        (entry,) = op.idx_list if len(op.idx_list) == 1 else (None,)
        if isinstance(entry, slice) and entry.step is None:
            return RowSlice(entry.start is not None, entry.stop is not None)(x, *bounds)
    elif isinstance(op, Dot):
        x, y = node.inputs
        if (x.ndim == 2 and y.ndim == 2 and x.type.dtype in FLOATS
                and y.type.dtype == x.type.dtype == node.outputs[0].type.dtype):
            return MatMul()(x, y)
    elif isinstance(op, Sum):
        (x,) = node.inputs
        axis = tuple(range(x.ndim)) if op.axis is None else tuple(sorted(op.axis))
        if (op.acc_dtype == "float64" and x.type.dtype in FLOATS
                and node.outputs[0].type.dtype == x.type.dtype
                and (x.ndim, axis) in ((1, (0,)), (2, (0,)), (2, (1,)), (2, (0, 1)))):
            return SumAcc64(axis)(x)
    return None


@node_rewriter([Softmax, LogSoftmax, AdvancedSubtensor, AdvancedIncSubtensor, Alloc,
                SpecifyShape, Sum, DimShuffle, Subtensor, Dot])
def local_quick_numba_ops(fgraph, node):
    """Replace the node by this module's Op when it has the shapes that Op handles.

    The replacement's type must be the node's output type or a more precise one
    (a looser one would make PyTensor put a ``SpecifyShape`` back); otherwise
    the node stays.
    """
    try:
        new = _replacement(node)
    except TypeError:
        return None
    if new is None or not node.outputs[0].type.is_super(new.type):
        return None
    copy_stack_trace(node.outputs, [new])
    return [new]


# After ``specialize`` has made ``LogSoftmax`` of ``log(softmax(x))`` and before
# the elementwise fusion (49) and the in-place rewrites (50+). Tagged "numba"
# only: the Numba linker asks for that tag, the C and JAX linkers do not.
optdb.register(
    "local_quick_numba_ops",
    in2out(local_quick_numba_ops),
    "numba",
    position=48.8,
)


# --------------------------------------------------------------------------
# The compiled function's entry point
# --------------------------------------------------------------------------

#: Appended to PyTensor's cache key of a graph compiled by :func:`entry_point`,
#: so that its cached machine code never mixes with PyTensor's own layout.
ENTRY_POINT_SALT = "dlt_entry2"

#: Names of the Numba code libraries whose final LLVM pass is the quick one
#: (:func:`quick_final_pass`): the graphs' own functions.
QUICK_LIBRARIES = set()


def quick_final_pass():
    """Make Numba's final LLVM pass over a graph's own function the quick one, once per process.

    Port note: Numba links the optimised code of every function a function calls
    into that function's module, then optimises the whole module again (LLVM's
    full pipeline, with inlining) before it emits its machine code. For the
    function of a graph, which does nothing but call its nodes' functions in
    turn, that second pass optimises again the code of every node, already
    optimised in its own module: about 2 s of a cold first call of LeNet5's
    training function on a 2-core machine, for a step no faster. The graphs'
    functions (the libraries named in :data:`QUICK_LIBRARIES`, which
    :func:`entry_point` fills) get only Numba's first, cheap pass (its inlining
    of what must be inlined and its pruning of reference counts); their nodes'
    code is the code their own modules optimised. Every other library keeps
    Numba's two passes.
    """
    from numba.core import codegen

    cls = codegen.CPUCodeLibrary
    if getattr(cls._optimize_final_module, "dlt_quick", False):
        return
    full = cls._optimize_final_module

    def _optimize_final_module(self):
        if self.name not in QUICK_LIBRARIES:
            return full(self)
        from numba.core import config

        cheap, builder = self._codegen._module_pass_manager(
            loop_vectorize=False, slp_vectorize=False, opt=0, cost="cheap")
        with self._recorded_timings.record("Module passes (cheap optimization for refprune)",
                                           builder):
            cheap.run(self._final_module, builder)
        if not config.LLVM_REFPRUNE_PASS:
            self._final_module = codegen.remove_redundant_nrt_refct(self._final_module)
        return None

    _optimize_final_module.dlt_quick = True
    cls._optimize_final_module = _optimize_final_module


def entry_point(fn_and_key):
    """The Numba function of a whole graph as its own entry point, or None.

    Port note: PyTensor's Numba linker hands its ``jit_compile`` a one-line
    caching wrapper, ``def numba_funcified_fgraph(*args): return
    jitable_func(*args)``, around the graph's function, and compiles that
    wrapper again as the entry point that Python calls. Numba links the code
    of every function a function calls into its own and optimises and
    compiles the whole again, so the wrapper costs one more pass of LLVM over
    the code of every node (about 3 s of a cold first call of LeNet5's
    training function on the ninth session's machine). The graph's function
    is generated source without closures, which Numba can cache by itself: it
    is compiled here, from the same source and globals, as the entry point,
    with PyTensor's cache key (salted with :data:`ENTRY_POINT_SALT`) and
    PyTensor's options for an entry point, and with the quick final LLVM pass
    of :func:`quick_final_pass`. Same results; a warm start still loads it
    from PyTensor's cache.

    ``fn_and_key`` is what PyTensor's linker passes to ``jit_compile``. Returns
    None (and PyTensor compiles as usual) when the graph cannot be cached, when
    PyTensor's caching is off, or when the wrapper is not the one described.
    """
    import pytensor
    from pytensor.link.numba.cache import compile_numba_function_src
    from pytensor.link.numba.dispatch.basic import numba_njit

    fn, key = fn_and_key
    if key is None or not pytensor.config.numba__cache:
        return None
    wrapper = getattr(fn, "py_func", None)
    inner = getattr(wrapper, "__globals__", {}).get("jitable_func")
    graph_fn = getattr(inner, "py_func", None)
    source = getattr(graph_fn, "__source__", None)
    if source is None or graph_fn.__closure__ or wrapper.__name__ != graph_fn.__name__:
        return None
    quick_final_pass()
    QUICK_LIBRARIES.add(graph_fn.__name__)
    entry = compile_numba_function_src(
        source, graph_fn.__name__, global_env=graph_fn.__globals__,
        cache_key=f"{key}_fastmath{int(pytensor.config.numba__fastmath)}_{ENTRY_POINT_SALT}",
    )
    return numba_njit(entry, final_function=True, cache=True)


# --------------------------------------------------------------------------
# Numba functions
# --------------------------------------------------------------------------


def _compile_source(src, name, env):
    namespace = dict(env)
    exec(compile(src, f"<deeplearning_tutorials.numba_ops.{name}>", "exec"), namespace)
    return namespace[name]


def register_numba_funcify():
    """Give this module's Ops their Numba functions (called when PyTensor's Numba backend first compiles)."""
    import numba
    from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_default_op_cache_key

    def njit(fn):
        # No fastmath: the sums add in index order, as the docstrings say.
        return numba_njit(fn, fastmath=False, boundscheck=False)

    @register_funcify_default_op_cache_key(RowSoftmax)
    def numba_funcify_RowSoftmax(op, node=None, **kwargs):
        cast = numba.float32 if node.inputs[0].type.dtype == "float32" else numba.float64
        log = op.log

        @njit
        def row_softmax(x):
            n, m = x.shape
            out = np.empty((n, m), dtype=x.dtype)
            if m == 0 and n > 0:
                raise ValueError("softmax of a row with no element")
            for i in range(n):
                top = x[i, 0]
                for j in range(1, m):
                    if x[i, j] > top or np.isnan(x[i, j]):
                        top = x[i, j]
                acc = 0.0
                for j in range(m):
                    e = np.exp(x[i, j] - top)
                    out[i, j] = e
                    acc += e
                s = cast(acc)
                if log:
                    ls = np.log(s)
                    for j in range(m):
                        out[i, j] = (x[i, j] - top) - ls
                else:
                    for j in range(m):
                        out[i, j] = out[i, j] / s
            return out

        return row_softmax, 1

    @njit
    def pair_indices(x, rows, cols):
        nr, nc = x.shape
        n = rows.shape[0] if rows.shape[0] == cols.shape[0] or cols.shape[0] == 1 else cols.shape[0]
        if (rows.shape[0] != 1 and rows.shape[0] != n) or (cols.shape[0] != 1 and cols.shape[0] != n):
            raise IndexError("shape mismatch: indexing arrays could not be broadcast together")
        r = np.empty(n, dtype=np.int64)
        c = np.empty(n, dtype=np.int64)
        for k in range(n):
            a = np.int64(rows[0 if rows.shape[0] == 1 else k])
            b = np.int64(cols[0 if cols.shape[0] == 1 else k])
            if a < -nr or a >= nr or b < -nc or b >= nc:
                raise IndexError("index out of bounds")
            r[k] = a + nr if a < 0 else a
            c[k] = b + nc if b < 0 else b
        return r, c

    @register_funcify_default_op_cache_key(PairTake)
    def numba_funcify_PairTake(op, node=None, **kwargs):
        @njit
        def pair_take(x, rows, cols):
            r, c = pair_indices(x, rows, cols)
            out = np.empty(r.shape[0], dtype=x.dtype)
            for k in range(r.shape[0]):
                out[k] = x[r[k], c[k]]
            return out

        return pair_take, 1

    @register_funcify_default_op_cache_key(PairInc)
    def numba_funcify_PairInc(op, node=None, **kwargs):
        set_instead_of_inc = op.set_instead_of_inc
        y_is_vector = node.inputs[1].ndim == 1

        @njit
        def pair_inc(x, y, rows, cols):
            r, c = pair_indices(x, rows, cols)
            yv = y.ravel()
            if y_is_vector and yv.shape[0] != 1 and yv.shape[0] != r.shape[0]:
                raise ValueError("the values do not have the length of the indices")
            out = x.copy()
            for k in range(r.shape[0]):
                v = yv[0 if yv.shape[0] == 1 else k]
                if set_instead_of_inc:
                    out[r[k], c[k]] = v
                else:
                    out[r[k], c[k]] += v
            return out

        return pair_inc, 1

    @register_funcify_default_op_cache_key(Fill)
    def numba_funcify_Fill(op, node=None, **kwargs):
        names = [f"s{i}" for i in range(op.ndim)]
        shape = "".join(f"{s}.item(), " for s in names)
        src = (f"def fill(value, {', '.join(names)}):\n"
               f"    out = np.empty(({shape}), dtype=value.dtype)\n"
               f"    out.fill(value.ravel()[0])\n"
               f"    return out\n")
        return njit(_compile_source(src, "fill", {"np": np})), 1

    @register_funcify_default_op_cache_key(CheckShape)
    def numba_funcify_CheckShape(op, node=None, **kwargs):
        checks = " or ".join(f"x.shape[{i}] != {s}" for i, s in enumerate(op.shape)
                             if s is not None) or "False"
        src = (f"def check_shape(x):\n"
               f"    if {checks}:\n"
               f"        raise AssertionError({op.message()!r})\n"
               f"    return x\n")
        return njit(_compile_source(src, "check_shape", {})), 1

    @register_funcify_default_op_cache_key(AddAxes)
    def numba_funcify_AddAxes(op, node=None, **kwargs):
        shape = "".join(f"{s}, " for s in op._shape([f"x.shape[{i}]"
                                                     for i in range(node.inputs[0].ndim)]))
        src = (f"def add_axes(x):\n"
               f"    return np.ascontiguousarray(x).reshape(({shape}))\n")
        return njit(_compile_source(src, "add_axes", {"np": np})), 1

    @register_funcify_default_op_cache_key(Transposed)
    def numba_funcify_Transposed(op, node=None, **kwargs):
        @njit
        def transposed(x):
            return x.T

        return transposed, 1

    @register_funcify_default_op_cache_key(RowSlice)
    def numba_funcify_RowSlice(op, node=None, **kwargs):
        names = ["start"] * op.has_start + ["stop"] * op.has_stop
        bounds = op._slice(names)
        src = (f"def row_slice(x{''.join(', ' + n for n in names)}):\n"
               f"    return x[{bounds.start or ''}:{bounds.stop or ''}]\n")
        return njit(_compile_source(src, "row_slice", {})), 1

    @register_funcify_default_op_cache_key(MatMul)
    def numba_funcify_MatMul(op, node=None, **kwargs):
        from deeplearning_tutorials.nnet import numba_kernels as nk

        product, salt = nk.kernel_and_salt(nk.matmul, nk.matmul)

        @njit
        def matmul(x, y):
            return product(x, y)

        return matmul, salt

    @register_funcify_default_op_cache_key(SumAcc64)
    def numba_funcify_SumAcc64(op, node=None, **kwargs):
        dtype = node.inputs[0].type.dtype
        cast = numba.float32 if dtype == "float32" else numba.float64
        axis = op.axis
        if node.inputs[0].ndim == 1:
            @njit
            def sum_vector(x):
                acc = 0.0
                for i in range(x.shape[0]):
                    acc += x[i]
                return np.asarray(cast(acc))

            return sum_vector, 1
        if axis == (0, 1):
            @njit
            def sum_matrix(x):
                acc = 0.0
                for i in range(x.shape[0]):
                    for j in range(x.shape[1]):
                        acc += x[i, j]
                return np.asarray(cast(acc))

            return sum_matrix, 1
        if axis == (0,):
            @njit
            def sum_columns(x):
                acc = np.zeros(x.shape[1])
                for i in range(x.shape[0]):
                    for j in range(x.shape[1]):
                        acc[j] += x[i, j]
                return acc.astype(x.dtype)

            return sum_columns, 1

        @njit
        def sum_rows(x):
            out = np.empty(x.shape[0], dtype=x.dtype)
            for i in range(x.shape[0]):
                acc = 0.0
                for j in range(x.shape[1]):
                    acc += x[i, j]
                out[i] = acc
            return out

        return sum_rows, 1
