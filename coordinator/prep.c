// prep.c — the preparation of a document into the job's tokens, under the job's settings
// (proto/ls_settings.h: rule, RoPE, defaults). Messages name fields as `settings.NAME` and
// suggest values in protobuf text format, `settings { NAME: VALUE }` (docs/protocol.md), which
// the command-line clients show as their flags (cli/cmd_client.c).
// Tests: tests/oracle/test_service.py, tests/cli/errors.sh.
#include "server_impl.h"

#include <math.h>
#include <string.h>

// --- documents --------------------------------------------------------------------------------

// The most bytes of text one token can stand for: its vocabulary string's length (byte-level
// BPE and SentencePiece spell a byte with at least one byte, special tokens as their text).
static size_t longest_token(const ls_tokenizer_t *t) {
    size_t longest = 1;
    for (int32_t id = 0; id < ls_tokenizer_n_vocab(t); id++)
        if (ls_tokenizer_text(t, id).len > longest) longest = ls_tokenizer_text(t, id).len;
    return longest;
}

ls_status ls_prep_init(const char *model, const ls_rope_override *rope, const ls_load_opts *load,
                       const char *chat_template, ls_prep **out) {
    ls_prep *p = ls_calloc(1, sizeof *p);
    p->rope = *rope;
    if (!model) model = ls_default_model_path();
    ls_load_opts lo = load ? *load : (ls_load_opts){0};
    lo.shapes_only = true; // the coordinator reads the vocabulary and configuration only
    ls_status rc = ls_model_open(model, &lo, &p->gguf);
    if (rc == LS_OK) rc = ls_model_config_load(p->gguf, &p->cfg);
    if (rc == LS_OK) rc = ls_tokenizer_init(p->gguf, &p->tok);
    if (rc == LS_OK) p->max_token_bytes = longest_token(p->tok);
    if (rc == LS_OK) {
        ls_rope_config check = p->cfg.rope;
        rc = ls_rope_override_apply(&check, rope, NULL);
        char hint[512];
        ls_model_config with = p->cfg;
        with.rope = check;
        if (rc == LS_OK && ls_rope_scaling_missing(&with, hint, sizeof hint)) LS_WARN("%s", hint);
    }
    if (rc == LS_OK) { // the measured table: strategy auto and extend choose from it
        p->sm.n_ctx_train = p->cfg.n_ctx_train;
        rc = ls_effctx_lookup(p->cfg.name, p->cfg.n_ctx_train, &p->sm.eff);
    }
    if (rc == LS_OK && chat_template) rc = ls_chat_init(p->gguf, p->tok, chat_template, &p->chat);
    else if (rc == LS_OK && ls_chat_init(p->gguf, p->tok, NULL, &p->chat) != LS_OK) {
        LS_WARN("%s has no chat template longseq knows: summarize jobs will be refused (%s)", model, ls_err_msg());
        ls_err_clear();
        p->chat = NULL;
    }
    if (rc != LS_OK) {
        ls_err_prefix("%s: ", model);
        ls_prep_free(p);
        return rc;
    }
    *out = p;
    return LS_OK;
}

void ls_prep_free(ls_prep *p) {
    if (!p) return;
    ls_chat_free(p->chat);
    ls_tokenizer_free(p->tok);
    ls_model_config_free(&p->cfg);
    ls_gguf_free(p->gguf);
    ls_free(p);
}

ls_status ls_prep_context(const ls_prep *p, const Longseq__Settings *s, int64_t *limit, ls_rope_config *rope) {
    ls_rope_override o;
    ls_settings_rope(s, &p->rope, &o);
    *rope = p->cfg.rope;
    LS_CHECK(ls_rope_override_apply(rope, &o, NULL));
    ls_attn_rule rule;
    LS_CHECK(ls_settings_rule(s, 1 << 16, &rule));
    ls_model_config with = p->cfg;
    with.rope = *rope;
    *limit = ls_context_limit(&with, &rule); // -1 for sink/window: keys only ever seen within the window's distance
    return LS_OK;
}

ls_status ls_prep_check_call(const ls_prep *p, const Longseq__Settings *s) {
    if (s->task == LONGSEQ__TASK__SUMMARIZE && !p->chat)
        return LS_ERR(LS_ERR_UNSUPPORTED, "the model has no chat template longseq knows, so it cannot summarize; "
                                          "choose one with --chat-template " LS_CHAT_NAMES
                                          " (the server's option), or continue the text instead with "
                                          "settings { task: GENERATE }");
    int64_t limit;
    ls_rope_config rope;
    return ls_prep_context(p, s, &limit, &rope);
}

