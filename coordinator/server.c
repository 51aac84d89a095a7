// server.c — `longseq serve`: one thread, one poll() loop. Connections carry frames in both
// directions; a call is one Request answered by zero or more Replies and a final Status. The
// worker group is a child process (the launcher) in its own process group whose leader
// connects back and says hello; it runs one job at a time and reports progress, text and the
// result as WorkerEvents. Every job state change is committed to the store before anyone is
// told. A long-document strategy's parent job runs its children through the same queue
// (strategy.c). Tests: tests/oracle/test_service.py, tests/oracle/test_strategy.py.
#include "server_impl.h"
#include "ls_launch.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define OUT_CAP ((size_t)64 << 20) // a client that reads this far behind is dropped
// Bytes read from a connection before its token has been checked: the frame header and a token
// field of LS_TOKEN_MAX bytes fit, so a stranger never costs more (docs/protocol.md, "The token").
#define PREAUTH_CAP ((size_t)8192)

typedef struct conn {
    int fd;
    bool worker, closing;    // closing: flush what is queued, then close
    bool authed;             // a frame of its has shown a valid token
    bool spare;              // holds the slot kept for the worker group's leader: worker_hello only
    ls_buf in, out;
    double since_ms;         // when it connected
    double last_ms;          // the end of its last call: idleness counts from there
    double frame_ms;         // when the first byte of the frame in `in` came (0: none)
    size_t want;             // that frame's bytes, header included, reserved from --max-buffered (0: none yet)
    char watch[40];          // the job this connection watches ("" none)
    ls_prep_task *prep;      // its Submit's documents being prepared (NULL none): later calls wait
    int64_t watch_seq;       // that job's place in the FIFO order (ls_job.seq)
    int64_t queue_pos;       // the queue position its watcher was last told (-1: not queued)
} conn;

typedef enum group_state { G_DOWN, G_STARTING, G_IDLE, G_BUSY } group_state;

typedef struct server {
    const ls_server_opts *o;
    ls_store_t *store;
    ls_prep *prep;
    ls_prep_pool *pool;      // prepares Submits' documents off this loop
    int lfd, port;
    conn **conns;
    size_t n_conns;
    size_t buffered;         // the frames being received, reserved (sum of conn.want)
    bool stopping;
    // the worker group
    group_state g;
    pid_t gpid;              // the launcher (0: none; external groups have none)
    conn *leader;
    double g_since, g_heard, relaunch_at;
    double leader_gone;      // when the leader's connection closed while its launcher ran (0: not)
    int launch_failures;
    char g_error[512];       // why the group last went down
    // the job it runs
    char run_id[40], run_name[256];
    int64_t run_attempts, run_tokens;
    ls_buf run_text;
    bool cancel_asked;
    const char *worker_token; // the workers' credential (o->worker_token or own_worker_token)
    char own_worker_token[65];
    double run_started;      // when the running job was accepted (its created time, ms since the epoch)
    bool run_texted;         // it has sent text (time to first token is measured once)
    ls_http *http;           // the HTTP front end (NULL: none)
    ls_metrics metrics;
    ls_strat_host strat;     // the long-document strategies' parents (strategy.c)
} server;

const double ls_hist_bounds[LS_HIST_BUCKETS] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 600};

void ls_hist_observe(ls_hist *h, double seconds) {
    int i = 0;
    while (i < LS_HIST_BUCKETS && seconds > ls_hist_bounds[i]) i++;
    h->counts[i]++;
    h->n++;
    h->sum += seconds;
}

static double unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int g_sigpipe[2] = {-1, -1};

void ls_server_stop(void) {
    if (g_sigpipe[1] >= 0) {
        char c = 'T';
        ssize_t k = write(g_sigpipe[1], &c, 1);
        (void)k;
    }
}

// From a prep pool thread: a Submit's documents are ready.
static void wake_loop(void) {
    char c = 'P';
    ssize_t k = write(g_sigpipe[1], &c, 1); // a full pipe wakes the loop anyway
    (void)k;
}

static void on_signal(int sig) {
    int e = errno;
    char c = sig == SIGCHLD ? 'C' : 'T';
    ssize_t k = write(g_sigpipe[1], &c, 1);
    (void)k;
    errno = e;
}

ls_server_opts ls_server_opts_default(void) {
    return (ls_server_opts){.listen = "127.0.0.1:7070", .http_max_body = (size_t)64 << 20, .http_max_header = 16384,
                            .http_timeout_s = 30, .http_max_conns = 1000, .rope = LS_ROPE_OVERRIDE_NONE, .np = 1, .launcher = "mpirun",
                            .max_frame = LS_FRAME_MAX_DEFAULT, .max_docs = 1024, .max_job_tokens = 1 << 20,
                            .max_conns = 1000, .idle_timeout_s = 300, .attempts = 3, .worker_timeout_s = 600,
                            .start_timeout_s = 300, .frame_timeout_s = 300, .auth_timeout_s = 10,
                            .max_buffered = (size_t)512 << 20};
}

