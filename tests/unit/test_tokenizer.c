// test_tokenizer.c — tokenizer and chat-template behaviour on small vocabularies built here:
// special-token matching with and without parse_special, BOS/EOS flags, byte round trips of
// random (invalid) UTF-8, chunked long inputs, end-of-generation ids, every setup error, and
// the ChatML / Llama-2 renderings. Exactness against real tokenizers is in
// tests/oracle/test_tokenizer.py.
#include "gguf_writer.h"
#include "ls_chat.h"
#include "ls_test.h"
#include "ls_tokenizer.h"

#include <stdlib.h>

#define N_SPECIAL 4
static const char *g_specials[N_SPECIAL] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"};
static const char *g_merges[] = {"Ġ t", "h e", "Ġt he", "Ġ a", "i n", "in g"};

// The byte-level character for byte b, UTF-8 encoded.
static void byte_char(int b, char out[3]) {
    static int map[256];
    if (!map['!']) {
        int next = 0x100;
        for (int i = 0; i < 256; i++) {
            bool keep = (i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE;
            map[i] = keep ? i : next++;
        }
    }
    int cp = map[b];
    if (cp < 0x80) out[0] = (char)cp, out[1] = 0;
    else out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
}

typedef struct vocab_opts {
    const char *model, *pre, *bad_merge, *template;
    int64_t bos;
    int types_len_delta, bad_type;
    bool no_merges, add_eos;
} vocab_opts;

// A byte-level BPE vocabulary: 4 specials (3 control, 1 user-defined), 256 bytes, 5 merges.
static ls_gguf_t *bpe_vocab(gw *w, vocab_opts o) {
    char chars[256][3];
    const char *tokens[N_SPECIAL + 256 + 5];
    int32_t types[N_SPECIAL + 256 + 5];
    int n = 0;
    for (int i = 0; i < N_SPECIAL; i++) types[n] = i == 3 ? 4 : 3, tokens[n++] = g_specials[i];
    for (int b = 0; b < 256; b++) byte_char(b, chars[b]), types[n] = 1, tokens[n++] = chars[b];
    const char *merged[] = {"Ġt", "he", "Ġthe", "Ġa", "in"};
    for (int i = 0; i < 5; i++) types[n] = 1, tokens[n++] = merged[i];
    if (o.bad_type) types[7] = o.bad_type;
    int n_kv = 7 + (o.template != NULL) + (o.add_eos ? 1 : 0) + (o.no_merges ? -1 : 0);
    gw_header(w, 3, 0, (uint64_t)n_kv);
    gw_kv_str(w, "tokenizer.ggml.model", o.model ? o.model : "gpt2");
    gw_kv_str(w, "tokenizer.ggml.pre", o.pre ? o.pre : "smollm");
    gw_kv_strs(w, "tokenizer.ggml.tokens", tokens, (size_t)n);
    gw_kv_i32s(w, "tokenizer.ggml.token_type", types, (size_t)(n + o.types_len_delta));
    if (!o.no_merges) {
        const char *m[7];
        memcpy(m, g_merges, sizeof g_merges);
        m[5] = o.bad_merge ? o.bad_merge : g_merges[5];
        gw_kv_strs(w, "tokenizer.ggml.merges", m, 6);
    }
    gw_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)(o.bos ? o.bos : 1));
    gw_kv_u32(w, "tokenizer.ggml.eos_token_id", 2);
    if (o.add_eos) gw_kv_bool(w, "tokenizer.ggml.add_eos_token", true);
    if (o.template) gw_kv_str(w, "tokenizer.chat_template", o.template);
    ls_gguf_t *g = NULL;
    if (ls_gguf_open_memory(w->b.data, w->b.len, &g) != LS_OK) {
        fprintf(stderr, "fixture did not open: %s\n", ls_err_msg());
        ls_err_clear();
    }
    return g;
}

static ls_tokenizer_t *open_tok(gw *w, vocab_opts o, ls_gguf_t **g) {
    *g = bpe_vocab(w, o);
    ls_tokenizer_t *t = NULL;
    if (*g && ls_tokenizer_init(*g, &t) != LS_OK) {
        fprintf(stderr, "tokenizer did not build: %s\n", ls_err_msg());
        ls_err_clear();
    }
    return t;
}

