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

Around that loop the port adds what the original lacked (see the porting
ledger): arguments checked before anything compiles (:func:`check_arguments`,
:func:`check_batches`: in-memory data, sizes that cannot fit in memory, output
files that cannot be written or would overwrite the dataset), the best
parameters kept in an ``.npz`` file at each new best, an atomic checkpoint at
the end of every epoch that a killed run resumes from bit for bit (checked
field by field before it is trusted, and locked against a second run while a
run writes it), a stop with :class:`Diverged` when the cost is no longer
finite, an interrupt (SIGINT) that always ends the run as ``KeyboardInterrupt``,
a live progress line on an interactive terminal, and a results dictionary
(:func:`results`).
"""

import contextlib
import dataclasses
import errno
import gc
import json
import math
import numbers
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
import zipfile
import zlib

import numpy as np
import tqdm

try:
    import fcntl
except ImportError:  # not a POSIX system: runs are not locked
    fcntl = None

#: checkpoint and parameter files written by this version
FORMAT = 1

#: At most this many device costs wait to be checked (see :func:`patience_loop`).
DEVICE_COSTS_AT_ONCE = 100


class ArgumentError(ValueError):
    """A tutorial was given an argument that makes no sense (a negative batch size...)."""


class OutputBusy(ArgumentError):
    """Another run holds the lock of a checkpoint or parameters file."""


class OutputError(RuntimeError):
    """An output file (``save_best``, ``checkpoint``) could not be written during a run.

    The file as it was before the failed write is left as it was.
    """


class Diverged(ValueError):
    """The training cost stopped being a finite number.

    Attributes
    ----------
    iteration : int
        The zero-based iteration whose ``train_model`` call returned ``cost``.
    cost : float
        The offending cost (``nan`` or ``inf``).
    """

    def __init__(self, message, iteration, cost):
        super().__init__(message)
        self.iteration = iteration
        self.cost = cost


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------

#: arguments that must be whole numbers of at least one
_POSITIVE_INTS = ("n_epochs", "batch_size", "n_hidden", "n")
#: arguments that must be finite and not negative
_NON_NEGATIVE_REALS = ("L1_reg", "L2_reg")
#: how many convolutional layers LeNet5 has, hence how many ``nkerns``
N_CONV_LAYERS = 2
#: pixels of one MNIST image, a row of the images matrix (28 x 28)
N_PIXELS = 28 * 28
#: the labels are the digits 0 to N_CLASSES - 1
N_CLASSES = 10


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_arguments(arguments):
    """Refuse nonsense tutorial arguments before anything is compiled.

    Parameters
    ----------
    arguments : dict
        A tutorial function's arguments by name (the lessons pass
        ``locals()`` as their first statement).  The names checked are those
        of the three tutorials: ``learning_rate``, ``n_epochs``,
        ``batch_size``, ``n_hidden``, ``nkerns``, ``L1_reg``, ``L2_reg``,
        ``dataset``, ``save_best``, ``checkpoint``, ``resume``, ``quiet``;
        others pass unchecked.

    Returns
    -------
    dict
        A copy of ``arguments`` (``nkerns`` as a list of ``int``), which the
        lessons hand to :func:`patience_loop` to tie checkpoints to a setting.

    Raises
    ------
    ArgumentError
        Naming the first argument that makes no sense, and why.
    """
    checked = dict(arguments)
    if "learning_rate" in checked:
        value = checked["learning_rate"]
        if not (_is_real(value) and math.isfinite(value) and value > 0):
            raise ArgumentError(
                f"learning_rate must be a positive finite number, not {value!r}"
            )
    for name in _POSITIVE_INTS:
        if name in checked:
            value = checked[name]
            if not (_is_int(value) and value >= 1):
                raise ArgumentError(f"{name} must be a whole number of at least 1, not {value!r}")
    for name in _NON_NEGATIVE_REALS:
        if name in checked:
            value = checked[name]
            if not (_is_real(value) and math.isfinite(value) and value >= 0):
                raise ArgumentError(f"{name} must be a finite number >= 0, not {value!r}")
    if "nkerns" in checked:
        value = checked["nkerns"]
        if (
            isinstance(value, (str, bytes))
            or not hasattr(value, "__len__")
            or len(value) != N_CONV_LAYERS
            or not all(_is_int(k) and k >= 1 for k in value)
        ):
            raise ArgumentError(
                f"nkerns must be {N_CONV_LAYERS} whole numbers of at least 1 "
                f"(kernels of each convolutional layer), not {value!r}"
            )
        checked["nkerns"] = [int(k) for k in value]
    if "dataset" in checked:
        value = checked["dataset"]
        if isinstance(value, (str, os.PathLike)):
            if not os.fspath(value):
                raise ArgumentError("dataset must name a file or folder, not ''")
        elif not (isinstance(value, (tuple, list)) and len(value) == 3):
            raise ArgumentError(
                "dataset must be a path or the three (x, y) pairs train, valid, test, "
                f"not {type(value).__name__}"
            )
    for name in ("save_best", "checkpoint"):
        value = checked.get(name)
        if value is not None and not (
            isinstance(value, (str, os.PathLike)) and os.fspath(value)
        ):
            raise ArgumentError(f"{name} must be a file path or None, not {value!r}")
    for name in ("resume", "quiet"):
        if name in checked and not isinstance(checked[name], (bool, np.bool_)):
            raise ArgumentError(f"{name} must be True or False, not {checked[name]!r}")
    if checked.get("resume") and checked.get("checkpoint") is None:
        raise ArgumentError("resume needs a checkpoint path to resume from")
    dataset = checked.get("dataset")
    if isinstance(dataset, (tuple, list)):
        check_dataset_arrays(dataset)
        if _is_int(checked.get("n")):
            n_test = len(dataset[2][1])
            if checked["n"] > n_test:
                raise ArgumentError(
                    f"n {checked['n']} is larger than the test set ({n_test} examples)"
                )
    _check_memory(checked)
    checkpoint = checked.get("checkpoint")
    if checked.get("resume") and checkpoint is not None and os.path.isfile(checkpoint):
        check_checkpoint(checkpoint)
    check_outputs(
        save_best=checked.get("save_best"),
        checkpoint=checked.get("checkpoint"),
        dataset=dataset,
    )
    return checked


_SETS = ("training", "validation", "test")


def check_dataset_arrays(dataset):
    """Refuse in-memory data that the tutorials cannot train on.

    Parameters
    ----------
    dataset : sequence
        The three ``(x, y)`` pairs train, valid, test: ``x`` a matrix of
        :data:`N_PIXELS` (784) columns, one image a row; ``y`` the labels,
        one per row of ``x``, whole numbers from 0 to 9.

    Raises
    ------
    ArgumentError
        Naming the set and what is wrong with it, before anything is compiled
        (a wrong shape would otherwise fail inside a compiled function, in the
        middle of training).
    """
    if isinstance(dataset, (str, bytes)) or not hasattr(dataset, "__len__") or len(dataset) != 3:
        raise ArgumentError("dataset must be the three (x, y) pairs train, valid, test")
    for name, pair in zip(_SETS, dataset):
        if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
            raise ArgumentError(
                f"dataset: the {name} set must be an (x, y) pair of arrays, "
                f"not {type(pair).__name__}"
                + (f" of length {len(pair)}" if hasattr(pair, "__len__") else "")
            )
        try:
            x, y = np.asarray(pair[0]), np.asarray(pair[1])
        except (ValueError, TypeError) as exc:
            raise ArgumentError(f"dataset: the {name} set is not a pair of arrays ({exc})") from None
        if x.ndim != 2 or x.shape[1] != N_PIXELS:
            raise ArgumentError(
                f"dataset: the {name} images must be a matrix of {N_PIXELS} columns "
                f"(28 x 28 pixels a row), not an array of shape {x.shape}"
            )
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise ArgumentError(f"dataset: the {name} images must be numbers, not {x.dtype}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ArgumentError(
                f"dataset: the {name} labels must be a vector of {x.shape[0]} labels, "
                f"one per image, not an array of shape {y.shape}"
            )
        if np.issubdtype(y.dtype, np.floating):
            whole = bool(np.all(np.isfinite(y)) and np.all(y == np.floor(y)))
        else:
            whole = np.issubdtype(y.dtype, np.integer)
        if not whole or (y.size and (y.min() < 0 or y.max() >= N_CLASSES)):
            raise ArgumentError(
                f"dataset: the {name} labels must be whole numbers from 0 to {N_CLASSES - 1}"
            )


def check_batches(batch_size, train_set_x, valid_set_x, test_set_x):
    """Refuse a batch size that leaves a set without a single minibatch.

    Parameters
    ----------
    batch_size : int
        Number of examples per minibatch.
    train_set_x, valid_set_x, test_set_x : shared variable or array
        The three sets' images (anything with ``get_value`` or ``shape``).

    Raises
    ------
    ArgumentError
        When a set is not a matrix of :data:`N_PIXELS` columns, or holds fewer
        than ``batch_size`` examples.
    """
    for name, data in zip(_SETS, (train_set_x, valid_set_x, test_set_x)):
        shape = (data.get_value(borrow=True) if hasattr(data, "get_value") else data).shape
        if len(shape) != 2 or shape[1] != N_PIXELS:
            raise ArgumentError(
                f"the {name} images must be a matrix of {N_PIXELS} columns "
                f"(28 x 28 pixels a row), not an array of shape {tuple(shape)}"
            )
        n = shape[0]
        if n < batch_size:
            raise ArgumentError(
                f"batch_size {batch_size} is larger than the {name} set ({n} examples)"
            )


# --------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------

#: bytes of the smallest float a run may use (float32)
_FLOAT_BYTES = 4


def _physical_memory():
    """This machine's memory in bytes, or None where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def memory_needed(arguments):
    """A lower bound of the memory (bytes) a tutorial's model needs to train.

    The parameters are held three times (values, gradients, updated values)
    and the activations of one minibatch twice (forward and backward), in
    float32; the data set itself is left out.  Only ``nkerns`` (LeNet5) and
    ``n_hidden`` (the MLP) are sized; other arguments give 0.

    Parameters
    ----------
    arguments : dict
        Checked arguments (see :func:`check_arguments`).
    """
    b = arguments.get("batch_size")
    b = b if _is_int(b) and b >= 1 else 1
    floats = 0
    nkerns = arguments.get("nkerns")
    if nkerns is not None:
        k0, k1 = nkerns
        params = k0 * (25 + 1) + k1 * (k0 * 25 + 1) + k1 * 4 * 4 * 500 + 500 + 500 * 10 + 10
        activations = b * (k0 * (24 * 24 + 12 * 12) + k1 * (8 * 8 + 4 * 4) + 500 + 10)
        floats = 3 * params + 2 * activations
    n_hidden = arguments.get("n_hidden")
    if _is_int(n_hidden):
        params = N_PIXELS * n_hidden + n_hidden + n_hidden * 10 + 10
        floats = max(floats, 3 * params + 2 * b * (n_hidden + 10))
    return floats * _FLOAT_BYTES


