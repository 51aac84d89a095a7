// serve.c — a worker group that serves a coordinator (ls_worker_serve.h; the command is
// `longseq worker --connect`, cli/cmd_worker.c). Every rank loads the model once; the leader
// (rank 0) connects back, says hello, and waits for RunSequence messages, which it broadcasts
// to the group (an empty command every second keeps idle ranks' waits short). While a job
// runs the leader streams prefill progress and text back and watches its connection for a
// cancel, which reaches the other ranks at the next layer (ls_sp_opts.checkpoints) or token.
// Events carry the KV cache pools' figures: the leader's own in progress, the group's sum (four
// more values in the end-of-job reduction the group makes anyway) when a job ends.
// A failure of the group itself (a rank gone, a timeout) ends the process, and the
// coordinator starts a new group. What a job's settings mean (rule, RoPE, sampling, defaults)
// is proto/ls_settings.h's. Tests: tests/oracle/test_service.py (the KV figures: test_http.py).
#include "ls_worker_serve.h"
#include "ls_settings.h"
#include "ls_sp_tasks.h"
#include "ls_wire.h"

#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { CMD_NOOP, CMD_RUN, CMD_QUIT };

typedef struct wserve {
    ls_comm_t *comm;
    int fd;                   // the leader's connection (-1 elsewhere)
    const char *token;        // the workers' credential (the leader's)
    const ls_worker_serve_opts *o;
    ls_engine_t *e;
    ls_rope_override rope;    // what the loaded engine runs with
    const Longseq__RunSequence *run;
    double t0, last_progress;
    bool cancelled, lost;     // a client cancelled / the coordinator went away
    ls_buf text;              // the leader's streamed text, sanitized (reused for every piece)
} wserve;

static bool leader(const wserve *w) { return ls_comm_rank(w->comm) == 0; }

static ls_status send_event(wserve *w, Longseq__WorkerEvent *ev) {
    Longseq__Request q = LONGSEQ__REQUEST__INIT;
    q.token = (char *)w->token;
    q.method_case = LONGSEQ__REQUEST__METHOD_WORKER_EVENT;
    q.worker_event = ev;
    return ls_wire_send(w->fd, &q.base);
}

// The leader reads what the coordinator sent meanwhile (a cancel) without waiting.
static void poll_coordinator(wserve *w) {
    struct pollfd pf = {w->fd, POLLIN, 0};
    ls_buf body = {0};
    while (!w->lost && poll(&pf, 1, 0) > 0) {
        Longseq__Reply *r;
        if (ls_wire_recv(w->fd, LS_FRAME_MAX_DEFAULT, 10000, &body) != LS_OK ||
            ls_wire_unpack_reply((const uint8_t *)body.data, body.len, &r) != LS_OK) {
            ls_err_clear();
            w->lost = w->cancelled = true;
            break;
        }
        if (r->body_case == LONGSEQ__REPLY__BODY_CANCEL_RUN && r->cancel_run->job_id &&
            !strcmp(r->cancel_run->job_id, w->run->job_id))
            w->cancelled = true;
        longseq__reply__free_unpacked(r, NULL);
    }
    ls_buf_free(&body);
}

static ls_status stop_if_cancelled(wserve *w) {
    poll_coordinator(w);
    if (w->lost) return LS_ERR(LS_ERR_CANCELLED, "the coordinator closed the connection");
    return w->cancelled ? LS_ERR(LS_ERR_CANCELLED, "cancelled by a client") : LS_OK;
}

// This rank's KV pool in bytes: in use, allocated, budget (0: none); zeros without an engine.
static void kv_figures(const wserve *w, double out[3]) {
    ls_kv_usage u = w->e ? ls_engine_kv_usage(w->e) : (ls_kv_usage){0};
    out[0] = (double)u.in_use, out[1] = (double)u.allocated, out[2] = (double)u.budget;
}

// fig: bytes in use, allocated, budget over `ranks` ranks; unbounded: how many of them have no budget.
static Longseq__KvUsage kv_message(const double fig[3], double unbounded, uint32_t ranks) {
    Longseq__KvUsage k = LONGSEQ__KV_USAGE__INIT;
    k.bytes_in_use = (uint64_t)fig[0], k.bytes_allocated = (uint64_t)fig[1];
    k.bytes_budget = unbounded > 0 ? 0 : (uint64_t)fig[2]; // one rank without a budget: the group has none
    k.ranks = ranks;
    return k;
}

