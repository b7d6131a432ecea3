"""The early-stopping loop the three tutorials share.

The original repeats the same loop in ``logistic_sgd.py``, ``mlp.py`` and
``convolutional_mlp.py`` with different constants.  We keep it once, here, as
plain Python over three callables, so it knows nothing of PyTensor graphs:

* ``train_model(i)`` trains on minibatch ``i`` and returns its cost;
* ``validate_model(i)`` and ``test_model(i)`` return the zero-one loss of
  minibatch ``i`` of the validation and test sets.

The decisions are the original's, line for line:

* every minibatch is trained on; ``iter = (epoch - 1) * n_train_batches +
  minibatch_index`` counts them from zero;
* when ``(iter + 1) % validation_frequency == 0`` the validation set is
  scored (the mean of the per-minibatch errors);
* a score strictly below the best so far becomes the new best; if it is also
  below ``best * improvement_threshold`` the run is granted
  ``patience = max(patience, iter * patience_increase)`` iterations; the test
  set is scored at every new best;
* after that check, ``patience <= iter`` ends the run, in the middle of an
  epoch if need be; the outer loop also stops after ``n_epochs``.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class LoopState:
    """Everything the patience loop remembers between two minibatches.

    A checkpoint saves this (with the model's parameters) and a resumed run
    starts from it, so a killed run continues exactly where it stopped.
    """

    patience: int
    epoch: int = 0
    #: index of the next minibatch to train on within ``epoch``
    next_minibatch: int = 0
    best_validation_loss: float = np.inf
    best_iter: int = 0
    test_score: float = 0.0
    done_looping: bool = False
    #: the last validation error, for progress displays
    last_validation_loss: float = np.nan
    #: the cost returned by the last call of ``train_model``
    last_cost: float = np.nan

    def as_dict(self):
        return dataclasses.asdict(self)


class Events:
    """Hooks the loop calls; the lessons override them to print.

    Every method does nothing here, so the loop itself prints nothing.
    """

    def before_train(self, iter, state):
        """Called before ``train_model`` runs for iteration ``iter``."""

    def after_train(self, iter, cost, state):
        """Called with the cost ``train_model`` returned for ``iter``."""

    def validated(self, epoch, minibatch, n_train_batches, loss, state):
        """Called with the validation error (a fraction) after scoring it."""

    def new_best(self, epoch, minibatch, n_train_batches, test_score, state):
        """Called with the test error of a new best model."""

    def epoch_end(self, state):
        """Called after the last minibatch of an epoch (not after an early stop)."""


def patience_loop(
    train_model,
    validate_model,
    test_model,
    n_train_batches,
    n_valid_batches,
    n_test_batches,
    n_epochs,
    patience,
    patience_increase=2,
    improvement_threshold=0.995,
    events=None,
    state=None,
):
    """Run the original tutorials' early-stopping loop.

    Parameters
    ----------
    train_model, validate_model, test_model : callable
        Functions of a minibatch index, as described in the module docstring.
    n_train_batches, n_valid_batches, n_test_batches : int
        Number of minibatches in each set.
    n_epochs : int
        Maximal number of passes over the training set.
    patience : int
        Initial number of iterations to look at regardless of progress
        (10000 for LeNet5 and the MLP, 5000 for logistic regression).
    patience_increase : int
        Factor applied to the iteration number on a significant improvement.
    improvement_threshold : float
        A relative improvement below this factor counts as significant.
    events : Events, optional
        Hooks for printing, checkpoints and progress bars.
    state : LoopState, optional
        Where to resume from; a fresh run starts from ``LoopState(patience)``.

    Returns
    -------
    LoopState
        The final state: ``best_validation_loss``, ``best_iter`` (zero-based),
        ``test_score``, ``epoch`` and ``done_looping``.
    """
    events = events or Events()
    if state is None:
        state = LoopState(patience=patience)
    validation_frequency = min(n_train_batches, patience // 2)

    # A resumed state may stop in the middle of an epoch: ``next_minibatch``
    # says where.  A fresh one starts the first epoch at minibatch 0.
    while (state.epoch < n_epochs or state.next_minibatch > 0) and not state.done_looping:
        if state.next_minibatch == 0:
            state.epoch = state.epoch + 1
        epoch = state.epoch
        for minibatch_index in range(state.next_minibatch, n_train_batches):
            iter = (epoch - 1) * n_train_batches + minibatch_index
            events.before_train(iter, state)
            cost = train_model(minibatch_index)
            state.last_cost = float(cost)
            state.next_minibatch = minibatch_index + 1
            events.after_train(iter, cost, state)

            if (iter + 1) % validation_frequency == 0:
                # compute zero-one loss on validation set
                this_validation_loss = float(
                    np.mean([validate_model(i) for i in range(n_valid_batches)])
                )
                state.last_validation_loss = this_validation_loss
                events.validated(
                    epoch, minibatch_index + 1, n_train_batches, this_validation_loss, state
                )

                # if we got the best validation score until now
                if this_validation_loss < state.best_validation_loss:
                    # improve patience if loss improvement is good enough
                    if this_validation_loss < state.best_validation_loss * improvement_threshold:
                        state.patience = max(state.patience, iter * patience_increase)

                    state.best_validation_loss = this_validation_loss
                    state.best_iter = iter

                    # test it on the test set
                    state.test_score = float(
                        np.mean([test_model(i) for i in range(n_test_batches)])
                    )
                    events.new_best(
                        epoch, minibatch_index + 1, n_train_batches, state.test_score, state
                    )

            if state.patience <= iter:
                state.done_looping = True
                break
        else:
            state.next_minibatch = 0
            events.epoch_end(state)
    return state


class PrintedLines(Events):
    """Print the original tutorials' progress lines, character for character.

    Parameters
    ----------
    training_every : int or None
        LeNet5 prints ``training @ iter =  N`` every 100 iterations, before
        training; the other two tutorials print nothing there (``None``).
    out : file, optional
        Where the lines go (standard output when omitted).
    """

    def __init__(self, training_every=None, out=None):
        self.training_every = training_every
        self.out = out

    def _print(self, *args):
        print(*args, file=self.out, flush=True)

    def before_train(self, iter, state):
        if self.training_every and iter % self.training_every == 0:
            self._print("training @ iter = ", iter)

    def validated(self, epoch, minibatch, n_train_batches, loss, state):
        self._print(
            "epoch %i, minibatch %i/%i, validation error %f %%"
            % (epoch, minibatch, n_train_batches, loss * 100.0)
        )

    def new_best(self, epoch, minibatch, n_train_batches, test_score, state):
        self._print(
            "     epoch %i, minibatch %i/%i, test error of best model %f %%"
            % (epoch, minibatch, n_train_batches, test_score * 100.0)
        )