def _check_memory(checked):
    needed, available = memory_needed(checked), _physical_memory()
    if available is None or needed <= available:
        return
    sizes = ", ".join(
        f"{k} {checked[k]}" for k in ("nkerns", "n_hidden", "batch_size") if k in checked
    )
    raise ArgumentError(
        f"{sizes}: the model needs at least {needed / 2**30:,.1f} GiB of memory to train, "
        f"more than this machine's {available / 2**30:,.1f} GiB; choose smaller sizes"
    )


# --------------------------------------------------------------------------
# Output files: checked before anything compiles, locked while a run writes them
# --------------------------------------------------------------------------

#: what the options writing files are called in messages
_OUTPUT_NAMES = {"save_best": "save_best", "checkpoint": "checkpoint"}


def _is_npz(path):
    """Whether ``path`` is an ``.npz`` archive (a zip of ``.npy`` members)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def check_output_path(name, path, npz=True):
    """Refuse an output path that cannot be written, before anything is compiled.

    A probe file is created and removed in the folder that will hold
    ``path`` (or in its nearest existing ancestor, where the folders are
    still to be made), so that a read-only location, a path under a regular
    file or a folder named as the output is refused at once rather than after
    training has begun.

    Parameters
    ----------
    name : str
        The option, for messages (``save_best``, ``checkpoint``, ``out``).
    path : str or os.PathLike
        The file to be written.
    npz : bool
        The file is an ``.npz`` written atomically: an existing file that is
        not an ``.npz`` is refused rather than overwritten.

    Raises
    ------
    ArgumentError
        Saying why the path cannot be written.
    """
    shown = os.fspath(path)
    target = os.path.abspath(shown)
    if os.path.isdir(target):
        raise ArgumentError(f"{name} {shown} is a folder; give the path of a file")
    if os.path.lexists(target) and not os.path.isfile(target):
        raise ArgumentError(f"{name} {shown} exists and is not a regular file; choose another path")
    if npz and os.path.isfile(target) and not _is_npz(target):
        raise ArgumentError(
            f"{name} {shown} exists and is not an .npz file; refusing to overwrite it: "
            "remove it or choose another path"
        )
    folder = os.path.dirname(target)
    while not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ArgumentError(f"{name} {shown} cannot be created: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise ArgumentError(
            f"{name} {shown} cannot be written: {exc.strerror or exc} in {folder}; "
            "choose a writable folder"
        ) from None


def _dataset_file(dataset):
    """The existing file or folder a dataset name or path stands for, or None."""
    if not isinstance(dataset, (str, os.PathLike)) or not os.fspath(dataset):
        return None
    from deeplearning_tutorials import datasets

    try:
        return os.fspath(datasets.locate(dataset, download=False))
    except (datasets.DatasetError, OSError):
        return None


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(save_best=None, checkpoint=None, dataset=None):
    """Refuse output paths that would lose data or cannot be written.

    Refused, before anything is compiled: a path that cannot be written
    (:func:`check_output_path`), ``save_best`` and ``checkpoint`` naming the
    same file, an output naming the dataset's file (or a file of its IDX
    folder), and a checkpoint or parameters file another run is writing
    (see :func:`output_lock`).

    Raises
    ------
    ArgumentError
        :class:`OutputBusy` for a file another run holds.
    """
    outputs = [(n, p) for n, p in (("save_best", save_best), ("checkpoint", checkpoint)) if p is not None]
    if not outputs:
        return
    data = _dataset_file(dataset)
    if data is not None:
        try:
            files = [os.path.join(data, f) for f in os.listdir(data)] if os.path.isdir(data) else [data]
        except OSError:  # a folder that cannot be listed cannot be written over either
            files = []
        for name, path in outputs:
            if os.path.exists(path) and any(_same_file(path, f) for f in files):
                raise ArgumentError(
                    f"{name} {os.fspath(path)} is the dataset's file {data}; "
                    "refusing to overwrite it: choose another path"
                )
    if len(outputs) == 2:
        a, b = (os.path.realpath(os.fspath(p)) for _, p in outputs)
        if a == b or _same_file(a, b):
            raise ArgumentError(
                f"save_best and checkpoint name the same file {os.fspath(save_best)}; "
                "give them different paths"
            )
    for name, path in outputs:
        check_output_path(name, path)
    for name, path in outputs:
        check_lock_free(path, name)


#: lock files this process holds: real path of the output -> [fd, lock path, depth]
_held_locks = {}


def _lock_key(path):
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def _lock_holder(lock_path):
    try:
        with open(lock_path) as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"


def _acquire(path, name):
    """Take the exclusive lock ``<path>.lock``; returns its file descriptor."""
    lock_path = _lock_key(path) + ".lock"
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ArgumentError(
                f"{name} {os.fspath(path)} cannot be locked: {exc.strerror or exc} "
                f"({lock_path}); choose a writable folder"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ArgumentError(
                    f"{name} {os.fspath(path)} cannot be locked: {exc.strerror or exc}"
                ) from None
            raise OutputBusy(
                f"{name} {os.fspath(path)} is in use by another run (process "
                f"{_lock_holder(lock_path)}); wait for it to end or choose another {name}"
            ) from None
        # The previous holder removes the lock file as it lets go: a lock
        # taken on a file no longer at that path locks nothing.
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            # who holds it, for the message of a run refused (a full disk may refuse it)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            return fd, lock_path
        os.close(fd)


def _release(fd, lock_path):
    with contextlib.suppress(OSError):
        os.remove(lock_path)
    os.close(fd)


def check_lock_free(path, name="checkpoint"):
    """Refuse with :class:`OutputBusy` when another process holds ``path``'s lock."""
    if fcntl is None or _lock_key(path) in _held_locks:
        return
    _release(*_acquire(path, name))


