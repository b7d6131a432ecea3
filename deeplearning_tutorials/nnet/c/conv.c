/* The true 'valid' convolution of x (B, C, H, W) with w (F, C, kh, kw) and its two
   gradients, for one C type.  The including code defines DLT_T (the type) and
   DLT_FN(name) (the name of this type's copy of a function).

   Layers with many taps per output (K = C*kh*kw) go through im2col: a chunk of nb
   images becomes cols (K, nb*P), P = oh*ow, and one GEMM with the flipped filters
   wf (F, K) does the arithmetic.  Layers with few taps (K <= 32: LeNet5's first,
   with 25) are computed directly, each image in the first-level cache, since there
   im2col would write K copies of every image for products of only K terms.

   The GEMMs run on BLAS's own threads.  Each function returns 0, or -1 when out
   of memory. */

#define DLT_DIRECT(K) ((K) <= 32)

/* Elements of a chunk's column matrix: 2**17 for the forward pass and the input
   gradient (a quarter faster than 2**18 for LeNet5's second layer); the filter
   gradient, which sums over the images chunk by chunk, was no faster with it and
   keeps 2**18.  On LeNet5's layers the results do not depend on the chunk; on
   other shapes BLAS may order a product's sums differently. */
#define DLT_CHUNK (1L << 17)
#define DLT_CHUNK_GW (1L << 18)

/* w (F, C, kh, kw) -> wf (F, K), flipped in both spatial axes. */
static void DLT_FN(dlt_flip)(const DLT_T* w, int F, int C, int kh, int kw, DLT_T* wf)
{
    int f, c, u, v, K = C * kh * kw;
    for (f = 0; f < F; ++f)
        for (c = 0; c < C; ++c)
            for (u = 0; u < kh; ++u)
                for (v = 0; v < kw; ++v)
                    wf[(long)f * K + (c * kh + u) * kw + v] =
                        w[(((long)f * C + c) * kh + (kh - 1 - u)) * kw + (kw - 1 - v)];
}

/* cols (K, nb*P) <- the patches of images b0 .. b0+nb-1 of x. */
static void DLT_FN(dlt_im2col)(const DLT_T* x, int b0, int nb, int C, int H, int W, int kh,
                               int kw, DLT_T* cols)
{
    const int oh = H - kh + 1, ow = W - kw + 1;
    const long P = (long)oh * ow, ncol = (long)nb * P;
    int b;
    for (b = 0; b < nb; ++b) {
        int c, u, v, i;
        for (c = 0; c < C; ++c)
            for (u = 0; u < kh; ++u)
                for (v = 0; v < kw; ++v) {
                    DLT_T* row = cols + ((long)(c * kh + u) * kw + v) * ncol + b * P;
                    const DLT_T* src = x + (((long)(b0 + b) * C + c) * H + u) * W + v;
                    for (i = 0; i < oh; ++i)
                        DLT_FN(dlt_copy_row)(row + (long)i * ow, src + (long)i * W, ow);
                }
    }
}

/* Images b0 .. b0+nb-1 of gx (B, C, H, W) = the sum of dcols (K, nb*P) put back
   where im2col took each entry from. */
static void DLT_FN(dlt_col2im)(const DLT_T* dcols, int b0, int nb, int C, int H, int W, int kh,
                               int kw, DLT_T* gx)
{
    const int oh = H - kh + 1, ow = W - kw + 1;
    const long P = (long)oh * ow, ncol = (long)nb * P;
    int b;
    for (b = 0; b < nb; ++b) {
        int c, u, v, i;
        memset(gx + (long)(b0 + b) * C * H * W, 0, sizeof(DLT_T) * (long)C * H * W);
        for (c = 0; c < C; ++c)
            for (u = 0; u < kh; ++u)
                for (v = 0; v < kw; ++v) {
                    const DLT_T* row = dcols + ((long)(c * kh + u) * kw + v) * ncol + b * P;
                    DLT_T* dst = gx + (((long)(b0 + b) * C + c) * H + u) * W + v;
                    for (i = 0; i < oh; ++i)
                        DLT_FN(dlt_add_row)(dst + (long)i * W, row + (long)i * ow, ow);
                }
    }
}

