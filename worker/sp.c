// sp.c — one sequence sharded over the ranks of a worker group (see ls_sp.h for the scheme).
// Each rank keeps its keys and values in the engine's paged KV cache (ls_kv, of the engine's
// element type), at slots: its own positions (slots [0, m), in the order of its owned ranges),
// then the decode positions it stores (from slot m); keys borrowed from other ranks for the
// current layer sit in an f32 buffer of their own. Attention is a series of kernel calls, one
// per contiguous key segment, merged by log-sum-exp.
// Everything a rank computes on lives in its backend's memory (host for CPU ranks, the GPU for
// CUDA ranks). The exchange is the MPI group, or NCCL when every rank has a GPU; GPU ranks
// exchanging over MPI copy through host mirrors of the exchange buffers ("staging").
// Tests: tests/oracle/test_sp.py, tests/gpu/e2e.py.
#include "engine_impl.h"
#include "ls_sp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DECODE_BLOCK 64 // decode positions stored together on one rank

typedef struct seg {
    int64_t pos, n, slot; // key positions [pos, pos + n) at cache slots [slot, slot + n)
} seg;

struct ls_sp {
    ls_engine_t *e;
    ls_backend_t *be;
    ls_comm_t *c;                     // the exchange: the MPI group or its NCCL twin
    bool stage;                       // GPU ranks over MPI: exchange through host mirrors
    ls_plan_t *plan;
    ls_attn_rule rule;
    ls_progress_fn on_progress;
    void *progress_ctx;
    bool checkpoints;
    int rank, P, n_kv, n_head, hd;
    int64_t n, max_new, len, m, cap, decode_len, decode_room;
    ls_range own[2];
    int n_own;
    int32_t *ids;                     // [m] own token ids
    int64_t *pos, *pos_sink;          // [rows] RoPE positions of the rows
    ls_kv_seq_t *kv;                  // own and decode keys and values: slots [0, cap)
    float *bk, *bv;                   // [n_kv][n_borrow][hd] keys and values borrowed for this layer
    int64_t n_borrow;
    seg *local;                       // keys this rank owns: own ranges, then decode blocks
    int n_local, max_local;
    ls_need needs[LS_PLAN_MAX_NEEDS]; // what this rank borrows, and where it goes
    seg borrowed[LS_PLAN_MAX_NEEDS];
    int n_needs;
    int64_t *loads;                   // [P] decode positions stored per rank (same on every rank)
    int decode_owner;
    // backend memory
    float *x, *q, *q_sink, *att, *lse, *o_tmp, *lse_tmp; // [rows][...]
    float *h, *kk, *vv, *gate, *up, *logits;             // micro-batch scratch
    float *send, *recv[2];            // exchange buffers
    float *part, *gather;             // decode: [n_head*hd + n_head] this rank's part, [P][...] all
    // host memory: mirrors of the exchange buffers when staging (else NULL), logits for callers
    float *send_h, *recv_h[2], *part_h, *gather_h, *logits_h;
    size_t send_cap, recv_cap;
    float *inv_freq;
    float attn_factor;
};

static int64_t nq_of(const ls_sp_t *s) { return (int64_t)s->n_head * s->hd; }

// --- setup ----------------------------------------------------------------------------------

static size_t need_floats(const ls_sp_t *s, const ls_need *nd) {
    return (size_t)__builtin_popcountll(nd->kv_mask) * (size_t)(nd->pos.hi - nd->pos.lo) * (size_t)s->hd * 2;
}

// Allocation of the buffers that grow with the shard: may legitimately fail (the caller
// reports it), counted so the message can say how much was asked for. big: backend memory;
// host: host memory, zeroed.
typedef struct allocs {
    ls_backend_t *be;
    size_t bytes;
    bool failed;
} allocs;

static void *big(allocs *a, size_t n, size_t size) {
    a->bytes += n * size;
    void *p = NULL;
    if (!a->failed && ls_backend_alloc(a->be, (n ? n : 1) * size, &p) != LS_OK) a->failed = true;
    return p;
}

static void *host(allocs *a, size_t n, size_t size) {
    a->bytes += n * size;
    void *p = calloc(n ? n : 1, size);
    if (!p) a->failed = true;
    return p;
}

// A host mirror of an exchange buffer when staging, else NULL.
static float *mirror(ls_sp_t *s, allocs *a, size_t n) { return s->stage ? host(a, n, sizeof(float)) : NULL; }
// The exchange's view of a buffer: the buffer itself, or its host mirror when staging.
static float *xv(const ls_sp_t *s, float *buf, float *mirror_buf) { return s->stage ? mirror_buf : buf; }

