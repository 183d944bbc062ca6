/* fastnn GEMM engine (BLIS-style): C = alpha * op(A) @ op(B) + beta * C, then an
 * optional fused epilogue (bias per row or column, activation), for float32 and
 * float64. See docs/GEMM.md for the blocking, microkernels and threading.
 *
 * All matrices are row-major with arbitrary leading dimensions (>= the row
 * length); op(X) = X or X^T, so backward products need no transposed copies.
 * beta == 0 means C is not read (it may hold NaN or garbage).
 */
#ifndef FASTNN_GEMM_H
#define FASTNN_GEMM_H

#include "fastnn.h"

#ifdef __cplusplus
extern "C" {
#endif

enum fnn_bias_mode {
    FNN_BIAS_NONE = 0,
    FNN_BIAS_COL = 1, /* bias[j] added to column j (linear layers) */
    FNN_BIAS_ROW = 2  /* bias[i] added to row i (convolution: one per filter) */
};

/* Applied to each finished tile of C, after alpha/beta: C = act(C + bias). */
typedef struct {
    int bias_mode;    /* enum fnn_bias_mode */
    const void *bias; /* float* or double*, the GEMM's dtype */
    int act;          /* enum fnn_act (csrc/activation.h) */
    double act_alpha; /* slope of leaky_relu, alpha of elu */
} fnn_epilogue;

/* A packer writes the block [r0, r0+rows) x [k0, k0+kc) of a logical operand
 * into micro-panels of width w: dst[(r / w) * kc * w + k * w + r % w], zero
 * padded up to a multiple of w. For A, r runs over rows of op(A); for B, r runs
 * over columns of op(B) and k over its rows. This lets the convolution gather
 * B straight from an NCHW image (implicit im2col). */
typedef void (*fnn_pack_f32_fn)(const void *src, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                                int w, float *dst);
typedef void (*fnn_pack_f64_fn)(const void *src, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                                int w, double *dst);

/* A plain strided matrix as a packer source: element (i, k) of op(X) is
 * p[i*ld + k] (trans = 0) or p[k*ld + i] (trans = 1). */
typedef struct {
    const void *p;
    int64_t ld;
    int trans;
    int isa; /* the packer's transposes use this ISA's registers */
} fnn_matrix_src;

/* The microkernel geometry chosen for (isa, dtype): MR rows x NR columns of C
 * per register tile. Exposed for tests and docs. */
void fnn_gemm_tile_shape(int isa, int dtype_bytes, int *mr, int *nr);
/* Cache blocks for (isa, dtype): MC rows of A (L3), KC depth (A micro-panel in
 * L1), NC columns of B (per-thread block in L2). */
void fnn_gemm_block_sizes(int isa, int dtype_bytes, int64_t *mc, int64_t *kc, int64_t *nc);
/* Below this many multiply-adds per thread, extra threads cost more than they save. */
#define FNN_GEMM_MIN_MACS_PER_THREAD (1 << 18)
/* The shared-operand schedule of the GEMM driver (gemm_template.h): which
 * operand every thread packs whole, and how large it may be (bytes; in L2) */
#define FNN_GEMM_GRID 0
#define FNN_GEMM_SHARED_A 1
#define FNN_GEMM_SHARED_B 2
#define FNN_GEMM_FEW_ROWS 3
#define FNN_GEMM_ONE_ROW 4
#define FNN_GEMM_DOTS 5
#define FNN_GEMM_FEW_ROWS_BY_ROWS 6 /* FNN_GEMM_FEW_ROWS, the threads splitting the rows */
#define FNN_GEMM_SPLIT_K 7          /* the packed driver, the threads splitting the depth */
#define FNN_GEMM_SHARED_BYTES (512 * 1024)
/* The depth split (FNN_GEMM_SPLIT_K): where the depth is at least
 * FNN_GEMM_SPLIT_K_RATIO times C's longer side and neither operand is small
 * enough for the shared-operand schedule, it is cut into
 * FNN_GEMM_SPLIT_K_SLICES equal slices, each summed (packing only its slice of
 * the operands) into C or a partial C of its own, and the partials are added
 * in slice order: the slices are the same at every thread count (the threads
 * take whole slices; one thread does them in turn), so the bits are too. The
 * partials take at most FNN_GEMM_SPLIT_K_BYTES. The grid split such products
 * by rows, every thread packing all of B: the SimpleConvNet's 100 x 4320 by
 * 4320 x 100 product, AVX-512 float32, 2 threads, 429-523 -> 369-422 us (1
 * thread 578-663 either way); a 30 x 57600 by 57600 x 30 one 805-855 ->
 * 627-684 us on 2 threads, but 973-1076 -> 1060-1156 us on 1 (packing B,
 * from memory, measured slower by the slice). */
#define FNN_GEMM_SPLIT_K_RATIO 8
#define FNN_GEMM_SPLIT_K_SLICES 4
#define FNN_GEMM_SPLIT_K_BYTES (1 << 20)
/* Products that skip the packed driver: one row of C (batch-1 inference, a
 * GEMV that reads B's rows in order); with B = T, on the AVX2 and AVX-512
 * paths, up to FNN_GEMM_DOT_ROWS rows of C with a depth of FNN_GEMM_DOT_DEPTH
 * or more (up to 4 rows from a depth of 96) as dot products of A's and B's rows
 * (packing B costs more than the product there; each dot product ends in a
 * sum across the lanes, which shallower products do not pay back). With B = N,
 * up to FNN_GEMM_FEW_ROW_PANELS row panels of MR (on AVX2
 * FNN_GEMM_FEW_ROW_PANELS_LOAD_BOUND, on one thread only; on AVX-512 on Intel
 * cores as many) read B in place (gemm_few_rows). */
#define FNN_GEMM_DOT_ROWS 16
#define FNN_GEMM_DOT_DEPTH 256
/* From this depth, the last n mod L columns of C (L: the lanes of a vector; up
 * to L/4 of them) are computed apart, as dot products or GEMVs, not as a vector
 * mostly of padding (gemm_template.h, tail_columns). */
#define FNN_GEMM_TAIL_DEPTH 32
#define FNN_GEMM_TAIL_DEPTH_GEMV 8 /* with A = T: GEMVs, no sum across the lanes */
#define FNN_GEMM_FEW_ROW_PANELS 16
/* A = N is read in place by the indirect-A microkernel, not packed, where each
 * thread's columns are at most this many NR panels: packing A then copies it
 * for little reuse (AVX-512 float32, 1 thread, us, packed -> in place: 100 x
 * 4320 by 4320 x 100 714-733 -> 595-640, 1000 x 100 by 500 788-801 -> 616-645,
 * 512 x 128 by 2048 1775-1787 -> 1515-1543). op(A) = A^T read in place with a
 * stride (a kernel broadcasting from a[p * lda + i]) was slower than packing
 * (4320 x 100 by 100 x 100: 715-780 -> 787-859 us): each depth step touches a
 * new row of A, which no prefetcher follows. */
#define FNN_GEMM_A_IN_PLACE_PANELS 4
/* where the indirect-B kernel's unaligned vector loads of B bind it: AVX2, and
 * AVX-512 on Intel cores (fnn_cpu_is_intel) */
#define FNN_GEMM_FEW_ROW_PANELS_LOAD_BOUND 4
#define FNN_GEMM_FEW_ROWS_THREADED_PANELS 4

int fnn_gemm_f32(fnn_ctx ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                  int64_t ldc, const fnn_epilogue *ep);
int fnn_gemm_f64(fnn_ctx ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                  const double *a, int64_t lda, const double *b, int64_t ldb, double beta, double *c,
                  int64_t ldc, const fnn_epilogue *ep);

/* The path fnn_gemm_* takes for an m x n x k product on ctx (op(B) = B^T
 * where trans_b): FNN_GEMM_ONE_ROW, FNN_GEMM_DOTS, FNN_GEMM_FEW_ROWS (B read in place;
 * FNN_GEMM_FEW_ROWS_BY_ROWS where its threads split the rows), or the
 * packed driver's FNN_GEMM_GRID, FNN_GEMM_SHARED_A or FNN_GEMM_SHARED_B;
 * *threads: on how many threads. */
int fnn_gemm_schedule_f32(fnn_ctx ctx, int trans_b, int64_t m, int64_t n, int64_t k, int *threads);
int fnn_gemm_schedule_f64(fnn_ctx ctx, int trans_b, int64_t m, int64_t n, int64_t k, int *threads);

/* Whether an m x n x k product with these flags is computed by the packed driver
 * alone (no GEMV, dot-product, few-rows or tail-column kernel). There the flags
 * change only how the panels are packed (or the kernel that reads A in place,
 * which does the same multiply-adds in the same order), so an operand given
 * transposed (op = T) gives the bits of its copy in C order (op = N):
 * fastnn.ops.matmul reads a transposed view in place where both flag sets take
 * this route, and copies it otherwise. */
int fnn_gemm_packed_only_f32(fnn_ctx ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k);
int fnn_gemm_packed_only_f64(fnn_ctx ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k);

/* dst (cols x rows, C order) = the transpose of src (rows x cols, row stride lds):
 * a transposed view copied to C order, in cache-sized blocks. */
void fnn_transpose_copy_f32(fnn_ctx ctx, const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst);
void fnn_transpose_copy_f64(fnn_ctx ctx, const double *src, int64_t lds, int64_t rows, int64_t cols, double *dst);

/* The general driver: operands given by packers. ctx.nthreads threads at most.
 * Both return 0, or -1 when scratch memory could not be allocated. */
int fnn_gemm_packed_f32(fnn_ctx ctx, int64_t m, int64_t n, int64_t k, float alpha, fnn_pack_f32_fn pack_a,
                         const void *a_src, fnn_pack_f32_fn pack_b, const void *b_src, float beta, float *c,
                         int64_t ldc, const fnn_epilogue *ep);
int fnn_gemm_packed_f64(fnn_ctx ctx, int64_t m, int64_t n, int64_t k, double alpha, fnn_pack_f64_fn pack_a,
                         const void *a_src, fnn_pack_f64_fn pack_b, const void *b_src, double beta, double *c,
                         int64_t ldc, const fnn_epilogue *ep);

/* dst[r*ldd + t] = act(src[r*lds + t] + bias) for r < rows, t < len, where bias
 * is bvec[t] when bvec is set, else bs[r * bstep] when bs is set, else 0; act from enum
 * fnn_act (alpha: its parameter). dst may be src. The fused epilogue of the GEMM
 * and the convolution, vectorised for `isa`. */
void fnn_bias_act_f32(int isa, float *dst, int64_t ldd, const float *src, int64_t lds, const float *bvec,
                      const float *bs, int64_t bstep, int64_t rows, int64_t len, int act, double alpha);
void fnn_bias_act_f64(int isa, double *dst, int64_t ldd, const double *src, int64_t lds, const double *bvec,
                      const double *bs, int64_t bstep, int64_t rows, int64_t len, int act, double alpha);

/* dst[c*ldd + r] = src[r*lds + c] for c < cols and r < rows_out, where source
 * rows r >= rows read as 0 (zero-padded panels). */
void fnn_transpose_f32(int isa, const float *src, int64_t lds, int64_t rows, int64_t cols, int64_t rows_out,
                       float *dst, int64_t ldd);
void fnn_transpose_f64(int isa, const double *src, int64_t lds, int64_t rows, int64_t cols, int64_t rows_out,
                       double *dst, int64_t ldd);
#if FNN_X86_SIMD
/* rows_out a multiple of 16 (avx512) or 8 (avx2) */
/* the col2im of a stride-1 data gradient, whole image (csrc/transpose_simd.c) */
#define FNN_COL2IM_MAX_FW 32
void fnn_col2im_s1_avx512_f32(const float *dcol, int64_t c, int64_t h, int64_t w, int64_t fh, int64_t fw, int64_t ph,
                              int64_t pw, int64_t oh, int64_t ow, float *dx);
void fnn_col2im_s1_avx2_f32(const float *dcol, int64_t c, int64_t h, int64_t w, int64_t fh, int64_t fw, int64_t ph,
                            int64_t pw, int64_t oh, int64_t ow, float *dx);
void fnn_transpose_avx512_f32(const float *src, int64_t lds, int64_t rows, int64_t cols, int64_t rows_out,
                              float *dst, int64_t ldd);
void fnn_transpose_avx2_f32(const float *src, int64_t lds, int64_t rows, int64_t cols, int64_t rows_out,
                            float *dst, int64_t ldd);
/* rows of row_dwords 32-bit words, strides in words (fnn_copy_rows) */
void fnn_copy_rows_avx512(void *dst, int64_t ldd_dwords, const void *src, int64_t lds_dwords, int64_t rows,
                          int64_t row_dwords);
void fnn_copy_rows_avx2(void *dst, int64_t ldd_dwords, const void *src, int64_t lds_dwords, int64_t rows,
                        int64_t row_dwords);
#endif

/* out[t] = dy[t] * act'(z[t]) for t < n, with the derivative taken from the output
 * y = act(z) (activation.h), vectorised for ctx's ISA and split over its threads:
 * the backward of a fused activation. */
void fnn_act_grad_from_y_mul_f32(fnn_ctx ctx, const float *dy, const float *y, float *out, int64_t n, int act,
                                 double alpha);
void fnn_act_grad_from_y_mul_f64(fnn_ctx ctx, const double *dy, const double *y, double *out, int64_t n, int act,
                                 double alpha);
/* The same on the calling thread, for isa (inside a threaded kernel). */
void fnn_act_grad_from_y_mul_serial_f32(int isa, const float *dy, const float *y, float *out, int64_t n, int act,
                                        double alpha);
void fnn_act_grad_from_y_mul_serial_f64(int isa, const double *dy, const double *y, double *out, int64_t n, int act,
                                        double alpha);

/* Packers of plain matrices (src: const fnn_matrix_src *). */
void fnn_pack_matrix_f32(const void *src, int64_t r0, int64_t rows, int64_t k0, int64_t kc, int w, float *dst);
void fnn_pack_matrix_f64(const void *src, int64_t r0, int64_t rows, int64_t k0, int64_t kc, int w, double *dst);
/* B-side packer of a plain matrix: column j of op(B) is the panel index, row k
 * the depth; op(B)(k, j) = p[k*ld + j] (trans = 0) or p[j*ld + k]. */
void fnn_pack_matrix_b_f32(const void *src, int64_t j0, int64_t cols, int64_t k0, int64_t kc, int w, float *dst);
void fnn_pack_matrix_b_f64(const void *src, int64_t j0, int64_t cols, int64_t k0, int64_t kc, int w, double *dst);

/* Microkernels: c[0:MR, 0:NR] (row stride ldc) = alpha * sum_p a[p*MR + i] * b[p*NR + j]
 * + beta * c (c not read when beta == 0). a and b are packed micro-panels, b
 * aligned to 64 bytes. Full tiles only; the driver handles edges. */
typedef void (*fnn_ukr_f32_fn)(int64_t k, const float *a, const float *b, float *c, int64_t ldc, float alpha,
                               float beta);
typedef void (*fnn_ukr_f64_fn)(int64_t k, const double *a, const double *b, double *c, int64_t ldc,
                               double alpha, double beta);

#define FNN_PORTABLE_MR_F32 4
#define FNN_PORTABLE_NR_F32 16
#define FNN_PORTABLE_MR_F64 4
#define FNN_PORTABLE_NR_F64 8
#define FNN_AVX2_MR_F32 6
#define FNN_AVX2_NR_F32 16
#define FNN_AVX2_MR_F64 6
#define FNN_AVX2_NR_F64 8
#define FNN_AVX512_MR_F32 8
#define FNN_AVX512_NR_F32 32
#define FNN_AVX512_MR_F64 8
#define FNN_AVX512_NR_F64 16
/* the dot-product microkernels' blocks: DM rows of a by DN rows of b */
#define FNN_AVX2_DM 3
#define FNN_AVX2_DN 4
#define FNN_AVX512_DM 6
#define FNN_AVX512_DN 4

void fnn_ukr_portable_f32(int64_t k, const float *a, const float *b, float *c, int64_t ldc, float alpha,
                          float beta);
void fnn_ukr_portable_f64(int64_t k, const double *a, const double *b, double *c, int64_t ldc, double alpha,
                          double beta);
#if FNN_X86_SIMD
void fnn_ukr_avx2_f32(int64_t k, const float *a, const float *b, float *c, int64_t ldc, float alpha, float beta);
void fnn_ukr_avx2_f64(int64_t k, const double *a, const double *b, double *c, int64_t ldc, double alpha,
                      double beta);
void fnn_ukr_avx512_f32(int64_t k, const float *a, const float *b, float *c, int64_t ldc, float alpha,
                        float beta);
void fnn_ukr_avx512_f64(int64_t k, const double *a, const double *b, double *c, int64_t ldc, double alpha,
                        double beta);
#endif

/* Half-width microkernels: the first NR/2 columns of the tile only, on the
 * same NR-wide packed B panel; used for right-edge tiles. */
#if FNN_X86_SIMD
void fnn_ukrh_avx2_f32(int64_t k, const float *a, const float *b, float *c, int64_t ldc, float alpha, float beta);
void fnn_ukrh_avx2_f64(int64_t k, const double *a, const double *b, double *c, int64_t ldc, double alpha,
                       double beta);
void fnn_ukrh_avx512_f32(int64_t k, const float *a, const float *b, float *c, int64_t ldc, float alpha,
                         float beta);
void fnn_ukrh_avx512_f64(int64_t k, const double *a, const double *b, double *c, int64_t ldc, double alpha,
                         double beta);
#endif

/* Bottom-edge variants: the first `rows` (1 <= rows <= MR) rows of the tile only,
 * same arguments otherwise (rows >= MR runs the full kernel). Only those rows of
 * C are written. */
#define FNN_DECLARE_ROWS_UKR(ISA, T, SFX)                                                                       \
    void fnn_ukr_##ISA##_rows_##SFX(int rows, int64_t k, const T *a, const T *b, T *c, int64_t ldc, T alpha,   \
                                    T beta);                                                                  \
    void fnn_ukri_##ISA##_rows_##SFX(int rows, int64_t k, const T *a, const T *const *brow, int64_t boff, T *c, \
                                     int64_t ldc, T alpha, T beta);                                           \
    void fnn_ukra_##ISA##_rows_##SFX(int rows, int64_t k, const T *const *arow, int64_t aoff, const T *b, T *c, \
                                     int64_t ldc, T alpha, T beta);
