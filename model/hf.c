// hf.c — a Hugging Face checkpoint directory of llama's layout (model_type llama, mistral,
// qwen2) as a model under construction: config.json (hyperparameters; RoPE base and scaling of
// every type, from transformers 5's rope_parameters or the older rope_theta + rope_scaling;
// tied embeddings; sliding-window layers; model_type phi3 too) becomes <model_type>.* GGUF keys, and the safetensors tensors (single or sharded) are mapped to GGUF names in their
// stored F32/F16/BF16 form, straight from the file mapping. q/k rows (and biases) are
// permuted from rotate-half pairs to adjacent pairs, the only copy made. Every file is read
// through ls_dir_file (links kept inside the directory, FIFOs refused). Docs:
// docs/formats.md §3.4, §5; docs/rope.md §5. Tests: tests/oracle/test_hf.py, test_archs.py,
// tests/unit/test_loader.c (hostile directories).
#include "loader_impl.h"
#include "ls_safetensors.h"

#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LS_MAX_VOCAB (1 << 24) // as config.c and the tokenizer allow

ls_status ld_json_load(const char *dir, const char *name, size_t max_bytes, json_t **out) {
    char real[PATH_MAX];
    bool found;
    *out = NULL;
    LS_CHECK(ls_dir_file(dir, name, real, sizeof real, &found));
    if (!found) return LS_OK;
    ls_buf b = {0};
    ls_status rc = ls_file_read_all(real, max_bytes, &b);
    json_error_t e;
    if (rc == LS_OK) *out = json_loadb(b.data ? b.data : "", b.len, JSON_REJECT_DUPLICATES, &e);
    ls_buf_free(&b); // also after an error: the file may have been over the limit
    if (rc == LS_OK && !*out)
        rc = LS_ERR(LS_ERR_FORMAT, "%s/%s: invalid JSON at line %d, column %d: %s", dir, name, e.line, e.column, e.text);
    return rc;
}

// --- names and layout ------------------------------------------------------------------------

bool ld_hf_name(const char *hf, char *out, size_t cap, int *perm) {
    static const struct { const char *hf, *gguf; int perm; } layer[] = {
        {"input_layernorm", "attn_norm", 0},        {"self_attn.q_proj", "attn_q", 1},
        {"self_attn.k_proj", "attn_k", 2},          {"self_attn.v_proj", "attn_v", 0},
        {"self_attn.o_proj", "attn_output", 0},     {"post_attention_layernorm", "ffn_norm", 0},
        {"mlp.gate_proj", "ffn_gate", 0},           {"mlp.up_proj", "ffn_up", 0},
        {"mlp.down_proj", "ffn_down", 0},           {"self_attn.qkv_proj", "attn_qkv", 0}, // Phi-3's fused
        {"mlp.gate_up_proj", "ffn_up", 0}};
    *perm = 0;
    if (!strcmp(hf, "model.embed_tokens")) return snprintf(out, cap, "token_embd") > 0;
    if (!strcmp(hf, "model.norm")) return snprintf(out, cap, "output_norm") > 0;
    if (!strcmp(hf, "lm_head")) return snprintf(out, cap, "output") > 0;
    const char *p = "model.layers.";
    if (strncmp(hf, p, strlen(p))) return false;
    char *end;
    long il = strtol(hf + strlen(p), &end, 10);
    if (end == hf + strlen(p) || *end != '.' || il < 0 || il > 100000) return false;
    for (size_t i = 0; i < sizeof layer / sizeof *layer; i++)
        if (!strcmp(end + 1, layer[i].hf)) {
            *perm = layer[i].perm;
            return snprintf(out, cap, "blk.%ld.%s", il, layer[i].gguf) < (int)cap;
        }
    return false;
}

void ld_permute_rows(void *dst, const void *src, int64_t rows, int64_t hd, size_t row_bytes) {
    char *d = dst;
    const char *s = src;
    for (int64_t h = 0; h < rows / hd; h++)
        for (int64_t i = 0; i < hd / 2; i++)
            for (int j = 0; j < 2; j++)
                memcpy(d + (size_t)(h * hd + 2 * i + j) * row_bytes, s + (size_t)(h * hd + j * (hd / 2) + i) * row_bytes,
                       row_bytes);
}

// --- config.json ---------------------------------------------------------------------------

typedef struct hf_config {
    const char *file;
    json_t *root;
    const char *arch; // the GGUF architecture: model_type (llama, mistral, qwen2)
    int64_t n_embd, n_layer, n_ff, n_head, n_head_kv, head_dim, max_pos, vocab;
    bool tied, bias;
} hf_config;

