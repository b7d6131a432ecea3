"""The three tutorials as programs: short real-MNIST runs, printed formats,
kill -9 and resume, predictions from saved parameters.

Runs use a subset of real MNIST (``--subset``) so that each takes seconds
after compilation; LeNet5 uses few kernels.
"""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deeplearning_tutorials import cli, logistic_sgd, mlp, training

ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def run_module(module, *args, cwd, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", f"deeplearning_tutorials.{module}", *map(str, args)],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def small(mnist_pkl):
    """The first 500 examples of each real MNIST set."""
    return cli.subset(mnist_pkl, 500)


LENET_LINES = [
    r"^\.\.\. loading data$",
    r"^\.\.\. building the model$",
    r"^\.\.\. training$",
    r"^training @ iter =  \d+$",
    r"^epoch \d+, minibatch \d+/\d+, validation error \d+\.\d{6} %$",
    r"^     epoch \d+, minibatch \d+/\d+, test error of best model \d+\.\d{6} %$",
    r"^Optimization complete\.$",
    r"^Best validation score of \d+\.\d{6} % obtained at iteration \d+, "
    r"with test performance \d+\.\d{6} %$",
]


@pytest.mark.slow
def test_lenet5_program_prints_the_original_lines(mnist_pkl, tmp_path):
    # 1000 examples in minibatches of 10: 100 minibatches an epoch, so
    # "training @ iter" appears at 0 and 100
    best = tmp_path / "lenet.npz"
    proc = run_module(
        "convolutional_mlp", "--dataset", mnist_pkl, "--subset", 1000, "--batch-size", 10,
        "--nkerns", 2, 3, "--n-epochs", 2, "--save", best, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for line in lines:
        assert any(re.match(p, line) for p in LENET_LINES), line
    assert [l for l in lines if l.startswith("training @")] == [
        "training @ iter =  0", "training @ iter =  100"]
    assert [l.split(",")[0:2] for l in lines if l.startswith("epoch")] == [
        ["epoch 1", " minibatch 100/100"], ["epoch 2", " minibatch 100/100"]]
    assert lines[-2:][0] == "Optimization complete."
    assert re.fullmatch(r"The code for file convolutional_mlp\.py ran for \d+\.\d{2}m\n", proc.stderr)

    # the saved parameters classify test images
    pred = run_module("predict", "--model", "lenet5", "--params", best, "--dataset", mnist_pkl,
                      "-n", 7, cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    out = pred.stdout.splitlines()
    assert "Predicted values for the first 7 examples in test set:" in out
    assert re.fullmatch(r"\[(\d ?){7}\]", out[-1])


def test_mlp_run_returns_results(small, capsys):
    r = mlp.test_mlp(dataset=small, learning_rate=0.1, n_epochs=3, batch_size=50, n_hidden=20,
                     quiet=True)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "... building the model" and out[1] == "... training"
    assert re.fullmatch(
        r"Optimization complete\. Best validation score of \d+\.\d{6} % obtained at "
        r"iteration \d+, with test performance \d+\.\d{6} %", out[-1])
    assert r["epochs"] == 3 and r["iterations"] == 30
    assert [i for i, _ in r["validation_curve"]] == [10, 20, 30]
    assert r["best_validation_loss"] == min(e for _, e in r["validation_curve"])
    # better than chance (90 % error) after 30 minibatches
    assert 0 < r["best_validation_loss"] < 0.8 and 0 < r["test_score"] < 0.8
    assert r["best_iter"] in (10, 20, 30) and r["mode"] and r["floatX"]
    assert set(r) >= {"best_validation_loss", "test_score", "best_iter", "epochs", "iterations",
                      "elapsed", "mode", "floatX", "validation_curve"}


def test_logistic_run_saves_best_and_predicts(small, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    r = logistic_sgd.sgd_optimization_mnist(dataset=small, n_epochs=2, batch_size=100)
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        r"Optimization complete with best validation score of \d+\.\d{6} %,"
        r"with test performance \d+\.\d{6} %", out[-2])
    assert re.fullmatch(r"The code run for 2 epochs, with \d+\.\d{6} epochs/sec", out[-1])
    # best_model.npz in the working directory, as the original's best_model.pkl
    assert r["save_best"] == "best_model.npz" and (tmp_path / "best_model.npz").exists()
    arrays, meta = training.load_params("best_model.npz")
    assert [a.shape for a in arrays] == [(784, 10), (10,)]
    assert meta["best_iter"] == r["best_iter"]
    predicted = logistic_sgd.predict(dataset=small)
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == "Predicted values for the first 10 examples in test set:"
    assert predicted.shape == (10,)
    # the labels of the first test images are 7 2 1 0 4: most come right
    assert (predicted[:5] == small[2][1][:5]).sum() >= 3


@pytest.mark.slow
@pytest.mark.parametrize("mode,warns", [("DLT_CVM", False), ("DLT_C", False), ("CVM", True)])
def test_the_package_c_modes_do_not_warn_that_products_lack_blas(mnist_pkl, tmp_path, mode, warns):
    # A fresh process: PyTensor warns once, at its first C compilation.
    proc = run_module("logistic_sgd", "--dataset", mnist_pkl, "--subset", "200", "--batch-size",
                      "100", "--n-epochs", "1", "--mode", mode, "--save", "none", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ("could not link to a BLAS" in proc.stderr) == warns, proc.stderr


def test_programs_answer_help(tmp_path):
    for module in ("convolutional_mlp", "mlp", "logistic_sgd", "predict", "sweep"):
        proc = run_module(module, "--help", cwd=tmp_path, timeout=120)
        assert proc.returncode == 0 and "usage:" in proc.stdout, (module, proc.stderr)


def test_program_refuses_nonsense_with_exit_2(tmp_path):
    proc = run_module("convolutional_mlp", "--nkerns", 20, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "nkerns" in proc.stderr


@pytest.mark.slow
def test_killed_run_resumes_bit_for_bit(mnist_pkl, tmp_path):
    # logistic regression, float64, 3000 examples in minibatches of 50:
    # 60 minibatches an epoch, a checkpoint after each epoch
    common = ["--dataset", mnist_pkl, "--subset", 3000, "--batch-size", 50, "--n-epochs", 8,
              "--floatX", "float64", "--save", "none", "--quiet"]
    ref_ck, ck = tmp_path / "ref.npz", tmp_path / "ck.npz"
    reference = run_module("logistic_sgd", *common, "--checkpoint", ref_ck, cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr

    args = [sys.executable, "-m", "deeplearning_tutorials.logistic_sgd",
            *map(str, common), "--checkpoint", str(ck)]
    victim = subprocess.Popen(args, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not ck.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    with np.load(ck, allow_pickle=False) as data:
        assert "epoch" in str(data["meta"])

    resumed = run_module("logistic_sgd", *common, "--checkpoint", ck, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    # the resumed run prints the epochs it ran, then the same results
    ref_lines, res_lines = reference.stdout.splitlines(), resumed.stdout.splitlines()
    assert res_lines[-2] == ref_lines[-2]
    tail = [l for l in res_lines if l.startswith("epoch") or l.startswith("     epoch")]
    assert tail and ref_lines[-2 - len(tail) - 1:-2][-len(tail):] == tail
    assert "epoch 1, minibatch" not in resumed.stdout

    ref_params, ref_meta = training.load_params(ref_ck)
    params, meta = training.load_params(ck)
    assert len(params) == 2
    for a, b in zip(ref_params, params):
        assert a.dtype == np.float64 and np.array_equal(a, b)
    for key in ("best_validation_loss", "best_iter", "test_score", "epoch", "iterations",
                "validation_curve", "patience"):
        assert meta["state"][key] == ref_meta["state"][key], key
