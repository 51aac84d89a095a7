// store.c — the job store on SQLite (ls_store.h): schema migrations, one transaction per call,
// prepared statements kept for the life of the store. Tests: tests/unit/test_store.c.
#include "ls_store.h"

#include <sqlite3.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct ls_store {
    sqlite3 *db;
    char *path;
};

// Step k takes the schema from version k to k + 1; each runs in its own transaction.
static const char *const MIGRATIONS[LS_STORE_SCHEMA] = {
    // 1: the jobs
    "CREATE TABLE jobs ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE,"
    "  name TEXT NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL,"
    "  finished_ms INTEGER NOT NULL DEFAULT 0,"
    "  settings BLOB NOT NULL,"
    "  tokens BLOB NOT NULL,"
    "  n_tokens INTEGER NOT NULL,"
    "  result BLOB,"
    "  error TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX jobs_by_state ON jobs(state, seq);",
    // 2: the history of every state change
    "CREATE TABLE job_log ("
    "  job_id TEXT NOT NULL,"
    "  at_ms INTEGER NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL,"
    "  error TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX job_log_by_job ON job_log(job_id);"
    "INSERT INTO job_log SELECT id, created_ms, state, attempts, error FROM jobs;",
    // 3: the files and batches of the HTTP front end's Batch API
    "CREATE TABLE files ("
    "  id TEXT PRIMARY KEY,"
    "  purpose TEXT NOT NULL,"
    "  filename TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  data BLOB NOT NULL);"
    "CREATE TABLE batches ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE,"
    "  input_file TEXT NOT NULL,"
    "  endpoint TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  n_lines INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  finished_ms INTEGER NOT NULL DEFAULT 0,"
    "  output_file TEXT NOT NULL DEFAULT '',"
    "  error_file TEXT NOT NULL DEFAULT '',"
    "  metadata TEXT NOT NULL DEFAULT 'null');"
    "CREATE TABLE batch_lines ("
    "  batch TEXT NOT NULL,"
    "  line INTEGER NOT NULL,"
    "  custom_id TEXT NOT NULL,"
    "  job TEXT NOT NULL DEFAULT '',"
    "  error TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (batch, line));",
    // 4: long-document strategies: a parent job keeps its document, its children name it
    "ALTER TABLE jobs ADD COLUMN parent TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN tag TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN doc BLOB;"
    "CREATE INDEX jobs_by_parent ON jobs(parent, seq);",
};

const char *ls_job_state_name(ls_job_state s) {
    static const char *names[] = {"queued", "running", "done", "failed", "cancelled"};
    return (unsigned)s < 5 ? names[s] : "?";
}

void ls_job_free(ls_job *j) {
    ls_free(j->name), ls_free(j->settings), ls_free(j->tokens), ls_free(j->result), ls_free(j->error);
    ls_free(j->tag), ls_free(j->doc);
    *j = (ls_job){0};
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static ls_status db_error(ls_store_t *s, const char *what) {
    return LS_ERR(LS_ERR_IO, "job store %s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

static ls_status exec(ls_store_t *s, const char *sql) {
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) == SQLITE_OK) return LS_OK;
    ls_status rc = LS_ERR(LS_ERR_IO, "job store %s: %s", s->path, msg ? msg : sqlite3_errmsg(s->db));
    sqlite3_free(msg);
    return rc;
}

static ls_status prepare(ls_store_t *s, const char *sql, sqlite3_stmt **st) {
    return sqlite3_prepare_v2(s->db, sql, -1, st, NULL) == SQLITE_OK ? LS_OK : db_error(s, "prepare");
}

// Runs a statement that returns no rows, then finalizes it.
static ls_status run(ls_store_t *s, sqlite3_stmt *st) {
    int e = sqlite3_step(st);
    sqlite3_finalize(st);
    return e == SQLITE_DONE ? LS_OK : db_error(s, "write");
}

static ls_status migrate(ls_store_t *s) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "PRAGMA user_version", &st));
    int v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    if (v < 0 || v > LS_STORE_SCHEMA)
        return LS_ERR(LS_ERR_UNSUPPORTED, "job store %s has schema version %d; this longseq knows versions up to %d",
                      s->path, v, LS_STORE_SCHEMA);
    for (; v < LS_STORE_SCHEMA; v++) {
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d;", v + 1);
        LS_CHECK(exec(s, "BEGIN IMMEDIATE"));
        ls_status rc = exec(s, MIGRATIONS[v]);
        if (rc == LS_OK) rc = exec(s, bump);
        if (rc == LS_OK) rc = exec(s, "COMMIT");
        if (rc != LS_OK) {
            exec(s, "ROLLBACK");
            ls_err_prefix("migrating to schema version %d: ", v + 1);
            return rc;
        }
        LS_INFO("job store %s: migrated to schema version %d", s->path, v + 1);
    }
    return LS_OK;
}

