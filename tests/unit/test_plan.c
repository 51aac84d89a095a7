// test_plan.c — the shard planner: owned ranges cover [0, n) exactly once for every rule, n
// and P (odd n, n < P, n < 2P, n not a multiple of G); zigzag balances the causal work; s2
// shards start on group boundaries; and, by brute force over every query, head and visible key,
// each rank's needs are exactly the remote keys its queries see (nothing missing, nothing
// extra) — which gives the byte formulas: s2 moves G - G/2 positions of the shifted heads' KV
// heads per boundary, sink S + W positions, window W.
#include "ls_plan.h"
#include "ls_test.h"

#include <stdlib.h>

static void check_cover(const ls_plan_t *p, int64_t n, int P, const char *what) {
    int *seen = calloc((size_t)(n ? n : 1), sizeof *seen);
    for (int r = 0; r < P; r++) {
        ls_range own[2];
        int k = ls_plan_owned(p, r, own);
        for (int c = 0; c < k; c++)
            for (int64_t i = own[c].lo; i < own[c].hi; i++) seen[i]++;
    }
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += seen[i] != 1;
    TEST_COND(bad == 0, "%s n=%lld P=%d: %d positions not owned exactly once", what, (long long)n, P, bad);
    free(seen);
}

// Every remote (position, kv head) a rank's queries see is in its needs, and nothing else.
static void check_needs(const ls_plan_t *p, const ls_attn_rule *rule, int64_t n, int P, int n_kv) {
    int rep = rule->n_head / n_kv, missing = 0, extra = 0;
    for (int r = 0; r < P; r++) {
        ls_range own[2];
        if (ls_plan_owned(p, r, own) != 1) continue;
        uint64_t *want = calloc((size_t)(n ? n : 1), sizeof *want), *got = calloc((size_t)(n ? n : 1), sizeof *got);
        for (int64_t i = own[0].lo; i < own[0].hi; i++)
            for (int h = 0; h < rule->n_head; h++) {
                int64_t lo[2], hi[2];
                int m = ls_attn_ranges(rule, i, h, lo, hi);
                for (int k = 0; k < m; k++)
                    for (int64_t j = lo[k]; j <= hi[k]; j++)
                        if (j < own[0].lo || j >= own[0].hi) want[j] |= 1ull << (h / rep);
            }
        ls_need nd[LS_PLAN_MAX_NEEDS];
        int c = ls_plan_needs(p, r, nd);
        for (int k = 0; k < c; k++) {
            for (int64_t j = nd[k].pos.lo; j < nd[k].pos.hi; j++) got[j] |= nd[k].kv_mask;
            if (ls_plan_owner(p, nd[k].pos.lo) != nd[k].from || ls_plan_owner(p, nd[k].pos.hi - 1) != nd[k].from)
                extra++; // a need must come from the rank that owns it
        }
        for (int64_t j = 0; j < n; j++) missing += (want[j] & ~got[j]) != 0, extra += (got[j] & ~want[j]) != 0;
        free(want), free(got);
    }
    TEST_COND(missing == 0 && extra == 0, "%s G=%lld S=%lld W=%lld n=%lld P=%d heads %d/%d: %d missing, %d extra",
              ls_attn_kind_name(rule->kind), (long long)rule->group, (long long)rule->sinks, (long long)rule->window,
              (long long)n, P, rule->n_head, n_kv, missing, extra);
}

