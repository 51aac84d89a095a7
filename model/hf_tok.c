// hf_tok.c — a Hugging Face checkpoint's tokenizer as GGUF tokenizer keys: tokenizer.model
// (SentencePiece's protobuf, parsed with protobuf-c: pieces, scores, types, special ids,
// normalizer flags) or tokenizer.json (a byte-level BPE parsed with jansson: vocabulary,
// merges, added tokens, and the pre-tokenizer recognised from its structure), plus
// tokenizer_config.json (add_bos/add_eos, special tokens, chat template) and added_tokens.json.
// tokenizer.model wins when both exist, as in llama.cpp's converter. Files are read through
// ls_dir_file (inside the directory, regular); added tokens must have ids below the
// embedding's rows. Docs: docs/formats.md §4.1, §5.4. Tests: tests/oracle/test_hf.py (against
// transformers), tests/unit/test_loader.c (hostile files).
#include "loader_impl.h"
#include "sentencepiece.pb-c.h"

#include <limits.h>
#include <string.h>

#define MAX_TOKENIZER_BYTES (256u << 20)

// --- shared --------------------------------------------------------------------------------

static int32_t find_token(const ld_vocab *v, const char *text) {
    size_t n = strlen(text);
    for (int32_t i = 0; i < v->n; i++)
        if (v->len[i] == n && !memcmp(v->text[i], text, n)) return i;
    return -1;
}

// A special token given as "text" or {"content": "text"} in tokenizer_config.json.
static const char *token_text(json_t *j) {
    if (json_is_object(j)) j = json_object_get(j, "content");
    return json_string_value(j);
}

static void set_token(ld_vocab *v, int32_t id, const char *text, int32_t type) {
    while (v->n <= id) {
        char pad[32];
        int n = snprintf(pad, sizeof pad, "[PAD%d]", v->n);
        ld_vocab_push(v, pad, (size_t)n, LS_TOKEN_UNUSED, 0.0f);
    }
    ls_free(v->text[id]);
    v->text[id] = ls_strndup(text, strlen(text));
    v->len[id] = strlen(text);
    v->type[id] = type;
}

// An added token's id: below the embedding's rows, checked before set_token pads up to it.
static ls_status added_id(const char *file, const char *what, const char *text, json_int_t id, int64_t max_tokens) {
    if (id >= max_tokens)
        return LS_ERR(LS_ERR_FORMAT, "%s: %s\"%s\" has the id %lld, beyond the %lld rows of model.embed_tokens (token ids "
                      "must be below it)", file, what, text, (long long)id, (long long)max_tokens);
    return LS_OK;
}

static ls_status read_config(ld_vocab *v, const char *dir) {
    json_t *j;
    LS_CHECK(ld_json_load(dir, "tokenizer_config.json", 64u << 20, &j));
    if (!j) return LS_OK;
    json_t *b = json_object_get(j, "add_bos_token"), *e = json_object_get(j, "add_eos_token");
    if (json_is_boolean(b)) v->add_bos = json_is_true(b);
    if (json_is_boolean(e)) v->add_eos = json_is_true(e);
    const char *bos = token_text(json_object_get(j, "bos_token")), *eos = token_text(json_object_get(j, "eos_token"));
    const char *pad = token_text(json_object_get(j, "pad_token")), *unk = token_text(json_object_get(j, "unk_token"));
    const char *names[] = {bos, eos, pad, unk};
    int32_t *ids[] = {&v->bos, &v->eos, &v->pad, &v->unk};
    for (int i = 0; i < 4; i++) {
        int32_t id = names[i] ? find_token(v, names[i]) : -1;
        if (id >= 0) *ids[i] = id;
    }
    json_t *ct = json_object_get(j, "chat_template");
    const char *tmpl = json_string_value(ct);
    for (size_t i = 0; !tmpl && json_is_array(ct) && i < json_array_size(ct); i++) { // named templates
        json_t *t = json_array_get(ct, i);
        const char *name = json_string_value(json_object_get(t, "name"));
        if (name && !strcmp(name, "default")) tmpl = json_string_value(json_object_get(t, "template"));
    }
    if (tmpl) v->chat_template = ls_strndup(tmpl, strlen(tmpl));
    json_decref(j);
    return LS_OK;
}