// The state directory: created 0700; an existing one that group or others may write to is
// refused (they could replace the store).
static ls_status state_dir(const char *dir) {
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return LS_ERR(LS_ERR_IO, "cannot create the state directory %s: %s", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0) return LS_ERR(LS_ERR_IO, "the state directory %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return LS_ERR(LS_ERR_INVALID, "the state directory %s is not a directory", dir);
    if (st.st_mode & 022)
        return LS_ERR(LS_ERR_INVALID, "the state directory %s has mode %04o: group or others may write to it; run chmod 700 %s",
                      dir, (unsigned)(st.st_mode & 07777), dir);
    return LS_OK;
}

// The store's file and its -wal and -shm (SQLite gives them the store's mode) are the owner's
// alone: jobs.db is created 0600, and existing files that others may use are made 0600.
static ls_status private_files(const char *db) {
    int fd = open(db, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return LS_ERR(LS_ERR_IO, "cannot open the job store %s: %s", db, strerror(errno));
    struct stat st;
    bool ok = fstat(fd, &st) == 0 && (!(st.st_mode & 077) || fchmod(fd, 0600) == 0);
    close(fd);
    if (!ok) return LS_ERR(LS_ERR_IO, "cannot make the job store %s private (mode 0600): %s", db, strerror(errno));
    for (int i = 0; i < 2; i++) {
        char side[4200];
        snprintf(side, sizeof side, "%s%s", db, i ? "-shm" : "-wal");
        if (stat(side, &st) == 0 && (st.st_mode & 077) && chmod(side, 0600) != 0)
            return LS_ERR(LS_ERR_IO, "cannot make %s private (mode 0600): %s", side, strerror(errno));
    }
    return LS_OK;
}

ls_status ls_store_open(const char *dir, ls_store_t **out) {
    LS_CHECK(state_dir(dir));
    ls_store_t *s = ls_calloc(1, sizeof *s);
    ls_buf p = {0};
    ls_buf_printf(&p, "%s/jobs.db", dir);
    s->path = p.data;
    ls_status rc = private_files(s->path);
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
    if (rc == LS_OK && sqlite3_open_v2(s->path, &s->db, flags, NULL) != SQLITE_OK) rc = db_error(s, "open");
    if (rc == LS_OK) sqlite3_busy_timeout(s->db, 10000);
    // WAL with synchronous=FULL: every commit is on disk before the call returns.
    if (rc == LS_OK) rc = exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
    if (rc == LS_OK) rc = migrate(s);
    if (rc != LS_OK) {
        ls_store_close(s);
        return rc;
    }
    *out = s;
    return LS_OK;
}

void ls_store_close(ls_store_t *s) {
    if (!s) return;
    sqlite3_close(s->db);
    ls_free(s->path);
    ls_free(s);
}

ls_status ls_store_requeue_running(ls_store_t *s, int64_t *n) {
    LS_CHECK(exec(s, "BEGIN IMMEDIATE"));
    sqlite3_stmt *st;
    ls_status rc = prepare(s, "INSERT INTO job_log SELECT id, ?1, 0, attempts, 'requeued after a restart' FROM jobs WHERE state = 1 AND doc IS NULL", &st);
    if (rc == LS_OK) {
        sqlite3_bind_int64(st, 1, now_ms());
        rc = run(s, st);
    }
    if (rc == LS_OK) rc = exec(s, "UPDATE jobs SET state = 0 WHERE state = 1 AND doc IS NULL");
    *n = sqlite3_changes(s->db);
    if (rc == LS_OK) return exec(s, "COMMIT");
    exec(s, "ROLLBACK");
    return rc;
}

static ls_status log_state(ls_store_t *s, const char *id, ls_job_state state, int64_t attempts, const char *error) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "INSERT INTO job_log(job_id, at_ms, state, attempts, error) VALUES (?1, ?2, ?3, ?4, ?5)", &st));
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms());
    sqlite3_bind_int(st, 3, (int)state);
    sqlite3_bind_int64(st, 4, attempts);
    sqlite3_bind_text(st, 5, error ? error : "", -1, SQLITE_STATIC);
    return run(s, st);
}

