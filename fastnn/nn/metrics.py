"""Metrics for ``Sequential.compile(metrics=[...])``.

A metric is called as ``metric(y, t)`` with the model's output ``y`` (after its final
activation: probabilities for softmax/sigmoid models) and the targets as the loss
prepared them, and returns the batch mean as a float. Epoch values are means weighted by
the batch sizes, i.e. exact means over all samples.

``"accuracy"`` (or ``"acc"``) picks the accuracy that fits the loss: sparse categorical
(argmax == label), categorical (argmax == argmax of the target), binary (output > 0.5
matches target > 0.5). With ``mse`` it is categorical for outputs of several units and
binary for one unit.
"""
import numpy as np

__all__ = ["Metric", "SparseCategoricalAccuracy", "CategoricalAccuracy", "BinaryAccuracy",
           "MeanAbsoluteError", "MeanSquaredErrorMetric", "get"]


class Metric:
    name = "metric"

    def __init__(self, name=None):
        if name is not None:
            self.name = name

    def __call__(self, y, t):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


class SparseCategoricalAccuracy(Metric):
    name = "sparse_categorical_accuracy"

    def __call__(self, y, t):
        if len(t) == 0:
            return float("nan")
        return float(np.mean(np.argmax(y.reshape(len(y), -1), axis=1) == t))


class CategoricalAccuracy(Metric):
    name = "categorical_accuracy"

    def __call__(self, y, t):
        if len(t) == 0:
            return float("nan")
        return float(np.mean(np.argmax(y.reshape(len(y), -1), axis=1) == np.argmax(t.reshape(len(t), -1), axis=1)))


class BinaryAccuracy(Metric):
    name = "binary_accuracy"

    def __init__(self, name=None, threshold=0.5):
        super().__init__(name)
        self.threshold = float(threshold)

    def __call__(self, y, t):
        if y.size == 0:
            return float("nan")
        return float(np.mean((y > self.threshold) == (t > 0.5)))


class MeanAbsoluteError(Metric):
    name = "mae"

    def __call__(self, y, t):
        return float(np.mean(np.abs(y - t))) if y.size else float("nan")


class MeanSquaredErrorMetric(Metric):
    name = "mse"

    def __call__(self, y, t):
        return float(np.mean((y - t) ** 2)) if y.size else float("nan")


_BY_NAME = {
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredErrorMetric, "mean_squared_error": MeanSquaredErrorMetric,
}


def get(identifier, loss, output_shape):
    """The metric for a name given to compile (``"accuracy"`` resolved against the loss)
    or a Metric instance. Its ``name`` is the key in the logs and the history."""
    if isinstance(identifier, Metric):
        return identifier
    if not isinstance(identifier, str):
        raise TypeError(f"compile: a metric must be a name or a fastnn.nn.metrics.Metric, got {identifier!r}")
    key = identifier.lower()
    if key in ("accuracy", "acc"):
        if loss.name == "sparse_categorical_crossentropy":
            cls = SparseCategoricalAccuracy
        elif loss.name == "categorical_crossentropy":
            cls = CategoricalAccuracy
        elif loss.name == "binary_crossentropy":
            cls = BinaryAccuracy
        else:
            cls = CategoricalAccuracy if int(np.prod(output_shape)) > 1 else BinaryAccuracy
        return cls(name=identifier)
    if key not in _BY_NAME:
        raise ValueError(f"compile: unknown metric {identifier!r}; expected 'accuracy' or one of {sorted(_BY_NAME)}")
    return _BY_NAME[key](name=identifier)
