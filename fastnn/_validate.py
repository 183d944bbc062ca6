"""Argument checking for fastnn.ops: the one place that validates.

Every helper takes the name of the public op first, so each message says which
op failed, what it expected and what it got. After these checks a backend may
assume everything docs/BACKEND.md promises (C-contiguous float32/float64 arrays
of one dtype, consistent shapes, (h, w) tuples of ints, output sizes >= 1).
"""
import math
import numbers
import os

import numpy as np

# Order matches enum fnn_act in csrc/activation.h.
ACTIVATIONS = ("identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus")
DEFAULT_ALPHA = {"leaky_relu": 0.01, "elu": 1.0}
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_INT64_MAX = np.iinfo(np.int64).max

try:
    from fastnn._kernels import labels_in_range as _labels_in_range
except Exception:  # noqa: BLE001 - no native extension: the same check in NumPy
    def _labels_in_range(labels, k):
        # Seen as unsigned, a negative label (or a uint64 one past int64, wrapped
        # negative by the cast to int64) is larger than any k: one reduction.
        return labels.view(np.uint64).max() < k


def _physical_memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 40


# cgroup v2, then v1: a container's limit, below the host's memory that sysconf reports
CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _memory_limit_bytes(physical, limit_files=CGROUP_LIMIT_FILES):
    """The machine's memory, or the process's cgroup limit where that is lower: past the limit
    the kernel kills the process when the pages are touched, where malloc itself succeeded."""
    limit = physical
    for path in limit_files:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < limit:  # "max" (v2) or a huge number (v1): no limit
            limit = int(text)
    return limit


# An array larger than the memory this process may use can never be allocated; refusing it
# up front gives a clear MemoryError instead of a failed (or swapping, or OOM-killed) malloc.
MAX_BYTES = _memory_limit_bytes(_physical_memory_bytes())


def describe(value):
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    return type(value).__name__


def as_array(op, name, value):
    """``value`` as an ndarray; a ragged list or other unconvertible value raises a TypeError naming op."""
    if type(value) is np.ndarray:
        return value
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - ragged lists and the like
        raise TypeError(f"{op}: could not convert {name} to an array ({exc})") from None


def as_float_array(op, name, value):
    """``value`` as an ndarray of dtype float32 or float64 (lists go through np.asarray)."""
    if type(value) is np.ndarray and value.dtype in FLOAT_DTYPES:
        return value
    if value is None:
        raise TypeError(f"{op}: expected {name} to be a float32 or float64 array, got None")
    arr = as_array(op, name, value)
    if arr.dtype.kind == "f" and not arr.dtype.isnative and arr.dtype.newbyteorder("=") in FLOAT_DTYPES:
        arr = arr.astype(arr.dtype.newbyteorder("="))  # big-endian data (FITS, HDF5, foreign .npy files)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: expected {name} to be a float32 or float64 array, "
                        f"got dtype {arr.dtype} (shape {arr.shape})")
    return arr


def _rows_apart(rows, cols, s_row, s_col, item):
    """Whether a rows x cols matrix of those strides (bytes) has unit-stride rows (any stride
    for one column) whose starts are a whole number of items apart, a row's length or more."""
    return (cols == 1 or s_col == item) and (rows == 1 or (s_row >= cols * item and s_row % item == 0))


def gemm_readable(arr):
    """Whether the GEMM reads the 2-D array ``arr`` in place: unit stride along its rows
    (a C-contiguous array, or a block of columns of a wider one) or along its columns
    (a transposed view, a Fortran array), with the other stride a whole number of items
    that keeps the rows (or columns) apart. Empty arrays, whose memory is never read,
    qualify."""
    rows, cols = arr.shape
    if rows == 0 or cols == 0:
        return True
    s0, s1 = arr.strides
    return _rows_apart(rows, cols, s0, s1, arr.itemsize) or _rows_apart(cols, rows, s1, s0, arr.itemsize)


