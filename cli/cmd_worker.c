// cmd_worker.c — worker groups: `longseq worker --task generate|perplexity|logits ARGS` is the
// MPI program (run by mpirun or srun); `--np N [--launcher CMD] [--hosts H | --hostfile F]` on
// generate and perplexity starts such a group and waits for it. Inside a group every rank
// loads the model, the leader (rank 0) reads and tokenizes the input and broadcasts it, and
// only the leader writes output, so the output has the same form whatever N is. Any error on a
// rank aborts the whole group, naming the rank. Tests: tests/oracle/test_sp.py,
// tests/multihost/test_multihost.py (--hosts), tests/cli/errors.sh.
#include "cli.h"
#include "ls_comm.h"
#include "ls_launch.h"
#include "ls_sp.h"
#include "ls_wire.h"
#include "ls_worker_serve.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static ls_comm_t *g_comm;

ls_comm_t *cli_group(void) { return g_comm; }
bool cli_is_leader(void) { return !g_comm || ls_comm_rank(g_comm) == 0; }

// --- launching a group ------------------------------------------------------------------------

// The options cli_maybe_launch takes for itself (each with a value).
static const char *const g_launch_opts[] = {"--np", "--launcher", "--hosts", "--hostfile"};

// The value of launch option `name` in argv[*i] (--name V or --name=V; *i advanced past V), or NULL.
static const char *launch_opt(const char *name, int argc, char **argv, int *i) {
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n)) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n] || *i + 1 >= argc) return NULL;
    return argv[++*i];
}

// The group's arguments: worker --task TASK and this command's own, less the launch options.
static int group_args(const char *task, int argc, char **argv, const char **args) {
    int k = 0;
    args[k++] = "worker", args[k++] = "--task", args[k++] = task;
    for (int i = 1; i < argc; i++) {
        bool taken = false;
        for (size_t m = 0; m < sizeof g_launch_opts / sizeof *g_launch_opts && !taken; m++)
            taken = launch_opt(g_launch_opts[m], argc, argv, &i) != NULL;
        if (!taken) args[k++] = argv[i];
    }
    return k;
}

int cli_maybe_launch(const char *task, int argc, char **argv) {
    const char *v[4] = {NULL, "mpirun", NULL, NULL}; // as getopt_long reads them: --np N or --np=N
    for (int i = 1; i < argc; i++)
        for (int m = 0; m < 4; m++) {
            int j = i;
            const char *x = launch_opt(g_launch_opts[m], argc, argv, &j);
            if (x) v[m] = x;
        }
    const char *np = v[0], *launcher = v[1];
    if (!np || g_comm) return -1;
    int64_t n;
    if (!cli_parse_int(task, "--np", np, 1, 4096, &n)) return 2;
    if (!launcher[strspn(launcher, " \t")]) return cli_usage_error(task, "--launcher is empty");
    ls_launch_opts lo = {.launcher = launcher, .np = (int)n, .hosts = v[2], .hostfile = v[3]};
    if (ls_launch_check_placement(&lo) != LS_OK) {
        cli_usage_error(task, "%s", ls_err_msg());
        ls_err_clear();
        return 2;
    }
    const char **args = ls_calloc((size_t)argc + 3, sizeof *args);
    lo.args = args, lo.n_args = group_args(task, argc, argv, args);
    pid_t pid;
    ls_status rc = ls_launch_group(&lo, &pid);
    ls_free(args);
    if (rc != LS_OK) return cli_fail();
    int st;
    while (waitpid(pid, &st, 0) < 0) {}
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    fprintf(stderr, "longseq %s: the worker group was killed by signal %d\n", task, WTERMSIG(st));
    return 1;
}

// --- group helpers ----------------------------------------------------------------------------

ls_status cli_group_share_ids(ls_vec_i32 *ids) {
    if (!g_comm) return LS_OK;
    int64_t n = (int64_t)ids->len;
    LS_CHECK(ls_comm_bcast(g_comm, &n, sizeof n, 0));
    if (n < 0 || n > (1ll << 30)) return LS_ERR(LS_ERR_RANGE, "the leader sent %lld tokens", (long long)n);
    ls_vec_i32_reserve(ids, (size_t)(n > 0 ? n : 1));
    ids->len = (size_t)n;
    return ls_comm_bcast(g_comm, ids->data, (size_t)n * sizeof *ids->data, 0);
}

