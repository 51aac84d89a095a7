// test_mapreduce.c — map-reduce summarization's pure parts (coordinator/mapreduce.c): chunks cut
// at paragraph and sentence ends in prose, at word and then character boundaries when a text
// has none (one giant sentence, no whitespace at all, CJK and emoji), never inside a UTF-8
// character, every chunk within its budget, the text covered in order with the overlap asked;
// the combine levels ending for any number of summaries, also when every summary comes back
// longer than its input and must be cut; the requests naming the part; bad budgets refused.
#include "ls_mapreduce.h"
#include "ls_test.h"

#include <stdlib.h>

static bool utf8_ok(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = s[i] < 0x80 ? 1 : (s[i] & 0xE0) == 0xC0 ? 2 : (s[i] & 0xF0) == 0xE0 ? 3 : (s[i] & 0xF8) == 0xF0 ? 4 : 0;
        if (!k || i + k > n) return false;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return false;
        i += k;
    }
    return true;
}

static bool is_ws(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// The checks every split must pass: in budget, valid UTF-8, starts increasing, no gap (every
// byte not covered is whitespace), overlap at most as asked.
static void check_split(const char *what, const char *t, size_t len, size_t max, size_t overlap, const ls_span *sp,
                        size_t n) {
    size_t covered = 0;
    bool ok_budget = true, ok_utf8 = true, ok_order = true, ok_gap = true, ok_overlap = true;
    for (size_t i = 0; i < n; i++) {
        ok_budget &= sp[i].end - sp[i].start <= max && sp[i].end > sp[i].start;
        ok_utf8 &= utf8_ok((const unsigned char *)t + sp[i].start, sp[i].end - sp[i].start);
        if (i) ok_order &= sp[i].start > sp[i - 1].start && sp[i].end > sp[i - 1].end;
        if (i) ok_overlap &= sp[i].start + overlap >= sp[i - 1].end;
        for (size_t p = covered; p < sp[i].start; p++) ok_gap &= is_ws(t[p]);
        if (sp[i].end > covered) covered = sp[i].end;
    }
    for (size_t p = covered; p < len; p++) ok_gap &= is_ws(t[p]);
    TEST_COND(ok_budget, "%s: a chunk is empty or over %zu bytes", what, max);
    TEST_COND(ok_utf8, "%s: a chunk is not valid UTF-8 (cut inside a character)", what);
    TEST_COND(ok_order, "%s: chunks do not progress", what);
    TEST_COND(ok_gap, "%s: text left out between chunks", what);
    TEST_COND(ok_overlap, "%s: a chunk reaches back more than the overlap of %zu", what, overlap);
}

static void split(const char *what, const char *t, size_t len, size_t max, size_t overlap, ls_span **sp, size_t *n) {
    ls_status rc = ls_mr_split(t, len, max, overlap, sp, n);
    TEST_COND(rc == LS_OK, "%s: %s", what, ls_err_msg());
    check_split(what, t, len, max, overlap, *sp, *n);
}

// Prose in paragraphs: every cut but the last at a paragraph break or a sentence's end.
static void test_prose(void) {
    ls_buf b = {0};
    for (int p = 0; p < 40; p++) {
        for (int s = 0; s < 3 + p % 5; s++)
            ls_buf_printf(&b, "And the %d%s man said unto him, \"Go thy way%s\" ", p * 7 + s, s % 2 ? "th" : "",
                          s % 3 == 0 ? "!" : s % 3 == 1 ? "." : "?");
        ls_buf_printf(&b, "So it was.\n\n");
    }
    for (size_t max = 200; max <= 2000; max += 450)
        for (size_t ov = 0; ov <= max / 4; ov += max / 8) {
            ls_span *sp;
            size_t n;
            split("prose", b.data, b.len, max, ov, &sp, &n);
            TEST_COND(n >= b.len / max, "prose: %zu chunks for %zu bytes of %zu", n, b.len, max);
            bool ends = true, starts = true;
            for (size_t i = 0; i + 1 < n; i++) {
                const char *e = b.data + sp[i].end;
                ends &= (e[-1] == '\n' && e[-2] == '\n') || ((e[-1] == '.' || e[-1] == '!' || e[-1] == '?' || e[-1] == '"') && is_ws(e[0]));
            }
            for (size_t i = 1; i < n; i++) starts &= !is_ws(b.data[sp[i].start]) && is_ws(b.data[sp[i].start - 1]);
            TEST_COND(ends, "prose max %zu overlap %zu: a chunk ends inside a sentence", max, ov);
            TEST_COND(starts, "prose max %zu overlap %zu: a chunk starts inside a word", max, ov);
            ls_free(sp);
        }
    ls_buf_free(&b);
}

// No sentence ends: words; no whitespace: characters; multi-byte text with no spaces.
static void test_pathological(void) {
    ls_buf words = {0}, solid = {0}, cjk = {0};
    for (int i = 0; i < 3000; i++) ls_buf_printf(&words, "word%d ", i);
    for (int i = 0; i < 20000; i++) ls_buf_putc(&solid, (char)('a' + i % 26));
    for (int i = 0; i < 5000; i++) ls_buf_printf(&cjk, "%s", i % 3 == 0 ? "\xe4\xb8\xad" : i % 3 == 1 ? "\xf0\x9f\x98\x80" : "\xc3\xa9");
    ls_span *sp;
    size_t n;
    split("one giant sentence", words.data, words.len, 500, 100, &sp, &n);
    bool at_space = true;
    for (size_t i = 0; i + 1 < n; i++) at_space &= words.data[sp[i].end - 1] == ' ';
    TEST_COND(at_space, "one giant sentence: a cut inside a word");
    ls_free(sp);
    split("no whitespace", solid.data, solid.len, 64, 16, &sp, &n);
    TEST_COND(n >= 20000 / 64, "no whitespace: %zu chunks", n);
    ls_free(sp);
    for (size_t max = 64; max < 80; max++) { // every alignment of the budget against 2-, 3- and 4-byte characters
        split("multi-byte, no spaces", cjk.data, cjk.len, max, max / 4, &sp, &n);
        ls_free(sp);
    }
    split("empty", "", 0, 100, 0, &sp, &n);
    TEST_COND(n == 0, "an empty text gave %zu chunks", n);
    ls_free(sp);
    split("whitespace only", " \n\n\t ", 5, 100, 0, &sp, &n);
    TEST_COND(n == 0, "a blank text gave %zu chunks", n);
    ls_free(sp);
    ls_buf_free(&words), ls_buf_free(&solid), ls_buf_free(&cjk);
}

// Random valid UTF-8 with random whitespace and marks, random budgets.
static void test_random(void) {
    srand(19);
    static const char *pieces[] = {"a", "bc", ". ", "! ", "\n", "\n\n", " ", "\xc3\xa9", "\xe2\x80\x9d", "\xf0\x9f\x98\x80", ".\"", "?\xe2\x80\x99 "};
    for (int trial = 0; trial < 200; trial++) {
        ls_buf b = {0};
        int count = rand() % 3000;
        for (int i = 0; i < count; i++) ls_buf_printf(&b, "%s", pieces[rand() % 12]);
        size_t max = LS_MR_MIN_BYTES + (size_t)(rand() % 700), ov = (size_t)rand() % (max / 4 + 1);
        ls_span *sp;
        size_t n;
        split("random", b.data ? b.data : "", b.len, max, ov, &sp, &n);
        ls_free(sp);
        ls_buf_free(&b);
    }
}

// The combine levels: n summaries become one in at most log2(n) + 1 levels, whatever their
// lengths; every summary a combine returns is as long as the whole budget (longer than its
// input), so it must be cut to half the budget before the next level.
static void test_levels(void) {
    srand(7);
    for (int trial = 0; trial < 300; trial++) {
        size_t n = 1 + (size_t)(rand() % 2000), budget = 200 + (size_t)(rand() % 5000), most = trial % 3 ? 0 : 2 + (size_t)(rand() % 4);
        size_t *lens = ls_malloc(n * sizeof *lens), *ends = ls_malloc(n * sizeof *ends);
        for (size_t i = 0; i < n; i++) lens[i] = 1 + (size_t)rand() % (budget / 2);
        int levels = 0, bound = 1;
        while ((size_t)1 << bound < n) bound++;
        bool fewer = true;
        while (n > 1 && levels <= bound + 1) {
            size_t g;
            ls_status rc = ls_mr_group(lens, n, budget, most, ends, &g);
            TEST_COND(rc == LS_OK, "%s", ls_err_msg());
            fewer &= g < n;
            for (size_t i = 0; i < g; i++) {
                size_t first = i ? ends[i - 1] : 0, sum = 0;
                for (size_t j = first; j < ends[i]; j++) sum += lens[j];
                if (ends[i] - first > 1) TEST_COND(sum <= budget, "a group of %zu bytes over %zu", sum, budget);
                if (i + 1 < g) TEST_COND(ends[i] - first >= 2, "group %zu of %zu holds one item", i, g);
                if (most) TEST_COND(ends[i] - first <= most, "a group of %zu items over %zu", ends[i] - first, most);
                lens[i] = ends[i] - first == 1 ? lens[first] : budget / 2; // "longer than its input", cut
            }
            n = g, levels++;
        }
        TEST_COND(n == 1 && fewer, "trial %d: %zu summaries left after %d levels (bound %d)", trial, n, levels, bound + 1);
        ls_free(lens), ls_free(ends);
    }
    size_t big[] = {10, 300}, ends[2], g;
    TEST_ERR(ls_mr_group(big, 2, 400, 0, ends, &g), LS_ERR_INVALID, "more than half the combine budget");
    TEST_ERR(ls_mr_group(big, 2, 1000, 1, ends, &g), LS_ERR_INVALID, "never end");
}

static void test_cut_and_requests(void) {
    const char *s = "ab\xe4\xb8\xad" "cd";
    TEST_COND(ls_mr_utf8_prefix(s, 7, 3) == 2 && ls_mr_utf8_prefix(s, 7, 4) == 2 && ls_mr_utf8_prefix(s, 7, 5) == 5 &&
                  ls_mr_utf8_prefix(s, 7, 99) == 7,
              "UTF-8 prefix");
    ls_buf b = {0};
    ls_mr_chunk_request(2, 12, &b);
    TEST_COND(strstr(b.data, "part 3 of 12"), "chunk request: %s", b.data);
    ls_buf_clear(&b);
    ls_mr_part_heading(0, 3, 12, &b);
    TEST_COND(!strcmp(b.data, "Parts 1-4 of 12"), "heading: %s", b.data);
    ls_buf_clear(&b);
    ls_mr_combine_request(4, 7, 12, "ignored here", &b);
    TEST_COND(strstr(b.data, "parts 5 to 8 of 12") && strstr(b.data, "in order") && !strstr(b.data, "ignored"), "combine: %s", b.data);
    ls_buf_clear(&b);
    ls_mr_combine_request(0, 11, 12, "List the books.", &b);
    TEST_COND(strstr(b.data, "List the books."), "final combine with the user's request: %s", b.data);
    ls_buf_free(&b);
    ls_span *sp;
    size_t n;
    TEST_ERR(ls_mr_split("abc", 3, 10, 0, &sp, &n), LS_ERR_INVALID, "too small");
    TEST_ERR(ls_mr_split("abc", 3, 100, 26, &sp, &n), LS_ERR_INVALID, "more than a quarter");
}

int main(void) {
    test_prose();
    test_pathological();
    test_random();
    test_levels();
    test_cut_and_requests();
    return TEST_REPORT("test_mapreduce");
}
