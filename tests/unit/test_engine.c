// test_engine.c — the engine on the default model: logits do not depend on how the tokens are
// batched (one call, odd micro-batches, or token-by-token decode over the cache), decode
// steps allocate nothing (malloc and friends are wrapped by the linker and counted), and
// misuse (a full sequence, ids outside the vocabulary, absurd capacities) is an error.
// Linked with -Wl,--wrap=malloc,... (tests/CMakeLists.txt); needs the default model.
#include "ls_engine.h"
#include "ls_test.h"

#include <math.h>
#include <stdlib.h>

static long g_allocs;
void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);
void *__wrap_malloc(size_t n) { g_allocs++; return __real_malloc(n); }
void *__wrap_calloc(size_t a, size_t b) { g_allocs++; return __real_calloc(a, b); }
void *__wrap_realloc(void *p, size_t n) { g_allocs++; return __real_realloc(p, n); }
int __wrap_posix_memalign(void **p, size_t a, size_t n) { g_allocs++; return __real_posix_memalign(p, a, n); }

typedef struct keep_last {
    float *logits;
    int64_t n_vocab, index;
} keep_last;

static ls_status keep(void *ctx, int64_t index, const float *logits) {
    keep_last *k = ctx;
    memcpy(k->logits, logits, (size_t)k->n_vocab * sizeof *logits);
    k->index = index;
    return LS_OK;
}

#define N 100

// Logits of the last of N tokens, fed as: prefill of `split` tokens in micro-batches of
// `ubatch`, then the rest one at a time.
static ls_status last_logits(const char *model, const int32_t *ids, int64_t ubatch, int64_t split, float *out) {
    ls_engine_opts o = ls_engine_opts_default();
    o.ubatch = ubatch;
    ls_engine_t *e;
    LS_CHECK(ls_engine_load(model, &o, &e));
    ls_seq_t *s;
    LS_CHECK(ls_seq_init(e, N, &s));
    keep_last k = {out, ls_engine_config(e)->n_vocab, -1};
    ls_forward_opts fo = {.logits_from = split - 1, .on_logits = keep, .ctx = &k};
    LS_CHECK(ls_engine_forward(e, s, ids, split, &fo));
    fo.logits_from = 0;
    for (int64_t i = split; i < N; i++) LS_CHECK(ls_engine_forward(e, s, ids + i, 1, &fo));
    ls_seq_free(s);
    ls_engine_free(e);
    return LS_OK;
}

static double rel_err(const float *a, const float *b, int64_t n) {
    double ss = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)b[i] * b[i];
    double rms = sqrt(ss / (double)n);
    for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]) / (fabs(b[i]) + rms));
    return worst;
}

static void test_batching(const char *model) {
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = 100 + (i * 7919) % 40000;
    static float a[49152], b[49152], c[49152];
    TEST_COND(last_logits(model, ids, 512, N, a) == LS_OK, "one prefill: %s", ls_err_msg());
    TEST_COND(last_logits(model, ids, 7, N, b) == LS_OK, "micro-batches of 7: %s", ls_err_msg());
    TEST_COND(last_logits(model, ids, 512, 37, c) == LS_OK, "prefill 37 + decode 63: %s", ls_err_msg());
    TEST_COND(rel_err(b, a, 49152) < 1e-4, "micro-batches change the logits by %.2e", rel_err(b, a, 49152));
    TEST_COND(rel_err(c, a, 49152) < 1e-4, "decode changes the logits by %.2e", rel_err(c, a, 49152));
}

static void test_decode_allocates_nothing(const char *model) {
    ls_engine_t *e;
    ls_seq_t *s;
    if (ls_engine_load(model, NULL, &e) != LS_OK || ls_seq_init(e, 40, &s) != LS_OK) {
        TEST_COND(0, "load: %s", ls_err_msg());
        return;
    }
    static float logits[49152];
    keep_last k = {logits, ls_engine_config(e)->n_vocab, -1};
    ls_forward_opts fo = {.logits_from = 0, .on_logits = keep, .ctx = &k};
    int32_t ids[16] = {1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3717, 314, 1, 4093, 198, 504};
    ls_forward_opts pre = fo;
    pre.logits_from = 15;
    TEST_COND(ls_engine_forward(e, s, ids, 16, &pre) == LS_OK, "prefill");
    for (int i = 0; i < 3; i++) ls_engine_forward(e, s, &ids[i], 1, &fo); // warm-up: scratch sizes settle
    long before = g_allocs;
    for (int i = 0; i < 20; i++) TEST_COND(ls_engine_forward(e, s, &ids[i % 16], 1, &fo) == LS_OK, "decode step");
    TEST_COND(g_allocs == before, "20 decode steps made %ld allocations", g_allocs - before);
    TEST_ERR(ls_engine_forward(e, s, ids, 16, &fo), LS_ERR_RANGE, "more do not fit");
    int32_t bad = 49152;
    TEST_ERR(ls_engine_forward(e, s, &bad, 1, &fo), LS_ERR_INVALID, "outside the vocabulary");
    ls_seq_t *s2;
    TEST_ERR(ls_seq_init(e, 0, &s2), LS_ERR_RANGE, "outside 1..2^24");
    ls_seq_free(s);
    ls_engine_free(e);
}

int main(void) {
    const char *model = ls_default_model_path();
    FILE *f = fopen(model, "rb");
    if (!f) {
        fprintf(stderr, "FAIL: the default model is not at %s (deploy/setup.sh fetches it)\n", model);
        return 1;
    }
    fclose(f);
    test_batching(model);
    test_decode_allocates_nothing(model);
    return TEST_REPORT("test_engine");
}
