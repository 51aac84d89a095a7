// dequant_dump.c — test helper: dequantizes every tensor of a GGUF file, row by row, with the
// CPU kernel (default) or the reference twin (--ref), and writes each as raw little-endian
// f32 to OUTDIR/<tensor name>.f32. Used by tests/oracle/test_dequant.py.
#include "ls_gguf.h"
#include "ls_kernels.h"
#include "ls_ref.h"

#include <string.h>

static ls_status dump(const ls_gguf_t *g, const char *dir, bool ref) {
    for (int64_t i = 0; i < ls_gguf_n_tensors(g); i++) {
        const ls_gguf_tensor *t = ls_gguf_tensor_at(g, i);
        int64_t rows = t->ne[1] * t->ne[2] * t->ne[3], n = t->ne[0];
        uint64_t row_bytes = t->nbytes / (uint64_t)rows;
        float *out = ls_malloc((size_t)(rows * n) * sizeof *out); // [rows][n]
        for (int64_t r = 0; r < rows; r++) {
            const uint8_t *src = (const uint8_t *)t->data + (uint64_t)r * row_bytes;
            LS_CHECK(ref ? ls_ref_dequant_row(t->type, src, out + r * n, n)
                         : ls_dequant_row(t->type, src, out + r * n, n));
        }
        char path[1024];
        snprintf(path, sizeof path, "%s/%s.f32", dir, t->name);
        FILE *f = fopen(path, "wb");
        if (!f) return LS_ERR(LS_ERR_IO, "cannot write %s", path);
        fwrite(out, sizeof *out, (size_t)(rows * n), f);
        fclose(f);
        ls_free(out);
    }
    return LS_OK;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: dequant_dump FILE.gguf OUTDIR [--ref]\n");
        return 2;
    }
    ls_gguf_t *g;
    if (ls_gguf_open(argv[1], &g) != LS_OK || dump(g, argv[2], argc > 3 && !strcmp(argv[3], "--ref")) != LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    ls_gguf_free(g);
    return 0;
}
