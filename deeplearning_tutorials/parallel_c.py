"""Compile a function's per-node C modules in parallel, for the ``CVM`` mode.

PyTensor's ``CVM`` linker gives every distinct node of a function its own C
module and compiles them one after another, each in its own compiler run while
Python waits: about 70 modules for LeNet5's two functions, 0.35 s each, which
is nearly all of a cold first compile (about 25 s on two cores).  The compiler
runs do not depend on each other, and each spends about a third of its time
reading the same headers (Python's and NumPy's).

:class:`ParallelCompileVMLinker` is PyTensor's ``VMLinker`` with one step in
front of its ``make_all``.  It asks each node's C linker what PyTensor would
compile (the source and the exact compiler command line, captured instead of
run) for every module not in the compile cache yet, and runs those commands on
``DLT_COMPILE_JOBS`` workers (default: one per CPU core this process may use).
Then PyTensor's own ``make_all`` runs unchanged: where it would start the
compiler, it finds the same command with the same source already run, and takes
that run's library and messages instead of running it again
(:func:`_run_or_take_prebuilt`).  Everything else (the cache's keys, locks and
directories, loading the module, the report of a failed compile) is PyTensor's
own code.

The headers are read once: where at least :data:`MIN_MODULES_PER_HEADER`
modules start with the same ``#include`` lines and are compiled with the same
flags, those lines are compiled once into a GCC precompiled header, which the
modules' runs find before ``Python.h`` (an ``-I`` directory put first).  The
compiler uses a precompiled header only where it is valid for the run (the same
compiler and options) and the modules begin with exactly those lines, so the
libraries are the ones compiled without it (byte for byte, for LeNet5's).

Of several processes sharing a compile directory (a sweep's workers), one
at a time compiles ahead (a lock file in the directory); the others leave the
compiling to PyTensor, which finds the modules the first puts in the cache.

Nothing else changes what is compiled: a result is only taken for a command
equal, argument for argument, to one that was run (the module's directory
apart), with a byte-identical source file.  Anything else (a module PyTensor's
cache found after all, a command not foreseen, a failed compile) goes to the
compiler as before; at worst this costs the time of the wasted runs.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import logging
import os
import shutil
import subprocess
import tempfile
import threading

from pytensor.configdefaults import config
from pytensor.link.vm import VMLinker

_logger = logging.getLogger(__name__)

#: Environment variable: how many compiler runs at once (0: PyTensor's own serial compile).
JOBS_ENV = "DLT_COMPILE_JOBS"

#: A precompiled header is made for a group of at least this many modules
#: (making one takes about as long as compiling one module).
MIN_MODULES_PER_HEADER = 3


def compile_jobs() -> int:
    """How many C modules to compile at once: ``$DLT_COMPILE_JOBS``, else one per usable core.

    0 means PyTensor compiles them itself, one after another.

    Raises
    ------
    ValueError
        When ``$DLT_COMPILE_JOBS`` is set to anything but a whole number >= 0.
    """
    text = os.environ.get(JOBS_ENV, "").strip()
    if text:
        try:
            jobs = int(text)
        except ValueError:
            jobs = -1
        if jobs < 0:
            raise ValueError(f"{JOBS_ENV}={text!r} is not a whole number >= 0 (the number of "
                             "compiler runs at once; 0 leaves the compiling to PyTensor)")
        return jobs
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _run(command):
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return done.stdout, done.stderr, done.returncode


def _output_path(command):
    return command[command.index("-o") + 1]


def _normalised(command):
    """``command`` with its module directory replaced by a placeholder, and that directory.

    (None, None) for a command with no ``-o`` output: not one of PyTensor's module compiles.
    """
    try:
        location = os.path.dirname(_output_path(command))
    except (ValueError, IndexError):
        return None, None
    if not location:
        return None, None
    return tuple(str(arg).replace(location, "\0") for arg in command), location


def _same_file(a, b):
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return fa.read() == fb.read()
    except OSError:
        return False


# --------------------------------------------------------------------------
# Precompiled headers
# --------------------------------------------------------------------------

def include_prefix(source_path) -> tuple[str, ...] | None:
    """The ``#include`` lines a module's source starts with, if the first is ``<Python.h>``.

    PyTensor writes every module's includes first, ``#include <Python.h>``
    leading; a precompiled header of exactly these lines stands for them.
    None for a source that starts otherwise.
    """
    lines = []
    with open(source_path) as fh:
        for line in fh:
            if not line.startswith("#include "):
                break
            lines.append(line.rstrip("\n"))
    if not lines or lines[0] != "#include <Python.h>":
        return None
    return tuple(lines)


def header_flags(command) -> tuple[str, ...]:
    """The options of a module's compiler run that a precompiled header is made with.

    All of them but the output, the source and what only the link uses
    (``-shared``, ``-l``, ``-L``, ``-Wl,``).
    """
    source = os.path.join(os.path.dirname(_output_path(command)), "mod.cpp")
    flags = []
    skip = False
    for arg in command[1:]:
        if skip:
            skip = False
        elif arg == "-o":
            skip = True
        elif arg == source or arg == "-shared" or arg.startswith(("-l", "-L", "-Wl,")):
            continue
        else:
            flags.append(arg)
    return tuple(flags)


def _make_header(compiler, prefix, flags, folder):
    """Compile ``prefix`` into ``folder/Python.h.gch``; True on success."""
    os.makedirs(folder)
    header = os.path.join(folder, "dlt_prefix.h")
    with open(header, "w") as fh:
        fh.write("\n".join(prefix) + "\n")
    out, err, status = _run([compiler, *flags, "-x", "c++-header",
                             "-o", os.path.join(folder, "Python.h.gch"), header])
    return status == 0


# --------------------------------------------------------------------------
# Taking the runs' results where PyTensor would run the compiler
# --------------------------------------------------------------------------

class _Job:
    """One module's compiler run, started before PyTensor asks for it."""

    def __init__(self, command, location):
        self.command = command
        self.location = location
        self.future = None
        self.header = None  # the precompiled header's folder, when one is used
        self.ran = None  # the command run, the header's folder put first if it was used

    def run(self, header_done):
        """Compile, through the precompiled header when ``header_done`` says it was made."""
        if header_done is not None and header_done.result():
            self.ran = [self.command[0], f"-I{self.header}", *self.command[1:]]
            result = _run(self.ran)
            if result[2] == 0:
                return result
        self.ran = self.command
        return _run(self.command)

    def result_for(self, command, location):
        """``(stdout, stderr, status)`` for ``command`` run in ``location``, or None.

        Waits for the run; on success copies its library to where ``command``
        writes it.  None (run the compiler as usual) when the run failed or
        ``location``'s source file differs from the one compiled.
        """
        try:
            out, err, status = self.future.result()
        except Exception:  # the run could not start: PyTensor's own run reports why
            return None
        built = _output_path(self.command)
        if status != 0 or not os.path.exists(built):
            return None
        if not _same_file(os.path.join(self.location, "mod.cpp"),
                          os.path.join(location, "mod.cpp")):
            return None
        with open(built, "rb") as fh:
            library = fh.read()
        here, there = self.location.encode(), location.encode()
        if len(here) == len(there):
            # The source's path is in the library (``assert`` messages name it):
            # make it the path PyTensor compiles and keeps the source at.
            library = library.replace(here, there)
        with open(_output_path(command), "wb") as fh:
            fh.write(library)
        stats["taken"] += 1
        return out, err, status


