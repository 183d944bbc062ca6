"""Callbacks (early stopping, thresholds, weight change, learning-rate schedule, NaN) and
Ctrl-C during fit: a KeyboardInterrupt from a callback, a real SIGINT, and a second SIGINT,
each leaving the model with exactly the weights of its last completed update."""
import math
import os
import signal

import numpy as np
import pytest

import fastnn
from fastnn import optim
from fastnn.nn import (BatchNorm, Callback, CSVLogger, Dense, EarlyStopping, LambdaCallback, LearningRateScheduler,
                       ModelCheckpoint, ReduceLROnPlateau, Sequential, load_model,
                       StopAtThreshold, StopOnSmallWeightChange, TargetAccuracy, TerminateOnNaN)


def data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    t = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, t


class WeightSnapshots(Callback):
    """Keeps the weights at each epoch's end in ``snapshots[epoch]``."""

    def __init__(self, snapshots):
        super().__init__()
        self.snapshots = snapshots

    def on_epoch_end(self, epoch, logs=None):
        self.snapshots[epoch] = self.model.get_weights()


def make_model(lr=0.1, optimizer=None, seed=0):
    model = Sequential([Dense(8, activation="tanh", input_dim=4), BatchNorm(), Dense(2, activation="softmax")],
                       seed=seed)
    model.compile(optimizer or optim.Momentum(lr=lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class FakeModel:
    """Stands in for a model in unit tests of the stopping rules."""

    def __init__(self):
        self.stop_training = False
        self.weights = [np.zeros(2)]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [w.copy() for w in weights]


def run_epochs(callback, values, monitor="val_loss", model=None):
    """Feed the callback a scripted sequence of epoch values; return the epoch it stopped at."""
    model = model or FakeModel()
    callback.set_model(model)
    callback.on_train_begin({})
    for epoch, value in enumerate(values):
        model.weights = [np.full(2, float(epoch))]
        callback.on_epoch_begin(epoch, {})
        callback.on_epoch_end(epoch, {monitor: value})
        if model.stop_training:
            callback.on_train_end({})
            return epoch
    callback.on_train_end({})
    return None


# ----------------------------------------------------------------------------- stopping rules
def test_early_stopping_patience_and_min_delta():
    assert run_epochs(EarlyStopping(patience=2), [1.0, 0.9, 0.95, 0.91, 0.5]) == 3
    assert run_epochs(EarlyStopping(patience=0), [1.0, 0.9, 0.95]) == 2
    assert run_epochs(EarlyStopping(patience=2), [1.0, 0.9, 0.8, 0.7, 0.6]) is None
    # improvements smaller than min_delta do not count
    assert run_epochs(EarlyStopping(patience=1, min_delta=0.05), [1.0, 0.99, 0.98]) == 1
    # accuracy-like names are maximised
    assert run_epochs(EarlyStopping(monitor="val_accuracy", patience=1), [0.5, 0.6, 0.55], "val_accuracy") == 2
    # Keras 3's baseline: an improvement restarts the count only if it also beats the baseline,
    # and nothing stops after epoch 0
    assert run_epochs(EarlyStopping(patience=1, baseline=0.5), [0.6, 0.55, 0.56], "val_loss") == 2
    assert run_epochs(EarlyStopping(patience=1, baseline=0.5), [0.6, 0.4, 0.41, 0.42], "val_loss") == 2
    assert run_epochs(EarlyStopping(patience=0, baseline=0.5), [0.6, 0.7], "val_loss") == 1


def test_early_stopping_restores_best_weights():
    model = FakeModel()
    cb = EarlyStopping(patience=2, restore_best_weights=True)
    assert run_epochs(cb, [1.0, 0.7, 0.8, 0.9], model=model) == 3
    assert cb.best_epoch == 1
    np.testing.assert_array_equal(model.weights[0], [1.0, 1.0])
    model = FakeModel()
    run_epochs(EarlyStopping(patience=2, restore_best_weights=False), [1.0, 0.7, 0.8, 0.9], model=model)
    np.testing.assert_array_equal(model.weights[0], [3.0, 3.0])


def test_early_stopping_never_stops_after_the_first_epoch():
    # Keras 3: `epoch > 0`: a first epoch that improves on nothing (NaN, or short of the baseline) runs on
    assert run_epochs(EarlyStopping(patience=0), [math.nan, 1.0, 1.5]) == 2
    assert run_epochs(EarlyStopping(patience=0, baseline=0.1), [0.5, 0.6]) == 1


def test_early_stopping_restores_the_best_weights_also_when_it_did_not_stop():
    model = FakeModel()
    cb = EarlyStopping(patience=10, restore_best_weights=True)
    assert run_epochs(cb, [1.0, 0.5, 0.7, 0.8], model=model) is None
    assert cb.best_epoch == 1
    np.testing.assert_array_equal(model.weights[0], [1.0, 1.0])         # epoch 1's, not the last (3)
    # the first epoch's weights are the best until an epoch improves on them
    model = FakeModel()
    cb = EarlyStopping(patience=10, restore_best_weights=True)
    assert run_epochs(cb, [math.nan, math.nan, math.nan], model=model) is None
    assert cb.best_epoch == 0
    np.testing.assert_array_equal(model.weights[0], [0.0, 0.0])


def test_early_stopping_in_fit_ends_with_the_best_epochs_weights():
    x, t = data()
    model = make_model(optimizer=optim.SGD(lr=1.0))
    snapshots = {}
    stopper = EarlyStopping(patience=10, restore_best_weights=True)
    history = model.fit(x, t, epochs=6, validation_split=0.25, callbacks=[stopper, WeightSnapshots(snapshots)], verbose=0)
    val_loss = history.history["val_loss"]
    best = int(np.argmin(val_loss))
    assert stopper.stopped_epoch is None and len(val_loss) == 6 and best != 5
    for a, b in zip(model.get_weights(), snapshots[best]):
        np.testing.assert_array_equal(a, b)
    assert model.evaluate(x[90:], t[90:])[0] == pytest.approx(val_loss[best], rel=1e-5)


def test_early_stopping_needs_the_monitored_value():
    cb = EarlyStopping(monitor="val_loss")
    with pytest.raises(ValueError, match="validation_data"):
        run_epochs(cb, [1.0], monitor="loss")


def test_threshold_and_target_accuracy_rules():
    assert run_epochs(StopAtThreshold(0.3), [1.0, 0.5, 0.3, 0.1], "loss") == 2
    assert run_epochs(TargetAccuracy(0.9), [0.5, 0.89, 0.95], "accuracy") == 2
    assert run_epochs(TargetAccuracy(0.9, monitor="val_accuracy"), [0.95], "val_accuracy") == 0
    assert run_epochs(StopAtThreshold(0.99, monitor="accuracy"), [0.5, 0.6], "accuracy") is None


def test_early_stopping_in_fit_with_a_frozen_model():
    x, t = data()
    model = make_model(optimizer=optim.SGD(lr=0.0))
    history = model.fit(x, t, epochs=10, verbose=0, validation_split=0.25,
                        callbacks=[EarlyStopping(monitor="val_loss", patience=2, min_delta=1e-6)])
    assert len(history.history["loss"]) == 3  # best at epoch 0, then two epochs without improvement


def test_threshold_callbacks_in_fit():
    x, t = data(400)
    model = make_model(lr=0.1)
    cb = StopAtThreshold(0.2, monitor="loss")
    history = model.fit(x, t, epochs=50, verbose=0, callbacks=[cb])
    assert cb.stopped_epoch is not None and cb.stopped_epoch < 49
    assert history.history["loss"][-1] <= 0.2 < min(history.history["loss"][:-1])
    model = make_model(lr=0.1)
    cb = TargetAccuracy(0.97)
    history = model.fit(x, t, epochs=50, verbose=0, callbacks=[cb])
    assert len(history.epoch) < 50 and history.history["accuracy"][-1] >= 0.97
    assert all(a < 0.97 for a in history.history["accuracy"][:-1])


def test_stop_on_small_weight_change():
    x, t = data()
    model = make_model(optimizer=optim.SGD(lr=1e-7))
    cb = StopOnSmallWeightChange(1e-4)
    history = model.fit(x, t, epochs=5, verbose=0, callbacks=[cb])
    assert len(history.epoch) == 1 and 0 < history.history["weight_change"][0] < 1e-4
    model = make_model(optimizer=optim.SGD(lr=0.5))
    history = model.fit(x, t, epochs=3, verbose=0, callbacks=[StopOnSmallWeightChange(1e-4)])
    assert len(history.epoch) == 3 and min(history.history["weight_change"]) > 1e-4


def test_learning_rate_scheduler():
    x, t = data()
    model = make_model(optimizer=optim.SGD(lr=0.2))
    seen = []

    class Probe(Callback):
        def on_batch_begin(self, batch, logs=None):
            if batch == 0:
                seen.append(self.model.optimizer.lr)

    history = model.fit(x, t, epochs=3, verbose=0,
                        callbacks=[LearningRateScheduler(lambda epoch, lr: lr * 0.5), Probe()])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.025])
    assert seen == pytest.approx([0.1, 0.05, 0.025])
    assert "lr" not in history.history
    history = model.fit(x, t, epochs=2, verbose=0, callbacks=[LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))])
    assert history.history["learning_rate"] == pytest.approx([0.01, 0.02])

    def halving(epoch, lr=None):  # a second parameter with a default still gets the rate, as in Keras
        return 0.4 if lr is None else lr * 0.5

    history = model.fit(x, t, epochs=3, verbose=0, callbacks=[LearningRateScheduler(halving)])
    assert history.history["learning_rate"] == pytest.approx([0.01, 0.005, 0.0025])
    scheduled = make_model(optimizer=optim.SGD(lr=0.1, schedule=optim.StepDecay(10)))
    with pytest.raises(ValueError, match="own schedule"):
        scheduled.fit(x, t, epochs=1, verbose=0, callbacks=[LearningRateScheduler(lambda e, lr: lr)])


