// test_base.c — unit tests of base/: errors (first cause, trace, prefix), buffers, vectors,
// both hash maps (against a brute-force check), dtype sizes and overflow checks, reading
// files (FIFOs and devices refused, the size limit checked before reading), files of an
// untrusted directory (links inside it or into a hub cache's blobs; outside ones refused).
// `test_base --dtype-table` prints the dtype table for tests/oracle/test_dequant.py.
#include "ls_base.h"
#include "ls_test.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static ls_status inner(void) { return LS_ERR(LS_ERR_FORMAT, "inner failed with %d", 42); }
static ls_status middle(void) {
    LS_CHECK(inner());
    return LS_OK;
}

static void test_errors(void) {
    TEST_COND(middle() == LS_ERR_FORMAT, "status passes through LS_CHECK");
    TEST_COND(!strcmp(ls_err_msg(), "inner failed with 42"), "message: %s", ls_err_msg());
    LS_ERR(LS_ERR_IO, "second");
    TEST_COND(strstr(ls_err_msg(), "inner") != NULL, "first cause wins: %s", ls_err_msg());
    ls_err_prefix("%s: ", "file.gguf");
    TEST_COND(!strcmp(ls_err_msg(), "file.gguf: inner failed with 42"), "prefix: %s", ls_err_msg());
    ls_err_clear();
    TEST_COND(ls_err_code() == LS_OK && ls_err_msg()[0] == 0, "clear");
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    LS_ERR(LS_ERR_INVALID, "%s", big);
    ls_err_prefix("%s", big);
    TEST_COND(strlen(ls_err_msg()) < 1024, "long messages are truncated, not overflowed");
    ls_err_clear();
}

static void test_buffers(void) {
    ls_buf b = {0};
    for (int i = 0; i < 1000; i++) ls_buf_printf(&b, "%d,", i);
    TEST_COND(b.len == strlen(b.data), "buffer stays NUL-terminated");
    TEST_COND(!strncmp(b.data, "0,1,2,", 6) && b.data[b.len - 1] == ',', "contents");
    ls_buf_clear(&b);
    TEST_COND(b.len == 0 && b.data[0] == 0, "a cleared buffer reads as an empty string, not its old contents");
    ls_buf_free(&b);
    ls_buf_clear(&b); // never allocated: nothing to write
    ls_vec_i32 v = {0};
    for (int i = 0; i < 100000; i++) ls_vec_i32_push(&v, i * 3);
    TEST_COND(v.len == 100000 && v.data[99999] == 299997, "vector growth");
    ls_vec_i32_free(&v);
}

static void test_maps(void) {
    ls_strmap *m = ls_strmap_init(4);
    char key[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(key, sizeof key, "k%d", i);
        TEST_COND(ls_strmap_put(m, key, (size_t)n, i), "new key %s", key);
    }
    TEST_COND(!ls_strmap_put(m, "k7", 2, -7), "existing key is replaced, not added");
    int64_t v;
    TEST_COND(ls_strmap_get(m, "k7", 2, &v) && v == -7, "replaced value");
    TEST_COND(ls_strmap_get(m, "k4999", 5, &v) && v == 4999, "lookup after growth");
    TEST_COND(!ls_strmap_get(m, "k5000", 5, &v), "absent key");
    TEST_COND(ls_strmap_put(m, "", 0, 9) && ls_strmap_get(m, "", 0, &v) && v == 9, "empty key");
    TEST_COND(ls_strmap_put(m, "a\0b", 3, 1) && !ls_strmap_get(m, "a", 1, NULL), "keys with NUL bytes");
    TEST_COND(ls_strmap_count(m) == 5002, "count %zu", ls_strmap_count(m));
    ls_strmap_free(m);

    ls_u64map *u = ls_u64map_init(1);
    srand(7);
    uint64_t keys[4000];
    for (int i = 0; i < 4000; i++) {
        keys[i] = ((uint64_t)rand() << 32) ^ (uint64_t)rand() ^ (uint64_t)i << 40;
        ls_u64map_put(u, keys[i], (uint64_t)i);
    }
    int ok = 0;
    for (int i = 0; i < 4000; i++) {
        uint64_t got;
        ok += ls_u64map_get(u, keys[i], &got) && got == (uint64_t)i;
    }
    TEST_COND(ok == 4000, "u64map finds all keys (%d)", ok);
    TEST_COND(!ls_u64map_get(u, 12345, NULL) || 1, "absent lookup does not crash");
    ls_u64map_free(u);
}

static void test_dtypes(void) {
    uint64_t b;
    TEST_COND(ls_dtype_row_bytes(LS_Q4_1, 576, &b) && b == 360, "Q4_1 row of 576: %llu", (unsigned long long)b);
    TEST_COND(ls_dtype_row_bytes(LS_Q6_K, 512, &b) && b == 420, "Q6_K row of 512");
    TEST_COND(!ls_dtype_row_bytes(LS_Q4_0, 33, &b), "partial block is rejected");
    TEST_COND(!ls_dtype_row_bytes(LS_F32, UINT64_MAX / 2, &b), "overflow is detected");
    TEST_COND(ls_dtype_get(4) == NULL && ls_dtype_get(31) == NULL && ls_dtype_get(1000) == NULL, "removed/unknown ids");
    TEST_COND(!strcmp(ls_dtype_name(LS_BF16), "BF16"), "names");
    uint64_t r;
    TEST_COND(!ls_mul_u64(1ull << 40, 1ull << 30, &r) && ls_mul_u64(3, 5, &r) && r == 15, "mul overflow");
    TEST_COND(!ls_add_u64(UINT64_MAX, 1, &r), "add overflow");
}

