// cmd_generate.c — `longseq generate`: a prompt (text, file, or a chat turn in the model's
// template) in, generated text streamed to stdout; --json prints one object with the text and
// timings instead. Long prefills show progress on a terminal. --batch FILE.jsonl generates for
// many prompts at once through the scheduler (worker/sched.c), one JSON line out per prompt.
// Tests: tests/oracle/test_generate.py.
#include "cli.h"
#include "ls_chat.h"
#include "ls_sched.h"
#include "ls_sp_tasks.h"

#include <jansson.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_STOP 16

static void help(void) {
    printf("usage: longseq generate (--prompt TEXT | --prompt-file F | --batch FILE.jsonl) [options]\n"
           "Generates text after the prompt and streams it to standard output.\n"
           "  --prompt TEXT / --prompt-file F   the prompt (a file may be - for standard input)\n"
           "  --batch F            many prompts at once, one JSON object a line: {\"prompt\": TEXT} and\n"
           "                       optionally \"n\" (tokens to generate) and \"id\" (echoed back); the\n"
           "                       other settings come from the options. One JSON line out per prompt,\n"
           "                       as each ends ({line, id, text, tokens, ..., stop} or {line, id, error}).\n"
           "                       One process (no --np)\n"
           "  --batch-tokens N     tokens per batched step: running decodes first, then prompt\n"
           "                       chunks (default 512)\n"
           "  --chat               wrap the prompt as a user message in the model's chat template\n"
           "  --system TEXT        system message for --chat; --chat-template " LS_CHAT_NAMES "\n"
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
    const char *prompt, *prompt_file, *system, *tmpl, *batch;
    int64_t batch_tokens;
    bool chat, json, stats, grouped;
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
        {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {"batch", required_argument, 0, 'B'},
        {"batch-tokens", required_argument, 0, 'b'}, CLI_ENGINE_OPTIONS, CLI_ATTN_OPTIONS,
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
        case 'B': g->batch = optarg; break;
        case 'b': if (!cli_parse_int(cmd, "--batch-tokens", optarg, 1, 1 << 20, &v)) return 2; g->batch_tokens = v; break;
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
        case 'N': g->grouped |= atoi(optarg) > 1; break; // taken by cli_maybe_launch
        case 'L': break;
        case 'Z': g->stats = true; break;
        default: return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument \"%s\"", argv[optind]);
    if (!!g->prompt + !!g->prompt_file + !!g->batch != 1)
        return cli_usage_error(cmd, "give exactly one of --prompt and --prompt-file (or --batch)");
    if (g->batch && g->grouped) return cli_usage_error(cmd, "--batch runs in one process: drop --np");
    g->gen.stop = g->stop;
    return 0;
}

// A prompt's ids: the text (or a chat turn) tokenized with the model's special tokens.
static ls_status text_ids(const gen_args *g, ls_engine_t *e, const char *text, size_t len, ls_vec_i32 *ids) {
    ls_buf wrapped = {0};
    if (g->chat) {
        ls_chat_t *chat;
        LS_CHECK(cli_chat_init(ls_engine_gguf(e), ls_engine_tokenizer(e), g->tmpl, &chat));
        ls_buf user = {0};
        ls_buf_append(&user, text, len);
        ls_chat_msg msgs[2] = {{"system", g->system}, {"user", user.data}};
        ls_status rc = ls_chat_apply(chat, g->system ? msgs : msgs + 1, g->system ? 2 : 1, true, &wrapped);
        ls_chat_free(chat);
        ls_buf_free(&user);
        if (rc != LS_OK) {
            ls_buf_free(&wrapped);
            return rc;
        }
        text = wrapped.data, len = wrapped.len;
    }
    ls_status rc = ls_tokenize(ls_engine_tokenizer(e), text, len, !g->chat, g->chat, ids);
    ls_buf_free(&wrapped);
    return rc;
}

static ls_status prompt_ids(const gen_args *g, ls_engine_t *e, ls_vec_i32 *ids) {
    ls_buf text = {0};
    ls_status rc = g->prompt ? (ls_buf_append(&text, g->prompt, strlen(g->prompt)), LS_OK)
                             : ls_file_read_all(g->prompt_file, (size_t)1 << 30, &text);
    if (rc == LS_OK) rc = text_ids(g, e, text.data, text.len, ids);
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

static json_t *result_json(const ls_gen_result *r) {
    json_t *ids = json_array();
    for (size_t i = 0; i < r->tokens.len; i++) json_array_append_new(ids, json_integer(r->tokens.data[i]));
    double pre = r->prefill_ms > 0 ? r->prompt_tokens / (r->prefill_ms / 1e3) : 0;
    double dec = r->decode_ms > 0 ? (double)r->tokens.len / (r->decode_ms / 1e3) : 0;
    return json_pack("{s:o, s:I, s:I, s:f, s:f, s:f, s:f, s:s, s:o}", "text", cli_json_str(r->text.data, r->text.len),
                     "tokens", (json_int_t)r->tokens.len, "prompt_tokens", (json_int_t)r->prompt_tokens,
                     "prefill_ms", r->prefill_ms, "decode_ms", r->decode_ms, "prefill_tok_per_s", pre,
                     "decode_tok_per_s", dec, "stop", ls_stop_reason_name(r->stop), "ids", ids);
}

static void print_json(const ls_gen_result *r) {
    json_t *o = result_json(r);
    json_dumpf(o, stdout, JSON_COMPACT);
    printf("\n");
    json_decref(o);
}

// --- --batch: many prompts through the scheduler ---------------------------------------------

typedef struct batch_run batch_run;
typedef struct batch_line {
    batch_run *br;
    int64_t line;       // 1-based line of the file
    json_t *id;         // the line's "id", echoed back (or NULL)
    ls_vec_i32 ids;
    ls_gen_opts gen;
} batch_line;

struct batch_run {
    batch_line *lines;
    int64_t n, failed, prompt_tokens, generated;
};

static void print_line(const batch_line *b, json_t *o) {
    json_object_set_new(o, "line", json_integer(b->line));
    if (b->id) json_object_set(o, "id", b->id);
    json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
    printf("\n");
    fflush(stdout);
    json_decref(o);
}

static void batch_end(void *ctx, int64_t id, ls_status rc, const char *msg, const ls_gen_result *res) {
    const batch_line *b = ctx;
    batch_run *br = b->br;
    (void)id;
    if (rc != LS_OK) {
        br->failed++;
        print_line(b, json_pack("{s:s}", "error", msg));
        return;
    }
    br->prompt_tokens += res->prompt_tokens;
    br->generated += (int64_t)res->tokens.len;
    print_line(b, result_json(res));
}

// One line of the batch file: {"prompt": TEXT, "n": N, "id": ANY}.
static ls_status parse_line(gen_args *g, ls_engine_t *e, const char *text, size_t len, batch_line *b) {
    json_error_t err;
    json_t *o = json_loadb(text, len, 0, &err);
    const char *where = g->batch;
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return LS_ERR(LS_ERR_INVALID, "%s line %lld: not a JSON object (%s)", where, (long long)b->line,
                      o ? "another JSON value" : err.text);
    }
    json_t *p = json_object_get(o, "prompt"), *n = json_object_get(o, "n");
    ls_status rc = LS_OK;
    b->gen = g->gen;
    if (!json_is_string(p)) rc = LS_ERR(LS_ERR_INVALID, "%s line %lld: \"prompt\" must be a string", where, (long long)b->line);
    else if (n && (!json_is_integer(n) || json_integer_value(n) < 0 || json_integer_value(n) > (1 << 24)))
        rc = LS_ERR(LS_ERR_INVALID, "%s line %lld: \"n\" must be an integer in [0, 16777216]", where, (long long)b->line);
    if (rc == LS_OK) {
        if (n) b->gen.max_tokens = json_integer_value(n);
        b->id = json_incref(json_object_get(o, "id"));
        rc = text_ids(g, e, json_string_value(p), json_string_length(p), &b->ids);
    }
    if (rc == LS_OK) rc = cli_attn_rule(&g->attn, (int64_t)b->ids.len + b->gen.max_tokens, &b->gen.rule);
    b->gen.stream = b->gen.rule.kind == LS_ATTN_SINK || b->gen.rule.kind == LS_ATTN_WINDOW;
    json_decref(o);
    return rc;
}

static ls_status read_batch(gen_args *g, ls_engine_t *e, batch_run *br) {
    ls_buf text = {0};
    ls_status rc = ls_file_read_all(g->batch, (size_t)1 << 30, &text);
    int64_t cap = 0, line = 0;
    for (char *at = text.data; rc == LS_OK && at && *at;) {
        char *end = strchr(at, '\n');
        size_t len = end ? (size_t)(end - at) : strlen(at);
        line++;
        if (strspn(at, " \t\r") < len) { // not a blank line
            if (br->n == cap) br->lines = ls_realloc(br->lines, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *br->lines);
            br->lines[br->n] = (batch_line){.line = line};
            rc = parse_line(g, e, at, len, &br->lines[br->n++]);
        }
        at = end ? end + 1 : NULL;
    }
    ls_buf_free(&text);
    if (rc == LS_OK && br->n == 0) rc = LS_ERR(LS_ERR_INVALID, "%s has no prompts", g->batch);
    return rc;
}

static ls_status run_batch(gen_args *g, ls_engine_t *e, batch_run *br) {
    LS_CHECK(read_batch(g, e, br));
    ls_sched_t *s;
    ls_sched_opts so = {.batch_tokens = g->batch_tokens};
    LS_CHECK(ls_sched_init(e, &so, &s));
    double t0 = ls_time_ms();
    for (int64_t i = 0; i < br->n; i++) { // a line refused here (no memory for its cache) fails alone
        batch_line *b = &br->lines[i];
        b->br = br;
        ls_sched_cb cb = {.on_end = batch_end, .ctx = b};
        int64_t id;
        if (ls_sched_add(s, b->ids.data, (int64_t)b->ids.len, &b->gen, &cb, &id) == LS_OK) continue;
        batch_end(b, -1, ls_err_code(), ls_err_msg(), NULL);
        ls_err_clear();
    }
    ls_status rc = ls_sched_run(s);
    ls_sched_free(s);
    double sec = (ls_time_ms() - t0) / 1e3;
    fprintf(stderr, "[longseq] %lld prompts (%lld failed): %lld prompt + %lld generated tokens in %.1f s (%.1f tok/s)\n",
            (long long)br->n, (long long)br->failed, (long long)br->prompt_tokens, (long long)br->generated, sec,
            (double)(br->prompt_tokens + br->generated) / (sec > 0 ? sec : 1e-9));
    LS_CHECK(rc);
    if (br->failed)
        return LS_ERR(LS_ERR_INVALID, "%lld of %lld prompts failed (their lines say why)", (long long)br->failed,
                      (long long)br->n);
    return LS_OK;
}

static void batch_free(batch_run *br) {
    for (int64_t i = 0; i < br->n; i++) {
        json_decref(br->lines[i].id);
        ls_vec_i32_free(&br->lines[i].ids);
    }
    ls_free(br->lines);
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
    if (g.batch) {
        g.gen.on_prefill = NULL; // one progress line would not say whose
        batch_run br = {0};
        cli_worker_engine_defaults(&g.eng);
        ls_status brc = cli_engine_load(&g.eng, &e);
        if (brc == LS_OK) brc = run_batch(&g, e, &br);
        status = brc == LS_OK ? 0 : cli_fail();
        batch_free(&br);
        ls_engine_free(e);
        return status;
    }
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
