// cmd_batch.c — `longseq batch IN.jsonl --out OUT.jsonl`: OpenAI batch request lines run offline
// on a local worker group (like vLLM's run-batch). The coordinator runs in this process with its
// store in a state directory beside OUT, the lines become a batch (coordinator/batch.c) and OUT
// gets one line per request in input order; a rerun with the same --out finds the batch in that
// state and goes on, so lines already finished are not run again.
// Tests: tests/oracle/test_http.py (test_offline_batch), tests/cli/errors.sh.
#include "cli.h"
#include "ls_server.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void help(void) {
    printf("usage: longseq batch IN.jsonl --out OUT.jsonl [options] [engine options]\n"
           "Runs OpenAI batch request lines ({\"custom_id\", \"method\": \"POST\", \"url\":\n"
           "\"/v1/chat/completions\" or \"/v1/completions\", \"body\": {...}}; each body with its own\n"
           "settings, longseq's under \"longseq\": docs/protocol.md, \"HTTP\") on a local worker group\n"
           "and writes one line per request to OUT, in input order: the response, or an error line\n"
           "for a line that is refused or fails (never the whole batch). The job store is kept in\n"
           "--state (default OUT.state): run the same command again after an interruption and the\n"
           "lines already finished are not run again. Exit status: 0 when every line succeeded,\n"
           "3 when some failed (their lines say why), 1 on other errors.\n"
           "  --out F              the output JSONL (required)\n"
           "  --state DIR          the job store (default F.state)\n"
           "  --np N               ranks (default 1)\n"
           "  --launcher CMD       how to start them (default mpirun)\n"
           "  --chat-template NAME " LS_CHAT_NAMES " for /v1/chat/completions lines instead of\n"
           "                       the model's own template\n"
           "  --verbose            the coordinator's log lines\n" CLI_ENGINE_HELP);
}

static void quiet_ready(void *ctx, int port) { (void)ctx, (void)port; }

// The one-off token of this process's coordinator (its HTTP port listens on loopback only).
static ls_status own_token(const char *state, char **token) {
    char path[8300];
    snprintf(path, sizeof path, "%s/token", state);
    if (access(path, F_OK) != 0) LS_CHECK(ls_wire_write_new_token(path));
    return ls_wire_read_token(path, token);
}

int cmd_batch(int argc, char **argv) {
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'}, {"state", required_argument, 0, 's'}, {"np", required_argument, 0, 'N'},
        {"launcher", required_argument, 0, 'L'}, {"verbose", no_argument, 0, 'v'}, {"help", no_argument, 0, 'h'},
        {"chat-template", required_argument, 0, 'G'}, CLI_ENGINE_OPTIONS, {0, 0, 0, 0}};
    ls_server_opts o = ls_server_opts_default();
    cli_engine_args eng = cli_engine_args_default();
    const char *out = NULL, *state = NULL;
    char **wargs = ls_calloc((size_t)argc * 2 + 1, sizeof *wargs), defstate[4200];
    int c, nw = 0, status = 0;
    int64_t v, failed = 0;
    o.quiet = true;
    while (status == 0 && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c >= CLI_ENGINE_OPT) {
            status = cli_engine_option("batch", c, optarg, &eng);
            cli_engine_option_keep(opts, c, optarg, wargs, &nw);
        } else if (c == 'o') out = optarg;
        else if (c == 's') state = optarg;
        else if (c == 'N') status = cli_parse_int("batch", "--np", optarg, 1, 4096, &v) ? (o.np = (int)v, 0) : 2;
        else if (c == 'L') o.launcher = optarg;
        else if (c == 'G') o.chat_template = optarg;
        else if (c == 'v') o.quiet = false, cli_verbose = true;
        else if (c == 'h') help(), exit(0);
        else status = cli_usage_error("batch", "unknown option");
    }
    if (status == 0 && optind != argc - 1) status = cli_usage_error("batch", "give one input file IN.jsonl");
    if (status == 0 && !out) status = cli_usage_error("batch", "--out F is required");
    if (status == 0 && (strlen(out) > 4000 || (state && strlen(state) > 8000)))
        status = cli_usage_error("batch", "--out or --state: a path too long");
    if (status == 0 && access(argv[optind], R_OK) != 0) fprintf(stderr, "longseq batch: cannot read %s\n", argv[optind]), status = 1;
    if (status == 0 && !state) snprintf(defstate, sizeof defstate, "%s.state", out), state = defstate;
    char *token = NULL;
    if (status == 0 && mkdir(state, 0700) != 0 && access(state, W_OK) != 0)
        fprintf(stderr, "longseq batch: cannot create the state directory %s\n", state), status = 1;
    if (status == 0 && own_token(state, &token) != LS_OK) status = cli_fail();
    if (status == 0) {
        o.listen = "127.0.0.1:0", o.http = "127.0.0.1:0";
        o.state_dir = state, o.token = token;
        o.model = eng.model, o.rope = eng.opts.rope, o.load = cli_load_opts(&eng);
        o.worker_args = wargs, o.n_worker_args = nw;
        o.max_launch_failures = 2;
        o.on_ready = quiet_ready; // (no "listening on" line)
        o.batch_in = argv[optind], o.batch_out = out, o.batch_failed = &failed;
        failed = -1;
        if (ls_server_run(&o) != LS_OK) status = cli_fail();
        else if (failed < 0) fprintf(stderr, "longseq batch: stopped before the batch finished; run it again to go on\n"), status = 1;
        else if (failed > 0) fprintf(stderr, "longseq batch: %lld lines failed (see their lines in %s)\n", (long long)failed, out), status = 3;
    }
    for (int i = 0; i < nw; i++) ls_free(wargs[i]);
    ls_free(wargs);
    ls_free(token);
    return status;
}
