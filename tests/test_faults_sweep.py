"""The sweep keeps every finished row and reports every failed point.

Each row is written to the table (and flushed) as soon as its run ends; a
point that fails, whatever the exception, gets its row's ``error`` and one
line on standard error while the other points go on; the exit code is then 1.
The output folder is checked before any worker starts.
"""

import csv
import json
import os
import subprocess

import pytest

from deeplearning_tutorials import convolutional_mlp, sweep, training


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("exc, error", [
    (PermissionError(13, "Permission denied", "/data/mnist.pkl.gz"),
     "PermissionError: [Errno 13] Permission denied: '/data/mnist.pkl.gz'"),
    (MemoryError("Unable to allocate 3.00 GiB"), "MemoryError: Unable to allocate 3.00 GiB"),
    (training.Diverged("training diverged: the cost is nan", 3, float("nan")),
     "training diverged: the cost is nan"),
])
def test_a_point_that_raises_anything_gets_its_error_in_its_row(monkeypatch, exc, error):
    def experiment(state, channel):
        raise exc

    monkeypatch.setattr(convolutional_mlp, "experiment", experiment)
    row = sweep.run_point({"learning_rate": 0.1, "n_epochs": 1})
    assert row == {"learning_rate": 0.1, "n_epochs": 1, "error": error}


def test_a_row_is_on_disk_as_soon_as_it_is_written(tmp_path):
    out = tmp_path / "r.csv"
    table = sweep.Table(out, ["learning_rate"])
    table.write({"learning_rate": 0.1, "best_validation_loss": 0.5, "validation_curve": [(1, 0.5)]})
    # read through another file object while the table is still open
    rows = read_rows(out)
    assert rows[0]["learning_rate"] == "0.1" and rows[0]["best_validation_loss"] == "0.5"
    assert json.loads(rows[0]["validation_curve"]) == [[1, 0.5]]
    table.close()


def fake_grid(outcomes, out):
    """A run_grid that ends the points in reverse order, checking each row is on disk at once."""

    def run_grid(points, subset=None, scheduler=None, workers=None, on_row=None):
        rows = [None] * len(points)
        for i in reversed(range(len(points))):
            rows[i] = dict(points[i], **outcomes[i])
            on_row(i, rows[i])
            assert len(read_rows(out)) == len(points) - i
        return rows

    return run_grid


def test_failed_points_are_reported_one_line_each_and_the_others_kept(monkeypatch, tmp_path,
                                                                       capsys):
    out = tmp_path / "results" / "r.csv"
    outcomes = [
        {"error": "OSError: [Errno 5] Input/output error"},
        {"best_validation_loss": 0.25, "test_score": 0.5, "epochs": 1, "iterations": 2},
        {"error": "MemoryError: "},
    ]
    monkeypatch.setattr(sweep, "run_grid", fake_grid(outcomes, out))
    argv = ["--learning-rate", "0.05", "0.1", "0.2", "--n-epochs", "1", "--out", str(out)]
    assert sweep.main(argv) == 1
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert err == [
        "python -m deeplearning_tutorials.sweep: error: run 3/3: {'learning_rate': 0.2}: MemoryError:",
        "python -m deeplearning_tutorials.sweep: error: run 1/3: {'learning_rate': 0.05}: "
        "OSError: [Errno 5] Input/output error",
    ]
    assert "{'learning_rate': 0.1}: best validation 25.000000 %" in captured.out
    assert "3 runs written to" in captured.out
    # the finished table lists the runs in grid order
    rows = read_rows(out)
    assert [r["learning_rate"] for r in rows] == ["0.05", "0.1", "0.2"]
    assert [bool(r["error"]) for r in rows] == [True, False, True]
    assert not [p for p in out.parent.iterdir() if p.name != "r.csv"]


def test_a_sweep_without_failures_exits_0(monkeypatch, tmp_path, capsys):
    out = tmp_path / "r.csv"
    outcomes = [{"best_validation_loss": 0.25, "test_score": 0.5, "epochs": 1}]
    monkeypatch.setattr(sweep, "run_grid", fake_grid(outcomes, out))
    assert sweep.main(["--n-epochs", "1", "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""


def test_an_interrupted_sweep_keeps_the_rows_of_the_runs_that_ended(monkeypatch, tmp_path, capsys):
    out = tmp_path / "r.csv"

    def run_grid(points, subset=None, scheduler=None, workers=None, on_row=None):
        on_row(1, dict(points[1], best_validation_loss=0.25, test_score=0.5, epochs=1))
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_grid", run_grid)
    assert sweep.main(["--learning-rate", "0.05", "0.1", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"python -m deeplearning_tutorials.sweep: error: interrupted; the rows of the runs that "
        f"ended are in {out}"
    ]
    assert [r["learning_rate"] for r in read_rows(out)] == ["0.1"]


@pytest.fixture
def full_tmpfs(tmp_path):
    """A small tmpfs filled up: a file can still be created there, not written."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        with open(folder / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"x" * 4096)
            except OSError:
                pass
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_under_the_table_is_one_line(monkeypatch, full_tmpfs, capsys):
    out = full_tmpfs / "r.csv"

    def run_grid(*args, **kwargs):
        raise AssertionError("no run should start")

    monkeypatch.setattr(sweep, "run_grid", run_grid)
    assert sweep.main(["--n-epochs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"python -m deeplearning_tutorials.sweep: error: cannot write the results table {out}: "
        "No space left on device; no row was written"
    ]


@pytest.mark.slow
def test_points_with_unreadable_datasets_fail_alone_on_a_local_cluster(mnist_pkl, tmp_path, capsys):
    damaged = tmp_path / "damaged.pkl.gz"
    damaged.write_bytes(b"\x1f\x8b\x08\x00 not a whole gzip stream")
    # reading it fails with EIO, whatever exception the dataset reader makes of it
    unreadable = "/proc/self/mem"
    if not os.path.exists(unreadable):
        pytest.skip("no /proc/self/mem here")
    out = tmp_path / "results.csv"
    argv = ["--dataset", str(mnist_pkl), str(damaged), unreadable, "--n-epochs", "1",
            "--nkerns", "2,3", "--batch-size", "50", "--subset", "100", "--workers", "2",
            "--mode", "CVM", "--out", str(out)]
    assert sweep.main(argv) == 1
    captured = capsys.readouterr()
    failed = sorted(line for line in captured.err.splitlines() if "error: run " in line)
    assert len(failed) == 2, captured.err
    assert "run 2/3" in failed[0] and str(damaged) in failed[0]
    assert "run 3/3" in failed[1] and "Input/output error" in failed[1]
    rows = read_rows(out)
    assert [r["dataset"] for r in rows] == [str(mnist_pkl), str(damaged), unreadable]
    assert not rows[0]["error"] and rows[0]["epochs"] == "1" and rows[0]["iterations"] == "2"
    assert all(r["error"] and not r["epochs"] for r in rows[1:])
    assert "3 runs written to" in captured.out
