"""The two-layer network (784-50-10, ReLU, softmax) trained with mini-batch SGD, book style.

Uses MNIST from --data-dir, ../shared/data/mnist or the fastnn cache when
present, otherwise the shipped 8x8 digits set (then the network is 64-50-10),
and says which. Prints train and test accuracy once per epoch.

    python examples/mnist_two_layer.py [--fast] [--data-dir DIR]
"""
import time
from collections import OrderedDict

import numpy as np

from _common import add_data_dir, fast_mode_requested, load_images, parser
from fastnn.layers import Affine, Relu, SoftmaxWithLoss
from fastnn.optim import SGD


class TwoLayerNet:
    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01, seed=0):
        rng = np.random.default_rng(seed)
        self.params = {
            "W1": (weight_init_std * rng.standard_normal((input_size, hidden_size))).astype(np.float32),
            "b1": np.zeros(hidden_size, dtype=np.float32),
            "W2": (weight_init_std * rng.standard_normal((hidden_size, output_size))).astype(np.float32),
            "b2": np.zeros(output_size, dtype=np.float32),
        }
        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def accuracy(self, x, t):
        return float(np.mean(np.argmax(self.predict(x), axis=1) == t))

    def gradient(self, x, t):
        loss = self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        grads = {"W1": self.layers["Affine1"].dW, "b1": self.layers["Affine1"].db,
                 "W2": self.layers["Affine2"].dW, "b2": self.layers["Affine2"].db}
        return loss, grads


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    add_data_dir(p)
    p.add_argument("--iters", type=int, default=None, help="SGD steps (default 10000, fast mode 800)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.1)
    args = p.parse_args(argv)
    fast = fast_mode_requested(args.fast)
    iters = args.iters if args.iters is not None else (800 if fast else 10000)

    (x_train, t_train), (x_test, t_test), name = load_images(args.data_dir)
    n_in = x_train.shape[1]
    network = TwoLayerNet(n_in, 50, 10, seed=args.seed)
    optimizer = SGD(lr=args.lr)
    rng = np.random.default_rng(args.seed)
    iters_per_epoch = max(x_train.shape[0] // args.batch_size, 1)
    print(f"network {n_in}-50-10, {iters} SGD steps of batch {args.batch_size}, lr {args.lr}")

    start = time.perf_counter()
    losses = []
    for i in range(iters):
        batch = rng.choice(x_train.shape[0], args.batch_size)
        loss, grads = network.gradient(x_train[batch], t_train[batch])
        optimizer.update(network.params, grads)
        losses.append(loss)
        if (i + 1) % iters_per_epoch == 0 or i + 1 == iters:
            print(f"step {i + 1:6d}  loss {np.mean(losses[-iters_per_epoch:]):.4f}  "
                  f"train acc {network.accuracy(x_train, t_train):.4f}  test acc {network.accuracy(x_test, t_test):.4f}")
    elapsed = time.perf_counter() - start
    test_acc = network.accuracy(x_test, t_test)
    print(f"{name}: test accuracy {test_acc:.4f} after {iters} steps ({elapsed:.1f} s)")
    return {"dataset": name, "test_accuracy": test_acc, "final_loss": float(np.mean(losses[-50:]))}


if __name__ == "__main__":
    main()
