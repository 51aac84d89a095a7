// cmd_serve.c — `longseq serve`: the coordinator (coordinator/ls_server.h) from the command
// line. Engine options given here are the workers' (and the RoPE overrides also the
// coordinator's, for its length checks). Tests: tests/oracle/test_service.py.
#include "cli.h"
#include "ls_launch.h"
#include "ls_server.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void help(void) {
    printf("usage: longseq serve [options] [engine options]\n"
           "Runs the job service: accepts jobs over the framed protobuf protocol (docs/protocol.md),\n"
           "keeps them in a SQLite store, and runs them one at a time on a worker group.\n"
           "  --listen HOST:PORT   address (default 127.0.0.1:7070; port 0 picks one)\n"
           "  --advertise HOST     where the launched workers reach it (default 127.0.0.1; on\n"
           "                       several nodes: this node's name, with --listen 0.0.0.0:PORT)\n"
           "  --state DIR          job store directory (default $LONGSEQ_HOME/state)\n"
           "  --token-file F       bearer token (default $LONGSEQ_TOKEN, else $LONGSEQ_HOME/token,\n"
           "                       created with a random token when missing)\n"
           "  --np N               ranks of the worker group (default 1)\n"
           "  --launcher CMD       how to start it (default mpirun; e.g. \"srun --mpi=pmix\")\n"
           "  --hosts H1:N,H2:M    with mpirun: N ranks on host H1, M on H2 (give --advertise too)\n"
           "  --hostfile F         with mpirun: the hosts and their slots from F\n"
           "  --workers launch|external   external: start no group, wait for\n"
           "                       `longseq worker --connect HOST:PORT` (e.g. from an sbatch script)\n"
           "  --worker-token-file F   the workers' own credential, which clients never see\n"
           "                       (required with --workers external: give the workers the same\n"
           "                       file; default for launched groups: a random one per start)\n"
           "  --attempts N         runs of a job before a dying worker group fails it (default 3)\n"
           "  --worker-timeout S   a running group silent this long is restarted (default 600)\n"
           "  --start-timeout S    a group that has not connected after S s is restarted (default 300)\n"
           "  --max-frame BYTES    largest message (default 64 MiB)\n"
           "  --max-docs N         documents per submit (default 1024)\n"
           "  --max-job-tokens N   tokens per job, prompt + generated (default 1048576)\n"
           "  --max-conns N        open connections, one kept for the worker group (default 1000)\n"
           "  --max-buffered BYTES frames being received, over all connections (default 512 MiB;\n"
           "                       a frame that does not fit is refused)\n"
           "  --idle-timeout S     close connections idle this long (default 300)\n"
           "  --frame-timeout S    a frame must arrive within S s of its first byte (default 300)\n"
           "  --auth-timeout S     a new connection's token must arrive within S s of its first\n"
           "                       byte (default 10)\n"
           "  --http HOST:PORT     also serve the OpenAI-compatible HTTP API there (docs/protocol.md,\n"
           "                       \"HTTP\"; port 0 picks one); the same token, as a Bearer header\n"
           "  --http-max-body BYTES   largest HTTP request body (default 64 MiB)\n"
           "  --http-max-header BYTES largest HTTP request line and headers (default 16 KiB)\n"
           "  --http-timeout S     an HTTP request must arrive whole within S s of the connection's\n"
           "                       opening or its previous request's end (default 30)\n"
           "  --http-max-conns N   open HTTP connections (default 1000)\n"
           "  --chat-template NAME " LS_CHAT_NAMES ": the template for summarize jobs and\n"
           "                       /v1/chat/completions instead of the model's own\n"
           "  --quiet              no line per job state change\n"
           CLI_ENGINE_HELP);
}

