"""Tests of :mod:`deeplearning_tutorials.nnet.nnet`: Theano's ``sigmoid``, ``softmax``,
``relu``, ``categorical_crossentropy`` and ``binary_crossentropy`` on PyTensor.

The oracle is the NumPy formula of each function, in float64, to 1e-12 (one
function compiled with ``mode="NUMBA"`` holds every output); the gradients are
checked with :func:`pytensor.gradient.verify_grad`.
"""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from deeplearning_tutorials.nnet.nnet import (
    binary_crossentropy,
    categorical_crossentropy,
    hard_sigmoid,
    relu,
    sigmoid,
    softmax,
    softplus,
)

TOL = dict(rtol=1e-12, atol=1e-12)


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(26)
    x = rng.normal(scale=3.0, size=(6, 5))
    v = rng.normal(scale=3.0, size=7)
    dist = np_softmax(rng.normal(size=(6, 5)))
    labels = rng.integers(0, 5, size=6)
    onehot = np.eye(5)[labels]
    out = rng.uniform(0.05, 0.95, size=(6, 5))
    target = rng.uniform(0.0, 1.0, size=(6, 5))
    return dict(x=x, v=v, dist=dist, labels=labels, onehot=onehot, out=out, target=target)


@pytest.fixture(scope="module")
def results(data):
    """Every function, compiled once (NUMBA, float64), evaluated on ``data``."""
    x, v, d, t = pt.dmatrix("x"), pt.dvector("v"), pt.dmatrix("d"), pt.dmatrix("t")
    labels, alpha = pt.lvector("labels"), pt.dscalar("alpha")
    outputs = {
        "sigmoid": sigmoid(x),
        "hard_sigmoid": hard_sigmoid(x),
        "softplus": softplus(x * 100),
        "softmax": softmax(x),
        "softmax_vector": softmax(v),
        "relu": relu(x),
        "relu_leaky": relu(x, 0.1),
        "relu_symbolic": relu(x, alpha),
        "cce_dist": categorical_crossentropy(d, t),
        "cce_labels": categorical_crossentropy(d, labels),
        "bce": binary_crossentropy(d, t),
    }
    fn = pytensor.function([x, v, d, t, labels, alpha], list(outputs.values()), mode="NUMBA")
    values = fn(data["x"], data["v"], data["dist"], data["onehot"], data["labels"], 0.3)
    return dict(zip(outputs, values, strict=True)), outputs


def test_sigmoid(data, results):
    np.testing.assert_allclose(results[0]["sigmoid"], 1 / (1 + np.exp(-data["x"])), **TOL)


def test_hard_sigmoid_is_theanos_line_clipped(data, results):
    x = data["x"]
    np.testing.assert_allclose(results[0]["hard_sigmoid"], np.clip(0.2 * x + 0.5, 0, 1), **TOL)
    assert 0 < (np.abs(x) < 2.5).sum() < x.size  # inside and outside the clipped range


def test_softplus_does_not_overflow(data, results):
    np.testing.assert_allclose(results[0]["softplus"], np.logaddexp(0, data["x"] * 100), **TOL)


def test_softmax_is_row_wise(data, results):
    values, graph = results
    np.testing.assert_allclose(values["softmax"], np_softmax(data["x"]), **TOL)
    np.testing.assert_allclose(values["softmax"].sum(axis=1), np.ones(6), **TOL)
    # A vector gives a vector (Theano 1.0 gave a (1, n) row).
    assert graph["softmax_vector"].type.ndim == 1
    np.testing.assert_allclose(values["softmax_vector"], np_softmax(data["v"]), **TOL)


def test_relu(data, results):
    values, _ = results
    x = data["x"]
    np.testing.assert_allclose(values["relu"], np.maximum(x, 0), **TOL)
    np.testing.assert_allclose(values["relu_leaky"], np.where(x > 0, x, 0.1 * x), **TOL)
    np.testing.assert_allclose(values["relu_symbolic"], np.where(x > 0, x, 0.3 * x), **TOL)


def test_categorical_crossentropy_both_label_forms(data, results):
    values, graph = results
    expected = -np.log(data["dist"][np.arange(6), data["labels"]])
    np.testing.assert_allclose(values["cce_labels"], expected, **TOL)
    np.testing.assert_allclose(values["cce_dist"], -(data["onehot"] * np.log(data["dist"])).sum(-1), **TOL)
    np.testing.assert_allclose(values["cce_dist"], values["cce_labels"], **TOL)
    assert graph["cce_labels"].type.ndim == graph["cce_dist"].type.ndim == 1


