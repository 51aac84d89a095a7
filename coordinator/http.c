// http.c — the OpenAI-compatible HTTP front end of `longseq serve --http HOST:PORT`:
// /v1/chat/completions and /v1/completions (JSON or server-sent events), /v1/models, /health
// and /metrics (Prometheus text). libmicrohttpd parses HTTP; it runs in its external-polling
// epoll mode inside the server's own loop (the loop polls its one descriptor and calls
// ls_http_run), so every handler here runs on the loop's thread and touches the store and the
// prep pool as the protobuf calls do; a request that waits for a job is suspended, never
// blocking the loop. Each completion is a job in the store. Routes, fields and limits:
// docs/protocol.md ("HTTP"). Tests: tests/oracle/test_http.py.
#include "http_impl.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

// --- small helpers ----------------------------------------------------------------------------

static void link_req(hreq **head, hreq *r) {
    r->prev = NULL, r->next = *head;
    if (*head) (*head)->prev = r;
    *head = r;
}

static void unlink_req(hreq **head, hreq *r) {
    if (r->prev) r->prev->next = r->next;
    else *head = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void suspend(hreq *r) {
    if (!r->suspended) MHD_suspend_connection(r->mc), r->suspended = true;
}

static void resume(hreq *r) {
    if (r->suspended) MHD_resume_connection(r->mc), r->suspended = false;
}

static void json_to_buf(json_t *j, ls_buf *out) {
    char *s = json_dumps(j, JSON_COMPACT);
    ls_buf_clear(out);
    if (s) ls_buf_append(out, s, strlen(s)), free(s);
}

// OpenAI's error object: {"error": {"message", "type", "param", "code"}}.
void ls_http_error(hreq *r, unsigned status, const char *code, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *type = status == 401 ? "authentication_error" : status == 404 ? "not_found_error"
                     : status == 429 || status == 503 ? "server_overloaded" : status >= 500 ? "server_error"
                     : "invalid_request_error";
    ls_buf safe = {0};
    ls_utf8_sanitize(msg, strlen(msg), &safe); // (messages may quote a client's bytes)
    json_t *e = json_pack("{s:{s:s, s:s, s:n, s:s?}}", "error", "message", safe.data ? safe.data : "", "type", type,
                          "param", "code", code);
    ls_buf_free(&safe);
    r->status = status;
    json_to_buf(e, &r->answer);
    json_decref(e);
}

void ls_http_json(hreq *r, unsigned status, json_t *j) {
    r->status = status;
    json_to_buf(j, &r->answer);
    json_decref(j);
}

static enum MHD_Result queue(hreq *r, unsigned status, const char *type, const char *data, size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (r->job[0]) MHD_add_response_header(resp, "X-Longseq-Job", r->job);
    enum MHD_Result rc = MHD_queue_response(r->mc, status, resp);
    MHD_destroy_response(resp);
    r->h->host.metrics->http_requests++;
    if (status >= 400) r->h->host.metrics->http_errors++;
    return rc;
}

static enum MHD_Result queue_answer(hreq *r) {
    return queue(r, r->status, r->ctype ? r->ctype : "application/json", r->answer.data ? r->answer.data : "", r->answer.len);
}

// --- the job of a completion ------------------------------------------------------------------

static bool json_num(json_t *v, double lo, double hi, double *out) {
    if (!json_is_number(v)) return false;
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi) return false;
    *out = x;
    return true;
}

// The extension key "longseq": longseq's own settings (docs/protocol.md, "HTTP").
static bool ext_settings(hreq *r, json_t *ext, Longseq__Settings *s) {
    if (!ext || json_is_null(ext)) return true;
    if (!json_is_object(ext)) return ls_http_error(r, 400, NULL, "\"longseq\" must be an object of longseq's settings"), false;
    const char *k;
    json_t *v;
    json_object_foreach(ext, k, v) {
        double x;
        if (!strcmp(k, "attention") || !strcmp(k, "rope_scaling") || !strcmp(k, "strategy") || !strcmp(k, "instruction")) {
            if (!json_is_string(v)) return ls_http_error(r, 400, NULL, "longseq.%s must be a string", k), false;
            if (!strcmp(k, "attention")) s->attention = (char *)json_string_value(v);
            else if (!strcmp(k, "strategy")) s->strategy = (char *)json_string_value(v);
            else if (!strcmp(k, "instruction")) s->instruction = (char *)json_string_value(v);
            else s->rope_scaling = (char *)json_string_value(v);
            continue;
        }
        if (!json_num(v, 0, 1e12, &x))
            return ls_http_error(r, 400, NULL, "longseq.%s must be a non-negative finite number", k), false;
        if (!strcmp(k, "group")) s->group = (uint32_t)fmin(x, 4e9);
        else if (!strcmp(k, "sinks")) s->sinks_opt_case = LONGSEQ__SETTINGS__SINKS_OPT_SINKS, s->sinks = (uint32_t)fmin(x, 4e9);
        else if (!strcmp(k, "window")) s->window = (uint32_t)fmin(x, 4e9);
        else if (!strcmp(k, "rope_scale")) s->rope_scale = (float)x;
        else if (!strcmp(k, "rope_freq_base")) s->rope_freq_base = (float)x;
        else if (!strcmp(k, "yarn_orig_ctx")) s->yarn_orig_ctx = (uint32_t)fmin(x, 4e9);
        else if (!strcmp(k, "top_k")) s->top_k = (uint32_t)fmin(x, 4e9);
        else if (!strcmp(k, "repeat_penalty")) s->repeat_penalty = (float)x;
        else if (!strcmp(k, "chunk_tokens")) s->chunk_tokens = (uint32_t)fmin(x, 4e9);
        else if (!strcmp(k, "combine_parts")) s->combine_parts = (uint32_t)fmin(x, 4e9);
        else
            return ls_http_error(r, 400, NULL, "longseq.%s is not a setting longseq knows (attention, group, sinks, window, "
                             "rope_scaling, rope_scale, rope_freq_base, yarn_orig_ctx, top_k, repeat_penalty, strategy, "
                             "chunk_tokens, combine_parts, instruction)", k), false;
    }
    // a strategy other than direct summarizes: the prompt (a chat's last user message) is the
    // document (docs/protocol.md, "HTTP")
    if (s->strategy && *s->strategy && strcmp(s->strategy, "direct")) s->task = LONGSEQ__TASK__SUMMARIZE, r->document = true;
    return true;
}

