"""Tests of :mod:`deeplearning_tutorials.modes.jax`: the tutorial's minibatch ``givens``
under the package's JAX mode, ``DLT_JAX``.

The rewrites (constant-length slices as :class:`DynamicSlice` /
:class:`DynamicIncSlice`, reductions in their output dtype) run in ``DLT_JAX``
only; PyTensor's own ``JAX`` mode is left as it is, and refuses the slices.
"""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode, get_mode
from pytensor.link.jax.linker import JAXLinker
from pytensor.tensor.elemwise import CAReduce

import deeplearning_tutorials.modes  # noqa: F401 (registers the DLT_ modes)
from deeplearning_tutorials.modes.jax import (
    TAG,
    DeviceJAXLinker,
    DynamicIncSlice,
    DynamicSlice,
    constant_slice_length,
    jax_mode,
    local_constant_length_subtensor,
)

jax = pytest.importorskip("jax")

BATCH = 60
N_BATCHES = 3
N_IN, N_OUT = 784, 10


@pytest.fixture(autouse=True)
def float64_everywhere():
    """Compare backends in float64: JAX needs x64 for that, whatever ran before."""
    import pytensor.link.jax.dispatch  # noqa: F401  (fixes x64 from floatX on first import)

    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    with pytensor.config.change_flags(floatX="float64"):
        yield
    jax.config.update("jax_enable_x64", previous)


def _data(n_rows=BATCH * N_BATCHES, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n_rows, N_IN))
    y = rng.integers(0, N_OUT, n_rows).astype("float64")
    return x, y


def _logistic(mode, data):
    """The logistic_sgd graph, written as the tutorial writes it."""
    set_x = pytensor.shared(data[0], name="train_set_x")
    set_y = pt.cast(pytensor.shared(data[1], name="train_set_y"), "int32")
    x = pt.matrix("x")
    y = pt.ivector("y")
    index = pt.lscalar("index")
    W = pytensor.shared(np.zeros((N_IN, N_OUT)), name="W")
    b = pytensor.shared(np.zeros(N_OUT), name="b")
    p_y_given_x = pt.special.softmax(pt.dot(x, W) + b, axis=-1)  # Theano: row-wise
    cost = -pt.mean(pt.log(p_y_given_x)[pt.arange(y.shape[0]), y])
    errors = pt.mean(pt.neq(pt.argmax(p_y_given_x, axis=1), y))
    g_W, g_b = pt.grad(cost, [W, b])
    givens = {
        x: set_x[index * BATCH : (index + 1) * BATCH],
        y: set_y[index * BATCH : (index + 1) * BATCH],
    }
    train = pytensor.function(
        [index], cost, updates=[(W, W - 0.13 * g_W), (b, b - 0.13 * g_b)], givens=givens, mode=mode
    )
    test = pytensor.function([index], errors, givens=givens, mode=mode)
    return train, test, W, b, set_x


def _run(train, test, W, b):
    costs = [float(train(i)) for i in (0, 1, 2, 0, 2)]
    errs = [float(test(i)) for i in range(N_BATCHES)]
    return costs, errs, np.asarray(W.get_value()), np.asarray(b.get_value())


def _numpy_sgd(data, batches=(0, 1, 2, 0, 2), learning_rate=0.13):
    """:func:`_logistic`'s training steps in NumPy: the costs and the final W and b."""
    x, y = data[0], data[1].astype(int)
    W, b = np.zeros((N_IN, N_OUT)), np.zeros(N_OUT)
    costs, rows = [], np.arange(BATCH)
    for i in batches:
        xb, yb = x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]
        z = xb @ W + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        costs.append(-np.mean(np.log(p[rows, yb])))
        d = p.copy()
        d[rows, yb] -= 1
        d /= BATCH
        W, b = W - learning_rate * (xb.T @ d), b - learning_rate * d.sum(axis=0)
    return costs, W, b


def _op_types(fn):
    return [type(node.op) for node in fn.maker.fgraph.apply_nodes]


def test_the_mode_is_pytensors_jax_with_the_packages_rewrites():
    mode = get_mode("DLT_JAX")
    assert isinstance(mode.linker, DeviceJAXLinker)
    assert TAG in mode.provided_optimizer.include
    assert TAG not in get_mode("JAX").provided_optimizer.include
    assert type(get_mode("JAX").linker) is JAXLinker
    assert isinstance(jax_mode().linker, DeviceJAXLinker)


