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

/* Gradients from dy (of the pre-activation output): dw (F,C,fh,fw), db (F,),
 * and dx (N,C,H,W) unless dx is NULL. */
int fnn_conv2d_backward_f32(fnn_ctx ctx, const float *dy, const float *x, int64_t n, int64_t c, int64_t h,
                            int64_t w, const float *wt, int64_t f, int64_t fh, int64_t fw, int64_t sh, int64_t sw,
                            int64_t ph, int64_t pw, float *dx, float *dw, float *db);
int fnn_conv2d_backward_f64(fnn_ctx ctx, const double *dy, const double *x, int64_t n, int64_t c, int64_t h,
                            int64_t w, const double *wt, int64_t f, int64_t fh, int64_t fw, int64_t sh, int64_t sw,
                            int64_t ph, int64_t pw, double *dx, double *dw, double *db);

#ifdef __cplusplus
}
#endif
#endif /* FASTNN_CONV_H */
