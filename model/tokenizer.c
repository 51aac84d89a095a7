// tokenizer.c — tokenizer setup from GGUF metadata, special-token matching, the tokenize loop
// (special split -> pre-tokenizer -> BPE, or -> SentencePiece) and detokenization.
// Docs: docs/formats.md §4. Tests: tests/unit/test_tokenizer.c,
// tests/oracle/test_tokenizer.py.
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

#define MAX_VOCAB (1 << 24)

// --- setup --------------------------------------------------------------------------------

typedef struct pre_alias {
    const char *name;
    pretok_kind kind;
} pre_alias;

// Pre-tokenizer names (tokenizer.ggml.pre) and the scanner each one uses, as in llama.cpp.
static const pre_alias g_pre[] = {
    {"gpt-2", PRETOK_GPT2},       {"phi-2", PRETOK_GPT2},       {"jina-es", PRETOK_GPT2},
    {"jina-de", PRETOK_GPT2},     {"smollm", PRETOK_SMOLLM},    {"starcoder", PRETOK_SMOLLM},
    {"refact", PRETOK_SMOLLM},    {"command-r", PRETOK_SMOLLM}, {"codeshell", PRETOK_SMOLLM},
    {"exaone", PRETOK_SMOLLM},    {"minerva-7b", PRETOK_SMOLLM}, {"llama-bpe", PRETOK_LLAMA3},
    {"llama3", PRETOK_LLAMA3},    {"llama-v3", PRETOK_LLAMA3},  {"qwen2", PRETOK_QWEN2},
};

static ls_status set_pre(ls_tokenizer_t *t, const ls_gguf_t *g) {
    ls_str pre;
    ls_status rc = ls_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
    if (rc == LS_ERR_NOT_FOUND) {
        LS_WARN("tokenizer.ggml.pre is missing: using the gpt-2 pre-tokenizer (the model's own may differ)");
        snprintf(t->pre_name, sizeof t->pre_name, "gpt-2");
        t->pretok = PRETOK_GPT2;
        return LS_OK;
    }
    LS_CHECK(rc);
    for (size_t i = 0; i < sizeof g_pre / sizeof *g_pre; i++) {
        if (strlen(g_pre[i].name) == pre.len && !memcmp(g_pre[i].name, pre.ptr, pre.len)) {
            snprintf(t->pre_name, sizeof t->pre_name, "%s", g_pre[i].name);
            t->pretok = g_pre[i].kind;
            t->ignore_merges = t->pretok == PRETOK_LLAMA3;
            t->add_bos = t->pretok == PRETOK_LLAMA3;
            return LS_OK;
        }
    }
    ls_buf names = {0};
    for (size_t i = 0; i < sizeof g_pre / sizeof *g_pre; i++)
        ls_buf_printf(&names, "%s%s", i ? ", " : "", g_pre[i].name);
    rc = LS_ERR(LS_ERR_UNSUPPORTED, "tokenizer.ggml.pre = \"%.*s\" is not a supported pre-tokenizer (supported: %s)",
                (int)(pre.len > 64 ? 64 : pre.len), pre.ptr, names.data);
    ls_buf_free(&names);
    return rc;
}

static ls_status load_vocab(ls_tokenizer_t *t, const ls_gguf_t *g) {
    ls_gguf_arr tokens;
    ls_status rc = ls_gguf_get_arr(g, "tokenizer.ggml.tokens", &tokens);
    if (rc == LS_ERR_NOT_FOUND) return LS_ERR(LS_ERR_FORMAT, "the model has no tokenizer.ggml.tokens");
    LS_CHECK(rc);
    if (tokens.type != LS_GGUF_STRING)
        return LS_ERR(LS_ERR_FORMAT, "tokenizer.ggml.tokens must be an array of strings, not %s",
                      ls_gguf_vtype_name(tokens.type));
    if (tokens.count == 0 || tokens.count > MAX_VOCAB)
        return LS_ERR(LS_ERR_FORMAT, "tokenizer.ggml.tokens has %llu entries (1 to %d allowed)",
                      (unsigned long long)tokens.count, MAX_VOCAB);
    t->n_vocab = (int32_t)tokens.count;
    t->text_off = ls_malloc(((size_t)t->n_vocab + 1) * sizeof *t->text_off);
    t->vocab = ls_strmap_init((size_t)t->n_vocab);
    for (int32_t i = 0; i < t->n_vocab; i++) {
        ls_str s = ls_gguf_arr_str(&tokens, (uint64_t)i);
        t->text_off[i] = t->text_pool.len;
        ls_buf_append(&t->text_pool, s.ptr, s.len);
        ls_strmap_put(t->vocab, s.ptr, s.len, i); // a repeated string maps to its last id
    }
    t->text_off[t->n_vocab] = t->text_pool.len;
    return LS_OK;
}

