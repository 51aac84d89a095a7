// attn_tol.h — the tolerance of the CUDA attention check (tests/gpu/test_ops.c) and the proof
// that it is sharp enough to see an off-by-one rule. Header-only, on the CPU twin
// (ls_ref_attention); the proof also runs without a GPU as the ctest gpu_tolerance_selfcheck
// (tests/unit/test_attn_tol.c).
//
// Why this bound: both sides get the same bf16-rounded q, k, v (the f32 entry point rounds
// its inputs to bf16 exactly as ls_f32_to_bf16 does; the convert op is checked bit for bit),
// so the kernel's only bf16 step is P: it rounds the unnormalized weights exp(s - m), in
// (0, 1], to bf16 (unit roundoff u = 2^-8) before P·V, while it sums the normalizer l from
// the f32 values. Each weight is then off by at most u relative, and every output element by
// at most u · sum_j w_j |v_jd|, with w the softmax weights: the output's own scale, per
// element. fp32 scores (exact bf16 products, fp32 sums over at most 128 terms of |q k| <= 1),
// exp2f, log2f and the normalizer add below 2e-4 relative to the weights; ATTN_SLACK (2^-10)
// covers them with margin. A bf16 output adds its own rounding, u · |o| <= u · sum w |v|.
// The log-sum-exp sees only the fp32 steps: ATTN_LSE_TOL absolute.
//
// An off-by-one rule adds or drops one key of weight about 1/(visible keys) per query, which
// moves the outputs by that weight times |v - o| and the lse by about the same weight: for the
// windows of the test (at most ~95 visible keys) several times these bounds.
// attn_tol_selfcheck demonstrates it on the twin for every rule: window W+1 and W-1, sinks
// S+1, group G+1, and full attention seeing one key past the causal boundary.
#ifndef LS_ATTN_TOL_H
#define LS_ATTN_TOL_H

#include "ls_kernels.h"
#include "ls_ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define ATTN_BF16_U (1.0 / 256)   // bf16: 8 significant bits, round to nearest
#define ATTN_SLACK (1.0 / 1024)   // fp32 scores, exp2f, sums
#define ATTN_ABS_TOL 1e-6         // outputs near 0
#define ATTN_LSE_TOL 5e-4f

// Rounds n floats to bf16 in place (as the device's convert does: round to nearest even).
static inline void attn_round_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = ls_bf16_to_f32(ls_f32_to_bf16(x[i]));
}

// The per-element output tolerance of a case (a's q, k, v on the host, already rounded to
// bf16): tol[i] = (u [+ u for a bf16 output] + slack) · sum_j w_j |v_jd| + ATTN_ABS_TOL, where
// the sum is the twin's attention with |v| for v.
static inline void attn_out_tol(const ls_attn_args *a, bool bf16_out, float *tol) {
    size_t nk = (size_t)a->n_kv_head * (size_t)a->kv_stride * (size_t)a->head_dim;
    size_t nq = (size_t)a->n_q * (size_t)a->n_head * (size_t)a->head_dim;
    float *absv = malloc(nk * sizeof *absv + 4);
    for (size_t i = 0; i < nk; i++) absv[i] = fabsf(a->v[i]);
    ls_attn_args m = *a;
    m.v = absv, m.out = tol, m.lse = NULL;
    ls_ref_attention(&m);
    double rel = (bf16_out ? 2 : 1) * ATTN_BF16_U + ATTN_SLACK;
    for (size_t i = 0; i < nq; i++) tol[i] = (float)(rel * tol[i] + ATTN_ABS_TOL);
    free(absv);
}

// Elements where got is outside want ± tol (NaN/inf must match exactly); *worst: the largest
// |got - want| / tol seen.
static inline int attn_misses(const float *got, const float *want, const float *tol, float tol_all, int64_t n,
                              double *worst) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float g = got[i], w = want[i], t = tol ? tol[i] : tol_all;
        if (!isfinite(w)) {
            bad += isnan(w) ? !isnan(g) : g != w;
            continue;
        }
        double r = fabs((double)g - w) / t;
        if (!(r <= 1)) bad++;
        if (r > *worst || isnan(r)) *worst = isnan(r) ? INFINITY : r;
    }
    return bad;
}

static inline float attn_frand(unsigned *seed) { return (float)rand_r(seed) / (float)RAND_MAX * 2.0f - 1.0f; }

