/* What the AVX2 and AVX-512 microkernel files share: how each kernel variant
 * takes its operands, and the bottom-edge dispatcher. Included by the
 * gemm_ukernel_*.c files only. */
#ifndef FASTNN_GEMM_UKERNEL_COMMON_H
#define FASTNN_GEMM_UKERNEL_COMMON_H

/* parameters: A packed or indirect (row i at arow[i] + aoff), B packed or
 * indirect (row p at brow[p] + boff). Function-like, so that a list with a
 * comma passes whole through the nested kernel macros. */
#define PACKED_A_F32() const float *FNN_RESTRICT a
#define PACKED_A_F64() const double *FNN_RESTRICT a
#define INDIRECT_A_F32() const float *const *FNN_RESTRICT arow, int64_t aoff
#define INDIRECT_A_F64() const double *const *FNN_RESTRICT arow, int64_t aoff
#define AVAL_INDIRECT(i, p) arow[i][aoff + (p)]
#define PACKED_B_F32() const float *FNN_RESTRICT b
#define PACKED_B_F64() const double *FNN_RESTRICT b
#define INDIRECT_B_F32() const float *const *FNN_RESTRICT brow, int64_t boff
#define INDIRECT_B_F64() const double *const *FNN_RESTRICT brow, int64_t boff
#define ROW_INDIRECT(p) (brow[p] + boff)

/* each variant's operand parameters, and the arguments that pass them on */
#define SIG_PACKED_F32() PACKED_A_F32(), PACKED_B_F32()
#define SIG_PACKED_F64() PACKED_A_F64(), PACKED_B_F64()
#define SIG_IND_B_F32() PACKED_A_F32(), INDIRECT_B_F32()
#define SIG_IND_B_F64() PACKED_A_F64(), INDIRECT_B_F64()
#define SIG_IND_A_F32() INDIRECT_A_F32(), PACKED_B_F32()
#define SIG_IND_A_F64() INDIRECT_A_F64(), PACKED_B_F64()
#define CALL_PACKED (k, a, b, c, ldc, alpha, beta)
#define CALL_IND_B (k, a, brow, boff, c, ldc, alpha, beta)
#define CALL_IND_A (k, arow, aoff, b, c, ldc, alpha, beta)

/* BASE_rows_SFX(rows, ...): the tile's first `rows` rows through BASE_rK_SFX
 * (bodies compiled for K rows); rows >= MR runs the full kernel BASE_SFX. */
#define DEFINE_ROWS_SWITCH(TARGET, BASE, SFX, T, SIG, CALL)                                             \
    TARGET void BASE##_rows_##SFX(int rows, int64_t k, SIG(), T *FNN_RESTRICT c, int64_t ldc, T alpha, T beta) \
    {                                                                                                   \
        switch (rows) {                                                                                 \
        case 1: BASE##_r1_##SFX CALL; break;                                                            \
        case 2: BASE##_r2_##SFX CALL; break;                                                            \
        case 3: BASE##_r3_##SFX CALL; break;                                                            \
        case 4: BASE##_r4_##SFX CALL; break;                                                            \
        case 5: BASE##_r5_##SFX CALL; break;                                                            \
        ROWS_SWITCH_MORE_CASES(BASE, SFX, CALL)                                                         \
        default: BASE##_##SFX CALL; break;                                                              \
        }                                                                                               \
    }

/* Dot-product microkernel (NAME(k, a, b, part)): the DM x DN block of dot
 * products of rows a[i] and b[j] (k contiguous elements each, any alignment),
 * each kept as VL lane sums and added to part[(i * DN + j) * VL + lane].
 * Both operands are read along the depth, so neither is transposed or packed:
 * the weight gradient of a convolution with a small c * fh * fw, whose depth is
 * the output positions (csrc/conv_template.h). The last k % VL elements are
 * loaded masked (TAIL_MASK(rem) declares the mask, LOAD_TAIL(p) loads with it),
 * so the rows are never read past their end. */
#define UKRD_STEP(VT, DM, DN, FMA, LOAD, p)                                                                 \
    {                                                                                                       \
        VT bv[DN];                                                                                          \
        _Pragma("GCC unroll 8") for (int j = 0; j < DN; j++) bv[j] = LOAD(br[j] + (p));                     \
        _Pragma("GCC unroll 8") for (int i = 0; i < DM; i++)                                                \
        {                                                                                                   \
            const VT av = LOAD(ar[i] + (p));                                                                \
            _Pragma("GCC unroll 8") for (int j = 0; j < DN; j++) acc[i][j] = FMA(av, bv[j], acc[i][j]);     \
        }                                                                                                   \
    }
