// test_kv.c — the paged KV cache (worker/kv.c) on the CPU backend, without a model:
// bytes per token of each element type against the formula; pages all back on the free list
// after many sequences created, grown, evicted from the front and freed (no leak, the budget
// kept, running out a status that takes nothing); stored keys and values read back through
// ls_kv_attend equal the reference attention over the same values laid out contiguously,
// also after the pool has grown; re-rotation equals the reference RoPE; the pool's usage in
// bytes (ls_kv_usage_of, what /metrics reports) agrees with its pages at every step.
#include "ls_kv.h"
#include "ls_ref.h"
#include "ls_test.h"

#include <math.h>
#include <stdlib.h>

static ls_backend_t *g_be;

static void fill(float *x, int64_t n, unsigned *seed) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)rand_r(seed) / (float)RAND_MAX * 2.0f - 1.0f;
}

static double rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) num = fmax(num, fabs((double)a[i] - b[i])), den = fmax(den, fabs((double)b[i]));
    return num / (den + 1e-30);
}

static void test_bytes_per_token(void) {
    static const struct { ls_dtype t; uint64_t per_row; } types[] = {{LS_F32, 64 * 4}, {LS_BF16, 64 * 2}, {LS_Q8_0, 2 * 34}};
    for (size_t i = 0; i < 3; i++) { // SmolLM2-135M: 30 layers, 3 KV heads of 64
        ls_kv_shape sh = {30, 3, 64, types[i].t};
        uint64_t want = 2 * 30 * 3 * types[i].per_row;
        TEST_COND(ls_kv_bytes_per_token(&sh) == want, "%s: %llu bytes per token, formula %llu", ls_dtype_name(sh.type),
                  (unsigned long long)ls_kv_bytes_per_token(&sh), (unsigned long long)want);
        ls_kv_t *kv = NULL;
        ls_kv_seq_t *s = NULL;
        TEST_COND(ls_kv_init(g_be, &sh, 0, &kv) == LS_OK && ls_kv_seq_init(kv, &s) == LS_OK, "init");
        TEST_COND(ls_kv_seq_reserve(s, 1000) == LS_OK, "reserve");
        // what the pool holds is exactly pages x tokens per page x bytes per token
        TEST_COND(ls_kv_page_bytes(kv) == want * LS_KV_PAGE && ls_kv_pages_held(kv) == (1000 + LS_KV_PAGE - 1) / LS_KV_PAGE,
                  "%s: %zu bytes per page, %lld pages", ls_dtype_name(sh.type), ls_kv_page_bytes(kv),
                  (long long)ls_kv_pages_held(kv));
        ls_kv_usage u = ls_kv_usage_of(kv);
        TEST_COND(u.in_use == u.allocated && u.allocated == ls_kv_pages_held(kv) * ls_kv_page_bytes(kv) && u.budget == 0,
                  "%s: usage %llu in use, %llu allocated, budget %llu (0: unbounded)", ls_dtype_name(sh.type),
                  (unsigned long long)u.in_use, (unsigned long long)u.allocated, (unsigned long long)u.budget);
        ls_kv_seq_free(s);
        TEST_COND(ls_kv_usage_of(kv).in_use == 0 && ls_kv_usage_of(kv).allocated == u.allocated, "freed: 0 in use, still allocated");
        ls_kv_free(kv);
    }
    printf("  bytes per token (30 layers, 3 KV heads of 64): f32 %llu, bf16 %llu, q8_0 %llu\n",
           (unsigned long long)(2 * 30 * 3 * 256), (unsigned long long)(2 * 30 * 3 * 128),
           (unsigned long long)(2 * 30 * 3 * 68));
    ls_kv_shape odd = {2, 1, 40, LS_Q8_0};
    ls_kv_t *kv = NULL;
    TEST_ERR(ls_kv_init(g_be, &odd, 0, &kv), LS_ERR_INVALID, "q8_0 needs whole blocks of 32");
    ls_kv_shape q4 = {2, 1, 64, LS_Q4_0};
    TEST_ERR(ls_kv_init(g_be, &q4, 0, &kv), LS_ERR_UNSUPPORTED, "f32, bf16 or q8_0 only");
    ls_dtype t;
    TEST_COND(ls_kv_type_parse("q8_0", &t) && t == LS_Q8_0 && ls_kv_type_parse("bf16", &t) && t == LS_BF16 &&
                  !ls_kv_type_parse("q4_0", &t) && !strcmp(ls_kv_type_name(LS_Q8_0), "q8_0"),
              "type names");
}