// A new job: queued, or already failed (with its error) when its document was refused; a parent
// running.
static ls_status add_one(ls_store_t *s, ls_job *j) {
    sqlite3_stmt *st;
    bool failed = j->state == LS_JOB_FAILED;
    ls_job_state first = failed ? LS_JOB_FAILED : j->is_parent ? LS_JOB_RUNNING : LS_JOB_QUEUED;
    j->created_ms = now_ms();
    j->finished_ms = failed ? j->created_ms : 0;
    LS_CHECK(prepare(s, "INSERT INTO jobs(id, name, state, created_ms, settings, tokens, n_tokens, finished_ms, error, "
                        "parent, tag, doc) VALUES (?1, ?2, ?7, ?3, ?4, ?5, ?6, ?8, ?9, ?10, ?11, ?12)", &st));
    sqlite3_bind_text(st, 10, j->parent, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 11, j->tag ? j->tag : "", -1, SQLITE_STATIC);
    if (j->is_parent && !failed) sqlite3_bind_blob64(st, 12, j->doc ? (const void *)j->doc : "", j->doc_len, SQLITE_STATIC);
    else sqlite3_bind_null(st, 12);
    sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->name ? j->name : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, j->created_ms);
    sqlite3_bind_blob(st, 4, j->settings ? (const void *)j->settings : "", (int)j->settings_len, SQLITE_STATIC);
    // (a parent has no tokens of its own: n_tokens is its document's count)
    sqlite3_bind_blob64(st, 5, j->tokens ? (const void *)j->tokens : "",
                        j->tokens ? (sqlite3_uint64)j->n_tokens * sizeof(int32_t) : 0, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, j->n_tokens);
    sqlite3_bind_int(st, 7, (int)first);
    sqlite3_bind_int64(st, 8, j->finished_ms);
    sqlite3_bind_text(st, 9, failed && j->error ? j->error : "", -1, SQLITE_STATIC);
    LS_CHECK(run(s, st));
    j->seq = sqlite3_last_insert_rowid(s->db);
    j->state = first;
    return log_state(s, j->id, first, 0, failed ? j->error : "");
}

ls_status ls_store_add(ls_store_t *s, ls_job *jobs, size_t n) {
    LS_CHECK(exec(s, "BEGIN IMMEDIATE"));
    ls_status rc = LS_OK;
    for (size_t i = 0; i < n && rc == LS_OK; i++) rc = add_one(s, &jobs[i]);
    if (rc == LS_OK) rc = exec(s, "COMMIT");
    if (rc != LS_OK) exec(s, "ROLLBACK");
    return rc;
}

static void *blob_copy(sqlite3_stmt *st, int col, size_t *len) {
    const void *p = sqlite3_column_blob(st, col);
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    if (len) *len = n;
    if (!p) return NULL;
    void *q = ls_malloc(n ? n : 1);
    memcpy(q, p, n);
    return q;
}

#define JOB_COLUMNS "seq, id, name, state, attempts, created_ms, finished_ms, settings, result, error, n_tokens, " \
                    "parent, tag, doc IS NOT NULL"

