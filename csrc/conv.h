/* NCHW convolution on the GEMM engine, with implicit im2col: the B operand is
 * packed straight from the image, so no col matrix is ever written.
 * x (N,C,H,W), wt (F,C,fh,fw), y and dy (N,F,oh,ow); oh = (H + 2ph - fh)/sh + 1.
 * All return 0, or -1 when scratch memory could not be allocated. */
#ifndef FASTNN_CONV_H
#define FASTNN_CONV_H

#include "fastnn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y = act(conv(x, wt) + bias); bias (F,) or NULL. */
int fnn_conv2d_f32(fnn_ctx ctx, const float *x, int64_t n, int64_t c, int64_t h, int64_t w, const float *wt,
                   int64_t f, int64_t fh, int64_t fw, const float *bias, int64_t sh, int64_t sw, int64_t ph,
                   int64_t pw, int act, double act_alpha, float *y);
int fnn_conv2d_f64(fnn_ctx ctx, const double *x, int64_t n, int64_t c, int64_t h, int64_t w, const double *wt,
                   int64_t f, int64_t fh, int64_t fw, const double *bias, int64_t sh, int64_t sw, int64_t ph,
                   int64_t pw, int act, double act_alpha, double *y);

/* A max pooling applied to the convolution's output planes: window ph x pw,
 * stride sh x sw, padding padh x padw that never wins (as in fnn_max_pool2d). */
typedef struct {
    int64_t ph, pw, sh, sw, padh, padw;
} fnn_pool_spec;

/* The path fnn_conv2d_max_pool takes for finite inputs in ctx: the Winograd
 * convolution pooling each block's output rows in cache (2x2 windows of stride
 * 2), the direct one pooling each output plane in L1, or the two ops one after
 * the other. */
enum { FNN_CONV_POOL_SEPARATE = 0, FNN_CONV_POOL_WINOGRAD = 1, FNN_CONV_POOL_DIRECT = 2 };
int fnn_conv2d_max_pool_path_f32(fnn_ctx ctx, int64_t n, int64_t c, int64_t h, int64_t w, int64_t f, int64_t fh,
                                 int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, const fnn_pool_spec *pool);
int fnn_conv2d_max_pool_path_f64(fnn_ctx ctx, int64_t n, int64_t c, int64_t h, int64_t w, int64_t f, int64_t fh,
                                 int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, const fnn_pool_spec *pool);
/* (y, argmax) = max_pool2d(act(conv(x, wt) + bias)): y and argmax (N, F, poh,
 * pow) as fnn_max_pool2d gives them for the convolution's output, the argmax as
 * int32 (each plane of the output below 2^31 elements). On the Winograd and
 * direct paths (above) the output is pooled while it is in cache, so the
 * convolution's output is never written to memory. */
int fnn_conv2d_max_pool_f32(fnn_ctx ctx, const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                            const float *wt, int64_t f, int64_t fh, int64_t fw, const float *bias, int64_t sh,
                            int64_t sw, int64_t ph, int64_t pw, int act, double act_alpha, const fnn_pool_spec *pool,
                            float *y, int32_t *argmax);
int fnn_conv2d_max_pool_f64(fnn_ctx ctx, const double *x, int64_t n, int64_t c, int64_t h, int64_t w,
                            const double *wt, int64_t f, int64_t fh, int64_t fw, const double *bias, int64_t sh,
                            int64_t sw, int64_t ph, int64_t pw, int act, double act_alpha, const fnn_pool_spec *pool,
                            double *y, int32_t *argmax);

/* The backward of fnn_conv2d_max_pool from dp, the gradient of its pooled
 * output yp (the activation's derivative, taken from yp at the pooled
 * positions, is applied here), with the argmax of the forward: dw, db, and dx
 * unless NULL, as fnn_conv2d_backward gives them for the un-pooled gradient of
 * the pre-activation output. Where the direct weight gradient runs, each
 * image's gradient is un-pooled into cache, so it is never written to memory. */
int fnn_conv2d_max_pool_backward_f32(fnn_ctx ctx, const float *dp, const float *yp, int act, double act_alpha,
                                     const int32_t *argmax, int64_t poh, int64_t pow_, const float *x, int64_t n,
                                     int64_t c, int64_t h, int64_t w, const float *wt, int64_t f, int64_t fh,
                                     int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, float *dx, float *dw,
                                     float *db);
