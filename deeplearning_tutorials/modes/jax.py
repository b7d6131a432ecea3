"""The package's JAX mode: the tutorial's minibatch ``givens`` and datasets kept on the device.

The tutorials select a minibatch with
``givens={x: train_set_x[index * batch_size:(index + 1) * batch_size]}`` over
a shared dataset and then take ``arange(y.shape[0])``. JAX refuses both: slice
bounds must be static Python integers (upstream PyTensor issue #312) and so must
the arguments of ``jnp.arange``. The slice *length*, however, is static:
``(index + 1) * batch_size - index * batch_size`` is ``batch_size`` whatever
``index`` is.

This module defines a graph rewrite, run only by the package's JAX mode, that finds
``Subtensor`` and ``IncSubtensor`` slices whose ``stop - start`` simplifies to a
positive integer constant and replaces them with :class:`DynamicSlice` /
:class:`DynamicIncSlice`, whose JAX implementations are
:func:`jax.lax.dynamic_slice_in_dim` / :func:`jax.lax.dynamic_update_slice_in_dim`
and whose output shape along the sliced axis is that constant. Shape inference
then turns ``y.shape[0]`` into a constant and ``arange`` compiles.

PyTensor's own modes never run these rewrites (they are registered under the
package's own tag, :data:`TAG`); :func:`jax_mode` builds the mode that does, with
:class:`DeviceJAXLinker`, which hands JAX a device copy of every shared variable
the function does not update (a dataset then crosses to the device once, not on
every call).

Notes
-----
Python slicing and :func:`jax.lax.dynamic_slice_in_dim` agree when
``0 <= start`` and ``start + length <= n`` (``n`` the size of the axis), which
always holds for the tutorial's minibatch indices. Outside that range they
differ, and a static output shape cannot express Python's behaviour:

* Python *clips* at the end, ``x[n - 2:n + 3]`` has 2 rows; the rewritten slice
  *clamps the start* to ``n - length`` and returns the last ``length`` rows;
* a negative start counts from the end in both, but Python's stop does not
  follow (``x[-2:1]`` is empty), while the rewritten slice takes ``length``
  entries from ``n - 2``, clamped as above.

JAX itself clamps out-of-bounds indices (no exceptions inside ``jit``), so this
is JAX's convention; :meth:`DynamicSlice.perform` follows it too, so every
backend that evaluates the Op computes the same thing.

Gradients: the tutorial never differentiates with respect to the sliced shared
data, but if a graph does, the ``IncSubtensor`` that the gradient of the slice
produces is rewritten the same way (:class:`DynamicIncSlice`). The gradient
graph's ``zeros_like(dataset)`` then has the dataset's (static) shape in JAX.
"""

from __future__ import annotations

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.compile import optdb
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.graph.op import Op
from pytensor.graph.rewriting.basic import (
    copy_stack_trace,
    dfs_rewriter,
    node_rewriter,
)
from pytensor.tensor.basic import ScalarFromTensor, TensorFromScalar
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.subtensor import IncSubtensor, Subtensor, indices_from_subtensor

import weakref

from pytensor.compile.mode import Mode, get_mode
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.link.jax.linker import JAXLinker
from pytensor.tensor.elemwise import CAReduce

from deeplearning_tutorials import dispatch

__all__ = [
    "TAG",
    "DeviceJAXLinker",
    "DynamicIncSlice",
    "DynamicSlice",
    "constant_slice_length",
    "jax_mode",
]

#: The tag of the rewrites only the package's JAX mode runs.
TAG = "deeplearning_tutorials_jax"

_ONE = "1"  # key of the constant term in a linear form


