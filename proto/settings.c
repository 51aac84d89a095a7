// settings.c — the job settings (ls_settings.h): one table of limits that the protocol checks
// and the command-line flags share, the defaults, the attention rule a job or a command line
// asks for, the RoPE overrides (applied to a model's configuration, and the context they give),
// and the sampling options. Nothing here loads a model or touches a device.
// Tests: tests/unit/test_settings.c, tests/cli/errors.sh, tests/oracle/test_service.py.
#include "ls_settings.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

// --- limits -----------------------------------------------------------------------------------

static const ls_setting_limit g_limits[LS_SET_COUNT] = {
    [LS_SET_MAX_TOKENS] = {"max_tokens", "--max-tokens", 1, 1 << 24, false, true},
    [LS_SET_TEMPERATURE] = {"temperature", "--temp", 0, 100, false, false},
    [LS_SET_TOP_K] = {"top_k", "--top-k", 1, 1 << 24, false, true},
    [LS_SET_TOP_P] = {"top_p", "--top-p", 0, 1, true, false},
    [LS_SET_REPEAT_PENALTY] = {"repeat_penalty", "--repeat-penalty", 0, 10, true, false},
    [LS_SET_GROUP] = {"group", "--group", 2, 1 << 24, false, true},
    [LS_SET_SINKS] = {"sinks", "--sinks", 0, 1 << 20, false, true},
    [LS_SET_WINDOW] = {"window", "--window", 1, 1 << 24, false, true},
    // A factor of 1024 stretches a 16K context to 16M positions, past any sequence we run
    // (docs/rope.md §3); the context it gives (original context x factor) stays an exact int64.
    [LS_SET_ROPE_SCALE] = {"rope_scale", "--rope-scale", 0, 1024, true, false},
    [LS_SET_ROPE_FREQ_BASE] = {"rope_freq_base", "--rope-freq-base", 1, 1e12, true, false},
    [LS_SET_YARN_ORIG_CTX] = {"yarn_orig_ctx", "--yarn-orig-ctx", 1, 1 << 24, false, true},
    [LS_SET_CTX] = {"ctx", "--ctx", 4, 1 << 24, false, true},
    [LS_SET_MAX_CHUNKS] = {"max_chunks", "--chunks", 1, 1 << 24, false, true},
    [LS_SET_CHUNK_TOKENS] = {"chunk_tokens", "--chunk-tokens", 512, 1 << 20, false, true},
    // one summary per call would never end the levels (coordinator/ls_mapreduce.h)
    [LS_SET_COMBINE_PARTS] = {"combine_parts", "--combine-parts", 2, 100000, false, true},
};

const ls_setting_limit *ls_setting_limit_of(ls_setting k) { return (unsigned)k < LS_SET_COUNT ? &g_limits[k] : NULL; }

// "settings.NAME" or "--flag".
static const char *setting_name(ls_setting k, bool flag, char *buf, size_t cap) {
    if (flag) return g_limits[k].flag;
    snprintf(buf, cap, "settings.%s", g_limits[k].field);
    return buf;
}

ls_status ls_setting_check(ls_setting k, double v, bool flag) {
    const ls_setting_limit *l = ls_setting_limit_of(k);
    if (!l) return LS_ERR(LS_ERR_INTERNAL, "setting %d", (int)k);
    bool above_lo = l->lo_open ? v > l->lo : v >= l->lo; // false for NaN
    if (above_lo && v <= l->hi && (!l->integer || v == floor(v))) return LS_OK;
    char buf[48], val[32];
    snprintf(val, sizeof val, fabs(v) < 1e15 && v == floor(v) ? "%.0f" : "%g", v); // 16777217 whole, 3e38 short
    return LS_ERR(LS_ERR_INVALID, "%s %s is not %s in %c%.10g, %.10g]", setting_name(k, flag, buf, sizeof buf), val,
                  l->integer ? "an integer" : "a number", l->lo_open ? '(' : '[', l->lo, l->hi);
}

ls_status ls_setting_parse(ls_setting k, const char *arg, double *out) {
    const ls_setting_limit *l = ls_setting_limit_of(k);
    if (!l) return LS_ERR(LS_ERR_INTERNAL, "setting %d", (int)k);
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (!*arg || *end || isnan(v))
        return LS_ERR(LS_ERR_INVALID, "%s expects %s, not \"%s\"", l->flag, l->integer ? "an integer" : "a number", arg);
    LS_CHECK(ls_setting_check(k, v, true));
    *out = v;
    return LS_OK;
}

