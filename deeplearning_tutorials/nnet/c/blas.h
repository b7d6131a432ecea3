/* sgemm and dgemm for the convolution kernels, taken from the BLAS that SciPy
   ships (scipy.linalg.cython_blas exports them as PyCapsules), so nothing needs
   linking and every backend multiplies with the same library.  Row-major
   wrappers: C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C. */
#ifndef DLT_BLAS_H
#define DLT_BLAS_H
#include <string.h>
#include <stdlib.h>
#include <stdint.h>

typedef void (*dlt_sgemm_t)(char*, char*, int*, int*, int*, float*, float*, int*,
                            float*, int*, float*, float*, int*);
typedef void (*dlt_dgemm_t)(char*, char*, int*, int*, int*, double*, double*, int*,
                            double*, int*, double*, double*, int*);
static dlt_sgemm_t dlt_sgemm_ptr = NULL;
static dlt_dgemm_t dlt_dgemm_ptr = NULL;

/* 0 on success; -1 with a Python exception set.  Called with the GIL held. */
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
                            "deeplearning_tutorials.nnet: scipy.linalg.cython_blas has no sgemm/dgemm");
        return -1;
    }
    return 0;
}

/* Column-major BLAS computing the row-major product: C^T = op(B)^T op(A)^T. */
static void dlt_gemm_float(char ta, char tb, int M, int N, int K, float alpha, const float* A,
                           int lda, const float* B, int ldb, float beta, float* C, int ldc)
{
    dlt_sgemm_ptr(&tb, &ta, &N, &M, &K, &alpha, (float*)B, &ldb, (float*)A, &lda, &beta, C, &ldc);
}

static void dlt_gemm_double(char ta, char tb, int M, int N, int K, double alpha, const double* A,
                            int lda, const double* B, int ldb, double beta, double* C, int ldc)
{
    dlt_dgemm_ptr(&tb, &ta, &N, &M, &K, &alpha, (double*)B, &ldb, (double*)A, &lda, &beta, C, &ldc);
}

/* *z becomes a C-contiguous array of nd dims: the one already there when it fits
   (a node's output from its last call), else a new one of typenum.  0, or -1
   with a Python exception set. */
static int dlt_output(PyArrayObject** z, int nd, npy_intp* dims, int typenum)
{
    if (*z != NULL && PyArray_NDIM(*z) == nd && PyArray_IS_C_CONTIGUOUS(*z)
        && PyArray_CompareLists(PyArray_DIMS(*z), dims, nd))
        return 0;
    Py_XDECREF(*z);
    *z = (PyArrayObject*)PyArray_EMPTY(nd, dims, typenum, 0);
    return *z == NULL ? -1 : 0;
}

/* Scratch buffers (slots 0 to 3) kept from one call to the next: a fresh malloc of
   a few MB is a fresh mmap whose pages fault in again at every minibatch.  The
   Ops run with the GIL held, so one set per compiled module suffices.  NULL when
   out of memory. */
static void* dlt_scratch_ptr[4] = {NULL, NULL, NULL, NULL};
static size_t dlt_scratch_size[4] = {0, 0, 0, 0};
static void* dlt_scratch(int slot, size_t bytes)
{
    if (bytes == 0) bytes = 1;
    if (dlt_scratch_size[slot] < bytes) {
        free(dlt_scratch_ptr[slot]);
        dlt_scratch_ptr[slot] = malloc(bytes);
        dlt_scratch_size[slot] = dlt_scratch_ptr[slot] ? bytes : 0;
    }
    return dlt_scratch_ptr[slot];
}

/* Images per chunk, so that a chunk's column matrix holds about `elements`
   elements, which stay in the second-level cache while the GEMM reads them. */
static int dlt_chunk(int batch, long per_image, long elements)
{
    long c = elements / (per_image < 1 ? 1 : per_image);
    if (c < 1) c = 1;
    if (c > batch) c = batch;
    return (int)c;
}
#endif
