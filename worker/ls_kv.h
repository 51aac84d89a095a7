// ls_kv.h — the KV cache as one unit: a pool of fixed-size pages of backend memory shared by
// many sequences, each with its own page table. A page holds LS_KV_PAGE consecutive cache
// slots of every layer's keys and values ([layer][K, V][KV head][slot][row]), rows of
// head_dim elements in the pool's element type (f32, bf16, or q8_0: blocks of 32 along the
// head dimension). Sequences take pages as they grow and give them back when they drop a
// prefix (streaming eviction) or end; the pool grows up to its budget and reports running out
// as a status the caller can act on (admit fewer sequences, preempt one). The attention
// kernels read the pages in place (ls_attn_args' page table). Layout and why: docs/architecture.md.
// Tests: tests/unit/test_kv.c, tests/unit/test_kernels.c (paged attention).
#ifndef LS_KV_H
#define LS_KV_H

#include "ls_kernels.h"

// Slots per page: the CPU attention kernel's key block (64 keys), so a page is whole blocks
// and a block never straddles two pages; also the CUDA kernel's key tile.
#define LS_KV_PAGE 64

typedef struct ls_kv ls_kv_t;
typedef struct ls_kv_seq ls_kv_seq_t;

typedef struct ls_kv_shape {
    int n_layer, n_kv_head, head_dim;
    ls_dtype type; // LS_F32, LS_BF16 or LS_Q8_0 (head_dim a multiple of 32)
} ls_kv_shape;

// "f32", "bf16", "q8_0" -> the element type; false for anything else.
bool ls_kv_type_parse(const char *name, ls_dtype *out);
const char *ls_kv_type_name(ls_dtype t); // the name ls_kv_type_parse takes ("f32", "bf16", "q8_0")
// Bytes one token takes in the cache: keys and values of every layer,
// 2 * n_layer * n_kv_head * row bytes (head_dim * 4, head_dim * 2, or head_dim / 32 * 34).
uint64_t ls_kv_bytes_per_token(const ls_kv_shape *s);

// A pool on backend `be` of at most max_pages pages (<= 0: as many as the backend's memory
// holds). Memory is taken as sequences need pages, not up front. LS_ERR_INVALID/UNSUPPORTED
// for a shape the backend cannot hold (q8_0 on a device backend, head_dim not whole blocks).
ls_status ls_kv_init(ls_backend_t *be, const ls_kv_shape *shape, int64_t max_pages, ls_kv_t **out);
void ls_kv_free(ls_kv_t *kv); // after every sequence is freed
const ls_kv_shape *ls_kv_shape_of(const ls_kv_t *kv);
size_t ls_kv_page_bytes(const ls_kv_t *kv);
int64_t ls_kv_pages_used(const ls_kv_t *kv);  // held by sequences
int64_t ls_kv_pages_held(const ls_kv_t *kv);  // allocated (used + on the free list)
int64_t ls_kv_pages_max(const ls_kv_t *kv);   // the budget (INT32_MAX when unbounded)
// The pool in bytes (what a server reports as its KV memory, docs/protocol.md "KvUsage"):
// pages held by sequences, pages allocated (held + free), and the budget (0 when unbounded).
typedef struct ls_kv_usage {
    uint64_t in_use, allocated, budget;
} ls_kv_usage;
ls_kv_usage ls_kv_usage_of(const ls_kv_t *kv);

// A sequence: an empty page table over the pool.
ls_status ls_kv_seq_init(ls_kv_t *kv, ls_kv_seq_t **out);
void ls_kv_seq_free(ls_kv_seq_t *s); // its pages go back to the free list
int64_t ls_kv_seq_pages(const ls_kv_seq_t *s);

// Makes slots [0, n) usable, taking pages from the free list (growing the pool within its
// budget). Out of pages: LS_ERR_NOMEM naming the pages wanted and free, with nothing taken.
ls_status ls_kv_seq_reserve(ls_kv_seq_t *s, int64_t n_slots);
// Gives back pages [first, first + n) of the table; later slots move down by n pages.
ls_status ls_kv_seq_drop(ls_kv_seq_t *s, int64_t first, int64_t n);

// Stores m tokens' keys and values k, v [m][n_kv_head][head_dim] (f32, backend memory) of
// layer il at slots [slot0, slot0 + m), converting to the pool's type.
ls_status ls_kv_store(ls_kv_seq_t *s, int64_t il, const float *k, const float *v, int64_t slot0, int64_t m);
// Reads back rows [slot0, slot0 + n) of KV head g of layer il as f32 k, v [n][head_dim]
// (backend memory), widening bf16 and q8_0: e.g. to send them to another rank.
ls_status ls_kv_load(const ls_kv_seq_t *s, int64_t il, int g, int64_t slot0, int64_t n, float *k, float *v);
// Re-rotates the keys at slots [slot0, slot0 + n) of every layer and KV head by RoPE at
// positions pos[0..n) (e.g. -shift: a pure rotation), through f32 for bf16 and q8_0.
ls_status ls_kv_rotate(ls_kv_seq_t *s, int64_t slot0, int64_t n, const int64_t *pos, const ls_rope_freqs *f);
// Attention of layer il over the sequence's pages: a's queries, rule, key count and positions
// (n_kv, kv_sinks, kv_pos0, kv_gap: key j sits at slot j, or j + kv_gap past the sinks) as
// the caller sets them; the key layout is filled in here. With a->lse the result is a
// log-sum-exp partial that ls_op_attn_merge can merge with others.
ls_status ls_kv_attend(const ls_kv_seq_t *s, int64_t il, const ls_attn_args *a);

#endif // LS_KV_H
