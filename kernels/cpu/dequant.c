// dequant.c — CPU dequantization of whole rows, block by block, plus the fp16/bf16
// conversions. Loops are written so the compiler vectorizes them; the f32 operations are
// the same, in the same order, as ggml's dequantize_row_* (the build keeps -ffp-contract=off
// for this file so no FMA changes a rounding). Twin: kernels/ref/dequant_ref.c.
// Tests: tests/unit/test_kernels.c, tests/oracle/test_dequant.py.
#include "simd.h"

#include <string.h>
#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

// --- half precision -----------------------------------------------------------------------

float ls_fp16_to_f32(uint16_t h) {
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    // Shift the half's exponent and mantissa into float position and rescale by 2^112;
    // subnormal halves become normal floats exactly, and Inf/NaN get the float exponent.
    union { uint32_t u; float f; } v, scale = {.u = 0x77800000u}; // 2^112
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, em = h & 0x7fffu;
    if (em >= 0x7c00u) {
        v.u = sign | 0x7f800000u | (uint32_t)(em & 0x3ff) << 13;
        return v.f;
    }
    v.u = em << 13;
    v.f *= scale.f;
    v.u |= sign;
    return v.f;
#endif
}

uint16_t ls_f32_to_fp16(float f) { // portable everywhere (not hot), so tests cover it
    union { float f; uint32_t u; } v = {.f = f};
    uint32_t sign = (v.u >> 16) & 0x8000u, a = v.u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);        // NaN
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);       // overflow -> Inf
    if (a < 0x38800000u) {                                          // subnormal or zero
        union { uint32_t u; float f; } m = {.u = a};
        m.f += 0.5f; // aligns the half subnormal bits at the bottom, rounding to nearest even
        return (uint16_t)(sign | (m.u - 0x3f000000u));
    }
    uint32_t r = a + 0xc8000fffu + ((a >> 13) & 1); // rebias and round to nearest even
    return (uint16_t)(sign | (r >> 13));
}

uint16_t ls_f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = {.f = f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 64); // quiet NaN
    return (uint16_t)((v.u + (0x7fffu + ((v.u >> 16) & 1))) >> 16);
}

// --- block dequantizers -------------------------------------------------------------------



static inline void deq_q8_0(const uint8_t *b, float *y) { // {d, qs[32]}
    float d = simd_half(b);
    const int8_t *qs = (const int8_t *)(b + 2);
#if defined(__AVX2__)
    __m256 vd = _mm256_set1_ps(d);
    for (int k = 0; k < 4; k++) {
        __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8 * k))));
        _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(q, vd)); // same single rounding as q * d
    }
#else
    for (int j = 0; j < 32; j++) y[j] = (float)qs[j] * d;
#endif
}

static inline void deq_q4_0(const uint8_t *b, float *y) { // {d, qs[16]}
    float d = simd_half(b);
    const uint8_t *qs = b + 2;
#if defined(__AVX2__)
    __m256 q[4], vd = _mm256_set1_ps(d);
    simd_nibbles(qs, 8, q);
    for (int k = 0; k < 4; k++) _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(vd, q[k]));
#else
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((qs[j] & 15) - 8);
        y[j + 16] = d * (float)((qs[j] >> 4) - 8);
    }
#endif
}

static inline void deq_q4_1(const uint8_t *b, float *y) { // {d, m, qs[16]}
    float d = simd_half(b), m = simd_half(b + 2);
    const uint8_t *qs = b + 4;
#if defined(__AVX2__)
    __m256 q[4], vd = _mm256_set1_ps(d), vm = _mm256_set1_ps(m);
    simd_nibbles(qs, 0, q);
    for (int k = 0; k < 4; k++) _mm256_storeu_ps(y + 8 * k, _mm256_add_ps(_mm256_mul_ps(vd, q[k]), vm)); // no FMA
#else
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)(qs[j] & 15) + m;
        y[j + 16] = d * (float)(qs[j] >> 4) + m;
    }
#endif
}

static inline void deq_q5_0(const uint8_t *b, float *y) { // {d, qh[4], qs[16]}
    float d = simd_half(b);
    uint32_t h;
    memcpy(&h, b + 2, 4);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 15) | (int)((h >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
        y[j] = d * (float)(lo - 16);
        y[j + 16] = d * (float)(hi - 16);
    }
}

