// batch.c — OpenAI's Batch API on the HTTP front end: POST /v1/files (a JSONL of requests,
// multipart as the openai client sends it), GET /v1/files/ID[/content], POST /v1/batches, GET
// /v1/batches/ID, POST /v1/batches/ID/cancel. A batch, its input file and one row per line are
// committed together; the loop then turns lines into jobs a few at a time (each tokenized by
// the prep pool) and, once every line's job has ended, writes the output and error files (one
// line per request, in input order) and closes the batch in one transaction. A line's job id
// is derived from the batch id and the line number, so after a kill -9 a line whose job was
// stored but not yet recorded finds its job again: every line runs exactly once.
// docs/protocol.md ("HTTP"). Tests: tests/oracle/test_http.py (test_batch, test_batch_kill).
#include "http_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LINES_IN_FLIGHT 4       // lines of one batch in the prep pool at once
#define CHECK_EVERY_MS 250.0    // how often an open batch looks whether its jobs have ended

typedef struct obatch {         // an open batch
    struct obatch *next;
    ls_batch rec;
    uint8_t *input;             // its input file
    size_t input_len;
    size_t *line_at, *line_len; // [rec.n_lines]: each line's bytes in input
    uint8_t *taken;             // [rec.n_lines]: the line has a job or an error, or is being prepared
    int64_t next_line;          // lines before it are all taken
    int in_flight;
    double checked_ms;
    bool cancelling;
} obatch;

struct ls_batches {
    obatch *open;
    char offline[40];           // the batch of `longseq batch` ("" none)
};

typedef struct line_task {      // the owner of a line's prep task
    obatch *b;                  // NULL: the batch went away meanwhile
    int64_t line;
} line_task;

// --- lines ------------------------------------------------------------------------------------

// Splits a JSONL file into its non-empty lines.
static int64_t split_lines(const uint8_t *d, size_t len, size_t **at, size_t **n) {
    int64_t k = 0, cap = 0;
    *at = NULL, *n = NULL;
    for (size_t i = 0; i < len;) {
        const uint8_t *e = memchr(d + i, '\n', len - i);
        size_t end = e ? (size_t)(e - d) : len, l = end - i;
        if (l && d[end - 1] == '\r') l--;
        bool blank = true;
        for (size_t j = i; j < i + l && blank; j++) blank = d[j] == ' ' || d[j] == '\t';
        if (!blank) {
            if (k == cap) cap = cap ? 2 * cap : 64, *at = ls_realloc(*at, (size_t)cap * sizeof **at), *n = ls_realloc(*n, (size_t)cap * sizeof **n);
            (*at)[k] = i, (*n)[k] = l, k++;
        }
        i = end + 1;
    }
    return k;
}

// A line's request: {"custom_id", "method": "POST", "url": the batch's endpoint, "body"}.
// Returns the parsed line (NULL with *why when it is bad) and its custom_id ("" if none; the
// caller frees it).
static json_t *parse_line(const uint8_t *d, size_t len, const char *endpoint, char **custom_id, char *why, size_t cap) {
    json_error_t err;
    *custom_id = ls_strndup("", 0);
    json_t *q = json_loadb((const char *)d, len, JSON_REJECT_DUPLICATES, &err);
    if (!q) return snprintf(why, cap, "the line is not valid JSON: %s", err.text), NULL;
    json_t *cid = json_object_get(q, "custom_id"), *m = json_object_get(q, "method"), *u = json_object_get(q, "url");
    if (json_is_string(cid)) ls_free(*custom_id), *custom_id = ls_strndup(json_string_value(cid), json_string_length(cid));
    const char *bad = !json_is_object(q) ? "the line is not a JSON object"
                    : !json_is_string(cid) ? "custom_id must be a string"
                    : !json_is_string(m) || strcmp(json_string_value(m), "POST") ? "method must be POST"
                    : !json_is_string(u) || strcmp(json_string_value(u), endpoint) ? "url must be the batch's endpoint"
                    : !json_is_object(json_object_get(q, "body")) ? "body must be an object" : NULL;
    if (!bad) return q;
    snprintf(why, cap, "%s%s%s", bad, !strcmp(bad, "url must be the batch's endpoint") ? " " : "",
             !strcmp(bad, "url must be the batch's endpoint") ? endpoint : "");
    json_decref(q);
    return NULL;
}

