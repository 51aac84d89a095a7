// server_impl.h — private to coordinator/: turning a document into the token sequence a job
// runs (prep.c) and the threads that do it off the server loop (prep_pool.c), used by the
// server loop (server.c).
#ifndef LS_SERVER_IMPL_H
#define LS_SERVER_IMPL_H

#include "ls_chat.h"
#include "ls_effctx.h"
#include "ls_server.h"

// What the coordinator needs of the model: metadata, tokenizer and chat template (the file is
// mapped, the weights are never touched).
typedef struct ls_prep {
    ls_gguf_t *gguf;
    ls_model_config cfg;
    ls_tokenizer_t *tok;
    ls_chat_t *chat;        // NULL when the model has no usable template (summarize then fails)
    ls_rope_override rope;  // the server's overrides
    size_t max_token_bytes; // the longest vocabulary string: no token stands for more text
    ls_strategy_model sm;   // trained context and measured effective context (strategy auto, extend)
} ls_prep;

// chat_template: a template name (ls_chat.h), or NULL for the model's own (a model without one it
// knows then serves everything but summarize).
ls_status ls_prep_init(const char *model, const ls_rope_override *rope, const ls_load_opts *load,
                       const char *chat_template, ls_prep **out);
void ls_prep_free(ls_prep *p);
// The checks of a Submit's settings against the model, for all its documents at once (summarize
// needs a chat template; the job's RoPE overrides must apply).
ls_status ls_prep_check_call(const ls_prep *p, const Longseq__Settings *s);
// The tokens of a job over this document: summarize wraps it with the request in the chat
// template, generate and perplexity take it as it is. Checks UTF-8 and the length against the
// context the model's RoPE settings (with the server's and the job's overrides) and attention
// rule allow, and against max_job_tokens; the error says what and by how much. Empty and
// whitespace-only texts are refused, and so, before tokenizing, is a text whose bytes alone
// (at most max_token_bytes per token) need more tokens than fit. rendered: the text is already a
// conversation in the chat template (HTTP chat completions): its special tokens are parsed and
// no BOS is added, whatever the task. Reads p only: safe to call from several threads at once
// (the prep pool's).
ls_status ls_prep_document(const ls_prep *p, const Longseq__Settings *s, const uint8_t *text, size_t len, bool rendered,
                           int64_t max_job_tokens, ls_vec_i32 *ids);
// The strategy a document of a job with settings.strategy runs under (docs/architecture.md
// ("Long documents")): direct for an unset or direct strategy, and for auto when the job (or the
// server) gives its own RoPE scaling or the job its attention rule; otherwise the text is checked (not blank, UTF-8, no
// NUL) and its tokens counted (*n_tokens) for ls_strategy_choose. Reads p only (prep pool).
ls_status ls_prep_strategy(const ls_prep *p, const Longseq__Settings *s, const uint8_t *text, size_t len, ls_strategy *st,
                           int64_t *n_tokens);
// The context length a sequence may reach under the RoPE settings (no limit for sink and
// window rules, whose positions never leave the cache's range): *limit, -1 for none.
ls_status ls_prep_context(const ls_prep *p, const Longseq__Settings *s, int64_t *limit, ls_rope_config *rope);

// --- the prep pool (prep_pool.c) --------------------------------------------------------------
// A Submit's documents are prepared by a few threads off the server's loop; the loop is woken
// (wake(), from a pool thread) when all documents of a task are done, then commits and answers.

typedef struct ls_prep_doc {
    char *name;          // the name to store (a bad one shortened, bad bytes as U+FFFD)
    ls_vec_i32 ids;      // the job's tokens, when error is NULL
    char *error;         // why the document is refused (NULL: it is fine)
    bool parent;         // its strategy (extend, map-reduce) makes it a parent job: no ids
    ls_strategy strategy;
    int64_t doc_tokens;  // a parent's document's tokens
} ls_prep_doc;

typedef struct ls_prep_task {
    Longseq__SubmitRequest *req;     // the call (owned: freed with the task)
    const Longseq__Settings *set;    // req's settings, or defaults that outlive the task
    void *owner;                     // the loop's (its connection), never read by the pool
    bool http;                       // owner is an HTTP request (http.c), not a connection
    bool batch;                      // (with http) owner is a batch's line (batch.c)
    bool rendered;                   // the documents are chat prompts already (ls_prep_document)
    ls_prep_doc *docs;               // [req->n_documents], filled by the pool
    // the pool's, under its lock
    size_t next, n_done;             // documents taken, finished
    bool cancelled;                  // documents not yet taken are skipped
    struct ls_prep_task *link;
} ls_prep_task;
void ls_prep_task_free(ls_prep_task *t);

typedef struct ls_prep_pool ls_prep_pool;
ls_status ls_prep_pool_start(const ls_prep *p, int64_t max_job_tokens, int threads, void (*wake)(void),
                             ls_prep_pool **out);
// Hands t (req and set filled in) to the pool; it comes back from ls_prep_pool_take_done.
void ls_prep_pool_add(ls_prep_pool *pool, ls_prep_task *t);
// Nobody waits for t any more (its connection closed): its remaining documents are skipped.
void ls_prep_pool_cancel(ls_prep_pool *pool, ls_prep_task *t);
// A task whose documents are all done (the caller frees it), or NULL.
ls_prep_task *ls_prep_pool_take_done(ls_prep_pool *pool);
// Stops the threads (documents in hand finish, the rest are skipped), frees every task left.
void ls_prep_pool_free(ls_prep_pool *pool);