def test_terminate_on_nan(capsys):
    x, t = data(64)
    x[0, 0] = np.inf
    model = make_model()
    history = model.fit(x, t, epochs=5, batch_size=16, shuffle=False, verbose=0, callbacks=[TerminateOnNaN()])
    assert len(history.epoch) == 1 and not math.isfinite(history.history["loss"][0])
    assert "TerminateOnNaN" in capsys.readouterr().err


def test_callback_hooks_order_and_logs():
    x, t = data(50)
    events = []

    class Recorder(Callback):
        def on_train_begin(self, logs=None):
            events.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            events.append(f"epoch_begin {epoch}")

        def on_batch_end(self, batch, logs=None):
            events.append(f"batch_end {batch} {sorted(logs)}")

        def on_epoch_end(self, epoch, logs=None):
            events.append(f"epoch_end {epoch} {sorted(logs)}")

        def on_train_end(self, logs=None):
            events.append("train_end")

    make_model().fit(x, t, epochs=2, batch_size=25, verbose=0, validation_data=(x, t), callbacks=[Recorder()])
    assert events == [
        "train_begin",
        "epoch_begin 0", "batch_end 0 ['accuracy', 'batch', 'loss', 'size']",
        "batch_end 1 ['accuracy', 'batch', 'loss', 'size']",
        "epoch_end 0 ['accuracy', 'loss', 'val_accuracy', 'val_loss']",
        "epoch_begin 1", "batch_end 0 ['accuracy', 'batch', 'loss', 'size']",
        "batch_end 1 ['accuracy', 'batch', 'loss', 'size']",
        "epoch_end 1 ['accuracy', 'loss', 'val_accuracy', 'val_loss']",
        "train_end",
    ]
    with pytest.raises(TypeError, match="Callback"):
        make_model().fit(x, t, verbose=0, callbacks=[lambda: None])


