// test_sched.c — the token-budget scheduler (worker/sched.c) on the default model: at
// temperature 0 every sequence of a mixed batch (prompt lengths, attention rules, streaming,
// stop strings, a repetition penalty) generates exactly what ls_generate makes of it alone;
// no step exceeds the budget and every step runs one token of every running decode before any
// prefill (decodes are never starved; long prompts go in chunks beside them); a cancelled
// sequence ends at once and its memory is freed (allocations are counted by wrapping malloc
// and free); a sequence with a bad token id or a failing progress callback ends alone and
// leaves the others' results unchanged. Linked with -Wl,--wrap=malloc,... (tests/CMakeLists.txt).
#include "ls_sched.h"
#include "ls_test.h"

#include <stdlib.h>

static long g_live; // blocks allocated and not freed
void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n) { void *p = __real_malloc(n); g_live += p != NULL; return p; }
void *__wrap_calloc(size_t a, size_t b) { void *p = __real_calloc(a, b); g_live += p != NULL; return p; }
void *__wrap_realloc(void *p, size_t n) { void *q = __real_realloc(p, n); g_live += !p && q; return q; }
int __wrap_posix_memalign(void **p, size_t a, size_t n) { int rc = __real_posix_memalign(p, a, n); g_live += rc == 0; return rc; }
void __wrap_free(void *p) { g_live -= p != NULL; __real_free(p); }

#define BUDGET 16
#define MAX_SEQS 8

typedef struct job {
    const char *name;
    const char *prompt;
    int repeat;            // the prompt this many times (long prompts)
    ls_gen_opts o;
    ls_vec_i32 ids;
    ls_gen_result alone;   // ls_generate's result
    // what the scheduler reported
    ls_buf text;           // streamed through on_text
    ls_vec_i32 tokens;
    ls_stop_reason stop;
    ls_status rc;
    char msg[256];
    bool prefilled, ended, fail_prefill;
    int64_t id, cancel_after; // cancel from on_text after this many pieces (0: never)
    int pieces;
    ls_sched_t *sched;
} job;

static ls_status on_text(void *ctx, const char *text, size_t len) {
    job *j = ctx;
    ls_buf_append(&j->text, text, len);
    if (j->cancel_after && ++j->pieces == j->cancel_after) return ls_sched_cancel(j->sched, j->id);
    return LS_OK;
}

static ls_status on_prefill(void *ctx, int64_t done, int64_t total) {
    job *j = ctx;
    if (j->fail_prefill && done >= 8) return LS_ERR(LS_ERR_CANCELLED, "%s: the client went away", j->name);
    j->prefilled = done == total;
    return LS_OK;
}

static void on_end(void *ctx, int64_t id, ls_status rc, const char *msg, const ls_gen_result *res) {
    job *j = ctx;
    (void)id;
    j->ended = true;
    j->rc = rc;
    snprintf(j->msg, sizeof j->msg, "%s", msg);
    j->stop = res->stop;
    for (size_t i = 0; i < res->tokens.len; i++) ls_vec_i32_push(&j->tokens, res->tokens.data[i]);
    TEST_COND(rc != LS_OK || (res->text.len == j->text.len && !memcmp(res->text.data, j->text.data, j->text.len)),
              "%s: the streamed text differs from the result's", j->name);
}

static void setup(ls_engine_t *e, job *jobs, int n) {
    static const char *const stops[] = {"\n\n", " is "};
    for (int i = 0; i < n; i++) {
        job *j = &jobs[i];
        ls_buf p = {0};
        for (int r = 0; r < (j->repeat ? j->repeat : 1); r++) ls_buf_append(&p, j->prompt, strlen(j->prompt));
        TEST_COND(ls_tokenize(ls_engine_tokenizer(e), p.data, p.len, true, false, &j->ids) == LS_OK, "tokenize");
        ls_buf_free(&p);
        j->o.sampling.temp = 0;
        if (j->o.sampling.repeat_penalty == 0) j->o.sampling.repeat_penalty = 1.0f;
        j->o.on_prefill = on_prefill;
        j->o.progress_ctx = j;
        if (j->o.n_stop) j->o.stop = stops;
        ls_buf_append(&j->text, "", 0);
    }
}

static void free_jobs(job *jobs, int n) {
    for (int i = 0; i < n; i++) {
        ls_vec_i32_free(&jobs[i].ids);
        ls_gen_result_free(&jobs[i].alone);
        ls_buf_free(&jobs[i].text);
        ls_vec_i32_free(&jobs[i].tokens);
    }
}

static bool same_tokens(const ls_vec_i32 *a, const ls_vec_i32 *b) {
    return a->len == b->len && (!a->len || !memcmp(a->data, b->data, a->len * sizeof *a->data));
}

