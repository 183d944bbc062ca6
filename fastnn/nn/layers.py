"""Keras-style layers for :class:`fastnn.nn.Sequential`.

Every layer is a thin wrapper over :mod:`fastnn.ops`: ``forward`` calls the op and keeps
what ``backward`` needs; ``backward(dy)`` returns the gradient of the input and stores the
parameter gradients in ``layer.grads``. Images are NCHW (channels first):
``Conv2D(input_shape=(channels, height, width))``, unless an image layer is given
``data_format="channels_last"`` (or constructed after ``set_image_data_format("channels_last")``):
then NHWC, computed through the same NCHW ops with transposes.

A layer holds

- ``params``: the trainable arrays by name (``kernel``, ``bias``, ``gamma``, ``beta``),
- ``grads``: their gradients after ``backward`` (same names),
- ``state``: non-trainable arrays (BatchNorm's ``moving_mean`` and ``moving_variance``),
- ``input_shape`` / ``output_shape``: per-sample shapes, without the batch axis,
- ``losses``: the penalties of its regularizers (``Dense``/``Conv2D``'s ``kernel_regularizer``
  and ``bias_regularizer``) on its current weights, which the model adds to its loss.

Layers that end with an activation (``Dense``, ``Conv2D``, ``Activation``) accept
``forward(x, training, logits=True)``, which skips the activation; the model uses it to
compute a softmax or sigmoid output together with its cross-entropy loss, from the logits.
"""
import math
import re
import warnings

import numpy as np

from fastnn import _validate as V, ops
from fastnn.optim import _check_number
from fastnn.nn import initializers, regularizers

__all__ = ["Layer", "Dense", "Conv2D", "MaxPool2D", "AvgPool2D", "Flatten", "Dropout",
           "BatchNorm", "Activation", "InputLayer", "Input", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
           "Reshape", "ACTIVATIONS", "get_layer_class", "image_data_format", "set_image_data_format"]

# The activations fastnn.ops computes (and fuses into linear/conv2d), plus softmax.
OPS_ACTIVATIONS = ("identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus")
ACTIVATIONS = OPS_ACTIVATIONS + ("softmax",)
# Activations whose derivative is a function of their output: Conv2D fuses them into the op.
_FUSED_FROM_OUTPUT = ("relu", "sigmoid", "tanh")

_LAYER_CLASSES = {}

DATA_FORMATS = ("channels_first", "channels_last")
# The data_format that image layers constructed with data_format=None take (Keras's
# keras.config.image_data_format(); Keras's default is "channels_last", fastnn's is NCHW).
_image_data_format = "channels_first"


def image_data_format():
    """The data format that image layers (Conv2D, the poolings, BatchNorm's default axis)
    constructed from now on without one take: "channels_first" (fastnn's default) or "channels_last"."""
    return _image_data_format


def set_image_data_format(data_format):
    """Set the default of ``data_format=None`` (and of BatchNorm's ``axis=None``) for layers
    constructed from now on; layers already constructed keep theirs."""
    global _image_data_format
    _image_data_format = _check_data_format("set_image_data_format", data_format, default=False)


def _check_data_format(owner, data_format, default=True):
    if data_format is None and default:
        return _image_data_format
    if isinstance(data_format, str) and data_format.lower() in DATA_FORMATS:
        return data_format.lower()
    raise ValueError(f"{owner}: data_format must be 'channels_first' or 'channels_last'"
                     f"{' (or None, the global default)' if default else ''}, got {data_format!r}")


def get_layer_class(name):
    """The layer class registered under ``name`` (used when loading a saved model)."""
    if name not in _LAYER_CLASSES:
        raise ValueError(f"unknown layer class {name!r}; expected one of {sorted(_LAYER_CLASSES)}")
    return _LAYER_CLASSES[name]


