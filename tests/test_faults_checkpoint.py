"""A checkpoint's record is checked field by field before a run trusts it.

A checkpoint is an ``.npz`` holding the parameters and a JSON ``meta`` entry
with the loop's state.  Each test writes a real checkpoint with a small fake
model, alters one thing in it, and expects a refusal naming the file, before
any parameter is touched; the command line answers it in one line.
"""

import json
import math

import numpy as np
import pytensor
import pytest

from deeplearning_tutorials import cli, logistic_sgd, training


class Shared:
    """Stands for a PyTensor shared variable."""

    def __init__(self, value):
        self.value = np.array(value, dtype=float)

    def get_value(self, borrow=False):
        return self.value if borrow else self.value.copy()

    def set_value(self, value, borrow=False):
        self.value = np.array(value)


N_TRAIN_BATCHES = 5


def loop(params, **kwargs):
    W = params[0]

    def train(i):
        W.set_value(W.get_value() * 0.9 + np.sin(i + W.get_value()))
        return float(np.abs(W.get_value()).sum())

    def error(i):
        return float(abs(np.cos(W.get_value()[0] * 7 + i)) % 0.5)

    return training.patience_loop(
        train, error, error, N_TRAIN_BATCHES, 2, 2, n_epochs=kwargs.pop("n_epochs", 2),
        patience=1000, params=params, **kwargs,
    )


@pytest.fixture
def checkpoint(tmp_path):
    """A real checkpoint after two epochs of the fake model."""
    path = tmp_path / "ck.npz"
    loop([Shared(np.zeros(3))], checkpoint=path, n_epochs=2)
    return path


def rewrite(path, state=None, arrays=None, **meta_changes):
    """Rewrite checkpoint ``path`` with ``state`` changes and/or new arrays."""
    with np.load(path, allow_pickle=False) as data:
        files = {k: data[k] for k in data.files}
    meta = json.loads(str(files.pop("meta")))
    if state is not None:
        meta["state"] = state(meta["state"])
    meta.update(meta_changes)
    if arrays is not None:
        files = {f"param_{i:03d}": a for i, a in enumerate(arrays)}
    np.savez(path, meta=np.array(json.dumps(meta)), **files)


def changed(**fields):
    return lambda state: {**state, **fields}


def without(name):
    return lambda state: {k: v for k, v in state.items() if k != name}


def test_a_real_checkpoint_passes(checkpoint):
    arrays, meta = training.check_checkpoint(checkpoint, N_TRAIN_BATCHES)
    assert meta["state"]["epoch"] == 2 and meta["state"]["iterations"] == 10
    state = loop([Shared(np.zeros(3))], checkpoint=checkpoint, resume=True, n_epochs=3)
    assert state.epoch == 3 and state.iterations == 15


@pytest.mark.parametrize(
    "change, reason",
    [
        (changed(surprise=1), "unknown fields surprise"),
        (without("patience"), "lacks patience"),
        (without("validation_curve"), "lacks validation_curve"),
        (changed(epoch=-1), "epoch is -1"),
        (changed(epoch=1.5), "epoch is 1.5"),
        (changed(patience=True), "patience is True"),
        (changed(next_minibatch=N_TRAIN_BATCHES + 3), "next_minibatch is 8, past the 5 minibatches"),
        (changed(next_minibatch=N_TRAIN_BATCHES), "next_minibatch is 5, past"),
        (changed(iterations=-4), "iterations is -4"),
        (changed(iterations=11), "iterations is 11, not the 10 minibatches"),
        (changed(best_validation_loss=math.nan), "best_validation_loss is nan"),
        (changed(best_validation_loss=1.5), "best_validation_loss is 1.5"),
        (changed(test_score=-0.1), "test_score is -0.1"),
        (changed(elapsed=math.inf), "elapsed is inf"),
        (changed(last_cost=-math.inf), "last_cost is -inf"),
        (changed(done_looping="no"), "done_looping is 'no'"),
        (changed(best_iter=99), "best_iter 99 is not among its 10 iterations"),
        (changed(validation_curve=[[0, 0.5]]), "validation_curve"),
        (changed(validation_curve="[]"), "validation_curve"),
        (lambda state: [state], "not a JSON object"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_state_out_of_range_is_refused_naming_the_checkpoint(checkpoint, change, reason):
    rewrite(checkpoint, state=change)
    model = [Shared(np.full(3, 7.0))]
    with pytest.raises(training.ArgumentError) as info:
        loop(model, checkpoint=checkpoint, resume=True, n_epochs=3)
    message = str(info.value)
    assert str(checkpoint) in message and reason in message, message
    assert "not a usable checkpoint" in message
    # nothing was restored into the model
    assert model[0].value.tolist() == [7.0, 7.0, 7.0]


def test_an_unknown_field_is_no_type_error(checkpoint):
    rewrite(checkpoint, state=changed(momentum=0.9))
    with pytest.raises(training.ArgumentError, match="unknown fields momentum"):
        training.read_checkpoint(checkpoint, [Shared(np.zeros(3))])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_parameters_are_refused(checkpoint, bad):
    rewrite(checkpoint, arrays=[np.array([0.0, bad, 1.0])])
    model = [Shared(np.zeros(3))]
    with pytest.raises(training.ArgumentError, match=r"ck\.npz is not a usable checkpoint: parameter 0"):
        loop(model, checkpoint=checkpoint, resume=True, n_epochs=3)
    assert model[0].value.tolist() == [0.0, 0.0, 0.0]


def test_another_format_is_refused(checkpoint):
    rewrite(checkpoint, format=99)
    with pytest.raises(training.ArgumentError, match="its format is 99, this version reads 1"):
        training.check_checkpoint(checkpoint)


def test_an_early_stop_on_the_last_minibatch_is_a_valid_state(checkpoint):
    # patience ran out on the last minibatch of epoch 2: next_minibatch == n
    rewrite(checkpoint, state=changed(done_looping=True, epoch=2, next_minibatch=N_TRAIN_BATCHES))
    training.check_checkpoint(checkpoint, N_TRAIN_BATCHES)


def test_the_command_line_refuses_it_in_one_line_before_compiling(
    checkpoint, monkeypatch, capsys
):
    def refuse(*args, **kwargs):
        raise AssertionError("pytensor.function was called")

    monkeypatch.setattr(pytensor, "function", refuse)
    rewrite(checkpoint, state=changed(epoch=-3))
    argv = ["--checkpoint", str(checkpoint), "--resume", "--save-best", "none"]
    assert cli.main(logistic_sgd.sgd_optimization_mnist, argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert str(checkpoint) in err and "epoch is -3" in err and "Traceback" not in err
