// test_wire.c — the protocol's frame codec (partial headers, exact lengths, limits, bad flags),
// Request/Reply round trips and unpacking garbage, UTF-8 checks and sanitizing, constant-time
// token comparison, the token read off a frame's first bytes, token files (and their mode),
// and HOST:PORT parsing.
#include "ls_test.h"
#include "ls_wire.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_frames(void) {
    Longseq__HealthRequest h = LONGSEQ__HEALTH_REQUEST__INIT;
    Longseq__Request q = LONGSEQ__REQUEST__INIT;
    q.token = "tok";
    q.method_case = LONGSEQ__REQUEST__METHOD_HEALTH;
    q.health = &h;
    ls_buf b = {0};
    ls_frame_append(&b, &q.base);
    ls_frame_append(&b, &q.base);
    size_t one = b.len / 2, len = 0;
    bool ready;
    for (size_t n = 0; n < one; n++) { // every prefix of a frame: not ready, no error
        TEST_COND(ls_frame_scan((const uint8_t *)b.data, n, 1000, &ready, &len) == LS_OK && !ready, "prefix %zu", n);
    }
    TEST_COND(ls_frame_scan((const uint8_t *)b.data, b.len, 1000, &ready, &len) == LS_OK && ready &&
                  len == one - LS_FRAME_HEADER, "one frame of %zu bytes", len);
    Longseq__Request *back;
    TEST_COND(ls_wire_unpack_request((const uint8_t *)b.data + LS_FRAME_HEADER, len, &back) == LS_OK &&
                  back->method_case == LONGSEQ__REQUEST__METHOD_HEALTH && !strcmp(back->token, "tok"), "round trip");
    longseq__request__free_unpacked(back, NULL);
    bool r2;
    size_t l2;
    TEST_ERR(ls_frame_scan((const uint8_t *)b.data, b.len, len - 1, &r2, &l2), LS_ERR_RANGE, "over the limit");
    uint8_t bad[] = {1, 0, 0, 0, 0};
    TEST_ERR(ls_frame_scan(bad, 1, 1000, &r2, &l2), LS_ERR_FORMAT, "flags byte 0x01");
    uint8_t huge[] = {0, 0xff, 0xff, 0xff, 0xff};
    TEST_ERR(ls_frame_scan(huge, 5, (size_t)1 << 30, &r2, &l2), LS_ERR_RANGE, "4294967295");
    uint8_t junk[] = {0xff, 0xff, 0xff, 0x0f};
    TEST_ERR(ls_wire_unpack_request(junk, sizeof junk, &back), LS_ERR_FORMAT, "does not parse");
    TEST_ERR(ls_wire_unpack_reply(junk, sizeof junk, &(Longseq__Reply *){0}), LS_ERR_FORMAT, "longseq.Reply");
    ls_buf_free(&b);
}

static void test_utf8(void) {
    size_t at = 99;
    TEST_COND(ls_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15, &at), "valid");
    TEST_COND(!ls_utf8_valid("ab\xc3", 3, &at) && at == 2, "truncated at %zu", at);
    TEST_COND(!ls_utf8_valid("a\xc0\xafz", 4, &at) && at == 1, "overlong at %zu", at);
    TEST_COND(!ls_utf8_valid("\xed\xa0\x80", 3, &at) && at == 0, "surrogate at %zu", at);
    TEST_COND(!ls_utf8_valid("\xf4\x90\x80\x80", 4, &at), "above U+10FFFF");
    ls_buf b = {0};
    ls_utf8_sanitize("a\xff" "b\xc3\xa9", 5, &b);
    TEST_COND(b.len == 7 && !memcmp(b.data, "a\xef\xbf\xbd" "b\xc3\xa9", 7), "sanitized: %s", b.data);
    ls_buf_free(&b);
}

static void test_token(void) {
    TEST_COND(ls_wire_token_equal("secret", "secret"), "equal");
    TEST_COND(!ls_wire_token_equal("secret", "secreT") && !ls_wire_token_equal("secret", "secre") &&
                  !ls_wire_token_equal("secret", "secrets") && !ls_wire_token_equal("secret", ""), "different");
    char path[] = "/tmp/ls-token-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    TEST_COND(ls_wire_write_new_token(path) == LS_OK, "written");
    char *t = NULL;
    TEST_COND(ls_wire_read_token(path, &t) == LS_OK && strlen(t) == 64, "read back 64 hex digits");
    ls_free(t);
    FILE *f = fopen(path, "w");
    fputs(" \n", f);
    fclose(f);
    TEST_ERR(ls_wire_read_token(path, &t), LS_ERR_INVALID, "empty");
    unlink(path);
    TEST_ERR(ls_wire_read_token(path, &t), LS_ERR_IO, "token file");
}