// The summarization prompt: the document, then the request, as a user turn.
static ls_status summarize_prompt(const ls_prep *p, const Longseq__Settings *s, const uint8_t *text, size_t len,
                                  ls_buf *out) {
    if (!p->chat)
        return LS_ERR(LS_ERR_UNSUPPORTED, "the model has no chat template longseq knows, so it cannot summarize; "
                                          "choose one with --chat-template " LS_CHAT_NAMES
                                          " (the server's option), or continue the text instead with "
                                          "settings { task: GENERATE }");
    const char *ask = s->instruction && *s->instruction ? s->instruction : "Summarize the text above in a few sentences.";
    ls_buf user = {0};
    ls_buf_append(&user, text, len);
    ls_buf_printf(&user, "\n\n%s", ask);
    ls_chat_msg msg = {"user", user.data};
    ls_status rc = ls_chat_apply(p->chat, &msg, 1, true, out);
    ls_buf_free(&user);
    return rc;
}

// "the text is empty" or only whitespace: no job runs on nothing (len 0 may come with text NULL).
static ls_status check_not_blank(const uint8_t *text, size_t len) {
    if (len == 0) return LS_ERR(LS_ERR_INVALID, "the text is empty");
    for (size_t i = 0; i < len; i++)
        if (text[i] != ' ' && (text[i] < '\t' || text[i] > '\r')) return LS_OK; // not space, \t \n \v \f \r
    return LS_ERR(LS_ERR_INVALID, "the text is only whitespace (%zu bytes)", len);
}

// The sequence does not fit the context `limit`: it needs `need` positions (`least`: that many
// or more), as `what` says; the message says how to make it fit.
static ls_status context_error(const ls_prep *p, const Longseq__Settings *s, const ls_rope_config *rope, int64_t limit,
                               int64_t need, bool least, const char *what) {
    char r[128], fit[96];
    ls_rope_describe(rope, r, sizeof r);
    ls_model_config with = p->cfg;
    with.rope = *rope;
    if (s->task == LONGSEQ__TASK__PERPLEXITY) snprintf(fit, sizeof fit, "score chunks that fit (settings { ctx: %lld })", (long long)limit);
    else snprintf(fit, sizeof fit, "shorten the text");
    return LS_ERR(LS_ERR_INVALID,
                  "the sequence needs %s%lld positions (%s) but the model's context with RoPE %s is %lld (trained %lld): "
                  "%s, stretch RoPE over it (settings { rope_scaling: \"yarn\" rope_scale: %g }) or bound the attention "
                  "distance (settings { attention: \"sink\" })",
                  least ? "at least " : "", (long long)need, what, r, (long long)limit, (long long)p->cfg.n_ctx_train, fit,
                  ls_context_scale_for(&with, need));
}

// Before tokenizing: a text of len bytes has at least ceil(len / L) tokens (no token stands for
// more than L bytes), so one that cannot fit the context or max_job_tokens is refused unread.
static ls_status check_bytes(const ls_prep *p, const Longseq__Settings *s, size_t len, int64_t limit,
                             const ls_rope_config *rope, int64_t max_job_tokens) {
    bool ppl = s->task == LONGSEQ__TASK__PERPLEXITY;
    int64_t least = (int64_t)((len + p->max_token_bytes - 1) / p->max_token_bytes), gen = ppl ? 0 : ls_settings_max_tokens(s);
    char what[200];
    snprintf(what, sizeof what, "the text's %zu bytes are at least %lld tokens, as no token is longer than %zu bytes, "
             "+ %lld to generate", len, (long long)least, p->max_token_bytes, (long long)gen);
    if (!ppl && limit >= 0 && least + gen > limit) return context_error(p, s, rope, limit, least + gen, true, what);
    if (least + gen > max_job_tokens)
        return LS_ERR(LS_ERR_RANGE, "the job needs at least %lld tokens (%s); this server takes at most %lld per job",
                      (long long)(least + gen), what, (long long)max_job_tokens);
    return LS_OK;
}

