"""jobman's experiment(state, channel) contract, and the sweep over Dask."""

import csv
import json

import pytest

from deeplearning_tutorials import cli, convolutional_mlp, sweep


class DD(dict):
    """jobman's state: a dict whose keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


class Channel:
    COMPLETE = object()  # jobman's is None; a sentinel proves it is returned
    INCOMPLETE = True

    def __init__(self):
        self.saved = []

    def save(self):
        self.saved.append(True)


def test_experiment_reads_state_and_records_results(mnist_pkl):
    state = DD(
        learning_rate=0.1,
        n_epochs=1,
        nkerns="[2, 3]",  # as a command line may leave it
        batch_size=50,
        dataset=cli.subset(mnist_pkl, 100),
        quiet=True,
        jobman_id=7,  # not an argument of evaluate_lenet5: ignored
    )
    channel = Channel()
    assert convolutional_mlp.experiment(state, channel) is Channel.COMPLETE
    assert channel.saved == [True]
    assert state.epochs == 1 and state.iterations == 2 and state.best_iter == 2
    assert state.validation_curve == [[2, state.best_validation_loss]]
    assert 0 <= state.test_score <= 1 and state.mode and state.floatX
    assert state.jobman_id == 7


def test_experiment_refuses_nonsense_with_value_error():
    # nonsense is refused before anything compiles, with a ValueError
    with pytest.raises(ValueError, match="learning_rate"):
        convolutional_mlp.experiment(DD(learning_rate=-1.0), object())


def test_grid_is_the_product():
    points = sweep.grid({"learning_rate": [0.05, 0.1], "nkerns": [[2, 3], [4, 5]], "n_epochs": [1]})
    assert points == [
        {"learning_rate": 0.05, "nkerns": [2, 3], "n_epochs": 1},
        {"learning_rate": 0.05, "nkerns": [4, 5], "n_epochs": 1},
        {"learning_rate": 0.1, "nkerns": [2, 3], "n_epochs": 1},
        {"learning_rate": 0.1, "nkerns": [4, 5], "n_epochs": 1},
    ]


def test_sweep_refuses_nonsense_before_starting_workers(capsys):
    assert sweep.main(["--learning-rate", "0.1", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "learning_rate" in err
    assert sweep.main(["--nkerns", "2,3,4"]) == 2


@pytest.mark.slow
def test_sweep_on_a_local_cluster(mnist_pkl, tmp_path, capsys):
    out = tmp_path / "results.csv"
    argv = ["--learning-rate", "0.05", "0.1", "--n-epochs", "1", "--nkerns", "2,3",
            "--batch-size", "50", "--dataset", str(mnist_pkl), "--subset", "100",
            "--workers", "2", "--out", str(out)]
    assert sweep.main(argv) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["learning_rate"]) for r in rows] == [0.05, 0.1]
    for row in rows:
        assert json.loads(row["nkerns"]) == [2, 3]
        assert row["epochs"] == "1" and row["iterations"] == "2"
        assert 0 <= float(row["best_validation_loss"]) <= 1
        assert json.loads(row["validation_curve"])[0][0] == 2
        assert not row.get("error")
    assert "2 runs written to" in capsys.readouterr().out