def _temporaries(path):
    """Files an interrupted :func:`_atomic_savez` of ``path`` may have left behind."""
    folder, base = os.path.split(_lock_key(path))
    pattern = re.compile(r"\." + re.escape(base) + r"\.\d+\.tmp")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if pattern.fullmatch(n)]


@contextlib.contextmanager
def output_lock(path, name="checkpoint"):
    """Hold an exclusive lock on the output file ``path`` for the duration of a block.

    The lock is ``fcntl.flock`` on ``<path>.lock``, which the lock's holder
    removes as it lets go; a process killed while holding it lets go with
    its death.  Taking it again in the same process nests.  Once taken,
    temporary files left beside ``path`` by a killed writer are removed.
    Nothing is locked where ``fcntl`` is missing (not a POSIX system).

    Raises
    ------
    OutputBusy
        When another process holds the lock.
    """
    if path is None or fcntl is None:
        yield
        return
    key = _lock_key(path)
    held = _held_locks.get(key)
    if held is None:
        fd, lock_path = _acquire(path, name)
        held = _held_locks[key] = [fd, lock_path, 0]
        for stale in _temporaries(path):
            with contextlib.suppress(OSError):
                os.remove(stale)
    held[2] += 1
    try:
        yield
    finally:
        held[2] -= 1
        if held[2] == 0:
            del _held_locks[key]
            _release(held[0], held[1])