static inline void deq_q5_1(const uint8_t *b, float *y) { // {d, m, qh[4], qs[16]}
    float d = simd_half(b), m = simd_half(b + 2);
    uint32_t h;
    memcpy(&h, b + 4, 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 15) | (int)((h >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
        y[j] = d * (float)lo + m;
        y[j + 16] = d * (float)hi + m;
    }
}

// The 8 (scale, min) pairs of a Q4_K/Q5_K block, unpacked from 12 bytes of 6-bit fields.
static void unpack_scales_k4(const uint8_t *s, uint8_t sc[8], uint8_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (uint8_t)((s[j + 8] & 15) | ((s[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
}

static inline void deq_q4_k(const uint8_t *b, float *y) { // {d, dmin, scales[12], qs[128]}
    float d = simd_half(b), dmin = simd_half(b + 2);
    uint8_t sc[8], mn[8];
    unpack_scales_k4(b + 4, sc, mn);
    const uint8_t *q = b + 16;
    for (int c = 0; c < 4; c++, q += 32, y += 64) {
        float d1 = d * (float)sc[2 * c], m1 = dmin * (float)mn[2 * c];
        float d2 = d * (float)sc[2 * c + 1], m2 = dmin * (float)mn[2 * c + 1];
        for (int l = 0; l < 32; l++) {
            y[l] = d1 * (float)(q[l] & 15) - m1;
            y[l + 32] = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static inline void deq_q5_k(const uint8_t *b, float *y) { // {d, dmin, scales[12], qh[32], qs[128]}
    float d = simd_half(b), dmin = simd_half(b + 2);
    uint8_t sc[8], mn[8];
    unpack_scales_k4(b + 4, sc, mn);
    const uint8_t *qh = b + 16, *q = b + 48;
    for (int c = 0; c < 4; c++, q += 32, y += 64) {
        float d1 = d * (float)sc[2 * c], m1 = dmin * (float)mn[2 * c];
        float d2 = d * (float)sc[2 * c + 1], m2 = dmin * (float)mn[2 * c + 1];
        for (int l = 0; l < 32; l++) {
            int lo = (q[l] & 15) + 16 * ((qh[l] >> (2 * c)) & 1);
            int hi = (q[l] >> 4) + 16 * ((qh[l] >> (2 * c + 1)) & 1);
            y[l] = d1 * (float)lo - m1;
            y[l + 32] = d2 * (float)hi - m2;
        }
    }
}

static inline void deq_q6_k(const uint8_t *b, float *y) { // {ql[128], qh[64], scales[16], d}
    float d = simd_half(b + 208);
    for (int h = 0; h < 2; h++, y += 128) {
        const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
        const int8_t *s = (const int8_t *)(b + 192 + 8 * h);
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32;
            int q2 = ((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32;
            int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
            int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
            y[l] = d * (float)s[is] * (float)q1;
            y[l + 32] = d * (float)s[is + 2] * (float)q2;
            y[l + 64] = d * (float)s[is + 4] * (float)q3;
            y[l + 96] = d * (float)s[is + 6] * (float)q4;
        }
    }
}

// Row loops with the block function inlined (no indirect call per block).
typedef void (*row_fn)(const uint8_t *src, float *dst, int64_t blocks);
#define ROW_FN(name, block_fn, bytes, elems)                                                   \
    static void name(const uint8_t *src, float *dst, int64_t blocks) {                         \
        for (int64_t b = 0; b < blocks; b++) block_fn(src + b * (bytes), dst + b * (elems));   \
    }
ROW_FN(row_q8_0, deq_q8_0, 34, 32)
ROW_FN(row_q4_0, deq_q4_0, 18, 32)
ROW_FN(row_q4_1, deq_q4_1, 20, 32)
ROW_FN(row_q5_0, deq_q5_0, 22, 32)
ROW_FN(row_q5_1, deq_q5_1, 24, 32)
ROW_FN(row_q4_k, deq_q4_k, 144, 256)
ROW_FN(row_q5_k, deq_q5_k, 176, 256)
ROW_FN(row_q6_k, deq_q6_k, 210, 256)

static row_fn block_dequantizer(ls_dtype t) {
    switch (t) {
    case LS_Q8_0: return row_q8_0;
    case LS_Q4_0: return row_q4_0;
    case LS_Q4_1: return row_q4_1;
    case LS_Q5_0: return row_q5_0;
    case LS_Q5_1: return row_q5_1;
    case LS_Q4_K: return row_q4_k;
    case LS_Q5_K: return row_q5_k;
    case LS_Q6_K: return row_q6_k;
    default: return NULL;
    }
}

bool ls_dequant_supported(ls_dtype t) {
    return t == LS_F32 || t == LS_F16 || t == LS_BF16 || block_dequantizer(t) != NULL;
}

ls_status ls_dequant_row(ls_dtype t, const void *src, float *dst, int64_t n) {
    if (!ls_dequant_supported(t))
        return LS_ERR(LS_ERR_UNSUPPORTED, "no dequantizer for type %s", ls_dtype_name(t));
    const ls_dtype_info *ti = ls_dtype_get(t);
    if (n < 0 || n % ti->block)
        return LS_ERR(LS_ERR_INVALID, "row of %lld elements is not a whole number of %s blocks",
                      (long long)n, ti->name);
    const uint8_t *p = src;
    if (t == LS_F32) {
        memcpy(dst, src, (size_t)n * 4);
    } else if (t == LS_F16 || t == LS_BF16) {
        for (int64_t j = 0; j < n; j++) {
            uint16_t h;
            memcpy(&h, p + 2 * j, 2);
            dst[j] = t == LS_F16 ? ls_fp16_to_f32(h) : ls_bf16_to_f32(h);
        }
    } else {
        block_dequantizer(t)(p, dst, n / ti->block);
    }
    return LS_OK;
}