/* z (B, F, P) <-> zm (F, nb*P) for images b0 .. b0+nb-1: gather into zm, or scatter from it. */
static void DLT_FN(dlt_bfp)(DLT_T* z, int b0, int nb, int F, long P, DLT_T* zm, int scatter)
{
    int b;
    for (b = 0; b < nb; ++b) {
        int f;
        for (f = 0; f < F; ++f) {
            DLT_T* a = z + ((long)(b0 + b) * F + f) * P;
            DLT_T* m = zm + (long)f * nb * P + (long)b * P;
            if (scatter) memcpy(a, m, P * sizeof(DLT_T));
            else memcpy(m, a, P * sizeof(DLT_T));
        }
    }
}

/* One row of outputs of four filters (n of them real): the sum of K shifted input
   rows, each times one tap, in the order (c, u, v); each input row is loaded once
   for the four.  Inlined with constant row and filter widths for LeNet5's first
   layer, where the compiler then unrolls and vectorises the row. */
static inline __attribute__((always_inline)) void DLT_FN(dlt_fwd_row4)(
    const DLT_T* xb, const DLT_T* wff, DLT_T* o, int C, int H, int W, int kh, int kw, int ow,
    int i, int K, long P, int n)
{
    DLT_T a0[512], a1[512], a2[512], a3[512];
    int c, u, v, j;
    for (j = 0; j < ow; ++j) a0[j] = a1[j] = a2[j] = a3[j] = 0;
    for (c = 0; c < C; ++c)
        for (u = 0; u < kh; ++u) {
            const DLT_T* xr = xb + ((long)c * H + i + u) * W;
            const DLT_T* wr = wff + (c * kh + u) * kw;
            for (v = 0; v < kw; ++v) {
                const DLT_T t0 = wr[v];
                const DLT_T t1 = n > 1 ? wr[K + v] : 0;
                const DLT_T t2 = n > 2 ? wr[2 * K + v] : 0;
                const DLT_T t3 = n > 3 ? wr[3 * K + v] : 0;
                for (j = 0; j < ow; ++j) {
                    const DLT_T xv = xr[j + v];
                    a0[j] += t0 * xv;
                    a1[j] += t1 * xv;
                    a2[j] += t2 * xv;
                    a3[j] += t3 * xv;
                }
            }
        }
    for (j = 0; j < ow; ++j) o[j] = a0[j];
    if (n > 1) for (j = 0; j < ow; ++j) o[P + j] = a1[j];
    if (n > 2) for (j = 0; j < ow; ++j) o[2 * P + j] = a2[j];
    if (n > 3) for (j = 0; j < ow; ++j) o[3 * P + j] = a3[j];
}

/* dlt_fwd_row4 for rows of 24 outputs and taps 5 wide (LeNet5's first layer),
   all four filters: the 4 x 24 sums stay in twelve vector registers over the K
   taps, where the plain loop keeps them in memory (a load and a store around each
   multiply-add).  The same multiply-adds in the same order. */
typedef DLT_T DLT_FN(dlt_v8) __attribute__((vector_size(8 * sizeof(DLT_T)), aligned(sizeof(DLT_T))));