// OpenAI's sampling fields into Settings (pointers borrow from the request's JSON).
static bool settings_from(hreq *r, json_t *q, Longseq__Settings *s) {
    json_t *v;
    double x;
    s->task = LONGSEQ__TASK__GENERATE;
    if ((v = json_object_get(q, "max_completion_tokens")) || (v = json_object_get(q, "max_tokens"))) {
        if (!json_is_null(v) && !(json_is_integer(v) && json_num(v, 1, 1 << 24, &x)))
            return ls_http_error(r, 400, NULL, "max_tokens must be an integer in [1, 16777216]"), false;
        if (!json_is_null(v)) s->max_tokens = (uint32_t)x;
    }
    if ((v = json_object_get(q, "temperature")) && !json_is_null(v)) {
        if (!json_num(v, 0, 100, &x)) return ls_http_error(r, 400, NULL, "temperature must be a number in [0, 100]"), false;
        s->temperature_opt_case = LONGSEQ__SETTINGS__TEMPERATURE_OPT_TEMPERATURE, s->temperature = (float)x;
    }
    if ((v = json_object_get(q, "top_p")) && !json_is_null(v)) {
        if (!json_num(v, 0, 1, &x) || x == 0) return ls_http_error(r, 400, NULL, "top_p must be a number in (0, 1]"), false;
        s->top_p = (float)x;
    }
    if ((v = json_object_get(q, "seed")) && !json_is_null(v)) {
        if (!json_is_integer(v)) return ls_http_error(r, 400, NULL, "seed must be an integer"), false;
        s->seed_opt_case = LONGSEQ__SETTINGS__SEED_OPT_SEED, s->seed = (uint64_t)json_integer_value(v);
    }
    if ((v = json_object_get(q, "n")) && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 1))
        return ls_http_error(r, 400, NULL, "n must be 1: longseq returns one choice per request"), false;
    if ((v = json_object_get(q, "stop")) && !json_is_null(v)) {
        size_t n = json_is_array(v) ? json_array_size(v) : 1;
        if (!json_is_string(v) && !json_is_array(v)) return ls_http_error(r, 400, NULL, "stop must be a string or an array of strings"), false;
        if (n > LS_SETTINGS_STOP_MAX) return ls_http_error(r, 400, NULL, "stop: %zu strings; at most %d", n, LS_SETTINGS_STOP_MAX), false;
        s->stop = ls_calloc(n ? n : 1, sizeof *s->stop);
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
            if (!json_is_string(e)) return ls_http_error(r, 400, NULL, "stop[%zu] must be a string", i), false;
            s->stop[s->n_stop++] = (char *)json_string_value(e);
        }
    }
    if (!ext_settings(r, json_object_get(q, "longseq"), s)) return false;
    if (ls_settings_check(s) != LS_OK || ls_prep_check_call(r->h->host.prep, s) != LS_OK) {
        ls_http_error(r, 400, NULL, "%s", ls_err_msg());
        ls_err_clear();
        return false;
    }
    return true;
}

// A message's content: a string, or an array of {"type": "text", "text": ...} parts.
static bool message_text(hreq *r, json_t *c, size_t i, ls_buf *out) {
    if (json_is_string(c)) return ls_buf_append(out, json_string_value(c), json_string_length(c)), true;
    if (!json_is_array(c)) return ls_http_error(r, 400, NULL, "messages[%zu].content must be a string or an array of text parts", i), false;
    size_t k;
    json_t *part;
    json_array_foreach(c, k, part) {
        json_t *t = json_object_get(part, "text");
        if (!json_is_string(json_object_get(part, "type")) || strcmp(json_string_value(json_object_get(part, "type")), "text") ||
            !json_is_string(t))
            return ls_http_error(r, 400, NULL, "messages[%zu].content[%zu]: only {\"type\": \"text\", \"text\": ...} parts are "
                             "supported", i, k), false;
        ls_buf_append(out, json_string_value(t), json_string_length(t));
    }
    return true;
}

