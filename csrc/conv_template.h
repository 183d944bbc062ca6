/* Convolution kernels, written once for both dtypes: csrc/conv.c includes this
 * file with T and SFX defined. Not a public header. */

#define CAT2_(a, b) a##_##b
#define CAT2(a, b) CAT2_(a, b)
#define FN(name) CAT2(name, SFX)

typedef struct {
    const T *x; /* one image, (C, H, W) */
    fnn_conv_geom g;
} FN(image_src);

/* Row ck = (ci, i, j) of col^T for output positions [p0, p0 + len):
 * dst[t * ds] = x[ci, oy*sh + i - ph, ox*sw + j - pw] (0 in the padding). */
static void FN(extract_row)(const T *x, const fnn_conv_geom *g, int64_t ck, int64_t p0, int64_t len, T *dst,
                            int64_t ds)
{
    const int64_t khw = g->fh * g->fw;
    const int64_t ci = ck / khw, i = (ck % khw) / g->fw, j = ck % g->fw;
    int64_t lo, hi;
    valid_ox(g, j, &lo, &hi);
    int64_t oy = p0 / g->ow, ox = p0 % g->ow;
    int64_t left = len;
    while (left > 0) {
        int64_t seg = g->ow - ox < left ? g->ow - ox : left;
        int64_t iy = oy * g->sh + i - g->ph;
        if (iy < 0 || iy >= g->h) {
            for (int64_t t = 0; t < seg; t++)
                dst[t * ds] = 0;
        } else {
            const T *row = x + (ci * g->h + iy) * g->w + j - g->pw; /* row[ox*sw] is the element */
            int64_t a = ox, e = ox + seg;
            int64_t l = lo > a ? (lo < e ? lo : e) : a;
            int64_t r = hi < e ? (hi > l ? hi : l) : e;
            int64_t t = 0;
            for (; a + t < l; t++)
                dst[t * ds] = 0;
            if (g->sw == 1 && ds == 1) {
                memcpy(dst + t, row + a + t, (size_t)(r - l) * sizeof(T));
                t += r - l;
            } else {
                for (; a + t < r; t++)
                    dst[t * ds] = row[(a + t) * g->sw];
            }
            for (; t < seg; t++)
                dst[t * ds] = 0;
        }
        dst += seg * ds;
        left -= seg;
        ox = 0;
        oy++;
    }
}

/* The transpose of extract_row: dx[ci, iy, ix] += src[t * ss] (padding dropped). */
static void FN(scatter_row)(T *dx, const fnn_conv_geom *g, int64_t ck, int64_t p0, int64_t len, const T *src,
                            int64_t ss)
{
    const int64_t khw = g->fh * g->fw;
    const int64_t ci = ck / khw, i = (ck % khw) / g->fw, j = ck % g->fw;
    int64_t lo, hi;
    valid_ox(g, j, &lo, &hi);
    int64_t oy = p0 / g->ow, ox = p0 % g->ow;
    int64_t left = len;
    while (left > 0) {
        int64_t seg = g->ow - ox < left ? g->ow - ox : left;
        int64_t iy = oy * g->sh + i - g->ph;
        if (iy >= 0 && iy < g->h) {
            T *row = dx + (ci * g->h + iy) * g->w + j - g->pw;
            int64_t a = ox, e = ox + seg;
            int64_t l = lo > a ? (lo < e ? lo : e) : a;
            int64_t r = hi < e ? (hi > l ? hi : l) : e;
            if (g->sw == 1) {
                T *dr = row + l;
                const T *s = src + (l - a) * ss;
                for (int64_t t = 0; t < r - l; t++)
                    dr[t] += s[t * ss];
            } else {
                for (int64_t o = l; o < r; o++)
                    row[o * g->sw] += src[(o - a) * ss];
            }
        }
        src += seg * ss;
        left -= seg;
        ox = 0;
        oy++;
    }
}

/* B packer of the forward product: op(B) = col^T (CK x P); panel columns are
 * output positions, depth is ck. Each depth row is gathered once for the whole
 * column range into a row buffer in L1 (long contiguous copies from the
 * image), then split into the NR-wide panels. */
static void FN(pack_image_fwd)(const void *srcv, int64_t j0, int64_t cols, int64_t k0, int64_t kc, int w, T *dst)
{
    const FN(image_src) *s = (const FN(image_src) *)srcv;
    T FNN_ALIGNED(64) row[FNN_CONV_PACK_ROW];
    const int64_t chunk = FNN_CONV_PACK_ROW / w * w;
    for (int64_t j = 0; j < cols; j += chunk) {
        const int64_t jc = cols - j < chunk ? cols - j : chunk;
        const int64_t panels = (jc + w - 1) / w;
        for (int64_t t = jc; t < panels * w; t++)
            row[t] = 0;
        T *d0 = dst + (j / w) * kc * w;
        for (int64_t k = 0; k < kc; k++) {
            FN(extract_row)(s->x, &s->g, k0 + k, j0 + j, jc, row, 1);
            for (int64_t q = 0; q < panels; q++)
                memcpy(d0 + q * kc * w + k * w, row + q * w, (size_t)w * sizeof(T));
        }
    }
}

/* B packer of the weight gradient: op(B) = col (P x CK); panel columns are ck,
 * depth is the output position. Gathers w rows of col^T into an L1 tile
 * (contiguous copies), then transposes the tile into the panel. */
static void FN(pack_image_wgrad)(const void *srcv, int64_t j0, int64_t cols, int64_t k0, int64_t kc, int w, T *dst)
{
    const FN(image_src) *s = (const FN(image_src) *)srcv;
    enum { DEPTH = 64 };
    T FNN_ALIGNED(64) tile[32 * DEPTH]; /* w <= 32 (the widest NR) */
    for (int64_t j = 0; j < cols; j += w) {
        const int jj = (int)(cols - j < w ? cols - j : w);
        T *d = dst + (j / w) * kc * w;
        for (int64_t kk = 0; kk < kc; kk += DEPTH) {
            const int kn = (int)(kc - kk < DEPTH ? kc - kk : DEPTH);
            for (int t = 0; t < jj; t++)
                FN(extract_row)(s->x, &s->g, j0 + j + t, k0 + kk, kn, tile + t * DEPTH, 1);
            for (int t = jj; t < w; t++)
                for (int k = 0; k < kn; k++)
                    tile[t * DEPTH + k] = 0;
            for (int k = 0; k < kn; k++) {
                T *dk = d + (kk + k) * w;
                for (int t = 0; t < w; t++)
                    dk[t] = tile[t * DEPTH + k];
            }
        }
    }
}

static int FN(use_batch_parallel)(int nth, int64_t n, double macs_per_image)
{
    if (nth <= 1 || n < 2)
        return 0;
    if (n >= 2 * nth)
        return 1;
    return n >= nth && macs_per_image < FNN_CONV_MIN_MACS_INNER_PARALLEL;
}

/* ---- direct path: indirect-B microkernels, no packing of B --------------- */

#include "ukr_select_template.h"

typedef struct {
    int64_t c, h, w, f, fh, fw, ph, pw, sh, sw;
    int64_t hp, wp, oh, ow, ck;
    /* The padded image as sh x sw phase planes per channel, plane (ci, a, b)
     * holding its rows a, a + sh, ... and columns b, b + sw, ... (gh x gw
     * each; one plane, the padded image itself, at stride 1). Tap (i, j) of
     * output (oy, ox) is then element (oy + i / sh, ox + j / sw) of plane (ci,
     * i % sh, j % sw): on a grid gw wide, one contiguous row of col^T for every
     * stride. */
    int64_t gh, gw, gplane;
    int64_t pwide;   /* oh * gw: output positions on the wide grid (gw - ow garbage columns a row) */
    int64_t ldy;     /* pwide rounded up to NR */
    int64_t f_alloc; /* f rounded up to MR */
    int64_t xpad_elems;
    int mr, nr;
    int64_t kc;
    FN(ukri_fn) ukr;
    FN(ukri_rows_fn) ukr_rows; /* the last filter panel when f is not a multiple of mr; may be NULL */
    const T *apack; /* the weights as MR-row panels over the whole depth ck */
    const T *bias;
    int act;
    double act_alpha;
    int isa;
    const fnn_pool_spec *pool; /* pool each output plane (then amn is set), or NULL */
    int64_t poh, pow_;         /* the pooled plane */
    /* The compact layout (compact_geom), where ck <= FNN_CONV_COMPACT_MAX_CK:
     * col^T's rows over the oh * ow output positions themselves, no garbage
     * columns. Tap (ci, i, j)'s row is plane (ci, i % sh, j % sw) from column
     * j / sw on, compacted to ow columns (base (ci, i % sh, j): brows rows of
     * ow), from its row i / sh on; so c * phases * fw bases hold every row
     * (conv C: 5 bases of 28 x 24 for 25 rows of 24 x 24). */
    int compact;
    int64_t phases, brows, blen, bases_elems;
} FN(direct_conv);

/* Taps (c * fh * fw) up to which the direct paths may use the compact layout:
 * a first layer's few channels, where the wide grid's garbage columns are a
 * large share (conv C: 28 columns a row for 24 outputs) and the bases stay
 * small (see direct_conv_setup and dot_wgrad_plan for when each pass uses it). */
#define FNN_CONV_COMPACT_MAX_CK 32
/* and up to this many bytes of bases per image (a thread's scratch, beside the
 * padded image): a 1x1 layer of 32 channels on 1000 x 1000 images would
 * otherwise hold another 128 MB a thread */
#define FNN_CONV_COMPACT_MAX_BYTES ((int64_t)8 << 20)


/* The geometry of the direct path; xpad_elems covers the furthest element
 * that the wide grid's last panel of the last row of col^T reads (the
 * microkernels read whole NR-wide panels, up to lanes lanes of a row) */
static void FN(direct_geom)(FN(direct_conv) *d, int64_t c, int64_t h, int64_t w, int64_t f, int64_t fh, int64_t fw,
                            int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t lanes)
{
    d->c = c; d->h = h; d->w = w; d->f = f; d->fh = fh; d->fw = fw; d->ph = ph; d->pw = pw;
    d->sh = sh; d->sw = sw;
    d->hp = h + 2 * ph;
    d->wp = w + 2 * pw;
    d->oh = (d->hp - fh) / sh + 1;
    d->ow = (d->wp - fw) / sw + 1;
    d->ck = c * fh * fw;
    d->gh = (d->hp + sh - 1) / sh;
    d->gw = (d->wp + sw - 1) / sw;
    d->gplane = d->gh * d->gw;
    d->pwide = d->oh * d->gw;
    const int64_t last = ((((c - 1) * sh + (fh - 1) % sh) * sw + (fw - 1) % sw) * d->gplane +
                          (fh - 1) / sh * d->gw + (fw - 1) / sw); /* the furthest row of col^T */
    const int64_t planes = c * sh * sw * d->gplane;
    d->xpad_elems = (last + lanes > planes ? last + lanes : planes) + 64;
}

/* rows[k] for the ck rows k = (ci, i, j) of col^T: origin + ci * per_c +
 * (i % sh) * per_phase_row + (i / sh) * per_row + (j % sw) * per_phase_col +
 * (j / sw) * per_col, in nested loops without a division (the divisions took
 * 3-5% of conv C). On the wide grid (direct_wide_rows) each row is a slice of
 * a phase plane of the padded image. */
static void FN(direct_rows)(const FN(direct_conv) *d, const T *origin, int64_t per_c, int64_t per_phase_row,
                            int64_t per_row, int64_t per_phase_col, int64_t per_col, const T **rows)
{
    int64_t k = 0;
    for (int64_t ci = 0; ci < d->c; ci++)
        for (int64_t i = 0, ia = 0, iq = 0; i < d->fh; i++) { /* i = iq * sh + ia */
            const T *row = origin + ci * per_c + ia * per_phase_row + iq * per_row;
            for (int64_t j = 0, ja = 0, jq = 0; j < d->fw; j++) {
                rows[k++] = row + ja * per_phase_col + jq * per_col;
                if (++ja == d->sw) {
                    ja = 0;
                    jq++;
                }
            }
            if (++ia == d->sh) {
                ia = 0;
                iq++;
            }
        }
}

