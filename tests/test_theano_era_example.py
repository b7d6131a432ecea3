"""docs/examples/theano_era_convnet.py: a Theano 1.0 program that runs once its imports are renamed.

* it trains on real MNIST: one line per epoch in the documented format, a final
  line, a loss that goes down and errors below chance;
* its import lines are what docs/examples/theano_renames.py (the rename script
  that docs/theano.rst shows) makes of the Theano lines kept in their ``# was:``
  comments, and every module that script renames to is importable and named in
  the docs' table, so that the table, the script and the example cannot drift apart.
"""

import importlib
import importlib.util
import re
from pathlib import Path

import pytensor
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "docs" / "examples"
EXAMPLE = EXAMPLES / "theano_era_convnet.py"
PAGE = REPO / "docs" / "theano.rst"

EPOCH = re.compile(r"epoch (\d+), training loss (\d+\.\d{6}), validation error (\d+\.\d{2}) %")
FINAL = re.compile(r"trained on (\d+) images for (\d+) epochs, test error (\d+\.\d{2}) %")


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


renames = load(EXAMPLES / "theano_renames.py")


@pytest.mark.slow
def test_example_trains_on_mnist(mnist_pkl, capsys):
    example = load(EXAMPLE)
    # PyTensor's default mode (Numba), as the docs run it
    with pytensor.config.change_flags(floatX="float64"):
        example.main(["--dataset", str(mnist_pkl), "--n-train", "200", "--n-epochs", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "... loading data"
    epochs = [EPOCH.fullmatch(line) for line in lines[1:-1]]
    assert len(epochs) == 2 and all(epochs), lines
    assert [int(m[1]) for m in epochs] == [1, 2]
    final = FINAL.fullmatch(lines[-1])
    assert final and final[1] == "200" and final[2] == "2", lines
    losses = [float(m[2]) for m in epochs]
    assert losses[1] < losses[0], lines
    # chance is 90 % for ten classes
    assert float(epochs[1][3]) < 80 and float(final[3]) < 80, lines


def test_renamed_imports_are_the_docs_renames():
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    imports = [line for line in lines if re.match(r"(import|from) \w", line)]
    renamed = [line for line in imports if "  # was: " in line]
    assert len(renamed) == 6
    for line in renamed:
        original = line.split("  # was: ", 1)[1]
        assert re.match(r"(import theano|from theano|from logistic_sgd)\b", original), line
        assert renames.rename(original) == line
    others = [line for line in imports if line not in renamed]
    assert all(line in ("import argparse\n", "import numpy\n") or "  # added: " in line
               for line in others), others
    # the rename leaves its own output, and lines that are not Theano imports, alone
    for line in lines:
        if line not in renamed:
            assert renames.rename(line) == line


def test_docs_show_the_renames_and_the_example():
    page = PAGE.read_text(encoding="utf-8")
    assert ".. literalinclude:: examples/theano_renames.py" in page
    assert ".. literalinclude:: examples/theano_era_convnet.py" in page
    for theano_module, module in renames.MODULES.items():
        assert f"``{theano_module}" in page or f"``import {theano_module}``" in page, theano_module
        assert module in page, module
        importlib.import_module(module)
    assert renames.rename("from theano.sandbox.cuda import dnn\n") == (
        "from theano.sandbox.cuda import dnn\n"
    )
    assert renames.rename("    from theano.tensor.nnet import (conv2d,\n") == (
        "    from deeplearning_tutorials.nnet import (conv2d,"
        "  # was: from theano.tensor.nnet import (conv2d,\n"
    )
