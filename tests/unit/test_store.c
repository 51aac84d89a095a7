// test_store.c — the SQLite job store: FIFO order, all-or-nothing submits, state changes and
// results that survive closing and reopening, running jobs queued again after a restart, the
// state log, a submit whose refused documents are stored as failed jobs next to the queued
// ones, and a store from a newer schema refused; the state directory created 0700 and the
// store's files 0600 whatever the umask, a directory others may write to refused; the HTTP
// Batch API's files, batches and lines (all lines stored with the batch, a line's job and error
// recorded, the lines read back in order with their jobs' states, the output files and the
// closing in one call), kept across a reopen; a long-document strategy's parent (stored running
// with its document and without tokens, never queued, never requeued, listed as open until it
// finishes) and its children in order.
#include "ls_store.h"
#include "ls_test.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static ls_job make(const char *name, int32_t n) {
    ls_job j = {0};
    ls_store_new_id(j.id);
    j.name = ls_strndup(name, strlen(name));
    j.settings = ls_malloc(3);
    memcpy(j.settings, "\x08\x01\x10", 3);
    j.settings_len = 3;
    j.n_tokens = n;
    j.tokens = ls_malloc((size_t)n * sizeof(int32_t));
    for (int32_t i = 0; i < n; i++) j.tokens[i] = 7 * i + 1;
    return j;
}

static void on_job(void *ctx, const ls_job *j) {
    ls_buf *names = ctx;
    ls_buf_printf(names, "%s:%s ", j->name, ls_job_state_name(j->state));
}

