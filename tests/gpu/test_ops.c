// test_ops.c — the GPU op-consistency test: every CUDA op (through the CUDA backend of the op
// API) against its CPU twin in kernels/ref
// on random shapes (odd sizes included), with guard bytes around every device output to catch
// out-of-bounds writes, and a tolerance per op (attention: attn_tol.h, a bound from bf16
// rounding relative to each output's scale, shown first to be exceeded by an off-by-one rule).
// `-o NAME` runs one op; `--perf` also times each op. Exits 77 (ctest: skipped) with the
// reason when no GPU is visible, after the CPU-only sharpness check.
// Run by tests/gpu/run (also under compute-sanitizer there).
#include "attn_tol.h"
#include "ls_cuda.h"
#include "ls_kernels.h"
#include "ls_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GUARD 64 // elements of sentinel on each side of a device output
static const uint32_t SENTINEL = 0x7fbadbadu;

typedef struct op_case {
    const char *name;
    ls_status (*run)(unsigned *seed, bool perf, int *wrong, double *ms);
} op_case;

static const ls_dtype g_types[] = {LS_F32, LS_F16, LS_BF16, LS_Q8_0, LS_Q4_0, LS_Q4_1,
                                   LS_Q5_0, LS_Q5_1, LS_Q4_K, LS_Q5_K, LS_Q6_K};

// A device buffer of n 4-byte elements with GUARD sentinel elements on each side.
static ls_status guarded_alloc(size_t n, uint32_t **base, void **inner) {
    size_t total = (n + 2 * GUARD) * 4;
    uint32_t *host = malloc(total);
    for (size_t i = 0; i < n + 2 * GUARD; i++) host[i] = SENTINEL;
    LS_CHECK(ls_cuda_malloc((void **)base, total));
    LS_CHECK(ls_cuda_upload(*base, host, total));
    free(host);
    *inner = *base + GUARD;
    return LS_OK;
}

// Downloads the inner n elements (elem_bytes each) and counts guard words that changed:
// every word outside the ones the output occupies must still hold the sentinel.
static ls_status guarded_read(uint32_t *base, size_t n, size_t elem_bytes, void *out, int *damaged) {
    if (n > ((size_t)1 << 40) || elem_bytes > 4) return LS_ERR(LS_ERR_INVALID, "guarded_read: bad size");
    size_t words = n + 2 * GUARD, used = (n * elem_bytes + 3) / 4;
    uint32_t *host = malloc(words * 4);
    LS_CHECK(ls_cuda_download(host, base, words * 4));
    *damaged = 0;
    for (size_t i = 0; i < words; i++)
        if (i < GUARD || i >= GUARD + used) *damaged += host[i] != SENTINEL;
    memcpy(out, host + GUARD, n * elem_bytes);
    free(host);
    return LS_OK;
}

static void random_row(ls_dtype t, int64_t n, uint8_t *p, unsigned *seed) {
    const ls_dtype_info *ti = ls_dtype_get(t);
    size_t bytes = (size_t)(n / ti->block) * ti->block_bytes;
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)(rand_r(seed) >> 5);
    if (t == LS_F32)
        for (int64_t j = 0; j < n; j++) ((float *)p)[j] = (float)(rand_r(seed) % 2001 - 1000) / 100.0f;
    if (t == LS_F32 || t == LS_F16 || t == LS_BF16) return;
    for (int64_t b = 0; b < n / ti->block; b++) { // finite scales
        uint16_t d = ls_f32_to_fp16(0.01f + (float)(rand_r(seed) % 100) / 1000.0f);
        memcpy(p + b * ti->block_bytes + (t == LS_Q6_K ? 208 : 0), &d, 2);
    }
}

// dequant (f32 out, bit-exact) and dequant_bf16 (bf16 of the f32 value, exact).
static ls_status dequant_case(unsigned *seed, bool bf16, bool perf, int *wrong, double *ms) {
    *wrong = 0;
    *ms = 0;
    for (size_t k = 0; k < sizeof g_types / sizeof *g_types; k++) {
        ls_dtype t = g_types[k];
        const ls_dtype_info *ti = ls_dtype_get(t);
        int64_t n = ti->block * (1 + rand_r(seed) % 257);
        if (ti->block == 1) n = 1 + rand_r(seed) % 100003; // odd sizes
        if (perf) n = ti->block * (int64_t)((1 << 24) / ti->block);
        size_t bytes = (size_t)(n / ti->block) * ti->block_bytes;
        uint8_t *src = malloc(bytes);
        float *want = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
        random_row(t, n, src, seed);
        LS_CHECK(ls_ref_dequant_row(t, src, want, n));
        void *dsrc, *dout;
        uint32_t *base;
        LS_CHECK(ls_cuda_malloc(&dsrc, bytes));
        LS_CHECK(ls_cuda_upload(dsrc, src, bytes));
        LS_CHECK(guarded_alloc((size_t)n, &base, &dout));
        double t0 = ls_time_ms();
        LS_CHECK(bf16 ? ls_cuda_dequant_bf16(t, dsrc, dout, n) : ls_cuda_dequant_f32(t, dsrc, dout, n));
        LS_CHECK(ls_cuda_sync());
        *ms += ls_time_ms() - t0;
        int damaged = 0;
        LS_CHECK(guarded_read(base, (size_t)n, bf16 ? 2 : 4, got, &damaged));
        int bad = damaged;
        for (int64_t j = 0; j < n; j++) {
            float w = want[j];
            if (bf16) {
                uint16_t g = ((uint16_t *)got)[j], e = ls_f32_to_bf16(w);
                bad += isnan(w) ? !isnan(ls_bf16_to_f32(g)) : g != e;
            } else {
                bad += isnan(w) ? !isnan(got[j]) : memcmp(&w, &got[j], 4) != 0;
            }
        }
        if (bad) fprintf(stderr, "  %s %s n=%lld: %d wrong (%d guard)\n", bf16 ? "dequant_bf16" : "dequant",
                         ti->name, (long long)n, bad, damaged);
        *wrong += bad;
        LS_CHECK(ls_cuda_free(dsrc));
        LS_CHECK(ls_cuda_free(base));
        free(src), free(want), free(got);
    }
    return LS_OK;
}

