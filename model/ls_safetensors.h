// ls_safetensors.h — reading Hugging Face safetensors checkpoints: one file, or a sharded set
// through its index (model.safetensors.index.json), memory-mapped and checked at open like the
// GGUF reader: header size and JSON, every tensor's dtype, shape and byte range (inside the
// data buffer, matching its shape, not overlapping another), and for sharded sets that every
// tensor the index names is in its shard exactly once. The files a directory or index names
// must resolve (links too) to regular files inside that directory (ls_dir_file).
// Docs: docs/formats.md §5.1.
// Tests: tests/unit/test_safetensors.c (valid and hostile files written by the test).
#ifndef LS_SAFETENSORS_H
#define LS_SAFETENSORS_H

#include "ls_base.h"

#define LS_ST_MAX_DIMS 8

typedef struct ls_st_tensor {
    const char *name;
    ls_dtype type;                   // F64 F32 F16 BF16 I64 I32 I16 I8 (U8 and BOOL as I8)
    int n_dims;
    int64_t shape[LS_ST_MAX_DIMS];   // row-major, outermost first (HF [out, in])
    const void *data;                // in the file mapping; the format does not align it, so
                                     // read through memcpy (or copy out) unless aligned
    uint64_t bytes;
    int shard;                       // which file (0 for a single file)
} ls_st_tensor;

typedef struct ls_safetensors ls_safetensors_t;

// path: a .safetensors file, a *.index.json, or a directory holding either
// model.safetensors.index.json or model.safetensors. Errors name the file and the problem.
ls_status ls_safetensors_open(const char *path, ls_safetensors_t **out);
void ls_safetensors_free(ls_safetensors_t *st);
int64_t ls_safetensors_count(const ls_safetensors_t *st);
const ls_st_tensor *ls_safetensors_at(const ls_safetensors_t *st, int64_t i); // sorted by name
const ls_st_tensor *ls_safetensors_find(const ls_safetensors_t *st, const char *name);
int ls_safetensors_shards(const ls_safetensors_t *st);

#endif // LS_SAFETENSORS_H
