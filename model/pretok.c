// pretok.c — UTF-8 decoding into classified units and the pre-tokenizers of byte-level BPE,
// written as scanners instead of regexes (the same pieces as the regexes in
// docs/formats.md §4.4):
//   gpt-2:     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   smollm:    \p{N} isolated first, then gpt-2 on the rest
//   llama-bpe: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//              ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   qwen2:     llama-bpe with \p{N} (one digit a piece) for \p{N}{1,3}
// Letter/number/space classes come from utf8proc; \s is Unicode White_Space.
// Tests: tests/unit/test_tokenizer.c, tests/oracle/test_tokenizer.py.
#include "tokenizer_impl.h"

#include <utf8proc.h>

static uint8_t classify(uint32_t cp) {
    if (cp == UNIT_INVALID) return 0;
    if (cp < 0x80) { // fast path for ASCII
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CLS_LETTER;
        if (cp >= '0' && cp <= '9') return CLS_NUMBER;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CLS_SPACE;
        return 0;
    }
    if (cp == 0x85) return CLS_SPACE;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return CLS_LETTER;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return CLS_NUMBER;
    case UTF8PROC_CATEGORY_ZS: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP:
        return CLS_SPACE;
    default:
        return 0;
    }
}

size_t ls_utf8_units(const char *text, size_t len, text_unit **units, size_t *cap) {
    if (*cap < len + 1) {
        *cap = len + 1;
        *units = ls_realloc(*units, *cap * sizeof **units);
    }
    text_unit *u = *units;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0) { // invalid or truncated sequence: carry one byte
            cp = -1;
            k = 1;
        }
        u[n].cp = cp < 0 ? UNIT_INVALID : (uint32_t)cp;
        u[n].off = (uint32_t)i;
        u[n].len = (uint8_t)k;
        u[n].cls = classify(u[n].cp);
        n++;
        i += (size_t)k;
    }
    return n;
}

// --- scanners over units [pos, b) ---------------------------------------------------------

typedef struct span {
    const text_unit *u;
    size_t b; // end of the piece being scanned
} span;

static bool is_cls(const span *s, size_t i, uint8_t c) { return i < s->b && (s->u[i].cls & c); }
static bool is_other(const span *s, size_t i) { return i < s->b && s->u[i].cls == 0; }
static uint32_t cp_at(const span *s, size_t i) { return i < s->b ? s->u[i].cp : UNIT_INVALID; }
static uint32_t ascii_lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// 's 't 'm 'd (2 units) or 're 've 'll (3 units); 0 if none. fold: case-insensitive.
static size_t contraction(const span *s, size_t pos, bool fold) {
    if (cp_at(s, pos) != '\'') return 0;
    uint32_t c1 = cp_at(s, pos + 1), c2 = cp_at(s, pos + 2);
    if (fold) {
        c1 = ascii_lower(c1);
        c2 = ascii_lower(c2);
    }
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
    return 0;
}

// \s+(?!\S)|\s+ at pos: a whitespace run keeps its last character for the next piece when
// something follows it.
static size_t whitespace_end(const span *s, size_t pos) {
    size_t e = pos;
    while (is_cls(s, e, CLS_SPACE)) e++;
    if (e - pos > 1 && e < s->b) return e - 1;
    return e > pos ? e : pos + 1;
}

static size_t gpt2_piece_end(const span *s, size_t pos) {
    size_t k = contraction(s, pos, false);
    if (k) return pos + k;
    size_t start = pos + (cp_at(s, pos) == ' '); // ` ?` prefix
    size_t e = start;
    if (is_cls(s, start, CLS_LETTER)) {
        while (is_cls(s, e, CLS_LETTER)) e++;
        return e;
    }
    if (is_cls(s, start, CLS_NUMBER)) {
        while (is_cls(s, e, CLS_NUMBER)) e++;
        return e;
    }
    if (is_other(s, start)) {
        while (is_other(s, e)) e++;
        return e;
    }
    return whitespace_end(s, pos);
}

// Llama 3's regex, with runs of at most max_digits numbers (3; Qwen2: 1).
static size_t llama3_like(const span *s, size_t pos, size_t max_digits) {
    size_t k = contraction(s, pos, true);
    if (k) return pos + k;
    uint32_t c = cp_at(s, pos);
    size_t e;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (c != '\r' && c != '\n' && !is_cls(s, pos, CLS_NUMBER) &&
        (is_cls(s, pos, CLS_LETTER) || is_cls(s, pos + 1, CLS_LETTER))) {
        e = pos + 1;
        while (is_cls(s, e, CLS_LETTER)) e++;
        return e;
    }
    // \p{N}{1,3} (Qwen2: \p{N})
    if (is_cls(s, pos, CLS_NUMBER)) {
        e = pos;
        while (e - pos < max_digits && is_cls(s, e, CLS_NUMBER)) e++;
        return e;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    size_t start = pos + (c == ' ');
    if (is_other(s, start)) {
        e = start;
        while (is_other(s, e)) e++;
        while (cp_at(s, e) == '\r' || cp_at(s, e) == '\n') e++;
        return e;
    }
    // \s*[\r\n]+ : through the last line break of the whitespace run
    size_t last_break = 0;
    for (e = pos; is_cls(s, e, CLS_SPACE); e++)
        if (cp_at(s, e) == '\r' || cp_at(s, e) == '\n') last_break = e + 1;
    if (last_break) return last_break;
    return whitespace_end(s, pos);
}

static size_t llama3_piece_end(const span *s, size_t pos) { return llama3_like(s, pos, 3); }
static size_t qwen2_piece_end(const span *s, size_t pos) { return llama3_like(s, pos, 1); }

static ls_status scan(size_t (*piece_end)(const span *, size_t), const text_unit *u, size_t a,
                      size_t b, piece_fn emit, void *ctx) {
    span s = {u, b};
    for (size_t pos = a; pos < b;) {
        size_t e = piece_end(&s, pos);
        LS_CHECK(emit(ctx, pos, e));
        pos = e;
    }
    return LS_OK;
}

ls_status ls_pretokenize(pretok_kind kind, const text_unit *u, size_t n, piece_fn emit, void *ctx) {
    if (kind == PRETOK_GPT2) return scan(gpt2_piece_end, u, 0, n, emit, ctx);
    if (kind == PRETOK_LLAMA3) return scan(llama3_piece_end, u, 0, n, emit, ctx);
    if (kind == PRETOK_QWEN2) return scan(qwen2_piece_end, u, 0, n, emit, ctx);
    // smollm: every number character is a piece of its own; gpt-2 runs between them.
    for (size_t i = 0; i < n;) {
        if (u[i].cls & CLS_NUMBER) {
            LS_CHECK(emit(ctx, i, i + 1));
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && !(u[j].cls & CLS_NUMBER)) j++;
        LS_CHECK(scan(gpt2_piece_end, u, i, j, emit, ctx));
        i = j;
    }
    return LS_OK;
}
