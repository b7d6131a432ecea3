"""The Numba-only stand-ins of :mod:`deeplearning_tutorials.numba_ops`.

Each is compiled through the Numba backend from the PyTensor expression it
replaces (so the rewrite is tested too) and checked against NumPy, in float64
tightly and in float32 loosely; its Python ``perform`` is checked the same way,
and the errors NumPy raises are raised.
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode
from pytensor.tensor.special import log_softmax, softmax

from deeplearning_tutorials.numba_ops import (
    ENTRY_POINT_SALT,
    AddAxes,
    CheckShape,
    Fill,
    MatMul,
    PairInc,
    PairTake,
    RowSlice,
    RowSoftmax,
    SumAcc64,
    Transposed,
    entry_point,
    QUICK_LIBRARIES,
)

RTOL = {"float64": 1e-12, "float32": 1e-6}
PY = Mode(linker="py", optimizer=None)


def _numba(inputs, outputs):
    # An Op without a Numba function would run its ``perform`` in object mode, with a warning.
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*object mode.*")
        return pytensor.function(inputs, outputs, mode="NUMBA")


def _ops(fn):
    return [type(node.op) for node in fn.maker.fgraph.toposort()]


def _softmax_oracle(x):
    x = x.astype("float64")
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_and_log_softmax_along_rows(dtype):
    x = pt.matrix(dtype=dtype)
    fn = _numba([x], [softmax(x, axis=1), log_softmax(x, axis=1)])
    assert _ops(fn).count(RowSoftmax) == 2
    data = np.random.default_rng(0).normal(scale=5, size=(7, 10)).astype(dtype)
    p, logp = fn(data)
    assert p.dtype == logp.dtype == dtype
    np.testing.assert_allclose(p, _softmax_oracle(data), rtol=RTOL[dtype])
    np.testing.assert_allclose(logp, np.log(_softmax_oracle(data)), rtol=RTOL[dtype])
    py = pytensor.function([x], [RowSoftmax()(x), RowSoftmax(log=True)(x)], mode=PY)
    for got, want in zip(py(data), (p, logp)):
        np.testing.assert_allclose(got, want, rtol=RTOL[dtype])


def test_softmax_of_a_nan_row_is_nan_and_other_rows_are_untouched():
    x = pt.matrix()
    fn = _numba([x], softmax(x, axis=1))
    data = np.array([[0.0, np.nan, 1.0], [0.0, 0.0, 0.0]])
    p = fn(data)
    assert np.isnan(p[0]).all()
    np.testing.assert_allclose(p[1], 1 / 3)


def test_softmax_of_empty_matrices():
    x = pt.matrix()
    fn = _numba([x], softmax(x, axis=1))
    py = pytensor.function([x], RowSoftmax()(x), mode=PY)
    for f in (fn, py):
        assert f(np.zeros((0, 3))).shape == (0, 3)
        assert f(np.zeros((0, 0))).shape == (0, 0)
        with pytest.raises(ValueError, match="no element"):
            f(np.zeros((2, 0)))


def test_softmax_along_other_axes_keeps_pytensors_op():
    x = pt.matrix()
    fn = _numba([x], softmax(x, axis=0))
    assert RowSoftmax not in _ops(fn)
    np.testing.assert_allclose(fn(np.eye(3)), _softmax_oracle(np.eye(3).T).T, rtol=1e-12)


def test_the_c_and_jax_backends_do_not_get_these_ops():
    x, y = pt.matrix(), pt.ivector()
    nll = -pt.mean(pt.log(softmax(x, axis=1))[pt.arange(y.shape[0]), y])
    for mode in ("CVM", "JAX"):
        fn = pytensor.function([x, y], [nll, pytensor.grad(nll, x)], mode=mode)
        assert not set(_ops(fn)) & {RowSoftmax, PairTake, PairInc, Fill, SumAcc64, CheckShape,
                                    MatMul}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_negative_log_likelihood_and_its_gradient(dtype):
    """The tutorial's cost: the pick, its gradient (an increment of zeros) and the mean."""
    x, y = pt.matrix(dtype=dtype), pt.ivector()
    nll = -pt.mean(pt.log(softmax(x, axis=1))[pt.arange(y.shape[0]), y])
    fn = _numba([x, y], [nll, pytensor.grad(nll, x)])
    ops = _ops(fn)
    for op in (RowSoftmax, PairTake, PairInc, Fill, SumAcc64):
        assert op in ops, op
    data = np.random.default_rng(1).normal(size=(6, 4)).astype(dtype)
    labels = np.array([0, 3, 3, 1, 2, 0], dtype="int32")
    cost, grad = fn(data, labels)
    p = _softmax_oracle(data)
    np.testing.assert_allclose(cost, -np.log(p[np.arange(6), labels]).mean(), rtol=RTOL[dtype])
    onehot = np.eye(4)[labels]
    np.testing.assert_allclose(grad, (p - onehot) / 6, rtol=RTOL[dtype] * 10, atol=1e-7)