static ls_status op_dequant(unsigned *s, bool perf, int *wrong, double *ms) { return dequant_case(s, false, perf, wrong, ms); }
static ls_status op_dequant_bf16(unsigned *s, bool perf, int *wrong, double *ms) { return dequant_case(s, true, perf, wrong, ms); }

// --- the backend's ops --------------------------------------------------------------------------

static ls_backend_t *g_be;

static float frand(unsigned *seed) { return (float)rand_r(seed) / (float)RAND_MAX * 2.0f - 1.0f; }
static float *rand_vec(size_t n, unsigned *seed) {
    float *v = malloc(n * sizeof *v + 1);
    for (size_t i = 0; i < n; i++) v[i] = frand(seed);
    return v;
}

// A device copy of a host array.
static ls_status to_dev(const void *host, size_t bytes, void **dev) {
    LS_CHECK(ls_cuda_malloc(dev, bytes ? bytes : 1));
    return ls_cuda_upload(*dev, host, bytes);
}

// Compares n floats: |got - want| <= atol + rtol·|want| (tol[i] instead of atol when given);
// NaN/inf must match exactly. Returns the count of misses and prints the first.
static int compare(const char *what, const float *got, const float *want, int64_t n, float atol, float rtol,
                   const float *tol) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float g = got[i], w = want[i], t = (tol ? tol[i] : atol) + rtol * fabsf(w);
        bool ok = isfinite(w) ? fabsf(g - w) <= t : (isnan(w) ? isnan(g) : g == w);
        if (!ok && bad++ == 0) fprintf(stderr, "  %s[%lld]: got %.7g want %.7g (tol %.3g)\n", what, (long long)i, g, w, t);
    }
    return bad;
}

// Runs an op with one guarded f32 output of n elements initialised from init (or zeros);
// got receives the result; *damaged the guard words it overwrote.
typedef struct gout {
    uint32_t *base;
    float *dev;
    size_t n;
} gout;
static ls_status gout_init(gout *g, size_t n, const float *init) {
    g->n = n;
    LS_CHECK(guarded_alloc(n, &g->base, (void **)&g->dev));
    if (init) LS_CHECK(ls_cuda_upload(g->dev, init, n * 4));
    return LS_OK;
}
static ls_status gout_read(gout *g, float *got, int *damaged) {
    LS_CHECK(ls_backend_sync(g_be)); // the op ran on the backend's stream
    LS_CHECK(guarded_read(g->base, g->n, 4, got, damaged));
    return ls_cuda_free(g->base);
}

// A random row with finite, moderate values (for the ops that multiply: no inf/NaN from
// random half-precision bits, finite block minimums).
static void finite_row(ls_dtype t, int64_t n, uint8_t *p, unsigned *seed) {
    random_row(t, n, p, seed);
    const ls_dtype_info *ti = ls_dtype_get(t);
    for (int64_t j = 0; j < n && (t == LS_F16 || t == LS_BF16); j++) {
        float v = (float)(rand_r(seed) % 2001 - 1000) / 500.0f;
        uint16_t h = t == LS_F16 ? ls_f32_to_fp16(v) : ls_f32_to_bf16(v);
        memcpy(p + 2 * j, &h, 2);
    }
    if (t == LS_Q4_1 || t == LS_Q5_1 || t == LS_Q4_K || t == LS_Q5_K)
        for (int64_t b = 0; b < n / ti->block; b++) { // the block minimum (or dmin) after d
            uint16_t m = ls_f32_to_fp16((float)(rand_r(seed) % 100) / 1000.0f);
            memcpy(p + b * ti->block_bytes + 2, &m, 2);
        }
}

