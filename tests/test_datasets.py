import gzip
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest

from fastnn import datasets
from helpers import idx_bytes, make_mnist_dir, write

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


# ---------------------------------------------------------------------------- read_idx

@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                        (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)])
def test_read_idx_round_trips_every_type(tmp_path, compress, code, dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        array = rng.integers(info.min, info.max, size=(3, 5, 2), endpoint=True).astype(dtype)
    else:
        array = rng.standard_normal((3, 5, 2)).astype(dtype)
    path = write(tmp_path / "a.idx", idx_bytes(array, code), compress)
    out = datasets.read_idx(path)
    assert out.dtype == dtype and out.dtype.isnative
    assert out.shape == (3, 5, 2)
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_labels_1d_and_images_3d(tmp_path, compress):
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.uint8)
    images = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)
    lab = datasets.read_idx(write(tmp_path / "l", idx_bytes(labels), compress))
    img = datasets.read_idx(write(tmp_path / "i", idx_bytes(images), compress))
    assert lab.shape == (8,) and lab.tolist() == [3, 1, 4, 1, 5, 9, 2, 6]
    assert img.shape == (2, 4, 3) and img[1, 3, 2] == 23


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    labels = np.array([7, 8], dtype=np.uint8)
    raw_named_gz = write(tmp_path / "raw.gz", idx_bytes(labels), compress=False)
    gz_named_raw = write(tmp_path / "gz.idx", idx_bytes(labels), compress=True)
    assert datasets.read_idx(raw_named_gz).tolist() == [7, 8]
    assert datasets.read_idx(gz_named_raw).tolist() == [7, 8]


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("mutate,message", [
    (lambda b: b"\x01" + b[1:], "not an IDX file"),
    (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX type code"),
    (lambda b: b[:3] + b"\x00" + b[4:], "dimension count 0"),
    (lambda b: b[:3] + b"\x09" + b[4:], "dimension count 9"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "longer than its header says"),
    (lambda b: b[:9], "truncated"),
    (lambda b: b[:2], "4-byte header"),
    (lambda b: b"", "4-byte header"),
    # dims 2^22 x 2^21 x 2^21: 2^64 items, 0 in int64 arithmetic
    (lambda b: b[:4] + bytes.fromhex("00400000" "00200000" "00200000"), r"need 18446744073709551616 data bytes"),
])
def test_read_idx_rejects_bad_files(tmp_path, compress, mutate, message):
    good = idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8))
    path = write(tmp_path / "bad", mutate(good), compress)
    with pytest.raises(ValueError, match=message):
        datasets.read_idx(path)


def test_read_idx_rejects_truncated_and_corrupt_gzip(tmp_path):
    payload = gzip.compress(idx_bytes(np.arange(600, dtype=np.uint8).reshape(6, 10, 10)))
    (tmp_path / "cut.gz").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        datasets.read_idx(tmp_path / "cut.gz")
    flipped = bytearray(payload)
    flipped[len(flipped) // 2] ^= 0xFF
    (tmp_path / "flip.gz").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        datasets.read_idx(tmp_path / "flip.gz")


# ---------------------------------------------------------------------------- load_mnist from a directory

@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_from_directory_matches_written_arrays(tmp_path, compress):
    arrays = make_mnist_dir(tmp_path, compress=compress)
    (x_train, t_train), (x_test, t_test) = datasets.load_mnist(tmp_path)
    assert x_train.shape == (7, 784) and x_train.dtype == np.float32
    assert x_test.shape == (5, 784)
    np.testing.assert_array_equal(x_train, arrays["train"][0].reshape(7, 784) / np.float32(255))
    assert t_train.dtype == np.int64 and t_train.tolist() == arrays["train"][1].tolist()
    assert t_test.tolist() == arrays["t10k"][1].tolist()
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0


def test_load_mnist_argument_meanings(tmp_path):
    arrays = make_mnist_dir(tmp_path)
    (x_train, t_train), (x_test, t_test) = datasets.load_mnist(tmp_path, normalize=False, flatten=False,
                                                               one_hot_label=True)
    assert x_train.dtype == np.uint8 and x_train.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(x_train[:, 0], arrays["train"][0])
    assert t_test.shape == (5, 10) and t_test.dtype == np.float32
    assert t_test.sum(axis=1).tolist() == [1.0] * 5
    assert np.argmax(t_test, axis=1).tolist() == arrays["t10k"][1].tolist()


def test_load_fashion_mnist_reads_the_same_layout(tmp_path):
    arrays = make_mnist_dir(tmp_path, seed=3)
    (_, t_train), (x_test, _) = datasets.load_fashion_mnist(tmp_path, flatten=False)
    assert x_test.shape == (5, 1, 28, 28)
    assert t_train.tolist() == arrays["train"][1].tolist()


def test_load_mnist_with_only_the_test_split(tmp_path):
    arrays = make_mnist_dir(tmp_path, splits=("t10k",))
    with pytest.warns(UserWarning, match="only the test set"):
        (x_train, t_train), (x_test, t_test) = datasets.load_mnist(tmp_path)
    assert x_train is None and t_train is None
    assert x_test.shape == (5, 784) and t_test.tolist() == arrays["t10k"][1].tolist()


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no mnist files"):
        datasets.load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        datasets.load_mnist(tmp_path / "missing")
    make_mnist_dir(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte.gz"):
        datasets.load_mnist(tmp_path)


def test_load_mnist_rejects_inconsistent_files(tmp_path):
    make_mnist_dir(tmp_path)
    write(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(4, dtype=np.uint8)), True)
    with pytest.raises(ValueError, match="5 images but .* 4 labels"):
        datasets.load_mnist(tmp_path)
    write(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.array([0, 1, 2, 3, 12], dtype=np.uint8)), True)
    with pytest.raises(ValueError, match="label 12"):
        datasets.load_mnist(tmp_path)
    write(tmp_path / "t10k-images-idx3-ubyte.gz", idx_bytes(np.zeros((5, 8, 8), dtype=np.uint8)), True)
    with pytest.raises(ValueError, match=r"expected uint8 \(N, 28, 28\)"):
        datasets.load_mnist(tmp_path)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="shared/data/mnist not present")
