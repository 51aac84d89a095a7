// cmd_perplexity.c — `longseq perplexity`: perplexity of a text file.
//   chunked (default): llama-perplexity's protocol — the file without its final newline,
//     tokenized with the model's BOS setting, chunks of --ctx tokens, the second half of each
//     scored (--score all: every token after a chunk's first) — under any attention rule;
//   --stream (sink or window rule): the whole file as one sequence over a bounded cache, read
//     and tokenized block by block, every token after the first scored; memory stays flat
//     however long the text is.
// Prints running values and the final estimate with its uncertainty; --json prints one object;
// --nll-out writes each scored token's position and negative log-likelihood (tests/gpu/e2e.py
// compares them between devices). A perplexity that is not finite is an error (status 1 and a
// message), never a printed nan. --stream shows its position, tokens/s and the perplexity so
// far on standard error (\r-updated on a terminal, else a line every --progress seconds), and
// SIGINT (Ctrl-C) stops it with the estimate so far and status 130. Tests: tests/oracle/test_perplexity.py,
// tests/oracle/test_streaming.py, tests/oracle/test_generate.py (context warning), tests/cli/errors.sh.
#include "cli.h"
#include "ls_sp_tasks.h"

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_BLOCK ((size_t)1 << 20)
#define FEED_SLICE 512 // tokens fed at a time, so that an interrupt is seen soon

static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}

static void help(void) {
    printf("usage: longseq perplexity --ctx N [--chunks K] [--score half|all] [--json] FILE\n"
           "       longseq perplexity --stream --attn sink|window [--max-tokens N] [--json] FILE\n"
           "Perplexity of FILE as llama.cpp's llama-perplexity computes it, or as one unbounded stream.\n"
           "  --ctx N          tokens per chunk (the second half of each is scored)\n"
           "  --chunks K       score at most K chunks (default: all)\n"
           "  --score all      score every token of a chunk after its first, not only the second half\n"
           "  --stream         one sequence over a bounded cache (sink or window rule), read block by block\n"
           "  --max-tokens N   stream: stop after N tokens\n"
           "  --progress S     stream, when standard error is not a terminal: a line every S seconds\n"
           "                   (default 10; position, tokens/s, perplexity so far). Ctrl-C prints the\n"
           "                   estimate so far and exits with status 130\n"
           "  --nll-out F      write \"position nll\" lines for every scored token\n"
           "  --json           print {ppl, ppl_stderr, tokens, chunks, ctx, text_tokens, seconds}\n"
           CLI_ATTN_HELP CLI_GROUP_HELP CLI_ENGINE_HELP);
}

typedef struct ppl_cli {
    cli_engine_args eng;
    cli_attn_args attn;
    ls_ppl_opts po;
    bool json, tty, stream, stats, np; // np: --np given (this process launches the group)
    bool both_tty, mid_line, interrupted; // both_tty: stdout and stderr are terminals
    int64_t max_tokens;
    double every_s, last_line;            // stream progress: the interval off a terminal, the last line
    int64_t scored, position;             // stream progress: tokens scored, the last position
    double nll_sum;
    const char *path, *nll_path;
    FILE *nll;
    double t0;
} ppl_cli;

// On a terminal, long chunks show their progress on standard error.
static ls_status on_progress(void *ctx, int64_t done, int64_t total) {
    ppl_cli *p = ctx;
    if (!p->tty || p->json || total < 2048) return LS_OK;
    if (done < total) fprintf(stderr, "\r  %lld/%lld tokens of this chunk ", (long long)done, (long long)total);
    else fprintf(stderr, "\r%40s\r", "");
    return LS_OK;
}

static void on_chunk(void *ctx, int64_t chunk, int64_t n_chunks, double ppl) {
    ppl_cli *p = ctx;
    if (p->json || !cli_is_leader()) return;
    if (chunk == 0 && p->tty && n_chunks > 0)
        fprintf(stderr, "[longseq] %.2f s per chunk, %lld chunks\n", (ls_time_ms() - p->t0) / 1e3, (long long)n_chunks);
    if (p->stream && p->both_tty) return; // the \r progress line shows it
    printf("[%lld]%.4f,", (long long)chunk + 1, ppl);
    fflush(stdout);
}

static void on_nll(void *ctx, int64_t position, double nll) {
    ppl_cli *p = ctx;
    fprintf(p->nll, "%lld %.6f\n", (long long)position, nll);
}

