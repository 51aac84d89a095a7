// config.c — the model configuration of the llama layout (llama, mistral, qwen2, phi3) from GGUF
// metadata: hyperparameters, RoPE settings, sliding-window layers and every weight tensor, each
// checked against the shape the hyperparameters imply. Docs: docs/formats.md §3, docs/rope.md §4.
// Tests: tests/unit/test_model.c, tests/oracle/test_inspect.py.
#include "ls_model.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *g_scaling_names[LS_ROPE_SCALING_COUNT] = {
    "none", "linear", "ntk", "dynamic", "yarn", "llama3", "longrope"};

const char *ls_rope_scaling_name(ls_rope_scaling s) {
    return (unsigned)s < LS_ROPE_SCALING_COUNT ? g_scaling_names[s] : "invalid";
}

bool ls_rope_scaling_parse(const char *name, ls_rope_scaling *out) {
    for (int i = 0; i < LS_ROPE_SCALING_COUNT; i++)
        if (!strcmp(name, g_scaling_names[i])) {
            *out = (ls_rope_scaling)i;
            return true;
        }
    return false;
}

// --- metadata helpers ---------------------------------------------------------------------

typedef struct keys {
    const ls_gguf_t *g;
    const char *arch;
    char buf[160];
} keys;

static const char *key(keys *k, const char *suffix) {
    snprintf(k->buf, sizeof k->buf, "%s.%s", k->arch, suffix);
    return k->buf;
}

// An integer hyperparameter in [lo, hi]. Absent: *v = dflt, or an error when dflt < 0.
static ls_status get_int(keys *k, const char *suffix, int64_t dflt, int64_t lo, int64_t hi, int64_t *v) {
    const char *name = key(k, suffix);
    ls_status rc = ls_gguf_get_int(k->g, name, v);
    if (rc == LS_ERR_NOT_FOUND) {
        if (dflt < 0) return LS_ERR(LS_ERR_FORMAT, "the model has no %s", name);
        *v = dflt;
        return LS_OK;
    }
    LS_CHECK(rc);
    if (*v < lo || *v > hi)
        return LS_ERR(LS_ERR_FORMAT, "%s = %lld is out of range (%lld to %lld)", name, (long long)*v,
                      (long long)lo, (long long)hi);
    return LS_OK;
}

static ls_status get_float(keys *k, const char *suffix, double dflt, double *v) {
    const char *name = key(k, suffix);
    ls_status rc = ls_gguf_get_float(k->g, name, v);
    if (rc == LS_ERR_NOT_FOUND) {
        *v = dflt;
        return LS_OK;
    }
    LS_CHECK(rc);
    if (!isfinite(*v)) return LS_ERR(LS_ERR_FORMAT, "%s is not a finite number", name);
    return LS_OK;
}

// --- tensors ------------------------------------------------------------------------------

// A tensor with shape [ne0] (ne1 == 0) or [ne0, ne1]. Absent: NULL, or an error if required.
static ls_status tensor(const ls_gguf_t *g, const char *name, int64_t ne0, int64_t ne1,
                        bool required, const ls_gguf_tensor **out) {
    const ls_gguf_tensor *t = ls_gguf_find_tensor(g, name);
    *out = t;
    if (!t) return required ? LS_ERR(LS_ERR_FORMAT, "the model has no tensor '%s'", name) : LS_OK;
    int64_t want1 = ne1 ? ne1 : 1;
    if (t->ne[0] != ne0 || t->ne[1] != want1 || t->ne[2] != 1 || t->ne[3] != 1) {
        if (ne1)
            return LS_ERR(LS_ERR_FORMAT, "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]",
                          name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                          (long long)t->ne[3], (long long)ne0, (long long)ne1);
        return LS_ERR(LS_ERR_FORMAT, "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld]",
                      name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                      (long long)t->ne[3], (long long)ne0);
    }
    return LS_OK;
}

