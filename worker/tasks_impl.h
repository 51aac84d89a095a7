// tasks_impl.h — private to worker/: what tasks.c (one process), sp_tasks.c (a worker group)
// and sched.c (many sequences) share: one generation's state between model steps, and the
// negative log-likelihood accumulator of perplexity.
#ifndef LS_TASKS_IMPL_H
#define LS_TASKS_IMPL_H

#include "ls_tasks.h"

// One generation between model steps. ls_generate_with's loop and the scheduler
// (worker/sched.c) both drive it: after each forward, ls_gen_take gets the logits of the last
// token fed, samples the next one, streams its text and checks the stop conditions.
typedef struct ls_gen ls_gen_t;
// The sequence a generation needs: room for the prompt and max_tokens (or a streaming cache).
ls_seq_opts ls_gen_seq_opts(const ls_gen_opts *o, int64_t n_prompt);
// Checks the prompt (at least one token) and settings and starts the result (res->stop =
// length until something else stops it). o, the stop strings and tok must outlive the state.
ls_status ls_gen_begin(const ls_tokenizer_t *tok, const int32_t *prompt, int64_t n_prompt, const ls_gen_opts *o,
                       ls_text_fn on_text, void *text_ctx, ls_gen_result *res, ls_gen_t **out);
// *more: the sampled token (ls_gen_last) is to be fed and its logits brought back; false when
// a stop condition (res->stop) or max_tokens ended the generation.
ls_status ls_gen_take(ls_gen_t *g, const float *logits /*[n_vocab]*/, bool *more);
int32_t ls_gen_last(const ls_gen_t *g);
// Ends the generation with rc (LS_OK: the held-back text goes out unless a stop string
// ended it) and frees the state (NULL: nothing); returns rc or the last text callback's error.
ls_status ls_gen_end(ls_gen_t *g, ls_status rc);

typedef struct nll_acc {
    double nll, nll2;
    int64_t count;
    ls_nll_fn on_nll;
    void *nll_ctx;
} nll_acc;

// -log p(target) from a row of logits, as llama-perplexity computes it (f32 max and
// differences, a double sum of expf), added to the accumulator.
void ls_nll_add(nll_acc *a, const float *logits, int32_t n_vocab, int32_t target, int64_t position);
// Perplexity, its uncertainty and the scored count from the sums (llama-perplexity's formula).
// A perplexity that is not finite is an error (never a result of nan or inf).
ls_status ls_nll_finish(const nll_acc *a, ls_ppl_result *res);

#endif // LS_TASKS_IMPL_H
