"""Regression of y = x^2 - 0.5 + noise with a 1-10-1 ReLU network and SGD (lr 0.1, 1000 steps).

Full-batch gradient descent on 100 noisy points; prints the loss curve. The
noise has standard deviation 0.1, so the best reachable mean squared error
is about 0.01.

    python examples/parabola_regression.py [--fast]
"""
import numpy as np

from _common import fast_mode_requested, parser, save_plot
from fastnn import datasets
from fastnn.layers import Affine, IdentityWithLoss, Relu
from fastnn.optim import SGD


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--plot", default=None, help="save the training loss curve here (matplotlib)")
    args = p.parse_args(argv)
    fast_mode_requested(args.fast)  # 1000 full-batch steps on 100 points take well under a second anyway

    x, y = datasets.noisy_parabola(100, noise=0.1, seed=args.seed)
    x_val, y_val = datasets.noisy_parabola(200, noise=0.0, seed=args.seed + 1)
    rng = np.random.default_rng(args.seed)
    params = {"W1": (rng.standard_normal((1, 10)) * np.sqrt(2.0)).astype(np.float32),
              "b1": rng.uniform(-1, 1, 10).astype(np.float32),
              "W2": (rng.standard_normal((10, 1)) * np.sqrt(2.0 / 10)).astype(np.float32),
              "b2": np.zeros(1, dtype=np.float32)}
    hidden, relu, out = Affine(params["W1"], params["b1"]), Relu(), Affine(params["W2"], params["b2"])
    loss_layer = IdentityWithLoss()
    optimizer = SGD(lr=args.lr)

    losses = []
    for step in range(args.steps + 1):
        loss = loss_layer.forward(out.forward(relu.forward(hidden.forward(x))), y)
        losses.append(float(loss))
        if step % 100 == 0:
            print(f"step {step:5d}  mse {loss:.5f}")
        if step == args.steps:
            break
        out_grad = out.backward(loss_layer.backward())
        hidden.backward(relu.backward(out_grad))
        optimizer.update(params, {"W1": hidden.dW, "b1": hidden.db, "W2": out.dW, "b2": out.db})

    fit_error = float(np.mean((out.forward(relu.forward(hidden.forward(x_val))) - y_val) ** 2))
    print(f"final training mse {losses[-1]:.5f} (noise floor ~0.01); "
          f"mse against the noiseless parabola {fit_error:.5f}")
    if args.plot:
        save_plot(args.plot, "1-10-1 ReLU net, SGD lr 0.1", "step", "mse", {"training loss": losses})
    return {"initial_loss": losses[0], "final_loss": losses[-1], "fit_error": fit_error}


if __name__ == "__main__":
    main()
