/* Winograd F(2x2, 3x3) and F(4x4, 3x3), written once for both dtypes: csrc/winograd.c includes
 * this file with T (float/double) and SFX (f32/f64) defined. Not a public header. */

#define CAT2_(a, b) a##_##b
#define CAT2(a, b) CAT2_(a, b)
#define FN(name) CAT2(name, SFX)

#include "finite_template.h"

/* lanes of one 64-byte block: the transforms and the output copy work in whole
 * blocks, the last one ending at the row's end (see WINO_SIDE) */
#define WINO_BLOCK_LANES ((int)(64 / sizeof(T)))

/* ---- the transforms, over the lanes of a block -------------------------- */

/* A block's tiles are its lanes: tile tx of the block's tile row r is lane
 * r*tw + tx, as in V, Z and M. Before a transform, the tiles' values are
 * gathered into lane arrays (ls elements apart): for the input, the a x a
 * values of each tile (entry (i, j) of every tile in array a*i + j); for the
 * gradient, the m x m values of each tile of dy. Both transforms are then small
 * matrix products along the lanes, on both sides: flat loops over all the
 * block's lanes, with no tile-row remainder however narrow the image. */

/* The lane arrays of one tile row: dst[(i * nq + q) * ls + tx] = row hi0 + i
 * of the plane (h x w, zero outside), column m*tx + q - pad (zero outside), for
 * i < nrows, q < nq and tx < count. The tiles whose columns all lie inside the
 * row (all but one or two at the edges) take the branch-free loop. */
static FNN_ALWAYS_INLINE void FN(wino_gather_body)(T *FNN_RESTRICT dst, int64_t ls, int64_t count,
                                                   const T *FNN_RESTRICT plane, int64_t h, int64_t w, int64_t hi0,
                                                   int64_t pad, const int m, const int nrows, const int nq)
{
    int64_t lo = (pad + m - 1) / m, hi = w + pad - nq < 0 ? 0 : (w + pad - nq) / m + 1;
    if (lo > count)
        lo = count;
    if (hi > count)
        hi = count;
    if (hi < lo)
        hi = lo;
    for (int i = 0; i < nrows; i++) {
        T *FNN_RESTRICT d = dst + i * nq * ls;
        const int64_t row = hi0 + i;
        if (row < 0 || row >= h) {
            for (int q = 0; q < nq; q++)
                for (int64_t tx = 0; tx < count; tx++)
                    d[q * ls + tx] = 0;
            continue;
        }
        const T *FNN_RESTRICT src = plane + row * w;
        for (int64_t tx = lo; tx < hi; tx++)
            for (int q = 0; q < nq; q++)
                d[q * ls + tx] = src[m * tx + q - pad];
        for (int64_t tx = 0; tx < count; tx = tx + 1 == lo ? hi : tx + 1)
            for (int q = 0; q < nq; q++) {
                const int64_t col = m * tx + q - pad;
                d[q * ls + tx] = col >= 0 && col < w ? src[col] : (T)0;
            }
    }
}

/* Rows [hi0, hi0 + nrows) of the plane (h x w): in place where all lie inside
 * it, else copied to buf with zeros for the rows outside. */
static FNN_ALWAYS_INLINE const T *FN(wino_row_window)(const T *plane, int64_t h, int64_t w, int64_t hi0, int nrows,
                                                      T *FNN_RESTRICT buf)
{
    if (hi0 >= 0 && hi0 + nrows <= h)
        return plane + hi0 * w;
    for (int i = 0; i < nrows; i++) {
        const int64_t row = hi0 + i;
        for (int64_t col = 0; col < w; col++)
            buf[i * w + col] = row >= 0 && row < h ? plane[row * w + col] : (T)0;
    }
    return buf;
}

/* The output rows of filter fi for the tile rows [r0, r0 + nr) into y (n, f,
 * oh, ow), from o: output row q of the block's tile row r at o + q * orow +
 * m * r * tw (all in one call: a call per row cost 4% of conv E's forward). */
static FNN_ALWAYS_INLINE void FN(wino_copy_body)(T *FNN_RESTRICT y, const T *FNN_RESTRICT o, int64_t orow, int m,
                                                 int64_t tw, int64_t th, int64_t f, int64_t oh, int64_t ow,
                                                 int64_t fi, int64_t r0, int64_t nr)
{
    for (int64_t r = 0; r < nr; r++) {
        const int64_t ni = (r0 + r) / th, ty = (r0 + r) % th;
        T *FNN_RESTRICT yrow = y + ((ni * f + fi) * oh + m * ty) * ow;
        for (int q = 0; q < m && m * ty + q < oh; q++) {
            const T *FNN_RESTRICT src = o + q * orow + m * r * tw;
            T *FNN_RESTRICT dst = yrow + q * ow;
            if (ow < WINO_BLOCK_LANES) {
                for (int64_t col = 0; col < ow; col++)
                    dst[col] = src[col];
                continue;
            }
            for (int64_t col = 0;; col += WINO_BLOCK_LANES) {
                if (col + WINO_BLOCK_LANES > ow)
                    col = ow - WINO_BLOCK_LANES;
                __builtin_memcpy(dst + col, src + col, 64);
                if (col + WINO_BLOCK_LANES >= ow)
                    break;
            }
        }
    }
}

/* The data gradient of one tile row's input tiles into the plane (h x w) of
 * dx: dd holds the a*a lane arrays of the tiles' gradients (entry (i, j) of
 * tile tx at dd[(a*i + j) * ls + tx]), tile tx covering rows row0 + i and
 * columns m*tx - pad + j. Tiles overlap their neighbours by a - m = 2 rows and
 * columns: each row's values are first summed along the row in rb, the left
 * tile's share first, then stored, or added where the tile row above has
 * stored that row (its first `add_rows` rows; into seam, where set, by a
 * store, for the caller to add once the tile row above is done). Every output
 * is so the same two- or four-term sum whatever the threads. Returns 0 where
 * a value stored or added is not finite. */
static FNN_ALWAYS_INLINE int FN(wino_scatter_body)(const T *FNN_RESTRICT dd, int64_t ls, int64_t count,
                                                   T *FNN_RESTRICT plane, T *FNN_RESTRICT seam, int64_t h,
                                                   int64_t w, int64_t row0, int64_t pad, const int m, int add_rows,
                                                   T *FNN_RESTRICT rb, int (*finite)(const T *, int64_t))
{
    const int a = m + 2;
    int ok = 1;
    for (int i = 0; i < a; i++) {
        const int64_t row = row0 + i;
        if (row < 0 || row >= h)
            continue;
        const T *FNN_RESTRICT src = dd + (int64_t)a * i * ls;
        for (int j = 0; j < a; j++)
            rb[j] = src[j * ls];
        for (int64_t tx = 1; tx < count; tx++) {
            for (int j = 0; j < a - m; j++)
                rb[m * tx + j] += src[j * ls + tx];
            for (int j = a - m; j < a; j++)
                rb[m * tx + j] = src[j * ls + tx];
        }
        const T *FNN_RESTRICT vals = rb + pad; /* column 0 of the row */
        ok &= finite(vals, w);
        if (i >= add_rows || seam) {
            T *FNN_RESTRICT dst = i < add_rows ? seam + i * w : plane + row * w;
            for (int64_t col = 0; col < w; col++)
                dst[col] = vals[col];
        } else {
            T *FNN_RESTRICT dst = plane + row * w;
            for (int64_t col = 0; col < w; col++)
                dst[col] += vals[col];
        }
    }
    return ok;
}

/* B^T (a x a), A (a x m) and A^T (m x a) of each tile size, applied to one
 * lane l: output k at o[k * os + l * ol] from input q at i[q * is + l] (macros
 * of no arguments, so that their names pass through WINO_SIDE unexpanded) */
#define WINO_IN_(q) (i_[(q) * (is_) + (l_)])
#define WINO_OUT_(k) (o_[(k) * (os_) + (l_) * (ol_)])
#define WINO2_BT()                                                                                        \
    do {                                                                                                  \
        const T c0 = WINO_IN_(0), c1 = WINO_IN_(1), c2 = WINO_IN_(2), c3 = WINO_IN_(3);                   \
        WINO_OUT_(0) = c0 - c2;                                                                           \
        WINO_OUT_(1) = c1 + c2;                                                                           \
        WINO_OUT_(2) = c2 - c1;                                                                           \
        WINO_OUT_(3) = c1 - c3;                                                                           \
    } while (0)
#define WINO2_A()                                                                                         \
    do {                                                                                                  \
        const T e0 = WINO_IN_(0), e1 = WINO_IN_(1);                                                       \
        WINO_OUT_(0) = e0;                                                                                \
        WINO_OUT_(1) = e0 + e1;                                                                           \
        WINO_OUT_(2) = e0 - e1;                                                                           \
        WINO_OUT_(3) = -e1;                                                                               \
    } while (0)
#define WINO2_AT()                                                                                        \
    do {                                                                                                  \
        const T s0 = WINO_IN_(0), s1 = WINO_IN_(1), s2 = WINO_IN_(2), s3 = WINO_IN_(3);                   \
        WINO_OUT_(0) = s0 + s1 + s2;                                                                      \
        WINO_OUT_(1) = s1 - s2 - s3;                                                                      \
    } while (0)
/* B = (B^T)^T, for the adjoint of the input transform (the data gradient) */
#define WINO2_B()                                                                                         \
    do {                                                                                                  \
        const T c0 = WINO_IN_(0), c1 = WINO_IN_(1), c2 = WINO_IN_(2), c3 = WINO_IN_(3);                   \
        WINO_OUT_(0) = c0;                                                                                \
        WINO_OUT_(1) = c1 - c2 + c3;                                                                      \
        WINO_OUT_(2) = c1 + c2 - c0;                                                                      \
        WINO_OUT_(3) = -c3;                                                                               \
    } while (0)
/* F(4x4, 3x3), Lavin and Gray's points 0, +-1, +-2:
 *   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
 *   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1] */
#define WINO4_BT()                                                                                        \
    do {                                                                                                  \
        const T c0 = WINO_IN_(0), c1 = WINO_IN_(1), c2 = WINO_IN_(2), c3 = WINO_IN_(3), c4 = WINO_IN_(4), \
                c5 = WINO_IN_(5), c3m1 = c3 - c1, c4m2 = c4 - c2;                                         \
        WINO_OUT_(0) = (T)4 * c0 - (T)5 * c2 + c4;                                                        \
        WINO_OUT_(1) = c3 + c4 - (T)4 * (c1 + c2);                                                        \
        WINO_OUT_(2) = c4 - c3 + (T)4 * (c1 - c2);                                                        \
        WINO_OUT_(3) = c4m2 + (T)2 * c3m1;                                                                \
        WINO_OUT_(4) = c4m2 - (T)2 * c3m1;                                                                \
        WINO_OUT_(5) = (T)4 * c1 - (T)5 * c3 + c5;                                                        \
    } while (0)