// matmul: every weight type, odd row counts, bf16 GEMM inputs: the tolerance per output is
// 2^-7 of sum |x||w| (each operand rounded to bf16) plus fp32 accumulation.
static ls_status op_matmul(unsigned *seed, bool perf, int *wrong, double *ms) {
    (void)perf;
    *wrong = 0, *ms = 0;
    for (size_t k = 0; k < sizeof g_types / sizeof *g_types; k++) {
        ls_dtype t = g_types[k];
        const ls_dtype_info *ti = ls_dtype_get(t);
        int64_t n_in = ti->block * (1 + rand_r(seed) % (ti->block >= 256 ? 3 : 9)), n_out = 1 + rand_r(seed) % 97;
        if (ti->block == 1) n_in = 1 + rand_r(seed) % 300;
        int64_t m = k % 3 == 0 ? 1 : 1 + rand_r(seed) % 41;
        uint64_t rb;
        ls_dtype_row_bytes(t, (uint64_t)n_in, &rb);
        uint8_t *wd = malloc(rb * (size_t)n_out);
        for (int64_t r = 0; r < n_out; r++) finite_row(t, n_in, wd + r * rb, seed);
        ls_weight w = {t, n_in, n_out, (size_t)rb, wd};
        float *x = rand_vec((size_t)(m * n_in), seed), *want = malloc((size_t)(m * n_out) * 4),
              *got = malloc((size_t)(m * n_out) * 4), *tol = calloc((size_t)(m * n_out), 4), *row = malloc((size_t)n_in * 4);
        ls_ref_matmul(&w, x, want, m);
        for (int64_t r = 0; r < n_out; r++) {
            ls_ref_dequant_row(t, wd + r * rb, row, n_in);
            for (int64_t i = 0; i < m; i++) {
                double a = 0;
                for (int64_t j = 0; j < n_in; j++) a += fabs((double)x[i * n_in + j] * row[j]);
                tol[i * n_out + r] = (float)(a / 128.0 + 1e-6);
            }
        }
        // through a weight loaded once (bf16 on the device) and straight from the raw type
        for (int loaded = 0; loaded < 2; loaded++) {
            void *draw, *dx;
            ls_weight dw;
            LS_CHECK(to_dev(wd, rb * (size_t)n_out, &draw));
            LS_CHECK(to_dev(x, (size_t)(m * n_in) * 4, &dx));
            ls_weight raw = {t, n_in, n_out, (size_t)rb, draw};
            if (loaded) LS_CHECK(ls_backend_weight_load(g_be, &w, &dw));
            gout y;
            LS_CHECK(gout_init(&y, (size_t)(m * n_out), NULL));
            LS_CHECK(ls_op_matmul(g_be, loaded ? &dw : &raw, dx, y.dev, m));
            int damaged;
            LS_CHECK(gout_read(&y, got, &damaged));
            int bad = damaged + compare("matmul", got, want, m * n_out, 0, 0, tol);
            if (bad) fprintf(stderr, "  matmul %s [%lld x %lld] m=%lld %s: %d wrong\n", ti->name, (long long)n_out,
                             (long long)n_in, (long long)m, loaded ? "loaded" : "raw", bad);
            *wrong += bad;
            if (loaded) ls_backend_weight_release(g_be, &dw);
            LS_CHECK(ls_cuda_free(draw));
            LS_CHECK(ls_cuda_free(dx));
        }
        free(wd), free(x), free(want), free(got), free(tol), free(row);
    }
    return LS_OK;
}

static ls_status op_get_rows(unsigned *seed, bool perf, int *wrong, double *ms) {
    (void)perf;
    *wrong = 0, *ms = 0;
    for (size_t k = 0; k < sizeof g_types / sizeof *g_types; k++) {
        ls_dtype t = g_types[k];
        const ls_dtype_info *ti = ls_dtype_get(t);
        int64_t n_in = ti->block * (1 + rand_r(seed) % 5), n_out = 3 + rand_r(seed) % 50, m = 1 + rand_r(seed) % 33;
        if (ti->block == 1) n_in = 1 + rand_r(seed) % 300;
        uint64_t rb;
        ls_dtype_row_bytes(t, (uint64_t)n_in, &rb);
        uint8_t *wd = malloc(rb * (size_t)n_out);
        for (int64_t r = 0; r < n_out; r++) random_row(t, n_in, wd + r * rb, seed);
        int32_t *ids = malloc((size_t)m * 4);
        for (int64_t i = 0; i < m; i++) ids[i] = rand_r(seed) % (int)n_out;
        ls_weight w = {t, n_in, n_out, (size_t)rb, wd};
        float *want = malloc((size_t)(m * n_in) * 4), *got = malloc((size_t)(m * n_in) * 4);
        ls_ref_get_rows(&w, ids, m, want);
        void *dw;
        LS_CHECK(to_dev(wd, rb * (size_t)n_out, &dw));
        ls_weight dwt = {t, n_in, n_out, (size_t)rb, dw};
        gout y;
        LS_CHECK(gout_init(&y, (size_t)(m * n_in), NULL));
        LS_CHECK(ls_op_get_rows(g_be, &dwt, ids, m, y.dev));
        int damaged;
        LS_CHECK(gout_read(&y, got, &damaged));
        int bad = damaged + compare("get_rows", got, want, m * n_in, 0, 0, NULL); // bit-exact dequantization
        if (bad) fprintf(stderr, "  get_rows %s: %d wrong\n", ti->name, bad);
        *wrong += bad;
        LS_CHECK(ls_cuda_free(dw));
        free(wd), free(ids), free(want), free(got);
    }
    return LS_OK;
}