def _snake_case(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower().replace("2_d", "2d")


class Layer:
    """Base class of the layers. Subclasses define ``compute_output_shape``,
    ``param_shapes``/``state_shapes`` (what ``build`` allocates), ``forward``,
    ``backward`` and ``get_config``."""

    supports_logits = False
    activation = None
    # config keys added after files were written without them, and the value those files mean
    _legacy_config = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            _LAYER_CLASSES[cls.__name__] = cls

    def __init__(self, name=None, input_shape=None):
        if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name)):
            raise ValueError(f"{type(self).__name__}: name must be 1-64 characters of letters, digits, "
                             f"'_', '.' or '-', got {name!r}")
        self._auto_name = name is None
        self.name = name if name is not None else _snake_case(type(self).__name__)
        self.input_shape = None if input_shape is None else _shape_tuple(self, "input_shape", input_shape)
        if self.input_shape == ():
            raise ValueError(f"{type(self).__name__}: input_shape must have at least one size (per sample, "
                             f"without the batch axis), got ()")
        self.output_shape = None
        self.built = False
        self.dtype = None
        self.params = {}
        self.grads = {}
        self.state = {}
        self.rng = None
        # False freezes the layer (Keras's layer.trainable): fit leaves its parameters as they are
        # (Sequential.params() leaves them out), and a frozen BatchNorm normalises with its
        # moving statistics, as in Keras.
        self.trainable = True

    # -- shapes and building -------------------------------------------------
    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def param_shapes(self, input_shape):
        """Trainable parameters: name -> shape, for this per-sample input shape."""
        return {}

    def state_shapes(self, input_shape):
        """Non-trainable arrays: name -> shape."""
        return {}

    def weight_shapes(self, input_shape):
        shapes = dict(self.param_shapes(input_shape))
        shapes.update(self.state_shapes(input_shape))
        return shapes

    def _initial_value(self, weight_name, shape, dtype, rng):
        raise NotImplementedError

    #: False while a Sequential builds this layer for an inner activation's shape: only the data's
    #: shape (a model's first layer, or a layer on its own) is checked for looking channels last
    _input_is_data = True

    def build(self, input_shape, dtype=np.float32, rng=None):
        """Allocate the parameters for a per-sample ``input_shape`` (no batch axis)."""
        first = self._input_is_data
        input_shape = _shape_tuple(self, "input_shape", input_shape)
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"{self._what()}: dtype must be float32 or float64, got {dtype}")
        output_shape = self.output_shape_for(input_shape, first=first)
        hint = self._layout_hint(input_shape) if first else None
        for name, shape in self.weight_shapes(input_shape).items():
            # (and the gradient of each parameter beside it) before an initializer asks for it
            V.check_size(self._what(), f"the weight {name!r}", shape, dtype.itemsize)
        rng = np.random.default_rng() if rng is None else rng
        self.params = {k: self._checked_initial(k, s, dtype, rng) for k, s in self.param_shapes(input_shape).items()}
        self.state = {k: self._checked_initial(k, s, dtype, rng) for k, s in self.state_shapes(input_shape).items()}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._build_extra(input_shape, rng)
        self.input_shape, self.output_shape, self.dtype, self.built = input_shape, output_shape, dtype, True
        if hint:
            warnings.warn(f"{self._what()}: input shape {input_shape}: {hint}", UserWarning, stacklevel=2)
        return self

    def output_shape_for(self, input_shape, first=False):
        """compute_output_shape; for the data's shape (``first``) an error says when the shape
        looks channels last to a channels-first image layer."""
        try:
            return self.compute_output_shape(input_shape)
        except ValueError as exc:
            hint = self._layout_hint(tuple(input_shape)) if first else None
            if hint:
                raise ValueError(f"{exc}; {hint}") from None
            raise

    def _layout_hint(self, input_shape):
        return None

    def _build_extra(self, input_shape, rng):
        pass

    def _checked_initial(self, weight_name, shape, dtype, rng):
        """The initial value as a fresh array of the model's dtype: a custom initializer may
        return a list, another dtype, or an array it keeps (trained in place, it must be ours)."""
        value = self._initial_value(weight_name, tuple(shape), dtype, rng)
        try:
            value = np.array(value, dtype=dtype, order="C", copy=True)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{self._what()}: the initializer of {weight_name!r} returned "
                            f"{type(value).__name__}, not an array of numbers ({exc})") from None
        if value.shape != tuple(shape):
            raise ValueError(f"{self._what()}: the initializer of {weight_name!r} returned shape {value.shape}, "
                             f"expected {tuple(shape)}")
        return value

    def __call__(self, x, training=False):
        x = np.asarray(x)
        if not self.built:
            dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
            self.build(self.input_shape if self.input_shape is not None else x.shape[1:], dtype)
        if x.dtype.kind in "iub":
            x = x.astype(self.dtype)
        return self.forward(x, training=training)

    # -- computation -----------------------------------------------------------
    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    # -- bookkeeping -------------------------------------------------------------
    def count_params(self, trainable=True):
        """Trainable parameters (``trainable=True``), or the rest: the state, and the
        parameters of a frozen layer (``layer.trainable = False``)."""
        return int(sum(a.size for a in (self.trainable_weights if trainable else self.non_trainable_weights)))

    @property
    def weights(self):
        """The weight arrays themselves (parameters, then state), as Keras's ``layer.weights``."""
        return list(self.params.values()) + list(self.state.values())

    @property
    def trainable_weights(self):
        """The arrays that training updates: the parameters, none while ``trainable`` is False."""
        return list(self.params.values()) if self.trainable else []

    @property
    def non_trainable_weights(self):
        """The state (e.g. BatchNorm's moving statistics), and the parameters of a frozen layer."""
        return ([] if self.trainable else list(self.params.values())) + list(self.state.values())

    @property
    def losses(self):
        """The penalties (floats) of the layer's regularizers on its current weights, as Keras's
        ``layer.losses``: none while ``trainable`` is False, as Keras 3 regularizes only
        trainable weights."""
        if not self.trainable:
            return []
        return [regularizer(self.params[name]) for name, regularizer in self._regularizers().items()]

    def _regularizers(self):
        """{parameter name: regularizer} of the parameters that have one."""
        return {}

    def _add_regularization_gradients(self):
        """Add the gradients of :attr:`losses` to those of the last backward pass."""
        if self.trainable:
            for name, regularizer in self._regularizers().items():
                self.grads[name] = self.grads[name] + regularizer.gradient(self.params[name])

    def get_weights(self):
        """Copies of the weights (parameters, then state), as Keras's ``layer.get_weights()``."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        """Copy ``weights`` (as from :meth:`get_weights`) into the layer's arrays, in place."""
        if not self.built:
            raise ValueError(f"{self._what()}: set_weights needs a built layer (it has no weights yet); call "
                             "build(input_shape) or the layer itself first")
        _copy_into(f"{self._what()}: set_weights", self.weights, weights, self.weight_names)

    @property
    def weight_names(self):
        """The names of :attr:`weights`, in their order (``kernel``, ``bias``, ``moving_mean``, ...)."""
        return list(self.params) + list(self.state)

    def get_config(self):
        config = {"name": self.name}
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape)
        if not self.trainable:
            config["trainable"] = False
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key, value in cls._legacy_config.items():
            config.setdefault(key, value)
        trainable = config.pop("trainable", True)
        if not isinstance(trainable, bool):
            raise TypeError(f"{cls.__name__}: trainable must be True or False, got {trainable!r}")
        layer = cls(**config)
        layer.trainable = trainable
        return layer

    def _what(self):
        return f"{type(self).__name__} {self.name!r}"

    #: Whether the last forward took its input / gave its output as NCHW transposes of the
    #: layer's NHWC shapes: a Sequential's channels_last layers pass NCHW data along a run of
    #: them (the ``_nchw`` argument of forward, and of backward for the gradients), so that each
    #: layer does not transpose to NCHW and back. A forward called without it (a layer on its
    #: own) sets both back to False; a backward called without it takes and gives NHWC
    #: whatever layout the forward ran in.
    _nchw_in = False
    _nchw_out = False

    def _given_shape(self, shape, nchw):
        """A per-sample (height, width, channels) ``shape`` as the array has it: (channels,
        height, width) where ``nchw``."""
        return (shape[2], shape[0], shape[1]) if nchw else tuple(shape)

    def _check_input(self, x, nchw=False):
        if not self.built:
            raise RuntimeError(f"{self._what()}: call build(input_shape) or the layer itself before forward")
        expected = self._given_shape(self.input_shape, nchw)
        if not isinstance(x, np.ndarray) or x.shape[1:] != expected:
            got = getattr(x, "shape", type(x).__name__)
            raise ValueError(f"{self._what()}: expected input of shape (N, {_fmt(expected)}), got {got}")

    def _check_backward(self, dy, expected_shape):
        if not hasattr(self, "_cache") or self._cache is None:
            raise RuntimeError(f"{self._what()}: backward called before forward")
        if getattr(dy, "shape", None) != tuple(expected_shape):
            raise ValueError(f"{self._what()}: backward expected a gradient of shape {tuple(expected_shape)}, "
                             f"got {getattr(dy, 'shape', type(dy).__name__)}")

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} output_shape={self.output_shape}>"


