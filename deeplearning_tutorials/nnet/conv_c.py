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

# Bump when any C string below changes, so PyTensor recompiles the modules.
C_CODE_VERSION = (7,)

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

# One copy of the kernels per C type; SFX names them, GEMM is the row-major wrapper.
_KERNELS_TEMPLATE = r"""
#ifndef DLT_NNET_KERNELS_SFX_DEFINED
#define DLT_NNET_KERNELS_SFX_DEFINED
/* w (F, C, kh, kw) -> wf (F, C*kh*kw), flipped in both spatial axes. */
static void dlt_flip_SFX(const T* w, int F, int C, int kh, int kw, T* wf)
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
    for (bb = 0; bb < nb; ++bb)                                                \
        for (i = 0; i < oh; ++i) {                                             \
            const T* src = x + (((long)(b0 + bb) * C + c) * H + (i + u)) * W + v; \
            T* dst = row + bb * P + (long)i * (N);                             \
            for (j = 0; j < (N); ++j)                                          \
                dst[j] = src[j];                                               \
        }
#define DLT_COL2IM_ROWS_SFX(N)                                                     \
    for (bb = 0; bb < nb; ++bb)                                                \
        for (i = 0; i < oh; ++i) {                                             \
            T* dst = gx + (((long)(b0 + bb) * C + c) * H + (i + u)) * W + v;   \
            const T* src = row + bb * P + (long)i * (N);                       \
            for (j = 0; j < (N); ++j)                                          \
                dst[j] += src[j];                                              \
        }

/* cols (C*kh*kw, nb*oh*ow) <- patches of images b0..b0+nb of x (B, C, H, W). */
static void dlt_im2col_SFX(const T* x, int b0, int nb, int C, int H, int W,
                           int kh, int kw, T* cols)
{
    int oh = H - kh + 1, ow = W - kw + 1, c, u, v, bb, i, j;
    long P = (long)oh * ow, ncol = nb * P;
    for (c = 0; c < C; ++c)
        for (u = 0; u < kh; ++u)
            for (v = 0; v < kw; ++v) {
                T* row = cols + ((long)(c * kh + u) * kw + v) * ncol;
                switch (ow) {
                case 8: DLT_IM2COL_ROWS_SFX(8) break;
                case 24: DLT_IM2COL_ROWS_SFX(24) break;
                default: DLT_IM2COL_ROWS_SFX(ow)
                }
            }
}

/* gx (B, C, H, W), images b0..b0+nb, += col2im(dcols (C*kh*kw, nb*oh*ow)). */
static void dlt_col2im_SFX(const T* dcols, int b0, int nb, int C, int H, int W,
                           int kh, int kw, T* gx)
{
    int oh = H - kh + 1, ow = W - kw + 1, c, u, v, bb, i, j;
    long P = (long)oh * ow, ncol = nb * P;
    for (c = 0; c < C; ++c)
        for (u = 0; u < kh; ++u)
            for (v = 0; v < kw; ++v) {
                const T* row = dcols + ((long)(c * kh + u) * kw + v) * ncol;
                switch (ow) {
                case 8: DLT_COL2IM_ROWS_SFX(8) break;
                case 24: DLT_COL2IM_ROWS_SFX(24) break;
                default: DLT_COL2IM_ROWS_SFX(ow)
                }
            }
}

/* z (B, F, P) <-> zm (F, nb*P) for images b0..b0+nb; dir 0 gathers, 1 scatters. */
static void dlt_bfp_SFX(T* z, int b0, int nb, int F, long P, T* zm, int scatter)
{
    int f, bb;
    for (bb = 0; bb < nb; ++bb)
        for (f = 0; f < F; ++f) {
            T* a = z + ((long)(b0 + bb) * F + f) * P;
            T* m = zm + (long)f * nb * P + bb * P;
            if (scatter) memcpy(a, m, P * sizeof(T));
            else memcpy(m, a, P * sizeof(T));
        }
}

/* out (B, F, oh, ow) = true valid convolution of x (B, C, H, W) with w (F, C, kh, kw). */
static int dlt_conv_fwd_SFX(const T* x, const T* w, T* out, int B, int C, int H, int W,
                            int F, int kh, int kw)
{
    int oh = H - kh + 1, ow = W - kw + 1, K = C * kh * kw, chunk, b0, nb;
    long P = (long)oh * ow;
    T *wf, *cols, *res;
    if (B == 0 || F == 0 || P == 0) return 0;
    chunk = dlt_chunk(B, P * (K > F ? K : F));
    wf = (T*)dlt_scratch(0, sizeof(T) * (long)F * K);
    cols = (T*)dlt_scratch(1, sizeof(T) * (long)K * chunk * P);
    res = (T*)dlt_scratch(2, sizeof(T) * (long)F * chunk * P);
    if (!wf || !cols || !res) return -1;
    dlt_flip_SFX(w, F, C, kh, kw, wf);
    for (b0 = 0; b0 < B; b0 += chunk) {
        nb = (B - b0 < chunk) ? B - b0 : chunk;
        dlt_im2col_SFX(x, b0, nb, C, H, W, kh, kw, cols);
        GEMM('N', 'N', F, (int)(nb * P), K, 1, wf, K, cols, (int)(nb * P), 0, res, (int)(nb * P));
        dlt_bfp_SFX(out, b0, nb, F, P, res, 1);
    }
    return 0;
}

/* gx (B, C, oh+kh-1, ow+kw-1) from gz (B, F, oh, ow) and w (F, C, kh, kw). */
static int dlt_conv_gi_SFX(const T* gz, const T* w, T* gx, int B, int F, int oh, int ow,
                           int C, int kh, int kw)
{
    int H = oh + kh - 1, W = ow + kw - 1, K = C * kh * kw, chunk, b0, nb;
    long P = (long)oh * ow;
    T *wf, *gzm, *dcols;
    memset(gx, 0, sizeof(T) * (long)B * C * H * W);
    if (B == 0 || P == 0 || C == 0) return 0;
    chunk = dlt_chunk(B, P * (K > F ? K : F));
    wf = (T*)dlt_scratch(0, sizeof(T) * ((long)F * K + 1));
    gzm = (T*)dlt_scratch(2, sizeof(T) * ((long)F * chunk * P + 1));
    dcols = (T*)dlt_scratch(1, sizeof(T) * (long)K * chunk * P);
    if (!wf || !gzm || !dcols) return -1;
    dlt_flip_SFX(w, F, C, kh, kw, wf);
    for (b0 = 0; b0 < B; b0 += chunk) {
        nb = (B - b0 < chunk) ? B - b0 : chunk;
        dlt_bfp_SFX((T*)gz, b0, nb, F, P, gzm, 0);
        GEMM('T', 'N', K, (int)(nb * P), F, 1, wf, K, gzm, (int)(nb * P), 0, dcols, (int)(nb * P));
        dlt_col2im_SFX(dcols, b0, nb, C, H, W, kh, kw, gx);
    }
    return 0;
}

/* gw (F, C, H-oh+1, W-ow+1) from x (B, C, H, W) and gz (B, F, oh, ow). */
static int dlt_conv_gw_SFX(const T* x, const T* gz, T* gw, int B, int C, int H, int W,
                           int F, int oh, int ow)
{
    int kh = H - oh + 1, kw = W - ow + 1, K = C * kh * kw, chunk, b0, nb, f, c, u, v;
    long P = (long)oh * ow;
    T *gwf, *cols, *gzm;
    /* gwt (K, F) = cols (K, N) @ gzm^T: this way round OpenBLAS splits the
       work over its threads (20-40 % faster for LeNet5's shapes). */
    gwf = (T*)dlt_scratch(0, sizeof(T) * ((long)F * K + 1));
    if (!gwf) return -1;
    memset(gwf, 0, sizeof(T) * ((long)F * K + 1));
    if (B > 0 && P > 0 && K > 0 && F > 0) {
        chunk = dlt_chunk(B, P * (K > F ? K : F));
        cols = (T*)dlt_scratch(1, sizeof(T) * (long)K * chunk * P);
        gzm = (T*)dlt_scratch(2, sizeof(T) * (long)F * chunk * P);
        if (!cols || !gzm) return -1;
        for (b0 = 0; b0 < B; b0 += chunk) {
            nb = (B - b0 < chunk) ? B - b0 : chunk;
            dlt_im2col_SFX(x, b0, nb, C, H, W, kh, kw, cols);
            dlt_bfp_SFX((T*)gz, b0, nb, F, P, gzm, 0);
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


def _kernels(ctype, sfx, gemm):
    return (
        _KERNELS_TEMPLATE.replace("SFX", sfx).replace("GEMM", gemm).replace("T*", ctype + "*")
        .replace("(T*)", f"({ctype}*)").replace("sizeof(T)", f"sizeof({ctype})")
        .replace("T *", ctype + " *")
    )


#: Support code of the pooling Ops.
POOL_SUPPORT_CODE = r"""
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

