"""
This tutorial introduces logistic regression using PyTensor and stochastic
gradient descent.

Logistic regression is a probabilistic, linear classifier. It is parametrized
by a weight matrix :math:`W` and a bias vector :math:`b`. Classification is
done by projecting data points onto a set of hyperplanes, the distance to
which is used to determine a class membership probability.

Mathematically, this can be written as:

.. math::
  P(Y=i|x, W,b) &= softmax_i(W x + b) \\\\
                &= \\frac {e^{W_i x + b_i}} {\\sum_j e^{W_j x + b_j}}

The output of the model or prediction is then done by taking the argmax of
the vector whose i'th element is P(Y=i|x).

.. math::

  y_{pred} = argmax_i P(Y=i|x,W,b)

References:

    - textbooks: "Pattern Recognition and Machine Learning" -
                 Christopher M. Bishop, section 4.3.2
"""

import os
import sys
import timeit

import numpy as np
import pytensor
import pytensor.tensor as pt

from deeplearning_tutorials import cli, datasets, flags, training
from deeplearning_tutorials.flags import with_flags


class LogisticRegression:
    """Multi-class Logistic Regression Class

    The logistic regression is fully described by a weight matrix :math:`W`
    and bias vector :math:`b`. Classification is done by projecting data
    points onto a set of hyperplanes, the distance to which is used to
    determine a class membership probability.
    """

    def __init__(self, input, n_in, n_out):
        """Initialize the parameters of the logistic regression

        Parameters
        ----------
        input : pytensor.tensor.TensorVariable
            Symbolic matrix of shape ``(n_examples, n_in)``: one minibatch.
        n_in : int
            Number of input units, the dimension of the space in which the
            datapoints lie.
        n_out : int
            Number of output units, the dimension of the space in which the
            labels lie.
        """
        # initialize with 0 the weights W as a matrix of shape (n_in, n_out)
        self.W = pytensor.shared(
            value=np.zeros((n_in, n_out), dtype=pytensor.config.floatX),
            name="W",
            borrow=True,
        )
        # initialize the biases b as a vector of n_out 0s
        self.b = pytensor.shared(
            value=np.zeros((n_out,), dtype=pytensor.config.floatX),
            name="b",
            borrow=True,
        )

        # symbolic expression for computing the matrix of class-membership
        # probabilities, of shape (n_examples, n_out). Where:
        # W is a matrix where column-k represent the separation hyperplane
        # for class-k; x is a matrix where row-j represents input training
        # sample-j; b is a vector where element-k represent the free
        # parameter of hyperplane-k.
        # Port note: Theano's ``T.nnet.softmax`` is ``pt.special.softmax``.
        self.p_y_given_x = pt.special.softmax(pt.dot(input, self.W) + self.b, axis=-1)

        # symbolic description of how to compute prediction as class whose
        # probability is maximal
        self.y_pred = pt.argmax(self.p_y_given_x, axis=1)

        # parameters of the model
        self.params = [self.W, self.b]

        # keep track of model input
        self.input = input

    def negative_log_likelihood(self, y):
        """Return the mean of the negative log-likelihood of the prediction
        of this model under a given target distribution.

        .. math::

            \\frac{1}{|\\mathcal{D}|} \\mathcal{L} (\\theta=\\{W,b\\}, \\mathcal{D}) =
            \\frac{1}{|\\mathcal{D}|} \\sum_{i=0}^{|\\mathcal{D}|}
                \\log(P(Y=y^{(i)}|x^{(i)}, W,b))

        Parameters
        ----------
        y : pytensor.tensor.TensorVariable
            Integer vector of shape ``(n_examples,)`` giving the correct label
            of each example.

        Notes
        -----
        We use the mean instead of the sum so that the learning rate is less
        dependent on the batch size.
        """
        # y.shape[0] is (symbolically) the number of rows in y, i.e. the
        # number of examples (call it n) in the minibatch.
        # pt.arange(y.shape[0]) is the symbolic vector [0, 1, ..., n-1];
        # pt.log(self.p_y_given_x) is the matrix of log-probabilities (call
        # it LP), one row per example and one column per class;
        # LP[pt.arange(y.shape[0]), y] is the vector
        # [LP[0, y[0]], LP[1, y[1]], ..., LP[n-1, y[n-1]]], and its mean is
        # the mean log-likelihood across the minibatch.
        return -pt.mean(pt.log(self.p_y_given_x)[pt.arange(y.shape[0]), y])

    def errors(self, y):
        """Return a float representing the number of errors in the minibatch
        over the total number of examples of the minibatch; zero-one loss
        over the size of the minibatch.

        Parameters
        ----------
        y : pytensor.tensor.TensorVariable
            Integer vector of shape ``(n_examples,)``: the correct labels.
        """
        # check if y has same dimension of y_pred
        if y.ndim != self.y_pred.ndim:
            raise TypeError(
                "y should have the same shape as self.y_pred",
                ("y", y.type, "y_pred", self.y_pred.type),
            )
        # check if y is of the correct datatype
        if y.dtype.startswith("int"):
            # the pt.neq operator returns a vector of 0s and 1s, where 1
            # represents a mistake in prediction
            return pt.mean(pt.neq(self.y_pred, y))
        else:
            raise NotImplementedError()


