// comm.c — the implementation-independent half of the exchange layer: batches, waits with a
// timeout (LS_COMM_TIMEOUT seconds) whose error names the silent rank and its host, per-layer
// statistics. The transport is an ls_comm_iface (comm_mpi.c). Tests: tests/oracle/test_sp.py,
// tests/multihost/test_multihost.py (a host's link down: the host named).
#include "ls_comm.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

LS_PARAM(comm_timeout_s, "LS_COMM_TIMEOUT", 300)

#define MAX_REQS (LS_COMM_MAX_XFERS * 4)

struct ls_comm {
    const ls_comm_iface *iface;
    void *impl;
    int rank, size, local_rank, local_size, layer;
    ls_comm_stats stats;
    ls_comm_t *stats_owner; // counts go to this group's statistics (NCCL: its MPI group), or NULL
    void *reqs;          // [MAX_REQS] of iface->req_size bytes: one batch in flight at a time
    int peers[MAX_REQS]; // the peer of each request of the batch
    char (*hosts)[LS_COMM_HOST_MAX]; // [size] each rank's host name (NULL: not learnt)
};

ls_comm_t *ls_comm_new(const ls_comm_iface *iface, void *impl, int rank, int size, int local_rank, int local_size) {
    ls_comm_t *c = ls_calloc(1, sizeof *c);
    *c = (ls_comm_t){.iface = iface, .impl = impl, .rank = rank, .size = size, .local_rank = local_rank,
                     .local_size = local_size, .layer = -1};
    c->reqs = ls_calloc(MAX_REQS, iface->req_size);
    return c;
}

void ls_comm_finish(ls_comm_t *c) {
    if (!c) return;
    ls_free(c->stats.sent), ls_free(c->stats.recvd), ls_free(c->stats.wait_ms);
    ls_free(c->reqs);
    ls_free(c->hosts);
    c->iface->finish(c->impl);
    ls_free(c);
}

void ls_comm_abort(ls_comm_t *c, int code) { c->iface->abort(c->impl, code); }
int ls_comm_rank(const ls_comm_t *c) { return c->rank; }
int ls_comm_size(const ls_comm_t *c) { return c->size; }
int ls_comm_local_size(const ls_comm_t *c) { return c->local_size; }
int ls_comm_local_rank(const ls_comm_t *c) { return c->local_rank; }
void ls_comm_set_layer(ls_comm_t *c, int layer) {
    c->layer = layer;
    if (c->stats_owner) c->stats_owner->layer = layer;
}
const ls_comm_stats *ls_comm_get_stats(const ls_comm_t *c) { return c->stats_owner ? &c->stats_owner->stats : &c->stats; }
bool ls_comm_device_buffers(const ls_comm_t *c) { return c->iface->device_buffers; }
const char *ls_comm_name(const ls_comm_t *c) { return c->iface->name; }
void ls_comm_count_into(ls_comm_t *c, ls_comm_t *owner) { c->stats_owner = owner; }
const char *ls_comm_host(const ls_comm_t *c, int rank) {
    return c->hosts && rank >= 0 && rank < c->size ? c->hosts[rank] : "?";
}

ls_status ls_comm_learn_hosts(ls_comm_t *c) {
    char me[LS_COMM_HOST_MAX] = "";
    if (gethostname(me, sizeof me - 1) != 0) snprintf(me, sizeof me, "?");
    char(*all)[LS_COMM_HOST_MAX] = ls_calloc((size_t)c->size, sizeof *all);
    ls_status rc = ls_comm_allgather(c, me, all, sizeof me);
    if (rc != LS_OK) {
        ls_free(all);
        return rc;
    }
    for (int r = 0; r < c->size; r++) all[r][LS_COMM_HOST_MAX - 1] = 0;
    ls_free(c->hosts);
    c->hosts = all;
    return LS_OK;
}

ls_status ls_comm_stats_init(ls_comm_t *c, int n_layers) {
    if (c->stats_owner) c = c->stats_owner;
    ls_comm_stats *s = &c->stats;
    ls_free(s->sent), ls_free(s->recvd), ls_free(s->wait_ms);
    s->n_layers = n_layers;
    s->sent = ls_calloc((size_t)n_layers, sizeof *s->sent);
    s->recvd = ls_calloc((size_t)n_layers, sizeof *s->recvd);
    s->wait_ms = ls_calloc((size_t)n_layers, sizeof *s->wait_ms);
    return LS_OK;
}

static void count(ls_comm_t *c, size_t sent, size_t recvd, double ms) {
    if (c->stats_owner) c = c->stats_owner;
    if (c->layer < 0 || c->layer >= c->stats.n_layers) return;
    c->stats.sent[c->layer] += sent;
    c->stats.recvd[c->layer] += recvd;
    c->stats.wait_ms[c->layer] += ms;
}

