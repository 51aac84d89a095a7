// wire.c — frames, message unpacking, UTF-8 checks, the bearer token and blocking sockets for
// the job protocol (ls_wire.h). Tests: tests/unit/test_wire.c, tests/fuzz/fuzz_frame.c.
#include "ls_wire.h"

#include <utf8proc.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

// --- frames -----------------------------------------------------------------------------------

ls_status ls_frame_scan(const uint8_t *p, size_t n, size_t max, bool *ready, size_t *len) {
    *ready = false;
    if (n >= 1 && p[0] != 0)
        return LS_ERR(LS_ERR_FORMAT, "bad frame: flags byte 0x%02x (only 0, an uncompressed message, is defined)", p[0]);
    if (n < LS_FRAME_HEADER) return LS_OK;
    size_t l = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
    if (l > max) return LS_ERR(LS_ERR_RANGE, "a frame of %zu bytes is over the limit of %zu", l, max);
    *len = l;
    *ready = n - LS_FRAME_HEADER >= l;
    return LS_OK;
}

void ls_frame_append(ls_buf *out, const ProtobufCMessage *m) {
    size_t l = protobuf_c_message_get_packed_size(m);
    uint8_t h[LS_FRAME_HEADER] = {0, (uint8_t)(l >> 24), (uint8_t)(l >> 16), (uint8_t)(l >> 8), (uint8_t)l};
    ls_buf_append(out, h, sizeof h);
    if (out->cap < out->len + l + 1) {
        out->data = ls_realloc(out->data, out->len + l + 1);
        out->cap = out->len + l + 1;
    }
    protobuf_c_message_pack(m, (uint8_t *)out->data + out->len);
    out->len += l;
    out->data[out->len] = 0;
}

// A varint at p[0..n): *v and its size in bytes (*k); *k = 0 when it is not complete yet.
static bool varint(const uint8_t *p, size_t n, uint64_t *v, size_t *k) {
    *v = 0, *k = 0;
    for (size_t i = 0; i < n && i < 10; i++) {
        *v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *k = i + 1;
            return true;
        }
    }
    return n < 10; // ten bytes without an end: not a varint
}

ls_status ls_wire_peek_token(const uint8_t *msg, size_t have, size_t msg_len, const char **token, size_t *len,
                             bool *ready) {
    *ready = false;
    if (msg_len == 0 || (have >= 1 && msg[0] != 0x0a))
        return LS_ERR(LS_ERR_INVALID, "the message does not start with the token (Request field 1)");
    if (have < 2) return LS_OK;
    uint64_t l;
    size_t k;
    if (!varint(msg + 1, have - 1, &l, &k) || (k && l > LS_TOKEN_MAX))
        return LS_ERR(LS_ERR_INVALID, "the token's length is not a number up to %d", LS_TOKEN_MAX);
    if (!k) return LS_OK;
    if (1 + k + l > msg_len)
        return LS_ERR(LS_ERR_INVALID, "a token of %llu bytes does not fit in a message of %zu", (unsigned long long)l, msg_len);
    if (have < 1 + k + l) return LS_OK;
    *token = (const char *)msg + 1 + k;
    *len = (size_t)l;
    *ready = true;
    return LS_OK;
}

ls_status ls_wire_unpack_request(const uint8_t *p, size_t n, Longseq__Request **out) {
    *out = longseq__request__unpack(NULL, n, p);
    return *out ? LS_OK : LS_ERR(LS_ERR_FORMAT, "the message (%zu bytes) does not parse as a longseq.Request", n);
}

ls_status ls_wire_unpack_reply(const uint8_t *p, size_t n, Longseq__Reply **out) {
    *out = longseq__reply__unpack(NULL, n, p);
    return *out ? LS_OK : LS_ERR(LS_ERR_FORMAT, "the message (%zu bytes) does not parse as a longseq.Reply", n);
}

bool ls_utf8_valid(const char *p, size_t n, size_t *bad_at) {
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)p + i, (utf8proc_ssize_t)(n - i), &c);
        if (k <= 0 || !utf8proc_codepoint_valid(c)) {
            if (bad_at) *bad_at = i;
            return false;
        }
        i += (size_t)k;
    }
    return true;
}