// --- metrics (kept by server.c, shown by http.c at GET /metrics) ----------------------------

#define LS_HIST_BUCKETS 12
extern const double ls_hist_bounds[LS_HIST_BUCKETS]; // seconds: 0.05 ... 600, then +Inf
typedef struct ls_hist {
    uint64_t counts[LS_HIST_BUCKETS + 1]; // per bucket (not cumulative); the last is over every bound
    uint64_t n;
    double sum;
} ls_hist;
void ls_hist_observe(ls_hist *h, double seconds);

typedef struct ls_metrics {
    uint64_t prefill_tokens, decode_tokens;     // over the jobs finished DONE
    double prefill_s, decode_s;                 // their prefill and decode time
    double last_prefill_tps, last_decode_tps;   // the last finished job's rates
    uint64_t group_restarts;                    // worker groups that went down
    uint64_t retries;                           // jobs put back in the queue after their group died
    uint64_t http_requests, http_errors;        // HTTP requests answered, and those with a status >= 400
    ls_hist ttft;                               // job accepted -> its first text
    ls_hist latency;                            // job accepted -> finished (DONE)
    // The worker group's KV cache pools as its latest event said (WorkerEvent.kv): bytes in
    // use, allocated, budget (0: none) over kv_ranks ranks; zeros until the group reports and
    // after it goes down.
    uint64_t kv_in_use, kv_allocated, kv_budget;
    uint32_t kv_ranks;
} ls_metrics;

// --- the HTTP front end (http.c): OpenAI-compatible routes over the same store ---------------
// It runs inside the server's loop: libmicrohttpd in its external-polling epoll mode, whose
// one descriptor the loop polls (docs/architecture.md, "The HTTP front end").

typedef struct ls_http ls_http;
// What the front end uses of the server (all of it from the loop's thread).
typedef struct ls_http_host {
    const ls_server_opts *o;
    ls_store_t *store;
    ls_prep *prep;
    ls_prep_pool *pool;
    ls_metrics *metrics;
    void *server;
    bool (*workers_ready)(void *server, const char **why);
    size_t (*connections)(void *server);        // protobuf connections open
    void (*cancel)(void *server, const char *id); // cancels a queued or running job (as the Cancel call)
    void (*strat_start)(void *server, const char *id); // a strategy's parent was stored: its first step
} ls_http_host;

ls_status ls_http_start(const ls_http_host *host, ls_http **out);
int ls_http_port(const ls_http *h);
int ls_http_fd(const ls_http *h);               // poll it for POLLIN, then ls_http_run
int ls_http_timeout_ms(ls_http *h, int cap);    // how long the loop may sleep (at most cap)
void ls_http_run(ls_http *h);                   // serves what is ready, enforces the deadlines
// A task it handed to the prep pool (t->http) is done: the job is stored, or the request
// answered with the document's error. Frees t.
void ls_http_prep_done(ls_http *h, ls_prep_task *t);
// The running job's text as it comes, and every job's state changes.
void ls_http_job_text(ls_http *h, const char *id, const char *text);
void ls_http_job_state(ls_http *h, const char *id, int state);
// Answers every waiting request 503, then stops (the loop has ended).
void ls_http_free(ls_http *h);

// --- long-document strategies run by the coordinator (strategy.c) --------------------------
// A job whose strategy is extend or map-reduce is a parent: its document is stored, and its
// children are ordinary jobs (the chunk and combine calls, or extend's one call) named after it.
// The plan is a function of the document, the settings and the children's results, so each
// step reads them from the store: after a restart the parent goes on where its children are.

typedef struct ls_strat_host {
    ls_store_t *store;
    const ls_prep *prep;
    int64_t max_job_tokens;
    void *server;
    // A job ends (the parent, or a child cancelled): committed, then told, as the server does.
    void (*finish)(void *server, const char *id, const char *name, int64_t attempts, ls_job_state st,
                   Longseq__JobResult *r, const char *why);
    void (*queued)(void *server, const ls_job *jobs, size_t n); // children committed to the queue
    void (*stop_running)(void *server, const char *id);        // a running child is to stop
    // The parent's stage changed ("chunk 3/7"): its watchers hear it.
    void (*stage)(void *server, const char *parent, const char *stage, double fraction, double tok_per_s, double eta_s);
} ls_strat_host;

// A prepared document that is a parent (d->parent) makes j one: its document (a copy of text),
// strategy and token count set. Other documents leave j as it is.
void ls_strat_job_of(ls_job *j, const ls_prep_doc *d, const ProtobufCBinaryData *text);
// One step of the parent: its children that the plan needs next are queued (one transaction), or
// it finishes (done with the final summary and its figures, or failed naming the child that
// failed, its other children cancelled). dry: nothing is changed, only *stage is said (may be
// NULL). A parent already finished is left alone.
ls_status ls_strat_step(const ls_strat_host *h, const char *parent, bool dry, char *stage, size_t cap);
// The parent ends in state st (cancelled, failed) with why; its unfinished children are cancelled.
void ls_strat_end(const ls_strat_host *h, const ls_job *parent, ls_job_state st, const char *why);

#endif // LS_SERVER_IMPL_H
