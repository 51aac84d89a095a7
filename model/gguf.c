// gguf.c — GGUF v2/v3 reader: mmap, validate everything once, then serve metadata and tensor
// views without further checks. Layout: header, key/values, tensor infos, padding to the
// alignment, data. Every read goes through a bounds-checked cursor; every size is computed
// with overflow checks; allocations are bounded by the file size before they happen.
// Docs: docs/formats.md §1. Tests: tests/unit/test_gguf.c, tests/fuzz/fuzz_gguf.c.
#include "ls_gguf.h"

#include <stdlib.h>
#include <string.h>

#define GGUF_MAGIC 0x46554747u // "GGUF" read as little-endian u32
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_NAME 64u // ggml's GGML_MAX_NAME: names must be shorter
#define GGUF_MAX_DIMS 4u

typedef struct gguf_kv {
    char *key;
    ls_gguf_vtype type;
    const uint8_t *val; // scalar or string: the value; array: see arr
    ls_gguf_arr arr;
} gguf_kv;

struct ls_gguf {
    ls_mapped_file file; // fd < 0 and data borrowed when opened from memory
    const uint8_t *data;
    uint64_t size;
    uint32_t version, alignment;
    uint64_t data_offset;
    int64_t n_kv, n_tensors;
    gguf_kv *kv;
    ls_gguf_tensor *tensors;
    ls_strmap *kv_index, *tensor_index;
    // Assembled handles (ls_gguf_assemble): resources released with the handle, last first.
    struct gguf_keep { void *ctx; void (*release)(void *ctx); } *keeps;
    int64_t n_keeps;
    ls_buf meta; // the owned metadata image
};

// --- bounds-checked cursor ----------------------------------------------------------------

typedef struct cursor {
    const uint8_t *p;
    uint64_t pos, size;
} cursor;

static uint64_t remaining(const cursor *c) { return c->size - c->pos; }

static ls_status need(cursor *c, uint64_t n, const char *what) {
    if (n > remaining(c))
        return LS_ERR(LS_ERR_FORMAT,
                      "GGUF truncated: %s needs %llu bytes at offset %llu but the file has %llu",
                      what, (unsigned long long)n, (unsigned long long)c->pos,
                      (unsigned long long)c->size);
    return LS_OK;
}

static ls_status read_bytes(cursor *c, void *dst, uint64_t n, const char *what) {
    LS_CHECK(need(c, n, what));
    memcpy(dst, c->p + c->pos, n);
    c->pos += n;
    return LS_OK;
}

static ls_status read_u32(cursor *c, uint32_t *v, const char *what) {
    return read_bytes(c, v, 4, what);
}
static ls_status read_u64(cursor *c, uint64_t *v, const char *what) {
    return read_bytes(c, v, 8, what);
}

// A length-prefixed string; returns a pointer into the mapping.
static ls_status read_str(cursor *c, ls_str *s, const char *what) {
    uint64_t len;
    LS_CHECK(read_u64(c, &len, what));
    if (len > remaining(c))
        return LS_ERR(LS_ERR_FORMAT,
                      "GGUF %s at offset %llu claims %llu bytes but only %llu remain", what,
                      (unsigned long long)(c->pos - 8), (unsigned long long)len,
                      (unsigned long long)remaining(c));
    s->ptr = (const char *)c->p + c->pos;
    s->len = len;
    c->pos += len;
    return LS_OK;
}

static const uint32_t g_vsize[LS_GGUF_VTYPE_COUNT] = {
    [LS_GGUF_U8] = 1, [LS_GGUF_I8] = 1, [LS_GGUF_U16] = 2, [LS_GGUF_I16] = 2,
    [LS_GGUF_U32] = 4, [LS_GGUF_I32] = 4, [LS_GGUF_F32] = 4, [LS_GGUF_BOOL] = 1,
    [LS_GGUF_U64] = 8, [LS_GGUF_I64] = 8, [LS_GGUF_F64] = 8,
};

