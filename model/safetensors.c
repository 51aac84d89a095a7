// safetensors.c — the safetensors reader (ls_safetensors.h): u64 header length, a JSON header
// (parsed with jansson, duplicate keys refused) mapping names to dtype, shape and a byte range
// of the data buffer; sharded checkpoints through the index's weight_map. Everything is
// checked before a pointer is handed out. Tests: tests/unit/test_safetensors.c.
#include "ls_safetensors.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_HEADER ((uint64_t)100 << 20) // a header beyond 100 MB is not a checkpoint
#define MAX_DIM ((int64_t)1 << 40)

struct ls_safetensors {
    ls_mapped_file *files;
    char **paths;
    int n_files;
    ls_st_tensor *t;
    int64_t n, cap;
};

static const struct {
    const char *name;
    ls_dtype type;
    uint64_t size;
} g_types[] = {{"F64", LS_F64, 8}, {"F32", LS_F32, 4}, {"F16", LS_F16, 2}, {"BF16", LS_BF16, 2},
               {"I64", LS_I64, 8}, {"I32", LS_I32, 4}, {"I16", LS_I16, 2}, {"I8", LS_I8, 1},
               {"U8", LS_I8, 1},   {"BOOL", LS_I8, 1}};

static ls_status parse_shape(const char *file, const char *name, json_t *shape, ls_st_tensor *t, uint64_t *elems) {
    if (!json_is_array(shape) || json_array_size(shape) > LS_ST_MAX_DIMS)
        return LS_ERR(LS_ERR_FORMAT, "%s: tensor '%s' has no shape array of at most %d dimensions", file, name, LS_ST_MAX_DIMS);
    t->n_dims = (int)json_array_size(shape);
    *elems = 1;
    for (int d = 0; d < t->n_dims; d++) {
        json_t *v = json_array_get(shape, (size_t)d);
        json_int_t n = json_is_integer(v) ? json_integer_value(v) : -1;
        if (n < 0 || n > MAX_DIM)
            return LS_ERR(LS_ERR_FORMAT, "%s: tensor '%s' dimension %d is not an integer in 0..2^40", file, name, d);
        t->shape[d] = n;
        if (!ls_mul_u64(*elems, (uint64_t)n, elems))
            return LS_ERR(LS_ERR_FORMAT, "%s: tensor '%s' has more elements than 64 bits count", file, name);
    }
    return LS_OK;
}

// One header entry into a tensor whose bytes lie in data[0, size).
static ls_status parse_tensor(const char *file, const char *name, json_t *v, const uint8_t *data, uint64_t size,
                              ls_st_tensor *t) {
    if (!json_is_object(v)) return LS_ERR(LS_ERR_FORMAT, "%s: entry '%s' is not an object", file, name);
    const char *dtype = json_string_value(json_object_get(v, "dtype"));
    if (!dtype) return LS_ERR(LS_ERR_FORMAT, "%s: tensor '%s' has no dtype", file, name);
    uint64_t esize = 0;
    for (size_t i = 0; i < sizeof g_types / sizeof *g_types; i++)
        if (!strcmp(dtype, g_types[i].name)) t->type = g_types[i].type, esize = g_types[i].size;
    if (!esize) return LS_ERR(LS_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype \"%s\", which longseq does not read", file, name, dtype);
    uint64_t elems = 0, bytes = 0;
    LS_CHECK(parse_shape(file, name, json_object_get(v, "shape"), t, &elems));
    if (!ls_mul_u64(elems, esize, &bytes)) return LS_ERR(LS_ERR_FORMAT, "%s: tensor '%s' is too large", file, name);
    json_t *off = json_object_get(v, "data_offsets");
    json_t *b = json_array_get(off, 0), *e = json_array_get(off, 1);
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(b) || !json_is_integer(e))
        return LS_ERR(LS_ERR_FORMAT, "%s: tensor '%s' has no data_offsets [begin, end]", file, name);
    json_int_t begin = json_integer_value(b), end = json_integer_value(e);
    if (begin < 0 || end < begin || (uint64_t)end > size)
        return LS_ERR(LS_ERR_FORMAT, "%s: tensor '%s' has bytes [%lld, %lld) outside the %llu-byte data buffer", file,
                      name, (long long)begin, (long long)end, (unsigned long long)size);
    if ((uint64_t)(end - begin) != bytes)
        return LS_ERR(LS_ERR_FORMAT, "%s: tensor '%s' has %lld bytes but its shape and dtype need %llu", file, name,
                      (long long)(end - begin), (unsigned long long)bytes);
    t->name = ls_strndup(name, strlen(name));
    t->data = data + begin;
    t->bytes = bytes;
    return LS_OK;
}

