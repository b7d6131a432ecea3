"""Tests of the padding Ops (:mod:`deeplearning_tutorials.nnet.pad`) on every backend.

The oracle is ``numpy.pad`` after spreading the input (``interior`` zeros
between each two of its rows and columns), then padding on to ``at_least``;
the gradient is the part of the upstream gradient the input went to. Shapes
are undeclared, so each backend works the sizes out from the arrays.
"""

import importlib.util

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from deeplearning_tutorials.nnet.pad import Pad2d

HAS_JAX = importlib.util.find_spec("jax") is not None
pytestmark = pytest.mark.usefixtures("jax_x64")

# (input shape, before, after, value, at_least, interior)
CASES = [
    ((2, 3, 4, 5), (1, 2), (0, 3), 0.0, (0, 0), (0, 0)),
    ((2, 3, 4, 5), (0, 0), (0, 0), 0.0, (0, 0), (1, 2)),
    ((3, 1, 2), (2, 0), (1, 1), -np.inf, (9, 3), (2, 0)),
    ((1, 1, 1, 3), (0, 1), (0, 0), 1.5, (4, 0), (3, 1)),
    ((4, 6), (0, 0), (2, 0), 0.0, (0, 10), (0, 0)),
]
#: The padded shapes of CASES, worked out by hand.
PADDED = [(2, 3, 5, 10), (2, 3, 7, 13), (3, 9, 3), (1, 1, 4, 6), (6, 10)]


def oracle(x, before, after, value, at_least, interior):
    h, w = x.shape[-2:]
    sizes = [max(b + n + (n - 1) * i + a, m)
             for n, b, a, m, i in zip((h, w), before, after, at_least, interior)]
    y = np.full(x.shape[:-2] + tuple(sizes), value)
    rows = slice(before[0], before[0] + (h - 1) * (interior[0] + 1) + 1, interior[0] + 1)
    cols = slice(before[1], before[1] + (w - 1) * (interior[1] + 1) + 1, interior[1] + 1)
    y[..., rows, cols] = x
    return y, (rows, cols)


@pytest.mark.parametrize("mode", [
    "NUMBA", "CVM", "C",
    pytest.param("JAX", marks=pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed")),
])
def test_pad_and_its_gradient_match_numpy(mode):
    rng = np.random.default_rng(0)
    inputs, outputs, data = [], [], []
    for k, (shape, *args) in enumerate(CASES):
        x = pt.tensor(f"x{k}", dtype="float64", shape=(None,) * len(shape))
        gy = pt.tensor(f"g{k}", dtype="float64", shape=(None,) * len(shape))
        y = Pad2d(*args)(x)
        inputs += [x, gy]
        outputs += [y, pytensor.grad((y * gy).sum(), x)]
        xv = rng.normal(size=shape)
        want, where = oracle(xv, *args)
        gv = rng.normal(size=want.shape)
        data.append((xv, gv, want, gv[(Ellipsis, *where)]))
    got = pytensor.function(inputs, outputs, mode=mode)(*[a for d in data for a in d[:2]])
    for k, (case, (_, _, want, gx)) in enumerate(zip(CASES, data)):
        assert want.shape == PADDED[k]
        np.testing.assert_array_equal(got[2 * k], want, err_msg=str(case))
        np.testing.assert_array_equal(got[2 * k + 1], gx, err_msg=str(case))


def test_static_shapes_are_the_padded_sizes():
    y = Pad2d((1, 0), (0, 2), at_least=(0, 9), interior=(2, 1))(pt.tensor3(shape=(2, 3, 4)))
    assert y.type.shape == (2, 1 + 3 + 2 * 2, 9)


def test_verify_grad_through_interior_padding():
    rng = np.random.default_rng(1)
    verify_grad(lambda a: Pad2d((1, 0), (0, 1), interior=(1, 2))(a) ** 2,
                [rng.normal(size=(2, 3, 4))], rng=rng, mode="NUMBA")