// The job id of a line: "j" + 16 hex digits of a hash of the batch id and the line number.
static void line_job_id(const char *batch, int64_t line, char id[40]) {
    uint64_t x = 1469598103934665603ull;
    for (const char *p = batch; *p; p++) x = (x ^ (uint8_t)*p) * 1099511628211ull;
    for (int i = 0; i < 8; i++) x = (x ^ (uint8_t)(line >> (8 * i))) * 1099511628211ull;
    x ^= x >> 29, x *= 0xbf58476d1ce4e5b9ull, x ^= x >> 32;
    snprintf(id, 40, "j%016llx", (unsigned long long)x);
}

static void line_error(ls_http *h, obatch *b, int64_t line, const char *why) {
    if (ls_store_batch_line_set(h->host.store, b->rec.id, line, "", why) != LS_OK) ls_err_clear();
}

// Hands a line to the prep pool, or records why it is refused.
static void submit_line(ls_http *h, obatch *b, int64_t line) {
    char why[1024], *cid;
    json_t *q = parse_line(b->input + b->line_at[line], b->line_len[line], b->rec.endpoint, &cid, why, sizeof why);
    ls_free(cid);
    if (!q) return line_error(h, b, line, why);
    hreq tmp = {.h = h, .chat = !strcmp(b->rec.endpoint, "/v1/chat/completions")};
    Longseq__SubmitRequest *req = ls_http_build_job(&tmp, json_object_get(q, "body"));
    if (req && tmp.stream) {
        ls_http_error(&tmp, 400, NULL, "stream cannot be true in a batch");
        longseq__submit_request__free_unpacked(req, NULL), req = NULL;
    }
    json_decref(q);
    if (!req) {
        json_t *e = json_loadb(tmp.answer.data, tmp.answer.len, 0, NULL);
        const char *msg = e ? json_string_value(json_object_get(json_object_get(e, "error"), "message")) : NULL;
        line_error(h, b, line, msg ? msg : "the request is refused");
        json_decref(e), ls_buf_free(&tmp.answer);
        return;
    }
    static const Longseq__Settings none = LONGSEQ__SETTINGS__INIT;
    ls_prep_task *t = ls_calloc(1, sizeof *t);
    line_task *lt = ls_calloc(1, sizeof *lt);
    lt->b = b, lt->line = line;
    t->req = req;
    t->set = req->settings ? req->settings : &none;
    t->owner = lt, t->http = true, t->batch = true, t->rendered = tmp.chat && !tmp.document;
    b->in_flight++;
    ls_prep_pool_add(h->host.pool, t);
}

// The job of a prepared line: stored under the line's own id (unless a run before a crash
// stored it already), then recorded on the line.
void ls_batches_prep_done(ls_http *h, ls_prep_task *t) {
    line_task *lt = t->owner;
    obatch *b = lt->b;
    ls_prep_doc *d = &t->docs[0];
    if (b) b->in_flight--;
    if (b && d->error) line_error(h, b, lt->line, d->error);
    else if (b && b->cancelling) line_error(h, b, lt->line, "the batch was cancelled");
    else if (b) {
        ls_job job = {.state = LS_JOB_QUEUED, .name = d->name, .tokens = d->ids.data, .n_tokens = (int64_t)d->ids.len}, old;
        line_job_id(b->rec.id, lt->line, job.id);
        size_t plen = longseq__settings__get_packed_size(t->set);
        job.settings = ls_malloc(plen ? plen : 1), job.settings_len = plen;
        longseq__settings__pack(t->set, job.settings);
        ls_strat_job_of(&job, d, &t->req->documents[0]->text); // (a line with a strategy: a parent)
        ls_status rc = LS_OK;
        if (ls_store_get(h->host.store, job.id, &old) == LS_OK) ls_job_free(&old); // stored before a crash
        else {
            ls_err_clear(), rc = ls_store_add(h->host.store, &job, 1);
            if (rc == LS_OK && job.is_parent) h->host.strat_start(h->host.server, job.id);
        }
        if (rc == LS_OK) rc = ls_store_batch_line_set(h->host.store, b->rec.id, lt->line, job.id, "");
        if (rc != LS_OK) { // taken again later
            ls_err_clear();
            b->taken[lt->line] = 0;
            if (lt->line < b->next_line) b->next_line = lt->line;
        }
        ls_free(job.settings), ls_free(job.doc), ls_free(job.tag);
    }
    ls_free(lt);
    t->owner = NULL;
    ls_prep_task_free(t);
}

// --- output -----------------------------------------------------------------------------------

