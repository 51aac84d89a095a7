// forward.c — one micro-batch through the llama layers, on the engine's backend:
//   x = embed(tokens)
//   per layer: h = rms(x)·attn_norm; q,k,v = h·Wq,Wk,Wv (+bias); rope(q,k) at the absolute
//              positions; append k,v to the cache; x += attention(q, cache)·Wo
//              h = rms(x)·ffn_norm; x += (silu(h·Wgate) * (h·Wup))·Wdown
//   logits = rms(x)·output_norm · Woutᵀ, for the rows asked for, LOGIT_ROWS at a time.
// Spec: ../shared/spec/formats.md §2. Tests: tests/oracle/test_forward.py.
#include "engine_impl.h"

#include <math.h>
#include <string.h>

static ls_status add_bias(ls_backend_t *be, float *y, const float *bias, int64_t m, int64_t n) {
    if (!bias) return LS_OK;
    for (int64_t t = 0; t < m; t++) LS_CHECK(ls_op_add(be, y + t * n, bias, n));
    return LS_OK;
}

// The cache slot of position p (see struct ls_seq).
static int64_t slot(const ls_seq_t *s, int64_t p) { return p < s->sinks ? p : s->sinks + (p - s->win0); }

// Copies this micro-batch's keys and values [m][n_kv_head][hd] into the layer's cache
// [n_kv_head][cap][hd] at the slots of positions p0..p0+m-1.
static void store_kv(const ls_seq_t *s, const ls_model_config *c, int64_t il, const float *k,
                     const float *v, int64_t m, int64_t p0) {
    size_t hd = (size_t)c->head_dim, layer = (size_t)(c->n_head_kv * s->cap) * hd;
    float *kc = s->k + (size_t)il * layer, *vc = s->v + (size_t)il * layer;
    for (int64_t t = 0; t < m; t++)
        for (int64_t g = 0; g < c->n_head_kv; g++) {
            size_t dst = ((size_t)g * (size_t)s->cap + (size_t)slot(s, p0 + t)) * hd,
                   src = ((size_t)t * (size_t)c->n_head_kv + (size_t)g) * hd;
            memcpy(kc + dst, k + src, hd * sizeof *k);
            memcpy(vc + dst, v + src, hd * sizeof *v);
        }
}

static ls_status attention_block(ls_engine_t *e, ls_seq_t *s, int64_t il, int64_t m, int64_t p0) {
    const ls_model_config *c = &e->cfg;
    const layer *l = &e->layers[il];
    activations *a = &e->act;
    ls_backend_t *be = e->be;
    int64_t nq = c->n_head * c->head_dim, nkv = c->n_head_kv * c->head_dim;
    LS_CHECK(ls_op_rmsnorm(be, a->x, l->attn_norm, a->h, m, c->n_embd, (float)c->rms_eps));
    LS_CHECK(ls_op_matmul(be, &l->wq, a->h, a->q, m));
    LS_CHECK(ls_op_matmul(be, &l->wk, a->h, a->k, m));
    LS_CHECK(ls_op_matmul(be, &l->wv, a->h, a->v, m));
    LS_CHECK(add_bias(be, a->q, l->bq, m, nq));
    LS_CHECK(add_bias(be, a->k, l->bk, m, nkv));
    LS_CHECK(add_bias(be, a->v, l->bv, m, nkv));
    ls_rope_freqs f = {c->rope.n_rot, s->inv_freq, s->attn_factor, LS_ROPE_PAIR_ADJACENT};
    bool sink = s->rule.kind == LS_ATTN_SINK;
    if (sink) { // the same queries, rotated at their StreamingLLM slots, for the sink keys
        memcpy(a->q_sink, a->q, (size_t)(m * nq) * sizeof *a->q);
        LS_CHECK(ls_op_rope(be, a->q_sink, m, (int)c->n_head, (int)c->head_dim, a->pos_sink, &f));
    }
    LS_CHECK(ls_op_rope(be, a->q, m, (int)c->n_head, (int)c->head_dim, a->pos, &f));
    LS_CHECK(ls_op_rope(be, a->k, m, (int)c->n_head_kv, (int)c->head_dim, a->pos, &f));
    store_kv(s, c, il, a->k, a->v, m, p0);
    size_t layer_off = (size_t)il * (size_t)(c->n_head_kv * s->cap * c->head_dim);
    int64_t end = p0 + m, kv_sinks = end < s->sinks ? end : s->sinks;
    ls_attn_args at = {.q = a->q, .q_sink = sink ? a->q_sink : NULL, .k = s->k + layer_off, .v = s->v + layer_off,
                       .out = a->att, .n_q = m, .q_pos0 = p0, .n_kv = kv_sinks + (end > s->win0 ? end - s->win0 : 0),
                       .kv_sinks = kv_sinks, .kv_pos0 = s->win0, .kv_stride = s->cap, .n_head = (int)c->n_head,
                       .n_kv_head = (int)c->n_head_kv, .head_dim = (int)c->head_dim,
                       .scale = 1.0f / sqrtf((float)c->head_dim), .rule = s->rule};
    LS_CHECK(ls_op_attention(be, &at));
    LS_CHECK(ls_op_matmul(be, &l->wo, a->att, a->h, m));
    LS_CHECK(add_bias(be, a->h, l->bo, m, c->n_embd));
    return ls_op_add(be, a->x, a->h, m * c->n_embd);
}

