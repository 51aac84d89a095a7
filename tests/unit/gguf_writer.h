// gguf_writer.h — test-only GGUF builder: appends header fields, key/values and tensor infos
// to a byte buffer exactly as the format lays them out, so tests can write valid files and
// then break them on purpose. Header-only (static functions) for the C unit tests and fuzzer.
#ifndef LS_TEST_GGUF_WRITER_H
#define LS_TEST_GGUF_WRITER_H

#include "ls_base.h"

#include <string.h>

typedef struct gw {
    ls_buf b;
} gw;

static inline void gw_raw(gw *w, const void *p, size_t n) { ls_buf_append(&w->b, p, n); }
static inline void gw_u8(gw *w, uint8_t v) { gw_raw(w, &v, 1); }
static inline void gw_u32(gw *w, uint32_t v) { gw_raw(w, &v, 4); }
static inline void gw_u64(gw *w, uint64_t v) { gw_raw(w, &v, 8); }
static inline void gw_str(gw *w, const char *s) {
    gw_u64(w, strlen(s));
    gw_raw(w, s, strlen(s));
}
static inline void gw_header(gw *w, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    gw_raw(w, "GGUF", 4);
    gw_u32(w, version);
    gw_u64(w, n_tensors);
    gw_u64(w, n_kv);
}
static inline void gw_kv_u32(gw *w, const char *k, uint32_t v) { gw_str(w, k); gw_u32(w, 4); gw_u32(w, v); }
static inline void gw_kv_i32(gw *w, const char *k, int32_t v) { gw_str(w, k); gw_u32(w, 5); gw_u32(w, (uint32_t)v); }
static inline void gw_kv_f32(gw *w, const char *k, float v) { gw_str(w, k); gw_u32(w, 6); gw_raw(w, &v, 4); }
static inline void gw_kv_bool(gw *w, const char *k, bool v) { gw_str(w, k); gw_u32(w, 7); gw_u8(w, v); }
static inline void gw_kv_str(gw *w, const char *k, const char *v) { gw_str(w, k); gw_u32(w, 8); gw_str(w, v); }
static inline void gw_kv_u64(gw *w, const char *k, uint64_t v) { gw_str(w, k); gw_u32(w, 10); gw_u64(w, v); }
static inline void gw_kv_strs(gw *w, const char *k, const char *const *v, size_t n) {
    gw_str(w, k);
    gw_u32(w, 9);
    gw_u32(w, 8);
    gw_u64(w, n);
    for (size_t i = 0; i < n; i++) gw_str(w, v[i]);
}
static inline void gw_kv_i32s(gw *w, const char *k, const int32_t *v, size_t n) {
    gw_str(w, k);
    gw_u32(w, 9);
    gw_u32(w, 5);
    gw_u64(w, n);
    gw_raw(w, v, n * 4);
}
// A tensor info with up to 4 dims.
static inline void gw_tensor(gw *w, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset) {
    gw_str(w, name);
    gw_u32(w, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) gw_u64(w, ne[d]);
    gw_u32(w, type);
    gw_u64(w, offset);
}
static inline void gw_pad(gw *w, size_t align) {
    while (w->b.len % align) gw_u8(w, 0);
}
static inline void gw_zeros(gw *w, size_t n) {
    for (size_t i = 0; i < n; i++) gw_u8(w, 0);
}

#endif
