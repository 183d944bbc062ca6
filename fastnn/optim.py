"""Optimizers with the interface of "deep learning from scratch" (common/optimizer.py).

``SGD``, ``Momentum``, ``Nesterov``, ``AdaGrad``, ``RMSprop`` and ``Adam`` take the
book's constructor arguments and have ``update(params, grads)`` over dicts of
arrays (lists/tuples of arrays work too), updating each parameter in place with
one fused ``fastnn.ops.*_update`` kernel. Their state is kept like the book's:
``v`` (Momentum, Nesterov), ``h`` (AdaGrad, RMSprop), ``m``, ``v`` and ``iter`` (Adam),
dicts keyed by the parameter keys.

Every optimizer also takes:

- ``weight_decay`` (L2: ``weight_decay * p`` is added to the gradient) and ``l1``
  (``l1 * sign(p)`` is added); the gradient arrays themselves are not modified;
- ``max_norm``: after each update, a weight whose norm exceeds ``max_norm`` is
  scaled back onto the ball: a 2-D weight (in, out) per column (the incoming
  weights of each unit), a weight of higher rank per slice along its first axis
  (each convolution filter); 0-D and 1-D parameters (biases, BatchNorm's gamma
  and beta) are left alone;
- ``schedule``: a learning-rate schedule (:class:`StepDecay`,
  :class:`ExponentialDecay`, :class:`InverseTimeDecay`, or any callable
  ``schedule(step, base_lr) -> lr``). ``step`` counts ``update`` calls from 0;
  before each update ``optimizer.lr`` is set to ``schedule(step, base_lr)``, so it
  always shows the rate in use. Without a schedule ``lr`` is a plain attribute;
- ``learning_rate=`` (Keras's name) in place of ``lr=``; the property ``learning_rate``
  reads and sets ``lr``.
"""
import inspect
import math
import numbers
from collections.abc import Mapping, MutableMapping

import numpy as np

from fastnn import _validate as V
from fastnn import ops

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam",
           "StepDecay", "ExponentialDecay", "InverseTimeDecay", "get",
           "np"]  # as common/optimizer.py's star import: ch06/optimizer_compare_mnist.py uses np without importing it


