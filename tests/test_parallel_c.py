"""CVM's C modules compiled in parallel, through precompiled headers: the same modules, faster.

The compiles are real (g++), in fresh compile directories, so the serial and
the parallel path can be compared file by file.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import get_mode
from pytensor.graph.basic import Apply
from pytensor.link.c.exceptions import CompileError
from pytensor.link.c.op import COp

from _elf import elf_sections  # tests/, on sys.path under pytest

from deeplearning_tutorials import backend, parallel_c  # the lessons import backend
from deeplearning_tutorials.parallel_c import ParallelCompileVMLinker

# Seven distinct elementwise nodes, a product and a sum: nine C modules, most
# of them starting with the same #include lines (one precompiled header).
_SCRIPT = r"""
import json, sys
import numpy as np
import pytensor, pytensor.tensor as pt
from deeplearning_tutorials import backend, parallel_c  # the lessons import backend
x = pt.dmatrix("x")
w = pt.dmatrix("w")
h = pt.tanh(pt.dot(x, w) + 1.0)
y = (pt.exp(-h) * 3.0 - pt.log1p(h * h)).sum() + pt.sqrt(pt.abs(x)).max() + pt.cosh(w).mean()
f = pytensor.function([x, w], [y, pt.grad(y, w)], mode="CVM")
rng = np.random.default_rng(0)
xv, wv = rng.standard_normal((5, 4)), rng.standard_normal((4, 3))
out = f(xv, wv)
print(json.dumps({"stats": parallel_c.stats, "y": float(out[0]), "g": out[1].ravel().tolist(),
                  "linker": type(f.maker.linker).__name__}))
