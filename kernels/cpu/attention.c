// attention.c — flash-style attention on the CPU, for every attention rule. For each (query
// head, tile of 32 queries) the rule gives each query at most two key ranges; the tile walks
// only the union of those ranges, in blocks of 64 keys. Each block's keys are transposed once
// and then used by every query of the tile that sees them: scores for 8 keys at a time
// without horizontal sums, an online softmax (running max, sum, output) with a vectorized
// exp, and P·V into the output rows. Every query gets its exact output and log-sum-exp, so
// partial results over disjoint key sets merge exactly. Keys outside a query's ranges are
// never touched, so the cost follows the rule. When there are few (head, tile) tasks, as in
// decode, the keys are also split across threads and the parts merged by log-sum-exp.
// Keys and values are read where they lie: one array per KV head, or pages of a paged cache
// (a block then never crosses a page); f32 rows are used in place, bf16 and q8_0 rows are
// widened block by block into the thread's scratch.
// Twin: ls_ref_attention (kernels/ref/ops_ref.c). Tests: tests/unit/test_kernels.c.
#include "cpu_impl.h"
#include "simd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BQ 32         // queries per tile
#define BK 64         // keys per block
#define MAX_R 4       // index ranges per query: 2 rule ranges x 2 key segments
#define MAX_HD 256
#define MIN_SPLIT 512 // keys per split, at least

// exp(x) for a block of values, in place. AVX2: range reduction by ln 2 and a degree-6
// polynomial (relative error about 2e-7); -inf gives 0.
static void exp_inplace(float *x, int n) {
    int i = 0;
#if defined(__AVX2__)
    const __m256 log2e = _mm256_set1_ps(1.44269504f), ln2_hi = _mm256_set1_ps(0.693359375f),
                 ln2_lo = _mm256_set1_ps(-2.12194440e-4f), lo = _mm256_set1_ps(-87.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 in = _mm256_loadu_ps(x + i), v = _mm256_max_ps(in, lo);
        __m256 k = _mm256_round_ps(_mm256_mul_ps(v, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 r = _mm256_fnmadd_ps(k, ln2_hi, v);
        r = _mm256_fnmadd_ps(k, ln2_lo, r);
        __m256 p = _mm256_set1_ps(1.0f / 720);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
        __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
        __m256 out = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
        _mm256_storeu_ps(x + i, _mm256_andnot_ps(_mm256_cmp_ps(in, lo, _CMP_LT_OQ), out)); // far below: 0
    }
#endif
    for (; i < n; i++) x[i] = expf(x[i]);
}

typedef struct krange {
    int64_t lo, hi; // key indices, inclusive
    int alt;        // use q_sink (the sink range of the sink rule)
} krange;

typedef struct qstate {
    float m, l;     // running max and sum of exp(score - m)
    int n;
    krange r[MAX_R];
} qstate;

typedef struct attn_job {
    const ls_attn_args *a;
    cpu_ctx *c;
    int64_t n_tiles, n_splits, split_len;
    float *part_o, *part_lse; // [n_splits][n_q][n_head][(hd)] when n_splits > 1
} attn_job;

// The key indices query t of head h sees, clipped to [s_lo, s_hi]: each rule range is mapped
// through the two key segments (sinks at positions 0.., the rest from kv_pos0).
static int visible(const ls_attn_args *a, int64_t t, int h, int64_t s_lo, int64_t s_hi, krange out[MAX_R]) {
    int64_t plo[2], phi[2];
    int n = ls_attn_ranges(&a->rule, a->q_pos0 + t, h, plo, phi), k = 0;
    int64_t nb = a->n_kv - a->kv_sinks;
    for (int r = 0; r < n; r++) {
        // The sink rule's range 0 holds the sinks when there are any; with S = 0 it is the window.
        int alt = a->q_sink && a->rule.kind == LS_ATTN_SINK && a->rule.sinks > 0 && r == 0;
        int64_t seg[2][3] = {{0, a->kv_sinks - 1, 0},                       // positions lo, hi; index of lo
                             {a->kv_pos0, a->kv_pos0 + nb - 1, a->kv_sinks}};
        for (int sgi = 0; sgi < 2; sgi++) {
            int64_t l = plo[r] > seg[sgi][0] ? plo[r] : seg[sgi][0], u = phi[r] < seg[sgi][1] ? phi[r] : seg[sgi][1];
            if (l > u) continue;
            l = l - seg[sgi][0] + seg[sgi][2], u = u - seg[sgi][0] + seg[sgi][2];
            if (l < s_lo) l = s_lo;
            if (u > s_hi) u = s_hi;
            if (l <= u) out[k++] = (krange){l, u, alt};
        }
    }
    return k;
}

static int by_lo(const void *x, const void *y) {
    int64_t a = ((const krange *)x)->lo, b = ((const krange *)y)->lo;
    return a < b ? -1 : a > b;
}

// The union of the tile's ranges as sorted disjoint intervals (in place; returns the count).
static int merge(krange *iv, int n) {
    if (!n) return 0;
    qsort(iv, (size_t)n, sizeof *iv, by_lo);
    int m = 0;
    for (int i = 1; i < n; i++) {
        if (iv[i].lo <= iv[m].hi + 1) {
            if (iv[i].hi > iv[m].hi) iv[m].hi = iv[i].hi;
        } else {
            iv[++m] = iv[i];
        }
    }
    return m + 1;
}

// kt[d][j] = k[j][d] for the nb keys of a block (columns padded with zeros to a multiple of 8).
static void transpose_block(const float *k, int64_t nb, int hd, float *kt) {
    int w = (int)((nb + 7) / 8 * 8);
    for (int d = 0; d < hd; d++) {
        for (int64_t j = 0; j < nb; j++) kt[d * BK + j] = k[j * hd + d];
        for (int j = (int)nb; j < w; j++) kt[d * BK + j] = 0.0f;
    }
}

// s[j] = scale * q . key j for j in [j0, j1] of the transposed block (s indexed by j). A full
// block keeps its 8 accumulators in registers (independent FMA chains).
static void scores(const float *q, const float *kt, int hd, int j0, int j1, float scale, float *s) {
#if defined(__AVX2__)
    if (j0 == 0 && j1 == BK - 1) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int d = 0; d < hd; d++) {
            __m256 qd = _mm256_set1_ps(q[d]);
            const float *r = kt + d * BK;
            a0 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(r), a0);
            a1 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(r + 8), a1);
            a2 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(r + 16), a2);
            a3 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(r + 24), a3);
            a4 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(r + 32), a4);
            a5 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(r + 40), a5);
            a6 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(r + 48), a6);
            a7 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(r + 56), a7);
        }
        __m256 vs = _mm256_set1_ps(scale), acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
        for (int v = 0; v < 8; v++) _mm256_storeu_ps(s + 8 * v, _mm256_mul_ps(acc[v], vs));
        return;
    }
    for (int a = j0 / 8 * 8; a <= j1; a += 8) { // a partial block: one group of 8 keys at a time
        __m256 acc = _mm256_setzero_ps();
        for (int d = 0; d < hd; d++) acc = _mm256_fmadd_ps(_mm256_set1_ps(q[d]), _mm256_loadu_ps(kt + d * BK + a), acc);
        _mm256_storeu_ps(s + a, _mm256_mul_ps(acc, _mm256_set1_ps(scale)));
    }
