// sp_tasks.c — generation and perplexity over a worker group: every rank calls the same
// function with the same tokens; the leader (rank 0) samples and broadcasts each token, and
// perplexity sums are reduced so every rank ends with the same result. The arithmetic is the
// single-process task's (tasks.c), so results match it. Tests: tests/oracle/test_sp.py.
#include "ls_sp_tasks.h"
#include "tasks_impl.h"

#include <math.h>
#include <string.h>

// The leader's stepper: prefill over the group; each decode step broadcasts the token first.
typedef struct group_step {
    ls_sp_t *sp;
    ls_comm_t *c;
    bool prefilled; // the others are now following the broadcast tokens
} group_step;

static ls_status group_prefill(void *ctx, const int32_t *ids, int64_t n, float *logits) {
    (void)n;
    group_step *g = ctx;
    LS_CHECK(ls_sp_prefill(g->sp, ids, NULL, logits));
    g->prefilled = true;
    return LS_OK;
}

static ls_status group_step_fn(void *ctx, int32_t id, float *logits) {
    group_step *g = ctx;
    LS_CHECK(ls_comm_bcast(g->c, &id, sizeof id, 0));
    return ls_sp_decode(g->sp, id, logits);
}

// The other ranks: the same prefill, then each broadcast token until the leader sends -1.
static ls_status follow(ls_sp_t *sp, ls_comm_t *c, const int32_t *prompt) {
    LS_CHECK(ls_sp_prefill(sp, prompt, NULL, NULL));
    for (;;) {
        int32_t id;
        LS_CHECK(ls_comm_bcast(c, &id, sizeof id, 0));
        if (id < 0) return LS_OK;
        LS_CHECK(ls_sp_decode(sp, id, NULL));
    }
}

ls_status ls_sp_generate(ls_engine_t *e, ls_comm_t *c, const int32_t *prompt, int64_t n_prompt, const ls_gen_opts *o,
                         ls_text_fn on_text, void *text_ctx, ls_gen_result *res) {
    *res = (ls_gen_result){.prompt_tokens = n_prompt};
    ls_buf_append(&res->text, "", 0);
    if (o->stream) return LS_ERR(LS_ERR_UNSUPPORTED, "streaming (sink/window generation without a limit) runs in one process, not a worker group");
    if (n_prompt < 1) return LS_ERR(LS_ERR_INVALID, "the prompt is empty: give at least one token");
    ls_sp_t *sp;
    ls_sp_opts so = {.rule = o->rule, .n = n_prompt, .max_new = o->max_tokens, .on_progress = o->on_prefill,
                     .progress_ctx = o->progress_ctx, .checkpoints = o->checkpoints};
    LS_CHECK(ls_sp_init(e, c, &so, &sp));
    ls_status rc;
    if (ls_comm_rank(c) == 0) {
        group_step g = {sp, c, false};
        ls_stepper st = {group_prefill, group_step_fn, &g};
        ls_gen_result r;
        rc = ls_generate_with(&st, ls_engine_tokenizer(e), prompt, n_prompt, o, on_text, text_ctx, &r);
        ls_gen_result_free(res);
        *res = r;
        // the others wait for the end of the tokens: send it also when the leader stopped on
        // its own (a cancel, a failed callback), unless the group itself failed
        int32_t stop = -1;
        if (g.prefilled && rc != LS_ERR_DEVICE) {
            ls_status brc = ls_comm_bcast(c, &stop, sizeof stop, 0);
            if (rc == LS_OK) rc = brc;
        }
    } else {
        rc = follow(sp, c, prompt);
    }
    ls_sp_free(sp);
    return rc;
}

typedef struct group_ppl {
    const int32_t *chunk;
    int64_t ctx;
    int32_t n_vocab;
    nll_acc acc;
} group_ppl;

static ls_status score_owned(void *ctx, int64_t pos, const float *logits) {
    group_ppl *g = ctx;
    if (pos < g->ctx - 1) ls_nll_add(&g->acc, logits, g->n_vocab, g->chunk[pos + 1], pos + 1);
    return LS_OK;
}

ls_status ls_sp_perplexity(ls_engine_t *e, ls_comm_t *c, const int32_t *tokens, int64_t n, const ls_ppl_opts *o,
                           ls_ppl_result *res) {
    const ls_tokenizer_t *tok = ls_engine_tokenizer(e);
    int64_t ctx = o->ctx;
    *res = (ls_ppl_result){.ctx = ctx};
    if (o->on_nll) return LS_ERR(LS_ERR_UNSUPPORTED, "per-token losses (--nll-out) are written by one process, not a worker group");
    if (ctx < 4) return LS_ERR(LS_ERR_INVALID, "--ctx %lld is too small", (long long)ctx);
    if (n < 2 * ctx)
        return LS_ERR(LS_ERR_INVALID, "the text has %lld tokens; a context of %lld needs at least %lld", (long long)n,
                      (long long)ctx, (long long)(2 * ctx));
    int64_t chunks = n / ctx;
    if (o->max_chunks > 0 && o->max_chunks < chunks) chunks = o->max_chunks;
    ls_sp_t *sp;
    ls_sp_opts so = {.rule = o->rule, .n = ctx, .max_new = 0, .on_progress = o->on_progress,
                     .progress_ctx = o->progress_ctx, .checkpoints = o->checkpoints};
    LS_CHECK(ls_sp_init(e, c, &so, &sp));
    int32_t *buf = ls_malloc((size_t)ctx * sizeof *buf);
    group_ppl g = {.chunk = buf, .ctx = ctx, .n_vocab = ls_tokenizer_n_vocab(tok)};
    ls_forward_opts fo = {.logits_from = o->score_all ? 0 : ctx / 2, .on_logits = score_owned, .ctx = &g};
    nll_acc total = {0};
    ls_status rc = LS_OK;
    double t0 = ls_time_ms();
    for (int64_t k = 0; k < chunks && rc == LS_OK; k++) {
        memcpy(buf, tokens + k * ctx, (size_t)ctx * sizeof *buf);
        if (ls_tokenizer_add_bos(tok) && ls_tokenizer_bos(tok) >= 0) buf[0] = ls_tokenizer_bos(tok);
        ls_sp_reset(sp);
        g.acc = (nll_acc){0};
        rc = ls_sp_prefill(sp, buf, &fo, NULL);
        double sums[3] = {g.acc.nll, g.acc.nll2, (double)g.acc.count};
        if (rc == LS_OK) rc = ls_comm_allreduce_sum(c, sums, 3);
        total.nll += sums[0], total.nll2 += sums[1], total.count += (int64_t)sums[2];
        if (rc == LS_OK && o->on_chunk) o->on_chunk(o->chunk_ctx, k, chunks, exp(total.nll / (double)total.count));
    }
    res->ms = ls_time_ms() - t0;
    ls_free(buf);
    ls_sp_free(sp);
    LS_CHECK(rc);
    res->chunks = chunks;
    return ls_nll_finish(&total, res);
}
