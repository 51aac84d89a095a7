// test_attn_rules.c — the attention rules' key ranges against first-principles definitions:
// s2 as "same group and not in the future" with LongLoRA's group boundaries (kG for the first
// half of the heads, s + kG after a first group [0, s) for the second, s = floor(G/2), no
// wrap-around, partial last groups, odd head counts split at floor(H/2)); sink as the keys a
// StreamingLLM evicting cache (S sinks + the last W tokens, then the query) holds when each
// query arrives, simulated token by token; window as the W predecessors; and the errors.
#include "ls_kernels.h"
#include "ls_test.h"

#include <stdlib.h>

static bool in_ranges(const ls_attn_rule *r, int64_t i, int h, int64_t j) {
    int64_t lo[2], hi[2];
    int n = ls_attn_ranges(r, i, h, lo, hi);
    for (int k = 0; k < n; k++)
        if (j >= lo[k] && j <= hi[k]) return true;
    return false;
}

// LongLoRA's group of position x for head h: -1 for the shifted half's first group [0, s).
static int64_t s2_group(int64_t x, int h, int n_head, int64_t g) {
    int64_t s = g / 2;
    if (h < n_head / 2) return x / g;
    return x < s ? -1 : (x - s) / g;
}

static void test_s2(void) {
    static const int heads[] = {8, 9, 1, 2};
    static const int64_t groups[] = {2, 3, 8, 13, 64};
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 5; b++) {
            ls_attn_rule r = {.kind = LS_ATTN_S2, .group = groups[b], .n_head = heads[a]};
            int bad = 0;
            for (int h = 0; h < heads[a]; h++)
                for (int64_t i = 0; i < 5 * groups[b] + 3; i++)
                    for (int64_t j = 0; j <= i + 2; j++) {
                        bool want = j <= i && s2_group(j, h, heads[a], groups[b]) == s2_group(i, h, heads[a], groups[b]);
                        bad += in_ranges(&r, i, h, j) != want;
                    }
            TEST_COND(bad == 0, "s2 H=%d G=%lld: %d visibility mismatches", heads[a], (long long)groups[b], bad);
        }
    // SmolLM2: 9 heads; heads 0..3 unshifted, 4..8 shifted.
    ls_attn_rule r = {.kind = LS_ATTN_S2, .group = 8, .n_head = 9};
    int64_t lo[2], hi[2];
    ls_attn_ranges(&r, 13, 3, lo, hi);
    TEST_COND(lo[0] == 8 && hi[0] == 13, "head 3 is unshifted: [8, 13]");
    ls_attn_ranges(&r, 13, 4, lo, hi);
    TEST_COND(lo[0] == 12 && hi[0] == 13, "head 4 is shifted by 4: [12, 13]");
    ls_attn_ranges(&r, 3, 8, lo, hi);
    TEST_COND(lo[0] == 0 && hi[0] == 3, "no wrap-around: the first shifted group is [0, 4)");
}

// Token-by-token StreamingLLM cache: after each token it keeps the first S and the last W.
static void test_sink(void) {
    static const int64_t sinks[] = {0, 1, 4}, windows[] = {1, 5, 16};
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < 3; b++) {
            int64_t S = sinks[a], W = windows[b], n = S + W + 40;
            ls_attn_rule r = {.kind = LS_ATTN_SINK, .sinks = S, .window = W};
            bool *cached = calloc((size_t)n, 1);
            int bad = 0;
            for (int64_t i = 0; i < n; i++) {
                for (int64_t j = 0; j < n; j++) bad += in_ranges(&r, i, 0, j) != (j == i || (j < i && cached[j]));
                cached[i] = true; // the token joins the cache, then the cache is trimmed
                int64_t count = 0;
                for (int64_t j = 0; j <= i; j++) count += cached[j];
                if (count > S + W)
                    for (int64_t j = S; j <= i - W; j++) cached[j] = false;
            }
            free(cached);
            TEST_COND(bad == 0, "sink S=%lld W=%lld: %d mismatches with the evicting cache", (long long)S, (long long)W, bad);
        }
    ls_attn_rule r = {.kind = LS_ATTN_SINK, .sinks = 4, .window = 2000};
    int64_t lo[2], hi[2];
    TEST_COND(ls_attn_ranges(&r, 5000, 0, lo, hi) == 2 && lo[0] == 0 && hi[0] == 3 && lo[1] == 3000 && hi[1] == 5000,
              "4 sinks + 2000: [0, 3] and [3000, 5000]");
    TEST_COND(ls_attn_ranges(&r, 2, 0, lo, hi) == 1 && lo[0] == 0 && hi[0] == 2, "early queries see only what exists");
}

static void test_window_full_errors(void) {
    ls_attn_rule w = {.kind = LS_ATTN_WINDOW, .window = 3}, f = {.kind = LS_ATTN_FULL};
    int bad = 0;
    for (int64_t i = 0; i < 20; i++)
        for (int64_t j = 0; j < 22; j++) {
            bad += in_ranges(&w, i, 0, j) != (j <= i && j >= i - 3);
            bad += in_ranges(&f, i, 0, j) != (j <= i);
        }
    TEST_COND(bad == 0, "window and full: %d mismatches", bad);
    ls_attn_rule e1 = {.kind = LS_ATTN_S2, .group = 1, .n_head = 4}, e2 = {.kind = LS_ATTN_SINK, .sinks = 4, .window = 0},
                 e3 = {.kind = LS_ATTN_SINK, .sinks = -1, .window = 5}, e4 = {.kind = LS_ATTN_WINDOW, .window = 0};
    TEST_ERR(ls_attn_rule_check(&e1), LS_ERR_INVALID, "group of at least 2 tokens (got 1)");
    TEST_ERR(ls_attn_rule_check(&e2), LS_ERR_INVALID, "sink attention needs a window of at least 1 token (got 0)");
    TEST_ERR(ls_attn_rule_check(&e3), LS_ERR_INVALID, "0 or more sinks (got -1)");
    TEST_ERR(ls_attn_rule_check(&e4), LS_ERR_INVALID, "window attention needs a window");
    ls_attn_kind k;
    TEST_COND(ls_attn_kind_parse("s2", &k) && k == LS_ATTN_S2 && !ls_attn_kind_parse("dense", &k), "names");
}

int main(void) {
    test_s2();
    test_sink();
    test_window_full_errors();
    return TEST_REPORT("test_attn_rules");
}
