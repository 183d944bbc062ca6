/* fastnn GEMM driver: cache blocking, packing, threading and the fused
 * epilogue, around the per-ISA microkernels (gemm_ukernel_*.c). The loops are
 * written once in gemm_template.h and instantiated here for float and double.
 *
 * Loop nest (docs/GEMM.md), with C = M x N row-major and the microkernel tile
 * MR x NR (NR along the contiguous columns, so C is written with full vectors):
 *
 *   for ic in M step MC            A block: this thread's rows of MC x KC
 *     for pc in K step KC
 *       pack A rows               per thread (no barrier anywhere)
 *       for jc in this thread's columns step NC
 *         pack B block KC x NC     per thread (L2)
 *         for ir in MC step MR     A micro-panel MR x KC (L1)
 *           for jr in NC step NR   B micro-panel KC x NR streamed from L2
 *             microkernel; on the last pc: epilogue on the tile (hot in L1)
 *
 * Each element of C is computed by one thread with a fixed order over k, so
 * results do not depend on the thread count at all.
 */
#define _POSIX_C_SOURCE 200809L
#include "gemm.h"
#include "kernels.h"

#include <stdlib.h>
#include <string.h>

#include "activation.h"

#if !defined(_WIN32)
#include <pthread.h>
#endif

void fnn_gemm_tile_shape(int isa, int dtype_bytes, int *mr, int *nr)
{
    const int f32 = dtype_bytes == 4;
#if FNN_X86_SIMD
    if (isa >= FNN_ISA_AVX512) {
        *mr = f32 ? FNN_AVX512_MR_F32 : FNN_AVX512_MR_F64;
        *nr = f32 ? FNN_AVX512_NR_F32 : FNN_AVX512_NR_F64;
        return;
    }
    if (isa >= FNN_ISA_AVX2) {
        *mr = f32 ? FNN_AVX2_MR_F32 : FNN_AVX2_MR_F64;
        *nr = f32 ? FNN_AVX2_NR_F32 : FNN_AVX2_NR_F64;
        return;
    }
#else
    (void)isa;
#endif
    *mr = f32 ? FNN_PORTABLE_MR_F32 : FNN_PORTABLE_MR_F64;
    *nr = f32 ? FNN_PORTABLE_NR_F32 : FNN_PORTABLE_NR_F64;
}

/* Cache levels of the machines this targets (Zen 3/4, Skylake-class):
 * L1d 32 KiB and L2 >= 512 KiB per core, L3 several MiB shared.
 *  KC: the A micro-panel MR x KC takes about 12-16 KiB, half of L1d, leaving
 *      room for the B micro-panel lines streaming through.
 *  NC: the per-thread B block KC x NC takes about 576 KiB of L2.
 *  MC: the shared A block MC x KC takes about 3 MiB of L3. */
void fnn_gemm_block_sizes(int isa, int dtype_bytes, int64_t *mc, int64_t *kc, int64_t *nc)
{
    int mr, nr;
    fnn_gemm_tile_shape(isa, dtype_bytes, &mr, &nr);
    int64_t l1_panel = 12 * 1024, l2_block = 576 * 1024, l3_block = 3 * 1024 * 1024;
    int64_t k = l1_panel / (mr * dtype_bytes);
    k = k / 8 * 8;
    if (k > 384)
        k = 384;
    int64_t n = l2_block / (k * dtype_bytes);
    n = n / nr * nr;
    if (n < nr)
        n = nr;
    int64_t m = l3_block / (k * dtype_bytes);
    m = m / mr * mr;
    *mc = m;
    *kc = k;
    *nc = n;
}

/* ---- per-thread scratch ------------------------------------------------ */

typedef struct {
    void *p[FNN_SCRATCH_SLOTS];
    size_t cap[FNN_SCRATCH_SLOTS];
} fnn_scratch_set;

static void fnn_scratch_free(void *v)
{
    fnn_scratch_set *s = (fnn_scratch_set *)v;
    if (!s)
        return;
    for (int i = 0; i < FNN_SCRATCH_SLOTS; i++)
        free(s->p[i]);
    free(s);
}

#if !defined(_WIN32)
static pthread_key_t fnn_scratch_key;
static pthread_once_t fnn_scratch_once = PTHREAD_ONCE_INIT;
static void fnn_scratch_key_init(void) { (void)pthread_key_create(&fnn_scratch_key, fnn_scratch_free); }

static fnn_scratch_set *fnn_scratch_get(void)
{
    (void)pthread_once(&fnn_scratch_once, fnn_scratch_key_init);
    fnn_scratch_set *s = (fnn_scratch_set *)pthread_getspecific(fnn_scratch_key);
    if (!s) {
        s = (fnn_scratch_set *)calloc(1, sizeof(*s));
        if (s && pthread_setspecific(fnn_scratch_key, s) != 0) {
            free(s);
            s = NULL;
        }
    }
    return s;
}
#else
static __declspec(thread) fnn_scratch_set fnn_scratch_tls;
static fnn_scratch_set *fnn_scratch_get(void) { return &fnn_scratch_tls; }
#endif

void *fnn_scratch(int slot, size_t bytes)
{
    fnn_scratch_set *s = fnn_scratch_get();
    if (!s || slot < 0 || slot >= FNN_SCRATCH_SLOTS)
        return NULL;
    if (bytes == 0)
        bytes = 64;
#if defined(__SANITIZE_ADDRESS__)
    /* sanitizer builds: an exact-size buffer per request, so any overrun is caught */
    s->cap[slot] = 0;
#endif
    if (s->cap[slot] < bytes) {
        free(s->p[slot]);
        s->p[slot] = NULL;
        s->cap[slot] = 0;
#if defined(__SANITIZE_ADDRESS__)
        size_t rounded = (bytes + 63) / 64 * 64;
#else
        size_t rounded = (bytes + 4095) / 4096 * 4096;
#endif
        void *p = NULL;
#if !defined(_WIN32)
        if (posix_memalign(&p, 64, rounded) != 0)
            p = NULL;
#else
        p = _aligned_malloc(rounded, 64);
#endif
        if (!p)
            return NULL;
        s->p[slot] = p;
        s->cap[slot] = rounded;
    }
    return s->p[slot];
}

/* ---- the driver, once per dtype ---------------------------------------- */

#define T float
#define SFX f32
#include "gemm_template.h"
#undef T
#undef SFX

#define T double
#define SFX f64
#include "gemm_template.h"
#undef T
#undef SFX
