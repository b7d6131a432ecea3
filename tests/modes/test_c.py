"""Tests of :mod:`deeplearning_tutorials.modes.c`: the package's C modes, ``DLT_CVM`` and ``DLT_C``.

* :class:`MatMul` (SciPy's BLAS from C) against NumPy, for every memory layout its
  C code distinguishes (C-contiguous, transposed views, copies of anything else)
  and for empty operands;
* :class:`NumPyTanh` against ``numpy.tanh``, bit for bit, for any layout and the
  special values;
* the rewrites: matrix products become :class:`MatMul`, ``tanh`` :class:`NumPyTanh`, ``Softmax`` /
  ``LogSoftmax`` are inlined, the likelihood's pick ``log(p)[arange(n), y]`` and
  its gradient become flat takes, so the tutorials' graphs run entirely as C code
  (``DLT_CVM`` has no Python thunk but the bookkeeping nodes it runs in Python on
  purpose, ``DLT_C`` compiles at all), with PyTensor's NUMBA mode's numbers;
* ``DLT_CVM``'s :class:`PythonNode` s: bookkeeping only, the same bits, fewer C modules;
* PyTensor's own modes are left as they are.
"""

import functools
import math

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import get_mode
from pytensor.gradient import verify_grad
from pytensor.link.c.basic import CLinker
from pytensor.tensor.elemwise import CAReduce, Elemwise
from pytensor.tensor.special import LogSoftmax, Softmax
from pytensor.tensor.subtensor import AdvancedIncSubtensor, AdvancedSubtensor

import deeplearning_tutorials.modes  # noqa: F401 (registers the DLT_ modes)
from deeplearning_tutorials.modes import WholeGraphCLinker
from deeplearning_tutorials.modes.c import (CVM_TAG, TAG, AdvancedIncSubtensor1, MatMul, NumPySum,
                                           NumPyTanh, PythonNode, matmul)
from deeplearning_tutorials.nnet import pool_2d

DTYPES = ["float32", "float64"]
RTOL = {"float32": 1e-5, "float64": 1e-12}
C_MODES = ["DLT_CVM", "DLT_C"]


def python_thunk_nodes(fn):
    """The nodes a VM function runs as Python thunks for want of C code (those
    ``DLT_CVM`` runs in Python on purpose excepted)."""
    return [str(node) for node, thunk in zip(fn.vm.nodes, fn.vm.thunks)
            if not hasattr(thunk, "cthunk") and not isinstance(node.op, (PythonNode, NumPySum))]


def pair_indexing_nodes(fn):
    """The nodes that index a matrix with a pair of index vectors, ``x[rows, cols]``
    (PyTensor 3.0 has no C code for them: ``DLT_C`` takes from the raveled matrix
    instead, ``DLT_CVM`` runs them in Python)."""
    found = []
    for node in fn.maker.fgraph.apply_nodes:
        op = node.op.op if isinstance(node.op, PythonNode) else node.op
        if isinstance(op, (AdvancedSubtensor, AdvancedIncSubtensor)):
            skip = 2 if isinstance(op, AdvancedIncSubtensor) else 1
            if node.inputs[0].ndim == 2 and len(node.inputs[skip:]) == 2:
                found.append(str(node))
    return found


def ops(fn):
    """The Ops of a compiled function, those ``DLT_CVM`` runs in Python unwrapped."""
    return [node.op.op if isinstance(node.op, PythonNode) else node.op
            for node in fn.maker.fgraph.apply_nodes]


def op_names(fn):
    return {type(op).__name__ for op in ops(fn)}


def assert_close(got, expected, dtype, what=""):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, what
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(got, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                               err_msg=what)


# ---------------------------------------------------------------------------
# MatMul
# ---------------------------------------------------------------------------


@functools.cache
def matmul_function(mode, dtype):
    """Products of ``a`` (m, k) and ``b`` (k, n) given in every layout MatMul's C code knows.

    ``at`` (k, m) and ``bt`` (n, k) are the transposes, ``big`` (2m, 2k) holds
    ``a`` at its even rows and columns.
    """
    a, b, at, bt, big = (pt.matrix(name, dtype=dtype) for name in ("a", "b", "at", "bt", "big"))
    outputs = [
        matmul(a, b),  # as given (C- or F-ordered)
        matmul(at.T, b),  # a transposed view
        matmul(a, bt.T),
        matmul(at.T, bt.T),
        matmul(a[::-1], b[:, ::-1]),  # negative strides: a contiguous copy
        matmul(big[::2, ::2], b),  # a strided slice
    ]
    fn = pytensor.function([a, b, at, bt, big], outputs, mode=mode)
    assert sum(isinstance(n.op, MatMul) for n in fn.maker.fgraph.apply_nodes) == len(outputs)
    if mode in ("DLT_CVM", "CVM"):
        assert python_thunk_nodes(fn) == []
    return fn


