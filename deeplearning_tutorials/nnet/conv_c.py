"""C code for the convolution and max-pooling Ops (PyTensor's "C" and "CVM" linkers).

The convolution kernels mirror the Numba ones (:mod:`.numba_kernels`): im2col in
a ``(C*kh*kw, nb*oh*ow)`` layout over chunks of the batch, then one GEMM per chunk.

Port note: a pip-installed PyTensor usually finds no BLAS to link against, and
its own C GEMM then falls back to Python. These kernels instead take ``sgemm`` /
``dgemm`` from the BLAS SciPy ships, through the function-pointer capsules that
``scipy.linalg.cython_blas`` exports (``__pyx_capi__``); nothing needs linking,
and C, CVM, Numba and NumPy all end up in the same BLAS.
"""

from pytensor.graph.utils import MethodNotDefined

from deeplearning_tutorials.nnet.threads_c import THREADS_CODE

# Bump when any C string below changes, so PyTensor recompiles the modules.
C_CODE_VERSION = (21,)

_BLAS_CODE = r"""
#ifndef DLT_NNET_BLAS_DEFINED
#define DLT_NNET_BLAS_DEFINED
#include <string.h>
#include <stdlib.h>

typedef void (*dlt_sgemm_t)(char*, char*, int*, int*, int*, float*, float*, int*,
                            float*, int*, float*, float*, int*);
typedef void (*dlt_dgemm_t)(char*, char*, int*, int*, int*, double*, double*, int*,
                            double*, int*, double*, double*, int*);
static dlt_sgemm_t dlt_sgemm_ptr = NULL;
static dlt_dgemm_t dlt_dgemm_ptr = NULL;

/* Fetch sgemm/dgemm from scipy.linalg.cython_blas once; 0 on success, -1 with a
   Python error set otherwise. Called with the GIL held (from an Op's c_code). */
static int dlt_blas_init(void)
{
    PyObject *mod, *capi, *cap;
    if (dlt_sgemm_ptr != NULL && dlt_dgemm_ptr != NULL)
        return 0;
    mod = PyImport_ImportModule("scipy.linalg.cython_blas");
    if (mod == NULL)
        return -1;
    capi = PyObject_GetAttrString(mod, "__pyx_capi__");
    Py_DECREF(mod);
    if (capi == NULL)
        return -1;
    cap = PyDict_GetItemString(capi, "sgemm");
    if (cap != NULL)
        dlt_sgemm_ptr = (dlt_sgemm_t)PyCapsule_GetPointer(cap, PyCapsule_GetName(cap));
    cap = PyDict_GetItemString(capi, "dgemm");
    if (cap != NULL)
        dlt_dgemm_ptr = (dlt_dgemm_t)PyCapsule_GetPointer(cap, PyCapsule_GetName(cap));
    Py_DECREF(capi);
    if (dlt_sgemm_ptr == NULL || dlt_dgemm_ptr == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError,
                            "deeplearning_tutorials.nnet: no sgemm/dgemm in scipy.linalg.cython_blas");
        return -1;
    }
    return 0;
}

/* Row-major C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C, on the
   column-major BLAS: the same call computes C^T = op(B)^T op(A)^T. */
static void dlt_rm_sgemm(char ta, char tb, int M, int N, int K, float alpha,
                         const float* A, int lda, const float* B, int ldb,
                         float beta, float* C, int ldc)
{
    dlt_sgemm_ptr(&tb, &ta, &N, &M, &K, &alpha, (float*)B, &ldb, (float*)A, &lda,
                  &beta, C, &ldc);
}
static void dlt_rm_dgemm(char ta, char tb, int M, int N, int K, double alpha,
                         const double* A, int lda, const double* B, int ldb,
                         double beta, double* C, int ldc)
{
    dlt_dgemm_ptr(&tb, &ta, &N, &M, &K, &alpha, (double*)B, &ldb, (double*)A, &lda,
                  &beta, C, &ldc);
}

/* Scratch buffers for the column matrices, kept from one call to the next
   (one set per thread): a fresh malloc of a few MB is a fresh mmap, and
   touching its pages again at every minibatch cost about 1 ms per
   convolution. Slot 0..2; NULL when out of memory. */
static __thread void* dlt_scratch_ptr[3] = {NULL, NULL, NULL};
static __thread size_t dlt_scratch_size[3] = {0, 0, 0};
static void* dlt_scratch(int slot, size_t bytes)
{
    if (bytes == 0) bytes = 1;
    if (dlt_scratch_size[slot] < bytes) {
        void* p = NULL;
        free(dlt_scratch_ptr[slot]);
        if (posix_memalign(&p, 64, bytes) != 0) p = NULL;
        dlt_scratch_ptr[slot] = p;
        dlt_scratch_size[slot] = p ? bytes : 0;
    }
    return dlt_scratch_ptr[slot];
}

/* Images per chunk, so a chunk's column matrix holds about 2**20 elements. */
static int dlt_chunk(int batch, long per_image)
{
    long c;
    if (per_image < 1) per_image = 1;
    c = (1L << 20) / per_image;
    if (c < 1) c = 1;
    if (c > batch) c = batch;
    return (int)(c < 1 ? 1 : c);
}
#endif
"""


