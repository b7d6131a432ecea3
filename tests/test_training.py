"""The patience loop and what surrounds it, driven by scripted fake models.

Nothing here compiles a graph: the loop only sees callables, so scripted
validation errors pin every decision it takes.
"""

import io
import math
import os

import numpy as np
import pytest

from deeplearning_tutorials import training


class Script:
    """Fake ``train_model``/``validate_model``/``test_model`` with scripted errors.

    ``errors[k]`` is the validation error of the ``k``-th validation; the test
    error of a model validated at ``e`` is ``e / 2``.  Every call is logged.
    """

    def __init__(self, errors, costs=None):
        self.errors = list(errors)
        self.costs = costs or {}
        self.trained = []
        self.validations = 0
        self.tests = 0
        self.current = None

    def train(self, i):
        self.trained.append(i)
        return self.costs.get(len(self.trained) - 1, 1.0)

    def validate(self, i):
        if i == 0:
            self.current = self.errors[self.validations]
            self.validations += 1
        return self.current

    def test(self, i):
        if i == 0:
            self.tests += 1
        return self.current / 2


class Recorder(training.Events):
    def __init__(self):
        self.log = []

    def validated(self, epoch, minibatch, n_train_batches, loss, state):
        self.log.append(("validated", epoch, minibatch, loss, state.patience))

    def new_best(self, epoch, minibatch, n_train_batches, test_score, state):
        self.log.append(("new_best", epoch, minibatch, test_score, state.patience))

    def after_train(self, iter, cost, state):
        self.log.append(("trained", iter, cost))


def run(script, n_train_batches=10, n_epochs=100, patience=20, **kwargs):
    events = kwargs.pop("events", Recorder())
    state = training.patience_loop(
        script.train,
        script.validate,
        script.test,
        n_train_batches,
        2,
        3,
        n_epochs=n_epochs,
        patience=patience,
        events=events,
        **kwargs,
    )
    return state, events


def test_validation_frequency_is_min_of_batches_and_half_patience():
    # patience 8 -> frequency min(10, 4) = 4: validations after iter 3, 7, 11...
    script = Script([0.5] * 100)
    state, events = run(script, n_train_batches=10, n_epochs=2, patience=8)
    assert [(e[1], e[2]) for e in events.log if e[0] == "validated"] == [(1, 4), (1, 8)]
    # only the first is a new best; patience stays 8 (max(8, 3 * 2) = 8),
    # so the run ends when iter reaches 8, in the middle of epoch 1
    assert state.done_looping and state.epoch == 1 and state.iterations == 9
    assert state.validation_curve == [[4, 0.5], [8, 0.5]]


def test_validation_every_epoch_when_patience_is_large():
    script = Script([0.5, 0.4, 0.3])
    state, events = run(script, n_train_batches=5, n_epochs=3, patience=1000)
    assert [e[1:3] for e in events.log if e[0] == "validated"] == [(1, 5), (2, 5), (3, 5)]
    assert script.trained == [0, 1, 2, 3, 4] * 3


def test_significant_improvement_extends_patience():
    # frequency 10 (one validation per epoch), patience 20
    # dyadic errors, so that means over minibatches are exact
    script = Script([0.5, 0.375, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25])
    state, events = run(script, n_train_batches=10, patience=20)
    validated = [e for e in events.log if e[0] == "validated"]
    best = [e for e in events.log if e[0] == "new_best"]
    # iter 9: 0.5 < inf * 0.995 -> patience max(20, 18) = 20
    # iter 19: 0.375 < 0.4975 -> patience max(20, 38) = 38
    # iter 29: 0.25 < 0.373125 -> patience max(38, 58) = 58
    assert [e[4] for e in best] == [20, 38, 58]
    assert [e[3] for e in best] == [0.25, 0.1875, 0.125]
    # equal scores are not better: no test, no extension; stop at iter 58
    assert len(validated) == 5 and script.tests == 3
    assert state.patience == 58 and state.done_looping
    assert state.iterations == 59 and state.epoch == 6 and state.next_minibatch == 9
    assert state.best_iter == 29 and state.best_validation_loss == 0.25 and state.test_score == 0.125