static int by_address(const void *a, const void *b) {
    const ls_st_tensor *x = *(ls_st_tensor *const *)a, *y = *(ls_st_tensor *const *)b;
    return (const uint8_t *)x->data < (const uint8_t *)y->data ? -1 : (const uint8_t *)x->data > (const uint8_t *)y->data;
}

// Tensors [first, st->n) of one file must not share bytes.
static ls_status check_overlaps(ls_safetensors_t *st, int64_t first, const char *file) {
    int64_t n = st->n - first;
    ls_st_tensor **v = ls_malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = &st->t[first + i];
    qsort(v, (size_t)n, sizeof *v, by_address);
    ls_status rc = LS_OK;
    const ls_st_tensor *prev = NULL;
    for (int64_t i = 0; i < n && rc == LS_OK; i++) {
        if (!v[i]->bytes) continue;
        if (prev && (const uint8_t *)prev->data + prev->bytes > (const uint8_t *)v[i]->data)
            rc = LS_ERR(LS_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", file, prev->name, v[i]->name);
        prev = v[i];
    }
    ls_free(v);
    return rc;
}

static ls_status parse_header(ls_safetensors_t *st, int shard, const uint8_t *p, uint64_t size, const char *file) {
    if (size < 8) return LS_ERR(LS_ERR_FORMAT, "%s: %llu bytes is too short for a safetensors file", file, (unsigned long long)size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | p[i];
    if (n > size - 8 || n > MAX_HEADER)
        return LS_ERR(LS_ERR_FORMAT, "%s: a header of %llu bytes does not fit the %llu-byte file", file,
                      (unsigned long long)n, (unsigned long long)size);
    json_error_t err;
    json_t *h = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &err);
    if (!h) return LS_ERR(LS_ERR_FORMAT, "%s: the header is not valid JSON: %s (line %d)", file, err.text, err.line);
    ls_status rc = json_is_object(h) ? LS_OK : LS_ERR(LS_ERR_FORMAT, "%s: the header is not a JSON object", file);
    int64_t first = st->n;
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v) {
        if (rc != LS_OK) break;
        if (!strcmp(key, "__metadata__")) continue;
        if (st->n == st->cap) st->t = ls_realloc(st->t, (size_t)(st->cap = st->cap * 2 + 16) * sizeof *st->t);
        ls_st_tensor *t = &st->t[st->n];
        *t = (ls_st_tensor){.shard = shard};
        rc = parse_tensor(file, key, v, p + 8 + n, size - 8 - n, t);
        if (rc == LS_OK) st->n++;
    }
    json_decref(h);
    return rc == LS_OK ? check_overlaps(st, first, file) : rc;
}

static ls_status add_file(ls_safetensors_t *st, const char *path) {
    st->files = ls_realloc(st->files, (size_t)(st->n_files + 1) * sizeof *st->files);
    st->paths = ls_realloc(st->paths, (size_t)(st->n_files + 1) * sizeof *st->paths);
    st->paths[st->n_files] = ls_strndup(path, strlen(path));
    st->files[st->n_files] = (ls_mapped_file){.fd = -1};
    int shard = st->n_files++;
    LS_CHECK(ls_file_map(path, &st->files[shard]));
    return parse_header(st, shard, st->files[shard].data, st->files[shard].size, path);
}

static int by_name(const void *a, const void *b) { return strcmp(((const ls_st_tensor *)a)->name, ((const ls_st_tensor *)b)->name); }

// Sorts the tensors by name; one name must mean one tensor, across shards too.
static ls_status sort_unique(ls_safetensors_t *st) {
    qsort(st->t, (size_t)st->n, sizeof *st->t, by_name);
    for (int64_t i = 1; i < st->n; i++)
        if (!strcmp(st->t[i - 1].name, st->t[i].name))
            return LS_ERR(LS_ERR_FORMAT, "tensor '%s' appears in both %s and %s", st->t[i].name,
                          st->paths[st->t[i - 1].shard], st->paths[st->t[i].shard]);
    return LS_OK;
}

// A shard's file name from the index: relative, inside the checkpoint directory.
static ls_status shard_path(const char *index, const char *dir, const char *name, ls_buf *out) {
    if (!*name || name[0] == '/' || strstr(name, ".."))
        return LS_ERR(LS_ERR_FORMAT, "%s: shard \"%s\" is not a file name inside the checkpoint", index, name);
    out->len = 0;
    ls_buf_printf(out, "%s/%s", dir, name);
    return LS_OK;
}

