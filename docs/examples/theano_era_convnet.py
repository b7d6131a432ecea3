"""A small convolutional network on MNIST, written for Theano 1.0.

Only the import lines differ from the Theano program: each renamed line keeps
the original in its ``# was:`` comment. Run it with

    python docs/examples/theano_era_convnet.py --dataset mnist.pkl.gz
"""
import argparse

import numpy

import pytensor as theano  # was: import theano
import pytensor.tensor as T  # was: import theano.tensor as T
from deeplearning_tutorials.nnet import conv2d, relu, softmax, categorical_crossentropy  # was: from theano.tensor.nnet import conv2d, relu, softmax, categorical_crossentropy
from deeplearning_tutorials.signal.pool import pool_2d  # was: from theano.tensor.signal.pool import pool_2d
from deeplearning_tutorials.rng_mrg import MRG_RandomStreams  # was: from theano.sandbox.rng_mrg import MRG_RandomStreams
from deeplearning_tutorials.logistic_sgd import load_data  # was: from logistic_sgd import load_data
import deeplearning_tutorials.modes  # added: registers DLT_NUMBA, DLT_CVM, DLT_C, DLT_JAX for --mode


def shared_weights(rng, shape, fan_in, name):
    """He initialisation: normal, standard deviation sqrt(2 / fan_in)."""
    values = rng.normal(0.0, numpy.sqrt(2.0 / fan_in), size=shape)
    return theano.shared(numpy.asarray(values, dtype=theano.config.floatX), name=name, borrow=True)


def shared_zeros(shape, name):
    return theano.shared(numpy.zeros(shape, dtype=theano.config.floatX), name=name, borrow=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dataset', default='mnist.pkl.gz')
    parser.add_argument('--n-train', type=int, default=500)
    parser.add_argument('--n-epochs', type=int, default=5)
    parser.add_argument('--seed', type=int, default=1234)
    parser.add_argument('--mode', default=None, help='a mode name, e.g. DLT_NUMBA, FAST_COMPILE')
    args = parser.parse_args(argv)

    batch_size, n_eval, learning_rate, momentum, p_drop = 20, 1000, 0.05, 0.9, 0.5
    rng = numpy.random.RandomState(args.seed)
    srng = MRG_RandomStreams(seed=args.seed)

    datasets = load_data(args.dataset)
    train_set_x, train_set_y = datasets[0]
    valid_set_x, valid_set_y = datasets[1]
    test_set_x, test_set_y = datasets[2]
    n_train_batches = args.n_train // batch_size

    x = T.matrix('x')    # rows of 784 pixels
    y = T.ivector('y')   # labels 0..9
    index = T.lscalar('index')

    # parameters: two convolution layers and a softmax layer
    W0 = shared_weights(rng, (8, 1, 5, 5), 1 * 5 * 5, 'W0')
    b0 = shared_zeros((8,), 'b0')
    W1 = shared_weights(rng, (16, 8, 3, 3), 8 * 3 * 3, 'W1')
    b1 = shared_zeros((16,), 'b1')
    W2 = shared_zeros((16 * 8 * 8, 10), 'W2')  # zeros, as the tutorial's LogisticRegression
    b2 = shared_zeros((10,), 'b2')
    params = [W0, b0, W1, b1, W2, b2]

    def features(x):
        """(batch, 784) pixels -> (batch, 1024) features: 16 maps of 8 x 8."""
        images = x.reshape((x.shape[0], 1, 28, 28))
        # 'half' pads by half the filter: the maps stay 28 x 28
        h0 = relu(conv2d(images, W0, filter_shape=(8, 1, 5, 5), border_mode='half')
                  + b0.dimshuffle('x', 0, 'x', 'x'))
        h0 = pool_2d(h0, ws=(2, 2), ignore_border=True)                 # 14 x 14
        # a cross-correlation this time: the filters are not flipped
        h1 = relu(conv2d(h0, W1, filter_shape=(16, 8, 3, 3), border_mode='half',
                         filter_flip=False) + b1.dimshuffle('x', 0, 'x', 'x'))
        # 2 x 2 windows over the maps padded by 1 pixel each side: 16 / 2 = 8 x 8
        # (the maximum of a window never comes from the padding)
        h1 = pool_2d(h1, ws=(2, 2), ignore_border=True, stride=(2, 2), pad=(1, 1))
        return h1.flatten(2)

    h = features(x)
    # training graph: dropout, a new mask at every call (the stream moves on by itself)
    mask = srng.binomial(size=h.shape, p=1 - p_drop, dtype=theano.config.floatX)
    p_y_train = softmax(T.dot(h * mask / (1 - p_drop), W2) + b2)
    cost = T.mean(categorical_crossentropy(p_y_train, y))
    # evaluation graph: no dropout
    p_y_given_x = softmax(T.dot(h, W2) + b2)
    error = T.mean(T.neq(T.argmax(p_y_given_x, axis=1), y))

    # SGD with momentum: one velocity per parameter
    updates = []
    for param, grad in zip(params, T.grad(cost, params)):
        velocity = theano.shared(param.get_value() * 0.0)
        step = momentum * velocity - learning_rate * grad
        updates.append((velocity, step))
        updates.append((param, param + step))

    # mode=None: the default mode (THEANO_FLAGS=mode=... in Theano, PYTENSOR_FLAGS here)
    train_model = theano.function(
        [index], cost, updates=updates, mode=args.mode,
        givens={x: train_set_x[index * batch_size:(index + 1) * batch_size],
                y: train_set_y[index * batch_size:(index + 1) * batch_size]})
    validate_model = theano.function(
        [], error, givens={x: valid_set_x[:n_eval], y: valid_set_y[:n_eval]}, mode=args.mode)
    test_model = theano.function(
        [], error, givens={x: test_set_x[:n_eval], y: test_set_y[:n_eval]}, mode=args.mode)

    for epoch in range(1, args.n_epochs + 1):
        loss = numpy.mean([train_model(i) for i in range(n_train_batches)])
        print('epoch %i, training loss %f, validation error %.2f %%'
              % (epoch, loss, 100 * validate_model()))
    print('trained on %i images for %i epochs, test error %.2f %%'
          % (n_train_batches * batch_size, args.n_epochs, 100 * test_model()))


if __name__ == '__main__':
    main()
