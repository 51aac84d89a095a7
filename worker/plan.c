// plan.c — which positions each rank owns, and which remote keys each rank needs, derived from
// the attention rule's key ranges. Tests: tests/unit/test_plan.c.
#include "ls_plan.h"

struct ls_plan {
    ls_attn_rule rule;
    int64_t n;
    int P, n_kv_head;
    bool ring;
    ls_range (*own)[2]; // [P][2]
    int *n_own;         // [P]
    ls_need (*needs)[LS_PLAN_MAX_NEEDS];
    int *n_needs;
};

static int64_t share(int64_t total, int parts, int i) { return total * i / parts; } // floor

static void own_zigzag(ls_plan_t *p) {
    int c = 2 * p->P;
    for (int r = 0; r < p->P; r++) {
        p->own[r][0] = (ls_range){share(p->n, c, r), share(p->n, c, r + 1)};
        p->own[r][1] = (ls_range){share(p->n, c, c - 1 - r), share(p->n, c, c - r)};
        p->n_own[r] = 2;
    }
}

static void own_contiguous(ls_plan_t *p, int64_t unit) { // shards of whole units (groups)
    int64_t units = (p->n + unit - 1) / unit;
    for (int r = 0; r < p->P; r++) {
        int64_t lo = share(units, p->P, r) * unit, hi = share(units, p->P, r + 1) * unit;
        p->own[r][0] = (ls_range){lo < p->n ? lo : p->n, hi < p->n ? hi : p->n};
        p->n_own[r] = 1;
    }
}

int ls_plan_owner(const ls_plan_t *p, int64_t pos) {
    for (int r = 0; r < p->P; r++)
        for (int k = 0; k < p->n_own[r]; k++)
            if (pos >= p->own[r][k].lo && pos < p->own[r][k].hi) return r;
    return -1;
}

// Adds [lo, hi) of kv head g from its owners to rank r's needs (merging equal ranges).
static ls_status add_need(ls_plan_t *p, int r, int64_t lo, int64_t hi, int g) {
    while (lo < hi) {
        int from = ls_plan_owner(p, lo);
        int64_t end = hi;
        for (int k = 0; k < p->n_own[from]; k++)
            if (lo >= p->own[from][k].lo && lo < p->own[from][k].hi && p->own[from][k].hi < end) end = p->own[from][k].hi;
        int i;
        for (i = 0; i < p->n_needs[r]; i++) {
            ls_need *nd = &p->needs[r][i];
            if (nd->from == from && nd->pos.lo == lo && nd->pos.hi == end) break;
        }
        if (i == p->n_needs[r]) {
            if (i == LS_PLAN_MAX_NEEDS) return LS_ERR(LS_ERR_INTERNAL, "plan: rank %d needs too many key ranges", r);
            p->needs[r][p->n_needs[r]++] = (ls_need){.from = from, .pos = {lo, end}};
        }
        p->needs[r][i].kv_mask |= 1ull << g;
        lo = end;
    }
    return LS_OK;
}

// The keys rank r's queries see outside its own shard, per KV head: for every owned query, every
// query head reading that KV head and every rule (a model's layers may differ), the parts of the
// rule's ranges below the shard, merged into at most a sink range and one range up to the shard
// (so no key is borrowed twice).
static ls_status derive_needs(ls_plan_t *p, const ls_attn_rule *rules, int n_rules, int r) {
    ls_range own = p->own[r][0];
    if (own.lo >= own.hi) return LS_OK;
    int rep = p->rule.n_head / p->n_kv_head;
    for (int g = 0; g < p->n_kv_head; g++) {
        int64_t sink_hi = 0, far_lo = own.lo; // [0, sink_hi) from range 0 of sink; [far_lo, own.lo) from the rest
        for (int ru = 0; ru < n_rules; ru++)
            for (int h = g * rep; h < (g + 1) * rep; h++)
                for (int64_t i = own.lo; i < own.hi; i++) {
                    int64_t lo[2], hi[2];
                    int m = ls_attn_ranges(&rules[ru], i, h, lo, hi);
                    for (int k = 0; k < m; k++) {
                        if (lo[k] >= own.lo) continue;
                        int64_t top = hi[k] + 1 < own.lo ? hi[k] + 1 : own.lo;
                        if (rules[ru].kind == LS_ATTN_SINK && k == 0 && m == 2) sink_hi = top > sink_hi ? top : sink_hi;
                        else if (lo[k] < far_lo) far_lo = lo[k];
                    }
                }
        if (sink_hi >= far_lo) far_lo = 0, sink_hi = 0; // the two touch: one range
        if (sink_hi > 0) LS_CHECK(add_need(p, r, 0, sink_hi, g));
        if (far_lo < own.lo) LS_CHECK(add_need(p, r, far_lo, own.lo, g));
    }
    return LS_OK;
}

