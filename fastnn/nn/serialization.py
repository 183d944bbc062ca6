"""Saving and loading models: one ``.npz`` file, no pickle.

The file is a zip archive of ``.npy`` members (what ``np.savez`` writes):

- ``architecture.npy``: a uint8 array holding UTF-8 JSON: the format name and version,
  the model config (layers and their arguments), the list of weights (member name,
  layer, weight name, shape, dtype, SHA-256 of the data), the compile settings
  (optimizer config, loss, metrics, weighted metrics) and the optimizer's state: its
  counters and rate, and the list of its arrays (member name, slot, weight, shape, dtype,
  SHA-256).
- ``w0.npy``, ``w1.npy``, ...: the weights, layer by layer; ``o0.npy``, ``o1.npy``, ...: the
  optimizer's arrays (e.g. Adam's moments), so that training continues where it stopped.

Loading trusts nothing in the file: member names, sizes, npy headers (dtype, shape,
order), the JSON structure and every layer argument are checked, the expected weight
shapes are derived from the architecture (before anything is allocated) and compared with
the stored ones, data is read with ``allow_pickle=False`` semantics (raw bytes of a float
dtype, never an object array) and checked against its SHA-256. Any problem raises
``ValueError`` naming the file and what was wrong. Saving writes to a temporary file in
the target directory and renames it over the target, so a failed save never leaves a
half-written file where a good one was.
"""
import hashlib
import json
import math
import os
import secrets
import stat
import struct
import zipfile
import zlib

import numpy as np

__all__ = ["save_model", "load_model", "FORMAT", "FORMAT_VERSION"]

FORMAT = "fastnn.nn.Sequential"
FORMAT_VERSION = 2
#: versions load_model reads: 1 had no optimizer state (a loaded model restarted the optimizer)
READABLE_VERSIONS = (1, 2)
ARCHITECTURE_MEMBER = "architecture.npy"
MAX_ARCHITECTURE_BYTES = 16 << 20
MAX_LAYERS = 10_000
DEFAULT_MAX_BYTES = 2 << 30
_NPY_HEADER_SLACK = 1 << 16


def save_model(model, path, include_optimizer=True):
    """Save ``model`` (a built :class:`~fastnn.nn.Sequential`) to ``path`` (written exactly
    there; ``.npz`` is the conventional suffix). ``include_optimizer``: also store the
    compile settings, so :func:`load_model` returns a compiled model."""
    from fastnn._version import __version__
    model._require_built("save")
    path = os.fspath(path)
    entries, arrays = [], {}
    for layer in model.layers:
        for weight_name, array in list(layer.params.items()) + list(layer.state.items()):
            key = f"w{len(entries)}"
            array = np.ascontiguousarray(array)
            entries.append({"key": key, "layer": layer.name, "weight": weight_name, "shape": list(array.shape),
                            "dtype": array.dtype.name, "sha256": hashlib.sha256(array.tobytes()).hexdigest()})
            arrays[key] = array
    compile_config = _compile_config(model) if include_optimizer and model.compiled else None
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "fastnn_version": __version__,
                "model": model.get_config(), "weights": entries, "compile": compile_config,
                "optimizer_state": None if compile_config is None else _optimizer_state(model.optimizer, entries,
                                                                                        arrays)}
    text = json.dumps(document, allow_nan=False, separators=(",", ":"))
    architecture = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_beside(path, directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, architecture=architecture, **arrays)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, os.stat(path).st_mode & 0o777)  # replacing a file keeps its permissions
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _optimizer_state(optimizer, weight_entries, arrays):
    """The optimizer's state as JSON, its arrays added to ``arrays`` as o0, o1, ...: those of
    the model's weights (an optimizer keeps the state of a layer popped since, or of another
    model it also trained, which this model's file has no weight for)."""
    shapes = {f"{e['layer']}/{e['weight']}": tuple(e["shape"]) for e in weight_entries}
    state = optimizer.get_state()
    entries = []
    for slot, by_key in state.pop("slots").items():
        for weight, array in by_key.items():
            if shapes.get(weight) != np.shape(array):
                continue
            key = f"o{len(entries)}"
            array = np.ascontiguousarray(array)
            entries.append({"key": key, "slot": slot, "weight": str(weight), "shape": list(array.shape),
                            "dtype": array.dtype.name, "sha256": hashlib.sha256(array.tobytes()).hexdigest()})
            arrays[key] = array
    return {"counters": {k: (int(v) if k != "lr" else float(v)) for k, v in state.items()}, "arrays": entries}