static inline void DLT_FN(dlt_fwd_row4_24x5)(const DLT_T* xb, const DLT_T* wff, DLT_T* o, int C,
                                            int H, int W, int kh, int i, int K, long P)
{
    typedef DLT_FN(dlt_v8) V;
    V a0 = {0}, a1 = {0}, a2 = {0}, b0 = {0}, b1 = {0}, b2 = {0};
    V c0 = {0}, c1 = {0}, c2 = {0}, d0 = {0}, d1 = {0}, d2 = {0};
    int c, u, v;
    for (c = 0; c < C; ++c)
        for (u = 0; u < kh; ++u) {
            const DLT_T* xr = xb + ((long)c * H + i + u) * W;
            const DLT_T* wr = wff + (c * kh + u) * 5;
            for (v = 0; v < 5; ++v) {
                const V x0 = *(const V*)(xr + v), x1 = *(const V*)(xr + v + 8);
                const V x2 = *(const V*)(xr + v + 16);
                const DLT_T t0 = wr[v], t1 = wr[K + v], t2 = wr[2 * K + v], t3 = wr[3 * K + v];
                a0 += t0 * x0; a1 += t0 * x1; a2 += t0 * x2;
                b0 += t1 * x0; b1 += t1 * x1; b2 += t1 * x2;
                c0 += t2 * x0; c1 += t2 * x1; c2 += t2 * x2;
                d0 += t3 * x0; d1 += t3 * x1; d2 += t3 * x2;
            }
        }
    *(V*)o = a0; *(V*)(o + 8) = a1; *(V*)(o + 16) = a2;
    *(V*)(o + P) = b0; *(V*)(o + P + 8) = b1; *(V*)(o + P + 16) = b2;
    *(V*)(o + 2 * P) = c0; *(V*)(o + 2 * P + 8) = c1; *(V*)(o + 2 * P + 16) = c2;
    *(V*)(o + 3 * P) = d0; *(V*)(o + 3 * P + 8) = d1; *(V*)(o + 3 * P + 16) = d2;
}

/* out (B, F, oh, ow) directly (few taps: see above), four filters at a time. */
static void DLT_FN(dlt_conv_fwd_direct)(const DLT_T* x, const DLT_T* wf, DLT_T* out, int B,
                                        int C, int H, int W, int F, int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, K = C * kh * kw;
    const long P = (long)oh * ow;
    int b, f, i, n;
    for (b = 0; b < B; ++b) {
        const DLT_T* xb = x + (long)b * C * H * W;
        for (f = 0; f < F; f += 4) {
            const DLT_T* wff = wf + (long)f * K;
            n = F - f < 4 ? F - f : 4;
            for (i = 0; i < oh; ++i) {
                DLT_T* o = out + ((long)b * F + f) * P + (long)i * ow;
                if (ow == 24 && kw == 5 && n == 4)
                    DLT_FN(dlt_fwd_row4_24x5)(xb, wff, o, C, H, W, kh, i, K, P);
                else
                    DLT_FN(dlt_fwd_row4)(xb, wff, o, C, H, W, kh, kw, ow, i, K, P, n);
            }
        }
    }
}

/* out (B, F, oh, ow) = conv(x, w). */
static int DLT_FN(dlt_conv_fwd)(const DLT_T* x, const DLT_T* w, DLT_T* out, int B, int C, int H,
                                int W, int F, int kh, int kw)
{
    const int oh = H - kh + 1, ow = W - kw + 1, K = C * kh * kw;
    const long P = (long)oh * ow;
    int chunk, b0, nb;
    DLT_T *wf, *cols, *zm;
    if (B == 0 || F == 0 || P == 0) return 0;
    wf = (DLT_T*)dlt_scratch(0, sizeof(DLT_T) * (long)F * K);
    if (!wf) return -1;
    DLT_FN(dlt_flip)(w, F, C, kh, kw, wf);
    if (DLT_DIRECT(K) && ow <= 512) {
        DLT_FN(dlt_conv_fwd_direct)(x, wf, out, B, C, H, W, F, kh, kw);
        return 0;
    }
    chunk = dlt_chunk(B, (long)(K > F ? K : F) * P, DLT_CHUNK);
    cols = (DLT_T*)dlt_scratch(1, sizeof(DLT_T) * (long)K * chunk * P);
    zm = (DLT_T*)dlt_scratch(2, sizeof(DLT_T) * (long)F * chunk * P);
    if (!cols || !zm) return -1;
    for (b0 = 0; b0 < B; b0 += chunk) {
        nb = B - b0 < chunk ? B - b0 : chunk;
        DLT_FN(dlt_im2col)(x, b0, nb, C, H, W, kh, kw, cols);
        DLT_FN(dlt_gemm)('N', 'N', F, (int)(nb * P), K, 1, wf, K, cols, (int)(nb * P), 0, zm,
                         (int)(nb * P));
        DLT_FN(dlt_bfp)(out, b0, nb, F, P, zm, 1);
    }
    return 0;
}

/* gx (B, C, oh+kh-1, ow+kw-1), the gradient of conv(x, w) with respect to x,
   from gz (B, F, oh, ow). */