def test_small_improvement_updates_best_but_not_patience():
    # 0.5 -> 0.498 is better (new best, test run) but not below 0.5 * 0.995
    script = Script([0.5, 0.498046875, 0.49609375, 0.494140625])
    state, events = run(script, n_train_batches=10, patience=20)
    best = [e for e in events.log if e[0] == "new_best"]
    assert [e[3] for e in best] == [0.25, 0.2490234375]
    assert [e[4] for e in best] == [20, 20]
    assert state.best_iter == 19 and state.best_validation_loss == 0.498046875
    assert script.tests == 2
    # patience 20 <= iter 20: stops right after the first minibatch of epoch 3
    assert state.done_looping and state.epoch == 3 and state.iterations == 21
    assert script.trained[-1] == 0


def test_improvement_exactly_at_threshold_does_not_extend():
    best = 0.5
    threshold = 0.995
    script = Script([best, best * threshold])
    state, events = run(script, n_train_batches=10, patience=20, improvement_threshold=threshold)
    assert state.best_validation_loss == best * threshold
    assert state.patience == 20


def test_n_epochs_limit():
    script = Script([0.9 - 0.1 * k for k in range(10)])
    state, events = run(script, n_train_batches=4, n_epochs=3, patience=10000)
    assert not state.done_looping
    assert state.epoch == 3 and state.iterations == 12 and state.next_minibatch == 0
    assert state.best_iter == 11
    assert len(script.trained) == 12


def test_patience_ending_exactly_at_epoch_end():
    # patience 4 with 5 minibatches: frequency 2; stops when iter == 4
    script = Script([0.5, 0.5, 0.5])
    state, _ = run(script, n_train_batches=5, n_epochs=10, patience=4)
    assert state.done_looping and state.iterations == 5 and state.epoch == 1


def test_printed_lines_formats():
    out = io.StringIO()
    script = Script([0.5, 0.25, 0.3])
    run(script, n_train_batches=100, n_epochs=3, patience=10000,
        events=training.PrintedLines(training_every=100, out=out))
    assert out.getvalue().splitlines() == [
        "training @ iter =  0",
        "epoch 1, minibatch 100/100, validation error 50.000000 %",
        "     epoch 1, minibatch 100/100, test error of best model 25.000000 %",
        "training @ iter =  100",
        "epoch 2, minibatch 100/100, validation error 25.000000 %",
        "     epoch 2, minibatch 100/100, test error of best model 12.500000 %",
        "training @ iter =  200",
        "epoch 3, minibatch 100/100, validation error 30.000000 %",
    ]


def test_results_dictionary():
    script = Script([0.5, 0.25])
    state, _ = run(script, n_train_batches=10, n_epochs=2, patience=1000)
    r = training.results(state, mode="Mode", floatX="float64")
    assert r["best_iter"] == 20 and r["epochs"] == 2 and r["iterations"] == 20
    assert r["validation_curve"] == [(10, 0.5), (20, 0.25)]
    assert r["mode"] == "NUMBA" and r["floatX"] == "float64"
    assert r["best_validation_loss"] == 0.25 and r["test_score"] == 0.125
    assert r["elapsed"] >= 0


# --------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------

GOOD = dict(learning_rate=0.1, n_epochs=200, dataset="mnist.pkl.gz", nkerns=[20, 50], batch_size=500)