def test_shared_mnist_test_set():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # that directory holds only the t10k split
        (_, _), (x_test, t_test) = datasets.load_mnist(SHARED_MNIST)
    assert x_test.shape == (10000, 784) and x_test.dtype == np.float32
    assert x_test.min() == 0.0 and x_test.max() == 1.0
    # Published facts about the MNIST test set: the first labels and the class counts.
    assert t_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(t_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").is_file(), reason="shared/data/mnist not present")
def test_shared_mnist_labels_match_published_sha256():
    digest = hashlib.sha256((SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()).hexdigest()
    assert digest == datasets.MNIST_FILES["test_labels"][1]


# ---------------------------------------------------------------------------- download into the cache

def serve_dir(tmp_path, files_table, seed=0):
    """A directory of gzip IDX files and a files table whose hashes are those of the written files."""
    src = tmp_path / "server"
    src.mkdir()
    make_mnist_dir(src, seed=seed)
    table = {key: (name, hashlib.sha256((src / name).read_bytes()).hexdigest())
             for key, (name, _) in files_table.items()}
    return src, table


def test_download_via_file_url_fills_the_cache(tmp_path, monkeypatch):
    src, table = serve_dir(tmp_path, datasets.MNIST_FILES)
    cache = tmp_path / "cache"
    monkeypatch.setenv("FASTNN_DATA", str(cache))
    monkeypatch.setattr(datasets, "MNIST_FILES", table)
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [(tmp_path / "nowhere").as_uri() + "/", src.as_uri() + "/"])
    (x_train, t_train), (x_test, _) = datasets.load_mnist()
    assert x_train.shape == (7, 784) and x_test.shape == (5, 784)
    cached = sorted(p.name for p in (cache / "mnist").iterdir())
    assert cached == sorted(name for name, _ in table.values())  # no leftover temporary files
    # Second call reads the cache: the mirrors are gone and it still works.
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [])
    (_, t_train2), _ = datasets.load_mnist()
    assert t_train2.tolist() == t_train.tolist()


def test_checksum_mismatch_leaves_no_cache_file(tmp_path, monkeypatch):
    src, table = serve_dir(tmp_path, datasets.FASHION_MNIST_FILES)
    name, _ = table["test_images"]
    table["test_images"] = (name, "0" * 64)
    cache = tmp_path / "cache"
    monkeypatch.setenv("FASTNN_DATA", str(cache))
    monkeypatch.setattr(datasets, "FASHION_MNIST_FILES", table)
    monkeypatch.setitem(datasets.MIRRORS, "fashion-mnist", [src.as_uri() + "/"])
    with pytest.raises(OSError, match="SHA-256"):
        datasets.load_fashion_mnist()
    leftover = sorted(p.name for p in (cache / "fashion-mnist").iterdir())
    assert name not in leftover
    assert not [p for p in leftover if p.endswith(".part")]


def test_interrupted_download_leaves_no_cache_file(tmp_path, monkeypatch):
    class Broken:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            raise ConnectionResetError("connection reset mid-file")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda url, timeout: Broken())
    with pytest.raises(OSError, match="connection reset"):
        datasets._download("x.gz", "0" * 64, tmp_path / "c", ["https://example.invalid/"])
    assert list((tmp_path / "c").iterdir()) == []