class _ActivationMixin:
    """Applying an activation after the layer's own op, and its backward."""

    def _set_activation(self, activation, alpha):
        self.activation = normalize_activation(type(self).__name__, activation)
        if alpha is not None:
            if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
                raise TypeError(f"{type(self).__name__}: alpha must be a number, got {type(alpha).__name__}")
            alpha = float(alpha)
            if not math.isfinite(alpha):
                raise ValueError(f"{type(self).__name__}: alpha must be finite, got {alpha}")
            if self.activation not in V.DEFAULT_ALPHA:
                raise ValueError(f"{type(self).__name__}: alpha is for the activations "
                                 f"{' and '.join(V.DEFAULT_ALPHA)}, got alpha={alpha} with activation "
                                 f"{activation!r}")
        self.alpha = alpha


class _WeightRegularizers:
    """Keras's ``kernel_regularizer`` and ``bias_regularizer``: penalties on the layer's
    weights that the model adds to its loss (see :mod:`fastnn.nn.regularizers`)."""

    def _set_regularizers(self, kernel_regularizer, bias_regularizer):
        owner = type(self).__name__
        self.kernel_regularizer = regularizers.get(owner, "kernel_regularizer", kernel_regularizer)
        self.bias_regularizer = regularizers.get(owner, "bias_regularizer", bias_regularizer)

    def _regularizers(self):
        # a bias_regularizer without a bias (use_bias=False) has nothing to act on, as in Keras
        given = {"kernel": self.kernel_regularizer, "bias": self.bias_regularizer}
        return {name: r for name, r in given.items() if r is not None and name in self.params}

    def get_config(self):
        config = super().get_config()
        config.update(kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
                      bias_regularizer=regularizers.serialize(self.bias_regularizer))
        return config


def _relayout(a, nchw, to_nchw):
    """A 4-D array from NCHW (``nchw``) or NHWC to the layout ``to_nchw`` asks for: a contiguous
    copy where they differ (a layer's backward called in another layout than its forward ran in)."""
    if a is None or nchw == to_nchw:
        return a
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2) if to_nchw else a.transpose(0, 2, 3, 1))


class _NCHWTransposes:
    """For a layer whose ``_channels_last`` data goes through the NCHW ops: its arrays to NCHW
    and back, as contiguous copies (the same arrays where it is channels first, or where
    ``nchw``: a Sequential hands them over, or takes them, as NCHW already)."""

    def _to_nchw(self, x, nchw=False):
        if x is None or nchw or not self._channels_last:
            return x
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def _from_nchw(self, x, nchw=False):
        if x is None or nchw or not self._channels_last:
            return x
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


class _ImageLayout(_NCHWTransposes):
    """``data_format`` of the image layers. A channels_last layer computes through the same
    NCHW ops as a channels_first one, transposing its input (and the gradient of its output)
    to NCHW at entry and its output (and the gradient of its input) back at exit, except where
    a Sequential hands it NCHW data or takes its output as NCHW (``_nchw``, see
    ``model._nchw_layouts``); its ``input_shape``/``output_shape`` are (height, width, channels)."""

    _legacy_config = {"data_format": "channels_first"}   # files from before data_format

    def _set_data_format(self, data_format):
        self.data_format = _check_data_format(type(self).__name__, data_format)

    @property
    def _channels_last(self):
        return self.data_format == "channels_last"

    def _nchw_shape(self, input_shape):
        """(channels, height, width) of a per-sample input shape in the layer's format."""
        if len(input_shape) != 3:
            if self._channels_last:
                raise ValueError(f"{self._what()}: expected NHWC input (data_format='channels_last'), i.e. "
                                 f"per-sample shape (height, width, channels), got {tuple(input_shape)}")
            raise ValueError(f"{self._what()}: expected NCHW input, i.e. per-sample shape (channels, height, "
                             f"width), got {tuple(input_shape)}")
        if self._channels_last:
            h, w, c = input_shape
            return (c, h, w)
        return tuple(input_shape)

    def _own_shape(self, nchw_shape):
        """A per-sample (channels, height, width) in the layer's format."""
        if self._channels_last:
            c, h, w = nchw_shape
            return (h, w, c)
        return tuple(nchw_shape)

    def _layout_hint(self, input_shape):
        """What to tell a Keras user whose data looks channels last (e.g. (32, 32, 3) or
        (28, 28, 1)) to a channels_first layer."""
        # square images with 1, 3 or 4 channels last: (28, 28, 1), (32, 32, 3), (224, 224, 3); not
        # (64, 4, 4) feature maps or (12, 1000, 1) signals, which are channels first
        if (self.data_format == "channels_first" and len(input_shape) == 3 and input_shape[-1] in (1, 3, 4)
                and input_shape[0] == input_shape[1] > 4):
            return ("this looks like channels-last (height, width, channels) data, but the layer is channels first "
                    "(channels, height, width), fastnn's default (Keras's is channels last); pass "
                    "data_format=\"channels_last\" or call fastnn.nn.set_image_data_format(\"channels_last\") "
                    "before making the layers, or transpose x with x.transpose(0, 3, 1, 2)")
        return None

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


def normalize_activation(owner, activation):
    if activation is None or activation in ("linear", "identity"):
        return None
    if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
        raise ValueError(f"{owner}: unknown activation {activation!r}; expected None or one of {ACTIVATIONS}")
    return activation.lower()


def activation_forward(x, name, alpha=None):
    """``name`` applied to ``x``; softmax runs along axis 1, the features of (N, D) input
    and the channels of NCHW input."""
    if name is None:
        return x
    if name == "softmax":
        return ops.softmax(x, axis=1)
    return ops.activation(x, name, alpha=alpha)


def activation_backward(dy, name, x, y, alpha=None):
    if name is None:
        return dy
    if name == "softmax":
        # The Jacobian-vector product of softmax: dx = y * (dy - sum(dy * y)) along its axis.
        return y * (dy - np.sum(dy * y, axis=1, keepdims=True))
    return ops.activation_backward(dy, name, x=x, y=y, alpha=alpha)