const char *ls_gguf_vtype_name(ls_gguf_vtype t) {
    static const char *names[LS_GGUF_VTYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64",
        "f64"};
    return (unsigned)t < LS_GGUF_VTYPE_COUNT ? names[t] : "invalid";
}

// --- parsing ------------------------------------------------------------------------------

static ls_status parse_header(ls_gguf_t *g, cursor *c) {
    uint32_t magic;
    LS_CHECK(read_u32(c, &magic, "the magic number"));
    if (magic != GGUF_MAGIC)
        return LS_ERR(LS_ERR_FORMAT, "not a GGUF file: magic is %02x %02x %02x %02x, expected 47 47 55 46 (\"GGUF\")",
                      c->p[0], c->p[1], c->p[2], c->p[3]);
    LS_CHECK(read_u32(c, &g->version, "the version"));
    if (g->version != 0 && (g->version & 0xFFFFu) == 0)
        return LS_ERR(LS_ERR_UNSUPPORTED,
                      "GGUF file is big-endian (version reads as 0x%08x); only little-endian files are supported",
                      g->version);
    if (g->version == 1)
        return LS_ERR(LS_ERR_UNSUPPORTED, "GGUF version 1 is not supported (only 2 and 3)");
    if (g->version != 2 && g->version != 3)
        return LS_ERR(LS_ERR_UNSUPPORTED, "unknown GGUF version %u (only 2 and 3 are supported)",
                      g->version);
    uint64_t n_tensors, n_kv;
    LS_CHECK(read_u64(c, &n_tensors, "the tensor count"));
    LS_CHECK(read_u64(c, &n_kv, "the key/value count"));
    // Each key/value takes at least 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes and
    // each tensor info at least 8 + 1 + 4 + 8 + 4 + 8: bound the counts before allocating.
    if (n_kv > remaining(c) / 14)
        return LS_ERR(LS_ERR_FORMAT, "GGUF claims %llu key/value pairs, impossible in a %llu-byte file",
                      (unsigned long long)n_kv, (unsigned long long)c->size);
    if (n_tensors > remaining(c) / 33)
        return LS_ERR(LS_ERR_FORMAT, "GGUF claims %llu tensors, impossible in a %llu-byte file",
                      (unsigned long long)n_tensors, (unsigned long long)c->size);
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    return LS_OK;
}

static ls_status parse_array(cursor *c, gguf_kv *kv) {
    uint32_t et;
    uint64_t count;
    LS_CHECK(read_u32(c, &et, "an array element type"));
    LS_CHECK(read_u64(c, &count, "an array length"));
    if (et >= LS_GGUF_VTYPE_COUNT)
        return LS_ERR(LS_ERR_FORMAT, "key '%s': array element type %u is not a GGUF type", kv->key, et);
    if (et == LS_GGUF_ARRAY)
        return LS_ERR(LS_ERR_FORMAT, "key '%s': nested arrays are not allowed", kv->key);
    kv->arr = (ls_gguf_arr){.type = (ls_gguf_vtype)et, .count = count, .data = c->p + c->pos};
    if (et != LS_GGUF_STRING) {
        uint64_t bytes;
        if (!ls_mul_u64(count, g_vsize[et], &bytes) || bytes > remaining(c))
            return LS_ERR(LS_ERR_FORMAT,
                          "key '%s': array of %llu %s elements does not fit in the %llu bytes left",
                          kv->key, (unsigned long long)count, ls_gguf_vtype_name(et),
                          (unsigned long long)remaining(c));
        c->pos += bytes;
        return LS_OK;
    }
    if (count > remaining(c) / 8)
        return LS_ERR(LS_ERR_FORMAT, "key '%s': array of %llu strings cannot fit in the %llu bytes left",
                      kv->key, (unsigned long long)count, (unsigned long long)remaining(c));
    uint64_t *offs = ls_malloc((count ? count : 1) * sizeof *offs);
    kv->arr.str_offs = offs;
    uint64_t start = c->pos;
    for (uint64_t i = 0; i < count; i++) {
        offs[i] = c->pos - start;
        ls_str s;
        LS_CHECK(read_str(c, &s, "an array string"));
    }
    return LS_OK;
}

