"""Tests of :mod:`deeplearning_tutorials.nnet.pool`: ``pool_2d`` / ``max_pool_2d`` and the
max-pool gradient.

The oracle is a loop over the windows (:func:`loop_pool`), and, for the gradient,
Theano's rule written out (:func:`loop_pool_grad`): every input equal to its
window's maximum receives the window's upstream gradient, ties included; inputs
in dropped border rows and columns receive zero. Max pooling does no arithmetic,
so every implementation must match it exactly, in float32 and float64:

* the NumPy ``perform`` (``FAST_COMPILE``) and :func:`max_pool_numpy`;
* the C code (``c/pool.c``) in ``CVM`` and ``C``;
* the Numba kernels (``NUMBA``, and called directly);
* the JAX kernels (``JAX``, and called directly).
"""

import functools
import importlib.util
import math

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from deeplearning_tutorials.nnet import MaxPool2d, MaxPool2dGrad, max_pool_2d, pool_2d
from deeplearning_tutorials.nnet import numba as nnumba
from deeplearning_tutorials.nnet.pool import max_pool_grad_numpy, max_pool_numpy

HAS_JAX = importlib.util.find_spec("jax") is not None
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed")

DTYPES = ["float32", "float64"]

MODES = [
    pytest.param("C", True, id="C-openmp"),
    pytest.param("C", False, id="C"),
    pytest.param("CVM", True, id="CVM-openmp"),
    pytest.param("CVM", False, id="CVM"),
    pytest.param("NUMBA", None, id="NUMBA"),
    pytest.param("JAX", None, id="JAX", marks=needs_jax),
    pytest.param("FAST_COMPILE", None, id="FAST_COMPILE"),
]
MODE_NAMES = ["C", "CVM", "NUMBA", "JAX", "FAST_COMPILE"]


pytestmark = pytest.mark.usefixtures("jax_x64")


def _modes():
    return [m for m in MODE_NAMES if m != "JAX" or HAS_JAX]


# ---------------------------------------------------------------------------
# Oracles
# ---------------------------------------------------------------------------