typedef struct finish_ctx {
    ls_http *h;
    obatch *b;
    const char *endpoint;
    const char *batch_id;
    bool merged;          // error lines go to out too (longseq batch: one line per request)
    ls_buf out, err;
    int64_t open_lines;   // lines whose job has not ended (or that have neither job nor error)
    int64_t done, failed;
} finish_ctx;

static void out_line(ls_buf *to, json_t *line) {
    char *s = json_dumps(line, JSON_COMPACT);
    json_decref(line);
    if (s) ls_buf_printf(to, "%s\n", s), free(s);
}

static void error_line(finish_ctx *c, int64_t line, const char *custom_id, const char *job, const char *code, const char *msg) {
    char id[64];
    snprintf(id, sizeof id, "batch_req_%s-%lld", c->batch_id + 6, (long long)line);
    out_line(c->merged ? &c->out : &c->err, json_pack("{s:s, s:s, s:n, s:{s:s, s:s, s:I}}", "id", id, "custom_id", custom_id, "response",
                                "error", "code", code, "message", msg, "line", (json_int_t)line + 1));
    (void)job;
    c->failed++;
}

static void done_line(finish_ctx *c, const char *custom_id, const char *job_id) {
    ls_job j;
    if (ls_store_get(c->h->host.store, job_id, &j) != LS_OK) {
        ls_err_clear();
        return error_line(c, -1, custom_id, job_id, "server_error", "the line's job is missing from the store");
    }
    Longseq__JobResult *jr = j.result_len ? longseq__job_result__unpack(NULL, j.result_len, j.result) : NULL;
    bool chat = !strcmp(c->endpoint, "/v1/chat/completions");
    json_t *body = ls_http_completion(c->h, chat, j.id, j.created_ms / 1000, &j, jr);
    char id[64];
    snprintf(id, sizeof id, "batch_req_%s", j.id);
    out_line(&c->out, json_pack("{s:s, s:s, s:{s:i, s:s, s:o}, s:n}", "id", id, "custom_id", custom_id, "response",
                                "status_code", 200, "request_id", j.id, "body", body, "error"));
    if (jr) longseq__job_result__free_unpacked(jr, NULL);
    ls_job_free(&j);
    c->done++;
}

static void count_line(void *ctx, int64_t line, const ls_batch_line *l, int st) {
    (void)line, (void)l;
    finish_ctx *c = ctx;
    if (*l->error) c->failed++;
    else if (st < 0 || !ls_job_state_final((ls_job_state)st)) c->open_lines++;
    else if (st == LS_JOB_DONE) c->done++;
    else c->failed++;
}

static void write_line(void *ctx, int64_t line, const ls_batch_line *l, int st) {
    finish_ctx *c = ctx;
    if (*l->error) return error_line(c, line, l->custom_id, "", "invalid_request", l->error);
    if (st == LS_JOB_DONE) return done_line(c, l->custom_id, l->job);
    ls_job j;
    char msg[700];
    snprintf(msg, sizeof msg, "job %s did not finish", l->job);
    if (*l->job && ls_store_get(c->h->host.store, l->job, &j) == LS_OK) {
        snprintf(msg, sizeof msg, "job %s %s: %s", j.id, ls_job_state_name(j.state), j.error);
        ls_job_free(&j);
    }
    ls_err_clear();
    error_line(c, line, l->custom_id, l->job, st == LS_JOB_CANCELLED || st < 0 ? "cancelled" : "job_failed", msg);
}

// Closes the batch when every line has ended: the output and error files, in input order.
static void write_offline(ls_http *h, const ls_batch *b);

static bool try_finish(ls_http *h, obatch *b) {
    finish_ctx c = {.h = h, .b = b, .endpoint = b->rec.endpoint, .batch_id = b->rec.id};
    if (ls_store_batch_lines(h->host.store, b->rec.id, count_line, &c) != LS_OK) return ls_err_clear(), false;
    if (c.open_lines) return false;
    c.done = c.failed = 0;
    if (ls_store_batch_lines(h->host.store, b->rec.id, write_line, &c) != LS_OK) {
        ls_err_clear();
        ls_buf_free(&c.out), ls_buf_free(&c.err);
        return false;
    }
    char out_id[40], err_id[40];
    bool ok = ls_store_new_named_id("file-", out_id) == LS_OK && ls_store_new_named_id("file-", err_id) == LS_OK;
    ls_free(b->rec.output_file), ls_free(b->rec.error_file);
    b->rec.output_file = ls_strndup(out_id, strlen(out_id)), b->rec.error_file = ls_strndup(err_id, strlen(err_id));
    if (ok) ok = ls_store_batch_finish(h->host.store, &b->rec, b->cancelling ? "cancelled" : "completed", &c.out, &c.err) == LS_OK;
    if (!ok) ls_err_clear();
    else if (!h->host.o->quiet)
        fprintf(stderr, "[longseq serve] batch %s %s: %lld lines done, %lld failed\n", b->rec.id,
                b->cancelling ? "cancelled" : "completed", (long long)c.done, (long long)c.failed);
    ls_buf_free(&c.out), ls_buf_free(&c.err);
    if (ok && !strcmp(b->rec.id, h->batches->offline)) write_offline(h, &b->rec);
    return ok;
}