// The conversation in the model's chat template (special tokens as text, ls_chat_apply).
static bool chat_prompt(hreq *r, json_t *q, ls_buf *out) {
    json_t *m = json_object_get(q, "messages");
    if (!json_is_array(m) || !json_array_size(m))
        return ls_http_error(r, 400, NULL, "messages must be a non-empty array of {role, content}"), false;
    if (!r->h->host.prep->chat)
        return ls_http_error(r, 400, NULL, "the model has no chat template longseq knows: use /v1/completions"), false;
    size_t n = json_array_size(m);
    ls_chat_msg *msgs = ls_calloc(n, sizeof *msgs);
    ls_buf *texts = ls_calloc(n, sizeof *texts);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        json_t *e = json_array_get(m, i), *role = json_object_get(e, "role");
        const char *rs = json_is_string(role) ? json_string_value(role) : "";
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant")) {
            ls_http_error(r, 400, NULL, "messages[%zu].role must be system, developer, user or assistant", i);
            ok = false;
            break;
        }
        ok = message_text(r, json_object_get(e, "content"), i, &texts[i]);
        ls_buf_putc(&texts[i], 0), texts[i].len--;
        msgs[i] = (ls_chat_msg){rs, texts[i].data};
    }
    if (ok && ls_chat_apply(r->h->host.prep->chat, msgs, n, true, out) != LS_OK) {
        ls_http_error(r, 400, NULL, "%s", ls_err_msg());
        ls_err_clear();
        ok = false;
    }
    for (size_t i = 0; i < n; i++) ls_buf_free(&texts[i]);
    ls_free(texts), ls_free(msgs);
    return ok;
}

// longseq.strategy on a chat: the last message, a user's, is the document.
static bool chat_document(hreq *r, json_t *q, ls_buf *out) {
    json_t *m = json_object_get(q, "messages");
    size_t n = json_is_array(m) ? json_array_size(m) : 0;
    json_t *last = n ? json_array_get(m, n - 1) : NULL, *role = last ? json_object_get(last, "role") : NULL;
    if (!json_is_string(role) || strcmp(json_string_value(role), "user"))
        return ls_http_error(r, 400, NULL, "with longseq.strategy the last message must be the user's document to summarize"), false;
    return message_text(r, json_object_get(last, "content"), n - 1, out);
}

static bool completion_prompt(hreq *r, json_t *q, ls_buf *out) {
    json_t *p = json_object_get(q, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1) p = json_array_get(p, 0);
    if (!json_is_string(p)) return ls_http_error(r, 400, NULL, "prompt must be a string (or an array of one string)"), false;
    ls_buf_append(out, json_string_value(p), json_string_length(p));
    return true;
}

// The job's request as the prep pool takes it: one document, owned (packed and unpacked
// again, so the strings borrowed from the JSON are copied).
static Longseq__SubmitRequest *owned_request(const Longseq__Settings *set, const char *name, const ls_buf *text) {
    Longseq__Document doc = LONGSEQ__DOCUMENT__INIT, *docs[1] = {&doc};
    doc.name = (char *)name;
    doc.text.data = (uint8_t *)(text->data ? text->data : "");
    doc.text.len = text->len;
    Longseq__SubmitRequest q = LONGSEQ__SUBMIT_REQUEST__INIT;
    q.n_documents = 1, q.documents = docs, q.settings = (Longseq__Settings *)set;
    size_t len = longseq__submit_request__get_packed_size(&q);
    uint8_t *buf = ls_malloc(len ? len : 1);
    longseq__submit_request__pack(&q, buf);
    Longseq__SubmitRequest *out = longseq__submit_request__unpack(NULL, len, buf);
    ls_free(buf);
    return out;
}

Longseq__SubmitRequest *ls_http_build_job(hreq *r, json_t *q) {
    Longseq__Settings set = LONGSEQ__SETTINGS__INIT;
    ls_buf prompt = {0};
    json_t *model = json_object_get(q, "model"), *stream = json_object_get(q, "stream");
    if (model && !json_is_null(model) && (!json_is_string(model) || strcmp(json_string_value(model), r->h->model_id))) {
        ls_http_error(r, 404, "model_not_found", "the model '%s' is not served here; this server serves '%s'",
                  json_is_string(model) ? json_string_value(model) : "?", r->h->model_id);
        return NULL;
    }
    if (stream && !json_is_null(stream) && !json_is_boolean(stream)) return ls_http_error(r, 400, NULL, "stream must be true or false"), NULL;
    r->stream = json_is_true(stream);
    if (!settings_from(r, q, &set) ||
        !(r->chat ? (r->document ? chat_document(r, q, &prompt) : chat_prompt(r, q, &prompt)) : completion_prompt(r, q, &prompt))) {
        ls_free(set.stop), ls_buf_free(&prompt);
        return NULL;
    }
    Longseq__SubmitRequest *req = owned_request(&set, r->chat ? "http chat.completion" : "http completion", &prompt);
    ls_free(set.stop), ls_buf_free(&prompt);
    if (!req) ls_http_error(r, 500, NULL, "internal: the job's request could not be built");
    return req;
}

