"""Ctrl-C always ends a run: one line, exit code 130, the checkpoint to resume from.

A ``KeyboardInterrupt`` raised inside compiled code may come out as another
exception (``SystemError: ... returned a result with an exception set``), or
be swallowed by a callback that ignores exceptions.  The patience loop
installs a SIGINT handler for its duration that remembers the signal, so
either way the run stops.  The process tests send real SIGINTs to real runs,
while they train and while they compile.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from deeplearning_tutorials import cli, training

ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def sigint_by_default():
    """In a child, before Python starts: SIGINT as an interactive shell leaves it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def sigint_raises_keyboard_interrupt():
    """These tests need SIGINT as Python sets it up when started from a terminal.

    A test run launched with SIGINT ignored (a background job of a shell without
    job control) hands the ignored signal down; a run that inherits it rightly
    cannot be interrupted, which is not what these tests are about.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class Shared:
    def __init__(self, value):
        self.value = np.array(value, dtype=float)

    def get_value(self, borrow=False):
        return self.value if borrow else self.value.copy()

    def set_value(self, value, borrow=False):
        self.value = np.array(value)


def run_loop(train, checkpoint=None, n_epochs=4):
    W = Shared(np.zeros(2))
    return training.patience_loop(
        train, lambda i: 0.5, lambda i: 0.25, 5, 2, 2, n_epochs=n_epochs, patience=1000,
        params=[W], checkpoint=checkpoint,
    )


def test_an_interrupt_wrapped_in_another_exception_is_an_interrupt():
    handler = signal.getsignal(signal.SIGINT)
    calls = []

    def train(i):
        calls.append(i)
        if len(calls) == 3:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as exc:
                # what CPython raises when compiled code returns with an exception set
                raise SystemError("CPUDispatcher(<function numba_funcified_fgraph>) "
                                  "returned a result with an exception set") from exc
        return 1.0

    with pytest.raises(KeyboardInterrupt) as info:
        run_loop(train)
    assert isinstance(info.value.__cause__, SystemError)
    assert len(calls) == 3
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_swallowed_sigint_still_stops_the_run_after_the_minibatch():
    handler = signal.getsignal(signal.SIGINT)
    calls = []

    def train(i):
        calls.append(i)
        if len(calls) == 7:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)  # the signal is handled here, raising KeyboardInterrupt...
            except KeyboardInterrupt:
                pass  # ... which a callback that ignores exceptions swallows
        return 1.0

    with pytest.raises(KeyboardInterrupt):
        run_loop(train)
    assert len(calls) == 7  # no minibatch after the one interrupted
    assert signal.getsignal(signal.SIGINT) is handler


class RaisesOnDelete:
    """An interrupt raised where Python ignores exceptions (a finaliser, a gc callback)."""

    def __del__(self):
        raise KeyboardInterrupt


def test_an_interrupt_python_ignores_stops_the_run_quietly(capfd):
    calls = []

    def train(i):
        calls.append(i)
        if len(calls) == 2:
            RaisesOnDelete()  # "Exception ignored in ..." without the guard
        return 1.0

    with pytest.raises(KeyboardInterrupt):
        run_loop(train)
    assert len(calls) == 2
    assert capfd.readouterr().err == ""


def test_an_interrupt_swallowed_while_compiling_stops_the_run_at_its_first_minibatch(capsys):
    calls = []

    def tutorial(checkpoint=None):
        RaisesOnDelete()  # swallowed before the loop starts
        run_loop(lambda i: calls.append(i) or 1.0)

    assert cli.main(tutorial, []) == 130
    assert calls == [0]
    assert capsys.readouterr().err.endswith("error: interrupted\n")


def test_a_sigint_during_validation_stops_before_the_next_validation_minibatch():
    validated = []

    def validate(i):
        validated.append(i)
        if len(validated) == 1:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0.5

    with pytest.raises(KeyboardInterrupt):
        training.patience_loop(lambda i: 1.0, validate, lambda i: 0.25, 5, 4, 2, n_epochs=2,
                               patience=1000)
    assert validated == [0]


def test_the_handler_is_restored_after_a_run_and_other_errors_pass_through():
    handler = signal.getsignal(signal.SIGINT)
    run_loop(lambda i: 1.0, n_epochs=1)
    assert signal.getsignal(signal.SIGINT) is handler

    def train(i):
        raise ZeroDivisionError("not an interrupt")

    with pytest.raises(ZeroDivisionError):
        run_loop(train)
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_loop_outside_the_main_thread_runs_without_a_handler():
    result = {}

    def work():
        result["state"] = run_loop(lambda i: 1.0, n_epochs=1)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert result["state"].iterations == 5


def interrupt_with(exc):
    def tutorial(checkpoint=None):
        raise exc

    return tutorial


def chained_interrupt():
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as inner:
        try:
            raise SystemError("returned a result with an exception set") from inner
        except SystemError as outer:
            return outer


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), chained_interrupt()], ids=["plain", "chained"])
def test_the_command_line_answers_an_interrupt_with_130_and_the_checkpoint(tmp_path, capsys, exc):
    ck = tmp_path / "ck.npz"
    assert cli.main(interrupt_with(exc), ["--checkpoint", str(ck)]) == 130
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert f"interrupted before the first checkpoint was written to {ck}" in err

    training.save_params(ck, [Shared([1.0])])
    assert cli.main(interrupt_with(exc), ["--checkpoint", str(ck)]) == 130
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert f"interrupted; the checkpoint {ck} holds the last finished epoch" in err
    assert f"--checkpoint {ck} --resume" in err


HALF_BUILT = """
import signal, sys
from deeplearning_tutorials import training

