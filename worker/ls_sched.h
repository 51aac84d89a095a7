// ls_sched.h — many generations on one engine at once. Each step fills a token budget:
// one token of every running decode first, then chunks of the waiting prompts (oldest first)
// with the rest, all in one batched forward (ls_engine_forward_batch), so a long prefill never
// stalls the running decodes (chunked prefill, as Sarathi-Serve and vLLM schedule). Sampling,
// stop conditions and streamed text are ls_generate's own (worker/tasks.c), so at temperature
// 0 a sequence generates what it would alone. Tests: tests/unit/test_sched.c.
#ifndef LS_SCHED_H
#define LS_SCHED_H

#include "ls_tasks.h"

typedef struct ls_sched ls_sched_t;

typedef struct ls_sched_opts {
    int64_t batch_tokens; // tokens per step (decodes plus prefill chunks); <= 0: 512
} ls_sched_opts;

// Called once when a sequence ends: rc is LS_OK (res->stop says why it stopped), or why it
// failed (msg: the error's message; LS_ERR_CANCELLED after ls_sched_cancel or a prefill
// progress callback that said so). res is freed when this returns.
typedef void (*ls_sched_end_fn)(void *ctx, int64_t id, ls_status rc, const char *msg, const ls_gen_result *res);

typedef struct ls_sched_cb {
    ls_text_fn on_text;     // (optional) generated text as it becomes final; not LS_OK ends the sequence
    ls_sched_end_fn on_end; // (optional)
    void *ctx;
} ls_sched_cb;

ls_status ls_sched_init(ls_engine_t *e, const ls_sched_opts *o, ls_sched_t **out);
// Ends every sequence still there as cancelled (their on_end is called), then frees.
void ls_sched_free(ls_sched_t *s);

// Adds a generation: the prompt is copied; the settings are copied, but their stop strings
// must outlive the sequence. o->on_prefill (optional) hears after each prefill chunk how many
// prompt tokens are done; not LS_OK ends the sequence with that status. The KV cache is
// allocated now (prompt + max_tokens, or a streaming cache), so a sequence that does not fit
// in memory is refused here. Token ids are checked when they run: a bad one ends only its
// own sequence. *id: the sequence's number (0, 1, ... in order of adding).
ls_status ls_sched_add(ls_sched_t *s, const int32_t *prompt, int64_t n_prompt, const ls_gen_opts *o,
                       const ls_sched_cb *cb, int64_t *id);

// Ends sequence id as cancelled and frees its cache at once (from inside a callback: at the
// end of the current step). LS_ERR_NOT_FOUND when no such sequence is running.
ls_status ls_sched_cancel(ls_sched_t *s, int64_t id);

typedef struct ls_sched_stats {
    int64_t decode_tokens, prefill_tokens; // rows of the step's forward pass
    int64_t ended;                         // sequences that ended in this step
} ls_sched_stats;

// One step: one batched forward under the budget, then sampling for every sequence whose
// logits came out. Sequences that fail end on their own; an error of the step itself (the
// backend failed) ends every sequence of that step with it and is returned. Nothing to run:
// LS_OK with zero counts. st may be NULL.
ls_status ls_sched_step(ls_sched_t *s, ls_sched_stats *st);
// Steps until no sequence is left.
ls_status ls_sched_run(ls_sched_t *s);
int64_t ls_sched_active(const ls_sched_t *s); // sequences added and not yet ended

#endif // LS_SCHED_H
