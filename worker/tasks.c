// tasks.c — generation (prefill, sample, decode, stop conditions, streaming text) and
// perplexity (llama-perplexity's protocol) on top of the engine.
// Tests: tests/oracle/test_generate.py, tests/oracle/test_perplexity.py, tests/unit/test_engine.c.
#include "tasks_impl.h"

#include <math.h>
#include <string.h>

const char *ls_stop_reason_name(ls_stop_reason r) {
    return r == LS_STOP_EOG ? "eog" : r == LS_STOP_STRING ? "stop" : "length";
}

void ls_gen_result_free(ls_gen_result *r) {
    ls_buf_free(&r->text);
    ls_vec_i32_free(&r->tokens);
}

typedef struct logits_sink {
    float *dst; // [n_vocab]: the logits of the last position
    int32_t n_vocab;
} logits_sink;

static ls_status copy_logits(void *ctx, int64_t index, const float *logits) {
    logits_sink *s = ctx;
    (void)index;
    memcpy(s->dst, logits, (size_t)s->n_vocab * sizeof *logits);
    return LS_OK;
}

// --- streaming text -------------------------------------------------------------------------

typedef struct text_stream {
    const ls_gen_opts *o;
    ls_buf held;          // decoded, not yet final
    ls_text_fn on_text;
    void *ctx;
    ls_buf *out;
} text_stream;

static ls_status emit(text_stream *ts, size_t n) {
    if (!n) return LS_OK;
    ls_buf_append(ts->out, ts->held.data, n);
    ls_status rc = ts->on_text ? ts->on_text(ts->ctx, ts->held.data, n) : LS_OK;
    memmove(ts->held.data, ts->held.data + n, ts->held.len - n);
    ts->held.len -= n;
    ts->held.data[ts->held.len] = 0;
    return rc;
}

// Bytes at the end of held that may still become part of a stop string or of a UTF-8
// character, and so must wait.
static size_t unsafe_tail(const text_stream *ts) {
    const char *h = ts->held.data;
    size_t n = ts->held.len, keep = 0;
    for (size_t s = 0; s < ts->o->n_stop; s++) {
        size_t ls = strlen(ts->o->stop[s]);
        for (size_t k = ls > 1 ? ls - 1 : 0; k > keep; k--) // longest suffix that is a prefix
            if (k <= n && !memcmp(h + n - k, ts->o->stop[s], k)) {
                keep = k;
                break;
            }
    }
    for (size_t k = 1; k <= 3 && k <= n; k++) { // an unfinished UTF-8 sequence
        uint8_t c = (uint8_t)h[n - k];
        if ((c & 0xC0) == 0x80) continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (need > k && k > keep) keep = k;
        break;
    }
    return keep;
}

// Adds a token's bytes; returns true (through *hit) when a stop string completed.
static ls_status stream_token(text_stream *ts, const ls_tokenizer_t *tok, int32_t id, bool *hit) {
    LS_CHECK(ls_token_to_bytes(tok, id, false, &ts->held));
    *hit = false;
    for (size_t s = 0; s < ts->o->n_stop; s++) {
        const char *at = ts->o->stop[s][0] ? memmem(ts->held.data, ts->held.len, ts->o->stop[s], strlen(ts->o->stop[s])) : NULL;
        if (at) {
            *hit = true;
            return emit(ts, (size_t)(at - ts->held.data));
        }
    }
    return emit(ts, ts->held.len - unsafe_tail(ts));
}

// --- generation -----------------------------------------------------------------------------

struct ls_gen {
    const ls_gen_opts *o;
    const ls_tokenizer_t *tok;
    ls_sampler_t *smp;
    ls_vec_i32 hist;      // prompt and generated ids (the repetition penalty's history)
    text_stream ts;
    ls_gen_result *res;
};

ls_seq_opts ls_gen_seq_opts(const ls_gen_opts *o, int64_t n_prompt) {
    return (ls_seq_opts){.capacity = n_prompt + (o->max_tokens > 0 ? o->max_tokens : 0), .rule = o->rule,
                         .stream = o->stream};
}