// The exchange buffers: the ring's two blocks, or this rank's sends and receives.
static void alloc_exchange(ls_sp_t *s, allocs *a) {
    if (ls_plan_ring(s->plan)) {
        int64_t most = 0;
        for (int r = 0; r < s->P; r++) most = ls_plan_owned_count(s->plan, r) > most ? ls_plan_owned_count(s->plan, r) : most;
        s->recv_cap = (size_t)(most * s->n_kv * s->hd * 2);
        s->recv[0] = big(a, s->recv_cap, sizeof(float));
        s->recv[1] = big(a, s->recv_cap, sizeof(float));
        s->recv_h[0] = mirror(s, a, s->recv_cap);
        s->recv_h[1] = mirror(s, a, s->recv_cap);
        return;
    }
    for (int i = 0; i < s->n_needs; i++) s->recv_cap += need_floats(s, &s->needs[i]);
    for (int d = 0; d < s->P; d++) {
        ls_need nd[LS_PLAN_MAX_NEEDS];
        int c = d == s->rank ? 0 : ls_plan_needs(s->plan, d, nd);
        for (int i = 0; i < c; i++)
            if (nd[i].from == s->rank) s->send_cap += need_floats(s, &nd[i]);
    }
    s->send = big(a, s->send_cap, sizeof(float));
    s->recv[0] = big(a, s->recv_cap, sizeof(float));
    s->send_h = mirror(s, a, s->send_cap);
    s->recv_h[0] = mirror(s, a, s->recv_cap);
}

// Per-row activations of the shard, and the micro-batch scratch.
static void alloc_rows(ls_sp_t *s, allocs *a) {
    const ls_model_config *c = &s->e->cfg;
    size_t rows = (size_t)(s->m > 0 ? s->m : 1), ub = (size_t)s->e->ubatch, nq = (size_t)nq_of(s);
    s->x = big(a, rows * (size_t)c->n_embd, sizeof(float));
    s->q = big(a, rows * nq, sizeof(float));
    s->q_sink = s->rule.kind == LS_ATTN_SINK ? big(a, rows * nq, sizeof(float)) : NULL;
    s->att = big(a, rows * nq, sizeof(float));
    s->o_tmp = big(a, rows * nq, sizeof(float));
    s->lse = big(a, rows * (size_t)s->n_head, sizeof(float));
    s->lse_tmp = big(a, rows * (size_t)s->n_head, sizeof(float));
    s->pos = host(a, rows, sizeof *s->pos);
    s->pos_sink = host(a, rows, sizeof *s->pos_sink);
    s->ids = host(a, rows, sizeof *s->ids);
    s->h = big(a, ub * (size_t)c->n_embd, sizeof(float));
    s->kk = big(a, ub * (size_t)(s->n_kv * s->hd), sizeof(float));
    s->vv = big(a, ub * (size_t)(s->n_kv * s->hd), sizeof(float));
    s->gate = big(a, ub * (size_t)c->n_ff, sizeof(float));
    s->up = big(a, ub * (size_t)c->n_ff, sizeof(float));
    s->logits = big(a, LOGIT_ROWS * (size_t)c->n_vocab, sizeof(float));
    s->logits_h = host(a, LOGIT_ROWS * (size_t)c->n_vocab, sizeof(float));
    size_t part = (size_t)(nq_of(s) + s->n_head);
    s->part = big(a, part, sizeof(float));
    s->gather = big(a, (size_t)s->P * part, sizeof(float));
    s->part_h = mirror(s, a, part);
    s->gather_h = mirror(s, a, (size_t)s->P * part);
}

void ls_sp_reset(ls_sp_t *s) {
    s->len = 0;
    s->decode_len = 0;
    s->n_local = 0;
    for (int k = 0, slot = 0; k < s->n_own; k++) {
        s->local[s->n_local++] = (seg){s->own[k].lo, s->own[k].hi - s->own[k].lo, slot};
        slot += (int)(s->own[k].hi - s->own[k].lo);
    }
    memset(s->loads, 0, (size_t)s->P * sizeof *s->loads);
}

// The plan for the model's layers: shards by the sequence's rule, or by the window when every
// layer is a window layer (Mistral); the needs cover the window layers' rule too.
static ls_status plan_layers(ls_sp_t *s) {
    const ls_model_config *c = &s->e->cfg;
    ls_attn_rule shard = s->rule, win = s->rule;
    bool global = false, window = false;
    for (int64_t il = 0; il < c->n_layer; il++) {
        if (c->layer_window[il] > 0) window = true, win = ls_layer_rule(c, &s->rule, il);
        else global = true;
    }
    if (!global) shard = win;
    return ls_plan_init_layers(&shard, &win, global && window ? 1 : 0, s->n, s->P, s->n_kv, &s->plan);
}

