// cmd_perplexity.c — `longseq perplexity --ctx N FILE`: perplexity with llama-perplexity's
// protocol (the file without its final newline, tokenized with the model's BOS setting, chunks
// of N tokens, the second half of each scored), printing the running value per chunk and the
// final estimate with its uncertainty; --json prints {ppl, ppl_stderr, tokens, chunks, ctx}.
// Tests: tests/oracle/test_perplexity.py.
#include "cli.h"
#include "ls_tasks.h"

#include <jansson.h>

#include <stdlib.h>
#include <unistd.h>

static void help(void) {
    printf("usage: longseq perplexity --ctx N [--chunks K] [--json] FILE\n"
           "Perplexity of FILE as llama.cpp's llama-perplexity computes it.\n"
           "  --ctx N      tokens per chunk (the second half of each is scored)\n"
           "  --chunks K   score at most K chunks (default: all)\n"
           "  --json       print {ppl, ppl_stderr, tokens, chunks, ctx, text_tokens, seconds}\n"
           CLI_ENGINE_HELP);
}

typedef struct ppl_cli {
    bool json, tty;
    double t0;
} ppl_cli;

// On a terminal, long chunks show their progress on standard error.
static void on_progress(void *ctx, int64_t done, int64_t total) {
    ppl_cli *p = ctx;
    if (!p->tty || p->json || total < 2048) return;
    if (done < total) fprintf(stderr, "\r  %lld/%lld tokens of this chunk ", (long long)done, (long long)total);
    else fprintf(stderr, "\r%40s\r", "");
}

static void on_chunk(void *ctx, int64_t chunk, int64_t n_chunks, double ppl) {
    ppl_cli *p = ctx;
    if (p->json) return;
    if (chunk == 0 && p->tty)
        fprintf(stderr, "[longseq] %.2f s per chunk, %lld chunks\n", (ls_time_ms() - p->t0) / 1e3, (long long)n_chunks);
    printf("[%lld]%.4f,", (long long)chunk + 1, ppl);
    fflush(stdout);
}

int cmd_perplexity(int argc, char **argv) {
    static const struct option opts[] = {{"ctx", required_argument, 0, 'c'}, {"chunks", required_argument, 0, 'k'},
                                         {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'},
                                         CLI_ENGINE_OPTIONS, {0, 0, 0, 0}};
    cli_engine_args eng = cli_engine_args_default();
    ls_ppl_opts po = {0};
    ppl_cli pc = {.tty = isatty(2)};
    int c;
    int64_t v;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c >= CLI_ENGINE_OPT) {
            if (cli_engine_option("perplexity", c, optarg, &eng)) return 2;
        } else if (c == 'c') {
            if (!cli_parse_int("perplexity", "--ctx", optarg, 4, 1 << 24, &v)) return 2;
            po.ctx = v;
        } else if (c == 'k') {
            if (!cli_parse_int("perplexity", "--chunks", optarg, 1, INT32_MAX, &v)) return 2;
            po.max_chunks = v;
        } else if (c == 'j') {
            pc.json = true;
        } else if (c == 'h') {
            help();
            return 0;
        } else {
            return cli_usage_error("perplexity", "unknown option");
        }
    }
    if (!po.ctx) return cli_usage_error("perplexity", "--ctx N is required");
    if (argc - optind != 1) return cli_usage_error("perplexity", "expected one text file");
    po.on_chunk = on_chunk;
    po.chunk_ctx = &pc;
    po.on_progress = on_progress;
    po.progress_ctx = &pc;
    ls_engine_t *e = NULL;
    ls_buf text = {0};
    ls_vec_i32 ids = {0};
    ls_ppl_result r;
    int status = 0;
    pc.t0 = ls_time_ms();
    if (cli_engine_load(&eng, &e) != LS_OK || ls_file_read_all(argv[optind], (size_t)1 << 31, &text) != LS_OK) {
        status = cli_fail();
        goto done;
    }
    if (text.len && text.data[text.len - 1] == '\n') text.data[--text.len] = 0; // as llama-perplexity -f
    if (ls_tokenize(ls_engine_tokenizer(e), text.data, text.len, true, false, &ids) != LS_OK ||
        ls_perplexity(e, ids.data, (int64_t)ids.len, &po, &r) != LS_OK) {
        status = cli_fail();
        goto done;
    }
    if (pc.json) {
        json_t *o = json_pack("{s:f, s:f, s:I, s:I, s:I, s:I, s:f}", "ppl", r.ppl, "ppl_stderr", r.ppl_stderr, "tokens",
                              (json_int_t)r.scored, "chunks", (json_int_t)r.chunks, "ctx", (json_int_t)r.ctx,
                              "text_tokens", (json_int_t)ids.len, "seconds", r.ms / 1e3);
        json_dumpf(o, stdout, JSON_COMPACT);
        printf("\n");
        json_decref(o);
    } else {
        printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_stderr);
        fprintf(stderr, "[longseq] %lld chunks of %lld tokens, %lld tokens scored, %.1f s (%.1f tok/s)\n",
                (long long)r.chunks, (long long)r.ctx, (long long)r.scored, r.ms / 1e3,
                (double)(r.chunks * r.ctx) / (r.ms / 1e3));
    }
done:
    ls_vec_i32_free(&ids);
    ls_buf_free(&text);
    ls_engine_free(e);
    return status;
}
