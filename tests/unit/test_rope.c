// test_rope.c — RoPE frequencies, attention factors and rotations against expectations that do
// not come from the code under test:
//   - the float64 reference values of docs/rope.md §7 (the formulas evaluated in float64 by the
//     script there): every angle
//     theta = pos * inv_freq, formed as the kernel forms it (one f32 product; docs/architecture.md,
//     "RoPE"), within 1e-6 relative, for none, linear, NTK, YaRN and Llama 3;
//   - every pair of every method (none, linear, NTK, dynamic NTK, YaRN, Llama 3 computed and
//     from converter divisors, LongRoPE short and long) recomputed here in float64 from the
//     method's definition, within one f32 rounding (2^-24 relative);
//   - closed forms: linear is f/s; NTK keeps pair 0 and divides the last pair by s; YaRN keeps
//     the pairs below its ramp and divides those above by s; dynamic NTK is plain RoPE up to the
//     original context and has base 10000 * 13^(32/31) at 4x it; YaRN's attention factor is
//     1 + 0.1 ln s (times a given factor), LongRoPE's sqrt(1 + ln s / ln L0);
//   - ls_op_rope on the CPU backend against docs/rope.md §7's rotated vectors and against a float64
//     rotation of all 64 elements (both pairings, YaRN's factor, partial rotation).
//   - settings that would give NaN (YaRN betas of 0, all-zero factor tensors, ...) refused,
//     naming the setting and its value.
// A backend that does not start is a failure, not a skip.
#include "ls_kernels.h"
#include "ls_model.h"
#include "ls_test.h"

#include <math.h>

enum { NONE, LINEAR, NTK, YARN, LLAMA3, N_METHODS };
#define D 64
#define HALF (D / 2)
#define F32_ROUNDING 6.0e-8 // 2^-24 relative, and a little for float64's own rounding

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
    ls_rope_config r = {.n_rot = D, .freq_base = 10000.0, .factor = 4.0, .orig_ctx = 4096,
                        .yarn_beta_fast = 32.0, .yarn_beta_slow = 1.0,
                        .llama3_low_freq_factor = 1.0, .llama3_high_freq_factor = 4.0};
    static const ls_rope_scaling kinds[N_METHODS] = {LS_ROPE_NONE, LS_ROPE_LINEAR, LS_ROPE_NTK,
                                                     LS_ROPE_YARN, LS_ROPE_LLAMA3};
    r.scaling = kinds[m];
    if (m == NONE) r.factor = 1.0;
    if (m == LLAMA3) r.freq_base = 500000.0, r.factor = 8.0, r.orig_ctx = 8192;
    return r;
}

// --- the definitions, in float64 (as Hugging Face's modeling_rope_utils states them) ---------

static double plain(double base, int i) { return 1.0 / pow(base, 2.0 * i / D); }

// Each method's inv_freq for every pair and its attention factor, for a sequence of seq_len.
static void reference(const ls_rope_config *r, int64_t seq_len, double inv[HALF], double *attn) {
    double b = r->freq_base, s = r->factor, L0 = (double)r->orig_ctx, e = (double)D / (D - 2);
    *attn = 1.0;
    for (int i = 0; i < HALF; i++) inv[i] = plain(b, i);
    switch (r->scaling) {
    case LS_ROPE_LINEAR: // position interpolation: positions p / s
        for (int i = 0; i < HALF; i++) inv[i] = plain(b, i) / s;
        break;
    case LS_ROPE_NTK: // base b * s^(d / (d - 2))
        for (int i = 0; i < HALF; i++) inv[i] = plain(b * pow(s, e), i);
        break;
    case LS_ROPE_DYNAMIC: { // base b * (s L / L0 - (s - 1))^(d / (d - 2)), L = max(seq_len, L0)
        double L = seq_len > r->orig_ctx ? (double)seq_len : L0;
        for (int i = 0; i < HALF; i++) inv[i] = plain(b * pow(s * L / L0 - (s - 1), e), i);
        break;
    }
    case LS_ROPE_YARN: { // the pair with r rotations over L0: d ln(L0 / (2 pi r)) / (2 ln b)
        double lo = floor(D * log(L0 / (2 * M_PI * r->yarn_beta_fast)) / (2 * log(b)));
        double hi = ceil(D * log(L0 / (2 * M_PI * r->yarn_beta_slow)) / (2 * log(b)));
        lo = fmax(lo, 0), hi = fmin(hi, D - 1);
        if (lo == hi) hi += 0.001;
        for (int i = 0; i < HALF; i++) {
            double ramp = fmin(fmax((i - lo) / (hi - lo), 0), 1); // 0: the pair keeps its frequency
            inv[i] = plain(b, i) * (1 - ramp) + plain(b, i) / s * ramp;
        }
        *attn = (s > 1 ? 1 + 0.1 * log(s) : 1) * (r->attn_factor > 0 ? r->attn_factor : 1);
        break;
    }
    case LS_ROPE_LLAMA3: // by wavelength: short kept, long divided by s, smoothed between
        for (int i = 0; i < HALF; i++) {
            double f = plain(b, i), wl = 2 * M_PI / f, lo_ff = r->llama3_low_freq_factor, hi_ff = r->llama3_high_freq_factor;
            if (wl < L0 / hi_ff) inv[i] = f;
            else if (wl > L0 / lo_ff) inv[i] = f / s;
            else {
                double sm = (L0 / wl - lo_ff) / (hi_ff - lo_ff);
                inv[i] = (1 - sm) * f / s + sm * f;
            }
        }
        break;
    case LS_ROPE_LONGROPE: { // 1 / (ext_i b^(2i/d)), ext = long past L0, else short
        const float *ext = seq_len > r->orig_ctx ? r->factors_long : r->factors_short;
        for (int i = 0; i < HALF; i++) inv[i] = 1.0 / (ext[i] * pow(b, 2.0 * i / D));
        *attn = r->attn_factor > 0 ? r->attn_factor : s > 1 ? sqrt(1 + log(s) / log(L0)) : 1;
        break;
    }
    default: break;
    }
}

