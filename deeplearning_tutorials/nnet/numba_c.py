"""The C kernels of the convolution and pooling Ops, built once as a shared library for Numba.

Port note (not in the original): the Numba kernels of :mod:`.numba_kernels` run on one
core, beside the BLAS that uses them all, and make PyTensor's default backend (Numba)
about twice as slow as the C backends on LeNet5. The C kernels of :mod:`.conv_c` already
take plain pointers and shapes, and run their loops on the process's thread pool
(:mod:`.threads_c`), which also runs OpenBLAS's GEMMs. This module compiles the same C
source, once per source text and compiler, into two small shared libraries (float32 and
float64, built at once) in PyTensor's compile directory, and the Numba dispatch of the Ops
calls their functions by name.

Why by name: PyTensor caches the machine code of its Numba functions on disk. A function
that calls a C address (a ``ctypes`` pointer) could not be cached, since the address
changes from one process to the next; a call to an external symbol can. LLVM resolves the
symbol when the code is loaded, so :func:`load` must have loaded the library first: the
Numba dispatch of the Ops calls it when PyTensor builds their functions, which PyTensor
does (for their cache keys) before it loads any cached code of a graph. The symbols carry
:data:`ABI_VERSION`, and the Numba dispatch salts the cache key with it (another salt when
it uses the pure Numba kernels), so cached code never calls a library it was not compiled
for.

When there is no C compiler, the build fails, or ``$DLT_NUMBA_KERNELS=numba``, the Numba
dispatch uses the kernels of :mod:`.numba_kernels` instead: same results to rounding, one
core.
"""

import ctypes
import hashlib
import os
import subprocess
import sys
import sysconfig
import tempfile
import threading
import warnings

from deeplearning_tutorials.nnet.conv_c import PARALLEL_MIN_ELEMENTS
from deeplearning_tutorials.nnet.threads_c import LIBRARIES

#: In every exported symbol: bump when a signature below changes.
ABI_VERSION = 1

_PREFIX = f"dlt_nbc{ABI_VERSION}_"

# Pointers travel as integers (Numba's ``arr.ctypes.data``), shapes as 64-bit integers.
_EXPORTS_TEMPLATE = r"""
extern "C" {
int PREFIXconv_fwd_SFX(intptr_t x, intptr_t w, intptr_t out, int64_t B, int64_t C,
                       int64_t H, int64_t W, int64_t F, int64_t kh, int64_t kw)
{
    return dlt_conv_fwd_SFX((const DLT_T*)x, (const DLT_T*)w, (DLT_T*)out, (int)B, (int)C,
                            (int)H, (int)W, (int)F, (int)kh, (int)kw);
}
int PREFIXconv_gi_SFX(intptr_t gz, intptr_t w, intptr_t gx, int64_t B, int64_t F,
                      int64_t oh, int64_t ow, int64_t C, int64_t kh, int64_t kw)
{
    return dlt_conv_gi_SFX((const DLT_T*)gz, (const DLT_T*)w, (DLT_T*)gx, (int)B, (int)F,
                           (int)oh, (int)ow, (int)C, (int)kh, (int)kw);
}
int PREFIXconv_gw_SFX(intptr_t x, intptr_t gz, intptr_t gw, int64_t B, int64_t C,
                      int64_t H, int64_t W, int64_t F, int64_t oh, int64_t ow)
{
    return dlt_conv_gw_SFX((const DLT_T*)x, (const DLT_T*)gz, (DLT_T*)gw, (int)B, (int)C,
                           (int)H, (int)W, (int)F, (int)oh, (int)ow);
}
/* Max pooling of M planes (H, W) into (oh, ow) with (wh, ww) windows; with mx and gz
   non-zero, its gradient into out (M, H, W) instead. */
int PREFIXpool_SFX(intptr_t x, intptr_t mx, intptr_t gz, intptr_t out, int64_t M,
                   int64_t H, int64_t W, int64_t oh, int64_t ow, int64_t wh, int64_t ww)
{
    dlt_pool_args_SFX pa;
    pa.x = (const DLT_T*)x; pa.mx = (const DLT_T*)mx; pa.gz = (const DLT_T*)gz;
    pa.out = (DLT_T*)out;
    pa.M = M; pa.H = H; pa.W = W; pa.oh = oh; pa.ow = ow; pa.wh = wh; pa.ww = ww;
    dlt_parallel(mx ? dlt_pool_grad_task_SFX : dlt_pool_task_SFX, &pa,
                 M * H * W >= PARALLEL_MIN ? M : 1);
    return 0;
}
/* z = tanh(x + b) of x (B, C, HW) and b (C), plane by plane (BiasTanh). */
int PREFIXbias_tanh_SFX(intptr_t x, intptr_t b, intptr_t z, int64_t B, int64_t C, int64_t HW)
{
    dlt_bias_tanh_SFX a;
    a.x = (const DLT_T*)x; a.b = (const DLT_T*)b; a.z = (DLT_T*)z;
    a.B = B; a.C = C; a.HW = HW;
    dlt_parallel(dlt_bias_tanh_task_SFX, &a, B * C * HW >= PARALLEL_MIN ? B * C : 1);
    return 0;
}
/* c (M, N) = op(a) (M, K) @ op(b) (K, N), row-major, op a transpose where ta or tb is 'T'
   (the dot of two matrices: numba_ops.MatMul). The product is the one PyTensor's own
   Numba dot asks of the same BLAS for C- and Fortran-ordered operands. */
int PREFIXgemm_SFX(intptr_t a, intptr_t b, intptr_t c, int64_t ta, int64_t tb, int64_t M,
                   int64_t N, int64_t K, int64_t lda, int64_t ldb)
{
    GEMM((char)ta, (char)tb, (int)M, (int)N, (int)K, 1, (const DLT_T*)a, (int)lda,
         (const DLT_T*)b, (int)ldb, 0, (DLT_T*)c, (int)N);
    return 0;
}
/* z (C) = x.sum(axis=(0, 2)) of x (B, C, HW), in double (SumOverBatchAndSpace). */
int PREFIXsum_bhw_SFX(intptr_t x, intptr_t z, int64_t B, int64_t C, int64_t HW)
{
    dlt_sum_bhw_SFX a;
    a.x = (const DLT_T*)x; a.z = (DLT_T*)z; a.B = B; a.C = C; a.HW = HW;
    dlt_parallel(dlt_sum_bhw_task_SFX, &a, B * C * HW >= PARALLEL_MIN ? C : 1);
    return 0;
}
}
"""