def _create_beside(path, directory):
    """A new temporary file next to ``path``, created with mode 0o666 so that the umask
    applies to it as to any new file (tempfile.mkstemp would make it 0o600)."""
    if not os.path.isdir(directory):  # named here: the OS error would name the temporary file
        raise FileNotFoundError(f"save: cannot write {path!r}: no such directory {directory!r}")
    for _ in range(100):
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"save: could not create a temporary file in {directory}")


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _compile_config(model):
    return {"optimizer": _rebuildable_config(model.optimizer, "optimizer"),
            "loss": _rebuildable_config(model.loss, "loss"), "metrics": _metric_configs(model._metric_specs),
            "weighted_metrics": _metric_configs(model._weighted_metric_specs)}


def _metric_configs(specs):
    """The metrics given to compile as JSON: names as they are, built-in Metric objects as
    their class name and config."""
    from fastnn.nn import metrics as _metrics
    configs = []
    for spec in specs:
        if isinstance(spec, str):
            configs.append(spec)
        elif type(spec).__name__ in _BUILTIN_METRICS and type(spec) is getattr(_metrics, type(spec).__name__):
            configs.append({"class_name": type(spec).__name__, **spec.get_config()})
        else:
            raise ValueError(f"save: the metric {spec!r} is a custom class and cannot be saved; "
                             "use save(path, include_optimizer=False)")
    return configs


def _rebuildable_config(obj, what):
    """obj's config, checked by rebuilding obj from it: a subclass or a schedule of the
    user's would otherwise be saved under a built-in's name, or make a file that
    load_model refuses."""
    from fastnn import optim
    from fastnn.nn import losses
    get = optim.get if what == "optimizer" else losses.get
    try:
        config = obj.get_config()
        rebuilt = get(config)
    except (ValueError, TypeError) as exc:
        rebuilt, reason = None, str(exc)
    else:
        reason = f"it would load as {type(rebuilt).__name__}"
        if what == "optimizer" and type(getattr(rebuilt, "schedule", None)) is not type(obj.schedule):
            reason = f"its schedule {obj.schedule!r} is not one of fastnn.optim's"
            rebuilt = None
    if type(rebuilt) is not type(obj):
        raise ValueError(f"save: the {what} {obj!r} cannot be saved ({reason}); "
                         "use save(path, include_optimizer=False)")
    return config


_BUILTIN_METRICS = ("SparseCategoricalAccuracy", "CategoricalAccuracy", "BinaryAccuracy", "MeanAbsoluteError",
                    "MeanSquaredErrorMetric")


# ---------------------------------------------------------------------------------- loading
class _Invalid(Exception):
    pass


