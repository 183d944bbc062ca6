/* Products with one row of C, or with B = T and a few rows (csrc/gemv_simd.c
 * includes this once per ISA and dtype): a GEMV reads each element of B once,
 * so packing B for the microkernels would cost as much as the product.
 *
 * Expects: T, VT (the vector), L (its lanes), TARGET, SFX (the name suffix),
 * MASK_T, MASK(count) (the first `count` lanes, 1 <= count <= L), LOADU,
 * MLOADZ(p, mask) (masked-out lanes read as 0 and are not accessed), MSTORE(p,
 * mask, v), STOREU, FMA(a, b, c) = a*b + c, MUL, ADD, SET1, SETZERO, HSUM
 * (a fixed-order sum of the lanes), G (vectors of columns a GEMV keeps in
 * registers), SPLIT (up to how many of them it splits the depth in two),
 * DA x DB (the rows of A and of B of a dot-product tile, DA <= 4, DB = 4).
 * Undefines the dtype's parameters at its end. */

#define GV_CAT2_(a, b) a##b
#define GV_CAT2(a, b) GV_CAT2_(a, b)
#define GV(name) GV_CAT2(name, SFX)

/* Columns [0, nv*L) of one row of C (the last vector's lanes limited by
 * `tail` where `masked`): nv vectors in registers over the whole depth; up to
 * SPLIT vectors, even and odd depth steps into separate accumulators (a chain
 * per vector, fewer than the FMA latency times the FMA units, would wait on
 * the latency), added at the end. */
TARGET static FNN_ALWAYS_INLINE void GV(gemv_n_group_)(const int nv, const int masked, MASK_T tail, int64_t k,
                                                       T alpha, const T *FNN_RESTRICT a, int64_t inca,
                                                       const T *FNN_RESTRICT b, int64_t ldb, T beta,
                                                       T *FNN_RESTRICT c)
{
    VT even[G], odd[G];
    _Pragma("GCC unroll 8") for (int q = 0; q < nv; q++)
    {
        even[q] = SETZERO();
        odd[q] = SETZERO();
    }
    int64_t p = 0;
    for (; nv <= SPLIT && p + 2 <= k; p += 2) {
        const VT a0 = SET1(a[p * inca]), a1 = SET1(a[(p + 1) * inca]);
        const T *b0 = b + p * ldb, *b1 = b0 + ldb;
        _Pragma("GCC unroll 8") for (int q = 0; q < nv; q++)
        {
            const int part = masked && q == nv - 1;
            even[q] = FMA(a0, part ? MLOADZ(b0 + q * L, tail) : LOADU(b0 + q * L), even[q]);
            odd[q] = FMA(a1, part ? MLOADZ(b1 + q * L, tail) : LOADU(b1 + q * L), odd[q]);
        }
    }
    for (; p < k; p++) {
        const VT a0 = SET1(a[p * inca]);
        const T *b0 = b + p * ldb;
        _Pragma("GCC unroll 8") for (int q = 0; q < nv; q++)
        {
            const int part = masked && q == nv - 1;
            even[q] = FMA(a0, part ? MLOADZ(b0 + q * L, tail) : LOADU(b0 + q * L), even[q]);
        }
    }
    const VT va = SET1(alpha), vb = SET1(beta);
    _Pragma("GCC unroll 8") for (int q = 0; q < nv; q++)
    {
        const int part = masked && q == nv - 1;
        VT s = MUL(va, nv <= SPLIT ? ADD(even[q], odd[q]) : even[q]);
        if (beta != 0)
            s = FMA(vb, part ? MLOADZ(c + q * L, tail) : LOADU(c + q * L), s);
        if (part)
            MSTORE(c + q * L, tail, s);
        else
            STOREU(c + q * L, s);
    }
}

/* c[j] = alpha * sum_p a[p*inca] * b[p*ldb + j] + beta * c[j], j < n: B = N,
 * read row by row G vectors at a time (beta == 0: c is not read). */
TARGET void GV(fnn_gemv_n_)(int64_t n, int64_t k, T alpha, const T *a, int64_t inca, const T *b, int64_t ldb,
                            T beta, T *c)
{
    const MASK_T full = MASK(L);
    int64_t j = 0;
    for (; j + G * L <= n; j += G * L)
        GV(gemv_n_group_)(G, 0, full, k, alpha, a, inca, b + j, ldb, beta, c + j);
    if (j == n)
        return;
    const int nv = (int)((n - j + L - 1) / L);
    const MASK_T tail = MASK((int)(n - j - (int64_t)(nv - 1) * L));
    switch (nv) {
#define GV_N_CASE(NV) \
    case NV: GV(gemv_n_group_)(NV, 1, tail, k, alpha, a, inca, b + j, ldb, beta, c + j); break;
        GV_N_CASE(1)
        GV_N_CASE(2)
        GV_N_CASE(3)
        GV_N_CASE(4)
#if G > 4
        GV_N_CASE(5)
        GV_N_CASE(6)
        GV_N_CASE(7)
        GV_N_CASE(8)
#endif
#undef GV_N_CASE
    default: break;
    }
}

/* The ma x nb tile at rows a, b of C[i, j] = alpha * dot(A[i, :], B[j, :]) +
 * beta * C[i, j]: L-lane partial sums over the depth (its last part masked),
 * then each summed across its lanes. */
