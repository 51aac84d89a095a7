// tasks_impl.h — private to worker/: what tasks.c (one process) and sp_tasks.c (a worker group)
// share: the negative log-likelihood accumulator of perplexity.
#ifndef LS_TASKS_IMPL_H
#define LS_TASKS_IMPL_H

#include "ls_tasks.h"

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
