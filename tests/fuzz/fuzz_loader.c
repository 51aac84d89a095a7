// fuzz_loader.c — libFuzzer target for the readers of a Hugging Face checkpoint directory: the
// safetensors header, config.json and tokenizer.json, and the loader that joins them. An input
// is up to three parts separated by the line "--ls--": config.json, tokenizer.json and
// model.safetensors (the rest of the input; a missing part leaves its file absent). Each run
// writes them into a private directory, opens it with ls_model_open, then builds the model
// configuration, its RoPE frequencies and the tokenizer from the result and tokenizes a short
// text, as the engine does. Any crash, sanitizer report or leak is a bug. Run by tests/fuzz/run-fuzz-loader for
// a bounded time on seed checkpoints it writes.
#include "ls_loader.h"
#include "ls_model.h"
#include "ls_tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *g_names[3] = {"config.json", "tokenizer.json", "model.safetensors"};
static char g_dir[4096];

static void path_of(char *out, size_t cap, int i) { snprintf(out, cap, "%s/%s", g_dir, g_names[i]); }

static void cleanup(void) {
    char p[4200];
    for (int i = 0; i < 3; i++) path_of(p, sizeof p, i), unlink(p);
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/ls-fuzz-loader-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) abort();
    atexit(cleanup);
    return 0;
}

static void write_part(int i, const uint8_t *p, size_t n, bool present) {
    char path[4200];
    path_of(path, sizeof path, i);
    unlink(path);
    FILE *f = present ? fopen(path, "wb") : NULL;
    if (!f) return;
    if (n && fwrite(p, 1, n, f) != n) abort();
    fclose(f);
}

// What the engine does with an opened model: configuration, RoPE frequencies (checked to be
// finite and positive), tokenizer, a round trip.
static void use(const ls_gguf_t *g) {
    ls_model_config cfg;
    if (ls_model_config_load(g, &cfg) == LS_OK) {
        float inv_freq[512], attn;
        (void)ls_rope_compute(&cfg.rope, 4096, inv_freq, &attn);
        ls_model_config_free(&cfg);
    }
    ls_err_clear();
    ls_tokenizer_t *t;
    if (ls_tokenizer_init(g, &t) != LS_OK) return;
    static const char text[] = "Hello <|im_start|> world 123 \xff\n\tthe end";
    ls_vec_i32 ids = {0};
    ls_buf out = {0};
    if (ls_tokenize(t, text, sizeof text - 1, true, true, &ids) == LS_OK) (void)ls_detokenize(t, ids.data, ids.len, true, &out);
    ls_vec_i32_free(&ids);
    ls_buf_free(&out);
    ls_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char sep[] = "\n--ls--\n";
    const uint8_t *p = data, *end = data + size;
    for (int i = 0; i < 3; i++) {
        const uint8_t *cut = i < 2 && p ? memmem(p, (size_t)(end - p), sep, sizeof sep - 1) : NULL;
        const uint8_t *stop = cut ? cut : end;
        write_part(i, p, p ? (size_t)(stop - p) : 0, p != NULL);
        p = cut ? cut + sizeof sep - 1 : NULL;
    }
    ls_gguf_t *g;
    if (ls_model_open(g_dir, NULL, &g) == LS_OK) {
        use(g);
        ls_gguf_free(g);
    }
    ls_err_clear();
    return 0;
}