// The row's columns (in JOB_COLUMNS order) into j.
static void read_row(sqlite3_stmt *st, ls_job *j) {
    *j = (ls_job){.seq = sqlite3_column_int64(st, 0)};
    snprintf(j->id, sizeof j->id, "%s", (const char *)sqlite3_column_text(st, 1));
    const char *name = (const char *)sqlite3_column_text(st, 2), *err = (const char *)sqlite3_column_text(st, 9);
    j->name = ls_strndup(name ? name : "", name ? strlen(name) : 0);
    j->state = (ls_job_state)sqlite3_column_int(st, 3);
    j->attempts = sqlite3_column_int64(st, 4);
    j->created_ms = sqlite3_column_int64(st, 5);
    j->finished_ms = sqlite3_column_int64(st, 6);
    j->settings = blob_copy(st, 7, &j->settings_len);
    j->result = blob_copy(st, 8, &j->result_len);
    j->error = ls_strndup(err ? err : "", err ? strlen(err) : 0);
    j->n_tokens = sqlite3_column_int64(st, 10);
    const char *parent = (const char *)sqlite3_column_text(st, 11), *tag = (const char *)sqlite3_column_text(st, 12);
    snprintf(j->parent, sizeof j->parent, "%s", parent ? parent : "");
    j->tag = ls_strndup(tag ? tag : "", tag ? strlen(tag) : 0);
    j->is_parent = sqlite3_column_int(st, 13) != 0;
}

ls_status ls_store_next_queued(ls_store_t *s, ls_job *j, bool *found) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "SELECT " JOB_COLUMNS ", tokens FROM jobs WHERE state = 0 AND doc IS NULL ORDER BY seq LIMIT 1", &st));
    int e = sqlite3_step(st);
    *found = e == SQLITE_ROW;
    if (*found) {
        read_row(st, j);
        size_t bytes;
        j->tokens = blob_copy(st, 14, &bytes);
        if (bytes != (size_t)j->n_tokens * sizeof(int32_t)) {
            sqlite3_finalize(st);
            return LS_ERR(LS_ERR_FORMAT, "job store %s: job %s has %zu token bytes for %lld tokens", s->path, j->id, bytes,
                          (long long)j->n_tokens);
        }
    }
    sqlite3_finalize(st);
    return e == SQLITE_ROW || e == SQLITE_DONE ? LS_OK : db_error(s, "read");
}

ls_status ls_store_set_state(ls_store_t *s, const char *id, ls_job_state state, int64_t attempts, const char *error) {
    LS_CHECK(exec(s, "BEGIN IMMEDIATE"));
    sqlite3_stmt *st;
    ls_status rc = prepare(s, "UPDATE jobs SET state = ?2, attempts = ?3, error = ?4 WHERE id = ?1", &st);
    if (rc == LS_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, (int)state);
        sqlite3_bind_int64(st, 3, attempts);
        sqlite3_bind_text(st, 4, error ? error : "", -1, SQLITE_STATIC);
        rc = run(s, st);
    }
    if (rc == LS_OK) rc = log_state(s, id, state, attempts, error);
    if (rc == LS_OK) return exec(s, "COMMIT");
    exec(s, "ROLLBACK");
    return rc;
}

ls_status ls_store_finish(ls_store_t *s, const char *id, ls_job_state state, const uint8_t *result, size_t len,
                          const char *error) {
    LS_CHECK(exec(s, "BEGIN IMMEDIATE"));
    sqlite3_stmt *st;
    ls_status rc = prepare(s, "UPDATE jobs SET state = ?2, result = ?3, error = ?4, finished_ms = ?5 WHERE id = ?1", &st);
    if (rc == LS_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, (int)state);
        sqlite3_bind_blob(st, 3, result ? (const void *)result : "", (int)len, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, error ? error : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, now_ms());
        rc = run(s, st);
    }
    if (rc == LS_OK) {
        sqlite3_stmt *a;
        rc = prepare(s, "SELECT attempts FROM jobs WHERE id = ?1", &a);
        int64_t attempts = 0;
        if (rc == LS_OK) {
            sqlite3_bind_text(a, 1, id, -1, SQLITE_STATIC);
            if (sqlite3_step(a) == SQLITE_ROW) attempts = sqlite3_column_int64(a, 0);
            sqlite3_finalize(a);
            rc = log_state(s, id, state, attempts, error);
        }
    }
    if (rc == LS_OK) return exec(s, "COMMIT");
    exec(s, "ROLLBACK");
    return rc;
}

ls_status ls_store_get(ls_store_t *s, const char *id, ls_job *j) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1", &st));
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int e = sqlite3_step(st);
    if (e == SQLITE_ROW) read_row(st, j);
    sqlite3_finalize(st);
    if (e == SQLITE_ROW) return LS_OK;
    return e == SQLITE_DONE ? LS_ERR(LS_ERR_NOT_FOUND, "no job %s", id) : db_error(s, "read");
}