static ls_status init(ls_sp_t *s, const ls_sp_opts *o) {
    const ls_model_config *c = &s->e->cfg;
    s->rule = o->rule;
    s->rule.n_head = (int)c->n_head;
    s->on_progress = o->on_progress, s->progress_ctx = o->progress_ctx, s->checkpoints = o->checkpoints;
    s->n_head = (int)c->n_head, s->n_kv = (int)c->n_head_kv, s->hd = (int)c->head_dim;
    s->n = o->n, s->max_new = o->max_new;
    if (c->n_layer >= LS_TAG_LOGITS) return LS_ERR(LS_ERR_UNSUPPORTED, "%lld layers is more than sharding supports", (long long)c->n_layer);
    if (s->n < 1 || s->max_new < 0 || s->n + s->max_new > (1 << 24))
        return LS_ERR(LS_ERR_RANGE, "a sharded sequence of %lld + %lld tokens is outside 1..2^24", (long long)s->n,
                      (long long)s->max_new);
    LS_CHECK(plan_layers(s));
    s->n_own = ls_plan_owned(s->plan, s->rank, s->own);
    s->m = ls_plan_owned_count(s->plan, s->rank);
    s->n_needs = ls_plan_ring(s->plan) ? 0 : ls_plan_needs(s->plan, s->rank, s->needs);
    int64_t borrow = 0;
    for (int i = 0; i < s->n_needs; i++) borrow += s->needs[i].pos.hi - s->needs[i].pos.lo;
    // Decode blocks go to the least-loaded rank, so a rank takes one only while it holds at most
    // the average: it never holds more than (n + max_new) / P + one block.
    int64_t fair = (s->n + s->max_new + s->P - 1) / s->P;
    s->decode_room = fair - s->m + DECODE_BLOCK;
    s->decode_room = s->decode_room < 0 ? 0 : s->decode_room > s->max_new ? s->max_new : s->decode_room;
    s->cap = s->m + s->decode_room;
    s->n_borrow = borrow;
    for (int i = 0, slot = 0; i < s->n_needs; i++) {
        s->borrowed[i] = (seg){s->needs[i].pos.lo, s->needs[i].pos.hi - s->needs[i].pos.lo, slot};
        slot += (int)s->borrowed[i].n;
    }
    double kv_gb = (double)ls_kv_bytes_per_token(ls_kv_shape_of(s->e->kv)) * (double)s->cap / 1e9;
    LS_CHECK(ls_kv_seq_init(s->e->kv, &s->kv));
    ls_status rc = ls_kv_seq_reserve(s->kv, s->cap);
    if (rc != LS_OK) {
        ls_err_clear(); // say which rank, and for what
        return LS_ERR(LS_ERR_NOMEM, "rank %d: cannot allocate a KV cache of %.2f GB for its share of %lld tokens on the %s backend",
                      s->rank, kv_gb, (long long)(s->n + s->max_new), ls_backend_name(s->be));
    }
    size_t bw = (size_t)s->n_kv * (size_t)borrow * (size_t)s->hd;
    allocs a = {.be = s->be};
    s->bk = big(&a, bw, sizeof(float));
    s->bv = big(&a, bw, sizeof(float));
    alloc_rows(s, &a);
    alloc_exchange(s, &a);
    if (a.failed) {
        ls_err_clear(); // the allocator's own message says less than this one
        return LS_ERR(LS_ERR_NOMEM, "rank %d: cannot allocate %.2f GB (%s backend) for its share of %lld tokens (and a KV cache of %.2f GB)",
                      s->rank, (double)a.bytes / 1e9, ls_backend_name(s->be), (long long)(s->n + s->max_new), kv_gb);
    }
    s->max_local = s->n_own + (int)(s->decode_room / DECODE_BLOCK) + 2;
    s->local = ls_calloc((size_t)s->max_local, sizeof *s->local);
    s->loads = ls_calloc((size_t)s->P, sizeof *s->loads);
    s->inv_freq = ls_malloc((size_t)c->rope.n_rot / 2 * sizeof *s->inv_freq);
    LS_CHECK(ls_rope_compute(&c->rope, s->n + s->max_new, s->inv_freq, &s->attn_factor));
    ls_sp_reset(s);
    return LS_OK;
}

// One NCCL group per process, made the first time every rank of the MPI group has a GPU and
// kept for later sequences (making one costs a round of bootstrapping).
static ls_comm_t *g_nccl, *g_nccl_parent;

void ls_sp_exchange_release(void) {
    if (g_nccl) ls_comm_finish(g_nccl);
    g_nccl = g_nccl_parent = NULL;
}

// The exchange for this group (collective: every rank calls it). CPU ranks: the MPI group.
// GPU ranks: NCCL when every rank has a GPU and NCCL starts (LS_COMM=mpi skips it), else the
// MPI group with host staging.
static ls_status pick_exchange(ls_sp_t *s, ls_comm_t *mpi) {
    bool gpu = !ls_backend_on_host(s->be);
    double gpus = gpu;
    LS_CHECK(ls_comm_allreduce_sum(mpi, &gpus, 1));
    s->c = mpi;
#if LS_HAVE_CUDA
    const char *want = getenv("LS_COMM");
    if (gpu && (int)gpus == ls_comm_size(mpi) && !(want && !strcmp(want, "mpi"))) {
        if (g_nccl_parent != mpi) {
            ls_sp_exchange_release();
            if (ls_comm_nccl_init(mpi, -1, &g_nccl) == LS_OK) g_nccl_parent = mpi;
            else {
                if (ls_comm_rank(mpi) == 0) LS_WARN("%s; exchanging through host memory over MPI instead", ls_err_msg());
                ls_err_clear();
            }
        }
        if (g_nccl) s->c = g_nccl;
    }
#endif
    s->stage = gpu && !ls_comm_device_buffers(s->c);
    return LS_OK;
}