// Metadata under the architecture's prefix ("mistral.context_length").
static void meta_u32(ls_gguf_meta *m, const hf_config *c, const char *suffix, uint32_t v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", c->arch, suffix);
    ls_gguf_meta_u32(m, k, v);
}
static void meta_f32(ls_gguf_meta *m, const hf_config *c, const char *suffix, float v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", c->arch, suffix);
    ls_gguf_meta_f32(m, k, v);
}
static void meta_str(ls_gguf_meta *m, const hf_config *c, const char *suffix, const char *v, size_t len) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", c->arch, suffix);
    ls_gguf_meta_str(m, k, v, len);
}

// An integer field in [lo, hi]; absent or null: dflt, or an error when dflt < 0.
static ls_status cfg_int(const hf_config *c, json_t *o, const char *key, int64_t dflt, int64_t lo, int64_t hi, int64_t *v) {
    json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j)) {
        if (dflt < 0) return LS_ERR(LS_ERR_FORMAT, "%s has no \"%s\"", c->file, key);
        *v = dflt;
        return LS_OK;
    }
    if (json_is_real(j) && json_real_value(j) == floor(json_real_value(j)) && fabs(json_real_value(j)) < 1e15)
        *v = (int64_t)json_real_value(j);
    else if (json_is_integer(j)) *v = json_integer_value(j);
    else return LS_ERR(LS_ERR_FORMAT, "%s: \"%s\" must be an integer", c->file, key);
    if (*v < lo || *v > hi)
        return LS_ERR(LS_ERR_FORMAT, "%s: \"%s\" = %lld is out of range (%lld to %lld)", c->file, key, (long long)*v,
                      (long long)lo, (long long)hi);
    return LS_OK;
}

// A number field; absent or null: dflt (NAN = required).
static ls_status cfg_num(const hf_config *c, json_t *o, const char *key, double dflt, double *v) {
    json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j)) {
        if (isnan(dflt)) return LS_ERR(LS_ERR_FORMAT, "%s has no \"%s\"", c->file, key);
        *v = dflt;
        return LS_OK;
    }
    if (!json_is_number(j)) return LS_ERR(LS_ERR_FORMAT, "%s: \"%s\" must be a number", c->file, key);
    *v = json_number_value(j);
    if (!isfinite(*v)) return LS_ERR(LS_ERR_FORMAT, "%s: \"%s\" is not finite", c->file, key);
    return LS_OK;
}

static ls_status cfg_bool(const hf_config *c, const char *key, bool dflt, bool *v) {
    json_t *j = json_object_get(c->root, key);
    *v = dflt;
    if (!j || json_is_null(j)) return LS_OK;
    if (!json_is_boolean(j)) return LS_ERR(LS_ERR_FORMAT, "%s: \"%s\" must be true or false", c->file, key);
    *v = json_is_true(j);
    return LS_OK;
}

// q/k rows in Hugging Face's rotate-half order, as llama.cpp keeps them for these (config.c).
static bool halves(const char *arch) { return !strcmp(arch, "qwen2") || !strcmp(arch, "phi3"); }

// model_type: llama, or mistral, qwen2 and phi3, which have llama's layout (Qwen2 with q/k/v
// biases, Phi-3 with fused qkv and gate/up tensors).
static ls_status architecture(hf_config *c) {
    static const char *types[] = {"llama", "mistral", "qwen2", "phi3"};
    const char *type = json_string_value(json_object_get(c->root, "model_type"));
    if (!type) return LS_ERR(LS_ERR_FORMAT, "%s has no \"model_type\"", c->file);
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (!strcmp(type, types[i])) c->arch = types[i];
    if (!c->arch)
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not supported (supported: llama, mistral, qwen2, phi3)",
                      c->file, type);
    double prf;
    LS_CHECK(cfg_num(c, c->root, "partial_rotary_factor", 1, &prf));
    if (prf != 1 && strcmp(c->arch, "llama")) // (transformers' llama ignores it)
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: partial_rotary_factor = %g: longseq rotates whole heads", c->file, prf);
    const char *act = json_string_value(json_object_get(c->root, "hidden_act"));
    if (act && strcmp(act, "silu"))
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: hidden_act \"%s\" is not supported (llama uses silu)", c->file, act);
    double ptp;
    LS_CHECK(cfg_num(c, c->root, "pretraining_tp", 1, &ptp));
    if (ptp != 1) return LS_ERR(LS_ERR_UNSUPPORTED, "%s: pretraining_tp = %g is not supported", c->file, ptp);
    return LS_OK;
}

