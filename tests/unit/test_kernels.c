// test_kernels.c — CPU kernels against their kernels/ref twins: half conversions over all
// 65536 values, f32 -> half and bf16 rounding, and dequantization of every supported type on
// random blocks and random row lengths (bit-exact; NaN only where the twin has NaN); matmul on
// every instruction-set path this CPU runs (generic, avx2, avx512) against the float64 twin.
#include "../../kernels/cpu/cpu_impl.h" // the pool, for its own test
#include "ls_kernels.h"
#include "ls_ref.h"
#include "ls_test.h"

#include <math.h>
#include <stdatomic.h>
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

// --- ops against their twins ----------------------------------------------------------------

static ls_backend_t *g_be;

static float frand(unsigned *seed) { return (float)rand_r(seed) / (float)RAND_MAX * 2.0f - 1.0f; }
static void fill(float *x, int64_t n, unsigned *seed, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = frand(seed) * scale;
}

// Worst |a - b| / (|b| + rms(b)) over n values: a relative error that stays meaningful for
// outputs near zero.
static double rel_err(const float *a, const float *b, int64_t n) {
    double ss = 0.0, worst = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)b[i] * b[i];
    double rms = sqrt(ss / (double)(n ? n : 1)) + 1e-30;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) != isnan(b[i])) return INFINITY;
        double e = fabs((double)a[i] - b[i]) / (fabs(b[i]) + rms);
        if (e > worst) worst = e;
    }
    return worst;
}

typedef struct count_ctx {
    atomic_int *hits;
    atomic_int threads_seen;
} count_ctx;

static void count_task(void *vc, int64_t t, int thread) {
    count_ctx *c = vc;
    atomic_fetch_add(&c->hits[t], 1);
    atomic_fetch_or(&c->threads_seen, 1 << thread);
}

static void test_pool(void) {
    ls_pool_t *p;
    TEST_COND(ls_pool_init(3, -1, &p) == LS_OK && ls_pool_threads(p) == 3, "pool of 3");
    atomic_int hits[1000];
    for (int round = 0; round < 200; round++) {
        int n = 1 + round * 5;
        for (int i = 0; i < n; i++) atomic_init(&hits[i], 0);
        count_ctx c = {hits, 0};
        ls_pool_run(p, n, count_task, &c);
        int ok = 1;
        for (int i = 0; i < n; i++) ok &= atomic_load(&hits[i]) == 1;
        if (!ok) {
            TEST_COND(ok, "round %d: every task runs exactly once", round);
            break;
        }
    }
    ls_pool_free(p);
}

static ls_weight make_weight(ls_dtype t, int64_t n_out, int64_t n_in, unsigned *seed, uint8_t **buf) {
    const ls_dtype_info *ti = ls_dtype_get(t);
    size_t row = (size_t)(n_in / ti->block) * ti->block_bytes;
    *buf = malloc(row * (size_t)n_out);
    fill_random(*buf, row * (size_t)n_out, seed);
    if (t == LS_F32)
        for (int64_t i = 0; i < n_out * n_in; i++) ((float *)*buf)[i] = frand(seed);
    else if (t == LS_F16 || t == LS_BF16)
        for (int64_t i = 0; i < n_out * n_in; i++) {
            uint16_t h = t == LS_F16 ? ls_f32_to_fp16(frand(seed)) : ls_f32_to_bf16(frand(seed));
            memcpy(*buf + 2 * i, &h, 2);
        }
    else
        sane_scales(t, *buf, n_out * n_in / ti->block, seed);
    return (ls_weight){.type = t, .n_in = n_in, .n_out = n_out, .row_bytes = row, .data = *buf};
}