@pytest.mark.parametrize(
    "name, value",
    [
        ("learning_rate", 0),
        ("learning_rate", -0.1),
        ("learning_rate", math.nan),
        ("learning_rate", math.inf),
        ("learning_rate", "0.1"),
        ("n_epochs", 0),
        ("n_epochs", -3),
        ("n_epochs", 2.5),
        ("batch_size", 0),
        ("batch_size", True),
        ("nkerns", [20]),
        ("nkerns", [20, 50, 70]),
        ("nkerns", [20, 0]),
        ("nkerns", "20 50"),
        ("dataset", ""),
        ("dataset", 3),
    ],
)
def test_check_arguments_refuses(name, value):
    with pytest.raises(training.ArgumentError, match=name):
        training.check_arguments({**GOOD, name: value})


def test_check_arguments_other_names():
    with pytest.raises(training.ArgumentError, match="L2_reg"):
        training.check_arguments({"L2_reg": -1.0})
    with pytest.raises(training.ArgumentError, match="n_hidden"):
        training.check_arguments({"n_hidden": 0})
    with pytest.raises(training.ArgumentError, match="resume needs a checkpoint"):
        training.check_arguments({"resume": True, "checkpoint": None})
    assert isinstance(training.ArgumentError("x"), ValueError)
    checked = training.check_arguments({**GOOD, "nkerns": (np.int64(2), 3)})
    assert checked["nkerns"] == [2, 3]


def test_check_batches():
    x = np.zeros((100, 784))
    training.check_batches(100, x, x, x)
    with pytest.raises(training.ArgumentError, match="larger than the validation set"):
        training.check_batches(60, x, x[:50], x)
    with pytest.raises(training.ArgumentError, match="test images must be a matrix of 784 columns"):
        training.check_batches(10, x, x, np.zeros((100, 28, 28)))


# --------------------------------------------------------------------------
# parameters, divergence, checkpoints
# --------------------------------------------------------------------------


class Shared:
    """Stands for a PyTensor shared variable."""

    def __init__(self, value, name=None):
        self.value = np.array(value)
        self.name = name

    def get_value(self, borrow=False):
        return self.value if borrow else self.value.copy()

    def set_value(self, value, borrow=False):
        self.value = np.array(value)


class Model:
    """A deterministic fake model whose parameter moves with every minibatch."""

    def __init__(self, n_train_batches=5, blow_up_at=None):
        self.W = Shared(np.zeros(3), "W")
        self.params = [self.W]
        self.n = 0
        self.blow_up_at = blow_up_at

    def train(self, i):
        self.W.set_value(self.W.get_value() * 0.9 + np.sin(i + self.W.get_value()))
        cost = float(np.abs(self.W.get_value()).sum())
        self.n += 1
        if self.blow_up_at is not None and self.n > self.blow_up_at:
            return math.inf if self.n % 2 else math.nan
        return cost

    def error(self, i):
        with np.errstate(invalid="ignore"):  # W may be made infinite on purpose
            return float(abs(np.cos(self.W.get_value()[0] * 7 + i)) % 0.5)

    def loop(self, **kwargs):
        return training.patience_loop(
            self.train, self.error, self.error, 5, 2, 2,
            n_epochs=kwargs.pop("n_epochs", 6), patience=kwargs.pop("patience", 1000),
            params=self.params, **kwargs,
        )


def test_diverged_names_iteration_and_keeps_best(tmp_path):
    best = tmp_path / "best.npz"
    model = Model(blow_up_at=12)
    with pytest.raises(training.Diverged, match="iteration 12 .epoch 3, minibatch 3/5.") as info:
        model.loop(save_best=best, settings={"learning_rate": 10.0})
    assert info.value.iteration == 12 and not math.isfinite(info.value.cost)
    assert "learning rate below 10.0" in str(info.value) and str(best) in str(info.value)
    assert isinstance(info.value, ValueError)
    arrays, meta = training.load_params(best)
    assert all(np.isfinite(a).all() for a in arrays)
    assert meta["best_iter"] in (5, 10)


def test_diverged_on_host_is_caught_at_once():
    model = Model(blow_up_at=12)
    with pytest.raises(training.Diverged, match="iteration 12 "):
        model.loop()
    assert model.n == 13  # the 13th call returned inf: nothing ran after it