def test_data_home_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path))
    assert datasets.data_home() == tmp_path
    monkeypatch.delenv("FASTNN_DATA")
    assert datasets.data_home() == Path.home() / ".fastnn" / "data"


# ---------------------------------------------------------------------------- digits

def test_load_digits_shapes_values_and_split():
    (x_train, t_train), (x_test, t_test) = datasets.load_digits()
    assert x_train.shape == (1438, 64) and x_test.shape == (359, 64)
    assert x_train.dtype == np.float32 and t_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    # The set's class counts (sklearn's digits: 178 182 177 183 181 182 181 179 174 180).
    counts = np.bincount(np.concatenate([t_train, t_test]), minlength=10)
    assert counts.tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # Stratified: each class is 20% (rounded) of the test set.
    assert np.bincount(t_test).tolist() == [int(round(c * 0.2)) for c in counts]
    # Pixels are counts 0..16 in the source, so every normalised value is a multiple of 1/16.
    np.testing.assert_array_equal(x_train * 16, np.round(x_train * 16))


def test_load_digits_options_and_fixed_split():
    (x_raw, t_raw), (xt_raw, _) = datasets.load_digits(normalize=False, flatten=False, one_hot_label=True)
    assert x_raw.shape == (1438, 1, 8, 8) and x_raw.dtype == np.uint8 and x_raw.max() == 16
    assert t_raw.shape == (1438, 10) and t_raw.dtype == np.float32
    (x_norm, t_norm), _ = datasets.load_digits()
    np.testing.assert_array_equal(x_norm, x_raw.reshape(-1, 64) / np.float32(16))
    np.testing.assert_array_equal(np.argmax(t_raw, axis=1), t_norm)
    # No test image also appears in the training set.
    train_rows = {r.tobytes() for r in x_raw.reshape(-1, 64)}
    assert not any(r.tobytes() in train_rows for r in xt_raw.reshape(-1, 64))
    (x_again, _), _ = datasets.load_digits()
    np.testing.assert_array_equal(x_again, x_norm)


def test_digits_first_image_is_the_published_zero():
    # The first row of the source file (sklearn digits.images[0]), a zero; rows are stored in the npz.
    with np.load(Path(datasets.__file__).parent / "data" / "digits.npz") as f:
        rows = np.concatenate([f["train_rows"], f["test_rows"]])
        x = np.concatenate([f["x_train"], f["x_test"]])
        t = np.concatenate([f["t_train"], f["t_test"]])
    assert sorted(rows.tolist()) == list(range(1797))
    first = x[np.flatnonzero(rows == 0)[0]]
    assert t[np.flatnonzero(rows == 0)[0]] == 0
    assert first.reshape(8, 8)[0].tolist() == [0, 0, 5, 13, 9, 1, 0, 0]
    assert first.reshape(8, 8)[7].tolist() == [0, 0, 6, 13, 10, 0, 0, 0]


# ---------------------------------------------------------------------------- synthetic

@pytest.mark.parametrize("gate,truth", [("AND", [0, 0, 0, 1]), ("nand", [1, 1, 1, 0]), ("OR", [0, 1, 1, 1]),
                                        ("XOR", [0, 1, 1, 0])])
def test_logic_gates(gate, truth):
    x, t = datasets.logic_gate(gate)
    assert x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert t.tolist() == truth


def test_logic_gate_unknown():
    with pytest.raises(ValueError, match="unknown gate 'NOR'"):
        datasets.logic_gate("NOR")


