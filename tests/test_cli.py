"""Command lines built from the lessons' signatures: options, defaults, refusals."""

import numpy as np
import pytensor
import pytest

from deeplearning_tutorials import cli, convolutional_mlp, logistic_sgd, mlp, training

LESSONS = [
    convolutional_mlp.evaluate_lenet5,
    mlp.test_mlp,
    logistic_sgd.sgd_optimization_mnist,
]


@pytest.fixture
def no_compile(monkeypatch):
    """Fail the test if anything is compiled."""

    def refuse(*args, **kwargs):
        raise AssertionError("pytensor.function was called")

    monkeypatch.setattr(pytensor, "function", refuse)


#: The original tutorials' defaults (their signatures in code/*.py), and what the
#: port adds: output files, resuming, quiet, mode, floatX, a subset of the data.
ORIGINAL_DEFAULTS = {
    "evaluate_lenet5": dict(learning_rate=0.1, n_epochs=200, dataset="mnist.pkl.gz",
                            nkerns=[20, 50], batch_size=500),
    "test_mlp": dict(learning_rate=0.01, L1_reg=0.0, L2_reg=0.0001, n_epochs=1000,
                     dataset="mnist.pkl.gz", batch_size=20, n_hidden=500),
    "sgd_optimization_mnist": dict(learning_rate=0.13, n_epochs=1000, dataset="mnist.pkl.gz",
                                   batch_size=600, save_best="best_model.npz"),
}
PORT_DEFAULTS = dict(save_best=None, checkpoint=None, resume=False, quiet=False, mode=None,
                     floatX=None, subset=None)


@pytest.mark.parametrize("function", LESSONS, ids=lambda f: f.__name__)
def test_no_argument_means_the_originals_defaults(function):
    args = vars(cli.build_parser(function).parse_args([]))
    assert args == {**PORT_DEFAULTS, **ORIGINAL_DEFAULTS[function.__name__]}


def test_options_parse():
    parser = cli.build_parser(convolutional_mlp.evaluate_lenet5)
    args = vars(parser.parse_args(
        "--learning-rate 0.05 --n-epochs 3 --nkerns 4 6 --batch-size 50 --mode cvm "
        "--floatX float64 --quiet --checkpoint ck.npz --resume --save best.npz --subset 100".split()
    ))
    assert args == dict(
        learning_rate=0.05, n_epochs=3, dataset="mnist.pkl.gz", nkerns=[4, 6], batch_size=50,
        save_best="best.npz", checkpoint="ck.npz", resume=True, quiet=True, mode="CVM",
        floatX="float64", subset=100,
    )
    m = vars(cli.build_parser(mlp.test_mlp).parse_args(["--L1-reg", "0.001", "--L2_reg", "0"]))
    assert m["L1_reg"] == 0.001 and m["L2_reg"] == 0.0
    log = vars(cli.build_parser(logistic_sgd.sgd_optimization_mnist).parse_args(["--save-best", "none"]))
    assert log["save_best"] is None