MATMUL_SHAPES = [(3, 4, 5), (1, 5, 1), (5, 1, 4), (1, 1, 1), (7, 13, 5), (64, 33, 17),
                 (4, 0, 3), (0, 3, 2), (3, 2, 0), (0, 0, 0)]


@pytest.mark.parametrize("m,k,n", MATMUL_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["DLT_CVM", "DLT_C", "CVM", "FAST_COMPILE"])
def test_matmul_matches_numpy(mode, dtype, m, k, n):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    big = np.zeros((2 * m, 2 * k), dtype)
    big[::2, ::2] = a
    expected = a.astype("float64") @ b.astype("float64")
    expected_flipped = a[::-1].astype("float64") @ b[:, ::-1].astype("float64")
    fn = matmul_function(mode, dtype)
    for order in ("C", "F"):
        args = [np.asarray(v, order=order) for v in (a, b, a.T, b.T, big)]
        got = [np.asarray(v) for v in fn(*args)]
        for i, g in enumerate(got):
            assert g.dtype == dtype, (order, i)
            assert_close(g, expected_flipped if i == 4 else expected, dtype, f"{order} output {i}")
    if k == 0 and m * n:
        assert not np.asarray(fn(a, b, a.T, b.T, big)[0]).any()  # zeros, not garbage


def test_matmul_refuses_what_it_cannot_multiply():
    with pytest.raises(TypeError, match="matrices"):
        matmul(pt.vector(), pt.matrix())
    with pytest.raises(TypeError, match="float32 or float64"):
        matmul(pt.matrix(dtype="float32"), pt.matrix(dtype="float64"))
    with pytest.raises(TypeError, match="float32 or float64"):
        matmul(pt.matrix(dtype="int64"), pt.matrix(dtype="int64"))
    assert matmul(pt.tensor(shape=(3, None)), pt.tensor(shape=(None, 4))).type.shape == (3, 4)
    a, b = pt.matrix("a"), pt.matrix("b")
    fn = pytensor.function([a, b], matmul(a, b), mode="DLT_CVM")
    with pytest.raises(ValueError, match="do not fit"):
        fn(np.ones((2, 3)), np.ones((4, 2)))


@pytest.mark.parametrize("mode", ["FAST_COMPILE", "DLT_CVM"])
def test_matmul_gradient(mode):
    rng = np.random.default_rng(0)
    verify_grad(matmul, [rng.standard_normal((3, 4)), rng.standard_normal((4, 2))], rng=rng,
                mode=mode)


# ---------------------------------------------------------------------------
# NumPyTanh
# ---------------------------------------------------------------------------

TANH_SPECIAL = [0.0, -0.0, 1e-30, -1e-8, 0.5, -3.0, 9.0, 20.0, -400.0, np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["DLT_CVM", "DLT_C", "FAST_COMPILE"])
def test_numpy_tanh_is_numpys_tanh_bit_for_bit(mode, dtype):
    rng = np.random.default_rng(3)
    x = pt.tensor("x", dtype=dtype, shape=(None, None, None))
    # A transposed input (not contiguous), and a scalar tanh of its sum.
    total = x.sum()
    y, s = NumPyTanh()(x.transpose(2, 0, 1)), NumPyTanh()(total)
    fn = pytensor.function([x], [y, s, total], mode=mode)
    assert "NumPyTanh" in op_names(fn)
    for xv in (rng.standard_normal((3, 4, 5)) * 4,
               np.array(TANH_SPECIAL * 2).reshape(2, 3, 4), np.zeros((0, 2, 3))):
        xv = xv.astype(dtype)
        got_y, got_s, got_total = fn(xv)
        for got, expected in ((got_y, np.tanh(xv.transpose(2, 0, 1))),
                              (got_s, np.tanh(got_total))):
            assert got.dtype == expected.dtype and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)


def test_numpy_tanh_gradient():
    verify_grad(NumPyTanh(), [np.random.default_rng(0).standard_normal((3, 4))],
                rng=np.random.default_rng(1), mode="DLT_CVM")


def test_numpy_tanh_refuses_integers():
    with pytest.raises(TypeError, match="float32 or float64"):
        NumPyTanh()(pt.ivector())