// Reading files: FIFOs and devices are refused by name without blocking, files over the limit
// by their length before anything is read.
static void test_files(void) {
    char dir[] = "/tmp/ls-base-XXXXXX", path[64], cmd[96];
    if (!mkdtemp(dir)) return;
    snprintf(path, sizeof path, "%s/fifo", dir);
    TEST_COND(mkfifo(path, 0644) == 0, "mkfifo");
    alarm(20); // a reader that blocks fails the test instead of hanging it
    ls_mapped_file f;
    ls_buf b = {0};
    TEST_ERR(ls_file_map(path, &f), LS_ERR_IO, "fifo is not a regular file");
    TEST_ERR(ls_file_read_all(path, 100, &b), LS_ERR_IO, "fifo is not a regular file");
    TEST_ERR(ls_file_read_all("/dev/zero", 100, &b), LS_ERR_IO, "/dev/zero is not a regular file");
    alarm(0);
    ls_buf_free(&b);
    snprintf(path, sizeof path, "%s/big", dir);
    FILE *w = fopen(path, "wb");
    if (w) fputs("0123456789", w), fclose(w);
    TEST_ERR(ls_file_read_all(path, 9, &b), LS_ERR_RANGE, "big is larger than the limit of 9 bytes");
    TEST_COND(b.len == 0, "nothing read from a file over the limit (%zu bytes)", b.len);
    ls_buf_free(&b);
    TEST_COND(ls_file_read_all(path, 10, &b) == LS_OK && b.len == 10 && !strcmp(b.data, "0123456789"), "read: %s",
              ls_err_msg());
    ls_buf_free(&b);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    TEST_COND(system(cmd) == 0, "%s", cmd);
}

// Files of an untrusted directory: inside it (also through links), or refused by name.
static void test_dir_files(void) {
    char root[] = "/tmp/ls-dir-XXXXXX", dir[64], out[4096], cmd[512];
    if (!mkdtemp(root)) return;
    snprintf(dir, sizeof dir, "%s/m/snapshots/rev", root);
    snprintf(cmd, sizeof cmd,
             "cd %s && mkdir -p m/blobs m/snapshots/rev/sub elsewhere && touch m/blobs/h1 elsewhere/f m/snapshots/rev/sub/a && "
             "cd m/snapshots/rev && ln -s ../../blobs/h1 hub && ln -s sub/a inside && ln -s ../../../elsewhere/f out && "
             "ln -s missing dangling && mkfifo fifo", root);
    TEST_COND(system(cmd) == 0, "%s", cmd);
    bool found = true;
    TEST_COND(ls_dir_file(dir, "inside", out, sizeof out, &found) == LS_OK && found && strstr(out, "/sub/a"), "a link inside");
    TEST_COND(ls_dir_file(dir, "hub", out, sizeof out, NULL) == LS_OK && strstr(out, "/m/blobs/h1"), "a hub cache blob");
    TEST_COND(ls_dir_file(dir, "absent", out, sizeof out, &found) == LS_OK && !found, "absent: found = false");
    TEST_COND(ls_err_code() == LS_OK, "no error recorded for an absent file");
    TEST_ERR(ls_dir_file(dir, "absent", out, sizeof out, NULL), LS_ERR_NOT_FOUND, "rev/absent");
    TEST_ERR(ls_dir_file(dir, "out", out, sizeof out, &found), LS_ERR_FORMAT, "rev/out leads outside");
    TEST_COND(ls_dir_file(dir, "../../blobs/h1", out, sizeof out, NULL) == LS_OK, "the blobs by name: %s", ls_err_msg());
    TEST_ERR(ls_dir_file(dir, "../../../elsewhere/f", out, sizeof out, NULL), LS_ERR_FORMAT, "leads outside");
    TEST_ERR(ls_dir_file(dir, "fifo", out, sizeof out, NULL), LS_ERR_FORMAT, "rev/fifo is not a regular file (a FIFO)");
    TEST_ERR(ls_dir_file(dir, "sub", out, sizeof out, NULL), LS_ERR_FORMAT, "is not a regular file (a directory)");
    TEST_COND(ls_dir_file(dir, "dangling", out, sizeof out, &found) == LS_OK && !found, "a dangling link is absent");
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    TEST_COND(system(cmd) == 0, "%s", cmd);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--dtype-table")) {
        for (uint32_t id = 0; id < LS_DTYPE_COUNT; id++) {
            const ls_dtype_info *t = ls_dtype_get(id);
            if (t) printf("%u %s %u %u\n", id, t->name, t->block, t->block_bytes);
        }
        return 0;
    }
    test_errors();
    test_buffers();
    test_maps();
    test_dtypes();
    test_files();
    test_dir_files();
    return TEST_REPORT("test_base");
}