#else
    for (int j = j0; j <= j1; j++) {
        float d = 0.0f;
        for (int i = 0; i < hd; i++) d += q[i] * kt[i * BK + j];
        s[j] = d * scale;
    }
#endif
}

// o[0..hd) += sum over j in [j0, j1] of p[j] * v[j][..]. The output stays in registers, 32
// dimensions (4 independent FMA chains) at a time.
static void accumulate(float *o, const float *p, const float *v, int hd, int j0, int j1) {
    int d = 0;
#if defined(__AVX2__)
    for (; d + 32 <= hd; d += 32) {
        __m256 a0 = _mm256_loadu_ps(o + d), a1 = _mm256_loadu_ps(o + d + 8), a2 = _mm256_loadu_ps(o + d + 16),
               a3 = _mm256_loadu_ps(o + d + 24);
        for (int j = j0; j <= j1; j++) {
            __m256 pj = _mm256_set1_ps(p[j]);
            const float *vr = v + j * hd + d;
            a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr), a0);
            a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr + 8), a1);
            a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr + 16), a2);
            a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr + 24), a3);
        }
        _mm256_storeu_ps(o + d, a0), _mm256_storeu_ps(o + d + 8, a1);
        _mm256_storeu_ps(o + d + 16, a2), _mm256_storeu_ps(o + d + 24, a3);
    }
#endif
    for (; d < hd; d++) {
        float acc = o[d];
        for (int j = j0; j <= j1; j++) acc += p[j] * v[j * hd + d];
        o[d] = acc;
    }
}

