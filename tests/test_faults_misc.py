"""One line instead of a traceback: memory, predictions, in-memory data, PyTensor's setup.

Sizes that cannot fit in memory are refused before anything is built, and a
``MemoryError`` that still happens ends the run in one line; ``predict``
refuses a ``.npy`` file and an ``n`` larger than the test set; ``experiment``
refuses in-memory data of the wrong structure before compiling; a PyTensor
compile directory that cannot be written, and mode C without a C compiler,
end a run in one line saying what to do.
"""

import os
import resource
import subprocess
import sys
import textwrap

import numpy as np
import pytensor
import pytest

from deeplearning_tutorials import cli, convolutional_mlp, mlp, predict, training

ENV = dict(os.environ, PYTHONUNBUFFERED="1")


@pytest.fixture
def no_compile(monkeypatch):
    """Fail the test if anything is compiled."""

    def refuse(*args, **kwargs):
        raise AssertionError("pytensor.function was called")

    monkeypatch.setattr(pytensor, "function", refuse)


def one_line(err):
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def last_line(err):
    """The program's own last line; what came before is warnings at most, never a traceback."""
    assert "Traceback" not in err, err
    assert err.splitlines(), "nothing on standard error"
    return err.splitlines()[-1]


def run_module(module, *args, cwd, env=ENV, timeout=300, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", f"deeplearning_tutorials.{module}", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kwargs,
    )


# --------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------


@pytest.mark.parametrize("function, argv, sizes", [
    (convolutional_mlp.evaluate_lenet5, ["--nkerns", "100000000", "5"], "nkerns [100000000, 5]"),
    (mlp.test_mlp, ["--n-hidden", "1000000000"], "n_hidden 1000000000"),
])
def test_sizes_that_cannot_fit_in_memory_are_refused_before_anything_is_built(
    function, argv, sizes, capsys, no_compile
):
    assert cli.main(function, argv) == 2
    err = one_line(capsys.readouterr().err)
    assert sizes in err and "GiB of memory to train, more than this machine's" in err


def test_the_default_sizes_fit():
    for arguments in ({"nkerns": [20, 50], "batch_size": 500}, {"n_hidden": 500, "batch_size": 20}):
        needed = training.memory_needed(arguments)
        assert 0 < needed < 2**30
    assert training.memory_needed({"learning_rate": 0.1}) == 0


def test_the_program_refuses_a_huge_hidden_layer(tmp_path):
    proc = run_module("mlp", "--n-hidden", 1000000000, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "n_hidden 1000000000" in one_line(proc.stderr)


def _limit_address_space():
    three_gib = 3 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (three_gib, three_gib))


def test_a_memory_error_while_building_is_one_line(mnist_pkl, tmp_path):
    # 784 x 1,000,000 weights fit this machine (the up-front bound), not 3 GiB
    # of address space
    proc = run_module("mlp", "--dataset", mnist_pkl, "--subset", 100, "--batch-size", 20,
                      "--n-hidden", 1000000, "--n-epochs", 1, "--mode", "CVM", "--save-best", "none",
                      cwd=tmp_path, preexec_fn=_limit_address_space)
    if proc.returncode == 2 and "more than this machine's" in proc.stderr:
        pytest.skip("this machine has too little memory for the size to pass the up-front bound")
    assert proc.returncode == 1, proc.stderr
    line = last_line(proc.stderr)
    assert line.startswith("python -m deeplearning_tutorials.mlp: error: out of memory")
    assert "choose smaller nkerns, n_hidden or batch_size" in line


@pytest.mark.parametrize("exc", [MemoryError(), MemoryError("Unable to allocate 3.00 GiB")])
def test_the_command_line_answers_memory_errors_in_one_line(capsys, exc):
    def tutorial(n_hidden=5):
        try:
            raise exc
        except MemoryError as inner:
            raise SystemError("returned a result with an exception set") from inner

    assert cli.main(tutorial, []) == 1
    err = one_line(capsys.readouterr().err)
    assert "out of memory" in err


# --------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------


def test_predict_refuses_a_npy_file_in_one_line(tmp_path, capsys, no_compile):
    params = tmp_path / "W.npy"
    np.save(params, np.zeros((784, 10)))
    assert predict.main(["--model", "logistic", "--params", str(params)]) == 2
    err = one_line(capsys.readouterr().err)
    assert "holds a single array (.npy), not the .npz file" in err and str(params) in err


@pytest.mark.parametrize("model", ["logistic", "mlp", "lenet5"])
def test_predict_refuses_more_images_than_the_test_set(model, mnist_pkl, tmp_path, capsys,
                                                         no_compile):
    params = tmp_path / "p.npz"
    training.save_params(params, [FakeShared(np.zeros((784, 10))), FakeShared(np.zeros(10))])
    argv = ["--model", model, "--params", str(params), "--dataset", str(mnist_pkl), "-n", "10001"]
    assert predict.main(argv) == 2
    err = capsys.readouterr().err
    assert one_line(err)
    assert "n 10001 is larger than the test set (10000 examples)" in err
    assert "training set" not in err


class FakeShared:
    def __init__(self, value):
        self.value = value

    def get_value(self, borrow=False):
        return self.value


# --------------------------------------------------------------------------
# experiment(state, channel) with in-memory data of the wrong structure
# --------------------------------------------------------------------------


