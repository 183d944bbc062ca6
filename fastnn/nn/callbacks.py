"""Callbacks for ``Sequential.fit``.

A callback receives ``on_train_begin(logs)``, ``on_epoch_begin(epoch, logs)``,
``on_train_batch_begin(batch, logs)``, ``on_train_batch_end(batch, logs)`` (which call
``on_batch_begin``/``on_batch_end`` unless overridden, as in Keras), ``on_epoch_end(epoch,
logs)`` and ``on_train_end(logs)``; ``self.model`` is the model being trained. Setting
``model.stop_training = True`` ends training after the current batch (the epoch's
``on_epoch_end`` still runs, with the logs of the batches run).

Epoch logs hold ``loss``, the metrics, and ``val_loss``/``val_<metric>`` when there is
validation data; batch logs hold the running means over the epoch so far.
"""
import csv
import inspect
import math
import os
import sys

import numpy as np

from fastnn import _validate as V

__all__ = ["Callback", "History", "EarlyStopping", "StopAtThreshold", "TargetAccuracy",
           "StopOnSmallWeightChange", "LearningRateScheduler", "TerminateOnNaN", "ModelCheckpoint",
           "ReduceLROnPlateau", "CSVLogger", "LambdaCallback", "CallbackList"]


class Callback:
    """``self.model`` is the model being fitted; ``self.params`` holds fit's ``verbose``,
    ``epochs`` and ``steps`` (batches per epoch), as in Keras."""
    params = None

    def __init__(self):
        self.model = None

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def check_model(self, model):
        """Raise if this callback cannot train ``model``: ``fit`` asks before it builds the model
        or calls any hook, so a refused fit changes nothing."""

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_begin(self, batch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass

    # What fit calls; as in Keras, they default to the older names above, so a callback may
    # override either.
    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs)

    # Evaluation (fit's validation at the end of each epoch, and evaluate): logs of the batch
    # end are the running means so far, those of on_test_end the results (without "val_").
    def on_test_begin(self, logs=None):
        pass

    def on_test_end(self, logs=None):
        pass

    def on_test_batch_begin(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass

    # predict: the logs of on_predict_batch_end hold the batch's "outputs".
    def on_predict_begin(self, logs=None):
        pass

    def on_predict_end(self, logs=None):
        pass

    def on_predict_batch_begin(self, batch, logs=None):
        pass

    def on_predict_batch_end(self, batch, logs=None):
        pass


class History(Callback):
    """``history``: dict of lists, one entry per completed epoch (``loss``, ``accuracy``,
    ``val_loss``, ...); ``epoch``: the epoch numbers. When fit was interrupted (Ctrl-C),
    ``interrupted`` is True and ``partial_epoch`` holds the running logs of the unfinished
    epoch (its batches were applied to the weights)."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []
        self.interrupted = False
        self.partial_epoch = None
        self.stopped_by = None

    def on_train_begin(self, logs=None):
        self.interrupted = False
        self.partial_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def _monitor_mode(monitor, mode, owner):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        name = monitor.lower()
        mode = "max" if any(k in name for k in ("acc", "auc", "precision", "recall")) else "min"
    return mode


def _number(owner, what, value, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{owner}: {what} must be a number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or (minimum is not None and value < minimum):
        raise ValueError(f"{owner}: {what} must be >= {minimum}, got {value}")
    return value


def _monitored(owner, logs, monitor):
    value = (logs or {}).get(monitor)
    if value is None:
        raise ValueError(f"{owner}: the monitored quantity {monitor!r} is not in the logs "
                         f"(available: {sorted(logs or {})}); for val_* give validation_data or "
                         "validation_split to fit")
    return value


class _Monitor:
    """A quantity of the epoch logs that a callback watches: its name, whether it is minimised
    or maximised (``mode``), and what counts as an improvement (by more than ``min_delta``)."""

    def __init__(self, owner, monitor, mode="auto", min_delta=0.0):
        self.owner = owner
        self.name = str(monitor)
        self.mode = _monitor_mode(self.name, mode, owner)
        self.min_delta = abs(_number(owner, "min_delta", min_delta))

    def worst(self):
        """The starting reference: any number is an improvement on it."""
        return math.inf if self.mode == "min" else -math.inf

    def improved(self, value, reference):
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def value(self, logs):
        return _monitored(self.owner, logs, self.name)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs in a row (``patience=0``: at the first epoch without improvement), never after
    the first epoch (epoch 0), as Keras 3 does. ``baseline``: an improvement restarts the
    count only if it also beats the baseline. ``restore_best_weights``: at the end of
    training, put back the weights of the best epoch (the first epoch's until one improves
    on it), whether this callback stopped the run or not."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto", baseline=None,
                 restore_best_weights=False, verbose=0):
        super().__init__()
        self._monitor = _Monitor("EarlyStopping", monitor, mode, min_delta)
        self.monitor, self.mode, self.min_delta = self._monitor.name, self._monitor.mode, self._monitor.min_delta
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        self.patience = int(patience)
        self.baseline = None if baseline is None else _number("EarlyStopping", "baseline", baseline)
        self.restore_best_weights = bool(restore_best_weights)
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = None
        self.best_epoch = None
        self.best_weights = None
        self.best = self._monitor.worst()

    def on_epoch_end(self, epoch, logs=None):
        value = self._monitor.value(logs)
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self._monitor.improved(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._monitor.improved(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(f"EarlyStopping: {self.monitor} did not improve for {self.wait} epochs; "
                      f"stopping after epoch {epoch + 1}", file=sys.stderr)

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            if self.verbose:
                print(f"EarlyStopping: restored the weights of epoch {self.best_epoch + 1}", file=sys.stderr)


class StopAtThreshold(Callback):
    """Stop after the epoch in which ``monitor`` reaches ``threshold``: at or below it for
    ``mode="min"`` (losses, the default for names without "acc"), at or above it for
    ``mode="max"``. Example: ``StopAtThreshold(0.05)`` stops once the training loss is <= 0.05."""

    def __init__(self, threshold, monitor="loss", mode="auto", verbose=0):
        super().__init__()
        self.threshold = _number(type(self).__name__, "threshold", threshold)
        self.monitor = str(monitor)
        self.mode = _monitor_mode(self.monitor, mode, type(self).__name__)
        self.verbose = verbose
        self.stopped_epoch = None

    def on_train_begin(self, logs=None):
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = _monitored(type(self).__name__, logs, self.monitor)
        reached = value <= self.threshold if self.mode == "min" else value >= self.threshold
        if reached:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(f"{type(self).__name__}: {self.monitor} = {value:.4f} reached {self.threshold}; "
                      f"stopping after epoch {epoch + 1}", file=sys.stderr)


class TargetAccuracy(StopAtThreshold):
    """Stop once the accuracy ``monitor`` (default ``"accuracy"``; ``"val_accuracy"`` for the
    validation one) is at least ``target``."""

    def __init__(self, target, monitor="accuracy", verbose=0):
        super().__init__(target, monitor=monitor, mode="max", verbose=verbose)


class StopOnSmallWeightChange(Callback):
    """Stop when an epoch moved the weights little: ``||w_end - w_start|| / ||w_start||``
    over all trainable parameters together is below ``threshold`` (the absolute norm
    ``||w_end - w_start||`` when ``relative=False``). The value is logged as ``weight_change``."""

    def __init__(self, threshold, relative=True, verbose=0):
        super().__init__()
        self.threshold = _number("StopOnSmallWeightChange", "threshold", threshold, minimum=0.0)
        self.relative = bool(relative)
        self.verbose = verbose
        self.stopped_epoch = None

    def on_train_begin(self, logs=None):
        self.stopped_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = [p.astype(np.float64) for p in self.model.trainable_weights]

    def on_epoch_end(self, epoch, logs=None):
        end = self.model.trainable_weights
        diff = math.sqrt(sum(float(np.sum((e.astype(np.float64) - s) ** 2)) for e, s in zip(end, self._start)))
        if self.relative:
            norm = math.sqrt(sum(float(np.sum(s * s)) for s in self._start))
            diff = diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf)
        if logs is not None:
            logs["weight_change"] = diff
        if diff < self.threshold:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(f"StopOnSmallWeightChange: weight change {diff:.3g} < {self.threshold}; "
                      f"stopping after epoch {epoch + 1}", file=sys.stderr)


class LearningRateScheduler(Callback):
    """At the start of each epoch set the optimizer's ``lr`` to ``schedule(epoch, lr)``
    (``schedule(epoch)`` also works). The value used is logged as ``learning_rate`` (Keras 3's key)."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be callable, got {type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = verbose
        try:
            params = inspect.signature(schedule).parameters.values()
            positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            self._two_args = len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
        except (TypeError, ValueError):
            self._two_args = True

    def check_model(self, model):
        if getattr(model.optimizer, "schedule", None) is not None:
            raise ValueError("LearningRateScheduler: the optimizer already has its own schedule; use one or the other")

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        lr = float(optimizer.lr)
        new_lr = self.schedule(epoch, lr) if self._two_args else self.schedule(epoch)
        new_lr = _number("LearningRateScheduler", "the schedule's learning rate", new_lr, minimum=0.0)
        if not math.isfinite(new_lr):
            raise ValueError(f"LearningRateScheduler: the schedule returned {new_lr}")
        optimizer.lr = new_lr
        if self.verbose:
            print(f"LearningRateScheduler: epoch {epoch + 1}, lr = {new_lr:.6g}", file=sys.stderr)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.lr)


class TerminateOnNaN(Callback):
    """Stop as soon as a batch loss is NaN or infinite."""

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"TerminateOnNaN: batch {batch}: loss is {loss}; stopping", file=sys.stderr)
            self.model.stop_training = True