_state = threading.local()
_pending: dict[tuple, _Job] = {}
_pending_lock = threading.Lock()
_installed: dict[str, object] = {}

#: Counts since import: modules compiled ahead, results PyTensor took, precompiled headers made.
stats = {"started": 0, "taken": 0, "headers": 0}


def _run_or_take_prebuilt(command, **params):
    """PyTensor's ``output_subprocess_Popen``, taking a prebuilt run's result where there is one."""
    if getattr(_state, "capturing", False):
        # Noted instead of run; PyTensor then fails to find the library, quietly.
        _state.captured = list(command)
        return b"", b"", 0
    if not params:
        key, location = _normalised(command)
        if key is not None:
            with _pending_lock:
                job = _pending.get(key)
            if job is not None:
                result = job.result_for(list(command), location)
                if result is not None:
                    return result
    return _installed["original"](command, **params)


def _install():
    """Route PyTensor's compiler runs through :func:`_run_or_take_prebuilt` (once)."""
    from pytensor.link.c import cmodule

    if "original" not in _installed:
        _installed["original"] = cmodule.output_subprocess_Popen
        cmodule.output_subprocess_Popen = _run_or_take_prebuilt


_folder_numbers = itertools.count()


def _module_folder(workdir):
    """A new folder for one module's compile, its path as long as PyTensor's will be.

    PyTensor compiles a module in ``<compiledir>/tmpXXXXXXXX``; a path of the
    same length can be put in its place inside the library.
    """
    room = len(os.path.join(config.compiledir, "tmpXXXXXXXX")) - len(workdir) - 1
    name = f"m{next(_folder_numbers)}"
    if len(name) > room:  # a compiledir with a short path: any length will do
        return tempfile.mkdtemp(dir=workdir)
    folder = os.path.join(workdir, name.ljust(room, "_"))
    os.mkdir(folder)
    return folder


