"""``Sequential``: a stack of layers with Keras-style ``compile``, ``fit``, ``evaluate``,
``predict``, ``summary`` and ``save``.

Training step: the layers' forward passes, the loss (``fastnn.ops``), the backward
passes in reverse order, then one ``optimizer.update(params, grads)`` (``fastnn.optim``)
over the dicts ``{"<layer>/<weight>": array}``. With a softmax or sigmoid output and the
matching cross-entropy loss, the last layer returns its logits and the loss op computes
the activation and the cross-entropy together (exact and stable for any logits).
"""
import functools
import signal
import sys
import threading

import numpy as np

from fastnn import _validate as V, optim as _optim
from fastnn.nn import callbacks as _callbacks
from fastnn.nn import losses as _losses
from fastnn.nn import metrics as _metrics
from fastnn.nn.layers import (_copy_into, Activation, AvgPool2D, BatchNorm, Conv2D, Dropout, GlobalAveragePooling2D,
                              GlobalMaxPooling2D, InputLayer, Layer, MaxPool2D, activation_forward, get_layer_class)
from fastnn.nn.progress import Progbar, format_logs


def _resolve_axis(layer, before):
    """A BatchNorm without an explicit axis normalises the channels of the nearest image layer
    before it (channels last after a channels_last Conv2D, whatever the global default)."""
    if not isinstance(layer, BatchNorm) or layer._axis_given:
        return
    for previous in reversed(before):
        if getattr(previous, "data_format", None) is not None:
            layer.axis = 1 if previous.data_format == "channels_first" else -1
            return

__all__ = ["Sequential"]

# The layers (these classes exactly: a subclass may compute otherwise) that a run of NCHW data
# passes through: channels_last image layers that take and give 4-D NCHW, the global poolings
# that take it (their (N, C) output has no layout), and the layers whose output is elementwise
# in their input, for which any layout is the same computation. Softmax runs along axis 1, the
# height of NHWC data: not elementwise.
_NCHW_IMAGE = (Conv2D, MaxPool2D, AvgPool2D, BatchNorm)
_NCHW_SINK = (GlobalAveragePooling2D, GlobalMaxPooling2D)


def _nchw_role(layer):
    kind = type(layer)
    if kind in _NCHW_IMAGE or kind in _NCHW_SINK:
        return ("image" if kind in _NCHW_IMAGE else "sink") if layer._channels_last else None
    if kind is Dropout or (kind is Activation and layer.activation != "softmax"):
        return "elementwise"
    return None


def _layout_kwargs(layouts, first, last):
    """The ``_nchw`` argument of the forward (or backward) of layers first..last (a fused pair:
    the conv's input, the pool's output), where their data is NCHW; none for layers outside the
    runs, which are called as a user calls them (not every layer takes it)."""
    pair = (layouts.get(first, (False, False))[0], layouts.get(last, (False, False))[1])
    return {"_nchw": pair} if any(pair) else {}


def _nchw_layouts(layers, fused=()):
    """{index: (input NCHW, output NCHW)} of the layers that take or give NCHW data: the array
    between two layers is NCHW where, through elementwise layers only, a channels_last image
    layer gives it and a channels_last image layer or global pooling takes it. Everywhere else
    (the model's input and output, Flatten, Reshape, Dense, a channels_first layer, ...) it is
    in the layers' own format, as when each layer runs on its own."""
    roles = [_nchw_role(layer) for layer in layers]
    for i in fused:   # a fused pair is one layer: its pool joins a run only with its convolution
        if roles[i] is None:
            roles[i + 1] = None
    gives = []     # whether layer i's output can be NCHW
    for i, role in enumerate(roles):
        gives.append(role == "image" or (role == "elementwise" and i > 0 and gives[i - 1]))
    takes = [False] * len(layers)    # whether layer i's input can be NCHW
    for i in reversed(range(len(layers))):
        takes[i] = roles[i] in ("image", "sink") or (roles[i] == "elementwise" and i + 1 < len(layers)
                                                     and takes[i + 1])
    between = [gives[i] and takes[i + 1] for i in range(len(layers) - 1)]
    layouts = {}
    for i in range(len(layers)):
        layout = (i > 0 and between[i - 1], i + 1 < len(layers) and between[i])
        if any(layout):
            layouts[i] = layout
    return layouts