static void test_matmul(void) {
    static const ls_dtype types[] = {LS_F32, LS_F16, LS_BF16, LS_Q8_0, LS_Q4_0, LS_Q4_1,
                                     LS_Q5_0, LS_Q5_1, LS_Q4_K, LS_Q5_K, LS_Q6_K};
    unsigned seed = 5;
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        int64_t block = ls_dtype_get(types[k])->block;
        for (int trial = 0; trial < 4; trial++) {
            int64_t m = trial == 0 ? 1 : 1 + rand_r(&seed) % 37, n_out = 1 + rand_r(&seed) % 300;
            int64_t n_in = block * (1 + rand_r(&seed) % (block == 1 ? 200 : 6));
            uint8_t *buf;
            ls_weight w = make_weight(types[k], n_out, n_in, &seed, &buf);
            float *x = malloc((size_t)(m * n_in) * 4), *y = malloc((size_t)(m * n_out) * 4),
                  *r = malloc((size_t)(m * n_out) * 4);
            fill(x, m * n_in, &seed, 1.0f);
            TEST_COND(ls_op_matmul(g_be, &w, x, y, m) == LS_OK, "matmul %s", ls_dtype_name(types[k]));
            ls_ref_matmul(&w, x, r, m);
            double e = rel_err(y, r, m * n_out);
            TEST_COND(e < 1e-5, "matmul %s m=%lld n_out=%lld n_in=%lld: error %.2e", ls_dtype_name(types[k]),
                      (long long)m, (long long)n_out, (long long)n_in, e);
            free(buf), free(x), free(y), free(r);
        }
    }
    // llama.cpp's precision: one token of Q4_0/Q4_1/Q8_0 goes through int8 dot products; they
    // agree with the f32 product of the rounded activations up to summation order.
    ls_backend_set_act_precision(g_be, LS_ACT_LLAMACPP);
    static const ls_dtype int8_types[] = {LS_Q8_0, LS_Q4_0, LS_Q4_1};
    for (size_t k = 0; k < 3; k++)
        for (int trial = 0; trial < 4; trial++) {
            int64_t n_out = 1 + rand_r(&seed) % 300, n_in = 32 * (1 + rand_r(&seed) % 40);
            uint8_t *buf;
            ls_weight w = make_weight(int8_types[k], n_out, n_in, &seed, &buf);
            float *x = malloc((size_t)n_in * 4), *xr = malloc((size_t)n_in * 4), *y = malloc((size_t)n_out * 4),
                  *r = malloc((size_t)n_out * 4);
            fill(x, n_in, &seed, 1.0f);
            ls_act_round(int8_types[k], x, xr, 1, n_in);
            TEST_COND(ls_op_matmul(g_be, &w, x, y, 1) == LS_OK, "int8 matmul");
            ls_ref_matmul(&w, xr, r, 1);
            double e = rel_err(y, r, n_out);
            TEST_COND(e < 1e-5, "int8 decode %s n_in=%lld: error %.2e against the rounded activations",
                      ls_dtype_name(int8_types[k]), (long long)n_in, e);
            free(buf), free(x), free(xr), free(y), free(r);
        }
    ls_backend_set_act_precision(g_be, LS_ACT_F32);
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) { // embedding lookups
        int64_t n_in = ls_dtype_get(types[k])->block * 3, n_out = 37;
        uint8_t *buf;
        ls_weight w = make_weight(types[k], n_out, n_in, &seed, &buf);
        int32_t ids[5] = {0, 36, 7, 7, 20};
        float a[5 * 768], b[5 * 768];
        TEST_COND(ls_op_get_rows(g_be, &w, ids, 5, a) == LS_OK, "get_rows");
        ls_ref_get_rows(&w, ids, 5, b);
        TEST_COND(!memcmp(a, b, (size_t)(5 * n_in) * sizeof *a), "get_rows %s is the dequantized row", ls_dtype_name(types[k]));
        free(buf);
    }
    uint8_t *buf;
    ls_weight w = make_weight(LS_Q4_0, 4, 32, &seed, &buf);
    w.row_bytes = 19;
    float x[32], y[4];
    TEST_ERR(ls_op_matmul(g_be, &w, x, y, 1), LS_ERR_INVALID, "inconsistent");
    int32_t bad = 4;
    w.row_bytes = 18;
    TEST_ERR(ls_op_get_rows(g_be, &w, &bad, 1, x), LS_ERR_INVALID, "token id 4 at position 0 is outside the vocabulary (0..3)");
    free(buf);
}