ls_status ls_sp_init(ls_engine_t *e, ls_comm_t *c, const ls_sp_opts *o, ls_sp_t **out) {
    *out = NULL;
    ls_sp_t *s = ls_calloc(1, sizeof *s);
    s->e = e, s->be = ls_engine_backend(e), s->rank = ls_comm_rank(c), s->P = ls_comm_size(c);
    ls_status rc = pick_exchange(s, c);
    if (rc == LS_OK) rc = init(s, o);
    if (rc != LS_OK) {
        ls_sp_free(s);
        *out = NULL;
        return rc;
    }
    LS_CHECK(ls_comm_stats_init(s->c, (int)e->cfg.n_layer));
    *out = s;
    return LS_OK;
}

void ls_sp_free(ls_sp_t *s) {
    if (!s) return;
    ls_plan_free(s->plan);
    ls_kv_seq_free(s->kv);
    float *dev[] = {s->bk, s->bv, s->x, s->q, s->q_sink, s->att, s->o_tmp, s->lse, s->lse_tmp, s->h, s->kk, s->vv,
                    s->gate, s->up, s->logits, s->send, s->recv[0], s->recv[1], s->part, s->gather};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++) ls_backend_release(s->be, dev[i]);
    free(s->send_h), free(s->recv_h[0]), free(s->recv_h[1]), free(s->part_h), free(s->gather_h), free(s->logits_h);
    free(s->ids), free(s->pos), free(s->pos_sink);
    ls_free(s->local), ls_free(s->loads), ls_free(s->inv_freq);
    ls_free(s);
}

const ls_plan_t *ls_sp_plan(const ls_sp_t *s) { return s->plan; }

// --- attention pieces -------------------------------------------------------------------------

// Query rows [r0, r0 + nr) (positions from q_pos0) against nk keys of layer il at positions from kv_pos0:
// in k, v ([n_kv][stride][hd] f32), or, when k is NULL, in this rank's cache from slot
// `stride` on. The result is merged into att and lse.
static ls_status attend(ls_sp_t *s, int64_t il, int64_t r0, int64_t nr, int64_t q_pos0, const float *k, const float *v,
                        int64_t stride, int64_t kv_pos0, int64_t nk) {
    if (nr <= 0 || nk <= 0) return LS_OK;
    int64_t nq = nq_of(s);
    ls_attn_rule rule = ls_layer_rule(&s->e->cfg, &s->rule, il); // a window layer keeps its window
    ls_attn_args a = {.q = s->q + r0 * nq, .q_sink = rule.kind == LS_ATTN_SINK ? s->q_sink + r0 * nq : NULL,
                      .k = k, .v = v, .out = s->o_tmp + r0 * nq, .lse = s->lse_tmp + r0 * s->n_head, .n_q = nr,
                      .q_pos0 = q_pos0, .n_kv = nk, .kv_pos0 = kv_pos0, .kv_stride = stride, .n_head = s->n_head,
                      .n_kv_head = s->n_kv, .head_dim = s->hd, .scale = 1.0f / sqrtf((float)s->hd), .rule = rule};
    if (k) {
        LS_CHECK(ls_op_attention(s->be, &a));
    } else { // own keys: key j at slot stride + j
        a.kv_gap = stride, a.kv_stride = 0;
        LS_CHECK(ls_kv_attend(s->kv, il, &a));
    }
    return ls_op_attn_merge(s->be, s->att + r0 * nq, s->lse + r0 * s->n_head, a.out, a.lse, nr * s->n_head, s->hd);
}

// Own keys of layer il: nk of them at positions from kv_pos0, in the cache from slot0.
static ls_status attend_own(ls_sp_t *s, int64_t il, int64_t r0, int64_t nr, int64_t q_pos0, int64_t slot0, int64_t kv_pos0, int64_t nk) {
    return attend(s, il, r0, nr, q_pos0, NULL, NULL, slot0, kv_pos0, nk);
}

static ls_status clear_rows(ls_sp_t *s, int64_t rows) {
    LS_CHECK(ls_op_fill(s->be, s->att, 0.0f, rows * nq_of(s)));
    return ls_op_fill(s->be, s->lse, -INFINITY, rows * s->n_head);
}