// The off-by-one demonstration: for each rule and head dim, a random case of the test's kind
// (bf16-rounded inputs in [-1, 1], windows 1..90, sinks 1..4, groups 2..41, GQA) whose rule
// binds, the twin's result under the rule, and the twin's results under each off-by-one
// variant, which must each be outside the bound by at least 2x somewhere (output or lse), so
// that a kernel error within the bound cannot hide one. Prints one line per variant with the
// largest excess, and whether the former absolute tolerances (3e-2 on outputs, 2e-2 on lse)
// saw it; returns the number of variants the bound missed.
static inline int attn_tol_selfcheck(unsigned seed, int64_t min_window, int64_t max_window, bool verbose) {
    static const int dims[] = {32, 64, 128};
    int missed = 0;
    for (int kind = 0; kind < LS_ATTN_KIND_COUNT; kind++)
        for (int di = 0; di < 3; di++) {
            int hd = dims[di], n_kv_head = 1 + rand_r(&seed) % 3, n_head = n_kv_head * (1 + di);
            int64_t window = min_window + rand_r(&seed) % (max_window - min_window + 1);
            bool wide = window > 90; // fewer queries (the twin's cost grows with the window)
            int64_t n_q = wide ? 24 + rand_r(&seed) % 24 : 100 + rand_r(&seed) % 100;
            int64_t q_pos0 = rand_r(&seed) % 50 + (wide ? window : 0), n_kv = q_pos0 + n_q;
            ls_attn_rule rule = {.kind = (ls_attn_kind)kind, .group = 2 + rand_r(&seed) % 40,
                                 .sinks = 1 + rand_r(&seed) % 4, .window = window, .n_head = n_head};
            size_t nq = (size_t)(n_q * n_head * hd), nk = (size_t)(n_kv_head * n_kv * hd), nl = (size_t)(n_q * n_head);
            float *q = malloc(nq * 4), *qs = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4);
            for (size_t i = 0; i < nq; i++) q[i] = attn_frand(&seed), qs[i] = attn_frand(&seed);
            for (size_t i = 0; i < nk; i++) k[i] = attn_frand(&seed), v[i] = attn_frand(&seed);
            attn_round_bf16(q, nq), attn_round_bf16(qs, nq), attn_round_bf16(k, nk), attn_round_bf16(v, nk);
            float *want = malloc(nq * 4), *lw = malloc(nl * 4), *tol = malloc(nq * 4), *obo = malloc(nq * 4),
                  *lo = malloc(nl * 4);
            ls_attn_args a = {.q = q, .q_sink = kind == LS_ATTN_SINK ? qs : NULL, .k = k, .v = v, .out = want, .lse = lw,
                              .n_q = n_q, .q_pos0 = q_pos0, .n_kv = n_kv, .kv_stride = n_kv, .n_head = n_head,
                              .n_kv_head = n_kv_head, .head_dim = hd, .scale = 1.0f / sqrtf((float)hd), .rule = rule};
            ls_ref_attention(&a);
            attn_out_tol(&a, false, tol);
            // the variants an off-by-one in a kernel's masks would produce
            ls_attn_args var[4];
            const char *name[4];
            int nv = 0;
            if (kind == LS_ATTN_SINK || kind == LS_ATTN_WINDOW) {
                var[nv] = a, var[nv].rule.window++, name[nv++] = "window W+1";
                if (rule.window > 1) var[nv] = a, var[nv].rule.window--, name[nv++] = "window W-1";
            }
            if (kind == LS_ATTN_SINK) var[nv] = a, var[nv].rule.sinks++, name[nv++] = "sinks S+1";
            if (kind == LS_ATTN_S2) var[nv] = a, var[nv].rule.group++, name[nv++] = "group G+1";
            if (kind == LS_ATTN_FULL) var[nv] = a, var[nv].q_pos0++, name[nv++] = "one key past the diagonal";
            for (int i = 0; i < nv; i++) {
                var[i].out = obo, var[i].lse = lo;
                ls_ref_attention(&var[i]);
                double wo = 0, wl = 0, old = 0;
                int bo = attn_misses(obo, want, tol, 0, (int64_t)nq, &wo), bl = attn_misses(lo, lw, NULL, ATTN_LSE_TOL, (int64_t)nl, &wl);
                int old_seen = attn_misses(obo, want, NULL, 3e-2f, (int64_t)nq, &old) + attn_misses(lo, lw, NULL, 2e-2f, (int64_t)nl, &old);
                bool seen = wo >= 2 || wl >= 2;
                missed += !seen;
                if (verbose || !seen)
                    printf("  %-6s hd=%-3d W=%-2lld S=%lld G=%-2lld n_q=%lld: %-26s %s the bound: %6d outputs (up to %.1fx), "
                           "%5d lse (up to %.1fx); the former 3e-2/2e-2 saw %d\n",
                           ls_attn_kind_name((ls_attn_kind)kind), hd, (long long)rule.window, (long long)rule.sinks,
                           (long long)rule.group, (long long)n_q, name[i], seen ? "exceeds" : "STAYS WITHIN", bo, wo, bl, wl,
                           old_seen);
            }
            free(q), free(qs), free(k), free(v), free(want), free(lw), free(tol), free(obo), free(lo);
        }
    return missed;
}

#endif // LS_ATTN_TOL_H
