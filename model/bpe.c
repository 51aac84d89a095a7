// bpe.c — byte-level BPE (tokenizer.ggml.model = gpt2): the byte <-> unicode table, the merge
// table and the merge loop. Each piece's bytes start as one symbol per byte; the adjacent
// pair with the lowest merge rank is merged first (ties: the leftmost), until no pair is in
// the merge table. Symbols are vocabulary ids, plus ids past the vocabulary for strings that
// occur only inside merges, so pairs are looked up by two integers.
// Docs: docs/formats.md §4.3. Tests: tests/oracle/test_tokenizer.py.
#include "tokenizer_impl.h"

#include <string.h>

// byte -> code point: printable Latin-1 bytes map to themselves, the 68 others to U+0100...
static uint32_t g_byte_cp[256];
static int16_t g_cp_byte[0x144]; // inverse, -1 where no byte maps

static void init_byte_tables(void) {
    if (g_byte_cp['!']) return; // already built (idempotent; same values every time)
    uint32_t next = 0x100;
    for (int c = 0; c < 0x144; c++) g_cp_byte[c] = -1;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        g_byte_cp[b] = keep ? (uint32_t)b : next++;
        g_cp_byte[g_byte_cp[b]] = (int16_t)b;
    }
}

// Appends the byte-level characters for bytes p[0..n) (1 or 2 UTF-8 bytes each).
static void bytes_to_chars(const char *p, size_t n, ls_buf *out) {
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = g_byte_cp[(uint8_t)p[i]];
        char u[2];
        if (cp < 0x80) {
            ls_buf_putc(out, (char)cp);
        } else {
            u[0] = (char)(0xC0 | (cp >> 6));
            u[1] = (char)(0x80 | (cp & 0x3F));
            ls_buf_append(out, u, 2);
        }
    }
}

void ls_bpe_decode_text(ls_str text, ls_buf *out) {
    init_byte_tables();
    const uint8_t *s = (const uint8_t *)text.ptr;
    for (uint64_t i = 0; i < text.len;) {
        uint32_t cp = s[i];
        uint64_t k = 1;
        if (cp >= 0xC0 && cp < 0xE0 && i + 1 < text.len) {
            cp = (cp & 0x1F) << 6 | (s[i + 1] & 0x3F);
            k = 2;
        }
        if (cp < 0x144 && g_cp_byte[cp] >= 0 && (k == 2 || cp < 0x80)) ls_buf_putc(out, (char)g_cp_byte[cp]);
        else ls_buf_append(out, s + i, k); // not a byte-level character: keep its bytes
        i += k;
    }
}

// --- setup --------------------------------------------------------------------------------

typedef struct sym_table {
    const ls_tokenizer_t *t;
    ls_strmap *extra; // strings not in the vocabulary -> ids from n_vocab up
} sym_table;

static int64_t sym_of(sym_table *st, const char *s, size_t n) {
    int64_t id;
    if (ls_strmap_get(st->t->vocab, s, n, &id)) return id;
    if (ls_strmap_get(st->extra, s, n, &id)) return id;
    id = st->t->n_vocab + (int64_t)ls_strmap_count(st->extra);
    ls_strmap_put(st->extra, s, n, id);
    return id;
}

static ls_status add_merges(ls_tokenizer_t *t, const ls_gguf_arr *m, sym_table *st) {
    ls_buf both = {0};
    ls_status rc = LS_OK;
    for (uint64_t i = 0; i < m->count && rc == LS_OK; i++) {
        ls_str s = ls_gguf_arr_str(m, i);
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        if (!sp || sp + 1 == s.ptr + s.len) {
            rc = LS_ERR(LS_ERR_FORMAT, "tokenizer.ggml.merges[%llu] = \"%.*s\" is not two strings separated by a space",
                        (unsigned long long)i, (int)(s.len > 60 ? 60 : s.len), s.ptr);
            break;
        }
        size_t la = (size_t)(sp - s.ptr), lb = s.len - la - 1;
        both.len = 0;
        ls_buf_append(&both, s.ptr, la);
        ls_buf_append(&both, sp + 1, lb);
        int64_t a = sym_of(st, s.ptr, la), b = sym_of(st, sp + 1, lb), ab = sym_of(st, both.data, both.len);
        if (ab > INT32_MAX) {
            rc = LS_ERR(LS_ERR_RANGE, "too many distinct merge strings");
            break;
        }
        uint64_t key = (uint64_t)a << 32 | (uint64_t)b, have;
        if (!ls_u64map_get(t->pairs, key, &have)) ls_u64map_put(t->pairs, key, i << 32 | (uint64_t)ab);
    }
    ls_buf_free(&both);
    return rc;
}