static ls_status parse_kv(ls_gguf_t *g, cursor *c, int64_t i) {
    gguf_kv *kv = &g->kv[i];
    ls_str key = {0};
    LS_CHECK(read_str(c, &key, "a metadata key"));
    if (key.len == 0) return LS_ERR(LS_ERR_FORMAT, "metadata key #%lld is empty", (long long)i);
    if (memchr(key.ptr, 0, key.len))
        return LS_ERR(LS_ERR_FORMAT, "metadata key #%lld contains a NUL byte", (long long)i);
    kv->key = ls_strndup(key.ptr, key.len);
    if (!ls_strmap_put(g->kv_index, key.ptr, key.len, i))
        return LS_ERR(LS_ERR_FORMAT, "duplicate metadata key '%s'", kv->key);
    uint32_t t;
    LS_CHECK(read_u32(c, &t, "a value type"));
    if (t >= LS_GGUF_VTYPE_COUNT)
        return LS_ERR(LS_ERR_FORMAT, "key '%s' has value type %u, which is not a GGUF type", kv->key, t);
    kv->type = (ls_gguf_vtype)t;
    kv->val = c->p + c->pos;
    if (t == LS_GGUF_ARRAY) return parse_array(c, kv);
    if (t == LS_GGUF_STRING) {
        ls_str s;
        return read_str(c, &s, "a string value");
    }
    LS_CHECK(need(c, g_vsize[t], "a metadata value"));
    c->pos += g_vsize[t];
    return LS_OK;
}

static ls_status read_alignment(ls_gguf_t *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = ls_gguf_find_kv(g, "general.alignment");
    if (i < 0) return LS_OK;
    if (g->kv[i].type != LS_GGUF_U32)
        return LS_ERR(LS_ERR_FORMAT, "general.alignment must be u32, found %s",
                      ls_gguf_vtype_name(g->kv[i].type));
    uint32_t a;
    memcpy(&a, g->kv[i].val, 4);
    if (a == 0 || (a & (a - 1)))
        return LS_ERR(LS_ERR_FORMAT, "general.alignment %u is not a power of two", a);
    g->alignment = a;
    return LS_OK;
}

// Checks the type id of a tensor whose name and shape are set, and sets its type and nbytes.
static ls_status tensor_type_and_size(ls_gguf_tensor *t, uint32_t type, uint64_t n_elem) {
    const ls_dtype_info *ti = ls_dtype_get(type);
    if (!ti) return LS_ERR(LS_ERR_FORMAT, "tensor '%s' has unknown ggml type %u", t->name, type);
    t->type = (ls_dtype)type;
    if (t->ne[0] % ti->block)
        return LS_ERR(LS_ERR_FORMAT, "tensor '%s': row length %lld is not a multiple of %s's block of %u",
                      t->name, (long long)t->ne[0], ti->name, ti->block);
    uint64_t row;
    if (!ls_dtype_row_bytes(t->type, (uint64_t)t->ne[0], &row) ||
        !ls_mul_u64(row, n_elem / (uint64_t)t->ne[0], &t->nbytes))
        return LS_ERR(LS_ERR_FORMAT, "tensor '%s': byte size overflows", t->name);
    return LS_OK;
}