def test_keras_train_batch_hooks_and_their_older_names():
    x, t = data(50)
    events = []

    class Newer(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            events.append(f"new begin {batch} {logs['size']}")

        def on_train_batch_end(self, batch, logs=None):
            events.append(f"new end {batch} {sorted(logs)}")

    class Older(Callback):
        def on_batch_begin(self, batch, logs=None):
            events.append(f"old begin {batch}")

        def on_batch_end(self, batch, logs=None):
            events.append(f"old end {batch}")

    make_model().fit(x, t, epochs=1, batch_size=30, verbose=0, callbacks=[Newer(), Older()])
    assert events == ["new begin 0 30", "old begin 0", "new end 0 ['accuracy', 'batch', 'loss', 'size']",
                      "old end 0", "new begin 1 20", "old begin 1",
                      "new end 1 ['accuracy', 'batch', 'loss', 'size']", "old end 1"]


# ----------------------------------------------------------------------------- Ctrl-C
BATCH = 10


def reference_weights(x, t, n_batches):
    """The weights after the first n_batches updates of an unshuffled fit, step by step."""
    model = make_model()
    steps = len(x) // BATCH
    for k in range(n_batches):
        lo = (k % steps) * BATCH
        model.train_on_batch(x[lo:lo + BATCH], t[lo:lo + BATCH])
    return model


def assert_same_weights(model, reference):
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == reference.optimizer.iterations


class InterruptAt(Callback):
    def __init__(self, epoch, batch, hook="on_batch_end", action="raise", times=1):
        super().__init__()
        self.at, self.hook, self.action, self.times = (epoch, batch), hook, action, times
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _maybe(self, batch):
        if (self.epoch, batch) == self.at:
            for _ in range(self.times):
                if self.action == "raise":
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signal.SIGINT)

    def on_batch_begin(self, batch, logs=None):
        if self.hook == "on_batch_begin":
            self._maybe(batch)

    def on_batch_end(self, batch, logs=None):
        if self.hook == "on_batch_end":
            self._maybe(batch)


