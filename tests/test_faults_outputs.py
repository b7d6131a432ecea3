"""Output files: nothing lost, nothing half-written, one line when they cannot be written.

``--save-best`` and ``--checkpoint`` are checked before anything is read or
compiled: not the dataset, not each other, writable (a probe file), not in use
by another run (a lock held for the whole run).  A write that fails later (a
full disk) ends the run in one line and leaves the previous file as it was.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytensor
import pytest

from deeplearning_tutorials import cli, convolutional_mlp, logistic_sgd, mlp, training

ENV = dict(os.environ, PYTHONUNBUFFERED="1")


@pytest.fixture
def no_compile(monkeypatch):
    """Fail the test if anything is compiled."""

    def refuse(*args, **kwargs):
        raise AssertionError("pytensor.function was called")

    monkeypatch.setattr(pytensor, "function", refuse)


class Shared:
    """Stands for a PyTensor shared variable."""

    def __init__(self, value):
        self.value = np.asarray(value)

    def get_value(self, borrow=False):
        return self.value


def one_line(err):
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def dataset_file(tmp_path):
    """A file standing for the dataset: never read, as everything is refused before."""
    path = tmp_path / "data" / "mnist.pkl.gz"
    path.parent.mkdir()
    path.write_bytes(b"precious bytes")
    return path


# --------------------------------------------------------------------------
# the dataset, and each other
# --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "relative"])
def test_save_best_naming_the_dataset_is_refused(dataset_file, tmp_path, monkeypatch, capsys,
                                                 no_compile, how):
    dataset = dataset_file
    if how == "symlink":
        dataset = tmp_path / "link.pkl.gz"
        dataset.symlink_to(dataset_file)
    elif how == "hard link":
        dataset = tmp_path / "hard.pkl.gz"
        os.link(dataset_file, dataset)
    elif how == "relative":
        monkeypatch.chdir(dataset_file.parent)
        dataset = "mnist.pkl.gz"
    argv = ["--dataset", str(dataset), "--save-best", str(dataset_file)]
    assert cli.main(logistic_sgd.sgd_optimization_mnist, argv) == 2
    err = one_line(capsys.readouterr().err)
    assert "is the dataset's file" in err and str(dataset_file) in err
    assert dataset_file.read_bytes() == b"precious bytes"


def test_checkpoint_naming_a_file_of_the_idx_folder_is_refused(tmp_path, capsys, no_compile):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes(b"idx")
    target = folder / "t10k-labels-idx1-ubyte.gz"
    argv = ["--dataset", str(folder), "--checkpoint", str(target)]
    assert cli.main(convolutional_mlp.evaluate_lenet5, argv) == 2
    err = one_line(capsys.readouterr().err)
    assert f"checkpoint {target} is the dataset's file {folder}" in err
    assert target.read_bytes() == b"idx"


def test_the_program_refuses_to_overwrite_its_dataset(dataset_file, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "deeplearning_tutorials.logistic_sgd",
         "--dataset", str(dataset_file), "--save-best", str(dataset_file)],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    one_line(proc.stderr)
    assert "refusing to overwrite" in proc.stderr
    assert dataset_file.read_bytes() == b"precious bytes"


@pytest.mark.parametrize("how", ["same path", "symlink"])
def test_checkpoint_and_save_best_naming_the_same_file_are_refused(tmp_path, capsys, no_compile,
                                                                   how):
    best = tmp_path / "out.npz"
    checkpoint = best
    if how == "symlink":
        best.write_bytes(b"")  # the link must lead somewhere
        best.unlink()
        checkpoint = tmp_path / "link.npz"
        checkpoint.symlink_to(best)
    argv = ["--save-best", str(best), "--checkpoint", str(checkpoint)]
    assert cli.main(mlp.test_mlp, argv) == 2
    err = one_line(capsys.readouterr().err)
    assert "save_best and checkpoint name the same file" in err


# --------------------------------------------------------------------------
# paths that cannot be written: refused before anything compiles
# --------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--save-best", "--checkpoint"])
def test_an_output_under_a_regular_file_is_refused(tmp_path, capsys, no_compile, option):
    (tmp_path / "file.txt").write_text("text")
    argv = [option, str(tmp_path / "file.txt" / "sub" / "out.npz")]
    assert cli.main(logistic_sgd.sgd_optimization_mnist, argv) == 2
    err = one_line(capsys.readouterr().err)
    assert "file.txt is a file, not a folder" in err
    assert (tmp_path / "file.txt").read_text() == "text"


@pytest.mark.parametrize("option", ["--save-best", "--checkpoint"])
def test_an_output_that_is_a_folder_is_refused(tmp_path, capsys, no_compile, option):
    argv = [option, str(tmp_path)]
    assert cli.main(mlp.test_mlp, argv) == 2
    err = one_line(capsys.readouterr().err)
    assert "is a folder; give the path of a file" in err


def test_an_existing_file_that_is_no_npz_is_not_overwritten(tmp_path, capsys, no_compile):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    assert cli.main(mlp.test_mlp, ["--checkpoint", str(notes)]) == 2
    err = one_line(capsys.readouterr().err)
    assert "is not an .npz file; refusing to overwrite it" in err
    assert notes.read_text() == "keep me"


@pytest.mark.parametrize("option", ["--save-best", "--checkpoint"])
def test_an_output_on_a_read_only_filesystem_is_refused(tmpfs, capsys, no_compile, option):
    folder = tmpfs(read_only=True)
    argv = [option, str(folder / "sub" / "out.npz")]
    assert cli.main(logistic_sgd.sgd_optimization_mnist, argv) == 2
    err = one_line(capsys.readouterr().err)
    assert "cannot be written: Read-only file system" in err


def test_sweep_out_under_a_file_or_a_folder_is_refused_before_starting_workers(tmp_path, capsys):
    from deeplearning_tutorials import sweep

    (tmp_path / "file.txt").write_text("text")
    for out, message in ((tmp_path / "file.txt" / "r.csv", "is a file, not a folder"),
                         (tmp_path, "is a folder")):
        assert sweep.main(["--n-epochs", "1", "--out", str(out)]) == 2
        err = one_line(capsys.readouterr().err)
        assert message in err


# --------------------------------------------------------------------------
# a full disk while training: one line, the previous file intact
# --------------------------------------------------------------------------


@pytest.mark.parametrize("option, name", [("--save-best", "save_best"), ("--checkpoint", "checkpoint")])
def test_a_full_disk_while_training_is_one_line_and_keeps_the_previous_file(
    tmpfs, mnist_pkl, capsys, option, name
):
    folder = tmpfs(size="64k")
    out = folder / "out.npz"
    # a previous file, as an earlier run leaves it
    training.save_params(out, [Shared(np.arange(4.0))])
    before = out.read_bytes()
    # float64 logistic regression: 784 x 10 weights, 62 KiB, more than the room left
    argv = ["--dataset", str(mnist_pkl), "--subset", "200", "--batch-size", "100",
            "--n-epochs", "1", "--floatX", "float64", "--mode", "DLT_CVM", "--quiet",
            "--save-best", "none", option, str(out)]
    assert cli.main(logistic_sgd.sgd_optimization_mnist, argv) == 1
    err = one_line(capsys.readouterr().err)
    assert f"cannot write the {name} {out}: No space left on device" in err
    assert f"the previous {out} is unchanged" in err
    assert out.read_bytes() == before
    assert sorted(os.listdir(folder)) == ["out.npz"]  # no temporary file, no lock left


# --------------------------------------------------------------------------
# two runs on one checkpoint
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_on_a_checkpoint_in_use_is_refused_and_stale_temporaries_go(mnist_pkl, tmp_path):
    ck = tmp_path / "ck.npz"
    common = ["--dataset", str(mnist_pkl), "--subset", "3000", "--batch-size", "50",
              "--n-epochs", "1000", "--floatX", "float64", "--mode", "CVM", "--save", "none",
              "--quiet", "--checkpoint", str(ck)]
    first = subprocess.Popen(
        [sys.executable, "-m", "deeplearning_tutorials.logistic_sgd", *common],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not ck.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        # the first run, in the middle of training, holds the checkpoint
        first.send_signal(signal.SIGSTOP)
        assert first.poll() is None, first.communicate()
        assert (tmp_path / "ck.npz.lock").read_text().strip() == str(first.pid)
        ck_before = ck.read_bytes()
        second = subprocess.run(
            [sys.executable, "-m", "deeplearning_tutorials.logistic_sgd", *common, "--resume"],
            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
        )
        # refused before reading the data or compiling: nothing on stdout
        assert second.returncode == 2 and second.stdout == "", second.stderr
        one_line(second.stderr)
        assert f"checkpoint {ck} is in use by another run (process {first.pid})" in second.stderr
        assert ck.read_bytes() == ck_before
    finally:
        first.kill()
        first.communicate()
    assert first.returncode == -signal.SIGKILL

    # a temporary file as a run killed in the middle of a write leaves it
    stale = tmp_path / ".ck.npz.4242.tmp"
    stale.write_bytes(b"half a checkpoint")
    epoch = training.load_params(ck)[1]["state"]["epoch"]
    resumed = subprocess.run(
        [sys.executable, "-m", "deeplearning_tutorials.logistic_sgd", *common, "--resume",
         "--n-epochs", str(epoch + 1)],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"epoch {epoch + 1}, minibatch 60/60" in resumed.stdout
    assert f"epoch {epoch}, minibatch" not in resumed.stdout
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]


def test_the_lock_is_held_for_the_run_and_let_go_after(tmp_path):
    ck = tmp_path / "ck.npz"
    with training.output_lock(ck):
        with training.output_lock(ck):  # nests in one process
            training.check_lock_free(ck)
        # another process cannot take it
        probe = subprocess.run(
            [sys.executable, "-c",
             "import sys; from deeplearning_tutorials import training\n"
             "try:\n    training.check_lock_free(sys.argv[1])\n"
             "except training.OutputBusy as e:\n    print(e); sys.exit(3)", str(ck)],
            env=ENV, capture_output=True, text=True, timeout=120,
        )
        assert probe.returncode == 3 and f"process {os.getpid()}" in probe.stdout
    assert not (tmp_path / "ck.npz.lock").exists()
    training.check_lock_free(ck)