// The cache slot of one of this rank's own positions.
static int64_t own_slot(const ls_sp_t *s, int64_t p) {
    int64_t off = 0;
    for (int k = 0; k < s->n_own; k++) {
        if (p >= s->own[k].lo && p < s->own[k].hi) return off + p - s->own[k].lo;
        off += s->own[k].hi - s->own[k].lo;
    }
    return -1;
}

// Copies n rows of KV head g out of the cache from slot0 (pack: widened to f32) or into the
// borrowed buffer from its slot0 (!pack), to or from buf (backend memory): [K rows][V rows].
// Returns the floats moved.
static ls_status copy_rows(ls_sp_t *s, int64_t il, int g, int64_t slot0, int64_t n, float *buf, bool pack, size_t *moved) {
    size_t row = (size_t)s->hd, bytes = (size_t)n * row * sizeof(float);
    float *kb = buf, *vb = buf + (size_t)n * row;
    *moved = 2 * (size_t)n * row;
    if (pack) return ls_kv_load(s->kv, il, g, slot0, n, kb, vb);
    size_t at = ((size_t)g * (size_t)s->n_borrow + (size_t)slot0) * row;
    LS_CHECK(ls_backend_copy(s->be, s->bk + at, 0, kb, 0, bytes, 1));
    return ls_backend_copy(s->be, s->bv + at, 0, vb, 0, bytes, 1);
}

// Non-ring rules: send what other ranks need from this rank, receive what it needs, put the
// received keys into the borrowed slots.
static ls_status exchange(ls_sp_t *s, int64_t il) {
    ls_xfer x[LS_COMM_MAX_XFERS];
    int nx = 0;
    float *sp = s->send;
    for (int d = 0; d < s->P; d++) {
        ls_need nd[LS_PLAN_MAX_NEEDS];
        int c = d == s->rank ? 0 : ls_plan_needs(s->plan, d, nd);
        for (int i = 0; i < c; i++) {
            if (nd[i].from != s->rank) continue;
            size_t start = (size_t)(sp - s->send), moved;
            for (int g = 0; g < s->n_kv; g++)
                if (nd[i].kv_mask >> g & 1) {
                    LS_CHECK(copy_rows(s, il, g, own_slot(s, nd[i].pos.lo), nd[i].pos.hi - nd[i].pos.lo, sp, true, &moved));
                    sp += moved;
                }
            if (nx == LS_COMM_MAX_XFERS) return LS_ERR(LS_ERR_INTERNAL, "too many transfers");
            x[nx++] = (ls_xfer){xv(s, s->send, s->send_h) + start, (size_t)(sp - s->send - start) * sizeof(float), d, false};
        }
    }
    size_t recvd = 0;
    for (int i = 0; i < s->n_needs; i++) {
        if (nx == LS_COMM_MAX_XFERS) return LS_ERR(LS_ERR_INTERNAL, "too many transfers");
        x[nx++] = (ls_xfer){xv(s, s->recv[0], s->recv_h[0]) + recvd, need_floats(s, &s->needs[i]) * sizeof(float),
                            s->needs[i].from, true};
        recvd += need_floats(s, &s->needs[i]);
    }
    if (!nx) return LS_OK;
    if (s->stage) LS_CHECK(ls_backend_download(s->be, s->send_h, s->send, (size_t)(sp - s->send) * sizeof(float)));
    ls_comm_batch b;
    LS_CHECK(ls_comm_start(s->c, x, nx, (int)il, &b));
    LS_CHECK(ls_comm_wait(s->c, &b));
    if (s->stage) LS_CHECK(ls_backend_upload(s->be, s->recv[0], s->recv_h[0], recvd * sizeof(float)));
    float *rp = s->recv[0];
    for (int i = 0; i < s->n_needs; i++)
        for (int g = 0; g < s->n_kv; g++)
            if (s->needs[i].kv_mask >> g & 1) {
                size_t moved;
                LS_CHECK(copy_rows(s, il, g, s->borrowed[i].slot, s->borrowed[i].n, rp, false, &moved));
                rp += moved;
            }
    return LS_OK;
}

// Non-ring prefill attention: own keys, then each borrowed segment.
static ls_status attention_local(ls_sp_t *s, int64_t il) {
    LS_CHECK(exchange(s, il));
    LS_CHECK(clear_rows(s, s->m));
    size_t hd = (size_t)s->hd;
    LS_CHECK(attend_own(s, il, 0, s->m, s->own[0].lo, 0, s->own[0].lo, s->m)); // one contiguous shard
    for (int i = 0; i < s->n_needs; i++) {
        const seg *b = &s->borrowed[i];
        LS_CHECK(attend(s, il, 0, s->m, s->own[0].lo, s->bk + (size_t)b->slot * hd, s->bv + (size_t)b->slot * hd, s->n_borrow,
                        b->pos, b->n));
    }
    return LS_OK;
}

