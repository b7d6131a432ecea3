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

import os
import sys

from deeplearning_tutorials import cli, datasets, training

MODELS = ("logistic", "mlp", "lenet5")

# The lessons, and PyTensor with them, are imported when a prediction runs,
# so that main() can answer a PyTensor that fails to import in one line.


def _lenet5(x, arrays, batch_size):
    """LeNet5 as ``evaluate_lenet5`` builds it; returns its parameters and prediction."""
    import numpy as np

    from deeplearning_tutorials.convolutional_mlp import lenet5_layers

    # params were saved as layer3 + layer2 + layer1 + layer0, W then b
    nkerns = [arrays[6].shape[0], arrays[4].shape[0]]
    layer0, layer1, layer2, layer3 = lenet5_layers(
        np.random.RandomState(23455), x, batch_size, nkerns
    )
    params = layer3.params + layer2.params + layer1.params + layer0.params
    return params, layer3.y_pred


def _arrays(dataset):
    """The three (x, y) pairs of ``dataset``, read once (a path) or as given."""
    if isinstance(dataset, (str, os.PathLike)):
        print("... loading data")
        return datasets.load_arrays(datasets.locate(dataset))
    return dataset


def predict(model, params, dataset="mnist.pkl.gz", n=10, *, mode=None, floatX=None):
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
        How many test images to classify, at most the test set's size.
    mode, floatX : str, optional
        The PyTensor backend and float precision (see
        :func:`~deeplearning_tutorials.flags.with_flags`).

    Returns
    -------
    numpy.ndarray
        The ``n`` predicted labels.

    Raises
    ------
    ArgumentError
        For an unknown model, parameters that are not a tutorial's ``.npz``
        file or not this model's, or ``n`` larger than the test set, before
        anything is compiled.
    """
    from deeplearning_tutorials.flags import with_flags

    if model not in MODELS:
        raise training.ArgumentError(f"model must be one of {', '.join(MODELS)}, not {model!r}")
    training.check_arguments({"n": n, "dataset": dataset})
    # the parameters file is read before the data, which takes longer
    saved, _ = training.load_params(params)
    # read once, here, and checked against n (check_arguments refuses an n
    # larger than the test set) before anything is compiled
    arrays = _arrays(dataset)
    training.check_arguments({"n": n, "dataset": arrays})
    return with_flags(_predict)(model, params, saved, arrays, n, mode=mode, floatX=floatX)


def _predict(model, params, saved, data, n):
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    from deeplearning_tutorials.logistic_sgd import predict as predict_logistic
    from deeplearning_tutorials.mlp import MLP

    if model == "logistic":
        return predict_logistic(params, dataset=data, n=n)
    x = pt.matrix("x")
    if model == "mlp":
        if len(saved) != 4:
            raise training.ArgumentError(f"{params} holds {len(saved)} parameters, an MLP has 4")
        classifier = MLP(
            rng=np.random.RandomState(1234), input=x, n_in=28 * 28,
            n_hidden=saved[0].shape[1], n_out=10,
        )
        model_params, y_pred = classifier.params, classifier.logRegressionLayer.y_pred
    else:
        if len(saved) != 8:
            raise training.ArgumentError(f"{params} holds {len(saved)} parameters, LeNet5 has 8")
        # the convolutional layers are built for a fixed batch: the n images
        model_params, y_pred = _lenet5(x, saved, n)
    training.load_into(params, model_params)

    test_set_x = np.asarray(data[2][0], dtype=pytensor.config.floatX)
    predict_model = pytensor.function(inputs=[x], outputs=y_pred)
    predicted_values = predict_model(test_set_x[:n])
    print("Predicted values for the first %d examples in test set:" % n)
    print(predicted_values)
    return predicted_values


def main(argv=None):
    """``python -m deeplearning_tutorials.predict``; returns the exit code."""
    prog = "python -m deeplearning_tutorials.predict"
    try:
        from deeplearning_tutorials.flags import FLOATX, MODES
    except ValueError as exc:  # PyTensor refused its configuration as it was imported
        message = cli.compiledir_fault(exc)
        if message is None:
            raise
        return cli.fail(prog, message, 1)
    parser = cli._Parser(
        prog=prog,
        description="Classify the first test images with a tutorial's saved parameters.",
    )
    parser.add_argument("--model", choices=MODELS, required=True, help="which tutorial's model")
    parser.add_argument("--params", default="best_model.npz", metavar="PATH",
                        help="the saved parameters (default: best_model.npz)")
    parser.add_argument("--dataset", default="mnist.pkl.gz",
                        help="the MNIST dataset (default: mnist.pkl.gz)")
    parser.add_argument("-n", type=int, default=10,
                        help="how many test images, at most the test set's size (default: 10)")
    parser.add_argument("--mode", type=str.upper, choices=MODES,
                        help="the mode to compile in (default: DLT_NUMBA)")
    parser.add_argument("--floatX", choices=FLOATX,
                        help="float precision (default: PyTensor's floatX, float64 unless "
                             "PYTENSOR_FLAGS says otherwise); the one the model was trained in")
    args = vars(parser.parse_args(argv))
    try:
        predict(**args)
    except datasets.DatasetError as exc:
        return cli.fail(parser.prog, exc, 1)
    except training.ArgumentError as exc:
        return cli.fail(parser.prog, exc, 2)
    except MemoryError as exc:
        return cli.fail(parser.prog, cli.memory_message(exc), 1)
    except KeyboardInterrupt:
        return cli.fail(parser.prog, "interrupted", 130)
    except Exception as exc:
        # Only these are answered in one line; anything else is a bug to see whole.
        if training.interrupted(exc):
            return cli.fail(parser.prog, "interrupted", 130)
        message = cli.compiledir_fault(exc) or cli.no_compiler_fault(exc)
        if message is None:
            raise
        return cli.fail(parser.prog, message, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
