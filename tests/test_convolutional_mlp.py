"""LeNet5 as the original builds it: shapes, parameters, initial weights, first costs."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import get_mode

from deeplearning_tutorials import convolutional_mlp, datasets, modes  # noqa: F401
from deeplearning_tutorials.logistic_sgd import LogisticRegression
from deeplearning_tutorials.mlp import HiddenLayer
from deeplearning_tutorials.testing import lenet5_functions, small_split

#: ``train_model(0)``, ``(1)``, ``(2)`` of the original library (Theano 1.0.5, the
#: original's code), float64, real MNIST, the default model (REFERENCE.md).
ORIGINAL_FIRST_COSTS = [2.3025850929940503, 2.2841618604814076, 2.2632810157951364]
#: What a true-division ``fan_out`` (312.5 for the second layer) would give instead.
TRUE_DIVISION_COSTS = [2.3025850929940503, 2.2841705704316304, 2.263299546042377]

#: The package's modes and PyTensor's own that compile the tutorial as it is.
MODES = ["DLT_NUMBA", "DLT_CVM", "DLT_C", "DLT_JAX", "NUMBA", "CVM"]


@pytest.fixture(scope="module")
def mnist_arrays(mnist_pkl):
    return datasets.load_arrays(mnist_pkl)


def test_layer_shapes_and_parameter_count():
    batch_size = 500
    x = pt.matrix("x")
    with pytensor.config.change_flags(floatX="float64"):
        rng = np.random.RandomState(23455)
        layer0 = convolutional_mlp.LeNetConvPoolLayer(
            rng, input=x.reshape((batch_size, 1, 28, 28)),
            image_shape=(batch_size, 1, 28, 28), filter_shape=(20, 1, 5, 5),
        )
        layer1 = convolutional_mlp.LeNetConvPoolLayer(
            rng, input=layer0.output,
            image_shape=(batch_size, 20, 12, 12), filter_shape=(50, 20, 5, 5),
        )
        layer2 = HiddenLayer(rng, input=layer1.output.flatten(2), n_in=800, n_out=500)
        layer3 = LogisticRegression(input=layer2.output, n_in=500, n_out=10)

    data = np.random.RandomState(0).uniform(size=(batch_size, 784))
    outputs = [layer0.output, layer1.output, layer2.output, layer3.p_y_given_x]
    shapes = pytensor.function([x], [o.shape for o in outputs], mode="FAST_COMPILE")(data)
    assert [tuple(s) for s in shapes] == [(500, 20, 12, 12), (500, 50, 4, 4), (500, 500), (500, 10)]
    # The shapes are also known statically, without running anything.
    assert layer0.output.type.shape == (500, 20, 12, 12)
    assert layer1.output.type.shape == (500, 50, 4, 4)

    counts = [sum(p.get_value().size for p in layer.params)
              for layer in (layer0, layer1, layer2, layer3)]
    assert counts == [520, 25_050, 400_500, 5_010]
    assert sum(counts) == 431_080


def test_initial_weights_follow_the_original_draws():
    """Bounds from fan-in/fan-out, and the draw order layer0.W, layer1.W, layer2.W."""
    x = pt.matrix("x")
    with pytensor.config.change_flags(floatX="float64"):
        layer0 = convolutional_mlp.LeNetConvPoolLayer(
            np.random.RandomState(23455), input=x.reshape((500, 1, 28, 28)),
            image_shape=(500, 1, 28, 28), filter_shape=(20, 1, 5, 5),
        )
    # fan_in = 1*5*5 = 25, fan_out = 20*5*5/4 = 125: bound sqrt(6/150) = 0.2
    rng = np.random.RandomState(23455)
    expected0 = rng.uniform(low=-0.2, high=0.2, size=(20, 1, 5, 5))
    np.testing.assert_allclose(layer0.W.get_value(), expected0, rtol=0, atol=1e-15)
    # layer1: fan_in = 20*25 = 500, fan_out = 50*25/4 = 312 (Python 2's integer
    # division, as the original ran; 312.5 would give other weights and costs)
    bound1 = np.sqrt(6.0 / (500 + 312))
    expected1 = rng.uniform(low=-bound1, high=bound1, size=(50, 20, 5, 5))
    bound2 = np.sqrt(6.0 / (800 + 500))
    expected2 = rng.uniform(low=-bound2, high=bound2, size=(800, 500))

    rng_port = np.random.RandomState(23455)
    with pytensor.config.change_flags(floatX="float64"):
        l0 = convolutional_mlp.LeNetConvPoolLayer(
            rng_port, input=x.reshape((500, 1, 28, 28)),
            image_shape=(500, 1, 28, 28), filter_shape=(20, 1, 5, 5),
        )
        l1 = convolutional_mlp.LeNetConvPoolLayer(
            rng_port, input=l0.output, image_shape=(500, 20, 12, 12), filter_shape=(50, 20, 5, 5),
        )
        l2 = HiddenLayer(rng_port, input=l1.output.flatten(2), n_in=800, n_out=500)
    np.testing.assert_array_equal(l1.W.get_value(), expected1)
    np.testing.assert_array_equal(l2.W.get_value(), expected2)
    assert abs(l1.W.get_value()).max() <= bound1
    for layer in (l0, l1, l2):
        assert not layer.b.get_value().any()


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_first_three_costs_equal_the_original_library(mnist_arrays, mode):
    with pytensor.config.change_flags(floatX="float64", mode=get_mode(mode)):
        _, train_model, _ = lenet5_functions(small_split(mnist_arrays))
        costs = [float(train_model(i)) for i in range(3)]
    np.testing.assert_allclose(costs, ORIGINAL_FIRST_COSTS, rtol=1e-12, atol=0)
    # The true division's costs are 1e-5 away: the check above tells them apart.
    assert abs(costs[1] - TRUE_DIVISION_COSTS[1]) > 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("floatX, rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_jax_gemm_convolutions_give_the_original_librarys_costs(mnist_arrays, monkeypatch, floatX, rtol):
    """The GPU's convolutions (im2col + GEMM), run here on the CPU."""
    from deeplearning_tutorials.nnet import jax as nnet_jax

    monkeypatch.setattr(nnet_jax, "conv_algorithm", lambda platform, dtype: "gemm")
    with pytensor.config.change_flags(floatX=floatX, mode=get_mode("DLT_JAX")):
        _, train_model, _ = lenet5_functions(small_split(mnist_arrays))
        costs = [float(train_model(i)) for i in range(3)]
    np.testing.assert_allclose(costs, ORIGINAL_FIRST_COSTS, rtol=rtol, atol=0)