// ls_rope_compute against the float64 definition: every pair within one f32 rounding, the
// attention factor within 1e-7.
static void check_against_definition(const char *what, const ls_rope_config *r, int64_t seq_len) {
    float inv[HALF], attn = 0;
    double want[HALF], want_attn;
    TEST_COND(ls_rope_compute(r, seq_len, inv, &attn) == LS_OK, "%s computes: %s", what, ls_err_msg());
    reference(r, seq_len, want, &want_attn);
    double worst = 0;
    int at = 0;
    for (int i = 0; i < HALF; i++) {
        double e = fabs(inv[i] - want[i]) / want[i];
        if (e > worst) worst = e, at = i;
    }
    TEST_COND(worst <= F32_ROUNDING, "%s: pair %d is %.9g, the definition gives %.9g (%.2e relative)", what, at, inv[at],
              want[at], worst);
    TEST_COND(fabs(attn - want_attn) <= 1e-7 * want_attn, "%s: attention factor %.9g, the definition gives %.9g", what,
              attn, want_attn);
}

// --- tests ------------------------------------------------------------------------------------

static void test_table(void) {
    static const char *names[N_METHODS] = {"none", "linear", "ntk", "yarn", "llama3"};
    for (int m = 0; m < N_METHODS; m++) {
        ls_rope_config r = method(m);
        float inv[HALF], attn;
        TEST_COND(ls_rope_compute(&r, 100, inv, &attn) == LS_OK, "%s computes", names[m]);
        double worst = 0.0;
        for (int p = 0; p < 4; p++)
            for (int i = 0; i < 4; i++) {
                float theta = (float)g_pos[p] * inv[g_idx[i]]; // exactly what the kernel does
                double want = g_theta[p][i][m], e = fabs(theta - want) / fabs(want);
                if (e > worst) worst = e;
            }
        TEST_COND(worst < 1e-6, "%s: worst relative angle error %.2e against docs/rope.md §7's table", names[m], worst);
        check_against_definition(names[m], &r, 100);
    }
}

