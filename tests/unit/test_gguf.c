// test_gguf.c — the GGUF reader on a valid file with every value type, and on hostile files:
// each malformed variant must give the expected error (status and a message naming the
// problem), every truncation of a valid file must fail cleanly, and thousands of random
// corruptions must never crash or read out of bounds (the suite runs this under ASan+UBSan).
#include "gguf_writer.h"
#include "ls_gguf.h"
#include "ls_test.h"

#include <stdlib.h>

// A valid v3 file: every metadata type and two tensors (F32 [4,2] and Q4_0 [64]).
static void valid_file(gw *w) {
    const char *strs[] = {"alpha", "", "gamma"};
    const int32_t ints[] = {-1, 0, 7};
    gw_header(w, 3, 2, 17);
    gw_kv_str(w, "general.architecture", "llama");
    gw_str(w, "t.u8"), gw_u32(w, 0), gw_u8(w, 200);
    gw_str(w, "t.i8"), gw_u32(w, 1), gw_u8(w, 0xF6); // -10
    gw_str(w, "t.u16"), gw_u32(w, 2), gw_raw(w, &(uint16_t){60000}, 2);
    gw_str(w, "t.i16"), gw_u32(w, 3), gw_raw(w, &(int16_t){-3000}, 2);
    gw_kv_u32(w, "t.u32", 4000000000u);
    gw_kv_i32(w, "t.i32", -5);
    gw_kv_f32(w, "t.f32", 0.5f);
    gw_kv_bool(w, "t.bool", true);
    gw_kv_u64(w, "t.u64", 1ull << 40);
    gw_str(w, "t.i64"), gw_u32(w, 11), gw_u64(w, (uint64_t)-123456789012ll);
    gw_str(w, "t.f64"), gw_u32(w, 12), gw_raw(w, &(double){-2.25}, 8);
    gw_kv_strs(w, "t.strs", strs, 3);
    gw_kv_i32s(w, "t.ints", ints, 3);
    gw_kv_u32(w, "general.alignment", 64);
    gw_kv_u64(w, "t.big", UINT64_MAX);
    gw_str(w, "t.empty"), gw_u32(w, 9), gw_u32(w, 4), gw_u64(w, 0);
    gw_tensor(w, "a", 2, (uint64_t[]){4, 2}, LS_F32, 0);
    gw_tensor(w, "b", 1, (uint64_t[]){64}, LS_Q4_0, 64);
    gw_pad(w, 64);
    for (int i = 0; i < 8; i++) gw_raw(w, &(float){(float)i}, 4);
    gw_zeros(w, 32);   // padding to 64
    gw_zeros(w, 36);   // two Q4_0 blocks
}

