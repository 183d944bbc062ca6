"""Weight initializers: ``zeros``, ``ones``, ``constant``, ``uniform``, ``normal``,
Glorot/Xavier (uniform, normal) and He (uniform, normal).

An initializer is called as ``init(shape, dtype=np.float32, rng=None)``. Values are
drawn in float64 from ``rng`` (a ``np.random.Generator``; the model passes its own,
seeded by ``Sequential(seed=...)``) and then cast, so a seed gives the same starting
point in float32 and float64. An initializer built with ``seed=`` ignores ``rng`` and
draws the same values on every call.

Fans follow the usual convention: a Dense kernel ``(in, out)`` has fan_in = in and
fan_out = out; a Conv2D kernel ``(filters, channels, kh, kw)`` has
fan_in = channels*kh*kw and fan_out = filters*kh*kw.
"""
import contextvars
import inspect
import math

import numpy as np

from fastnn import _validate as V

__all__ = ["Initializer", "Zeros", "Ones", "Constant", "RandomUniform", "RandomNormal",
           "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "Unsaved", "get", "serialize",
           "compute_fans"]


def compute_fans(shape):
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


class Initializer:
    """Base class. Subclasses implement ``_sample(shape, rng)`` returning float64 values."""

    def __init__(self, seed=None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"{type(self).__name__}: seed must be an int or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)

    def __call__(self, shape, dtype=np.float32, rng=None):
        shape = tuple(int(s) for s in shape)
        if self.seed is not None:
            rng = np.random.default_rng(self.seed)
        elif rng is None:
            rng = np.random.default_rng()
        values = np.asarray(self._sample(shape, rng), dtype=np.float64)
        return np.ascontiguousarray(values.astype(dtype, copy=False))

    def _sample(self, shape, rng):
        raise NotImplementedError

    def get_config(self):
        return {"seed": self.seed}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    def _sample(self, shape, rng):
        return np.zeros(shape)

    def get_config(self):
        return {}


class Ones(Initializer):
    def _sample(self, shape, rng):
        return np.ones(shape)

    def get_config(self):
        return {}


class Constant(Initializer):
    def __init__(self, value=0.0):
        super().__init__()
        self.value = _finite_float("Constant", "value", value)

    def _sample(self, shape, rng):
        return np.full(shape, self.value)

    def get_config(self):
        return {"value": self.value}


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval = _finite_float("RandomUniform", "minval", minval)
        self.maxval = _finite_float("RandomUniform", "maxval", maxval)
        if self.maxval < self.minval:
            raise ValueError(f"RandomUniform: expected minval <= maxval, got {minval} > {maxval}")

    def _sample(self, shape, rng):
        return rng.uniform(self.minval, self.maxval, size=shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean = _finite_float("RandomNormal", "mean", mean)
        self.stddev = _finite_float("RandomNormal", "stddev", stddev)
        if self.stddev < 0:
            raise ValueError(f"RandomNormal: expected stddev >= 0, got {stddev}")

    def _sample(self, shape, rng):
        return rng.normal(self.mean, self.stddev, size=shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class _VarianceScaling(Initializer):
    """Variance ``scale / fan`` with fan = fan_in or (fan_in + fan_out) / 2."""
    scale = 1.0
    mode = "fan_avg"
    distribution = "uniform"

    def _sample(self, shape, rng):
        fan_in, fan_out = compute_fans(shape)
        fan = fan_in if self.mode == "fan_in" else (fan_in + fan_out) / 2.0
        variance = self.scale / max(1.0, fan)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, size=shape)
        # A plain (untruncated) normal, as the He et al. and Glorot & Bengio papers use.
        return rng.normal(0.0, math.sqrt(variance), size=shape)


class GlorotUniform(_VarianceScaling):
    """U(-l, l) with l = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010; "xavier_uniform")."""


class GlorotNormal(_VarianceScaling):
    """N(0, 2 / (fan_in + fan_out)) ("xavier_normal")."""
    distribution = "normal"


class HeUniform(_VarianceScaling):
    """U(-l, l) with l = sqrt(6 / fan_in) (He et al. 2015), for ReLU networks."""
    scale = 2.0
    mode = "fan_in"


class HeNormal(_VarianceScaling):
    """N(0, 2 / fan_in) (He et al. 2015), for ReLU networks."""
    scale = 2.0
    mode = "fan_in"
    distribution = "normal"


# set by load_model while it builds a model whose weights it then sets from the file
_WEIGHTS_TO_FOLLOW = contextvars.ContextVar("fastnn_weights_to_follow", default=False)


class Unsaved(Initializer):
    """Stands in for a custom initializer (a callable or a subclass of the user's) in a
    saved model: the file keeps the weights it drew, not its code, so this one refuses to
    draw new ones."""

    def __init__(self, description=""):
        super().__init__()
        if not isinstance(description, str):
            raise TypeError(f"Unsaved: description must be a str, got {type(description).__name__}")
        self.description = description

    def _sample(self, shape, rng):
        if _WEIGHTS_TO_FOLLOW.get():
            return np.zeros(shape)
        raise ValueError(f"initializer: this layer's initializer was a custom one ({self.description}), which a "
                         "saved model does not keep (only the weights it drew); give the layer an initializer "
                         "to build it with new weights")

    def get_config(self):
        return {"description": self.description}


_BY_NAME = {
    "zeros": Zeros, "ones": Ones, "constant": Constant,
    "uniform": RandomUniform, "random_uniform": RandomUniform,
    "normal": RandomNormal, "random_normal": RandomNormal,
    "glorot_uniform": GlorotUniform, "xavier_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal, "xavier_normal": GlorotNormal,
    "he_uniform": HeUniform, "he_normal": HeNormal,
}
_CLASSES = {cls.__name__: cls for cls in (Zeros, Ones, Constant, RandomUniform, RandomNormal,
                                          GlorotUniform, GlorotNormal, HeUniform, HeNormal, Unsaved)}


def draw(init, shape, dtype, rng):
    """``init``'s values for ``shape``: an Initializer, a callable ``f(shape, dtype, rng)``
    (called by position, so it names them as it likes; a parameter named ``rng`` gets the
    generator wherever it stands), or one of Keras's form ``f(shape, dtype=None)``, which
    includes ``np.zeros`` and ``np.ones`` (their third parameter, ``order``, has a default)."""
    if isinstance(init, Initializer):
        return init(shape, dtype, rng)
    try:
        parameters = list(inspect.signature(init).parameters.values())
    except (TypeError, ValueError):  # no signature to read (some builtins): the documented form
        return init(shape, dtype, rng)
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.name == "rng" for p in parameters):
        if len(positional) >= 3 and positional[2].name == "rng":
            return init(shape, dtype, rng)
        return init(shape, dtype, rng=rng)
    takes_third = (any(p.kind == p.VAR_POSITIONAL for p in parameters)
                   or (len(positional) >= 3 and positional[2].default is inspect.Parameter.empty))
    return init(shape, dtype, rng) if takes_third else init(shape, dtype)


def get(identifier):
    """An initializer from a name (``"he_normal"``), an Initializer, a config dict
    ``{"class_name": ..., "config": {...}}`` or a callable ``f(shape, dtype, rng)``."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _BY_NAME:
            raise ValueError(f"initializer: unknown name {identifier!r}; expected one of {sorted(_BY_NAME)}")
        return _BY_NAME[key]()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()   # the class with its defaults, as Keras's initializers.get does
    if callable(identifier):
        return identifier
    raise TypeError(f"initializer: expected a name, an Initializer or a callable, got {type(identifier).__name__}")


def serialize(initializer):
    """``{"class_name": ..., "config": ...}``; a custom initializer becomes an
    :class:`Unsaved` that names it (its code cannot be stored)."""
    if type(initializer) is not _CLASSES.get(type(initializer).__name__):
        initializer = Unsaved(_describe(initializer))
    return {"class_name": type(initializer).__name__, "config": initializer.get_config()}


def _describe(initializer):
    if getattr(initializer, "__qualname__", None):  # a function (or a class used as one)
        return f"function {initializer.__qualname__}"
    return f"{type(initializer).__qualname__} object"


def deserialize(config):
    return V.from_class_config(config, _CLASSES, "initializer: invalid config")


def _finite_float(owner, what, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{owner}: {what} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {what} must be finite, got {value}")
    return value
