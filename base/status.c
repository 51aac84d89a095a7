// status.c — error recording (first cause + trace), panics and rank-aware logging.
// The pending error is thread-local, so concurrent failures in different threads do not mix.
// Tests: tests/unit/test_base.c.
#include "ls_base.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LS_ERR_MSG_MAX 1024
#define LS_ERR_TRACE_MAX 2048

typedef struct ls_err_state {
    ls_status code;
    char msg[LS_ERR_MSG_MAX];
    char where[256];
    char trace[LS_ERR_TRACE_MAX];
    size_t trace_len;
} ls_err_state;

static _Thread_local ls_err_state g_err;
static int g_rank = -1;
static int g_level = -1;

const char *ls_status_name(ls_status s) {
    switch (s) {
    case LS_OK: return "ok";
    case LS_ERR_INVALID: return "invalid argument";
    case LS_ERR_FORMAT: return "malformed input";
    case LS_ERR_UNSUPPORTED: return "unsupported";
    case LS_ERR_IO: return "i/o error";
    case LS_ERR_NOT_FOUND: return "not found";
    case LS_ERR_RANGE: return "out of range";
    case LS_ERR_NOMEM: return "out of memory";
    case LS_ERR_INTERNAL: return "internal error";
    case LS_ERR_DEVICE: return "device error";
    case LS_ERR_CANCELLED: return "cancelled";
    }
    return "unknown status";
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

ls_status ls_err_set(ls_status code, const char *file, int line, const char *fmt, ...) {
    if (g_err.code != LS_OK) return code; // keep the first cause
    g_err.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err.msg, sizeof g_err.msg, fmt, ap);
    va_end(ap);
    snprintf(g_err.where, sizeof g_err.where, "%s:%d", base_name(file), line);
    g_err.trace_len = 0;
    g_err.trace[0] = 0;
    return code;
}

void ls_err_trace(const char *file, int line, const char *func, const char *call) {
    size_t room = sizeof g_err.trace - g_err.trace_len;
    if (room <= 1) return;
    int n = snprintf(g_err.trace + g_err.trace_len, room, "  at %s:%d %s: %s\n",
                     base_name(file), line, func, call);
    if (n > 0) g_err.trace_len += (size_t)n < room ? (size_t)n : room - 1;
}

void ls_err_prefix(const char *fmt, ...) {
    if (g_err.code == LS_OK) return;
    char pre[512], old[LS_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, g_err.msg, sizeof old);
    if (snprintf(g_err.msg, sizeof g_err.msg, "%s%s", pre, old) >= (int)sizeof g_err.msg)
        memcpy(g_err.msg + sizeof g_err.msg - 4, "...", 4); // truncated: say so
}

const char *ls_err_msg(void) { return g_err.msg; }
ls_status ls_err_code(void) { return g_err.code; }

void ls_err_clear(void) {
    g_err.code = LS_OK;
    g_err.msg[0] = 0;
    g_err.where[0] = 0;
    g_err.trace_len = 0;
    g_err.trace[0] = 0;
}

void ls_err_report(FILE *f) {
    char host[64] = "?";
    gethostname(host, sizeof host - 1);
    if (g_err.code == LS_OK) {
        fprintf(f, "longseq: error: (no message recorded)\n");
        return;
    }
    if (g_rank >= 0)
        fprintf(f, "longseq: error: %s [%s, rank %d on %s]\n", g_err.msg, g_err.where, g_rank,
                host);
    else
        fprintf(f, "longseq: error: %s [%s]\n", g_err.msg, g_err.where);
    if (ls_log_level_get() >= LS_LOG_DEBUG && g_err.trace_len) fputs(g_err.trace, f);
    ls_err_clear();
}

void ls_panic(const char *file, int line, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "longseq: panic: %s [%s:%d, rank %d]\n", msg, base_name(file), line, g_rank);
    fflush(stderr);
    abort();
}

// --- logging ------------------------------------------------------------------------------

void ls_log_set_rank(int rank) { g_rank = rank; }
int ls_log_rank(void) { return g_rank; }
void ls_log_set_level(ls_log_level level) { g_level = (int)level; }

ls_log_level ls_log_level_get(void) {
    if (g_level < 0) {
        const char *e = getenv("LS_LOG");
        g_level = LS_LOG_WARN;
        if (e && !strcmp(e, "error")) g_level = LS_LOG_ERROR;
        if (e && !strcmp(e, "info")) g_level = LS_LOG_INFO;
        if (e && !strcmp(e, "debug")) g_level = LS_LOG_DEBUG;
    }
    return (ls_log_level)g_level;
}

void ls_log(ls_log_level level, const char *fmt, ...) {
    if (level > ls_log_level_get()) return;
    static const char *names[] = {"error", "warning", "info", "debug"};
    char line[2048];
    int n = g_rank >= 0 ? snprintf(line, sizeof line, "[longseq rank %d] %s: ", g_rank, names[level])
                        : snprintf(line, sizeof line, "[longseq] %s: ", names[level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line); // one call, so lines from ranks do not interleave mid-line
}