def _linear_form(var: Variable, depth: int = 0) -> dict | None:
    """Write an integer scalar graph as ``sum(coef * atom) + constant``.

    Parameters
    ----------
    var : Variable
        A scalar integer variable (tensor or scalar type).
    depth : int
        Recursion depth; graphs deeper than 32 are not simplified.

    Returns
    -------
    dict or None
        ``{atom: coefficient, "1": constant}`` with integer coefficients; atoms
        are the variables that are neither constants nor sums, differences,
        negations, integer casts or products with a constant. ``None`` when the
        graph is not integer-valued or too deep.
    """
    if depth > 32:
        return None
    if isinstance(var, Constant):
        data = np.asarray(var.data)
        if data.ndim != 0 or data.dtype.kind not in "iu":
            return None
        return {_ONE: int(data)}
    dtype = getattr(var.type, "dtype", None)
    if dtype is None or np.dtype(dtype).kind not in "iu":
        return None
    node = var.owner
    if node is None:
        return {var: 1}
    op = node.op
    if isinstance(op, (ScalarFromTensor, TensorFromScalar)):
        return _linear_form(node.inputs[0], depth + 1)
    if isinstance(op, DimShuffle) and node.inputs[0].type.ndim == 0 and var.type.ndim == 0:
        return _linear_form(node.inputs[0], depth + 1)
    scalar_op = op.scalar_op if isinstance(op, Elemwise) else op
    parts = None
    if isinstance(scalar_op, (ps.Add, ps.Sub, ps.Neg, ps.Mul, ps.Cast, ps.Identity)):
        parts = [_linear_form(inp, depth + 1) for inp in node.inputs]
        if any(p is None for p in parts):
            return {var: 1}
    if isinstance(scalar_op, (ps.Cast, ps.Identity)):
        return parts[0]
    if isinstance(scalar_op, ps.Neg):
        return {k: -v for k, v in parts[0].items()}
    if isinstance(scalar_op, (ps.Add, ps.Sub)):
        out: dict = {}
        for i, part in enumerate(parts):
            sign = -1 if isinstance(scalar_op, ps.Sub) and i == 1 else 1
            for k, v in part.items():
                out[k] = out.get(k, 0) + sign * v
        return out
    if isinstance(scalar_op, ps.Mul):
        out = {_ONE: 1}
        for part in parts:
            if set(part) <= {_ONE}:
                c = part.get(_ONE, 0)
                out = {k: v * c for k, v in out.items()}
            elif set(out) <= {_ONE}:
                c = out.get(_ONE, 0)
                out = {k: v * c for k, v in part.items()}
            else:
                # A product of two non-constant terms is not linear.
                return {var: 1}
        return out
    return {var: 1}


def constant_slice_length(start: Variable | None, stop: Variable | None) -> int | None:
    """Return ``stop - start`` when it is the same integer for every input value.

    Parameters
    ----------
    start, stop : Variable or None
        The bounds of a slice, as found in a ``Subtensor``'s inputs.

    Returns
    -------
    int or None
        The constant length, or ``None`` when a bound is missing or the
        difference depends on the inputs (``x[:k]``, ``x[i:2 * i]``, ...).

    Examples
    --------
    >>> import pytensor.tensor as pt
    >>> i = pt.lscalar("i")
    >>> constant_slice_length(i * 600, (i + 1) * 600)
    600
    >>> constant_slice_length(i, 2 * i) is None
    True
    """
    if start is None or stop is None:
        return None
    lo, hi = _linear_form(start), _linear_form(stop)
    if lo is None or hi is None:
        return None
    diff = dict(hi)
    for k, v in lo.items():
        diff[k] = diff.get(k, 0) - v
    if any(v != 0 for k, v in diff.items() if k is not _ONE):
        return None
    return diff.get(_ONE, 0)


def _as_index_tensor(var: Variable) -> Variable:
    """Return a 0-d int64 tensor for a slice bound (unwrapping ``ScalarFromTensor``)."""
    if var.owner is not None and isinstance(var.owner.op, ScalarFromTensor):
        var = var.owner.inputs[0]
    return pt.cast(pt.as_tensor_variable(var), "int64")


def _clamped_start(start: int, n: int, length: int) -> int:
    """The start :func:`jax.lax.dynamic_slice_in_dim` uses: negative from the end, then clamped."""
    if start < 0:
        start += n
    return min(max(start, 0), n - length)


