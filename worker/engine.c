// engine.c — loading a model into an engine (configuration, RoPE overrides, tokenizer,
// backend, weight views, activation buffers) and sequences with their KV cache. The layer
// loop is in forward.c. Tests: tests/unit/test_engine.c, tests/oracle/test_forward.py.
#include "engine_impl.h"
#if LS_HAVE_CUDA
#include "ls_cuda.h"
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_UBATCH 512

ls_engine_opts ls_engine_opts_default(void) {
    return (ls_engine_opts){.device = LS_DEVICE_AUTO, .n_threads = 0, .first_cpu = 0, .ubatch = DEFAULT_UBATCH,
                            .rope = LS_ROPE_OVERRIDE_NONE};
}

static const char *g_device_names[] = {"auto", "cpu", "cuda"};

bool ls_device_parse(const char *name, ls_device *out) {
    for (int d = 0; d < 3; d++)
        if (!strcmp(name, g_device_names[d])) {
            *out = (ls_device)d;
            return true;
        }
    return false;
}

const char *ls_device_name(ls_device d) { return (unsigned)d < 3 ? g_device_names[d] : "invalid"; }

// --- weights ------------------------------------------------------------------------------

// A weight as the backend runs it: the file's bytes in place (CPU) or uploaded once (CUDA).
// LS_ERR_UNSUPPORTED naming the tensor when the engine has no dequantizer for its type.
static ls_status runnable(const ls_gguf_tensor *t) {
    if (ls_dequant_supported(t->type)) return LS_OK;
    return LS_ERR(LS_ERR_UNSUPPORTED, "tensor '%s' has type %s, which this engine cannot run yet", t->name,
                  ls_dtype_name(t->type));
}

static ls_status weight_of(ls_engine_t *e, const ls_gguf_tensor *t, ls_weight *w) {
    LS_CHECK(runnable(t));
    uint64_t row;
    ls_dtype_row_bytes(t->type, (uint64_t)t->ne[0], &row); // checked when the file was opened
    ls_weight host = {.type = t->type, .n_in = t->ne[0], .n_out = t->ne[1], .row_bytes = (size_t)row, .data = t->data};
    return ls_backend_weight_load(e->be, &host, w);
}

// A small tensor (norm, bias) as an f32 array in backend memory; NULL stays NULL.
static ls_status f32_copy(ls_engine_t *e, const ls_gguf_tensor *t, float **out) {
    *out = NULL;
    if (!t) return LS_OK;
    LS_CHECK(runnable(t));
    size_t bytes = (size_t)t->ne[0] * sizeof(float);
    float *host = ls_malloc(bytes);
    ls_status rc = ls_dequant_row(t->type, t->data, host, t->ne[0]);
    if (rc == LS_OK) rc = ls_backend_alloc(e->be, bytes, (void **)out);
    if (rc == LS_OK) rc = ls_backend_upload(e->be, *out, host, bytes);
    ls_free(host);
    return rc;
}

static ls_status load_layers(ls_engine_t *e) {
    const ls_model_config *c = &e->cfg;
    e->layers = ls_calloc((size_t)c->n_layer, sizeof *e->layers);
    for (int64_t il = 0; il < c->n_layer; il++) {
        const ls_layer_weights *src = &c->layers[il];
        layer *l = &e->layers[il];
        LS_CHECK(weight_of(e, src->wq, &l->wq));
        LS_CHECK(weight_of(e, src->wk, &l->wk));
        LS_CHECK(weight_of(e, src->wv, &l->wv));
        LS_CHECK(weight_of(e, src->wo, &l->wo));
        LS_CHECK(weight_of(e, src->w_gate, &l->w_gate));
        LS_CHECK(weight_of(e, src->w_up, &l->w_up));
        LS_CHECK(weight_of(e, src->w_down, &l->w_down));
        LS_CHECK(f32_copy(e, src->attn_norm, &l->attn_norm));
        LS_CHECK(f32_copy(e, src->ffn_norm, &l->ffn_norm));
        LS_CHECK(f32_copy(e, src->bq, &l->bq));
        LS_CHECK(f32_copy(e, src->bk, &l->bk));
        LS_CHECK(f32_copy(e, src->bv, &l->bv));
        LS_CHECK(f32_copy(e, src->bo, &l->bo));
    }
    return LS_OK;
}