ls_status ls_gen_begin(const ls_tokenizer_t *tok, const int32_t *prompt, int64_t n_prompt, const ls_gen_opts *o,
                       ls_text_fn on_text, void *text_ctx, ls_gen_result *res, ls_gen_t **out) {
    *out = NULL;
    *res = (ls_gen_result){.prompt_tokens = n_prompt, .stop = LS_STOP_LENGTH};
    ls_buf_append(&res->text, "", 0);
    if (n_prompt < 1) return LS_ERR(LS_ERR_INVALID, "the prompt is empty: give at least one token");
    if (o->max_tokens < 0) return LS_ERR(LS_ERR_INVALID, "cannot generate %lld tokens", (long long)o->max_tokens);
    ls_sampler_t *smp = NULL;
    LS_CHECK(ls_sampler_init(&o->sampling, ls_tokenizer_n_vocab(tok), &smp));
    ls_gen_t *g = ls_calloc(1, sizeof *g);
    *g = (ls_gen_t){.o = o, .tok = tok, .smp = smp, .res = res,
                    .ts = {.o = o, .on_text = on_text, .ctx = text_ctx, .out = &res->text}};
    ls_buf_append(&g->ts.held, "", 0);
    ls_vec_i32_reserve(&g->hist, (size_t)(n_prompt + o->max_tokens));
    for (int64_t i = 0; i < n_prompt; i++) ls_vec_i32_push(&g->hist, prompt[i]);
    ls_vec_i32_reserve(&res->tokens, (size_t)o->max_tokens + 1);
    *out = g;
    return LS_OK;
}

ls_status ls_gen_take(ls_gen_t *g, const float *logits, bool *more) {
    const ls_gen_opts *o = g->o;
    ls_gen_result *res = g->res;
    *more = false;
    if ((int64_t)res->tokens.len >= o->max_tokens) return LS_OK;
    int32_t id = ls_sampler_sample(g->smp, logits, g->hist.data, g->hist.len);
    if (!o->ignore_eog && ls_tokenizer_is_eog(g->tok, id)) {
        res->stop = LS_STOP_EOG;
        return LS_OK;
    }
    ls_vec_i32_push(&res->tokens, id);
    ls_vec_i32_push(&g->hist, id);
    bool hit = false;
    ls_status rc = stream_token(&g->ts, g->tok, id, &hit);
    if (rc != LS_OK || hit) {
        res->stop = LS_STOP_STRING;
        return rc;
    }
    *more = (int64_t)res->tokens.len < o->max_tokens;
    return LS_OK;
}

int32_t ls_gen_last(const ls_gen_t *g) { return g->res->tokens.data[g->res->tokens.len - 1]; }

ls_status ls_gen_end(ls_gen_t *g, ls_status rc) {
    if (!g) return rc;
    if (rc == LS_OK && g->res->stop != LS_STOP_STRING) rc = emit(&g->ts, g->ts.held.len);
    ls_buf_free(&g->ts.held);
    ls_vec_i32_free(&g->hist);
    ls_sampler_free(g->smp);
    ls_free(g);
    return rc;
}

ls_status ls_generate_with(const ls_stepper *st, const ls_tokenizer_t *tok, const int32_t *prompt, int64_t n_prompt,
                           const ls_gen_opts *o, ls_text_fn on_text, void *text_ctx, ls_gen_result *res) {
    ls_gen_t *g;
    LS_CHECK(ls_gen_begin(tok, prompt, n_prompt, o, on_text, text_ctx, res, &g));
    float *logits = ls_malloc((size_t)ls_tokenizer_n_vocab(tok) * sizeof *logits);
    double t0 = ls_time_ms();
    ls_status rc = st->prefill(st->ctx, prompt, n_prompt, logits);
    res->prefill_ms = ls_time_ms() - t0;
    t0 = ls_time_ms();
    for (bool more = true; rc == LS_OK && more;) {
        rc = ls_gen_take(g, logits, &more);
        if (rc == LS_OK && more) rc = st->step(st->ctx, ls_gen_last(g), logits);
    }
    res->decode_ms = ls_time_ms() - t0;
    ls_free(logits);
    return ls_gen_end(g, rc);
}

// The single-process stepper: the engine and one sequence.
typedef struct local_step {
    ls_engine_t *e;
    ls_seq_t *seq;
    logits_sink sink;
    const ls_gen_opts *o;
} local_step;

static ls_status local_prefill(void *ctx, const int32_t *ids, int64_t n, float *logits) {
    local_step *l = ctx;
    l->sink.dst = logits;
    ls_forward_opts fo = {.logits_from = n - 1, .on_logits = copy_logits, .ctx = &l->sink,
                          .on_progress = l->o->on_prefill, .progress_ctx = l->o->progress_ctx};
    return ls_engine_forward(l->e, l->seq, ids, n, &fo);
}

static ls_status local_step_fn(void *ctx, int32_t id, float *logits) {
    local_step *l = ctx;
    l->sink.dst = logits;
    ls_forward_opts fo = {.logits_from = 0, .on_logits = copy_logits, .ctx = &l->sink};
    return ls_engine_forward(l->e, l->seq, &id, 1, &fo);
}