#define WINO4_B()                                                                                         \
    do {                                                                                                  \
        const T c0 = WINO_IN_(0), c1 = WINO_IN_(1), c2 = WINO_IN_(2), c3 = WINO_IN_(3), c4 = WINO_IN_(4), \
                c5 = WINO_IN_(5), d12 = c2 - c1, d34 = c3 - c4, s12 = c1 + c2, s34 = c3 + c4;              \
        WINO_OUT_(0) = (T)4 * c0;                                                                         \
        WINO_OUT_(1) = (T)4 * (d12 + c5) + (T)2 * (c4 - c3);                                               \
        WINO_OUT_(2) = -((T)5 * c0 + (T)4 * s12 + s34);                                                   \
        WINO_OUT_(3) = (T)2 * d34 - d12 - (T)5 * c5;                                                       \
        WINO_OUT_(4) = c0 + s12 + s34;                                                                    \
        WINO_OUT_(5) = c5;                                                                                \
    } while (0)
#define WINO4_A()                                                                                         \
    do {                                                                                                  \
        const T e0 = WINO_IN_(0), e1 = WINO_IN_(1), e2 = WINO_IN_(2), e3 = WINO_IN_(3);                   \
        const T a02 = e0 + e2, a13 = e1 + e3, b02 = e0 + (T)4 * e2, b13 = (T)2 * (e1 + (T)4 * e3);       \
        WINO_OUT_(0) = e0;                                                                                \
        WINO_OUT_(1) = a02 + a13;                                                                         \
        WINO_OUT_(2) = a02 - a13;                                                                         \
        WINO_OUT_(3) = b02 + b13;                                                                         \
        WINO_OUT_(4) = b02 - b13;                                                                         \
        WINO_OUT_(5) = e3;                                                                                \
    } while (0)
#define WINO4_AT()                                                                                        \
    do {                                                                                                  \
        const T s0 = WINO_IN_(0), s1 = WINO_IN_(1), s2 = WINO_IN_(2), s3 = WINO_IN_(3), s4 = WINO_IN_(4), \
                s5 = WINO_IN_(5);                                                                         \
        const T a12 = s1 + s2, d12 = s1 - s2, a34 = s3 + s4, d34 = s3 - s4;                               \
        WINO_OUT_(0) = a12 + a34 + s0;                                                                    \
        WINO_OUT_(1) = d12 + (T)2 * d34;                                                                  \
        WINO_OUT_(2) = a12 + (T)4 * a34;                                                                  \
        WINO_OUT_(3) = d12 + (T)8 * d34 + s5;                                                             \
    } while (0)

/* One side of a transform: for each of `count` vectors v (v-th at src + v*sv, its
 * entries is apart), its entries times X (the macro XF) written from dst + v*dv
 * (entries os apart), over n lanes (lane stride 1 in, ol out). The lane arrays
 * never overlap: GCC otherwise gives up on proving it for a dozen streams and
 * leaves the loops scalar. The lanes go in blocks of 64 bytes, the last one
 * ending at lane n (so overlapping the one before where n is not a multiple:
 * those lanes are written twice with the same values), where a loop to n left
 * a scalar tail that GCC 12 does not mask: 12 of a 28-wide image row's lanes. */
#define WINO_SIDE(XF, count, src, sv, is, dst, dv, os, ol, n)                                             \
    for (int v_ = 0; v_ < (count); v_++) {                                                                \
        const T *FNN_RESTRICT i_ = (src) + v_ * (sv);                                                     \
        T *FNN_RESTRICT o_ = (dst) + v_ * (dv);                                                           \
        const int64_t is_ = (is), os_ = (os), ol_ = (ol), n_ = (n);                                       \
        if (n_ < WINO_BLOCK_LANES) {                                                                      \
            for (int64_t l_ = 0; l_ < n_; l_++)                                                           \
                XF();                                                                                     \
            continue;                                                                                     \
        }                                                                                                 \
        for (int64_t b_ = 0;; b_ += WINO_BLOCK_LANES) {                                                   \
            if (b_ + WINO_BLOCK_LANES > n_)                                                               \
                b_ = n_ - WINO_BLOCK_LANES;                                                               \
            FNN_IVDEP for (int j_ = 0; j_ < WINO_BLOCK_LANES; j_++)                                         \
            {                                                                                             \
                const int64_t l_ = b_ + j_;                                                               \
                XF();                                                                                     \
            }                                                                                             \
            if (b_ + WINO_BLOCK_LANES >= n_)                                                              \
                break;                                                                                    \
        }                                                                                                 \
    }

/* A tile size's four transforms, each X D Y on every lane in two sides:
 * - input, V = B^T d B: the left side B^T is applied to whole image rows
 *   before the gather (rows_bt: rows of n values is apart in, os apart out),
 *   since it mixes rows only; d then holds the a*a lane arrays of B^T d (ls
 *   apart; entry (i, j) of every tile of the block in array a*i + j), and the
 *   right side writes V[p] at out + p*ldp;
 * - gradient, Z = A dY A^T: e holds the m*m lane arrays of dY, tmp a*m (the
 *   left side A makes a rows of m, so it is not applied before the gather);
 * - output, Y = A^T M A for one filter from M[p] at mm + p*ldp: output row k of
 *   lane b at o[k * m * len + m * b + (0 .. m-1)]; tmp holds a*m*len;
 * - the input's adjoint, dd = B dV B^T (the data gradient of the input
 *   tiles, which overlap: wino_scatter_body adds them up), from dV[p] at
 *   dv + p*ldp into the a*a lane arrays of out (ls apart), through tmp (a*a). */
#define DEFINE_WINO_TRANSFORMS(M, BT, B, A, AT)                                                            \
    static FNN_ALWAYS_INLINE void FN(wino##M##_rows_bt_body)(const T *in, int64_t is, T *out, int64_t os,   \
                                                             int64_t n)                                   \
    {                                                                                                     \
        WINO_SIDE(BT, 1, in, 0, is, out, 0, os, 1, n)                                                     \
    }                                                                                                     \
    static FNN_ALWAYS_INLINE void FN(wino##M##_input_body)(const T *d, int64_t ls, int64_t n, T *out,       \
                                                           int64_t ldp)                                   \
    {                                                                                                     \
        const int a = M + 2;                                                                              \
        WINO_SIDE(BT, a, d, a * ls, ls, out, a * ldp, ldp, 1, n)                                          \
    }                                                                                                     \
    static FNN_ALWAYS_INLINE void FN(wino##M##_grad_body)(const T *e, T *tmp, int64_t ls, int64_t n, T *out,  \
                                                          int64_t ldp)                                    \
    {                                                                                                     \
        const int a = M + 2;                                                                              \
        WINO_SIDE(A, M, e, ls, M * ls, tmp, ls, M * ls, 1, n)                                             \
        WINO_SIDE(A, a, tmp, M * ls, ls, out, a * ldp, ldp, 1, n)                                         \
    }                                                                                                     \
    static FNN_ALWAYS_INLINE void FN(wino##M##_output_body)(const T *mm, int64_t ldp, int64_t len, T *tmp,    \
                                                            T *o)                                         \
    {                                                                                                     \
        const int a = M + 2;                                                                              \
        WINO_SIDE(AT, a, mm, ldp, a * ldp, tmp, len, a * len, 1, len)                                     \
        WINO_SIDE(AT, M, tmp, a * len, len, o, M * len, 1, M, len)                                        \
    }                                                                                                     \
    static FNN_ALWAYS_INLINE void FN(wino##M##_adjoint_body)(const T *dv, int64_t ldp, int64_t n, T *tmp,    \
                                                             T *out, int64_t ls)                          \
    {                                                                                                     \
        const int a = M + 2;                                                                              \
        WINO_SIDE(B, a, dv, ldp, a * ldp, tmp, ls, a * ls, 1, n)                                          \
        WINO_SIDE(B, a, tmp, a * ls, ls, out, a * ls, ls, 1, n)                                           \
    }
DEFINE_WINO_TRANSFORMS(2, WINO2_BT, WINO2_B, WINO2_A, WINO2_AT)
DEFINE_WINO_TRANSFORMS(4, WINO4_BT, WINO4_B, WINO4_A, WINO4_AT)
#undef DEFINE_WINO_TRANSFORMS
#undef WINO_SIDE
#undef WINO_IN_
#undef WINO_OUT_
#undef WINO2_BT
#undef WINO2_B
#undef WINO2_A
#undef WINO2_AT
#undef WINO4_BT
#undef WINO4_B
#undef WINO4_A
#undef WINO4_AT

typedef struct {
    /* one tile row's input tiles (a x a, times B^T on the left; the last
     * argument is scratch for 4 * a * w values) and gradient tiles (m x m),
     * and the next tile row's after them when the second plane is set
     * (dst, ls, count, plane, plane2, h, w, hi0, hi0_2, pad[, scratch]) */
    void (*gather_input)(T *, int64_t, int64_t, const T *, const T *, int64_t, int64_t, int64_t, int64_t, int64_t,
                         T *);
    void (*gather_grad)(T *, int64_t, int64_t, const T *, const T *, int64_t, int64_t, int64_t, int64_t, int64_t);
    /* gather_grad and both sides of the gradient's transform at once, straight
     * into Z (out, ldp; the rest as gather_grad's, with no padding), where this
     * ISA has that: returns 0 where not, the same on every call of a layer */
    int (*gather_z)(T *, int64_t, int64_t, const T *, const T *, int64_t, int64_t, int64_t, int64_t);
    /* gather_input and the right side of the input transform at once, straight
     * into V (out, ldp as input's; the other arguments as gather_input's), where
     * this ISA has that: returns 0 where not, the same on every call of a layer */
    int (*gather_v)(T *, int64_t, int64_t, const T *, const T *, int64_t, int64_t, int64_t, int64_t, int64_t, T *);
    void (*input)(const T *, int64_t, int64_t, T *, int64_t);
    void (*grad)(const T *, T *, int64_t, int64_t, T *, int64_t);
    int (*output)(const T *, int64_t, int64_t, int64_t, T *, T *); /* 0: an output of the tb tiles is not finite */
    void (*copy)(T *, const T *, int64_t, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                 int64_t);
    void (*adjoint)(const T *, int64_t, int64_t, T *, T *, int64_t); /* (dv, ldp, n, tmp, out, ls) */
    /* (dd, ls, count, plane, seam, h, w, row0, pad, add_rows, rb): wino_scatter_body */
    int (*scatter)(const T *, int64_t, int64_t, T *, T *, int64_t, int64_t, int64_t, int64_t, int, T *);
    /* dst[i] |= src[i], and dst[i] &= src[i], over len values' bits (wino_zero_or, the masking) */
    void (*bits_or)(TBITS *, const TBITS *, int64_t);
    void (*bits_and)(TBITS *, const TBITS *, int64_t);
} FN(wino_kernels);

/* a hand-vectorised gather where winograd.c has one (WINO_GATHER_FAST_<ISA>,
 * returning 0 where it does not apply) */
