// cmd_client.c — the client commands of the job service: submit, watch, result, jobs, cancel,
// and summarize (which runs a coordinator in this process on a loopback port, with a worker
// group it launches, and summarizes the given files end to end: one job per file, whose
// settings.strategy the coordinator runs). They speak the protocol of docs/protocol.md through
// proto/ls_wire.h; the server's messages are shown with these commands' flags for the settings
// fields they name. Tests: tests/oracle/test_service.py, tests/oracle/test_longdoc.py,
// tests/cli/errors.sh.
#include "cli.h"
#include "ls_chat.h"
#include "ls_server.h"
#include "ls_wire.h"

#include <jansson.h>

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// The server's messages name settings fields as `settings.NAME` and suggest values as
// `settings { NAME: VALUE ... }` (protobuf text format; docs/protocol.md). Here they become the
// flags that set those fields: `--flag` and `--flag VALUE ...` (strings unquoted, enum names in
// lower case). Anything else is copied as it is. The result is allocated (ls_free).
static char *settings_as_flags(const char *msg);

// --- the connection ---------------------------------------------------------------------------

typedef struct client {
    int fd;
    char *token;
    bool local; // this process's own coordinator (summarize): its refusals are ours, not "the server's"
} client;

static ls_status client_open(const char *addr, const char *token_file, client *c) {
    *c = (client){.fd = -1};
    if (!addr) addr = getenv("LONGSEQ_SERVER") && *getenv("LONGSEQ_SERVER") ? getenv("LONGSEQ_SERVER") : "127.0.0.1:7070";
    LS_CHECK(ls_wire_read_token(token_file, &c->token));
    return ls_net_connect(addr, 2000, &c->fd);
}

static void client_close(client *c) {
    if (c->fd >= 0) close(c->fd);
    ls_free(c->token);
    *c = (client){.fd = -1};
}

static ls_status client_send(client *c, Longseq__Request *q) {
    q->token = c->token;
    return ls_wire_send(c->fd, &q->base);
}

// The next reply; a Status other than OK becomes an error with the server's message.
static ls_status client_next(client *c, Longseq__Reply **out) {
    ls_buf body = {0};
    ls_status rc = ls_wire_recv(c->fd, (size_t)1 << 30, -1, &body);
    if (rc == LS_OK) rc = ls_wire_unpack_reply((const uint8_t *)body.data, body.len, out);
    ls_buf_free(&body);
    LS_CHECK(rc);
    Longseq__Reply *r = *out;
    if (r->body_case == LONGSEQ__REPLY__BODY_STATUS && r->status->code != LONGSEQ__CODE__OK) {
        char *msg = settings_as_flags(r->status->message);
        ls_status code = r->status->code == LONGSEQ__CODE__NOT_FOUND ? LS_ERR_NOT_FOUND : LS_ERR_INVALID;
        if (c->local) rc = LS_ERR(code, "%s", msg);
        else rc = LS_ERR(code, "the server says %s: %s", ls_wire_code_name(r->status->code), msg);
        ls_free(msg);
        longseq__reply__free_unpacked(r, NULL);
        *out = NULL;
    }
    return rc;
}

// Sends a call and returns its first reply of the given kind (the final Status is read too).
static ls_status client_unary(client *c, Longseq__Request *q, Longseq__Reply__BodyCase want, Longseq__Reply **out) {
    LS_CHECK(client_send(c, q));
    *out = NULL;
    for (;;) {
        Longseq__Reply *r;
        LS_CHECK(client_next(c, &r));
        if (r->body_case == LONGSEQ__REPLY__BODY_STATUS) {
            longseq__reply__free_unpacked(r, NULL);
            return *out || want == LONGSEQ__REPLY__BODY_STATUS ? LS_OK : LS_ERR(LS_ERR_FORMAT, "the server sent no answer");
        }
        if (r->body_case == want && !*out) *out = r;
        else longseq__reply__free_unpacked(r, NULL);
    }
}

// --- job options ------------------------------------------------------------------------------

#define JOB_OPT 1200
#define JOB_OPTIONS                                                                               \
    {"task", required_argument, 0, JOB_OPT + 0}, {"max-tokens", required_argument, 0, JOB_OPT + 1},  \
    {"temp", required_argument, 0, JOB_OPT + 2}, {"seed", required_argument, 0, JOB_OPT + 3},        \
    {"attn", required_argument, 0, JOB_OPT + 4}, {"group", required_argument, 0, JOB_OPT + 5},       \
    {"sinks", required_argument, 0, JOB_OPT + 6}, {"window", required_argument, 0, JOB_OPT + 7},     \
    {"rope-scaling", required_argument, 0, JOB_OPT + 8}, {"rope-scale", required_argument, 0, JOB_OPT + 9}, \
    {"rope-freq-base", required_argument, 0, JOB_OPT + 10}, {"yarn-orig-ctx", required_argument, 0, JOB_OPT + 11}, \
    {"instruction", required_argument, 0, JOB_OPT + 12}, {"ctx", required_argument, 0, JOB_OPT + 13}, \
    {"chunks", required_argument, 0, JOB_OPT + 14}, {"top-p", required_argument, 0, JOB_OPT + 15},   \
    {"top-k", required_argument, 0, JOB_OPT + 16}, {"repeat-penalty", required_argument, 0, JOB_OPT + 17}, \
    {"strategy", required_argument, 0, JOB_OPT + 18}, {"chunk-tokens", required_argument, 0, JOB_OPT + 19}, \
    {"combine-parts", required_argument, 0, JOB_OPT + 20}
// The Settings field each of them sets, by JOB_OPT offset.
static const char *const g_job_fields[] = {"task", "max_tokens", "temperature", "seed", "attention", "group",
                                           "sinks", "window", "rope_scaling", "rope_scale", "rope_freq_base",
                                           "yarn_orig_ctx", "instruction", "ctx", "max_chunks", "top_p", "top_k",
                                           "repeat_penalty", "strategy", "chunk_tokens", "combine_parts"};
static const struct option g_job_options[] = {JOB_OPTIONS, {0, 0, 0, 0}};

// "--flag" for a Settings field; NULL when no job option sets it.
static const char *field_flag(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof g_job_fields / sizeof *g_job_fields; i++)
        if (strlen(g_job_fields[i]) == len && !memcmp(g_job_fields[i], name, len))
            for (const struct option *o = g_job_options; o->name; o++)
                if (o->val == JOB_OPT + (int)i) return o->name;
    return NULL;
}

static size_t name_len(const char *p) {
    size_t n = 0;
    while ((p[n] >= 'a' && p[n] <= 'z') || p[n] == '_') n++;
    return n;
}

// One `settings { ... }` block at p (just after "settings {"): its flags appended to out;
// returns the bytes read up to and including '}', or 0 when it is not NAME: VALUE pairs.
static size_t block_as_flags(const char *p, ls_buf *out) {
    const char *q = p;
    ls_buf b = {0};
    for (;;) {
        while (*q == ' ') q++;
        if (*q == '}') break;
        size_t n = name_len(q);
        const char *flag = n ? field_flag(q, n) : NULL;
        if (!flag || q[n] != ':') goto bad;
        q += n + 1;
        while (*q == ' ') q++;
        ls_buf_printf(&b, "--%s ", flag);
        if (*q == '"') {
            const char *end = strchr(q + 1, '"');
            if (!end) goto bad;
            ls_buf_append(&b, q + 1, (size_t)(end - q - 1));
            q = end + 1;
        } else {
            const char *v = q;
            while (*q && *q != ' ' && *q != '}') q++;
            if (q == v) goto bad;
            for (; v < q; v++) ls_buf_putc(&b, *v >= 'A' && *v <= 'Z' ? (char)(*v - 'A' + 'a') : *v); // enum names
        }
        ls_buf_append(&b, " ", 1);
    }
    if (!b.len) goto bad;
    ls_buf_append(out, b.data, b.len - 1); // without the last space
    ls_buf_free(&b);
    return (size_t)(q - p) + 1;
bad:
    ls_buf_free(&b);
    return 0;
}

static char *settings_as_flags(const char *msg) {
    ls_buf out = {0};
    ls_buf_append(&out, "", 0);
    for (const char *p = msg ? msg : ""; *p;) {
        size_t used = 0, n;
        const char *flag;
        if (!strncmp(p, "settings { ", 11) && (used = block_as_flags(p + 11, &out))) {
            p += 11 + used;
        } else if (!strncmp(p, "settings.", 9) && (n = name_len(p + 9)) && (flag = field_flag(p + 9, n))) {
            ls_buf_printf(&out, "--%s", flag);
            p += 9 + n;
        } else {
            ls_buf_append(&out, p++, 1);
        }
    }
    return out.data;
}
#define JOB_HELP                                                                                  \
    "  --task summarize|generate|perplexity   (default summarize)\n"                                \
    "  --max-tokens N       tokens to generate (default 256)\n"                                       \
    "  --temp T --seed S --top-k K --top-p P --repeat-penalty R   sampling (default greedy;\n"        \
    "                       summarize: repeat penalty 1.1)\n"                                         \
    "  --attn full|s2|sink|window --group G --sinks S --window W   attention rule\n"                 \
    "  --rope-scaling M --rope-scale S --rope-freq-base B --yarn-orig-ctx N   RoPE for this job\n"   \
    "  --instruction TEXT   summarize: the request after the document\n"                              \
    "  --ctx N --chunks N   perplexity: context (default 512) and at most N chunks\n"                 \
    "  --strategy auto|direct|extend|map-reduce --chunk-tokens N --combine-parts N   summarize: how\n" \
    "                       the coordinator reads a long document (docs/architecture.md)\n"