@pytest.mark.parametrize("hook, action, times, applied", [
    ("on_batch_end", "raise", 1, 3),      # raised after batch 2's update: 3 batches applied
    ("on_batch_begin", "raise", 1, 2),    # raised before batch 2 ran: 2 batches applied
    ("on_batch_begin", "signal", 1, 3),   # Ctrl-C: batch 2 still completes, then fit stops
    ("on_batch_end", "signal", 1, 3),
    ("on_batch_begin", "signal", 2, 2),   # Ctrl-C twice: batch 2 is abandoned before it changes anything
])
def test_ctrl_c_stops_after_a_complete_batch(capsys, hook, action, times, applied):
    x, t = data(60)
    steps = len(x) // BATCH
    model = make_model()
    handler_before = signal.getsignal(signal.SIGINT)
    history = model.fit(x, t, epochs=4, batch_size=BATCH, shuffle=False, verbose=0,
                        callbacks=[InterruptAt(1, 2, hook, action, times)])
    assert signal.getsignal(signal.SIGINT) is handler_before
    assert history.interrupted
    assert history.epoch == [0] and len(history.history["loss"]) == 1
    assert history.partial_epoch["batches_done"] == applied
    assert "interrupted (Ctrl-C) in epoch 2/4" in capsys.readouterr().err
    # exactly `applied` batches of epoch 1 were applied, all of them completely
    assert_same_weights(model, reference_weights(x, t, steps + applied))
    # the model is usable: it predicts, evaluates and trains on
    assert np.all(np.isfinite(model.predict(x)))
    assert len(model.fit(x, t, epochs=1, verbose=0).history["loss"]) == 1


def test_second_ctrl_c_during_the_update_is_deferred_until_the_update_is_done(capsys):
    x, t = data(60)
    model = make_model()
    real_update = model.optimizer.update
    calls = []

    def update_with_interrupts(params, grads):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)   # would raise mid-update if not deferred
        real_update(params, grads)

    model.optimizer.update = update_with_interrupts
    history = model.fit(x, t, epochs=2, batch_size=BATCH, shuffle=False, verbose=0)
    assert history.interrupted and len(calls) == 3
    assert_same_weights(model, reference_weights(x, t, 3))


def test_interrupt_before_the_first_epoch_ends_returns_an_empty_history():
    x, t = data(60)
    model = make_model()
    history = model.fit(x, t, epochs=3, batch_size=BATCH, shuffle=False, verbose=0,
                        callbacks=[InterruptAt(0, 0, "on_batch_end")])
    assert history.interrupted and history.history == {} and history.partial_epoch["batches_done"] == 1
    assert_same_weights(model, reference_weights(x, t, 1))