// --- open batches -----------------------------------------------------------------------------

static void free_open(obatch *b) {
    ls_batch_free(&b->rec);
    ls_free(b->input), ls_free(b->line_at), ls_free(b->line_len), ls_free(b->taken);
    ls_free(b);
}

static void taken_line(void *ctx, int64_t line, const ls_batch_line *l, int st) {
    (void)st;
    obatch *b = ctx;
    if (line >= 0 && line < b->rec.n_lines) b->taken[line] = *l->job || *l->error;
}

// An open batch, in memory: its input's lines, and where to go on.
static ls_status open_batch(ls_http *h, const ls_batch *rec) {
    ls_file f;
    LS_CHECK(ls_store_file_get(h->host.store, rec->input_file, &f, true));
    obatch *b = ls_calloc(1, sizeof *b);
    b->rec = *rec;
    b->rec.input_file = ls_strndup(rec->input_file, strlen(rec->input_file));
    b->rec.endpoint = ls_strndup(rec->endpoint, strlen(rec->endpoint));
    b->rec.state = ls_strndup(rec->state, strlen(rec->state));
    b->rec.output_file = ls_strndup("", 0), b->rec.error_file = ls_strndup("", 0);
    b->rec.metadata = ls_strndup(rec->metadata, strlen(rec->metadata));
    b->input = f.data, b->input_len = f.len, f.data = NULL;
    ls_file_free(&f);
    int64_t n = split_lines(b->input, b->input_len, &b->line_at, &b->line_len);
    b->cancelling = !strcmp(rec->state, "cancelling");
    b->taken = ls_calloc((size_t)(n ? n : 1), 1);
    ls_status rc = n == rec->n_lines ? ls_store_batch_lines(h->host.store, rec->id, taken_line, b) : LS_OK;
    if (rc != LS_OK || n != rec->n_lines) {
        free_open(b);
        return rc != LS_OK ? rc : LS_ERR(LS_ERR_FORMAT, "batch %s: its input has %lld lines, not %lld", rec->id, (long long)n,
                                         (long long)rec->n_lines);
    }
    b->next = h->batches->open;
    h->batches->open = b;
    return LS_OK;
}

static void resume_one(void *ctx, const ls_batch *rec) {
    ls_http *h = ctx;
    if (open_batch(h, rec) != LS_OK) {
        fprintf(stderr, "[longseq serve] batch %s cannot go on: %s\n", rec->id, ls_err_msg());
        ls_err_clear();
    }
}

static ls_status make_batch(ls_http *h, const ls_file *f, const char *endpoint, const char *metadata, ls_batch *b);
static ls_status offline_batch(ls_http *h);

ls_status ls_batches_start(ls_http *h) {
    h->batches = ls_calloc(1, sizeof *h->batches);
    LS_CHECK(ls_store_batch_list(h->host.store, true, 1 << 20, resume_one, h));
    return h->host.o->batch_in ? offline_batch(h) : LS_OK;
}

void ls_batches_free(ls_http *h) {
    if (!h->batches) return;
    for (obatch *b = h->batches->open, *n; b; b = n) n = b->next, free_open(b);
    ls_free(h->batches);
    h->batches = NULL;
}

// Lines not yet taken of a cancelled batch: refused; its jobs that have not ended: cancelled.
static void cancel_rest(void *ctx, int64_t line, const ls_batch_line *l, int st) {
    ls_http *h = ((void **)ctx)[0];
    obatch *b = ((void **)ctx)[1];
    if (!*l->job && !*l->error && !b->taken[line]) b->taken[line] = 1, line_error(h, b, line, "the batch was cancelled");
    else if (*l->job && st >= 0 && !ls_job_state_final((ls_job_state)st)) h->host.cancel(h->host.server, l->job);
}