static unsigned mode_of(const char *dir, const char *name) {
    char p[256];
    snprintf(p, sizeof p, "%s%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0 ? (unsigned)(st.st_mode & 07777) : 01000; // 01000: missing
}

// With umask 0 (files would be 0666, directories 0777): the state is the owner's alone.
static void test_modes(void) {
    char base[] = "/tmp/ls-store-modes-XXXXXX", dir[200], want[600];
    TEST_COND(mkdtemp(base) != NULL, "temp dir");
    snprintf(dir, sizeof dir, "%s/state", base);
    mode_t old = umask(0);
    ls_store_t *s;
    TEST_COND(ls_store_open(dir, &s) == LS_OK, "open: %s", ls_err_msg());
    ls_job j = make("m", 3);
    TEST_COND(ls_store_add(s, &j, 1) == LS_OK, "a write (the -wal and -shm files exist)");
    TEST_COND(mode_of(dir, "") == 0700 && mode_of(dir, "/jobs.db") == 0600 && mode_of(dir, "/jobs.db-wal") == 0600 &&
                  mode_of(dir, "/jobs.db-shm") == 0600, "modes: dir %04o, jobs.db %04o, -wal %04o, -shm %04o",
              mode_of(dir, ""), mode_of(dir, "/jobs.db"), mode_of(dir, "/jobs.db-wal"), mode_of(dir, "/jobs.db-shm"));
    ls_store_close(s);
    char db[260];
    snprintf(db, sizeof db, "%s/jobs.db", dir);
    chmod(db, 0644); // as older versions left it: made private on open
    TEST_COND(ls_store_open(dir, &s) == LS_OK && mode_of(dir, "/jobs.db") == 0600, "jobs.db 0644 made 0600");
    ls_store_close(s);
    chmod(dir, 0777);
    snprintf(want, sizeof want, "the state directory %s has mode 0777: group or others may write to it; run chmod 700 %s",
             dir, dir);
    TEST_ERR(ls_store_open(dir, &s), LS_ERR_INVALID, want);
    chmod(dir, 0750);
    TEST_COND(ls_store_open(dir, &s) == LS_OK, "0750 (readable by the group) is accepted");
    ls_store_close(s);
    umask(old);
    ls_job_free(&j);
    char cmd[260];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    TEST_COND(system(cmd) == 0, "cleanup");
}

// A submit with a refused document: it is stored failed (finished, with its error and its log
// row) in the same transaction as the queued job, and never handed out.
static void failed_documents(void) {
    char dir[] = "/tmp/ls-store-XXXXXX";
    TEST_COND(mkdtemp(dir) != NULL, "temp dir");
    ls_store_t *s;
    TEST_COND(ls_store_open(dir, &s) == LS_OK, "open: %s", ls_err_msg());
    ls_job jobs[2] = {make("bad", 0), make("good", 4)};
    jobs[0].state = LS_JOB_FAILED;
    jobs[0].error = ls_strndup("the text is empty", 17);
    TEST_COND(ls_store_add(s, jobs, 2) == LS_OK, "add a failed and a queued job: %s", ls_err_msg());
    ls_job j;
    bool found;
    TEST_COND(ls_store_get(s, jobs[0].id, &j) == LS_OK && j.state == LS_JOB_FAILED && !strcmp(j.error, "the text is empty") &&
                  j.finished_ms == j.created_ms && j.finished_ms > 0, "the refused document is a failed job with its error");
    ls_job_free(&j);
    TEST_COND(ls_store_next_queued(s, &j, &found) == LS_OK && found && !strcmp(j.name, "good"), "only the good one is queued");
    ls_job_free(&j);
    int64_t n = 0;
    TEST_COND(ls_store_count(s, LS_JOB_FAILED, &n) == LS_OK && n == 1, "one failed (%lld)", (long long)n);
    ls_store_close(s);
    char path[128];
    snprintf(path, sizeof path, "%s/jobs.db", dir);
    sqlite3 *db;
    sqlite3_open(path, &db);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT state, error FROM job_log WHERE job_id = ?1", -1, &st, NULL);
    sqlite3_bind_text(st, 1, jobs[0].id, -1, SQLITE_STATIC);
    TEST_COND(sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == LS_JOB_FAILED &&
                  !strcmp((const char *)sqlite3_column_text(st, 1), "the text is empty"), "its log row says failed, and why");
    sqlite3_finalize(st);
    sqlite3_close(db);
    for (int i = 0; i < 2; i++) ls_job_free(&jobs[i]);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    TEST_COND(system(cmd) == 0, "cleanup");
}

static void count_lines(void *ctx, int64_t line, const ls_batch_line *l, int st) {
    ls_buf *b = ctx;
    ls_buf_printf(b, "%lld:%s:%s:%s:%d ", (long long)line, l->custom_id, *l->job ? "job" : "-", *l->error ? l->error : "-", st);
}

static void batches(void) {
    char dir[] = "/tmp/ls-store-batch-XXXXXX";
    TEST_COND(mkdtemp(dir) != NULL, "temp dir");
    ls_store_t *s;
    TEST_COND(ls_store_open(dir, &s) == LS_OK, "open: %s", ls_err_msg());
    char fid[40];
    TEST_COND(ls_store_new_named_id("file-", fid) == LS_OK && !strncmp(fid, "file-", 5) && strlen(fid) == 21, "file id %s", fid);
    TEST_COND(ls_store_file_put(s, fid, "batch", "in.jsonl", "a\nb\nc\n", 6) == LS_OK, "file put: %s", ls_err_msg());
    ls_file f;
    TEST_COND(ls_store_file_get(s, fid, &f, true) == LS_OK && f.len == 6 && !memcmp(f.data, "a\nb\nc\n", 6) &&
                  !strcmp(f.filename, "in.jsonl") && !strcmp(f.purpose, "batch"), "file get");
    ls_file_free(&f);
    TEST_ERR(ls_store_file_get(s, "file-nope", &f, false), LS_ERR_NOT_FOUND, "no file file-nope");
    ls_batch b = {.input_file = fid, .endpoint = "/v1/completions", .state = "in_progress", .n_lines = 3, .metadata = "{}"};
    ls_batch_line lines[3] = {{"x", "", ""}, {"", "", "not JSON"}, {"z", "", ""}};
    TEST_COND(ls_store_new_named_id("batch_", b.id) == LS_OK, "batch id");
    TEST_COND(ls_store_batch_add(s, &b, lines) == LS_OK, "batch add: %s", ls_err_msg());
    ls_job j = make("line0", 4);
    TEST_COND(ls_store_add(s, &j, 1) == LS_OK && ls_store_batch_line_set(s, b.id, 0, j.id, "") == LS_OK, "line 0's job");
    TEST_COND(ls_store_batch_line_set(s, b.id, 2, "", "too long") == LS_OK, "line 2's error");
    ls_buf got = {0};
    TEST_COND(ls_store_batch_lines(s, b.id, count_lines, &got) == LS_OK, "lines");
    TEST_COND(!strcmp(got.data, "0:x:job:-:0 1::-:not JSON:-1 2:z:-:too long:-1 "), "lines in order: %s", got.data);
    ls_store_close(s);
    TEST_COND(ls_store_open(dir, &s) == LS_OK, "reopen");
    ls_batch back;
    TEST_COND(ls_store_batch_get(s, b.id, &back) == LS_OK && back.n_lines == 3 && !back.finished_ms &&
                  !strcmp(back.state, "in_progress") && !strcmp(back.endpoint, "/v1/completions"), "batch kept");
    ls_buf out = {0}, err = {0};
    ls_buf_printf(&out, "o\n"), ls_buf_printf(&err, "e\n");
    char oid[40], eid[40];
    ls_store_new_named_id("file-", oid), ls_store_new_named_id("file-", eid);
    ls_free(back.output_file), ls_free(back.error_file);
    back.output_file = ls_strndup(oid, strlen(oid)), back.error_file = ls_strndup(eid, strlen(eid));
    TEST_COND(ls_store_batch_finish(s, &back, "completed", &out, &err) == LS_OK, "finish: %s", ls_err_msg());
    ls_batch_free(&back);
    TEST_COND(ls_store_batch_get(s, b.id, &back) == LS_OK && back.finished_ms && !strcmp(back.state, "completed") &&
                  !strcmp(back.output_file, oid), "closed with its files");
    TEST_COND(ls_store_file_get(s, eid, &f, true) == LS_OK && f.len == 2 && !memcmp(f.data, "e\n", 2), "error file");
    ls_file_free(&f), ls_batch_free(&back), ls_job_free(&j);
    ls_buf_free(&got), ls_buf_free(&out), ls_buf_free(&err);
    TEST_ERR(ls_store_batch_get(s, "batch_nope", &back), LS_ERR_NOT_FOUND, "no batch batch_nope");
    ls_store_close(s);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    TEST_COND(system(cmd) == 0, "cleanup");
}

static void on_child(void *ctx, const ls_job *j) {
    ls_buf *b = ctx;
    ls_buf_printf(b, "%s/%s:%s ", j->tag, j->parent[0] ? "child" : "?", ls_job_state_name(j->state));
}

static void parents(void) {
    char dir[] = "/tmp/ls-store-parent-XXXXXX";
    TEST_COND(mkdtemp(dir) != NULL, "temp dir");
    ls_store_t *s;
    TEST_COND(ls_store_open(dir, &s) == LS_OK, "open: %s", ls_err_msg());
    ls_job p = make("doc", 0), kids[2] = {make("doc [chunk 1/2]", 3), make("doc [chunk 2/2]", 4)};
    ls_free(p.tokens), p.tokens = NULL, p.n_tokens = 9000; // a parent: its document's tokens, none of its own
    p.is_parent = true, p.doc = (uint8_t *)ls_strndup("Some long text.", 15), p.doc_len = 15, p.tag = ls_strndup("map-reduce", 10);
    TEST_COND(ls_store_add(s, &p, 1) == LS_OK && p.state == LS_JOB_RUNNING, "a parent is stored running");
    bool found;
    ls_job j;
    TEST_COND(ls_store_next_queued(s, &j, &found) == LS_OK && !found, "a parent is never queued");
    for (int i = 0; i < 2; i++) {
        snprintf(kids[i].parent, sizeof kids[i].parent, "%s", p.id);
        kids[i].tag = ls_strndup(i ? "c1" : "c0", 2);
    }
    TEST_COND(ls_store_add(s, kids, 2) == LS_OK, "children");
    TEST_COND(ls_store_next_queued(s, &j, &found) == LS_OK && found && !strcmp(j.parent, p.id) && !strcmp(j.tag, "c0") &&
                  j.n_tokens == 3 && !j.is_parent, "the first child is next");
    ls_job_free(&j);
    TEST_COND(ls_store_set_state(s, kids[0].id, LS_JOB_RUNNING, 1, "") == LS_OK, "a child runs");
    ls_store_close(s);
    TEST_COND(ls_store_open(dir, &s) == LS_OK, "reopen");
    int64_t n;
    TEST_COND(ls_store_requeue_running(s, &n) == LS_OK && n == 1, "the running child requeued, not the parent (%lld)", (long long)n);
    TEST_COND(ls_store_get(s, p.id, &j) == LS_OK && j.state == LS_JOB_RUNNING && j.is_parent && !strcmp(j.tag, "map-reduce") &&
                  j.n_tokens == 9000, "the parent stays running");
    ls_job_free(&j);
    ls_buf b = {0};
    TEST_COND(ls_store_children(s, p.id, on_child, &b) == LS_OK && !strcmp(b.data, "c0/child:queued c1/child:queued "),
              "children in order: %s", b.data);
    ls_buf_clear(&b);
    TEST_COND(ls_store_open_parents(s, on_job, &b) == LS_OK && !strcmp(b.data, "doc:running "), "open parents: %s", b.data);
    uint8_t *doc;
    size_t len;
    TEST_COND(ls_store_doc(s, p.id, &doc, &len) == LS_OK && len == 15 && !memcmp(doc, "Some long text.", 15), "its document");
    ls_free(doc);
    TEST_ERR(ls_store_doc(s, kids[0].id, &doc, &len), LS_ERR_NOT_FOUND, "has no document of its own");
    TEST_COND(ls_store_finish(s, p.id, LS_JOB_DONE, (const uint8_t *)"R", 1, "") == LS_OK, "the parent done");
    ls_buf_clear(&b);
    TEST_COND(ls_store_open_parents(s, on_job, &b) == LS_OK && b.len == 0, "no open parent left: %s", b.data ? b.data : "");
    ls_buf_free(&b);
    ls_store_close(s);
    ls_job_free(&p), ls_job_free(&kids[0]), ls_job_free(&kids[1]);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    TEST_COND(system(cmd) == 0, "cleanup");
}

int main(void) {
    test_modes();
    char dir[] = "/tmp/ls-store-XXXXXX";
    TEST_COND(mkdtemp(dir) != NULL, "temp dir");
    ls_store_t *s;
    TEST_COND(ls_store_open(dir, &s) == LS_OK, "open: %s", ls_err_msg());
    ls_job jobs[3] = {make("a", 5), make("b", 1), make("c", 300)};
    TEST_COND(strlen(jobs[0].id) == 17 && strcmp(jobs[0].id, jobs[1].id), "ids %s %s", jobs[0].id, jobs[1].id);
    TEST_COND(ls_store_add(s, jobs, 3) == LS_OK, "add");
    ls_job dup = make("dup", 2);
    snprintf(dup.id, sizeof dup.id, "%s", jobs[0].id); // a repeated id: the whole call is refused
    ls_job two[2] = {make("d", 2), dup};
    TEST_COND(ls_store_add(s, two, 2) != LS_OK, "a failing add");
    ls_err_clear();
    int64_t n = 0;
    TEST_COND(ls_store_count(s, LS_JOB_QUEUED, &n) == LS_OK && n == 3, "all or nothing: %lld queued", (long long)n);
    ls_job j;
    bool found;
    TEST_COND(ls_store_next_queued(s, &j, &found) == LS_OK && found && !strcmp(j.name, "a") && j.n_tokens == 5 &&
                  j.tokens[4] == 29 && j.settings_len == 3, "FIFO: the first job with its tokens");
    ls_job_free(&j);
    TEST_COND(ls_store_set_state(s, jobs[0].id, LS_JOB_RUNNING, 1, "") == LS_OK, "running");
    TEST_COND(ls_store_next_queued(s, &j, &found) == LS_OK && found && !strcmp(j.name, "b"), "next is b");
    ls_job_free(&j);
    TEST_COND(ls_store_ahead(s, jobs[2].seq, &n) == LS_OK && n == 1, "one queued ahead of c (%lld)", (long long)n);
    TEST_COND(ls_store_finish(s, jobs[1].id, LS_JOB_DONE, (const uint8_t *)"RESULT", 6, "") == LS_OK, "b done");
    ls_store_close(s);

    TEST_COND(ls_store_open(dir, &s) == LS_OK, "reopen");
    TEST_COND(ls_store_requeue_running(s, &n) == LS_OK && n == 1, "one running job queued again (%lld)", (long long)n);
    TEST_COND(ls_store_get(s, jobs[1].id, &j) == LS_OK && j.state == LS_JOB_DONE && j.result_len == 6 &&
                  !memcmp(j.result, "RESULT", 6) && j.finished_ms >= j.created_ms, "b's result kept");
    ls_job_free(&j);
    TEST_COND(ls_store_get(s, jobs[0].id, &j) == LS_OK && j.state == LS_JOB_QUEUED && j.attempts == 1, "a queued, 1 attempt");
    ls_job_free(&j);
    TEST_ERR(ls_store_get(s, "jnope", &j), LS_ERR_NOT_FOUND, "no job jnope");
    ls_buf names = {0};
    TEST_COND(ls_store_list(s, 2, on_job, &names) == LS_OK && !strcmp(names.data, "c:queued b:done "), "list: %s", names.data);
    ls_buf_free(&names);
    ls_store_close(s);

    char path[128];
    snprintf(path, sizeof path, "%s/jobs.db", dir);
    sqlite3 *db;
    sqlite3_open(path, &db);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT count(*) FROM job_log", -1, &st, NULL);
    sqlite3_step(st);
    TEST_COND(sqlite3_column_int(st, 0) == 6, "six state changes logged (%d)", sqlite3_column_int(st, 0));
    sqlite3_finalize(st);
    sqlite3_exec(db, "PRAGMA user_version = 7", NULL, NULL, NULL);
    sqlite3_close(db);
    TEST_ERR(ls_store_open(dir, &s), LS_ERR_UNSUPPORTED, "schema version 7");
    for (int i = 0; i < 3; i++) ls_job_free(&jobs[i]);
    ls_job_free(&two[0]), ls_job_free(&two[1]);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    TEST_COND(system(cmd) == 0, "cleanup");
    failed_documents();
    batches();
    parents();
    return TEST_REPORT("test_store");
}