static ls_status parse_tensor_info(ls_gguf_t *g, cursor *c, int64_t i) {
    ls_gguf_tensor *t = &g->tensors[i];
    ls_str name = {0};
    LS_CHECK(read_str(c, &name, "a tensor name"));
    if (name.len >= GGUF_MAX_NAME)
        return LS_ERR(LS_ERR_FORMAT, "tensor #%lld has a %llu-byte name (the limit is %u)",
                      (long long)i, (unsigned long long)name.len, GGUF_MAX_NAME - 1);
    if (memchr(name.ptr, 0, name.len))
        return LS_ERR(LS_ERR_FORMAT, "tensor #%lld name contains a NUL byte", (long long)i);
    t->name = ls_strndup(name.ptr, name.len);
    if (!ls_strmap_put(g->tensor_index, name.ptr, name.len, i))
        return LS_ERR(LS_ERR_FORMAT, "duplicate tensor name '%s'", t->name);
    LS_CHECK(read_u32(c, &t->n_dims, "a tensor's dimension count"));
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return LS_ERR(LS_ERR_FORMAT, "tensor '%s' has %u dimensions (1 to %u allowed)", t->name,
                      t->n_dims, GGUF_MAX_DIMS);
    uint64_t n_elem = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if (d < t->n_dims) LS_CHECK(read_u64(c, &ne, "a tensor dimension"));
        if (ne == 0)
            return LS_ERR(LS_ERR_FORMAT, "tensor '%s' has size 0 in dimension %u", t->name, d);
        if (ne > (uint64_t)INT64_MAX || !ls_mul_u64(n_elem, ne, &n_elem) || n_elem > (uint64_t)INT64_MAX)
            return LS_ERR(LS_ERR_FORMAT, "tensor '%s' has an absurd shape (dimension %u is %llu)",
                          t->name, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
    }
    uint32_t type;
    LS_CHECK(read_u32(c, &type, "a tensor type"));
    LS_CHECK(tensor_type_and_size(t, type, n_elem));
    LS_CHECK(read_u64(c, &t->offset, "a tensor offset"));
    if (t->offset % g->alignment)
        return LS_ERR(LS_ERR_FORMAT, "tensor '%s': offset %llu is not a multiple of the alignment %u",
                      t->name, (unsigned long long)t->offset, g->alignment);
    return LS_OK;
}

static int cmp_by_offset(const void *a, const void *b, void *ctx) {
    const ls_gguf_tensor *ts = ctx;
    uint64_t x = ts[*(const int64_t *)a].offset, y = ts[*(const int64_t *)b].offset;
    return x < y ? -1 : x > y;
}

// Places the data section, checks that every tensor lies inside the file and that no two
// tensors overlap.
static ls_status place_tensors(ls_gguf_t *g, cursor *c) {
    uint64_t start = c->pos + (g->alignment - c->pos % g->alignment) % g->alignment;
    g->data_offset = start;
    if (g->n_tensors == 0) return LS_OK;
    if (start > g->size)
        return LS_ERR(LS_ERR_FORMAT, "GGUF truncated: the data section would start at %llu, past the end (%llu)",
                      (unsigned long long)start, (unsigned long long)g->size);
    for (int64_t i = 0; i < g->n_tensors; i++) {
        ls_gguf_tensor *t = &g->tensors[i];
        uint64_t end;
        if (!ls_add_u64(t->offset, t->nbytes, &end) || end > g->size - start)
            return LS_ERR(LS_ERR_FORMAT,
                          "tensor '%s' (%llu bytes at data offset %llu) extends past the end of the file (data section is %llu bytes)",
                          t->name, (unsigned long long)t->nbytes, (unsigned long long)t->offset,
                          (unsigned long long)(g->size - start));
        t->data = g->data + start + t->offset;
    }
    int64_t *order = ls_malloc((size_t)g->n_tensors * sizeof *order);
    for (int64_t i = 0; i < g->n_tensors; i++) order[i] = i;
    qsort_r(order, (size_t)g->n_tensors, sizeof *order, cmp_by_offset, g->tensors);
    ls_status rc = LS_OK;
    for (int64_t k = 1; k < g->n_tensors && rc == LS_OK; k++) {
        const ls_gguf_tensor *a = &g->tensors[order[k - 1]], *b = &g->tensors[order[k]];
        if (a->offset + a->nbytes > b->offset)
            rc = LS_ERR(LS_ERR_FORMAT, "tensors '%s' and '%s' overlap in the data section", a->name, b->name);
    }
    ls_free(order);
    return rc;
}