def _check_number(owner, name, value, minimum=None, allow_none=False, strictly=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: expected {name} to be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{owner}: expected a finite {name}, got {value}")
    if minimum is not None and (value <= minimum if strictly else value < minimum):
        relation = ">" if strictly else ">="
        raise ValueError(f"{owner}: expected {name} {relation} {minimum}, got {value}")
    return value


# ---------------------------------------------------------------- learning-rate schedules

class StepDecay:
    """lr = base_lr * gamma ** (step // step_size)."""

    def __init__(self, step_size, gamma=0.1):
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Integral) or step_size < 1:
            raise ValueError(f"StepDecay: expected an integer step_size >= 1, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _check_number("StepDecay", "gamma", gamma, minimum=0.0)

    def __call__(self, step, base_lr):
        return base_lr * self.gamma ** (step // self.step_size)

    def get_config(self):
        return {"name": "StepDecay", "step_size": self.step_size, "gamma": self.gamma}


class ExponentialDecay:
    """lr = base_lr * decay_rate ** (step / decay_steps) (the exponent floored when ``staircase``)."""

    def __init__(self, decay_rate, decay_steps=1, staircase=False):
        self.decay_rate = _check_number("ExponentialDecay", "decay_rate", decay_rate, minimum=0.0, strictly=True)
        self.decay_steps = _check_number("ExponentialDecay", "decay_steps", decay_steps, minimum=0.0, strictly=True)
        self.staircase = V.as_bool("ExponentialDecay", "staircase", staircase)

    def __call__(self, step, base_lr):
        exponent = step / self.decay_steps
        if self.staircase:
            exponent = math.floor(exponent)
        try:
            return base_lr * self.decay_rate ** exponent
        except OverflowError:  # a rate above 1 grows past the largest float: the rate is infinite
            return math.inf if base_lr > 0 else 0.0

    def get_config(self):
        return {"name": "ExponentialDecay", "decay_rate": self.decay_rate, "decay_steps": self.decay_steps,
                "staircase": self.staircase}


class InverseTimeDecay:
    """lr = base_lr / (1 + decay_rate * step / decay_steps) (the ratio floored when ``staircase``)."""

    def __init__(self, decay_rate, decay_steps=1, staircase=False):
        self.decay_rate = _check_number("InverseTimeDecay", "decay_rate", decay_rate, minimum=0.0)
        self.decay_steps = _check_number("InverseTimeDecay", "decay_steps", decay_steps, minimum=0.0, strictly=True)
        self.staircase = V.as_bool("InverseTimeDecay", "staircase", staircase)

    def __call__(self, step, base_lr):
        ratio = step / self.decay_steps
        if self.staircase:
            ratio = math.floor(ratio)
        return base_lr / (1.0 + self.decay_rate * ratio)

    def get_config(self):
        return {"name": "InverseTimeDecay", "decay_rate": self.decay_rate, "decay_steps": self.decay_steps,
                "staircase": self.staircase}


_SCHEDULES = {cls.__name__: cls for cls in (StepDecay, ExponentialDecay, InverseTimeDecay)}


# ---------------------------------------------------------------- optimizers

class Optimizer:
    """Base class: the loop over parameters, regularisation, max-norm and the schedule."""

    #: the rate when neither lr nor learning_rate is given
    default_lr = 0.01

    def __init__(self, lr=None, weight_decay=0.0, l1=0.0, max_norm=None, schedule=None, learning_rate=None):
        name = type(self).__name__
        if lr is not None and learning_rate is not None:
            raise ValueError(f"{name}: give lr or learning_rate (the same setting), not both; "
                             f"got lr={lr!r}, learning_rate={learning_rate!r}")
        if lr is None:
            lr, what = (self.default_lr, "lr") if learning_rate is None else (learning_rate, "learning_rate")
        else:
            what = "lr"
        self.base_lr = _check_number(name, what, lr, minimum=0.0)
        self.weight_decay = _check_number(name, "weight_decay", weight_decay, minimum=0.0)
        self.l1 = _check_number(name, "l1", l1, minimum=0.0)
        self.max_norm = _check_number(name, "max_norm", max_norm, minimum=0.0, allow_none=True, strictly=True)
        if schedule is not None and not callable(schedule):
            raise TypeError(f"{name}: expected schedule to be callable (step, base_lr) -> lr, "
                            f"got {type(schedule).__name__}")
        self.schedule = schedule
        self.iterations = 0
        self.lr = self.base_lr if schedule is None else self._scheduled_lr(0)

    @property
    def learning_rate(self):
        """Keras's name for :attr:`lr`, the rate of the next update."""
        return self.lr

    @learning_rate.setter
    def learning_rate(self, value):
        name = type(self).__name__
        if self.schedule is not None:
            raise ValueError(f"{name}.learning_rate: the optimizer has a schedule, which sets the rate before "
                             "every update; build it without schedule= to set the rate yourself")
        self.lr = _check_number(name, "learning_rate", value, minimum=0.0)

    def _scheduled_lr(self, step):
        """The schedule's rate for ``step``, checked as the constructor checks ``lr``."""
        return _check_number(type(self).__name__, f"learning rate from the schedule at step {step}",
                             self.schedule(step, self.base_lr), minimum=0.0)

    # -- the public loop ---------------------------------------------------------------------
    def update(self, params, grads):
        """Update every array of ``params`` in place from the matching entry of ``grads``.

        Everything is checked before anything changes, so a bad entry leaves
        all parameters and the optimizer's state as they were."""
        pairs = []
        for key in self._keys(params, grads):
            param = scalar = params[key]
            if _is_scalar(param):
                # The book's chapter 6 keeps plain floats in params (params['x'] = -7.0) and
                # rebinds them (params[key] -= ...): update a 0-d copy and store it back.
                if not isinstance(params, MutableMapping) and not isinstance(params, list):
                    raise TypeError(f"{type(self).__name__}.update: parameter {key!r} is a number in a "
                                    f"{type(params).__name__}, which cannot take its new value")
                param = np.array(param, dtype=param.dtype if isinstance(param, np.floating) else np.float64)
            else:
                scalar = None
            pairs.append((key, param, self._checked_grad(key, param, grads[key]), scalar))
        if self.schedule is not None:
            self.lr = self._scheduled_lr(self.iterations)  # checked before any parameter changes
        self._begin_step()
        for key, param, grad, scalar in pairs:
            self._kernel(key, param, grad)
            if self.max_norm is not None:
                _clip_norm(param, self.max_norm)
            if scalar is not None:
                params[key] = type(scalar)(param[()]) if isinstance(scalar, np.floating) else float(param)
        self.iterations += 1

    def _checked_grad(self, key, param, grad):
        name = type(self).__name__
        # what the kernels (fastnn.ops.*_update) require, checked before any parameter changes
        V.writeable_float_array(f"{name}.update", f"parameter {key!r}", param)
        grad = np.asarray(grad)
        if grad.shape != param.shape:
            raise ValueError(f"{name}.update: gradient {key!r} has shape {grad.shape}, "
                             f"expected the parameter's shape {param.shape}")
        if grad.dtype.kind in "iu":
            grad = grad.astype(np.float64)  # the book's params['y'] -= lr * 4 computes lr * 4 in float64
        if grad.dtype.kind != "f" or grad.dtype.newbyteorder("=") not in V.FLOAT_DTYPES:
            # checked here, before any parameter changes (the kernels would refuse it midway);
            # a byte-swapped float32/float64 gradient is converted by fastnn.ops
            raise TypeError(f"{name}.update: gradient {key!r} must be a float32 or float64 array, "
                            f"got dtype {grad.dtype}")
        # fastnn.ops runs the fused kernel on C-contiguous arrays of one dtype and
        # the NumPy reference on anything else (views, a float64 gradient of a
        # float32 parameter), in place either way.
        return grad

    def _keys(self, params, grads):
        name = type(self).__name__
        if isinstance(params, Mapping):
            keys = list(params.keys())
            missing = [k for k in keys if k not in grads]
            if missing:
                raise ValueError(f"{name}.update: no gradient for parameter(s) {missing}")
            return keys
        if isinstance(params, (list, tuple)):
            if not isinstance(grads, (list, tuple)) or len(grads) != len(params):
                raise ValueError(f"{name}.update: expected {len(params)} gradients in a list, got "
                                 f"{len(grads) if isinstance(grads, (list, tuple)) else type(grads).__name__}")
            return list(range(len(params)))
        raise TypeError(f"{name}.update: expected params as a dict (or list) of arrays, got {type(params).__name__}")

    def _slot_array(self, slot, key, param):
        """The state array ``slot`` (an attribute: a dict, None before the first update) of
        parameter ``key``: zeros of the parameter's shape and dtype the first time."""
        store = getattr(self, slot)
        if store is None:
            store = {}
            setattr(self, slot, store)
        value = store.get(key)
        if value is None or value.shape != param.shape:   # first use, or a parameter replaced by another
            value = store[key] = np.zeros(param.shape, dtype=param.dtype)
        elif value.dtype != param.dtype:                  # a state restored in another dtype keeps its values
            value = store[key] = value.astype(param.dtype)
        return value

    def _begin_step(self):
        pass

    def _kernel(self, key, param, grad):
        raise NotImplementedError

    def _reg(self):
        return {"weight_decay": self.weight_decay, "l1": self.l1}

    # -- state (what an update depends on besides the config) ----------------------------------
    #: the attributes holding a dict of per-parameter arrays ({key: array}), None before an update
    _slots = ()
    #: integer counters besides ``iterations``
    _counters = ()

    def get_state(self):
        """``{"iterations": n, "lr": rate in use, <counter>: n, ..., "slots": {slot: {key: array}}}``:
        everything :meth:`update` reads besides the config, so that ``set_state`` on a fresh
        optimizer of the same config continues exactly (the arrays are the optimizer's own)."""
        state = {"iterations": self.iterations, "lr": self.lr}
        state.update({name: getattr(self, name) for name in self._counters})
        state["slots"] = {slot: dict(getattr(self, slot) or {}) for slot in self._slots}
        return state

    def set_state(self, state):
        """Restore what :meth:`get_state` returned (the arrays are copied); everything is checked
        before anything changes."""
        name = f"{type(self).__name__}.set_state"
        if not isinstance(state, Mapping):
            raise TypeError(f"{name}: expected the dict get_state returns, got {type(state).__name__}")
        expected = {"iterations", "lr", "slots", *self._counters}
        if set(state) != expected:
            raise ValueError(f"{name}: expected the keys {sorted(expected)}, got {sorted(state)}")
        counters = {}
        for counter in ("iterations", *self._counters):
            value = state[counter]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name}: expected {counter} to be an int >= 0, got {value!r}")
            counters[counter] = int(value)
        lr = _check_number(name, "lr", state["lr"], minimum=0.0)
        slots = state["slots"]
        if not isinstance(slots, Mapping) or set(slots) - set(self._slots):
            raise ValueError(f"{name}: expected slots among {list(self._slots)}, got "
                             f"{sorted(slots) if isinstance(slots, Mapping) else type(slots).__name__}")
        restored = {}
        for slot, arrays in slots.items():
            if not isinstance(arrays, Mapping):
                raise TypeError(f"{name}: expected slot {slot!r} to be a dict of arrays, got {type(arrays).__name__}")
            restored[slot] = {}
            for key, array in arrays.items():
                array = np.asarray(array)
                if array.dtype not in V.FLOAT_DTYPES:
                    raise TypeError(f"{name}: {slot}[{key!r}] must be a float32 or float64 array, got {array.dtype}")
                restored[slot][key] = array.copy()
        for counter, value in counters.items():
            setattr(self, counter, value)
        self.lr = lr
        for slot in self._slots:
            setattr(self, slot, restored.get(slot, {}))

    # -- description ---------------------------------------------------------------------------
    def get_config(self):
        config = self._settings()
        if self.schedule is not None:
            if not hasattr(self.schedule, "get_config"):
                raise ValueError(f"{type(self).__name__}.get_config: the schedule {self.schedule!r} "
                                 f"has no get_config()")
            config["schedule"] = self.schedule.get_config()
        return config

    def _settings(self):
        # the rate: the schedule's base, else the one in use (which a callback may have lowered)
        lr = self.base_lr if self.schedule is not None else self.lr
        config = {"name": type(self).__name__, "lr": lr, "weight_decay": self.weight_decay,
                  "l1": self.l1, "max_norm": self.max_norm}
        config.update(self._extra_config())
        return config

    def _extra_config(self):
        return {}

    def __repr__(self):
        settings = self._settings()
        if self.schedule is not None:
            settings["schedule"] = (self.schedule.get_config() if hasattr(self.schedule, "get_config")
                                    else self.schedule)
        args = ", ".join(f"{k}={v!r}" for k, v in settings.items() if k != "name")
        return f"{type(self).__name__}({args})"


def _is_scalar(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_, np.ndarray))