// Rows [r0, r0 + rows) of a 2-D tensor as a tensor of its own (in place: rows are contiguous
// in every type).
static const ls_gguf_tensor *row_view(ls_gguf_tensor *v, const ls_gguf_tensor *t, int64_t r0, int64_t rows) {
    uint64_t row;
    ls_dtype_row_bytes(t->type, (uint64_t)t->ne[0], &row); // checked when the file was opened
    *v = *t;
    v->ne[1] = rows;
    v->nbytes = row * (uint64_t)rows;
    v->offset = t->offset + row * (uint64_t)r0;
    v->data = t->data ? (const char *)t->data + row * (uint64_t)r0 : NULL; // (shapes-only loads have none)
    return v;
}

// Phi-3's fused tensors, when the layer has them: attn_qkv [n_embd, q + 2 kv] and ffn_up
// [n_embd, 2 n_ff] without ffn_gate (gate rows first, as Hugging Face's gate_up_proj).
static ls_status fused_tensors(const ls_gguf_t *g, ls_model_config *c, int64_t il, ls_layer_weights *w) {
    char n[96];
    int64_t q = c->n_head * c->head_dim, kv = c->n_head_kv * c->head_dim;
    ls_gguf_tensor *v = c->views + il * 5;
    const ls_gguf_tensor *t;
    snprintf(n, sizeof n, "blk.%lld.attn_qkv.weight", (long long)il);
    LS_CHECK(tensor(g, n, c->n_embd, q + 2 * kv, false, &t));
    if (t) {
        w->wq = row_view(v + 0, t, 0, q);
        w->wk = row_view(v + 1, t, q, kv);
        w->wv = row_view(v + 2, t, q + kv, kv);
    }
    snprintf(n, sizeof n, "blk.%lld.ffn_gate.weight", (long long)il);
    if (ls_gguf_find_tensor(g, n)) return LS_OK;
    snprintf(n, sizeof n, "blk.%lld.ffn_up.weight", (long long)il);
    t = ls_gguf_find_tensor(g, n);
    if (t && t->ne[1] == 2 * c->n_ff) {
        LS_CHECK(tensor(g, n, c->n_embd, 2 * c->n_ff, true, &t));
        w->w_gate = row_view(v + 3, t, 0, c->n_ff);
        w->w_up = row_view(v + 4, t, c->n_ff, c->n_ff);
    }
    return LS_OK;
}

static ls_status layer_tensors(const ls_gguf_t *g, ls_model_config *c, int64_t il, ls_layer_weights *w) {
    char n[96];
    int64_t q = c->n_head * c->head_dim, kv = c->n_head_kv * c->head_dim;
    if (!strcmp(c->arch, "phi3")) LS_CHECK(fused_tensors(g, c, il, w));
#define T(field, suffix, ne0, ne1, req)                                                    \
    snprintf(n, sizeof n, "blk.%lld.%s", (long long)il, suffix);                           \
    LS_CHECK(tensor(g, n, ne0, ne1, req, &w->field))
    T(attn_norm, "attn_norm.weight", c->n_embd, 0, true);
    if (!w->wq) {
        T(wq, "attn_q.weight", c->n_embd, q, true);
        T(wk, "attn_k.weight", c->n_embd, kv, true);
        T(wv, "attn_v.weight", c->n_embd, kv, true);
    }
    T(wo, "attn_output.weight", q, c->n_embd, true);
    T(bq, "attn_q.bias", q, 0, false);
    T(bk, "attn_k.bias", kv, 0, false);
    T(bv, "attn_v.bias", kv, 0, false);
    T(bo, "attn_output.bias", c->n_embd, 0, false);
    T(ffn_norm, "ffn_norm.weight", c->n_embd, 0, true);
    if (!w->w_gate) {
        T(w_gate, "ffn_gate.weight", c->n_embd, c->n_ff, true);
        T(w_up, "ffn_up.weight", c->n_embd, c->n_ff, true);
    }
    T(w_down, "ffn_down.weight", c->n_ff, c->n_embd, true);
#undef T
    return LS_OK;
}