def test_numpy_tanh_with_a_bias_is_tanh_of_numpys_sum():
    x = pt.tensor4("x", dtype="float32")
    b = pt.tensor("b", dtype="float32", shape=(1, None, 1, 1))
    rng = np.random.default_rng(4)
    xv = (rng.standard_normal((3, 4, 5, 6)) * 3).astype("float32")
    bv = rng.standard_normal((1, 4, 1, 1)).astype("float32")
    expected = np.tanh(np.add(xv, bv))
    for mode in C_MODES + ["FAST_COMPILE"]:
        fn = pytensor.function([x, b], NumPyTanh()(x, b), mode=mode)
        for _ in range(2):  # the second call writes into the first call's output
            np.testing.assert_array_equal(fn(xv, bv), expected)
    # Its gradient: the bias's sums over the dimensions it is repeated along.
    verify_grad(NumPyTanh(), [rng.standard_normal((3, 4, 2, 2)), rng.standard_normal((1, 4, 1, 1))],
                rng=rng, mode="DLT_CVM")
    with pytest.raises(TypeError, match="does not fit"):
        NumPyTanh()(pt.tensor("a", dtype="float32", shape=(2, 3)),
                    pt.tensor("c", dtype="float32", shape=(1, 4)))


@pytest.mark.parametrize("reshaped", [False, True])
def test_float32_tanh_becomes_numpy_tanh_only_in_the_packages_c_modes(reshaped):
    # A layer's tanh(x + b), its bias added by the tanh's own pass; reshaped
    # between (PyTensor lifts a tanh above a reshape: LeNet5's second layer).
    dtype = "float32"
    x, b = pt.tensor3("x", dtype=dtype), pt.vector("b", dtype=dtype)
    z = x + b
    out = pt.tanh(z.reshape((z.shape[0], -1)) if reshaped else z)
    gx, gb = pytensor.grad(out.sum(), [x, b])
    xv = np.random.default_rng(2).standard_normal((6, 3, 4)).astype(dtype)
    bv = np.linspace(-1, 1, 4).astype(dtype)
    expected = np.tanh(xv + bv)
    if reshaped:
        expected = expected.reshape(6, -1)
    for mode in C_MODES:
        fn = pytensor.function([x, b], [out, gx, gb], mode=mode)
        found = ops(fn)
        # One tanh with the bias in it, shared by the output and its gradient, no other, no sum.
        tanhs = [node for node in fn.maker.fgraph.apply_nodes if "NumPyTanh" in str(node.op)]
        assert len(tanhs) == 1 and len(tanhs[0].inputs) == 2, (mode, found)
        assert not [op for op in found if "tanh" in str(op).lower() and not isinstance(op, NumPyTanh)]
        assert not [op for op in found if isinstance(op, Elemwise) and str(op) == "Add"], found
        got_out, got_gx, got_gb = fn(xv, bv)
        np.testing.assert_array_equal(got_out, expected)
        slope = 1 - np.tanh(xv + bv).astype("float64") ** 2
        np.testing.assert_allclose(got_gx, slope, rtol=RTOL[dtype])
        np.testing.assert_allclose(got_gb, slope.sum(axis=(0, 1)), rtol=RTOL[dtype])
    for mode in ("CVM", "NUMBA", "DLT_NUMBA"):
        fn = pytensor.function([x, b], [out, gx], mode=mode)
        assert "NumPyTanh" not in op_names(fn), mode


@pytest.mark.parametrize("mode", C_MODES)
def test_float64_tanh_stays_the_c_librarys(mode):
    # The original's precision keeps the original's tanh: the C library's, as
    # PyTensor's own C code computes it, bit for bit, with a layer's bias or without.
    x, b = pt.tensor4("x", dtype="float64"), pt.tensor("b", dtype="float64", shape=(1, None, 1, 1))
    z = x + b
    outs = [pt.tanh(z), pt.tanh(z.reshape((z.shape[0], -1))), pt.tanh(x)]
    rng = np.random.default_rng(5)
    xv = np.concatenate([rng.standard_normal(60) * 3, TANH_SPECIAL]).reshape(3, 4, 6, 1)
    bv = rng.standard_normal((1, 4, 1, 1))
    theirs = pytensor.function([x, b], outs, mode="CVM")(xv, bv)
    ours = pytensor.function([x, b], outs, mode=mode)
    tanhs = [node.op for node in ours.maker.fgraph.apply_nodes if "tanh" in str(node.op).lower()]
    assert tanhs and all(isinstance(op, NumPyTanh) and op.libm for op in tanhs), tanhs
    for got, want in zip(ours(xv, bv), theirs):
        np.testing.assert_array_equal(got, want)
    libm = np.vectorize(math.tanh)
    np.testing.assert_array_equal(theirs[0], libm(xv + bv))