#ifdef WINO_GATHER_FAST_AVX512
#define WINO_GATHER_FAST_avx512(...) WINO_GATHER_FAST_AVX512(__VA_ARGS__)
#else
#define WINO_GATHER_FAST_avx512(...) 0
#endif
#ifdef WINO_GATHER_FAST_AVX2
#define WINO_GATHER_FAST_avx2(...) WINO_GATHER_FAST_AVX2(__VA_ARGS__)
#else
#define WINO_GATHER_FAST_avx2(...) 0
#endif
#define WINO_GATHER_FAST_portable(...) 0
/* and one of two tile rows of the gradient straight into Z (WINO_GATHER_PAIR_Z_FAST_<ISA>) */
#ifdef WINO_GATHER_PAIR_Z_FAST_AVX512
#define WINO_GATHER_PAIR_Z_FAST_avx512(...) WINO_GATHER_PAIR_Z_FAST_AVX512(__VA_ARGS__)
#else
#define WINO_GATHER_PAIR_Z_FAST_avx512(...) 0
#endif
#ifdef WINO_GATHER_PAIR_Z_FAST_AVX2
#define WINO_GATHER_PAIR_Z_FAST_avx2(...) WINO_GATHER_PAIR_Z_FAST_AVX2(__VA_ARGS__)
#else
#define WINO_GATHER_PAIR_Z_FAST_avx2(...) 0
#endif
#define WINO_GATHER_PAIR_Z_FAST_portable(...) 0
/* and the output transform (WINO_OUTPUT_FAST_<ISA>: -1 where it does not apply) */
#ifdef WINO_OUTPUT_FAST_AVX512
#define WINO_OUTPUT_FAST_avx512(...) WINO_OUTPUT_FAST_AVX512(__VA_ARGS__)
#else
#define WINO_OUTPUT_FAST_avx512(...) (-1)
#endif
#define WINO_OUTPUT_FAST_avx2(...) (-1)
#define WINO_OUTPUT_FAST_portable(...) (-1)
/* and the data gradient's scatter (WINO_SCATTER_FAST_<ISA>: -1 where it does not apply) */
#ifdef WINO_SCATTER_FAST_AVX512
#define WINO_SCATTER_FAST_avx512(...) WINO_SCATTER_FAST_AVX512(__VA_ARGS__)
#else
#define WINO_SCATTER_FAST_avx512(...) (-1)
#endif
#ifdef WINO_SCATTER_FAST_AVX2
#define WINO_SCATTER_FAST_avx2(...) WINO_SCATTER_FAST_AVX2(__VA_ARGS__)
#else
#define WINO_SCATTER_FAST_avx2(...) (-1)
#endif
#define WINO_SCATTER_FAST_portable(...) (-1)
/* and one for two tile rows at once (WINO_GATHER_PAIR_FAST_<ISA>) */
#ifdef WINO_GATHER_PAIR_FAST_AVX512
#define WINO_GATHER_PAIR_FAST_avx512(...) WINO_GATHER_PAIR_FAST_AVX512(__VA_ARGS__)
#else
#define WINO_GATHER_PAIR_FAST_avx512(...) 0
#endif
#define WINO_GATHER_PAIR_FAST_avx2(...) 0
#define WINO_GATHER_PAIR_FAST_portable(...) 0
/* and one of two tile rows straight into V (WINO_GATHER_PAIR_BT_FAST_<ISA>) */
#ifdef WINO_GATHER_PAIR_BT_FAST_AVX512
#define WINO_GATHER_PAIR_BT_FAST_avx512(...) WINO_GATHER_PAIR_BT_FAST_AVX512(__VA_ARGS__)
#define WINO_GATHER_PAIR_BT_FITS_avx512(m, count) WINO_GATHER_PAIR_BT_FITS_AVX512(m, count)
#else
#define WINO_GATHER_PAIR_BT_FAST_avx512(...) 0
#define WINO_GATHER_PAIR_BT_FITS_avx512(m, count) 0
#endif
#define WINO_GATHER_PAIR_BT_FAST_avx2(...) 0
#define WINO_GATHER_PAIR_BT_FITS_avx2(m, count) 0
#define WINO_GATHER_PAIR_BT_FAST_portable(...) 0
#define WINO_GATHER_PAIR_BT_FITS_portable(m, count) 0

/* one instance of the transforms per tile size and ISA: the same loops,
 * vectorised by the compiler for that ISA's registers */