static ls_status hyperparameters(hf_config *c, ls_gguf_meta *m) {
    json_t *r = c->root;
    LS_CHECK(cfg_int(c, r, "hidden_size", -1, 1, 1 << 20, &c->n_embd));
    LS_CHECK(cfg_int(c, r, "num_hidden_layers", -1, 1, 4096, &c->n_layer));
    LS_CHECK(cfg_int(c, r, "intermediate_size", -1, 1, 1 << 22, &c->n_ff));
    LS_CHECK(cfg_int(c, r, "num_attention_heads", -1, 1, 4096, &c->n_head));
    LS_CHECK(cfg_int(c, r, "num_key_value_heads", c->n_head, 1, 4096, &c->n_head_kv));
    LS_CHECK(cfg_int(c, r, "max_position_embeddings", 2048, 1, INT32_MAX, &c->max_pos));
    LS_CHECK(cfg_int(c, r, "vocab_size", 0, 0, LS_MAX_VOCAB, &c->vocab));
    if (c->n_embd % c->n_head)
        return LS_ERR(LS_ERR_FORMAT, "%s: num_attention_heads = %lld does not divide hidden_size = %lld", c->file,
                      (long long)c->n_head, (long long)c->n_embd);
    if (c->n_head % c->n_head_kv)
        return LS_ERR(LS_ERR_FORMAT, "%s: num_key_value_heads = %lld does not divide num_attention_heads = %lld",
                      c->file, (long long)c->n_head_kv, (long long)c->n_head);
    LS_CHECK(cfg_int(c, r, "head_dim", c->n_embd / c->n_head, 1, 1 << 16, &c->head_dim));
    if (c->head_dim != c->n_embd / c->n_head || c->head_dim % 2)
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: head_dim = %lld: longseq needs an even hidden_size / num_attention_heads (%lld)",
                      c->file, (long long)c->head_dim, (long long)(c->n_embd / c->n_head));
    double eps;
    LS_CHECK(cfg_num(c, r, "rms_norm_eps", 1e-6, &eps));
    if (!(eps > 0 && eps < 1)) return LS_ERR(LS_ERR_FORMAT, "%s: rms_norm_eps = %g is not in (0, 1)", c->file, eps);
    LS_CHECK(cfg_bool(c, "tie_word_embeddings", false, &c->tied));
    LS_CHECK(cfg_bool(c, "attention_bias", !strcmp(c->arch, "qwen2"), &c->bias)); // Qwen2: always q, k, v biases
    meta_u32(m, c, "context_length", (uint32_t)c->max_pos);
    meta_u32(m, c, "embedding_length", (uint32_t)c->n_embd);
    meta_u32(m, c, "block_count", (uint32_t)c->n_layer);
    meta_u32(m, c, "feed_forward_length", (uint32_t)c->n_ff);
    meta_u32(m, c, "attention.head_count", (uint32_t)c->n_head);
    meta_u32(m, c, "attention.head_count_kv", (uint32_t)c->n_head_kv);
    meta_f32(m, c, "attention.layer_norm_rms_epsilon", (float)eps);
    meta_u32(m, c, "rope.dimension_count", (uint32_t)c->head_dim);
    return LS_OK;
}

// Sliding-window attention: "sliding_window" (Mistral; Qwen2 only with "use_sliding_window"),
// on the layers "layer_types" calls sliding_attention (transformers 5 writes it; without it,
// Qwen2's layers from "max_window_layers" on, Mistral's all).
static ls_status sliding_window(const hf_config *c, ls_gguf_meta *m) {
    bool use = true;
    LS_CHECK(cfg_bool(c, "use_sliding_window", strcmp(c->arch, "qwen2") != 0, &use));
    int64_t w, from = 0;
    LS_CHECK(cfg_int(c, c->root, "sliding_window", 0, 0, INT32_MAX, &w));
    if (!use || w == 0) return LS_OK;
    if (w == 1) return LS_ERR(LS_ERR_FORMAT, "%s: \"sliding_window\" = 1 leaves a query only itself", c->file);
    if (!strcmp(c->arch, "qwen2")) LS_CHECK(cfg_int(c, c->root, "max_window_layers", 0, 0, c->n_layer, &from));
    json_t *types = json_object_get(c->root, "layer_types");
    if (types && !json_is_null(types) && (!json_is_array(types) || (int64_t)json_array_size(types) != c->n_layer))
        return LS_ERR(LS_ERR_FORMAT, "%s: \"layer_types\" must list %lld layer types", c->file, (long long)c->n_layer);
    uint8_t *pat = ls_malloc((size_t)c->n_layer);
    for (int64_t il = 0; il < c->n_layer; il++) {
        const char *t = json_is_array(types) ? json_string_value(json_array_get(types, (size_t)il)) : NULL;
        if (json_is_array(types) && (!t || (strcmp(t, "sliding_attention") && strcmp(t, "full_attention")))) {
            ls_free(pat);
            return LS_ERR(LS_ERR_FORMAT, "%s: layer_types[%lld] is not \"sliding_attention\" or \"full_attention\"",
                          c->file, (long long)il);
        }
        pat[il] = t ? !strcmp(t, "sliding_attention") : il >= from;
    }
    meta_u32(m, c, "attention.sliding_window", (uint32_t)w);
    char k[128];
    snprintf(k, sizeof k, "%s.attention.sliding_window_pattern", c->arch);
    ls_gguf_meta_arr(m, k, LS_GGUF_BOOL, pat, (uint64_t)c->n_layer);
    ls_free(pat);
    return LS_OK;
}