class ModelCheckpoint(Callback):
    """Save the model (``model.save``; ``model.save_weights`` with ``save_weights_only``) at the
    end of every epoch, or only when ``monitor`` improved on the best value so far
    (``save_best_only``; ``mode`` as in :class:`EarlyStopping`). ``filepath`` may hold format
    fields filled with the epoch number (from 1) and the epoch's logs, as in Keras:
    ``"ckpt-{epoch:02d}-{val_loss:.2f}.npz"``. Only ``save_freq="epoch"`` is supported."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch"):
        super().__init__()
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"ModelCheckpoint: expected filepath to be a path (str or os.PathLike), got "
                            f"{type(filepath).__name__}")
        self.filepath = os.fspath(filepath)
        self._monitor = _Monitor("ModelCheckpoint", monitor, mode)
        self.monitor, self.mode = self._monitor.name, self._monitor.mode
        self.save_best_only = V.as_bool("ModelCheckpoint", "save_best_only", save_best_only)
        self.save_weights_only = V.as_bool("ModelCheckpoint", "save_weights_only", save_weights_only)
        if save_freq != "epoch":
            raise ValueError(f"ModelCheckpoint: only save_freq='epoch' is supported (saving every N batches is "
                             f"not), got {save_freq!r}")
        self.save_freq = save_freq
        self.verbose = verbose
        # kept across fit calls, as Keras keeps it: a later fit's first epoch must beat the file's
        self.best = self._monitor.worst()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = self._monitor.value(logs)
            if not self._monitor.improved(value, self.best):
                return
            self.best = value
        path = self._path(epoch, logs)
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)   # as Keras creates it
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        if self.verbose:
            print(f"ModelCheckpoint: epoch {epoch + 1}: saved the {'weights' if self.save_weights_only else 'model'} "
                  f"to {path}", file=sys.stderr)

    def _path(self, epoch, logs):
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except KeyError as exc:
            raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} names {exc.args[0]!r}, which is not in "
                             f"the logs (available: epoch, {', '.join(sorted(logs))})") from None
        except (ValueError, IndexError) as exc:
            raise ValueError(f"ModelCheckpoint: cannot format filepath {self.filepath!r}: {exc}") from None


class ReduceLROnPlateau(Callback):
    """Multiply the optimizer's learning rate by ``factor`` (< 1) when ``monitor`` has not
    improved by more than ``min_delta`` for ``patience`` epochs, never below ``min_lr``; then
    wait ``cooldown`` epochs before counting again (Keras's rules). The rate of each epoch is
    logged as ``learning_rate``."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        super().__init__()
        self._monitor = _Monitor("ReduceLROnPlateau", monitor, mode, min_delta)
        self.monitor, self.mode, self.min_delta = self._monitor.name, self._monitor.mode, self._monitor.min_delta
        self.factor = _number("ReduceLROnPlateau", "factor", factor, minimum=0.0)
        if self.factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be < 1 (it multiplies the rate), got {self.factor}")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"ReduceLROnPlateau: {name} must be an int >= 0, got {value!r}")
        self.patience, self.cooldown = int(patience), int(cooldown)
        self.min_lr = _number("ReduceLROnPlateau", "min_lr", min_lr, minimum=0.0)
        self.verbose = verbose

    def check_model(self, model):
        if getattr(model.optimizer, "schedule", None) is not None:
            raise ValueError("ReduceLROnPlateau: the optimizer has its own schedule; use one or the other")

    def on_train_begin(self, logs=None):
        self.best = self._monitor.worst()
        self.wait = 0
        self.cooldown_counter = 0

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if logs is not None:
            logs["learning_rate"] = float(optimizer.learning_rate)
        value = self._monitor.value(logs)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._monitor.improved(value, self.best):
            self.best, self.wait = value, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(optimizer.learning_rate)
                if old > self.min_lr:
                    optimizer.learning_rate = max(old * self.factor, self.min_lr)
                    self.cooldown_counter, self.wait = self.cooldown, 0
                    if self.verbose:
                        print(f"ReduceLROnPlateau: epoch {epoch + 1}: learning rate {old:.6g} -> "
                              f"{optimizer.learning_rate:.6g}", file=sys.stderr)


class CSVLogger(Callback):
    """Write each epoch's logs as a row of a CSV file: a header ``epoch,<keys in sorted
    order>`` (not when appending to a file that has lines), then one row per epoch (epochs
    numbered from 0, as in Keras). ``append``: add to an existing file."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(f"CSVLogger: expected filename to be a path (str or os.PathLike), got "
                            f"{type(filename).__name__}")
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"CSVLogger: separator must be one character, got {separator!r}")
        self.filename, self.sep = os.fspath(filename), separator
        self.append = V.as_bool("CSVLogger", "append", append)
        self._file = self._writer = self.keys = None

    def on_train_begin(self, logs=None):
        self.on_train_end()   # a fit that raised left its file open
        header = True
        if self.append and os.path.exists(self.filename):
            with open(self.filename, encoding="utf-8") as f:
                header = not f.readline()
        self._file = open(self.filename, "a" if self.append else "w", newline="", encoding="utf-8")
        self._header = header
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            self._writer = csv.writer(self._file, delimiter=self.sep, lineterminator="\n")
            if self._header:
                self._writer.writerow(["epoch"] + self.keys)
        self._writer.writerow([epoch] + [logs.get(k, "NA") for k in self.keys])
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


class LambdaCallback(Callback):
    """A callback from functions, as Keras's: ``on_epoch_begin(epoch, logs)``,
    ``on_epoch_end(epoch, logs)``, ``on_train_batch_begin(batch, logs)`` (or Keras 2's
    ``on_batch_begin``), ``on_train_begin(logs)``, ... and, by keyword, any other hook of
    :class:`Callback` (``on_test_end=...``); those not given do nothing."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        super().__init__()
        hooks = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end, on_train_begin=on_train_begin,
                     on_train_end=on_train_end, on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end, **kwargs)
        for name, function in hooks.items():
            if not (name.startswith("on_") and callable(getattr(Callback, name, None))):
                raise TypeError(f"LambdaCallback: {name!r} is not a callback hook")
            if function is not None:
                if not callable(function):
                    raise TypeError(f"LambdaCallback: expected {name} to be callable, got {type(function).__name__}")
                setattr(self, name, function)


def checked_callbacks(what, callbacks):
    """``callbacks`` (None, a Callback or a list or tuple of them) as a list, checked."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        return [callbacks]
    given = ([type(cb).__name__ for cb in callbacks] if isinstance(callbacks, (list, tuple))
             else type(callbacks).__name__)
    if not isinstance(given, list) or not all(isinstance(cb, Callback) for cb in callbacks):
        raise TypeError(f"{what}: expected callbacks to be a Callback or a list of them, got {given}")
    return list(callbacks)


class CallbackList:
    def __init__(self, callbacks, model, what="fit"):
        self.callbacks = checked_callbacks(what, list(callbacks))
        for cb in self.callbacks:
            cb.set_model(model)

    def set_params(self, params):
        for cb in self.callbacks:
            cb.set_params(dict(params))

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args):
            for cb in self.callbacks:
                getattr(cb, hook)(*args)
        return call