// --- a job's settings -------------------------------------------------------------------------

// The numeric fields of s that are given (0 means the default, except for oneof fields).
static ls_status check_numbers(const Longseq__Settings *s) {
    const struct {
        ls_setting k;
        double v;
        bool given;
    } f[] = {
        {LS_SET_MAX_TOKENS, s->max_tokens, s->max_tokens != 0},
        {LS_SET_TEMPERATURE, s->temperature, s->temperature_opt_case == LONGSEQ__SETTINGS__TEMPERATURE_OPT_TEMPERATURE},
        {LS_SET_TOP_K, s->top_k, s->top_k != 0},
        {LS_SET_TOP_P, s->top_p, s->top_p != 0},
        {LS_SET_REPEAT_PENALTY, s->repeat_penalty, s->repeat_penalty != 0},
        {LS_SET_GROUP, s->group, s->group != 0},
        {LS_SET_SINKS, s->sinks, s->sinks_opt_case == LONGSEQ__SETTINGS__SINKS_OPT_SINKS},
        {LS_SET_WINDOW, s->window, s->window != 0},
        {LS_SET_ROPE_SCALE, s->rope_scale, s->rope_scale != 0},
        {LS_SET_ROPE_FREQ_BASE, s->rope_freq_base, s->rope_freq_base != 0},
        {LS_SET_YARN_ORIG_CTX, s->yarn_orig_ctx, s->yarn_orig_ctx != 0},
        {LS_SET_CTX, s->ctx, s->ctx != 0},
        {LS_SET_MAX_CHUNKS, s->max_chunks, s->max_chunks != 0},
        {LS_SET_CHUNK_TOKENS, s->chunk_tokens, s->chunk_tokens != 0},
        {LS_SET_COMBINE_PARTS, s->combine_parts, s->combine_parts != 0},
    };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (f[i].given) LS_CHECK(ls_setting_check(f[i].k, f[i].v, false));
    return LS_OK;
}

static const char *const g_strategies[LS_STRAT_COUNT] = {"auto", "direct", "extend", "map-reduce"};

const char *ls_strategy_name(ls_strategy k) { return (unsigned)k < LS_STRAT_COUNT ? g_strategies[k] : "?"; }

bool ls_strategy_parse(const char *name, ls_strategy *out) {
    for (int k = 0; name && k < LS_STRAT_COUNT; k++)
        if (!strcmp(name, g_strategies[k])) return *out = (ls_strategy)k, true;
    return false;
}

ls_strategy ls_settings_strategy(const Longseq__Settings *s) {
    ls_strategy k = LS_STRAT_DIRECT;
    if (s->strategy && *s->strategy) ls_strategy_parse(s->strategy, &k);
    return k;
}

// A strategy is a way of summarizing; chunk_tokens and combine_parts belong to map-reduce (or
// auto, which may choose it).
static ls_status check_strategy(const Longseq__Settings *s) {
    ls_strategy k = LS_STRAT_DIRECT;
    if (s->strategy && *s->strategy && !ls_strategy_parse(s->strategy, &k))
        return LS_ERR(LS_ERR_INVALID, "settings.strategy \"%s\" is not auto, direct, extend or map-reduce", s->strategy);
    if (k != LS_STRAT_DIRECT && s->task != LONGSEQ__TASK__SUMMARIZE)
        return LS_ERR(LS_ERR_INVALID, "settings.strategy %s summarizes a document; it does not apply to task %s",
                      g_strategies[k], s->task == LONGSEQ__TASK__GENERATE ? "GENERATE" : "PERPLEXITY");
    bool mr = k == LS_STRAT_MAPREDUCE || k == LS_STRAT_AUTO;
    if (!mr && (s->chunk_tokens || s->combine_parts))
        return LS_ERR(LS_ERR_INVALID, "settings.%s belongs to settings.strategy map-reduce or auto, not %s",
                      s->chunk_tokens ? "chunk_tokens" : "combine_parts", g_strategies[k]);
    return LS_OK;
}