def test_pair_take_follows_numpy():
    x, r, c = pt.matrix(), pt.lvector(), pt.lvector()
    fn = _numba([x, r, c], x[r, c])
    assert PairTake in _ops(fn)
    data = np.arange(12.0).reshape(3, 4)
    for rows, cols in (([0, 2, -1], [3, -4, 1]), ([1], [0, 1, 2]), ([0, 1, 2], [2]), ([], [])):
        rows, cols = np.array(rows, dtype="int64"), np.array(cols, dtype="int64")
        np.testing.assert_array_equal(fn(data, rows, cols), data[rows, cols])
        py = pytensor.function([x, r, c], PairTake()(x, r, c), mode=PY)
        np.testing.assert_array_equal(py(data, rows, cols), data[rows, cols])
    with pytest.raises(IndexError, match="out of bounds"):
        fn(data, np.array([3]), np.array([0]))
    with pytest.raises(IndexError, match="out of bounds"):
        fn(data, np.array([0]), np.array([-5]))
    with pytest.raises(IndexError, match="broadcast"):
        fn(data, np.array([0, 1]), np.array([0, 1, 2]))


@pytest.mark.parametrize("set_instead_of_inc", [False, True])
def test_pair_inc_follows_numpy(set_instead_of_inc):
    x, v, r, c = pt.matrix(), pt.vector(), pt.lvector(), pt.lvector()
    update = pt.set_subtensor if set_instead_of_inc else pt.inc_subtensor
    fn = _numba([x, v, r, c], update(x[r, c], v))
    assert PairInc in _ops(fn)
    data = np.arange(12.0).reshape(3, 4)
    rows, cols = np.array([0, 2, 0, -1]), np.array([1, 3, 1, 0])
    for values in (np.array([10.0, 20.0, 30.0, 40.0]), np.array([5.0])):
        want = data.copy()
        if set_instead_of_inc:
            want[rows, cols] = values
        else:
            np.add.at(want, (rows, cols), np.broadcast_to(values, rows.shape))  # repeats add up
        np.testing.assert_array_equal(fn(data, values, rows, cols), want)
        py = pytensor.function([x, v, r, c], PairInc(set_instead_of_inc)(x, v, r, c), mode=PY)
        np.testing.assert_array_equal(py(data, values, rows, cols), want)
    np.testing.assert_array_equal(data, np.arange(12.0).reshape(3, 4))  # the input is left alone
    with pytest.raises(ValueError, match="length"):
        fn(data, np.ones(3), rows, cols)
    with pytest.raises(IndexError, match="out of bounds"):
        fn(data, np.ones(1), np.array([0]), np.array([4]))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fill(dtype):
    n, m = pt.lscalar(), pt.lscalar()
    value = pt.scalar(dtype=dtype)
    fn = _numba([value, n, m], [pt.alloc(value, n, m), pt.alloc(value.dimshuffle("x", "x"), 2, n, m)])
    assert _ops(fn).count(Fill) == 2
    a, b = fn(np.asarray(1.5, dtype=dtype), 3, 4)
    np.testing.assert_array_equal(a, np.full((3, 4), 1.5, dtype=dtype))
    np.testing.assert_array_equal(b, np.full((2, 3, 4), 1.5, dtype=dtype))
    assert a.dtype == b.dtype == dtype
    with pytest.raises(ValueError):
        fn(np.asarray(1.5, dtype=dtype), -1, 4)
    py = pytensor.function([value, n, m], Fill(2)(value, n, m), mode=PY)
    np.testing.assert_array_equal(py(np.asarray(1.5, dtype=dtype), 3, 4), a)


def test_alloc_of_a_row_keeps_pytensors_op():
    row, n = pt.vector(), pt.lscalar()
    fn = _numba([row, n], pt.alloc(row, n, 3))
    assert Fill not in _ops(fn)
    np.testing.assert_array_equal(fn(np.arange(3.0), 2), np.tile(np.arange(3.0), (2, 1)))