def test_constant_slice_length():
    i = pt.lscalar("i")
    bs = pt.lscalar("bs")
    assert constant_slice_length(i * 600, (i + 1) * 600) == 600
    assert constant_slice_length(i, i + 5) == 5
    assert constant_slice_length(2 * (i - 1), 2 * i + 3) == 5
    assert constant_slice_length(-i, 3 - i) == 3
    assert constant_slice_length(pt.cast(i, "int32") * 4, (i + 1) * 4) == 4
    assert constant_slice_length(i, 2 * i) is None
    assert constant_slice_length(i * bs, (i + 1) * bs) is None
    assert constant_slice_length(None, i) is None
    assert constant_slice_length(i, None) is None


def test_logistic_regression_dlt_jax_matches_numba():
    data = _data()
    train_j, test_j, W_j, b_j, _ = _logistic("DLT_JAX", data)
    train_n, test_n, W_n, b_n, _ = _logistic("NUMBA", data)

    jax_ops = _op_types(train_j)
    assert DynamicSlice in jax_ops
    assert pt.subtensor.Subtensor not in jax_ops
    assert pt.basic.ARange not in jax_ops  # arange(y.shape[0]) folded to a constant
    assert DynamicSlice not in _op_types(train_n)  # the rewrite is for DLT_JAX only

    costs_j, errs_j, Wj, bj = _run(train_j, test_j, W_j, b_j)
    costs_n, errs_n, Wn, bn = _run(train_n, test_n, W_n, b_n)
    np.testing.assert_allclose(costs_j, costs_n, rtol=0, atol=1e-12)
    np.testing.assert_allclose(errs_j, errs_n, rtol=0, atol=1e-12)
    np.testing.assert_allclose(Wj, Wn, rtol=0, atol=1e-12)
    np.testing.assert_allclose(bj, bn, rtol=0, atol=1e-12)
    assert costs_j[0] == pytest.approx(np.log(N_OUT), abs=1e-12)
    assert costs_j[0] != costs_j[3]  # it learned


def test_pytensors_own_jax_mode_does_not_rewrite_the_slices():
    # The tutorial's training function: PyTensor's JAX refuses arange(y.shape[0])
    # when compiling (the slice's length is not known) ...
    with pytest.raises(NotImplementedError, match="arange"):
        _logistic("JAX", _data())
    # ... and, for a function without arange, the minibatch slice when running.
    set_x = pytensor.shared(_data()[0], name="train_set_x")
    index = pt.lscalar("index")
    x = pt.matrix("x")
    givens = {x: set_x[index * BATCH : (index + 1) * BATCH]}
    plain = pytensor.function([index], x.sum(), givens=givens, mode="JAX")
    ops = _op_types(plain)
    assert DynamicSlice not in ops and pt.subtensor.Subtensor in ops
    with pytest.raises(Exception, match="[Ss]lice|static|concrete|[Tt]racer"):
        plain(0)
    rewritten = pytensor.function([index], x.sum(), givens=givens, mode="DLT_JAX")
    assert DynamicSlice in _op_types(rewritten)
    assert float(rewritten(1)) == pytest.approx(_data()[0][BATCH : 2 * BATCH].sum(), rel=1e-12)


def test_pytensors_own_jax_mode_is_left_alone_on_small_slices():
    x = pt.matrix("x")
    i = pt.lscalar("i")
    out = x[i : i + 3]
    plain = pytensor.function([x, i], out, mode="JAX")
    assert DynamicSlice not in _op_types(plain)
    rewritten = pytensor.function([x, i], out, mode="DLT_JAX")
    assert DynamicSlice in _op_types(rewritten)


def test_non_constant_length_slice_is_left_alone():
    x = pt.matrix("x")
    i = pt.lscalar("i")
    out = x[i : 2 * i]
    assert local_constant_length_subtensor.transform(None, out.owner) is None
    # Such a graph fails in JAX as it did before the rewrite existed.
    with pytest.raises(Exception, match="[Ss]lice|static|concrete|[Tt]racer"):
        fn = pytensor.function([x, i], out, mode="DLT_JAX")
        fn(np.ones((6, 2)), 2)


def test_static_bounds_are_left_alone():
    x = pt.matrix("x")
    fn = pytensor.function([x], x[1:3] * 2, mode="DLT_JAX")
    assert DynamicSlice not in _op_types(fn)
    data = np.arange(10.0).reshape(5, 2)
    np.testing.assert_array_equal(fn(data), data[1:3] * 2)


