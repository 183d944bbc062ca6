"""The native backend: the Cython wrappers of the C kernels, with the signatures
of docs/BACKEND.md (the same as fastnn._reference)."""
from fastnn._gemm import (  # noqa: F401
    conv2d, conv2d_backward, conv2d_max_pool2d, conv2d_max_pool2d_backward, gemm, linear, linear_backward, matmul)
from fastnn._kernels import (  # noqa: F401
    adagrad_update, adam_update, avg_pool2d, avg_pool2d_backward, batch_norm_backward,
    batch_norm_forward, col2im, elu, elu_backward, identity, im2col, leaky_relu, leaky_relu_backward,
    log_softmax, max_pool2d, max_pool2d_backward, mean_squared_error, momentum_update, nesterov_update, relu,
    relu_backward, rmsprop_update, sgd_update, sigmoid, sigmoid_backward,
    sigmoid_binary_cross_entropy, softmax, softmax_cross_entropy, softplus, softplus_backward,
    step, tanh, tanh_backward)
