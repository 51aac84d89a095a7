// pool.c — a small persistent thread pool for the CPU backend. The caller's thread works too;
// workers spin briefly on a generation counter after each job (so the hundreds of small
// dispatches of a decode step cost no sleep/wake latency) and then sleep on a condition
// variable. Tasks are handed out by an atomic counter. Threads can be pinned to cores.
// Tests: tests/unit/test_kernels.c (pool section), and every CPU op runs on it.
#include "cpu_impl.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

LS_PARAM(spin_us, "LS_SPIN_US", 2000) // how long idle workers spin before sleeping

struct ls_pool {
    int n_threads; // including the caller
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    atomic_uint generation; // bumped for every job
    atomic_int sleeping;
    atomic_int stop;
    // the current job
    ls_pool_fn fn;
    void *ctx;
    int64_t n_tasks;
    atomic_llong next;
    atomic_int done; // workers finished with the current job
};

typedef struct worker_arg {
    ls_pool_t *pool;
    int index;
} worker_arg;

static void work(ls_pool_t *p, int thread) {
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (t >= p->n_tasks) break;
        p->fn(p->ctx, t, thread);
    }
}

// Waits until the generation differs from `seen` (or stop); spins first, then sleeps.
static unsigned wait_job(ls_pool_t *p, unsigned seen) {
    double until = ls_time_ms() + (double)ls_param_spin_us() / 1000.0;
    for (int i = 0;; i++) {
        unsigned g = atomic_load(&p->generation);
        if (g != seen || atomic_load(&p->stop)) return g;
        if ((i & 255) == 255 && ls_time_ms() > until) break;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleeping, 1);
    unsigned g;
    while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->wake, &p->mu);
    atomic_fetch_sub(&p->sleeping, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *arg) {
    worker_arg wa = *(worker_arg *)arg;
    ls_free(arg);
    ls_pool_t *p = wa.pool;
    unsigned seen = 0; // the generation when the pool was made: no job can run before init returns
    for (;;) {
        seen = wait_job(p, seen);
        if (atomic_load(&p->stop)) break;
        work(p, wa.index);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
    return NULL;
}

static void pin(pthread_t t, int core) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core, &set);
    pthread_setaffinity_np(t, sizeof set, &set); // best effort: a refusal only costs speed
}

ls_status ls_pool_init(int n_threads, int first_cpu, ls_pool_t **out) {
    int n_cpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n_threads <= 0) n_threads = n_cpu > 0 ? n_cpu : 1;
    if (n_threads > 1024) return LS_ERR(LS_ERR_INVALID, "%d threads is too many", n_threads);
    ls_pool_t *p = ls_calloc(1, sizeof *p);
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->threads = ls_calloc((size_t)n_threads, sizeof *p->threads);
    bool do_pin = first_cpu >= 0 && first_cpu + n_threads <= n_cpu;
    if (do_pin) pin(pthread_self(), first_cpu);
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = ls_malloc(sizeof *wa);
        *wa = (worker_arg){p, i};
        int e = pthread_create(&p->threads[i], NULL, worker_main, wa);
        if (e) {
            ls_free(wa);
            p->n_threads = i; // the threads started so far are joined by free
            ls_pool_free(p);
            return LS_ERR(LS_ERR_NOMEM, "cannot start pool thread %d: error %d", i, e);
        }
        if (do_pin) pin(p->threads[i], first_cpu + i);
    }
    *out = p;
    return LS_OK;
}

void ls_pool_free(ls_pool_t *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    ls_free(p->threads);
    ls_free(p);
}

int ls_pool_threads(const ls_pool_t *p) { return p->n_threads; }

void ls_pool_run(ls_pool_t *p, int64_t n_tasks, ls_pool_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (p->n_threads == 1 || n_tasks == 1) { // not worth waking anyone
        for (int64_t t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1); // publishes the job (seq_cst)
    if (atomic_load(&p->sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    work(p, 0);
    while (atomic_load_explicit(&p->done, memory_order_acquire) < p->n_threads - 1) cpu_relax();
}
