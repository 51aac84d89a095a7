// ls_gguf.h — GGUF v2/v3 reader. The file is memory-mapped and validated completely at open:
// every count, string, array and tensor extent is bounds-checked against the file size and
// every size computation is checked for overflow, so later accessors cannot read out of
// bounds. Hostile files get an LS_ERR_FORMAT / LS_ERR_UNSUPPORTED naming what is wrong.
// Format: docs/formats.md §1. Tests: tests/unit/test_gguf.c (hostile files),
// tests/fuzz/fuzz_gguf.c, tests/oracle/test_inspect.py (against gguf-py).
#ifndef LS_GGUF_H
#define LS_GGUF_H

#include "ls_base.h"

typedef struct ls_gguf ls_gguf_t;

typedef enum ls_gguf_vtype {
    LS_GGUF_U8 = 0, LS_GGUF_I8 = 1, LS_GGUF_U16 = 2, LS_GGUF_I16 = 3, LS_GGUF_U32 = 4,
    LS_GGUF_I32 = 5, LS_GGUF_F32 = 6, LS_GGUF_BOOL = 7, LS_GGUF_STRING = 8,
    LS_GGUF_ARRAY = 9, LS_GGUF_U64 = 10, LS_GGUF_I64 = 11, LS_GGUF_F64 = 12,
    LS_GGUF_VTYPE_COUNT = 13
} ls_gguf_vtype;

// A string inside the mapped file: not NUL-terminated.
typedef struct ls_str {
    const char *ptr;
    uint64_t len;
} ls_str;

// An array value: `count` elements of `type`, packed (strings each carry their length).
typedef struct ls_gguf_arr {
    ls_gguf_vtype type;
    uint64_t count;
    const uint8_t *data;      // first element
    const uint64_t *str_offs; // strings only: offset of element i's length field from data
} ls_gguf_arr;

typedef struct ls_gguf_tensor {
    const char *name; // NUL-terminated
    ls_dtype type;
    uint32_t n_dims;
    int64_t ne[4];    // ne[0] innermost; unused dimensions are 1
    uint64_t offset;  // from the start of the data section
    uint64_t nbytes;
    const void *data; // inside the mapping
} ls_gguf_tensor;

// Open and validate a file. The mapping lives until ls_gguf_free.
ls_status ls_gguf_open(const char *path, ls_gguf_t **out);
// Same, over a caller-owned buffer that must outlive the handle (fuzzing, tests).
ls_status ls_gguf_open_memory(const void *data, size_t size, ls_gguf_t **out);
void ls_gguf_free(ls_gguf_t *g);

uint32_t ls_gguf_version(const ls_gguf_t *g);
uint32_t ls_gguf_alignment(const ls_gguf_t *g);
uint64_t ls_gguf_data_offset(const ls_gguf_t *g); // file offset of the data section
uint64_t ls_gguf_file_size(const ls_gguf_t *g);

// --- key/value metadata -------------------------------------------------------------------
int64_t ls_gguf_n_kv(const ls_gguf_t *g);
const char *ls_gguf_kv_key(const ls_gguf_t *g, int64_t i);
ls_gguf_vtype ls_gguf_kv_type(const ls_gguf_t *g, int64_t i);
int64_t ls_gguf_find_kv(const ls_gguf_t *g, const char *key); // -1 when absent
const char *ls_gguf_vtype_name(ls_gguf_vtype t);

// Typed getters by key. All return LS_ERR_NOT_FOUND (without recording an error, so callers
// can fall back to defaults) when the key is absent, and LS_ERR_FORMAT naming the key and
// both types when it has the wrong type. get_int accepts any integer type and checks that
// the value fits in int64; get_float accepts f32 and f64.
ls_status ls_gguf_get_int(const ls_gguf_t *g, const char *key, int64_t *out);
ls_status ls_gguf_get_float(const ls_gguf_t *g, const char *key, double *out);
ls_status ls_gguf_get_bool(const ls_gguf_t *g, const char *key, bool *out);
ls_status ls_gguf_get_str(const ls_gguf_t *g, const char *key, ls_str *out);
ls_status ls_gguf_get_arr(const ls_gguf_t *g, const char *key, ls_gguf_arr *out);

// Element access for arrays (the index and element type are checked by LS_ASSERT: callers
// check the array's type once after ls_gguf_get_arr).
ls_str ls_gguf_arr_str(const ls_gguf_arr *a, uint64_t i);
int64_t ls_gguf_arr_int(const ls_gguf_arr *a, uint64_t i);
double ls_gguf_arr_float(const ls_gguf_arr *a, uint64_t i);

// The serialized bytes of value i as the file stores them (after the key and type).
ls_str ls_gguf_kv_raw(const ls_gguf_t *g, int64_t i);
// Appends a short human-readable rendering of value i to `out` (arrays: type, count and up to
// `max_elems` elements).
void ls_gguf_kv_render(const ls_gguf_t *g, int64_t i, int max_elems, ls_buf *out);

// --- tensors ------------------------------------------------------------------------------
int64_t ls_gguf_n_tensors(const ls_gguf_t *g);
const ls_gguf_tensor *ls_gguf_tensor_at(const ls_gguf_t *g, int64_t i);
const ls_gguf_tensor *ls_gguf_find_tensor(const ls_gguf_t *g, const char *name); // NULL if absent

// --- assembled handles (model/gguf_build.c) -----------------------------------------------
// A handle built in memory rather than read from one file: a Hugging Face checkpoint or a
// model with LoRA adapters merged is presented to the rest of the system as a GGUF whose
// metadata is a serialized image and whose tensors point into other mappings or buffers.

// Takes over meta (a GGUF image with key/values and no tensors), validates it like a file, and
// adds the tensors (name, type, n_dims, ne and data are used; shapes and types are checked).
// Tensor data must stay valid until ls_gguf_free: hand its owners over with ls_gguf_keep.
ls_status ls_gguf_assemble(ls_buf *meta, const ls_gguf_tensor *tensors, int64_t n, ls_gguf_t **out);
// release(ctx) runs when g is freed (in reverse order of the calls).
void ls_gguf_keep(ls_gguf_t *g, void *ctx, void (*release)(void *ctx));

// Writes a GGUF v3 metadata image (key/values only) for ls_gguf_assemble.
typedef struct ls_gguf_meta {
    ls_buf kv;   // the serialized key/values
    uint64_t n_kv;
} ls_gguf_meta;
void ls_gguf_meta_u32(ls_gguf_meta *m, const char *key, uint32_t v);
void ls_gguf_meta_i32(ls_gguf_meta *m, const char *key, int32_t v);
void ls_gguf_meta_f32(ls_gguf_meta *m, const char *key, float v);
void ls_gguf_meta_bool(ls_gguf_meta *m, const char *key, bool v);
void ls_gguf_meta_str(ls_gguf_meta *m, const char *key, const char *v, size_t len);
// Arrays: strings (n pointers and lengths), or n packed scalars of type t (not STRING/ARRAY).
void ls_gguf_meta_strs(ls_gguf_meta *m, const char *key, const char *const *v, const size_t *len, uint64_t n);
void ls_gguf_meta_arr(ls_gguf_meta *m, const char *key, ls_gguf_vtype t, const void *v, uint64_t n);
// Copies key/value i of src unchanged.
void ls_gguf_meta_copy(ls_gguf_meta *m, const ls_gguf_t *src, int64_t i);
// Header + key/values into *image (m is emptied).
void ls_gguf_meta_finish(ls_gguf_meta *m, ls_buf *image);

#endif // LS_GGUF_H
