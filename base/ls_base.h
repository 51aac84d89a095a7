// ls_base.h — the foundation every longseq library stands on: status codes and error
// propagation, logging with rank and host, allocation that never returns NULL, growable
// buffers, hash maps, read-only file mapping, timers and environment tunables.
// Nothing here knows about models, MPI or sockets. Tests: tests/unit/test_base.c.
#ifndef LS_BASE_H
#define LS_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

// --- status and errors --------------------------------------------------------------------
// Every fallible function returns ls_status. The first failure records a message with the
// file and line where it was detected (LS_ERR); every LS_CHECK on the way up appends one
// trace frame. main() prints it with ls_err_report() and decides what to do.

typedef enum ls_status {
    LS_OK = 0,
    LS_ERR_INVALID,     // an argument or user input is not acceptable
    LS_ERR_FORMAT,      // a file, frame or message is malformed
    LS_ERR_UNSUPPORTED, // well-formed but not something we handle (type, version, ...)
    LS_ERR_IO,          // open/read/write/mmap failed
    LS_ERR_NOT_FOUND,   // a key, tensor or file that was asked for is absent
    LS_ERR_RANGE,       // a size or count beyond what is allowed
    LS_ERR_NOMEM,       // an allocation that may legitimately fail did fail
    LS_ERR_INTERNAL,    // a bug: an invariant that should hold did not
    LS_ERR_DEVICE,      // CUDA / NCCL / MPI reported an error
    LS_ERR_CANCELLED,   // stopped on request (a progress callback said so)
} ls_status;

const char *ls_status_name(ls_status s);

