// cmd_generate.c — `longseq generate`: a prompt (text, file, or a chat turn in the model's
// template) in, generated text streamed to stdout; --json prints one object with the text and
// timings instead. Long prefills show progress on a terminal. Tests: tests/oracle/test_generate.py.
#include "cli.h"
#include "ls_chat.h"
#include "ls_sp_tasks.h"

#include <jansson.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_STOP 16

static void help(void) {
    printf("usage: longseq generate (--prompt TEXT | --prompt-file F) [options]\n"
           "Generates text after the prompt and streams it to standard output.\n"
           "  --prompt TEXT / --prompt-file F   the prompt (a file may be - for standard input)\n"
           "  --chat               wrap the prompt as a user message in the model's chat template\n"
           "  --system TEXT        system message for --chat; --chat-template chatml|llama2\n"
           "  -n N                 generate at most N tokens (default 256)\n"
           "  --temp T             temperature (default 0.8; 0 = greedy)\n"
           "  --top-k K --top-p P --min-p P   (defaults 40, 0.95, 0.05; 0 / 1 / 0 turn them off)\n"
           "  --repeat-penalty R --repeat-last-n N   (defaults 1.0 = off, 64)\n"
           "  --seed S             random seed (default: from the clock)\n"
           "  --stop STR           stop when STR appears (repeatable, not printed)\n"
           "  --ignore-eos         keep going past end-of-generation tokens\n"
           "  --json               print {text, tokens, prompt_tokens, prefill_ms, decode_ms,\n"
           "                       prefill_tok_per_s, decode_tok_per_s, stop, ids} instead\n"
           CLI_ATTN_HELP
           "                       (sink and window generate without a length limit, in bounded memory)\n"
           CLI_GROUP_HELP CLI_ENGINE_HELP);
}

typedef struct gen_args {
    cli_engine_args eng;
    cli_attn_args attn;
    const char *prompt, *prompt_file, *system, *tmpl;
    bool chat, json, stats;
    ls_gen_opts gen;
    const char *stop[MAX_STOP];
} gen_args;