class DynamicSlice(Op):
    """``x[start:start + length]`` along ``axis``, with ``length`` fixed at graph build time.

    Parameters
    ----------
    axis : int
        The axis to slice.
    length : int
        The number of entries taken; the output has this static size along ``axis``.

    Notes
    -----
    A negative start counts from the end, and the start is then clamped to
    ``[0, n - length]``, as :func:`jax.lax.dynamic_slice_in_dim` does, so the result always has ``length`` entries; this equals Python's
    slice when ``0 <= start <= n - length`` (see the module notes).
    """

    __props__ = ("axis", "length")

    def __init__(self, axis: int, length: int):
        self.axis = int(axis)
        self.length = int(length)

    def make_node(self, x, start):
        x = pt.as_tensor_variable(x)
        start = pt.as_tensor_variable(start)
        if start.type.ndim != 0 or np.dtype(start.type.dtype).kind not in "iu":
            raise TypeError(f"start must be an integer scalar, got {start.type}")
        if not 0 <= self.axis < x.type.ndim:
            raise ValueError(f"axis {self.axis} out of range for {x.type}")
        shape = list(x.type.shape)
        if shape[self.axis] is not None and shape[self.axis] < self.length:
            raise ValueError(f"slice length {self.length} exceeds the axis size {shape[self.axis]}")
        shape[self.axis] = self.length
        out = pt.tensor(dtype=x.type.dtype, shape=tuple(shape))
        return Apply(self, [x, start], [out])

    def perform(self, node, inputs, output_storage):
        x, start = inputs
        n = x.shape[self.axis]
        if n < self.length:
            raise IndexError(f"slice length {self.length} exceeds the axis size {n}")
        begin = _clamped_start(int(start), n, self.length)
        index = [slice(None)] * x.ndim
        index[self.axis] = slice(begin, begin + self.length)
        output_storage[0][0] = np.array(x[tuple(index)], copy=True)

    def infer_shape(self, *args):
        # PyTensor 3.0 passes (fgraph, node, shapes), 3.3 (node, shapes).
        node, shapes = args[-2:]
        shape = list(shapes[0])
        shape[self.axis] = pt.constant(self.length, dtype="int64")
        return [tuple(shape)]


class DynamicIncSlice(Op):
    """Add ``y`` to (or set ``y`` into) ``x[start:start + length]`` along ``axis``.

    Parameters
    ----------
    axis : int
        The axis sliced.
    length : int
        The static length of the slice.
    set_instead_of_inc : bool
        Set the slice to ``y`` instead of adding ``y`` to it.

    Notes
    -----
    The start is clamped like :class:`DynamicSlice`'s.
    """

    __props__ = ("axis", "length", "set_instead_of_inc")

    def __init__(self, axis: int, length: int, set_instead_of_inc: bool = False):
        self.axis = int(axis)
        self.length = int(length)
        self.set_instead_of_inc = bool(set_instead_of_inc)

    def make_node(self, x, y, start):
        x = pt.as_tensor_variable(x)
        y = pt.as_tensor_variable(y)
        start = pt.as_tensor_variable(start)
        if start.type.ndim != 0 or np.dtype(start.type.dtype).kind not in "iu":
            raise TypeError(f"start must be an integer scalar, got {start.type}")
        if y.type.ndim > x.type.ndim:
            raise ValueError(f"y has more dimensions than x: {y.type} vs {x.type}")
        return Apply(self, [x, y, start], [x.type()])

    def perform(self, node, inputs, output_storage):
        x, y, start = inputs
        n = x.shape[self.axis]
        if n < self.length:
            raise IndexError(f"slice length {self.length} exceeds the axis size {n}")
        begin = _clamped_start(int(start), n, self.length)
        index = [slice(None)] * x.ndim
        index[self.axis] = slice(begin, begin + self.length)
        out = np.array(x, copy=True)
        if self.set_instead_of_inc:
            out[tuple(index)] = y
        else:
            out[tuple(index)] += y
        output_storage[0][0] = out

    def infer_shape(self, *args):
        # PyTensor 3.0 passes (fgraph, node, shapes), 3.3 (node, shapes).
        node, shapes = args[-2:]
        return [shapes[0]]


def _first_constant_length_slice(indices) -> tuple[int, int, slice] | None:
    """Find the first slice entry with symbolic bounds and a constant positive length."""
    for axis, entry in enumerate(indices):
        if not isinstance(entry, slice):
            continue
        start, stop, step = entry.start, entry.stop, entry.step
        if step is not None and _linear_form(step) != {_ONE: 1}:
            continue
        if start is None or stop is None:
            continue
        if isinstance(start, Constant) and isinstance(stop, Constant):
            # Static bounds already compile in JAX.
            continue
        length = constant_slice_length(start, stop)
        if length is not None and length > 0:
            return axis, length, entry
    return None


