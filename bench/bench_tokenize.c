// bench_tokenize.c — tokenizer throughput: tokenizes a text (default: the KJV text) several
// times with the default model's tokenizer and prints a table (ms, MB/s, tokens/s) with the
// median. A benchmark, not a test: it never fails on a time.
//   bench_tokenize [--model F] [--runs N] [FILE]
#include "ls_gguf.h"
#include "ls_tokenizer.h"

#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *model = ls_default_model_path(), *file = NULL;
    int runs = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else file = argv[i];
    }
    char kjv[4200];
    if (!file) {
        snprintf(kjv, sizeof kjv, "%s/data/kjv.txt", ls_home_dir());
        file = kjv;
    }
    if (runs < 1 || runs > 100) runs = 5;
    ls_gguf_t *g = NULL;
    ls_tokenizer_t *t = NULL;
    ls_buf text = {0};
    if (ls_gguf_open(model, &g) != LS_OK || ls_tokenizer_init(g, &t) != LS_OK ||
        ls_file_read_all(file, (size_t)1 << 30, &text) != LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    printf("tokenizer benchmark: %s (%zu bytes), model %s\n\n", file, text.len, model);
    printf("%4s %10s %10s %12s %10s\n", "run", "ms", "MB/s", "tokens/s", "tokens");
    double ms[100];
    ls_vec_i32 ids = {0};
    for (int r = 0; r < runs; r++) {
        ids.len = 0;
        double t0 = ls_time_ms();
        if (ls_tokenize(t, text.data, text.len, false, true, &ids) != LS_OK) {
            ls_err_report(stderr);
            return 1;
        }
        ms[r] = ls_time_ms() - t0;
        printf("%4d %10.1f %10.2f %12.0f %10zu\n", r + 1, ms[r], text.len / ms[r] / 1e3, ids.len / ms[r] * 1e3, ids.len);
    }
    qsort(ms, (size_t)runs, sizeof *ms, cmp_double);
    double med = ms[runs / 2];
    printf("%4s %10.1f %10.2f %12.0f %10zu\n", "med", med, text.len / med / 1e3, ids.len / med * 1e3, ids.len);
    ls_vec_i32_free(&ids);
    ls_buf_free(&text);
    ls_tokenizer_free(t);
    ls_gguf_free(g);
    return 0;
}