void ls_utf8_sanitize(const char *p, size_t n, ls_buf *out) {
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)p + i, (utf8proc_ssize_t)(n - i), &c);
        if (k <= 0 || c == 0 || !utf8proc_codepoint_valid(c)) {
            ls_buf_append(out, "\xef\xbf\xbd", 3);
            k = 1;
        } else {
            ls_buf_append(out, p + i, (size_t)k);
        }
        i += (size_t)k;
    }
}

const char *ls_wire_code_name(int code) {
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&longseq__code__descriptor, code);
    return v ? v->name : "?";
}

// --- the token --------------------------------------------------------------------------------

// A token file must be the owner's alone (as ssh wants of a private key).
static ls_status token_file_private(const char *path) {
    struct stat st;
    if (!strcmp(path, "-") || stat(path, &st) != 0 || !S_ISREG(st.st_mode) || !(st.st_mode & 077))
        return LS_OK; // standard input, or not there: reading it says what is wrong
    return LS_ERR(LS_ERR_INVALID, "the token file %s has mode %04o: group or others may %s it; run chmod 600 %s", path,
                  (unsigned)(st.st_mode & 07777), st.st_mode & 044 ? "read" : "write", path);
}

ls_status ls_wire_env_token(const char *var, char **token) {
    const char *env = getenv(var);
    *token = NULL;
    if (!env || !*env) return LS_OK;
    if (strlen(env) > 4096) return LS_ERR(LS_ERR_RANGE, "$%s is over 4096 bytes", var);
    *token = ls_strndup(env, strlen(env));
    return LS_OK;
}

ls_status ls_wire_read_token(const char *path, char **token) {
    char fallback[4096];
    if (!path) {
        LS_CHECK(ls_wire_env_token("LONGSEQ_TOKEN", token));
        if (*token) return LS_OK;
        snprintf(fallback, sizeof fallback, "%s/token", ls_home_dir());
        path = fallback;
    }
    LS_CHECK(token_file_private(path));
    ls_buf b = {0};
    ls_status rc = ls_file_read_all(path, 4097, &b);
    if (rc != LS_OK) {
        ls_buf_free(&b);
        ls_err_prefix("the token file: ");
        return rc;
    }
    while (b.len && strchr(" \t\r\n", b.data[b.len - 1])) b.data[--b.len] = 0;
    if (!b.len || b.len > 4096 || strlen(b.data) != b.len) {
        ls_buf_free(&b);
        return LS_ERR(LS_ERR_INVALID, "the token file %s is empty, over 4096 bytes or has a NUL byte", path);
    }
    *token = b.data;
    return LS_OK;
}

bool ls_wire_token_equal_n(const char *expected, const char *given, size_t g) {
    size_t n = strlen(expected);
    unsigned diff = n != g;
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)expected[i] ^ (unsigned char)(i < g ? given[i] : 0);
    return diff == 0;
}

bool ls_wire_token_equal(const char *expected, const char *given) {
    return ls_wire_token_equal_n(expected, given, strnlen(given, strlen(expected) + 1));
}

ls_status ls_wire_new_token(char hex[65]) {
    uint8_t r[32];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) return LS_ERR(LS_ERR_IO, "getrandom: %s", strerror(errno));
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", r[i]);
    return LS_OK;
}

ls_status ls_wire_write_new_token(const char *path) {
    char hex[65];
    LS_CHECK(ls_wire_new_token(hex));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return LS_ERR(LS_ERR_IO, "cannot create the token file %s: %s", path, strerror(errno));
    bool ok = write(fd, hex, 64) == 64 && write(fd, "\n", 1) == 1;
    close(fd);
    return ok ? LS_OK : LS_ERR(LS_ERR_IO, "cannot write the token file %s", path);
}

// --- sockets ----------------------------------------------------------------------------------

ls_status ls_net_split(const char *addr, char *host, size_t cap, int *port) {
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr) return LS_ERR(LS_ERR_INVALID, "address \"%s\" is not HOST:PORT", addr);
    const char *h = addr, *he = colon;
    if (*h == '[' && he[-1] == ']') h++, he--;
    if ((size_t)(he - h) >= cap) return LS_ERR(LS_ERR_INVALID, "the host in \"%s\" is too long", addr);
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 0 || p > 65535)
        return LS_ERR(LS_ERR_INVALID, "the port in \"%s\" is not a number from 0 to 65535", addr);
    memcpy(host, h, (size_t)(he - h));
    host[he - h] = 0;
    *port = (int)p;
    return LS_OK;
}