ls_status ls_generate(ls_engine_t *e, const int32_t *prompt, int64_t n_prompt, const ls_gen_opts *o,
                      ls_text_fn on_text, void *text_ctx, ls_gen_result *res) {
    *res = (ls_gen_result){.prompt_tokens = n_prompt};
    if (n_prompt < 1) {
        ls_buf_append(&res->text, "", 0);
        return LS_ERR(LS_ERR_INVALID, "the prompt is empty: give at least one token");
    }
    ls_seq_t *seq = NULL;
    ls_seq_opts so = ls_gen_seq_opts(o, n_prompt);
    LS_CHECK(ls_seq_init_opts(e, &so, &seq));
    local_step l = {.e = e, .seq = seq, .sink = {NULL, ls_tokenizer_n_vocab(ls_engine_tokenizer(e))}, .o = o};
    ls_stepper st = {local_prefill, local_step_fn, &l};
    ls_status rc = ls_generate_with(&st, ls_engine_tokenizer(e), prompt, n_prompt, o, on_text, text_ctx, res);
    ls_seq_free(seq);
    return rc;
}

// --- perplexity -----------------------------------------------------------------------------

void ls_nll_add(nll_acc *a, const float *logits, int32_t n_vocab, int32_t target, int64_t position) {
    float mx = logits[0];
    for (int32_t i = 1; i < n_vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; i++) sum += expf(logits[i] - mx);
    double v = -((double)(logits[target] - mx) - log(sum));
    a->nll += v;
    a->nll2 += v * v;
    a->count++;
    if (a->on_nll) a->on_nll(a->nll_ctx, position, v);
}

ls_status ls_nll_finish(const nll_acc *a, ls_ppl_result *res) {
    double mean = a->count ? a->nll / (double)a->count : 0.0, var = a->count ? a->nll2 / (double)a->count - mean * mean : 0.0;
    res->ppl = exp(mean);
    res->ppl_stderr = var > 0 && a->count > 1 ? sqrt(var / (double)(a->count - 1)) * res->ppl : 0.0;
    res->scored = a->count;
    if (!isfinite(mean))
        return LS_ERR(LS_ERR_INVALID, "the perplexity is not finite: the loss over %lld tokens is %g, so the model's logits "
                      "are not finite (check its weights and RoPE settings)", (long long)a->count, a->nll);
    if (!isfinite(res->ppl))
        return LS_ERR(LS_ERR_INVALID, "the perplexity is not finite: exp of the mean loss, %g nats, overflows", mean);
    return LS_OK;
}

typedef struct ppl_chunk {
    const int32_t *chunk;   // the chunk's tokens (targets)
    int64_t ctx, offset;    // chunk length; the chunk's first position in the text
    int32_t n_vocab;
    nll_acc acc;
} ppl_chunk;

static ls_status score_chunk(void *vctx, int64_t index, const float *logits) {
    ppl_chunk *c = vctx;
    if (index < c->ctx - 1) ls_nll_add(&c->acc, logits, c->n_vocab, c->chunk[index + 1], c->offset + index + 1);
    return LS_OK; // the last position predicts nothing in the chunk
}

ls_status ls_perplexity(ls_engine_t *e, const int32_t *tokens, int64_t n, const ls_ppl_opts *o,
                        ls_ppl_result *res) {
    const ls_tokenizer_t *tok = ls_engine_tokenizer(e);
    int64_t ctx = o->ctx;
    *res = (ls_ppl_result){.ctx = ctx};
    if (ctx < 4) return LS_ERR(LS_ERR_INVALID, "--ctx %lld is too small", (long long)ctx);
    if (n < 2 * ctx)
        return LS_ERR(LS_ERR_INVALID, "the text has %lld tokens; a context of %lld needs at least %lld",
                      (long long)n, (long long)ctx, (long long)(2 * ctx));
    int64_t chunks = n / ctx;
    if (o->max_chunks > 0 && o->max_chunks < chunks) chunks = o->max_chunks;
    ls_seq_t *seq;
    ls_seq_opts so = {.capacity = ctx, .rule = o->rule};
    LS_CHECK(ls_seq_init_opts(e, &so, &seq));
    int32_t *buf = ls_malloc((size_t)ctx * sizeof *buf);
    ppl_chunk pc = {.chunk = buf, .ctx = ctx, .n_vocab = ls_tokenizer_n_vocab(tok),
                    .acc = {.on_nll = o->on_nll, .nll_ctx = o->nll_ctx}};
    ls_forward_opts fo = {.logits_from = o->score_all ? 0 : ctx / 2, .on_logits = score_chunk, .ctx = &pc,
                          .on_progress = o->on_progress, .progress_ctx = o->progress_ctx};
    ls_status rc = LS_OK;
    double t0 = ls_time_ms();
    for (int64_t c = 0; c < chunks && rc == LS_OK; c++) {
        memcpy(buf, tokens + c * ctx, (size_t)ctx * sizeof *buf);
        if (ls_tokenizer_add_bos(tok) && ls_tokenizer_bos(tok) >= 0) buf[0] = ls_tokenizer_bos(tok);
        pc.offset = c * ctx;
        ls_seq_reset(seq);
        rc = ls_engine_forward(e, seq, buf, ctx, &fo);
        if (rc == LS_OK && o->on_chunk) o->on_chunk(o->chunk_ctx, c, chunks, exp(pc.acc.nll / (double)pc.acc.count));
    }
    res->ms = ls_time_ms() - t0;
    ls_free(buf);
    ls_seq_free(seq);
    LS_CHECK(rc);
    res->chunks = chunks;
    return ls_nll_finish(&pc.acc, res);
}

