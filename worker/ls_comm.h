// ls_comm.h — the exchange layer of a worker group: point-to-point transfers started together
// and waited for later (so compute can run in between), broadcast, all-gather and a sum
// reduction. An interface (iface + ctx) with an MPI implementation over host buffers
// (comm_mpi.c) and an NCCL one over device buffers (comm_nccl.c). Every wait has a timeout
// (LS_COMM_TIMEOUT seconds, default 300): a peer that hangs becomes an error naming it, never
// a hang. Each transfer is counted per layer (bytes sent, received, time spent waiting) for
// `--stats`. Tests: tests/oracle/test_sp.py (under mpirun, failures included).
#ifndef LS_COMM_H
#define LS_COMM_H

#include "ls_base.h"

typedef struct ls_comm ls_comm_t;

#define LS_COMM_MAX_XFERS 64

// One transfer of a batch: send `bytes` from buf to rank `peer`, or receive them into buf.
typedef struct ls_xfer {
    void *buf;
    size_t bytes;
    int peer;
    bool recv;
} ls_xfer;

typedef struct ls_comm_batch {
    int n;
    void *reqs; // implementation's requests
    double t_start;
} ls_comm_batch;

// The per-layer counters of one rank.
typedef struct ls_comm_stats {
    int n_layers;
    uint64_t *sent, *recvd; // [n_layers] bytes
    double *wait_ms;        // [n_layers]
} ls_comm_stats;

// The interface an implementation fills (MPI now; NCCL, with device buffers, later). Every
// slot starts an operation (`start` also says each request's peer); `test` reports whether
// started ones have finished. The generic layer (comm.c) adds timeouts and statistics.
typedef struct ls_comm_iface {
    const char *name;
    ls_status (*start)(void *impl, const ls_xfer *x, int n, int tag, void *reqs, int *peers, int *n_reqs);
    ls_status (*bcast)(void *impl, void *buf, size_t bytes, int root, void *req);
    ls_status (*allgather)(void *impl, const void *send, void *recv, size_t bytes, void *req);
    ls_status (*allreduce_sum)(void *impl, double *buf, int n, void *req);
    ls_status (*test)(void *impl, int n, void *reqs, bool *done);
    void (*abort)(void *impl, int code);
    void (*finish)(void *impl);
    size_t req_size; // bytes of one request
    // Where start's and allgather's buffers live: host memory (MPI) or device memory (NCCL).
    // bcast and allreduce_sum always take host memory (job control).
    bool device_buffers;
} ls_comm_iface;

// A group over an implementation that knows its rank, size and node-local layout.
ls_comm_t *ls_comm_new(const ls_comm_iface *iface, void *impl, int rank, int size, int local_rank, int local_size);
// MPI_Init (thread level funneled) and a communicator over all ranks. argc/argv may be NULL.
ls_status ls_comm_mpi_init(int *argc, char ***argv, ls_comm_t **out);
// An NCCL group over the same ranks as `mpi` (which carries the unique id and the host-side
// control), on CUDA device `device` (< 0: the current one); its transfers are counted in mpi's statistics. Every rank
// calls it together; all of them fail together (LS_ERR_DEVICE naming NCCL's reason) if any
// rank cannot start. Only in builds with CUDA (LS_HAVE_CUDA).
ls_status ls_comm_nccl_init(ls_comm_t *mpi, int device, ls_comm_t **out);
// Counts c's transfers in owner's statistics (the NCCL group in its MPI group's).
void ls_comm_count_into(ls_comm_t *c, ls_comm_t *owner);
// True when start/allgather buffers must be device memory (NCCL).
bool ls_comm_device_buffers(const ls_comm_t *c);
const char *ls_comm_name(const ls_comm_t *c);

// Ends the group; an error on this rank aborts every rank (MPI_Abort) with `code`.
void ls_comm_finish(ls_comm_t *c);
void ls_comm_abort(ls_comm_t *c, int code);

int ls_comm_rank(const ls_comm_t *c);
int ls_comm_size(const ls_comm_t *c);
// Every rank's host name, gathered once (a collective; ls_comm_mpi_init does it) so that a
// timeout names the host of the rank that went silent (a link down, a host gone).
enum { LS_COMM_HOST_MAX = 64 };
ls_status ls_comm_learn_hosts(ls_comm_t *c);
const char *ls_comm_host(const ls_comm_t *c, int rank); // "?" before ls_comm_learn_hosts
// Ranks on this node and this rank's index among them (for threads per rank, GPU choice).
int ls_comm_local_size(const ls_comm_t *c);
int ls_comm_local_rank(const ls_comm_t *c);

// Transfers are counted against this layer (-1: not counted) until the next call.
void ls_comm_set_layer(ls_comm_t *c, int layer);
ls_status ls_comm_stats_init(ls_comm_t *c, int n_layers);
const ls_comm_stats *ls_comm_get_stats(const ls_comm_t *c);

// Message tags: a layer's transfers use the layer index; the others use these. All stay below
// 32767, the smallest tag bound MPI allows.
enum { LS_TAG_LOGITS = 32000, LS_TAG_MAX = 32767 };

// Starts the transfers (all nonblocking); every rank's sends must match its peers' receives.
ls_status ls_comm_start(ls_comm_t *c, const ls_xfer *x, int n, int tag, ls_comm_batch *b);
// Waits for a started batch (time waiting is counted), or fails after the timeout.
ls_status ls_comm_wait(ls_comm_t *c, ls_comm_batch *b);

ls_status ls_comm_bcast(ls_comm_t *c, void *buf, size_t bytes, int root);
// recv: [size][bytes], rank r's contribution at r * bytes.
ls_status ls_comm_allgather(ls_comm_t *c, const void *send, void *recv, size_t bytes);
// In place: each element summed over all ranks.
ls_status ls_comm_allreduce_sum(ls_comm_t *c, double *buf, int n);

#endif // LS_COMM_H
