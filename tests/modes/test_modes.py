"""Tests of :mod:`deeplearning_tutorials.modes`: the package's four named modes.

They are registered with PyTensor by importing the package, each on the linker of
its backend, and a tutorial's training step (a minibatch chosen by ``givens``
over shared datasets, SGD updates) gives the same numbers in all of them as in
PyTensor's own NUMBA mode.
"""

import importlib.util

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode, get_mode, predefined_modes
from pytensor.link.c.basic import CLinker
from pytensor.link.jax.linker import JAXLinker
from pytensor.link.numba.linker import NumbaLinker
from pytensor.link.vm import VMLinker

import deeplearning_tutorials.modes as modes
from deeplearning_tutorials.modes import WholeGraphCLinker
from deeplearning_tutorials.modes.jax import DeviceJAXLinker
from deeplearning_tutorials.nnet import conv2d, pool_2d

HAS_JAX = importlib.util.find_spec("jax") is not None
COMPARED = ["NUMBA", "DLT_NUMBA", "DLT_CVM", "DLT_C"] + (["DLT_JAX"] if HAS_JAX else [])

BATCH, N_BATCHES, N_IN, N_OUT = 20, 3, 64, 10


pytestmark = pytest.mark.usefixtures("jax_x64")


def test_the_four_modes_are_registered():
    assert modes.MODES == ("DLT_NUMBA", "DLT_CVM", "DLT_C", "DLT_JAX")
    assert modes.DEFAULT_MODE == "DLT_NUMBA"
    assert modes.PYTENSOR_MODES == ("NUMBA", "CVM", "C", "JAX", "FAST_COMPILE")
    for name in modes.MODES:
        assert name in predefined_modes
        assert isinstance(get_mode(name), Mode)


@pytest.mark.parametrize("name, linker, base", [
    ("DLT_NUMBA", NumbaLinker, NumbaLinker),
    ("DLT_CVM", VMLinker, VMLinker),
    ("DLT_C", WholeGraphCLinker, CLinker),
    ("DLT_JAX", DeviceJAXLinker, JAXLinker),
])
def test_the_linkers(name, linker, base):
    mode = get_mode(name)
    assert type(mode.linker) is linker
    assert isinstance(mode.linker, base)
    if name == "DLT_CVM":  # C thunks run by the C loop, as PyTensor's CVM
        assert mode.linker.use_cloop and mode.linker.c_thunks
        assert type(get_mode("CVM").linker) is VMLinker


def test_registering_again_changes_nothing():
    before = {name: get_mode(name) for name in modes.MODES}
    modes._register()
    assert {name: get_mode(name) for name in modes.MODES} == before


def test_whole_graph_c_linker_compiles_without_debugging_information():
    x = pt.vector("x")
    fn = pytensor.function([x], pt.exp(x) + 1, mode="DLT_C")
    linker = fn.maker.linker
    assert isinstance(linker, WholeGraphCLinker)
    args = linker.compile_args()
    assert args[-1] == "-g0" and args[:-1] == CLinker.compile_args(linker)
    np.testing.assert_allclose(fn(np.array([0.0, 1.0])), [2.0, np.e + 1], rtol=1e-15)


def test_dlt_numba_is_pytensors_numba_with_the_packages_tag():
    from deeplearning_tutorials.modes.numba import TAG

    ours, theirs = get_mode("DLT_NUMBA"), get_mode("NUMBA")
    assert ours is not theirs
    assert type(ours.linker) is type(theirs.linker)
    assert set(ours.provided_optimizer.include) == set(theirs.provided_optimizer.include) | {TAG}
    assert set(ours.provided_optimizer.exclude) == set(theirs.provided_optimizer.exclude)


# ---------------------------------------------------------------------------
# A tutorial's training step in every mode
# ---------------------------------------------------------------------------


def _datasets(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((BATCH * N_BATCHES, N_IN))
    y = rng.integers(0, N_OUT, BATCH * N_BATCHES).astype("float64")
    return x, y


def _training_step(mode, conv):
    """logistic_sgd's functions (``conv``: with a LeNet-style convolution and pooling
    layer first), with the minibatch chosen by ``givens`` over shared data."""
    data_x, data_y = _datasets()
    set_x = pytensor.shared(data_x, name="train_set_x")
    set_y = pt.cast(pytensor.shared(data_y, name="train_set_y"), "int32")
    index = pt.lscalar("index")
    x, y = pt.matrix("x"), pt.ivector("y")
    rng = np.random.default_rng(1)
    params = []
    features, n_features = x, N_IN
    if conv:
        filters = pytensor.shared(rng.uniform(-0.3, 0.3, (3, 1, 3, 3)), name="filters")
        params.append(filters)
        images = x.reshape((x.shape[0], 1, 8, 8))
        hidden = pt.tanh(pool_2d(conv2d(images, filters, filter_shape=(3, 1, 3, 3)), (2, 2),
                                 ignore_border=True))
        features, n_features = hidden.flatten(2), 3 * 3 * 3
    W = pytensor.shared(rng.uniform(-0.1, 0.1, (n_features, N_OUT)), name="W")
    b = pytensor.shared(np.zeros(N_OUT), name="b")
    params += [W, b]
    p_y_given_x = pt.special.softmax(pt.dot(features, W) + b, axis=-1)
    cost = -pt.mean(pt.log(p_y_given_x)[pt.arange(y.shape[0]), y])
    errors = pt.mean(pt.neq(pt.argmax(p_y_given_x, axis=1), y))
    grads = pytensor.grad(cost, params)
    givens = {x: set_x[index * BATCH:(index + 1) * BATCH],
              y: set_y[index * BATCH:(index + 1) * BATCH]}
    train = pytensor.function([index], cost, givens=givens, mode=mode,
                              updates=[(p, p - 0.1 * g) for p, g in zip(params, grads)])
    validate = pytensor.function([index], errors, givens=givens, mode=mode)
    return train, validate, params


@pytest.mark.slow
@pytest.mark.parametrize("conv", [False, True], ids=["logistic", "conv-pool-logistic"])
def test_a_training_step_gives_the_same_numbers_in_every_mode(conv):
    results = {}
    for mode in COMPARED:
        train, validate, params = _training_step(mode, conv)
        costs = [float(train(i)) for i in (0, 1, 2, 1)]
        errors = [float(validate(i)) for i in range(N_BATCHES)]
        results[mode] = costs, errors, [np.asarray(p.get_value()) for p in params]
    ref_costs, ref_errors, ref_params = results["NUMBA"]
    assert ref_costs[0] != ref_costs[3]  # it learned
    for mode, (costs, errors, params) in results.items():
        np.testing.assert_allclose(costs, ref_costs, rtol=1e-12, atol=1e-12, err_msg=mode)
        np.testing.assert_allclose(errors, ref_errors, rtol=0, atol=1e-12, err_msg=mode)
        for p, r in zip(params, ref_params):
            np.testing.assert_allclose(p, r, rtol=1e-12, atol=1e-12, err_msg=mode)