// A completion's body: its settings and prompt checked here, then tokenized by the prep pool
// (the request waits, suspended), then stored as a job (ls_http_prep_done).
static void start_completion(hreq *r, json_t *q) {
    Longseq__SubmitRequest *req = ls_http_build_job(r, q);
    if (!req) return;
    ls_prep_task *t = ls_calloc(1, sizeof *t);
    static const Longseq__Settings none = LONGSEQ__SETTINGS__INIT;
    t->req = req;
    t->set = req->settings ? req->settings : &none;
    t->owner = r, t->http = true, t->rendered = r->chat && !r->document;
    r->task = t;
    r->wait = W_PREP;
    r->created = (int64_t)time(NULL);
    suspend(r);
    ls_prep_pool_add(r->h->host.pool, t);
}

// --- answers ----------------------------------------------------------------------------------

static const char *finish_reason(const Longseq__JobResult *jr) {
    return jr && jr->stop && !strcmp(jr->stop, "length") ? "length" : "stop";
}

static json_t *usage_of(const Longseq__JobResult *jr, int64_t prompt) {
    int64_t p = jr && jr->tokens ? (int64_t)jr->tokens : prompt, c = jr ? (int64_t)jr->generated : 0;
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)p, "completion_tokens", (json_int_t)c,
                     "total_tokens", (json_int_t)(p + c));
}

// longseq's own figures, beside OpenAI's fields (and a strategy's, when the job had one).
static json_t *ext_of(const char *job, const Longseq__JobResult *jr) {
    json_t *o = json_pack("{s:s, s:f, s:f, s:i, s:s, s:s}", "job_id", job, "prefill_ms", jr ? jr->prefill_ms : 0.0,
                          "decode_ms", jr ? jr->decode_ms : 0.0, "ranks", jr ? (int)jr->ranks : 0, "attention",
                          jr && jr->attention ? jr->attention : "", "rope", jr && jr->rope ? jr->rope : "");
    if (o && jr && jr->strategy && *jr->strategy) {
        json_object_set_new(o, "strategy", json_string(jr->strategy));
        json_object_set_new(o, "chunks", json_integer(jr->chunks));
        json_object_set_new(o, "levels", json_integer(jr->levels));
        json_object_set_new(o, "calls", json_integer(jr->calls));
    }
    return o;
}

static json_t *chunk(const hreq *r, const char *text, const char *finish, bool role) {
    json_t *choice = json_pack("{s:i, s:o}", "index", 0, "finish_reason", finish ? json_string(finish) : json_null());
    if (r->chat) {
        json_t *delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string("assistant"));
        if (text) json_object_set_new(delta, "content", json_string(text));
        json_object_set_new(choice, "delta", delta);
    } else {
        json_object_set_new(choice, "text", json_string(text ? text : ""));
    }
    json_object_set_new(choice, "logprobs", json_null());
    return json_pack("{s:s+, s:s, s:I, s:s, s:[o]}", "id", r->chat ? "chatcmpl-" : "cmpl-", r->job, "object",
                     r->chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)r->created, "model",
                     r->h->model_id, "choices", choice);
}

static void sse_event(hreq *r, json_t *j) {
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s) return;
    ls_buf_printf(&r->sse, "data: %s\n\n", s);
    free(s);
}

json_t *ls_http_completion(const ls_http *h, bool chat, const char *job, int64_t created, const ls_job *j,
                           const Longseq__JobResult *jr) {
    const char *text = jr && jr->text ? jr->text : "";
    json_t *choice = json_pack("{s:i, s:s, s:n}", "index", 0, "finish_reason", finish_reason(jr), "logprobs");
    if (chat) json_object_set_new(choice, "message", json_pack("{s:s, s:s}", "role", "assistant", "content", text));
    else json_object_set_new(choice, "text", json_string(text));
    return json_pack("{s:s+, s:s, s:I, s:s, s:[o], s:o, s:o}", "id", chat ? "chatcmpl-" : "cmpl-", job, "object",
                     chat ? "chat.completion" : "text_completion", "created", (json_int_t)created, "model", h->model_id,
                     "choices", choice, "usage", usage_of(jr, j->n_tokens), "longseq", ext_of(job, jr));
}

// The whole answer of a finished job (not streamed).
static void answer_final(hreq *r, const ls_job *j, const Longseq__JobResult *jr) {
    if (j->state != LS_JOB_DONE)
        return ls_http_error(r, j->state == LS_JOB_CANCELLED ? 409 : 500, NULL, "job %s %s: %s", j->id,
                         ls_job_state_name(j->state), j->error && *j->error ? j->error : "no reason given");
    ls_http_json(r, 200, ls_http_completion(r->h, r->chat, r->job, r->created, j, jr));
}