ls_status cli_group_status(ls_status rc) {
    if (!g_comm) return rc;
    double failed = rc != LS_OK; // every rank learns whether any rank failed
    ls_status crc = ls_comm_allreduce_sum(g_comm, &failed, 1);
    if (rc != LS_OK) return rc;
    if (crc != LS_OK) return crc;
    return failed > 0 ? LS_ERR(LS_ERR_DEVICE, "another rank of the group failed (its message is above)") : LS_OK;
}

static void print_stats_row(const char *layer, int rank, const double *v) {
    fprintf(stderr, "[longseq stats] %5s %4d %14.0f %14.0f %10.3f\n", layer, rank, v[0], v[1], v[2]);
}

// Per layer and rank: bytes sent and received, ms waiting; then each rank's totals and peak
// resident memory.
void cli_group_stats(void) {
    if (!g_comm) return;
    const ls_comm_stats *s = ls_comm_get_stats(g_comm);
    int P = ls_comm_size(g_comm), L = s->n_layers;
    size_t per = (size_t)L * 3 + 1;
    double *mine = ls_calloc(per, sizeof *mine), *all = ls_calloc(per * (size_t)P, sizeof *all);
    for (int l = 0; l < L; l++) mine[3 * l] = (double)s->sent[l], mine[3 * l + 1] = (double)s->recvd[l], mine[3 * l + 2] = s->wait_ms[l];
    struct rusage ru;
    mine[per - 1] = getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : 0.0;
    if (ls_comm_allgather(g_comm, mine, all, per * sizeof *mine) == LS_OK && cli_is_leader()) {
        fprintf(stderr, "[longseq stats] %5s %4s %14s %14s %10s\n", "layer", "rank", "bytes_sent", "bytes_received", "wait_ms");
        char name[16];
        for (int l = 0; l < L; l++)
            for (int r = 0; r < P; r++) {
                snprintf(name, sizeof name, "%d", l);
                print_stats_row(name, r, all + per * (size_t)r + 3 * (size_t)l);
            }
        for (int r = 0; r < P; r++) {
            double t[3] = {0};
            for (int l = 0; l < L; l++)
                for (int j = 0; j < 3; j++) t[j] += all[per * (size_t)r + 3 * (size_t)l + (size_t)j];
            print_stats_row("all", r, t);
        }
        for (int r = 0; r < P; r++)
            fprintf(stderr, "[longseq stats] rank %d on %s peak resident memory %.1f MiB\n", r, ls_comm_host(g_comm, r),
                    all[per * (size_t)r + per - 1]);
    }
    ls_free(mine), ls_free(all);
}

// The shards of a plan, one line per rank, for --stats.
static void print_plan(const ls_plan_t *plan) {
    if (!cli_is_leader()) return;
    for (int r = 0; r < ls_plan_ranks(plan); r++) {
        ls_range own[2];
        int n = ls_plan_owned(plan, r, own);
        fprintf(stderr, "[longseq plan] rank %d owns", r);
        for (int i = 0; i < n; i++) fprintf(stderr, " %lld-%lld", (long long)own[i].lo, (long long)own[i].hi);
        fprintf(stderr, "\n");
    }
}

// --- the logits task (for tests and tools) ------------------------------------------------------

typedef struct gathered {
    float *rows;   // [n][n_vocab] on each rank: its own positions filled
    int64_t n_vocab;
} gathered;

static ls_status keep_row(void *ctx, int64_t pos, const float *logits) {
    gathered *g = ctx;
    memcpy(g->rows + pos * g->n_vocab, logits, (size_t)g->n_vocab * sizeof *logits);
    return LS_OK;
}

// Every rank sends the logits of the positions it owns to the leader.
static ls_status gather_rows(const ls_plan_t *plan, gathered *g, int64_t n) {
    int me = ls_comm_rank(g_comm);
    for (int64_t p = 0; p < n; p++) { // one position at a time: simple and exact, for tests
        int owner = ls_plan_owner(plan, p);
        if (owner == 0 || (me != 0 && me != owner)) continue;
        ls_xfer x = {g->rows + p * g->n_vocab, (size_t)g->n_vocab * sizeof(float), me == 0 ? owner : 0, me == 0};
        ls_comm_batch b;
        LS_CHECK(ls_comm_start(g_comm, &x, 1, LS_TAG_LOGITS, &b));
        LS_CHECK(ls_comm_wait(g_comm, &b));
    }
    return LS_OK;
}

