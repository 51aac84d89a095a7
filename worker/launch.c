// launch.c — the one worker-group launcher (ls_launch.h): the command line, an environment
// array built for the child (never setenv), posix_spawnp. Tests: tests/cli/errors.sh (a
// launcher that cannot start, --hosts refused), tests/oracle/test_sp.py (--np groups),
// tests/oracle/test_service.py (the service's groups and their credential),
// tests/multihost/test_multihost.py (--hosts across namespaced hosts).
#include "ls_launch.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

// Open MPI refuses root and more ranks than cores unless told (docs/ops.md §1.1); a value the
// user set wins.
static const char *const g_mpi_env[] = {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
                                        "OMPI_MCA_rmaps_base_oversubscribe=1"};

// Whether entry e ("NAME=VALUE") sets the variable that name_or_entry ("NAME" or "NAME=...") names.
static bool same_name(const char *e, const char *name_or_entry) {
    size_t n = strcspn(name_or_entry, "=");
    return !strncmp(e, name_or_entry, n) && e[n] == '=';
}

static bool named_in(const char *e, const char *const *list, int n) {
    for (int i = 0; i < n; i++)
        if (same_name(e, list[i])) return true;
    return false;
}

// environ without the caller's names, then the Open MPI defaults not already there, then the
// caller's NAME=VALUE entries. The strings are shared with environ and o->env (free the array only).
static char **group_env(const ls_launch_opts *o) {
    size_t n = 0, k = 0;
    while (environ[n]) n++;
    char **env = ls_calloc(n + 3 + (size_t)o->n_env + 1, sizeof *env);
    for (size_t i = 0; i < n; i++)
        if (!named_in(environ[i], o->env, o->n_env)) env[k++] = environ[i];
    for (size_t m = 0; m < sizeof g_mpi_env / sizeof *g_mpi_env; m++) {
        bool set = named_in(g_mpi_env[m], o->env, o->n_env);
        for (size_t i = 0; i < n && !set; i++) set = same_name(environ[i], g_mpi_env[m]);
        if (!set) env[k++] = (char *)g_mpi_env[m];
    }
    for (int i = 0; i < o->n_env; i++)
        if (strchr(o->env[i], '=')) env[k++] = (char *)o->env[i];
    env[k] = NULL;
    return env;
}

static bool is_srun(const char *launcher) {
    const char *p = launcher + strspn(launcher, " \t");
    size_t n = strcspn(p, " \t");
    const char *base = p;
    for (size_t i = 0; i < n; i++)
        if (p[i] == '/') base = p + i + 1;
    return (size_t)(p + n - base) == 4 && !strncmp(base, "srun", 4);
}

// One "NAME[:SLOTS]" of a host list, from s to its end or the next ','.
static ls_status check_host(const char *s, size_t len) {
    size_t name = 0;
    while (name < len && (isalnum((unsigned char)s[name]) || strchr(".-_", s[name]))) name++;
    if (!name) return LS_ERR(LS_ERR_INVALID, "--hosts: empty host name in \"%.*s\" (expected NAME[:SLOTS],...)", (int)len, s);
    if (name == len) return LS_OK;
    if (s[name] != ':') return LS_ERR(LS_ERR_INVALID, "--hosts: \"%.*s\" is not NAME[:SLOTS]", (int)len, s);
    long slots = 0;
    size_t i = name + 1;
    for (; i < len && isdigit((unsigned char)s[i]) && slots <= 4096; i++) slots = slots * 10 + (s[i] - '0');
    if (i != len || slots < 1 || slots > 4096)
        return LS_ERR(LS_ERR_INVALID, "--hosts: the slots of \"%.*s\" must be a number from 1 to 4096", (int)len, s);
    return LS_OK;
}

ls_status ls_launch_check_placement(const ls_launch_opts *o) {
    if (!o->hosts && !o->hostfile) return LS_OK;
    if (o->hosts && o->hostfile) return LS_ERR(LS_ERR_INVALID, "give one of --hosts and --hostfile, not both");
    if (is_srun(o->launcher ? o->launcher : "mpirun"))
        return LS_ERR(LS_ERR_INVALID, "--hosts and --hostfile place ranks with mpirun; under srun, Slurm's allocation places them");
    if (o->hostfile) {
        if (access(o->hostfile, R_OK) != 0)
            return LS_ERR(LS_ERR_IO, "--hostfile %s: %s", o->hostfile, strerror(errno));
        return LS_OK;
    }
    const char *s = o->hosts;
    do {
        size_t len = strcspn(s, ",");
        LS_CHECK(check_host(s, len));
        s += len;
    } while (*s++);
    return LS_OK;
}

// LAUNCHER -np N SELF ARGS... in argv (words points into a copy of the launcher line).
static ls_status group_argv(const ls_launch_opts *o, char *words, const char *self, char *np, char **argv) {
    int k = 0;
    char *save = NULL;
    for (char *t = strtok_r(words, " \t", &save); t && k < 16; t = strtok_r(NULL, " \t", &save)) argv[k++] = t;
    if (!k) return LS_ERR(LS_ERR_INVALID, "the launcher is empty");
    const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    argv[k++] = !strcmp(prog, "srun") ? "-n" : "-np";
    argv[k++] = np;
    if (o->hosts) argv[k++] = "--host", argv[k++] = (char *)o->hosts;
    if (o->hostfile) argv[k++] = "--hostfile", argv[k++] = (char *)o->hostfile;
    argv[k++] = (char *)self;
    for (int i = 0; i < o->n_args; i++) argv[k++] = (char *)o->args[i];
    argv[k] = NULL;
    return LS_OK;
}

ls_status ls_launch_group(const ls_launch_opts *o, pid_t *pid) {
    char self[4096], np[16];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return LS_ERR(LS_ERR_IO, "cannot find the longseq binary (/proc/self/exe)");
    self[len] = 0;
    snprintf(np, sizeof np, "%d", o->np);
    const char *launcher = o->launcher ? o->launcher : "mpirun";
    char *words = ls_strndup(launcher, strlen(launcher));
    char **argv = ls_calloc(16 + 5 + (size_t)o->n_args + 1, sizeof *argv);
    ls_status rc = ls_launch_check_placement(o);
    if (rc == LS_OK) rc = group_argv(o, words, self, np, argv);
    char **env = rc == LS_OK ? group_env(o) : NULL;
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | (o->own_group ? POSIX_SPAWN_SETPGROUP : 0));
    int e = rc == LS_OK ? posix_spawnp(pid, argv[0], NULL, &at, argv, env) : 0;
    if (e) rc = LS_ERR(LS_ERR_IO, "cannot start the launcher \"%s\": %s", argv[0], strerror(e));
    posix_spawnattr_destroy(&at);
    ls_free(env);
    ls_free(argv);
    ls_free(words);
    return rc;
}
