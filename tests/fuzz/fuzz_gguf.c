// fuzz_gguf.c — libFuzzer target for everything that reads an untrusted GGUF: the reader, the
// model configuration and the tokenizer built from its metadata (then a short tokenize and
// detokenize). Any crash, sanitizer report or leak is a bug. Run by tests/fuzz/run-fuzz for a
// bounded time on seeds written by tests/oracle/fixtures.py.
#include "ls_gguf.h"
#include "ls_model.h"
#include "ls_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ls_gguf_t *g;
    if (ls_gguf_open_memory(data, size, &g) != LS_OK) {
        ls_err_clear();
        return 0;
    }
    ls_buf r = {0};
    for (int64_t i = 0; i < ls_gguf_n_kv(g); i++) ls_gguf_kv_render(g, i, 4, &r);
    ls_buf_free(&r);
    ls_model_config cfg;
    if (ls_model_config_load(g, &cfg) == LS_OK) ls_model_config_free(&cfg);
    ls_err_clear();
    ls_tokenizer_t *t;
    if (ls_tokenizer_init(g, &t) == LS_OK) {
        static const char text[] = "Hello <|im_start|> world 123 \xff\xfe\n\tthe end";
        ls_vec_i32 ids = {0};
        ls_buf out = {0};
        if (ls_tokenize(t, text, sizeof text - 1, true, true, &ids) == LS_OK)
            (void)ls_detokenize(t, ids.data, ids.len, true, &out);
        ls_vec_i32_free(&ids);
        ls_buf_free(&out);
        ls_tokenizer_free(t);
    }
    ls_err_clear();
    ls_gguf_free(g);
    return 0;
}