ls_status ls_settings_check(const Longseq__Settings *s) {
    ls_rope_scaling r;
    if ((unsigned)s->task > LONGSEQ__TASK__PERPLEXITY) return LS_ERR(LS_ERR_INVALID, "settings.task %d is not a task", s->task);
    if (s->rope_scaling && *s->rope_scaling && !ls_rope_scaling_parse(s->rope_scaling, &r))
        return LS_ERR(LS_ERR_INVALID, "settings.rope_scaling \"%s\" is not a RoPE method", s->rope_scaling);
    LS_CHECK(check_numbers(s));
    if (s->instruction && strlen(s->instruction) > LS_SETTINGS_INSTRUCTION_MAX)
        return LS_ERR(LS_ERR_INVALID, "settings.instruction is over %d bytes", LS_SETTINGS_INSTRUCTION_MAX);
    if (s->n_stop > LS_SETTINGS_STOP_MAX)
        return LS_ERR(LS_ERR_INVALID, "settings.stop has %zu strings; at most %d", s->n_stop, LS_SETTINGS_STOP_MAX);
    for (size_t i = 0; i < s->n_stop; i++)
        if (!s->stop[i] || !*s->stop[i] || strlen(s->stop[i]) > LS_SETTINGS_STOP_BYTES)
            return LS_ERR(LS_ERR_INVALID, "settings.stop[%zu] must be 1 to %d bytes", i, LS_SETTINGS_STOP_BYTES);
    LS_CHECK(check_strategy(s));
    ls_attn_rule rule;
    return ls_settings_rule(s, 1 << 16, &rule);
}

ls_status ls_settings_rule(const Longseq__Settings *s, int64_t seq_len, ls_attn_rule *out) {
    ls_rule_ask a = ls_rule_ask_default();
    if (s->attention && *s->attention && !ls_attn_kind_parse(s->attention, &a.kind))
        return LS_ERR(LS_ERR_INVALID, "settings.attention \"%s\" is not full, s2, sink or window", s->attention);
    if (s->group) a.group = s->group;
    if (s->sinks_opt_case == LONGSEQ__SETTINGS__SINKS_OPT_SINKS) a.sinks = s->sinks;
    if (s->window) a.window = s->window;
    return ls_rule_build(&a, seq_len, false, out);
}

int64_t ls_settings_max_tokens(const Longseq__Settings *s) { return s->max_tokens ? s->max_tokens : LS_DEFAULT_MAX_TOKENS; }
int64_t ls_settings_ppl_ctx(const Longseq__Settings *s) { return s->ctx ? s->ctx : LS_DEFAULT_PPL_CTX; }

// --- the attention rule -----------------------------------------------------------------------

ls_rule_ask ls_rule_ask_default(void) {
    return (ls_rule_ask){.kind = LS_ATTN_FULL, .group = -1, .sinks = -1, .window = -1, .group_ratio = 0};
}

// Each value given belongs to the chosen rule and is in its range.
static ls_status rule_values(const ls_rule_ask *a, bool flag) {
    const char *kind = ls_attn_kind_name(a->kind), *attn = flag ? "--attn" : "settings.attention";
    char buf[48];
    if ((a->group >= 0 || a->group_ratio > 0) && a->kind != LS_ATTN_S2)
        return LS_ERR(LS_ERR_INVALID, "%s belongs to %s s2, not %s",
                      a->group >= 0 ? setting_name(LS_SET_GROUP, flag, buf, sizeof buf) : "--group-ratio", attn, kind);
    if (a->sinks >= 0 && a->kind != LS_ATTN_SINK)
        return LS_ERR(LS_ERR_INVALID, "%s belongs to %s sink, not %s", setting_name(LS_SET_SINKS, flag, buf, sizeof buf), attn, kind);
    if (a->window >= 0 && a->kind != LS_ATTN_SINK && a->kind != LS_ATTN_WINDOW)
        return LS_ERR(LS_ERR_INVALID, "%s belongs to %s sink or window, not %s", setting_name(LS_SET_WINDOW, flag, buf, sizeof buf),
                      attn, kind);
    if (a->group >= 0 && a->group_ratio > 0) return LS_ERR(LS_ERR_INVALID, "give --group or --group-ratio, not both");
    if (a->group_ratio > 0 && !(a->group_ratio <= 1)) return LS_ERR(LS_ERR_INVALID, "--group-ratio %g is not in (0, 1]", a->group_ratio);
    if (a->group >= 0) LS_CHECK(ls_setting_check(LS_SET_GROUP, (double)a->group, flag));
    if (a->sinks >= 0) LS_CHECK(ls_setting_check(LS_SET_SINKS, (double)a->sinks, flag));
    if (a->window >= 0) LS_CHECK(ls_setting_check(LS_SET_WINDOW, (double)a->window, flag));
    return LS_OK;
}