static void say(server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(server *s, const char *fmt, ...) {
    if (s->o->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[longseq serve] ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

// --- replies ----------------------------------------------------------------------------------

static void send_reply(conn *c, Longseq__Reply *r) {
    if (c->closing && !c->out.len) return;
    ls_frame_append(&c->out, &r->base);
}

static void send_status(conn *c, Longseq__Code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void send_status(conn *c, Longseq__Code code, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    Longseq__Status st = LONGSEQ__STATUS__INIT;
    st.code = code;
    st.message = msg;
    Longseq__Reply r = LONGSEQ__REPLY__INIT;
    r.body_case = LONGSEQ__REPLY__BODY_STATUS;
    r.status = &st;
    send_reply(c, &r);
}

// The status code for a failed call's pending error (which is then cleared).
static void send_error(conn *c, const char *prefix) {
    Longseq__Code code = LONGSEQ__CODE__INTERNAL;
    switch (ls_err_code()) {
    case LS_ERR_INVALID: case LS_ERR_FORMAT: case LS_ERR_UNSUPPORTED: code = LONGSEQ__CODE__INVALID_ARGUMENT; break;
    case LS_ERR_RANGE: code = LONGSEQ__CODE__RESOURCE_EXHAUSTED; break;
    case LS_ERR_NOT_FOUND: code = LONGSEQ__CODE__NOT_FOUND; break;
    default: break;
    }
    send_status(c, code, "%s%s", prefix, ls_err_msg());
    ls_err_clear();
}

// --- jobs -------------------------------------------------------------------------------------

// Replaces a string field of an unpacked message (unset ones share protobuf-c's constant "").
static void set_str(char **field, const char *v) {
    if (*field && *field != protobuf_c_empty_string) free(*field);
    *field = strdup(v ? v : "");
}

static int64_t queue_ahead(server *s, const ls_job *j) {
    int64_t n = 0;
    if (j->state == LS_JOB_QUEUED && ls_store_ahead(s->store, j->seq, &n) != LS_OK) ls_err_clear();
    return n;
}

// What a job's stored settings say about it: its task and, until the worker group has described
// it, its attention rule by name and (running) the group's ranks. The worker's figures of a
// finished job are kept.
static void from_settings(server *s, const ls_job *j, Longseq__JobResult *r) {
    Longseq__Settings *set = j->settings_len ? longseq__settings__unpack(NULL, j->settings_len, j->settings) : NULL;
    if (!set) return;
    r->task = set->task;
    if (set->strategy && *set->strategy && !j->is_parent && !j->parent[0] && (!r->strategy || !*r->strategy)) {
        set_str(&r->strategy, "direct"); // a strategy that chose one job of its own
        r->chunks = 1, r->calls = j->attempts > 0; // (a document refused at submit never ran)
    }
    if (!r->attention || !*r->attention) set_str(&r->attention, set->attention && *set->attention ? set->attention : "full");
    if (!r->ranks && j->state == LS_JOB_RUNNING) r->ranks = (uint32_t)s->o->np;
    longseq__settings__free_unpacked(set, NULL);
}

// The record of a job as Result and List return it (text from the stored result, or the text
// streamed so far for the running job). Free with free_result.
static Longseq__JobResult *job_result(server *s, const ls_job *j, bool with_text) {
    Longseq__JobResult *r = NULL;
    if (j->result && j->result_len) r = longseq__job_result__unpack(NULL, j->result_len, j->result);
    if (!r) {
        r = longseq__job_result__unpack(NULL, 0, (const uint8_t *)""); // an empty record, same allocator
        if (!r) return NULL;
    }
    // fields the store owns take precedence over what was packed
    set_str(&r->id, j->id);
    set_str(&r->name, j->name);
    set_str(&r->error, j->error);
    r->state = (Longseq__JobState)j->state;
    r->attempts = (uint32_t)j->attempts;
    r->created_unix_ms = j->created_ms;
    r->finished_unix_ms = j->finished_ms;
    r->queue_position = (uint64_t)queue_ahead(s, j);
    if (!r->tokens) r->tokens = (uint64_t)j->n_tokens; // the prompt with its chat template
    from_settings(s, j, r);
    set_str(&r->parent, j->parent);
    if (j->is_parent && !ls_job_state_final(j->state)) { // a parent in progress: its strategy, and its stage
        set_str(&r->strategy, j->tag);
        char stage[128] = "";
        if (with_text && ls_strat_step(&s->strat, j->id, true, stage, sizeof stage) != LS_OK) ls_err_clear();
        set_str(&r->stage, stage);
    }
    if (j->state == LS_JOB_RUNNING && !strcmp(j->id, s->run_id) && with_text)
        set_str(&r->text, s->run_text.len ? s->run_text.data : "");
    if (!with_text && r->text && *r->text) set_str(&r->text, "");
    return r;
}

static void free_result(Longseq__JobResult *r) {
    if (r) longseq__job_result__free_unpacked(r, NULL);
}

static void send_event(conn *c, Longseq__Event *e) {
    Longseq__Reply r = LONGSEQ__REPLY__INIT;
    r.body_case = LONGSEQ__REPLY__BODY_EVENT;
    r.event = e;
    send_reply(c, &r);
}

// The watchers of queued jobs whose place in the queue changed (a job ahead started or left, or
// one went back) get a QUEUED event with the new queue_position.
static void notify_queue(server *s) {
    for (size_t i = 0; i < s->n_conns; i++) {
        conn *c = s->conns[i];
        int64_t pos;
        if (!c->watch[0] || c->queue_pos < 0) continue;
        if (ls_store_ahead(s->store, c->watch_seq, &pos) != LS_OK) {
            ls_err_clear();
            continue;
        }
        if (pos == c->queue_pos) continue;
        Longseq__Event e = LONGSEQ__EVENT__INIT;
        e.job_id = c->watch;
        e.kind = LONGSEQ__EVENT__KIND__STATE;
        e.state = LONGSEQ__JOB_STATE__QUEUED;
        e.error = "";
        e.queue_position = (uint64_t)pos;
        send_event(c, &e);
        c->queue_pos = pos;
    }
}

// Tells the job's watchers its new state; a final state ends their streams. Then the watchers
// of the jobs behind it hear their new places (a finished job had left the queue already).
static void notify_state(server *s, const char *id, ls_job_state st, int64_t attempt, const char *error) {
    int64_t pos = -1;
    ls_job j;
    if (st == LS_JOB_QUEUED && ls_store_get(s->store, id, &j) == LS_OK) { // a job back in the queue: its place
        pos = queue_ahead(s, &j);
        ls_job_free(&j);
    }
    ls_err_clear();
    ls_http_job_state(s->http, id, (int)st);
    for (size_t i = 0; i < s->n_conns; i++) {
        conn *c = s->conns[i];
        if (strcmp(c->watch, id)) continue;
        Longseq__Event e = LONGSEQ__EVENT__INIT;
        e.job_id = (char *)id;
        e.kind = LONGSEQ__EVENT__KIND__STATE;
        e.state = (Longseq__JobState)st;
        e.attempt = (uint32_t)attempt;
        e.error = (char *)(error ? error : "");
        e.queue_position = pos > 0 ? (uint64_t)pos : 0;
        c->queue_pos = st == LS_JOB_QUEUED ? pos : -1;
        send_event(c, &e);
        if (ls_job_state_final(st)) {
            send_status(c, LONGSEQ__CODE__OK, "job %s %s", id, ls_job_state_name(st));
            c->watch[0] = 0;
            c->last_ms = ls_time_ms(); // a watch is a call in progress: idleness starts when it ends
        }
    }
    if (st != LS_JOB_DONE) notify_queue(s);
}

// A state change: committed (with why, the job's error or note), logged (with why or note),
// then told to the watchers.
static void set_state(server *s, const char *id, const char *name, ls_job_state st, int64_t attempts, const char *why,
                      const char *note) {
    if (ls_store_set_state(s->store, id, st, attempts, why) != LS_OK) {
        say(s, "cannot record job %s %s: %s", id, ls_job_state_name(st), ls_err_msg());
        ls_err_clear();
    }
    const char *line = why && *why ? why : note;
    say(s, "job %s (%s) %s%s%s", id, name, ls_job_state_name(st), line && *line ? ": " : "", line ? line : "");
    notify_state(s, id, st, attempts, why);
}

// A cancelled running job keeps the text its watchers were sent: `r` (may be NULL) with the
// streamed text where the worker's result has none. `copy` is the storage for the result
// returned (a shallow copy: its other fields stay the worker's).
static Longseq__JobResult *with_streamed_text(server *s, Longseq__JobResult *r, Longseq__JobResult *copy) {
    if (!s->run_text.len || (r && r->text && *r->text)) return r;
    Longseq__JobResult init = LONGSEQ__JOB_RESULT__INIT;
    *copy = r ? *r : init;
    copy->text = s->run_text.data;
    return copy;
}

// A child of a strategy's parent ended: the parent takes its next step (strategy.c).
static void child_ended(server *s, const char *id) {
    ls_job j;
    if (ls_store_get(s->store, id, &j) != LS_OK) return ls_err_clear();
    if (j.parent[0] && ls_strat_step(&s->strat, j.parent, false, NULL, 0) != LS_OK) {
        say(s, "job %s: its next step failed: %s", j.parent, ls_err_msg());
        ls_err_clear();
    }
    ls_job_free(&j);
}

static void finish(server *s, const char *id, const char *name, int64_t attempts, ls_job_state st, Longseq__JobResult *r,
                   const char *why) {
    uint8_t *packed = NULL;
    size_t len = 0;
    if (r) {
        len = longseq__job_result__get_packed_size(r);
        packed = ls_malloc(len ? len : 1);
        longseq__job_result__pack(r, packed);
    }
    if (ls_store_finish(s->store, id, st, packed, len, why) != LS_OK) {
        say(s, "cannot record job %s %s: %s", id, ls_job_state_name(st), ls_err_msg());
        ls_err_clear();
    }
    ls_free(packed);
    if (r && st == LS_JOB_DONE && !strcmp(id, s->run_id)) { // the running job's figures
        ls_metrics *m = &s->metrics;
        m->prefill_tokens += r->tokens, m->decode_tokens += r->generated;
        m->prefill_s += r->prefill_ms / 1e3, m->decode_s += r->decode_ms / 1e3;
        m->last_prefill_tps = r->prefill_ms > 0 ? r->tokens / (r->prefill_ms / 1e3) : 0;
        m->last_decode_tps = r->decode_ms > 0 ? r->generated / (r->decode_ms / 1e3) : 0;
        ls_hist_observe(&m->latency, (unix_ms() - s->run_started) / 1e3);
    }
    if (r && st == LS_JOB_DONE)
        say(s, "job %s (%s) done: %llu tokens, prefill %.0f ms, %llu generated in %.0f ms", id, name,
            (unsigned long long)r->tokens, r->prefill_ms, (unsigned long long)r->generated, r->decode_ms);
    else say(s, "job %s (%s) %s%s%s", id, name, ls_job_state_name(st), why && *why ? ": " : "", why ? why : "");
    notify_state(s, id, st, attempts, why);
    child_ended(s, id);
}

// --- the worker group -------------------------------------------------------------------------

static void conn_close(conn *c) {
    c->closing = true;
    c->out.len = 0;
}

static void fail_queued(server *s);

// A start that failed: try again later (1, 2, 4 ... 32 s), or give up on the queue.
static void start_failed(server *s) {
    s->launch_failures++;
    s->relaunch_at = ls_time_ms() + 1000.0 * (1 << (s->launch_failures < 5 ? s->launch_failures : 5));
    if (s->o->max_launch_failures > 0 && s->launch_failures >= s->o->max_launch_failures) fail_queued(s);
}

// Starts the launcher: LAUNCHER -np N <longseq> worker --connect ADDR [engine options] in a
// process group of its own (so the whole group can be stopped at once), the workers'
// credential in the group's environment only (never on a command line, never in this
// process's environment: `summarize` runs the server on a thread).
static void launch(server *s) {
    char addr[300], cred[4200];
    snprintf(addr, sizeof addr, "%s:%d", s->o->advertise ? s->o->advertise : "127.0.0.1", s->port);
    snprintf(cred, sizeof cred, "LONGSEQ_WORKER_TOKEN=%s", s->worker_token);
    const char **args = ls_calloc(3 + (size_t)s->o->n_worker_args, sizeof *args);
    int k = 0;
    args[k++] = "worker", args[k++] = "--connect", args[k++] = addr;
    for (int i = 0; i < s->o->n_worker_args; i++) args[k++] = s->o->worker_args[i];
    const char *env[] = {cred, "LONGSEQ_TOKEN"}; // the clients' token stays out of the group
    ls_launch_opts lo = {.launcher = s->o->launcher, .np = s->o->np, .args = args, .n_args = k, .env = env,
                         .n_env = 2, .own_group = true, .hosts = s->o->hosts, .hostfile = s->o->hostfile};
    ls_status rc = ls_launch_group(&lo, &s->gpid);
    ls_free(args);
    if (rc != LS_OK) {
        s->gpid = 0;
        snprintf(s->g_error, sizeof s->g_error, "%s", ls_err_msg());
        ls_err_clear();
        say(s, "%s", s->g_error);
        start_failed(s);
        return;
    }
    s->g = G_STARTING;
    s->g_since = ls_time_ms();
    say(s, "worker group starting: %s -np %d (pid %d)", s->o->launcher, s->o->np, (int)s->gpid);
}

static void kill_group(server *s, int sig) {
    if (s->gpid > 0) kill(-s->gpid, sig);
}

// The queued jobs fail when the group cannot be started (max_launch_failures).
static void fail_queued(server *s) {
    ls_job j;
    bool found;
    while (ls_store_next_queued(s->store, &j, &found) == LS_OK && found) {
        char why[700];
        snprintf(why, sizeof why, "the worker group could not be started %d times: %s", s->launch_failures, s->g_error);
        finish(s, j.id, j.name, j.attempts, LS_JOB_FAILED, NULL, why);
        ls_job_free(&j);
    }
    ls_err_clear();
}

// The group is gone (its process exited, its leader hung up or stopped answering): the running
// job goes back to the queue, or fails when it has had all its attempts.
static void group_down(server *s, const char *why) {
    bool was_ready = s->g == G_IDLE || s->g == G_BUSY;
    if (was_ready) s->metrics.group_restarts++;
    s->metrics.kv_in_use = s->metrics.kv_allocated = s->metrics.kv_budget = s->metrics.kv_ranks = 0; // its pools are gone
    snprintf(s->g_error, sizeof s->g_error, "%s", why);
    say(s, "worker group down: %s", why);
    if (s->g == G_BUSY) {
        char msg[700];
        if (s->cancel_asked) {
            Longseq__JobResult copy;
            finish(s, s->run_id, s->run_name, s->run_attempts, LS_JOB_CANCELLED, with_streamed_text(s, NULL, &copy),
                   "cancelled (the worker group went down)");
        } else if (s->run_attempts >= s->o->attempts) {
            snprintf(msg, sizeof msg, "the worker group failed on each of %lld attempts; the last time: %s",
                     (long long)s->run_attempts, why);
            finish(s, s->run_id, s->run_name, s->run_attempts, LS_JOB_FAILED, NULL, msg);
        } else {
            snprintf(msg, sizeof msg, "attempt %lld failed (%s); queued again", (long long)s->run_attempts, why);
            s->metrics.retries++;
            set_state(s, s->run_id, s->run_name, LS_JOB_QUEUED, s->run_attempts, msg, NULL);
        }
        s->run_id[0] = 0;
    }
    if (s->leader) conn_close(s->leader), s->leader = NULL;
    s->leader_gone = 0;
    s->g = G_DOWN;
    if (was_ready) s->launch_failures = 0, s->relaunch_at = ls_time_ms();
    else start_failed(s);
}

static void reap(server *s) {
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
        if (p != s->gpid) continue;
        s->gpid = 0;
        char why[200];
        if (WIFEXITED(st) && WEXITSTATUS(st) > 128 && WEXITSTATUS(st) < 128 + NSIG) // how Open MPI passes on a rank's signal
            snprintf(why, sizeof why, "the launcher exited with status %d, as Open MPI does when a rank is ended by signal %d (%s)",
                     WEXITSTATUS(st), WEXITSTATUS(st) - 128, strsignal(WEXITSTATUS(st) - 128));
        else if (WIFEXITED(st)) snprintf(why, sizeof why, "the launcher exited with status %d", WEXITSTATUS(st));
        else snprintf(why, sizeof why, "the launcher was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
        kill(-p, SIGKILL); // anything of the group still alive
        if (s->g != G_DOWN) group_down(s, why);
    }
}

// Hands the oldest queued job to an idle group.
static void schedule(server *s) {
    if (s->stopping) return;
    if (s->g == G_DOWN && !s->o->external_workers && !s->gpid && ls_time_ms() >= s->relaunch_at) launch(s);
    if (s->g != G_IDLE || !s->leader) return;
    ls_job j;
    bool found;
    if (ls_store_next_queued(s->store, &j, &found) != LS_OK) {
        say(s, "cannot read the queue: %s", ls_err_msg());
        ls_err_clear();
        return;
    }
    if (!found) return;
    snprintf(s->run_id, sizeof s->run_id, "%s", j.id);
    snprintf(s->run_name, sizeof s->run_name, "%s", j.name);
    s->run_attempts = j.attempts + 1;
    s->run_tokens = j.n_tokens;
    ls_buf_clear(&s->run_text); // no watcher of this job may see the previous job's text
    s->cancel_asked = false;
    s->run_started = (double)j.created_ms, s->run_texted = false;
    char note[64];
    snprintf(note, sizeof note, "attempt %lld, %lld tokens", (long long)s->run_attempts, (long long)j.n_tokens);
    set_state(s, j.id, j.name, LS_JOB_RUNNING, s->run_attempts, "", note);
    Longseq__Settings *set = longseq__settings__unpack(NULL, j.settings_len, j.settings);
    Longseq__RunSequence run = LONGSEQ__RUN_SEQUENCE__INIT;
    run.job_id = j.id;
    run.n_tokens = (size_t)j.n_tokens;
    run.tokens = j.tokens;
    run.settings = set;
    run.attempt = (uint32_t)s->run_attempts;
    Longseq__Reply r = LONGSEQ__REPLY__INIT;
    r.body_case = LONGSEQ__REPLY__BODY_RUN;
    r.run = &run;
    send_reply(s->leader, &r);
    if (set) longseq__settings__free_unpacked(set, NULL);
    ls_job_free(&j);
    s->g = G_BUSY;
    s->g_heard = ls_time_ms();
}

// --- client methods ---------------------------------------------------------------------------

// A Submit: the call's own checks here, then its documents go to the prep pool and the
// connection's later calls wait until submit_done answers this one.
static void do_submit(server *s, conn *c, Longseq__Request *req) {
    static const Longseq__Settings none = LONGSEQ__SETTINGS__INIT;
    const Longseq__SubmitRequest *q = req->submit;
    const Longseq__Settings *set = q->settings ? q->settings : &none;
    if (q->n_documents == 0) return send_status(c, LONGSEQ__CODE__INVALID_ARGUMENT, "submit: no documents");
    if (q->n_documents > (size_t)s->o->max_docs)
        return send_status(c, LONGSEQ__CODE__RESOURCE_EXHAUSTED, "submit: %zu documents in one call; the limit is %d",
                           q->n_documents, s->o->max_docs);
    if (ls_settings_check(set) != LS_OK || ls_prep_check_call(s->prep, set) != LS_OK) return send_error(c, "submit: ");
    ls_prep_task *t = ls_calloc(1, sizeof *t);
    t->req = req->submit;
    t->set = set;
    t->owner = c;
    req->submit = NULL; // the task owns the documents now (no copy of their text)
    c->prep = t;
    ls_prep_pool_add(s->pool, t);
}

// The jobs of a prepared Submit: queued, or failed with their documents' errors.
static ls_status make_jobs(const ls_prep_task *t, ls_job *jobs, uint8_t *packed, size_t packed_len) {
    for (size_t i = 0; i < t->req->n_documents; i++) {
        ls_prep_doc *d = &t->docs[i];
        LS_CHECK(ls_store_new_id(jobs[i].id));
        jobs[i].name = d->name, d->name = NULL;
        jobs[i].state = d->error ? LS_JOB_FAILED : LS_JOB_QUEUED;
        jobs[i].error = d->error, d->error = NULL;
        jobs[i].tokens = d->ids.data, d->ids.data = NULL;
        jobs[i].n_tokens = (int64_t)d->ids.len;
        jobs[i].settings = packed, jobs[i].settings_len = packed_len;
        ls_strat_job_of(&jobs[i], d, &t->req->documents[i]->text); // a strategy's parent keeps its document
    }
    return LS_OK;
}

// Commits a prepared Submit's jobs in one transaction, then answers: one id per document, and
// the refused ones' errors.
static void submit_done(server *s, conn *c, ls_prep_task *t) {
    size_t n = t->req->n_documents, n_failed = 0, packed_len = longseq__settings__get_packed_size(t->set);
    ls_job *jobs = ls_calloc(n, sizeof *jobs);
    uint8_t *packed = ls_malloc(packed_len ? packed_len : 1);
    longseq__settings__pack(t->set, packed);
    ls_status rc = make_jobs(t, jobs, packed, packed_len);
    if (rc == LS_OK) rc = ls_store_add(s->store, jobs, n); // nothing is acknowledged unless committed
    if (rc != LS_OK) {
        send_status(c, LONGSEQ__CODE__UNAVAILABLE, "submit: the job store could not commit: %s", ls_err_msg());
        ls_err_clear();
    } else {
        Longseq__SubmitReply sr = LONGSEQ__SUBMIT_REPLY__INIT;
        char **ids = ls_calloc(n, sizeof *ids), **errors = ls_calloc(n, sizeof *errors);
        for (size_t i = 0; i < n; i++) {
            ids[i] = jobs[i].id;
            errors[i] = jobs[i].error ? jobs[i].error : "";
            n_failed += jobs[i].state == LS_JOB_FAILED;
            if (jobs[i].state == LS_JOB_FAILED) say(s, "job %s (%s) failed at submit: %s", jobs[i].id, jobs[i].name, jobs[i].error);
            else if (jobs[i].is_parent)
                say(s, "job %s (%s) accepted: %lld tokens, strategy %s", jobs[i].id, jobs[i].name, (long long)jobs[i].n_tokens, jobs[i].tag);
            else say(s, "job %s (%s) queued: %lld tokens", jobs[i].id, jobs[i].name, (long long)jobs[i].n_tokens);
        }
        sr.n_job_ids = sr.n_errors = n;
        sr.job_ids = ids;
        sr.errors = errors;
        Longseq__Reply r = LONGSEQ__REPLY__INIT;
        r.body_case = LONGSEQ__REPLY__BODY_SUBMIT;
        r.submit = &sr;
        send_reply(c, &r);
        if (n_failed) send_status(c, LONGSEQ__CODE__OK, "%zu job%s queued, %zu failed", n - n_failed, n - n_failed == 1 ? "" : "s", n_failed);
        else send_status(c, LONGSEQ__CODE__OK, "%zu job%s queued", n, n == 1 ? "" : "s");
        ls_free(ids), ls_free(errors);
        for (size_t i = 0; i < n; i++) // the parents' first steps: their children queued
            if (jobs[i].is_parent && ls_strat_step(&s->strat, jobs[i].id, false, NULL, 0) != LS_OK) {
                say(s, "job %s: its first step failed: %s", jobs[i].id, ls_err_msg());
                ls_err_clear();
            }
    }
    for (size_t i = 0; i < n; i++) jobs[i].settings = NULL, ls_job_free(&jobs[i]);
    ls_free(jobs);
    ls_free(packed);
}

// The Submits whose documents are ready: answered on their connections (dropped when the
// connection went away meanwhile: nobody would know the job ids).
static void submits_ready(server *s) {
    ls_prep_task *t;
    while ((t = ls_prep_pool_take_done(s->pool))) {
        if (t->http) { // an HTTP completion's
            ls_http_prep_done(s->http, t);
            continue;
        }
        conn *c = t->owner;
        if (c && !c->closing) submit_done(s, c, t);
        else say(s, "a submit of %zu documents dropped: its client went away while they were prepared", t->req->n_documents);
        if (c) c->prep = NULL, c->last_ms = ls_time_ms(); // the call has ended: idleness starts now
        ls_prep_task_free(t);
    }
}

static bool get_job(server *s, conn *c, const char *id, ls_job *j) {
    if (!id || !*id || strlen(id) >= sizeof j->id) {
        send_status(c, LONGSEQ__CODE__INVALID_ARGUMENT, "a job id is required");
        return false;
    }
    if (ls_store_get(s->store, id, j) != LS_OK) {
        send_error(c, "");
        return false;
    }
    return true;
}

// The job's state now, the text generated so far, then (unless it has ended) every event as it
// happens. A finished job's stream is its text, then its final state.
static void do_watch(server *s, conn *c, const Longseq__WatchRequest *q) {
    ls_job j;
    if (!get_job(s, c, q->job_id, &j)) return;
    Longseq__Event e = LONGSEQ__EVENT__INIT;
    e.job_id = j.id;
    e.kind = LONGSEQ__EVENT__KIND__STATE;
    e.state = (Longseq__JobState)j.state;
    e.attempt = (uint32_t)j.attempts;
    e.error = j.error;
    e.queue_position = (uint64_t)queue_ahead(s, &j);
    c->watch_seq = j.seq;
    c->queue_pos = j.state == LS_JOB_QUEUED ? (int64_t)e.queue_position : -1;
    bool final = ls_job_state_final(j.state), running = j.state == LS_JOB_RUNNING && !strcmp(j.id, s->run_id);
    if (!final) send_event(c, &e);
    char stage[128] = "";
    if (!final && j.is_parent && ls_strat_step(&s->strat, j.id, true, stage, sizeof stage) != LS_OK) ls_err_clear();
    if (stage[0]) {
        Longseq__Event g = LONGSEQ__EVENT__INIT;
        g.job_id = j.id;
        g.kind = LONGSEQ__EVENT__KIND__STAGE;
        g.state = e.state;
        g.stage = stage;
        send_event(c, &g);
    }
    Longseq__JobResult *r = final ? job_result(s, &j, true) : NULL;
    const char *text = running ? (s->run_text.len ? s->run_text.data : NULL) : r ? r->text : NULL;
    if (text && *text) {
        Longseq__Event t = LONGSEQ__EVENT__INIT;
        t.job_id = j.id;
        t.kind = LONGSEQ__EVENT__KIND__TEXT;
        t.text = (char *)text;
        send_event(c, &t);
    }
    if (final) send_event(c, &e);
    free_result(r);
    if (ls_job_state_final(j.state)) send_status(c, LONGSEQ__CODE__OK, "job %s %s", j.id, ls_job_state_name(j.state));
    else snprintf(c->watch, sizeof c->watch, "%s", j.id);
    ls_job_free(&j);
}

static void do_result(server *s, conn *c, const Longseq__ResultRequest *q) {
    ls_job j;
    if (!get_job(s, c, q->job_id, &j)) return;
    Longseq__JobResult *jr = job_result(s, &j, true);
    Longseq__Reply r = LONGSEQ__REPLY__INIT;
    r.body_case = LONGSEQ__REPLY__BODY_RESULT;
    r.result = jr;
    send_reply(c, &r);
    send_status(c, LONGSEQ__CODE__OK, "job %s %s", j.id, ls_job_state_name(j.state));
    free_result(jr);
    ls_job_free(&j);
}

// Asks the worker group to stop the running job `id` at its next step (once).
static void ask_cancel(server *s, char *id) {
    if (s->cancel_asked) return;
    Longseq__CancelRequest cr = LONGSEQ__CANCEL_REQUEST__INIT;
    cr.job_id = id;
    Longseq__Reply r = LONGSEQ__REPLY__INIT;
    r.body_case = LONGSEQ__REPLY__BODY_CANCEL_RUN;
    r.cancel_run = &cr;
    send_reply(s->leader, &r);
    s->cancel_asked = true;
}

static void do_cancel(server *s, conn *c, const Longseq__CancelRequest *q) {
    ls_job j;
    if (!get_job(s, c, q->job_id, &j)) return;
    if (ls_job_state_final(j.state)) {
        send_status(c, LONGSEQ__CODE__FAILED_PRECONDITION, "job %s is already %s", j.id, ls_job_state_name(j.state));
    } else if (j.is_parent) {
        ls_strat_end(&s->strat, &j, LS_JOB_CANCELLED, "cancelled by a client");
        send_status(c, LONGSEQ__CODE__OK, "job %s cancelled, and its calls with it", j.id);
    } else if (j.state == LS_JOB_RUNNING && !strcmp(j.id, s->run_id) && s->leader) {
        ask_cancel(s, j.id);
        send_status(c, LONGSEQ__CODE__OK, "job %s is running: the worker group stops it at its next step", j.id);
    } else {
        finish(s, j.id, j.name, j.attempts, LS_JOB_CANCELLED, NULL, "cancelled by a client");
        send_status(c, LONGSEQ__CODE__OK, "job %s cancelled", j.id);
    }
    ls_job_free(&j);
}

typedef struct list_ctx {
    server *s;
    Longseq__JobResult **items;
    size_t n, cap;
} list_ctx;

static void list_one(void *ctx, const ls_job *j) {
    list_ctx *l = ctx;
    if (l->n == l->cap) l->items = ls_realloc(l->items, (l->cap = l->cap ? 2 * l->cap : 64) * sizeof *l->items);
    Longseq__JobResult *r = job_result(l->s, j, false);
    if (r) l->items[l->n++] = r;
}

static void do_list(server *s, conn *c, const Longseq__ListRequest *q) {
    list_ctx l = {s, NULL, 0, 0};
    int64_t limit = q->limit ? q->limit : 100;
    if (limit > 10000) limit = 10000;
    if (ls_store_list(s->store, limit, list_one, &l) != LS_OK) {
        send_error(c, "list: ");
    } else {
        Longseq__ListReply lr = LONGSEQ__LIST_REPLY__INIT;
        lr.n_jobs = l.n;
        lr.jobs = l.items;
        Longseq__Reply r = LONGSEQ__REPLY__INIT;
        r.body_case = LONGSEQ__REPLY__BODY_LIST;
        r.list = &lr;
        send_reply(c, &r);
        send_status(c, LONGSEQ__CODE__OK, "%zu jobs", l.n);
    }
    for (size_t i = 0; i < l.n; i++) free_result(l.items[i]);
    ls_free(l.items);
}

static void do_health(server *s, conn *c) {
    Longseq__HealthReply h = LONGSEQ__HEALTH_REPLY__INIT;
    int64_t q = 0, r = 0;
    if (ls_store_count(s->store, LS_JOB_QUEUED, &q) != LS_OK || ls_store_count(s->store, LS_JOB_RUNNING, &r) != LS_OK)
        ls_err_clear();
    h.version = LS_VERSION_STRING;
    h.workers_ready = s->g == G_IDLE || s->g == G_BUSY;
    h.ranks = (uint32_t)s->o->np;
    h.queued = (uint64_t)q;
    h.running = (uint64_t)r;
    h.model = s->prep->cfg.name;
    h.connections = (uint32_t)s->n_conns;
    Longseq__Reply rep = LONGSEQ__REPLY__INIT;
    rep.body_case = LONGSEQ__REPLY__BODY_HEALTH;
    rep.health = &h;
    send_reply(c, &rep);
    if (h.workers_ready || !s->g_error[0]) send_status(c, LONGSEQ__CODE__OK, "serving");
    else send_status(c, LONGSEQ__CODE__OK, "workers not ready: %s", s->g_error);
}

// --- worker messages --------------------------------------------------------------------------

static void do_hello(server *s, conn *c, const Longseq__WorkerHello *h) {
    bool expected = s->g == G_STARTING || (s->o->external_workers && s->g == G_DOWN);
    if (!expected || s->leader) {
        send_status(c, LONGSEQ__CODE__FAILED_PRECONDITION, "a worker group is already connected");
        c->closing = true;
        return;
    }
    c->worker = true;
    s->leader = c;
    s->g = G_IDLE;
    s->g_error[0] = 0;
    say(s, "worker group ready: %u ranks, pid %u, model %s, after %.1f s", h->ranks, h->pid, h->model ? h->model : "",
        (ls_time_ms() - s->g_since) / 1e3);
    send_status(c, LONGSEQ__CODE__OK, "welcome");
}

static void forward_event(server *s, Longseq__Event *e) {
    for (size_t i = 0; i < s->n_conns; i++)
        if (!strcmp(s->conns[i]->watch, s->run_id)) send_event(s->conns[i], e);
}

static void do_worker_event(server *s, conn *c, const Longseq__WorkerEvent *w) {
    if (c != s->leader) {
        send_status(c, LONGSEQ__CODE__PERMISSION_DENIED, "worker events come from the worker group's leader only");
        c->closing = true;
        return;
    }
    s->g_heard = ls_time_ms();
    if (w->kv) { // the pools as they are now, whichever job the event is about
        ls_metrics *m = &s->metrics;
        m->kv_in_use = w->kv->bytes_in_use, m->kv_allocated = w->kv->bytes_allocated;
        m->kv_budget = w->kv->bytes_budget, m->kv_ranks = w->kv->ranks;
    }
    if (s->g != G_BUSY || !w->job_id || strcmp(w->job_id, s->run_id)) return; // a late event of a finished job
    Longseq__Event e = LONGSEQ__EVENT__INIT;
    e.job_id = s->run_id;
    e.state = LONGSEQ__JOB_STATE__RUNNING;
    switch (w->kind) {
    case LONGSEQ__WORKER_EVENT__KIND__PROGRESS:
        e.kind = LONGSEQ__EVENT__KIND__PREFILL;
        e.fraction = w->fraction;
        e.tok_per_s = w->tok_per_s;
        e.eta_s = w->tok_per_s > 0 ? (1 - w->fraction) * (double)s->run_tokens / w->tok_per_s : 0;
        forward_event(s, &e);
        return;
    case LONGSEQ__WORKER_EVENT__KIND__TEXT:
        if (w->text) ls_buf_append(&s->run_text, w->text, strlen(w->text));
        if (w->text && *w->text && !s->run_texted)
            s->run_texted = true, ls_hist_observe(&s->metrics.ttft, (unix_ms() - s->run_started) / 1e3);
        e.kind = LONGSEQ__EVENT__KIND__TEXT;
        e.text = w->text;
        forward_event(s, &e);
        ls_http_job_text(s->http, s->run_id, w->text);
        return;
    case LONGSEQ__WORKER_EVENT__KIND__DONE:
        if (w->result) {
            w->result->ranks = w->result->ranks ? w->result->ranks : (uint32_t)s->o->np;
            finish(s, s->run_id, s->run_name, s->run_attempts, LS_JOB_DONE, w->result, "");
            break;
        }
        __attribute__((fallthrough)); // a DONE without a result is a failure
    case LONGSEQ__WORKER_EVENT__KIND__FAILED:
        finish(s, s->run_id, s->run_name, s->run_attempts, LS_JOB_FAILED, w->result, w->error && *w->error ? w->error : "the worker failed");
        break;
    case LONGSEQ__WORKER_EVENT__KIND__CANCELLED: {
        Longseq__JobResult copy;
        finish(s, s->run_id, s->run_name, s->run_attempts, LS_JOB_CANCELLED, with_streamed_text(s, w->result, &copy),
               "cancelled by a client");
        break;
    }
    default: return;
    }
    s->run_id[0] = 0;
    s->g = G_IDLE;
}

// --- connections ------------------------------------------------------------------------------

typedef enum credential { CRED_NONE, CRED_CLIENT, CRED_WORKER } credential;

// Which credential token[0..len) is (from a frame's raw bytes or its unpacked Request, need not
// end with a NUL): the clients' or the workers', each compared in constant time.
static credential credential_of(const server *s, const char *token, size_t len) {
    if (!token) return CRED_NONE;
    bool client = ls_wire_token_equal_n(s->o->token, token, len);
    bool worker = ls_wire_token_equal_n(s->worker_token, token, len);
    return client ? CRED_CLIENT : worker ? CRED_WORKER : CRED_NONE;
}

static bool credential_ok(server *s, const char *token, size_t len) { return credential_of(s, token, len) != CRED_NONE; }

static bool worker_method(int m) {
    return m == LONGSEQ__REQUEST__METHOD_WORKER_HELLO || m == LONGSEQ__REQUEST__METHOD_WORKER_EVENT;
}

static void handle_request(server *s, conn *c, const uint8_t *p, size_t n) {
    Longseq__Request *q;
    if (ls_wire_unpack_request(p, n, &q) != LS_OK) return send_error(c, "");
    credential cred = credential_of(s, q->token, q->token ? strlen(q->token) : 0);
    if (cred == CRED_NONE) {
        send_status(c, LONGSEQ__CODE__UNAUTHENTICATED, "a valid bearer token is required");
        c->closing = true;
    } else if (c->spare && q->method_case != LONGSEQ__REQUEST__METHOD_WORKER_HELLO) {
        send_status(c, LONGSEQ__CODE__RESOURCE_EXHAUSTED, "too many connections (the limit is %d, one of them kept for "
                    "the worker group)", s->o->max_conns);
        c->closing = true;
    } else if (worker_method(q->method_case) != (cred == CRED_WORKER)) { // docs/protocol.md ("The workers' credential")
        send_status(c, LONGSEQ__CODE__PERMISSION_DENIED, cred == CRED_CLIENT ? "worker methods need the workers' credential, not a client token"
                                                                             : "the workers' credential is for worker methods only");
        c->closing = true;
    } else if (c->worker && q->method_case != LONGSEQ__REQUEST__METHOD_WORKER_EVENT) {
        send_status(c, LONGSEQ__CODE__FAILED_PRECONDITION, "a worker connection sends worker events only");
    } else {
        switch (q->method_case) {
        case LONGSEQ__REQUEST__METHOD_SUBMIT: do_submit(s, c, q); break;
        case LONGSEQ__REQUEST__METHOD_WATCH: do_watch(s, c, q->watch); break;
        case LONGSEQ__REQUEST__METHOD_RESULT: do_result(s, c, q->result); break;
        case LONGSEQ__REQUEST__METHOD_CANCEL: do_cancel(s, c, q->cancel); break;
        case LONGSEQ__REQUEST__METHOD_LIST: do_list(s, c, q->list); break;
        case LONGSEQ__REQUEST__METHOD_HEALTH: do_health(s, c); break;
        case LONGSEQ__REQUEST__METHOD_WORKER_HELLO: do_hello(s, c, q->worker_hello); break;
        case LONGSEQ__REQUEST__METHOD_WORKER_EVENT: do_worker_event(s, c, q->worker_event); break;
        default: send_status(c, LONGSEQ__CODE__UNIMPLEMENTED, "unknown method (no known field of Request.method is set)");
        }
    }
    if (c == s->leader) c->spare = false; // the kept slot did its job
    longseq__request__free_unpacked(q, NULL);
}

// Gives back c's reservation of --max-buffered.
static void release(server *s, conn *c) {
    s->buffered -= c->want;
    c->want = 0;
}

// After a refusal: nothing more is read from c (the rest of its frame is never buffered), its
// status goes out, then it is closed.
static void drop_input(server *s, conn *c) {
    c->closing = true;
    c->in.len = 0;
    release(s, c);
}

// The token at the start of the head frame's message, checked on the raw bytes as soon as they
// are there (before the rest of the frame is read). false: not there yet, or refused.
static bool token_first(server *s, conn *c, size_t len) {
    const char *tok = NULL;
    size_t n = 0;
    bool ready;
    if (ls_wire_peek_token((const uint8_t *)c->in.data + LS_FRAME_HEADER, c->in.len - LS_FRAME_HEADER, len, &tok, &n,
                           &ready) != LS_OK) {
        send_status(c, LONGSEQ__CODE__UNAUTHENTICATED, "a valid bearer token is required: %s", ls_err_msg());
        ls_err_clear();
        drop_input(s, c);
        return false;
    }
    if (!ready) return false;
    if (!credential_ok(s, tok, n)) {
        send_status(c, LONGSEQ__CODE__UNAUTHENTICATED, "a valid bearer token is required");
        drop_input(s, c);
        return false;
    }
    c->authed = true;
    return true;
}

// Reserves the head frame's bytes from --max-buffered, or refuses it (RESOURCE_EXHAUSTED).
static bool reserve(server *s, conn *c, size_t bytes) {
    if (s->buffered + bytes > s->o->max_buffered) {
        send_status(c, LONGSEQ__CODE__RESOURCE_EXHAUSTED, "a frame of %zu bytes does not fit: frames being received "
                    "hold %zu of the server's %zu bytes (--max-buffered); try again later",
                    bytes - LS_FRAME_HEADER, s->buffered, s->o->max_buffered);
        drop_input(s, c);
        return false;
    }
    c->want = bytes;
    s->buffered += bytes;
    return true;
}

// The frame at the head of c->in: its header (flags, --max-frame), then, until the connection
// has authenticated, the token first in its message, then its room in --max-buffered. True when
// the whole frame is there (its message is c->in[5 .. 5 + *len)); false: more bytes are needed,
// or it was refused (c->closing).
static bool head_frame(server *s, conn *c, size_t *len) {
    bool ready;
    if (ls_frame_scan((const uint8_t *)c->in.data, c->in.len, s->o->max_frame, &ready, len) != LS_OK) {
        send_error(c, "");
        drop_input(s, c);
        return false;
    }
    if (c->in.len < LS_FRAME_HEADER) return false;
    if (!c->authed && !token_first(s, c, *len)) return false;
    if (!c->want && !reserve(s, c, LS_FRAME_HEADER + *len)) return false;
    return ready;
}

// Runs the complete frames in c->in, one at a time; a broken or refused frame ends the
// connection after its status.
static void handle_input(server *s, conn *c) {
    size_t len;
    while (!c->closing && !c->watch[0] && !c->prep && c->in.len && head_frame(s, c, &len)) { // a watch or a submit
        // being prepared holds further calls
        size_t n = LS_FRAME_HEADER + len;
        handle_request(s, c, (const uint8_t *)c->in.data + LS_FRAME_HEADER, len);
        release(s, c);
        memmove(c->in.data, c->in.data + n, c->in.len - n);
        c->in.len -= n;
        c->last_ms = ls_time_ms(); // a whole call: only now does idleness start again
        c->frame_ms = c->in.len ? c->last_ms : 0;
    }
}

// How many more bytes c may hold: PREAUTH_CAP until its token has been checked; then the frame
// being received and no more (its header first, then the size reserved for it). None while a
// watch or a submit being prepared holds its calls (they wait in the socket) or once it is closing.
static size_t conn_room(const conn *c) {
    if (c->closing || c->watch[0] || c->prep) return 0;
    size_t cap = !c->authed ? PREAUTH_CAP : c->want ? c->want : LS_FRAME_HEADER;
    return c->in.len < cap ? cap - c->in.len : 0;
}

// Reads what c may hold and runs its complete calls; at most 4 MiB a turn, so that one fast
// sender does not keep the others waiting.
static void conn_read(server *s, conn *c) {
    char buf[65536];
    size_t room;
    for (int turn = 0; turn < 64 && (room = conn_room(c)) > 0; turn++) {
        ssize_t k = recv(c->fd, buf, room < sizeof buf ? room : sizeof buf, MSG_DONTWAIT);
        if (k > 0) {
            if (!c->in.len) c->frame_ms = ls_time_ms(); // a frame's deadline runs from its first byte
            ls_buf_append(&c->in, buf, (size_t)k);
            handle_input(s, c);
            continue;
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (k < 0 && errno == EINTR) continue;
        conn_close(c); // closed by the peer, or failed
        break;
    }
}

static void conn_write(conn *c) {
    size_t off = 0;
    while (off < c->out.len) {
        ssize_t k = send(c->fd, c->out.data + off, c->out.len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0) off += (size_t)k;
        else if (k < 0 && errno == EINTR) continue;
        else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        else { // the peer is gone: drop what is queued
            c->closing = true;
            c->out.len = 0;
            return;
        }
    }
    if (off) {
        memmove(c->out.data, c->out.data + off, c->out.len - off);
        c->out.len -= off;
    }
}

// Of --max-conns, one slot is kept for the worker group's leader: clients hold at most
// max_conns - 1, and while no leader is connected one connection more is let in, to say
// worker_hello within --auth-timeout or be refused (a restarted group can connect while
// clients hold every slot). O(connections).
static void admit_conn(server *s, conn *c) {
    size_t clients = 0, spares = 0;
    for (size_t i = 0; i + 1 < s->n_conns; i++) // the others
        if (s->conns[i]->spare) spares++;
        else if (s->conns[i] != s->leader) clients++;
    if (clients + 1 < (size_t)s->o->max_conns) return;
    if (!s->leader && !spares) {
        c->spare = true;
        return;
    }
    send_status(c, LONGSEQ__CODE__RESOURCE_EXHAUSTED, "too many connections (the limit is %d, one of them kept for the "
                "worker group)", s->o->max_conns);
    c->closing = true;
}

static void accept_all(server *s) {
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = ls_calloc(1, sizeof *c);
        c->fd = fd;
        c->since_ms = c->last_ms = ls_time_ms();
        s->conns = ls_realloc(s->conns, (s->n_conns + 1) * sizeof *s->conns);
        s->conns[s->n_conns++] = c;
        admit_conn(s, c);
    }
}

// Whether c is late (then *why says how): once a frame has started, its token (until the
// connection has authenticated: within --auth-timeout) or the rest of it (--frame-timeout);
// with nothing in progress, its next call (--idle-timeout; a client may connect before it has
// its first call ready; not in the slot kept for the worker group). A call in progress (a
// watch) is never late.
static bool overdue(server *s, const conn *c, double now, char *why, size_t cap) {
    if (c->closing || c->watch[0] || c->prep) return false; // a call in progress: never idle
    if (c->spare && now - c->since_ms > 1e3 * s->o->auth_timeout_s) {
        snprintf(why, cap, "no worker_hello within %d s in the connection slot kept for the worker group: closing",
                 s->o->auth_timeout_s);
        return true;
    }
    if (!c->authed && c->in.len && now - c->frame_ms > 1e3 * s->o->auth_timeout_s) {
        snprintf(why, cap, "no valid token within %d s of the first byte: closing", s->o->auth_timeout_s);
        return true;
    }
    if (c->in.len && now - c->frame_ms > 1e3 * s->o->frame_timeout_s) {
        snprintf(why, cap, "a frame did not arrive within %d s (%zu of %zu bytes came): closing", s->o->frame_timeout_s,
                 c->in.len, c->want ? c->want : c->in.len);
        return true;
    }
    if (!c->worker && !c->in.len && now - c->last_ms > 1e3 * s->o->idle_timeout_s) {
        snprintf(why, cap, "idle for %d s: closing", s->o->idle_timeout_s);
        return true;
    }
    return false;
}

// Drops closed connections (after their last replies went out) and late ones (overdue).
static void sweep(server *s) {
    double now = ls_time_ms();
    size_t k = 0;
    for (size_t i = 0; i < s->n_conns; i++) {
        conn *c = s->conns[i];
        char why[200];
        if (overdue(s, c, now, why, sizeof why)) {
            send_status(c, LONGSEQ__CODE__DEADLINE_EXCEEDED, "%s", why);
            drop_input(s, c);
            conn_write(c);
        }
        if (c->out.len > OUT_CAP) c->closing = true, c->out.len = 0;
        if (c->closing && !c->out.len) {
            if (c == s->leader) {
                s->leader = NULL;
                // Any rank's death closes the leader's connection (the launcher stops the rest):
                // the launcher's exit says what happened (reap), so the leader is not blamed
                // for another rank; timers() ends the wait.
                if (s->g != G_DOWN && s->gpid > 0) s->leader_gone = now;
                else if (s->g != G_DOWN) group_down(s, "the worker group's leader closed its connection");
            }
            release(s, c);
            if (c->prep) { // documents still being prepared: nobody waits for them now
                ls_prep_pool_cancel(s->pool, c->prep);
                c->prep->owner = NULL;
            }
            close(c->fd);
            ls_buf_free(&c->in), ls_buf_free(&c->out);
            ls_free(c);
            continue;
        }
        s->conns[k++] = c;
    }
    s->n_conns = k;
}

static void timers(server *s) {
    double now = ls_time_ms();
    if (s->leader_gone && s->g != G_DOWN && now - s->leader_gone > 5000) {
        kill_group(s, SIGKILL);
        group_down(s, "the worker group's leader closed its connection and its launcher did not exit within 5 s");
    }
    if (s->g == G_STARTING && now - s->g_since > 1e3 * s->o->start_timeout_s) {
        kill_group(s, SIGKILL);
        group_down(s, "the worker group did not connect in time");
    }
    if (s->g == G_BUSY && now - s->g_heard > 1e3 * s->o->worker_timeout_s) {
        char why[128];
        snprintf(why, sizeof why, "the worker group said nothing for %d s", s->o->worker_timeout_s);
        kill_group(s, SIGKILL);
        group_down(s, why);
    }
}

// --- the loop ---------------------------------------------------------------------------------

static void on_signals(server *s) {
    char buf[64];
    ssize_t k;
    while ((k = read(g_sigpipe[0], buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < k; i++) {
            if (buf[i] == 'C') reap(s);
            else if (buf[i] != 'P') s->stopping = true; // ('P': submits_ready runs on every turn)
        }
}

static void loop(server *s) {
    struct pollfd *pf = NULL;
    while (!s->stopping) {
        size_t n = 3 + s->n_conns;
        pf = ls_realloc(pf, n * sizeof *pf);
        pf[0] = (struct pollfd){g_sigpipe[0], POLLIN, 0};
        pf[1] = (struct pollfd){s->lfd, POLLIN, 0};
        pf[n - 1] = (struct pollfd){s->http ? ls_http_fd(s->http) : -1, POLLIN, 0}; // (-1: ignored by poll)
        for (size_t i = 0; i < s->n_conns; i++) { // a client that sends faster than its calls run waits
            conn *c = s->conns[i];
            bool room = conn_room(c) > 0; // else only its hanging up is watched for
            short ev = (short)(room ? POLLIN : c->closing ? 0 : POLLRDHUP);
            pf[2 + i] = (struct pollfd){c->fd, (short)(ev | (c->out.len ? POLLOUT : 0)), 0};
        }
        int r = poll(pf, n, s->http ? ls_http_timeout_ms(s->http, 200) : 200);
        if (r < 0 && errno != EINTR) break;
        if (pf[0].revents) on_signals(s);
        submits_ready(s);
        size_t before = s->n_conns;
        for (size_t i = 0; i < before && r > 0; i++) {
            conn *c = s->conns[i];
            short ev = pf[2 + i].revents;
            if ((ev & (POLLIN | POLLHUP | POLLERR)) && conn_room(c)) conn_read(s, c);
            else if ((ev & (POLLRDHUP | POLLHUP | POLLERR)) && !c->closing) conn_close(c); // gone while its calls wait
            else if (c->in.len && !c->watch[0] && !c->closing) handle_input(s, c); // calls held by a finished watch
        }
        if (pf[1].revents & POLLIN) accept_all(s);
        for (size_t i = 0; i < s->n_conns; i++) {
            conn *c = s->conns[i];
            if (c->in.len && !c->watch[0] && !c->closing) handle_input(s, c);
            if (c->out.len) conn_write(c);
        }
        if (s->http) ls_http_run(s->http); // (also its deadlines, so on every turn)
        reap(s);
        timers(s);
        schedule(s);
        sweep(s);
    }
    ls_free(pf);
}

// SIGTERM: stop accepting, put the running job back in the queue (it runs again on the next
// start) and stop the worker group.
static void shut_down(server *s) {
    close(s->lfd);
    if (s->g == G_BUSY) {
        set_state(s, s->run_id, s->run_name, LS_JOB_QUEUED, s->run_attempts - 1, "", "the server stopped; queued again");
        s->run_id[0] = 0;
    }
    for (size_t i = 0; i < s->n_conns; i++)
        if (!s->conns[i]->worker) send_status(s->conns[i], LONGSEQ__CODE__UNAVAILABLE, "the server is stopping");
    for (size_t i = 0; i < s->n_conns; i++) conn_write(s->conns[i]);
    if (s->gpid > 0) {
        kill_group(s, SIGTERM);
        for (int t = 0; t < 50 && s->gpid > 0; t++) {
            usleep(100000);
            int st;
            if (waitpid(s->gpid, &st, WNOHANG) == s->gpid) s->gpid = 0;
        }
        if (s->gpid > 0) kill_group(s, SIGKILL), waitpid(s->gpid, NULL, 0);
    }
    for (size_t i = 0; i < s->n_conns; i++) {
        close(s->conns[i]->fd);
        ls_buf_free(&s->conns[i]->in), ls_buf_free(&s->conns[i]->out);
        ls_free(s->conns[i]);
    }
    ls_free(s->conns);
    say(s, "stopped");
}

// The workers' credential: given, or made now for the groups this server launches.
static ls_status worker_credential(server *s) {
    if (s->o->worker_token) s->worker_token = s->o->worker_token;
    else if (s->o->external_workers)
        return LS_ERR(LS_ERR_INVALID, "external workers need their own credential: give --worker-token-file F");
    else {
        LS_CHECK(ls_wire_new_token(s->own_worker_token));
        s->worker_token = s->own_worker_token;
    }
    if (ls_wire_token_equal(s->o->token, s->worker_token))
        return LS_ERR(LS_ERR_INVALID, "the workers' token is the clients' token: give the workers a token of their own");
    return LS_OK;
}

// Limits that contradict each other are refused before anything starts.
static ls_status opts_check(const ls_server_opts *o) {
    if (o->max_conns < 2)
        return LS_ERR(LS_ERR_INVALID, "--max-conns %d: at least 2 are needed (one is kept for the worker group)", o->max_conns);
    if (o->max_buffered < o->max_frame + LS_FRAME_HEADER)
        return LS_ERR(LS_ERR_INVALID, "--max-buffered %zu is less than one frame of --max-frame %zu bytes (+%d)",
                      o->max_buffered, o->max_frame, LS_FRAME_HEADER);
    return LS_OK;
}

static bool http_workers_ready(void *srv, const char **why) {
    server *s = srv;
    *why = s->g_error;
    return s->g == G_IDLE || s->g == G_BUSY;
}

static size_t http_connections(void *srv) { return ((server *)srv)->n_conns; }

// A cancel from the HTTP front end (a batch's): a queued job at once, the running one at the
// group's next step.
static void http_cancel(void *srv, const char *id) {
    server *s = srv;
    ls_job j;
    if (ls_store_get(s->store, id, &j) != LS_OK) return ls_err_clear();
    if (j.is_parent && !ls_job_state_final(j.state)) {
        ls_strat_end(&s->strat, &j, LS_JOB_CANCELLED, "cancelled with its batch");
    } else if (j.state == LS_JOB_RUNNING && !strcmp(j.id, s->run_id) && s->leader) {
        ask_cancel(s, j.id);
    } else if (j.state == LS_JOB_QUEUED) {
        finish(s, j.id, j.name, j.attempts, LS_JOB_CANCELLED, NULL, "cancelled with its batch");
    }
    ls_job_free(&j);
}

// --- the strategies' host (strategy.c) ----------------------------------------------------------

static void strat_finish(void *srv, const char *id, const char *name, int64_t attempts, ls_job_state st,
                         Longseq__JobResult *r, const char *why) {
    server *s = srv;
    if (r && r->text && *r->text) { // the parent's watchers get its summary before its end
        Longseq__Event e = LONGSEQ__EVENT__INIT;
        e.job_id = (char *)id;
        e.kind = LONGSEQ__EVENT__KIND__TEXT;
        e.text = r->text;
        for (size_t i = 0; i < s->n_conns; i++)
            if (!strcmp(s->conns[i]->watch, id)) send_event(s->conns[i], &e);
    }
    finish(s, id, name, attempts, st, r, why);
}

static void strat_queued(void *srv, const ls_job *jobs, size_t n) {
    server *s = srv;
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].state == LS_JOB_FAILED) say(s, "job %s (%s) failed at submit: %s", jobs[i].id, jobs[i].name, jobs[i].error);
        else say(s, "job %s (%s) queued: %lld tokens", jobs[i].id, jobs[i].name, (long long)jobs[i].n_tokens);
        ls_http_job_state(s->http, jobs[i].id, (int)jobs[i].state);
    }
}

static void strat_stop_running(void *srv, const char *id) {
    server *s = srv;
    if (!strcmp(id, s->run_id) && s->leader) ask_cancel(s, s->run_id);
}

static void strat_stage(void *srv, const char *parent, const char *stage, double fraction, double tok_per_s, double eta_s) {
    server *s = srv;
    Longseq__Event e = LONGSEQ__EVENT__INIT;
    e.job_id = (char *)parent;
    e.kind = LONGSEQ__EVENT__KIND__STAGE;
    e.state = LONGSEQ__JOB_STATE__RUNNING;
    e.stage = (char *)stage;
    e.fraction = fraction, e.tok_per_s = tok_per_s, e.eta_s = eta_s;
    e.error = "";
    for (size_t i = 0; i < s->n_conns; i++)
        if (!strcmp(s->conns[i]->watch, parent)) send_event(s->conns[i], &e);
}

typedef struct ids_ctx {
    char (*ids)[40];
    size_t n;
} ids_ctx;

static void collect_id(void *ctx, const ls_job *j) {
    ids_ctx *c = ctx;
    c->ids = ls_realloc(c->ids, (c->n + 1) * sizeof *c->ids);
    snprintf(c->ids[c->n++], sizeof *c->ids, "%s", j->id);
}

// After a start: the parents not finished take their next step (children requeued, or the
// next level queued when the last one ended just before the stop).
static void resume_parents(server *s) {
    ids_ctx c = {0};
    if (ls_store_open_parents(s->store, collect_id, &c) != LS_OK) { // (read whole before any write)
        say(s, "cannot read the open parents: %s", ls_err_msg());
        ls_err_clear();
    }
    for (size_t i = 0; i < c.n; i++)
        if (ls_strat_step(&s->strat, c.ids[i], false, NULL, 0) != LS_OK) {
            say(s, "job %s: cannot go on after the restart: %s", c.ids[i], ls_err_msg());
            ls_err_clear();
        }
    ls_free(c.ids);
}

static void http_strat_start(void *srv, const char *id) {
    server *s = srv;
    if (ls_strat_step(&s->strat, id, false, NULL, 0) != LS_OK) {
        say(s, "job %s: its first step failed: %s", id, ls_err_msg());
        ls_err_clear();
    }
}

static ls_status start_http(server *s) {
    ls_http_host host = {.o = s->o, .store = s->store, .prep = s->prep, .pool = s->pool, .metrics = &s->metrics,
                         .server = s, .workers_ready = http_workers_ready, .connections = http_connections,
                         .cancel = http_cancel, .strat_start = http_strat_start};
    ls_status rc = ls_http_start(&host, &s->http);
    if (rc != LS_OK) return ls_http_free(s->http), s->http = NULL, rc;
    if (!s->o->on_ready) fprintf(stderr, "[longseq serve] HTTP on %s (http port %d)\n", s->o->http, ls_http_port(s->http));
    return LS_OK;
}

ls_status ls_server_run(const ls_server_opts *o) {
    LS_CHECK(opts_check(o));
    server s = {.o = o, .lfd = -1};
    LS_CHECK(worker_credential(&s));
    if (pipe2(g_sigpipe, O_NONBLOCK | O_CLOEXEC) != 0) return LS_ERR(LS_ERR_IO, "pipe: %s", strerror(errno));
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART}, old_term, old_int, old_chld, old_pipe;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGCHLD, &sa, &old_chld);
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigaction(SIGPIPE, &ign, &old_pipe);
    ls_status rc = ls_prep_init(o->model, &o->rope, &o->load, o->chat_template, &s.prep);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (rc == LS_OK) rc = ls_prep_pool_start(s.prep, o->max_job_tokens, cpus < 1 ? 1 : cpus > 4 ? 4 : (int)cpus, wake_loop, &s.pool);
    if (rc == LS_OK) rc = ls_store_open(o->state_dir, &s.store);
    int64_t requeued = 0;
    if (rc == LS_OK) rc = ls_store_requeue_running(s.store, &requeued);
    s.strat = (ls_strat_host){.store = s.store, .prep = s.prep, .max_job_tokens = o->max_job_tokens, .server = &s,
                              .finish = strat_finish, .queued = strat_queued, .stop_running = strat_stop_running,
                              .stage = strat_stage};
    if (rc == LS_OK) rc = ls_net_listen(o->listen, 512, &s.lfd, &s.port);
    if (rc == LS_OK) {
        int64_t queued = 0;
        if (ls_store_count(s.store, LS_JOB_QUEUED, &queued) != LS_OK) ls_err_clear();
        if (!o->on_ready) // (always said: it tells the port)
            fprintf(stderr, "[longseq serve] listening on %s (port %d), state %s, %lld jobs queued (%lld were running), %d rank%s%s\n",
                    o->listen, s.port, o->state_dir, (long long)queued, (long long)requeued, o->np, o->np == 1 ? "" : "s",
            o->external_workers ? ", external workers" : "");
        if (o->http) rc = start_http(&s);
    }
    if (rc == LS_OK) {
        resume_parents(&s);
        if (o->on_ready) o->on_ready(o->ready_ctx, s.port);
        loop(&s);
        shut_down(&s);
        ls_http_free(s.http); // (after the running job went back to the queue; before the prep pool stops)
    }
    ls_buf_free(&s.run_text);
    ls_prep_pool_free(s.pool); // (a submit still being prepared was answered UNAVAILABLE by shut_down)
    ls_store_close(s.store);
    ls_prep_free(s.prep);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGCHLD, &old_chld, NULL);
    sigaction(SIGPIPE, &old_pipe, NULL);
    close(g_sigpipe[0]), close(g_sigpipe[1]);
    g_sigpipe[0] = g_sigpipe[1] = -1;
    return rc;
}
