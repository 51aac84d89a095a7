// bench_engine.c — engine speed on a model (default: the default model): prefill tokens/s for
// prompts of given lengths (logits for the last position only, as llama-bench's pp tests)
// and decode tokens/s for a number of tokens after a prompt of a given depth (llama-bench's
// "tg N @ dD"). Prompts are KJV text tokens. Prints a table, or JSON for
// bench/compare-llamacpp. Decode is also given as a fraction of its memory-bandwidth limit:
// the bytes of weights one token reads (every matrix and norm of every layer, the output
// matrix, one embedding row; summed from the model) over the machine's triad bandwidth with
// the same threads (bench/triad.h; or --bandwidth GB/s). A benchmark: it never fails on a time.
//   bench_engine [--model F] [--threads N] [--reps R] [--prefill 512,2048,8192]
//                [--decode 128] [--depth 512] [--act f32|llamacpp] [--kv-type f32|bf16|q8_0] [--bandwidth GBPS]
//                [--no-pin] [--json]
// --no-pin leaves the threads unpinned, as llama-bench does (the engine pins them by default).
#include "ls_engine.h"
#include "ls_kv.h"
#include "triad.h"

#include <stdlib.h>
#include <string.h>

#define MAX_TESTS 8

typedef struct bench_opts {
    const char *model;
    int threads, reps;
    int64_t prefill[MAX_TESTS];
    int n_prefill;
    int64_t decode, depth;
    bool json;
    ls_act_precision act;
    const char *kv_type; // NULL: the backend's default
    double gbps; // memory bandwidth for the decode limit; 0: measure it
    bool no_pin; // leave threads unpinned (the engine pins them to CPUs 0.. by default)
} bench_opts;

// Bytes of weights one decode step reads: all of each layer's, the final norm, the output
// matrix and one row of the embedding (the same matrix when tied: its other rows are read
// for the logits anyway, counted once).
static double decode_bytes(const ls_model_config *c) {
    double b = (double)c->output->nbytes + (double)c->output_norm->nbytes;
    if (c->tok_embd != c->output) b += (double)c->tok_embd->nbytes / (double)c->tok_embd->ne[1];
    for (int64_t l = 0; l < c->n_layer; l++) {
        const ls_layer_weights *L = &c->layers[l];
        const ls_gguf_tensor *ts[] = {L->attn_norm, L->wq, L->wk, L->wv, L->wo, L->bq, L->bk,
                                      L->bv, L->bo, L->ffn_norm, L->w_gate, L->w_up, L->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) b += ts[i] ? (double)ts[i]->nbytes : 0.0;
    }
    return b;
}

