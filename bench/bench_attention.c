// bench_attention.c — the attention op alone over n tokens (prefill: n queries over n keys) for
// each rule, on the default model's shape (9 query heads, 3 KV heads, head dim 64) with random
// data, and each rule's time as a ratio to full attention: the cost follows the visible keys.
// A benchmark: it prints a table and never fails on a time.
//   bench_attention [--tokens 16384] [--threads N] [--reps R]
#include "ls_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *random_buf(size_t n, unsigned seed) {
    float *x = ls_malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)rand_r(&seed) / (float)RAND_MAX - 0.5f;
    return x;
}

int main(int argc, char **argv) {
    int64_t n = 16384;
    int threads = 0, reps = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--tokens")) n = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    }
    const int H = 9, KV = 3, HD = 64;
    ls_backend_t *be;
    if (ls_backend_cpu_init(threads, 0, &be) != LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    float *q = random_buf((size_t)(n * H * HD), 1), *k = random_buf((size_t)(KV * n * HD), 2);
    float *v = random_buf((size_t)(KV * n * HD), 3), *out = ls_malloc((size_t)(n * H * HD) * sizeof *out);
    struct { const char *name; ls_attn_rule rule; } rules[] = {
        {"full", {.kind = LS_ATTN_FULL}},
        {"s2 G=n/4", {.kind = LS_ATTN_S2, .group = n / 4, .n_head = H}},
        {"sink 4+1020", {.kind = LS_ATTN_SINK, .sinks = 4, .window = 1020}},
        {"window 1024", {.kind = LS_ATTN_WINDOW, .window = 1024}},
    };
    printf("attention op, %lld tokens, %d/%d heads, head dim %d, %d threads\n\n| rule | ms | ratio to full | visible keys per query |\n|---|---:|---:|---:|\n",
           (long long)n, H, KV, HD, ls_backend_threads(be));
    double full_ms = 0;
    for (size_t r = 0; r < sizeof rules / sizeof *rules; r++) {
        ls_attn_args a = {.q = q, .k = k, .v = v, .out = out, .n_q = n, .n_kv = n, .kv_stride = n, .n_head = H,
                          .n_kv_head = KV, .head_dim = HD, .scale = 1.0f / sqrtf(HD), .rule = rules[r].rule};
        double best = INFINITY;
        for (int i = 0; i < reps; i++) {
            double t0 = ls_time_ms();
            if (ls_op_attention(be, &a) != LS_OK) {
                ls_err_report(stderr);
                return 1;
            }
            best = fmin(best, ls_time_ms() - t0);
        }
        double visible = 0; // average over queries and heads, from the rule
        for (int64_t i = 0; i < n; i += 97)
            for (int h = 0; h < H; h++) {
                int64_t lo[2], hi[2];
                int m = ls_attn_ranges(&rules[r].rule, i, h, lo, hi);
                for (int j = 0; j < m; j++) visible += (double)(hi[j] - lo[j] + 1);
            }
        visible /= (double)((n + 96) / 97) * H;
        if (r == 0) full_ms = best;
        printf("| %s | %.0f | %.3f | %.0f |\n", rules[r].name, best, best / full_ms, visible);
        fflush(stdout);
    }
    ls_free(q), ls_free(k), ls_free(v), ls_free(out);
    ls_backend_free(be);
    return 0;
}
