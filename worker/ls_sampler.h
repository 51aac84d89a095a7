// ls_sampler.h — choosing the next token from logits: repetition penalty, then top-k, top-p
// and min-p on the penalized logits, then temperature, then a draw (llama.cpp's default
// order). Temperature <= 0 is greedy (the highest logit after penalties). A seeded sampler
// draws the same tokens every run. Holds its buffers, so sampling never allocates.
// Its options (ls_sampler_opts) are job settings, so they live in ls_settings.h.
// Tests: tests/unit/test_sampler.c.
#ifndef LS_SAMPLER_H
#define LS_SAMPLER_H

#include "ls_base.h"
#include "ls_settings.h" // defines: ls_sampler_opts, ls_sampler_opts_default (the job settings)

typedef struct ls_sampler ls_sampler_t;
ls_status ls_sampler_init(const ls_sampler_opts *o, int32_t n_vocab, ls_sampler_t **out);
void ls_sampler_free(ls_sampler_t *s);
// history: the tokens so far (prompt and generated), for the repetition penalty.
int32_t ls_sampler_sample(ls_sampler_t *s, const float *logits, const int32_t *history, size_t n_history);

#endif // LS_SAMPLER_H
