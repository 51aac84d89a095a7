// mapreduce.c — chunking a document and planning the combine levels of map-reduce
// summarization (the hierarchical method of Wu et al. 2021, "Recursively Summarizing Books";
// docs/architecture.md ("Long documents")). Test: tests/unit/test_mapreduce.c.
#include "ls_mapreduce.h"

#include <string.h>

static bool is_ws(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static bool is_cont(char c) { return ((unsigned char)c & 0xC0) == 0x80; } // a UTF-8 continuation byte

// After a sentence's final mark: closing quotes and brackets (ASCII, and ’ ” as UTF-8).
static size_t skip_closers(const char *t, size_t len, size_t r) {
    for (;;) {
        if (r < len && (t[r] == '"' || t[r] == '\'' || t[r] == ')' || t[r] == ']')) r++;
        else if (r + 2 < len && (unsigned char)t[r] == 0xE2 && (unsigned char)t[r + 1] == 0x80 &&
                 ((unsigned char)t[r + 2] == 0x99 || (unsigned char)t[r + 2] == 0x9D)) r += 3;
        else return r;
    }
}

// Is p (0 < p < len) a cut of this kind? 0 paragraph break, 1 sentence end, 2 line break,
// 3 whitespace, 4 character boundary.
static bool is_cut(const char *t, size_t len, size_t p, int kind) {
    switch (kind) {
    case 0: return t[p - 1] == '\n' && p >= 2 && (t[p - 2] == '\n' || (t[p - 2] == '\r' && p >= 3 && t[p - 3] == '\n'));
    case 1: {
        if (!is_ws(t[p])) return false;
        size_t q = p; // back over closers to the mark
        while (q > 0 && (t[q - 1] == '"' || t[q - 1] == '\'' || t[q - 1] == ')' || t[q - 1] == ']' || is_cont(t[q - 1]) ||
                         (unsigned char)t[q - 1] == 0xE2))
            q--;
        return q > 0 && (t[q - 1] == '.' || t[q - 1] == '!' || t[q - 1] == '?') && skip_closers(t, len, q) == p;
    }
    case 2: return t[p - 1] == '\n';
    case 3: return is_ws(t[p - 1]);
    default: return !is_cont(t[p]);
    }
}

// The end of the chunk that starts at pos (pos + max < len): the best cut in (pos + max/2, pos + max].
static size_t best_cut(const char *t, size_t len, size_t pos, size_t max) {
    size_t lo = pos + max / 2, hi = pos + max;
    for (int kind = 0; kind <= 4; kind++)
        for (size_t p = hi; p > lo; p--)
            if (is_cut(t, len, p, kind)) return p;
    return hi; // unreachable: a character boundary is within 3 bytes of hi
}

// Where the next chunk starts when it may reach back to `from` (< end): the first sentence start,
// else word start, else character boundary at or after it.
static size_t overlap_start(const char *t, size_t len, size_t from, size_t end) {
    for (int kind = 1; kind <= 4; kind++)
        for (size_t p = from; p < end; p++)
            if (p > 0 && is_cut(t, len, p, kind)) return p;
    return end;
}

ls_status ls_mr_split(const char *text, size_t len, size_t max_bytes, size_t overlap_bytes, ls_span **spans, size_t *n) {
    *spans = NULL, *n = 0;
    if (max_bytes < LS_MR_MIN_BYTES)
        return LS_ERR(LS_ERR_INVALID, "a chunk of %zu bytes is too small to split a text into (at least %d)", max_bytes,
                      LS_MR_MIN_BYTES);
    if (overlap_bytes > max_bytes / 4)
        return LS_ERR(LS_ERR_INVALID, "an overlap of %zu bytes is more than a quarter of the chunk's %zu", overlap_bytes,
                      max_bytes);
    size_t cap = 0, pos = 0;
    for (;;) {
        while (pos < len && is_ws(text[pos])) pos++;
        if (pos >= len) break;
        size_t end = len - pos <= max_bytes ? len : best_cut(text, len, pos, max_bytes);
        if (*n == cap) *spans = ls_realloc(*spans, (cap = cap ? 2 * cap : 16) * sizeof **spans);
        (*spans)[(*n)++] = (ls_span){pos, end};
        if (end == len) break;
        size_t next = overlap_bytes ? overlap_start(text, len, end - overlap_bytes, end) : end;
        pos = next > pos ? next : end; // (always: end - overlap > pos + max/4)
    }
    return LS_OK;
}

size_t ls_mr_utf8_prefix(const char *text, size_t len, size_t max) {
    if (len <= max) return len;
    size_t p = max;
    while (p > 0 && is_cont(text[p])) p--;
    return p;
}

ls_status ls_mr_group(const size_t *lens, size_t n, size_t budget, size_t max_items, size_t *group_end, size_t *n_groups) {
    *n_groups = 0;
    if (max_items == 1) return LS_ERR(LS_ERR_INVALID, "a combine call of one summary would never end the levels");
    size_t used = 0, count = 0;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > budget / 2)
            return LS_ERR(LS_ERR_INVALID, "summary %zu is %zu bytes, more than half the combine budget of %zu", i + 1,
                          lens[i], budget);
        if (count && (used + lens[i] > budget || count == max_items)) group_end[(*n_groups)++] = i, used = 0, count = 0;
        used += lens[i], count++;
    }
    if (count) group_end[(*n_groups)++] = n;
    return LS_OK;
}

void ls_mr_chunk_request(size_t i, size_t n, ls_buf *out) {
    ls_buf_printf(out, "The text above is part %zu of %zu of a longer document. Summarize this part in a few sentences, "
                       "naming the people, places and events in it.", i + 1, n);
}

void ls_mr_part_heading(size_t first, size_t last, size_t n, ls_buf *out) {
    if (first == last) ls_buf_printf(out, "Part %zu of %zu", first + 1, n);
    else ls_buf_printf(out, "Parts %zu-%zu of %zu", first + 1, last + 1, n);
}

void ls_mr_combine_request(size_t first, size_t last, size_t n, const char *user, ls_buf *out) {
    bool whole = first == 0 && last + 1 == n;
    if (whole && user && *user) {
        ls_buf_printf(out, "The text above is a series of summaries of the consecutive parts of one document, in "
                           "order. %s", user);
        return;
    }
    ls_buf_printf(out, "The text above is a series of summaries of consecutive parts of one document, in order. Write one "
                       "summary of %s", whole ? "the whole document" : "these parts");
    if (!whole) ls_buf_printf(out, " (parts %zu to %zu of %zu)", first + 1, last + 1, n);
    ls_buf_printf(out, " in a few sentences, keeping that order and naming the main people, places and events of every part.");
}
