// ls_tasks.h — what a worker does with a sequence: generate text after a prompt (sampling,
// stop on end-of-generation tokens, stop strings or a length, text streamed in whole UTF-8
// characters with possible stop-string prefixes held back), and score a text's perplexity
// with llama.cpp's llama-perplexity protocol. Tests: tests/oracle/test_generate.py,
// tests/oracle/test_perplexity.py, tests/unit/test_engine.c.
#ifndef LS_TASKS_H
#define LS_TASKS_H

#include "ls_engine.h"
#include "ls_sampler.h"

// --- generation -----------------------------------------------------------------------------
typedef enum ls_stop_reason { LS_STOP_EOG, LS_STOP_STRING, LS_STOP_LENGTH } ls_stop_reason;
const char *ls_stop_reason_name(ls_stop_reason r); // "eog", "stop", "length"

typedef struct ls_gen_opts {
    int64_t max_tokens;           // generate at most this many
    ls_attn_rule rule;            // attention rule (zeroed: full)
    bool stream;                  // sink/window rule over a bounded cache: no length limit
    ls_sampler_opts sampling;
    const char *const *stop;      // stop strings (not included in the text)
    size_t n_stop;
    bool ignore_eog;              // keep going past end-of-generation tokens
    ls_progress_fn on_prefill;    // (optional) prefill progress; not LS_OK: stop with that status
    void *progress_ctx;
    bool checkpoints;             // worker groups: share the leader's progress answer per layer
                                  // (ls_sp_opts), so every rank can stop on a cancel
} ls_gen_opts;

typedef struct ls_gen_result {
    ls_buf text;                  // the generated text, as streamed
    ls_vec_i32 tokens;            // the generated ids (an end-of-generation token is not included)
    int64_t prompt_tokens;
    double prefill_ms, decode_ms;
    ls_stop_reason stop;
} ls_gen_result;
void ls_gen_result_free(ls_gen_result *r);

// Receives generated text as it becomes final.
typedef ls_status (*ls_text_fn)(void *ctx, const char *text, size_t len);

// Prefills the prompt (at least one token) into a fresh sequence of capacity
// n_prompt + max_tokens (or a bounded streaming cache), then samples until a stop condition.
ls_status ls_generate(ls_engine_t *e, const int32_t *prompt, int64_t n_prompt, const ls_gen_opts *o,
                      ls_text_fn on_text, void *text_ctx, ls_gen_result *res);

// What the generation loop runs the model through: the engine (ls_generate), or a worker
// group (ls_sp_generate). Both leave the logits of the last token in `logits` [n_vocab].
typedef struct ls_stepper {
    ls_status (*prefill)(void *ctx, const int32_t *ids, int64_t n, float *logits);
    ls_status (*step)(void *ctx, int32_t id, float *logits);
    void *ctx;
} ls_stepper;
ls_status ls_generate_with(const ls_stepper *st, const ls_tokenizer_t *tok, const int32_t *prompt, int64_t n_prompt,
                           const ls_gen_opts *o, ls_text_fn on_text, void *text_ctx, ls_gen_result *res);

// --- perplexity -----------------------------------------------------------------------------
// The text is cut into chunks of ctx tokens (at most max_chunks, <= 0: all). Each chunk runs in
// a fresh sequence under the attention rule; when the model adds BOS, the chunk's first token
// is replaced by BOS. The second half of each chunk is scored, -log p(token j+1 | ..j) for j in
// [ctx/2, ctx-1) (llama-perplexity), or with score_all every j in [0, ctx-1).
typedef void (*ls_ppl_chunk_fn)(void *ctx, int64_t chunk, int64_t n_chunks, double ppl_so_far);
// Receives each scored token's negative log-likelihood and its position in the text.
typedef void (*ls_nll_fn)(void *ctx, int64_t position, double nll);

typedef struct ls_ppl_opts {
    int64_t ctx, max_chunks;
    ls_attn_rule rule;            // (zeroed: full)
    bool score_all;
    ls_nll_fn on_nll;             // (optional)
    void *nll_ctx;
    ls_ppl_chunk_fn on_chunk;     // (optional) after each chunk
    void *chunk_ctx;
    ls_progress_fn on_progress;   // (optional) within a chunk; not LS_OK: stop with that status
    void *progress_ctx;
    bool checkpoints;             // worker groups: as in ls_gen_opts
} ls_ppl_opts;

typedef struct ls_ppl_result {
    double ppl, ppl_stderr;       // exp(mean NLL) and its standard error, as llama-perplexity
    int64_t scored, chunks, ctx;  // scored tokens
    double ms;
} ls_ppl_result;

// Needs at least 2 * ctx tokens, as llama-perplexity does. A perplexity that is not finite
// (the model's logits are not) is an error.
ls_status ls_perplexity(ls_engine_t *e, const int32_t *tokens, int64_t n, const ls_ppl_opts *o,
                        ls_ppl_result *res);

// --- streaming perplexity ---------------------------------------------------------------------
// One unbounded sequence under a sink or window rule over a bounded cache (memory does not
// grow with the text): tokens are fed in any pieces as they are read and every token after
// the first is scored. A report goes out about every report_every scored tokens.
typedef struct ls_ppl_stream ls_ppl_stream_t;
typedef struct ls_ppl_stream_opts {
    ls_attn_rule rule;
    int64_t report_every;
    ls_ppl_chunk_fn on_report;    // (optional) chunk = report number, n_chunks = -1
    void *report_ctx;
    ls_nll_fn on_nll;             // (optional)
    void *nll_ctx;
} ls_ppl_stream_opts;
ls_status ls_ppl_stream_init(ls_engine_t *e, const ls_ppl_stream_opts *o, ls_ppl_stream_t **out);
ls_status ls_ppl_stream_feed(ls_ppl_stream_t *st, const int32_t *tokens, int64_t n);
// The result so far (scored = tokens scored; chunks = reports; ctx = the cache's capacity);
// an error when the perplexity is not finite.
ls_status ls_ppl_stream_result(const ls_ppl_stream_t *st, ls_ppl_result *res);
void ls_ppl_stream_free(ls_ppl_stream_t *st);

#endif // LS_TASKS_H