static ls_status on_progress(void *ctx, int64_t done, int64_t total) {
    wserve *w = ctx;
    double now = ls_time_ms();
    if (done >= total || now - w->last_progress > 250) {
        w->last_progress = now;
        Longseq__WorkerEvent ev = LONGSEQ__WORKER_EVENT__INIT;
        ev.job_id = w->run->job_id;
        ev.kind = LONGSEQ__WORKER_EVENT__KIND__PROGRESS;
        ev.fraction = total > 0 ? (double)done / (double)total : 1.0;
        ev.tok_per_s = now > w->t0 ? (double)done / ((now - w->t0) / 1e3) : 0;
        double fig[3];
        kv_figures(w, fig);
        Longseq__KvUsage kv = kv_message(fig, fig[2] == 0, 1);
        ev.kv = &kv;
        if (send_event(w, &ev) != LS_OK) {
            ls_err_clear();
            w->lost = true;
        }
    }
    return stop_if_cancelled(w);
}

static ls_status on_text(void *ctx, const char *text, size_t len) {
    wserve *w = ctx;
    ls_buf_clear(&w->text);
    ls_utf8_sanitize(text, len, &w->text);
    Longseq__WorkerEvent ev = LONGSEQ__WORKER_EVENT__INIT;
    ev.job_id = w->run->job_id;
    ev.kind = LONGSEQ__WORKER_EVENT__KIND__TEXT;
    ev.text = w->text.data ? w->text.data : "";
    if (send_event(w, &ev) != LS_OK) ls_err_clear(), w->lost = true;
    return stop_if_cancelled(w);
}

// The engine with the job's RoPE settings (loaded again only when they change).
static ls_status engine_for(wserve *w, const Longseq__Settings *s) {
    ls_rope_override o;
    ls_settings_rope(s, &w->o->engine.rope, &o);
    if (w->e && !memcmp(&o, &w->rope, sizeof o)) return LS_OK;
    ls_engine_free(w->e);
    w->e = NULL;
    ls_engine_opts eo = w->o->engine;
    eo.rope = o;
    w->rope = o;
    return ls_engine_load(w->o->model ? w->o->model : ls_default_model_path(), &eo, &w->e);
}

static void describe(wserve *w, const ls_attn_rule *rule, Longseq__JobResult *r, char *attn, char *rope) {
    ls_rule_describe(rule, attn, 64);
    ls_rope_describe(&ls_engine_config(w->e)->rope, rope, 128);
    r->attention = attn;
    r->rope = rope;
    r->ranks = (uint32_t)ls_comm_size(w->comm);
}

// Runs the job on every rank; the leader fills the result.
static ls_status run_job(wserve *w, const Longseq__RunSequence *run, Longseq__JobResult *r, ls_gen_result *gen,
                         ls_buf *text, char *attn, char *rope) {
    const Longseq__Settings *s = run->settings;
    static const Longseq__Settings none = LONGSEQ__SETTINGS__INIT;
    if (!s) s = &none;
    LS_CHECK(ls_settings_check(s));
    LS_CHECK(engine_for(w, s));
    int64_t n = (int64_t)run->n_tokens;
    ls_attn_rule rule;
    if (s->task == LONGSEQ__TASK__PERPLEXITY) {
        ls_ppl_opts po = {.ctx = ls_settings_ppl_ctx(s), .max_chunks = s->max_chunks, .checkpoints = true};
        if (leader(w)) po.on_progress = on_progress, po.progress_ctx = w;
        LS_CHECK(ls_settings_rule(s, po.ctx, &po.rule));
        ls_ppl_result pr;
        LS_CHECK(ls_sp_perplexity(w->e, w->comm, run->tokens, n, &po, &pr));
        r->ppl = pr.ppl, r->ppl_stderr = pr.ppl_stderr, r->prefill_ms = pr.ms, r->tokens = (uint64_t)n;
        rule = po.rule;
    } else {
        ls_gen_opts go = {.max_tokens = ls_settings_max_tokens(s), .sampling = ls_settings_sampling(s), .checkpoints = true,
                          .stop = (const char *const *)s->stop, .n_stop = s->n_stop};
        if (leader(w)) go.on_prefill = on_progress, go.progress_ctx = w;
        LS_CHECK(ls_settings_rule(s, n + go.max_tokens, &go.rule));
        LS_CHECK(ls_sp_generate(w->e, w->comm, run->tokens, n, &go, leader(w) ? on_text : NULL, w, gen));
        ls_utf8_sanitize(gen->text.data ? gen->text.data : "", gen->text.len, text);
        r->text = text->data ? text->data : "";
        r->generated = gen->tokens.len;
        r->tokens = (uint64_t)gen->prompt_tokens;
        r->prefill_ms = gen->prefill_ms, r->decode_ms = gen->decode_ms;
        r->stop = (char *)ls_stop_reason_name(gen->stop);
        rule = go.rule;
    }
    r->task = s->task;
    describe(w, &rule, r, attn, rope);
    return LS_OK;
}