static ls_status op_rmsnorm(unsigned *seed, bool perf, int *wrong, double *ms) {
    (void)perf;
    *wrong = 0, *ms = 0;
    for (int rep = 0; rep < 6; rep++) {
        int64_t m = 1 + rand_r(seed) % 37, n = 1 + rand_r(seed) % 3000;
        float *x = rand_vec((size_t)(m * n), seed), *w = rand_vec((size_t)n, seed), *want = malloc((size_t)(m * n) * 4),
              *got = malloc((size_t)(m * n) * 4);
        ls_ref_rmsnorm(x, w, want, m, n, 1e-5f);
        void *dx, *dw;
        LS_CHECK(to_dev(x, (size_t)(m * n) * 4, &dx));
        LS_CHECK(to_dev(w, (size_t)n * 4, &dw));
        gout y;
        LS_CHECK(gout_init(&y, (size_t)(m * n), NULL));
        LS_CHECK(ls_op_rmsnorm(g_be, dx, dw, y.dev, m, n, 1e-5f));
        int damaged;
        LS_CHECK(gout_read(&y, got, &damaged));
        *wrong += damaged + compare("rmsnorm", got, want, m * n, 1e-6f, 2e-5f, NULL);
        LS_CHECK(ls_cuda_free(dx)); LS_CHECK(ls_cuda_free(dw));
        free(x), free(w), free(want), free(got);
    }
    return LS_OK;
}

// swiglu, add, fill and convert (element-wise, odd lengths).
static ls_status op_elementwise(unsigned *seed, bool perf, int *wrong, double *ms) {
    (void)perf;
    *wrong = 0, *ms = 0;
    for (int rep = 0; rep < 4; rep++) {
        int64_t n = 1 + rand_r(seed) % 100003;
        float *a = rand_vec((size_t)n, seed), *b = rand_vec((size_t)n, seed), *want = malloc((size_t)n * 4),
              *got = malloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) a[i] *= 8; // silu over a wider range
        void *da, *db;
        LS_CHECK(to_dev(a, (size_t)n * 4, &da));
        LS_CHECK(to_dev(b, (size_t)n * 4, &db));
        gout y;
        ls_ref_swiglu(a, b, want, n);
        LS_CHECK(gout_init(&y, (size_t)n, NULL));
        LS_CHECK(ls_op_swiglu(g_be, da, db, y.dev, n));
        int damaged;
        LS_CHECK(gout_read(&y, got, &damaged));
        *wrong += damaged + compare("swiglu", got, want, n, 1e-6f, 1e-5f, NULL);
        for (int64_t i = 0; i < n; i++) want[i] = b[i] + a[i];
        LS_CHECK(gout_init(&y, (size_t)n, b));
        LS_CHECK(ls_op_add(g_be, y.dev, da, n));
        LS_CHECK(gout_read(&y, got, &damaged));
        *wrong += damaged + compare("add", got, want, n, 0, 0, NULL);
        for (int64_t i = 0; i < n; i++) want[i] = -INFINITY;
        LS_CHECK(gout_init(&y, (size_t)n, NULL));
        LS_CHECK(ls_op_fill(g_be, y.dev, -INFINITY, n));
        LS_CHECK(gout_read(&y, got, &damaged));
        *wrong += damaged + compare("fill", got, want, n, 0, 0, NULL);
        // convert f32 -> bf16 -> f32 through the device: exactly the host's rounding
        for (int64_t i = 0; i < n; i++) want[i] = ls_bf16_to_f32(ls_f32_to_bf16(a[i]));
        void *d16;
        LS_CHECK(ls_cuda_malloc(&d16, (size_t)n * 2));
        LS_CHECK(gout_init(&y, (size_t)n, NULL));
        LS_CHECK(ls_op_convert(g_be, LS_BF16, d16, 0, LS_F32, da, 0, (size_t)n, 1));
        LS_CHECK(ls_op_convert(g_be, LS_F32, y.dev, 0, LS_BF16, d16, 0, (size_t)n, 1));
        LS_CHECK(gout_read(&y, got, &damaged));
        *wrong += damaged + compare("convert", got, want, n, 0, 0, NULL);
        LS_CHECK(ls_cuda_free(d16));
        LS_CHECK(ls_cuda_free(da)); LS_CHECK(ls_cuda_free(db));
        free(a), free(b), free(want), free(got);
    }
    return LS_OK;
}

