"""Classify the first test images with a model's saved parameters.

``python -m deeplearning_tutorials.predict --model lenet5 --params best.npz -n 10``
rebuilds the model a tutorial trained (``logistic``, ``mlp`` or ``lenet5``),
loads the parameters it saved (its ``save_best`` argument), and prints the
predicted labels of the first ``n`` test images, as the original
``logistic_sgd.predict`` did for logistic regression.  The sizes the model
was trained with (``n_hidden``, ``nkerns``) are read from the saved arrays'
shapes.

Like :mod:`~deeplearning_tutorials.sweep`, this module stands above the
lessons: it imports their layers.
"""

import sys

import numpy as np
import pytensor
import pytensor.tensor as pt

from deeplearning_tutorials import cli, datasets, training
from deeplearning_tutorials.convolutional_mlp import lenet5_layers
from deeplearning_tutorials.flags import FLOATX, MODES, with_flags
from deeplearning_tutorials.logistic_sgd import load_data
from deeplearning_tutorials.logistic_sgd import predict as predict_logistic
from deeplearning_tutorials.mlp import MLP

MODELS = ("logistic", "mlp", "lenet5")


def _lenet5(x, arrays, batch_size):
    """LeNet5 as ``evaluate_lenet5`` builds it; returns its parameters and prediction."""
    # params were saved as layer3 + layer2 + layer1 + layer0, W then b
    nkerns = [arrays[6].shape[0], arrays[4].shape[0]]
    layer0, layer1, layer2, layer3 = lenet5_layers(
        np.random.RandomState(23455), x, batch_size, nkerns
    )
    params = layer3.params + layer2.params + layer1.params + layer0.params
    return params, layer3.y_pred


@with_flags
def predict(model, params, dataset="mnist.pkl.gz", n=10):
    """Print and return the predicted labels of the first ``n`` test images.

    Parameters
    ----------
    model : {'logistic', 'mlp', 'lenet5'}
        Which tutorial's model the parameters belong to.
    params : str
        The ``.npz`` file the tutorial saved (its ``save_best`` argument).
    dataset : str or sequence
        The MNIST dataset (see :func:`~deeplearning_tutorials.logistic_sgd.load_data`).
    n : int
        How many test images to classify.

    Returns
    -------
    numpy.ndarray
        The ``n`` predicted labels.
    """
    if model not in MODELS:
        raise training.ArgumentError(f"model must be one of {', '.join(MODELS)}, not {model!r}")
    if model == "logistic":
        return predict_logistic(params, dataset=dataset, n=n)
    training.check_arguments({"n": n, "dataset": dataset})
    arrays, _ = training.load_params(params)
    x = pt.matrix("x")
    if model == "mlp":
        if len(arrays) != 4:
            raise training.ArgumentError(f"{params} holds {len(arrays)} parameters, an MLP has 4")
        classifier = MLP(
            rng=np.random.RandomState(1234), input=x, n_in=28 * 28,
            n_hidden=arrays[0].shape[1], n_out=10,
        )
        model_params, y_pred = classifier.params, classifier.logRegressionLayer.y_pred
    else:
        if len(arrays) != 8:
            raise training.ArgumentError(f"{params} holds {len(arrays)} parameters, LeNet5 has 8")
        # the convolutional layers are built for a fixed batch: the n images
        model_params, y_pred = _lenet5(x, arrays, n)
    training.load_into(params, model_params)

    test_set_x, test_set_y = load_data(dataset)[2]
    test_set_x = test_set_x.get_value()
    training.check_batches(n, test_set_x, test_set_x, test_set_x)

    predict_model = pytensor.function(inputs=[x], outputs=y_pred)
    predicted_values = predict_model(test_set_x[:n])
    print("Predicted values for the first %d examples in test set:" % n)
    print(predicted_values)
    return predicted_values


def main(argv=None):
    """``python -m deeplearning_tutorials.predict``; returns the exit code."""
    parser = cli._Parser(
        prog="python -m deeplearning_tutorials.predict",
        description="Classify the first test images with a tutorial's saved parameters.",
    )
    parser.add_argument("--model", choices=MODELS, required=True, help="which tutorial's model")
    parser.add_argument("--params", default="best_model.npz", metavar="PATH",
                        help="the saved parameters (default: best_model.npz)")
    parser.add_argument("--dataset", default="mnist.pkl.gz",
                        help="the MNIST dataset (default: mnist.pkl.gz)")
    parser.add_argument("-n", type=int, default=10, help="how many test images (default: 10)")
    parser.add_argument("--mode", type=str.upper, choices=MODES)
    parser.add_argument("--floatX", choices=FLOATX)
    args = vars(parser.parse_args(argv))
    try:
        predict(**args)
    except datasets.DatasetError as exc:
        return cli.fail(parser.prog, exc, 1)
    except training.ArgumentError as exc:
        return cli.fail(parser.prog, exc, 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
