// ls_kernels.h — the backend-neutral op API. The CPU backend (kernels/cpu) implements it here;
// kernels/ref holds the plain twins every op is tested against (ls_ref.h), and kernels/cuda
// the device versions (ls_cuda.h). Nothing in kernels/ knows about MPI, jobs or sockets.
// Tests: tests/unit/test_kernels.c (CPU vs ref), tests/oracle/test_dequant.py (vs gguf-py),
// tests/gpu/test_ops.c (CUDA vs ref).
#ifndef LS_KERNELS_H
#define LS_KERNELS_H

#include "ls_base.h"

#ifdef __cplusplus
extern "C" {
#endif

// --- backends -----------------------------------------------------------------------------
// A backend runs the ops below: the CPU backend (a thread pool over host memory) or the CUDA
// backend (kernels/cuda, ls_cuda.h: device memory, a stream and cuBLAS). Each op returns
// LS_ERR_INVALID for inconsistent arguments.
typedef struct ls_backend ls_backend_t;

// n_threads <= 0: one per online CPU. first_cpu >= 0: bind thread i to CPU first_cpu + i (when
// there are enough CPUs; ranks sharing a host pass different first CPUs); < 0: no binding.
ls_status ls_backend_cpu_init(int n_threads, int first_cpu, ls_backend_t **out);
void ls_backend_free(ls_backend_t *b);
const char *ls_backend_name(const ls_backend_t *b);
int ls_backend_threads(const ls_backend_t *b);

// --- backend memory -------------------------------------------------------------------------
// Tensors handed to the ops below live in the backend's memory: host memory for the CPU
// backend, device memory for CUDA. Index arrays (token ids, positions, rotary frequencies)
// are host memory for every backend and are read during the call.
bool ls_backend_on_host(const ls_backend_t *b);
ls_status ls_backend_alloc(ls_backend_t *b, size_t bytes, void **out); // LS_ERR_NOMEM naming the size
void ls_backend_release(ls_backend_t *b, void *p);                      // NULL is fine
ls_status ls_backend_upload(ls_backend_t *b, void *dst, const void *host, size_t bytes);
ls_status ls_backend_download(ls_backend_t *b, void *host, const void *src, size_t bytes);
// rows x width bytes from src (rows spitch bytes apart) to dst (dpitch apart), both in
// backend memory. A single row may overlap its source (memmove).
ls_status ls_backend_copy(ls_backend_t *b, void *dst, size_t dpitch, const void *src, size_t spitch,
                          size_t width, size_t rows);
// Waits until every op issued so far has finished (ops may run asynchronously on a device;
// downloads wait by themselves). For timing.
ls_status ls_backend_sync(ls_backend_t *b);

// Activation precision of matmul. F32 (default): activations stay f32. LLAMACPP: activations
// are rounded as llama.cpp's CPU backend rounds them before its dot products: 8-bit blocks
// (Q8_0 with an fp16 scale for Q4_0/Q5_0/Q8_0 and Q4_1/Q5_1 weights, Q8_K with an f32 scale
// per 256 for K-quants), f16 for F16 weights, bf16 for BF16 weights, nothing for F32 — so
// results can be compared with llama.cpp's like for like.
typedef enum ls_act_precision { LS_ACT_F32, LS_ACT_LLAMACPP } ls_act_precision;
void ls_backend_set_act_precision(ls_backend_t *b, ls_act_precision p);

// A weight matrix as stored in the model file: n_out rows of n_in elements of `type`
// (GGUF ne = [n_in, n_out]); row r is output feature r, so y[r] = dot(row r, x).
typedef struct ls_weight {
    ls_dtype type;
    int64_t n_in, n_out;
    size_t row_bytes;
    const void *data;
} ls_weight;

// Makes a host weight (e.g. in a file mapping) usable by the backend. The CPU backend uses the
// bytes in place; the CUDA backend uploads them once and keeps them dequantized to bf16 on
// the device (2 bytes per weight; the GEMMs then read bf16). Undo with ls_backend_weight_release.
ls_status ls_backend_weight_load(ls_backend_t *b, const ls_weight *host, ls_weight *out);
void ls_backend_weight_release(ls_backend_t *b, ls_weight *w);

// --- ops ------------------------------------------------------------------------------------
// Shapes are given as [rows][cols], row-major, f32 unless said otherwise.

// y[m][n_out] = x[m][n_in] . W^T. Weights stay in their stored type: rows are dequantized into
// reusable tiles, never into a whole f32 copy. Activations as ls_backend_set_act_precision says.
ls_status ls_op_matmul(ls_backend_t *b, const ls_weight *w, const float *x, float *y, int64_t m);
// out[i][n_in] = row ids[i] of W (embedding lookup). Ids outside [0, n_out) are LS_ERR_INVALID.
ls_status ls_op_get_rows(ls_backend_t *b, const ls_weight *w, const int32_t *ids, int64_t m, float *out);
// y[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w, for m rows of n. y may be x.
ls_status ls_op_rmsnorm(ls_backend_t *b, const float *x, const float *w, float *y, int64_t m,
                        int64_t n, float eps);
// out[i] = silu(gate[i]) * up[i] for n elements. out may be gate or up.
ls_status ls_op_swiglu(ls_backend_t *b, const float *gate, const float *up, float *out, int64_t n);
// y[i] += x[i] for n elements.
ls_status ls_op_add(ls_backend_t *b, float *y, const float *x, int64_t n);
// y[i] = value for n elements (e.g. -inf into an lse buffer).
ls_status ls_op_fill(ls_backend_t *b, float *y, float value, int64_t n);
// rows x width elements from src (type src_t, rows spitch elements apart) to dst (dst_t,
// dpitch apart), converting: F32 -> BF16 (round to nearest even, as ls_f32_to_bf16), BF16 ->
// F32 (exact), or a plain F32/BF16 copy. Used for a bf16 KV cache. The CPU backend also
// converts F32 -> Q8_0 (blocks of 32 as ggml's quantize_row_q8_0 on AVX2: d = amax/127 in
// fp16, q = round-half-even(x/d)) and Q8_0 -> F32 (exact); width and pitches are then
// multiples of 32.
ls_status ls_op_convert(ls_backend_t *b, ls_dtype dst_t, void *dst, size_t dpitch, ls_dtype src_t, const void *src,
                        size_t spitch, size_t width, size_t rows);

// RoPE in place on x[m][n_heads][head_dim]: token t at position pos[t]; pair i of a head is
// (2i, 2i+1) for LS_ROPE_PAIR_ADJACENT (GGUF llama, Meta) or (i, i + n_rot/2) for
// LS_ROPE_PAIR_HALVES (HF rotate_half); only the first n_rot dimensions rotate. The angle is
// pos * inv_freq[i] in f32 from the exact integer position; cos and sin are multiplied by
// attn_factor (YaRN's mscale).
typedef enum ls_rope_pairing { LS_ROPE_PAIR_ADJACENT, LS_ROPE_PAIR_HALVES } ls_rope_pairing;
typedef struct ls_rope_freqs {
    int n_rot;
    const float *inv_freq; // [n_rot / 2]
    float attn_factor;
    ls_rope_pairing pairing;
} ls_rope_freqs;
ls_status ls_op_rope(ls_backend_t *b, float *x, int64_t m, int n_heads, int head_dim,
                     const int64_t *pos, const ls_rope_freqs *f);

// --- attention ------------------------------------------------------------------------------
// A rule says which keys query position i of query head h sees: at most two closed ranges of
// key positions (docs/attention.md). The kernels ask only ls_attn_ranges, and so does the
// sequence-parallel planner (worker/plan.c).
//   full   [0, i]
//   s2     group G, shift s = G/2: heads h < H/2 see [G*floor(i/G), i]; heads h >= H/2 see
//          [s + G*floor((i-s)/G), i] for i >= s and [0, i] before (no wrap-around)
//   sink   S sinks and a window of W predecessors: [0, S) and [max(S, i-W), i]
//   window [max(0, i-W), i]
typedef enum ls_attn_kind { LS_ATTN_FULL, LS_ATTN_S2, LS_ATTN_SINK, LS_ATTN_WINDOW, LS_ATTN_KIND_COUNT } ls_attn_kind;
typedef struct ls_attn_rule {
    ls_attn_kind kind;
    int64_t group;  // s2: G >= 2
    int64_t sinks;  // sink: S >= 0
    int64_t window; // sink, window: W >= 1
    int n_head;     // s2: the number of query heads (the split is at n_head / 2)
} ls_attn_rule;

const char *ls_attn_kind_name(ls_attn_kind k); // "full", "s2", "sink", "window"
bool ls_attn_kind_parse(const char *name, ls_attn_kind *out);
// LS_ERR_INVALID naming the problem for a rule that cannot be used (G < 2, W < 1, S < 0...).
ls_status ls_attn_rule_check(const ls_attn_rule *r);
// Fills lo[k], hi[k] (inclusive key positions) and returns the number of ranges (0..2). For
// sink, range 0 is the sinks and range 1 the window.
int ls_attn_ranges(const ls_attn_rule *r, int64_t i, int h, int64_t lo[2], int64_t hi[2]);

typedef struct ls_attn_args {
    const float *q;       // [n_q][n_head][head_dim]; query t is at position q_pos0 + t
    // (optional) the queries rotated at their StreamingLLM cache slot, min(i, S + W): used for
    // the sink range of the sink rule, so sink keys (rotated at their own index s) are seen at
    // the distance S + W - s. NULL: use q.
    const float *q_sink;
    // Keys in two segments: the first kv_sinks keys are positions 0..kv_sinks-1; key
    // kv_sinks + j is at position kv_pos0 + j (kv_pos0 >= kv_sinks). A plain cache has
    // kv_sinks = 0; a streaming cache keeps its sinks in front of a sliding window.
    // Key j sits at cache slot j (j < kv_sinks) or j + kv_gap (the window of a paged stream
    // starts on a page of its own). Contiguous (kv_pages NULL): slot s of KV head g is row
    // g * kv_stride + s of k and v. Paged: slot s is row s % kv_page_len of page
    // kv_pages[s / kv_page_len] (a host array, read during the call); KV head g of a page
    // starts g * kv_page_len rows in; k and v point at page 0, pages kv_page_bytes apart.
    const float *k, *v;   // rows of head_dim elements of kv_type
    ls_dtype kv_type;     // LS_F32 (0, the default), LS_BF16, or LS_Q8_0 (blocks of 32 along
                          // head_dim; the CPU backend only)
    const int32_t *kv_pages;
    int64_t kv_page_len, kv_gap;
    size_t kv_page_bytes;
    float *out;           // [n_q][n_head][head_dim]
    float *lse;           // [n_q][n_head] log-sum-exp of the scaled scores, or NULL
    int64_t n_q, q_pos0;
    int64_t n_kv, kv_sinks, kv_pos0, kv_stride;
    int n_head, n_kv_head, head_dim;
    float scale;          // usually 1/sqrt(head_dim)
    ls_attn_rule rule;
} ls_attn_args;

// Softmax attention over the visible keys, with exact log-sum-exp so partial results over
// disjoint key sets can be merged. A query that sees no key gets out = 0 and lse = -inf.
// Query head h reads KV head h / (n_head / n_kv_head). Work follows the visible keys: key
// blocks no query of a tile sees are never touched.
ls_status ls_op_attention(ls_backend_t *b, const ls_attn_args *a);

// The activations x[m][n] rounded as llama.cpp rounds them for weights of type t (see
// ls_act_precision), written to y (may be x). Used by the CPU backend's LLAMACPP mode.
void ls_act_round(ls_dtype t, const float *x, float *y, int64_t m, int64_t n);

// Merges two partial attention results over disjoint key sets, in place into (o1, lse1):
// o = (e^lse1 o1 + e^lse2 o2) / (e^lse1 + e^lse2), lse = log(e^lse1 + e^lse2); n rows of d.
ls_status ls_op_attn_merge(ls_backend_t *b, float *o1, float *lse1, const float *o2,
                           const float *lse2, int64_t n, int d);

// --- half-precision conversions (exact, subnormals included) ------------------------------
float ls_fp16_to_f32(uint16_t h);
uint16_t ls_f32_to_fp16(float f); // round to nearest even, NaN stays NaN
static inline float ls_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}
uint16_t ls_f32_to_bf16(float f); // round to nearest even, NaN stays quiet NaN

// --- dequantization -----------------------------------------------------------------------
// Types with a dequantizer: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K.
bool ls_dequant_supported(ls_dtype t);

// src: one row of n elements stored as type t (n a multiple of the type's block).
// dst: [n] f32. Results are bit-identical to ggml's dequantize_row_* and gguf-py's
// gguf.quants.dequantize. Returns LS_ERR_UNSUPPORTED for types without a dequantizer and
// LS_ERR_INVALID when n is not a multiple of the block.
ls_status ls_dequant_row(ls_dtype t, const void *src, float *dst, int64_t n);

#ifdef __cplusplus
}
#endif

#endif // LS_KERNELS_H