// One query's visible keys [j0, j1] of a block (block-relative): online-softmax update. Keys
// come transposed (kt, [hd][BK]) when the tile has enough queries to pay for the transpose,
// else as rows (kb, [BK][hd]).
static void update(qstate *st, const float *q, const float *kt, const float *kb, const float *vb, int hd,
                   int j0, int j1, float scale, float *o, float *s) {
    if (kt) scores(q, kt, hd, j0, j1, scale, s);
    else
        for (int j = j0; j <= j1; j++) s[j] = scale * cpu_dot(q, kb + j * hd, hd);
    float mx = -INFINITY;
    for (int j = j0; j <= j1; j++) mx = s[j] > mx ? s[j] : mx;
    float m_new = st->m > mx ? st->m : mx;
    if (st->m != -INFINITY && st->m != m_new) {
        float corr = expf(st->m - m_new);
        st->l *= corr;
        cpu_scale(o, corr, hd);
    }
    for (int j = j0; j <= j1; j++) s[j] -= m_new;
    exp_inplace(s + j0, j1 - j0 + 1);
    for (int j = j0; j <= j1; j++) st->l += s[j];
    accumulate(o, s, vb, hd, j0, j1);
    st->m = m_new;
}

// Cache slot of key index j (see ls_attn_args).
static int64_t slot_of(const ls_attn_args *a, int64_t j) { return j < a->kv_sinks ? j : j + a->kv_gap; }

// The last key of the block starting at b0: at most BK keys, within [b0, hi], not across the
// sink/window seam when a gap separates them, and not across a page.
static int64_t block_end(const ls_attn_args *a, int64_t b0, int64_t hi) {
    int64_t e = b0 + BK - 1 < hi ? b0 + BK - 1 : hi;
    if (a->kv_gap && b0 < a->kv_sinks && e >= a->kv_sinks) e = a->kv_sinks - 1;
    if (a->kv_pages) {
        int64_t pe = b0 + (a->kv_page_len - 1 - slot_of(a, b0) % a->kv_page_len);
        if (pe < e) e = pe;
    }
    return e;
}

// Rows [b0, b0 + n) of KV head g of the keys (base a->k) or values (a->v) as f32 [n][hd]: in
// place for f32, else widened into buf.
static const float *kv_rows(const ls_attn_args *a, const void *base, int g, int64_t b0, int64_t n, float *buf) {
    int hd = a->head_dim;
    uint64_t row;
    ls_dtype_row_bytes(a->kv_type, (uint64_t)hd, &row); // checked by ls_op_attention
    int64_t s = slot_of(a, b0);
    const char *p = a->kv_pages ? (const char *)base + (size_t)a->kv_pages[s / a->kv_page_len] * a->kv_page_bytes +
                                      ((size_t)g * (size_t)a->kv_page_len + (size_t)(s % a->kv_page_len)) * row
                                : (const char *)base + ((size_t)g * (size_t)a->kv_stride + (size_t)s) * row;
    if (a->kv_type == LS_F32) return (const float *)p;
    if (a->kv_type == LS_BF16) { // bf16 -> f32 is a shift (a loop the compiler vectorizes)
        const uint16_t *h = (const uint16_t *)p;
        uint32_t *o = (uint32_t *)buf;
        for (int64_t i = 0; i < n * hd; i++) o[i] = (uint32_t)h[i] << 16;
        return buf;
    }
    ls_dequant_row(a->kv_type, p, buf, n * hd); // q8_0: whole blocks, hd is a multiple of 32
    return buf;
}

