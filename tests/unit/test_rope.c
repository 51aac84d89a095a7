// test_rope.c — RoPE frequencies and angles against the float64 reference values of
// docs/rope.md §7 (the formulas evaluated in float64 by the script there):
// every angle theta = pos * inv_freq, formed as the kernel forms it (one f32 product), within
// 1e-6 relative for none, linear, NTK, YaRN and Llama 3; YaRN's mscale; dynamic NTK's base;
// the rotation of a test vector at position 4095 in both pairings through ls_op_rope; and
// settings that would give NaN (YaRN betas of 0, all-zero factor tensors, ...) refused.
#include "ls_kernels.h"
#include "ls_model.h"
#include "ls_test.h"

#include <math.h>
#include <string.h>

enum { NONE, LINEAR, NTK, YARN, LLAMA3, N_METHODS };

static const int64_t g_pos[] = {1, 7, 4095, 100000};
static const int g_idx[] = {0, 1, 15, 31};
// [pos][pair][method], from docs/rope.md §7 (9 significant digits).
static const double g_theta[4][4][N_METHODS] = {
    {{1, 0.25, 1, 1, 1},
     {0.749894209, 0.187473552, 0.717098328, 0.749894209, 0.663601238},
     {0.0133352143, 0.00333380358, 0.00681837133, 0.00948851788, 0.00137189357},
     {0.000133352143, 3.33380358e-05, 3.33380358e-05, 3.33380358e-05, 3.76732269e-07}},
    {{7, 1.75, 7, 7, 7},
     {5.24925947, 1.31231487, 5.0196883, 5.24925947, 4.64520866},
     {0.0933465003, 0.0233366251, 0.0477285993, 0.0664196252, 0.00960325497},
     {0.000933465003, 0.000233366251, 0.000233366251, 0.000233366251, 2.63712588e-06}},
    {{4095, 1023.75, 4095, 4095, 4095},
     {3070.81679, 767.704197, 2936.51765, 3070.81679, 2717.44707},
     {54.6077026, 13.6519257, 27.9212306, 38.8554807, 5.61790416},
     {0.546077026, 0.136519257, 0.136519257, 0.136519257, 0.00154271864}},
    {{100000, 25000, 100000, 100000, 100000},
     {74989.4209, 18747.3552, 71709.8328, 74989.4209, 66360.1238},
     {1333.52143, 333.380358, 681.837133, 948.851788, 137.189357},
     {13.3352143, 3.33380358, 3.33380358, 3.33380358, 0.0376732269}},
};

static ls_rope_config method(int m) {
    ls_rope_config r = {.n_rot = 64, .freq_base = 10000.0, .factor = 4.0, .orig_ctx = 4096,
                        .yarn_beta_fast = 32.0, .yarn_beta_slow = 1.0,
                        .llama3_low_freq_factor = 1.0, .llama3_high_freq_factor = 4.0};
    static const ls_rope_scaling kinds[N_METHODS] = {LS_ROPE_NONE, LS_ROPE_LINEAR, LS_ROPE_NTK,
                                                     LS_ROPE_YARN, LS_ROPE_LLAMA3};
    r.scaling = kinds[m];
    if (m == NONE) r.factor = 1.0;
    if (m == LLAMA3) r.freq_base = 500000.0, r.factor = 8.0, r.orig_ctx = 8192;
    return r;
}

static void test_table(void) {
    static const char *names[N_METHODS] = {"none", "linear", "ntk", "yarn", "llama3"};
    for (int m = 0; m < N_METHODS; m++) {
        ls_rope_config r = method(m);
        float inv[32], attn;
        TEST_COND(ls_rope_compute(&r, 100, inv, &attn) == LS_OK, "%s computes", names[m]);
        double worst = 0.0;
        for (int p = 0; p < 4; p++)
            for (int i = 0; i < 4; i++) {
                float theta = (float)g_pos[p] * inv[g_idx[i]]; // exactly what the kernel does
                double want = g_theta[p][i][m], e = fabs(theta - want) / fabs(want);
                if (e > worst) worst = e;
            }
        TEST_COND(worst < 1e-6, "%s: worst relative angle error %.2e", names[m], worst);
        TEST_COND(m == YARN ? fabsf(attn - 1.13862944f) < 1e-6f : attn == 1.0f, "%s attention factor %.9g", names[m], attn);
    }
    // YaRN's attention factor is applied once: logits scale by mscale^2 = 1.29647699.
    TEST_COND(fabs(1.13862944 * 1.13862944 - 1.29647699) < 1e-7, "mscale^2");
}

static void test_dynamic_and_llama3_divisors(void) {
    ls_rope_config r = method(NONE);
    r.scaling = LS_ROPE_DYNAMIC, r.factor = 4.0;
    float inv[32], attn, plain[32];
    ls_rope_config none = method(NONE);
    ls_rope_compute(&none, 1, plain, &attn);
    ls_rope_compute(&r, 4096, inv, &attn);
    TEST_COND(inv[31] == plain[31], "dynamic NTK within the original context is plain RoPE");
    ls_rope_compute(&r, 16384, inv, &attn);
    double want = pow(141213.757, -2.0 * 31 / 64); // base' = 141213.757 at 16384 (docs/rope.md §7)
    TEST_COND(fabs(inv[31] - want) / want < 1e-6, "dynamic NTK base at 16384: %.9g vs %.9g", inv[31], want);
    // Llama 3 from the converter's rope_freqs divisors equals the computed formula.
    ls_rope_config l3 = method(LLAMA3);
    float computed[32], divisors[32], from_tensor[32], base[32];
    ls_rope_compute(&l3, 1, computed, &attn);
    ls_rope_config l3n = l3;
    l3n.scaling = LS_ROPE_NONE;
    ls_rope_compute(&l3n, 1, base, &attn);
    for (int i = 0; i < 32; i++) divisors[i] = (float)((double)base[i] / computed[i]);
    l3.freq_factors = divisors;
    ls_rope_compute(&l3, 1, from_tensor, &attn);
    double worst = 0;
    for (int i = 0; i < 32; i++) worst = fmax(worst, fabs(from_tensor[i] - computed[i]) / computed[i]);
    TEST_COND(worst < 1e-6, "llama3 from divisors: %.2e", worst);
    ls_rope_config bad = method(NONE);
    bad.scaling = LS_ROPE_LONGROPE;
    TEST_ERR(ls_rope_compute(&bad, 1, inv, &attn), LS_ERR_INVALID, "needs per-frequency factors");
}