@pytest.mark.slow
def test_backends_agree_after_a_few_steps(mnist_arrays):
    """Parameters and validation error after 4 steps agree across modes (float64)."""
    results = {}
    for mode in MODES:
        with pytensor.config.change_flags(floatX="float64", mode=get_mode(mode)):
            layers, train_model, validate_model = lenet5_functions(
                small_split(mnist_arrays, n_train=2000)
            )
            costs = [float(train_model(i)) for i in range(4)]
            err = float(validate_model(0))
        params = [np.asarray(p.get_value()) for layer in layers for p in layer.params]
        results[mode] = (costs, err, params)
    ref_costs, ref_err, ref_params = results["DLT_NUMBA"]
    for mode, (costs, err, params) in results.items():
        np.testing.assert_allclose(costs, ref_costs, rtol=1e-12, err_msg=mode)
        assert err == ref_err, mode
        for p, q in zip(params, ref_params):
            np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12, err_msg=mode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_float32_first_costs_are_close_to_float64(mnist_arrays, mode):
    """float32 stays float32 on every backend and agrees with the float64 numbers."""
    with pytensor.config.change_flags(floatX="float32", mode=get_mode(mode)):
        layers, train_model, _ = lenet5_functions(small_split(mnist_arrays))
        costs = [train_model(i) for i in range(3)]
    assert all(np.asarray(c).dtype == np.float32 for c in costs)
    assert all(np.asarray(p.get_value()).dtype == np.float32 for p in layers[0].params)
    np.testing.assert_allclose([float(c) for c in costs], ORIGINAL_FIRST_COSTS, rtol=1e-5)


@pytest.mark.slow
def test_a_short_real_training_run_learns(mnist_arrays):
    """100 SGD steps of LeNet5 on the first 5,000 real training images.

    Chance is 90 % error. We require under 20 % after 100 steps: a
    gradient that disagrees with the forward pass (a kernel flipped in one and not
    the other, a max-pool gradient sent to the wrong element, a wrong update) leaves
    the error far above that, while the run's own noise across backends and BLAS
    builds is a fraction of a percent.
    """
    subset = small_split(mnist_arrays, n_train=5000, n_valid=1000, n_test=1000)
    r = convolutional_mlp.evaluate_lenet5(
        n_epochs=2, dataset=subset, batch_size=100, floatX="float32", quiet=True
    )
    assert r["epochs"] == 2 and r["iterations"] == 100
    assert r["best_validation_loss"] < 0.20, r
    assert r["test_score"] < 0.20, r
    # The error fell between the two validations (every 50 steps).
    (first_iter, first_err), (_, second_err) = r["validation_curve"]
    assert first_iter == 50 and second_err < first_err
