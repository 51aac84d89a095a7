// ls_launch.h — starting a worker group: `LAUNCHER -np N <this longseq binary> ARGS...` (srun
// gets -n), with an environment built for the group alone: the process's own, Open MPI's
// permission to run as root and to oversubscribe (unless already set; docs/ops.md §1.1), and the
// entries the caller adds, such as the workers' credential. The process environment itself is
// never changed, so a server running on a thread of a bigger program (`summarize`) can launch
// while other threads read it. Ranks are placed on named hosts with `--host LIST` or
// `--hostfile F` (mpirun's own options; docs/ops.md §5). Used by `generate`/`perplexity --np
// N` (cli/cmd_worker.c) and the job service (coordinator/server.c). Its own library,
// ls_launch, below the engine: the coordinator links it without MPI. Tests:
// tests/cli/errors.sh, tests/oracle/test_sp.py, tests/oracle/test_service.py,
// tests/multihost/test_multihost.py.
#ifndef LS_LAUNCH_H
#define LS_LAUNCH_H

#include "ls_base.h"

#include <sys/types.h>

typedef struct ls_launch_opts {
    const char *launcher;    // a program and plain options, split at spaces (NULL: "mpirun")
    int np;                  // ranks
    const char *const *args; // after the binary, e.g. "worker", "--connect", "HOST:PORT"
    int n_args;
    // NAME=VALUE entries for the group only (they replace the process's NAME); a bare NAME
    // leaves NAME out of the group's environment.
    const char *const *env;
    int n_env;
    bool own_group;          // in a process group of its own (stopped as a whole), no blocked signals
    const char *hosts;       // NULL, or "NAME[:SLOTS],..." where the ranks run (mpirun --host)
    const char *hostfile;    // NULL, or a file of hosts, as mpirun's --hostfile reads it
} ls_launch_opts;

// Whether o's placement can be passed on: hosts well formed (names of letters, digits, '.',
// '-', '_'; slots 1..4096), a readable hostfile, not both, and a launcher that is not srun
// (Slurm places ranks itself). LS_ERR_INVALID or LS_ERR_IO saying what is wrong.
ls_status ls_launch_check_placement(const ls_launch_opts *o);

// Spawns the launcher and returns at once with its pid. LS_ERR_INVALID for an empty launcher
// or a placement ls_launch_check_placement refuses, LS_ERR_IO naming the launcher when it
// cannot be started.
ls_status ls_launch_group(const ls_launch_opts *o, pid_t *pid);

#endif // LS_LAUNCH_H