class Sequential:
    """A linear stack of layers.

    ``dtype``: float32 (default) or float64, the dtype of every weight and of the
    computation (inputs are converted). ``seed``: seeds the weight initialisation, the
    dropout masks and the shuffling, for reproducible runs (``fit(seed=...)`` reseeds
    the last two for one call).
    """

    def __init__(self, layers=None, name=None, dtype="float32", seed=None):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Sequential: name must be a string, got {type(name).__name__}")
        self.name = name or "sequential"
        self.dtype = _check_dtype("Sequential", dtype)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"Sequential: seed must be an int or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self._rng = np.random.default_rng(self.seed)
        self.layers = []
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self.optimizer = None
        self.loss = None
        self.metrics = []
        self._metric_specs = []
        self.weighted_metrics = []   # weighted by sample_weight/class_weight, logged under _weighted_names
        self._weighted_names = []
        self._weighted_metric_specs = []
        self.compiled = False
        self.stop_training = False
        self.history = None
        self._resolved = False
        self._fused_last = set()
        self._declared_input_shape = None   # from an Input given first
        if layers is not None:
            if isinstance(layers, Layer) or not hasattr(layers, "__iter__"):
                raise TypeError("Sequential: expected a list of layers")
            for layer in layers:
                self.add(layer)

    # ------------------------------------------------------------------ building
    def add(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a fastnn.nn layer, got {type(layer).__name__}")
        if isinstance(layer, InputLayer):
            if self.layers or self._declared_input_shape is not None:
                raise ValueError(f"Sequential.add: an Input must be the model's first element; this model already "
                                 f"has {'layers' if self.layers else 'an Input'}")
            self._declared_input_shape = layer.shape
            return
        if any(existing is layer for existing in self.layers):
            raise ValueError(f"Sequential.add: layer {layer.name!r} is already in the model")
        names = {existing.name for existing in self.layers}
        name = layer.name
        if name in names:
            if not layer._auto_name or layer.built:  # a built layer's weights are named after it elsewhere
                raise ValueError(f"Sequential.add: a layer named {layer.name!r} is already in the model")
            k = 1
            while f"{layer.name}_{k}" in names:
                k += 1
            name = f"{layer.name}_{k}"
        if layer.built:
            # never rebuilt with fresh weights: a built layer joins where its shape and dtype fit
            given = self.output_shape if self.layers else layer.input_shape
            if not (self.built or not self.layers) or given != layer.input_shape or layer.dtype != self.dtype:
                raise ValueError(f"Sequential.add: layer {layer.name!r} is built for inputs {layer.input_shape} of "
                                 f"{layer.dtype}, but this model gives it {given} of {self.dtype}; add an unbuilt "
                                 "layer (a built one keeps its weights, and fits only where those match)")
        # Built before the model changes, so that an add that raises leaves the model as it was.
        if self.built:
            self._build_from_layer(layer, self.output_shape)
        elif not self.layers and self._declared_input_shape is not None:
            if layer.input_shape is not None and layer.input_shape != self._declared_input_shape:
                raise ValueError(f"Sequential.add: layer {layer.name!r} declares input_shape {layer.input_shape} "
                                 f"but the model's Input has shape {self._declared_input_shape}")
            self._build_from_layer(layer, self._declared_input_shape, first=True)
        elif not self.layers and layer.input_shape is not None:
            self._build_from_layer(layer, layer.input_shape, first=True)
        layer.name = name
        self.layers.append(layer)
        if self.built:
            self.output_shape = layer.output_shape
        elif self.layers[0].input_shape is not None:
            try:
                self.build(self.layers[0].input_shape)
            except BaseException:
                self.layers.pop()   # an add that raises leaves the model as it was
                raise
        self._resolved = False

    def build(self, input_shape=None):
        """Build every layer for per-sample ``input_shape`` (default: the first layer's
        ``input_shape``/``input_dim``); a leading None (Keras's batch axis) is dropped."""
        if not self.layers:
            raise ValueError("Sequential.build: the model has no layers")
        if input_shape is None:
            input_shape = self.layers[0].input_shape or self._declared_input_shape
            if input_shape is None:
                raise ValueError("Sequential.build: unknown input shape; give input_dim/input_shape to the "
                                 "first layer, or call build(input_shape) or fit/predict")
        if isinstance(input_shape, (int, np.integer)) and not isinstance(input_shape, bool):
            input_shape = (input_shape,)
        if isinstance(input_shape, (tuple, list)) and input_shape and input_shape[0] is None:
            input_shape = tuple(input_shape[1:])
        if (not isinstance(input_shape, (tuple, list)) or not input_shape
                or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in input_shape)):
            raise TypeError(f"Sequential.build: expected the per-sample input shape as a tuple of ints "
                            f"(without the batch axis), got {input_shape!r}")
        input_shape = tuple(int(s) for s in input_shape)
        if any(s < 1 for s in input_shape):
            raise ValueError(f"Sequential.build: input sizes must be >= 1, got {input_shape}")
        if self._declared_input_shape is not None and input_shape != self._declared_input_shape:
            raise ValueError(f"Sequential.build: the model's Input has shape {self._declared_input_shape}; it cannot "
                             f"be built for {input_shape}")
        self.output_shape = self._build_from(0, input_shape)
        self.input_shape = input_shape
        self.built = True
        self._resolved = False
        return self

    def _build_from(self, start, shape):
        for i in range(start, len(self.layers)):
            shape = self._build_from_layer(self.layers[i], shape, first=i == 0, before=self.layers[:i])
        return shape

    def _build_from_layer(self, layer, shape, first=False, before=None):
        """Build ``layer`` for per-sample input ``shape`` (kept as it is where it is built for
        that already) after the layers ``before`` it (default: all the model's); returns its
        output shape."""
        if not first and layer.input_shape is not None and not layer.built and layer.input_shape != shape:
            raise ValueError(f"Sequential: layer {layer.name!r} declares input_shape {layer.input_shape} "
                             f"but the previous layer outputs {shape}")
        if not (layer.built and layer.input_shape == shape and layer.dtype == self.dtype):
            _resolve_axis(layer, self.layers if before is None else before)
            layer._input_is_data = first
            try:
                layer.build(shape, self.dtype, self._rng)
            finally:
                del layer._input_is_data
        return layer.output_shape

    # ------------------------------------------------------------------ compiling
    def compile(self, optimizer="adam", loss=None, metrics=None, weighted_metrics=None):
        """``optimizer``: a name ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"),
        a ``fastnn.optim`` optimizer or its config dict. ``loss``: "sparse_categorical_crossentropy",
        "categorical_crossentropy", "binary_crossentropy", "mse" or a ``fastnn.nn.losses.Loss``.
        ``metrics``: e.g. ``["accuracy"]``. ``weighted_metrics``: a list of metrics weighted by
        ``sample_weight``/``class_weight`` (Keras 3's: logged under their names, with a
        ``weighted_`` prefix where ``metrics`` has the name already)."""
        if loss is None:
            raise ValueError("compile: a loss is required, e.g. loss='sparse_categorical_crossentropy'")
        optimizer = _optim.get(optimizer)
        loss = _losses.get(loss)
        specs = _metric_list("metrics", metrics)
        weighted_specs = _metric_list("weighted_metrics", weighted_metrics)
        # Checked before anything is set, so a compile that fails leaves the model as it was.
        resolved = self._resolution(loss, specs, weighted_specs, self.output_shape) if self.layers else None
        self.optimizer, self.loss, self._metric_specs = optimizer, loss, specs
        self._weighted_metric_specs = weighted_specs
        self.compiled = True
        self._resolved = False
        if self.built:
            (self._loss_on_logits, self._output_activation, self.metrics, self.weighted_metrics,
             self._weighted_names) = resolved
            self._resolved = True

    def _resolve(self):
        if not self._resolved:
            (self._loss_on_logits, self._output_activation, self.metrics, self.weighted_metrics,
             self._weighted_names) = self._resolution(self.loss, self._metric_specs, self._weighted_metric_specs,
                                                      self.output_shape)
            self._resolved = True

    def _resolution(self, loss, metric_specs, weighted_specs, output_shape):
        """Check the loss against the output layer; return whether the loss fuses with the
        final activation, that activation, the metrics, the weighted metrics and their names in
        the logs (``output_shape`` None: not built yet, the metrics are only checked)."""
        last = self.layers[-1]
        want = loss.output_activation
        final = getattr(last, "activation", None)
        loss_on_logits = False
        output_activation = None
        if want is not None:
            if loss.from_logits:
                if final in ("softmax", "sigmoid"):
                    raise ValueError(f"compile: the loss {loss.name!r} was built with from_logits=True but "
                                     f"the last layer {last.name!r} already applies {final!r}")
                output_activation = want
            elif last.supports_logits and final == want:
                loss_on_logits = True
                output_activation = want
            else:
                cls = type(loss).__name__
                raise ValueError(
                    f"compile: the loss {loss.name!r} is computed from logits together with a final "
                    f"{want!r}, but the last layer {last.name!r} ({type(last).__name__}) ends with "
                    f"{final or 'no activation'!r}; give it activation={want!r}, or compile with "
                    f"loss=fastnn.nn.losses.{cls}(from_logits=True) for a model that outputs logits")
        metrics = [_metrics.get(m, loss, output_shape) for m in metric_specs]
        weighted = [_metrics.get(m, loss, output_shape) for m in weighted_specs]
        for metric in weighted:
            if type(metric).per_sample is _metrics.Metric.per_sample:
                raise TypeError(f"compile: the weighted metric {metric.name!r} needs its per-sample values, but "
                                f"{type(metric).__name__} does not implement per_sample(y, t)")
        names = ["loss"] + [m.name for m in metrics]
        # Keras 3's rule (CompileMetrics.result): a weighted metric is logged under its name, or as
        # weighted_<name> where an unweighted metric has that name
        weighted_names = [f"weighted_{m.name}" if m.name in names[1:] else m.name for m in weighted]
        if len(set(names + weighted_names)) != len(names) + len(weighted_names):
            raise ValueError(f"compile: metric names must be distinct and not 'loss', got "
                             f"{names[1:] + weighted_names}")
        return loss_on_logits, output_activation, metrics, weighted, weighted_names

    # ------------------------------------------------------------------ computing
    #: Run a Conv2D followed by a MaxPool2D as one op (ops.conv2d_max_pool2d and its
    #: backward): the same numbers, without writing the convolution's output and its
    #: gradient to memory. Set to False to run every layer on its own.
    fuse_conv_pool = True
    #: Pass NCHW data along runs of channels_last layers (see _nchw_layouts) instead of each
    #: layer transposing to NCHW and back; the same numbers. False (tests): each layer transposes.
    _nchw_runs = True

    def _fused_pairs(self):
        """Indices i where layers i and i + 1 (not the last layer) run as one conv + pool op."""
        if not self.fuse_conv_pool:
            return set()
        layers = self.layers
        return {i for i in range(len(layers) - 2)
                if isinstance(layers[i], Conv2D) and layers[i].fuses_with(layers[i + 1])}

    def _forward(self, x, training, logits=False):
        fused = self._fused_pairs()
        self._fused_last = fused
        layouts = _nchw_layouts(self.layers, fused) if self._nchw_runs else {}
        self._layouts_last = layouts   # the backward passes the gradients in the same layouts
        layout = functools.partial(_layout_kwargs, layouts)
        i = 0
        while i < len(self.layers) - 1:
            if i in fused:
                x = self.layers[i].forward_max_pool(x, self.layers[i + 1], training=training, **layout(i, i + 1))
                i += 2
                continue
            x = self.layers[i].forward(x, training=training, **layout(i, i))
            i += 1
        last = len(self.layers) - 1
        if logits:
            return self.layers[last].forward(x, training=training, logits=True, **layout(last, last))
        return self.layers[last].forward(x, training=training, **layout(last, last))

    def _backward(self, dy):
        fused = getattr(self, "_fused_last", set())
        layout = functools.partial(_layout_kwargs, getattr(self, "_layouts_last", {}))
        i = len(self.layers) - 1
        while i >= 0:
            layer = self.layers[i]
            first = i - 1 if i - 1 in fused else i  # the layer whose input is the data, for this step
            # nobody needs the gradient of the data
            need_dx = not (first == 0 and isinstance(self.layers[0], Conv2D))
            if i - 1 in fused:
                dy = self.layers[i - 1].backward_max_pool(dy, need_dx=need_dx, **layout(i - 1, i))
                i -= 2
                continue
            if not need_dx:
                layer.backward(dy, need_dx=False, **layout(i, i))
            else:
                dy = layer.backward(dy, **layout(i, i))
            i -= 1
        for layer in self.layers:   # the regularizers' penalties are in the loss (_loss_forward)
            layer._add_regularization_gradients()
        return dy

    def _loss_forward(self, x, t, training, w=None):
        """(loss, gradient w.r.t. what the last layer returned, the output probabilities);
        ``w``: per-sample weights (float64 (N,)) or None. The loss includes the penalties of
        the layers' regularizers (:attr:`losses`), whose gradients :meth:`_backward` adds."""
        out = self._forward(x, training, logits=self._loss_on_logits)
        if w is None:
            loss, grad = self.loss(out, t)
        else:
            loss, grad = self.loss.weighted(out, t, w)
        penalties = self.losses
        if penalties:   # Keras adds model.losses to the loss, unscaled by the sample weights
            loss = loss + sum(penalties)
        outputs = activation_forward(out, self._output_activation) if self._output_activation else out
        return loss, grad, outputs

    @property
    def losses(self):
        """The penalties (floats) of the layers' regularizers on their current weights, layer by
        layer (Keras's ``model.losses``): what the loss adds to the data's loss."""
        return [penalty for layer in self.layers for penalty in layer.losses]

    @property
    def trainable(self):
        """False when every layer is frozen (``layer.trainable = False``); True otherwise, and
        for a model without layers. Setting it sets every layer's flag, as Keras does: False
        freezes them all, True unfreezes them all."""
        return not self.layers or any(layer.trainable for layer in self.layers)

    @trainable.setter
    def trainable(self, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"Sequential.trainable: expected True or False, got {value!r}")
        value = bool(value)
        for layer in self.layers:
            layer.trainable = value

    def params(self):
        """The trainable arrays as ``{"<layer>/<weight>": array}`` (the arrays themselves;
        a frozen layer's, ``layer.trainable = False``, are left out)."""
        return {f"{layer.name}/{k}": v for layer in self.layers if layer.trainable for k, v in layer.params.items()}

    def grads(self):
        """The gradients of the last backward pass, keyed like :meth:`params`."""
        return {f"{layer.name}/{k}": layer.grads[k] for layer in self.layers if layer.trainable
                for k in layer.params}

    def train_on_batch(self, x, y, return_dict=False, sample_weight=None, class_weight=None):
        """One optimisation step on one batch; returns, as ``evaluate`` does, its loss (a
        float) or ``[loss, metric, ...]``, or a dict of them with ``return_dict=True``.
        ``sample_weight``/``class_weight`` weight the loss as in :meth:`fit`."""
        self._require_compiled("train_on_batch")
        x, output_shape = self._data_x(x, "train_on_batch")
        t = self.loss.prepare_target(y, output_shape, self.dtype, "train_on_batch")
        _check_lengths("train_on_batch", x, t)
        if len(x) == 0:  # as fit and evaluate refuse it: an empty batch has no loss to step on
            raise ValueError("train_on_batch: no samples")
        w = self._sample_weights("train_on_batch", sample_weight, class_weight, t, output_shape)
        self._build_for(x)
        logs, _ = self._train_step(x, t, None, w)
        return self._logs_as_returned(logs, return_dict)

    def _logs_as_returned(self, logs, return_dict):
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    def _batch_logs(self, loss, outputs, t, w):
        """The logs of a batch, and for each its ``(sum, count)`` in the means over many
        batches: the loss and the metrics count each sample once (the batch mean times the
        batch size), a weighted metric counts sample i w_i times (``sum_i w_i m_i`` and
        ``sum_i w_i``: Keras's weighted mean). Without weights (or with weights that are all 1)
        a weighted metric is the unweighted one, bit for bit."""
        n = len(t)
        logs = {"loss": loss}
        for metric in self.metrics:
            logs[metric.name] = metric(outputs, t)
        sums = {k: (v * n, n) for k, v in logs.items()}
        for name, metric in zip(self._weighted_names, self.weighted_metrics):
            if w is None or np.all(w == 1):
                logs[name] = metric(outputs, t)
                sums[name] = (logs[name] * n, n)
            else:
                sums[name] = metric.weighted(outputs, t, w)
                logs[name] = _weighted_mean(*sums[name])
        return logs, sums

    def _train_step(self, x, t, sigint, w=None):
        # The forward pass updates BatchNorm's moving statistics; if the step is abandoned
        # (a second Ctrl-C) before the optimizer update, put them back, so that a batch
        # changes the model completely or not at all.
        moving = [(a, a.copy()) for layer in self.layers for a in layer.state.values()] if sigint else []
        try:
            loss, grad, outputs = self._loss_forward(x, t, training=True, w=w)
            self._backward(grad)
            params, grads = self.params(), self.grads()
            if sigint is not None:
                # From here on the batch counts: a second Ctrl-C waits until fit has recorded it
                # (_run_epoch clears the flag), so the reported batches match the updates applied.
                sigint.in_update = True
        except BaseException:
            for array, saved in moving:
                np.copyto(array, saved)
            raise
        try:
            self.optimizer.update(params, grads)
        except BaseException:
            if sigint is not None:
                sigint.in_update = False
            raise
        return self._batch_logs(loss, outputs, t, w)

    # ------------------------------------------------------------------ data
    def _require_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"{what}: compile the model first (model.compile(optimizer=..., loss=...))")

    def _prepare_x(self, x, what):
        """x as an array of the model's dtype; an unbuilt model is built for it."""
        x = self._checked_x(x, what)
        if what == "Sequential":   # a call of the model needs no loss or metrics (after pop(), say)
            if not self.built:
                self.build(x.shape[1:])
        else:
            self._build_for(x)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _data_x(self, x, what, input_shape=None):
        """x (of the model's dtype) and the output shape the model has, or will have once built
        for x; an unbuilt model is left unbuilt, so that the targets and the other arguments are
        checked first (a call that raises leaves the model as it was)."""
        x = self._checked_x(x, what, input_shape)
        return np.ascontiguousarray(x, dtype=self.dtype), self._output_shape_for(x.shape[1:])

    def _output_shape_for(self, input_shape):
        if self.built:
            return self.output_shape
        shape = tuple(input_shape)
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape_for(shape, first=i == 0)
        return shape

    def _build_for(self, x):
        if not self.built:
            self.build(x.shape[1:])
        if self.compiled:
            self._resolve()

    def _checked_x(self, x, what, input_shape=None):
        """``input_shape``: the per-sample shape x must have when the model is not built yet."""
        if x is None:
            raise ValueError(f"{what}: x is required")
        x = V.as_array(what, "x", x)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{what}: expected numeric x, got dtype {x.dtype}")
        if x.ndim < 2:
            raise ValueError(f"{what}: expected x of shape (N, ...) with at least 2 dimensions, got {x.shape}")
        expected = self.input_shape if self.built else input_shape
        if expected is not None and x.shape[1:] != expected:
            raise ValueError(f"{what}: expected x of shape (N, {', '.join(map(str, expected))}), got {x.shape}")
        return x

    # ------------------------------------------------------------------ training
    def fit(self, x=None, y=None, epochs=1, batch_size=32, validation_data=None, validation_split=0.0,
            shuffle=True, verbose=1, callbacks=None, seed=None, initial_epoch=0, sample_weight=None,
            class_weight=None):
        """Train for ``epochs`` epochs of mini-batches; returns a ``History``.

        ``verbose``: 0 silent, 1 a progress bar per epoch, 2 one line per epoch (on stdout).
        ``validation_split``: the last fraction of (x, y), before shuffling, is held out.
        ``sample_weight`` (one weight per sample) or ``class_weight`` ({class: weight}) weight
        each sample's loss (Keras's "sum_over_batch_size": sum_i w_i l_i / batch size), and the
        weighted metrics (sum_i w_i m_i / sum_i w_i over the epoch).
        Ctrl-C stops after the current batch: its update is applied, the model stays
        consistent and the History so far is returned (``history.interrupted`` is True).
        """
        self._require_compiled("fit")
        x, output_shape = self._data_x(x, "fit")
        t = self.loss.prepare_target(y, output_shape, self.dtype, "fit")
        _check_lengths("fit", x, t)
        epochs = _int_arg("fit", "epochs", epochs, 0)
        initial_epoch = _int_arg("fit", "initial_epoch", initial_epoch, 0)
        batch_size = _batch_size_arg("fit", batch_size)
        verbose = _verbose_arg("fit", verbose)
        if sample_weight is not None and class_weight is not None:
            raise ValueError("fit: give sample_weight or class_weight, not both (as Keras); multiply the class "
                             "weights into sample_weight yourself")
        w = self._sample_weights("fit", sample_weight, None, t, output_shape)
        val = self._validation_arrays(x, t, validation_data, validation_split, output_shape, w)
        if val is not None and validation_data is None:
            split = len(x) - len(val[0])
            x, t = x[:split], t[:split]
            w = None if w is None else w[:split]
        if len(x) == 0:
            raise ValueError("fit: no training samples")
        if class_weight is not None:   # the training samples' only, as in Keras
            w = self._sample_weights("fit", None, class_weight, t, output_shape)
        if isinstance(shuffle, str) and shuffle == "batch":
            raise ValueError("fit: shuffle='batch' (Keras's shuffling in batch-sized chunks, for HDF5 data) is not "
                             "supported; use shuffle=True or False")
        shuffle = V.as_bool("fit", "shuffle", shuffle)
        if seed is not None:
            seed = _int_arg("fit", "seed", seed, 0)
        callbacks = _callbacks.checked_callbacks("fit", callbacks)
        for callback in callbacks:
            callback.check_model(self)
        self._build_for(x)   # everything checked: build an unbuilt model for x
        if seed is not None:
            rng = np.random.default_rng(seed)
            for layer in self.layers:
                if layer.rng is not None:
                    layer.rng = np.random.default_rng(rng.integers(2**63))
        else:
            rng = self._rng
        history = _callbacks.History()
        # History goes last, so it records what the other callbacks add to the logs (learning_rate, weight_change).
        cbs = _callbacks.CallbackList(callbacks + [history], self)
        cbs.set_params({"verbose": verbose, "epochs": epochs, "steps": -(-len(x) // batch_size)})
        self.history = history
        self.stop_training = False
        out = sys.stdout
        progress = _EpochProgress()
        cbs.on_train_begin({})
        with _SigintDeferral() as sigint:
            try:
                for epoch in range(initial_epoch, epochs):
                    progress.start(epoch)
                    cbs.on_epoch_begin(epoch, {})
                    if verbose == 1:
                        out.write(f"Epoch {epoch + 1}/{epochs}\n")
                    bar = Progbar(len(x), stream=out, dynamic=None if verbose == 1 else False) if verbose else None
                    progress.open_line = bar is not None and bar.dynamic
                    order = rng.permutation(len(x)) if shuffle else None
                    self._run_epoch(x, t, order, batch_size, cbs, bar, sigint, progress, w)
                    epoch_logs = dict(progress.logs)
                    if val is not None:
                        for k, v in self._evaluate_arrays(val[0], val[1], batch_size, cbs, val[2]).items():
                            epoch_logs["val_" + k] = v
                    cbs.on_epoch_end(epoch, epoch_logs)
                    progress.in_epoch = False
                    if bar is not None:
                        if verbose >= 2:
                            out.write(f"Epoch {epoch + 1}/{epochs}: ")
                        bar.finish(epoch_logs)
                        progress.open_line = False
                    sigint.raise_if_requested()
                    if self.stop_training:
                        break
            except KeyboardInterrupt:
                self._note_interrupt(history, progress, epochs, len(x), out)
        self._release_caches()
        cbs.on_train_end({})
        return history

    def _run_epoch(self, x, t, order, batch_size, cbs, bar, sigint, progress, w=None):
        """The batches of one epoch; ``progress`` holds the running means as they go."""
        n = len(x)
        totals, counts = {}, {}
        wb = None
        for batch in range(-(-n // batch_size)):
            lo, hi = batch * batch_size, min(n, (batch + 1) * batch_size)
            if order is not None:
                idx = order[lo:hi]
                xb, tb = x[idx], t[idx]
                if w is not None:
                    wb = w[idx]
            else:
                xb, tb = x[lo:hi], t[lo:hi]
                if w is not None:
                    wb = w[lo:hi]
            cbs.on_train_batch_begin(batch, {"batch": batch, "size": hi - lo})
            _, step_sums = self._train_step(xb, tb, sigint, wb)
            progress.seen += hi - lo
            progress.batches += 1
            progress.logs = _accumulate(totals, counts, step_sums)
            if sigint is not None:
                sigint.in_update = False
            if bar is not None:
                bar.update(progress.seen, progress.logs)
            cbs.on_train_batch_end(batch, dict(progress.logs, batch=batch, size=hi - lo))
            sigint.raise_if_requested()
            if self.stop_training:
                break

    @staticmethod
    def _note_interrupt(history, progress, epochs, n, out):
        history.interrupted = True
        if progress.open_line:  # end the progress bar's line before the note
            out.write("\n")
        epoch = progress.epoch
        if progress.in_epoch:
            history.partial_epoch = dict(progress.logs, epoch=epoch, batches_done=progress.batches,
                                         samples_done=progress.seen)
            where = f"in epoch {epoch + 1}/{epochs} after {progress.seen}/{n} samples"
            if progress.logs:
                where += f" (partial epoch{format_logs(progress.logs)})"
        else:
            where = f"after epoch {epoch + 1}/{epochs}"
        print(f"fit: interrupted (Ctrl-C) {where}; the model holds the weights of the last completed batch",
              file=sys.stderr)

    def _release_caches(self):
        # Forward passes keep their inputs for backward; don't hold a batch after a call returns.
        for layer in self.layers:
            for cache in ("_cache", "_pooled_cache"):   # _pooled_cache: a Conv2D's fused pass with its pool
                if getattr(layer, cache, None) is not None:
                    setattr(layer, cache, None)

    def _validation_arrays(self, x, t, validation_data, validation_split, output_shape, w=None):
        """(x_val, t_val, its sample weights or None), or None without validation data;
        ``w``: the sample weights of (x, t), split with them."""
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val) or (x_val, y_val, "
                                 "val_sample_weight)")
            xv, _ = self._data_x(validation_data[0], "fit (validation_data)", x.shape[1:])
            tv = self.loss.prepare_target(validation_data[1], output_shape, self.dtype, "fit (validation_data)")
            _check_lengths("fit (validation_data)", xv, tv)
            if len(xv) == 0:
                raise ValueError("fit: validation_data is empty")
            wv = None
            if len(validation_data) == 3:
                wv = self._sample_weights("fit (validation_data)", validation_data[2], None, tv, output_shape)
            return xv, tv, wv
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float, np.floating)):
            raise TypeError(f"fit: validation_split must be a number in [0, 1), got {validation_split!r}")
        if not 0.0 <= float(validation_split) < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split}")
        if validation_split == 0:
            return None
        split = int(len(x) * (1.0 - float(validation_split)))
        if split <= 0 or split >= len(x):
            raise ValueError(f"fit: validation_split={validation_split} of {len(x)} samples leaves an empty "
                             "training or validation set")
        return x[split:], t[split:], None if w is None else w[split:]

    def _sample_weights(self, what, sample_weight, class_weight, t, output_shape):
        """The per-sample weights (float64 (N,)) that ``sample_weight`` or ``class_weight``
        give the targets ``t`` (as the loss prepared them), or None for neither."""
        if sample_weight is None and class_weight is None:
            return None
        if sample_weight is not None and class_weight is not None:
            raise ValueError(f"{what}: give sample_weight or class_weight, not both (as Keras); multiply the class "
                             "weights into sample_weight yourself")
        if type(self.loss).per_sample is _losses.Loss.per_sample:
            raise TypeError(f"{what}: sample_weight and class_weight need the loss's per-sample values, but "
                            f"{type(self.loss).__name__} does not implement per_sample(y, t)")
        if sample_weight is not None:
            return _sample_weight_arg(what, sample_weight, len(t))
        if not isinstance(class_weight, dict):
            raise TypeError(f"{what}: class_weight must be a dict {{class index: weight}}, got "
                            f"{type(class_weight).__name__}")
        classes, k = self.loss.target_classes(t, output_shape, what)
        table = np.ones(k)   # a class not in the dict weighs 1, as in Keras
        for key, value in class_weight.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
                raise TypeError(f"{what}: class_weight's keys must be int class indices, got {key!r}")
            if not 0 <= key < k:
                raise ValueError(f"{what}: class_weight has class {key}, outside the {k} classes [0, {k}) of the "
                                 "targets")
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{what}: class_weight[{key}] must be a number, got {value!r}")
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{what}: class_weight[{key}] must be finite and >= 0, got {value}")
            table[int(key)] = float(value)
        return table[np.asarray(classes, dtype=np.int64)]

    # ------------------------------------------------------------------ inference
    def _evaluate_arrays(self, x, t, batch_size, cbs=None, w=None):
        """The mean loss and metrics over (x, t); ``cbs`` get the on_test_* hooks; ``w``: the
        samples' weights (for the loss and the weighted metrics) or None."""
        totals, counts, logs = {}, {}, {}
        if cbs is not None:
            cbs.on_test_begin({})
        for batch, lo in enumerate(range(0, len(x), batch_size)):
            xb, tb = x[lo:lo + batch_size], t[lo:lo + batch_size]
            wb = None if w is None else w[lo:lo + batch_size]
            if cbs is not None:
                cbs.on_test_batch_begin(batch, {"batch": batch, "size": len(xb)})
            loss, _, outputs = self._loss_forward(xb, tb, training=False, w=wb)
            logs = _accumulate(totals, counts, self._batch_logs(loss, outputs, tb, wb)[1])
            if cbs is not None:
                cbs.on_test_batch_end(batch, dict(logs, batch=batch, size=len(xb)))
        if cbs is not None:
            cbs.on_test_end(dict(logs))
        return logs

    def evaluate(self, x, y, batch_size=32, verbose=0, return_dict=False, callbacks=None, sample_weight=None):
        """The loss (and metrics) over (x, y) in inference mode: a float when there are no
        metrics, else ``[loss, metric, ..., weighted metric, ...]`` (a dict with
        ``return_dict=True``). ``callbacks`` get the on_test_* hooks; ``sample_weight`` weights
        the loss as in :meth:`fit`, and the weighted metrics (not the metrics)."""
        self._require_compiled("evaluate")
        x, output_shape = self._data_x(x, "evaluate")
        t = self.loss.prepare_target(y, output_shape, self.dtype, "evaluate")
        _check_lengths("evaluate", x, t)
        batch_size = _batch_size_arg("evaluate", batch_size)
        verbose = _verbose_arg("evaluate", verbose)
        if len(x) == 0:
            raise ValueError("evaluate: no samples")
        w = self._sample_weights("evaluate", sample_weight, None, t, output_shape)
        callbacks = _callbacks.checked_callbacks("evaluate", callbacks)
        self._build_for(x)
        cbs = None
        if callbacks:
            cbs = _callbacks.CallbackList(callbacks, self, "evaluate")
            cbs.set_params({"verbose": verbose, "epochs": 1, "steps": -(-len(x) // batch_size)})
        logs = self._evaluate_arrays(x, t, batch_size, cbs, w)
        self._release_caches()
        if verbose:
            print(f"evaluate:{format_logs(logs)}", file=sys.stdout)
        return self._logs_as_returned(logs, return_dict)

    def predict(self, x, batch_size=32, verbose=0, callbacks=None):
        """The model's outputs (after the final activation: probabilities for softmax or
        sigmoid outputs), in inference mode, batch by batch. ``callbacks`` get the
        on_predict_* hooks (the batch's ``outputs`` in on_predict_batch_end's logs)."""
        x = self._checked_x(x, "predict")
        batch_size = _batch_size_arg("predict", batch_size)
        verbose = _verbose_arg("predict", verbose)
        callbacks = _callbacks.checked_callbacks("predict", callbacks)
        if not self.built:   # everything checked: build for x
            self.build(x.shape[1:])
        x = np.ascontiguousarray(x, dtype=self.dtype)
        cbs = _callbacks.CallbackList(callbacks, self, "predict")
        cbs.set_params({"verbose": verbose, "epochs": 1, "steps": -(-len(x) // batch_size)})
        cbs.on_predict_begin({})
        outputs = []
        for batch, lo in enumerate(range(0, len(x), batch_size)):
            cbs.on_predict_batch_begin(batch, {"batch": batch, "size": len(x[lo:lo + batch_size])})
            outputs.append(self._forward(x[lo:lo + batch_size], training=False))
            cbs.on_predict_batch_end(batch, {"outputs": outputs[-1], "batch": batch, "size": len(outputs[-1])})
        self._release_caches()
        cbs.on_predict_end({})
        if not outputs:
            return np.empty((0,) + self.output_shape, dtype=self.dtype)
        return np.concatenate(outputs, axis=0)

    def __call__(self, x, training=False):
        x = self._prepare_x(x, "Sequential")
        return self._forward(x, training=training)

    # ------------------------------------------------------------------ description
    def count_params(self):
        self._require_built("count_params")
        return sum(layer.count_params() + layer.count_params(trainable=False) for layer in self.layers)

    def _require_built(self, what):
        if not self.built:
            raise ValueError(f"{what}: the model is not built yet; give input_dim/input_shape to the first "
                             "layer, or call build(input_shape), fit or predict first")

    def summary(self, print_fn=None):
        """Print the layers (name and type), their output shapes and parameter counts, and the totals."""
        self._require_built("summary")
        print_fn = print if print_fn is None else print_fn
        rows = [(f"{layer.name} ({type(layer).__name__})", str((None,) + tuple(layer.output_shape)),
                 str(layer.count_params() + layer.count_params(trainable=False))) for layer in self.layers]
        w0 = max(28, max(len(r[0]) for r in rows) + 2)
        w1 = max(24, max(len(r[1]) for r in rows) + 2)
        width = w0 + w1 + 12
        trainable = sum(layer.count_params() for layer in self.layers)
        frozen = sum(layer.count_params(trainable=False) for layer in self.layers)
        lines = [f'Model: "{self.name}"', "_" * width,
                 f"{'Layer (type)':<{w0}}{'Output Shape':<{w1}}Param #", "=" * width]
        for i, (a, b, c) in enumerate(rows):
            lines.append(f"{a:<{w0}}{b:<{w1}}{c}")
            lines.append("_" * width if i < len(rows) - 1 else "=" * width)
        lines += [f"Total params: {trainable + frozen:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {frozen:,}", "_" * width]
        for line in lines:
            print_fn(line)

    def get_weights(self):
        """Copies of every weight, layer by layer (trainable ones, then e.g. BatchNorm's moving stats)."""
        self._require_built("get_weights")
        return [w.copy() for w in self.weights]

    @property
    def weights(self):
        """The weight arrays themselves, in :meth:`get_weights`'s order (Keras's ``model.weights``)."""
        self._require_built("weights")
        return [w for layer in self.layers for w in layer.weights]

    @property
    def trainable_weights(self):
        """The arrays that training updates, layer by layer (frozen layers left out)."""
        self._require_built("trainable_weights")
        return [w for layer in self.layers for w in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        """The rest: state such as BatchNorm's moving statistics, and frozen layers' parameters."""
        self._require_built("non_trainable_weights")
        return [w for layer in self.layers for w in layer.non_trainable_weights]

    def set_weights(self, weights):
        """Copy ``weights`` (as from :meth:`get_weights`) into the model's arrays, in place."""
        self._require_built("set_weights")
        names = [f"{layer.name}/{name}" for layer in self.layers for name in layer.weight_names]
        _copy_into("set_weights", self.weights, weights, names)

    def save_weights(self, path):
        """Write the weights to one ``.npz`` file at ``path``: ``save`` without the compile
        settings (the architecture is stored too, so that ``load_weights`` can check the file)."""
        from fastnn.nn.serialization import save_model
        self._require_built("save_weights")
        save_model(self, path, include_optimizer=False)

    def load_weights(self, path, max_bytes=None):
        """Copy the weights of a file written by ``save_weights`` (or ``save``) into this built
        model, layer by layer in order: the file is checked as ``load_model`` checks it, and its
        weights must have this model's shapes (they are cast to its dtype)."""
        from fastnn.nn.serialization import DEFAULT_MAX_BYTES, load_model
        self._require_built("load_weights")
        saved = load_model(path, compile=False, max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
        names = [f"{layer.name}/{name}" for layer in saved.layers for name in layer.weight_names]
        try:
            self.set_weights(saved.get_weights())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"load_weights: the weights in {path!r} ({', '.join(names)}) do not fit this model: "
                             f"{exc}") from None

    def get_layer(self, name=None, index=None):
        """The layer named ``name``, or at position ``index`` (one of the two)."""
        if (name is None) == (index is None):
            raise ValueError("get_layer: give a name or an index")
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                raise TypeError(f"get_layer: index must be an int, got {index!r}")
            if not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"get_layer: index {index} is out of range for {len(self.layers)} layers")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"get_layer: no layer named {name!r}; the model has {[layer.name for layer in self.layers]}")

    def pop(self):
        """Remove the last layer and return it (the model stays built if it was)."""
        if not self.layers:
            raise ValueError("pop: the model has no layers")
        layer = self.layers.pop()
        if not self.layers:
            self.built, self.input_shape, self.output_shape = False, None, None
        elif self.built:
            self.output_shape = self.layers[-1].output_shape
        self._resolved = False
        return layer

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype.name, "seed": self.seed,
                "input_shape": None if self.input_shape is None else list(self.input_shape),
                "layers": [{"class_name": type(layer).__name__, "config": layer.get_config()}
                           for layer in self.layers]}

    @classmethod
    def from_config(cls, config, dtype=None):
        model = cls(name=config.get("name"), dtype=dtype or config.get("dtype", "float32"), seed=config.get("seed"))
        for spec in config["layers"]:
            model.add(get_layer_class(spec["class_name"]).from_config(dict(spec["config"])))
        if not model.built and config.get("input_shape") is not None:
            model.build(tuple(config["input_shape"]))
        return model

    def save(self, path, include_optimizer=True):
        """Write the architecture (JSON), the weights and the compile settings to one ``.npz``
        file at ``path``, atomically (see :func:`fastnn.nn.save_model`)."""
        from fastnn.nn.serialization import save_model
        save_model(self, path, include_optimizer=include_optimizer)

    def __repr__(self):
        return f"<Sequential name={self.name!r} layers={len(self.layers)} built={self.built}>"


class _EpochProgress:
    """Where fit is: the epoch, whether it is under way, and its running logs."""

    def __init__(self):
        self.epoch, self.in_epoch, self.open_line = 0, False, False
        self.seen, self.batches, self.logs = 0, 0, {}

    def start(self, epoch):
        self.epoch, self.in_epoch = epoch, True
        self.seen, self.batches, self.logs = 0, 0, {}


class _SigintDeferral:
    """During fit, Ctrl-C asks to stop after the current batch instead of raising at once.
    A second Ctrl-C abandons the batch in progress -- raising at once during the forward and
    backward passes (nothing changed yet), or right after the optimizer update (so an update
    is applied to all parameters or to none)."""

    def __init__(self):
        self.requested = 0
        self.in_update = False
        self._previous = None
        self._installed = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.getsignal(signal.SIGINT)
                signal.signal(signal.SIGINT, self._handler)
                self._installed = True
            except (ValueError, OSError, TypeError):
                self._installed = False
        return self

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
        return False

    def _handler(self, signum, frame):
        self.requested += 1
        if self.requested == 1:
            print("\nfit: Ctrl-C: stopping after the current batch (press again to abandon it)", file=sys.stderr)
        elif not self.in_update:
            raise KeyboardInterrupt

    def raise_if_requested(self):
        if self.requested:
            raise KeyboardInterrupt



def _check_dtype(owner, dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{owner}: dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"{owner}: dtype must be float32 or float64, got {dtype}")
    return dtype


def _metric_list(what, value):
    """compile's ``metrics``/``weighted_metrics`` as a list: None is none, and a lone metric
    (a name or a Metric) is a list of one, where Keras 3 refuses it."""
    if value is None:
        return []
    if isinstance(value, (str, _metrics.Metric)):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"compile: {what} must be a list of metrics (names or fastnn.nn.metrics.Metric objects), "
                        f"got {type(value).__name__} {value!r}")
    return list(value)


def _weighted_mean(total, count):
    """total / count, and 0 where the weights sum to 0 (Keras's divide_no_nan)."""
    return total / count if count else 0.0


def _accumulate(totals, counts, sums):
    """Add a batch's ``{name: (sum, count)}`` to the running totals; return the running means."""
    for k, (total, count) in sums.items():
        totals[k] = totals.get(k, 0.0) + total
        counts[k] = counts.get(k, 0) + count
    return {k: _weighted_mean(totals[k], counts[k]) for k in totals}


def _check_lengths(what, x, t):
    if len(x) != len(t):
        raise ValueError(f"{what}: x has {len(x)} samples but y has {len(t)}")


def _sample_weight_arg(what, value, n):
    """sample_weight as float64 (n,): finite, non-negative; (n, 1) is (n,), as Keras takes it."""
    w = V.as_array(what, "sample_weight", value)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"{what}: sample_weight must be numbers, got dtype {w.dtype}")
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.ndim != 1:
        raise ValueError(f"{what}: sample_weight must be 1-D, one weight per sample (shape ({n},), or ({n}, 1)), "
                         f"got shape {w.shape}")
    if len(w) != n:
        raise ValueError(f"{what}: sample_weight has {len(w)} weights but there are {n} samples")
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{what}: sample_weight contains NaN or Inf")
    if n and w.min() < 0:
        raise ValueError(f"{what}: sample_weight must be >= 0, got {w.min()}")
    return w


def _batch_size_arg(what, value):
    """None is Keras's default, 32."""
    return 32 if value is None else _int_arg(what, "batch_size", value, 1)


def _verbose_arg(what, value):
    """0, 1 or 2 (more is 2); "auto" is 1, as in Keras, and a bool is 0 or 1."""
    if isinstance(value, str) and value == "auto":
        return 1
    return int(value) if isinstance(value, bool) else _int_arg(what, "verbose", value, 0)


def _int_arg(what, name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what}: {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what}: {name} must be >= {minimum}, got {value}")
    return int(value)

