// dequant_ref.c — reference dequantization, one element at a time, straight from the block
// layouts in docs/formats.md §2.2. The twin of kernels/cpu/dequant.c and
// kernels/cuda/dequant.cu. Tests: tests/unit/test_kernels.c, tests/oracle/test_dequant.py.
#include "ls_ref.h"

#include <math.h>
#include <string.h>

// IEEE half -> float by arithmetic (no bit tricks), subnormals and specials included.
static float half(const uint8_t *p) {
    uint16_t h = (uint16_t)(p[0] | p[1] << 8);
    int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    float v;
    if (exp == 0) v = ldexpf((float)mant, -24);
    else if (exp == 31) v = mant ? NAN : INFINITY;
    else v = ldexpf((float)(mant | 1024), exp - 25);
    return sign ? -v : v;
}

// 6-bit scale and min number j of a K-quant block (Q4_K, Q5_K).
static void scale_min_k4(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static float q4_k(const uint8_t *b, int j) { // {d, dmin, scales[12], qs[128]}
    float d = half(b), dmin = half(b + 2);
    const uint8_t *scales = b + 4, *qs = b + 16;
    int chunk = j / 64, l = j % 32, high = (j % 64) >= 32;
    int sc, mn;
    scale_min_k4(scales, 2 * chunk + high, &sc, &mn);
    int q = high ? qs[32 * chunk + l] >> 4 : qs[32 * chunk + l] & 15;
    return (d * (float)sc) * (float)q - dmin * (float)mn;
}

static float q5_k(const uint8_t *b, int j) { // {d, dmin, scales[12], qh[32], qs[128]}
    float d = half(b), dmin = half(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *qs = b + 48;
    int chunk = j / 64, l = j % 32, high = (j % 64) >= 32;
    int sc, mn;
    scale_min_k4(scales, 2 * chunk + high, &sc, &mn);
    int q = high ? qs[32 * chunk + l] >> 4 : qs[32 * chunk + l] & 15;
    q += 16 * ((qh[l] >> (2 * chunk + high)) & 1);
    return (d * (float)sc) * (float)q - dmin * (float)mn;
}

static float q6_k(const uint8_t *b, int j) { // {ql[128], qh[64], scales[16] (i8), d}
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = half(b + 208);
    int h = j / 128, r = j % 128, quarter = r / 32, l = r % 32;
    const uint8_t *QL = ql + 64 * h, *QH = qh + 32 * h;
    int low4 = (quarter & 1) ? QL[l + 32] : QL[l];     // quarters 1 and 3 use ql[l+32]
    low4 = quarter >= 2 ? low4 >> 4 : low4 & 15;       // quarters 2 and 3 use the high nibble
    int high2 = (QH[l] >> (2 * quarter)) & 3;
    int s = sc[8 * h + l / 16 + 2 * quarter];
    return d * (float)s * (float)((low4 | high2 << 4) - 32);
}

float ls_ref_dequant_elem(ls_dtype t, const void *row, int64_t j) {
    const ls_dtype_info *ti = ls_dtype_get((uint32_t)t);
    const uint8_t *b = (const uint8_t *)row + (j / ti->block) * ti->block_bytes;
    int k = (int)(j % ti->block); // element index inside the block
    int lo = k % 16, hi_half = k >= 16;
    switch (t) {
    case LS_F32: { float f; memcpy(&f, b, 4); return f; }
    case LS_F16: return half(b);
    case LS_BF16: {
        uint32_t u = (uint32_t)(b[0] | b[1] << 8) << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    case LS_Q8_0: return (float)(int8_t)b[2 + k] * half(b);
    case LS_Q4_0: {
        int q = hi_half ? b[2 + lo] >> 4 : b[2 + lo] & 15;
        return half(b) * (float)(q - 8);
    }
    case LS_Q4_1: {
        int q = hi_half ? b[4 + lo] >> 4 : b[4 + lo] & 15;
        return half(b) * (float)q + half(b + 2);
    }
    case LS_Q5_0: {
        uint32_t h = (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
        int q = (hi_half ? b[6 + lo] >> 4 : b[6 + lo] & 15) | (int)((h >> k) & 1) << 4;
        return half(b) * (float)(q - 16);
    }
    case LS_Q5_1: {
        uint32_t h = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24;
        int q = (hi_half ? b[8 + lo] >> 4 : b[8 + lo] & 15) | (int)((h >> k) & 1) << 4;
        return half(b) * (float)q + half(b + 2);
    }
    case LS_Q4_K: return q4_k(b, k);
    case LS_Q5_K: return q5_k(b, k);
    case LS_Q6_K: return q6_k(b, k);
    default: break;
    }
    LS_PANIC("ls_ref_dequant_elem: no dequantizer for %s", ti->name);
}

ls_status ls_ref_dequant_row(ls_dtype t, const void *src, float *dst, int64_t n) {
    static const ls_dtype supported[] = {LS_F32, LS_F16, LS_BF16, LS_Q8_0, LS_Q4_0, LS_Q4_1,
                                         LS_Q5_0, LS_Q5_1, LS_Q4_K, LS_Q5_K, LS_Q6_K};
    bool ok = false;
    for (size_t i = 0; i < sizeof supported / sizeof *supported; i++) ok |= supported[i] == t;
    if (!ok) return LS_ERR(LS_ERR_UNSUPPORTED, "no dequantizer for type %s", ls_dtype_name(t));
    if (n < 0 || n % ls_dtype_get(t)->block)
        return LS_ERR(LS_ERR_INVALID, "row of %lld elements is not a whole number of %s blocks",
                      (long long)n, ls_dtype_name(t));
    for (int64_t j = 0; j < n; j++) dst[j] = ls_ref_dequant_elem(t, src, j);
    return LS_OK;
}