static int DLT_FN(dlt_conv_gi)(const DLT_T* gz, const DLT_T* w, DLT_T* gx, int B, int F, int oh,
                               int ow, int C, int kh, int kw)
{
    const int H = oh + kh - 1, W = ow + kw - 1, K = C * kh * kw;
    const long P = (long)oh * ow;
    int chunk, b0, nb;
    DLT_T *wf, *dcols, *zm;
    if (B == 0 || C == 0) return 0;
    if (P == 0 || F == 0) {
        memset(gx, 0, sizeof(DLT_T) * (long)B * C * H * W);
        return 0;
    }
    chunk = dlt_chunk(B, (long)(K > F ? K : F) * P, DLT_CHUNK);
    wf = (DLT_T*)dlt_scratch(0, sizeof(DLT_T) * (long)F * K);
    dcols = (DLT_T*)dlt_scratch(1, sizeof(DLT_T) * (long)K * chunk * P);
    zm = (DLT_T*)dlt_scratch(2, sizeof(DLT_T) * (long)F * chunk * P);
    if (!wf || !dcols || !zm) return -1;
    DLT_FN(dlt_flip)(w, F, C, kh, kw, wf);
    for (b0 = 0; b0 < B; b0 += chunk) {
        nb = B - b0 < chunk ? B - b0 : chunk;
        DLT_FN(dlt_bfp)((DLT_T*)gz, b0, nb, F, P, zm, 0);
        DLT_FN(dlt_gemm)('T', 'N', K, (int)(nb * P), F, 1, wf, K, zm, (int)(nb * P), 0, dcols,
                         (int)(nb * P));
        DLT_FN(dlt_col2im)(dcols, b0, nb, C, H, W, kh, kw, gx);
    }
    return 0;
}

/* The partial sums of one tap row u of one image, filter and map: acc[v][j] is the
   sum over the output rows i of gz[i, j] * x[i + u, j + v].  Inlined with constant
   widths for LeNet5's first layer, where the compiler then vectorises the rows and,
   told that acc shares no memory with the inputs, keeps it in registers. */
static inline __attribute__((always_inline)) void DLT_FN(dlt_gw_rows)(
    const DLT_T* __restrict__ g, const DLT_T* __restrict__ xc, DLT_T* __restrict__ acc, int W,
    int u, int kw, int oh, int ow)
{
    int i, v, j;
    memset(acc, 0, sizeof(DLT_T) * (long)kw * ow);
    for (i = 0; i < oh; ++i) {
        const DLT_T* gr = g + (long)i * ow;
        const DLT_T* xr = xc + (long)(i + u) * W;
        for (v = 0; v < kw; ++v) {
            DLT_T* a = acc + (long)v * ow;
            for (j = 0; j < ow; ++j) a[j] += gr[j] * xr[j + v];
        }
    }
}

/* Adds one image's terms to G (K, F), the filters' gradient (flipped, transposed,
   in double) computed directly (few taps): for each tap (c, u, v) and filter f,
   the sum over the output positions of gz[f, i, j] * x[c, i+u, j+v], each sum
   rounded to DLT_T.  acc holds kw * ow elements. */
static void DLT_FN(dlt_gw_direct_image)(const DLT_T* xb, const DLT_T* gzb, double* G, DLT_T* acc,
                                        int C, int H, int W, int F, int oh, int ow)
{
    const int kh = H - oh + 1, kw = W - ow + 1;
    int f, c, u, v, j;
    for (f = 0; f < F; ++f) {
        const DLT_T* g = gzb + (long)f * oh * ow;
        for (c = 0; c < C; ++c) {
            const DLT_T* xc = xb + (long)c * H * W;
            for (u = 0; u < kh; ++u) {
                if (ow == 24 && kw == 5 && oh == 24)
                    DLT_FN(dlt_gw_rows)(g, xc, acc, W, u, 5, 24, 24);
                else
                    DLT_FN(dlt_gw_rows)(g, xc, acc, W, u, kw, oh, ow);
                for (v = 0; v < kw; ++v) {
                    DLT_T sum = 0;
                    for (j = 0; j < ow; ++j) sum += acc[(long)v * ow + j];
                    G[(long)((c * kh + u) * kw + v) * F + f] += sum;
                }
            }
        }
    }
}

