"""One thread pool for the C code of the convolution and pooling Ops, and for OpenBLAS.

Port note (not in the original): Theano's C Ops ran on one core, and only the BLAS
underneath them used the others. On the 2-core machines this port was measured on, that
left the second core idle for about 40 % of a LeNet5 training step: im2col, the copies
around each GEMM, the pooling and its gradient ran on one core, the GEMMs on two.

:c:func:`dlt_parallel` runs such a loop on every core: the caller and ``n - 1`` worker
threads each take one part of it (a range of images or planes: no two parts write the
same element, so the results do not depend on the number of threads).

A second pool beside OpenBLAS's own threads does not work. Between two calls, OpenBLAS's
threads wait for the next one by spinning on their cores; a worker of ours woken on such a
core shares it with the spinner, and the spinner does not yield: a 2-thread loop right
after a GEMM took 3.9 ms instead of 2.2, and a GEMM right after our loop ran at 56 GFLOP/s
instead of 285 while our worker spun. So there is one pool, for both: the first C module
that needs it starts it, publishes it in this Python module (``_pool_v1``, a capsule) for
the others (every Op under the CVM linker is its own module), and hands it to the OpenBLAS
that SciPy ships (the one these Ops, PyTensor's ``Dot22``/``Gemm`` and Numba's ``np.dot``
call) through ``openblas_set_threads_callback_function`` (OpenBLAS 0.3.27 and later), so
that OpenBLAS runs its parallel GEMMs on our threads rather than on its own. Our workers
spin for up to a millisecond after each part, as OpenBLAS's did (a sleeping thread takes
about 50 microseconds to wake on these virtual machines), then sleep.

OpenBLAS's threads of one GEMM wait for each other, so its parts must run at the same
time: when the pool is busy (another thread is using it) or smaller than the GEMM's thread
count, a GEMM's parts run on threads started for that call.

How many threads: ``$DLT_NUM_THREADS``, else OpenBLAS's thread count (which follows
``$OPENBLAS_NUM_THREADS``, ``$OMP_NUM_THREADS`` and the processors), else the processors
this process may use; at most 16. Where SciPy's BLAS cannot be handed the pool (an
OpenBLAS before 0.3.27, another BLAS), one thread unless ``$DLT_NUM_THREADS`` says
otherwise: a pool beside a BLAS's own spinning threads slows both. ``DLT_NUM_THREADS=1`` runs every loop in the calling
thread and leaves OpenBLAS's threads alone, as before. Workers start with every signal
blocked (Python's handlers stay with the main thread) and are started again in a child
process after ``fork``. Without POSIX threads (Windows) every loop runs in the calling
thread.
"""

import os

#: Libraries the Ops that use the pool link with.
LIBRARIES = ["pthread", "dl"] if os.name == "posix" else []


class UsesThreadPool:
    """Mixin for a ``COp`` whose C code calls :c:func:`dlt_parallel`: links :data:`LIBRARIES`."""

    def c_libraries(self, **kwargs):
        return list(LIBRARIES)

#: Set by the C code: a capsule holding the process's pool (see the module docstring).
_pool_v1 = None

