// server_impl.h — private to coordinator/: turning a document into the token sequence a job
// runs (prep.c), used by the server loop (server.c).
#ifndef LS_SERVER_IMPL_H
#define LS_SERVER_IMPL_H

#include "ls_chat.h"
#include "ls_server.h"

// What the coordinator needs of the model: metadata, tokenizer and chat template (the file is
// mapped, the weights are never touched).
typedef struct ls_prep {
    ls_gguf_t *gguf;
    ls_model_config cfg;
    ls_tokenizer_t *tok;
    ls_chat_t *chat;        // NULL when the model has no usable template (summarize then fails)
    ls_rope_override rope;  // the server's overrides
} ls_prep;

ls_status ls_prep_init(const char *model, const ls_rope_override *rope, const ls_load_opts *load, ls_prep **out);
void ls_prep_free(ls_prep *p);
// The tokens of a job over this document: summarize wraps it with the request in the chat
// template, generate and perplexity take it as it is. Checks UTF-8 and the length against the
// context the model's RoPE settings (with the server's and the job's overrides) and attention
// rule allow, and against max_job_tokens; the error says what and by how much.
ls_status ls_prep_document(const ls_prep *p, const Longseq__Settings *s, const uint8_t *text, size_t len,
                           int64_t max_job_tokens, ls_vec_i32 *ids);
// The context length a sequence may reach under the RoPE settings (no limit for sink and
// window rules, whose positions never leave the cache's range): *limit, -1 for none.
ls_status ls_prep_context(const ls_prep *p, const Longseq__Settings *s, int64_t *limit, ls_rope_config *rope);

#endif // LS_SERVER_IMPL_H
