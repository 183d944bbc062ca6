"""Datasets: the shipped 8x8 digits, MNIST and Fashion-MNIST (IDX files), synthetic sets.

Every loader returns ``(x_train, t_train), (x_test, t_test)`` like the book's
``dataset/mnist.py``:

- ``normalize``: images as float32 in [0, 1]; otherwise the raw uint8 values.
- ``flatten``: images as (N, H*W); otherwise (N, 1, H, W).
- ``one_hot_label``: labels as float32 one-hot rows (N, 10); otherwise int64 (N,).

See docs/DATASETS.md for sources, licences, splits and the download cache.
"""
import gzip
import hashlib
import math
import os
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from pathlib import Path

import numpy as np

from fastnn import _validate as V

__all__ = [
    "load_digits", "load_mnist", "load_fashion_mnist", "read_idx", "data_home",
    "split_test_set", "logic_gate", "noisy_parabola", "spirals", "blobs", "tabular_binary",
    "LOGIC_GATES", "MNIST_FILES", "FASHION_MNIST_FILES",
]

_DATA_DIR = Path(__file__).resolve().parent / "data"

# ----------------------------------------------------------------------------- IDX


# IDX type codes -> big-endian NumPy dtypes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path):
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"read_idx: {path} is a corrupt or truncated gzip file ({exc})") from None


def read_idx(path):
    """Read one IDX file (raw or gzip) into a native-endian array of its declared shape.

    The header is validated: two zero bytes, a known type code, a dimension count
    of 1 to 4, and a payload of exactly prod(dims) items. Anything else raises
    ValueError naming the file and what was wrong.
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"read_idx: {path} is not an IDX file: {len(data)} bytes, expected a 4-byte header")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"read_idx: {path} is not an IDX file: magic starts with "
                         f"{data[0]:#04x} {data[1]:#04x}, expected 0x00 0x00")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"read_idx: {path}: unknown IDX type code {code:#04x}, expected one of "
                         + ", ".join(f"{c:#04x}" for c in _IDX_DTYPES))
    if not 1 <= ndim <= 4:
        raise ValueError(f"read_idx: {path}: IDX dimension count {ndim}, expected 1 to 4")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"read_idx: {path} is truncated: {len(data)} bytes, the header alone needs {header_len}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize  # Python ints: dims of 2^22 x 2^21 x 2^21 would wrap int64 to 0
    actual = len(data) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise ValueError(f"read_idx: {path} is {what}: dims {dims} of {dtype.name} need {expected} data bytes, "
                         f"found {actual}")
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


# ----------------------------------------------------------------------------- digits


def load_digits(normalize=True, flatten=True, one_hot_label=False):
    """The 8x8 handwritten digits shipped with fastnn (1,797 images, 10 classes).

    The UCI "Optical Recognition of Handwritten Digits" test set as distributed by
    scikit-learn (CC BY 4.0), split once, stratified: 1,438 training and 359 test
    images (20% of each class held out). Pixels are counts 0..16; ``normalize``
    divides by 16 to give float32 in [0, 1]. Images are (N, 64) or (N, 1, 8, 8).
    """
    normalize = V.as_flag("load_digits", "normalize", normalize)
    flatten = V.as_flag("load_digits", "flatten", flatten)
    one_hot_label = V.as_flag("load_digits", "one_hot_label", one_hot_label)
    with np.load(_DATA_DIR / "digits.npz") as f:
        x_train, t_train, x_test, t_test = f["x_train"], f["t_train"], f["x_test"], f["t_test"]

    def images(x):
        x = x.astype(np.float32) / np.float32(16.0) if normalize else x.copy()
        return x.reshape(-1, 64) if flatten else x.reshape(-1, 1, 8, 8)

    def labels(t):
        t = t.astype(np.int64)
        return np.eye(10, dtype=np.float32)[t] if one_hot_label else t

    return (images(x_train), labels(t_train)), (images(x_test), labels(t_test))


# ----------------------------------------------------------------------------- MNIST / Fashion-MNIST

# SHA-256 of the official gzip files. Sources and which values were checked
# against real files are recorded in docs/DATASETS.md.
MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz",
                     "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train_labels": ("train-labels-idx1-ubyte.gz",
                     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "test_images": ("t10k-images-idx3-ubyte.gz",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
FASHION_MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz",
                     "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    "train_labels": ("train-labels-idx1-ubyte.gz",
                     "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    "test_images": ("t10k-images-idx3-ubyte.gz",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
}

# Base URLs tried in order; tests point these at file:// URLs.
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
}

_DOWNLOAD_TIMEOUT_S = 60


def data_home():
    """The download cache: ``$FASTNN_DATA`` if set, else ``~/.fastnn/data``."""
    env = os.environ.get("FASTNN_DATA", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".fastnn" / "data"


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(name, sha256, dest_dir, mirrors):
    """Fetch ``name`` into ``dest_dir``, checking its SHA-256.

    The bytes go to a temporary file in the same directory, renamed into place
    only once the hash matches, so an interrupted or corrupt download never
    leaves a file under the final name.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / name
    errors = []
    for base in mirrors:
        url = base + name
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest_dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
            actual = _sha256(tmp)
            if actual != sha256:
                errors.append(f"{url}: SHA-256 {actual}, expected {sha256}")
                continue
            os.replace(tmp, dest)
            return dest
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
        finally:
            if tmp.exists():
                tmp.unlink()
    raise OSError(f"could not download {name} into {dest_dir}:\n  " + "\n  ".join(errors)
                  + f"\nPut the file into {dest_dir} by hand, or pass a directory holding the files "
                    "(path=... here, --data-dir for `fastnn train`).")