def test_check_shape():
    x = pt.tensor4()
    fn = _numba([x], pt.specify_shape(x, (2, None, 3, 1)) * 2)
    assert CheckShape in _ops(fn)
    np.testing.assert_array_equal(fn(np.ones((2, 5, 3, 1))), 2 * np.ones((2, 5, 3, 1)))
    with pytest.raises(AssertionError, match=r"not \(2, None, 3, 1\)"):
        fn(np.ones((2, 5, 4, 1)))
    py = pytensor.function([x], CheckShape((2, None, 3, 1))(x), mode=PY)
    with pytest.raises(AssertionError, match=r"not \(2, None, 3, 1\)"):
        py(np.ones((1, 5, 3, 1)))
    with pytest.raises(TypeError):
        CheckShape((2, 3))(x)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sums_accumulate_in_float64(dtype):
    m, v = pt.matrix(dtype=dtype), pt.vector(dtype=dtype)
    outs = [m.sum(axis=0), m.sum(axis=1), m.sum(), v.sum()]
    fn = _numba([m, v], outs)
    assert _ops(fn).count(SumAcc64) == 4
    rng = np.random.default_rng(2)
    # Large and small values: a float32 accumulator would lose the small ones.
    mat = (rng.normal(size=(300, 7)) * np.where(rng.random((300, 7)) < 0.1, 1e6, 1)).astype(dtype)
    vec = mat[:, 0].copy()
    want = [mat.sum(axis=0, dtype="float64"), mat.sum(axis=1, dtype="float64"),
            mat.sum(dtype="float64"), vec.sum(dtype="float64")]
    for got, w in zip(fn(mat, vec), want):
        assert got.dtype == dtype and got.shape == w.shape
        np.testing.assert_allclose(got, w.astype(dtype), rtol=RTOL[dtype])
    py = pytensor.function([m], SumAcc64((0,))(m), mode=PY)
    np.testing.assert_allclose(py(mat), want[0].astype(dtype), rtol=RTOL[dtype])


