"""Tests of :mod:`deeplearning_tutorials.nnet.conv`: ``conv2d`` and its gradient Ops.

The oracles are SciPy's: Theano's ``conv2d`` is, for each image and filter, the sum
over input maps of ``scipy.signal.convolve2d(x, w, "valid")``; its gradients are
SciPy correlations (checked here against numeric gradients computed by linearity,
one oracle call per unit input). Every implementation is compared with them:

* the NumPy ``perform`` (mode ``FAST_COMPILE``, whose VM runs Python thunks);
* the C code (``c/conv.c``), as one module per node (``CVM``) and as one module
  for the whole function (``C``);
* the Numba kernels (``NUMBA``, and :mod:`deeplearning_tutorials.nnet.numba` called
  directly);
* the JAX kernels (``JAX``, and both algorithms of
  :mod:`deeplearning_tutorials.nnet.jax`, ``xla`` and ``gemm``, called directly).

Tolerances: ``rtol`` 1e-5 in float32 and 1e-10 in float64, with ``atol`` the same
relative to the largest magnitude of the expected array.
"""

import functools
import importlib.util

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad
from scipy.signal import convolve2d, correlate2d

from deeplearning_tutorials.nnet import (
    Conv2d,
    Conv2dGradFilters,
    Conv2dGradInputs,
    conv2d,
    pool_2d,
)
from deeplearning_tutorials.nnet import numba as nnumba
from deeplearning_tutorials.nnet.conv import (
    conv2d_grad_filters_numpy,
    conv2d_grad_inputs_numpy,
    conv2d_valid_numpy,
)

HAS_JAX = importlib.util.find_spec("jax") is not None
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed")

DTYPES = ["float32", "float64"]
RTOL = {"float32": 1e-5, "float64": 1e-10}

#: (mode, openmp): the modes; the C ones with PyTensor's ``openmp`` flag on and off (it
#: changes PyTensor's own C code around the Ops, which must not matter).
MODES = [
    pytest.param("C", True, id="C-openmp"),
    pytest.param("C", False, id="C"),
    pytest.param("CVM", True, id="CVM-openmp"),
    pytest.param("CVM", False, id="CVM"),
    pytest.param("NUMBA", None, id="NUMBA"),
    pytest.param("JAX", None, id="JAX", marks=needs_jax),
    pytest.param("FAST_COMPILE", None, id="FAST_COMPILE"),
]

#: (input shape, filter shape): odd and tiny shapes, and every path of the C and
#: Numba kernels.
SHAPES = [
    pytest.param((1, 1, 1, 1), (1, 1, 1, 1), id="1x1-image"),
    pytest.param((1, 1, 5, 5), (1, 1, 5, 5), id="filter-equals-image"),
    pytest.param((1, 3, 5, 4), (2, 3, 5, 4), id="filter-equals-image-3maps"),
    pytest.param((2, 1, 1, 7), (3, 1, 1, 3), id="wide-one-row"),
    pytest.param((2, 2, 9, 1), (2, 2, 4, 1), id="tall-one-column"),
    pytest.param((2, 2, 6, 4), (1, 2, 1, 1), id="1x1-filter"),
    pytest.param((3, 2, 7, 9), (5, 2, 3, 2), id="odd-direct-F5"),  # C: few taps, 5 filters
    pytest.param((2, 3, 9, 9), (4, 3, 5, 5), id="im2col-75-taps"),  # C: im2col + GEMM
    pytest.param((1, 1, 3, 600), (2, 1, 2, 3), id="rows-over-512"),  # C: too wide for direct
    pytest.param((37, 3, 30, 30), (4, 3, 5, 5), id="batch-in-two-chunks"),  # C and Numba
    pytest.param((5, 1, 28, 28), (6, 1, 5, 5), id="lenet-layer0"),
    pytest.param((3, 20, 12, 12), (7, 20, 5, 5), id="lenet-layer1"),
]