static ls_status load_types_scores(ls_tokenizer_t *t, const ls_gguf_t *g) {
    t->types = ls_malloc((size_t)t->n_vocab);
    memset(t->types, LS_TOKEN_NORMAL, (size_t)t->n_vocab);
    ls_gguf_arr a;
    ls_status rc = ls_gguf_get_arr(g, "tokenizer.ggml.token_type", &a);
    if (rc == LS_OK) {
        bool is_int = a.type != LS_GGUF_STRING && a.type != LS_GGUF_F32 && a.type != LS_GGUF_F64 &&
                      a.type != LS_GGUF_BOOL;
        if (!is_int || a.count != (uint64_t)t->n_vocab)
            return LS_ERR(LS_ERR_FORMAT, "tokenizer.ggml.token_type must be %d integers, found %llu of type %s",
                          t->n_vocab, (unsigned long long)a.count, ls_gguf_vtype_name(a.type));
        for (int32_t i = 0; i < t->n_vocab; i++) {
            int64_t v = ls_gguf_arr_int(&a, (uint64_t)i);
            if (v < 0 || v > LS_TOKEN_BYTE)
                return LS_ERR(LS_ERR_FORMAT, "tokenizer.ggml.token_type[%d] = %lld is not a token type (0..6)", i, (long long)v);
            t->types[i] = (uint8_t)v;
        }
    } else if (rc != LS_ERR_NOT_FOUND) {
        LS_CHECK(rc);
    }
    rc = ls_gguf_get_arr(g, "tokenizer.ggml.scores", &a);
    if (rc == LS_ERR_NOT_FOUND) return LS_OK;
    LS_CHECK(rc);
    if ((a.type != LS_GGUF_F32 && a.type != LS_GGUF_F64) || a.count != (uint64_t)t->n_vocab)
        return LS_ERR(LS_ERR_FORMAT, "tokenizer.ggml.scores must be %d floats, found %llu of type %s",
                      t->n_vocab, (unsigned long long)a.count, ls_gguf_vtype_name(a.type));
    t->scores = ls_malloc((size_t)t->n_vocab * sizeof *t->scores);
    for (int32_t i = 0; i < t->n_vocab; i++) t->scores[i] = (float)ls_gguf_arr_float(&a, (uint64_t)i);
    return LS_OK;
}

// Reads an optional special-token id; absent keys keep *id (the model type's default, which
// is dropped when it does not fit the vocabulary).
static ls_status special_id(const ls_tokenizer_t *t, const ls_gguf_t *g, const char *key, int32_t *id) {
    int64_t v;
    ls_status rc = ls_gguf_get_int(g, key, &v);
    if (rc == LS_ERR_NOT_FOUND) {
        if (*id >= t->n_vocab) *id = -1;
        return LS_OK;
    }
    LS_CHECK(rc);
    if (v < 0 || v >= t->n_vocab)
        return LS_ERR(LS_ERR_FORMAT, "%s = %lld is outside the vocabulary of %d tokens", key,
                      (long long)v, t->n_vocab);
    *id = (int32_t)v;
    return LS_OK;
}

static ls_status flag(const ls_gguf_t *g, const char *key, bool *v) {
    ls_status rc = ls_gguf_get_bool(g, key, v);
    return rc == LS_ERR_NOT_FOUND ? LS_OK : rc;
}