static void FN(direct_wide_rows)(const FN(direct_conv) *d, const T *xpad, const T **rows)
{
    FN(direct_rows)(d, xpad, d->sh * d->sw * d->gplane, d->sw * d->gplane, d->gw, d->gplane, 1, rows);
}

/* rows x len elements from src (row stride lds) to dst (ldd) */
static void FN(copy_rows)(int isa, T *dst, int64_t ldd, const T *src, int64_t lds, int64_t rows, int64_t len)
{
    const int64_t words = (int64_t)(sizeof(T) / 4);
#if FNN_X86_SIMD
    if (isa >= FNN_ISA_AVX512) {
        fnn_copy_rows_avx512(dst, ldd * words, src, lds * words, rows, len * words);
        return;
    }
    if (isa >= FNN_ISA_AVX2) {
        fnn_copy_rows_avx2(dst, ldd * words, src, lds * words, rows, len * words);
        return;
    }
#else
    (void)isa;
    (void)words;
#endif
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst + r * ldd, src + r * lds, (size_t)len * sizeof(T));
}

/* The compact layout's sizes (whether to use it is the caller's choice);
 * lanes: the elements a microkernel may read past a row's last output position. */
static void FN(compact_geom)(FN(direct_conv) *d, int64_t lanes)
{
    d->phases = d->sh < d->fh ? d->sh : d->fh;
    d->brows = d->oh + (d->fh - 1) / d->sh;
    d->blen = d->brows * d->ow;
    d->bases_elems = d->c * d->phases * d->fw * d->blen + lanes;
}

/* Whether the compact layout may serve d (compact_geom set): few taps, and
 * bases small enough; each pass adds its own condition (direct_conv_setup,
 * dot_wgrad_plan). */
static int FN(compact_fits)(const FN(direct_conv) *d)
{
    return d->ck <= FNN_CONV_COMPACT_MAX_CK && d->bases_elems * (int64_t)sizeof(T) <= FNN_CONV_COMPACT_MAX_BYTES;
}

/* The bases from the padded phase planes (xpad), and zeros after them. */
static void FN(build_bases)(const FN(direct_conv) *d, const T *xpad, T *bases)
{
    const int64_t used = d->c * d->phases * d->fw * d->blen;
    for (int64_t ci = 0; ci < d->c; ci++)
        for (int64_t a = 0; a < d->phases; a++)
            for (int64_t j = 0; j < d->fw; j++) {
                const T *plane = xpad + ((ci * d->sh + a) * d->sw + j % d->sw) * d->gplane + j / d->sw;
                FN(copy_rows)(d->isa, bases + ((ci * d->phases + a) * d->fw + j) * d->blen, d->ow, plane, d->gw,
                              d->brows, d->ow);
            }
    memset(bases + used, 0, (size_t)(d->bases_elems - used) * sizeof(T));
}

static void FN(compact_rows)(const FN(direct_conv) *d, const T *bases, const T **rows)
{
    FN(direct_rows)(d, bases, d->phases * d->fw * d->blen, d->fw * d->blen, d->ow, d->blen, d->sw * d->blen, rows);
}

/* The image, zero-padded to (c, hp, wp) and split into its phase planes (a
 * copy at stride 1), plus zeroed slack after it. */
static void FN(build_xpad)(const FN(direct_conv) *d, const T *xn, T *xpad)
{
    memset(xpad, 0, (size_t)d->xpad_elems * sizeof(T));
    for (int64_t ci = 0; ci < d->c; ci++)
        for (int64_t iy = 0; iy < d->h; iy++) {
            const int64_t py = iy + d->ph;
            if (py % d->sh >= d->fh)
                continue; /* a phase no tap reads (stride above the filter) */
            T *prow = xpad + (ci * d->sh + py % d->sh) * d->sw * d->gplane + py / d->sh * d->gw;
            const T *src = xn + (ci * d->h + iy) * d->w;
            if (d->sw == 1) {
                memcpy(prow + d->pw, src, (size_t)d->w * sizeof(T));
                continue;
            }
            /* the columns of each phase b: ix = ix0, ix0 + sw, ... into v0, v0 + 1, ...
             * (stride 2 apart, with a constant step that the compiler vectorises:
             * as a run-time step this copy took 14% of a stride-2 3x3 forward) */
            for (int64_t b = 0; b < d->sw && b < d->fw; b++) {
                const int64_t ix0 = ((b - d->pw) % d->sw + d->sw) % d->sw;
                const int64_t count = ix0 < d->w ? (d->w - ix0 + d->sw - 1) / d->sw : 0;
                T *FNN_RESTRICT dst = prow + b * d->gplane + (ix0 + d->pw) / d->sw;
                const T *FNN_RESTRICT s0 = src + ix0;
                if (d->sw == 2)
                    for (int64_t v = 0; v < count; v++)
                        dst[v] = s0[2 * v];
                else
                    for (int64_t v = 0; v < count; v++)
                        dst[v] = s0[v * d->sw];
            }
        }
}

/* The image's padded phase planes (xpad), in the compact layout its bases,
 * and the rows of col^T into them, in the calling thread's scratch; NULL
 * where it runs out of memory. */
static const T **FN(direct_prepare)(const FN(direct_conv) *d, const T *xn)
{
    T *xpad = (T *)fnn_scratch(FNN_SCRATCH_CONV_XPAD, (size_t)d->xpad_elems * sizeof(T));
    const T **rows = (const T **)fnn_scratch(FNN_SCRATCH_CONV_ROWS, (size_t)d->ck * sizeof(T *));
    if (!xpad || !rows)
        return NULL;
    FN(build_xpad)(d, xn, xpad);
    if (!d->compact) {
        FN(direct_wide_rows)(d, xpad, rows);
        return rows;
    }
    T *bases = (T *)fnn_scratch(FNN_SCRATCH_CONV_BASES, (size_t)d->bases_elems * sizeof(T));
    if (!bases)
        return NULL;
    FN(build_bases)(d, xpad, bases);
    FN(compact_rows)(d, bases, rows);
    return rows;
}

/* The wide rows (MR x ldy at yw) of the MR filters from ir over the grid
 * positions [p0, p0 + wide): every output is the same sum wherever it falls in
 * a panel, so any split of the positions gives the same bits. */
static void FN(direct_panel)(const FN(direct_conv) *d, const T **rows, int64_t ir, int64_t p0, int64_t wide, T *yw,
                             int64_t ldy)
{
    for (int64_t pc = 0; pc < d->ck; pc += d->kc) {
        const int64_t kcur = d->ck - pc < d->kc ? d->ck - pc : d->kc;
        const T beta = pc == 0 ? (T)0 : (T)1;
        const T *ap = d->apack + ir * d->ck + pc * d->mr;
        const int live = (int)(d->f - ir < d->mr ? d->f - ir : d->mr);
        for (int64_t jr = 0; jr < wide; jr += d->nr) {
            if (live < d->mr && d->ukr_rows)
                d->ukr_rows(live, kcur, ap, rows + pc, p0 + jr, yw + ir * ldy + jr, ldy, (T)1, beta);
            else
                d->ukr(kcur, ap, rows + pc, p0 + jr, yw + ir * ldy + jr, ldy, (T)1, beta);
        }
    }
}

/* direct_strip in the compact layout: the microkernel writes y's rows in
 * place (the last part panel through a tile buffer), then the bias and the
 * activation while they are in L1, so no wide tile is copied out. */
static int FN(direct_strip_compact)(const FN(direct_conv) *d, const T **rows, int64_t oy0, int64_t oy1, T *yn)
{
    const int64_t plane = d->oh * d->ow, q0 = oy0 * d->ow, count = (oy1 - oy0) * d->ow;
    const int64_t full = count / d->nr * d->nr;
    T FNN_ALIGNED(64) edge[32 * 32];
    for (int64_t ir = 0; ir < d->f; ir += d->mr) {
        const int live = (int)(d->f - ir < d->mr ? d->f - ir : d->mr);
        T *yr = yn + ir * plane + q0;
        for (int64_t pc = 0; pc < d->ck; pc += d->kc) {
            const int64_t kcur = d->ck - pc < d->kc ? d->ck - pc : d->kc;
            const T beta = pc == 0 ? (T)0 : (T)1;
            const T *ap = d->apack + ir * d->ck + pc * d->mr;
            for (int64_t jr = 0; jr < count; jr += d->nr) {
                T *out = jr < full ? yr + jr : edge;
                const int64_t ldo = jr < full ? plane : d->nr;
                if (live < d->mr)
                    d->ukr_rows(live, kcur, ap, rows + pc, q0 + jr, out, ldo, (T)1, beta);
                else
                    d->ukr(kcur, ap, rows + pc, q0 + jr, out, ldo, (T)1, beta);
            }
        }
        if (full < count)
            FN(copy_rows)(d->isa, yr + full, plane, edge, d->nr, live, count - full);
        if (d->bias || d->act != FNN_ACT_IDENTITY)
            FN(fnn_bias_act)(d->isa, yr, plane, yr, plane, NULL, d->bias ? d->bias + ir : NULL, 1, live, count,
                             d->act, d->act_alpha);
    }
    return 0;
}

/* Output rows [oy0, oy1) of one image for every filter (no pooling), in this
 * thread's wide tile: threads may take an image's rows apart. The rows of
 * col^T are read from oy0 * gw on; the last panel reads at most NR - 1 values
 * past the whole grid's, within xpad's slack. */
static int FN(direct_strip)(const FN(direct_conv) *d, const T **rows, int64_t oy0, int64_t oy1, T *yn)
{
    if (d->compact)
        return FN(direct_strip_compact)(d, rows, oy0, oy1, yn);
    const int64_t wide = (oy1 - oy0) * d->gw, ldy = (wide + d->nr - 1) / d->nr * d->nr;
    T *yw = (T *)fnn_scratch(FNN_SCRATCH_CONV_YW, (size_t)(d->f_alloc * ldy) * sizeof(T));
    if (!yw)
        return -1;
    for (int64_t ir = 0; ir < d->f_alloc; ir += d->mr) {
        FN(direct_panel)(d, rows, ir, oy0 * d->gw, wide, yw, ldy);
        for (int64_t fi = ir; fi < ir + d->mr && fi < d->f; fi++)
            FN(fnn_bias_act)(d->isa, yn + fi * d->oh * d->ow + oy0 * d->ow, d->ow, yw + fi * ldy, d->gw, NULL,
                             d->bias ? d->bias + fi : NULL, 0, oy1 - oy0, d->ow, d->act, d->act_alpha);
    }
    return 0;
}

/* One image: y_n = act(W @ col^T + bias). Row ck = (ci, i, j) of col^T on the
 * wide grid is a contiguous slice of a phase plane (direct_row; at stride 1
 * xpad + ci*hp*wp + i*wp + j), so the microkernel reads B straight from the
 * padded image (in L2); the wide result (gw - ow garbage columns per output
 * row) is compacted with the epilogue: by direct_strip, or with pooling each
 * filter's plane into an L1 buffer, pooled from there into y. */