#if FNN_X86_SIMD
FNN_DECLARE_ROWS_UKR(avx2, float, f32)
FNN_DECLARE_ROWS_UKR(avx2, double, f64)
FNN_DECLARE_ROWS_UKR(avx512, float, f32)
FNN_DECLARE_ROWS_UKR(avx512, double, f64)
#endif

/* Indirect-B microkernels: row p of the B micro-panel is brow[p] + boff (NR
 * contiguous elements, any alignment). A stride-1 convolution points the rows
 * into its zero-padded image, so B needs no packing at all. */
#define FNN_DECLARE_UKRI(NAME, T) \
    void NAME(int64_t k, const T *a, const T *const *brow, int64_t boff, T *c, int64_t ldc, T alpha, T beta);
FNN_DECLARE_UKRI(fnn_ukri_portable_f32, float)
FNN_DECLARE_UKRI(fnn_ukri_portable_f64, double)
#if FNN_X86_SIMD
FNN_DECLARE_UKRI(fnn_ukri_avx2_f32, float)
FNN_DECLARE_UKRI(fnn_ukri_avx2_f64, double)
FNN_DECLARE_UKRI(fnn_ukri_avx512_f32, float)
FNN_DECLARE_UKRI(fnn_ukri_avx512_f64, double)
/* their half-width tiles (the first NR/2 columns, as fnn_ukrh_*) */
FNN_DECLARE_UKRI(fnn_ukrih_avx2_f32, float)
FNN_DECLARE_UKRI(fnn_ukrih_avx2_f64, double)
FNN_DECLARE_UKRI(fnn_ukrih_avx512_f32, float)
FNN_DECLARE_UKRI(fnn_ukrih_avx512_f64, double)
#endif

