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
its row).

This module stands above the lessons; nothing imports it.
"""

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
    for key in RESULT_COLUMNS:
        if key in state and key not in row:
            row[key] = state[key]
    return row


def run_grid(points, subset=None, scheduler=None, workers=None):
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
    """
    from dask.distributed import Client, LocalCluster

    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers or min(len(points), os.cpu_count() or 1),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
    else:
        cluster = None
    try:
        with Client(cluster if cluster is not None else scheduler) as client:
            # pure=False: equal points are still separate runs
            futures = client.map(run_point, points, subset=subset, pure=False)
            return client.gather(futures)
    finally:
        if cluster is not None:
            cluster.close()


def _cell(value):
    if isinstance(value, (list, tuple)):
        return json.dumps(value)
    return value


def write_table(rows, path):
    """Write ``rows`` as CSV: argument columns, then :data:`RESULT_COLUMNS`."""
    arguments = [k for k in rows[0] if k not in RESULT_COLUMNS] if rows else []
    columns = arguments + [c for c in RESULT_COLUMNS if any(c in r for r in rows)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _cell(row.get(c, "")) for c in columns})


def main(argv=None):
    """``python -m deeplearning_tutorials.sweep``; returns the exit code."""
    from deeplearning_tutorials.convolutional_mlp import evaluate_lenet5

    parser = cli._Parser(
        prog="python -m deeplearning_tutorials.sweep",
        description="Run evaluate_lenet5 over the product of the values given, on Dask.",
    )
    names = cli.add_signature_options(parser, evaluate_lenet5, grid=True, skip=NOT_SWEPT)
    parser.add_argument("--out", default="results.csv", metavar="PATH",
                        help="the results table (CSV) (default: results.csv)")
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

    # Refuse nonsense before any worker starts.
    from deeplearning_tutorials import training

    try:
        for point in points:
            training.check_arguments(point)
    except training.ArgumentError as exc:
        return cli.fail(parser.prog, exc, 2)

    rows = run_grid(points, subset=args["subset"], scheduler=args["scheduler"],
                    workers=args["workers"])
    write_table(rows, args["out"])
    for row in rows:
        shown = {k: row[k] for k in values if len(values[k]) > 1}
        if "error" in row:
            print(f"{shown}: error: {row['error']}")
        else:
            print(
                f"{shown}: best validation {row['best_validation_loss'] * 100.0:f} %, "
                f"test {row['test_score'] * 100.0:f} %, {row['epochs']} epochs"
            )
    print(f"{len(rows)} runs written to {args['out']}")
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