static int FN(direct_conv_image)(const FN(direct_conv) *d, const T *xn, T *yn, int32_t *amn)
{
    const T **rows = FN(direct_prepare)(d, xn);
    if (!rows)
        return -1;
    if (!d->pool)
        return FN(direct_strip)(d, rows, 0, d->oh, yn);
    T *yw = (T *)fnn_scratch(FNN_SCRATCH_CONV_YW, (size_t)(d->f_alloc * d->ldy) * sizeof(T));
    T *pl = (T *)fnn_scratch(FNN_SCRATCH_CONV_PLANE, (size_t)(d->oh * d->ow) * sizeof(T));
    const int64_t pp = d->poh * d->pow_;
    int64_t *am64 = (int64_t *)fnn_scratch(FNN_SCRATCH_POOL_INDEX, (size_t)pp * sizeof(int64_t));
    if (!yw || !pl || !am64)
        return -1;
    const fnn_ctx one = {1, d->isa, FNN_CONV_AUTO};
    const fnn_pool_spec *q = d->pool;
    /* float32 2x2 stride-2 windows after ReLU or no activation: the bias,
     * ReLU and pooling in one pass over each plane, as the SIMD pooling adds
     * them (fnn_max_pool_2x2s2_bias_act_i32; the I workload's conv + ReLU +
     * pool forward 0.88-0.90 -> 0.78-0.81 ms on AVX-512, 1.42-1.49 -> 1.30-1.39
     * on AVX2, with the pooling's compare path for NaN-free windows) */
    const int fused_pool = FNN_X86_SIMD && sizeof(T) == 4 && d->isa >= FNN_ISA_AVX2 &&
                           (d->act == FNN_ACT_IDENTITY || d->act == FNN_ACT_RELU) && q->ph == 2 && q->pw == 2 &&
                           q->sh == 2 && q->sw == 2 && q->padh == 0 && q->padw == 0 && d->ow <= INT32_MAX / 2;
    (void)fused_pool;
    /* one MR-row panel of filters at a time, compacted while its wide rows
     * (MR x ldy) are still in L1 */
    for (int64_t ir = 0; ir < d->f_alloc; ir += d->mr) {
        FN(direct_panel)(d, rows, ir, 0, d->pwide, yw, d->ldy);
        for (int64_t fi = ir; fi < ir + d->mr && fi < d->f; fi++) {
            T *src = yw + fi * d->ldy;
            const int64_t lds = d->compact ? d->ow : d->gw;
#if FNN_X86_SIMD
            /* a NaN bias on a NaN sum: which NaN an add returns is the compiler's
             * choice of operand order, so such a filter takes fnn_bias_act's */
            if (fused_pool && !(d->bias && d->bias[fi] != d->bias[fi])) {
                (d->isa >= FNN_ISA_AVX512 ? fnn_max_pool_2x2s2_bias_act_i32_avx512_f32
                                          : fnn_max_pool_2x2s2_bias_act_i32_avx2_f32)(
                    (const float *)src, lds, d->bias ? (const float *)(d->bias + fi) : NULL, d->act == FNN_ACT_RELU,
                    (float *)(yn + fi * pp), amn + fi * pp, d->ow, d->poh, d->pow_);
                continue;
            }
#endif
            /* in the compact layout each wide row is the filter's plane already:
             * the bias and activation in place */
            T *conv = d->compact ? src : pl;
            FN(fnn_bias_act)(d->isa, conv, d->ow, src, lds, NULL,
                             d->bias ? d->bias + fi : NULL, 0, d->oh, d->ow, d->act, d->act_alpha);
            FN(fnn_max_pool2d_plane_i32)(fnn_isa_of(one), conv, yn + fi * pp, amn + fi * pp, am64, d->oh, d->ow,
                                         q->ph, q->pw, q->sh, q->sw, q->padh, q->padw);
        }
    }
    return 0;
}

/* d for a convolution of (c, h, w) images by f filters (fh x fw), all but its
 * packed weights (d->apack, FNN_SCRATCH_CONV_W elements: f_alloc * ck) */
static void FN(direct_conv_setup)(fnn_ctx ctx, FN(direct_conv) *d, int64_t c, int64_t h, int64_t w, int64_t f,
                                  int64_t fh, int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                  const T *bias, int act, double act_alpha, const fnn_pool_spec *pool)
{
    d->pool = pool;
    fnn_gemm_tile_shape(ctx.isa, (int)sizeof(T), &d->mr, &d->nr);
    int64_t mc_unused, nc_unused;
    fnn_gemm_block_sizes(ctx.isa, (int)sizeof(T), &mc_unused, &d->kc, &nc_unused);
    const int64_t oh = (h + 2 * ph - fh) / sh + 1, gw = (w + 2 * pw + sw - 1) / sw;
    d->ldy = (oh * gw + d->nr - 1) / d->nr * d->nr;
    FN(direct_geom)(d, c, h, w, f, fh, fw, sh, sw, ph, pw, d->ldy);
    d->f_alloc = (f + d->mr - 1) / d->mr * d->mr;
    d->ukr = FN(select_ukri)(ctx.isa, &d->ukr_rows);
    /* the compact layout writes the last filter panel's live rows only: the
     * SIMD kernels' fewer-rows variants. Its bases are c * phases * fw copies
     * of the image, built for every image: at most half as many as filters
     * (a 2 -> 8 channel 4x4 layer on 100 x 100 images, 8 copies for 8
     * filters, was 15% slower than the wide grid; conv C has 5 for 30) */
    FN(compact_geom)(d, d->nr);
    const int64_t copies = c * d->phases * fw;
    d->compact = FN(compact_fits)(d) && d->ukr_rows != NULL && 2 * copies <= f;
    if (d->compact) {
        d->pwide = d->oh * d->ow;
        d->ldy = (d->pwide + d->nr - 1) / d->nr * d->nr;
    }
    d->bias = bias;
    d->act = act;
    d->act_alpha = act_alpha;
    d->isa = ctx.isa;
    d->poh = pool ? (d->oh + 2 * pool->padh - pool->ph) / pool->sh + 1 : 0;
    d->pow_ = pool ? (d->ow + 2 * pool->padw - pool->pw) / pool->sw + 1 : 0;
    d->apack = NULL;
}

/* job(arg, i) for the images i < n, batch-parallel: images are independent
 * here, so taking them by work spans changes no result; each thread does the
 * images of its even share (the same ones as in the backward's groups), or
 * fewer when it is preempted */
typedef int (*FN(image_job))(const void *arg, int64_t i);
static int FN(direct_images)(fnn_ctx ctx, int64_t n, FN(image_job) job, const void *arg)
{
    int nth = fnn_team_of(ctx);
    if (nth > n)
        nth = (int)n;
    int err = 0;
    if (nth <= 1) {
        for (int64_t i = 0; i < n && !err; i++)
            err = job(arg, i);
        return err ? -1 : 0;
    }
#ifdef FASTNN_HAVE_OPENMP
    fnn_span spans[FNN_SPANS_MAX];
    if (nth > FNN_SPANS_MAX)
        nth = FNN_SPANS_MAX;
    fnn_spans_init(spans, nth, n);
#pragma omp parallel num_threads(nth) reduction(| : err)
    for (int64_t i; (i = fnn_spans_next(spans, nth, omp_get_thread_num())) >= 0;)
        if (!err)
            err |= job(arg, i) != 0;
#endif
    return err ? -1 : 0;
}

typedef struct {
    const FN(direct_conv) *d;
    const T *x;
    T *y;
    int32_t *argmax;
    int64_t chw, fp;
} FN(direct_forward_job);

static int FN(direct_forward_image)(const void *arg, int64_t i)
{
    const FN(direct_forward_job) *j = (const FN(direct_forward_job) *)arg;
    return FN(direct_conv_image)(j->d, j->x + i * j->chw, j->y + i * j->fp, j->argmax ? j->argmax + i * j->fp : NULL);
}

/* Whether the threads should share each image by output rows: fewer images
 * than threads, a product large enough to thread (2^22 multiply-adds an image),
 * no pooling (it needs whole planes), a few rows a thread, and filters (which
 * every thread then reads whole) of at most half the image's size; elsewhere
 * the general path threads inside the image. Batch-1 inference on 2 threads, ms,
 * general path -> rows: the 7x7 stride-2 stem on (3, 224, 224) 1.78-1.86 ->
 * 1.22-1.53; 3x3 stride 2, 64 -> 128 channels on 56 x 56, 0.77-1.06 ->
 * 0.80-0.86; 128 -> 256 on 28 x 28 (filters 6x the image) 0.74-0.93 -> 0.98-1.02. */
static int FN(direct_strips_pay)(fnn_ctx ctx, int64_t n, int64_t oh, int pooled, double macs_per_image,
                                 double filter_elems, double image_elems)
{
    int nth = fnn_team_of(ctx);
    return nth > 1 && n < nth && !pooled && oh >= 4 * (int64_t)nth &&
           macs_per_image >= FNN_CONV_MIN_MACS_INNER_PARALLEL && 2 * filter_elems <= image_elems;
}

/* y (N, F, oh, ow) = act(conv(x, wt) + bias), batch-parallel. */
static int FN(direct_conv_run)(fnn_ctx ctx, const T *x, int64_t n, int64_t c, int64_t h, int64_t w, const T *wt,
                               int64_t f, int64_t fh, int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                               const T *bias, int act, double act_alpha, const fnn_pool_spec *pool, T *y,
                               int32_t *argmax)
{
    FN(direct_conv) d;
    FN(direct_conv_setup)(ctx, &d, c, h, w, f, fh, fw, sh, sw, ph, pw, bias, act, act_alpha, pool);
    T *apack = (T *)fnn_scratch(FNN_SCRATCH_CONV_W, (size_t)(d.f_alloc * d.ck) * sizeof(T));
    if (!apack)
        return -1;
    fnn_matrix_src as = {wt, d.ck, 0, ctx.isa};
    FN(fnn_pack_matrix)(&as, 0, f, 0, d.ck, d.mr, apack);
    d.apack = apack;
    FN(direct_forward_job) job = {&d, x, y, pool ? argmax : NULL, c * h * w, f * (pool ? d.poh * d.pow_ : d.oh * d.ow)};
    int nth = fnn_team_of(ctx);
    (void)nth; /* without OpenMP */
    if (!FN(direct_strips_pay)(ctx, n, d.oh, pool != NULL, (double)d.f * (double)(d.oh * d.ow) * (double)d.ck,
                               (double)(f * d.ck), (double)(c * h * w)))
        return FN(direct_images)(ctx, n, FN(direct_forward_image), &job);
#ifdef FASTNN_HAVE_OPENMP
    /* fewer images than threads (batch-1 inference): the threads take each image's
     * output rows apart, over the one padded image */
    for (int64_t i = 0; i < n; i++) {
        const T **rows = FN(direct_prepare)(&d, x + i * job.chw);
        if (!rows)
            return -1;
        int err = 0;
#pragma omp parallel num_threads(nth) reduction(| : err)
        {
            const int t = omp_get_thread_num(), tn = omp_get_num_threads();
            const int64_t oy0 = d.oh * t / tn, oy1 = d.oh * (t + 1) / tn;
            if (oy0 < oy1)
                err |= FN(direct_strip)(&d, rows, oy0, oy1, y + i * job.fp) != 0;
        }
        if (err)
            return -1;
    }
#endif
    return 0;
}

/* Stride above 1: dx by phases. Padded position (py, px) of dx with py = sh P + a,
 * px = sw Q + b receives the taps i = a + sh u, j = b + sw v from dy[P - u, Q - v],
 * so each phase (a, b) of dx is a stride-1 convolution of dy (padded by ku - 1,
 * kv - 1) with the flipped taps of its ku x kv sub-filters, channel-transposed:
 * every tap read once, no zeros inserted between dy's values, each image's
 * phases computed in L2 and copied into dx. */
#define FNN_DGRAD_PHASES_MAX 16
typedef struct {
    FN(direct_conv) d[FNN_DGRAD_PHASES_MAX];
    int64_t a[FNN_DGRAD_PHASES_MAX], b[FNN_DGRAD_PHASES_MAX];
    int phases;
    int covers_all; /* every position of dx lies in some phase's plane */
    const T *dy;
    T *dx;
    const fnn_conv_geom *g;
    int64_t f, plane_max;
} FN(strided_dgrad_job);

static int FN(strided_dgrad_image)(const void *arg, int64_t i)
{
    const FN(strided_dgrad_job) *j = (const FN(strided_dgrad_job) *)arg;
    const fnn_conv_geom *g = j->g;
    const T *dyn = j->dy + i * j->f * g->oh * g->ow;
    T *dxn = j->dx + i * g->c * g->h * g->w;
    T *out = (T *)fnn_scratch(FNN_SCRATCH_CONV_DCOL, (size_t)(g->c * j->plane_max) * sizeof(T));
    if (!out)
        return -1;
    /* positions no tap reaches (a phase beyond the filter, rows past the last window) are 0 */
    if (!j->covers_all)
        memset(dxn, 0, (size_t)(g->c * g->h * g->w) * sizeof(T));
    for (int q = 0; q < j->phases; q++) {
        const FN(direct_conv) *d = &j->d[q];
        if (FN(direct_conv_image)(d, dyn, out, NULL))
            return -1;
        const int64_t P = d->oh, Q = d->ow; /* this phase's plane */
        /* P, Q range over the phase's rows and columns that lie inside dx */
        const int64_t p0 = (g->ph - j->a[q] + g->sh - 1) / g->sh, q0 = (g->pw - j->b[q] + g->sw - 1) / g->sw;
        for (int64_t ci = 0; ci < g->c; ci++)
            for (int64_t pp = p0; pp < P; pp++) {
                const int64_t iy = g->sh * pp + j->a[q] - g->ph;
                if (iy >= g->h)
                    break;
                const T *src = out + (ci * P + pp) * Q;
                T *row = dxn + (ci * g->h + iy) * g->w;
                for (int64_t qq = q0, ix = g->sw * q0 + j->b[q] - g->pw; qq < Q && ix < g->w; qq++, ix += g->sw)
                    row[ix] = src[qq];
            }
    }
    return 0;
}