// --- RoPE: rope_parameters (transformers 5) or rope_theta + rope_scaling (before) -----------
//
// transformers 5 writes one object, "rope_parameters": {"rope_theta", "rope_type", "factor",
// ...}, and no top-level rope_theta / rope_scaling; earlier versions wrote "rope_theta" at the
// top and "rope_scaling": {"type" or "rope_type", "factor", ...}. Both are read; where a file
// has both, every value present in either must agree (docs/howto-longlora.md, "What is read
// from config.json").

typedef struct hf_rope {
    json_t *obj;       // the scaling object read: rope_parameters, else rope_scaling (NULL: none)
    const char *name;  // its key in config.json, for messages
} hf_rope;

static json_t *non_null(json_t *j) { return json_is_null(j) ? NULL : j; }

// The object's rope type ("rope_type", else the older "type"), NULL when it has neither.
static const char *rope_type_of(json_t *o) {
    const char *t = json_string_value(json_object_get(o, "rope_type"));
    return t ? t : json_string_value(json_object_get(o, "type"));
}

// A JSON value in a message: numbers with %g, strings quoted, anything else by its kind.
static const char *json_show(json_t *v, char *buf, size_t cap) {
    if (!v) snprintf(buf, cap, "absent");
    else if (json_is_number(v)) snprintf(buf, cap, "%g", json_number_value(v));
    else if (json_is_string(v)) snprintf(buf, cap, "\"%.40s\"", json_string_value(v));
    else if (json_is_boolean(v)) snprintf(buf, cap, "%s", json_is_true(v) ? "true" : "false");
    else snprintf(buf, cap, "%s", json_is_array(v) ? "a list" : "an object");
    return buf;
}

// Two values agree when both are numbers of equal value (4 and 4.0), or equal JSON.
static bool json_agree(json_t *a, json_t *b) {
    if (json_is_number(a) && json_is_number(b)) return json_number_value(a) == json_number_value(b);
    return json_equal(a, b);
}

// transformers 5 itself lets rope_scaling win over rope_parameters, but rope_parameters.rope_theta
// over rope_theta: with two layouts that disagree, which one was meant is not known.
static const char LAYOUTS[] = "the two RoPE layouts disagree; keep one (transformers 5 takes rope_scaling over "
                              "rope_parameters, but rope_parameters.rope_theta over rope_theta)";

// An error naming both keys and both values.
static ls_status disagree(const hf_config *c, const char *ka, json_t *a, const char *kb, json_t *b, const char *why) {
    char sa[64], sb[64];
    return LS_ERR(LS_ERR_FORMAT, "%s: %s = %s but %s = %s: %s", c->file, ka, json_show(a, sa, sizeof sa), kb,
                  json_show(b, sb, sizeof sb), why);
}

// rope_scaling next to rope_parameters: the same type and the same value for every key that
// either has (rope_theta is compared by the caller).
static ls_status layouts_agree(const hf_config *c, json_t *rp, json_t *rs) {
    const char *tp = rope_type_of(rp), *ts = rope_type_of(rs);
    if (!tp) tp = "default";
    if (ts && !strcmp(ts, "su")) ts = "longrope";
    if (!strcmp(tp, "su")) tp = "longrope";
    if (!ts || strcmp(ts, tp)) {
        const char *ks = json_object_get(rs, "rope_type") ? "rope_type" : "type";
        const char *kp = json_object_get(rp, "rope_type") ? "rope_type" : "type";
        char a[64], b[64];
        snprintf(a, sizeof a, "rope_scaling.%s", ks);
        snprintf(b, sizeof b, "rope_parameters.%s", kp);
        return disagree(c, a, json_object_get(rs, ks), b, json_object_get(rp, kp), LAYOUTS);
    }
    json_t *objs[2] = {rp, rs};
    for (int k = 0; k < 2; k++) {
        const char *key;
        json_t *v;
        json_object_foreach(objs[k], key, v) {
            if (!strcmp(key, "type") || !strcmp(key, "rope_type") || !strcmp(key, "rope_theta")) continue;
            json_t *a = non_null(json_object_get(rp, key)), *b = non_null(json_object_get(rs, key));
            if (!a && !b) continue;
            if (!a || !b || !json_agree(a, b)) {
                char ka[96], kb[96];
                snprintf(ka, sizeof ka, "rope_scaling.%.64s", key);
                snprintf(kb, sizeof kb, "rope_parameters.%.64s", key);
                return disagree(c, ka, b, kb, a, LAYOUTS);
            }
        }
    }
    return LS_OK;
}

