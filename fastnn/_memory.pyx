# fastnn's NumPy memory handler: the outputs of the native ops are allocated
# through it, so their blocks go back to csrc/memcache.c's cache when freed and
# the next step's outputs of the same sizes reuse them without page faults.
# Only arrays the native ops create use it (see _alloc.pxi); the user's own
# arrays keep NumPy's default handler.
from libc.stdint cimport int64_t

cdef extern from "memcache.h" nogil:
    ctypedef struct fnn_memcache_stats:
        int64_t limit
        int64_t bytes
        int64_t blocks
        int64_t hits
        int64_t misses
    void fnn_memcache_set_limit(size_t limit)
    void fnn_memcache_clear()
    fnn_memcache_stats fnn_memcache_get_stats()
    size_t FNN_MEMCACHE_MIN_BYTES

cdef extern from *:
    """
    #include "numpy/ndarraytypes.h"
    #include "memcache.h"

    static void *fnn_handler_malloc(void *ctx, size_t size)
    { (void)ctx; return fnn_memcache_malloc(size); }
    static void *fnn_handler_calloc(void *ctx, size_t nelem, size_t elsize)
    { (void)ctx; return fnn_memcache_calloc(nelem, elsize); }
    static void *fnn_handler_realloc(void *ctx, void *ptr, size_t new_size)
    { (void)ctx; return fnn_memcache_realloc(ptr, new_size); }
    static void fnn_handler_free(void *ctx, void *ptr, size_t size)
    { (void)ctx; fnn_memcache_free(ptr, size); }

    static PyDataMem_Handler fnn_handler = {
        "fastnn_memory_cache", 1,
        {NULL, fnn_handler_malloc, fnn_handler_calloc, fnn_handler_realloc, fnn_handler_free}};

    static PyObject *fnn_handler_capsule(void)
    { return PyCapsule_New(&fnn_handler, "mem_handler", NULL); }
    """
    object fnn_handler_capsule()

# The capsule NumPy's PyDataMem_SetHandler takes; arrays made under it keep a
# reference to it and free through it.
handler = fnn_handler_capsule()

MIN_BYTES = FNN_MEMCACHE_MIN_BYTES


def set_limit(size_t limit):
    fnn_memcache_set_limit(limit)


def clear():
    fnn_memcache_clear()


def stats():
    cdef fnn_memcache_stats s = fnn_memcache_get_stats()
    return {"limit": s.limit, "bytes": s.bytes, "blocks": s.blocks, "hits": s.hits, "misses": s.misses}

