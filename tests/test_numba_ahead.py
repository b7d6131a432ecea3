"""The node functions of a NUMBA graph compiled ahead in a forked child (numba_ahead)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytensor
import pytest

import deeplearning_tutorials.nnet  # the port's Numba entry point and numba_ahead
from deeplearning_tutorials import numba_ahead

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs os.fork")


def test_predicted_types_are_the_ones_the_first_call_compiles(mnist_pkl, monkeypatch):
    """Every node function of LeNet5's two functions, with the exact Numba types."""
    from deeplearning_tutorials import datasets
    from deeplearning_tutorials.testing import lenet5_functions

    from deeplearning_tutorials import numba_ops

    graphs = []
    monkeypatch.setattr(numba_ahead, "start", lambda entry, order: graphs.append((entry, order)))
    # A graph function not in the cache, so that its first call types its node functions
    # (loading them from the cache or compiling them) instead of loading the whole.
    monkeypatch.setattr(numba_ops, "ENTRY_POINT_SALT", f"test{os.getpid()}_{time.time_ns()}")
    (tx, ty), (vx, vy), _ = datasets.load_arrays(mnist_pkl)
    data = [(tx[:500], ty[:500]), (vx[:500], vy[:500]), (vx[:500], vy[:500])]
    with pytensor.config.change_flags(floatX="float32"):
        _, train_model, validate_model = lenet5_functions(data, mode="NUMBA")
        train_model(0), validate_model(0)
    assert len(graphs) == 2
    sizes = []
    for entry, order in graphs:
        jobs = numba_ahead.node_signatures(entry, order)
        sizes.append(len(jobs))
        missed = [(f.py_func.__name__, sig) for f, sig in jobs if sig not in f.overloads]
        assert not missed
        assert numba_ahead.entry_signature(entry, order) in entry.overloads
        # Every cached node function the first call compiled is listed.
        called = {id(f) for f, _ in jobs}
        env = entry.py_func.__globals__
        cached = {id(v) for v in env.values() if hasattr(v, "overloads") and v.overloads
                  and v is not entry and type(v._cache).__name__ != "NullCache"}
        assert cached <= called
    assert sizes[0] > 60 and sizes[1] > 20  # training and validation functions


def test_a_source_it_does_not_recognise_gives_no_work():
    import numba

    @numba.njit(cache=False)
    def graph(x):
        return x

    graph.py_func.__source__ = "def graph(x):\n    return x\n"
    assert numba_ahead.node_signatures(graph, order=["a node"]) == []


def test_off_when_asked_without_pytensors_cache_or_with_jax_running(monkeypatch):
    monkeypatch.setenv("DLT_NUMBA_AHEAD", "1")
    monkeypatch.setattr(numba_ahead, "_jax_running", lambda: False)
    assert numba_ahead.enabled()
    monkeypatch.setattr(numba_ahead, "_jax_running", lambda: True)
    assert not numba_ahead.enabled()
    monkeypatch.setattr(numba_ahead, "_jax_running", lambda: False)
    with pytensor.config.change_flags(numba__cache=False):
        assert not numba_ahead.enabled()
    for value in ("0", "off", "no"):
        monkeypatch.setenv("DLT_NUMBA_AHEAD", value)
        assert not numba_ahead.enabled()
        assert numba_ahead.start(None, []) is None