void ls_batches_tick(ls_http *h) {
    double now = ls_time_ms();
    obatch **pb = &h->batches->open;
    while (*pb) {
        obatch *b = *pb;
        while (!b->cancelling && b->in_flight < LINES_IN_FLIGHT && b->next_line < b->rec.n_lines) {
            int64_t line = b->next_line++;
            if (b->taken[line]) continue;
            b->taken[line] = 1;
            submit_line(h, b, line);
        }
        if (b->in_flight || now - b->checked_ms < CHECK_EVERY_MS || (!b->cancelling && b->next_line < b->rec.n_lines)) {
            pb = &b->next;
            continue;
        }
        b->checked_ms = now;
        if (try_finish(h, b)) {
            *pb = b->next;
            free_open(b);
        } else {
            pb = &b->next;
        }
    }
}

// --- routes -----------------------------------------------------------------------------------

static json_t *file_json(const ls_file *f) {
    return json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s}", "id", f->id, "object", "file", "bytes", (json_int_t)f->len,
                     "created_at", (json_int_t)(f->created_ms / 1000), "filename", f->filename, "purpose", f->purpose,
                     "status", "processed");
}

typedef struct upload {
    ls_buf purpose, file;
    char filename[256];
    bool has_file;
} upload;

static enum MHD_Result upload_part(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                                   const char *ctype, const char *enc, const char *data, uint64_t off, size_t size) {
    (void)kind, (void)ctype, (void)enc, (void)off;
    upload *u = cls;
    if (!strcmp(key, "purpose")) ls_buf_append(&u->purpose, data, size);
    else if (!strcmp(key, "file")) {
        if (filename && !u->filename[0]) snprintf(u->filename, sizeof u->filename, "%s", filename);
        u->has_file = true;
        ls_buf_append(&u->file, data, size);
    }
    return MHD_YES;
}

// POST /v1/files: multipart/form-data with `purpose` ("batch") and `file`.
static void post_file(hreq *r) {
    upload u = {0};
    struct MHD_PostProcessor *pp = MHD_create_post_processor(r->mc, 65536, upload_part, &u);
    if (!pp) return ls_http_error(r, 400, NULL, "a file is uploaded as multipart/form-data with the fields purpose and file");
    bool ok = MHD_post_process(pp, r->body.data ? r->body.data : "", r->body.len) == MHD_YES;
    MHD_destroy_post_processor(pp);
    ls_buf_putc(&u.purpose, 0);
    char id[40];
    if (!ok || !u.has_file) ls_http_error(r, 400, NULL, "the upload has no file field (multipart/form-data: purpose, file)");
    else if (strcmp(u.purpose.data, "batch")) ls_http_error(r, 400, NULL, "purpose must be \"batch\"");
    else if (!ls_utf8_valid(u.filename, strlen(u.filename), NULL)) ls_http_error(r, 400, NULL, "the file name is not UTF-8");
    else if (ls_store_new_named_id("file-", id) != LS_OK ||
             ls_store_file_put(r->h->host.store, id, "batch", u.filename[0] ? u.filename : "input.jsonl", u.file.data,
                               u.file.len) != LS_OK)
        ls_http_error(r, 503, NULL, "the store could not keep the file: %s", ls_err_msg()), ls_err_clear();
    else {
        ls_file f;
        if (ls_store_file_get(r->h->host.store, id, &f, false) == LS_OK) ls_http_json(r, 200, file_json(&f)), ls_file_free(&f);
        else ls_http_error(r, 500, NULL, "%s", ls_err_msg()), ls_err_clear();
    }
    ls_buf_free(&u.purpose), ls_buf_free(&u.file);
}

static void get_file(hreq *r, const char *id, bool content) {
    ls_file f;
    if (ls_store_file_get(r->h->host.store, id, &f, content) != LS_OK) {
        ls_err_clear();
        return ls_http_error(r, 404, NULL, "no file %s", id);
    }
    if (content) {
        r->status = 200;
        r->ctype = "application/jsonl";
        ls_buf_clear(&r->answer);
        ls_buf_append(&r->answer, f.data ? (const char *)f.data : "", f.len);
    } else {
        ls_http_json(r, 200, file_json(&f));
    }
    ls_file_free(&f);
}