def test_help_shows_signature_defaults(capsys):
    assert cli.main(convolutional_mlp.evaluate_lenet5, ["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--learning-rate", "(default: 0.1)", "--nkerns", "(default: 20 50)",
                 "(default: 500)", "(default: 200)", "(default: mnist.pkl.gz)", "--mode",
                 "NUMBA", "--floatX", "--quiet", "--checkpoint", "--resume", "--save",
                 "Learning rate used"):
        assert text in out, text


@pytest.mark.parametrize(
    "argv",
    [
        ["--batch-size", "0"],
        ["--batch-size", "-5"],
        ["--n-epochs", "0"],
        ["--nkerns", "20"],
        ["--nkerns", "20", "50", "70"],
        ["--nkerns", "0", "50"],
        ["--learning-rate", "nan"],
        ["--learning-rate", "inf"],
        ["--learning-rate", "-0.1"],
        ["--learning-rate", "0"],
        ["--learning-rate", "fast"],
        ["--mode", "GPU"],
        ["--floatX", "float16"],
        ["--resume"],
        ["--subset", "0"],
    ],
    ids=" ".join,
)
def test_nonsense_is_refused_before_compiling(argv, capsys, no_compile):
    assert cli.main(convolutional_mlp.evaluate_lenet5, argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "error:" in err, err
    assert "Traceback" not in err


def test_nonsense_raises_value_error_in_python(no_compile):
    with pytest.raises(ValueError, match="nkerns"):
        convolutional_mlp.evaluate_lenet5(nkerns=[20])
    with pytest.raises(ValueError, match="n_hidden"):
        mlp.test_mlp(n_hidden=0)
    with pytest.raises(ValueError, match="mode"):
        logistic_sgd.sgd_optimization_mnist(mode="GPU")


def tiny(n=50, seed=0):
    rng = np.random.RandomState(seed)
    return tuple(
        (rng.uniform(size=(n, 784)).astype("float32"), rng.randint(0, 10, size=n))
        for _ in range(3)
    )


def test_batch_larger_than_the_data_is_refused_before_compiling(no_compile):
    with pytest.raises(training.ArgumentError, match="batch_size 600 is larger than the training set .50"):
        logistic_sgd.sgd_optimization_mnist(dataset=tiny(), save_best=None)
    with pytest.raises(training.ArgumentError, match="batch_size 500"):
        convolutional_mlp.evaluate_lenet5(dataset=tiny())


def test_batch_larger_than_the_subset_exits_2(mnist_pkl, capsys, no_compile):
    argv = ["--dataset", str(mnist_pkl), "--subset", "100", "--batch-size", "600"]
    assert cli.main(logistic_sgd.sgd_optimization_mnist, argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "larger than the training set (100 examples)" in err


def test_missing_dataset_is_one_line_exit_1(tmp_path, capsys, no_compile):
    argv = ["--dataset", str(tmp_path / "nowhere" / "mnist.pkl.gz")]
    assert cli.main(mlp.test_mlp, argv) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "nowhere" in err and "Traceback" not in err


def test_divergence_is_one_line_exit_1_and_keeps_the_best(mnist_pkl, tmp_path, capsys):
    # The L2 penalty's step multiplies W by 1 - 2 * 10 * 1000 each minibatch:
    # in float32 the cost overflows within a few minibatches.
    best = tmp_path / "best.npz"
    argv = ["--dataset", str(mnist_pkl), "--subset", "200", "--batch-size", "50",
            "--n-hidden", "10", "--learning-rate", "10", "--L2-reg", "1000",
            "--n-epochs", "20", "--floatX", "float32", "--save", str(best)]
    assert cli.main(mlp.test_mlp, argv) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "diverged" in err and "at iteration 4 " in err and str(best) in err
    assert "Traceback" not in err
    arrays, meta = training.load_params(best)
    assert all(np.isfinite(a).all() for a in arrays) and meta["best_iter"] == 4


class DD(dict):
    """jobman's state: a dict whose keys are also attributes."""

    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__


def test_keywords_from_state():
    f = convolutional_mlp.evaluate_lenet5
    state = DD(learning_rate=0.05, nkerns="[4, 6]", batch_size=50, unrelated=1)
    assert cli.keywords_from(state, f) == {"learning_rate": 0.05, "nkerns": [4, 6], "batch_size": 50}

    class Namespace:
        learning_rate = 0.2
        nkerns = (3, 4)

    assert cli.keywords_from(Namespace(), f) == {"learning_rate": 0.2, "nkerns": [3, 4]}

    record = {}
    cli.record(record, {"best_iter": 3, "validation_curve": [(1, 0.5)]})
    assert record == {"best_iter": 3, "validation_curve": [[1, 0.5]]}
    ns = Namespace()
    cli.record(ns, {"best_iter": 3})
    assert ns.best_iter == 3