def load_model(path, compile=True, max_bytes=DEFAULT_MAX_BYTES):
    """Load a model saved by :meth:`Sequential.save`. ``compile``: restore the compile
    settings when the file has them. ``max_bytes``: refuse files whose weights would take
    more memory than this. Raises ValueError for anything but a valid fastnn model file
    (OSError such as FileNotFoundError when the file cannot be opened)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"load_model: expected a path (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
        raise TypeError(f"load_model: max_bytes must be an int >= 0, got {max_bytes!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_model: no such file: {path!r}")
    if not os.path.isfile(path):
        raise ValueError(f"load_model: {path!r} is not a valid fastnn model file: not a regular file")
    # Open with O_NONBLOCK so that a file swapped for a FIFO after the check cannot block us.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        with os.fdopen(fd, "rb") as f:
            fd = None
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ValueError(f"load_model: {path!r} is not a valid fastnn model file: not a regular file")
            try:
                return _load(f, compile, int(max_bytes))
            except _Invalid as exc:
                raise ValueError(f"load_model: {path!r} is not a valid fastnn model file: {exc}") from None
            except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, NotImplementedError,
                    RuntimeError, struct.error, UnicodeDecodeError, OverflowError) as exc:
                # Whatever the zip layer trips over in a damaged archive (a bad offset makes
                # seek fail with EINVAL, an unknown compression method NotImplementedError, ...).
                raise ValueError(f"load_model: {path!r} is not a valid fastnn model file (corrupt or "
                                 f"truncated archive: {type(exc).__name__}: {exc})") from None
    finally:
        if fd is not None:
            os.close(fd)


def _load(f, compile, max_bytes):
    from fastnn.nn import initializers
    from fastnn.nn.model import Sequential
    size = os.fstat(f.fileno()).st_size
    if size > max_bytes + MAX_ARCHITECTURE_BYTES + _NPY_HEADER_SLACK:
        raise _Invalid(f"the file is larger than max_bytes={max_bytes}")
    if not zipfile.is_zipfile(f):
        raise _Invalid("not an .npz (zip) archive, or truncated")
    f.seek(0)
    with zipfile.ZipFile(f) as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise _Invalid("the archive has duplicate member names")
        members = {info.filename: info for info in infos}
        if ARCHITECTURE_MEMBER not in members:
            raise _Invalid(f"no {ARCHITECTURE_MEMBER} member")
        raw = _read_npy(archive, members[ARCHITECTURE_MEMBER], np.dtype(np.uint8), None, MAX_ARCHITECTURE_BYTES)
        document = _parse_json(raw.tobytes())
        config, weights, compile_config, optimizer_state = _check_document(document)

        dtype = _dtype_of(config)
        expected, total = _expected_weights(config, weights, dtype)
        state_shapes = _expected_optimizer_arrays(optimizer_state, weights, dtype)
        total += sum(math.prod(shape) for shape in state_shapes) * dtype.itemsize
        if total > max_bytes:
            raise _Invalid(f"the architecture's weights (and the optimizer's arrays) need {total} bytes, more "
                           f"than max_bytes={max_bytes}")
        state_entries = optimizer_state["arrays"] if optimizer_state is not None else []
        wanted = {ARCHITECTURE_MEMBER} | {entry["key"] + ".npy" for entry in weights + state_entries}
        extra = sorted(set(names) - wanted)
        if extra:
            raise _Invalid(f"unexpected members {extra[:5]}")
        missing = sorted(wanted - set(names))
        if missing:
            raise _Invalid(f"missing members {missing[:5]}")
        values = [_read_checked(archive, members, entry, dtype, shape, f"{entry['layer']}/{entry['weight']}")
                  for entry, shape in zip(weights, expected)]
        state_arrays = [_read_checked(archive, members, entry, dtype, shape,
                                      f"the optimizer's {entry['slot']} of {entry['weight']}")
                        for entry, shape in zip(state_entries, state_shapes)]

    token = initializers._WEIGHTS_TO_FOLLOW.set(True)
    try:
        model = Sequential.from_config(config, dtype=dtype)
    except (TypeError, ValueError, KeyError) as exc:
        raise _Invalid(f"invalid architecture: {exc}") from None
    finally:
        initializers._WEIGHTS_TO_FOLLOW.reset(token)
    try:
        model.set_weights(values)
    except (TypeError, ValueError) as exc:  # the layers built differently from what the entries say
        raise _Invalid(f"the weights do not fit the architecture: {exc}") from None
    if compile and compile_config is not None:
        _restore_compile(model, compile_config)
        if optimizer_state is not None:
            _restore_optimizer_state(model.optimizer, optimizer_state, state_arrays)
    return model


def _parse_json(data):
    def reject_constant(name):
        raise _Invalid(f"the architecture JSON contains {name}")
    try:
        text = data.decode("utf-8")
        return json.loads(text, parse_constant=reject_constant)
    except _Invalid:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Invalid(f"the architecture is not valid JSON ({type(exc).__name__})") from None


def _check_document(doc):
    if not isinstance(doc, dict):
        raise _Invalid("the architecture JSON is not an object")
    if doc.get("format") != FORMAT:
        raise _Invalid(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
    version = doc.get("format_version")
    if not _is_int(version) or version not in READABLE_VERSIONS:
        raise _Invalid(f"format_version {version!r} is not supported (expected one of {list(READABLE_VERSIONS)})")
    config, weights, compile_config = doc.get("model"), doc.get("weights"), doc.get("compile")
    optimizer_state = doc.get("optimizer_state")
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise _Invalid("the model config has no layer list")
    layers = config["layers"]
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise _Invalid(f"the model must have 1 to {MAX_LAYERS} layers, the file declares {len(layers)}")
    for spec in layers:
        if (not isinstance(spec, dict) or set(spec) != {"class_name", "config"}
                or not isinstance(spec["class_name"], str) or not isinstance(spec["config"], dict)):
            raise _Invalid("a layer entry is not {class_name, config}")
    input_shape = config.get("input_shape")
    if not _is_shape(input_shape):
        raise _Invalid(f"input_shape {input_shape!r} is not a list of positive ints")
    if config.get("seed") is not None and not _is_int(config.get("seed")):
        raise _Invalid("seed is not an int")
    if config.get("name") is not None and not isinstance(config.get("name"), str):
        raise _Invalid("the model name is not a string")
    if not isinstance(weights, list):
        raise _Invalid("the weight list is missing")
    for i, entry in enumerate(weights):
        if (not isinstance(entry, dict) or entry.get("key") != f"w{i}" or not _is_shape(entry.get("shape"), 0)
                or not all(isinstance(entry.get(k), str) for k in ("layer", "weight", "dtype", "sha256"))):
            raise _Invalid(f"weight entry {i} is malformed")
    if compile_config is not None and not isinstance(compile_config, dict):
        raise _Invalid("the compile settings are malformed")
    if optimizer_state is not None:
        if compile_config is None:
            raise _Invalid("the file has an optimizer state but no compile settings")
        if (not isinstance(optimizer_state, dict) or set(optimizer_state) != {"counters", "arrays"}
                or not isinstance(optimizer_state["counters"], dict) or not isinstance(optimizer_state["arrays"], list)):
            raise _Invalid("the optimizer state is malformed")
        for i, entry in enumerate(optimizer_state["arrays"]):
            if (not isinstance(entry, dict) or entry.get("key") != f"o{i}" or not _is_shape(entry.get("shape"), 0)
                    or not all(isinstance(entry.get(k), str) for k in ("slot", "weight", "dtype", "sha256"))):
                raise _Invalid(f"optimizer state entry {i} is malformed")
    return config, weights, compile_config, optimizer_state


def _expected_optimizer_arrays(optimizer_state, weights, dtype):
    """The shapes of the optimizer's arrays: each belongs to a weight of the model, and has its
    shape and the model's dtype (as the optimizer allocates them)."""
    if optimizer_state is None:
        return []
    shapes = {f"{entry['layer']}/{entry['weight']}": tuple(entry["shape"]) for entry in weights}
    seen = set()
    for entry in optimizer_state["arrays"]:
        name = entry["weight"]
        if name not in shapes:
            raise _Invalid(f"the optimizer's {entry['slot']} is for {name!r}, which is not a weight of the model")
        if (entry["slot"], name) in seen:
            raise _Invalid(f"the optimizer's {entry['slot']} of {name} is listed twice")
        seen.add((entry["slot"], name))
        if tuple(entry["shape"]) != shapes[name]:
            raise _Invalid(f"the optimizer's {entry['slot']} of {name} is listed with shape {tuple(entry['shape'])}, "
                           f"the weight has {shapes[name]}")
        if entry["dtype"] != dtype.name:
            raise _Invalid(f"the optimizer's {entry['slot']} of {name} is listed as {entry['dtype']}, the model is "
                           f"{dtype.name}")
    return [shapes[entry["weight"]] for entry in optimizer_state["arrays"]]


