// ls_plan.h — the shard planner of sequence parallelism: from the attention rule, the length n
// and the number of ranks P, which positions each rank owns and exactly which remote keys and
// values each rank needs (and so which each rank sends). Every rank computes the same plan.
//   full:         zigzag — 2P chunks, rank r owns chunks r and 2P-1-r (balancing the causal
//                 triangle); its keys reach the others through a ring, not through needs;
//   s2:           contiguous shards of whole groups; a rank needs, for the KV heads that the
//                 shifted query heads read, the keys before its first group that those heads'
//                 first queries see (G - G/2 positions);
//   sink, window: contiguous shards; a rank needs the W positions before its shard (from as many
//                 ranks as that takes) and, for sink, the S sinks from rank 0.
// Needs are derived from the rule itself (ls_attn_ranges), so each rank moves exactly the keys
// its queries can see. Any n works: odd n, n < P (some ranks own nothing), n not a multiple of
// G or P. Tests: tests/unit/test_plan.c.
#ifndef LS_PLAN_H
#define LS_PLAN_H

#include "ls_kernels.h"

#define LS_PLAN_MAX_RANKS 256
#define LS_PLAN_MAX_NEEDS 8

typedef struct ls_range {
    int64_t lo, hi; // positions [lo, hi)
} ls_range;

// Keys a rank needs from another rank: positions [lo, hi) of the KV heads in kv_mask.
typedef struct ls_need {
    int from;
    ls_range pos;
    uint64_t kv_mask; // bit g: KV head g
} ls_need;

typedef struct ls_plan ls_plan_t;

// n >= 0 tokens over P ranks under the rule (n_head must be set; n_kv_head is the model's).
ls_status ls_plan_init(const ls_attn_rule *rule, int64_t n, int P, int n_kv_head, ls_plan_t **out);
// Per-layer rules (a model's window layers next to its global ones): shards follow `rule`, and a
// rank's needs are the union of what each of rule and extra[0..n_extra) sees from it (the ring
// of full attention carries every key: there the extra rules only narrow what each layer reads).
ls_status ls_plan_init_layers(const ls_attn_rule *rule, const ls_attn_rule *extra, int n_extra, int64_t n, int P,
                              int n_kv_head, ls_plan_t **out);
void ls_plan_free(ls_plan_t *p);

int ls_plan_ranks(const ls_plan_t *p);
bool ls_plan_ring(const ls_plan_t *p); // full attention: keys travel a ring
// The rank's owned position ranges (1 or 2, possibly empty), in increasing order.
int ls_plan_owned(const ls_plan_t *p, int rank, ls_range out[2]);
int64_t ls_plan_owned_count(const ls_plan_t *p, int rank);
int ls_plan_owner(const ls_plan_t *p, int64_t pos);
// What `rank` needs from other ranks (not for the ring); returns the count.
int ls_plan_needs(const ls_plan_t *p, int rank, ls_need out[LS_PLAN_MAX_NEEDS]);

#endif // LS_PLAN_H