// One matmul on backend `be` against the float64 twin: f32 activations, or llama.cpp's
// (compared with the twin on the rounded activations, as the int8 arithmetic equals that up to
// summation order). Returns the error.
static double matmul_vs_ref(ls_backend_t *be, ls_dtype t, int64_t m, int64_t n_out, int64_t n_in, bool int8,
                            unsigned *seed) {
    uint8_t *buf;
    ls_weight w = make_weight(t, n_out, n_in, seed, &buf);
    float *x = malloc((size_t)(m * n_in) * 4), *xr = malloc((size_t)(m * n_in) * 4),
          *y = malloc((size_t)(m * n_out) * 4), *r = malloc((size_t)(m * n_out) * 4);
    fill(x, m * n_in, seed, 1.0f);
    for (int64_t i = 0; i < m * n_in; i += 7) x[i] += 3.0f; // a mean offset, as real activations have
    if (int8) ls_act_round(t, x, xr, m, n_in);
    else memcpy(xr, x, (size_t)(m * n_in) * 4);
    ls_backend_set_act_precision(be, int8 ? LS_ACT_LLAMACPP : LS_ACT_F32);
    double e = ls_op_matmul(be, &w, x, y, m) == LS_OK ? 0.0 : INFINITY;
    ls_ref_matmul(&w, xr, r, m);
    if (e == 0.0) e = rel_err(y, r, m * n_out);
    free(buf), free(x), free(xr), free(y), free(r);
    return e;
}

// Every instruction-set path the CPU runs (LS_CPU_FEATURES forces one at backend init) against
// the twin: the row kernels for 1..16 tokens (one weight row read for all of them), and past 16
// the tiles through sgemm; random shapes with odd row counts and block counts.
static void test_matmul_paths(void) {
    static const char *paths[] = {"generic", "avx2", "avx512"};
    static const ls_dtype types[] = {LS_Q4_0, LS_Q4_1, LS_Q8_0, LS_Q4_K, LS_F16};
    unsigned seed = 11;
    for (int p = 0; p < 3; p++) {
        setenv("LS_CPU_FEATURES", paths[p], 1);
        ls_backend_t *be;
        ls_status rc = ls_backend_cpu_init(2, -1, &be);
        if (rc == LS_ERR_UNSUPPORTED) {
            printf("test_kernels: this CPU cannot run the %s path; not tested here\n", paths[p]);
            continue;
        }
        TEST_COND(rc == LS_OK, "backend with LS_CPU_FEATURES=%s", paths[p]);
        if (rc != LS_OK) continue;
        TEST_COND(!strcmp(cpu_isa_name(((cpu_ctx *)be->ctx)->isa), paths[p]), "LS_CPU_FEATURES=%s is the path taken",
                  paths[p]);
        for (size_t k = 0; k < sizeof types / sizeof *types; k++)
            for (int trial = 0; trial < 6; trial++) {
                int64_t block = ls_dtype_get(types[k])->block;
                int64_t m = trial < 2 ? 1 + trial : trial < 5 ? 3 + rand_r(&seed) % 14 : 17 + rand_r(&seed) % 9;
                int64_t n_out = 1 + 2 * (rand_r(&seed) % 150), n_in = block * (1 + rand_r(&seed) % (block == 32 ? 49 : 5));
                for (int int8 = 0; int8 < 2; int8++) {
                    double e = matmul_vs_ref(be, types[k], m, n_out, n_in, int8, &seed);
                    TEST_COND(e < 1e-5, "%s path, %s, %s activations, m=%lld n_out=%lld n_in=%lld: error %.2e", paths[p],
                              ls_dtype_name(types[k]), int8 ? "llamacpp" : "f32", (long long)m, (long long)n_out,
                              (long long)n_in, e);
                }
            }
        ls_backend_free(be);
    }
    setenv("LS_CPU_FEATURES", "avx9", 1);
    ls_backend_t *be = NULL;
    TEST_ERR(ls_backend_cpu_init(2, -1, &be), LS_ERR_INVALID, "LS_CPU_FEATURES=avx9: expected generic, avx2 or avx512");
    unsetenv("LS_CPU_FEATURES");
}

