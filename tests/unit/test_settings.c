// test_settings.c — the job settings (proto/ls_settings.h): every numeric setting's range at
// its edges, the same limits for a protocol field and its flag, the values that overflowed or
// slipped through before (rope_scale 3e38, group 0 on the command line, top_k 2^32-1), the
// attention rule's defaults and the names its messages use, the default sampling, and the
// long-document strategy with the fields that belong to it.
#include "ls_settings.h"
#include "ls_test.h"

#include <math.h>
#include <string.h>

// Each limit holds at its edges, for a field and for its flag alike.
static void test_limits(void) {
    for (int k = 0; k < LS_SET_COUNT; k++) {
        const ls_setting_limit *l = ls_setting_limit_of((ls_setting)k);
        TEST_COND(l && l->field && l->flag && l->lo < l->hi, "setting %d has a range", k);
        double inside = l->lo_open ? (l->integer ? l->lo + 1 : nextafter(l->lo, INFINITY)) : l->lo;
        TEST_COND(ls_setting_check((ls_setting)k, inside, false) == LS_OK, "%s %g", l->field, inside);
        TEST_COND(ls_setting_check((ls_setting)k, l->hi, true) == LS_OK, "%s %g", l->flag, l->hi);
        TEST_ERR(ls_setting_check((ls_setting)k, l->integer ? l->hi + 1 : nextafter(l->hi, INFINITY), false), LS_ERR_INVALID,
                 l->field);
        TEST_ERR(ls_setting_check((ls_setting)k, l->lo_open ? l->lo : l->lo - 1, true), LS_ERR_INVALID, l->flag);
        TEST_ERR(ls_setting_check((ls_setting)k, NAN, false), LS_ERR_INVALID, "nan");
        TEST_ERR(ls_setting_check((ls_setting)k, 3e38, false), LS_ERR_INVALID, "3e+38");
        if (l->integer) TEST_ERR(ls_setting_check((ls_setting)k, l->lo + 2.5, true), LS_ERR_INVALID, "is not an integer");
    }
    TEST_ERR(ls_setting_check(LS_SET_ROPE_SCALE, 3e38, false), LS_ERR_INVALID,
             "settings.rope_scale 3e+38 is not a number in (0, 1024]");
    TEST_ERR(ls_setting_check(LS_SET_GROUP, 1, true), LS_ERR_INVALID, "--group 1 is not an integer in [2, 16777216]");
    double v;
    TEST_ERR(ls_setting_parse(LS_SET_GROUP, "0", &v), LS_ERR_INVALID, "--group 0 is not an integer in [2, 16777216]");
    TEST_ERR(ls_setting_parse(LS_SET_GROUP, "two", &v), LS_ERR_INVALID, "--group expects an integer, not \"two\"");
    TEST_ERR(ls_setting_parse(LS_SET_YARN_ORIG_CTX, "1e300", &v), LS_ERR_INVALID, "--yarn-orig-ctx 1e+300");
    TEST_ERR(ls_setting_parse(LS_SET_TEMPERATURE, "nan", &v), LS_ERR_INVALID, "--temp expects a number");
    TEST_COND(ls_setting_parse(LS_SET_ROPE_SCALE, "4", &v) == LS_OK && v == 4, "--rope-scale 4");
    TEST_COND(ls_setting_parse(LS_SET_SINKS, "0", &v) == LS_OK && v == 0, "--sinks 0");
}

