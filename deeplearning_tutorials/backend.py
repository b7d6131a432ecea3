"""Backend glue: let the tutorial's unchanged code compile and run well on every backend.

Importing this module (the lessons and :mod:`deeplearning_tutorials.nnet` do)
does these things to PyTensor, none of which changes a graph's results:

* it registers a rewrite that inlines ``pt.special.softmax`` /
  ``log_softmax`` for the C backends (:func:`local_inline_softmax_for_c`);
  PyTensor 3.0 runs these ``OpFromGraph`` nodes through a function compiled in
  the *global* default mode, so ``mode="CVM"`` otherwise still runs them in Numba;
* it makes ``pytensor.config.blas__ldflags`` fall back to the OpenBLAS that
  SciPy's wheel ships when PyTensor finds no BLAS and the user set none
  (:func:`configure_blas`);
* it registers the C backends' other rewrites (the likelihood's indexing,
  float32 ``tanh``, the convolution bias's gradient) and gives the mode named
  ``"C"`` a linker that compiles without debugging information
  (:class:`WholeGraphCLinker`); the other C modules go without it too, unless
  the user set compiler flags (:func:`compile_without_debugging_information`);
* it gives the mode named ``"CVM"`` a linker that compiles the per-node C
  modules in parallel, the same modules as PyTensor's serial compile
  (:mod:`deeplearning_tutorials.parallel_c`);
* it provides :func:`resolve_mode`, whose ``"JAX"`` mode keeps never-updated
  shared datasets on the JAX device between calls (:class:`DeviceJAXLinker`),
  and :func:`to_device` / :func:`to_host` for doing that by hand.

The JAX minibatch-slicing rewrite lives in
:mod:`deeplearning_tutorials.nnet.jax_givens`.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import logging
import os
import re
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytensor
from pytensor.compile import optdb
from pytensor.compile.builders import OpFromGraph
from pytensor.compile.mode import Mode, get_mode
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.rewriting.basic import copy_stack_trace, in2out, node_rewriter
from pytensor.link.jax.linker import JAXLinker
from pytensor import scalar as ps
from pytensor.graph.basic import Apply
from pytensor.link.c.basic import CLinker
from pytensor.link.c.op import COp
from pytensor.tensor.elemwise import Elemwise
from pytensor.tensor.math import Sum
from pytensor.tensor.shape import Shape_i
from pytensor.tensor.special import LogSoftmax, Softmax
from pytensor.tensor.subtensor import AdvancedIncSubtensor, AdvancedSubtensor

from deeplearning_tutorials.nnet.threads_c import UsesThreadPool
from deeplearning_tutorials.parallel_c import install_parallel_cvm
from deeplearning_tutorials import numba_ops  # (importing it registers its Numba-only rewrite)

try:  # PyTensor 3.0; later versions merged them into the Ops above, with C code.
    from pytensor.tensor.subtensor import AdvancedIncSubtensor1, AdvancedSubtensor1
except ImportError:
    AdvancedIncSubtensor1 = AdvancedSubtensor1 = None

__all__ = [
    "MODES",
    "DeviceJAXLinker",
    "WholeGraphCLinker",
    "configure_blas",
    "enable_jax_compilation_cache",
    "heap_for_large_arrays",
    "FastTanhF32",
    "SumOverBatchAndSpace",
    "BiasTanh",
    "jax_available",
    "local_inline_softmax_for_c",
    "openblas_cores",
    "resolve_mode",
    "scipy_openblas_ldflags",
    "to_device",
    "to_host",
]

_logger = logging.getLogger(__name__)

#: The mode names :func:`resolve_mode` accepts (case-insensitive).
MODES = ("NUMBA", "CVM", "C", "JAX")

JAX_INSTALL_HINT = "install the extra: pip install deeplearning_tutorials[jax]"


# --------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------


def jax_available() -> bool:
    """Return whether JAX can be imported."""
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


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
    """A :class:`~pytensor.link.jax.linker.JAXLinker` that keeps read-only shared data on the device.

    PyTensor's JAX linker passes every shared variable's storage to the jitted
    function on each call; a numpy dataset is therefore copied to the device on
    every minibatch (26 ms against 0.62 ms per LeNet step on an H100). Shared
    variables that the function updates already come back as device arrays.
    For the others this linker hands JAX a cached device copy of the value
    (see :class:`_DeviceCell`); the shared variable itself keeps its numpy
    value, so ``get_value`` and the other backends are unaffected.
    """

    def create_thunk_inputs(self, storage_map):
        from pytensor.tensor.random.type import RandomType

        enable_jax_compilation_cache()

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


def enable_jax_compilation_cache() -> str | None:
    """Keep JAX's compiled programs on disk, beside PyTensor's own compiled modules.

    PyTensor caches what its C and Numba backends compile in
    ``pytensor.config.compiledir``; this gives the JAX backend the same: JAX's
    persistent compilation cache in ``<compiledir>/jax``, so that a second run
    of the same graph skips XLA's compilation (seconds on a GPU, where XLA also
    tries several convolution algorithms). Nothing changes when the user has
    chosen a cache already (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config.update("jax_compilation_cache_dir", ...)``).

    Returns
    -------
    str or None
        The cache directory in use.
    """
    import jax

    current = os.environ.get("JAX_COMPILATION_CACHE_DIR") or getattr(
        jax.config, "jax_compilation_cache_dir", None
    )
    if current:
        return current
    path = os.path.join(pytensor.config.compiledir, "jax")
    try:
        jax.config.update("jax_compilation_cache_dir", path)
        # JAX's default keeps only programs that took a second or more to
        # compile; PyTensor keeps every module it compiles, and so do we.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    except Exception as err:  # an older JAX without the cache: compile as before
        _logger.debug("no JAX compilation cache: %s", err)
        return None
    return path


def _jax_mode() -> Mode:
    jax_mode = get_mode("JAX")
    return Mode(DeviceJAXLinker(), jax_mode.provided_optimizer)


def resolve_mode(mode=None):
    """Turn a backend name into something to pass as ``pytensor.function(..., mode=...)``.

    Parameters
    ----------
    mode : None, str or pytensor.compile.mode.Mode
        ``None`` for PyTensor's default mode (``pytensor.config.mode``); a name,
        case-insensitive: ``"NUMBA"``, ``"CVM"`` (C where an Op has C code),
        ``"C"`` or ``"JAX"``; or a ``Mode``, returned unchanged.

    Returns
    -------
    pytensor.compile.mode.Mode
        The mode. ``"JAX"`` gives PyTensor's JAX mode with a
        :class:`DeviceJAXLinker`, so never-updated shared datasets stay on the device.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the choices), or for ``"JAX"``
        when JAX is not installed.
    TypeError
        For anything that is neither ``None``, a string nor a ``Mode``.

    Examples
    --------
    >>> type(resolve_mode("cvm").linker).__name__
    'ParallelCompileVMLinker'
    """
    if isinstance(mode, Mode):
        return mode
    if mode is None:
        default = pytensor.config.mode
        if isinstance(default, str) and default.upper() == "JAX":
            return resolve_mode("JAX")
        return get_mode(None)
    if not isinstance(mode, str):
        raise TypeError(f"mode must be None, a string or a pytensor Mode, not {type(mode).__name__}")
    name = mode.strip().upper()
    if name not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)} (case-insensitive), or None")
    if name == "JAX":
        if not jax_available():
            raise ValueError(f"mode 'JAX' needs JAX, which is not installed: {JAX_INSTALL_HINT}")
        return _jax_mode()
    return get_mode(name)


def to_device(*shared_vars):
    """Put the values of shared variables on the JAX device, in their own storage.

    Use with PyTensor's plain ``mode="JAX"`` (:func:`resolve_mode` does this by
    itself). Afterwards the variables feed JAX functions with no host-to-device
    copy; ``get_value()`` returns the ``jax.Array``, and functions compiled for
    the NUMBA or C backends can no longer read them until :func:`to_host`.
    (PyTensor's JAX functions leave the shared variables they *update* in this
    state too.)

    Parameters
    ----------
    *shared_vars : SharedVariable
        The variables, typically the never-updated dataset ``shared`` arrays.

    Raises
    ------
    ValueError
        When JAX is not installed.
    """
    if not jax_available():
        raise ValueError(f"to_device needs JAX, which is not installed: {JAX_INSTALL_HINT}")
    import jax

    for var in shared_vars:
        value = var.container.storage[0]
        if not isinstance(value, jax.Array):
            var.container.storage[0] = jax.device_put(value)


def to_host(*shared_vars):
    """Bring shared variables back to numpy storage, as every backend can read.

    Parameters
    ----------
    *shared_vars : SharedVariable
        Variables left holding ``jax.Array`` values by :func:`to_device` or by a
        JAX function's updates.
    """
    for var in shared_vars:
        value = var.container.storage[0]
        if value is not None and not isinstance(value, np.ndarray | np.generic):
            var.container.storage[0] = np.asarray(value, dtype=var.type.dtype)


# --------------------------------------------------------------------------
# Softmax on the C backends
# --------------------------------------------------------------------------


@node_rewriter([Softmax, LogSoftmax])
def local_inline_softmax_for_c(fgraph, node):
    """Inline the ``Softmax`` / ``LogSoftmax`` ``OpFromGraph`` so the C backend compiles it.

    In PyTensor 3.0 these Ops run their inner graph through a function compiled
    in the *global* default mode (Numba), whatever mode the outer function was
    compiled with. Inlined, the inner graph becomes ordinary elementwise and
    reduction nodes with C code. Registered under ``"cxx_only"``, which the
    Numba and JAX linkers exclude: Numba compiles the inner graph itself and JAX
    has a dedicated ``jax.nn.softmax`` implementation. It runs in
    ``specialize``, after ``stabilize`` has turned ``log(softmax(x))`` into
    ``LogSoftmax``.
    """
    if not isinstance(node.op, OpFromGraph):
        # Newer PyTensor versions may give these Ops C code of their own.
        return None
    from pytensor.tensor.rewriting.ofg import inline_ofg_node

    outs = inline_ofg_node(node)
    copy_stack_trace(node.outputs, outs)
    return outs


optdb["specialize"].register(
    "local_inline_softmax_for_c",
    local_inline_softmax_for_c,
    "fast_run",
    "fast_compile",
    "cxx_only",
)


def _flat_pair_index(x, rows, cols):
    """The flat index of ``x[rows, cols]`` in ``x.ravel()`` (a matrix pair, :func:`numba_ops.is_matrix_pair`)."""
    import pytensor.tensor as pt
    from pytensor.raise_op import Assert

    # Shape_i, not x.shape[i]: this runs after the rewrites that would turn
    # Subtensor(Shape(x)) into Shape_i, and the whole-graph C linker cannot run
    # a Subtensor of an intermediate result (its C code reads the Python object).
    n_rows, n_cols = Shape_i(0)(x), Shape_i(1)(x)
    rows = pt.switch(pt.lt(rows, 0), rows + n_rows, rows)
    cols = pt.switch(pt.lt(cols, 0), cols + n_cols, cols)
    cols = Assert("index out of bounds in the column axis")(
        cols, pt.all(pt.ge(cols, 0) & pt.lt(cols, n_cols))
    )
    return rows.astype("int64") * n_cols + cols.astype("int64")


@node_rewriter([AdvancedSubtensor, AdvancedIncSubtensor])
def local_pair_indexing_for_c(fgraph, node):
    """Run ``x[rows, cols]`` of a matrix (and its gradient) as a flat take, which has C code.

    The negative log-likelihood picks ``log(p_y_given_x)[arange(n), y]``, an
    ``AdvancedSubtensor`` with two integer vectors, and its gradient is the
    matching ``AdvancedIncSubtensor``. PyTensor 3 gives neither Op C code, so
    the pure C linker (mode ``"C"``) cannot compile the tutorial and CVM runs
    them in Python. For a matrix ``x`` of ``n_cols`` columns the same elements
    are ``x.ravel()[rows * n_cols + cols]`` (``AdvancedSubtensor1`` and
    ``AdvancedIncSubtensor1``, with C code), once negative indices are wrapped
    as NumPy does; an ``Assert`` keeps the column check that the flat index
    would otherwise lose (a row out of range still fails in the take).
    Registered under ``"cxx_only"``, like the softmax inlining above.
    """
    import pytensor.tensor as pt

    if isinstance(node.op, AdvancedIncSubtensor):
        x, y, *indices = node.inputs
    else:
        x, *indices = node.inputs
    if not numba_ops.is_matrix_pair(node.op, x, indices):
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
            out = pt.set_subtensor(target, y) if node.op.set_instead_of_inc else pt.inc_subtensor(target, y)
        out = out.reshape((Shape_i(0)(x), Shape_i(1)(x)))
    elif AdvancedSubtensor1 is not None:
        out = AdvancedSubtensor1()(x.reshape((-1,)), flat)
    else:
        out = x.reshape((-1,))[flat]
    if out.type.broadcastable != node.outputs[0].type.broadcastable:
        return None
    copy_stack_trace(node.outputs, [out])
    return [out]


# After ``specialize``, so that no later simplification folds the explicit
# broadcast of the gradient's ``y`` back into a broadcastable one. PyTensor 3.0
# has dedicated one-index Ops (``AdvancedSubtensor1``...); later versions give
# the general Ops the same C fast path for a single index, which ``x[flat]`` uses.
optdb.register(
    "local_pair_indexing_for_c",
    in2out(local_pair_indexing_for_c),
    "fast_run",
    "cxx_only",
    position=48.7,
)


# --------------------------------------------------------------------------
# A vectorisable float32 tanh for the C backends
# --------------------------------------------------------------------------

FAST_TANHF_CODE = r"""
#ifndef DLT_FAST_TANHF_DEFINED
#define DLT_FAST_TANHF_DEFINED
#include <math.h>
/* tanh of a float32 as a rational function of degree 13/6 on [-7.905, 7.905]
   (the approximation Eigen and XLA use for float32): no call and no branch, so
   the compiler vectorises the loop around it. Measured against tanh in
   float64 on 2 million points: 0.7 ulp on average, 4.6 ulp at most (near the
   clamp, where tanh is 1 - 2.4e-7); NaN stays NaN, +-inf gives +-1. */