# A small training graph (logistic regression with a tanh layer) of some twenty node
# functions, compiled in a fresh compile directory.
_SCRIPT = r"""
import os, sys, time
import numpy as np, pytensor, pytensor.tensor as pt
import deeplearning_tutorials.nnet  # the port's Numba entry point and numba_ahead
from deeplearning_tutorials import numba_ahead
rng = np.random.RandomState(1)
x = pytensor.shared(rng.rand(40, 6).astype("float64"))
y = pytensor.shared((np.arange(40) % 3).astype("int32"))
W = pytensor.shared(rng.rand(6, 5) - 0.5)
V = pytensor.shared(rng.rand(5, 3) - 0.5)
b = pytensor.shared(np.zeros(3))
i = pt.lscalar()
h = pt.tanh(pt.dot(x[i * 10:(i + 1) * 10], W))
p = pt.special.softmax(pt.dot(h, V) + b, axis=1)
cost = -pt.mean(pt.log(p)[pt.arange(10), y[i * 10:(i + 1) * 10]])
updates = [(v, v - 0.1 * g) for v, g in zip((W, V, b), pt.grad(cost, [W, V, b]))]
f = pytensor.function([i], cost, updates=updates, mode="NUMBA")
child = numba_ahead._state["child"]
print("child", child, "jax", numba_ahead._jax_running(), flush=True)
if sys.argv[1] == "wait":
    assert numba_ahead.wait(timeout=300)
elif sys.argv[1] == "sleep":
    time.sleep(600)
from pytensor.link.numba.cache import NUMBA_CACHE_PATH
print("indexes", len([n for n in os.listdir(NUMBA_CACHE_PATH) if n.endswith(".nbi")]))
costs = [float(f(k % 4)) for k in range(6)]
nodes = [v for v in f.vm.jit_fn.py_func.__globals__.values()
         if hasattr(v, "stats") and v is not f.vm.jit_fn]
hits = sum(sum(v.stats.cache_hits.values()) for v in nodes)
misses = sum(sum(v.stats.cache_misses.values()) for v in nodes)
print("costs", repr(costs))
print("hits", hits, "misses", misses)
entry = f.vm.jit_fn.stats
print("entry", sum(entry.cache_hits.values()), sum(entry.cache_misses.values()))
"""


def _run(tmp_path, how, ahead="1", **kw):
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={tmp_path}", DLT_NUMBA_AHEAD=ahead)
    env.pop("NUMBA_CACHE_DIR", None)
    return subprocess.run([sys.executable, "-c", _SCRIPT, how], env=env, capture_output=True,
                          text=True, **kw)


def _field(out, name):
    return next(line.split(maxsplit=1)[1] for line in out.splitlines()
                if line.startswith(name + " "))


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def test_the_first_call_loads_what_the_child_compiled(tmp_path):
    """With the child done first, the whole graph's function comes from the cache: same costs."""
    ahead = _run(tmp_path / "ahead", "wait", check=True).stdout
    alone = _run(tmp_path / "alone", "go", ahead="0", check=True).stdout
    child, _, jax_running = _field(ahead, "child").split()
    # A NUMBA process leaves JAX's runtime unstarted, even with JAX installed.
    assert child != "None" and jax_running == "False"
    assert _field(alone, "child").split()[0] == "None"
    # The child saved the node functions and the graph's function before the first call...
    assert int(_field(ahead, "indexes")) > numba_ahead.MIN_JOBS
    assert _field(alone, "indexes") == "0"
    # ... which loads the graph's function and never needs its nodes; alone, it compiles
    # them all (one equal to another loads the other's from the cache).
    assert _field(ahead, "entry") == "1 0" and _field(ahead, "hits") == "0 misses 0"
    assert _field(alone, "entry") == "0 1"
    alone_hits, alone_misses = map(int, _field(alone, "hits").split()[::2])
    assert alone_misses >= numba_ahead.MIN_JOBS
    assert _field(ahead, "costs") == _field(alone, "costs")
    assert _gone(int(child))
    # A warm start has nothing to compile: no child.
    warm = _run(tmp_path / "ahead", "go", check=True).stdout
    assert _field(warm, "child").split()[0] == "None" and _field(warm, "entry") == "1 0"
    assert _field(warm, "costs") == _field(alone, "costs")


def test_the_child_dies_with_a_killed_parent(tmp_path):
    """SIGKILL leaves no atexit: the kernel ends the child (PR_SET_PDEATHSIG)."""
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={tmp_path}", DLT_NUMBA_AHEAD="1")
    env.pop("NUMBA_CACHE_DIR", None)
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, "sleep"], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        child = int(line.split()[1])
        assert not _gone(child)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child)


def test_a_finished_run_leaves_no_child(tmp_path):
    """The run exits before the child has finished: atexit kills it, nothing is left behind."""
    out = _run(tmp_path, "go", check=True, timeout=600).stdout
    assert _gone(int(_field(out, "child").split()[0]))
    assert np.isfinite(eval(_field(out, "costs"))).all()


_FORK_SCRIPT = r"""
import os
from deeplearning_tutorials import numba_ahead
numba_ahead._state.update(child=4242, pids=[4242])
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, repr((numba_ahead._state["child"], numba_ahead._state["pids"])).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(os.read(read, 100).decode(), numba_ahead._state["pids"])
numba_ahead._state.update(child=None, pids=[])
"""


def test_another_fork_of_the_process_does_not_own_its_children():
    """A process forked for something else must not kill the child at its exit."""
    out = subprocess.run([sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["(None,", "[])", "[4242]"]