// A job's settings: 0 is the default, except for the oneof fields; out of range is refused
// with the field's name.
static void test_job(void) {
    Longseq__Settings s = LONGSEQ__SETTINGS__INIT;
    TEST_COND(ls_settings_check(&s) == LS_OK, "empty settings: %s", ls_err_msg());
    s.rope_scale = 3e38f;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.rope_scale 3e+38 is not a number in (0, 1024]");
    s = (Longseq__Settings)LONGSEQ__SETTINGS__INIT;
    s.attention = "s2", s.group = 1;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.group 1 is not an integer in [2, 16777216]");
    s = (Longseq__Settings)LONGSEQ__SETTINGS__INIT;
    s.top_k = UINT32_MAX; // became top-k -1 ("off") in the worker
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.top_k 4294967295");
    s = (Longseq__Settings)LONGSEQ__SETTINGS__INIT;
    s.rope_freq_base = 1e30f;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.rope_freq_base");
    s = (Longseq__Settings)LONGSEQ__SETTINGS__INIT;
    s.yarn_orig_ctx = UINT32_MAX;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.yarn_orig_ctx");
    s = (Longseq__Settings)LONGSEQ__SETTINGS__INIT;
    s.max_chunks = UINT32_MAX;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.max_chunks");
    s = (Longseq__Settings)LONGSEQ__SETTINGS__INIT;
    s.temperature_opt_case = LONGSEQ__SETTINGS__TEMPERATURE_OPT_TEMPERATURE, s.temperature = NAN;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.temperature");
    s = (Longseq__Settings)LONGSEQ__SETTINGS__INIT;
    s.attention = "sink", s.sinks_opt_case = LONGSEQ__SETTINGS__SINKS_OPT_SINKS, s.sinks = 0;
    TEST_COND(ls_settings_check(&s) == LS_OK, "sink with 0 sinks (a oneof: 0 is a value): %s", ls_err_msg());
    s.window = 1u << 25;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.window 33554432");
    s = (Longseq__Settings)LONGSEQ__SETTINGS__INIT;
    s.attention = "sink", s.group = 8;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.group belongs to settings.attention s2, not sink");
    s.attention = "dense";
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.attention \"dense\" is not full, s2, sink or window");
    // stop strings: at most LS_SETTINGS_STOP_MAX, each 1 to LS_SETTINGS_STOP_BYTES bytes
    s = (Longseq__Settings)LONGSEQ__SETTINGS__INIT;
    char long_stop[LS_SETTINGS_STOP_BYTES + 2], *stops[LS_SETTINGS_STOP_MAX + 1] = {"a", "bc", "d", "e", "f"};
    memset(long_stop, 'x', sizeof long_stop - 1), long_stop[sizeof long_stop - 1] = 0;
    s.stop = stops, s.n_stop = LS_SETTINGS_STOP_MAX;
    TEST_COND(ls_settings_check(&s) == LS_OK, "%d stop strings: %s", LS_SETTINGS_STOP_MAX, ls_err_msg());
    s.n_stop = LS_SETTINGS_STOP_MAX + 1;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.stop has 5 strings; at most 4");
    stops[1] = "", s.n_stop = 2;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.stop[1] must be 1 to 256 bytes");
    stops[1] = long_stop;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.stop[1] must be 1 to 256 bytes");
    ls_err_clear();
}

// The same rule whether asked by flags or by a job, with the same defaults.
static void test_rule(void) {
    ls_attn_rule r, q;
    ls_rule_ask a = ls_rule_ask_default();
    a.kind = LS_ATTN_SINK;
    TEST_COND(ls_rule_build(&a, 100, true, &r) == LS_OK && r.sinks == 4 && r.window == 1020, "sink defaults 4+1020");
    a.kind = LS_ATTN_WINDOW;
    TEST_COND(ls_rule_build(&a, 100, true, &r) == LS_OK && r.window == 1024, "window default 1024");
    a.kind = LS_ATTN_S2;
    TEST_COND(ls_rule_build(&a, 4000, true, &r) == LS_OK && r.group == 1000, "s2: a quarter of the sequence");
    TEST_COND(ls_rule_build(&a, 5, true, &r) == LS_OK && r.group == 2, "s2 on 5 tokens: G = 2, not 1 (%lld)", (long long)r.group);
    a.group_ratio = 0.5;
    TEST_COND(ls_rule_build(&a, 4000, true, &r) == LS_OK && r.group == 2000, "--group-ratio 0.5");
    a.group = 8;
    TEST_ERR(ls_rule_build(&a, 4000, true, &r), LS_ERR_INVALID, "give --group or --group-ratio, not both");
    a = ls_rule_ask_default();
    a.kind = LS_ATTN_S2, a.group = 0;
    TEST_ERR(ls_rule_build(&a, 4000, true, &r), LS_ERR_INVALID, "--group 0 is not an integer in [2, 16777216]");
    a.kind = LS_ATTN_WINDOW, a.group = 8;
    TEST_ERR(ls_rule_build(&a, 4000, true, &r), LS_ERR_INVALID, "--group belongs to --attn s2, not window");
    TEST_ERR(ls_rule_build(&a, 4000, false, &r), LS_ERR_INVALID, "settings.group belongs to settings.attention s2, not window");
    a = ls_rule_ask_default();
    a.kind = LS_ATTN_SINK, a.sinks = 2, a.window = 62;
    Longseq__Settings s = LONGSEQ__SETTINGS__INIT;
    s.attention = "sink", s.sinks_opt_case = LONGSEQ__SETTINGS__SINKS_OPT_SINKS, s.sinks = 2, s.window = 62;
    TEST_COND(ls_rule_build(&a, 100, true, &r) == LS_OK && ls_settings_rule(&s, 100, &q) == LS_OK && !memcmp(&r, &q, sizeof r),
              "flags and job give one rule");
    char d[64];
    ls_rule_describe(&r, d, sizeof d);
    TEST_COND(!strcmp(d, "sink 2+62"), "described as %s", d);
}

// The context a RoPE factor gives stays an int64 whatever the factor (the float -> int64
// conversion of orig_ctx x 3e38 was undefined).
static void test_context(void) {
    ls_model_config c = {.n_ctx_train = 4096};
    c.rope.scaling = LS_ROPE_LINEAR, c.rope.factor = 3e38, c.rope.orig_ctx = 4096;
    TEST_COND(ls_context_limit(&c, NULL) == (int64_t)1 << 62, "orig 4096 x 3e38 -> 2^62, got %lld", (long long)ls_context_limit(&c, NULL));
    c.rope.factor = 4;
    TEST_COND(ls_context_limit(&c, NULL) == 16384, "orig 4096 x 4");
    ls_attn_rule sink = {.kind = LS_ATTN_SINK, .sinks = 4, .window = 60};
    TEST_COND(ls_context_limit(&c, &sink) == -1, "sink: no limit");
}