// The last events of a stream: the finish reason with the usage, then [DONE] (an error object
// instead when the job failed).
static void stream_final(hreq *r, const ls_job *j, const Longseq__JobResult *jr) {
    if (j->state == LS_JOB_DONE) {
        const char *text = jr && jr->text ? jr->text : "";
        size_t len = strlen(text);
        if (len > r->text_sent) { // text the events did not carry (e.g. the job finished before this request watched it)
            sse_event(r, chunk(r, text + r->text_sent, NULL, false));
            r->text_sent = len;
        }
        json_t *last = chunk(r, NULL, finish_reason(jr), false);
        json_object_set_new(last, "usage", usage_of(jr, j->n_tokens));
        json_object_set_new(last, "longseq", ext_of(r->job, jr));
        sse_event(r, last);
    } else {
        hreq tmp = {.h = r->h};
        ls_http_error(&tmp, 500, NULL, "job %s %s: %s", j->id, ls_job_state_name(j->state), j->error && *j->error ? j->error : "");
        ls_buf_printf(&r->sse, "data: %.*s\n\n", (int)tmp.answer.len, tmp.answer.data);
        ls_buf_free(&tmp.answer);
    }
    ls_buf_printf(&r->sse, "data: [DONE]\n\n");
    r->sse_end = true;
}

// The job r waits for has ended (or had ended): its answer.
static void job_ended(hreq *r) {
    ls_job j;
    if (ls_store_get(r->h->host.store, r->job, &j) != LS_OK) {
        ls_http_error(r, 500, NULL, "job %s: %s", r->job, ls_err_msg());
        ls_err_clear();
        if (r->stream) ls_buf_printf(&r->sse, "data: %.*s\n\ndata: [DONE]\n\n", (int)r->answer.len, r->answer.data), r->sse_end = true;
        return;
    }
    Longseq__JobResult *jr = j.result_len ? longseq__job_result__unpack(NULL, j.result_len, j.result) : NULL;
    if (r->stream) stream_final(r, &j, jr);
    else answer_final(r, &j, jr);
    if (jr) longseq__job_result__free_unpacked(jr, NULL);
    ls_job_free(&j);
    r->wait = W_NONE;
}

void ls_http_prep_done(ls_http *h, ls_prep_task *t) {
    if (t->batch) return ls_batches_prep_done(h, t);
    hreq *r = t->owner;
    if (!r) return ls_prep_task_free(t); // its client went away meanwhile
    r->task = NULL;
    r->wait = W_NONE;
    ls_prep_doc *d = &t->docs[0];
    if (d->error) {
        ls_http_error(r, 400, strstr(d->error, "positions") ? "context_length_exceeded" : NULL, "%s", d->error);
    } else {
        ls_job job = {.state = LS_JOB_QUEUED, .name = d->name, .tokens = d->ids.data, .n_tokens = (int64_t)d->ids.len};
        size_t plen = longseq__settings__get_packed_size(t->set);
        job.settings = ls_malloc(plen ? plen : 1), job.settings_len = plen;
        longseq__settings__pack(t->set, job.settings);
        ls_strat_job_of(&job, d, &t->req->documents[0]->text);
        ls_status rc = ls_store_new_id(job.id);
        if (rc == LS_OK) rc = ls_store_add(h->host.store, &job, 1); // committed before anyone is told
        if (rc == LS_OK && job.is_parent) h->host.strat_start(h->host.server, job.id);
        ls_free(job.settings), ls_free(job.doc), ls_free(job.tag);
        if (rc != LS_OK) {
            ls_http_error(r, 503, NULL, "the job store could not commit: %s", ls_err_msg());
            ls_err_clear();
        } else {
            snprintf(r->job, sizeof r->job, "%s", job.id);
            if (!h->host.o->quiet)
                fprintf(stderr, "[longseq serve] job %s (%s) queued over HTTP: %zu tokens\n", job.id, d->name, d->ids.len);
            r->wait = W_JOB;
            if (r->stream) r->status = 200; // the events start now (the role first)
            if (r->stream) sse_event(r, chunk(r, "", NULL, true));
        }
    }
    ls_prep_task_free(t);
    if (r->wait == W_NONE || r->stream) resume(r);
}

void ls_http_job_text(ls_http *h, const char *id, const char *text) {
    if (!h || !text) return;
    size_t len = strlen(text);
    for (hreq *r = h->reqs; r; r = r->next) {
        if (r->wait != W_JOB || !r->stream || strcmp(r->job, id)) continue;
        // After a retry the text comes again from its start: only what is new is sent.
        size_t from = r->text_seen, to = r->text_seen + len;
        r->text_seen = to;
        if (to <= r->text_sent) continue;
        size_t skip = r->text_sent > from ? r->text_sent - from : 0;
        char *part = ls_strndup(text + skip, len - skip);
        sse_event(r, chunk(r, part, NULL, false));
        ls_free(part);
        r->text_sent = to;
        resume(r);
    }
}

void ls_http_job_state(ls_http *h, const char *id, int state) {
    if (!h) return;
    for (hreq *r = h->reqs; r; r = r->next) {
        if (r->wait != W_JOB || strcmp(r->job, id)) continue;
        if (state == LS_JOB_RUNNING) r->text_seen = 0; // a new attempt: its text starts again
        if (!ls_job_state_final((ls_job_state)state)) continue;
        job_ended(r);
        resume(r);
    }
}

