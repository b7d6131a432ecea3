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
with one line on standard error before anything compiles (output files that
cannot be written, that name the dataset or each other, or that another run
holds included); 1 for a dataset that cannot be found or read, a run that
diverges, an output file that fails to be written, a lack of memory, or a
PyTensor compile directory or C compiler that cannot be used, also one line;
130 when interrupted, with a line naming the checkpoint to resume from.
"""

import argparse
import ast
import collections.abc
import errno
import inspect
import os
import re
import sys

import docstring_parser

from deeplearning_tutorials import datasets, training

#: keywords whose value is a file path that may be switched off with ``none``
OPTIONAL_PATHS = ("save_best", "checkpoint")

#: extra option names, beside the one derived from the keyword
ALIASES = {"save_best": ["--save"]}

#: help for keywords the lessons' docstrings do not describe
EXTRA_HELP = {
    "mode": "the mode the run compiles in: the package's DLT_NUMBA, DLT_CVM, DLT_C, DLT_JAX"
    " (PyTensor's backends with the tutorials' rewrites), or PyTensor's own NUMBA, CVM, C,"
    " JAX, FAST_COMPILE (default: DLT_NUMBA)",
    "floatX": "float precision of the data and parameters (default: PyTensor's floatX, "
    "float64 unless PYTENSOR_FLAGS says otherwise)",
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``prog: error: message``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


_ROLE = re.compile(r":[\w:]+:`~?([^`<]+?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain_text(text):
    """``text`` without Sphinx markup: ``:func:`load_data``` -> ``load_data``, double backquotes dropped."""
    return _LITERAL.sub(r"\1", _ROLE.sub(r"\1", text))


def _docstring_parameters(function):
    """Map parameter names to their description in a numpydoc docstring, as plain text."""
    parsed = docstring_parser.parse(inspect.getdoc(function) or "",
                                    style=docstring_parser.DocstringStyle.NUMPYDOC)
    out = {}
    for param in parsed.params:
        for name in param.arg_name.split(","):
            out[name.strip()] = plain_text(" ".join((param.description or "").split()))
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
    # PyTensor is imported here, not with this module, so that a program can
    # answer a PyTensor that fails to import (see compiledir_fault) in one line.
    from deeplearning_tutorials.flags import FLOATX, MODES

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


def interrupted_message(checkpoint):
    """The line an interrupted run ends with: where to resume from, if anywhere."""
    if checkpoint is None:
        return "interrupted"
    if os.path.isfile(checkpoint):
        return (
            f"interrupted; the checkpoint {checkpoint} holds the last finished epoch: "
            f"continue with --checkpoint {checkpoint} --resume"
        )
    return f"interrupted before the first checkpoint was written to {checkpoint}; nothing to resume"


#: errors of a folder that cannot be written
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}


def compiledir_fault(exc):
    """A one-line message when ``exc`` comes from PyTensor's compile directory, else None.

    Recognised: an unwritable or full compile directory met while compiling
    (an ``OSError`` for a path inside ``pytensor.config.compiledir`` or
    ``base_compiledir``, which holds Numba's cache, whatever exception PyTensor
    raises in its place), and PyTensor's own refusal of its ``compiledir`` flag
    when it is imported.
    """
    for e in training.exception_chain(exc):
        if isinstance(e, ValueError) and "compiledir" in str(e) and "permission" in str(e).lower():
            return (
                f"PyTensor cannot use its compile directory ({e}); set "
                "PYTENSOR_FLAGS=compiledir=<a writable folder>"
            )
    folders = []
    for flag in ("base_compiledir", "compiledir"):
        try:
            import pytensor

            folders.append(os.path.realpath(str(getattr(pytensor.config, flag))))
        except (ImportError, ValueError, AttributeError):  # PyTensor refuses the folder
            pass
    for e in training.exception_chain(exc):
        if not (isinstance(e, OSError) and e.errno in _UNWRITABLE and e.filename):
            continue
        path = os.path.realpath(os.fspath(e.filename))
        for folder in folders:
            if path == folder or path.startswith(folder + os.sep):
                advice = "make room there, or set" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "set"
                return (
                    f"PyTensor cannot write its compile directory {folder} ({e.strerror}); "
                    f"{advice} PYTENSOR_FLAGS=compiledir=<a writable folder>"
                )
    return None


def _raised_in_c_backend(exc):
    """Whether ``exc`` was raised in PyTensor's C backend (``pytensor/link/c``)."""
    marker = os.sep + os.path.join("pytensor", "link", "c") + os.sep
    tb = exc.__traceback__
    while tb is not None:
        if marker in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def no_compiler_fault(exc):
    """A one-line message when ``exc`` is PyTensor lacking a C compiler, else None.

    PyTensor raises a bare ``NotImplementedError`` from its C backend when
    its ``cxx`` flag is empty (no compiler found) and a mode needs one.
    """
    if not isinstance(exc, NotImplementedError) or not _raised_in_c_backend(exc):
        return None
    import pytensor

    if pytensor.config.cxx:
        return None
    return (
        "PyTensor found no C compiler (its cxx flag is empty), which this mode needs: "
        "install g++, or choose --mode DLT_NUMBA"
    )


def jax_slice_fault(exc):
    """A one-line message when ``exc`` is PyTensor's own JAX mode refusing a minibatch slice.

    The tutorials select each minibatch with ``givens`` slicing the shared data
    by a symbolic index, which PyTensor's JAX mode cannot trace (its issue #312);
    the package's JAX mode rewrites those slices.
    """
    if isinstance(exc, IndexError) and "Slice entries must be static integers" in str(exc):
        return (
            "PyTensor's own JAX mode cannot slice the minibatches by a symbolic index "
            "(the tutorials' givens): choose --mode DLT_JAX, the package's JAX mode, which can"
        )
    return None


def memory_message(exc):
    """The one line for a run that ran out of memory."""
    detail = " ".join(str(exc).split())
    return (
        "out of memory" + (f" ({detail})" if detail else "")
        + "; choose smaller nkerns, n_hidden or batch_size, or use --subset"
    )


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
    checkpoint = args.get("checkpoint")
    try:
        # Before anything is read or compiled: the arguments, the output
        # files (writable, not the dataset, not in use by another run)...
        training.check_arguments(args)
        # ... which stay locked until the run ends.
        with training.output_locks(save_best=args.get("save_best"), checkpoint=checkpoint), \
                training.interrupt_guard():
            if n is not None:
                args["dataset"] = subset(args["dataset"], n)
            function(**args)
    except training.Diverged as exc:
        return fail(prog, exc, 1)
    except datasets.DatasetError as exc:
        return fail(prog, exc, 1)
    except training.ArgumentError as exc:
        return fail(prog, exc, 2)
    except training.OutputError as exc:
        return fail(prog, exc, 1)
    except MemoryError as exc:
        return fail(prog, memory_message(exc), 1)
    except KeyboardInterrupt:
        return fail(prog, interrupted_message(checkpoint), 130)
    except Exception as exc:
        # Only these are answered in one line; anything else is a bug to see whole.
        if training.interrupted(exc):
            return fail(prog, interrupted_message(checkpoint), 130)
        if any(isinstance(e, MemoryError) for e in training.exception_chain(exc)):
            return fail(prog, memory_message(exc), 1)
        message = compiledir_fault(exc) or no_compiler_fault(exc) or jax_slice_fault(exc)
        if message is None:
            raise
        return fail(prog, message, 1)
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