// Full attention: each rank's block of keys travels the ring; the next block's transfer runs
// while the current block is used.
static ls_status attention_ring(ls_sp_t *s, int64_t il) {
    size_t hd = (size_t)s->hd, bytes = (size_t)s->m * hd * sizeof(float);
    float *cur = s->recv[0], *next = s->recv[1], *cur_x = xv(s, s->recv[0], s->recv_h[0]), *next_x = xv(s, s->recv[1], s->recv_h[1]);
    for (int g = 0; g < s->n_kv; g++) // this rank's block, widened to f32: [K: kv][m][hd], then [V: kv][m][hd]
        LS_CHECK(ls_kv_load(s->kv, il, g, 0, s->m, cur + (size_t)g * (size_t)s->m * hd,
                            cur + ((size_t)s->n_kv + (size_t)g) * (size_t)s->m * hd));
    if (s->stage) LS_CHECK(ls_backend_download(s->be, cur_x, cur, 2 * (size_t)s->n_kv * bytes));
    LS_CHECK(clear_rows(s, s->m));
    int holder = s->rank;
    for (int step = 0; step < s->P; step++) {
        int from = (s->rank - step - 1 + s->P) % s->P;
        int64_t mh = ls_plan_owned_count(s->plan, holder), mf = ls_plan_owned_count(s->plan, from);
        ls_comm_batch b = {0};
        if (step < s->P - 1) {
            ls_xfer x[2] = {{cur_x, (size_t)mh * s->n_kv * hd * 2 * sizeof(float), (s->rank + 1) % s->P, false},
                            {next_x, (size_t)mf * s->n_kv * hd * 2 * sizeof(float), (s->rank - 1 + s->P) % s->P, true}};
            LS_CHECK(ls_comm_start(s->c, x, 2, (int)il, &b));
        }
        ls_range hr[2];
        int nh = ls_plan_owned(s->plan, holder, hr);
        for (int c = 0, row = 0; c < s->n_own; c++) {
            int64_t len = s->own[c].hi - s->own[c].lo;
            for (int d = 0, off = 0; d < nh; d++) {
                int64_t hl = hr[d].hi - hr[d].lo;
                if (hl > 0 && hr[d].lo < s->own[c].hi) // not entirely in this chunk's future
                    LS_CHECK(attend(s, il, row, len, s->own[c].lo, cur + (size_t)off * hd, cur + ((size_t)s->n_kv * (size_t)mh + (size_t)off) * hd,
                                    mh, hr[d].lo, hl));
                off += (int)hl;
            }
            row += (int)len;
        }
        if (step < s->P - 1) {
            LS_CHECK(ls_comm_wait(s->c, &b));
            if (s->stage) LS_CHECK(ls_backend_upload(s->be, next, next_x, (size_t)mf * s->n_kv * hd * 2 * sizeof(float)));
            float *t = cur, *tx = cur_x;
            cur = next, next = t, cur_x = next_x, next_x = tx;
            holder = from;
        }
    }
    return LS_OK;
}

// --- prefill --------------------------------------------------------------------------------

// The micro-batch's keys and values [n][n_kv][hd] into cache slots slot0.. of each KV head.
static ls_status store_rows(ls_sp_t *s, int64_t il, int64_t slot0, int64_t n) {
    return ls_kv_store(s->kv, il, s->kk, s->vv, slot0, n);
}

static ls_rows rows_at(ls_sp_t *s, int64_t r0, int64_t n) {
    const ls_model_config *c = &s->e->cfg;
    int64_t nq = nq_of(s);
    return (ls_rows){.m = n, .x = s->x + r0 * c->n_embd, .h = s->h, .q = s->q + r0 * nq, .k = s->kk, .v = s->vv,
                     .q_sink = s->rule.kind == LS_ATTN_SINK ? s->q_sink + r0 * nq : NULL, .att = s->att + r0 * nq,
                     .gate = s->gate, .up = s->up, .pos = s->pos + r0, .pos_sink = s->pos_sink + r0};
}

static ls_status prefill_layer(ls_sp_t *s, int64_t il) {
    const ls_model_config *c = &s->e->cfg;
    ls_rope_freqs f = {c->rope.n_rot, s->inv_freq, s->attn_factor, c->rope_halves ? LS_ROPE_PAIR_HALVES : LS_ROPE_PAIR_ADJACENT};
    ls_comm_set_layer(s->c, (int)il);
    for (int64_t r0 = 0; r0 < s->m; r0 += s->e->ubatch) { // projections, micro-batch by micro-batch
        int64_t n = s->m - r0 < s->e->ubatch ? s->m - r0 : s->e->ubatch;
        ls_rows r = rows_at(s, r0, n);
        LS_CHECK(ls_layer_qkv(s->e, il, &r, &f));
        LS_CHECK(store_rows(s, il, r0, n));
    }
    LS_CHECK(ls_plan_ring(s->plan) ? attention_ring(s, il) : attention_local(s, il));
    for (int64_t r0 = 0; r0 < s->m; r0 += s->e->ubatch) {
        int64_t n = s->m - r0 < s->e->ubatch ? s->m - r0 : s->e->ubatch;
        ls_rows r = rows_at(s, r0, n);
        LS_CHECK(ls_layer_out_ffn(s->e, il, &r));
    }
    ls_comm_set_layer(s->c, -1);
    return LS_OK;
}