static ls_status parse(ls_gguf_t *g) {
    cursor c = {.p = g->data, .pos = 0, .size = g->size};
    LS_CHECK(parse_header(g, &c));
    g->kv = ls_calloc((size_t)g->n_kv + 1, sizeof *g->kv);
    g->tensors = ls_calloc((size_t)g->n_tensors + 1, sizeof *g->tensors);
    g->kv_index = ls_strmap_init((size_t)g->n_kv);
    g->tensor_index = ls_strmap_init((size_t)g->n_tensors);
    for (int64_t i = 0; i < g->n_kv; i++) LS_CHECK(parse_kv(g, &c, i));
    LS_CHECK(read_alignment(g));
    for (int64_t i = 0; i < g->n_tensors; i++) LS_CHECK(parse_tensor_info(g, &c, i));
    LS_CHECK(place_tensors(g, &c));
    return LS_OK;
}

static ls_status open_common(ls_gguf_t *g, ls_gguf_t **out) {
    ls_status rc = parse(g);
    if (rc != LS_OK) {
        ls_gguf_free(g);
        return rc;
    }
    *out = g;
    return LS_OK;
}

ls_status ls_gguf_open_memory(const void *data, size_t size, ls_gguf_t **out) {
    *out = NULL;
    ls_gguf_t *g = ls_calloc(1, sizeof *g);
    g->file.fd = -1;
    g->data = data;
    g->size = size;
    return open_common(g, out);
}

ls_status ls_gguf_open(const char *path, ls_gguf_t **out) {
    *out = NULL;
    ls_mapped_file f;
    LS_CHECK(ls_file_map(path, &f));
    ls_gguf_t *g = ls_calloc(1, sizeof *g);
    g->file = f;
    g->data = f.data;
    g->size = f.size;
    ls_status rc = open_common(g, out);
    if (rc != LS_OK) ls_err_prefix("%s: ", path);
    return rc;
}

void ls_gguf_free(ls_gguf_t *g) {
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv && g->kv; i++) {
        ls_free(g->kv[i].key);
        ls_free((void *)g->kv[i].arr.str_offs);
    }
    for (int64_t i = 0; i < g->n_tensors && g->tensors; i++) ls_free((void *)g->tensors[i].name);
    ls_free(g->kv);
    ls_free(g->tensors);
    ls_strmap_free(g->kv_index);
    ls_strmap_free(g->tensor_index);
    if (g->file.fd >= 0) ls_file_unmap(&g->file);
    for (int64_t i = g->n_keeps - 1; i >= 0; i--) g->keeps[i].release(g->keeps[i].ctx);
    ls_free(g->keeps);
    ls_buf_free(&g->meta);
    ls_free(g);
}

ls_str ls_gguf_kv_raw(const ls_gguf_t *g, int64_t i) {
    LS_ASSERT(i >= 0 && i < g->n_kv);
    const gguf_kv *kv = &g->kv[i];
    uint64_t len;
    if (kv->type == LS_GGUF_STRING) {
        memcpy(&len, kv->val, 8);
        len += 8;
    } else if (kv->type != LS_GGUF_ARRAY) {
        len = g_vsize[kv->type];
    } else if (kv->arr.type != LS_GGUF_STRING) {
        len = 12 + kv->arr.count * g_vsize[kv->arr.type];
    } else {
        len = 12;
        if (kv->arr.count) {
            uint64_t last = kv->arr.str_offs[kv->arr.count - 1], slen;
            memcpy(&slen, kv->arr.data + last, 8);
            len += last + 8 + slen;
        }
    }
    return (ls_str){(const char *)kv->val, len};
}

// --- assembled handles --------------------------------------------------------------------

void ls_gguf_keep(ls_gguf_t *g, void *ctx, void (*release)(void *ctx)) {
    g->keeps = ls_realloc(g->keeps, (size_t)(g->n_keeps + 1) * sizeof *g->keeps);
    g->keeps[g->n_keeps++] = (struct gguf_keep){ctx, release};
}

