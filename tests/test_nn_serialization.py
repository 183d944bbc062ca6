"""model.save / fastnn.nn.load_model: identical predictions after a round trip; truncated,
altered, oversized and hostile files raise ValueError and never run code; a failed save
leaves the previous file intact and no temporary file behind."""
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from fastnn import nn, optim
from fastnn.nn import (Activation, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, Sequential,
                       load_model, losses, metrics, regularizers, serialization)
from conftest import MeanAbsoluteErrorLoss


def cnn(dtype="float32"):
    model = Sequential([
        Conv2D(4, 3, padding="same", activation="relu", input_shape=(1, 8, 8), kernel_initializer="he_normal"),
        BatchNorm(momentum=0.8),
        MaxPool2D(2),
        Conv2D(6, (2, 3), strides=(1, 2), padding=1, activation="elu", alpha=0.5),
        AvgPool2D(2, strides=1),
        Flatten(),
        Dropout(0.25, seed=3),
        Dense(16, activation="leaky_relu", alpha=0.05, bias_initializer="ones"),
        Dense(3),
        Activation("softmax"),
    ], dtype=dtype, seed=1, name="cnn")
    model.compile(optim.Adam(lr=0.002, weight_decay=1e-4), "sparse_categorical_crossentropy",
                  metrics=["accuracy", metrics.SparseCategoricalAccuracy(name="acc2")])
    return model


@pytest.fixture
def trained(rng):
    x = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    t = rng.integers(0, 3, 40)
    model = cnn()
    model.fit(x, t, epochs=2, batch_size=8, verbose=0)
    return model, x, t


@pytest.fixture
def saved(trained, tmp_path):
    model, x, t = trained
    path = tmp_path / "model.npz"
    model.save(path)
    return path


def members(path):
    with zipfile.ZipFile(path) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


def write_members(path, items, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in items:
            z.writestr(name, data)


def npy_bytes(array, **kwargs):
    buf = io.BytesIO()
    np.save(buf, array, **kwargs)
    return buf.getvalue()


def document(path):
    raw = np.load(io.BytesIO(members(path)["architecture.npy"]))
    return json.loads(raw.tobytes().decode())


def with_document(path, out, change):
    """Copy the model file at ``path`` to ``out`` with its JSON changed by ``change(doc)``."""
    doc = document(path)
    change(doc)
    items = members(path)
    items["architecture.npy"] = npy_bytes(np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8))
    write_members(out, items.items())
    return out


# ----------------------------------------------------------------------------- round trip
def test_round_trip_gives_identical_predictions(trained, saved):
    model, x, t = trained
    loaded = load_model(saved)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert loaded.name == "cnn" and loaded.dtype == np.float32
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(x), loaded.predict(x))
    assert model.evaluate(x, t) == loaded.evaluate(x, t)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.loss.get_config() == model.loss.get_config()
    assert [m.name for m in loaded.metrics] == ["accuracy", "acc2"]
    assert loaded.layers[3].get_config() == model.layers[3].get_config()
    loaded.fit(x, t, epochs=1, verbose=0)  # compiled and trainable


def test_round_trip_float64_mse_and_binary(tmp_path, rng):
    for loss, last in (("mse", Dense(2)), ("binary_crossentropy", Dense(2, activation="sigmoid"))):
        model = Sequential([Dense(5, activation="softplus", input_dim=3), BatchNorm(), last], dtype="float64")
        model.compile("rmsprop", loss)
        x = rng.standard_normal((6, 3))
        model.fit(x, rng.uniform(0, 1, (6, 2)), epochs=1, verbose=0)
        model.save(tmp_path / "m.npz")
        loaded = load_model(tmp_path / "m.npz")
        assert loaded.dtype == np.float64 and loaded.loss.name == loss
        np.testing.assert_array_equal(model.predict(x), loaded.predict(x))


def test_save_without_optimizer_and_uncompiled(tmp_path, rng):
    model = Sequential([Dense(2, input_dim=3)])
    model.save(tmp_path / "a.npz")
    assert not load_model(tmp_path / "a.npz").compiled
    compiled = cnn()
    compiled.save(tmp_path / "b.npz", include_optimizer=False)
    assert not load_model(tmp_path / "b.npz").compiled
    compiled.save(tmp_path / "c.npz")
    assert not load_model(tmp_path / "c.npz", compile=False).compiled
    with pytest.raises(ValueError, match="not built"):
        Sequential([Dense(2)]).save(tmp_path / "d.npz")


def test_file_layout_is_plain_npz_without_pickle(saved):
    with np.load(saved, allow_pickle=False) as npz:
        names = sorted(npz.files)
        assert names[0] == "architecture" and all(n[0] in "ow" and n[1:].isdigit() for n in names[1:])
        for name in names:
            assert npz[name].dtype != object
    doc = document(saved)
    assert doc["format"] == "fastnn.nn.Sequential" and doc["format_version"] == 2
    assert {n for n in names if n.startswith("o")} == {e["key"] for e in doc["optimizer_state"]["arrays"]}
    assert doc["weights"][0]["layer"] == "conv2d" and doc["weights"][0]["weight"] == "kernel"