// added_tokens.json: {"text": id, ...} for tokens added after a SentencePiece vocabulary.
static ls_status added_tokens_json(ld_vocab *v, const char *dir, int64_t max_tokens) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/added_tokens.json", dir);
    json_t *j, *id;
    const char *text;
    LS_CHECK(ld_json_load(dir, "added_tokens.json", 64u << 20, &j));
    if (!j) return LS_OK;
    ls_status rc = json_is_object(j) ? LS_OK : LS_ERR(LS_ERR_FORMAT, "%s is not a JSON object", path);
    json_object_foreach(j, text, id) {
        if (rc != LS_OK) break;
        json_int_t n = json_is_integer(id) ? json_integer_value(id) : -1;
        if (n < 0) rc = LS_ERR(LS_ERR_FORMAT, "%s: \"%s\" has no valid id", path, text);
        else rc = added_id(path, "", text, n, max_tokens);
        if (rc == LS_OK && (n >= v->n || strcmp(v->text[n], text))) set_token(v, (int32_t)n, text, LS_TOKEN_USER_DEFINED);
    }
    json_decref(j);
    return rc;
}

// --- tokenizer.model -----------------------------------------------------------------------

static ls_status check_id(const char *file, const char *what, int32_t id, int32_t n, int32_t *out) {
    if (id >= n) return LS_ERR(LS_ERR_FORMAT, "%s: %s %d is outside the %d pieces", file, what, id, n);
    *out = id < 0 ? -1 : id;
    return LS_OK;
}

static ls_status from_spm(ld_vocab *v, const char *file, const Lsspm__ModelProto *p) {
    if (p->n_pieces == 0 || p->n_pieces > (1u << 24))
        return LS_ERR(LS_ERR_FORMAT, "%s has %zu pieces", file, p->n_pieces);
    const Lsspm__TrainerSpec *ts = p->trainer_spec;
    if (ts && ts->has_model_type && ts->model_type != LSSPM__TRAINER_SPEC__MODEL_TYPE__BPE)
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s is a %s SentencePiece model; longseq reads BPE models (Llama, Mistral)", file,
                      ts->model_type == LSSPM__TRAINER_SPEC__MODEL_TYPE__UNIGRAM ? "unigram" : "word/char");
    v->spm = true;
    for (size_t i = 0; i < p->n_pieces; i++) {
        const Lsspm__SentencePiece *sp = p->pieces[i];
        if (!sp->piece) return LS_ERR(LS_ERR_FORMAT, "%s: piece %zu has no text", file, i);
        int32_t type = sp->has_type ? (int32_t)sp->type : LS_TOKEN_NORMAL;
        if (type < 1 || type > 6) return LS_ERR(LS_ERR_FORMAT, "%s: piece %zu has type %d", file, i, type);
        ld_vocab_push(v, sp->piece, strlen(sp->piece), type, sp->score);
    }
    snprintf(v->model, sizeof v->model, "llama");
    Lsspm__TrainerSpec dflt_ts = LSSPM__TRAINER_SPEC__INIT;
    if (!ts) ts = &dflt_ts;
    LS_CHECK(check_id(file, "unk_id", ts->unk_id, v->n, &v->unk));
    LS_CHECK(check_id(file, "bos_id", ts->bos_id, v->n, &v->bos));
    LS_CHECK(check_id(file, "eos_id", ts->eos_id, v->n, &v->eos));
    LS_CHECK(check_id(file, "pad_id", ts->pad_id, v->n, &v->pad));
    const Lsspm__NormalizerSpec *ns = p->normalizer_spec;
    v->add_space_prefix = ns && ns->has_add_dummy_prefix ? ns->add_dummy_prefix : 1;
    v->remove_extra_ws = ns && ns->has_remove_extra_whitespaces ? ns->remove_extra_whitespaces : 1;
    v->add_bos = 1;
    v->add_eos = 0;
    return LS_OK;
}

// file: as messages name it; real: what is read.
static ls_status read_spm(ld_vocab *v, const char *file, const char *real) {
    ls_buf b = {0};
    ls_status rc = ls_file_read_all(real, MAX_TOKENIZER_BYTES, &b);
    if (rc != LS_OK) {
        ls_buf_free(&b);
        return rc;
    }
    Lsspm__ModelProto *p = lsspm__model_proto__unpack(NULL, b.len, (const uint8_t *)b.data);
    ls_buf_free(&b);
    if (!p) return LS_ERR(LS_ERR_FORMAT, "%s is not a SentencePiece model (the protobuf does not parse)", file);
    rc = from_spm(v, file, p);
    lsspm__model_proto__free_unpacked(p, NULL);
    return rc;
}