static ls_status noop_logits(void *ctx, int64_t i, const float *l) {
    (void)ctx, (void)i, (void)l;
    return LS_OK;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// Median milliseconds of `reps` prefills of n tokens into a fresh sequence.
static ls_status bench_prefill(ls_engine_t *e, const int32_t *ids, int64_t n, int reps, double *ms) {
    double t[32];
    ls_seq_t *s;
    LS_CHECK(ls_seq_init(e, n, &s));
    ls_forward_opts fo = {.logits_from = n - 1, .on_logits = noop_logits};
    for (int r = 0; r < reps; r++) {
        ls_seq_reset(s);
        double t0 = ls_time_ms();
        LS_CHECK(ls_engine_forward(e, s, ids, n, &fo));
        t[r] = ls_time_ms() - t0;
    }
    ls_seq_free(s);
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    *ms = t[reps / 2];
    return LS_OK;
}

// Median milliseconds of `reps` runs of n single-token decode steps after a depth-token prompt.
static ls_status bench_decode(ls_engine_t *e, const int32_t *ids, int64_t depth, int64_t n, int reps, double *ms) {
    double t[32];
    ls_seq_t *s;
    LS_CHECK(ls_seq_init(e, depth + n, &s));
    ls_forward_opts fo = {.logits_from = 0, .on_logits = noop_logits};
    ls_forward_opts none = {.logits_from = depth};
    for (int r = 0; r < reps; r++) {
        ls_seq_reset(s);
        if (depth) LS_CHECK(ls_engine_forward(e, s, ids, depth, &none));
        double t0 = ls_time_ms();
        for (int64_t i = 0; i < n; i++) LS_CHECK(ls_engine_forward(e, s, ids + depth + i, 1, &fo));
        t[r] = ls_time_ms() - t0;
    }
    ls_seq_free(s);
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    *ms = t[reps / 2];
    return LS_OK;
}

static ls_status kjv_tokens(ls_engine_t *e, int64_t need, ls_vec_i32 *ids) {
    char path[4200];
    snprintf(path, sizeof path, "%s/data/kjv.txt", ls_home_dir());
    ls_buf text = {0};
    LS_CHECK(ls_file_read_all(path, (size_t)1 << 30, &text));
    ls_status rc = ls_tokenize(ls_engine_tokenizer(e), text.data, text.len, false, false, ids);
    ls_buf_free(&text);
    LS_CHECK(rc);
    if ((int64_t)ids->len < need) return LS_ERR(LS_ERR_INVALID, "the KJV text has only %zu tokens", ids->len);
    return LS_OK;
}

// limit: the decode limit in tokens/s (0 for prefill rows).
static void print_row(const bench_opts *o, const char *test, int64_t tokens, double ms, double limit, bool *first) {
    double tps = tokens / (ms / 1e3);
    if (o->json) {
        printf("%s{\"test\": \"%s\", \"tokens\": %lld, \"ms\": %.3f, \"tok_per_s\": %.3f", *first ? "[" : ", ", test,
               (long long)tokens, ms, tps);
        if (limit > 0) printf(", \"limit_tok_per_s\": %.3f, \"of_limit\": %.4f", limit, tps / limit);
        printf("}");
    } else if (limit > 0) {
        printf("| %-16s | %8lld | %10.1f | %10.2f | %5.1f%% |\n", test, (long long)tokens, ms, tps, 100.0 * tps / limit);
    } else {
        printf("| %-16s | %8lld | %10.1f | %10.2f |        |\n", test, (long long)tokens, ms, tps);
    }
    *first = false;
    fflush(stdout);
}

static ls_status run(const bench_opts *o) {
    // The bandwidth first: the engine pins the calling thread, and threads started after that
    // (the triad's) would inherit its one CPU.
    double gbps = o->gbps, read_gbps = 0.0;
    int want = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (o->decode && gbps <= 0) LS_CHECK(triad_measure(want > 0 ? want : 1, 3, &gbps, &read_gbps, NULL));
    ls_engine_opts eo = ls_engine_opts_default();
    eo.n_threads = o->threads;
    eo.act = o->act;
    if (o->kv_type && !(eo.kv_type_set = ls_kv_type_parse(o->kv_type, &eo.kv_type)))
        return LS_ERR(LS_ERR_INVALID, "--kv-type \"%s\" is not f32, bf16 or q8_0", o->kv_type);
    if (o->no_pin) eo.first_cpu = -1;
    ls_engine_t *e;
    LS_CHECK(ls_engine_load(o->model, &eo, &e));
    int64_t need = o->depth + o->decode;
    for (int i = 0; i < o->n_prefill; i++) need = o->prefill[i] > need ? o->prefill[i] : need;
    ls_vec_i32 ids = {0};
    ls_status rc = kjv_tokens(e, need, &ids);
    bool first = true;
    int threads = ls_backend_threads(ls_engine_backend(e));
    double bytes = decode_bytes(ls_engine_config(e));
    double limit = o->decode ? gbps * 1e9 / bytes : 0.0; // tokens/s if decode only streamed its weights
    if (!o->json && rc == LS_OK) {
        printf("engine benchmark: %s, %d threads, KV cache %s, median of %d\n", o->model, threads,
               ls_kv_type_name(ls_engine_kv_type(e)), o->reps);
        if (o->decode)
            printf("decode reads %.1f MB of weights per token; memory bandwidth %.2f GB/s (triad, %d threads): "
                   "at most %.1f tokens/s\n", bytes / 1e6, gbps, threads, limit);
        printf("\n| %-16s | %8s | %10s | %10s | of limit |\n|---|---|---|---|---|\n", "test", "tokens", "ms", "tok/s");
    }
    for (int i = 0; i < o->n_prefill && rc == LS_OK; i++) {
        double ms;
        char name[32];
        rc = bench_prefill(e, ids.data, o->prefill[i], o->reps, &ms);
        snprintf(name, sizeof name, "pp%lld", (long long)o->prefill[i]);
        if (rc == LS_OK) print_row(o, name, o->prefill[i], ms, 0.0, &first);
    }
    if (o->decode && rc == LS_OK) {
        double ms;
        char name[48];
        rc = bench_decode(e, ids.data, o->depth, o->decode, o->reps, &ms);
        snprintf(name, sizeof name, "tg%lld @ d%lld", (long long)o->decode, (long long)o->depth);
        if (rc == LS_OK) print_row(o, name, o->decode, ms, limit, &first);
    }
    if (o->json) printf("]\n");
    ls_vec_i32_free(&ids);
    ls_engine_free(e);
    return rc;
}

int main(int argc, char **argv) {
    bench_opts o = {.model = ls_default_model_path(), .threads = 0, .reps = 3, .prefill = {512, 2048, 8192},
                    .n_prefill = 3, .decode = 128, .depth = 512};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--model")) o.model = v, i++;
        else if (!strcmp(a, "--threads")) o.threads = atoi(v), i++;
        else if (!strcmp(a, "--reps")) o.reps = atoi(v), i++;
        else if (!strcmp(a, "--decode")) o.decode = atoll(v), i++;
        else if (!strcmp(a, "--depth")) o.depth = atoll(v), i++;
        else if (!strcmp(a, "--act")) o.act = strcmp(v, "llamacpp") ? LS_ACT_F32 : LS_ACT_LLAMACPP, i++;
        else if (!strcmp(a, "--kv-type")) o.kv_type = v, i++;
        else if (!strcmp(a, "--json")) o.json = true;
        else if (!strcmp(a, "--bandwidth")) o.gbps = atof(v), i++;
        else if (!strcmp(a, "--no-pin")) o.no_pin = true;
        else if (!strcmp(a, "--prefill")) {
            o.n_prefill = 0;
            for (char *p = argv[++i], *end; *p && o.n_prefill < MAX_TESTS; p = *end ? end + 1 : end) {
                o.prefill[o.n_prefill] = strtoll(p, &end, 10);
                if (o.prefill[o.n_prefill] > 0) o.n_prefill++;
                if (end == p) break;
            }
        } else {
            fprintf(stderr, "usage: bench_engine [--model F] [--threads N] [--reps R] [--prefill 512,2048,8192]\n"
                            "                    [--decode 128] [--depth 512] [--act f32|llamacpp] [--kv-type T] [--bandwidth GBPS] [--no-pin] [--json]\n");
            return 2;
        }
    }
    if (o.reps < 1 || o.reps > 32) o.reps = 3;
    if (run(&o) != LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    return 0;
}