// rope: both pairings, partial rotation, positions up to 2^20 and negative (re-rotation).
static ls_status op_rope(unsigned *seed, bool perf, int *wrong, double *ms) {
    (void)perf;
    *wrong = 0, *ms = 0;
    static const int dims[] = {32, 64, 128, 80};
    for (int rep = 0; rep < 8; rep++) {
        int hd = dims[rep % 4], heads = 1 + rand_r(seed) % 9, n_rot = rep % 3 == 2 ? hd / 2 : hd;
        int64_t m = 1 + rand_r(seed) % 29, n = m * heads * hd;
        int64_t *pos = malloc((size_t)m * 8);
        for (int64_t t = 0; t < m; t++) pos[t] = rand_r(seed) % (1 << 20) - (rep == 5 ? (1 << 19) : 0);
        float *freq = malloc((size_t)n_rot / 2 * 4);
        for (int i = 0; i < n_rot / 2; i++) freq[i] = powf(10000.0f, -2.0f * (float)i / (float)n_rot);
        ls_rope_freqs f = {n_rot, freq, rep == 3 ? 1.1f : 1.0f, rep % 2 ? LS_ROPE_PAIR_HALVES : LS_ROPE_PAIR_ADJACENT};
        float *x = rand_vec((size_t)n, seed), *want = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
        memcpy(want, x, (size_t)n * 4);
        ls_ref_rope(want, m, heads, hd, pos, &f);
        gout y;
        LS_CHECK(gout_init(&y, (size_t)n, x));
        LS_CHECK(ls_op_rope(g_be, y.dev, m, heads, hd, pos, &f));
        int damaged;
        LS_CHECK(gout_read(&y, got, &damaged));
        *wrong += damaged + compare("rope", got, want, n, 2e-6f, 2e-6f, NULL);
        free(pos), free(freq), free(x), free(want), free(got);
    }
    return LS_OK;
}

// attention: every rule, GQA, head dims 32/64/128, odd lengths, queries after a prefix, the
// streaming layout (sinks + a window segment) and q_sink, contiguous and from bf16 pages; windows of 1..90 and around the
// default sink rule's 1020. Inputs are rounded to bf16 for both sides (the kernel's f32 entry
// does the same), and each output must be within attn_tol.h's bound of the twin's: bf16's
// unit roundoff times sum_j w_j |v_j| per element (the kernel's rounding of P), plus fp32
// slack; lse within 5e-4.
// bf16 copies of n floats (on the host), and the floats rounded the same way in place.
static uint16_t *to_bf16_rounding(float *x, size_t n) {
    uint16_t *h = malloc(n * 2 + 2);
    for (size_t i = 0; i < n; i++) h[i] = ls_f32_to_bf16(x[i]), x[i] = ls_bf16_to_f32(h[i]);
    return h;
}

// The bf16 entry point (ls_cuda_attention_bf16): inputs rounded to bf16 for both sides.
static int attention_bf16(const ls_attn_args *ref, size_t nq, size_t nk, float *q, float *qs, float *k, float *v) {
    uint16_t *hq = to_bf16_rounding(q, nq), *hqs = to_bf16_rounding(qs, nq), *hk = to_bf16_rounding(k, nk),
             *hv = to_bf16_rounding(v, nk), *got16 = malloc(nq * 2 + 2);
    float *want = malloc(nq * 4), *got = malloc(nq * 4), *lw = malloc((size_t)(ref->n_q * ref->n_head) * 4),
          *lg = malloc((size_t)(ref->n_q * ref->n_head) * 4);
    ls_attn_args a = *ref;
    a.out = want, a.lse = lw;
    ls_ref_attention(&a);
    void *dq, *dqs, *dk, *dv, *dout;
    uint32_t *base;
    int bad = 0, dam1 = 0, dam2 = 0;
    gout l;
    if (to_dev(hq, nq * 2, &dq) || to_dev(hqs, nq * 2, &dqs) || to_dev(hk, nk * 2, &dk) || to_dev(hv, nk * 2, &dv) ||
        guarded_alloc(nq, &base, &dout) || gout_init(&l, (size_t)(ref->n_q * ref->n_head), NULL))
        return -1;
    ls_attn_args d = a;
    d.q = dq, d.q_sink = a.q_sink ? dqs : NULL, d.k = dk, d.v = dv, d.out = dout, d.lse = l.dev;
    if (ls_cuda_attention_bf16(g_be, &d) || ls_backend_sync(g_be) || guarded_read(base, nq, 2, got16, &dam1) ||
        gout_read(&l, lg, &dam2))
        return -1;
    for (size_t i = 0; i < nq; i++) got[i] = ls_bf16_to_f32(got16[i]);
    float *tol = malloc(nq * 4);
    attn_out_tol(&a, true, tol); // a bf16 output adds its own rounding
    bad = dam1 + dam2 + compare("attention bf16 out", got, want, (int64_t)nq, 0, 0, tol) +
          compare("attention bf16 lse", lg, lw, ref->n_q * ref->n_head, ATTN_LSE_TOL, 0, NULL);
    free(tol);
    ls_cuda_free(dq), ls_cuda_free(dqs), ls_cuda_free(dk), ls_cuda_free(dv), ls_cuda_free(base);
    free(hq), free(hqs), free(hk), free(hv), free(got16), free(want), free(got), free(lw), free(lg);
    return bad;
}

