"""Optimizer comparison: SGD, Momentum, AdaGrad and Adam training the same 5-layer ReLU network.

The book's experiment: a 4x100 hidden-layer network on MNIST (or the shipped
digits set when MNIST is not found), mini-batches of 128, the same initial
weights for every optimizer. Prints the loss curves and saves a plot when
matplotlib is installed.

    python examples/optimizer_comparison.py [--fast] [--plot optimizers.png]
"""
import time

import numpy as np

from _common import MultiLayerNet, add_data_dir, fast_mode_requested, load_images, parser, save_plot, smooth
from fastnn.optim import SGD, AdaGrad, Adam, Momentum

OPTIMIZERS = {
    "SGD": lambda: SGD(lr=0.01),
    "Momentum": lambda: Momentum(lr=0.01),
    "AdaGrad": lambda: AdaGrad(lr=0.01),
    "Adam": lambda: Adam(lr=0.001),
}


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    add_data_dir(p)
    p.add_argument("--iters", type=int, default=None, help="steps per optimizer (default 2000, fast mode 300)")
    p.add_argument("--plot", default="optimizer_comparison.png", help="where to save the loss curves")
    args = p.parse_args(argv)
    fast = fast_mode_requested(args.fast)
    iters = args.iters if args.iters is not None else (300 if fast else 2000)

    (x_train, t_train), _, name = load_images(args.data_dir)
    rng = np.random.default_rng(args.seed)
    batches = [rng.choice(x_train.shape[0], 128) for _ in range(iters)]  # same batches for everyone
    curves = {}
    for label, make in OPTIMIZERS.items():
        network = MultiLayerNet(x_train.shape[1], [100] * 4, 10, seed=args.seed)
        optimizer = make()
        losses = []
        start = time.perf_counter()
        for batch in batches:
            loss, grads = network.gradient(x_train[batch], t_train[batch])
            optimizer.update(network.params, grads)
            losses.append(loss)
        curves[label] = losses
        print(f"{label:9s} loss: " + " ".join(f"{np.mean(losses[i:i + 50]):.3f}"
                                               for i in range(0, iters, max(iters // 6, 1)))
              + f"  ({time.perf_counter() - start:.1f} s)")
    final = {label: float(np.mean(losses[-50:])) for label, losses in curves.items()}
    print(f"{name}, {iters} steps; mean loss over the last 50 steps: "
          + ", ".join(f"{k} {v:.3f}" for k, v in final.items()))
    save_plot(args.plot, f"Optimizers ({name})", "iteration", "loss (moving average)",
              {k: smooth(v) for k, v in curves.items()})
    return {"dataset": name, "final_loss": final}


if __name__ == "__main__":
    main()
