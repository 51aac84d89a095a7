// ls_wire.h — the job protocol on the wire (docs/protocol.md): the messages generated from
// longseq.proto, frames (1 flags byte = 0, 4-byte big-endian length, the packed message) with
// their limits checked before anything is allocated, the bearer token, and the blocking socket
// helpers that clients and worker leaders use (the server has its own event loop).
// Tests: tests/unit/test_wire.c, tests/fuzz/fuzz_frame.c, tests/oracle/test_service.py.
#ifndef LS_WIRE_H
#define LS_WIRE_H

#include "ls_base.h"
#include "longseq.pb-c.h"

#define LS_FRAME_HEADER 5
#define LS_FRAME_MAX_DEFAULT (64u << 20) // bytes of one message, unless configured
#define LS_TOKEN_MAX 4096                // bytes of a bearer token

// --- frames -----------------------------------------------------------------------------------
// Looks at the received bytes p[0..n): *ready tells whether a whole frame is there, and then
// its message is p[5 .. 5 + *len). LS_ERR_FORMAT for a flags byte other than 0, LS_ERR_RANGE
// for a length over `max` (both with the numbers in the message).
ls_status ls_frame_scan(const uint8_t *p, size_t n, size_t max, bool *ready, size_t *len);
// Appends the frame of message m to out.
void ls_frame_append(ls_buf *out, const ProtobufCMessage *m);

// The bearer token at the start of a Request's message, read from the raw bytes before the rest
// of the message has arrived (docs/protocol.md, "The token"): protobuf encoders write fields in
// number order, so field 1, `token`, comes first. msg[0..have) are the bytes received so far of
// a message of msg_len bytes. *ready false: more bytes are needed; else token[0..*len) points
// into msg. LS_ERR_INVALID when the message does not start with field 1 (tag 0x0a), or its
// length is over LS_TOKEN_MAX or past the end of the message.
ls_status ls_wire_peek_token(const uint8_t *msg, size_t have, size_t msg_len, const char **token, size_t *len,
                             bool *ready);

// Unpacks a Request / Reply; LS_ERR_FORMAT when the bytes are not one. Free with the
// generated __free_unpacked(msg, NULL).
ls_status ls_wire_unpack_request(const uint8_t *p, size_t n, Longseq__Request **out);
ls_status ls_wire_unpack_reply(const uint8_t *p, size_t n, Longseq__Reply **out);

// Whether p[0..n) is valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF);
// *bad_at: the offset of the first invalid byte.
bool ls_utf8_valid(const char *p, size_t n, size_t *bad_at);

// Appends p[0..n) to out with each byte that does not start a valid character (and each NUL)
// replaced by U+FFFD, as protobuf `string` fields must be UTF-8.
void ls_utf8_sanitize(const char *p, size_t n, ls_buf *out);

// gRPC's name of a status code ("OK", "INVALID_ARGUMENT", ...).
const char *ls_wire_code_name(int code);

// --- the bearer token -------------------------------------------------------------------------
// From the file (trailing whitespace dropped) or, when path is NULL, $LONGSEQ_TOKEN or
// $LONGSEQ_HOME/token. Empty tokens and tokens over 4096 bytes are refused, and so is a file
// that group or others may read or write (as ssh refuses such a key; the message names the
// file, its mode and `chmod 600 FILE`).
ls_status ls_wire_read_token(const char *path, char **token);
// The token in the environment variable `var`; *token NULL when it is unset or empty, and over
// 4096 bytes refused.
ls_status ls_wire_env_token(const char *var, char **token);
// Equality in time that depends only on the length of `expected`.
bool ls_wire_token_equal(const char *expected, const char *given);
// The same for given[0..len), which need not end with a NUL (bytes straight off the wire).
bool ls_wire_token_equal_n(const char *expected, const char *given, size_t len);
// A new random token: 64 hex digits (and a NUL) in hex.
ls_status ls_wire_new_token(char hex[65]);
// A new random token written to path with mode 0600.
ls_status ls_wire_write_new_token(const char *path);

// --- sockets (blocking, for clients and workers) ----------------------------------------------
// "HOST:PORT" (HOST a name or an IPv4 address; "[v6]:PORT" too).
ls_status ls_net_split(const char *addr, char *host, size_t host_cap, int *port);
// A listening TCP socket (non-blocking, SO_REUSEADDR) on addr; port 0 picks one (*port_out).
ls_status ls_net_listen(const char *addr, int backlog, int *fd, int *port_out);
ls_status ls_net_connect(const char *addr, int timeout_ms, int *fd);
// Sends a whole frame (retrying short writes).
ls_status ls_wire_send(int fd, const ProtobufCMessage *m);
// Receives one frame's message into body (replacing its contents). timeout_ms < 0: no limit.
// LS_ERR_IO with "closed" in the message when the peer closed the connection.
ls_status ls_wire_recv(int fd, size_t max, int timeout_ms, ls_buf *body);

#endif // LS_WIRE_H