_INIT = r"""
extern "C" {
/* Called once per library, with the GIL held (ctypes.PyDLL): finds SciPy's BLAS and the
   process's thread pool, the two things that need Python. The pool's threads start at
   its first parallel loop, as under the C linkers. 0 on success. */
int PREFIXinit_SFX(void)
{
    if (dlt_blas_init() != 0) {
        PyErr_Clear();
        return -1;
    }
    return dlt_pool() != NULL ? 0 : -1;
}
}
"""

#: The two libraries, one per float type: two compiler runs at once, one per core.
SUFFIXES = {"float32": ("f32", "float"), "float64": ("f64", "double")}


def _exports(sfx, ctype):
    return (
        _EXPORTS_TEMPLATE.replace("PREFIX", _PREFIX)
        .replace("PARALLEL_MIN", str(PARALLEL_MIN_ELEMENTS))
        .replace("SFX", sfx)
        .replace("DLT_T", ctype)
        .replace("GEMM(", "dlt_rm_sgemm(" if sfx == "f32" else "dlt_rm_dgemm(")
    )


def source(dtype=None):
    """The C++ source of the library of ``dtype`` ('float32' or 'float64'), or of both.

    Each library holds its own copy of the support code (the thread pool and SciPy's BLAS,
    which both find through Python, so the two share them).
    """
    from deeplearning_tutorials import backend
    from deeplearning_tutorials.nnet import conv_c

    if dtype is None:
        return "".join(source(d) for d in SUFFIXES)
    sfx, ctype = SUFFIXES[dtype]
    gemm = "dlt_rm_sgemm" if sfx == "f32" else "dlt_rm_dgemm"
    tanh = "dlt_fast_tanhf(" if sfx == "f32" else "tanh("
    return (
        "#include <Python.h>\n#include <stdint.h>\n#include <math.h>\n"
        + conv_c.THREADS_CODE
        + conv_c._BLAS_CODE
        + (conv_c._AVX512_CONV_CODE if sfx == "f32" else "")
        + conv_c._kernels(conv_c._KERNELS_TEMPLATE, ctype, sfx, gemm)
        + conv_c._PICK_CODE
        + conv_c._kernels(conv_c._POOL_TEMPLATE, ctype, sfx)
        + (backend.FAST_TANHF_CODE if sfx == "f32" else "")
        + conv_c._kernels(backend._BIAS_TANH_TEMPLATE.replace("TANH(", tanh), ctype, sfx)
        + conv_c._kernels(backend._SUM_TEMPLATE, ctype, sfx)
        + _exports(sfx, ctype)
        + _INIT.replace("PREFIX", _PREFIX).replace("SFX", sfx)
    )


def symbol(kind, dtype):
    """The exported name of kernel ``kind`` for ``dtype``.

    ``kind``: conv_fwd, conv_gi, conv_gw, pool, bias_tanh, sum_bhw or gemm.
    """
    return f"{_PREFIX}{kind}_{'f32' if dtype == 'float32' else 'f64'}"


def _compile_command(src_path, lib_path):
    import pytensor
    from pytensor.link.c.cmodule import GCC_compiler

    return (
        [pytensor.config.cxx, "-shared", "-O3", "-fno-math-errno", "-w"]
        + GCC_compiler.compile_args()
        + [f"-I{sysconfig.get_paths()['include']}", "-o", lib_path, src_path]
        + [f"-l{lib}" for lib in LIBRARIES]
    )


