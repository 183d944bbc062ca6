/* fastnn: the cache of freed output blocks behind fastnn's NumPy memory handler
 * (fastnn/_memory.pyx).
 *
 * Training and inference loops allocate outputs of the same sizes at every
 * step. Straight from malloc, a large block is often fresh memory (glibc maps
 * blocks above its threshold anew and trims the heap's top), and the first
 * write to each page faults into the kernel, which zeroes it: a ReLU over 16 MB
 * then spends more time in page faults than in the kernel. Freed blocks of at
 * least FNN_MEMCACHE_MIN_BYTES are kept here instead, up to a byte limit, and
 * a later request of exactly the same size takes the most recently freed one.
 *
 * Unlike the kernels this holds global state: one cache per process, behind a
 * lock, so every function may be called from any thread. Blocks come from
 * posix_memalign on a 64-byte line (malloc on Windows) and go back to free;
 * sizes are exact byte counts as NumPy passes them.
 * Blocks of 4 MiB or more are advised to use transparent huge pages (Linux), as
 * NumPy's default handler does.
 */
#ifndef FASTNN_MEMCACHE_H
#define FASTNN_MEMCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Smaller blocks come from the heap without fresh pages; caching them would
 * only hold memory. */
#define FNN_MEMCACHE_MIN_BYTES ((size_t)128 * 1024)
/* At most this many blocks are kept (the oldest goes first). */
#define FNN_MEMCACHE_SLOTS 64
/* The default byte limit. */
#define FNN_MEMCACHE_DEFAULT_LIMIT ((size_t)256 * 1024 * 1024)

typedef struct {
    int64_t limit;  /* bytes the cache may hold */
    int64_t bytes;  /* bytes it holds now */
    int64_t blocks; /* blocks it holds now */
    int64_t hits;   /* requests served from the cache */
    int64_t misses; /* requests of at least FNN_MEMCACHE_MIN_BYTES that found no block */
} fnn_memcache_stats;

/* A block of `size` bytes (NULL when out of memory), from the cache or malloc. */
void *fnn_memcache_malloc(size_t size);
/* calloc's semantics; never served from the cache (calloc's fresh pages are
 * already zero, a cached block would need a memset). */
void *fnn_memcache_calloc(size_t nelem, size_t elsize);
/* realloc's semantics. */
void *fnn_memcache_realloc(void *ptr, size_t new_size);
/* Give back a block of `size` bytes (the size it was last requested with): kept
 * when it is large enough and fits under the limit (older blocks are freed to
 * make room), else freed. NULL is ignored. */
void fnn_memcache_free(void *ptr, size_t size);
/* Set the byte limit, freeing the oldest blocks until the cache fits it; 0 turns
 * the cache off and empties it. */
void fnn_memcache_set_limit(size_t limit);
/* Free every cached block; the limit stays. */
void fnn_memcache_clear(void);
fnn_memcache_stats fnn_memcache_get_stats(void);

#ifdef __cplusplus
}
#endif

#endif