// Names (task, attention, RoPE method) and how the values fit together are checked by the
// server (ls_settings_check); each number is checked here against the same limits.
static int job_option(const char *cmd, int c, const char *arg, Longseq__Settings *s) {
    int64_t v;
    double d;
    switch (c - JOB_OPT) {
    case 0:
        if (!strcmp(arg, "summarize")) s->task = LONGSEQ__TASK__SUMMARIZE;
        else if (!strcmp(arg, "generate")) s->task = LONGSEQ__TASK__GENERATE;
        else if (!strcmp(arg, "perplexity")) s->task = LONGSEQ__TASK__PERPLEXITY;
        else return cli_usage_error(cmd, "--task is summarize, generate or perplexity, not \"%s\"", arg);
        return 0;
    case 1: if (!cli_parse_setting(cmd, LS_SET_MAX_TOKENS, arg, &d)) return 2; s->max_tokens = (uint32_t)d; return 0;
    case 2:
        if (!cli_parse_setting(cmd, LS_SET_TEMPERATURE, arg, &d)) return 2;
        s->temperature_opt_case = LONGSEQ__SETTINGS__TEMPERATURE_OPT_TEMPERATURE, s->temperature = (float)d;
        return 0;
    case 3:
        if (!cli_parse_int(cmd, "--seed", arg, 0, INT64_MAX, &v)) return 2;
        s->seed_opt_case = LONGSEQ__SETTINGS__SEED_OPT_SEED, s->seed = (uint64_t)v;
        return 0;
    case 4: s->attention = (char *)arg; return 0;
    case 5: if (!cli_parse_setting(cmd, LS_SET_GROUP, arg, &d)) return 2; s->group = (uint32_t)d; return 0;
    case 6:
        if (!cli_parse_setting(cmd, LS_SET_SINKS, arg, &d)) return 2;
        s->sinks_opt_case = LONGSEQ__SETTINGS__SINKS_OPT_SINKS, s->sinks = (uint32_t)d;
        return 0;
    case 7: if (!cli_parse_setting(cmd, LS_SET_WINDOW, arg, &d)) return 2; s->window = (uint32_t)d; return 0;
    case 8: s->rope_scaling = (char *)arg; return 0;
    case 9: if (!cli_parse_setting(cmd, LS_SET_ROPE_SCALE, arg, &d)) return 2; s->rope_scale = (float)d; return 0;
    case 10: if (!cli_parse_setting(cmd, LS_SET_ROPE_FREQ_BASE, arg, &d)) return 2; s->rope_freq_base = (float)d; return 0;
    case 11: if (!cli_parse_setting(cmd, LS_SET_YARN_ORIG_CTX, arg, &d)) return 2; s->yarn_orig_ctx = (uint32_t)d; return 0;
    case 12: s->instruction = (char *)arg; return 0;
    case 13: if (!cli_parse_setting(cmd, LS_SET_CTX, arg, &d)) return 2; s->ctx = (uint32_t)d; return 0;
    case 14: if (!cli_parse_setting(cmd, LS_SET_MAX_CHUNKS, arg, &d)) return 2; s->max_chunks = (uint32_t)d; return 0;
    case 15: if (!cli_parse_setting(cmd, LS_SET_TOP_P, arg, &d)) return 2; s->top_p = (float)d; return 0;
    case 16: if (!cli_parse_setting(cmd, LS_SET_TOP_K, arg, &d)) return 2; s->top_k = (uint32_t)d; return 0;
    case 17: if (!cli_parse_setting(cmd, LS_SET_REPEAT_PENALTY, arg, &d)) return 2; s->repeat_penalty = (float)d; return 0;
    case 18: {
        ls_strategy k;
        if (!ls_strategy_parse(arg, &k)) return cli_usage_error(cmd, "--strategy is auto, direct, extend or map-reduce, not \"%s\"", arg);
        s->strategy = (char *)arg;
        return 0;
    }
    case 19: if (!cli_parse_setting(cmd, LS_SET_CHUNK_TOKENS, arg, &d)) return 2; s->chunk_tokens = (uint32_t)d; return 0;
    case 20: if (!cli_parse_setting(cmd, LS_SET_COMBINE_PARTS, arg, &d)) return 2; s->combine_parts = (uint32_t)d; return 0;
    default: return cli_usage_error(cmd, "unknown option");
    }
}

// --- submitting, watching, results ------------------------------------------------------------

#define BATCH_BYTES ((size_t)32 << 20) // per Submit call, well under the server's frame limit
#define BATCH_DOCS 256

// Submits files[0..n) as one call; ids[i] receives each job id, errors[i] why the server refused
// that document ("" when it was queued).
static ls_status submit_batch(client *c, char **files, ls_buf *texts, int n, Longseq__Settings *s, char **ids,
                              char **errors) {
    Longseq__Document *docs = ls_calloc((size_t)n, sizeof *docs), **dp = ls_calloc((size_t)n, sizeof *dp);
    for (int i = 0; i < n; i++) {
        longseq__document__init(&docs[i]);
        docs[i].name = files[i];
        docs[i].text.data = (uint8_t *)texts[i].data;
        docs[i].text.len = texts[i].len;
        dp[i] = &docs[i];
    }
    Longseq__SubmitRequest sub = LONGSEQ__SUBMIT_REQUEST__INIT;
    sub.n_documents = (size_t)n;
    sub.documents = dp;
    sub.settings = s;
    Longseq__Request q = LONGSEQ__REQUEST__INIT;
    q.method_case = LONGSEQ__REQUEST__METHOD_SUBMIT;
    q.submit = &sub;
    Longseq__Reply *r = NULL;
    ls_status rc = client_unary(c, &q, LONGSEQ__REPLY__BODY_SUBMIT, &r);
    if (rc == LS_OK && r->submit->n_job_ids != (size_t)n)
        rc = LS_ERR(LS_ERR_FORMAT, "the server returned %zu ids for %d documents", r->submit->n_job_ids, n);
    for (int i = 0; rc == LS_OK && i < n; i++) {
        const char *e = r->submit->n_errors == (size_t)n ? r->submit->errors[i] : ""; // (older servers send none)
        ids[i] = ls_strndup(r->submit->job_ids[i], strlen(r->submit->job_ids[i]));
        errors[i] = ls_strndup(e, strlen(e));
    }
    if (r) longseq__reply__free_unpacked(r, NULL);
    ls_free(docs), ls_free(dp);
    return rc;
}

static void free_strs(char **v, int n) {
    for (int i = 0; v && i < n; i++) ls_free(v[i]);
    ls_free(v);
}

// Sends the files gathered in a batch (their indices at[0..k)) as one call; their texts are freed.
static ls_status send_batch(client *c, char **files, ls_buf *texts, const int *at, int k, Longseq__Settings *s,
                            char **ids, char **errors) {
    char **f = ls_calloc((size_t)k, sizeof *f), **bi = ls_calloc((size_t)k, sizeof *bi), **be = ls_calloc((size_t)k, sizeof *be);
    ls_buf *bt = ls_calloc((size_t)k, sizeof *bt);
    for (int j = 0; j < k; j++) f[j] = files[at[j]], bt[j] = texts[at[j]];
    ls_status rc = k ? submit_batch(c, f, bt, k, s, bi, be) : LS_OK;
    for (int j = 0; j < k; j++) {
        ids[at[j]] = bi[j], errors[at[j]] = be[j];
        ls_buf_free(&texts[at[j]]);
    }
    ls_free(f), ls_free(bi), ls_free(be), ls_free(bt);
    return rc;
}

// Reads the files and submits them in calls of at most BATCH_BYTES / BATCH_DOCS; ids: one per
// file, in order; errors: why each was refused ("" when queued). A document the server refused
// has a job, already failed; a file that could not be sent at all (unreadable, or over the
// default frame limit) has the id "" and its error, and the others go on.
static ls_status submit_files(client *c, char **files, int n, Longseq__Settings *s, char ***ids, char ***errors) {
    ls_buf *texts = ls_calloc((size_t)n, sizeof *texts);
    int *at = ls_calloc((size_t)n, sizeof *at), k = 0;
    *ids = ls_calloc((size_t)n, sizeof **ids);
    *errors = ls_calloc((size_t)n, sizeof **errors);
    ls_status rc = LS_OK;
    size_t bytes = 0;
    for (int i = 0; rc == LS_OK && i < n; i++) {
        if (ls_file_read_all(files[i], LS_FRAME_MAX_DEFAULT - 4096, &texts[i]) != LS_OK) {
            (*ids)[i] = ls_strndup("", 0);
            (*errors)[i] = ls_strndup(ls_err_msg(), strlen(ls_err_msg()));
            ls_err_clear();
            continue;
        }
        if (k && (bytes + texts[i].len > BATCH_BYTES || k == BATCH_DOCS)) { // this file starts the next call
            rc = send_batch(c, files, texts, at, k, s, *ids, *errors);
            k = 0, bytes = 0;
        }
        at[k++] = i;
        bytes += texts[i].len;
    }
    if (rc == LS_OK) rc = send_batch(c, files, texts, at, k, s, *ids, *errors);
    if (rc != LS_OK) {
        free_strs(*ids, n), free_strs(*errors, n);
        *ids = *errors = NULL;
    }
    for (int i = 0; i < n; i++) ls_buf_free(&texts[i]);
    ls_free(texts), ls_free(at);
    return rc;
}

// How a watch shows a job. Off a terminal (a log file, nohup, sbatch), progress is a plain line
// every `every_s` seconds (docs/protocol.md, Watch).
typedef struct watch_opts {
    bool show_text;      // the text to standard output
    double every_s;      // off a terminal: seconds between progress lines
    uint32_t max_tokens; // the job's --max-tokens when known (0: not known), for the decode ETA
    size_t shown;        // bytes of text already printed (a watch again after a reconnect skips them)
    const char *label;   // how the progress lines name the job (NULL: its id)
} watch_opts;

typedef struct watch_state {
    const char *id;
    bool tty, mid_line, text_open; // mid_line: stderr's \r line; text_open: stdout's line is unfinished
    double last_line;              // when the last progress line was written (ms)
    double first_text;             // when the first text arrived (ms; 0 none yet)
    uint64_t pieces;               // TEXT events (about one per generated token)
} watch_state;