// A per-frequency factor tensor [n_rot/2] of f32, or NULL when absent.
static ls_status factor_tensor(const ls_gguf_t *g, const char *name, int n_rot, const float **out) {
    const ls_gguf_tensor *t;
    *out = NULL;
    LS_CHECK(tensor(g, name, n_rot / 2, 0, false, &t));
    if (!t) return LS_OK;
    if (t->type != LS_F32)
        return LS_ERR(LS_ERR_FORMAT, "tensor '%s' must be F32, not %s", name, ls_dtype_name(t->type));
    *out = t->data;
    return LS_OK;
}

// --- RoPE ---------------------------------------------------------------------------------

static ls_status rope_scaling_type(keys *k, ls_rope_scaling *s) {
    ls_str v;
    const char *name = key(k, "rope.scaling.type");
    ls_status rc = ls_gguf_get_str(k->g, name, &v);
    *s = LS_ROPE_LINEAR; // llama.cpp's default; a factor of 1 makes it "none" below
    if (rc == LS_ERR_NOT_FOUND) return LS_OK;
    LS_CHECK(rc);
    static const struct { const char *n; ls_rope_scaling s; } types[] = {
        {"none", LS_ROPE_NONE}, {"linear", LS_ROPE_LINEAR}, {"yarn", LS_ROPE_YARN},
        {"longrope", LS_ROPE_LONGROPE},
        // longseq's own values (Hugging Face types llama.cpp's GGUF has no name for)
        {"dynamic", LS_ROPE_DYNAMIC}, {"llama3", LS_ROPE_LLAMA3}, {"ntk", LS_ROPE_NTK}};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (strlen(types[i].n) == v.len && !memcmp(types[i].n, v.ptr, v.len)) {
            *s = types[i].s;
            return LS_OK;
        }
    return LS_ERR(LS_ERR_UNSUPPORTED, "%s = \"%.*s\" is not supported (none, linear, yarn, longrope, dynamic, llama3, ntk)",
                  name, (int)(v.len > 32 ? 32 : v.len), v.ptr);
}

static ls_status rope_config(keys *k, const ls_model_config *c, ls_rope_config *r) {
    int64_t n_rot;
    LS_CHECK(get_int(k, "rope.dimension_count", c->head_dim, 2, c->head_dim, &n_rot));
    if (n_rot != c->head_dim || n_rot % 2)
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s = %lld: llama needs an even rotary dimension equal to the head dimension %lld",
                      key(k, "rope.dimension_count"), (long long)n_rot, (long long)c->head_dim);
    r->n_rot = (int)n_rot;
    LS_CHECK(get_float(k, "rope.freq_base", 10000.0, &r->freq_base));
    if (r->freq_base <= 1.0)
        return LS_ERR(LS_ERR_FORMAT, "%s = %g must be greater than 1", key(k, "rope.freq_base"), r->freq_base);
    LS_CHECK(rope_scaling_type(k, &r->scaling));
    double legacy;
    LS_CHECK(get_float(k, "rope.scale_linear", 0.0, &legacy));
    LS_CHECK(get_float(k, "rope.scaling.factor", legacy, &r->factor));
    if (r->factor == 0.0) r->factor = 1.0;
    if (r->factor < 0.0 || r->factor > 1e6)
        return LS_ERR(LS_ERR_FORMAT, "%s = %g is not a usable scale factor", key(k, "rope.scaling.factor"), r->factor);
    LS_CHECK(get_int(k, "rope.scaling.original_context_length", c->n_ctx_train, 1, INT32_MAX, &r->orig_ctx));
    LS_CHECK(get_float(k, "rope.scaling.attn_factor", 0.0, &r->attn_factor));
    LS_CHECK(get_float(k, "rope.scaling.yarn_beta_fast", 32.0, &r->yarn_beta_fast));
    LS_CHECK(get_float(k, "rope.scaling.yarn_beta_slow", 1.0, &r->yarn_beta_slow));
    LS_CHECK(get_float(k, "rope.scaling.low_freq_factor", 1.0, &r->llama3_low_freq_factor));
    LS_CHECK(get_float(k, "rope.scaling.high_freq_factor", 4.0, &r->llama3_high_freq_factor));
    if (!(r->llama3_high_freq_factor > r->llama3_low_freq_factor && r->llama3_low_freq_factor > 0))
        return LS_ERR(LS_ERR_FORMAT, "rope.scaling low/high frequency factors %g/%g must satisfy 0 < low < high",
                      r->llama3_low_freq_factor, r->llama3_high_freq_factor);
    LS_CHECK(factor_tensor(k->g, "rope_freqs.weight", r->n_rot, &r->freq_factors));
    LS_CHECK(factor_tensor(k->g, "rope_factors_long.weight", r->n_rot, &r->factors_long));
    LS_CHECK(factor_tensor(k->g, "rope_factors_short.weight", r->n_rot, &r->factors_short));
    if (r->scaling == LS_ROPE_LINEAR && r->factor == 1.0) r->scaling = LS_ROPE_NONE;
    if (r->freq_factors && r->scaling == LS_ROPE_NONE) r->scaling = LS_ROPE_LLAMA3; // Llama 3.1
    // llama.cpp's Phi-3 files name no scaling type: the long/short factor tensors are LongRoPE
    if (r->factors_long && r->factors_short && r->scaling == LS_ROPE_NONE) r->scaling = LS_ROPE_LONGROPE;
    if (r->scaling == LS_ROPE_LONGROPE && (!r->factors_long || !r->factors_short))
        return LS_ERR(LS_ERR_FORMAT, "longrope scaling needs the rope_factors_long and rope_factors_short tensors");
    return LS_OK;
}