# The float32 forward pass and both gradients of layers with many taps, on
# processors with AVX-512 (when PyTensor's flags for this machine enable it):
# implicit GEMMs whose operands never leave the caches, in place of im2col (or
# col2im) and sgemm.
_AVX512_CONV_CODE = r"""
#ifndef DLT_NNET_AVX512_CONV_DEFINED
#define DLT_NNET_AVX512_CONV_DEFINED
#if defined(__AVX512F__)
#include <immintrin.h>
#define DLT_HAVE_AVX512_CONV 1
/* out (B, F, oh, ow) = true valid convolution of x with w, in float32, without
   im2col. The filters are packed once as wt (C*kh*kw, Fp), flipped, Fp = F
   rounded up to 64 with zero columns. A tile is four neighbouring outputs of one
   row times 64 filters: sixteen 16-wide sums in registers; each tap adds one
   weight vector row times four broadcast pixels, 16 FMAs for 8 loads, read from
   the image (a few kB, in the first-level cache) and the packed filters (in the
   second). Each output is a sum over the taps in the order (c, u, v) in float32,
   as sgemm's is over the same 500 terms in its own order. LeNet5's second layer:
   12 -> 6 ms a minibatch on two cores, where OpenBLAS's sgemm on the column
   matrix runs its AVX2 kernels (the environment's OPENBLAS_CORETYPE=Haswell). */
typedef struct {
    const float* x;
    const float* wt;
    float* out;
    int B, C, H, W, F, Fp, kh, kw;
} dlt_fwd_avx512_args;

static void dlt_fwd_avx512_task(void* arg, int part, int nparts)
{
    const dlt_fwd_avx512_args* a = (const dlt_fwd_avx512_args*)arg;
    const int C = a->C, H = a->H, W = a->W, F = a->F, Fp = a->Fp, kh = a->kh, kw = a->kw;
    const int oh = H - kh + 1, ow = W - kw + 1;
    const long P = (long)oh * ow;
    float t[4][64] __attribute__((aligned(64)));
    long lo, hi, b;
    int fb, i, j0, c, u, v, f, jj;
    dlt_split(a->B, part, nparts, &lo, &hi);
    for (b = lo; b < hi; ++b) {
        const float* xb = a->x + (long)b * C * H * W;
        for (fb = 0; fb < Fp; fb += 64) {
            const int fe = F - fb < 64 ? F - fb : 64;
            for (i = 0; i < oh; ++i)
                for (j0 = 0; j0 < ow; j0 += 4) {
                    /* A short last tile repeats its last column rather than read
                       past the row (and, at the batch's end, past the image). */
                    const int nj = ow - j0 < 4 ? ow - j0 : 4;
                    const int o1 = nj > 1 ? 1 : nj - 1, o2 = nj > 2 ? 2 : nj - 1;
                    const int o3 = nj > 3 ? 3 : nj - 1;
                    const float* wk = a->wt + fb;
                    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
                    __m512 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
                    __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
                    __m512 a30 = a00, a31 = a00, a32 = a00, a33 = a00;
                    float* o;
                    for (c = 0; c < C; ++c)
                        for (u = 0; u < kh; ++u) {
                            const float* xr = xb + ((long)c * H + i + u) * W + j0;
                            for (v = 0; v < kw; ++v, wk += Fp) {
                                const __m512 w0 = _mm512_loadu_ps(wk), w1 = _mm512_loadu_ps(wk + 16);
                                const __m512 w2 = _mm512_loadu_ps(wk + 32), w3 = _mm512_loadu_ps(wk + 48);
                                __m512 p = _mm512_set1_ps(xr[v]);
                                a00 = _mm512_fmadd_ps(w0, p, a00); a01 = _mm512_fmadd_ps(w1, p, a01);
                                a02 = _mm512_fmadd_ps(w2, p, a02); a03 = _mm512_fmadd_ps(w3, p, a03);
                                p = _mm512_set1_ps(xr[v + o1]);
                                a10 = _mm512_fmadd_ps(w0, p, a10); a11 = _mm512_fmadd_ps(w1, p, a11);
                                a12 = _mm512_fmadd_ps(w2, p, a12); a13 = _mm512_fmadd_ps(w3, p, a13);
                                p = _mm512_set1_ps(xr[v + o2]);
                                a20 = _mm512_fmadd_ps(w0, p, a20); a21 = _mm512_fmadd_ps(w1, p, a21);
                                a22 = _mm512_fmadd_ps(w2, p, a22); a23 = _mm512_fmadd_ps(w3, p, a23);
                                p = _mm512_set1_ps(xr[v + o3]);
                                a30 = _mm512_fmadd_ps(w0, p, a30); a31 = _mm512_fmadd_ps(w1, p, a31);
                                a32 = _mm512_fmadd_ps(w2, p, a32); a33 = _mm512_fmadd_ps(w3, p, a33);
                            }
                        }
                    _mm512_store_ps(t[0], a00); _mm512_store_ps(t[0] + 16, a01);
                    _mm512_store_ps(t[0] + 32, a02); _mm512_store_ps(t[0] + 48, a03);
                    _mm512_store_ps(t[1], a10); _mm512_store_ps(t[1] + 16, a11);
                    _mm512_store_ps(t[1] + 32, a12); _mm512_store_ps(t[1] + 48, a13);
                    _mm512_store_ps(t[2], a20); _mm512_store_ps(t[2] + 16, a21);
                    _mm512_store_ps(t[2] + 32, a22); _mm512_store_ps(t[2] + 48, a23);
                    _mm512_store_ps(t[3], a30); _mm512_store_ps(t[3] + 16, a31);
                    _mm512_store_ps(t[3] + 32, a32); _mm512_store_ps(t[3] + 48, a33);
                    o = a->out + ((long)b * F + fb) * P + (long)i * ow + j0;
                    for (f = 0; f < fe; ++f)
                        for (jj = 0; jj < nj; ++jj) o[(long)f * P + jj] = t[jj][f];
                }
        }
    }
}

/* The float32 filters' gradient the same way: G (C*kh*kw, Fp), G[k][f] the sum
   over the images and output positions of x[b, c, i+u, j+v] * gz[b, f, i, j],
   k = (c, u, v). A tile is four taps times 64 filters, sixteen 16-wide sums in
   registers, over one image's positions; per position four gz vectors (the
   image's gz transposed to (position, filter), in the first-level cache) times
   four broadcast pixels. Each image's sums (64 terms for LeNet5) are in float32,
   their sum over the images in double, so the result does not depend on how the
   images are split over the threads (to float32's last bit, almost always), and
   is closer to the exact sum than sgemm's float32 sums over all 32,000 terms.
   LeNet5's second layer: 9.9 -> 6 ms. */
static inline void dlt_add_ps_to_pd(double* d, __m512 a)
{
    const __m256 lo = _mm512_castps512_ps256(a);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
    _mm512_storeu_pd(d, _mm512_add_pd(_mm512_loadu_pd(d), _mm512_cvtps_pd(lo)));
    _mm512_storeu_pd(d + 8, _mm512_add_pd(_mm512_loadu_pd(d + 8), _mm512_cvtps_pd(hi)));
}

typedef struct {
    const float* x;
    const float* gz;
    double* G;  /* nparts blocks of Kp x Fp, then an out-of-memory flag */
    int B, C, H, W, F, Fp, Kp, kh, kw;
} dlt_gw_avx512_args;

static void dlt_gw_avx512_task(void* arg, int part, int nparts)
{
    const dlt_gw_avx512_args* a = (const dlt_gw_avx512_args*)arg;
    const int C = a->C, H = a->H, W = a->W, F = a->F, Fp = a->Fp, Kp = a->Kp;
    const int kh = a->kh, kw = a->kw, K = C * kh * kw;
    const int oh = H - kh + 1, ow = W - kw + 1;
    const long P = (long)oh * ow;
    double* G = a->G + (long)part * Kp * Fp;
    /* Thread-local scratch: this thread's transposed gz. */
    float* gzT = (float*)dlt_scratch(2, sizeof(float) * (P * 64 + 1));
    long lo, hi, b, p;
    int fb, f, k0, t, i, j;
    memset(G, 0, sizeof(double) * (long)Kp * Fp);
    if (!gzT) { a->G[(long)nparts * Kp * Fp] = 1; return; }  /* flag: out of memory */
    dlt_split(a->B, part, nparts, &lo, &hi);
    for (b = lo; b < hi; ++b) {
        const float* xb = a->x + (long)b * C * H * W;
        const float* gb = a->gz + (long)b * F * P;
        for (fb = 0; fb < Fp; fb += 64) {
            const int fe = F - fb < 64 ? F - fb : 64;
            for (p = 0; p < P; ++p) {
                for (f = 0; f < fe; ++f) gzT[p * 64 + f] = gb[(long)(fb + f) * P + p];
                for (; f < 64; ++f) gzT[p * 64 + f] = 0.0f;
            }
            for (k0 = 0; k0 < Kp; k0 += 4) {
                double* g = G + (long)k0 * Fp + fb;
                const float* xt[4];
                __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
                __m512 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
                __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
                __m512 a30 = a00, a31 = a00, a32 = a00, a33 = a00;
                for (t = 0; t < 4; ++t) {
                    /* Taps past K (K not a multiple of 4) repeat the last one; their
                       rows of G are never read. */
                    const int k = k0 + t < K ? k0 + t : K - 1;
                    const int c = k / (kh * kw), u = (k / kw) % kh, v = k % kw;
                    xt[t] = xb + ((long)c * H + u) * W + v;
                }
                for (i = 0; i < oh; ++i)
                    for (j = 0; j < ow; ++j) {
                        const float* gp = gzT + ((long)i * ow + j) * 64;
                        const long q = (long)i * W + j;
                        const __m512 g0 = _mm512_loadu_ps(gp), g1 = _mm512_loadu_ps(gp + 16);
                        const __m512 g2 = _mm512_loadu_ps(gp + 32), g3 = _mm512_loadu_ps(gp + 48);
                        __m512 s = _mm512_set1_ps(xt[0][q]);
                        a00 = _mm512_fmadd_ps(g0, s, a00); a01 = _mm512_fmadd_ps(g1, s, a01);
                        a02 = _mm512_fmadd_ps(g2, s, a02); a03 = _mm512_fmadd_ps(g3, s, a03);
                        s = _mm512_set1_ps(xt[1][q]);
                        a10 = _mm512_fmadd_ps(g0, s, a10); a11 = _mm512_fmadd_ps(g1, s, a11);
                        a12 = _mm512_fmadd_ps(g2, s, a12); a13 = _mm512_fmadd_ps(g3, s, a13);
                        s = _mm512_set1_ps(xt[2][q]);
                        a20 = _mm512_fmadd_ps(g0, s, a20); a21 = _mm512_fmadd_ps(g1, s, a21);
                        a22 = _mm512_fmadd_ps(g2, s, a22); a23 = _mm512_fmadd_ps(g3, s, a23);
                        s = _mm512_set1_ps(xt[3][q]);
                        a30 = _mm512_fmadd_ps(g0, s, a30); a31 = _mm512_fmadd_ps(g1, s, a31);
                        a32 = _mm512_fmadd_ps(g2, s, a32); a33 = _mm512_fmadd_ps(g3, s, a33);
                    }
                dlt_add_ps_to_pd(g, a00); dlt_add_ps_to_pd(g + 16, a01);
                dlt_add_ps_to_pd(g + 32, a02); dlt_add_ps_to_pd(g + 48, a03);
                dlt_add_ps_to_pd(g + Fp, a10); dlt_add_ps_to_pd(g + Fp + 16, a11);
                dlt_add_ps_to_pd(g + Fp + 32, a12); dlt_add_ps_to_pd(g + Fp + 48, a13);
                dlt_add_ps_to_pd(g + 2 * Fp, a20); dlt_add_ps_to_pd(g + 2 * Fp + 16, a21);
                dlt_add_ps_to_pd(g + 2 * Fp + 32, a22); dlt_add_ps_to_pd(g + 2 * Fp + 48, a23);
                dlt_add_ps_to_pd(g + 3 * Fp, a30); dlt_add_ps_to_pd(g + 3 * Fp + 16, a31);
                dlt_add_ps_to_pd(g + 3 * Fp + 32, a32); dlt_add_ps_to_pd(g + 3 * Fp + 48, a33);
            }
        }
    }
}

/* gwf (C*kh*kw, F), the caller's layout, from x and gz; -1 when out of memory. */
static int dlt_conv_gw_avx512(const float* x, const float* gz, float* gwf, int B, int C, int H,
                              int W, int F, int oh, int ow)
{
    const int kh = H - oh + 1, kw = W - ow + 1, K = C * kh * kw;
    const int Kp = (K + 3) / 4 * 4, Fp = (F + 63) / 64 * 64;
    int n = dlt_threads(), f, p;
    long k;
    dlt_gw_avx512_args a;
    if (n > B) n = B;
    a.G = (double*)dlt_scratch(1, sizeof(double) * ((long)n * Kp * Fp + 1));
    if (!a.G) return -1;
    a.G[(long)n * Kp * Fp] = 0;
    a.x = x; a.gz = gz; a.B = B; a.C = C; a.H = H; a.W = W; a.F = F; a.Fp = Fp; a.Kp = Kp;
    a.kh = kh; a.kw = kw;
    dlt_parallel(dlt_gw_avx512_task, &a, n);
    if (a.G[(long)n * Kp * Fp] != 0) return -1;
    for (k = 0; k < K; ++k)
        for (f = 0; f < F; ++f) {
            double sum = 0;
            for (p = 0; p < n; ++p) sum += a.G[((long)p * Kp + k) * Fp + f];
            gwf[k * F + f] = (float)sum;
        }
    return 0;
}

/* The float32 input gradient for output rows 8 wide (LeNet5's second layer):
   gx[b, c, i+u, j+v] += wf[f, (c, u, v)] * gz[b, f, i, j] summed over f, wf the
   flipped filters packed as (F, Kp), Kp = C*kh*kw rounded up to 16. A tile is
   16 output positions (two rows of 8, one vector of gz) times 16 taps: sixteen
   sums over the filters in registers, each a vector load of gz and a broadcast
   tap per filter; each sum then adds two 8-wide rows into gx (the image's gx, a
   few kB, stays in the first-level cache). No column matrix: 9.4 -> 6.2 ms. The
   sum over the filters runs in float32 in order f, as sgemm's over the same 50
   terms; the taps of one image reach the same pixel in the order (c, u, v). */
typedef struct {
    const float* gz;
    const float* wt;
    float* gx;
    int B, F, oh, C, kh, kw, Kp;
} dlt_gi_avx512_args;

static void dlt_gi_avx512_task(void* arg, int part, int nparts)
{
    const dlt_gi_avx512_args* a = (const dlt_gi_avx512_args*)arg;
    const int F = a->F, oh = a->oh, C = a->C, kh = a->kh, kw = a->kw, Kp = a->Kp;
    const int H = oh + kh - 1, W = 8 + kw - 1, K = C * kh * kw;
    const long P = (long)oh * 8;
    long lo, hi, b;
    int i, k0, f, t;
    dlt_split(a->B, part, nparts, &lo, &hi);
    for (b = lo; b < hi; ++b) {
        const float* gb = a->gz + (long)b * F * P;
        float* gxb = a->gx + (long)b * C * H * W;
        memset(gxb, 0, sizeof(float) * (long)C * H * W);
        for (i = 0; i < oh; i += 2)
            for (k0 = 0; k0 < Kp; k0 += 16) {
                __m512 s[16];
                const float* wk = a->wt + k0;
                const float* g = gb + (long)i * 8;
                const int ke = K - k0 < 16 ? K - k0 : 16;
                for (t = 0; t < 16; ++t) s[t] = _mm512_setzero_ps();
                for (f = 0; f < F; ++f, wk += Kp, g += P) {
                    const __m512 gv = _mm512_loadu_ps(g);
                    for (t = 0; t < 16; ++t) s[t] = _mm512_fmadd_ps(_mm512_set1_ps(wk[t]), gv, s[t]);
                }
                for (t = 0; t < ke; ++t) {
                    const int k = k0 + t, c = k / (kh * kw), u = (k / kw) % kh, v = k % kw;
                    float* o = gxb + ((long)c * H + i + u) * W + v;
                    const __m256 r0 = _mm512_castps512_ps256(s[t]);
                    const __m256 r1 =
                        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s[t]), 1));
                    _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), r0));
                    _mm256_storeu_ps(o + W, _mm256_add_ps(_mm256_loadu_ps(o + W), r1));
                }
            }
    }
}

static int dlt_conv_gi_avx512(const float* gz, const float* w, float* gx, int B, int F, int oh,
                              int C, int kh, int kw)
{
    const int K = C * kh * kw, Kp = (K + 15) / 16 * 16;
    int n = dlt_threads(), f, k;
    dlt_gi_avx512_args a;
    float* wt = (float*)dlt_scratch(0, sizeof(float) * ((long)F * Kp + 1));
    if (!wt) return -1;
    for (f = 0; f < F; ++f)
        for (k = 0; k < Kp; ++k) {
            float val = 0.0f;
            if (k < K) {
                const int c = k / (kh * kw), u = (k / kw) % kh, v = k % kw;
                val = w[(((long)f * C + c) * kh + (kh - 1 - u)) * kw + (kw - 1 - v)];
            }
            wt[(long)f * Kp + k] = val;
        }
    a.gz = gz; a.wt = wt; a.gx = gx; a.B = B; a.F = F; a.oh = oh; a.C = C; a.kh = kh;
    a.kw = kw; a.Kp = Kp;
    if (n > B) n = B;
    dlt_parallel(dlt_gi_avx512_task, &a, n);
    return 0;
}

static int dlt_conv_fwd_avx512(const float* x, const float* w, float* out, int B, int C, int H,
                               int W, int F, int kh, int kw)
{
    const int K = C * kh * kw, Fp = (F + 63) / 64 * 64;
    int n = dlt_threads(), f, c, u, v;
    dlt_fwd_avx512_args a;
    float* wt = (float*)dlt_scratch(0, sizeof(float) * (long)K * Fp);
    if (!wt) return -1;
    for (c = 0; c < C; ++c)
        for (u = 0; u < kh; ++u)
            for (v = 0; v < kw; ++v) {
                float* row = wt + (long)((c * kh + u) * kw + v) * Fp;
                for (f = 0; f < Fp; ++f)
                    row[f] = f < F ? w[(((long)f * C + c) * kh + (kh - 1 - u)) * kw + (kw - 1 - v)] : 0.0f;
            }
    a.x = x; a.wt = wt; a.out = out; a.B = B; a.C = C; a.H = H; a.W = W; a.F = F; a.Fp = Fp;
    a.kh = kh; a.kw = kw;
    if (n > B) n = B;
    dlt_parallel(dlt_fwd_avx512_task, &a, n);
    return 0;
}
#endif
#endif
"""