/* Dot-product microkernels (gemm_ukernel_common.h, DEFINE_UKRD): a DM x DN
 * block of dot products of rows a[i] and b[j] over k elements, added as
 * vector-lane sums into part (DM * DN * lanes elements). SIMD paths only. */
#if FNN_X86_SIMD
void fnn_ukrd_avx2_f32(int64_t k, const float *const *a, const float *const *b, float *part);
void fnn_ukrd_avx2_f64(int64_t k, const double *const *a, const double *const *b, double *part);
void fnn_ukrd_avx512_f32(int64_t k, const float *const *a, const float *const *b, float *part);
void fnn_ukrd_avx512_f64(int64_t k, const double *const *a, const double *const *b, double *part);
#endif

/* Gathered-row microkernels (gemm_ukernel_common.h, DEFINE_UKRS): part[0 ..
 * nv * lanes) += the sum over q < count of g[q] times row idx[q] of rows (ldr
 * apart), nv <= FNN_UKRS_MAX_NV vectors a row. SIMD paths only. */
#define FNN_UKRS_MAX_NV 4
#if FNN_X86_SIMD
void fnn_ukrs_avx2_f32(int64_t count, const float *g, const int32_t *idx, const float *rows, int64_t ldr, int nv,
                       float *part);
void fnn_ukrs_avx2_f64(int64_t count, const double *g, const int32_t *idx, const double *rows, int64_t ldr, int nv,
                       double *part);