static void test_elementwise(void) {
    unsigned seed = 11;
    for (int trial = 0; trial < 10; trial++) {
        int64_t m = 1 + rand_r(&seed) % 70, n = 1 + rand_r(&seed) % 900;
        float *x = malloc((size_t)(m * n) * 4), *x2 = malloc((size_t)(m * n) * 4), *w = malloc((size_t)n * 4),
              *a = malloc((size_t)(m * n) * 4), *b = malloc((size_t)(m * n) * 4);
        fill(x, m * n, &seed, 3.0f), fill(x2, m * n, &seed, 2.0f), fill(w, n, &seed, 1.0f);
        TEST_COND(ls_op_rmsnorm(g_be, x, w, a, m, n, 1e-5f) == LS_OK, "rmsnorm");
        ls_ref_rmsnorm(x, w, b, m, n, 1e-5f);
        TEST_COND(rel_err(a, b, m * n) < 1e-6, "rmsnorm %lldx%lld: %.2e", (long long)m, (long long)n, rel_err(a, b, m * n));
        TEST_COND(ls_op_swiglu(g_be, x, x2, a, m * n) == LS_OK, "swiglu");
        ls_ref_swiglu(x, x2, b, m * n);
        TEST_COND(rel_err(a, b, m * n) < 1e-6, "swiglu: %.2e", rel_err(a, b, m * n));
        memcpy(a, x, (size_t)(m * n) * 4);
        TEST_COND(ls_op_add(g_be, a, x2, m * n) == LS_OK && a[m * n - 1] == x[m * n - 1] + x2[m * n - 1], "add");
        TEST_COND(ls_op_fill(g_be, a, -INFINITY, m * n) == LS_OK && a[0] == -INFINITY && a[m * n - 1] == -INFINITY, "fill");
        // convert: f32 rows (pitch n) -> bf16 rows (pitch n + 3) -> f32 again, against the scalar conversions
        uint16_t *h = calloc((size_t)(m * (n + 3)), 2);
        TEST_COND(ls_op_convert(g_be, LS_BF16, h, (size_t)n + 3, LS_F32, x, (size_t)n, (size_t)n, (size_t)m) == LS_OK, "convert");
        TEST_COND(ls_op_convert(g_be, LS_F32, a, (size_t)n, LS_BF16, h, (size_t)n + 3, (size_t)n, (size_t)m) == LS_OK, "convert back");
        int bad = 0;
        for (int64_t r = 0; r < m; r++)
            for (int64_t i = 0; i < n; i++)
                bad += h[r * (n + 3) + i] != ls_f32_to_bf16(x[r * n + i]) || a[r * n + i] != ls_bf16_to_f32(ls_f32_to_bf16(x[r * n + i]));
        TEST_COND(bad == 0, "convert: %d elements differ from ls_f32_to_bf16", bad);
        TEST_COND(ls_op_convert(g_be, LS_Q4_0, h, 1, LS_F32, x, 1, 1, 1) == LS_ERR_UNSUPPORTED, "convert to Q4_0 is refused");
        TEST_COND(ls_op_convert(g_be, LS_Q8_0, h, 1, LS_F32, x, 1, 1, 1) == LS_ERR_INVALID, "q8_0 needs whole blocks");
        ls_err_clear();
        // q8_0 (a KV cache type): rows of whole blocks to q8_0 and back; each element within half a
        // step of its value (d/2, d = the block's fp16 scale, read by the reference dequantizer),
        // plus what rounding the scale to fp16 moves the largest code: 127 d 2^-11
        int64_t w32 = n / 32 * 32;
        uint8_t *q8 = malloc((size_t)(m * (w32 + 32) / 32 * 34));
        TEST_COND(ls_op_convert(g_be, LS_Q8_0, q8, (size_t)w32 + 32, LS_F32, x, (size_t)n, (size_t)w32, (size_t)m) == LS_OK &&
                      ls_op_convert(g_be, LS_F32, a, (size_t)n, LS_Q8_0, q8, (size_t)w32 + 32, (size_t)w32, (size_t)m) == LS_OK,
                  "q8_0 convert: %s", ls_err_msg());
        bad = 0;
        for (int64_t r = 0; r < m; r++)
            for (int64_t i = 0; i < w32; i++) {
                const uint8_t *blk = q8 + (size_t)(r * (w32 + 32) + i) / 32 * 34;
                float d = ls_ref_dequant_elem(LS_F16, blk, 0), want = ls_ref_dequant_elem(LS_Q8_0, blk, i % 32);
                bad += a[r * n + i] != want || fabsf(want - x[r * n + i]) > d * (0.5f + 127.0f / 2048) * 1.001f;
            }
        TEST_COND(bad == 0, "q8_0 convert: %d elements off by more than half a step", bad);
        free(q8);
        free(h);
        free(x), free(x2), free(w), free(a), free(b);
    }
}

