// engine_impl.h — private to worker/: the engine and sequence structures shared by
// engine.c (loading, sequences) and forward.c (the layer loop).
#ifndef LS_ENGINE_IMPL_H
#define LS_ENGINE_IMPL_H

#include "ls_engine.h"

typedef struct layer {
    ls_weight wq, wk, wv, wo, w_gate, w_up, w_down;
    float *attn_norm, *ffn_norm;  // [n_embd], f32 copies (small)
    float *bq, *bk, *bv, *bo;     // optional biases, f32 copies, or NULL
} layer;

typedef struct activations {      // sized once for `ubatch` tokens
    float *x;                     // [ub][n_embd] residual stream
    float *h;                     // [ub][n_embd] normalized / projected
    float *q;                     // [ub][n_head * hd]
    float *k, *v;                 // [ub][n_kv_head * hd]
    float *att;                   // [ub][n_head * hd]
    float *gate, *up;             // [ub][n_ff]
    float *logits;                // [LOGIT_ROWS][n_vocab]
    int64_t *pos;                 // [ub]
} activations;

#define LOGIT_ROWS 16             // rows of logits computed at once

struct ls_engine {
    ls_gguf_t *gguf;
    ls_model_config cfg;          // cfg.rope holds the overrides applied
    ls_tokenizer_t *tok;
    ls_backend_t *be;
    ls_weight tok_embd, output;
    float *output_norm;           // [n_embd]
    layer *layers;                // [n_layer]
    int64_t ubatch;
    activations act;
    ls_buf notes;
};

struct ls_seq {
    ls_engine_t *e;
    int64_t cap, len;
    float *k, *v;                 // [n_layer][n_kv_head][cap][hd]
    float *inv_freq;              // [n_rot / 2], fixed for the sequence
    float attn_factor;
};

ls_status ls_engine_forward_ubatch(ls_engine_t *e, ls_seq_t *s, const int32_t *tokens, int64_t m,
                                   int64_t logits_from, const ls_forward_opts *o, int64_t index0);

#endif // LS_ENGINE_IMPL_H