void fnn_ukrs_avx512_f32(int64_t count, const float *g, const int32_t *idx, const float *rows, int64_t ldr, int nv,
                         float *part);
void fnn_ukrs_avx512_f64(int64_t count, const double *g, const int32_t *idx, const double *rows, int64_t ldr,
                         int nv, double *part);
#endif

/* Indirect-A microkernels: element (i, p) of the A micro-panel is
 * arow[i][aoff + p] (row i contiguous along the depth); B packed. The weight
 * gradient of a stride-1 convolution points the rows into the padded image. */
void fnn_ukra_portable_f32(int64_t k, const float *const *arow, int64_t aoff, const float *b, float *c,
                           int64_t ldc, float alpha, float beta);
void fnn_ukra_portable_f64(int64_t k, const double *const *arow, int64_t aoff, const double *b, double *c,
                           int64_t ldc, double alpha, double beta);
#if FNN_X86_SIMD
void fnn_ukra_avx2_f32(int64_t k, const float *const *arow, int64_t aoff, const float *b, float *c, int64_t ldc,
                       float alpha, float beta);
void fnn_ukra_avx2_f64(int64_t k, const double *const *arow, int64_t aoff, const double *b, double *c,
                       int64_t ldc, double alpha, double beta);
void fnn_ukra_avx512_f32(int64_t k, const float *const *arow, int64_t aoff, const float *b, float *c,
                         int64_t ldc, float alpha, float beta);
