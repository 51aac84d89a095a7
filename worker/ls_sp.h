// ls_sp.h — sequence parallelism: one sequence sharded over the ranks of a worker group. Every
// rank holds the whole model (the GGUF mapping is shared by the ranks of a host) but only its
// share of the positions and of the KV cache (ls_plan). Prefill runs each rank's positions
// through all layers; per layer the attention gets exactly the remote keys its rule needs:
// a ring of KV blocks for full attention (the next block's transfer overlapping the current
// block's compute), a halo of G - G/2 positions of the shifted heads for s2, the S sinks and the
// previous W positions for sink/window. Partial results over key sets are merged by their
// log-sum-exp. Decode keeps the new token's hidden state replicated: every rank attends over
// its own keys, one all-gather per layer merges the parts, and the new key/value is stored on
// the rank that keeps the shards balanced (blocks of 64 decode positions). Only the leader
// (rank 0) computes the vocabulary projection for decode.
// Tests: tests/oracle/test_sp.py (mpirun -np 1..4 against the single-process engine).
#ifndef LS_SP_H
#define LS_SP_H

#include "ls_comm.h"
#include "ls_engine.h"
#include "ls_plan.h"

typedef struct ls_sp ls_sp_t;

typedef struct ls_sp_opts {
    ls_attn_rule rule;  // n_head is filled in from the model
    int64_t n;          // prefill tokens
    int64_t max_new;    // tokens that may be decoded after the prefill
    // Prefill progress: called on the leader after each layer (done = n * layers done /
    // layers). With `checkpoints` (the same on every rank), the leader's answer is broadcast
    // after each layer, so a cancel (anything but LS_OK) stops every rank at the same layer.
    ls_progress_fn on_progress;
    void *progress_ctx;
    bool checkpoints;
} ls_sp_opts;

// Collective: every rank of c calls it. The exchange is c (MPI) for CPU ranks; when every
// rank's engine runs on a GPU, an NCCL group over the same ranks (made once per process;
// LS_COMM=mpi keeps MPI, copying through host memory).
ls_status ls_sp_init(ls_engine_t *e, ls_comm_t *c, const ls_sp_opts *o, ls_sp_t **out);
void ls_sp_free(ls_sp_t *s);
// Ends the NCCL group kept for GPU ranks (if one was made); before the MPI group ends.
void ls_sp_exchange_release(void);
void ls_sp_reset(ls_sp_t *s); // empty again, for another prefill of the same length
const ls_plan_t *ls_sp_plan(const ls_sp_t *s);

// Prefill of tokens[0..n), the same array on every rank. o->on_logits (optional) is called on
// the rank that owns each position p >= o->logits_from, with index = p. last_logits (used on
// the leader, may be NULL): the logits of position n - 1, which its owner sends to the leader.
ls_status ls_sp_prefill(ls_sp_t *s, const int32_t *tokens, const ls_forward_opts *o, float *last_logits);

// One decode step: the same token on every rank at the next position; the leader gets the
// logits in `logits` (ignored elsewhere).
ls_status ls_sp_decode(ls_sp_t *s, int32_t token, float *logits);

#endif // LS_SP_H