ls_status ls_bpe_init(ls_tokenizer_t *t, const ls_gguf_t *g) {
    init_byte_tables();
    ls_gguf_arr m;
    ls_status rc = ls_gguf_get_arr(g, "tokenizer.ggml.merges", &m);
    if (rc == LS_ERR_NOT_FOUND)
        return LS_ERR(LS_ERR_FORMAT, "byte-level BPE tokenizer without tokenizer.ggml.merges");
    LS_CHECK(rc);
    if (m.type != LS_GGUF_STRING)
        return LS_ERR(LS_ERR_FORMAT, "tokenizer.ggml.merges must be an array of strings, not %s",
                      ls_gguf_vtype_name(m.type));
    if (m.count >= (1ull << 31))
        return LS_ERR(LS_ERR_RANGE, "tokenizer.ggml.merges has %llu entries", (unsigned long long)m.count);
    t->n_merges = (int64_t)m.count;
    t->pairs = ls_u64map_init(m.count);
    sym_table st = {t, ls_strmap_init(1024)};
    rc = add_merges(t, &m, &st);
    for (int b = 0; b < 256 && rc == LS_OK; b++) {
        ls_buf ch = {0};
        bytes_to_chars((const char *)&(uint8_t){(uint8_t)b}, 1, &ch);
        int64_t id;
        t->byte_token[b] = ls_strmap_get(t->vocab, ch.data, ch.len, &id) ? (int32_t)id : -1;
        t->byte_sym[b] = (int32_t)sym_of(&st, ch.data, ch.len);
        ls_buf_free(&ch);
    }
    ls_strmap_free(st.extra);
    return rc;
}

void ls_bpe_free(ls_tokenizer_t *t) { ls_u64map_free(t->pairs); }

// --- the merge loop -----------------------------------------------------------------------

void ls_merge_scratch_free(merge_scratch *s) {
    ls_free(s->syms);
    ls_free(s->heap);
    ls_buf_free(&s->chars);
    *s = (merge_scratch){0};
}

void ls_merge_push(merge_scratch *s, struct merge_cand c) {
    if (s->heap_len == s->heap_cap) {
        s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 64;
        s->heap = ls_realloc(s->heap, s->heap_cap * sizeof *s->heap);
    }
    size_t i = s->heap_len++;
    while (i > 0 && s->heap[(i - 1) / 2].key > c.key) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = c;
}

struct merge_cand ls_merge_pop(merge_scratch *s) {
    struct merge_cand top = s->heap[0], last = s->heap[--s->heap_len];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->heap_len) break;
        if (c + 1 < s->heap_len && s->heap[c + 1].key < s->heap[c].key) c++;
        if (s->heap[c].key >= last.key) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->heap_len) s->heap[i] = last;
    return top;
}

// Queues the pair (left, right) if the merge table has it. Lower key = earlier merge; the
// left index breaks ties.
static void try_pair(const ls_tokenizer_t *t, merge_scratch *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    int32_t a = s->syms[left].sym, b = s->syms[right].sym;
    uint64_t v;
    if (a < 0 || b < 0 || !ls_u64map_get(t->pairs, (uint64_t)a << 32 | (uint64_t)b, &v)) return;
    ls_merge_push(s, (struct merge_cand){.key = (v >> 32) << 32 | (uint32_t)left, .left = left,
                                     .right = right, .a = a, .b = b,
                                     .merged = (int32_t)(v & 0xffffffffu)});
}

void ls_merge_init(merge_scratch *s, size_t n) {
    if (s->syms_cap < n) {
        s->syms_cap = n;
        s->syms = ls_realloc(s->syms, n * sizeof *s->syms);
    }
    for (size_t i = 0; i < n; i++)
        s->syms[i] = (struct merge_sym){.start = (uint32_t)i, .len = 1, .prev = (int32_t)i - 1,
                                        .next = i + 1 < n ? (int32_t)i + 1 : -1};
    s->heap_len = 0;
}

// Emits the bytes of a symbol that is not a vocabulary token one byte-token at a time. A
// byte whose character is missing from the vocabulary (SmolLM2 lacks 0xC0, 0xC1, 0xF5-0xFF
// and a few control bytes) cannot be represented: like llama.cpp and Hugging Face, it is
// dropped, and counted so ls_tokenize can say so.
static void emit_bytes(const ls_tokenizer_t *t, const char *p, size_t n, merge_scratch *s,
                       ls_vec_i32 *out) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_token[(uint8_t)p[i]];
        if (id >= 0) {
            ls_vec_i32_push(out, id);
        } else if (s->dropped++ == 0) {
            s->first_dropped = (uint8_t)p[i];
        }
    }
}

ls_status ls_bpe_piece(const ls_tokenizer_t *t, const char *p, size_t n, merge_scratch *s,
                       ls_vec_i32 *out) {
    if (t->ignore_merges) { // llama-bpe: a piece that is a whole token is emitted as it is
        s->chars.len = 0;
        bytes_to_chars(p, n, &s->chars);
        int64_t id;
        if (ls_strmap_get(t->vocab, s->chars.data, s->chars.len, &id)) {
            ls_vec_i32_push(out, (int32_t)id);
            return LS_OK;
        }
    }
    ls_merge_init(s, n);
    for (size_t i = 0; i < n; i++) s->syms[i].sym = t->byte_sym[(uint8_t)p[i]];
    for (size_t i = 0; i + 1 < n; i++) try_pair(t, s, (int32_t)i, (int32_t)i + 1);
    while (s->heap_len) {
        struct merge_cand c = ls_merge_pop(s);
        struct merge_sym *l = &s->syms[c.left], *r = &s->syms[c.right];
        if (l->len == 0 || r->len == 0 || l->next != c.right || l->sym != c.a || r->sym != c.b)
            continue; // stale: one side has changed since this pair was queued
        l->sym = c.merged;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) s->syms[r->next].prev = c.left;
        try_pair(t, s, l->prev, c.left);
        try_pair(t, s, c.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = s->syms[i].next) {
        const struct merge_sym *m = &s->syms[i];
        if (m->sym >= 0 && m->sym < t->n_vocab) ls_vec_i32_push(out, m->sym);
        else emit_bytes(t, p + m->start, m->len, s, out);
    }
    return LS_OK;
}
