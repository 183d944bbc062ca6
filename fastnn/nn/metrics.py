"""Metrics for ``Sequential.compile(metrics=[...])``.

A metric is called as ``metric(y, t)`` with the model's output ``y`` (after its final
activation: probabilities for softmax/sigmoid models) and the targets as the loss
prepared them, and returns the batch mean as a float. Epoch values are means weighted by
the batch sizes, i.e. exact means over all samples.

A metric given to ``compile(weighted_metrics=[...])`` is weighted by ``sample_weight`` or
``class_weight``: :meth:`Metric.weighted` gives ``sum_i w_i m_i`` and ``sum_i w_i`` over a
batch from the metric's ``per_sample(y, t)`` values ``m_i``, and the epoch's value is the
weighted mean ``sum_i w_i m_i / sum_i w_i`` over all its samples (Keras's weighted ``Mean``).

``"accuracy"`` (or ``"acc"``) picks the accuracy that fits the loss: sparse categorical
(argmax == label), categorical (argmax == argmax of the target), binary (output > 0.5
matches target > 0.5). With ``mse`` it is categorical for outputs of several units and
binary for one unit.
"""
import numpy as np

from fastnn.nn.losses import weighted_total
from fastnn.optim import _check_number

__all__ = ["Metric", "SparseCategoricalAccuracy", "CategoricalAccuracy", "BinaryAccuracy",
           "MeanAbsoluteError", "MeanSquaredErrorMetric", "get"]


class Metric:
    name = "metric"
    #: what the metric compares the output with: "labels" (integer labels (N,)), "output_shape"
    #: (a target of the output's shape) or None (any: not checked by compile)
    targets = None

    def __init__(self, name=None):
        if name is not None:
            self.name = name

    def __call__(self, y, t):
        raise NotImplementedError

    def per_sample(self, y, t):
        """The value of each sample, shape (N,), whose mean is what ``__call__`` returns: what
        ``weighted_metrics`` weight. A metric of your own without it cannot be a weighted metric
        (``compile`` raises ``TypeError``)."""
        raise TypeError(f"{type(self).__name__} does not implement per_sample(y, t), the per-sample values that "
                        "weighted_metrics weight")

    def weighted(self, y, t, w):
        """``(sum_i w_i * m_i, sum_i w_i)`` over the batch, for per-sample weights ``w`` (float64
        (N,)); a sample of weight 0 adds nothing (even where its value is NaN)."""
        return weighted_total(w, self.per_sample(y, t)), float(w.sum())

    def get_config(self):
        """The keyword arguments that rebuild this metric (what ``Sequential.save`` stores)."""
        return {"name": self.name}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class _Labels(Metric):
    """The fraction of samples whose argmax matches the target's class (``_classes``)."""

    def __call__(self, y, t):
        if len(t) == 0:
            return float("nan")
        return float(np.mean(self.per_sample(y, t)))

    def per_sample(self, y, t):
        return np.argmax(y.reshape(len(y), -1), axis=1) == self._classes(t)


class SparseCategoricalAccuracy(_Labels):
    name = "sparse_categorical_accuracy"
    targets = "labels"

    @staticmethod
    def _classes(t):
        return t


class CategoricalAccuracy(_Labels):
    name = "categorical_accuracy"
    targets = "output_shape"

    @staticmethod
    def _classes(t):
        return np.argmax(t.reshape(len(t), -1), axis=1)


class _Elementwise(Metric):
    """Compares the output with a target of its own shape (not with integer labels), element
    by element (``_elements``): the batch's value is the mean over all its elements, a
    sample's the mean over its own."""
    targets = "output_shape"

    def __call__(self, y, t):
        return float(np.mean(self._elements(y, t))) if y.size else float("nan")

    def per_sample(self, y, t):
        return self._elements(y, t).reshape(len(y), -1).mean(axis=1)


class BinaryAccuracy(_Elementwise):
    name = "binary_accuracy"

    def __init__(self, name=None, threshold=0.5):
        super().__init__(name)
        self.threshold = _check_number("BinaryAccuracy", "threshold", threshold)

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}

    def _elements(self, y, t):
        return (y > self.threshold) == (t > 0.5)


class MeanAbsoluteError(_Elementwise):
    name = "mae"

    def _elements(self, y, t):
        return np.abs(y - t)


class MeanSquaredErrorMetric(_Elementwise):
    name = "mse"

    def _elements(self, y, t):
        return (y - t) ** 2


_BY_NAME = {
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredErrorMetric, "mean_squared_error": MeanSquaredErrorMetric,
}


def get(identifier, loss, output_shape):
    """The metric for a name given to compile (``"accuracy"`` resolved against the loss and
    the per-sample ``output_shape``, None while the model is not built) or a Metric instance.
    Its ``name`` is the key in the logs and the history."""
    if isinstance(identifier, Metric):
        metric = identifier
    elif not isinstance(identifier, str):
        raise TypeError(f"compile: a metric must be a name or a fastnn.nn.metrics.Metric, got {identifier!r}")
    elif identifier.lower() in ("accuracy", "acc"):
        if loss.name == "sparse_categorical_crossentropy":
            cls = SparseCategoricalAccuracy
        elif loss.name == "categorical_crossentropy":
            cls = CategoricalAccuracy
        elif loss.name == "binary_crossentropy":
            cls = BinaryAccuracy
        else:
            several = output_shape is None or int(np.prod(output_shape)) > 1
            cls = CategoricalAccuracy if several else BinaryAccuracy
        metric = cls(name=identifier)
    elif identifier.lower() in _BY_NAME:
        metric = _BY_NAME[identifier.lower()](name=identifier)
    else:
        raise ValueError(f"compile: unknown metric {identifier!r}; expected 'accuracy' or one of {sorted(_BY_NAME)}")
    if metric.targets == "output_shape" and loss.name in _LABEL_LOSSES:
        hint = ("'accuracy' or 'sparse_categorical_accuracy'" if isinstance(metric, CategoricalAccuracy)
                else "categorical_crossentropy with one-hot targets")
        raise ValueError(f"compile: the metric {metric.name!r} compares the output with a target of its shape, "
                         f"but {loss.name}'s targets are integer labels (N,); use {hint} for it")
    if metric.targets == "labels" and loss.name in _OUTPUT_SHAPED_LOSSES:
        hint = "'categorical_accuracy'" if loss.name == "categorical_crossentropy" else "'binary_accuracy'"
        raise ValueError(f"compile: the metric {metric.name!r} compares the output with integer labels (N,), "
                         f"but {loss.name}'s targets have the output's shape; use 'accuracy' or {hint} for it")
    return metric


# The built-in losses by the targets they take (a loss of the user's own is not checked).
_LABEL_LOSSES = ("sparse_categorical_crossentropy",)
_OUTPUT_SHAPED_LOSSES = ("categorical_crossentropy", "binary_crossentropy", "mse")