# One copy of the kernels per C type: DLT_T is the type, SFX names the copy, GEMM is
# the row-major wrapper.
_KERNELS_TEMPLATE = r"""
#ifndef DLT_NNET_KERNELS_SFX_DEFINED
#define DLT_NNET_KERNELS_SFX_DEFINED
/* w (F, C, kh, kw) -> wf (F, C*kh*kw), flipped in both spatial axes. */
static void dlt_flip_SFX(const DLT_T* w, int F, int C, int kh, int kw, DLT_T* wf)
{
    int f, c, u, v, K = C * kh * kw;
    for (f = 0; f < F; ++f)
        for (c = 0; c < C; ++c)
            for (u = 0; u < kh; ++u)
                for (v = 0; v < kw; ++v)
                    wf[(long)f * K + (c * kh + u) * kw + v] =
                        w[(((long)f * C + c) * kh + (kh - 1 - u)) * kw + (kw - 1 - v)];
}

/* The rows that im2col copies are only ow elements long (8 and 24 in LeNet5):
   with ow a constant the compiler turns each into a few vector moves, four
   times faster than the general loop (5.9 -> 1.4 ms for the second layer). */
#define DLT_IM2COL_ROWS_SFX(N)                                                     \
    for (bb = bb0; bb < bb1; ++bb)                                             \
        for (i = 0; i < oh; ++i) {                                             \
            const DLT_T* src = x + (((long)(b0 + bb) * C + c) * H + (i + u)) * W + v; \
            DLT_T* dst = row + bb * P + (long)i * (N);                         \
            for (j = 0; j < (N); ++j)                                          \
                dst[j] = src[j];                                               \
        }
#define DLT_COL2IM_ROWS_SFX(N)                                                     \
    for (bb = bb0; bb < bb1; ++bb)                                             \
        for (i = 0; i < oh; ++i) {                                             \
            DLT_T* dst = gx + (((long)(b0 + bb) * C + c) * H + (i + u)) * W + v; \
            const DLT_T* src = row + bb * P + (long)i * (N);                   \
            for (j = 0; j < (N); ++j)                                          \
                dst[j] += src[j];                                              \
        }

/* Columns of images b0+bb0 .. b0+bb1 of cols (C*kh*kw, nb*oh*ow) <- their
   patches in x (B, C, H, W). */
static void dlt_im2col_SFX(const DLT_T* x, int b0, int nb, int bb0, int bb1, int C, int H,
                           int W, int kh, int kw, DLT_T* cols)
{
    int oh = H - kh + 1, ow = W - kw + 1, c, u, v, bb, i, j;
    long P = (long)oh * ow, ncol = nb * P;
    for (c = 0; c < C; ++c)
        for (u = 0; u < kh; ++u)
            for (v = 0; v < kw; ++v) {
                DLT_T* row = cols + ((long)(c * kh + u) * kw + v) * ncol;
                switch (ow) {
                case 8: DLT_IM2COL_ROWS_SFX(8) break;
                case 24: DLT_IM2COL_ROWS_SFX(24) break;
                default: DLT_IM2COL_ROWS_SFX(ow)
                }
            }
}

/* Images b0+bb0 .. b0+bb1 of gx (B, C, H, W) = col2im(their columns of
   dcols (C*kh*kw, nb*oh*ow)). */
static void dlt_col2im_SFX(const DLT_T* dcols, int b0, int nb, int bb0, int bb1, int C, int H,
                           int W, int kh, int kw, DLT_T* gx)
{
    int oh = H - kh + 1, ow = W - kw + 1, c, u, v, bb, i, j;
    long P = (long)oh * ow, ncol = nb * P;
    if (bb1 > bb0)
        memset(gx + (long)(b0 + bb0) * C * H * W, 0, sizeof(DLT_T) * (long)(bb1 - bb0) * C * H * W);
    for (c = 0; c < C; ++c)
        for (u = 0; u < kh; ++u)
            for (v = 0; v < kw; ++v) {
                const DLT_T* row = dcols + ((long)(c * kh + u) * kw + v) * ncol;
                switch (ow) {
                case 8: DLT_COL2IM_ROWS_SFX(8) break;
                case 24: DLT_COL2IM_ROWS_SFX(24) break;
                default: DLT_COL2IM_ROWS_SFX(ow)
                }
            }
}

/* z (B, F, P) <-> zm (F, nb*P) for images b0+bb0 .. b0+bb1; gathers into zm, or
   scatters from it. */
static void dlt_bfp_SFX(DLT_T* z, int b0, int nb, int bb0, int bb1, int F, long P, DLT_T* zm,
                        int scatter)
{
    int f, bb;
    for (bb = bb0; bb < bb1; ++bb)
        for (f = 0; f < F; ++f) {
            DLT_T* a = z + ((long)(b0 + bb) * F + f) * P;
            DLT_T* m = zm + (long)f * nb * P + (long)bb * P;
            if (scatter) memcpy(a, m, P * sizeof(DLT_T));
            else memcpy(m, a, P * sizeof(DLT_T));
        }
}

/* The copies around one GEMM, shared among the threads image by image: each
   stage runs when its image count is positive. */
typedef struct {
    int C, H, W, kh, kw, F;
    long P;
    /* im2col of images a_b0 .. a_b0+a_nb of x into cols */
    const DLT_T* x;
    DLT_T* cols;
    int a_b0, a_nb;
    /* gather (g_scatter 0) or scatter (1) of images g_b0 .. g_b0+g_nb, z <-> zm */
    DLT_T* z;
    DLT_T* zm;
    int g_b0, g_nb, g_scatter;
    /* col2im of dcols into images c_b0 .. c_b0+c_nb of gx (x's shape) */
    const DLT_T* dcols;
    DLT_T* gx;
    int c_b0, c_nb;
} dlt_copies_SFX;

static void dlt_copies_task_SFX(void* arg, int part, int nparts)
{
    const dlt_copies_SFX* t = (const dlt_copies_SFX*)arg;
    long lo, hi;
    if (t->a_nb > 0) {
        dlt_split(t->a_nb, part, nparts, &lo, &hi);
        dlt_im2col_SFX(t->x, t->a_b0, t->a_nb, (int)lo, (int)hi, t->C, t->H, t->W, t->kh, t->kw,
                       t->cols);
    }
    if (t->g_nb > 0) {
        dlt_split(t->g_nb, part, nparts, &lo, &hi);
        dlt_bfp_SFX(t->z, t->g_b0, t->g_nb, (int)lo, (int)hi, t->F, t->P, t->zm, t->g_scatter);
    }
    if (t->c_nb > 0) {
        dlt_split(t->c_nb, part, nparts, &lo, &hi);
        dlt_col2im_SFX(t->dcols, t->c_b0, t->c_nb, (int)lo, (int)hi, t->C, t->H, t->W, t->kh,
                       t->kw, t->gx);
    }
}

/* Run the stages of t on the threads, then clear them. */
static void dlt_copies_SFX_run(dlt_copies_SFX* t)
{
    long n = t->a_nb > t->g_nb ? t->a_nb : t->g_nb;
    if (t->c_nb > n) n = t->c_nb;
    if (n > 0)
        /* A part per thread, each a range of the chunk's images (a chunk holds about
           2**20 elements: always worth the threads). */
        dlt_parallel(dlt_copies_task_SFX, t, n);
    t->a_nb = t->g_nb = t->c_nb = 0;
}

/* The forward pass without im2col, for layers with few taps per filter
   (C*kh*kw <= 32; LeNet5's first layer has 25). There im2col writes 25 copies of
   every image and the GEMM has only 25 terms per output, so the copies cost more
   than the products (4.4 ms of the float32 training step). Here each image stays
   in the first-level cache: a row of outputs is a sum of C*kh*kw shifted input
   rows, each times one tap of the flipped filter, in the element type, in the
   order (c, u, v). Each thread takes its own range of images. */
typedef struct {
    const DLT_T* x;
    const DLT_T* wf;  /* (F, C*kh*kw), flipped */
    DLT_T* out;
    int B, C, H, W, F, oh, ow, kh, kw;
} dlt_fwd_direct_SFX;

#define DLT_FWD_DIRECT_ROW_SFX(OW, KW, SIZE)                                       \
    {                                                                          \
        DLT_T acc[SIZE];                                                       \
        for (j = 0; j < (OW); ++j) acc[j] = 0;                                 \
        for (c = 0; c < C; ++c)                                                \
            for (u = 0; u < kh; ++u) {                                         \
                const DLT_T* xr = xb + ((long)c * H + i + u) * W;              \
                const DLT_T* wr = wff + (c * kh + u) * (KW);                   \
                for (v = 0; v < (KW); ++v) {                                   \
                    const DLT_T t = wr[v];                                     \
                    for (j = 0; j < (OW); ++j) acc[j] += t * xr[j + v];        \
                }                                                              \
            }                                                                  \
        for (j = 0; j < (OW); ++j) o[j] = acc[j];                              \
    }

/* Four filters at a time: each input row is loaded once for the four, and the
   four independent sums keep both FMA units busy (one alone waits on its own
   latency): 2.5 against 4.4 ms on one core for LeNet5's first layer. The same
   sums in the same order as one filter at a time. */
#define DLT_FWD_DIRECT_ROW4_SFX(OW, KW, SIZE)                                      \
    {                                                                          \
        DLT_T a0[SIZE], a1[SIZE], a2[SIZE], a3[SIZE];                          \
        for (j = 0; j < (OW); ++j) a0[j] = a1[j] = a2[j] = a3[j] = 0;          \
        for (c = 0; c < C; ++c)                                                \
            for (u = 0; u < kh; ++u) {                                         \
                const DLT_T* xr = xb + ((long)c * H + i + u) * W;              \
                const DLT_T* wr = wff + (c * kh + u) * (KW);                   \
                for (v = 0; v < (KW); ++v) {                                   \
                    const DLT_T t0 = wr[v], t1 = wr[K + v];                    \
                    const DLT_T t2 = wr[2 * K + v], t3 = wr[3 * K + v];        \
                    for (j = 0; j < (OW); ++j) {                               \
                        const DLT_T xv = xr[j + v];                            \
                        a0[j] += t0 * xv;                                      \
                        a1[j] += t1 * xv;                                      \
                        a2[j] += t2 * xv;                                      \
                        a3[j] += t3 * xv;                                      \
                    }                                                          \
                }                                                              \
            }                                                                  \
        for (j = 0; j < (OW); ++j) {                                           \
            o[j] = a0[j];                                                      \
            o[P + j] = a1[j];                                                  \
            o[2 * P + j] = a2[j];                                              \
            o[3 * P + j] = a3[j];                                              \
        }                                                                      \
    }

static void dlt_fwd_direct_task_SFX(void* arg, int part, int nparts)
{
    const dlt_fwd_direct_SFX* a = (const dlt_fwd_direct_SFX*)arg;
    const int C = a->C, H = a->H, W = a->W, F = a->F, oh = a->oh, ow = a->ow;
    const int kh = a->kh, kw = a->kw, K = C * kh * kw;
    const long P = (long)oh * ow;
    long lo, hi, b;
    int f, c, u, v, i, j;
    dlt_split(a->B, part, nparts, &lo, &hi);
    for (b = lo; b < hi; ++b) {
        const DLT_T* xb = a->x + (long)b * C * H * W;
        for (f = 0; f + 4 <= F; f += 4) {
            const DLT_T* wff = a->wf + (long)f * K;
            for (i = 0; i < oh; ++i) {
                DLT_T* o = a->out + ((long)b * F + f) * P + (long)i * ow;
                if (ow == 24 && kw == 5) DLT_FWD_DIRECT_ROW4_SFX(24, 5, 24)
                else DLT_FWD_DIRECT_ROW4_SFX(ow, kw, 512)
            }
        }
        for (; f < F; ++f) {
            const DLT_T* wff = a->wf + (long)f * K;
            for (i = 0; i < oh; ++i) {
                DLT_T* o = a->out + ((long)b * F + f) * P + (long)i * ow;
                DLT_FWD_DIRECT_ROW_SFX(ow, kw, 512)
            }
        }
    }
}

/* The direct path fits: few taps, and a row of outputs small enough for the stack. */
#define DLT_FWD_DIRECT_FITS(K, ow) ((K) <= 32 && (ow) <= 512)

/* out (B, F, oh, ow) = true valid convolution of x (B, C, H, W) with w (F, C, kh, kw).
   Per chunk of images: im2col, one GEMM, a scatter into out; the scatter of one
   chunk and the im2col of the next share a parallel pass. */
static int dlt_conv_fwd_SFX(const DLT_T* x, const DLT_T* w, DLT_T* out, int B, int C, int H,
                            int W, int F, int kh, int kw)
{
    int oh = H - kh + 1, ow = W - kw + 1, K = C * kh * kw, chunk, b0, nb;
    long P = (long)oh * ow;
    DLT_T *wf, *cols, *res;
    dlt_copies_SFX t;
    if (B == 0 || F == 0 || P == 0) return 0;
#ifdef DLT_HAVE_AVX512_CONV
    if (sizeof(DLT_T) == sizeof(float) && K > 0 && !DLT_FWD_DIRECT_FITS(K, ow))
        return dlt_conv_fwd_avx512((const float*)x, (const float*)w, (float*)out, B, C, H, W, F,
                                   kh, kw);
#endif
    if (K > 0 && DLT_FWD_DIRECT_FITS(K, ow)) {
        int n = dlt_threads();
        dlt_fwd_direct_SFX a;
        wf = (DLT_T*)dlt_scratch(0, sizeof(DLT_T) * (long)F * K);
        if (!wf) return -1;
        dlt_flip_SFX(w, F, C, kh, kw, wf);
        a.x = x; a.wf = wf; a.out = out; a.B = B; a.C = C; a.H = H; a.W = W; a.F = F;
        a.oh = oh; a.ow = ow; a.kh = kh; a.kw = kw;
        /* Parts of at least 8 images: fewer are not worth waking a thread for. */
        if (n > B / 8) n = B / 8 > 1 ? B / 8 : 1;
        dlt_parallel(dlt_fwd_direct_task_SFX, &a, n);
        return 0;
    }
    chunk = dlt_chunk(B, P * (K > F ? K : F));
    wf = (DLT_T*)dlt_scratch(0, sizeof(DLT_T) * (long)F * K);
    cols = (DLT_T*)dlt_scratch(1, sizeof(DLT_T) * (long)K * chunk * P);
    res = (DLT_T*)dlt_scratch(2, sizeof(DLT_T) * (long)F * chunk * P);
    if (!wf || !cols || !res) return -1;
    dlt_flip_SFX(w, F, C, kh, kw, wf);
    memset(&t, 0, sizeof t);
    t.C = C; t.H = H; t.W = W; t.kh = kh; t.kw = kw; t.F = F; t.P = P;
    t.x = x; t.cols = cols; t.z = out; t.zm = res; t.g_scatter = 1;
    t.a_b0 = 0; t.a_nb = chunk;
    dlt_copies_SFX_run(&t);
    for (b0 = 0; b0 < B; b0 += chunk) {
        nb = (B - b0 < chunk) ? B - b0 : chunk;
        GEMM('N', 'N', F, (int)(nb * P), K, 1, wf, K, cols, (int)(nb * P), 0, res, (int)(nb * P));
        t.g_b0 = b0; t.g_nb = nb;
        if (b0 + nb < B) {
            t.a_b0 = b0 + nb;
            t.a_nb = (B - b0 - nb < chunk) ? B - b0 - nb : chunk;
        }
        dlt_copies_SFX_run(&t);
    }
    return 0;
}

/* gx (B, C, oh+kh-1, ow+kw-1) from gz (B, F, oh, ow) and w (F, C, kh, kw). Per
   chunk: a gather of gz, one GEMM, col2im; the col2im of one chunk and the gather
   of the next share a parallel pass. */
static int dlt_conv_gi_SFX(const DLT_T* gz, const DLT_T* w, DLT_T* gx, int B, int F, int oh,
                           int ow, int C, int kh, int kw)
{
    int H = oh + kh - 1, W = ow + kw - 1, K = C * kh * kw, chunk, b0, nb;
    long P = (long)oh * ow;
    DLT_T *wf, *gzm, *dcols;
    dlt_copies_SFX t;
    if (B == 0 || C == 0) return 0;
    if (P == 0) {
        memset(gx, 0, sizeof(DLT_T) * (long)B * C * H * W);
        return 0;
    }
#ifdef DLT_HAVE_AVX512_CONV
    if (sizeof(DLT_T) == sizeof(float) && ow == 8 && oh % 2 == 0 && K > 0)
        return dlt_conv_gi_avx512((const float*)gz, (const float*)w, (float*)gx, B, F, oh, C, kh,
                                  kw);
#endif
    chunk = dlt_chunk(B, P * (K > F ? K : F));
    wf = (DLT_T*)dlt_scratch(0, sizeof(DLT_T) * ((long)F * K + 1));
    gzm = (DLT_T*)dlt_scratch(2, sizeof(DLT_T) * ((long)F * chunk * P + 1));
    dcols = (DLT_T*)dlt_scratch(1, sizeof(DLT_T) * (long)K * chunk * P);
    if (!wf || !gzm || !dcols) return -1;
    dlt_flip_SFX(w, F, C, kh, kw, wf);
    memset(&t, 0, sizeof t);
    t.C = C; t.H = H; t.W = W; t.kh = kh; t.kw = kw; t.F = F; t.P = P;
    t.z = (DLT_T*)gz; t.zm = gzm; t.g_scatter = 0; t.dcols = dcols; t.gx = gx;
    t.g_b0 = 0; t.g_nb = chunk;
    dlt_copies_SFX_run(&t);
    for (b0 = 0; b0 < B; b0 += chunk) {
        nb = (B - b0 < chunk) ? B - b0 : chunk;
        GEMM('T', 'N', K, (int)(nb * P), F, 1, wf, K, gzm, (int)(nb * P), 0, dcols, (int)(nb * P));
        t.c_b0 = b0; t.c_nb = nb;
        if (b0 + nb < B) {
            t.g_b0 = b0 + nb;
            t.g_nb = (B - b0 - nb < chunk) ? B - b0 - nb : chunk;
        }
        dlt_copies_SFX_run(&t);
    }
    return 0;
}

/* The filters' gradient without im2col, for layers with few taps per filter
   (C*kh*kw <= 32; LeNet5's first layer has 25). There im2col writes 25 copies of
   every image, and the GEMM (20 x 25 outputs, each a sum of 288,000 products) runs
   at a fifth of BLAS's speed. Here each image stays in the first-level cache:
   G[(c, u, v), f] = sum over b, i, j of gz[b, f, i, j] * x[b, c, i + u, j + v],
   in the element type along an image row, in double across rows' sums and images.
   Each thread sums its own range of images into its own G. */
typedef struct {
    const DLT_T* x;
    const DLT_T* gz;
    double* G;  /* nparts blocks of (C*kh*kw) x F */
    int B, C, H, W, F, oh, ow, kh, kw;
} dlt_gw_direct_SFX;

#define DLT_GW_DIRECT_ROW_SFX(OW, KW, SIZE)                                        \
    {                                                                          \
        DLT_T acc[SIZE];                                                       \
        for (j = 0; j < (KW) * (OW); ++j) acc[j] = 0;                          \
        for (i = 0; i < oh; ++i) {                                             \
            const DLT_T* gr = g + (long)i * (OW);                              \
            const DLT_T* xr = xc + (long)(i + u) * W;                          \
            for (v = 0; v < (KW); ++v)                                         \
                for (j = 0; j < (OW); ++j)                                     \
                    acc[v * (OW) + j] += gr[j] * xr[j + v];                    \
        }                                                                      \
        for (v = 0; v < (KW); ++v) {                                           \
            DLT_T sum = 0;                                                     \
            for (j = 0; j < (OW); ++j) sum += acc[v * (OW) + j];               \
            Gu[(long)v * F] += sum;                                            \
        }                                                                      \
    }

static void dlt_gw_direct_task_SFX(void* arg, int part, int nparts)
{
    const dlt_gw_direct_SFX* a = (const dlt_gw_direct_SFX*)arg;
    const int C = a->C, H = a->H, W = a->W, F = a->F, oh = a->oh, ow = a->ow;
    const int kh = a->kh, kw = a->kw, K = C * kh * kw;
    double* G = a->G + (long)part * K * F;
    long lo, hi, b;
    int f, c, u, v, i, j;
    memset(G, 0, sizeof(double) * (long)K * F);
    dlt_split(a->B, part, nparts, &lo, &hi);
    for (b = lo; b < hi; ++b)
        for (f = 0; f < F; ++f) {
            const DLT_T* g = a->gz + ((long)b * F + f) * oh * ow;
            for (c = 0; c < C; ++c) {
                const DLT_T* xc = a->x + ((long)b * C + c) * H * W;
                for (u = 0; u < kh; ++u) {
                    double* Gu = G + (long)(c * kh + u) * kw * F + f;
                    if (ow == 24 && kw == 5) DLT_GW_DIRECT_ROW_SFX(24, 5, 120)
                    else if (ow == 8 && kw == 5) DLT_GW_DIRECT_ROW_SFX(8, 5, 40)
                    else DLT_GW_DIRECT_ROW_SFX(ow, kw, 512)
                }
            }
        }
}

/* The direct path fits: few taps, and a row of sums small enough for the stack. */
#define DLT_GW_DIRECT_FITS(K, kw, ow) ((K) <= 32 && (long)(kw) * (ow) <= 512)

/* gw (F, C, H-oh+1, W-ow+1) from x (B, C, H, W) and gz (B, F, oh, ow). */
static int dlt_conv_gw_SFX(const DLT_T* x, const DLT_T* gz, DLT_T* gw, int B, int C, int H,
                           int W, int F, int oh, int ow)
{
    int kh = H - oh + 1, kw = W - ow + 1, K = C * kh * kw, chunk, b0, nb, f, c, u, v;
    long P = (long)oh * ow;
    DLT_T *gwf, *cols, *gzm;
    dlt_copies_SFX t;
    /* gwt (K, F) = cols (K, N) @ gzm^T: this way round OpenBLAS splits the
       work over its threads (20-40 % faster for LeNet5's shapes). */
    gwf = (DLT_T*)dlt_scratch(0, sizeof(DLT_T) * ((long)F * K + 1));
    if (!gwf) return -1;
    memset(gwf, 0, sizeof(DLT_T) * ((long)F * K + 1));
#ifdef DLT_HAVE_AVX512_CONV
    if (sizeof(DLT_T) == sizeof(float) && B > 0 && P > 0 && K > 0 && F > 0 &&
        !DLT_GW_DIRECT_FITS(K, kw, ow)) {
        if (dlt_conv_gw_avx512((const float*)x, (const float*)gz, (float*)gwf, B, C, H, W, F,
                               oh, ow) != 0)
            return -1;
    } else
#endif
    if (B > 0 && P > 0 && K > 0 && F > 0 && DLT_GW_DIRECT_FITS(K, kw, ow)) {
        int n = dlt_threads(), p;
        long k;
        dlt_gw_direct_SFX a;
        a.G = (double*)dlt_scratch(1, sizeof(double) * (long)n * K * F);
        if (!a.G) return -1;
        a.x = x; a.gz = gz; a.B = B; a.C = C; a.H = H; a.W = W; a.F = F;
        a.oh = oh; a.ow = ow; a.kh = kh; a.kw = kw;
        /* Parts of at least 8 images: fewer are not worth waking a thread for. */
        if (n > B / 8) n = B / 8 > 1 ? B / 8 : 1;
        dlt_parallel(dlt_gw_direct_task_SFX, &a, n);
        for (k = 0; k < (long)K * F; ++k) {
            double sum = 0;
            for (p = 0; p < n; ++p) sum += a.G[(long)p * K * F + k];
            gwf[k] = (DLT_T)sum;
        }
    } else if (B > 0 && P > 0 && K > 0 && F > 0) {
        chunk = dlt_chunk(B, P * (K > F ? K : F));
        cols = (DLT_T*)dlt_scratch(1, sizeof(DLT_T) * (long)K * chunk * P);
        gzm = (DLT_T*)dlt_scratch(2, sizeof(DLT_T) * (long)F * chunk * P);
        if (!cols || !gzm) return -1;
        memset(&t, 0, sizeof t);
        t.C = C; t.H = H; t.W = W; t.kh = kh; t.kw = kw; t.F = F; t.P = P;
        t.x = x; t.cols = cols; t.z = (DLT_T*)gz; t.zm = gzm; t.g_scatter = 0;
        for (b0 = 0; b0 < B; b0 += chunk) {
            nb = (B - b0 < chunk) ? B - b0 : chunk;
            t.a_b0 = t.g_b0 = b0;
            t.a_nb = t.g_nb = nb;
            dlt_copies_SFX_run(&t);
            GEMM('N', 'T', K, F, (int)(nb * P), 1, cols, (int)(nb * P), gzm, (int)(nb * P), 1, gwf, F);
        }
    }
    for (f = 0; f < F; ++f)
        for (c = 0; c < C; ++c)
            for (u = 0; u < kh; ++u)
                for (v = 0; v < kw; ++v)
                    gw[(((long)f * C + c) * kh + (kh - 1 - u)) * kw + (kw - 1 - v)] =
                        gwf[(long)((c * kh + u) * kw + v) * F + f];
    return 0;
}
#endif
"""