pytestmark = pytest.mark.usefixtures("jax_x64")


# ---------------------------------------------------------------------------
# Oracles
# ---------------------------------------------------------------------------


def scipy_conv(x, w):
    """Theano's conv2d: for each image and filter, the sum over input maps of SciPy's
    true 'valid' convolution."""
    B, C = x.shape[:2]
    F = w.shape[0]
    out = np.zeros((B, F, x.shape[2] - w.shape[2] + 1, x.shape[3] - w.shape[3] + 1))
    for b in range(B):
        for f in range(F):
            for c in range(C):
                out[b, f] += convolve2d(x[b, c], w[f, c], "valid")
    return out


def scipy_grad_inputs(gz, w):
    """d sum(gz * conv(x, w)) / dx: a 'full' correlation of gz with the filters."""
    B, F = gz.shape[:2]
    C = w.shape[1]
    gx = np.zeros((B, C, gz.shape[2] + w.shape[2] - 1, gz.shape[3] + w.shape[3] - 1))
    for b in range(B):
        for c in range(C):
            for f in range(F):
                gx[b, c] += correlate2d(gz[b, f], w[f, c], "full")
    return gx


def scipy_grad_filters(x, gz):
    """d sum(gz * conv(x, w)) / dw: a 'valid' correlation of x with gz, rotated."""
    B, C = x.shape[:2]
    F = gz.shape[1]
    gw = np.zeros((F, C, x.shape[2] - gz.shape[2] + 1, x.shape[3] - gz.shape[3] + 1))
    for f in range(F):
        for c in range(C):
            for b in range(B):
                gw[f, c] += correlate2d(x[b, c], gz[b, f], "valid")[::-1, ::-1]
    return gw


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


def out_shape(xs, ws):
    return (xs[0], ws[0], xs[2] - ws[2] + 1, xs[3] - ws[3] + 1)


def data(xs, ws, dtype, seed=0):
    """``x``, ``w`` and an upstream gradient ``gz`` of the given shapes and dtype."""
    rng = np.random.default_rng(seed)
    return tuple(
        rng.standard_normal(s).astype(dtype) for s in (xs, ws, out_shape(xs, ws))
    )


@functools.cache
def oracle(xs, ws, dtype, seed=0):
    """The float64 oracles (z, gx, gw) for :func:`data`'s arrays."""
    x, w, gz = (a.astype("float64") for a in data(xs, ws, dtype, seed))
    return scipy_conv(x, w), scipy_grad_inputs(gz, w), scipy_grad_filters(x, gz)


def assert_close(got, expected, dtype, what=""):
    got = np.asarray(got)
    assert got.shape == expected.shape, what
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(got, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                               err_msg=what)


# ---------------------------------------------------------------------------
# The oracles themselves, and the kernels called directly
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("xs,ws", [
    ((1, 1, 1, 1), (1, 1, 1, 1)),
    ((1, 1, 5, 5), (1, 1, 5, 5)),
    ((2, 1, 1, 7), (3, 1, 1, 3)),
    ((2, 2, 9, 1), (2, 2, 4, 1)),
    ((2, 2, 6, 5), (3, 2, 3, 2)),
    ((1, 3, 5, 5), (2, 3, 5, 5)),
])
def test_scipy_gradient_oracles_match_numeric_gradients(xs, ws):
    x, w, gz = data(xs, ws, "float64", seed=1)
    gx, gw = numeric_grads(x, w, gz)
    np.testing.assert_allclose(scipy_grad_inputs(gz, w), gx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scipy_grad_filters(x, gz), gw, rtol=1e-12, atol=1e-12)


