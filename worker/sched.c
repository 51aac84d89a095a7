// sched.c — the token-budget scheduler: many generations on one engine, one batched forward
// per step. A step takes one token of every running decode (round robin when they outnumber
// the budget), then chunks of the waiting prompts, oldest first, with what is left; after the
// forward, each sequence whose logits came out samples its next token through ls_generate's
// own state (ls_gen_take, worker/tasks.c). A sequence that fails, is cancelled or finishes
// ends alone: its callback hears why and its cache is freed at once.
// Docs: docs/architecture.md ("Engine"). Tests: tests/unit/test_sched.c.
#include "ls_sched.h"
#include "tasks_impl.h"

#include <stdio.h>
#include <string.h>

#define DEFAULT_BUDGET 512

typedef struct sched_seq {
    int64_t id;
    int32_t n_vocab;
    ls_seq_t *seq;
    int32_t *prompt;        // [n_prompt] a copy
    int64_t n_prompt, done; // prompt tokens prefilled so far
    ls_gen_opts o;
    ls_sched_cb cb;
    ls_gen_t *gen;
    ls_gen_result res;
    float *logits;          // [n_vocab] after the last token fed
    int32_t next;           // the token to feed next (decoding)
    bool decoding, cancel, ended;
    double t0, t_prefilled;
} sched_seq;

struct ls_sched {
    ls_engine_t *e;
    int64_t budget, next_id, rr;   // rr: where the next step's decode round starts
    sched_seq **seqs;              // [n] in order of adding
    int64_t n, cap;
    ls_batch_item *items;          // [cap] the step's items
    sched_seq **owner;             // [cap] whose each item is
    bool in_step;
};

ls_status ls_sched_init(ls_engine_t *e, const ls_sched_opts *o, ls_sched_t **out) {
    ls_sched_t *s = ls_calloc(1, sizeof *s);
    s->e = e;
    s->budget = o && o->batch_tokens > 0 ? o->batch_tokens : DEFAULT_BUDGET;
    *out = s;
    return LS_OK;
}

static ls_status keep_logits(void *ctx, int64_t index, const float *logits) {
    sched_seq *q = ctx;
    (void)index;
    memcpy(q->logits, logits, (size_t)q->n_vocab * sizeof *logits);
    return LS_OK;
}

// Ends a sequence once: the generation is closed (held text flushed on success), the callback
// hears rc with the pending error's message (or msg), and everything but the slot is freed.
static void end_seq(sched_seq *q, ls_status rc, const char *msg) {
    if (q->ended) return;
    q->ended = true;
    rc = ls_gen_end(q->gen, rc);
    q->gen = NULL;
    char buf[512] = "";
    if (rc != LS_OK && !msg) {
        snprintf(buf, sizeof buf, "%s", ls_err_msg());
        msg = buf;
    }
    ls_err_clear();
    double now = ls_time_ms();
    if (q->decoding) q->res.decode_ms = now - q->t_prefilled;
    else if (q->t0 > 0) q->res.prefill_ms = now - q->t0;
    if (q->cb.on_end) q->cb.on_end(q->cb.ctx, q->id, rc, msg ? msg : "", &q->res);
    ls_gen_result_free(&q->res);
    ls_seq_free(q->seq);
    q->seq = NULL;
    ls_free(q->prompt), ls_free(q->logits);
    q->prompt = NULL, q->logits = NULL;
}

static void end_cancelled(sched_seq *q) {
    ls_err_clear();
    end_seq(q, LS_ERR(LS_ERR_CANCELLED, "sequence %lld was cancelled", (long long)q->id), NULL);
}

// Drops the slots of ended sequences, keeping the order.
static void compact(ls_sched_t *s) {
    int64_t k = 0;
    for (int64_t i = 0; i < s->n; i++) {
        if (s->seqs[i]->ended) ls_free(s->seqs[i]);
        else s->seqs[k++] = s->seqs[i];
    }
    s->n = k;
    if (s->rr >= s->n) s->rr = 0;
}

static void grow(ls_sched_t *s) {
    if (s->n < s->cap) return;
    s->cap = s->cap ? 2 * s->cap : 16;
    s->seqs = ls_realloc(s->seqs, (size_t)s->cap * sizeof *s->seqs);
    s->items = ls_realloc(s->items, (size_t)s->cap * sizeof *s->items);
    s->owner = ls_realloc(s->owner, (size_t)s->cap * sizeof *s->owner);
}

ls_status ls_sched_add(ls_sched_t *s, const int32_t *prompt, int64_t n_prompt, const ls_gen_opts *o,
                       const ls_sched_cb *cb, int64_t *id) {
    *id = -1;
    sched_seq *q = ls_calloc(1, sizeof *q);
    const ls_tokenizer_t *tok = ls_engine_tokenizer(s->e);
    *q = (sched_seq){.id = s->next_id, .n_vocab = ls_tokenizer_n_vocab(tok), .n_prompt = n_prompt, .o = *o, .cb = cb ? *cb : (ls_sched_cb){0}};
    ls_status rc = ls_gen_begin(tok, prompt, n_prompt, &q->o, q->cb.on_text, q->cb.ctx, &q->res, &q->gen);
    ls_seq_opts so = ls_gen_seq_opts(o, n_prompt);
    if (rc == LS_OK) rc = ls_seq_init_opts(s->e, &so, &q->seq);
    if (rc != LS_OK) {
        ls_gen_end(q->gen, rc);
        ls_gen_result_free(&q->res);
        ls_free(q);
        return rc;
    }
    q->prompt = ls_malloc((size_t)n_prompt * sizeof *q->prompt);
    memcpy(q->prompt, prompt, (size_t)n_prompt * sizeof *prompt);
    q->logits = ls_malloc((size_t)q->n_vocab * sizeof *q->logits);
    grow(s);
    s->seqs[s->n++] = q;
    *id = s->next_id++;
    return LS_OK;
}

