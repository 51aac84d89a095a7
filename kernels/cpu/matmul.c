// matmul.c — y[m][n_out] = x[m][n_in] . W^T with W in its stored (quantized) type. Work is
// split over tiles of weight rows; each thread dequantizes its tile into its own f32 scratch
// (sized to stay in L2) and then either takes dot products (one token: decode) or hands the
// tile to OpenBLAS's sgemm (many tokens: prefill). The whole matrix is never expanded.
// With llama.cpp's activation precision (LS_ACT_LLAMACPP), decode of Q4_0/Q4_1/Q8_0 weights
// runs llama.cpp's own arithmetic instead: the token quantized once to 8-bit blocks, integer
// multiply-adds (AVX2 maddubs), one float scale per block.
// Twin: ls_ref_matmul (kernels/ref/ops_ref.c). Tests: tests/unit/test_kernels.c.
#include "cpu_impl.h"

#include "simd.h"

#include <cblas.h>

#define TILE_BYTES (256 * 1024) // f32 tile budget per thread (half of this machine's L2)

// One block of 32 activations quantized as ggml's q8_0 / q8_1: the scale d rounded through
// fp16 as ggml stores it, and s = d·Σq for Q4_1's minimum term. ggml rounds s to fp16 too; here
// it is the product of the rounded d and Σq, so the result equals ls_act_round's rounded
// activations times the weights exactly, up to summation order.
typedef struct q8_block {
    float d, s;
    int8_t q[32];
} q8_block;

typedef struct mm_job {
    const ls_weight *w;
    const q8_block *xq; // [n_in / 32] the token in 8-bit blocks (int8 decode), or NULL
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
        __m256 d = _mm256_set1_ps(simd_half_fast(row));
        __m256 m = has_min ? _mm256_set1_ps(simd_half_fast(row + 2)) : _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
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
        __m256 d = _mm256_set1_ps(simd_half_fast(row));
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

#if defined(__AVX2__)
// --- int8 decode (llama.cpp's arithmetic) ---------------------------------------------------
static void quantize_q8(const float *x, q8_block *y, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        y[b].d = cpu_q8_block(x, y[b].q);
        int sum = 0;
        for (int j = 0; j < 32; j++) sum += y[b].q[j];
        y[b].s = y[b].d * (float)sum;
    }
}

// 8 int32 sums of products of signed bytes a·b, in pairs of 4.
static inline __m256 dot_i8(__m256i a, __m256i b) {
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)); // |a|·(b·sign a)
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

// 32 nibbles: the low ones (elements 0..15) then the high ones (16..31), as ggml packs them.
static inline __m256i nibbles(const uint8_t *p) {
    __m128i t = _mm_loadu_si128((const __m128i *)p);
    __m256i b = _mm256_insertf128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0f));
}

// Σ over blocks of d_w·d_x·Σ(q_w·q_x) (+ m_w·s_x for Q4_1), as ggml_vec_dot_q4_1_q8_1 & co.
static float dot_int8(ls_dtype t, const uint8_t *row, const q8_block *x, int64_t blocks) {
    __m256 acc = _mm256_setzero_ps();
    float mins = 0.0f;
    for (int64_t b = 0; b < blocks; b++) {
        __m256i q8 = _mm256_loadu_si256((const __m256i *)x[b].q);
        float dw = simd_half_fast(row);
        if (t == LS_Q8_0) {
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[b].d), dot_i8(_mm256_loadu_si256((const __m256i *)(row + 2)), q8), acc);
            row += 34;
        } else if (t == LS_Q4_0) {
            __m256i q4 = _mm256_sub_epi8(nibbles(row + 2), _mm256_set1_epi8(8));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[b].d), dot_i8(q4, q8), acc);
            row += 18;
        } else { // Q4_1: unsigned nibbles times signed bytes, plus the block minimum
            __m256i p = _mm256_maddubs_epi16(nibbles(row + 4), q8);
            __m256 s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[b].d), s, acc);
            mins += simd_half_fast(row + 2) * x[b].s;
            row += 20;
        }
    }
    return simd_hsum(acc) + mins;
}
#endif

static inline bool int8_type(ls_dtype t) { return t == LS_Q4_0 || t == LS_Q4_1 || t == LS_Q8_0; }

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
#if defined(__AVX2__)
        if (j->xq) {
            for (int64_t r = r0; r < r1; r++, rows += w->row_bytes) j->y[r] = dot_int8(w->type, rows, j->xq, k / 32);
            return;
        }
#endif
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
    const q8_block *xq = NULL;
#if defined(__AVX2__)
    if (c->act == LS_ACT_LLAMACPP && m == 1 && int8_type(w->type)) { // llama.cpp's own decode arithmetic
        q8_block *q = (q8_block *)cpu_scratch_get(&c->shared, (size_t)(w->n_in / 32) * (sizeof(q8_block) / sizeof(float) + 1));
        quantize_q8(x, q, w->n_in);
        xq = q;
    } else
#endif
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
    mm_job j = {.w = w, .xq = xq, .x = x, .y = y, .m = m, .rows_per_task = rows, .c = c};
    ls_pool_run(c->pool, (w->n_out + rows - 1) / rows, mm_task, &j);
    return LS_OK;
}