// long_factor / short_factor: n_rot/2 numbers, stored as the f32 tensors llama.cpp uses.
static ls_status factor_list(ld_model *m, const hf_config *c, const hf_rope *r, const char *key, const char *tensor) {
    json_t *a = json_object_get(r->obj, key);
    int64_t n = c->head_dim / 2;
    if (!json_is_array(a) || (int64_t)json_array_size(a) != n)
        return LS_ERR(LS_ERR_FORMAT, "%s: %s.%s must be a list of %lld numbers (head_dim / 2)", c->file, r->name, key,
                      (long long)n);
    float *f = ld_alloc(m, (size_t)n * sizeof *f);
    for (int64_t i = 0; i < n; i++) {
        json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_number(v) || !(json_number_value(v) > 0))
            return LS_ERR(LS_ERR_FORMAT, "%s: %s.%s[%lld] is not a positive number", c->file, r->name, key,
                          (long long)i);
        f[i] = (float)json_number_value(v);
    }
    ld_tensor_set(m, tensor, LS_F32, 1, &n, f);
    return LS_OK;
}

static ls_status rope_scaling(ld_model *m, const hf_config *c, const hf_rope *r) {
    const char *file = c->file, *name = r->name;
    json_t *rs = r->obj;
    const char *type = rope_type_of(rs);
    if (!type) return LS_ERR(LS_ERR_FORMAT, "%s: %s has no \"rope_type\" (or \"type\")", file, name);
    if (!strcmp(type, "default")) return LS_OK; // partial_rotary_factor: transformers' llama ignores it here
    if (!strcmp(type, "su")) type = "longrope";
    static const char *known[] = {"linear", "dynamic", "yarn", "llama3", "longrope", "ntk"};
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) ok |= !strcmp(type, known[i]);
    if (!ok)
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: %s type \"%s\" is not supported (default, linear, dynamic, yarn, "
                                          "llama3, longrope, ntk)", file, name, type);
    double factor, orig, v;
    json_t *prf = non_null(json_object_get(rs, "partial_rotary_factor"));
    if (!prf) prf = non_null(json_object_get(c->root, "partial_rotary_factor"));
    if (prf && !(json_is_number(prf) && json_number_value(prf) == 1))
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: partial_rotary_factor = %g: longseq rotates the whole head",
                      file, json_is_number(prf) ? json_number_value(prf) : NAN);
    bool longrope = !strcmp(type, "longrope");
    // transformers 5 takes a top-level original_max_position_embeddings (Phi-3's) over the one
    // inside; longseq asks that two given values agree.
    int64_t top_orig;
    json_t *inner = non_null(json_object_get(rs, "original_max_position_embeddings"));
    json_t *outer = non_null(json_object_get(c->root, "original_max_position_embeddings"));
    if (inner && outer && !json_agree(inner, outer)) {
        char k[96];
        snprintf(k, sizeof k, "%s.original_max_position_embeddings", name);
        return disagree(c, "original_max_position_embeddings", outer, k, inner, "the training context is given twice");
    }
    LS_CHECK(cfg_int(c, c->root, "original_max_position_embeddings", c->max_pos, 1, INT32_MAX, &top_orig));
    LS_CHECK(cfg_num(c, rs, "original_max_position_embeddings", (double)top_orig, &orig));
    LS_CHECK(cfg_num(c, rs, "factor", longrope ? (double)c->max_pos / orig : NAN, &factor));
    if (!(factor >= 1 && factor <= 1e6))
        return LS_ERR(LS_ERR_FORMAT, "%s: %s.factor = %g is not a usable scale factor (1 or more)", file, name, factor);
    if (!(orig >= 1 && orig <= INT32_MAX))
        return LS_ERR(LS_ERR_FORMAT, "%s: %s.original_max_position_embeddings = %g is out of range", file, name, orig);
    ls_gguf_meta *g = &m->meta;
    meta_str(g, c, "rope.scaling.type", type, strlen(type));
    meta_f32(g, c, "rope.scaling.factor", (float)factor);
    // HF's dynamic NTK measures lengths against max_position_embeddings.
    meta_u32(g, c, "rope.scaling.original_context_length",
                     (uint32_t)(!strcmp(type, "dynamic") ? (double)c->max_pos : orig));
    if (!strcmp(type, "yarn")) {
        json_t *t = json_object_get(rs, "truncate");
        if (t && !json_is_null(t) && !json_is_true(t))
            return LS_ERR(LS_ERR_UNSUPPORTED, "%s: %s.truncate = false (an unrounded YaRN ramp) is not supported", file,
                          name);
        // transformers: `beta_fast or 32`, `beta_slow or 1` (0 means the default too)
        LS_CHECK(cfg_num(c, rs, "beta_fast", 32, &v));
        meta_f32(g, c, "rope.scaling.yarn_beta_fast", (float)(v != 0 ? v : 32));
        LS_CHECK(cfg_num(c, rs, "beta_slow", 1, &v));
        meta_f32(g, c, "rope.scaling.yarn_beta_slow", (float)(v != 0 ? v : 1));
        // HF's attention_factor replaces g(s) = 1 + 0.1 ln s; longseq's multiplies it.
        double gs = 1 + 0.1 * log(factor), ms, msa;
        LS_CHECK(cfg_num(c, rs, "attention_factor", 0, &v));
        LS_CHECK(cfg_num(c, rs, "mscale", 0, &ms));
        LS_CHECK(cfg_num(c, rs, "mscale_all_dim", 0, &msa));
        if (v <= 0 && ms > 0 && msa > 0) v = (1 + 0.1 * ms * log(factor)) / (1 + 0.1 * msa * log(factor));
        if (v > 0) meta_f32(g, c, "rope.scaling.attn_factor", (float)(v / gs));
    } else if (!strcmp(type, "llama3")) {
        LS_CHECK(cfg_num(c, rs, "low_freq_factor", 1, &v));
        meta_f32(g, c, "rope.scaling.low_freq_factor", (float)v);
        LS_CHECK(cfg_num(c, rs, "high_freq_factor", 4, &v));
        meta_f32(g, c, "rope.scaling.high_freq_factor", (float)v);
    } else if (longrope) {
        LS_CHECK(factor_list(m, c, r, "long_factor", "rope_factors_long.weight"));
        LS_CHECK(factor_list(m, c, r, "short_factor", "rope_factors_short.weight"));
        LS_CHECK(cfg_num(c, rs, "attention_factor", 0, &v));
        if (v > 0) meta_f32(g, c, "rope.scaling.attn_factor", (float)v);
    }
    return LS_OK;
}

