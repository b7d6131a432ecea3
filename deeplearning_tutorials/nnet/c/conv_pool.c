/* A convolution and its max pooling, and their filters' gradient, image by image.

   The convolution of x (B, C, H, W) with w (F, C, kh, kw) and the max pooling of its
   output over wh x ww windows, image by image: each image's convolution is pooled
   while it is still in the cache, where the two Ops one after the other write the
   whole batch's convolution to memory and read it back.  z receives the
   convolution, or is NULL when nothing else reads it: each image's then stays in
   a scratch buffer.  pooled (B, F, ph, pw).  The numbers are dlt_conv_fwd's and
   dlt_max_pool's.  Needs conv.c and pool.c; returns 0, or -1 when out of memory. */
static int DLT_FN(dlt_conv_fwd_pool)(const DLT_T* x, const DLT_T* w, DLT_T* z, DLT_T* pooled,
                                     int B, int C, int H, int W, int F, int kh, int kw,
                                     int wh, int ww, int ph, int pw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, K = C * kh * kw;
    const long P = (long)oh * ow, Q = (long)ph * pw;
    DLT_T *wf, *zb;
    int b;
    if (B == 0 || F == 0) return 0;
    if (!(DLT_DIRECT(K) && ow <= 512 && P > 0)) {
        /* im2col's chunks: the whole batch, then its pooling. */
        zb = z != NULL ? z : (DLT_T*)dlt_scratch(3, sizeof(DLT_T) * (long)B * F * P);
        if (zb == NULL || DLT_FN(dlt_conv_fwd)(x, w, zb, B, C, H, W, F, kh, kw) != 0) return -1;
        DLT_FN(dlt_max_pool)(zb, pooled, (long)B * F, oh, ow, wh, ww, ph, pw);
        return 0;
    }
    wf = (DLT_T*)dlt_scratch(0, sizeof(DLT_T) * (long)F * K);
    zb = z != NULL ? NULL : (DLT_T*)dlt_scratch(3, sizeof(DLT_T) * (long)F * P);
    if (wf == NULL || (z == NULL && zb == NULL)) return -1;
    DLT_FN(dlt_flip)(w, F, C, kh, kw, wf);
    for (b = 0; b < B; ++b) {
        if (z != NULL) zb = z + (long)b * F * P;
        DLT_FN(dlt_conv_fwd_direct)(x + (long)b * C * H * W, wf, zb, 1, C, H, W, F, kh, kw);
        DLT_FN(dlt_max_pool)(zb, pooled + (long)b * F * Q, F, oh, ow, wh, ww, ph, pw);
    }
    return 0;
}

/* The filters' gradient of a convolution of x (B, C, H, W) whose output z (B, F, oh,
   ow) was max pooled over wh x ww windows into pooled (B, F, ph, pw), from the
   pooling's output gradient gp: each image's gradient of z (dlt_max_pool_grad)
   goes to a scratch buffer that stays in the cache, where the two Ops one after
   the other write the whole batch's to memory and read it back; the filters'
   sums (dlt_conv_gw) take it from there, image after image as they do.  gw (F,
   C, kh, kw).  The numbers are the two kernels'.  Returns 0, or -1. */
static int DLT_FN(dlt_conv_gw_pool)(const DLT_T* x, const DLT_T* z, const DLT_T* pooled,
                                    const DLT_T* gp, DLT_T* gw, int B, int C, int H, int W,
                                    int F, int oh, int ow, int wh, int ww, int ph, int pw)
{
    const int kh = H - oh + 1, kw = W - ow + 1, K = C * kh * kw;
    const long P = (long)oh * ow, Q = (long)ph * pw;
    DLT_T *gz, *gwt, *acc;
    double* G;
    long b, k;
    if (!(DLT_DIRECT(K) && B > 0 && P > 0 && F > 0)) {
        /* The whole batch's gradient of z, then dlt_conv_gw's chunks. */
        gz = (DLT_T*)dlt_scratch(3, sizeof(DLT_T) * (long)B * F * P);
        if (gz == NULL) return -1;
        DLT_FN(dlt_max_pool_grad)(z, pooled, gp, gz, (long)B * F, oh, ow, wh, ww, ph, pw);
        return DLT_FN(dlt_conv_gw)(x, gz, gw, B, C, H, W, F, oh, ow);
    }
    gwt = (DLT_T*)dlt_scratch(0, sizeof(DLT_T) * (long)K * F);
    gz = (DLT_T*)dlt_scratch(1, sizeof(DLT_T) * (long)F * P);
    acc = (DLT_T*)dlt_scratch(2, sizeof(DLT_T) * (long)kw * ow);
    G = (double*)dlt_scratch(3, sizeof(double) * (long)K * F);
    if (gwt == NULL || gz == NULL || acc == NULL || G == NULL) return -1;
    memset(G, 0, sizeof(double) * (long)K * F);
    for (b = 0; b < B; ++b) {
        DLT_FN(dlt_max_pool_grad)(z + b * F * P, pooled + b * F * Q, gp + b * F * Q, gz, F, oh, ow,
                                  wh, ww, ph, pw);
        DLT_FN(dlt_gw_direct_image)(x + b * C * H * W, gz, G, acc, C, H, W, F, oh, ow);
    }
    for (k = 0; k < (long)K * F; ++k) gwt[k] = (DLT_T)G[k];
    DLT_FN(dlt_gw_unflip)(gwt, gw, F, C, kh, kw);
    return 0;
}
