// ls_chat.h — chat templates: ChatML (SmolLM2, Qwen, ...), Llama-2 [INST] <<SYS>>, Llama-3
// (header ids), Mistral [INST], Gemma (<start_of_turn>) and Phi-3 (<|user|>), chosen from the
// GGUF's tokenizer.chat_template (or a HF tokenizer_config.json's chat_template) or by name. ChatML follows the Jinja template it was detected
// from, including a default system message the template inserts when none is given (SmolLM2:
// "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
// Tests: tests/unit/test_tokenizer.c, tests/oracle/test_chat.py (renders the Jinja templates
// with jinja2 and compares).
#ifndef LS_CHAT_H
#define LS_CHAT_H

#include "ls_tokenizer.h"

typedef enum ls_chat_kind {
    LS_CHAT_CHATML,
    LS_CHAT_LLAMA2,
    LS_CHAT_LLAMA3,
    LS_CHAT_MISTRAL,
    LS_CHAT_GEMMA,
    LS_CHAT_PHI3,
} ls_chat_kind;

// The names --chat-template takes, separated by '|' ("chatml|llama2|...").
#define LS_CHAT_NAMES "chatml|llama2|llama3|mistral|gemma|phi3"

typedef struct ls_chat ls_chat_t;

typedef struct ls_chat_msg {
    const char *role; // "system", "user" or "assistant"
    const char *content;
} ls_chat_msg;

// name: NULL/"auto" (from tokenizer.chat_template) or one of LS_CHAT_NAMES. A model without a
// template, or with one longseq does not know, needs a name: that is an error that says so.
// By name, the details a template varies in (Mistral's space after eos, Gemma 3's system
// prefix, Phi-3.5's empty system turn) are taken from the model's template when it is of that
// kind, else Mixtral's, Gemma 3's and Phi-3.5's (docs/formats.md §4.1).
ls_status ls_chat_init(const ls_gguf_t *g, const ls_tokenizer_t *tok, const char *name,
                       ls_chat_t **out);
void ls_chat_free(ls_chat_t *c);
ls_chat_kind ls_chat_kind_of(const ls_chat_t *c);
const char *ls_chat_name(const ls_chat_t *c);
// The system message inserted when the conversation has none ("" if the template has none).
const char *ls_chat_default_system(const ls_chat_t *c);

// Appends the prompt text for the conversation (special tokens written as text: tokenize it
// with parse_special and without add_special). add_assistant: end with the opening of an
// assistant turn.
ls_status ls_chat_apply(const ls_chat_t *c, const ls_chat_msg *msgs, size_t n, bool add_assistant,
                        ls_buf *out);

// The kind's name ("chatml", ...).
const char *ls_chat_kind_name(ls_chat_kind kind);

// Detects the kind a Jinja template string implements; false when it is none of them.
bool ls_chat_detect(const char *tmpl, size_t len, ls_chat_kind *kind);

#endif // LS_CHAT_H