static ls_status ffn_block(ls_engine_t *e, int64_t il, int64_t m) {
    const ls_model_config *c = &e->cfg;
    const layer *l = &e->layers[il];
    activations *a = &e->act;
    ls_backend_t *be = e->be;
    LS_CHECK(ls_op_rmsnorm(be, a->x, l->ffn_norm, a->h, m, c->n_embd, (float)c->rms_eps));
    LS_CHECK(ls_op_matmul(be, &l->w_gate, a->h, a->gate, m));
    LS_CHECK(ls_op_matmul(be, &l->w_up, a->h, a->up, m));
    LS_CHECK(ls_op_swiglu(be, a->gate, a->up, a->gate, m * c->n_ff));
    LS_CHECK(ls_op_matmul(be, &l->w_down, a->gate, a->h, m));
    return ls_op_add(be, a->x, a->h, m * c->n_embd);
}

// Logits for rows [r0, m) of the micro-batch, handed out one row at a time.
static ls_status logits_rows(ls_engine_t *e, int64_t r0, int64_t m, const ls_forward_opts *o, int64_t index0) {
    const ls_model_config *c = &e->cfg;
    activations *a = &e->act;
    for (int64_t r = r0; r < m; r += LOGIT_ROWS) {
        int64_t n = m - r < LOGIT_ROWS ? m - r : LOGIT_ROWS;
        float *h = a->h + r * c->n_embd;
        LS_CHECK(ls_op_rmsnorm(e->be, a->x + r * c->n_embd, e->output_norm, h, n, c->n_embd, (float)c->rms_eps));
        LS_CHECK(ls_op_matmul(e->be, &e->output, h, a->logits, n));
        for (int64_t i = 0; i < n; i++) LS_CHECK(o->on_logits(o->ctx, index0 + r + i, a->logits + i * c->n_vocab));
    }
    return LS_OK;
}

ls_status ls_engine_forward_ubatch(ls_engine_t *e, ls_seq_t *s, const int32_t *tokens, int64_t m,
                                   int64_t logits_from, const ls_forward_opts *o, int64_t index0) {
    activations *a = &e->act;
    int64_t p0 = s->len, slot_cap = s->rule.sinks + s->rule.window; // S + W: a full StreamingLLM cache
    for (int64_t t = 0; t < m; t++) {
        a->pos[t] = p0 + t - (p0 + t < s->sinks ? 0 : s->base);
        a->pos_sink[t] = p0 + t < slot_cap ? p0 + t : slot_cap;
    }
    LS_CHECK(ls_op_get_rows(e->be, &e->tok_embd, tokens, m, a->x));
    for (int64_t il = 0; il < e->cfg.n_layer; il++) {
        LS_CHECK(attention_block(e, s, il, m, p0));
        LS_CHECK(ffn_block(e, il, m));
    }
    s->len += m;
    if (o && o->on_logits && logits_from < m) LS_CHECK(logits_rows(e, logits_from > 0 ? logits_from : 0, m, o, index0));
    return LS_OK;
}