static ls_status load_specials(ls_tokenizer_t *t, const ls_gguf_t *g) {
    bool spm = t->model == LS_TOK_SPM;
    t->bos = spm ? 1 : 11; // llama.cpp's defaults when the keys are absent
    t->eos = spm ? 2 : 11;
    t->unk = spm ? 0 : -1;
    t->eot = t->eom = t->pad = -1;
    LS_CHECK(special_id(t, g, "tokenizer.ggml.bos_token_id", &t->bos));
    LS_CHECK(special_id(t, g, "tokenizer.ggml.eos_token_id", &t->eos));
    LS_CHECK(special_id(t, g, "tokenizer.ggml.unknown_token_id", &t->unk));
    LS_CHECK(special_id(t, g, "tokenizer.ggml.padding_token_id", &t->pad));
    LS_CHECK(special_id(t, g, "tokenizer.ggml.eot_token_id", &t->eot));
    LS_CHECK(special_id(t, g, "tokenizer.ggml.eom_token_id", &t->eom));
    t->add_space_prefix = spm;
    if (spm) t->add_bos = true;
    LS_CHECK(flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos));
    LS_CHECK(flag(g, "tokenizer.ggml.add_eos_token", &t->add_eos));
    LS_CHECK(flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix));
    return LS_OK;
}

static const char *g_eog_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                    "<|endoftext|>", "<|eom_id|>", "<EOT>", "<|end_of_text|>"};

static void mark_eog(ls_tokenizer_t *t) {
    t->eog = ls_calloc((size_t)t->n_vocab, 1);
    int32_t ids[] = {t->eos, t->eot, t->eom};
    for (size_t i = 0; i < 3; i++)
        if (ids[i] >= 0) t->eog[ids[i]] = true;
    for (size_t i = 0; i < sizeof g_eog_texts / sizeof *g_eog_texts; i++) {
        int32_t id = ls_tokenizer_find(t, g_eog_texts[i], strlen(g_eog_texts[i]));
        if (id >= 0 && (t->types[id] == LS_TOKEN_CONTROL || t->types[id] == LS_TOKEN_USER_DEFINED))
            t->eog[id] = true;
    }
}

static const ls_tokenizer_t *g_sort_tok; // qsort has no context argument in C11
static int by_length_desc(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint64_t lx = g_sort_tok->text_off[x + 1] - g_sort_tok->text_off[x];
    uint64_t ly = g_sort_tok->text_off[y + 1] - g_sort_tok->text_off[y];
    if (lx != ly) return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

// Tokens matched literally in raw text: control, user-defined and unknown, longest first.
static void collect_specials(ls_tokenizer_t *t) {
    t->specials = ls_malloc((size_t)t->n_vocab * sizeof *t->specials);
    for (int32_t i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->types[i];
        if ((ty == LS_TOKEN_CONTROL || ty == LS_TOKEN_USER_DEFINED || ty == LS_TOKEN_UNKNOWN) &&
            t->text_off[i + 1] > t->text_off[i])
            t->specials[t->n_specials++] = i;
    }
    g_sort_tok = t;
    qsort(t->specials, (size_t)t->n_specials, sizeof *t->specials, by_length_desc);
}

static ls_status init_model(ls_tokenizer_t *t, const ls_gguf_t *g) {
    ls_str model;
    ls_status rc = ls_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc == LS_ERR_NOT_FOUND) return LS_ERR(LS_ERR_FORMAT, "the model has no tokenizer (tokenizer.ggml.model is missing)");
    LS_CHECK(rc);
    if (model.len == 4 && !memcmp(model.ptr, "gpt2", 4)) t->model = LS_TOK_BPE;
    else if (model.len == 5 && !memcmp(model.ptr, "llama", 5)) t->model = LS_TOK_SPM;
    else
        return LS_ERR(LS_ERR_UNSUPPORTED, "tokenizer.ggml.model = \"%.*s\" is not supported (supported: gpt2, llama)",
                      (int)(model.len > 32 ? 32 : model.len), model.ptr);
    LS_CHECK(load_vocab(t, g));
    LS_CHECK(load_types_scores(t, g));
    if (t->model == LS_TOK_BPE) LS_CHECK(set_pre(t, g));
    LS_CHECK(load_specials(t, g));
    mark_eog(t);
    collect_specials(t);
    if (t->model == LS_TOK_BPE) return ls_bpe_init(t, g);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->spm_byte_token[b] = ls_tokenizer_find(t, name, 6);
    }
    return LS_OK;
}