// The owner of position n - 1 computes its logits and sends them to the leader.
static ls_status last_logits(ls_sp_t *s, float *out) {
    const ls_model_config *c = &s->e->cfg;
    int owner = ls_plan_owner(s->plan, s->n - 1);
    size_t bytes = (size_t)c->n_vocab * sizeof(float);
    bool dev_x = ls_comm_device_buffers(s->c); // the exchange takes the backend buffer itself
    if (owner == s->rank) {
        int64_t row = own_slot(s, s->n - 1);
        LS_CHECK(ls_output_logits(s->e, s->x + row * c->n_embd, 1, s->h, s->logits));
        if (s->rank == 0) return out ? ls_backend_download(s->be, out, s->logits, bytes) : LS_OK;
        if (!dev_x) LS_CHECK(ls_backend_download(s->be, s->logits_h, s->logits, bytes));
    } else if (s->rank != 0) {
        return LS_OK;
    }
    ls_xfer x = {dev_x ? s->logits : s->logits_h, bytes, s->rank == 0 ? owner : 0, s->rank == 0};
    ls_comm_batch b;
    LS_CHECK(ls_comm_start(s->c, &x, 1, LS_TAG_LOGITS, &b));
    LS_CHECK(ls_comm_wait(s->c, &b));
    if (s->rank == 0 && out) {
        if (dev_x) LS_CHECK(ls_backend_download(s->be, out, s->logits, bytes));
        else memcpy(out, s->logits_h, bytes);
    }
    return LS_OK;
}

static ls_status own_logits(ls_sp_t *s, const ls_forward_opts *o) {
    const ls_model_config *c = &s->e->cfg;
    for (int64_t r = 0; r < s->m; r++) {
        if (s->pos[r] < o->logits_from) continue;
        int64_t n = 1; // a run of rows wanting logits, at most LOGIT_ROWS
        while (n < LOGIT_ROWS && r + n < s->m && s->pos[r + n] >= o->logits_from) n++;
        LS_CHECK(ls_output_logits(s->e, s->x + r * c->n_embd, n, s->h, s->logits));
        LS_CHECK(ls_backend_download(s->be, s->logits_h, s->logits, (size_t)(n * c->n_vocab) * sizeof(float)));
        for (int64_t i = 0; i < n; i++) LS_CHECK(o->on_logits(o->ctx, s->pos[r + i], s->logits_h + i * c->n_vocab));
        r += n - 1;
    }
    return LS_OK;
}

// After a layer: the leader reports progress; with checkpoints its answer reaches every rank,
// so all stop together (the answer's status) or go on.
static ls_status checkpoint(ls_sp_t *s, int64_t done) {
    int32_t answer = LS_OK;
    if (s->rank == 0 && s->on_progress) {
        answer = (int32_t)s->on_progress(s->progress_ctx, done, s->n);
        if (answer != LS_OK && !s->checkpoints) return (ls_status)answer;
    }
    if (!s->checkpoints) return LS_OK;
    ls_comm_set_layer(s->c, -1);
    LS_CHECK(ls_comm_bcast(s->c, &answer, sizeof answer, 0));
    if (answer == LS_OK) return LS_OK;
    if (s->rank == 0) return (ls_status)answer; // the leader's callback said why
    return LS_ERR((ls_status)answer, "rank %d: stopped by the leader (%s)", s->rank, ls_status_name((ls_status)answer));
}

ls_status ls_sp_prefill(ls_sp_t *s, const int32_t *tokens, const ls_forward_opts *o, float *last) {
    if (s->len) return LS_ERR(LS_ERR_INVALID, "prefill of a sequence that is not empty");
    int64_t slot_cap = s->rule.kind == LS_ATTN_SINK ? s->rule.sinks + s->rule.window : 0;
    for (int k = 0, row = 0; k < s->n_own; k++)
        for (int64_t p = s->own[k].lo; p < s->own[k].hi; p++, row++) {
            s->ids[row] = tokens[p];
            s->pos[row] = p;
            s->pos_sink[row] = p < slot_cap ? p : slot_cap;
        }
    if (s->m) LS_CHECK(ls_op_get_rows(s->be, &s->e->tok_embd, s->ids, s->m, s->x));
    for (int64_t il = 0; il < s->e->cfg.n_layer; il++) {
        LS_CHECK(prefill_layer(s, il));
        LS_CHECK(checkpoint(s, (il + 1) * s->n / s->e->cfg.n_layer));
    }
    if (o && o->on_logits) LS_CHECK(own_logits(s, o));
    LS_CHECK(last_logits(s, last));
    s->len = s->n;
    return LS_OK;
}