@contextlib.contextmanager
def output_locks(save_best=None, checkpoint=None):
    """:func:`output_lock` on both output files of a run (those not None)."""
    with output_lock(checkpoint, "checkpoint"), output_lock(save_best, "save_best"):
        yield


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------


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
    #: minibatches trained on so far, over all resumed pieces of the run
    iterations: int = 0
    #: seconds spent in the loop so far, over all resumed pieces of the run
    elapsed: float = 0.0
    #: ``[iter + 1, validation error]`` at every validation, for plotting
    validation_curve: list = dataclasses.field(default_factory=list)

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

    def finished(self, state):
        """Called once when the loop ends normally (early stop or ``n_epochs``)."""


class Chain(Events):
    """Call several :class:`Events` in turn, in the order given."""

    def __init__(self, *events):
        self.events = [e for e in events if e is not None]

    def before_train(self, *args):
        for e in self.events:
            e.before_train(*args)

    def after_train(self, *args):
        for e in self.events:
            e.after_train(*args)

    def validated(self, *args):
        for e in self.events:
            e.validated(*args)

    def new_best(self, *args):
        for e in self.events:
            e.new_best(*args)

    def epoch_end(self, *args):
        for e in self.events:
            e.epoch_end(*args)

    def finished(self, *args):
        for e in self.events:
            getattr(e, "finished", lambda state: None)(*args)


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
    *,
    params=None,
    save_best=None,
    checkpoint=None,
    resume=False,
    quiet=False,
    settings=None,
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
        Hooks for printing.
    state : LoopState, optional
        Where to resume from; a fresh run starts from ``LoopState(patience)``.
    params : list of shared variables, optional
        The model's parameters (anything with ``get_value``/``set_value``);
        needed by ``save_best`` and ``checkpoint``.
    save_best : str or os.PathLike, optional
        Where to write the parameters (:func:`save_params`) at each new best.
    checkpoint : str or os.PathLike, optional
        Where to write a checkpoint (:func:`write_checkpoint`) after every
        epoch and at the end.
    resume : bool
        Start from ``checkpoint`` when that file exists (a fresh run
        otherwise): parameters and loop state are restored, and the run ends
        exactly as an uninterrupted one would.
    quiet : bool
        No live progress line on standard error (there is none anyway when
        standard error is not a terminal).
    settings : dict, optional
        The run's arguments (from :func:`check_arguments`); a checkpoint
        records them and refuses to resume a run whose settings differ.

    Returns
    -------
    LoopState
        The final state: ``best_validation_loss``, ``best_iter`` (zero-based),
        ``test_score``, ``epoch``, ``iterations``, ``validation_curve``...

    Raises
    ------
    OutputBusy
        When another process holds the lock of ``checkpoint`` or
        ``save_best`` (see :func:`output_lock`; the loop holds them while it runs).
    OutputError
        When ``save_best`` or ``checkpoint`` cannot be written (a full disk);
        the file keeps its previous content.
    KeyboardInterrupt
        On SIGINT, whatever exception it surfaced as, even one swallowed on
        the way (see :func:`interrupt_guard`); the checkpoint stays at the last
        finished epoch.
    Diverged
        When ``train_model`` returns a cost that is not finite.  The best
        parameters written so far stay in ``save_best``, and the checkpoint
        stays at the last finished epoch.  A cost that comes back as a device
        array (the JAX backend) is checked later, together with the others
        still on the device: at the next validation, at the end of the epoch
        or of the run, or once ``DEVICE_COSTS_AT_ONCE`` (100) have gathered,
        so the device never waits for Python between minibatches; the error
        still names the cost's own iteration.
    """
    if (save_best is not None or checkpoint is not None) and params is None:
        raise ArgumentError("save_best and checkpoint need the model's params")
    # what to undo if the loop stops on an exception (a progress line to clear)
    stops = []
    with output_locks(save_best=save_best, checkpoint=checkpoint), interrupt_guard() as sigint:
        try:
            return _loop(
                train_model, validate_model, test_model, n_train_batches, n_valid_batches,
                n_test_batches, n_epochs, patience, patience_increase, improvement_threshold,
                events, state, params, save_best, checkpoint, resume, quiet, settings,
                sigint, stops,
            )
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            if sigint.raised or interrupted(exc):
                # The interrupt surfaced as another exception (a compiled
                # function's SystemError, say): it is still an interrupt.
                raise KeyboardInterrupt(f"interrupted ({type(exc).__name__})") from exc
            raise
        finally:
            for undo in stops:
                undo()


def _loop(
    train_model, validate_model, test_model, n_train_batches, n_valid_batches, n_test_batches,
    n_epochs, patience, patience_increase, improvement_threshold, events, state, params,
    save_best, checkpoint, resume, quiet, settings, sigint, stops,
):
    """The body of :func:`patience_loop`, run under its locks and interrupt guard."""
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        state = read_checkpoint(checkpoint, params, settings, n_train_batches=n_train_batches)
    if state is None:
        state = LoopState(patience=patience)
    validation_frequency = min(n_train_batches, patience // 2)

    progress = None
    if not quiet and _is_terminal(sys.stderr):
        progress = Progress(n_epochs, n_train_batches)
        if hasattr(events, "before_print"):
            events.before_print = progress.clear
        stops.append(progress.clear)
    events = Chain(progress, events)

    def keep_best():
        if save_best is not None:
            with _writing("save_best", save_best, events, state):
                save_params(save_best, params, settings=settings, state=state)

    def keep_checkpoint():
        if checkpoint is not None:
            try:
                check_finite(params, state)
            except Diverged:
                events.finished(state)
                raise
            with _writing("checkpoint", checkpoint, events, state):
                write_checkpoint(checkpoint, params, state, settings)

    segment_start = time.perf_counter()
    elapsed_before = state.elapsed
    # Costs not checked yet, as (iter, cost, epoch, minibatch): a device
    # backend's costs wait here and are read together (see _host_floats).
    pending = []

    def settle():
        """Check the pending costs in order: finite, or :class:`Diverged` naming its iteration."""
        if not pending:
            return
        costs = _host_floats([p[1] for p in pending])
        checked = list(zip(pending, costs))
        pending.clear()
        for (p_iter, _, p_epoch, p_minibatch), p_cost in checked:
            if not math.isfinite(p_cost):
                events.finished(state)  # clears a progress line
                raise _diverged(
                    p_iter, p_cost, p_epoch, p_minibatch, n_train_batches, state, save_best, settings
                )
            state.last_cost = p_cost
            events.after_train(p_iter, p_cost, state)

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
            sigint.check()
            # Port note: the original never read the cost.  We check that it
            # is finite: at once when it is a host value; a cost still on the
            # device (JAX) waits, and the waiting costs are read together at
            # the next validation, the end of the epoch or the run, or once
            # DEVICE_COSTS_AT_ONCE have gathered, so the device never waits
            # for Python between minibatches.
            pending.append((iter, cost, epoch, minibatch_index))
            state.next_minibatch = minibatch_index + 1
            state.iterations += 1
            state.elapsed = elapsed_before + time.perf_counter() - segment_start
            if _on_host(cost) or len(pending) >= DEVICE_COSTS_AT_ONCE:
                settle()

            if (iter + 1) % validation_frequency == 0:
                settle()
                # compute zero-one loss on validation set
                this_validation_loss = float(
                    np.mean(_host_values(sigint.each(validate_model, n_valid_batches)))
                )
                state.last_validation_loss = this_validation_loss
                state.validation_curve.append([iter + 1, this_validation_loss])
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
                        np.mean(_host_values(sigint.each(test_model, n_test_batches)))
                    )
                    keep_best()
                    events.new_best(
                        epoch, minibatch_index + 1, n_train_batches, state.test_score, state
                    )

            if state.patience <= iter:
                settle()
                state.done_looping = True
                break
        else:
            settle()
            state.next_minibatch = 0
            state.elapsed = elapsed_before + time.perf_counter() - segment_start
            keep_checkpoint()
            events.epoch_end(state)
    state.elapsed = elapsed_before + time.perf_counter() - segment_start
    if state.done_looping:
        # The run stopped in the middle of an epoch: keep where it ended, so
        # that resuming a finished run changes nothing.
        keep_checkpoint()
    events.finished(state)
    return state


def interrupted(exc):
    """Whether ``exc`` is an interrupt, or an exception an interrupt caused.

    A ``KeyboardInterrupt`` raised while compiled code runs may come out as
    another exception (CPython's ``SystemError: ... returned a result with an
    exception set``) that holds it as its ``__cause__`` or ``__context__``.
    """
    return any(isinstance(e, KeyboardInterrupt) for e in exception_chain(exc))


def exception_chain(exc):
    """``exc``, then its ``__cause__`` (or else ``__context__``), and so on, each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


