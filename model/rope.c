// rope.c — RoPE frequencies for every method: none, linear (position interpolation), static
// NTK, dynamic NTK, YaRN, Llama 3 and LongRoPE; a changed base (ABF) is just freq_base. Each
// formula is evaluated in double and rounded once to f32; the kernel then forms each angle as
// one f32 product of the exact position and this frequency. Docs: docs/rope.md §1 and §3.
// Tests: tests/unit/test_rope.c (docs/rope.md §7's values), tests/oracle/test_forward.py.
#include "ls_model.h"

#include <math.h>

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

ls_status ls_rope_compute(const ls_rope_config *r, int64_t seq_len, float *inv_freq, float *attn_factor) {
    int n = r->n_rot, half = n / 2;
    if (n < 2 || n % 2 || n > 1024) return LS_ERR(LS_ERR_INVALID, "rope: %d rotary dimensions", n);
    if (!(r->freq_base > 1.0) || !(r->factor > 0.0))
        return LS_ERR(LS_ERR_INVALID, "rope: base %g and factor %g must be positive (base > 1)", r->freq_base, r->factor);
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
    case LS_ROPE_LONGROPE:
        if (!r->factors_long || !r->factors_short)
            return LS_ERR(LS_ERR_INVALID, "longrope scaling needs per-frequency factors (rope_factors_long/short)");
        longrope(r, seq_len, f, attn_factor);
        break;
    default: break;
    }
    for (int i = 0; i < half; i++) inv_freq[i] = (float)f[i];
    return LS_OK;
}