static void test_rope(void) {
    unsigned seed = 17;
    for (int trial = 0; trial < 12; trial++) {
        int hd = (int[]){32, 64, 128, 80}[trial % 4], n_rot = trial % 3 == 2 ? hd / 2 : hd;
        int n_heads = 1 + rand_r(&seed) % 9;
        int64_t m = 1 + rand_r(&seed) % 40;
        float inv[64];
        for (int i = 0; i < n_rot / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / n_rot) / (trial % 2 ? 4.0f : 1.0f);
        ls_rope_freqs f = {n_rot, inv, trial % 5 == 4 ? 1.13862944f : 1.0f,
                           trial % 2 ? LS_ROPE_PAIR_HALVES : LS_ROPE_PAIR_ADJACENT};
        int64_t *pos = malloc((size_t)m * sizeof *pos);
        for (int64_t t = 0; t < m; t++) pos[t] = rand_r(&seed) % 120000;
        size_t n = (size_t)(m * n_heads * hd);
        float *a = malloc(n * 4), *b = malloc(n * 4);
        fill(a, (int64_t)n, &seed, 1.0f);
        memcpy(b, a, n * 4);
        TEST_COND(ls_op_rope(g_be, a, m, n_heads, hd, pos, &f) == LS_OK, "rope");
        ls_ref_rope(b, m, n_heads, hd, pos, &f);
        TEST_COND(rel_err(a, b, (int64_t)n) < 1e-6, "rope hd=%d n_rot=%d: %.2e", hd, n_rot, rel_err(a, b, (int64_t)n));
        free(pos), free(a), free(b);
    }
    float x[8] = {0}, inv[4] = {1, 1, 1, 1};
    ls_rope_freqs f = {4, inv, 1.0f, LS_ROPE_PAIR_ADJACENT};
    TEST_ERR(ls_op_rope(g_be, x, 1, 1, 8, (int64_t[]){1ll << 25}, &f), LS_ERR_INVALID, "outside [-2^24, 2^24]");
}

// One attention case: random q/k/v (and q_sink for the sink rule), optionally keys in two
// segments (sinks in front of a window that starts at kv_pos0), optionally computed as two
// calls over the two halves of the keys merged by log-sum-exp, as sequence parallelism does.
// Keys and values may be stored as bf16 or q8_0, contiguous or in pages (page_len > 0) in a
// shuffled order, the window `gap` slots after the sinks, as a paged KV cache holds them.
typedef struct attn_case {
    int64_t n_q, q_pos0, n_kv, kv_sinks, kv_pos0;
    int n_head, rep, hd;
    ls_attn_rule rule;
    bool split;
    ls_dtype type;
    int64_t page_len, gap;
} attn_case;

// Key j of each head of k, v [n_kv_head][stride][hd] (f32) to the case's layout and type: sets
// a's k, v, kv_type and layout; *kb, *vb, *pages are for the caller to free. Unused bytes are
// 0xff (NaN in every type), so a wrongly addressed row shows.
static void layout_kv(const attn_case *c, int n_kv_head, int64_t stride, const float *k, const float *v,
                      unsigned *seed, ls_attn_args *a, void **kb, void **vb, int32_t **pages) {
    uint64_t rb;
    ls_dtype_row_bytes(c->type, (uint64_t)c->hd, &rb);
    int64_t gap = c->n_kv > c->kv_sinks ? c->gap : 0, slots = c->n_kv + gap, pl = c->page_len;
    int64_t n_pages = pl ? (slots + pl - 1) / pl + 3 : 0, rows = pl ? n_pages * n_kv_head * pl : n_kv_head * (slots + 2);
    size_t page_bytes = pl ? (size_t)(n_kv_head * pl) * rb + 32 * (size_t)(rand_r(seed) % 2) : 0;
    size_t bytes = pl ? (size_t)n_pages * page_bytes : (size_t)rows * rb;
    *kb = malloc(bytes), *vb = malloc(bytes), *pages = NULL;
    memset(*kb, 0xff, bytes), memset(*vb, 0xff, bytes);
    if (pl) { // a shuffled page table
        *pages = malloc((size_t)n_pages * sizeof **pages);
        for (int64_t i = 0; i < n_pages; i++) (*pages)[i] = (int32_t)i;
        for (int64_t i = n_pages - 1; i > 0; i--) {
            int64_t r = rand_r(seed) % (i + 1);
            int32_t t = (*pages)[i];
            (*pages)[i] = (*pages)[r], (*pages)[r] = t;
        }
    }
    a->kv_type = c->type, a->kv_gap = gap, a->kv_pages = *pages, a->kv_page_len = pl, a->kv_page_bytes = page_bytes;
    a->kv_stride = slots + 2;
    for (int g = 0; g < n_kv_head; g++)
        for (int64_t j = 0; j < c->n_kv; j++) {
            int64_t sl = j < c->kv_sinks ? j : j + gap;
            size_t at = pl ? (size_t)(*pages)[sl / pl] * page_bytes + (size_t)(g * pl + sl % pl) * rb
                           : (size_t)(g * a->kv_stride + sl) * rb;
            const float *src[2] = {k + (g * stride + j) * c->hd, v + (g * stride + j) * c->hd};
            void *dst[2] = {(char *)*kb + at, (char *)*vb + at};
            for (int w = 0; w < 2; w++)
                TEST_COND(ls_op_convert(g_be, c->type, dst[w], 0, LS_F32, src[w], 0, (size_t)c->hd, 1) == LS_OK,
                          "convert to %s: %s", ls_dtype_name(c->type), ls_err_msg());
        }
    a->k = *kb, a->v = *vb;
}