static json_t *batch_json(ls_http *h, const ls_batch *b) {
    finish_ctx c = {.h = h};
    if (ls_store_batch_lines(h->host.store, b->id, count_line, &c) != LS_OK) ls_err_clear();
    json_t *meta = json_loads(b->metadata, 0, NULL);
    int64_t created = b->created_ms / 1000, fin = b->finished_ms / 1000;
    bool completed = !strcmp(b->state, "completed"), cancelled = !strcmp(b->state, "cancelled");
    return json_pack("{s:s, s:s, s:s, s:n, s:s, s:s, s:s, s:s?, s:s?, s:I, s:I, s:o, s:o, s:o, s:{s:I, s:I, s:I}, s:o}",
                     "id", b->id, "object", "batch", "endpoint", b->endpoint, "errors", "input_file_id", b->input_file,
                     "completion_window", "24h", "status", b->state, "output_file_id", *b->output_file ? b->output_file : NULL,
                     "error_file_id", *b->error_file ? b->error_file : NULL, "created_at", (json_int_t)created,
                     "in_progress_at", (json_int_t)created, "completed_at", completed ? json_integer(fin) : json_null(),
                     "cancelled_at", cancelled ? json_integer(fin) : json_null(), "expires_at", json_null(),
                     "request_counts", "total", (json_int_t)b->n_lines, "completed", (json_int_t)c.done, "failed",
                     (json_int_t)c.failed, "metadata", meta ? meta : json_null());
}

// The lines of a new batch: each bad one keeps its error (never the batch's failure).
static ls_batch_line *new_lines(const uint8_t *d, size_t len, const char *endpoint, int64_t *n, char ***owned) {
    size_t *at, *ln;
    *n = split_lines(d, len, &at, &ln);
    ls_batch_line *lines = ls_calloc((size_t)(*n ? *n : 1), sizeof *lines);
    *owned = ls_calloc((size_t)(*n ? 2 * *n : 1), sizeof **owned);
    for (int64_t i = 0; i < *n; i++) {
        char why[1024] = "";
        json_t *q = parse_line(d + at[i], ln[i], endpoint, &(*owned)[2 * i], why, sizeof why);
        (*owned)[2 * i + 1] = q ? NULL : ls_strndup(why, strlen(why));
        lines[i] = (ls_batch_line){(*owned)[2 * i], "", (*owned)[2 * i + 1]};
        json_decref(q);
    }
    ls_free(at), ls_free(ln);
    return lines;
}

// A batch over file f: its lines stored (b->id given, or a new one), then opened.
static ls_status make_batch(ls_http *h, const ls_file *f, const char *endpoint, const char *metadata, ls_batch *b) {
    int64_t n;
    char **owned;
    ls_batch_line *lines = new_lines(f->data, f->len, endpoint, &n, &owned);
    b->input_file = (char *)f->id, b->endpoint = (char *)endpoint, b->state = "in_progress", b->n_lines = n;
    b->metadata = (char *)metadata;
    ls_status rc = !n ? LS_ERR(LS_ERR_INVALID, "the input file has no request lines")
                 : b->id[0] ? LS_OK : ls_store_new_named_id("batch_", b->id);
    if (rc == LS_OK) rc = ls_store_batch_add(h->host.store, b, lines);
    if (rc == LS_OK) rc = open_batch(h, b);
    if (rc == LS_OK && !h->host.o->quiet) fprintf(stderr, "[longseq serve] batch %s: %lld lines from %s\n", b->id, (long long)n, f->id);
    for (int64_t i = 0; i < 2 * n; i++) ls_free(owned[i]);
    ls_free(owned), ls_free(lines);
    return rc;
}

static void create_batch(hreq *r, json_t *q) {
    json_t *in = json_object_get(q, "input_file_id"), *ep = json_object_get(q, "endpoint"), *meta = json_object_get(q, "metadata");
    const char *endpoint = json_is_string(ep) ? json_string_value(ep) : "";
    if (!json_is_string(in)) return ls_http_error(r, 400, NULL, "input_file_id is required");
    if (strcmp(endpoint, "/v1/chat/completions") && strcmp(endpoint, "/v1/completions"))
        return ls_http_error(r, 400, NULL, "endpoint must be /v1/chat/completions or /v1/completions");
    ls_file f;
    if (ls_store_file_get(r->h->host.store, json_string_value(in), &f, true) != LS_OK)
        return ls_err_clear(), ls_http_error(r, 404, NULL, "no file %s", json_string_value(in));
    char *metatext = meta && json_is_object(meta) ? json_dumps(meta, JSON_COMPACT) : NULL;
    ls_batch b = {0};
    if (make_batch(r->h, &f, endpoint, metatext ? metatext : "null", &b) == LS_OK) {
        ls_batch got;
        if (ls_store_batch_get(r->h->host.store, b.id, &got) == LS_OK) ls_http_json(r, 200, batch_json(r->h, &got)), ls_batch_free(&got);
    } else {
        ls_http_error(r, ls_err_code() == LS_ERR_INVALID ? 400 : 503, NULL, "%s", ls_err_msg());
    }
    ls_err_clear();
    free(metatext);
    ls_file_free(&f);
}

