"""
This tutorial introduces the multilayer perceptron using PyTensor.

A multilayer perceptron is a logistic regressor where instead of feeding the
input to the logistic regression you insert an intermediate layer, called the
hidden layer, that has a nonlinear activation function (usually tanh or
sigmoid). One can use many such hidden layers making the architecture deep.
The tutorial will also tackle the problem of MNIST digit classification.

.. math::

    f(x) = G( b^{(2)} + W^{(2)}( s( b^{(1)} + W^{(1)} x))),

References:

    - textbooks: "Pattern Recognition and Machine Learning" -
                 Christopher M. Bishop, section 5
"""

import os
import sys
import timeit

import numpy as np
import pytensor
import pytensor.tensor as pt

from deeplearning_tutorials import cli, flags, training
from deeplearning_tutorials.flags import with_flags
from deeplearning_tutorials.logistic_sgd import LogisticRegression, load_data


class HiddenLayer:
    def __init__(self, rng, input, n_in, n_out, W=None, b=None, activation=pt.tanh):
        """
        Typical hidden layer of a MLP: units are fully-connected and have
        sigmoidal activation function. Weight matrix W is of shape (n_in, n_out)
        and the bias vector b is of shape (n_out,).

        NOTE : The nonlinearity used here is tanh

        Hidden unit activation is given by: tanh(dot(input,W) + b)

        Parameters
        ----------
        rng : numpy.random.RandomState
            A random number generator used to initialize weights.
        input : pytensor.tensor.TensorVariable
            A symbolic tensor of shape ``(n_examples, n_in)``.
        n_in : int
            Dimensionality of input.
        n_out : int
            Number of hidden units.
        W, b : pytensor shared variables, optional
            Existing parameters to use instead of fresh ones.
        activation : callable or None
            Non linearity to be applied in the hidden layer.
        """
        self.input = input

        # `W` is initialized with `W_values` which is uniformly sampled
        # from -sqrt(6./(n_in+n_hidden)) to sqrt(6./(n_in+n_hidden))
        # for tanh activation function.
        # The output of uniform is converted using asarray to dtype
        # pytensor.config.floatX so that the code is runnable on GPU.
        # Note: optimal initialization of weights is dependent on the
        #       activation function used (among other things).
        #       For example, results presented in [Xavier10] suggest that you
        #       should use 4 times larger initial weights for sigmoid
        #       compared to tanh.
        #       We have no info for other functions, so we use the same as
        #       tanh.
        if W is None:
            W_values = np.asarray(
                rng.uniform(
                    low=-np.sqrt(6.0 / (n_in + n_out)),
                    high=np.sqrt(6.0 / (n_in + n_out)),
                    size=(n_in, n_out),
                ),
                dtype=pytensor.config.floatX,
            )
            if activation == pt.sigmoid:
                W_values *= 4

            W = pytensor.shared(value=W_values, name="W", borrow=True)

        if b is None:
            b_values = np.zeros((n_out,), dtype=pytensor.config.floatX)
            b = pytensor.shared(value=b_values, name="b", borrow=True)

        self.W = W
        self.b = b

        lin_output = pt.dot(input, self.W) + self.b
        self.output = lin_output if activation is None else activation(lin_output)
        # parameters of the model
        self.params = [self.W, self.b]


class MLP:
    """Multi-Layer Perceptron Class

    A multilayer perceptron is a feedforward artificial neural network model
    that has one layer or more of hidden units and nonlinear activations.
    Intermediate layers usually have as activation function tanh or the
    sigmoid function (defined here by a ``HiddenLayer`` class) while the
    top layer is a softmax layer (defined here by a ``LogisticRegression``
    class).
    """

    def __init__(self, rng, input, n_in, n_hidden, n_out):
        """Initialize the parameters for the multilayer perceptron

        Parameters
        ----------
        rng : numpy.random.RandomState
            A random number generator used to initialize weights.
        input : pytensor.tensor.TensorVariable
            Symbolic variable that describes the input of the architecture
            (one minibatch), of shape ``(n_examples, n_in)``.
        n_in : int
            Number of input units, the dimension of the space in which the
            datapoints lie.
        n_hidden : int
            Number of hidden units.
        n_out : int
            Number of output units, the dimension of the space in which the
            labels lie.
        """
        # Since we are dealing with a one hidden layer MLP, this will translate
        # into a HiddenLayer with a tanh activation function connected to the
        # LogisticRegression layer; the activation function can be replaced by
        # sigmoid or any other nonlinear function
        self.hiddenLayer = HiddenLayer(
            rng=rng, input=input, n_in=n_in, n_out=n_hidden, activation=pt.tanh
        )

        # The logistic regression layer gets as input the hidden units
        # of the hidden layer
        self.logRegressionLayer = LogisticRegression(
            input=self.hiddenLayer.output, n_in=n_hidden, n_out=n_out
        )

        # L1 norm ; one regularization option is to enforce L1 norm to
        # be small
        self.L1 = abs(self.hiddenLayer.W).sum() + abs(self.logRegressionLayer.W).sum()

        # square of L2 norm ; one regularization option is to enforce
        # square of L2 norm to be small
        self.L2_sqr = (self.hiddenLayer.W**2).sum() + (self.logRegressionLayer.W**2).sum()

        # negative log likelihood of the MLP is given by the negative
        # log likelihood of the output of the model, computed in the
        # logistic regression layer
        self.negative_log_likelihood = self.logRegressionLayer.negative_log_likelihood
        # same holds for the function computing the number of errors
        self.errors = self.logRegressionLayer.errors

        # the parameters of the model are the parameters of the two layer it is
        # made out of
        self.params = self.hiddenLayer.params + self.logRegressionLayer.params

        # keep track of model input
        self.input = input