// Per-layer rules (ls_plan_init_layers): shards follow the first rule, and each rank's needs are
// the union of what every rule's queries see remotely, each (position, KV head) borrowed once.
static void test_layers(void) {
    ls_attn_rule s2 = {.kind = LS_ATTN_S2, .group = 8, .n_head = 4}, win = {.kind = LS_ATTN_WINDOW, .window = 11, .n_head = 4},
                 sink = {.kind = LS_ATTN_SINK, .sinks = 3, .window = 5, .n_head = 4};
    const ls_attn_rule *pairs[][2] = {{&s2, &win}, {&win, &sink}, {&sink, &win}};
    for (int c = 0; c < 3; c++)
        for (int P = 2; P <= 4; P++) {
            int64_t n = 53;
            ls_plan_t *p;
            TEST_COND(ls_plan_init_layers(pairs[c][0], pairs[c][1], 1, n, P, 2, &p) == LS_OK, "plan: %s", ls_err_msg());
            ls_plan_t *alone;
            TEST_COND(ls_plan_init(pairs[c][0], n, P, 2, &alone) == LS_OK, "plan: %s", ls_err_msg());
            int missing = 0, twice = 0, extra = 0, moved = 0;
            for (int r = 0; r < P; r++) {
                ls_range own[2], own_alone[2];
                ls_plan_owned(p, r, own), ls_plan_owned(alone, r, own_alone);
                TEST_COND(own[0].lo == own_alone[0].lo && own[0].hi == own_alone[0].hi, "shards follow the first rule");
                int count[64][2] = {{0}};
                bool want[64][2] = {{false}};
                for (int k = 0; k < 2; k++)
                    for (int64_t i = own[0].lo; i < own[0].hi; i++)
                        for (int h = 0; h < 4; h++) {
                            int64_t lo[2], hi[2];
                            int m = ls_attn_ranges(pairs[c][k], i, h, lo, hi);
                            for (int q = 0; q < m; q++)
                                for (int64_t j = lo[q]; j <= hi[q]; j++)
                                    if (j < own[0].lo) want[j][h / 2] = true;
                        }
                ls_need nd[LS_PLAN_MAX_NEEDS];
                int cn = ls_plan_needs(p, r, nd);
                for (int k = 0; k < cn; k++)
                    for (int64_t j = nd[k].pos.lo; j < nd[k].pos.hi; j++)
                        for (int g = 0; g < 2; g++)
                            if (nd[k].kv_mask >> g & 1) count[j][g]++, moved++;
                for (int64_t j = 0; j < n; j++)
                    for (int g = 0; g < 2; g++)
                        missing += want[j][g] && !count[j][g], twice += count[j][g] > 1, extra += !want[j][g] && count[j][g];
            }
            TEST_COND(missing == 0 && twice == 0, "%s + %s P=%d: %d missing, %d borrowed twice", ls_attn_kind_name(pairs[c][0]->kind),
                      ls_attn_kind_name(pairs[c][1]->kind), P, missing, twice);
            // a sink range and one contiguous range per KV head: what lies between them in the
            // union is moved too (sink + wider window), never more than that
            TEST_COND(c == 2 || extra == 0, "%s + %s P=%d: %d keys no rule sees", ls_attn_kind_name(pairs[c][0]->kind),
                      ls_attn_kind_name(pairs[c][1]->kind), P, extra);
            ls_plan_free(p), ls_plan_free(alone);
        }
    ls_attn_rule other = win;
    other.n_head = 8;
    ls_plan_t *p;
    TEST_ERR(ls_plan_init_layers(&s2, &other, 1, 10, 2, 2, &p), LS_ERR_INVALID, "layer rule 0 has 8 query heads, not 4");
}

static void test_all(void) {
    static const int64_t ns[] = {0, 1, 3, 7, 64, 101, 1000};
    static const int Ps[] = {1, 2, 3, 4, 5};
    for (size_t a = 0; a < 7; a++)
        for (size_t b = 0; b < 5; b++) {
            int64_t n = ns[a];
            int P = Ps[b];
            ls_attn_rule rules[] = {{.kind = LS_ATTN_FULL, .n_head = 9},
                                    {.kind = LS_ATTN_S2, .group = 8, .n_head = 9},
                                    {.kind = LS_ATTN_S2, .group = 7, .n_head = 4},
                                    {.kind = LS_ATTN_SINK, .sinks = 4, .window = 20, .n_head = 9},
                                    {.kind = LS_ATTN_SINK, .sinks = 2, .window = 300, .n_head = 4},
                                    {.kind = LS_ATTN_WINDOW, .window = 33, .n_head = 9}};
            int kvs[] = {3, 3, 2, 3, 4, 3};
            for (size_t k = 0; k < sizeof rules / sizeof *rules; k++) {
                ls_plan_t *p;
                if (ls_plan_init(&rules[k], n, P, kvs[k], &p) != LS_OK) {
                    TEST_COND(0, "plan: %s", ls_err_msg());
                    ls_err_clear();
                    continue;
                }
                check_cover(p, n, P, ls_attn_kind_name(rules[k].kind));
                if (!ls_plan_ring(p)) check_needs(p, &rules[k], n, P, kvs[k]);
                ls_plan_free(p);
            }
        }
}

