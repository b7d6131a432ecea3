"""The tutorial's minibatch ``givens`` under ``mode="JAX"``: the constant-length slice rewrite."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from deeplearning_tutorials import backend
from deeplearning_tutorials.nnet.jax_givens import (
    DynamicIncSlice,
    DynamicSlice,
    constant_slice_length,
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


def _op_types(fn):
    return [type(node.op) for node in fn.maker.fgraph.apply_nodes]


def test_constant_slice_length():
    i = pt.lscalar("i")
    bs = pt.lscalar("bs")
    assert constant_slice_length(i * 600, (i + 1) * 600) == 600
    assert constant_slice_length(i, i + 5) == 5
    assert constant_slice_length(2 * (i - 1), 2 * i + 3) == 5
    assert constant_slice_length(i, 2 * i) is None
    assert constant_slice_length(i * bs, (i + 1) * bs) is None
    assert constant_slice_length(None, i) is None


def test_logistic_regression_jax_matches_numba():
    data = _data()
    train_j, test_j, W_j, b_j, _ = _logistic("JAX", data)
    train_n, test_n, W_n, b_n, _ = _logistic("NUMBA", data)

    jax_ops = _op_types(train_j)
    assert DynamicSlice in jax_ops
    assert pt.subtensor.Subtensor not in jax_ops
    assert pt.basic.ARange not in jax_ops  # arange(y.shape[0]) folded to a constant
    assert DynamicSlice not in _op_types(train_n)  # the rewrite is for JAX only

    costs_j, errs_j, Wj, bj = _run(train_j, test_j, W_j, b_j)
    costs_n, errs_n, Wn, bn = _run(train_n, test_n, W_n, b_n)
    np.testing.assert_allclose(costs_j, costs_n, rtol=0, atol=1e-12)
    np.testing.assert_allclose(errs_j, errs_n, rtol=0, atol=1e-12)
    np.testing.assert_allclose(Wj, Wn, rtol=0, atol=1e-12)
    np.testing.assert_allclose(bj, bn, rtol=0, atol=1e-12)
    assert costs_j[0] == pytest.approx(np.log(N_OUT), abs=1e-12)


def test_non_constant_length_slice_is_left_alone():
    x = pt.matrix("x")
    i = pt.lscalar("i")
    out = x[i : 2 * i]
    assert local_constant_length_subtensor.transform(None, out.owner) is None
    # Such a graph fails in JAX as it did before the rewrite existed.
    with pytest.raises(Exception, match="[Ss]lice|static|concrete|[Tt]racer"):
        fn = pytensor.function([x, i], out, mode="JAX")
        fn(np.ones((6, 2)), 2)


def test_clamping_at_the_end_is_documented_behaviour():
    x = pt.matrix("x")
    i = pt.lscalar("i")
    data = np.arange(10.0).reshape(5, 2)
    f_jax = pytensor.function([x, i], x[i : i + 3], mode="JAX")
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
    f_jax = pytensor.function([x, i], out, mode="JAX")
    assert DynamicSlice in _op_types(f_jax)
    np.testing.assert_array_equal(f_jax(data, 1), data[1, 2:4, ::-1])


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
    f_jax = pytensor.function([x, y, i], out, mode="JAX")
    f_numba = pytensor.function([x, y, i], out, mode="NUMBA")
    assert DynamicIncSlice in _op_types(f_jax)
    for start in (0, 1):
        np.testing.assert_array_equal(f_jax(data, y_val, start), f_numba(data, y_val, start))


def test_gradient_with_respect_to_the_sliced_dataset():
    data = pytensor.shared(np.arange(12.0).reshape(6, 2), name="data")
    i = pt.lscalar("i")
    cost = (data[i * 2 : (i + 1) * 2] ** 2).sum()
    g = pt.grad(cost, data)
    f_jax = pytensor.function([i], g, mode="JAX")
    f_numba = pytensor.function([i], g, mode="NUMBA")
    for start in (0, 2):
        np.testing.assert_array_equal(f_jax(start), f_numba(start))


def test_perform_matches_jax():
    x = pt.matrix("x")
    start = pt.lscalar("start")
    out = DynamicSlice(0, 3)(x, start)
    data = np.arange(10.0).reshape(5, 2)
    f_py = pytensor.function([x, start], out, mode=pytensor.compile.mode.Mode("py", "fast_compile"))
    f_jax = pytensor.function([x, start], out, mode="JAX")
    for s in (-7, -5, -2, 0, 2, 4, 9):
        np.testing.assert_array_equal(f_py(data, s), f_jax(data, s))


def test_device_resident_dataset_gives_identical_results():
    data = _data()
    plain = _logistic("JAX", data)
    device = _logistic(backend.resolve_mode("JAX"), data)
    assert isinstance(device[0].maker.linker, backend.DeviceJAXLinker)
    costs_p, errs_p, Wp, bp = _run(*plain[:4])
    costs_d, errs_d, Wd, bd = _run(*device[:4])
    assert costs_p == costs_d and errs_p == errs_d
    np.testing.assert_array_equal(Wp, Wd)
    set_x = device[4]
    # The shared dataset keeps its numpy value: get_value and other backends are unaffected.
    assert isinstance(set_x.get_value(borrow=True), np.ndarray)
    np.testing.assert_array_equal(set_x.get_value(), data[0])
    # set_value is seen by the next call (a new host array, a new device copy).
    train, test = device[0], device[1]
    before = float(test(0))
    set_x.set_value(np.zeros_like(data[0]))
    after = float(test(0))
    logits = np.zeros((BATCH, N_IN)) @ np.asarray(device[2].get_value()) + np.asarray(device[3].get_value())
    expected = np.mean(np.argmax(logits, axis=1) != data[1][:BATCH])
    assert after == pytest.approx(expected, abs=1e-12)
    assert before != after or before == expected


def test_to_device_and_back():
    data = _data()
    train, test, W, b, set_x = _logistic("JAX", data)
    reference = [float(test(i)) for i in range(N_BATCHES)]
    backend.to_device(set_x)
    assert isinstance(set_x.container.storage[0], jax.Array)
    np.testing.assert_array_equal(np.asarray(set_x.get_value()), data[0])
    assert [float(test(i)) for i in range(N_BATCHES)] == reference
    backend.to_host(set_x)
    assert isinstance(set_x.get_value(borrow=True), np.ndarray)
    total = pytensor.function([], set_x.sum(), mode="NUMBA")
    assert float(total()) == pytest.approx(data[0].sum())
