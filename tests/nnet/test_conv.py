"""Tests of :func:`deeplearning_tutorials.nnet.conv2d` and its gradient Ops."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad
from scipy.signal import convolve2d

from deeplearning_tutorials.nnet import Conv2d, Conv2dGradFilters, Conv2dGradInputs, conv2d
from deeplearning_tutorials.nnet import numba_kernels
from deeplearning_tutorials.nnet.conv import (
    conv2d_grad_filters_numpy,
    conv2d_grad_inputs_numpy,
    conv2d_valid_numpy,
)

RTOL = {"float32": 1e-5, "float64": 1e-12}
ATOL = {"float32": 1e-5, "float64": 1e-12}


def scipy_conv(x, w):
    """The oracle: Theano's conv2d is a sum over input maps of scipy's true convolution."""
    B, C = x.shape[:2]
    F = w.shape[0]
    return np.array(
        [[sum(convolve2d(x[b, c], w[f, c], "valid") for c in range(C)) for f in range(F)] for b in range(B)]
    )


def numeric_grads(x, w, gz):
    """Gradients of sum(gz * conv(x, w)) by linearity: one oracle call per unit input."""
    gx = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = 1
        gx[idx] = (scipy_conv(e, w) * gz).sum()
    gw = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        e = np.zeros_like(w)
        e[idx] = 1
        gw[idx] = (scipy_conv(x, e) * gz).sum()
    return gx, gw


def data(rng, xs, ws, dtype="float64"):
    return rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)


SHAPES = [
    ((2, 1, 7, 9), (3, 1, 3, 2)),
    ((3, 2, 7, 9), (4, 2, 3, 2)),
    ((1, 3, 5, 5), (2, 3, 5, 5)),  # filter as large as the image: 1x1 output
    ((2, 2, 6, 4), (1, 2, 1, 1)),
]


@pytest.mark.parametrize("xs,ws", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernels_match_scipy(xs, ws, dtype):
    rng = np.random.default_rng(0)
    x, w = data(rng, xs, ws, dtype)
    ref = scipy_conv(x.astype("float64"), w.astype("float64"))
    for fn in (conv2d_valid_numpy, numba_kernels.conv2d_valid):
        out = fn(x, w)
        assert out.dtype == dtype and out.shape == ref.shape
        np.testing.assert_allclose(out, ref, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("xs,ws", SHAPES[:3])
def test_kernel_gradients_match_numeric_oracle(xs, ws):
    rng = np.random.default_rng(1)
    x, w = data(rng, xs, ws)
    gz = rng.standard_normal(scipy_conv(x, w).shape)
    gx_ref, gw_ref = numeric_grads(x, w, gz)
    for gi, gw in (
        (conv2d_grad_inputs_numpy, conv2d_grad_filters_numpy),
        (numba_kernels.conv2d_grad_inputs, numba_kernels.conv2d_grad_filters),
    ):
        np.testing.assert_allclose(gi(gz, w), gx_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gw(x, gz), gw_ref, rtol=1e-12, atol=1e-12)


def test_numba_kernels_chunk_the_batch():
    # A batch big enough to need several chunks, with an uneven last chunk.
    rng = np.random.default_rng(2)
    xs, ws = (37, 3, 30, 30), (4, 3, 5, 5)
    assert numba_kernels._chunk_size(37, 26 * 26, 75) < 37, "test must exercise chunking"
    x, w = data(rng, xs, ws)
    out = numba_kernels.conv2d_valid(x, w)
    np.testing.assert_allclose(out, conv2d_valid_numpy(x, w), rtol=1e-12, atol=1e-12)
    gz = rng.standard_normal(out.shape)
    np.testing.assert_allclose(
        numba_kernels.conv2d_grad_inputs(gz, w), conv2d_grad_inputs_numpy(gz, w), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        numba_kernels.conv2d_grad_filters(x, gz), conv2d_grad_filters_numpy(x, gz), rtol=1e-12, atol=1e-11
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv2d_graph_matches_scipy(dtype):
    rng = np.random.default_rng(3)
    x, w = data(rng, (3, 2, 7, 9), (4, 2, 3, 2), dtype)
    xv, wv = pt.tensor4("x", dtype=dtype), pt.tensor4("w", dtype=dtype)
    out = conv2d(xv, wv)
    assert out.dtype == dtype
    f = pytensor.function([xv, wv], out, mode="NUMBA")
    np.testing.assert_allclose(f(x, w), scipy_conv(x.astype("float64"), w.astype("float64")), rtol=RTOL[dtype], atol=ATOL[dtype])


def test_verify_grad():
    rng = np.random.default_rng(4)
    x, w = data(rng, (2, 2, 6, 5), (3, 2, 3, 2))
    verify_grad(lambda a, b: conv2d(a, b), [x, w], rng=np.random.default_rng(5), mode="NUMBA")
    verify_grad(lambda a, b: conv2d(a, b), [x, w], rng=np.random.default_rng(5), mode="FAST_COMPILE")


def test_grad_matches_numeric_oracle_through_graph():
    rng = np.random.default_rng(6)
    x, w = data(rng, (2, 2, 6, 5), (3, 2, 3, 2))
    gz = rng.standard_normal((2, 3, 4, 4))
    xv, wv = pt.tensor4("x"), pt.tensor4("w")
    cost = (conv2d(xv, wv) * pt.constant(gz)).sum()
    f = pytensor.function([xv, wv], pytensor.grad(cost, [xv, wv]), mode="NUMBA")
    gx, gw = f(x, w)
    gx_ref, gw_ref = numeric_grads(x, w, gz)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-12, atol=1e-12)


def test_second_order_grad_ops():
    # The gradient Ops are bilinear and differentiable themselves.
    rng = np.random.default_rng(7)
    gz, w = data(rng, (2, 3, 4, 4), (3, 2, 3, 2))
    x = rng.standard_normal((2, 2, 6, 5))
    verify_grad(lambda a, b: Conv2dGradInputs()(a, b), [gz, w], rng=rng, mode="FAST_COMPILE")
    verify_grad(lambda a, b: Conv2dGradFilters()(a, b), [x, gz], rng=rng, mode="FAST_COMPILE")


def test_static_shapes_and_infer_shape():
    x = pt.tensor4("x")
    w = pt.tensor4("w")
    out = conv2d(x, w, filter_shape=(20, 1, 5, 5), image_shape=(500, 1, 28, 28))
    assert out.type.shape == (500, 20, 24, 24)
    out2 = conv2d(x, w, filter_shape=(50, 20, 5, 5), input_shape=(None, 20, 12, 12))
    assert out2.type.shape == (None, 50, 8, 8)
    # Shape inference: the shape graph must not need the convolution itself.
    z = conv2d(x, w)
    shape_fn = pytensor.function([x, w], z.shape, mode="FAST_RUN")
    assert not any(isinstance(n.op, Conv2d) for n in shape_fn.maker.fgraph.toposort())
    assert tuple(shape_fn(np.zeros((3, 2, 9, 7)), np.zeros((5, 2, 4, 3)))) == (3, 5, 6, 5)
    assert tuple(z.shape.eval({x: np.zeros((3, 2, 9, 7)), w: np.zeros((5, 2, 4, 3))})) == (3, 5, 6, 5)
    # Static input shapes propagate without declarations.
    xs = pt.tensor("xs", shape=(4, 3, 10, 11))
    ws = pt.tensor("ws", shape=(6, 3, 3, 4))
    assert conv2d(xs, ws).type.shape == (4, 6, 8, 8)
    gx, gw = pytensor.grad(conv2d(xs, ws).sum(), [xs, ws])
    assert gx.type.shape == (4, 3, 10, 11) and gw.type.shape == (6, 3, 3, 4)


def test_declared_shape_is_checked_at_runtime():
    x, w = pt.tensor4("x"), pt.tensor4("w")
    f = pytensor.function([x, w], conv2d(x, w, filter_shape=(2, 1, 3, 3)), mode="NUMBA")
    f(np.zeros((1, 1, 5, 5)), np.zeros((2, 1, 3, 3)))
    with pytest.raises(Exception):
        f(np.zeros((1, 1, 5, 5)), np.zeros((2, 1, 2, 2)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(filter_shape=(2, 3, 3, 3), input_shape=(1, 2, 5, 5)), "feature maps"),
        (dict(filter_shape=(2, 1, 6, 3), input_shape=(1, 1, 5, 5)), "exceeds"),
        (dict(filter_shape=(2, 1, 3), input_shape=(1, 1, 5, 5)), "4 entries"),
        (dict(filter_shape=(2, 1, 0, 3)), "positive"),
        (dict(input_shape=(1, 1, 5, 5), image_shape=(2, 1, 5, 5)), "legacy"),
        (dict(border_mode="full"), "valid"),
        (dict(subsample=(2, 2)), "subsample"),
    ],
)
def test_inconsistent_declarations_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv2d(pt.tensor4("x"), pt.tensor4("w"), **kwargs)


def test_declaration_contradicting_static_shape_raises():
    w = pytensor.shared(np.zeros((2, 1, 3, 3)), shape=(2, 1, 3, 3))
    with pytest.raises(ValueError, match="static shape"):
        conv2d(pt.tensor4("x"), w, filter_shape=(2, 1, 5, 5))
    x = pt.tensor("x", shape=(None, 3, 8, 8))
    with pytest.raises(ValueError, match="feature maps"):
        conv2d(x, pt.tensor4("w"), filter_shape=(2, 1, 3, 3))
    with pytest.raises(ValueError, match="4-D"):
        conv2d(pt.matrix("x"), pt.tensor4("w"))


def test_mixed_dtypes_upcast():
    x = pt.tensor4("x", dtype="float32")
    w = pt.tensor4("w", dtype="float64")
    assert conv2d(x, w).dtype == "float64"


def _small_graph(dtype, ignore_border):
    from deeplearning_tutorials.nnet import pool_2d

    x, w = pt.tensor4("x", dtype=dtype), pt.tensor4("w", dtype=dtype)
    z = conv2d(x, w)
    p = pool_2d(z, (2, 2), ignore_border=ignore_border)
    cost = pt.tanh(p).sum()
    return [x, w], [z, p, cost, *pytensor.grad(cost, [x, w])]


BACKENDS = ["NUMBA", "CVM", "JAX", "C"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ignore_border", [True, False])
def test_backend_parity(dtype, ignore_border):
    rng = np.random.default_rng(8)
    x, w = data(rng, (3, 2, 9, 8), (4, 2, 3, 2), dtype)
    inputs, outputs = _small_graph(dtype, ignore_border)
    ref = pytensor.function(inputs, outputs, mode=pytensor.compile.mode.Mode(linker="py", optimizer="fast_run"))(x, w)
    for mode in BACKENDS:
        if mode == "JAX":
            pytest.importorskip("jax")
        fn = pytensor.function(inputs, outputs, mode=mode)
        got = fn(x, w)
        # Non-contiguous inputs take the same path after a copy.
        got_f = fn(np.asfortranarray(x), w[:, :, :, :])
        for a, b in zip(got_f, got):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=mode)
        for a, b in zip(got, ref):
            a = np.asarray(a)
            # PyTensor's JAX backend hands 0-d results back as float64 scalars.
            if not (mode == "JAX" and a.ndim == 0):
                assert a.dtype == b.dtype, mode
            np.testing.assert_allclose(a, b, rtol=10 * RTOL[dtype], atol=10 * ATOL[dtype], err_msg=mode)


# The C kernels' forward pass has two paths: direct for few taps per filter
# (C*kh*kw <= 32, LeNet5's first layer, whose 24-wide rows have their own unrolled
# loop; four filters at a time, then one at a time) and, for more, im2col + GEMM,
# or in float32 on processors with AVX-512 tiles of 4 outputs x 64 filters.
# CVM and NUMBA both run them.
C_FORWARD_SHAPES = [
    ((40, 1, 28, 28), (6, 1, 5, 5)),  # direct, the unrolled row, the batch split over threads
    ((3, 2, 7, 9), (5, 2, 3, 2)),  # direct, the general row
    ((3, 2, 9, 9), (4, 2, 5, 5)),  # 50 taps: im2col + GEMM (AVX-512: one short tile per row)
    ((2, 3, 8, 10), (70, 3, 3, 4)),  # 36 taps, two blocks of 64 filters with AVX-512
]


@pytest.mark.parametrize("xs,ws", C_FORWARD_SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_c_forward_paths_match_scipy(xs, ws, dtype):
    rng = np.random.default_rng(10)
    x, w = data(rng, xs, ws, dtype)
    ref = scipy_conv(x.astype("float64"), w.astype("float64"))
    xv, wv = pt.tensor4("x", dtype=dtype), pt.tensor4("w", dtype=dtype)
    for mode in ("CVM", "NUMBA"):
        got = pytensor.function([xv, wv], conv2d(xv, wv), mode=mode)(x, w)
        assert got.dtype == dtype, mode
        np.testing.assert_allclose(got, ref, rtol=RTOL[dtype], atol=10 * ATOL[dtype], err_msg=mode)


def _check_c_gradient(xs, ws, dtype, wrt, seed):
    """The gradient of sum(gz * conv2d(x, w)) with respect to x or w, on CVM and
    NUMBA, against the NumPy oracle in float64."""
    rng = np.random.default_rng(seed)
    x, w = data(rng, xs, ws, dtype)
    gz = rng.standard_normal((xs[0], ws[0], xs[2] - ws[2] + 1, xs[3] - ws[3] + 1)).astype(dtype)
    x64, w64, gz64 = (a.astype("float64") for a in (x, w, gz))
    ref = conv2d_grad_inputs_numpy(gz64, w64) if wrt == "x" else conv2d_grad_filters_numpy(x64, gz64)
    xv, wv, gv = (pt.tensor4(name, dtype=dtype) for name in "xwg")
    cost = (conv2d(xv, wv) * gv).sum()
    for mode in ("CVM", "NUMBA"):
        grad = pytensor.grad(cost, xv if wrt == "x" else wv)
        got = pytensor.function([xv, wv, gv], grad, mode=mode)(x, w, gz)
        assert got.dtype == dtype, mode
        np.testing.assert_allclose(got, ref, rtol=10 * RTOL[dtype], atol=100 * ATOL[dtype], err_msg=mode)


@pytest.mark.parametrize("xs,ws", C_FORWARD_SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_c_filter_gradient_paths_match_oracle(xs, ws, dtype):
    # The same shapes for the filters' gradient: direct for few taps, else im2col +
    # GEMM, or in float32 with AVX-512 tiles of 4 taps x 64 filters (50 taps: not a
    # multiple of 4; 70 filters: two blocks).
    _check_c_gradient(xs, ws, dtype, "w", seed=11)


@pytest.mark.parametrize("xs,ws", [
    ((6, 3, 12, 12), (5, 3, 5, 5)),  # output rows 8 wide: float32 with AVX-512 tiles 16 x 16
    ((5, 2, 10, 12), (3, 2, 4, 5)),  # rows 8 wide, an odd number of them: im2col + GEMM
    ((3, 2, 9, 9), (4, 2, 5, 5)),  # rows 5 wide: im2col + GEMM
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_c_input_gradient_paths_match_oracle(xs, ws, dtype):
    _check_c_gradient(xs, ws, dtype, "x", seed=12)


def test_realistic_lenet_shapes():
    # LeNet5 layer1 at a reduced batch: (b, 20, 12, 12) * (50, 20, 5, 5).
    rng = np.random.default_rng(9)
    x, w = data(rng, (40, 20, 12, 12), (50, 20, 5, 5))
    gz = rng.standard_normal((40, 50, 8, 8))
    ref = conv2d_valid_numpy(x, w)
    np.testing.assert_allclose(ref[:2], scipy_conv(x[:2], w), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(numba_kernels.conv2d_valid(x, w), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        numba_kernels.conv2d_grad_inputs(gz, w), conv2d_grad_inputs_numpy(gz, w), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        numba_kernels.conv2d_grad_filters(x, gz), conv2d_grad_filters_numpy(x, gz), rtol=1e-11, atol=1e-11
    )


def test_lesson_style_shared_filters_with_updates():
    # The tutorial's use: a reshaped minibatch, shared filters declared through
    # filter_shape/image_shape, and SGD updates of the shared variables.
    from deeplearning_tutorials.nnet import pool_2d

    rng = np.random.RandomState(23455)
    bs = 3
    x = pt.matrix("x")
    w0 = rng.uniform(-0.1, 0.1, (4, 1, 5, 5))
    W = pytensor.shared(w0.copy(), name="W")
    b = pytensor.shared(np.zeros(4), name="b")
    z = conv2d(x.reshape((bs, 1, 12, 12)), W, filter_shape=(4, 1, 5, 5), image_shape=(bs, 1, 12, 12))
    assert z.type.shape == (bs, 4, 8, 8)
    out = pt.tanh(pool_2d(z, (2, 2), ignore_border=True) + b.dimshuffle("x", 0, "x", "x"))
    cost = (out**2).mean()
    gW, gb = pytensor.grad(cost, [W, b])
    xv = rng.rand(bs, 144)
    costs = {}
    for mode in BACKENDS:
        if mode == "JAX":
            pytest.importorskip("jax")
        W.set_value(w0.copy())
        b.set_value(np.zeros(4))
        f = pytensor.function([x], cost, updates=[(W, W - 0.5 * gW), (b, b - 0.5 * gb)], mode=mode)
        costs[mode] = [float(f(xv)) for _ in range(3)]
    for mode, c in costs.items():
        np.testing.assert_allclose(c, costs["NUMBA"], rtol=1e-12, err_msg=mode)
    assert costs["NUMBA"][0] != costs["NUMBA"][2]


@pytest.mark.parametrize("name, expected", [("highest", "HIGHEST"), (" Default ", "DEFAULT"), ("high", "HIGH")])
def test_jax_conv_precision_from_the_environment(monkeypatch, name, expected):
    pytest.importorskip("jax")
    from deeplearning_tutorials.nnet import jax_kernels

    monkeypatch.setenv(jax_kernels.PRECISION_ENV, name)
    assert jax_kernels.conv_precision().name == expected


def test_jax_conv_precision_defaults_to_float32_and_refuses_nonsense(monkeypatch):
    pytest.importorskip("jax")
    from jax import lax

    from deeplearning_tutorials.nnet import conv2d, jax_kernels

    monkeypatch.delenv(jax_kernels.PRECISION_ENV, raising=False)
    assert jax_kernels.conv_precision() == lax.Precision.HIGHEST
    monkeypatch.setenv(jax_kernels.PRECISION_ENV, "tf32")
    x, w = pt.tensor4("x"), pt.tensor4("w")
    with pytest.raises(ValueError, match="DEEPLEARNING_TUTORIALS_JAX_PRECISION='tf32': choose one of highest"):
        pytensor.function([x, w], conv2d(x, w), mode="JAX")


# The JAX backend's convolutions as im2col + one matrix product ("gemm"; on a GPU by
# default), against the same oracles: forward, input and filter gradients.
JAX_GEMM_SHAPES = C_FORWARD_SHAPES + [
    ((6, 3, 12, 12), (5, 3, 5, 5)),
    ((2, 1, 5, 7), (3, 1, 5, 7)),  # filters as large as the image: one output pixel
]


@pytest.mark.parametrize("xs,ws", JAX_GEMM_SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_jax_gemm_convolutions_match_the_oracles(xs, ws, dtype, monkeypatch):
    pytest.importorskip("jax")
    from deeplearning_tutorials.nnet import jax_kernels

    monkeypatch.setenv(jax_kernels.ALGORITHM_ENV, "gemm")
    rng = np.random.default_rng(13)
    x, w = data(rng, xs, ws, dtype)
    gz = rng.standard_normal((xs[0], ws[0], xs[2] - ws[2] + 1, xs[3] - ws[3] + 1)).astype(dtype)
    x64, w64, gz64 = (a.astype("float64") for a in (x, w, gz))
    xv, wv, gv = (pt.tensor4(name, dtype=dtype) for name in "xwg")
    z = conv2d(xv, wv)
    f = pytensor.function([xv, wv, gv], [z, *pytensor.grad((z * gv).sum(), [xv, wv])], mode="JAX")
    out, gx, gw = (np.asarray(a) for a in f(x, w, gz))
    assert out.dtype == gx.dtype == gw.dtype == dtype
    np.testing.assert_allclose(out, scipy_conv(x64, w64), rtol=RTOL[dtype], atol=10 * ATOL[dtype])
    np.testing.assert_allclose(gx, conv2d_grad_inputs_numpy(gz64, w64), rtol=10 * RTOL[dtype],
                               atol=100 * ATOL[dtype])
    np.testing.assert_allclose(gw, conv2d_grad_filters_numpy(x64, gz64), rtol=10 * RTOL[dtype],
                               atol=100 * ATOL[dtype])


@pytest.mark.parametrize("setting, platform, dtype, expected", [
    (None, "cpu", "float32", "xla"), (None, "cpu", "float64", "gemm"), (None, "gpu", "float32", "gemm"),
    (None, "cuda", "float64", "gemm"), ("auto", "cpu", "float32", "xla"),
    (" GEMM ", "cpu", "float32", "gemm"), ("xla", "gpu", "float64", "xla"),
])
def test_jax_conv_algorithm_from_the_environment(monkeypatch, setting, platform, dtype, expected):
    pytest.importorskip("jax")
    from deeplearning_tutorials.nnet import jax_kernels

    if setting is None:
        monkeypatch.delenv(jax_kernels.ALGORITHM_ENV, raising=False)
    else:
        monkeypatch.setenv(jax_kernels.ALGORITHM_ENV, setting)
    assert jax_kernels.conv_algorithm(platform, dtype) == expected


@pytest.mark.parametrize("algorithm, primitive", [("gemm", "dot_general"), ("xla", "conv_general_dilated")])
def test_jax_conv_algorithm_picks_the_kernels(monkeypatch, algorithm, primitive):
    jax = pytest.importorskip("jax")
    from pytensor.link.jax.dispatch import jax_funcify

    from deeplearning_tutorials.nnet import jax_kernels

    monkeypatch.setenv(jax_kernels.ALGORITHM_ENV, algorithm)
    x, w = pt.tensor4("x"), pt.tensor4("w")
    z = conv2d(x, w)
    gx, gw = pytensor.grad(z.sum(), [x, w])
    xs, ws, zs = np.ones((2, 3, 6, 6)), np.ones((4, 3, 3, 3)), np.ones((2, 4, 4, 4))
    for var, args in ((z, (xs, ws)), (gx, (zs, ws)), (gw, (xs, zs))):
        fn = jax_funcify(var.owner.op, node=var.owner)
        prims = {e.primitive.name for e in jax.make_jaxpr(fn)(*args).eqns}
        assert primitive in prims, (var.owner.op, prims)
        assert not {"dot_general", "conv_general_dilated"} - {primitive} & prims, prims


def test_jax_conv_algorithm_refuses_nonsense(monkeypatch):
    pytest.importorskip("jax")
    from deeplearning_tutorials.nnet import jax_kernels

    monkeypatch.setenv(jax_kernels.ALGORITHM_ENV, "cudnn")
    with pytest.raises(ValueError, match="DEEPLEARNING_TUTORIALS_JAX_CONV='cudnn': choose one of auto, gemm, xla"):
        jax_kernels.conv_algorithm("cpu")
    x, w = pt.tensor4("x"), pt.tensor4("w")
    with pytest.raises(ValueError, match="DEEPLEARNING_TUTORIALS_JAX_CONV='cudnn'"):
        pytensor.function([x, w], conv2d(x, w), mode="JAX")


def test_jax_dot_takes_the_precision(monkeypatch):
    # JAX's default lets NVIDIA GPUs multiply float32 matrices in TF32; the
    # hidden and logistic layers' dot asks for float32 as the convolutions do.
    jax = pytest.importorskip("jax")
    from pytensor.link.jax.dispatch import jax_funcify
    from pytensor.tensor.math import Dot

    from deeplearning_tutorials.nnet import jax_kernels

    a = np.ones((2, 3), "float32")
    monkeypatch.delenv(jax_kernels.PRECISION_ENV, raising=False)
    assert "Precision.HIGHEST" in str(jax.make_jaxpr(jax_funcify(Dot()))(a, a.T))
    monkeypatch.setenv(jax_kernels.PRECISION_ENV, "default")
    assert "Precision.HIGHEST" not in str(jax.make_jaxpr(jax_funcify(Dot()))(a, a.T))