@pytest.mark.parametrize("call, error, message", [
    (lambda: datasets.noisy_parabola(10, noise="a"), TypeError, "noisy_parabola: expected noise to be a real number"),
    (lambda: datasets.noisy_parabola(10, noise=float("nan")), ValueError, "noise must be finite and >= 0"),
    (lambda: datasets.noisy_parabola(10, noise=-0.1), ValueError, "noise must be finite and >= 0"),
    (lambda: datasets.noisy_parabola(10, seed="a"), TypeError, "noisy_parabola: expected seed to be an int"),
    (lambda: datasets.noisy_parabola(10, seed=-1), ValueError, "noisy_parabola: expected seed >= 0, got -1"),
    (lambda: datasets.spirals(10, noise=float("inf")), ValueError, "spirals: noise must be finite"),
    (lambda: datasets.blobs(10, std=float("nan")), ValueError, "blobs: std must be finite"),
    (lambda: datasets.blobs(10, spread=float("inf")), ValueError, "blobs: spread must be finite"),
    (lambda: datasets.blobs(10, spread=1e308), ValueError, "blobs: spread must be at most"),
    (lambda: datasets.tabular_binary(10, seed=1.5), TypeError, "tabular_binary: expected seed to be an int"),
    (lambda: datasets.tabular_binary(10, test_fraction="0.2"), TypeError,
     "tabular_binary: expected test_fraction to be a real number"),
    (lambda: datasets.tabular_binary(4, test_fraction=0.9), ValueError, "leaves 0 training row"),
    (lambda: datasets.tabular_binary(5, test_fraction=0.8), ValueError, "leaves 1 training row"),
    (lambda: datasets.load_digits(normalize="no"), TypeError, "load_digits: expected normalize to be True or False"),
    (lambda: datasets.load_digits(flatten=None), TypeError, "load_digits: expected flatten to be True or False"),
    (lambda: datasets.load_mnist(normalize="yes"), TypeError, "load_mnist: expected normalize to be True or False"),
    (lambda: datasets.load_mnist(""), ValueError, "load_mnist: path is empty"),
    (lambda: datasets.load_fashion_mnist(123), TypeError, "load_fashion_mnist: path must be a directory's path"),
])
def test_synthetic_sets_and_loaders_check_their_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_noisy_parabola():
    x, y = datasets.noisy_parabola(2000, noise=0.1, seed=3)
    assert x.shape == y.shape == (2000, 1) and x.dtype == np.float32
    assert -1 <= x.min() and x.max() <= 1
    residual = y - (x ** 2 - 0.5)
    assert abs(residual.mean()) < 0.01 and 0.09 < residual.std() < 0.11
    x2, y2 = datasets.noisy_parabola(2000, noise=0.1, seed=3)
    np.testing.assert_array_equal(y, y2)
    _, clean = datasets.noisy_parabola(50, noise=0.0, seed=1)
    x_clean, _ = datasets.noisy_parabola(50, noise=0.0, seed=1)
    np.testing.assert_allclose(clean, x_clean ** 2 - 0.5, rtol=1e-6, atol=1e-6)


def test_spirals_and_blobs():
    x, t = datasets.spirals(50, 3, seed=1)
    assert x.shape == (150, 2) and np.bincount(t).tolist() == [50, 50, 50]
    assert np.all(np.hypot(x[:, 0], x[:, 1]) < 1.0 + 1e-6)
    x, t = datasets.blobs(300, n_classes=4, n_features=3, std=0.1, seed=2)
    assert x.shape == (300, 3) and np.bincount(t).tolist() == [75] * 4
    # With a small std every point is nearer its own class mean than any other.
    means = np.stack([x[t == k].mean(0) for k in range(4)])
    nearest = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (nearest == t).all()
    # shuffled: not the class cycle 0, 1, 2, 3, 0, ... it is drawn from
    assert not np.array_equal(t, np.arange(300) % 4)
    with pytest.raises(ValueError, match="n_samples"):
        datasets.blobs(0)


def test_split_test_set_trains_on_the_first_80_percent():
    x, t = np.arange(10.0)[:, None], np.arange(10)
    (x_train, t_train), (x_test, t_test) = datasets.split_test_set(x, t, "f", "dir")
    np.testing.assert_array_equal(t_train, np.arange(8))
    np.testing.assert_array_equal(t_test, [8, 9])
    np.testing.assert_array_equal(x_test[:, 0], [8.0, 9.0])
    (_, t_train), (_, t_test) = datasets.split_test_set(x[:2], t[:2], "f", "dir")
    assert len(t_train) == len(t_test) == 1                       # both sides keep an image
    with pytest.raises(ValueError, match="f: dir holds only a test set, of 1 image"):
        datasets.split_test_set(x[:1], t[:1], "f", "dir")


def test_tabular_binary_smallest_split():
    (x_train, _), (x_test, _) = datasets.tabular_binary(4, test_fraction=0.5)
    assert len(x_train) == 2 and len(x_test) == 2 and np.all(np.isfinite(x_test))


def test_tabular_binary():
    (x_train, t_train), (x_test, t_test) = datasets.tabular_binary(800, n_features=6, seed=0)
    assert x_train.shape == (600, 6) and x_test.shape == (200, 6) and t_train.shape == (600, 1)
    np.testing.assert_allclose(x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(0), 1, atol=1e-4)
    # the test split is standardised with the training statistics, not its own (no leak)
    assert np.abs(x_test.mean(0)).max() > 1e-3 and np.abs(x_test.std(0) - 1).max() > 1e-3
    assert 0.3 < t_train.mean() < 0.7  # neither class is rare
