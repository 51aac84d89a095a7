// ops_ref.c — naive twins of the ops in ls_kernels.h: straight loops, double accumulation,
// one output element at a time. The CPU and CUDA kernels are tested against these.
// Tests: tests/unit/test_kernels.c, tests/gpu/test_ops.c.
#include "ls_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ls_ref_matmul(const ls_weight *w, const float *x, float *y, int64_t m) {
    float *row = malloc((size_t)w->n_in * sizeof *row);
    for (int64_t r = 0; r < w->n_out; r++) {
        ls_ref_dequant_row(w->type, (const uint8_t *)w->data + (size_t)r * w->row_bytes, row, w->n_in);
        for (int64_t i = 0; i < m; i++) {
            double acc = 0.0;
            for (int64_t k = 0; k < w->n_in; k++) acc += (double)x[i * w->n_in + k] * row[k];
            y[i * w->n_out + r] = (float)acc;
        }
    }
    free(row);
}

void ls_ref_get_rows(const ls_weight *w, const int32_t *ids, int64_t m, float *out) {
    for (int64_t i = 0; i < m; i++)
        ls_ref_dequant_row(w->type, (const uint8_t *)w->data + (size_t)ids[i] * w->row_bytes, out + i * w->n_in, w->n_in);
}

void ls_ref_rmsnorm(const float *x, const float *w, float *y, int64_t m, int64_t n, float eps) {
    for (int64_t r = 0; r < m; r++) {
        double ss = 0.0;
        for (int64_t i = 0; i < n; i++) ss += (double)x[r * n + i] * x[r * n + i];
        double inv = 1.0 / sqrt(ss / (double)n + eps);
        for (int64_t i = 0; i < n; i++) y[r * n + i] = (float)(x[r * n + i] * inv * w[i]);
    }
}

void ls_ref_swiglu(const float *gate, const float *up, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double g = gate[i];
        out[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}

void ls_ref_rope(float *x, int64_t m, int n_heads, int head_dim, const int64_t *pos, const ls_rope_freqs *f) {
    int half = f->n_rot / 2;
    for (int64_t t = 0; t < m; t++)
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                double theta = (double)((float)pos[t] * f->inv_freq[i]); // the f32 angle
                double c = cos(theta) * f->attn_factor, s = sin(theta) * f->attn_factor;
                int a = f->pairing == LS_ROPE_PAIR_ADJACENT ? 2 * i : i;
                int b = f->pairing == LS_ROPE_PAIR_ADJACENT ? 2 * i + 1 : i + half;
                double x0 = v[a], x1 = v[b];
                v[a] = (float)(x0 * c - x1 * s);
                v[b] = (float)(x0 * s + x1 * c);
            }
        }
}

// Whether key position p is visible to query position i of head h under the rule.
static bool seen_by(const ls_attn_rule *r, int64_t i, int h, int64_t p) {
    int64_t lo[2], hi[2];
    int n = ls_attn_ranges(r, i, h, lo, hi);
    for (int k = 0; k < n; k++)
        if (p >= lo[k] && p <= hi[k]) return true;
    return false;
}

// Element i of key (or value) j of KV head g, read through the layout of ls_attn_args
// (contiguous or paged, sink/window gap) and widened from its type.
static double kv_elem(const ls_attn_args *a, const void *base, int g, int64_t j, int i) {
    uint64_t row;
    ls_dtype_row_bytes(a->kv_type, (uint64_t)a->head_dim, &row);
    int64_t s = j < a->kv_sinks ? j : j + a->kv_gap;
    size_t at = a->kv_pages ? (size_t)a->kv_pages[s / a->kv_page_len] * a->kv_page_bytes +
                                  ((size_t)g * (size_t)a->kv_page_len + (size_t)(s % a->kv_page_len)) * row
                            : ((size_t)g * (size_t)a->kv_stride + (size_t)s) * row;
    return ls_ref_dequant_elem(a->kv_type, (const char *)base + at, i);
}

void ls_ref_attention(const ls_attn_args *a) {
    int hd = a->head_dim, rep = a->n_head / a->n_kv_head;
    double *sc = malloc((size_t)(a->n_kv > 0 ? a->n_kv : 1) * sizeof *sc);
    for (int64_t t = 0; t < a->n_q; t++)
        for (int h = 0; h < a->n_head; h++) {
            int g = h / rep;
            float *o = a->out + (t * a->n_head + h) * hd;
            double mx = -INFINITY, sum = 0.0;
            for (int64_t j = 0; j < a->n_kv; j++) {
                int64_t p = j < a->kv_sinks ? j : a->kv_pos0 + (j - a->kv_sinks);
                sc[j] = -INFINITY;
                if (!seen_by(&a->rule, a->q_pos0 + t, h, p)) continue;
                // By the sink rule's definition (docs/attention.md): a sink token, position
                // below S, is scored with the query rotated at its cache slot; every other key
                // with the query at its own position. Decided by the key's position, not by
                // which range of ls_attn_ranges holds it.
                bool sink_key = a->rule.kind == LS_ATTN_SINK && a->q_sink && p < a->rule.sinks;
                const float *q = (sink_key ? a->q_sink : a->q) + (t * a->n_head + h) * hd;
                double d = 0.0;
                for (int i = 0; i < hd; i++) d += (double)q[i] * kv_elem(a, a->k, g, j, i);
                sc[j] = d * a->scale;
                if (sc[j] > mx) mx = sc[j];
            }
            for (int i = 0; i < hd; i++) o[i] = 0.0f;
            if (mx == -INFINITY) {
                if (a->lse) a->lse[t * a->n_head + h] = -INFINITY;
                continue;
            }
            for (int64_t j = 0; j < a->n_kv; j++) sum += sc[j] == -INFINITY ? 0.0 : exp(sc[j] - mx);
            for (int i = 0; i < hd; i++) {
                double acc = 0.0;
                for (int64_t j = 0; j < a->n_kv; j++)
                    if (sc[j] != -INFINITY) acc += exp(sc[j] - mx) * kv_elem(a, a->v, g, j, i);
                o[i] = (float)(acc / sum);
            }
            if (a->lse) a->lse[t * a->n_head + h] = (float)(mx + log(sum));
        }
    free(sc);
}

void ls_ref_attn_merge(float *o1, float *lse1, const float *o2, const float *lse2, int64_t n, int d) {
    for (int64_t r = 0; r < n; r++) {
        double a = lse1[r], b = lse2[r];
        if (b == -INFINITY) continue;
        double mx = a > b ? a : b, wa = a == -INFINITY ? 0.0 : exp(a - mx), wb = exp(b - mx);
        for (int i = 0; i < d; i++) o1[r * d + i] = (float)((wa * o1[r * d + i] + wb * o2[r * d + i]) / (wa + wb));
        lse1[r] = (float)(mx + log(wa + wb));
    }
}