static void test_valid(void) {
    gw w = {0};
    valid_file(&w);
    ls_gguf_t *g;
    TEST_COND(ls_gguf_open_memory(w.b.data, w.b.len, &g) == LS_OK, "valid file: %s", ls_err_msg());
    if (!g) return;
    int64_t v;
    double f;
    bool b;
    ls_str s;
    ls_gguf_arr a;
    TEST_COND(ls_gguf_version(g) == 3 && ls_gguf_alignment(g) == 64 && ls_gguf_n_kv(g) == 17, "header");
    TEST_COND(ls_gguf_get_int(g, "t.u8", &v) == LS_OK && v == 200, "u8");
    TEST_COND(ls_gguf_get_int(g, "t.i8", &v) == LS_OK && v == -10, "i8");
    TEST_COND(ls_gguf_get_int(g, "t.u16", &v) == LS_OK && v == 60000, "u16");
    TEST_COND(ls_gguf_get_int(g, "t.i16", &v) == LS_OK && v == -3000, "i16");
    TEST_COND(ls_gguf_get_int(g, "t.u32", &v) == LS_OK && v == 4000000000ll, "u32");
    TEST_COND(ls_gguf_get_int(g, "t.i32", &v) == LS_OK && v == -5, "i32");
    TEST_COND(ls_gguf_get_int(g, "t.u64", &v) == LS_OK && v == 1ll << 40, "u64");
    TEST_COND(ls_gguf_get_int(g, "t.i64", &v) == LS_OK && v == -123456789012ll, "i64");
    TEST_COND(ls_gguf_get_float(g, "t.f32", &f) == LS_OK && f == 0.5, "f32");
    TEST_COND(ls_gguf_get_float(g, "t.f64", &f) == LS_OK && f == -2.25, "f64");
    TEST_COND(ls_gguf_get_bool(g, "t.bool", &b) == LS_OK && b, "bool");
    TEST_COND(ls_gguf_get_str(g, "general.architecture", &s) == LS_OK && s.len == 5 && !memcmp(s.ptr, "llama", 5), "string");
    TEST_COND(ls_gguf_get_arr(g, "t.strs", &a) == LS_OK && a.count == 3 && a.type == LS_GGUF_STRING, "string array");
    ls_str s2 = ls_gguf_arr_str(&a, 2), s1 = ls_gguf_arr_str(&a, 1);
    TEST_COND(s2.len == 5 && !memcmp(s2.ptr, "gamma", 5) && s1.len == 0, "string array elements");
    TEST_COND(ls_gguf_get_arr(g, "t.ints", &a) == LS_OK && ls_gguf_arr_int(&a, 0) == -1 && ls_gguf_arr_int(&a, 2) == 7, "int array");
    TEST_COND(ls_gguf_get_arr(g, "t.empty", &a) == LS_OK && a.count == 0, "empty array");
    TEST_COND(ls_gguf_get_int(g, "missing", &v) == LS_ERR_NOT_FOUND && ls_err_code() == LS_OK, "absent key records no error");
    TEST_ERR(ls_gguf_get_int(g, "general.architecture", &v), LS_ERR_FORMAT, "has type string, expected an integer");
    TEST_ERR(ls_gguf_get_int(g, "t.big", &v), LS_ERR_FORMAT, "too large");
    TEST_ERR(ls_gguf_get_str(g, "t.u8", &s), LS_ERR_FORMAT, "expected string");
    const ls_gguf_tensor *ta = ls_gguf_find_tensor(g, "a"), *tb = ls_gguf_find_tensor(g, "b");
    TEST_COND(ta && ta->ne[0] == 4 && ta->ne[1] == 2 && ta->nbytes == 32 && ((const float *)ta->data)[7] == 7.0f, "tensor a");
    TEST_COND(tb && tb->type == LS_Q4_0 && tb->nbytes == 36 && tb->offset == 64, "tensor b");
    TEST_COND(!ls_gguf_find_tensor(g, "c"), "absent tensor");
    ls_buf r = {0};
    ls_gguf_kv_render(g, ls_gguf_find_kv(g, "t.strs"), 2, &r);
    TEST_COND(!strcmp(r.data, "[string x 3] \"alpha\", \"\", ..."), "render: %s", r.data);
    ls_buf_free(&r);
    ls_gguf_free(g);
    ls_buf_free(&w.b);
}

// --- hostile files ------------------------------------------------------------------------

typedef void (*build_fn)(gw *w);

static void expect_error(build_fn build, ls_status code, const char *needle, const char *what) {
    gw w = {0};
    build(&w);
    ls_gguf_t *g = NULL;
    ls_status rc = ls_gguf_open_memory(w.b.data, w.b.len, &g);
    TEST_COND(rc == code && g == NULL && strstr(ls_err_msg(), needle),
              "%s: status %d, message \"%s\"; wanted %d with \"%s\"", what, rc, ls_err_msg(), code, needle);
    ls_err_clear();
    ls_gguf_free(g);
    ls_buf_free(&w.b);
}

// One KV and one tensor; the pieces each case breaks.
static void one_tensor(gw *w, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                       uint64_t offset, size_t data) {
    gw_header(w, 3, 1, 1);
    gw_kv_str(w, "general.architecture", "llama");
    gw_tensor(w, name, n_dims, ne, type, offset);
    gw_pad(w, 32);
    gw_zeros(w, data);
}

