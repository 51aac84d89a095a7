// comm_mpi.c — the MPI transport of the exchange layer (host buffers): nonblocking sends and
// receives split into pieces below 2 GiB (MPI counts are ints), and the nonblocking forms of
// the collectives, so the generic layer (comm.c) can wait with a timeout.
// Tests: tests/oracle/test_sp.py.
#include "ls_comm.h"

#include <mpi.h>

#define PIECE ((size_t)1 << 30)

typedef struct mpi_impl {
    MPI_Comm world, node;
    int rank;
} mpi_impl;

static ls_status mpi_start(void *vi, const ls_xfer *x, int n, int tag, void *vreqs, int *peers, int *n_reqs) {
    mpi_impl *m = vi;
    MPI_Request *reqs = vreqs;
    int k = 0;
    for (int i = 0; i < n; i++) {
        size_t off = 0;
        do { // at least one message, even for 0 bytes, so the peer's matching call completes
            if (k == LS_COMM_MAX_XFERS * 4) return LS_ERR(LS_ERR_INTERNAL, "rank %d: too many MPI requests", m->rank);
            int len = (int)(x[i].bytes - off < PIECE ? x[i].bytes - off : PIECE);
            char *p = (char *)x[i].buf + off;
            int e = x[i].recv ? MPI_Irecv(p, len, MPI_BYTE, x[i].peer, tag, m->world, &reqs[k])
                              : MPI_Isend(p, len, MPI_BYTE, x[i].peer, tag, m->world, &reqs[k]);
            if (e != MPI_SUCCESS) {
                char why[MPI_MAX_ERROR_STRING];
                int wl = 0;
                MPI_Error_string(e, why, &wl);
                return LS_ERR(LS_ERR_DEVICE, "rank %d: cannot start a transfer of %zu bytes %s rank %d (tag %d): %s",
                              m->rank, x[i].bytes, x[i].recv ? "from" : "to", x[i].peer, tag, why);
            }
            peers[k++] = x[i].peer;
            off += PIECE;
        } while (off < x[i].bytes);
    }
    *n_reqs = k;
    return LS_OK;
}

static ls_status mpi_bcast(void *vi, void *buf, size_t bytes, int root, void *req) {
    mpi_impl *m = vi;
    if (bytes > (size_t)INT32_MAX) return LS_ERR(LS_ERR_RANGE, "broadcast of %zu bytes", bytes);
    if (MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, m->world, req) != MPI_SUCCESS)
        return LS_ERR(LS_ERR_DEVICE, "rank %d: broadcast failed", m->rank);
    return LS_OK;
}

static ls_status mpi_allgather(void *vi, const void *send, void *recv, size_t bytes, void *req) {
    mpi_impl *m = vi;
    if (bytes > (size_t)INT32_MAX) return LS_ERR(LS_ERR_RANGE, "all-gather of %zu bytes per rank", bytes);
    if (MPI_Iallgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, m->world, req) != MPI_SUCCESS)
        return LS_ERR(LS_ERR_DEVICE, "rank %d: all-gather failed", m->rank);
    return LS_OK;
}

static ls_status mpi_allreduce_sum(void *vi, double *buf, int n, void *req) {
    mpi_impl *m = vi;
    if (MPI_Iallreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, m->world, req) != MPI_SUCCESS)
        return LS_ERR(LS_ERR_DEVICE, "rank %d: reduction failed", m->rank);
    return LS_OK;
}

static ls_status mpi_test(void *vi, int n, void *reqs, bool *done) {
    mpi_impl *m = vi;
    int flag = 0;
    if (MPI_Testall(n, reqs, &flag, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
        return LS_ERR(LS_ERR_DEVICE, "rank %d: an MPI transfer failed", m->rank);
    *done = flag != 0;
    return LS_OK;
}

static void mpi_abort(void *vi, int code) { MPI_Abort(vi ? ((mpi_impl *)vi)->world : MPI_COMM_WORLD, code); }

static void mpi_finish(void *vi) {
    mpi_impl *m = vi;
    MPI_Comm_free(&m->node);
    ls_free(m);
    MPI_Finalize();
}

static const ls_comm_iface g_mpi = {
    .name = "mpi", .start = mpi_start, .bcast = mpi_bcast, .allgather = mpi_allgather,
    .allreduce_sum = mpi_allreduce_sum, .test = mpi_test, .abort = mpi_abort, .finish = mpi_finish,
    .req_size = sizeof(MPI_Request)};

ls_status ls_comm_mpi_init(int *argc, char ***argv, ls_comm_t **out) {
    int provided = 0, size, lr, ls;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return LS_ERR(LS_ERR_DEVICE, "MPI_Init_thread failed");
    mpi_impl *m = ls_calloc(1, sizeof *m);
    m->world = MPI_COMM_WORLD;
    MPI_Comm_set_errhandler(m->world, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->world, &m->rank);
    MPI_Comm_size(m->world, &size);
    MPI_Comm_split_type(m->world, MPI_COMM_TYPE_SHARED, m->rank, MPI_INFO_NULL, &m->node);
    MPI_Comm_rank(m->node, &lr);
    MPI_Comm_size(m->node, &ls);
    *out = ls_comm_new(&g_mpi, m, m->rank, size, lr, ls);
    return ls_comm_learn_hosts(*out);
}