// --- tokenizer.json ------------------------------------------------------------------------

// Finds a component of type `type` in a tokenizer.json node, or in its "pretokenizers" /
// "processors" / "decoders" list.
static json_t *component(json_t *node, const char *type) {
    const char *t = json_string_value(json_object_get(node, "type"));
    if (t && !strcmp(t, type)) return node;
    static const char *lists[] = {"pretokenizers", "processors", "decoders", "normalizers"};
    for (size_t l = 0; l < sizeof lists / sizeof *lists; l++) {
        json_t *a = json_object_get(node, lists[l]);
        for (size_t i = 0; json_is_array(a) && i < json_array_size(a); i++) {
            json_t *c = component(json_array_get(a, i), type);
            if (c) return c;
        }
    }
    return NULL;
}

static const char *split_pattern(json_t *split) {
    json_t *p = json_object_get(split, "pattern");
    const char *re = json_string_value(json_object_get(p, "Regex"));
    return re ? re : json_string_value(json_object_get(p, "String"));
}

// The llama.cpp pre-tokenizer this byte-level tokenizer's pre_tokenizer amounts to.
static ls_status pre_name(const char *file, json_t *pre, ld_vocab *v) {
    static const char *llama3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    // Qwen2: Llama 3's with single digits
    static const char *qwen2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    json_t *bl = component(pre, "ByteLevel"), *split = component(pre, "Split"), *digits = component(pre, "Digits");
    bool bl_regex = bl && !json_is_false(json_object_get(bl, "use_regex"));
    const char *re = split ? split_pattern(split) : NULL;
    if (bl && bl_regex && !split && digits && json_is_true(json_object_get(digits, "individual_digits")))
        snprintf(v->pre, sizeof v->pre, "smollm");
    else if (bl && bl_regex && re && !strcmp(re, "\\p{N}"))
        snprintf(v->pre, sizeof v->pre, "smollm");
    else if (bl && bl_regex && !split && !digits)
        snprintf(v->pre, sizeof v->pre, "gpt-2");
    else if (bl && !bl_regex && re && !strcmp(re, llama3)) {
        snprintf(v->pre, sizeof v->pre, "llama-bpe");
        v->add_bos = 1;
    } else if (bl && !bl_regex && re && !strcmp(re, qwen2))
        snprintf(v->pre, sizeof v->pre, "qwen2");
    else
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: the pre_tokenizer is not one longseq knows (byte-level GPT-2, SmolLM/StarCoder "
                                          "digit splitting, Llama 3's or Qwen2's regex)", file);
    return LS_OK;
}

static ls_status json_vocab(ld_vocab *v, const char *file, json_t *model) {
    json_t *vocab = json_object_get(model, "vocab"), *id;
    const char *text;
    if (!json_is_object(vocab)) return LS_ERR(LS_ERR_FORMAT, "%s: model.vocab is not an object", file);
    size_t n = json_object_size(vocab);
    if (n == 0 || n > (1u << 24)) return LS_ERR(LS_ERR_FORMAT, "%s: model.vocab has %zu entries", file, n);
    char **by_id = ls_calloc(n, sizeof *by_id);
    ls_status rc = LS_OK;
    json_object_foreach(vocab, text, id) {
        json_int_t k = json_is_integer(id) ? json_integer_value(id) : -1;
        if (k < 0 || (size_t)k >= n || by_id[k]) {
            rc = LS_ERR(LS_ERR_FORMAT, "%s: model.vocab gives \"%s\" the id %lld: ids must be 0..%zu, each once", file,
                        text, (long long)k, n - 1);
            break;
        }
        by_id[k] = (char *)text;
    }
    for (size_t i = 0; rc == LS_OK && i < n; i++) ld_vocab_push(v, by_id[i], strlen(by_id[i]), LS_TOKEN_NORMAL, 0.0f);
    ls_free(by_id);
    return rc;
}

static ls_status json_merges(ld_vocab *v, const char *file, json_t *model) {
    json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges)) return LS_ERR(LS_ERR_FORMAT, "%s: model.merges is not a list", file);
    size_t n = json_array_size(merges);
    v->merge = ls_malloc((n ? n : 1) * sizeof *v->merge);
    v->merge_len = ls_malloc((n ? n : 1) * sizeof *v->merge_len);
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(merges, i);
        ls_buf b = {0};
        if (json_is_string(m)) {
            ls_buf_append(&b, json_string_value(m), json_string_length(m));
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            ls_buf_printf(&b, "%s %s", json_string_value(json_array_get(m, 0)), json_string_value(json_array_get(m, 1)));
        } else {
            return LS_ERR(LS_ERR_FORMAT, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", file, i);
        }
        ls_buf_append(&b, "", 1);
        v->merge[i] = b.data;
        v->merge_len[i] = b.len - 1;
        v->n_merges = (int64_t)i + 1;
    }
    return LS_OK;
}

