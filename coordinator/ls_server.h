// ls_server.h — the coordinator (`longseq serve`): an event loop (poll) that speaks the framed
// protobuf protocol of ls_wire.h to many clients at once, keeps every job in the SQLite store
// (ls_store.h), turns documents into token sequences (task prompt, chat template, length
// checks), and hands them one at a time, FIFO, to a worker group that it launches (or that
// connects from outside) and relaunches when it dies. The job settings it checks are
// proto/ls_settings.h's, which the workers share. With `http` set, the same loop also serves
// an OpenAI-compatible HTTP API with batches and Prometheus metrics (http.c, batch.c).
// Tests: tests/oracle/test_service.py, tests/oracle/test_http.py, tests/unit/test_store.c,
// tests/fuzz/fuzz_frame.c.
#ifndef LS_SERVER_H
#define LS_SERVER_H

#include "ls_loader.h"
#include "ls_settings.h"
#include "ls_store.h"
#include "ls_wire.h"

typedef struct ls_server_opts {
    const char *listen;          // HOST:PORT (port 0: any free port, see on_ready)
    const char *advertise;       // the host the workers it launches connect to (NULL: 127.0.0.1)
    const char *state_dir;       // the job store lives here
    const char *token;           // the clients' bearer token itself
    // The workers' credential, which clients never see (worker_hello, worker_event need it and
    // client methods refuse it). NULL: a random one made at start, for the groups it launches
    // (passed in the launcher's environment only); external workers need it given.
    const char *worker_token;
    const char *model;           // GGUF (NULL: the default model)
    ls_rope_override rope;       // the server's RoPE overrides (also given to the workers)
    ls_load_opts load;           // LoRA adapters (may grow the vocabulary; also given to the workers)
    const char *chat_template;   // --chat-template: a name (ls_chat.h) instead of the model's own template
    int np;                      // ranks of the worker group
    const char *launcher;        // e.g. "mpirun" or "srun --mpi=pmix"
    const char *hosts, *hostfile; // NULL, or where mpirun places the ranks (ls_launch.h)
    bool external_workers;       // do not launch: wait for `longseq worker --connect`
    char **worker_args;          // extra options for `longseq worker` (engine options)
    int n_worker_args;
    size_t max_frame;            // bytes per message
    int max_docs;                // documents per Submit
    int64_t max_job_tokens;      // tokens per job (prompt + generated)
    int max_conns;               // open connections (one of them kept for the worker group's leader)
    size_t max_buffered;         // bytes of frames being received, over all connections
    int idle_timeout_s;          // a connection with no call in progress is closed after this
    int frame_timeout_s;         // a frame must arrive within this of its first byte
    int auth_timeout_s;          // a first frame's token must arrive within this of its first byte
    int attempts;                // runs of a job before a dying worker group fails it
    int worker_timeout_s;        // a running group that says nothing for this long is restarted
    int start_timeout_s;         // a group that does not say hello in this time is restarted
    int max_launch_failures;     // consecutive failed starts before queued jobs fail (0: never)
    const char *http;            // HOST:PORT for the OpenAI-compatible HTTP front end (NULL: none)
    size_t http_max_body;        // bytes of an HTTP request body
    size_t http_max_header;      // bytes of an HTTP request's headers (the request line too)
    int http_timeout_s;          // an HTTP request must arrive whole within this (also idle keep-alive)
    int http_max_conns;          // open HTTP connections
    const char *batch_in;        // offline batch (`longseq batch`): this JSONL runs as a batch (resumed
    const char *batch_out;       // when the state has it), its lines go to batch_out in order, then the server stops
    int64_t *batch_failed;       // (optional) how many of its lines failed
    bool quiet;                  // no per-job log lines
    void (*on_ready)(void *ctx, int port); // called once listening
    void *ready_ctx;
} ls_server_opts;
ls_server_opts ls_server_opts_default(void);

// Runs until SIGTERM/SIGINT (or ls_server_stop): then stops accepting, puts a running job
// back in the queue, stops the worker group and returns LS_OK.
ls_status ls_server_run(const ls_server_opts *o);
// Asks a running server to stop as on SIGTERM (async-signal-safe; from any thread).
void ls_server_stop(void);

#endif // LS_SERVER_H
