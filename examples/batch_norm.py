"""Batch normalisation speeding up training (the book's batch_norm_test).

The same 6-layer ReLU network (5 x 100 hidden units) is trained with SGD
(lr 0.01) on 1,000 images, with and without a BatchNormalization layer after
each hidden Affine, starting from weights of several scales. With batch
normalisation it learns faster at every scale and no longer depends on a
well-chosen initial scale.

    python examples/batch_norm.py [--fast] [--epochs N]
"""
import numpy as np

from _common import MultiLayerNet, add_data_dir, fast_mode_requested, load_images, parser
from fastnn.optim import SGD


def train(x_train, t_train, weight_scale, use_batchnorm, epochs, seed):
    network = MultiLayerNet(x_train.shape[1], [100] * 5, 10, weight_init_std=weight_scale,
                            use_batchnorm=use_batchnorm, seed=seed)
    optimizer = SGD(lr=0.01)
    rng = np.random.default_rng(seed)
    accuracies = []
    # Without batch norm, weights of scale 1 make the activations overflow: that is the point shown.
    with np.errstate(over="ignore", invalid="ignore"):
        return _epochs(network, optimizer, rng, x_train, t_train, epochs, accuracies)


def _epochs(network, optimizer, rng, x_train, t_train, epochs, accuracies):
    for _ in range(epochs):
        order = rng.permutation(x_train.shape[0])
        for i in range(0, x_train.shape[0], 100):
            batch = order[i:i + 100]
            _, grads = network.gradient(x_train[batch], t_train[batch])
            optimizer.update(network.params, grads)
        accuracies.append(network.accuracy(x_train, t_train))
    return accuracies


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    add_data_dir(p)
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 20, fast mode 10)")
    args = p.parse_args(argv)
    fast = fast_mode_requested(args.fast)
    epochs = args.epochs if args.epochs is not None else (10 if fast else 20)
    scales = [1.0, 0.1, 0.01] if fast else [1.0, 0.3, 0.1, 0.03, 0.01, 0.003]

    (x_train, t_train), _, name = load_images(args.data_dir)
    x_train, t_train = x_train[:1000], t_train[:1000]
    print(f"{name}: 1,000 training images, {epochs} epochs of SGD lr 0.01; training accuracy per epoch")
    results = {}
    for scale in scales:
        plain = train(x_train, t_train, scale, False, epochs, args.seed)
        with_bn = train(x_train, t_train, scale, True, epochs, args.seed)
        results[scale] = {"plain": plain[-1], "batchnorm": with_bn[-1], "plain_curve": plain, "batchnorm_curve": with_bn}
        every = max(epochs // 5, 1)
        print(f"weight scale {scale:<6g} without BN: " + " ".join(f"{a:.2f}" for a in plain[every - 1::every]))
        print(f"{'':19s} with BN:    " + " ".join(f"{a:.2f}" for a in with_bn[every - 1::every]))
    wins = sum(r["batchnorm"] > r["plain"] for r in results.values())
    print(f"batch norm ends ahead at {wins} of {len(scales)} weight scales; final training accuracy "
          + ", ".join(f"{s:g}: {r['plain']:.2f} -> {r['batchnorm']:.2f}" for s, r in results.items()))
    return {"dataset": name, "results": results, "wins": wins}


if __name__ == "__main__":
    main()