static void test_shapes(void) {
    ls_attn_rule full = {.kind = LS_ATTN_FULL, .n_head = 9};
    ls_plan_t *p;
    ls_plan_init(&full, 1000, 4, 3, &p);
    ls_range own[2];
    ls_plan_owned(p, 1, own);
    TEST_COND(own[0].lo == 125 && own[0].hi == 250 && own[1].lo == 750 && own[1].hi == 875, "zigzag: rank 1 owns chunks 1 and 6");
    double work[4] = {0}, lo = 1e30, hi = 0;
    for (int r = 0; r < 4; r++) {
        ls_plan_owned(p, r, own);
        for (int c = 0; c < 2; c++)
            for (int64_t i = own[c].lo; i < own[c].hi; i++) work[r] += (double)(i + 1);
        lo = work[r] < lo ? work[r] : lo, hi = work[r] > hi ? work[r] : hi;
    }
    TEST_COND(hi / lo < 1.01, "zigzag balances the causal work (%.0f .. %.0f)", lo, hi);
    TEST_COND(ls_plan_owner(p, 999) == 0, "rank 0 owns the last position");
    ls_plan_free(p);

    ls_attn_rule s2 = {.kind = LS_ATTN_S2, .group = 10, .n_head = 9};
    ls_plan_init(&s2, 95, 3, 3, &p);
    int ok = 1;
    for (int r = 0; r < 3; r++) ls_plan_owned(p, r, own), ok &= own[0].lo % 10 == 0;
    TEST_COND(ok, "s2 shards start on group boundaries");
    ls_need nd[LS_PLAN_MAX_NEEDS];
    ls_plan_owned(p, 1, own);
    int c = ls_plan_needs(p, 1, nd);
    // 9 heads: 0..3 unshifted (KV heads 0, 1), 4..8 shifted (KV heads 1, 2); halo 10 - 5 = 5
    TEST_COND(c == 1 && nd[0].from == 0 && nd[0].pos.lo == own[0].lo - 5 && nd[0].pos.hi == own[0].lo && nd[0].kv_mask == 6,
              "s2 halo: 5 positions of KV heads 1 and 2 from rank 0 (got %d needs, mask %llx)", c,
              c ? (unsigned long long)nd[0].kv_mask : 0ull);
    ls_plan_free(p);

    ls_attn_rule sink = {.kind = LS_ATTN_SINK, .sinks = 4, .window = 100, .n_head = 9};
    ls_plan_init(&sink, 1000, 4, 3, &p);
    c = ls_plan_needs(p, 3, nd); // shard [750, 1000): sinks [0, 4) from rank 0, window [650, 750) from rank 2
    int64_t total = 0;
    for (int k = 0; k < c; k++) total += nd[k].pos.hi - nd[k].pos.lo;
    TEST_COND(c == 2 && total == 104 && nd[0].from == 0 && nd[1].from == 2, "sink: S + W = 104 positions");
    ls_plan_free(p);

    ls_attn_rule bad = {.kind = LS_ATTN_S2, .group = 8, .n_head = 9};
    TEST_ERR(ls_plan_init(&bad, 10, 2, 2, &p), LS_ERR_INVALID, "2 KV heads for 9 query heads");
}

int main(void) {
    test_layers();
    test_all();
    test_shapes();
    return TEST_REPORT("test_plan");
}