static bool ids_are(const ls_vec_i32 *v, const int32_t *want, size_t n) {
    return v->len == n && !memcmp(v->data, want, n * sizeof *want);
}

static void test_bpe_basics(void) {
    gw w = {0};
    ls_gguf_t *g;
    ls_tokenizer_t *t = open_tok(&w, (vocab_opts){0}, &g);
    TEST_COND(t != NULL, "tokenizer");
    if (!t) return;
    int32_t the = ls_tokenizer_find(t, "Ġthe", 5), a = ls_tokenizer_find(t, "Ġa", 3);
    int32_t im_start = 1, tool = 3;
    ls_vec_i32 v = {0};
    TEST_COND(ls_tokenize(t, " the a", 6, false, false, &v) == LS_OK && ids_are(&v, (int32_t[]){the, a}, 2),
              "merges apply (%zu ids)", v.len);
    v.len = 0;
    const char *s = "<|im_start|>x<tool>";
    TEST_COND(ls_tokenize(t, s, strlen(s), false, true, &v) == LS_OK && v.len == 3 && v.data[0] == im_start &&
                  v.data[2] == tool, "control and user-defined tokens are matched with parse_special");
    v.len = 0;
    TEST_COND(ls_tokenize(t, s, strlen(s), false, false, &v) == LS_OK && v.len > 3 && v.data[0] != im_start &&
                  v.data[v.len - 1] == tool, "without parse_special only user-defined tokens are matched");
    v.len = 0;
    TEST_COND(ls_tokenize(t, "", 0, true, true, &v) == LS_OK && v.len == 0, "empty text, no BOS by default for gpt2");
    TEST_COND(ls_tokenizer_is_eog(t, 2) && ls_tokenizer_is_eog(t, 0) && !ls_tokenizer_is_eog(t, 1), "EOG set");
    ls_buf out = {0};
    TEST_ERR(ls_detokenize(t, (int32_t[]){5, 99999}, 2, false, &out), LS_ERR_INVALID, "token id 99999 is outside");
    out.len = 0;
    TEST_COND(ls_detokenize(t, (int32_t[]){1, the}, 2, false, &out) == LS_OK && !strcmp(out.data, " the"),
              "control tokens are hidden unless asked: \"%s\"", out.data);
    out.len = 0;
    TEST_COND(ls_detokenize(t, (int32_t[]){1, the}, 2, true, &out) == LS_OK && !strcmp(out.data, "<|im_start|> the"),
              "and shown when asked");
    ls_buf_free(&out);
    ls_vec_i32_free(&v);
    ls_tokenizer_free(t);
    ls_gguf_free(g);
    ls_buf_free(&w.b);
}

// Random bytes (mostly invalid UTF-8) and a long multi-chunk text come back byte for byte.
static void test_round_trip(void) {
    gw w = {0};
    ls_gguf_t *g;
    ls_tokenizer_t *t = open_tok(&w, (vocab_opts){0}, &g);
    if (!t) return;
    unsigned seed = 3;
    size_t n = 300000; // several pre-tokenizer chunks
    char *text = malloc(n);
    for (size_t i = 0; i < n; i++) {
        int r = rand_r(&seed) % 10;
        text[i] = r < 6 ? "ab \n\tthe1'\xe3\x81"[rand_r(&seed) % 13] : (char)rand_r(&seed);
    }
    ls_vec_i32 v = {0};
    ls_buf out = {0};
    TEST_COND(ls_tokenize(t, text, n, false, true, &v) == LS_OK, "tokenize random bytes");
    TEST_COND(ls_detokenize(t, v.data, v.len, true, &out) == LS_OK && out.len == n && !memcmp(out.data, text, n),
              "round trip of %zu random bytes (%zu back)", n, out.len);
    free(text);
    ls_buf_free(&out);
    ls_vec_i32_free(&v);
    ls_tokenizer_free(t);
    ls_gguf_free(g);
    ls_buf_free(&w.b);
}

