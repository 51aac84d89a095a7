// ls_settings.h — the settings a job carries, in one place: their limits, their defaults, the
// attention rule, the RoPE overrides and the sampling options they ask for. The command line
// (cli/engine_args.c, cli/cmd_client.c), the coordinator (checks at submit, the length check,
// descriptions) and the worker group (what it runs) all read settings through here, so a value
// one of them accepts is never refused by another. It sits below the engine: models and kernels
// only, no MPI or CUDA (docs/architecture.md). Messages name a field as `settings.NAME` for the
// protocol and as `--flag` on the command line. Tests: tests/unit/test_settings.c,
// tests/cli/errors.sh, tests/oracle/test_service.py.
#ifndef LS_SETTINGS_H
#define LS_SETTINGS_H

#include "ls_base.h"
#include "ls_kernels.h" // defines: ls_attn_rule, ls_attn_kind
#include "ls_model.h"   // defines: ls_rope_config, ls_model_config
#include "longseq.pb-c.h"

#include <math.h> // NAN in LS_ROPE_OVERRIDE_NONE

// --- limits -----------------------------------------------------------------------------------
// Every numeric setting, with its range. A job's field at 0 means "the default" (except the
// oneof fields temperature and sinks, whose 0 is a value); a given value, from the protocol or a
// flag, must be in range.
typedef enum ls_setting {
    LS_SET_MAX_TOKENS, LS_SET_TEMPERATURE, LS_SET_TOP_K, LS_SET_TOP_P, LS_SET_REPEAT_PENALTY,
    LS_SET_GROUP, LS_SET_SINKS, LS_SET_WINDOW, LS_SET_ROPE_SCALE, LS_SET_ROPE_FREQ_BASE,
    LS_SET_YARN_ORIG_CTX, LS_SET_CTX, LS_SET_MAX_CHUNKS, LS_SET_CHUNK_TOKENS, LS_SET_COMBINE_PARTS, LS_SET_COUNT
} ls_setting;
typedef struct ls_setting_limit {
    const char *field, *flag; // "rope_scale", "--rope-scale"
    double lo, hi;
    bool lo_open;             // (lo, hi] rather than [lo, hi]
    bool integer;
} ls_setting_limit;
const ls_setting_limit *ls_setting_limit_of(ls_setting k);
// LS_ERR_INVALID unless v is in k's range; the message names the field (flag: the command-line
// flag instead of settings.NAME), the value and the range.
ls_status ls_setting_check(ls_setting k, double v, bool flag);
// A command-line value for k: a number (an integer where k is one) in k's range.
ls_status ls_setting_parse(ls_setting k, const char *arg, double *out);

#define LS_SETTINGS_INSTRUCTION_MAX 65536 // bytes of settings.instruction
#define LS_SETTINGS_STOP_MAX 4             // settings.stop: strings
#define LS_SETTINGS_STOP_BYTES 256         // settings.stop: bytes of each
#define LS_DEFAULT_MAX_TOKENS 256          // summarize, generate
#define LS_DEFAULT_PPL_CTX 512             // perplexity's chunk
#define LS_DEFAULT_SINKS 4                 // sink: S
#define LS_DEFAULT_SINK_WINDOW 1020        // sink: W (S + W = 1024)
#define LS_DEFAULT_WINDOW 1024             // window: W
#define LS_DEFAULT_GROUP_RATIO 0.25        // s2: G = a quarter of the sequence (at least 2)

// --- a job's settings -------------------------------------------------------------------------
// Names and ranges of every field (task, attention, RoPE, sampling, lengths); the message names
// the field and the range.
ls_status ls_settings_check(const Longseq__Settings *s);
// The attention rule for a sequence of seq_len tokens (defaults above).
ls_status ls_settings_rule(const Longseq__Settings *s, int64_t seq_len, ls_attn_rule *out);
int64_t ls_settings_max_tokens(const Longseq__Settings *s); // default LS_DEFAULT_MAX_TOKENS
int64_t ls_settings_ppl_ctx(const Longseq__Settings *s);    // default LS_DEFAULT_PPL_CTX

