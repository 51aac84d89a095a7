// chat.c — ChatML and Llama-2 chat templates. Detection reads the GGUF's Jinja template;
// rendering is done here in C (no Jinja engine), following what those templates produce.
// Tests: tests/unit/test_tokenizer.c, tests/oracle/test_chat.py.
#include "ls_chat.h"

#include <string.h>

struct ls_chat {
    ls_chat_kind kind;
    char *default_system; // "" when the template inserts none
    char *bos, *eos;      // token texts used by the Llama-2 template
};

static const char *find(const char *s, size_t n, const char *needle) {
    return memmem(s, n, needle, strlen(needle));
}

bool ls_chat_detect(const char *tmpl, size_t len, ls_chat_kind *kind) {
    if (find(tmpl, len, "<|im_start|>")) *kind = LS_CHAT_CHATML;
    else if (find(tmpl, len, "[INST]")) *kind = LS_CHAT_LLAMA2;
    else return false;
    return true;
}

// The default system message of a ChatML template: the literal system turn it emits when
// messages[0] is not a system message ("" if it has no such branch). Jinja string escapes
// (\n, \', \", \\) are undone.
static char *default_system(const char *tmpl, size_t len) {
    const char *cond = find(tmpl, len, "!= 'system'");
    if (!cond) cond = find(tmpl, len, "!= \"system\"");
    if (!cond) return ls_strndup("", 0);
    size_t rest = len - (size_t)(cond - tmpl);
    const char *open = find(cond, rest, "<|im_start|>system");
    if (!open) return ls_strndup("", 0);
    open += strlen("<|im_start|>system");
    rest = len - (size_t)(open - tmpl);
    if (rest >= 2 && open[0] == '\\' && open[1] == 'n') open += 2, rest -= 2;
    else if (rest >= 1 && open[0] == '\n') open += 1, rest -= 1;
    const char *close = find(open, rest, "<|im_end|>");
    if (!close) return ls_strndup("", 0);
    ls_buf b = {0};
    for (const char *p = open; p < close; p++) {
        if (*p == '\\' && p + 1 < close) {
            p++;
            ls_buf_putc(&b, *p == 'n' ? '\n' : *p == 't' ? '\t' : *p);
        } else {
            ls_buf_putc(&b, *p);
        }
    }
    if (!b.data) ls_buf_append(&b, "", 0);
    return b.data;
}

static char *token_text(const ls_tokenizer_t *tok, int32_t id, const char *fallback) {
    if (id < 0) return ls_strndup(fallback, strlen(fallback));
    ls_str s = ls_tokenizer_text(tok, id);
    return ls_strndup(s.ptr, s.len);
}

ls_status ls_chat_init(const ls_gguf_t *g, const ls_tokenizer_t *tok, const char *name,
                       ls_chat_t **out) {
    *out = NULL;
    ls_str tmpl = {"", 0};
    bool have = ls_gguf_get_str(g, "tokenizer.chat_template", &tmpl) == LS_OK;
    ls_chat_kind kind;
    if (name && strcmp(name, "auto")) {
        if (!strcmp(name, "chatml")) kind = LS_CHAT_CHATML;
        else if (!strcmp(name, "llama2")) kind = LS_CHAT_LLAMA2;
        else return LS_ERR(LS_ERR_INVALID, "unknown chat template \"%s\" (known: chatml, llama2)", name);
    } else if (!have) {
        return LS_ERR(LS_ERR_INVALID, "the model has no tokenizer.chat_template"); // callers name their option for a template
    } else if (!ls_chat_detect(tmpl.ptr, tmpl.len, &kind)) {
        return LS_ERR(LS_ERR_UNSUPPORTED, "the model's chat template is neither ChatML nor Llama-2");
    }
    ls_chat_t *c = ls_calloc(1, sizeof *c);
    c->kind = kind;
    c->default_system = kind == LS_CHAT_CHATML && have ? default_system(tmpl.ptr, tmpl.len) : ls_strndup("", 0);
    c->bos = token_text(tok, ls_tokenizer_bos(tok), "<s>");
    c->eos = token_text(tok, ls_tokenizer_eos(tok), "</s>");
    *out = c;
    return LS_OK;
}

void ls_chat_free(ls_chat_t *c) {
    if (!c) return;
    ls_free(c->default_system);
    ls_free(c->bos);
    ls_free(c->eos);
    ls_free(c);
}

ls_chat_kind ls_chat_kind_of(const ls_chat_t *c) { return c->kind; }
const char *ls_chat_name(const ls_chat_t *c) { return c->kind == LS_CHAT_CHATML ? "chatml" : "llama2"; }
const char *ls_chat_default_system(const ls_chat_t *c) { return c->default_system; }

static ls_status check_roles(const ls_chat_msg *msgs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
            return LS_ERR(LS_ERR_INVALID, "message %zu has role \"%s\" (system, user or assistant)", i, r);
        if (!strcmp(r, "system") && i > 0)
            return LS_ERR(LS_ERR_INVALID, "message %zu: a system message may only come first", i);
    }
    return LS_OK;
}

static void chatml(const ls_chat_t *c, const ls_chat_msg *msgs, size_t n, bool add_assistant, ls_buf *out) {
    if (c->default_system[0] && (n == 0 || strcmp(msgs[0].role, "system")))
        ls_buf_printf(out, "<|im_start|>system\n%s<|im_end|>\n", c->default_system);
    for (size_t i = 0; i < n; i++)
        ls_buf_printf(out, "<|im_start|>%s\n%s<|im_end|>\n", msgs[i].role, msgs[i].content);
    if (add_assistant) ls_buf_printf(out, "<|im_start|>assistant\n");
}

// Appends s without leading and trailing ASCII whitespace (Python's str.strip()).
static void append_stripped(ls_buf *out, const char *s, size_t n) {
    while (n && strchr(" \t\n\r\v\f", s[0])) s++, n--;
    while (n && strchr(" \t\n\r\v\f", s[n - 1])) n--;
    ls_buf_append(out, s, n);
}

// Llama-2: <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>...
static void llama2(const ls_chat_t *c, const ls_chat_msg *msgs, size_t n, ls_buf *out) {
    const char *sys = n && !strcmp(msgs[0].role, "system") ? msgs[0].content : NULL;
    ls_buf content = {0};
    for (size_t i = sys ? 1 : 0, k = 0; i < n; i++, k++) {
        content.len = 0;
        if (k == 0 && sys) ls_buf_printf(&content, "<<SYS>>\n%s\n<</SYS>>\n\n", sys);
        ls_buf_append(&content, msgs[i].content, strlen(msgs[i].content));
        if (!strcmp(msgs[i].role, "user")) {
            ls_buf_printf(out, "%s[INST] ", c->bos);
            append_stripped(out, content.data, content.len);
            ls_buf_printf(out, " [/INST]");
        } else {
            ls_buf_putc(out, ' ');
            append_stripped(out, content.data, content.len);
            ls_buf_printf(out, " %s", c->eos);
        }
    }
    ls_buf_free(&content);
}

ls_status ls_chat_apply(const ls_chat_t *c, const ls_chat_msg *msgs, size_t n, bool add_assistant,
                        ls_buf *out) {
    LS_CHECK(check_roles(msgs, n));
    if (c->kind == LS_CHAT_CHATML) chatml(c, msgs, n, add_assistant, out);
    else llama2(c, msgs, n, out);
    if (!out->data) ls_buf_append(out, "", 0);
    return LS_OK;
}
