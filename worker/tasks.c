// tasks.c — generation (prefill, sample, decode, stop conditions, streaming text) and
// perplexity (llama-perplexity's protocol) on top of the engine.
// Tests: tests/oracle/test_generate.py, tests/oracle/test_perplexity.py, tests/unit/test_engine.c.
#include "ls_tasks.h"

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

static ls_status generate_loop(ls_engine_t *e, ls_seq_t *seq, ls_sampler_t *smp, ls_vec_i32 *hist,
                               const ls_gen_opts *o, text_stream *ts, ls_gen_result *res) {
    const ls_tokenizer_t *tok = ls_engine_tokenizer(e);
    int32_t n_vocab = ls_tokenizer_n_vocab(tok);
    float *logits = ls_malloc((size_t)n_vocab * sizeof *logits);
    logits_sink sink = {logits, n_vocab};
    ls_forward_opts fo = {.logits_from = (int64_t)hist->len - 1, .on_logits = copy_logits, .ctx = &sink,
                          .on_progress = o->on_prefill, .progress_ctx = o->progress_ctx};
    double t0 = ls_time_ms();
    ls_status rc = ls_engine_forward(e, seq, hist->data, (int64_t)hist->len, &fo);
    res->prefill_ms = ls_time_ms() - t0;
    t0 = ls_time_ms();
    res->stop = LS_STOP_LENGTH;
    fo.logits_from = 0;
    fo.on_progress = NULL;
    while (rc == LS_OK && (int64_t)res->tokens.len < o->max_tokens) {
        int32_t id = ls_sampler_sample(smp, logits, hist->data, hist->len);
        if (!o->ignore_eog && ls_tokenizer_is_eog(tok, id)) {
            res->stop = LS_STOP_EOG;
            break;
        }
        ls_vec_i32_push(&res->tokens, id);
        ls_vec_i32_push(hist, id);
        bool hit = false;
        rc = stream_token(ts, tok, id, &hit);
        if (rc != LS_OK || hit) {
            res->stop = LS_STOP_STRING;
            break;
        }
        if ((int64_t)res->tokens.len < o->max_tokens) rc = ls_engine_forward(e, seq, &id, 1, &fo);
    }
    res->decode_ms = ls_time_ms() - t0;
    ls_free(logits);
    if (rc == LS_OK && res->stop != LS_STOP_STRING) rc = emit(ts, ts->held.len);
    return rc;
}

ls_status ls_generate(ls_engine_t *e, const int32_t *prompt, int64_t n_prompt, const ls_gen_opts *o,
                      ls_text_fn on_text, void *text_ctx, ls_gen_result *res) {
    *res = (ls_gen_result){.prompt_tokens = n_prompt};
    ls_buf_append(&res->text, "", 0);
    if (n_prompt < 1) return LS_ERR(LS_ERR_INVALID, "the prompt is empty: give at least one token");
    if (o->max_tokens < 0) return LS_ERR(LS_ERR_INVALID, "cannot generate %lld tokens", (long long)o->max_tokens);
    ls_seq_t *seq = NULL;
    ls_sampler_t *smp = NULL;
    LS_CHECK(ls_seq_init(e, n_prompt + o->max_tokens, &seq));
    ls_status rc = ls_sampler_init(&o->sampling, ls_tokenizer_n_vocab(ls_engine_tokenizer(e)), &smp);
    ls_vec_i32 hist = {0};
    text_stream ts = {.o = o, .on_text = on_text, .ctx = text_ctx, .out = &res->text};
    ls_buf_append(&ts.held, "", 0);
    if (rc == LS_OK) {
        ls_vec_i32_reserve(&hist, (size_t)(n_prompt + o->max_tokens));
        for (int64_t i = 0; i < n_prompt; i++) ls_vec_i32_push(&hist, prompt[i]);
        ls_vec_i32_reserve(&res->tokens, (size_t)o->max_tokens + 1);
        rc = generate_loop(e, seq, smp, &hist, o, &ts, res);
    }
    ls_buf_free(&ts.held);
    ls_vec_i32_free(&hist);
    ls_sampler_free(smp);
    ls_seq_free(seq);
    return rc;
}

// --- perplexity -----------------------------------------------------------------------------

typedef struct ppl_acc {
    const int32_t *chunk; // the chunk's tokens (targets)
    int64_t first, ctx;
    int32_t n_vocab;
    double nll, nll2;
    int64_t count;
} ppl_acc;

// -log p(chunk[index + 1]) from the logits at index, computed as llama-perplexity does
// (f32 max and differences, a double sum of expf).
static ls_status score(void *vctx, int64_t index, const float *logits) {
    ppl_acc *a = vctx;
    if (index >= a->ctx - 1) return LS_OK; // the last position predicts nothing in the chunk
    float mx = logits[0];
    for (int32_t i = 1; i < a->n_vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (int32_t i = 0; i < a->n_vocab; i++) sum += expf(logits[i] - mx);
    double v = -((double)(logits[a->chunk[index + 1]] - mx) - log(sum));
    a->nll += v;
    a->nll2 += v * v;
    a->count++;
    return LS_OK;
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
    LS_CHECK(ls_seq_init(e, ctx, &seq));
    int32_t *buf = ls_malloc((size_t)ctx * sizeof *buf);
    ppl_acc acc = {.chunk = buf, .first = ctx / 2, .ctx = ctx, .n_vocab = ls_tokenizer_n_vocab(tok)};
    ls_forward_opts fo = {.logits_from = ctx / 2, .on_logits = score, .ctx = &acc,
                          .on_progress = o->on_progress, .progress_ctx = o->progress_ctx};
    ls_status rc = LS_OK;
    double t0 = ls_time_ms();
    for (int64_t c = 0; c < chunks && rc == LS_OK; c++) {
        memcpy(buf, tokens + c * ctx, (size_t)ctx * sizeof *buf);
        if (ls_tokenizer_add_bos(tok) && ls_tokenizer_bos(tok) >= 0) buf[0] = ls_tokenizer_bos(tok);
        ls_seq_reset(seq);
        rc = ls_engine_forward(e, seq, buf, ctx, &fo);
        if (rc == LS_OK && o->on_chunk) o->on_chunk(o->chunk_ctx, c, chunks, exp(acc.nll / (double)acc.count));
    }
    res->ms = ls_time_ms() - t0;
    ls_free(buf);
    ls_seq_free(seq);
    LS_CHECK(rc);
    double mean = acc.nll / (double)acc.count, var = acc.nll2 / (double)acc.count - mean * mean;
    res->ppl = exp(mean);
    res->ppl_stderr = var > 0 ? sqrt(var / (double)(acc.count - 1)) * res->ppl : 0.0;
    res->scored = acc.count;
    res->chunks = chunks;
    return LS_OK;
}
