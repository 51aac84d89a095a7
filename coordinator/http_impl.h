// http_impl.h — private to coordinator/: the HTTP front end's requests and connections
// (http.c) and its Batch API (batch.c), which share them. Tests: tests/oracle/test_http.py.
#ifndef LS_HTTP_IMPL_H
#define LS_HTTP_IMPL_H

#include "server_impl.h"

#include <jansson.h>
#include <microhttpd.h>

#define SSE_CHUNK 65536 // bytes of events handed to libmicrohttpd at once at most

// One TCP connection (libmicrohttpd's socket context): the deadline of its request.
typedef struct hconn {
    struct hconn *prev, *next;
    int fd;
    double since;   // its current request began (the connection opened, or the last request ended)
    bool in_call;   // a whole request has arrived and is being answered: no deadline
} hconn;

typedef enum wait_kind { W_NONE, W_PREP, W_JOB } wait_kind;

typedef struct ls_batches ls_batches;

// One request.
typedef struct hreq {
    struct hreq *prev, *next; // every live request (h->reqs)
    ls_http *h;
    struct MHD_Connection *mc;
    const char *method;       // libmicrohttpd's, valid for the request's life
    hconn *hc;
    size_t reserved;          // body bytes reserved from max_buffered
    ls_buf body;
    bool too_big;             // the body passed the limit while arriving: answered 413
    bool busy;                // a body without a length passed --max-buffered while arriving: 503
    bool suspended;
    // a completion
    bool chat, stream, dispatched;
    bool document;              // longseq.strategy: the prompt (the last user message) is a document to summarize
    wait_kind wait;
    ls_prep_task *task;       // in the prep pool (owner: this request)
    char job[40];
    int64_t created;          // unix seconds, the answer's `created`
    size_t text_seen;         // bytes of the running attempt's text seen, and sent as events
    size_t text_sent;
    // the answer: queued when the request is resumed (status 0: none yet)
    unsigned status;
    ls_buf answer;
    const char *ctype;        // its content type (NULL: application/json)
    // streaming: events not yet handed over, and whether the last one is among them
    ls_buf sse;
    size_t sse_off;
    bool sse_end;
} hreq;

struct ls_http {
    ls_http_host host;
    struct MHD_Daemon *d;
    int port;
    char model_id[256];
    hconn *conns;
    hreq *reqs;
    size_t buffered;          // body bytes reserved over all requests
    ls_batches *batches;      // the open batches (batch.c)
};


// OpenAI's error object as the answer: {"error": {"message", "type", "param", "code"}}.
void ls_http_error(hreq *r, unsigned status, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void ls_http_json(hreq *r, unsigned status, json_t *j); // takes j
// A completion request's body (chat when r->chat) as the prep pool takes it, or NULL with r's
// error answer set.
Longseq__SubmitRequest *ls_http_build_job(hreq *r, json_t *q);
// The completion object of a finished job (the answer of a request, a batch's output line).
json_t *ls_http_completion(const ls_http *h, bool chat, const char *job, int64_t created, const ls_job *j,
                           const Longseq__JobResult *jr);

// --- the Batch API (batch.c) --------------------------------------------------------------
ls_status ls_batches_start(ls_http *h);          // the open batches of the store, resumed
void ls_batches_free(ls_http *h);
void ls_batches_tick(ls_http *h);                // submits lines, closes finished batches
void ls_batches_prep_done(ls_http *h, ls_prep_task *t);
// The routes /v1/files[/ID[/content]] and /v1/batches[/ID[/cancel]]: false when url is neither.
// Without run, only whether the method fits (else r gets its 404 or 405); with run, the answer.
bool ls_batches_route(hreq *r, const char *method, const char *url, bool run);

#endif // LS_HTTP_IMPL_H
