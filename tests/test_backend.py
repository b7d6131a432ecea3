"""The backend glue: resolve_mode, softmax on the C backend, the BLAS fallback."""

import glob
import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.builders import OpFromGraph
from pytensor.compile.mode import Mode
from pytensor.link.numba.linker import NumbaLinker

from _elf import elf_sections  # tests/, on sys.path under pytest

from deeplearning_tutorials import backend


def _has_c_compiler():
    return bool(pytensor.config.cxx)


needs_cxx = pytest.mark.skipif(not _has_c_compiler(), reason="no C compiler for the C backend")


# --------------------------------------------------------------------------
# resolve_mode
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["numba", "NUMBA", " Numba "])
def test_resolve_mode_names_are_case_insensitive(name):
    assert isinstance(backend.resolve_mode(name).linker, NumbaLinker)


@pytest.mark.parametrize("name", ["CVM", "c"])
def test_resolve_mode_c_backends(name):
    mode = backend.resolve_mode(name)
    assert mode is pytensor.compile.mode.get_mode(name.upper())


def test_resolve_mode_none_and_mode_instances():
    assert isinstance(backend.resolve_mode(None), Mode)
    custom = Mode("py", "fast_compile")
    assert backend.resolve_mode(custom) is custom


def test_resolve_mode_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="NUMBA, CVM, C, JAX"):
        backend.resolve_mode("GPU")
    with pytest.raises(TypeError):
        backend.resolve_mode(3)


