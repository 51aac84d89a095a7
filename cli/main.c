// main.c — the longseq binary: subcommand dispatch, global help and version. Only main()
// decides exit statuses; the libraries report errors as ls_status.
// Tests: every oracle and integration test in tests/ runs this binary.
#include "cli.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ls_wire.h" // ls_utf8_sanitize

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command g_commands[] = {
    {"inspect", cmd_inspect, "show a GGUF model: hyperparameters, RoPE, tokenizer, tensors"},
    {"tokenize", cmd_tokenize, "print the token ids (or pieces) of a text"},
    {"detokenize", cmd_detokenize, "turn token ids back into text"},
    {"generate", cmd_generate, "generate text after a prompt (or a chat message)"},
    {"perplexity", cmd_perplexity, "perplexity of a text, as llama-perplexity computes it"},
    {"worker", cmd_worker, "one rank of a worker group (run by mpirun/srun; see --np)"},
    {"summarize", cmd_summarize, "summarize long documents (a coordinator and worker group in one go)"},
    {"batch", cmd_batch, "run OpenAI batch request lines (JSONL) offline, resumable"},
    {"serve", cmd_serve, "the job service: protocol, durable queue, worker group"},
    {"submit", cmd_submit, "submit documents to a server; prints job ids"},
    {"watch", cmd_watch, "follow a job: progress and text as it streams"},
    {"result", cmd_result, "a job's text or record (--json)"},
    {"jobs", cmd_jobs, "list the server's jobs"},
    {"cancel", cmd_cancel, "cancel a queued or running job"},
    {"plan", cmd_plan, "capacity planner: memory, time and traffic for N tokens on P ranks"},
    {"eval", cmd_eval, "effective context: passkey retrieval and needle-in-a-haystack tables"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: longseq <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof g_commands / sizeof *g_commands; i++)
        fprintf(f, "  %-12s %s\n", g_commands[i].name, g_commands[i].summary);
    fprintf(f, "\nEach command takes --help; longseq --version prints the version; longseq --verbose\n"
               "COMMAND ... adds the source location to error messages. The default model is\n"
               "$LONGSEQ_MODEL, else "
               "%s\n", ls_default_model_path());
}

bool cli_verbose;

int cli_fail(void) {
    if (cli_verbose || ls_log_level_get() >= LS_LOG_INFO || ls_err_code() == LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    if (ls_log_rank() >= 0) { // which rank failed matters in a group's log: keep it, without the file and line
        char host[64] = "?";
        gethostname(host, sizeof host - 1);
        fprintf(stderr, "longseq: error: %s [rank %d on %s]\n", ls_err_msg(), ls_log_rank(), host);
    } else {
        fprintf(stderr, "longseq: error: %s\n", ls_err_msg());
    }
    ls_err_clear();
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "longseq %s: %s (see longseq %s --help)\n", cmd, msg, cmd);
    return 2;
}

json_t *cli_json_str(const char *p, size_t n) {
    json_t *s = json_stringn(p, n);
    if (s) return s;
    ls_buf b = {0};
    ls_utf8_sanitize(p, n, &b);
    s = json_stringn(b.data ? b.data : "", b.len);
    ls_buf_free(&b);
    return s;
}

ls_status cli_chat_init(const ls_gguf_t *g, const ls_tokenizer_t *tok, const char *tmpl, ls_chat_t **out) {
    ls_status rc = ls_chat_init(g, tok, tmpl, out);
    if (rc != LS_OK && !tmpl) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ls_err_msg());
        ls_err_clear();
        rc = LS_ERR(rc, "%s; choose one with --chat-template " LS_CHAT_NAMES, msg);
    }
    return rc;
}

ls_status cli_model_open(const char *path, const ls_load_opts *lo, cli_model *m) {
    *m = (cli_model){0};
    if (!path) path = ls_default_model_path();
    ls_load_opts o = lo ? *lo : (ls_load_opts){0};
    o.shapes_only = true;
    LS_CHECK(ls_model_open(path, &o, &m->gguf));
    ls_status rc = ls_tokenizer_init(m->gguf, &m->tok);
    if (rc != LS_OK) {
        ls_err_prefix("%s: ", path);
        cli_model_close(m);
    }
    return rc;
}

void cli_model_close(cli_model *m) {
    ls_tokenizer_free(m->tok);
    ls_gguf_free(m->gguf);
    *m = (cli_model){0};
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "--verbose")) {
        cli_verbose = true;
        argc--, argv++;
    }
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("longseq %s\n", LS_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof g_commands / sizeof *g_commands; i++)
        if (!strcmp(argv[1], g_commands[i].name)) return g_commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "longseq: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