// The token file: given, or $LONGSEQ_HOME/token, created (0600, random) when missing.
static ls_status server_token(const char *path, char **token) {
    if (path) return ls_wire_read_token(path, token);
    if (getenv("LONGSEQ_TOKEN") && *getenv("LONGSEQ_TOKEN")) return ls_wire_read_token(NULL, token);
    char def[4096];
    snprintf(def, sizeof def, "%s/token", ls_home_dir());
    struct stat st;
    if (stat(def, &st) != 0) {
        mkdir(ls_home_dir(), 0700);
        LS_CHECK(ls_wire_write_new_token(def));
        fprintf(stderr, "[longseq serve] wrote a new token to %s (clients read it from there)\n", def);
    }
    return ls_wire_read_token(def, token);
}

int cmd_serve(int argc, char **argv) {
    static const struct option opts[] = {
        {"listen", required_argument, 0, 'l'}, {"state", required_argument, 0, 's'},
        {"token-file", required_argument, 0, 't'}, {"np", required_argument, 0, 'N'},
        {"launcher", required_argument, 0, 'L'}, {"workers", required_argument, 0, 'w'},
        {"attempts", required_argument, 0, 'a'}, {"worker-timeout", required_argument, 0, 'W'},
        {"start-timeout", required_argument, 0, 'S'}, {"max-frame", required_argument, 0, 'F'},
        {"max-docs", required_argument, 0, 'D'}, {"max-job-tokens", required_argument, 0, 'J'},
        {"max-conns", required_argument, 0, 'C'}, {"idle-timeout", required_argument, 0, 'I'},
        {"max-buffered", required_argument, 0, 'B'}, {"frame-timeout", required_argument, 0, 'T'},
        {"auth-timeout", required_argument, 0, 'U'},
        {"quiet", no_argument, 0, 'q'}, {"advertise", required_argument, 0, 'V'}, {"help", no_argument, 0, 'h'},
        {"worker-token-file", required_argument, 0, 'K'}, {"http", required_argument, 0, 'H'},
        {"http-max-body", required_argument, 0, 'Y'}, {"http-max-header", required_argument, 0, 'Z'},
        {"http-timeout", required_argument, 0, 'O'}, {"http-max-conns", required_argument, 0, 'X'},
        {"hosts", required_argument, 0, 'y'}, {"hostfile", required_argument, 0, 'f'},
        {"chat-template", required_argument, 0, 'G'}, CLI_ENGINE_OPTIONS, {0, 0, 0, 0}};
    ls_server_opts o = ls_server_opts_default();
    cli_engine_args eng = cli_engine_args_default();
    const char *token_file = NULL, *worker_token_file = NULL;
    char state[4096], **wargs = ls_calloc((size_t)argc * 2 + 1, sizeof *wargs);
    snprintf(state, sizeof state, "%s/state", ls_home_dir());
    o.state_dir = state;
    int c, nw = 0, status = 0;
    int64_t v;
    while (status == 0 && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c >= CLI_ENGINE_OPT) { // the workers get it as it was given
            status = cli_engine_option("serve", c, optarg, &eng);
            cli_engine_option_keep(opts, c, optarg, wargs, &nw);
            continue;
        }
        switch (c) {
        case 'l': o.listen = optarg; break;
        case 'V':
            if (strlen(optarg) > 255) status = cli_usage_error("serve", "--advertise: a host name of at most 255 bytes");
            o.advertise = optarg;
            break;
        case 's': o.state_dir = optarg; break;
        case 't': token_file = optarg; break;
        case 'K': worker_token_file = optarg; break;
        case 'L': o.launcher = optarg; break;
        case 'y': o.hosts = optarg; break;
        case 'f': o.hostfile = optarg; break;
        case 'q': o.quiet = true; break;
        case 'w':
            if (strcmp(optarg, "launch") && strcmp(optarg, "external"))
                status = cli_usage_error("serve", "--workers is launch or external, not \"%s\"", optarg);
            o.external_workers = !strcmp(optarg, "external");
            break;
        case 'N': status = cli_parse_int("serve", "--np", optarg, 1, 4096, &v) ? (o.np = (int)v, 0) : 2; break;
        case 'a': status = cli_parse_int("serve", "--attempts", optarg, 1, 100, &v) ? (o.attempts = (int)v, 0) : 2; break;
        case 'W': status = cli_parse_int("serve", "--worker-timeout", optarg, 1, 1 << 20, &v) ? (o.worker_timeout_s = (int)v, 0) : 2; break;
        case 'S': status = cli_parse_int("serve", "--start-timeout", optarg, 1, 1 << 20, &v) ? (o.start_timeout_s = (int)v, 0) : 2; break;
        case 'F': status = cli_parse_int("serve", "--max-frame", optarg, 1024, 1 << 30, &v) ? (o.max_frame = (size_t)v, 0) : 2; break;
        case 'D': status = cli_parse_int("serve", "--max-docs", optarg, 1, 1 << 20, &v) ? (o.max_docs = (int)v, 0) : 2; break;
        case 'J': status = cli_parse_int("serve", "--max-job-tokens", optarg, 16, 1ll << 32, &v) ? (o.max_job_tokens = v, 0) : 2; break;
        case 'C': status = cli_parse_int("serve", "--max-conns", optarg, 2, 1 << 20, &v) ? (o.max_conns = (int)v, 0) : 2; break;
        case 'B': status = cli_parse_int("serve", "--max-buffered", optarg, 1 << 20, 1ll << 40, &v) ? (o.max_buffered = (size_t)v, 0) : 2; break;
        case 'I': status = cli_parse_int("serve", "--idle-timeout", optarg, 1, 1 << 20, &v) ? (o.idle_timeout_s = (int)v, 0) : 2; break;
        case 'T': status = cli_parse_int("serve", "--frame-timeout", optarg, 1, 1 << 20, &v) ? (o.frame_timeout_s = (int)v, 0) : 2; break;
        case 'U': status = cli_parse_int("serve", "--auth-timeout", optarg, 1, 3600, &v) ? (o.auth_timeout_s = (int)v, 0) : 2; break;
        case 'H': o.http = optarg; break;
        case 'G': o.chat_template = optarg; break;
        case 'Y': status = cli_parse_int("serve", "--http-max-body", optarg, 1024, 1ll << 32, &v) ? (o.http_max_body = (size_t)v, 0) : 2; break;
        case 'Z': status = cli_parse_int("serve", "--http-max-header", optarg, 1024, 1 << 20, &v) ? (o.http_max_header = (size_t)v, 0) : 2; break;
        case 'O': status = cli_parse_int("serve", "--http-timeout", optarg, 1, 3600, &v) ? (o.http_timeout_s = (int)v, 0) : 2; break;
        case 'X': status = cli_parse_int("serve", "--http-max-conns", optarg, 1, 1 << 20, &v) ? (o.http_max_conns = (int)v, 0) : 2; break;
        case 'h': help(); exit(0);
        default: status = cli_usage_error("serve", "unknown option");
        }
    }
    if (status == 0 && optind < argc) status = cli_usage_error("serve", "unexpected argument \"%s\"", argv[optind]);
    if (status == 0 && o.external_workers && !worker_token_file)
        status = cli_usage_error("serve", "--workers external needs --worker-token-file F (the workers' own credential)");
    ls_launch_opts placement = {.launcher = o.launcher, .hosts = o.hosts, .hostfile = o.hostfile};
    if (status == 0 && !o.external_workers && ls_launch_check_placement(&placement) != LS_OK) {
        status = cli_usage_error("serve", "%s", ls_err_msg());
        ls_err_clear();
    }
    char *token = NULL, *worker_token = NULL;
    if (status == 0 && server_token(token_file, &token) != LS_OK) status = cli_fail();
    if (status == 0 && worker_token_file && ls_wire_read_token(worker_token_file, &worker_token) != LS_OK) status = cli_fail();
    if (status == 0) {
        o.token = token;
        o.worker_token = worker_token;
        o.model = eng.model;
        o.rope = eng.opts.rope;
        o.load = cli_load_opts(&eng);
        o.worker_args = wargs;
        o.n_worker_args = nw;
        if (ls_server_run(&o) != LS_OK) status = cli_fail();
    }
    for (int i = 0; i < nw; i++) ls_free(wargs[i]);
    ls_free(wargs);
    ls_free(token);
    ls_free(worker_token);
    return status;
}