class HalfBuilt:  # like llvmlite's OutputString when SIGINT lands inside __init__
    def __init__(self):
        signal.raise_signal(signal.SIGINT)
        self._ptr = None

    def __del__(self):
        self._ptr

class Unrelated:
    def __del__(self):
        raise AttributeError("a finalizer failing before any interrupt")

def compile_something():
    return HalfBuilt()

Unrelated()
try:
    with training.interrupt_guard():
        compile_something()
except KeyboardInterrupt:
    print("error: interrupted", file=sys.stderr)
    sys.exit(130)
"""


def test_a_finalizer_failing_after_an_interrupt_prints_nothing_after_the_error_line():
    run = subprocess.run([sys.executable, "-c", HALF_BUILT], env=ENV, capture_output=True,
                         text=True, timeout=120, preexec_fn=sigint_by_default)
    assert run.returncode == 130, run.stderr
    # The finalizer that failed before the interrupt is still reported...
    assert "a finalizer failing before any interrupt" in run.stderr
    # ... the half-built object's is not, and the error line stays the last one.
    assert "_ptr" not in run.stderr, run.stderr
    assert run.stderr.splitlines()[-1] == "error: interrupted"


def test_another_system_error_is_not_taken_for_an_interrupt():
    with pytest.raises(SystemError):
        cli.main(interrupt_with(SystemError("a real bug")), [])


# --------------------------------------------------------------------------
# real processes, real signals
# --------------------------------------------------------------------------


def start(args, cwd, env=ENV):
    return subprocess.Popen(
        [sys.executable, "-m", "deeplearning_tutorials.mlp", *map(str, args)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_by_default,
    )


def last_line_only(err):
    """The run's own last line; what came before is warnings at most, never a traceback."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert lines, "nothing on standard error"
    return lines[-1]


@pytest.mark.slow
def test_sigint_while_training_under_numba_ends_in_one_line_with_130(mnist_pkl, tmp_path):
    ck = tmp_path / "ck.npz"
    run = start(["--dataset", mnist_pkl, "--subset", 5000, "--batch-size", 20, "--n-epochs", 50,
                 "--mode", "NUMBA", "--quiet", "--save-best", "none", "--checkpoint", ck],
                cwd=tmp_path)
    try:
        deadline = time.monotonic() + 400
        while not ck.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert run.poll() is None, run.communicate()
        time.sleep(0.3)  # in the middle of the second epoch
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 130, err
    line = last_line_only(err)
    assert line == (
        f"python -m deeplearning_tutorials.mlp: error: interrupted; the checkpoint {ck} holds "
        f"the last finished epoch: continue with --checkpoint {ck} --resume"
    )
    assert "Optimization complete" not in out
    # the checkpoint is whole, and the lock let go
    arrays, meta = training.check_checkpoint(ck, n_train_batches=250)
    assert meta["state"]["epoch"] >= 1 and len(arrays) == 4
    assert not (tmp_path / "ck.npz.lock").exists()


@pytest.mark.slow
def test_sigint_while_compiling_ends_in_one_line_with_130(mnist_pkl, tmp_path):
    # Compile directories of its own (PyTensor's and Numba's cache): a cold compile.
    # Under NUMBA a function compiles on its first call, after "... training".
    env = dict(ENV, PYTENSOR_FLAGS=f"base_compiledir={tmp_path / 'compiled'}")
    ck = tmp_path / "ck.npz"
    run = start(["--dataset", mnist_pkl, "--subset", 1000, "--batch-size", 20, "--n-epochs", 1,
                 "--mode", "NUMBA", "--quiet", "--save-best", "none", "--checkpoint", ck],
                cwd=tmp_path, env=env)
    try:
        for line in run.stdout:
            if line.startswith("... training"):
                break
        time.sleep(1.0)
        assert run.poll() is None
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 130, err
    assert "epoch 1" not in out, "the compilation ended before the interrupt"
    line = last_line_only(err)
    assert line == (
        "python -m deeplearning_tutorials.mlp: error: interrupted before the first checkpoint "
        f"was written to {ck}; nothing to resume"
    )
    assert not ck.exists() and not (tmp_path / "ck.npz.lock").exists()