// Many sequences of random lengths over a budget of 40 pages: grown, evicted, freed at random.
static void test_no_leak(void) {
    enum { SEQS = 12, BUDGET = 40 };
    ls_kv_shape sh = {2, 2, 32, LS_BF16};
    ls_kv_t *kv;
    TEST_COND(ls_kv_init(g_be, &sh, BUDGET, &kv) == LS_OK, "init");
    uint64_t page = ls_kv_bytes_per_token(&sh) * LS_KV_PAGE;
    ls_kv_seq_t *seqs[SEQS] = {0};
    int64_t slots[SEQS] = {0};
    unsigned seed = 5;
    int nomem = 0, bad = 0;
    for (int step = 0; step < 5000; step++) {
        int i = rand_r(&seed) % SEQS, op = rand_r(&seed) % 10;
        if (!seqs[i]) {
            TEST_COND(ls_kv_seq_init(kv, &seqs[i]) == LS_OK, "seq init");
            slots[i] = 0;
        } else if (op < 6) { // grow
            int64_t want = slots[i] + 1 + rand_r(&seed) % 300, before = ls_kv_seq_pages(seqs[i]);
            int64_t used = ls_kv_pages_used(kv);
            ls_status rc = ls_kv_seq_reserve(seqs[i], want);
            if (rc == LS_OK) slots[i] = want;
            else {
                nomem++;
                bad += rc != LS_ERR_NOMEM || ls_kv_seq_pages(seqs[i]) != before || ls_kv_pages_used(kv) != used;
                ls_err_clear();
            }
        } else if (op < 8 && ls_kv_seq_pages(seqs[i]) > 0) { // evict whole pages from the front
            int64_t n = 1 + rand_r(&seed) % ls_kv_seq_pages(seqs[i]);
            TEST_COND(ls_kv_seq_drop(seqs[i], 0, n) == LS_OK, "drop");
            slots[i] = (ls_kv_seq_pages(seqs[i])) * LS_KV_PAGE;
        } else { // end
            ls_kv_seq_free(seqs[i]);
            seqs[i] = NULL;
        }
        int64_t held = 0;
        for (int j = 0; j < SEQS; j++) held += seqs[j] ? ls_kv_seq_pages(seqs[j]) : 0;
        bad += held != ls_kv_pages_used(kv) || ls_kv_pages_held(kv) > BUDGET;
        ls_kv_usage u = ls_kv_usage_of(kv); // what a server reports: the same pages in bytes
        bad += u.in_use != (uint64_t)held * page || u.allocated != (uint64_t)ls_kv_pages_held(kv) * page ||
               u.budget != (uint64_t)BUDGET * page;
    }
    TEST_COND(bad == 0, "%d steps where the pages held by sequences, the pool and its usage in bytes disagree, or the budget broke",
              bad);
    TEST_COND(nomem > 0, "the budget was reached (%d times) and reported as LS_ERR_NOMEM taking nothing", nomem);
    for (int j = 0; j < SEQS; j++) ls_kv_seq_free(seqs[j]);
    TEST_COND(ls_kv_pages_used(kv) == 0, "%lld pages not returned", (long long)ls_kv_pages_used(kv));
    ls_kv_seq_t *all;
    TEST_COND(ls_kv_seq_init(kv, &all) == LS_OK && ls_kv_seq_reserve(all, BUDGET * LS_KV_PAGE) == LS_OK,
              "every page of the budget is free again");
    TEST_ERR(ls_kv_seq_reserve(all, BUDGET * LS_KV_PAGE + 1), LS_ERR_NOMEM, "1 more pages of 64 tokens wanted, 0 free");
    ls_kv_seq_free(all);
    ls_kv_free(kv);
}