// --- streaming perplexity -----------------------------------------------------------------------

#define STREAM_STEP 2048 // tokens per forward call: the granularity of reports

struct ls_ppl_stream {
    ls_engine_t *e;
    ls_ppl_stream_opts o;
    ls_seq_t *seq;
    int32_t n_vocab;
    float *pending;         // [n_vocab] logits of the last token seen, predicting the next
    bool have_pending;
    const int32_t *step;    // tokens of the step being run
    int64_t step_len, step_pos0;
    nll_acc acc;
    int64_t reports, next_report;
    double t0;
};

static ls_status score_stream(void *vctx, int64_t index, const float *logits) {
    ls_ppl_stream_t *st = vctx;
    if (index < st->step_len - 1) {
        ls_nll_add(&st->acc, logits, st->n_vocab, st->step[index + 1], st->step_pos0 + index + 1);
    } else { // the step's last token predicts the first token of whatever comes next
        memcpy(st->pending, logits, (size_t)st->n_vocab * sizeof *logits);
        st->have_pending = true;
    }
    return LS_OK;
}

ls_status ls_ppl_stream_init(ls_engine_t *e, const ls_ppl_stream_opts *o, ls_ppl_stream_t **out) {
    *out = NULL;
    ls_seq_t *seq;
    ls_seq_opts so = {.rule = o->rule, .stream = true};
    LS_CHECK(ls_seq_init_opts(e, &so, &seq));
    ls_ppl_stream_t *st = ls_calloc(1, sizeof *st);
    *st = (ls_ppl_stream_t){.e = e, .o = *o, .seq = seq, .n_vocab = ls_tokenizer_n_vocab(ls_engine_tokenizer(e)),
                            .acc = {.on_nll = o->on_nll, .nll_ctx = o->nll_ctx}, .t0 = ls_time_ms()};
    st->pending = ls_malloc((size_t)st->n_vocab * sizeof *st->pending);
    st->next_report = o->report_every > 0 ? o->report_every : INT64_MAX;
    *out = st;
    return LS_OK;
}

ls_status ls_ppl_stream_feed(ls_ppl_stream_t *st, const int32_t *tokens, int64_t n) {
    ls_forward_opts fo = {.logits_from = 0, .on_logits = score_stream, .ctx = st};
    int64_t done = 0;
    while (done < n) { // steps of STREAM_STEP tokens (the engine splits them into micro-batches)
        int64_t m = n - done < STREAM_STEP ? n - done : STREAM_STEP;
        st->step = tokens + done;
        st->step_len = m;
        st->step_pos0 = ls_seq_len(st->seq);
        if (st->have_pending) ls_nll_add(&st->acc, st->pending, st->n_vocab, tokens[done], st->step_pos0);
        st->have_pending = false;
        LS_CHECK(ls_engine_forward(st->e, st->seq, tokens + done, m, &fo));
        done += m;
        if (st->acc.count >= st->next_report && st->o.on_report) {
            st->o.on_report(st->o.report_ctx, st->reports++, -1, exp(st->acc.nll / (double)st->acc.count));
            st->next_report = st->acc.count + st->o.report_every;
        }
    }
    return LS_OK;
}

ls_status ls_ppl_stream_result(const ls_ppl_stream_t *st, ls_ppl_result *res) {
    *res = (ls_ppl_result){.chunks = st->reports, .ctx = ls_seq_capacity(st->seq), .ms = ls_time_ms() - st->t0};
    return ls_nll_finish(&st->acc, res);
}

void ls_ppl_stream_free(ls_ppl_stream_t *st) {
    if (!st) return;
    ls_seq_free(st->seq);
    ls_free(st->pending);
    ls_free(st);
}
