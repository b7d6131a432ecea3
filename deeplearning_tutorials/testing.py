"""Helpers shared by the tests and the benchmarks.

:func:`lenet5_functions` builds LeNet5 exactly as
:func:`~deeplearning_tutorials.convolutional_mlp.evaluate_lenet5` does, from the
lesson's classes, and returns the compiled functions instead of training, so that
single training steps can be timed or compared with the original library's numbers.
"""

import numpy as np
import pytensor
import pytensor.tensor as pt

from deeplearning_tutorials.convolutional_mlp import lenet5_layers
from deeplearning_tutorials.logistic_sgd import load_data


def lenet5_functions(data, learning_rate=0.1, nkerns=(20, 50), batch_size=500, mode=None):
    """Build LeNet5 as ``evaluate_lenet5`` does; return its layers and compiled functions.

    Parameters
    ----------
    data : str or sequence
        Anything :func:`~deeplearning_tutorials.logistic_sgd.load_data` accepts.
    learning_rate, nkerns, batch_size
        As for ``evaluate_lenet5``.
    mode : str, optional
        The PyTensor mode to compile with (the global default when omitted).

    Returns
    -------
    layers : list
        ``[layer0, layer1, layer2, layer3]``.
    train_model, validate_model : pytensor.compile.function.types.Function
        Functions of a minibatch index, as in the tutorial.
    """
    rng = np.random.RandomState(23455)
    (train_set_x, train_set_y), (valid_set_x, valid_set_y), _ = load_data(data)
    index = pt.lscalar()
    x = pt.matrix("x")
    y = pt.ivector("y")
    layers = lenet5_layers(rng, x, batch_size, nkerns)
    layer0, layer1, layer2, layer3 = layers
    cost = layer3.negative_log_likelihood(y)
    params = layer3.params + layer2.params + layer1.params + layer0.params
    grads = pt.grad(cost, params)
    updates = [(p, p - learning_rate * g) for p, g in zip(params, grads)]
    sl = slice(index * batch_size, (index + 1) * batch_size)
    train_model = pytensor.function(
        [index], cost, updates=updates,
        givens={x: train_set_x[sl], y: train_set_y[sl]}, mode=mode,
    )
    validate_model = pytensor.function(
        [index], layer3.errors(y),
        givens={x: valid_set_x[sl], y: valid_set_y[sl]}, mode=mode,
    )
    return layers, train_model, validate_model


def small_split(arrays, n_train=1500, n_valid=500, n_test=500):
    """The first examples of each split: enough for the first three minibatches of 500."""
    (tx, ty), (vx, vy), (sx, sy) = arrays
    return [(tx[:n_train], ty[:n_train]), (vx[:n_valid], vy[:n_valid]), (sx[:n_test], sy[:n_test])]