// Calls fn on each row of a prepared query (its parameters bound), then finalizes it.
static ls_status each_row(ls_store_t *s, sqlite3_stmt *st, void (*fn)(void *ctx, const ls_job *j), void *ctx) {
    int e;
    while ((e = sqlite3_step(st)) == SQLITE_ROW) {
        ls_job j;
        read_row(st, &j);
        fn(ctx, &j);
        ls_job_free(&j);
    }
    sqlite3_finalize(st);
    return e == SQLITE_DONE ? LS_OK : db_error(s, "read");
}

ls_status ls_store_list(ls_store_t *s, int64_t limit, void (*fn)(void *ctx, const ls_job *j), void *ctx) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "SELECT " JOB_COLUMNS " FROM jobs ORDER BY seq DESC LIMIT ?1", &st));
    sqlite3_bind_int64(st, 1, limit);
    return each_row(s, st, fn, ctx);
}

ls_status ls_store_children(ls_store_t *s, const char *parent, void (*fn)(void *ctx, const ls_job *j), void *ctx) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "SELECT " JOB_COLUMNS " FROM jobs WHERE parent = ?1 ORDER BY seq", &st));
    sqlite3_bind_text(st, 1, parent, -1, SQLITE_TRANSIENT);
    return each_row(s, st, fn, ctx);
}

ls_status ls_store_open_parents(ls_store_t *s, void (*fn)(void *ctx, const ls_job *j), void *ctx) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "SELECT " JOB_COLUMNS " FROM jobs WHERE doc IS NOT NULL AND state < 2 ORDER BY seq", &st));
    return each_row(s, st, fn, ctx);
}

ls_status ls_store_doc(ls_store_t *s, const char *id, uint8_t **doc, size_t *len) {
    sqlite3_stmt *st;
    *doc = NULL, *len = 0;
    LS_CHECK(prepare(s, "SELECT doc FROM jobs WHERE id = ?1 AND doc IS NOT NULL", &st));
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    int e = sqlite3_step(st);
    if (e == SQLITE_ROW) *doc = blob_copy(st, 0, len);
    sqlite3_finalize(st);
    if (e == SQLITE_ROW) return LS_OK;
    return e == SQLITE_DONE ? LS_ERR(LS_ERR_NOT_FOUND, "job %s has no document of its own", id) : db_error(s, "read");
}

static ls_status count_where(ls_store_t *s, const char *sql, int64_t arg, int64_t *n) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, sql, &st));
    sqlite3_bind_int64(st, 1, arg);
    int e = sqlite3_step(st);
    *n = e == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return e == SQLITE_ROW ? LS_OK : db_error(s, "read");
}

ls_status ls_store_count(ls_store_t *s, ls_job_state state, int64_t *n) {
    return count_where(s, "SELECT count(*) FROM jobs WHERE state = ?1", (int64_t)state, n);
}

ls_status ls_store_ahead(ls_store_t *s, int64_t seq, int64_t *n) {
    return count_where(s, "SELECT count(*) FROM jobs WHERE state = 0 AND seq < ?1", seq, n);
}

ls_status ls_store_new_id(char id[40]) {
    uint8_t r[8];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) return LS_ERR(LS_ERR_IO, "getrandom: %s", strerror(errno));
    id[0] = 'j';
    for (int i = 0; i < 8; i++) snprintf(id + 1 + 2 * i, 3, "%02x", r[i]);
    return LS_OK;
}

// --- files and batches (the Batch API) ---------------------------------------------------------

void ls_batch_free(ls_batch *b) {
    ls_free(b->input_file), ls_free(b->endpoint), ls_free(b->state), ls_free(b->output_file), ls_free(b->error_file);
    ls_free(b->metadata);
    *b = (ls_batch){0};
}

static char *text_copy(sqlite3_stmt *st, int col) {
    const char *t = (const char *)sqlite3_column_text(st, col);
    return ls_strndup(t ? t : "", t ? (size_t)sqlite3_column_bytes(st, col) : 0);
}

ls_status ls_store_file_put(ls_store_t *s, const char *id, const char *purpose, const char *filename, const void *data,
                            size_t len) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "INSERT INTO files(id, purpose, filename, created_ms, data) VALUES (?1, ?2, ?3, ?4, ?5)", &st));
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, purpose, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, filename, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now_ms());
    sqlite3_bind_blob64(st, 5, len ? data : "", (sqlite3_uint64)len, SQLITE_STATIC);
    return run(s, st);
}

