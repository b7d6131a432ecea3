"""The Numba code of :class:`.ShapeCheck` and :class:`.Full` (:mod:`.modes.numba`).

Importing this module registers it with PyTensor's Numba backend, for these two
Op types only; :mod:`deeplearning_tutorials.dispatch` imports it when a graph
holding them is compiled.
"""

import numpy as np
from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_default_op_cache_key

from deeplearning_tutorials.modes.numba import Full, ShapeCheck


@register_funcify_default_op_cache_key(ShapeCheck)
def numba_funcify_ShapeCheck(op, node=None, **kwargs):
    axes = tuple(i for i, s in enumerate(op.shape) if s is not None)
    sizes = tuple(s for s in op.shape if s is not None)
    message = op.message()
    if not axes:
        def shape_check_none(x):
            return x

        return numba_njit(shape_check_none)

    @numba_njit
    def shape_check(x):
        for k in range(len(axes)):
            if x.shape[axes[k]] != sizes[k]:
                raise AssertionError(message)
        return x

    return shape_check


@register_funcify_default_op_cache_key(Full)
def numba_funcify_Full(op, node=None, **kwargs):
    value, dtype = op.value, np.dtype(op.dtype)

    # One function per number of dimensions: Numba builds no tuple of a
    # length it does not know.
    def fill(shape):
        out = np.empty(shape, dtype=dtype)
        out.fill(value)
        return out

    fill = numba_njit(fill)

    def full_1(a):
        return fill((a.item(),))

    def full_2(a, b):
        return fill((a.item(), b.item()))

    def full_3(a, b, c):
        return fill((a.item(), b.item(), c.item()))

    def full_4(a, b, c, d):
        return fill((a.item(), b.item(), c.item(), d.item()))

    return numba_njit((full_1, full_2, full_3, full_4)[len(op.static_shape) - 1])