// Steps the scheduler to the end, checking the budget and that decodes come first.
static void run_checked(ls_sched_t *s, job *jobs, int n) {
    bool mixed = false;
    for (int step = 0; ls_sched_active(s) > 0 && step < 10000; step++) {
        int64_t decoding = 0;
        for (int i = 0; i < n; i++) decoding += jobs[i].prefilled && !jobs[i].ended;
        ls_sched_stats st;
        TEST_COND(ls_sched_step(s, &st) == LS_OK, "step %d: %s", step, ls_err_msg());
        TEST_COND(st.decode_tokens + st.prefill_tokens <= BUDGET, "step %d ran %lld tokens, over the budget of %d", step,
                  (long long)(st.decode_tokens + st.prefill_tokens), BUDGET);
        int64_t want = decoding < BUDGET ? decoding : BUDGET;
        TEST_COND(st.decode_tokens == want, "step %d decoded %lld of %lld running sequences", step,
                  (long long)st.decode_tokens, (long long)decoding);
        mixed |= st.decode_tokens > 0 && st.prefill_tokens > 0;
    }
    TEST_COND(ls_sched_active(s) == 0, "the scheduler did not finish");
    TEST_COND(mixed, "no step ran prefill chunks beside decodes");
}

static void test_equal_to_alone(ls_engine_t *e) {
    job jobs[] = {
        {.name = "full, stop strings", .prompt = "The capital of France is", .o = {.max_tokens = 16, .n_stop = 2}},
        {.name = "window, long prompt", .prompt = "In the beginning God created the heaven and the earth. ", .repeat = 9,
         .o = {.max_tokens = 20, .rule = {.kind = LS_ATTN_WINDOW, .window = 48}}},
        {.name = "sink stream", .prompt = "Once upon a time, in a small village,",
         .o = {.max_tokens = 40, .rule = {.kind = LS_ATTN_SINK, .sinks = 4, .window = 24}, .stream = true}},
        {.name = "s2", .prompt = "The sky is blue and the grass is green. ", .repeat = 3,
         .o = {.max_tokens = 24, .rule = {.kind = LS_ATTN_S2, .group = 8}}},
        {.name = "repeat penalty", .prompt = "one two three four five", .o = {.max_tokens = 18}},
        {.name = "one token", .prompt = "Hello", .o = {.max_tokens = 1}},
    };
    int n = (int)(sizeof jobs / sizeof *jobs);
    jobs[4].o.sampling.repeat_penalty = 1.3f, jobs[4].o.sampling.repeat_last_n = 64;
    setup(e, jobs, n);
    for (int i = 0; i < n; i++) {
        ls_gen_opts alone = jobs[i].o;
        alone.on_prefill = NULL;
        TEST_COND(ls_generate(e, jobs[i].ids.data, (int64_t)jobs[i].ids.len, &alone, NULL, NULL, &jobs[i].alone) == LS_OK,
                  "%s alone: %s", jobs[i].name, ls_err_msg());
    }
    ls_sched_t *s;
    ls_sched_opts so = {.batch_tokens = BUDGET};
    TEST_COND(ls_sched_init(e, &so, &s) == LS_OK, "init");
    for (int i = 0; i < n; i++) {
        ls_sched_cb cb = {on_text, on_end, &jobs[i]};
        TEST_COND(ls_sched_add(s, jobs[i].ids.data, (int64_t)jobs[i].ids.len, &jobs[i].o, &cb, &jobs[i].id) == LS_OK,
                  "add %s: %s", jobs[i].name, ls_err_msg());
    }
    run_checked(s, jobs, n);
    for (int i = 0; i < n; i++) {
        job *j = &jobs[i];
        TEST_COND(j->ended && j->rc == LS_OK, "%s ended %d: %s", j->name, j->rc, j->msg);
        TEST_COND(same_tokens(&j->tokens, &j->alone.tokens), "%s: %zu tokens batched, %zu alone; texts \"%s\" vs \"%s\"",
                  j->name, j->tokens.len, j->alone.tokens.len, j->text.data, j->alone.text.data);
        TEST_COND(!strcmp(j->text.data, j->alone.text.data) && j->stop == j->alone.stop, "%s: text or stop reason differs",
                  j->name);
        printf("  %-22s %3zu prompt, %2zu generated (%s): \"%.40s\"\n", j->name, j->ids.len, j->tokens.len,
               ls_stop_reason_name(j->stop), j->text.data);
    }
    TEST_COND(jobs[0].stop == LS_STOP_STRING, "the stop string did not end the first job (%d)", jobs[0].stop);
    ls_sched_free(s);
    free_jobs(jobs, n);
}