class DeviceModel(Model):
    """The same model, its costs returned as JAX arrays, as the JAX backend does."""

    def train(self, i):
        import jax.numpy as jnp

        return jnp.asarray(super().train(i))


class DeviceErrors(Model):
    """Validation and test errors also returned as JAX arrays, in float64 as PyTensor's are."""

    def error(self, i):
        import jax.numpy as jnp

        return jnp.asarray(super().error(i), dtype=jnp.float64)


def test_device_costs_are_read_later_with_the_same_results():
    host_events, device_events = Recorder(), Recorder()
    host, device = Model().loop(events=host_events), DeviceModel().loop(events=device_events)
    host_costs = [e[1:] for e in host_events.log if e[0] == "trained"]
    device_costs = [e[1:] for e in device_events.log if e[0] == "trained"]
    assert device.validation_curve == host.validation_curve
    assert (device.best_iter, device.iterations) == (host.best_iter, host.iterations)
    # JAX may hold the cost in float32
    assert device.last_cost == pytest.approx(host.last_cost, rel=1e-6)
    # every cost reaches the events, in order, once
    assert [i for i, _ in device_costs] == [i for i, _ in host_costs] == list(range(30))
    assert [c for _, c in device_costs] == pytest.approx([c for _, c in host_costs], rel=1e-6)


def test_device_errors_give_the_same_scores_as_host_errors():
    import jax

    with jax.enable_x64(True):
        host, device = Model().loop(), DeviceErrors().loop()
    # the same float64 values, in the same order: the same means, bit for bit
    assert device.validation_curve == host.validation_curve
    assert device.test_score == host.test_score


def test_host_values_reads_device_scalars_at_once_and_passes_host_values_through():
    import jax
    import jax.numpy as jnp

    host = [0.25, np.float64(0.5), np.array(0.125)]
    assert training._host_values(host) is host
    with jax.enable_x64(True):
        values = [jnp.asarray(v, dtype=jnp.float64) for v in (0.1, 0.2, 1 / 3)]
        read = training._host_values(values)
    assert isinstance(read, np.ndarray) and read.dtype == np.float64
    assert read.tolist() == [0.1, 0.2, 1 / 3]
    costs = [jnp.asarray(v, dtype=jnp.float32) for v in (np.inf, 2.5)]
    assert training._host_floats(costs) == [math.inf, 2.5]


def test_diverged_on_device_names_its_own_iteration():
    model = DeviceModel(blow_up_at=12)
    with pytest.raises(training.Diverged, match="iteration 12 .epoch 3, minibatch 3/5."):
        model.loop()
    # the device's costs were read together at the next validation, the end of
    # the epoch: two more minibatches had been started
    assert model.n == 15


def test_device_costs_wait_at_most_device_costs_at_once(monkeypatch):
    monkeypatch.setattr(training, "DEVICE_COSTS_AT_ONCE", 2)
    model = DeviceModel(blow_up_at=12)
    with pytest.raises(training.Diverged, match="iteration 12 "):
        model.loop()
    # epoch 3 starts at iteration 10; iterations 10 and 11 were read together,
    # then 12 and 13
    assert model.n == 14


def test_checkpoint_refuses_non_finite_parameters(tmp_path):
    model = Model()

    def train(i):
        # the cost is computed before the update: finite, while W overflows
        model.W.set_value(np.array([np.inf, 0, 0]))
        return 1.0

    model.train = train
    with pytest.raises(training.Diverged, match="no longer finite"):
        model.loop(checkpoint=tmp_path / "ck.npz", n_epochs=1)
    assert not (tmp_path / "ck.npz").exists()


