// test_wire.c — the protocol's frame codec (partial headers, exact lengths, limits, bad flags),
// Request/Reply round trips and unpacking garbage, UTF-8 checks and sanitizing, constant-time
// token comparison, token files, and HOST:PORT parsing.
#include "ls_test.h"
#include "ls_wire.h"

#include <stdlib.h>
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
    test_addr();
    return TEST_REPORT("test_wire");
}
