"""The original's own test suite (its ``code/test.py``), run on the port.

The original tested its tutorials by calling them with fewer epochs:
``sgd_optimization_mnist(n_epochs=10)``, ``test_mlp(n_epochs=1)`` and
``evaluate_lenet5(n_epochs=1, nkerns=[5, 5])``. Here the same three calls (plus
``dataset=``) run on every backend, in float64, and must print the same lines,
digit for digit: the validation and test errors below, which a faithful port of
the original (its integer ``fan_out`` included: 31 for ``nkerns=[5, 5]``, not
31.25) prints on real MNIST.
"""

import pytest

from deeplearning_tutorials import convolutional_mlp, logistic_sgd, mlp

LOGISTIC = [
    ("12.458333", "12.375000"), ("11.010417", "10.958333"), ("10.312500", "10.312500"),
    ("9.875000", "9.833333"), ("9.562500", "9.479167"), ("9.322917", "9.291667"),
    ("9.187500", "9.000000"), ("8.989583", "8.958333"), ("8.937500", "8.812500"),
    ("8.750000", "8.666667"),
]

EXPECTED = {
    "sgd_optimization_mnist": [
        line
        for epoch, (valid, test) in enumerate(LOGISTIC, start=1)
        for line in (
            f"epoch {epoch}, minibatch 83/83, validation error {valid} %",
            f"     epoch {epoch}, minibatch 83/83, test error of best model {test} %",
        )
    ] + [
        "Optimization complete with best validation score of 8.750000 %,"
        "with test performance 8.666667 %",
    ],
    "test_mlp": [
        "epoch 1, minibatch 2500/2500, validation error 9.620000 %",
        "     epoch 1, minibatch 2500/2500, test error of best model 10.090000 %",
        "Optimization complete. Best validation score of 9.620000 % obtained at iteration 2500, "
        "with test performance 10.090000 %",
    ],
    "evaluate_lenet5": [
        "training @ iter =  0",
        "epoch 1, minibatch 100/100, validation error 13.300000 %",
        "     epoch 1, minibatch 100/100, test error of best model 13.690000 %",
        "Optimization complete.",
        "Best validation score of 13.300000 % obtained at iteration 100, "
        "with test performance 13.690000 %",
    ],
}

CALLS = {
    "sgd_optimization_mnist": (logistic_sgd.sgd_optimization_mnist, {"n_epochs": 10}),
    "test_mlp": (mlp.test_mlp, {"n_epochs": 1}),
    "evaluate_lenet5": (convolutional_mlp.evaluate_lenet5, {"n_epochs": 1, "nkerns": [5, 5]}),
}


def _result_lines(out):
    """The lines that report errors (not the loading notes, nor the timing line)."""
    keep = ("epoch ", "     epoch ", "Optimization complete", "Best validation", "training @")
    return [line for line in out.splitlines() if line.startswith(keep)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["DLT_NUMBA", "DLT_CVM", "DLT_C", "DLT_JAX"])
@pytest.mark.parametrize("call", list(CALLS))
def test_the_originals_test_calls_print_the_originals_lines(call, mode, mnist_pkl, capsys,
                                                             tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # sgd_optimization_mnist saves its best model here
    function, kwargs = CALLS[call]
    function(dataset=str(mnist_pkl), mode=mode, floatX="float64", quiet=True, **kwargs)
    assert _result_lines(capsys.readouterr().out) == EXPECTED[call]
