// matmul_x86.c — the matmul's row kernels for x86 CPUs, once with AVX2 (AMD EPYC and every
// x86 server since 2013) and once with AVX-512 and VNNI (Intel Xeon since Cascade Lake, AMD
// since Zen 4). Each function carries its instruction set in a target attribute, so one build
// holds both and matmul.c chooses at run time (cpu_isa_choose). The kernels decode one weight
// row in registers and use it for up to CPU_NX activation rows, so a decode step of a few
// sequences reads the weights once.
//   f32 activations: dot(d·q + m, x) = d·Σ q·x + m·Σ x, the Σ x of each block computed once
//     per call (bsum), so a block costs one multiply-add per 16 weights and one per scale.
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

// ============================================================================================
// AVX2
// ============================================================================================

// The 32 weights of a block as floats w[0..3] (8 each, in element order), with scale d and
// offset mn (Q4_1's minimum, Q4_0's -8·d, Q8_0's 0).
T_AVX2 INLINE void block_f32_avx2(ls_dtype t, const uint8_t *b, __m256 w[4], float *d, float *mn) {
    *d = half_at(b);
    if (t == LS_Q8_0) {
        for (int j = 0; j < 4; j++)
            w[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * j))));
        *mn = 0.0f;
        return;
    }
    const uint8_t *qs = b + (t == LS_Q4_1 ? 4 : 2);
    __m256i v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)qs));
    __m256i v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8))), mask = _mm256_set1_epi32(15);
    w[0] = _mm256_cvtepi32_ps(_mm256_and_si256(v0, mask));
    w[1] = _mm256_cvtepi32_ps(_mm256_and_si256(v1, mask));
    w[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4));
    w[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(v1, 4));
    *mn = t == LS_Q4_1 ? half_at(b + 2) : -8.0f * *d;
}

T_AVX2 INLINE void rows_f32_avx2(ls_dtype t, const uint8_t *row, int64_t k, const float *x, const float *bsum,
                                 const int nx, float *y, int64_t ldy) {
    __m256 acc[CPU_NX];
    float mins[CPU_NX];
    for (int i = 0; i < nx; i++) acc[i] = _mm256_setzero_ps(), mins[i] = 0.0f;
    int64_t nb = k / 32;
    size_t bytes = block_bytes(t);
    for (int64_t b = 0; b < nb; b++, row += bytes) {
        __m256 w[4];
        float d, mn;
        block_f32_avx2(t, row, w, &d, &mn);
        __m256 vd = _mm256_set1_ps(d);
        for (int i = 0; i < nx; i++) {
            const float *xi = x + i * k + 32 * b; // [32]
            __m256 s0 = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xi + 8), _mm256_mul_ps(w[0], _mm256_loadu_ps(xi)));
            __m256 s1 = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xi + 24), _mm256_mul_ps(w[2], _mm256_loadu_ps(xi + 16)));
            acc[i] = _mm256_fmadd_ps(vd, _mm256_add_ps(s0, s1), acc[i]);
            mins[i] += mn * bsum[i * nb + b];
        }
    }
    for (int i = 0; i < nx; i++) y[i * ldy] = hsum8(acc[i]) + mins[i];
}

T_AVX2 void cpu_rows_f32_avx2(ls_dtype t, const uint8_t *row, int64_t k, const float *x, const float *bsum, int nx,
                              float *y, int64_t ldy) {
    switch (nx) { // constant nx: the loop over activation rows unrolls, accumulators stay in registers
    case 1: rows_f32_avx2(t, row, k, x, bsum, 1, y, ldy); break;
    case 2: rows_f32_avx2(t, row, k, x, bsum, 2, y, ldy); break;
    case 3: rows_f32_avx2(t, row, k, x, bsum, 3, y, ldy); break;
    default: rows_f32_avx2(t, row, k, x, bsum, 4, y, ldy); break;
    }
}