def _clip_norm(param, max_norm):
    if param.ndim < 2:
        return
    axes = 0 if param.ndim == 2 else tuple(range(1, param.ndim))
    # in float64: float32 squares overflow above 1.8e19 and would zero such a weight, not clip it
    norms = np.sqrt(np.sum(np.square(param, dtype=np.float64), axis=axes, keepdims=True))
    over = norms > max_norm
    if np.any(over):
        scale = np.where(over, max_norm / np.where(over, norms, 1.0), 1.0)
        param *= scale.astype(param.dtype, copy=False)


def _momentum_step(optimizer, key, param, grad):
    """v = momentum * v - lr * g; p += v (Momentum, and SGD with a momentum)."""
    v = optimizer._slot_array("v", key, param)
    ops.momentum_update(param, grad, v, optimizer.lr, momentum=optimizer.momentum, **optimizer._reg())


class SGD(Optimizer):
    """p -= lr * g; with ``momentum`` (Keras's ``SGD(momentum=...)``) the update of :class:`Momentum`,
    v = momentum * v - lr * g; p += v. Keras's ``nesterov=True`` is not this library's
    :class:`Nesterov` (the book's form) and is refused."""

    _slots = ("v",)

    def __init__(self, lr=None, momentum=0.0, weight_decay=0.0, l1=0.0, max_norm=None, schedule=None, *,
                 nesterov=False, learning_rate=None):
        super().__init__(lr, weight_decay, l1, max_norm, schedule, learning_rate=learning_rate)
        if V.as_bool("SGD", "nesterov", nesterov):
            raise ValueError("SGD: nesterov=True (Keras's form, p += momentum * v - lr * g) is not supported; "
                             "fastnn.optim.Nesterov(lr=..., momentum=...) is Nesterov's method in the book's "
                             "form, whose first steps are larger (see docs/NN.md)")
        self.momentum = _check_number("SGD", "momentum", momentum, minimum=0.0)
        self.v = None

    def _kernel(self, key, param, grad):
        if self.momentum:
            _momentum_step(self, key, param, grad)
        else:
            ops.sgd_update(param, grad, self.lr, **self._reg())

    def _extra_config(self):
        return {"momentum": self.momentum} if self.momentum else {}