// Cancels (from a callback and from outside), a bad id and a failing progress callback end
// those sequences alone; the others generate what they would alone.
static void test_failures_and_cancel(ls_engine_t *e) {
    job jobs[] = {
        {.name = "survivor A", .prompt = "The quick brown fox", .o = {.max_tokens = 12}},
        {.name = "cancelled in on_text", .prompt = "Water boils at", .o = {.max_tokens = 30}, .cancel_after = 3},
        {.name = "bad id", .prompt = "This prompt gets an id outside the vocabulary", .o = {.max_tokens = 8}},
        {.name = "failing progress", .prompt = "A long prompt whose client goes away. ", .repeat = 4, .o = {.max_tokens = 8},
         .fail_prefill = true},
        {.name = "survivor B", .prompt = "Rain falls on the", .repeat = 2, .o = {.max_tokens = 14}},
    };
    int n = (int)(sizeof jobs / sizeof *jobs);
    setup(e, jobs, n);
    jobs[2].ids.data[3] = 1 << 20;
    for (int i = 0; i < n; i += 4) {
        ls_gen_opts alone = jobs[i].o;
        alone.on_prefill = NULL;
        TEST_COND(ls_generate(e, jobs[i].ids.data, (int64_t)jobs[i].ids.len, &alone, NULL, NULL, &jobs[i].alone) == LS_OK,
                  "%s alone: %s", jobs[i].name, ls_err_msg());
    }
    ls_sched_t *s;
    ls_sched_opts so = {.batch_tokens = BUDGET};
    TEST_COND(ls_sched_init(e, &so, &s) == LS_OK, "init");
    for (int i = 0; i < n; i++) {
        jobs[i].sched = s;
        ls_sched_cb cb = {on_text, on_end, &jobs[i]};
        TEST_COND(ls_sched_add(s, jobs[i].ids.data, (int64_t)jobs[i].ids.len, &jobs[i].o, &cb, &jobs[i].id) == LS_OK,
                  "add %s: %s", jobs[i].name, ls_err_msg());
    }
    // a sequence added and cancelled between steps: on_end at once, every block it took freed
    job late = {.name = "cancelled between steps", .prompt = "Never run", .o = {.max_tokens = 50}};
    setup(e, &late, 1);
    long live = g_live;
    ls_sched_cb cb = {on_text, on_end, &late};
    TEST_COND(ls_sched_add(s, late.ids.data, (int64_t)late.ids.len, &late.o, &cb, &late.id) == LS_OK, "add late");
    TEST_COND(ls_sched_active(s) == n + 1, "%lld active", (long long)ls_sched_active(s));
    TEST_COND(ls_sched_cancel(s, late.id) == LS_OK, "cancel: %s", ls_err_msg());
    TEST_COND(late.ended && late.rc == LS_ERR_CANCELLED && strstr(late.msg, "cancelled"), "late: ended %d rc %d", late.ended,
              late.rc);
    TEST_COND(g_live == live, "the cancelled sequence left %ld blocks allocated", g_live - live);
    TEST_COND(ls_sched_active(s) == n, "%lld active after the cancel", (long long)ls_sched_active(s));
    TEST_ERR(ls_sched_cancel(s, late.id), LS_ERR_NOT_FOUND, "no running sequence");
    TEST_COND(ls_sched_run(s) == LS_OK, "run: %s", ls_err_msg());
    TEST_COND(jobs[1].rc == LS_ERR_CANCELLED && jobs[1].tokens.len >= 3 && jobs[1].tokens.len < 30, "cancelled in on_text: rc %d after %zu tokens",
              jobs[1].rc, jobs[1].tokens.len);
    TEST_COND(jobs[2].rc == LS_ERR_INVALID && strstr(jobs[2].msg, "outside the vocabulary"), "bad id: rc %d, \"%s\"",
              jobs[2].rc, jobs[2].msg);
    TEST_COND(jobs[3].rc == LS_ERR_CANCELLED && strstr(jobs[3].msg, "went away") && !jobs[3].tokens.len,
              "failing progress: rc %d, \"%s\"", jobs[3].rc, jobs[3].msg);
    for (int i = 0; i < n; i += 4)
        TEST_COND(jobs[i].rc == LS_OK && same_tokens(&jobs[i].tokens, &jobs[i].alone.tokens) &&
                      !strcmp(jobs[i].text.data, jobs[i].alone.text.data),
                  "%s: \"%s\" beside failures, \"%s\" alone", jobs[i].name, jobs[i].text.data, jobs[i].alone.text.data);
    ls_sched_free(s);
    free_jobs(jobs, n);
    free_jobs(&late, 1);
}

int main(void) {
    const char *model = ls_default_model_path();
    FILE *f = fopen(model, "rb");
    if (!f) {
        fprintf(stderr, "FAIL: the default model is not at %s (deploy/setup.sh fetches it)\n", model);
        return 1;
    }
    fclose(f);
    ls_engine_opts o = ls_engine_opts_default();
    o.n_threads = 2;
    ls_engine_t *e;
    if (ls_engine_load(model, &o, &e) != LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    test_equal_to_alone(e);
    test_failures_and_cancel(e);
    ls_engine_free(e);
    return TEST_REPORT("test_sched");
}
