"""Tests of :func:`deeplearning_tutorials.nnet.pool_2d` / ``max_pool_2d`` and the max-pool gradient."""

import math

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from deeplearning_tutorials.nnet import MaxPool2d, MaxPool2dGrad, max_pool_2d, numba_kernels, pool_2d
from deeplearning_tutorials.nnet.pool import max_pool_grad_numpy, max_pool_numpy

MODES = ["NUMBA", "CVM", "JAX", "C"]


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


def _modes():
    for mode in MODES:
        if mode == "JAX":
            pytest.importorskip("jax")
        yield mode


SHAPES = [(7, 9), (2, 5, 7), (2, 3, 8, 6), (1, 2, 2, 5, 4)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ws", [(2, 2), (3, 2), (1, 4)])
@pytest.mark.parametrize("ignore_border", [True, False])
def test_pool_matches_oracle_numpy_and_numba(shape, ws, ignore_border):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    ref = loop_pool(x, ws, ignore_border)
    np.testing.assert_array_equal(max_pool_numpy(x, ws, ignore_border), ref)
    x3 = x.reshape((-1,) + shape[-2:])
    np.testing.assert_array_equal(
        numba_kernels.max_pool_3d(x3, ws[0], ws[1], ignore_border), ref.reshape((-1,) + ref.shape[-2:])
    )
    gz = rng.standard_normal(ref.shape)
    gref = loop_pool_grad(x, gz, ws, ignore_border)
    np.testing.assert_array_equal(max_pool_grad_numpy(x, ref, gz, ws, ignore_border), gref)
    gz3 = gz.reshape((-1,) + gz.shape[-2:])
    np.testing.assert_array_equal(
        numba_kernels.max_pool_grad_3d(x3, ref.reshape(gz3.shape), gz3, ws[0], ws[1]), gref.reshape(x3.shape)
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ignore_border", [True, False])
def test_pool_graph_all_backends(dtype, ignore_border):
    rng = np.random.default_rng(1)
    xv = rng.standard_normal((2, 3, 7, 5)).astype(dtype)
    gzv = rng.standard_normal(loop_pool(xv, (2, 2), ignore_border).shape).astype(dtype)
    x = pt.tensor4("x", dtype=dtype)
    out = pool_2d(x, (2, 2), ignore_border=ignore_border)
    assert out.dtype == dtype
    cost = (out * pt.constant(gzv)).sum()
    gx = pytensor.grad(cost, x)
    for mode in _modes():
        o, g = pytensor.function([x], [out, gx], mode=mode)(xv)
        np.testing.assert_array_equal(np.asarray(o), loop_pool(xv, (2, 2), ignore_border), err_msg=mode)
        np.testing.assert_array_equal(np.asarray(g), loop_pool_grad(xv, gzv, (2, 2), ignore_border), err_msg=mode)


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
        np.testing.assert_array_equal(np.asarray(pytensor.function([xv], g, mode=mode)(x)), expected, err_msg=mode)
    np.testing.assert_array_equal(max_pool_grad_numpy(x, max_pool_numpy(x, (2, 2), True), gz, (2, 2), True), expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(4, 6), (5, 7)])
def test_non_finite_gradient_goes_to_the_max_only(dtype, shape):
    # "gz if x == max else 0": a diverging run's inf or NaN reaches the max
    # and nothing else (a multiplication by 0/1 would spread NaN).
    rng = np.random.default_rng(3)
    xv = rng.permutation(np.prod(shape)).reshape(shape).astype(dtype)
    x, gz = pt.matrix("x", dtype=dtype), pt.matrix("gz", dtype=dtype)
    g = MaxPool2dGrad((2, 2), True)(x, pool_2d(x, (2, 2)), gz)
    gzv = np.full(loop_pool(xv, (2, 2), True).shape, np.nan, dtype)
    gzv[0, 0] = np.inf
    expected = loop_pool_grad(xv, gzv, (2, 2), True)
    assert np.isnan(expected).sum() == gzv.size - 1 and np.isinf(expected).sum() == 1
    for mode in _modes():
        got = np.asarray(pytensor.function([x, gz], g, mode=mode)(xv, gzv))
        np.testing.assert_array_equal(got, expected, err_msg=mode)


def test_dropped_border_gets_zero_gradient():
    x = np.arange(15.0).reshape(3, 5)
    xv = pt.matrix("x")
    g = pytensor.grad(pool_2d(xv, (2, 2), ignore_border=True).sum(), xv)
    got = pytensor.function([xv], g, mode="NUMBA")(x)
    expected = np.zeros_like(x)
    expected[1, 1] = expected[1, 3] = 1.0
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("ignore_border", [True, False])
def test_verify_grad_tie_free(ignore_border):
    rng = np.random.default_rng(2)
    # A permutation keeps the values distinct and well apart, so the finite
    # differences never move the argmax.
    x = rng.permutation(2 * 3 * 5 * 7).reshape(2, 3, 5, 7).astype("float64")
    for mode in ("NUMBA", "FAST_COMPILE"):
        verify_grad(lambda a: pool_2d(a, (2, 3), ignore_border=ignore_border), [x], rng=rng, mode=mode)


def test_shapes_static_and_inferred():
    x = pt.tensor("x", shape=(500, 20, 24, 24))
    assert pool_2d(x, (2, 2)).type.shape == (500, 20, 12, 12)
    assert pool_2d(pt.tensor("y", shape=(None, 7, 9)), (2, 2), ignore_border=False).type.shape == (None, 4, 5)
    assert pool_2d(pt.tensor("y", shape=(None, 7, 9)), (2, 2), ignore_border=True).type.shape == (None, 3, 4)
    z = pt.tensor4("z")
    for ib, expected in ((True, (2, 3, 3, 2)), (False, (2, 3, 4, 3))):
        out = pool_2d(z, (2, 2), ignore_border=ib)
        shape_fn = pytensor.function([z], out.shape, mode="FAST_RUN")
        assert not any(isinstance(n.op, MaxPool2d) for n in shape_fn.maker.fgraph.toposort())
        assert tuple(shape_fn(np.zeros((2, 3, 7, 5)))) == expected
        g = pytensor.grad(out.sum(), z)
        assert tuple(g.shape.eval({z: np.zeros((2, 3, 7, 5))})) == (2, 3, 7, 5)


def test_max_pool_2d_spelling():
    x = pt.tensor4("x")
    out = max_pool_2d(x, (2, 2), ignore_border=True)
    assert isinstance(out.owner.op, MaxPool2d) and out.owner.op.ignore_border
    with pytest.warns(UserWarning, match="ignore_border"):
        legacy = max_pool_2d(x, (2, 2))
    assert legacy.owner.op.ignore_border is False


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x: pool_2d(x, (2, 2), mode="sum"), "max"),
        (lambda x: pool_2d(x, (2, 2), mode="average_inc_pad"), "max"),
        (lambda x: pool_2d(x, (0, 2)), "positive"),
        (lambda x: pool_2d(x, (2,)), "pair"),
        (lambda x: pool_2d(pt.vector("v"), (2, 2)), "2 dimensions"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(pt.tensor4("x"))


def test_grad_op_shapes():
    x = pt.tensor4("x")
    op = MaxPool2dGrad((2, 2), True)
    node = op.make_node(x, pool_2d(x, (2, 2)), pool_2d(x, (2, 2)))
    assert node.outputs[0].type == x.type


def test_realistic_lenet_pool_shapes():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 20, 24, 24))
    x[0, 0, :2, :2] = 1.5  # a tied window
    ref = loop_pool(x, (2, 2), True)
    x3 = x.reshape(-1, 24, 24)
    out3 = numba_kernels.max_pool_3d(x3, 2, 2, True)
    np.testing.assert_array_equal(out3.reshape(ref.shape), ref)
    gz = rng.standard_normal(ref.shape)
    g = numba_kernels.max_pool_grad_3d(x3, out3, gz.reshape(out3.shape), 2, 2).reshape(x.shape)
    np.testing.assert_array_equal(g, loop_pool_grad(x, gz, (2, 2), True))
    assert np.all(g[0, 0, :2, :2] == gz[0, 0, 0, 0])