ls_status ls_store_file_get(ls_store_t *s, const char *id, ls_file *f, bool with_data) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "SELECT purpose, filename, created_ms, length(data), data FROM files WHERE id = ?1", &st));
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int e = sqlite3_step(st);
    if (e == SQLITE_ROW) {
        *f = (ls_file){0};
        snprintf(f->id, sizeof f->id, "%s", id);
        f->purpose = text_copy(st, 0);
        f->filename = text_copy(st, 1);
        f->created_ms = sqlite3_column_int64(st, 2);
        f->len = (size_t)sqlite3_column_int64(st, 3);
        if (with_data) f->data = blob_copy(st, 4, &f->len);
    }
    sqlite3_finalize(st);
    if (e == SQLITE_ROW) return LS_OK;
    return e == SQLITE_DONE ? LS_ERR(LS_ERR_NOT_FOUND, "no file %s", id) : db_error(s, "read");
}

void ls_file_free(ls_file *f) {
    ls_free(f->purpose), ls_free(f->filename), ls_free(f->data);
    *f = (ls_file){0};
}

static ls_status add_line(ls_store_t *s, const char *batch, int64_t line, const ls_batch_line *l) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "INSERT INTO batch_lines(batch, line, custom_id, error) VALUES (?1, ?2, ?3, ?4)", &st));
    sqlite3_bind_text(st, 1, batch, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, line);
    sqlite3_bind_text(st, 3, l->custom_id ? l->custom_id : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, l->error ? l->error : "", -1, SQLITE_STATIC);
    return run(s, st);
}

static ls_status add_batch(ls_store_t *s, ls_batch *b, const ls_batch_line *lines) {
    sqlite3_stmt *st;
    b->created_ms = now_ms();
    LS_CHECK(prepare(s, "INSERT INTO batches(id, input_file, endpoint, state, n_lines, created_ms, metadata) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", &st));
    sqlite3_bind_text(st, 1, b->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, b->input_file, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, b->endpoint, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, b->state, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, b->n_lines);
    sqlite3_bind_int64(st, 6, b->created_ms);
    sqlite3_bind_text(st, 7, b->metadata ? b->metadata : "null", -1, SQLITE_STATIC);
    LS_CHECK(run(s, st));
    for (int64_t i = 0; i < b->n_lines; i++) LS_CHECK(add_line(s, b->id, i, &lines[i]));
    return LS_OK;
}

ls_status ls_store_batch_add(ls_store_t *s, ls_batch *b, const ls_batch_line *lines) {
    LS_CHECK(exec(s, "BEGIN IMMEDIATE"));
    ls_status rc = add_batch(s, b, lines);
    if (rc == LS_OK) rc = exec(s, "COMMIT");
    if (rc != LS_OK) exec(s, "ROLLBACK");
    return rc;
}

static void read_batch(sqlite3_stmt *st, ls_batch *b) {
    *b = (ls_batch){0};
    snprintf(b->id, sizeof b->id, "%s", (const char *)sqlite3_column_text(st, 0));
    b->input_file = text_copy(st, 1);
    b->endpoint = text_copy(st, 2);
    b->state = text_copy(st, 3);
    b->n_lines = sqlite3_column_int64(st, 4);
    b->created_ms = sqlite3_column_int64(st, 5);
    b->finished_ms = sqlite3_column_int64(st, 6);
    b->output_file = text_copy(st, 7);
    b->error_file = text_copy(st, 8);
    b->metadata = text_copy(st, 9);
    b->seq = sqlite3_column_int64(st, 10);
}

#define BATCH_COLUMNS "id, input_file, endpoint, state, n_lines, created_ms, finished_ms, output_file, error_file, metadata, seq"

ls_status ls_store_batch_get(ls_store_t *s, const char *id, ls_batch *b) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "SELECT " BATCH_COLUMNS " FROM batches WHERE id = ?1", &st));
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int e = sqlite3_step(st);
    if (e == SQLITE_ROW) read_batch(st, b);
    sqlite3_finalize(st);
    if (e == SQLITE_ROW) return LS_OK;
    return e == SQLITE_DONE ? LS_ERR(LS_ERR_NOT_FOUND, "no batch %s", id) : db_error(s, "read");
}