def rows_writable_in_place(arr):
    """Whether the GEMM writes the 2-D array ``arr`` in place: unit stride along its rows, and
    rows at least a row's length apart (a block of columns of a wider matrix qualifies, a
    transposed view does not). Empty arrays, never written, qualify."""
    rows, cols = arr.shape
    if rows == 0 or cols == 0:
        return True
    s0, s1 = arr.strides
    return s1 == arr.itemsize and _rows_apart(rows, cols, s0, s1, arr.itemsize)


def float_arrays(op, optional=(), matrices=(), **named):
    """Check each named float array (None passes through for the names in ``optional``),
    promote them all to one dtype with np.result_type and make them C-contiguous; the
    2-D arrays named in ``matrices`` keep any layout the GEMM reads in place
    (gemm_readable: transposed views, column blocks), where copying would cost more
    than the product (NumPy's transposing copy of a 1024 x 1024 float32 matrix took
    longer than multiplying it by 256 rows). Returns (dtype, dict)."""
    # The common case first: C-contiguous ndarrays of one float dtype pass as they are
    # (a small op's whole call costs a few microseconds, and the general path one more).
    dtype = None
    for k, v in named.items():
        if v is None:
            if k in optional:
                continue
            break
        if type(v) is not np.ndarray:
            break
        dt = v.dtype
        if dt is not dtype and (dt not in FLOAT_DTYPES if dtype is None else dt != dtype):
            break
        if not v.flags.c_contiguous and not (k in matrices and v.ndim == 2 and gemm_readable(v)):
            break
        dtype = dt
    else:
        if dtype is not None:
            return dtype, named   # the caller's own keyword dict
    arrays = {k: as_float_array(op, k, v) for k, v in named.items() if v is not None or k not in optional}
    dtypes = {a.dtype for a in arrays.values()}
    dtype = dtypes.pop() if len(dtypes) == 1 else np.result_type(*arrays.values())
    out = {k: None for k in named}
    for k, arr in arrays.items():
        if k in matrices and arr.dtype == dtype and arr.ndim == 2 and gemm_readable(arr):
            out[k] = arr
        else:
            out[k] = np.asarray(arr, dtype=dtype, order="C")  # keeps 0-d arrays 0-d
    return dtype, out


def check_ndim(op, name, arr, ndims, what=""):
    if isinstance(ndims, int):
        ndims = (ndims,)
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{op}: expected {name} to be {want}{what}, got shape {arr.shape}")


def check_same_shape(op, name_a, a, name_b, b):
    if a.shape != b.shape:
        raise ValueError(f"{op}: {name_a} and {name_b} must have the same shape, "
                         f"got {name_a} {a.shape} and {name_b} {b.shape}")


def check_nonempty_dims(op, name, arr, first_dim=1):
    """Every dimension from ``first_dim`` on must be >= 1 (the batch may be 0)."""
    if min(arr.shape[first_dim:], default=1) < 1:
        which = "after the batch " if first_dim == 1 else "" if first_dim == 0 else f"from axis {first_dim} on "
        raise ValueError(f"{op}: expected every dimension of {name} {which}to be >= 1, got shape {arr.shape}")


def as_flag(op, name, value):
    """A bool (or numpy bool, or the ints 0 and 1): an array or None is a mistake, not False."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (numbers.Integral, np.integer)) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{op}: expected {name} to be True or False, got {describe(value) if isinstance(value, np.ndarray) else repr(value)}")


def as_bool(op, name, value):
    """A setting that is True or False (or a numpy bool) and nothing else: 1 or "no" for one
    is a mistake (a Keras positional argument landing on it, say), not a truth value."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{op}: expected {name} to be True or False, got {describe(value) if isinstance(value, np.ndarray) else repr(value)}")


def from_class_config(config, classes, invalid):
    """The object that a saved ``{"class_name": ..., "config": {...}}`` names, built by the class
    of that name in ``classes``; anything else, or settings the class does not take, is a
    ``ValueError`` that starts with ``invalid`` ("initializer: invalid config", say)."""
    if (not isinstance(config, dict) or set(config) != {"class_name", "config"}
            or config["class_name"] not in classes or not isinstance(config["config"], dict)):
        raise ValueError(f"{invalid} {config!r}")
    cls = classes[config["class_name"]]
    try:
        return cls(**config["config"])
    except TypeError as exc:
        raise ValueError(f"{invalid} for {cls.__name__}: {exc}") from None