/* Returns 1 where the phases do not apply (too many), else 0 or -1. */
static int FN(strided_dgrad_run)(fnn_ctx ctx, const T *dy, const T *wt, const fnn_conv_geom *g, int64_t n, int64_t f,
                                 T *dx)
{
    if (g->sh * g->sw > FNN_DGRAD_PHASES_MAX)
        return 1;
    FN(strided_dgrad_job) *job = (FN(strided_dgrad_job) *)malloc(sizeof(*job));
    if (!job)
        return -1;
    job->phases = 0;
    job->dy = dy;
    job->dx = dx;
    job->g = g;
    job->f = f;
    job->plane_max = 0;
    const int64_t c = g->c, fh = g->fh, fw = g->fw;
    int64_t packed = 0; /* elements of all the phases' packed filters */
    for (int64_t a = 0; a < g->sh && a < fh; a++)
        for (int64_t b = 0; b < g->sw && b < fw; b++) {
            const int64_t ku = (fh - a + g->sh - 1) / g->sh, kv = (fw - b + g->sw - 1) / g->sw;
            FN(direct_conv) *d = &job->d[job->phases];
            FN(direct_conv_setup)(ctx, d, f, g->oh, g->ow, c, ku, kv, 1, 1, ku - 1, kv - 1, NULL, FNN_ACT_IDENTITY,
                                  0.0, NULL);
            job->a[job->phases] = a;
            job->b[job->phases] = b;
            job->phases++;
            packed += d->f_alloc * d->ck;
            if (d->oh * d->ow > job->plane_max)
                job->plane_max = d->oh * d->ow;
        }
    int64_t most = 0;
    for (int q = 0; q < job->phases; q++)
        most = job->d[q].ck * c > most ? job->d[q].ck * c : most;
    /* row iy of dx (padded: sh P + a) lies in a phase plane when a < fh and P is below
     * that plane's oh + ku - 1 rows (ku = ceil((fh - a) / sh)); the columns alike */
    job->covers_all = 1;
    for (int64_t iy = 0; iy < g->h; iy++) {
        const int64_t a = (iy + g->ph) % g->sh, P = (iy + g->ph) / g->sh;
        job->covers_all &= a < fh && P < g->oh + (fh - a + g->sh - 1) / g->sh - 1;
    }
    for (int64_t ix = 0; ix < g->w; ix++) {
        const int64_t b = (ix + g->pw) % g->sw, Q = (ix + g->pw) / g->sw;
        job->covers_all &= b < fw && Q < g->ow + (fw - b + g->sw - 1) / g->sw - 1;
    }
    T *packs = (T *)malloc((size_t)(packed + 1) * sizeof(T));
    T *sub = (T *)malloc((size_t)(most + 1) * sizeof(T));
    int rc = packs && sub ? 0 : -1;
    T *at = packs;
    for (int q = 0; q < job->phases && rc == 0; q++) {
        FN(direct_conv) *d = &job->d[q];
        const int64_t ku = d->fh, kv = d->fw, a = job->a[q], b = job->b[q];
        /* sub[ci][fi][u][v] = wt[fi][ci][a + sh (ku - 1 - u)][b + sw (kv - 1 - v)] */
        for (int64_t ci = 0; ci < c; ci++)
            for (int64_t fi = 0; fi < f; fi++)
                for (int64_t u = 0; u < ku; u++)
                    for (int64_t v = 0; v < kv; v++)
                        sub[((ci * f + fi) * ku + u) * kv + v] =
                            wt[((fi * c + ci) * fh + a + g->sh * (ku - 1 - u)) * fw + b + g->sw * (kv - 1 - v)];
        fnn_matrix_src as = {sub, d->ck, 0, ctx.isa};
        FN(fnn_pack_matrix)(&as, 0, c, 0, d->ck, d->mr, at);
        d->apack = at;
        at += d->f_alloc * d->ck;
    }
    if (rc == 0)
        rc = FN(direct_images)(ctx, n, FN(strided_dgrad_image), job);
    free(sub);
    free(packs);
    free(job);
    return rc;
}

/* sum[t] = the sum over q of p[q * nr + t] in the order of q, t < nr: the
 * column sums of a weight-gradient B panel (the bias gradient). On the SIMD
 * paths nr is two vectors, kept in registers (the loop with a run-time nr,
 * compiled for SSE2, went through the stack: 8% of conv C's weight gradient). */
#if FNN_X86_SIMD
#define FNN_DEFINE_PANEL_SUMS(TARGET, NAME, W)                                      \
    TARGET static void NAME(const T *FNN_RESTRICT p, int64_t rows, T *FNN_RESTRICT sum) \
    {                                                                               \
        T acc[W] = {0};                                                             \
        for (int64_t q = 0; q < rows; q++)                                          \
            for (int t = 0; t < (W); t++)                                           \
                acc[t] += p[q * (W) + t];                                           \
        for (int t = 0; t < (W); t++)                                               \
            sum[t] = acc[t];                                                        \
    }
FNN_DEFINE_PANEL_SUMS(FNN_TARGET_AVX512, FN(panel_sums_avx512), 128 / (int)sizeof(T))
FNN_DEFINE_PANEL_SUMS(FNN_TARGET_AVX2, FN(panel_sums_avx2), 64 / (int)sizeof(T))
#undef FNN_DEFINE_PANEL_SUMS
#endif

static void FN(panel_sums)(int isa, const T *p, int64_t rows, int nr, T *sum)
{
#if FNN_X86_SIMD
    if (isa >= FNN_ISA_AVX512 && nr == 128 / (int)sizeof(T)) {
        FN(panel_sums_avx512)(p, rows, sum);
        return;
    }
    if (isa >= FNN_ISA_AVX2 && nr == 64 / (int)sizeof(T)) {
        FN(panel_sums_avx2)(p, rows, sum);
        return;
    }
#else
    (void)isa;
#endif
    for (int t = 0; t < nr; t++)
        sum[t] = 0;
    for (int64_t q = 0; q < rows; q++)
        for (int t = 0; t < nr; t++)
            sum[t] += p[q * nr + t];
}

/* Output rows ahead of the transposes that the weight gradient asks dy's rows for. */
#define FNN_WGRAD_DY_AHEAD 2

/* Depth block of the direct weight gradient: the B micro-panel KC x NR stays in L1. */
#define FNN_CONV_WGRAD_KC 128

/* dwt (ck_alloc x ldw) = beta * dwt + col_n^T @ dy_n^T on the padded-width grid:
 * A rows are slices of the padded image (indirect), B is dy_n transposed into
 * NR-wide panels with zeros on the wp - ow garbage columns (so they add nothing). */
static int FN(direct_wgrad_image)(const FN(direct_conv) *d, FN(ukra_fn) ukr, FN(ukra_rows_fn) ukr_rows, const T *xn, const T *dyn,
                                  int64_t ck_alloc, int64_t ldw, T beta, T *dwt, T *db)
{
    const int64_t kdepth = d->pwide;
    const int64_t fpanels = ldw / d->nr;
    T *xpad = (T *)fnn_scratch(FNN_SCRATCH_CONV_XPAD, (size_t)(d->xpad_elems + kdepth) * sizeof(T));
    T *bpack = (T *)fnn_scratch(FNN_SCRATCH_CONV_YW, (size_t)(fpanels * kdepth * d->nr) * sizeof(T));
    const T **rows = (const T **)fnn_scratch(FNN_SCRATCH_CONV_ROWS, (size_t)ck_alloc * sizeof(T *));
    if (!xpad || !bpack || !rows)
        return -1;
    FN(build_xpad)(d, xn, xpad);
    T *zeros = xpad + d->xpad_elems; /* rows past ck read zeros */
    memset(zeros, 0, (size_t)kdepth * sizeof(T));
    FN(direct_wide_rows)(d, xpad, rows);
    for (int64_t k = d->ck; k < ck_alloc; k++)
        rows[k] = zeros;
    const int nr = d->nr;
    /* dy_n (f, oh, ow) -> panels [fp][q][nr], zero on the garbage columns and
     * on the filters past f: a register transpose of each (nr x ow) row block */
    for (int64_t fp = 0; fp < fpanels; fp++) {
        T *bp = bpack + fp * kdepth * nr;
        const int64_t live = d->f - fp * nr < nr ? d->f - fp * nr : nr;
        for (int64_t oy = 0; oy < d->oh; oy++) {
            T *dst = bp + oy * d->gw * nr;
            /* dy's rows stream from memory, one stream a filter: more than the
             * prefetchers follow (conv C's backward 2.37 -> 2.31 ms with this) */
            if (oy + FNN_WGRAD_DY_AHEAD < d->oh)
                for (int64_t t = 0; t < live; t++) {
                    const char *row = (const char *)(dyn + ((fp * nr + t) * d->oh + oy + FNN_WGRAD_DY_AHEAD) * d->ow);
                    for (int64_t b = 0; b < d->ow * (int64_t)sizeof(T); b += 64)
                        __builtin_prefetch(row + b, 0, 3);
                }
            FN(fnn_transpose)(d->isa, dyn + (fp * nr * d->oh + oy) * d->ow, d->oh * d->ow, live, d->ow, nr, dst, nr);
            memset(dst + d->ow * nr, 0, (size_t)((d->gw - d->ow) * nr) * sizeof(T));
        }
        /* the bias gradient from the panel while it is in L1, so dy is read once:
         * this image's sum per filter, then added to the group's */
        T sum[32];
        FN(panel_sums)(d->isa, bp, kdepth, nr, sum);
        for (int t = 0; t < nr; t++)
            db[fp * nr + t] = beta == 0 ? sum[t] : db[fp * nr + t] + sum[t];
    }
    for (int64_t pc = 0; pc < kdepth; pc += FNN_CONV_WGRAD_KC) {
        const int64_t kcur = kdepth - pc < FNN_CONV_WGRAD_KC ? kdepth - pc : FNN_CONV_WGRAD_KC;
        const T b = pc == 0 ? beta : (T)1;
        for (int64_t fp = 0; fp < fpanels; fp++) {
            const T *bp = bpack + fp * kdepth * nr + pc * nr;
            for (int64_t ir = 0; ir < ck_alloc; ir += d->mr) {
                /* rows of dW^T past ck are never read: the last panel computes only its live rows */
                const int live = (int)(d->ck - ir < d->mr ? d->ck - ir : d->mr);
                if (live < d->mr && ukr_rows)
                    ukr_rows(live, kcur, rows + ir, pc, bp, dwt + ir * ldw + fp * nr, ldw, (T)1, b);
                else
                    ukr(kcur, rows + ir, pc, bp, dwt + ir * ldw + fp * nr, ldw, (T)1, b);
            }
        }
    }
    return 0;
}

/* ---- the weight gradient as dot products (small c * fh * fw) ------------- */

/* The blocks of the dot path: dy's rows (filters) by col's rows (the taps,
 * then a row of ones: the bias gradient), dm x dn at a time; ukr NULL where
 * the GEMM path takes the weight gradient. */
typedef struct {
    FN(ukrd_fn) ukr;
    int dm, dn, lanes;
    int64_t fblocks, kblocks;
    /* or, from a pooled gradient, the gathered path (gather_wgrad_plan): rows
     * of kp values (a 1, then the ck taps), nv vectors of the kernel each */
    FN(ukrs_fn) gather;
    int nv;
    int64_t kp;
    int patch_fast; /* float32 rows of 32 on AVX-512: patch_plan builds them */
    fnn_patch_plan patch_plan;
} FN(dot_wgrad);