// --- decode ---------------------------------------------------------------------------------

// Chooses where position p is stored: each block of DECODE_BLOCK positions goes to the rank
// holding the fewest keys (the same choice on every rank).
static int decode_owner(ls_sp_t *s, int64_t p) {
    if ((p - s->n) % DECODE_BLOCK == 0) {
        int best = 0;
        for (int r = 1; r < s->P; r++)
            if (ls_plan_owned_count(s->plan, r) + s->loads[r] < ls_plan_owned_count(s->plan, best) + s->loads[best]) best = r;
        s->decode_owner = best;
    }
    s->loads[s->decode_owner]++;
    return s->decode_owner;
}

// Attention of the single decode row over this rank's keys, merged across ranks.
static ls_status attention_decode(ls_sp_t *s, int64_t il, int64_t p) {
    size_t nq = (size_t)nq_of(s), part = nq + (size_t)s->n_head, f = sizeof(float);
    LS_CHECK(clear_rows(s, 1));
    for (int i = 0; i < s->n_local; i++) {
        const seg *g = &s->local[i];
        LS_CHECK(attend_own(s, il, 0, 1, p, g->slot, g->pos, g->n));
    }
    float *mine = s->part, *all = s->gather;
    LS_CHECK(ls_backend_copy(s->be, mine, 0, s->att, 0, nq * f, 1));
    LS_CHECK(ls_backend_copy(s->be, mine + nq, 0, s->lse, 0, (size_t)s->n_head * f, 1));
    if (s->stage) LS_CHECK(ls_backend_download(s->be, s->part_h, mine, part * f));
    LS_CHECK(ls_comm_allgather(s->c, xv(s, mine, s->part_h), xv(s, all, s->gather_h), part * f));
    if (s->stage) LS_CHECK(ls_backend_upload(s->be, all, s->gather_h, (size_t)s->P * part * f));
    // rank 0's part, then the others merged in rank order
    LS_CHECK(ls_backend_copy(s->be, s->att, 0, all, 0, nq * f, 1));
    LS_CHECK(ls_backend_copy(s->be, s->lse, 0, all + nq, 0, (size_t)s->n_head * f, 1));
    for (int r = 1; r < s->P; r++)
        LS_CHECK(ls_op_attn_merge(s->be, s->att, s->lse, all + (size_t)r * part, all + (size_t)r * part + nq, s->n_head, s->hd));
    return LS_OK;
}

ls_status ls_sp_decode(ls_sp_t *s, int32_t token, float *logits) {
    const ls_model_config *c = &s->e->cfg;
    if (s->len < s->n) return LS_ERR(LS_ERR_INVALID, "decode before prefill");
    if (s->len - s->n >= s->max_new)
        return LS_ERR(LS_ERR_RANGE, "the sequence has room for %lld decoded tokens", (long long)s->max_new);
    int64_t p = s->len, slot = -1;
    int owner = decode_owner(s, p);
    if (owner == s->rank) { // this rank stores the new key/value: extend or open its decode segment
        slot = s->m + s->decode_len;
        if (s->decode_len >= s->decode_room)
            return LS_ERR(LS_ERR_INTERNAL, "rank %d: decode room of %lld keys exceeded", s->rank, (long long)s->decode_room);
        seg *last = s->n_local > s->n_own ? &s->local[s->n_local - 1] : NULL;
        if (last && last->pos + last->n == p) last->n++;
        else s->local[s->n_local++] = (seg){p, 1, slot};
    }
    int64_t slot_cap = s->rule.kind == LS_ATTN_SINK ? s->rule.sinks + s->rule.window : 0;
    s->pos[0] = p;
    s->pos_sink[0] = p < slot_cap ? p : slot_cap;
    LS_CHECK(ls_op_get_rows(s->be, &s->e->tok_embd, &token, 1, s->x));
    ls_rope_freqs f = {c->rope.n_rot, s->inv_freq, s->attn_factor, c->rope_halves ? LS_ROPE_PAIR_HALVES : LS_ROPE_PAIR_ADJACENT};
    for (int64_t il = 0; il < c->n_layer; il++) {
        ls_rows r = rows_at(s, 0, 1);
        LS_CHECK(ls_layer_qkv(s->e, il, &r, &f));
        if (slot >= 0) LS_CHECK(store_rows(s, il, slot, 1));
        ls_comm_set_layer(s->c, (int)il);
        LS_CHECK(attention_decode(s, il, p));
        ls_comm_set_layer(s->c, -1);
        LS_CHECK(ls_layer_out_ffn(s->e, il, &r));
    }
    s->decode_len += owner == s->rank;
    s->len++;
    if (s->rank == 0 && logits) {
        LS_CHECK(ls_output_logits(s->e, s->x, 1, s->h, s->logits));
        LS_CHECK(ls_backend_download(s->be, logits, s->logits, (size_t)c->n_vocab * sizeof(float)));
    }
    return LS_OK;
}