static ls_status alloc_activations(ls_engine_t *e) {
    const ls_model_config *c = &e->cfg;
    size_t ub = (size_t)e->ubatch, q = (size_t)(c->n_head * c->head_dim), kv = (size_t)(c->n_head_kv * c->head_dim);
    size_t f = sizeof(float), logits = LOGIT_ROWS * (size_t)c->n_vocab * f;
    activations *a = &e->act;
    struct { float **p; size_t bytes; } bufs[] = {
        {&a->x, ub * (size_t)c->n_embd * f}, {&a->h, ub * (size_t)c->n_embd * f}, {&a->q, ub * q * f},
        {&a->q_sink, ub * q * f}, {&a->att, ub * q * f}, {&a->k, ub * kv * f}, {&a->v, ub * kv * f},
        {&a->gate, ub * (size_t)c->n_ff * f}, {&a->up, ub * (size_t)c->n_ff * f}, {&a->logits, logits}};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) LS_CHECK(ls_backend_alloc(e->be, bufs[i].bytes, (void **)bufs[i].p));
    a->logits_host = ls_backend_on_host(e->be) ? a->logits : ls_aligned_alloc(64, logits);
    a->pos = ls_malloc(ub * sizeof *a->pos);
    a->pos_sink = ls_malloc(ub * sizeof *a->pos_sink);
    return LS_OK;
}

static ls_status start_backend(ls_engine_t *e, const ls_engine_opts *o) {
    ls_device d = o->device;
#if LS_HAVE_CUDA
    if (d == LS_DEVICE_AUTO) d = ls_cuda_available() ? LS_DEVICE_CUDA : LS_DEVICE_CPU;
    if (d == LS_DEVICE_CUDA) {
        int n = ls_cuda_device_count();
        return ls_backend_cuda_init(n > 0 && o->gpu >= 0 ? o->gpu % n : 0, &e->be);
    }
#else
    if (d == LS_DEVICE_CUDA)
        return LS_ERR(LS_ERR_UNSUPPORTED, "--device cuda: this build has no CUDA backend (nvcc, cuBLAS and NCCL were "
                                          "not found when it was configured)");
#endif
    LS_CHECK(ls_backend_cpu_init(o->n_threads, o->first_cpu, &e->be));
    ls_backend_set_act_precision(e->be, o->act);
    return LS_OK;
}

// The KV cache pool: the asked element type or the backend's default, within kv_mem bytes.
static ls_status start_kv(ls_engine_t *e, const ls_engine_opts *o) {
    const ls_model_config *c = &e->cfg;
    ls_kv_shape shape = {(int)c->n_layer, (int)c->n_head_kv, (int)c->head_dim,
                         o->kv_type_set ? o->kv_type : ls_backend_on_host(e->be) ? LS_F32 : LS_BF16};
    int64_t max_pages = 0;
    if (o->kv_mem > 0) {
        uint64_t page = ls_kv_bytes_per_token(&shape) * LS_KV_PAGE;
        max_pages = (int64_t)((uint64_t)o->kv_mem / page);
        if (max_pages < 1)
            return LS_ERR(LS_ERR_INVALID, "a KV cache budget of %lld bytes holds no page (%llu bytes: %d tokens of %s)",
                          (long long)o->kv_mem, (unsigned long long)page, LS_KV_PAGE, ls_dtype_name(shape.type));
    }
    return ls_kv_init(e->be, &shape, max_pages, &e->kv);
}