ls_status ls_sched_cancel(ls_sched_t *s, int64_t id) {
    for (int64_t i = 0; i < s->n; i++) {
        sched_seq *q = s->seqs[i];
        if (q->id != id || q->ended) continue;
        if (s->in_step) {
            q->cancel = true; // ended once the step's forward and sampling are done
            return LS_OK;
        }
        end_cancelled(q);
        compact(s);
        return LS_OK;
    }
    return LS_ERR(LS_ERR_NOT_FOUND, "no running sequence %lld to cancel", (long long)id);
}

int64_t ls_sched_active(const ls_sched_t *s) { return s->n; }

static void add_item(ls_sched_t *s, int64_t *k, sched_seq *q, const int32_t *tokens, int64_t m, int64_t lf) {
    s->items[*k] = (ls_batch_item){.seq = q->seq, .tokens = tokens, .n_tokens = m, .logits_from = lf,
                                   .on_logits = keep_logits, .ctx = q};
    s->owner[(*k)++] = q;
}

// The step's items: one token of each running decode (from s->rr on, round robin), then
// prompt chunks, oldest first, while the budget lasts. Returns how many.
static int64_t plan(ls_sched_t *s) {
    int64_t budget = s->budget, k = 0, taken = 0;
    for (int64_t j = 0; j < s->n && budget > 0; j++) {
        sched_seq *q = s->seqs[(s->rr + j) % s->n];
        if (!q->decoding) continue;
        add_item(s, &k, q, &q->next, 1, 0);
        budget--, taken++;
    }
    if (s->n) s->rr = (s->rr + taken) % s->n;
    for (int64_t i = 0; i < s->n && budget > 0; i++) {
        sched_seq *q = s->seqs[i];
        if (q->decoding) continue;
        int64_t m = q->n_prompt - q->done < budget ? q->n_prompt - q->done : budget;
        if (q->done == 0) q->t0 = ls_time_ms();
        add_item(s, &k, q, q->prompt + q->done, m, q->done + m == q->n_prompt ? m - 1 : m);
        budget -= m;
    }
    return k;
}

// Runs the items; an item the engine refuses ends its sequence and the rest run without it.
// A failure of the whole pass ends every sequence in it and is returned.
static ls_status run_items(ls_sched_t *s, int64_t *n) {
    while (*n > 0) {
        int64_t bad;
        ls_status rc = ls_engine_forward_batch(s->e, s->items, *n, &bad);
        if (rc == LS_OK) return LS_OK;
        if (bad < 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", ls_err_msg());
            for (int64_t i = 0; i < *n; i++) end_seq(s->owner[i], rc, msg);
            *n = 0;
            return LS_ERR(rc, "%s", msg);
        }
        end_seq(s->owner[bad], rc, NULL);
        memmove(s->items + bad, s->items + bad + 1, (size_t)(*n - bad - 1) * sizeof *s->items);
        memmove(s->owner + bad, s->owner + bad + 1, (size_t)(*n - bad - 1) * sizeof *s->owner);
        (*n)--;
    }
    return LS_OK;
}

// After the forward: prefill progress, and sampling for every sequence whose logits came out.
static void advance(sched_seq *q, int64_t m) {
    if (!q->decoding) {
        q->done += m;
        if (q->o.on_prefill) {
            ls_status rc = q->o.on_prefill(q->o.progress_ctx, q->done, q->n_prompt);
            if (rc != LS_OK) {
                end_seq(q, rc, NULL);
                return;
            }
        }
        if (q->done < q->n_prompt) return;
        q->t_prefilled = ls_time_ms();
        q->res.prefill_ms = q->t_prefilled - q->t0;
        q->decoding = true;
    }
    bool more;
    ls_status rc = ls_gen_take(q->gen, q->logits, &more);
    if (rc != LS_OK || !more) end_seq(q, rc, NULL);
    else q->next = ls_gen_last(q->gen);
}

ls_status ls_sched_step(ls_sched_t *s, ls_sched_stats *st) {
    ls_sched_stats none;
    st = st ? st : &none;
    *st = (ls_sched_stats){0};
    if (s->in_step) return LS_ERR(LS_ERR_INVALID, "ls_sched_step from inside a step's callback");
    int64_t n = plan(s);
    s->in_step = true;
    ls_status rc = run_items(s, &n);
    for (int64_t i = 0; i < n; i++) {
        sched_seq *q = s->owner[i];
        *(q->decoding ? &st->decode_tokens : &st->prefill_tokens) += s->items[i].n_tokens;
        if (!q->ended) advance(q, s->items[i].n_tokens);
    }
    s->in_step = false;
    for (int64_t i = 0; i < s->n; i++) {
        if (s->seqs[i]->cancel && !s->seqs[i]->ended) end_cancelled(s->seqs[i]);
        st->ended += s->seqs[i]->ended;
    }
    compact(s);
    return rc;
}

ls_status ls_sched_run(ls_sched_t *s) {
    while (s->n > 0) LS_CHECK(ls_sched_step(s, NULL));
    return LS_OK;
}

void ls_sched_free(ls_sched_t *s) {
    if (!s) return;
    for (int64_t i = 0; i < s->n; i++) end_cancelled(s->seqs[i]);
    compact(s);
    ls_free(s->seqs), ls_free(s->items), ls_free(s->owner);
    ls_free(s);
}