// --- the long-document strategy (docs/architecture.md ("Long documents")) ---------------------
typedef enum ls_strategy { LS_STRAT_AUTO, LS_STRAT_DIRECT, LS_STRAT_EXTEND, LS_STRAT_MAPREDUCE, LS_STRAT_COUNT } ls_strategy;
const char *ls_strategy_name(ls_strategy k); // "auto", "direct", "extend", "map-reduce"
bool ls_strategy_parse(const char *name, ls_strategy *out);
// settings.strategy; unset ("") is direct, the behaviour of clients that do not know the field.
ls_strategy ls_settings_strategy(const Longseq__Settings *s);

// --- the attention rule -----------------------------------------------------------------------
// What a command line or a job asks for; -1 (ratio <= 0): not given.
typedef struct ls_rule_ask {
    ls_attn_kind kind;
    int64_t group, sinks, window;
    double group_ratio; // command line only: s2's G as a share of the sequence
} ls_rule_ask;
ls_rule_ask ls_rule_ask_default(void); // full, nothing given
// The rule for seq_len tokens with the defaults filled in; a value given for a rule it does not
// belong to is LS_ERR_INVALID, named as a flag (flag) or a settings field.
ls_status ls_rule_build(const ls_rule_ask *a, int64_t seq_len, bool flag, ls_attn_rule *out);
// "full", "s2 G=1024", "sink 4+1020", "window 1024"
void ls_rule_describe(const ls_attn_rule *r, char *out, size_t cap);

// --- RoPE overrides ---------------------------------------------------------------------------
// RoPE settings that replace what the model file says. NAN / -1 mean "keep the file's".
typedef struct ls_rope_override {
    int scaling; // an ls_rope_scaling, or -1
    double factor, freq_base, orig_ctx, beta_fast, beta_slow, attn_factor;
} ls_rope_override;
#define LS_ROPE_OVERRIDE_NONE ((ls_rope_override){-1, NAN, NAN, NAN, NAN, NAN, NAN})
// Applies the overrides to r and checks the result; a line per changed value goes to notes
// (may be NULL).
ls_status ls_rope_override_apply(ls_rope_config *r, const ls_rope_override *o, ls_buf *notes);
// The job's RoPE overrides on top of base.
void ls_settings_rope(const Longseq__Settings *s, const ls_rope_override *base, ls_rope_override *out);
// "none", "linear x2", "yarn x4 (orig 8192)", with the freq base
void ls_rope_describe(const ls_rope_config *r, char *out, size_t cap);

// The longest sequence the model handles as configured (c->rope after any overrides): its
// trained context, or the original context times the factor when a RoPE scaling stretches it
// further; -1 when the rule keeps every query within a bounded distance of its keys (sink,
// window), so that no length runs past it. The job service refuses longer sequences
// (coordinator/prep.c); the one-shot commands warn. Test: tests/oracle/test_generate.py.
int64_t ls_context_limit(const ls_model_config *c, const ls_attn_rule *rule);
// The rule of layer il: a window layer of the model (ls_model_config.layer_window) keeps its own
// window whatever the sequence's rule (HF's sliding_window counts the query itself: longseq's
// window rule with W - 1 previous keys); the other layers take the sequence's `rule`.
// Test: tests/unit/test_settings.c.
ls_attn_rule ls_layer_rule(const ls_model_config *c, const ls_attn_rule *rule, int64_t il);
// True when some layer of the model has its own window.
bool ls_model_has_window_layers(const ls_model_config *c);
// The RoPE scale factor, rounded up to a tenth, that stretches the model's original context
// over n positions (for the hints that go with ls_context_limit).
double ls_context_scale_for(const ls_model_config *c, int64_t n);

// --- sampling ---------------------------------------------------------------------------------
typedef struct ls_sampler_opts {
    float temp;           // <= 0: greedy
    int top_k;            // <= 0: off
    float top_p;          // >= 1: off
    float min_p;          // <= 0: off
    float repeat_penalty; // 1: off; divides positive logits of recent tokens, multiplies negative
    int repeat_last_n;    // how many recent tokens the penalty looks at
    uint64_t seed;
} ls_sampler_opts;
ls_sampler_opts ls_sampler_opts_default(void); // temp 0.8, top-k 40, top-p 0.95, min-p 0.05, no penalty
// A job's sampling: greedy unless it asks for a temperature; summarize's repeat penalty 1.1.
ls_sampler_opts ls_settings_sampling(const Longseq__Settings *s);

#endif // LS_SETTINGS_H
