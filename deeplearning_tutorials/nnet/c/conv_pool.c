/* The convolution of x (B, C, H, W) with w (F, C, kh, kw) and the max pooling of its
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