def _kernels(template, ctype, sfx, gemm=""):
    return template.replace("SFX", sfx).replace("GEMM", gemm).replace("DLT_T", ctype)


_PICK_CODE = r"""
#ifndef DLT_NNET_PICK_DEFINED
#define DLT_NNET_PICK_DEFINED
#include <string.h>
#include <stdint.h>
/* g where x == mx, else +0, without a branch: with real data the test is true
   for one element in four, at random, and a branch mispredicts that often
   (13 ms instead of 3 ms for LeNet5's first pooling gradient). A NaN or inf g
   is passed on unchanged, as the original's "gz if x == max else 0" does. */
static inline float dlt_pick_f32(float x, float mx, float g)
{
    uint32_t bits;
    memcpy(&bits, &g, sizeof bits);
    bits &= (uint32_t)0 - (uint32_t)(x == mx);
    memcpy(&g, &bits, sizeof g);
    return g;
}
static inline double dlt_pick_f64(double x, double mx, double g)
{
    uint64_t bits;
    memcpy(&bits, &g, sizeof bits);
    bits &= (uint64_t)0 - (uint64_t)(x == mx);
    memcpy(&g, &bits, sizeof g);
    return g;
}
#endif
"""

# Max pooling and its gradient over the last two axes, planes m0..m1 of M, per type.
_POOL_TEMPLATE = r"""
#ifndef DLT_NNET_POOL_SFX_DEFINED
#define DLT_NNET_POOL_SFX_DEFINED
typedef struct {
    const DLT_T* x;      /* (M, H, W) */
    const DLT_T* mx;     /* (M, oh, ow): the pooled maxima (gradient only) */
    const DLT_T* gz;     /* (M, oh, ow): their gradient (gradient only) */
    DLT_T* out;          /* (M, oh, ow), or the gradient (M, H, W) */
    long M, H, W, oh, ow, wh, ww;
} dlt_pool_args_SFX;

static void dlt_pool_task_SFX(void* arg, int part, int nparts)
{
    const dlt_pool_args_SFX* a = (const dlt_pool_args_SFX*)arg;
    const long H = a->H, W = a->W, oh = a->oh, ow = a->ow, wh = a->wh, ww = a->ww;
    const DLT_T* xd = a->x;
    DLT_T* od = a->out;
    long m0, m1, m, i, j, r, c, r1, c1;
    dlt_split(a->M, part, nparts, &m0, &m1);
    if (wh == 2 && ww == 2 && oh * 2 <= H && ow * 2 <= W) {
        /* The tutorial's 2x2 windows, all inside the image: straight-line code. */
        for (m = m0; m < m1; ++m)
            for (i = 0; i < oh; ++i) {
                const DLT_T* x0 = xd + (m * H + 2 * i) * W;
                const DLT_T* x1 = x0 + W;
                DLT_T* o = od + (m * oh + i) * ow;
                for (j = 0; j < ow; ++j) {
                    DLT_T mx = x0[2 * j];
                    mx = x0[2 * j + 1] > mx ? x0[2 * j + 1] : mx;
                    mx = x1[2 * j] > mx ? x1[2 * j] : mx;
                    mx = x1[2 * j + 1] > mx ? x1[2 * j + 1] : mx;
                    o[j] = mx;
                }
            }
        return;
    }
    for (m = m0; m < m1; ++m)
        for (i = 0; i < oh; ++i) {
            r1 = (i + 1) * wh < H ? (i + 1) * wh : H;
            for (j = 0; j < ow; ++j) {
                const DLT_T* xm = xd + m * H * W;
                DLT_T mx = xm[i * wh * W + j * ww];
                c1 = (j + 1) * ww < W ? (j + 1) * ww : W;
                for (r = i * wh; r < r1; ++r)
                    for (c = j * ww; c < c1; ++c)
                        if (xm[r * W + c] > mx) mx = xm[r * W + c];
                od[(m * oh + i) * ow + j] = mx;
            }
        }
}

static void dlt_pool_grad_task_SFX(void* arg, int part, int nparts)
{
    const dlt_pool_args_SFX* a = (const dlt_pool_args_SFX*)arg;
    const long H = a->H, W = a->W, oh = a->oh, ow = a->ow, wh = a->wh, ww = a->ww;
    const DLT_T *xd = a->x, *md = a->mx, *gd = a->gz;
    DLT_T* od = a->out;
    long m0, m1, m, i, j, r, c, c1;
    dlt_split(a->M, part, nparts, &m0, &m1);
    if (wh == 2 && ww == 2 && oh * 2 <= H && ow * 2 <= W) {
        /* The tutorial's 2x2 windows: two input rows per output row. */
        for (m = m0; m < m1; ++m) {
            for (i = 0; i < oh; ++i) {
                const DLT_T* x0 = xd + (m * H + 2 * i) * W;
                const DLT_T* x1 = x0 + W;
                DLT_T* g0 = od + (m * H + 2 * i) * W;
                DLT_T* g1 = g0 + W;
                const DLT_T* mrow = md + (m * oh + i) * ow;
                const DLT_T* grow = gd + (m * oh + i) * ow;
                for (j = 0; j < ow; ++j) {
                    const DLT_T mx = mrow[j], g = grow[j];
                    g0[2 * j] = dlt_pick_SFX(x0[2 * j], mx, g);
                    g0[2 * j + 1] = dlt_pick_SFX(x0[2 * j + 1], mx, g);
                    g1[2 * j] = dlt_pick_SFX(x1[2 * j], mx, g);
                    g1[2 * j + 1] = dlt_pick_SFX(x1[2 * j + 1], mx, g);
                }
                for (c = 2 * ow; c < W; ++c) g0[c] = g1[c] = 0;
            }
            for (r = 2 * oh; r < H; ++r)
                for (c = 0; c < W; ++c) od[(m * H + r) * W + c] = 0;
        }
        return;
    }
    /* Row by row, every element written once: no zero-fill pass. */
    for (m = m0; m < m1; ++m)
        for (r = 0; r < H; ++r) {
            const DLT_T* xr = xd + (m * H + r) * W;
            DLT_T* gr = od + (m * H + r) * W;
            i = r / wh;
            if (i >= oh) {
                for (c = 0; c < W; ++c) gr[c] = 0;
                continue;
            }
            for (j = 0; j < ow; ++j) {
                DLT_T mx = md[(m * oh + i) * ow + j];
                DLT_T g = gd[(m * oh + i) * ow + j];
                c1 = (j + 1) * ww < W ? (j + 1) * ww : W;
                for (c = j * ww; c < c1; ++c)
                    gr[c] = dlt_pick_SFX(xr[c], mx, g);
            }
            for (c = ow * ww; c < W; ++c) gr[c] = 0;
        }
}
#endif
"""