def _restore_optimizer_state(optimizer, optimizer_state, arrays):
    slots = {}
    for entry, array in zip(optimizer_state["arrays"], arrays):
        slots.setdefault(entry["slot"], {})[entry["weight"]] = array
    try:
        optimizer.set_state(dict(optimizer_state["counters"], slots=slots))
    except (TypeError, ValueError) as exc:
        raise _Invalid(f"invalid optimizer state: {exc}") from None


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_shape(shape, minimum=1):
    return (isinstance(shape, list) and len(shape) <= 8
            and all(_is_int(s) and minimum <= s < 2**40 for s in shape))


def _dtype_of(config):
    name = config.get("dtype", "float32")
    if name not in ("float32", "float64"):
        raise _Invalid(f"dtype {name!r} is not float32 or float64")
    return np.dtype(name)


def _expected_weights(config, weights, dtype):
    """The weight shapes the architecture implies, in file order, without allocating them."""
    from fastnn.nn.layers import get_layer_class
    shape = tuple(config["input_shape"])
    expected, names = [], []
    seen_names = set()
    for spec in config["layers"]:
        try:
            layer = get_layer_class(spec["class_name"]).from_config(dict(spec["config"]))
            shapes = layer.weight_shapes(shape)
            shape = layer.compute_output_shape(shape)
        except (TypeError, ValueError, KeyError) as exc:
            raise _Invalid(f"invalid layer {spec['class_name']!r}: {exc}") from None
        if layer.name in seen_names:
            raise _Invalid(f"duplicate layer name {layer.name!r}")
        seen_names.add(layer.name)
        for weight_name, weight_shape in shapes.items():
            expected.append(tuple(int(s) for s in weight_shape))
            names.append((layer.name, weight_name))
    if len(weights) != len(expected):
        raise _Invalid(f"the architecture has {len(expected)} weights, the file lists {len(weights)}")
    total = 0
    for entry, (layer_name, weight_name), shape in zip(weights, names, expected):
        if (entry["layer"], entry["weight"]) != (layer_name, weight_name):
            raise _Invalid(f"weight {entry['key']} is {entry['layer']}/{entry['weight']}, the architecture "
                           f"expects {layer_name}/{weight_name}")
        if tuple(entry["shape"]) != shape:
            raise _Invalid(f"{layer_name}/{weight_name} is listed with shape {tuple(entry['shape'])}, the "
                           f"architecture implies {shape}")
        if entry["dtype"] != dtype.name:
            raise _Invalid(f"{layer_name}/{weight_name} is listed as {entry['dtype']}, the model is {dtype.name}")
        total += math.prod(shape) * dtype.itemsize
    return expected, total