int fnn_conv2d_max_pool_backward_f64(fnn_ctx ctx, const double *dp, const double *yp, int act, double act_alpha,
                                     const int32_t *argmax, int64_t poh, int64_t pow_, const double *x, int64_t n,
                                     int64_t c, int64_t h, int64_t w, const double *wt, int64_t f, int64_t fh,
                                     int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, double *dx,
                                     double *dw, double *db);

/* Gradients from dy (of the pre-activation output): dw (F,C,fh,fw), db (F,),
 * and dx (N,C,H,W) unless dx is NULL. */
int fnn_conv2d_backward_f32(fnn_ctx ctx, const float *dy, const float *x, int64_t n, int64_t c, int64_t h,
                            int64_t w, const float *wt, int64_t f, int64_t fh, int64_t fw, int64_t sh, int64_t sw,
                            int64_t ph, int64_t pw, float *dx, float *dw, float *db);
int fnn_conv2d_backward_f64(fnn_ctx ctx, const double *dy, const double *x, int64_t n, int64_t c, int64_t h,
                            int64_t w, const double *wt, int64_t f, int64_t fh, int64_t fw, int64_t sh, int64_t sw,
                            int64_t ph, int64_t pw, double *dx, double *dw, double *db);

/* Winograd F(m x m, 3x3) (csrc/winograd.c), taken by the functions above where
 * fnn_winograd_applies (for ctx.conv_algo and ctx.nthreads) returns the tile
 * size m (2 or 4; 0: not Winograd). They return 0 when done, -1 when out of
 * memory, and 1 (the outputs then hold garbage) where a result is not finite
 * (the backward: as said there): the caller then takes another path, which
 * gives the direct sum's inf and NaN. */
int fnn_winograd_applies(fnn_ctx ctx, int64_t n, int64_t c, int64_t f, int64_t h, int64_t w, int64_t fh,
                         int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw);
/* y = act(conv(x, wt) + bias) for 3x3 filters, stride 1, padding (ph, pw) */
int fnn_winograd_conv2d_f32(fnn_ctx ctx, int tile, const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                            const float *wt, int64_t f, const float *bias, int64_t ph, int64_t pw, int act,
                            double act_alpha, float *y);
int fnn_winograd_conv2d_f64(fnn_ctx ctx, int tile, const double *x, int64_t n, int64_t c, int64_t h, int64_t w,
                            const double *wt, int64_t f, const double *bias, int64_t ph, int64_t pw, int act,
                            double act_alpha, double *y);
/* yp = 2x2 stride-2 max pooling of that y (N, F, oh / 2, ow / 2) and argmax its
 * indices into y's planes, with y never written: each block's output rows are
 * pooled while in cache (oh and ow at least 2) */
int fnn_winograd_conv2d_max_pool_f32(fnn_ctx ctx, int tile, const float *x, int64_t n, int64_t c, int64_t h,
                                     int64_t w, const float *wt, int64_t f, const float *bias, int64_t ph, int64_t pw,
                                     int act, double act_alpha, float *yp, int32_t *argmax);
int fnn_winograd_conv2d_max_pool_f64(fnn_ctx ctx, int tile, const double *x, int64_t n, int64_t c, int64_t h,
                                     int64_t w, const double *wt, int64_t f, const double *bias, int64_t ph,
                                     int64_t pw, int act, double act_alpha, double *yp, int32_t *argmax);
/* dw (F, C, 3, 3) and db (F,) unless NULL from dy (N, F, oh, ow) and x, and dx
 * (N, C, H, W) unless NULL, in one pass. Returns -1 when out of memory, else
 * the sum of 1 where dw or db is not finite and 2 where dx is not (or was not
 * computed): those the caller takes another path for. */
int fnn_winograd_backward_f32(fnn_ctx ctx, int tile, const float *dy, const float *x, const float *wt, int64_t n,
                              int64_t c, int64_t h, int64_t w, int64_t f, int64_t ph, int64_t pw, float *dw,
                              float *db, float *dx);
int fnn_winograd_backward_f64(fnn_ctx ctx, int tile, const double *dy, const double *x, const double *wt, int64_t n,
                              int64_t c, int64_t h, int64_t w, int64_t f, int64_t ph, int64_t pw, double *dw,
                              double *db, double *dx);

#ifdef __cplusplus
}
#endif
#endif /* FASTNN_CONV_H */