static void b_magic(gw *w) { gw_raw(w, "GGML", 4), gw_u32(w, 3), gw_u64(w, 0), gw_u64(w, 0); }
static void b_v1(gw *w) { gw_header(w, 1, 0, 0); }
static void b_bigendian(gw *w) { gw_header(w, 0x03000000u, 0, 0); }
static void b_v7(gw *w) { gw_header(w, 7, 0, 0); }
static void b_many_kv(gw *w) { gw_header(w, 3, 0, 1ull << 60); }
static void b_many_tensors(gw *w) { gw_header(w, 3, 1ull << 59, 0); }
static void b_empty(gw *w) { (void)w; }
static void b_short_header(gw *w) { gw_raw(w, "GGUF", 4), gw_u32(w, 3), gw_u32(w, 0); }
static void b_huge_string(gw *w) { gw_header(w, 3, 0, 1), gw_u64(w, 1ull << 62), gw_raw(w, "key", 3); }
static void b_empty_key(gw *w) { gw_header(w, 3, 0, 1), gw_kv_u32(w, "", 1); }
static void b_nul_key(gw *w) { gw_header(w, 3, 0, 1), gw_u64(w, 3), gw_raw(w, "a\0b", 3), gw_u32(w, 4), gw_u32(w, 1); }
static void b_dup_key(gw *w) { gw_header(w, 3, 0, 2), gw_kv_u32(w, "k", 1), gw_kv_u32(w, "k", 2); }
static void b_bad_vtype(gw *w) { gw_header(w, 3, 0, 1), gw_str(w, "k"), gw_u32(w, 13), gw_u32(w, 0); }
static void b_nested(gw *w) { gw_header(w, 3, 0, 1), gw_str(w, "k"), gw_u32(w, 9), gw_u32(w, 9), gw_u64(w, 1); }
static void b_bad_elem(gw *w) { gw_header(w, 3, 0, 1), gw_str(w, "k"), gw_u32(w, 9), gw_u32(w, 77), gw_u64(w, 1); }
static void b_huge_arr(gw *w) { gw_header(w, 3, 0, 1), gw_str(w, "k"), gw_u32(w, 9), gw_u32(w, 4), gw_u64(w, 1ull << 62), gw_u32(w, 0); }
static void b_huge_strarr(gw *w) { gw_header(w, 3, 0, 1), gw_str(w, "k"), gw_u32(w, 9), gw_u32(w, 8), gw_u64(w, 1ull << 40), gw_u64(w, 0); }
static void b_trunc_value(gw *w) { gw_header(w, 3, 0, 1), gw_str(w, "k"), gw_u32(w, 10), gw_u32(w, 0); }
static void b_align3(gw *w) { gw_header(w, 3, 0, 1), gw_kv_u32(w, "general.alignment", 3); }
static void b_align0(gw *w) { gw_header(w, 3, 0, 1), gw_kv_u32(w, "general.alignment", 0); }
static void b_align_type(gw *w) { gw_header(w, 3, 0, 1), gw_kv_u64(w, "general.alignment", 32); }
static void b_long_name(gw *w) {
    char name[80];
    memset(name, 'n', 64);
    name[64] = 0;
    one_tensor(w, name, 1, (uint64_t[]){8}, LS_F32, 0, 32);
}
static void b_dup_tensor(gw *w) {
    gw_header(w, 3, 2, 0);
    gw_tensor(w, "t", 1, (uint64_t[]){8}, LS_F32, 0);
    gw_tensor(w, "t", 1, (uint64_t[]){8}, LS_F32, 32);
    gw_pad(w, 32), gw_zeros(w, 64);
}
static void b_dims5(gw *w) { one_tensor(w, "t", 5, (uint64_t[]){1, 1, 1, 1, 1}, LS_F32, 0, 32); }
static void b_dims0(gw *w) { one_tensor(w, "t", 0, NULL, LS_F32, 0, 32); }
static void b_ne0(gw *w) { one_tensor(w, "t", 2, (uint64_t[]){8, 0}, LS_F32, 0, 32); }
static void b_ne_huge(gw *w) { one_tensor(w, "t", 1, (uint64_t[]){1ull << 63}, LS_F32, 0, 32); }
static void b_ne_product(gw *w) { one_tensor(w, "t", 3, (uint64_t[]){1ull << 31, 1ull << 31, 1ull << 31}, LS_F32, 0, 32); }
static void b_bytes_overflow(gw *w) { one_tensor(w, "t", 2, (uint64_t[]){1ull << 31, 1ull << 31}, LS_F64, 0, 32); }
static void b_type4(gw *w) { one_tensor(w, "t", 1, (uint64_t[]){32}, 4, 0, 32); }
static void b_type99(gw *w) { one_tensor(w, "t", 1, (uint64_t[]){32}, 99, 0, 32); }
static void b_partial_block(gw *w) { one_tensor(w, "t", 1, (uint64_t[]){33}, LS_Q4_0, 0, 64); }
static void b_unaligned(gw *w) { one_tensor(w, "t", 1, (uint64_t[]){8}, LS_F32, 4, 64); }
static void b_past_end(gw *w) { one_tensor(w, "t", 1, (uint64_t[]){64}, LS_F32, 0, 100); }
static void b_offset_overflow(gw *w) { one_tensor(w, "t", 1, (uint64_t[]){8}, LS_F32, UINT64_MAX - 31, 32); }
static void b_no_data(gw *w) {
    gw_header(w, 3, 1, 0);
    gw_tensor(w, "t", 1, (uint64_t[]){8}, LS_F32, 0);
}
static void b_overlap(gw *w) {
    gw_header(w, 3, 2, 0);
    gw_tensor(w, "x", 1, (uint64_t[]){16}, LS_F32, 0);
    gw_tensor(w, "y", 1, (uint64_t[]){8}, LS_F32, 32);
    gw_pad(w, 32), gw_zeros(w, 96);
}