def test_binary_crossentropy(data, results):
    out, target = data["dist"], data["onehot"]
    expected = -(target * np.log(out) + (1 - target) * np.log(1 - out))
    np.testing.assert_allclose(results[0]["bce"], expected, **TOL)


def test_crossentropies_against_soft_targets(data):
    """A second evaluation: soft (non one-hot) targets, 3-d distributions."""
    d, t = pt.dtensor3("d"), pt.dtensor3("t")
    o, g = pt.dmatrix("o"), pt.dmatrix("g")
    fn = pytensor.function([d, t, o, g], [categorical_crossentropy(d, t), binary_crossentropy(o, g)],
                           mode="NUMBA")
    rng = np.random.default_rng(1)
    dist = np_softmax(rng.normal(size=(2, 3, 4)))
    soft = np_softmax(rng.normal(size=(2, 3, 4)))
    cce, bce = fn(dist, soft, data["out"], data["target"])
    np.testing.assert_allclose(cce, -(soft * np.log(dist)).sum(-1), **TOL)
    out, target = data["out"], data["target"]
    np.testing.assert_allclose(bce, -(target * np.log(out) + (1 - target) * np.log(1 - out)), **TOL)


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def away_from_zero(x):
    return np.where(np.abs(x) < 0.1, 0.5, x)


def test_grad_sigmoid(data, rng):
    verify_grad(sigmoid, [data["x"]], rng=rng)


def test_grad_softmax(data, rng):
    verify_grad(softmax, [data["x"]], rng=rng)
    verify_grad(softmax, [data["v"]], rng=rng)


def test_grad_relu(data, rng):
    x = away_from_zero(data["x"])
    verify_grad(relu, [x], rng=rng)
    verify_grad(lambda a: relu(a, 0.2), [x], rng=rng)
    verify_grad(relu, [x, np.asarray(0.3)], rng=rng)


def test_grad_relu_at_zero_is_theanos():
    x = pt.dvector("x")
    g = pytensor.function([x], [pt.grad(relu(x).sum(), x), pt.grad(relu(x, 0.2).sum(), x)], mode="NUMBA")
    plain, leaky = g(np.array([-1.0, 0.0, 2.0]))
    np.testing.assert_allclose(plain, [0.0, 0.5, 1.0], **TOL)
    np.testing.assert_allclose(leaky, [0.2, 0.6, 1.0], **TOL)


def test_grad_categorical_crossentropy(data, rng):
    labels = data["labels"]
    verify_grad(lambda d: categorical_crossentropy(d, labels), [data["dist"]], rng=rng)
    verify_grad(categorical_crossentropy, [data["dist"], data["onehot"]], rng=rng)


def test_grad_binary_crossentropy(data, rng):
    verify_grad(binary_crossentropy, [data["out"], data["target"]], rng=rng)


# ---------------------------------------------------------------------------
# Types and errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("floatX", ["float32", "float64"])
def test_dtypes(floatX):
    with pytensor.config.change_flags(floatX=floatX):
        x = pt.matrix("x")
        assert sigmoid(x).dtype == softmax(x).dtype == relu(x).dtype == floatX
        # Python numbers keep floatX; a NumPy float64 alpha upcasts (as in Theano).
        assert relu(x, 0.1).dtype == floatX
        assert relu(x, np.float64(0.1)).dtype == "float64"
        assert categorical_crossentropy(softmax(x), pt.lvector()).dtype == floatX
        assert categorical_crossentropy(softmax(x), pt.matrix()).dtype == floatX
        assert binary_crossentropy(sigmoid(x), pt.matrix()).dtype == floatX
        assert sigmoid(pt.lvector()).dtype.startswith("float")


def test_errors():
    with pytest.raises(ValueError, match="1-d or 2-d"):
        softmax(pt.tensor3())
    with pytest.raises(ValueError, match="1-d or 2-d"):
        softmax(pt.lmatrix())
    with pytest.warns(UserWarning, match="shape 1"):
        softmax(pt.tensor("c", shape=(None, 1), dtype="float64"))
    with pytest.raises(TypeError, match="rank mismatch"):
        categorical_crossentropy(pt.dmatrix(), pt.dtensor3())
    with pytest.raises(TypeError, match="rank mismatch"):
        categorical_crossentropy(pt.dmatrix(), pt.dscalar())
    with pytest.raises(TypeError, match="integer vector"):
        categorical_crossentropy(pt.dmatrix(), pt.dvector())
    with pytest.raises(TypeError, match="matrix required"):
        categorical_crossentropy(pt.dtensor3(), pt.lmatrix())