// 32 nibbles as bytes in element order: the low ones (0..15), then the high ones (16..31).
T_AVX2 INLINE __m256i nibbles_avx2(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m256i b = _mm256_insertf128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0f));
}

// 8 int32 sums of u·s (unsigned bytes times signed bytes) as floats.
T_AVX2 INLINE __m256 dot_us_avx2(__m256i u, __m256i s) {
    __m256i p = _mm256_maddubs_epi16(u, s); // pairs: at most 2·255·128, within int16 for |u| <= 127 or u <= 15
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

T_AVX2 INLINE void rows_int8_avx2(ls_dtype t, const uint8_t *row, int64_t k, const cpu_q8 *xq, const int nx, float *y,
                                  int64_t ldy) {
    __m256 acc[CPU_NX];
    float mins[CPU_NX];
    for (int i = 0; i < nx; i++) acc[i] = _mm256_setzero_ps(), mins[i] = 0.0f;
    int64_t nb = k / 32;
    size_t bytes = block_bytes(t);
    for (int64_t b = 0; b < nb; b++, row += bytes) {
        float dw = half_at(row), mw = t == LS_Q4_1 ? half_at(row + 2) : 0.0f;
        // Q4_1: unsigned nibbles as they are; Q4_0 (nibble - 8) and Q8_0: signed, multiplied
        // as |w| times x with w's sign (llama.cpp's trick for maddubs).
        __m256i w = t == LS_Q8_0 ? _mm256_loadu_si256((const __m256i *)(row + 2))
                                 : nibbles_avx2(row + (t == LS_Q4_1 ? 4 : 2));
        if (t == LS_Q4_0) w = _mm256_sub_epi8(w, _mm256_set1_epi8(8));
        __m256i u = t == LS_Q4_1 ? w : _mm256_sign_epi8(w, w);
        for (int i = 0; i < nx; i++) {
            const cpu_q8 *xb = xq + i * nb + b;
            __m256i q = _mm256_loadu_si256((const __m256i *)xb->q);
            if (t != LS_Q4_1) q = _mm256_sign_epi8(q, w);
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), dot_us_avx2(u, q), acc[i]);
            mins[i] += mw * xb->s;
        }
    }
    for (int i = 0; i < nx; i++) y[i * ldy] = hsum8(acc[i]) + mins[i];
}

T_AVX2 void cpu_rows_int8_avx2(ls_dtype t, const uint8_t *row, int64_t k, const cpu_q8 *xq, int nx, float *y,
                               int64_t ldy) {
    switch (nx) {
    case 1: rows_int8_avx2(t, row, k, xq, 1, y, ldy); break;
    case 2: rows_int8_avx2(t, row, k, xq, 2, y, ldy); break;
    case 3: rows_int8_avx2(t, row, k, xq, 3, y, ldy); break;
    default: rows_int8_avx2(t, row, k, xq, 4, y, ldy); break;
    }
}

// ============================================================================================
// AVX-512 (F, BW, VL) with VNNI
// ============================================================================================

// The 32 weights of a block as floats w[0] (elements 0..15) and w[1] (16..31).
T_AVX512 INLINE void block_f32_avx512(ls_dtype t, const uint8_t *b, __m512 w[2], float *d, float *mn) {
    *d = half_at(b);
    if (t == LS_Q8_0) {
        w[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2))));
        w[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 18))));
        *mn = 0.0f;
        return;
    }
    __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + (t == LS_Q4_1 ? 4 : 2))));
    w[0] = _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15)));
    w[1] = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
    *mn = t == LS_Q4_1 ? half_at(b + 2) : -8.0f * *d;
}

