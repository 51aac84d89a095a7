// rope.c — RoPE frequencies for every method: none, linear (position interpolation), static
// NTK, dynamic NTK, YaRN, Llama 3 and LongRoPE; a changed base (ABF) is just freq_base. Each
// formula is evaluated in double and rounded once to f32; the kernel then forms each angle as
// one f32 product of the exact position and this frequency. ls_rope_check is the one check
// of the final settings (file, command line, job), and every frequency computed must be
// finite and positive. Docs: docs/rope.md §1 and §3. Tests: tests/unit/test_rope.c
// (docs/rope.md §7's values; settings that would give NaN), tests/oracle/test_forward.py.
#include "ls_model.h"

#include <math.h>
#include <stdint.h>

static double base_freq(double base, int i, int n_rot) { return pow(base, -2.0 * i / n_rot); }

// YaRN: the pair index whose wavelength turns n_turns times over the original context.
static double yarn_corr_dim(double n_turns, int n_rot, double base, double orig_ctx) {
    return n_rot * log(orig_ctx / (n_turns * 2.0 * M_PI)) / (2.0 * log(base));
}

static void yarn(const ls_rope_config *r, double *f, float *attn) {
    int half = r->n_rot / 2;
    double lo = floor(yarn_corr_dim(r->yarn_beta_fast, r->n_rot, r->freq_base, (double)r->orig_ctx));
    double hi = ceil(yarn_corr_dim(r->yarn_beta_slow, r->n_rot, r->freq_base, (double)r->orig_ctx));
    if (lo < 0) lo = 0;
    if (hi > r->n_rot - 1) hi = r->n_rot - 1;
    if (lo == hi) hi += 0.001;
    for (int i = 0; i < half; i++) {
        double ramp = ((double)i - lo) / (hi - lo);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        double extrap = 1.0 - ramp; // 1: keep the original frequency (fast dimensions)
        f[i] = f[i] / r->factor * (1.0 - extrap) + f[i] * extrap;
    }
    double g = r->factor <= 1.0 ? 1.0 : 0.1 * log(r->factor) + 1.0;
    *attn = (float)(g * (r->attn_factor > 0 ? r->attn_factor : 1.0));
}

static void llama3(const ls_rope_config *r, double *f) {
    int half = r->n_rot / 2;
    if (r->freq_factors) { // the converter's divisors (Llama 3.1 GGUF)
        for (int i = 0; i < half; i++) f[i] /= r->freq_factors[i];
        return;
    }
    double lo_ff = r->llama3_low_freq_factor, hi_ff = r->llama3_high_freq_factor, L0 = (double)r->orig_ctx;
    double wl_lo = L0 / lo_ff, wl_hi = L0 / hi_ff;
    for (int i = 0; i < half; i++) {
        double wl = 2.0 * M_PI / f[i];
        if (wl < wl_hi) continue;
        if (wl > wl_lo) {
            f[i] /= r->factor;
            continue;
        }
        double smooth = (L0 / wl - lo_ff) / (hi_ff - lo_ff);
        f[i] = (1.0 - smooth) * f[i] / r->factor + smooth * f[i];
    }
}

static void longrope(const ls_rope_config *r, int64_t seq_len, double *f, float *attn) {
    const float *ext = seq_len > r->orig_ctx ? r->factors_long : r->factors_short;
    for (int i = 0; i < r->n_rot / 2; i++) f[i] /= ext[i];
    double s = r->factor;
    *attn = r->attn_factor > 0 ? (float)r->attn_factor
            : s <= 1.0         ? 1.0f
                               : (float)sqrt(1.0 + log(s) / log((double)r->orig_ctx));
}

// --- checks ---------------------------------------------------------------------------------
// The settings may come from config.json, GGUF keys or the command line (or a job's settings):
// each message names the setting and its value, and where each source spells it.

#define SRC_BASE "rope_theta in config.json, rope.freq_base in GGUF, --rope-freq-base"
#define SRC_FACTOR "rope_scaling.factor in config.json, rope.scaling.factor in GGUF, --rope-scale"
#define SRC_ORIG "rope_scaling.original_max_position_embeddings in config.json, " \
                 "rope.scaling.original_context_length in GGUF, --yarn-orig-ctx"
#define SRC_ATTN "rope_scaling.attention_factor in config.json, rope.scaling.attn_factor in GGUF, --yarn-attn-factor"
#define SRC_BETA_FAST "rope_scaling.beta_fast in config.json, rope.scaling.yarn_beta_fast in GGUF, --yarn-beta-fast"
#define SRC_BETA_SLOW "rope_scaling.beta_slow in config.json, rope.scaling.yarn_beta_slow in GGUF, --yarn-beta-slow"
#define SRC_LLAMA3 "rope_scaling.low_freq_factor / high_freq_factor in config.json, " \
                   "rope.scaling.low_freq_factor / high_freq_factor in GGUF"

static bool positive(double v) { return v > 0 && isfinite(v); }

// Every entry of a per-frequency tensor finite and positive (they divide the frequencies).
static ls_status check_factors(const char *tensor, const char *json, const float *x, int n) {
    for (int i = 0; i < n; i++)
        if (!positive(x[i]))
            return LS_ERR(LS_ERR_INVALID, "rope: %s[%d] = %g must be a finite positive number (%s)", tensor, i, (double)x[i],
                          json);
    return LS_OK;
}