static ls_status logits_task(const cli_engine_args *eng, const cli_attn_args *attn, const char *ids_path,
                             const char *out_path, int64_t decode_from, bool stats) {
    ls_engine_t *e = NULL;
    ls_vec_i32 ids = {0};
    ls_buf text = {0};
    ls_status rc = cli_engine_load(eng, &e);
    if (rc == LS_OK && cli_is_leader()) {
        rc = ls_file_read_all(ids_path, 1 << 26, &text);
        for (char *p = text.data, *end; rc == LS_OK && *p; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            ls_vec_i32_push(&ids, (int32_t)v);
        }
    }
    rc = cli_group_status(rc);
    if (rc == LS_OK) rc = cli_group_share_ids(&ids);
    int64_t n = (int64_t)ids.len, k = decode_from < 0 || decode_from > n ? n : decode_from;
    gathered g = {0};
    ls_sp_t *sp = NULL;
    ls_sp_opts so = {.n = k, .max_new = n - k};
    if (rc == LS_OK) rc = cli_attn_rule(attn, n, &so.rule);
    if (rc == LS_OK) rc = ls_sp_init(e, g_comm, &so, &sp);
    if (rc == LS_OK && stats) print_plan(ls_sp_plan(sp));
    if (rc == LS_OK) {
        g.n_vocab = ls_engine_config(e)->n_vocab;
        g.rows = ls_calloc((size_t)n * (size_t)g.n_vocab, sizeof(float));
        ls_forward_opts fo = {.logits_from = 0, .on_logits = keep_row, .ctx = &g};
        rc = ls_sp_prefill(sp, ids.data, &fo, NULL);
    }
    if (rc == LS_OK) rc = gather_rows(ls_sp_plan(sp), &g, k);
    for (int64_t p = k; p < n && rc == LS_OK; p++) rc = ls_sp_decode(sp, ids.data[p], g.rows + p * g.n_vocab);
    if (rc == LS_OK && cli_is_leader()) {
        FILE *f = fopen(out_path, "wb");
        if (!f || fwrite(g.rows, sizeof(float), (size_t)(n * g.n_vocab), f) != (size_t)(n * g.n_vocab))
            rc = LS_ERR(LS_ERR_IO, "cannot write %s", out_path);
        if (f) fclose(f);
    }
    ls_free(g.rows);
    ls_sp_free(sp);
    ls_engine_free(e);
    ls_vec_i32_free(&ids);
    ls_buf_free(&text);
    return rc;
}

static int cmd_logits(int argc, char **argv) {
    static const struct option opts[] = {{"ids", required_argument, 0, 'i'}, {"out", required_argument, 0, 'o'},
                                         {"decode-from", required_argument, 0, 'd'}, {"stats", no_argument, 0, 's'},
                                         CLI_ENGINE_OPTIONS, CLI_ATTN_OPTIONS, {0, 0, 0, 0}};
    cli_engine_args eng = cli_engine_args_default();
    cli_attn_args attn = cli_attn_args_default();
    const char *ids = NULL, *out = NULL;
    int64_t decode_from = -1;
    bool stats = false;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c >= CLI_ATTN_OPT) {
            if (cli_attn_option("logits", c, optarg, &attn)) return 2;
        } else if (c >= CLI_ENGINE_OPT) {
            if (cli_engine_option("logits", c, optarg, &eng)) return 2;
        } else if (c == 'i') ids = optarg;
        else if (c == 'o') out = optarg;
        else if (c == 's') stats = true;
        else if (c == 'd') {
            if (!cli_parse_int("logits", "--decode-from", optarg, 0, INT64_MAX, &decode_from)) return 2;
        } else return cli_usage_error("logits", "unknown option");
    }
    if (!ids || !out) return cli_usage_error("logits", "--ids FILE and --out FILE are required");
    cli_worker_engine_defaults(&eng);
    if (logits_task(&eng, &attn, ids, out, decode_from, stats) != LS_OK) return cli_fail();
    if (stats) cli_group_stats();
    return 0;
}

// --- the worker command ---------------------------------------------------------------------

void cli_worker_engine_defaults(cli_engine_args *eng) {
    if (!g_comm) return;
    int local = ls_comm_local_size(g_comm), cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int per = cores / local > 0 ? cores / local : 1;
    if (eng->opts.n_threads <= 0) eng->opts.n_threads = per;
    eng->opts.gpu = ls_comm_local_rank(g_comm); // GPU ranks: one GPU each, round robin on the node
    if (eng->opts.first_cpu >= 0) // ranks of a host take disjoint cores; oversubscribed: no binding
        eng->opts.first_cpu = local * per <= cores ? ls_comm_local_rank(g_comm) * per : -1;
}

