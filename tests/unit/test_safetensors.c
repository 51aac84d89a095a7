// test_safetensors.c — the safetensors reader on files this test writes: a valid file (three
// dtypes, padded header, metadata), a sharded checkpoint through its index, and hostile
// variants that must each fail with a message naming the problem: short files, a header
// running past the end, bad JSON, duplicate keys, unknown dtypes, bad shapes, byte ranges
// outside the buffer or not matching the shape, overlapping tensors, index entries pointing
// at the wrong shard or outside the directory, shards that are links leading outside it or
// FIFOs. Errors never show the file's bytes as numbers. Every truncation of the valid file
// fails cleanly (the suite also runs this under ASan+UBSan).
#include "ls_safetensors.h"
#include "ls_test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

static float bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void write_file(const char *name, const void *p, size_t n) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

// A safetensors file: header JSON (padded to `pad` spaces), then `data` bytes.
static size_t build(uint8_t *out, const char *json, size_t pad, const void *data, size_t data_len) {
    uint64_t n = strlen(json) + pad;
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(n >> (8 * i));
    memcpy(out + 8, json, strlen(json));
    memset(out + 8 + strlen(json), ' ', pad);
    memcpy(out + 8 + n, data, data_len);
    return 8 + n + data_len;
}

static const char *VALID =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"h\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
    "\"e\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[32,32]}}";

static uint8_t g_data[32];