def _load_idx_pair(directory, files, split, func):
    """(images, labels) of one split from ``directory``, or None when neither file is there."""
    image_name, label_name = files[f"{split}_images"][0], files[f"{split}_labels"][0]
    image_path = _find(directory, image_name)
    label_path = _find(directory, label_name)
    if image_path is None and label_path is None:
        return None
    if image_path is None or label_path is None:
        missing = image_name if image_path is None else label_name
        raise FileNotFoundError(f"{func}: {directory} has the {split} "
                                f"{'labels' if image_path is None else 'images'} but not {missing}")
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"{func}: {image_path} holds {images.dtype} {images.shape}, "
                         f"expected uint8 (N, 28, 28)")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{func}: {label_path} holds {labels.dtype} {labels.shape}, expected uint8 (N,)")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{func}: {image_path} has {images.shape[0]} images but {label_path} "
                         f"has {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{func}: {label_path} has label {int(labels.max())}, expected 0..9")
    return images, labels


def _find(directory, gz_name):
    """The file for ``gz_name`` in ``directory``: the .gz itself or its uncompressed twin."""
    for candidate in (gz_name, gz_name[:-3]):
        p = directory / candidate
        if p.is_file():
            return p
    return None


def _load_28x28(kind, files, path, normalize, flatten, one_hot_label):
    func = "load_mnist" if kind == "mnist" else "load_fashion_mnist"
    normalize = V.as_flag(func, "normalize", normalize)
    flatten = V.as_flag(func, "flatten", flatten)
    one_hot_label = V.as_flag(func, "one_hot_label", one_hot_label)
    if path is None:
        directory = data_home() / kind
        for key, (name, sha256) in files.items():
            if _find(directory, name) is None:
                _download(name, sha256, directory, MIRRORS[kind])
    else:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{func}: path must be a directory's path (str or os.PathLike) or None, "
                            f"got {type(path).__name__}")
        if os.fspath(path) == "":  # Path("") is the working directory: an unset variable, most likely
            raise ValueError(f"{func}: path is empty; give a directory, or None for the cache")
        directory = Path(path).expanduser()
        if not directory.is_dir():
            raise FileNotFoundError(f"{func}: {directory} is not a directory")
    train = _load_idx_pair(directory, files, "train", func)
    test = _load_idx_pair(directory, files, "test", func)
    if train is None and test is None:
        names = ", ".join(name for name, _ in files.values())
        raise FileNotFoundError(f"{func}: no {kind} files in {directory}; expected {names} (gzip or raw)")
    if train is None or test is None:
        warnings.warn(f"{func}: {directory} has only the {'test' if train is None else 'training'} set; "
                      f"the other split is returned as (None, None)", stacklevel=3)
    x_train, t_train = train if train is not None else (None, None)
    x_test, t_test = test if test is not None else (None, None)
    return _format_28x28(x_train, t_train, x_test, t_test, normalize, flatten, one_hot_label)