// --- the whole configuration --------------------------------------------------------------

static ls_status hyperparameters(keys *k, ls_model_config *c) {
    LS_CHECK(get_int(k, "context_length", -1, 1, INT32_MAX, &c->n_ctx_train));
    LS_CHECK(get_int(k, "embedding_length", -1, 1, 1 << 20, &c->n_embd));
    LS_CHECK(get_int(k, "block_count", -1, 1, 4096, &c->n_layer));
    LS_CHECK(get_int(k, "feed_forward_length", -1, 1, 1 << 22, &c->n_ff));
    LS_CHECK(get_int(k, "attention.head_count", -1, 1, 4096, &c->n_head));
    LS_CHECK(get_int(k, "attention.head_count_kv", c->n_head, 1, 4096, &c->n_head_kv));
    if (c->n_embd % c->n_head)
        return LS_ERR(LS_ERR_FORMAT, "%s.attention.head_count = %lld does not divide the embedding length %lld",
                      k->arch, (long long)c->n_head, (long long)c->n_embd);
    if (c->n_head % c->n_head_kv)
        return LS_ERR(LS_ERR_FORMAT, "%s.attention.head_count_kv = %lld does not divide head_count = %lld",
                      k->arch, (long long)c->n_head_kv, (long long)c->n_head);
    c->head_dim = c->n_embd / c->n_head;
    int64_t kl, vl;
    LS_CHECK(get_int(k, "attention.key_length", c->head_dim, 1, 1 << 16, &kl));
    LS_CHECK(get_int(k, "attention.value_length", c->head_dim, 1, 1 << 16, &vl));
    if (kl != c->head_dim || vl != c->head_dim)
        return LS_ERR(LS_ERR_UNSUPPORTED, "key/value length %lld/%lld differ from embedding/heads = %lld",
                      (long long)kl, (long long)vl, (long long)c->head_dim);
    LS_CHECK(get_float(k, "attention.layer_norm_rms_epsilon", -1.0, &c->rms_eps));
    if (!(c->rms_eps > 0.0 && c->rms_eps < 1.0))
        return LS_ERR(LS_ERR_FORMAT, "%s.attention.layer_norm_rms_epsilon is missing or not in (0, 1)", k->arch);
    return LS_OK;
}