static void run_attention_case(attn_case c, unsigned *seed) {
    int n_kv_head = c.n_head / c.rep;
    int64_t stride = c.n_kv + rand_r(seed) % 5;
    size_t nq = (size_t)(c.n_q * c.n_head * c.hd), nk = (size_t)(n_kv_head * stride * c.hd);
    float *q = malloc(nq * 4), *qs = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4);
    float *o = malloc(nq * 4), *r = malloc(nq * 4);
    float *lse = malloc((size_t)(c.n_q * c.n_head) * 4), *rlse = malloc((size_t)(c.n_q * c.n_head) * 4);
    fill(q, (int64_t)nq, seed, 1.0f), fill(qs, (int64_t)nq, seed, 1.0f);
    fill(k, (int64_t)nk, seed, 1.0f), fill(v, (int64_t)nk, seed, 1.0f);
    c.rule.n_head = c.n_head;
    ls_attn_args a = {.q = q, .q_sink = c.rule.kind == LS_ATTN_SINK ? qs : NULL, .k = k, .v = v, .out = o, .lse = lse,
                      .n_q = c.n_q, .q_pos0 = c.q_pos0, .n_kv = c.n_kv, .kv_sinks = c.kv_sinks, .kv_pos0 = c.kv_pos0,
                      .kv_stride = stride, .n_head = c.n_head, .n_kv_head = n_kv_head, .head_dim = c.hd,
                      .scale = 1.0f / sqrtf((float)c.hd), .rule = c.rule};
    void *kb = NULL, *vb = NULL;
    int32_t *pages = NULL;
    bool laid_out = c.type != LS_F32 || c.page_len || c.gap;
    if (laid_out) layout_kv(&c, n_kv_head, stride, k, v, seed, &a, &kb, &vb, &pages);
    ls_attn_args ref = a;
    ref.out = r, ref.lse = rlse;
    ls_ref_attention(&ref);
    if (!c.split || c.kv_sinks || laid_out) {
        TEST_COND(ls_op_attention(g_be, &a) == LS_OK, "attention: %s", ls_err_msg());
    } else { // keys [0, h) and [h, n_kv) separately, then merged
        int64_t h = c.n_kv / 2;
        float *o2 = malloc(nq * 4), *lse2 = malloc((size_t)(c.n_q * c.n_head) * 4);
        ls_attn_args a1 = a, a2 = a;
        a1.n_kv = h;
        a2.k = k + h * c.hd, a2.v = v + h * c.hd, a2.kv_pos0 = c.kv_pos0 + h, a2.n_kv = c.n_kv - h, a2.out = o2, a2.lse = lse2;
        TEST_COND(ls_op_attention(g_be, &a1) == LS_OK && ls_op_attention(g_be, &a2) == LS_OK, "split attention");
        TEST_COND(ls_op_attn_merge(g_be, o, lse, o2, lse2, c.n_q * c.n_head, c.hd) == LS_OK, "merge");
        free(o2), free(lse2);
    }
    double eo = rel_err(o, r, (int64_t)nq), el = rel_err(lse, rlse, c.n_q * c.n_head);
    TEST_COND(eo < 1e-5 && el < 1e-5,
              "attention %s G=%lld S=%lld W=%lld n_q=%lld pos0=%lld n_kv=%lld sinks=%lld kv_pos0=%lld heads=%d/%d hd=%d split=%d "
              "%s page %lld gap %lld: out %.2e lse %.2e",
              ls_attn_kind_name(c.rule.kind), (long long)c.rule.group, (long long)c.rule.sinks, (long long)c.rule.window,
              (long long)c.n_q, (long long)c.q_pos0, (long long)c.n_kv, (long long)c.kv_sinks, (long long)c.kv_pos0,
              c.n_head, n_kv_head, c.hd, c.split, ls_dtype_name(c.type), (long long)c.page_len, (long long)c.gap, eo, el);
    free(q), free(qs), free(k), free(v), free(o), free(r), free(lse), free(rlse), free(kb), free(vb), free(pages);
}