def test_scipy_oracle_is_a_true_convolution():
    # A filter with a single 1 at (0, 0) shifts the image by (kh - 1, kw - 1) in a
    # true convolution, and not at all in a correlation.
    x = np.arange(20.0).reshape(1, 1, 4, 5)
    w = np.zeros((1, 1, 2, 3))
    w[0, 0, 0, 0] = 1
    np.testing.assert_array_equal(scipy_conv(x, w)[0, 0], x[0, 0, 1:, 2:])
    np.testing.assert_array_equal(conv2d_valid_numpy(x, w)[0, 0], x[0, 0, 1:, 2:])


NUMPY_AND_NUMBA = [
    pytest.param((conv2d_valid_numpy, conv2d_grad_inputs_numpy, conv2d_grad_filters_numpy),
                 id="numpy"),
    pytest.param((nnumba.conv2d_valid, nnumba.conv2d_grad_inputs, nnumba.conv2d_grad_filters),
                 id="numba"),
]


@pytest.mark.parametrize("kernels", NUMPY_AND_NUMBA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws", SHAPES)
def test_numpy_and_numba_kernels_match_the_oracles(kernels, dtype, xs, ws):
    fwd, grad_inputs, grad_filters = kernels
    x, w, gz = data(xs, ws, dtype)
    z_ref, gx_ref, gw_ref = oracle(xs, ws, dtype)
    for name, got, ref in (("z", fwd(x, w), z_ref), ("gx", grad_inputs(gz, w), gx_ref),
                           ("gw", grad_filters(x, gz), gw_ref)):
        assert got.dtype == dtype, name
        assert_close(got, ref, dtype, name)


def test_numba_kernels_chunk_the_batch():
    # A batch big enough to need several chunks, with an uneven last chunk.
    xs, ws = (37, 3, 30, 30), (4, 3, 5, 5)
    assert nnumba._chunk_size(37, 26 * 26, 75) < 37, "the test must exercise chunking"
    x, w, gz = data(xs, ws, "float64", seed=2)
    np.testing.assert_allclose(nnumba.conv2d_valid(x, w), conv2d_valid_numpy(x, w),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(nnumba.conv2d_grad_inputs(gz, w), conv2d_grad_inputs_numpy(gz, w),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(nnumba.conv2d_grad_filters(x, gz),
                               conv2d_grad_filters_numpy(x, gz), rtol=1e-12, atol=1e-10)


def test_numpy_kernels_take_an_empty_filter_bank():
    # Zero filters give empty / zero results, as the C and Numba kernels do.
    x, w = np.ones((2, 2, 5, 5)), np.ones((0, 2, 2, 2))
    assert conv2d_valid_numpy(x, w).shape == (2, 0, 4, 4)
    np.testing.assert_array_equal(conv2d_grad_inputs_numpy(np.ones((2, 0, 4, 4)), w),
                                  np.zeros((2, 2, 5, 5)))


def test_numba_kernels_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="maps"):
        nnumba.conv2d_valid(np.ones((1, 2, 5, 5)), np.ones((1, 3, 2, 2)))
    with pytest.raises(ValueError, match="larger"):
        nnumba.conv2d_valid(np.ones((1, 1, 5, 5)), np.ones((1, 1, 6, 2)))
    with pytest.raises(ValueError, match="batch"):
        nnumba.conv2d_grad_filters(np.ones((2, 1, 5, 5)), np.ones((3, 1, 4, 4)))


# ---------------------------------------------------------------------------
# The JAX kernels: both algorithms, and which one a graph gets
# ---------------------------------------------------------------------------


JAX_SHAPES = [
    ((1, 1, 1, 1), (1, 1, 1, 1)),
    ((1, 3, 5, 4), (2, 3, 5, 4)),
    ((2, 1, 1, 7), (3, 1, 1, 3)),
    ((2, 2, 9, 1), (2, 2, 4, 1)),
    ((3, 2, 7, 9), (5, 2, 3, 2)),
    ((2, 3, 9, 9), (4, 3, 5, 5)),
]


@needs_jax
@pytest.mark.parametrize("algorithm", ["xla", "gemm"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws", JAX_SHAPES)
def test_jax_kernels_match_the_oracles(algorithm, dtype, xs, ws):
    import jax

    from deeplearning_tutorials.nnet import jax as njax

    fwd, grad_inputs, grad_filters = {
        "xla": (njax.jax_conv2d, njax.jax_conv2d_grad_inputs, njax.jax_conv2d_grad_filters),
        "gemm": (njax.jax_conv2d_gemm, njax.jax_conv2d_grad_inputs_gemm,
                 njax.jax_conv2d_grad_filters_gemm),
    }[algorithm]
    x, w, gz = data(xs, ws, dtype)
    step = jax.jit(lambda x, w, gz: (fwd(x, w), grad_inputs(gz, w), grad_filters(x, gz)))
    for name, got, ref in zip(("z", "gx", "gw"), step(x, w, gz), oracle(xs, ws, dtype)):
        assert got.dtype == dtype, name
        assert_close(got, ref, dtype, f"{algorithm} {name}")


@needs_jax
@pytest.mark.parametrize("platform, dtype, expected", [
    ("cpu", "float32", "xla"),
    ("cpu", "float64", "gemm"),
    ("cpu", np.dtype("float32"), "xla"),
    ("cpu", np.dtype("float64"), "gemm"),
    ("gpu", "float32", "gemm"),
    ("gpu", "float64", "gemm"),
    ("cuda", "float32", "gemm"),
    ("rocm", "float32", "gemm"),
])
def test_jax_conv_algorithm(platform, dtype, expected):
    from deeplearning_tutorials.nnet import jax as njax

    assert njax.conv_algorithm(platform, dtype) == expected


@needs_jax
@pytest.mark.parametrize("backend, dtype, primitive", [
    ("cpu", "float32", "conv_general_dilated"),
    ("cpu", "float64", "dot_general"),
    ("gpu", "float32", "dot_general"),
])
def test_jax_graph_gets_the_algorithm_of_its_platform_and_dtype(monkeypatch, backend, dtype,
                                                                 primitive):
    import jax
    from pytensor.link.jax.dispatch import jax_funcify

    import deeplearning_tutorials.nnet.jax  # noqa: F401 (registers)

    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    x, w = pt.tensor4("x", dtype=dtype), pt.tensor4("w", dtype=dtype)
    z = conv2d(x, w)
    gx, gw = pytensor.grad(z.sum(), [x, w])
    xs, ws, zs = (np.ones(s, dtype) for s in ((2, 3, 6, 6), (4, 3, 3, 3), (2, 4, 4, 4)))
    other = ({"dot_general", "conv_general_dilated"} - {primitive}).pop()
    for var, args in ((z, (xs, ws)), (gx, (zs, ws)), (gw, (xs, zs))):
        fn = jax_funcify(var.owner.op, node=var.owner)
        jaxpr = jax.make_jaxpr(fn)(*args)
        prims = {e.primitive.name for e in jaxpr.eqns}
        assert primitive in prims and other not in prims, (var.owner.op, prims)
        # Float32 products in float32, never TF32 on a GPU.
        assert "Precision.HIGHEST" in str(jaxpr), var.owner.op


# ---------------------------------------------------------------------------
# The Ops in every mode
# ---------------------------------------------------------------------------


def _nodes(fn, types):
    return [n for n in fn.maker.fgraph.apply_nodes if isinstance(n.op, types)]


@functools.cache
def conv_function(mode, openmp, dtype):
    """``(x, w, gz) -> (conv2d(x, w), gx, gw)`` compiled in ``mode``, no shapes declared."""
    with pytensor.config.change_flags(openmp=bool(openmp)):
        x, w, gz = (pt.tensor4(name, dtype=dtype) for name in ("x", "w", "gz"))
        z = conv2d(x, w)
        gx, gw = pytensor.grad((z * gz).sum(), [x, w])
        fn = pytensor.function([x, w, gz], [z, gx, gw], mode=mode)
    conv_nodes = _nodes(fn, (Conv2d, Conv2dGradInputs, Conv2dGradFilters))
    assert sorted(type(n.op).__name__ for n in conv_nodes) == [
        "Conv2d", "Conv2dGradFilters", "Conv2dGradInputs"]
    return fn


@pytest.mark.parametrize("xs,ws", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,openmp", MODES)
def test_conv2d_and_gradients_match_the_oracles_in_every_mode(mode, openmp, dtype, xs, ws):
    fn = conv_function(mode, openmp, dtype)
    x, w, gz = data(xs, ws, dtype)
    got = [np.asarray(a) for a in fn(x, w, gz)]
    for name, a, ref in zip(("z", "gx", "gw"), got, oracle(xs, ws, dtype)):
        assert a.dtype == dtype, name
        assert_close(a, ref, dtype, name)
    # Non-contiguous inputs (a Fortran-ordered array, a strided view) give the
    # same numbers.
    w_view = np.repeat(w, 2, axis=3)[:, :, :, ::2]
    assert np.array_equal(w_view, w)
    again = fn(np.asfortranarray(x), w_view, np.asfortranarray(gz))
    for name, a, b in zip(("z", "gx", "gw"), again, got):
        np.testing.assert_array_equal(np.asarray(a), b, err_msg=name)


@pytest.mark.parametrize("mode,openmp", MODES)
def test_mismatched_maps_raise_in_every_mode(mode, openmp):
    fn = conv_function(mode, openmp, "float64")
    x, _, gz = data((2, 2, 6, 6), (3, 2, 3, 3), "float64")
    with pytest.raises(Exception):
        fn(x, np.ones((3, 1, 3, 3)), gz)


@pytest.mark.parametrize("mode,openmp", MODES)
@pytest.mark.parametrize("ws", [(3, 2, 7, 3), (3, 2, 3, 7)], ids=["taller", "wider"])
def test_filter_larger_than_the_image_raises_in_every_mode(mode, openmp, ws):
    with pytensor.config.change_flags(openmp=bool(openmp)):
        x, w = pt.tensor4("x", dtype="float32"), pt.tensor4("w", dtype="float32")
        fn = pytensor.function([x, w], conv2d(x, w), mode=mode)
    with pytest.raises(Exception):
        fn(np.ones((2, 2, 6, 6), "float32"), np.ones(ws, "float32"))


@pytest.mark.parametrize("mode", ["NUMBA", "CVM", pytest.param("JAX", marks=needs_jax)])
def test_output_shape_without_declared_shapes(mode):
    # The Ops have no infer_shape: the output's shape comes from running them.
    x, w = pt.tensor4("x"), pt.tensor4("w")
    z = conv2d(x, w)
    gx, gw = pytensor.grad(z.sum(), [x, w])
    fn = pytensor.function([x, w], [z.shape, gx.shape, gw.shape], mode=mode)
    zs, gxs, gws = fn(np.zeros((3, 2, 9, 7)), np.zeros((5, 2, 4, 3)))
    assert (tuple(zs), tuple(gxs), tuple(gws)) == ((3, 5, 6, 5), (3, 2, 9, 7), (5, 2, 4, 3))


@pytest.mark.parametrize("mode", ["NUMBA", "FAST_COMPILE", "CVM"])
def test_verify_grad(mode):
    x, w, _ = data((2, 2, 6, 5), (3, 2, 3, 2), "float64", seed=4)
    verify_grad(lambda a, b: conv2d(a, b), [x, w], rng=np.random.default_rng(5), mode=mode)


def test_second_order_grad_ops():
    # The gradient Ops are bilinear and differentiable themselves.
    rng = np.random.default_rng(7)
    x, w, gz = data((2, 2, 6, 5), (3, 2, 3, 2), "float64", seed=7)
    verify_grad(lambda a, b: Conv2dGradInputs()(a, b), [gz, w], rng=rng, mode="FAST_COMPILE")
    verify_grad(lambda a, b: Conv2dGradFilters()(a, b), [x, gz], rng=rng, mode="FAST_COMPILE")


@needs_jax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("jax_mode", ["JAX", "DLT_JAX"])
def test_pool_of_conv_with_undeclared_shapes_compiles_under_jax(jax_mode, dtype):
    # pool_2d(conv2d(x, w), ws=(2, 2)) and its gradient, x and w plain tensor4:
    # no static shapes anywhere, which JAX must compile anyway.
    import deeplearning_tutorials.modes  # noqa: F401 (registers DLT_JAX)

    x, w = pt.tensor4("x", dtype=dtype), pt.tensor4("w", dtype=dtype)
    assert x.type.shape == w.type.shape == (None,) * 4
    p = pool_2d(conv2d(x, w), ws=(2, 2))
    cost = pt.tanh(p).sum()
    outputs = [p, cost, *pytensor.grad(cost, [x, w])]
    fns = {mode: pytensor.function([x, w], outputs, mode=mode)
           for mode in (jax_mode, "NUMBA", "CVM")}
    for xs, ws in (((3, 2, 9, 8), (4, 2, 3, 2)), ((1, 1, 6, 6), (2, 1, 3, 3)),
                   ((2, 3, 12, 12), (5, 3, 5, 5))):
        x_v, w_v, _ = data(xs, ws, dtype, seed=9)
        results = {mode: [np.asarray(a) for a in fn(x_v, w_v)] for mode, fn in fns.items()}
        for mode in (jax_mode, "CVM"):
            for name, a, b in zip(("p", "cost", "gx", "gw"), results[mode], results["NUMBA"]):
                assert a.shape == b.shape, (mode, name)
                if a.ndim:
                    assert a.dtype == dtype, (mode, name)
                assert_close(a, b, dtype, f"{mode} {name} {xs}")
        # And the forward pass against the oracle.
        z_ref = scipy_conv(x_v.astype("float64"), w_v.astype("float64"))
        oh, ow = z_ref.shape[2] // 2, z_ref.shape[3] // 2
        p_ref = z_ref[:, :, : 2 * oh, : 2 * ow].reshape(xs[0], ws[0], oh, 2, ow, 2).max((3, 5))
        assert_close(results[jax_mode][0], p_ref, dtype, "p vs oracle")


# ---------------------------------------------------------------------------
# conv2d: declarations, static shapes, errors
# ---------------------------------------------------------------------------


def test_static_shapes():
    x = pt.tensor4("x")
    w = pt.tensor4("w")
    out = conv2d(x, w, filter_shape=(20, 1, 5, 5), image_shape=(500, 1, 28, 28))
    assert out.type.shape == (500, 20, 24, 24)
    out2 = conv2d(x, w, filter_shape=(50, 20, 5, 5), input_shape=(None, 20, 12, 12))
    assert out2.type.shape == (None, 50, 8, 8)
    assert conv2d(x, w).type.shape == (None,) * 4
    # Static input shapes propagate without declarations, to the gradients too.
    xs = pt.tensor("xs", shape=(4, 3, 10, 11))
    ws = pt.tensor("ws", shape=(6, 3, 3, 4))
    assert conv2d(xs, ws).type.shape == (4, 6, 8, 8)
    gx, gw = pytensor.grad(conv2d(xs, ws).sum(), [xs, ws])
    assert gx.type.shape == (4, 3, 10, 11) and gw.type.shape == (6, 3, 3, 4)


@pytest.mark.parametrize("mode", ["NUMBA", "CVM", pytest.param("JAX", marks=needs_jax)])
def test_declared_shape_is_checked_at_runtime(mode):
    x, w = pt.tensor4("x"), pt.tensor4("w")
    f = pytensor.function([x, w], conv2d(x, w, filter_shape=(2, 1, 3, 3)), mode=mode)
    assert np.asarray(f(np.zeros((1, 1, 5, 5)), np.zeros((2, 1, 3, 3)))).shape == (1, 2, 3, 3)
    with pytest.raises(Exception):
        f(np.zeros((1, 1, 5, 5)), np.zeros((2, 1, 2, 2)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(filter_shape=(2, 3, 3, 3), input_shape=(1, 2, 5, 5)), "feature maps"),
        (dict(filter_shape=(2, 1, 6, 3), input_shape=(1, 1, 5, 5)), "exceeds"),
        (dict(filter_shape=(2, 1, 3, 6), input_shape=(1, 1, 5, 5)), "width"),
        (dict(filter_shape=(2, 1, 3), input_shape=(1, 1, 5, 5)), "4 entries"),
        (dict(filter_shape=(2, 1, 0, 3)), "positive"),
        (dict(filter_shape=(2, 1, True, 3)), "positive"),
        (dict(filter_shape=5), "tuple"),
        (dict(input_shape=(1, 1, 5, 5), image_shape=(2, 1, 5, 5)), "deprecated name"),
        (dict(border_mode="full"), "declare filter_shape"),
        (dict(subsample=(0, 2)), "subsample"),
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
    with pytest.raises(ValueError, match="feature maps"):
        Conv2d()(x, pt.tensor("w", shape=(2, 1, 3, 3)))
    with pytest.raises(ValueError, match="4-D"):
        conv2d(pt.matrix("x"), pt.tensor4("w"))
    with pytest.raises(TypeError, match="float32 or float64"):
        conv2d(pt.tensor4("x", dtype="int32"), pt.tensor4("w"))


def test_mixed_dtypes_upcast():
    x = pt.tensor4("x", dtype="float32")
    w = pt.tensor4("w", dtype="float64")
    assert conv2d(x, w).dtype == "float64"
    assert conv2d(x, pt.tensor4("w32", dtype="float32")).dtype == "float32"


# ---------------------------------------------------------------------------
# The lesson's use
# ---------------------------------------------------------------------------


def test_lesson_style_shared_filters_with_updates():
    # The tutorial's use: a reshaped minibatch, shared filters declared through
    # filter_shape/image_shape, and SGD updates of the shared variables; the same
    # costs in every mode.
    rng = np.random.RandomState(23455)
    bs = 3
    x = pt.matrix("x")
    w0 = rng.uniform(-0.1, 0.1, (4, 1, 5, 5))
    W = pytensor.shared(w0.copy(), name="W")
    b = pytensor.shared(np.zeros(4), name="b")
    z = conv2d(x.reshape((bs, 1, 12, 12)), W, filter_shape=(4, 1, 5, 5),
               image_shape=(bs, 1, 12, 12))
    assert z.type.shape == (bs, 4, 8, 8)
    out = pt.tanh(pool_2d(z, (2, 2), ignore_border=True) + b.dimshuffle("x", 0, "x", "x"))
    cost = (out**2).mean()
    gW, gb = pytensor.grad(cost, [W, b])
    xv = rng.rand(bs, 144)
    costs = {}
    for mode in ("NUMBA", "CVM", "C", "JAX", "FAST_COMPILE"):
        if mode == "JAX" and not HAS_JAX:
            continue
        W.set_value(w0.copy())
        b.set_value(np.zeros(4))
        f = pytensor.function([x], cost, updates=[(W, W - 0.5 * gW), (b, b - 0.5 * gb)],
                              mode=mode)
        costs[mode] = [float(f(xv)) for _ in range(3)]
    for mode, c in costs.items():
        np.testing.assert_allclose(c, costs["NUMBA"], rtol=1e-12, err_msg=mode)
    assert costs["NUMBA"][0] != costs["NUMBA"][2]
