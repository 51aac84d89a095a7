// ls_effctx.h — the measured effective context of models (docs/effective-context.json, built into
// the binary; LONGSEQ_EFFECTIVE_CONTEXT=FILE reads another table) and the choice of a
// long-document strategy from it (docs/architecture.md ("Long documents")). One definition for
// the coordinator, which runs the strategies, and for the commands that report on them.
// Tests: tests/oracle/test_longdoc.py, tests/oracle/test_strategy.py.
#ifndef LS_EFFCTX_H
#define LS_EFFCTX_H

#include "ls_base.h"
#include "ls_settings.h"

#define LS_MR_OVERHEAD_TOKENS 96 // the chat template and a chunk's or combine's request, with room

typedef struct ls_effctx {
    bool found;           // the table has the model
    int64_t trained;      // its trained context
    int64_t reliable;     // the longest passkey length retrieved reliably as trained
    char ext_method[16];  // the best RoPE extension ("" none worked)
    double ext_factor;    // its factor as measured
    int64_t ext_reliable; // and the longest length it retrieved reliably
    int64_t chunk;        // the map-reduce chunk the coverage runs measured (0: none; then `reliable`)
    char measured[256];   // when and how
} ls_effctx;
// The table's entry for a model (GGUF general.name and trained context); found false when absent.
ls_status ls_effctx_lookup(const char *name, int64_t trained, ls_effctx *out);

// What choosing needs of a model: its trained context and its table entry.
typedef struct ls_strategy_model {
    int64_t n_ctx_train;
    ls_effctx eff;
} ls_strategy_model;

// The strategy for a document of n tokens generating gen. auto: direct when it fits the trained
// context; past it, extend when the table has an extension that retrieved reliably at this
// length, otherwise map-reduce. Other wants are returned as they are.
ls_strategy ls_strategy_choose(const ls_strategy_model *m, ls_strategy want, int64_t n, int64_t gen);
// Map-reduce's chunk in tokens: asked (> 0), else the chunk the table's coverage runs used, else
// its reliable passkey length, else (a model not in the table) the trained context.
int64_t ls_strategy_chunk_tokens(const ls_strategy_model *m, int64_t asked);
// Map-reduce's room for text in a chunk's call: chunk - gen - LS_MR_OVERHEAD_TOKENS tokens
// (*content), refused (naming the settings) when under 64.
ls_status ls_strategy_chunk_room(int64_t chunk, int64_t gen, int64_t *content);
// extend's RoPE for n tokens generating gen: the measured best method (YaRN for a model not
// measured) and the factor, rounded up to a tenth, that stretches the trained context over them
// (*factor <= 1: no stretch needed).
void ls_strategy_extend_rope(const ls_strategy_model *m, int64_t n, int64_t gen, char *method, size_t cap, double *factor);

#endif // LS_EFFCTX_H
