"""The same CNN timed on the native and the NumPy backend: training steps and inference, and the speed-up.

The network is SimpleConvNet in fastnn.nn form (conv 30 5x5 - ReLU - max pool
2x2 - dense 100 - ReLU - dense 10, softmax) on batches of 100 MNIST-sized
images. Both backends start from the same weights; the example checks that
their first losses agree, then times training steps (forward, backward,
Adam update) and inference. When the native extension is not built it says
so and exits with status 0.

    python examples/backend_speedup.py [--fast] [--steps N] [--threads N]
"""
import time

import numpy as np

from _common import fast_mode_requested, parser
import fastnn
from fastnn.nn import Conv2D, Dense, Flatten, MaxPool2D, Sequential


def make_model(seed):
    model = Sequential([Conv2D(30, 5, activation="relu", input_shape=(1, 28, 28)), MaxPool2D(2), Flatten(),
                        Dense(100, activation="relu"), Dense(10, activation="softmax")], seed=seed)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def time_backend(name, weights, x, t, steps, seed):
    with fastnn.backend(name):
        model = make_model(seed)
        model.set_weights(weights)
        first_loss = float(model.train_on_batch(x, t))
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, t)
        train_ms = (time.perf_counter() - start) / steps * 1000
        model.predict(x, batch_size=len(x))
        start = time.perf_counter()
        for _ in range(steps):
            model.predict(x, batch_size=len(x))
        predict_ms = (time.perf_counter() - start) / steps * 1000
    return first_loss, train_ms, predict_ms


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="timed steps per backend (default 20, fast mode 3)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=None, help="native kernel threads (default: all cores)")
    args = p.parse_args(argv)
    fast = fast_mode_requested(args.fast)
    steps = args.steps if args.steps is not None else (3 if fast else 20)

    config = fastnn.config()
    if not config["native_available"]:
        print(f"the native backend is not available ({config['native_error']}); build it with "
              "`pip install .` or `python setup.py build_ext --inplace` to compare. Nothing to time.")
        return {"native_available": False}
    if args.threads is not None:
        fastnn.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    x = rng.random((args.batch_size, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, args.batch_size)
    weights = make_model(args.seed).get_weights()

    print(f"SimpleConvNet, batch {args.batch_size}, {steps} timed steps, "
          f"{fastnn.get_num_threads()} native thread(s), SIMD {fastnn.get_simd()}")
    native = time_backend("native", weights, x, t, steps, args.seed)
    numpy = time_backend("numpy", weights, x, t, steps, args.seed)
    agree = abs(native[0] - numpy[0]) <= 1e-4 * max(1.0, abs(numpy[0]))
    print(f"first loss: native {native[0]:.6f}, numpy {numpy[0]:.6f} ({'agree' if agree else 'DIFFER'})")
    print(f"train step: native {native[1]:8.2f} ms   numpy {numpy[1]:8.2f} ms   speed-up {numpy[1] / native[1]:.2f}x")
    print(f"inference:  native {native[2]:8.2f} ms   numpy {numpy[2]:8.2f} ms   speed-up {numpy[2] / native[2]:.2f}x")
    return {"native_available": True, "losses_agree": agree, "train_speedup": numpy[1] / native[1],
            "predict_speedup": numpy[2] / native[2]}


if __name__ == "__main__":
    main()
