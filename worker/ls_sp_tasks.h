// ls_sp_tasks.h — the tasks of ls_tasks.h run by a worker group (sequence parallelism): every
// rank calls them with the same tokens and options; output callbacks fire on the leader only.
// Results equal the single-process tasks'. Tests: tests/oracle/test_sp.py.
#ifndef LS_SP_TASKS_H
#define LS_SP_TASKS_H

#include "ls_sp.h"
#include "ls_tasks.h"

// Generation: the leader samples (on_text, res there), the others follow its tokens.
ls_status ls_sp_generate(ls_engine_t *e, ls_comm_t *c, const int32_t *prompt, int64_t n_prompt, const ls_gen_opts *o,
                         ls_text_fn on_text, void *text_ctx, ls_gen_result *res);
// Perplexity with the chunked protocol; every rank ends with the same result.
ls_status ls_sp_perplexity(ls_engine_t *e, ls_comm_t *c, const int32_t *tokens, int64_t n, const ls_ppl_opts *o,
                           ls_ppl_result *res);

#endif // LS_SP_TASKS_H
