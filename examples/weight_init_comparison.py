"""Weight initialisation comparison: std 0.01, Xavier and He on a 5-layer ReLU network with SGD.

With std 0.01 the activations shrink layer after layer and the network
barely learns; Xavier (sqrt(1/n)) learns; He (sqrt(2/n), made for ReLU)
learns fastest. Prints the loss curves and saves a plot when matplotlib is
installed.

    python examples/weight_init_comparison.py [--fast] [--plot init.png]
"""
import numpy as np

from _common import MultiLayerNet, add_data_dir, fast_mode_requested, load_images, parser, save_plot, smooth
from fastnn.optim import SGD

INITS = {"std=0.01": 0.01, "Xavier": "xavier", "He": "he"}


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    add_data_dir(p)
    p.add_argument("--iters", type=int, default=None, help="SGD steps (default 2000, fast mode 300)")
    p.add_argument("--plot", default="weight_init_comparison.png", help="where to save the loss curves")
    args = p.parse_args(argv)
    fast = fast_mode_requested(args.fast)
    iters = args.iters if args.iters is not None else (300 if fast else 2000)

    (x_train, t_train), _, name = load_images(args.data_dir)
    rng = np.random.default_rng(args.seed)
    batches = [rng.choice(x_train.shape[0], 128) for _ in range(iters)]
    curves = {}
    for label, init in INITS.items():
        network = MultiLayerNet(x_train.shape[1], [100] * 4, 10, weight_init_std=init, seed=args.seed)
        optimizer = SGD(lr=0.01)
        losses = []
        for batch in batches:
            loss, grads = network.gradient(x_train[batch], t_train[batch])
            optimizer.update(network.params, grads)
            losses.append(loss)
        curves[label] = losses
        print(f"{label:9s} loss: " + " ".join(f"{np.mean(losses[i:i + 50]):.3f}"
                                               for i in range(0, iters, max(iters // 6, 1))))
    final = {label: float(np.mean(losses[-50:])) for label, losses in curves.items()}
    print(f"{name}, {iters} SGD steps; mean loss over the last 50 steps: "
          + ", ".join(f"{k} {v:.3f}" for k, v in final.items()))
    save_plot(args.plot, f"Weight initialisation ({name})", "iteration", "loss (moving average)",
              {k: smooth(v) for k, v in curves.items()})
    return {"dataset": name, "final_loss": final}


if __name__ == "__main__":
    main()
