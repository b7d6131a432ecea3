"""The JAX code of :class:`.DynamicSlice` and :class:`.DynamicIncSlice` (:mod:`.modes.jax`).

Importing this module registers it with PyTensor's JAX backend, for these two
Op types only; :mod:`deeplearning_tutorials.dispatch` imports it when a graph
holding them is compiled.
"""

import jax
from pytensor.link.jax.dispatch import jax_funcify

from deeplearning_tutorials.modes.jax import DynamicIncSlice, DynamicSlice


@jax_funcify.register(DynamicSlice)
def jax_funcify_DynamicSlice(op, node=None, **kwargs):
    axis, length = op.axis, op.length

    def dynamic_slice(x, start):
        return jax.lax.dynamic_slice_in_dim(x, start, length, axis=axis)

    return dynamic_slice


@jax_funcify.register(DynamicIncSlice)
def jax_funcify_DynamicIncSlice(op, node=None, **kwargs):
    axis, length, set_instead_of_inc = op.axis, op.length, op.set_instead_of_inc

    def dynamic_inc_slice(x, y, start):
        if set_instead_of_inc:
            shape = list(x.shape)
            shape[axis] = length
            window = jax.numpy.broadcast_to(y, shape)
        else:
            window = jax.lax.dynamic_slice_in_dim(x, start, length, axis=axis) + y
        return jax.lax.dynamic_update_slice_in_dim(x, window.astype(x.dtype), start, axis=axis)

    return dynamic_inc_slice