static void FN(dot_wgrad_plan)(int isa, const FN(direct_conv) *d, FN(dot_wgrad) *w)
{
    w->ukr = FN(select_ukrd)(isa, &w->dm, &w->dn, &w->lanes);
    /* Up to FNN_CONV_COMPACT_MAX_CK taps, where the GEMM's tiles (MR taps by NR
     * filters over the wide grid) are a quarter padding or more (conv C: 25
     * taps in 32 rows, 30 filters in 32 columns, 28 columns a row for 24
     * outputs: 1.59 times the work). Measured against the GEMM, 1 thread: 25
     * and 27 taps 15-20% faster, 9 taps of 16 filters 30%; 36 and 72 taps
     * slower; a 1x1 layer of 32 -> 64 channels, whose tiles have no padding,
     * 10-20% slower. */
    const double padding = (double)((d->ck + d->mr - 1) / d->mr * d->mr) / (double)d->ck *
                           (double)((d->f + d->nr - 1) / d->nr * d->nr) / (double)d->f * (double)d->gw / (double)d->ow;
    if (!FN(compact_fits)(d) || padding < 1.25)
        w->ukr = NULL;
    w->fblocks = (d->f + w->dm - 1) / w->dm;
    w->kblocks = (d->ck + 1 + w->dn - 1) / w->dn;
}

/* Elements of one partial sum of the weight gradient: the dot path's lane
 * sums, or the GEMM path's dW^T (ck_alloc x ldw) and db. */
static size_t FN(wgrad_part_elems)(const FN(dot_wgrad) *w, int64_t ck_alloc, int64_t ldw)
{
    if (w->gather)
        return (size_t)(w->fblocks * w->kp);
    if (w->ukr)
        return (size_t)(w->fblocks * w->kblocks * w->dm * w->dn * w->lanes);
    return (size_t)(ck_alloc * ldw + ldw);
}

/* Filter fi's gradient for tap k (k = ck: its bias gradient) in one partial sum. */
static inline T FN(wgrad_part_value)(const FN(dot_wgrad) *w, const T *part, int64_t ck, int64_t ck_alloc, int64_t ldw,
                                     int64_t fi, int64_t k)
{
    if (w->gather)
        return part[fi * w->kp + (k == ck ? 0 : 1 + k)];
    if (!w->ukr)
        return k == ck ? part[ck_alloc * ldw + fi] : part[k * ldw + fi];
    const T *lane = part + (((fi / w->dm) * w->kblocks + k / w->dn) * w->dm * w->dn + (fi % w->dm) * w->dn +
                            k % w->dn) * w->lanes;
    T s = lane[0];
    for (int t = 1; t < w->lanes; t++)
        s += lane[t];
    return s;
}

/* part += the lane sums of dy_n's rows dotted with col_n's rows (and with a row
 * of ones) over the oh * ow output positions, in blocks of dm x dn; col_n's
 * rows in the compact layout (direct_conv). */
static int FN(dot_wgrad_image)(const FN(direct_conv) *d, const FN(dot_wgrad) *w, const T *xn, const T *dyn, T *part)
{
    const int64_t pp = d->oh * d->ow;
    const int64_t arows = w->fblocks * w->dm, krows = w->kblocks * w->dn;
    T *xpad = (T *)fnn_scratch(FNN_SCRATCH_CONV_XPAD, (size_t)d->xpad_elems * sizeof(T));
    T *bases = (T *)fnn_scratch(FNN_SCRATCH_CONV_BASES, (size_t)(d->bases_elems + 2 * pp) * sizeof(T));
    const T **rows = (const T **)fnn_scratch(FNN_SCRATCH_CONV_ROWS, (size_t)(arows + krows) * sizeof(T *));
    if (!xpad || !bases || !rows)
        return -1;
    FN(build_xpad)(d, xn, xpad);
    FN(build_bases)(d, xpad, bases);
    T *zeros = bases + d->bases_elems, *ones = zeros + pp;
    for (int64_t q = 0; q < pp; q++) {
        zeros[q] = 0;
        ones[q] = 1;
    }
    const T **frow = rows, **krow = rows + arows;
    for (int64_t fi = 0; fi < arows; fi++)
        frow[fi] = fi < d->f ? dyn + fi * pp : zeros;
    FN(compact_rows)(d, bases, krow);
    for (int64_t k = d->ck; k < krows; k++)
        krow[k] = k == d->ck ? ones : zeros;
    const int64_t block = w->dm * w->dn * w->lanes;
    for (int64_t fb = 0; fb < w->fblocks; fb++)
        for (int64_t kb = 0; kb < w->kblocks; kb++)
            w->ukr(pp, frow + fb * w->dm, krow + kb * w->dn, part + (fb * w->kblocks + kb) * block);
    return 0;
}

static int FN(conv_dgrad_image)(fnn_ctx ctx, const T *dyn, const T *wt, const fnn_conv_geom *g, int64_t f, T *dxn,
                                int scratch_slot);

/* dy given as the gradient dp of the pooled output yp of a max pooling of the
 * activated convolution's output: dp, yp and argmax (N, F, poh, pow), the
 * latter as fnn_max_pool2d_backward takes it */
typedef struct {
    const T *dp, *yp;
    int act;
    double act_alpha;
    const int32_t *argmax;
    int64_t poh, pow_;
} FN(pooled_grad);

/* ---- the weight gradient from a pooled gradient, gathered ------------------ */

/* Elements that the patch copies move at a time (fixed-size copies compile to
 * vector moves; a run's excess is overwritten by the next run) */
#define FNN_PATCH_CHUNK 8

/* off[r]: where run r = (ci, i) of a patch row (its fw taps) starts in the
 * padded copy of the image, from the output position's corner */
static void FN(patch_offsets)(const FN(direct_conv) *d, int64_t *off)
{
    for (int64_t r = 0; r < d->c * d->fh; r++)
        off[r] = (r / d->fh * d->hp + r % d->fh) * d->wp;
}

/* With a pooled gradient and no data gradient, dW sums each pooled value
 * times the taps of the position that won its window, rows of the image's
 * patches (im2col's, one a position): pooled positions times the taps, where
 * the dense product (un-pooling, then dot products over every position) does
 * 4 times that for 2x2 pooling, mostly on zeros. Where the SIMD path has the
 * gathered-row kernel, the patches are small enough (the compact layout's
 * bound) and the pooling at least halves the positions. Conv C's weight
 * gradient from its pooled gradient with ReLU (the I workload's), 1 thread:
 * un-pooling and dot products 0.99-1.10 ms, gathered 0.77-0.79 ms. */
static void FN(gather_wgrad_plan)(int isa, const FN(direct_conv) *d, const FN(pooled_grad) *pg, int need_dx,
                                  FN(dot_wgrad) *w)
{
    int lanes;
    w->gather = NULL;
    if (!pg || need_dx || 2 * pg->poh * pg->pow_ > d->oh * d->ow || d->ck > FNN_CONV_COMPACT_MAX_CK)
        return;
    const FN(ukrs_fn) kern = FN(select_ukrs)(isa, &lanes);
    const int64_t kp = (1 + d->ck + lanes - 1) / lanes * lanes;
    if (!kern || kp / lanes > FNN_UKRS_MAX_NV ||
        d->oh * d->ow * kp * (int64_t)sizeof(T) > FNN_CONV_COMPACT_MAX_BYTES)
        return;
    w->gather = kern;
    w->nv = (int)(kp / lanes);
    w->kp = kp;
    w->fblocks = d->f;
    int64_t off[FNN_CONV_COMPACT_MAX_CK];
    FN(patch_offsets)(d, off);
    w->patch_fast = sizeof(T) == 4 && isa >= FNN_ISA_AVX512 &&
                    fnn_patch_plan_f32(&w->patch_plan, d->c * d->fh, d->fw, off);
}

/* Elements of the padded copy of an image that the patch copies read: its
 * c planes of hp x wp, and a last run's copies past the end. */
static int64_t FN(patch_source_elems)(const FN(direct_conv) *d, int64_t kp)
{
    return d->c * d->hp * d->wp + kp + FNN_PATCH_CHUNK;
}

/* Row p = oy * ow + ox of the patches: a 1 (the bias's tap), then tap (ci, i,
 * j) = xp[ci, oy*sh + i, ox*sw + j] at 1 + (ci * fh + i) * fw + j, from the
 * padded copy xp; the last run's copies go on to the row's end (image values
 * on lanes the caller drops) and past it into the next row, written after. The
 * buffer holds FNN_PATCH_CHUNK elements past the last row. AVX2 moves: the
 * gathered path is SIMD only (memcpy, inlined, took two 16-byte moves a chunk). */
#if FNN_X86_SIMD
FNN_TARGET_AVX2 static inline void FN(patch_chunk)(T *dst, const T *src)
{
    for (size_t b = 0; b < FNN_PATCH_CHUNK * sizeof(T); b += 32)
        _mm256_storeu_si256((__m256i *)((char *)dst + b), _mm256_loadu_si256((const __m256i *)((const char *)src + b)));
}
#else
static inline void FN(patch_chunk)(T *dst, const T *src) { memcpy(dst, src, FNN_PATCH_CHUNK * sizeof(T)); }
#endif

FNN_TARGET_AVX2 static void FN(build_patches)(const FN(direct_conv) *d, const T *xp, int64_t kp, T *patches)
{
    const int64_t runs = d->c * d->fh, fw = d->fw, last_len = kp - 1 - (runs - 1) * fw;
    int64_t off[FNN_CONV_COMPACT_MAX_CK];
    FN(patch_offsets)(d, off);
    for (int64_t oy = 0; oy < d->oh; oy++)
        for (int64_t ox = 0; ox < d->ow; ox++) {
            T *dst = patches + (oy * d->ow + ox) * kp;
            const T *src = xp + oy * d->sh * d->wp + ox * d->sw;
            dst[0] = 1;
            T *t = dst + 1;
            if (fw <= FNN_PATCH_CHUNK) {
                for (int64_t r = 0; r < runs - 1; r++, t += fw)
                    FN(patch_chunk)(t, src + off[r]);
            } else {
                for (int64_t r = 0; r < runs - 1; r++, t += fw)
                    for (int64_t c0 = 0; c0 < fw; c0 += FNN_PATCH_CHUNK)
                        FN(patch_chunk)(t + c0, src + off[r] + c0);
            }
            for (int64_t c0 = 0; c0 < last_len; c0 += FNN_PATCH_CHUNK)
                FN(patch_chunk)(t + c0, src + off[runs - 1] + c0);
        }
}

/* part (f rows of kp) += image i's gathered weight gradient (first: part
 * starts at 0). */
static int FN(gather_wgrad_image)(const FN(direct_conv) *d, const FN(dot_wgrad) *w, const FN(pooled_grad) *pg,
                                  int isa, const T *xn, int64_t i, int first, T *part)
{
    const int64_t pp = pg->poh * pg->pow_, plane = d->oh * d->ow, kp = w->kp;
    const int64_t src_elems = FN(patch_source_elems)(d, kp);
    T *xp = (T *)fnn_scratch(FNN_SCRATCH_CONV_XPAD, (size_t)src_elems * sizeof(T));
    T *patches = (T *)fnn_scratch(FNN_SCRATCH_CONV_BASES, (size_t)(plane * kp + FNN_PATCH_CHUNK) * sizeof(T));
    T *g = (T *)fnn_scratch(FNN_SCRATCH_CONV_PLANE, (size_t)(d->f * pp) * sizeof(T));
    if (!xp || !patches || !g)
        return -1;
    if (first)
        memset(part, 0, FN(wgrad_part_elems)(w, 0, 0) * sizeof(T));
    const int64_t copied = d->c * d->hp * d->wp;
    if (d->ph || d->pw)
        memset(xp, 0, (size_t)copied * sizeof(T));
    memset(xp + copied, 0, (size_t)(src_elems - copied) * sizeof(T));
    for (int64_t ci = 0; ci < d->c; ci++)
        for (int64_t iy = 0; iy < d->h; iy++)
            memcpy(xp + (ci * d->hp + iy + d->ph) * d->wp + d->pw, xn + (ci * d->h + iy) * d->w,
                   (size_t)d->w * sizeof(T));
#if FNN_X86_SIMD
    if (w->patch_fast)
        fnn_build_patches_avx512_f32(&w->patch_plan, (const float *)xp, d->oh, d->ow, d->sh, d->sw, d->wp,
                                     (float *)patches);
    else
#endif
        FN(build_patches)(d, xp, kp, patches);
    const T *gi = pg->dp + i * d->f * pp;
    if (pg->act != FNN_ACT_IDENTITY) {
        FN(fnn_act_grad_from_y_mul_serial)(isa, gi, pg->yp + i * d->f * pp, g, d->f * pp, pg->act, pg->act_alpha);
        gi = g;
    }
    const int32_t *am = pg->argmax + i * d->f * pp;
    for (int64_t fi = 0; fi < d->f; fi++)
        w->gather(pp, gi + fi * pp, am + fi * pp, patches, kp, w->nv, part + fi * kp);
    return 0;
}