def test_clamping_at_the_end_is_documented_behaviour():
    x = pt.matrix("x")
    i = pt.lscalar("i")
    data = np.arange(10.0).reshape(5, 2)
    f_jax = pytensor.function([x, i], x[i : i + 3], mode="DLT_JAX")
    f_numba = pytensor.function([x, i], x[i : i + 3], mode="NUMBA")
    for start in (0, 1, 2):  # 0 <= start <= n - length: identical
        np.testing.assert_array_equal(f_jax(data, start), f_numba(data, start))
    # Past the end Python clips (1 row) while the static-length slice clamps its
    # start to n - length (the last 3 rows). A negative start counts from the
    # end, then clamps; Python's x[-2:1] is empty.
    assert f_numba(data, 4).shape == (1, 2)
    np.testing.assert_array_equal(f_jax(data, 4), data[2:5])
    assert f_numba(data, -2).shape == (0, 2)
    np.testing.assert_array_equal(f_jax(data, -2), data[2:5])
    np.testing.assert_array_equal(f_jax(data, -5), data[0:3])


def test_other_index_entries_are_kept():
    x = pt.tensor3("x")
    i = pt.lscalar("i")
    out = x[1, i * 2 : i * 2 + 2, ::-1]
    data = np.arange(60.0).reshape(3, 4, 5)
    f_jax = pytensor.function([x, i], out, mode="DLT_JAX")
    assert DynamicSlice in _op_types(f_jax)
    for start in (0, 1):
        np.testing.assert_array_equal(f_jax(data, start), data[1, 2 * start : 2 * start + 2, ::-1])


def test_slice_of_a_later_axis():
    x = pt.matrix("x")
    i = pt.lscalar("i")
    out = x[:, i : i + 2]
    data = np.arange(12.0).reshape(3, 4)
    f_jax = pytensor.function([x, i], out, mode="DLT_JAX")
    assert DynamicSlice in _op_types(f_jax)
    np.testing.assert_array_equal(f_jax(data, 1), data[:, 1:3])


@pytest.mark.parametrize("set_instead_of_inc", [False, True])
@pytest.mark.parametrize("extra_index", [False, True])
def test_inc_subtensor(set_instead_of_inc, extra_index):
    x = pt.matrix("x")
    y = pt.vector("y") if extra_index else pt.matrix("y")
    i = pt.lscalar("i")
    target = x[i * 2 : (i + 1) * 2, 1] if extra_index else x[i * 2 : (i + 1) * 2]
    build = pt.set_subtensor if set_instead_of_inc else pt.inc_subtensor
    out = build(target, y)
    data = np.arange(12.0).reshape(4, 3)
    y_val = np.full((2,) if extra_index else (2, 3), 100.0)
    f_jax = pytensor.function([x, y, i], out, mode="DLT_JAX")
    f_numba = pytensor.function([x, y, i], out, mode="NUMBA")
    assert DynamicIncSlice in _op_types(f_jax)
    for start in (0, 1):
        expected = f_numba(data, y_val, start)
        assert not np.array_equal(expected, data)
        np.testing.assert_array_equal(f_jax(data, y_val, start), expected)


def test_gradient_with_respect_to_the_sliced_dataset():
    data = pytensor.shared(np.arange(12.0).reshape(6, 2), name="data")
    i = pt.lscalar("i")
    cost = (data[i * 2 : (i + 1) * 2] ** 2).sum()
    g = pt.grad(cost, data)
    f_jax = pytensor.function([i], g, mode="DLT_JAX")
    f_numba = pytensor.function([i], g, mode="NUMBA")
    assert DynamicIncSlice in _op_types(f_jax)
    for start in (0, 2):
        np.testing.assert_array_equal(f_jax(start), f_numba(start))
        assert np.count_nonzero(np.asarray(f_jax(start))) >= 3


