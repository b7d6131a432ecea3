"""The Numba backend calling the C kernels (:mod:`deeplearning_tutorials.nnet.numba_c`).

Most tests run fresh interpreters: the library is loaded once per process, and
``$DLT_NUMBA_KERNELS`` and PyTensor's flags are read then.
"""

import os
import textwrap

import numpy as np
import pytest
from _scripts import LENET_OPS, run_python  # tests/nnet, on sys.path under pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the library is built for POSIX")


def _compute(tmp_path, label, mode, env=None):
    folder = tmp_path / label
    folder.mkdir()
    return folder, run_python(LENET_OPS, tmp_path, folder, mode, env=env)


def test_numba_runs_the_c_kernels_with_the_c_backends_results(tmp_path):
    # Same C code, same BLAS, same threads: the Numba graph's results are the CVM
    # graph's, bit for bit; and a second Numba process (its machine code now from
    # PyTensor's cache, calling the library by name) agrees again.
    cvm, _ = _compute(tmp_path, "cvm", "CVM")
    first, info = _compute(tmp_path, "numba1", "NUMBA")
    assert (info["loaded"], info["error"]) == (True, None)
    again, info = _compute(tmp_path, "numba2", "NUMBA")
    assert (info["loaded"], info["error"]) == (True, None)
    names = sorted(p.name for p in cvm.iterdir())
    assert len(names) == 2 * 2 * 8
    for name in names:
        np.testing.assert_array_equal(np.load(first / name), np.load(cvm / name), err_msg=name)
        np.testing.assert_array_equal(np.load(again / name), np.load(cvm / name), err_msg=name)


def test_pure_numba_kernels_on_request_share_the_cache_safely(tmp_path):
    # DLT_NUMBA_KERNELS=numba: the one-core Numba kernels, in a process that has not
    # loaded the library, with the cache the C-calling functions were just stored in
    # (their cache key differs, so none of them is loaded here). Same results to
    # rounding; then the C kernels again, from the cache.
    with_c, _ = _compute(tmp_path, "c", "NUMBA")
    pure, info = _compute(tmp_path, "numba", "NUMBA", env={"DLT_NUMBA_KERNELS": "numba"})
    assert (info["loaded"], info["error"]) == (False, "DLT_NUMBA_KERNELS=numba")
    with_c_again, info = _compute(tmp_path, "c2", "NUMBA")
    assert info["loaded"] is True
    for name in sorted(p.name for p in with_c.iterdir()):
        a, b = np.load(with_c / name), np.load(pure / name)
        np.testing.assert_array_equal(np.load(with_c_again / name), a, err_msg=name)
        if name.endswith(("-z.npy", "-gi.npy", "-gw.npy")):
            tol = 2e-5 if "float32" in name else 1e-12
            np.testing.assert_allclose(b, a, rtol=tol, atol=tol * np.abs(a).max(), err_msg=name)
        else:  # inputs, pooling and its gradient: no rounding at all
            np.testing.assert_array_equal(b, a, err_msg=name)


def test_without_a_compiler_numba_falls_back_to_its_own_kernels(tmp_path):
    # No C++ compiler (PyTensor's cxx flag empty) and a compile directory without the
    # library: the build is not attempted, load() says why, the Numba graph still runs.
    env = {"PYTENSOR_FLAGS": f"cxx=,base_compiledir={tmp_path / 'compiledir'}"}
    folder, info = _compute(tmp_path, "nocxx", "NUMBA", env=env)
    assert info["loaded"] is False
    assert "no C++ compiler" in info["error"]
    from deeplearning_tutorials.nnet.conv import conv2d_valid_numpy

    x, w = (np.load(folder / f"float64-layer1-{k}.npy") for k in ("x", "w"))
    np.testing.assert_allclose(np.load(folder / "float64-layer1-z.npy"),
                               conv2d_valid_numpy(x, w), rtol=1e-10, atol=1e-10)