/* Image i of the direct backward: its dW^T and db partials (beta = 0: the
 * first image of a group), and dx_i when dxi is set (its GEMM with dctx's
 * threads). With pg, dy_i is first un-pooled into a per-thread buffer (L2), so
 * the full dy never exists. */
static int FN(direct_backward_image)(const FN(direct_conv) *d, const FN(dot_wgrad) *dot, FN(ukra_fn) ukr,
                                     FN(ukra_rows_fn) ukr_rows, fnn_ctx dctx, const T *xi, const T *dyi,
                                     const FN(pooled_grad) *pg, int64_t i, int64_t ck_alloc, int64_t ldw, T beta,
                                     T *dwt, T *dbt, const T *wt, const fnn_conv_geom *g, T *dxi)
{
    if (dot->gather)
        return FN(gather_wgrad_image)(d, dot, pg, fnn_isa_of(dctx), xi, i, beta == 0, dwt);
    const T *dyn = dyi;
    if (pg) {
        const int64_t plane = d->oh * d->ow, pp = pg->poh * pg->pow_;
        T *buf = (T *)fnn_scratch(FNN_SCRATCH_CONV_DY, (size_t)(d->f * plane) * sizeof(T));
        if (!buf)
            return -1;
        const T *dpi = pg->dp + i * d->f * pp, *relu_y = NULL;
        /* the activation's derivative at the pooled positions, where its maxima
         * are: ReLU's inside the un-pooling, the others first into L1 (the
         * image's: no array of the whole batch); g, a plane's where the
         * un-pooling needs it apart */
        T *g = (T *)fnn_scratch(FNN_SCRATCH_CONV_PLANE, (size_t)(d->f * pp) * sizeof(T));
        int64_t *am64 = (int64_t *)fnn_scratch(FNN_SCRATCH_POOL_INDEX, (size_t)pp * sizeof(int64_t));
        if (!g || !am64)
            return -1;
        if (pg->act == FNN_ACT_RELU) {
            relu_y = pg->yp + i * d->f * pp;
        } else if (pg->act != FNN_ACT_IDENTITY) {
            FN(fnn_act_grad_from_y_mul_serial)(fnn_isa_of(dctx), dpi, pg->yp + i * d->f * pp, g, d->f * pp,
                                               pg->act, pg->act_alpha);
            dpi = g;
        }
        for (int64_t fi = 0; fi < d->f; fi++)
            FN(fnn_max_pool2d_backward_plane_i32)(fnn_isa_of(dctx), dpi + fi * pp, relu_y ? relu_y + fi * pp : NULL,
                                                  pg->argmax + (i * d->f + fi) * pp, am64, g, buf + fi * plane,
                                                  d->oh, d->ow, pg->poh, pg->pow_);
        dyn = buf;
    }
    int err;
    if (dot->ukr) {
        if (beta == 0)
            memset(dwt, 0, FN(wgrad_part_elems)(dot, ck_alloc, ldw) * sizeof(T));
        err = FN(dot_wgrad_image)(d, dot, xi, dyn, dwt);
    } else {
        err = FN(direct_wgrad_image)(d, ukr, ukr_rows, xi, dyn, ck_alloc, ldw, beta, dwt, dbt);
    }
    if (!err && dxi)
        err = FN(conv_dgrad_image)(dctx, dyn, wt, g, d->f, dxi, FNN_SCRATCH_CONV_DCOL);
    return err;
}

/* dw (F x CK) and db, batch-parallel: per-thread dW^T partials,
 * then a fixed-order sum and transpose. With dx set, also the data gradient by
 * col2im (conv_dgrad_image), image by image while that image's dy is in cache.
 * dy, or pg (then dy is NULL). */
static int FN(direct_wgrad_run)(fnn_ctx ctx, const T *dy, const FN(pooled_grad) *pg, const T *x, int64_t n,
                                int64_t c, int64_t h, int64_t w, int64_t f, int64_t fh, int64_t fw, int64_t ph,
                                int64_t pw, T *dw, T *db, const T *wt, const fnn_conv_geom *g, T *dx)
{
    FN(direct_conv) d;
    memset(&d, 0, sizeof(d));
    fnn_gemm_tile_shape(ctx.isa, (int)sizeof(T), &d.mr, &d.nr);
    const int64_t oh = (h + 2 * ph - fh) / g->sh + 1, gw = (w + 2 * pw + g->sw - 1) / g->sw;
    /* the products read each row of col^T over the wide grid's oh * gw positions */
    FN(direct_geom)(&d, c, h, w, f, fh, fw, g->sh, g->sw, ph, pw, oh * gw);
    d.isa = ctx.isa;
    const int64_t ck_alloc = (d.ck + d.mr - 1) / d.mr * d.mr;
    const int64_t ldw = (f + d.nr - 1) / d.nr * d.nr;
    FN(ukra_rows_fn) ukr_rows;
    FN(ukra_fn) ukr = FN(select_ukra)(ctx.isa, &ukr_rows);
    FN(compact_geom)(&d, 0); /* the dot kernels read no element past a row */
    FN(dot_wgrad) dot;
    FN(dot_wgrad_plan)(ctx.isa, &d, &dot);
    FN(gather_wgrad_plan)(ctx.isa, &d, pg, dx != NULL, &dot);
    const size_t part = FN(wgrad_part_elems)(&dot, ck_alloc, ldw); /* dW^T, then db (or the dot path's lane sums) */
    const int64_t chw = c * h * w, fp = f * d.oh * d.ow;
    int nth = fnn_team_of(ctx);
    if (nth > n)
        nth = (int)n;
    int err = 0;
    if (nth <= 1) {
        T *dwt = (T *)fnn_scratch(FNN_SCRATCH_CONV_DW, part * sizeof(T));
        if (!dwt)
            return -1;
        /* one image (or one thread): the data gradient's GEMM may still use ctx's threads */
        for (int64_t i = 0; i < n && !err; i++)
            err = FN(direct_backward_image)(&d, &dot, ukr, ukr_rows, ctx, x + i * chw, dy ? dy + i * fp : NULL,
                                            pg, i, ck_alloc, ldw, i == 0 ? (T)0 : (T)1, dwt, dwt + ck_alloc * ldw, wt,
                                            g, dx ? dx + i * chw : NULL);
        if (err)
            return -1;
        for (int64_t fi = 0; fi < f; fi++) {
            for (int64_t k = 0; k < d.ck; k++)
                dw[fi * d.ck + k] = FN(wgrad_part_value)(&dot, dwt, d.ck, ck_alloc, ldw, fi, k);
            db[fi] = FN(wgrad_part_value)(&dot, dwt, d.ck, ck_alloc, ldw, fi, d.ck);
        }
        return 0;
    }
#ifdef FASTNN_HAVE_OPENMP
    /* Images in G fixed groups, each summed into its own dW^T partial; the
     * groups are taken by work spans (each thread its even share, the images
     * its forward took, unless a thread falls behind), each group's values
     * read out of its partial by the thread that summed it (the dot path's
     * lane sums are 16 times the values: read by the other core, they cost
     * more than the sum), and the thread that ends the last group adds the
     * groups' values in group order: no barrier, at which a thread that waits
     * longer than OpenMP's spin would sleep and be woken late. The result
     * depends only on G, which depends only on the thread count. */
    int64_t groups = 4 * (int64_t)nth;
    const int64_t vals = f * (d.ck + 1); /* a group's values: f rows of ck taps and the bias */
    const int64_t cap = (int64_t)((64u << 20) / ((part + (size_t)vals) * sizeof(T)));
    if (groups > cap)
        groups = cap > nth ? cap : nth;
    if (groups > n)
        groups = n;
    T *parts = (T *)fnn_scratch(FNN_SCRATCH_CONV_DW, (part + (size_t)vals) * (size_t)groups * sizeof(T));
    if (!parts)
        return -1;
    T *values = parts + part * (size_t)groups;
    if (nth > FNN_SPANS_MAX)
        nth = FNN_SPANS_MAX;
    fnn_span spans[FNN_SPANS_MAX];
    fnn_spans_init(spans, nth, groups);
    volatile int64_t done = 0, failed = 0;
#pragma omp parallel num_threads(nth)
    {
        fnn_ctx one = ctx;
        one.nthreads = 1;
        for (int64_t gi; (gi = fnn_spans_next(spans, nth, omp_get_thread_num())) >= 0;) {
            const int64_t i0 = n * gi / groups, i1 = n * (gi + 1) / groups;
            T *mine = parts + (size_t)gi * part;
            int e = 0;
            for (int64_t i = i0; i < i1 && !e; i++)
                e = FN(direct_backward_image)(&d, &dot, ukr, ukr_rows, one, x + i * chw, dy ? dy + i * fp : NULL,
                                              pg, i, ck_alloc, ldw, i == i0 ? (T)0 : (T)1, mine,
                                              mine + ck_alloc * ldw, wt, g, dx ? dx + i * chw : NULL) != 0;
            T *v = values + gi * vals;
            for (int64_t fi = 0; fi < f && !e; fi++)
                for (int64_t k = 0; k <= d.ck; k++)
                    v[fi * (d.ck + 1) + k] = FN(wgrad_part_value)(&dot, mine, d.ck, ck_alloc, ldw, fi, k);
            if (e)
                fnn_count_up(&failed);
            /* the last to count a group sees every group's values and failure */
            if (fnn_count_up(&done) == groups && !failed)
                for (int64_t fi = 0; fi < f; fi++)
                    for (int64_t k = 0; k <= d.ck; k++) {
                        T s = values[fi * (d.ck + 1) + k];
                        for (int64_t q = 1; q < groups; q++)
                            s += values[q * vals + fi * (d.ck + 1) + k];
                        if (k < d.ck)
                            dw[fi * d.ck + k] = s;
                        else
                            db[fi] = s;
                    }
        }
    }
    err = failed != 0;
#endif
    return err ? -1 : 0;
}

#include "finite_template.h"

/* Pieces of this many elements, split over the threads (the direct paths check
 * their inputs before they run, outside the threaded kernels). */
#define FNN_FINITE_PIECE ((int64_t)32768)

static int FN(all_finite)(fnn_ctx ctx, const T *p, int64_t count)
{
    const int isa = fnn_isa_of(ctx);
    const int64_t pieces = (count + FNN_FINITE_PIECE - 1) / FNN_FINITE_PIECE;
    int ok = 1;
    FNN_PARALLEL_FOR_ON(fnn_team_for_work(ctx, count / 8), reduction(& : ok),
                        for (int64_t q = 0; q < pieces; q++) {
        const T *piece = p + q * FNN_FINITE_PIECE;
        const int64_t len = count - q * FNN_FINITE_PIECE < FNN_FINITE_PIECE ? count - q * FNN_FINITE_PIECE : FNN_FINITE_PIECE;
        ok &= FN(all_finite_serial)(isa, piece, len);
    });
    return ok;
}

/* The direct path pays off when the batch feeds every thread (it
 * parallelises over images only). */
static int FN(use_direct)(fnn_ctx ctx, int64_t n, double macs_per_image)
{
    int nth = fnn_team_of(ctx);
    /* a small batch of small images: one thread on the direct path beats
     * splitting tiny GEMMs over threads */
    return n >= nth || macs_per_image * (double)n < FNN_CONV_MIN_MACS_INNER_PARALLEL;
}

/* ---- forward ----------------------------------------------------------- */

static int FN(conv_forward_image)(fnn_ctx ctx, const T *xn, const fnn_conv_geom *g, const T *wt, int64_t f,
                                  const fnn_epilogue *ep, T *yn)
{
    const int64_t ck = g->c * g->fh * g->fw, p = g->oh * g->ow;
    fnn_matrix_src as = {wt, ck, 0, ctx.isa};
    FN(image_src) bs = {xn, *g};
    return FN(fnn_gemm_packed)(ctx, f, p, ck, (T)1, FN(fnn_pack_matrix), &as, FN(pack_image_fwd), &bs, (T)0, yn, p,
                               ep);
}

