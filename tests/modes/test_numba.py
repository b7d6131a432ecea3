"""Tests of :mod:`deeplearning_tutorials.modes.numba`: ``DLT_NUMBA``'s two quick-compiling nodes.

``SpecifyShape`` with constant dimensions becomes :class:`ShapeCheck` and
``Alloc`` of a one-valued constant becomes :class:`Full`, in ``DLT_NUMBA`` only;
the functions give PyTensor's NUMBA numbers bit for bit, and refuse what
PyTensor's refuse.
"""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import deeplearning_tutorials.modes  # noqa: F401 (registers DLT_NUMBA)
from deeplearning_tutorials.modes.numba import Full, ShapeCheck


def _ops(f):
    return [type(node.op).__name__ for node in f.maker.fgraph.toposort()]


def _likelihood_step():
    """A softmax layer's likelihood and gradient, with declared weight shapes."""
    x, y = pt.matrix("x"), pt.lvector("y")
    w = pt.matrix("w")
    p = pt.special.softmax(x @ pt.specify_shape(w, (7, 3)), axis=1)
    nll = -pt.mean(pt.log(p)[pt.arange(y.shape[0]), y])
    return [x, y, w], [nll, pytensor.grad(nll, w)]


def test_the_nodes_are_replaced_and_the_numbers_are_numbas():
    inputs, outputs = _likelihood_step()
    ours = pytensor.function(inputs, outputs, mode="DLT_NUMBA")
    theirs = pytensor.function(inputs, outputs, mode="NUMBA")
    assert {"ShapeCheck", "Full"} <= set(_ops(ours))
    assert not {"SpecifyShape", "Alloc"} & set(_ops(ours))
    assert {"SpecifyShape", "Alloc"} <= set(_ops(theirs))  # PyTensor's NUMBA is left alone
    rng = np.random.default_rng(3)
    args = rng.standard_normal((20, 7)), rng.integers(0, 3, 20), rng.standard_normal((7, 3))
    for got, want in zip(ours(*args), theirs(*args)):
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("mode", ["DLT_NUMBA", "NUMBA", "FAST_COMPILE"])
def test_a_wrong_shape_is_refused_as_pytensor_refuses_it(mode):
    w = pt.matrix("w")
    f = pytensor.function([w], pt.specify_shape(w, (7, 3)) * 2, mode=mode)
    assert f(np.ones((7, 3))).sum() == 42
    with pytest.raises(AssertionError, match="SpecifyShape"):
        f(np.ones((3, 7)))


@pytest.mark.filterwarnings("error:Numba will use object mode")
@pytest.mark.parametrize("mode", ["DLT_NUMBA", "NUMBA", "FAST_COMPILE"])
def test_the_ops_themselves(mode):
    # Built directly: Numba's implementations and the Python ones (perform).
    x, n = pt.tensor3("x"), pt.lscalar("n")
    checked = ShapeCheck((None, 2, 5))(x)
    assert checked.type.shape == (None, 2, 5)
    filled = Full(1.5, "float32", (None, 4))(n, 4)
    f = pytensor.function([x, n], [checked + 1, filled], mode=mode)
    got, full = f(np.zeros((3, 2, 5)), 6)
    assert got.shape == (3, 2, 5) and (got == 1).all()
    assert full.dtype == np.float32 and full.shape == (6, 4) and (full == 1.5).all()
    with pytest.raises(AssertionError, match=r"expected shape \(None, 2, 5\)"):
        f(np.zeros((3, 5, 2)), 6)
    with pytest.raises(TypeError, match="needs a 2-d tensor"):
        ShapeCheck((2, 5))(x)
    free = pytensor.function([x], ShapeCheck((None, None, None))(x) * 2, mode=mode)
    assert free(np.ones((1, 2, 3))).sum() == 12


def test_an_alloc_of_varied_values_is_left_to_pytensor():
    n = pt.lscalar("n")
    f = pytensor.function([n], pt.alloc(np.array([1.0, 2.0]), n, 2), mode="DLT_NUMBA")
    assert "Alloc" in _ops(f) and "Full" not in _ops(f)
    assert f(3).tolist() == [[1.0, 2.0]] * 3


def test_the_rewrite_is_registered_under_the_packages_tag_only():
    from pytensor.compile.mode import get_mode

    from deeplearning_tutorials.modes.numba import TAG

    assert TAG in get_mode("DLT_NUMBA").provided_optimizer.include
    for mode in ("NUMBA", "CVM", "C", "JAX", "FAST_RUN", "DLT_CVM", "DLT_C", "DLT_JAX"):
        assert TAG not in get_mode(mode).provided_optimizer.include, mode


def test_their_shapes_are_known_without_running_them():
    x, n = pt.tensor3("x"), pt.lscalar("n")
    shapes = [ShapeCheck((None, 2, 5))(x).shape, Full(0.0, "float64", (None, 4))(n, 4).shape]
    f = pytensor.function([x, n], shapes)
    assert not {"ShapeCheck", "Full"} & set(_ops(f))
    assert [s.tolist() for s in f(np.zeros((3, 2, 5)), 6)] == [[3, 2, 5], [6, 4]]
