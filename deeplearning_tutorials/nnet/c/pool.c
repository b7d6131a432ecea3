/* Max pooling over non-overlapping wh x ww windows of n planes of H x W, and
   Theano's gradient of it, for one C type (DLT_T, DLT_FN as in conv.c).  Output
   planes are oh x ow: H / wh rounded down (ignore_border) or up (partial windows
   kept).  A NaN in a window makes its maximum NaN, as NumPy's max does.  Outputs
   never share memory with inputs (__restrict__: the compiler need not reload an
   input after each store). */

/* max(a, b), NaN when either is NaN; two selects, which the compiler keeps
   free of branches. */
static inline DLT_T DLT_FN(dlt_max2)(DLT_T a, DLT_T b)
{
    const DLT_T m = a > b ? a : b;
    return a != a ? a : m;
}

/* keep ? z : 0, with a bit mask: real data keeps one input in four at random,
   which a branch would mispredict. */
static inline DLT_T DLT_FN(dlt_keep)(int keep, DLT_T z)
{
    if (sizeof(DLT_T) == 4) {
        uint32_t bits;
        memcpy(&bits, &z, 4);
        bits &= (uint32_t)0 - (uint32_t)keep;
        memcpy(&z, &bits, 4);
    } else {
        uint64_t bits;
        memcpy(&bits, &z, 8);
        bits &= (uint64_t)0 - (uint64_t)keep;
        memcpy(&z, &bits, 8);
    }
    return z;
}

static void DLT_FN(dlt_max_pool)(const DLT_T* __restrict__ x, DLT_T* __restrict__ out, long n,
                                 int H, int W, int wh, int ww, int oh, int ow)
{
    long p;
    int i, j, u, v;
    if (wh == 2 && ww == 2 && 2 * oh <= H && 2 * ow <= W) {
        /* Whole 2x2 windows (LeNet5's), a select per pair: no branch to mispredict. */
        for (p = 0; p < n; ++p)
            for (i = 0; i < oh; ++i) {
                const DLT_T* r0 = x + (p * H + 2 * i) * W;
                const DLT_T* r1 = r0 + W;
                DLT_T* o = out + (p * oh + i) * ow;
                for (j = 0; j < ow; ++j)
                    o[j] = DLT_FN(dlt_max2)(DLT_FN(dlt_max2)(r0[2 * j], r0[2 * j + 1]),
                                            DLT_FN(dlt_max2)(r1[2 * j], r1[2 * j + 1]));
            }
        return;
    }
    for (p = 0; p < n; ++p) {
        const DLT_T* xp = x + p * H * W;
        DLT_T* op = out + p * oh * ow;
        for (i = 0; i < oh; ++i)
            for (j = 0; j < ow; ++j) {
                const int r1 = (i + 1) * wh < H ? (i + 1) * wh : H;
                const int c1 = (j + 1) * ww < W ? (j + 1) * ww : W;
                DLT_T m = xp[(long)i * wh * W + j * ww];
                for (u = i * wh; u < r1; ++u)
                    for (v = j * ww; v < c1; ++v)
                        if (xp[(long)u * W + v] > m || xp[(long)u * W + v] != xp[(long)u * W + v])
                            m = xp[(long)u * W + v];
                op[(long)i * ow + j] = m;
            }
    }
}

/* gx (n, H, W): every input equal to its window's maximum gets the window's
   gradient (ties included, as Theano's MaxPoolGrad); the others, and the rows and
   columns that no window covers, get zero.  Every element is written once. */
static void DLT_FN(dlt_max_pool_grad)(const DLT_T* __restrict__ x,
                                      const DLT_T* __restrict__ maxout,
                                      const DLT_T* __restrict__ gz, DLT_T* __restrict__ gx,
                                      long n, int H, int W, int wh, int ww, int oh, int ow)
{
    long p;
    int r, c, i, j;
    const int cols = ow * ww < W ? ow * ww : W;
    if (wh == 2 && ww == 2 && 2 * oh <= H && 2 * ow <= W) {
        /* Whole 2x2 windows: both rows of a window at once. */
        for (p = 0; p < n; ++p) {
            for (i = 0; i < oh; ++i) {
                const DLT_T* x0 = x + (p * H + 2 * i) * W;
                const DLT_T* x1 = x0 + W;
                DLT_T* g0 = gx + (p * H + 2 * i) * W;
                DLT_T* g1 = g0 + W;
                const DLT_T* mr = maxout + (p * oh + i) * ow;
                const DLT_T* zr = gz + (p * oh + i) * ow;
                for (j = 0; j < ow; ++j) {
                    const DLT_T m = mr[j], g = zr[j];
                    g0[2 * j] = DLT_FN(dlt_keep)(x0[2 * j] == m, g);
                    g0[2 * j + 1] = DLT_FN(dlt_keep)(x0[2 * j + 1] == m, g);
                    g1[2 * j] = DLT_FN(dlt_keep)(x1[2 * j] == m, g);
                    g1[2 * j + 1] = DLT_FN(dlt_keep)(x1[2 * j + 1] == m, g);
                }
                for (c = 2 * ow; c < W; ++c) g0[c] = g1[c] = 0;
            }
            if (2 * oh < H)
                memset(gx + (p * H + 2 * oh) * W, 0, sizeof(DLT_T) * (long)(H - 2 * oh) * W);
        }
        return;
    }
    for (p = 0; p < n; ++p)
        for (r = 0; r < H; ++r) {
            const DLT_T* xr = x + (p * H + r) * W;
            DLT_T* gr = gx + (p * H + r) * W;
            i = r / wh;
            if (i >= oh) {
                memset(gr, 0, sizeof(DLT_T) * W);
                continue;
            }
            {
                const DLT_T* mr = maxout + (p * oh + i) * ow;
                const DLT_T* zr = gz + (p * oh + i) * ow;
                for (c = 0; c < cols; ++c)
                    gr[c] = DLT_FN(dlt_keep)(xr[c] == mr[c / ww], zr[c / ww]);
                for (c = cols; c < W; ++c) gr[c] = 0;
            }
        }
}