static ls_status add_tensor(ls_gguf_t *g, const ls_gguf_tensor *src, int64_t i) {
    ls_gguf_tensor *t = &g->tensors[i];
    size_t len = strlen(src->name);
    if (len == 0 || len >= GGUF_MAX_NAME)
        return LS_ERR(LS_ERR_FORMAT, "tensor name '%s' is empty or longer than %u bytes", src->name, GGUF_MAX_NAME - 1);
    t->name = ls_strndup(src->name, len);
    if (!ls_strmap_put(g->tensor_index, t->name, len, i)) return LS_ERR(LS_ERR_FORMAT, "duplicate tensor name '%s'", t->name);
    t->n_dims = src->n_dims;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return LS_ERR(LS_ERR_FORMAT, "tensor '%s' has %u dimensions (1 to %u allowed)", t->name, t->n_dims, GGUF_MAX_DIMS);
    uint64_t n_elem = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = d < t->n_dims ? src->ne[d] : 1;
        if (t->ne[d] <= 0 || !ls_mul_u64(n_elem, (uint64_t)t->ne[d], &n_elem) || n_elem > (uint64_t)INT64_MAX)
            return LS_ERR(LS_ERR_FORMAT, "tensor '%s' has an invalid shape (dimension %u is %lld)", t->name, d,
                          (long long)t->ne[d]);
    }
    LS_CHECK(tensor_type_and_size(t, (uint32_t)src->type, n_elem));
    if (!src->data) return LS_ERR(LS_ERR_INVALID, "tensor '%s' has no data", t->name);
    t->data = src->data;
    return LS_OK;
}

ls_status ls_gguf_assemble(ls_buf *meta, const ls_gguf_tensor *tensors, int64_t n, ls_gguf_t **out) {
    *out = NULL;
    ls_gguf_t *g = ls_calloc(1, sizeof *g);
    g->file.fd = -1;
    g->meta = *meta;
    *meta = (ls_buf){0};
    g->data = (const uint8_t *)g->meta.data;
    g->size = g->meta.len;
    ls_status rc = parse(g);
    if (rc == LS_OK && g->n_tensors)
        rc = LS_ERR(LS_ERR_INVALID, "an assembled GGUF's metadata image must hold no tensors");
    if (rc == LS_OK) {
        ls_free(g->tensors);
        ls_strmap_free(g->tensor_index);
        g->tensors = ls_calloc((size_t)n + 1, sizeof *g->tensors);
        g->tensor_index = ls_strmap_init((size_t)n);
        for (int64_t i = 0; i < n && rc == LS_OK; i++) {
            g->n_tensors = i + 1; // freed with the handle even when tensor i fails
            rc = add_tensor(g, &tensors[i], i);
        }
    }
    if (rc != LS_OK) {
        ls_gguf_free(g);
        return rc;
    }
    *out = g;
    return LS_OK;
}

// --- accessors ----------------------------------------------------------------------------

uint32_t ls_gguf_version(const ls_gguf_t *g) { return g->version; }
uint32_t ls_gguf_alignment(const ls_gguf_t *g) { return g->alignment; }
uint64_t ls_gguf_data_offset(const ls_gguf_t *g) { return g->data_offset; }
uint64_t ls_gguf_file_size(const ls_gguf_t *g) { return g->size; }
int64_t ls_gguf_n_kv(const ls_gguf_t *g) { return g->n_kv; }
int64_t ls_gguf_n_tensors(const ls_gguf_t *g) { return g->n_tensors; }

const char *ls_gguf_kv_key(const ls_gguf_t *g, int64_t i) {
    LS_ASSERT(i >= 0 && i < g->n_kv);
    return g->kv[i].key;
}

ls_gguf_vtype ls_gguf_kv_type(const ls_gguf_t *g, int64_t i) {
    LS_ASSERT(i >= 0 && i < g->n_kv);
    return g->kv[i].type;
}

int64_t ls_gguf_find_kv(const ls_gguf_t *g, const char *key) {
    int64_t i;
    return ls_strmap_get(g->kv_index, key, strlen(key), &i) ? i : -1;
}

const ls_gguf_tensor *ls_gguf_tensor_at(const ls_gguf_t *g, int64_t i) {
    LS_ASSERT(i >= 0 && i < g->n_tensors);
    return &g->tensors[i];
}