// --- streaming --------------------------------------------------------------------------------

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    hreq *r = cls;
    size_t left = r->sse.len - r->sse_off;
    if (!left) {
        if (r->sse_end) return MHD_CONTENT_READER_END_OF_STREAM;
        suspend(r); // resumed when the job says more (ls_http_job_text, ls_http_job_state)
        return 0;
    }
    size_t n = left < max ? left : max;
    if (n > SSE_CHUNK) n = SSE_CHUNK;
    memcpy(buf, r->sse.data + r->sse_off, n);
    r->sse_off += n;
    if (r->sse_off == r->sse.len) r->sse_off = 0, r->sse.len = 0;
    return (ssize_t)n;
}

static enum MHD_Result queue_stream(hreq *r) {
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, r, NULL);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Longseq-Job", r->job);
    enum MHD_Result rc = MHD_queue_response(r->mc, 200, resp);
    MHD_destroy_response(resp);
    r->h->host.metrics->http_requests++;
    return rc;
}

// --- the other routes -------------------------------------------------------------------------

static void route_health(hreq *r) {
    const char *why = NULL;
    bool ready = r->h->host.workers_ready(r->h->host.server, &why);
    if (ready) ls_http_json(r, 200, json_pack("{s:s}", "status", "ok"));
    else ls_http_json(r, 503, json_pack("{s:s, s:s}", "status", "unavailable", "reason", why && *why ? why : "workers not ready"));
}

static void route_models(hreq *r) {
    json_t *m = json_pack("{s:s, s:s, s:i, s:s}", "id", r->h->model_id, "object", "model", "created", 0, "owned_by", "longseq");
    ls_http_json(r, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", m));
}

static void hist_text(ls_buf *b, const char *name, const char *help, const ls_hist *h) {
    ls_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < LS_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        ls_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, ls_hist_bounds[i], (unsigned long long)cum);
    }
    ls_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)h->n, name,
                  h->sum, name, (unsigned long long)h->n);
}

static void metric(ls_buf *b, const char *name, const char *type, const char *help, double v) {
    ls_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

static void route_metrics(hreq *r) {
    const ls_metrics *m = r->h->host.metrics;
    ls_buf b = {0};
    int64_t n[5] = {0};
    for (int st = 0; st < 5; st++)
        if (ls_store_count(r->h->host.store, (ls_job_state)st, &n[st]) != LS_OK) ls_err_clear();
    const char *why;
    metric(&b, "longseq_queue_depth", "gauge", "Jobs waiting in the queue.", (double)n[LS_JOB_QUEUED]);
    ls_buf_printf(&b, "# HELP longseq_jobs Jobs in the store by state.\n# TYPE longseq_jobs gauge\n");
    for (int st = 0; st < 5; st++) ls_buf_printf(&b, "longseq_jobs{state=\"%s\"} %lld\n", ls_job_state_name((ls_job_state)st), (long long)n[st]);
    metric(&b, "longseq_workers_ready", "gauge", "1 when a worker group is connected and ready.",
           r->h->host.workers_ready(r->h->host.server, &why) ? 1 : 0);
    metric(&b, "longseq_prefill_tokens_total", "counter", "Prompt tokens prefilled by finished jobs.", (double)m->prefill_tokens);
    metric(&b, "longseq_prefill_seconds_total", "counter", "Time finished jobs spent in prefill.", m->prefill_s);
    metric(&b, "longseq_decode_tokens_total", "counter", "Tokens generated by finished jobs.", (double)m->decode_tokens);
    metric(&b, "longseq_decode_seconds_total", "counter", "Time finished jobs spent generating.", m->decode_s);
    metric(&b, "longseq_prefill_tokens_per_second", "gauge", "The last finished job's prefill rate.", m->last_prefill_tps);
    metric(&b, "longseq_decode_tokens_per_second", "gauge", "The last finished job's decode rate.", m->last_decode_tps);
    hist_text(&b, "longseq_time_to_first_token_seconds", "From a job's acceptance to its first generated text.", &m->ttft);
    hist_text(&b, "longseq_request_latency_seconds", "From a job's acceptance to its end, for jobs done.", &m->latency);
    metric(&b, "longseq_worker_group_restarts_total", "counter", "Worker groups that went down and were replaced.",
           (double)m->group_restarts);
    metric(&b, "longseq_job_retries_total", "counter", "Jobs queued again because their worker group died.", (double)m->retries);
    metric(&b, "longseq_http_requests_total", "counter", "HTTP requests answered.", (double)m->http_requests);
    metric(&b, "longseq_http_errors_total", "counter", "HTTP requests answered with a status of 400 or more.",
           (double)m->http_errors);
    metric(&b, "longseq_kv_bytes_in_use", "gauge",
           "KV cache bytes held by sequences, summed over longseq_kv_report_ranks ranks (0 before the worker group reports).",
           (double)m->kv_in_use);
    metric(&b, "longseq_kv_bytes_allocated", "gauge", "KV cache bytes allocated (in use and free pages), over the same ranks.",
           (double)m->kv_allocated);
    metric(&b, "longseq_kv_bytes_budget", "gauge", "The KV cache pools' budget in bytes over the same ranks (0: none set).",
           (double)m->kv_budget);
    metric(&b, "longseq_kv_report_ranks", "gauge",
           "Ranks the KV figures cover: the whole group after a job, the leader alone during prefill, 0 before any report.",
           (double)m->kv_ranks);
    metric(&b, "longseq_protocol_connections", "gauge", "Open connections of the protobuf protocol.",
           (double)r->h->host.connections(r->h->host.server));
    r->status = 200;
    r->ctype = "text/plain; version=0.0.4; charset=utf-8";
    ls_buf_clear(&r->answer);
    ls_buf_append(&r->answer, b.data, b.len);
    ls_buf_free(&b);
}

// --- requests ---------------------------------------------------------------------------------

typedef enum route { RT_UNKNOWN, RT_HEALTH, RT_METRICS, RT_MODELS, RT_CHAT, RT_COMPLETIONS } route;

static route route_of(const char *url, const char **want) {
    static const struct { const char *path, *method; route rt; } routes[] = {
        {"/health", "GET", RT_HEALTH}, {"/metrics", "GET", RT_METRICS}, {"/v1/models", "GET", RT_MODELS},
        {"/v1/chat/completions", "POST", RT_CHAT}, {"/v1/completions", "POST", RT_COMPLETIONS}};
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
        if (!strcmp(url, routes[i].path)) return *want = routes[i].method, routes[i].rt;
    return RT_UNKNOWN;
}

// "Authorization: Bearer TOKEN", compared in constant time.
static bool authorized(ls_http *h, struct MHD_Connection *mc) {
    const char *a = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!a || strncasecmp(a, "Bearer ", 7)) return false;
    a += 7;
    while (*a == ' ') a++;
    return strlen(a) <= LS_TOKEN_MAX && ls_wire_token_equal(h->host.o->token, a);
}