// Stream progress on standard error: on a terminal one line updated 4 times a second, else a
// line every --progress seconds.
static void stream_progress(ppl_cli *p) {
    double now = ls_time_ms();
    if (p->scored < 1 || now - p->last_line < (p->tty ? 250 : 1e3 * p->every_s)) return;
    p->last_line = now;
    double s = (now - p->t0) / 1e3;
    fprintf(stderr, "%s[longseq] position %lld, %.0f tok/s, perplexity so far %.4f (%lld tokens scored)%s",
            p->tty ? "\r" : "", (long long)p->position + 1, s > 0 ? (double)(p->position + 1) / s : 0,
            exp(p->nll_sum / (double)p->scored), (long long)p->scored, p->tty ? "   " : "\n");
    p->mid_line = p->tty;
}

// Each scored token of a stream: to --nll-out, and into the progress.
static void stream_nll(void *ctx, int64_t position, double nll) {
    ppl_cli *p = ctx;
    if (p->nll) on_nll(p, position, nll);
    p->scored++;
    p->nll_sum += nll;
    p->position = position;
    stream_progress(p);
}

static int parse(int argc, char **argv, ppl_cli *p) {
    static const struct option opts[] = {
        {"ctx", required_argument, 0, 'c'},   {"chunks", required_argument, 0, 'k'},
        {"json", no_argument, 0, 'j'},        {"stream", no_argument, 0, 's'},
        {"score", required_argument, 0, 'S'}, {"max-tokens", required_argument, 0, 'm'},
        {"nll-out", required_argument, 0, 'n'}, {"help", no_argument, 0, 'h'}, {"progress", required_argument, 0, 'P'},
        CLI_ENGINE_OPTIONS, CLI_ATTN_OPTIONS, CLI_GROUP_OPTIONS, {0, 0, 0, 0}};
    const char *cmd = "perplexity";
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c >= CLI_ATTN_OPT) {
            if (cli_attn_option(cmd, c, optarg, &p->attn)) return 2;
        } else if (c >= CLI_ENGINE_OPT) {
            if (cli_engine_option(cmd, c, optarg, &p->eng)) return 2;
        } else if (c == 'c') {
            if (!cli_parse_int(cmd, "--ctx", optarg, 4, 1 << 24, &p->po.ctx)) return 2;
        } else if (c == 'k') {
            double d;
            if (!cli_parse_setting(cmd, LS_SET_MAX_CHUNKS, optarg, &d)) return 2;
            p->po.max_chunks = (int64_t)d;
        } else if (c == 'm') {
            if (!cli_parse_int(cmd, "--max-tokens", optarg, 2, INT64_MAX, &p->max_tokens)) return 2;
        } else if (c == 'S') {
            if (strcmp(optarg, "all") && strcmp(optarg, "half"))
                return cli_usage_error(cmd, "--score \"%s\" is not half or all", optarg);
            p->po.score_all = !strcmp(optarg, "all");
        } else if (c == 's') {
            p->stream = true;
        } else if (c == 'n') {
            p->nll_path = optarg;
        } else if (c == 'j') {
            p->json = true;
        } else if (c == 'P') {
            if (!cli_parse_double(cmd, "--progress", optarg, &p->every_s)) return 2;
            if (p->every_s < 0.1 || p->every_s > 86400)
                return cli_usage_error(cmd, "--progress is from 0.1 to 86400 seconds, not %s", optarg);
        } else if (c == 'N' || c == 'L') { // taken by cli_maybe_launch
            p->np |= c == 'N';
        } else if (c == 'Z') {
            p->stats = true;
        } else if (c == 'h') {
            help();
            exit(0);
        } else {
            return cli_usage_error(cmd, "unknown option");
        }
    }
    if (!p->po.ctx && !p->stream) return cli_usage_error(cmd, "--ctx N is required (or --stream)");
    if (p->stream && (p->po.max_chunks || p->po.score_all))
        return cli_usage_error(cmd, "--chunks and --score apply to chunks, not to --stream");
    if (argc - optind != 1) return cli_usage_error(cmd, "expected one text file");
    // refused here rather than by the group, before anything is launched
    if (p->np && p->stream) return cli_usage_error(cmd, "--stream runs in one process, not a worker group: drop --np");
    if (p->np && p->nll_path) return cli_usage_error(cmd, "--nll-out is written by one process, not a worker group: drop --np");
    p->path = argv[optind];
    return 0;
}