def test_rewrite_skips_what_it_does_not_handle():
    t3 = pt.tensor3()
    fn = _numba([t3], [t3.sum(axis=1), pt.specify_shape(t3, (t3.shape[0], 2, 2))])
    assert SumAcc64 not in _ops(fn) and CheckShape not in _ops(fn)
    out, same = fn(np.ones((3, 2, 2)))
    np.testing.assert_array_equal(out, 2 * np.ones((3, 2)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_new_axes_transposes_and_row_slices(dtype):
    v, m, s = pt.vector(dtype=dtype), pt.matrix(dtype=dtype), pt.scalar(dtype=dtype)
    i, j = pt.iscalar(), pt.lscalar()
    outs = [v.dimshuffle("x", 0, "x", "x"), s.dimshuffle("x", "x"), m.T, m[i:j], m[i:], m[:j],
            v[i:j], m[::2].dimshuffle("x", 0, 1), m[::2].T, m[i:].shape]
    fn = _numba([v, m, s, i, j], outs)
    ops = _ops(fn)
    assert ops.count(AddAxes) == 3 and ops.count(Transposed) == 2 and ops.count(RowSlice) == 4
    rng = np.random.default_rng(0)
    vd, md = rng.normal(size=4).astype(dtype), rng.normal(size=(5, 3)).astype(dtype)
    sd = np.asarray(2.5, dtype=dtype)
    for a, b in [(1, 3), (-2, 5), (4, 1), (-9, 9), (0, -1), (7, 8)]:
        want = [vd[None, :, None, None], sd[None, None], md.T, md[a:b], md[a:], md[:b], vd[a:b],
                md[::2][None], md[::2].T, np.array(md[a:].shape)]
        for got, w in zip(fn(vd, md, sd, a, b), want):
            assert got.dtype == w.dtype and got.shape == w.shape
            np.testing.assert_array_equal(got, w)
    # Their Python implementations, and the layouts Numba gets from them.
    py = pytensor.function([v, m, i, j], [AddAxes((0, 2))(v), Transposed()(m),
                                          RowSlice(True, True)(m, i, j), RowSlice(False, True)(v, j)],
                           mode=PY)
    for got, w in zip(py(vd, md, 1, -1), [vd[None, :, None], md.T, md[1:-1], vd[:-1]]):
        np.testing.assert_array_equal(got, w)
    assert AddAxes((0,)).make_node(v).outputs[0].type.shape == (1, None)
    with pytest.raises(TypeError):
        AddAxes((0, 0))(v)


def test_new_axes_and_slices_give_numba_c_ordered_arrays():
    # The point of the stand-ins: Numba knows their outputs' layout, so the nodes
    # after them are compiled for C- (or Fortran-) ordered arrays.
    import numba

    from pytensor.link.numba.dispatch.basic import numba_funcify

    v, m, i = pt.vector(), pt.matrix(), pt.lscalar()
    layouts = []
    for op, inputs, args in [(AddAxes((0, 2, 3)), [v], (np.ones(3),)),
                             (Transposed(), [m], (np.ones((2, 3)),)),
                             (RowSlice(True, True), [m, pt.scalar_from_tensor(i),
                                                     pt.scalar_from_tensor(i + 1)],
                              (np.ones((4, 3)), 1, 2))]:
        node = op.make_node(*inputs)
        fn = numba.njit(numba_funcify(op, node=node).py_func)
        fn(*args)
        layouts.append(fn.nopython_signatures[0].return_type.layout)
    assert layouts == ["C", "F", "C"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matrix_products_in_every_layout(dtype):
    # C-ordered operands, Fortran-ordered ones (a transpose), strided ones (every other
    # row), and the empty ones, against NumPy; with the C library, through the BLAS.
    x, y = pt.matrix(dtype=dtype), pt.matrix(dtype=dtype)
    outs = [pt.dot(x, y), pt.dot(y.T, x.T), pt.dot(x[::2], y)]
    fn = _numba([x, y], outs)
    assert _ops(fn).count(MatMul) == 3
    rng = np.random.default_rng(1)
    for m, k, n in [(7, 5, 3), (1, 4, 1), (6, 1, 2), (4, 0, 3), (0, 3, 2), (5, 3, 0)]:
        xd = rng.normal(size=(m, k)).astype(dtype)
        yd = rng.normal(size=(k, n)).astype(dtype)
        want = [xd @ yd, yd.T @ xd.T, xd[::2] @ yd]
        for got, w in zip(fn(xd, yd), want):
            assert got.dtype == dtype and got.shape == w.shape
            np.testing.assert_allclose(got, w, rtol=RTOL[dtype], atol=RTOL[dtype])
    with pytest.raises(ValueError, match="not aligned"):
        fn(np.ones((2, 3), dtype=dtype), np.ones((4, 2), dtype=dtype))
    py = pytensor.function([x, y], MatMul()(x, y), mode=PY)
    np.testing.assert_allclose(py(xd, yd), xd @ yd, rtol=RTOL[dtype])
    with pytest.raises(TypeError):
        MatMul()(x, pt.vector(dtype=dtype))
    with pytest.raises(TypeError):
        MatMul()(pt.matrix(dtype=dtype, shape=(2, 3)), pt.matrix(dtype=dtype, shape=(4, 2)))


def test_products_of_mixed_or_integer_dtypes_keep_pytensors_dot():
    from pytensor.tensor.math import Dot

    from deeplearning_tutorials.numba_ops import _replacement

    x, v, xf = pt.matrix(), pt.vector(), pt.matrix(dtype="float32")
    assert _replacement(Dot()(xf, x).owner) is None
    assert _replacement(Dot()(pt.lmatrix(), pt.lmatrix()).owner) is None
    assert isinstance(_replacement(Dot()(xf, xf).owner).owner.op, MatMul)
    fn = _numba([x, v, xf], [pt.dot(x, v), pt.dot(xf, x)])
    got = fn(np.ones((2, 3)), np.arange(3.0), np.ones((2, 2), dtype="float32"))
    np.testing.assert_allclose(got[0], [3.0, 3.0])
    np.testing.assert_allclose(got[1], 2 * np.ones((2, 3)))


def test_lenet5_training_graph_on_numba_uses_them(mnist_pkl):
    """The training function of LeNet5 on Numba has none of the slow-to-compile nodes left."""
    from pytensor.tensor.basic import Alloc
    from pytensor.tensor.math import Sum
    from pytensor.tensor.shape import SpecifyShape
    from pytensor.tensor.special import LogSoftmax, Softmax
    from pytensor.tensor.elemwise import DimShuffle
    from pytensor.tensor.subtensor import AdvancedIncSubtensor, AdvancedSubtensor, Subtensor

    from deeplearning_tutorials import datasets
    from deeplearning_tutorials.testing import lenet5_functions

    (tx, ty), (vx, vy), _ = datasets.load_arrays(mnist_pkl)
    data = [(tx[:500], ty[:500]), (vx[:500], vy[:500]), (vx[:500], vy[:500])]
    _, train_model, _ = lenet5_functions(data, mode="NUMBA")
    ops = _ops(train_model)
    slow = (Softmax, LogSoftmax, Alloc, SpecifyShape, AdvancedSubtensor, AdvancedIncSubtensor, Sum)
    assert not [op for op in ops if issubclass(op, slow) or op in (DimShuffle, Subtensor)]
    for op in (RowSoftmax, PairTake, PairInc, Fill, CheckShape, SumAcc64, AddAxes, Transposed,
               RowSlice, MatMul):
        assert op in ops, op


# --------------------------------------------------------------------------
# The compiled function's entry point
# --------------------------------------------------------------------------

_ENTRY_SCRIPT = """
import numpy as np, pytensor, pytensor.tensor as pt
import deeplearning_tutorials.numba_ops
x = pt.vector("x")
w = pytensor.shared(np.linspace(-1, 1, 5))
f = pytensor.function([x], [pt.tanh(x * w).sum(), pt.exp(x) + 1], mode="NUMBA")
entry = f.vm.jit_fn
values = f(np.arange(5.0))
print(entry.py_func.__name__, "jitable_func" in entry.py_func.__globals__,
      sum(entry.stats.cache_hits.values()), sum(entry.stats.cache_misses.values()),
      repr(float(values[0])), repr(values[1].tolist()))
"""


def test_the_graphs_function_is_the_cached_entry_point(tmp_path):
    # A fresh compile directory: the first process compiles the graph's own function as the
    # entry point (no wrapper around it) and caches it; the second loads it from the cache.
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={tmp_path}")
    env.pop("NUMBA_CACHE_DIR", None)
    runs = [subprocess.run([sys.executable, "-c", _ENTRY_SCRIPT], env=env, capture_output=True,
                           text=True, check=True).stdout.split(maxsplit=5) for _ in range(2)]
    assert runs[0][:4] == ["numba_funcified_fgraph", "False", "0", "1"]
    assert runs[1][:4] == ["numba_funcified_fgraph", "False", "1", "0"]
    assert runs[0][4:] == runs[1][4:]
    want = np.tanh(np.arange(5.0) * np.linspace(-1, 1, 5)).sum()
    assert float(runs[0][4]) == pytest.approx(want, rel=1e-12)
    names = os.listdir(tmp_path / "numba")
    assert any(n.startswith("string.numba_funcified_fgraph-") and ENTRY_POINT_SALT in n
               for n in names)


_QUICK_SCRIPT = """
import numpy as np, pytensor, pytensor.tensor as pt
from numba.core import codegen
import deeplearning_tutorials.numba_ops as ops
x = pt.matrix("x")
w = pytensor.shared(np.linspace(-1, 1, 6).reshape(3, 2))
f = pytensor.function([x], pt.tanh(pt.dot(x, w)).sum(), mode="NUMBA")
# Which of Numba's module pass managers each library's final pass asks for.
asked, passes = [], []
managers = codegen.CPUCodegen._module_pass_manager
def spy(self, **kwargs):
    asked.append(kwargs.get("cost", "full"))
    return managers(self, **kwargs)
codegen.CPUCodegen._module_pass_manager = spy
final = codegen.CPUCodeLibrary._optimize_final_module
def record(self):
    n = len(asked)
    final(self)
    passes.append((self.name, ",".join(asked[n:])))
codegen.CPUCodeLibrary._optimize_final_module = record
value = f(np.ones((4, 3)))
print(repr(float(value)), ",".join(sorted(ops.QUICK_LIBRARIES)))
for name, done in passes:
    print(name, "|", done)
"""


def test_the_graphs_function_gets_only_the_quick_final_pass(tmp_path):
    # A fresh compile directory, so that Numba compiles every function: the graph's
    # own function gets Numba's cheap module pass only, its nodes both passes.
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={tmp_path}", DLT_NUMBA_AHEAD="0")
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", _QUICK_SCRIPT], env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    value, quick = out[0].split(maxsplit=1)
    want = np.tanh(np.ones((4, 3)) @ np.linspace(-1, 1, 6).reshape(3, 2)).sum()
    assert float(value) == pytest.approx(want, rel=1e-12)
    assert quick == "numba_funcified_fgraph"
    passes = [line.split(" | ") for line in out[1:]]
    assert [done for name, done in passes if name == "numba_funcified_fgraph"] == ["cheap"]
    nodes = [done for name, done in passes if name != "numba_funcified_fgraph"]
    assert nodes and set(nodes) == {"cheap,full"}


def test_entry_point_leaves_graphs_it_cannot_cache_to_pytensor():
    import numba

    @numba.njit
    def jitable_func(*args):
        return args

    assert entry_point((jitable_func, None)) is None  # no cache key: PyTensor's own way
    assert entry_point((jitable_func, "key")) is None  # not PyTensor's wrapper
    with pytensor.config.change_flags(numba__cache=False):
        assert entry_point((jitable_func, "key")) is None