THREADS_CODE = r"""
#ifndef DLT_THREADS_DEFINED
#define DLT_THREADS_DEFINED
#include <stdlib.h>
#include <string.h>
#if (defined(__unix__) || defined(__APPLE__)) && !defined(DLT_NO_THREADS)
#define DLT_HAVE_THREADS 1
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#include <dlfcn.h>
#else
#define DLT_HAVE_THREADS 0
#endif

/* One part of a loop split in nparts: part 0 runs in the caller. */
typedef void (*dlt_task_fn)(void* arg, int part, int nparts);

/* [lo, hi) of part `part` of n items split in nparts. */
static inline void dlt_split(long n, int part, int nparts, long* lo, long* hi)
{
    *lo = n * part / nparts;
    *hi = n * (part + 1) / nparts;
}

/* What the pool's host module publishes to the others. */
#define DLT_POOL_API_VERSION 1
typedef struct {
    int version;
    int (*threads)(void);
    void (*parallel)(dlt_task_fn fn, void* arg, long nparts);
} dlt_pool_api;

#if DLT_HAVE_THREADS
#define DLT_MAX_THREADS 16
/* A worker spins this long (ns) after its part before it sleeps. */
#define DLT_SPIN_NS 1000000L

static pthread_mutex_t dlt_pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t dlt_pool_busy = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t dlt_pool_start_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dlt_pool_work_cv = PTHREAD_COND_INITIALIZER;
static long dlt_pool_gen = 0;        /* bumped once per task */
static long dlt_pool_start_gen = 0;  /* dlt_pool_gen when the workers were started */
static int dlt_pool_pending = 0;     /* workers that have not finished the task */
static dlt_task_fn dlt_pool_fn = NULL;
static void* dlt_pool_arg = NULL;
static int dlt_pool_nparts = 0;
static int dlt_pool_size = 0;        /* threads, the caller included; 0: not started */
static int dlt_pool_atfork = 0;
static int dlt_pool_blas_hooked = 0;
static void* dlt_pool_blas_lib = NULL;  /* SciPy's OpenBLAS, found by dlt_pool() */

static inline void dlt_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static long dlt_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

static void* dlt_pool_worker(void* p)
{
    int id = (int)(long)p, spins;
    long seen = dlt_pool_start_gen, g, t0;
    for (;;) {
        spins = 0;
        t0 = dlt_now_ns();
        while ((g = __atomic_load_n(&dlt_pool_gen, __ATOMIC_ACQUIRE)) == seen) {
            dlt_cpu_relax();
            if ((++spins & 255) == 0 && dlt_now_ns() - t0 > DLT_SPIN_NS) {
                pthread_mutex_lock(&dlt_pool_mu);
                while ((g = __atomic_load_n(&dlt_pool_gen, __ATOMIC_ACQUIRE)) == seen)
                    pthread_cond_wait(&dlt_pool_work_cv, &dlt_pool_mu);
                pthread_mutex_unlock(&dlt_pool_mu);
                break;
            }
        }
        seen = g;
        if (id < dlt_pool_nparts)
            dlt_pool_fn(dlt_pool_arg, id, dlt_pool_nparts);
        __atomic_sub_fetch(&dlt_pool_pending, 1, __ATOMIC_ACQ_REL);
    }
    return NULL;
}

/* Part `part` of a task on a thread of its own, for when the pool cannot take it. */
typedef struct { dlt_task_fn fn; void* arg; int part, nparts; } dlt_solo;
static void* dlt_solo_main(void* p)
{
    dlt_solo* s = (dlt_solo*)p;
    s->fn(s->arg, s->part, s->nparts);
    return NULL;
}

/* Every part at the same time, parts 1.. on threads started for this call (part
   0 in the caller); a part whose thread cannot start runs after the others. */
static void dlt_run_on_new_threads(dlt_task_fn fn, void* arg, int n)
{
    pthread_t th[DLT_MAX_THREADS];
    dlt_solo solo[DLT_MAX_THREADS];
    int started[DLT_MAX_THREADS], p;
    for (p = 1; p < n; ++p) {
        solo[p].fn = fn; solo[p].arg = arg; solo[p].part = p; solo[p].nparts = n;
        started[p] = pthread_create(&th[p], NULL, dlt_solo_main, &solo[p]) == 0;
    }
    fn(arg, 0, n);
    for (p = 1; p < n; ++p) {
        if (started[p]) pthread_join(th[p], NULL);
        else fn(arg, p, n);
    }
}

/* In a child process after fork the workers are gone: start afresh on next use. */
static void dlt_pool_after_fork(void)
{
    pthread_mutex_init(&dlt_pool_mu, NULL);
    pthread_mutex_init(&dlt_pool_busy, NULL);
    pthread_mutex_init(&dlt_pool_start_mu, NULL);
    pthread_cond_init(&dlt_pool_work_cv, NULL);
    dlt_pool_pending = 0;
    dlt_pool_size = 0;
}

static int dlt_env_threads(const char* name)
{
    const char* s = getenv(name);
    return (s && *s) ? atoi(s) : 0;
}

/* SciPy's OpenBLAS, the library of the sgemm that scipy.linalg.cython_blas exports,
   or NULL. Called with the GIL held. */
static void* dlt_scipy_openblas(void)
{
    PyObject *mod, *capi, *cap;
    void *fn = NULL, *lib = NULL;
    Dl_info info;
    mod = PyImport_ImportModule("scipy.linalg.cython_blas");
    if (mod == NULL) { PyErr_Clear(); return NULL; }
    capi = PyObject_GetAttrString(mod, "__pyx_capi__");
    Py_DECREF(mod);
    if (capi == NULL) { PyErr_Clear(); return NULL; }
    cap = PyDict_GetItemString(capi, "sgemm");
    if (cap != NULL) fn = PyCapsule_GetPointer(cap, PyCapsule_GetName(cap));
    if (fn == NULL) PyErr_Clear();
    Py_DECREF(capi);
    if (fn != NULL && dladdr(fn, &info) != 0 && info.dli_fname != NULL) {
#ifdef RTLD_NOLOAD
        lib = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
#endif
    }
    return lib;
}

static void* dlt_dlsym2(void* lib, const char* a, const char* b)
{
    void* f = dlsym(lib, a);
    return f != NULL ? f : dlsym(lib, b);
}

static void dlt_pool_parallel(dlt_task_fn fn, void* arg, long nparts);
static int dlt_pool_threads(void);

/* OpenBLAS's parallel jobs, run on the pool. */
typedef void (*dlt_blas_dojob)(int thread_num, void* jobdata, int dojob_data);
typedef struct { dlt_blas_dojob dojob; char* data; size_t elsize; int dojob_data; } dlt_blas_jobs;
static void dlt_blas_job_task(void* arg, int part, int nparts)
{
    dlt_blas_jobs* j = (dlt_blas_jobs*)arg;
    (void)nparts;
    j->dojob(part, j->data + (size_t)part * j->elsize, j->dojob_data);
}
static void dlt_blas_callback(int sync, dlt_blas_dojob dojob, int numjobs, size_t elsize,
                              void* jobdata, int dojob_data)
{
    dlt_blas_jobs j;
    (void)sync;  /* always waits: OpenBLAS's jobs are done when this returns */
    j.dojob = dojob; j.data = (char*)jobdata; j.elsize = elsize; j.dojob_data = dojob_data;
    if (numjobs <= 1) {
        if (numjobs == 1) dlt_blas_job_task(&j, 0, 1);
        return;
    }
    if (numjobs > dlt_pool_threads() || numjobs > DLT_MAX_THREADS) {
        int p, n = numjobs;
        /* More jobs than threads (OpenBLAS's count was raised since): DLT_MAX_THREADS
           at a time would deadlock the jobs that wait for the others, so all at once. */
        if (n > DLT_MAX_THREADS) {
            pthread_t* th = (pthread_t*)malloc(sizeof(pthread_t) * n);
            dlt_solo* solo = (dlt_solo*)malloc(sizeof(dlt_solo) * n);
            if (th && solo) {
                for (p = 1; p < n; ++p) {
                    solo[p].fn = dlt_blas_job_task; solo[p].arg = &j; solo[p].part = p;
                    solo[p].nparts = n;
                    pthread_create(&th[p], NULL, dlt_solo_main, &solo[p]);
                }
                dlt_blas_job_task(&j, 0, n);
                for (p = 1; p < n; ++p) pthread_join(th[p], NULL);
            }
            free(th);
            free(solo);
            return;
        }
        dlt_run_on_new_threads(dlt_blas_job_task, &j, n);
        return;
    }
    dlt_pool_parallel(dlt_blas_job_task, &j, -numjobs);  /* negative: all parts at once */
}

/* Called once per process (and again after fork): with the GIL held the first time,
   from an Op; after fork possibly from OpenBLAS's callback, when Python is not used. */
static void dlt_pool_start_locked(void)
{
    typedef void (*setcb_t)(void*);
    int n = dlt_env_threads("DLT_NUM_THREADS"), i, blas_threads = 0;
    void* lib = dlt_pool_blas_hooked ? NULL : dlt_pool_blas_lib;
    setcb_t setcb = NULL;
    sigset_t all, old;
    if (lib != NULL) {
        int (*get)(void) = (int (*)(void))dlt_dlsym2(lib, "scipy_openblas_get_num_threads",
                                                      "openblas_get_num_threads");
        if (get != NULL) blas_threads = get();
        setcb = (setcb_t)dlt_dlsym2(lib, "scipy_openblas_set_threads_callback_function",
                                    "openblas_set_threads_callback_function");
    }
    if (n <= 0 && !dlt_pool_blas_hooked && setcb == NULL) {
        /* No way to give OpenBLAS our threads (an OpenBLAS before 0.3.27, or
           another BLAS): a second pool beside its spinning threads would make
           both slower, so one thread, as before, unless DLT_NUM_THREADS says. */
        n = 1;
    }
    if (n <= 0) n = blas_threads;
    if (n <= 0) n = dlt_env_threads("OMP_NUM_THREADS");
    if (n <= 0) {
#if defined(__linux__) && defined(CPU_COUNT)
        cpu_set_t cpus;
        if (sched_getaffinity(0, sizeof cpus, &cpus) == 0) n = CPU_COUNT(&cpus);
#endif
        if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    }
    if (n > DLT_MAX_THREADS) n = DLT_MAX_THREADS;
    if (n < 1) n = 1;
    if (!dlt_pool_atfork) {
        pthread_atfork(NULL, NULL, dlt_pool_after_fork);
        dlt_pool_atfork = 1;
    }
    dlt_pool_start_gen = __atomic_load_n(&dlt_pool_gen, __ATOMIC_ACQUIRE);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (i = 1; i < n; ++i) {
        pthread_t t;
        pthread_attr_t attr;
        int err;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        err = pthread_create(&t, &attr, dlt_pool_worker, (void*)(long)i);
        pthread_attr_destroy(&attr);
        if (err != 0) break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    __atomic_store_n(&dlt_pool_size, i, __ATOMIC_RELEASE);  /* started workers and the caller */
    if (setcb != NULL && dlt_pool_size > 1) {
        setcb((void*)dlt_blas_callback);
        dlt_pool_blas_hooked = 1;
    }
}

static int dlt_pool_threads(void)
{
    if (__atomic_load_n(&dlt_pool_size, __ATOMIC_ACQUIRE) == 0) {
        pthread_mutex_lock(&dlt_pool_start_mu);
        if (dlt_pool_size == 0) dlt_pool_start_locked();
        pthread_mutex_unlock(&dlt_pool_start_mu);
    }
    return dlt_pool_size;
}

/* Run fn(arg, p, n) for p in 0..n-1, n = min(|nparts|, threads), and return when all
   are done. A negative nparts asks for every part at the same time (OpenBLAS's jobs),
   on threads of their own if the pool is in use. */
static void dlt_pool_parallel(dlt_task_fn fn, void* arg, long nparts)
{
    int together = nparts < 0, n = dlt_pool_threads(), p;
    if (together) nparts = -nparts;
    if (nparts < n) n = (int)nparts;
    if (n <= 1) {
        fn(arg, 0, 1);
        return;
    }
    if (pthread_mutex_trylock(&dlt_pool_busy) != 0) {
        if (together) dlt_run_on_new_threads(fn, arg, n);
        else for (p = 0; p < n; ++p) fn(arg, p, n);
        return;
    }
    pthread_mutex_lock(&dlt_pool_mu);
    dlt_pool_fn = fn;
    dlt_pool_arg = arg;
    dlt_pool_nparts = n;
    __atomic_store_n(&dlt_pool_pending, dlt_pool_size - 1, __ATOMIC_RELAXED);
    __atomic_store_n(&dlt_pool_gen, dlt_pool_gen + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&dlt_pool_work_cv);
    pthread_mutex_unlock(&dlt_pool_mu);
    fn(arg, 0, n);
    while (__atomic_load_n(&dlt_pool_pending, __ATOMIC_ACQUIRE) != 0)
        dlt_cpu_relax();
    pthread_mutex_unlock(&dlt_pool_busy);
}

static dlt_pool_api dlt_pool_own = {DLT_POOL_API_VERSION, dlt_pool_threads, dlt_pool_parallel};
#else
static int dlt_pool_threads(void) { return 1; }
static void dlt_pool_parallel(dlt_task_fn fn, void* arg, long nparts)
{
    (void)nparts;
    fn(arg, 0, 1);
}
static dlt_pool_api dlt_pool_own = {DLT_POOL_API_VERSION, dlt_pool_threads, dlt_pool_parallel};
#endif

/* The process's pool: the one published in deeplearning_tutorials.nnet.threads_c, or
   this module's, published there. Called with the GIL held (from an Op's C code). */
static dlt_pool_api* dlt_pool_api_ptr = NULL;
static dlt_pool_api* dlt_pool(void)
{
    PyObject *mod, *cap;
    static const char* name = "deeplearning_tutorials.nnet.threads_c._pool_v1";
    if (dlt_pool_api_ptr != NULL) return dlt_pool_api_ptr;
    dlt_pool_api_ptr = &dlt_pool_own;
    mod = PyImport_ImportModule("deeplearning_tutorials.nnet.threads_c");
    if (mod == NULL) { PyErr_Clear(); return dlt_pool_api_ptr; }
    cap = PyObject_GetAttrString(mod, "_pool_v1");
    if (cap != NULL && PyCapsule_IsValid(cap, name)) {
        dlt_pool_api* api = (dlt_pool_api*)PyCapsule_GetPointer(cap, name);
        if (api != NULL && api->version == DLT_POOL_API_VERSION) dlt_pool_api_ptr = api;
    } else {
        PyObject* mine;
        PyErr_Clear();
#if DLT_HAVE_THREADS
        /* Here, with the GIL held, not in dlt_pool_start_locked. */
        dlt_pool_blas_lib = dlt_scipy_openblas();
#endif
        mine = PyCapsule_New(&dlt_pool_own, name, NULL);
        if (mine == NULL || PyObject_SetAttrString(mod, "_pool_v1", mine) != 0) PyErr_Clear();
        Py_XDECREF(mine);
    }
    if (PyErr_Occurred()) PyErr_Clear();
    Py_XDECREF(cap);
    Py_DECREF(mod);
    return dlt_pool_api_ptr;
}

/* Threads dlt_parallel uses (the caller included). */
static int dlt_threads(void) { return dlt_pool()->threads(); }

/* Run fn(arg, p, n) for p in 0..n-1, one part per thread, n = min(nparts, threads);
   returns when all parts are done. */
static void dlt_parallel(dlt_task_fn fn, void* arg, long nparts)
{
    dlt_pool()->parallel(fn, arg, nparts > 0 ? nparts : 1);
}
#endif
"""