// One job on every rank, then the leader's report. Returns non-OK only when the group itself
// broke (then the process ends and the coordinator starts another group).
static ls_status job(wserve *w, const uint8_t *msg, size_t len) {
    Longseq__RunSequence *run = longseq__run_sequence__unpack(NULL, len, msg);
    if (!run) return LS_ERR(LS_ERR_FORMAT, "rank %d: the job message does not parse", ls_comm_rank(w->comm));
    w->run = run;
    w->t0 = w->last_progress = ls_time_ms();
    w->cancelled = false;
    Longseq__JobResult r = LONGSEQ__JOB_RESULT__INIT;
    ls_gen_result gen = {0};
    char attn[64] = "", rope[128] = "";
    ls_buf text = {0};
    ls_status rc = run_job(w, run, &r, &gen, &text, attn, rope);
    ls_buf why = {0};
    ls_buf_append(&why, "", 0);
    if (rc != LS_OK) ls_utf8_sanitize(ls_err_msg(), strlen(ls_err_msg()), &why);
    ls_err_clear();
    // any rank failed / cancelled / broke; the KV pools' bytes in use, allocated, budget; ranks without a budget
    double flags[7] = {rc != LS_OK, rc == LS_ERR_CANCELLED, rc == LS_ERR_DEVICE};
    kv_figures(w, flags + 3);
    flags[6] = flags[5] == 0;
    ls_status grc = ls_comm_allreduce_sum(w->comm, flags, 7);
    if (grc == LS_OK && flags[2] > 0) grc = LS_ERR(LS_ERR_DEVICE, "the group broke during job %s: %s", run->job_id, why.data);
    if (grc == LS_OK && leader(w)) {
        Longseq__WorkerEvent ev = LONGSEQ__WORKER_EVENT__INIT;
        ev.job_id = run->job_id;
        ev.result = &r;
        Longseq__KvUsage kv = kv_message(flags + 3, flags[6], (uint32_t)ls_comm_size(w->comm));
        ev.kv = &kv;
        if (flags[1] > 0) ev.kind = LONGSEQ__WORKER_EVENT__KIND__CANCELLED;
        else if (flags[0] > 0) {
            ev.kind = LONGSEQ__WORKER_EVENT__KIND__FAILED;
            ev.error = why.len ? why.data : "another rank of the group failed (its message is in the coordinator's log)";
        } else ev.kind = LONGSEQ__WORKER_EVENT__KIND__DONE;
        if (!w->lost && send_event(w, &ev) != LS_OK) ls_err_clear(), w->lost = true;
    }
    ls_gen_result_free(&gen);
    ls_buf_free(&text);
    ls_buf_free(&why);
    longseq__run_sequence__free_unpacked(run, NULL);
    w->run = NULL;
    return grc;
}

// The leader: the next command from the coordinator (NOOP after a second of silence).
static int next_command(wserve *w, ls_buf *msg) {
    if (w->lost) return CMD_QUIT;
    struct pollfd pf = {w->fd, POLLIN, 0};
    if (poll(&pf, 1, 1000) <= 0) return CMD_NOOP;
    Longseq__Reply *r;
    if (ls_wire_recv(w->fd, LS_FRAME_MAX_DEFAULT, 30000, msg) != LS_OK ||
        ls_wire_unpack_reply((const uint8_t *)msg->data, msg->len, &r) != LS_OK) {
        LS_WARN("the coordinator went away (%s): the worker group stops", ls_err_msg());
        ls_err_clear();
        return CMD_QUIT;
    }
    int cmd = CMD_NOOP;
    if (r->body_case == LONGSEQ__REPLY__BODY_RUN) {
        msg->len = longseq__run_sequence__get_packed_size(r->run);
        if (msg->cap < msg->len + 1) msg->data = ls_realloc(msg->data, msg->cap = msg->len + 1);
        longseq__run_sequence__pack(r->run, (uint8_t *)msg->data);
        cmd = CMD_RUN;
    }
    longseq__reply__free_unpacked(r, NULL);
    return cmd;
}