#: Planes smaller than this (elements of the input, all planes together) are pooled
#: in the calling thread: waking a worker costs more than it saves.
PARALLEL_MIN_ELEMENTS = 1 << 16

#: Support code of the pooling Ops.
POOL_SUPPORT_CODE = (
    THREADS_CODE
    + _PICK_CODE
    + _kernels(_POOL_TEMPLATE, "float", "f32")
    + _kernels(_POOL_TEMPLATE, "double", "f64")
)

SUPPORT_CODE = (
    THREADS_CODE
    + _BLAS_CODE
    + _AVX512_CONV_CODE
    + _kernels(_KERNELS_TEMPLATE, "float", "f32", "dlt_rm_sgemm")
    + _kernels(_KERNELS_TEMPLATE, "double", "f64", "dlt_rm_dgemm")
)
INIT_CODE = ""

_SFX = {"float32": "f32", "float64": "f64"}
_CTYPE = {"float32": "npy_float32", "float64": "npy_float64"}


def _sfx(node):
    dtype = node.outputs[0].type.dtype
    if dtype not in _SFX:
        raise MethodNotDefined()
    return _SFX[dtype], dtype


def _alloc_output(out, ndim, dims, typenum, fail):
    """C that (re)allocates ``out`` as a C-contiguous array of ``dims`` unless it already is one."""
    return f"""
    {{
        int need_alloc = ({out} == NULL) || !PyArray_IS_C_CONTIGUOUS({out})
                         || PyArray_NDIM({out}) != {ndim};
        int d;
        for (d = 0; !need_alloc && d < {ndim}; ++d)
            if (PyArray_DIMS({out})[d] != {dims}[d]) need_alloc = 1;
        if (need_alloc) {{
            Py_XDECREF({out});
            {out} = (PyArrayObject*)PyArray_EMPTY({ndim}, {dims}, {typenum}, 0);
            if ({out} == NULL) {{ {fail} }}
        }}
    }}
    """


