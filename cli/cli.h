// cli.h — private to cli/: the subcommands of the longseq binary and the helpers they share.
// Each command parses its own options and returns a process exit status (0 ok, 1 error,
// 2 usage error). Tests: tests/oracle/*.py and tests/unit run the binary end to end.
#ifndef LS_CLI_H
#define LS_CLI_H

#include "ls_base.h"
#include "ls_gguf.h"
#include "ls_loader.h"
#include "ls_tokenizer.h"

int cmd_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_summarize(int argc, char **argv);
int cmd_batch(int argc, char **argv);
int cmd_submit(int argc, char **argv);
int cmd_watch(int argc, char **argv);
int cmd_result(int argc, char **argv);
int cmd_jobs(int argc, char **argv);
int cmd_cancel(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_eval(int argc, char **argv);

// Prints the pending error and returns 1: "longseq: error: MESSAGE" (with the rank and host
// on a worker group's rank); its source location and trace only when verbose.
int cli_fail(void);
// Verbose errors: `longseq --verbose COMMAND ...`, a command's own --verbose, or LS_LOG=info|debug.
extern bool cli_verbose;
// Prints "longseq <cmd>: <message>" plus a hint to run --help, returns 2.
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// A JSON string from bytes that may not be valid UTF-8 (invalid bytes become U+FFFD).
typedef struct json_t json_t;
json_t *cli_json_str(const char *p, size_t n);

// ls_chat_init for the commands that take --chat-template: without one, a model whose template
// longseq does not know gets an error that names the option.
#include "ls_chat.h"
ls_status cli_chat_init(const ls_gguf_t *g, const ls_tokenizer_t *tok, const char *tmpl, ls_chat_t **out);

// A model file opened for its metadata and tokenizer.
typedef struct cli_model {
    ls_gguf_t *gguf;
    ls_tokenizer_t *tok;
} cli_model;
// path NULL: the default model. lo: adapters (which may grow the vocabulary); NULL for none.
// Opens shapes only (nothing is copied or merged).
ls_status cli_model_open(const char *path, const ls_load_opts *lo, cli_model *m);
void cli_model_close(cli_model *m);

// The measured effective context of models and the strategy chosen from it: coordinator/ls_effctx.h.
#include "ls_effctx.h"

// --- options shared by the commands that run the model ---------------------------------------
#include "ls_engine.h"
#include <getopt.h>

#define CLI_MAX_LORA 16
typedef struct cli_engine_args {
    const char *model; // NULL: the default model
    ls_engine_opts opts; // opts.load points into lora when the engine loads
    ls_lora_spec lora[CLI_MAX_LORA];
    int n_lora;
} cli_engine_args;

// getopt_long entries for --model, --threads, --ubatch, --no-pin and the RoPE overrides
// (--rope-scaling, --rope-scale, --rope-freq-base, --yarn-orig-ctx, --yarn-beta-fast,
// --yarn-beta-slow, --yarn-attn-factor). Their vals are >= CLI_ENGINE_OPT.
#define CLI_ENGINE_OPT 1000
#define CLI_ENGINE_OPTIONS                                                                 \
    {"model", required_argument, 0, CLI_ENGINE_OPT + 0},                                  \
    {"threads", required_argument, 0, CLI_ENGINE_OPT + 1},                                \
    {"ubatch", required_argument, 0, CLI_ENGINE_OPT + 2},                                 \
    {"no-pin", no_argument, 0, CLI_ENGINE_OPT + 3},                                       \
    {"rope-scaling", required_argument, 0, CLI_ENGINE_OPT + 4},                           \
    {"rope-scale", required_argument, 0, CLI_ENGINE_OPT + 5},                             \
    {"rope-freq-base", required_argument, 0, CLI_ENGINE_OPT + 6},                         \
    {"yarn-orig-ctx", required_argument, 0, CLI_ENGINE_OPT + 7},                          \
    {"yarn-beta-fast", required_argument, 0, CLI_ENGINE_OPT + 8},                         \
    {"yarn-beta-slow", required_argument, 0, CLI_ENGINE_OPT + 9},                         \
    {"yarn-attn-factor", required_argument, 0, CLI_ENGINE_OPT + 10},                      \
    {"act-precision", required_argument, 0, CLI_ENGINE_OPT + 11},                         \
    {"device", required_argument, 0, CLI_ENGINE_OPT + 12},                                \
    {"lora", required_argument, 0, CLI_ENGINE_OPT + 13},                                  \
    {"lora-scale", required_argument, 0, CLI_ENGINE_OPT + 14},                            \
    {"kv-type", required_argument, 0, CLI_ENGINE_OPT + 15}
#define CLI_ENGINE_HELP                                                                    \
    "  --model F            GGUF file or Hugging Face checkpoint directory (default:\n"   \
    "                       $LONGSEQ_MODEL or the cached SmolLM2)\n"                       \
    "  --lora A [--lora-scale X]   merge a LoRA adapter at load (PEFT directory, LoRA+\n"   \
    "                       extras included, or llama.cpp GGUF adapter), scaled by X;\n"   \
    "                       repeatable\n"                                                  \
    "  --threads N          CPU threads (default: all cores); --no-pin: do not pin them\n"  \
    "  --ubatch N           tokens per prefill micro-batch (default 512)\n"                 \
    "  --rope-scaling none|linear|ntk|dynamic|yarn|llama3|longrope   override the model's\n" \
    "  --rope-scale S       scaling factor (linear: positions / S)\n"                       \
    "  --rope-freq-base B   RoPE base (e.g. 1e6 for Code Llama's ABF)\n"                    \
    "  --yarn-orig-ctx N    pre-training context for YaRN / dynamic NTK / Llama 3\n"         \
    "  --yarn-beta-fast X --yarn-beta-slow X --yarn-attn-factor X   YaRN parameters\n"      \
    "  --act-precision f32|llamacpp   matmul activations exact (default) or rounded to\n"   \
    "                       8 bits per block as llama.cpp's CPU backend does (to compare)\n" \
    "  --device auto|cpu|cuda   where the model runs (default auto: CUDA when a GPU is\n"   \
    "                       visible and the build has it; a group's ranks: one GPU each)\n"   \
    "  --kv-type f32|bf16|q8_0   KV cache elements (default f32 on the CPU, bf16 on a GPU;\n" \
    "                       q8_0: blocks of 32 as llama.cpp's -ctk/-ctv q8_0, CPU only;\n" \
    "                       a worker group's ranks each keep their share so)\n"

// --- attention-rule options (generate, perplexity) -------------------------------------------
typedef ls_rule_ask cli_attn_args; // the job settings' (ls_settings.h): -1 / <= 0 not given
#define CLI_ATTN_OPT 1100
#define CLI_ATTN_OPTIONS                                                                   \
    {"attn", required_argument, 0, CLI_ATTN_OPT + 0},                                     \
    {"group", required_argument, 0, CLI_ATTN_OPT + 1},                                    \
    {"group-ratio", required_argument, 0, CLI_ATTN_OPT + 2},                              \
    {"sinks", required_argument, 0, CLI_ATTN_OPT + 3},                                    \
    {"window", required_argument, 0, CLI_ATTN_OPT + 4}
#define CLI_ATTN_HELP                                                                      \
    "  --attn full|s2|sink|window   attention rule (default full; docs/attention.md)\n"      \
    "  --group G | --group-ratio R  s2: group of G tokens, or R times the sequence (default 0.25)\n" \
    "  --sinks S --window W         sink: S first tokens (default 4) and W previous ones\n"     \
    "                               (default 1020); window: W previous tokens (default 1024)\n"
cli_attn_args cli_attn_args_default(void);
int cli_attn_option(const char *cmd, int c, const char *arg, cli_attn_args *a);
// The rule for a sequence of seq_len tokens (s2's group from the ratio); options that do not
// belong to the chosen rule are an error.
ls_status cli_attn_rule(const cli_attn_args *a, int64_t seq_len, ls_attn_rule *out);

// On the leader, a warning when `need` positions (`what`: how they add up) run past the
// context the model handles with its RoPE settings under the rule (ls_context_limit), with
// the numbers and the flags that would help; `extra`: one more such hint, or NULL.
void cli_context_warn(const char *cmd, ls_engine_t *e, const ls_attn_rule *rule, int64_t need, const char *what,
                      const char *extra);

cli_engine_args cli_engine_args_default(void);
// Handles one getopt result c >= CLI_ENGINE_OPT; returns 0, or prints why and returns 2.
int cli_engine_option(const char *cmd, int c, const char *arg, cli_engine_args *a);
// Appends "--NAME" (and arg, when given) of option c to args[*n..] (allocated: ls_free each),
// to hand the same engine options to a worker group.
void cli_engine_option_keep(const struct option *opts, int c, const char *arg, char **args, int *n);
// Loads the engine and prints, once, each setting that overrides the model file.
ls_status cli_engine_load(const cli_engine_args *a, ls_engine_t **e);
// The adapters of a (the engine loads them fully; the coordinator and tools shapes only).
ls_load_opts cli_load_opts(const cli_engine_args *a);
// Parses a number; false (and a usage message) when arg is not one.
bool cli_parse_double(const char *cmd, const char *opt, const char *arg, double *out);
bool cli_parse_int(const char *cmd, const char *opt, const char *arg, int64_t lo, int64_t hi, int64_t *out);
// A setting's flag, within the limits the job protocol has for it (ls_settings.h).
bool cli_parse_setting(const char *cmd, ls_setting k, const char *arg, double *out);

// --- worker groups (cmd_worker.c) -----------------------------------------------------------
typedef struct ls_comm ls_comm_t;
#define CLI_GROUP_OPTIONS                                                                  \
    {"np", required_argument, 0, 'N'}, {"launcher", required_argument, 0, 'L'},              \
    {"hosts", required_argument, 0, 'L'}, {"hostfile", required_argument, 0, 'L'},           \
    {"stats", no_argument, 0, 'Z'}
#define CLI_GROUP_HELP                                                                     \
    "  --np N               run as a worker group of N ranks (sequence parallelism)\n"        \
    "  --launcher CMD       how to start it (default mpirun; e.g. \"srun --mpi=pmix\")\n"      \
    "  --hosts H1:N,H2:M    with mpirun: run N ranks on host H1, M on H2 (mpirun --host)\n"    \
    "  --hostfile F         with mpirun: the hosts and their slots from F (mpirun --hostfile)\n" \
    "  --stats              with --np: bytes sent/received and wait time per layer and rank\n"
// In one-shot use with --np: starts `CMD -np N [--host H | --hostfile F] <longseq> worker --task
// TASK <args>` and returns
// its exit status; -1 when there is no --np or this already is a worker.
int cli_maybe_launch(const char *task, int argc, char **argv);
ls_comm_t *cli_group(void); // NULL outside `longseq worker`
bool cli_is_leader(void);   // true outside a group, and on rank 0
// The leader's ids to every rank (no-op outside a group).
ls_status cli_group_share_ids(ls_vec_i32 *ids);
// Whether any rank failed (a collective; the local status is returned first).
ls_status cli_group_status(ls_status rc);
void cli_group_stats(void); // --stats table on the leader
// Worker defaults: threads = cores / ranks on the host, disjoint cores per rank.
void cli_worker_engine_defaults(cli_engine_args *eng);

#endif // LS_CLI_H