def test_ctrl_c_during_validation_lets_the_epoch_finish(capsys):
    x, t = data(60)
    model = make_model()

    class CtrlCInEpochEnd(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                os.kill(os.getpid(), signal.SIGINT)

    history = model.fit(x, t, epochs=5, batch_size=BATCH, shuffle=False, verbose=0, validation_data=(x, t),
                        callbacks=[CtrlCInEpochEnd()])
    assert history.interrupted and history.partial_epoch is None
    assert history.epoch == [0, 1] and len(history.history["val_loss"]) == 2
    assert "interrupted (Ctrl-C) after epoch 2/5" in capsys.readouterr().err
    assert_same_weights(model, reference_weights(x, t, 2 * len(x) // BATCH))


def test_abandoned_batch_leaves_batchnorm_statistics_untouched(monkeypatch):
    """A second Ctrl-C during a batch's forward pass (after BatchNorm has run) abandons the
    batch: moving statistics included, the model is exactly as after the previous batch."""
    x, t = data(60)
    model = make_model()
    last = model.layers[-1]
    real_forward = type(last).forward
    calls = []

    def forward_with_interrupts(self, *args, **kwargs):
        if self is last:
            calls.append(1)
        if self is last and len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(type(last), "forward", forward_with_interrupts)
    history = model.fit(x, t, epochs=2, batch_size=BATCH, shuffle=False, verbose=0)
    monkeypatch.setattr(type(last), "forward", real_forward)
    assert history.interrupted and history.partial_epoch["batches_done"] == 2
    assert_same_weights(model, reference_weights(x, t, 2))



@pytest.mark.parametrize("moment", ["params", "grads"])
def test_batch_abandoned_between_backward_and_update_leaves_batchnorm_statistics_untouched(monkeypatch, moment):
    """The same, with the second Ctrl-C after the backward pass, while the step collects
    the parameters and gradients for the update."""
    x, t = data(60)
    model = make_model()
    real = getattr(type(model), moment)
    calls = []

    def collect_with_interrupts(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(model), moment, collect_with_interrupts)
    history = model.fit(x, t, epochs=2, batch_size=BATCH, shuffle=False, verbose=0)
    monkeypatch.setattr(type(model), moment, real)
    assert history.interrupted and history.partial_epoch["batches_done"] == 2
    assert_same_weights(model, reference_weights(x, t, 2))


CHILD = r"""
import json, sys
import numpy as np
from fastnn import optim
from fastnn.nn import BatchNorm, Callback, Dense, Sequential

class Ready(Callback):
    def on_batch_end(self, batch, logs=None):
        if batch == 0 and not getattr(self, "said", False):
            self.said = True
            print("READY", flush=True)

rng = np.random.default_rng(0)
x = rng.standard_normal((2000, 20)).astype(np.float32)
t = (x[:, 0] > 0).astype(np.int64)
model = Sequential([Dense(32, activation="relu", input_dim=20), BatchNorm(), Dense(2, activation="softmax")], seed=0)
model.compile(optim.SGD(lr=0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(x, t, epochs=100000, batch_size=4, verbose=0, callbacks=[Ready()])
p = model.predict(x)
print(json.dumps({"interrupted": history.interrupted, "epochs": len(history.epoch),
                  "iterations": model.optimizer.iterations,
                  "batches": (history.partial_epoch or {}).get("batches_done"),
                  "finite": bool(np.all(np.isfinite(p))), "accuracy": model.evaluate(x, t)[1]}), flush=True)
"""


def test_real_ctrl_c_from_outside_the_process():
    import json
    import subprocess
    import sys
    import time
    # the fastnn under test (installed, or a checkout on PYTHONPATH), not the checkout these tests sit in
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["interrupted"] and result["finite"]
    steps = 2000 // 4
    # every applied batch was counted once: completed epochs plus the batches of the partial one
    assert result["iterations"] == result["epochs"] * steps + (result["batches"] or 0)
    assert "fit: Ctrl-C: stopping after the current batch" in err and "interrupted (Ctrl-C)" in err
    assert "Traceback" not in err


def test_early_stopping_min_delta_in_max_mode_asks_for_a_gain_above_it():
    assert run_epochs(EarlyStopping(monitor="val_accuracy", patience=0, min_delta=0.05), [0.5, 0.52, 0.9],
                      "val_accuracy") == 1          # +0.02 is not an improvement of more than 0.05
    assert run_epochs(EarlyStopping(monitor="val_accuracy", patience=0, min_delta=0.05), [0.5, 0.56, 0.62],
                      "val_accuracy") is None


def test_terminate_on_inf_loss_too():
    cb = TerminateOnNaN()
    model = FakeModel()
    cb.set_model(model)
    cb.on_train_batch_end(0, {"loss": 1.0})
    assert not model.stop_training
    cb.on_train_batch_end(1, {"loss": float("inf")})
    assert model.stop_training


@pytest.mark.parametrize("relative", [True, False])
def test_weight_change_is_the_norm_of_the_step_absolute_or_relative(relative):
    x, t = data()
    model = Sequential([Dense(3, activation="tanh", input_dim=4), Dense(2, activation="softmax")], seed=0)
    model.compile(optim.SGD(lr=0.5), "sparse_categorical_crossentropy")
    before = [w.astype(np.float64) for w in model.get_weights()]
    history = model.fit(x, t, epochs=1, batch_size=40, verbose=0,
                        callbacks=[StopOnSmallWeightChange(1e-12, relative=relative)])
    after = [w.astype(np.float64) for w in model.get_weights()]
    step = math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(after, before)))
    norm = math.sqrt(sum(float(np.sum(b * b)) for b in before))
    want = step / norm if relative else step
    assert step > 0 and history.history["weight_change"][0] == pytest.approx(want, rel=1e-6)


class HookRecorder(Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch, dict(logs)))

    def on_test_begin(self, logs=None):
        self.events.append(("test_begin",))

    def on_test_batch_begin(self, batch, logs=None):
        self.events.append(("test_batch_begin", batch, logs["size"]))

    def on_test_batch_end(self, batch, logs=None):
        self.events.append(("test_batch_end", batch, dict(logs)))

    def on_test_end(self, logs=None):
        self.events.append(("test_end", dict(logs)))

    def on_predict_begin(self, logs=None):
        self.events.append(("predict_begin",))

    def on_predict_batch_begin(self, batch, logs=None):
        self.events.append(("predict_batch_begin", batch))

    def on_predict_batch_end(self, batch, logs=None):
        self.events.append(("predict_batch_end", batch, logs["outputs"].copy()))

    def on_predict_end(self, logs=None):
        self.events.append(("predict_end",))