def _format_28x28(x_train, t_train, x_test, t_test, normalize, flatten, one_hot_label):
    def images(x):
        if x is None:
            return None
        x = x.astype(np.float32) / np.float32(255.0) if normalize else x
        return x.reshape(x.shape[0], 784) if flatten else x.reshape(x.shape[0], 1, 28, 28)

    def labels(t):
        if t is None:
            return None
        t = t.astype(np.int64)
        return np.eye(10, dtype=np.float32)[t] if one_hot_label else t

    return (images(x_train), labels(t_train)), (images(x_test), labels(t_test))


def load_mnist(path=None, normalize=True, flatten=True, one_hot_label=False):
    """MNIST: 60,000 training and 10,000 test images of handwritten digits, 28x28.

    ``path``: a directory holding the four IDX files (gzip or not); when None,
    the cache ``data_home()/mnist`` is used and missing files are downloaded
    once, their SHA-256 checked. A directory with only one split (for example
    only the t10k files) returns that split and (None, None) for the other, with
    a warning. Images are (N, 784) or (N, 1, 28, 28).
    """
    return _load_28x28("mnist", MNIST_FILES, path, normalize, flatten, one_hot_label)


def load_fashion_mnist(path=None, normalize=True, flatten=True, one_hot_label=False):
    """Fashion-MNIST (Zalando, MIT licence): same layout and arguments as :func:`load_mnist`."""
    return _load_28x28("fashion-mnist", FASHION_MNIST_FILES, path, normalize, flatten, one_hot_label)


# ----------------------------------------------------------------------------- synthetic sets

LOGIC_GATES = {
    "AND": (0, 0, 0, 1),
    "NAND": (1, 1, 1, 0),
    "OR": (0, 1, 1, 1),
    "XOR": (0, 1, 1, 0),
}


def logic_gate(name):
    """The truth table of a two-input gate: x (4, 2) float32 rows 00, 01, 10, 11 and t (4,) int64."""
    key = str(name).upper()
    if key not in LOGIC_GATES:
        raise ValueError(f"logic_gate: unknown gate {name!r}, expected one of {', '.join(LOGIC_GATES)}")
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    return x, np.array(LOGIC_GATES[key], dtype=np.int64)


def split_test_set(x, t, func, where, train_fraction=0.8):
    """((x_train, t_train), (x_test, t_test)): the first ``train_fraction`` of a test set to
    train on and the rest to test, for a directory that holds only the t10k files (8,000 /
    2,000 of MNIST's); ValueError naming ``func`` and ``where`` with fewer than 2 images."""
    n = len(x)
    if n < 2:
        raise ValueError(f"{func}: {where} holds only a test set, of {n} image(s): too few to split")
    cut = min(n - 1, max(1, round(train_fraction * n)))
    return (x[:cut], t[:cut]), (x[cut:], t[cut:])


