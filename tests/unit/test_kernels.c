// test_kernels.c — CPU kernels against their kernels/ref twins: half conversions over all
// 65536 values, f32 -> half and bf16 rounding, and dequantization of every supported type on
// random blocks and random row lengths (bit-exact; NaN only where the twin has NaN).
#include "ls_kernels.h"
#include "ls_ref.h"
#include "ls_test.h"

#include <math.h>
#include <stdlib.h>

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_half(void) {
    int bad = 0, rt_bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint8_t b[2] = {(uint8_t)h, (uint8_t)(h >> 8)};
        float want = ls_ref_dequant_elem(LS_F16, b, 0), got = ls_fp16_to_f32((uint16_t)h);
        if (isnan(want) ? !isnan(got) : bits(want) != bits(got)) bad++;
        if (!isnan(got) && ls_f32_to_fp16(got) != h) rt_bad++;
    }
    TEST_COND(bad == 0, "%d half values decode differently from the reference", bad);
    TEST_COND(rt_bad == 0, "%d half values do not survive f32 -> half", rt_bad);
    // Rounding: halfway cases go to even; overflow to Inf; tiny values to subnormals/zero.
    TEST_COND(ls_f32_to_fp16(1.0f + 1.0f / 2048) == 0x3c00, "1 + 2^-11 rounds down to even");
    TEST_COND(ls_f32_to_fp16(1.0f + 3.0f / 2048) == 0x3c02, "1 + 3*2^-11 rounds up to even");
    TEST_COND(ls_f32_to_fp16(65520.0f) == 0x7c00 && ls_f32_to_fp16(65519.0f) == 0x7bff, "overflow edge");
    TEST_COND(ls_f32_to_fp16(ldexpf(1, -25)) == 0 && ls_f32_to_fp16(ldexpf(1.5f, -25)) == 1, "subnormal edge");
    TEST_COND(ls_f32_to_fp16(-0.0f) == 0x8000 && (ls_f32_to_fp16(NAN) & 0x7c00) == 0x7c00, "signs, NaN");
    TEST_COND(ls_f32_to_bf16(1.0f) == 0x3f80 && ls_bf16_to_f32(0x3f80) == 1.0f, "bf16 round trip");
    TEST_COND(ls_f32_to_bf16(1.00390625f) == 0x3f80 && ls_f32_to_bf16(1.01171875f) == 0x3f82,
              "bf16 ties go to even");
}

static void fill_random(uint8_t *p, size_t n, unsigned *seed) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(rand_r(seed) >> 7);
}

// Gives each block a finite, moderate fp16 scale so most values are ordinary numbers.
static void sane_scales(ls_dtype t, uint8_t *p, int64_t blocks, unsigned *seed) {
    const ls_dtype_info *ti = ls_dtype_get(t);
    for (int64_t b = 0; b < blocks; b++) {
        uint8_t *blk = p + b * ti->block_bytes;
        uint16_t d = ls_f32_to_fp16(0.001f + (float)(rand_r(seed) % 1000) / 50000.0f);
        size_t at = t == LS_Q6_K ? 208 : 0;
        if (t == LS_F16 || t == LS_BF16 || t == LS_F32) return;
        memcpy(blk + at, &d, 2);
        if (t == LS_Q4_1 || t == LS_Q5_1 || t == LS_Q4_K || t == LS_Q5_K) memcpy(blk + 2, &d, 2);
    }
}

static void test_dequant(void) {
    static const ls_dtype types[] = {LS_F32, LS_F16, LS_BF16, LS_Q8_0, LS_Q4_0, LS_Q4_1,
                                     LS_Q5_0, LS_Q5_1, LS_Q4_K, LS_Q5_K, LS_Q6_K};
    unsigned seed = 99;
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        ls_dtype t = types[k];
        const ls_dtype_info *ti = ls_dtype_get(t);
        for (int trial = 0; trial < 20; trial++) {
            int64_t blocks = 1 + rand_r(&seed) % 13, n = blocks * ti->block;
            if (ti->block == 1) n = 1 + rand_r(&seed) % 777; // odd lengths for plain floats
            size_t bytes = (size_t)(n / ti->block) * ti->block_bytes;
            uint8_t *src = malloc(bytes);
            float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
            fill_random(src, bytes, &seed);
            if (trial % 2) sane_scales(t, src, n / ti->block, &seed);
            TEST_COND(ls_dequant_row(t, src, a, n) == LS_OK, "%s dequant", ti->name);
            TEST_COND(ls_ref_dequant_row(t, src, b, n) == LS_OK, "%s ref dequant", ti->name);
            int bad = 0;
            for (int64_t j = 0; j < n; j++)
                bad += isnan(b[j]) ? !isnan(a[j]) : bits(a[j]) != bits(b[j]);
            TEST_COND(bad == 0, "%s: %d of %lld values differ from the twin", ti->name, bad, (long long)n);
            free(src), free(a), free(b);
        }
    }
    float out[64];
    uint8_t blk[256] = {0};
    TEST_ERR(ls_dequant_row(LS_Q4_0, blk, out, 33), LS_ERR_INVALID, "not a whole number");
    TEST_ERR(ls_dequant_row(LS_IQ2_XXS, blk, out, 256), LS_ERR_UNSUPPORTED, "no dequantizer for type IQ2_XXS");
    TEST_COND(!ls_dequant_supported(LS_Q8_1) && ls_dequant_supported(LS_Q6_K), "supported set");
}

int main(void) {
    test_half();
    test_dequant();
    return TEST_REPORT("test_kernels");
}