T_AVX512 INLINE void rows_f32_avx512(ls_dtype t, const uint8_t *row, int64_t k, const float *x, const float *bsum,
                                     const int nx, float *y, int64_t ldy) {
    __m512 acc[CPU_NX];
    float mins[CPU_NX];
    for (int i = 0; i < nx; i++) acc[i] = _mm512_setzero_ps(), mins[i] = 0.0f;
    int64_t nb = k / 32;
    size_t bytes = block_bytes(t);
    for (int64_t b = 0; b < nb; b++, row += bytes) {
        __m512 w[2];
        float d, mn;
        block_f32_avx512(t, row, w, &d, &mn);
        __m512 vd = _mm512_set1_ps(d);
        for (int i = 0; i < nx; i++) {
            const float *xi = x + i * k + 32 * b; // [32]
            __m512 s = _mm512_fmadd_ps(w[1], _mm512_loadu_ps(xi + 16), _mm512_mul_ps(w[0], _mm512_loadu_ps(xi)));
            acc[i] = _mm512_fmadd_ps(vd, s, acc[i]);
            mins[i] += mn * bsum[i * nb + b];
        }
    }
    for (int i = 0; i < nx; i++) y[i * ldy] = _mm512_reduce_add_ps(acc[i]) + mins[i];
}

T_AVX512 void cpu_rows_f32_avx512(ls_dtype t, const uint8_t *row, int64_t k, const float *x, const float *bsum, int nx,
                                  float *y, int64_t ldy) {
    switch (nx) {
    case 1: rows_f32_avx512(t, row, k, x, bsum, 1, y, ldy); break;
    case 2: rows_f32_avx512(t, row, k, x, bsum, 2, y, ldy); break;
    case 3: rows_f32_avx512(t, row, k, x, bsum, 3, y, ldy); break;
    default: rows_f32_avx512(t, row, k, x, bsum, 4, y, ldy); break;
    }
}

T_AVX512 INLINE __m256i nibbles_avx512(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m256i b = _mm256_inserti32x4(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0f));
}

T_AVX512 INLINE void rows_int8_avx512(ls_dtype t, const uint8_t *row, int64_t k, const cpu_q8 *xq, const int nx,
                                      float *y, int64_t ldy) {
    __m256 acc[CPU_NX];
    float mins[CPU_NX];
    for (int i = 0; i < nx; i++) acc[i] = _mm256_setzero_ps(), mins[i] = 0.0f;
    int64_t nb = k / 32;
    size_t bytes = block_bytes(t);
    for (int64_t b = 0; b < nb; b++, row += bytes) {
        float dw = half_at(row), mw = t == LS_Q4_1 ? half_at(row + 2) : 0.0f;
        __m256i w = t == LS_Q8_0 ? _mm256_loadu_si256((const __m256i *)(row + 2))
                                 : nibbles_avx512(row + (t == LS_Q4_1 ? 4 : 2));
        if (t == LS_Q4_0) w = _mm256_sub_epi8(w, _mm256_set1_epi8(8));
        __m256i u = t == LS_Q4_1 ? w : _mm256_abs_epi8(w); // vpdpbusd: unsigned times signed
        for (int i = 0; i < nx; i++) {
            const cpu_q8 *xb = xq + i * nb + b;
            __m256i q = _mm256_loadu_si256((const __m256i *)xb->q);
            if (t != LS_Q4_1) q = _mm256_sign_epi8(q, w);
            __m256 s = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, q));
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), s, acc[i]);
            mins[i] += mw * xb->s;
        }
    }
    for (int i = 0; i < nx; i++) y[i * ldy] = hsum8(acc[i]) + mins[i];
}

T_AVX512 void cpu_rows_int8_avx512(ls_dtype t, const uint8_t *row, int64_t k, const cpu_q8 *xq, int nx, float *y,
                                   int64_t ldy) {
    switch (nx) {
    case 1: rows_int8_avx512(t, row, k, xq, 1, y, ldy); break;
    case 2: rows_int8_avx512(t, row, k, xq, 2, y, ldy); break;
    case 3: rows_int8_avx512(t, row, k, xq, 3, y, ldy); break;
    default: rows_int8_avx512(t, row, k, xq, 4, y, ldy); break;
    }
}
#endif