ls_status ls_rule_build(const ls_rule_ask *a, int64_t seq_len, bool flag, ls_attn_rule *out) {
    LS_CHECK(rule_values(a, flag));
    *out = (ls_attn_rule){.kind = a->kind};
    if (a->kind == LS_ATTN_S2) {
        double ratio = a->group_ratio > 0 ? a->group_ratio : LS_DEFAULT_GROUP_RATIO;
        int64_t g = (int64_t)(ratio * (double)seq_len);
        out->group = a->group >= 0 ? a->group : g < 2 ? 2 : g;
    }
    if (a->kind == LS_ATTN_SINK) out->sinks = a->sinks >= 0 ? a->sinks : LS_DEFAULT_SINKS;
    if (a->kind == LS_ATTN_SINK || a->kind == LS_ATTN_WINDOW)
        out->window = a->window >= 0 ? a->window : a->kind == LS_ATTN_SINK ? LS_DEFAULT_SINK_WINDOW : LS_DEFAULT_WINDOW;
    ls_attn_rule check = *out;
    check.n_head = 1; // the engine fills in the model's head count
    return ls_attn_rule_check(&check);
}

void ls_rule_describe(const ls_attn_rule *r, char *out, size_t cap) {
    switch (r->kind) {
    case LS_ATTN_S2: snprintf(out, cap, "s2 G=%lld", (long long)r->group); break;
    case LS_ATTN_SINK: snprintf(out, cap, "sink %lld+%lld", (long long)r->sinks, (long long)r->window); break;
    case LS_ATTN_WINDOW: snprintf(out, cap, "window %lld", (long long)r->window); break;
    default: snprintf(out, cap, "full");
    }
}

// --- RoPE overrides ---------------------------------------------------------------------------

static void note_double(ls_buf *notes, const char *what, double file, double now) {
    if (notes && file != now) ls_buf_printf(notes, "rope: %s %g (the model file says %g)\n", what, now, file);
}

// The final settings (the file's with the overrides) are checked in one place, ls_rope_check.
ls_status ls_rope_override_apply(ls_rope_config *r, const ls_rope_override *o, ls_buf *notes) {
    ls_rope_config file = *r;
    if (o->scaling >= 0) {
        if (o->scaling >= LS_ROPE_SCALING_COUNT) return LS_ERR(LS_ERR_INVALID, "unknown rope scaling %d", o->scaling);
        r->scaling = (ls_rope_scaling)o->scaling;
    }
    if (!isnan(o->orig_ctx) && !(o->orig_ctx >= 1 && o->orig_ctx <= INT32_MAX)) // before it becomes an integer
        return LS_ERR(LS_ERR_INVALID, "--yarn-orig-ctx %g is not in 1..2^31-1", o->orig_ctx);
    if (!isnan(o->factor)) r->factor = o->factor;
    if (!isnan(o->freq_base)) r->freq_base = o->freq_base;
    if (!isnan(o->orig_ctx)) r->orig_ctx = (int64_t)o->orig_ctx;
    if (!isnan(o->beta_fast)) r->yarn_beta_fast = o->beta_fast;
    if (!isnan(o->beta_slow)) r->yarn_beta_slow = o->beta_slow;
    if (!isnan(o->attn_factor)) r->attn_factor = o->attn_factor;
    if (r->scaling == LS_ROPE_LONGROPE && (!r->factors_long || !r->factors_short))
        return LS_ERR(LS_ERR_INVALID, "--rope-scaling longrope needs the model's rope_factors_long/short tensors");
    LS_CHECK(ls_rope_check(r));
    if (notes && r->scaling != file.scaling)
        ls_buf_printf(notes, "rope: scaling %s (the model file says %s)\n", ls_rope_scaling_name(r->scaling),
                      ls_rope_scaling_name(file.scaling));
    note_double(notes, "scale factor", file.factor, r->factor);
    note_double(notes, "freq base", file.freq_base, r->freq_base);
    note_double(notes, "original context", (double)file.orig_ctx, (double)r->orig_ctx);
    note_double(notes, "yarn beta fast", file.yarn_beta_fast, r->yarn_beta_fast);
    note_double(notes, "yarn beta slow", file.yarn_beta_slow, r->yarn_beta_slow);
    note_double(notes, "attention factor", file.attn_factor, r->attn_factor);
    return LS_OK;
}