const ls_gguf_tensor *ls_gguf_find_tensor(const ls_gguf_t *g, const char *name) {
    int64_t i;
    return ls_strmap_get(g->tensor_index, name, strlen(name), &i) ? &g->tensors[i] : NULL;
}

// Reads a scalar of integer type t at p as int64; false if it is not an integer type or a
// u64 that does not fit.
static bool scalar_int(ls_gguf_vtype t, const uint8_t *p, int64_t *out) {
    switch (t) {
    case LS_GGUF_U8: *out = *p; return true;
    case LS_GGUF_I8: *out = (int8_t)*p; return true;
    case LS_GGUF_U16: { uint16_t v; memcpy(&v, p, 2); *out = v; return true; }
    case LS_GGUF_I16: { int16_t v; memcpy(&v, p, 2); *out = v; return true; }
    case LS_GGUF_U32: { uint32_t v; memcpy(&v, p, 4); *out = v; return true; }
    case LS_GGUF_I32: { int32_t v; memcpy(&v, p, 4); *out = v; return true; }
    case LS_GGUF_I64: { int64_t v; memcpy(&v, p, 8); *out = v; return true; }
    case LS_GGUF_U64: {
        uint64_t v;
        memcpy(&v, p, 8);
        *out = (int64_t)v;
        return v <= (uint64_t)INT64_MAX;
    }
    default: return false;
    }
}

static ls_status find_typed(const ls_gguf_t *g, const char *key, const gguf_kv **out) {
    int64_t i = ls_gguf_find_kv(g, key);
    if (i < 0) return LS_ERR_NOT_FOUND; // absence is not an error to record
    *out = &g->kv[i];
    return LS_OK;
}

static ls_status wrong_type(const gguf_kv *kv, const char *wanted) {
    return LS_ERR(LS_ERR_FORMAT, "metadata key '%s' has type %s, expected %s", kv->key,
                  ls_gguf_vtype_name(kv->type), wanted);
}

ls_status ls_gguf_get_int(const ls_gguf_t *g, const char *key, int64_t *out) {
    const gguf_kv *kv;
    ls_status rc = find_typed(g, key, &kv);
    if (rc != LS_OK) return rc;
    if (!scalar_int(kv->type, kv->val, out)) {
        if (kv->type == LS_GGUF_U64)
            return LS_ERR(LS_ERR_FORMAT, "metadata key '%s' holds a u64 too large for this use", key);
        return wrong_type(kv, "an integer");
    }
    return LS_OK;
}

ls_status ls_gguf_get_float(const ls_gguf_t *g, const char *key, double *out) {
    const gguf_kv *kv;
    ls_status rc = find_typed(g, key, &kv);
    if (rc != LS_OK) return rc;
    if (kv->type == LS_GGUF_F32) {
        float f;
        memcpy(&f, kv->val, 4);
        *out = f;
    } else if (kv->type == LS_GGUF_F64) {
        memcpy(out, kv->val, 8);
    } else {
        return wrong_type(kv, "f32 or f64");
    }
    return LS_OK;
}

ls_status ls_gguf_get_bool(const ls_gguf_t *g, const char *key, bool *out) {
    const gguf_kv *kv;
    ls_status rc = find_typed(g, key, &kv);
    if (rc != LS_OK) return rc;
    if (kv->type != LS_GGUF_BOOL) return wrong_type(kv, "bool");
    *out = *kv->val != 0;
    return LS_OK;
}

ls_status ls_gguf_get_str(const ls_gguf_t *g, const char *key, ls_str *out) {
    const gguf_kv *kv;
    ls_status rc = find_typed(g, key, &kv);
    if (rc != LS_OK) return rc;
    if (kv->type != LS_GGUF_STRING) return wrong_type(kv, "string");
    memcpy(&out->len, kv->val, 8);
    out->ptr = (const char *)kv->val + 8;
    return LS_OK;
}

ls_status ls_gguf_get_arr(const ls_gguf_t *g, const char *key, ls_gguf_arr *out) {
    const gguf_kv *kv;
    ls_status rc = find_typed(g, key, &kv);
    if (rc != LS_OK) return rc;
    if (kv->type != LS_GGUF_ARRAY) return wrong_type(kv, "array");
    *out = kv->arr;
    return LS_OK;
}

