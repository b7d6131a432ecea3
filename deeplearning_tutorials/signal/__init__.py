"""Theano's ``theano.tensor.signal``: pooling under its Theano names.

* :mod:`.pool` -- ``pool_2d`` (Theano 0.9 and 1.0): max, sum and average pooling
  with any window, stride and padding;
* :mod:`.downsample` -- ``max_pool_2d`` (Theano 0.7 and 0.8).
"""