static ls_status rope(ld_model *m, const hf_config *c) {
    json_t *rp = non_null(json_object_get(c->root, "rope_parameters"));
    json_t *rs = non_null(json_object_get(c->root, "rope_scaling"));
    json_t *top = non_null(json_object_get(c->root, "rope_theta"));
    if (rp && !json_is_object(rp))
        return LS_ERR(LS_ERR_FORMAT, "%s: rope_parameters must be an object or null", c->file);
    if (rs && !json_is_object(rs)) return LS_ERR(LS_ERR_FORMAT, "%s: rope_scaling must be an object or null", c->file);
    hf_rope r = {rp ? rp : rs, rp ? "rope_parameters" : "rope_scaling"};
    if (rp) {
        const char *key;
        json_t *v;
        json_object_foreach(rp, key, v) {
            if (json_is_object(v))
                return LS_ERR(LS_ERR_UNSUPPORTED, "%s: rope_parameters.%s: RoPE parameters per layer type are not "
                                                  "supported (llama has one set)", c->file, key);
        }
        json_t *t = non_null(json_object_get(rp, "rope_type"));
        if (t && !json_is_string(t))
            return LS_ERR(LS_ERR_FORMAT, "%s: rope_parameters.rope_type must be a string", c->file);
        if (!rope_type_of(rp)) { // transformers' default type; an object that scales without a type is refused
            json_object_foreach(rp, key, v) {
                if (strcmp(key, "rope_theta") && strcmp(key, "partial_rotary_factor") && !json_is_null(v))
                    return LS_ERR(LS_ERR_FORMAT, "%s: rope_parameters has \"%s\" but no \"rope_type\"", c->file, key);
            }
            r.obj = NULL;
        }
        json_t *inner = non_null(json_object_get(rp, "rope_theta"));
        if (inner && top && !json_agree(inner, top))
            return disagree(c, "rope_theta", top, "rope_parameters.rope_theta", inner, LAYOUTS);
        if (inner) top = inner;
        if (rs) LS_CHECK(layouts_agree(c, rp, rs));
    }
    if (rs) { // transformers 5 keeps rope_theta inside the object it reads
        json_t *inner = non_null(json_object_get(rs, "rope_theta"));
        if (inner && top && !json_agree(inner, top))
            return disagree(c, rp ? "rope_parameters.rope_theta" : "rope_theta", top, "rope_scaling.rope_theta", inner,
                            LAYOUTS);
        if (inner) top = inner;
    }
    if (top && !json_is_number(top)) return LS_ERR(LS_ERR_FORMAT, "%s: rope_theta must be a number", c->file);
    double theta = top ? json_number_value(top) : 10000;
    if (!(theta > 1) || !isfinite(theta))
        return LS_ERR(LS_ERR_FORMAT, "%s: %s = %g must be greater than 1", c->file,
                      rp && json_object_get(rp, "rope_theta") ? "rope_parameters.rope_theta" : "rope_theta", theta);
    meta_f32(&m->meta, c, "rope.freq_base", (float)theta);
    return r.obj ? rope_scaling(m, c, &r) : LS_OK;
}

