// forward.c — one micro-batch through the llama layers, on the engine's backend:
//   x = embed(tokens)
//   per layer: h = rms(x)·attn_norm; q,k,v = h·Wq,Wk,Wv (+bias); rope(q,k) at the absolute
//              positions; append k,v to the cache; x += attention(q, cache)·Wo
//              h = rms(x)·ffn_norm; x += (silu(h·Wgate) * (h·Wup))·Wdown
//   logits = rms(x)·output_norm · Woutᵀ, for the rows asked for, LOGIT_ROWS at a time.
// The steps (projections, per-sequence RoPE, store-and-attend, output and FFN) are exported
// through engine_impl.h, so worker/batch.c runs them over a micro-batch of many sequences.
// Docs: docs/formats.md §3.3. Tests: tests/oracle/test_forward.py.
#include "engine_impl.h"

#include <math.h>
#include <string.h>

static ls_status add_bias(ls_backend_t *be, float *y, const float *bias, int64_t m, int64_t n) {
    if (!bias) return LS_OK;
    for (int64_t t = 0; t < m; t++) LS_CHECK(ls_op_add(be, y + t * n, bias, n));
    return LS_OK;
}

// Stores this micro-batch's keys and values [m][n_kv_head][hd] of layer il at the cache slots
// of positions p0..p0+m-1: one run of consecutive slots, or two where the sinks end.
static ls_status store_kv(const ls_seq_t *s, int64_t il, const float *k, const float *v, int64_t m, int64_t p0) {
    size_t row = (size_t)(s->e->cfg.n_head_kv * s->e->cfg.head_dim);
    for (int64_t t0 = 0; t0 < m;) {
        int64_t t1 = p0 + t0 < s->sinks && p0 + m > s->sinks ? s->sinks - p0 : m; // end of this run
        LS_CHECK(ls_kv_store(s->kv, il, k + (size_t)t0 * row, v + (size_t)t0 * row, ls_seq_slot(s, p0 + t0), t1 - t0));
        t0 = t1;
    }
    return LS_OK;
}

ls_status ls_layer_proj(ls_engine_t *e, int64_t il, const ls_rows *r) {
    const ls_model_config *c = &e->cfg;
    const layer *l = &e->layers[il];
    ls_backend_t *be = e->be;
    int64_t m = r->m, nq = c->n_head * c->head_dim, nkv = c->n_head_kv * c->head_dim;
    LS_CHECK(ls_op_rmsnorm(be, r->x, l->attn_norm, r->h, m, c->n_embd, (float)c->rms_eps));
    LS_CHECK(ls_op_matmul(be, &l->wq, r->h, r->q, m));
    LS_CHECK(ls_op_matmul(be, &l->wk, r->h, r->k, m));
    LS_CHECK(ls_op_matmul(be, &l->wv, r->h, r->v, m));
    LS_CHECK(add_bias(be, r->q, l->bq, m, nq));
    LS_CHECK(add_bias(be, r->k, l->bk, m, nkv));
    return add_bias(be, r->v, l->bv, m, nkv);
}

ls_status ls_layer_rope(ls_engine_t *e, const ls_rows *r, const ls_rope_freqs *f) {
    const ls_model_config *c = &e->cfg;
    ls_backend_t *be = e->be;
    int64_t m = r->m, nq = c->n_head * c->head_dim;
    if (r->q_sink) { // the same queries, rotated at their StreamingLLM slots, for the sink keys
        LS_CHECK(ls_backend_copy(be, r->q_sink, 0, r->q, 0, (size_t)(m * nq) * sizeof *r->q, 1));
        LS_CHECK(ls_op_rope(be, r->q_sink, m, (int)c->n_head, (int)c->head_dim, r->pos_sink, f));
    }
    LS_CHECK(ls_op_rope(be, r->q, m, (int)c->n_head, (int)c->head_dim, r->pos, f));
    return ls_op_rope(be, r->k, m, (int)c->n_head_kv, (int)c->head_dim, r->pos, f);
}

ls_status ls_layer_qkv(ls_engine_t *e, int64_t il, const ls_rows *r, const ls_rope_freqs *f) {
    LS_CHECK(ls_layer_proj(e, il, r));
    return ls_layer_rope(e, r, f);
}

ls_status ls_layer_out_ffn(ls_engine_t *e, int64_t il, const ls_rows *r) {
    const ls_model_config *c = &e->cfg;
    const layer *l = &e->layers[il];
    ls_backend_t *be = e->be;
    int64_t m = r->m;
    LS_CHECK(ls_op_matmul(be, &l->wo, r->att, r->h, m));
    LS_CHECK(add_bias(be, r->h, l->bo, m, c->n_embd));
    LS_CHECK(ls_op_add(be, r->x, r->h, m * c->n_embd));
    LS_CHECK(ls_op_rmsnorm(be, r->x, l->ffn_norm, r->h, m, c->n_embd, (float)c->rms_eps));
    LS_CHECK(ls_op_matmul(be, &l->w_gate, r->h, r->gate, m));
    LS_CHECK(ls_op_matmul(be, &l->w_up, r->h, r->up, m));
    LS_CHECK(ls_op_swiglu(be, r->gate, r->up, r->gate, m * c->n_ff));
    LS_CHECK(ls_op_matmul(be, &l->w_down, r->gate, r->h, m));
    return ls_op_add(be, r->x, r->h, m * c->n_embd);
}

