"""This tutorial introduces the LeNet5 neural network architecture
using PyTensor.  LeNet5 is a convolutional neural network, good for
classifying images. This tutorial shows how to build the architecture,
and comes with all the hyper-parameters you need to reproduce the
paper's MNIST results.


This implementation simplifies the model in the following ways:

 - LeNetConvPool doesn't implement location-specific gain and bias parameters
 - LeNetConvPool doesn't implement pooling by average, it implements pooling
   by max.
 - Digit classification is implemented with a logistic regression rather than
   an RBF network
 - LeNet5 was not fully-connected convolutions at second layer

References:
 - Y. LeCun, L. Bottou, Y. Bengio and P. Haffner:
   Gradient-Based Learning Applied to Document
   Recognition, Proceedings of the IEEE, 86(11):2278-2324, November 1998.
   http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf
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
from deeplearning_tutorials.mlp import HiddenLayer

# Port note: Theano's ``theano.tensor.nnet.conv2d`` and
# ``theano.tensor.signal.pool.pool_2d`` no longer exist in PyTensor; this
# package provides them, with Theano's semantics, in ``nnet``.
from deeplearning_tutorials.nnet import conv2d, pool_2d


class LeNetConvPoolLayer:
    """Pool Layer of a convolutional network"""

    def __init__(self, rng, input, filter_shape, image_shape, poolsize=(2, 2)):
        """
        Allocate a LeNetConvPoolLayer with shared variable internal parameters.

        Parameters
        ----------
        rng : numpy.random.RandomState
            A random number generator used to initialize weights.
        input : pytensor.tensor.TensorVariable
            Symbolic image tensor, of shape ``image_shape``.
        filter_shape : tuple or list of length 4
            (number of filters, num input feature maps,
            filter height, filter width)
        image_shape : tuple or list of length 4
            (batch size, num input feature maps,
            image height, image width)
        poolsize : tuple or list of length 2
            The downsampling (pooling) factor (#rows, #cols).
        """
        # the number of input feature maps must agree between the images and
        # the filters: each filter spans all of them
        assert image_shape[1] == filter_shape[1]
        self.input = input

        # there are "num input feature maps * filter height * filter width"
        # inputs to each hidden unit
        fan_in = np.prod(filter_shape[1:])
        # each unit in the lower layer receives a gradient from:
        # "num output feature maps * filter height * filter width" /
        #   pooling size
        # Port note: the original ran on Python 2, where this ``/`` of two
        # integers floors (50 * 5 * 5 / 4 = 312 for the second layer, not
        # 312.5); its Python 3 edition writes ``//``, and so do we.
        fan_out = filter_shape[0] * np.prod(filter_shape[2:]) // np.prod(poolsize)
        # initialize weights with random weights
        W_bound = np.sqrt(6.0 / (fan_in + fan_out))
        self.W = pytensor.shared(
            np.asarray(
                rng.uniform(low=-W_bound, high=W_bound, size=filter_shape),
                dtype=pytensor.config.floatX,
            ),
            borrow=True,
        )

        # the bias is a 1D tensor -- one bias per output feature map
        b_values = np.zeros((filter_shape[0],), dtype=pytensor.config.floatX)
        self.b = pytensor.shared(value=b_values, borrow=True)

        # convolve input feature maps with filters
        conv_out = conv2d(
            input=input,
            filters=self.W,
            filter_shape=filter_shape,
            input_shape=image_shape,
        )

        # pool each feature map individually, using maxpooling
        pooled_out = pool_2d(input=conv_out, ws=poolsize, ignore_border=True)

        # add the bias term. Since the bias is a vector (1D array), we first
        # reshape it to a tensor of shape (1, n_filters, 1, 1). Each bias will
        # thus be broadcasted across mini-batches and feature map
        # width & height
        self.output = pt.tanh(pooled_out + self.b.dimshuffle("x", 0, "x", "x"))

        # store parameters of this layer
        self.params = [self.W, self.b]

        # keep track of model input
        self.input = input


def lenet5_layers(rng, x, batch_size, nkerns):
    """LeNet5's four layers on the rasterized images ``x``, as :func:`evaluate_lenet5` builds them.

    ``evaluate_lenet5`` spells the construction out, as the original does; this
    is the same construction for the code that needs the model without its
    training loop (:mod:`deeplearning_tutorials.predict` and the tests).

    Parameters
    ----------
    rng : numpy.random.RandomState
        Draws the initial weights, in the order layer0.W, layer1.W, layer2.W.
    x : pytensor.tensor.TensorVariable
        Matrix of shape ``(batch_size, 28 * 28)``.
    batch_size : int
        Number of images in ``x``.
    nkerns : sequence of two ints
        Number of kernels of the two convolutional layers.

    Returns
    -------
    list
        ``[layer0, layer1, layer2, layer3]``; their ``params`` concatenated as
        ``layer3 + layer2 + layer1 + layer0`` are the tutorial's ``params``.
    """
    layer0 = LeNetConvPoolLayer(
        rng,
        input=x.reshape((batch_size, 1, 28, 28)),
        image_shape=(batch_size, 1, 28, 28),
        filter_shape=(nkerns[0], 1, 5, 5),
        poolsize=(2, 2),
    )
    layer1 = LeNetConvPoolLayer(
        rng,
        input=layer0.output,
        image_shape=(batch_size, nkerns[0], 12, 12),
        filter_shape=(nkerns[1], nkerns[0], 5, 5),
        poolsize=(2, 2),
    )
    layer2 = HiddenLayer(
        rng, input=layer1.output.flatten(2), n_in=nkerns[1] * 4 * 4, n_out=500, activation=pt.tanh
    )
    layer3 = LogisticRegression(input=layer2.output, n_in=500, n_out=10)
    return [layer0, layer1, layer2, layer3]


@with_flags
def evaluate_lenet5(
    learning_rate=0.1,
    n_epochs=200,
    dataset="mnist.pkl.gz",
    nkerns=[20, 50],
    batch_size=500,
    *,
    save_best=None,
    checkpoint=None,
    resume=False,
    quiet=False,
):
    """Demonstrates lenet on MNIST dataset

    Parameters
    ----------
    learning_rate : float
        Learning rate used (factor for the stochastic gradient).
    n_epochs : int
        Maximal number of epochs to run the optimizer.
    dataset : str
        Path to the dataset used for training / testing (MNIST here).
    nkerns : list of int
        Number of kernels on each layer.
    batch_size : int
        Number of examples per minibatch.
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

    rng = np.random.RandomState(23455)

    datasets = load_data(dataset)

    train_set_x, train_set_y = datasets[0]
    valid_set_x, valid_set_y = datasets[1]
    test_set_x, test_set_y = datasets[2]

    # compute number of minibatches for training, validation and testing
    n_train_batches = train_set_x.get_value(borrow=True).shape[0]
    n_valid_batches = valid_set_x.get_value(borrow=True).shape[0]
    n_test_batches = test_set_x.get_value(borrow=True).shape[0]
    n_train_batches //= batch_size
    n_valid_batches //= batch_size
    n_test_batches //= batch_size
    training.check_batches(batch_size, train_set_x, valid_set_x, test_set_x)

    # allocate symbolic variables for the data
    index = pt.lscalar()  # index to a [mini]batch

    # start-snippet-1
    x = pt.matrix("x")  # the data is presented as rasterized images
    y = pt.ivector("y")  # the labels are presented as 1D vector of
    # [int] labels

    ######################
    # BUILD ACTUAL MODEL #
    ######################
    print("... building the model")

    # Reshape matrix of rasterized images of shape (batch_size, 28 * 28)
    # to a 4D tensor, compatible with our LeNetConvPoolLayer
    # (28, 28) is the size of MNIST images.
    layer0_input = x.reshape((batch_size, 1, 28, 28))

    # Construct the first convolutional pooling layer:
    # filtering reduces the image size to (28-5+1 , 28-5+1) = (24, 24)
    # maxpooling reduces this further to (24/2, 24/2) = (12, 12)
    # 4D output tensor is thus of shape (batch_size, nkerns[0], 12, 12)
    layer0 = LeNetConvPoolLayer(
        rng,
        input=layer0_input,
        image_shape=(batch_size, 1, 28, 28),
        filter_shape=(nkerns[0], 1, 5, 5),
        poolsize=(2, 2),
    )

    # Construct the second convolutional pooling layer
    # filtering reduces the image size to (12-5+1, 12-5+1) = (8, 8)
    # maxpooling reduces this further to (8/2, 8/2) = (4, 4)
    # 4D output tensor is thus of shape (batch_size, nkerns[1], 4, 4)
    layer1 = LeNetConvPoolLayer(
        rng,
        input=layer0.output,
        image_shape=(batch_size, nkerns[0], 12, 12),
        filter_shape=(nkerns[1], nkerns[0], 5, 5),
        poolsize=(2, 2),
    )

    # the HiddenLayer being fully-connected, it operates on 2D matrices of
    # shape (batch_size, num_pixels) (i.e matrix of rasterized images).
    # This will generate a matrix of shape (batch_size, nkerns[1] * 4 * 4),
    # or (500, 50 * 4 * 4) = (500, 800) with the default values.
    layer2_input = layer1.output.flatten(2)

    # construct a fully-connected sigmoidal layer
    layer2 = HiddenLayer(
        rng, input=layer2_input, n_in=nkerns[1] * 4 * 4, n_out=500, activation=pt.tanh
    )

    # classify the values of the fully-connected sigmoidal layer
    layer3 = LogisticRegression(input=layer2.output, n_in=500, n_out=10)

    # the cost we minimize during training is the NLL of the model
    cost = layer3.negative_log_likelihood(y)

    # create a function to compute the mistakes that are made by the model
    test_model = pytensor.function(
        [index],
        layer3.errors(y),
        givens={
            x: test_set_x[index * batch_size : (index + 1) * batch_size],
            y: test_set_y[index * batch_size : (index + 1) * batch_size],
        },
    )

    validate_model = pytensor.function(
        [index],
        layer3.errors(y),
        givens={
            x: valid_set_x[index * batch_size : (index + 1) * batch_size],
            y: valid_set_y[index * batch_size : (index + 1) * batch_size],
        },
    )

    # create a list of all model parameters to be fit by gradient descent
    params = layer3.params + layer2.params + layer1.params + layer0.params

    # create a list of gradients for all model parameters
    grads = pt.grad(cost, params)

    # train_model is a function that updates the model parameters by
    # SGD Since this model has many parameters, it would be tedious to
    # manually create an update rule for each model parameter. We thus
    # create the updates list by automatically looping over all
    # (params[i], grads[i]) pairs.
    updates = [
        (param_i, param_i - learning_rate * grad_i)
        for param_i, grad_i in zip(params, grads)
    ]

    train_model = pytensor.function(
        [index],
        cost,
        updates=updates,
        givens={
            x: train_set_x[index * batch_size : (index + 1) * batch_size],
            y: train_set_y[index * batch_size : (index + 1) * batch_size],
        },
    )
    # end-snippet-1

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
        events=training.PrintedLines(training_every=100),
        # Port note: what the original lacked: the best parameters kept in
        # an .npz file, checkpoints every epoch, a stop on a cost that is no
        # longer finite.
        params=params,
        save_best=save_best,
        checkpoint=checkpoint,
        resume=resume,
        quiet=quiet,
        settings=settings,
    )
    end_time = timeit.default_timer()

    print("Optimization complete.")
    print(
        "Best validation score of %f %% obtained at iteration %i, "
        "with test performance %f %%"
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


def experiment(state, channel):
    """Run :func:`evaluate_lenet5` for jobman, LISA's experiment dispatcher.

    Parameters
    ----------
    state : dict-like
        jobman's state (a dict whose keys are also attributes).  Every
        argument of :func:`evaluate_lenet5` it holds is used; the others keep
        their defaults.  The results (see
        :func:`deeplearning_tutorials.training.results`) are written back
        into it.
    channel : object
        jobman's channel: ``channel.save()`` (when it has one) persists the
        state, and ``channel.COMPLETE`` marks the job done.

    Returns
    -------
    object
        ``channel.COMPLETE``.
    """
    # Port note: the original forwarded only learning_rate and dataset and
    # recorded nothing; we forward every argument and record the results.
    results = evaluate_lenet5(**cli.keywords_from(state, evaluate_lenet5))
    cli.record(state, results)
    if hasattr(channel, "save"):
        channel.save()
    return getattr(channel, "COMPLETE", None)


if __name__ == "__main__":
    sys.exit(cli.main(evaluate_lenet5))