@with_flags
def test_mlp(
    learning_rate=0.01,
    L1_reg=0.00,
    L2_reg=0.0001,
    n_epochs=1000,
    dataset="mnist.pkl.gz",
    batch_size=20,
    n_hidden=500,
    *,
    save_best=None,
    checkpoint=None,
    resume=False,
    quiet=False,
):
    """
    Demonstrate stochastic gradient descent optimization for a multilayer
    perceptron

    This is demonstrated on MNIST.

    Parameters
    ----------
    learning_rate : float
        Learning rate used (factor for the stochastic gradient).
    L1_reg : float
        L1-norm's weight when added to the cost (see regularization).
    L2_reg : float
        L2-norm's weight when added to the cost (see regularization).
    n_epochs : int
        Maximal number of epochs to run the optimizer.
    dataset : str
        The MNIST dataset (see :func:`~deeplearning_tutorials.logistic_sgd.load_data`).
    batch_size : int
        Number of examples per minibatch.
    n_hidden : int
        Number of hidden units.
    save_best : str or None
        Where to save the best model's parameters (``.npz``) at each new
        best; None (``none`` on the command line; the default, as in the original) saves nothing.
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

    datasets = load_data(dataset)

    train_set_x, train_set_y = datasets[0]
    valid_set_x, valid_set_y = datasets[1]
    test_set_x, test_set_y = datasets[2]

    # compute number of minibatches for training, validation and testing
    n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
    n_valid_batches = valid_set_x.get_value(borrow=True).shape[0] // batch_size
    n_test_batches = test_set_x.get_value(borrow=True).shape[0] // batch_size
    training.check_batches(batch_size, train_set_x, valid_set_x, test_set_x)

    ######################
    # BUILD ACTUAL MODEL #
    ######################
    print("... building the model")

    # allocate symbolic variables for the data
    index = pt.lscalar()  # index to a [mini]batch
    x = pt.matrix("x")  # the data is presented as rasterized images
    y = pt.ivector("y")  # the labels are presented as 1D vector of
    # [int] labels

    rng = np.random.RandomState(1234)

    # construct the MLP class
    classifier = MLP(rng=rng, input=x, n_in=28 * 28, n_hidden=n_hidden, n_out=10)

    # start-snippet-1
    # the cost we minimize during training is the negative log likelihood of
    # the model plus the regularization terms (L1 and L2); cost is expressed
    # here symbolically
    cost = (
        classifier.negative_log_likelihood(y)
        + L1_reg * classifier.L1
        + L2_reg * classifier.L2_sqr
    )
    # end-snippet-1

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

    # start-snippet-2
    # compute the gradient of cost with respect to theta (stored in params)
    # the resulting gradients will be stored in a list gparams
    gparams = [pt.grad(cost, param) for param in classifier.params]

    # specify how to update the parameters of the model as a list of
    # (variable, update expression) pairs

    # given two lists of the same length, A = [a1, a2, a3, a4] and
    # B = [b1, b2, b3, b4], zip generates a list C of same size, where each
    # element is a pair formed from the two lists :
    #    C = [(a1, b1), (a2, b2), (a3, b3), (a4, b4)]
    updates = [
        (param, param - learning_rate * gparam)
        for param, gparam in zip(classifier.params, gparams)
    ]
    # end-snippet-2

    # compiling a PyTensor function `train_model` that returns the cost, but
    # in the same time updates the parameter of the model based on the rules
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

    ###############
    # TRAIN MODEL #
    ###############
    print("... training")
    start_time = timeit.default_timer()
    state = training.patience_loop(
        train_model,
        validate_model,
        test_model,
        n_train_batches,
        n_valid_batches,
        n_test_batches,
        n_epochs=n_epochs,
        patience=10000,  # look as this many examples regardless
        patience_increase=2,  # wait this much longer when a new best is found
        improvement_threshold=0.995,  # a relative improvement of this much is
        # considered significant
        events=training.PrintedLines(),
        # Port note: what the original lacked: the best parameters kept in
        # an .npz file, checkpoints every epoch, a stop on a cost that is no
        # longer finite.
        params=classifier.params,
        save_best=save_best,
        checkpoint=checkpoint,
        resume=resume,
        quiet=quiet,
        settings=settings,
    )
    end_time = timeit.default_timer()

    print(
        (
            "Optimization complete. Best validation score of %f %% "
            "obtained at iteration %i, with test performance %f %%"
        )
        % (state.best_validation_loss * 100.0, state.best_iter + 1, state.test_score * 100.0)
    )
    print(
        "The code for file "
        + os.path.split(__file__)[1]
        + " ran for %.2fm" % ((end_time - start_time) / 60.0),
        file=sys.stderr,
    )
    return training.results(
        state, mode=flags.mode_name(), floatX=pytensor.config.floatX, save_best=save_best
    )


if __name__ == "__main__":
    sys.exit(cli.main(test_mlp))
