"""The package's Numba mode: PyTensor's ``NUMBA`` with two nodes that compile faster.

Numba compiles each node of a function from the code PyTensor's dispatch writes
for it.  Two of LeNet5's training nodes cost seconds apiece to compile and
microseconds to run:

* ``SpecifyShape`` (the filters' declared shape): its check formats its message
  with the array's shape, and Numba compiles that string formatting;
* ``Alloc`` of a constant (the zeros the likelihood's gradient is written
  into): its ``res[...] = val`` compiles Numba's general broadcasting.

The mode's rewrite (under :data:`TAG`, which only ``DLT_NUMBA`` includes)
replaces them with :class:`ShapeCheck` (the same check, a fixed message) and
:class:`Full` (``np.full``).  The results are the same arrays: nothing is
computed differently.
"""

import numpy as np
import pytensor.tensor as pt
from pytensor.compile import optdb
from pytensor.graph.basic import Apply, Constant
from pytensor.graph.op import Op
from pytensor.graph.rewriting.basic import copy_stack_trace, dfs_rewriter, node_rewriter
from pytensor.tensor.basic import Alloc
from pytensor.tensor.shape import SpecifyShape
from pytensor.tensor.type_other import NoneTypeT

from deeplearning_tutorials import dispatch

__all__ = ["TAG", "ShapeCheck", "Full"]

#: The tag of the rewrites only ``DLT_NUMBA`` runs.
TAG = "deeplearning_tutorials_numba"


class ShapeCheck(Op):
    """``x``, checked to have the shape ``shape`` (``None`` leaves a dimension free).

    PyTensor's ``SpecifyShape`` with constant dimensions; a mismatch raises the
    same ``AssertionError``.
    """

    __props__ = ("shape",)
    view_map = {0: [0]}

    def __init__(self, shape):
        self.shape = tuple(None if s is None else int(s) for s in shape)

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        if x.type.ndim != len(self.shape):
            raise TypeError(f"ShapeCheck{self.shape} needs a {len(self.shape)}-d tensor, got {x.type}")
        shape = tuple(s if s is not None else d for s, d in zip(self.shape, x.type.shape))
        return Apply(self, [x], [x.type.clone(shape=shape)()])

    def message(self):
        return f"SpecifyShape: expected shape {self.shape}"

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        if x.ndim != len(self.shape) or any(s is not None and d != s for d, s in zip(x.shape, self.shape)):
            raise AssertionError(f"{self.message()}, got {x.shape}")
        output_storage[0][0] = x

    def infer_shape(self, *args):
        # PyTensor 3.0 passes (fgraph, node, shapes); later versions (node, shapes).
        return [tuple(d if s is None else s for d, s in zip(args[-1][0], self.shape))]


class Full(Op):
    """An array of the given shape (the inputs, scalars) filled with ``value``.

    PyTensor's ``Alloc`` of a constant whose elements are all ``value``.
    """

    __props__ = ("value", "dtype", "static_shape")

    def __init__(self, value, dtype, static_shape):
        self.value = float(value) if np.dtype(dtype).kind == "f" else int(value)
        self.dtype = str(dtype)
        self.static_shape = tuple(static_shape)

    def make_node(self, *shape):
        shape = [pt.as_tensor_variable(s) for s in shape]
        if len(shape) != len(self.static_shape):
            raise TypeError(f"Full needs {len(self.static_shape)} dimensions, got {len(shape)}")
        return Apply(self, shape, [pt.tensor(dtype=self.dtype, shape=self.static_shape)])

    def perform(self, node, inputs, output_storage):
        shape = tuple(int(s) for s in inputs)
        output_storage[0][0] = np.full(shape, self.value, dtype=self.dtype)

    def infer_shape(self, *args):
        return [tuple(args[-2].inputs)]


def _single_value(variable):
    """The one value of a constant whose elements are all equal, else None."""
    if not isinstance(variable, Constant):
        return None
    data = np.asarray(variable.data)
    if data.size == 0 or data.dtype.kind not in "fiub" or not (data == data.flat[0]).all():
        return None
    return data.flat[0]


@node_rewriter([SpecifyShape, Alloc])
def local_numba_quick_compile(fgraph, node):
    """``SpecifyShape`` with constant dimensions -> :class:`ShapeCheck`; ``Alloc``
    of a constant of one value -> :class:`Full`."""
    if isinstance(node.op, SpecifyShape):
        x, *dims = node.inputs
        shape = []
        for d in dims:
            if isinstance(d.type, NoneTypeT):
                shape.append(None)
            elif isinstance(d, Constant):
                shape.append(int(d.data))
            else:
                return None
        new = ShapeCheck(shape)(x)
    else:
        value = _single_value(node.inputs[0])
        out = node.outputs[0]
        if value is None or out.type.dtype == "bool" or not 1 <= out.type.ndim <= 4:
            return None
        new = Full(value, out.type.dtype, out.type.shape)(*node.inputs[1:])
    if new.type != node.outputs[0].type or not dispatch.NUMBA.load(type(new.owner.op)):
        return None
    copy_stack_trace(node.outputs[0], new)
    return [new]


optdb.register("deeplearning_tutorials_numba_quick_compile", dfs_rewriter(local_numba_quick_compile), TAG,
               position=48.9, use_db_name_as_tag=False)
dispatch.NUMBA.add("deeplearning_tutorials.modes.numba_dispatch", ShapeCheck, Full)