static inline float dlt_fast_tanhf(float x)
{
    const float c = 7.90531110763549805f;
    float x2, p, q;
    x = x > c ? c : x;
    x = x < -c ? -c : x;
    x2 = x * x;
    p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
    p = x2 * p + -8.60467152213735e-11f;
    p = x2 * p + 5.12229709037114e-08f;
    p = x2 * p + 1.48572235717979e-05f;
    p = x2 * p + 6.37261928875436e-04f;
    p = x2 * p + 4.89352455891786e-03f;
    p = x * p;
    q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
    q = x2 * q + 2.26843463243900e-03f;
    q = x2 * q + 4.89352518554385e-03f;
    return fabsf(x) < 0.0004f ? x : p / q;
}
#endif
"""


class FastTanhF32(ps.Tanh):
    """``tanh`` whose C code, for float32, is :data:`FAST_TANHF_CODE` instead of libm's ``tanhf``.

    glibc's ``tanhf`` costs about 14 ns an element here and stops the loop
    around it from being vectorised: LeNet5's float32 training step spent 23
    of its 120 ms in tanh and its gradient. Other types keep ``tanh``.
    """

    def c_code(self, node, name, inputs, outputs, sub):
        if node.inputs[0].type.dtype != "float32" or node.outputs[0].type.dtype != "float32":
            return super().c_code(node, name, inputs, outputs, sub)
        (x,), (z,) = inputs, outputs
        return f"{z} = dlt_fast_tanhf({x});"

    def c_support_code(self, **kwargs):
        return FAST_TANHF_CODE

    def c_code_cache_version(self):
        return (1,)


fast_tanh_f32 = FastTanhF32(ps.upgrade_to_float, name="fast_tanh")


def _with_fast_tanh(scalar_op):
    """``scalar_op`` with every float32 ``Tanh`` in it made a :class:`FastTanhF32`; None if it has none."""
    if type(scalar_op) is ps.Tanh:
        return fast_tanh_f32
    if not isinstance(scalar_op, ps.Composite):
        return None
    nodes = scalar_op.fgraph.toposort()
    if not any(type(n.op) is ps.Tanh and n.outputs[0].type.dtype == "float32" for n in nodes):
        return None
    inputs = [i.type() for i in scalar_op.inputs]
    memo = dict(zip(scalar_op.inputs, inputs, strict=True))
    for n in nodes:
        op = n.op
        if type(op) is ps.Tanh and n.outputs[0].type.dtype == "float32":
            op = fast_tanh_f32
        new = op.make_node(*[memo.get(i, i) for i in n.inputs])
        memo.update(zip(n.outputs, new.outputs, strict=True))
    return ps.Composite(inputs, [memo.get(o, o) for o in scalar_op.outputs])


@node_rewriter([Elemwise])
def local_fast_tanh_f32_for_c(fgraph, node):
    """Compute float32 ``tanh`` in fused C loops with :class:`FastTanhF32`.

    Registered under ``"cxx_only"`` after elemwise fusion: the Numba and JAX
    backends keep their own tanh (JAX's is already this approximation).
    """
    if not all(o.type.dtype == "float32" for o in node.outputs):
        return None
    scalar_op = _with_fast_tanh(node.op.scalar_op)
    if scalar_op is None:
        return None
    new_op = Elemwise(scalar_op, inplace_pattern=node.op.inplace_pattern)
    outs = new_op.make_node(*node.inputs).outputs
    if any(o.type != n.type for o, n in zip(outs, node.outputs, strict=True)):
        return None
    copy_stack_trace(node.outputs, outs)
    return outs


optdb.register(
    "local_fast_tanh_f32_for_c",
    in2out(local_fast_tanh_f32_for_c),
    "fast_run",
    "cxx_only",
    position=49.4,  # after elemwise fusion (49), before the in-place rewrites (50.5)
)


def _numba_available() -> bool:
    """Whether Numba (and with it PyTensor's Numba backend) can be imported."""
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def _register_numba_fast_tanh() -> bool:
    """Rewrite Numba's float32 ``tanh`` into :class:`FastTanhF32` too.

    Numba calls libm's ``tanhf`` (and ``expm1f``), which kept the float32
    training step's loops scalar: about 17 % of LeNet5's main thread. The Numba
    function (:func:`_register_numba_fast_tanh_funcify`) is the same rational
    function as :data:`FAST_TANHF_CODE`, operation for operation in float32 and
    rounded as there. Returns False when Numba is not installed.
    """
    if not _numba_available():
        return False
    optdb.register(
        "local_fast_tanh_f32_for_numba",
        in2out(local_fast_tanh_f32_for_c),
        "numba",
        position=49.4,
    )
    return True


def _register_numba_fast_tanh_funcify():
    """The Numba function of :class:`FastTanhF32` (imports Numba)."""
    from pytensor.link.numba.dispatch import basic as numba_basic
    from pytensor.link.numba.dispatch.basic import register_funcify_and_cache_key
    from pytensor.link.numba.dispatch.scalar import scalar_op_cache_key

    f32 = np.float32
    clamp = f32(7.90531110763549805)
    a13, a11, a9 = f32(-2.76076847742355e-16), f32(2.00018790482477e-13), f32(-8.60467152213735e-11)
    a7, a5, a3 = f32(5.12229709037114e-08), f32(1.48572235717979e-05), f32(6.37261928875436e-04)
    a1 = f32(4.89352455891786e-03)
    b6, b4, b2 = f32(1.19825839466702e-06), f32(1.18534705686654e-04), f32(2.26843463243900e-03)
    b0 = f32(4.89352518554385e-03)
    tiny = f32(0.0004)

    @register_funcify_and_cache_key(FastTanhF32)
    def numba_funcify_FastTanhF32(op, node, **kwargs):
        if node.inputs[0].type.dtype != "float32" or node.outputs[0].type.dtype != "float32":

            @numba_basic.numba_njit
            def tanh(x):
                return np.tanh(x)

            return tanh, scalar_op_cache_key(op, cache_version=1, dtype="other")

        # None of PyTensor's default fast-math flags: the C version's operations,
        # rounded as they are there (no fused multiply-adds, an exact division),
        # so that a saturated input gives exactly +-1.
        @numba_basic.numba_njit(fastmath=False)
        def fast_tanh(x):
            x = clamp if x > clamp else x
            x = -clamp if x < -clamp else x
            x2 = x * x
            p = x2 * a13 + a11
            p = x2 * p + a9
            p = x2 * p + a7
            p = x2 * p + a5
            p = x2 * p + a3
            p = x2 * p + a1
            p = x * p
            q = x2 * b6 + b4
            q = x2 * q + b2
            q = x2 * q + b0
            return x if abs(x) < tiny else p / q

        return fast_tanh, scalar_op_cache_key(op, cache_version=3, dtype="float32")


_register_numba_fast_tanh()


# --------------------------------------------------------------------------
# The bias gradient of a convolutional layer in C
# --------------------------------------------------------------------------


class SumOverBatchAndSpace(UsesThreadPool, COp):
    """``x.sum(axis=(0, 2, 3))`` of a 4-D array, accumulated in float64, in the input's dtype.

    This is the gradient of a convolutional layer's bias (``b.dimshuffle('x',
    0, 'x', 'x')``). PyTensor's C reduction walks these axes one element at a
    time (3.3 ms for LeNet5's first layer, float32); this one sums each
    contiguous image plane into eight running sums, which the compiler keeps in
    vector registers (0.2 ms; one running sum took 1.3 ms).
    Same float64 accumulator as PyTensor's ``Sum{acc=float64}``; only the
    order of the additions differs.
    """

    __props__ = ()

    def make_node(self, x):
        import pytensor.tensor as pt

        x = pt.as_tensor_variable(x)
        if x.ndim != 4 or x.type.dtype not in ("float32", "float64"):
            raise TypeError("SumOverBatchAndSpace takes a 4-D float32 or float64 tensor")
        out = pt.tensor(dtype=x.type.dtype, shape=(x.type.shape[1],))
        return Apply(self, [x], [out])

    def perform(self, node, inputs, outputs):
        (x,) = inputs
        outputs[0][0] = np.asarray(x.sum(axis=(0, 2, 3), dtype="float64"), dtype=x.dtype)

    def infer_shape(self, *args):
        # (fgraph, node, shapes) before PyTensor 3.3, (node, shapes) after.
        node, shapes = args[-2:]
        return [(shapes[0][1],)]

    def c_code_cache_version(self):
        from deeplearning_tutorials.nnet import conv_c

        return (4, *conv_c.C_CODE_VERSION)

    def c_support_code(self, **kwargs):
        from deeplearning_tutorials.nnet import conv_c, threads_c

        return (threads_c.THREADS_CODE + conv_c._kernels(_SUM_TEMPLATE, "float", "f32")
                + conv_c._kernels(_SUM_TEMPLATE, "double", "f64"))

    def c_code(self, node, name, inputs, outputs, sub):
        from deeplearning_tutorials.nnet.conv_c import _CTYPE, PARALLEL_MIN_ELEMENTS, _alloc_output, _sfx

        (x,), (z,) = inputs, outputs
        sfx, dtype = _sfx(node)
        ctype = _CTYPE[dtype]
        fail = sub["fail"]
        alloc = _alloc_output(z, 1, "(&C)", f"NPY_{dtype.upper()}", f"Py_DECREF(cx); {fail}")
        return f"""
        {{
            PyArrayObject* cx = PyArray_GETCONTIGUOUS({x});
            npy_intp C;
            dlt_sum_bhw_{sfx} a;
            if (cx == NULL) {{ {fail} }}
            C = PyArray_DIMS(cx)[1];
            {alloc}
            a.x = ({ctype}*)PyArray_DATA(cx);
            a.z = ({ctype}*)PyArray_DATA({z});
            a.B = PyArray_DIMS(cx)[0];
            a.C = C;
            a.HW = PyArray_DIMS(cx)[2] * PyArray_DIMS(cx)[3];
            dlt_parallel(dlt_sum_bhw_task_{sfx}, &a,
                         a.B * a.C * a.HW >= {PARALLEL_MIN_ELEMENTS} ? a.C : 1);
            Py_DECREF(cx);
        }}
        """


_SUM_TEMPLATE = r"""
#ifndef DLT_SUM_BHW_SFX_DEFINED
#define DLT_SUM_BHW_SFX_DEFINED
typedef struct { const DLT_T* x; DLT_T* z; long B, C, HW; } dlt_sum_bhw_SFX;
/* Channels lo..hi of z = x.sum(axis=(0, 2, 3)) of x (B, C, HW). */
static void dlt_sum_bhw_task_SFX(void* arg, int part, int nparts)
{
    const dlt_sum_bhw_SFX* a = (const dlt_sum_bhw_SFX*)arg;
    long lo, hi, b, c, k;
    dlt_split(a->C, part, nparts, &lo, &hi);
    for (c = lo; c < hi; ++c) {
        /* Eight running sums: one chain of dependent additions would wait for
           each, four times slower than the memory. */
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (b = 0; b < a->B; ++b) {
            const DLT_T* plane = a->x + (b * a->C + c) * a->HW;
            for (k = 0; k + 8 <= a->HW; k += 8) {
                int q;
                for (q = 0; q < 8; ++q) acc[q] += (double)plane[k + q];
            }
            for (; k < a->HW; ++k) acc[k % 8] += (double)plane[k];
        }
        a->z[c] = (DLT_T)(((acc[0] + acc[1]) + (acc[2] + acc[3]))
                          + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
    }
}
#endif
"""


@node_rewriter([Sum])
def local_bias_grad_sum_for_c(fgraph, node):
    """Replace ``Sum{axes=(0, 2, 3), acc=float64}`` of a float 4-D array by :class:`SumOverBatchAndSpace`."""
    op = node.op
    (x,) = node.inputs
    dtype = x.type.dtype
    if x.ndim != 4 or dtype not in ("float32", "float64") or node.outputs[0].type.dtype != dtype:
        return None
    if tuple(sorted(op.axis or ())) != (0, 2, 3) or op.acc_dtype != "float64":
        return None
    out = SumOverBatchAndSpace()(x)
    if out.type != node.outputs[0].type:
        return None
    copy_stack_trace(node.outputs, [out])
    return [out]


optdb.register(
    "local_bias_grad_sum_for_c",
    in2out(local_bias_grad_sum_for_c),
    "fast_run",
    "cxx_only",
    position=49.45,
)


# --------------------------------------------------------------------------
# A convolutional layer's output: tanh(pooled + bias), image plane by plane
# --------------------------------------------------------------------------

_BIAS_TANH_TEMPLATE = r"""
#ifndef DLT_BIAS_TANH_SFX_DEFINED
#define DLT_BIAS_TANH_SFX_DEFINED
typedef struct { const DLT_T* x; const DLT_T* b; DLT_T* z; long B, C, HW; } dlt_bias_tanh_SFX;
static void dlt_bias_tanh_task_SFX(void* arg, int part, int nparts)
{
    const dlt_bias_tanh_SFX* a = (const dlt_bias_tanh_SFX*)arg;
    long lo, hi, m, k;
    dlt_split(a->B * a->C, part, nparts, &lo, &hi);
    for (m = lo; m < hi; ++m) {
        const DLT_T bias = a->b[m % a->C];
        const DLT_T* x = a->x + m * a->HW;
        DLT_T* z = a->z + m * a->HW;
        for (k = 0; k < a->HW; ++k) z[k] = TANH(x[k] + bias);
    }
}
#endif
"""


class BiasTanh(UsesThreadPool, COp):
    """``tanh(x + b)`` of a 4-D ``x`` and a ``b`` broadcast over axes 0, 2 and 3.

    A convolutional layer's output (``T.tanh(pooled_out + self.b.dimshuffle('x', 0, 'x',
    'x'))``). PyTensor's fused loop walks the four axes with the bias broadcast along
    three of them, and its inner loop (12 or 4 elements in LeNet5) does not vectorise: 2.5
    ms for the first layer (float32). This one runs each image plane as one contiguous
    loop, on every core (:mod:`deeplearning_tutorials.nnet.threads_c`): 0.2 ms. The
    arithmetic is the same: the sum in the input's type, then :data:`FAST_TANHF_CODE` for
    float32 or the C library's ``tanh`` for float64.
    """

    __props__ = ()

    def make_node(self, x, b):
        import pytensor.tensor as pt

        x, b = pt.as_tensor_variable(x), pt.as_tensor_variable(b)
        if x.ndim != 4 or b.ndim != 4 or x.type.dtype not in ("float32", "float64"):
            raise TypeError("BiasTanh takes a 4-D float32 or float64 x and a 4-D b")
        if b.type.dtype != x.type.dtype or b.type.broadcastable != (True, False, True, True):
            raise TypeError("BiasTanh: b must be x's dtype, broadcastable as (1, C, 1, 1)")
        return Apply(self, [x, b], [x.type()])

    def perform(self, node, inputs, outputs):
        x, b = inputs
        outputs[0][0] = np.tanh(x + b).astype(x.dtype, copy=False)

    def infer_shape(self, *args):
        node, shapes = args[-2:]
        return [shapes[0]]

    def c_code_cache_version(self):
        from deeplearning_tutorials.nnet import conv_c

        return (1, *conv_c.C_CODE_VERSION)

    def c_support_code(self, **kwargs):
        from deeplearning_tutorials.nnet import conv_c, threads_c

        return (
            threads_c.THREADS_CODE
            + FAST_TANHF_CODE
            + conv_c._kernels(_BIAS_TANH_TEMPLATE.replace("TANH(", "dlt_fast_tanhf("), "float", "f32")
            + conv_c._kernels(_BIAS_TANH_TEMPLATE.replace("TANH(", "tanh("), "double", "f64")
        )

    def c_code(self, node, name, inputs, outputs, sub):
        from deeplearning_tutorials.nnet.conv_c import _CTYPE, PARALLEL_MIN_ELEMENTS, _alloc_output, _sfx

        (x, b), (z,) = inputs, outputs
        sfx, dtype = _sfx(node)
        ctype = _CTYPE[dtype]
        fail = sub["fail"]
        alloc = _alloc_output(z, 4, "PyArray_DIMS(cx)", f"NPY_{dtype.upper()}",
                              "goto dlt_bt_fail_" + name + ";")
        return f"""
        {{
            PyArrayObject* cx = PyArray_GETCONTIGUOUS({x});
            PyArrayObject* cb = PyArray_GETCONTIGUOUS({b});
            int ok = 0;
            if (cx == NULL || cb == NULL) goto dlt_bt_fail_{name};
            if (PyArray_DIMS(cb)[1] != PyArray_DIMS(cx)[1]) {{
                PyErr_SetString(PyExc_ValueError, "BiasTanh: b and x have different channel counts");
                goto dlt_bt_fail_{name};
            }}
            {alloc}
            {{
                dlt_bias_tanh_{sfx} a;
                a.x = ({ctype}*)PyArray_DATA(cx);
                a.b = ({ctype}*)PyArray_DATA(cb);
                a.z = ({ctype}*)PyArray_DATA({z});
                a.B = PyArray_DIMS(cx)[0];
                a.C = PyArray_DIMS(cx)[1];
                a.HW = PyArray_DIMS(cx)[2] * PyArray_DIMS(cx)[3];
                dlt_parallel(dlt_bias_tanh_task_{sfx}, &a,
                             a.B * a.C * a.HW >= {PARALLEL_MIN_ELEMENTS} ? a.B * a.C : 1);
            }}
            ok = 1;
          dlt_bt_fail_{name}:
            Py_XDECREF(cx);
            Py_XDECREF(cb);
            if (!ok) {{ {fail} }}
        }}
        """


def _is_bias_tanh(scalar_op):
    """Whether ``scalar_op`` computes tanh(i0 + i1) (its tanh PyTensor's or the fast one)."""
    if not isinstance(scalar_op, ps.Composite) or len(scalar_op.inputs) != 2:
        return False
    nodes = scalar_op.fgraph.toposort()
    if len(nodes) != 2 or len(scalar_op.outputs) != 1:
        return False
    add, tanh = nodes
    return (
        type(add.op) is ps.Add
        and set(add.inputs) == set(scalar_op.inputs)
        and len(add.inputs) == 2
        and isinstance(tanh.op, ps.Tanh)
        and list(tanh.inputs) == [add.outputs[0]]
        and tanh.outputs[0] is scalar_op.outputs[0]
    )


@node_rewriter([Elemwise])
def local_bias_tanh_for_c(fgraph, node):
    """Replace a fused ``tanh(x + b)`` of a 4-D ``x`` and a (1, C, 1, 1) ``b`` by :class:`BiasTanh`."""
    if len(node.inputs) != 2 or not _is_bias_tanh(node.op.scalar_op):
        return None
    out = node.outputs[0]
    if out.ndim != 4 or out.type.dtype not in ("float32", "float64"):
        return None
    pattern = (True, False, True, True)
    x, b = node.inputs
    if b.type.broadcastable != pattern:
        x, b = b, x
    if b.type.broadcastable != pattern or any(x.type.broadcastable):
        return None
    if x.type.dtype != out.type.dtype or b.type.dtype != out.type.dtype:
        return None
    new = BiasTanh()(x, b)
    if new.type != out.type:
        return None
    copy_stack_trace(node.outputs, [new])
    return [new]


optdb.register(
    "local_bias_tanh_for_c",
    in2out(local_bias_tanh_for_c),
    "fast_run",
    "cxx_only",
    position=49.42,  # after the fast float32 tanh (49.4), before the in-place rewrites
)


def _register_numba_c_rewrites() -> bool:
    """The rewrites that put :class:`BiasTanh` and :class:`SumOverBatchAndSpace` in Numba graphs.

    Their Numba functions (:func:`register_numba_funcify`) call the same C code as
    the C backends, from the library of :mod:`deeplearning_tutorials.nnet.numba_c`;
    the rewrites run under the Numba backend only when that library loads
    (PyTensor's own fused loop and reduction otherwise). Returns False when Numba is
    not installed.
    """
    if not _numba_available():
        return False
    from deeplearning_tutorials.nnet import numba_c

    def with_library(rewrite, tracks):
        @node_rewriter(tracks)
        def rewrite_for_numba(fgraph, node):
            # The match first: a graph without these nodes (the first two lessons')
            # does not need the library built or loaded.
            new = rewrite.transform(fgraph, node)
            return new if new and numba_c.load() else None

        rewrite_for_numba.__name__ = rewrite.__name__.replace("_for_c", "_for_numba")
        return rewrite_for_numba

    for rewrite, tracks, position in ((local_bias_grad_sum_for_c, [Sum], 49.45),
                                      (local_bias_tanh_for_c, [Elemwise], 49.42)):
        numba_rewrite = with_library(rewrite, tracks)
        optdb.register(numba_rewrite.__name__, in2out(numba_rewrite), "numba", position=position)
    return True


def register_numba_funcify():
    """The Numba functions of this module's Ops: :class:`FastTanhF32`, :class:`BiasTanh`, :class:`SumOverBatchAndSpace`.

    Called by :func:`deeplearning_tutorials.nnet.register_numba` the first time
    PyTensor's Numba backend compiles a graph (it imports Numba).
    """
    _register_numba_fast_tanh_funcify()
    from pytensor.link.numba.dispatch.basic import (
        numba_njit,
        register_funcify_default_op_cache_key,
    )

    from deeplearning_tutorials.nnet import numba_kernels as nk

    @register_funcify_default_op_cache_key(BiasTanh)
    def numba_funcify_BiasTanh(op, node=None, **kwargs):
        kernel, salt = nk.kernel_and_salt(nk.c_bias_tanh, nk.bias_tanh)

        @numba_njit
        def bias_tanh(x, b):
            return kernel(x, b)

        return bias_tanh, salt

    @register_funcify_default_op_cache_key(SumOverBatchAndSpace)
    def numba_funcify_SumOverBatchAndSpace(op, node=None, **kwargs):
        kernel, salt = nk.kernel_and_salt(nk.c_sum_over_batch_and_space,
                                          nk.sum_over_batch_and_space)

        @numba_njit
        def sum_over_batch_and_space(x):
            return kernel(x)

        return sum_over_batch_and_space, salt


_register_numba_c_rewrites()


# --------------------------------------------------------------------------
# BLAS for the C backend
# --------------------------------------------------------------------------


def _scipy_openblas_library() -> tuple[Path, str] | None:
    """Locate an LP64 OpenBLAS whose symbols carry the ``scipy_`` prefix.

    Returns
    -------
    (Path, str) or None
        The shared library and the symbol prefix.
    """
    try:
        import scipy_openblas32  # type: ignore[import-not-found]

        lib_dir = Path(scipy_openblas32.get_lib_dir())
        prefix = scipy_openblas32.get_symbol_prefix() if hasattr(scipy_openblas32, "get_symbol_prefix") else "scipy_"
        for path in sorted(lib_dir.glob("libscipy_openblas*.so*")):
            if "64" not in path.name:
                return path, prefix
    except ImportError:
        pass
    try:
        import scipy
    except ImportError:
        return None
    libs = Path(scipy.__file__).resolve().parent.parent / "scipy.libs"
    # libscipy_openblas64_* is the ILP64 build (64-bit integers); PyTensor's
    # C code declares the LP64 Fortran interface, so only the plain one fits.
    for name in sorted(glob.glob(str(libs / "libscipy_openblas-*.so"))):
        return Path(name), "scipy_"
    return None


def _blas_symbol_names() -> list[str]:
    """The Fortran BLAS routines PyTensor's C code declares (``dgemm_``, ...)."""
    import importlib

    # The module moved between PyTensor 3.0 and 3.3.
    for name in ("pytensor.tensor.blas_headers", "pytensor.tensor.blas.c_code.blas_headers"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        source = Path(module.__file__).read_text(encoding="utf-8")
        return sorted(set(re.findall(r"\b([a-z][a-z0-9]*_)\s*\(", source)))
    # Unknown layout: the routines PyTensor's Gemm, Gemv, Ger and Dot C code calls.
    return [f"{t}{r}_" for t in "sd" for r in ("gemm", "gemv", "ger", "dot", "scal", "axpy", "copy")]


def scipy_openblas_ldflags() -> str:
    """Build ``blas__ldflags`` for SciPy's bundled OpenBLAS, or ``""`` when it is unusable.

    The library exports ``scipy_dgemm_`` where PyTensor's C code calls
    ``dgemm_``, so the flags rename each routine with ``-D`` and link the
    library by its file name, with an rpath to its directory. The flags are
    returned only if PyTensor's own probe (compiling and running a ``ddot_``
    call) succeeds with them.

    Returns
    -------
    str
        The flags, or ``""``.
    """
    found = _scipy_openblas_library()
    if found is None:
        return ""
    path, prefix = found
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return ""
    renames = [f"-D{name}={prefix}{name}" for name in _blas_symbol_names() if hasattr(lib, prefix + name)]
    if not any(r.startswith("-Ddgemm_=") for r in renames):
        return ""
    libname = path.name[3:].split(".so")[0]
    flags = [f"-L{path.parent}", f"-l{libname}", f"-Wl,-rpath,{path.parent}", *renames]
    if any(" " in f for f in flags):
        return ""  # PyTensor splits the flags with shlex; keep clear of quoting
    try:
        from pytensor.link.c.cmodule import try_blas_flag

        return try_blas_flag(flags)
    except Exception as err:  # a failed probe must leave PyTensor as it was
        _logger.debug("SciPy OpenBLAS probe failed: %s", err)
        return ""


def _user_set_blas_flags() -> bool:
    try:
        pytensor.config.fetch_val_for_key("blas__ldflags")
    except KeyError:
        return False
    except Exception:
        return True
    return True


def _blas_default_with_fallback(original_default):
    """Wrap PyTensor's BLAS detection: its answer first, SciPy's OpenBLAS when it finds none."""

    def default() -> str:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            flags = original_default() if callable(original_default) else original_default
        if not flags:
            flags = scipy_openblas_ldflags()
        if not flags:
            for w in caught:  # nothing found: show PyTensor's own warning after all
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        else:
            for w in caught:
                if "could not link to a BLAS" not in str(w.message):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return flags

    default._deeplearning_tutorials = True
    return default


def configure_blas() -> None:
    """Give the C backend a BLAS when the user has not chosen one.

    Leaves ``pytensor.config.blas__ldflags`` alone when it is set through
    ``PYTENSOR_FLAGS`` or ``.pytensorrc``. Otherwise PyTensor's own detection
    runs as usual, lazily, the first time a C Op needs BLAS, and only if it
    finds nothing are :func:`scipy_openblas_ldflags` used; if their probe
    compile fails too, the flags stay empty as before. Set
    ``DLT_NO_BLAS_FALLBACK=1`` to skip all of this.
    """
    if os.environ.get("DLT_NO_BLAS_FALLBACK"):
        return
    if _user_set_blas_flags():
        return
    config = pytensor.config
    param = getattr(config, "_config_var_dict", {}).get("blas__ldflags")
    if param is not None and not getattr(param, "is_default", True):
        # PyTensor read a user value (PYTENSOR_FLAGS or .pytensorrc) when it
        # registered the flag, and dropped it from the flags it still holds.
        return
    if param is not None and not hasattr(param, "val") and hasattr(param, "_default"):
        if not getattr(param._default, "_deeplearning_tutorials", False):
            param._default = _blas_default_with_fallback(param._default)
        return
    # The value is already computed (or PyTensor's internals differ): fill it now if empty.
    try:
        if not config.blas__ldflags:
            flags = scipy_openblas_ldflags()
            if flags:
                config.blas__ldflags = flags
    except Exception as err:
        _logger.debug("could not configure BLAS: %s", err)


configure_blas()


def openblas_cores() -> dict[str, str]:
    """``{library file name: kernel set}`` for each OpenBLAS loaded in this process.

    OpenBLAS picks its kernels (``"Haswell"``, ``"SkylakeX"``, ...) from the processor when
    it is loaded, unless ``$OPENBLAS_CORETYPE`` names them. On the 2-core AMD Zen 5
    machines this port was measured on, the AVX-512 ``SkylakeX`` kernels run ``sgemm`` at
    430 GFLOP/s and the AVX2 ``Haswell`` ones at 239, so which one a run got matters for
    every CPU figure; :mod:`benchmarks.bench_lenet5` prints it. Read through
    ``openblas_get_corename`` (with SciPy's ``scipy_`` symbol prefix, or none) from the
    libraries in ``/proc/self/maps``; empty where that cannot be read (not Linux).
    """
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = sorted({fields[-1] for fields in (line.split() for line in maps)
                            if len(fields) >= 6 and fields[-1].startswith("/")
                            and "openblas" in os.path.basename(fields[-1]).lower()})
    except OSError:
        return {}
    cores = {}
    for path in paths:
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        for symbol in ("scipy_openblas_get_corename", "openblas_get_corename",
                       "scipy_openblas_get_corename64_", "openblas_get_corename64_"):
            fn = getattr(lib, symbol, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                fn.argtypes = []
                cores[os.path.basename(path)] = (fn() or b"?").decode("ascii", "replace").strip()
                break
    return cores


def _install_device_jax_mode() -> None:
    """Make the mode named ``"JAX"`` the device-resident one, wherever it is asked for.

    The tutorial never names a mode in ``pytensor.function``: the mode comes from
    ``pytensor.config.mode`` (``--mode JAX``, ``PYTENSOR_FLAGS=mode=JAX``) or from
    ``function(..., mode="JAX")``, both looked up by name in PyTensor's table of
    predefined modes. Putting the :class:`DeviceJAXLinker` mode there gives every
    one of them device-resident datasets, with the same results as before.
    """
    from pytensor.compile import mode as mode_module

    if not isinstance(mode_module.predefined_modes["JAX"].linker, DeviceJAXLinker):
        mode_module.predefined_modes["JAX"] = _jax_mode()


_install_device_jax_mode()


class WholeGraphCLinker(CLinker):
    """PyTensor's whole-graph C linker, compiling without debugging information.

    Mode ``"C"`` compiles a whole function into one C module: one compiler run,
    against CVM's one per distinct node (about 70 for LeNet5's two functions, each
    paying again for Python's and NumPy's headers). PyTensor asks the compiler for
    debugging information (``-g``); for a module of this size that is about half
    of the compile time (LeNet5's training function: 9.1 s with it, 5.1 s
    without), so this linker adds ``-g0``, which overrides it. The code generated
    and its optimisation (``-O3``) are unchanged. ``-g0`` is part of the module's
    cache key, so modules compiled with ``-g`` are not mixed up with these.
    """

    def compile_args(self):
        return [*super().compile_args(), "-g0"]


def _install_whole_graph_c_mode() -> None:
    """Make the mode named ``"C"`` compile through :class:`WholeGraphCLinker`."""
    from pytensor.compile import mode as mode_module

    current = mode_module.predefined_modes.get("C")
    if current is not None and not isinstance(current.linker, WholeGraphCLinker):
        mode_module.predefined_modes["C"] = Mode(WholeGraphCLinker(), current.provided_optimizer)


_install_whole_graph_c_mode()
install_parallel_cvm()


def compile_without_debugging_information() -> None:
    """Compile PyTensor's C modules without ``-g``, unless the user chose compiler flags.

    PyTensor asks the compiler for debugging information (``-g``) in every C
    module. ``CVM`` compiles one module per distinct node, about 70 for LeNet5,
    and the debugging information is a seventh of that cold compile (the float32
    functions: 29.4 s with it, 25.3 s without, on two cores). ``-g0`` in
    ``gcc__cxxflags`` comes after PyTensor's ``-g`` on the command line and
    overrides it; the code and its optimisation are unchanged, and the flags are
    part of each module's cache key. A user who set ``gcc__cxxflags``
    (``PYTENSOR_FLAGS`` or ``.pytensorrc``; ``-g`` keeps the information), or
    changed it before this import, keeps exactly that.
    """
    try:
        pytensor.config.fetch_val_for_key("gcc__cxxflags")
        return  # the user's own flags
    except KeyError:
        pass
    except Exception:
        return
    if not pytensor.config.gcc__cxxflags.strip():
        pytensor.config.gcc__cxxflags = "-g0"


compile_without_debugging_information()


# --------------------------------------------------------------------------
# Large arrays from the heap during a run
# --------------------------------------------------------------------------

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# After a run: glibc's default count of mmap'd blocks, and the thresholds its
# adaptive rule reaches once a program has freed large arrays (any mallopt call
# switches that rule off, so a "default" of 128 KiB would be worse than before).
_AFTER_MMAP_MAX = 65536
_AFTER_MMAP_THRESHOLD = 32 * 1024 * 1024
_AFTER_TRIM_THRESHOLD = 64 * 1024 * 1024

#: Set this environment variable to leave the C library's allocator alone.
NO_HEAP_ARRAYS_ENV = "DLT_NO_HEAP_ARRAYS"


def _glibc():
    """The C library, if it is glibc (it has ``mallopt`` and ``malloc_trim``); else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


_heap_depth = 0


@contextlib.contextmanager
def heap_for_large_arrays():
    """Serve large allocations from the heap, and keep freed memory, while the block runs.

    glibc gives every allocation of more than 32 MiB (and, until its threshold
    has adapted, of more than 128 KiB) fresh pages from ``mmap`` and returns them
    at ``free``. The Numba backend allocates every intermediate array anew at
    each call, and LeNet5's run to 46 MB in float64, so each minibatch touched
    them again page by page: the first layer's pooling gradient took 32 ms
    instead of 4 ms. Inside this block ``mallopt`` turns ``mmap`` off and
    stops the heap from being trimmed, so freed blocks are reused. On leaving,
    blocks over 32 MiB get ``mmap`` again and the heap is trimmed above 64 MiB
    (the thresholds glibc's adaptive rule reaches once a program has freed large
    arrays; any ``mallopt`` call switches that rule off), and ``malloc_trim``
    returns what is free. The memory a run holds stays at its peak until then.
    Nested blocks are fine.

    Does nothing where the C library is not glibc, or when the environment
    variable ``DLT_NO_HEAP_ARRAYS`` is set.
    """
    global _heap_depth
    libc = None if os.environ.get(NO_HEAP_ARRAYS_ENV) else _glibc()
    if libc is None:
        yield
        return
    if _heap_depth == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    _heap_depth += 1
    try:
        yield
    finally:
        _heap_depth -= 1
        if _heap_depth == 0:
            libc.mallopt(_M_MMAP_MAX, _AFTER_MMAP_MAX)
            libc.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM_THRESHOLD)
            libc.malloc_trim(0)
