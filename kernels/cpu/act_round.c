// act_round.c — activations rounded as llama.cpp's CPU backend rounds them before its dot
// products (its "vec_dot_type" for each weight type), for like-for-like comparisons with
// llama.cpp (ls_backend_set_act_precision). What llama.cpp runs on AVX2 machines:
//   Q8_0 / Q8_1 (for Q4_0 Q4_1 Q5_0 Q5_1 Q8_0): blocks of 32, q = round-half-even(x * 127 /
//     amax), scale d = fp16(amax / 127), x' = q * d;
//   Q8_K (for Q4_K Q5_K Q6_K): blocks of 256, the signed extreme m, iscale = -127 / m,
//     q = min(127, round-half-even(x * iscale)), x' = q / iscale (an f32 scale);
//   F16 / BF16 weights: x rounded to f16 / bf16; F32: unchanged.
// Tests: tests/unit/test_kernels.c.
#include "cpu_impl.h"

#include <math.h>

float cpu_q8_block(const float *x, int8_t q[32]) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    for (int j = 0; j < 32; j++) q[j] = (int8_t)nearbyintf(x[j] * id);
    return ls_fp16_to_f32(ls_f32_to_fp16(amax / 127.0f));
}

static void round_q8_0(const float *x, float *y, int64_t n) {
    for (int64_t b = 0; b + 32 <= n; b += 32) {
        int8_t q[32];
        float d = cpu_q8_block(x + b, q);
        for (int j = 0; j < 32; j++) y[b + j] = (float)q[j] * d;
    }
}

static void round_q8_k(const float *x, float *y, int64_t n) {
    for (int64_t b = 0; b + 256 <= n; b += 256) {
        float mx = 0.0f, amax = 0.0f;
        for (int j = 0; j < 256; j++)
            if (fabsf(x[b + j]) > amax) amax = fabsf(x[b + j]), mx = x[b + j];
        if (amax == 0.0f) {
            for (int j = 0; j < 256; j++) y[b + j] = 0.0f;
            continue;
        }
        float iscale = -127.0f / mx;
        for (int j = 0; j < 256; j++) {
            float q = nearbyintf(iscale * x[b + j]);
            y[b + j] = (q < 127.0f ? q : 127.0f) * (1.0f / iscale);
        }
    }
}

void ls_act_round(ls_dtype t, const float *x, float *y, int64_t m, int64_t n) {
    for (int64_t r = 0; r < m; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        switch (t) {
        case LS_Q4_0: case LS_Q4_1: case LS_Q5_0: case LS_Q5_1: case LS_Q8_0:
            round_q8_0(xr, yr, n);
            break;
        case LS_Q4_K: case LS_Q5_K: case LS_Q6_K:
            round_q8_k(xr, yr, n);
            break;
        case LS_F16:
            for (int64_t i = 0; i < n; i++) yr[i] = ls_fp16_to_f32(ls_f32_to_fp16(xr[i]));
            break;
        case LS_BF16:
            for (int64_t i = 0; i < n; i++) yr[i] = ls_bf16_to_f32(ls_f32_to_bf16(xr[i]));
            break;
        default:
            if (yr != xr)
                for (int64_t i = 0; i < n; i++) yr[i] = xr[i];
        }
    }
}