/* gwt (K, F) directly, image after image (see dlt_gw_direct_image). */
static int DLT_FN(dlt_conv_gw_direct)(const DLT_T* x, const DLT_T* gz, DLT_T* gwt, int B, int C,
                                      int H, int W, int F, int oh, int ow)
{
    const int kw = W - ow + 1, K = C * (H - oh + 1) * kw;
    double* G = (double*)dlt_scratch(3, sizeof(double) * (long)K * F);
    DLT_T* acc = (DLT_T*)dlt_scratch(2, sizeof(DLT_T) * (long)kw * ow);
    long b, k;
    if (!G || !acc) return -1;
    memset(G, 0, sizeof(double) * (long)K * F);
    for (b = 0; b < B; ++b)
        DLT_FN(dlt_gw_direct_image)(x + b * C * H * W, gz + b * F * oh * ow, G, acc, C, H, W, F,
                                    oh, ow);
    for (k = 0; k < (long)K * F; ++k) gwt[k] = (DLT_T)G[k];
    return 0;
}

/* gw (F, C, kh, kw) <- gwt (K, F), flipped back in both spatial axes. */
static void DLT_FN(dlt_gw_unflip)(const DLT_T* gwt, DLT_T* gw, int F, int C, int kh, int kw)
{
    int f, c, u, v;
    for (f = 0; f < F; ++f)
        for (c = 0; c < C; ++c)
            for (u = 0; u < kh; ++u)
                for (v = 0; v < kw; ++v)
                    gw[(((long)f * C + c) * kh + (kh - 1 - u)) * kw + (kw - 1 - v)] =
                        gwt[(long)((c * kh + u) * kw + v) * F + f];
}

/* gw (F, C, H-oh+1, W-ow+1), the gradient of conv(x, w) with respect to w, from
   x (B, C, H, W) and gz (B, F, oh, ow). */
static int DLT_FN(dlt_conv_gw)(const DLT_T* x, const DLT_T* gz, DLT_T* gw, int B, int C, int H,
                               int W, int F, int oh, int ow)
{
    const int kh = H - oh + 1, kw = W - ow + 1, K = C * kh * kw;
    const long P = (long)oh * ow;
    int chunk, b0, nb;
    DLT_T *gwt, *cols, *zm;
    /* gwt (K, F) = cols (K, N) @ zm^T: this way round BLAS splits the work over
       its threads. */
    gwt = (DLT_T*)dlt_scratch(0, sizeof(DLT_T) * ((long)K * F + 1));
    if (!gwt) return -1;
    memset(gwt, 0, sizeof(DLT_T) * (long)K * F);
    if (B > 0 && P > 0 && K > 0 && F > 0) {
        if (DLT_DIRECT(K)) {
            if (DLT_FN(dlt_conv_gw_direct)(x, gz, gwt, B, C, H, W, F, oh, ow) != 0) return -1;
        } else {
            chunk = dlt_chunk(B, (long)(K > F ? K : F) * P, DLT_CHUNK_GW);
            cols = (DLT_T*)dlt_scratch(1, sizeof(DLT_T) * (long)K * chunk * P);
            zm = (DLT_T*)dlt_scratch(2, sizeof(DLT_T) * (long)F * chunk * P);
            if (!cols || !zm) return -1;
            for (b0 = 0; b0 < B; b0 += chunk) {
                nb = B - b0 < chunk ? B - b0 : chunk;
                DLT_FN(dlt_im2col)(x, b0, nb, C, H, W, kh, kw, cols);
                DLT_FN(dlt_bfp)((DLT_T*)gz, b0, nb, F, P, zm, 0);
                DLT_FN(dlt_gemm)('N', 'T', K, F, (int)(nb * P), 1, cols, (int)(nb * P), zm,
                                 (int)(nb * P), 1, gwt, F);
            }
        }
    }
    DLT_FN(dlt_gw_unflip)(gwt, gw, F, C, kh, kw);
    return 0;
}