ls_status ls_store_batch_list(ls_store_t *s, bool open_only, int64_t limit, void (*fn)(void *ctx, const ls_batch *b), void *ctx) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, open_only ? "SELECT " BATCH_COLUMNS " FROM batches WHERE finished_ms = 0 ORDER BY seq LIMIT ?1"
                                  : "SELECT " BATCH_COLUMNS " FROM batches ORDER BY seq DESC LIMIT ?1", &st));
    sqlite3_bind_int64(st, 1, limit);
    int e;
    while ((e = sqlite3_step(st)) == SQLITE_ROW) {
        ls_batch b;
        read_batch(st, &b);
        fn(ctx, &b);
        ls_batch_free(&b);
    }
    sqlite3_finalize(st);
    return e == SQLITE_DONE ? LS_OK : db_error(s, "read");
}

ls_status ls_store_batch_set_state(ls_store_t *s, const char *id, const char *state) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "UPDATE batches SET state = ?2 WHERE id = ?1", &st));
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
    return run(s, st);
}

static ls_status finish_batch(ls_store_t *s, const ls_batch *b, const char *state, const ls_buf *out, const ls_buf *err) {
    LS_CHECK(ls_store_file_put(s, b->output_file, "batch_output", "output.jsonl", out->data, out->len));
    LS_CHECK(ls_store_file_put(s, b->error_file, "batch_output", "errors.jsonl", err->data, err->len));
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "UPDATE batches SET state = ?2, finished_ms = ?3, output_file = ?4, error_file = ?5 WHERE id = ?1", &st));
    sqlite3_bind_text(st, 1, b->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_ms());
    sqlite3_bind_text(st, 4, b->output_file, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, b->error_file, -1, SQLITE_STATIC);
    return run(s, st);
}

ls_status ls_store_batch_finish(ls_store_t *s, const ls_batch *b, const char *state, const ls_buf *out, const ls_buf *err) {
    LS_CHECK(exec(s, "BEGIN IMMEDIATE"));
    ls_status rc = finish_batch(s, b, state, out, err);
    if (rc == LS_OK) rc = exec(s, "COMMIT");
    if (rc != LS_OK) exec(s, "ROLLBACK");
    return rc;
}

ls_status ls_store_batch_line_set(ls_store_t *s, const char *batch, int64_t line, const char *job, const char *error) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "UPDATE batch_lines SET job = ?3, error = ?4 WHERE batch = ?1 AND line = ?2", &st));
    sqlite3_bind_text(st, 1, batch, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, line);
    sqlite3_bind_text(st, 3, job ? job : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, error ? error : "", -1, SQLITE_STATIC);
    return run(s, st);
}

ls_status ls_store_batch_lines(ls_store_t *s, const char *batch, void (*fn)(void *ctx, int64_t line, const ls_batch_line *l,
                               int job_state), void *ctx) {
    sqlite3_stmt *st;
    LS_CHECK(prepare(s, "SELECT l.line, l.custom_id, l.job, l.error, coalesce(j.state, -1) FROM batch_lines l "
                        "LEFT JOIN jobs j ON j.id = l.job WHERE l.batch = ?1 ORDER BY l.line", &st));
    sqlite3_bind_text(st, 1, batch, -1, SQLITE_STATIC);
    int e;
    while ((e = sqlite3_step(st)) == SQLITE_ROW) {
        ls_batch_line l = {(const char *)sqlite3_column_text(st, 1), (const char *)sqlite3_column_text(st, 2),
                           (const char *)sqlite3_column_text(st, 3)};
        fn(ctx, sqlite3_column_int64(st, 0), &l, sqlite3_column_int(st, 4));
    }
    sqlite3_finalize(st);
    return e == SQLITE_DONE ? LS_OK : db_error(s, "read");
}

ls_status ls_store_new_named_id(const char *prefix, char id[40]) {
    LS_CHECK(ls_store_new_id(id));
    char tail[40];
    snprintf(tail, sizeof tail, "%s", id + 1);
    snprintf(id, 40, "%s%s", prefix, tail);
    return LS_OK;
}