static void expect_init_error(vocab_opts o, ls_status code, const char *needle) {
    gw w = {0};
    ls_gguf_t *g = bpe_vocab(&w, o);
    ls_tokenizer_t *t = NULL;
    TEST_COND(g != NULL, "fixture opens");
    if (g) TEST_ERR(ls_tokenizer_init(g, &t), code, needle);
    TEST_COND(t == NULL, "no tokenizer on error");
    ls_gguf_free(g);
    ls_buf_free(&w.b);
}

static void test_setup_errors(void) {
    expect_init_error((vocab_opts){.model = "bert"}, LS_ERR_UNSUPPORTED, "tokenizer.ggml.model = \"bert\" is not supported");
    expect_init_error((vocab_opts){.pre = "qwen9"}, LS_ERR_UNSUPPORTED, "\"qwen9\" is not a supported pre-tokenizer (supported: gpt-2");
    expect_init_error((vocab_opts){.no_merges = true}, LS_ERR_FORMAT, "without tokenizer.ggml.merges");
    expect_init_error((vocab_opts){.bad_merge = "nospace"}, LS_ERR_FORMAT, "merges[5] = \"nospace\" is not two strings");
    expect_init_error((vocab_opts){.bad_merge = " x"}, LS_ERR_FORMAT, "is not two strings");
    expect_init_error((vocab_opts){.bos = 100000}, LS_ERR_FORMAT, "bos_token_id = 100000 is outside the vocabulary of 265");
    expect_init_error((vocab_opts){.types_len_delta = -1}, LS_ERR_FORMAT, "token_type must be 265 integers, found 264");
    expect_init_error((vocab_opts){.bad_type = 9}, LS_ERR_FORMAT, "token_type[7] = 9 is not a token type");
}

static void test_flags(void) {
    gw w = {0};
    ls_gguf_t *g;
    ls_tokenizer_t *t = open_tok(&w, (vocab_opts){.add_eos = true, .pre = "llama-bpe"}, &g);
    if (!t) return;
    ls_vec_i32 v = {0};
    TEST_COND(ls_tokenizer_add_bos(t) && ls_tokenizer_add_eos(t), "llama-bpe adds BOS; add_eos from metadata");
    TEST_COND(ls_tokenize(t, "hi", 2, true, false, &v) == LS_OK && v.len == 4 && v.data[0] == 1 &&
                  v.data[3] == ls_tokenizer_eos(t), "BOS and EOS added");
    v.len = 0;
    TEST_COND(ls_tokenize(t, "hi", 2, false, false, &v) == LS_OK && v.len == 2, "none with add_special=false");
    ls_vec_i32_free(&v);
    ls_tokenizer_free(t);
    ls_gguf_free(g);
    ls_buf_free(&w.b);
}