static void end_progress_line(watch_state *ws) {
    if (ws->mid_line) fprintf(stderr, "\n"), ws->mid_line = false;
}

static void show_state(watch_state *ws, const Longseq__Event *e) {
    end_progress_line(ws);
    fprintf(stderr, "[%s] %s", ws->id, ls_job_state_name((ls_job_state)e->state));
    if (e->state == LONGSEQ__JOB_STATE__QUEUED && e->queue_position)
        fprintf(stderr, " (%llu ahead)", (unsigned long long)e->queue_position);
    if (e->state == LONGSEQ__JOB_STATE__RUNNING && e->attempt) fprintf(stderr, " (attempt %u)", e->attempt); // (0: a parent)
    if (e->error && *e->error) {
        char *err = settings_as_flags(e->error);
        fprintf(stderr, ": %s", err);
        ls_free(err);
    }
    fprintf(stderr, "\n");
}

// Prefill: \r-updated on a terminal; elsewhere a line every every_s seconds and at 100%.
static void show_prefill(watch_state *ws, const watch_opts *wo, const Longseq__Event *e) {
    double now = ls_time_ms();
    bool line_due = now - ws->last_line >= 1e3 * wo->every_s;
    if (!ws->tty && !line_due && e->fraction < 1) return;
    fprintf(stderr, "%s[%s] prefill %3.0f%%, %.0f tok/s, ETA %.0f s%s", ws->tty ? "\r" : "", ws->id, 100 * e->fraction,
            e->tok_per_s, e->eta_s, ws->tty ? "   " : "");
    ws->mid_line = true;
    if (!ws->tty || e->fraction >= 1) end_progress_line(ws);
    ws->last_line = now;
}

// Decode, off a terminal only (on one the text itself shows it): tokens so far, their rate
// and, with --max-tokens known, the share of it and the time left at most.
static void show_decode(watch_state *ws, const watch_opts *wo) {
    double now = ls_time_ms();
    if (!ws->first_text) ws->first_text = now;
    ws->pieces++;
    if (ws->tty || now - ws->last_line < 1e3 * wo->every_s) return;
    double rate = now > ws->first_text ? (double)ws->pieces / ((now - ws->first_text) / 1e3) : 0;
    fprintf(stderr, "[%s] decode %llu tokens, %.1f tok/s", ws->id, (unsigned long long)ws->pieces, rate);
    if (wo->max_tokens && ws->pieces < wo->max_tokens && rate > 0)
        fprintf(stderr, ", %.0f%% of --max-tokens %u, ETA at most %.0f s", 100.0 * (double)ws->pieces / wo->max_tokens,
                wo->max_tokens, (double)(wo->max_tokens - ws->pieces) / rate);
    fprintf(stderr, "\n");
    ws->last_line = now;
}

// The text of a TEXT event to standard output, less what an earlier watch already printed.
static void show_text(watch_state *ws, watch_opts *wo, size_t *seen, const char *text) {
    size_t n = strlen(text), skip = *seen < wo->shown ? wo->shown - *seen : 0;
    *seen += n;
    if (skip >= n) return;
    end_progress_line(ws);
    fwrite(text + skip, 1, n - skip, stdout);
    fflush(stdout);
    wo->shown += n - skip;
    ws->text_open = true;
}

// Streams a job's events: states and progress to stderr, text to stdout. *final: its state.
static ls_status watch(client *c, const char *id, watch_opts *wo, Longseq__JobState *final) {
    Longseq__WatchRequest w = LONGSEQ__WATCH_REQUEST__INIT;
    w.job_id = (char *)id;
    Longseq__Request q = LONGSEQ__REQUEST__INIT;
    q.method_case = LONGSEQ__REQUEST__METHOD_WATCH;
    q.watch = &w;
    LS_CHECK(client_send(c, &q));
    watch_state ws = {.id = wo->label ? wo->label : id, .tty = isatty(2), .last_line = ls_time_ms()};
    size_t seen = 0; // text bytes of this stream
    *final = LONGSEQ__JOB_STATE__QUEUED;
    ls_status rc;
    for (;;) {
        Longseq__Reply *r;
        if ((rc = client_next(c, &r)) != LS_OK) break;
        if (r->body_case == LONGSEQ__REPLY__BODY_STATUS) {
            longseq__reply__free_unpacked(r, NULL);
            break;
        }
        Longseq__Event *e = r->body_case == LONGSEQ__REPLY__BODY_EVENT ? r->event : NULL;
        if (e && e->kind != LONGSEQ__EVENT__KIND__TEXT && ws.text_open) {
            fputc('\n', stdout);
            fflush(stdout);
            ws.text_open = false;
        }
        if (e && e->kind == LONGSEQ__EVENT__KIND__STATE) {
            *final = e->state;
            show_state(&ws, e);
        } else if (e && e->kind == LONGSEQ__EVENT__KIND__PREFILL) {
            show_prefill(&ws, wo, e);
        } else if (e && e->kind == LONGSEQ__EVENT__KIND__STAGE) { // a strategy's parent: its stage
            end_progress_line(&ws);
            fprintf(stderr, "[%s] %s", ws.id, e->stage ? e->stage : "");
            if (e->tok_per_s > 0) fprintf(stderr, ", %.0f%%, %.0f tok/s, ETA %.0f s", 100 * e->fraction, e->tok_per_s, e->eta_s);
            fprintf(stderr, "\n");
        } else if (e && e->kind == LONGSEQ__EVENT__KIND__TEXT) {
            show_decode(&ws, wo);
            if (wo->show_text) show_text(&ws, wo, &seen, e->text ? e->text : "");
        }
        longseq__reply__free_unpacked(r, NULL);
    }
    end_progress_line(&ws);
    if (ws.text_open && rc == LS_OK) fputc('\n', stdout); // (a watch again after a reconnect goes on with the line)
    return rc;
}

static ls_status get_result(client *c, const char *id, Longseq__Reply **r) {
    Longseq__ResultRequest rr = LONGSEQ__RESULT_REQUEST__INIT;
    rr.job_id = (char *)id;
    Longseq__Request q = LONGSEQ__REQUEST__INIT;
    q.method_case = LONGSEQ__REQUEST__METHOD_RESULT;
    q.result = &rr;
    return client_unary(c, &q, LONGSEQ__REPLY__BODY_RESULT, r);
}

static const char *task_name(Longseq__Task t) {
    return t == LONGSEQ__TASK__GENERATE ? "generate" : t == LONGSEQ__TASK__PERPLEXITY ? "perplexity" : "summarize";
}

// A job's record as JSON: {id, file, task, tokens, TEXT_KEY, prefill_ms, decode_ms, ranks,
// attention, rope, status, error, generated, stop, attempts} (+ ppl, ppl_stderr for
// perplexity). text_key: "summary" in summarize's JSONL (docs/protocol.md), "text" for result
// --json, NULL for none (jobs --json: the list carries no texts).
static json_t *result_json(const Longseq__JobResult *j, const char *text_key) {
    json_t *o = json_pack("{s:s, s:o, s:s, s:I, s:f, s:f, s:i, s:s, s:s, s:s, s:s, s:I, s:s, s:i}", "id", j->id,
                          "file", cli_json_str(j->name, strlen(j->name)), "task", task_name(j->task), "tokens",
                          (json_int_t)j->tokens, "prefill_ms", j->prefill_ms, "decode_ms", j->decode_ms,
                          "ranks", (int)j->ranks, "attention", j->attention ? j->attention : "", "rope",
                          j->rope ? j->rope : "", "status", ls_job_state_name((ls_job_state)j->state), "error",
                          j->error ? j->error : "", "generated", (json_int_t)j->generated, "stop", j->stop ? j->stop : "",
                          "attempts", (int)j->attempts);
    const char *text = j->text ? j->text : "";
    if (text_key) json_object_set_new(o, text_key, cli_json_str(text, strlen(text)));
    if (j->strategy && *j->strategy) { // a job with settings.strategy: what ran, as the coordinator says
        json_t *parts = json_array();
        for (size_t i = 0; i < j->n_parts; i++) json_array_append_new(parts, cli_json_str(j->parts[i], strlen(j->parts[i])));
        json_object_set_new(o, "strategy", json_string(j->strategy));
        json_object_set_new(o, "chunks", json_integer(j->chunks));
        json_object_set_new(o, "levels", json_integer(j->levels));
        json_object_set_new(o, "calls", json_integer(j->calls));
        json_object_set_new(o, "chunk_tokens", json_integer(j->chunk_tokens));
        json_object_set_new(o, "parts", parts);
        json_object_set_new(o, "wall_s", json_real(j->finished_unix_ms > j->created_unix_ms ?
                                                   (double)(j->finished_unix_ms - j->created_unix_ms) / 1e3 : 0));
    } else if (text_key && !strcmp(text_key, "summary")) { // the record: one job is the direct strategy
        json_object_set_new(o, "strategy", json_string("direct"));
        json_object_set_new(o, "chunks", json_integer(1));
        json_object_set_new(o, "levels", json_integer(0));
    }
    if (j->task == LONGSEQ__TASK__PERPLEXITY) {
        json_object_set_new(o, "ppl", json_real(j->ppl));
        json_object_set_new(o, "ppl_stderr", json_real(j->ppl_stderr));
    }
    return o;
}

// --- commands ---------------------------------------------------------------------------------

#define CLIENT_OPTIONS {"server", required_argument, 0, 'A'}, {"token-file", required_argument, 0, 'K'}
#define PROGRESS_OPTION {"progress", required_argument, 0, 'P'}
#define PROGRESS_HELP                                                                              \
    "  --progress S         when standard error is not a terminal: a progress line every S seconds\n" \
    "                       (default 10)\n"
#define PROGRESS_DEFAULT_S 10.0

