// bench_batch.c — many sequences at once through the scheduler (worker/sched.c), in the test
// shape of llama.cpp's `llama-batched-bench -npp 512 -ntg 128 -npl 1,4,16`: for each count B,
// B sequences with different prompts of npp KJV tokens each generate ntg tokens (greedy, past
// end-of-generation), all added at once, under a token budget per step. Prints, per B, the
// time of the steps that ran prompt chunks (T_PP, with any decodes beside them), of the pure
// decode steps (T_TG), their rows per second, and the aggregate: every prompt and generated
// token over the total time. A benchmark: it never fails on a time.
//   bench_batch [--model F] [--threads N] [--npp 512] [--ntg 128] [--npl 1,4,16] [--batch-tokens 512]
#include "ls_sched.h"

#include <stdlib.h>
#include <string.h>

#define MAX_NPL 8

typedef struct bench_opts {
    const char *model;
    int threads;
    int64_t npp, ntg, budget;
    int64_t npl[MAX_NPL];
    int n_npl;
} bench_opts;

typedef struct counts {
    double pp_ms, tg_ms;
    int64_t pp_rows, mixed_decode_rows, tg_rows, generated;
} counts;

static void on_end(void *ctx, int64_t id, ls_status rc, const char *msg, const ls_gen_result *res) {
    counts *c = ctx;
    if (rc != LS_OK) fprintf(stderr, "sequence %lld: %s\n", (long long)id, msg);
    c->generated += (int64_t)res->tokens.len;
}

static ls_status kjv_tokens(ls_engine_t *e, int64_t need, ls_vec_i32 *ids) {
    char path[4200];
    snprintf(path, sizeof path, "%s/data/kjv.txt", ls_home_dir());
    ls_buf text = {0};
    LS_CHECK(ls_file_read_all(path, (size_t)1 << 30, &text));
    size_t len = text.len < ((size_t)need * 8 + 4096) ? text.len : (size_t)need * 8 + 4096; // ~4 bytes a token
    ls_status rc = ls_tokenize(ls_engine_tokenizer(e), text.data, len, false, false, ids);
    ls_buf_free(&text);
    LS_CHECK(rc);
    if ((int64_t)ids->len < need) return LS_ERR(LS_ERR_INVALID, "the KJV text gives only %zu tokens", ids->len);
    return LS_OK;
}

// B sequences added at once, stepped to the end; step times split into prefill and decode.
static ls_status bench_one(ls_engine_t *e, const bench_opts *o, const int32_t *ids, int64_t B, counts *c) {
    *c = (counts){0};
    ls_sched_t *s;
    ls_sched_opts so = {.batch_tokens = o->budget};
    LS_CHECK(ls_sched_init(e, &so, &s));
    ls_gen_opts g = {.max_tokens = o->ntg, .ignore_eog = true, .sampling = {.temp = 0, .repeat_penalty = 1.0f}};
    ls_sched_cb cb = {.on_end = on_end, .ctx = c};
    ls_status rc = LS_OK;
    for (int64_t b = 0; b < B && rc == LS_OK; b++) {
        int64_t id;
        rc = ls_sched_add(s, ids + b * o->npp, o->npp, &g, &cb, &id);
    }
    while (rc == LS_OK && ls_sched_active(s) > 0) {
        ls_sched_stats st;
        double t0 = ls_time_ms();
        rc = ls_sched_step(s, &st);
        double ms = ls_time_ms() - t0;
        if (st.prefill_tokens) c->pp_ms += ms, c->pp_rows += st.prefill_tokens, c->mixed_decode_rows += st.decode_tokens;
        else c->tg_ms += ms, c->tg_rows += st.decode_tokens;
    }
    ls_sched_free(s);
    return rc;
}

static ls_status run(const bench_opts *o) {
    ls_engine_opts eo = ls_engine_opts_default();
    eo.n_threads = o->threads;
    ls_engine_t *e;
    LS_CHECK(ls_engine_load(o->model, &eo, &e));
    int64_t maxB = 0;
    for (int i = 0; i < o->n_npl; i++) maxB = o->npl[i] > maxB ? o->npl[i] : maxB;
    ls_vec_i32 ids = {0};
    ls_status rc = kjv_tokens(e, maxB * o->npp, &ids);
    if (rc == LS_OK)
        printf("batched generation: %s, %d threads, prompt %lld, %lld generated, budget %lld tokens a step\n\n"
               "| %3s | %7s | %9s | %9s | %9s | %9s | %9s | %10s |\n|---|---|---|---|---|---|---|---|\n",
               o->model, ls_backend_threads(ls_engine_backend(e)), (long long)o->npp, (long long)o->ntg,
               (long long)o->budget, "B", "N_KV", "T_PP s", "S_PP t/s", "T_TG s", "S_TG t/s", "T s", "S t/s");
    for (int i = 0; i < o->n_npl && rc == LS_OK; i++) {
        counts c;
        int64_t B = o->npl[i];
        rc = bench_one(e, o, ids.data, B, &c);
        if (rc != LS_OK) break;
        double T = (c.pp_ms + c.tg_ms) / 1e3;
        printf("| %3lld | %7lld | %9.3f | %9.2f | %9.3f | %9.2f | %9.3f | %10.2f |\n", (long long)B,
               (long long)(B * (o->npp + o->ntg)), c.pp_ms / 1e3, (double)c.pp_rows / (c.pp_ms / 1e3), c.tg_ms / 1e3,
               c.tg_ms > 0 ? (double)c.tg_rows / (c.tg_ms / 1e3) : 0.0, T, (double)(B * o->npp + c.generated) / T);
        fflush(stdout);
        if (c.mixed_decode_rows)
            fprintf(stderr, "  B=%lld: %lld decode rows ran beside prompt chunks (counted in T_PP)\n", (long long)B,
                    (long long)c.mixed_decode_rows);
    }
    ls_vec_i32_free(&ids);
    ls_engine_free(e);
    return rc;
}

int main(int argc, char **argv) {
    bench_opts o = {.model = ls_default_model_path(), .npp = 512, .ntg = 128, .budget = 512, .npl = {1, 4, 16}, .n_npl = 3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--model")) o.model = v, i++;
        else if (!strcmp(a, "--threads")) o.threads = atoi(v), i++;
        else if (!strcmp(a, "--npp")) o.npp = atoll(v), i++;
        else if (!strcmp(a, "--ntg")) o.ntg = atoll(v), i++;
        else if (!strcmp(a, "--batch-tokens")) o.budget = atoll(v), i++;
        else if (!strcmp(a, "--npl")) {
            o.n_npl = 0;
            for (char *p = argv[++i], *end; *p && o.n_npl < MAX_NPL; p = *end ? end + 1 : end) {
                o.npl[o.n_npl] = strtoll(p, &end, 10);
                if (o.npl[o.n_npl] > 0) o.n_npl++;
                if (end == p) break;
            }
        } else {
            fprintf(stderr, "usage: bench_batch [--model F] [--threads N] [--npp 512] [--ntg 128] [--npl 1,4,16]\n"
                            "                   [--batch-tokens 512]\n");
            return 2;
        }
    }
    if (o.npp < 1 || o.ntg < 1 || o.budget < 1 || o.n_npl < 1) {
        fprintf(stderr, "bench_batch: --npp, --ntg, --batch-tokens and --npl must be positive\n");
        return 2;
    }
    if (run(&o) != LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    return 0;
}
