"""A Keras-style binary classifier: Dense(16, relu) - Dense(8, relu) - Dense(1, sigmoid), Adam, binary CE.

Trained on a synthetic tabular task (fastnn.datasets.tabular_binary: 8
standardised features, the label a non-linear rule of four of them) with
fastnn.nn's Sequential, compile, fit (progress bar), evaluate, predict and
summary; then saved and loaded back.

    python examples/keras_binary_classifier.py [--fast]
"""
import os
import tempfile

import numpy as np

from _common import fast_mode_requested, parser
from fastnn import datasets
from fastnn.nn import Dense, Sequential, load_model


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 60, fast mode 25)")
    args = p.parse_args(argv)
    fast = fast_mode_requested(args.fast)
    epochs = args.epochs if args.epochs is not None else (25 if fast else 60)

    (x_train, t_train), (x_test, t_test) = datasets.tabular_binary(2000, n_features=8, seed=args.seed)
    print(f"tabular set: {len(x_train)} training and {len(x_test)} test rows, {x_train.shape[1]} features, "
          f"{t_train.mean():.0%} positive")
    model = Sequential([
        Dense(16, activation="relu", input_dim=x_train.shape[1]),
        Dense(8, activation="relu"),
        Dense(1, activation="sigmoid"),
    ], seed=args.seed)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.summary()
    history = model.fit(x_train, t_train, epochs=epochs, batch_size=32, validation_split=0.2,
                        verbose=0 if fast else 2)
    loss, accuracy = model.evaluate(x_test, t_test)
    baseline = max(t_test.mean(), 1 - t_test.mean())
    print(f"after {epochs} epochs: training loss {history.history['loss'][-1]:.4f}, "
          f"validation accuracy {history.history['val_accuracy'][-1]:.4f}")
    print(f"test loss {loss:.4f}, test accuracy {accuracy:.4f} (majority-class baseline {baseline:.4f})")

    probabilities = model.predict(x_test[:5])
    print("first test rows: P(positive) = " + " ".join(f"{p:.2f}" for p in probabilities[:, 0])
          + ", labels " + " ".join(str(int(t)) for t in t_test[:5, 0]))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "binary.npz")
        model.save(path)
        reloaded = load_model(path)
        same = bool(np.array_equal(reloaded.predict(x_test), model.predict(x_test)))
    print(f"saved and reloaded: predictions identical: {same}")
    return {"test_accuracy": float(accuracy), "test_loss": float(loss), "baseline": float(baseline),
            "reload_identical": same}


if __name__ == "__main__":
    main()