ls_status ls_plan_init(const ls_attn_rule *rule, int64_t n, int P, int n_kv_head, ls_plan_t **out) {
    return ls_plan_init_layers(rule, NULL, 0, n, P, n_kv_head, out);
}

ls_status ls_plan_init_layers(const ls_attn_rule *rule, const ls_attn_rule *extra, int n_extra, int64_t n, int P,
                              int n_kv_head, ls_plan_t **out) {
    *out = NULL;
    if (P < 1 || P > LS_PLAN_MAX_RANKS) return LS_ERR(LS_ERR_INVALID, "plan: %d ranks (1 to %d)", P, LS_PLAN_MAX_RANKS);
    if (n < 0) return LS_ERR(LS_ERR_INVALID, "plan: %lld tokens", (long long)n);
    if (n_kv_head < 1 || n_kv_head > 64 || rule->n_head % n_kv_head)
        return LS_ERR(LS_ERR_INVALID, "plan: %d KV heads for %d query heads", n_kv_head, rule->n_head);
    LS_CHECK(ls_attn_rule_check(rule));
    for (int i = 0; i < n_extra; i++) {
        LS_CHECK(ls_attn_rule_check(&extra[i]));
        if (extra[i].n_head != rule->n_head)
            return LS_ERR(LS_ERR_INVALID, "plan: layer rule %d has %d query heads, not %d", i, extra[i].n_head, rule->n_head);
    }
    ls_plan_t *p = ls_calloc(1, sizeof *p);
    *p = (ls_plan_t){.rule = *rule, .n = n, .P = P, .n_kv_head = n_kv_head, .ring = rule->kind == LS_ATTN_FULL};
    p->own = ls_calloc((size_t)P, sizeof *p->own);
    p->n_own = ls_calloc((size_t)P, sizeof *p->n_own);
    p->needs = ls_calloc((size_t)P, sizeof *p->needs);
    p->n_needs = ls_calloc((size_t)P, sizeof *p->n_needs);
    if (p->ring) own_zigzag(p);
    else own_contiguous(p, rule->kind == LS_ATTN_S2 ? rule->group : 1);
    ls_status rc = LS_OK;
    ls_attn_rule *all = ls_malloc((size_t)(n_extra + 1) * sizeof *all);
    all[0] = *rule;
    for (int i = 0; i < n_extra; i++) all[i + 1] = extra[i];
    for (int r = 0; r < P && rc == LS_OK && !p->ring; r++) rc = derive_needs(p, all, n_extra + 1, r);
    ls_free(all);
    if (rc != LS_OK) {
        ls_plan_free(p);
        return rc;
    }
    *out = p;
    return LS_OK;
}

void ls_plan_free(ls_plan_t *p) {
    if (!p) return;
    ls_free(p->own), ls_free(p->n_own), ls_free(p->needs), ls_free(p->n_needs), ls_free(p);
}

int ls_plan_ranks(const ls_plan_t *p) { return p->P; }
bool ls_plan_ring(const ls_plan_t *p) { return p->ring; }

int ls_plan_owned(const ls_plan_t *p, int rank, ls_range out[2]) {
    for (int k = 0; k < p->n_own[rank]; k++) out[k] = p->own[rank][k];
    return p->n_own[rank];
}

int64_t ls_plan_owned_count(const ls_plan_t *p, int rank) {
    int64_t c = 0;
    for (int k = 0; k < p->n_own[rank]; k++) c += p->own[rank][k].hi - p->own[rank][k].lo;
    return c;
}

int ls_plan_needs(const ls_plan_t *p, int rank, ls_need out[LS_PLAN_MAX_NEEDS]) {
    for (int i = 0; i < p->n_needs[rank]; i++) out[i] = p->needs[rank][i];
    return p->n_needs[rank];
}
