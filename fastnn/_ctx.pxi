# Included by each Cython kernel module: the run-time context (thread count and
# instruction set) read from fastnn._config, the one place that holds it.
from fastnn import _config as _fnn_config

cdef inline fnn_ctx current_ctx():
    cdef fnn_ctx ctx
    state = _fnn_config._state
    ctx.nthreads = state.num_threads
    ctx.isa = state.isa
    ctx.conv_algo = state.conv_algo
    return ctx