ls_status ls_output_logits(ls_engine_t *e, const float *x, int64_t m, float *h, float *logits) {
    const ls_model_config *c = &e->cfg;
    LS_CHECK(ls_op_rmsnorm(e->be, x, e->output_norm, h, m, c->n_embd, (float)c->rms_eps));
    return ls_op_matmul(e->be, &e->output, h, logits, m);
}

// Attention of the sequence's m queries at positions p0.. (q, q_sink: [m][n_head*hd]) over
// its cache of layer il under the layer's rule (ls_layer_rule: the model's window layers keep
// theirs): the sinks, then the window from win0 (its first key kv_gap slots past the sinks'
// pages). out: [m][n_head*hd].
static ls_status attend(const ls_seq_t *s, int64_t il, const float *q, const float *q_sink, float *out, int64_t m,
                        int64_t p0) {
    const ls_model_config *c = &s->e->cfg;
    int64_t end = p0 + m, kv_sinks = end < s->sinks ? end : s->sinks;
    ls_attn_rule rule = ls_layer_rule(c, &s->rule, il);
    ls_attn_args at = {.q = q, .q_sink = rule.kind == LS_ATTN_SINK ? q_sink : NULL, .out = out, .n_q = m, .q_pos0 = p0,
                       .n_kv = kv_sinks + (end > s->win0 ? end - s->win0 : 0), .kv_sinks = kv_sinks, .kv_pos0 = s->win0,
                       .kv_gap = ls_seq_slot(s, s->win0) - s->sinks, .n_head = (int)c->n_head,
                       .n_kv_head = (int)c->n_head_kv, .head_dim = (int)c->head_dim,
                       .scale = 1.0f / sqrtf((float)c->head_dim), .rule = rule};
    return ls_kv_attend(s->kv, il, &at);
}

ls_rope_freqs ls_seq_freqs(const ls_seq_t *s) {
    return (ls_rope_freqs){s->e->cfg.rope.n_rot, s->inv_freq, s->attn_factor,
                           s->e->cfg.rope_halves ? LS_ROPE_PAIR_HALVES : LS_ROPE_PAIR_ADJACENT};
}

// The micro-batch's keys and values into the sequence's cache, then attention over the cache
// under the sequence's rule.
ls_status ls_seq_attend(ls_engine_t *e, ls_seq_t *s, int64_t il, const ls_rows *r, int64_t p0) {
    (void)e;
    LS_CHECK(store_kv(s, il, r->k, r->v, r->m, p0));
    return attend(s, il, r->q, r->q_sink, r->att, r->m, p0);
}

// One layer for the micro-batch: projections, the keys and values into the cache, attention
// over the cache under the sequence's rule, output projection and FFN.
static ls_status run_layer(ls_engine_t *e, ls_seq_t *s, int64_t il, const ls_rows *r, int64_t p0) {
    ls_rope_freqs f = ls_seq_freqs(s);
    LS_CHECK(ls_layer_qkv(e, il, r, &f));
    LS_CHECK(ls_seq_attend(e, s, il, r, p0));
    return ls_layer_out_ffn(e, il, r);
}

void ls_seq_positions(const ls_seq_t *s, int64_t m, int64_t *pos, int64_t *pos_sink) {
    int64_t p0 = s->len, slot_cap = s->rule.sinks + s->rule.window; // S + W: a full StreamingLLM cache
    for (int64_t t = 0; t < m; t++) {
        pos[t] = p0 + t - (p0 + t < s->sinks ? 0 : s->base);
        pos_sink[t] = p0 + t < slot_cap ? p0 + t : slot_cap;
    }
}

// Logits for rows [r0, m) of the micro-batch, handed out one row at a time.
static ls_status logits_rows(ls_engine_t *e, int64_t r0, int64_t m, const ls_forward_opts *o, int64_t index0) {
    const ls_model_config *c = &e->cfg;
    activations *a = &e->act;
    for (int64_t r = r0; r < m; r += LOGIT_ROWS) {
        int64_t n = m - r < LOGIT_ROWS ? m - r : LOGIT_ROWS;
        LS_CHECK(ls_output_logits(e, a->x + r * c->n_embd, n, a->h + r * c->n_embd, a->logits));
        if (a->logits_host != a->logits)
            LS_CHECK(ls_backend_download(e->be, a->logits_host, a->logits, (size_t)(n * c->n_vocab) * sizeof(float)));
        for (int64_t i = 0; i < n; i++) LS_CHECK(o->on_logits(o->ctx, index0 + r + i, a->logits_host + i * c->n_vocab));
    }
    return LS_OK;
}

ls_status ls_engine_forward_ubatch(ls_engine_t *e, ls_seq_t *s, const int32_t *tokens, int64_t m,
                                   int64_t logits_from, const ls_forward_opts *o, int64_t index0) {
    activations *a = &e->act;
    int64_t p0 = s->len;
    ls_seq_positions(s, m, a->pos, a->pos_sink);
    LS_CHECK(ls_op_get_rows(e->be, &e->tok_embd, tokens, m, a->x));
    ls_rows r = {.m = m, .x = a->x, .h = a->h, .q = a->q, .k = a->k, .v = a->v, .att = a->att, .gate = a->gate,
                 .up = a->up, .q_sink = s->rule.kind == LS_ATTN_SINK ? a->q_sink : NULL, .pos = a->pos,
                 .pos_sink = a->pos_sink};
    for (int64_t il = 0; il < e->cfg.n_layer; il++) LS_CHECK(run_layer(e, s, il, &r, p0));
    s->len += m;
    if (o && o->on_logits && logits_from < m) LS_CHECK(logits_rows(e, logits_from > 0 ? logits_from : 0, m, o, index0));
    return LS_OK;
}