def test_save_params_is_npz_without_pickle(tmp_path):
    path = tmp_path / "p.npz"
    training.save_params(path, [Shared([1.0, 2.0], "W"), Shared([3.0], "b")], settings={"batch_size": 5})
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["meta", "param_000", "param_001"]
    arrays, meta = training.load_params(path)
    assert [a.tolist() for a in arrays] == [[1.0, 2.0], [3.0]]
    assert meta["names"] == ["W", "b"] and meta["settings"] == {"batch_size": 5}
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_resume_from_every_epoch_matches_uninterrupted(tmp_path):
    reference = Model()
    final = reference.loop(n_epochs=6)
    expected = reference.W.get_value()

    ck = tmp_path / "ck.npz"
    for stop in range(1, 6):
        first = Model()
        first.loop(n_epochs=stop, checkpoint=ck)
        # A fresh model, as after a killed process, resumes and is allowed
        # a larger n_epochs.
        second = Model()
        state = second.loop(n_epochs=6, checkpoint=ck, resume=True)
        assert np.array_equal(second.W.get_value(), expected)
        assert second.n == 5 * (6 - stop)
        assert training.results(state)["validation_curve"] == training.results(final)["validation_curve"]
        for key in ("best_validation_loss", "best_iter", "test_score", "epoch", "iterations"):
            assert getattr(state, key) == getattr(final, key)
        ck.unlink()


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    ck = tmp_path / "ck.npz"
    first = Model()
    done = first.loop(n_epochs=50, patience=8, checkpoint=ck)
    assert done.done_looping
    again = Model()
    state = again.loop(n_epochs=50, patience=8, checkpoint=ck, resume=True)
    assert again.n == 0 and state.iterations == done.iterations
    assert np.array_equal(again.W.get_value(), first.W.get_value())


def test_resume_refuses_other_settings(tmp_path):
    ck = tmp_path / "ck.npz"
    Model().loop(n_epochs=1, checkpoint=ck, settings={"learning_rate": 0.1, "n_epochs": 1})
    Model().loop(n_epochs=2, checkpoint=ck, resume=True, settings={"learning_rate": 0.1, "n_epochs": 2})
    with pytest.raises(training.ArgumentError, match="learning_rate=0.1"):
        Model().loop(n_epochs=2, checkpoint=ck, resume=True, settings={"learning_rate": 0.2})


def test_resume_without_a_checkpoint_file_starts_afresh(tmp_path):
    model = Model()
    state = model.loop(n_epochs=1, checkpoint=tmp_path / "new.npz", resume=True)
    assert state.iterations == 5 and (tmp_path / "new.npz").exists()


# --------------------------------------------------------------------------
# progress line
# --------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_on_a_terminal_only(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    out = io.StringIO()
    model = Model()
    training.patience_loop(
        model.train, model.error, model.error, 5, 2, 2, n_epochs=3, patience=1000,
        events=training.PrintedLines(out=out),
    )
    # The bar itself: minibatches done out of the run's total, and the best so far.
    progress = training.Progress(3, 5, stream=terminal)
    state = training.LoopState(patience=1000)
    progress.before_train(0, state)
    assert "compiles" in terminal.getvalue()  # the first call may compile for a while
    state.iterations = 1
    progress.after_train(0, 1.0, state)
    state.iterations, state.best_validation_loss = 7, 0.125
    progress.after_train(6, 1.0, state)
    progress.bar.refresh()
    shown = terminal.getvalue()
    assert "7/15" in shown and "best 12.50 %" in shown and "minibatch" in shown
    progress.clear()
    progress.finished(state)
    assert progress.bar is None
    # stdout holds only the tutorial's lines
    assert all(line.startswith("epoch") or line.startswith("     epoch") for line in out.getvalue().splitlines())


def test_quiet_or_no_terminal_means_no_progress(monkeypatch):
    for stream, quiet in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr("sys.stderr", stream)
        model = Model()
        events = training.PrintedLines(out=io.StringIO())
        training.patience_loop(
            model.train, model.error, model.error, 5, 2, 2, n_epochs=2, patience=1000,
            events=events, quiet=quiet,
        )
        assert stream.getvalue() == "" and events.before_print is None
