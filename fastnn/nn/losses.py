"""Losses for ``Sequential.compile``: each returns ``(loss, gradient)`` from one op of
:mod:`fastnn.ops`.

The cross-entropy losses are always computed from logits, together with the output
activation they belong to (``softmax_cross_entropy``, ``sigmoid_binary_cross_entropy``):
that is exact and stable where log(softmax) or log(sigmoid) of probabilities would
overflow or need an epsilon. The model therefore requires its last layer to end with that
activation (``Dense(10, activation="softmax")`` or ``Activation("softmax")``), or the loss
to be built with ``from_logits=True`` for a model that outputs raw scores.

With ``sample_weight``/``class_weight`` the model calls :meth:`Loss.weighted`, which
needs the loss's ``per_sample(y, t)`` (the per-sample losses, computed only then) and, for
``class_weight``, its ``target_classes``; unweighted calls run the op alone.
"""
import numpy as np

from fastnn import _reference, ops

__all__ = ["Loss", "SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy",
           "MeanSquaredError", "get"]



def weighted_total(w, values):
    """sum_i w_i * v_i in float64 (w float64 (N,)): a sample of weight 0 adds nothing, even where
    its value is inf or NaN (0 * inf would be NaN). What weighted losses and metrics sum."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.multiply(w, values, out=np.zeros_like(values), where=w != 0).sum())

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

    def per_sample(self, y, t):
        """The loss of each sample, shape (N,), whose mean is what ``__call__`` returns: what
        ``sample_weight``/``class_weight`` weight. A loss of your own without it cannot be
        trained or evaluated with weights (``TypeError``)."""
        raise TypeError(f"{type(self).__name__} does not implement per_sample(y, t), the per-sample losses that "
                        "sample_weight and class_weight weight")

    def target_classes(self, t, output_shape, what="fit"):
        """The class of each target (int array (N,)) and the number of classes, for
        ``class_weight``; t as :meth:`prepare_target` returned it."""
        raise TypeError(f"{what}: class_weight needs class targets; the loss {type(self).__name__} does not define "
                        "target_classes(t, output_shape, what); give sample_weight instead")

    def weighted(self, y, t, w):
        """``(sum_i w_i * l_i / N, gradient)`` for per-sample weights ``w`` (float64 (N,)),
        Keras's "sum_over_batch_size": the gradient is ``__call__``'s with each sample's row
        scaled by w_i. A sample of weight 0 adds nothing (even where its loss is inf). Weights
        that are all 1 give ``__call__``'s numbers, bit for bit."""
        if type(self).per_sample is Loss.per_sample:
            self.per_sample(y, t)   # raises the TypeError
        if np.all(w == 1):
            return self(y, t)
        loss, grad = self(y, t)
        n = len(y)
        loss = weighted_total(w, self.per_sample(y, t)) / n if n else float("nan")
        grad = grad * w.astype(grad.dtype).reshape((-1,) + (1,) * (grad.ndim - 1))
        return loss, grad

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

    def per_sample(self, logits, t):
        """-log softmax(logits)[i, t_i] (for rows t: -sum_k t_k log p_k, classes of weight 0 skipped)."""
        log_p = ops.log_softmax(logits, axis=1)
        if t.ndim == 1:
            return -log_p[np.arange(len(t)), t]
        return -np.sum(t * log_p, axis=1, where=t != 0)

    def target_classes(self, t, output_shape, what="fit"):
        if t.ndim == 1:
            return t, output_shape[0]
        return np.argmax(t, axis=1), output_shape[0]   # Keras's class of a one-hot row


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

    def per_sample(self, logits, t):
        """The mean over a sample's elements of softplus(z) - z t = max(z, 0) - z t + log1p(exp(-|z|))."""
        with np.errstate(invalid="ignore", over="ignore"):   # inf logits: the formula's inf - inf is replaced
            per_element = _reference._binary_cross_entropy_elements(logits, t)
        return per_element.reshape(len(logits), -1).mean(axis=1)

    def target_classes(self, t, output_shape, what="fit"):
        return _binary_classes(self.name, t, output_shape, what)


class MeanSquaredError(Loss):
    """mean((y - t)**2) over all elements, on the model's output (whatever its activation)."""
    name = "mse"

    def prepare_target(self, t, output_shape, dtype, what="fit"):
        return _float_target(what, self.name, t, output_shape, dtype)

    def __call__(self, y, t):
        return ops.mean_squared_error(y, t)

    def per_sample(self, y, t):
        """The mean of (y - t)**2 over a sample's elements."""
        d = y - t
        return (d * d).reshape(len(d), -1).mean(axis=1)

    def target_classes(self, t, output_shape, what="fit"):
        """One-hot rows (N, K) (class: the 1) or 0/1 targets of a one-unit output."""
        if tuple(output_shape) == (1,):
            return _binary_classes(self.name, t, output_shape, what, exact=True)
        if len(output_shape) != 1:
            raise ValueError(f"{what}: class_weight with {self.name} needs class targets of shape (N, classes) or "
                             f"(N, 1), got targets of per-sample shape {tuple(output_shape)}")
        if len(t) and not (np.all((t == 0) | (t == 1)) and np.all(t.sum(axis=1) == 1)):
            raise ValueError(f"{what}: class_weight with {self.name} needs class targets: one-hot rows, or 0/1 "
                             "targets of a one-unit output; these targets are not one-hot")
        return np.argmax(t, axis=1), output_shape[0]

    def get_config(self):
        return {"name": self.name}


def _binary_classes(name, t, output_shape, what, exact=False):
    """The 0/1 class of the targets of a one-unit output (rounded, as Keras does; ``exact``:
    the targets must be 0 or 1)."""
    if tuple(output_shape) != (1,):
        raise ValueError(f"{what}: class_weight with {name} needs a one-unit output (classes 0 and 1); this model "
                         f"outputs per-sample shape {tuple(output_shape)} (several labels per sample)")
    t = t.reshape(len(t))
    if exact and len(t) and not np.all((t == 0) | (t == 1)):
        raise ValueError(f"{what}: class_weight with {name} needs class targets, 0 or 1 for a one-unit output; "
                         f"got values in [{t.min()}, {t.max()}]")
    return np.round(t).astype(np.int64), 2


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
