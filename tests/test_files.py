"""Model files (issue 8): fastnn.nn.load_model on truncated, altered, oversized or hostile
files raises a clear ValueError and never executes code; a failed or killed save never
leaves a half-written file in place of a good one.

Complements tests/test_nn_serialization.py (the format's own tests) with fuzzing of the
bytes of a real file, attacks through the architecture JSON and the zip container,
special files, and saves that crash, race or are killed.
"""
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import nn

INVALID = "not a valid fastnn model file"


def small_model(seed=0):
    model = nn.Sequential([
        nn.Conv2D(3, 3, padding="same", activation="relu", input_shape=(1, 6, 6)),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.BatchNorm(),
        nn.Dense(5, activation="tanh"),
        nn.Dense(2, activation="softmax"),
    ], seed=seed)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(seed)
    model.fit(rng.standard_normal((12, 1, 6, 6)), rng.integers(0, 2, 12), epochs=1, batch_size=4, verbose=0)
    return model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = small_model()
    path = tmp_path_factory.mktemp("files") / "model.npz"
    model.save(path)
    return path, model


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch):
    """Loading must never reach pickle: any attempt fails the test, even if caught."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args[:1])
        raise AssertionError("pickle used while loading a model file")

    class RefusingUnpickler(pickle.Unpickler):
        def __init__(self, *args, **kwargs):
            refuse(*args)

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    yield
    assert not calls, f"pickle was called: {calls}"


def assert_same_model(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    for u, v in zip(wa, wb):
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(u, v)
    assert a.get_config() == b.get_config()


def members(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def write_zip(path, items, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in items:
            z.writestr(name, data)
    return path


def npy(array, **kwargs):
    buf = io.BytesIO()
    np.save(buf, array, **kwargs)
    return buf.getvalue()


def architecture(path):
    return json.loads(np.load(io.BytesIO(members(path)["architecture.npy"])).tobytes())


def with_architecture(src, dst, doc_or_bytes):
    data = doc_or_bytes if isinstance(doc_or_bytes, bytes) else json.dumps(doc_or_bytes).encode()
    items = dict(members(src), **{"architecture.npy": npy(np.frombuffer(data, dtype=np.uint8))})
    return write_zip(dst, items.items())


def load_rejected(path, **kwargs):
    with pytest.raises(ValueError) as info:
        nn.load_model(path, **kwargs)
    message = str(info.value)
    assert "load_model" in message and str(path) in message, message
    return message


# ---------------------------------------------------------------------------- byte-level fuzzing

MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.integers(1, 64)),
    st.tuples(st.just("zero"), st.floats(0, 1, exclude_max=True), st.integers(1, 512)),
    st.tuples(st.just("delete"), st.floats(0, 1, exclude_max=True), st.integers(1, 64)),
)


def mutate(data, mutations):
    data = bytearray(data)
    for kind, where, amount in mutations:
        pos = min(int(where * len(data)), max(len(data) - 1, 0))
        if kind == "flip" and data:
            data[pos] ^= amount
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = bytes((pos * 7 + i) % 256 for i in range(amount))
        elif kind == "zero":
            data[pos:pos + amount] = bytes(len(data[pos:pos + amount]))
        elif kind == "delete":
            del data[pos:pos + amount]
    return bytes(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(MUTATIONS, min_size=1, max_size=3))
def test_mutated_bytes_are_rejected_or_harmless(model_file, mutations):
    """Any change to the bytes of a good file: a ValueError naming the file, or (when the
    change only touched bytes nothing depends on, e.g. a zip timestamp) the very same model."""
    path, model = model_file
    data = mutate(path.read_bytes(), mutations)
    with tempfile.TemporaryDirectory() as tmp:
        bad = os.path.join(tmp, "mutated.npz")
        with open(bad, "wb") as f:
            f.write(data)
        try:
            loaded = nn.load_model(bad)
        except ValueError as exc:
            assert INVALID in str(exc) and bad in str(exc), str(exc)
        else:
            assert_same_model(loaded, model)


@pytest.mark.parametrize("keep", [0, 1, 4, 22, 30, 100, 0.25, 0.5, 0.9, -22, -1])
def test_truncated_at_boundaries(model_file, tmp_path, keep):
    path, _ = model_file
    data = path.read_bytes()
    n = int(keep * len(data)) if isinstance(keep, float) else keep % len(data) if keep < 0 else keep
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[:n])
    load_rejected(bad)


# ---------------------------------------------------------------------------- hostile content

class ExecPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_object_arrays_in_every_member_never_run(model_file, tmp_path):
    path, _ = model_file
    marker = tmp_path / "EXECUTED"
    evil = np.empty(2, dtype=object)
    evil[0], evil[1] = ExecPayload(marker), {"x": ExecPayload(marker)}
    payload = npy(evil, allow_pickle=True)
    for name in members(path):
        items = dict(members(path), **{name: payload})
        for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            load_rejected(write_zip(tmp_path / f"evil-{name}.npz", items.items(), compression))
    # A raw pickle stream, and a pickle where a .npy header should start.
    (tmp_path / "raw.npz").write_bytes(pickle.dumps(ExecPayload(marker)))
    load_rejected(tmp_path / "raw.npz")
    raw_member = dict(members(path), **{"w0.npy": pickle.dumps(ExecPayload(marker))})
    load_rejected(write_zip(tmp_path / "raw-member.npz", raw_member.items()))
    assert not marker.exists()


@pytest.mark.parametrize("class_name", ["__import__", "os.system", "builtins.eval", "Sequential", "Layer",
                                        "../Dense", "Dense\x00", "", "get_layer_class", "object", "type"])
def test_layer_class_names_are_looked_up_not_evaluated(model_file, tmp_path, class_name):
    path, _ = model_file
    doc = architecture(path)
    doc["model"]["layers"][0]["class_name"] = class_name
    load_rejected(with_architecture(path, tmp_path / "cls.npz", doc))


@pytest.mark.parametrize("change", [
    lambda d: d["model"]["layers"][4]["config"].update(units=2**40),
    lambda d: d["model"]["layers"][4]["config"].update(units=-5),
    lambda d: d["model"]["layers"][4]["config"].update(units=2.5),
    lambda d: d["model"]["layers"][4]["config"].update(units="5"),
    lambda d: d["model"]["layers"][4]["config"].update(units=[5]),
    lambda d: d["model"]["layers"][4]["config"].update(activation="__import__('os')"),
    lambda d: d["model"]["layers"][0]["config"].update(filters=2**31, kernel_size=[2**20, 2**20]),
    lambda d: d["model"]["layers"][0]["config"].update(kernel_size=[0, 3]),
    lambda d: d["model"]["layers"][1]["config"].update(pool_size=[10**9, 10**9]),
    lambda d: d["model"].update(input_shape=[1, 2**30, 2**30]),
    lambda d: d["model"].update(input_shape=[-1, 6, 6]),
    lambda d: d["model"].update(dtype="object"),
    lambda d: d["model"].update(dtype="float16"),
    lambda d: d["model"]["layers"].clear(),
    lambda d: d["model"]["layers"].extend([d["model"]["layers"][-1]] * 3),
    lambda d: d["weights"][0].update(shape=[2**40]),
    lambda d: d["weights"][0].update(dtype="float64"),
    lambda d: d["weights"][0].update(key="../../etc/passwd"),
    lambda d: d["weights"].pop(),
    lambda d: d.update(format_version=3),
    lambda d: d.update(compile={"optimizer": {"class_name": "os.system", "config": {}}}),
    lambda d: d.update(compile={"optimizer": "adam", "loss": {"class_name": "__import__"}, "metrics": []}),
    lambda d: d.update(compile={"optimizer": {"class_name": "Adam", "config": {"lr": "1e-3; rm -rf /"}},
                                "loss": "mse", "metrics": []}),
])
def test_altered_architecture_is_rejected(model_file, tmp_path, change):
    path, _ = model_file
    doc = architecture(path)
    change(doc)
    before = _peak_rss()
    load_rejected(with_architecture(path, tmp_path / "alt.npz", doc))
    assert _peak_rss() - before < 64 << 20, "memory was allocated for a refused file"


@pytest.mark.parametrize("text", [
    b'{"format": "fastnn.nn.Sequential", "format_version": 1e999}',
    b'{"a": ' + b"9" * 5000 + b"}",
    b'{"format": Infinity}',
    b"\x00" * 100,
    b'{"format": "fastnn.nn.Sequential"' + b", \"x\": {}" * 10000 + b"}",
    json.dumps({"format": "fastnn.nn.Sequential", "format_version": 1,
                "model": {"layers": [{"class_name": "Dense", "config": {"units": 1}}] * 20000,
                          "input_shape": [1]}, "weights": []}).encode(),
])
def test_malformed_json_is_rejected(model_file, tmp_path, text):
    path, _ = model_file
    load_rejected(with_architecture(path, tmp_path / "json.npz", text))


def _peak_rss():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def npy_header_only(shape, dtype="<f4", fortran=False, extra=b""):
    header = {"descr": dtype, "fortran_order": fortran, "shape": tuple(shape)}
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + extra


@pytest.mark.parametrize("header", [
    npy_header_only([2**62]),                       # declares exabytes, holds nothing
    npy_header_only([3, 1, 3, 3], dtype=">f4"),     # right shape, big-endian
    npy_header_only([3, 1, 3, 3], dtype="|O"),      # object dtype
    npy_header_only([3, 1, 3, 3], fortran=True),
    npy_header_only([3, 1, 3, 3], dtype="<f4", extra=b"\x00" * 10),  # too little data
    npy_header_only([3, 1, 3, 3], dtype="<f4", extra=b"\x00" * (108 + 1000)),  # too much
    b"\x93NUMPY\x09\x00" + b"\x00" * 100,           # unknown version
    b"\x93NUMPY\x01\x00\xff\xff{" + b"'descr': '<f4'" * 4000,  # header claims 64 KiB, is garbage
    b"\x93NUMPY\x01\x00\x10\x00{'descr': __import__('os').system('true')}",
])
def test_hostile_npy_headers(model_file, tmp_path, header):
    path, _ = model_file
    items = dict(members(path), **{"w0.npy": header})
    load_rejected(write_zip(tmp_path / "hdr.npz", items.items()))


def test_weight_member_decompression_bomb(model_file, tmp_path):
    """A member whose header is right but which inflates to far more data is refused
    without inflating it all."""
    path, _ = model_file
    items = members(path)
    w0 = items["w0.npy"]
    bomb = w0 + b"\x00" * (256 << 20)
    items["w0.npy"] = bomb
    bad = write_zip(tmp_path / "bomb.npz", items.items(), zipfile.ZIP_DEFLATED)
    del bomb, items
    assert os.path.getsize(bad) < 2 << 20
    before = _peak_rss()
    load_rejected(bad)
    assert _peak_rss() - before < 128 << 20


def test_zip_container_attacks(model_file, tmp_path):
    path, _ = model_file
    items = members(path)
    # Member names that escape the archive: never written anywhere, refused.
    traversal = dict(items)
    traversal["../../escape.npy"] = traversal.pop("w0.npy")
    load_rejected(write_zip(tmp_path / "traversal.npz", traversal.items()))
    assert not (tmp_path.parent / "escape.npy").exists()
    # An unsupported compression method (zipfile raises NotImplementedError for these).
    bad = tmp_path / "method.npz"
    write_zip(bad, items.items())
    data = bytearray(bad.read_bytes())
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        start = 0
        while (i := data.find(sig, start)) >= 0:
            offset = i + (8 if sig == b"PK\x03\x04" else 10)
            data[offset:offset + 2] = struct.pack("<H", 99)  # AES: not supported by zipfile
            start = i + 4
    bad.write_bytes(bytes(data))
    load_rejected(bad)
    # The encrypted flag.
    enc = tmp_path / "encrypted.npz"
    write_zip(enc, items.items())
    data = bytearray(enc.read_bytes())
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (i := data.find(sig, start)) >= 0:
            data[i + off] |= 1
            start = i + 4
    enc.write_bytes(bytes(data))
    load_rejected(enc)
    # Bad CRC in an otherwise perfect archive.
    crc = tmp_path / "crc.npz"
    write_zip(crc, items.items())
    data = bytearray(crc.read_bytes())
    i = data.find(b"PK\x03\x04")
    j = data.find(b"PK\x01\x02")
    data[i + 14] ^= 0xFF
    data[j + 16] ^= 0xFF
    crc.write_bytes(bytes(data))
    load_rejected(crc)


def test_oversized_files_are_refused_before_reading(model_file, tmp_path):
    path, model = model_file
    big = tmp_path / "big.npz"
    with open(big, "wb") as f:          # a sparse 64 GiB file: no disk used, nothing to read
        f.write(path.read_bytes())
        f.truncate(64 << 30)
    before = _peak_rss()
    message = load_rejected(big)
    assert "max_bytes" in message
    assert _peak_rss() - before < 16 << 20
    # A good file, but with weights above the caller's limit.
    assert "max_bytes" in load_rejected(path, max_bytes=100)
    assert_same_model(nn.load_model(path, max_bytes=1 << 20), model)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_special_paths_do_not_hang(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    result = []

    def attempt(p):
        try:
            nn.load_model(p)
        except (ValueError, OSError) as exc:
            result.append(type(exc))
        except BaseException as exc:  # noqa: BLE001 - reported below
            result.append(exc)

    for p in (fifo, tmp_path, "/dev/zero"):
        t = threading.Thread(target=attempt, args=(p,), daemon=True)
        t.start()
        t.join(10)
        assert not t.is_alive(), f"load_model({p}) hangs"
    assert all(isinstance(r, type) and issubclass(r, (ValueError, OSError)) for r in result), result
    assert len(result) == 3


# ---------------------------------------------------------------------------- saving

def test_failing_writes_keep_the_good_file(model_file, tmp_path, monkeypatch):
    """A write that fails partway (disk full, I/O error, Ctrl-C) leaves the previous file
    byte for byte and no temporary file beside it."""
    path, model = model_file
    target = tmp_path / "keep.npz"
    model.save(target)
    good = target.read_bytes()
    other = small_model(seed=5)

    import fastnn.nn.serialization as ser
    real_fdopen = os.fdopen

    for failure in (OSError(28, "No space left on device"), OSError(5, "Input/output error"), KeyboardInterrupt()):
        class FailingFile(io.RawIOBase):
            """Writes 2 KB for real, then fails."""

            def __init__(self, fd, *args, **kwargs):
                self._f = real_fdopen(fd, "wb")
                self.written = 0

            def writable(self):
                return True

            def write(self, b):
                if self.written + len(b) > 2048:
                    raise failure
                self.written += len(b)
                return self._f.write(b)

            def seekable(self):
                return True

            def seek(self, *args):
                return self._f.seek(*args)

            def tell(self):
                return self._f.tell()

            def flush(self):
                if not self._f.closed:
                    self._f.flush()

            def fileno(self):
                return self._f.fileno()

            def close(self):
                self._f.close()
                super().close()

        monkeypatch.setattr(ser.os, "fdopen", FailingFile)
        with pytest.raises(type(failure)):
            other.save(target)
        monkeypatch.setattr(ser.os, "fdopen", real_fdopen)
        assert target.read_bytes() == good
        assert sorted(os.listdir(tmp_path)) == ["keep.npz"], os.listdir(tmp_path)
    assert_same_model(nn.load_model(target), model)


def test_save_errors_leave_nothing_behind(model_file, tmp_path):
    _, model = model_file
    with pytest.raises(OSError):
        model.save(tmp_path / "no-such-dir" / "m.npz")
    assert os.listdir(tmp_path) == []
    (tmp_path / "adir").mkdir()
    with pytest.raises(OSError):
        model.save(tmp_path / "adir")        # a directory is in the way
    assert sorted(os.listdir(tmp_path)) == ["adir"] and os.listdir(tmp_path / "adir") == []


def test_concurrent_saves_to_one_path_leave_one_complete_file(tmp_path):
    models = [small_model(seed=s) for s in range(4)]
    target = tmp_path / "shared.npz"
    errors = []

    def saver(m):
        try:
            for _ in range(5):
                m.save(target)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=saver, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    loaded = nn.load_model(target)
    matches = 0
    for m in models:
        try:
            assert_same_model(loaded, m)
            matches += 1
        except AssertionError:
            pass
    assert matches == 1
    assert os.listdir(tmp_path) == ["shared.npz"]


def test_killed_save_never_leaves_a_half_written_target(tmp_path):
    """SIGKILL a process while it saves a model over and over: the target is always a
    complete, loadable model (the old one or the new one)."""
    target = tmp_path / "victim.npz"
    small_model(seed=1).save(target)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from fastnn import nn
        model = nn.Sequential([nn.Dense(512, input_dim=256), nn.Dense(256), nn.Dense(10)], seed=2)
        model.build((256,))
        print("ready", flush=True)
        while True:
            model.save({str(target)!r})
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    for delay in (0.05, 0.2, 0.37, 0.6):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env,
                                cwd=tempfile.gettempdir())
        try:
            assert proc.stdout.readline().strip() == b"ready"
            threading.Event().wait(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            proc.stdout.close()
        loaded = nn.load_model(target)       # must not raise: never a torn file
        assert len(loaded.get_weights()) in (10, 6)
    leftovers = [n for n in os.listdir(tmp_path) if n != "victim.npz"]
    # A killed process cannot clean up its temporary file; it is hidden and never the target.
    assert all(n.startswith(".victim.npz.") and n.endswith(".tmp") for n in leftovers), leftovers
