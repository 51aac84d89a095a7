// matmul.c — y[m][n_out] = x[m][n_in] . W^T with W in its stored (quantized) type. Work is
// split over tiles of weight rows. Few tokens (m <= SMALL_M: decode, one or a few sequences):
// Q4_0/Q4_1/Q8_0 rows are decoded in registers by the row kernels of the instruction set the
// backend chose (matmul_x86.c: AVX-512/VNNI, AVX2) and each row serves all m tokens, so the
// weights are read from memory once per step; other types, and f32 activations on the plain
// (generic) path, dequantize one row at a time into L1 and dot it with each token; the plain
// path's int8 arithmetic is here. Rows are prefetched ahead. Many tokens (prefill):
// each thread dequantizes its tile into its own f32 scratch (sized to stay in L2) and hands it
// to OpenBLAS's sgemm. The whole matrix is never expanded.
// With llama.cpp's activation precision (LS_ACT_LLAMACPP), few tokens of Q4_0/Q4_1/Q8_0
// weights run llama.cpp's own arithmetic: the tokens quantized once to 8-bit blocks, integer
// multiply-adds, one float scale per block.
// Twin: ls_ref_matmul (kernels/ref/ops_ref.c). Tests: tests/unit/test_kernels.c.
#include "cpu_impl.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#define TILE_BYTES (256 * 1024) // f32 tile budget per thread (half of this machine's L2)
#define SMALL_M 16              // up to this many tokens: the weight-read-once row kernels
#define PREFETCH_BYTES 2048     // how far ahead of its row the few-token path asks the cache for weights

typedef struct mm_job {
    const ls_weight *w;
    const cpu_q8 *xq;   // [m][n_in / 32] the tokens in 8-bit blocks (int8 path), or NULL
    const float *x;     // [m][n_in]
    float *y;           // [m][n_out]
    int64_t m, rows_per_task;
    int nx_max; // tokens per row-kernel call
    cpu_rows_f32_fn rows_f32;
    cpu_rows_int8_fn rows_int8;
    cpu_ctx *c;
} mm_job;

// --- the generic int8 row kernel: plain C, for CPUs without AVX2 ------------------------------

static size_t block_bytes(ls_dtype t) { return t == LS_Q4_1 ? 20 : t == LS_Q4_0 ? 18 : 34; }

static void rows_int8_generic(ls_dtype t, const uint8_t *row, int64_t k, const cpu_q8 *xq, int nx, float *y,
                              int64_t ldy) {
    float acc[CPU_NX] = {0};
    int64_t nb = k / 32;
    for (int64_t b = 0; b < nb; b++, row += block_bytes(t)) {
        float dw = ls_fp16_to_f32((uint16_t)(row[0] | row[1] << 8));
        float mw = t == LS_Q4_1 ? ls_fp16_to_f32((uint16_t)(row[2] | row[3] << 8)) : 0.0f;
        const uint8_t *q = row + (t == LS_Q4_1 ? 4 : 2);
        int w[32];
        for (int j = 0; j < 32; j++)
            w[j] = t == LS_Q8_0 ? (int8_t)q[j] : (j < 16 ? q[j] & 15 : q[j - 16] >> 4) - (t == LS_Q4_0 ? 8 : 0);
        for (int i = 0; i < nx; i++) {
            const cpu_q8 *xb = xq + i * nb + b;
            int32_t s = 0;
            for (int j = 0; j < 32; j++) s += w[j] * xb->q[j];
            acc[i] += dw * xb->d * (float)s + mw * xb->s;
        }
    }
    for (int i = 0; i < nx; i++) y[i * ldy] = acc[i];
}

// --- instruction sets -----------------------------------------------------------------------

const char *cpu_isa_name(cpu_isa isa) { return isa == CPU_AVX512 ? "avx512" : isa == CPU_AVX2 ? "avx2" : "generic"; }

#if defined(__x86_64__)
// F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know "f16c".
static bool has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

