// bench_triad.c — the machine's memory bandwidth, STREAM-like (bench/triad.h), with 1 and 2
// threads (or those given): the ceiling of a decode step, which reads every weight once.
// Divide a model's decode bytes per token by it for the best possible seconds per token
// (bench_engine prints that fraction). A benchmark: it never fails on a time.
//   bench_triad [--threads 1,2] [--reps 5]
#include "triad.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    int threads[8] = {1, 2}, n_threads = 2, reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            n_threads = 0;
            for (char *p = argv[++i], *end; *p && n_threads < 8; p = *end ? end + 1 : end) {
                threads[n_threads] = (int)strtol(p, &end, 10);
                if (end == p) break;
                if (threads[n_threads] > 0) n_threads++;
            }
        } else {
            fprintf(stderr, "usage: bench_triad [--threads 1,2] [--reps 5]\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    size_t n = triad_elems();
    printf("memory bandwidth: 3 arrays of %.0f MiB, best of %d passes (while running: over the threads' CPU time)\n\n"
           "| threads | triad GB/s | read GB/s | triad GB/s while running |\n|---:|---:|---:|---:|\n",
           n * 4.0 / (1 << 20), reps);
    for (int i = 0; i < n_threads; i++) {
        double tg, rg, run;
        if (triad_measure(threads[i], reps, &tg, &rg, &run) != LS_OK) {
            ls_err_report(stderr);
            return 1;
        }
        printf("| %d | %.2f | %.2f | %.2f |\n", threads[i], tg, rg, run);
        fflush(stdout);
    }
    return 0;
}