// --progress S: 0.1 s to a day.
static bool progress_option(const char *cmd, const char *arg, double *every) {
    if (!cli_parse_double(cmd, "--progress", arg, every)) return false;
    if (*every >= 0.1 && *every <= 86400) return true;
    cli_usage_error(cmd, "--progress is from 0.1 to 86400 seconds, not %s", arg);
    return false;
}

// The watch of a job with these settings (its --max-tokens for the decode ETA).
static watch_opts watch_opts_for(const Longseq__Settings *s, bool show_text, double every) {
    watch_opts wo = {.show_text = show_text, .every_s = every};
    if (s && s->task != LONGSEQ__TASK__PERPLEXITY) wo.max_tokens = (uint32_t)ls_settings_max_tokens(s);
    return wo;
}
#define CLIENT_HELP                                                                         \
    "  --server HOST:PORT   the coordinator (default $LONGSEQ_SERVER, else 127.0.0.1:7070)\n" \
    "  --token-file F       bearer token (default $LONGSEQ_TOKEN, else $LONGSEQ_HOME/token)\n"

int cmd_submit(int argc, char **argv) {
    static const struct option opts[] = {CLIENT_OPTIONS, {"watch", no_argument, 0, 'w'}, {"help", no_argument, 0, 'h'},
                                         PROGRESS_OPTION, JOB_OPTIONS, {0, 0, 0, 0}};
    Longseq__Settings s = LONGSEQ__SETTINGS__INIT;
    const char *addr = NULL, *tf = NULL;
    bool follow = false;
    double every = PROGRESS_DEFAULT_S;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c >= JOB_OPT) {
            if (job_option("submit", c, optarg, &s)) return 2;
        } else if (c == 'A') addr = optarg;
        else if (c == 'K') tf = optarg;
        else if (c == 'w') follow = true;
        else if (c == 'P') {
            if (!progress_option("submit", optarg, &every)) return 2;
        } else if (c == 'h') {
            printf("usage: longseq submit [options] FILE...\nSubmits one job per file; prints one job id per line.\n"
                   "A file the server refuses (empty, not UTF-8, too long, ...) still gets its job id, a job\n"
                   "that has already failed; its error goes to stderr (a file that cannot be sent at all,\n"
                   "unreadable or over the 64 MiB frame limit, gets \"-\"). Exit status: 0 when every job was\n"
                   "queued (with --watch: ended done), 3 when some were refused (or did not end done), 1\n"
                   "on other errors.\n"
                   "  --watch              then follow the jobs to the end: progress and states to standard\n"
                   "                       error, each job's text to standard output after the ids\n"
                   PROGRESS_HELP CLIENT_HELP JOB_HELP);
            return 0;
        } else return cli_usage_error("submit", "unknown option");
    }
    if (optind >= argc) return cli_usage_error("submit", "give at least one FILE");
    client cl;
    char **ids = NULL, **errors = NULL;
    int n = argc - optind, status = 0;
    ls_status rc = client_open(addr, tf, &cl);
    if (rc == LS_OK) rc = submit_files(&cl, argv + optind, n, &s, &ids, &errors);
    for (int i = 0; rc == LS_OK && i < n; i++) {
        printf("%s\n", *ids[i] ? ids[i] : "-");
        if (!*errors[i]) continue;
        char *err = settings_as_flags(errors[i]);
        if (!*ids[i]) fprintf(stderr, "longseq submit: %s: not submitted: %s\n", argv[optind + i], err);
        else fprintf(stderr, "longseq submit: %s: job %s failed: %s\n", argv[optind + i], ids[i], err);
        ls_free(err);
        status = 3;
    }
    fflush(stdout);
    for (int i = 0; rc == LS_OK && follow && i < n; i++) {
        if (!*ids[i]) continue; // not submitted
        Longseq__JobState st = LONGSEQ__JOB_STATE__QUEUED;
        watch_opts wo = watch_opts_for(&s, true, every);
        rc = watch(&cl, ids[i], &wo, &st);
        if (st != LONGSEQ__JOB_STATE__DONE) status = 3;
    }
    if (rc != LS_OK) status = cli_fail();
    free_strs(ids, n), free_strs(errors, n);
    client_close(&cl);
    return status;
}

// watch / result / cancel: one job id.
static int one_id_command(const char *cmd, int argc, char **argv, const char *usage, bool *json) {
    static const struct option opts[] = {CLIENT_OPTIONS, {"json", no_argument, 0, 'j'}, {"record", no_argument, 0, 'r'},
                                         {"help", no_argument, 0, 'h'}, PROGRESS_OPTION, {0, 0, 0, 0}};
    const char *addr = NULL, *tf = NULL;
    bool is_watch = !strcmp(cmd, "watch"), record = false; // record: the batch format (the text as `summary`)
    double every = PROGRESS_DEFAULT_S;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'A') addr = optarg;
        else if (c == 'K') tf = optarg;
        else if (c == 'j' && json) *json = true;
        else if (c == 'r' && json) *json = record = true;
        else if (c == 'P' && is_watch) {
            if (!progress_option(cmd, optarg, &every)) return 2;
        } else if (c == 'h') {
            printf("usage: longseq %s%s\n%s" CLIENT_HELP, cmd, usage, is_watch ? PROGRESS_HELP : "");
            exit(0);
        } else return cli_usage_error(cmd, "unknown option");
    }
    if (optind + 1 != argc) return cli_usage_error(cmd, "give exactly one job id");
    client cl;
    if (client_open(addr, tf, &cl) != LS_OK) return cli_fail();
    Longseq__JobState st;
    ls_status rc = LS_OK;
    int status = 0;
    const char *id = argv[optind];
    if (is_watch) {
        watch_opts wo = watch_opts_for(NULL, true, every);
        rc = watch(&cl, id, &wo, &st);
        if (rc == LS_OK && st != LONGSEQ__JOB_STATE__DONE) status = 1;
    } else if (!strcmp(cmd, "result")) {
        Longseq__Reply *r;
        rc = get_result(&cl, id, &r);
        if (rc == LS_OK) {
            const Longseq__JobResult *j = r->result;
            if (*json) {
                json_t *o = result_json(j, record ? "summary" : "text");
                json_dumpf(o, stdout, JSON_COMPACT);
                printf("\n");
                json_decref(o);
            } else if (j->task == LONGSEQ__TASK__PERPLEXITY && j->state == LONGSEQ__JOB_STATE__DONE) {
                printf("ppl %.4f +/- %.4f\n", j->ppl, j->ppl_stderr);
            } else {
                printf("%s\n", j->text ? j->text : "");
                if (j->error && *j->error) {
                    char *err = settings_as_flags(j->error);
                    fprintf(stderr, "[%s] %s\n", j->id, err);
                    ls_free(err);
                }
            }
            if (j->state != LONGSEQ__JOB_STATE__DONE) status = 1;
            longseq__reply__free_unpacked(r, NULL);
        }
    } else {
        Longseq__CancelRequest cr = LONGSEQ__CANCEL_REQUEST__INIT;
        cr.job_id = (char *)id;
        Longseq__Request q = LONGSEQ__REQUEST__INIT;
        q.method_case = LONGSEQ__REQUEST__METHOD_CANCEL;
        q.cancel = &cr;
        Longseq__Reply *r = NULL;
        rc = client_send(&cl, &q);
        if (rc == LS_OK) rc = client_next(&cl, &r);
        if (rc == LS_OK) {
            if (r->body_case == LONGSEQ__REPLY__BODY_STATUS) printf("%s\n", r->status->message);
            longseq__reply__free_unpacked(r, NULL);
        }
    }
    client_close(&cl);
    return rc == LS_OK ? status : cli_fail();
}

int cmd_watch(int argc, char **argv) {
    return one_id_command("watch", argc, argv, " ID\nShows a job's progress and streams its text until it ends.", NULL);
}
int cmd_result(int argc, char **argv) {
    bool json = false;
    return one_id_command("result", argc, argv, " ID [--json | --record]\nPrints a job's text, or its record as JSON (--json: the text as `text`;\n"
                         "--record: as summarize --out and longseq.sbatch write it, the text as `summary`).", &json);
}
int cmd_cancel(int argc, char **argv) {
    return one_id_command("cancel", argc, argv, " ID\nCancels a queued or running job.", NULL);
}

int cmd_jobs(int argc, char **argv) {
    static const struct option opts[] = {CLIENT_OPTIONS, {"limit", required_argument, 0, 'n'}, {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *addr = NULL, *tf = NULL;
    int64_t limit = 50;
    bool json = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'A') addr = optarg;
        else if (c == 'K') tf = optarg;
        else if (c == 'j') json = true;
        else if (c == 'n') {
            if (!cli_parse_int("jobs", "--limit", optarg, 1, 10000, &limit)) return 2;
        } else if (c == 'h') {
            printf("usage: longseq jobs [--limit N] [--json]\nLists the newest jobs.\n" CLIENT_HELP);
            return 0;
        } else return cli_usage_error("jobs", "unknown option");
    }
    client cl;
    if (client_open(addr, tf, &cl) != LS_OK) return cli_fail();
    Longseq__ListRequest lr = LONGSEQ__LIST_REQUEST__INIT;
    lr.limit = (uint32_t)limit;
    Longseq__Request q = LONGSEQ__REQUEST__INIT;
    q.method_case = LONGSEQ__REQUEST__METHOD_LIST;
    q.list = &lr;
    Longseq__Reply *r;
    ls_status rc = client_unary(&cl, &q, LONGSEQ__REPLY__BODY_LIST, &r);
    if (rc == LS_OK) {
        if (!json) printf("%-18s %-10s %-10s %8s %8s  %s\n", "id", "state", "task", "tokens", "attempts", "name");
        for (size_t i = 0; i < r->list->n_jobs; i++) {
            const Longseq__JobResult *j = r->list->jobs[i];
            if (json) {
                json_t *o = result_json(j, NULL);
                json_dumpf(o, stdout, JSON_COMPACT);
                printf("\n");
                json_decref(o);
            } else {
                printf("%-18s %-10s %-10s %8llu %8u  %s\n", j->id, ls_job_state_name((ls_job_state)j->state),
                       task_name(j->task), (unsigned long long)j->tokens, j->attempts, j->name);
            }
        }
        longseq__reply__free_unpacked(r, NULL);
    }
    client_close(&cl);
    return rc == LS_OK ? 0 : cli_fail();
}

