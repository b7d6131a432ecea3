"""Compile a graph's Numba node functions ahead, in a second process, on the second core.

Port note (not in the original): with an empty cache, the first call of a function
compiled by ``NUMBA`` spends most of its time in Numba compiling, one after another and
in one thread, the functions PyTensor writes for the graph's nodes (some seventy for
LeNet5's training function), and then the graph's own function that calls them. PyTensor
caches each node function on disk under its own key, and Numba looks in that cache before
it compiles one. So when PyTensor has built a function's Numba code (before its first
call), :func:`start` forks a child process that compiles the node functions in the
reverse of the order the first call will need them, saving each into the cache, while the
first call compiles them in order and loads from the cache those the child has already
saved: the two meet in the middle. The machine code is the same either way (the child is a
copy of this process, with the same Numba, LLVM and target), and a node function the child
has not reached is simply compiled here, as before.

The child needs each node function's argument types before the first call has inferred
them: :func:`node_signatures` reads them off the graph (the types PyTensor gives its
variables, C-ordered arrays, the layout Numba gives a transposed matrix); a wrong guess
costs only the child's time, since Numba's cache is keyed by the exact types.

One child at a time: a function built later (the tutorials build the test, validation and
training functions one after another) replaces it with a child that has the new graph's
work too, the largest graph's first (the training function, the first one the tutorials
call), each graph's in reverse; then the graphs' own functions, the smaller first, so that
the first validation of a training run, many minibatches later, finds its function
compiled. The child is killed when this process exits (and by the
kernel if this process dies first); it writes nothing but Numba's cache files.
``$DLT_NUMBA_AHEAD=0`` turns this off; it is off except on Linux, when PyTensor's Numba
cache is off, and in a process that has started JAX's runtime.
"""

import atexit
import collections
import ctypes
import os
import re
import signal
import sys
import threading
import warnings

#: Graphs with fewer node functions than this are compiled as before.
MIN_JOBS = 8

#: The child works for this many of the latest graphs not yet called, at most.
MAX_GRAPHS = 4

_CALL = re.compile(r"^ {4}([\w, ]+) = (\w+)\(([\w, ]*)\)$")

_lock = threading.Lock()
_state = {"graphs": [], "child": None, "pids": [], "atexit": False}
_Graph = collections.namedtuple("_Graph", "entry nodes entry_types")


def _forget():
    """In any forked process: the children and the graphs are the parent's, not its own."""
    global _lock
    _lock = threading.Lock()
    _state.update(graphs=[], child=None, pids=[])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def enabled() -> bool:
    """Whether :func:`start` forks.

    On Linux, with ``$DLT_NUMBA_AHEAD`` not 0, PyTensor's Numba cache on, and JAX's runtime
    not started in this process (its threads make a fork unsafe, and JAX says so).
    """
    import pytensor

    flag = os.environ.get("DLT_NUMBA_AHEAD", "1").strip().lower()
    return (sys.platform.startswith("linux") and hasattr(os, "fork")
            and flag not in ("0", "false", "no", "off") and bool(pytensor.config.numba__cache)
            and not _jax_running())


def _jax_running() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None)
                or getattr(bridge, "_at_fork_handler_installed", False))


def _predicted_type(var, types):
    """Numba's type of ``var`` as the first call will infer it, or None if unknown."""
    import numba
    from pytensor.link.numba.dispatch.basic import get_numba_type
    from pytensor.scalar import ScalarType
    from pytensor.tensor.type import TensorType

    if not isinstance(var.type, TensorType | ScalarType):
        return None
    if isinstance(var.type, ScalarType):
        return get_numba_type(var.type)
    layout = "C"
    owner = var.owner
    if owner is not None and type(owner.op).__name__ == "Transposed":
        source = types.get(owner.inputs[0])
        if isinstance(source, numba.types.Array) and source.layout in "CF":
            layout = "F" if source.layout == "C" else "C"
        else:
            return None
    predicted = get_numba_type(var.type, layout=layout)
    if owner is not None:
        # A view of a read-only array (a constant's) is read-only too.
        viewed = getattr(owner.op, "view_map", {}).get(owner.outputs.index(var), [])
        if any(not getattr(types.get(owner.inputs[i]), "mutable", True) for i in viewed):
            predicted = predicted.copy(readonly=True)
    return predicted


def node_signatures(graph_fn, order, uncached_only=False):
    """``[(dispatcher, argument types)]`` of a graph function's node calls, in call order.

    ``graph_fn`` is the Numba function PyTensor wrote for the graph (its source is a list
    of calls, one per node of ``order``); only node functions that PyTensor caches are
    listed, and with ``uncached_only`` only those not in the cache yet. Returns [] when
    the source does not read as expected.
    """
    return _read(graph_fn, order, uncached_only)[0]


def entry_signature(graph_fn, order):
    """The argument types of the graph function itself, as its first call passes them.

    None when some are not known.
    """
    return _read(graph_fn, order)[1]