void fnn_ukra_avx512_f64(int64_t k, const double *const *arow, int64_t aoff, const double *b, double *c,
                         int64_t ldc, double alpha, double beta);
#endif

/* GEMV and few-row dot products (csrc/gemv_simd.c, the AVX2 and AVX-512
 * paths of fnn_gemm_* for one row of C, or B = T with up to FNN_GEMM_DOT_ROWS):
 * fnn_gemv_n: c[j] = alpha * sum_p a[p*inca] * b[p*ldb + j] + beta * c[j], j < n;
 * fnn_gemm_dots: C[i, j] = alpha * dot(A[i, :], B[j, :]) + beta * C[i, j] for
 * i < m, j0 <= j < j1 (A's rows contiguous along k); fnn_tile_from_edge: C's rows x
 * cols = edge + beta * C (the driver's edge tiles). beta == 0: C is not read. */
#define FNN_DECLARE_GEMV(SFX, T)                                                                               \
    void fnn_gemv_n_##SFX(int64_t n, int64_t k, T alpha, const T *a, int64_t inca, const T *b, int64_t ldb,      \
                          T beta, T *c);                                                                        \
    void fnn_gemm_dots_##SFX(int64_t m, int64_t j0, int64_t j1, int64_t k, T alpha, const T *a, int64_t lda,     \
                             const T *b, int64_t ldb, T beta, T *c, int64_t ldc);                       \
    void fnn_tile_from_edge_##SFX(T *c, int64_t ldc, const T *edge, int64_t lde, int rows, int64_t cols, T beta);
