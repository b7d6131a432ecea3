"""The Theano Deep Learning Tutorials, ported to PyTensor.

Three lessons, importing each other as the original did:

* :mod:`deeplearning_tutorials.logistic_sgd` -- logistic regression, ``load_data``;
* :mod:`deeplearning_tutorials.mlp` -- the hidden layer and the multilayer perceptron;
* :mod:`deeplearning_tutorials.convolutional_mlp` -- LeNet5 and ``experiment``.

:mod:`deeplearning_tutorials.nnet` holds the convolution and pooling operations that
Theano had and PyTensor lost.
"""

__version__ = "0.1.0"
