// bench_comm.c — the exchange layer's point-to-point speed between two ranks (ls_comm over
// MPI, the path K/V blocks take): one-way latency of small messages and bandwidth of large
// ones, from ping-pongs. Run under the launcher: `mpirun -np 2 build/bench/bench_comm`.
// A benchmark: it prints a table and never fails on a time. Its figures feed the capacity
// planner's link constants (deploy/capacity.json).
#include "ls_comm.h"

#include <stdlib.h>
#include <string.h>

// Mean one-way time of `bytes` over `reps` round trips between ranks 0 and 1.
static ls_status pingpong(ls_comm_t *c, char *buf, size_t bytes, int reps, double *one_way_s) {
    int me = ls_comm_rank(c), peer = 1 - me;
    double t0 = ls_time_ms();
    for (int i = 0; i < reps; i++) {
        for (int leg = 0; leg < 2; leg++) {
            ls_xfer x = {buf, bytes, peer, (leg == 0) != (me == 0)};
            ls_comm_batch b;
            LS_CHECK(ls_comm_start(c, &x, 1, 1, &b));
            LS_CHECK(ls_comm_wait(c, &b));
        }
    }
    *one_way_s = (ls_time_ms() - t0) / 1e3 / (2.0 * reps);
    return LS_OK;
}

int main(int argc, char **argv) {
    ls_comm_t *c;
    if (ls_comm_mpi_init(&argc, &argv, &c) != LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    if (ls_comm_size(c) != 2) {
        if (ls_comm_rank(c) == 0) fprintf(stderr, "bench_comm: run it with 2 ranks (mpirun -np 2)\n");
        ls_comm_finish(c);
        return 2;
    }
    size_t max = (size_t)64 << 20;
    char *buf = ls_malloc(max);
    memset(buf, 1, max);
    if (ls_comm_rank(c) == 0) printf("| bytes | one-way (us) | GB/s |\n|---:|---:|---:|\n");
    for (size_t bytes = 8; bytes <= max; bytes *= 8) {
        int reps = bytes <= 65536 ? 2000 : bytes <= (1 << 20) ? 200 : 20;
        double t = 0;
        if (pingpong(c, buf, bytes, reps, &t) != LS_OK) {
            ls_err_report(stderr);
            ls_comm_abort(c, 1);
        }
        if (ls_comm_rank(c) == 0) printf("| %zu | %.2f | %.3f |\n", bytes, t * 1e6, (double)bytes / t / 1e9);
    }
    ls_free(buf);
    ls_comm_finish(c);
    return 0;
}
