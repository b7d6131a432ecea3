"""A grid of LeNet5 runs, spread over a Dask cluster.

The original left hyper-parameter searches to jobman, calling
``convolutional_mlp.experiment(state, channel)`` once per job.  We keep that
contract and map ``experiment`` over a grid with Dask distributed: on a
``LocalCluster`` of this machine by default, or on a running scheduler named
by ``--scheduler``::

    python -m deeplearning_tutorials.sweep --learning-rate 0.05 0.1 \\
        --n-epochs 1 --nkerns 20,50 10,20 --subset 1000 --out results.csv

Every option of :func:`~deeplearning_tutorials.convolutional_mlp.evaluate_lenet5`
takes several values (``nkerns`` values are comma-separated pairs); the grid
is their product.  Each run is one row of the results table (CSV): its
arguments, its results, and ``error`` when it failed (a diverged run keeps
its row).  A row is written as soon as its run ends, so a sweep that is
killed keeps the rows of the runs that ended; a finished table lists them
in grid order.  A run that fails, whatever the reason, is reported in one
line on standard error while the others go on, and the exit code is 1.

This module stands above the lessons; nothing imports it.
"""

import contextlib
import csv
import itertools
import json
import os
import sys

from deeplearning_tutorials import cli

#: options a grid point does not take: they name files or switch output
NOT_SWEPT = ("save_best", "checkpoint", "resume", "quiet")

#: result columns of the table, after the arguments
RESULT_COLUMNS = (
    "best_validation_loss",
    "test_score",
    "best_iter",
    "epochs",
    "iterations",
    "elapsed",
    "mode",
    "floatX",
    "validation_curve",
    "error",
)


class State(dict):
    """A dict whose keys are also attributes, as jobman's ``DD``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


class Channel:
    """The part of jobman's channel that ``experiment`` uses."""

    COMPLETE = None
    INCOMPLETE = True

    def save(self):
        """Nothing to persist: the sweep collects the states it gets back."""


def grid(values):
    """The product of option values, as a list of argument dicts.

    Parameters
    ----------
    values : dict
        ``{name: [value, ...]}``.
    """
    names = list(values)
    return [dict(zip(names, combo)) for combo in itertools.product(*(values[n] for n in names))]


def run_point(point, subset=None):
    """Run ``experiment`` for one grid point; returns its row of the table.

    Parameters
    ----------
    point : dict
        Arguments of ``evaluate_lenet5``.
    subset : int, optional
        Use the first ``subset`` examples of each set only.
    """
    # Imported here, in the worker, so that the client needs no PyTensor.
    from deeplearning_tutorials import convolutional_mlp, training

    state = State(point, quiet=True, save_best=None)
    row = dict(point)
    try:
        if subset is not None:
            state.dataset = cli.subset(point.get("dataset", "mnist.pkl.gz"), subset)
        status = convolutional_mlp.experiment(state, Channel())
        if status is not Channel.COMPLETE:
            raise RuntimeError(f"experiment returned {status!r}")
    except (training.Diverged, ValueError, RuntimeError) as exc:
        row["error"] = " ".join(str(exc).split())
    except Exception as exc:
        # Anything else (an unreadable dataset, a lack of memory...) is this
        # point's failure, which its row reports; the other points go on.
        row["error"] = f"{type(exc).__name__}: " + " ".join(str(exc).split())
    for key in RESULT_COLUMNS:
        if key in state and key not in row:
            row[key] = state[key]
    return row


def run_grid(points, subset=None, scheduler=None, workers=None, on_row=None):
    """Run every grid point on a Dask cluster; returns the rows in grid order.

    Parameters
    ----------
    points : list of dict
        Arguments of ``evaluate_lenet5``, one dict per run.
    subset : int, optional
        Use the first ``subset`` examples of each set only.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``); a
        ``LocalCluster`` is started when omitted.
    workers : int, optional
        Worker processes of the ``LocalCluster`` (one thread each: PyTensor's
        global flags are set per run, so runs must not share a process at once).
    on_row : callable, optional
        Called as ``on_row(index, row)`` as soon as each run ends, in the
        order they end.  A run whose worker died has a row with only its
        arguments and ``error``.
    """
    from dask.distributed import Client, LocalCluster, as_completed

    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers or min(len(points), os.cpu_count() or 1),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
    else:
        cluster = None
    rows = [None] * len(points)
    try:
        with Client(cluster if cluster is not None else scheduler) as client:
            # pure=False: equal points are still separate runs
            futures = client.map(run_point, points, subset=subset, pure=False)
            index = {future.key: i for i, future in enumerate(futures)}
            for future in as_completed(futures):
                i = index[future.key]
                if future.status == "finished":
                    rows[i] = future.result()
                else:  # the worker died, or the task could not run
                    try:
                        exc = future.exception()
                    except Exception as cancelled:  # a cancelled task has no exception
                        exc = cancelled
                    error = f"{type(exc).__name__}: " + " ".join(str(exc).split())
                    rows[i] = dict(points[i], error=error)
                if on_row is not None:
                    on_row(i, rows[i])
            return rows
    finally:
        if cluster is not None:
            cluster.close()


