// ls_model.h — model configuration read from GGUF metadata for the `llama` layout (the
// architectures llama, mistral, qwen2 and phi3, whose keys are prefixed with their name):
// hyperparameters, the RoPE configuration (base, scaling type and factor, YaRN keys,
// attention factor, per-frequency factor tensors) and the weight tensors, each checked
// against the shape the hyperparameters imply. Missing or inconsistent values are errors
// that name the key or tensor. Docs: docs/formats.md §3, docs/rope.md §4.
// Tests: tests/unit/test_model.c, tests/oracle/test_inspect.py.
#ifndef LS_MODEL_H
#define LS_MODEL_H

#include "ls_gguf.h"

typedef enum ls_rope_scaling {
    LS_ROPE_NONE,     // plain RoPE
    LS_ROPE_LINEAR,   // position interpolation: positions / factor
    LS_ROPE_NTK,      // static NTK-aware: base * factor^(n_rot/(n_rot-2))
    LS_ROPE_DYNAMIC,  // dynamic NTK (HF "dynamic")
    LS_ROPE_YARN,
    LS_ROPE_LLAMA3,   // per-frequency divisors (rope_freqs tensor, or computed)
    LS_ROPE_LONGROPE, // per-frequency factors, long and short sets
    LS_ROPE_SCALING_COUNT
} ls_rope_scaling;

const char *ls_rope_scaling_name(ls_rope_scaling s);
// Parses a name ("none", "linear", ...); false when unknown.
bool ls_rope_scaling_parse(const char *name, ls_rope_scaling *out);

typedef struct ls_rope_config {
    ls_rope_scaling scaling;
    int n_rot;            // rotated dimensions per head (= head_dim for llama)
    double freq_base;     // rope.freq_base (default 10000)
    double factor;        // scaling factor s (1 = none)
    int64_t orig_ctx;     // pre-training context (YaRN, LongRoPE, llama3, dynamic)
    double yarn_beta_fast, yarn_beta_slow; // 32, 1 by default
    double attn_factor;   // YaRN: multiplies g(s) = 1 + 0.1 ln s (llama.cpp's rope.scaling.attn_factor
                          // and --yarn-attn-factor); LongRoPE: the factor itself; 0 = not given
    double llama3_low_freq_factor, llama3_high_freq_factor; // 1, 4
    // Per-frequency tensors, [n_rot/2] f32 inside the model mapping, or NULL.
    const float *freq_factors;  // rope_freqs: divisors (Llama 3.1 style)
    const float *factors_long;  // rope_factors_long (LongRoPE)
    const float *factors_short; // rope_factors_short (LongRoPE)
} ls_rope_config;

typedef struct ls_layer_weights {
    const ls_gguf_tensor *attn_norm, *wq, *wk, *wv, *wo; // wq: ne [n_embd, n_head*head_dim]
    const ls_gguf_tensor *bq, *bk, *bv, *bo;             // optional biases, NULL if absent
    const ls_gguf_tensor *ffn_norm, *w_gate, *w_up, *w_down;
} ls_layer_weights;

typedef struct ls_model_config {
    char arch[32];
    char name[128];        // general.name, "" if absent
    int64_t n_ctx_train;   // llama.context_length
    int64_t n_embd, n_layer, n_ff, n_head, n_head_kv, head_dim, n_vocab;
    double rms_eps;
    bool tied_output;      // no output.weight: token_embd is the LM head
    ls_rope_config rope;
    bool rope_halves;      // q/k rotate pairs (i, i + n_rot/2), as HF and llama.cpp's qwen2 store them;
                           // else adjacent pairs (2i, 2i+1), llama's GGUF layout
    int64_t ctx_hint;      // the context the name or tokenizer claims (0: none); see below
    char ctx_hint_src[64];
    const ls_gguf_tensor *tok_embd, *output_norm, *output; // output == tok_embd when tied
    ls_layer_weights *layers; // [n_layer]
    // Sliding-window attention (Mistral, Qwen2 with use_sliding_window): the keys a window
    // layer's query sees, itself included (HF's sliding_window; attention.sliding_window), 0
    // when none; layer_window[il] is that or 0 for a global layer (attention.sliding_window_pattern,
    // one bool per layer; absent: every layer is a window layer).
    int64_t sliding_window;
    int64_t *layer_window; // [n_layer]
    // Phi-3's fused attn_qkv ([q; k; v] rows) and ffn_up ([gate; up] rows) are read through
    // views of their rows (wq..wv, w_gate and w_up point here): [n_layer][5], or NULL.
    ls_gguf_tensor *views;
} ls_model_config;

// The rotary frequencies of a sequence of seq_len tokens (dynamic NTK and LongRoPE depend on
// it; the others ignore it): inv_freq[i] for pair i < n_rot/2, computed in double from the
// method's formula (docs/rope.md §3) and rounded once to f32, and the factor that
// multiplies cos and sin (YaRN's mscale; 1 for the others).
// Refuses settings that would give NaN or nonsense (checked by ls_rope_compute too): a base
// over 1, a positive factor, YaRN's betas positive, Llama 3's 0 < low < high, per-frequency
// tensors finite and positive, every value finite. Messages name the setting, its value and
// how config.json, GGUF and the command line spell it.
ls_status ls_rope_check(const ls_rope_config *r);
ls_status ls_rope_compute(const ls_rope_config *r, int64_t seq_len, float *inv_freq, float *attn_factor);

// Reads and validates everything above. `cfg` owns `layers`: free with ls_model_config_free.
ls_status ls_model_config_load(const ls_gguf_t *g, ls_model_config *cfg);
void ls_model_config_free(ls_model_config *cfg);

// LongLoRA's pitfall: a checkpoint trained longer whose config lost rope_scaling. True (and
// a message with the fix) when the RoPE configuration, after overrides, has no scaling while the
// model's name ("...-100k-...") or tokenizer model_max_length claims more than its context.
bool ls_rope_scaling_missing(const ls_model_config *c, char *msg, size_t cap);

// Total bytes of the weight tensors.
uint64_t ls_model_weight_bytes(const ls_gguf_t *g);

#endif // LS_MODEL_H
