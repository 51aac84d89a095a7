// ls_worker_serve.h — a worker group serving a coordinator (`longseq worker --connect`): every
// rank loads the model; the leader connects, says hello with the workers' credential, and the
// group runs the jobs it is sent, one at a time, streaming progress and text back
// (docs/protocol.md ("The worker group's side")). Tests: tests/oracle/test_service.py.
#ifndef LS_WORKER_SERVE_H
#define LS_WORKER_SERVE_H

#include "ls_comm.h"
#include "ls_engine.h"

typedef struct ls_worker_serve_opts {
    const char *addr;      // the coordinator's HOST:PORT
    const char *token;     // the workers' credential (needed on the leader only)
    const char *model;     // GGUF or checkpoint directory; NULL: the default model
    ls_engine_opts engine; // threads, device, the server's RoPE overrides, adapters
} ls_worker_serve_opts;

// Serves until the coordinator goes away (LS_OK) or the group breaks (a rank gone, a
// timeout: an error, after which the process should end so the coordinator starts another).
ls_status ls_worker_serve(ls_comm_t *comm, const ls_worker_serve_opts *o);

#endif // LS_WORKER_SERVE_H
