"""Weight regularizers for ``Dense`` and ``Conv2D`` (``kernel_regularizer=``,
``bias_regularizer=``), Keras's ``keras.regularizers``.

A regularizer's penalty ``l1 * sum(|W|) + l2 * sum(W**2)`` (Keras's: no factor 1/2 on the
L2 term) is added to the loss that ``fit``, ``train_on_batch`` and ``evaluate`` report, as
Keras adds ``model.losses``; its gradient ``l1 * sign(W) + 2 * l2 * W`` (sign(0) = 0, as
TensorFlow's) is added to the weight's gradient before the optimizer's step. The penalty is
not weighted by ``sample_weight``. The optimizers' ``weight_decay``/``l1`` settings add the
same kind of term to the gradient inside the update, but never to the loss; a regularizer is
part of the loss (reported, and in what ``gradcheck`` differentiates).

fastnn needs the penalty's gradient as well as its value, so a layer takes the objects of
this module (or their names) only: a plain callable ``f(W) -> penalty``, which Keras takes,
is a ``TypeError``.
"""
import numpy as np

from fastnn import _validate as V
from fastnn.optim import _check_number

__all__ = ["Regularizer", "L1", "L2", "L1L2", "l1", "l2", "l1_l2", "get", "serialize"]


class Regularizer:
    """Base class of :class:`L1`, :class:`L2` and :class:`L1L2`: ``regularizer(W)`` is the
    penalty (a float), ``regularizer.gradient(W)`` its gradient (W's shape and dtype)."""

    l1 = 0.0
    l2 = 0.0

    def __call__(self, w):
        w = np.asarray(w)
        penalty = 0.0
        if self.l1:
            penalty += self.l1 * float(np.sum(np.abs(w), dtype=np.float64))
        if self.l2:
            penalty += self.l2 * float(np.sum(np.square(w), dtype=np.float64))
        return penalty

    def gradient(self, w):
        w = np.asarray(w)
        grad = np.zeros_like(w)
        if self.l1:
            grad += w.dtype.type(self.l1) * np.sign(w)
        if self.l2:
            grad += w.dtype.type(2.0 * self.l2) * w
        return grad

    def get_config(self):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class L1(Regularizer):
    """``l1 * sum(|W|)``."""

    def __init__(self, l1=0.01):
        self.l1 = _check_number("L1", "l1", l1, minimum=0.0)

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """``l2 * sum(W**2)`` (Keras's: no factor 1/2, so the gradient is ``2 * l2 * W``)."""

    def __init__(self, l2=0.01):
        self.l2 = _check_number("L2", "l2", l2, minimum=0.0)

    def get_config(self):
        return {"l2": self.l2}


class L1L2(Regularizer):
    """``l1 * sum(|W|) + l2 * sum(W**2)``; both factors default to 0, as in Keras 3 (the
    name ``"l1_l2"`` gives 0.01 for each)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _check_number("L1L2", "l1", l1, minimum=0.0)
        self.l2 = _check_number("L1L2", "l2", l2, minimum=0.0)

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


# Keras 3's lower-case names are the classes themselves: keras.regularizers.l2(0.001) is an L2.
l1 = L1
l2 = L2
l1_l2 = L1L2

_CLASSES = {cls.__name__: cls for cls in (L1, L2, L1L2)}
# Keras's documented defaults for the names: 0.01 for each factor, "l1_l2" included
_BY_NAME = {"l1": lambda: L1(0.01), "l2": lambda: L2(0.01), "l1_l2": lambda: L1L2(0.01, 0.01)}


def get(owner, what, identifier):
    """The regularizer for a layer's ``what`` argument: None, a name ("l1", "l2", "l1_l2"), an
    :class:`L1`/:class:`L2`/:class:`L1L2` (or the class, with its defaults), or a config
    ``{"class_name": ..., "config": {...}}`` from :func:`serialize`."""
    if identifier is None:
        return None
    if isinstance(identifier, str):
        if identifier.lower() not in _BY_NAME:
            raise ValueError(f"{owner}: unknown {what} {identifier!r}; expected one of {sorted(_BY_NAME)}, a "
                             "fastnn.nn.regularizers object or None")
        return _BY_NAME[identifier.lower()]()
    if isinstance(identifier, dict):
        return V.from_class_config(identifier, _CLASSES, f"{owner}: invalid {what} config")
    if isinstance(identifier, type) and identifier in _CLASSES.values():
        return identifier()
    # only the classes above: a subclass or a callable of the user's could not be saved, and a
    # plain callable has no gradient for the backward pass
    if type(identifier) in _CLASSES.values():
        return identifier
    raise TypeError(f"{owner}: {what} must be None, one of {sorted(_BY_NAME)} or a fastnn.nn.regularizers object "
                    f"(L1, L2, L1L2); fastnn also needs the penalty's gradient, so other callables are not "
                    f"supported, got {identifier!r}")


def serialize(regularizer):
    """``{"class_name": ..., "config": ...}``, or None for None."""
    if regularizer is None:
        return None
    return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}