static void test_closed_forms(void) {
    float inv[HALF], plain32[HALF], attn;
    ls_rope_config none = method(NONE);
    ls_rope_compute(&none, 1, plain32, &attn);
    TEST_COND(attn == 1.0f, "plain RoPE has no attention factor (%.9g)", attn);

    ls_rope_config lin = method(LINEAR);
    ls_rope_compute(&lin, 1, inv, &attn);
    double worst = 0;
    for (int i = 0; i < HALF; i++) worst = fmax(worst, fabs(inv[i] * 4.0 - plain(10000, i)) / plain(10000, i));
    TEST_COND(worst <= F32_ROUNDING, "linear x4 is plain / 4 (%.2e)", worst);

    ls_rope_config ntk = method(NTK);
    ls_rope_compute(&ntk, 1, inv, &attn);
    TEST_COND(inv[0] == 1.0f, "NTK keeps pair 0 (%.9g)", inv[0]);
    double last = plain(10000, HALF - 1) / 4;
    TEST_COND(fabs(inv[HALF - 1] - last) <= F32_ROUNDING * last, "NTK divides the last pair by s: %.9g vs %.9g",
              inv[HALF - 1], last);

    // YaRN at s 4, L0 4096, betas 32/1: the ramp runs from pair 10 to pair 23 (docs/rope.md §7's
    // worked example); below it the frequency is kept, above it divided by s.
    ls_rope_config yarn = method(YARN);
    ls_rope_compute(&yarn, 1, inv, &attn);
    int kept = 0, divided = 0;
    for (int i = 0; i <= 10; i++) kept += inv[i] == plain32[i];
    for (int i = 23; i < HALF; i++) divided += fabs(inv[i] - plain(10000, i) / 4) <= F32_ROUNDING * plain(10000, i) / 4;
    TEST_COND(kept == 11 && divided == HALF - 23, "YaRN keeps pairs 0..10 (%d of 11) and divides 23..31 by s (%d of 9)",
              kept, divided);
    TEST_COND(inv[11] < plain32[11] && inv[11] > plain32[11] / 4 && inv[22] < plain32[22] && inv[22] > plain32[22] / 4,
              "YaRN blends pairs 11..22");
    static const double scales[] = {0.5, 1, 2, 4, 8, 16, 64};
    for (size_t k = 0; k < sizeof scales / sizeof *scales; k++)
        for (int given = 0; given < 2; given++) {
            ls_rope_config y = method(YARN);
            y.factor = scales[k], y.attn_factor = given ? 0.9 : 0;
            ls_rope_compute(&y, 1, inv, &attn);
            double want = (scales[k] > 1 ? 1 + 0.1 * log(scales[k]) : 1) * (given ? 0.9 : 1);
            TEST_COND(fabs(attn - want) <= 1e-7 * want, "YaRN s=%g%s: attention factor %.9g, 1 + 0.1 ln s gives %.9g",
                      scales[k], given ? " x 0.9" : "", attn, want);
        }

    // dynamic NTK: plain RoPE up to the original context; past it the base grows
    ls_rope_config dyn = method(NONE);
    dyn.scaling = LS_ROPE_DYNAMIC, dyn.factor = 4.0;
    for (int64_t n = 1; n <= 4096; n *= 8) {
        ls_rope_compute(&dyn, n, inv, &attn);
        int same = 0;
        for (int i = 0; i < HALF; i++) same += inv[i] == plain32[i];
        TEST_COND(same == HALF, "dynamic NTK at %lld tokens is plain RoPE (%d of %d pairs)", (long long)n, same, HALF);
    }
    ls_rope_compute(&dyn, 16384, inv, &attn);
    double base = 10000 * pow(13.0, 32.0 / 31.0); // (4 * 16384 / 4096 - 3)^(64/62): docs/rope.md §7's 141213.757
    TEST_COND(fabs(base - 141213.757) < 1e-3, "the closed form gives docs/rope.md §7's base (%.6f)", base);
    worst = 0;
    for (int i = 0; i < HALF; i++) worst = fmax(worst, fabs(inv[i] - plain(base, i)) / plain(base, i));
    TEST_COND(worst <= F32_ROUNDING, "dynamic NTK at 16384: base 10000 * 13^(32/31) (%.2e)", worst);
}