def as_int(op, name, value, minimum=None):
    if type(value) is int:
        if minimum is not None and value < minimum:
            raise ValueError(f"{op}: expected {name} >= {minimum}, got {value}")
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]                             # np.array(2) is the int 2, as np.int64(2) is
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{op}: expected {name} to be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{op}: expected {name} >= {minimum}, got {value}")
    return value


def as_pair(op, name, value, minimum):
    """An int or an (h, w) pair of ints, each >= minimum, as a tuple of Python ints."""
    if type(value) is int and value >= minimum:   # the common case, checked in full below
        return (value, value)
    if isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray) and value.ndim > 0):
        items = list(value)
        if len(items) != 2:
            raise ValueError(f"{op}: expected {name} to be an int or an (h, w) pair, got {value!r}")
    else:
        items = [value, value]
    h = as_int(op, name, items[0])
    w = as_int(op, name, items[1])
    if h < minimum or w < minimum:
        raise ValueError(f"{op}: expected {name} >= {minimum}, got {value!r}")
    return (h, w)


def as_real(op, name, value):
    if type(value) is float:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{op}: expected {name} to be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def check_count(op, what, shape, itemsize=1):
    """Refuse a shape whose element count (or bytes) overflows int64: one the C loops could not count."""
    # Python ints: no wraparound. NumPy refuses a shape whose non-zero sizes overflow,
    # even with a zero in it. (One plain loop: every op checks its output this way, and
    # generators through math.prod took 0.9 us of a batch-1 linear layer's 5.6.)
    count, spanned = 1, itemsize
    for d in shape:
        d = int(d)
        count *= d
        if d:
            spanned *= d
    if spanned > _INT64_MAX:
        raise ValueError(f"{op}: {what} of shape {tuple(shape)} has more elements than int64 can index")
    return count


def check_size(op, what, shape, itemsize):
    """Refuse an output whose element count overflows int64 or whose bytes exceed memory."""
    count = check_count(op, what, shape, itemsize)
    if count * itemsize > MAX_BYTES:
        raise MemoryError(f"{op}: {what} of shape {tuple(shape)} would need {count * itemsize} bytes, "
                          f"more than this machine's {MAX_BYTES} bytes of memory")


def activation_name(op, activation):
    """Normalise an activation name: None and 'identity' both give None."""
    if activation is None:
        return None
    if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
        raise ValueError(f"{op}: expected activation to be None or one of {ACTIVATIONS}, got {activation!r}")
    activation = activation.lower()
    return None if activation == "identity" else activation


def activation_alpha(op, activation, alpha, fused=False):
    """The alpha passed to the backend: the default of the activation when None, 0.0 when unused.

    A fused activation's backward pass recovers the derivative from the output y,
    which needs alpha >= 0 for leaky_relu and elu (a negative slope would fold y)."""
    if activation not in DEFAULT_ALPHA:
        if alpha is not None:
            as_real(op, "alpha", alpha)
        return 0.0
    if alpha is None:
        return DEFAULT_ALPHA[activation]
    alpha = as_real(op, "alpha", alpha)
    if fused and not alpha >= 0:
        raise ValueError(f"{op}: a fused {activation} needs alpha >= 0 (its backward pass works from "
                         f"the output), got alpha={alpha}")
    return alpha