// --- longseq batch (offline) ------------------------------------------------------------------

// The output of `longseq batch`: one line per request in input order (a response, or an error
// line), written to a temporary file and renamed over batch_out; then the server stops.
static void write_offline(ls_http *h, const ls_batch *b) {
    finish_ctx c = {.h = h, .endpoint = b->endpoint, .batch_id = b->id, .merged = true};
    ls_status rc = ls_store_batch_lines(h->host.store, b->id, write_line, &c);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", h->host.o->batch_out);
    FILE *f = rc == LS_OK ? fopen(tmp, "w") : NULL;
    bool ok = f && fwrite(c.out.data ? c.out.data : "", 1, c.out.len, f) == c.out.len;
    if (f) ok = (fclose(f) == 0) && ok;
    if (ok) ok = rename(tmp, h->host.o->batch_out) == 0;
    if (!ok) fprintf(stderr, "[longseq serve] cannot write %s: %s\n", h->host.o->batch_out, rc == LS_OK ? strerror(errno) : ls_err_msg());
    ls_err_clear();
    if (h->host.o->batch_failed) *h->host.o->batch_failed = ok ? c.failed : -1;
    ls_buf_free(&c.out);
    ls_server_stop();
}

// The endpoint of an offline batch: the url of its first line that names one (the lines that
// name another become error lines).
static const char *first_url(const ls_buf *in) {
    size_t *at, *len;
    int64_t n = split_lines((const uint8_t *)in->data, in->len, &at, &len);
    const char *url = "/v1/chat/completions";
    for (int64_t i = 0; i < n; i++) {
        json_t *q = json_loadb(in->data + at[i], len[i], 0, NULL);
        const char *u = json_string_value(json_object_get(q, "url"));
        bool found = u && (!strcmp(u, "/v1/completions") || !strcmp(u, "/v1/chat/completions"));
        if (found) url = !strcmp(u, "/v1/completions") ? "/v1/completions" : "/v1/chat/completions";
        json_decref(q);
        if (found) break;
    }
    ls_free(at), ls_free(len);
    return url;
}

// The batch of `longseq batch IN`: its id comes from IN's bytes, so a rerun on the same state
// finds it (and goes on, or only writes the output again when it has finished).
static ls_status offline_batch(ls_http *h) {
    ls_buf in = {0};
    LS_CHECK(ls_file_read_all(h->host.o->batch_in, (size_t)1 << 32, &in));
    uint64_t x = 1469598103934665603ull;
    for (size_t i = 0; i < in.len; i++) x = (x ^ (uint8_t)in.data[i]) * 1099511628211ull;
    ls_batch b = {0};
    snprintf(b.id, sizeof b.id, "batch_%016llx", (unsigned long long)x);
    snprintf(h->batches->offline, sizeof h->batches->offline, "%s", b.id);
    ls_batch old;
    ls_status rc = LS_OK;
    if (ls_store_batch_get(h->host.store, b.id, &old) == LS_OK) { // a rerun
        if (old.finished_ms) write_offline(h, &old);
        ls_batch_free(&old);
    } else {
        ls_err_clear();
        ls_file f = {.data = (uint8_t *)in.data, .len = in.len};
        snprintf(f.id, sizeof f.id, "file-%016llx", (unsigned long long)x);
        const char *endpoint = first_url(&in);
        rc = ls_store_file_put(h->host.store, f.id, "batch", h->host.o->batch_in, in.data ? in.data : "", in.len);
        if (rc == LS_OK) rc = make_batch(h, &f, endpoint, "null", &b);
    }
    ls_buf_free(&in);
    return rc;
}