// A model's window layers keep their window (HF's sliding_window W: W - 1 previous keys), the
// others take the sequence's rule.
static void test_layer_rule(void) {
    int64_t lw[3] = {0, 4096, 2};
    ls_model_config c = {.n_layer = 3, .sliding_window = 4096, .layer_window = lw};
    ls_attn_rule s2 = {.kind = LS_ATTN_S2, .group = 16, .n_head = 8};
    ls_attn_rule r0 = ls_layer_rule(&c, &s2, 0), r1 = ls_layer_rule(&c, &s2, 1), r2 = ls_layer_rule(&c, &s2, 2);
    TEST_COND(r0.kind == LS_ATTN_S2 && r0.group == 16, "a global layer takes the sequence's rule");
    TEST_COND(r1.kind == LS_ATTN_WINDOW && r1.window == 4095 && r1.n_head == 8, "window 4096 -> 4095 previous keys");
    TEST_COND(r2.kind == LS_ATTN_WINDOW && r2.window == 1, "window 2 -> 1 previous key");
    TEST_COND(ls_model_has_window_layers(&c), "has window layers");
    lw[1] = lw[2] = 0;
    TEST_COND(!ls_model_has_window_layers(&c) && ls_layer_rule(&c, &s2, 2).kind == LS_ATTN_S2, "none left");
}

static void test_sampling(void) {
    Longseq__Settings s = LONGSEQ__SETTINGS__INIT;
    ls_sampler_opts o = ls_settings_sampling(&s);
    TEST_COND(o.temp == 0 && o.repeat_penalty == 1.1f, "summarize: greedy with penalty 1.1");
    s.task = LONGSEQ__TASK__GENERATE, s.top_k = 5;
    o = ls_settings_sampling(&s);
    TEST_COND(o.repeat_penalty == 1.0f && o.top_k == 5, "generate: no penalty, top-k 5");
    TEST_COND(ls_settings_max_tokens(&s) == LS_DEFAULT_MAX_TOKENS && ls_settings_ppl_ctx(&s) == LS_DEFAULT_PPL_CTX, "defaults");
}

// settings.strategy: its names, unset is direct, summarize only, and chunk_tokens /
// combine_parts only with map-reduce or auto.
static void test_strategy(void) {
    Longseq__Settings s = LONGSEQ__SETTINGS__INIT;
    TEST_COND(ls_settings_strategy(&s) == LS_STRAT_DIRECT, "unset is direct (old clients)");
    const char *names[] = {"auto", "direct", "extend", "map-reduce"};
    for (int k = 0; k < LS_STRAT_COUNT; k++) {
        ls_strategy got;
        TEST_COND(ls_strategy_parse(names[k], &got) && got == (ls_strategy)k && !strcmp(ls_strategy_name(got), names[k]), "%s", names[k]);
        s.strategy = (char *)names[k];
        TEST_COND(ls_settings_check(&s) == LS_OK && ls_settings_strategy(&s) == (ls_strategy)k, "%s: %s", names[k], ls_err_msg());
    }
    ls_strategy got;
    TEST_COND(!ls_strategy_parse("mapreduce", &got) && !ls_strategy_parse(NULL, &got), "no other names");
    s.strategy = "abridge";
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.strategy \"abridge\" is not auto, direct, extend or map-reduce");
    s.strategy = "map-reduce", s.task = LONGSEQ__TASK__PERPLEXITY;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.strategy map-reduce summarizes a document; it does not apply to task PERPLEXITY");
    s.strategy = "direct", s.task = LONGSEQ__TASK__GENERATE;
    TEST_COND(ls_settings_check(&s) == LS_OK, "direct goes with any task");
    s = (Longseq__Settings)LONGSEQ__SETTINGS__INIT;
    s.strategy = "extend", s.chunk_tokens = 1024;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.chunk_tokens belongs to settings.strategy map-reduce or auto, not extend");
    s.strategy = "", s.chunk_tokens = 0, s.combine_parts = 3;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.combine_parts belongs to settings.strategy map-reduce or auto, not direct");
    s.strategy = "auto", s.chunk_tokens = 511, s.combine_parts = 0;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.chunk_tokens 511 is not an integer in [512, 1048576]");
    s.chunk_tokens = 512, s.combine_parts = 1;
    TEST_ERR(ls_settings_check(&s), LS_ERR_INVALID, "settings.combine_parts 1 is not an integer in [2, 100000]");
    s.combine_parts = 2;
    TEST_COND(ls_settings_check(&s) == LS_OK, "auto with its chunk and parts: %s", ls_err_msg());
}

int main(void) {
    test_layer_rule();
    test_limits();
    test_strategy();
    test_job();
    test_rule();
    test_context();
    test_sampling();
    return TEST_REPORT("test_settings");
}
