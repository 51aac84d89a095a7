// attention.c — flash-style attention on the CPU: for each (query head, tile of queries) the
// visible keys are visited in blocks, each block's keys and values are used by every query of
// the tile while they are in cache, and a running max / sum / output per query (online
// softmax) gives the exact result and its log-sum-exp. Keys outside a query's ranges (the
// attention rule) are never touched. When there are few (head, tile) tasks, as in decode,
// the key span is also split across threads and the partial results are merged by their
// log-sum-exp. Twin: ls_ref_attention (kernels/ref/ops_ref.c). Tests: tests/unit/test_kernels.c.
#include "cpu_impl.h"

#include <math.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#define BQ 32       // queries per tile
#define BK 64       // keys per block
#define MIN_SPLIT 512 // keys per split, at least

// exp(x) for a block of values, in place. AVX2: range reduction by ln 2 and a degree-6
// polynomial (relative error about 2e-7); -inf gives 0.
static void exp_inplace(float *x, int n) {
    int i = 0;
#if defined(__AVX2__)
    const __m256 log2e = _mm256_set1_ps(1.44269504f), ln2_hi = _mm256_set1_ps(0.693359375f),
                 ln2_lo = _mm256_set1_ps(-2.12194440e-4f), lo = _mm256_set1_ps(-87.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_max_ps(_mm256_loadu_ps(x + i), lo);
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
        __m256 zero_mask = _mm256_cmp_ps(_mm256_loadu_ps(x + i), lo, _CMP_LT_OQ); // far below: 0
        _mm256_storeu_ps(x + i, _mm256_andnot_ps(zero_mask, out));
    }
#endif
    for (; i < n; i++) x[i] = expf(x[i]);
}

typedef struct attn_job {
    const ls_attn_args *a;
    cpu_ctx *c;
    int64_t n_tiles, n_splits;
    int64_t split_len;   // keys per split (key index space)
    float *part_o, *part_lse; // [n_splits][n_q][n_head][(hd)] when n_splits > 1
} attn_job;

// The visible key indices of query t, as at most two [lo, hi] ranges in key index space.
static int visible(const ls_attn_args *a, int64_t t, int h, int64_t lo[2], int64_t hi[2]) {
    int64_t plo[2], phi[2];
    int n = ls_attn_ranges(&a->rule, a->q_pos0 + t, h, plo, phi), k = 0;
    for (int r = 0; r < n; r++) {
        int64_t l = plo[r] - a->kv_pos0, u = phi[r] - a->kv_pos0;
        if (l < 0) l = 0;
        if (u > a->n_kv - 1) u = a->n_kv - 1;
        if (l <= u) lo[k] = l, hi[k] = u, k++;
    }
    return k;
}

typedef struct qstate {
    float m, l;
    int n_ranges;
    int64_t lo[2], hi[2];
} qstate;

// One key block [c0, c1] for one query: scores, online-softmax update of (m, l, o).
static void update(const ls_attn_args *a, const float *q, const float *kh, const float *vh, int64_t c0,
                   int64_t c1, qstate *st, float *o, float *s) {
    int hd = a->head_dim, n = (int)(c1 - c0 + 1);
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) {
        s[i] = a->scale * cpu_dot(q, kh + (c0 + i) * hd, hd);
        if (s[i] > mx) mx = s[i];
    }
    float m_new = st->m > mx ? st->m : mx;
    if (st->m != -INFINITY && st->m != m_new) {
        float corr = expf(st->m - m_new);
        st->l *= corr;
        cpu_scale(o, corr, hd);
    }
    for (int i = 0; i < n; i++) s[i] -= m_new;
    exp_inplace(s, n);
    for (int i = 0; i < n; i++) {
        st->l += s[i];
        cpu_axpy(o, s[i], vh + (c0 + i) * hd, hd);
    }
    st->m = m_new;
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
    const float *kh = a->k + (size_t)g * a->kv_stride * hd, *vh = a->v + (size_t)g * a->kv_stride * hd;

    float *scratch = cpu_scratch_get(&j->c->thread_scratch[thread], (size_t)(BQ * hd + BK));
    float *acc = scratch, *s = scratch + BQ * hd; // acc: [nt][hd]
    qstate st[BQ];
    int64_t span_lo = INT64_MAX, span_hi = -1;
    memset(acc, 0, (size_t)(nt * hd) * sizeof *acc);
    for (int64_t t = 0; t < nt; t++) {
        st[t] = (qstate){.m = -INFINITY, .l = 0.0f};
        st[t].n_ranges = visible(a, t0 + t, h, st[t].lo, st[t].hi);
        for (int r = 0; r < st[t].n_ranges; r++) {
            if (st[t].lo[r] < s_lo) st[t].lo[r] = s_lo; // restrict to this split
            if (st[t].hi[r] > s_hi) st[t].hi[r] = s_hi;
            if (st[t].lo[r] > st[t].hi[r]) continue;
            if (st[t].lo[r] < span_lo) span_lo = st[t].lo[r];
            if (st[t].hi[r] > span_hi) span_hi = st[t].hi[r];
        }
    }
    for (int64_t b0 = span_lo; b0 <= span_hi; b0 += BK) { // key blocks, shared by the tile
        int64_t b1 = b0 + BK - 1 < span_hi ? b0 + BK - 1 : span_hi;
        for (int64_t t = 0; t < nt; t++) {
            const float *q = a->q + ((t0 + t) * a->n_head + h) * hd;
            for (int r = 0; r < st[t].n_ranges; r++) {
                int64_t c0 = st[t].lo[r] > b0 ? st[t].lo[r] : b0, c1 = st[t].hi[r] < b1 ? st[t].hi[r] : b1;
                if (c0 <= c1) update(a, q, kh, vh, c0, c1, &st[t], acc + t * hd, s);
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