class Momentum(Optimizer):
    """v = momentum * v - lr * g; p += v."""

    _slots = ("v",)

    def __init__(self, lr=None, momentum=0.9, weight_decay=0.0, l1=0.0, max_norm=None, schedule=None, *,
                 learning_rate=None):
        super().__init__(lr, weight_decay, l1, max_norm, schedule, learning_rate=learning_rate)
        self.momentum = _check_number(type(self).__name__, "momentum", momentum, minimum=0.0)
        self.v = None

    def _kernel(self, key, param, grad):
        _momentum_step(self, key, param, grad)

    def _extra_config(self):
        return {"momentum": self.momentum}


class Nesterov(Momentum):
    """Nesterov's accelerated gradient in the book's form:
    v = momentum * v - lr * g; p += momentum**2 * v - (1 + momentum) * lr * g."""

    def _kernel(self, key, param, grad):
        v = self._slot_array("v", key, param)
        ops.nesterov_update(param, grad, v, self.lr, momentum=self.momentum, **self._reg())


class AdaGrad(Optimizer):
    """h += g*g; p -= lr * g / (sqrt(h) + eps)."""

    _slots = ("h",)

    def __init__(self, lr=None, eps=1e-7, weight_decay=0.0, l1=0.0, max_norm=None, schedule=None, *,
                 learning_rate=None):
        super().__init__(lr, weight_decay, l1, max_norm, schedule, learning_rate=learning_rate)
        self.eps = _check_number(type(self).__name__, "eps", eps, minimum=0.0)
        self.h = None

    def _kernel(self, key, param, grad):
        h = self._slot_array("h", key, param)
        ops.adagrad_update(param, grad, h, self.lr, eps=self.eps, **self._reg())

    def _extra_config(self):
        return {"eps": self.eps}