// The methods with lengths, factors and parameters the table does not cover.
static void test_definitions(void) {
    for (int64_t n = 1000; n <= 64000; n *= 4) { // dynamic NTK below, at and past the original context
        ls_rope_config r = method(NONE);
        r.scaling = LS_ROPE_DYNAMIC, r.factor = 2.5;
        check_against_definition("dynamic NTK", &r, n);
    }
    static const double factors[] = {1.5, 2, 8, 32};
    for (size_t k = 0; k < sizeof factors / sizeof *factors; k++) {
        ls_rope_config y = method(YARN);
        y.factor = factors[k], y.orig_ctx = 2048 << k, y.freq_base = k % 2 ? 500000 : 10000;
        y.yarn_beta_fast = 16 + 16 * (double)k, y.attn_factor = k == 2 ? 1.2 : 0;
        check_against_definition("YaRN", &y, 1);
        ls_rope_config n = method(NTK);
        n.factor = factors[k];
        check_against_definition("NTK", &n, 1);
        ls_rope_config l = method(LINEAR);
        l.factor = factors[k];
        check_against_definition("linear", &l, 1);
        ls_rope_config l3 = method(LLAMA3);
        l3.factor = factors[k], l3.llama3_high_freq_factor = 2 + (double)k;
        check_against_definition("Llama 3", &l3, 1);
    }
    // YaRN's ramp collapsing (low == high == 0: both betas turn more than L0 / 2 pi times,
    // beta_slow's pair within (-1, 0]): the 0.001 widening
    ls_rope_config y = method(YARN);
    y.yarn_beta_fast = 2000, y.yarn_beta_slow = 700;
    check_against_definition("YaRN, an empty ramp", &y, 1);

    // Llama 3 from the converter's rope_freqs divisors, formed here from their definition
    // (1, s, or 1 / ((1 - sm) / s + sm)) and stored in f32 as GGUF stores them.
    ls_rope_config l3 = method(LLAMA3);
    float divisors[HALF], inv[HALF], attn;
    for (int i = 0; i < HALF; i++) {
        double f = plain(500000, i), wl = 2 * M_PI / f, sm = (8192 / wl - 1) / (4 - 1);
        divisors[i] = (float)(wl < 8192 / 4.0 ? 1 : wl > 8192 / 1.0 ? 8 : 1 / ((1 - sm) / 8 + sm));
    }
    l3.freq_factors = divisors;
    TEST_COND(ls_rope_compute(&l3, 1, inv, &attn) == LS_OK, "llama3 with divisors computes");
    double want[HALF], want_attn, worst = 0;
    l3.freq_factors = NULL;
    reference(&l3, 1, want, &want_attn);
    for (int i = 0; i < HALF; i++) worst = fmax(worst, fabs(inv[i] - want[i]) / want[i]);
    // two roundings: the divisor's to f32, then the frequency's
    TEST_COND(worst <= 2 * F32_ROUNDING, "llama3 from divisors equals the formula: %.2e", worst);
    TEST_COND(attn == 1.0f, "llama3 has no attention factor");

    // LongRoPE: short factors up to the original context, long ones past it; attention factor
    // sqrt(1 + ln s / ln L0) = sqrt(1.25) at s = 8, L0 = 4096, or the one given.
    float lng[HALF], shrt[HALF];
    for (int i = 0; i < HALF; i++) lng[i] = 1.0f + (float)i / 4, shrt[i] = 1.0f + (float)i / 32;
    ls_rope_config lr = method(NONE);
    lr.scaling = LS_ROPE_LONGROPE, lr.factor = 8, lr.factors_long = lng, lr.factors_short = shrt;
    check_against_definition("LongRoPE at the original context (short factors)", &lr, 4096);
    check_against_definition("LongRoPE past it (long factors)", &lr, 4097);
    ls_rope_compute(&lr, 4097, inv, &attn);
    TEST_COND(fabs(attn - sqrt(1.25)) < 1e-7, "LongRoPE attention factor %.9g vs sqrt(1.25)", attn);
    TEST_COND(fabs(inv[HALF - 1] - plain(10000, HALF - 1) / lng[HALF - 1]) <= F32_ROUNDING * inv[HALF - 1] &&
                  fabs(inv[HALF - 1] - plain(10000, HALF - 1) / shrt[HALF - 1]) > 0.5 * inv[HALF - 1],
              "LongRoPE past the original context divides by the long factors");
    lr.attn_factor = 0.7;
    check_against_definition("LongRoPE with a given attention factor", &lr, 100);
    lr.factors_long = NULL;
    TEST_ERR(ls_rope_compute(&lr, 1, inv, &attn), LS_ERR_INVALID, "needs per-frequency factors");
}