#if FNN_X86_SIMD
FNN_DECLARE_GEMV(avx2_f32, float)
FNN_DECLARE_GEMV(avx2_f64, double)
FNN_DECLARE_GEMV(avx512_f32, float)
FNN_DECLARE_GEMV(avx512_f64, double)
#endif

/* Per-thread scratch memory, reused across calls (page faults are expensive):
 * slot s of the calling OS thread, at least `bytes`, 64-byte aligned; NULL on
 * allocation failure. Freed when the thread exits. Never use one slot for two
 * live buffers. */
enum {
    FNN_SCRATCH_PACK_A = 0,    /* the GEMM driver's packed blocks */
    FNN_SCRATCH_CONV_W = 1,    /* convolution: packed weights, shared by the threads */
    FNN_SCRATCH_CONV_DCOL = 2, /* convolution: dcol^T chunk of the data gradient */
    FNN_SCRATCH_CONV_DW = 3,   /* convolution: per-thread partial weight gradient */
    FNN_SCRATCH_CONV_XPAD = 4, /* direct convolution: zero-padded image */
    FNN_SCRATCH_CONV_YW = 5,   /* direct convolution: wide output tile */
    FNN_SCRATCH_CONV_ROWS = 6, /* direct convolution: B row pointers */
    FNN_SCRATCH_CONV_PLANE = 7, /* direct convolution + pooling: one output plane */
    FNN_SCRATCH_CONV_DY = 8,    /* its backward: one image's un-pooled gradient */
    FNN_SCRATCH_WINO_V = 9,     /* Winograd: a block's transformed input */
    FNN_SCRATCH_WINO_M = 10,    /* Winograd: its products, or its transformed gradient */
    FNN_SCRATCH_WINO_ROWS = 11, /* Winograd: padded rows of one tile row */
    FNN_SCRATCH_WINO_DU = 12,   /* Winograd: per-thread partial weight gradient */
    FNN_SCRATCH_GEMM_TAIL = 13, /* GEMM: the last columns' rows of op(B), or their results */
    FNN_SCRATCH_POOL_ROWS = 14, /* max pooling: the column phases of a row's windows */
    FNN_SCRATCH_CONV_BASES = 15, /* direct convolution: the compact layout's bases */
    FNN_SCRATCH_POOL_INDEX = 16, /* convolution + pooling: one plane's argmax as int64 */
    FNN_SCRATCH_GEMM_SPLIT = 17, /* GEMM: the depth split's partial results */
    FNN_SCRATCH_WINO_POOL = 18,  /* Winograd + pooling: a block's output rows of one filter */
    FNN_SCRATCH_WINO_ZERO = 19,  /* Winograd: which of a block's outputs have an all-zero window */
    FNN_SCRATCH_SLOTS = 20
};
void *fnn_scratch(int slot, size_t bytes);

#ifdef __cplusplus
}
#endif
#endif /* FASTNN_GEMM_H */
