// mem.c — allocation that never returns NULL, growable byte buffers and int32 vectors.
// Tests: tests/unit/test_base.c.
#include "ls_base.h"

#include <stdlib.h>
#include <string.h>

static void oom(size_t n) { LS_PANIC("out of memory allocating %zu bytes", n); }

void *ls_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *ls_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) oom(count * size);
    return p;
}

void *ls_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

void *ls_aligned_alloc(size_t align, size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, align, n ? n : align) != 0) oom(n);
    return p;
}

char *ls_strndup(const char *s, size_t n) {
    char *d = ls_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

void ls_free(void *p) { free(p); }

// --- ls_buf -------------------------------------------------------------------------------

static void buf_grow(ls_buf *b, size_t need) {
    if (b->len + need + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + need + 1) cap *= 2;
    b->data = ls_realloc(b->data, cap);
    b->cap = cap;
}

void ls_buf_append(ls_buf *b, const void *p, size_t n) {
    buf_grow(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void ls_buf_putc(ls_buf *b, char c) { ls_buf_append(b, &c, 1); }

void ls_buf_clear(ls_buf *b) {
    b->len = 0;
    if (b->data) b->data[0] = 0; // a reader of data as a C string sees nothing of what was there
}

void ls_buf_printf(ls_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    buf_grow(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void ls_buf_free(ls_buf *b) {
    ls_free(b->data);
    *b = (ls_buf){0};
}

// --- ls_vec_i32 ---------------------------------------------------------------------------

void ls_vec_i32_reserve(ls_vec_i32 *v, size_t cap) {
    if (cap <= v->cap) return;
    v->data = ls_realloc(v->data, cap * sizeof *v->data);
    v->cap = cap;
}

void ls_vec_i32_push(ls_vec_i32 *v, int32_t x) {
    if (v->len == v->cap) ls_vec_i32_reserve(v, v->cap ? v->cap * 2 : 16);
    v->data[v->len++] = x;
}

void ls_vec_i32_free(ls_vec_i32 *v) {
    ls_free(v->data);
    *v = (ls_vec_i32){0};
}
