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
  last two axes, ``interior`` between each two of ``x``'s, ``after`` after
  them, then more after until ``y`` has at least ``at_least`` rows/columns
  (``lax.pad``'s padding, with a minimum size);
* :class:`Crop2d` -- ``(gy, x) -> gx``: the part of ``gy`` that holds ``x``
  (the gradient of :class:`Pad2d`).
"""

import math

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.link.c.op import COp

__all__ = ["Pad2d", "Crop2d", "padded_size"]


# The C code of both Ops: ``n`` planes, each copying ``h`` rows of ``w``
# elements from ``src`` (planes of sh x sw) at row ``sr``, column ``sc``, every
# ``ss``-th row and column, to ``dst`` (planes of dh x dw) at row ``dr``, column
# ``dc``, every ``ds``-th; ``dst`` is first filled with ``fill`` when the Op pads.
_C_CODE = """
{
    PyArrayObject *src = PyArray_GETCONTIGUOUS(%(src)s);
    npy_intp dims[%(nd)s];
    long n = 1, sh, sw, h, w, i, r;
    int d, ok = 0;
    if (src == NULL) goto fail_%(name)s;
    for (d = 0; d < %(nd)s - 2; ++d) { dims[d] = PyArray_DIMS(src)[d]; n *= dims[d]; }
    sh = PyArray_DIMS(src)[%(nd)s - 2]; sw = PyArray_DIMS(src)[%(nd)s - 1];
    %(shape)s
    if (%(z)s == NULL || !PyArray_IS_C_CONTIGUOUS(%(z)s)
        || !PyArray_CompareLists(PyArray_DIMS(%(z)s), dims, %(nd)s)) {
        Py_XDECREF(%(z)s);
        %(z)s = (PyArrayObject*)PyArray_EMPTY(%(nd)s, dims, PyArray_TYPE(src), 0);
        if (%(z)s == NULL) goto fail_%(name)s;
    }
    {
        dtype_%(z)s *dst = (dtype_%(z)s*)PyArray_DATA(%(z)s);
        const dtype_%(z)s *s = (const dtype_%(z)s*)PyArray_DATA(src);
        long dh = dims[%(nd)s - 2], dw = dims[%(nd)s - 1];
        %(fill)s
        for (i = 0; i < n; ++i)
            for (r = 0; r < h; ++r) {
                dtype_%(z)s *to = dst + (i * dh + r * %(ds0)s + %(dr)s) * dw + %(dc)s;
                const dtype_%(z)s *from = s + (i * sh + r * %(ss0)s + %(sr)s) * sw + %(sc)s;
                long c;
                if (%(ds1)s == 1 && %(ss1)s == 1)
                    memcpy(to, from, w * sizeof(dtype_%(z)s));
                else
                    for (c = 0; c < w; ++c) to[c * %(ds1)s] = from[c * %(ss1)s];
            }
    }
    ok = 1;
  fail_%(name)s:
    Py_XDECREF(src);
    if (!ok) { %(fail)s }
}
"""


def _c_literal(value):
    return ("-" if value < 0 else "") + "NPY_INFINITY" if math.isinf(value) else repr(value)


def padded_size(n, before, after, at_least, interior=0):
    """Rows (or columns) of :class:`Pad2d`'s output for ``n`` of its input."""
    return max(n + max(n - 1, 0) * interior + before + after, at_least)


class Pad2d(COp):
    """Pad the last two axes of a tensor with a constant (see the module)."""

    __props__ = ("before", "after", "value", "at_least", "interior")

    def __init__(self, before, after, value=0.0, at_least=(0, 0), interior=(0, 0)):
        self.before = tuple(int(b) for b in before)
        self.after = tuple(int(a) for a in after)
        self.value = float(value)
        self.at_least = tuple(int(a) for a in at_least)
        self.interior = tuple(int(i) for i in interior)

    def sizes(self, h, w):
        return tuple(None if n is None else padded_size(n, b, a, m, i)
                     for n, b, a, m, i in zip((h, w), self.before, self.after, self.at_least,
                                              self.interior))

    def steps(self):
        """Rows and columns from one of ``x``'s to the next in ``y``."""
        return tuple(i + 1 for i in self.interior)

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        if x.type.ndim < 2:
            raise ValueError(f"Pad2d needs at least 2 dimensions, got {x.type}")
        shape = x.type.shape[:-2] + self.sizes(*x.type.shape[-2:])
        return Apply(self, [x], [pt.tensor(dtype=x.type.dtype, shape=shape)])

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        h, w = x.shape[-2:]
        (b0, b1), (s0, s1) = self.before, self.steps()
        y = np.full(x.shape[:-2] + self.sizes(h, w), self.value, dtype=x.dtype)
        y[..., b0 : b0 + (h - 1) * s0 + 1 : s0, b1 : b1 + (w - 1) * s1 + 1 : s1] = x
        output_storage[0][0] = y

    def pullback(self, inputs, outputs, output_grads):
        (x,) = inputs
        return [Crop2d(self.before, self.steps())(output_grads[0], x)]

    def c_code_cache_version(self):
        return (2,)

    def c_code(self, node, name, inputs, outputs, sub):
        (b0, b1), (a0, a1), (m0, m1) = self.before, self.after, self.at_least
        (i0, i1), nd = self.interior, node.inputs[0].ndim
        shape = "h = sh; w = sw;" + "".join(
            f" {{ long k = {n} + ({n} > 0 ? {n} - 1 : 0) * {i} + {b + a};"
            f" dims[{nd} - {axis}] = k > {m} ? k : {m}; }}"
            for n, i, b, a, m, axis in (("sh", i0, b0, a0, m0, 2), ("sw", i1, b1, a1, m1, 1)))
        fill = (f"{{ npy_intp k, size = PyArray_SIZE({outputs[0]}); for (k = 0; k < size; ++k) "
                f"dst[k] = (dtype_{outputs[0]})({_c_literal(self.value)}); }}")
        return _C_CODE % dict(src=inputs[0], z=outputs[0], nd=nd, name=name, shape=shape,
                              fill=fill, dr=b0, dc=b1, sr=0, sc=0, ds0=i0 + 1, ds1=i1 + 1,
                              ss0=1, ss1=1, fail=sub["fail"])


class Crop2d(COp):
    """``gy[..., b0 : b0 + (h - 1) * s0 + 1 : s0, ...]``: ``(h, w)`` are ``x``'s last two axes.

    ``(b0, b1)`` is ``before``, ``(s0, s1)`` is ``step``.
    """

    __props__ = ("before", "step")

    def __init__(self, before, step=(1, 1)):
        self.before = tuple(int(b) for b in before)
        self.step = tuple(int(s) for s in step)

    def make_node(self, gy, x):
        gy, x = pt.as_tensor_variable(gy), pt.as_tensor_variable(x)
        if gy.type.ndim != x.type.ndim:
            raise ValueError(f"Crop2d: {gy.type} and {x.type} differ in dimensions")
        return Apply(self, [gy, x], [pt.tensor(dtype=gy.type.dtype, shape=x.type.shape)])

    def perform(self, node, inputs, output_storage):
        gy, x = inputs
        (b0, b1), (s0, s1), (h, w) = self.before, self.step, x.shape[-2:]
        output_storage[0][0] = np.ascontiguousarray(
            gy[..., b0 : b0 + (h - 1) * s0 + 1 : s0, b1 : b1 + (w - 1) * s1 + 1 : s1])

    def pullback(self, inputs, outputs, output_grads):
        return [grad_not_implemented(self, 0, inputs[0]),
                grad_not_implemented(self, 1, inputs[1])]

    def c_code_cache_version(self):
        return (2,)

    def c_code(self, node, name, inputs, outputs, sub):
        nd = node.inputs[0].ndim
        shape = (f"for (d = 0; d < {nd}; ++d) dims[d] = PyArray_DIMS({inputs[1]})[d]; "
                 f"h = dims[{nd} - 2]; w = dims[{nd} - 1];")
        return _C_CODE % dict(src=inputs[0], z=outputs[0], nd=nd, name=name, shape=shape,
                              fill="", dr=0, dc=0, sr=self.before[0], sc=self.before[1],
                              ds0=1, ds1=1, ss0=self.step[0], ss1=self.step[1],
                              fail=sub["fail"])
