// engine_impl.h — private to worker/: the engine and sequence structures shared by
// engine.c (loading, sequences) and forward.c (the layer loop).
#ifndef LS_ENGINE_IMPL_H
#define LS_ENGINE_IMPL_H

#include "ls_engine.h"
#include "ls_kv.h"

typedef struct layer {             // every pointer is backend memory
    ls_weight wq, wk, wv, wo, w_gate, w_up, w_down;
    float *attn_norm, *ffn_norm;  // [n_embd], f32 copies (small)
    float *bq, *bk, *bv, *bo;     // optional biases, f32 copies, or NULL
} layer;

typedef struct activations {      // sized once for `ubatch` tokens, in backend memory but pos*
    float *x;                     // [ub][n_embd] residual stream
    float *h;                     // [ub][n_embd] normalized / projected
    float *q;                     // [ub][n_head * hd]
    float *q_sink;                // [ub][n_head * hd] queries at their StreamingLLM slot (sink rule)
    float *k, *v;                 // [ub][n_kv_head * hd]
    float *att;                   // [ub][n_head * hd]
    float *gate, *up;             // [ub][n_ff]
    float *logits;                // [LOGIT_ROWS][n_vocab] (backend memory)
    float *logits_host;           // [LOGIT_ROWS][n_vocab] host copy, when the backend is a device
    int64_t *pos;                 // [ub] RoPE positions of the micro-batch (relative to the base)
    int64_t *pos_sink;            // [ub] min(position, S + W): the slots q_sink is rotated at
} activations;

#define LOGIT_ROWS 16             // rows of logits computed at once

struct ls_engine {
    ls_gguf_t *gguf;
    ls_model_config cfg;          // cfg.rope holds the overrides applied
    ls_tokenizer_t *tok;
    ls_backend_t *be;
    ls_weight tok_embd, output;   // in the backend (the same one when the output is tied)
    float *output_norm;           // [n_embd]
    layer *layers;                // [n_layer]
    int64_t ubatch;
    activations act;
    ls_kv_t *kv;                  // the KV cache pool every sequence draws its pages from
    ls_buf notes;
};

// The sequence's keys and values live in pages of the engine's pool (ls_kv), at cache slots:
// position p < sinks at slot p; position p >= sinks at slot sink_slots + (p - wbase). A plain
// sequence has sinks = sink_slots = wbase = win0 = 0, so slot = position. A streaming
// sequence (sink or window rule) keeps its sinks on pages of their own (sink_slots: the sinks
// rounded up to whole pages) and evicts the oldest window entries before they would overflow
// `cap` tokens, moving win0 forward; each page wholly before win0 goes back to the pool and
// wbase moves up a page. It keeps its RoPE angles small: window keys are rotated at p - base,
// and when p - base grows large the kept keys are re-rotated and base moves up (sinks stay at
// their own positions: the sink rule only ever reads them through q_sink, rotated at the
// query's slot min(i, S + W)).
struct ls_seq {
    ls_engine_t *e;
    ls_attn_rule rule;
    bool stream;
    int64_t cap, len;             // tokens held at most; tokens seen (the next position)
    int64_t sinks, win0, base;
    int64_t sink_slots, wbase;    // slots before the window; the position at slot sink_slots
    ls_kv_seq_t *kv;              // the page table
    int64_t *shift_pos;           // [cap] scratch for re-rotation
    float *inv_freq;              // [n_rot / 2], fixed for the sequence
    float attn_factor;
};

// The cache slot of position p (see struct ls_seq).
static inline int64_t ls_seq_slot(const ls_seq_t *s, int64_t p) { return p < s->sinks ? p : s->sink_slots + (p - s->wbase); }

// Makes room for m more tokens in a streaming sequence (eviction, re-rotation, pages).
ls_status ls_seq_make_room(ls_seq_t *s, int64_t m);

// Rows of activations going through a layer (pointers into the caller's buffers).
typedef struct ls_rows {
    int64_t m;
    float *x;        // [m][n_embd] residual stream (updated by ls_layer_out_ffn)
    float *h;        // [m][n_embd] scratch
    float *q, *k, *v; // [m][n_head*hd], [m][n_kv*hd] x2: projections, q and k rotated
    float *q_sink;   // [m][n_head*hd] or NULL: q rotated at pos_sink (sink rule)
    float *att;      // [m][n_head*hd] attention output (input of ls_layer_out_ffn)
    float *gate, *up; // [m][n_ff] scratch
    const int64_t *pos, *pos_sink; // [m] RoPE positions
} ls_rows;

// h = rms(x)·attn_norm; q, k, v = projections (+bias); q and k rotated at pos, and q_sink (if
// asked) is q rotated at pos_sink. freqs: the sequence's rotary frequencies.
ls_status ls_layer_qkv(ls_engine_t *e, int64_t il, const ls_rows *r, const ls_rope_freqs *freqs);
// The two halves of ls_layer_qkv, for a micro-batch of many sequences (worker/batch.c): the
// projections once over all rows, then RoPE per sequence's rows with its own frequencies.
ls_status ls_layer_proj(ls_engine_t *e, int64_t il, const ls_rows *r);
ls_status ls_layer_rope(ls_engine_t *e, const ls_rows *r, const ls_rope_freqs *freqs);
// The sequence's rotary frequencies (fixed at ls_seq_init).
ls_rope_freqs ls_seq_freqs(const ls_seq_t *s);
// RoPE positions of the sequence's next m tokens: pos[m] (relative to its base) and
// pos_sink[m] (the StreamingLLM slots q_sink is rotated at).
void ls_seq_positions(const ls_seq_t *s, int64_t m, int64_t *pos, int64_t *pos_sink);
// Stores the rows' keys and values (positions p0.. of the sequence) into layer il of its cache
// and computes their attention over the cache under its rule into r->att.
ls_status ls_seq_attend(ls_engine_t *e, ls_seq_t *s, int64_t il, const ls_rows *r, int64_t p0);
// x += att·Wo (+bias); x += FFN(rms(x)·ffn_norm).
ls_status ls_layer_out_ffn(ls_engine_t *e, int64_t il, const ls_rows *r);
// logits[m][n_vocab] = rms(x)·output_norm · Woutᵀ for m <= LOGIT_ROWS rows; h: [m][n_embd] scratch.
ls_status ls_output_logits(ls_engine_t *e, const float *x, int64_t m, float *h, float *logits);

ls_status ls_engine_forward_ubatch(ls_engine_t *e, ls_seq_t *s, const int32_t *tokens, int64_t m,
                                   int64_t logits_from, const ls_forward_opts *o, int64_t index0);

#endif // LS_ENGINE_IMPL_H
