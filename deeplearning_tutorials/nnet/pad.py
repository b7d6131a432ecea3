"""Constant padding of the last two axes, and its gradient, as PyTensor Ops.

The general convolutions and poolings (:func:`.conv.general_conv2d`,
:func:`deeplearning_tutorials.signal.pool.pool_2d`) pad their operands with
these rather than with PyTensor's ``pad``, an ``OpFromGraph`` that C modes run
through Python and another compiled function, and rather than with
``set_subtensor`` into a larger ``alloc``, whose computed shape PyTensor's JAX
backend cannot trace when the operand's static shape is unknown. Here the
sizes are computed inside the Ops, from the arrays themselves, on every
backend.

* :class:`Pad2d` -- ``x -> y``: ``before`` rows/columns of ``value`` before the
  last two axes, ``after`` after them, then more after until ``y`` has at least
  ``at_least`` rows/columns;
* :class:`Crop2d` -- ``(gy, x) -> gx``: the part of ``gy`` that holds ``x``
  (the gradient of :class:`Pad2d`).
"""

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

__all__ = ["Pad2d", "Crop2d", "padded_size"]


def padded_size(n, before, after, at_least):
    """Rows (or columns) of :class:`Pad2d`'s output for ``n`` of its input."""
    return max(n + before + after, at_least)


class Pad2d(Op):
    """Pad the last two axes of a tensor with a constant (see the module)."""

    __props__ = ("before", "after", "value", "at_least")

    def __init__(self, before, after, value=0.0, at_least=(0, 0)):
        self.before = tuple(int(b) for b in before)
        self.after = tuple(int(a) for a in after)
        self.value = float(value)
        self.at_least = tuple(int(a) for a in at_least)

    def sizes(self, h, w):
        return tuple(None if n is None else padded_size(n, b, a, m)
                     for n, b, a, m in zip((h, w), self.before, self.after, self.at_least))

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        if x.type.ndim < 2:
            raise ValueError(f"Pad2d needs at least 2 dimensions, got {x.type}")
        shape = x.type.shape[:-2] + self.sizes(*x.type.shape[-2:])
        return Apply(self, [x], [pt.tensor(dtype=x.type.dtype, shape=shape)])

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        h, w = x.shape[-2:]
        y = np.full(x.shape[:-2] + self.sizes(h, w), self.value, dtype=x.dtype)
        y[..., self.before[0] : self.before[0] + h, self.before[1] : self.before[1] + w] = x
        output_storage[0][0] = y

    def pullback(self, inputs, outputs, output_grads):
        (x,) = inputs
        return [Crop2d(self.before)(output_grads[0], x)]


class Crop2d(Op):
    """``gy[..., before[0]:before[0] + h, before[1]:before[1] + w]``, ``(h, w)`` ``x``'s last two."""

    __props__ = ("before",)

    def __init__(self, before):
        self.before = tuple(int(b) for b in before)

    def make_node(self, gy, x):
        gy, x = pt.as_tensor_variable(gy), pt.as_tensor_variable(x)
        if gy.type.ndim != x.type.ndim:
            raise ValueError(f"Crop2d: {gy.type} and {x.type} differ in dimensions")
        return Apply(self, [gy, x], [pt.tensor(dtype=gy.type.dtype, shape=x.type.shape)])

    def perform(self, node, inputs, output_storage):
        gy, x = inputs
        (b0, b1), (h, w) = self.before, x.shape[-2:]
        output_storage[0][0] = np.ascontiguousarray(gy[..., b0 : b0 + h, b1 : b1 + w])

    def pullback(self, inputs, outputs, output_grads):
        return [grad_not_implemented(self, 0, inputs[0]),
                grad_not_implemented(self, 1, inputs[1])]
