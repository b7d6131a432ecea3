"""What Theano had and PyTensor lost: convolution and pooling, under Theano's names."""