def test_the_c_librarys_tanh_is_float64_only_and_so_is_its_perform():
    with pytest.raises(TypeError, match="float64"):
        NumPyTanh(libm=True)(pt.matrix(dtype="float32"))
    x, b = pt.matrix("x", dtype="float64"), pt.row("b", dtype="float64")
    y = NumPyTanh(libm=True)(x, b)
    assert str(y.owner.op) == "NumPyTanh{libm}" and NumPyTanh(libm=True) == y.owner.op != NumPyTanh()
    xv, bv = np.array([TANH_SPECIAL, np.linspace(-4, 4, 12)]), np.linspace(-1, 1, 12)[None]
    fn = pytensor.function([x, b], y, mode="FAST_COMPILE")  # perform
    for _ in range(2):
        np.testing.assert_array_equal(fn(xv, bv), np.vectorize(math.tanh)(xv + bv))


# ---------------------------------------------------------------------------
# The rewrites
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_matrix_products_become_matmul_only_in_the_packages_c_modes(dtype):
    x, W = pt.matrix("x", dtype=dtype), pt.matrix("W", dtype=dtype)
    b = pt.vector("b", dtype=dtype)
    out = pt.tanh(pt.dot(x, W) + b)
    gW = pytensor.grad(out.sum(), W)
    names = {}
    for mode in ("DLT_CVM", "DLT_C", "CVM", "NUMBA", "DLT_NUMBA"):
        names[mode] = op_names(pytensor.function([x, W, b], [out, gW], mode=mode))
    for mode in C_MODES:
        assert "MatMul" in names[mode], mode
        assert not names[mode] & {"Dot", "Dot22", "Gemm", "Dot22Scalar"}, (mode, names[mode])
    for mode in ("CVM", "NUMBA", "DLT_NUMBA"):
        assert "MatMul" not in names[mode], mode
    assert names["CVM"] & {"Dot22", "Gemm", "Dot"}


def test_the_rewrites_are_registered_under_the_packages_tag_only():
    for mode in C_MODES:
        assert TAG in get_mode(mode).provided_optimizer.include, mode
    for mode in ("CVM", "C", "NUMBA", "JAX", "FAST_RUN", "DLT_NUMBA", "DLT_JAX"):
        assert TAG not in get_mode(mode).provided_optimizer.include, mode
    # Python nodes only where the linker can mix them with C thunks.
    for mode in ("CVM", "C", "NUMBA", "JAX", "FAST_RUN", "DLT_NUMBA", "DLT_JAX", "DLT_C"):
        assert CVM_TAG not in get_mode(mode).provided_optimizer.include, mode
    assert CVM_TAG in get_mode("DLT_CVM").provided_optimizer.include


def _logistic_graph(dtype):
    """The logistic regression's outputs: softmax, log-softmax, the likelihood's pick
    ``log(p)[arange(n), y]``, its mean and the gradients."""
    x, y = pt.matrix("x", dtype=dtype), pt.ivector("y")
    W, b = pt.matrix("W", dtype=dtype), pt.vector("b", dtype=dtype)
    logits = pt.dot(x, W) + b
    p = pt.special.softmax(logits, axis=-1)
    log_p = pt.special.log_softmax(logits, axis=-1)
    picked = pt.log(p)[pt.arange(y.shape[0]), y]
    cost = -pt.mean(picked)
    gW, gb = pytensor.grad(cost, [W, b])
    return [x, y, W, b], [p, log_p, picked, cost, gW, gb]