def _capture(node, workdir):
    """The command PyTensor would run to compile ``node``'s C module, and its directory.

    None when the node has no C module to compile: an Op without C code (it
    runs in Python), a module already in the compile cache, or anything that
    fails here (PyTensor's own path then meets the same case and handles it).
    The module's source is written to a new directory under ``workdir``.
    """
    from pytensor.graph.fg import FunctionGraph
    from pytensor.link.c.basic import CLinker, get_module_cache
    from pytensor.link.c.cmodule import get_module_hash
    from pytensor.link.c.op import COp

    op = node.op
    if not isinstance(op, COp):
        return None
    if any(getattr(v.type, "dtype", "") == "float16" for v in (*node.inputs, *node.outputs)):
        return None
    try:
        op.prepare_node(node, storage_map=None, compute_map=None, impl="c")
        linker = CLinker().accept(FunctionGraph(node.inputs, node.outputs), no_recycling=[])
        try:
            key = linker.cmodule_key()
        except KeyError:
            key = None
        if key is not None:
            cache = get_module_cache()
            if key in getattr(cache, "entry_from_key", {}):
                return None
            module_hash = get_module_hash(linker.get_src_code(), key)
            if module_hash in getattr(cache, "module_hash_to_key_data", {}):
                return None
        location = _module_folder(workdir)
    except Exception:  # no C code, an unsupported type...: PyTensor decides as usual
        return None
    _state.capturing, _state.captured = True, None
    try:
        linker.compile_cmodule(location=location)
    except Exception:  # the library that was not made is missing
        pass
    finally:
        _state.capturing = False
    if _state.captured is None:
        return None
    return _state.captured, location


@contextlib.contextmanager
def prebuilt_c_modules(nodes, jobs):
    """Start compiling the C modules of ``nodes`` on ``jobs`` workers; PyTensor takes them inside.

    Yields the list of :class:`_Job`.  On leaving, runs not yet started are
    cancelled, the others waited for, and every file made is removed.
    """
    _install()
    with _first_to_compile() as first:
        if not first:  # another process compiles ahead into this cache: PyTensor takes its modules
            yield []
            return
        try:
            workdir = tempfile.mkdtemp(prefix="dlt_cmodules_")
        except OSError as err:  # no room in the temporary directory: PyTensor compiles alone
            _logger.info("C modules compiled one by one: %s", err)
            yield []
            return
        with _started_jobs(nodes, jobs, workdir) as started:
            yield started