def _check_count(func, name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{func}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_scale(func, name, value):
    """A noise level, spread or standard deviation: a finite real number >= 0."""
    value = V.as_real(func, name, value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{func}: {name} must be finite and >= 0, got {value!r}")
    return value


def _generator(func, seed):
    """NumPy's generator for ``seed`` (an int >= 0, or None for fresh entropy)."""
    return np.random.default_rng(None if seed is None else V.as_int(func, "seed", seed, 0))


def noisy_parabola(n_samples=100, noise=0.1, seed=0):
    """Regression data y = x^2 - 0.5 + noise, x uniform in [-1, 1]: x, y both (n, 1) float32."""
    n = _check_count("noisy_parabola", "n_samples", n_samples)
    noise = _check_scale("noisy_parabola", "noise", noise)
    rng = _generator("noisy_parabola", seed)
    x = rng.uniform(-1.0, 1.0, size=(n, 1))
    y = x ** 2 - 0.5 + noise * rng.standard_normal((n, 1))
    return x.astype(np.float32), y.astype(np.float32)


def spirals(n_per_class=100, n_classes=3, noise=0.2, seed=0):
    """Interleaved spiral arms, one per class: x (N, 2) float32, t (N,) int64, N = n_per_class * n_classes."""
    n = _check_count("spirals", "n_per_class", n_per_class)
    k = _check_count("spirals", "n_classes", n_classes, 2)
    noise = _check_scale("spirals", "noise", noise)
    rng = _generator("spirals", seed)
    rate = np.arange(n) / n
    xs, ts = [], []
    for j in range(k):
        theta = j * (2 * np.pi / k) + 4.0 * rate + noise * rng.standard_normal(n)
        xs.append(np.stack([rate * np.sin(theta), rate * np.cos(theta)], axis=1))
        ts.append(np.full(n, j))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ts).astype(np.int64)


def blobs(n_samples=300, n_classes=3, n_features=2, std=1.0, spread=5.0, seed=0):
    """Gaussian clusters, one per class, centres uniform in [-spread, spread]: x (N, F) float32, t (N,) int64."""
    n = _check_count("blobs", "n_samples", n_samples)
    k = _check_count("blobs", "n_classes", n_classes)
    f = _check_count("blobs", "n_features", n_features)
    std = _check_scale("blobs", "std", std)
    spread = _check_scale("blobs", "spread", spread)
    if spread > np.finfo(np.float64).max / 2:  # uniform(-spread, spread) needs the width as a float
        raise ValueError(f"blobs: spread must be at most {np.finfo(np.float64).max / 2:.3g}, got {spread!r}")
    rng = _generator("blobs", seed)
    centres = rng.uniform(-spread, spread, size=(k, f))
    t = np.arange(n) % k
    x = centres[t] + std * rng.standard_normal((n, f))
    order = rng.permutation(n)
    return x[order].astype(np.float32), t[order].astype(np.int64)


def tabular_binary(n_samples=1000, n_features=8, test_fraction=0.25, seed=0):
    """A synthetic tabular binary task with a non-linear rule, standardised and split.

    Features are Gaussian; the label is 1 when ``x0*x1 + sin(2*x2) + 0.5*x3**2 - 0.5``
    plus a little noise is positive (the other features are distractors). Returns
    ``(x_train, t_train), (x_test, t_test)`` with x float32 (N, F), t float32 (N, 1),
    standardised with the training set's mean and std.
    """
    n = _check_count("tabular_binary", "n_samples", n_samples, 4)
    f = _check_count("tabular_binary", "n_features", n_features, 4)
    test_fraction = V.as_real("tabular_binary", "test_fraction", test_fraction)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"tabular_binary: test_fraction must be in (0, 1), got {test_fraction!r}")
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_test < 2:  # the training rows' standard deviation standardises both splits
        raise ValueError(f"tabular_binary: test_fraction={test_fraction!r} of n_samples={n} leaves "
                         f"{n - n_test} training row(s); at least 2 are needed")
    rng = _generator("tabular_binary", seed)
    x = rng.standard_normal((n, f)) * rng.uniform(0.5, 3.0, size=f) + rng.uniform(-2, 2, size=f)
    z = (x - x.mean(0)) / x.std(0)
    score = z[:, 0] * z[:, 1] + np.sin(2 * z[:, 2]) + 0.5 * z[:, 3] ** 2 - 0.5 + 0.1 * rng.standard_normal(n)
    t = (score > 0).astype(np.float32).reshape(-1, 1)
    x_train, x_test, t_train, t_test = x[n_test:], x[:n_test], t[n_test:], t[:n_test]
    mean, std = x_train.mean(0), x_train.std(0)
    x_train = ((x_train - mean) / std).astype(np.float32)
    x_test = ((x_test - mean) / std).astype(np.float32)
    return (x_train, t_train), (x_test, t_test)