#define DEFINE_UKRD(TARGET, NAME, T, VT, VL, DM, DN, LOADU, TAIL_MASK, LOAD_TAIL, FMA, ADD, STOREU, SETZERO) \
    TARGET void NAME(int64_t k, const T *const *FNN_RESTRICT a, const T *const *FNN_RESTRICT b,             \
                     T *FNN_RESTRICT part)                                                                  \
    {                                                                                                       \
        const T *ar[DM], *br[DN];                                                                           \
        VT acc[DM][DN];                                                                                     \
        _Pragma("GCC unroll 8") for (int i = 0; i < DM; i++) ar[i] = a[i];                                  \
        _Pragma("GCC unroll 8") for (int j = 0; j < DN; j++) br[j] = b[j];                                  \
        _Pragma("GCC unroll 8") for (int i = 0; i < DM; i++)                                                \
            _Pragma("GCC unroll 8") for (int j = 0; j < DN; j++) acc[i][j] = SETZERO();                     \
        int64_t p = 0;                                                                                      \
        for (; p + (VL) <= k; p += (VL))                                                                    \
            UKRD_STEP(VT, DM, DN, FMA, LOADU, p)                                                            \
        if (p < k) {                                                                                        \
            TAIL_MASK(k - p);                                                                               \
            UKRD_STEP(VT, DM, DN, FMA, LOAD_TAIL, p)                                                        \
        }                                                                                                   \
        _Pragma("GCC unroll 8") for (int i = 0; i < DM; i++)                                                \
            _Pragma("GCC unroll 8") for (int j = 0; j < DN; j++)                                            \
        {                                                                                                   \
            T *s = part + (i * (DN) + j) * (VL);                                                            \
            STOREU(s, ADD(LOADU(s), acc[i][j]));                                                            \
        }                                                                                                   \
    }

/* Gathered-row microkernel (NAME(count, g, idx, rows, ldr, nv, part)):
 * part[0 .. nv * VL) += the sum over q < count of g[q] times row idx[q] of
 * rows (ldr elements apart, nv vectors read from each), the even and odd q in
 * two chains added at the end. The weight gradient of a convolution from the
 * gradient of its max-pooled output: each pooled value times the taps of the
 * position that won its window, where the dense product spends the same work
 * on every position (4 times as much for 2x2 pooling; csrc/conv_template.h).
 * 1 <= nv <= FNN_UKRS_MAX_NV. */
#define UKRS_BODY(T, VT, VL, NV, LOADU, FMA, ADD, STOREU, SETZERO, SET1)                                     \
    {                                                                                                       \
        VT even[NV], odd[NV];                                                                               \
        _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++) even[v] = odd[v] = SETZERO();                \
        int64_t q = 0;                                                                                      \
        for (; q + 2 <= count; q += 2) {                                                                    \
            const T *r0 = rows + (int64_t)idx[q] * ldr, *r1 = rows + (int64_t)idx[q + 1] * ldr;             \
            const VT g0 = SET1(g[q]), g1 = SET1(g[q + 1]);                                                  \
            _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++) even[v] = FMA(g0, LOADU(r0 + v * (VL)), even[v]); \
            _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++) odd[v] = FMA(g1, LOADU(r1 + v * (VL)), odd[v]);   \
        }                                                                                                   \
        if (q < count) {                                                                                    \
            const T *r0 = rows + (int64_t)idx[q] * ldr;                                                     \
            const VT g0 = SET1(g[q]);                                                                       \
            _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++) even[v] = FMA(g0, LOADU(r0 + v * (VL)), even[v]); \
        }                                                                                                   \
        _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++)                                              \
            STOREU(part + v * (VL), ADD(LOADU(part + v * (VL)), ADD(even[v], odd[v])));                     \
    }
#define DEFINE_UKRS(TARGET, NAME, T, VT, VL, LOADU, FMA, ADD, STOREU, SETZERO, SET1)                         \
    TARGET void NAME(int64_t count, const T *FNN_RESTRICT g, const int32_t *FNN_RESTRICT idx,               \
                     const T *FNN_RESTRICT rows, int64_t ldr, int nv, T *FNN_RESTRICT part)                 \
    {                                                                                                       \
        switch (nv) {                                                                                       \
        case 1: UKRS_BODY(T, VT, VL, 1, LOADU, FMA, ADD, STOREU, SETZERO, SET1) break;                      \
        case 2: UKRS_BODY(T, VT, VL, 2, LOADU, FMA, ADD, STOREU, SETZERO, SET1) break;                      \
        case 3: UKRS_BODY(T, VT, VL, 3, LOADU, FMA, ADD, STOREU, SETZERO, SET1) break;                      \
        default: UKRS_BODY(T, VT, VL, 4, LOADU, FMA, ADD, STOREU, SETZERO, SET1) break;                     \
        }                                                                                                   \
    }

#endif /* FASTNN_GEMM_UKERNEL_COMMON_H */