ls_status ls_prep_document(const ls_prep *p, const Longseq__Settings *s, const uint8_t *text, size_t len, bool rendered,
                           int64_t max_job_tokens, ls_vec_i32 *ids) {
    size_t bad;
    int64_t limit;
    ls_rope_config rope;
    LS_CHECK(check_not_blank(text, len));
    LS_CHECK(ls_prep_context(p, s, &limit, &rope));
    LS_CHECK(check_bytes(p, s, len, limit, &rope, max_job_tokens));
    if (!ls_utf8_valid((const char *)text, len, &bad)) return LS_ERR(LS_ERR_INVALID, "the text is not valid UTF-8 (at byte %zu)", bad);
    if (memchr(text, 0, len)) return LS_ERR(LS_ERR_INVALID, "the text contains a NUL byte");
    ls_buf prompt = {0};
    ls_status rc = LS_OK;
    bool summarize = s->task == LONGSEQ__TASK__SUMMARIZE && !rendered, chat = summarize || rendered;
    if (summarize) rc = summarize_prompt(p, s, text, len, &prompt);
    else ls_buf_append(&prompt, text, len);
    if (rc == LS_OK) rc = ls_tokenize(p->tok, prompt.data, prompt.len, !chat, chat, ids);
    ls_buf_free(&prompt);
    LS_CHECK(rc);
    int64_t n = (int64_t)ids->len, gen = s->task == LONGSEQ__TASK__PERPLEXITY ? 0 : ls_settings_max_tokens(s);
    if (n == 0) return LS_ERR(LS_ERR_INVALID, "the text is empty (no tokens)");
    if (s->task == LONGSEQ__TASK__PERPLEXITY && n < 2 * ls_settings_ppl_ctx(s))
        return LS_ERR(LS_ERR_INVALID, "perplexity with a context of %lld needs at least %lld tokens; the text has %lld",
                      (long long)ls_settings_ppl_ctx(s), (long long)(2 * ls_settings_ppl_ctx(s)), (long long)n);
    int64_t need = s->task == LONGSEQ__TASK__PERPLEXITY ? ls_settings_ppl_ctx(s) : n + gen;
    if (limit >= 0 && need > limit) {
        char what[96];
        if (s->task == LONGSEQ__TASK__PERPLEXITY) snprintf(what, sizeof what, "chunks of settings.ctx %lld", (long long)need);
        else snprintf(what, sizeof what, "%lld prompt + %lld to generate", (long long)n, (long long)gen);
        return context_error(p, s, &rope, limit, need, false, what);
    }
    if (n + gen > max_job_tokens)
        return LS_ERR(LS_ERR_RANGE, "the job needs %lld tokens (%lld in the prompt + %lld to generate); this server takes at most %lld per job",
                      (long long)(n + gen), (long long)n, (long long)gen, (long long)max_job_tokens);
    return LS_OK;
}

ls_status ls_prep_strategy(const ls_prep *p, const Longseq__Settings *s, const uint8_t *text, size_t len, ls_strategy *st,
                           int64_t *n_tokens) {
    ls_strategy want = ls_settings_strategy(s);
    *st = LS_STRAT_DIRECT, *n_tokens = 0;
    bool own_rope = (s->rope_scaling && *s->rope_scaling) || s->rope_scale > 0 || p->rope.scaling >= 0 || !isnan(p->rope.factor);
    bool own_rule = s->attention && *s->attention && strcmp(s->attention, "full");
    if (want == LS_STRAT_DIRECT || (want == LS_STRAT_AUTO && (own_rope || own_rule))) return LS_OK; // as the job chose
    size_t bad;
    LS_CHECK(check_not_blank(text, len));
    if (!ls_utf8_valid((const char *)text, len, &bad)) return LS_ERR(LS_ERR_INVALID, "the text is not valid UTF-8 (at byte %zu)", bad);
    if (memchr(text, 0, len)) return LS_ERR(LS_ERR_INVALID, "the text contains a NUL byte");
    ls_vec_i32 ids = {0};
    ls_status rc = ls_tokenize(p->tok, (const char *)text, len, false, false, &ids);
    *n_tokens = (int64_t)ids.len;
    ls_vec_i32_free(&ids);
    LS_CHECK(rc);
    *st = ls_strategy_choose(&p->sm, want, *n_tokens, ls_settings_max_tokens(s));
    int64_t content;
    if (*st == LS_STRAT_MAPREDUCE) // refused now rather than after the parent is stored
        LS_CHECK(ls_strategy_chunk_room(ls_strategy_chunk_tokens(&p->sm, s->chunk_tokens), ls_settings_max_tokens(s), &content));
    return LS_OK;
}