ls_status ls_tokenizer_init(const ls_gguf_t *g, ls_tokenizer_t **out) {
    ls_tokenizer_t *t = ls_calloc(1, sizeof *t);
    ls_status rc = init_model(t, g);
    if (rc != LS_OK) {
        ls_tokenizer_free(t);
        *out = NULL;
        return rc;
    }
    *out = t;
    return LS_OK;
}

void ls_tokenizer_free(ls_tokenizer_t *t) {
    if (!t) return;
    ls_bpe_free(t);
    ls_buf_free(&t->text_pool);
    ls_free(t->text_off);
    ls_free(t->types);
    ls_free(t->scores);
    ls_free(t->eog);
    ls_free(t->specials);
    ls_strmap_free(t->vocab);
    ls_free(t);
}

// --- accessors ----------------------------------------------------------------------------

ls_tok_model ls_tokenizer_model(const ls_tokenizer_t *t) { return t->model; }
const char *ls_tokenizer_model_name(const ls_tokenizer_t *t) { return t->model == LS_TOK_BPE ? "gpt2" : "llama"; }
const char *ls_tokenizer_pre_name(const ls_tokenizer_t *t) { return t->pre_name; }
int32_t ls_tokenizer_n_vocab(const ls_tokenizer_t *t) { return t->n_vocab; }
int64_t ls_tokenizer_n_merges(const ls_tokenizer_t *t) { return t->n_merges; }
int32_t ls_tokenizer_bos(const ls_tokenizer_t *t) { return t->bos; }
int32_t ls_tokenizer_eos(const ls_tokenizer_t *t) { return t->eos; }
int32_t ls_tokenizer_eot(const ls_tokenizer_t *t) { return t->eot; }
int32_t ls_tokenizer_unk(const ls_tokenizer_t *t) { return t->unk; }
int32_t ls_tokenizer_pad(const ls_tokenizer_t *t) { return t->pad; }
bool ls_tokenizer_add_bos(const ls_tokenizer_t *t) { return t->add_bos; }
bool ls_tokenizer_add_eos(const ls_tokenizer_t *t) { return t->add_eos; }

bool ls_tokenizer_is_eog(const ls_tokenizer_t *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && t->eog[id];
}

ls_str ls_tokenizer_text(const ls_tokenizer_t *t, int32_t id) {
    LS_ASSERT(id >= 0 && id < t->n_vocab);
    return (ls_str){t->text_pool.data + t->text_off[id], t->text_off[id + 1] - t->text_off[id]};
}

ls_token_type ls_tokenizer_type(const ls_tokenizer_t *t, int32_t id) {
    LS_ASSERT(id >= 0 && id < t->n_vocab);
    return (ls_token_type)t->types[id];
}

int32_t ls_tokenizer_find(const ls_tokenizer_t *t, const char *text, size_t len) {
    int64_t id;
    return ls_strmap_get(t->vocab, text, len, &id) ? (int32_t)id : -1;
}

// --- tokenize -----------------------------------------------------------------------------

typedef struct tok_ctx {
    const ls_tokenizer_t *t;
    bool continuation; // no SentencePiece dummy prefix on the first fragment
    const char *frag;  // current raw fragment
    text_unit *units;
    size_t units_cap;
    merge_scratch scratch;
    ls_buf escaped;    // SentencePiece fragment with U+2581 for spaces
    ls_vec_i32 *out;
} tok_ctx;

static ls_status on_piece(void *vctx, size_t a, size_t b) {
    tok_ctx *c = vctx;
    size_t start = c->units[a].off, end = c->units[b - 1].off + c->units[b - 1].len;
    return ls_bpe_piece(c->t, c->frag + start, end - start, &c->scratch, c->out);
}

