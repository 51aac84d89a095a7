// dtype.c — the table of ggml tensor types: names, block sizes and bytes per block, as in
// ggml's type traits (checked against gguf-py's GGML_QUANT_SIZES in tests/oracle).
// Tests: tests/unit/test_base.c, tests/oracle/test_dequant.py.
#include "ls_base.h"

static const ls_dtype_info g_types[LS_DTYPE_COUNT] = {
    [LS_F32] = {"F32", 1, 4},           [LS_F16] = {"F16", 1, 2},
    [LS_Q4_0] = {"Q4_0", 32, 18},       [LS_Q4_1] = {"Q4_1", 32, 20},
    [LS_Q5_0] = {"Q5_0", 32, 22},       [LS_Q5_1] = {"Q5_1", 32, 24},
    [LS_Q8_0] = {"Q8_0", 32, 34},       [LS_Q8_1] = {"Q8_1", 32, 36},
    [LS_Q2_K] = {"Q2_K", 256, 84},      [LS_Q3_K] = {"Q3_K", 256, 110},
    [LS_Q4_K] = {"Q4_K", 256, 144},     [LS_Q5_K] = {"Q5_K", 256, 176},
    [LS_Q6_K] = {"Q6_K", 256, 210},     [LS_Q8_K] = {"Q8_K", 256, 292},
    [LS_IQ2_XXS] = {"IQ2_XXS", 256, 66}, [LS_IQ2_XS] = {"IQ2_XS", 256, 74},
    [LS_IQ3_XXS] = {"IQ3_XXS", 256, 98}, [LS_IQ1_S] = {"IQ1_S", 256, 50},
    [LS_IQ4_NL] = {"IQ4_NL", 32, 18},   [LS_IQ3_S] = {"IQ3_S", 256, 110},
    [LS_IQ2_S] = {"IQ2_S", 256, 82},    [LS_IQ4_XS] = {"IQ4_XS", 256, 136},
    [LS_I8] = {"I8", 1, 1},             [LS_I16] = {"I16", 1, 2},
    [LS_I32] = {"I32", 1, 4},           [LS_I64] = {"I64", 1, 8},
    [LS_F64] = {"F64", 1, 8},           [LS_IQ1_M] = {"IQ1_M", 256, 56},
    [LS_BF16] = {"BF16", 1, 2},         [LS_TQ1_0] = {"TQ1_0", 256, 54},
    [LS_TQ2_0] = {"TQ2_0", 256, 66},    [LS_MXFP4] = {"MXFP4", 32, 17},
};

const ls_dtype_info *ls_dtype_get(uint32_t id) {
    if (id >= LS_DTYPE_COUNT || !g_types[id].name) return NULL;
    return &g_types[id];
}

const char *ls_dtype_name(uint32_t id) {
    const ls_dtype_info *t = ls_dtype_get(id);
    return t ? t->name : "unknown";
}

bool ls_dtype_row_bytes(ls_dtype t, uint64_t n, uint64_t *bytes) {
    const ls_dtype_info *ti = ls_dtype_get((uint32_t)t);
    if (!ti || n % ti->block) return false;
    return ls_mul_u64(n / ti->block, ti->block_bytes, bytes);
}