// The same case from a paged bf16 KV cache (worker/kv.c's layout): keys and values (already
// bf16-rounded, [n_kv_head][stride][hd] f32 on the host) into shuffled pages of page_len slots,
// the window `gap` slots after the sinks; the f32 entry point reads them in place through the
// host page table. Same bound as the contiguous case: the values are the same.
static int attention_paged(const ls_attn_args *ref, int64_t stride, int64_t page_len, int64_t gap, unsigned *seed,
                           const float *want, const float *lw, const float *tol) {
    int hd = ref->head_dim, nkv = ref->n_kv_head;
    gap = ref->n_kv > ref->kv_sinks ? gap : 0;
    int64_t slots = ref->n_kv + gap, n_pages = (slots + page_len - 1) / page_len + 2;
    size_t page = (size_t)(nkv * page_len * hd) * 2 + 16 * (size_t)(rand_r(seed) % 3), nq = (size_t)(ref->n_q * ref->n_head * hd);
    uint8_t *hk = calloc((size_t)n_pages, page), *hv = calloc((size_t)n_pages, page);
    int32_t *pages = malloc((size_t)n_pages * 4);
    for (int64_t i = 0; i < n_pages; i++) pages[i] = (int32_t)(n_pages - 1 - i); // reversed: never in order
    for (int64_t i = n_pages - 1; i > 0; i--) {
        int64_t r = rand_r(seed) % (i + 1);
        int32_t t = pages[i];
        pages[i] = pages[r], pages[r] = t;
    }
    for (int g = 0; g < nkv; g++)
        for (int64_t j = 0; j < ref->n_kv; j++) {
            int64_t sl = j < ref->kv_sinks ? j : j + gap;
            size_t at = (size_t)pages[sl / page_len] * page + (size_t)((g * page_len + sl % page_len) * hd) * 2;
            for (int i = 0; i < hd; i++) {
                uint16_t kb = ls_f32_to_bf16(ref->k[(g * stride + j) * hd + i]), vb = ls_f32_to_bf16(ref->v[(g * stride + j) * hd + i]);
                memcpy(hk + at + 2 * i, &kb, 2), memcpy(hv + at + 2 * i, &vb, 2);
            }
        }
    void *dq, *dqs, *dk, *dv;
    gout o, l;
    float *got = malloc(nq * 4), *lg = malloc((size_t)(ref->n_q * ref->n_head) * 4);
    if (to_dev(ref->q, nq * 4, &dq) || to_dev(ref->q_sink ? ref->q_sink : ref->q, nq * 4, &dqs) ||
        to_dev(hk, (size_t)n_pages * page, &dk) || to_dev(hv, (size_t)n_pages * page, &dv) || gout_init(&o, nq, NULL) ||
        gout_init(&l, (size_t)(ref->n_q * ref->n_head), NULL))
        return -1;
    ls_attn_args d = *ref;
    d.q = dq, d.q_sink = ref->q_sink ? dqs : NULL, d.k = dk, d.v = dv, d.out = o.dev, d.lse = l.dev, d.kv_type = LS_BF16;
    d.kv_pages = pages, d.kv_page_len = page_len, d.kv_page_bytes = page, d.kv_gap = gap, d.kv_stride = 0;
    int dam1, dam2;
    if (ls_op_attention(g_be, &d) || gout_read(&o, got, &dam1) || gout_read(&l, lg, &dam2)) return -1;
    int bad = dam1 + dam2 + compare("attention paged out", got, want, (int64_t)nq, 0, 0, tol) +
              compare("attention paged lse", lg, lw, ref->n_q * ref->n_head, ATTN_LSE_TOL, 0, NULL);
    ls_cuda_free(dq), ls_cuda_free(dqs), ls_cuda_free(dk), ls_cuda_free(dv);
    free(hk), free(hv), free(pages), free(got), free(lg);
    return bad;
}