def conv_c_code(kind, node, name, inputs, outputs, sub):
    """C code for ``kind`` in {'fwd', 'gi', 'gw'}: the three convolution Ops."""
    sfx, dtype = _sfx(node)
    ctype = _CTYPE[dtype]
    typenum = f"NPY_{dtype.upper()}"
    a, b = inputs
    (z,) = outputs
    fail = sub["fail"]
    if kind == "fwd":
        shape_code = """
        if (PyArray_DIMS(ca)[1] != PyArray_DIMS(cb)[1]) {
            PyErr_Format(PyExc_ValueError, "conv2d: input has %ld feature maps but the filters expect %ld",
                         (long)PyArray_DIMS(ca)[1], (long)PyArray_DIMS(cb)[1]);
            goto dlt_fail_{name};
        }
        if (PyArray_DIMS(cb)[2] > PyArray_DIMS(ca)[2] || PyArray_DIMS(cb)[3] > PyArray_DIMS(ca)[3]) {
            PyErr_SetString(PyExc_ValueError, "conv2d 'valid': filter larger than the image");
            goto dlt_fail_{name};
        }
        dims[0] = PyArray_DIMS(ca)[0]; dims[1] = PyArray_DIMS(cb)[0];
        dims[2] = PyArray_DIMS(ca)[2] - PyArray_DIMS(cb)[2] + 1;
        dims[3] = PyArray_DIMS(ca)[3] - PyArray_DIMS(cb)[3] + 1;
        """
        call = f"""dlt_conv_fwd_{sfx}(({ctype}*)PyArray_DATA(ca), ({ctype}*)PyArray_DATA(cb),
                   ({ctype}*)PyArray_DATA({z}), (int)PyArray_DIMS(ca)[0], (int)PyArray_DIMS(ca)[1],
                   (int)PyArray_DIMS(ca)[2], (int)PyArray_DIMS(ca)[3], (int)PyArray_DIMS(cb)[0],
                   (int)PyArray_DIMS(cb)[2], (int)PyArray_DIMS(cb)[3])"""
    elif kind == "gi":
        shape_code = """
        if (PyArray_DIMS(ca)[1] != PyArray_DIMS(cb)[0]) {
            PyErr_SetString(PyExc_ValueError, "conv2d grad: output maps and filters differ");
            goto dlt_fail_{name};
        }
        dims[0] = PyArray_DIMS(ca)[0]; dims[1] = PyArray_DIMS(cb)[1];
        dims[2] = PyArray_DIMS(ca)[2] + PyArray_DIMS(cb)[2] - 1;
        dims[3] = PyArray_DIMS(ca)[3] + PyArray_DIMS(cb)[3] - 1;
        """
        call = f"""dlt_conv_gi_{sfx}(({ctype}*)PyArray_DATA(ca), ({ctype}*)PyArray_DATA(cb),
                   ({ctype}*)PyArray_DATA({z}), (int)PyArray_DIMS(ca)[0], (int)PyArray_DIMS(ca)[1],
                   (int)PyArray_DIMS(ca)[2], (int)PyArray_DIMS(ca)[3], (int)PyArray_DIMS(cb)[1],
                   (int)PyArray_DIMS(cb)[2], (int)PyArray_DIMS(cb)[3])"""
    elif kind == "gw":
        shape_code = """
        if (PyArray_DIMS(ca)[0] != PyArray_DIMS(cb)[0]
            || PyArray_DIMS(cb)[2] > PyArray_DIMS(ca)[2] || PyArray_DIMS(cb)[3] > PyArray_DIMS(ca)[3]) {
            PyErr_SetString(PyExc_ValueError, "conv2d grad: input and output gradient shapes disagree");
            goto dlt_fail_{name};
        }
        dims[0] = PyArray_DIMS(cb)[1]; dims[1] = PyArray_DIMS(ca)[1];
        dims[2] = PyArray_DIMS(ca)[2] - PyArray_DIMS(cb)[2] + 1;
        dims[3] = PyArray_DIMS(ca)[3] - PyArray_DIMS(cb)[3] + 1;
        """
        call = f"""dlt_conv_gw_{sfx}(({ctype}*)PyArray_DATA(ca), ({ctype}*)PyArray_DATA(cb),
                   ({ctype}*)PyArray_DATA({z}), (int)PyArray_DIMS(ca)[0], (int)PyArray_DIMS(ca)[1],
                   (int)PyArray_DIMS(ca)[2], (int)PyArray_DIMS(ca)[3], (int)PyArray_DIMS(cb)[1],
                   (int)PyArray_DIMS(cb)[2], (int)PyArray_DIMS(cb)[3])"""
    else:
        raise ValueError(kind)
    return f"""
    {{
        PyArrayObject *ca = NULL, *cb = NULL;
        npy_intp dims[4];
        int ok = 0;
        if (dlt_blas_init() != 0) {{ {fail} }}
        ca = PyArray_GETCONTIGUOUS({a});
        cb = PyArray_GETCONTIGUOUS({b});
        if (ca == NULL || cb == NULL) goto dlt_fail_{name};
        {shape_code}
        {_alloc_output(z, 4, "dims", typenum, "goto dlt_fail_{name};")}
        if ({call} != 0) {{
            PyErr_NoMemory();
            goto dlt_fail_{name};
        }}
        ok = 1;
      dlt_fail_{name}:
        Py_XDECREF(ca);
        Py_XDECREF(cb);
        if (!ok) {{ {fail} }}
    }}
    """.replace("{name}", name)