// The whole file tokenized once (by the leader of a group, which shares the ids).
static ls_status read_ids(ppl_cli *p, ls_engine_t *e, ls_vec_i32 *ids) {
    ls_buf text = {0};
    ls_status rc = LS_OK;
    if (cli_is_leader()) {
        rc = ls_file_read_all(p->path, (size_t)1 << 31, &text);
        if (rc == LS_OK && text.len && text.data[text.len - 1] == '\n') text.data[--text.len] = 0; // as llama-perplexity -f
        if (rc == LS_OK) rc = ls_tokenize(ls_engine_tokenizer(e), text.data, text.len, true, false, ids);
    }
    ls_buf_free(&text);
    LS_CHECK(cli_group_status(rc));
    return cli_group_share_ids(ids);
}

// Chunked perplexity, in one process or over the worker group.
static ls_status run_chunked(ppl_cli *p, ls_engine_t *e, ls_ppl_result *r, int64_t *n_tokens) {
    ls_vec_i32 ids = {0};
    ls_status rc = read_ids(p, e, &ids);
    if (rc == LS_OK) rc = cli_attn_rule(&p->attn, p->po.ctx, &p->po.rule);
    if (rc == LS_OK) {
        char what[64], shorter[96];
        int64_t limit = ls_context_limit(ls_engine_config(e), &p->po.rule);
        snprintf(what, sizeof what, "chunks of --ctx %lld", (long long)p->po.ctx);
        snprintf(shorter, sizeof shorter, "score chunks that fit with --ctx %lld", (long long)limit);
        cli_context_warn("perplexity", e, &p->po.rule, p->po.ctx, what, shorter);
    }
    if (rc == LS_OK)
        rc = cli_group() ? ls_sp_perplexity(e, cli_group(), ids.data, (int64_t)ids.len, &p->po, r)
                         : ls_perplexity(e, ids.data, (int64_t)ids.len, &p->po, r);
    *n_tokens = (int64_t)ids.len;
    ls_vec_i32_free(&ids);
    return rc;
}

// Streaming perplexity: the file read in blocks, each tokenized up to a safe cut and fed on.
static ls_status feed_file(ppl_cli *p, ls_engine_t *e, ls_ppl_stream_t *st, int64_t *n_tokens) {
    FILE *f = strcmp(p->path, "-") ? fopen(p->path, "rb") : stdin;
    if (!f) return LS_ERR(LS_ERR_IO, "cannot open %s", p->path);
    ls_buf pend = {0};
    ls_vec_i32 ids = {0};
    char *block = ls_malloc(READ_BLOCK);
    ls_status rc = LS_OK;
    bool first = true, eof = false;
    while (rc == LS_OK && !eof && (!p->max_tokens || *n_tokens < p->max_tokens)) {
        size_t got = fread(block, 1, READ_BLOCK, f);
        eof = got < READ_BLOCK;
        ls_buf_append(&pend, block, got);
        if (eof && pend.len && pend.data[pend.len - 1] == '\n') pend.len--; // the final newline, as chunked mode
        size_t cut = eof ? pend.len : ls_tokenizer_safe_cut(pend.data, pend.len);
        if (!cut) continue; // no safe place yet: read more
        ids.len = 0;
        rc = first ? ls_tokenize(ls_engine_tokenizer(e), pend.data, cut, true, false, &ids)
                   : ls_tokenize_more(ls_engine_tokenizer(e), pend.data, cut, false, &ids);
        first = false;
        int64_t n = (int64_t)ids.len;
        if (p->max_tokens && *n_tokens + n > p->max_tokens) n = p->max_tokens - *n_tokens;
        for (int64_t k = 0; rc == LS_OK && k < n; k += FEED_SLICE) {
            if (g_interrupted) rc = LS_ERR(LS_ERR_CANCELLED, "interrupted");
            else rc = ls_ppl_stream_feed(st, ids.data + k, n - k < FEED_SLICE ? n - k : FEED_SLICE);
        }
        *n_tokens += n;
        memmove(pend.data, pend.data + cut, pend.len - cut);
        pend.len -= cut;
    }
    if (rc == LS_OK && ferror(f)) rc = LS_ERR(LS_ERR_IO, "error reading %s", p->path);
    if (f != stdin) fclose(f);
    ls_free(block);
    ls_buf_free(&pend);
    ls_vec_i32_free(&ids);
    return rc;
}