static ls_status open_index(ls_safetensors_t *st, const char *index) {
    json_error_t err;
    json_t *j = json_load_file(index, JSON_REJECT_DUPLICATES, &err);
    if (!j) return LS_ERR(LS_ERR_FORMAT, "%s: not valid JSON: %s (line %d)", index, err.text, err.line);
    json_t *map = json_object_get(j, "weight_map");
    ls_status rc = json_is_object(map) ? LS_OK : LS_ERR(LS_ERR_FORMAT, "%s: no \"weight_map\" object", index);
    const char *slash = strrchr(index, '/');
    char *dir = slash ? ls_strndup(index, (size_t)(slash - index)) : ls_strndup(".", 1);
    ls_buf path = {0};
    ls_strmap *shards = ls_strmap_init(16);
    const char *name;
    json_t *file;
    json_object_foreach(map, name, file) { // open each shard once, in the order first named
        if (rc != LS_OK) break;
        const char *f = json_string_value(file);
        int64_t id;
        if (!f) rc = LS_ERR(LS_ERR_FORMAT, "%s: tensor '%s' maps to something other than a file name", index, name);
        else if (!ls_strmap_get(shards, f, strlen(f), &id) && (rc = shard_path(index, dir, f, &path)) == LS_OK) {
            ls_strmap_put(shards, f, strlen(f), st->n_files);
            rc = add_file(st, path.data);
        }
    }
    if (rc == LS_OK) rc = sort_unique(st);
    json_object_foreach(map, name, file) { // every named tensor is in the shard the index says
        if (rc != LS_OK) break;
        const char *f = json_string_value(file);
        int64_t id = -1;
        ls_strmap_get(shards, f, strlen(f), &id);
        const ls_st_tensor *t = ls_safetensors_find(st, name);
        if (!t || t->shard != id)
            rc = LS_ERR(LS_ERR_FORMAT, "%s: names tensor '%s' in %s, which does not hold it", index, name, f);
    }
    ls_strmap_free(shards);
    ls_buf_free(&path);
    ls_free(dir);
    json_decref(j);
    return rc;
}

static bool exists(const char *p) {
    struct stat s;
    return stat(p, &s) == 0;
}

static ls_status open_path(ls_safetensors_t *st, const char *path) {
    size_t len = strlen(path);
    if (ls_is_dir(path)) {
        ls_buf p = {0};
        ls_buf_printf(&p, "%s/model.safetensors.index.json", path);
        if (!exists(p.data)) p.len = 0, ls_buf_printf(&p, "%s/model.safetensors", path);
        ls_status rc = exists(p.data) ? open_path(st, p.data)
                                      : LS_ERR(LS_ERR_IO, "%s holds neither model.safetensors.index.json nor model.safetensors", path);
        ls_buf_free(&p);
        return rc;
    }
    if (len >= 5 && !strcmp(path + len - 5, ".json")) return open_index(st, path);
    LS_CHECK(add_file(st, path));
    return sort_unique(st);
}

ls_status ls_safetensors_open(const char *path, ls_safetensors_t **out) {
    *out = NULL;
    ls_safetensors_t *st = ls_calloc(1, sizeof *st);
    ls_status rc = open_path(st, path);
    if (rc != LS_OK) {
        ls_safetensors_free(st);
        return rc;
    }
    *out = st;
    return LS_OK;
}

void ls_safetensors_free(ls_safetensors_t *st) {
    if (!st) return;
    for (int64_t i = 0; i < st->n; i++) ls_free((void *)st->t[i].name);
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].data) ls_file_unmap(&st->files[i]);
        ls_free(st->paths[i]);
    }
    ls_free(st->files), ls_free(st->paths), ls_free(st->t), ls_free(st);
}

int64_t ls_safetensors_count(const ls_safetensors_t *st) { return st->n; }
int ls_safetensors_shards(const ls_safetensors_t *st) { return st->n_files; }
const ls_st_tensor *ls_safetensors_at(const ls_safetensors_t *st, int64_t i) { return i >= 0 && i < st->n ? &st->t[i] : NULL; }

const ls_st_tensor *ls_safetensors_find(const ls_safetensors_t *st, const char *name) {
    ls_st_tensor key = {.name = name};
    return st->n ? bsearch(&key, st->t, (size_t)st->n, sizeof *st->t, by_name) : NULL;
}