def _pool_call(task, sfx, ctype, nd, x_expr, mx_expr, gz_expr, out_var, op):
    """C that fills a dlt_pool_args struct and runs ``task`` over the planes."""
    wh, ww = op.ws
    return f"""
        {{
            dlt_pool_args_{sfx} pa;
            long d;
            pa.x = ({ctype}*)PyArray_DATA({x_expr});
            pa.mx = {mx_expr};
            pa.gz = {gz_expr};
            pa.out = ({ctype}*)PyArray_DATA({out_var});
            pa.M = 1;
            for (d = 0; d < {nd} - 2; ++d) pa.M *= dims[d];
            pa.H = H; pa.W = W; pa.oh = oh; pa.ow = ow; pa.wh = {wh}; pa.ww = {ww};
            dlt_parallel({task}_{sfx}, &pa,
                         pa.M * H * W >= {PARALLEL_MIN_ELEMENTS} ? pa.M : 1);
        }}
    """


def pool_c_code(op, node, name, inputs, outputs, sub):
    """C code of :class:`~.pool.MaxPool2d` over the last two axes of an N-d array."""
    sfx, dtype = _sfx(node)
    ctype = _CTYPE[dtype]
    (x,) = inputs
    (z,) = outputs
    nd = node.inputs[0].type.ndim
    wh, ww = op.ws
    ib = int(op.ignore_border)
    fail = sub["fail"]
    run = _pool_call("dlt_pool_task", sfx, ctype, nd, "cx", "NULL", "NULL", z, op)
    return f"""
    {{
        PyArrayObject *cx = PyArray_GETCONTIGUOUS({x});
        npy_intp dims[{nd}];
        long H, W, oh, ow;
        int d, ok = 0;
        if (cx == NULL) {{ {fail} }}
        for (d = 0; d < {nd} - 2; ++d) dims[d] = PyArray_DIMS(cx)[d];
        H = PyArray_DIMS(cx)[{nd} - 2]; W = PyArray_DIMS(cx)[{nd} - 1];
        oh = {ib} ? H / {wh} : (H + {wh} - 1) / {wh};
        ow = {ib} ? W / {ww} : (W + {ww} - 1) / {ww};
        dims[{nd} - 2] = oh; dims[{nd} - 1] = ow;
        {_alloc_output(z, nd, "dims", f"NPY_{dtype.upper()}", "goto dlt_pool_fail_{name};")}
        {run}
        ok = 1;
      dlt_pool_fail_{name}:
        Py_XDECREF(cx);
        if (!ok) {{ {fail} }}
    }}
    """.replace("{name}", name)