void ls_settings_rope(const Longseq__Settings *s, const ls_rope_override *base, ls_rope_override *o) {
    *o = *base;
    ls_rope_scaling r;
    if (s->rope_scaling && *s->rope_scaling && ls_rope_scaling_parse(s->rope_scaling, &r)) o->scaling = (int)r;
    if (s->rope_scale > 0) o->factor = s->rope_scale;
    if (s->rope_freq_base > 0) o->freq_base = s->rope_freq_base;
    if (s->yarn_orig_ctx > 0) o->orig_ctx = s->yarn_orig_ctx;
}

void ls_rope_describe(const ls_rope_config *r, char *out, size_t cap) {
    int k = r->scaling == LS_ROPE_NONE ? snprintf(out, cap, "none")
                                       : snprintf(out, cap, "%s x%g", ls_rope_scaling_name(r->scaling), r->factor);
    if (k > 0 && (size_t)k < cap && (r->scaling == LS_ROPE_YARN || r->scaling == LS_ROPE_DYNAMIC || r->scaling == LS_ROPE_LLAMA3))
        k += snprintf(out + k, cap - (size_t)k, " (orig %lld)", (long long)r->orig_ctx);
    if (k > 0 && (size_t)k < cap) snprintf(out + k, cap - (size_t)k, ", base %g", r->freq_base);
}

int64_t ls_context_limit(const ls_model_config *c, const ls_attn_rule *rule) {
    if (rule && (rule->kind == LS_ATTN_SINK || rule->kind == LS_ATTN_WINDOW)) return -1; // sink: re-assigned positions
    int64_t ctx = c->n_ctx_train;
    const ls_rope_config *r = &c->rope;
    if (r->scaling != LS_ROPE_NONE) {
        // ls_rope_check bounds the factor; a product past 2^62 still becomes 2^62, never an
        // out-of-range conversion
        double x = (double)(r->orig_ctx > 0 ? r->orig_ctx : ctx) * r->factor + 1e-6;
        int64_t scaled = x < 0x1p62 ? (int64_t)x : (int64_t)1 << 62;
        if (scaled > ctx) ctx = scaled;
    }
    return ctx;
}

ls_attn_rule ls_layer_rule(const ls_model_config *c, const ls_attn_rule *rule, int64_t il) {
    int64_t w = c->layer_window && il >= 0 && il < c->n_layer ? c->layer_window[il] : 0;
    if (w <= 0) return *rule;
    return (ls_attn_rule){.kind = LS_ATTN_WINDOW, .window = w - 1, .n_head = rule->n_head}; // w >= 2 (config.c)
}

bool ls_model_has_window_layers(const ls_model_config *c) {
    for (int64_t il = 0; c->layer_window && il < c->n_layer; il++)
        if (c->layer_window[il] > 0) return true;
    return false;
}

double ls_context_scale_for(const ls_model_config *c, int64_t n) {
    int64_t orig = c->rope.orig_ctx > 0 ? c->rope.orig_ctx : c->n_ctx_train;
    return ceil((double)n / (double)orig * 10.0) / 10.0;
}

// --- sampling ---------------------------------------------------------------------------------

ls_sampler_opts ls_sampler_opts_default(void) {
    return (ls_sampler_opts){.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                             .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0};
}

ls_sampler_opts ls_settings_sampling(const Longseq__Settings *s) {
    ls_sampler_opts o = ls_sampler_opts_default();
    o.temp = s->temperature_opt_case ? s->temperature : 0.0f; // greedy unless asked
    o.seed = s->seed_opt_case ? s->seed : 0;
    if (s->top_k) o.top_k = (int)s->top_k;
    if (s->top_p > 0) o.top_p = s->top_p;
    o.repeat_penalty = s->repeat_penalty > 0 ? s->repeat_penalty : s->task == LONGSEQ__TASK__SUMMARIZE ? 1.1f : 1.0f;
    return o;
}
