/* The cache of freed output blocks: see memcache.h. */
#define _DEFAULT_SOURCE /* madvise and MADV_HUGEPAGE under -std=c11 */
#include "memcache.h"

#include <stdint.h>
#include <stdlib.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#ifdef _WIN32
#include <windows.h>
static SRWLOCK cache_lock = SRWLOCK_INIT;
static void lock_cache(void) { AcquireSRWLockExclusive(&cache_lock); }
static void unlock_cache(void) { ReleaseSRWLockExclusive(&cache_lock); }
#else
#include <pthread.h>
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static void lock_cache(void) { pthread_mutex_lock(&cache_lock); }
static void unlock_cache(void) { pthread_mutex_unlock(&cache_lock); }
#endif

typedef struct {
    void *ptr;
    size_t size;
    uint64_t stamp; /* when it was kept: the newest of a size is taken, the oldest evicted */
} cached_block;

static cached_block blocks[FNN_MEMCACHE_SLOTS];
static int nblocks;
static size_t cached_bytes;
static size_t byte_limit = FNN_MEMCACHE_DEFAULT_LIMIT;
static uint64_t next_stamp;
static int64_t hits, misses;

#ifndef _WIN32
/* A fork while another thread holds the lock would leave the child's copy
 * locked forever: hold it across the fork, release it on both sides. */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void register_atfork(void) { pthread_atfork(lock_cache, unlock_cache, unlock_cache); }
#define ENSURE_ATFORK() pthread_once(&atfork_once, register_atfork)
#else
#define ENSURE_ATFORK() ((void)0)
#endif

static void remove_block(int i)
{
    cached_bytes -= blocks[i].size;
    blocks[i] = blocks[--nblocks];
}

static int oldest_block(void)
{
    int oldest = 0;
    for (int i = 1; i < nblocks; i++)
        if (blocks[i].stamp < blocks[oldest].stamp)
            oldest = i;
    return oldest;
}

/* Free the oldest blocks until `room` more bytes and `slots` more blocks fit.
 * The frees run under the lock: they are rare (the limit is reached) and short. */
static void evict_until(size_t room, int slots)
{
    while (nblocks > 0 && (cached_bytes + room > byte_limit || nblocks + slots > FNN_MEMCACHE_SLOTS)) {
        int i = oldest_block();
        free(blocks[i].ptr);
        remove_block(i);
    }
}

/* Transparent huge pages for blocks of 4 MiB or more, as NumPy's own handler
 * asks for them (a GEMM's tile writes 8 rows of C, 8 KiB apart in a 2048-wide
 * float32 output: 8 pages a tile with 4 KiB pages). */
static void *advise_huge_pages(void *p, size_t size)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t page = 4096;
    if (p != NULL && size >= ((size_t)4 << 20)) {
        const uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1);
        const uintptr_t end = ((uintptr_t)p + size) & ~(page - 1);
        madvise((void *)start, end - start, MADV_HUGEPAGE); /* a hint: failure changes nothing */
    }
#else
    (void)size;
#endif
    return p;
}

/* Blocks on a cache line, so that rows of a multiple of 16 floats are aligned
 * for the kernels' 64-byte loads and stores (malloc gives 16 bytes: every
 * AVX-512 access to such a row then splits across two lines). free() takes
 * them, as the NumPy handler's realloc and free do. */
static void *aligned_block(size_t size)
{
#ifdef _WIN32
    return malloc(size); /* _aligned_malloc's blocks need _aligned_free */
#else
    void *p = NULL;
    return posix_memalign(&p, 64, size) == 0 ? p : NULL;
#endif
}

static int is_cache_aligned(const void *p)
{
#ifdef _WIN32
    (void)p;
    return 1; /* aligned_block is malloc there */
#else
    return ((uintptr_t)p & 63) == 0;
#endif
}

void *fnn_memcache_malloc(size_t size)
{
    if (size >= FNN_MEMCACHE_MIN_BYTES) {
        ENSURE_ATFORK();
        lock_cache();
        int found = -1;
        for (int i = 0; i < nblocks; i++)
            if (blocks[i].size == size && (found < 0 || blocks[i].stamp > blocks[found].stamp))
                found = i;
        void *p = NULL;
        if (found >= 0) {
            p = blocks[found].ptr;
            remove_block(found);
            hits++;
        } else {
            misses++;
        }
        unlock_cache();
        if (p != NULL)
            return p;
        return advise_huge_pages(aligned_block(size), size);
    }
    /* malloc(0) may return NULL, which NumPy would take for a failure. */
    return malloc(size > 0 ? size : 1);
}

void *fnn_memcache_calloc(size_t nelem, size_t elsize)
{
    return calloc(nelem > 0 ? nelem : 1, elsize > 0 ? elsize : 1);
}

void *fnn_memcache_realloc(void *ptr, size_t new_size)
{
    return realloc(ptr, new_size > 0 ? new_size : 1);
}

void fnn_memcache_free(void *ptr, size_t size)
{
    if (ptr == NULL)
        return;
    /* Only blocks on a cache line are kept: calloc's (np.zeros) and realloc's (ndarray.resize)
     * are not, and a cached block goes to the next output of its size, which the kernels
     * expect aligned (see aligned_block). */
    if (size >= FNN_MEMCACHE_MIN_BYTES && is_cache_aligned(ptr)) {
        ENSURE_ATFORK();
        lock_cache();
        if (size <= byte_limit) {
            evict_until(size, 1);
            blocks[nblocks].ptr = ptr;
            blocks[nblocks].size = size;
            blocks[nblocks].stamp = next_stamp++;
            nblocks++;
            cached_bytes += size;
            ptr = NULL;
        }
        unlock_cache();
    }
    free(ptr);
}

void fnn_memcache_set_limit(size_t limit)
{
    ENSURE_ATFORK();
    lock_cache();
    byte_limit = limit;
    evict_until(0, 0);
    unlock_cache();
}

void fnn_memcache_clear(void)
{
    ENSURE_ATFORK();
    lock_cache();
    while (nblocks > 0) {
        free(blocks[nblocks - 1].ptr);
        remove_block(nblocks - 1);
    }
    unlock_cache();
}

fnn_memcache_stats fnn_memcache_get_stats(void)
{
    fnn_memcache_stats s;
    ENSURE_ATFORK();
    lock_cache();
    s.limit = (int64_t)byte_limit;
    s.bytes = (int64_t)cached_bytes;
    s.blocks = nblocks;
    s.hits = hits;
    s.misses = misses;
    unlock_cache();
    return s;
}
