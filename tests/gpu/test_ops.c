// test_ops.c — the GPU op-consistency test: every CUDA op against its CPU twin in kernels/ref
// on random shapes (odd sizes included), with guard bytes around every device output to catch
// out-of-bounds writes, and a tolerance per op. `-o NAME` runs one op; `--perf` also times
// each op. Exits 77 (ctest: skipped) with the reason when no GPU is visible.
// Run by tests/gpu/run (also under compute-sanitizer there).
#include "ls_cuda.h"
#include "ls_kernels.h"
#include "ls_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GUARD 64 // elements of sentinel on each side of a device output
static const uint32_t SENTINEL = 0x7fbadbadu;

typedef struct op_case {
    const char *name;
    ls_status (*run)(unsigned *seed, bool perf, int *wrong, double *ms);
} op_case;

static const ls_dtype g_types[] = {LS_F32, LS_F16, LS_BF16, LS_Q8_0, LS_Q4_0, LS_Q4_1,
                                   LS_Q5_0, LS_Q5_1, LS_Q4_K, LS_Q5_K, LS_Q6_K};

// A device buffer of n 4-byte elements with GUARD sentinel elements on each side.
static ls_status guarded_alloc(size_t n, uint32_t **base, void **inner) {
    size_t total = (n + 2 * GUARD) * 4;
    uint32_t *host = malloc(total);
    for (size_t i = 0; i < n + 2 * GUARD; i++) host[i] = SENTINEL;
    LS_CHECK(ls_cuda_malloc((void **)base, total));
    LS_CHECK(ls_cuda_upload(*base, host, total));
    free(host);
    *inner = *base + GUARD;
    return LS_OK;
}

// Downloads the inner n elements (elem_bytes each) and counts guard words that changed:
// every word outside the ones the output occupies must still hold the sentinel.
static ls_status guarded_read(uint32_t *base, size_t n, size_t elem_bytes, void *out, int *damaged) {
    if (n > ((size_t)1 << 40) || elem_bytes > 4) return LS_ERR(LS_ERR_INVALID, "guarded_read: bad size");
    size_t words = n + 2 * GUARD, used = (n * elem_bytes + 3) / 4;
    uint32_t *host = malloc(words * 4);
    LS_CHECK(ls_cuda_download(host, base, words * 4));
    *damaged = 0;
    for (size_t i = 0; i < words; i++)
        if (i < GUARD || i >= GUARD + used) *damaged += host[i] != SENTINEL;
    memcpy(out, host + GUARD, n * elem_bytes);
    free(host);
    return LS_OK;
}

static void random_row(ls_dtype t, int64_t n, uint8_t *p, unsigned *seed) {
    const ls_dtype_info *ti = ls_dtype_get(t);
    size_t bytes = (size_t)(n / ti->block) * ti->block_bytes;
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)(rand_r(seed) >> 5);
    if (t == LS_F32)
        for (int64_t j = 0; j < n; j++) ((float *)p)[j] = (float)(rand_r(seed) % 2001 - 1000) / 100.0f;
    if (t == LS_F32 || t == LS_F16 || t == LS_BF16) return;
    for (int64_t b = 0; b < n / ti->block; b++) { // finite scales
        uint16_t d = ls_f32_to_fp16(0.01f + (float)(rand_r(seed) % 100) / 1000.0f);
        memcpy(p + b * ti->block_bytes + (t == LS_Q6_K ? 208 : 0), &d, 2);
    }
}

// dequant (f32 out, bit-exact) and dequant_bf16 (bf16 of the f32 value, exact).
static ls_status dequant_case(unsigned *seed, bool bf16, bool perf, int *wrong, double *ms) {
    *wrong = 0;
    *ms = 0;
    for (size_t k = 0; k < sizeof g_types / sizeof *g_types; k++) {
        ls_dtype t = g_types[k];
        const ls_dtype_info *ti = ls_dtype_get(t);
        int64_t n = ti->block * (1 + rand_r(seed) % 257);
        if (ti->block == 1) n = 1 + rand_r(seed) % 100003; // odd sizes
        if (perf) n = ti->block * (int64_t)((1 << 24) / ti->block);
        size_t bytes = (size_t)(n / ti->block) * ti->block_bytes;
        uint8_t *src = malloc(bytes);
        float *want = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
        random_row(t, n, src, seed);
        LS_CHECK(ls_ref_dequant_row(t, src, want, n));
        void *dsrc, *dout;
        uint32_t *base;
        LS_CHECK(ls_cuda_malloc(&dsrc, bytes));
        LS_CHECK(ls_cuda_upload(dsrc, src, bytes));
        LS_CHECK(guarded_alloc((size_t)n, &base, &dout));
        double t0 = ls_time_ms();
        LS_CHECK(bf16 ? ls_cuda_dequant_bf16(t, dsrc, dout, n) : ls_cuda_dequant_f32(t, dsrc, dout, n));
        LS_CHECK(ls_cuda_sync());
        *ms += ls_time_ms() - t0;
        int damaged = 0;
        LS_CHECK(guarded_read(base, (size_t)n, bf16 ? 2 : 4, got, &damaged));
        int bad = damaged;
        for (int64_t j = 0; j < n; j++) {
            float w = want[j];
            if (bf16) {
                uint16_t g = ((uint16_t *)got)[j], e = ls_f32_to_bf16(w);
                bad += isnan(w) ? !isnan(ls_bf16_to_f32(g)) : g != e;
            } else {
                bad += isnan(w) ? !isnan(got[j]) : memcmp(&w, &got[j], 4) != 0;
            }
        }
        if (bad) fprintf(stderr, "  %s %s n=%lld: %d wrong (%d guard)\n", bf16 ? "dequant_bf16" : "dequant",
                         ti->name, (long long)n, bad, damaged);
        *wrong += bad;
        LS_CHECK(ls_cuda_free(dsrc));
        LS_CHECK(ls_cuda_free(base));
        free(src), free(want), free(got);
    }
    return LS_OK;
}

static ls_status op_dequant(unsigned *s, bool perf, int *wrong, double *ms) { return dequant_case(s, false, perf, wrong, ms); }
static ls_status op_dequant_bf16(unsigned *s, bool perf, int *wrong, double *ms) { return dequant_case(s, true, perf, wrong, ms); }

static const op_case g_ops[] = {
    {"dequant", op_dequant},
    {"dequant_bf16", op_dequant_bf16},
};

int main(int argc, char **argv) {
    const char *only = NULL;
    bool perf = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--perf")) perf = true;
    }
    if (!ls_cuda_available()) {
        printf("SKIP: no GPU (%s)\n", ls_cuda_why_unavailable());
        return 77;
    }
    printf("%-16s %8s %10s\n", "op", "#wrong", perf ? "ms" : "");
    int total_wrong = 0;
    unsigned seed = 1234;
    for (size_t i = 0; i < sizeof g_ops / sizeof *g_ops; i++) {
        if (only && strcmp(only, g_ops[i].name)) continue;
        int wrong = 0;
        double ms = 0;
        if (g_ops[i].run(&seed, perf, &wrong, &ms) != LS_OK) {
            ls_err_report(stderr);
            return 1;
        }
        printf("%-16s %8d", g_ops[i].name, wrong);
        if (perf) printf(" %10.3f", ms);
        printf("\n");
        total_wrong += wrong;
    }
    return total_wrong ? 1 : 0;
}