def conv_output_size(op, in_hw, filter_hw, stride, pad, what="filter"):
    """((oh, ow), stride) of a window of size filter_hw sliding over in_hw padded by pad.

    A stride past the padded extent gives one window, exactly as stride 1 would when
    only one fits; such strides are clamped, so that backends get strides that fit
    in int64 (the result is the same)."""
    (h, w), (fh, fw), (sh, sw), (ph, pw) = in_hw, filter_hw, stride, pad
    if fh > h + 2 * ph or fw > w + 2 * pw:
        raise ValueError(f"{op}: {what} ({fh}, {fw}) is larger than the padded input "
                         f"({h + 2 * ph}, {w + 2 * pw}) (input ({h}, {w}), pad ({ph}, {pw}))")
    sh = min(sh, h + 2 * ph - fh + 1)
    sw = min(sw, w + 2 * pw - fw + 1)
    return ((h + 2 * ph - fh) // sh + 1, (w + 2 * pw - fw) // sw + 1), (sh, sw)


def check_geometry_fits(op, *values):
    """Every size, filter, stride and pad must be representable in the kernels' int64."""
    if max(values) <= _INT64_MAX // 4:
        return
    for v in values:
        if v > _INT64_MAX // 4:
            raise ValueError(f"{op}: size {v} is too large (int64 index arithmetic would overflow)")


def x_shape4(op, value):
    """A 4-D (N, C, H, W) shape as a tuple of Python ints, N >= 0 and the rest >= 1."""
    if (isinstance(value, (str, bytes)) or not hasattr(value, "__len__")
            or (isinstance(value, np.ndarray) and value.ndim != 1) or len(value) != 4):
        raise ValueError(f"{op}: expected x_shape to be (N, C, H, W), got {value!r}")
    shape = tuple(as_int(op, "x_shape", d) for d in value)
    if shape[0] < 0 or any(d < 1 for d in shape[1:]):
        raise ValueError(f"{op}: expected x_shape (N, C, H, W) with N >= 0 and C, H, W >= 1, got {shape}")
    return shape


def pool_params(op, pool_h, pool_w, stride, pad):
    """((ph, pw), stride, pad) for a pooling op; stride defaults to the pool size, and
    2*pad <= pool (as PyTorch) so that every window holds a real element."""
    ph = as_int(op, "pool_h", pool_h, minimum=1)
    pw = ph if pool_w is None else as_int(op, "pool_w", pool_w, minimum=1)
    stride = (ph, pw) if stride is None else as_pair(op, "stride", stride, 1)
    pad = as_pair(op, "pad", pad, 0)
    if 2 * pad[0] > ph or 2 * pad[1] > pw:
        raise ValueError(f"{op}: pad {pad} must be at most half the pool size ({ph}, {pw})")
    return (ph, pw), stride, pad


def int_labels(op, target, n, k):
    """Integer class labels (N,) in [0, K) as C-contiguous int64."""
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: expected integer class labels (N,) or float rows (N, K), "
                        f"got a 1-D target of dtype {target.dtype}")
    if target.shape != (n,):
        raise ValueError(f"{op}: expected labels of shape ({n},) for logits ({n}, {k}), got {target.shape}")
    labels = np.ascontiguousarray(target, dtype=np.int64)
    if n and not _labels_in_range(labels, k):
        raise ValueError(f"{op}: labels must lie in [0, {k}) for logits of shape ({n}, {k}), "
                         f"got values in [{target.min()}, {target.max()}]")
    return labels


def writeable_float_array(op, name, value, shape=None):
    """An ndarray updated in place: must be float32/float64 and writeable."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{op}: expected {name} to be a writeable float ndarray (updated in place), "
                        f"got {describe(value)}")
    if value.dtype.kind == "f" and not value.dtype.isnative and value.dtype.newbyteorder("=") in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} is {value.dtype.newbyteorder('=')} in the other byte order ({value.dtype}); "
                        f"an array updated in place must be in this machine's: pass "
                        f"{name}.astype({name}.dtype.newbyteorder('='))")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: expected {name} to be a float32 or float64 array, got dtype {value.dtype}")
    if not value.flags.writeable:
        raise TypeError(f"{op}: {name} is read-only, but it is updated in place")
    if shape is not None and value.shape != tuple(shape):
        raise ValueError(f"{op}: expected {name} of shape {tuple(shape)}, got {value.shape}")
    return value


def check_finite_scalar(op, name, value):
    value = as_real(op, name, value)
    if not math.isfinite(value):
        raise ValueError(f"{op}: expected a finite {name}, got {value}")
    return value