static ls_status load(ls_engine_t *e, const char *path, const ls_engine_opts *o) {
    ls_load_opts lo = o->load;
    lo.shapes_only = false;
    LS_CHECK(ls_model_open(path, &lo, &e->gguf));
    LS_CHECK(ls_model_config_load(e->gguf, &e->cfg));
    LS_CHECK(ls_rope_override_apply(&e->cfg.rope, &o->rope, &e->notes));
    char hint[512];
    if (ls_rope_scaling_missing(&e->cfg, hint, sizeof hint)) LS_WARN("%s", hint);
    LS_CHECK(ls_tokenizer_init(e->gguf, &e->tok));
    if (ls_tokenizer_n_vocab(e->tok) != e->cfg.n_vocab)
        return LS_ERR(LS_ERR_FORMAT, "the tokenizer has %d tokens but the embeddings have %lld rows",
                      ls_tokenizer_n_vocab(e->tok), (long long)e->cfg.n_vocab);
    if (o->ubatch < 0 || o->ubatch > (1 << 16)) return LS_ERR(LS_ERR_INVALID, "micro-batch of %lld tokens", (long long)o->ubatch);
    e->ubatch = o->ubatch ? o->ubatch : DEFAULT_UBATCH;
    LS_CHECK(start_backend(e, o));
    LS_CHECK(weight_of(e, e->cfg.tok_embd, &e->tok_embd));
    if (e->cfg.output == e->cfg.tok_embd) e->output = e->tok_embd; // tied: one copy
    else LS_CHECK(weight_of(e, e->cfg.output, &e->output));
    LS_CHECK(f32_copy(e, e->cfg.output_norm, &e->output_norm));
    LS_CHECK(load_layers(e));
    LS_CHECK(start_kv(e, o));
    return alloc_activations(e);
}

ls_status ls_engine_load(const char *path, const ls_engine_opts *opts, ls_engine_t **out) {
    ls_engine_opts dflt = ls_engine_opts_default();
    ls_engine_t *e = ls_calloc(1, sizeof *e);
    ls_buf_append(&e->notes, "", 0);
    ls_status rc = load(e, path, opts ? opts : &dflt);
    if (rc != LS_OK) {
        ls_engine_free(e);
        *out = NULL;
        return rc;
    }
    *out = e;
    return LS_OK;
}

void ls_engine_free(ls_engine_t *e) {
    if (!e) return;
    ls_backend_t *be = e->be;
    if (be) {
        for (int64_t il = 0; e->layers && il < e->cfg.n_layer; il++) {
            layer *l = &e->layers[il];
            ls_weight *w[] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up, &l->w_down};
            for (size_t i = 0; i < sizeof w / sizeof *w; i++) ls_backend_weight_release(be, w[i]);
            float *v[] = {l->attn_norm, l->ffn_norm, l->bq, l->bk, l->bv, l->bo};
            for (size_t i = 0; i < sizeof v / sizeof *v; i++) ls_backend_release(be, v[i]);
        }
        if (e->output.data != e->tok_embd.data) ls_backend_weight_release(be, &e->output);
        ls_backend_weight_release(be, &e->tok_embd);
        ls_backend_release(be, e->output_norm);
        activations *a = &e->act;
        float *bufs[] = {a->x, a->h, a->q, a->q_sink, a->att, a->k, a->v, a->gate, a->up, a->logits};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) ls_backend_release(be, bufs[i]);
        if (a->logits_host != a->logits) ls_free(a->logits_host);
        ls_free(a->pos), ls_free(a->pos_sink);
        ls_kv_free(e->kv);
        ls_backend_free(be);
    }
    ls_free(e->layers);
    ls_tokenizer_free(e->tok);
    ls_model_config_free(&e->cfg);
    ls_gguf_free(e->gguf);
    ls_buf_free(&e->notes);
    ls_free(e);
}

const ls_model_config *ls_engine_config(const ls_engine_t *e) { return &e->cfg; }
const ls_tokenizer_t *ls_engine_tokenizer(const ls_engine_t *e) { return e->tok; }
const ls_gguf_t *ls_engine_gguf(const ls_engine_t *e) { return e->gguf; }
ls_backend_t *ls_engine_backend(ls_engine_t *e) { return e->be; }
ls_dtype ls_engine_kv_type(const ls_engine_t *e) { return ls_kv_shape_of(e->kv)->type; }
ls_kv_usage ls_engine_kv_usage(const ls_engine_t *e) { return ls_kv_usage_of(e->kv); }
const char *ls_engine_notes(const ls_engine_t *e) { return e->notes.data; }

