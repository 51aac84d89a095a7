// effctx.c — the measured effective context of models (docs/effective-context.json, built into
// the binary; LONGSEQ_EFFECTIVE_CONTEXT=FILE reads another table): for a model, the longest
// passkey length it retrieves reliably as trained, and the RoPE extension that measured best
// with the length it reaches; and the choice of a strategy from it (ls_effctx.h), which the
// coordinator makes for settings.strategy auto and extend (docs/architecture.md ("Long
// documents")). Tests: tests/oracle/test_longdoc.py, tests/oracle/test_strategy.py.
#include "ls_effctx.h"

#include <math.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "effctx_data.h" // g_effctx_json[]: the bytes of docs/effective-context.json

static ls_status entry(const json_t *m, const char *src, ls_effctx *out) {
    json_int_t trained = 0, reliable = 0, ext_reliable = 0, chunk = 0;
    const char *method = NULL, *measured = "";
    double factor = 0;
    json_error_t e;
    if (json_unpack_ex((json_t *)m, &e, 0, "{s:I, s:I, s?s, s?I}", "trained", &trained, "reliable", &reliable, "measured",
                       &measured, "chunk", &chunk))
        return LS_ERR(LS_ERR_FORMAT, "%s: a model's entry: %s", src, e.text);
    json_t *ext = json_object_get(m, "extend");
    if (ext && !json_is_null(ext) &&
        json_unpack_ex(ext, &e, 0, "{s:s, s:F, s:I}", "method", &method, "factor", &factor, "reliable", &ext_reliable))
        return LS_ERR(LS_ERR_FORMAT, "%s: a model's \"extend\": %s", src, e.text);
    if (reliable < 256 || reliable > trained || (method && (factor <= 1 || ext_reliable <= reliable)) ||
        (chunk && (chunk < 512 || chunk > reliable)))
        return LS_ERR(LS_ERR_FORMAT, "%s: reliable %lld must be from 256 to the trained %lld, an extension must reach "
                                     "further (factor %g, reliable %lld), and a chunk is from 512 to the reliable length "
                                     "(%lld)", src, (long long)reliable, (long long)trained, factor, (long long)ext_reliable,
                      (long long)chunk);
    *out = (ls_effctx){.found = true, .trained = trained, .reliable = reliable, .ext_factor = factor,
                        .ext_reliable = ext_reliable, .chunk = chunk};
    snprintf(out->ext_method, sizeof out->ext_method, "%s", method ? method : "");
    snprintf(out->measured, sizeof out->measured, "%s", measured);
    return LS_OK;
}

ls_status ls_effctx_lookup(const char *name, int64_t trained, ls_effctx *out) {
    *out = (ls_effctx){0};
    const char *path = getenv("LONGSEQ_EFFECTIVE_CONTEXT");
    json_error_t e;
    json_t *root = path && *path ? json_load_file(path, 0, &e) : json_loadb((const char *)g_effctx_json, sizeof g_effctx_json, 0, &e);
    const char *src = path && *path ? path : "docs/effective-context.json (built in)";
    if (!root) return LS_ERR(LS_ERR_FORMAT, "%s: line %d: %s", src, e.line, e.text);
    json_t *models = json_object_get(root, "models"), *m;
    size_t i;
    ls_status rc = json_is_array(models) ? LS_OK : LS_ERR(LS_ERR_FORMAT, "%s: no \"models\" array", src);
    json_array_foreach(models, i, m) {
        const char *n = json_string_value(json_object_get(m, "name"));
        if (rc != LS_OK || !n || strcmp(n, name) || json_integer_value(json_object_get(m, "trained")) != trained) continue;
        rc = entry(m, src, out);
        break;
    }
    json_decref(root);
    return rc;
}

ls_strategy ls_strategy_choose(const ls_strategy_model *m, ls_strategy want, int64_t n, int64_t gen) {
    if (want != LS_STRAT_AUTO) return want;
    int64_t need = n + gen + LS_MR_OVERHEAD_TOKENS;
    if (need <= m->n_ctx_train) return LS_STRAT_DIRECT;
    if (m->eff.found && m->eff.ext_method[0] && need <= m->eff.ext_reliable) return LS_STRAT_EXTEND;
    return LS_STRAT_MAPREDUCE;
}

int64_t ls_strategy_chunk_tokens(const ls_strategy_model *m, int64_t asked) {
    if (asked > 0) return asked;
    if (!m->eff.found) return m->n_ctx_train;
    return m->eff.chunk ? m->eff.chunk : m->eff.reliable;
}

void ls_strategy_extend_rope(const ls_strategy_model *m, int64_t n, int64_t gen, char *method, size_t cap, double *factor) {
    double need = (double)(n + gen + LS_MR_OVERHEAD_TOKENS);
    *factor = ceil(10 * need / (double)m->n_ctx_train) / 10;
    snprintf(method, cap, "%s", m->eff.found && m->eff.ext_method[0] ? m->eff.ext_method : "yarn");
}

ls_status ls_strategy_chunk_room(int64_t chunk, int64_t gen, int64_t *content) {
    *content = chunk - gen - LS_MR_OVERHEAD_TOKENS;
    if (*content >= 64) return LS_OK;
    return LS_ERR(LS_ERR_INVALID, "chunks of %lld tokens leave %lld for the text after %lld to generate and %d for the "
                                  "request: give a larger settings.chunk_tokens or a smaller settings.max_tokens",
                  (long long)chunk, (long long)*content, (long long)gen, LS_MR_OVERHEAD_TOKENS);
}
