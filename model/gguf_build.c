// gguf_build.c — writes GGUF metadata images for assembled handles (ls_gguf_assemble): the
// header and key/values laid out exactly as in a file, so the reader's own validation runs
// on them. Docs: docs/formats.md §1.5. Tests: tests/unit/test_gguf.c (assembled
// handles), tests/oracle/test_hf.py (checkpoints presented through it).
#include "ls_gguf.h"

#include <string.h>

static void raw(ls_gguf_meta *m, const void *p, size_t n) { ls_buf_append(&m->kv, p, n); }

static void key_and_type(ls_gguf_meta *m, const char *key, ls_gguf_vtype t) {
    uint64_t len = strlen(key);
    uint32_t type = (uint32_t)t;
    raw(m, &len, 8);
    raw(m, key, len);
    raw(m, &type, 4);
    m->n_kv++;
}

void ls_gguf_meta_u32(ls_gguf_meta *m, const char *key, uint32_t v) {
    key_and_type(m, key, LS_GGUF_U32);
    raw(m, &v, 4);
}

void ls_gguf_meta_i32(ls_gguf_meta *m, const char *key, int32_t v) {
    key_and_type(m, key, LS_GGUF_I32);
    raw(m, &v, 4);
}

void ls_gguf_meta_f32(ls_gguf_meta *m, const char *key, float v) {
    key_and_type(m, key, LS_GGUF_F32);
    raw(m, &v, 4);
}

void ls_gguf_meta_bool(ls_gguf_meta *m, const char *key, bool v) {
    uint8_t b = v;
    key_and_type(m, key, LS_GGUF_BOOL);
    raw(m, &b, 1);
}

static void str_value(ls_gguf_meta *m, const char *v, uint64_t len) {
    raw(m, &len, 8);
    raw(m, v, len);
}

void ls_gguf_meta_str(ls_gguf_meta *m, const char *key, const char *v, size_t len) {
    key_and_type(m, key, LS_GGUF_STRING);
    str_value(m, v, len);
}

void ls_gguf_meta_strs(ls_gguf_meta *m, const char *key, const char *const *v, const size_t *len, uint64_t n) {
    uint32_t et = LS_GGUF_STRING;
    key_and_type(m, key, LS_GGUF_ARRAY);
    raw(m, &et, 4);
    raw(m, &n, 8);
    for (uint64_t i = 0; i < n; i++) str_value(m, v[i], len[i]);
}

void ls_gguf_meta_arr(ls_gguf_meta *m, const char *key, ls_gguf_vtype t, const void *v, uint64_t n) {
    static const uint8_t size[LS_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    LS_ASSERT(t < LS_GGUF_VTYPE_COUNT && size[t]);
    uint32_t et = (uint32_t)t;
    key_and_type(m, key, LS_GGUF_ARRAY);
    raw(m, &et, 4);
    raw(m, &n, 8);
    raw(m, v, n * size[t]);
}

void ls_gguf_meta_copy(ls_gguf_meta *m, const ls_gguf_t *src, int64_t i) {
    key_and_type(m, ls_gguf_kv_key(src, i), ls_gguf_kv_type(src, i));
    ls_str v = ls_gguf_kv_raw(src, i);
    raw(m, v.ptr, v.len);
}

void ls_gguf_meta_finish(ls_gguf_meta *m, ls_buf *image) {
    uint32_t version = 3;
    uint64_t n_tensors = 0;
    *image = (ls_buf){0};
    ls_buf_append(image, "GGUF", 4);
    ls_buf_append(image, &version, 4);
    ls_buf_append(image, &n_tensors, 8);
    ls_buf_append(image, &m->n_kv, 8);
    if (m->kv.len) ls_buf_append(image, m->kv.data, m->kv.len);
    ls_buf_free(&m->kv);
    *m = (ls_gguf_meta){0};
}
