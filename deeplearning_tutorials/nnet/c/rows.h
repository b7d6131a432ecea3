/* Copy and add rows of n elements (dst, src not overlapping) for the convolution's
   im2col and col2im, whose rows are as short as an image's width.  With AVX-512 a
   row is a few masked vector moves; a compiler vectorising the plain loops, with
   the width known only at run time, leaves short rows to scalar code.  A row of
   at most half a vector uses the half-width registers: a masked access reaches
   past the row, and a load whose masked-off lanes overlap a store just before it
   waits for that store. */
#ifndef DLT_ROWS_H
#define DLT_ROWS_H
#if defined(__AVX512F__) && defined(__AVX512VL__)
#include <immintrin.h>

static inline void dlt_copy_row_float(float* __restrict d, const float* __restrict s, int n)
{
    int j = 0;
    for (; j + 16 <= n; j += 16) _mm512_storeu_ps(d + j, _mm512_loadu_ps(s + j));
    if (n - j > 8) {
        const __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        _mm512_mask_storeu_ps(d + j, m, _mm512_maskz_loadu_ps(m, s + j));
    } else if (n > j) {
        const __mmask8 m = (__mmask8)((1u << (n - j)) - 1);
        _mm256_mask_storeu_ps(d + j, m, _mm256_maskz_loadu_ps(m, s + j));
    }
}

static inline void dlt_add_row_float(float* __restrict d, const float* __restrict s, int n)
{
    int j = 0;
    for (; j + 16 <= n; j += 16)
        _mm512_storeu_ps(d + j, _mm512_add_ps(_mm512_loadu_ps(d + j), _mm512_loadu_ps(s + j)));
    if (n - j > 8) {
        const __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        _mm512_mask_storeu_ps(d + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, d + j),
                                                      _mm512_maskz_loadu_ps(m, s + j)));
    } else if (n > j) {
        const __mmask8 m = (__mmask8)((1u << (n - j)) - 1);
        _mm256_mask_storeu_ps(d + j, m, _mm256_add_ps(_mm256_maskz_loadu_ps(m, d + j),
                                                      _mm256_maskz_loadu_ps(m, s + j)));
    }
}

static inline void dlt_copy_row_double(double* __restrict d, const double* __restrict s, int n)
{
    int j = 0;
    for (; j + 8 <= n; j += 8) _mm512_storeu_pd(d + j, _mm512_loadu_pd(s + j));
    if (n - j > 4) {
        const __mmask8 m = (__mmask8)((1u << (n - j)) - 1);
        _mm512_mask_storeu_pd(d + j, m, _mm512_maskz_loadu_pd(m, s + j));
    } else if (n > j) {
        const __mmask8 m = (__mmask8)((1u << (n - j)) - 1);
        _mm256_mask_storeu_pd(d + j, m, _mm256_maskz_loadu_pd(m, s + j));
    }
}

static inline void dlt_add_row_double(double* __restrict d, const double* __restrict s, int n)
{
    int j = 0;
    for (; j + 8 <= n; j += 8)
        _mm512_storeu_pd(d + j, _mm512_add_pd(_mm512_loadu_pd(d + j), _mm512_loadu_pd(s + j)));
    if (n - j > 4) {
        const __mmask8 m = (__mmask8)((1u << (n - j)) - 1);
        _mm512_mask_storeu_pd(d + j, m, _mm512_add_pd(_mm512_maskz_loadu_pd(m, d + j),
                                                      _mm512_maskz_loadu_pd(m, s + j)));
    } else if (n > j) {
        const __mmask8 m = (__mmask8)((1u << (n - j)) - 1);
        _mm256_mask_storeu_pd(d + j, m, _mm256_add_pd(_mm256_maskz_loadu_pd(m, d + j),
                                                      _mm256_maskz_loadu_pd(m, s + j)));
    }
}
#else
static inline void dlt_copy_row_float(float* __restrict d, const float* __restrict s, int n)
{
    int j;
    for (j = 0; j < n; ++j) d[j] = s[j];
}

static inline void dlt_add_row_float(float* __restrict d, const float* __restrict s, int n)
{
    int j;
    for (j = 0; j < n; ++j) d[j] += s[j];
}

static inline void dlt_copy_row_double(double* __restrict d, const double* __restrict s, int n)
{
    int j;
    for (j = 0; j < n; ++j) d[j] = s[j];
}

static inline void dlt_add_row_double(double* __restrict d, const double* __restrict s, int n)
{
    int j;
    for (j = 0; j < n; ++j) d[j] += s[j];
}
#endif
#endif