// --- tensors -------------------------------------------------------------------------------

static void st_release(void *st) { ls_safetensors_free(st); }

static ls_status storable(const ls_st_tensor *t, ls_dtype *out) {
    if (t->type != LS_F32 && t->type != LS_F16 && t->type != LS_BF16)
        return LS_ERR(LS_ERR_UNSUPPORTED, "tensor '%s' is %s: longseq loads F32, F16 and BF16 checkpoints", t->name,
                      ls_dtype_name(t->type));
    *out = t->type;
    return LS_OK;
}

// One checkpoint tensor under its GGUF name: shape reversed, q/k rows permuted, data copied
// only when permuted or misaligned.
static ls_status add_tensor(ld_model *m, const hf_config *c, const ls_st_tensor *t, const char *gname, int perm) {
    ls_dtype type = LS_F32;
    LS_CHECK(storable(t, &type));
    if (t->n_dims < 1 || t->n_dims > 2)
        return LS_ERR(LS_ERR_FORMAT, "tensor '%s' has %d dimensions (1 or 2 expected)", t->name, t->n_dims);
    int64_t ne[2] = {t->shape[t->n_dims - 1], t->n_dims == 2 ? t->shape[0] : 1};
    size_t esize = type == LS_F32 ? 4 : 2;
    const void *data = t->data;
    int64_t rows = t->n_dims == 2 ? ne[1] : ne[0];
    size_t row_bytes = t->n_dims == 2 ? (size_t)ne[0] * esize : esize;
    if (perm && !m->shapes_only && !halves(c->arch)) { // qwen2, phi3 keep HF's halves (config.c: rope_halves)
        int64_t heads = perm == 1 ? c->n_head : c->n_head_kv;
        if (rows != heads * c->head_dim)
            return LS_ERR(LS_ERR_FORMAT, "tensor '%s' has %lld rows, expected %lld heads x %lld", t->name, (long long)rows,
                          (long long)heads, (long long)c->head_dim);
        void *p = ld_alloc(m, t->bytes);
        ld_permute_rows(p, data, rows, c->head_dim, row_bytes);
        data = p;
    } else if ((uintptr_t)data % esize) {
        void *p = ld_alloc(m, t->bytes);
        memcpy(p, data, t->bytes);
        data = p;
    }
    ld_tensor_set(m, gname, type, t->n_dims, ne, data);
    return LS_OK;
}

static ls_status add_tensors(ld_model *m, const hf_config *c, ls_safetensors_t *st) {
    int64_t unused = 0;
    const char *first_unused = NULL;
    for (int64_t i = 0; i < ls_safetensors_count(st); i++) {
        const ls_st_tensor *t = ls_safetensors_at(st, i);
        size_t n = strlen(t->name);
        const char *suffix = n > 7 && !strcmp(t->name + n - 7, ".weight") ? ".weight"
                             : n > 5 && !strcmp(t->name + n - 5, ".bias") ? ".bias" : NULL;
        char module[160], gname[96];
        int perm = 0;
        bool mapped = suffix && n - strlen(suffix) < sizeof module;
        if (mapped) {
            snprintf(module, sizeof module, "%.*s", (int)(n - strlen(suffix)), t->name);
            mapped = ld_hf_name(module, gname, sizeof gname, &perm);
        }
        if (mapped && !strcmp(gname, "output") && c->tied) mapped = false; // the embedding is the head
        if (mapped && !strcmp(suffix, ".bias") && (!c->bias || strncmp(gname, "blk.", 4) || !strstr(gname, ".attn_")))
            mapped = false;
        if (!mapped) {
            if (!strstr(t->name, "rotary_emb.inv_freq") && !unused++) first_unused = t->name;
            continue;
        }
        snprintf(gname + strlen(gname), sizeof gname - strlen(gname), "%s", suffix);
        LS_CHECK(add_tensor(m, c, t, gname, perm));
    }
    if (unused) LS_WARN("%s: %lld tensor%s longseq does not use (e.g. '%s') ignored", m->path, (long long)unused,
                        unused == 1 ? "" : "s", first_unused);
    if (!c->tied && !ld_tensor(m, "output.weight"))
        return LS_ERR(LS_ERR_FORMAT, "%s says tie_word_embeddings is false but the checkpoint has no lm_head.weight", c->file);
    return LS_OK;
}