# ----------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("keep", [0, 1, 30, 0.5, 0.9, -1, -22, -100])
def test_truncated_files_are_rejected(saved, tmp_path, keep):
    data = saved.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[:cut])
    with pytest.raises(ValueError, match="not a valid fastnn model file"):
        load_model(bad)


def test_flipped_bytes_in_weight_data_are_rejected(trained, saved, tmp_path):
    model = trained[0]
    data = bytearray(saved.read_bytes())
    kernel = model.layers[-3].params["kernel"].tobytes()
    offset = bytes(data).find(kernel)
    assert offset > 0
    for position in (offset, offset + len(kernel) // 2, offset + len(kernel) - 1):
        altered = bytearray(data)
        altered[position] ^= 0x10
        bad = tmp_path / "altered.npz"
        bad.write_bytes(bytes(altered))
        with pytest.raises(ValueError, match="not a valid fastnn model file"):
            load_model(bad)


def test_replaced_weights_with_a_valid_zip_fail_the_checksum(saved, tmp_path):
    items = members(saved)
    w = np.load(io.BytesIO(items["w0.npy"]))
    items["w0.npy"] = npy_bytes(w + 1)
    write_members(tmp_path / "swapped.npz", items.items())
    with pytest.raises(ValueError, match="checksum"):
        load_model(tmp_path / "swapped.npz")


@pytest.mark.parametrize("change, message", [
    (lambda d: d["model"]["layers"][-3]["config"].update(units=17), "shape"),
    (lambda d: d["model"]["layers"][0].update(class_name="Lambda"), "unknown layer class"),
    (lambda d: d["model"]["layers"][0]["config"].update(filters="4"), "filters"),
    (lambda d: d["model"]["layers"][0]["config"].update(code="import os"), "unexpected keyword"),
    (lambda d: d["model"].update(dtype="object"), "dtype"),
    (lambda d: d.update(format="keras"), "format"),
    (lambda d: d.update(format_version=99), "format_version"),
    (lambda d: d["weights"].pop(), "weights"),
    (lambda d: d["weights"][0].update(layer="other"), "expects"),
    (lambda d: d["model"].update(layers=[]), "layers"),
    (lambda d: d["model"]["layers"][1]["config"].update(name="conv2d"), "name"),
    (lambda d: d["compile"]["optimizer"].update(name="pickle"), "compile"),
    (lambda d: d["compile"]["loss"].update(name="eval"), "compile"),
    (lambda d: d["model"]["layers"][0]["config"]["kernel_initializer"].update(class_name="os.system"), "initializer"),
    (lambda d: d["model"]["layers"][0]["config"].update(input_shape=[2, 8, 8]), "model file: the weights do not fit"),
])
def test_altered_architecture_is_rejected(saved, tmp_path, change, message):
    bad = with_document(saved, tmp_path / "bad.npz", change)
    with pytest.raises(ValueError, match=message):
        load_model(bad)


def test_oversized_architecture_is_rejected_before_allocating(saved, tmp_path):
    def huge(doc):
        # Dense "dense" with 10**9 units, and every weight entry made consistent with it.
        doc["model"]["layers"][-3]["config"]["units"] = 10**9
        doc["optimizer_state"] = None
        for entry in doc["weights"]:
            if entry["layer"] == "dense":
                entry["shape"] = [entry["shape"][0], 10**9] if entry["weight"] == "kernel" else [10**9]
            if entry["layer"] == "dense_1" and entry["weight"] == "kernel":
                entry["shape"] = [10**9, entry["shape"][1]]
    bad = with_document(saved, tmp_path / "huge.npz", huge)
    with pytest.raises(ValueError, match="max_bytes"):
        load_model(bad)
    with pytest.raises(ValueError, match="max_bytes"):
        load_model(saved, max_bytes=1000)


def test_weight_member_with_extra_or_missing_data_is_rejected(saved, tmp_path):
    items = members(saved)
    for suffix in (b"\0" * 4, b"\0" * 100000):
        changed = dict(items, **{"w0.npy": items["w0.npy"] + suffix})
        write_members(tmp_path / "padded.npz", changed.items())
        with pytest.raises(ValueError, match="truncated or padded|more than its header"):
            load_model(tmp_path / "padded.npz")
    changed = dict(items, **{"w0.npy": items["w0.npy"][:-4]})
    write_members(tmp_path / "short.npz", changed.items())
    with pytest.raises(ValueError, match="truncated"):
        load_model(tmp_path / "short.npz")


def test_npy_headers_are_checked(saved, tmp_path):
    items = members(saved)
    w0 = np.load(io.BytesIO(items["w0.npy"]))
    cases = {
        "dtype": npy_bytes(w0.astype(np.float64)),
        "Fortran": npy_bytes(np.asfortranarray(w0)),
        "shape": npy_bytes(np.zeros(10, dtype=np.float32)),
    }
    for message, data in cases.items():
        write_members(tmp_path / "h.npz", dict(items, **{"w0.npy": data}).items())
        with pytest.raises(ValueError, match=message):
            load_model(tmp_path / "h.npz")
    # A header declaring an enormous array is refused from the header alone.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    write_members(tmp_path / "h.npz", dict(items, **{"w0.npy": header.getvalue()}).items())
    with pytest.raises(ValueError, match="shape"):
        load_model(tmp_path / "h.npz")
    write_members(tmp_path / "h.npz", dict(items, **{"w0.npy": b"not an npy file at all"}).items())
    with pytest.raises(ValueError, match="header"):
        load_model(tmp_path / "h.npz")


class Payload:
    """Unpickling this runs code: it must never happen when loading."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_pickled_payloads_never_run(saved, tmp_path):
    marker = tmp_path / "PWNED"
    evil = np.empty(1, dtype=object)
    evil[0] = Payload(marker)
    items = members(saved)
    hostile = {
        "object_weight.npz": dict(items, **{"w0.npy": npy_bytes(evil, allow_pickle=True)}),
        "object_architecture.npz": dict(items, **{"architecture.npy": npy_bytes(evil, allow_pickle=True)}),
    }
    for name, content in hostile.items():
        write_members(tmp_path / name, content.items())
        with pytest.raises(ValueError):
            load_model(tmp_path / name)
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match="zip"):
        load_model(tmp_path / "plain.pkl")
    # a pickle hidden in an extra member is refused, not read
    write_members(tmp_path / "extra.npz", list(items.items()) + [("payload.npy", npy_bytes(evil, allow_pickle=True))])
    with pytest.raises(ValueError, match="unexpected members"):
        load_model(tmp_path / "extra.npz")
    assert not marker.exists()


def test_other_hostile_archives(saved, tmp_path):
    items = members(saved)
    with pytest.warns(UserWarning, match="Duplicate name"):
        write_members(tmp_path / "dup.npz", list(items.items()) + [("w0.npy", items["w0.npy"])])
    with pytest.raises(ValueError, match="duplicate"):
        load_model(tmp_path / "dup.npz")
    write_members(tmp_path / "noarch.npz", [(k, v) for k, v in items.items() if k != "architecture.npy"])
    with pytest.raises(ValueError, match="architecture"):
        load_model(tmp_path / "noarch.npz")
    write_members(tmp_path / "missing.npz", [(k, v) for k, v in items.items() if k != "w3.npy"])
    with pytest.raises(ValueError, match="missing members"):
        load_model(tmp_path / "missing.npz")
    for text in (b"{\"format\": NaN}", b"[" * 100000 + b"]" * 100000, b"\xff\xfe", b"null", b"{}"):
        arch = npy_bytes(np.frombuffer(text, dtype=np.uint8))
        write_members(tmp_path / "json.npz", dict(items, **{"architecture.npy": arch}).items())
        with pytest.raises(ValueError, match="not a valid fastnn model file"):
            load_model(tmp_path / "json.npz")
    # a deflate bomb in the architecture member: refused from its declared size
    write_members(tmp_path / "bomb.npz",
                  dict(items, **{"architecture.npy": npy_bytes(np.zeros(64 << 20, dtype=np.uint8))}).items(),
                  compression=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(tmp_path / "bomb.npz") < 1 << 20
    with pytest.raises(ValueError, match="limit"):
        load_model(tmp_path / "bomb.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError):
        load_model(tmp_path / "empty.npz")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "does-not-exist.npz")


def test_compressed_npz_is_accepted(saved, tmp_path):
    write_members(tmp_path / "z.npz", members(saved).items(), compression=zipfile.ZIP_DEFLATED)
    a, b = load_model(saved), load_model(tmp_path / "z.npz")
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


# ----------------------------------------------------------------------------- atomic save
def test_failed_save_keeps_the_previous_file(trained, saved, tmp_path, monkeypatch):
    model = trained[0]
    good = saved.read_bytes()
    real_savez = np.savez

    def crash_midway(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(serialization.np, "savez", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        model.save(saved)
    assert saved.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]

    def interrupted(file, *args, **kwargs):
        real_savez(file, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.save(saved)
    assert saved.read_bytes() == good and sorted(os.listdir(tmp_path)) == ["model.npz"]
    monkeypatch.setattr(serialization.np, "savez", real_savez)

    def failing_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(serialization.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        model.save(saved)
    assert saved.read_bytes() == good and sorted(os.listdir(tmp_path)) == ["model.npz"]


def test_a_new_file_gets_the_umask(trained, tmp_path):
    old = os.umask(0o077)
    try:
        trained[0].save(tmp_path / "private.npz")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "private.npz").st_mode & 0o777 == 0o600
    os.umask(0o022)
    try:
        trained[0].save(tmp_path / "shared.npz")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "shared.npz").st_mode & 0o777 == 0o644


def test_a_metric_saved_without_its_settings_loads_with_their_defaults(tmp_path):
    # files written before BinaryAccuracy's threshold was saved
    model = Sequential([Dense(1, activation="sigmoid", input_dim=3)], seed=0)
    model.compile("sgd", "binary_crossentropy", metrics=[metrics.BinaryAccuracy(name="hit")])
    model.save(tmp_path / "new.npz")

    def drop_threshold(doc):
        del doc["compile"]["metrics"][0]["threshold"]
    old = with_document(tmp_path / "new.npz", tmp_path / "old.npz", drop_threshold)
    loaded = load_model(old)
    assert loaded.metrics[0].name == "hit" and loaded.metrics[0].threshold == 0.5


def test_metric_settings_survive_save_and_load(tmp_path, rng):
    model = Sequential([Dense(1, activation="sigmoid", input_dim=3)], seed=0)
    model.compile("sgd", "binary_crossentropy", metrics=[metrics.BinaryAccuracy(name="hit", threshold=0.7)])
    model.save(tmp_path / "b.npz")
    loaded = load_model(tmp_path / "b.npz")
    assert loaded.metrics[0].name == "hit" and loaded.metrics[0].threshold == 0.7
    x = rng.standard_normal((20, 3)).astype(np.float32)
    t = rng.integers(0, 2, 20)
    assert loaded.evaluate(x, t) == model.evaluate(x, t)


def test_weighted_metrics_survive_save_and_load(tmp_path, rng):
    model = Sequential([Dense(2, activation="sigmoid", input_dim=3)], seed=0)
    model.compile("sgd", "binary_crossentropy", metrics=["mae"],
                  weighted_metrics=["mae", metrics.BinaryAccuracy(name="hit", threshold=0.7)])
    model.save(tmp_path / "w.npz")
    assert document(tmp_path / "w.npz")["compile"]["weighted_metrics"] == [
        "mae", {"class_name": "BinaryAccuracy", "name": "hit", "threshold": 0.7}]
    loaded = load_model(tmp_path / "w.npz")
    assert [m.name for m in loaded.metrics] == ["mae"]
    assert [m.name for m in loaded.weighted_metrics] == ["mae", "hit"] and loaded.weighted_metrics[1].threshold == 0.7
    x = rng.standard_normal((20, 3)).astype(np.float32)
    t = rng.integers(0, 2, (20, 2))
    w = rng.random(20)
    logs = loaded.evaluate(x, t, sample_weight=w, return_dict=True)
    assert list(logs) == ["loss", "mae", "weighted_mae", "hit"]
    assert logs == model.evaluate(x, t, sample_weight=w, return_dict=True)
    assert logs["weighted_mae"] != logs["mae"]

    # files from before weighted_metrics have none; a bad list is refused
    def drop(doc):
        del doc["compile"]["weighted_metrics"]
    old = load_model(with_document(tmp_path / "w.npz", tmp_path / "old.npz", drop))
    assert old.weighted_metrics == [] and list(old.evaluate(x, t, return_dict=True)) == ["loss", "mae"]
    for bad in ("mae", ["nope"], [{"class_name": "Payload", "name": "x"}]):
        def change(doc, bad=bad):
            doc["compile"]["weighted_metrics"] = bad
        with pytest.raises(ValueError, match="invalid compile settings"):
            load_model(with_document(tmp_path / "w.npz", tmp_path / "bad.npz", change))
    my_accuracy = type("MyAccuracy", (metrics.BinaryAccuracy,), {})
    model.compile("sgd", "binary_crossentropy", weighted_metrics=[my_accuracy(name="mine")])
    with pytest.raises(ValueError, match="save: the metric .* is a custom class and cannot be saved"):
        model.save(tmp_path / "custom.npz")


def _regularized_model():
    model = Sequential([
        Conv2D(2, 3, activation="relu", input_shape=(1, 5, 5), kernel_regularizer=regularizers.L1L2(0.01, 0.02),
               bias_regularizer="l1"),
        Flatten(),
        Dense(3, activation="softmax", kernel_regularizer=regularizers.L2(0.03)),
    ], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_regularizers_survive_save_and_load(tmp_path, rng):
    x, t = rng.standard_normal((12, 1, 5, 5)).astype(np.float32), rng.integers(0, 3, 12)
    model = _regularized_model()
    model.fit(x, t, epochs=1, batch_size=4, verbose=0, seed=0)
    model.save(tmp_path / "r.npz")
    layers = document(tmp_path / "r.npz")["model"]["layers"]
    assert layers[0]["config"]["kernel_regularizer"] == {"class_name": "L1L2", "config": {"l1": 0.01, "l2": 0.02}}
    assert layers[0]["config"]["bias_regularizer"] == {"class_name": "L1", "config": {"l1": 0.01}}
    assert layers[2]["config"]["kernel_regularizer"] == {"class_name": "L2", "config": {"l2": 0.03}}
    assert layers[2]["config"]["bias_regularizer"] is None
    loaded = load_model(tmp_path / "r.npz")
    assert loaded.losses == model.losses and len(model.losses) == 3
    assert loaded.evaluate(x, t) == model.evaluate(x, t)
    for m in (model, loaded):   # the penalties' gradients too: the next epoch gives the same bits
        m.fit(x, t, epochs=1, batch_size=4, verbose=0, seed=5)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    for layer in (model.layers[0], model.layers[2]):
        copy = type(layer).from_config(layer.get_config())
        assert regularizers.serialize(copy.kernel_regularizer) == regularizers.serialize(layer.kernel_regularizer)
        assert regularizers.serialize(copy.bias_regularizer) == regularizers.serialize(layer.bias_regularizer)

    # files from before the regularizers have none
    def drop(doc):
        for spec in doc["model"]["layers"]:
            spec["config"].pop("kernel_regularizer", None)
            spec["config"].pop("bias_regularizer", None)
    old = load_model(with_document(tmp_path / "r.npz", tmp_path / "old.npz", drop))
    assert old.losses == [] and old.layers[0].kernel_regularizer is None


@pytest.mark.parametrize("value, message", [
    ({"class_name": "L2", "config": {"l2": -1.0}}, r"expected l2 >= 0.0"),
    ({"class_name": "L2", "config": {"l2": "0.1"}}, "expected l2 to be a real number"),
    ({"class_name": "L1", "config": {"l2": 0.1}}, "invalid kernel_regularizer config"),
    ({"class_name": "os.system", "config": {}}, "invalid kernel_regularizer config"),
    ("l3", "unknown kernel_regularizer"),
    (7, "kernel_regularizer must be None"),
])
def test_a_bad_regularizer_in_a_file_is_refused(tmp_path, value, message):
    _regularized_model().save(tmp_path / "r.npz")

    def change(doc):
        doc["model"]["layers"][2]["config"]["kernel_regularizer"] = value
    with pytest.raises(ValueError, match=f"is not a valid fastnn model file: invalid layer 'Dense': .*{message}"):
        load_model(with_document(tmp_path / "r.npz", tmp_path / "bad.npz", change))


def test_save_replaces_an_existing_file_and_keeps_its_mode(trained, tmp_path):
    model = trained[0]
    path = tmp_path / "m.npz"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    model.save(str(path))
    assert os.stat(path).st_mode & 0o777 == 0o640
    load_model(str(path))
    with pytest.raises(ValueError, match="custom"):
        bad = Sequential([Dense(2, input_dim=2)])

        class Custom(metrics.Metric):
            def __call__(self, y, t):
                return 0.0
        bad.compile("sgd", losses.MeanSquaredError(), metrics=[Custom(name="c")])
        bad.save(tmp_path / "c.npz")
    assert not (tmp_path / "c.npz").exists()


def test_bad_paths_are_named(trained, tmp_path):
    model, _, _ = trained
    missing = tmp_path / "no_such_dir" / "m.npz"
    with pytest.raises(FileNotFoundError, match=r"save: cannot write .*no_such_dir.*m\.npz.*no such directory"):
        model.save(missing)
    assert not (tmp_path / "no_such_dir").exists()
    with pytest.raises(TypeError, match="load_model: expected a path .* got int"):
        load_model(3)


class _MySGD(optim.SGD):
    pass


@pytest.mark.parametrize("optimizer, loss, named", [
    (_MySGD(lr=0.1), "mse", "the optimizer _MySGD"),
    ("sgd", MeanAbsoluteErrorLoss(), "the loss MeanAbsoluteErrorLoss"),
    (optim.Adam(schedule=lambda step, lr: lr), "mse", "the optimizer Adam.*schedule"),
])
def test_compile_settings_load_model_cannot_rebuild_are_refused_at_save(tmp_path, optimizer, loss, named):
    model = Sequential([Dense(1, input_dim=3)], seed=0)
    model.compile(optimizer, loss)
    with pytest.raises(ValueError, match=f"save: {named}.*include_optimizer=False"):
        model.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
    model.save(tmp_path / "m.npz", include_optimizer=False)
    assert not load_model(tmp_path / "m.npz").compiled


def test_a_model_with_a_custom_initializer_saves_its_weights_and_refuses_to_redraw(tmp_path, rng):
    def small_normal(shape, dtype, rng):
        return 0.1 * rng.standard_normal(shape)
    model = Sequential([Dense(4, input_dim=3, kernel_initializer=small_normal, activation="tanh"),
                        Dense(2, bias_initializer=lambda shape, dtype, rng: np.full(shape, 0.5))], seed=2)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    config = loaded.get_config()
    assert config["layers"][0]["config"]["kernel_initializer"] == {
        "class_name": "Unsaved", "config": {"description": "function "
                                            "test_a_model_with_a_custom_initializer_saves_its_weights_and_"
                                            "refuses_to_redraw.<locals>.small_normal"}}
    with pytest.raises(ValueError, match=r"initializer: .*a custom one \(function .*small_normal\).*does not keep"):
        Sequential.from_config(config)


@pytest.mark.parametrize("optimizer, settings", [
    (lambda: optim.Nesterov(lr=0.03, momentum=0.5), {"momentum": 0.5, "lr": 0.03}),
    (lambda: optim.Momentum(lr=0.02, momentum=0.7, weight_decay=1e-3), {"momentum": 0.7, "weight_decay": 1e-3}),
    (lambda: optim.Adam(lr=0.004, beta1=0.8, beta2=0.99, eps=1e-6), {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6}),
    (lambda: optim.RMSprop(lr=0.01, decay_rate=0.9, eps=1e-5), {"decay_rate": 0.9, "eps": 1e-5}),
    (lambda: optim.SGD(lr=1.0, schedule=optim.StepDecay(5, 0.5), max_norm=2.0), {"max_norm": 2.0}),
    (lambda: optim.SGD(learning_rate=0.05, momentum=0.9), {"momentum": 0.9, "lr": 0.05}),
])
def test_compile_settings_are_the_literals_given_after_a_load(tmp_path, rng, optimizer, settings):
    # Compared with the numbers the model was compiled with, not with another get_config():
    # a field left out of the config would be missing on both sides of that comparison.
    model = Sequential([Dense(3, input_dim=4)], seed=0)
    model.compile(optimizer(), losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(rng.standard_normal((8, 4)), rng.integers(0, 3, 8), epochs=1, batch_size=4, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert type(loaded.optimizer) is type(model.optimizer)
    for key, value in settings.items():
        assert getattr(loaded.optimizer, "base_lr" if key == "lr" else key) == value, key
    assert loaded.loss.from_logits is True
    if isinstance(loaded.optimizer, optim.SGD) and "max_norm" in settings:
        assert isinstance(loaded.optimizer.schedule, optim.StepDecay)
        assert (loaded.optimizer.schedule.step_size, loaded.optimizer.schedule.gamma) == (5, 0.5)
        assert loaded.optimizer.base_lr == 1.0           # the rate before decay, not the decayed one


def test_an_optimizer_config_keeps_the_base_rate_after_decay():
    opt = optim.SGD(lr=1.0, schedule=optim.StepDecay(1, 0.5))
    params = {"w": np.ones(2)}
    for _ in range(3):
        opt.update(params, {"w": np.ones(2)})
    assert opt.lr == 0.25 and opt.get_config()["lr"] == 1.0       # the third step ran at 1 * 0.5**2
    clone = optim.get(opt.get_config())
    assert isinstance(clone.schedule, optim.StepDecay) and clone.schedule.gamma == 0.5 and clone.base_lr == 1.0


def test_save_weights_and_load_weights(tmp_path, rng):
    x = rng.standard_normal((10, 4)).astype(np.float32)
    t = rng.integers(0, 3, 10)

    def model(seed, units=5):
        m = Sequential([Dense(units, activation="tanh", input_dim=4), BatchNorm(), Dense(3, activation="softmax")],
                       seed=seed)
        m.compile("adam", "sparse_categorical_crossentropy")
        return m

    source = model(0)
    source.fit(x, t, epochs=2, batch_size=5, verbose=0)
    source.save_weights(tmp_path / "w.npz")
    assert not load_model(tmp_path / "w.npz").compiled          # weights (and architecture), no compile settings
    target = model(1)
    assert not np.array_equal(target.predict(x), source.predict(x))
    target.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(target.predict(x), source.predict(x))
    for a, b in zip(target.get_weights(), source.get_weights()):              # BatchNorm's moving statistics too
        np.testing.assert_array_equal(a, b)
    other = model(2, units=6)
    before = other.get_weights()
    with pytest.raises(ValueError, match=r"load_weights: the weights in .*w.npz.*do not fit this model: set_weights: "
                                         r"array 0 \(dense/kernel\) has shape \(4, 5\), expected \(4, 6\)"):
        other.load_weights(tmp_path / "w.npz")
    for a, b in zip(other.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="load_weights: the model is not built"):
        Sequential([Dense(3)]).load_weights(tmp_path / "w.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a valid fastnn model file"):
        target.load_weights(tmp_path / "bad.npz")


def test_reshape_and_global_pooling_layers_round_trip(tmp_path, rng):
    from fastnn.nn import GlobalAveragePooling2D, GlobalMaxPooling2D, Input, Reshape
    x = rng.standard_normal((4, 18)).astype(np.float32)
    model = Sequential([Input(shape=(18,)), Reshape((2, 3, -1)), Conv2D(4, 2, activation="relu"),
                        GlobalMaxPooling2D(name="gmax"), Reshape((4, 1, 1)), GlobalAveragePooling2D(), Dense(2)],
                       seed=0)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]
    assert loaded.layers[0].target_shape == (2, 3, -1) and loaded.layers[2].name == "gmax"
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.get_config() == model.get_config()


@pytest.mark.parametrize("optimizer", ["adam", "momentum", "rmsprop", "nesterov", "adagrad",
                                       optim.SGD(learning_rate=0.05, momentum=0.5)])
def test_training_continues_after_a_load_as_if_never_saved(tmp_path, rng, optimizer):
    # the optimizer's moments, counters and rate are saved: a loaded model's next epoch gives the
    # bits of the uninterrupted run (version 1 files restarted the optimizer, and diverged)
    x, t = rng.standard_normal((24, 5)).astype(np.float32), rng.integers(0, 3, 24)
    model = Sequential([Dense(7, activation="relu", input_dim=5), BatchNorm(), Dense(3, activation="softmax")], seed=1)
    model.compile(optimizer, "sparse_categorical_crossentropy")
    model.fit(x, t, epochs=2, batch_size=8, verbose=0, seed=0)
    model.optimizer.lr *= 0.5                                  # as ReduceLROnPlateau would
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.optimizer.iterations == model.optimizer.iterations == 6
    assert loaded.optimizer.lr == model.optimizer.lr
    for m in (model, loaded):
        m.fit(x, t, epochs=1, batch_size=8, verbose=0, seed=5)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    fresh = load_model(tmp_path / "m.npz")
    fresh.optimizer.set_state(dict(type(fresh.optimizer)().get_state(), lr=fresh.optimizer.lr))   # restarted
    fresh.fit(x, t, epochs=1, batch_size=8, verbose=0, seed=5)
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), fresh.get_weights()))


@pytest.mark.parametrize("change, message", [
    (lambda d: d["optimizer_state"]["arrays"][0].update(weight="nowhere/kernel"), "not a weight of the model"),
    (lambda d: d["optimizer_state"]["arrays"][0].update(shape=[3]), "listed with shape"),
    (lambda d: d["optimizer_state"]["arrays"][0].update(dtype="float64"), "listed as float64"),
    (lambda d: d["optimizer_state"]["arrays"][0].update(slot="os.system"), "slots among"),
    (lambda d: d["optimizer_state"]["arrays"][1].update(slot=d["optimizer_state"]["arrays"][0]["slot"],
                                                        weight=d["optimizer_state"]["arrays"][0]["weight"]), "twice"),
    (lambda d: d["optimizer_state"]["arrays"][0].update(sha256="0" * 64), "checksum"),
    (lambda d: d["optimizer_state"]["arrays"].pop(), "unexpected members"),
    (lambda d: d["optimizer_state"]["counters"].update(iterations=-1), "iterations"),
    (lambda d: d["optimizer_state"]["counters"].update(lr="0.1"), "lr"),
    (lambda d: d["optimizer_state"]["counters"].pop("iter"), "keys"),
    (lambda d: d["optimizer_state"].update(extra=1), "malformed"),
    (lambda d: d.update(compile=None), "no compile settings"),
])
def test_an_altered_optimizer_state_is_rejected(saved, tmp_path, change, message):
    bad = with_document(saved, tmp_path / "bad.npz", change)
    with pytest.raises(ValueError, match=message):
        load_model(bad)


def test_a_version_1_file_without_optimizer_state_loads_with_a_fresh_optimizer(saved, tmp_path):
    def version_1(doc):
        doc["format_version"] = 1
        del doc["optimizer_state"]
    items = {name: data for name, data in members(saved).items() if not name.startswith("o")}
    write_members(tmp_path / "v1.npz", items.items())
    old = with_document(tmp_path / "v1.npz", tmp_path / "v1.npz", version_1)
    model = load_model(old)
    assert model.compiled and model.optimizer.iterations == 0 and model.optimizer.m is None


def test_optimizer_set_state_checks_before_changing_anything():
    adam = optim.Adam()
    p, g = np.ones(3), np.full(3, 0.5)
    adam.update({"w": p}, {"w": g})
    state = adam.get_state()
    assert state["iterations"] == state["iter"] == 1 and set(state["slots"]) == {"m", "v"}
    np.testing.assert_allclose(state["slots"]["m"]["w"], 0.05)                 # (1 - 0.9) * 0.5
    np.testing.assert_allclose(state["slots"]["v"]["w"], 0.00025)              # (1 - 0.999) * 0.25
    for bad, exc in (({**state, "iterations": True}, ValueError), ({**state, "slots": {"h": {}}}, ValueError),
                     ({**state, "slots": {"m": {"w": np.ones(3, int)}}}, TypeError), ([], TypeError)):
        with pytest.raises(exc, match="Adam.set_state"):
            adam.set_state(bad)
    assert adam.iterations == 1 and adam.get_state()["slots"]["m"]["w"] is state["slots"]["m"]["w"]
    other = optim.Adam()
    other.set_state(state)
    assert other.get_state()["slots"]["m"]["w"] is not state["slots"]["m"]["w"]   # copied
    q = p.copy()
    adam.update({"w": p}, {"w": g})
    other.update({"w": q}, {"w": g})
    np.testing.assert_array_equal(p, q)


def test_a_model_saved_after_pop_loads_with_the_state_of_its_own_weights(tmp_path, rng):
    # the optimizer keeps the popped head's moments (and a new head of the same name and
    # another shape gets new ones): the file keeps only what fits the model's weights
    x, t = rng.standard_normal((16, 5)).astype(np.float32), rng.integers(0, 3, 16)
    model = Sequential([Dense(7, activation="relu", input_dim=5), Dense(3, activation="softmax")], seed=1)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, t, epochs=1, batch_size=8, verbose=0)
    optimizer = model.optimizer
    model.pop()
    model.add(Dense(2, activation="softmax", name="dense_1"))
    model.compile(optimizer, "sparse_categorical_crossentropy")
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert sorted(loaded.optimizer.m) == ["dense/bias", "dense/kernel"]
    np.testing.assert_array_equal(loaded.optimizer.m["dense/kernel"], optimizer.m["dense/kernel"])
    for m in (model, loaded):
        m.fit(x, t % 2, epochs=1, batch_size=8, verbose=0, seed=3)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def _keras_style_cnn():
    return Sequential([Conv2D(4, 3, padding="same", activation="relu", data_format="channels_last",
                              input_shape=(6, 6, 3)),
                       BatchNorm(axis=-1), MaxPool2D(2, data_format="channels_last"),
                       AvgPool2D(1, data_format="channels_last"), BatchNorm(axis=3),
                       nn.GlobalMaxPooling2D(data_format="channels_last"), BatchNorm(axis=-1), Dense(2)], seed=2)


def test_data_format_and_axis_survive_save_and_load(tmp_path, rng):
    model = _keras_style_cnn()
    x = rng.standard_normal((5, 6, 6, 3)).astype(np.float32)
    model.compile("sgd", "mse")
    model.fit(x, rng.standard_normal((5, 2)), epochs=2, verbose=0)   # moving statistics away from 0 and 1
    model.save(tmp_path / "m.npz")
    configs = [spec["config"] for spec in document(tmp_path / "m.npz")["model"]["layers"]]
    assert [c.get("data_format") for c in configs] == ["channels_last", None, "channels_last", "channels_last",
                                                       None, "channels_last", None, None]
    assert [c.get("axis") for c in configs] == [None, -1, None, None, 3, None, -1, None]
    nn.set_image_data_format("channels_first")       # the saved, resolved values are loaded, not the default
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.get_config() == model.get_config()
    assert [getattr(layer, "data_format", None) for layer in loaded.layers][:3] == ["channels_last", None,
                                                                                     "channels_last"]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_a_model_made_under_a_global_format_loads_the_same_after_it_changes(tmp_path, rng):
    nn.set_image_data_format("channels_last")
    model = Sequential([Conv2D(3, 2, input_shape=(5, 5, 2)), BatchNorm(), MaxPool2D(2),
                        nn.GlobalAveragePooling2D(), Dense(2)], seed=0)
    assert model.layers[0].data_format == "channels_last" and model.layers[1].axis == -1
    model.save(tmp_path / "m.npz")
    nn.set_image_data_format("channels_first")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.layers[0].data_format == "channels_last" and loaded.layers[1].axis == -1
    assert loaded.input_shape == (5, 5, 2)
    x = rng.standard_normal((3, 5, 5, 2)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    # and the other way round
    cf = Sequential([Conv2D(3, 2, input_shape=(2, 5, 5)), BatchNorm(), nn.GlobalMaxPooling2D()], seed=0)
    cf.save(tmp_path / "cf.npz")
    nn.set_image_data_format("channels_last")
    again = load_model(tmp_path / "cf.npz")
    assert again.layers[0].data_format == "channels_first" and again.layers[1].axis == 1
    x = rng.standard_normal((3, 2, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(again.predict(x), cf.predict(x))


def test_files_from_before_data_format_and_axis_load_channels_first(tmp_path, rng):
    # older files have no data_format or axis keys: they were NCHW, and still load so under a
    # channels_last global default
    model = Sequential([Conv2D(3, 2, input_shape=(2, 5, 5)), BatchNorm(), MaxPool2D(2), AvgPool2D(1),
                        nn.GlobalAveragePooling2D(), BatchNorm(), Dense(2)], seed=0)
    model.save(tmp_path / "new.npz")

    def strip(doc):
        for spec in doc["model"]["layers"]:
            spec["config"].pop("data_format", None)
            spec["config"].pop("axis", None)
    old = with_document(tmp_path / "new.npz", tmp_path / "old.npz", strip)
    assert all("data_format" not in s["config"] and "axis" not in s["config"]
               for s in document(old)["model"]["layers"])
    nn.set_image_data_format("channels_last")
    loaded = load_model(old)
    assert [getattr(layer, "data_format", None) for layer in loaded.layers] == [
        "channels_first", None, "channels_first", "channels_first", "channels_first", None, None]
    assert loaded.layers[1].axis == 1 and loaded.layers[5].axis == 1
    x = rng.standard_normal((3, 2, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@pytest.mark.parametrize("key, value, message", [
    ("data_format", "nhwc", "data_format must be 'channels_first' or 'channels_last'"),
    ("axis", 2, "axis must be 1 or -1"),
])
def test_a_bad_data_format_or_axis_in_a_file_is_refused(tmp_path, key, value, message):
    Sequential([Conv2D(3, 2, input_shape=(2, 5, 5)), BatchNorm()], seed=0).save(tmp_path / "m.npz")

    def change(doc):
        for spec in doc["model"]["layers"]:
            if key in spec["config"]:
                spec["config"][key] = value
    bad = with_document(tmp_path / "m.npz", tmp_path / "bad.npz", change)
    with pytest.raises(ValueError, match=message):
        load_model(bad)