@contextlib.contextmanager
def _first_to_compile():
    """True while this is the only function compiling ahead into this compile directory.

    Several processes sharing a compile directory (a sweep's workers) would
    each compile every missing module on every core, the same modules, at the
    same time.  Only the first of them does; the others leave the compiling to
    PyTensor, which takes each module from the cache once the first has put
    it there (under PyTensor's own lock), or compiles it.
    """
    try:
        import fcntl
    except ImportError:  # not on a POSIX system: no lock, every process compiles ahead
        yield True
        return
    try:
        fh = open(os.path.join(config.compiledir, "dlt_compile_ahead.lock"), "a")
    except OSError:
        yield True
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _started_jobs(nodes, jobs, workdir):
    """The jobs of :func:`prebuilt_c_modules`, started on ``jobs`` workers in ``workdir``."""
    started = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs,
                                                 thread_name_prefix="dlt-compile")
    try:
        seen = set()
        for node in nodes:
            captured = _capture(node, workdir)
            if captured is None:
                continue
            key, _ = _normalised(captured[0])
            if key is None or key in seen:
                continue
            seen.add(key)
            started.append((key, _Job(*captured)))

        groups = collections.defaultdict(list)
        for _, job in started:
            prefix = include_prefix(os.path.join(job.location, "mod.cpp"))
            if prefix is not None:
                groups[(job.command[0], prefix, header_flags(job.command))].append(job)
        made = {}
        for n, ((compiler, prefix, flags), group) in enumerate(groups.items()):
            if len(group) >= MIN_MODULES_PER_HEADER:
                folder = os.path.join(workdir, f"pch{n}")
                made[folder] = pool.submit(_make_header, compiler, prefix, flags, folder)
                for job in group:
                    job.header = folder
        stats["headers"] += len(made)

        with _pending_lock:
            for key, job in started:
                job.future = pool.submit(job.run, made.get(job.header))
                _pending.setdefault(key, job)
        stats["started"] += len(started)
        yield [job for _, job in started]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        with _pending_lock:
            for key, job in started:
                if _pending.get(key) is job:
                    del _pending[key]
        shutil.rmtree(workdir, ignore_errors=True)


class ParallelCompileVMLinker(VMLinker):
    """PyTensor's ``VMLinker``, compiling its nodes' missing C modules in parallel first.

    Same thunks, same modules, same cache as ``VMLinker``; see the module's
    docstring.  With ``DLT_COMPILE_JOBS=0``, or without C thunks or a
    compiler, it is ``VMLinker`` exactly.
    """

    def make_all(self, profiler=None, input_storage=None, output_storage=None,
                 storage_map=None):
        jobs = compile_jobs()
        if self.c_thunks is False or not config.cxx or jobs < 1:
            return super().make_all(profiler, input_storage, output_storage, storage_map)
        with prebuilt_c_modules(self.schedule(self.fgraph), jobs):
            return super().make_all(profiler, input_storage, output_storage, storage_map)


def _parallel(linker):
    """A :class:`ParallelCompileVMLinker` with ``linker``'s settings, or ``linker`` itself."""
    if type(linker) is not VMLinker or linker.fgraph is not None:
        return linker
    parallel = ParallelCompileVMLinker.__new__(ParallelCompileVMLinker)
    parallel.__dict__.update(linker.__dict__)
    return parallel


def install_parallel_cvm() -> None:
    """Give PyTensor's ``CVM``/``VM`` modes and ``"cvm"``/``"vm"`` linkers the parallel compile."""
    from pytensor.compile import mode as mode_module

    linkers = mode_module.predefined_linkers
    for name in ("cvm", "vm", "cvm_nogc", "vm_nogc"):
        if name in linkers:
            linkers[name] = _parallel(linkers[name])
    tables = [mode_module.predefined_modes,
              getattr(mode_module, "fast_run_linkers_to_mode", {})]
    for table in tables:
        for name, mode in list(table.items()):
            # (PyTensor 3.0's table holds its "vm" mode in a tuple: left alone.)
            if (name in ("CVM", "VM", "cvm", "vm") and isinstance(mode, mode_module.Mode)
                    and type(mode.linker) is VMLinker):
                table[name] = mode_module.Mode(_parallel(mode.linker), mode.provided_optimizer)
