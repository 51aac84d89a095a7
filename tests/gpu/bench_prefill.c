// bench_prefill.c — prefill time of a Llama-2-7B-shaped stack (32 layers, width 4096, 32
// heads of 128, FFN 11008) with random bf16 weights on the CUDA backend, through the same op
// sequence as worker/forward.c, under full and s2 (G = n/4) attention. Layer-major: all n
// tokens pass one layer before the next (as a sequence-parallel worker does), so only one
// layer's KV cache (f32) is held. One set of layer weights serves all 32 layers (GEMM time
// does not depend on the values). Embedding and logits are left out. Prints
// "rule n layers ms tok/s attn_ms" rows. Usage: bench_prefill [N ...] (default 32768 102400).
// Run by tests/gpu/run; never fails on a time.
#include "ls_cuda.h"
#include "ls_kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LAYERS = 32, EMBD = 4096, HEADS = 32, HD = 128, FF = 11008 };

typedef struct stack {
    ls_backend_t *be;
    ls_weight wq, wk, wv, wo, wg, wu, wd;
    float *norm;                                  // [EMBD] ones
    float *x, *h, *q, *k, *v, *att, *gate, *up;  // [n][EMBD] and [n][FF]
    float *kc, *vc;                               // [HEADS][n][HD]
    int64_t *pos;                                 // [n] host
    float inv_freq[HD / 2];
} stack;

static ls_status weight(ls_backend_t *be, int64_t n_in, int64_t n_out, unsigned seed, ls_weight *w) {
    void *p;
    LS_CHECK(ls_backend_alloc(be, (size_t)(n_in * n_out) * 2, &p));
    LS_CHECK(ls_cuda_fill_bf16(p, n_in * n_out, seed, 1.0f / sqrtf((float)n_in)));
    *w = (ls_weight){LS_BF16, n_in, n_out, (size_t)n_in * 2, p};
    return LS_OK;
}

static ls_status alloc_f32(ls_backend_t *be, size_t n, float **p) { return ls_backend_alloc(be, n * 4, (void **)p); }

static ls_status setup(stack *s, int64_t n) {
    LS_CHECK(weight(s->be, EMBD, EMBD, 1, &s->wq));
    LS_CHECK(weight(s->be, EMBD, EMBD, 2, &s->wk));
    LS_CHECK(weight(s->be, EMBD, EMBD, 3, &s->wv));
    LS_CHECK(weight(s->be, EMBD, EMBD, 4, &s->wo));
    LS_CHECK(weight(s->be, EMBD, FF, 5, &s->wg));
    LS_CHECK(weight(s->be, EMBD, FF, 6, &s->wu));
    LS_CHECK(weight(s->be, FF, EMBD, 7, &s->wd));
    size_t ne = (size_t)n * EMBD, nf = (size_t)n * FF;
    float **bufs[] = {&s->x, &s->h, &s->q, &s->k, &s->v, &s->att, &s->kc, &s->vc};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) LS_CHECK(alloc_f32(s->be, ne, bufs[i]));
    LS_CHECK(alloc_f32(s->be, nf, &s->gate));
    LS_CHECK(alloc_f32(s->be, nf, &s->up));
    LS_CHECK(alloc_f32(s->be, EMBD, &s->norm));
    float *host = malloc(ne * 4);
    uint32_t r = 12345;
    for (size_t i = 0; i < ne; i++) r = r * 1664525u + 1013904223u, host[i] = (float)(r >> 8) / 8388608.0f - 1.0f;
    LS_CHECK(ls_backend_upload(s->be, s->x, host, ne * 4));
    for (int i = 0; i < EMBD; i++) host[i] = 1.0f;
    LS_CHECK(ls_backend_upload(s->be, s->norm, host, EMBD * 4));
    LS_CHECK(ls_backend_sync(s->be));
    free(host);
    s->pos = malloc((size_t)n * sizeof *s->pos);
    for (int64_t t = 0; t < n; t++) s->pos[t] = t;
    for (int i = 0; i < HD / 2; i++) s->inv_freq[i] = powf(10000.0f, -2.0f * (float)i / HD);
    return LS_OK;
}

static void teardown(stack *s) {
    ls_weight *w[] = {&s->wq, &s->wk, &s->wv, &s->wo, &s->wg, &s->wu, &s->wd};
    for (size_t i = 0; i < sizeof w / sizeof *w; i++) ls_backend_weight_release(s->be, w[i]);
    float *b[] = {s->x, s->h, s->q, s->k, s->v, s->att, s->kc, s->vc, s->gate, s->up, s->norm};
    for (size_t i = 0; i < sizeof b / sizeof *b; i++) ls_backend_release(s->be, b[i]);
    free(s->pos);
}

