"""A small thread pool for the C code of the convolution, pooling and bias-gradient Ops.

Port note (not in the original): Theano's C Ops ran on one core, and only the BLAS
underneath them used the others. On the 2-core machines this port was measured on, that
left the second core idle for about 40 % of a LeNet5 training step (im2col, the pooling
and its gradient, the copies around each GEMM all ran on one core, the GEMMs on two).
:c:func:`dlt_parallel` runs such a loop on every core: the caller and ``n - 1`` worker
threads each take one part of it (a range of images or planes: no two parts write the
same element, so the results do not depend on the number of threads).

How many threads: ``$DLT_NUM_THREADS``, else ``$OMP_NUM_THREADS``, else the processors
this process may run on (at most 16); ``DLT_NUM_THREADS=1`` runs everything in the
calling thread, as before. The workers are started on first use, with every signal
blocked (Python's handlers stay with the main thread), wait on a condition variable when
idle (after a short spin, so that the next part of the same Op finds them awake), and are
started again in a child process after ``fork``. Each compiled module (each Op under the
CVM linker, each function under the C linker) has its own pool; idle workers cost
nothing. Without POSIX threads (Windows) every loop runs in the calling thread.
"""

import os

#: Libraries the Ops that use the pool link with.
LIBRARIES = ["pthread"] if os.name == "posix" else []

THREADS_CODE = r"""
#ifndef DLT_THREADS_DEFINED
#define DLT_THREADS_DEFINED
#include <stdlib.h>
#if (defined(__unix__) || defined(__APPLE__)) && !defined(DLT_NO_THREADS)
#define DLT_HAVE_THREADS 1
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <unistd.h>
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

#if DLT_HAVE_THREADS
#define DLT_MAX_THREADS 16
/* Spins (about 20-50 microseconds) before an idle thread sleeps. */
#define DLT_SPINS 2000
static pthread_mutex_t dlt_pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dlt_pool_work_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t dlt_pool_done_cv = PTHREAD_COND_INITIALIZER;
static long dlt_pool_gen = 0;        /* bumped once per task */
static long dlt_pool_start_gen = 0;  /* dlt_pool_gen when the workers were started */
static int dlt_pool_pending = 0;     /* workers that have not finished the task */
static dlt_task_fn dlt_pool_fn = NULL;
static void* dlt_pool_arg = NULL;
static int dlt_pool_nparts = 0;
static int dlt_pool_size = 0;        /* threads, the caller included; 0: not started */
static int dlt_pool_atfork = 0;

static int dlt_spin_mode = 1, dlt_spins = DLT_SPINS;
static inline void dlt_cpu_relax(void)
{
    if (dlt_spin_mode == 2) { sched_yield(); return; }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void* dlt_pool_worker(void* p)
{
    int id = (int)(long)p, spins;
    long seen = dlt_pool_start_gen, g;
    for (;;) {
        spins = 0;
        while ((g = __atomic_load_n(&dlt_pool_gen, __ATOMIC_ACQUIRE)) == seen) {
            if (++spins < dlt_spins) {
                dlt_cpu_relax();
                continue;
            }
            pthread_mutex_lock(&dlt_pool_mu);
            while ((g = __atomic_load_n(&dlt_pool_gen, __ATOMIC_ACQUIRE)) == seen)
                pthread_cond_wait(&dlt_pool_work_cv, &dlt_pool_mu);
            pthread_mutex_unlock(&dlt_pool_mu);
            break;
        }
        seen = g;
        if (id < dlt_pool_nparts)
            dlt_pool_fn(dlt_pool_arg, id, dlt_pool_nparts);
        if (__atomic_sub_fetch(&dlt_pool_pending, 1, __ATOMIC_ACQ_REL) == 0) {
            pthread_mutex_lock(&dlt_pool_mu);
            pthread_cond_signal(&dlt_pool_done_cv);
            pthread_mutex_unlock(&dlt_pool_mu);
        }
    }
    return NULL;
}

/* In a child process after fork the workers are gone: start afresh on next use. */
static void dlt_pool_after_fork(void)
{
    pthread_mutex_init(&dlt_pool_mu, NULL);
    pthread_cond_init(&dlt_pool_work_cv, NULL);
    pthread_cond_init(&dlt_pool_done_cv, NULL);
    dlt_pool_pending = 0;
    dlt_pool_size = 0;
}

static int dlt_env_threads(const char* name)
{
    const char* s = getenv(name);
    return (s && *s) ? atoi(s) : 0;
}

static void dlt_pool_start(void)
{
    int n = dlt_env_threads("DLT_NUM_THREADS"), i;
    sigset_t all, old;
    if (n <= 0) n = dlt_env_threads("OMP_NUM_THREADS");
    if (getenv("DLT_SPIN_MODE")) dlt_spin_mode = atoi(getenv("DLT_SPIN_MODE"));
    if (getenv("DLT_SPINS")) dlt_spins = atoi(getenv("DLT_SPINS"));
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
    dlt_pool_size = i;  /* the workers that started, and the caller */
}

/* Threads dlt_parallel uses (the caller included), starting the pool if needed. */
static int dlt_threads(void)
{
    if (dlt_pool_size == 0) dlt_pool_start();
    return dlt_pool_size;
}

/* Run fn(arg, p, n) for p in 0..n-1, one part per thread, n = min(nparts, threads);
   returns when all parts are done. */
static void dlt_parallel(dlt_task_fn fn, void* arg, long nparts)
{
    int n = dlt_threads(), spins = 0;
    if (nparts < n) n = (int)nparts;
    if (n <= 1) {
        fn(arg, 0, 1);
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
    while (__atomic_load_n(&dlt_pool_pending, __ATOMIC_ACQUIRE) != 0) {
        if (++spins < dlt_spins) {
            dlt_cpu_relax();
            continue;
        }
        pthread_mutex_lock(&dlt_pool_mu);
        while (__atomic_load_n(&dlt_pool_pending, __ATOMIC_ACQUIRE) != 0)
            pthread_cond_wait(&dlt_pool_done_cv, &dlt_pool_mu);
        pthread_mutex_unlock(&dlt_pool_mu);
        break;
    }
}
#else
static int dlt_threads(void) { return 1; }
static void dlt_parallel(dlt_task_fn fn, void* arg, long nparts)
{
    (void)nparts;
    fn(arg, 0, 1);
}
#endif
#endif
"""