def test_perform_matches_jax():
    # The Ops built by hand: their JAX code is registered when a graph holding
    # them is compiled (deeplearning_tutorials.dispatch).
    x = pt.matrix("x")
    start = pt.lscalar("start")
    data = np.arange(10.0).reshape(5, 2)
    y = np.full((3, 2), 7.0)
    py = Mode("py", "fast_compile")
    for out, args in ((DynamicSlice(0, 3)(x, start), (data,)),
                      (DynamicIncSlice(0, 3)(x, y, start), (data,)),
                      (DynamicIncSlice(0, 3, True)(x, y, start), (data,))):
        f_py = pytensor.function([x, start], out, mode=py)
        f_jax = pytensor.function([x, start], out, mode="DLT_JAX")
        for s in (-7, -5, -2, 0, 2, 4, 9):
            np.testing.assert_array_equal(f_py(*args, s), f_jax(*args, s))


def test_dynamic_slice_refuses_bad_nodes():
    with pytest.raises(ValueError, match="exceeds"):
        DynamicSlice(0, 4)(pt.tensor("x", shape=(3, 2)), pt.lscalar())
    with pytest.raises(TypeError, match="integer"):
        DynamicSlice(0, 2)(pt.matrix(), pt.dscalar())
    with pytest.raises(ValueError, match="axis"):
        DynamicSlice(2, 2)(pt.matrix(), pt.lscalar())
    f = pytensor.function([x := pt.matrix(), s := pt.lscalar()], DynamicSlice(0, 4)(x, s),
                          mode=Mode("py", "fast_compile"))
    with pytest.raises(IndexError, match="exceeds"):
        f(np.ones((3, 2)), 0)


def test_reductions_keep_their_output_dtype():
    # A float32 mean accumulates in float64; PyTensor's JAX returns the
    # accumulator's dtype, DLT_JAX rounds to the node's, as C and Numba do.
    x = pt.matrix("x", dtype="float32")
    W = pytensor.shared(np.full((3, 2), 0.5, "float32"), name="W")
    cost = pt.tanh(x @ W).mean()
    g = pt.grad(cost, W)
    xv = np.linspace(-1, 1, 12, dtype="float32").reshape(4, 3)
    results = {}
    for mode in ("DLT_JAX", "NUMBA"):
        fn = pytensor.function([x], [cost, g], mode=mode)
        results[mode] = [np.asarray(a) for a in fn(xv)]
        assert [a.dtype for a in results[mode]] == ["float32", "float32"], mode
    graph = pytensor.function([x], cost, mode="DLT_JAX").maker.fgraph
    reductions = [n.op for n in graph.apply_nodes if isinstance(n.op, CAReduce)]
    assert reductions and all(
        getattr(op, "acc_dtype", None) in (None, op.dtype) for op in reductions)
    for a, b in zip(results["DLT_JAX"], results["NUMBA"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_device_resident_dataset_gives_identical_results():
    data = _data()
    # The same rewrites with PyTensor's JAX linker, against DLT_JAX's DeviceJAXLinker.
    plain_mode = Mode(JAXLinker(), get_mode("DLT_JAX").provided_optimizer)
    plain = _logistic(plain_mode, data)
    device = _logistic("DLT_JAX", data)
    assert type(plain[0].maker.linker) is JAXLinker
    assert isinstance(device[0].maker.linker, DeviceJAXLinker)
    costs_p, errs_p, Wp, bp = _run(*plain[:4])
    costs_d, errs_d, Wd, bd = _run(*device[:4])
    assert costs_p == costs_d and errs_p == errs_d
    np.testing.assert_array_equal(Wp, Wd)
    np.testing.assert_array_equal(bp, bd)
    set_x = device[4]
    # The shared dataset keeps its numpy value: get_value and other backends are unaffected.
    assert isinstance(set_x.get_value(borrow=True), np.ndarray)
    np.testing.assert_array_equal(set_x.get_value(), data[0])
    # The updated parameters come back from the device, readable as arrays, and are
    # NumPy's.
    costs_np, W_np, b_np = _numpy_sgd(data)
    np.testing.assert_allclose(costs_d, costs_np, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(device[2].get_value()), W_np, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(device[3].get_value()), b_np, rtol=0, atol=1e-12)
    # set_value is seen by the next call (a new host array, a new device copy).
    test = device[1]
    set_x.set_value(np.zeros_like(data[0]))
    after = float(test(0))
    logits = np.zeros((BATCH, N_IN)) @ np.asarray(device[2].get_value()) + np.asarray(
        device[3].get_value())
    expected = np.mean(np.argmax(logits, axis=1) != data[1][:BATCH])
    assert after == pytest.approx(expected, abs=1e-12)
    set_x.set_value(data[0].copy())
    assert [float(test(i)) for i in range(N_BATCHES)] == errs_d