// The workers' credential: --token-file F, else $LONGSEQ_WORKER_TOKEN (what `longseq serve`
// puts in the environment of the groups it launches).
static ls_status worker_token(const char *path, char **token) {
    if (path) return ls_wire_read_token(path, token);
    LS_CHECK(ls_wire_env_token("LONGSEQ_WORKER_TOKEN", token));
    if (!*token)
        return LS_ERR(LS_ERR_INVALID, "the workers' credential is missing: give --token-file F (the file given to "
                                      "`longseq serve --worker-token-file`) or set LONGSEQ_WORKER_TOKEN");
    return LS_OK;
}

// `longseq worker --connect HOST:PORT [--token-file F] [engine options]`: the options, then
// worker/serve.c.
static int worker_serve(int argc, char **argv) {
    static const struct option opts[] = {{"connect", required_argument, 0, 'c'}, {"token-file", required_argument, 0, 't'},
                                         CLI_ENGINE_OPTIONS, {0, 0, 0, 0}};
    cli_engine_args eng = cli_engine_args_default();
    const char *token_file = NULL;
    ls_worker_serve_opts o = {0};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c >= CLI_ENGINE_OPT) {
            if (cli_engine_option("worker", c, optarg, &eng)) return 2;
        } else if (c == 'c') o.addr = optarg;
        else if (c == 't') token_file = optarg;
        else return cli_usage_error("worker", "unknown option");
    }
    if (!o.addr) return cli_usage_error("worker", "--connect HOST:PORT is required");
    cli_worker_engine_defaults(&eng);
    o.model = eng.model;
    o.engine = eng.opts;
    o.engine.load = cli_load_opts(&eng);
    char *token = NULL;
    ls_status rc = cli_is_leader() ? worker_token(token_file, &token) : LS_OK;
    o.token = token;
    if (rc == LS_OK) rc = ls_worker_serve(g_comm, &o);
    ls_free(token);
    return rc == LS_OK ? 0 : cli_fail();
}

static void worker_help(void) {
    printf("usage: longseq worker --task generate|perplexity|logits [TASK OPTIONS]\n"
           "       longseq worker --connect HOST:PORT [--token-file F] [engine options]\n"
           "One rank of a worker group; started by a launcher on every rank, e.g.\n"
           "  mpirun -np 4 longseq worker --task perplexity --ctx 16384 FILE\n"
           "which is what `longseq perplexity --np 4 ...` runs (and likewise generate).\n"
           "  --task T             run one task over the group: generate and perplexity take\n"
           "                       their commands' own options (longseq generate --help,\n"
           "                       longseq perplexity --help); logits (for tests) takes --ids F\n"
           "                       --out F [--decode-from K] [--stats] and the engine and\n"
           "                       attention options\n"
           "  --connect HOST:PORT  serve a coordinator's jobs instead (longseq serve --workers\n"
           "                       external); --token-file F: the workers' credential (the file\n"
           "                       given to serve --worker-token-file; default\n"
           "                       $LONGSEQ_WORKER_TOKEN, which is how launched groups get it)\n"
           "Every rank loads the model; rank 0 reads the input and writes the output.\n");
}

int cmd_worker(int argc, char **argv) {
    const char *task = NULL;
    bool service = false, help = false;
    int k = 1;
    for (int i = 1; i < argc; i++) { // take --task out; the rest are the task's own options
        if (!strcmp(argv[i], "--task") && i + 1 < argc) task = argv[++i];
        else argv[k++] = argv[i];
        if (!strcmp(argv[i], "--connect")) service = true;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) help = true;
    }
    argc = k;
    if (help) { // before MPI starts (a task's own options: longseq TASK --help)
        worker_help();
        return 0;
    }
    if (!task && !service) return cli_usage_error("worker", "--task generate|perplexity|logits or --connect HOST:PORT is required");
    if (task && service) return cli_usage_error("worker", "--task and --connect do not go together");
    int (*run)(int, char **) = !task ? NULL : !strcmp(task, "generate") ? cmd_generate : !strcmp(task, "perplexity") ? cmd_perplexity
                             : !strcmp(task, "logits")   ? cmd_logits : NULL;
    if (task && !run) return cli_usage_error("worker", "unknown task \"%s\" (generate, perplexity, logits)", task);
    if (ls_comm_mpi_init(&argc, &argv, &g_comm) != LS_OK) return cli_fail();
    ls_log_set_rank(ls_comm_rank(g_comm));
    argv[0] = (char *)(task ? task : "worker");
    int status = service ? worker_serve(argc, argv) : run(argc, argv);
    if (status != 0) { // this rank failed (and said why): take the whole group down now
        fflush(stdout);
        fflush(stderr);
        ls_comm_abort(g_comm, status);
    }
    ls_sp_exchange_release();
    ls_comm_finish(g_comm);
    g_comm = NULL;
    return 0;
}
