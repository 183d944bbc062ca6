"""Run-time configuration: backend, thread count and SIMD path.

This module is the one place that holds them. The Cython kernels read
``_state.num_threads`` and ``_state.isa`` on every call (see _ctx.pxi), and
``fastnn.ops`` asks :func:`active_backend` which implementation to run.
"""
import contextlib
import importlib.util
import os
import threading

from fastnn import _reference

BACKENDS = ("native", "numpy")
ISA_NAMES = ("portable", "avx2", "avx512")
CONV_ALGORITHMS = ("auto", "gemm", "winograd", "winograd4x4")  # order of enum fnn_conv_algo (csrc/fastnn.h)


# More threads than any CPU this targets runs; a count past it is a slip (and creating that
# many OpenMP threads can fail, which aborts the process).
MAX_THREADS = 1024


def _default_num_threads():
    """OMP_NUM_THREADS's first count, where it is one that set_num_threads takes; else the
    usable cores (as OpenMP runtimes ignore a value they cannot use)."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env:
        try:
            n = int(env)
            if 1 <= n <= MAX_THREADS:
                return n
        except ValueError:
            pass
    return min(usable_cores(), MAX_THREADS)


def usable_cores():
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class _State:
    def __init__(self):
        self.num_threads = _default_num_threads()
        self.isa = 0
        self.best_isa = 0
        self.conv_algo = 0
        self.backend = "numpy"
        self.native = None          # the native backend module, once loaded
        self.native_error = None    # why it could not be loaded
        self.local = threading.local()  # per-thread backend override (the context manager)
        self.overrides = 0              # open `backend(...)` blocks, all threads together
        self.overrides_lock = threading.Lock()
        self.threads_after_fork = False  # False, or why this forked child runs on one thread


_state = _State()


def _load_native():
    # How OpenMP threads wait between parallel regions. Spinning without end holds the core: on
    # a machine shared with other work a spinning thread can starve the thread it waits for (a
    # 0.3 ms GEMM took 120 ms at 2 threads). Sleeping at once (PASSIVE) costs a wake-up of
    # 50-100 us per region on this VM, more than a 30 us op itself. A short spin covers the
    # gaps between the ops of a training step. Measured at 2 threads (GOMP_SPINCOUNT 0 / 2000 /
    # 5000): `fastnn train` 0.19 / 0.13 / 0.13 s per epoch on an idle machine, 0.18 / 0.27 /
    # 0.36 s with a CPU hog on one of the two cores; a 432k-float SGD update 0.10 / 0.03 / 0.03
    # ms. On the Intel Xeon of 2026-12-06 (2000 spins last about 20 us) the same trade: 20 epochs
    # of `fastnn train` at 2 threads, GOMP_SPINCOUNT 2000 / 10000 / 30000, 1.91 / 1.81 / 1.75 s
    # idle, 3.7 / 6.6 / 10-13 s with a CPU hog on one core; the SimpleConvNet step 3.42 / 3.18 /
    # 3.11 ms. Runtimes other than GNU's ignore GOMP_SPINCOUNT and sleep (PASSIVE). Read once, when
    # the runtime loads with our extension; values the user set are kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("GOMP_SPINCOUNT", "2000")
    try:
        from fastnn import _info  # noqa: F401
        from fastnn import _native_backend
    except Exception as exc:  # noqa: BLE001 - any failure leaves the NumPy backend usable
        _state.native_error = f"{type(exc).__name__}: {exc}"
        if importlib.util.find_spec("fastnn._info") is None:
            # without this, Python says "partially initialized module ... circular import"
            _state.native_error = (f"the compiled extension is not built: no fastnn._info module in "
                                   f"{os.path.dirname(os.path.abspath(__file__))}")
        return
    _state.native = _native_backend
    if _info.have_openmp() and _info.compiler().startswith("GCC") and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_one_thread_after_fork)
    _state.best_isa = _info.cpu_best_isa()
    _state.isa = _state.best_isa
    _state.backend = "native"


def _one_thread_after_fork():
    # GNU OpenMP keeps its worker threads in a pool that a fork does not copy; the child's
    # first parallel region of more than one thread waits for them forever.
    _state.threads_after_fork = ("this process was forked from one with the native kernels loaded, and GNU "
                                 "OpenMP cannot run threads after a fork (start workers with 'spawn' or "
                                 "'forkserver' to use them)")
    _state.num_threads = 1


def _apply_environment():
    """FASTNN_SIMD, FASTNN_CONV_ALGORITHM, FASTNN_MEMORY_CACHE and FASTNN_BACKEND, at import;
    a bad value fails the import with a ValueError that names the variable."""
    settings = (("FASTNN_SIMD", lambda v: set_simd(v.lower()) if _state.native is not None else None),
                ("FASTNN_CONV_ALGORITHM", lambda v: set_conv_algorithm(v.lower())),
                ("FASTNN_MEMORY_CACHE", lambda v: set_memory_cache(int(v))),
                ("FASTNN_BACKEND", lambda v: set_backend(v.lower())))
    for variable, apply in settings:
        value = os.environ.get(variable, "").strip()
        if value:
            try:
                apply(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"the environment variable {variable}={value!r} is not valid: {exc}") from None


def set_num_threads(n):
    """Threads the native kernels use (default: OMP_NUM_THREADS, else the usable cores).

    In a process forked from one that had loaded the native kernels, built with GNU OpenMP,
    the kernels run on one thread whatever is asked (with a RuntimeWarning): libgomp's
    threads do not survive a fork, and its first parallel region in the child would wait
    for them forever. Start worker processes with "spawn" or "forkserver" to use threads
    in them.
    """
    if isinstance(n, bool) or not isinstance(n, int) and not hasattr(n, "__index__"):
        raise TypeError(f"set_num_threads: expected an int, got {type(n).__name__}")
    n = int(n)
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"set_num_threads: expected 1 <= n <= {MAX_THREADS}, got {n}")
    if n > 1 and _state.threads_after_fork:
        import warnings
        warnings.warn(f"set_num_threads({n}): {_state.threads_after_fork}; the native kernels run on 1 thread",
                      RuntimeWarning, stacklevel=2)
        n = 1
    _state.num_threads = n


def get_num_threads():
    return _state.num_threads


def _check_backend_name(name):
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"set_backend: expected one of {BACKENDS}, got {name!r}")
    name = name.lower()
    if name == "native" and _state.native is None:
        raise RuntimeError(
            "set_backend: the native extension is not available "
            f"({_state.native_error}); reinstall fastnn with a C compiler, or use 'numpy'")
    return name


def set_backend(name):
    """Select the implementation behind fastnn.ops: 'native' (C kernels) or 'numpy' (reference)."""
    _state.backend = _check_backend_name(name)


def get_backend():
    override = getattr(_state.local, "stack", None)
    return override[-1] if override else _state.backend


@contextlib.contextmanager
def backend(name):
    """``with fastnn.backend("numpy"): ...`` runs the block (in this thread) on that backend."""
    name = _check_backend_name(name)
    stack = getattr(_state.local, "stack", None)
    if stack is None:
        stack = _state.local.stack = []
    stack.append(name)
    with _state.overrides_lock:
        _state.overrides += 1
    try:
        yield name
    finally:
        stack.pop()
        with _state.overrides_lock:
            _state.overrides -= 1


def set_simd(name):
    """Force a SIMD path of the native kernels: 'portable', 'avx2' or 'avx512' (at most what the CPU has)."""
    if not isinstance(name, str) or name.lower() not in ISA_NAMES:
        raise ValueError(f"set_simd: expected one of {ISA_NAMES}, got {name!r}")
    isa = ISA_NAMES.index(name.lower())
    if isa > _state.best_isa:
        raise ValueError(f"set_simd: this CPU/build supports up to {ISA_NAMES[_state.best_isa]!r}, got {name!r}")
    _state.isa = isa


def get_simd():
    return ISA_NAMES[_state.isa]


def set_conv_algorithm(name):
    """How the native kernels run 3x3 stride-1 convolutions (padding <= 2, finite inputs):

    - 'auto' (the default): Winograd F(4x4, 3x3) where it pays off (16+ channels in and
      32+ out with 128+ 2x2 output tiles per thread; 16+ in and 16+ out, or 8+ in and 32+
      out, with 256+ when the outputs fill 90% of the 4x4 tiles), else 'gemm'. The
      forward, the data and the weight gradient each choose.
    - 'gemm': never Winograd: the direct and implicit-im2col GEMM paths, whose sums
      follow the reference's order most closely.
    - 'winograd': Winograd F(2x2, 3x3) wherever it can run: 2.25x fewer multiplies, float32
      results within the elementwise tolerance of the direct sum.
    - 'winograd4x4': Winograd F(4x4, 3x3) wherever it can run: 4x fewer multiplies; its
      transforms scale by up to 8, so a float32 output's rounding error is bounded by the
      size of the terms summed (about 1e-5 of the layer's largest output), not by the
      output itself.
    """
    if not isinstance(name, str) or name.lower() not in CONV_ALGORITHMS:
        raise ValueError(f"set_conv_algorithm: expected one of {CONV_ALGORITHMS}, got {name!r}")
    _state.conv_algo = CONV_ALGORITHMS.index(name.lower())


def get_conv_algorithm():
    return CONV_ALGORITHMS[_state.conv_algo]


def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory in the process instead of returning it to the OS.

    Training allocates and frees the same large arrays every step; by default glibc gives big
    blocks back to the OS and the next step pays a page fault per 4 KiB (about 2 us each here,
    e.g. 10 ms of a 23 ms SimpleConvNet step). The native ops' outputs already reuse freed
    blocks through fastnn's own cache (set_memory_cache); this covers the process's other
    arrays, the NumPy backend's included. It is a process-wide setting for programs (the
    fastnn CLI calls it; call it at the top of a training script), never applied by importing
    fastnn. Returns True when applied (Linux with glibc), False elsewhere.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # 32 MiB is the largest mmap threshold glibc accepts; blocks above it are still mapped fresh.
    return bool(mallopt(m_trim_threshold, 1 << 30)) and bool(mallopt(m_mmap_threshold, 32 << 20))


def set_memory_cache(max_bytes):
    """Bytes of freed native outputs fastnn keeps for reuse (default 256 MiB; 0 turns it off).

    The native ops allocate their outputs through a NumPy memory handler of fastnn's. When
    such an array of at least 128 KiB is freed, its block is kept (the oldest go first past
    this limit), and the next output of exactly that size takes it: a training or inference
    loop makes the same sizes every step, and a fresh block faults in each page on first
    write (a 16 MB ReLU took 3.6 times as long). Only arrays the native ops create use it;
    other arrays keep NumPy's default handler. The environment variable FASTNN_MEMORY_CACHE
    sets it at import. Lowering it frees the blocks over the new limit.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) and not hasattr(max_bytes, "__index__"):
        raise TypeError(f"set_memory_cache: expected an int number of bytes, got {type(max_bytes).__name__}")
    max_bytes = int(max_bytes)
    if max_bytes < 0:
        raise ValueError(f"set_memory_cache: expected max_bytes >= 0, got {max_bytes}")
    if _state.native is not None:
        from fastnn import _memory
        _memory.set_limit(min(max_bytes, 2**63 - 1))


