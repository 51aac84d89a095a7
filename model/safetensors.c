// safetensors.c — the safetensors reader (ls_safetensors.h): u64 header length, a JSON header
// (parsed with jansson, duplicate keys refused) mapping names to dtype, shape and a byte range
// of the data buffer; sharded checkpoints through the index's weight_map. Everything is
// checked before a pointer is handed out. Files a directory or index names are resolved
// (links too) and kept inside the directory; errors never show the file's bytes as numbers.
// Tests: tests/unit/test_safetensors.c.
#include "ls_safetensors.h"

#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

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
    if (n > size - 8 || n > MAX_HEADER) // (the length is not shown: the file may be anything)
        return LS_ERR(LS_ERR_FORMAT, "%s: the header length in its first 8 bytes does not fit the %llu-byte file "
                      "(not a safetensors file?)", file, (unsigned long long)size);
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

// path: as messages name it; real: what is opened (the same, or ls_dir_file's resolution).
static ls_status add_file(ls_safetensors_t *st, const char *path, const char *real) {
    st->files = ls_realloc(st->files, (size_t)(st->n_files + 1) * sizeof *st->files);
    st->paths = ls_realloc(st->paths, (size_t)(st->n_files + 1) * sizeof *st->paths);
    st->paths[st->n_files] = ls_strndup(path, strlen(path));
    st->files[st->n_files] = (ls_mapped_file){.fd = -1};
    int shard = st->n_files++;
    LS_CHECK(ls_file_map(real, &st->files[shard]));
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

// A shard the index names: a relative name whose file (links resolved) is inside the
// checkpoint directory.
static ls_status add_shard(ls_safetensors_t *st, const char *index, const char *dir, const char *name) {
    if (!*name || name[0] == '/' || strstr(name, ".."))
        return LS_ERR(LS_ERR_FORMAT, "%s: shard \"%s\" is not a file name inside the checkpoint", index, name);
    char real[PATH_MAX];
    ls_buf path = {0};
    ls_buf_printf(&path, "%s/%s", dir, name);
    ls_status rc = ls_dir_file(dir, name, real, sizeof real, NULL);
    if (rc == LS_OK) rc = add_file(st, path.data, real);
    ls_buf_free(&path);
    return rc;
}

static ls_status read_json(const char *path, const char *real, json_t **out) {
    ls_buf b = {0};
    ls_status rc = ls_file_read_all(real, MAX_HEADER, &b);
    json_error_t err;
    *out = rc == LS_OK ? json_loadb(b.data, b.len, JSON_REJECT_DUPLICATES, &err) : NULL;
    ls_buf_free(&b);
    if (rc == LS_OK && !*out) rc = LS_ERR(LS_ERR_FORMAT, "%s: not valid JSON: %s (line %d)", path, err.text, err.line);
    return rc;
}

// index: as messages name it; real: the file to read; dir: where its shards are.
static ls_status open_index(ls_safetensors_t *st, const char *index, const char *real, const char *dir) {
    json_t *j;
    LS_CHECK(read_json(index, real, &j));
    json_t *map = json_object_get(j, "weight_map");
    ls_status rc = json_is_object(map) ? LS_OK : LS_ERR(LS_ERR_FORMAT, "%s: no \"weight_map\" object", index);
    ls_strmap *shards = ls_strmap_init(16);
    const char *name;
    json_t *file;
    json_object_foreach(map, name, file) { // open each shard once, in the order first named
        if (rc != LS_OK) break;
        const char *f = json_string_value(file);
        int64_t id;
        if (!f) rc = LS_ERR(LS_ERR_FORMAT, "%s: tensor '%s' maps to something other than a file name", index, name);
        else if (!ls_strmap_get(shards, f, strlen(f), &id)) {
            ls_strmap_put(shards, f, strlen(f), st->n_files);
            rc = add_shard(st, index, dir, f);
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
    json_decref(j);
    return rc;
}

// A checkpoint directory: its index, else its single file (either kept inside it).
static ls_status open_dir(ls_safetensors_t *st, const char *dir) {
    static const char *names[] = {"model.safetensors.index.json", "model.safetensors"};
    char real[PATH_MAX];
    bool found = false;
    for (int i = 0; i < 2; i++) {
        LS_CHECK(ls_dir_file(dir, names[i], real, sizeof real, &found));
        if (!found) continue;
        ls_buf path = {0};
        ls_buf_printf(&path, "%s/%s", dir, names[i]);
        ls_status rc = i == 0 ? open_index(st, path.data, real, dir) : add_file(st, path.data, real);
        ls_buf_free(&path);
        return rc == LS_OK && i == 1 ? sort_unique(st) : rc; // (open_index sorts its own)
    }
    return LS_ERR(LS_ERR_IO, "%s holds neither model.safetensors.index.json nor model.safetensors", dir);
}

static ls_status open_path(ls_safetensors_t *st, const char *path) {
    size_t len = strlen(path);
    if (ls_is_dir(path)) return open_dir(st, path);
    if (len < 5 || strcmp(path + len - 5, ".json")) {
        LS_CHECK(add_file(st, path, path));
        return sort_unique(st);
    }
    const char *slash = strrchr(path, '/');
    char *dir = slash ? ls_strndup(path, (size_t)(slash - path)) : ls_strndup(".", 1);
    ls_status rc = open_index(st, path, path, dir);
    ls_free(dir);
    return rc;
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