def loop_pool(x, ws, ignore_border):
    """Oracle: explicit loops over windows of the last two axes."""
    wh, ww = ws
    H, W = x.shape[-2:]
    oh = H // wh if ignore_border else math.ceil(H / wh)
    ow = W // ww if ignore_border else math.ceil(W / ww)
    out = np.empty(x.shape[:-2] + (oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[..., i, j] = x[..., i * wh : (i + 1) * wh, j * ww : (j + 1) * ww].max(axis=(-2, -1))
    return out


def loop_pool_grad(x, gz, ws, ignore_border):
    """Oracle of Theano's rule: every input equal to its window's max gets the window's gz."""
    wh, ww = ws
    maxout = loop_pool(x, ws, ignore_border)
    gx = np.zeros_like(x)
    for i in range(maxout.shape[-2]):
        for j in range(maxout.shape[-1]):
            win = (..., slice(i * wh, (i + 1) * wh), slice(j * ww, (j + 1) * ww))
            hit = x[win] == maxout[..., i, j][..., None, None]
            gx[win] += np.where(hit, gz[..., i, j][..., None, None], 0)
    return gx


def distinct(shape, dtype, seed=0):
    """Distinct values (a permutation), so that the finite differences and the
    argmax never depend on rounding; ties are tested on their own."""
    rng = np.random.default_rng(seed)
    x = rng.permutation(int(np.prod(shape))).reshape(shape).astype(dtype) - 0.5 * np.prod(shape)
    return x.astype(dtype)


def upstream(shape, dtype, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------
# The kernels called directly
# ---------------------------------------------------------------------------


SHAPES = [(1, 1), (2, 1), (1, 7), (9, 1), (7, 9), (2, 5, 7), (2, 3, 8, 6), (1, 1, 2, 2),
          (1, 2, 2, 5, 4)]
WINDOWS = [(2, 2), (3, 2), (1, 4), (3, 3), (1, 1)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ws", WINDOWS)
@pytest.mark.parametrize("ignore_border", [True, False])
def test_numpy_and_numba_kernels_match_the_oracle(shape, ws, ignore_border):
    x = distinct(shape, "float64")
    ref = loop_pool(x, ws, ignore_border)
    np.testing.assert_array_equal(max_pool_numpy(x, ws, ignore_border), ref)
    lead = int(np.prod(shape[:-2]))
    x3 = x.reshape((lead,) + shape[-2:])
    ref3 = ref.reshape((lead,) + ref.shape[-2:])
    np.testing.assert_array_equal(nnumba.max_pool_3d(x3, ws[0], ws[1], ignore_border), ref3)
    gz = upstream(ref.shape, "float64")
    gref = loop_pool_grad(x, gz, ws, ignore_border)
    np.testing.assert_array_equal(max_pool_grad_numpy(x, ref, gz, ws, ignore_border), gref)
    np.testing.assert_array_equal(
        nnumba.max_pool_grad_3d(x3, ref3, gz.reshape(ref3.shape), ws[0], ws[1]),
        gref.reshape(x3.shape),
    )


@needs_jax
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ws", [(2, 2), (3, 2)])
@pytest.mark.parametrize("ignore_border", [True, False])
def test_jax_kernels_match_the_oracle(shape, ws, ignore_border):
    from deeplearning_tutorials.nnet import jax as njax

    x = distinct(shape, "float64")
    ref = loop_pool(x, ws, ignore_border)
    np.testing.assert_array_equal(np.asarray(njax.jax_max_pool(x, ws, ignore_border)), ref)
    gz = upstream(ref.shape, "float64")
    np.testing.assert_array_equal(
        np.asarray(njax.jax_max_pool_grad(x, ref, gz, ws, ignore_border)),
        loop_pool_grad(x, gz, ws, ignore_border),
    )


def test_realistic_lenet_pool_shapes():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 20, 24, 24))
    x[0, 0, :2, :2] = 1.5  # a tied window
    ref = loop_pool(x, (2, 2), True)
    x3 = x.reshape(-1, 24, 24)
    out3 = nnumba.max_pool_3d(x3, 2, 2, True)
    np.testing.assert_array_equal(out3.reshape(ref.shape), ref)
    gz = rng.standard_normal(ref.shape)
    g = nnumba.max_pool_grad_3d(x3, out3, gz.reshape(out3.shape), 2, 2).reshape(x.shape)
    np.testing.assert_array_equal(g, loop_pool_grad(x, gz, (2, 2), True))
    assert np.all(g[0, 0, :2, :2] == gz[0, 0, 0, 0])


# ---------------------------------------------------------------------------
# The Ops in every mode
# ---------------------------------------------------------------------------


@functools.cache
def pool_function(mode, openmp, dtype, ws, ignore_border, ndim=4):
    """``(x, gz) -> (pool_2d(x), d sum(gz * pool_2d(x)) / dx)``, no shapes declared."""
    with pytensor.config.change_flags(openmp=bool(openmp)):
        x = pt.tensor("x", dtype=dtype, shape=(None,) * ndim)
        gz = pt.tensor("gz", dtype=dtype, shape=(None,) * ndim)
        out = pool_2d(x, ws, ignore_border=ignore_border)
        gx = pytensor.grad((out * gz).sum(), x)
        fn = pytensor.function([x, gz], [out, gx], mode=mode)
    nodes = [n for n in fn.maker.fgraph.apply_nodes if isinstance(n.op, (MaxPool2d, MaxPool2dGrad))]
    assert sorted(type(n.op).__name__ for n in nodes) == ["MaxPool2d", "MaxPool2dGrad"]
    return fn


def check_pool_function(fn, x, ws, ignore_border, what=""):
    ref = loop_pool(x, ws, ignore_border)
    gz = upstream(ref.shape, x.dtype)
    out, gx = (np.asarray(a) for a in fn(x, gz))
    assert out.dtype == gx.dtype == x.dtype, what
    assert out.shape == ref.shape and gx.shape == x.shape, what
    np.testing.assert_array_equal(out, ref, err_msg=what)
    np.testing.assert_array_equal(gx, loop_pool_grad(x, gz, ws, ignore_border), err_msg=what)
    return out, gx


#: Input shapes (batch, maps, H, W): tiny, smaller than the window, wide, tall.
POOL_SHAPES = [
    pytest.param((1, 1, 1, 1), id="1x1"),
    pytest.param((1, 1, 2, 1), id="2x1"),
    pytest.param((2, 1, 1, 9), id="wide"),
    pytest.param((1, 2, 9, 1), id="tall"),
    pytest.param((2, 2, 4, 6), id="whole-windows"),
    pytest.param((2, 3, 7, 5), id="odd"),
    pytest.param((3, 4, 24, 24), id="lenet"),
]


@pytest.mark.parametrize("shape", POOL_SHAPES)
@pytest.mark.parametrize("ws", [(2, 2), (3, 2)], ids=["2x2", "3x2"])
@pytest.mark.parametrize("ignore_border", [True, False], ids=["ignore_border", "keep_border"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,openmp", MODES)
def test_pool_and_gradient_match_the_oracle_in_every_mode(mode, openmp, dtype, ignore_border,
                                                           ws, shape):
    fn = pool_function(mode, openmp, dtype, ws, ignore_border)
    x = distinct(shape, dtype)
    out, gx = check_pool_function(fn, x, ws, ignore_border)
    # A Fortran-ordered input gives the same numbers.
    again = fn(np.asfortranarray(x), np.asfortranarray(upstream(out.shape, dtype)))
    np.testing.assert_array_equal(np.asarray(again[0]), out)
    np.testing.assert_array_equal(np.asarray(again[1]), gx)


@pytest.mark.parametrize("ndim", [2, 3, 5])
@pytest.mark.parametrize("ignore_border", [True, False])
@pytest.mark.parametrize("mode,openmp", MODES)
def test_other_ranks_in_every_mode(mode, openmp, ignore_border, ndim):
    fn = pool_function(mode, openmp, "float64", (2, 2), ignore_border, ndim)
    for shape in {2: [(5, 7), (1, 1)], 3: [(3, 5, 4)], 5: [(2, 1, 3, 5, 3)]}[ndim]:
        check_pool_function(fn, distinct(shape, "float64"), (2, 2), ignore_border, shape)


# ---------------------------------------------------------------------------
# The issue: windows larger than the input, under JAX
# ---------------------------------------------------------------------------


SMALLER_THAN_WINDOW = [(1, 1, 1, 1), (2, 3, 2, 1), (2, 1, 1, 2), (1, 2, 2, 2), (2, 2, 1, 5),
                       (2, 2, 5, 2)]


@needs_jax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ignore_border", [False, True], ids=["keep_border", "ignore_border"])
@pytest.mark.parametrize("jax_mode", ["JAX", "DLT_JAX"])
def test_jax_windows_larger_than_the_input(jax_mode, ignore_border, dtype):
    # A side smaller than the window: one partial window (ignore_border=False) or
    # none (True, an empty output and a zero gradient), in JAX as in NUMBA, CVM
    # and the NumPy oracle.
    import deeplearning_tutorials.modes  # noqa: F401 (registers DLT_JAX)

    ws = (3, 3)
    x = pt.tensor4("x", dtype=dtype)
    out = pool_2d(x, ws, ignore_border=ignore_border)
    cost = (out * out).sum()
    gx = pytensor.grad(cost, x)
    fns = {mode: pytensor.function([x], [out, cost, gx], mode=mode)
           for mode in (jax_mode, "NUMBA", "CVM")}
    for shape in SMALLER_THAN_WINDOW:
        xv = distinct(shape, dtype, seed=sum(shape))
        ref = loop_pool(xv, ws, ignore_border)
        gref = loop_pool_grad(xv, 2 * ref, ws, ignore_border)
        oh = (shape[2] + 2) // 3 if not ignore_border else shape[2] // 3
        ow = (shape[3] + 2) // 3 if not ignore_border else shape[3] // 3
        assert ref.shape == shape[:2] + (oh, ow)
        if ignore_border and (shape[2] < 3 or shape[3] < 3):
            assert ref.size == 0 and not gref.any()
        results = {m: [np.asarray(a) for a in fn(xv)] for m, fn in fns.items()}
        for mode, (o, c, g) in results.items():
            what = f"{mode} {shape}"
            assert o.shape == ref.shape and g.shape == xv.shape, what
            assert o.dtype == g.dtype == dtype, what
            np.testing.assert_array_equal(o, ref, err_msg=what)
            np.testing.assert_array_equal(g, gref, err_msg=what)
            np.testing.assert_allclose(float(c), float((ref.astype("float64") ** 2).sum()),
                                       rtol=1e-6, err_msg=what)


# ---------------------------------------------------------------------------
# Theano's gradient rule
# ---------------------------------------------------------------------------


def test_ties_all_receive_the_gradient():
    # One window of four equal values, one with a tie of two, one with a single max.
    x = np.array(
        [[1.0, 1.0, 5.0, 2.0, 0.0, 3.0],
         [1.0, 1.0, 5.0, 0.0, 1.0, 2.0]]
    )
    gz = np.array([[10.0, 20.0, 30.0]])
    expected = np.array(
        [[10.0, 10.0, 20.0, 0.0, 0.0, 30.0],
         [10.0, 10.0, 20.0, 0.0, 0.0, 0.0]]
    )
    xv = pt.matrix("x")
    cost = (pool_2d(xv, (2, 2)) * pt.constant(gz)).sum()
    g = pytensor.grad(cost, xv)
    for mode in _modes():
        got = np.asarray(pytensor.function([xv], g, mode=mode)(x))
        np.testing.assert_array_equal(got, expected, err_msg=mode)
    np.testing.assert_array_equal(
        max_pool_grad_numpy(x, max_pool_numpy(x, (2, 2), True), gz, (2, 2), True), expected)
    np.testing.assert_array_equal(loop_pool_grad(x, gz, (2, 2), True), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 6), (5, 7)])
def test_non_finite_gradient_goes_to_the_max_only(dtype, shape):
    # "gz if x == max else 0": a diverging run's inf or NaN reaches the max
    # and nothing else (a multiplication by 0/1 would spread NaN).
    xv = distinct(shape, dtype, seed=3)
    x, gz = pt.matrix("x", dtype=dtype), pt.matrix("gz", dtype=dtype)
    g = MaxPool2dGrad((2, 2), True)(x, pool_2d(x, (2, 2)), gz)
    gzv = np.full(loop_pool(xv, (2, 2), True).shape, np.nan, dtype)
    gzv[0, 0] = np.inf
    expected = loop_pool_grad(xv, gzv, (2, 2), True)
    assert np.isnan(expected).sum() == gzv.size - 1 and np.isinf(expected).sum() == 1
    for mode in _modes():
        got = np.asarray(pytensor.function([x, gz], g, mode=mode)(xv, gzv))
        np.testing.assert_array_equal(got, expected, err_msg=mode)


def test_nan_inputs_pool_alike_in_every_mode():
    x = pt.matrix("x")
    out = pool_2d(x, (2, 2))
    xv = np.array([[1.0, np.nan, np.nan, 0.0],
                   [0.0, 0.0, 0.0, 2.0]])
    for mode in _modes():
        got = np.asarray(pytensor.function([x], out, mode=mode)(xv))
        # A NaN wins its window, as in NumPy's max.
        np.testing.assert_array_equal(got, [[np.nan, np.nan]], err_msg=mode)


def test_dropped_border_gets_zero_gradient():
    x = np.arange(15.0).reshape(3, 5)
    xv = pt.matrix("x")
    g = pytensor.grad(pool_2d(xv, (2, 2), ignore_border=True).sum(), xv)
    expected = np.zeros_like(x)
    expected[1, 1] = expected[1, 3] = 1.0
    for mode in _modes():
        got = pytensor.function([xv], g, mode=mode)(x)
        np.testing.assert_array_equal(np.asarray(got), expected, err_msg=mode)


@pytest.mark.parametrize("ignore_border", [True, False])
@pytest.mark.parametrize("mode", ["NUMBA", "FAST_COMPILE", "CVM"])
def test_verify_grad_tie_free(mode, ignore_border):
    rng = np.random.default_rng(2)
    # Distinct values well apart, so the finite differences never move the argmax.
    x = distinct((2, 3, 5, 7), "float64", seed=2)
    verify_grad(lambda a: pool_2d(a, (2, 3), ignore_border=ignore_border), [x], rng=rng,
                mode=mode)


def test_second_derivative_is_not_implemented():
    x = pt.matrix("x")
    g = pytensor.grad(pool_2d(x, (2, 2)).sum(), x)
    with pytest.raises(Exception, match="second derivative"):
        pytensor.grad(g.sum(), x)


# ---------------------------------------------------------------------------
# Shapes, spellings, errors
# ---------------------------------------------------------------------------


def test_static_shapes():
    x = pt.tensor("x", shape=(500, 20, 24, 24))
    assert pool_2d(x, (2, 2)).type.shape == (500, 20, 12, 12)
    y = pt.tensor("y", shape=(None, 7, 9))
    assert pool_2d(y, (2, 2), ignore_border=False).type.shape == (None, 4, 5)
    assert pool_2d(y, (2, 2), ignore_border=True).type.shape == (None, 3, 4)
    assert pool_2d(pt.tensor("s", shape=(2, 2)), (3, 3), ignore_border=True).type.shape == (0, 0)
    assert pool_2d(pt.tensor("s", shape=(2, 2)), (3, 3), ignore_border=False).type.shape == (1, 1)
    assert pool_2d(pt.tensor4("z"), (2, 2)).type.shape == (None,) * 4


@pytest.mark.parametrize("mode", ["NUMBA", "CVM", pytest.param("JAX", marks=needs_jax)])
def test_output_shape_without_declared_shapes(mode):
    z = pt.tensor4("z")
    for ib, expected in ((True, (2, 3, 3, 2)), (False, (2, 3, 4, 3))):
        out = pool_2d(z, (2, 2), ignore_border=ib)
        g = pytensor.grad(out.sum(), z)
        fn = pytensor.function([z], [out.shape, g.shape], mode=mode)
        shape, gshape = fn(np.zeros((2, 3, 7, 5)))
        assert tuple(shape) == expected and tuple(gshape) == (2, 3, 7, 5)


def test_max_pool_2d_spelling():
    x = pt.tensor4("x")
    out = max_pool_2d(x, (2, 2), ignore_border=True)
    assert isinstance(out.owner.op, MaxPool2d) and out.owner.op.ignore_border
    with pytest.warns(UserWarning, match="ignore_border"):
        legacy = max_pool_2d(x, (2, 2))
    assert legacy.owner.op.ignore_border is False
    assert pool_2d(x, (2, 2), ignore_border=None).owner.op.ignore_border is False
    assert pool_2d(x, [3, 2]).owner.op.ws == (3, 2)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x: pool_2d(x, (2, 2), mode="sum"), "max"),
        (lambda x: pool_2d(x, (2, 2), mode="average_inc_pad"), "max"),
        (lambda x: pool_2d(x, (0, 2)), "positive"),
        (lambda x: pool_2d(x, (2, True)), "positive"),
        (lambda x: pool_2d(x, (2,)), "pair"),
        (lambda x: pool_2d(x, 2), "pair"),
        (lambda x: pool_2d(pt.vector("v"), (2, 2)), "2 dimensions"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(pt.tensor4("x"))


def test_grad_op_nodes():
    x = pt.tensor4("x")
    op = MaxPool2dGrad((2, 2), True)
    node = op.make_node(x, pool_2d(x, (2, 2)), pool_2d(x, (2, 2)))
    assert node.outputs[0].type == x.type
    with pytest.raises(ValueError, match="same rank"):
        op.make_node(x, pt.matrix(), pt.matrix())
    # A float32 upstream gradient of a float64 input is cast to float64.
    node = op.make_node(x, pool_2d(x, (2, 2)), pt.tensor4(dtype="float32"))
    assert node.inputs[2].dtype == "float64"


