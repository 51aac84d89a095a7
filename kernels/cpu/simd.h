// simd.h — private to kernels/cpu: the small AVX2 helpers several CPU kernels share when the
// build targets AVX2 (horizontal sum, fp16 scale loads, 4-bit block unpacking); the matmul's
// row kernels carry their own, chosen at run time (matmul_x86.c). Tests: tests/unit/test_kernels.c.
#ifndef LS_CPU_SIMD_H
#define LS_CPU_SIMD_H

#include "ls_kernels.h"

#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>

static inline float simd_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// 16 bytes of nibbles -> 32 values in 4 vectors: low nibbles are elements 0..15, high
// nibbles 16..31 (the ggml layout), each minus `bias` (8 for Q4_0, 0 for Q4_1).
static inline void simd_nibbles(const uint8_t *qs, int bias, __m256 out[4]) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs), mask = _mm_set1_epi8(15);
    __m128i lo = _mm_and_si128(q, mask), hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
    __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    __m256i vb = _mm256_set1_epi32(bias);
    for (int k = 0; k < 4; k++) out[k] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(parts[k]), vb));
}
#endif

// An IEEE half at p (unaligned) as f32.
static inline float simd_half(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return ls_fp16_to_f32(h);
}

#endif // LS_CPU_SIMD_H