def pool_grad_c_code(op, node, name, inputs, outputs, sub):
    """C code of :class:`~.pool.MaxPool2dGrad`: ties all receive the window's gradient."""
    sfx, dtype = _sfx(node)
    ctype = _CTYPE[dtype]
    x, mo, gz = inputs
    (z,) = outputs
    nd = node.inputs[0].type.ndim
    fail = sub["fail"]
    run = _pool_call("dlt_pool_grad_task", sfx, ctype, nd, "cx",
                     f"({ctype}*)PyArray_DATA(cm)", f"({ctype}*)PyArray_DATA(cg)", z, op)
    return f"""
    {{
        PyArrayObject *cx = PyArray_GETCONTIGUOUS({x});
        PyArrayObject *cm = PyArray_GETCONTIGUOUS({mo});
        PyArrayObject *cg = PyArray_GETCONTIGUOUS({gz});
        npy_intp dims[{nd}];
        long M = 1, H, W, oh, ow;
        int d, ok = 0;
        if (cx == NULL || cm == NULL || cg == NULL) goto dlt_pgrad_fail_{name};
        for (d = 0; d < {nd}; ++d) dims[d] = PyArray_DIMS(cx)[d];
        for (d = 0; d < {nd} - 2; ++d) M *= dims[d];
        H = dims[{nd} - 2]; W = dims[{nd} - 1];
        oh = PyArray_DIMS(cm)[{nd} - 2]; ow = PyArray_DIMS(cm)[{nd} - 1];
        if (PyArray_SIZE(cm) != M * oh * ow || PyArray_SIZE(cg) != M * oh * ow) {{
            PyErr_SetString(PyExc_ValueError, "MaxPool2dGrad: maxout/gz shapes do not match x");
            goto dlt_pgrad_fail_{name};
        }}
        {_alloc_output(z, nd, "dims", f"NPY_{dtype.upper()}", "goto dlt_pgrad_fail_{name};")}
        {run}
        ok = 1;
      dlt_pgrad_fail_{name}:
        Py_XDECREF(cx);
        Py_XDECREF(cm);
        Py_XDECREF(cg);
        if (!ok) {{ {fail} }}
    }}
    """.replace("{name}", name)