def load_data(dataset):
    """Loads the dataset into shared variables.

    Parameters
    ----------
    dataset : str or path-like or sequence
        ``'mnist.pkl.gz'`` (the original's file), a path to it, a folder of
        the four MNIST IDX files, or -- a port extension for tests and
        subsets -- the three ``(x, y)`` pairs of numpy arrays themselves.
        Names are looked up as :func:`deeplearning_tutorials.datasets.locate`
        explains, downloading MNIST when it is nowhere to be found.

    Returns
    -------
    list of (shared_x, y)
        ``[(train_set_x, train_set_y), (valid_set_x, valid_set_y),
        (test_set_x, test_set_y)]``: images as floatX shared matrices of
        shape ``(n_examples, 784)`` and labels as int32 symbolic vectors.
    """
    #############
    # LOAD DATA #
    #############
    if isinstance(dataset, (str, os.PathLike)):
        print("... loading data")
        train_set, valid_set, test_set = datasets.load_arrays(datasets.locate(dataset))
    else:
        train_set, valid_set, test_set = dataset
    # train_set, valid_set, test_set format: tuple(input, target)
    # input is a numpy.ndarray of 2 dimensions (a matrix) whose rows
    # correspond to an example. target is a numpy.ndarray of 1 dimension
    # (vector) that has the same length as the number of rows in the input.
    # It gives the target to the example with the same index in the input.

    def shared_dataset(data_xy, borrow=True):
        """Function that loads the dataset into shared variables

        The reason we store our dataset in shared variables is to allow
        PyTensor to copy it into the GPU memory (when code is run on GPU).
        Since copying data into the GPU is slow, copying a minibatch every time
        is needed (the default behaviour if the data is not in a shared
        variable) would lead to a large decrease in performance.
        """
        data_x, data_y = data_xy
        shared_x = pytensor.shared(
            np.asarray(data_x, dtype=pytensor.config.floatX), borrow=borrow
        )
        shared_y = pytensor.shared(
            np.asarray(data_y, dtype=pytensor.config.floatX), borrow=borrow
        )
        # When storing data on the GPU it has to be stored as floats
        # therefore we will store the labels as ``floatX`` as well
        # (``shared_y`` does exactly that). But during our computations
        # we need them as ints (we use labels as index, and if they are
        # floats it doesn't make sense) therefore instead of returning
        # ``shared_y`` we will have to cast it to int. This little hack
        # lets us get around this issue
        return shared_x, pt.cast(shared_y, "int32")

    test_set_x, test_set_y = shared_dataset(test_set)
    valid_set_x, valid_set_y = shared_dataset(valid_set)
    train_set_x, train_set_y = shared_dataset(train_set)

    rval = [
        (train_set_x, train_set_y),
        (valid_set_x, valid_set_y),
        (test_set_x, test_set_y),
    ]
    return rval