class Dense(_ActivationMixin, _WeightRegularizers, Layer):
    """A fully connected layer ``activation(x @ kernel + bias)`` on (N, input_dim) input.
    ``kernel`` has shape (input_dim, units), as ``fastnn.ops.linear`` takes it."""

    supports_logits = True

    def __init__(self, units, activation=None, input_dim=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", use_bias=True, alpha=None, name=None, input_shape=None,
                 kernel_regularizer=None, bias_regularizer=None):
        if input_dim is not None:
            if input_shape is not None:
                raise ValueError("Dense: give input_dim or input_shape, not both")
            input_shape = (input_dim,)
        super().__init__(name=name, input_shape=input_shape)
        self.units = _positive_int(self, "units", units)
        self._set_activation(activation, alpha)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.use_bias = bool(use_bias)
        self._set_regularizers(kernel_regularizer, bias_regularizer)
        self._cache = None

    def compute_output_shape(self, input_shape):
        if len(input_shape) == 0:
            raise ValueError(f"{self._what()}: expected a batch of 1-D samples (N, features), got a 1-D "
                             f"input (scalar samples); reshape it to (N, 1), or to (1, features) for one sample")
        if len(input_shape) != 1:
            raise ValueError(f"{self._what()}: expected 1-D samples (N, features), got per-sample shape "
                             f"{tuple(input_shape)}; add a Flatten layer before it")
        return (self.units,)

    def param_shapes(self, input_shape):
        self.compute_output_shape(input_shape)
        shapes = {"kernel": (input_shape[0], self.units)}
        if self.use_bias:
            shapes["bias"] = (self.units,)
        return shapes

    def _initial_value(self, weight_name, shape, dtype, rng):
        init = self.kernel_initializer if weight_name == "kernel" else self.bias_initializer
        return initializers.draw(init, shape, dtype, rng)

    def forward(self, x, training=False, logits=False):
        self._check_input(x)
        act = None if logits else self.activation
        kernel, bias = self.params["kernel"], self.params.get("bias")
        z = None
        if act == "softmax":
            y = activation_forward(ops.linear(x, kernel, bias), "softmax")
        elif act in ("leaky_relu", "elu") and self.alpha is not None and self.alpha < 0:
            # a negative slope folds y, so the derivative needs z: not fused into linear
            z = ops.linear(x, kernel, bias)
            y = activation_forward(z, act, self.alpha)
        else:
            y = ops.linear(x, kernel, bias, activation=act, alpha=None if act is None else self.alpha)
        self._cache = (x, y, act, z)
        return y

    def backward(self, dy):
        self._check_backward(dy, (self._cache[0].shape[0], self.units) if self._cache else ())
        x, y, act, z = self._cache
        if act == "softmax":
            dy, act = activation_backward(dy, "softmax", None, y), None
        elif z is not None:
            dy, act = activation_backward(dy, act, z, y, self.alpha), None
        dx, dkernel, dbias = ops.linear_backward(dy, x, self.params["kernel"], activation=act,
                                                 y=None if act is None else y,
                                                 alpha=None if act is None else self.alpha)
        self.grads["kernel"] = dkernel
        if self.use_bias:
            self.grads["bias"] = dbias
        return dx

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=self.activation, alpha=self.alpha,
                      use_bias=self.use_bias,
                      kernel_initializer=initializers.serialize(self.kernel_initializer),
                      bias_initializer=initializers.serialize(self.bias_initializer))
        return config


