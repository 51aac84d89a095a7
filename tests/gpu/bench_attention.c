// bench_attention.c — TFLOP/s of the CUDA attention kernel (bf16 q/k/v/out, fp32 accumulate)
// under the full, s2 (G = n/4, LongLoRA's default) and sink (4 sinks + a 4092-token window)
// rules at 4K, 16K and 64K tokens, head dims 64 and 128, 32 heads. FLOPs count only visible
// (query, key) pairs, 4·head_dim each (QKᵀ and PV), so the rules compare on useful work; the
// pair count goes out with each row so bench_sdpa.py's times can be put on the same scale.
// Prints "rule n hd heads pairs ms tflops" rows (best of 3 after a warm-up). Run by
// tests/gpu/run; never fails on a time.
#include "ls_cuda.h"
#include "ls_kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADS 32

// Visible (query, key) pairs of one sequence of n tokens under the rule, summed over heads.
static double pairs(const ls_attn_rule *r, int64_t n) {
    int kinds = r->kind == LS_ATTN_S2 ? 2 : 1; // s2: the unshifted and the shifted half
    double total = 0;
    for (int t = 0; t < kinds; t++) {
        double one = 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t lo[2], hi[2];
            int k = ls_attn_ranges(r, i, t * (HEADS / 2), lo, hi);
            for (int j = 0; j < k; j++) one += (double)(hi[j] - lo[j] + 1);
        }
        total += one * HEADS / kinds;
    }
    return total;
}

static ls_status run(ls_backend_t *be, void *q, void *k, void *v, void *out, int64_t n, int hd, ls_attn_kind kind) {
    ls_attn_rule rule = {.kind = kind, .group = n / 4, .sinks = 4, .window = 4092, .n_head = HEADS};
    ls_attn_args a = {.q = q, .k = k, .v = v, .out = out, .n_q = n, .n_kv = n, .kv_stride = n, .n_head = HEADS,
                      .n_kv_head = HEADS, .head_dim = hd, .scale = 1.0f / sqrtf((float)hd), .rule = rule};
    double best = INFINITY;
    for (int rep = 0; rep < 4; rep++) {
        LS_CHECK(ls_backend_sync(be));
        double t0 = ls_time_ms();
        LS_CHECK(ls_cuda_attention_bf16(be, &a));
        LS_CHECK(ls_backend_sync(be));
        double ms = ls_time_ms() - t0;
        if (rep > 0 && ms < best) best = ms; // rep 0 warms up
    }
    double p = pairs(&rule, n);
    printf("%-5s %6lld %4d %5d %14.0f %10.3f %8.1f\n", ls_attn_kind_name(kind), (long long)n, hd, HEADS, p, best,
           4.0 * hd * p / (best * 1e-3) / 1e12);
    fflush(stdout);
    return LS_OK;
}

int main(int argc, char **argv) {
    int64_t max_n = argc > 1 ? atoll(argv[1]) : 65536;
    if (!ls_cuda_available()) {
        printf("SKIP: no GPU (%s)\n", ls_cuda_why_unavailable());
        return 77;
    }
    ls_backend_t *be;
    if (ls_backend_cuda_init(0, &be) != LS_OK) goto fail;
    printf("%-5s %6s %4s %5s %14s %10s %8s\n", "rule", "n", "hd", "heads", "pairs", "ms", "TFLOP/s");
    static const int dims[] = {64, 128};
    static const ls_attn_kind kinds[] = {LS_ATTN_FULL, LS_ATTN_S2, LS_ATTN_SINK};
    for (int di = 0; di < 2; di++) {
        int hd = dims[di];
        size_t elems = (size_t)max_n * HEADS * (size_t)hd;
        void *q, *k, *v, *out;
        if (ls_backend_alloc(be, elems * 2, &q) || ls_backend_alloc(be, elems * 2, &k) ||
            ls_backend_alloc(be, elems * 2, &v) || ls_backend_alloc(be, elems * 2, &out))
            goto fail;
        if (ls_cuda_fill_bf16(q, (int64_t)elems, 1, 1.f) || ls_cuda_fill_bf16(k, (int64_t)elems, 2, 1.f) ||
            ls_cuda_fill_bf16(v, (int64_t)elems, 3, 1.f))
            goto fail;
        for (int64_t n = 4096; n <= max_n; n *= 4)
            for (int ki = 0; ki < 3; ki++)
                if (run(be, q, k, v, out, n, hd, kinds[ki]) != LS_OK) goto fail;
        ls_backend_release(be, q), ls_backend_release(be, k), ls_backend_release(be, v), ls_backend_release(be, out);
    }
    ls_backend_free(be);
    return 0;
fail:
    ls_err_report(stderr);
    return 1;
}
