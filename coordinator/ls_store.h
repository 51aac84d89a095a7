// ls_store.h — the durable job store of `longseq serve`: one SQLite database in the state
// directory (WAL, synchronous=FULL), so a call returns only after its rows are committed and a
// kill -9 loses nothing that was acknowledged. Jobs keep their tokens (tokenized and templated
// at submit), their settings and, once finished, their result; every state change is also a
// row of job_log. The schema carries a version (PRAGMA user_version) and is migrated step by
// step on open. Tests: tests/unit/test_store.c, tests/oracle/test_service.py (durability).
#ifndef LS_STORE_H
#define LS_STORE_H

#include "ls_base.h"

#define LS_STORE_SCHEMA 4

typedef struct ls_store ls_store_t;

typedef enum ls_job_state { LS_JOB_QUEUED, LS_JOB_RUNNING, LS_JOB_DONE, LS_JOB_FAILED, LS_JOB_CANCELLED } ls_job_state;
const char *ls_job_state_name(ls_job_state s); // "queued", ...
static inline bool ls_job_state_final(ls_job_state s) { return s >= LS_JOB_DONE; }

// A job as stored. Blobs are owned by the record (ls_job_free).
typedef struct ls_job {
    int64_t seq;           // FIFO order
    char id[40];
    char *name;
    ls_job_state state;
    int64_t attempts;
    int64_t created_ms, finished_ms;
    uint8_t *settings;     // packed longseq.Settings
    size_t settings_len;
    int32_t *tokens;       // the sequence to run (NULL unless asked for)
    int64_t n_tokens;
    uint8_t *result;       // packed longseq.JobResult, once finished (NULL before)
    size_t result_len;
    char *error;           // why it failed or was cancelled ("" otherwise)
    // schema 4: jobs of a long-document strategy (coordinator/strategy.c)
    char parent[40];       // a child: its parent's id ("" none)
    char *tag;             // a child: its place in the plan ("c3", "l2.1", "x"); a parent: its strategy
    bool is_parent;        // a parent: its document is stored, it never runs itself
    uint8_t *doc;          // a parent's document, when adding one (the store reads it with ls_store_doc)
    size_t doc_len;
} ls_job;
void ls_job_free(ls_job *j);

// Opens (creating or migrating) DIR/jobs.db. A database newer than this program is refused.
// DIR is created 0700 and refused when group or others may write to it; jobs.db and its
// -wal and -shm files are the owner's alone (0600).
ls_status ls_store_open(const char *dir, ls_store_t **out);
void ls_store_close(ls_store_t *s);
// After a restart: running jobs go back to the queue (parents stay running); *n how many.
ls_status ls_store_requeue_running(ls_store_t *s, int64_t *n);
// Adds jobs (id, name, settings, tokens set) in one transaction: all or none. Each is queued,
// or, with state LS_JOB_FAILED and its error (a document refused at submit; tokens may be
// none), stored already finished; a parent (is_parent, doc set) is stored running, as it is
// in progress from the start and never queued itself; parent and tag are kept.
ls_status ls_store_add(ls_store_t *s, ls_job *jobs, size_t n);
// The oldest queued job with its tokens; *found false when the queue is empty.
ls_status ls_store_next_queued(ls_store_t *s, ls_job *j, bool *found);
// A state change (attempts and error as given), logged in job_log, committed.
ls_status ls_store_set_state(ls_store_t *s, const char *id, ls_job_state st, int64_t attempts, const char *error);
// The final state with the packed JobResult, committed.
ls_status ls_store_finish(ls_store_t *s, const char *id, ls_job_state st, const uint8_t *result, size_t len,
                          const char *error);
// One job without its tokens; LS_ERR_NOT_FOUND when there is none with that id.
ls_status ls_store_get(ls_store_t *s, const char *id, ls_job *j);
// Newest first, at most `limit`, with settings and results but without tokens; fn is called per job.
ls_status ls_store_list(ls_store_t *s, int64_t limit, void (*fn)(void *ctx, const ls_job *j), void *ctx);
ls_status ls_store_count(ls_store_t *s, ls_job_state st, int64_t *n);
// A parent's children in the order they were added (with results, without tokens).
ls_status ls_store_children(ls_store_t *s, const char *parent, void (*fn)(void *ctx, const ls_job *j), void *ctx);
// The parents not yet finished, oldest first (after a restart they go on).
ls_status ls_store_open_parents(ls_store_t *s, void (*fn)(void *ctx, const ls_job *j), void *ctx);
// A parent's document (allocated, ls_free); LS_ERR_NOT_FOUND when the job has none.
ls_status ls_store_doc(ls_store_t *s, const char *id, uint8_t **doc, size_t *len);
// Queued jobs ahead of the job with this seq.
ls_status ls_store_ahead(ls_store_t *s, int64_t seq, int64_t *n);
// A new job id ("j" + 16 hex digits from the kernel's random source).
ls_status ls_store_new_id(char id[40]);
// The same with another prefix ("file-", "batch_").
ls_status ls_store_new_named_id(const char *prefix, char id[40]);

// --- files and batches of the HTTP Batch API (schema 3) --------------------------------------

typedef struct ls_file {
    char id[40];
    char *purpose, *filename;
    int64_t created_ms;
    uint8_t *data;  // NULL unless asked for
    size_t len;
} ls_file;
void ls_file_free(ls_file *f);
ls_status ls_store_file_put(ls_store_t *s, const char *id, const char *purpose, const char *filename, const void *data,
                            size_t len);
// LS_ERR_NOT_FOUND when there is none.
ls_status ls_store_file_get(ls_store_t *s, const char *id, ls_file *f, bool with_data);

typedef struct ls_batch {
    int64_t seq;
    char id[40];
    char *input_file, *endpoint, *state;     // state: OpenAI's names (in_progress, completed, ...)
    int64_t n_lines, created_ms, finished_ms; // finished_ms 0: open
    char *output_file, *error_file;           // ids, "" until finished
    char *metadata;                           // JSON text
} ls_batch;
void ls_batch_free(ls_batch *b);
// One request line as stored: its custom_id, its job once made ("" before), or why it is refused.
typedef struct ls_batch_line {
    const char *custom_id, *job, *error;
} ls_batch_line;
// A batch and all its lines (error set for the bad ones), in one transaction.
ls_status ls_store_batch_add(ls_store_t *s, ls_batch *b, const ls_batch_line *lines);
ls_status ls_store_batch_get(ls_store_t *s, const char *id, ls_batch *b);
// Open batches oldest first, or all newest first; fn is called per batch.
ls_status ls_store_batch_list(ls_store_t *s, bool open_only, int64_t limit, void (*fn)(void *ctx, const ls_batch *b), void *ctx);
ls_status ls_store_batch_set_state(ls_store_t *s, const char *id, const char *state);
ls_status ls_store_batch_line_set(ls_store_t *s, const char *batch, int64_t line, const char *job, const char *error);
// The lines in order with their jobs' states (-1: no job).
ls_status ls_store_batch_lines(ls_store_t *s, const char *batch, void (*fn)(void *ctx, int64_t line, const ls_batch_line *l,
                               int job_state), void *ctx);
// The output and error files (ids b->output_file, b->error_file) stored and the batch closed in
// `state`, in one transaction.
ls_status ls_store_batch_finish(ls_store_t *s, const ls_batch *b, const char *state, const ls_buf *out, const ls_buf *err);

#endif // LS_STORE_H