static void attn_task(void *vj, int64_t task, int thread) {
    const attn_job *j = vj;
    const ls_attn_args *a = j->a;
    int hd = a->head_dim;
    int64_t split = task % j->n_splits, rest = task / j->n_splits;
    int64_t tile = rest % j->n_tiles;
    int h = (int)(rest / j->n_tiles);
    int64_t t0 = tile * BQ, t1 = t0 + BQ < a->n_q ? t0 + BQ : a->n_q, nt = t1 - t0;
    int64_t s_lo = split * j->split_len, s_hi = s_lo + j->split_len - 1;
    int g = h / (a->n_head / a->n_kv_head);

    float *scratch = cpu_scratch_get(&j->c->thread_scratch[thread], (size_t)(BQ * hd + BK + 3 * MAX_HD * BK));
    float *acc = scratch, *s = scratch + BQ * hd, *kt = s + BK; // acc [nt][hd], kt [hd][BK]
    float *kbuf = kt + MAX_HD * BK, *vbuf = kbuf + MAX_HD * BK;  // widened rows [BK][hd]
    qstate st[BQ];
    krange iv[BQ * MAX_R];
    int n_iv = 0;
    memset(acc, 0, (size_t)(nt * hd) * sizeof *acc);
    for (int64_t t = 0; t < nt; t++) {
        st[t] = (qstate){.m = -INFINITY, .l = 0.0f};
        st[t].n = visible(a, t0 + t, h, s_lo, s_hi, st[t].r);
        for (int r = 0; r < st[t].n; r++) iv[n_iv++] = st[t].r[r];
    }
    n_iv = merge(iv, n_iv);
    bool transpose = nt >= 8; // a few queries (decode) read keys as rows instead
    for (int k = 0; k < n_iv; k++)
        for (int64_t b0 = iv[k].lo, b1; b0 <= iv[k].hi; b0 = b1 + 1) { // only blocks some query sees
            b1 = block_end(a, b0, iv[k].hi);
            const float *kb = kv_rows(a, a->k, g, b0, b1 - b0 + 1, kbuf), *vb = kv_rows(a, a->v, g, b0, b1 - b0 + 1, vbuf);
            if (transpose) transpose_block(kb, b1 - b0 + 1, hd, kt);
            for (int64_t t = 0; t < nt; t++) {
                const float *q = a->q + ((t0 + t) * a->n_head + h) * hd;
                const float *qs = a->q_sink ? a->q_sink + ((t0 + t) * a->n_head + h) * hd : q;
                for (int r = 0; r < st[t].n; r++) {
                    int64_t c0 = st[t].r[r].lo > b0 ? st[t].r[r].lo : b0, c1 = st[t].r[r].hi < b1 ? st[t].r[r].hi : b1;
                    if (c0 <= c1)
                        update(&st[t], st[t].r[r].alt ? qs : q, transpose ? kt : NULL, kb, vb, hd, (int)(c0 - b0),
                               (int)(c1 - b0), a->scale, acc + t * hd, s);
                }
            }
        }
    for (int64_t t = 0; t < nt; t++) { // normalize and store (out/lse, or this split's part)
        int64_t row = (t0 + t) * a->n_head + h;
        float *dst = j->n_splits > 1 ? j->part_o + ((size_t)split * a->n_q * a->n_head + row) * hd : a->out + row * hd;
        float lse = st[t].l > 0 ? st[t].m + logf(st[t].l) : -INFINITY;
        float inv = st[t].l > 0 ? 1.0f / st[t].l : 0.0f;
        for (int d = 0; d < hd; d++) dst[d] = acc[t * hd + d] * inv;
        if (j->n_splits > 1) j->part_lse[(size_t)split * a->n_q * a->n_head + row] = lse;
        else if (a->lse) a->lse[row] = lse;
    }
}

ls_status cpu_attention(void *ctx, const ls_attn_args *a) {
    cpu_ctx *c = ctx;
    if (a->head_dim > MAX_HD) return LS_ERR(LS_ERR_UNSUPPORTED, "attention: head dimension %d > %d", a->head_dim, MAX_HD);
    attn_job j = {.a = a, .c = c, .n_tiles = (a->n_q + BQ - 1) / BQ, .n_splits = 1};
    int64_t tasks = j.n_tiles * a->n_head;
    if (tasks < 4 * c->n_threads && a->n_kv >= 2 * MIN_SPLIT) { // decode-like: split the keys too
        j.n_splits = (4 * c->n_threads + tasks - 1) / tasks;
        if (j.n_splits > a->n_kv / MIN_SPLIT) j.n_splits = a->n_kv / MIN_SPLIT;
    }
    j.split_len = (a->n_kv + j.n_splits - 1) / j.n_splits;
    if (j.split_len < 1) j.split_len = 1;
    size_t rows = (size_t)(a->n_q * a->n_head);
    if (j.n_splits > 1) {
        float *buf = cpu_scratch_get(&c->shared, (size_t)j.n_splits * rows * ((size_t)a->head_dim + 1));
        j.part_o = buf;
        j.part_lse = buf + (size_t)j.n_splits * rows * (size_t)a->head_dim;
    }
    ls_pool_run(c->pool, tasks * j.n_splits, attn_task, &j);
    if (j.n_splits == 1) return LS_OK;
    float *lse = a->lse;
    memcpy(a->out, j.part_o, rows * (size_t)a->head_dim * sizeof(float)); // split 0
    if (!lse) lse = cpu_scratch_get(&c->thread_scratch[0], rows);
    memcpy(lse, j.part_lse, rows * sizeof(float));
    for (int64_t sp = 1; sp < j.n_splits; sp++)
        cpu_attn_merge(c, a->out, lse, j.part_o + (size_t)sp * rows * a->head_dim, j.part_lse + (size_t)sp * rows,
                       (int64_t)rows, a->head_dim);
    return LS_OK;
}