// --- sequences ----------------------------------------------------------------------------

// A stream re-rotates its window keys once p - base reaches this (tests set it low to exercise
// the re-rotation often).
LS_PARAM(rebase_at, "LS_REBASE_AT", 1 << 14)

static ls_status check_rule(const ls_engine_t *e, const ls_seq_opts *o, ls_attn_rule *r) {
    *r = o->rule;
    r->n_head = (int)e->cfg.n_head;
    LS_CHECK(ls_attn_rule_check(r));
    bool evicting = r->kind == LS_ATTN_SINK || r->kind == LS_ATTN_WINDOW;
    if (o->stream && !evicting)
        return LS_ERR(LS_ERR_INVALID, "streaming needs the sink or window rule: %s attention keeps every key",
                      ls_attn_kind_name(r->kind));
    if (o->stream && ls_model_has_window_layers(&e->cfg)) // its evictions would follow one window only
        return LS_ERR(LS_ERR_UNSUPPORTED, "streaming is not supported for a model with sliding-window layers "
                      "(attention.sliding_window = %lld)", (long long)e->cfg.sliding_window);
    int64_t span = (r->kind == LS_ATTN_SINK ? r->sinks : 0) + r->window + 1;
    if (evicting && !o->stream && span > o->capacity)
        return LS_ERR(LS_ERR_INVALID,
                      "the %s window (%lld sinks + %lld previous tokens + the query) does not fit in a cache of %lld tokens: "
                      "nothing would ever be evicted; use a larger context, a smaller window, or streaming",
                      ls_attn_kind_name(r->kind), (long long)(r->kind == LS_ATTN_SINK ? r->sinks : 0),
                      (long long)r->window, (long long)o->capacity);
    return LS_OK;
}

// The slots a sequence may need at once: every position of a plain one; for a stream, its
// sink pages, the `cap` tokens of its window and one page the window may start into.
static int64_t slots_needed(const ls_seq_t *s) {
    return s->stream ? s->sink_slots + s->cap - s->sinks + LS_KV_PAGE : s->cap;
}

ls_status ls_seq_init_opts(ls_engine_t *e, const ls_seq_opts *o, ls_seq_t **out) {
    *out = NULL;
    const ls_model_config *c = &e->cfg;
    ls_attn_rule rule;
    LS_CHECK(check_rule(e, o, &rule));
    int64_t sinks = rule.kind == LS_ATTN_SINK ? rule.sinks : 0;
    int64_t capacity = o->stream ? sinks + rule.window + e->ubatch : o->capacity;
    if (capacity < 1 || capacity > (1 << 24))
        return LS_ERR(LS_ERR_RANGE, "a sequence of %lld tokens is outside 1..2^24", (long long)capacity);
    int64_t sink_slots = o->stream ? (sinks + LS_KV_PAGE - 1) / LS_KV_PAGE * LS_KV_PAGE : sinks;
    ls_seq_t *s = ls_calloc(1, sizeof *s);
    *s = (ls_seq_t){.e = e, .rule = rule, .stream = o->stream, .cap = capacity, .sinks = sinks, .win0 = sinks,
                    .sink_slots = sink_slots, .wbase = sinks};
    s->inv_freq = ls_malloc((size_t)c->rope.n_rot / 2 * sizeof *s->inv_freq);
    if (o->stream) s->shift_pos = ls_malloc((size_t)capacity * sizeof *s->shift_pos);
    ls_status rc = ls_kv_seq_init(e->kv, &s->kv);
    if (rc == LS_OK) rc = ls_kv_seq_reserve(s->kv, slots_needed(s)); // all at once: a plain run fails here or never
    if (rc == LS_OK) rc = ls_rope_compute(&c->rope, capacity, s->inv_freq, &s->attn_factor);
    if (rc != LS_OK) {
        ls_seq_free(s);
        return rc;
    }
    *out = s;
    return LS_OK;
}