class RMSprop(Optimizer):
    """h = decay_rate * h + (1 - decay_rate) * g*g; p -= lr * g / (sqrt(h) + eps)."""

    _slots = ("h",)

    def __init__(self, lr=None, decay_rate=0.99, eps=1e-7, weight_decay=0.0, l1=0.0, max_norm=None,
                 schedule=None, *, learning_rate=None):
        super().__init__(lr, weight_decay, l1, max_norm, schedule, learning_rate=learning_rate)
        self.decay_rate = _check_number(type(self).__name__, "decay_rate", decay_rate, minimum=0.0)
        if self.decay_rate > 1.0:
            raise ValueError(f"RMSprop: expected 0 <= decay_rate <= 1, got {self.decay_rate}")
        self.eps = _check_number(type(self).__name__, "eps", eps, minimum=0.0)
        self.h = None

    def _kernel(self, key, param, grad):
        h = self._slot_array("h", key, param)
        ops.rmsprop_update(param, grad, h, self.lr, decay=self.decay_rate, eps=self.eps, **self._reg())

    def _extra_config(self):
        return {"decay_rate": self.decay_rate, "eps": self.eps}


class Adam(Optimizer):
    """Adam with the book's bias correction folded into the step size:
    iter += 1; lr_t = lr * sqrt(1 - beta2**iter) / (1 - beta1**iter);
    m += (1 - beta1) * (g - m); v += (1 - beta2) * (g*g - v); p -= lr_t * m / (sqrt(v) + eps)."""

    _slots = ("m", "v")
    _counters = ("iter",)

    default_lr = 0.001

    def __init__(self, lr=None, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.0, l1=0.0, max_norm=None,
                 schedule=None, *, learning_rate=None):
        super().__init__(lr, weight_decay, l1, max_norm, schedule, learning_rate=learning_rate)
        name = type(self).__name__
        self.beta1 = _check_number(name, "beta1", beta1, minimum=0.0)
        self.beta2 = _check_number(name, "beta2", beta2, minimum=0.0)
        if self.beta1 >= 1.0 or self.beta2 >= 1.0:
            raise ValueError(f"Adam: expected 0 <= beta1, beta2 < 1, got beta1={self.beta1}, beta2={self.beta2}")
        self.eps = _check_number(name, "eps", eps, minimum=0.0)
        self.iter = 0
        self.m = None
        self.v = None
        self._lr_t = None

    def _begin_step(self):
        self.iter += 1
        self._lr_t = self.lr * math.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)

    def _kernel(self, key, param, grad):
        m = self._slot_array("m", key, param)
        v = self._slot_array("v", key, param)
        ops.adam_update(param, grad, m, v, self._lr_t, beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                        **self._reg())

    def _extra_config(self):
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


