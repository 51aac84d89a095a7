// chat.c — chat templates: ChatML, Llama-2, Llama-3, Mistral, Gemma and Phi-3. Detection reads
// the model's Jinja template (GGUF tokenizer.chat_template, or tokenizer_config.json's for a HF
// directory); rendering is done here in C (no Jinja engine), following what those templates
// produce, including the details their versions differ in (read from the template text).
// Tests: tests/unit/test_tokenizer.c, tests/oracle/test_chat.py (jinja2 on the public templates).
#include "ls_chat.h"

#include <string.h>

struct ls_chat {
    ls_chat_kind kind;
    char *default_system; // "" when the template inserts none
    char *bos, *eos;      // token texts the templates write as bos_token / eos_token
    bool eos_space;       // Mistral v0.1: a space after each assistant turn's eos
    bool system_prefix;   // Gemma 3: a system message prefixes the first user turn (else refused)
    bool skip_empty_sys;  // Phi-3.5: an empty system message writes no turn
};

static const char *find(const char *s, size_t n, const char *needle) {
    return memmem(s, n, needle, strlen(needle));
}

static const char *const g_names[] = {"chatml", "llama2", "llama3", "mistral", "gemma", "phi3"};

const char *ls_chat_kind_name(ls_chat_kind kind) { return g_names[kind]; }

// Each kind by the markers only its templates write. Llama-2 and Mistral both write [INST]:
// Llama-2's has a <<SYS>> block, Mistral v0.1's writes ' [/INST]' after the user's text (later
// Mistral templates, which put the system message into the last user turn, are not detected).
// Llama 3.1's and later templates always open with a dated system header ("Cutting Knowledge
// Date: ..."), which longseq does not write: they are not taken for Llama 3's.
static bool llama31(const char *tmpl, size_t len) { return find(tmpl, len, "Cutting Knowledge Date") != NULL; }

bool ls_chat_detect(const char *tmpl, size_t len, ls_chat_kind *kind) {
    if (find(tmpl, len, "<|im_start|>")) *kind = LS_CHAT_CHATML;
    else if (find(tmpl, len, "<|start_header_id|>") && find(tmpl, len, "<|eot_id|>")) {
        if (llama31(tmpl, len)) return false;
        *kind = LS_CHAT_LLAMA3;
    }
    else if (find(tmpl, len, "<start_of_turn>")) *kind = LS_CHAT_GEMMA;
    else if (find(tmpl, len, "<|user|>") && find(tmpl, len, "<|end|>")) *kind = LS_CHAT_PHI3;
    else if (find(tmpl, len, "[INST]") && find(tmpl, len, "<<SYS>>")) *kind = LS_CHAT_LLAMA2;
    else if (find(tmpl, len, "' [/INST]'")) *kind = LS_CHAT_MISTRAL;
    else return false;
    return true;
}

// The details a kind's versions differ in. Without the model's template of that kind (a name
// given for a model whose template is another kind, or none): Mixtral's and Mistral v0.2's
// eos without a space, Gemma 3's system prefix, Phi-3.5's skipped empty system message.
static void details(ls_chat_t *c, const char *tmpl, size_t len, bool same_kind) {
    if (!same_kind) {
        c->system_prefix = c->skip_empty_sys = true;
        return;
    }
    c->eos_space = find(tmpl, len, "eos_token + ' '") != NULL;
    c->system_prefix = find(tmpl, len, "first_user_prefix") != NULL;
    c->skip_empty_sys = find(tmpl, len, "'system' and message['content']") != NULL;
}