ls_status ls_seq_init(ls_engine_t *e, int64_t capacity, ls_seq_t **out) {
    ls_seq_opts o = {.capacity = capacity, .rule = {.kind = LS_ATTN_FULL}};
    return ls_seq_init_opts(e, &o, out);
}

void ls_seq_free(ls_seq_t *s) {
    if (!s) return;
    ls_kv_seq_free(s->kv);
    ls_free(s->shift_pos);
    ls_free(s->inv_freq);
    ls_free(s);
}

int64_t ls_seq_len(const ls_seq_t *s) { return s->len; }
int64_t ls_seq_capacity(const ls_seq_t *s) { return s->cap; }

void ls_seq_reset(ls_seq_t *s) {
    s->len = 0;
    s->win0 = s->wbase = s->sinks;
    s->base = 0;
}

// Drops window positions [win0, new_win0): the pages wholly before new_win0 go back to the pool.
static ls_status evict(ls_seq_t *s, int64_t new_win0) {
    int64_t pages = (new_win0 - s->wbase) / LS_KV_PAGE;
    LS_CHECK(ls_kv_seq_drop(s->kv, s->sink_slots / LS_KV_PAGE, pages));
    s->wbase += pages * LS_KV_PAGE;
    s->win0 = new_win0;
    return LS_OK;
}

// Re-rotates the kept window keys by -(new_base - base): their angles then restart near 0.
static ls_status rebase(ls_seq_t *s, int64_t new_base) {
    const ls_model_config *c = &s->e->cfg;
    int64_t n = s->len - s->win0, delta = new_base - s->base;
    if (n <= 0 || delta == 0) {
        s->base = new_base;
        return LS_OK;
    }
    for (int64_t t = 0; t < n; t++) s->shift_pos[t] = -delta;
    ls_rope_freqs f = {c->rope.n_rot, s->inv_freq, 1.0f, c->rope_halves ? LS_ROPE_PAIR_HALVES : LS_ROPE_PAIR_ADJACENT}; // a pure rotation
    LS_CHECK(ls_kv_rotate(s->kv, ls_seq_slot(s, s->win0), n, s->shift_pos, &f));
    s->base = new_base;
    return LS_OK;
}

ls_status ls_seq_make_room(ls_seq_t *s, int64_t m) {
    int64_t held = (s->len < s->sinks ? s->len : s->sinks) + (s->len > s->win0 ? s->len - s->win0 : 0);
    if (held + m > s->cap) { // keep the sinks and the last W positions before the new tokens
        int64_t new_win0 = s->len - s->rule.window;
        if (new_win0 > s->win0) LS_CHECK(evict(s, new_win0));
    }
    if (s->len + m - s->base > ls_param_rebase_at() && s->win0 > s->base) LS_CHECK(rebase(s, s->win0));
    return ls_kv_seq_reserve(s->kv, ls_seq_slot(s, s->len + m - 1) + 1); // pages for the new tokens
}

ls_status ls_engine_forward(ls_engine_t *e, ls_seq_t *s, const int32_t *tokens, int64_t n,
                            const ls_forward_opts *o) {
    if (n < 0) return LS_ERR(LS_ERR_INVALID, "forward: %lld tokens", (long long)n);
    if (!s->stream && s->len + n > s->cap)
        return LS_ERR(LS_ERR_RANGE, "the sequence holds %lld of %lld tokens: %lld more do not fit", (long long)s->len,
                      (long long)s->cap, (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= e->cfg.n_vocab)
            return LS_ERR(LS_ERR_INVALID, "token %lld is id %d, outside the vocabulary (0..%lld)", (long long)i,
                          tokens[i], (long long)e->cfg.n_vocab - 1);
    for (int64_t off = 0; off < n; off += e->ubatch) {
        int64_t m = n - off < e->ubatch ? n - off : e->ubatch;
        if (s->stream) LS_CHECK(ls_seq_make_room(s, m));
        LS_CHECK(ls_engine_forward_ubatch(e, s, tokens + off, m, o ? o->logits_from - off : m, o, off));
        if (o && o->on_progress) LS_CHECK(o->on_progress(o->progress_ctx, off + m, n));
    }
    return LS_OK;
}
