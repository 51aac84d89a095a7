// cpu_impl.h — private to kernels/cpu: the thread pool, the CPU backend's context with its
// per-thread scratch, the SIMD helpers, and the op entry points backend_cpu.c wires into the
// interface table. Tests: tests/unit/test_kernels.c.
#ifndef LS_CPU_IMPL_H
#define LS_CPU_IMPL_H

#include "../backend_impl.h"

// --- thread pool ----------------------------------------------------------------------------
typedef struct ls_pool ls_pool_t;
typedef void (*ls_pool_fn)(void *ctx, int64_t task, int thread);
// n_threads counts the caller, which works too; <= 0 means one per online CPU. first_cpu >= 0:
// thread i is bound to CPU first_cpu + i when the CPUs exist.
ls_status ls_pool_init(int n_threads, int first_cpu, ls_pool_t **out);
void ls_pool_free(ls_pool_t *p);
int ls_pool_threads(const ls_pool_t *p);
// Runs fn(ctx, task, thread) for task in [0, n_tasks) across the pool and returns when all
// are done. Not reentrant: fn must not call ls_pool_run.
void ls_pool_run(ls_pool_t *p, int64_t n_tasks, ls_pool_fn fn, void *ctx);

// --- the CPU backend ------------------------------------------------------------------------
typedef struct cpu_scratch {
    float *data;
    size_t cap; // floats
} cpu_scratch;

typedef struct cpu_ctx {
    ls_pool_t *pool;
    int n_threads;
    cpu_scratch *thread_scratch; // [n_threads]: tiles, score blocks
    cpu_scratch shared;          // partial results the caller thread sizes before a job
    ls_act_precision act;        // matmul activation precision
} cpu_ctx;

// A buffer of at least n floats, grown only when needed (no allocation in steady state).
float *cpu_scratch_get(cpu_scratch *s, size_t n);

ls_status cpu_matmul(void *ctx, const ls_weight *w, const float *x, float *y, int64_t m);
ls_status cpu_get_rows(void *ctx, const ls_weight *w, const int32_t *ids, int64_t m, float *out);
ls_status cpu_rmsnorm(void *ctx, const float *x, const float *w, float *y, int64_t m, int64_t n, float eps);
ls_status cpu_swiglu(void *ctx, const float *gate, const float *up, float *out, int64_t n);
ls_status cpu_add(void *ctx, float *y, const float *x, int64_t n);
// One block of 32 activations as ggml's q8_0/q8_1 quantize it (act_round.c): q = round-half-
// even(x·127/amax); returns the scale amax/127 rounded through fp16.
float cpu_q8_block(const float *x, int8_t q[32]);
ls_status cpu_rope(void *ctx, float *x, int64_t m, int n_heads, int head_dim, const int64_t *pos,
                   const ls_rope_freqs *f);
ls_status cpu_attention(void *ctx, const ls_attn_args *a);
ls_status cpu_attn_merge(void *ctx, float *o1, float *lse1, const float *o2, const float *lse2,
                         int64_t n, int d);

// --- SIMD helpers ---------------------------------------------------------------------------
// dot(a, b) over n floats with FMA (AVX2 when built for it).
float cpu_dot(const float *a, const float *b, int64_t n);
// y[i] += alpha * x[i]
void cpu_axpy(float *y, float alpha, const float *x, int64_t n);
// y[i] *= alpha
void cpu_scale(float *y, float alpha, int64_t n);

#endif // LS_CPU_IMPL_H