// Records `code` with a printf-style message, unless an error is already pending (the first
// cause wins), and returns `code`. Use through LS_ERR.
ls_status ls_err_set(ls_status code, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
// Appends "file:line func: call" to the pending error's trace. Use through LS_CHECK.
void ls_err_trace(const char *file, int line, const char *func, const char *call);
// Prepends context (e.g. the file name) to the pending error's message.
void ls_err_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// The pending error's message ("" if none) and code; ls_err_clear() forgets it.
const char *ls_err_msg(void);
ls_status ls_err_code(void);
void ls_err_clear(void);
// Prints "longseq: error: <message> [file:line, rank R on host]" (plus the trace when the
// log level is debug) to `f`, then clears the error.
void ls_err_report(FILE *f);

#define LS_ERR(code, ...) ls_err_set((code), __FILE__, __LINE__, __VA_ARGS__)

#define LS_CHECK(call)                                                                 \
    do {                                                                               \
        ls_status ls_rc_ = (call);                                                     \
        if (ls_rc_ != LS_OK) {                                                         \
            ls_err_trace(__FILE__, __LINE__, __func__, #call);                         \
            return ls_rc_;                                                             \
        }                                                                              \
    } while (0)

#define LS_CHECK_GOTO(call, rc, label)                                                 \
    do {                                                                               \
        (rc) = (call);                                                                 \
        if ((rc) != LS_OK) {                                                           \
            ls_err_trace(__FILE__, __LINE__, __func__, #call);                         \
            goto label;                                                                \
        }                                                                              \
    } while (0)

// Invariants: abort with file and line. For bugs only, never for bad input.
void ls_panic(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
#define LS_PANIC(...) ls_panic(__FILE__, __LINE__, __VA_ARGS__)
#define LS_ASSERT(cond)                                                                \
    do {                                                                               \
        if (!(cond)) ls_panic(__FILE__, __LINE__, "assertion failed: %s", #cond);     \
    } while (0)

// --- logging ------------------------------------------------------------------------------
typedef enum ls_log_level { LS_LOG_ERROR, LS_LOG_WARN, LS_LOG_INFO, LS_LOG_DEBUG } ls_log_level;

// Level from LS_LOG (error|warn|info|debug; default warn). Lines go to stderr as
// "[longseq rank R] message" once a rank is set, "[longseq] message" before.
void ls_log_set_rank(int rank);
int ls_log_rank(void);
void ls_log_set_level(ls_log_level level);
ls_log_level ls_log_level_get(void);
void ls_log(ls_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LS_WARN(...) ls_log(LS_LOG_WARN, __VA_ARGS__)
#define LS_INFO(...) ls_log(LS_LOG_INFO, __VA_ARGS__)
#define LS_DEBUG(...) ls_log(LS_LOG_DEBUG, __VA_ARGS__)

// --- memory -------------------------------------------------------------------------------
// ls_malloc/ls_calloc/ls_realloc never return NULL: on exhaustion they abort, naming the
// size. Sizes that come from untrusted input must be bounded *before* allocating.
void *ls_malloc(size_t n);
void *ls_calloc(size_t count, size_t size);
void *ls_realloc(void *p, size_t n);
void *ls_aligned_alloc(size_t align, size_t n); // free with ls_free
char *ls_strndup(const char *s, size_t n);
void ls_free(void *p); // accepts NULL

// Overflow-checked arithmetic: return false when the exact result does not fit.
static inline bool ls_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool ls_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

// Growable byte buffer. Always NUL-terminated after any append (the NUL is not counted).
typedef struct ls_buf {
    char *data;
    size_t len, cap;
} ls_buf;
void ls_buf_append(ls_buf *b, const void *p, size_t n);
void ls_buf_putc(ls_buf *b, char c);
void ls_buf_printf(ls_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ls_buf_clear(ls_buf *b); // empty again, and its data an empty string (if any)
void ls_buf_free(ls_buf *b);

// Growable vector of int32 (token ids and the like).
typedef struct ls_vec_i32 {
    int32_t *data;
    size_t len, cap;
} ls_vec_i32;
void ls_vec_i32_push(ls_vec_i32 *v, int32_t x);
void ls_vec_i32_reserve(ls_vec_i32 *v, size_t cap);
void ls_vec_i32_free(ls_vec_i32 *v);

// --- hash maps ----------------------------------------------------------------------------
// String -> int64 map with open addressing. Keys are copied into an internal arena.
typedef struct ls_strmap ls_strmap;
ls_strmap *ls_strmap_init(size_t expected);
void ls_strmap_free(ls_strmap *m);
// Inserts or replaces; returns true if the key was new.
bool ls_strmap_put(ls_strmap *m, const char *key, size_t len, int64_t value);
// Returns true and sets *value when found.
bool ls_strmap_get(const ls_strmap *m, const char *key, size_t len, int64_t *value);
size_t ls_strmap_count(const ls_strmap *m);

// u64 -> u64 map (keys must not be UINT64_MAX, which marks empty slots).
typedef struct ls_u64map ls_u64map;
ls_u64map *ls_u64map_init(size_t expected);
void ls_u64map_free(ls_u64map *m);
bool ls_u64map_put(ls_u64map *m, uint64_t key, uint64_t value);
bool ls_u64map_get(const ls_u64map *m, uint64_t key, uint64_t *value);

// --- tensor element types -----------------------------------------------------------------
// ggml's type ids, as stored in GGUF files. Block = elements per quantization block; a row of
// n elements (n a multiple of the block) takes n / block * block_bytes bytes.
typedef enum ls_dtype {
    LS_F32 = 0, LS_F16 = 1, LS_Q4_0 = 2, LS_Q4_1 = 3, LS_Q5_0 = 6, LS_Q5_1 = 7, LS_Q8_0 = 8,
    LS_Q8_1 = 9, LS_Q2_K = 10, LS_Q3_K = 11, LS_Q4_K = 12, LS_Q5_K = 13, LS_Q6_K = 14,
    LS_Q8_K = 15, LS_IQ2_XXS = 16, LS_IQ2_XS = 17, LS_IQ3_XXS = 18, LS_IQ1_S = 19,
    LS_IQ4_NL = 20, LS_IQ3_S = 21, LS_IQ2_S = 22, LS_IQ4_XS = 23, LS_I8 = 24, LS_I16 = 25,
    LS_I32 = 26, LS_I64 = 27, LS_F64 = 28, LS_IQ1_M = 29, LS_BF16 = 30, LS_TQ1_0 = 34,
    LS_TQ2_0 = 35, LS_MXFP4 = 39,
    LS_DTYPE_COUNT = 40
} ls_dtype;

typedef struct ls_dtype_info {
    const char *name; // NULL for ids that are unknown or were removed from ggml
    uint32_t block;   // elements per block
    uint32_t block_bytes;
} ls_dtype_info;

// NULL when `id` is not a known ggml type.
const ls_dtype_info *ls_dtype_get(uint32_t id);
const char *ls_dtype_name(uint32_t id); // "unknown" for ids that are not known
// Bytes of a row of n elements: false if n is not a multiple of the block or on overflow.
bool ls_dtype_row_bytes(ls_dtype t, uint64_t n, uint64_t *bytes);

// --- files --------------------------------------------------------------------------------
// A read-only view of a whole file (mmap; empty files give size 0 and a non-NULL pointer).
typedef struct ls_mapped_file {
    const uint8_t *data;
    size_t size;
    int fd;
} ls_mapped_file;
// Regular files only: a FIFO, device or directory is refused by name, without blocking.
ls_status ls_file_map(const char *path, ls_mapped_file *out);
void ls_file_unmap(ls_mapped_file *f);
// Reads a whole regular file (or stdin for "-") into a buffer, which the caller frees, also
// after an error. A file over max_bytes is refused by its length before anything is read.
ls_status ls_file_read_all(const char *path, size_t max_bytes, ls_buf *out);
// True when path names a directory (false when it does not exist).
bool ls_is_dir(const char *path);
// The real path (symlinks resolved) of the file `name` in a directory from an untrusted source
// (a checkpoint, an adapter). It must lie inside the directory's real path (or, for a Hugging
// Face hub cache snapshot .../snapshots/REV, directly in .../blobs, where its links lead) and be
// a regular file; errors name the file and where it leads. When it does not exist: *found =
// false and LS_OK, or LS_ERR_NOT_FOUND when found is NULL.
ls_status ls_dir_file(const char *dir, const char *name, char *out, size_t cap, bool *found);

// --- time and environment -----------------------------------------------------------------
double ls_time_ms(void); // monotonic milliseconds

// Environment tunables are declared once with LS_PARAM(name, "LS_ENV", default) and read
// with ls_param_<name>(); the value is read on first use and cached.
int64_t ls_env_int(const char *env, int64_t dflt);
#define LS_PARAM(name, env, dflt)                                                      \
    static inline int64_t ls_param_##name(void) {                                      \
        static int64_t v_;                                                             \
        static int init_;                                                              \
        if (!init_) {                                                                  \
            v_ = ls_env_int(env, dflt);                                                \
            init_ = 1;                                                                 \
        }                                                                              \
        return v_;                                                                     \
    }

// $LONGSEQ_HOME, or ~/.cache/longseq. The default model path lives under it.
const char *ls_home_dir(void);
// $LONGSEQ_MODEL, or $LONGSEQ_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf.
const char *ls_default_model_path(void);

#ifdef __cplusplus
}
#endif

#endif // LS_BASE_H