def _residual(indices, axis):
    """The index tuple with ``axis`` made a full slice, or None when nothing remains."""
    rest = list(indices)
    rest[axis] = slice(None)
    while rest and isinstance(rest[-1], slice) and rest[-1] == slice(None):
        rest.pop()
    return tuple(rest) if rest else None


def _slice_to_rewrite(x, index_vars, idx_list):
    """``(indices, axis, length, entry)`` of the slice of ``x`` to make static-length, or None.

    Registers the JAX code of the dynamic-slice Ops when there is one (none
    without JAX).
    """
    indices = indices_from_subtensor(index_vars, idx_list)
    found = _first_constant_length_slice(indices)
    if found is None:
        return None
    axis, length, entry = found
    static = x.type.shape[axis]
    if static is not None and static < length:
        return None
    if not dispatch.JAX.load(DynamicSlice):
        return None
    return indices, axis, length, entry


@node_rewriter([Subtensor])
def local_constant_length_subtensor(fgraph, node):
    """Replace ``x[a:b]`` with a :class:`DynamicSlice` when ``b - a`` is a constant.

    One slice is rewritten per application; the remaining index entries stay in
    a ``Subtensor`` that the rewriter visits next.
    """
    if type(node.op) is not Subtensor:
        return None
    x, *index_vars = node.inputs
    found = _slice_to_rewrite(x, index_vars, node.op.idx_list)
    if found is None:
        return None
    indices, axis, length, entry = found
    out = DynamicSlice(axis, length)(x, _as_index_tensor(entry.start))
    rest = _residual(indices, axis)
    if rest is not None:
        out = out[rest]
    if out.type.dtype != node.outputs[0].type.dtype or out.type.ndim != node.outputs[0].type.ndim:
        return None
    copy_stack_trace(node.outputs[0], out)
    return [out]


@node_rewriter([IncSubtensor])
def local_constant_length_incsubtensor(fgraph, node):
    """Replace ``inc_subtensor(x[a:b], y)`` with a :class:`DynamicIncSlice` when ``b - a`` is constant.

    With other index entries besides the slice, the slice is cut out with
    :class:`DynamicSlice`, the ordinary ``IncSubtensor`` applies to it, and
    :class:`DynamicIncSlice` sets it back.
    """
    if type(node.op) is not IncSubtensor:
        return None
    x, y, *index_vars = node.inputs
    found = _slice_to_rewrite(x, index_vars, node.op.idx_list)
    if found is None:
        return None
    indices, axis, length, entry = found
    start = _as_index_tensor(entry.start)
    rest = _residual(indices, axis)
    set_instead_of_inc = bool(node.op.set_instead_of_inc)
    if rest is None:
        out = DynamicIncSlice(axis, length, set_instead_of_inc)(x, y, start)
    else:
        window = DynamicSlice(axis, length)(x, start)
        if set_instead_of_inc:
            window = pt.set_subtensor(window[rest], y)
        else:
            window = pt.inc_subtensor(window[rest], y)
        out = DynamicIncSlice(axis, length, True)(x, window, start)
    copy_stack_trace(node.outputs[0], out)
    return [out]


@node_rewriter([DynamicSlice])
def local_dynamic_slice_lift(fgraph, node):
    """Slice before a unary elementwise op: ``slice(cast(x))`` -> ``cast(slice(x))``.

    The tutorial casts the whole label set (``T.cast(shared_y, 'int32')``) and
    slices the result; PyTensor's ``local_subtensor_lift`` moves the cast under
    an ordinary ``Subtensor``, and this does the same for :class:`DynamicSlice`,
    so each call casts one minibatch instead of the dataset.
    """
    (x, start) = node.inputs
    if x.owner is None or not isinstance(x.owner.op, Elemwise) or len(x.owner.inputs) != 1:
        return None
    if len(fgraph.clients[x]) != 1:
        return None
    (inner,) = x.owner.inputs
    if inner.type.ndim != x.type.ndim:
        return None
    out = x.owner.op(node.op(inner, start))
    copy_stack_trace(node.outputs[0], out)
    return [out]