// Streaming perplexity; SIGINT stops it with the result so far (p->interrupted).
static ls_status run_stream(ppl_cli *p, ls_engine_t *e, ls_ppl_result *r, int64_t *n_tokens) {
    if (cli_group()) return LS_ERR(LS_ERR_UNSUPPORTED, "--stream runs in one process, not a worker group");
    ls_ppl_stream_opts so = {.report_every = 2048, .on_report = on_chunk, .report_ctx = p, .on_nll = stream_nll, .nll_ctx = p};
    LS_CHECK(cli_attn_rule(&p->attn, 0, &so.rule));
    ls_ppl_stream_t *st;
    LS_CHECK(ls_ppl_stream_init(e, &so, &st));
    struct sigaction sa = {.sa_handler = on_sigint, .sa_flags = SA_RESTART}, old;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    p->t0 = p->last_line = ls_time_ms();
    ls_status rc = feed_file(p, e, st, n_tokens);
    if (rc == LS_ERR_CANCELLED && g_interrupted) {
        ls_err_clear();
        p->interrupted = true;
        rc = LS_OK;
    }
    sigaction(SIGINT, &old, NULL);
    if (p->mid_line) fprintf(stderr, "\n"), p->mid_line = false;
    if (rc == LS_OK) rc = ls_ppl_stream_result(st, r);
    ls_ppl_stream_free(st);
    if (rc == LS_OK && r->scored < 1) rc = LS_ERR(LS_ERR_INVALID, "the text has fewer than 2 tokens: nothing to score");
    return rc;
}

static void print_result(const ppl_cli *p, const ls_ppl_result *r, int64_t n_tokens) {
    if (p->json) {
        json_t *o = json_pack("{s:f, s:f, s:I, s:I, s:I, s:I, s:f}", "ppl", r->ppl, "ppl_stderr", r->ppl_stderr, "tokens",
                              (json_int_t)r->scored, "chunks", (json_int_t)r->chunks, "ctx", (json_int_t)r->ctx,
                              "text_tokens", (json_int_t)n_tokens, "seconds", r->ms / 1e3);
        if (p->interrupted) json_object_set_new(o, "interrupted", json_true());
        json_dumpf(o, stdout, JSON_COMPACT);
        printf("\n");
        json_decref(o);
        return;
    }
    if (p->interrupted) {
        printf("\nInterrupted at position %lld: estimate so far PPL = %.4f +/- %.5f over %lld scored tokens\n",
               (long long)p->position + 1, r->ppl, r->ppl_stderr, (long long)r->scored);
        return;
    }
    printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", r->ppl, r->ppl_stderr);
    if (p->stream)
        fprintf(stderr, "[longseq] %lld tokens streamed through a cache of %lld, %lld scored, %.1f s (%.1f tok/s)\n",
                (long long)n_tokens, (long long)r->ctx, (long long)r->scored, r->ms / 1e3, n_tokens / (r->ms / 1e3));
    else
        fprintf(stderr, "[longseq] %lld chunks of %lld tokens, %lld tokens scored, %.1f s (%.1f tok/s)\n",
                (long long)r->chunks, (long long)r->ctx, (long long)r->scored, r->ms / 1e3,
                (double)(r->chunks * r->ctx) / (r->ms / 1e3));
}

int cmd_perplexity(int argc, char **argv) {
    ppl_cli p = {.eng = cli_engine_args_default(), .attn = cli_attn_args_default(), .tty = isatty(2), .every_s = 10};
    p.both_tty = p.tty && isatty(1);
    int rc = parse(argc, argv, &p); // usage errors before a group is launched
    if (rc) return rc;
    int launched = cli_maybe_launch("perplexity", argc, argv);
    if (launched >= 0) return launched;
    p.po.on_chunk = on_chunk;
    p.po.chunk_ctx = &p;
    p.po.on_progress = on_progress;
    p.po.progress_ctx = &p;
    if (p.nll_path && cli_is_leader()) {
        if (!(p.nll = fopen(p.nll_path, "w"))) {
            fprintf(stderr, "longseq perplexity: cannot write %s\n", p.nll_path);
            return 1;
        }
        p.po.on_nll = on_nll;
        p.po.nll_ctx = &p;
    }
    ls_engine_t *e = NULL;
    ls_ppl_result r = {0};
    int64_t n_tokens = 0;
    int status = 0;
    p.t0 = ls_time_ms();
    cli_worker_engine_defaults(&p.eng);
    if (cli_engine_load(&p.eng, &e) != LS_OK ||
        (p.stream ? run_stream(&p, e, &r, &n_tokens) : run_chunked(&p, e, &r, &n_tokens)) != LS_OK)
        status = cli_fail();
    else if (cli_is_leader())
        print_result(&p, &r, n_tokens);
    if (status == 0 && p.stats) cli_group_stats();
    if (p.interrupted) status = 130; // as a shell reports SIGINT, after the estimate so far
    if (p.nll) fclose(p.nll);
    ls_engine_free(e);
    return status;
}