// The checks made when the headers are in, before any of the body is read: route, method,
// token, declared size.
static bool admit(hreq *r, const char *url, const char *method) {
    ls_http *h = r->h;
    const char *want = NULL;
    route rt = route_of(url, &want);
    if (rt != RT_HEALTH && !authorized(h, r->mc))
        return ls_http_error(r, 401, "invalid_api_key", "a valid \"Authorization: Bearer TOKEN\" header is required"), false;
    if (rt == RT_UNKNOWN && !strncmp(url, "/v1/", 4) && ls_batches_route(r, method, url, false)) { // files and batches
        if (r->status) return false; // the route said no (404, 405)
    } else if (rt == RT_UNKNOWN) {
        return ls_http_error(r, 404, "unknown_url", "no route %s %s", method, url), false;
    } else if (strcmp(method, want)) {
        return ls_http_error(r, 405, NULL, "%s takes %s, not %s", url, want, method), false;
    }
    const char *cl = MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long len = cl ? strtoull(cl, NULL, 10) : 0;
    if (len > h->host.o->http_max_body)
        return ls_http_error(r, 413, NULL, "the body is %llu bytes; the limit is %zu", len, h->host.o->http_max_body), false;
    if (len && h->buffered + len > h->host.o->max_buffered)
        return ls_http_error(r, 503, NULL, "the server is receiving too many bodies at once; try again"), false;
    r->reserved = (size_t)len;
    h->buffered += r->reserved;
    return true;
}

static void dispatch(hreq *r, const char *url) {
    const char *want;
    route rt = route_of(url, &want);
    if (r->too_big) return ls_http_error(r, 413, NULL, "the body is over the limit of %zu bytes", r->h->host.o->http_max_body);
    if (r->busy) return ls_http_error(r, 503, NULL, "the server is receiving too many bodies at once; try again");
    if (rt == RT_HEALTH) return route_health(r);
    if (rt == RT_MODELS) return route_models(r);
    if (rt == RT_METRICS) return route_metrics(r);
    if (rt == RT_UNKNOWN) return (void)ls_batches_route(r, r->method, url, true);
    json_error_t err;
    json_t *q = json_loadb(r->body.data ? r->body.data : "", r->body.len, JSON_REJECT_DUPLICATES, &err);
    if (!q) return ls_http_error(r, 400, NULL, "the body is not valid JSON (UTF-8): %s at byte %d", err.text, err.position);
    if (!json_is_object(q)) ls_http_error(r, 400, NULL, "the body must be a JSON object");
    else {
        r->chat = rt == RT_CHAT;
        start_completion(r, q);
    }
    json_decref(q);
}