static ls_attn_rule random_rule(unsigned *seed, int kind) {
    ls_attn_rule r = {.kind = (ls_attn_kind)kind};
    r.group = 2 + rand_r(seed) % 90;          // odd groups and groups longer than the text too
    r.sinks = rand_r(seed) % 6;
    r.window = 1 + rand_r(seed) % 70;
    return r;
}

static void test_attention(void) {
    unsigned seed = 23;
    static const int reps[] = {1, 3, 4, 8}, hds[] = {32, 64, 128};
    for (int trial = 0; trial < 24; trial++) { // full causal: shapes, chunked prefill, splits
        int rep = reps[trial % 4], hd = hds[trial % 3], n_head = rep * (1 + rand_r(&seed) % 3);
        int64_t n_q = 1 + rand_r(&seed) % 77, p0 = trial % 2 ? rand_r(&seed) % 150 : 0;
        run_attention_case((attn_case){n_q, p0, p0 + n_q, 0, 0, n_head, rep, hd, {.kind = LS_ATTN_FULL}, trial % 5 == 4, LS_F32, 0, 0}, &seed);
    }
    for (int trial = 0; trial < 80; trial++) { // every rule on random shapes
        int kind = 1 + trial % 3, rep = reps[trial % 4], hd = hds[(trial / 4) % 3];
        int n_head = rep * (1 + rand_r(&seed) % 3);
        if (trial % 7 == 3) n_head = 9, rep = 3; // SmolLM2's odd head count: the s2 split at 4
        int64_t n_q = 1 + rand_r(&seed) % 90, p0 = trial % 3 ? rand_r(&seed) % 200 : 0;
        run_attention_case((attn_case){n_q, p0, p0 + n_q, 0, 0, n_head, rep, hd, random_rule(&seed, kind), trial % 4 == 1, LS_F32, 0, 0},
                           &seed);
    }
    for (int trial = 0; trial < 30; trial++) { // streaming layout: sinks in front of a later window
        ls_attn_rule r = random_rule(&seed, trial % 2 ? LS_ATTN_SINK : LS_ATTN_WINDOW);
        if (r.kind == LS_ATTN_SINK && r.sinks == 0) r.sinks = 1 + trial % 4;
        int64_t sinks = r.kind == LS_ATTN_SINK ? r.sinks : 0, n_q = 1 + rand_r(&seed) % 40;
        int64_t p0 = sinks + r.window + rand_r(&seed) % 500; // the first query, well past the start
        int64_t kv_pos0 = p0 - r.window, n_kv = sinks + (p0 + n_q - kv_pos0);
        run_attention_case((attn_case){n_q, p0, n_kv, sinks, kv_pos0, 4, 2, 64, r, false, LS_F32, 0, 0}, &seed);
    }
    run_attention_case((attn_case){1, 2999, 3000, 0, 0, 9, 3, 64, {.kind = LS_ATTN_FULL}, false, LS_F32, 0, 0}, &seed); // decode: key splits
    run_attention_case((attn_case){1, 4999, 5000, 4, 4, 9, 3, 64, {.kind = LS_ATTN_SINK, .sinks = 4, .window = 1020}, false, LS_F32, 0, 0},
                       &seed);
    run_attention_case((attn_case){3, 2000, 2003, 0, 0, 4, 4, 64, {.kind = LS_ATTN_FULL}, false, LS_F32, 0, 0}, &seed);
    run_attention_case((attn_case){33, 1100, 1133, 0, 0, 6, 2, 64, {.kind = LS_ATTN_FULL}, true, LS_F32, 0, 0}, &seed);
    run_attention_case((attn_case){5, 0, 3, 0, 0, 2, 1, 32, {.kind = LS_ATTN_FULL}, false, LS_F32, 0, 0}, &seed); // n_kv < n_q
    static const ls_dtype types[] = {LS_F32, LS_BF16, LS_Q8_0};
    for (int trial = 0; trial < 60; trial++) { // a KV cache's layouts: every type, paged or not, with a window gap
        attn_case c = {.n_head = reps[trial % 4] * (1 + trial % 2), .rep = reps[trial % 4], .hd = hds[(trial / 3) % 3],
                       .type = types[trial % 3], .page_len = trial % 5 == 0 ? 0 : trial % 5 == 1 ? 64 : 1 + rand_r(&seed) % 70};
        if (trial % 7 == 3) c.n_head = 9, c.rep = 3;
        int kind = trial % 4;
        c.rule = random_rule(&seed, kind);
        c.n_q = 1 + rand_r(&seed) % 70;
        if (kind == LS_ATTN_SINK || kind == LS_ATTN_WINDOW) { // streaming layout, the window after a gap
            if (kind == LS_ATTN_SINK && c.rule.sinks == 0) c.rule.sinks = 1 + trial % 4;
            c.kv_sinks = kind == LS_ATTN_SINK ? c.rule.sinks : 0;
            c.q_pos0 = c.kv_sinks + c.rule.window + rand_r(&seed) % 300;
            c.kv_pos0 = c.q_pos0 - c.rule.window, c.n_kv = c.kv_sinks + (c.q_pos0 + c.n_q - c.kv_pos0);
            c.gap = rand_r(&seed) % 80;
        } else {
            c.q_pos0 = rand_r(&seed) % 150, c.n_kv = c.q_pos0 + c.n_q;
        }
        run_attention_case(c, &seed);
    }
    run_attention_case((attn_case){1, 2999, 3000, 0, 0, 9, 3, 64, {.kind = LS_ATTN_FULL}, false, LS_Q8_0, 64, 0}, &seed);
    run_attention_case((attn_case){1, 2999, 3000, 0, 0, 9, 3, 64, {.kind = LS_ATTN_FULL}, false, LS_BF16, 64, 0}, &seed);
    ls_attn_args bad = {.n_q = 1, .n_kv = 1, .kv_stride = 1, .n_head = 3, .n_kv_head = 2, .head_dim = 8, .scale = 1};
    TEST_ERR(ls_op_attention(g_be, &bad), LS_ERR_INVALID, "inconsistent shape");
    ls_attn_args bad_rule = {.n_q = 1, .n_kv = 1, .kv_stride = 1, .n_head = 2, .n_kv_head = 2, .head_dim = 8, .scale = 1,
                             .rule = {.kind = LS_ATTN_S2, .group = 1, .n_head = 2}};
    TEST_ERR(ls_op_attention(g_be, &bad_rule), LS_ERR_INVALID, "group of at least 2");
    int32_t page0 = 0;
    ls_attn_args bad_page = {.n_q = 1, .n_kv = 1, .n_head = 2, .n_kv_head = 2, .head_dim = 32, .scale = 1,
                             .kv_pages = &page0, .kv_page_len = 64, .kv_page_bytes = 64 * 32 * 4};
    TEST_ERR(ls_op_attention(g_be, &bad_page), LS_ERR_INVALID, "do not fit");
    ls_attn_args bad_q8 = {.n_q = 1, .n_kv = 1, .kv_stride = 1, .n_head = 2, .n_kv_head = 2, .head_dim = 40, .scale = 1,
                           .kv_type = LS_Q8_0};
    TEST_ERR(ls_op_attention(g_be, &bad_q8), LS_ERR_INVALID, "whole number of Q8_0 blocks");
    ls_attn_args bad_t = {.n_q = 1, .n_kv = 1, .kv_stride = 1, .n_head = 2, .n_kv_head = 2, .head_dim = 32, .scale = 1,
                          .kv_type = LS_Q4_0};
    TEST_ERR(ls_op_attention(g_be, &bad_t), LS_ERR_UNSUPPORTED, "f32, bf16 or q8_0 only");
}

int main(void) {
    test_half();
    test_dequant();
    test_pool();
    if (ls_backend_cpu_init(2, -1, &g_be) != LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    test_matmul();
    test_matmul_paths();
    test_elementwise();
    test_rope();
    test_attention();
    ls_backend_free(g_be);
    return TEST_REPORT("test_kernels");
}