#define DEFINE_WINO_KERNELS(M, ISA, TARGET)                                                                   \
    TARGET static FNN_NO_LIBC_CALLS void FN(wino##M##_gather_input_##ISA)(                                    \
        T *dst, int64_t ls, int64_t count, const T *plane, const T *plane2, int64_t h, int64_t w, int64_t hi0,  \
        int64_t hi0_2, int64_t pad, T *buf)                                                                   \
    {                                                                                                         \
        const int64_t win = (M + 2) * w;                                                                      \
        const T *in = FN(wino_row_window)(plane, h, w, hi0, M + 2, buf + win);                                \
        FN(wino##M##_rows_bt_body)(in, w, buf, w, w);                                                         \
        if (plane2) {                                                                                         \
            T *buf2 = buf + 2 * win;                                                                          \
            const T *in2 = FN(wino_row_window)(plane2, h, w, hi0_2, M + 2, buf2 + win);                       \
            FN(wino##M##_rows_bt_body)(in2, w, buf2, w, w);                                                   \
            if (WINO_GATHER_PAIR_FAST_##ISA(M, dst, ls, count, buf, buf2, M + 2, w, 0, 0, pad, M + 2, M + 2)) \
                return;                                                                                       \
        }                                                                                                     \
        if (!WINO_GATHER_FAST_##ISA(M, dst, ls, count, buf, M + 2, w, 0, pad, M + 2, M + 2))                  \
            FN(wino_gather_body)(dst, ls, count, buf, M + 2, w, 0, pad, M, M + 2, M + 2);                     \
        if (plane2 && !WINO_GATHER_FAST_##ISA(M, dst + count, ls, count, buf + 2 * win, M + 2, w, 0, pad,     \
                                              M + 2, M + 2))                                                  \
            FN(wino_gather_body)(dst + count, ls, count, buf + 2 * win, M + 2, w, 0, pad, M, M + 2, M + 2);   \
    }                                                                                                         \
    TARGET static FNN_NO_LIBC_CALLS int FN(wino##M##_gather_v_##ISA)(                                         \
        T *out, int64_t ldp, int64_t count, const T *plane, const T *plane2, int64_t h, int64_t w, int64_t hi0,  \
        int64_t hi0_2, int64_t pad, T *buf)                                                                   \
    {                                                                                                         \
        if (!WINO_GATHER_PAIR_BT_FITS_##ISA(M, count))                                                        \
            return 0;                                                                                         \
        const int64_t win = (M + 2) * w;                                                                      \
        T *buf2 = plane2 ? buf + 2 * win : NULL;                                                              \
        FN(wino##M##_rows_bt_body)(FN(wino_row_window)(plane, h, w, hi0, M + 2, buf + win), w, buf, w, w);    \
        if (plane2)                                                                                           \
            FN(wino##M##_rows_bt_body)(FN(wino_row_window)(plane2, h, w, hi0_2, M + 2, buf2 + win), w, buf2,  \
                                       w, w);                                                                 \
        return WINO_GATHER_PAIR_BT_FAST_##ISA(M, out, ldp, count, buf, buf2, w, pad);                         \
    }                                                                                                         \
    TARGET static FNN_NO_LIBC_CALLS void FN(wino##M##_gather_grad_##ISA)(                                     \
        T *dst, int64_t ls, int64_t count, const T *plane, const T *plane2, int64_t h, int64_t w, int64_t hi0,  \
        int64_t hi0_2, int64_t pad)                                                                           \
    {                                                                                                         \
        if (plane2 && WINO_GATHER_PAIR_FAST_##ISA(M, dst, ls, count, plane, plane2, h, w, hi0, hi0_2, pad, M, M)) \
            return;                                                                                           \
        if (!WINO_GATHER_FAST_##ISA(M, dst, ls, count, plane, h, w, hi0, pad, M, M))                          \
            FN(wino_gather_body)(dst, ls, count, plane, h, w, hi0, pad, M, M, M);                             \
        if (plane2 && !WINO_GATHER_FAST_##ISA(M, dst + count, ls, count, plane2, h, w, hi0_2, pad, M, M))     \
            FN(wino_gather_body)(dst + count, ls, count, plane2, h, w, hi0_2, pad, M, M, M);                  \
    }                                                                                                         \
    TARGET static FNN_NO_LIBC_CALLS int FN(wino##M##_gather_z_##ISA)(                                         \
        T *out, int64_t ldp, int64_t count, const T *plane, const T *plane2, int64_t h, int64_t w, int64_t hi0,  \
        int64_t hi0_2)                                                                                        \
    {                                                                                                         \
        return WINO_GATHER_PAIR_Z_FAST_##ISA(M, out, ldp, count, plane, plane2, h, w, hi0, hi0_2);           \
    }                                                                                                         \
    TARGET static void FN(wino##M##_input_##ISA)(const T *d, int64_t ls, int64_t n, T *out, int64_t ldp)      \
    {                                                                                                         \
        FN(wino##M##_input_body)(d, ls, n, out, ldp);                                                         \
    }                                                                                                         \
    TARGET static void FN(wino##M##_grad_##ISA)(const T *e, T *tmp, int64_t ls, int64_t n, T *out, int64_t ldp)  \
    {                                                                                                         \
        FN(wino##M##_grad_body)(e, tmp, ls, n, out, ldp);                                                     \
    }                                                                                                         \
    TARGET static void FN(wino##M##_adjoint_##ISA)(const T *dv, int64_t ldp, int64_t n, T *tmp, T *out,       \
                                                   int64_t ls)                                                \
    {                                                                                                         \
        FN(wino##M##_adjoint_body)(dv, ldp, n, tmp, out, ls);                                                 \
    }                                                                                                         \
    TARGET static FNN_NO_LIBC_CALLS int FN(wino##M##_scatter_##ISA)(const T *dd, int64_t ls, int64_t count,   \
                                                                    T *plane, T *seam, int64_t h, int64_t w,  \
                                                                    int64_t row0, int64_t pad, int add_rows,  \
                                                                    T *rb)                                    \
    {                                                                                                         \
        const int fast = WINO_SCATTER_FAST_##ISA(M, dd, ls, count, plane, seam, h, w, row0, pad, add_rows);   \
        if (fast >= 0)                                                                                        \
            return fast;                                                                                      \
        return FN(wino_scatter_body)(dd, ls, count, plane, seam, h, w, row0, pad, M, add_rows, rb,            \
                                     FN(all_finite_##ISA));                                                   \
    }                                                                                                         \
    TARGET static int FN(wino##M##_output_##ISA)(const T *m, int64_t ldp, int64_t len, int64_t tb, T *tmp, T *o) \
    {                                                                                                         \
        const int fast = WINO_OUTPUT_FAST_##ISA(M, m, ldp, len, tb, o);                                       \
        if (fast >= 0)                                                                                        \
            return fast;                                                                                      \
        FN(wino##M##_output_body)(m, ldp, len, tmp, o);                                                       \
        int finite = 1; /* the tiles' outputs, not the lanes past them */                                    \
        for (int q = 0; q < M; q++)                                                                           \
            finite &= FN(all_finite_##ISA)(o + q * M * len, M * tb);                                          \
        return finite;                                                                                        \
    }
#define DEFINE_WINO_BITS(ISA, TARGET)                                                                         \
    TARGET static void FN(wino_bits_or_##ISA)(TBITS *FNN_RESTRICT dst, const TBITS *FNN_RESTRICT src, int64_t len) \
    {                                                                                                         \
        for (int64_t i = 0; i < len; i++)                                                                     \
            dst[i] |= src[i];                                                                                 \
    }                                                                                                         \
    TARGET static void FN(wino_bits_and_##ISA)(TBITS *FNN_RESTRICT dst, const TBITS *FNN_RESTRICT src, int64_t len) \
    {                                                                                                         \
        for (int64_t i = 0; i < len; i++)                                                                     \
            dst[i] &= src[i];                                                                                 \
    }
#define DEFINE_WINO_COPY(ISA, TARGET)                                                                         \
    TARGET static FNN_NO_LIBC_CALLS void FN(wino_copy_##ISA)(T *y, const T *o, int64_t orow, int m, int64_t tw, \
                                                             int64_t th, int64_t f, int64_t oh, int64_t ow,     \
                                                             int64_t fi, int64_t r0, int64_t nr)                \
    {                                                                                                         \
        FN(wino_copy_body)(y, o, orow, m, tw, th, f, oh, ow, fi, r0, nr);                                     \
    }
#define WINO_KERNELS(M, ISA)                                                                                  \
    (FN(wino_kernels))                                                                                        \
    {                                                                                                         \
        FN(wino##M##_gather_input_##ISA), FN(wino##M##_gather_grad_##ISA), FN(wino##M##_gather_z_##ISA),      \
            FN(wino##M##_gather_v_##ISA),                                                                     \
            FN(wino##M##_input_##ISA),                                                                        \
            FN(wino##M##_grad_##ISA), FN(wino##M##_output_##ISA), FN(wino_copy_##ISA),                        \
            FN(wino##M##_adjoint_##ISA), FN(wino##M##_scatter_##ISA), FN(wino_bits_or_##ISA),                \
            FN(wino_bits_and_##ISA)                                                                           \
    }

DEFINE_WINO_KERNELS(2, portable, )
DEFINE_WINO_KERNELS(4, portable, )
DEFINE_WINO_COPY(portable, )
DEFINE_WINO_BITS(portable, )
#if FNN_X86_SIMD
DEFINE_WINO_KERNELS(2, avx2, FNN_TARGET_AVX2)
DEFINE_WINO_KERNELS(4, avx2, FNN_TARGET_AVX2)
DEFINE_WINO_COPY(avx2, FNN_TARGET_AVX2)
DEFINE_WINO_BITS(avx2, FNN_TARGET_AVX2)
DEFINE_WINO_KERNELS(2, avx512, FNN_TARGET_AVX512)
DEFINE_WINO_KERNELS(4, avx512, FNN_TARGET_AVX512)
DEFINE_WINO_COPY(avx512, FNN_TARGET_AVX512)
DEFINE_WINO_BITS(avx512, FNN_TARGET_AVX512)
#endif
#undef DEFINE_WINO_KERNELS
#undef DEFINE_WINO_COPY
#undef DEFINE_WINO_BITS
#undef WINO_GATHER_FAST_avx512
#undef WINO_GATHER_FAST_avx2
#undef WINO_GATHER_FAST_portable
#undef WINO_SCATTER_FAST_avx512
#undef WINO_SCATTER_FAST_avx2
#undef WINO_SCATTER_FAST_portable
#undef WINO_OUTPUT_FAST_avx512
#undef WINO_OUTPUT_FAST_avx2
#undef WINO_OUTPUT_FAST_portable
#undef WINO_GATHER_PAIR_Z_FAST_avx512
#undef WINO_GATHER_PAIR_Z_FAST_avx2
#undef WINO_GATHER_PAIR_Z_FAST_portable
#undef WINO_GATHER_PAIR_FAST_avx512
#undef WINO_GATHER_PAIR_FAST_avx2
#undef WINO_GATHER_PAIR_FAST_portable
#undef WINO_GATHER_PAIR_BT_FAST_avx512
#undef WINO_GATHER_PAIR_BT_FAST_avx2
#undef WINO_GATHER_PAIR_BT_FAST_portable
#undef WINO_GATHER_PAIR_BT_FITS_avx512
#undef WINO_GATHER_PAIR_BT_FITS_avx2
#undef WINO_GATHER_PAIR_BT_FITS_portable

/* the transforms of tile size m (2 or 4) for this ISA */
static FN(wino_kernels) FN(wino_select)(int isa, int m)
{
#if FNN_X86_SIMD
    if (isa >= FNN_ISA_AVX512)
        return m == 4 ? WINO_KERNELS(4, avx512) : WINO_KERNELS(2, avx512);
    if (isa >= FNN_ISA_AVX2)
        return m == 4 ? WINO_KERNELS(4, avx2) : WINO_KERNELS(2, avx2);
#else
    (void)isa;
#endif
    return m == 4 ? WINO_KERNELS(4, portable) : WINO_KERNELS(2, portable);
}
#undef WINO_KERNELS

/* ---- filter transforms (once per call) ----------------------------------- */

/* U for the forward's products, packed as MR-row micro-panels over the depth
 * C: up[p * f_alloc * c + (fi / MR) * c * MR + ci * MR + fi % MR] = (G g G^T)[p]
 * for the filter g = wt[fi, ci] of the output channel fi (zero for fi >= f, up
 * to f_alloc), one panel of MR filters (from fp) at a time. In double: G's 1/6
 * and 1/24 are not exact in float. The panel's filters are the vector lanes
 * (compiled for each ISA), so each position's MR values are stored together,
 * straight into the packed layout: a separate pack of a plain U read it 36
 * times over with a stride of 36 (with the baseline build's transform, 56% of
 * a 1 x 64 x 14 x 14 -> 64 forward), and lanes over channels needed scatters. */
static FNN_ALWAYS_INLINE void FN(wino_filter_pack_body)(const T *wt, int64_t fp, int64_t f, int64_t c, int m,
                                                        int mr, int64_t f_alloc, T *up)
{
    const int a = m + 2;
    const double *G = wino_G(m);
    const int64_t slab = f_alloc * c;
    const int live = f - fp < mr ? (int)(f - fp) : mr;
    T *base = up + fp * c;
    for (int64_t ci = 0; ci < c; ci++) {
        double gk[9][16], gg[6][3][16];
        for (int i = 0; i < mr; i++) {
            const T *gi = wt + ((fp + i) * c + ci) * 9;
            for (int e = 0; e < 9; e++)
                gk[e][i] = i < live ? (double)gi[e] : 0.0;
        }
        for (int r = 0; r < a; r++)
            for (int k = 0; k < 3; k++) {
                const double g0 = G[3 * r], g1 = G[3 * r + 1], g2 = G[3 * r + 2];
                FNN_SIMD_LOOP
                for (int i = 0; i < mr; i++)
                    gg[r][k][i] = g0 * gk[k][i] + g1 * gk[3 + k][i] + g2 * gk[6 + k][i];
            }
        for (int r = 0; r < a; r++)
            for (int j = 0; j < a; j++) {
                T *FNN_RESTRICT dst = base + (a * r + j) * slab + ci * mr;
                const double g0 = G[3 * j], g1 = G[3 * j + 1], g2 = G[3 * j + 2];
                FNN_SIMD_LOOP
                for (int i = 0; i < mr; i++)
                    dst[i] = (T)(gg[r][0][i] * g0 + gg[r][1][i] * g1 + gg[r][2][i] * g2);
            }
    }
}

/* AVX2's panel height (6 rows) as a constant: its lane loops then take whole
 * vectors (1x64x28x28 -> 64 forward 0.40 -> 0.34 ms); AVX-512's 8 gained nothing */
#define DEFINE_WINO_FILTER_PACK(ISA, TARGET)                                                                  \
    TARGET static void FN(wino_filter_pack_##ISA)(const T *wt, int64_t fp, int64_t f, int64_t c, int m, int mr, \
                                                  int64_t f_alloc, T *up)                                     \
    {                                                                                                         \
        if (mr == 6)                                                                                          \
            FN(wino_filter_pack_body)(wt, fp, f, c, m, 6, f_alloc, up);                                       \
        else                                                                                                  \
            FN(wino_filter_pack_body)(wt, fp, f, c, m, mr, f_alloc, up);                                      \
    }
DEFINE_WINO_FILTER_PACK(portable, )
#if FNN_X86_SIMD
DEFINE_WINO_FILTER_PACK(avx2, FNN_TARGET_AVX2)
DEFINE_WINO_FILTER_PACK(avx512, FNN_TARGET_AVX512)
#endif
#undef DEFINE_WINO_FILTER_PACK

static void FN(wino_filter_pack)(int isa, const T *wt, int64_t fp, int64_t f, int64_t c, int m, int mr,
                                 int64_t f_alloc, T *up)
{
#if FNN_X86_SIMD
    if (isa >= FNN_ISA_AVX512) {
        FN(wino_filter_pack_avx512)(wt, fp, f, c, m, mr, f_alloc, up);
        return;
    }
    if (isa >= FNN_ISA_AVX2) {
        FN(wino_filter_pack_avx2)(wt, fp, f, c, m, mr, f_alloc, up);
        return;
    }
#endif
    (void)isa;
    FN(wino_filter_pack_portable)(wt, fp, f, c, m, mr, f_alloc, up);
}

/* dw[fi, ci] = G^T dU G for the output channel fi from du[p * ps + fi * ld + ci],
 * or du[p * ps + ci * ld + fi] with each dU[p] transposed (C x F) when
 * `transposed`; in double, 16 channels at a time along the innermost loops so
 * that they vectorise */
static void FN(wino_filter_grad)(const T *du, int64_t ps, int64_t ld, int64_t fi, int64_t c, int m, int transposed,
                                 T *dw)
{
    const int a = m + 2;
    const double *G = wino_G(m);
    const int64_t fc = ps, step = transposed ? ld : 1;
    for (int64_t c0 = 0; c0 < c; c0 += 16) {
        const int cb = c - c0 < 16 ? (int)(c - c0) : 16;
        const T *src = du + (transposed ? c0 * ld + fi : fi * ld + c0);
        double rows[3][6][16] = {{{0}}};
        for (int i = 0; i < a; i++)
            for (int j = 0; j < a; j++) {
                const T *v = src + (a * i + j) * fc;
                for (int k = 0; k < 3; k++) {
                    const double gik = G[3 * i + k];
                    for (int q = 0; q < cb; q++)
                        rows[k][j][q] += gik * (double)v[q * step];
                }
            }
        for (int k = 0; k < 3; k++)
            for (int l = 0; l < 3; l++) {
                double sum[16] = {0};
                for (int j = 0; j < a; j++) {
                    const double gjl = G[3 * j + l];
                    for (int q = 0; q < cb; q++)
                        sum[q] += rows[k][j][q] * gjl;
                }
                for (int q = 0; q < cb; q++)
                    dw[(fi * c + c0 + q) * 9 + 3 * k + l] = (T)sum[q];
            }
    }
}

/* ---- blocks of tile rows -------------------------------------------------- */

/* Elements of the per-thread row scratch: the output transform's m rows of
 * m * len and its a*m temporaries; the gathered input tiles (a*a lane arrays)
 * and the input gather's four windows of a image rows, or the gradient's
 * gathered tiles and temporaries (m*m + a*m lane arrays) */
static int64_t FN(wino_rows_elems)(const fnn_wino_geom *g)
{
    const int64_t out = (g->m * g->m + g->m * g->a) * (g->block_rows * g->tw + FNN_WINO_LANES);
    const int64_t in = g->np * g->ldb + 4 * g->a * g->w;
    const int64_t grad = (g->m * g->m + g->m * g->a) * g->ldb;
    const int64_t most = out > in ? out : in;
    return most > grad ? most : grad;
}

/* ... and of the data gradient's: the adjoint's output and temporaries (a*a
 * lane arrays each), then a row of the scatter */
static int64_t FN(wino_adjoint_elems)(const fnn_wino_geom *g)
{
    return 2 * g->np * g->ldb + g->m * g->tw + g->a + FNN_WINO_LANES;
}

/* Rows [hi0, hi0 + rows) of a plane (h x w), clipped to it, towards L1. A
 * block reads each channel's rows of a few tile rows, one plane after another,
 * and conv D's and E's inputs do not stay in the caches between passes: the
 * gathers waited on memory (the check of the inputs for inf and NaN, a pass
 * over them before the transforms, had hidden that). The next channel's rows
 * are asked for while this channel's are gathered: conv E's forward + backward
 * on one thread 1-2% faster than with the old check, 7-9% while other guests
 * load the memory. */
static inline void FN(wino_prefetch_rows)(const T *plane, int64_t h, int64_t w, int64_t hi0, int64_t rows)
{
    const int64_t lo = hi0 < 0 ? 0 : hi0, hi = hi0 + rows > h ? h : hi0 + rows;
    const char *end = (const char *)(plane + hi * w);
    for (const char *p = (const char *)((uintptr_t)(plane + lo * w) & ~(uintptr_t)63); p < end; p += 64)
        __builtin_prefetch(p, 0, 3);
}

/* Which outputs of the tile rows [r0, r0 + nr) have a 3 x 3 window of zeros in
 * every channel (or outside the image). The direct sum gives such an output
 * exactly 0 (then the bias and activation); Winograd's transforms leave a
 * rounding residue there, of the size of the tile's largest output (1e-16 in
 * float64), which a ReLU then lets through where the direct sum gives 0: images
 * with empty borders and dead units (the book's DeepConvNet on MNIST) took other
 * bias gradients on their first step. Two steps: wino_zero_or ORs the bits of
 * channel ci's input rows into `ored` (-0 counts as 0, as in the sum) right after
 * the gathers have read them, from the cache (a pass of its own over x waited
 * on memory: 8% of conv E's forward); wino_zero_keep then makes keep, all zero
 * bits for such outputs and all ones for the others, laid out as the output
 * transform's rows (keep[q * orow + m * r * tw + col]), to AND them with. The
 * block's tile rows go in runs of one image each, whose input rows are one
 * stretch of each channel's plane; ored holds each run's rows, w apart, one run
 * after another. */
static void FN(wino_zero_or)(const FN(wino_kernels) *k, const fnn_wino_geom *g, const T *x, int64_t r0, int64_t nr,
                             int64_t ci, TBITS *ored)
{
    const int64_t w = g->w, plane = g->h * g->w;
    for (int64_t r = 0; r < nr;) {
        const wino_run u = wino_run_at(g, r0, r, nr);
        if (u.hi > u.lo)
            k->bits_or(ored + (u.lo - u.first) * w, (const TBITS *)(x + (u.ni * g->c + ci) * plane + u.lo * w),
                       (u.hi - u.lo) * w);
        ored += u.count * w;
        r += u.run;
    }
}

/* Whether an input inside the image, in the rows wino_zero_or has ORed so far,
 * is 0 in every channel ORed: if none is, no window can be all zero (each holds
 * an input inside the image, pads being at most 2), and the rest of the
 * channels need not be ORed. */
static int FN(wino_zero_any)(const fnn_wino_geom *g, int64_t r0, int64_t nr, const TBITS *ored)
{
    const int64_t w = g->w;
    const TBITS magnitude = ~((TBITS)1 << (8 * sizeof(TBITS) - 1));
    for (int64_t r = 0; r < nr;) {
        const wino_run u = wino_run_at(g, r0, r, nr);
        TBITS all = ~(TBITS)0;
        for (int64_t i = (u.lo - u.first) * w; i < (u.hi - u.first) * w; i++)
            all &= -(TBITS)((ored[i] & magnitude) != 0);
        if (!all)
            return 1;
        ored += u.count * w;
        r += u.run;
    }
    return 0;
}

/* Returns 0 when no output of the block has an all-zero window (nothing to mask);
 * span[2 * q] and the next are the first and one past the last offset from
 * q * orow of output row q's values (its tile rows one after another, m * tw
 * apart) with such a window (equal: none), so that a filter's outputs are masked
 * there only, in one stretch a row (keep is all ones between the row's ow values
 * and the next tile row's). scratch: a padded row (w + 4) and a run's rows'
 * column ORs. */
static int FN(wino_zero_keep)(const fnn_wino_geom *g, int64_t r0, int64_t nr, int64_t orow, const TBITS *ored,
                              TBITS *keep, int64_t *span, TBITS *scratch)
{
    const int m = g->m;
    const int64_t w = g->w, ow = g->ow;
    const TBITS magnitude = ~((TBITS)1 << (8 * sizeof(TBITS) - 1));
    TBITS *FNN_RESTRICT padded = scratch, *hrows = scratch + w + 4;
    TBITS zero_seen = 0;
    padded[0] = padded[1] = padded[w + 2] = padded[w + 3] = 0; /* pads are at most 2 */
    for (int q = 0; q < m; q++)
        span[2 * q] = span[2 * q + 1] = 0;
    for (int64_t r = 0; r < nr;) {
        const wino_run u = wino_run_at(g, r0, r, nr);
        const int64_t ty0 = u.ty0, run = u.run, count = u.count;
        /* each row's three columns per output: input columns col - pw + j */
        for (int64_t i = 0; i < count; i++) {
            for (int64_t col = 0; col < w; col++)
                padded[2 + col] = ored[i * w + col] & magnitude;
            const TBITS *left = padded + 2 - g->pw;
            TBITS *FNN_RESTRICT hrow = hrows + i * ow;
            for (int64_t col = 0; col < ow; col++)
                hrow[col] = left[col] | left[col + 1] | left[col + 2];
        }
        for (int64_t t = 0; t < run; t++)
            for (int q = 0; q < m; q++) {
                TBITS *FNN_RESTRICT kr = keep + q * orow + m * (r + t) * g->tw;
                const TBITS *h0 = hrows + (m * t + q) * ow, *h1 = h0 + ow, *h2 = h1 + ow;
                TBITS all = ~(TBITS)0;
                for (int64_t col = 0; col < ow; col++) {
                    kr[col] = -(TBITS)((h0[col] | h1[col] | h2[col]) != 0);
                    all &= kr[col];
                }
                for (int64_t col = ow; col < m * g->tw; col++)
                    kr[col] = ~(TBITS)0;
                if (!all && m * (ty0 + t) + q < g->oh) { /* a part tile's rows past the image are not outputs */
                    int64_t first = 0, last = ow;
                    while (first < ow && kr[first])
                        first++;
                    while (last > first && kr[last - 1])
                        last--;
                    const int64_t at = m * (r + t) * g->tw;
                    if (first < last) {
                        if (span[2 * q] == span[2 * q + 1])
                            span[2 * q] = at + first;
                        span[2 * q + 1] = at + last;
                        zero_seen = 1;
                    }
                }
            }
        ored += count * w;
        r += run;
    }
    return zero_seen != 0;
}

/* Where the zero-window mask's scratch lies, in TBITS from its start, one after another:
 * keep (m * orow) at 0, the ORed rows of the block's runs (runs of m * run + 2 rows: at
 * most m + 2 per tile row), the spans (int64 pairs; m + 2 and len are even, so they are
 * 8-byte aligned for float too), then wino_zero_keep's scratch (a padded row and a
 * run's column ORs); total: the elements of all. */
static wino_zero_layout FN(wino_zero_layout_of)(const fnn_wino_geom *g)
{
    const int64_t len = (g->block_rows * g->tw + FNN_WINO_LANES - 1) / FNN_WINO_LANES * FNN_WINO_LANES;
    wino_zero_layout z;
    z.ored = g->m * g->m * len;
    z.ored_elems = (g->m + 2) * g->block_rows * g->w;
    z.span = z.ored + z.ored_elems;
    z.scratch = z.span + 2 * g->m * (int64_t)(sizeof(int64_t) / sizeof(TBITS));
    z.total = z.scratch + (g->w + 4) + (g->m * g->block_rows + 2) * g->ow;
    return z;
}

/* V of the tile rows [r0, r0 + nr): v[ci * wino_chan + p * ldb + (r - r0) * tw + tx],
 * for the lanes up to the products' last NR-wide panel (zero past the tiles) */
static void FN(wino_input_block)(const FN(wino_kernels) *k, const fnn_wino_geom *g, const T *x, int64_t r0,
                                 int64_t nr, T *v, T *rows, TBITS *ored, int *zeros)
{
    const int64_t ls = g->ldb, tb = nr * g->tw, nv = (tb + g->nr - 1) / g->nr * g->nr;
    /* the gathers' stores past the last tile reach lane tb + FNN_WINO_GATHER_SLACK */
    const int64_t spill = tb + FNN_WINO_GATHER_SLACK < nv ? tb + FNN_WINO_GATHER_SLACK : nv;
    T *d = rows, *window = rows + g->np * ls;
    for (int p = 0; p < g->np; p++)
        for (int64_t l = spill; l < nv; l++)
            d[p * ls + l] = 0;
    const int64_t plane = g->h * g->w, ldp = g->ldb;
    /* straight into V where this ISA gathers so (known after the first call) */
    int straight = 1;
    for (int64_t ci = 0; ci < g->c; ci++) {
        T *vc = v + ci * wino_chan(g);
        /* image and tile row of the block's tile row r, stepped along (no divisions) */
        int64_t ni = r0 / g->th, ty = r0 % g->th;
        for (int64_t r = 0; r < nr; r += 2) { /* two tile rows a call */
            const int64_t ni2 = ty + 1 == g->th ? ni + 1 : ni, ty2 = ty + 1 == g->th ? 0 : ty + 1;
            if (ci + 1 < g->c) {
                /* a tile row reads a = m + 2 rows, the first m of them its own */
                FN(wino_prefetch_rows)(x + (ni * g->c + ci + 1) * plane, g->h, g->w, g->m * ty - g->ph,
                                       ty + 1 == g->th || r + 1 == nr ? g->a : g->m);
                if (r + 1 < nr)
                    FN(wino_prefetch_rows)(x + (ni2 * g->c + ci + 1) * plane, g->h, g->w, g->m * ty2 - g->ph,
                                           ty2 + 1 == g->th || r + 2 == nr ? g->a : g->m);
            }
            const T *pa = x + (ni * g->c + ci) * plane, *pb = r + 1 < nr ? x + (ni2 * g->c + ci) * plane : NULL;
            if (straight)
                straight = k->gather_v(vc + r * g->tw, ldp, g->tw, pa, pb, g->h, g->w, g->m * ty - g->ph,
                                       g->m * ty2 - g->ph, g->pw, window);
            if (!straight)
                k->gather_input(d + r * g->tw, ls, g->tw, pa, pb, g->h, g->w, g->m * ty - g->ph, g->m * ty2 - g->ph,
                                g->pw, window);
            ni = ty2 + 1 == g->th ? ni2 + 1 : ni2;
            ty = ty2 + 1 == g->th ? 0 : ty2 + 1;
        }
        if (ored && *zeros) {
            FN(wino_zero_or)(k, g, x, r0, nr, ci, ored);
            /* after 1, 2, 4, 8, ... channels: random data has no zero left after the first,
             * a ReLU's output (half zeros) none after a few */
            if ((ci & (ci + 1)) == 0)
                *zeros = FN(wino_zero_any)(g, r0, nr, ored);
        }
        if (straight) { /* V's lanes past the tiles up to the last panel: zero, as below */
            for (int p = 0; p < g->np; p++)
                for (int64_t l = tb; l < nv; l++)
                    vc[p * ldp + l] = 0;
            continue;
        }
        for (int p = 0; p < g->np; p++)
            for (int64_t l = tb; l < spill; l++)
                d[p * ls + l] = 0;
        k->input(d, ls, nv, vc, ldp);
    }
}

/* Z of the gradient dy (n, f, oh, ow) for the tile rows [r0, r0 + nr), laid out as V */
static void FN(wino_grad_block)(const FN(wino_kernels) *k, const fnn_wino_geom *g, const T *dy, int64_t r0,
                                int64_t nr, T *z, T *rows)
{
    const int64_t ls = g->ldb, tb = nr * g->tw;
    T *e = rows, *tmp = rows + g->m * g->m * ls;
    const int64_t plane = g->oh * g->ow;
    /* straight into Z where this ISA gathers so (known after the first call) */
    int straight = 1;
    for (int64_t fi = 0; fi < g->f; fi++) {
        T *zf = z + fi * wino_chan(g);
        int64_t ni = r0 / g->th, ty = r0 % g->th;
        for (int64_t r = 0; r < nr; r += 2) {
            const int64_t ni2 = ty + 1 == g->th ? ni + 1 : ni, ty2 = ty + 1 == g->th ? 0 : ty + 1;
            if (fi + 1 < g->f) {
                FN(wino_prefetch_rows)(dy + (ni * g->f + fi + 1) * plane, g->oh, g->ow, g->m * ty, g->m);
                if (r + 1 < nr)
                    FN(wino_prefetch_rows)(dy + (ni2 * g->f + fi + 1) * plane, g->oh, g->ow, g->m * ty2, g->m);
            }
            const T *pa = dy + (ni * g->f + fi) * plane, *pb = r + 1 < nr ? dy + (ni2 * g->f + fi) * plane : NULL;
            if (straight)
                straight = k->gather_z(zf + r * g->tw, g->ldb, g->tw, pa, pb, g->oh, g->ow, g->m * ty, g->m * ty2);
            if (!straight)
                k->gather_grad(e + r * g->tw, ls, g->tw, pa, pb, g->oh, g->ow, g->m * ty, g->m * ty2, 0);
            ni = ty2 + 1 == g->th ? ni2 + 1 : ni2;
            ty = ty2 + 1 == g->th ? 0 : ty2 + 1;
        }
        if (!straight)
            k->grad(e, tmp, ls, tb, zf, g->ldb);
    }
}

#include "ukr_select_template.h"

/* The forward's products: U packed once as MR-row micro-panels over the depth C
 * (up[p * f_alloc * c + (fi / MR) * c * MR + ci * MR + fi % MR], zero rows up to
 * f_alloc), shared by the threads. */
typedef struct {
    const T *up;
    int64_t f_alloc;
    int mr, nr;
    FN(ukri_fn) ukr; /* the indirect-B microkernel: it reads V in place, no packing of B */
    FN(ukri_fn) half; /* its NR/2-wide variant, for a last panel of at most NR/2 tiles; may be NULL */
} FN(wino_products);

/* whether the products' panel from lane j of tb runs the half-width kernel */
static inline int FN(wino_half_panel)(const FN(wino_products) *pr, int64_t tb, int64_t j)
{
    return pr->half && 2 * (tb - j) <= pr->nr;
}

/* the lanes the products compute at a time: a panel of NR, or NR/2 where the
 * ISA has the half-width kernel (the granularity of wino_geom's block search) */
static inline int FN(wino_panel_lanes)(const FN(wino_products) *pr)
{
    return pr->half ? pr->nr / 2 : pr->nr;
}

/* The products of position p over a block's tb lanes: out[p] (f_alloc x tb) =
 * U[p] (f_alloc x depth) @ in[p] (depth x tb), rows of in and out laid out as
 * V's. Lanes past tb, up to the next multiple of NR or NR/2 (within ldb), are
 * computed and ignored: in's must be finite. */
static void FN(wino_products_at)(const FN(wino_products) *pr, const fnn_wino_geom *g, int p, int64_t depth,
                                 const T *in, T *out, int64_t tb, const T **brow)
{
    const int64_t chan = wino_chan(g);
    for (int64_t d = 0; d < depth; d++)
        brow[d] = in + d * chan + p * g->ldb;
    const T *up = pr->up + p * pr->f_alloc * depth;
    T *op = out + p * g->ldb;
    for (int64_t j = 0; j < tb; j += pr->nr) {
        const FN(ukri_fn) ukr = FN(wino_half_panel)(pr, tb, j) ? pr->half : pr->ukr;
        for (int64_t fp = 0; fp < pr->f_alloc; fp += pr->mr)
            ukr(depth, up + fp * depth, brow, j, op + fp * chan + j, chan, (T)1, (T)0);
    }
}

/* the products' kernels and U's packing for this ISA and dtype, for f_alloc rows */
static void FN(wino_products_init)(FN(wino_products) *pr, int isa, int64_t rows, const T *up)
{
    fnn_gemm_tile_shape(isa, (int)sizeof(T), &pr->mr, &pr->nr);
    FN(ukri_rows_fn) unused_rows; /* U's zero rows pad its rows up to MR: full tiles only */
    pr->ukr = FN(select_ukri)(isa, &unused_rows);
    pr->half = FN(select_ukri_half)(isa);
    pr->f_alloc = (rows + pr->mr - 1) / pr->mr * pr->mr;
    pr->up = up;
}

/* Filter fi's output rows of the block's tile rows (row q of tile row r at o +
 * q * orow + m * r * tw) max-pooled 2x2 with stride 2 into yp and am (indices
 * into the convolution's output plane, as max_pool2d gives): each run of tile
 * rows of one image is copied into strip as rows of ow and pooled by the plane
 * kernel, whose indices count from the strip's first row. A tile has an even
 * number of rows, so every window lies in one run. */
static void FN(wino_pool_block)(int isa, const fnn_wino_geom *g, const T *o, int64_t orow, int64_t fi, int64_t r0,
                                int64_t nr, T *strip, int64_t *wide, T *yp, int32_t *am)
{
    const int m = g->m;
    const int64_t ow = g->ow, poh = g->oh / 2, pow_ = ow / 2;
    for (int64_t r = 0; r < nr;) {
        const int64_t ni = (r0 + r) / g->th, ty = (r0 + r) % g->th;
        const int64_t run = g->th - ty < nr - r ? g->th - ty : nr - r;
        const int64_t row0 = m * ty;
        const int64_t rows = row0 + m * run > g->oh ? g->oh - row0 : m * run;
        for (int64_t q = 0; q < rows; q++)
            memcpy(strip + q * ow, o + (q % m) * orow + m * (r + q / m) * g->tw, (size_t)ow * sizeof(T));
        if (rows >= 2) {
            const int64_t off = (ni * g->f + fi) * poh * pow_ + row0 / 2 * pow_, pooled = rows / 2 * pow_;
            FN(fnn_max_pool2d_plane_i32)(isa, strip, yp + off, am + off, wide, rows, ow, 2, 2, 2, 2, 0, 0);
            const int32_t shift = (int32_t)(row0 * ow);
            for (int64_t i = 0; i < pooled; i++)
                am[off + i] += shift;
        }
        r += run;
    }
}

/* y for the tile rows [r0, r0 + nr): transformed input, a*a products, output
 * transform with the fused bias and activation, then the rows copied to y or,
 * with am, pooled into y and am. Returns 0 where an output
 * before the epilogue is not finite (see fnn_winograd_conv2d). */
static int FN(wino_forward_block)(const FN(wino_kernels) *k, const FN(wino_products) *pr, const fnn_wino_geom *g,
                                   int isa, const T *x, int64_t r0, int64_t nr, const T *bias, int act,
                                   double act_alpha, T *y, T *v, T *m, T *rows, const T **brow, T *strip,
                                   int64_t *wide, int32_t *am, TBITS *zero_base)
{
    const int64_t tb = nr * g->tw, c = g->c, f = g->f, ldb = g->ldb;
    const wino_zero_layout z = FN(wino_zero_layout_of)(g);
    TBITS *keep = zero_base, *ored = zero_base + z.ored;
    memset(ored, 0, (size_t)z.ored_elems * sizeof(TBITS));
    int zeros = 1;
    FN(wino_input_block)(k, g, x, r0, nr, v, rows, ored, &zeros);
    for (int p = 0; p < g->np; p++)
        FN(wino_products_at)(pr, g, p, c, v, m, tb, brow);
    /* the output transform, bias and activation over all the block's lanes at
     * once (one call each per filter: per tile row they would cost more in calls
     * than in work), then the rows copied to y */
    const int64_t len = (tb + FNN_WINO_LANES - 1) / FNN_WINO_LANES * FNN_WINO_LANES;
    /* it reads M's lanes up to len and ignores those past tb; where the last
     * panel (NR/2 or NR wide: 8 or 4 lanes in float64 or on AVX2) stopped short
     * of len, zeros, so that nothing uninitialised is read */
    const int64_t last = (tb - 1) / pr->nr * pr->nr;
    const int64_t written = last + (FN(wino_half_panel)(pr, tb, last) ? pr->nr / 2 : pr->nr);
    if (written < len)
        for (int64_t fi = 0; fi < f; fi++)
            for (int p = 0; p < g->np; p++)
                memset(m + fi * wino_chan(g) + p * ldb + written, 0, (size_t)(len - written) * sizeof(T));
    const int64_t orow = g->m * len; /* output row q of the block's tiles at o + q * orow */
    T *o = rows, *tmp = rows + g->m * orow;
    const int epilogue = bias != NULL || act != FNN_ACT_IDENTITY;
    int64_t *span = (int64_t *)(zero_base + z.span);
    const int masked = zeros && FN(wino_zero_keep)(g, r0, nr, orow, ored, keep, span, zero_base + z.scratch);
    int finite = 1;
    for (int64_t fi = 0; fi < f; fi++) {
        finite &= k->output(m + fi * wino_chan(g), ldb, len, tb, tmp, o);
        if (masked) /* the direct sum's exact zeros where every input of the window is 0 */
            for (int q = 0; q < g->m; q++)
                if (span[2 * q] < span[2 * q + 1])
                    k->bits_and((TBITS *)(o + q * orow) + span[2 * q], keep + q * orow + span[2 * q],
                                span[2 * q + 1] - span[2 * q]);
        if (epilogue)
            FN(fnn_bias_act)(isa, o, 0, o, 0, NULL, bias ? bias + fi : NULL, 0, 1, g->m * orow, act, act_alpha);
        if (am)
            FN(wino_pool_block)(isa, g, o, orow, fi, r0, nr, strip, wide, y, am);
        else
            k->copy(y, o, orow, g->m, g->tw, g->th, f, g->oh, g->ow, fi, r0, nr);
    }
    return finite;
}


/* Returns 1 (y then holds garbage) where an output before the epilogue is not
 * finite: inside a tile inf - inf = NaN, or inf * 0, where the direct sum gives
 * inf or a number, and the transforms can overflow where it does not, so the
 * caller takes another path. Checking the outputs suffices: the transforms and
 * the products pass a non-finite input on to every output that depends on it
 * (B, A and G have no zero rows, and a product of inf and 0 is NaN), and each
 * input inside the image reaches an output inside it; the outputs are in L1
 * here, where a check of the inputs read all of x once more (2% of conv E).
 * y is the convolution's output or, with am, its 2x2 stride-2 max pooling (am
 * its indices). */
static int FN(wino_conv2d_run)(fnn_ctx ctx, int tile, const T *x, int64_t n, int64_t c, int64_t h, int64_t w,
                               const T *wt, int64_t f, const T *bias, int64_t ph, int64_t pw, int act,
                               double act_alpha, T *y, int32_t *am)
{
    const int isa = fnn_isa_of(ctx);
    int nth = fnn_team_of(ctx);
    FN(wino_products) pr;
    FN(wino_products_init)(&pr, isa, f, NULL);
    const fnn_wino_geom g = wino_geom(tile, n, c, h, w, f, ph, pw, (int64_t)sizeof(T), pr.nr,
                                      FN(wino_panel_lanes)(&pr), nth);
    if (n == 0)
        return 0;
    /* the calling thread's scratch (a fresh allocation of this size would cost a
     * page fault every 4 KiB on every call); no other path holds this slot now */
    T *up = (T *)fnn_scratch(FNN_SCRATCH_CONV_W, (size_t)(g.np * pr.f_alloc * c) * sizeof(T));
    if (!up)
        return -1;
    pr.up = up;
    const FN(wino_kernels) k = FN(wino_select)(isa, g.m);
    if (nth > g.rows)
        nth = (int)g.rows;
    int err = 0, finite = 1;
#ifdef FASTNN_HAVE_OPENMP
#pragma omp parallel num_threads(nth) if(nth > 1) reduction(| : err) reduction(& : finite)
#endif
    {
#ifdef FASTNN_HAVE_OPENMP
        const int t = omp_get_thread_num(), tn = omp_get_num_threads();
#else
        const int t = 0, tn = 1;
#endif
        T *v = (T *)fnn_scratch(FNN_SCRATCH_WINO_V, (size_t)(c * wino_chan(&g)) * sizeof(T));
        T *m = (T *)fnn_scratch(FNN_SCRATCH_WINO_M, (size_t)(pr.f_alloc * wino_chan(&g)) * sizeof(T));
        T *rows = (T *)fnn_scratch(FNN_SCRATCH_WINO_ROWS, (size_t)FN(wino_rows_elems)(&g) * sizeof(T));
        const T **brow = (const T **)fnn_scratch(FNN_SCRATCH_WINO_DU, (size_t)c * sizeof(T *));
        /* pooling: a block's rows of one filter, then room for their pooled indices as int64 */
        const int64_t strip_elems = (g.block_rows * g.m * g.ow + 7) / 8 * 8; /* the indices after it 64-byte aligned */
        T *strip = am ? (T *)fnn_scratch(FNN_SCRATCH_WINO_POOL, (size_t)strip_elems * (sizeof(T) + sizeof(int64_t)))
                      : NULL;
        int64_t *wide = strip ? (int64_t *)(strip + strip_elems) : NULL;
        TBITS *zero_base =
            (TBITS *)fnn_scratch(FNN_SCRATCH_WINO_ZERO, (size_t)FN(wino_zero_layout_of)(&g).total * sizeof(TBITS));
        if (!v || !m || !rows || !brow || (am && !strip) || !zero_base)
            err = 1;
        /* the filters are transformed on every call, by all the threads, a
         * panel of MR each (serially, with a separate pack, 0.39 ms of a
         * 100 x 64 x 8 x 8 -> 64 forward's 3.1 on one thread) */
#ifdef FASTNN_HAVE_OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t fp = 0; fp < pr.f_alloc; fp += pr.mr)
            FN(wino_filter_pack)(isa, wt, fp, f, c, g.m, pr.mr, pr.f_alloc, up);
        int64_t lo, hi;
        wino_thread_rows(&g, t, tn, &lo, &hi);
        for (int64_t r0 = lo; r0 < hi && !err; r0 += g.block_rows) {
            const int64_t nr = hi - r0 < g.block_rows ? hi - r0 : g.block_rows;
            finite &= FN(wino_forward_block)(&k, &pr, &g, isa, x, r0, nr, bias, act, act_alpha, y, v, m, rows, brow,
                                             strip, wide, am, zero_base);
        }
    }
    return err ? -1 : finite ? 0 : 1;
}

int FN(fnn_winograd_conv2d)(fnn_ctx ctx, int tile, const T *x, int64_t n, int64_t c, int64_t h, int64_t w,
                            const T *wt, int64_t f, const T *bias, int64_t ph, int64_t pw, int act, double act_alpha,
                            T *y)
{
    return FN(wino_conv2d_run)(ctx, tile, x, n, c, h, w, wt, f, bias, ph, pw, act, act_alpha, y, NULL);
}

int FN(fnn_winograd_conv2d_max_pool)(fnn_ctx ctx, int tile, const T *x, int64_t n, int64_t c, int64_t h, int64_t w,
                                     const T *wt, int64_t f, const T *bias, int64_t ph, int64_t pw, int act,
                                     double act_alpha, T *yp, int32_t *argmax)
{
    return FN(wino_conv2d_run)(ctx, tile, x, n, c, h, w, wt, f, bias, ph, pw, act, act_alpha, yp, argmax);
}

/* The weight gradient's products out (am x bn, leading dimension ld) = beta * out
 * + A B^T over tb lanes, A (am rows) and B (bn rows) ldr apart with the lanes
 * contiguous: A's rows read in place by the indirect-A microkernel, B^T packed
 * into NR-wide panels (zero past bn; out has room for them). fnn_gemm packed
 * both (transposes of 8 x tb blocks of A: 2% of conv E's forward + backward). */
typedef struct {
    FN(ukra_fn) ukr;
    FN(ukra_rows_fn) ukr_rows; /* NULL: the panel's rows past am read a zero row */
    int mr, nr, isa;
    int64_t am, bn, ld, a_alloc;
    int64_t lanes; /* a block's lane stride: the packed panels hold ld x lanes values, then a zero row */
} FN(wino_wgrad_products);

static void FN(wino_wgrad_product)(const FN(wino_wgrad_products) *pr, const T *a, const T *b, int64_t ldr,
                                   int64_t tb, T beta, T *out, T *panels, const T **arow)
{
    const int mr = pr->mr, nr = pr->nr;
    const T *zeros = panels + pr->ld * pr->lanes; /* zeroed once by the thread */
    for (int64_t i = 0; i < pr->a_alloc; i++)
        arow[i] = i < pr->am ? a + i * ldr : zeros;
    const fnn_matrix_src bs = {b, ldr, 1, pr->isa};
    FN(fnn_pack_matrix_b)(&bs, 0, pr->bn, 0, tb, nr, panels);
    for (int64_t j = 0; j < pr->bn; j += nr) {
        const T *bp = panels + j * tb; /* panel j / nr: tb rows of nr */
        for (int64_t i = 0; i < pr->am; i += mr) {
            const int live = (int)(pr->am - i < mr ? pr->am - i : mr);
            if (live < mr && pr->ukr_rows)
                pr->ukr_rows(live, tb, arow + i, 0, bp, out + i * pr->ld + j, pr->ld, (T)1, beta);
            else
                pr->ukr(tb, arow + i, 0, bp, out + i * pr->ld + j, pr->ld, (T)1, beta);
        }
    }
}

/* acc[fi] += the sum of row fi of z over lanes [0, tb), in a fixed order (16 lanes, then the lanes) */
static void FN(wino_row_sums)(const T *z, int64_t ldb, int64_t f, int64_t tb, T *acc)
{
    for (int64_t fi = 0; fi < f; fi++) {
        T lanes[16] = {0};
        FN(fnn_lane_acc)(lanes, z + fi * ldb, tb);
        acc[fi] += FN(fnn_lane_total)(lanes);
    }
}

/* The data gradient of the block's tile rows [r0, r0 + nr) of every channel
 * from their dV (in v, laid out as V): the input's adjoint, then each tile
 * row's tiles added into dx in order, the thread's first tile row's shared
 * rows (ty > 0: the thread before owns the tile row above) into seam. Returns 0
 * where a value of dx is not finite. */
static int FN(wino_dgrad_block)(const FN(wino_kernels) *k, const fnn_wino_geom *g, const T *v, int64_t r0,
                                int64_t nr, int64_t lo, T *dx, T *seam, T *rows)
{
    const int64_t tb = nr * g->tw, ls = g->ldb, plane = g->h * g->w, shared = g->a - g->m;
    T *dd = rows, *tmp = rows + g->np * ls, *rb = rows + 2 * g->np * ls;
    int finite = 1;
    for (int64_t ci = 0; ci < g->c; ci++) {
        k->adjoint(v + ci * wino_chan(g), g->ldb, tb, tmp, dd, ls);
        int64_t ni = r0 / g->th, ty = r0 % g->th;
        for (int64_t r = 0; r < nr; r++) {
            const int first = r0 + r == lo && ty > 0;
            finite &= k->scatter(dd + r * g->tw, ls, g->tw, dx + (ni * g->c + ci) * plane,
                                 first ? seam + ci * shared * g->w : NULL, g->h, g->w, g->m * ty - g->ph, g->pw,
                                 ty > 0 ? (int)shared : 0, rb);
            if (++ty == g->th) {
                ty = 0;
                ni++;
            }
        }
    }
    return finite;
}

/* dw (F, C, 3, 3) and db (F,) from dy (N, F, oh, ow) and x, and dx (N, C, H, W)
 * where it is set, in one pass over the blocks. Z = A dY A^T of each block
 * serves both gradients: dU[p] += Z[p] V[p]^T, and the adjoint of the forward
 * in the input tiles, dV[p] = U[p]^T Z[p] and dd = B dV B^T, added up where
 * the tiles overlap (Lavin and Gray's backward data). This replaced a
 * Winograd forward of dy with the flipped filters, whose input transform of
 * dy's F channels and output copy were about half of its time (conv D: 3.0 of
 * 8.7 ms for dx, 1 thread). dV takes V's place once dU[p] has used V[p].
 * Returns -1 when out of memory, else the sum of 1 where dw or db is not
 * finite and 2 where dx is not (or is not computed: the filters are not
 * finite): the caller takes another path for those. dx from finite dy and
 * filters is independent of x, and dy's non-finite values show in db. */
int FN(fnn_winograd_backward)(fnn_ctx ctx, int tile, const T *dy, const T *x, const T *wt, int64_t n, int64_t c,
                              int64_t h, int64_t w, int64_t f, int64_t ph, int64_t pw, T *dw, T *db, T *dx)
{
    const int isa = fnn_isa_of(ctx);
    int nth = fnn_team_of(ctx);
    int mr, nr_lanes;
    fnn_gemm_tile_shape(isa, (int)sizeof(T), &mr, &nr_lanes);
    if (dx && !FN(all_finite_serial)(isa, wt, f * c * 9))
        dx = NULL;
    const int dx_status = dx ? 0 : 2;
    /* the data gradient's products: U^T, packed as the forward's U with the
     * roles of the filters and the channels swapped (from the channel-transposed
     * filters), shared by the threads */
    FN(wino_products) dpr;
    FN(wino_products_init)(&dpr, isa, c, NULL);
    /* The weight gradient's products take a block's lanes as their depth, which
     * no panel pads; the data gradient's compute whole panels, as the forward's
     * do, so with dx the blocks are cut as the forward's are. Conv D's backward
     * on one thread (AVX-512), blocks of 27 tile rows (189 lanes) -> 16 (112):
     * 0.87-0.90x the time; 100 7x7 images of 64 channels, 35 rows (70 lanes,
     * padded to 80) -> 32 (64): 0.89x. */
    const int gran = dx ? FN(wino_panel_lanes)(&dpr) : 1;
    const fnn_wino_geom g = wino_geom(tile, n, c, h, w, f, ph, pw, (int64_t)sizeof(T), nr_lanes, gran, nth);
    /* dU[p] as C x F when that fills the microkernel's NR-wide tiles better
     * (16 channels on a 32-wide AVX-512 tile would run the half-width kernel) */
    const int transposed = (c + nr_lanes - 1) / nr_lanes * nr_lanes - c > (f + nr_lanes - 1) / nr_lanes * nr_lanes - f;
    FN(wino_wgrad_products) pr;
    pr.ukr = FN(select_ukra)(isa, &pr.ukr_rows);
    pr.mr = mr;
    pr.nr = nr_lanes;
    pr.isa = isa;
    pr.am = transposed ? c : f;
    pr.bn = transposed ? f : c;
    pr.ld = (pr.bn + nr_lanes - 1) / nr_lanes * nr_lanes;
    pr.a_alloc = (pr.am + mr - 1) / mr * mr;
    pr.lanes = g.ldb;
    T *wt_t = NULL, *upt = NULL;
    if (dx) {
        wt_t = (T *)malloc((size_t)(f * c * 9) * sizeof(T));
        upt = (T *)fnn_scratch(FNN_SCRATCH_CONV_W, (size_t)(g.np * dpr.f_alloc * f) * sizeof(T));
        if (!wt_t || !upt) {
            free(wt_t);
            return -1;
        }
        for (int64_t fi = 0; fi < f; fi++)
            for (int64_t ci = 0; ci < c; ci++)
                memcpy(wt_t + (ci * f + fi) * 9, wt + (fi * c + ci) * 9, 9 * sizeof(T));
        dpr.up = upt;
    }
    /* the a*a dU matrices (a_alloc x ld each), then db: position (1, 1) of A dY A^T
     * is the sum of the tile's gradients, so db comes from Z with no pass of its
     * own over dy */
    const int64_t ps = pr.a_alloc * pr.ld, pf = (int64_t)g.np * ps, du_elems = pf + f;
    if (nth > g.rows)
        nth = g.rows < 1 ? 1 : (int)g.rows;
    if (nth > 256)
        nth = 256;
    /* the calling thread's slot: it is thread 0 below, which sums straight into du */
    T *du = (T *)fnn_scratch(FNN_SCRATCH_WINO_DU, (size_t)du_elems * sizeof(T));
    if (!du) {
        free(wt_t);
        return -1;
    }
    T *partials[256];
    T *seams[256];
    int64_t firsts[256];
    /* The rows are cut into nth slices whatever team the runtime gives (fewer
     * threads under OMP_DYNAMIC, OMP_THREAD_LIMIT or a nested region): a thread
     * takes slices t, t + team, ..., each summed into a partial of its own, so
     * the fixed-order sum below gives the bits of nth threads. A thread's first
     * slice uses its scratch slots; later ones (only with a smaller team) take
     * these allocations, freed after the region. */
    T *extra[256];
    memset(extra, 0, sizeof(extra));
    int err = 0, dx_finite = 1;
    const int64_t v_chans = dx ? dpr.f_alloc : c, shared = g.a - g.m;
    const int64_t rows_elems = FN(wino_rows_elems)(&g) > FN(wino_adjoint_elems)(&g) ? FN(wino_rows_elems)(&g)
                                                                                   : FN(wino_adjoint_elems)(&g);
#ifdef FASTNN_HAVE_OPENMP
#pragma omp parallel num_threads(nth) if(nth > 1) reduction(| : err) reduction(& : dx_finite)
#endif
    {
#ifdef FASTNN_HAVE_OPENMP
        const int t = omp_get_thread_num(), tn = omp_get_num_threads();
#else
        const int t = 0, tn = 1;
#endif
        const FN(wino_kernels) k = FN(wino_select)(isa, g.m);
        T *v = (T *)fnn_scratch(FNN_SCRATCH_WINO_V, (size_t)(v_chans * wino_chan(&g)) * sizeof(T));
        T *z = (T *)fnn_scratch(FNN_SCRATCH_WINO_M, (size_t)(f * wino_chan(&g)) * sizeof(T));
        T *rows = (T *)fnn_scratch(FNN_SCRATCH_WINO_ROWS, (size_t)rows_elems * sizeof(T));
        /* slice 0 sums straight into du */
        T *mine = t == 0 ? du : (T *)fnn_scratch(FNN_SCRATCH_WINO_DU, (size_t)du_elems * sizeof(T));
        /* (no GEMM driver runs here: its slot holds the packed panels, and a zero row of ldb lanes) */
        T *panels = (T *)fnn_scratch(FNN_SCRATCH_PACK_A, (size_t)((pr.ld + 1) * g.ldb) * sizeof(T));
        const T **arow = (const T **)fnn_scratch(FNN_SCRATCH_CONV_ROWS, (size_t)pr.a_alloc * sizeof(T *));
        const T **brow = dx ? (const T **)fnn_scratch(FNN_SCRATCH_CONV_PLANE, (size_t)f * sizeof(T *)) : NULL;
        const int64_t seam_elems = dx ? c * shared * g.w : 0;
        T *seam = dx ? (T *)fnn_scratch(FNN_SCRATCH_CONV_DCOL, (size_t)seam_elems * sizeof(T)) : NULL;
        if (!v || !z || !rows || !mine || !panels || !arow || (dx && (!brow || !seam)))
            err = 1;
        /* U^T, a panel of MR channels each */
        if (dx) {
#ifdef FASTNN_HAVE_OPENMP
#pragma omp for schedule(static)
#endif
            for (int64_t cp = 0; cp < dpr.f_alloc; cp += dpr.mr)
                FN(wino_filter_pack)(isa, wt_t, cp, c, f, g.m, dpr.mr, dpr.f_alloc, upt);
        }
        if (!err)
            memset(panels + pr.ld * g.ldb, 0, (size_t)g.ldb * sizeof(T)); /* the zero row */
        for (int q = t; q < nth; q += tn) {
            if (q != t) {
                extra[q] = (T *)malloc((size_t)(du_elems + seam_elems) * sizeof(T) + 1);
                mine = extra[q];
                seam = dx && mine ? mine + du_elems : NULL;
                if (!mine)
                    err = 1;
            }
            partials[q] = mine;
            seams[q] = seam;
            int64_t lo, hi;
            wino_thread_rows(&g, q, nth, &lo, &hi);
            firsts[q] = lo < hi ? lo : -1;
            if (err)
                continue;
            if (lo == hi)
                memset(mine, 0, (size_t)du_elems * sizeof(T));
            for (int64_t r0 = lo; r0 < hi; r0 += g.block_rows) {
                const int64_t nr = hi - r0 < g.block_rows ? hi - r0 : g.block_rows;
                const int64_t tb = nr * g.tw;
                FN(wino_input_block)(&k, &g, x, r0, nr, v, rows, NULL, NULL);
                FN(wino_grad_block)(&k, &g, dy, r0, nr, z, rows);
                const int64_t nv = (tb + dpr.nr - 1) / dpr.nr * dpr.nr, chan = wino_chan(&g);
                if (dx && nv > tb) /* Z's lanes that the data gradient's last panel reads past tb: zero */
                    for (int64_t fi = 0; fi < f; fi++)
                        for (int p = 0; p < g.np; p++)
                            memset(z + fi * chan + p * g.ldb + tb, 0, (size_t)(nv - tb) * sizeof(T));
                for (int p = 0; p < g.np; p++) {
                    const T *zp = z + p * g.ldb, *vp = v + p * g.ldb;
                    FN(wino_wgrad_product)(&pr, transposed ? vp : zp, transposed ? zp : vp, wino_chan(&g), tb,
                                           r0 == lo ? (T)0 : (T)1, mine + p * ps, panels, arow);
                    if (dx) /* dV[p] over V[p] */
                        FN(wino_products_at)(&dpr, &g, p, f, z, v, tb, brow);
                }
                if (r0 == lo)
                    memset(mine + pf, 0, (size_t)f * sizeof(T));
                FN(wino_row_sums)(z + (g.a + 1) * g.ldb, wino_chan(&g), f, tb, mine + pf);
                if (dx)
                    dx_finite &= FN(wino_dgrad_block)(&k, &g, v, r0, nr, lo, dx, seam, rows);
            }
        }
#ifdef FASTNN_HAVE_OPENMP
#pragma omp barrier
#endif
        /* fixed-order sum of the partials, split over elements */
        int ok = 1;
        for (int q = 0; q < nth; q++)
            ok &= partials[q] != NULL && (!dx || seams[q] != NULL);
        if (ok) {
            const int64_t e0 = du_elems * t / tn, e1 = du_elems * (t + 1) / tn;
            for (int q = 1; q < nth; q++) {
                const T *pq = partials[q];
                for (int64_t e = e0; e < e1; e++)
                    du[e] += pq[e];
            }
        }
        /* the shared rows of each of this thread's slices' first tile row, now that
         * the tile row above (the slice before's) is in dx: the same sum as on one
         * thread */
        for (int q = t; ok && dx && q < nth; q += tn) {
            if (firsts[q] < 0 || firsts[q] % g.th == 0)
                continue;
            const int64_t ni = firsts[q] / g.th, row0 = g.m * (firsts[q] % g.th) - g.ph;
            for (int64_t ci = 0; ci < c; ci++)
                for (int64_t i = 0; i < shared; i++) {
                    const int64_t row = row0 + i;
                    if (row < 0 || row >= g.h)
                        continue;
                    T *dst = dx + ((ni * c + ci) * g.h + row) * g.w;
                    const T *add = seams[q] + (ci * shared + i) * g.w;
                    for (int64_t col = 0; col < g.w; col++)
                        dst[col] += add[col];
                }
        }
        /* then dw from du, a filter per thread at a time (serially, 0.3 ms of
         * conv E's 6.3 ms weight gradient on 2 threads) */
#ifdef FASTNN_HAVE_OPENMP
#pragma omp barrier
#endif
        if (ok) {
#ifdef FASTNN_HAVE_OPENMP
#pragma omp for schedule(static)
#endif
            for (int64_t fi = 0; fi < f; fi++)
                FN(wino_filter_grad)(du, ps, pr.ld, fi, c, g.m, transposed, dw);
        }
    }
    for (int q = 0; q < nth; q++)
        free(extra[q]);
    free(wt_t);
    if (err)
        return -1;
    /* non-finite inputs give non-finite sums (see fnn_winograd_conv2d) */
    const int db_finite = FN(all_finite_serial)(isa, du + pf, f);
    const int w_status = FN(all_finite_serial)(isa, dw, f * c * 9) && db_finite ? 0 : 1;
    if (db && db_finite)
        memcpy(db, du + pf, (size_t)f * sizeof(T));
    return w_status + (dx_status || !dx_finite || !db_finite ? 2 : 0);
}

#undef FN
#undef CAT2
#undef CAT2_
#undef WINO_BLOCK_LANES