// One layer over all n tokens; *attn_ms accumulates the attention time.
static ls_status layer(stack *s, int64_t n, ls_attn_kind kind, double *attn_ms) {
    ls_backend_t *be = s->be;
    ls_rope_freqs f = {HD, s->inv_freq, 1.0f, LS_ROPE_PAIR_ADJACENT};
    LS_CHECK(ls_op_rmsnorm(be, s->x, s->norm, s->h, n, EMBD, 1e-5f));
    LS_CHECK(ls_op_matmul(be, &s->wq, s->h, s->q, n));
    LS_CHECK(ls_op_matmul(be, &s->wk, s->h, s->k, n));
    LS_CHECK(ls_op_matmul(be, &s->wv, s->h, s->v, n));
    LS_CHECK(ls_op_rope(be, s->q, n, HEADS, HD, s->pos, &f));
    LS_CHECK(ls_op_rope(be, s->k, n, HEADS, HD, s->pos, &f));
    for (int g = 0; g < HEADS; g++) { // [n][HEADS][HD] -> cache [HEADS][n][HD]
        LS_CHECK(ls_backend_copy(be, s->kc + (size_t)g * n * HD, HD * 4, s->k + g * HD, EMBD * 4, HD * 4, (size_t)n));
        LS_CHECK(ls_backend_copy(be, s->vc + (size_t)g * n * HD, HD * 4, s->v + g * HD, EMBD * 4, HD * 4, (size_t)n));
    }
    ls_attn_args a = {.q = s->q, .k = s->kc, .v = s->vc, .out = s->att, .n_q = n, .n_kv = n, .kv_stride = n,
                      .n_head = HEADS, .n_kv_head = HEADS, .head_dim = HD, .scale = 1.0f / sqrtf((float)HD),
                      .rule = {.kind = kind, .group = n / 4, .n_head = HEADS}};
    LS_CHECK(ls_backend_sync(be));
    double t0 = ls_time_ms();
    LS_CHECK(ls_op_attention(be, &a));
    LS_CHECK(ls_backend_sync(be));
    *attn_ms += ls_time_ms() - t0;
    LS_CHECK(ls_op_matmul(be, &s->wo, s->att, s->h, n));
    LS_CHECK(ls_op_add(be, s->x, s->h, n * EMBD));
    LS_CHECK(ls_op_rmsnorm(be, s->x, s->norm, s->h, n, EMBD, 1e-5f));
    LS_CHECK(ls_op_matmul(be, &s->wg, s->h, s->gate, n));
    LS_CHECK(ls_op_matmul(be, &s->wu, s->h, s->up, n));
    LS_CHECK(ls_op_swiglu(be, s->gate, s->up, s->gate, n * FF));
    LS_CHECK(ls_op_matmul(be, &s->wd, s->gate, s->h, n));
    return ls_op_add(be, s->x, s->h, n * EMBD);
}

static ls_status bench(ls_backend_t *be, int64_t n) {
    stack s = {.be = be};
    LS_CHECK(setup(&s, n));
    static const ls_attn_kind kinds[] = {LS_ATTN_FULL, LS_ATTN_S2};
    double warm = 0;
    LS_CHECK(layer(&s, n, LS_ATTN_FULL, &warm)); // cuBLAS heuristics, scratch growth
    for (int ki = 0; ki < 2; ki++) {
        double attn = 0, t0 = ls_time_ms();
        for (int il = 0; il < LAYERS; il++) LS_CHECK(layer(&s, n, kinds[ki], &attn));
        LS_CHECK(ls_backend_sync(be));
        double ms = ls_time_ms() - t0;
        printf("%-5s %7lld %6d %10.0f %9.0f %10.0f\n", ls_attn_kind_name(kinds[ki]), (long long)n, LAYERS, ms,
               (double)n / (ms / 1e3), attn);
        fflush(stdout);
    }
    teardown(&s);
    return LS_OK;
}

int main(int argc, char **argv) {
    if (!ls_cuda_available()) {
        printf("SKIP: no GPU (%s)\n", ls_cuda_why_unavailable());
        return 77;
    }
    ls_backend_t *be;
    if (ls_backend_cuda_init(0, &be) != LS_OK) goto fail;
    printf("%-5s %7s %6s %10s %9s %10s\n", "rule", "n", "layers", "ms", "tok/s", "attn_ms");
    int64_t defaults[] = {32768, 102400};
    int count = argc > 1 ? argc - 1 : 2;
    for (int i = 0; i < count; i++)
        if (bench(be, argc > 1 ? atoll(argv[i + 1]) : defaults[i]) != LS_OK) goto fail;
    ls_backend_free(be);
    return 0;
fail:
    ls_err_report(stderr);
    return 1;
}