static ls_status hello(wserve *w, const char *addr) {
    LS_CHECK(ls_net_connect(addr, 30000, &w->fd));
    Longseq__WorkerHello h = LONGSEQ__WORKER_HELLO__INIT;
    h.ranks = (uint32_t)ls_comm_size(w->comm);
    h.model = (char *)ls_engine_config(w->e)->name;
    h.pid = (uint32_t)getpid();
    Longseq__Request q = LONGSEQ__REQUEST__INIT;
    q.token = (char *)w->token;
    q.method_case = LONGSEQ__REQUEST__METHOD_WORKER_HELLO;
    q.worker_hello = &h;
    LS_CHECK(ls_wire_send(w->fd, &q.base));
    ls_buf body = {0};
    Longseq__Reply *r = NULL;
    ls_status rc = ls_wire_recv(w->fd, 1 << 20, 60000, &body);
    if (rc == LS_OK) rc = ls_wire_unpack_reply((const uint8_t *)body.data, body.len, &r);
    if (rc == LS_OK && (r->body_case != LONGSEQ__REPLY__BODY_STATUS || r->status->code != LONGSEQ__CODE__OK))
        rc = LS_ERR(LS_ERR_INVALID, "the coordinator at %s refused the worker group: %s", addr,
                    r->body_case == LONGSEQ__REPLY__BODY_STATUS ? r->status->message : "unexpected reply");
    if (r) longseq__reply__free_unpacked(r, NULL);
    ls_buf_free(&body);
    return rc;
}

// Whether any rank failed (a collective; the local status is returned first).
static ls_status group_status(ls_comm_t *comm, ls_status rc) {
    double failed = rc != LS_OK;
    ls_status crc = ls_comm_allreduce_sum(comm, &failed, 1);
    if (rc != LS_OK) return rc;
    if (crc != LS_OK) return crc;
    return failed > 0 ? LS_ERR(LS_ERR_DEVICE, "another rank of the group failed (its message is above)") : LS_OK;
}

// Every rank loads the model (the leader says once which settings override the file's).
static ls_status load(wserve *w) {
    ls_status rc = ls_engine_load(w->o->model ? w->o->model : ls_default_model_path(), &w->o->engine, &w->e);
    const char *notes = rc == LS_OK ? ls_engine_notes(w->e) : NULL;
    if (leader(w) && notes && *notes) fputs(notes, stderr);
    return rc;
}

static ls_status serve(wserve *w) {
    w->rope = w->o->engine.rope;
    ls_status rc = load(w);
    if (rc == LS_OK && leader(w)) rc = hello(w, w->o->addr);
    LS_CHECK(group_status(w->comm, rc));
    ls_buf msg = {0};
    for (;;) {
        int64_t head[2] = {CMD_NOOP, 0};
        if (leader(w)) {
            head[0] = next_command(w, &msg);
            head[1] = (int64_t)msg.len;
        }
        LS_CHECK(ls_comm_bcast(w->comm, head, sizeof head, 0));
        if (head[0] == CMD_QUIT) break;
        if (head[0] != CMD_RUN) continue;
        if (head[1] < 0 || head[1] > (int64_t)LS_FRAME_MAX_DEFAULT) return LS_ERR(LS_ERR_RANGE, "a job of %lld bytes", (long long)head[1]);
        if (msg.cap < (size_t)head[1] + 1) msg.data = ls_realloc(msg.data, msg.cap = (size_t)head[1] + 1);
        LS_CHECK(ls_comm_bcast(w->comm, msg.data, (size_t)head[1], 0));
        LS_CHECK(job(w, (const uint8_t *)msg.data, (size_t)head[1]));
    }
    ls_buf_free(&msg);
    return LS_OK;
}

ls_status ls_worker_serve(ls_comm_t *comm, const ls_worker_serve_opts *o) {
    wserve w = {.comm = comm, .fd = -1, .o = o, .token = o->token};
    if (leader(&w) && (!o->token || !*o->token)) return LS_ERR(LS_ERR_INVALID, "the leader needs the workers' credential");
    ls_status rc = serve(&w);
    if (w.fd >= 0) close(w.fd);
    ls_buf_free(&w.text);
    ls_engine_free(w.e);
    return rc;
}