def memory_cache_info():
    """The cache of freed native outputs, as a dict: limit and bytes held (bytes), blocks held,
    hits (outputs that reused a block) and misses (outputs of at least 128 KiB that found
    none). All 0 without the native extension."""
    if _state.native is None:
        return {"limit": 0, "bytes": 0, "blocks": 0, "hits": 0, "misses": 0}
    from fastnn import _memory
    return _memory.stats()


def empty_memory_cache():
    """Free the blocks the cache of freed native outputs holds (its limit stays)."""
    if _state.native is not None:
        from fastnn import _memory
        _memory.clear()


def active_backend():
    """The module implementing the ops for the current backend."""
    # get_backend() inlined: every op calls this, and a small op costs a few microseconds (the
    # thread-local lookup alone took 0.35 us, so it is made only while some thread has a
    # `backend(...)` block open; each thread's own blocks are counted before its ops run)
    override = getattr(_state.local, "stack", None) if _state.overrides else None
    if (override[-1] if override else _state.backend) == "native":
        return _state.native
    return _reference


def native_available():
    return _state.native is not None


def config():
    """Facts about this installation, as a dict (what show_config prints)."""
    import platform

    import numpy as np

    from fastnn._version import __version__

    info = {
        "version": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "backend": get_backend(),
        "native_available": native_available(),
        "native_error": _state.native_error,
        "num_threads": _state.num_threads,
        "conv_algorithm": get_conv_algorithm(),
    }
    if _state.native is not None:
        from fastnn import _info
        info.update({
            "compiler": _info.compiler(),
            "openmp": _info.have_openmp(),
            "simd_compiled": [ISA_NAMES[i] for i in _info.compiled_isas()],
            "simd_cpu_best": ISA_NAMES[_state.best_isa],
            "simd_selected": ISA_NAMES[_state.isa],
            "memory_cache_limit": memory_cache_info()["limit"],
        })
    return info


def show_config():
    """Print the version, compiler, OpenMP, SIMD paths and thread count of this installation."""
    info = config()
    lines = [f"fastnn {info['version']} (Python {info['python']}, NumPy {info['numpy']}, {info['platform']})"]
    if info["native_available"]:
        lines += [
            f"  native extension : loaded, built with {info['compiler']}",
            f"  OpenMP           : {'yes' if info['openmp'] else 'no (single-threaded build)'}",
            f"  SIMD compiled in : {', '.join(info['simd_compiled'])}",
            f"  SIMD on this CPU : {info['simd_cpu_best']} (selected: {info['simd_selected']})",
            f"  conv algorithm   : {info['conv_algorithm']}",
            f"  memory cache     : {info['memory_cache_limit'] / 2**20:g} MiB of freed outputs (set_memory_cache)",
        ]
    else:
        lines.append(f"  native extension : NOT loaded ({info['native_error']}); using the NumPy backend")
    lines += [f"  threads          : {info['num_threads']}", f"  backend          : {info['backend']}"]
    print("\n".join(lines))


_load_native()
_apply_environment()