// window: 0 for a random one of 1..90; else that window, with the queries past it.
static ls_status attention_case(unsigned *seed, ls_attn_kind kind, int hd, int rep, bool stream, int64_t window, int *wrong) {
    int n_kv_head = 1 + rand_r(seed) % 3, n_head = n_kv_head * rep;
    int64_t n_q = 1 + rand_r(seed) % 150, q_pos0 = rand_r(seed) % 3 ? rand_r(seed) % 200 : 0;
    ls_attn_rule rule = {.kind = kind, .group = 2 + rand_r(seed) % 40, .sinks = rand_r(seed) % 5,
                         .window = window ? window : 1 + rand_r(seed) % 90, .n_head = n_head};
    if (window) q_pos0 += window + rule.sinks;
    int64_t end = q_pos0 + n_q, kv_sinks = 0, kv_pos0 = 0;
    if (stream) { // sinks in front, then a window segment starting after the oldest kept key
        kv_sinks = rule.sinks < end ? rule.sinks : end;
        kv_pos0 = end - n_q - rule.window > kv_sinks ? end - n_q - rule.window : kv_sinks;
    }
    int64_t n_kv = kv_sinks + (end - kv_pos0), stride = n_kv + rand_r(seed) % 5;
    size_t nq = (size_t)(n_q * n_head * hd), nk = (size_t)(n_kv_head * stride * hd);
    float *q = rand_vec(nq, seed), *qs = rand_vec(nq, seed), *k = rand_vec(nk, seed), *v = rand_vec(nk, seed);
    attn_round_bf16(q, nq), attn_round_bf16(qs, nq), attn_round_bf16(k, nk), attn_round_bf16(v, nk);
    float *want = malloc(nq * 4), *got = malloc(nq * 4), *lw = malloc((size_t)(n_q * n_head) * 4),
          *lg = malloc((size_t)(n_q * n_head) * 4), *tol = malloc(nq * 4);
    ls_attn_args a = {.q = q, .q_sink = kind == LS_ATTN_SINK ? qs : NULL, .k = k, .v = v, .out = want, .lse = lw,
                      .n_q = n_q, .q_pos0 = q_pos0, .n_kv = n_kv, .kv_sinks = kv_sinks, .kv_pos0 = kv_pos0,
                      .kv_stride = stride, .n_head = n_head, .n_kv_head = n_kv_head, .head_dim = hd,
                      .scale = 1.0f / sqrtf((float)hd), .rule = rule};
    ls_ref_attention(&a);
    attn_out_tol(&a, false, tol);
    void *dq, *dqs, *dk, *dv;
    LS_CHECK(to_dev(q, nq * 4, &dq)); LS_CHECK(to_dev(qs, nq * 4, &dqs));
    LS_CHECK(to_dev(k, nk * 4, &dk)); LS_CHECK(to_dev(v, nk * 4, &dv));
    gout o, l;
    LS_CHECK(gout_init(&o, nq, NULL));
    LS_CHECK(gout_init(&l, (size_t)(n_q * n_head), NULL));
    ls_attn_args d = a;
    d.q = dq, d.q_sink = a.q_sink ? dqs : NULL, d.k = dk, d.v = dv, d.out = o.dev, d.lse = l.dev;
    LS_CHECK(ls_op_attention(g_be, &d));
    int dam1, dam2;
    LS_CHECK(gout_read(&o, got, &dam1));
    LS_CHECK(gout_read(&l, lg, &dam2));
    int bad = dam1 + dam2 + compare("attention out", got, want, (int64_t)nq, 0, 0, tol) +
              compare("attention lse", lg, lw, n_q * n_head, ATTN_LSE_TOL, 0, NULL);
    if (bad)
        fprintf(stderr, "  attention %s hd=%d heads=%d/%d n_q=%lld q_pos0=%lld n_kv=%lld sinks=%lld pos0=%lld G=%lld S=%lld W=%lld: %d wrong\n",
                ls_attn_kind_name(kind), hd, n_head, n_kv_head, (long long)n_q, (long long)q_pos0, (long long)n_kv,
                (long long)kv_sinks, (long long)kv_pos0, (long long)rule.group, (long long)rule.sinks,
                (long long)rule.window, bad);
    *wrong += bad;
    LS_CHECK(ls_cuda_free(dq)); LS_CHECK(ls_cuda_free(dqs)); LS_CHECK(ls_cuda_free(dk)); LS_CHECK(ls_cuda_free(dv));
    int64_t page_len = rand_r(seed) % 2 ? 64 : 1 + rand_r(seed) % 100; // the cache's pages, and odd ones
    int badp = attention_paged(&a, stride, page_len, stream ? rand_r(seed) % 70 : 0, seed, want, lw, tol);
    if (badp < 0) return LS_ERR(LS_ERR_DEVICE, "attention (paged bf16) failed: %s", ls_err_msg());
    if (badp) fprintf(stderr, "  attention paged bf16 %s hd=%d page %lld: %d wrong\n", ls_attn_kind_name(kind), hd, (long long)page_len, badp);
    *wrong += badp;
    int bad16 = attention_bf16(&a, nq, nk, q, qs, k, v);
    if (bad16 < 0) return LS_ERR(LS_ERR_DEVICE, "attention (bf16 entry point) failed");
    if (bad16) fprintf(stderr, "  attention bf16 %s hd=%d: %d wrong\n", ls_attn_kind_name(kind), hd, bad16);
    *wrong += bad16;
    free(q), free(qs), free(k), free(v), free(want), free(got), free(lw), free(lg), free(tol);
    return LS_OK;
}

static ls_status op_attention(unsigned *seed, bool perf, int *wrong, double *ms) {
    (void)perf;
    *wrong = 0, *ms = 0;
    static const int dims[] = {32, 64, 128}, reps[] = {1, 3, 4};
    for (int kind = 0; kind < LS_ATTN_KIND_COUNT; kind++)
        for (int di = 0; di < 3; di++)
            for (int ri = 0; ri < 3; ri++) {
                LS_CHECK(attention_case(seed, (ls_attn_kind)kind, dims[di], reps[ri], false, 0, wrong));
                if (kind == LS_ATTN_SINK || kind == LS_ATTN_WINDOW)
                    for (int stream = 0; stream < 2; stream++) { // the default sink rule's window and next to it
                        LS_CHECK(attention_case(seed, (ls_attn_kind)kind, dims[di], reps[ri], stream, 1020 + ri, wrong));
                        if (!stream) LS_CHECK(attention_case(seed, (ls_attn_kind)kind, dims[di], reps[ri], true, 0, wrong));
                    }
            }
    return LS_OK;
}

