// prep_pool.c — a Submit's documents prepared off the server's loop: a few threads take the
// documents of the tasks in order, one document at a time, and call ls_prep_document on the
// shared ls_prep (read only; the tokenizer and chat template keep no state between calls).
// When a task's last document is done the task moves to the done list and the loop is woken;
// the loop commits and answers. The pool never touches a task's owner (the loop's connection).
// Tests: tests/oracle/test_service.py (test_documents, test_prep_off_loop).
#include "server_impl.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>

#define NAME_MAX_BYTES 1024

struct ls_prep_pool {
    const ls_prep *prep;
    int64_t max_job_tokens;
    void (*wake)(void);
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ls_prep_task *queue, *queue_tail; // tasks with documents not yet taken
    ls_prep_task *done, *done_tail;   // tasks whose documents are all done
    bool stopping;
    pthread_t *threads;
    int n_threads;
};

void ls_prep_task_free(ls_prep_task *t) {
    if (!t) return;
    for (size_t i = 0; t->docs && i < t->req->n_documents; i++) {
        ls_free(t->docs[i].ids.data);
        ls_free(t->docs[i].name);
        ls_free(t->docs[i].error);
    }
    ls_free(t->docs);
    longseq__submit_request__free_unpacked(t->req, NULL);
    ls_free(t);
}

// One document: its name to store (a name that is not UTF-8 of at most 1024 bytes is kept
// shortened and with U+FFFD for its bad bytes, so results stay valid protobuf strings), then
// its tokens or why it is refused.
static void prepare_one(ls_prep_pool *pool, const ls_prep_task *t, ls_prep_doc *d, const Longseq__Document *doc) {
    const char *name = doc->name ? doc->name : "";
    size_t len = strlen(name);
    if (len <= NAME_MAX_BYTES && ls_utf8_valid(name, len, NULL)) {
        d->name = ls_strndup(name, len);
    } else {
        ls_buf safe = {0};
        ls_utf8_sanitize(name, len < 256 ? len : 256, &safe);
        d->name = ls_strndup(safe.data ? safe.data : "", safe.len);
        ls_buf_free(&safe);
        ls_buf why = {0};
        ls_buf_printf(&why, "the name (%zu bytes) is not UTF-8 of at most %d bytes", len, NAME_MAX_BYTES);
        d->error = why.data;
        return;
    }
    ls_strategy st = LS_STRAT_DIRECT;
    ls_status rc = t->rendered ? LS_OK : ls_prep_strategy(pool->prep, t->set, doc->text.data, doc->text.len, &st, &d->doc_tokens);
    d->strategy = st;
    if (rc == LS_OK && st != LS_STRAT_DIRECT) { // a parent: its children are prepared when the plan needs them
        d->parent = true;
        return;
    }
    if (rc == LS_OK &&
        ls_prep_document(pool->prep, t->set, doc->text.data, doc->text.len, t->rendered, pool->max_job_tokens, &d->ids) == LS_OK)
        return;
    d->error = ls_strndup(ls_err_msg(), strlen(ls_err_msg()));
    ls_err_clear();
    ls_free(d->ids.data);
    d->ids = (ls_vec_i32){0};
}

static void push(ls_prep_task **head, ls_prep_task **tail, ls_prep_task *t) {
    t->link = NULL;
    if (*tail) (*tail)->link = t;
    else *head = t;
    *tail = t;
}

// Takes documents until the pool stops and its queue is empty. Documents of a cancelled task,
// or taken after the pool began to stop, are skipped (an error, never committed).
static void *worker(void *arg) {
    ls_prep_pool *pool = arg;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (!pool->queue && !pool->stopping) pthread_cond_wait(&pool->cv, &pool->mu);
        ls_prep_task *t = pool->queue;
        if (!t) break;
        size_t i = t->next++;
        if (t->next == t->req->n_documents && !(pool->queue = t->link)) pool->queue_tail = NULL;
        bool skip = t->cancelled || pool->stopping;
        pthread_mutex_unlock(&pool->mu);
        static const char abandoned[] = "not prepared: the call was abandoned";
        if (skip) t->docs[i].error = ls_strndup(abandoned, sizeof abandoned - 1);
        else prepare_one(pool, t, &t->docs[i], t->req->documents[i]);
        pthread_mutex_lock(&pool->mu);
        if (++t->n_done == t->req->n_documents) {
            push(&pool->done, &pool->done_tail, t);
            pool->wake();
        }
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

ls_status ls_prep_pool_start(const ls_prep *p, int64_t max_job_tokens, int threads, void (*wake)(void),
                             ls_prep_pool **out) {
    ls_prep_pool *pool = ls_calloc(1, sizeof *pool);
    *pool = (ls_prep_pool){.prep = p, .max_job_tokens = max_job_tokens, .wake = wake};
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    pool->threads = ls_calloc((size_t)threads, sizeof *pool->threads);
    sigset_t all, old; // signals go to the loop's thread, never to these
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = 0;
    while (pool->n_threads < threads && !e) {
        e = pthread_create(&pool->threads[pool->n_threads], NULL, worker, pool);
        if (!e) pool->n_threads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        ls_prep_pool_free(pool);
        return LS_ERR(LS_ERR_IO, "cannot start the document preparation threads: %s", strerror(e));
    }
    *out = pool;
    return LS_OK;
}

void ls_prep_pool_add(ls_prep_pool *pool, ls_prep_task *t) {
    t->docs = ls_calloc(t->req->n_documents, sizeof *t->docs);
    pthread_mutex_lock(&pool->mu);
    push(&pool->queue, &pool->queue_tail, t);
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
}

void ls_prep_pool_cancel(ls_prep_pool *pool, ls_prep_task *t) {
    pthread_mutex_lock(&pool->mu);
    t->cancelled = true;
    pthread_mutex_unlock(&pool->mu);
}

ls_prep_task *ls_prep_pool_take_done(ls_prep_pool *pool) {
    pthread_mutex_lock(&pool->mu);
    ls_prep_task *t = pool->done;
    if (t && !(pool->done = t->link)) pool->done_tail = NULL;
    pthread_mutex_unlock(&pool->mu);
    return t;
}

void ls_prep_pool_free(ls_prep_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mu);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->n_threads; i++) pthread_join(pool->threads[i], NULL);
    ls_prep_task *t;
    while ((t = ls_prep_pool_take_done(pool))) ls_prep_task_free(t); // (the queue is empty now)
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    ls_free(pool->threads);
    ls_free(pool);
}
