// triad.h — a STREAM-like memory bandwidth measurement for the benchmarks (bench_triad,
// bench_engine): a[i] = b[i] + s·c[i] over float arrays that together hold at least four
// times the last-level cache, split over n threads, best of `reps` passes. Bytes counted as
// STREAM counts them: two arrays read and one written per pass (the write-allocate read that
// the hardware adds is not counted). Also a read-only pass (sum of one array), the access
// pattern of decode. A benchmark helper: it never fails on a time.
#ifndef LS_BENCH_TRIAD_H
#define LS_BENCH_TRIAD_H

#include "ls_base.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

typedef struct triad_arg {
    float *a, *b, *c; // [n] each, the thread's slice
    size_t n;
    bool read_only;
    double sum;    // of the read-only pass, so the compiler keeps it
    double cpu_s;  // CPU time the thread ran
} triad_arg;

static double triad_thread_cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static void *triad_slice(void *p) {
    triad_arg *t = p;
    double c0 = triad_thread_cpu_s();
    if (t->read_only) {
        const uint32_t *u = (const uint32_t *)t->b; // integer sums vectorize freely
        uint32_t s = 0;
        for (size_t i = 0; i < t->n; i++) s += u[i];
        t->sum = s;
    } else {
        for (size_t i = 0; i < t->n; i++) t->a[i] = t->b[i] + 3.0f * t->c[i];
    }
    t->cpu_s = triad_thread_cpu_s() - c0;
    return NULL;
}

// Elements per array: 4x the last-level cache over three arrays, at least 64 Mi floats.
static size_t triad_elems(void) {
    long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (llc <= 0) llc = sysconf(_SC_LEVEL2_CACHE_SIZE);
    size_t n = llc > 0 ? (size_t)llc * 4 / 3 / sizeof(float) : 0;
    return n < ((size_t)64 << 20) ? (size_t)64 << 20 : n;
}

// Best GB/s of `reps` passes with n_threads threads; *read_gbps: the read-only pass's;
// *running_gbps (may be NULL): the triad's bytes over the slowest thread's CPU time, the
// bandwidth while running, which other work on a shared machine inflates less.
static ls_status triad_measure(int n_threads, int reps, double *triad_gbps, double *read_gbps, double *running_gbps) {
    size_t n = triad_elems();
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    if (!a || !b || !c || n_threads < 1 || n_threads > 64) {
        free(a), free(b), free(c);
        return LS_ERR(LS_ERR_NOMEM, "triad: cannot allocate 3 x %.2f GB for %d threads", n * 4.0 / 1e9, n_threads);
    }
    for (size_t i = 0; i < n; i++) a[i] = 0.0f, b[i] = 1.0f, c[i] = 2.0f; // touch every page
    *triad_gbps = *read_gbps = 0.0;
    if (running_gbps) *running_gbps = 0.0;
    for (int r = 0; r < 2 * reps; r++) {
        bool ro = r % 2;
        pthread_t th[64];
        triad_arg args[64];
        size_t per = n / (size_t)n_threads;
        double t0 = ls_time_ms();
        for (int t = 0; t < n_threads; t++) {
            args[t] = (triad_arg){a + t * per, b + t * per, c + t * per, per, ro, 0.0, 0.0};
            pthread_create(&th[t], NULL, triad_slice, &args[t]);
        }
        for (int t = 0; t < n_threads; t++) pthread_join(th[t], NULL);
        double s = (ls_time_ms() - t0) / 1e3, bytes = (double)per * n_threads * sizeof(float) * (ro ? 1 : 3);
        double *best = ro ? read_gbps : triad_gbps, cpu = 0.0;
        if (bytes / s / 1e9 > *best) *best = bytes / s / 1e9;
        for (int t = 0; t < n_threads; t++) cpu = args[t].cpu_s > cpu ? args[t].cpu_s : cpu;
        if (!ro && running_gbps && cpu > 0 && bytes / cpu / 1e9 > *running_gbps) *running_gbps = bytes / cpu / 1e9;
    }
    free(a), free(b), free(c);
    return LS_OK;
}

#endif // LS_BENCH_TRIAD_H