def test_test_hooks_run_in_fits_validation_and_in_evaluate_and_predict_hooks_in_predict():
    x, t = data(50)
    xv, tv = x[:30], t[:30]
    model = make_model()
    rec = HookRecorder()
    history = model.fit(x, t, epochs=2, batch_size=25, verbose=0, validation_data=(xv, tv), callbacks=[rec])
    kinds = [e[0] for e in rec.events]
    per_epoch = ["test_begin", "test_batch_begin", "test_batch_end", "test_batch_begin", "test_batch_end",
                 "test_end", "epoch_end"]
    assert kinds == per_epoch * 2
    assert [e[2] for e in rec.events if e[0] == "test_batch_begin"] == [25, 5, 25, 5]
    for epoch in range(2):
        end = rec.events[7 * epoch + 5][1]
        assert end == {"loss": history.history["val_loss"][epoch], "accuracy": history.history["val_accuracy"][epoch]}
    # evaluate: the first batch's running logs are that batch's loss, the last ones the result
    rec = HookRecorder()
    loss, acc = model.evaluate(xv, tv, batch_size=25, callbacks=rec)
    assert [e[0] for e in rec.events] == per_epoch[:-1]
    first_loss, first_acc = model.evaluate(xv[:25], tv[:25])
    assert rec.events[2][2]["loss"] == pytest.approx(first_loss, rel=1e-6)
    assert rec.events[2][2]["accuracy"] == pytest.approx(first_acc, rel=1e-6)
    assert rec.events[-1][1] == {"loss": loss, "accuracy": acc}
    # predict: each batch's outputs
    rec = HookRecorder()
    probs = model.predict(xv, batch_size=25, callbacks=[rec])
    assert [e[0] for e in rec.events] == ["predict_begin", "predict_batch_begin", "predict_batch_end",
                                          "predict_batch_begin", "predict_batch_end", "predict_end"]
    np.testing.assert_array_equal(np.concatenate([rec.events[2][2], rec.events[4][2]]), probs)
    for call in (lambda: model.evaluate(xv, tv, callbacks=[print]), lambda: model.predict(xv, callbacks="cb")):
        with pytest.raises(TypeError, match=r"(evaluate|predict): expected callbacks to be a Callback"):
            call()


# ----------------------------------------------------------------------------- Keras's other callbacks
def test_reduce_lr_on_plateau_rules():
    model = FakeModel()
    model.optimizer = optim.SGD(lr=1.0)
    cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, cooldown=1, min_lr=0.2)
    cb.set_model(model)
    cb.on_train_begin({})
    logged = []
    for epoch in range(9):
        logs = {"loss": 1.0}
        cb.on_epoch_end(epoch, logs)
        logged.append(logs["learning_rate"])
    # improvement at epoch 0; 2 epochs without: x0.5 after epochs 2 and 4, then the 0.2 floor after epoch 6;
    # the epoch after each cut is cooldown (not counted)
    assert logged == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2]
    assert model.optimizer.lr == 0.2
    # an improvement smaller than min_delta (1e-4 by default) does not count; accuracy is maximised
    model.optimizer = optim.SGD(lr=1.0)
    cb = ReduceLROnPlateau(monitor="val_accuracy", patience=1)
    cb.set_model(model)
    cb.on_train_begin({})
    for epoch, value in enumerate([0.5, 0.50005, 0.6]):
        cb.on_epoch_end(epoch, {"val_accuracy": value})
    assert model.optimizer.lr == pytest.approx(0.1, rel=1e-15)
    for bad, error in ((dict(factor=1.0), ValueError), (dict(patience=-1), ValueError), (dict(factor="x"), TypeError),
                       (dict(mode="up"), ValueError)):
        with pytest.raises(error, match="ReduceLROnPlateau"):
            ReduceLROnPlateau(**bad)