@with_flags
def sgd_optimization_mnist(
    learning_rate=0.13,
    n_epochs=1000,
    dataset="mnist.pkl.gz",
    batch_size=600,
    *,
    save_best="best_model.npz",
    checkpoint=None,
    resume=False,
    quiet=False,
):
    """Demonstrate stochastic gradient descent optimization of a log-linear
    model

    This is demonstrated on MNIST.

    Parameters
    ----------
    learning_rate : float
        Learning rate used (factor for the stochastic gradient).
    n_epochs : int
        Maximal number of epochs to run the optimizer.
    dataset : str
        The MNIST dataset (see :func:`load_data`).
    batch_size : int
        Number of examples per minibatch.
    save_best : str or None
        Where to save the best model's parameters (``.npz``) at each new
        best, as the original pickled it to ``best_model.pkl``; None
        (``none`` on the command line) saves nothing.
    checkpoint : str or None
        Where to keep a checkpoint, rewritten after every epoch.
    resume : bool
        Continue from ``checkpoint`` when it exists.
    quiet : bool
        No live progress line on an interactive terminal.

    Returns
    -------
    dict
        The run's results (see :func:`deeplearning_tutorials.training.results`).
    """
    # Port note: we refuse nonsense arguments before anything is compiled.
    settings = training.check_arguments(locals())

    datasets_ = load_data(dataset)

    train_set_x, train_set_y = datasets_[0]
    valid_set_x, valid_set_y = datasets_[1]
    test_set_x, test_set_y = datasets_[2]

    # compute number of minibatches for training, validation and testing
    n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
    n_valid_batches = valid_set_x.get_value(borrow=True).shape[0] // batch_size
    n_test_batches = test_set_x.get_value(borrow=True).shape[0] // batch_size
    training.check_batches(batch_size, train_set_x, valid_set_x, test_set_x)

    ######################
    # BUILD ACTUAL MODEL #
    ######################
    print("... building the model")

    # start-snippet-1
    # allocate symbolic variables for the data
    index = pt.lscalar()  # index to a [mini]batch

    # generate symbolic variables for input (x and y represent a
    # minibatch)
    x = pt.matrix("x")  # data, presented as rasterized images
    y = pt.ivector("y")  # labels, presented as 1D vector of [int] labels

    # construct the logistic regression class
    # Each MNIST image has size 28*28
    classifier = LogisticRegression(input=x, n_in=28 * 28, n_out=10)

    # the cost we minimize during training is the negative log likelihood of
    # the model in symbolic format
    cost = classifier.negative_log_likelihood(y)
    # end-snippet-1

    # start-snippet-2
    # compiling a PyTensor function that computes the mistakes that are made
    # by the model on a minibatch
    test_model = pytensor.function(
        inputs=[index],
        outputs=classifier.errors(y),
        givens={
            x: test_set_x[index * batch_size : (index + 1) * batch_size],
            y: test_set_y[index * batch_size : (index + 1) * batch_size],
        },
    )

    validate_model = pytensor.function(
        inputs=[index],
        outputs=classifier.errors(y),
        givens={
            x: valid_set_x[index * batch_size : (index + 1) * batch_size],
            y: valid_set_y[index * batch_size : (index + 1) * batch_size],
        },
    )

    # compute the gradient of cost with respect to theta = (W,b)
    g_W = pt.grad(cost=cost, wrt=classifier.W)
    g_b = pt.grad(cost=cost, wrt=classifier.b)

    # specify how to update the parameters of the model as a list of
    # (variable, update expression) pairs.
    updates = [
        (classifier.W, classifier.W - learning_rate * g_W),
        (classifier.b, classifier.b - learning_rate * g_b),
    ]

    # compiling a PyTensor function `train_model` that returns the cost, but in
    # the same time updates the parameter of the model based on the rules
    # defined in `updates`
    train_model = pytensor.function(
        inputs=[index],
        outputs=cost,
        updates=updates,
        givens={
            x: train_set_x[index * batch_size : (index + 1) * batch_size],
            y: train_set_y[index * batch_size : (index + 1) * batch_size],
        },
    )

    # end-snippet-2

    ###############
    # TRAIN MODEL #
    ###############
    print("... training the model")
    start_time = timeit.default_timer()
    state = training.patience_loop(
        train_model,
        validate_model,
        test_model,
        n_train_batches,
        n_valid_batches,
        n_test_batches,
        n_epochs=n_epochs,
        patience=5000,  # look as this many examples regardless
        patience_increase=2,  # wait this much longer when a new best is found
        improvement_threshold=0.995,  # a relative improvement of this much is
        # considered significant
        events=training.PrintedLines(),
        # Port note: the port keeps the best parameters in an .npz file
        # rather than a pickle, checkpoints every epoch and stops on a cost
        # that is no longer finite.
        params=classifier.params,
        save_best=save_best,
        checkpoint=checkpoint,
        resume=resume,
        quiet=quiet,
        settings=settings,
    )
    end_time = timeit.default_timer()

    print(
        "Optimization complete with best validation score of %f %%,"
        "with test performance %f %%"
        % (state.best_validation_loss * 100.0, state.test_score * 100.0)
    )
    print(
        "The code run for %d epochs, with %f epochs/sec"
        % (state.epoch, 1.0 * state.epoch / (end_time - start_time))
    )
    print(
        "The code for file "
        + os.path.split(__file__)[1]
        + " ran for %.1fs" % (end_time - start_time),
        file=sys.stderr,
    )
    return training.results(
        state, mode=flags.mode_name(), floatX=pytensor.config.floatX, save_best=save_best
    )


@with_flags
def predict(params="best_model.npz", dataset="mnist.pkl.gz", n=10):
    """
    An example of how to load a trained model and use it
    to predict labels.

    Parameters
    ----------
    params : str
        The parameters :func:`sgd_optimization_mnist` saved (``save_best``).
    dataset : str
        The MNIST dataset (see :func:`load_data`).
    n : int
        How many of the first test images to classify.

    Returns
    -------
    numpy.ndarray
        The ``n`` predicted labels.
    """
    training.check_arguments(locals())

    # Port note: the original unpickled the whole classifier; we rebuild it
    # and load its saved parameters, as pickles of code objects do not last.
    x = pt.matrix("x")
    classifier = LogisticRegression(input=x, n_in=28 * 28, n_out=10)
    training.load_into(params, classifier.params)

    # compile a predictor function
    predict_model = pytensor.function(inputs=[classifier.input], outputs=classifier.y_pred)

    # We can test it on some examples from test test
    datasets_ = load_data(dataset)
    test_set_x, test_set_y = datasets_[2]
    test_set_x = test_set_x.get_value()

    if n > test_set_x.shape[0]:
        raise training.ArgumentError(
            f"n is {n}, but the test set holds {test_set_x.shape[0]} images: choose a smaller n"
        )
    predicted_values = predict_model(test_set_x[:n])
    print("Predicted values for the first %d examples in test set:" % n)
    print(predicted_values)
    return predicted_values


if __name__ == "__main__":
    sys.exit(cli.main(sgd_optimization_mnist))
