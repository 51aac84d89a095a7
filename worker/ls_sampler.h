// ls_sampler.h — choosing the next token from logits: repetition penalty, then top-k, top-p
// and min-p on the penalized logits, then temperature, then a draw (llama.cpp's default
// order). Temperature <= 0 is greedy (the highest logit after penalties). A seeded sampler
// draws the same tokens every run. Holds its buffers, so sampling never allocates.
// Tests: tests/unit/test_sampler.c.
#ifndef LS_SAMPLER_H
#define LS_SAMPLER_H

#include "ls_base.h"

typedef struct ls_sampler_opts {
    float temp;           // <= 0: greedy
    int top_k;            // <= 0: off
    float top_p;          // >= 1: off
    float min_p;          // <= 0: off
    float repeat_penalty; // 1: off; divides positive logits of recent tokens, multiplies negative
    int repeat_last_n;    // how many recent tokens the penalty looks at
    uint64_t seed;
} ls_sampler_opts;
ls_sampler_opts ls_sampler_opts_default(void); // temp 0.8, top-k 40, top-p 0.95, min-p 0.05, no penalty

typedef struct ls_sampler ls_sampler_t;
ls_status ls_sampler_init(const ls_sampler_opts *o, int32_t n_vocab, ls_sampler_t **out);
void ls_sampler_free(ls_sampler_t *s);
// history: the tokens so far (prompt and generated), for the repetition penalty.
int32_t ls_sampler_sample(ls_sampler_t *s, const float *logits, const int32_t *history, size_t n_history);

#endif // LS_SAMPLER_H