def _read_checked(archive, members, entry, dtype, shape, what):
    """The member an entry lists, read as _read_npy reads it and compared with its SHA-256."""
    array = _read_npy(archive, members[entry["key"] + ".npy"], dtype, shape, None)
    if hashlib.sha256(array.tobytes()).hexdigest() != entry["sha256"]:
        raise _Invalid(f"the data of {what} does not match its checksum (the file was altered or corrupted)")
    return array


def _read_npy(archive, info, dtype, shape, max_bytes):
    """One .npy member, checked: its header (dtype, shape, C order) before reading, then
    exactly the declared number of bytes (no more, no less)."""
    name = info.filename
    if info.flag_bits & 0x1:
        raise _Invalid(f"{name} is encrypted")
    with archive.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(f)
            else:
                raise _Invalid(f"{name}: unsupported .npy version {version}")
        except _Invalid:
            raise
        except Exception as exc:  # noqa: BLE001 - numpy's header parser (a literal_eval, never code)
            # raises ValueError, SyntaxError, tokenize.TokenError, ... on malformed headers.
            raise _Invalid(f"{name}: bad .npy header ({type(exc).__name__}: {exc})") from None
        got_shape, fortran, got_dtype = header
        if got_dtype != dtype or got_dtype.hasobject:
            raise _Invalid(f"{name}: dtype {got_dtype}, expected {dtype}")
        if fortran:
            raise _Invalid(f"{name}: Fortran order is not accepted")
        if shape is None:
            if len(got_shape) != 1:
                raise _Invalid(f"{name}: expected a 1-D array, got shape {got_shape}")
            shape = got_shape
        elif tuple(got_shape) != tuple(shape):
            raise _Invalid(f"{name}: shape {tuple(got_shape)}, expected {tuple(shape)}")
        nbytes = math.prod(shape) * dtype.itemsize
        if max_bytes is not None and nbytes > max_bytes:
            raise _Invalid(f"{name}: {nbytes} bytes is more than the limit of {max_bytes}")
        if info.file_size > nbytes + _NPY_HEADER_SLACK:
            raise _Invalid(f"{name}: the member holds {info.file_size} bytes, more than its header declares")
        data = f.read(nbytes + 1)
        if len(data) != nbytes:
            raise _Invalid(f"{name}: {len(data)} bytes of data, expected {nbytes} (truncated or padded)")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _restore_compile(model, config):
    from fastnn import optim
    from fastnn.nn import losses
    try:
        optimizer = optim.get(dict(config["optimizer"]))
        loss = losses.get(dict(config["loss"]))
        # files from before weighted_metrics have none
        model.compile(optimizer=optimizer, loss=loss, metrics=_metric_specs(config.get("metrics", [])),
                      weighted_metrics=_metric_specs(config.get("weighted_metrics", [])))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise _Invalid(f"invalid compile settings: {exc}") from None


def _metric_specs(configs):
    """The metrics that _metric_configs saved, checked."""
    from fastnn.nn import metrics as _metrics
    if not isinstance(configs, list):
        raise ValueError(f"the metrics are not a list: {configs!r}")
    specs = []
    for spec in configs:
        if isinstance(spec, str):
            specs.append(spec)
        elif (isinstance(spec, dict) and spec.get("class_name") in _BUILTIN_METRICS
              and isinstance(spec.get("name"), str)):
            cls = getattr(_metrics, spec["class_name"])
            kwargs = {k: v for k, v in spec.items() if k != "class_name"}
            if not set(kwargs) <= set(cls().get_config()):  # files from before a setting was saved lack it
                raise ValueError(f"invalid metric {spec!r}")
            specs.append(cls(**kwargs))
        else:
            raise ValueError(f"invalid metric {spec!r}")
    return specs