def _logistic_values(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((7, 5)).astype(dtype), rng.integers(0, 3, 7).astype("int32"),
            rng.standard_normal((5, 3)).astype(dtype), rng.standard_normal(3).astype(dtype)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_and_the_likelihood_pick_run_entirely_as_c(dtype):
    inputs, outputs = _logistic_graph(dtype)
    cvm = pytensor.function(inputs, outputs, mode="DLT_CVM")
    assert python_thunk_nodes(cvm) == []
    # Mode C compiles the whole function as one C module or not at all.
    whole = pytensor.function(inputs, outputs, mode="DLT_C")
    assert isinstance(whole.maker.linker, WholeGraphCLinker)
    for fn in (cvm, whole):
        assert not [op for op in ops(fn) if isinstance(op, (Softmax, LogSoftmax))]
    # The pick and its gradient: NumPy's indexing in DLT_CVM, C in DLT_C.
    assert len(pair_indexing_nodes(cvm)) == 2
    assert pair_indexing_nodes(whole) == []
    # PyTensor's own CVM is left as it is: its products, its pair indexing.
    plain = pytensor.function(inputs, outputs, mode="CVM")
    assert "MatMul" not in op_names(plain)
    assert len(pair_indexing_nodes(plain)) == 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_c_modes_give_numbas_numbers(dtype):
    inputs, outputs = _logistic_graph(dtype)
    values = _logistic_values(dtype)
    ref = [np.asarray(v) for v in pytensor.function(inputs, outputs, mode="NUMBA")(*values)]
    for mode in C_MODES:
        got = pytensor.function(inputs, outputs, mode=mode)(*values)
        for i, (g, r) in enumerate(zip(got, ref)):
            assert np.asarray(g).dtype == r.dtype, (mode, i)
            assert_close(g, r, dtype, f"{mode} output {i}")
    # The picks are the log-probabilities of the labels.
    p = ref[0].astype("float64")
    np.testing.assert_allclose(ref[2], np.log(p[np.arange(7), values[1]]), rtol=RTOL[dtype])


PAIRS = (np.array([0, 2, -1, 0, 1]), np.array([1, -1, 0, 1, -4]))  # negative, repeated


def _pair_function(mode, build):
    x = pt.matrix("x")
    rows, cols = pt.lvector("rows"), pt.lvector("cols")
    v = pt.vector("v")
    fn = pytensor.function([x, rows, cols, v], build(x, rows, cols, v), mode=mode,
                           on_unused_input="ignore")
    if mode == "DLT_CVM":
        assert python_thunk_nodes(fn) == []
    else:
        assert pair_indexing_nodes(fn) == []
    return fn


@pytest.mark.parametrize("mode", C_MODES)
def test_pair_indexing_keeps_numpys_semantics(mode):
    def build(x, rows, cols, v):
        picked = x[rows, cols]
        return [picked, pytensor.grad((picked * v).sum(), x)]  # duplicates accumulate

    fn = _pair_function(mode, build)
    xv = np.arange(12.0).reshape(3, 4)
    r, c = PAIRS
    vv = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    picked, grad = fn(xv, r, c, vv)
    np.testing.assert_array_equal(picked, xv[r, c])
    expected_grad = np.zeros_like(xv)
    np.add.at(expected_grad, (r, c), vv)
    assert expected_grad[0, 1] == 5.0  # (0, 1) twice
    np.testing.assert_array_equal(grad, expected_grad)
    # Out-of-bounds indices raise, as NumPy does, instead of wrapping into the
    # next row of the flat array.
    for bad_r, bad_c in (([0], [4]), ([0], [-5]), ([3], [0]), ([5], [-1])):
        with pytest.raises(Exception):
            fn(xv, np.array(bad_r), np.array(bad_c), np.ones(1))


def _inc_modes():
    yield "DLT_CVM"
    yield pytest.param("DLT_C", marks=pytest.mark.xfail(
        AdvancedIncSubtensor1 is not None, strict=True, raises=ValueError,
        reason="PyTensor 3.0 bug inherited by DLT_C (3.3 has no AdvancedIncSubtensor1): its "
        "copying (not in-place) C code reads its input's Python object, stale inside a "
        "whole-graph C module"))


@pytest.mark.parametrize("mode", list(_inc_modes()))
def test_pair_increments_and_sets_keep_numpys_semantics(mode):
    def build(x, rows, cols, v):
        return [pt.inc_subtensor(x[rows, cols], 1.0),  # a broadcast increment
                pt.inc_subtensor(x[rows, cols], v),
                pt.set_subtensor(x[rows, cols], v)]

    fn = _pair_function(mode, build)
    xv = np.arange(12.0).reshape(3, 4)
    r, c = (a[[0, 1, 2, 4]] for a in PAIRS)  # distinct pairs, for set_subtensor
    vv = np.array([10.0, 20.0, 30.0, 40.0])
    inc_one, inc_v, set_v = fn(xv, r, c, vv)
    for got, update in ((inc_one, 1.0), (inc_v, vv)):
        expected = xv.copy()
        np.add.at(expected, (r, c), update)
        np.testing.assert_array_equal(got, expected)
    expected = xv.copy()
    expected[r, c] = vv
    np.testing.assert_array_equal(set_v, expected)
    np.testing.assert_array_equal(xv, np.arange(12.0).reshape(3, 4))  # the input is intact


@pytest.mark.parametrize("mode", C_MODES)
def test_pair_indexing_refuses_rows_below_minus_n_rows(mode):
    x = pt.matrix("x")
    rows, cols = pt.lvector("rows"), pt.lvector("cols")
    fn = pytensor.function([x, rows, cols], x[rows, cols], mode=mode)
    with pytest.raises(IndexError):
        np.arange(12.0).reshape(3, 4)[np.array([-4]), np.array([0])]
    with pytest.raises(Exception):
        fn(np.arange(12.0).reshape(3, 4), np.array([-4]), np.array([0]))


# ---------------------------------------------------------------------------
# A tutorial's training step through C only
# ---------------------------------------------------------------------------


def test_mode_c_compiles_what_pytensors_own_c_mode_cannot():
    inputs, outputs = _logistic_graph("float64")
    fn = pytensor.function(inputs, outputs, mode="DLT_C")
    assert isinstance(fn.maker.linker, CLinker)
    values = _logistic_values("float64", seed=3)
    assert np.isfinite(float(fn(*values)[3]))
    try:
        pytensor.function(inputs, outputs, mode="C")
    except NotImplementedError:
        pass  # PyTensor 3.0: Softmax, the products and the picks have no C code
    else:  # pragma: no cover - a later PyTensor
        pytest.skip("this PyTensor's own C mode compiles the graph too")


# ---------------------------------------------------------------------------
# DLT_CVM's Python nodes
# ---------------------------------------------------------------------------


def _c_thunk_nodes(fn):
    return [node for node, thunk in zip(fn.vm.nodes, fn.vm.thunks) if hasattr(thunk, "cthunk")]


@pytest.mark.parametrize("dtype", DTYPES)
def test_cvm_runs_bookkeeping_nodes_in_python_with_the_same_bits(dtype):
    inputs, outputs = _logistic_graph(dtype)
    values = _logistic_values(dtype)
    cvm = pytensor.function(inputs, outputs, mode="DLT_CVM")
    all_c = pytensor.function(inputs, outputs, mode=get_mode("DLT_CVM").excluding(CVM_TAG))
    wrapped = [node for node in cvm.maker.fgraph.apply_nodes if isinstance(node.op, PythonNode)]
    sums = [node for node in cvm.maker.fgraph.apply_nodes if isinstance(node.op, NumPySum)]
    # Shapes, views, indexing, checks, integer results, and on matrices and
    # vectors the float arithmetic that rounds once per element.
    names = {type(node.op.op).__name__ for node in wrapped}
    assert {"Shape_i", "Assert", "ARange", "AdvancedSubtensor", "AdvancedIncSubtensor"} <= names
    float_ops = {str(node.op.op) for node in wrapped
                 if any(out.type.dtype.startswith("float") for out in node.outputs)
                 and isinstance(node.op.op, (Elemwise, CAReduce))}
    assert float_ops and float_ops <= {"Add", "Sub", "Mul", "True_div", "Neg", "Max{axis=1}"}, float_ops
    assert not [node for node in wrapped if "Composite" in str(node.op) or node.outputs[0].ndim > 2]
    # The float32 sums accumulated in float64: NumPy's; the float64 sums stay in C.
    assert bool(sums) == (dtype == "float32")
    # Fewer C modules, the same numbers: the same bits but for NumPy's order of
    # a float32 sum's float64 additions (the same float32 results here).
    assert len(_c_thunk_nodes(cvm)) + len(wrapped) + len(sums) == len(all_c.maker.fgraph.apply_nodes)
    assert len(_c_thunk_nodes(cvm)) < len(_c_thunk_nodes(all_c)) - 5
    for got, ref in zip(cvm(*values), all_c(*values)):
        np.testing.assert_array_equal(got, ref)


def test_cvm_runs_4d_arithmetic_in_python_in_place_too():
    # A layer's bias added to its (pooled) output, in place: the result is written
    # back into the input's array, as the C code writes it.
    x, b = pt.tensor4("x"), pt.tensor("b", shape=(1, None, 1, 1))
    y = pool_2d(x, ws=(2, 2)) + b
    out = [y.reshape((y.shape[0], -1)), y.sum(axis=(0, 2, 3))]
    cvm = pytensor.function([x, b], out, mode="DLT_CVM")
    all_c = pytensor.function([x, b], out, mode=get_mode("DLT_CVM").excluding(CVM_TAG))
    wrapped = [node for node in cvm.maker.fgraph.apply_nodes
               if isinstance(node.op, PythonNode) and node.outputs[0].ndim == 4]
    assert [str(node.op.op) for node in wrapped] == ["Add"] and wrapped[0].op.destroy_map
    rng = np.random.default_rng(6)
    xv, bv = rng.standard_normal((5, 3, 4, 4)), rng.standard_normal((1, 3, 1, 1))
    for _ in range(2):
        for got, ref in zip(cvm(xv, bv), all_c(xv, bv)):
            np.testing.assert_array_equal(got, ref)


def test_cvm_python_nodes_keep_in_place_increments_and_checks():
    x, rows, cols = pt.matrix("x"), pt.lvector("rows"), pt.lvector("cols")
    y = pt.vector("y")
    fn = pytensor.function([x, rows, cols, y], pt.inc_subtensor(x[rows, cols], y), mode="DLT_CVM")
    incs = [node.op for node in fn.maker.fgraph.apply_nodes if isinstance(node.op, PythonNode)
            and isinstance(node.op.op, AdvancedIncSubtensor)]
    assert incs and incs[0].destroy_map == incs[0].op.destroy_map
    xv = np.arange(12.0).reshape(3, 4)
    expected = xv.copy()
    np.add.at(expected, (PAIRS[0][:3], PAIRS[1][:3]), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(fn(xv, PAIRS[0][:3], PAIRS[1][:3], [1.0, 2.0, 3.0]), expected)
    # Repeated pairs add up, and out-of-bounds pairs are refused.
    np.testing.assert_array_equal(fn(xv, [0, 0], [1, 1], [1.0, 2.0])[0, 1], xv[0, 1] + 3.0)
    with pytest.raises(IndexError, match="out of bounds"):
        fn(xv, [3], [0], [1.0])


def test_python_node_reports_its_op():
    node = PythonNode(pt.basic.MakeVector("int64"))
    assert str(node) == "Python{MakeVector{dtype='int64'}}"
    a, b = pt.lscalar("a"), pt.lscalar("b")
    # Any linker can run it through perform.
    fn = pytensor.function([a, b], node(a, b), mode=get_mode("FAST_COMPILE"))
    np.testing.assert_array_equal(fn(2, 3), [2, 3])


def test_cvm_python_nodes_leave_small_integer_arithmetic_to_c():
    # The minibatch slice's bounds are scalar integer Composites with int8
    # constants: their Python code refuses index 255 (NumPy 2 casts no Python
    # integer out of int8's range), where C wraps around as PyTensor means it to.
    i = pt.lscalar("i")
    xs = pytensor.shared(np.arange(50000 * 3, dtype="float64").reshape(50000, 3))
    W = pytensor.shared(np.ones((3, 2)))
    cost = pt.sum(pt.dot(xs[i * 20:(i + 1) * 20], W) ** 2)
    outputs = [cost, pytensor.grad(cost, W)]
    cvm = pytensor.function([i], outputs, mode="DLT_CVM")
    all_c = pytensor.function([i], outputs, mode=get_mode("DLT_CVM").excluding(CVM_TAG))
    for index in (0, 127, 255, 2499):
        for got, ref in zip(cvm(index), all_c(index)):
            np.testing.assert_array_equal(got, ref)
    assert not [node for node in cvm.maker.fgraph.apply_nodes
                if isinstance(node.op, PythonNode) and "Composite" in str(node.op)]


@pytest.mark.parametrize("axis", [None, (0,), (1,), (0, 2, 3), (3,)])
def test_numpy_sum_is_pytensors_float32_sum_accumulated_in_float64(axis):
    rng = np.random.default_rng(5)
    x = pt.tensor4("x", dtype="float32")
    total = x.sum(axis=axis, acc_dtype="float64")
    cvm = pytensor.function([x], total, mode="DLT_CVM")
    assert [node.op for node in cvm.maker.fgraph.apply_nodes] == [NumPySum(axis)]
    c_sum = pytensor.function([x], total, mode="CVM")
    for xv in (rng.standard_normal((30, 7, 12, 12)) * 100, rng.random((2, 3, 4, 5)), np.zeros((0, 2, 3, 4))):
        xv = xv.astype("float32")
        got = cvm(xv)
        np.testing.assert_array_equal(got, xv.sum(axis=axis, dtype="float64").astype("float32"))
        np.testing.assert_array_equal(got, c_sum(xv))
        assert got.dtype == np.float32 and got.shape == c_sum(xv).shape
    # A float32 sum in float32, and float64 sums, keep PyTensor's C code.
    for total in (x.sum(axis=axis, acc_dtype="float32"), x.astype("float64").sum(axis=axis)):
        fn = pytensor.function([x], total, mode="DLT_CVM")
        assert not [n for n in fn.maker.fgraph.apply_nodes if isinstance(n.op, NumPySum)]
    with pytest.raises(TypeError, match="float32"):
        NumPySum(None)(pt.dvector())


# ---------------------------------------------------------------------------
# A convolution and its max pooling, image by image
# ---------------------------------------------------------------------------

CONV_POOL_CASES = [  # input, filters, window, ignore_border
    ((7, 1, 28, 28), (20, 1, 5, 5), (2, 2), True),  # LeNet5's first layer: the direct kernel
    ((5, 20, 12, 12), (50, 20, 5, 5), (2, 2), True),  # its second: im2col
    ((3, 2, 9, 7), (3, 2, 2, 3), (2, 2), False),  # partial windows kept
    ((2, 3, 10, 11), (5, 3, 3, 3), (3, 2), True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,window,ignore_border", CONV_POOL_CASES)
def test_conv_max_pool_gives_the_two_ops_numbers(xs, ws, window, ignore_border, dtype):
    from deeplearning_tutorials.modes.c import Conv2dMaxPool, MaxPoolConv2dGradFilters
    from deeplearning_tutorials.nnet.conv import Conv2d
    from deeplearning_tutorials.nnet.pool import MaxPool2d

    x, w = pt.tensor4("x", dtype=dtype), pt.tensor4("w", dtype=dtype)
    z = Conv2d()(x, w)
    pooled = MaxPool2d(window, ignore_border)(z)
    gw = pytensor.grad((pooled ** 2).sum(), w)  # its gradient reads the convolution
    rng = np.random.default_rng(6)
    xv = rng.standard_normal(xs).astype(dtype)
    xv[0, 0, 1, 1] = np.nan  # NaN wins its window, as NumPy's max
    wv = rng.standard_normal(ws).astype(dtype)
    reference = pytensor.function([x, w], [pooled, gw, z], mode="CVM")(xv, wv)
    # With the input's gradient too, the pooling's gradient has two readers.
    both = pytensor.grad((pooled ** 2).sum(), [w, x])
    reference_both = pytensor.function([x, w], both, mode="CVM")(xv, wv)
    for mode in C_MODES:
        train = pytensor.function([x, w], [pooled, gw, z], mode=mode)
        forward = pytensor.function([x, w], pooled, mode=mode)
        fused = [op for op in ops(train) + ops(forward) if isinstance(op, Conv2dMaxPool)]
        assert [op.keep_conv for op in fused] == [True, False], (mode, ops(train), ops(forward))
        assert not {"Conv2d", "MaxPool2d"} & (op_names(train) | op_names(forward))
        # The filters' gradient straight from the pooling's (a first layer's).
        assert "MaxPoolConv2dGradFilters" in op_names(train)
        assert not {"MaxPool2dGrad", "Conv2dGradFilters"} & op_names(train)
        for _ in range(2):  # the second call writes into the first call's outputs
            for got, ref in zip(train(xv, wv), reference):
                np.testing.assert_array_equal(got, ref)
            np.testing.assert_array_equal(forward(xv, wv), reference[0])
        second = pytensor.function([x, w], both, mode=mode)
        assert {"MaxPool2dGrad", "Conv2dGradFilters"} <= op_names(second)
        for got, ref in zip(second(xv, wv), reference_both):
            np.testing.assert_array_equal(got, ref)
    # Python's own implementations (any linker).
    for keep in (True, False):
        outs = Conv2dMaxPool(window, ignore_border, keep)(x, w, return_list=True)
        got = pytensor.function([x, w], outs, mode="FAST_COMPILE")(xv, wv)
        assert len(got) == 1 + keep
        np.testing.assert_allclose(got[0], reference[0], rtol=RTOL[dtype])
    gp = pt.tensor4("gp", dtype=dtype)
    gw_of = MaxPoolConv2dGradFilters(window, ignore_border)(x, z, pooled, gp)
    gpv = 2 * reference[0]  # the gradient of (pooled ** 2).sum()
    for mode in ("FAST_COMPILE", "DLT_CVM"):
        got = pytensor.function([x, w, gp], gw_of, mode=mode, on_unused_input="ignore")(xv, wv, gpv)
        assert_close(got, reference[1], dtype, mode)


def test_conv_max_pool_refuses_what_does_not_fit():
    from deeplearning_tutorials.modes.c import Conv2dMaxPool, MaxPoolConv2dGradFilters

    x, w = pt.tensor4("x"), pt.tensor4("w")
    fn = pytensor.function([x, w], Conv2dMaxPool((2, 2), True, False)(x, w), mode="DLT_CVM")
    with pytest.raises(ValueError, match="conv2d: shapes .* do not fit"):
        fn(np.zeros((2, 3, 8, 8)), np.zeros((4, 2, 3, 3)))
    z, pooled, gp = pt.tensor4("z"), pt.tensor4("pooled"), pt.tensor4("gp")
    fn = pytensor.function([x, z, pooled, gp], MaxPoolConv2dGradFilters((2, 2), True)(x, z, pooled, gp),
                           mode="DLT_CVM")
    with pytest.raises(ValueError, match="do not fit"):
        fn(np.zeros((2, 3, 8, 8)), np.zeros((2, 4, 6, 6)), np.zeros((2, 4, 3, 2)), np.zeros((2, 4, 3, 2)))
    with pytest.raises(TypeError, match="do not fit"):
        MaxPoolConv2dGradFilters((2, 2), True)(x, z, pt.matrix(), gp)