static ls_status resolve(const char *addr, bool passive, struct addrinfo **out) {
    char host[256], port[8];
    int p = 0;
    LS_CHECK(ls_net_split(addr, host, sizeof host, &p));
    snprintf(port, sizeof port, "%d", p);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0};
    int e = getaddrinfo(host, port, &hints, out);
    return e ? LS_ERR(LS_ERR_INVALID, "cannot resolve \"%s\": %s", host, gai_strerror(e)) : LS_OK;
}

ls_status ls_net_listen(const char *addr, int backlog, int *fd_out, int *port_out) {
    struct addrinfo *ai;
    LS_CHECK(resolve(addr, true, &ai));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    ls_status rc = LS_OK;
    if (fd < 0) rc = LS_ERR(LS_ERR_IO, "socket: %s", strerror(errno));
    else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) || bind(fd, ai->ai_addr, ai->ai_addrlen) ||
             listen(fd, backlog))
        rc = LS_ERR(LS_ERR_IO, "cannot listen on %s: %s", addr, strerror(errno));
    freeaddrinfo(ai);
    if (rc != LS_OK) {
        if (fd >= 0) close(fd);
        return rc;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    if (port_out)
        *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return LS_OK;
}

ls_status ls_net_connect(const char *addr, int timeout_ms, int *fd_out) {
    struct addrinfo *ai;
    LS_CHECK(resolve(addr, false, &ai));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) {
        freeaddrinfo(ai);
        return LS_ERR(LS_ERR_IO, "socket: %s", strerror(errno));
    }
    double deadline = ls_time_ms() + timeout_ms;
    int e;
    while ((e = connect(fd, ai->ai_addr, ai->ai_addrlen)) != 0 && (errno == ECONNREFUSED || errno == EINTR) &&
           ls_time_ms() < deadline) {
        close(fd); // a refused socket cannot be reused: try again with a fresh one until the deadline
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        usleep(100000);
    }
    freeaddrinfo(ai);
    if (e != 0) {
        int err = errno;
        close(fd);
        return LS_ERR(LS_ERR_IO, "cannot connect to %s: %s", addr, strerror(err));
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *fd_out = fd;
    return LS_OK;
}

ls_status ls_wire_send(int fd, const ProtobufCMessage *m) {
    ls_buf b = {0};
    ls_frame_append(&b, m);
    size_t off = 0;
    while (off < b.len) {
        ssize_t k = send(fd, b.data + off, b.len - off, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            ls_buf_free(&b);
            return LS_ERR(LS_ERR_IO, "the connection closed while sending: %s", strerror(errno));
        }
        off += (size_t)k;
    }
    ls_buf_free(&b);
    return LS_OK;
}

// Reads exactly n bytes, waiting at most until the deadline (< 0: none).
static ls_status read_exact(int fd, uint8_t *p, size_t n, double deadline) {
    for (size_t off = 0; off < n;) {
        if (deadline >= 0) {
            int left = (int)(deadline - ls_time_ms());
            struct pollfd pf = {fd, POLLIN, 0};
            int r = left > 0 ? poll(&pf, 1, left) : 0;
            if (r < 0 && errno == EINTR) continue;
            if (r == 0) return LS_ERR(LS_ERR_IO, "no answer in time (timed out)");
        }
        ssize_t k = recv(fd, p + off, n - off, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k == 0) return LS_ERR(LS_ERR_IO, "the connection was closed by the other side");
        if (k < 0) return LS_ERR(LS_ERR_IO, "the connection failed: %s", strerror(errno));
        off += (size_t)k;
    }
    return LS_OK;
}

ls_status ls_wire_recv(int fd, size_t max, int timeout_ms, ls_buf *body) {
    double deadline = timeout_ms < 0 ? -1 : ls_time_ms() + timeout_ms;
    uint8_t h[LS_FRAME_HEADER];
    LS_CHECK(read_exact(fd, h, sizeof h, deadline));
    bool ready;
    size_t len = 0;
    LS_CHECK(ls_frame_scan(h, sizeof h, max, &ready, &len));
    body->len = 0;
    if (body->cap < len + 1) {
        body->data = ls_realloc(body->data, len + 1);
        body->cap = len + 1;
    }
    LS_CHECK(read_exact(fd, (uint8_t *)body->data, len, deadline));
    body->len = len;
    body->data[len] = 0;
    return LS_OK;
}
