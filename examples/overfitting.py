"""Overfitting, and two cures: weight decay and dropout.

After the book's experiment: a network with more weights than there are
training images (two hidden layers of 256 ReLU units, 300 images, SGD lr
0.05) memorises them: training accuracy 100%, training loss near 0, while
test accuracy lags far behind and the test loss is ten times the training
loss. L2 weight decay (lambda 0.1, on the weights only) and dropout (ratio
0.5) trade some training fit for a much narrower gap between training and
test accuracy and loss, at the same training budget.

    python examples/overfitting.py [--fast] [--epochs N]
"""
import numpy as np

from _common import MultiLayerNet, add_data_dir, fast_mode_requested, load_images, parser
from fastnn.optim import SGD

CONFIGS = {
    "no regularisation": {},
    "weight decay 0.1": {"weight_decay": 0.1},
    "dropout 0.5": {"use_dropout": True, "dropout_ratio": 0.5},
}


def train(config, x_train, t_train, x_test, t_test, epochs, seed):
    np.random.seed(seed)  # the book's Dropout draws its masks from NumPy's global generator
    network = MultiLayerNet(x_train.shape[1], [256, 256], 10, use_dropout=config.get("use_dropout", False),
                            dropout_ratio=config.get("dropout_ratio", 0.5), seed=seed)
    # As in the book, weight decay applies to the weights only, not the biases.
    weights = {k: v for k, v in network.params.items() if k.startswith("W")}
    others = {k: v for k, v in network.params.items() if not k.startswith("W")}
    decayed = SGD(lr=0.05, weight_decay=config.get("weight_decay", 0.0))
    plain = SGD(lr=0.05)
    rng = np.random.default_rng(seed)
    batch_size = 100
    history = []
    for epoch in range(epochs):
        order = rng.permutation(x_train.shape[0])
        for i in range(0, x_train.shape[0], batch_size):
            batch = order[i:i + batch_size]
            _, grads = network.gradient(x_train[batch], t_train[batch])
            decayed.update(weights, grads)
            plain.update(others, grads)
        if (epoch + 1) % max(epochs // 5, 1) == 0 or epoch + 1 == epochs:
            history.append((epoch + 1, network.accuracy(x_train, t_train), network.accuracy(x_test, t_test),
                            float(network.loss(x_train, t_train)), float(network.loss(x_test, t_test))))
    return history


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    add_data_dir(p)
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 150, fast mode 100)")
    args = p.parse_args(argv)
    fast = fast_mode_requested(args.fast)
    epochs = args.epochs if args.epochs is not None else (100 if fast else 150)

    (x_train, t_train), (x_test, t_test), name = load_images(args.data_dir)
    x_train, t_train = x_train[:300], t_train[:300]
    if fast:
        x_test, t_test = x_test[:1000], t_test[:1000]
    print(f"{name}: 300 training images, {x_test.shape[0]} test images, {epochs} epochs of SGD lr 0.05")
    results = {}
    for label, config in CONFIGS.items():
        history = train(config, x_train, t_train, x_test, t_test, epochs, args.seed)
        for epoch, train_acc, test_acc, train_loss, test_loss in history:
            print(f"  {label:18s} epoch {epoch:4d}  train acc {train_acc:.3f}  test acc {test_acc:.3f}  "
                  f"train loss {train_loss:.3f}  test loss {test_loss:.3f}")
        _, train_acc, test_acc, train_loss, test_loss = history[-1]
        results[label] = {"train_accuracy": train_acc, "test_accuracy": test_acc, "gap": train_acc - test_acc,
                          "train_loss": train_loss, "test_loss": test_loss}
    print("train - test accuracy gap: " + ", ".join(f"{k} {v['gap']:.3f}" for k, v in results.items()))
    print("test / train loss ratio:   " + ", ".join(f"{k} {v['test_loss'] / v['train_loss']:.1f}"
                                                   for k, v in results.items()))
    return {"dataset": name, "results": results}


if __name__ == "__main__":
    main()