def test_reduce_lr_on_plateau_in_fit():
    x, t = data()
    model = make_model(optimizer=optim.SGD(lr=1e-9))
    history = model.fit(x, t, epochs=4, shuffle=False, verbose=0,
                        callbacks=[ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1)])
    assert history.history["learning_rate"] == pytest.approx([1e-9, 1e-9, 5e-10, 2.5e-10], rel=1e-12)
    scheduled = make_model(optimizer=optim.SGD(lr=0.1, schedule=optim.StepDecay(10)))
    with pytest.raises(ValueError, match="ReduceLROnPlateau: the optimizer has its own schedule"):
        scheduled.fit(x, t, epochs=1, verbose=0, callbacks=[ReduceLROnPlateau()])


def test_model_checkpoint_every_epoch_and_best_only(tmp_path):
    x, t = data()
    model = make_model(optimizer=optim.SGD(lr=1.0))
    snapshots = {}
    every = ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.3f}.npz"))
    best = ModelCheckpoint(tmp_path / "best.npz", monitor="val_loss", save_best_only=True, save_weights_only=True)
    history = model.fit(x, t, epochs=6, validation_split=0.25, callbacks=[every, best, WeightSnapshots(snapshots)], verbose=0)
    val_loss = history.history["val_loss"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["best.npz"] + [f"ckpt-{e + 1:02d}-{v:.3f}.npz" for e, v in enumerate(val_loss)])
    for epoch, value in enumerate(val_loss):
        saved = load_model(tmp_path / f"ckpt-{epoch + 1:02d}-{value:.3f}.npz")
        assert saved.compiled
        for a, b in zip(saved.get_weights(), snapshots[epoch]):
            np.testing.assert_array_equal(a, b)
    winner = int(np.argmin(val_loss))
    assert winner != 5
    saved = load_model(tmp_path / "best.npz")
    assert not saved.compiled                                  # save_weights_only: no compile settings
    for a, b in zip(saved.get_weights(), snapshots[winner]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"ModelCheckpoint: only save_freq='epoch' is supported"):
        ModelCheckpoint(tmp_path / "m.npz", save_freq=10)
    with pytest.raises(TypeError, match="ModelCheckpoint: expected save_best_only to be True or False"):
        ModelCheckpoint(tmp_path / "m.npz", save_best_only="yes")
    with pytest.raises(ValueError, match=r"ModelCheckpoint: filepath .* names 'val_acc', which is not in the logs"):
        model.fit(x, t, epochs=1, verbose=0, callbacks=[ModelCheckpoint(str(tmp_path / "{val_acc}.npz"))])


def test_model_checkpoint_keeps_its_best_across_fits_and_makes_the_directory(tmp_path):
    x, t = data()
    model = make_model(optimizer=optim.SGD(lr=1.0))
    best = ModelCheckpoint(tmp_path / "new" / "dir" / "best.npz", monitor="val_loss", save_best_only=True)
    first = model.fit(x, t, epochs=3, validation_split=0.25, verbose=0, callbacks=[best]).history["val_loss"]
    assert best.best == min(first)
    saved = load_model(tmp_path / "new" / "dir" / "best.npz").get_weights()
    model.optimizer.lr = 50.0                                   # a second fit that only gets worse
    second = model.fit(x, t, epochs=2, validation_split=0.25, verbose=0, callbacks=[best]).history["val_loss"]
    assert min(second) > min(first)
    for a, b in zip(load_model(tmp_path / "new" / "dir" / "best.npz").get_weights(), saved):
        np.testing.assert_array_equal(a, b)                     # the best file was not overwritten