// Float64 rotation of x (head_dim D, n_rot rotated) at position pos, the angle formed as the
// kernel forms it (one f32 product; docs/architecture.md, "RoPE"), then cos/sin and the products in
// float64; attn scales both.
static void rotate_ref(const float *x, double *out, const float *inv, int n_rot, double attn, int64_t pos, bool adjacent) {
    for (int j = 0; j < D; j++) out[j] = x[j]; // the unrotated rest passes through
    for (int i = 0; i < n_rot / 2; i++) {
        double th = (double)((float)pos * inv[i]), c = cos(th) * attn, s = sin(th) * attn;
        int a = adjacent ? 2 * i : i, b = adjacent ? 2 * i + 1 : i + n_rot / 2;
        out[a] = x[a] * c - x[b] * s;
        out[b] = x[a] * s + x[b] * c;
    }
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

// The rotation vectors of docs/rope.md §7: x_j = sin(0.1 j + 0.3) at position 4095. The f32 angle of
// ~3070 rad is off the exact one by up to half an f32 ulp (1.2e-4 rad), so outputs agree with
// its exact-angle values to ~2e-4; against the f32-angle rotation, to f32 rounding.
static void test_rotation(void) {
    static const double want[4][8] = {
        {-0.369516185, -0.475740823, -0.479590598, -0.232879883, 0.923281891, -0.921653107, 0.135047332, 0.249858655},
        {0.369072642, -0.320568594, 0.519250415, -0.528250865, -0.643994147, -0.717556777, 1.12495411, -0.236965657},
        {0.131551605, 0.562004056, -0.713658552, -0.735359463, -0.742168215, -1.04120681, 0.642004293, -0.9804867},
        {0.42606312, 0.239685325, -0.323276045, 0.666455226, 0.051791655, -0.96277402, 0.614539281, -0.971604826},
    };
    ls_backend_t *be = NULL;
    ls_status rc = ls_backend_cpu_init(1, -1, &be);
    TEST_COND(rc == LS_OK, "the CPU backend starts: %s", ls_err_msg());
    if (rc != LS_OK) return; // counted as a failure above
    for (int k = 0; k < 4; k++) {
        ls_rope_config r = method(k < 2 ? NONE : LINEAR);
        float inv[HALF], attn, x[D], x0[D];
        double exact[D];
        ls_rope_compute(&r, 1, inv, &attn);
        for (int j = 0; j < D; j++) x[j] = x0[j] = (float)sin(0.1 * j + 0.3);
        ls_rope_freqs f = {D, inv, attn, k % 2 ? LS_ROPE_PAIR_ADJACENT : LS_ROPE_PAIR_HALVES};
        TEST_COND(ls_op_rope(be, x, 1, 1, D, (int64_t[]){4095}, &f) == LS_OK, "rope");
        double worst = 0, worst64 = 0;
        for (int j = 0; j < 8; j++) worst = fmax(worst, fabs(x[j] - want[k][j]));
        TEST_COND(worst < 3e-4, "rotation %d (%s, %s): worst error %.2e against docs/rope.md §7", k, k < 2 ? "none" : "linear 4",
                  k % 2 ? "adjacent" : "halves", worst);
        rotate_ref(x0, exact, inv, D, 1.0, 4095, k % 2);
        for (int j = 0; j < D; j++) worst64 = fmax(worst64, fabs(x[j] - exact[j]));
        TEST_COND(worst64 < 1e-6, "rotation %d: all 64 elements within %.2e of the float64 rotation", k, worst64);
    }
    // YaRN's attention factor scales both cos and sin; partial rotation (32 of 64 dimensions)
    // leaves the rest alone; positions up to 2^20 and negative ones (re-rotation)
    static const int64_t positions[] = {0, 1, 4095, 100000, (1 << 20) - 1, -4096};
    for (int k = 0; k < 4; k++)
        for (size_t p = 0; p < sizeof positions / sizeof *positions; p++) {
            ls_rope_config r = method(k < 2 ? YARN : NONE);
            r.n_rot = k < 2 ? D : D / 2;
            float inv[HALF], attn, x[D], x0[D];
            double exact[D];
            ls_rope_compute(&r, 1, inv, &attn);
            for (int j = 0; j < D; j++) x[j] = x0[j] = (float)cos(0.37 * j - 1.1);
            ls_rope_freqs f = {r.n_rot, inv, attn, k % 2 ? LS_ROPE_PAIR_ADJACENT : LS_ROPE_PAIR_HALVES};
            TEST_COND(ls_op_rope(be, x, 1, 1, D, &positions[p], &f) == LS_OK, "rope");
            rotate_ref(x0, exact, inv, r.n_rot, k < 2 ? 1 + 0.1 * log(4.0) : 1.0, positions[p], k % 2);
            double worst = 0;
            for (int j = 0; j < D; j++) worst = fmax(worst, fabs(x[j] - exact[j]));
            TEST_COND(worst < 2e-6, "%s, %s, position %lld: worst error %.2e against the float64 rotation",
                      k < 2 ? "YaRN x4 (factor 1.1386)" : "32 of 64 dimensions", k % 2 ? "adjacent" : "halves",
                      (long long)positions[p], worst);
        }
    ls_backend_free(be);
}

int main(void) {
    test_table();
    test_closed_forms();
    test_definitions();
    test_refused();
    test_rotation();
    return TEST_REPORT("test_rope");
}