// --- the name and the context its name or tokenizer claims ----------------------------------

static ls_status describe(ld_model *m, const char *dir) {
    char real[PATH_MAX];
    if (!realpath(dir, real)) snprintf(real, sizeof real, "%s", dir);
    const char *base = basename(real);
    ls_gguf_meta_str(&m->meta, "general.name", base, strlen(base));
    json_t *j; // (hf_tok.c reads it again and reports what is wrong with it)
    if (ld_json_load(dir, "tokenizer_config.json", 64u << 20, &j) != LS_OK || !j) {
        ls_err_clear();
        return LS_OK;
    }
    json_t *mml = json_object_get(j, "model_max_length");
    double v = json_is_number(mml) ? json_number_value(mml) : 0;
    if (v >= 1 && v < 1e9) ls_gguf_meta_u32(&m->meta, "longseq.model_max_length", (uint32_t)v);
    json_decref(j);
    return LS_OK;
}

// Embedding rows beyond the tokenizer's (vocabularies padded to a round size) become unused
// "[PAD<id>]" tokens, as llama.cpp's converter writes them.
static ls_status pad_vocab(ld_model *m) {
    const ls_gguf_tensor *e = ld_tensor(m, "token_embd.weight"); // present: vocab() checked
    if (e->ne[1] < m->vocab.n)
        return LS_ERR(LS_ERR_FORMAT, "the tokenizer has %d tokens but model.embed_tokens has only %lld rows", m->vocab.n,
                      (long long)e->ne[1]);
    while (m->vocab.n < e->ne[1]) {
        char pad[32];
        int n = snprintf(pad, sizeof pad, "[PAD%d]", m->vocab.n);
        ld_vocab_push(&m->vocab, pad, (size_t)n, LS_TOKEN_UNUSED, 0.0f);
    }
    return LS_OK;
}

// The tokenizer, whose ids must stay below the embedding's rows (so none pads it far beyond),
// themselves checked first: they set how far pad_vocab pads.
static ls_status vocab(ld_model *m, const hf_config *c, const char *dir) {
    const ls_gguf_tensor *e = ld_tensor(m, "token_embd.weight");
    if (!e) return LS_ERR(LS_ERR_FORMAT, "the checkpoint has no model.embed_tokens.weight");
    if (e->ne[0] != c->n_embd || e->ne[1] < 1 || e->ne[1] > LS_MAX_VOCAB)
        return LS_ERR(LS_ERR_FORMAT, "model.embed_tokens.weight is [%lld, %lld]: expected [1 to %d tokens, hidden_size %lld]",
                      (long long)e->ne[1], (long long)e->ne[0], LS_MAX_VOCAB, (long long)c->n_embd);
    bool found = false;
    LS_CHECK(ld_vocab_from_hf(&m->vocab, dir, e->ne[1], &found));
    if (!found) return LS_ERR(LS_ERR_FORMAT, "%s has no tokenizer.model or tokenizer.json", dir);
    return LS_OK;
}

ls_status ld_from_hf(ld_model *m, const char *dir) {
    char file[PATH_MAX];
    snprintf(file, sizeof file, "%s/config.json", dir);
    hf_config c = {.file = file};
    ls_status rc = ld_json_load(dir, "config.json", 16u << 20, &c.root);
    if (rc == LS_OK && !c.root) rc = LS_ERR(LS_ERR_NOT_FOUND, "%s has no config.json", dir);
    if (rc == LS_OK && !json_is_object(c.root)) rc = LS_ERR(LS_ERR_FORMAT, "%s is not a JSON object", file);
    if (rc == LS_OK) rc = architecture(&c);
    if (rc == LS_OK) {
        ls_gguf_meta_str(&m->meta, "general.architecture", c.arch, strlen(c.arch));
        rc = hyperparameters(&c, &m->meta);
    }
    if (rc == LS_OK) rc = sliding_window(&c, &m->meta);
    if (rc == LS_OK) rc = rope(m, &c);
    if (rc == LS_OK) rc = describe(m, dir);
    ls_safetensors_t *st = NULL;
    if (rc == LS_OK) rc = ls_safetensors_open(dir, &st);
    if (st) ld_keep(m, st, st_release);
    if (rc == LS_OK) rc = add_tensors(m, &c, st);
    if (rc == LS_OK) rc = vocab(m, &c, dir);
    if (rc == LS_OK) rc = pad_vocab(m);
    m->n_embd = c.n_embd;
    m->n_head = c.n_head;
    m->n_head_kv = c.n_head_kv;
    m->head_dim = c.head_dim;
    m->rope_halves = c.arch && halves(c.arch);
    json_decref(c.root);
    return rc;
}