def bad_epoch_end(epoch, logs):
    raise ValueError("fit: a callback that fails")


def test_csv_logger_writes_the_history(tmp_path):
    x, t = data()
    model = make_model()
    path = tmp_path / "log.csv"
    history = model.fit(x, t, epochs=2, validation_split=0.25, verbose=0, callbacks=[CSVLogger(path)])
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,accuracy,loss,val_accuracy,val_loss"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == [0, 1]
    for i, key in enumerate(["accuracy", "loss", "val_accuracy", "val_loss"], start=1):
        assert [float(r[i]) for r in rows] == history.history[key]        # written exactly (repr of the float)
    model.fit(x, t, epochs=3, initial_epoch=2, verbose=0, callbacks=[CSVLogger(path, append=True)])
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and lines[3].startswith("2,") and lines[0].startswith("epoch")   # no second header
    model.fit(x, t, epochs=1, verbose=0, callbacks=[CSVLogger(path, separator=";")])
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch;accuracy;loss" and len(lines) == 2                # overwritten
    with pytest.raises(ValueError, match="CSVLogger: separator must be one character"):
        CSVLogger(path, separator=", ")
    # a fit that raises leaves the file open; the next fit closes it before opening it again
    logger = CSVLogger(path)
    with pytest.raises(ValueError, match="a callback that fails"):
        model.fit(x, t, epochs=1, verbose=0, callbacks=[logger, LambdaCallback(on_epoch_end=bad_epoch_end)])
    first = logger._file
    model.fit(x, t, epochs=1, verbose=0, callbacks=[logger])
    assert first.closed and logger._file is None


def test_lambda_callback():
    x, t = data(50)
    calls = []
    cb = LambdaCallback(on_train_begin=lambda logs: calls.append("train_begin"),
                        on_epoch_begin=lambda epoch, logs: calls.append(f"epoch_begin {epoch}"),
                        on_batch_begin=lambda batch, logs: calls.append(f"batch_begin {batch}"),
                        on_batch_end=lambda batch, logs: calls.append(f"batch_end {batch} {sorted(logs)}"),
                        on_epoch_end=lambda epoch, logs: calls.append(f"epoch_end {epoch} {sorted(logs)}"),
                        on_train_end=lambda logs: calls.append("train_end"))
    make_model().fit(x, t, epochs=1, batch_size=25, verbose=0, callbacks=[cb])
    batch_keys = "['accuracy', 'batch', 'loss', 'size']"
    assert calls == ["train_begin", "epoch_begin 0", "batch_begin 0", f"batch_end 0 {batch_keys}",
                     "batch_begin 1", f"batch_end 1 {batch_keys}", "epoch_end 0 ['accuracy', 'loss']", "train_end"]
    only = []
    make_model().fit(x, t, epochs=2, verbose=0, callbacks=[LambdaCallback(on_epoch_end=lambda e, logs: only.append(e))])
    assert only == [0, 1]
    with pytest.raises(TypeError, match="LambdaCallback: expected on_epoch_end to be callable, got int"):
        LambdaCallback(on_epoch_end=3)
    # Keras 3's names, and any hook by keyword
    seen = []
    cb = LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(f"train {batch}"),
                        on_test_end=lambda logs: seen.append(f"test {sorted(logs)}"))
    make_model().fit(x, t, epochs=1, batch_size=25, verbose=0, validation_split=0.5, callbacks=[cb])
    assert seen == ["train 0", "test ['accuracy', 'loss']"]
    with pytest.raises(TypeError, match="LambdaCallback: 'on_epoch_ends' is not a callback hook"):
        LambdaCallback(on_epoch_ends=print)


def test_a_callback_that_cannot_train_the_model_refuses_the_fit_before_anything_changes(tmp_path):
    x, t = data(20)
    model = Sequential([Dense(3), Dense(3, activation="softmax")], seed=0)    # built by fit, from x
    model.compile(optim.SGD(lr=0.1, schedule=optim.StepDecay(1, 0.5)), "sparse_categorical_crossentropy")
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss\n0,1.0\n")
    for clashing in (ReduceLROnPlateau(monitor="loss"), LearningRateScheduler(lambda epoch, lr: lr)):
        with pytest.raises(ValueError, match="own schedule; use one or the other"):
            model.fit(x, t, epochs=1, verbose=0, callbacks=[CSVLogger(log), clashing])
        assert not model.built and log.read_text() == "epoch,loss\n0,1.0\n"