static void test_hostile(void) {
    static const struct { build_fn f; ls_status code; const char *needle, *what; } cases[] = {
        {b_magic, LS_ERR_FORMAT, "not a GGUF file", "bad magic"},
        {b_v1, LS_ERR_UNSUPPORTED, "version 1 is not supported", "version 1"},
        {b_bigendian, LS_ERR_UNSUPPORTED, "big-endian", "big-endian file"},
        {b_v7, LS_ERR_UNSUPPORTED, "unknown GGUF version 7", "future version"},
        {b_many_kv, LS_ERR_FORMAT, "key/value pairs, impossible", "huge kv count"},
        {b_many_tensors, LS_ERR_FORMAT, "tensors, impossible", "huge tensor count"},
        {b_empty, LS_ERR_FORMAT, "truncated", "empty file"},
        {b_short_header, LS_ERR_FORMAT, "truncated", "short header"},
        {b_huge_string, LS_ERR_FORMAT, "claims", "huge string length"},
        {b_empty_key, LS_ERR_FORMAT, "is empty", "empty key"},
        {b_nul_key, LS_ERR_FORMAT, "NUL byte", "key with NUL"},
        {b_dup_key, LS_ERR_FORMAT, "duplicate metadata key 'k'", "duplicate key"},
        {b_bad_vtype, LS_ERR_FORMAT, "value type 13", "bad value type"},
        {b_nested, LS_ERR_FORMAT, "nested arrays", "nested array"},
        {b_bad_elem, LS_ERR_FORMAT, "element type 77", "bad array element type"},
        {b_huge_arr, LS_ERR_FORMAT, "does not fit", "huge array"},
        {b_huge_strarr, LS_ERR_FORMAT, "cannot fit", "huge string array"},
        {b_trunc_value, LS_ERR_FORMAT, "truncated", "truncated value"},
        {b_align3, LS_ERR_FORMAT, "not a power of two", "alignment 3"},
        {b_align0, LS_ERR_FORMAT, "not a power of two", "alignment 0"},
        {b_align_type, LS_ERR_FORMAT, "general.alignment must be u32", "alignment type"},
        {b_long_name, LS_ERR_FORMAT, "64-byte name", "long tensor name"},
        {b_dup_tensor, LS_ERR_FORMAT, "duplicate tensor name 't'", "duplicate tensor"},
        {b_dims5, LS_ERR_FORMAT, "has 5 dimensions", "5 dimensions"},
        {b_dims0, LS_ERR_FORMAT, "has 0 dimensions", "0 dimensions"},
        {b_ne0, LS_ERR_FORMAT, "size 0 in dimension 1", "zero dimension"},
        {b_ne_huge, LS_ERR_FORMAT, "absurd shape", "huge dimension"},
        {b_ne_product, LS_ERR_FORMAT, "absurd shape", "element count overflow"},
        {b_bytes_overflow, LS_ERR_FORMAT, "byte size overflows", "byte count overflow"},
        {b_type4, LS_ERR_FORMAT, "unknown ggml type 4", "removed type"},
        {b_type99, LS_ERR_FORMAT, "unknown ggml type 99", "unknown type"},
        {b_partial_block, LS_ERR_FORMAT, "not a multiple of Q4_0's block", "partial block"},
        {b_unaligned, LS_ERR_FORMAT, "not a multiple of the alignment", "unaligned offset"},
        {b_past_end, LS_ERR_FORMAT, "extends past the end", "data past end"},
        {b_offset_overflow, LS_ERR_FORMAT, "extends past the end", "offset overflow"},
        {b_no_data, LS_ERR_FORMAT, "past the end", "missing data section"},
        {b_overlap, LS_ERR_FORMAT, "'x' and 'y' overlap", "overlapping tensors"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_error(cases[i].f, cases[i].code, cases[i].needle, cases[i].what);
}

// Every proper prefix of a valid file is rejected with a message; none crashes.
static void test_truncation(void) {
    gw w = {0};
    valid_file(&w);
    int ok = 0;
    for (size_t n = 0; n < w.b.len; n++) {
        char *copy = malloc(n ? n : 1); // exact-size copy: ASan sees any overread
        memcpy(copy, w.b.data, n);
        ls_gguf_t *g = NULL;
        ls_status rc = ls_gguf_open_memory(copy, n, &g);
        ok += rc != LS_OK && g == NULL && ls_err_msg()[0] != 0;
        ls_err_clear();
        ls_gguf_free(g);
        free(copy);
    }
    TEST_COND(ok == (int)w.b.len, "%d of %zu truncations rejected with a message", ok, w.b.len);
    ls_buf_free(&w.b);
}

// Random byte corruptions: open either succeeds or fails with a message, and all accessors
// work on what opened.
static void test_corruption(void) {
    gw w = {0};
    valid_file(&w);
    unsigned seed = 2024;
    int opened = 0, rejected = 0;
    char *copy = malloc(w.b.len);
    for (int trial = 0; trial < 20000; trial++) {
        memcpy(copy, w.b.data, w.b.len);
        int flips = 1 + rand_r(&seed) % 4;
        for (int k = 0; k < flips; k++) copy[rand_r(&seed) % w.b.len] = (char)rand_r(&seed);
        ls_gguf_t *g = NULL;
        if (ls_gguf_open_memory(copy, w.b.len, &g) == LS_OK) {
            opened++;
            ls_buf r = {0};
            for (int64_t i = 0; i < ls_gguf_n_kv(g); i++) ls_gguf_kv_render(g, i, 8, &r);
            for (int64_t i = 0; i < ls_gguf_n_tensors(g); i++) {
                const ls_gguf_tensor *t = ls_gguf_tensor_at(g, i);
                volatile uint8_t last = t->nbytes ? ((const uint8_t *)t->data)[t->nbytes - 1] : 0;
                (void)last;
            }
            ls_buf_free(&r);
        } else {
            rejected += ls_err_msg()[0] != 0;
        }
        ls_err_clear();
        ls_gguf_free(g);
    }
    free(copy);
    TEST_COND(opened + rejected == 20000, "every corruption opened or was rejected with a message (%d + %d)", opened, rejected);
    ls_buf_free(&w.b);
}

static void test_file_errors(void) {
    ls_gguf_t *g;
    TEST_ERR(ls_gguf_open("/nonexistent/model.gguf", &g), LS_ERR_IO, "cannot open /nonexistent/model.gguf");
    TEST_ERR(ls_gguf_open("/", &g), LS_ERR_IO, "not a regular file");
}

// Assembled handles (gguf_build.c): a metadata image written with ls_gguf_meta_*, a copy of
// key/values from another handle, tensors pointing at caller memory, and the checks on them.
static int g_released;
static void count_release(void *ctx) { g_released += *(int *)ctx; }

static ls_gguf_t *assemble(const ls_gguf_tensor *t, int64_t n, ls_status want) {
    ls_gguf_meta m = {0};
    const char *strs[] = {"a", "bc"};
    size_t lens[] = {1, 2};
    int32_t ints[] = {7, -8, 9};
    ls_gguf_meta_str(&m, "general.architecture", "llama", 5);
    ls_gguf_meta_u32(&m, "llama.block_count", 3);
    ls_gguf_meta_f32(&m, "llama.rope.freq_base", 10000.0f);
    ls_gguf_meta_bool(&m, "flag", true);
    ls_gguf_meta_strs(&m, "strs", strs, lens, 2);
    ls_gguf_meta_arr(&m, "ints", LS_GGUF_I32, ints, 3);
    ls_buf image;
    ls_gguf_meta_finish(&m, &image);
    ls_gguf_t *g = NULL;
    ls_status rc = ls_gguf_assemble(&image, t, n, &g);
    TEST_COND(rc == want, "assemble returned %d, expected %d (%s)", rc, want, ls_err_msg());
    if (rc != LS_OK) ls_err_clear();
    ls_buf_free(&image);
    return g;
}

static void test_assembled(void) {
    static float data[6] = {1, 2, 3, 4, 5, 6};
    ls_gguf_tensor t[2] = {{.name = "w", .type = LS_F32, .n_dims = 2, .ne = {3, 2}, .data = data},
                           {.name = "v", .type = LS_F32, .n_dims = 1, .ne = {6}, .data = data}};
    ls_gguf_t *g = assemble(t, 2, LS_OK);
    if (!g) return;
    int64_t v;
    ls_str s;
    ls_gguf_arr a;
    TEST_COND(ls_gguf_get_int(g, "llama.block_count", &v) == LS_OK && v == 3, "u32 key");
    TEST_COND(ls_gguf_get_str(g, "general.architecture", &s) == LS_OK && s.len == 5, "string key");
    TEST_COND(ls_gguf_get_arr(g, "strs", &a) == LS_OK && a.count == 2 && ls_gguf_arr_str(&a, 1).len == 2, "string array");
    TEST_COND(ls_gguf_get_arr(g, "ints", &a) == LS_OK && ls_gguf_arr_int(&a, 1) == -8, "int array");
    const ls_gguf_tensor *w = ls_gguf_find_tensor(g, "w");
    TEST_COND(w && w->data == data && w->nbytes == 24 && w->ne[2] == 1, "tensor points at the caller's data");
    // a copy through ls_gguf_meta_copy keeps every key and value byte for byte
    ls_gguf_meta m = {0};
    for (int64_t i = 0; i < ls_gguf_n_kv(g); i++) ls_gguf_meta_copy(&m, g, i);
    ls_buf image;
    ls_gguf_meta_finish(&m, &image);
    ls_gguf_t *c = NULL;
    TEST_COND(ls_gguf_assemble(&image, NULL, 0, &c) == LS_OK && ls_gguf_n_kv(c) == ls_gguf_n_kv(g), "copied metadata");
    for (int64_t i = 0; c && i < ls_gguf_n_kv(g); i++) {
        ls_str x = ls_gguf_kv_raw(g, i), y = ls_gguf_kv_raw(c, i);
        TEST_COND(x.len == y.len && !memcmp(x.ptr, y.ptr, x.len), "key %s copied", ls_gguf_kv_key(g, i));
    }
    static int one = 1, ten = 10;
    g_released = 0;
    ls_gguf_keep(g, &one, count_release);
    ls_gguf_keep(g, &ten, count_release);
    ls_gguf_free(c);
    ls_gguf_free(g);
    ls_buf_free(&image);
    TEST_COND(g_released == 11, "resources kept by the handle are released with it");
    // bad tensors: duplicate names, a row that is not whole blocks, no data, zero sizes
    ls_gguf_tensor dup[2] = {t[0], t[0]};
    TEST_COND(!assemble(dup, 2, LS_ERR_FORMAT), "duplicate tensor names refused");
    ls_gguf_tensor q = {.name = "q", .type = LS_Q8_0, .n_dims = 1, .ne = {33}, .data = data};
    TEST_COND(!assemble(&q, 1, LS_ERR_FORMAT), "partial quant block refused");
    ls_gguf_tensor nod = {.name = "n", .type = LS_F32, .n_dims = 1, .ne = {4}};
    TEST_COND(!assemble(&nod, 1, LS_ERR_INVALID), "tensor without data refused");
    ls_gguf_tensor zero = {.name = "z", .type = LS_F32, .n_dims = 2, .ne = {4, 0}, .data = data};
    TEST_COND(!assemble(&zero, 1, LS_ERR_FORMAT), "zero-sized dimension refused");
}

int main(void) {
    test_valid();
    test_assembled();
    test_hostile();
    test_truncation();
    test_corruption();
    test_file_errors();
    return TEST_REPORT("test_gguf");
}
