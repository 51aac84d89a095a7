// engine_args.c — the options every model-running command shares (model, threads, RoPE
// overrides), their parsing with clear messages, loading the engine with them, and the warning
// for a length past the model's context. Tests: tests/cli/errors.sh, tests/oracle/test_forward.py,
// tests/oracle/test_generate.py.
#include "cli.h"
#include "ls_kv.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

cli_engine_args cli_engine_args_default(void) {
    return (cli_engine_args){.model = NULL, .opts = ls_engine_opts_default()};
}

bool cli_parse_double(const char *cmd, const char *opt, const char *arg, double *out) {
    char *end;
    errno = 0;
    *out = strtod(arg, &end);
    if (!*arg || *end || errno || !isfinite(*out)) {
        cli_usage_error(cmd, "%s expects a number, not \"%s\"", opt, arg);
        return false;
    }
    return true;
}

bool cli_parse_int(const char *cmd, const char *opt, const char *arg, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (!*arg || *end || errno || v < lo || v > hi) {
        cli_usage_error(cmd, "%s expects an integer from %lld to %lld, not \"%s\"", opt, (long long)lo,
                        (long long)hi, arg);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_setting(const char *cmd, ls_setting k, const char *arg, double *out) {
    if (ls_setting_parse(k, arg, out) == LS_OK) return true;
    cli_usage_error(cmd, "%s", ls_err_msg());
    ls_err_clear();
    return false;
}

int cli_engine_option(const char *cmd, int c, const char *arg, cli_engine_args *a) {
    static const char *names[] = {"--model", "--threads", "--ubatch", "--no-pin", "--rope-scaling",
                                  "--rope-scale", "--rope-freq-base", "--yarn-orig-ctx", "--yarn-beta-fast",
                                  "--yarn-beta-slow", "--yarn-attn-factor", "--act-precision", "--device",
                                  "--lora", "--lora-scale", "--kv-type"};
    int k = c - CLI_ENGINE_OPT;
    int64_t v;
    ls_rope_override *r = &a->opts.rope;
    double *dst[] = {&r->factor, &r->freq_base, &r->orig_ctx, &r->beta_fast, &r->beta_slow, &r->attn_factor};
    switch (k) {
    case 0: a->model = arg; return 0;
    case 1:
        if (!cli_parse_int(cmd, names[k], arg, 1, 1024, &v)) return 2;
        a->opts.n_threads = (int)v;
        return 0;
    case 2:
        if (!cli_parse_int(cmd, names[k], arg, 1, 65536, &v)) return 2;
        a->opts.ubatch = v;
        return 0;
    case 3: a->opts.first_cpu = -1; return 0;
    case 4: {
        ls_rope_scaling s;
        if (!ls_rope_scaling_parse(arg, &s))
            return cli_usage_error(cmd, "--rope-scaling \"%s\" is not one of none, linear, ntk, dynamic, yarn, llama3, longrope", arg);
        r->scaling = (int)s;
        return 0;
    }
    case 11:
        if (!strcmp(arg, "f32")) a->opts.act = LS_ACT_F32;
        else if (!strcmp(arg, "llamacpp")) a->opts.act = LS_ACT_LLAMACPP;
        else return cli_usage_error(cmd, "--act-precision \"%s\" is not f32 or llamacpp", arg);
        return 0;
    case 12:
        if (!ls_device_parse(arg, &a->opts.device))
            return cli_usage_error(cmd, "--device \"%s\" is not auto, cpu or cuda", arg);
        return 0;
    case 13:
        if (a->n_lora == CLI_MAX_LORA) return cli_usage_error(cmd, "at most %d --lora adapters", CLI_MAX_LORA);
        a->lora[a->n_lora++] = (ls_lora_spec){.path = arg, .scale = 1.0};
        return 0;
    case 14:
        if (!a->n_lora) return cli_usage_error(cmd, "--lora-scale follows the --lora it scales");
        if (!cli_parse_double(cmd, names[k], arg, &a->lora[a->n_lora - 1].scale)) return 2;
        if (a->lora[a->n_lora - 1].scale < 0) return cli_usage_error(cmd, "--lora-scale must not be negative");
        return 0;
    case 15:
        if (!ls_kv_type_parse(arg, &a->opts.kv_type))
            return cli_usage_error(cmd, "--kv-type \"%s\" is not f32, bf16 or q8_0", arg);
        a->opts.kv_type_set = true;
        return 0;
    case 5: return cli_parse_setting(cmd, LS_SET_ROPE_SCALE, arg, &r->factor) ? 0 : 2;
    case 6: return cli_parse_setting(cmd, LS_SET_ROPE_FREQ_BASE, arg, &r->freq_base) ? 0 : 2;
    case 7: return cli_parse_setting(cmd, LS_SET_YARN_ORIG_CTX, arg, &r->orig_ctx) ? 0 : 2;
    default: // the YaRN shape parameters: ls_rope_check refuses values that would give NaN
        if (k < 8 || k > 10) return cli_usage_error(cmd, "unknown option");
        return cli_parse_double(cmd, names[k], arg, dst[k - 5]) ? 0 : 2;
    }
}

void cli_engine_option_keep(const struct option *opts, int c, const char *arg, char **args, int *n) {
    const struct option *opt = opts;
    while (opt->name && opt->val != c) opt++;
    if (!opt->name) return;
    ls_buf dashed = {0};
    ls_buf_printf(&dashed, "--%s", opt->name);
    args[(*n)++] = dashed.data;
    if (arg) args[(*n)++] = ls_strndup(arg, strlen(arg));
}

ls_load_opts cli_load_opts(const cli_engine_args *a) {
    return (ls_load_opts){.lora = a->lora, .n_lora = a->n_lora};
}

ls_status cli_engine_load(const cli_engine_args *a, ls_engine_t **e) {
    const char *path = a->model ? a->model : ls_default_model_path();
    ls_engine_opts o = a->opts;
    o.load = cli_load_opts(a);
    LS_CHECK(ls_engine_load(path, &o, e));
    const char *notes = ls_engine_notes(*e);
    if (notes && *notes) fputs(notes, stderr);
    return LS_OK;
}

void cli_context_warn(const char *cmd, ls_engine_t *e, const ls_attn_rule *rule, int64_t need, const char *what,
                      const char *extra) {
    const ls_model_config *c = ls_engine_config(e);
    int64_t limit = ls_context_limit(c, rule);
    if (!cli_is_leader() || limit < 0 || need <= limit) return;
    char past[192];
    if (limit > c->n_ctx_train)
        snprintf(past, sizeof past, "the context of %lld that RoPE %s x%g gives the model (trained context of %lld)",
                 (long long)limit, ls_rope_scaling_name(c->rope.scaling), c->rope.factor, (long long)c->n_ctx_train);
    else
        snprintf(past, sizeof past, "the model's trained context of %lld", (long long)c->n_ctx_train);
    LS_WARN("%s: %lld positions (%s) run past %s, where its output degrades (the job service refuses such a "
            "length). Stretch RoPE over it with --rope-scaling yarn --rope-scale %g, or bound the attention "
            "distance with --attn sink%s%s",
            cmd, (long long)need, what, past, ls_context_scale_for(c, need), extra ? ", or " : "", extra ? extra : "");
}

// --- attention rules ------------------------------------------------------------------------
// The values and their limits are the job settings' (proto/ls_settings.h), named as flags.

cli_attn_args cli_attn_args_default(void) { return ls_rule_ask_default(); }

int cli_attn_option(const char *cmd, int c, const char *arg, cli_attn_args *a) {
    double v;
    switch (c - CLI_ATTN_OPT) {
    case 0:
        if (!ls_attn_kind_parse(arg, &a->kind))
            return cli_usage_error(cmd, "--attn \"%s\" is not one of full, s2, sink, window", arg);
        return 0;
    case 1: return cli_parse_setting(cmd, LS_SET_GROUP, arg, &v) ? (a->group = (int64_t)v, 0) : 2;
    case 2:
        if (!cli_parse_double(cmd, "--group-ratio", arg, &a->group_ratio)) return 2;
        if (!(a->group_ratio > 0 && a->group_ratio <= 1)) return cli_usage_error(cmd, "--group-ratio must be in (0, 1]");
        return 0;
    case 3: return cli_parse_setting(cmd, LS_SET_SINKS, arg, &v) ? (a->sinks = (int64_t)v, 0) : 2;
    case 4: return cli_parse_setting(cmd, LS_SET_WINDOW, arg, &v) ? (a->window = (int64_t)v, 0) : 2;
    default: return cli_usage_error(cmd, "unknown option");
    }
}

ls_status cli_attn_rule(const cli_attn_args *a, int64_t seq_len, ls_attn_rule *out) {
    return ls_rule_build(a, seq_len, true, out);
}
