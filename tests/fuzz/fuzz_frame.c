// fuzz_frame.c — libFuzzer target for what the coordinator reads from the network: the input is
// cut into frames (ls_frame_scan with a small limit), the token is read off each frame's first
// bytes as the server does before authentication (every prefix up to 16 bytes, then the whole
// message), each frame is unpacked as a Request and a Reply, and a Submit's settings and documents go through the same checks the server makes
// (settings, UTF-8, names). Any crash, sanitizer report or leak is a bug. Run by
// tests/fuzz/run-fuzz-frame for a bounded time on seeds written by longseq's own encoder.
#include "ls_server.h"
#include "ls_wire.h"

#include <string.h>

static void check_request(const Longseq__Request *q) {
    if (q->method_case != LONGSEQ__REQUEST__METHOD_SUBMIT || !q->submit) return;
    const Longseq__SubmitRequest *s = q->submit;
    if (s->settings && ls_settings_check(s->settings) == LS_OK) {
        ls_attn_rule r;
        (void)ls_settings_rule(s->settings, 1000, &r);
        ls_rope_override o;
        ls_settings_rope(s->settings, &LS_ROPE_OVERRIDE_NONE, &o);
    }
    ls_err_clear();
    for (size_t i = 0; i < s->n_documents; i++) {
        const Longseq__Document *d = s->documents[i];
        size_t at;
        (void)ls_utf8_valid((const char *)d->text.data, d->text.len, &at);
        if (d->name) (void)ls_utf8_valid(d->name, strlen(d->name), &at);
    }
}

// The token found in msg[0..have) must lie inside it, and the same with more bytes.
static void check_token(const uint8_t *msg, size_t len) {
    for (size_t have = 0; have <= len; have++) {
        if (have > 16 && have < len) have = len;
        const char *t = NULL;
        size_t n = 0;
        bool ready;
        if (ls_wire_peek_token(msg, have, len, &t, &n, &ready) == LS_OK && ready) {
            if ((const uint8_t *)t < msg || (const uint8_t *)t + n > msg + have || n > LS_TOKEN_MAX) __builtin_trap();
            (void)ls_wire_token_equal_n("fuzz-token", t, n);
        }
        ls_err_clear();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t off = 0;
    while (off < size) {
        bool ready;
        size_t len;
        if (ls_frame_scan(data + off, size - off, 1 << 16, &ready, &len) != LS_OK || !ready) break;
        const uint8_t *msg = data + off + LS_FRAME_HEADER;
        check_token(msg, len);
        Longseq__Request *q;
        if (ls_wire_unpack_request(msg, len, &q) == LS_OK) {
            check_request(q);
            longseq__request__free_unpacked(q, NULL);
        }
        Longseq__Reply *r;
        if (ls_wire_unpack_reply(msg, len, &r) == LS_OK) longseq__reply__free_unpacked(r, NULL);
        ls_err_clear();
        off += LS_FRAME_HEADER + len;
    }
    ls_err_clear();
    return 0;
}
