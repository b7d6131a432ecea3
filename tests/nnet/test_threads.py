"""The thread pool of the C Ops (:mod:`deeplearning_tutorials.nnet.threads_c`).

Each test runs a fresh interpreter: the pool is started once per process, by the
first C Op that needs it, with ``$DLT_NUM_THREADS`` read then.
"""

import os
import textwrap

import numpy as np
import pytest
from _scripts import LENET_OPS, run_python  # tests/nnet, on sys.path under pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the pool needs POSIX threads")


def _run(code, tmp_path, threads, *args, timeout=600):
    threads = None if threads is None else str(threads)
    return run_python(code, tmp_path, *args, env={"DLT_NUM_THREADS": threads}, timeout=timeout)


def test_results_do_not_depend_on_the_number_of_threads(tmp_path):
    from deeplearning_tutorials.nnet.conv import (
        conv2d_grad_filters_numpy,
        conv2d_grad_inputs_numpy,
        conv2d_valid_numpy,
    )

    results = {}
    for threads in (1, 2, 3):
        folder = tmp_path / f"t{threads}"
        folder.mkdir()
        info = _run(LENET_OPS, tmp_path, threads, folder)
        assert info["capsule"] == "PyCapsule"
        results[threads] = folder
    names = sorted(p.name for p in results[1].iterdir())
    assert len(names) == 2 * 2 * 8
    for name in names:
        one = np.load(results[1] / name)
        for threads in (2, 3):
            other = np.load(results[threads] / name)
            if name.endswith("-gw.npy"):
                # A filter gradient sums over the images: the direct path (first
                # layer) and, in float32 with AVX-512, the tiled one (second layer)
                # add the threads' partial sums in another grouping. The rest split
                # the work image by image, and agree exactly.
                tol = 1e-6 if "float32" in name else 1e-13
                np.testing.assert_allclose(other, one, rtol=tol, atol=tol * np.abs(one).max())
            else:
                np.testing.assert_array_equal(other, one, err_msg=f"{name}, {threads} threads")
    # And against the NumPy oracles, for the threaded run.
    for dtype in ("float32", "float64"):
        tol = 2e-4 if dtype == "float32" else 1e-10
        for name in ("layer0", "layer1"):
            got = {key: np.load(results[2] / f"{dtype}-{name}-{key}.npy")
                   for key in ("x", "w", "g", "z", "gi", "gw")}
            x, w, g = (got[key].astype("float64") for key in ("x", "w", "g"))
            for key, ref in {"z": conv2d_valid_numpy(x, w),
                             "gi": conv2d_grad_inputs_numpy(g, w),
                             "gw": conv2d_grad_filters_numpy(x, g)}.items():
                np.testing.assert_allclose(got[key], ref, rtol=tol, atol=tol * np.abs(ref).max())


POOL_THREADS = textwrap.dedent(
    """
    import json, os
    import numpy as np, scipy.linalg, pytensor, pytensor.tensor as pt
    from deeplearning_tutorials.nnet.conv import conv2d_op, conv2d_grad_filters_op
    from deeplearning_tutorials.nnet.pool import MaxPool2d
    x = pt.tensor4(dtype="float32"); w = pt.tensor4(dtype="float32")
    fns = [pytensor.function([x, w], conv2d_op(x, w), mode="CVM"),
           pytensor.function([x, w], conv2d_grad_filters_op(x, w), mode="CVM"),
           pytensor.function([x, w], MaxPool2d((2, 2), True)(x) + w.sum(), mode="CVM")]
    args = [np.ones((64, 1, 28, 28), "float32"), np.ones((20, 1, 5, 5), "float32")]
    g = np.ones((64, 20, 24, 24), "float32")
    before = len(os.listdir("/proc/self/task"))
    fns[0](*args); fns[1](args[0], g); fns[2](*args)
    after = len(os.listdir("/proc/self/task"))
    print(json.dumps({"started": after - before}))
    """
)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_one_pool_for_every_module(tmp_path, threads):
    # Three Ops, three compiled modules under CVM, one pool: threads - 1 workers.
    assert _run(POOL_THREADS, tmp_path, threads)["started"] == threads - 1


FORK = textwrap.dedent(
    """
    import json, os
    import numpy as np, pytensor, pytensor.tensor as pt
    from deeplearning_tutorials.nnet.conv import conv2d_grad_filters_op
    x = pt.tensor4(dtype="float64"); g = pt.tensor4(dtype="float64")
    f = pytensor.function([x, g], conv2d_grad_filters_op(x, g), mode="CVM")
    rng = np.random.default_rng(0)
    xv, gv = rng.standard_normal((64, 1, 28, 28)), rng.standard_normal((64, 20, 24, 24))
    parent = f(xv, gv)
    pid = os.fork()
    if pid == 0:
        # The workers did not survive the fork: the pool starts again here.
        child = f(xv, gv)
        os._exit(0 if np.allclose(child, parent, rtol=1e-13) else 3)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"child_exit": os.waitstatus_to_exitcode(status),
                      "parent_again": bool(np.allclose(f(xv, gv), parent, rtol=1e-13))}))
    """
)


def test_pool_works_in_a_forked_child(tmp_path):
    assert _run(FORK, tmp_path, 2, timeout=300) == {"child_exit": 0, "parent_again": True}


OPENBLAS = textwrap.dedent(
    """
    import ctypes, json, os, threading
    import numpy as np, scipy.linalg.blas as blas, pytensor, pytensor.tensor as pt
    from deeplearning_tutorials.nnet.pool import MaxPool2d
    x = pt.tensor4(dtype="float32")
    f = pytensor.function([x], MaxPool2d((2, 2), True)(x), mode="CVM")
    f(np.ones((8, 4, 6, 6), "float32"))  # starts the pool
    lib = [l.split()[-1] for l in open("/proc/self/maps")
           if "libscipy_openblas-" in l or "libscipy_openblas." in l][0]
    hook = ctypes.c_void_p.in_dll(ctypes.CDLL(lib), "openblas_threads_callback_").value
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 700, 900))
    ok = []
    def work():
        for _ in range(10):
            for dt, gemm, tol in ((np.float32, blas.sgemm, 1e-4), (np.float64, blas.dgemm, 1e-12)):
                got = gemm(1.0, a.astype(dt), b.astype(dt).T)
                ok.append(bool(np.allclose(got, a @ b.T, rtol=tol, atol=tol * 30)))
    work()
    # Two Python threads at once (SciPy drops the GIL): one finds the pool busy.
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(json.dumps({"hooked": hook is not None, "all_ok": all(ok), "n": len(ok)}))
    """
)


@pytest.mark.parametrize("threads, hooked", [(2, True), (1, False)])
def test_openblas_runs_its_gemms_on_the_pool(tmp_path, threads, hooked):
    out = _run(OPENBLAS, tmp_path, threads, timeout=300)
    assert out == {"hooked": hooked, "all_ok": True, "n": 60}