class _InterruptGuard:
    """Remember a SIGINT while a run goes on, whatever becomes of its exception.

    While :func:`interrupt_guard` blocks run, SIGINT sets :attr:`raised` and
    then goes to the handler that was there before (Python's own raises
    ``KeyboardInterrupt``).  That exception may be swallowed: raised inside a
    callback whose exceptions Python ignores (a garbage-collection callback,
    an LLVM notification), it would print "Exception ignored in" with a
    traceback and vanish.  Such a ``KeyboardInterrupt`` is kept quiet here
    (``sys.unraisablehook``) and the loop calls :meth:`check` between
    minibatches, which raises it again.  Only the main thread can set signal
    handlers: elsewhere, and where SIGINT is ignored or handled outside
    Python, nothing is installed.
    """

    def __init__(self):
        self.depth = 0
        self.raised = False
        self.installed = False
        self.previous_handler = None
        self.previous_hook = None

    def enter(self):
        self.depth += 1
        if self.depth > 1 or threading.current_thread() is not threading.main_thread():
            return
        self.raised = False
        previous = signal.getsignal(signal.SIGINT)
        if previous in (signal.SIG_IGN, None):
            return
        self.previous_handler, self.previous_hook = previous, sys.unraisablehook
        signal.signal(signal.SIGINT, self._handle)
        sys.unraisablehook = self._unraisable
        self.installed = True

    def exit(self):
        self.depth -= 1
        if self.depth == 0 and self.installed:
            signal.signal(signal.SIGINT, self.previous_handler)
            if sys.unraisablehook == self._unraisable:
                sys.unraisablehook = self.previous_hook
            self.installed = False

    def _handle(self, signum, frame):
        self.raised = True
        if callable(self.previous_handler):
            self.previous_handler(signum, frame)
        else:  # SIG_DFL: the default would end the process; end the run instead
            raise KeyboardInterrupt

    def _unraisable(self, unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            self.raised = True  # check() raises it again where it cannot be lost
            return
        if self.raised:
            # After SIGINT: a finalizer of an object the interrupt left
            # half-built (llvmlite's, say) failing.  The interrupt is the news.
            return
        self.previous_hook(unraisable)

    def release(self, exc):
        """Free the frames an interrupt's exception holds, while the hook is ours.

        The objects they hold would otherwise be finalized after the run has
        reported the interrupt, and a half-built one would print its failure
        after the one-line error.
        """
        for e in exception_chain(exc):
            traceback.clear_frames(e.__traceback__)
        gc.collect()

    def check(self):
        """Raise ``KeyboardInterrupt`` if SIGINT came since the outermost block began."""
        if self.raised:
            raise KeyboardInterrupt

    def each(self, function, n):
        """``[function(i) for i in range(n)]``, checking for SIGINT after each call."""
        values = []
        for i in range(n):
            values.append(function(i))
            self.check()
        return values


_interrupts = _InterruptGuard()


@contextlib.contextmanager
def interrupt_guard():
    """Make sure a SIGINT during the block ends it with ``KeyboardInterrupt``.

    :func:`patience_loop` runs inside one, and the command line
    (:func:`deeplearning_tutorials.cli.main`) around a whole run, so that an
    interrupt swallowed while compiling still stops the run at the first
    check.  Blocks nest; the previous SIGINT handler and
    ``sys.unraisablehook`` are restored when the outermost one ends.

    Yields
    ------
    object
        With ``raised`` (whether SIGINT came) and ``check()`` (raise
        ``KeyboardInterrupt`` if it did).
    """
    _interrupts.enter()
    try:
        yield _interrupts
    except BaseException as exc:
        if _interrupts.depth == 1 and _interrupts.installed and interrupted(exc):
            _interrupts.release(exc)
        raise
    finally:
        _interrupts.exit()


@contextlib.contextmanager
def _writing(name, path, events, state):
    """Turn a failed write of an output file into :class:`OutputError`, in one line."""
    try:
        yield
    except OSError as exc:
        events.finished(state)  # clears a progress line
        shown = os.fspath(path)
        kept = (
            f"the previous {shown} is unchanged"
            if os.path.exists(shown)
            else f"nothing was written to {shown}"
        )
        raise OutputError(
            f"cannot write the {name} {shown}: {exc.strerror or exc}; {kept}"
            + ("; make room and resume with --resume" if name == "checkpoint" else "")
        ) from None


def _on_host(value):
    """Whether a cost is already a host value (every backend but JAX returns one)."""
    return isinstance(value, numbers.Number | np.ndarray | np.generic)


_stack_on_device = None


def _host_values(values):
    """The values of a list of scalars as a numpy array, read from the device at once.

    Host values pass through as they are.  Device arrays (the JAX backend) are
    stacked on the device and copied back in one transfer: on a GPU each
    separate read left the device idle for about 0.1 ms, a fifth of a LeNet5
    training step (see "Where the schedule's time goes" in the results).  The
    values, their dtype and their order are the same either way.
    """
    if all(_on_host(v) for v in values):
        return values
    global _stack_on_device
    if _stack_on_device is None:
        import jax
        import jax.numpy as jnp

        _stack_on_device = jax.jit(lambda *xs: jnp.stack(xs))
    return np.asarray(_stack_on_device(*values))


def _host_floats(values):
    """The values of a list of scalars (host or device) as Python floats, in order."""
    return [float(v) for v in _host_values(values)]


def _diverged(iter, cost, epoch, minibatch_index, n_train_batches, state, save_best, settings):
    learning_rate = (settings or {}).get("learning_rate")
    hint = f"; try a learning rate below {learning_rate}" if learning_rate is not None else ""
    if save_best is None:
        kept = "no parameters were saved (save_best is None)"
    elif state.best_validation_loss < np.inf:
        kept = (
            f"the best parameters so far (validation error "
            f"{state.best_validation_loss * 100.0:f} %) are in {os.fspath(save_best)}"
        )
    else:
        kept = "no model was validated yet, so none was saved"
    return Diverged(
        f"training diverged: the cost is {cost} at iteration {iter} "
        f"(epoch {epoch}, minibatch {minibatch_index + 1}/{n_train_batches}){hint}; {kept}",
        iteration=iter,
        cost=cost,
    )


def check_finite(params, state):
    """Raise :class:`Diverged` if a parameter holds ``nan`` or ``inf``.

    The cost is computed before the update, so a last step can leave
    non-finite parameters behind a finite cost; a checkpoint must not keep them.
    """
    for p in params or ():
        if not np.all(np.isfinite(p.get_value(borrow=True))):
            iter = state.iterations - 1
            raise Diverged(
                f"training diverged: the parameters are no longer finite after iteration {iter}",
                iteration=iter,
                cost=state.last_cost,
            )


def results(state, **extra):
    """The dictionary a tutorial function returns.

    Parameters
    ----------
    state : LoopState
        The loop's final state.
    **extra
        Added as they are (the lessons add ``mode`` and ``floatX``).

    Returns
    -------
    dict
        ``best_validation_loss`` and ``test_score`` (fractions),
        ``best_iter`` (the 1-based iteration the original prints), ``epochs``,
        ``iterations``, ``elapsed`` (seconds in the loop, over all resumed
        pieces), ``validation_curve`` (list of ``(iteration, error)``), then
        ``extra``.
    """
    out = {
        "best_validation_loss": float(state.best_validation_loss),
        "test_score": float(state.test_score),
        "best_iter": int(state.best_iter) + 1,
        "epochs": int(state.epoch),
        "iterations": int(state.iterations),
        "elapsed": float(state.elapsed),
        "validation_curve": [(int(i), float(e)) for i, e in state.validation_curve],
    }
    if "mode" in extra:
        # PyTensor 3's default mode is the Numba one; its name is just "Mode"
        extra["mode"] = "NUMBA" if str(extra["mode"]) == "Mode" else str(extra["mode"])
    out.update(extra)
    return out


# --------------------------------------------------------------------------
# Parameters and checkpoints on disk: .npz only, never pickle
# --------------------------------------------------------------------------


def _plain(value):
    """``value`` as something JSON writes (datasets given as arrays become a digest)."""
    if isinstance(value, (str, bool, type(None))) or _is_int(value) or _is_real(value):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return {
            "shape": list(value.shape),
            "dtype": str(value.dtype),
            "crc32": zlib.crc32(np.ascontiguousarray(value).view(np.uint8)),
        }
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


#: arguments that may change between a run and its resumption
_RESUMABLE = ("n_epochs", "save_best", "checkpoint", "resume", "quiet", "mode")


def _fingerprint(settings):
    return {k: _plain(v) for k, v in sorted((settings or {}).items()) if k not in _RESUMABLE}


def _atomic_savez(path, arrays):
    """Write ``arrays`` to ``path`` so that a reader sees the old file or the whole new one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)


def _param_arrays(params):
    return {f"param_{i:03d}": np.asarray(p.get_value(borrow=True)) for i, p in enumerate(params)}


def _json_array(obj):
    return np.array(json.dumps(obj))


def save_params(path, params, settings=None, state=None):
    """Write the model's parameters to an ``.npz`` file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (its name is kept as given, ``.npz`` or not).
    params : list of shared variables
        Saved in order as ``param_000``, ``param_001``...
    settings : dict, optional
        The run's arguments, recorded in the ``meta`` entry.
    state : LoopState, optional
        Its best scores are recorded in ``meta`` too.
    """
    meta = {
        "format": FORMAT,
        "names": [getattr(p, "name", None) for p in params],
        "settings": _fingerprint(settings),
    }
    if state is not None:
        meta.update(
            best_validation_loss=float(state.best_validation_loss),
            best_iter=int(state.best_iter) + 1,
            test_score=float(state.test_score),
        )
    arrays = _param_arrays(params)
    arrays["meta"] = _json_array(meta)
    _atomic_savez(path, arrays)


def load_params(path):
    """Read a file written by :func:`save_params` (or a checkpoint).

    Returns
    -------
    arrays : list of numpy.ndarray
        The parameters, in the order they were saved.
    meta : dict
        What :func:`save_params` recorded beside them.
    """
    shown = os.fspath(path)
    try:
        loaded = np.load(shown, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ArgumentError(
                f"{shown} holds a single array (.npy), not the .npz file of parameters "
                "a tutorial saves (its save_best)"
            )
        with loaded as data:
            keys = sorted(k for k in data.files if k.startswith("param_"))
            arrays = [data[k] for k in keys]
            meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
    except ArgumentError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ArgumentError(f"cannot read parameters from {shown}: {exc}") from None
    if not arrays:
        raise ArgumentError(f"{shown} holds no parameters")
    if not isinstance(meta, dict):
        raise ArgumentError(f"{shown}: its meta entry is not a JSON object")
    return arrays, meta


def load_into(path, params):
    """Set ``params`` to the arrays saved in ``path``, cast to their dtypes.

    Raises
    ------
    ArgumentError
        When the file holds another number of parameters, or other shapes.
    """
    arrays, _ = load_params(path)
    if len(arrays) != len(params):
        raise ArgumentError(
            f"{os.fspath(path)} holds {len(arrays)} parameters, the model has {len(params)}"
        )
    for p, a in zip(params, arrays):
        current = p.get_value(borrow=True)
        if a.shape != current.shape:
            raise ArgumentError(
                f"{os.fspath(path)} holds a {a.shape} parameter where the model has {current.shape}"
            )
        p.set_value(a.astype(current.dtype))


def write_checkpoint(path, params, state, settings=None):
    """Write parameters and loop state to ``path`` atomically.

    The file is an ``.npz``: ``param_000``... and a ``meta`` entry holding
    the JSON of the :class:`LoopState` and of the run's settings.  It is
    first written beside ``path`` and then moved over it, so a run killed at
    any moment leaves either the previous checkpoint or the new one.
    """
    meta = {
        "format": FORMAT,
        "state": state.as_dict(),
        "settings": _fingerprint(settings),
    }
    arrays = _param_arrays(params)
    arrays["meta"] = _json_array(meta)
    _atomic_savez(path, arrays)


def _state_problem(state, n_train_batches=None):
    """What is wrong with a checkpoint's recorded loop state, or None.

    Every field of :class:`LoopState` must be there, with its type and in
    its range, and nothing else: a fresh run is at epoch 0, minibatch 0; a
    run that stopped early may have ended on the last minibatch of an epoch.
    """
    if not isinstance(state, dict):
        return "its loop state is not a JSON object"
    names = [f.name for f in dataclasses.fields(LoopState)]
    missing = [n for n in names if n not in state]
    unknown = sorted(set(state) - set(names))
    if missing:
        return f"its loop state lacks {', '.join(missing)}"
    if unknown:
        return f"its loop state has unknown fields {', '.join(unknown)}"

    def fraction(v):
        return _is_real(v) and 0.0 <= v <= 1.0

    for name in ("patience", "epoch", "next_minibatch", "best_iter", "iterations"):
        if not (_is_int(state[name]) and state[name] >= 0):
            return f"{name} is {state[name]!r}, not a whole number >= 0"
    for name, ok, what in (
        ("best_validation_loss", lambda v: fraction(v) or v == math.inf, "a fraction or inf"),
        ("test_score", fraction, "a fraction"),
        ("last_validation_loss", lambda v: fraction(v) or (_is_real(v) and math.isnan(v)),
         "a fraction or nan"),
        ("last_cost", lambda v: _is_real(v) and not math.isinf(v), "a finite number or nan"),
        ("elapsed", lambda v: _is_real(v) and math.isfinite(v) and v >= 0, "a number of seconds >= 0"),
    ):
        if not ok(state[name]):
            return f"{name} is {state[name]!r}, not {what}"
    if not isinstance(state["done_looping"], bool):
        return f"done_looping is {state['done_looping']!r}, not true or false"
    curve = state["validation_curve"]
    if not (
        isinstance(curve, list)
        and all(
            isinstance(p, list) and len(p) == 2 and _is_int(p[0]) and p[0] >= 1 and fraction(p[1])
            for p in curve
        )
    ):
        return "validation_curve is not a list of [iteration, error] pairs"
    epoch, minibatch = state["epoch"], state["next_minibatch"]
    if epoch == 0 and minibatch != 0:
        return f"next_minibatch is {minibatch} before the first epoch"
    if n_train_batches is not None:
        last = n_train_batches if state["done_looping"] else n_train_batches - 1
        if minibatch > last:
            return f"next_minibatch is {minibatch}, past the {n_train_batches} minibatches of an epoch"
        done = (epoch - 1) * n_train_batches + minibatch if minibatch else epoch * n_train_batches
        if state["iterations"] != done:
            return (
                f"iterations is {state['iterations']}, not the {done} minibatches of "
                f"epoch {epoch} up to minibatch {minibatch}"
            )
    if state["best_validation_loss"] < math.inf and state["best_iter"] >= state["iterations"]:
        return f"best_iter {state['best_iter']} is not among its {state['iterations']} iterations"
    return None


def check_checkpoint(path, n_train_batches=None):
    """Refuse a checkpoint whose record is not a state a run can be in.

    Checked: the file is a checkpoint of this format; its loop state has
    every field of :class:`LoopState` and no other, each of its type and in
    its range (see ``n_train_batches``); its parameters are finite.  The
    run's settings and the model's parameters are compared by
    :func:`read_checkpoint`, which calls this first.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint.
    n_train_batches : int, optional
        Minibatches in an epoch, to check the recorded position against.

    Returns
    -------
    arrays : list of numpy.ndarray
    meta : dict
        As :func:`load_params` returns them.

    Raises
    ------
    ArgumentError
        Naming the checkpoint and what is wrong with it.
    """
    shown = os.fspath(path)
    arrays, meta = load_params(path)
    if "state" not in meta:
        raise ArgumentError(f"{shown} is not a checkpoint")

    def refuse(problem):
        return ArgumentError(f"{shown} is not a usable checkpoint: {problem}; remove it to start afresh")

    if meta.get("format") != FORMAT:
        raise refuse(f"its format is {meta.get('format')!r}, this version reads {FORMAT}")
    problem = _state_problem(meta["state"], n_train_batches)
    if problem is not None:
        raise refuse(problem)
    if not isinstance(meta.get("settings", {}), dict):
        raise refuse("its settings are not a JSON object")
    for i, a in enumerate(arrays):
        if not (np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a))):
            raise refuse(f"parameter {i} is not an array of finite numbers")
    return arrays, meta


def read_checkpoint(path, params, settings=None, n_train_batches=None):
    """Restore ``params`` from a checkpoint and return its :class:`LoopState`.

    Parameters
    ----------
    path : str or os.PathLike
        A file :func:`write_checkpoint` wrote.
    params : list of shared variables
        Set to the saved parameters (only once everything has been checked).
    settings : dict, optional
        The run's arguments: they must match the recorded ones, except those
        that may change on resume (``n_epochs``, the output options).
    n_train_batches : int, optional
        Minibatches in an epoch, to check the recorded position against.

    Raises
    ------
    ArgumentError
        Naming the checkpoint, when it belongs to another model or another
        setting, or when what it records is not a state a run can be in (an
        unknown or missing field, a value out of range, parameters that are
        not finite).
    """
    shown = os.fspath(path)
    arrays, meta = check_checkpoint(path, n_train_batches)
    recorded, wanted = meta.get("settings", {}), _fingerprint(settings)
    for key in sorted(set(recorded) | set(wanted)):
        if recorded.get(key) != wanted.get(key):
            raise ArgumentError(
                f"{shown} was written by a run with {key}={recorded.get(key)!r}, "
                f"not {wanted.get(key)!r}; start afresh or use another checkpoint"
            )
    params = params or []
    if len(arrays) != len(params):
        raise ArgumentError(
            f"{shown} holds {len(arrays)} parameters, the model has {len(params)}"
        )
    for p, a in zip(params, arrays):
        current = p.get_value(borrow=True)
        if a.shape != current.shape or a.dtype != current.dtype:
            raise ArgumentError(
                f"{shown} holds a {a.dtype} {a.shape} parameter where the model has "
                f"{current.dtype} {current.shape} (another floatX or model?)"
            )
    for p, a in zip(params, arrays):
        p.set_value(a, borrow=False)
    return LoopState(**meta["state"])


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress(Events):
    """A live progress bar on standard error (tqdm): minibatches, throughput, time left.

    It is cleared before the tutorial prints, so the printed lines stay whole.
    Its total runs to the end of the current patience or of ``n_epochs``,
    whichever comes first; a new best may extend it.
    """

    def __init__(self, n_epochs, n_train_batches, stream=None):
        self.n_epochs = n_epochs
        self.n_train_batches = n_train_batches
        self.stream = stream or sys.stderr
        self.bar = None
        self.noticed = False

    def before_train(self, iter, state):
        if not self.noticed:
            # NUMBA and JAX compile a function on its first call: say why it waits.
            self.stream.write("(the first minibatch compiles what is not compiled yet; "
                              "PyTensor caches it for later runs)\n")
            self.stream.flush()
            self.noticed = True

    def after_train(self, iter, cost, state):
        total = min(self.n_epochs * self.n_train_batches, state.patience + 1)
        if self.bar is None:
            # Throughput counts from the first finished minibatch, so that
            # compilation and loading stay out of it.
            self.bar = tqdm.tqdm(total=total, initial=state.iterations, file=self.stream,
                                 unit="minibatch", dynamic_ncols=True, leave=False,
                                 mininterval=0.1)
        self.bar.total = total
        if state.best_validation_loss < np.inf:
            self.bar.set_postfix_str(f"best {state.best_validation_loss * 100.0:.2f} %",
                                     refresh=False)
        self.bar.update(state.iterations - self.bar.n)

    def clear(self):
        if self.bar is not None:
            self.bar.clear()

    def finished(self, state):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


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
        #: called before each line (a live progress line clears itself here)
        self.before_print = None

    def _print(self, *args):
        if self.before_print is not None:
            self.before_print()
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