def data(n=60, columns=784, labels=None, pairs=3, extra=0):
    rng = np.random.RandomState(0)
    sets = []
    for _ in range(pairs):
        x = rng.uniform(size=(n, columns)).astype("float32")
        y = rng.randint(0, 10, size=n) if labels is None else labels
        sets.append((x, y) + (x,) * extra)
    return tuple(sets)


class State(dict):
    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__


@pytest.mark.parametrize("dataset, message", [
    (data(pairs=2), "the three .x, y. pairs"),
    (data(extra=1), "the training set must be an .x, y. pair of arrays, not tuple of length 3"),
    (data(columns=100), "the training images must be a matrix of 784 columns"),
    (tuple((x.reshape(60, 28, 28), y) for x, y in data()), "not an array of shape .60, 28, 28."),
    (data(labels=np.zeros(59, dtype=int)), "a vector of 60 labels, one per image"),
    (data(labels=np.full(60, 10)), "whole numbers from 0 to 9"),
    (data(labels=np.full(60, 2.5)), "whole numbers from 0 to 9"),
    (((np.zeros((60, 784)), np.zeros(60)),) * 2 + ("test",), "the test set must be an .x, y. pair"),
])
def test_experiment_refuses_data_of_the_wrong_structure_before_compiling(dataset, message,
                                                                         no_compile):
    state = State(dataset=dataset, batch_size=20, n_epochs=1, nkerns=[2, 3], quiet=True)
    with pytest.raises(training.ArgumentError, match=message):
        convolutional_mlp.experiment(state, object())


def test_good_in_memory_data_passes_the_checks():
    training.check_dataset_arrays(data())
    # labels stored as floats, as load_data stores them, are whole numbers
    training.check_dataset_arrays(tuple((x, y.astype("float32")) for x, y in data()))


# --------------------------------------------------------------------------
# PyTensor's compile directory and C compiler
# --------------------------------------------------------------------------

RUN_AFTER_REMOUNT = textwrap.dedent("""
    import subprocess, sys
    import pytensor  # creates its compile directory on the tmpfs
    # the compile directory becomes read-only, as a shared or full one may be
    subprocess.run(["mount", "-o", "remount,ro", sys.argv[1]], check=True)
    from deeplearning_tutorials import cli, logistic_sgd
    sys.exit(cli.main(logistic_sgd.sgd_optimization_mnist, sys.argv[2:]))
""")


def test_a_read_only_compile_directory_is_one_line(tmpfs, mnist_pkl, tmp_path):
    folder = tmpfs(size="64m")
    env = dict(ENV, PYTENSOR_FLAGS=f"compiledir={folder / 'compiledir'}")
    proc = subprocess.run(
        [sys.executable, "-c", RUN_AFTER_REMOUNT, str(folder), "--dataset", str(mnist_pkl),
         "--subset", "100", "--batch-size", "50", "--n-epochs", "1", "--mode", "CVM",
         "--save-best", "none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    line = last_line(proc.stderr)
    assert f"PyTensor cannot write its compile directory {folder / 'compiledir'}" in line
    assert "(Read-only file system); set PYTENSOR_FLAGS=compiledir=<a writable folder>" in line


@pytest.mark.parametrize("module", ["predict", "sweep"])
def test_a_compile_directory_pytensor_refuses_on_import_is_one_line(module, tmpfs, tmp_path):
    folder = tmpfs(read_only=True)
    env = dict(ENV, PYTENSOR_FLAGS=f"compiledir={folder / 'compiledir'}")
    args = ["--model", "logistic"] if module == "predict" else ["--n-epochs", "1"]
    proc = run_module(module, *args, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert "PyTensor cannot use its compile directory" in line
    assert "set PYTENSOR_FLAGS=compiledir=<a writable folder>" in line


def test_mode_c_without_a_c_compiler_is_one_line(mnist_pkl, tmp_path):
    env = dict(ENV, PYTENSOR_FLAGS="cxx=")
    proc = run_module("logistic_sgd", "--dataset", mnist_pkl, "--subset", 100, "--batch-size", 50,
                      "--n-epochs", 1, "--mode", "C", "--save-best", "none", cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    line = last_line(proc.stderr)
    assert line == (
        "python -m deeplearning_tutorials.logistic_sgd: error: PyTensor found no C compiler "
        "(its cxx flag is empty), which this mode needs: install g++, or choose --mode DLT_NUMBA"
    )


@pytest.mark.slow
@pytest.mark.parametrize("lesson", ["logistic_sgd", "convolutional_mlp"])
def test_a_compile_directory_that_is_a_file_is_one_line_in_the_lessons(lesson, mnist_pkl, tmp_path):
    """The lessons' own programs: a base_compiledir PyTensor cannot create (Numba's cache too)."""
    not_a_folder = tmp_path / "a_file"
    not_a_folder.write_text("")
    env = dict(ENV, PYTENSOR_FLAGS=f"base_compiledir={not_a_folder}")
    proc = subprocess.run(
        [sys.executable, "-m", f"deeplearning_tutorials.{lesson}", "--dataset", str(mnist_pkl),
         "--subset", "100", "--batch-size", "50", "--n-epochs", "1", "--save-best", "none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert last_line(proc.stderr).endswith(
        f"PyTensor cannot write its compile directory {not_a_folder} (Not a directory); "
        "set PYTENSOR_FLAGS=compiledir=<a writable folder>")
