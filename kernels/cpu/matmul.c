// matmul.c — y[m][n_out] = x[m][n_in] . W^T with W in its stored (quantized) type. Work is
// split over tiles of weight rows; each thread dequantizes its tile into its own f32 scratch
// (sized to stay in L2) and then either takes dot products (one token: decode) or hands the
// tile to OpenBLAS's sgemm (many tokens: prefill). The whole matrix is never expanded.
// Twin: ls_ref_matmul (kernels/ref/ops_ref.c). Tests: tests/unit/test_kernels.c.
#include "cpu_impl.h"

#include "simd.h"

#include <cblas.h>

#define TILE_BYTES (256 * 1024) // f32 tile budget per thread (half of this machine's L2)

typedef struct mm_job {
    const ls_weight *w;
    const float *x; // [m][n_in]
    float *y;       // [m][n_out]
    int64_t m, rows_per_task;
    cpu_ctx *c;
} mm_job;

// --- fused dequantize-and-dot for one token (decode) -----------------------------------------
// dot(row, x) without writing the dequantized row: per block the weights are rebuilt in
// registers (d * q + m, as the dequantizer computes them) and multiplied into accumulators.
#if defined(__AVX2__)
static float dot_q4(const uint8_t *row, const float *x, int64_t k, bool has_min) {
    size_t bytes = has_min ? 20 : 18;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int64_t b = 0; b < k / 32; b++, row += bytes, x += 32) {
        __m256 d = _mm256_set1_ps(simd_half(row));
        __m256 m = has_min ? _mm256_set1_ps(simd_half(row + 2)) : _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
        __m256 w[4];
        simd_nibbles(row + (has_min ? 4 : 2), 0, w);
        acc0 = _mm256_fmadd_ps(_mm256_fmadd_ps(w[0], d, m), _mm256_loadu_ps(x), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_fmadd_ps(w[1], d, m), _mm256_loadu_ps(x + 8), acc1);
        acc0 = _mm256_fmadd_ps(_mm256_fmadd_ps(w[2], d, m), _mm256_loadu_ps(x + 16), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_fmadd_ps(w[3], d, m), _mm256_loadu_ps(x + 24), acc1);
    }
    return simd_hsum(_mm256_add_ps(acc0, acc1));
}

static float dot_q8_0(const uint8_t *row, const float *x, int64_t k) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int64_t b = 0; b < k / 32; b++, row += 34, x += 32) {
        __m256 d = _mm256_set1_ps(simd_half(row));
        const int8_t *q = (const int8_t *)(row + 2);
        for (int j = 0; j < 4; j += 2) {
            __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8 * j))));
            __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8 * j + 8))));
            acc0 = _mm256_fmadd_ps(_mm256_mul_ps(w0, d), _mm256_loadu_ps(x + 8 * j), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_mul_ps(w1, d), _mm256_loadu_ps(x + 8 * j + 8), acc1);
        }
    }
    return simd_hsum(_mm256_add_ps(acc0, acc1));
}
#endif

// dot(row r of w, x); `buf` [n_in] is scratch for the types without a fused kernel.
static float dot_row(const ls_weight *w, const uint8_t *row, const float *x, float *buf) {
#if defined(__AVX2__)
    if (w->type == LS_Q4_1) return dot_q4(row, x, w->n_in, true);
    if (w->type == LS_Q4_0) return dot_q4(row, x, w->n_in, false);
    if (w->type == LS_Q8_0) return dot_q8_0(row, x, w->n_in);
#endif
    ls_dequant_row(w->type, row, buf, w->n_in); // type and length were checked by ls_op_matmul
    return cpu_dot(buf, x, w->n_in);
}

static void mm_task(void *vj, int64_t task, int thread) {
    const mm_job *j = vj;
    const ls_weight *w = j->w;
    int64_t k = w->n_in, r0 = task * j->rows_per_task;
    int64_t r1 = r0 + j->rows_per_task < w->n_out ? r0 + j->rows_per_task : w->n_out;
    const uint8_t *rows = (const uint8_t *)w->data + (size_t)r0 * w->row_bytes;
    if (j->m == 1) { // decode: one row at a time
        float *buf = cpu_scratch_get(&j->c->thread_scratch[thread], (size_t)k);
        for (int64_t r = r0; r < r1; r++, rows += w->row_bytes) j->y[r] = dot_row(w, rows, j->x, buf);
        return;
    }
    float *tile = cpu_scratch_get(&j->c->thread_scratch[thread], (size_t)((r1 - r0) * k)); // [r1-r0][k]
    for (int64_t r = r0; r < r1; r++, rows += w->row_bytes) ls_dequant_row(w->type, rows, tile + (r - r0) * k, k);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->m, (int)(r1 - r0), (int)k, 1.0f, j->x,
                (int)k, tile, (int)k, 0.0f, j->y + r0, (int)w->n_out);
}

ls_status cpu_matmul(void *ctx, const ls_weight *w, const float *x, float *y, int64_t m) {
    cpu_ctx *c = ctx;
    if (c->act == LS_ACT_LLAMACPP && w->type != LS_F32) { // round a copy, as llama.cpp would
        float *xr = cpu_scratch_get(&c->shared, (size_t)(m * w->n_in));
        ls_act_round(w->type, x, xr, m, w->n_in);
        x = xr;
    }
    if (m > INT32_MAX || w->n_in > INT32_MAX || w->n_out > INT32_MAX)
        return LS_ERR(LS_ERR_RANGE, "matmul: %lld x %lld x %lld is beyond the BLAS interface", (long long)m,
                      (long long)w->n_in, (long long)w->n_out);
    int64_t rows = TILE_BYTES / (w->n_in * (int64_t)sizeof(float));
    if (rows < 8) rows = 8;
    // At least a few tasks per thread so the last ones balance; at most the tile budget.
    int64_t per_thread = (w->n_out + 4 * c->n_threads - 1) / (4 * c->n_threads);
    if (rows > per_thread) rows = per_thread > 0 ? per_thread : 1;
    mm_job j = {.w = w, .x = x, .y = y, .m = m, .rows_per_task = rows, .c = c};
    ls_pool_run(c->pool, (w->n_out + rows - 1) / rows, mm_task, &j);
    return LS_OK;
}