def _read(graph_fn, order, uncached_only=False):
    import numba
    from numba.core.caching import NullCache

    source = getattr(graph_fn.py_func, "__source__", "")
    env = graph_fn.py_func.__globals__
    calls = [m.groups() for m in map(_CALL.match, source.splitlines()) if m]
    if len(calls) != len(order):
        return [], None
    params = re.match(r"def \w+\(([\w, ]*)\):", source.lstrip())
    names = [p.strip() for p in params.group(1).split(",")] if params else []
    types = {}  # variable -> predicted Numba type
    by_name = {}  # variable name in the source -> variable
    jobs, seen = [], set()
    for (outs, func_name, args), node in zip(calls, order):
        args = [a.strip() for a in args.split(",") if a.strip()]
        outs = [o.strip() for o in outs.split(",") if o.strip()]
        if len(args) != len(node.inputs) or len(outs) != len(node.outputs):
            return [], None
        arg_types = []
        for name, var in zip(args, node.inputs):
            if name in names and var not in types:
                types[var] = _predicted_type(var, types)
            if var in types:
                arg_types.append(types[var])
            elif name in env:  # a constant, a global of the graph's function
                const_type = numba.typeof(env[name])
                if isinstance(const_type, numba.types.Array):  # Numba freezes them
                    const_type = const_type.copy(readonly=True)
                types[var] = const_type
                arg_types.append(const_type)
            else:
                arg_types.append(None)
            by_name[name] = var
        for name, var in zip(outs, node.outputs):
            types[var] = _predicted_type(var, types)
            by_name[name] = var
        func = env.get(func_name)
        if (not isinstance(func, numba.core.dispatcher.Dispatcher)
                or isinstance(func._cache, NullCache) or None in arg_types
                or (uncached_only and _cached(func))):
            continue
        # As Numba types a call: ``*args`` folded into one tuple.
        _, folded = func._compiler.fold_argument_types(tuple(arg_types), {})
        key = (id(func), tuple(folded))
        if key not in seen:
            seen.add(key)
            jobs.append((func, tuple(folded)))
    params = [types.get(by_name.get(name)) for name in names]
    if not names or None in params or isinstance(graph_fn._cache, NullCache):
        return jobs, None
    return jobs, tuple(graph_fn._compiler.fold_argument_types(tuple(params), {})[1])


def _cached(func):
    """Whether Numba's cache holds code of ``func`` (its index file exists)."""
    index = getattr(getattr(getattr(func, "_cache", None), "_cache_file", None),
                    "_index_path", None)
    return index is not None and os.path.exists(index)


def start(entry, order):
    """Fork a child that compiles ``entry``'s node functions (see the module's note).

    ``entry`` is the Numba function of a whole graph, ``order`` its nodes in PyTensor's
    order. Never raises; returns the child's pid, or None when nothing was forked.
    """
    try:
        if not enabled() or _cached(entry):  # a warm start: nothing to compile
            return None
        jobs, entry_types = _read(entry, order, uncached_only=True)
        if len(jobs) < MIN_JOBS:
            return None
        with _lock:
            _stop_child()
            # Graphs already called have been compiled here; of the rest, the latest few.
            pending = [g for g in _state["graphs"] if not g.entry.overloads]
            pending.append(_Graph(entry, jobs, entry_types))
            _state["graphs"] = pending[-MAX_GRAPHS:]
            graphs = sorted(_state["graphs"], key=lambda g: len(g.nodes), reverse=True)
            # The largest graph's nodes first, each graph's nodes last to first; then the
            # graph functions themselves, the largest last (its first call is likely on
            # the way already), so that a later first call finds them in the cache.
            work = [job for g in graphs for job in reversed(g.nodes)]
            work += [(g.entry, g.entry_types) for g in reversed(graphs)
                     if g.entry_types is not None]
            pid = _fork(work)
            _state["child"] = pid
            return pid
    except Exception as exc:  # never in the way of the compile itself
        warnings.warn(f"NUMBA compiles in one process: {type(exc).__name__}: {exc}",
                      stacklevel=2)
        return None


def _fork(work):
    parent = os.getpid()
    if not _state["atexit"]:
        atexit.register(_stop_all)
        _state["atexit"] = True
    with warnings.catch_warnings():
        # Python 3.12 warns that a fork of a process with threads (OpenBLAS's) may
        # deadlock; the child only runs Numba's compiler, which takes no lock they hold.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid:
        _state["pids"].append(pid)
        return pid
    # The child: never returns.
    status = 0
    try:
        _die_with(parent)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        seen = set()
        for func, arg_types in work:
            key = (_cache_key(func), arg_types)
            if key in seen:
                continue
            seen.add(key)
            try:
                func.compile(arg_types)
            except Exception:  # a wrong guess, or an Op Numba cannot compile: not ours
                pass
            if os.getppid() != parent:
                break
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def _cache_key(func):
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    return CACHED_SRC_FUNCTIONS.get(func.py_func, id(func))


def _die_with(parent):
    """Have the kernel kill this process when ``parent`` dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != parent:
        os._exit(0)


def _reap():
    for pid in list(_state["pids"]):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _state["pids"].remove(pid)
            if _state["child"] == pid:
                _state["child"] = None


def _stop_child():
    pid = _state["child"]
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        if pid in _state["pids"]:
            _state["pids"].remove(pid)
        _state["child"] = None
    _reap()


def _stop_all():
    with _lock:
        _stop_child()
        for pid in list(_state["pids"]):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        _state["pids"].clear()


def wait(timeout=None):
    """Wait for the child to finish its list (tests, benchmarks); True if it has."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _lock:
            _reap()
            if _state["child"] is None:
                return True
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.05)