POOL_ONLY = textwrap.dedent(
    """
    import json, warnings
    import numpy as np, pytensor, pytensor.tensor as pt
    from deeplearning_tutorials.nnet.pool import MaxPool2d
    from deeplearning_tutorials.nnet import numba_c
    x = pt.tensor4()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = pytensor.function([x], MaxPool2d((2, 2), True)(x), mode="NUMBA")
    out = f(np.arange(16.0).reshape(1, 1, 4, 4))
    print(json.dumps({"loaded": numba_c._state["loaded"], "error": numba_c.error(),
                      "out": out.ravel().tolist(),
                      "warnings": [str(w.message) for w in caught if "DLT_NUMBA" in str(w.message)
                                   or "NUMBA runs" in str(w.message)]}))
    """
)


def test_a_failed_build_is_reported_and_numba_falls_back(tmp_path):
    # A compiler that fails (/bin/false): one warning naming it, the one-core kernels.
    env = {"PYTENSOR_FLAGS": f"cxx=/bin/false,base_compiledir={tmp_path / 'compiledir'}"}
    info = run_python(POOL_ONLY, tmp_path, env=env)
    assert info["loaded"] is False and info["out"] == [5.0, 7.0, 13.0, 15.0]
    assert info["error"] == "RuntimeError: /bin/false exited with status 1: no message"
    assert len(info["warnings"]) == 1 and "one-core kernels" in info["warnings"][0]
    assert "/bin/false exited with status 1" in info["warnings"][0]


NO_CONV = textwrap.dedent(
    """
    import json
    import numpy as np, pytensor, pytensor.tensor as pt
    from deeplearning_tutorials.nnet import numba_c
    x = pt.matrix(); b = pt.vector()
    cost = pt.tanh(x + b).sum()
    f = pytensor.function([x, b], [cost, pytensor.grad(cost, b)], mode="NUMBA")
    f(np.ones((3, 2)), np.zeros(2))
    print(json.dumps({"loaded": numba_c._state["loaded"]}))
    """
)


def test_graphs_without_these_operations_leave_the_library_alone(tmp_path):
    # The first two lessons' graphs (sums, tanh of a sum) on NUMBA: the library is
    # neither built nor loaded (the Numba rewrites match first, then load it).
    assert run_python(NO_CONV, tmp_path) == {"loaded": None}


def test_an_unknown_kernel_choice_is_reported_and_the_c_kernelsrun_python(tmp_path):
    info = run_python(POOL_ONLY, tmp_path, env={"DLT_NUMBA_KERNELS": "fortran"})
    assert info["loaded"] is True and info["out"] == [5.0, 7.0, 13.0, 15.0]
    assert info["warnings"] == [
        "DLT_NUMBA_KERNELS='fortran' is not one of ('c', 'numba'): using the C kernels"]


ONE_POOL = textwrap.dedent(
    """
    import json, os
    import numpy as np, scipy.linalg, pytensor, pytensor.tensor as pt
    from deeplearning_tutorials.nnet.conv import conv2d_op, conv2d_grad_filters_op
    x = pt.tensor4(dtype="float32"); w = pt.tensor4(dtype="float32")
    fns = [pytensor.function([x, w], conv2d_op(x, w), mode="NUMBA"),
           pytensor.function([x, w], conv2d_grad_filters_op(x, w), mode="CVM")]
    args = [np.ones((64, 1, 28, 28), "float32"), np.ones((20, 1, 5, 5), "float32")]
    g = np.ones((64, 20, 24, 24), "float32")
    before = len(os.listdir("/proc/self/task"))
    fns[0](*args); fns[1](args[0], g)
    after = len(os.listdir("/proc/self/task"))
    print(json.dumps({"started": after - before}))
    """
)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_numba_and_cvm_functions_share_one_pool(tmp_path):
    assert run_python(ONE_POOL, tmp_path, env={"DLT_NUM_THREADS": "3"}) == {"started": 2}


def test_library_symbols_carry_the_abi_version():
    from deeplearning_tutorials.nnet import numba_c

    assert numba_c.symbol("conv_fwd", "float32") == f"dlt_nbc{numba_c.ABI_VERSION}_conv_fwd_f32"
    assert numba_c.symbol("pool", "float64") == f"dlt_nbc{numba_c.ABI_VERSION}_pool_f64"
    for kind in ("conv_fwd", "conv_gi", "conv_gw", "pool"):
        for sfx in ("f32", "f64"):
            assert f"int dlt_nbc{numba_c.ABI_VERSION}_{kind}_{sfx}(" in numba_c.source()