// --- summarize: everything in one command -----------------------------------------------------

typedef struct inproc {
    ls_server_opts o;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int port;         // 0 until listening, -1 when the server failed
    ls_status rc;
    char err[1024];
    const char *state;          // the state directory
    char tmp[4096], token[65];  // tmp: a temporary state directory ("" when --state was given)
    pthread_t th;
    bool started;
} inproc;

static void on_ready(void *ctx, int port) {
    inproc *p = ctx;
    pthread_mutex_lock(&p->mu);
    p->port = port;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void *server_thread(void *ctx) {
    inproc *p = ctx;
    p->rc = ls_server_run(&p->o);
    if (p->rc != LS_OK) snprintf(p->err, sizeof p->err, "%s", ls_err_msg());
    ls_err_clear();
    pthread_mutex_lock(&p->mu);
    if (!p->port) p->port = -1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

// This process's own coordinator (summarize, eval): the state directory (a temporary one when
// none is given), a one-off token, the server on a thread listening on a loopback port, with a
// worker group it launches. Returns 0, or 1 with the reason printed.
static int inproc_start(inproc *p, const char *cmd, const char *state, const cli_engine_args *eng, char **wargs, int nw) {
    p->tmp[0] = 0;
    if (!state) {
        snprintf(p->tmp, sizeof p->tmp, "%s/longseq-%s-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", cmd);
        if (!mkdtemp(p->tmp)) return p->tmp[0] = 0, fprintf(stderr, "longseq %s: cannot create a directory in /tmp\n", cmd), 1;
        state = p->tmp;
    }
    p->state = state;
    char path[4200], *t = NULL; // a one-off token for this process's own coordinator
    snprintf(path, sizeof path, "%s/token", state);
    if (ls_wire_write_new_token(path) != LS_OK || ls_wire_read_token(path, &t) != LS_OK) return cli_fail();
    snprintf(p->token, sizeof p->token, "%s", t);
    ls_free(t);
    p->o.listen = "127.0.0.1:0";
    p->o.state_dir = state;
    p->o.token = p->token;
    p->o.model = eng->model;
    p->o.rope = eng->opts.rope;
    p->o.load = cli_load_opts(eng);
    p->o.worker_args = wargs;
    p->o.n_worker_args = nw;
    p->o.max_launch_failures = 2;
    p->o.on_ready = on_ready;
    p->o.ready_ctx = p;
    p->started = pthread_create(&p->th, NULL, server_thread, p) == 0;
    pthread_mutex_lock(&p->mu);
    while (p->started && !p->port) pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    if (!p->started || p->port < 0) {
        fprintf(stderr, "longseq %s: the coordinator did not start: %s\n", cmd, p->err);
        return 1;
    }
    return 0;
}

// Stops it; its temporary state is removed unless `keep`.
static void inproc_stop(inproc *p, bool keep) {
    if (p->started) {
        ls_server_stop();
        pthread_join(p->th, NULL);
        p->started = false;
    }
    if (p->tmp[0] && !keep) remove_tree(p->tmp);
}

static void summarize_help(void) {
    printf("usage: longseq summarize [options] FILE...\n"
           "Summarizes each file with the model: starts a coordinator in this process and a worker\n"
           "group of --np ranks, submits the files, streams each summary to standard output and\n"
           "writes one JSON object per file to --out.\n"
           "A file the server refuses (empty, not UTF-8, too long for the context, ...) gets its\n"
           "record with status \"failed\" and the error (id \"\" for a file too large to send); the\n"
           "other files are summarized. Exit status:\n"
           "0 when every file was summarized, 3 when some failed (their records say why), 1 on other\n"
           "errors.\n"
           "  --np N               ranks (default 1)\n"
           "  --launcher CMD       how to start them (default mpirun)\n"
           "  --out F              JSONL results, each written when its job ends: {id, file, task,\n"
           "                       tokens, summary, prefill_ms, decode_ms,\n"
           "                       ranks, attention, rope, status, error, ...}\n"
           "  --state DIR          keep the job store there (default: a temporary directory, removed at\n"
           "                       the end unless it holds results that were not returned)\n"
           "  --idle-timeout S     the coordinator closes a connection idle this long (default 300)\n"
           "  --strategy auto|direct|extend|map-reduce   how a document is read (default auto):\n"
           "                       direct: in one context as the model is; extend: in one context with\n"
           "                       RoPE stretched over it (the measured best method, or --rope-scaling);\n"
           "                       map-reduce: cut into chunks at paragraph and sentence ends, each\n"
           "                       summarized as \"part i of n\", the summaries combined in order until one\n"
           "                       call covers them; auto: direct when the document fits the trained\n"
           "                       context, else what the model's measured effective context says\n"
           "                       (docs/effective-context.json; direct when --rope-scaling or --attn is\n"
           "                       given). The coordinator runs it: one job per document, its calls\n"
           "                       are child jobs. The record adds strategy, chunks, levels, calls,\n"
           "                       chunk_tokens, parts, wall_s.\n"
           "  --chunk-tokens N     map-reduce: tokens per call (default: the measured reliable context)\n"
           "  --combine-parts N    map-reduce: at most N summaries per combine call (default: as many\n"
           "                       as fit in a call; fewer means more levels)\n"
           "  --chat-template NAME " LS_CHAT_NAMES " instead of the model's own template\n"
           PROGRESS_HELP
           "  --verbose            the coordinator's log lines; errors with their source location\n" JOB_HELP CLI_ENGINE_HELP);
}

// A job watched to its end and its record fetched. When the connection to the coordinator
// breaks on the way (it closed, or refused a call), summarize connects again and goes on with
// the same job (its text printed so far is not printed twice); twice at most.
static ls_status follow_job(client *c, const char *addr, const char *id, watch_opts *wo, Longseq__Reply **r) {
    for (int tries = 0;; tries++) {
        Longseq__JobState st;
        ls_status rc = watch(c, id, wo, &st);
        if (rc == LS_OK) rc = get_result(c, id, r);
        if (rc == LS_OK || tries == 2) return rc;
        char why[1100];
        snprintf(why, sizeof why, "%s", ls_err_msg());
        ls_err_clear();
        fprintf(stderr, "[longseq] job %s: the connection to the coordinator broke (%s); connecting again\n", id, why);
        close(c->fd);
        c->fd = -1;
        if (ls_net_connect(addr, 5000, &c->fd) != LS_OK) {
            ls_err_clear();
            return LS_ERR(LS_ERR_IO, "%s (and the coordinator cannot be reached again)", why);
        }
    }
}

// Writes a job's record to --out at once (flushed: a later failure cannot take it back).
static void write_record(FILE *out, const Longseq__JobResult *j) {
    if (!out) return;
    json_t *o = result_json(j, "summary");
    json_dumpf(o, out, JSON_COMPACT);
    fprintf(out, "\n");
    fflush(out);
    json_decref(o);
}

static void report_job(const char *file, const Longseq__JobResult *j) {
    if (j->state == LONGSEQ__JOB_STATE__DONE) {
        fprintf(stderr, "[longseq] %s: %llu tokens on %u rank%s (%s), prefill %.1f s, %llu tokens generated in %.1f s\n",
                file, (unsigned long long)j->tokens, j->ranks, j->ranks == 1 ? "" : "s", j->attention,
                j->prefill_ms / 1e3, (unsigned long long)j->generated, j->decode_ms / 1e3);
        return;
    }
    char *err = settings_as_flags(j->error);
    fprintf(stderr, "[longseq] %s: %s\n", file, err);
    ls_free(err);
}

// The record of a file that could not be sent (no job, no id): failed, with the error.
static void not_sent(FILE *out, const char *file, const char *error, const Longseq__Settings *s) {
    Longseq__JobResult j = LONGSEQ__JOB_RESULT__INIT;
    j.name = (char *)file;
    j.state = LONGSEQ__JOB_STATE__FAILED;
    j.task = s->task;
    j.error = (char *)error;
    if (s->strategy && *s->strategy) j.strategy = "direct", j.chunks = 1; // (the same keys as the other records)
    report_job(file, &j);
    write_record(out, &j);
}

// A batch run by summarize: what it needs to say where unreturned results are kept.
typedef struct batch {
    const char *state, *model;
    double every;
    int unreturned; // jobs submitted whose results were not returned (their state must be kept)
} batch;

// The jobs whose results did not come back are in the state directory: how to get them.
static void say_kept(const batch *b, char **ids, int from, int n) {
    fprintf(stderr, "longseq summarize: %d of %d results were not returned; their jobs are kept in %s.\n"
                    "  To run them and get their records: longseq serve --state %s --token-file %s/token%s%s\n"
                    "  (with the same engine options as this run); then for each job: longseq watch --token-file\n"
                    "  %s/token ID (waits for its end), longseq result --record --token-file %s/token ID.\n"
                    "  The jobs:",
            n - from, n, b->state, b->state, b->state, b->model ? " --model " : "", b->model ? b->model : "", b->state,
            b->state);
    for (int i = from; i < n; i++)
        if (*ids[i]) fprintf(stderr, " %s", ids[i]); // ("": a file never sent)
    fprintf(stderr, "\n");
}

// The summaries: submit, then watch each job in turn and write its record the moment it ends.
static int summarize_jobs(const char *token, int port, char **files, int n, Longseq__Settings *s, FILE *out, batch *b) {
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    client cl = {.fd = -1, .token = ls_strndup(token, strlen(token)), .local = true};
    char **ids = NULL, **errors = NULL;
    int status = 0, i = 0;
    ls_status rc = ls_net_connect(addr, 5000, &cl.fd);
    if (rc == LS_OK) rc = submit_files(&cl, files, n, s, &ids, &errors); // refused files: jobs already failed
    for (; rc == LS_OK && i < n; i++) {
        if (!*ids[i]) { // never sent (unreadable, too large): its record says why
            not_sent(out, files[i], errors[i], s);
            status = 3;
            continue;
        }
        fprintf(stderr, "[longseq] %s: job %s\n", files[i], ids[i]);
        watch_opts wo = watch_opts_for(s, true, b->every);
        Longseq__Reply *r = NULL;
        if ((rc = follow_job(&cl, addr, ids[i], &wo, &r)) != LS_OK) break;
        report_job(files[i], r->result);
        if (r->result->state != LONGSEQ__JOB_STATE__DONE) status = 3;
        write_record(out, r->result);
        longseq__reply__free_unpacked(r, NULL);
    }
    if (rc != LS_OK) status = cli_fail();
    if (ids && i < n) {
        b->unreturned = n - i;
        say_kept(b, ids, i, n);
    }
    free_strs(ids, n), free_strs(errors, n);
    client_close(&cl);
    return status;
}

int cmd_summarize(int argc, char **argv) {
    static const struct option opts[] = {{"np", required_argument, 0, 'N'}, {"launcher", required_argument, 0, 'L'},
                                         {"out", required_argument, 0, 'o'}, {"state", required_argument, 0, 's'},
                                         {"verbose", no_argument, 0, 'v'}, {"help", no_argument, 0, 'h'},
                                         {"idle-timeout", required_argument, 0, 'I'}, PROGRESS_OPTION,
                                         {"chat-template", required_argument, 0, 'G'},
                                         JOB_OPTIONS, CLI_ENGINE_OPTIONS, {0, 0, 0, 0}};
    inproc p = {.o = ls_server_opts_default(), .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    Longseq__Settings s = LONGSEQ__SETTINGS__INIT;
    cli_engine_args eng = cli_engine_args_default();
    const char *out_path = NULL, *state = NULL;
    char **wargs = ls_calloc((size_t)argc * 2 + 1, sizeof *wargs);
    int c, nw = 0, status = 0;
    int64_t v;
    double every = PROGRESS_DEFAULT_S;
    p.o.quiet = true;
    while (status == 0 && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c >= JOB_OPT) status = job_option("summarize", c, optarg, &s);
        else if (c >= CLI_ENGINE_OPT) {
            status = cli_engine_option("summarize", c, optarg, &eng);
            cli_engine_option_keep(opts, c, optarg, wargs, &nw);
        } else if (c == 'N') status = cli_parse_int("summarize", "--np", optarg, 1, 4096, &v) ? (p.o.np = (int)v, 0) : 2;
        else if (c == 'L') p.o.launcher = optarg;
        else if (c == 'o') out_path = optarg;
        else if (c == 's') state = optarg;
        else if (c == 'v') p.o.quiet = false, cli_verbose = true;
        else if (c == 'I')
            status = cli_parse_int("summarize", "--idle-timeout", optarg, 1, 86400, &v) ? (p.o.idle_timeout_s = (int)v, 0) : 2;
        else if (c == 'P') status = progress_option("summarize", optarg, &every) ? 0 : 2;
        else if (c == 'G') p.o.chat_template = optarg;
        else if (c == 'h') summarize_help(), exit(0);
        else status = cli_usage_error("summarize", "unknown option");
    }
    if (status == 0 && optind >= argc) status = cli_usage_error("summarize", "give at least one FILE");
    for (int i = optind; status == 0 && i < argc; i++)
        if (access(argv[i], R_OK) != 0) {
            fprintf(stderr, "longseq summarize: cannot read %s\n", argv[i]);
            status = 1;
        }
    FILE *out = NULL;
    if (status == 0 && out_path && !(out = fopen(out_path, "w"))) {
        fprintf(stderr, "longseq summarize: cannot write %s\n", out_path);
        status = 1;
    }
    if (status == 0) status = inproc_start(&p, "summarize", state, &eng, wargs, nw);
    state = p.state;
    const char *token = p.token;
    batch b = {.state = state, .model = eng.model, .every = every};
    // The strategy is the coordinator's (settings.strategy; docs/architecture.md ("Long documents")):
    // auto unless asked otherwise (auto reads a document directly when the user chose the RoPE
    // or the attention rule, for the job or for the whole run, as they chose).
    if (!s.strategy || !*s.strategy) s.strategy = "auto";
    if (!strcmp(s.strategy, "direct")) s.strategy = ""; // (the records say direct)
    if (status == 0) status = summarize_jobs(token, p.port, argv + optind, argc - optind, &s, out, &b);
    inproc_stop(&p, b.unreturned > 0); // a state holding results not returned is kept (say_kept)
    if (out) fclose(out);
    for (int i = 0; i < nw; i++) ls_free(wargs[i]);
    ls_free(wargs);
    return status;
}

// --- eval: the effective context (passkey retrieval, needle in a haystack) --------------------
//
// Every trial is an ordinary generate job of the service (this process's coordinator with a
// worker group of --np ranks, or --server's): a prompt of the asked length with a number hidden
// at a depth, and the question after it; the trial is right when the first number of the
// answer is the hidden one. What they measured for the default model: docs/results.md.

#define EVAL_GEN 12 // tokens generated per trial (the number and a little)

typedef struct eval_cfg {
    bool niah;                 // needle in a haystack (KJV prose) rather than passkey (filler)
    int64_t lengths[32];       // prompt lengths in tokens
    int n_lengths;
    double depths[32];         // where the number is hidden (0: start, 1: end)
    int n_depths, trials;      // trials per (length, depth, method, rule)
    char *methods[8], *attns[8];
    int n_methods, n_attns;
    double scale;              // --rope-scale (0: length / trained context, at least 1)
    uint64_t seed;
    const char *haystack;      // niah: the text the needle hides in
} eval_cfg;

typedef struct eval_trial {
    int li, di, mi, ai, t;
    char key[16], *id, *answer, *error;
    int64_t tokens;
    double factor, prefill_ms;
    uint32_t ranks;
    bool right;
} eval_trial;

static uint64_t eval_rand(uint64_t *s) { // splitmix64: the keys and the haystack's offsets
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int64_t count_tokens(const ls_tokenizer_t *tok, const char *text, size_t len) {
    ls_vec_i32 ids = {0};
    int64_t n = ls_tokenize(tok, text, len, false, false, &ids) == LS_OK ? (int64_t)ids.len : 0;
    ls_err_clear();
    ls_vec_i32_free(&ids);
    return n;
}

// The passkey prompt (the format of the PI and LongLoRA papers): a task line, filler sentences
// repeated up to `length` tokens, the key sentence after the share `depth` of them, the question.
static void passkey_prompt(const ls_tokenizer_t *tok, int64_t length, double depth, const char *key, ls_buf *out) {
    static const char *task = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
                              "it. I will quiz you about the important information there.\n";
    static const char *filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n";
    static const char *ask = "What is the pass key? The pass key is";
    char line[128];
    snprintf(line, sizeof line, "The pass key is %s. Remember it. %s is the pass key.\n", key, key);
    int64_t fixed = count_tokens(tok, task, strlen(task)) + count_tokens(tok, line, strlen(line)) + count_tokens(tok, ask, strlen(ask));
    int64_t unit = count_tokens(tok, filler, strlen(filler)), units = (length - fixed - EVAL_GEN) / (unit ? unit : 1);
    if (units < 0) units = 0;
    int64_t at = (int64_t)(depth * (double)units + 0.5);
    ls_buf_printf(out, "%s", task);
    for (int64_t u = 0; u <= units; u++) {
        if (u == at) ls_buf_printf(out, "%s", line);
        if (u < units) ls_buf_printf(out, "%s", filler);
    }
    ls_buf_printf(out, "%s", ask);
}

// The line end at or before `bytes` past start (start when there is none).
static size_t niah_cut(const ls_buf *hay, size_t start, double bytes) {
    size_t end = start + (size_t)(bytes > 0 ? bytes : 0);
    if (end > hay->len) end = hay->len;
    while (end > start && hay->data[end - 1] != '\n') end--;
    return end;
}

// The prompt of the haystack [start, end): the needle between two lines after the share
// `depth` of it, then the question. Returns its tokens.
static int64_t niah_build(const ls_tokenizer_t *tok, const ls_buf *hay, size_t start, size_t end, double depth,
                          const char *needle, const char *ask, ls_buf *out) {
    size_t at = start + (size_t)(depth * (double)(end - start));
    while (at > start && hay->data[at - 1] != '\n') at--;
    ls_buf_clear(out);
    ls_buf_append(out, hay->data + start, at - start);
    ls_buf_printf(out, "%s", needle);
    ls_buf_append(out, hay->data + at, end - at);
    ls_buf_printf(out, "%s", ask);
    return count_tokens(tok, out->data, out->len);
}

// The needle-in-a-haystack prompt: haystack text from a random line, as many whole lines as
// keep the prompt within `length` - EVAL_GEN tokens (so that the answer fits the length: a
// length equal to the trained context runs), the needle at `depth`, the question. The cut is
// refined from the bytes per token of the previous try; the longest fitting one is kept.
static void niah_prompt(const ls_tokenizer_t *tok, const ls_buf *hay, int64_t length, double depth, const char *key,
                        uint64_t *rng, ls_buf *out) {
    static const char *ask = "\nWhat is the special magic number for Jerusalem mentioned in the text above? "
                             "The special magic number for Jerusalem is";
    char needle[128];
    snprintf(needle, sizeof needle, "The special magic number for Jerusalem is %s.\n", key);
    int64_t budget = length - EVAL_GEN, fixed = niah_build(tok, hay, 0, 0, 0, needle, ask, out), want = budget - fixed;
    size_t start = hay->len > 1 ? (size_t)(eval_rand(rng) % (hay->len / 2)) : 0, best = start;
    while (start > 0 && hay->data[start - 1] != '\n') start--;
    double bpt = 4.0; // bytes per token, refined by each try
    for (int pass = 0; pass < 6 && want > 0; pass++) {
        size_t end = niah_cut(hay, start, bpt * (double)want);
        int64_t n = niah_build(tok, hay, start, end, depth, needle, ask, out);
        if (n <= budget && end > best) best = end;
        if (n <= budget && budget - n < 16) break;
        if (n > fixed) bpt = (double)(end - start) / (double)(n - fixed);
    }
    niah_build(tok, hay, start, best, depth, needle, ask, out);
}

// Right when the first run of digits in the answer is the key.
static bool eval_right(const char *answer, const char *key) {
    const char *p = answer;
    while (*p && !(*p >= '0' && *p <= '9')) p++;
    size_t n = 0;
    while (p[n] >= '0' && p[n] <= '9') n++;
    return n == strlen(key) && !strncmp(p, key, n);
}

// The settings of one trial: greedy, EVAL_GEN tokens, its rule and RoPE (factor: the asked
// --rope-scale, else the length over the trained context, at least 1).
static Longseq__Settings eval_settings(const eval_cfg *e, const Longseq__Settings *base, const eval_trial *t) {
    Longseq__Settings s = *base;
    s.task = LONGSEQ__TASK__GENERATE;
    s.max_tokens = EVAL_GEN;
    s.attention = e->attns[t->ai];
    // --group, --sinks, --window go to the rules that take them (a list of rules may mix them)
    bool s2 = !strcmp(s.attention, "s2"), sink = !strcmp(s.attention, "sink"), window = !strcmp(s.attention, "window");
    if (!s2) s.group = 0;
    if (!sink) s.sinks_opt_case = LONGSEQ__SETTINGS__SINKS_OPT__NOT_SET;
    if (!sink && !window) s.window = 0;
    if (strcmp(e->methods[t->mi], "model")) s.rope_scaling = e->methods[t->mi];
    if (t->factor > 1) s.rope_scale = (float)t->factor;
    return s;
}

static ls_status eval_submit(client *c, const eval_cfg *e, const Longseq__Settings *base, const cli_model *m,
                             const ls_buf *hay, int64_t trained, uint64_t *rng, eval_trial *t) {
    int64_t len = e->lengths[t->li];
    double d = e->depths[t->di];
    snprintf(t->key, sizeof t->key, e->niah ? "%07llu" : "%05llu",
             (unsigned long long)(eval_rand(rng) % (e->niah ? 9000000 : 90000) + (e->niah ? 1000000 : 10000)));
    bool stretch = strcmp(e->methods[t->mi], "none") && strcmp(e->methods[t->mi], "model");
    t->factor = !stretch ? 1 : e->scale ? e->scale : fmax(1, ceil(10.0 * (double)len / (double)trained) / 10);
    ls_buf prompt = {0};
    if (e->niah) niah_prompt(m->tok, hay, len, d, t->key, rng, &prompt);
    else passkey_prompt(m->tok, len, d, t->key, &prompt);
    t->tokens = count_tokens(m->tok, prompt.data, prompt.len);
    Longseq__Settings s = eval_settings(e, base, t);
    char name[160], *names[1] = {name};
    snprintf(name, sizeof name, "%s %lld d=%.2f %s %s #%d", e->niah ? "niah" : "passkey", (long long)len, d,
             e->methods[t->mi], e->attns[t->ai], t->t + 1);
    ls_status rc = submit_batch(c, names, &prompt, 1, &s, &t->id, &t->error);
    ls_buf_free(&prompt);
    return rc;
}

// Follows a submitted trial to its answer.
static ls_status eval_follow(client *c, const char *addr, const eval_cfg *e, eval_trial *t, double every) {
    if (*t->error) return LS_OK; // refused at submit (e.g. past the context): no answer
    char label[200];
    snprintf(label, sizeof label, "%s %s %lld d=%.2f %s %s", t->id, e->niah ? "niah" : "passkey",
             (long long)e->lengths[t->li], e->depths[t->di], e->methods[t->mi], e->attns[t->ai]);
    watch_opts wo = {.every_s = every, .label = label};
    Longseq__Reply *r = NULL;
    LS_CHECK(follow_job(c, addr, t->id, &wo, &r));
    const Longseq__JobResult *j = r->result;
    t->answer = ls_strndup(j->text ? j->text : "", j->text ? strlen(j->text) : 0);
    t->prefill_ms = j->prefill_ms, t->ranks = j->ranks;
    if (j->state != LONGSEQ__JOB_STATE__DONE) {
        ls_free(t->error);
        t->error = ls_strndup(j->error ? j->error : "failed", j->error ? strlen(j->error) : 6);
    }
    t->right = j->state == LONGSEQ__JOB_STATE__DONE && eval_right(t->answer, t->key);
    longseq__reply__free_unpacked(r, NULL);
    return LS_OK;
}

static void eval_record(FILE *out, const eval_cfg *e, const eval_trial *t) {
    if (!out) return;
    json_t *o = json_pack("{s:s, s:I, s:I, s:f, s:s, s:f, s:s, s:s, s:o, s:b, s:s, s:f}", "test", e->niah ? "niah" : "passkey",
                          "length", (json_int_t)e->lengths[t->li], "tokens", (json_int_t)t->tokens, "depth", e->depths[t->di],
                          "rope", e->methods[t->mi], "factor", t->factor, "attention", e->attns[t->ai], "key", t->key,
                          "answer", cli_json_str(t->answer ? t->answer : "", t->answer ? strlen(t->answer) : 0), "right",
                          t->right, "error", t->error ? t->error : "", "prefill_ms", t->prefill_ms);
    json_object_set_new(o, "ranks", json_integer(t->ranks));
    json_dumpf(o, out, JSON_COMPACT);
    fprintf(out, "\n");
    fflush(out);
    json_decref(o);
}

// One table cell: "80% (4/5)", or "refused" when no trial ran (past the context).
static void eval_cell(const eval_trial *tr, int n, bool (*in)(const eval_trial *, const int *), const int *sel) {
    int runs = 0, right = 0;
    for (int i = 0; i < n; i++)
        if (in(&tr[i], sel) && !*tr[i].error) runs++, right += tr[i].right;
    if (runs) printf(" %3.0f%% (%d/%d) |", 100.0 * right / runs, right, runs);
    else printf(" refused |");
}
static bool in_length_combo(const eval_trial *t, const int *s) { return t->li == s[0] && t->mi == s[1] && t->ai == s[2]; }
static bool in_depth_length(const eval_trial *t, const int *s) {
    return t->di == s[0] && t->li == s[1] && t->mi == s[2] && t->ai == s[3];
}

// passkey: accuracy by length (rows) and RoPE method / rule (columns); niah: one depth x length
// grid per method and rule.
static void eval_tables(const eval_cfg *e, const eval_trial *tr, int n) {
    if (!e->niah) {
        printf("| length |");
        for (int mi = 0; mi < e->n_methods; mi++)
            for (int ai = 0; ai < e->n_attns; ai++) printf(" %s, %s |", e->methods[mi], e->attns[ai]);
        printf("\n|---:|");
        for (int k = 0; k < e->n_methods * e->n_attns; k++) printf("---:|");
        printf("\n");
        for (int li = 0; li < e->n_lengths; li++) {
            printf("| %lld |", (long long)e->lengths[li]);
            for (int mi = 0; mi < e->n_methods; mi++)
                for (int ai = 0; ai < e->n_attns; ai++) eval_cell(tr, n, in_length_combo, (int[]){li, mi, ai});
            printf("\n");
        }
        return;
    }
    for (int mi = 0; mi < e->n_methods; mi++)
        for (int ai = 0; ai < e->n_attns; ai++) {
            printf("\nneedle in a haystack, RoPE %s, attention %s (rows: depth; columns: length)\n\n| depth |", e->methods[mi], e->attns[ai]);
            for (int li = 0; li < e->n_lengths; li++) printf(" %lld |", (long long)e->lengths[li]);
            printf("\n|---:|");
            for (int li = 0; li < e->n_lengths; li++) printf("---:|");
            printf("\n");
            for (int di = 0; di < e->n_depths; di++) {
                printf("| %.2f |", e->depths[di]);
                for (int li = 0; li < e->n_lengths; li++) eval_cell(tr, n, in_depth_length, (int[]){di, li, mi, ai});
                printf("\n");
            }
        }
}

// "a,b,c" into at most cap parts (the string is modified).
static int split_list(char *arg, char **out, int cap) {
    int n = 0;
    for (char *tok = strtok(arg, ","); tok && n < cap; tok = strtok(NULL, ",")) out[n++] = tok;
    return n;
}

static void eval_help(void) {
    printf("usage: longseq eval passkey|niah [options]\n"
           "Measures how far into a long prompt the model still finds a number: passkey retrieval (a\n"
           "5-digit key in repeated filler, as in the PI and LongLoRA papers) or a needle in a haystack\n"
           "(a 7-digit number in KJV prose, at each depth). Every trial is a generate job of the service:\n"
           "this process's coordinator with a worker group of --np ranks, or --server's. Prints a table\n"
           "(passkey: accuracy by length and method; niah: a depth x length grid per method); --out\n"
           "writes one JSON object per trial (tools/niah_heatmap.py draws the grid as a PNG).\n"
           "  --lengths L,...      prompt lengths in tokens (default 1024,2048,4096)\n"
           "  --depths D,...       where the number is, 0 (start) to 1 (end) (default passkey 0.1,0.3,0.5,\n"
           "                       0.7,0.9; niah 0,0.25,0.5,0.75,1)\n"
           "  --trials N           trials per length, depth, method and rule (default 1)\n"
           "  --rope-scaling M,... RoPE methods: model (the file's), none, linear, ntk, dynamic, yarn,\n"
           "                       llama3, longrope (default model)\n"
           "  --rope-scale S       their factor (default: the length over the trained context, at least 1)\n"
           "  --attn A,...         attention rules: full, s2, sink, window (default full); --group G\n"
           "                       --sinks S --window W as for summarize\n"
           "  --haystack F         niah: the text (default $LONGSEQ_HOME/data/kjv.txt)\n"
           "  --seed S             the keys and haystack offsets (default 19)\n"
           "  --out F              JSONL, one object per trial\n"
           "  --np N --launcher CMD   the worker group (default 1 rank, mpirun)\n"
           "  --server HOST:PORT --token-file F   run the trials on that service instead\n"
           PROGRESS_HELP CLI_ENGINE_HELP);
}

static bool parse_lengths(const char *cmd, char *arg, eval_cfg *e) {
    char *parts[32];
    e->n_lengths = split_list(arg, parts, 32);
    for (int i = 0; i < e->n_lengths; i++)
        if (!cli_parse_int(cmd, "--lengths", parts[i], 64, 1 << 24, &e->lengths[i])) return false;
    return e->n_lengths > 0 || (cli_usage_error(cmd, "--lengths needs at least one length"), false);
}

static bool parse_depths(const char *cmd, char *arg, eval_cfg *e) {
    char *parts[32];
    e->n_depths = split_list(arg, parts, 32);
    for (int i = 0; i < e->n_depths; i++)
        if (!cli_parse_double(cmd, "--depths", parts[i], &e->depths[i]) || e->depths[i] < 0 || e->depths[i] > 1)
            return cli_usage_error(cmd, "--depths are from 0 to 1, not %s", parts[i]), false;
    return e->n_depths > 0 || (cli_usage_error(cmd, "--depths needs at least one depth"), false);
}

static int eval_trials(client *c, const char *addr, const eval_cfg *e, const Longseq__Settings *base, const cli_model *m,
                       int64_t trained, const ls_buf *hay, FILE *out, double every) {
    int n = e->n_lengths * e->n_depths * e->trials * e->n_methods * e->n_attns, k = 0, status = 0;
    eval_trial *tr = ls_calloc((size_t)n, sizeof *tr);
    uint64_t rng = e->seed;
    for (int mi = 0; mi < e->n_methods; mi++)
        for (int ai = 0; ai < e->n_attns; ai++)
            for (int li = 0; li < e->n_lengths; li++)
                for (int di = 0; di < e->n_depths; di++)
                    for (int t = 0; t < e->trials; t++) tr[k++] = (eval_trial){.li = li, .di = di, .mi = mi, .ai = ai, .t = t};
    ls_status rc = LS_OK;
    for (int i = 0; rc == LS_OK && i < n; i++) rc = eval_submit(c, e, base, m, hay, trained, &rng, &tr[i]);
    for (int i = 0; rc == LS_OK && i < n; i++) {
        rc = eval_follow(c, addr, e, &tr[i], every);
        if (rc == LS_OK) eval_record(out, e, &tr[i]);
    }
    if (rc == LS_OK) eval_tables(e, tr, n);
    else status = cli_fail();
    for (int i = 0; i < n; i++) ls_free(tr[i].id), ls_free(tr[i].answer), ls_free(tr[i].error);
    ls_free(tr);
    return status;
}

int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {{"lengths", required_argument, 0, 'l'}, {"depths", required_argument, 0, 'd'},
                                         {"trials", required_argument, 0, 't'}, {"rope-scaling", required_argument, 0, 'r'},
                                         {"rope-scale", required_argument, 0, 'f'}, {"attn", required_argument, 0, 'a'},
                                         {"haystack", required_argument, 0, 'y'}, {"seed", required_argument, 0, 'e'},
                                         {"out", required_argument, 0, 'o'}, {"np", required_argument, 0, 'N'},
                                         {"launcher", required_argument, 0, 'L'}, CLIENT_OPTIONS, PROGRESS_OPTION,
                                         {"help", no_argument, 0, 'h'}, {"verbose", no_argument, 0, 'v'},
                                         {"group", required_argument, 0, JOB_OPT + 5}, {"sinks", required_argument, 0, JOB_OPT + 6},
                                         {"window", required_argument, 0, JOB_OPT + 7},
                                         {"yarn-orig-ctx", required_argument, 0, JOB_OPT + 11}, CLI_ENGINE_OPTIONS, {0, 0, 0, 0}};
    if (argc < 2 || (strcmp(argv[1], "passkey") && strcmp(argv[1], "niah"))) {
        if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) return eval_help(), 0;
        return cli_usage_error("eval", "give the test: passkey or niah");
    }
    static char def_lengths[] = "1024,2048,4096", def_pk[] = "0.1,0.3,0.5,0.7,0.9", def_niah[] = "0,0.25,0.5,0.75,1";
    static char model_m[] = "model", full[] = "full";
    eval_cfg e = {.niah = !strcmp(argv[1], "niah"), .trials = 1, .seed = 19, .methods = {model_m}, .n_methods = 1,
                  .attns = {full}, .n_attns = 1};
    inproc p = {.o = ls_server_opts_default(), .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    Longseq__Settings base = LONGSEQ__SETTINGS__INIT;
    cli_engine_args eng = cli_engine_args_default();
    const char *out_path = NULL, *addr = NULL, *tf = NULL, *hay_path = NULL;
    char **wargs = ls_calloc((size_t)argc * 2 + 1, sizeof *wargs);
    int c, nw = 0, status = 0;
    int64_t v;
    double every = PROGRESS_DEFAULT_S;
    bool lengths = false, depths = false;
    p.o.quiet = true;
    optind = 2;
    while (status == 0 && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c >= JOB_OPT) status = job_option("eval", c, optarg, &base);
        else if (c >= CLI_ENGINE_OPT) {
            status = cli_engine_option("eval", c, optarg, &eng);
            cli_engine_option_keep(opts, c, optarg, wargs, &nw);
        } else if (c == 'l') status = parse_lengths("eval", optarg, &e) ? (lengths = true, 0) : 2;
        else if (c == 'd') status = parse_depths("eval", optarg, &e) ? (depths = true, 0) : 2;
        else if (c == 't') status = cli_parse_int("eval", "--trials", optarg, 1, 1000, &v) ? (e.trials = (int)v, 0) : 2;
        else if (c == 'r') e.n_methods = split_list(optarg, e.methods, 8);
        else if (c == 'a') e.n_attns = split_list(optarg, e.attns, 8);
        else if (c == 'f') status = cli_parse_setting("eval", LS_SET_ROPE_SCALE, optarg, &e.scale) ? 0 : 2;
        else if (c == 'y') hay_path = optarg;
        else if (c == 'e') status = cli_parse_int("eval", "--seed", optarg, 0, INT64_MAX, &v) ? (e.seed = (uint64_t)v, 0) : 2;
        else if (c == 'o') out_path = optarg;
        else if (c == 'N') status = cli_parse_int("eval", "--np", optarg, 1, 4096, &v) ? (p.o.np = (int)v, 0) : 2;
        else if (c == 'L') p.o.launcher = optarg;
        else if (c == 'A') addr = optarg;
        else if (c == 'K') tf = optarg;
        else if (c == 'P') status = progress_option("eval", optarg, &every) ? 0 : 2;
        else if (c == 'v') p.o.quiet = false, cli_verbose = true;
        else if (c == 'h') eval_help(), exit(0);
        else status = cli_usage_error("eval", "unknown option");
    }
    if (status == 0 && optind < argc) status = cli_usage_error("eval", "unexpected argument \"%s\"", argv[optind]);
    if (status == 0 && (!e.n_methods || !e.n_attns)) status = cli_usage_error("eval", "--rope-scaling and --attn need a value");
    if (status == 0 && !lengths) parse_lengths("eval", def_lengths, &e);
    if (status == 0 && !depths) parse_depths("eval", e.niah ? def_niah : def_pk, &e);
    cli_model m = {0};
    ls_buf hay = {0};
    int64_t trained = 0;
    FILE *out = NULL;
    if (status == 0) { // the tokenizer sizes the prompts; the trained context sets the default factor
        ls_load_opts lo = cli_load_opts(&eng);
        ls_model_config cfg;
        if (cli_model_open(eng.model, &lo, &m) != LS_OK || ls_model_config_load(m.gguf, &cfg) != LS_OK) status = cli_fail();
        else trained = cfg.n_ctx_train, ls_model_config_free(&cfg);
    }
    char kjv[4200];
    snprintf(kjv, sizeof kjv, "%s/data/kjv.txt", ls_home_dir());
    if (status == 0 && e.niah && ls_file_read_all(hay_path ? hay_path : kjv, (size_t)1 << 30, &hay) != LS_OK) status = cli_fail();
    if (status == 0 && e.niah && hay.len < 1024)
        status = 1, fprintf(stderr, "longseq eval: the haystack %s has %zu bytes; it needs at least 1024\n", hay_path ? hay_path : kjv, hay.len);
    if (status == 0 && out_path && !(out = fopen(out_path, "w")))
        status = 1, fprintf(stderr, "longseq eval: cannot write %s\n", out_path);
    client cl = {.fd = -1};
    char where[64];
    if (status == 0 && addr) { // the trials on a running service
        if (client_open(addr, tf, &cl) != LS_OK) status = cli_fail();
        snprintf(where, sizeof where, "%s", addr);
    } else if (status == 0) {
        status = inproc_start(&p, "eval", NULL, &eng, wargs, nw);
        snprintf(where, sizeof where, "127.0.0.1:%d", p.port);
        cl = (client){.fd = -1, .token = ls_strndup(p.token, strlen(p.token)), .local = true};
        if (status == 0 && ls_net_connect(where, 5000, &cl.fd) != LS_OK) status = cli_fail();
    }
    if (status == 0) status = eval_trials(&cl, where, &e, &base, &m, trained, &hay, out, every);
    client_close(&cl);
    inproc_stop(&p, false);
    if (out) fclose(out);
    ls_buf_free(&hay);
    cli_model_close(&m);
    for (int i = 0; i < nw; i++) ls_free(wargs[i]);
    ls_free(wargs);
    return status;
}