static void get_batch(hreq *r, const char *id, bool cancel) {
    ls_batch b;
    if (ls_store_batch_get(r->h->host.store, id, &b) != LS_OK) return ls_err_clear(), ls_http_error(r, 404, NULL, "no batch %s", id);
    if (cancel && !b.finished_ms && strcmp(b.state, "cancelling")) {
        obatch *o = r->h->batches->open;
        while (o && strcmp(o->rec.id, id)) o = o->next;
        if (ls_store_batch_set_state(r->h->host.store, id, "cancelling") != LS_OK) ls_err_clear();
        ls_free(b.state), b.state = ls_strndup("cancelling", 10);
        if (o) {
            o->cancelling = true;
            void *ctx[2] = {r->h, o};
            if (ls_store_batch_lines(r->h->host.store, id, cancel_rest, ctx) != LS_OK) ls_err_clear();
        }
    }
    ls_http_json(r, 200, batch_json(r->h, &b));
    ls_batch_free(&b);
}

typedef struct list_ctx {
    ls_http *h;
    json_t *data;
} list_ctx;

static void list_one(void *ctx, const ls_batch *b) {
    list_ctx *l = ctx;
    json_array_append_new(l->data, batch_json(l->h, b));
}

// GET /v1/batches[?limit=N]: newest first (at most 100 by default, 10000 at most).
static void list_batches(hreq *r) {
    const char *lim = MHD_lookup_connection_value(r->mc, MHD_GET_ARGUMENT_KIND, "limit");
    long limit = lim ? strtol(lim, NULL, 10) : 100;
    if (limit < 1 || limit > 10000) return ls_http_error(r, 400, NULL, "limit must be an integer in [1, 10000]");
    list_ctx l = {r->h, json_array()};
    if (ls_store_batch_list(r->h->host.store, false, limit, list_one, &l) != LS_OK) {
        json_decref(l.data);
        ls_http_error(r, 503, NULL, "%s", ls_err_msg());
        return ls_err_clear();
    }
    size_t n = json_array_size(l.data);
    json_t *first = n ? json_object_get(json_array_get(l.data, 0), "id") : NULL;
    json_t *last = n ? json_object_get(json_array_get(l.data, n - 1), "id") : NULL;
    ls_http_json(r, 200, json_pack("{s:s, s:o, s:O?, s:O?, s:b}", "object", "list", "data", l.data, "first_id", first,
                                   "last_id", last, "has_more", 0));
}

// /v1/files[/ID[/content]], /v1/batches[/ID[/cancel]]: the kind, and the id (at most 39 bytes).
static bool parse_url(const char *url, bool *files, char id[40], const char **tail) {
    const char *rest;
    if (!strncmp(url, "/v1/files", 9)) *files = true, rest = url + 9;
    else if (!strncmp(url, "/v1/batches", 11)) *files = false, rest = url + 11;
    else return false;
    id[0] = 0, *tail = "";
    if (!*rest) return true;
    if (*rest != '/') return false;
    rest++;
    size_t n = strcspn(rest, "/");
    if (!n || n >= 40) return false;
    memcpy(id, rest, n), id[n] = 0;
    *tail = rest + n;
    return !**tail || !strcmp(*tail, "/content") || !strcmp(*tail, "/cancel");
}

bool ls_batches_route(hreq *r, const char *method, const char *url, bool run) {
    bool files;
    char id[40];
    const char *tail;
    if (!parse_url(url, &files, id, &tail)) return false;
    bool post = !strcmp(method, "POST"), get = !strcmp(method, "GET");
    bool ok = files ? (!id[0] ? post : get && (!*tail || !strcmp(tail, "/content")))
                    : (!id[0] ? post || get : !*tail ? get : post && !strcmp(tail, "/cancel"));
    if (!ok) {
        if ((files && *tail && strcmp(tail, "/content")) || (!files && *tail && strcmp(tail, "/cancel")))
            ls_http_error(r, 404, "unknown_url", "no route %s %s", method, url);
        else ls_http_error(r, 405, NULL, "%s does not take %s", url, method);
        return true;
    }
    if (!run) return true;
    if (files && !id[0]) return post_file(r), true;
    if (files) return get_file(r, id, *tail != 0), true;
    if (id[0]) return get_batch(r, id, *tail != 0), true;
    if (get) return list_batches(r), true;
    json_error_t err;
    json_t *q = json_loadb(r->body.data ? r->body.data : "", r->body.len, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(q)) ls_http_error(r, 400, NULL, "the body must be a JSON object: %s", q ? "" : err.text);
    else create_batch(r, q);
    json_decref(q);
    return true;
}