TARGET static FNN_ALWAYS_INLINE void GV(dots_tile_)(const int ma, const int nb, int64_t k, T alpha,
                                                    const T *FNN_RESTRICT a, int64_t lda, const T *FNN_RESTRICT b,
                                                    int64_t ldb, T beta, T *FNN_RESTRICT c, int64_t ldc)
{
    VT acc[DA][DB];
    _Pragma("GCC unroll 4") for (int i = 0; i < ma; i++)
    {
        _Pragma("GCC unroll 4") for (int j = 0; j < nb; j++) acc[i][j] = SETZERO();
    }
    int64_t p = 0;
    for (; p + L <= k; p += L) {
        VT bv[DB];
        _Pragma("GCC unroll 4") for (int j = 0; j < nb; j++) bv[j] = LOADU(b + j * ldb + p);
        _Pragma("GCC unroll 4") for (int i = 0; i < ma; i++)
        {
            const VT av = LOADU(a + i * lda + p);
            _Pragma("GCC unroll 4") for (int j = 0; j < nb; j++) acc[i][j] = FMA(av, bv[j], acc[i][j]);
        }
    }
    if (p < k) {
        const MASK_T tail = MASK((int)(k - p));
        VT bv[DB];
        _Pragma("GCC unroll 4") for (int j = 0; j < nb; j++) bv[j] = MLOADZ(b + j * ldb + p, tail);
        _Pragma("GCC unroll 4") for (int i = 0; i < ma; i++)
        {
            const VT av = MLOADZ(a + i * lda + p, tail);
            _Pragma("GCC unroll 4") for (int j = 0; j < nb; j++) acc[i][j] = FMA(av, bv[j], acc[i][j]);
        }
    }
    _Pragma("GCC unroll 4") for (int i = 0; i < ma; i++)
    {
        _Pragma("GCC unroll 4") for (int j = 0; j < nb; j++)
        {
            const T s = alpha * HSUM(acc[i][j]);
            c[i * ldc + j] = beta == 0 ? s : s + beta * c[i * ldc + j];
        }
    }
}

/* Columns [j0, j1) of C (m x n) = alpha * A @ B^T + beta * C, A (m x k, rows
 * lda apart, contiguous along k), B (n x k). For each DB rows of B (in L1),
 * every block of DA rows of A; each element of C is one tile's dot product,
 * so any split of the columns gives the same bits. */
TARGET void GV(fnn_gemm_dots_)(int64_t m, int64_t j0, int64_t j1, int64_t k, T alpha, const T *a, int64_t lda,
                               const T *b, int64_t ldb, T beta, T *c, int64_t ldc)
{
    for (int64_t j = j0; j < j1; j += DB) {
        const int nb = j1 - j < DB ? (int)(j1 - j) : DB;
        const T *bj = b + j * ldb;
        for (int64_t i = 0; i < m; i += DA) {
            const int ma = m - i < DA ? (int)(m - i) : DA;
            const T *ai = a + i * lda;
            T *cij = c + i * ldc + j;
            switch (ma * 8 + nb) {
#define GV_D_CASE(MA, NB) \
    case MA * 8 + NB: GV(dots_tile_)(MA, NB, k, alpha, ai, lda, bj, ldb, beta, cij, ldc); break;
#define GV_D_ROW(MA) GV_D_CASE(MA, 1) GV_D_CASE(MA, 2) GV_D_CASE(MA, 3) GV_D_CASE(MA, 4)
                GV_D_ROW(1)
                GV_D_ROW(2)
#if DA > 2
                GV_D_ROW(3)
                GV_D_ROW(4)
#endif
#undef GV_D_ROW
#undef GV_D_CASE
            default: break;
            }
        }
    }
}

/* C's rows x cols (row stride ldc) = edge (row stride lde) + beta * C, C not
 * read where beta is 0: the driver's edge tiles, which a microkernel wrote
 * whole into a buffer, copied out with a masked last vector per row (the
 * portable loop's scalar tail took a third of a 784 x 50 product of depth 1)
 * and with the FMA of the microkernels' own beta update, so an edge tile gets
 * the bits a full tile would. */
TARGET void GV(fnn_tile_from_edge_)(T *c, int64_t ldc, const T *edge, int64_t lde, int rows, int64_t cols, T beta)
{
    const VT vb = SET1(beta);
    for (int r = 0; r < rows; r++) {
        T *cr = c + r * ldc;
        const T *er = edge + r * lde;
        int64_t q = 0;
        for (; q + L <= cols; q += L) {
            VT v = LOADU(er + q);
            if (beta != 0)
                v = FMA(vb, LOADU(cr + q), v);
            STOREU(cr + q, v);
        }
        if (q < cols) {
            const MASK_T tail = MASK((int)(cols - q));
            VT v = MLOADZ(er + q, tail);
            if (beta != 0)
                v = FMA(vb, MLOADZ(cr + q, tail), v);
            MSTORE(cr + q, tail, v);
        }
    }
}

#undef GV
#undef GV_CAT2
#undef GV_CAT2_
/* the dtype's parameters (the ISA's, TARGET, G, DA and DB, stay) */
#undef T
#undef VT
#undef L
#undef SFX
#undef MASK_T
#undef MASK
#undef LOADU
#undef MLOADZ
#undef MSTORE
#undef STOREU
#undef FMA
#undef MUL
#undef ADD
#undef SET1
#undef SETZERO
#undef HSUM