static void test_chat(void) {
    const char *smol = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                       "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
                       "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
    gw w = {0};
    ls_gguf_t *g;
    ls_tokenizer_t *t = open_tok(&w, (vocab_opts){.template = smol}, &g);
    if (!t) return;
    ls_chat_t *c;
    TEST_COND(ls_chat_init(g, t, NULL, &c) == LS_OK && ls_chat_kind_of(c) == LS_CHAT_CHATML, "ChatML detected");
    TEST_COND(!strcmp(ls_chat_default_system(c), "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
              "default system message: \"%s\"", ls_chat_default_system(c));
    ls_buf out = {0};
    ls_chat_msg m[] = {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};
    TEST_COND(ls_chat_apply(c, m, 3, true, &out) == LS_OK &&
                  !strcmp(out.data, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                                    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
                                    "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"),
              "ChatML rendering: %s", out.data);
    out.len = 0;
    ls_chat_msg sys[] = {{"system", "Be brief."}, {"user", "Hi"}};
    TEST_COND(ls_chat_apply(c, sys, 2, false, &out) == LS_OK &&
                  !strcmp(out.data, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"),
              "a given system message replaces the default: %s", out.data);
    ls_chat_free(c);
    TEST_COND(ls_chat_init(g, t, "llama2", &c) == LS_OK, "Llama-2 by name");
    out.len = 0;
    ls_chat_msg l2[] = {{"system", "Sys"}, {"user", " Q1 "}, {"assistant", "A1"}, {"user", "Q2"}};
    TEST_COND(ls_chat_apply(c, l2, 4, true, &out) == LS_OK &&
                  !strcmp(out.data, "<|im_start|>[INST] <<SYS>>\nSys\n<</SYS>>\n\n Q1 [/INST] A1 <|im_end|><|im_start|>[INST] Q2 [/INST]"),
              "Llama-2 rendering (bos/eos are this vocabulary's): %s", out.data);
    ls_chat_msg bad[] = {{"user", "x"}, {"system", "late"}};
    TEST_ERR(ls_chat_apply(c, bad, 2, true, &out), LS_ERR_INVALID, "a system message may only come first");
    ls_chat_msg role[] = {{"robot", "x"}};
    TEST_ERR(ls_chat_apply(c, role, 1, true, &out), LS_ERR_INVALID, "role \"robot\"");
    ls_chat_free(c);
    TEST_ERR(ls_chat_init(g, t, "vicuna", &c), LS_ERR_INVALID, "unknown chat template \"vicuna\"");
    ls_buf_free(&out);
    ls_tokenizer_free(t);
    ls_gguf_free(g);
    ls_buf_free(&w.b);

    gw w2 = {0};
    t = open_tok(&w2, (vocab_opts){0}, &g);
    TEST_ERR(ls_chat_init(g, t, NULL, &c), LS_ERR_INVALID, "has no tokenizer.chat_template");
    for (int k = 0; k < 6; k++) {
        TEST_COND(ls_chat_init(g, t, ls_chat_kind_name((ls_chat_kind)k), &c) == LS_OK && ls_chat_kind_of(c) == (ls_chat_kind)k,
                  "%s by name on a model without a template", ls_chat_kind_name((ls_chat_kind)k));
        ls_chat_free(c);
    }
    ls_tokenizer_free(t);
    ls_gguf_free(g);
    ls_buf_free(&w2.b);
}

// Multi-turn conversations (assistant turns too, which the CLI never writes) in the public
// templates' own details (tests/oracle/data/chat_templates.json); the expected texts are what
// jinja2 renders from those templates with this vocabulary's bos/eos (<|im_start|>, <|im_end|>).
static void chat_case(const char *tmpl, const char *name, ls_chat_kind kind, const ls_chat_msg *m, size_t n,
                      bool gen, const char *want) {
    gw w = {0};
    ls_gguf_t *g;
    ls_tokenizer_t *t = open_tok(&w, (vocab_opts){.template = tmpl}, &g);
    if (!t) return;
    ls_chat_t *c;
    ls_buf out = {0};
    TEST_COND(ls_chat_init(g, t, name, &c) == LS_OK && ls_chat_kind_of(c) == kind, "%s detected", ls_chat_kind_name(kind));
    TEST_COND(c && ls_chat_apply(c, m, n, gen, &out) == LS_OK && !strcmp(out.data, want), "%s rendering: %s", ls_chat_kind_name(kind),
              out.data);
    ls_chat_free(c);
    ls_buf_free(&out);
    ls_tokenizer_free(t);
    ls_gguf_free(g);
    ls_buf_free(&w.b);
}

static void test_chat_kinds(void) {
    const char *mistral01 = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
                            "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
                            "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
                            "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";
    const char *gemma7 = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                         "{% endif %}{% for message in messages %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim }}{% endfor %}";
    const char *gemma3 = "{{ bos_token }}{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}<start_of_turn>";
    const char *phi35 = "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
                        "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
                        "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}";
    const char *phi3 = "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + "
                       "'<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}";
    const char *llama3 = "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}";
    ls_chat_msg conv[] = {{"system", "Sys "}, {"user", " Q1 "}, {"assistant", " A1 "}, {"user", "Q2"}};
    ls_chat_msg empty_sys[] = {{"system", ""}, {"user", " Q1 "}, {"assistant", " A1 "}, {"user", "Q2"}};
    chat_case(llama3, NULL, LS_CHAT_LLAMA3, conv + 1, 3, true,
              "<|im_start|><|start_header_id|>user<|end_header_id|>\n\nQ1<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
              "A1<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nQ2<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    chat_case(mistral01, NULL, LS_CHAT_MISTRAL, conv + 1, 3, true, "<|im_start|>[INST]  Q1  [/INST] A1 <|im_end|> [INST] Q2 [/INST]");
    chat_case(mistral01, "mistral", LS_CHAT_MISTRAL, conv + 1, 3, true, "<|im_start|>[INST]  Q1  [/INST] A1 <|im_end|> [INST] Q2 [/INST]");
    chat_case(NULL, "mistral", LS_CHAT_MISTRAL, conv + 1, 3, true, "<|im_start|>[INST]  Q1  [/INST] A1 <|im_end|>[INST] Q2 [/INST]");
    chat_case(gemma3, NULL, LS_CHAT_GEMMA, conv, 4, true,
              "<|im_start|><start_of_turn>user\nSys \n\nQ1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n"
              "<start_of_turn>user\nQ2<end_of_turn>\n<start_of_turn>model\n");
    chat_case(phi35, NULL, LS_CHAT_PHI3, empty_sys, 4, false,
              "<|user|>\n Q1 <|end|>\n<|assistant|>\n A1 <|end|>\n<|user|>\nQ2<|end|>\n<|im_end|>");
    chat_case(phi3, NULL, LS_CHAT_PHI3, empty_sys, 4, false,
              "<|system|>\n<|end|>\n<|user|>\n Q1 <|end|>\n<|assistant|>\n A1 <|end|>\n<|user|>\nQ2<|end|>\n<|im_end|>");
    // Llama 3.1's dated system header is not Llama 3's: refused, saying so; by name it is Llama 3's
    const char *llama31 = "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: December 2023\\n\" }}"
                          "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}";
    {
        gw w31 = {0};
        ls_gguf_t *g31;
        ls_chat_t *c31;
        ls_tokenizer_t *t31 = open_tok(&w31, (vocab_opts){.template = llama31}, &g31);
        if (!t31) return;
        TEST_ERR(ls_chat_init(g31, t31, NULL, &c31), LS_ERR_UNSUPPORTED, "is Llama 3.1's (a dated system header)");
        TEST_COND(ls_chat_init(g31, t31, "llama3", &c31) == LS_OK && ls_chat_kind_of(c31) == LS_CHAT_LLAMA3, "llama3 by name");
        ls_chat_free(c31);
        ls_tokenizer_free(t31);
        ls_gguf_free(g31);
        ls_buf_free(&w31.b);
    }
    // what the templates refuse (they raise)
    gw w = {0};
    ls_gguf_t *g;
    ls_chat_t *c;
    ls_buf out = {0};
    const char *refusing[] = {mistral01, gemma7};
    const char *why[] = {"user and assistant messages only", "takes no system message"};
    for (int k = 0; k < 2; k++) {
        ls_tokenizer_t *t = open_tok(&w, (vocab_opts){.template = refusing[k]}, &g);
        if (!t) return;
        TEST_COND(ls_chat_init(g, t, NULL, &c) == LS_OK, "template %d detected", k);
        TEST_ERR(ls_chat_apply(c, conv, 4, true, &out), LS_ERR_INVALID, why[k]);
        ls_chat_msg twice[] = {{"user", "a"}, {"user", "b"}};
        TEST_ERR(ls_chat_apply(c, twice, 2, true, &out), LS_ERR_INVALID, "alternate user/assistant");
        ls_chat_free(c);
        ls_tokenizer_free(t);
        ls_gguf_free(g);
        ls_buf_free(&w.b);
        w = (gw){0};
    }
    ls_buf_free(&out);
}

int main(void) {
    test_bpe_basics();
    test_round_trip();
    test_setup_errors();
    test_flags();
    test_chat();
    test_chat_kinds();
    return TEST_REPORT("test_tokenizer");
}
