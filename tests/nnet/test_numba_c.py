"""The Numba backend calling the C kernels (:mod:`deeplearning_tutorials.nnet.numba_c`).

Most tests run fresh interpreters: the library is loaded once per process, and
``$DLT_NUMBA_KERNELS`` and PyTensor's flags are read then.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the library is built for POSIX")

# LeNet5's two layers with 80 images through every Op, on one backend; saves the results.
COMPUTE = textwrap.dedent(
    """
    import json, sys
    import numpy as np, pytensor, pytensor.tensor as pt
    from deeplearning_tutorials.nnet.conv import (
        conv2d_op, conv2d_grad_inputs_op, conv2d_grad_filters_op)
    from deeplearning_tutorials.nnet.pool import MaxPool2d, MaxPool2dGrad
    from deeplearning_tutorials.nnet import numba_c
    mode, folder = sys.argv[1], sys.argv[2]
    for dtype in ("float32", "float64"):
        rng = np.random.default_rng(7)
        x = pt.tensor4(dtype=dtype); w = pt.tensor4(dtype=dtype); g = pt.tensor4(dtype=dtype)
        m = pt.tensor4(dtype=dtype)
        pool = MaxPool2d((2, 2), True)
        f = pytensor.function([x, w, g, m], [
            conv2d_op(x, w), conv2d_grad_inputs_op(g, w), conv2d_grad_filters_op(x, g),
            pool(g), MaxPool2dGrad((2, 2), True)(g, pool(g), m)], mode=mode)
        for name, (xs, ws) in {"layer0": ((80, 1, 28, 28), (20, 1, 5, 5)),
                               "layer1": ((80, 20, 12, 12), (50, 20, 5, 5))}.items():
            xv = rng.standard_normal(xs).astype(dtype)
            wv = rng.standard_normal(ws).astype(dtype)
            oh, ow = xs[2] - ws[2] + 1, xs[3] - ws[3] + 1
            gv = rng.standard_normal((xs[0], ws[0], oh, ow)).astype(dtype)
            mv = rng.standard_normal((xs[0], ws[0], oh // 2, ow // 2)).astype(dtype)
            outs = f(xv, wv, gv, mv)
            for key, val in zip(("x", "w", "g", "z", "gi", "gw", "pool", "poolgrad"),
                                (xv, wv, gv, *outs)):
                np.save(f"{folder}/{dtype}-{name}-{key}.npy", val)
    print(json.dumps({"loaded": numba_c._state["loaded"], "error": numba_c.error()}))
    """
)


def _run(code, tmp_path, *args, env=None, timeout=600):
    full_env = dict(os.environ)
    full_env.update(env or {})
    script = tmp_path / "script.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _compute(tmp_path, label, mode, env=None):
    folder = tmp_path / label
    folder.mkdir()
    return folder, _run(COMPUTE, tmp_path, mode, folder, env=env)


def test_numba_runs_the_c_kernels_with_the_c_backends_results(tmp_path):
    # Same C code, same BLAS, same threads: the Numba graph's results are the CVM
    # graph's, bit for bit; and a second Numba process (its machine code now from
    # PyTensor's cache, calling the library by name) agrees again.
    cvm, _ = _compute(tmp_path, "cvm", "CVM")
    first, info = _compute(tmp_path, "numba1", "NUMBA")
    assert info == {"loaded": True, "error": None}
    again, info = _compute(tmp_path, "numba2", "NUMBA")
    assert info == {"loaded": True, "error": None}
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
    assert info == {"loaded": False, "error": "DLT_NUMBA_KERNELS=numba"}
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
    info = _run(POOL_ONLY, tmp_path, env=env)
    assert info["loaded"] is False and info["out"] == [5.0, 7.0, 13.0, 15.0]
    assert info["error"] == "RuntimeError: /bin/false exited with status 1: no message"
    assert len(info["warnings"]) == 1 and "one-core kernels" in info["warnings"][0]
    assert "/bin/false exited with status 1" in info["warnings"][0]


def test_an_unknown_kernel_choice_is_reported_and_the_c_kernels_run(tmp_path):
    info = _run(POOL_ONLY, tmp_path, env={"DLT_NUMBA_KERNELS": "fortran"})
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
    assert _run(ONE_POOL, tmp_path, env={"DLT_NUM_THREADS": "3"}) == {"started": 2}


def test_library_symbols_carry_the_abi_version():
    from deeplearning_tutorials.nnet import numba_c

    assert numba_c.symbol("conv_fwd", "float32") == f"dlt_nbc{numba_c.ABI_VERSION}_conv_fwd_f32"
    assert numba_c.symbol("pool", "float64") == f"dlt_nbc{numba_c.ABI_VERSION}_pool_f64"
    for kind in ("conv_fwd", "conv_gi", "conv_gw", "pool"):
        for sfx in ("f32", "f64"):
            assert f"int dlt_nbc{numba_c.ABI_VERSION}_{kind}_{sfx}(" in numba_c.source()
