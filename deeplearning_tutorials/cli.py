"""Command lines built from a tutorial function's signature.

The original tutorials ran their function with its defaults when executed as
scripts.  We keep that (``python -m deeplearning_tutorials.convolutional_mlp``
with no argument reproduces the original run) and make every keyword of the
function an option, named after it (``learning_rate`` is
``--learning-rate``, ``nkerns`` takes several values), whose default and help
come from the function's signature and docstring: defaults live once, there.

This module imports no lesson: each lesson's ``__main__`` block hands its
function over, as in ``sys.exit(cli.main(evaluate_lenet5))``.

Exit codes: 0 on success; 2 for an argument that makes no sense, refused
with one line on standard error before anything compiles; 1 for a dataset
that cannot be found or read, or a run that diverges, also one line; 130 when
interrupted.
"""

import argparse
import ast
import collections.abc
import inspect
import os
import sys

from deeplearning_tutorials import datasets, training
from deeplearning_tutorials.flags import FLOATX, MODES

#: keywords whose value is a file path that may be switched off with ``none``
OPTIONAL_PATHS = ("save_best", "checkpoint")

#: extra option names, beside the one derived from the keyword
ALIASES = {"save_best": ["--save"]}

#: help for keywords the lessons' docstrings do not describe
EXTRA_HELP = {
    "mode": "PyTensor backend the run compiles for: " + ", ".join(MODES)
    + " (default: PyTensor's own, NUMBA)",
    "floatX": "float precision of the data and parameters (default: PyTensor's floatX)",
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``prog: error: message``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _docstring_parameters(function):
    """Map parameter names to their one-paragraph description in a numpydoc docstring."""
    doc = inspect.getdoc(function) or ""
    lines = doc.splitlines()
    out = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Parameters") + 2
    except StopIteration:
        return out
    names, text = [], []
    for line in lines[start:]:
        if line and not line.startswith(" "):
            if line.strip() and set(line.strip()) == {"-"}:
                break  # the underline of the next section
            if names:
                for name in names:
                    out[name] = " ".join(text)
            if not line.split(":")[0].strip() or line.strip() in ("Returns", "Raises", "Notes"):
                names = []
                continue
            names = [n.strip() for n in line.split(":")[0].split(",")]
            text = []
        elif line.strip():
            text.append(line.strip())
    if names:
        for name in names:
            out[name] = " ".join(text)
    return out


def _optional_path(value):
    return None if value.strip().lower() in ("", "none") else value


def _option_names(name):
    names = ["--" + name.replace("_", "-")]
    if "_" in name:
        names.append("--" + name)
    return names + ALIASES.get(name, [])


def add_signature_options(parser, function, grid=False, skip=()):
    """Add one option per keyword of ``function`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    function : callable
        A tutorial function; every parameter must have a default.
    grid : bool
        Each option takes several values (for :mod:`deeplearning_tutorials.sweep`),
        and its default is a one-value list.
    skip : sequence of str
        Keywords to leave out.

    Returns
    -------
    list of str
        The keyword names added, in signature order.
    """
    described = _docstring_parameters(function)
    names = []
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.default is inspect.Parameter.empty or name in skip:
            continue
        default = parameter.default
        help = described.get(name) or EXTRA_HELP.get(name, "")
        kwargs = {"dest": name}
        if name == "mode":
            kwargs.update(type=str.upper, choices=MODES, metavar="{" + ",".join(MODES) + "}")
        elif name == "floatX":
            kwargs.update(choices=FLOATX)
        elif isinstance(default, bool):
            if grid:
                continue  # switches such as --quiet are not swept over
            kwargs.update(action="store_false" if default else "store_true")
        elif isinstance(default, (list, tuple)):
            kwargs.update(type=type(default[0]) if default else str, nargs="+")
            if grid:
                # each grid point is a whole list: "20,50 10,20"
                item = kwargs.pop("type")
                kwargs.update(type=lambda s, item=item: [item(v) for v in s.split(",")])
        elif name in OPTIONAL_PATHS or default is None:
            kwargs.update(type=_optional_path, metavar="PATH")
        elif isinstance(default, (int, float, str)):
            kwargs.update(type=type(default))
        if grid and not isinstance(default, bool):
            kwargs["nargs"] = "+"
            kwargs["default"] = [default]
        else:
            kwargs["default"] = default
        shown = "none" if default is None else (
            " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        )
        if name not in EXTRA_HELP:
            help = f"{help} (default: {shown})".strip()
        kwargs["help"] = help.replace("%", "%%")
        parser.add_argument(*_option_names(name), **kwargs)
        names.append(name)
    return names


def build_parser(function, prog=None):
    """The command line of a tutorial function (see the module docstring)."""
    summary = (inspect.getdoc(function) or "").split("\n\n")[0]
    parser = _Parser(prog=prog, description=summary)
    add_signature_options(parser, function)
    if "dataset" in inspect.signature(function).parameters:
        parser.add_argument(
            "--subset",
            type=int,
            metavar="N",
            help="train, validate and test on the first N examples of each set only",
        )
    return parser


def subset(dataset, n):
    """The first ``n`` examples of each of the three sets of ``dataset``.

    Parameters
    ----------
    dataset : str or os.PathLike or sequence
        A name or path :func:`~deeplearning_tutorials.datasets.locate` finds,
        or the three ``(x, y)`` pairs.
    n : int
        Examples to keep per set.
    """
    if n < 1:
        raise training.ArgumentError(f"subset must be at least 1, not {n}")
    if isinstance(dataset, (str, os.PathLike)):
        dataset = datasets.load_arrays(datasets.locate(dataset))
    return tuple((x[:n], y[:n]) for x, y in dataset)


def _prog(function):
    module = getattr(function, "__module__", "") or ""
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec else os.path.basename(sys.argv[0])
    return f"python -m {module}" if module else None


def fail(prog, message, code):
    """Print ``prog: error: message`` on one line of standard error and return ``code``."""
    message = " ".join(str(message).split())
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return code


def main(function, argv=None):
    """Run ``function`` with the options of the command line ``argv``.

    Parameters
    ----------
    function : callable
        A tutorial function (``evaluate_lenet5``, ``test_mlp``,
        ``sgd_optimization_mnist``).
    argv : list of str, optional
        The arguments (``sys.argv[1:]`` when omitted).

    Returns
    -------
    int
        The exit code (see the module docstring).
    """
    parser = build_parser(function, prog=_prog(function))
    try:
        args = vars(parser.parse_args(argv))
    except SystemExit as exc:  # --help, or an argument argparse refused
        return exc.code
    n = args.pop("subset", None)
    prog = parser.prog
    try:
        if n is not None:
            args["dataset"] = subset(args["dataset"], n)
        function(**args)
    except training.Diverged as exc:
        return fail(prog, exc, 1)
    except datasets.DatasetError as exc:
        return fail(prog, exc, 1)
    except training.ArgumentError as exc:
        return fail(prog, exc, 2)
    except KeyboardInterrupt:
        hint = " (resume with --resume)" if args.get("checkpoint") else ""
        return fail(prog, "interrupted" + hint, 130)
    return 0


# --------------------------------------------------------------------------
# jobman: experiment(state, channel)
# --------------------------------------------------------------------------


def _coerce(value, default):
    """Parse ``value`` when a string stands for the default's type (``'[20, 50]'``)."""
    if isinstance(value, str) and not isinstance(default, str) and default is not None:
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    if isinstance(default, list) and isinstance(value, tuple):
        value = list(value)
    return value


def keywords_from(state, function):
    """The arguments of ``function`` that ``state`` holds, by key or attribute.

    Parameters
    ----------
    state : mapping or object
        jobman's state (a dict whose keys are also attributes), a plain
        dict, or any object with attributes.
    function : callable
        The tutorial function whose signature names the arguments.

    Returns
    -------
    dict
        ``{name: value}`` for every parameter of ``function`` found in ``state``.
    """
    out = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if isinstance(state, collections.abc.Mapping):
            if name not in state:
                continue
            value = state[name]
        elif hasattr(state, name):
            value = getattr(state, name)
        else:
            continue
        out[name] = _coerce(value, parameter.default)
    return out


def record(state, results):
    """Write ``results`` into ``state``, by key when it is a mapping, else by attribute.

    Tuples become lists, so a database-backed state stores plain values.
    """
    for key, value in results.items():
        if isinstance(value, list):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        if isinstance(state, collections.abc.MutableMapping):
            state[key] = value
        else:
            setattr(state, key, value)