static size_t valid(uint8_t *buf) {
    float w[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[4] = {0x3f80, 0x4000, 0xbf80, 0}; // bf16 1, 2, -1, 0
    memcpy(g_data, w, 24), memcpy(g_data + 24, h, 8);
    return build(buf, VALID, 5, g_data, 32);
}

static void test_valid(void) {
    uint8_t buf[1024];
    write_file("one.safetensors", buf, valid(buf));
    char path[256];
    snprintf(path, sizeof path, "%s/one.safetensors", g_dir);
    ls_safetensors_t *st;
    TEST_COND(ls_safetensors_open(path, &st) == LS_OK, "open: %s", ls_err_msg());
    if (!st) return;
    TEST_COND(ls_safetensors_count(st) == 3, "three tensors (metadata skipped)");
    const ls_st_tensor *w = ls_safetensors_find(st, "w"), *h = ls_safetensors_find(st, "h"), *e = ls_safetensors_find(st, "e");
    TEST_COND(w && w->type == LS_F32 && w->n_dims == 2 && w->shape[0] == 2 && w->shape[1] == 3 && w->bytes == 24, "w");
    float w5 = 0; // the format does not align data: read through memcpy
    uint16_t h2 = 0;
    if (w) memcpy(&w5, (const uint8_t *)w->data + 20, 4);
    if (h) memcpy(&h2, (const uint8_t *)h->data + 4, 2);
    TEST_COND(w5 == 6.0f, "w's data");
    TEST_COND(h && h->type == LS_BF16 && bf16(h2) == -1.0f, "h");
    TEST_COND(e && e->bytes == 0 && e->shape[0] == 0, "an empty tensor");
    TEST_COND(!ls_safetensors_find(st, "missing") && !strcmp(ls_safetensors_at(st, 0)->name, "e"), "sorted by name");
    ls_safetensors_free(st);
}

// Each hostile header must fail with `needle` in the message.
static void hostile(const char *json, const void *data, size_t len, ls_status code, const char *needle) {
    uint8_t buf[4096];
    write_file("bad.safetensors", buf, build(buf, json, 0, data, len));
    char path[256];
    snprintf(path, sizeof path, "%s/bad.safetensors", g_dir);
    ls_safetensors_t *st = NULL;
    TEST_ERR(ls_safetensors_open(path, &st), code, needle);
    TEST_COND(st == NULL, "no handle after an error");
}

static void test_hostile(void) {
    uint8_t z[64] = {0};
    hostile("{\"a\":", z, 8, LS_ERR_FORMAT, "not valid JSON");
    hostile("[1,2]", z, 8, LS_ERR_FORMAT, "not a JSON object");
    hostile("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
            z, 8, LS_ERR_FORMAT, "not valid JSON");
    hostile("{\"a\":7}", z, 8, LS_ERR_FORMAT, "entry 'a' is not an object");
    hostile("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", z, 8, LS_ERR_FORMAT, "'a' has no dtype");
    hostile("{\"a\":{\"dtype\":\"F8_E5M2\",\"shape\":[1],\"data_offsets\":[0,1]}}", z, 8, LS_ERR_UNSUPPORTED, "dtype \"F8_E5M2\"");
    hostile("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", z, 8, LS_ERR_FORMAT, "dimension 0");
    hostile("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", z, 8, LS_ERR_FORMAT, "at most 8");
    hostile("{\"a\":{\"dtype\":\"F64\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,8]}}", z, 8,
            LS_ERR_FORMAT, "more elements than 64 bits");
    hostile("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", z, 8, LS_ERR_FORMAT, "outside the 8-byte data buffer");
    hostile("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", z, 8, LS_ERR_FORMAT, "need 12");
    hostile("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", z, 8, LS_ERR_FORMAT, "outside");
    hostile("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", z, 8, LS_ERR_FORMAT, "no data_offsets");
    hostile("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
            z, 16, LS_ERR_FORMAT, "overlap");
    // a header length past the end, and absurd
    uint8_t buf[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    write_file("bad.safetensors", buf, 10);
    char path[256];
    snprintf(path, sizeof path, "%s/bad.safetensors", g_dir);
    ls_safetensors_t *st = NULL;
    ls_status rc = ls_safetensors_open(path, &st);
    TEST_COND(rc == LS_ERR_FORMAT && strstr(ls_err_msg(), "does not fit the 10-byte file"), "got %s", ls_err_msg());
    // the file's bytes never appear as a number (the file may be anything a link points to)
    TEST_COND(!strstr(ls_err_msg(), "9223372036854775807"), "the length field is in the message: %s", ls_err_msg());
    ls_err_clear();
    write_file("bad.safetensors", buf, 5);
    TEST_ERR(ls_safetensors_open(path, &st), LS_ERR_FORMAT, "too short");
    snprintf(path, sizeof path, "%s/none", g_dir);
    TEST_ERR(ls_safetensors_open(path, &st), LS_ERR_IO, "none");
}

// Every prefix of the valid file fails cleanly (the full length opens).
static void test_truncation(void) {
    uint8_t buf[1024];
    size_t n = valid(buf);
    char path[256];
    snprintf(path, sizeof path, "%s/cut.safetensors", g_dir);
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        write_file("cut.safetensors", buf, len);
        ls_safetensors_t *st = NULL;
        ls_status rc = ls_safetensors_open(path, &st);
        bad += rc == LS_OK || st != NULL;
        ls_err_clear();
    }
    TEST_COND(bad == 0, "%d truncated files opened", bad);
}

// A shard named in the index is a link: fine inside the directory, refused when it leads
// outside (whatever the string of its name), and a FIFO is refused without blocking.
static void test_links(const char *index, uint8_t *a, const float *v) {
    char cmd[600], outside[128];
    ls_safetensors_t *st = NULL;
    snprintf(outside, sizeof outside, "%s-outside", g_dir);
    mkdir(outside, 0755);
    const char *idx = "{\"weight_map\":{\"x\":\"m-1.safetensors\",\"w\":\"link.safetensors\"}}";
    write_file("model.safetensors.index.json", idx, strlen(idx));
    write_file("real.safetensors", a, build(a, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, v, 4));
    snprintf(cmd, sizeof cmd, "cd %s && ln -sf real.safetensors link.safetensors", g_dir);
    TEST_COND(system(cmd) == 0, "%s", cmd);
    TEST_COND(ls_safetensors_open(index, &st) == LS_OK, "a shard linked inside the directory: %s", ls_err_msg());
    ls_safetensors_free(st);
    ls_err_clear();
    snprintf(cmd, sizeof cmd, "printf 'ABCDEFGHIJKLMNOP' > %s/secret && cd %s && ln -sf %s/secret link.safetensors",
             outside, g_dir, outside);
    TEST_COND(system(cmd) == 0, "%s", cmd);
    st = NULL;
    ls_status rc = ls_safetensors_open(index, &st);
    TEST_COND(rc == LS_ERR_FORMAT && strstr(ls_err_msg(), "link.safetensors leads outside"), "got %s", ls_err_msg());
    TEST_COND(!strstr(ls_err_msg(), "5208208757389214273"), "the file's bytes are in the message: %s", ls_err_msg());
    ls_err_clear();
    snprintf(cmd, sizeof cmd, "cd %s && rm link.safetensors && mkfifo link.safetensors", g_dir);
    TEST_COND(system(cmd) == 0, "%s", cmd);
    TEST_ERR(ls_safetensors_open(index, &st), LS_ERR_FORMAT, "link.safetensors is not a regular file");
    snprintf(cmd, sizeof cmd, "rm -rf %s", outside);
    TEST_COND(system(cmd) == 0, "%s", cmd);
}

static void test_sharded(void) {
    uint8_t a[256], b[256];
    float v[4] = {1, 2, 3, 4};
    write_file("m-1.safetensors", a, build(a, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, v, 8));
    write_file("m-2.safetensors", b, build(b, "{\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                              "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}", 0, v + 2, 8));
    const char *idx = "{\"metadata\":{},\"weight_map\":{\"x\":\"m-1.safetensors\",\"y\":\"m-2.safetensors\",\"z\":\"m-2.safetensors\"}}";
    write_file("model.safetensors.index.json", idx, strlen(idx));
    ls_safetensors_t *st = NULL;
    TEST_COND(ls_safetensors_open(g_dir, &st) == LS_OK, "a directory with an index: %s", ls_err_msg());
    if (st) {
        const ls_st_tensor *y = ls_safetensors_find(st, "y");
        TEST_COND(ls_safetensors_shards(st) == 2 && ls_safetensors_count(st) == 3, "two shards, three tensors");
        float y1 = 0;
        if (y) memcpy(&y1, (const uint8_t *)y->data + 4, 4);
        TEST_COND(y && y->shard == 1 && y1 == 4.0f, "y from the second shard");
        ls_safetensors_free(st);
    }
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", g_dir);
    const char *wrong = "{\"weight_map\":{\"x\":\"m-2.safetensors\",\"y\":\"m-2.safetensors\"}}";
    write_file("model.safetensors.index.json", wrong, strlen(wrong));
    TEST_ERR(ls_safetensors_open(path, &st), LS_ERR_FORMAT, "names tensor 'x' in m-2.safetensors, which does not hold it");
    const char *escape = "{\"weight_map\":{\"x\":\"../etc/passwd\"}}";
    write_file("model.safetensors.index.json", escape, strlen(escape));
    TEST_ERR(ls_safetensors_open(path, &st), LS_ERR_FORMAT, "not a file name inside the checkpoint");
    const char *twice = "{\"weight_map\":{\"x\":\"m-1.safetensors\",\"y\":\"m-2.safetensors\",\"w\":\"m-3.safetensors\"}}";
    write_file("m-3.safetensors", a, build(a, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                              "\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}", 0, v, 8));
    write_file("model.safetensors.index.json", twice, strlen(twice));
    TEST_ERR(ls_safetensors_open(path, &st), LS_ERR_FORMAT, "appears in both");
    const char *nomap = "{\"metadata\":{}}";
    write_file("model.safetensors.index.json", nomap, strlen(nomap));
    TEST_ERR(ls_safetensors_open(path, &st), LS_ERR_FORMAT, "no \"weight_map\"");
    test_links(path, a, v);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/ls-st-XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    alarm(60); // a reader that blocks on a FIFO fails the test instead of hanging it
    test_valid();
    test_hostile();
    test_truncation();
    test_sharded();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) return 1;
    return TEST_REPORT("test_safetensors");
}