// Keys and values stored through ls_kv (two sequences growing in turn, so their pages
// interleave, and the pool grows in between) read back by ls_kv_attend: equal to the reference
// attention over the same values, converted to the cache type, in one contiguous array.
static void test_store_attend(ls_dtype type) {
    enum { L = 3, KVH = 2, HD = 64, NH = 4, N = 300 };
    ls_kv_shape sh = {L, KVH, HD, type};
    ls_kv_t *kv;
    ls_kv_seq_t *a, *b;
    TEST_COND(ls_kv_init(g_be, &sh, 0, &kv) == LS_OK && ls_kv_seq_init(kv, &a) == LS_OK && ls_kv_seq_init(kv, &b) == LS_OK,
              "init");
    unsigned seed = 9;
    size_t row = KVH * HD;
    float *k = malloc(N * row * 4), *v = malloc(N * row * 4), *q = malloc(NH * HD * 4 * 7);
    fill(k, N * row, &seed), fill(v, N * row, &seed), fill(q, NH * HD * 7, &seed);
    for (int64_t t0 = 0; t0 < N;) { // uneven chunks into both sequences, growing as we go
        int64_t m = 1 + rand_r(&seed) % 90;
        if (t0 + m > N) m = N - t0;
        TEST_COND(ls_kv_seq_reserve(a, t0 + m) == LS_OK && ls_kv_seq_reserve(b, t0 + m) == LS_OK, "reserve");
        for (int il = 0; il < L; il++)
            TEST_COND(ls_kv_store(a, il, k + t0 * row, v + t0 * row, t0, m) == LS_OK &&
                          ls_kv_store(b, il, v + t0 * row, k + t0 * row, t0, m) == LS_OK,
                      "store: %s", ls_err_msg());
        t0 += m;
    }
    // the reference's contiguous copy: [KVH][N][HD] of the type, as stored
    uint64_t rb;
    ls_dtype_row_bytes(type, HD, &rb);
    char *kc = malloc(KVH * N * rb), *vc = malloc(KVH * N * rb);
    for (int g = 0; g < KVH; g++)
        for (int t = 0; t < N; t++) {
            ls_op_convert(g_be, type, kc + (g * N + t) * rb, 0, LS_F32, k + t * row + g * HD, 0, HD, 1);
            ls_op_convert(g_be, type, vc + (g * N + t) * rb, 0, LS_F32, v + t * row + g * HD, 0, HD, 1);
        }
    float out[7 * NH * HD], ref[7 * NH * HD], lse[7 * NH], rlse[7 * NH];
    ls_attn_args at = {.q = q, .out = out, .lse = lse, .n_q = 7, .q_pos0 = N - 7, .n_kv = N, .n_head = NH, .n_kv_head = KVH,
                       .head_dim = HD, .scale = 0.125f, .rule = {.kind = LS_ATTN_FULL}};
    ls_attn_args r = at;
    r.k = (const float *)kc, r.v = (const float *)vc, r.kv_type = type, r.kv_stride = N, r.out = ref, r.lse = rlse;
    ls_ref_attention(&r);
    for (int il = 0; il < L; il++) {
        TEST_COND(ls_kv_attend(a, il, &at) == LS_OK, "attend: %s", ls_err_msg());
        TEST_COND(rel_err(out, ref, 7 * NH * HD) < 1e-5 && rel_err(lse, rlse, 7 * NH) < 1e-5,
                  "%s layer %d: paged attention differs from the contiguous reference by %.2e", ls_dtype_name(type), il,
                  rel_err(out, ref, 7 * NH * HD));
    }
    // re-rotation of slots [5, 200) of sequence b's keys (its values were stored as keys): by RoPE
    // at -17, through f32; the values (a's keys) stay untouched
    if (type == LS_F32) {
        int64_t pos[195];
        float inv[HD / 2];
        for (int i = 0; i < HD / 2; i++) inv[i] = powf(10000.0f, -2.0f * (float)i / HD);
        for (int i = 0; i < 195; i++) pos[i] = -17;
        ls_rope_freqs f = {HD, inv, 1.0f, LS_ROPE_PAIR_ADJACENT};
        TEST_COND(ls_kv_rotate(b, 5, 195, pos, &f) == LS_OK, "rotate");
        float *want = malloc(195 * HD * 4);
        char *kr = malloc(N * rb * KVH); // the reference's keys: b's, rotated the same way
        memcpy(kr, vc, KVH * N * rb);
        for (int g = 0; g < KVH; g++) {
            for (int t = 0; t < 195; t++) memcpy(want + t * HD, v + (5 + t) * row + g * HD, HD * 4);
            ls_ref_rope(want, 195, 1, HD, pos, &f);
            for (int t = 0; t < 195; t++) memcpy(kr + (g * N + 5 + t) * rb, want + t * HD, HD * 4);
        }
        ls_attn_args rb_ = r;
        rb_.k = (const float *)kr, rb_.v = (const float *)kc;
        ls_ref_attention(&rb_);
        TEST_COND(ls_kv_attend(b, 1, &at) == LS_OK, "attend");
        TEST_COND(rel_err(out, ref, 7 * NH * HD) < 1e-5, "re-rotated keys: %.2e", rel_err(out, ref, 7 * NH * HD));
        free(want), free(kr);
    }
    ls_attn_args wrong = at;
    wrong.n_kv_head = 1;
    TEST_ERR(ls_kv_attend(a, 0, &wrong), LS_ERR_INVALID, "for a cache of 3 layers");
    wrong = at, wrong.n_kv = N + 1000;
    TEST_ERR(ls_kv_attend(a, 0, &wrong), LS_ERR_RANGE, "outside the");
    ls_kv_seq_free(a), ls_kv_seq_free(b);
    TEST_COND(ls_kv_pages_used(kv) == 0, "pages back");
    ls_kv_free(kv);
    free(k), free(v), free(q), free(kc), free(vc);
}

int main(void) {
    if (ls_backend_cpu_init(2, -1, &g_be) != LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    test_bytes_per_token();
    test_no_leak();
    test_store_attend(LS_F32);
    test_store_attend(LS_BF16);
    test_store_attend(LS_Q8_0);
    ls_backend_free(g_be);
    return TEST_REPORT("test_kv");
}