def test_resolve_mode_jax_without_jax(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # makes `import jax` raise ImportError
    with pytest.raises(ValueError, match=r"pip install deeplearning_tutorials\[jax\]"):
        backend.resolve_mode("jax")


def test_resolve_mode_jax_keeps_datasets_on_device():
    pytest.importorskip("jax")
    mode = backend.resolve_mode("JAX")
    assert isinstance(mode.linker, backend.DeviceJAXLinker)
    x = pytensor.shared(np.arange(4.0))
    f = pytensor.function([], (x * 2).sum(), mode=mode)
    assert float(f()) == 12.0
    assert isinstance(x.get_value(borrow=True), np.ndarray)


_CACHE_SCRIPT = """
import os, sys, time
import numpy as np, pytensor, pytensor.tensor as pt
import deeplearning_tutorials.backend
x = pytensor.shared(np.ones((64, 64)))
y = pt.matrix("y")
out = pt.tanh(pt.dot(pt.tanh(pt.dot(y, x)), x.T)).sum() + pt.exp(y).max()
t0 = time.perf_counter()
f = pytensor.function([y], out, mode="JAX")
print(float(f(np.ones((3, 64)))))
import jax
print(jax.config.jax_compilation_cache_dir)
"""


def test_jax_programs_are_cached_beside_pytensors_own(tmp_path):
    pytest.importorskip("jax")
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={tmp_path}")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    runs = [subprocess.run([sys.executable, "-c", _CACHE_SCRIPT], env=env, capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(2)]
    assert runs[0] == runs[1]  # the same value, from the same cache directory
    cache = runs[0][1]
    assert cache.startswith(str(tmp_path)) and cache.endswith("jax")
    assert any(name.endswith("-cache") for name in os.listdir(cache))


def test_jax_cache_keeps_the_users_choice(tmp_path):
    pytest.importorskip("jax")
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={tmp_path / 'pt'}",
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"))
    out = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[1] == str(tmp_path / "mine")
    assert not (tmp_path / "pt").exists() or not any((tmp_path / "pt").rglob("*-cache"))


# --------------------------------------------------------------------------
# softmax on the C backend
# --------------------------------------------------------------------------


def _softmax_fn(mode):
    x = pt.matrix("x")
    p = pt.special.softmax(x, axis=-1)
    return pytensor.function([x], [p, pt.log(p)], mode=mode)


@needs_cxx
def test_cvm_runs_softmax_in_c():
    fn = _softmax_fn("CVM")
    nodes = fn.maker.fgraph.toposort()
    # PyTensor 3.0 leaves an OpFromGraph here, whose perform runs a Numba function.
    assert not any(isinstance(node.op, OpFromGraph) for node in nodes)
    assert all(hasattr(thunk, "cthunk") for thunk in fn.vm.thunks), [
        type(node.op).__name__ for node, thunk in zip(nodes, fn.vm.thunks) if not hasattr(thunk, "cthunk")
    ]
    data = np.random.default_rng(0).normal(size=(5, 7))
    p, logp = fn(data)
    expected = np.exp(data - data.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    np.testing.assert_allclose(logp, np.log(expected), rtol=1e-12)


def test_numba_keeps_its_own_softmax():
    from pytensor.compile.mode import optdb
    from pytensor.link.jax.linker import JAXLinker

    # The inlining rewrite is tagged "cxx_only", which the Numba and JAX linkers exclude.
    assert backend.local_inline_softmax_for_c in optdb["specialize"].__db__["cxx_only"]
    assert "cxx_only" in NumbaLinker.incompatible_rewrites
    assert "cxx_only" in JAXLinker.incompatible_rewrites
    fn = _softmax_fn("NUMBA")
    p, _ = fn(np.zeros((2, 3)))
    np.testing.assert_allclose(p, 1 / 3)


# --------------------------------------------------------------------------
# BLAS
# --------------------------------------------------------------------------


@needs_cxx
def test_blas_ldflags_found_and_cvm_dot_is_right():
    if os.environ.get("DLT_NO_BLAS_FALLBACK"):
        pytest.skip("fallback disabled by DLT_NO_BLAS_FALLBACK")
    assert pytensor.config.blas__ldflags
    a, b = pt.matrix("a"), pt.matrix("b")
    fn = pytensor.function([a, b], pt.dot(a, b), mode="CVM")
    assert all(hasattr(thunk, "cthunk") for thunk in fn.vm.thunks)
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(50, 80)), rng.normal(size=(80, 30))
    np.testing.assert_allclose(fn(A, B), A @ B, rtol=1e-10, atol=1e-12)


def test_scipy_openblas_probe_failure_gives_empty_flags(monkeypatch, tmp_path):
    bogus = tmp_path / "libscipy_openblas-bogus.so"
    bogus.write_bytes(b"not a library")
    monkeypatch.setattr(backend, "_scipy_openblas_library", lambda: (bogus, "scipy_"))
    assert backend.scipy_openblas_ldflags() == ""


def test_fallback_keeps_what_pytensor_finds():
    wrapped = backend._blas_default_with_fallback(lambda: "-lmyblas")
    assert wrapped() == "-lmyblas"


def test_user_flags_are_respected():
    env = dict(os.environ, PYTENSOR_FLAGS="blas__ldflags=")
    code = "import deeplearning_tutorials.backend, pytensor; print(repr(pytensor.config.blas__ldflags))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "''"


# --------------------------------------------------------------------------
# x[rows, cols] (the negative log-likelihood's pick) and its gradient in C
# --------------------------------------------------------------------------


def _nll_fn(mode):
    x = pt.matrix("x")
    W = pytensor.shared(np.random.default_rng(1).normal(size=(6, 4)), name="W")
    y = pt.ivector("y")
    logp = pt.log(pt.special.softmax(pt.dot(x, W), axis=-1))
    cost = -pt.mean(logp[pt.arange(y.shape[0]), y])
    picked = logp[pt.arange(y.shape[0]), y]
    return pytensor.function([x, y], [cost, picked, pt.grad(cost, W)], mode=mode)


@needs_cxx
def test_cvm_runs_the_nll_pick_and_its_gradient_in_c():
    fn = _nll_fn("CVM")
    nodes = fn.maker.fgraph.toposort()
    assert all(hasattr(thunk, "cthunk") for thunk in fn.vm.thunks), [
        type(node.op).__name__ for node, thunk in zip(nodes, fn.vm.thunks) if not hasattr(thunk, "cthunk")
    ]
    rng = np.random.default_rng(2)
    data, labels = rng.normal(size=(5, 6)), np.array([0, 3, 1, 3, 2], dtype="int32")
    reference = _nll_fn("NUMBA")(data, labels)
    for got, want in zip(fn(data, labels), reference):
        np.testing.assert_allclose(got, want, rtol=1e-12)


@needs_cxx
def test_cvm_pick_keeps_index_errors():
    x = pt.matrix("x")
    rows, cols = pt.lvector("rows"), pt.lvector("cols")
    fn = pytensor.function([x, rows, cols], x[rows, cols], mode="CVM")
    data = np.arange(12.0).reshape(3, 4)
    # Negative indices wrap as in NumPy.
    np.testing.assert_array_equal(fn(data, [0, -1], [-1, 2]), data[[0, -1], [-1, 2]])
    with pytest.raises(Exception, match="out of bounds"):
        fn(data, [0], [4])  # a column past the end must not read the next row
    with pytest.raises(IndexError):
        fn(data, [3], [0])


def test_lessons_offer_the_whole_graph_c_linker():
    from deeplearning_tutorials import flags

    assert flags.check_mode("c") == "C"
    assert "C" in flags.MODES


@needs_cxx
def test_mode_c_compiles_without_debugging_information():
    """Mode "C" is PyTensor's whole-graph C linker, with -g0 after PyTensor's -g."""
    mode = pytensor.compile.mode.get_mode("C")
    assert isinstance(mode.linker, backend.WholeGraphCLinker)
    x = pt.dvector("x")
    f = pytensor.function([x], pt.exp(x).sum(), mode="C")
    assert f(np.zeros(3)) == 3.0
    args = f.maker.linker.compile_args()
    assert args[-1] == "-g0" and "-O3" in args


_DEBUG_INFO_SCRIPT = """
import numpy as np, pytensor, pytensor.tensor as pt
from deeplearning_tutorials import backend
x = pt.dvector("x")
f = pytensor.function([x], pt.exp(x * 3.0 + 1.0).sum(), mode="CVM")
assert f(np.zeros(3)) == 3 * np.exp(1.0)
print(repr(pytensor.config.gcc__cxxflags))
"""


def _modules_with_debug_info(compiledir):
    """For each C module compiled there (not PyTensor's own at import), whether it has DWARF sections."""
    found = {}
    for so in glob.glob(os.path.join(str(compiledir), "**", "*.so"), recursive=True):
        if "cutils_ext" in so or "lazylinker_ext" in so:
            continue
        with open(so, "rb") as f:
            found[so] = ".debug_info" in elf_sections(f.read())
    return found


@needs_cxx
@pytest.mark.parametrize("user_flags, expected, debug_info", [(None, "'-g0'", False), ("-g", "'-g'", True)])
def test_c_modules_compile_without_debugging_information(tmp_path, user_flags, expected, debug_info):
    """CVM's per-node modules drop PyTensor's -g (a seventh of a cold compile),
    unless the user set compiler flags, which are kept as they are."""
    flags = f"base_compiledir={tmp_path}" + (f",gcc__cxxflags={user_flags}" if user_flags else "")
    env = dict(os.environ, PYTENSOR_FLAGS=flags)
    out = subprocess.run([sys.executable, "-c", _DEBUG_INFO_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [expected]
    modules = _modules_with_debug_info(tmp_path)
    assert modules, "no C module was compiled"
    assert set(modules.values()) == {debug_info}, modules


_FIRST_COMPILE_SCRIPT = """
import numpy as np, pytensor, pytensor.tensor as pt
from deeplearning_tutorials.logistic_sgd import LogisticRegression
x, y = pt.dmatrix("x"), pt.ivector("y")
clf = LogisticRegression(input=x, n_in=4, n_out=3)
f = pytensor.function([x, y], [clf.errors(y), clf.negative_log_likelihood(y)], mode={mode!r})
err, nll = f(np.ones((2, 4)), np.array([0, 2], dtype="int32"))
print(float(err), float(nll))
"""


_LAZY_NUMBA_SCRIPT = """
import sys
import numpy as np, pytensor, pytensor.tensor as pt
from deeplearning_tutorials import convolutional_mlp
from deeplearning_tutorials import nnet
from deeplearning_tutorials.nnet import conv2d, pool_2d
before = "numba" in sys.modules or nnet._numba["registered"]
x, w = pt.tensor4("x"), pt.tensor4("w")
cost = pt.tanh(pool_2d(conv2d(x, w), (2, 2), ignore_border=True)).sum()
f = pytensor.function([x, w], [cost, pytensor.grad(cost, w).sum()], mode="NUMBA")
c, g = f(np.ones((1, 1, 6, 6)), np.full((2, 1, 3, 3), 0.1))
print(before, "numba" in sys.modules and nnet._numba["registered"], repr(float(c)), repr(float(g)))
"""


def test_numba_is_imported_when_the_numba_backend_first_compiles(tmp_path):
    """Importing a lesson leaves Numba alone (half a second that the C and JAX
    backends need not pay); the first Numba compile registers the kernels."""
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={tmp_path}")
    out = subprocess.run([sys.executable, "-c", _LAZY_NUMBA_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after, c, g = out.stdout.split()
    assert (before, after) == ("False", "True")
    # Every pooled output is tanh(0.9); the filters' gradient is 8 windows of 9 ones each
    # times tanh'(0.9) (one maximum per window: all four inputs tie, all get it, 4x).
    assert float(c) == pytest.approx(8 * np.tanh(0.9), rel=1e-12)
    assert float(g) == pytest.approx(8 * 4 * 9 * (1 - np.tanh(0.9) ** 2), rel=1e-12)


def test_a_lesson_imports_after_pytensors_numba_backend(tmp_path):
    """A user who imported PyTensor's Numba backend first can still import a lesson
    (the package used to register its Numba functions while ``backend`` was half
    imported, and the import failed), and the kernels are there at the first compile."""
    script = "import pytensor.link.numba.dispatch\n" + _LAZY_NUMBA_SCRIPT
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={tmp_path}")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after, c, g = out.stdout.split()
    assert after == "True"
    assert float(c) == pytest.approx(8 * np.tanh(0.9), rel=1e-12)
    assert float(g) == pytest.approx(8 * 4 * 9 * (1 - np.tanh(0.9) ** 2), rel=1e-12)


@needs_cxx
@pytest.mark.parametrize("mode", ["C", "CVM"])
def test_a_lessons_first_compile_already_has_the_backend_glue(mode, tmp_path):
    """The first function a fresh process compiles after importing a lesson gets the C rewrites.

    ``logistic_sgd`` (which ``mlp`` and ``convolutional_mlp`` import) imports
    ``backend``; without that, the softmax stays an ``OpFromGraph`` with no C
    code and mode ``"C"`` refuses the graph. A fresh compile directory makes
    sure no cached module imports ``backend`` behind the scenes.
    """
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={tmp_path}")
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_COMPILE_SCRIPT.format(mode=mode)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    err, nll = map(float, out.stdout.split())
    # Zero weights: every class has probability 1/3, argmax is class 0.
    assert err == 0.5 and nll == pytest.approx(np.log(3.0), rel=1e-12)


# --------------------------------------------------------------------------
# float32 tanh on the C backend
# --------------------------------------------------------------------------


def _scalar_ops(fn):
    ops = []
    for node in fn.maker.fgraph.toposort():
        scalar_op = getattr(node.op, "scalar_op", None)
        if scalar_op is None:
            continue
        inner = scalar_op.fgraph.toposort() if hasattr(scalar_op, "fgraph") else []
        ops += [scalar_op] + [n.op for n in inner]
    return ops


@pytest.mark.parametrize("mode, max_ulps", [("CVM", 5), ("C", 5), ("NUMBA", 6)])
def test_float32_tanh_is_the_fast_one_and_accurate(mode, max_ulps):
    if mode != "NUMBA" and not _has_c_compiler():
        pytest.skip("no C compiler for the C backend")
    x = pt.vector("x", dtype="float32")
    b = pt.scalar("b", dtype="float32")
    f = pytensor.function([x, b], [pt.tanh(x), pt.tanh(x + b) * 2], mode=mode)
    if mode != "C":  # the whole-graph linker's function has no per-node graph to look at
        assert sum(isinstance(op, backend.FastTanhF32) for op in _scalar_ops(f)) == 2
    xv = np.concatenate([np.linspace(-12, 12, 200_001), 10.0 ** -np.arange(1, 30, 0.5)]).astype("float32")
    got, got2 = f(xv, np.float32(0.0))
    ref = np.tanh(xv.astype("float64"))
    # a few float32 ulps from the exact value (libm's tanhf is within 2):
    # measured 4.6 in C, 5.5 in Numba (rounded without fused multiply-adds)
    ulps = np.abs(got - ref) / np.spacing(np.abs(ref).astype("float32"))
    assert ulps.max() <= max_ulps and ulps.mean() < 1 and got.dtype == np.float32
    np.testing.assert_array_equal(got2, 2 * got)
    special = f(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], "float32"), np.float32(0))[0]
    assert np.isnan(special[0]) and special[1:3].tolist() == [1.0, -1.0]
    assert special[3] == 0.0 and np.signbit(special[4])


@pytest.mark.parametrize("mode", ["CVM", "NUMBA"])
def test_float64_tanh_keeps_libm(mode):
    if mode == "CVM" and not _has_c_compiler():
        pytest.skip("no C compiler for the C backend")
    x = pt.vector("x", dtype="float64")
    f = pytensor.function([x], pt.tanh(x), mode=mode)
    assert not any(isinstance(op, backend.FastTanhF32) for op in _scalar_ops(f))
    xv = np.linspace(-5, 5, 1001)
    np.testing.assert_allclose(f(xv), np.tanh(xv), rtol=3e-16, atol=0)  # libm against NumPy: 1 ulp


def test_jax_keeps_its_own_tanh():
    pytest.importorskip("jax")
    x32 = pt.vector("x", dtype="float32")
    g = pytensor.function([x32], pt.tanh(x32), mode="JAX")
    assert not any(isinstance(op, backend.FastTanhF32) for op in _scalar_ops(g))


# --------------------------------------------------------------------------
# the convolutional bias gradient on the C backend
# --------------------------------------------------------------------------


@needs_cxx
@pytest.mark.parametrize("mode", ["CVM", "NUMBA"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bias_gradient_sum_in_c(dtype, mode):
    # On NUMBA too: its Numba function calls the same C code (nnet.numba_c).
    x = pt.tensor4("x", dtype=dtype)
    b = pytensor.shared(np.zeros(3, dtype=dtype), name="b")
    cost = pt.tanh(x + b.dimshuffle("x", 0, "x", "x")).sum()
    g = pytensor.grad(cost, b)
    f = pytensor.function([x], g, mode=mode)
    assert any(isinstance(n.op, backend.SumOverBatchAndSpace) for n in f.maker.fgraph.toposort())
    xv = np.random.default_rng(0).standard_normal((5, 3, 7, 6)).astype(dtype)
    expected = (1 - np.tanh(xv.astype("float64")) ** 2).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(f(xv), expected, rtol=1e-5 if dtype == "float32" else 1e-13)
    assert f(xv).dtype == dtype


@needs_cxx
def test_sum_over_batch_and_space_takes_any_strides():
    x = pt.tensor4("x")
    s = backend.SumOverBatchAndSpace()(x)
    f = pytensor.function([x], s, mode="CVM")
    xv = np.random.default_rng(1).standard_normal((4, 6, 5, 3)).transpose(0, 1, 3, 2)[:, ::2]
    np.testing.assert_allclose(f(xv), xv.sum(axis=(0, 2, 3)), rtol=1e-13)
    g = pytensor.function([x], s, mode="NUMBA")  # the same C code, from Numba
    np.testing.assert_array_equal(g(xv), f(xv))
    with pytest.raises(TypeError, match="4-D float32 or float64"):
        backend.SumOverBatchAndSpace()(pt.matrix())


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or not os.path.exists("/proc/self/maps"),
                    reason="names an x86-64 kernel set; reads /proc/self/maps")
@pytest.mark.parametrize("coretype", ["Haswell", "Sandybridge"])
def test_openblas_cores_names_the_kernels_openblas_runs(coretype):
    # OPENBLAS_CORETYPE is read when the library loads: a fresh interpreter for each.
    code = ("import json, scipy.linalg\n"
            "from deeplearning_tutorials.backend import openblas_cores\n"
            "print(json.dumps(openblas_cores()))")
    env = {**os.environ, "OPENBLAS_CORETYPE": coretype}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    cores = json.loads(out.strip().splitlines()[-1])
    scipy_lp64 = [name for name in cores if name.startswith("libscipy_openblas-")]
    assert scipy_lp64, cores
    assert cores[scipy_lp64[0]].lower() == coretype.lower()


# --------------------------------------------------------------------------
# a convolutional layer's tanh(pooled + bias) on the C backend
# --------------------------------------------------------------------------


@needs_cxx
@pytest.mark.parametrize("mode", ["CVM", "C", "NUMBA"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bias_tanh_in_c_is_the_fused_loops_arithmetic(mode, dtype):
    x = pt.tensor4("x", dtype=dtype)
    b = pt.vector("b", dtype=dtype)
    y = pt.tanh(x + b.dimshuffle("x", 0, "x", "x"))
    f = pytensor.function([x, b], y, mode=mode)
    rng = np.random.default_rng(3)
    # 40 x 7 planes of 5 x 3: split over the threads; tanh saturated and not.
    xv = (rng.standard_normal((40, 7, 5, 3)) * 4).astype(dtype)
    bv = rng.standard_normal(7).astype(dtype)
    got = f(xv, bv)
    if mode != "C":
        assert any(isinstance(n.op, backend.BiasTanh) for n in f.maker.fgraph.toposort())
    # The same sum, then the same tanh, as PyTensor's fused loop (without the rewrite).
    rewrite = "local_bias_tanh_for_numba" if mode == "NUMBA" else "local_bias_tanh_for_c"
    g = pytensor.function([x, b], y, mode=pytensor.compile.mode.get_mode(mode).excluding(rewrite))
    assert not any(isinstance(n.op, backend.BiasTanh) for n in g.maker.fgraph.toposort())
    if mode == "NUMBA" and dtype == "float32":
        # The C code of the fast tanh, compiled by the C compiler (which fuses its
        # multiply-adds), is CVM's bit for bit; Numba's own copy of it rounds each
        # operation: a few units in the last place apart.
        np.testing.assert_array_equal(got, pytensor.function([x, b], y, mode="CVM")(xv, bv))
        np.testing.assert_allclose(got, g(xv, bv), rtol=1e-6, atol=0)
    else:
        np.testing.assert_array_equal(got, g(xv, bv))
    ref = np.tanh(xv.astype("float64") + bv[None, :, None, None])
    np.testing.assert_allclose(got, ref, rtol=0, atol=4e-7 if dtype == "float32" else 3e-16)
    assert got.dtype == dtype


@needs_cxx
def test_bias_tanh_leaves_other_broadcasts_alone_and_checks_channels():
    x = pt.tensor4("x")
    b = pt.vector("b")
    for y in (pt.tanh(x + b.dimshuffle("x", "x", "x", 0)), pt.tanh(x + x), pt.tanh(x) + b[0]):
        f = pytensor.function([x, b], y, mode="CVM", on_unused_input="ignore")
        assert not any(isinstance(n.op, backend.BiasTanh) for n in f.maker.fgraph.toposort())
    op = backend.BiasTanh()
    for mode in ("CVM", "NUMBA"):
        f = pytensor.function([x, b], op(x, b.dimshuffle("x", 0, "x", "x")), mode=mode)
        with pytest.raises(ValueError, match="channel"):
            f(np.zeros((2, 3, 4, 4)), np.zeros(5))
    with pytest.raises(TypeError, match=r"\(1, C, 1, 1\)"):
        op(x, x)
    py = pytensor.compile.mode.Mode(linker="py", optimizer="fast_run")
    g = pytensor.function([x, b], op(x, b.dimshuffle("x", 0, "x", "x")), mode=py)
    xv = np.random.default_rng(4).standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(g(xv, np.ones(3)), np.tanh(xv + 1), rtol=1e-15)  # perform


# --------------------------------------------------------------------------
# Large arrays from the heap during a run
# --------------------------------------------------------------------------

_HEAP_SCRIPT = r"""
import ctypes, sys
import numpy as np
from deeplearning_tutorials import backend, flags

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

def mmapped(nbytes):
    # Whether a fresh array of nbytes is served by mmap (glibc's hblkhd grows).
    before = libc.mallinfo2().hblkhd
    a = np.ones(nbytes // 8)
    grew = libc.mallinfo2().hblkhd - before >= nbytes
    del a
    return grew

MiB = 1 << 20
out = [mmapped(64 * MiB)]
with backend.heap_for_large_arrays():
    out.append(mmapped(64 * MiB))
    with backend.heap_for_large_arrays():  # nested
        pass
    out.append(mmapped(64 * MiB))
out.append(mmapped(64 * MiB))
out.append(mmapped(16 * MiB))
out.append(flags.with_flags(lambda: mmapped(64 * MiB))())
print(" ".join(str(int(x)) for x in out))
"""


def _heap_run(env_extra=None):
    env = dict(os.environ)
    env.pop(backend.NO_HEAP_ARRAYS_ENV, None)
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", _HEAP_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


@pytest.mark.skipif(backend._glibc() is None, reason="mallopt is glibc's")
def test_large_arrays_come_from_the_heap_inside_the_block_and_a_lesson_run():
    # before | inside | inside, after a nested block | after: 64 MiB, 16 MiB | in a lesson function
    assert _heap_run() == ["1", "0", "0", "1", "0", "0"]


@pytest.mark.skipif(backend._glibc() is None, reason="mallopt is glibc's")
def test_large_arrays_are_left_to_the_allocator_when_asked():
    # Untouched: glibc still maps 16 MiB (its threshold has not adapted yet).
    assert _heap_run({backend.NO_HEAP_ARRAYS_ENV: "1"}) == ["1"] * 6
