// matmul_x86.c — the matmul's row kernels for x86 CPUs, once with AVX2 (AMD EPYC and every
// x86 server since 2013) and once with AVX-512 and VNNI (Intel Xeon since Cascade Lake, AMD
// since Zen 4). Each function carries its instruction set in a target attribute, so one build
// holds both and matmul.c chooses at run time (cpu_isa_choose). The kernels decode one weight
// row in registers and use it for up to CPU_NX activation rows, so a decode step of a few
// sequences reads the weights once.
//   f32 activations: each block's weights dequantized in registers (d·q + m, one multiply-add
//     per vector), then one multiply-add per vector and token.
//   int8 (llama.cpp's arithmetic): integer products of the weights' and the token's 8-bit
//     blocks (maddubs on AVX2, vpdpbusd on VNNI), one float scale per block.
// The plain twin is matmul.c's generic path; all three are compared with ls_ref_matmul in
// tests/unit/test_kernels.c, each forced through LS_CPU_FEATURES.
#include "cpu_impl.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define T_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define INLINE static inline __attribute__((always_inline))

__attribute__((target("f16c"))) INLINE float half_at(const uint8_t *p) { // an fp16 scale
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

T_AVX2 INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Block layouts (ggml's): Q4_0 {d, qs[16]}, Q4_1 {d, m, qs[16]}, Q8_0 {d, qs[32]}; the low
// nibble of qs[j] is element j, the high one element j + 16.
static inline size_t block_bytes(ls_dtype t) { return t == LS_Q4_1 ? 20 : t == LS_Q4_0 ? 18 : 34; }

// Each kernel body is instantiated for every (type, nx) pair, so the type tests and the loops
// over tokens vanish at compile time and the accumulators stay in registers.
#define ROWS_NX4(inner, T, nx, ...)                                                            \
    switch (nx) {                                                                              \
    case 1: inner(T, 1, __VA_ARGS__); break;                                                   \
    case 2: inner(T, 2, __VA_ARGS__); break;                                                   \
    case 3: inner(T, 3, __VA_ARGS__); break;                                                   \
    default: inner(T, 4, __VA_ARGS__); break;                                                  \
    }
#define ROWS_NX8(inner, T, nx, ...)                                                            \
    switch (nx) {                                                                              \
    case 1: inner(T, 1, __VA_ARGS__); break;                                                   \
    case 2: inner(T, 2, __VA_ARGS__); break;                                                   \
    case 3: inner(T, 3, __VA_ARGS__); break;                                                   \
    case 4: inner(T, 4, __VA_ARGS__); break;                                                   \
    case 5: inner(T, 5, __VA_ARGS__); break;                                                   \
    case 6: inner(T, 6, __VA_ARGS__); break;                                                   \
    case 7: inner(T, 7, __VA_ARGS__); break;                                                   \
    default: inner(T, 8, __VA_ARGS__); break;                                                  \
    }
#define ROWS_DISPATCH(NX, inner, t, nx, ...)                                                   \
    do {                                                                                       \
        if ((t) == LS_Q4_1) NX(inner, LS_Q4_1, nx, __VA_ARGS__)                                 \
        else if ((t) == LS_Q4_0) NX(inner, LS_Q4_0, nx, __VA_ARGS__)                            \
        else NX(inner, LS_Q8_0, nx, __VA_ARGS__)                                                \
    } while (0)

// ============================================================================================
// AVX2
// ============================================================================================

// The 32 weights of a block as floats w[0..3] (8 each, in element order), dequantized in
// registers: d·q + m (Q4_1's minimum m, Q4_0's -8·d) with one rounding, or d·q (Q8_0).
T_AVX2 INLINE void block_f32_avx2(const ls_dtype t, const uint8_t *b, __m256 w[4]) {
    __m256 d = _mm256_set1_ps(half_at(b));
    if (t == LS_Q8_0) {
        for (int j = 0; j < 4; j++)
            w[j] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * j)))));
        return;
    }
    const uint8_t *qs = b + (t == LS_Q4_1 ? 4 : 2);
    __m256 m = t == LS_Q4_1 ? _mm256_set1_ps(half_at(b + 2)) : _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
    __m256i v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)qs));
    __m256i v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8))), mask = _mm256_set1_epi32(15);
    w[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v0, mask)), d, m);
    w[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v1, mask)), d, m);
    w[2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4)), d, m);
    w[3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v1, 4)), d, m);
}

