"""fastnn: C/Cython-accelerated neural-network kernels and layers, NumPy-compatible.

``fastnn.ops`` is the functional API (both backends behind it); ``fastnn.layers``,
``fastnn.optim`` and ``fastnn.functions`` are drop-ins for "deep learning from
scratch" style code; ``fastnn.nn`` is a Keras-style model API.
"""
import importlib

from fastnn._config import (backend, config, empty_memory_cache, get_backend, get_conv_algorithm,
                            get_num_threads, get_simd, keep_freed_memory, memory_cache_info, set_backend,
                            set_conv_algorithm, set_memory_cache, set_num_threads, set_simd, show_config)
from fastnn._version import __version__

__all__ = [
    "__version__", "show_config", "config", "set_num_threads", "get_num_threads", "set_backend",
    "get_backend", "backend", "set_simd", "get_simd", "set_conv_algorithm", "get_conv_algorithm",
    "keep_freed_memory", "set_memory_cache", "memory_cache_info", "empty_memory_cache", "ops", "layers", "optim",
    "functions", "nn", "datasets", "gradcheck",
]

_SUBMODULES = ("ops", "layers", "optim", "functions", "nn", "datasets", "cli")


def __getattr__(name):
    # Submodules load on first use, so `import fastnn` stays light.
    if name in _SUBMODULES:
        return importlib.import_module(f"fastnn.{name}")
    if name == "gradcheck":
        from fastnn.nn.gradcheck import gradcheck
        return gradcheck
    raise AttributeError(f"module 'fastnn' has no attribute {name!r}")
