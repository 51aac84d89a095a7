// loader.c — ls_model_open: a GGUF file as it is, or a model put together in memory (a Hugging
// Face checkpoint, or any model with LoRA adapters) and handed out as an assembled GGUF.
// Also the model-under-construction helpers hf.c and lora.c share. Docs:
// docs/formats.md §1.5, §5 and §6. Tests: tests/oracle/test_hf.py.
#include "loader_impl.h"

#include <stdlib.h>
#include <string.h>

// --- the model under construction --------------------------------------------------------

void ld_init(ld_model *m, const char *path, bool shapes_only) {
    *m = (ld_model){.path = path, .shapes_only = shapes_only, .index = ls_strmap_init(512)};
    m->vocab = (ld_vocab){.bos = -1, .eos = -1, .unk = -1, .pad = -1, .add_bos = -1, .add_eos = -1,
                          .add_space_prefix = -1, .remove_extra_ws = -1};
}

static void vocab_free(ld_vocab *v) {
    for (int32_t i = 0; i < v->n; i++) ls_free(v->text[i]);
    for (int64_t i = 0; i < v->n_merges; i++) ls_free(v->merge[i]);
    ls_free(v->text);
    ls_free(v->len);
    ls_free(v->type);
    ls_free(v->scores);
    ls_free(v->merge);
    ls_free(v->merge_len);
    ls_free(v->chat_template);
}

static void release_keeps(struct ld_keep *k, int64_t n) {
    for (int64_t i = n - 1; i >= 0; i--) k[i].release(k[i].ctx);
}

void ld_free(ld_model *m) {
    for (int64_t i = 0; i < m->n_t; i++) ls_free((void *)m->t[i].name);
    ls_free(m->t);
    ls_strmap_free(m->index);
    release_keeps(m->keep, m->n_keep);
    ls_free(m->keep);
    ls_buf_free(&m->meta.kv);
    vocab_free(&m->vocab);
    *m = (ld_model){0};
}

void ld_keep(ld_model *m, void *ctx, void (*release)(void *)) {
    m->keep = ls_realloc(m->keep, (size_t)(m->n_keep + 1) * sizeof *m->keep);
    m->keep[m->n_keep++] = (struct ld_keep){ctx, release};
}

void *ld_alloc(ld_model *m, size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1)) LS_ASSERT(!"out of memory");
    memset(p, 0, bytes);
    ld_keep(m, p, free);
    return p;
}

