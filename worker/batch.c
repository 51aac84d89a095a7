// batch.c — one forward pass over the tokens of many sequences (ls_engine_forward_batch):
// the items' tokens are packed into micro-batches of up to `ubatch` rows, each row knowing its
// sequence and position. Per layer the projections and the FFN run once over every row;
// RoPE, the cache and attention run per sequence (its rows are contiguous) with its own
// frequencies, positions and rule. Logits of the rows asked for are gathered to the front of
// the residual stream and computed LOGIT_ROWS at a time, whatever items they belong to.
// Docs: docs/architecture.md ("Engine"). Tests: tests/oracle/test_forward.py
// (batch case, against the float64 reference), tests/unit/test_sched.c.
#include "engine_impl.h"

#include <string.h>

// Rows [row, row + m) of a micro-batch hold tokens [off, off + m) of item `item`.
typedef struct segment {
    int64_t item, off, m, row;
} segment;

typedef struct batch_work {
    int32_t *ids;   // [ubatch] token ids of the micro-batch (host)
    segment *segs;  // [ubatch] at most one per row
    int64_t *who;   // [ubatch] item of each row that wants logits, gathered to the front
    int64_t *index; // [ubatch] its index within the item
} batch_work;

static ls_status check_item(const ls_engine_t *e, const ls_batch_item *items, int64_t i) {
    const ls_batch_item *it = &items[i];
    if (!it->seq || it->seq->e != e)
        return LS_ERR(LS_ERR_INVALID, "batch item %lld: %s", (long long)i,
                      it->seq ? "its sequence belongs to another engine" : "no sequence");
    if (it->n_tokens < 1 || !it->tokens)
        return LS_ERR(LS_ERR_INVALID, "batch item %lld: %lld tokens (give at least one)", (long long)i,
                      (long long)it->n_tokens);
    for (int64_t j = 0; j < i; j++)
        if (items[j].seq == it->seq)
            return LS_ERR(LS_ERR_INVALID, "batch item %lld: its sequence is also item %lld (one share per sequence "
                          "and batch)", (long long)i, (long long)j);
    const ls_seq_t *s = it->seq;
    if (!s->stream && s->len + it->n_tokens > s->cap)
        return LS_ERR(LS_ERR_RANGE, "batch item %lld: the sequence holds %lld of %lld tokens: %lld more do not fit",
                      (long long)i, (long long)s->len, (long long)s->cap, (long long)it->n_tokens);
    for (int64_t t = 0; t < it->n_tokens; t++)
        if (it->tokens[t] < 0 || it->tokens[t] >= e->cfg.n_vocab)
            return LS_ERR(LS_ERR_INVALID, "batch item %lld: token %lld is id %d, outside the vocabulary (0..%lld)",
                          (long long)i, (long long)t, it->tokens[t], (long long)e->cfg.n_vocab - 1);
    return LS_OK;
}

// The rows of one segment as views into the engine's activation buffers.
static ls_rows seg_rows(ls_engine_t *e, const segment *g, const ls_seq_t *s) {
    const ls_model_config *c = &e->cfg;
    activations *a = &e->act;
    int64_t r = g->row, nq = c->n_head * c->head_dim, nkv = c->n_head_kv * c->head_dim;
    return (ls_rows){.m = g->m, .x = a->x + r * c->n_embd, .h = a->h + r * c->n_embd, .q = a->q + r * nq,
                     .k = a->k + r * nkv, .v = a->v + r * nkv, .att = a->att + r * nq,
                     .q_sink = s->rule.kind == LS_ATTN_SINK ? a->q_sink + r * nq : NULL, .pos = a->pos + r,
                     .pos_sink = a->pos_sink + r};
}

// Moves the rows that want logits to the front of x, noting whose they are; returns how many.
static ls_status gather_logit_rows(ls_engine_t *e, const ls_batch_item *items, const segment *segs, int64_t ns,
                                   batch_work *w, int64_t *count) {
    size_t row_bytes = (size_t)e->cfg.n_embd * sizeof(float);
    float *x = e->act.x; // [ub][n_embd]
    int64_t k = 0;
    for (int64_t j = 0; j < ns; j++) {
        const segment *g = &segs[j];
        const ls_batch_item *it = &items[g->item];
        if (!it->on_logits) continue;
        for (int64_t t = it->logits_from > g->off ? it->logits_from - g->off : 0; t < g->m; t++, k++) {
            if (k != g->row + t) // k < g->row + t: distinct rows
                LS_CHECK(ls_backend_copy(e->be, x + k * e->cfg.n_embd, 0, x + (g->row + t) * e->cfg.n_embd, 0, row_bytes, 1));
            w->who[k] = g->item;
            w->index[k] = g->off + t;
        }
    }
    *count = k;
    return LS_OK;
}