static ls_status vocab_size(const ls_gguf_t *g, keys *k, ls_model_config *c) {
    ls_gguf_arr tokens;
    int64_t from_key;
    if (ls_gguf_get_arr(g, "tokenizer.ggml.tokens", &tokens) == LS_OK) c->n_vocab = (int64_t)tokens.count;
    else c->n_vocab = -1;
    ls_status rc = ls_gguf_get_int(g, key(k, "vocab_size"), &from_key);
    if (rc == LS_OK && c->n_vocab >= 0 && from_key != c->n_vocab)
        return LS_ERR(LS_ERR_FORMAT, "%s = %lld but the tokenizer has %lld tokens", key(k, "vocab_size"),
                      (long long)from_key, (long long)c->n_vocab);
    if (rc == LS_OK && c->n_vocab < 0) c->n_vocab = from_key;
    else if (rc != LS_OK && rc != LS_ERR_NOT_FOUND) LS_CHECK(rc);
    const ls_gguf_tensor *emb = ls_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return LS_ERR(LS_ERR_FORMAT, "the model has no tensor 'token_embd.weight'");
    if (c->n_vocab < 0) c->n_vocab = emb->ne[1];
    if (c->n_vocab < 1 || c->n_vocab > (1 << 24))
        return LS_ERR(LS_ERR_FORMAT, "vocabulary size %lld is out of range", (long long)c->n_vocab);
    return LS_OK;
}

// The context a model claims beyond its configuration: a "<N>k" word in its name (LongLoRA's
// "Llama-2-7b-longlora-100k-ft": 100k = 102400 tokens; SmolLM2's "Smollm2 135M 8k Lc100K"
// gives 8k, not its data mix's "Lc100K") or the tokenizer's model_max_length.
static void context_hint(const ls_gguf_t *g, ls_model_config *c) {
    for (const char *p = c->name; *p; p++) { // a word of its own: "-100k-", not "Lc100K"
        if (*p < '0' || *p > '9' || (p > c->name && isalnum((unsigned char)p[-1]))) continue;
        char *end;
        long n = strtol(p, &end, 10);
        if ((*end == 'k' || *end == 'K') && !((end[1] >= 'a' && end[1] <= 'z') || (end[1] >= 'A' && end[1] <= 'Z')) &&
            n >= 1 && n <= 100000 && n * 1024 > c->ctx_hint) {
            c->ctx_hint = n * 1024;
            snprintf(c->ctx_hint_src, sizeof c->ctx_hint_src, "its name says %ldk", n);
        }
    }
    int64_t mml;
    if (ls_gguf_get_int(g, "longseq.model_max_length", &mml) == LS_OK && mml > c->ctx_hint) {
        c->ctx_hint = mml;
        snprintf(c->ctx_hint_src, sizeof c->ctx_hint_src, "its tokenizer's model_max_length is %lld", (long long)mml);
    }
    ls_err_clear();
}

bool ls_rope_scaling_missing(const ls_model_config *c, char *msg, size_t cap) {
    if (c->rope.scaling != LS_ROPE_NONE || c->ctx_hint <= c->n_ctx_train) return false;
    long factor = (long)((c->ctx_hint + c->n_ctx_train - 1) / c->n_ctx_train);
    snprintf(msg, cap,
             "the model has no RoPE scaling and a training context of %lld, but %s: a long-context fine-tune whose "
             "config lost rope_scaling produces garbage (LongLoRA issue #181). If it was trained with position "
             "interpolation, run with --rope-scaling linear --rope-scale %ld",
             (long long)c->n_ctx_train, c->ctx_hint_src, factor);
    return true;
}

