// sampler.c — next-token choice: penalties, top-k (a size-k min-heap, so 49K logits cost
// O(V log k)), top-p, min-p, temperature and a draw from a seeded xoshiro256** generator.
// Tests: tests/unit/test_sampler.c.
#include "ls_sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    float logit;
    int32_t id;
} cand;

struct ls_sampler {
    ls_sampler_opts o;
    int32_t n_vocab;
    cand *c;         // [n_vocab] candidates
    float *adjusted; // [n_vocab] penalized logits
    uint8_t *seen;   // [n_vocab] marks for the penalty window
    uint64_t rng[4];
};

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static double uniform(ls_sampler_t *s) { // xoshiro256**, 53 bits in [0, 1)
    uint64_t *r = s->rng, out = rotl(r[1] * 5, 7) * 9, t = r[1] << 17;
    r[2] ^= r[0], r[3] ^= r[1], r[1] ^= r[2], r[0] ^= r[3], r[2] ^= t, r[3] = rotl(r[3], 45);
    return (double)(out >> 11) * 0x1.0p-53;
}

ls_status ls_sampler_init(const ls_sampler_opts *o, int32_t n_vocab, ls_sampler_t **out) {
    if (n_vocab < 1) return LS_ERR(LS_ERR_INVALID, "sampler: vocabulary of %d", n_vocab);
    if (!(o->repeat_penalty > 0) || o->top_p < 0 || o->min_p < 0 || o->min_p > 1 || isnan(o->temp))
        return LS_ERR(LS_ERR_INVALID, "sampler: repeat penalty must be > 0, top-p >= 0 and 0 <= min-p <= 1");
    ls_sampler_t *s = ls_calloc(1, sizeof *s);
    s->o = *o;
    s->n_vocab = n_vocab;
    s->c = ls_malloc((size_t)n_vocab * sizeof *s->c);
    s->adjusted = ls_malloc((size_t)n_vocab * sizeof *s->adjusted);
    s->seen = ls_calloc((size_t)n_vocab, 1);
    uint64_t x = o->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix(&x);
    *out = s;
    return LS_OK;
}

void ls_sampler_free(ls_sampler_t *s) {
    if (!s) return;
    ls_free(s->c), ls_free(s->adjusted), ls_free(s->seen), ls_free(s);
}

static void penalize(ls_sampler_t *s, const int32_t *hist, size_t n) {
    size_t from = n > (size_t)s->o.repeat_last_n ? n - (size_t)s->o.repeat_last_n : 0;
    for (size_t i = from; i < n; i++) {
        int32_t t = hist[i];
        if (t < 0 || t >= s->n_vocab || s->seen[t]) continue;
        s->seen[t] = 1;
        float *l = &s->adjusted[t];
        *l = *l > 0 ? *l / s->o.repeat_penalty : *l * s->o.repeat_penalty;
    }
    for (size_t i = from; i < n; i++)
        if (hist[i] >= 0 && hist[i] < s->n_vocab) s->seen[hist[i]] = 0;
}

static int by_logit_desc(const void *a, const void *b) {
    float x = ((const cand *)a)->logit, y = ((const cand *)b)->logit;
    if (x != y) return x > y ? -1 : 1;
    return ((const cand *)a)->id - ((const cand *)b)->id;
}

// Keeps the k largest logits in c[0..k), sorted descending; returns k.
static int32_t top_k(ls_sampler_t *s, int32_t k) {
    if (k <= 0 || k >= s->n_vocab) {
        for (int32_t i = 0; i < s->n_vocab; i++) s->c[i] = (cand){s->adjusted[i], i};
        qsort(s->c, (size_t)s->n_vocab, sizeof *s->c, by_logit_desc);
        return s->n_vocab;
    }
    int32_t n = 0; // min-heap of size k on logit (ties: the larger id is "smaller")
    for (int32_t i = 0; i < s->n_vocab; i++) {
        cand x = {s->adjusted[i], i};
        if (n == k && !(x.logit > s->c[0].logit)) continue;
        int32_t j;
        if (n < k) {
            j = n++;
            while (j > 0 && s->c[(j - 1) / 2].logit > x.logit) s->c[j] = s->c[(j - 1) / 2], j = (j - 1) / 2;
        } else {
            j = 0;
            for (;;) {
                int32_t ch = 2 * j + 1;
                if (ch >= n) break;
                if (ch + 1 < n && s->c[ch + 1].logit < s->c[ch].logit) ch++;
                if (!(s->c[ch].logit < x.logit)) break;
                s->c[j] = s->c[ch], j = ch;
            }
        }
        s->c[j] = x;
    }
    qsort(s->c, (size_t)n, sizeof *s->c, by_logit_desc);
    return n;
}

int32_t ls_sampler_sample(ls_sampler_t *s, const float *logits, const int32_t *history, size_t n_history) {
    memcpy(s->adjusted, logits, (size_t)s->n_vocab * sizeof *logits);
    if (s->o.repeat_penalty != 1.0f) penalize(s, history, n_history);
    if (s->o.temp <= 0) {
        int32_t best = 0;
        for (int32_t i = 1; i < s->n_vocab; i++)
            if (s->adjusted[i] > s->adjusted[best]) best = i;
        return best;
    }
    int32_t n = top_k(s, s->o.top_k);
    double sum = 0.0, cum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)(s->c[i].logit - s->c[0].logit));
    if (s->o.top_p < 1.0f) { // the smallest prefix whose probability reaches top_p
        for (int32_t i = 0; i < n; i++) {
            cum += exp((double)(s->c[i].logit - s->c[0].logit)) / sum;
            if (cum >= s->o.top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (s->o.min_p > 0.0f) { // probability at least min_p times the best one's
        float cut = s->c[0].logit + logf(s->o.min_p);
        int32_t keep = 1;
        while (keep < n && s->c[keep].logit >= cut) keep++;
        n = keep;
    }
    sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)(s->c[i].logit - s->c[0].logit) / s->o.temp);
    double u = uniform(s) * sum;
    cum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        cum += exp((double)(s->c[i].logit - s->c[0].logit) / s->o.temp);
        if (u < cum) return s->c[i].id;
    }
    return s->c[n - 1].id;
}
