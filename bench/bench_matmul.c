// bench_matmul.c — the matmuls of one decode step of a model (every layer's q, k, v, o, gate,
// up and down, and the output matrix) for m = 1, 4 and 16 tokens at once (decode of m
// sequences), in both activation precisions: milliseconds per step (best of the repetitions), tokens/s, and GB/s of
// weights read; also the CPU time a step took (all threads: with one, the time it ran, which
// other work on a shared machine does not inflate). With the row kernels reading each weight once per step, m tokens should cost
// little more than one. A benchmark: it never fails on a time.
//   bench_matmul [--model F] [--threads N] [--reps R] [--m 1,4,16]
#include "ls_engine.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_ms(void) { // CPU time of the whole process: with one thread, time spent running
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static ls_weight weight_of(const ls_gguf_tensor *t) {
    const ls_dtype_info *ti = ls_dtype_get(t->type);
    return (ls_weight){.type = t->type, .n_in = t->ne[0], .n_out = t->ne[1],
                       .row_bytes = (size_t)(t->ne[0] / ti->block) * ti->block_bytes, .data = t->data};
}

// The model's decode matmuls, in forward order; returns how many (at most cap).
static int decode_weights(const ls_model_config *c, ls_weight *w, int cap, double *bytes) {
    int n = 0;
    *bytes = 0;
    for (int64_t l = 0; l < c->n_layer; l++) {
        const ls_layer_weights *L = &c->layers[l];
        const ls_gguf_tensor *ts[7] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
        for (int i = 0; i < 7 && n < cap; i++) w[n++] = weight_of(ts[i]), *bytes += (double)ts[i]->nbytes;
    }
    if (n < cap) w[n++] = weight_of(c->output), *bytes += (double)c->output->nbytes;
    return n;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static ls_status run(const char *model, int threads, int reps, const int *ms, int n_m) {
    ls_engine_opts eo = ls_engine_opts_default();
    eo.n_threads = threads;
    eo.device = LS_DEVICE_CPU;
    ls_engine_t *e;
    LS_CHECK(ls_engine_load(model, &eo, &e));
    const ls_model_config *c = ls_engine_config(e);
    ls_backend_t *be = ls_engine_backend(e);
    int cap = (int)c->n_layer * 7 + 1;
    ls_weight *w = malloc((size_t)cap * sizeof *w);
    double bytes;
    int n = decode_weights(c, w, cap, &bytes);
    int64_t widest = c->n_vocab > c->n_ff ? c->n_vocab : c->n_ff;
    widest = widest > c->n_head * c->head_dim ? widest : c->n_head * c->head_dim;
    float *x = malloc((size_t)(16 * widest) * sizeof *x), *y = malloc((size_t)(16 * widest) * sizeof *y);
    for (int64_t i = 0; i < 16 * widest; i++) x[i] = (float)((i * 7919) % 2001 - 1000) / 1000.0f;
    printf("decode matmuls of %s: %d matrices, %.1f MB of weights, %d threads, best of %d\n\n", model, n,
           bytes / 1e6, ls_backend_threads(be), reps);
    printf("| act | m | ms/step | CPU ms/step | tokens/s | weights GB/s |\n|---|---:|---:|---:|---:|---:|\n");
    ls_status rc = LS_OK;
    for (int act = 0; act < 2 && rc == LS_OK; act++) {
        ls_backend_set_act_precision(be, act ? LS_ACT_LLAMACPP : LS_ACT_F32);
        for (int k = 0; k < n_m && rc == LS_OK; k++) {
            double t[64], c[64];
            for (int r = 0; r < reps && rc == LS_OK; r++) {
                double t0 = ls_time_ms(), c0 = cpu_ms();
                for (int i = 0; i < n && rc == LS_OK; i++) rc = ls_op_matmul(be, &w[i], x, y, ms[k]);
                t[r] = ls_time_ms() - t0, c[r] = cpu_ms() - c0;
            }
            qsort(t, (size_t)reps, sizeof *t, cmp_double);
            qsort(c, (size_t)reps, sizeof *c, cmp_double);
            double best = t[0]; // the least disturbed by other work on the machine
            if (rc == LS_OK)
                printf("| %s | %d | %.2f | %.2f | %.1f | %.2f |\n", act ? "llamacpp" : "f32", ms[k], best, c[0],
                       ms[k] / (best / 1e3), bytes / (best / 1e3) / 1e9);
            fflush(stdout);
        }
    }
    free(w), free(x), free(y);
    ls_engine_free(e);
    return rc;
}

int main(int argc, char **argv) {
    const char *model = ls_default_model_path();
    int threads = 0, reps = 9, ms[8] = {1, 4, 16}, n_m = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--model")) model = v, i++;
        else if (!strcmp(a, "--threads")) threads = atoi(v), i++;
        else if (!strcmp(a, "--reps")) reps = atoi(v), i++;
        else if (!strcmp(a, "--m")) {
            n_m = 0;
            for (char *p = argv[++i], *end; *p && n_m < 8; p = *end ? end + 1 : end) {
                long m = strtol(p, &end, 10);
                if (end == p) break;
                if (m >= 1 && m <= 16) ms[n_m++] = (int)m;
            }
        } else {
            fprintf(stderr, "usage: bench_matmul [--model F] [--threads N] [--reps R] [--m 1,4,16] (m from 1 to 16)\n");
            return 2;
        }
    }
    reps = reps < 1 ? 1 : reps > 64 ? 64 : reps;
    if (run(model, threads, reps, ms, n_m) != LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    return 0;
}
