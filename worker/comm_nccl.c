// comm_nccl.c — the NCCL implementation of the exchange layer (ls_comm.h), for groups whose
// every rank runs the CUDA backend. Point-to-point batches (grouped ncclSend/ncclRecv) and the
// all-gather move device buffers; they are issued on the legacy default stream, which orders
// them after the kernels already queued on the backends' (blocking) streams and before the
// ones queued later. One CUDA event per batch is what `test` polls, so the generic layer's
// timeouts and statistics apply unchanged. Broadcasts and sums carry host values (job
// control) and go through the group's MPI communicator, which also carries the unique id.
// Built with CUDA only. Tests: tests/gpu/e2e.py (np=1 NCCL path, on a GPU machine).
#include "ls_comm.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

typedef struct nccl_impl {
    ls_comm_t *mpi; // control messages; not owned
    ncclComm_t comm;
    cudaEvent_t done; // recorded after the batch in flight (one at a time)
} nccl_impl;

enum { REQ_EVENT = 1, REQ_DONE = 2 }; // a request: wait for `done`, or already complete
typedef struct nccl_req {
    int kind;
} nccl_req;

#define NCCL_CHECK(call)                                                                          \
    do {                                                                                          \
        ncclResult_t r_ = (call);                                                                 \
        if (r_ != ncclSuccess) return LS_ERR(LS_ERR_DEVICE, "%s failed: %s", #call, ncclGetErrorString(r_)); \
    } while (0)
#define CUDA_CHECK(call)                                                                          \
    do {                                                                                          \
        cudaError_t e_ = (call);                                                                  \
        if (e_ != cudaSuccess) return LS_ERR(LS_ERR_DEVICE, "%s failed: %s", #call, cudaGetErrorString(e_)); \
    } while (0)

static ls_status mark(nccl_impl *m, void *req) {
    CUDA_CHECK(cudaEventRecord(m->done, 0));
    ((nccl_req *)req)->kind = REQ_EVENT;
    return LS_OK;
}

static ls_status nccl_start(void *vi, const ls_xfer *x, int n, int tag, void *reqs, int *peers, int *n_reqs) {
    (void)tag; // NCCL keeps the order of transfers between two ranks; batches never overlap
    nccl_impl *m = vi;
    NCCL_CHECK(ncclGroupStart());
    for (int i = 0; i < n; i++) {
        ncclResult_t r = x[i].recv ? ncclRecv(x[i].buf, x[i].bytes, ncclChar, x[i].peer, m->comm, 0)
                                   : ncclSend(x[i].buf, x[i].bytes, ncclChar, x[i].peer, m->comm, 0);
        if (r != ncclSuccess) {
            ncclGroupEnd();
            return LS_ERR(LS_ERR_DEVICE, "NCCL %s of %zu bytes with rank %d failed: %s", x[i].recv ? "receive" : "send",
                          x[i].bytes, x[i].peer, ncclGetErrorString(r));
        }
    }
    NCCL_CHECK(ncclGroupEnd());
    LS_CHECK(mark(m, reqs));
    peers[0] = n ? x[0].peer : -1;
    *n_reqs = 1;
    return LS_OK;
}

static ls_status nccl_bcast(void *vi, void *buf, size_t bytes, int root, void *req) {
    LS_CHECK(ls_comm_bcast(((nccl_impl *)vi)->mpi, buf, bytes, root));
    ((nccl_req *)req)->kind = REQ_DONE;
    return LS_OK;
}

static ls_status nccl_allgather(void *vi, const void *send, void *recv, size_t bytes, void *req) {
    nccl_impl *m = vi;
    NCCL_CHECK(ncclAllGather(send, recv, bytes, ncclChar, m->comm, 0));
    return mark(m, req);
}

static ls_status nccl_allreduce_sum(void *vi, double *buf, int n, void *req) {
    LS_CHECK(ls_comm_allreduce_sum(((nccl_impl *)vi)->mpi, buf, n));
    ((nccl_req *)req)->kind = REQ_DONE;
    return LS_OK;
}

static ls_status nccl_test(void *vi, int n, void *reqs, bool *done) {
    nccl_impl *m = vi;
    *done = true;
    for (int i = 0; i < n; i++) {
        if (((nccl_req *)reqs)[i].kind != REQ_EVENT) continue;
        cudaError_t e = cudaEventQuery(m->done);
        if (e == cudaErrorNotReady) {
            ncclResult_t async;
            NCCL_CHECK(ncclCommGetAsyncError(m->comm, &async));
            if (async != ncclSuccess) return LS_ERR(LS_ERR_DEVICE, "NCCL: %s", ncclGetErrorString(async));
            *done = false;
            return LS_OK;
        }
        CUDA_CHECK(e);
    }
    return LS_OK;
}

static void nccl_abort(void *vi, int code) {
    nccl_impl *m = vi;
    ncclCommAbort(m->comm);
    ls_comm_abort(m->mpi, code);
}

static void nccl_finish(void *vi) {
    nccl_impl *m = vi;
    cudaDeviceSynchronize();
    ncclCommDestroy(m->comm);
    cudaEventDestroy(m->done);
    ls_free(m);
}

static const ls_comm_iface g_nccl = {
    .name = "nccl", .start = nccl_start, .bcast = nccl_bcast, .allgather = nccl_allgather,
    .allreduce_sum = nccl_allreduce_sum, .test = nccl_test, .abort = nccl_abort, .finish = nccl_finish,
    .req_size = sizeof(nccl_req), .device_buffers = true};

ls_status ls_comm_nccl_init(ls_comm_t *mpi, int device, ls_comm_t **out) {
    *out = NULL;
    int rank = ls_comm_rank(mpi), size = ls_comm_size(mpi);
    struct {
        ncclUniqueId id;
        int32_t ok;
    } hello = {.ok = 1};
    if (rank == 0) hello.ok = ncclGetUniqueId(&hello.id) == ncclSuccess;
    LS_CHECK(ls_comm_bcast(mpi, &hello, sizeof hello, 0));
    if (!hello.ok) return LS_ERR(LS_ERR_DEVICE, "rank %d: NCCL could not make a unique id on rank 0", rank);
    ncclComm_t comm = NULL;
    if (device < 0 && cudaGetDevice(&device) != cudaSuccess) device = 0; // the backend's device
    ncclResult_t r = cudaSetDevice(device) == cudaSuccess ? ncclCommInitRank(&comm, size, hello.id, rank) : ncclUnhandledCudaError;
    double failed = r != ncclSuccess;
    LS_CHECK(ls_comm_allreduce_sum(mpi, &failed, 1)); // all ranks go on together, or none
    if (failed > 0) {
        if (r == ncclSuccess) ncclCommDestroy(comm);
        return LS_ERR(LS_ERR_DEVICE, "rank %d: NCCL could not start a group of %d ranks on GPU %d: %s", rank, size, device,
                      r != ncclSuccess ? ncclGetErrorString(r) : "another rank failed");
    }
    nccl_impl *m = ls_calloc(1, sizeof *m);
    m->mpi = mpi, m->comm = comm;
    if (cudaEventCreateWithFlags(&m->done, cudaEventDisableTiming) != cudaSuccess) {
        ncclCommDestroy(comm);
        ls_free(m);
        return LS_ERR(LS_ERR_DEVICE, "rank %d: cannot create a CUDA event", rank);
    }
    *out = ls_comm_new(&g_nccl, m, rank, size, ls_comm_local_rank(mpi), ls_comm_local_size(mpi));
    ls_comm_count_into(*out, mpi);
    return LS_OK;
}