// Four accumulators per token for one or two tokens (one chain of multiply-adds would be bound
// by their latency), two for three or four (AVX2 has 16 registers).
T_AVX2 INLINE void rows_f32_avx2(const ls_dtype t, const int nx, const uint8_t *row, int64_t k, const float *x,
                                 float *y, int64_t ldy) {
    const int na = nx <= 2 ? 4 : 2;
    __m256 acc[CPU_NX_AVX2][4];
    for (int i = 0; i < nx; i++)
        for (int a = 0; a < na; a++) acc[i][a] = _mm256_setzero_ps();
    size_t bytes = block_bytes(t);
    for (int64_t b = 0; b < k / 32; b++, row += bytes) {
        __m256 w[4];
        block_f32_avx2(t, row, w);
        for (int i = 0; i < nx; i++)
            for (int j = 0; j < 4; j++)
                acc[i][j % na] = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(x + i * k + 32 * b + 8 * j), acc[i][j % na]);
    }
    for (int i = 0; i < nx; i++) {
        for (int a = 1; a < na; a++) acc[i][0] = _mm256_add_ps(acc[i][0], acc[i][a]);
        y[i * ldy] = hsum8(acc[i][0]);
    }
}

T_AVX2 void cpu_rows_f32_avx2(ls_dtype t, const uint8_t *row, int64_t k, const float *x, int nx, float *y,
                              int64_t ldy) {
    ROWS_DISPATCH(ROWS_NX4, rows_f32_avx2, t, nx, row, k, x, y, ldy);
}

// 32 nibbles as bytes in element order: the low ones (0..15), then the high ones (16..31).
T_AVX2 INLINE __m256i nibbles_avx2(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m256i b = _mm256_insertf128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0f));
}

// 8 int32 sums of u·s (unsigned bytes times signed bytes) as floats.
T_AVX2 INLINE __m256 dot_us_avx2(__m256i u, __m256i s) {
    __m256i p = _mm256_maddubs_epi16(u, s); // pairs: at most 2·127·128, within int16 (|w| <= 127)
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

// One weight block b against nx tokens' blocks: acc[i] += d_w·d_x·Σ q_w·q_x, mins[i] += m_w·s_x.
T_AVX2 INLINE void block_int8_avx2(const ls_dtype t, const int nx, const uint8_t *blk, const cpu_q8 *xq, int64_t nb,
                                   int64_t b, __m256 *acc, float *mins) {
    float dw = half_at(blk), mw = t == LS_Q4_1 ? half_at(blk + 2) : 0.0f;
    // Q4_1: unsigned nibbles as they are; Q4_0 (nibble - 8) and Q8_0: signed, multiplied as
    // |w| times x with w's sign (llama.cpp's trick for maddubs).
    __m256i w = t == LS_Q8_0 ? _mm256_loadu_si256((const __m256i *)(blk + 2)) : nibbles_avx2(blk + (t == LS_Q4_1 ? 4 : 2));
    if (t == LS_Q4_0) w = _mm256_sub_epi8(w, _mm256_set1_epi8(8));
    __m256i u = t == LS_Q4_1 ? w : _mm256_sign_epi8(w, w);
    for (int i = 0; i < nx; i++) {
        const cpu_q8 *xb = xq + i * nb + b;
        __m256i q = _mm256_loadu_si256((const __m256i *)xb->q);
        if (t != LS_Q4_1) q = _mm256_sign_epi8(q, w);
        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), dot_us_avx2(u, q), acc[i]);
        if (t == LS_Q4_1) mins[i] += mw * xb->s;
    }
}