static ls_status json_added(ld_vocab *v, const char *file, json_t *root, int64_t max_tokens) {
    json_t *added = json_object_get(root, "added_tokens");
    for (size_t i = 0; json_is_array(added) && i < json_array_size(added); i++) {
        json_t *a = json_array_get(added, i), *id = json_object_get(a, "id");
        const char *text = json_string_value(json_object_get(a, "content"));
        json_int_t k = json_is_integer(id) ? json_integer_value(id) : -1;
        if (!text || k < 0) return LS_ERR(LS_ERR_FORMAT, "%s: added_tokens[%zu] has no content or id", file, i);
        char what[48];
        snprintf(what, sizeof what, "added_tokens[%zu] ", i);
        LS_CHECK(added_id(file, what, text, k, max_tokens));
        set_token(v, (int32_t)k, text, json_is_true(json_object_get(a, "special")) ? LS_TOKEN_CONTROL : LS_TOKEN_USER_DEFINED);
    }
    return LS_OK;
}

// A TemplateProcessing post-processor that starts with a special token adds BOS (Llama 3).
static void post_processor(ld_vocab *v, json_t *root) {
    json_t *tp = component(json_object_get(root, "post_processor"), "TemplateProcessing");
    json_t *first = json_array_get(json_object_get(tp, "single"), 0);
    const char *id = json_string_value(json_object_get(json_object_get(first, "SpecialToken"), "id"));
    if (id && find_token(v, id) >= 0) {
        v->bos = find_token(v, id);
        v->add_bos = 1;
    }
}

static ls_status from_json(ld_vocab *v, const char *file, json_t *root, int64_t max_tokens) {
    json_t *model = json_object_get(root, "model");
    const char *type = json_string_value(json_object_get(model, "type"));
    if (!type || strcmp(type, "BPE"))
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: model type \"%s\" is not supported (longseq reads BPE tokenizers)", file,
                      type ? type : "?");
    json_t *pre = json_object_get(root, "pre_tokenizer");
    if (!component(pre, "ByteLevel"))
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s is a SentencePiece-style BPE (no byte-level pre-tokenizer): longseq reads "
                                          "such tokenizers from tokenizer.model, which this directory lacks", file);
    snprintf(v->model, sizeof v->model, "gpt2");
    v->add_bos = 0;
    LS_CHECK(pre_name(file, pre, v));
    LS_CHECK(json_vocab(v, file, model));
    LS_CHECK(json_merges(v, file, model));
    LS_CHECK(json_added(v, file, root, max_tokens));
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    if (unk) v->unk = find_token(v, unk);
    post_processor(v, root);
    return LS_OK;
}

// tokenizer.json; *found is false when there is none.
static ls_status read_json_tokenizer(ld_vocab *v, const char *dir, int64_t max_tokens, bool *found) {
    char file[PATH_MAX];
    snprintf(file, sizeof file, "%s/tokenizer.json", dir);
    json_t *root;
    LS_CHECK(ld_json_load(dir, "tokenizer.json", MAX_TOKENIZER_BYTES, &root));
    *found = root != NULL;
    ls_status rc = root ? from_json(v, file, root, max_tokens) : LS_OK;
    json_decref(root);
    return rc;
}

ls_status ld_vocab_from_hf(ld_vocab *v, const char *dir, int64_t max_tokens, bool *found) {
    char spm[PATH_MAX], real[PATH_MAX];
    snprintf(spm, sizeof spm, "%s/tokenizer.model", dir);
    v->from_hf = true;
    LS_CHECK(ls_dir_file(dir, "tokenizer.model", real, sizeof real, found));
    if (*found) {
        LS_CHECK(read_spm(v, spm, real));
        LS_CHECK(added_tokens_json(v, dir, max_tokens));
    } else {
        LS_CHECK(read_json_tokenizer(v, dir, max_tokens, found));
        if (!*found) return LS_OK;
    }
    return read_config(v, dir);
}