// The token at the start of a packed Request: found from its first bytes, before the rest of the
// message (here a 100 KB document) has arrived; anything else first is refused.
static void test_peek_token(void) {
    Longseq__Document d = LONGSEQ__DOCUMENT__INIT, *dp = &d;
    d.text.len = 100000;
    d.text.data = ls_calloc(1, d.text.len);
    Longseq__SubmitRequest sr = LONGSEQ__SUBMIT_REQUEST__INIT;
    sr.n_documents = 1;
    sr.documents = &dp;
    Longseq__Request q = LONGSEQ__REQUEST__INIT;
    q.token = "s3cret";
    q.method_case = LONGSEQ__REQUEST__METHOD_SUBMIT;
    q.submit = &sr;
    size_t n = longseq__request__get_packed_size(&q), len = 0;
    uint8_t *m = ls_malloc(n);
    longseq__request__pack(&q, m);
    const char *tok = NULL;
    bool ready = true;
    for (size_t have = 0; have < 8; have++) // 0a 06 s3cret: ready after 8 bytes
        TEST_COND(ls_wire_peek_token(m, have, n, &tok, &len, &ready) == LS_OK && !ready, "%zu bytes: more needed", have);
    TEST_COND(ls_wire_peek_token(m, 8, n, &tok, &len, &ready) == LS_OK && ready && len == 6 && !memcmp(tok, "s3cret", 6),
              "the token from the first 8 of %zu bytes", n);
    TEST_COND(ls_wire_token_equal_n("s3cret", tok, len) && !ls_wire_token_equal_n("s3cret", tok, len - 1) &&
                  !ls_wire_token_equal_n("s3cre", tok, len) && !ls_wire_token_equal_n("s3cret", "s3cret\0", 7),
              "compared with its length");
    q.token = (char *)protobuf_c_empty_string; // no token: the method comes first
    n = longseq__request__get_packed_size(&q);
    longseq__request__pack(&q, m);
    TEST_ERR(ls_wire_peek_token(m, 1, n, &tok, &len, &ready), LS_ERR_INVALID, "does not start with the token");
    TEST_ERR(ls_wire_peek_token(m, 0, 0, &tok, &len, &ready), LS_ERR_INVALID, "does not start with the token");
    uint8_t long_len[] = {0x0a, 0x81, 0x20}; // 4097 bytes
    TEST_ERR(ls_wire_peek_token(long_len, 3, 10000, &tok, &len, &ready), LS_ERR_INVALID, "up to 4096");
    uint8_t past[] = {0x0a, 0x05, 'a'};
    TEST_ERR(ls_wire_peek_token(past, 3, 4, &tok, &len, &ready), LS_ERR_INVALID, "does not fit in a message of 4");
    uint8_t endless[12] = {0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80};
    TEST_ERR(ls_wire_peek_token(endless, 12, 100, &tok, &len, &ready), LS_ERR_INVALID, "up to 4096");
    ls_free(m);
    ls_free(d.text.data);
}

// A token file that group or others may read or write is refused, naming the file, its mode and the fix.
static void test_token_mode(void) {
    char path[] = "/tmp/ls-token-XXXXXX", want[200];
    int fd = mkstemp(path);
    close(fd);
    TEST_COND(ls_wire_write_new_token(path) == LS_OK, "written");
    char *t = NULL;
    chmod(path, 0644);
    snprintf(want, sizeof want, "the token file %s has mode 0644: group or others may read it; run chmod 600 %s", path, path);
    TEST_ERR(ls_wire_read_token(path, &t), LS_ERR_INVALID, want);
    chmod(path, 0620);
    TEST_ERR(ls_wire_read_token(path, &t), LS_ERR_INVALID, "mode 0620: group or others may write it");
    chmod(path, 0400);
    TEST_COND(ls_wire_read_token(path, &t) == LS_OK && strlen(t) == 64, "0400 is fine");
    ls_free(t);
    chmod(path, 0644);
    setenv("LONGSEQ_TOKEN", "from-the-environment", 1); // no file: no mode to check
    TEST_COND(ls_wire_read_token(NULL, &t) == LS_OK && !strcmp(t, "from-the-environment"), "$LONGSEQ_TOKEN");
    unsetenv("LONGSEQ_TOKEN");
    ls_free(t);
    unlink(path);
}

static void test_addr(void) {
    char host[64];
    int port = -1;
    TEST_COND(ls_net_split("127.0.0.1:7070", host, sizeof host, &port) == LS_OK && !strcmp(host, "127.0.0.1") &&
                  port == 7070, "v4");
    TEST_COND(ls_net_split("[::1]:0", host, sizeof host, &port) == LS_OK && !strcmp(host, "::1") && port == 0, "v6");
    TEST_ERR(ls_net_split("localhost", host, sizeof host, &port), LS_ERR_INVALID, "HOST:PORT");
    TEST_ERR(ls_net_split("h:70000", host, sizeof host, &port), LS_ERR_INVALID, "0 to 65535");
    TEST_ERR(ls_net_split("h:7x", host, sizeof host, &port), LS_ERR_INVALID, "port");
    int fd, p;
    TEST_COND(ls_net_listen("127.0.0.1:0", 4, &fd, &p) == LS_OK && p > 0, "listen on a free port");
    close(fd);
}

int main(void) {
    test_frames();
    test_utf8();
    test_token();
    test_peek_token();
    test_token_mode();
    test_addr();
    return TEST_REPORT("test_wire");
}
