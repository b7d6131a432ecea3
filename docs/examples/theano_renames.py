"""Rename the imports of a Theano program to PyTensor and deeplearning_tutorials.

    python theano_renames.py program.py ...

rewrites each file in place. Only import lines change, and each changed line
keeps the original in a ``# was:`` comment. An import of a module with no
counterpart here (``theano.sandbox.cuda``, ``theano.gpuarray``, ...) is left
as it is, so that the program stops there and shows what is left to do.
"""
import re
import sys

# The Theano module -> the module that replaces it.
MODULES = {
    "theano": "pytensor",
    "theano.tensor": "pytensor.tensor",
    "theano.gradient": "pytensor.gradient",
    "theano.ifelse": "pytensor.ifelse",
    "theano.printing": "pytensor.printing",
    "theano.tensor.nnet": "deeplearning_tutorials.nnet",
    "theano.tensor.nnet.abstract_conv": "deeplearning_tutorials.nnet.abstract_conv",
    "theano.tensor.nnet.conv": "deeplearning_tutorials.nnet.conv",
    "theano.tensor.nnet.nnet": "deeplearning_tutorials.nnet.nnet",
    "theano.tensor.signal": "deeplearning_tutorials.signal",
    "theano.tensor.signal.pool": "deeplearning_tutorials.signal.pool",
    "theano.tensor.signal.downsample": "deeplearning_tutorials.signal.downsample",
    "theano.tensor.shared_randomstreams": "deeplearning_tutorials.shared_randomstreams",
    "theano.sandbox.rng_mrg": "deeplearning_tutorials.rng_mrg",
    # the tutorials' own modules, which their programs import by these names
    "logistic_sgd": "deeplearning_tutorials.logistic_sgd",
    "mlp": "deeplearning_tutorials.mlp",
    "convolutional_mlp": "deeplearning_tutorials.convolutional_mlp",
}

FROM = re.compile(r"(?P<indent>\s*)from (?P<module>[\w.]+) import (?P<names>.*?)\s*")
IMPORT = re.compile(r"(?P<indent>\s*)import (?P<module>[\w.]+)(?: as (?P<alias>\w+))?\s*")


def rename(line):
    """``line`` with its module renamed and the original in a comment; other lines unchanged."""
    new = None
    if m := FROM.fullmatch(line):
        if m["module"] in MODULES:
            new = f"from {MODULES[m['module']]} import {m['names']}"
    elif m := IMPORT.fullmatch(line):
        if m["module"] == "theano" and m["alias"] is None:
            new = "import pytensor as theano"  # the program goes on writing theano.function
        elif m["module"] in MODULES and m["alias"] is not None:
            new = f"import {MODULES[m['module']]} as {m['alias']}"
    if new is None:
        return line
    return f"{m['indent']}{new}  # was: {line.strip()}\n"


def main(paths):
    for path in paths:
        with open(path) as f:
            lines = f.readlines()
        with open(path, "w") as f:
            f.writelines(rename(line) for line in lines)


if __name__ == "__main__":
    main(sys.argv[1:])