def _cell(value):
    if isinstance(value, (list, tuple)):
        return json.dumps(value)
    return value


def _columns(arguments):
    return list(arguments) + [c for c in RESULT_COLUMNS if c not in arguments]


class Table:
    """The results table, written a row at a time as runs end.

    Each row is flushed to disk as soon as it is written, so that the rows of
    the runs that ended survive a sweep that is killed or fails.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file (created, or emptied).
    arguments : sequence of str
        The argument columns, before :data:`RESULT_COLUMNS`.
    """

    def __init__(self, path, arguments):
        self.path = os.fspath(path)
        self.columns = _columns(arguments)
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self.file = open(self.path, "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.columns)
        #: rows written so far
        self.rows = 0
        self.writer.writeheader()
        self._flush()

    def _flush(self):
        self.file.flush()
        os.fsync(self.file.fileno())

    def write(self, row):
        self.writer.writerow({c: _cell(row.get(c, "")) for c in self.columns})
        self._flush()
        self.rows += 1

    def close(self):
        self.file.close()


def write_table(rows, path):
    """Write ``rows`` as CSV, atomically: argument columns, then :data:`RESULT_COLUMNS`."""
    arguments = [k for k in rows[0] if k not in RESULT_COLUMNS] if rows else []
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        table = Table(tmp, arguments)
        try:
            for row in rows:
                table.write(row)
        finally:
            table.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)


def _described(row, values):
    shown = {k: row[k] for k in values if len(values[k]) > 1}
    return f"{shown}: " if shown else ""


def main(argv=None):
    """``python -m deeplearning_tutorials.sweep``; returns the exit code.

    Every run's row is written to the table as soon as it ends.  A run that
    fails gets one line on standard error and its ``error`` column; the
    others go on, and the exit code is then 1.  An interrupted sweep exits
    with 130, keeping the rows of the runs that ended.
    """
    prog = "python -m deeplearning_tutorials.sweep"
    try:
        from deeplearning_tutorials.convolutional_mlp import evaluate_lenet5
    except ValueError as exc:  # PyTensor refused its configuration as it was imported
        message = cli.compiledir_fault(exc)
        if message is None:
            raise
        return cli.fail(prog, message, 1)

    parser = cli._Parser(
        prog=prog,
        description="Run evaluate_lenet5 over the product of the values given, on Dask.",
    )
    names = cli.add_signature_options(parser, evaluate_lenet5, grid=True, skip=NOT_SWEPT)
    parser.add_argument("--out", default="results.csv", metavar="PATH",
                        help="the results table (CSV), a row written as each run ends "
                        "(default: results.csv)")
    parser.add_argument("--subset", type=int, metavar="N",
                        help="use the first N examples of each set only")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="a running Dask scheduler (default: a LocalCluster here)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="LocalCluster worker processes (default: one per run, at most one per core)")
    args = vars(parser.parse_args(argv))
    values = {n: args[n] for n in names if args[n] != [None]}
    # PyTensor's own mode and floatX are the defaults, as in a single run
    values = {n: v for n, v in values.items() if v != [None]}
    if args["subset"] is not None and args["subset"] < 1:
        return cli.fail(parser.prog, f"subset must be at least 1, not {args['subset']}", 2)
    if args["workers"] is not None and args["workers"] < 1:
        return cli.fail(parser.prog, f"workers must be at least 1, not {args['workers']}", 2)
    points = grid(values)

    # Refuse nonsense, and a table that cannot be written, before any worker starts.
    from deeplearning_tutorials import training

    out = args["out"]
    try:
        for point in points:
            training.check_arguments(point)
        training.check_output_path("out", out, npz=False)
    except training.ArgumentError as exc:
        return cli.fail(parser.prog, exc, 2)

    failed = []

    def finished(i, row):
        table.write(row)
        if "error" in row:
            failed.append(i)
            cli.fail(parser.prog, f"run {i + 1}/{len(points)}: {_described(row, values)}{row['error']}", 1)
        else:
            print(
                f"{_described(row, values)}best validation {row['best_validation_loss'] * 100.0:f} %, "
                f"test {row['test_score'] * 100.0:f} %, {row['epochs']} epochs",
                flush=True,
            )

    table = None
    try:
        table = Table(out, points[0] if points else [])
        rows = run_grid(points, subset=args["subset"], scheduler=args["scheduler"],
                        workers=args["workers"], on_row=finished)
        table.close()
        # the runs ended in any order: the finished table lists them in grid order
        write_table(rows, out)
    except OSError as exc:
        kept = (
            f"the rows of the {table.rows} runs that ended before are in it"
            if table is not None and table.rows
            else "no row was written"
        )
        return cli.fail(
            parser.prog, f"cannot write the results table {out}: {exc.strerror or exc}; {kept}", 1
        )
    except KeyboardInterrupt:
        return cli.fail(
            parser.prog, f"interrupted; the rows of the runs that ended are in {out}", 130
        )
    finally:
        if table is not None:
            table.close()
    print(f"{len(rows)} runs written to {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
