// spm.c — SentencePiece BPE (tokenizer.ggml.model = llama). The fragment (dummy prefix added,
// spaces already turned into U+2581) starts as one symbol per UTF-8 character; the adjacent
// pair whose concatenation is the vocabulary token with the highest score is merged first
// (ties: the leftmost). Symbols that are not tokens fall back to <0xNN> byte tokens.
// Docs: docs/formats.md §4.5. Tests: tests/oracle/test_tokenizer.py (against
// the sentencepiece library on a model trained by the test).
#include "tokenizer_impl.h"

#include <string.h>
#include <utf8proc.h>

// Float -> uint32 with the same order, then inverted so that higher scores sort first.
static uint32_t score_key(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ~u;
}

static void try_pair(const ls_tokenizer_t *t, const char *p, merge_scratch *s, int32_t left,
                     int32_t right) {
    if (left < 0 || right < 0) return;
    const struct merge_sym *l = &s->syms[left], *r = &s->syms[right];
    int64_t id;
    if (!ls_strmap_get(t->vocab, p + l->start, l->len + r->len, &id)) return;
    float score = t->scores ? t->scores[id] : 0.0f;
    ls_merge_push(s, (struct merge_cand){.key = (uint64_t)score_key(score) << 32 | (uint32_t)left,
                                         .left = left, .right = right, .merged = (int32_t)id,
                                         .size = l->len + r->len});
}

static ls_status emit_symbol(const ls_tokenizer_t *t, const char *p, uint32_t len, ls_vec_i32 *out) {
    int64_t id;
    if (ls_strmap_get(t->vocab, p, len, &id)) {
        ls_vec_i32_push(out, (int32_t)id);
        return LS_OK;
    }
    for (uint32_t i = 0; i < len; i++) { // byte fallback
        int32_t b = t->spm_byte_token[(uint8_t)p[i]];
        if (b < 0) b = t->unk;
        if (b < 0)
            return LS_ERR(LS_ERR_UNSUPPORTED, "byte 0x%02x has no <0x%02X> token and the vocabulary has no unknown token",
                          (uint8_t)p[i], (uint8_t)p[i]);
        ls_vec_i32_push(out, b);
    }
    return LS_OK;
}

ls_status ls_spm_fragment(const ls_tokenizer_t *t, const char *p, size_t n, merge_scratch *s,
                          ls_vec_i32 *out) {
    // One symbol per character (an invalid byte is a character of its own).
    size_t n_chars = 0;
    ls_merge_init(s, n);
    for (size_t i = 0; i < n; n_chars++) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const uint8_t *)p + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) k = 1;
        s->syms[n_chars] = (struct merge_sym){.start = (uint32_t)i, .len = (uint32_t)k,
                                              .prev = (int32_t)n_chars - 1, .next = (int32_t)n_chars + 1};
        i += (size_t)k;
    }
    if (n_chars == 0) return LS_OK;
    s->syms[n_chars - 1].next = -1;
    for (size_t i = 0; i + 1 < n_chars; i++) try_pair(t, p, s, (int32_t)i, (int32_t)i + 1);
    while (s->heap_len) {
        struct merge_cand c = ls_merge_pop(s);
        struct merge_sym *l = &s->syms[c.left], *r = &s->syms[c.right];
        if (l->len == 0 || r->len == 0 || l->next != c.right || l->len + r->len != c.size)
            continue; // stale
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) s->syms[r->next].prev = c.left;
        try_pair(t, p, s, l->prev, c.left);
        try_pair(t, p, s, c.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = s->syms[i].next)
        LS_CHECK(emit_symbol(t, p + s->syms[i].start, s->syms[i].len, out));
    return LS_OK;
}