ls_str ls_gguf_arr_str(const ls_gguf_arr *a, uint64_t i) {
    LS_ASSERT(a->type == LS_GGUF_STRING && i < a->count);
    const uint8_t *p = a->data + a->str_offs[i];
    ls_str s;
    memcpy(&s.len, p, 8);
    s.ptr = (const char *)p + 8;
    return s;
}

int64_t ls_gguf_arr_int(const ls_gguf_arr *a, uint64_t i) {
    LS_ASSERT(i < a->count);
    int64_t v = 0;
    bool ok = scalar_int(a->type, a->data + i * g_vsize[a->type], &v) || a->type == LS_GGUF_U64;
    LS_ASSERT(ok);
    return v;
}

double ls_gguf_arr_float(const ls_gguf_arr *a, uint64_t i) {
    LS_ASSERT(i < a->count && (a->type == LS_GGUF_F32 || a->type == LS_GGUF_F64));
    if (a->type == LS_GGUF_F32) {
        float f;
        memcpy(&f, a->data + i * 4, 4);
        return f;
    }
    double d;
    memcpy(&d, a->data + i * 8, 8);
    return d;
}

// --- rendering ----------------------------------------------------------------------------

static void render_str(ls_buf *out, ls_str s, size_t max) {
    ls_buf_putc(out, '"');
    for (uint64_t k = 0; k < s.len && k < max; k++) {
        unsigned char ch = (unsigned char)s.ptr[k];
        if (ch == '\n') ls_buf_append(out, "\\n", 2);
        else if (ch == '"' || ch == '\\') ls_buf_printf(out, "\\%c", ch);
        else if (ch < 0x20) ls_buf_printf(out, "\\x%02x", ch);
        else ls_buf_putc(out, (char)ch);
    }
    if (s.len > max) ls_buf_append(out, "...", 3);
    ls_buf_putc(out, '"');
}

static void render_scalar(ls_buf *out, ls_gguf_vtype t, const uint8_t *p) {
    int64_t v;
    if (t == LS_GGUF_U64) {
        uint64_t u;
        memcpy(&u, p, 8);
        ls_buf_printf(out, "%llu", (unsigned long long)u);
    } else if (scalar_int(t, p, &v)) {
        ls_buf_printf(out, "%lld", (long long)v);
    } else if (t == LS_GGUF_F32) {
        float f;
        memcpy(&f, p, 4);
        ls_buf_printf(out, "%.9g", f);
    } else if (t == LS_GGUF_F64) {
        double d;
        memcpy(&d, p, 8);
        ls_buf_printf(out, "%.17g", d);
    } else if (t == LS_GGUF_BOOL) {
        ls_buf_printf(out, "%s", *p ? "true" : "false");
    }
}

void ls_gguf_kv_render(const ls_gguf_t *g, int64_t i, int max_elems, ls_buf *out) {
    const gguf_kv *kv = &g->kv[i];
    if (kv->type == LS_GGUF_STRING) {
        ls_str s;
        memcpy(&s.len, kv->val, 8);
        s.ptr = (const char *)kv->val + 8;
        render_str(out, s, 120);
        return;
    }
    if (kv->type != LS_GGUF_ARRAY) {
        render_scalar(out, kv->type, kv->val);
        return;
    }
    const ls_gguf_arr *a = &kv->arr;
    ls_buf_printf(out, "[%s x %llu]", ls_gguf_vtype_name(a->type), (unsigned long long)a->count);
    for (uint64_t k = 0; k < a->count && k < (uint64_t)max_elems; k++) {
        ls_buf_append(out, k ? ", " : " ", k ? 2 : 1);
        if (a->type == LS_GGUF_STRING) render_str(out, ls_gguf_arr_str(a, k), 40);
        else render_scalar(out, a->type, a->data + k * g_vsize[a->type]);
    }
    if (a->count > (uint64_t)max_elems && max_elems > 0) ls_buf_append(out, ", ...", 5);
}