class Conv2D(_ActivationMixin, _WeightRegularizers, _ImageLayout, Layer):
    """2-D convolution on NCHW input (channels first), or NHWC with
    ``data_format="channels_last"``. ``kernel`` has shape (filters, channels, kh, kw) in
    either format (Keras's is (kh, kw, channels, filters): ``k.transpose(3, 2, 0, 1)``).
    ``padding`` is ``"valid"`` (none), ``"same"`` (output size ceil(H / stride), the extra
    row/column of an odd total padding at the bottom/right, as Keras and TensorFlow do) or an
    int / (ph, pw) pair of symmetric zero padding."""

    supports_logits = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None, alpha=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 data_format=None, name=None, input_shape=None, kernel_regularizer=None, bias_regularizer=None):
        super().__init__(name=name, input_shape=input_shape)
        self._set_data_format(data_format)
        self.filters = _positive_int(self, "filters", filters)
        self.kernel_size = _pair(self, "kernel_size", kernel_size)
        self.strides = _pair(self, "strides", strides)
        if isinstance(padding, str):
            if padding.lower() not in ("valid", "same"):
                raise ValueError(f"Conv2D: padding must be 'valid', 'same' or an int pair, got {padding!r}")
            self.padding = padding.lower()
        else:
            self.padding = _pair(self, "padding", padding, minimum=0)
        self._set_activation(activation, alpha)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.use_bias = bool(use_bias)
        self._set_regularizers(kernel_regularizer, bias_regularizer)
        self._cache = None
        self._pooled_cache = None  # (x, pooled y, argmax, pool layer) of forward_max_pool
        self._unfused_pool = None  # the pool layer where forward_max_pool ran the two layers apart

    def _geometry(self, input_shape):
        """(pad, extra, (oh, ow)): the symmetric pad given to ops.conv2d, the extra zero
        rows/columns appended at the bottom/right ("same" with an odd total), the output size.
        ``input_shape`` is in the layer's format."""
        _, h, w = self._nchw_shape(input_shape)
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        if self.padding == "same":
            pads, extra, out = [], [], []
            for size, k, s in ((h, kh, sh), (w, kw, sw)):
                o = -(-size // s)
                total = max((o - 1) * s + k - size, 0)
                pads.append(total // 2)
                extra.append(total - 2 * (total // 2))
                out.append(o)
            return tuple(pads), tuple(extra), tuple(out)
        pad = (0, 0) if self.padding == "valid" else self.padding
        oh = (h + 2 * pad[0] - kh) // sh + 1
        ow = (w + 2 * pad[1] - kw) // sw + 1
        if h + 2 * pad[0] < kh or w + 2 * pad[1] < kw:
            raise ValueError(f"{self._what()}: kernel {self.kernel_size} is larger than the (padded) input "
                             f"{(h + 2 * pad[0], w + 2 * pad[1])}")
        return pad, (0, 0), (oh, ow)

    def compute_output_shape(self, input_shape):
        _, _, (oh, ow) = self._geometry(input_shape)
        return self._own_shape((self.filters, oh, ow))

    def param_shapes(self, input_shape):
        self._geometry(input_shape)
        shapes = {"kernel": (self.filters, self._nchw_shape(input_shape)[0]) + self.kernel_size}
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def _initial_value(self, weight_name, shape, dtype, rng):
        init = self.kernel_initializer if weight_name == "kernel" else self.bias_initializer
        return initializers.draw(init, shape, dtype, rng)

    def _build_extra(self, input_shape, rng):
        self._pad, self._extra, _ = self._geometry(input_shape)

    def forward(self, x, training=False, logits=False, _nchw=(False, False)):
        self._check_input(x, _nchw[0])
        self._nchw_in, self._nchw_out = _nchw
        x = self._to_nchw(x, self._nchw_in)
        act = None if logits else self.activation
        if self._extra != (0, 0):
            x_in = np.pad(x, ((0, 0), (0, 0), (0, self._extra[0]), (0, self._extra[1])))
        else:
            x_in = x
        kernel, bias = self.params["kernel"], self.params.get("bias")
        if act in _FUSED_FROM_OUTPUT:
            # The activation runs inside the convolution; its derivative comes from y alone.
            y = ops.conv2d(x_in, kernel, bias, stride=self.strides, pad=self._pad, activation=act)
            z = None
        else:
            z = ops.conv2d(x_in, kernel, bias, stride=self.strides, pad=self._pad)
            y = activation_forward(z, act, self.alpha)
        self._cache = (x_in, z, y, act, x.shape)
        self._pooled_cache = self._unfused_pool = None
        return self._from_nchw(y, self._nchw_out)

    def fuses_with(self, pool):
        """Whether forward_max_pool can stand for this layer followed by the MaxPool2D `pool`:
        no bottom/right "same" padding to add and an activation whose derivative comes from
        its output. A channels_last pair fuses too (transposed at the conv's entry and after the pool);
        a pair of different formats runs apart."""
        return (isinstance(pool, MaxPool2D) and pool.data_format == self.data_format and self._extra == (0, 0)
                and self.activation in (None,) + _FUSED_FROM_OUTPUT)

    def forward_max_pool(self, x, pool, training=False, _nchw=(False, False)):
        """pool.forward(self.forward(x)) in one op: each output plane is pooled while in cache
        (ops.conv2d_max_pool2d). Then backward_max_pool(dy) is the backward of both. Output
        planes past the fused op's int32 argmax (2**31 - 1 elements) run the two layers apart.
        ``_nchw``: the layouts of this layer's input and of the pool's output."""
        self._check_input(x, _nchw[0])
        self._nchw_in, self._nchw_out = _nchw
        _, _, (oh, ow) = self._geometry(self.input_shape)
        if oh * ow > 2**31 - 1:
            y = self.forward(x, training=training, _nchw=(_nchw[0], False))
            y = pool.forward(y, training=training, _nchw=(False, _nchw[1]))
            self._unfused_pool = pool
            return y
        self._unfused_pool = None
        x = self._to_nchw(x, self._nchw_in)
        kernel, bias = self.params["kernel"], self.params.get("bias")
        y, argmax = ops.conv2d_max_pool2d(x, kernel, bias, stride=self.strides, pad=self._pad,
                                          activation=self.activation, pool_h=pool.pool_size[0],
                                          pool_w=pool.pool_size[1], pool_stride=pool.strides, pool_pad=pool.padding)
        self._pooled_cache = self._cache = (x, y, argmax, pool)
        pool._cache = None
        return self._from_nchw(y, self._nchw_out)

    def backward_max_pool(self, dy, need_dx=True, _nchw=(False, False)):
        """The backward of forward_max_pool, from the gradient of the pooled output."""
        if self._unfused_pool is not None:
            dy = self._unfused_pool.backward(dy, _nchw=(False, _nchw[1]))
            return self.backward(dy, need_dx=need_dx, _nchw=(_nchw[0], False))
        if self._pooled_cache is None:
            raise RuntimeError(f"{self._what()}: backward_max_pool needs forward_max_pool first")
        x, y, argmax, pool = self._pooled_cache
        self._check_backward(dy, (y.shape[0],) + self._given_shape(pool.output_shape, _nchw[1]))
        dy = self._to_nchw(dy, _nchw[1])
        dx, dkernel, dbias = ops.conv2d_max_pool2d_backward(
            dy, argmax, y, x, self.params["kernel"], stride=self.strides, pad=self._pad, activation=self.activation,
            pool_h=pool.pool_size[0], pool_w=pool.pool_size[1], pool_stride=pool.strides, pool_pad=pool.padding,
            need_dx=bool(need_dx))
        self.grads["kernel"] = dkernel
        if self.use_bias:
            self.grads["bias"] = dbias
        return self._from_nchw(dx, _nchw[0])

    def backward(self, dy, need_dx=True, _nchw=(False, False)):
        if self._pooled_cache is not None:
            raise RuntimeError(f"{self._what()}: the last forward was fused with pooling; use backward_max_pool")
        self._check_backward(dy, (self._cache[2].shape[0],) + self._given_shape(self.output_shape, _nchw[1])
                             if self._cache else ())
        dy = self._to_nchw(dy, _nchw[1])
        x_in, z, y, act, x_shape = self._cache
        if act in _FUSED_FROM_OUTPUT:
            # relu(z) > 0 exactly where z > 0, so y stands in for z in relu's derivative.
            dz = activation_backward(dy, act, x=y, y=y)
        else:
            dz = activation_backward(dy, act, z, y, self.alpha)
        dx, dkernel, dbias = ops.conv2d_backward(dz, x_in, self.params["kernel"], stride=self.strides,
                                                 pad=self._pad, need_dx=bool(need_dx))
        self.grads["kernel"] = dkernel
        if self.use_bias:
            self.grads["bias"] = dbias
        if dx is not None and self._extra != (0, 0):
            dx = np.ascontiguousarray(dx[:, :, :x_shape[2], :x_shape[3]])
        return self._from_nchw(dx, _nchw[0])

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=list(self.kernel_size), strides=list(self.strides),
                      padding=self.padding if isinstance(self.padding, str) else list(self.padding),
                      activation=self.activation, alpha=self.alpha, use_bias=self.use_bias,
                      kernel_initializer=initializers.serialize(self.kernel_initializer),
                      bias_initializer=initializers.serialize(self.bias_initializer))
        return config


class _Pool2D(_ImageLayout, Layer):
    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        self._set_data_format(data_format)
        self.pool_size = _pair(self, "pool_size", pool_size)
        self.strides = self.pool_size if strides is None else _pair(self, "strides", strides)
        if isinstance(padding, str):
            if padding.lower() != "valid":
                raise ValueError(f"{type(self).__name__}: padding must be 'valid' or an int pair, got {padding!r}")
            self.padding = (0, 0)
        else:
            self.padding = _pair(self, "padding", padding, minimum=0)
        if 2 * self.padding[0] > self.pool_size[0] or 2 * self.padding[1] > self.pool_size[1]:
            raise ValueError(f"{type(self).__name__}: padding {self.padding} must be at most half the pool "
                             f"size {self.pool_size}")
        self._cache = None

    def compute_output_shape(self, input_shape):
        c, h, w = self._nchw_shape(input_shape)
        (ph, pw), (sh, sw), (dh, dw) = self.pool_size, self.strides, self.padding
        if h + 2 * dh < ph or w + 2 * dw < pw:
            raise ValueError(f"{self._what()}: pool {self.pool_size} is larger than the input {(h, w)}")
        return self._own_shape((c, (h + 2 * dh - ph) // sh + 1, (w + 2 * dw - pw) // sw + 1))

    def _pool_args(self):
        return dict(pool_w=self.pool_size[1], stride=self.strides, pad=self.padding)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=list(self.pool_size), strides=list(self.strides), padding=list(self.padding))
        return config


class MaxPool2D(_Pool2D):
    """Max pooling on NCHW input (NHWC with ``data_format="channels_last"``); ``strides``
    defaults to ``pool_size``."""

    def forward(self, x, training=False, _nchw=(False, False)):
        self._check_input(x, _nchw[0])
        self._nchw_in, self._nchw_out = _nchw
        x = self._to_nchw(x, self._nchw_in)
        y, argmax = ops.max_pool2d(x, self.pool_size[0], **self._pool_args())
        self._cache = (argmax, x.shape)
        return self._from_nchw(y, self._nchw_out)

    def backward(self, dy, _nchw=(False, False)):
        self._check_backward(dy, (self._cache[0].shape[0],) + self._given_shape(self.output_shape, _nchw[1])
                             if self._cache else ())
        argmax, x_shape = self._cache
        dx = ops.max_pool2d_backward(self._to_nchw(dy, _nchw[1]), argmax, x_shape, self.pool_size[0],
                                     **self._pool_args())
        return self._from_nchw(dx, _nchw[0])


class AvgPool2D(_Pool2D):
    """Average pooling on NCHW input (NHWC with ``data_format="channels_last"``; padding
    counts in the divisor)."""

    def forward(self, x, training=False, _nchw=(False, False)):
        self._check_input(x, _nchw[0])
        self._nchw_in, self._nchw_out = _nchw
        x = self._to_nchw(x, self._nchw_in)
        y = ops.avg_pool2d(x, self.pool_size[0], **self._pool_args())
        self._cache = (x.shape, y.shape)
        return self._from_nchw(y, self._nchw_out)

    def backward(self, dy, _nchw=(False, False)):
        self._check_backward(dy, (self._cache[1][0],) + self._given_shape(self.output_shape, _nchw[1])
                             if self._cache else ())
        dx = ops.avg_pool2d_backward(self._to_nchw(dy, _nchw[1]), self._cache[0], self.pool_size[0],
                                     **self._pool_args())
        return self._from_nchw(dx, _nchw[0])


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...)."""

    def __init__(self, name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        self._cache = None

    def compute_output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x, training=False):
        self._check_input(x)
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        self._check_backward(dy, (self._cache[0],) + self.output_shape if self._cache else ())
        return dy.reshape(self._cache)


class _GlobalPool2D(_ImageLayout, Layer):
    """Pooling over the whole of each channel plane: NCHW (N, C, H, W) (or NHWC (N, H, W, C)
    with ``data_format="channels_last"``) -> (N, C), one ``fastnn.ops`` pooling window of the
    plane's size."""

    def __init__(self, data_format=None, name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        self._set_data_format(data_format)
        self._cache = None

    def compute_output_shape(self, input_shape):
        return (self._nchw_shape(input_shape)[0],)

    def _pool_args(self):
        h, w = self._nchw_shape(self.input_shape)[1:]
        return dict(pool_h=h, pool_w=w, stride=(h, w), pad=(0, 0))

    def backward(self, dy, _nchw=(False, False)):
        self._check_backward(dy, (self._cache[1][0],) + self.output_shape if self._cache else ())
        return self._from_nchw(self._pool_backward(dy.reshape(dy.shape + (1, 1))), _nchw[0])


class GlobalAveragePooling2D(_GlobalPool2D):
    """The mean of each channel plane: (N, C, H, W) or (N, H, W, C) -> (N, C)."""

    def forward(self, x, training=False, _nchw=(False, False)):
        self._check_input(x, _nchw[0])
        self._nchw_in, self._nchw_out = _nchw
        x = self._to_nchw(x, self._nchw_in)
        y = ops.avg_pool2d(x, **self._pool_args())
        self._cache = (None, x.shape)
        return y.reshape(y.shape[:2])

    def _pool_backward(self, dy):
        return ops.avg_pool2d_backward(dy, self._cache[1], **self._pool_args())


class GlobalMaxPooling2D(_GlobalPool2D):
    """The maximum of each channel plane: (N, C, H, W) or (N, H, W, C) -> (N, C)."""

    def forward(self, x, training=False, _nchw=(False, False)):
        self._check_input(x, _nchw[0])
        self._nchw_in, self._nchw_out = _nchw
        x = self._to_nchw(x, self._nchw_in)
        y, argmax = ops.max_pool2d(x, **self._pool_args())
        self._cache = (argmax, x.shape)
        return y.reshape(y.shape[:2])

    def _pool_backward(self, dy):
        argmax, x_shape = self._cache
        return ops.max_pool2d_backward(dy, argmax, x_shape, **self._pool_args())


class Reshape(Layer):
    """(N, ...) -> (N, *target_shape), in C order; one entry of ``target_shape`` may be -1
    (inferred), as in Keras."""

    def __init__(self, target_shape, name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        if _is_int(target_shape):
            target_shape = (target_shape,)
        if (not isinstance(target_shape, (tuple, list)) or not target_shape
                or not all(_is_int(s) for s in target_shape)):
            raise TypeError(f"Reshape: target_shape must be a tuple of ints (without the batch axis), got "
                            f"{target_shape!r}")
        target_shape = tuple(int(s) for s in target_shape)
        if any(s < 1 and s != -1 for s in target_shape) or target_shape.count(-1) > 1:
            raise ValueError(f"Reshape: target_shape must have sizes >= 1 and at most one -1, got {target_shape}")
        self.target_shape = target_shape
        self._cache = None

    def compute_output_shape(self, input_shape):
        size = math.prod(input_shape)
        known = math.prod(s for s in self.target_shape if s != -1)
        if -1 in self.target_shape:
            if size % known:
                raise ValueError(f"{self._what()}: cannot reshape per-sample shape {tuple(input_shape)} ({size} "
                                 f"values) to {self.target_shape}: {size} is not a multiple of {known}")
            return tuple(size // known if s == -1 else s for s in self.target_shape)
        if known != size:
            raise ValueError(f"{self._what()}: cannot reshape per-sample shape {tuple(input_shape)} ({size} values) "
                             f"to {self.target_shape} ({known} values)")
        return self.target_shape

    def forward(self, x, training=False):
        self._check_input(x)
        self._cache = x.shape
        return x.reshape((x.shape[0],) + self.output_shape)

    def backward(self, dy):
        self._check_backward(dy, (self._cache[0],) + self.output_shape if self._cache else ())
        return dy.reshape(self._cache)

    def get_config(self):
        config = super().get_config()
        config.update(target_shape=list(self.target_shape))
        return config


class InputLayer(Layer):
    """Declares the per-sample input ``shape`` (no batch axis, as ``keras.Input``'s) as the first
    element of a :class:`~fastnn.nn.Sequential`. It is not one of the model's layers: the model
    builds its first layer for that shape. Every size must be given (Keras's None, a size that
    varies from batch to batch, is not supported)."""

    def __init__(self, shape=None, name=None, input_shape=None):
        if shape is not None and input_shape is not None:
            raise ValueError("InputLayer: give shape or input_shape, not both")
        shape = input_shape if shape is None else shape
        if shape is None:
            raise ValueError("Input: a shape is required, e.g. Input(shape=(1, 28, 28))")
        if isinstance(shape, (tuple, list)) and any(s is None for s in shape):
            raise ValueError(f"Input: every size of the per-sample shape must be given (a None, Keras's size "
                             f"that varies per batch, is not supported; the batch axis is left out), got "
                             f"{tuple(shape)}")
        super().__init__(name=name, input_shape=shape)
        self.shape = self.input_shape

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {"name": self.name, "shape": list(self.shape)}


del _LAYER_CLASSES["InputLayer"]   # never one of a model's layers, so never in a saved architecture


def Input(shape=None, name=None):
    """``keras.Input(shape=...)`` for a Sequential's first element: an :class:`InputLayer`."""
    return InputLayer(shape=shape, name=name)


class Dropout(Layer):
    """Inverted dropout: in training each element is zeroed with probability ``rate``
    and the rest scaled by 1/(1-rate); at inference it is the identity. (The book's
    ``fastnn.layers.Dropout`` instead scales at inference; the expected outputs agree.)"""

    def __init__(self, rate, seed=None, name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
            raise TypeError(f"Dropout: rate must be a number, got {type(rate).__name__}")
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"Dropout: seed must be an int or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self._cache = None

    def _build_extra(self, input_shape, rng):
        if self.seed is not None:
            self.rng = np.random.default_rng(self.seed)
        else:
            self.rng = np.random.default_rng(rng.integers(2**63))

    def forward(self, x, training=False, _nchw=(False, False)):
        self._check_input(x, _nchw[0])
        self._nchw_in, self._nchw_out = _nchw
        if not training or self.rate == 0.0:
            self._cache = (None, x.shape, self._nchw_in)
            return x
        # drawn in the layer's own (NHWC) order whatever x's, so that NCHW data in a Sequential's
        # run loses the elements it would lose in NHWC
        keep = self.rng.random((x.shape[0],) + self.input_shape, dtype=x.dtype) >= self.rate
        if self._nchw_in:
            keep = np.ascontiguousarray(keep.transpose(0, 3, 1, 2))
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        self._cache = (mask, x.shape, self._nchw_in)
        return x * mask

    def backward(self, dy, _nchw=(False, False)):
        self._check_backward(dy, (self._cache[1][0],) + self._given_shape(self.input_shape, _nchw[1])
                             if self._cache else ())
        mask, _, nchw = self._cache
        return dy if mask is None else dy * _relayout(mask, nchw, _nchw[1])

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


class BatchNorm(_NCHWTransposes, Layer):
    """Batch normalization: per feature on (N, D) input, per channel on NCHW (or, with
    ``axis=-1``/``3``, NHWC) input.
    Training uses the batch statistics and updates the moving averages
    ``moving = momentum * moving + (1 - momentum) * batch``; inference uses the moving ones.
    The batch variance, for normalising and for the moving average alike, is the biased one
    (divided by N, or N*H*W per channel), as in Keras and the book; PyTorch's moving average
    takes the unbiased one, and its ``momentum`` is this one's ``1 - momentum``.

    ``axis`` (Keras's) is the axis normalised over: 1 or -1 on (N, D) input (the features); 1
    (NCHW) or 3 / -1 (NHWC) on 4-D input. None takes the channel axis of the nearest image layer
    before it in a Sequential, else of the global image data format at construction (1 for
    "channels_first", -1 for "channels_last"), which is also the feature axis of (N, D) input.
    (Keras's default is -1 whatever the data format.)"""

    _legacy_config = {"axis": 1}   # files from before axis: per channel of NCHW

    def __init__(self, momentum=0.9, epsilon=1e-5, axis=None, name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        # None: the global format's channel axis for now; a Sequential resolves it at build from
        # the image layer before it (_resolve_axis), as that layer's output is what it normalises
        self._axis_given = axis is not None
        if axis is None:
            axis = 1 if _image_data_format == "channels_first" else -1
        if not _is_int(axis) or int(axis) not in (1, 3, -1):
            raise ValueError(f"BatchNorm: axis must be 1 or -1 for (N, features) input, 1 (channels first), 3 or -1 "
                             f"(channels last) for 4-D input, or None (the global image data format's), got {axis!r}")
        self.axis = int(axis)
        self.momentum = _check_number("BatchNorm", "momentum", momentum, minimum=0.0)
        if self.momentum > 1.0:
            raise ValueError(f"BatchNorm: momentum must be in [0, 1], got {momentum}")
        self.epsilon = _check_number("BatchNorm", "epsilon", epsilon, minimum=0.0, strictly=True)
        self._cache = None

    def _features(self, input_shape):
        if len(input_shape) == 1:
            if self.axis == 3:
                raise ValueError(f"{self._what()}: axis 3 is for 4-D input; (N, features) input is normalised over "
                                 f"axis 1 (or -1), got per-sample shape {tuple(input_shape)}")
            return input_shape[0]
        if len(input_shape) == 3:
            return input_shape[0] if self.axis == 1 else input_shape[2]
        raise ValueError(f"{self._what()}: expected (N, features) or NCHW input, got per-sample shape "
                         f"{tuple(input_shape)}")

    def param_shapes(self, input_shape):
        n = self._features(input_shape)
        return {"gamma": (n,), "beta": (n,)}

    def state_shapes(self, input_shape):
        n = self._features(input_shape)
        return {"moving_mean": (n,), "moving_variance": (n,)}

    def _initial_value(self, weight_name, shape, dtype, rng):
        fill = 1.0 if weight_name in ("gamma", "moving_variance") else 0.0
        return np.full(shape, fill, dtype=dtype)

    @property
    def _channels_last(self):
        return self.axis != 1 and len(self.input_shape) == 3

    def forward(self, x, training=False, _nchw=(False, False)):
        self._check_input(x, _nchw[0])
        self._nchw_in, self._nchw_out = _nchw
        x = self._to_nchw(x, self._nchw_in)   # channels last: through the per-channel op on NCHW
        out, cache = ops.batch_norm_forward(
            x, self.params["gamma"], self.params["beta"], self.state["moving_mean"],
            self.state["moving_variance"], momentum=self.momentum, eps=self.epsilon,
            train=bool(training) and self.trainable,
            per_channel=x.ndim == 4)
        out = self._from_nchw(out, self._nchw_out)
        self._cache = (cache, out.shape)
        return out

    def backward(self, dy, _nchw=(False, False)):
        self._check_backward(dy, (self._cache[1][0],) + self._given_shape(self.input_shape, _nchw[1])
                             if self._cache else ())
        dy = self._to_nchw(dy, _nchw[1])
        dx, dgamma, dbeta = ops.batch_norm_backward(dy, self._cache[0])
        self.grads["gamma"], self.grads["beta"] = dgamma, dbeta
        return self._from_nchw(dx, _nchw[0])

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, epsilon=self.epsilon, axis=self.axis)
        return config


class Activation(_ActivationMixin, Layer):
    """An activation as a layer: one of ``ACTIVATIONS`` ("softmax" along axis 1: the features
    of (N, D) input, the channels of NCHW input; on NHWC input that is the height, not the
    channels as in Keras)."""

    supports_logits = True

    def __init__(self, activation, alpha=None, name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        self._set_activation(activation, alpha)
        self._cache = None

    def forward(self, x, training=False, logits=False, _nchw=(False, False)):
        # elementwise (softmax aside, which a Sequential keeps out of NCHW runs): any layout
        self._check_input(x, _nchw[0])
        self._nchw_in, self._nchw_out = _nchw
        act = None if logits else self.activation
        y = activation_forward(x, act, self.alpha)
        self._cache = (x, y, act, self._nchw_in)
        return y

    def backward(self, dy, _nchw=(False, False)):
        self._check_backward(dy, (self._cache[0].shape[0],) + self._given_shape(self.input_shape, _nchw[1])
                             if self._cache else ())
        x, y, act, nchw = self._cache
        dx = activation_backward(_relayout(dy, _nchw[1], nchw), act, x, y, self.alpha)
        return _relayout(dx, nchw, _nchw[0])

    def get_config(self):
        config = super().get_config()
        config.update(activation=self.activation, alpha=self.alpha)
        return config


# -- argument helpers ----------------------------------------------------------------
def _copy_into(what, targets, weights, names):
    """Check ``weights`` against the arrays ``targets`` (count, shapes, numeric dtypes), then
    copy; ``names`` name the targets in errors."""
    weights = list(weights)
    if len(weights) != len(targets):
        raise ValueError(f"{what}: expected {len(targets)} arrays ({', '.join(names)}), got {len(weights)}")
    values = []
    for i, (target, value, name) in enumerate(zip(targets, weights, names)):
        value = np.asarray(value)
        if value.shape != target.shape:
            raise ValueError(f"{what}: array {i} ({name}) has shape {value.shape}, expected {target.shape}")
        if value.dtype.kind not in "fiu":
            raise TypeError(f"{what}: array {i} ({name}) has dtype {value.dtype}, expected a float array")
        values.append(value)
    for target, value in zip(targets, values):
        np.copyto(target, value, casting="unsafe")


def _fmt(shape):
    return ", ".join(str(s) for s in shape)


def _is_int(v):
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


def _positive_int(layer, what, value):
    if not _is_int(value):
        raise TypeError(f"{type(layer).__name__}: {what} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{type(layer).__name__}: {what} must be >= 1, got {value}")
    return int(value)


def _pair(layer, what, value, minimum=1):
    if _is_int(value):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(_is_int(v) for v in value):
        raise TypeError(f"{type(layer).__name__}: {what} must be an int or a pair of ints, got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{type(layer).__name__}: {what} must be >= {minimum}, got {tuple(value)}")
    return (int(value[0]), int(value[1]))


def _shape_tuple(layer, what, shape):
    if _is_int(shape):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not all(_is_int(s) for s in shape):
        raise TypeError(f"{type(layer).__name__}: {what} must be a tuple of ints (without the batch axis), "
                        f"got {shape!r}")
    shape = tuple(int(s) for s in shape)
    if any(s < 1 for s in shape):
        raise ValueError(f"{type(layer).__name__}: {what} must have sizes >= 1, got {shape}")
    return shape