// The architectures with llama's tensors and keys (under their own prefix): Mistral adds a
// sliding window, Qwen2 biases on q, k and v (optional tensors of the layout) and a window,
// Phi-3 fused qkv and gate/up tensors (fused_tensors), LongRoPE and a window.
#define LS_ARCHS "llama, mistral, qwen2, phi3"
static bool llama_layout(ls_str arch) {
    static const char *names[] = {"llama", "mistral", "qwen2", "phi3"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (arch.len == strlen(names[i]) && !memcmp(arch.ptr, names[i], arch.len)) return true;
    return false;
}

// attention.sliding_window (0 or absent: none) and attention.sliding_window_pattern (a bool per
// layer, true for a window layer; absent: all of them).
static ls_status sliding_window(keys *k, ls_model_config *c) {
    LS_CHECK(get_int(k, "attention.sliding_window", 0, 0, INT32_MAX, &c->sliding_window));
    if (c->sliding_window == 1)
        return LS_ERR(LS_ERR_FORMAT, "%s = 1: a window of the query alone (0: none, else at least 2)",
                      key(k, "attention.sliding_window"));
    c->layer_window = ls_calloc((size_t)c->n_layer, sizeof *c->layer_window);
    ls_gguf_arr pat;
    const char *name = key(k, "attention.sliding_window_pattern");
    ls_status rc = ls_gguf_get_arr(k->g, name, &pat);
    if (rc != LS_OK && rc != LS_ERR_NOT_FOUND) return rc;
    if (rc == LS_OK && (pat.type != LS_GGUF_BOOL || (int64_t)pat.count != c->n_layer))
        return LS_ERR(LS_ERR_FORMAT, "%s holds %llu values of type %s: expected %lld bools (one per layer)", name,
                      (unsigned long long)pat.count, ls_gguf_vtype_name(pat.type), (long long)c->n_layer);
    for (int64_t il = 0; il < c->n_layer; il++)
        c->layer_window[il] = rc == LS_OK && !pat.data[il] ? 0 : c->sliding_window;
    return LS_OK;
}

static ls_status load(const ls_gguf_t *g, ls_model_config *c) {
    ls_str arch;
    ls_status rc = ls_gguf_get_str(g, "general.architecture", &arch);
    if (rc == LS_ERR_NOT_FOUND) return LS_ERR(LS_ERR_FORMAT, "the file has no general.architecture");
    LS_CHECK(rc);
    snprintf(c->arch, sizeof c->arch, "%.*s", (int)(arch.len < 31 ? arch.len : 31), arch.ptr);
    if (!llama_layout(arch))
        return LS_ERR(LS_ERR_UNSUPPORTED, "architecture \"%s\" is not supported (supported: %s)", c->arch, LS_ARCHS);
    ls_str name;
    if (ls_gguf_get_str(g, "general.name", &name) == LS_OK)
        snprintf(c->name, sizeof c->name, "%.*s", (int)(name.len < 127 ? name.len : 127), name.ptr);
    keys k = {.g = g, .arch = c->arch};
    LS_CHECK(hyperparameters(&k, c));
    context_hint(g, c);
    LS_CHECK(vocab_size(g, &k, c));
    LS_CHECK(rope_config(&k, c, &c->rope));
    LS_CHECK(sliding_window(&k, c));
    c->rope_halves = !strcmp(c->arch, "qwen2") || !strcmp(c->arch, "phi3"); // llama.cpp's NEOX rope type
    LS_CHECK(tensor(g, "token_embd.weight", c->n_embd, c->n_vocab, true, &c->tok_embd));
    LS_CHECK(tensor(g, "output_norm.weight", c->n_embd, 0, true, &c->output_norm));
    LS_CHECK(tensor(g, "output.weight", c->n_embd, c->n_vocab, false, &c->output));
    c->tied_output = c->output == NULL;
    if (c->tied_output) c->output = c->tok_embd;
    c->layers = ls_calloc((size_t)c->n_layer, sizeof *c->layers);
    if (!strcmp(c->arch, "phi3")) c->views = ls_calloc((size_t)c->n_layer * 5, sizeof *c->views);
    for (int64_t il = 0; il < c->n_layer; il++) LS_CHECK(layer_tensors(g, c, il, &c->layers[il]));
    return LS_OK;
}

ls_status ls_model_config_load(const ls_gguf_t *g, ls_model_config *cfg) {
    *cfg = (ls_model_config){0};
    ls_status rc = load(g, cfg);
    if (rc != LS_OK) ls_model_config_free(cfg);
    return rc;
}

void ls_model_config_free(ls_model_config *cfg) {
    ls_free(cfg->layers);
    ls_free(cfg->layer_window);
    ls_free(cfg->views);
    cfg->views = NULL;
    cfg->layers = NULL;
    cfg->layer_window = NULL;
}

uint64_t ls_model_weight_bytes(const ls_gguf_t *g) {
    uint64_t total = 0;
    for (int64_t i = 0; i < ls_gguf_n_tensors(g); i++) total += ls_gguf_tensor_at(g, i)->nbytes;
    return total;
}