// Two blocks in flight (two accumulator sets), so the multiply-add latency does not bound one token.
T_AVX2 INLINE void rows_int8_avx2(const ls_dtype t, const int nx, const uint8_t *row, int64_t k, const cpu_q8 *xq,
                                  float *y, int64_t ldy) {
    __m256 a0[CPU_NX_AVX2], a1[CPU_NX_AVX2];
    float m0[CPU_NX_AVX2], m1[CPU_NX_AVX2];
    for (int i = 0; i < nx; i++) a0[i] = a1[i] = _mm256_setzero_ps(), m0[i] = m1[i] = 0.0f;
    int64_t nb = k / 32, b = 0;
    size_t bytes = block_bytes(t);
    for (; b + 2 <= nb; b += 2) {
        block_int8_avx2(t, nx, row + b * bytes, xq, nb, b, a0, m0);
        block_int8_avx2(t, nx, row + (b + 1) * bytes, xq, nb, b + 1, a1, m1);
    }
    if (b < nb) block_int8_avx2(t, nx, row + b * bytes, xq, nb, b, a0, m0);
    for (int i = 0; i < nx; i++) y[i * ldy] = hsum8(_mm256_add_ps(a0[i], a1[i])) + (m0[i] + m1[i]);
}

T_AVX2 void cpu_rows_int8_avx2(ls_dtype t, const uint8_t *row, int64_t k, const cpu_q8 *xq, int nx, float *y,
                               int64_t ldy) {
    ROWS_DISPATCH(ROWS_NX4, rows_int8_avx2, t, nx, row, k, xq, y, ldy);
}

// ============================================================================================
// AVX-512 (F, BW, VL) with VNNI
// ============================================================================================

// The 32 weights of a block as floats w[0] (elements 0..15) and w[1] (16..31), as above.
T_AVX512 INLINE void block_f32_avx512(const ls_dtype t, const uint8_t *b, __m512 w[2]) {
    __m512 d = _mm512_set1_ps(half_at(b));
    if (t == LS_Q8_0) {
        w[0] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2)))));
        w[1] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 18)))));
        return;
    }
    __m512 m = t == LS_Q4_1 ? _mm512_set1_ps(half_at(b + 2)) : _mm512_mul_ps(d, _mm512_set1_ps(-8.0f));
    __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + (t == LS_Q4_1 ? 4 : 2))));
    w[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15))), d, m);
    w[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4)), d, m);
}

// One block against nx tokens: two accumulators per token (acc[2·i], acc[2·i + 1]).
T_AVX512 INLINE void block_rows_f32_avx512(const ls_dtype t, const int nx, const uint8_t *blk, const float *x, int64_t k,
                                           __m512 *acc) {
    __m512 w[2];
    block_f32_avx512(t, blk, w);
    for (int i = 0; i < nx; i++) {
        acc[2 * i] = _mm512_fmadd_ps(w[0], _mm512_loadu_ps(x + i * k), acc[2 * i]);
        acc[2 * i + 1] = _mm512_fmadd_ps(w[1], _mm512_loadu_ps(x + i * k + 16), acc[2 * i + 1]);
    }
}

// One token: two blocks in flight (two accumulator sets), so it is not bound by multiply-add
// latency; more tokens have chains enough (and need the registers).
T_AVX512 INLINE void rows_f32_avx512(const ls_dtype t, const int nx, const uint8_t *row, int64_t k, const float *x,
                                     float *y, int64_t ldy) {
    __m512 a0[2 * CPU_NX], a1[2];
    for (int i = 0; i < 2 * nx; i++) a0[i] = _mm512_setzero_ps();
    a1[0] = a1[1] = _mm512_setzero_ps();
    int64_t nb = k / 32, b = 0;
    size_t bytes = block_bytes(t);
    for (; nx == 1 && b + 2 <= nb; b += 2) {
        block_rows_f32_avx512(t, nx, row + b * bytes, x + 32 * b, k, a0);
        block_rows_f32_avx512(t, nx, row + (b + 1) * bytes, x + 32 * b + 32, k, a1);
    }
    for (; b < nb; b++) block_rows_f32_avx512(t, nx, row + b * bytes, x + 32 * b, k, a0);
    a0[0] = _mm512_add_ps(a0[0], a1[0]), a0[1] = _mm512_add_ps(a0[1], a1[1]);
    for (int i = 0; i < nx; i++) y[i * ldy] = _mm512_reduce_add_ps(_mm512_add_ps(a0[2 * i], a0[2 * i + 1]));
}