static ls_status check_method(const ls_rope_config *r) {
    int half = r->n_rot / 2;
    switch (r->scaling) {
    case LS_ROPE_YARN:
        if (!positive(r->yarn_beta_fast))
            return LS_ERR(LS_ERR_INVALID, "rope: YaRN beta_fast = %g must be a finite positive number (%s)", r->yarn_beta_fast,
                          SRC_BETA_FAST);
        if (!positive(r->yarn_beta_slow))
            return LS_ERR(LS_ERR_INVALID, "rope: YaRN beta_slow = %g must be a finite positive number (%s)", r->yarn_beta_slow,
                          SRC_BETA_SLOW);
        return LS_OK;
    case LS_ROPE_LLAMA3:
        if (r->freq_factors) return check_factors("rope_freqs.weight", "the Llama 3.1 divisors of a GGUF", r->freq_factors, half);
        if (!(positive(r->llama3_low_freq_factor) && isfinite(r->llama3_high_freq_factor) &&
              r->llama3_high_freq_factor > r->llama3_low_freq_factor))
            return LS_ERR(LS_ERR_INVALID, "rope: Llama 3 low_freq_factor = %g and high_freq_factor = %g must satisfy "
                          "0 < low < high (%s)", r->llama3_low_freq_factor, r->llama3_high_freq_factor, SRC_LLAMA3);
        return LS_OK;
    case LS_ROPE_LONGROPE:
        if (!r->factors_long || !r->factors_short)
            return LS_ERR(LS_ERR_INVALID, "longrope scaling needs per-frequency factors (rope_factors_long/short)");
        LS_CHECK(check_factors("rope_factors_long.weight", "rope_scaling.long_factor in config.json", r->factors_long, half));
        return check_factors("rope_factors_short.weight", "rope_scaling.short_factor in config.json", r->factors_short, half);
    default: return LS_OK;
    }
}

ls_status ls_rope_check(const ls_rope_config *r) {
    if (r->n_rot < 2 || r->n_rot % 2 || r->n_rot > 1024)
        return LS_ERR(LS_ERR_INVALID, "rope: %d rotary dimensions (an even number from 2 to 1024)", r->n_rot);
    if (!(isfinite(r->freq_base) && r->freq_base > 1))
        return LS_ERR(LS_ERR_INVALID, "rope: freq_base = %g must be a finite number greater than 1 (%s)", r->freq_base, SRC_BASE);
    if (!(positive(r->factor) && r->factor <= 1e6))
        return LS_ERR(LS_ERR_INVALID, "rope: scale factor = %g must be a positive number up to 1e6 (%s)", r->factor, SRC_FACTOR);
    if (r->orig_ctx < 1 || r->orig_ctx > INT32_MAX)
        return LS_ERR(LS_ERR_INVALID, "rope: original context = %lld is not in 1..2^31-1 (%s)", (long long)r->orig_ctx, SRC_ORIG);
    if (!(isfinite(r->attn_factor) && r->attn_factor >= 0))
        return LS_ERR(LS_ERR_INVALID, "rope: attention factor = %g must be a finite number, 0 or more (%s)", r->attn_factor,
                      SRC_ATTN);
    return check_method(r);
}

// What the settings gave: every frequency and the attention factor finite and positive.
static ls_status check_result(const ls_rope_config *r, const double *f, float attn) {
    for (int i = 0; i < r->n_rot / 2; i++)
        if (!positive((float)f[i]))
            return LS_ERR(LS_ERR_INVALID, "rope: %s scaling (base %g, factor %g) gives pair %d the frequency %g: "
                          "frequencies must be finite and positive", ls_rope_scaling_name(r->scaling), r->freq_base,
                          r->factor, i, (double)(float)f[i]);
    if (!positive(attn))
        return LS_ERR(LS_ERR_INVALID, "rope: %s scaling (factor %g) gives the attention factor %g",
                      ls_rope_scaling_name(r->scaling), r->factor, (double)attn);
    return LS_OK;
}

// --- frequencies ---------------------------------------------------------------------------

ls_status ls_rope_compute(const ls_rope_config *r, int64_t seq_len, float *inv_freq, float *attn_factor) {
    LS_CHECK(ls_rope_check(r));
    int n = r->n_rot, half = n / 2;
    double base = r->freq_base, f[512];
    *attn_factor = 1.0f;
    if (r->scaling == LS_ROPE_NTK) base *= pow(r->factor, (double)n / (n - 2));
    if (r->scaling == LS_ROPE_DYNAMIC) {
        double L = (double)(seq_len > r->orig_ctx ? seq_len : r->orig_ctx);
        base *= pow(r->factor * L / (double)r->orig_ctx - (r->factor - 1.0), (double)n / (n - 2));
    }
    for (int i = 0; i < half; i++) f[i] = base_freq(base, i, n);
    switch (r->scaling) {
    case LS_ROPE_LINEAR:
        for (int i = 0; i < half; i++) f[i] /= r->factor;
        break;
    case LS_ROPE_YARN: yarn(r, f, attn_factor); break;
    case LS_ROPE_LLAMA3: llama3(r, f); break;
    case LS_ROPE_LONGROPE: longrope(r, seq_len, f, attn_factor); break;
    default: break;
    }
    LS_CHECK(check_result(r, f, *attn_factor));
    for (int i = 0; i < half; i++) inv_freq[i] = (float)f[i];
    return LS_OK;
}
