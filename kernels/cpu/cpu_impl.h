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

// --- instruction sets and row kernels (matmul.c, matmul_x86.c) -------------------------------
// The matmul's hot loops exist once per instruction set; ls_backend_cpu_init picks one from
// the CPU's features at run time, or the one LS_CPU_FEATURES names (docs/architecture.md).
typedef enum cpu_isa { CPU_GENERIC, CPU_AVX2, CPU_AVX512 } cpu_isa;
const char *cpu_isa_name(cpu_isa isa);
// LS_CPU_FEATURES (generic|avx2|avx512) or, unset, the best this CPU runs; an error when the
// variable names a set this CPU lacks, or none of those.
ls_status cpu_isa_choose(cpu_isa *out);

// One block of 32 activations quantized as ggml's q8_0 / q8_1: the scale d rounded through
// fp16 as ggml stores it, s = d·Σq for the minimum term of Q4_1 (and Q4_0's -8).
typedef struct cpu_q8 {
    float d, s;
    int8_t q[32];
} cpu_q8;

// Activation rows one row-kernel call handles (one weight row decoded, used nx times): at most
// CPU_NX with AVX-512's 32 registers, CPU_NX_AVX2 with AVX2's 16 and in plain C.
#define CPU_NX 8
#define CPU_NX_AVX2 4
// y[i·ldy] = dot(weight row, row i of x) for i < nx, weights of type Q4_0, Q4_1 or
// Q8_0, k elements per row. f32: x [nx][k].
// int8 (llama.cpp's arithmetic): xq [nx][k/32] the rows quantized by blocks.
typedef void (*cpu_rows_f32_fn)(ls_dtype t, const uint8_t *row, int64_t k, const float *x, int nx, float *y,
                                int64_t ldy);
typedef void (*cpu_rows_int8_fn)(ls_dtype t, const uint8_t *row, int64_t k, const cpu_q8 *xq, int nx, float *y,
                                 int64_t ldy);
#if defined(__x86_64__)
void cpu_rows_f32_avx2(ls_dtype t, const uint8_t *row, int64_t k, const float *x, int nx, float *y, int64_t ldy);
void cpu_rows_int8_avx2(ls_dtype t, const uint8_t *row, int64_t k, const cpu_q8 *xq, int nx, float *y, int64_t ldy);
void cpu_rows_f32_avx512(ls_dtype t, const uint8_t *row, int64_t k, const float *x, int nx, float *y, int64_t ldy);
void cpu_rows_int8_avx512(ls_dtype t, const uint8_t *row, int64_t k, const cpu_q8 *xq, int nx, float *y,
                          int64_t ldy);
#endif

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
    cpu_isa isa;                 // which row kernels the matmul runs
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