T_AVX512 void cpu_rows_f32_avx512(ls_dtype t, const uint8_t *row, int64_t k, const float *x, int nx, float *y,
                                  int64_t ldy) {
    ROWS_DISPATCH(ROWS_NX8, rows_f32_avx512, t, nx, row, k, x, y, ldy);
}

T_AVX512 INLINE __m256i nibbles_avx512(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m256i b = _mm256_inserti32x4(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0f));
}

// As block_int8_avx2, with VNNI's vpdpbusd (unsigned times signed bytes, summed in fours).
T_AVX512 INLINE void block_int8_avx512(const ls_dtype t, const int nx, const uint8_t *blk, const cpu_q8 *xq,
                                       int64_t nb, int64_t b, __m256 *acc, float *mins) {
    float dw = half_at(blk), mw = t == LS_Q4_1 ? half_at(blk + 2) : 0.0f;
    __m256i w = t == LS_Q8_0 ? _mm256_loadu_si256((const __m256i *)(blk + 2)) : nibbles_avx512(blk + (t == LS_Q4_1 ? 4 : 2));
    if (t == LS_Q4_0) w = _mm256_sub_epi8(w, _mm256_set1_epi8(8));
    __m256i u = t == LS_Q4_1 ? w : _mm256_abs_epi8(w);
    for (int i = 0; i < nx; i++) {
        const cpu_q8 *xb = xq + i * nb + b;
        __m256i q = _mm256_loadu_si256((const __m256i *)xb->q);
        if (t != LS_Q4_1) q = _mm256_sign_epi8(q, w);
        __m256 s = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, q));
        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), s, acc[i]);
        if (t == LS_Q4_1) mins[i] += mw * xb->s;
    }
}

// As rows_f32_avx512: a second block in flight for one token only.
T_AVX512 INLINE void rows_int8_avx512(const ls_dtype t, const int nx, const uint8_t *row, int64_t k, const cpu_q8 *xq,
                                      float *y, int64_t ldy) {
    __m256 a0[CPU_NX], a1[1] = {_mm256_setzero_ps()};
    float m0[CPU_NX], m1[1] = {0.0f};
    for (int i = 0; i < nx; i++) a0[i] = _mm256_setzero_ps(), m0[i] = 0.0f;
    int64_t nb = k / 32, b = 0;
    size_t bytes = block_bytes(t);
    for (; nx == 1 && b + 2 <= nb; b += 2) {
        block_int8_avx512(t, nx, row + b * bytes, xq, nb, b, a0, m0);
        block_int8_avx512(t, nx, row + (b + 1) * bytes, xq, nb, b + 1, a1, m1);
    }
    for (; b < nb; b++) block_int8_avx512(t, nx, row + b * bytes, xq, nb, b, a0, m0);
    a0[0] = _mm256_add_ps(a0[0], a1[0]), m0[0] += m1[0];
    for (int i = 0; i < nx; i++) y[i * ldy] = hsum8(a0[i]) + m0[i];
}

T_AVX512 void cpu_rows_int8_avx512(ls_dtype t, const uint8_t *row, int64_t k, const cpu_q8 *xq, int nx, float *y,
                                   int64_t ldy) {
    ROWS_DISPATCH(ROWS_NX8, rows_int8_avx512, t, nx, row, k, xq, y, ldy);
}
#endif