// Settings that would give NaN frequencies (or none that rotate) are refused, naming the
// setting and its value; whatever passes the checks gives finite, positive frequencies.
static void refused(const char *what, ls_rope_config r, int64_t seq_len, const char *needle) {
    float inv[32] = {0}, attn = 0;
    ls_status rc = ls_rope_compute(&r, seq_len, inv, &attn);
    TEST_COND(rc == LS_ERR_INVALID && strstr(ls_err_msg(), needle), "%s: got %s \"%s\" (frequency 0: %g), wanted \"%s\"",
              what, ls_status_name(rc), ls_err_msg(), (double)inv[0], needle);
    ls_err_clear();
}

static void test_refused(void) {
    ls_rope_config r = method(YARN);
    r.yarn_beta_fast = r.yarn_beta_slow = 0;
    refused("yarn betas 0", r, 1, "YaRN beta_fast = 0 must be a finite positive number");
    r = method(YARN);
    r.yarn_beta_slow = -1;
    refused("yarn beta_slow -1", r, 1, "YaRN beta_slow = -1");
    r = method(YARN);
    r.attn_factor = NAN;
    refused("attention factor NaN", r, 1, "attention factor = nan");
    float zeros[32] = {0}, ones[32], inf[32];
    for (int i = 0; i < 32; i++) ones[i] = 1.0f, inf[i] = i == 5 ? INFINITY : 1.0f;
    r = method(LLAMA3);
    r.freq_factors = zeros;
    refused("all-zero rope_freqs", r, 1, "rope_freqs.weight[0] = 0 must be a finite positive number");
    r = method(LLAMA3);
    r.llama3_low_freq_factor = r.llama3_high_freq_factor = 2;
    refused("llama3 low = high", r, 1, "low_freq_factor = 2 and high_freq_factor = 2 must satisfy 0 < low < high");
    r = method(NONE);
    r.scaling = LS_ROPE_LONGROPE, r.factors_long = zeros, r.factors_short = ones;
    refused("all-zero long factors", r, 8192, "rope_factors_long.weight[0] = 0");
    r.factors_long = ones, r.factors_short = inf;
    refused("an infinite short factor", r, 1, "rope_factors_short.weight[5] = inf");
    r = method(LINEAR);
    r.freq_base = INFINITY;
    refused("base inf", r, 1, "freq_base = inf must be a finite number greater than 1");
    r.freq_base = 10000, r.factor = NAN;
    refused("factor NaN", r, 1, "scale factor = nan");
    r = method(NONE);
    r.freq_base = 1e300; // valid on its face, but the slowest pairs' frequencies round to 0 in f32
    refused("base 1e300", r, 1, "gives pair 5 the frequency 0: frequencies must be finite and positive");
}

// The rotation vectors of docs/rope.md §7: x_j = sin(0.1 j + 0.3) at position 4095. The f32
// angle of ~3070 rad is off by up to half an f32 ulp (1.2e-4 rad), so outputs agree to ~2e-4.
static void test_rotation(void) {
    static const double want[4][8] = {
        {-0.369516185, -0.475740823, -0.479590598, -0.232879883, 0.923281891, -0.921653107, 0.135047332, 0.249858655},
        {0.369072642, -0.320568594, 0.519250415, -0.528250865, -0.643994147, -0.717556777, 1.12495411, -0.236965657},
        {0.131551605, 0.562004056, -0.713658552, -0.735359463, -0.742168215, -1.04120681, 0.642004293, -0.9804867},
        {0.42606312, 0.239685325, -0.323276045, 0.666455226, 0.051791655, -0.96277402, 0.614539281, -0.971604826},
    };
    ls_backend_t *be;
    if (ls_backend_cpu_init(1, -1, &be) != LS_OK) return;
    for (int k = 0; k < 4; k++) {
        ls_rope_config r = method(k < 2 ? NONE : LINEAR);
        float inv[32], attn, x[64];
        ls_rope_compute(&r, 1, inv, &attn);
        for (int j = 0; j < 64; j++) x[j] = (float)sin(0.1 * j + 0.3);
        ls_rope_freqs f = {64, inv, attn, k % 2 ? LS_ROPE_PAIR_ADJACENT : LS_ROPE_PAIR_HALVES};
        TEST_COND(ls_op_rope(be, x, 1, 1, 64, (int64_t[]){4095}, &f) == LS_OK, "rope");
        double worst = 0;
        for (int j = 0; j < 8; j++) worst = fmax(worst, fabs(x[j] - want[k][j]));
        TEST_COND(worst < 3e-4, "rotation %d (%s, %s): worst error %.2e", k, k < 2 ? "none" : "linear 4",
                  k % 2 ? "adjacent" : "halves", worst);
    }
    ls_backend_free(be);
}

int main(void) {
    test_table();
    test_dynamic_and_llama3_divisors();
    test_refused();
    test_rotation();
    return TEST_REPORT("test_rope");
}