static bool isa_runs(cpu_isa isa) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (isa == CPU_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
               has_f16c() && __builtin_cpu_supports("fma");
    if (isa == CPU_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
#endif
    return isa == CPU_GENERIC;
}

ls_status cpu_isa_choose(cpu_isa *out) {
    const char *want = getenv("LS_CPU_FEATURES");
    if (!want || !*want) {
        *out = isa_runs(CPU_AVX512) ? CPU_AVX512 : isa_runs(CPU_AVX2) ? CPU_AVX2 : CPU_GENERIC;
        return LS_OK;
    }
    for (cpu_isa isa = CPU_GENERIC; isa <= CPU_AVX512; isa++) {
        if (strcmp(want, cpu_isa_name(isa))) continue;
        if (!isa_runs(isa))
            return LS_ERR(LS_ERR_UNSUPPORTED, "LS_CPU_FEATURES=%s, but this CPU lacks instructions that path needs", want);
        *out = isa;
        return LS_OK;
    }
    return LS_ERR(LS_ERR_INVALID, "LS_CPU_FEATURES=%s: expected generic, avx2 or avx512", want);
}

// Without SIMD row kernels (generic), f32 activations take the path of the other types: one
// row dequantized into L1, then a dot product per token.
static void row_kernels(cpu_isa isa, mm_job *j) {
    j->rows_f32 = NULL, j->rows_int8 = rows_int8_generic, j->nx_max = CPU_NX_AVX2;
#if defined(__x86_64__)
    if (isa == CPU_AVX512) j->rows_f32 = cpu_rows_f32_avx512, j->rows_int8 = cpu_rows_int8_avx512, j->nx_max = CPU_NX;
    if (isa == CPU_AVX2) j->rows_f32 = cpu_rows_f32_avx2, j->rows_int8 = cpu_rows_int8_avx2;
#endif
}

// --- the job ----------------------------------------------------------------------------------

static inline bool fused_type(ls_dtype t) { return t == LS_Q4_0 || t == LS_Q4_1 || t == LS_Q8_0; }

// Few tokens: each weight row is read once and used for all m of them, nx_max at a time
// (the row stays in L1 between the groups).
static void small_task(const mm_job *j, int64_t r0, int64_t r1, int thread) {
    const ls_weight *w = j->w;
    int64_t k = w->n_in, nb = k / 32;
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r0 * w->row_bytes;
    const uint8_t *end = (const uint8_t *)w->data + (size_t)w->n_out * w->row_bytes;
    bool fused = fused_type(w->type) && (j->xq || j->rows_f32);
    float *buf = fused ? NULL : cpu_scratch_get(&j->c->thread_scratch[thread], (size_t)k); // [k]
    for (int64_t r = r0; r < r1; r++, row += w->row_bytes) {
        // Ask for the bytes PREFETCH_BYTES ahead (the hardware prefetchers alone left the
        // decode step waiting on memory: 24 -> 14 ms per step of the default model, one thread).
        for (const uint8_t *p = row + PREFETCH_BYTES; p < row + PREFETCH_BYTES + w->row_bytes && p < end; p += 64)
            __builtin_prefetch(p);
        if (buf) ls_dequant_row(w->type, row, buf, k); // type and length were checked by ls_op_matmul
        for (int64_t i = 0; i < j->m; i += j->nx_max) {
            int nx = j->m - i < j->nx_max ? (int)(j->m - i) : j->nx_max;
            float *y = j->y + i * w->n_out + r;
            if (j->xq) j->rows_int8(w->type, row, k, j->xq + i * nb, nx, y, w->n_out);
            else if (fused) j->rows_f32(w->type, row, k, j->x + i * k, nx, y, w->n_out);
            else
                for (int q = 0; q < nx; q++) y[q * w->n_out] = cpu_dot(buf, j->x + (i + q) * k, k);
        }
    }
}

static void mm_task(void *vj, int64_t task, int thread) {
    const mm_job *j = vj;
    const ls_weight *w = j->w;
    int64_t k = w->n_in, r0 = task * j->rows_per_task;
    int64_t r1 = r0 + j->rows_per_task < w->n_out ? r0 + j->rows_per_task : w->n_out;
    if (j->m <= SMALL_M) {
        small_task(j, r0, r1, thread);
        return;
    }
    const uint8_t *rows = (const uint8_t *)w->data + (size_t)r0 * w->row_bytes;
    float *tile = cpu_scratch_get(&j->c->thread_scratch[thread], (size_t)((r1 - r0) * k)); // [r1-r0][k]
    for (int64_t r = r0; r < r1; r++, rows += w->row_bytes) ls_dequant_row(w->type, rows, tile + (r - r0) * k, k);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->m, (int)(r1 - r0), (int)k, 1.0f, j->x,
                (int)k, tile, (int)k, 0.0f, j->y + r0, (int)w->n_out);
}

// The m tokens in 8-bit blocks (llama.cpp's q8_0/q8_1), in the shared scratch.
static const cpu_q8 *quantize_q8(cpu_ctx *c, const float *x, int64_t m, int64_t k) {
    int64_t nb = k / 32;
    cpu_q8 *q = (cpu_q8 *)cpu_scratch_get(&c->shared, (size_t)(m * nb) * (sizeof(cpu_q8) / sizeof(float) + 1));
    for (int64_t b = 0; b < m * nb; b++) {
        q[b].d = cpu_q8_block(x + 32 * b, q[b].q);
        int sum = 0;
        for (int j = 0; j < 32; j++) sum += q[b].q[j];
        q[b].s = q[b].d * (float)sum;
    }
    return q;
}

ls_status cpu_matmul(void *ctx, const ls_weight *w, const float *x, float *y, int64_t m) {
    cpu_ctx *c = ctx;
    if (m > INT32_MAX || w->n_in > INT32_MAX || w->n_out > INT32_MAX)
        return LS_ERR(LS_ERR_RANGE, "matmul: %lld x %lld x %lld is beyond the BLAS interface", (long long)m,
                      (long long)w->n_in, (long long)w->n_out);
    mm_job j = {.w = w, .x = x, .y = y, .m = m, .c = c};
    row_kernels(c->isa, &j);
    bool fused = m <= SMALL_M && fused_type(w->type);
    if (c->act == LS_ACT_LLAMACPP && fused) { // llama.cpp's own decode arithmetic
        j.xq = quantize_q8(c, x, m, w->n_in);
    } else if (c->act == LS_ACT_LLAMACPP && w->type != LS_F32) { // round a copy, as llama.cpp would
        float *xr = cpu_scratch_get(&c->shared, (size_t)(m * w->n_in));
        ls_act_round(w->type, x, xr, m, w->n_in);
        j.x = xr;
    }
    int64_t rows = TILE_BYTES / (w->n_in * (int64_t)sizeof(float));
    if (rows < 8) rows = 8;
    // At least a few tasks per thread so the last ones balance; at most the tile budget.
    int64_t per_thread = (w->n_out + 4 * c->n_threads - 1) / (4 * c->n_threads);
    if (rows > per_thread) rows = per_thread > 0 ? per_thread : 1;
    j.rows_per_task = rows;
    ls_pool_run(c->pool, (w->n_out + rows - 1) / rows, mm_task, &j);
    return LS_OK;
}