_OPTIMIZERS = {cls.__name__.lower(): cls for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam)}


def get(identifier, **kwargs):
    """An optimizer from a name ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"; any case),
    a config dict from ``get_config()``, or an optimizer (returned as is)."""
    if isinstance(identifier, Optimizer):
        if kwargs:
            raise ValueError("optim.get: keyword arguments given with an optimizer instance")
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier)
        name = config.pop("name", None)
        schedule = config.pop("schedule", None)
        if schedule is not None:
            schedule = dict(schedule)
            sname = schedule.pop("name", None)
            if sname not in _SCHEDULES:
                raise ValueError(f"optim.get: unknown schedule {sname!r}, expected one of {sorted(_SCHEDULES)}")
            config["schedule"] = _SCHEDULES[sname](**schedule)
        config.update(kwargs)
        return get(name, **config)
    if isinstance(identifier, str) and identifier.lower() in _OPTIMIZERS:
        cls = _OPTIMIZERS[identifier.lower()]
        known = inspect.signature(cls).parameters
        unknown = sorted(k for k in kwargs if k not in known)
        if unknown:
            raise ValueError(f"optim.get: unknown argument(s) {unknown} for {cls.__name__}, "
                             f"expected some of {list(known)}")
        return cls(**kwargs)
    raise ValueError(f"optim.get: expected one of {sorted(_OPTIMIZERS)}, an optimizer or its config, "
                     f"got {identifier!r}")