void ld_tensor_set(ld_model *m, const char *name, ls_dtype type, int n_dims, const int64_t *ne, const void *data) {
    int64_t i;
    if (!ls_strmap_get(m->index, name, strlen(name), &i)) {
        if (m->n_t == m->cap_t) {
            m->cap_t = m->cap_t ? 2 * m->cap_t : 64;
            m->t = ls_realloc(m->t, (size_t)m->cap_t * sizeof *m->t);
        }
        i = m->n_t++;
        m->t[i] = (ls_gguf_tensor){.name = ls_strndup(name, strlen(name))};
        ls_strmap_put(m->index, name, strlen(name), i);
    }
    ls_gguf_tensor *t = &m->t[i];
    t->type = type;
    t->n_dims = (uint32_t)n_dims;
    for (int d = 0; d < 4; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->data = data;
}

ls_gguf_tensor *ld_tensor(ld_model *m, const char *name) {
    int64_t i;
    return ls_strmap_get(m->index, name, strlen(name), &i) ? &m->t[i] : NULL;
}

void ld_vocab_push(ld_vocab *v, const char *text, size_t len, int32_t type, float score) {
    if (v->n == v->cap) { // vocabularies run to 10^5 tokens: grow geometrically
        v->cap = v->cap ? 2 * v->cap : 1024;
        size_t n = (size_t)v->cap;
        v->text = ls_realloc(v->text, n * sizeof *v->text);
        v->len = ls_realloc(v->len, n * sizeof *v->len);
        v->type = ls_realloc(v->type, n * sizeof *v->type);
        if (v->spm) v->scores = ls_realloc(v->scores, n * sizeof *v->scores);
    }
    v->text[v->n] = ls_strndup(text, len);
    v->len[v->n] = len;
    v->type[v->n] = type;
    if (v->spm) v->scores[v->n] = score;
    v->n++;
}

// --- finishing: vocabulary keys, image, assembly ------------------------------------------

static void put_id(ls_gguf_meta *m, const char *key, int32_t id) {
    if (id >= 0) ls_gguf_meta_u32(m, key, (uint32_t)id);
}

static void put_flag(ls_gguf_meta *m, const char *key, int v) {
    if (v >= 0) ls_gguf_meta_bool(m, key, v != 0);
}

static void emit_vocab(ls_gguf_meta *meta, const ld_vocab *v) {
    if (!v->n) return;
    ls_gguf_meta_strs(meta, "tokenizer.ggml.tokens", (const char *const *)v->text, v->len, (uint64_t)v->n);
    ls_gguf_meta_arr(meta, "tokenizer.ggml.token_type", LS_GGUF_I32, v->type, (uint64_t)v->n);
    if (v->spm) ls_gguf_meta_arr(meta, "tokenizer.ggml.scores", LS_GGUF_F32, v->scores, (uint64_t)v->n);
    ls_gguf_meta_u32(meta, "llama.vocab_size", (uint32_t)v->n);
    if (!v->from_hf) return;
    ls_gguf_meta_str(meta, "tokenizer.ggml.model", v->model, strlen(v->model));
    if (v->pre[0]) ls_gguf_meta_str(meta, "tokenizer.ggml.pre", v->pre, strlen(v->pre));
    if (v->n_merges)
        ls_gguf_meta_strs(meta, "tokenizer.ggml.merges", (const char *const *)v->merge, v->merge_len, (uint64_t)v->n_merges);
    put_id(meta, "tokenizer.ggml.bos_token_id", v->bos);
    put_id(meta, "tokenizer.ggml.eos_token_id", v->eos);
    put_id(meta, "tokenizer.ggml.unknown_token_id", v->unk);
    put_id(meta, "tokenizer.ggml.padding_token_id", v->pad);
    put_flag(meta, "tokenizer.ggml.add_bos_token", v->add_bos);
    put_flag(meta, "tokenizer.ggml.add_eos_token", v->add_eos);
    put_flag(meta, "tokenizer.ggml.add_space_prefix", v->add_space_prefix);
    put_flag(meta, "tokenizer.ggml.remove_extra_whitespaces", v->remove_extra_ws);
    if (v->chat_template)
        ls_gguf_meta_str(meta, "tokenizer.chat_template", v->chat_template, strlen(v->chat_template));
}

static void keep_release(void *ctx) {
    struct ld_keep *k = ctx;
    k->release(k->ctx);
    ls_free(k);
}

ls_status ld_finish(ld_model *m, ls_gguf_t **out) {
    ls_buf image;
    emit_vocab(&m->meta, &m->vocab);
    ls_gguf_meta_finish(&m->meta, &image);
    ls_status rc = ls_gguf_assemble(&image, m->t, m->n_t, out);
    ls_buf_free(&image);
    if (rc != LS_OK) return rc;
    for (int64_t i = 0; i < m->n_keep; i++) { // the handle now owns every buffer and mapping
        struct ld_keep *k = ls_malloc(sizeof *k);
        *k = m->keep[i];
        ls_gguf_keep(*out, k, keep_release);
    }
    m->n_keep = 0;
    return LS_OK;
}

// --- a GGUF base that adapters change ------------------------------------------------------

static void gguf_release(void *g) { ls_gguf_free(g); }

static bool is_vocab_key(const char *k) {
    return !strcmp(k, "tokenizer.ggml.tokens") || !strcmp(k, "tokenizer.ggml.token_type") ||
           !strcmp(k, "tokenizer.ggml.scores") || !strcmp(k, "llama.vocab_size");
}

static ls_status vocab_from_gguf(ld_vocab *v, const ls_gguf_t *g) {
    ls_gguf_arr tok, types, scores;
    if (ls_gguf_get_arr(g, "tokenizer.ggml.tokens", &tok) != LS_OK || tok.type != LS_GGUF_STRING) {
        ls_err_clear();
        return LS_OK; // no vocabulary: the configuration check reports it later
    }
    bool have_types = ls_gguf_get_arr(g, "tokenizer.ggml.token_type", &types) == LS_OK && types.count == tok.count &&
                      (types.type == LS_GGUF_I32 || types.type == LS_GGUF_U32);
    bool have_scores = ls_gguf_get_arr(g, "tokenizer.ggml.scores", &scores) == LS_OK && scores.count == tok.count &&
                       scores.type == LS_GGUF_F32;
    ls_err_clear();
    v->spm = have_scores;
    for (uint64_t i = 0; i < tok.count; i++) {
        ls_str s = ls_gguf_arr_str(&tok, i);
        ld_vocab_push(v, s.ptr, s.len, have_types ? (int32_t)ls_gguf_arr_int(&types, i) : 1,
                      have_scores ? (float)ls_gguf_arr_float(&scores, i) : 0.0f);
    }
    return LS_OK;
}

static ls_status from_gguf(ld_model *m, const char *path) {
    ls_gguf_t *g;
    LS_CHECK(ls_gguf_open(path, &g));
    ld_keep(m, g, gguf_release);
    for (int64_t i = 0; i < ls_gguf_n_kv(g); i++)
        if (!is_vocab_key(ls_gguf_kv_key(g, i))) ls_gguf_meta_copy(&m->meta, g, i);
    LS_CHECK(vocab_from_gguf(&m->vocab, g));
    for (int64_t i = 0; i < ls_gguf_n_tensors(g); i++) {
        const ls_gguf_tensor *t = ls_gguf_tensor_at(g, i);
        ld_tensor_set(m, t->name, t->type, (int)t->n_dims, t->ne, t->data);
    }
    int64_t v;
    m->n_embd = ls_gguf_get_int(g, "llama.embedding_length", &v) == LS_OK ? v : 0;
    m->n_head = ls_gguf_get_int(g, "llama.attention.head_count", &v) == LS_OK ? v : 0;
    m->n_head_kv = ls_gguf_get_int(g, "llama.attention.head_count_kv", &v) == LS_OK ? v : m->n_head;
    ls_err_clear();
    if (m->n_embd <= 0 || m->n_head <= 0 || m->n_head_kv <= 0 || m->n_embd % m->n_head)
        return LS_ERR(LS_ERR_FORMAT, "adapters need llama.embedding_length and llama.attention.head_count in the base model");
    m->head_dim = m->n_embd / m->n_head;
    return LS_OK;
}

// --- entry point ---------------------------------------------------------------------------

static ls_status open_assembled(const char *path, const ls_load_opts *o, ls_gguf_t **out) {
    ld_model m;
    ld_init(&m, path, o->shapes_only);
    ls_status rc = ls_is_dir(path) ? ld_from_hf(&m, path) : from_gguf(&m, path);
    for (int i = 0; i < o->n_lora && rc == LS_OK; i++) rc = ld_apply_lora(&m, &o->lora[i]);
    if (rc == LS_OK) rc = ld_finish(&m, out);
    ld_free(&m);
    return rc;
}

ls_status ls_model_open(const char *path, const ls_load_opts *o, ls_gguf_t **out) {
    static const ls_load_opts none = {0};
    if (!o) o = &none;
    *out = NULL;
    if (!ls_is_dir(path) && o->n_lora == 0) return ls_gguf_open(path, out);
    ls_status rc = open_assembled(path, o, out);
    if (rc != LS_OK) ls_err_prefix("%s: ", path);
    return rc;
}
