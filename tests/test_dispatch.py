"""The package's Numba and JAX code is registered when a graph needs it, not at import.

In a fresh process: importing the package imports none of the modules that hold
its backends' code; compiling a graph of its Ops in the package's C and JAX
modes imports no Numba; compiling a graph without its Ops imports none either; a
graph holding its Ops, built by hand, compiles under PyTensor's own NUMBA and
JAX modes with the code of exactly the Ops it holds (no object mode).
"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PROBE = r"""
import json, sys, warnings
warnings.filterwarnings("error", "Numba will use object mode")
import numpy as np, pytensor, pytensor.tensor as pt
import deeplearning_tutorials.modes
from deeplearning_tutorials.modes.jax import DynamicSlice
from deeplearning_tutorials.modes.numba import ShapeCheck
from deeplearning_tutorials.nnet import max_pool_2d

LAZY = ("deeplearning_tutorials.nnet.numba", "deeplearning_tutorials.modes.numba_dispatch",
        "deeplearning_tutorials.nnet.jax", "deeplearning_tutorials.modes.jax_dispatch")
def loaded():
    return [m for m in LAZY if m in sys.modules]

report = {"import": loaded()}
t = pt.tensor4("t")
for mode in ("DLT_CVM", "DLT_C", "DLT_JAX"):
    f = pytensor.function([t], max_pool_2d(t, (2, 2)), mode=mode)
    assert np.asarray(f(np.arange(16.0).reshape(1, 1, 4, 4))).ravel().tolist() == [5, 7, 13, 15]
report["package_c_and_jax"] = loaded() + [m for m in ("numba",) if m in sys.modules]
x = pt.matrix("x")
assert pytensor.function([x], 2 * x, mode="NUMBA")(np.ones((2, 2))).sum() == 8
report["plain"] = loaded()
f = pytensor.function([x], ShapeCheck((None, 3))(x) + 1, mode="NUMBA")
assert f(np.zeros((2, 3))).sum() == 6
report["shape_check"] = loaded()
f = pytensor.function([t], max_pool_2d(t, (2, 2)), mode="NUMBA")
assert f(np.arange(16.0).reshape(1, 1, 4, 4)).ravel().tolist() == [5, 7, 13, 15]
report["pool"] = loaded()
start = pt.lscalar("start")
f = pytensor.function([x, start], DynamicSlice(0, 2)(x, start), mode="JAX")
assert np.asarray(f(np.arange(8.0).reshape(4, 2), 1)).ravel().tolist() == [2, 3, 4, 5]
report["dynamic_slice"] = loaded()
print(json.dumps(report))
"""


def test_backend_code_is_imported_for_the_ops_a_graph_holds():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    numba, jax = "deeplearning_tutorials.nnet.numba", "deeplearning_tutorials.nnet.jax"
    shape_check, dynamic_slice = ("deeplearning_tutorials.modes.numba_dispatch",
                                  "deeplearning_tutorials.modes.jax_dispatch")
    assert report == {
        "import": [],
        "package_c_and_jax": [jax],
        "plain": [jax],
        "shape_check": [shape_check, jax],
        "pool": [numba, shape_check, jax],
        "dynamic_slice": [numba, shape_check, jax, dynamic_slice],
    }