// The peer of the first request of a point-to-point batch still pending, or -1.
static int pending_peer(ls_comm_t *c, int n, void *reqs) {
    for (int i = 0; i < n; i++) {
        bool done = true;
        if (c->iface->test(c->impl, 1, (char *)reqs + (size_t)i * c->iface->req_size, &done) == LS_OK && !done)
            return c->peers[i];
    }
    return -1;
}

// The hosts of the group other than this rank's (at most 8 named, then how many more), for a
// collective's timeout: MPI cannot say which rank is missing, so the message names where to look.
static void other_hosts(const ls_comm_t *c, char *out, size_t cap) {
    size_t len = 0;
    int named = 0, more = 0;
    out[0] = 0;
    for (int r = 0; c->hosts && r < c->size; r++) {
        bool seen = !strcmp(c->hosts[r], c->hosts[c->rank]);
        for (int q = 0; q < r && !seen; q++) seen = !strcmp(c->hosts[q], c->hosts[r]);
        if (seen) continue;
        if (named == 8) {
            more++;
            continue;
        }
        int k = snprintf(out + len, cap - len, "%s%s", named ? ", " : "; the other hosts: ", c->hosts[r]);
        if (k > 0 && (size_t)k < cap - len) len += (size_t)k, named++;
    }
    if (more) snprintf(out + len, cap - len, " and %d more", more);
}

// Polls until the requests complete; after the timeout, an error naming what and whom (peer:
// the collective's root, -1 for none, -2 for a point-to-point batch).
static ls_status wait_reqs(ls_comm_t *c, int n, void *reqs, const char *what, int peer) {
    double t0 = ls_time_ms(), deadline = t0 + 1e3 * (double)ls_param_comm_timeout_s();
    for (long spins = 0;; spins++) {
        bool done = false;
        LS_CHECK(c->iface->test(c->impl, n, reqs, &done));
        if (done) break;
        if (ls_time_ms() > deadline) {
            if (peer == -2) peer = pending_peer(c, n, reqs);
            char others[640];
            other_hosts(c, others, sizeof others);
            return peer >= 0 ? LS_ERR(LS_ERR_DEVICE, "rank %d (host %s): no answer from rank %d (host %s) for %lld s during %s",
                                      c->rank, ls_comm_host(c, c->rank), peer, ls_comm_host(c, peer),
                                      (long long)ls_param_comm_timeout_s(), what)
                             : LS_ERR(LS_ERR_DEVICE, "rank %d (host %s): the group did not complete %s within %lld s%s", c->rank,
                                      ls_comm_host(c, c->rank), what, (long long)ls_param_comm_timeout_s(), others);
        }
        if (spins > 1000) nanosleep(&(struct timespec){0, 20000}, NULL); // a long wait: stop burning a core
    }
    count(c, 0, 0, ls_time_ms() - t0);
    return LS_OK;
}

ls_status ls_comm_start(ls_comm_t *c, const ls_xfer *x, int n, int tag, ls_comm_batch *b) {
    if (n > LS_COMM_MAX_XFERS) return LS_ERR(LS_ERR_INTERNAL, "rank %d: %d transfers in one batch", c->rank, n);
    int k = 0;
    LS_CHECK(c->iface->start(c->impl, x, n, tag, c->reqs, c->peers, &k));
    size_t sent = 0, recvd = 0;
    for (int i = 0; i < n; i++) *(x[i].recv ? &recvd : &sent) += x[i].bytes;
    count(c, sent, recvd, 0.0);
    *b = (ls_comm_batch){.n = k, .reqs = c->reqs, .t_start = ls_time_ms()};
    return LS_OK;
}

ls_status ls_comm_wait(ls_comm_t *c, ls_comm_batch *b) {
    ls_status rc = wait_reqs(c, b->n, b->reqs, "a key/value exchange", -2);
    b->n = 0;
    return rc;
}

ls_status ls_comm_bcast(ls_comm_t *c, void *buf, size_t bytes, int root) {
    LS_CHECK(c->iface->bcast(c->impl, buf, bytes, root, c->reqs));
    return wait_reqs(c, 1, c->reqs, "a broadcast", root);
}

ls_status ls_comm_allgather(ls_comm_t *c, const void *send, void *recv, size_t bytes) {
    LS_CHECK(c->iface->allgather(c->impl, send, recv, bytes, c->reqs));
    count(c, bytes * (size_t)(c->size - 1), bytes * (size_t)(c->size - 1), 0.0);
    return wait_reqs(c, 1, c->reqs, "an all-gather", -1);
}

ls_status ls_comm_allreduce_sum(ls_comm_t *c, double *buf, int n) {
    LS_CHECK(c->iface->allreduce_sum(c->impl, buf, n, c->reqs));
    return wait_reqs(c, 1, c->reqs, "a reduction", -1);
}