static void release(hreq *r) {
    r->h->buffered -= r->reserved;
    r->reserved = 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **req_cls) {
    (void)version;
    ls_http *h = cls;
    hreq *r = *req_cls;
    if (!r) { // the headers are in
        r = ls_calloc(1, sizeof *r);
        r->h = h, r->mc = mc, r->method = method;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->hc = ci ? ci->socket_context : NULL;
        link_req(&h->reqs, r);
        *req_cls = r;
        if (!admit(r, url, method)) return queue_answer(r); // the body is never read
        return MHD_YES;
    }
    if (*upload_size) { // part of the body
        size_t need = r->body.len + *upload_size;
        if (need > h->host.o->http_max_body) r->too_big = true;
        if (!r->too_big && !r->busy && need > r->reserved) { // a body without Content-Length: reserved as it grows
            if (h->buffered - r->reserved + need > h->host.o->max_buffered) r->busy = true;
            else h->buffered += need - r->reserved, r->reserved = need;
        }
        if (!r->too_big && !r->busy) ls_buf_append(&r->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (!r->dispatched) { // the whole request is in
        r->dispatched = true;
        if (r->hc) r->hc->in_call = true;
        dispatch(r, url);
        ls_buf_free(&r->body);
        release(r);
        if (r->wait == W_PREP) return MHD_YES; // suspended until the prep pool is done
    }
    if (r->stream && r->status == 200) return queue_stream(r);
    if (r->status) return queue_answer(r);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **req_cls, enum MHD_RequestTerminationCode why) {
    (void)mc, (void)why;
    ls_http *h = cls;
    hreq *r = *req_cls;
    if (!r) return;
    if (r->task) { // still being prepared: nobody waits for it now
        ls_prep_pool_cancel(h->host.pool, r->task);
        r->task->owner = NULL;
    }
    release(r);
    if (r->hc) r->hc->in_call = false, r->hc->since = ls_time_ms();
    unlink_req(&h->reqs, r);
    ls_buf_free(&r->body), ls_buf_free(&r->answer), ls_buf_free(&r->sse);
    ls_free(r);
    *req_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **sock_ctx, enum MHD_ConnectionNotificationCode what) {
    ls_http *h = cls;
    if (what == MHD_CONNECTION_NOTIFY_STARTED) {
        hconn *c = ls_calloc(1, sizeof *c);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        c->since = ls_time_ms();
        c->next = h->conns;
        if (h->conns) h->conns->prev = c;
        h->conns = c;
        *sock_ctx = c;
    } else if (*sock_ctx) {
        hconn *c = *sock_ctx;
        if (c->prev) c->prev->next = c->next;
        else h->conns = c->next;
        if (c->next) c->next->prev = c->prev;
        ls_free(c);
        *sock_ctx = NULL;
    }
}

// A connection whose request has not arrived whole within --http-timeout of its start (the
// connection's opening, or the end of its last request) is answered 408 and shut: slowly sent
// headers or bodies hold nothing for long (libmicrohttpd's own timeout only bounds idleness).
static void deadlines(ls_http *h) {
    double now = ls_time_ms();
    static const char late[] = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    for (hconn *c = h->conns; c; c = c->next) {
        if (c->in_call || c->fd < 0 || now - c->since <= 1e3 * h->host.o->http_timeout_s) continue;
        ssize_t k = send(c->fd, late, sizeof late - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)k;
        shutdown(c->fd, SHUT_RDWR); // libmicrohttpd sees the end and closes it
        c->fd = -1;
    }
}

// --- the daemon -------------------------------------------------------------------------------

static void model_id(ls_http *h) {
    const char *path = h->host.o->model ? h->host.o->model : ls_default_model_path();
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t len = strlen(base);
    if (len > 5 && !strcmp(base + len - 5, ".gguf")) len -= 5;
    snprintf(h->model_id, sizeof h->model_id, "%.*s", (int)len, base);
}

ls_status ls_http_start(const ls_http_host *host, ls_http **out) {
    ls_http *h = ls_calloc(1, sizeof *h);
    h->host = *host;
    model_id(h);
    int fd;
    ls_status rc = ls_net_listen(host->o->http, 512, &fd, &h->port);
    if (rc != LS_OK) return ls_free(h), ls_err_prefix("--http: "), rc;
    size_t mem = host->o->http_max_header < 8192 ? 8192 : host->o->http_max_header;
    h->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, on_request, h,
                            MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)host->o->http_max_conns,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)host->o->http_timeout_s,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_END);
    if (!h->d) {
        close(fd);
        ls_free(h);
        return LS_ERR(LS_ERR_IO, "--http %s: libmicrohttpd could not start", host->o->http);
    }
    *out = h;
    return ls_batches_start(h);
}

int ls_http_port(const ls_http *h) { return h->port; }

int ls_http_fd(const ls_http *h) {
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    return i ? i->epoll_fd : -1;
}

int ls_http_timeout_ms(ls_http *h, int cap) {
    MHD_UNSIGNED_LONG_LONG t;
    if (MHD_get_timeout(h->d, &t) == MHD_YES && t < (MHD_UNSIGNED_LONG_LONG)cap) return (int)t;
    return cap;
}

void ls_http_run(ls_http *h) {
    MHD_run(h->d);
    deadlines(h);
    ls_batches_tick(h);
}

void ls_http_free(ls_http *h) {
    if (!h) return;
    for (hreq *r = h->reqs; r; r = r->next) {
        if (r->task) ls_prep_pool_cancel(h->host.pool, r->task), r->task->owner = NULL, r->task = NULL;
        if (r->stream && r->status == 200) {
            if (!r->sse_end) ls_buf_printf(&r->sse, "data: [DONE]\n\n"), r->sse_end = true;
        } else if (!r->status || r->wait != W_NONE) {
            ls_http_error(r, 503, NULL, "the server is stopping");
        }
        r->wait = W_NONE;
        resume(r);
    }
    for (int i = 0; i < 20 && h->reqs; i++) MHD_run(h->d), usleep(5000); // let the answers go out
    for (hreq *r = h->reqs; r; r = r->next) resume(r);
    MHD_stop_daemon(h->d);
    ls_batches_free(h);
    ls_free(h);
}
