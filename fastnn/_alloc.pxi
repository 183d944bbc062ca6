# Included by the Cython kernel modules: their outputs are allocated through
# fastnn's memory handler (fastnn/_memory.pyx), so a step's outputs reuse the
# blocks of the last step's instead of faulting in fresh pages.
from fastnn import _memory

cdef object _memory_handler = _memory.handler
cdef Py_ssize_t _cached_min_bytes = _memory.MIN_BYTES


cdef object new_array(tuple shape, cnp.dtype dtype):
    """np.empty(shape, dtype), a block of at least the cache's minimum from fastnn's cache
    of freed outputs (smaller ones skip the handler switch, which costs more than they do)."""
    cdef Py_ssize_t nbytes = dtype.itemsize
    for d in shape:
        nbytes *= <Py_ssize_t>d
    if nbytes < _cached_min_bytes:
        return np.empty(shape, dtype=dtype)
    old = cnp.PyDataMem_SetHandler(_memory_handler)
    try:
        return np.empty(shape, dtype=dtype)
    finally:
        cnp.PyDataMem_SetHandler(old)
