"""Losses for ``Sequential.compile``: each returns ``(loss, gradient)`` from one op of
:mod:`fastnn.ops`.

The cross-entropy losses are always computed from logits, together with the output
activation they belong to (``softmax_cross_entropy``, ``sigmoid_binary_cross_entropy``):
that is exact and stable where log(softmax) or log(sigmoid) of probabilities would
overflow or need an epsilon. The model therefore requires its last layer to end with that
activation (``Dense(10, activation="softmax")`` or ``Activation("softmax")``), or the loss
to be built with ``from_logits=True`` for a model that outputs raw scores.
"""
import numpy as np

from fastnn import ops

__all__ = ["Loss", "SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy",
           "MeanSquaredError", "get"]


class Loss:
    """``output_activation``: the activation the loss fuses with (None for MSE)."""
    output_activation = None
    name = "loss"

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def prepare_target(self, t, output_shape, dtype, what="fit"):
        """Validate the targets against the model's per-sample output shape; return them
        in the form the op takes. ``what`` names the calling method for error messages."""
        raise NotImplementedError

    def __call__(self, logits, t):
        """(mean loss as a Python float, gradient w.r.t. ``logits``)."""
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class SparseCategoricalCrossentropy(Loss):
    """Integer class labels (N,) against a softmax output (N, K)."""
    output_activation = "softmax"
    name = "sparse_categorical_crossentropy"

    def prepare_target(self, t, output_shape, dtype, what="fit"):
        t = np.asarray(t)
        if t.ndim == 2 and t.shape[1] == 1:
            t = t[:, 0]
        if len(output_shape) != 1:
            raise ValueError(f"{what}: {self.name} needs a model output of shape (N, classes), the model "
                             f"outputs per-sample shape {output_shape}")
        if t.ndim != 1:
            raise ValueError(f"{what}: {self.name} expects integer labels of shape (N,), got shape {t.shape}; "
                             "use categorical_crossentropy for one-hot targets")
        if t.dtype.kind == "f":
            if t.size and not np.all(np.isfinite(t) & (t == np.round(t))):
                raise ValueError(f"{what}: {self.name} expects integer labels, got non-integer values")
        elif t.dtype.kind not in "iub":
            raise TypeError(f"{what}: {self.name} expects integer labels, got dtype {t.dtype}")
        k = output_shape[0]
        if t.size and (t.min() < 0 or t.max() >= k):
            raise ValueError(f"{what}: labels must lie in [0, {k}) for a {k}-class output, got values in "
                             f"[{t.min()}, {t.max()}]")
        return np.ascontiguousarray(t, dtype=np.int64)

    def __call__(self, logits, t):
        return ops.softmax_cross_entropy(logits, t)


class CategoricalCrossentropy(SparseCategoricalCrossentropy):
    """One-hot (or probability) rows (N, K) against a softmax output (N, K)."""
    name = "categorical_crossentropy"

    def prepare_target(self, t, output_shape, dtype, what="fit"):
        t = _float_target(what, self.name, t, output_shape, dtype)
        if len(output_shape) != 1:
            raise ValueError(f"{what}: {self.name} needs a model output of shape (N, classes), the model "
                             f"outputs per-sample shape {output_shape}")
        return t


class BinaryCrossentropy(Loss):
    """Targets in [0, 1] of the output's shape against a sigmoid output; a (N,) target
    is accepted for a (N, 1) output."""
    output_activation = "sigmoid"
    name = "binary_crossentropy"

    def prepare_target(self, t, output_shape, dtype, what="fit"):
        t = _float_target(what, self.name, t, output_shape, dtype)
        if t.size and (t.min() < 0 or t.max() > 1):
            raise ValueError(f"{what}: {self.name} expects targets in [0, 1], got values in [{t.min()}, {t.max()}]")
        return t

    def __call__(self, logits, t):
        return ops.sigmoid_binary_cross_entropy(logits, t)


class MeanSquaredError(Loss):
    """mean((y - t)**2) over all elements, on the model's output (whatever its activation)."""
    name = "mse"

    def prepare_target(self, t, output_shape, dtype, what="fit"):
        return _float_target(what, self.name, t, output_shape, dtype)

    def __call__(self, y, t):
        return ops.mean_squared_error(y, t)

    def get_config(self):
        return {"name": self.name}


def _float_target(what, name, t, output_shape, dtype):
    t = np.asarray(t)
    if t.dtype.kind not in "fiub":
        raise TypeError(f"{what}: {name} expects numeric targets, got dtype {t.dtype}")
    if t.ndim == 1 and tuple(output_shape) == (1,):
        t = t[:, None]
    if t.shape[1:] != tuple(output_shape):
        raise ValueError(f"{what}: {name} expects targets of shape (N, {', '.join(map(str, output_shape))}) "
                         f"like the model output, got {t.shape}")
    t = np.ascontiguousarray(t, dtype=dtype)
    if t.size and not np.all(np.isfinite(t)):
        raise ValueError(f"{what}: {name} targets contain NaN or Inf")
    return t


_BY_NAME = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
}


def get(identifier):
    """A loss from its name, a config dict from ``get_config()``, or a Loss (returned as is)."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier)
        name = config.pop("name", None)
        if name not in _BY_NAME or set(config) - {"from_logits"}:
            raise ValueError(f"loss: invalid config {identifier!r}")
        return _BY_NAME[name](**config)
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"loss: expected one of {sorted(_BY_NAME)} or a fastnn.nn.losses.Loss, got {identifier!r}")