// Long fragments are cut into chunks of about this many bytes, to bound the unit buffer. A
// cut is made only after a "\n" that has a non-space ASCII character on both sides: there the
// line break is a piece of its own for every pre-tokenizer (or, for llama-bpe, the tail of the
// piece before it), so the pieces are the same as without the cut.
#define BPE_CHUNK 65536

static bool ascii_solid(char ch) {
    return (uint8_t)ch < 0x80 && ch != ' ' && !(ch >= 0x09 && ch <= 0x0D);
}

static size_t chunk_end(const char *p, size_t n) {
    if (n <= BPE_CHUNK) return n;
    for (size_t i = BPE_CHUNK; i + 1 < n; i++)
        if (p[i] == '\n' && ascii_solid(p[i - 1]) && ascii_solid(p[i + 1])) return i + 1;
    return n;
}

size_t ls_tokenizer_safe_cut(const char *text, size_t len) {
    for (size_t i = len >= 2 ? len - 2 : 0; i >= 1 && len >= 2; i--)
        if (text[i] == '\n' && ascii_solid(text[i - 1]) && ascii_solid(text[i + 1])) return i + 1;
    return 0;
}

static ls_status bpe_fragment(tok_ctx *c, const char *p, size_t n) {
    while (n) {
        size_t k = chunk_end(p, n);
        size_t nu = ls_utf8_units(p, k, &c->units, &c->units_cap);
        c->frag = p;
        LS_CHECK(ls_pretokenize(c->t->pretok, c->units, nu, on_piece, c));
        p += k;
        n -= k;
    }
    return LS_OK;
}

static ls_status spm_fragment(tok_ctx *c, const char *p, size_t n, bool prefix) {
    c->escaped.len = 0;
    if (prefix) ls_buf_append(&c->escaped, "\xe2\x96\x81", 3);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == ' ') ls_buf_append(&c->escaped, "\xe2\x96\x81", 3);
        else ls_buf_putc(&c->escaped, p[i]);
    }
    if (!c->escaped.len) return LS_OK;
    return ls_spm_fragment(c->t, c->escaped.data, c->escaped.len, &c->scratch, c->out);
}

// The longest special token whose text starts at p (leftmost-longest matching), or -1.
static int32_t special_at(const ls_tokenizer_t *t, const char *p, size_t n, bool parse_special) {
    for (int32_t k = 0; k < t->n_specials; k++) {
        int32_t id = t->specials[k];
        uint8_t ty = t->types[id];
        if (!parse_special && ty != LS_TOKEN_USER_DEFINED) continue;
        ls_str s = ls_tokenizer_text(t, id);
        if (s.len <= n && s.ptr[0] == p[0] && !memcmp(s.ptr, p, s.len)) return id;
    }
    return -1;
}

// Raw text between special tokens (or the text ends). SentencePiece gives every non-empty
// fragment its dummy prefix: each one starts the text or follows a special token.
static ls_status raw_fragment(tok_ctx *c, const char *p, size_t n) {
    if (!n) return LS_OK;
    if (c->t->model == LS_TOK_BPE) return bpe_fragment(c, p, n);
    bool prefix = c->t->add_space_prefix && !c->continuation;
    c->continuation = false; // only the text's first fragment continues earlier text
    return spm_fragment(c, p, n, prefix);
}

static ls_status tokenize_text(tok_ctx *c, const char *text, size_t len, bool parse_special) {
    const ls_tokenizer_t *t = c->t;
    bool first_byte[256] = {0};
    for (int32_t k = 0; k < t->n_specials; k++)
        first_byte[(uint8_t)ls_tokenizer_text(t, t->specials[k]).ptr[0]] = true;
    size_t frag = 0;
    for (size_t i = 0; i < len;) {
        int32_t id = first_byte[(uint8_t)text[i]] ? special_at(t, text + i, len - i, parse_special) : -1;
        if (id < 0) {
            i++;
            continue;
        }
        LS_CHECK(raw_fragment(c, text + frag, i - frag));
        ls_vec_i32_push(c->out, id);
        i += ls_tokenizer_text(t, id).len;
        frag = i;
    }
    return raw_fragment(c, text + frag, len - frag);
}