static ls_status batch_logits(ls_engine_t *e, const ls_batch_item *items, const batch_work *w, int64_t n) {
    const ls_model_config *c = &e->cfg;
    activations *a = &e->act;
    for (int64_t r = 0; r < n; r += LOGIT_ROWS) {
        int64_t k = n - r < LOGIT_ROWS ? n - r : LOGIT_ROWS;
        LS_CHECK(ls_output_logits(e, a->x + r * c->n_embd, k, a->h + r * c->n_embd, a->logits));
        if (a->logits_host != a->logits)
            LS_CHECK(ls_backend_download(e->be, a->logits_host, a->logits, (size_t)(k * c->n_vocab) * sizeof(float)));
        for (int64_t i = 0; i < k; i++) {
            const ls_batch_item *it = &items[w->who[r + i]];
            LS_CHECK(it->on_logits(it->ctx, w->index[r + i], a->logits_host + i * c->n_vocab));
        }
    }
    return LS_OK;
}

// One micro-batch of m rows in ns segments through every layer, then its logits.
static ls_status run_ubatch(ls_engine_t *e, const ls_batch_item *items, const segment *segs, int64_t ns, int64_t m,
                            batch_work *w) {
    activations *a = &e->act;
    for (int64_t j = 0; j < ns; j++) { // room (streams evict), positions, ids
        const segment *g = &segs[j];
        ls_seq_t *s = items[g->item].seq;
        if (s->stream) LS_CHECK(ls_seq_make_room(s, g->m));
        ls_seq_positions(s, g->m, a->pos + g->row, a->pos_sink + g->row);
        memcpy(w->ids + g->row, items[g->item].tokens + g->off, (size_t)g->m * sizeof *w->ids);
    }
    LS_CHECK(ls_op_get_rows(e->be, &e->tok_embd, w->ids, m, a->x));
    ls_rows all = {.m = m, .x = a->x, .h = a->h, .q = a->q, .k = a->k, .v = a->v, .att = a->att, .gate = a->gate,
                   .up = a->up};
    for (int64_t il = 0; il < e->cfg.n_layer; il++) {
        LS_CHECK(ls_layer_proj(e, il, &all));
        for (int64_t j = 0; j < ns; j++) {
            ls_seq_t *s = items[segs[j].item].seq;
            ls_rows r = seg_rows(e, &segs[j], s);
            ls_rope_freqs f = ls_seq_freqs(s);
            LS_CHECK(ls_layer_rope(e, &r, &f));
            LS_CHECK(ls_seq_attend(e, s, il, &r, s->len));
        }
        LS_CHECK(ls_layer_out_ffn(e, il, &all));
    }
    for (int64_t j = 0; j < ns; j++) items[segs[j].item].seq->len += segs[j].m;
    int64_t n_logits;
    LS_CHECK(gather_logit_rows(e, items, segs, ns, w, &n_logits));
    return batch_logits(e, items, w, n_logits);
}

// Packs the items' tokens into micro-batches, in item order, and runs them.
static ls_status run_batch(ls_engine_t *e, const ls_batch_item *items, int64_t n, batch_work *w) {
    int64_t ns = 0, rows = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t off = 0; off < items[i].n_tokens;) {
            int64_t m = items[i].n_tokens - off < e->ubatch - rows ? items[i].n_tokens - off : e->ubatch - rows;
            w->segs[ns++] = (segment){.item = i, .off = off, .m = m, .row = rows};
            rows += m;
            off += m;
            if (rows == e->ubatch) {
                LS_CHECK(run_ubatch(e, items, w->segs, ns, rows, w));
                ns = rows = 0;
            }
        }
    return rows ? run_ubatch(e, items, w->segs, ns, rows, w) : LS_OK;
}

ls_status ls_engine_forward_batch(ls_engine_t *e, const ls_batch_item *items, int64_t n, int64_t *bad) {
    if (bad) *bad = -1;
    if (n < 0 || (n > 0 && !items)) return LS_ERR(LS_ERR_INVALID, "a batch of %lld items", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        ls_status rc = check_item(e, items, i);
        if (rc != LS_OK) {
            if (bad) *bad = i;
            return rc;
        }
    }
    size_t ub = (size_t)e->ubatch;
    batch_work w = {.ids = ls_malloc(ub * sizeof *w.ids), .segs = ls_malloc(ub * sizeof *w.segs),
                    .who = ls_malloc(ub * sizeof *w.who), .index = ls_malloc(ub * sizeof *w.index)};
    ls_status rc = run_batch(e, items, n, &w);
    ls_free(w.ids), ls_free(w.segs), ls_free(w.who), ls_free(w.index);
    return rc;
}
