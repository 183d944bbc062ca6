"""SimpleConvNet, book style: conv 30 5x5 - ReLU - max pool 2x2 - affine 100 - ReLU - affine 10 - softmax.

Trained with Adam on MNIST (from --data-dir, ../shared/data/mnist or the
fastnn cache) or, when MNIST is not there, on the shipped 8x8 digits set
(saying so). Prints train and test accuracy per epoch.

    python examples/simple_convnet.py [--fast] [--data-dir DIR] [--epochs N]
"""
import time
from collections import OrderedDict

import numpy as np

from _common import add_data_dir, fast_mode_requested, load_images, parser
from fastnn.layers import Affine, Convolution, Pooling, Relu, SoftmaxWithLoss
from fastnn.optim import Adam


class SimpleConvNet:
    def __init__(self, input_dim=(1, 28, 28), filter_num=30, filter_size=5, pad=0, stride=1,
                 hidden_size=100, output_size=10, weight_init_std=0.01, seed=0):
        channels, size = input_dim[0], input_dim[1]
        conv_out = (size - filter_size + 2 * pad) // stride + 1
        pool_out = filter_num * (conv_out // 2) * (conv_out // 2)
        rng = np.random.default_rng(seed)

        def init(*shape):
            return (weight_init_std * rng.standard_normal(shape)).astype(np.float32)

        self.params = {
            "W1": init(filter_num, channels, filter_size, filter_size),
            "b1": np.zeros(filter_num, dtype=np.float32),
            "W2": init(pool_out, hidden_size), "b2": np.zeros(hidden_size, dtype=np.float32),
            "W3": init(hidden_size, output_size), "b3": np.zeros(output_size, dtype=np.float32),
        }
        self.layers = OrderedDict()
        self.layers["Conv1"] = Convolution(self.params["W1"], self.params["b1"], stride, pad)
        self.layers["Relu1"] = Relu()
        self.layers["Pool1"] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = Affine(self.params["W2"], self.params["b2"])
        self.layers["Relu2"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W3"], self.params["b3"])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def accuracy(self, x, t, batch_size=500):
        correct = 0
        for i in range(0, x.shape[0], batch_size):
            correct += int(np.sum(np.argmax(self.predict(x[i:i + batch_size]), axis=1) == t[i:i + batch_size]))
        return correct / x.shape[0]

    def gradient(self, x, t):
        loss = self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        grads = {}
        for i, name in enumerate(("Conv1", "Affine1", "Affine2"), start=1):
            grads[f"W{i}"], grads[f"b{i}"] = self.layers[name].dW, self.layers[name].db
        return loss, grads


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    add_data_dir(p)
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs (default: MNIST 10, digits 20; fast mode: MNIST 3 on 1,500 images, digits 12)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 0.001, fast mode 0.003)")
    args = p.parse_args(argv)
    fast = fast_mode_requested(args.fast)
    lr = args.lr if args.lr is not None else (0.003 if fast else 0.001)

    (x_train, t_train), (x_test, t_test), name = load_images(args.data_dir, flatten=False,
                                                             max_train=1500 if fast else None,
                                                             max_test=500 if fast else None)
    size = x_train.shape[-1]
    epochs = args.epochs if args.epochs is not None else {(True, True): 3, (True, False): 12,
                                                          (False, True): 10, (False, False): 20}[fast, size >= 16]
    # 8x8 digits: a 3x3 filter leaves a 6x6 map (pooled to 3x3); MNIST uses the book's 5x5.
    filter_size = 5 if size >= 16 else 3
    network = SimpleConvNet(input_dim=x_train.shape[1:], filter_size=filter_size, seed=args.seed)
    optimizer = Adam(lr=lr)
    rng = np.random.default_rng(args.seed)
    print(f"SimpleConvNet on {name}: conv 30x{filter_size}x{filter_size}, {epochs} epochs, Adam lr {lr}")

    n = x_train.shape[0]
    epoch_times = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(n)
        losses = []
        for i in range(0, n, args.batch_size):
            batch = order[i:i + args.batch_size]
            loss, grads = network.gradient(x_train[batch], t_train[batch])
            optimizer.update(network.params, grads)
            losses.append(loss)
        epoch_times.append(time.perf_counter() - start)
        # Training accuracy on (at most) 1,000 images keeps the per-epoch report cheap.
        print(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  "
              f"train acc {network.accuracy(x_train[:1000], t_train[:1000]):.4f}  "
              f"test acc {network.accuracy(x_test, t_test):.4f}  ({epoch_times[-1]:.2f} s)")
    test_acc = network.accuracy(x_test, t_test)
    print(f"{name}: test accuracy {test_acc:.4f}, {np.mean(epoch_times):.2f} s per epoch")
    return {"dataset": name, "test_accuracy": test_acc, "seconds_per_epoch": float(np.mean(epoch_times))}


if __name__ == "__main__":
    main()