int FN(fnn_conv2d)(fnn_ctx ctx, const T *x, int64_t n, int64_t c, int64_t h, int64_t w, const T *wt, int64_t f,
                   int64_t fh, int64_t fw, const T *bias, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int act,
                   double act_alpha, T *y)
{
    fnn_conv_geom g = conv_geom(c, h, w, fh, fw, sh, sw, ph, pw);
    const int64_t chw = c * h * w, fp = f * g.oh * g.ow;
    fnn_epilogue ep = {bias ? FNN_BIAS_ROW : FNN_BIAS_NONE, bias, act, act_alpha};
    int nth = fnn_team_of(ctx);
    const double macs = (double)f * (double)(g.oh * g.ow) * (double)(c * fh * fw);
    int err = 0;
    const int tile = fnn_winograd_applies(ctx, n, c, f, h, w, fh, fw, sh, sw, ph, pw);
    if (tile) {
        const int rc = FN(fnn_winograd_conv2d)(ctx, tile, x, n, c, h, w, wt, f, bias, ph, pw, act, act_alpha, y);
        if (rc <= 0) /* 1: a result is not finite, the paths below give the direct sum's */
            return rc;
    }
    if (FN(use_direct)(ctx, n, macs) ||
        FN(direct_strips_pay)(ctx, n, g.oh, 0, macs, (double)(f * c * fh * fw), (double)(c * h * w)))
        return FN(direct_conv_run)(ctx, x, n, c, h, w, wt, f, fh, fw, sh, sw, ph, pw, bias, act, act_alpha, NULL, y,
                                   NULL);
    if (!FN(use_batch_parallel)(nth, n, macs)) {
        for (int64_t i = 0; i < n && !err; i++)
            err = FN(conv_forward_image)(ctx, x + i * chw, &g, wt, f, &ep, y + i * fp);
        return err ? -1 : 0;
    }
#ifdef FASTNN_HAVE_OPENMP
    if (nth > n)
        nth = (int)n;
#pragma omp parallel num_threads(nth) reduction(| : err)
    {
        int t = omp_get_thread_num(), tn = omp_get_num_threads();
        fnn_ctx one = ctx;
        one.nthreads = 1;
        for (int64_t i = n * t / tn; i < n * (t + 1) / tn && !err; i++)
            err |= FN(conv_forward_image)(one, x + i * chw, &g, wt, f, &ep, y + i * fp) != 0;
    }
#endif
    return err ? -1 : 0;
}

/* fnn_conv2d_max_pool_path, and in *tile Winograd's tile where it takes the convolution (else 0) */
static int FN(conv_pool_path)(fnn_ctx ctx, int64_t n, int64_t c, int64_t h, int64_t w, int64_t f, int64_t fh,
                              int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, const fnn_pool_spec *pool,
                              int *tile)
{
    const fnn_conv_geom g = conv_geom(c, h, w, fh, fw, sh, sw, ph, pw);
    const double macs = (double)f * (double)(g.oh * g.ow) * (double)(c * fh * fw);
    /* where Winograd takes the convolution, it pools 2x2 windows of stride 2 in
     * cache, other windows afterwards */
    const int wino = fnn_winograd_applies(ctx, n, c, f, h, w, fh, fw, sh, sw, ph, pw);
    *tile = wino;
    if (wino)
        return pool->ph == 2 && pool->pw == 2 && pool->sh == 2 && pool->sw == 2 && pool->padh == 0 &&
                       pool->padw == 0 && g.oh >= 2 && g.ow >= 2
                   ? FNN_CONV_POOL_WINOGRAD
                   : FNN_CONV_POOL_SEPARATE;
    return FN(use_direct)(ctx, n, macs) ? FNN_CONV_POOL_DIRECT : FNN_CONV_POOL_SEPARATE;
}

int FN(fnn_conv2d_max_pool_path)(fnn_ctx ctx, int64_t n, int64_t c, int64_t h, int64_t w, int64_t f, int64_t fh,
                                 int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, const fnn_pool_spec *pool)
{
    int tile;
    return FN(conv_pool_path)(ctx, n, c, h, w, f, fh, fw, sh, sw, ph, pw, pool, &tile);
}

int FN(fnn_conv2d_max_pool)(fnn_ctx ctx, const T *x, int64_t n, int64_t c, int64_t h, int64_t w, const T *wt,
                            int64_t f, int64_t fh, int64_t fw, const T *bias, int64_t sh, int64_t sw, int64_t ph,
                            int64_t pw, int act, double act_alpha, const fnn_pool_spec *pool, T *y, int32_t *argmax)
{
    fnn_conv_geom g = conv_geom(c, h, w, fh, fw, sh, sw, ph, pw);
    int tile;
    const int path = FN(conv_pool_path)(ctx, n, c, h, w, f, fh, fw, sh, sw, ph, pw, pool, &tile);
    if (path == FNN_CONV_POOL_WINOGRAD) {
        const int rc = FN(fnn_winograd_conv2d_max_pool)(ctx, tile, x, n, c, h, w, wt, f, bias, ph, pw, act,
                                                        act_alpha, y, argmax);
        if (rc <= 0) /* 1: a result is not finite, the ops one after the other below give the direct sum's */
            return rc;
    }
    if (path == FNN_CONV_POOL_DIRECT)
        return FN(direct_conv_run)(ctx, x, n, c, h, w, wt, f, fh, fw, sh, sw, ph, pw, bias, act, act_alpha, pool, y,
                                   argmax);
    /* elsewhere the two ops one after the other */
    const int64_t pooled = n * f * ((g.oh + 2 * pool->padh - pool->ph) / pool->sh + 1) *
                           ((g.ow + 2 * pool->padw - pool->pw) / pool->sw + 1);
    T *conv = (T *)malloc((size_t)(n * f * g.oh * g.ow) * sizeof(T) + 1);
    int64_t *am64 = (int64_t *)malloc((size_t)pooled * sizeof(int64_t) + 1);
    int rc = conv && am64 ? 0 : -1;
    if (!rc)
        rc = FN(fnn_conv2d)(ctx, x, n, c, h, w, wt, f, fh, fw, bias, sh, sw, ph, pw, act, act_alpha, conv);
    if (!rc) {
        FN(fnn_max_pool2d)(ctx, conv, y, am64, n * f, g.oh, g.ow, pool->ph, pool->pw, pool->sh, pool->sw,
                           pool->padh, pool->padw);
        fnn_index_narrow(am64, argmax, pooled);
    }
    free(conv);
    free(am64);
    return rc;
}

/* ---- backward ---------------------------------------------------------- */

/* dw (F x CK) = beta * dw + dy_n (F x P) @ col_n (P x CK) */
static int FN(conv_wgrad_image)(fnn_ctx ctx, const T *dyn, const T *xn, const fnn_conv_geom *g, int64_t f, T beta,
                                T *dw)
{
    const int64_t ck = g->c * g->fh * g->fw, p = g->oh * g->ow;
    fnn_matrix_src as = {dyn, p, 0, ctx.isa};
    FN(image_src) bs = {xn, *g};
    return FN(fnn_gemm_packed)(ctx, f, ck, p, (T)1, FN(fnn_pack_matrix), &as, FN(pack_image_wgrad), &bs, beta, dw, ck,
                               NULL);
}

/* Filters up to which the data gradient reads dy's rows in place (its NR-wide
 * micro-panel of f rows, 128 B each, then stays in L1 across the row panels). */
#define FNN_DGRAD_INDIRECT_MAX_F 128

/* dcol (ck x p, leading dimension p) = W^T (ck x f) @ dy_n (f x p). On one
 * thread and up to FNN_DGRAD_INDIRECT_MAX_F filters, the indirect-B microkernel
 * reads dy's rows in place over the whole NR-wide panels (packing B was 3% of
 * conv C), and the GEMM driver takes the last part panel; the sums run over the
 * filters in the same order either way, so the bits do not change. */
static int FN(dgrad_dcol)(fnn_ctx ctx, const T *dyn, const T *wt, int64_t ck, int64_t f, int64_t p, T *dcol)
{
    int mr, nr;
    fnn_gemm_tile_shape(ctx.isa, (int)sizeof(T), &mr, &nr);
    const fnn_matrix_src as = {wt, ck, 1, ctx.isa};
    FN(ukri_rows_fn) ukr_rows;
    const FN(ukri_fn) ukr = FN(select_ukri)(ctx.isa, &ukr_rows);
    int64_t done = 0;
    if (ukr_rows && f <= FNN_DGRAD_INDIRECT_MAX_F && p >= nr && ctx.nthreads <= 1) { /* else the driver threads it */
        T *ap = (T *)fnn_scratch(FNN_SCRATCH_PACK_A, (size_t)((ck + mr - 1) / mr * mr * f) * sizeof(T));
        if (!ap)
            return -1;
        FN(fnn_pack_matrix)(&as, 0, ck, 0, f, mr, ap);
        const T *brow[FNN_DGRAD_INDIRECT_MAX_F];
        for (int64_t k = 0; k < f; k++)
            brow[k] = dyn + k * p;
        done = p / nr * nr;
        for (int64_t j = 0; j < done; j += nr)
            for (int64_t ir = 0; ir < ck; ir += mr) {
                const int live = (int)(ck - ir < mr ? ck - ir : mr);
                if (live < mr)
                    ukr_rows(live, f, ap + ir * f, brow, j, dcol + ir * p + j, p, (T)1, (T)0);
                else
                    ukr(f, ap + ir * f, brow, j, dcol + ir * p + j, p, (T)1, (T)0);
            }
    }
    if (done == p)
        return 0;
    const fnn_matrix_src bs = {dyn + done, p, 0, ctx.isa};
    return FN(fnn_gemm_packed)(ctx, ck, p - done, f, (T)1, FN(fnn_pack_matrix), &as, FN(fnn_pack_matrix_b), &bs,
                               (T)0, dcol + done, p, NULL);
}

/* dx_n = col2im(W^T @ dy_n), one L2-sized chunk of output positions at a time */
static int FN(conv_dgrad_image)(fnn_ctx ctx, const T *dyn, const T *wt, const fnn_conv_geom *g, int64_t f, T *dxn,
                                int scratch_slot)
{
    const int64_t ck = g->c * g->fh * g->fw, p = g->oh * g->ow;
    int mr, nr;
    fnn_gemm_tile_shape(ctx.isa, (int)sizeof(T), &mr, &nr);
    int64_t chunk = FNN_CONV_DX_CHUNK_BYTES / (int64_t)sizeof(T) / ck;
    chunk = chunk / nr * nr;
    if (chunk < nr)
        chunk = nr;
    if (chunk > p)
        chunk = p;
    T *dcol = (T *)fnn_scratch(scratch_slot, (size_t)(ck * chunk) * sizeof(T));
    if (!dcol)
        return -1;
    fnn_matrix_src as = {wt, ck, 1, ctx.isa};
#if FNN_X86_SIMD
    if (sizeof(T) == 4 && ctx.isa >= FNN_ISA_AVX2 && chunk == p && g->sh == 1 && g->sw == 1 &&
        g->fw <= FNN_COL2IM_MAX_FW) {
        /* the whole image's dcol at once, gathered into dx through registers */
        if (FN(dgrad_dcol)(ctx, dyn, wt, ck, f, p, dcol))
            return -1;
        (ctx.isa >= FNN_ISA_AVX512 ? fnn_col2im_s1_avx512_f32 : fnn_col2im_s1_avx2_f32)(
            (const float *)dcol, g->c, g->h, g->w, g->fh, g->fw, g->ph, g->pw, g->oh, g->ow, (float *)dxn);
        return 0;
    }
#endif
    memset(dxn, 0, (size_t)(g->c * g->h * g->w) * sizeof(T));
    for (int64_t p0 = 0; p0 < p; p0 += chunk) {
        const int64_t pc = p - p0 < chunk ? p - p0 : chunk;
        fnn_matrix_src bs = {dyn + p0, p, 0, ctx.isa};
        if (FN(fnn_gemm_packed)(ctx, ck, pc, f, (T)1, FN(fnn_pack_matrix), &as, FN(fnn_pack_matrix_b), &bs, (T)0,
                                dcol, pc, NULL))
            return -1;
        for (int64_t r = 0; r < ck; r++)
            FN(scatter_row)(dxn, g, r, p0, pc, dcol + r * pc, 1);
    }
    return 0;
}