SUPPORT_CODE = (
    _BLAS_CODE
    + _kernels("float", "f32", "dlt_rm_sgemm")
    + _kernels("double", "f64", "dlt_rm_dgemm")
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


def pool_c_code(op, node, name, inputs, outputs, sub):
    """C code of :class:`~.pool.MaxPool2d` over the last two axes of an N-d array."""
    _, dtype = _sfx(node)
    ctype = _CTYPE[dtype]
    (x,) = inputs
    (z,) = outputs
    nd = node.inputs[0].type.ndim
    wh, ww = op.ws
    ib = int(op.ignore_border)
    fail = sub["fail"]
    return f"""
    {{
        PyArrayObject *cx = PyArray_GETCONTIGUOUS({x});
        npy_intp dims[{nd}];
        long M = 1, H, W, oh, ow, m, i, j, r, c, r1, c1;
        int d, ok = 0;
        const {ctype}* xd;
        {ctype}* od;
        if (cx == NULL) {{ {fail} }}
        for (d = 0; d < {nd} - 2; ++d) {{ dims[d] = PyArray_DIMS(cx)[d]; M *= dims[d]; }}
        H = PyArray_DIMS(cx)[{nd} - 2]; W = PyArray_DIMS(cx)[{nd} - 1];
        oh = {ib} ? H / {wh} : (H + {wh} - 1) / {wh};
        ow = {ib} ? W / {ww} : (W + {ww} - 1) / {ww};
        dims[{nd} - 2] = oh; dims[{nd} - 1] = ow;
        {_alloc_output(z, nd, "dims", f"NPY_{dtype.upper()}", "goto dlt_pool_fail_{name};")}
        xd = ({ctype}*)PyArray_DATA(cx);
        od = ({ctype}*)PyArray_DATA({z});
        if ({wh} == 2 && {ww} == 2 && oh * 2 <= H && ow * 2 <= W) {{
            /* The tutorial's 2x2 windows, all inside the image: straight-line code. */
            for (m = 0; m < M; ++m)
                for (i = 0; i < oh; ++i) {{
                    const {ctype}* x0 = xd + (m * H + 2 * i) * W;
                    const {ctype}* x1 = x0 + W;
                    {ctype}* o = od + (m * oh + i) * ow;
                    for (j = 0; j < ow; ++j) {{
                        {ctype} mx = x0[2 * j];
                        mx = x0[2 * j + 1] > mx ? x0[2 * j + 1] : mx;
                        mx = x1[2 * j] > mx ? x1[2 * j] : mx;
                        mx = x1[2 * j + 1] > mx ? x1[2 * j + 1] : mx;
                        o[j] = mx;
                    }}
                }}
        }} else
        for (m = 0; m < M; ++m)
            for (i = 0; i < oh; ++i) {{
                r1 = (i + 1) * {wh} < H ? (i + 1) * {wh} : H;
                for (j = 0; j < ow; ++j) {{
                    const {ctype}* xm = xd + m * H * W;
                    {ctype} mx = xm[i * {wh} * W + j * {ww}];
                    c1 = (j + 1) * {ww} < W ? (j + 1) * {ww} : W;
                    for (r = i * {wh}; r < r1; ++r)
                        for (c = j * {ww}; c < c1; ++c)
                            if (xm[r * W + c] > mx) mx = xm[r * W + c];
                    od[(m * oh + i) * ow + j] = mx;
                }}
            }}
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
    wh, ww = op.ws
    fail = sub["fail"]
    return f"""
    {{
        PyArrayObject *cx = PyArray_GETCONTIGUOUS({x});
        PyArrayObject *cm = PyArray_GETCONTIGUOUS({mo});
        PyArrayObject *cg = PyArray_GETCONTIGUOUS({gz});
        npy_intp dims[{nd}];
        long M = 1, H, W, oh, ow, m, i, j, r, c, c1;
        int d, ok = 0;
        const {ctype} *xd, *md, *gd;
        {ctype}* od;
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
        xd = ({ctype}*)PyArray_DATA(cx);
        md = ({ctype}*)PyArray_DATA(cm);
        gd = ({ctype}*)PyArray_DATA(cg);
        od = ({ctype}*)PyArray_DATA({z});
        if ({wh} == 2 && {ww} == 2 && oh * 2 <= H && ow * 2 <= W) {{
            /* The tutorial's 2x2 windows: two input rows per output row. */
            for (m = 0; m < M; ++m) {{
                for (i = 0; i < oh; ++i) {{
                    const {ctype}* x0 = xd + (m * H + 2 * i) * W;
                    const {ctype}* x1 = x0 + W;
                    {ctype}* g0 = od + (m * H + 2 * i) * W;
                    {ctype}* g1 = g0 + W;
                    const {ctype}* mrow = md + (m * oh + i) * ow;
                    const {ctype}* grow = gd + (m * oh + i) * ow;
                    for (j = 0; j < ow; ++j) {{
                        const {ctype} mx = mrow[j], g = grow[j];
                        g0[2 * j] = dlt_pick_{sfx}(x0[2 * j], mx, g);
                        g0[2 * j + 1] = dlt_pick_{sfx}(x0[2 * j + 1], mx, g);
                        g1[2 * j] = dlt_pick_{sfx}(x1[2 * j], mx, g);
                        g1[2 * j + 1] = dlt_pick_{sfx}(x1[2 * j + 1], mx, g);
                    }}
                    for (c = 2 * ow; c < W; ++c) g0[c] = g1[c] = 0;
                }}
                for (r = 2 * oh; r < H; ++r)
                    for (c = 0; c < W; ++c) od[(m * H + r) * W + c] = 0;
            }}
        }} else
        /* Row by row, every element written once: no zero-fill pass. */
        for (m = 0; m < M; ++m)
            for (r = 0; r < H; ++r) {{
                const {ctype}* xr = xd + (m * H + r) * W;
                {ctype}* gr = od + (m * H + r) * W;
                i = r / {wh};
                if (i >= oh) {{
                    for (c = 0; c < W; ++c) gr[c] = 0;
                    continue;
                }}
                for (j = 0; j < ow; ++j) {{
                    {ctype} mx = md[(m * oh + i) * ow + j];
                    {ctype} g = gd[(m * oh + i) * ow + j];
                    c1 = (j + 1) * {ww} < W ? (j + 1) * {ww} : W;
                    for (c = j * {ww}; c < c1; ++c)
                        gr[c] = dlt_pick_{sfx}(xr[c], mx, g);
                }}
                for (c = ow * {ww}; c < W; ++c) gr[c] = 0;
            }}
        ok = 1;
      dlt_pgrad_fail_{name}:
        Py_XDECREF(cx);
        Py_XDECREF(cm);
        Py_XDECREF(cg);
        if (!ok) {{ {fail} }}
    }}
    """.replace("{name}", name)
