/* Max pooling over non-overlapping wh x ww windows of n planes of H x W, and
   Theano's gradient of it, for one C type (DLT_T, DLT_FN as in conv.c).  Output
   planes are oh x ow: H / wh rounded down (ignore_border) or up (partial windows
   kept).  A NaN in a window makes its maximum NaN, as NumPy's max does. */

static void DLT_FN(dlt_max_pool)(const DLT_T* x, DLT_T* out, long n, int H, int W, int wh,
                                 int ww, int oh, int ow)
{
    long p;
    int i, j, u, v;
    if (wh == 2 && ww == 2 && 2 * oh <= H && 2 * ow <= W) {
        /* Whole 2x2 windows (LeNet5's): selects the compiler vectorises. */
        for (p = 0; p < n; ++p)
            for (i = 0; i < oh; ++i) {
                const DLT_T* r0 = x + (p * H + 2 * i) * W;
                const DLT_T* r1 = r0 + W;
                DLT_T* o = out + (p * oh + i) * ow;
                for (j = 0; j < ow; ++j) {
                    DLT_T m = r0[2 * j], t = r0[2 * j + 1];
                    m = t > m || t != t ? t : m;
                    t = r1[2 * j]; m = t > m || t != t ? t : m;
                    t = r1[2 * j + 1]; m = t > m || t != t ? t : m;
                    o[j] = m;
                }
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
   columns that no window covers, get zero.  Every element is written once, with
   a select rather than a branch (real data takes it one time in four, at random,
   which a branch would mispredict). */
static void DLT_FN(dlt_max_pool_grad)(const DLT_T* x, const DLT_T* maxout, const DLT_T* gz,
                                      DLT_T* gx, long n, int H, int W, int wh, int ww, int oh,
                                      int ow)
{
    long p;
    int r, c, i, j;
    const int cols = ow * ww < W ? ow * ww : W;
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
                if (ww == 2 && cols == 2 * ow)
                    for (j = 0; j < ow; ++j) {
                        const DLT_T m = mr[j], g = zr[j];
                        gr[2 * j] = xr[2 * j] == m ? g : (DLT_T)0;
                        gr[2 * j + 1] = xr[2 * j + 1] == m ? g : (DLT_T)0;
                    }
                else
                    for (c = 0; c < cols; ++c)
                        gr[c] = xr[c] == mr[c / ww] ? zr[c / ww] : (DLT_T)0;
                for (c = cols; c < W; ++c) gr[c] = 0;
            }
        }
}
