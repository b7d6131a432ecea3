"""The package is a good citizen of PyTensor: it adds its Ops and changes nothing else.

Two fresh processes run ``_contract_probe.py``: one never imports the package, the
other imports every module of it and compiles graphs of its Ops under PyTensor's
NUMBA, CVM and JAX modes (and the package's own) first. Then both compile and run
graphs without the package's Ops, and describe PyTensor, Numba and the process.
Everything must be the same: the attributes of PyTensor's and Numba's modules and
classes, the dispatch of PyTensor's own Op types, PyTensor's modes, linkers and
configuration, the environment, the nodes the plain graphs compile to and their
results, bit for bit; and the import starts no thread and no process.  Each
process compiles into an empty compile directory of its own (the only difference
between their environments).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("_contract_probe.py")

# Fresh processes, each compiling with empty caches.
pytestmark = pytest.mark.slow


def _start_probe(kind, compiledir):
    # Each process with its own empty compile directory (and Numba cache): code
    # loaded from a cache need not round as code just compiled does.
    flags = [f for f in (os.environ.get("PYTENSOR_FLAGS"), f"base_compiledir={compiledir}") if f]
    env = dict(os.environ, PYTENSOR_FLAGS=",".join(flags))
    return subprocess.Popen([sys.executable, str(PROBE), kind], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _report(proc):
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    # The two processes run side by side: they share nothing.
    procs = [_start_probe(kind, tmp_path_factory.mktemp(kind)) for kind in ("plain", "package")]
    try:
        return tuple(_report(proc) for proc in procs)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_every_module_of_the_package_was_imported(reports):
    # Every source file (the backends' code after the check for threads).
    root = Path(__file__).resolve().parents[1] / "deeplearning_tutorials"
    names = {".".join(("deeplearning_tutorials",) + path.relative_to(root).with_suffix("").parts)
             .removesuffix(".__init__") for path in root.rglob("*.py")}
    _, package = reports
    assert sorted(package["imported"]) == sorted(names - {"deeplearning_tutorials"})


def test_importing_starts_no_thread_and_no_process(reports):
    plain, package = reports
    assert package["after_import"]["threads"] == plain["after_import"]["threads"]
    assert package["after_import"]["children"] == []


@pytest.mark.parametrize("section", ["modules", "numba_funcify", "jax_funcify", "modes", "config",
                                     "environ"])
def test_pytensor_numba_and_the_process_are_left_as_they_were(reports, section):
    plain, package = reports
    before, after = plain["state"][section], package["state"][section]
    if section == "modules":
        for name in before:
            changed = {k: (before[name].get(k), after[name].get(k))
                       for k in set(before[name]) | set(after[name])
                       if before[name].get(k) != after[name].get(k)}
            assert not changed, (name, changed)
    elif section == "environ":
        # PYTENSOR_FLAGS names each process's own compile directory (see _probe).
        assert {k: v for k, v in after.items() if k != "PYTENSOR_FLAGS"} == {
            k: v for k, v in before.items() if k != "PYTENSOR_FLAGS"}
    else:
        assert after == before


@pytest.mark.parametrize("mode", ["NUMBA", "CVM", "JAX"])
@pytest.mark.parametrize("graph", ["logreg", "reductions"])
def test_plain_graphs_compile_to_the_same_nodes_and_numbers(reports, mode, graph):
    plain, package = reports
    nodes_before, digest_before = plain["graphs"][mode][graph]
    nodes_after, digest_after = package["graphs"][mode][graph]
    assert nodes_after == nodes_before
    assert digest_after == digest_before