static ls_status op_attn_merge(unsigned *seed, bool perf, int *wrong, double *ms) {
    (void)perf;
    *wrong = 0, *ms = 0;
    int64_t n = 1 + rand_r(seed) % 300;
    int d = 1 + rand_r(seed) % 130;
    float *o1 = rand_vec((size_t)(n * d), seed), *o2 = rand_vec((size_t)(n * d), seed), *l1 = rand_vec((size_t)n, seed),
          *l2 = rand_vec((size_t)n, seed), *got = malloc((size_t)(n * d) * 4), *lg = malloc((size_t)n * 4);
    for (int64_t r = 0; r < n; r++) { // empty sides: -inf on either, or both
        if (r % 7 == 1) l1[r] = -INFINITY;
        if (r % 5 == 2) l2[r] = -INFINITY;
        l1[r] *= 30, l2[r] *= 30;
    }
    gout go, gl;
    LS_CHECK(gout_init(&go, (size_t)(n * d), o1));
    LS_CHECK(gout_init(&gl, (size_t)n, l1));
    void *do2, *dl2;
    LS_CHECK(to_dev(o2, (size_t)(n * d) * 4, &do2)); LS_CHECK(to_dev(l2, (size_t)n * 4, &dl2));
    LS_CHECK(ls_op_attn_merge(g_be, go.dev, gl.dev, do2, dl2, n, d));
    ls_ref_attn_merge(o1, l1, o2, l2, n, d);
    int dam1, dam2;
    LS_CHECK(gout_read(&go, got, &dam1));
    LS_CHECK(gout_read(&gl, lg, &dam2));
    *wrong += dam1 + dam2 + compare("merge out", got, o1, n * d, 1e-5f, 1e-5f, NULL) +
              compare("merge lse", lg, l1, n, 1e-5f, 1e-5f, NULL);
    LS_CHECK(ls_cuda_free(do2)); LS_CHECK(ls_cuda_free(dl2));
    free(o1), free(o2), free(l1), free(l2), free(got), free(lg);
    return LS_OK;
}

// Backend memory: strided copies and an overlapping single-row move, against memmove.
static ls_status op_copy(unsigned *seed, bool perf, int *wrong, double *ms) {
    (void)perf;
    *wrong = 0, *ms = 0;
    size_t n = 4096 + (size_t)(rand_r(seed) % 1000);
    float *h = rand_vec(n, seed), *want = malloc(n * 4), *got = malloc(n * 4);
    void *d;
    LS_CHECK(ls_backend_alloc(g_be, n * 4, &d));
    LS_CHECK(ls_backend_upload(g_be, d, h, n * 4));
    memcpy(want, h, n * 4);
    memmove(want + 5, want + 100, 3000 * 4); // overlapping, downwards
    LS_CHECK(ls_backend_copy(g_be, (float *)d + 5, 0, (float *)d + 100, 0, 3000 * 4, 1));
    memmove(want + 200, want + 7, 2000 * 4); // overlapping, upwards
    LS_CHECK(ls_backend_copy(g_be, (float *)d + 200, 0, (float *)d + 7, 0, 2000 * 4, 1));
    for (int r = 0; r < 9; r++) memcpy(want + 3000 + r * 100, want + r * 37, 33 * 4); // 9 rows of 33
    LS_CHECK(ls_backend_copy(g_be, (float *)d + 3000, 400, d, 37 * 4, 33 * 4, 9));
    LS_CHECK(ls_backend_download(g_be, got, d, n * 4));
    *wrong += compare("copy", got, want, (int64_t)n, 0, 0, NULL);
    ls_backend_release(g_be, d);
    free(h), free(want), free(got);
    return LS_OK;
}

static const op_case g_ops[] = {
    {"dequant", op_dequant},       {"dequant_bf16", op_dequant_bf16}, {"matmul", op_matmul},
    {"get_rows", op_get_rows},     {"rmsnorm", op_rmsnorm},           {"elementwise", op_elementwise},
    {"rope", op_rope},             {"attention", op_attention},       {"attn_merge", op_attn_merge},
    {"copy", op_copy},
};

int main(int argc, char **argv) {
    const char *only = NULL;
    bool perf = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--perf")) perf = true;
    }
    // The attention bound must see an off-by-one rule (CPU twin only): windows of the random
    // cases and around the default sink rule's 1020.
    int missed = attn_tol_selfcheck(4321u, 1, 90, false) + attn_tol_selfcheck(8765u, 1000, 1040, false);
    printf("attention tolerance: %s every off-by-one rule (window W+-1, sinks S+1, group G+1, one key past the diagonal)\n",
           missed ? "MISSES" : "sees");
    if (missed) return 1;
    if (!ls_cuda_available()) {
        printf("SKIP: no GPU (%s)\n", ls_cuda_why_unavailable());
        return 77;
    }
    if (ls_backend_cuda_init(0, &g_be) != LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    printf("%-16s %8s %10s\n", "op", "#wrong", perf ? "ms" : "");
    int total_wrong = 0;
    unsigned seed = 1234;
    for (size_t i = 0; i < sizeof g_ops / sizeof *g_ops; i++) {
        if (only && strcmp(only, g_ops[i].name)) continue;
        int wrong = 0;
        double ms = 0;
        if (g_ops[i].run(&seed, perf, &wrong, &ms) != LS_OK) {
            ls_err_report(stderr);
            return 1;
        }
        printf("%-16s %8d", g_ops[i].name, wrong);
        if (perf) printf(" %10.3f", ms);
        printf("\n");
        total_wrong += wrong;
    }
    ls_backend_free(g_be);
    return total_wrong ? 1 : 0;
}