/* db[f] = sum over images and positions, in a fixed order (16 lanes, then the lanes) */
static void FN(conv_bias_grad)(const T *dy, int64_t n, int64_t f, int64_t p, T *db)
{
    for (int64_t fi = 0; fi < f; fi++) {
        T lanes[16] = {0};
        for (int64_t i = 0; i < n; i++)
            FN(fnn_lane_acc)(lanes, dy + (i * f + fi) * p, p);
        db[fi] = FN(fnn_lane_total)(lanes);
    }
}

/* dx as direct convolutions of dy with the flipped filters (below; at stride 1
 * one, when the padding allows it, else one per stride phase), where C feeds
 * the microkernel's rows and the filters are finite (the inserted zeros
 * multiply them). */
static int FN(direct_dgrad_ok)(fnn_ctx ctx, int64_t n, const fnn_conv_geom *g, int64_t f, const T *wt, double macs)
{
    int mr, nr;
    fnn_gemm_tile_shape(ctx.isa, (int)sizeof(T), &mr, &nr);
    const int stride1 = g->sh == 1 && g->sw == 1;
    /* strides above the filter (a 1x1 stride-2 shortcut) leave phases without taps; there
     * the copies of dy cost more than they save (1 thread: 6.0 -> 7.2 ms) */
    const int phases_pay = g->sh <= g->fh && g->sw <= g->fw && g->sh * g->sw <= FNN_DGRAD_PHASES_MAX;
    return (stride1 ? g->ph <= g->fh - 1 && g->pw <= g->fw - 1 : phases_pay) &&
           FN(use_direct)(ctx, n, macs) && g->c >= mr / 2 && FN(all_finite)(ctx, wt, f * g->c * g->fh * g->fw);
}

int FN(fnn_conv2d_backward)(fnn_ctx ctx, const T *dy, const T *x, int64_t n, int64_t c, int64_t h, int64_t w,
                            const T *wt, int64_t f, int64_t fh, int64_t fw, int64_t sh, int64_t sw, int64_t ph,
                            int64_t pw, T *dx, T *dw, T *db)
{
    fnn_conv_geom g = conv_geom(c, h, w, fh, fw, sh, sw, ph, pw);
    const int64_t chw = c * h * w, p = g.oh * g.ow, fp = f * p, ck = c * fh * fw;
    int nth = fnn_team_of(ctx);
    if (n == 0) {
        FN(conv_bias_grad)(dy, n, f, p, db);
        memset(dw, 0, (size_t)(f * ck) * sizeof(T));
        return 0;
    }
    /* Both direct backward paths multiply inserted zeros (dy's padding, its
     * garbage columns) with real values: exact only when those are finite. */
    const double macs = (double)f * (double)p * (double)ck;
    /* Winograd's weight gradient takes dx along where it applies (rc bit 2: not done) */
    const int wino_w = fnn_winograd_applies(ctx, n, c, f, h, w, fh, fw, sh, sw, ph, pw);
    const int wino_rc = wino_w ? FN(fnn_winograd_backward)(ctx, wino_w, dy, x, wt, n, c, h, w, f, ph, pw, dw, db, dx)
                               : 3;
    if (wino_rc < 0)
        return -1;
    if (!(wino_rc & 2))
        dx = NULL;
    /* (where Winograd's backward tried dx and found it not finite, its forward on
     * dy would find the same: not tried again) */
    const int wino_dx = dx && !wino_w
                            ? fnn_winograd_applies(ctx, n, f, c, g.oh, g.ow, fh, fw, sh, sw, fh - 1 - ph, fw - 1 - pw)
                            : 0;
    const int direct_dx = dx && FN(direct_dgrad_ok)(ctx, n, &g, f, wt, macs);
    if (direct_dx && (sh > 1 || sw > 1)) {
        const int rc = FN(strided_dgrad_run)(ctx, dy, wt, &g, n, f, dx);
        if (rc < 0)
            return -1;
        if (rc == 0)
            dx = NULL;
    } else if (wino_dx || direct_dx) {
        /* stride 1: dx is the convolution of dy (padded by fh-1-ph, fw-1-pw) with
         * the flipped, channel-transposed filters, so it takes the Winograd or the
         * direct forward path, with no col2im scatter at all */
        T *wflip = (T *)malloc((size_t)(f * ck) * sizeof(T));
        if (!wflip)
            return -1;
        for (int64_t fi = 0; fi < f; fi++)
            for (int64_t ci = 0; ci < c; ci++)
                for (int64_t i = 0; i < fh; i++)
                    for (int64_t j = 0; j < fw; j++)
                        wflip[((ci * f + fi) * fh + i) * fw + j] =
                            wt[((fi * c + ci) * fh + (fh - 1 - i)) * fw + (fw - 1 - j)];
        /* rc 1: Winograd's dx is not finite (or not tried) */
        int rc = wino_dx ? FN(fnn_winograd_conv2d)(ctx, wino_dx, dy, n, f, g.oh, g.ow, wflip, c, NULL, fh - 1 - ph,
                                                   fw - 1 - pw, FNN_ACT_IDENTITY, 0.0, dx)
                         : 1;
        if (rc == 1 && direct_dx)
            rc = FN(direct_conv_run)(ctx, dy, n, f, g.oh, g.ow, wflip, c, fh, fw, 1, 1, fh - 1 - ph, fw - 1 - pw, NULL,
                                     FNN_ACT_IDENTITY, 0.0, NULL, dx, NULL);
        free(wflip);
        if (rc < 0)
            return -1;
        if (rc == 0)
            dx = NULL;
    }
    int need_w = 1;
    if (!(wino_rc & 1)) {
        need_w = 0;
    } else if (FN(use_direct)(ctx, n, macs) && FN(all_finite)(ctx, x, n * chw)) {
        /* db, and dx where the direct path above did not take it, come from the
         * same pass over dy */
        if (FN(direct_wgrad_run)(ctx, dy, NULL, x, n, c, h, w, f, fh, fw, ph, pw, dw, db, wt, &g, dx))
            return -1;
        need_w = 0;
        dx = NULL;
    } else {
        FN(conv_bias_grad)(dy, n, f, p, db);
    }
    if (!need_w && !dx)
        return 0;
    int err = 0;
    if (!FN(use_batch_parallel)(nth, n, macs)) {
        for (int64_t i = 0; i < n && !err; i++) {
            if (need_w)
                err = FN(conv_wgrad_image)(ctx, dy + i * fp, x + i * chw, &g, f, i == 0 ? (T)0 : (T)1, dw);
            if (!err && dx)
                err = FN(conv_dgrad_image)(ctx, dy + i * fp, wt, &g, f, dx + i * chw, FNN_SCRATCH_CONV_DCOL);
        }
        return err ? -1 : 0;
    }
#ifdef FASTNN_HAVE_OPENMP
    if (nth > n)
        nth = (int)n;
    /* dW partial sums over nth slices of the batch, whatever team the runtime
     * gives: a thread takes slices t, t + team, ... (more than one only with a
     * smaller team, under OMP_DYNAMIC, OMP_THREAD_LIMIT or a nested region), so
     * the fixed-order sum gives the bits of nth threads. Slice 0 accumulates
     * into dw itself, a thread's first other slice into its scratch, later ones
     * into these allocations. */
    T *partials[256];
    T *extra[256];
    memset(extra, 0, sizeof(extra));
    if (nth > 256)
        nth = 256;
#pragma omp parallel num_threads(nth) reduction(| : err)
    {
        int t = omp_get_thread_num(), tn = omp_get_num_threads();
        fnn_ctx one = ctx;
        one.nthreads = 1;
        for (int q = t; q < nth; q += tn) {
            T *mine = q == 0 || !need_w ? dw
                      : q == t      ? (T *)fnn_scratch(FNN_SCRATCH_CONV_DW, (size_t)(f * ck) * sizeof(T))
                                    : (extra[q] = (T *)malloc((size_t)(f * ck) * sizeof(T) + 1));
            partials[q] = mine;
            if (!mine) {
                err = 1;
                continue;
            }
            int64_t i0 = n * q / nth, i1 = n * (q + 1) / nth;
            if (i0 == i1 && need_w)
                memset(mine, 0, (size_t)(f * ck) * sizeof(T));
            for (int64_t i = i0; i < i1 && !err; i++) {
                if (need_w)
                    err |= FN(conv_wgrad_image)(one, dy + i * fp, x + i * chw, &g, f, i == i0 ? (T)0 : (T)1, mine) != 0;
                if (!err && dx)
                    err |= FN(conv_dgrad_image)(one, dy + i * fp, wt, &g, f, dx + i * chw, FNN_SCRATCH_CONV_DCOL) != 0;
            }
        }
#pragma omp barrier
        /* fixed-order sum of the partials, split over elements */
        int ok = 1;
        for (int q = 0; q < nth; q++)
            ok &= partials[q] != NULL;
        if (ok && need_w) {
            const int64_t total = f * ck;
            const int64_t e0 = total * t / tn, e1 = total * (t + 1) / tn;
            for (int q = 1; q < nth; q++) {
                const T *pq = partials[q];
                for (int64_t e = e0; e < e1; e++)
                    dw[e] += pq[e];
            }
        }
    }
    for (int q = 0; q < nth; q++)
        free(extra[q]);
#endif
    return err ? -1 : 0;
}

int FN(fnn_conv2d_max_pool_backward)(fnn_ctx ctx, const T *dp, const T *yp, int act, double act_alpha,
                                     const int32_t *argmax, int64_t poh, int64_t pow_, const T *x, int64_t n, int64_t c,
                                     int64_t h, int64_t w, const T *wt, int64_t f, int64_t fh, int64_t fw, int64_t sh,
                                     int64_t sw, int64_t ph, int64_t pw, T *dx, T *dw, T *db)
{
    fnn_conv_geom g = conv_geom(c, h, w, fh, fw, sh, sw, ph, pw);
    const double macs = (double)f * (double)(g.oh * g.ow) * (double)(c * fh * fw);
    /* fused where the direct weight gradient runs and dx (if any) rides along
     * with it; otherwise (Winograd among them) the two ops one after the other */
    if (n > 0 && !fnn_winograd_applies(ctx, n, c, f, h, w, fh, fw, sh, sw, ph, pw) &&
        FN(use_direct)(ctx, n, macs) && FN(all_finite)(ctx, x, n * c * h * w) &&
        !(dx && FN(direct_dgrad_ok)(ctx, n, &g, f, wt, macs))) {
        FN(pooled_grad) pg = {dp, yp, act, act_alpha, argmax, poh, pow_};
        return FN(direct_wgrad_run)(ctx, NULL, &pg, x, n, c, h, w, f, fh, fw, ph, pw, dw, db, wt, &g, dx);
    }
    const size_t pooled = (size_t)(n * f * poh * pow_);
    T *dz = (T *)malloc(((size_t)(n * f * g.oh * g.ow) + (act != FNN_ACT_IDENTITY ? pooled : 0)) * sizeof(T) + 1);
    int64_t *am64 = (int64_t *)malloc(pooled * sizeof(int64_t) + 1);
    if (!dz || !am64) {
        free(dz);
        free(am64);
        return -1;
    }
    fnn_index_widen(argmax, am64, (int64_t)pooled);
    const T *dpz = dp;
    if (act != FNN_ACT_IDENTITY) {
        T *gp = dz + n * f * g.oh * g.ow;
        FN(fnn_act_grad_from_y_mul)(ctx, dp, yp, gp, (int64_t)pooled, act, act_alpha);
        dpz = gp;
    }
    FN(fnn_max_pool2d_backward)(ctx, dpz, am64, dz, n * f, g.oh, g.ow, poh, pow_);
    free(am64);
    int rc = FN(fnn_conv2d_backward)(ctx, dz, x, n, c, h, w, wt, f, fh, fw, sh, sw, ph, pw, dx, dw, db);
    free(dz);
    return rc;
}

#undef FN
#undef CAT2
#undef CAT2_
