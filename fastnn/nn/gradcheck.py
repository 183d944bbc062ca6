"""Gradient checking: backpropagation against central differences, in float64.

``gradcheck(model_or_layer, x, t)`` works on a float64 copy (the original is untouched),
in training mode (BatchNorm uses batch statistics; Dropout draws the same mask for every
evaluation), and returns ``{parameter: worst relative error}``.

- A compiled :class:`~fastnn.nn.Sequential`: the loss is the model's loss on targets ``t``
  (with its regularizers' penalties); the parameters are ``"<layer>/<weight>"``.
- A layer: the loss is ``sum(layer(x) * t)`` with ``t`` of the output's shape (random
  when omitted); the input gradient is checked too, as ``"input"``.

The error of one parameter is ``max|analytic - numeric| / max(max|analytic|, max|numeric|)``:
the worst element's error relative to the size of that parameter's gradient. Where that
gradient is numerically zero (its largest magnitude under ``atol``, e.g. the bias of a
layer followed by BatchNorm) the absolute difference is reported instead.
"""
import numpy as np

__all__ = ["gradcheck"]


def gradcheck(model_or_layer, x, t=None, eps=1e-6, atol=1e-8, seed=0, max_checks=None, verbose=True,
              print_fn=print):
    """Compare backprop with central differences; print a table (``verbose``) and return
    ``{name: worst relative error}``. ``max_checks``: check at most this many randomly
    chosen entries per parameter (all by default)."""
    from fastnn.nn.layers import Layer
    from fastnn.nn.model import Sequential

    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"gradcheck: eps must be a positive number, got {eps!r}")
    x = np.array(x, dtype=np.float64)
    if isinstance(model_or_layer, Sequential):
        loss_fn, analytic, arrays = _model_problem(model_or_layer, x, t, seed)
    elif isinstance(model_or_layer, Layer):
        loss_fn, analytic, arrays = _layer_problem(model_or_layer, x, t, seed)
    else:
        raise TypeError(f"gradcheck: expected a fastnn.nn Sequential or layer, got {type(model_or_layer).__name__}")

    pick = np.random.default_rng(seed)
    results = {}
    rows = []
    for name, array in arrays.items():
        grad = analytic[name]
        flat = array.reshape(-1)
        indices = np.arange(flat.size)
        if max_checks is not None and flat.size > max_checks:
            indices = np.sort(pick.choice(flat.size, size=int(max_checks), replace=False))
        numeric = np.empty(len(indices))
        for j, i in enumerate(indices):
            original = flat[i]
            flat[i] = original + eps
            plus = loss_fn()
            flat[i] = original - eps
            minus = loss_fn()
            flat[i] = original
            numeric[j] = (plus - minus) / (2 * eps)
        a = grad.reshape(-1)[indices]
        diff = float(np.max(np.abs(a - numeric))) if len(indices) else 0.0
        scale = float(max(np.max(np.abs(a), initial=0.0), np.max(np.abs(numeric), initial=0.0)))
        error = diff / scale if scale >= atol else diff
        results[name] = error
        rows.append((name, str(array.shape), scale, error))
    if verbose:
        width = max([len(r[0]) for r in rows] + [9])
        print_fn(f"{'parameter':<{width}}  {'shape':<18}  {'max|grad|':>10}  {'rel. error':>10}")
        for name, shape, scale, error in rows:
            print_fn(f"{name:<{width}}  {shape:<18}  {scale:>10.3e}  {error:>10.3e}")
    return results


def _fixed_randomness(layers, seed):
    """Give every stochastic layer (Dropout) the same generator state before each evaluation."""
    stochastic = [layer for layer in layers if layer.rng is not None]

    def reset():
        for i, layer in enumerate(stochastic):
            layer.rng = np.random.default_rng([seed, i])
    return reset


def _model_problem(model, x, t, seed):
    from fastnn.nn import initializers
    from fastnn.nn.model import Sequential
    if not model.compiled:
        raise ValueError("gradcheck: compile the model first (the loss defines what is differentiated)")
    if t is None:
        raise ValueError("gradcheck: targets t are required for a model")
    if model.built:
        token = initializers._WEIGHTS_TO_FOLLOW.set(True)   # a custom initializer is not drawn from
        try:
            clone = Sequential.from_config(model.get_config(), dtype="float64")
            if not clone.built:
                clone.build(model.input_shape)
        finally:
            initializers._WEIGHTS_TO_FOLLOW.reset(token)
        clone.set_weights(model.get_weights())
    else:   # the original stays unbuilt; the clone draws its own weights (from seed) with its initializers
        clone = Sequential.from_config(dict(model.get_config(), seed=seed), dtype="float64")
        for layer, copy in zip(model.layers, clone.layers):
            _take_initializers(layer, copy)
        clone.build(x.shape[1:])
    clone.loss = model.loss
    clone._metric_specs = []
    clone.compiled = True
    xx = clone._prepare_x(x, "gradcheck")
    tt = clone.loss.prepare_target(t, clone.output_shape, np.float64, "gradcheck")
    reset = _fixed_randomness(clone.layers, seed)

    def loss_fn():
        reset()
        return clone._loss_forward(xx, tt, training=True)[0]

    reset()
    _, grad, _ = clone._loss_forward(xx, tt, training=True)
    clone._backward(grad)
    analytic = {k: np.array(v, dtype=np.float64) for k, v in clone.grads().items()}
    return loss_fn, analytic, clone.params()


def _take_initializers(layer, clone):
    """The original's initializers: a config keeps a custom one only as a placeholder."""
    for attr, value in vars(layer).items():
        if attr.endswith("_initializer"):
            setattr(clone, attr, value)


def _layer_problem(layer, x, t, seed):
    clone = type(layer).from_config(layer.get_config())
    _take_initializers(layer, clone)
    input_shape = layer.input_shape if layer.input_shape is not None else x.shape[1:]
    clone.build(input_shape, np.float64, np.random.default_rng(seed))
    if layer.built:
        for name, value in list(layer.params.items()) + list(layer.state.items()):
            target = clone.params.get(name, clone.state.get(name))
            target[...] = value
    x = np.ascontiguousarray(x)
    reset = _fixed_randomness([clone], seed)
    reset()
    y = clone.forward(x, training=True)
    if t is None:
        t = np.random.default_rng(seed).standard_normal(y.shape)
    t = np.asarray(t, dtype=np.float64)
    if t.shape != y.shape:
        raise ValueError(f"gradcheck: for a layer, t must have the output's shape {y.shape}, got {t.shape}")
    moving = {k: v.copy() for k, v in clone.state.items()}

    def loss_fn():
        reset()
        for k, v in moving.items():
            clone.state[k][...] = v
        return float(np.sum(clone.forward(x, training=True) * t))

    reset()
    clone.forward(x, training=True)
    dx = clone.backward(t)
    analytic = {k: np.array(v, dtype=np.float64) for k, v in clone.grads.items()}
    analytic["input"] = np.asarray(dx, dtype=np.float64)
    arrays = dict(clone.params)
    arrays["input"] = x
    return loss_fn, analytic, arrays