@node_rewriter([CAReduce])
def local_careduce_in_output_dtype(fgraph, node):
    """Reduce in the accumulator's dtype, then cast to the node's: ``cast(sum{acc}(x))``.

    PyTensor's JAX ``CAReduce`` returns its accumulator's dtype: a float32
    ``Sum{acc=float64}`` (which every mean in the tutorial's cost becomes) gives a
    float64 array when JAX runs with 64-bit types, and that float64 then spreads
    through the gradient of a float32 model. Accumulating in float64 and rounding
    to the output type is what the C and Numba backends do.
    """
    op = node.op
    acc_dtype = getattr(op, "acc_dtype", None)
    out_dtype = node.outputs[0].type.dtype
    if acc_dtype is None or acc_dtype == out_dtype:
        return None
    wide = op.clone(dtype=acc_dtype)(*node.inputs)
    out = pt.cast(wide, out_dtype)
    copy_stack_trace(node.outputs[0], out)
    return [out]


optdb["canonicalize"].register("local_dynamic_slice_lift", local_dynamic_slice_lift, TAG,
                               use_db_name_as_tag=False)
optdb["specialize"].register("local_careduce_in_output_dtype", local_careduce_in_output_dtype,
                             TAG, use_db_name_as_tag=False)

# Position 0.05: after the first merge (0), so that ``index * bs`` appearing in
# both bounds is one variable, and before ShapeOpt (0.1) and canonicalize (1),
# which would otherwise expand ``y.shape[0]`` into the clipped-slice-length
# formula before the static length is known.
optdb.register(
    "deeplearning_tutorials_constant_length_slices",
    dfs_rewriter(
        local_constant_length_subtensor,
        local_constant_length_incsubtensor,
        ignore_newtrees=False,
    ),
    TAG,
    position=0.05,
    use_db_name_as_tag=False,
)
dispatch.JAX.add("deeplearning_tutorials.modes.jax_dispatch", DynamicSlice, DynamicIncSlice)


class _DeviceCell:
    """A one-slot storage cell that hands a shared variable's value to JAX as a device array.

    The JIT thunk reads its inputs as ``cell[0]``. This cell reads the shared
    variable's own storage and returns a cached ``jax.device_put`` of it, so
    the host array crosses to the device once rather than on every call. The
    cache is keyed by the identity of the host array, so ``set_value`` (which
    stores a new array) is seen on the next call; an in-place change of the
    array obtained with ``get_value(borrow=True)`` is not.
    """

    __slots__ = ("storage", "variable")

    def __init__(self, variable, storage):
        self.variable = variable
        self.storage = storage

    def __getitem__(self, i):
        return _device_value(self.variable, self.storage[i])

    def __setitem__(self, i, value):
        self.storage[i] = value

    def __len__(self):
        return 1


# One device copy per shared variable, shared by all the functions that read it;
# it goes when the variable does.
_DEVICE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _device_value(variable, value):
    import jax

    if isinstance(value, jax.Array):
        return value
    hit = _DEVICE_CACHE.get(variable)
    if hit is not None and hit[0] is value:
        return hit[1]
    device = jax.device_put(value)
    _DEVICE_CACHE[variable] = (value, device)
    return device


class DeviceJAXLinker(JAXLinker):
    """PyTensor's JAX linker, keeping the shared data a function only reads on the device.

    PyTensor's JAX linker passes every shared variable's storage to the jitted
    function on each call; a numpy dataset is therefore copied to the device on
    every minibatch. Shared variables that the function updates already come
    back as device arrays. For the others this linker hands JAX a cached device
    copy of the value (see :class:`_DeviceCell`); the shared variable itself
    keeps its numpy value, so ``get_value`` and the other backends are unaffected.
    """

    def create_thunk_inputs(self, storage_map):
        from pytensor.tensor.random.type import RandomType

        thunk_inputs = super().create_thunk_inputs(storage_map)
        updated = set(getattr(self.fgraph, "update_mapping", {}).values())
        for i, inp in enumerate(self.fgraph.inputs):
            if (
                isinstance(inp, SharedVariable)
                and not isinstance(inp.type, RandomType)
                and i not in updated
                and i not in self.scalar_shape_inputs
            ):
                thunk_inputs[i] = _DeviceCell(inp, thunk_inputs[i])
        return thunk_inputs


def jax_mode() -> Mode:
    """PyTensor's JAX mode with the rewrites of this module and :class:`DeviceJAXLinker`."""
    query = get_mode("JAX").including(TAG).excluding(dispatch.NUMBA_TAG).provided_optimizer
    return Mode(DeviceJAXLinker(), query)
