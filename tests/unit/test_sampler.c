// test_sampler.c — the sampler: greedy is the argmax (after penalties); draws at temperature 1
// follow the softmax (frequencies over many draws, 5-sigma bounds); top-k, top-p and min-p cut
// exactly the tokens they should; temperature sharpens; the repetition penalty pushes recent
// tokens down; a seed reproduces the sequence; bad options are errors.
#include "ls_sampler.h"
#include "ls_test.h"

#include <math.h>

#define V 6
static const float g_logits[V] = {1.0f, 3.0f, 2.0f, 0.5f, 2.5f, -1.0f};

static ls_sampler_t *make(float temp, int top_k, float top_p, float min_p, float penalty, uint64_t seed) {
    ls_sampler_opts o = {.temp = temp, .top_k = top_k, .top_p = top_p, .min_p = min_p, .repeat_penalty = penalty,
                         .repeat_last_n = 8, .seed = seed};
    ls_sampler_t *s = NULL;
    if (ls_sampler_init(&o, V, &s) != LS_OK) ls_err_clear();
    return s;
}

// Draw frequencies of n samples.
static void histogram(ls_sampler_t *s, int n, double freq[V]) {
    for (int i = 0; i < V; i++) freq[i] = 0;
    for (int k = 0; k < n; k++) freq[ls_sampler_sample(s, g_logits, NULL, 0)] += 1.0 / n;
}

static void test_greedy_and_penalty(void) {
    ls_sampler_t *s = make(0.0f, 40, 0.95f, 0.05f, 1.0f, 1);
    TEST_COND(ls_sampler_sample(s, g_logits, NULL, 0) == 1, "greedy takes the argmax");
    ls_sampler_free(s);
    s = make(0.0f, 0, 1.0f, 0.0f, 2.0f, 1);
    int32_t hist[] = {1, 1, 5};
    TEST_COND(ls_sampler_sample(s, g_logits, hist, 3) == 4, "penalty 2 halves token 1's 3.0 to 1.5: 2.5 wins");
    ls_sampler_free(s);
    s = make(0.7f, 1, 1.0f, 0.0f, 1.0f, 9);
    int ok = 1;
    for (int k = 0; k < 100; k++) ok &= ls_sampler_sample(s, g_logits, NULL, 0) == 1;
    TEST_COND(ok, "top-k 1 is greedy at any temperature");
    ls_sampler_free(s);
}

static void test_distribution(void) {
    double p[V], z = 0, f[V];
    for (int i = 0; i < V; i++) z += exp(g_logits[i]);
    for (int i = 0; i < V; i++) p[i] = exp(g_logits[i]) / z;
    ls_sampler_t *s = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 7);
    int n = 40000;
    histogram(s, n, f);
    int ok = 1;
    for (int i = 0; i < V; i++) ok &= fabs(f[i] - p[i]) < 5 * sqrt(p[i] * (1 - p[i]) / n);
    TEST_COND(ok, "temperature 1 follows the softmax (token 1: %.4f vs %.4f)", f[1], p[1]);
    ls_sampler_free(s);
    // top-k 2 keeps tokens 1 and 4, renormalized: p1 = e^3 / (e^3 + e^2.5)
    s = make(1.0f, 2, 1.0f, 0.0f, 1.0f, 7);
    histogram(s, n, f);
    double p1 = exp(3.0) / (exp(3.0) + exp(2.5));
    TEST_COND(f[0] == 0 && f[2] == 0 && f[3] == 0 && f[5] == 0 && fabs(f[1] - p1) < 0.02, "top-k 2: %.3f vs %.3f", f[1], p1);
    ls_sampler_free(s);
    // top-p 0.6: token 1 (0.44 of the mass) then 4 (0.27): the first prefix reaching 0.6
    s = make(1.0f, 0, 0.6f, 0.0f, 1.0f, 7);
    histogram(s, n, f);
    TEST_COND(f[1] > 0 && f[4] > 0 && f[2] == 0 && f[0] == 0, "top-p 0.6 keeps tokens 1 and 4");
    ls_sampler_free(s);
    // min-p 0.5: logits within ln 2 of the best: 3.0 and 2.5 (2.0 is 1.0 below)
    s = make(1.0f, 0, 1.0f, 0.5f, 1.0f, 7);
    histogram(s, n, f);
    TEST_COND(f[1] > 0 && f[4] > 0 && f[2] == 0, "min-p 0.5 keeps tokens 1 and 4");
    ls_sampler_free(s);
    // a low temperature sharpens
    s = make(0.25f, 0, 1.0f, 0.0f, 1.0f, 7);
    histogram(s, n, f);
    TEST_COND(f[1] > 0.85, "temperature 0.25 concentrates on the best (%.3f)", f[1]);
    ls_sampler_free(s);
}

static void test_seed(void) {
    ls_sampler_t *a = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 42), *b = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 42),
                 *c = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 43);
    int same = 1, diff = 0;
    for (int k = 0; k < 200; k++) {
        int32_t x = ls_sampler_sample(a, g_logits, NULL, 0), y = ls_sampler_sample(b, g_logits, NULL, 0);
        same &= x == y;
        diff += x != ls_sampler_sample(c, g_logits, NULL, 0);
    }
    TEST_COND(same && diff > 0, "a seed reproduces its draws; another seed differs");
    ls_sampler_free(a), ls_sampler_free(b), ls_sampler_free(c);
    ls_sampler_opts bad = ls_sampler_opts_default();
    bad.repeat_penalty = 0;
    ls_sampler_t *s;
    TEST_ERR(ls_sampler_init(&bad, V, &s), LS_ERR_INVALID, "repeat penalty must be > 0");
}

int main(void) {
    test_greedy_and_penalty();
    test_distribution();
    test_seed();
    return TEST_REPORT("test_sampler");
}
