// ls_engine.h — the single-process engine: a llama model loaded from GGUF (weights stay in
// the file mapping, in their stored types) running on a backend, and sequences with their
// own KV cache. The forward pass takes any number of tokens (prefill in micro-batches, or one
// at a time for decode) and hands out logits for the positions asked for, one row at a time,
// so no [n][vocab] buffer is ever needed. Tests: tests/oracle/test_forward.py (numpy
// reference), tests/unit/test_engine.c.
#ifndef LS_ENGINE_H
#define LS_ENGINE_H

#include "ls_kernels.h"
#include "ls_kv.h"
#include "ls_loader.h"
#include "ls_model.h"
#include "ls_settings.h" // defines: ls_rope_override, ls_context_limit (the job settings)
#include "ls_tokenizer.h"

typedef struct ls_engine ls_engine_t;
typedef struct ls_seq ls_seq_t;

// Where the engine runs. AUTO: the CUDA backend when this build has one and a GPU is visible,
// else the CPU. On CUDA, weights live on the device as bf16, and so do the activations and
// the KV cache (bf16 unless --kv-type says otherwise); logits come back to the host a few rows
// at a time.
typedef enum ls_device { LS_DEVICE_AUTO, LS_DEVICE_CPU, LS_DEVICE_CUDA } ls_device;
bool ls_device_parse(const char *name, ls_device *out); // "auto", "cpu", "cuda"
const char *ls_device_name(ls_device d);

typedef struct ls_engine_opts {
    ls_device device;    // default AUTO
    int gpu;             // CUDA device (CUDA backend), taken modulo the number of GPUs
    int n_threads;       // <= 0: all cores
    int first_cpu;       // bind thread i to CPU first_cpu + i; < 0: no binding
    int64_t ubatch;      // tokens per micro-batch in prefill (bounds activation memory); <= 0: 512
    ls_act_precision act; // matmul activations: f32 (default) or rounded as llama.cpp rounds them
    // KV cache elements (ls_kv.h): LS_F32, LS_BF16 or LS_Q8_0 (the CPU backend only) when
    // kv_type_set; else the backend's default: f32 on the CPU, bf16 on a GPU.
    ls_dtype kv_type;
    bool kv_type_set;
    int64_t kv_mem;      // budget of the KV cache pool in bytes; <= 0: the backend's memory
    ls_rope_override rope;
    ls_load_opts load;   // LoRA adapters to merge (the model path may also be a HF checkpoint directory)
} ls_engine_opts;
ls_engine_opts ls_engine_opts_default(void);

// Loads and validates the model (a GGUF file or a Hugging Face checkpoint directory, with
// any LoRA adapters merged; configuration, tokenizer) and starts the backend.
// Each RoPE override that changes the file's value is reported once through LS_INFO-level
// lines collected in ls_engine_notes().
ls_status ls_engine_load(const char *path, const ls_engine_opts *opts, ls_engine_t **out);
void ls_engine_free(ls_engine_t *e);
const ls_model_config *ls_engine_config(const ls_engine_t *e);
const ls_tokenizer_t *ls_engine_tokenizer(const ls_engine_t *e);
const ls_gguf_t *ls_engine_gguf(const ls_engine_t *e);
ls_backend_t *ls_engine_backend(ls_engine_t *e);
ls_dtype ls_engine_kv_type(const ls_engine_t *e); // the KV cache's element type
ls_kv_usage ls_engine_kv_usage(const ls_engine_t *e); // its pool's bytes in use, allocated, budget
// Human-readable lines about settings that differ from the model file ("" if none).
const char *ls_engine_notes(const ls_engine_t *e);

// A sequence with room for `capacity` tokens of KV cache, its pages taken from the engine's
// pool at once (LS_ERR_NOMEM when the pool's budget or the backend's memory cannot hold them),
// with full causal attention. The RoPE frequencies are fixed for the sequence from its capacity (dynamic NTK
// and LongRoPE depend on the length; freezing them keeps cached keys and new queries
// consistent).
ls_status ls_seq_init(ls_engine_t *e, int64_t capacity, ls_seq_t **out);