def _build():
    """Paths of the two libraries, compiled into PyTensor's compile directory if not there yet."""
    import pytensor

    if not pytensor.config.cxx:
        raise _NoCompiler("no C++ compiler (pytensor.config.cxx is empty)")
    sources = {dtype: source(dtype) for dtype in SUFFIXES}
    key = hashlib.sha256(
        "\0".join([*sources.values(), " ".join(_compile_command("S", "L")), sys.version]).encode()
    ).hexdigest()[:16]
    folder = os.path.join(pytensor.config.compiledir, "dlt_numba_c", key)
    paths = {dtype: os.path.join(folder, f"libdlt_nbc_{SUFFIXES[dtype][0]}.so")
             for dtype in SUFFIXES}
    if all(os.path.exists(path) for path in paths.values()):
        return paths
    os.makedirs(folder, exist_ok=True)
    # Build beside the targets under private names, then rename: another process
    # building at the same time sees either no library or a whole one. Both compiler
    # runs at once: about half the time on two cores.
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        runs = {}
        for dtype, src in sources.items():
            src_path = os.path.join(tmp, f"dlt_nbc_{dtype}.cpp")
            with open(src_path, "w") as fh:
                fh.write(src)
            tmp_lib = os.path.join(tmp, os.path.basename(paths[dtype]))
            runs[dtype] = tmp_lib, subprocess.Popen(
                _compile_command(src_path, tmp_lib), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
        failed = None
        for dtype, (tmp_lib, run) in runs.items():
            _, stderr = run.communicate()
            if run.returncode != 0 and failed is None:
                detail = stderr.strip()[-2000:] or "no message"
                failed = f"{pytensor.config.cxx} exited with status {run.returncode}: {detail}"
        if failed:
            raise RuntimeError(failed)
        for dtype in sorted(SUFFIXES, reverse=True):  # float32's last: all or nothing
            os.replace(runs[dtype][0], paths[dtype])
    return paths


_state = {"loaded": None, "error": None}
_lock = threading.Lock()
_prefetch = {"thread": None}


def prefetch():
    """Start building the library in a background thread, if it is not loaded yet.

    The build (one run of the C++ compiler, 3 to 5 s, once per compile directory) then
    goes on beside whatever this process does before it compiles its first function,
    such as reading MNIST; :func:`load` waits for it. Called when a lesson starts with
    ``NUMBA`` as its backend (:func:`deeplearning_tutorials.flags.with_flags`).
    """
    with _lock:
        if _state["loaded"] is not None or _prefetch["thread"] is not None:
            return
        if os.environ.get("DLT_NUMBA_KERNELS", "c").strip().lower() == "numba":
            return
        thread = threading.Thread(target=_build_quietly, name="dlt-numba-c-build", daemon=True)
        _prefetch["thread"] = thread
        thread.start()


def _build_quietly():
    try:
        _build()
    except Exception:  # load() builds again and reports it
        pass

#: Values of ``$DLT_NUMBA_KERNELS``: the C library (the default), or Numba's own kernels.
KERNEL_CHOICES = ("c", "numba")


def load():
    """Build and load the library once; True when the Numba dispatch may call it.

    Never raises: on failure :func:`error` says why, and the pure Numba kernels are used.
    """
    with _lock:
        if _state["loaded"] is None:
            _state["loaded"], _state["error"] = _load()
        return _state["loaded"]


def _load():
    choice = os.environ.get("DLT_NUMBA_KERNELS", "c").strip().lower() or "c"
    if choice not in KERNEL_CHOICES:
        warnings.warn(f"DLT_NUMBA_KERNELS={choice!r} is not one of {KERNEL_CHOICES}: "
                      "using the C kernels", stacklevel=3)
    if choice == "numba":
        return False, "DLT_NUMBA_KERNELS=numba"
    try:
        import llvmlite.binding as llvm

        if _prefetch["thread"] is not None:
            _prefetch["thread"].join()
        for dtype, path in _build().items():
            lib = ctypes.PyDLL(path)
            if lib[f"{_PREFIX}init_{SUFFIXES[dtype][0]}"]() != 0:
                raise RuntimeError("SciPy's sgemm/dgemm were not found")
            llvm.load_library_permanently(path)
    except Exception as exc:  # no compiler, no SciPy BLAS, a failed build
        message = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, _NoCompiler):  # PyTensor has said so already
            warnings.warn("NUMBA runs Numba's own one-core kernels: the C kernels' library "
                          f"is unavailable ({message.splitlines()[0][:300]})", stacklevel=3)
        return False, message
    return True, None


class _NoCompiler(RuntimeError):
    pass


def error():
    """Why :func:`load` returned False (None if it did not)."""
    return _state["error"]