static ls_status tokenize(const ls_tokenizer_t *t, const char *text, size_t len, bool add_special,
                          bool parse_special, bool continuation, ls_vec_i32 *out) {
    if (len >= UINT32_MAX)
        return LS_ERR(LS_ERR_RANGE, "text of %zu bytes is too long to tokenize in one call (limit 4 GiB)", len);
    if (add_special && t->add_bos && t->bos >= 0) ls_vec_i32_push(out, t->bos);
    tok_ctx c = {.t = t, .out = out, .continuation = continuation};
    ls_status rc = tokenize_text(&c, text, len, parse_special);
    if (c.scratch.dropped)
        LS_WARN("tokenize: %zu byte(s) have no token in this vocabulary and were dropped (the first is 0x%02x)",
                c.scratch.dropped, c.scratch.first_dropped);
    ls_free(c.units);
    ls_merge_scratch_free(&c.scratch);
    ls_buf_free(&c.escaped);
    LS_CHECK(rc);
    if (add_special && t->add_eos && t->eos >= 0) ls_vec_i32_push(out, t->eos);
    return LS_OK;
}

ls_status ls_tokenize(const ls_tokenizer_t *t, const char *text, size_t len, bool add_special,
                      bool parse_special, ls_vec_i32 *out) {
    return tokenize(t, text, len, add_special, parse_special, false, out);
}

ls_status ls_tokenize_more(const ls_tokenizer_t *t, const char *text, size_t len, bool parse_special,
                           ls_vec_i32 *out) {
    return tokenize(t, text, len, false, parse_special, true, out);
}

// --- detokenize ---------------------------------------------------------------------------

static void spm_unescape(ls_str s, ls_buf *out) {
    for (uint64_t i = 0; i < s.len; i++) {
        if (i + 2 < s.len && !memcmp(s.ptr + i, "\xe2\x96\x81", 3)) {
            ls_buf_putc(out, ' ');
            i += 2;
        } else {
            ls_buf_putc(out, s.ptr[i]);
        }
    }
}

static int hex_digit(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

ls_status ls_token_to_bytes(const ls_tokenizer_t *t, int32_t id, bool special, ls_buf *out) {
    if (id < 0 || id >= t->n_vocab)
        return LS_ERR(LS_ERR_INVALID, "token id %d is outside the vocabulary (0..%d)", id, t->n_vocab - 1);
    ls_str s = ls_tokenizer_text(t, id);
    switch ((ls_token_type)t->types[id]) {
    case LS_TOKEN_CONTROL:
    case LS_TOKEN_UNKNOWN:
        if (special) ls_buf_append(out, s.ptr, s.len);
        return LS_OK;
    case LS_TOKEN_UNUSED:
        return LS_OK;
    case LS_TOKEN_USER_DEFINED:
        ls_buf_append(out, s.ptr, s.len);
        return LS_OK;
    case LS_TOKEN_BYTE:
        if (t->model == LS_TOK_SPM && s.len == 6 && hex_digit(s.ptr[3]) >= 0 && hex_digit(s.ptr[4]) >= 0) {
            ls_buf_putc(out, (char)(hex_digit(s.ptr[3]) << 4 | hex_digit(s.ptr[4])));
            return LS_OK;
        }
        break;
    default:
        break;
    }
    if (t->model == LS_TOK_BPE) ls_bpe_decode_text(s, out);
    else spm_unescape(s, out);
    return LS_OK;
}

ls_status ls_detokenize(const ls_tokenizer_t *t, const int32_t *ids, size_t n, bool special,
                        ls_buf *out) {
    size_t start = out->len;
    for (size_t i = 0; i < n; i++) {
        size_t before = out->len;
        LS_CHECK(ls_token_to_bytes(t, ids[i], special, out));
        // SentencePiece: drop the dummy-prefix space the tokenizer added before the text.
        if (i == 0 && t->model == LS_TOK_SPM && t->add_space_prefix && out->len > before &&
            out->data[before] == ' ' && before == start) {
            memmove(out->data + before, out->data + before + 1, out->len - before - 1);
            out->data[--out->len] = 0;
        }
    }
    return LS_OK;
}