typedef struct ls_seq_opts {
    int64_t capacity;  // tokens (ignored by streaming sequences, which size themselves)
    ls_attn_rule rule; // full, s2, sink or window (n_head is filled in from the model)
    // Sink and window rules only: an unbounded stream over a cache of S + W + one
    // micro-batch: the oldest window entries are evicted as tokens arrive, so memory stays
    // flat however long the sequence runs.
    bool stream;
} ls_seq_opts;
// A sequence under an attention rule. Rules that can never evict (S + W + 1 > capacity in a
// non-streaming sequence) and streaming under full or s2 attention are LS_ERR_INVALID.
ls_status ls_seq_init_opts(ls_engine_t *e, const ls_seq_opts *o, ls_seq_t **out);
void ls_seq_free(ls_seq_t *s);
int64_t ls_seq_len(const ls_seq_t *s); // tokens seen (a stream may hold fewer)
int64_t ls_seq_capacity(const ls_seq_t *s);
void ls_seq_reset(ls_seq_t *s); // empty again, same capacity and frequencies

// Receives the logits of token `index` (counted within the ls_engine_forward call).
typedef ls_status (*ls_logits_fn)(void *ctx, int64_t index, const float *logits /*[n_vocab]*/);
// Called after each micro-batch (worker groups: each layer) with the work done so far, in
// tokens, and the total. Anything but LS_OK stops the call with that status (e.g.
// LS_ERR_CANCELLED when a client cancelled the job).
typedef ls_status (*ls_progress_fn)(void *ctx, int64_t done, int64_t total);

typedef struct ls_forward_opts {
    int64_t logits_from;   // logits for tokens [logits_from, n) of this call; n or more: none
    ls_logits_fn on_logits;
    void *ctx;
    ls_progress_fn on_progress; // (optional)
    void *progress_ctx;
} ls_forward_opts;

// Runs tokens[0..n) through the model at positions len..len+n-1 of the sequence and appends
// them to its cache (a streaming sequence evicts first as needed). Ids outside the vocabulary
// and a full (non-streaming) cache are LS_ERR_INVALID / LS_ERR_RANGE, checked before anything
// runs.
ls_status ls_engine_forward(ls_engine_t *e, ls_seq_t *s, const int32_t *tokens, int64_t n,
                            const ls_forward_opts *o);

// --- many sequences in one pass (worker/batch.c) ------------------------------------------
// One sequence's share of a batch: its next tokens, appended at positions len..len+n-1 as
// ls_engine_forward would, and which of them want logits (`index` counts within the item).
typedef struct ls_batch_item {
    ls_seq_t *seq;
    const int32_t *tokens;
    int64_t n_tokens;      // >= 1
    int64_t logits_from;   // logits for tokens [logits_from, n_tokens); n_tokens or more: none
    ls_logits_fn on_logits;
    void *ctx;
} ls_batch_item;

// Runs the items' tokens together, packed into micro-batches of up to `ubatch` rows (an item
// may span several): per layer the projections and the FFN run once over all rows (the
// weights are read once for the whole micro-batch); RoPE, the cache and attention per
// sequence, under its own rule and frequencies. Decode of B sequences is one call of B items
// of one token each. Logits go out after each micro-batch, LOGIT_ROWS rows of any items at a
// time. Every item is checked before anything runs (a NULL or foreign sequence, one listed
// twice, ids outside the vocabulary, a full non-streaming cache): the first bad item is
// refused with an error naming it, *bad (when not NULL) is its index and no sequence has
// changed, so the caller can drop it and run the others; otherwise *bad = -1. A callback that
// returns other than LS_OK stops the call with its status (sequences in the micro-batches
// that ran have advanced).
ls_status ls_engine_forward_batch(ls_engine_t *e, const ls_batch_item *items, int64_t n, int64_t *bad);

#endif // LS_ENGINE_H