// The default system message of a ChatML template: the first system turn it writes as a
// literal ("<|im_start|>system\n...<|im_end|>" with no expression inside), after its
// "!= 'system'" test when it has one (SmolLM2's), else anywhere (Qwen2.5's else-branch); "" when
// there is none. Jinja string escapes (\n, \', \", \\) are undone.
static char *default_system(const char *tmpl, size_t len) {
    const char *from = find(tmpl, len, "!= 'system'");
    if (!from) from = find(tmpl, len, "!= \"system\"");
    if (!from) from = tmpl;
    static const char open_tag[] = "<|im_start|>system";
    for (const char *open = find(from, len - (size_t)(from - tmpl), open_tag); open;
         open = find(open + 1, len - (size_t)(open + 1 - tmpl), open_tag)) {
        const char *p = open + strlen(open_tag);
        size_t rest = len - (size_t)(p - tmpl);
        if (rest >= 2 && p[0] == '\\' && p[1] == 'n') p += 2, rest -= 2;
        else if (rest >= 1 && p[0] == '\n') p += 1, rest -= 1;
        const char *close = find(p, rest, "<|im_end|>");
        if (!close) break;
        bool literal = true;
        for (const char *q = p; q < close && literal; q++)
            if ((*q == '\'' || *q == '"' || *q == '{' || *q == '}') && !(q > p && q[-1] == '\\')) literal = false;
        if (!literal) continue;
        ls_buf b = {0};
        for (const char *q = p; q < close; q++) {
            if (*q == '\\' && q + 1 < close) {
                q++;
                ls_buf_putc(&b, *q == 'n' ? '\n' : *q == 't' ? '\t' : *q);
            } else {
                ls_buf_putc(&b, *q);
            }
        }
        if (!b.data) ls_buf_append(&b, "", 0);
        return b.data;
    }
    return ls_strndup("", 0);
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
    ls_chat_kind kind, detected;
    bool known = have && ls_chat_detect(tmpl.ptr, tmpl.len, &detected);
    if (name && strcmp(name, "auto")) {
        size_t k = 0;
        while (k < sizeof g_names / sizeof *g_names && strcmp(name, g_names[k])) k++;
        if (k == sizeof g_names / sizeof *g_names)
            return LS_ERR(LS_ERR_INVALID, "unknown chat template \"%s\" (known: %s)", name, LS_CHAT_NAMES);
        kind = (ls_chat_kind)k;
    } else if (!have) {
        return LS_ERR(LS_ERR_INVALID, "the model has no tokenizer.chat_template"); // callers name their option for a template
    } else if (!known && llama31(tmpl.ptr, tmpl.len)) {
        return LS_ERR(LS_ERR_UNSUPPORTED, "the model's chat template is Llama 3.1's (a dated system header), which longseq "
                                          "does not render; --chat-template llama3 writes Llama 3's turns without it");
    } else if (!known) {
        return LS_ERR(LS_ERR_UNSUPPORTED, "the model's chat template is none of those longseq renders (%s)", LS_CHAT_NAMES);
    } else {
        kind = detected;
    }
    bool same = known && detected == kind;
    ls_chat_t *c = ls_calloc(1, sizeof *c);
    c->kind = kind;
    details(c, tmpl.ptr, tmpl.len, same);
    c->default_system = kind == LS_CHAT_CHATML && same ? default_system(tmpl.ptr, tmpl.len) : ls_strndup("", 0);
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
const char *ls_chat_name(const ls_chat_t *c) { return g_names[c->kind]; }
const char *ls_chat_default_system(const ls_chat_t *c) { return c->default_system; }

static ls_status check_roles(const ls_chat_t *c, const ls_chat_msg *msgs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
            return LS_ERR(LS_ERR_INVALID, "message %zu has role \"%s\" (system, user or assistant)", i, r);
        if (!strcmp(r, "system") && i > 0)
            return LS_ERR(LS_ERR_INVALID, "message %zu: a system message may only come first", i);
    }
    bool sys = n && !strcmp(msgs[0].role, "system");
    if (sys && c->kind == LS_CHAT_MISTRAL)
        return LS_ERR(LS_ERR_INVALID, "the Mistral chat template takes user and assistant messages only, not a system message");
    if (sys && c->kind == LS_CHAT_GEMMA && !c->system_prefix)
        return LS_ERR(LS_ERR_INVALID, "this Gemma chat template takes no system message (Gemma 3's puts it before the first user turn)");
    // Llama-2, Mistral and Gemma templates raise unless turns alternate, starting with the user.
    if (c->kind == LS_CHAT_LLAMA2 || c->kind == LS_CHAT_MISTRAL || c->kind == LS_CHAT_GEMMA) {
        for (size_t i = sys ? 1 : 0, k = 0; i < n; i++, k++)
            if (!strcmp(msgs[i].role, "user") != (k % 2 == 0))
                return LS_ERR(LS_ERR_INVALID, "message %zu is from the %s: the %s chat template needs turns that alternate "
                              "user/assistant, starting with the user", i, msgs[i].role, g_names[c->kind]);
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

// Llama-3: {bos}<|start_header_id|>{role}<|end_header_id|>\n\n{content stripped}<|eot_id|>...
static void llama3(const ls_chat_t *c, const ls_chat_msg *msgs, size_t n, bool add_assistant, ls_buf *out) {
    for (size_t i = 0; i < n; i++) {
        ls_buf_printf(out, "%s<|start_header_id|>%s<|end_header_id|>\n\n", i == 0 ? c->bos : "", msgs[i].role);
        append_stripped(out, msgs[i].content, strlen(msgs[i].content));
        ls_buf_printf(out, "<|eot_id|>");
    }
    if (add_assistant) ls_buf_printf(out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

// Mistral v0.1/Mixtral: {bos}[INST] {user} [/INST]{assistant}{eos}[ ]... (no generation prompt:
// the model answers right after [/INST]).
static void mistral(const ls_chat_t *c, const ls_chat_msg *msgs, size_t n, ls_buf *out) {
    ls_buf_printf(out, "%s", c->bos);
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(msgs[i].role, "user")) ls_buf_printf(out, "[INST] %s [/INST]", msgs[i].content);
        else ls_buf_printf(out, "%s%s%s", msgs[i].content, c->eos, c->eos_space ? " " : "");
    }
}

// Gemma: {bos}<start_of_turn>{user|model}\n[{system}\n\n]{content stripped}<end_of_turn>\n...
static void gemma(const ls_chat_t *c, const ls_chat_msg *msgs, size_t n, bool add_assistant, ls_buf *out) {
    const char *sys = n && !strcmp(msgs[0].role, "system") ? msgs[0].content : NULL;
    ls_buf_printf(out, "%s", c->bos);
    for (size_t i = sys ? 1 : 0; i < n; i++) {
        bool first = i == (sys ? 1u : 0u);
        ls_buf_printf(out, "<start_of_turn>%s\n", !strcmp(msgs[i].role, "assistant") ? "model" : "user");
        if (first && sys) ls_buf_printf(out, "%s\n\n", sys);
        append_stripped(out, msgs[i].content, strlen(msgs[i].content));
        ls_buf_printf(out, "<end_of_turn>\n");
    }
    if (add_assistant) ls_buf_printf(out, "<start_of_turn>model\n");
}

// Phi-3: <|{role}|>\n{content}<|end|>\n... then <|assistant|>\n, or eos without a generation prompt.
static void phi3(const ls_chat_t *c, const ls_chat_msg *msgs, size_t n, bool add_assistant, ls_buf *out) {
    for (size_t i = 0; i < n; i++) {
        if (c->skip_empty_sys && !strcmp(msgs[i].role, "system") && !msgs[i].content[0]) continue;
        ls_buf_printf(out, "<|%s|>\n%s<|end|>\n", msgs[i].role, msgs[i].content);
    }
    ls_buf_printf(out, "%s", add_assistant ? "<|assistant|>\n" : c->eos);
}

ls_status ls_chat_apply(const ls_chat_t *c, const ls_chat_msg *msgs, size_t n, bool add_assistant,
                        ls_buf *out) {
    LS_CHECK(check_roles(c, msgs, n));
    switch (c->kind) {
    case LS_CHAT_CHATML: chatml(c, msgs, n, add_assistant, out); break;
    case LS_CHAT_LLAMA2: llama2(c, msgs, n, out); break;
    case LS_CHAT_LLAMA3: llama3(c, msgs, n, add_assistant, out); break;
    case LS_CHAT_MISTRAL: mistral(c, msgs, n, out); break;
    case LS_CHAT_GEMMA: gemma(c, msgs, n, add_assistant, out); break;
    case LS_CHAT_PHI3: phi3(c, msgs, n, add_assistant, out); break;
    }
    if (!out->data) ls_buf_append(out, "", 0);
    return LS_OK;
}