static int parse(int argc, char **argv, gen_args *g) {
    static const struct option opts[] = {
        {"prompt", required_argument, 0, 'p'}, {"prompt-file", required_argument, 0, 'f'},
        {"chat", no_argument, 0, 'c'}, {"system", required_argument, 0, 'y'},
        {"chat-template", required_argument, 0, 'T'}, {"temp", required_argument, 0, 't'},
        {"top-k", required_argument, 0, 'k'}, {"top-p", required_argument, 0, 'P'},
        {"min-p", required_argument, 0, 'M'}, {"repeat-penalty", required_argument, 0, 'r'},
        {"repeat-last-n", required_argument, 0, 'R'}, {"seed", required_argument, 0, 's'},
        {"stop", required_argument, 0, 'S'}, {"ignore-eos", no_argument, 0, 'E'},
        {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, CLI_ENGINE_OPTIONS, CLI_ATTN_OPTIONS,
        CLI_GROUP_OPTIONS, {0, 0, 0, 0}};
    const char *cmd = "generate";
    int c;
    int64_t v;
    double d;
    ls_sampler_opts *s = &g->gen.sampling;
    while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
        if (c >= CLI_ATTN_OPT) {
            if (cli_attn_option(cmd, c, optarg, &g->attn)) return 2;
            continue;
        }
        if (c >= CLI_ENGINE_OPT) {
            if (cli_engine_option(cmd, c, optarg, &g->eng)) return 2;
            continue;
        }
        switch (c) {
        case 'p': g->prompt = optarg; break;
        case 'f': g->prompt_file = optarg; break;
        case 'c': g->chat = true; break;
        case 'y': g->system = optarg; break;
        case 'T': g->tmpl = optarg; break;
        case 'j': g->json = true; break;
        case 'E': g->gen.ignore_eog = true; break;
        case 'n': if (!cli_parse_int(cmd, "-n", optarg, 0, 1 << 24, &v)) return 2; g->gen.max_tokens = v; break;
        case 't': if (!cli_parse_setting(cmd, LS_SET_TEMPERATURE, optarg, &d)) return 2; s->temp = (float)d; break;
        case 'k': if (!cli_parse_int(cmd, "--top-k", optarg, 0, 1 << 24, &v)) return 2; s->top_k = (int)v; break;
        case 'P': if (!cli_parse_setting(cmd, LS_SET_TOP_P, optarg, &d)) return 2; s->top_p = (float)d; break;
        case 'M': if (!cli_parse_double(cmd, "--min-p", optarg, &d)) return 2; s->min_p = (float)d; break;
        case 'r': if (!cli_parse_setting(cmd, LS_SET_REPEAT_PENALTY, optarg, &d)) return 2; s->repeat_penalty = (float)d; break;
        case 'R': if (!cli_parse_int(cmd, "--repeat-last-n", optarg, 0, 1 << 20, &v)) return 2; s->repeat_last_n = (int)v; break;
        case 's': if (!cli_parse_int(cmd, "--seed", optarg, 0, INT64_MAX, &v)) return 2; s->seed = (uint64_t)v; break;
        case 'S':
            if (g->gen.n_stop == MAX_STOP) return cli_usage_error(cmd, "at most %d --stop strings", MAX_STOP);
            g->stop[g->gen.n_stop++] = optarg;
            break;
        case 'h': help(); exit(0);
        case 'N': case 'L': break; // taken by cli_maybe_launch
        case 'Z': g->stats = true; break;
        default: return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument \"%s\"", argv[optind]);
    if (!g->prompt == !g->prompt_file) return cli_usage_error(cmd, "give exactly one of --prompt and --prompt-file");
    g->gen.stop = g->stop;
    return 0;
}

// The prompt's ids: the text (or a chat turn) tokenized with the model's special tokens.
static ls_status prompt_ids(const gen_args *g, ls_engine_t *e, ls_vec_i32 *ids) {
    ls_buf text = {0};
    ls_status rc = g->prompt ? (ls_buf_append(&text, g->prompt, strlen(g->prompt)), LS_OK)
                             : ls_file_read_all(g->prompt_file, (size_t)1 << 30, &text);
    if (rc == LS_OK && g->chat) {
        ls_chat_t *chat;
        rc = cli_chat_init(ls_engine_gguf(e), ls_engine_tokenizer(e), g->tmpl, &chat);
        if (rc == LS_OK) {
            ls_chat_msg msgs[2] = {{"system", g->system}, {"user", text.data}};
            ls_buf wrapped = {0};
            rc = ls_chat_apply(chat, g->system ? msgs : msgs + 1, g->system ? 2 : 1, true, &wrapped);
            ls_chat_free(chat);
            ls_buf_free(&text);
            text = wrapped;
        }
    }
    if (rc == LS_OK) rc = ls_tokenize(ls_engine_tokenizer(e), text.data, text.len, !g->chat, g->chat, ids);
    ls_buf_free(&text);
    return rc;
}

typedef struct progress {
    double t0;
    bool tty;
} progress;

static ls_status on_progress(void *ctx, int64_t done, int64_t total) {
    progress *p = ctx;
    if (!p->tty || total < 256) return LS_OK;
    double s = (ls_time_ms() - p->t0) / 1e3, rate = done / (s > 0 ? s : 1e-9);
    fprintf(stderr, "\rprefill %lld/%lld tokens, %.0f tok/s, ETA %.0f s   ", (long long)done, (long long)total, rate,
            (double)(total - done) / rate);
    if (done == total) fprintf(stderr, "\r%60s\r", "");
    return LS_OK;
}

static ls_status print_text(void *ctx, const char *text, size_t len) {
    (void)ctx;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return LS_OK;
}

static void print_json(const ls_gen_result *r) {
    json_t *ids = json_array();
    for (size_t i = 0; i < r->tokens.len; i++) json_array_append_new(ids, json_integer(r->tokens.data[i]));
    double pre = r->prefill_ms > 0 ? r->prompt_tokens / (r->prefill_ms / 1e3) : 0;
    double dec = r->decode_ms > 0 ? (double)r->tokens.len / (r->decode_ms / 1e3) : 0;
    json_t *o = json_pack("{s:o, s:I, s:I, s:f, s:f, s:f, s:f, s:s, s:o}", "text", cli_json_str(r->text.data, r->text.len),
                          "tokens", (json_int_t)r->tokens.len, "prompt_tokens", (json_int_t)r->prompt_tokens,
                          "prefill_ms", r->prefill_ms, "decode_ms", r->decode_ms, "prefill_tok_per_s", pre,
                          "decode_tok_per_s", dec, "stop", ls_stop_reason_name(r->stop), "ids", ids);
    json_dumpf(o, stdout, JSON_COMPACT);
    printf("\n");
    json_decref(o);
}

static ls_status run(gen_args *g, ls_engine_t **e, ls_vec_i32 *ids, ls_gen_result *res) {
    cli_worker_engine_defaults(&g->eng);
    ls_status rc = cli_engine_load(&g->eng, e);
    if (rc == LS_OK && cli_is_leader()) rc = prompt_ids(g, *e, ids); // only the leader reads the input
    LS_CHECK(cli_group_status(rc));
    LS_CHECK(cli_group_share_ids(ids));
    LS_CHECK(cli_attn_rule(&g->attn, (int64_t)ids->len + g->gen.max_tokens, &g->gen.rule));
    char what[96];
    snprintf(what, sizeof what, "%zu prompt + %lld to generate", ids->len, (long long)g->gen.max_tokens);
    cli_context_warn("generate", *e, &g->gen.rule, (int64_t)ids->len + g->gen.max_tokens, what, NULL);
    ls_text_fn out = g->json || !cli_is_leader() ? NULL : print_text;
    if (cli_group()) return ls_sp_generate(*e, cli_group(), ids->data, (int64_t)ids->len, &g->gen, out, NULL, res);
    g->gen.stream = g->gen.rule.kind == LS_ATTN_SINK || g->gen.rule.kind == LS_ATTN_WINDOW;
    return ls_generate(*e, ids->data, (int64_t)ids->len, &g->gen, out, NULL, res);
}

int cmd_generate(int argc, char **argv) {
    gen_args g = {.eng = cli_engine_args_default(), .attn = cli_attn_args_default(),
                  .gen = {.max_tokens = 256, .sampling = ls_sampler_opts_default()}};
    g.gen.sampling.seed = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
    int rc = parse(argc, argv, &g); // usage errors before a group is launched
    if (rc) return rc;
    int launched = cli_maybe_launch("generate", argc, argv);
    if (launched >= 0) return launched;
    ls_engine_t *e = NULL;
    ls_vec_i32 ids = {0};
    ls_gen_result res = {0};
    progress pr = {.t0 = ls_time_ms(), .tty = isatty(2)};
    g.gen.on_prefill = on_progress;
    g.gen.progress_ctx = &pr;
    int status = 0;
    if (run(&g, &e, &ids, &res) != LS_OK) {
        status = cli_fail();
    } else if (!cli_is_leader()) {
        // the leader writes the output
    } else if (g.json) {
        print_json(&res);
    } else {
        printf("\n");
        fprintf(stderr, "[longseq] prompt %lld tokens in %.0f ms (%.1f tok/s); generated %zu tokens in %.0f ms (%.1f tok/s); stop: %s\n",
                (long long)res.prompt_tokens, res.prefill_ms, res.prompt_tokens / (res.prefill_ms / 1e3 + 1e-12),
                res.tokens.len, res.decode_ms, (double)res.tokens.len / (res.decode_ms / 1e3 + 1e-12),
                ls_stop_reason_name(res.stop));
    }
    if (status == 0 && g.stats) cli_group_stats();
    ls_gen_result_free(&res);
    ls_vec_i32_free(&ids);
    ls_engine_free(e);
    return status;
}