"""


def _compile(compiledir, jobs):
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={compiledir}",
               DLT_COMPILE_JOBS=str(jobs))
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _modules(compiledir):
    """{library file name: its bytes} for the per-node modules (not PyTensor's own helpers).

    Two things differ from compile to compile, as between two serial compiles
    in two directories: the folder the source was compiled in, whose path is
    in the library (``assert`` messages), and the linker's build ID, a hash
    of the rest.  Both are blanked here; everything else must be equal.
    """
    found = {}
    for path in glob.glob(os.path.join(str(compiledir), "**", "m*.so"), recursive=True):
        with open(path, "rb") as fh:
            data = fh.read()
        folder = os.path.dirname(path).encode()
        assert folder + b"/mod.cpp" in data  # the path the source is kept at
        data = data.replace(folder, b"#" * len(folder))
        offset, size = elf_sections(data)[".note.gnu.build-id"]
        assert size > 0
        found[os.path.basename(path)] = data[:offset] + bytes(size) + data[offset + size:]
    return found


def test_parallel_compile_builds_the_same_modules_as_pytensors_serial_one(tmp_path):
    serial = _compile(tmp_path / "s", 0)
    parallel = _compile(tmp_path / "p", 2)

    assert serial["stats"]["started"] == 0  # DLT_COMPILE_JOBS=0: PyTensor's own path
    assert parallel["linker"] == "ParallelCompileVMLinker"
    started = parallel["stats"]["started"]
    assert started >= 8
    assert parallel["stats"]["taken"] == started  # every one compiled ahead was used
    assert parallel["stats"]["headers"] >= 1

    serial_modules = _modules(tmp_path / "s")
    parallel_modules = _modules(tmp_path / "p")
    assert len(serial_modules) >= started
    assert parallel_modules.keys() == serial_modules.keys()
    for name, data in serial_modules.items():
        assert parallel_modules[name] == data, f"{name} differs"

    assert parallel["y"] == serial["y"]
    assert parallel["g"] == serial["g"]

    warm = _compile(tmp_path / "p", 2)  # everything in the cache: nothing to start
    assert warm["stats"] == {"started": 0, "taken": 0, "headers": 0}
    assert warm["y"] == serial["y"]


def test_the_cvm_mode_and_linkers_compile_in_parallel():
    from pytensor.compile.mode import predefined_linkers

    assert isinstance(get_mode("CVM").linker, ParallelCompileVMLinker)
    assert isinstance(predefined_linkers["cvm"], ParallelCompileVMLinker)
    assert predefined_linkers["cvm"].use_cloop
    assert not predefined_linkers["vm"].use_cloop


@pytest.mark.parametrize("text, jobs", [("", None), ("0", 0), ("1", 1), (" 3 ", 3)])
def test_compile_jobs_reads_the_environment(monkeypatch, text, jobs):
    monkeypatch.setenv(parallel_c.JOBS_ENV, text)
    expected = jobs if jobs is not None else len(os.sched_getaffinity(0))
    assert parallel_c.compile_jobs() == expected


@pytest.mark.parametrize("text", ["-1", "two", "1.5"])
def test_compile_jobs_refuses_nonsense(monkeypatch, text):
    monkeypatch.setenv(parallel_c.JOBS_ENV, text)
    with pytest.raises(ValueError, match="DLT_COMPILE_JOBS=.* is not a whole number >= 0"):
        parallel_c.compile_jobs()


class _TaggedCopy(COp):
    """A copy whose C code carries a tag: a module no earlier test has compiled."""

    __props__ = ("tag",)

    def __init__(self, tag):
        self.tag = tag

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        return Apply(self, [x], [x.type()])

    def perform(self, node, inputs, outputs):
        outputs[0][0] = inputs[0].copy()

    def c_code(self, node, name, inputs, outputs, sub):
        (x,), (z,), fail = inputs, outputs, sub["fail"]
        return f"""/* {self.tag} */
        Py_XDECREF({z});
        {z} = (PyArrayObject*)PyArray_NewCopy({x}, NPY_ANYORDER);
        if (!{z}) {fail}
        """

    def c_code_cache_version(self):
        return (1,)


class _BrokenC(_TaggedCopy):
    """An Op whose C code does not compile."""

    def c_code(self, node, name, inputs, outputs, sub):
        return f"this is not C++ {self.tag};"


@pytest.mark.parametrize("jobs", ["0", "2"])
def test_a_failed_compile_raises_pytensors_error_either_way(monkeypatch, jobs):
    monkeypatch.setenv(parallel_c.JOBS_ENV, jobs)
    x = pt.dvector("x")
    tag = f"t{os.getpid()}_{jobs}_{np.random.default_rng().integers(1 << 30)}"
    before = dict(parallel_c.stats)
    with pytest.raises(CompileError, match="this is not C"):
        pytensor.function([x], _BrokenC(tag)(x) * 2.0, mode="CVM")
    started = parallel_c.stats["started"] - before["started"]
    taken = parallel_c.stats["taken"] - before["taken"]
    if jobs == "2":
        assert started >= 1
        assert taken < started  # the broken one went back to PyTensor's compiler
    else:
        assert started == taken == 0


def test_include_prefix_takes_the_leading_includes_from_python_h(tmp_path):
    source = tmp_path / "mod.cpp"
    source.write_text("#include <Python.h>\n#include \"pytensor_mod_helper.h\"\n"
                      "#include <math.h>\n//////\n#include <vector>\nint x;\n")
    assert parallel_c.include_prefix(source) == (
        "#include <Python.h>", '#include "pytensor_mod_helper.h"', "#include <math.h>")
    source.write_text('#include "pytensor_mod_helper.h"\n#include <Python.h>\n')
    assert parallel_c.include_prefix(source) is None


def test_header_flags_keep_what_compiles_and_drop_what_links():
    command = ["g++", "-shared", "-g", "-O3", "-march=znver3", "-DA=1", "-I/inc",
               "-L/lib", "-Wl,-rpath,/lib", "-fvisibility=hidden", "-o", "/d/m1.so",
               "/d/mod.cpp", "-lpython3.11"]
    assert parallel_c.header_flags(command) == (
        "-g", "-O3", "-march=znver3", "-DA=1", "-I/inc", "-fvisibility=hidden")


def test_a_modules_compile_uses_its_precompiled_header(monkeypatch):
    """Inside the parallel step: a group of modules gets a header, and g++ really reads it."""
    monkeypatch.setattr(parallel_c, "MIN_MODULES_PER_HEADER", 2)
    x = pt.dvector("x")
    tag = f"t{os.getpid()}_{np.random.default_rng().integers(1 << 30)}"
    y = _TaggedCopy(tag + "a")(_TaggedCopy(tag + "b")(_TaggedCopy(tag + "c")(x)))
    graph = pytensor.graph.fg.FunctionGraph([x], [y], clone=True)
    with parallel_c.prebuilt_c_modules(graph.toposort(), 2) as jobs:
        assert len(jobs) == 3
        assert all(job.header == jobs[0].header for job in jobs)
        job = jobs[0]
        out, err, status = job.future.result()
        assert status == 0
        assert job.ran == [job.command[0], f"-I{job.header}", *job.command[1:]]
        assert os.path.exists(parallel_c._output_path(job.command))
        gch = os.path.join(job.header, "Python.h.gch")
        assert os.path.getsize(gch) > 1_000_000
        # -H lists the headers a compile reads; "!" marks a precompiled one it used.
        listed = subprocess.run([job.command[0], f"-I{job.header}", "-H", *job.command[1:]],
                                capture_output=True, text=True)
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert f"! {gch}" in listed.stderr
    assert not os.path.exists(job.location)  # removed on leaving


def test_a_changed_source_is_compiled_again(tmp_path):
    """A prebuilt library is only taken for the very source it was compiled from."""
    import concurrent.futures

    built = tmp_path / "ahead"
    built.mkdir()
    (built / "mod.cpp").write_text("int f() { return 1; }\n")
    (built / "m1.so").write_bytes(b"library")
    job = parallel_c._Job(["g++", "-o", str(built / "m1.so"), str(built / "mod.cpp")], str(built))
    job.future = concurrent.futures.Future()
    job.future.set_result((b"", b"", 0))
    later = tmp_path / "later"
    later.mkdir()
    (later / "mod.cpp").write_text("int f() { return 2; }\n")
    command = ["g++", "-o", str(later / "m1.so"), str(later / "mod.cpp")]
    assert job.result_for(command, str(later)) is None
    assert not (later / "m1.so").exists()
    (later / "mod.cpp").write_text("int f() { return 1; }\n")
    assert job.result_for(command, str(later)) == (b"", b"", 0)
    assert (later / "m1.so").read_bytes() == b"library"


def _tagged_graph_function():
    x = pt.dvector("x")
    tag = f"t{os.getpid()}_{np.random.default_rng().integers(1 << 30)}"
    f = pytensor.function([x], _TaggedCopy(tag + "a")(_TaggedCopy(tag + "b")(x)) * 3.0,
                          mode="CVM")
    np.testing.assert_array_equal(f(np.arange(3.0)), [0.0, 3.0, 6.0])


def test_no_room_for_the_parallel_step_leaves_the_compiling_to_pytensor(monkeypatch):
    import tempfile

    real = tempfile.mkdtemp

    def mkdtemp(*args, prefix=None, **kwargs):
        if prefix == "dlt_cmodules_":
            raise OSError(28, "No space left on device")
        return real(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setenv(parallel_c.JOBS_ENV, "2")
    before = dict(parallel_c.stats)
    _tagged_graph_function()
    assert parallel_c.stats == before


def test_a_run_that_cannot_start_leaves_the_compiling_to_pytensor(monkeypatch):
    def no_compiler(command):
        raise FileNotFoundError(2, "No such file or directory", command[0])

    monkeypatch.setattr(parallel_c, "_run", no_compiler)
    monkeypatch.setenv(parallel_c.JOBS_ENV, "2")
    before = dict(parallel_c.stats)
    _tagged_graph_function()
    assert parallel_c.stats["started"] - before["started"] >= 2
    assert parallel_c.stats["taken"] == before["taken"]


def test_one_process_at_a_time_compiles_ahead_into_a_compile_directory(monkeypatch):
    """While another process compiles ahead into the cache, PyTensor compiles (or takes its modules)."""
    import fcntl

    monkeypatch.setenv(parallel_c.JOBS_ENV, "2")
    with open(os.path.join(pytensor.config.compiledir, "dlt_compile_ahead.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as that other process does
        before = dict(parallel_c.stats)
        _tagged_graph_function()
        assert parallel_c.stats == before
        fcntl.flock(fh, fcntl.LOCK_UN)
    _tagged_graph_function()
    assert parallel_c.stats["started"] - before["started"] >= 2


def test_two_processes_compiling_into_one_directory_at_once(tmp_path):
    """A sweep's workers: both get the serial compile's results, whichever compiled ahead."""
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={tmp_path / 'c'}",
               DLT_COMPILE_JOBS="2")
    runs = [subprocess.Popen([sys.executable, "-c", _SCRIPT], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    serial = _compile(tmp_path / "s", 0)
    for result in results:
        assert (result["y"], result["g"]) == (serial["y"], serial["g"])
    assert _modules(tmp_path / "c") == _modules(tmp_path / "s")
