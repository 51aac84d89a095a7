// strategy.c — the long-document strategies run by the coordinator (docs/architecture.md ("Long
// documents")): a job whose settings.strategy is extend or map-reduce (or auto choosing one) is
// a parent whose children are ordinary jobs: extend's one call with RoPE stretched over the
// document, or map-reduce's chunk calls ("part i of n") and then its combine calls, level by
// level (coordinator/mapreduce.c cuts and groups). Each step rebuilds the plan from the stored
// document and the children's results, so a restarted coordinator goes on where they are.
// Tests: tests/oracle/test_strategy.py.
#include "server_impl.h"
#include "ls_mapreduce.h"

#include <math.h>
#include <string.h>
#include <time.h>

// --- the children as stored ---------------------------------------------------------------------

typedef struct kid {
    char id[40];
    char *tag, *error;
    ls_job_state state;
    Longseq__JobResult *r; // DONE: its result
} kid;

typedef struct kids {
    kid *v;
    size_t n, cap;
} kids;

static void collect(void *ctx, const ls_job *j) {
    kids *k = ctx;
    if (k->n == k->cap) k->v = ls_realloc(k->v, (k->cap = k->cap ? 2 * k->cap : 16) * sizeof *k->v);
    kid *d = &k->v[k->n++];
    *d = (kid){.state = j->state};
    snprintf(d->id, sizeof d->id, "%s", j->id);
    d->tag = ls_strndup(j->tag, strlen(j->tag));
    d->error = ls_strndup(j->error, strlen(j->error));
    if (j->state == LS_JOB_DONE && j->result_len) d->r = longseq__job_result__unpack(NULL, j->result_len, j->result);
}

static void kids_free(kids *k) {
    for (size_t i = 0; i < k->n; i++) {
        ls_free(k->v[i].tag), ls_free(k->v[i].error);
        if (k->v[i].r) longseq__job_result__free_unpacked(k->v[i].r, NULL);
    }
    ls_free(k->v);
}

static kid *find(const kids *k, const char *tag) {
    for (size_t i = 0; i < k->n; i++)
        if (!strcmp(k->v[i].tag, tag)) return &k->v[i];
    return NULL;
}

void ls_strat_job_of(ls_job *j, const ls_prep_doc *d, const ProtobufCBinaryData *text) {
    if (!d->parent || d->error) return;
    const char *name = ls_strategy_name(d->strategy);
    j->is_parent = true;
    j->doc = ls_malloc(text->len ? text->len : 1), j->doc_len = text->len;
    if (text->len) memcpy(j->doc, text->data, text->len);
    j->n_tokens = d->doc_tokens;
    j->tag = ls_strndup(name, strlen(name));
}

// --- one step ---------------------------------------------------------------------------------

typedef struct plan {
    const ls_strat_host *h;
    ls_job parent;
    Longseq__Settings *set;
    uint8_t *doc;
    size_t len;
    kids k;
    bool dry;
    ls_job *add; // children to queue in this step
    size_t n_add;
    char stage[128];
    uint64_t est_tokens; // the tokens the whole plan reads and writes, about (the progress)
} plan;

// A child to queue: its prompt prepared under the parent's settings with its own request (and
// extend's RoPE); a text the server refuses makes a child already failed, which fails the parent.
static ls_status add_child(plan *p, const char *tag, const char *stage, const char *text, size_t len, const char *request,
                           const char *rope, double factor) {
    if (p->dry) return LS_OK;
    Longseq__Settings c = *p->set;
    c.strategy = "", c.chunk_tokens = 0, c.combine_parts = 0;
    c.instruction = (char *)request;
    if (rope) c.rope_scaling = (char *)rope, c.rope_scale = (float)factor;
    p->add = ls_realloc(p->add, (p->n_add + 1) * sizeof *p->add);
    ls_job *j = &p->add[p->n_add++];
    *j = (ls_job){0};
    LS_CHECK(ls_store_new_id(j->id));
    ls_buf name = {0};
    ls_buf_printf(&name, "%s [%s]", p->parent.name, stage);
    j->name = name.data;
    j->tag = ls_strndup(tag, strlen(tag));
    snprintf(j->parent, sizeof j->parent, "%s", p->parent.id);
    j->settings_len = longseq__settings__get_packed_size(&c);
    j->settings = ls_malloc(j->settings_len ? j->settings_len : 1);
    longseq__settings__pack(&c, j->settings);
    ls_vec_i32 ids = {0};
    if (ls_prep_document(p->h->prep, &c, (const uint8_t *)text, len, false, p->h->max_job_tokens, &ids) == LS_OK) {
        j->state = LS_JOB_QUEUED, j->tokens = ids.data, j->n_tokens = (int64_t)ids.len;
    } else {
        j->state = LS_JOB_FAILED;
        j->error = ls_strndup(ls_err_msg(), strlen(ls_err_msg()));
        ls_err_clear();
        ls_free(ids.data);
    }
    return LS_OK;
}

// The children of this step committed in one transaction, then announced; one the server
// refused (its text does not fit, say) ends the parent at once. *ended: it did.
static ls_status commit_children(plan *p, bool *ended) {
    *ended = false;
    if (!p->n_add) return LS_OK;
    LS_CHECK(ls_store_add(p->h->store, p->add, p->n_add));
    p->h->queued(p->h->server, p->add, p->n_add);
    for (size_t i = 0; i < p->n_add && !*ended; i++)
        if (p->add[i].state == LS_JOB_FAILED) {
            ls_buf why = {0};
            ls_buf_printf(&why, "%s (job %s) was refused: %s", p->add[i].name, p->add[i].id, p->add[i].error);
            ls_strat_end(p->h, &p->parent, LS_JOB_FAILED, why.data);
            ls_buf_free(&why);
            *ended = true;
        }
    return LS_OK;
}

// The figures of the children done, and the progress line's numbers.
typedef struct sums {
    uint64_t tokens, generated;
    double prefill_ms, decode_ms;
    uint32_t calls, ranks;
} sums;

static sums add_up(const kids *k) {
    sums s = {0};
    for (size_t i = 0; i < k->n; i++) {
        const Longseq__JobResult *r = k->v[i].r;
        if (!r) continue;
        s.tokens += r->tokens, s.generated += r->generated;
        s.prefill_ms += r->prefill_ms, s.decode_ms += r->decode_ms;
        s.calls++, s.ranks = r->ranks;
    }
    return s;
}

static double now_unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void say_stage(plan *p) {
    if (p->dry) return;
    sums s = add_up(&p->k);
    double done = (double)(s.tokens + s.generated), secs = (now_unix_ms() - (double)p->parent.created_ms) / 1e3;
    double rate = secs > 0 ? done / secs : 0, est = p->est_tokens > done ? (double)p->est_tokens : done + 1;
    p->h->stage(p->h->server, p->parent.id, p->stage, done / est, rate, rate > 0 ? (est - done) / rate : 0);
}

// The parent done: the final child's text with the figures of all of them.
static void finish_done(plan *p, const kid *last, const char *strategy, size_t chunks, int levels, char **parts, size_t n_parts,
                        int64_t chunk_tokens) {
    if (p->dry) return;
    sums s = add_up(&p->k);
    Longseq__JobResult r = LONGSEQ__JOB_RESULT__INIT;
    r.task = LONGSEQ__TASK__SUMMARIZE;
    r.text = last->r->text;
    r.stop = last->r->stop;
    r.rope = last->r->rope;
    r.attention = last->r->attention;
    r.tokens = (uint64_t)p->parent.n_tokens;
    r.generated = s.generated;
    r.prefill_ms = s.prefill_ms, r.decode_ms = s.decode_ms;
    r.ranks = s.ranks;
    r.strategy = (char *)strategy;
    r.chunks = (uint32_t)chunks, r.levels = (uint32_t)levels, r.calls = s.calls;
    r.parts = parts, r.n_parts = n_parts;
    r.chunk_tokens = (uint32_t)chunk_tokens;
    p->h->finish(p->h->server, p->parent.id, p->parent.name, p->parent.attempts, LS_JOB_DONE, &r, NULL);
}

// A child that failed or was cancelled fails the parent with its reason.
static bool child_failed(plan *p) {
    for (size_t i = 0; i < p->k.n; i++) {
        const kid *d = &p->k.v[i];
        if (d->state != LS_JOB_FAILED && d->state != LS_JOB_CANCELLED) continue;
        if (p->dry) return true;
        ls_buf why = {0};
        ls_buf_printf(&why, "%s (job %s) %s: %s", d->tag[0] == 'x' ? "the extend call" : d->tag[0] == 'c' ? "a chunk call" : "a combine call",
                      d->id, ls_job_state_name(d->state), d->error);
        ls_strat_end(p->h, &p->parent, LS_JOB_FAILED, why.data);
        ls_buf_free(&why);
        return true;
    }
    return false;
}

static ls_status step_extend(plan *p) {
    kid *x = find(&p->k, "x");
    snprintf(p->stage, sizeof p->stage, "extend");
    int64_t gen = ls_settings_max_tokens(p->set);
    p->est_tokens = (uint64_t)(p->parent.n_tokens + gen);
    if (!x) { // the job's or the server's own RoPE as given; else the measured method, stretched over the length
        char method[16];
        double f = 1;
        bool given = (p->set->rope_scaling && *p->set->rope_scaling) || p->set->rope_scale > 0 || p->h->prep->rope.scaling >= 0;
        if (!given) ls_strategy_extend_rope(&p->h->prep->sm, p->parent.n_tokens, gen, method, sizeof method, &f);
        const char *ask = p->set->instruction && *p->set->instruction ? p->set->instruction : "Summarize the text above in a few sentences.";
        bool ended;
        LS_CHECK(add_child(p, "x", "extend", (const char *)p->doc, p->len, ask, f > 1 ? method : NULL, f));
        LS_CHECK(commit_children(p, &ended));
        if (ended) return LS_OK;
    } else if (x->state == LS_JOB_DONE && x->r) {
        finish_done(p, x, "extend", 1, 0, NULL, 0, 0);
        return LS_OK;
    }
    say_stage(p);
    return LS_OK;
}

// The chunk budget in bytes: the chunk's tokens less the generation and the request, times the
// document's own bytes per token, less 10% for denser passages.
static ls_status chunk_budget(plan *p, size_t *budget) {
    int64_t gen = ls_settings_max_tokens(p->set), chunk = ls_strategy_chunk_tokens(&p->h->prep->sm, p->set->chunk_tokens);
    int64_t content;
    LS_CHECK(ls_strategy_chunk_room(chunk, gen, &content));
    double bpt = (double)p->len / (double)(p->parent.n_tokens > 0 ? p->parent.n_tokens : 1);
    *budget = (size_t)(0.9 * (double)content * bpt);
    if (*budget < 2 * LS_MR_MIN_BYTES) *budget = 2 * LS_MR_MIN_BYTES;
    return LS_OK;
}

// One summary, headed, cut to half the combine budget (its heading included).
typedef struct item {
    char *text;
    size_t first, last;
} item;

// A combine level over items[0..*n): its groups of two or more are children "lL.k"; the groups
// are queued together when none is; when all are done the level's items replace these.
// *waiting: the level is not finished.
static ls_status combine_level(plan *p, int level, item *items, size_t *n, size_t n_chunks, size_t budget, bool *waiting) {
    size_t *lens = ls_calloc(*n, sizeof *lens), *ends = ls_calloc(*n, sizeof *ends), g = 0, done = 0, calls = 0;
    ls_buf head = {0};
    for (size_t i = 0; i < *n; i++) {
        ls_buf_clear(&head);
        ls_mr_part_heading(items[i].first, items[i].last, n_chunks, &head);
        size_t room = budget / 2 - head.len - 4, len = strlen(items[i].text);
        items[i].text[ls_mr_utf8_prefix(items[i].text, len, room)] = 0;
        lens[i] = head.len + 4 + strlen(items[i].text);
    }
    ls_status rc = ls_mr_group(lens, *n, budget, p->set->combine_parts, ends, &g);
    bool missing = false;
    char tag[48], stage[96];
    for (size_t k = 0; rc == LS_OK && k < g; k++) { // which calls exist, and how many are done
        size_t a = k ? ends[k - 1] : 0, b = ends[k];
        if (b - a == 1) continue;
        snprintf(tag, sizeof tag, "l%d.%zu", level, k);
        kid *d = find(&p->k, tag);
        calls++;
        if (!d) missing = true;
        else if (d->state == LS_JOB_DONE && d->r) done++;
    }
    for (size_t k = 0; rc == LS_OK && missing && k < g; k++) { // the level's calls queued together
        size_t a = k ? ends[k - 1] : 0, b = ends[k];
        snprintf(tag, sizeof tag, "l%d.%zu", level, k);
        if (b - a == 1 || find(&p->k, tag)) continue;
        ls_buf text = {0}, req = {0};
        for (size_t i = a; i < b; i++) {
            ls_mr_part_heading(items[i].first, items[i].last, n_chunks, &text);
            ls_buf_printf(&text, ": %s\n\n", items[i].text);
        }
        ls_mr_combine_request(items[a].first, items[b - 1].last, n_chunks, g == 1 ? p->set->instruction : NULL, &req);
        snprintf(stage, sizeof stage, "combine level %d, %zu/%zu", level, k + 1, g);
        rc = add_child(p, tag, stage, text.data, text.len, req.data, NULL, 0);
        ls_buf_free(&text), ls_buf_free(&req);
    }
    *waiting = rc == LS_OK && done < calls;
    snprintf(p->stage, sizeof p->stage, "combine level %d, %zu/%zu", level, done + (done < calls), calls);
    for (size_t k = 0; rc == LS_OK && !*waiting && k < g; k++) { // the level is done: its items go up
        size_t a = k ? ends[k - 1] : 0, b = ends[k];
        item up = {.first = items[a].first, .last = items[b - 1].last};
        if (b - a == 1) {
            up.text = items[a].text, items[a].text = NULL;
        } else {
            snprintf(tag, sizeof tag, "l%d.%zu", level, k);
            const char *t = find(&p->k, tag)->r->text;
            up.text = ls_strndup(t ? t : "", t ? strlen(t) : 0);
        }
        for (size_t i = a; i < b; i++) ls_free(items[i].text), items[i].text = NULL;
        items[k] = up; // (k <= a: the slot is free)
    }
    if (rc == LS_OK && !*waiting) *n = g;
    ls_buf_free(&head);
    ls_free(lens), ls_free(ends);
    return rc;
}

static ls_status step_mapreduce(plan *p) {
    size_t budget = 0, n = 0;
    ls_span *sp = NULL;
    ls_status rc = chunk_budget(p, &budget);
    if (rc != LS_OK) { // the settings leave no room for text: the parent fails saying so
        char *why = ls_strndup(ls_err_msg(), strlen(ls_err_msg()));
        ls_err_clear();
        if (!p->dry) ls_strat_end(p->h, &p->parent, LS_JOB_FAILED, why);
        ls_free(why);
        return LS_OK;
    }
    LS_CHECK(ls_mr_split((const char *)p->doc, p->len, budget, budget / 20, &sp, &n));
    int64_t gen = ls_settings_max_tokens(p->set);
    // the chunks (5% overlap) and their requests, then combines reading about one summary per chunk
    p->est_tokens = (uint64_t)((double)p->parent.n_tokens * 1.05) + (uint64_t)n * (uint64_t)(2 * LS_MR_OVERHEAD_TOKENS + 4 * gen);
    item *items = ls_calloc(n ? n : 1, sizeof *items);
    char tag[48], stage[64];
    size_t done = 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(tag, sizeof tag, "c%zu", i);
        kid *d = find(&p->k, tag);
        if (d && d->state == LS_JOB_DONE && d->r) {
            done++;
            items[i] = (item){ls_strndup(d->r->text ? d->r->text : "", d->r->text ? strlen(d->r->text) : 0), i, i};
        }
        if (d || rc != LS_OK) continue;
        ls_buf req = {0}; // every chunk queued at once (a batching group may run them together)
        if (n == 1) ls_buf_printf(&req, "%s", p->set->instruction && *p->set->instruction ? p->set->instruction : "Summarize the text above in a few sentences.");
        else ls_mr_chunk_request(i, n, &req);
        snprintf(stage, sizeof stage, "chunk %zu/%zu", i + 1, n);
        rc = add_child(p, tag, stage, (const char *)p->doc + sp[i].start, sp[i].end - sp[i].start, req.data, NULL, 0);
        ls_buf_free(&req);
    }
    snprintf(p->stage, sizeof p->stage, "chunk %zu/%zu", done + (done < n), n);
    size_t count = n;
    int level = 0;
    bool waiting = done < n;
    char **parts = NULL;
    if (rc == LS_OK && !waiting && n > 1) { // the chunks' own summaries, for the record
        parts = ls_calloc(n, sizeof *parts);
        for (size_t i = 0; i < n; i++) parts[i] = ls_strndup(items[i].text, strlen(items[i].text));
    }
    while (rc == LS_OK && !waiting && count > 1) rc = combine_level(p, ++level, items, &count, n, budget, &waiting);
    bool ended = false;
    if (rc == LS_OK) rc = commit_children(p, &ended);
    if (rc == LS_OK && ended) { // (the parent failed with the refused call's reason)
    } else if (rc == LS_OK && !waiting && count == 1) {
        const kid *last = NULL; // the call that wrote the final summary: the last level's, or the one chunk
        if (level) snprintf(tag, sizeof tag, "l%d.0", level);
        else snprintf(tag, sizeof tag, "c0");
        last = find(&p->k, tag);
        if (last && last->r)
            finish_done(p, last, "map-reduce", n, level, parts, parts ? n : 0,
                        ls_strategy_chunk_tokens(&p->h->prep->sm, p->set->chunk_tokens));
    } else if (rc == LS_OK) say_stage(p);
    for (size_t i = 0; i < n; i++) ls_free(items[i].text), parts ? ls_free(parts[i]) : (void)0;
    ls_free(parts), ls_free(items), ls_free(sp);
    return rc;
}

ls_status ls_strat_step(const ls_strat_host *h, const char *parent, bool dry, char *stage, size_t cap) {
    plan p = {.h = h, .dry = dry};
    if (stage && cap) stage[0] = 0;
    LS_CHECK(ls_store_get(h->store, parent, &p.parent));
    ls_status rc = LS_OK;
    if (!p.parent.is_parent || ls_job_state_final(p.parent.state)) goto out;
    p.set = longseq__settings__unpack(NULL, p.parent.settings_len, p.parent.settings);
    if (!p.set) {
        rc = LS_ERR(LS_ERR_FORMAT, "job %s: its stored settings do not unpack", parent);
        goto out;
    }
    rc = ls_store_doc(h->store, parent, &p.doc, &p.len);
    if (rc == LS_OK) rc = ls_store_children(h->store, parent, collect, &p.k);
    if (rc != LS_OK || child_failed(&p)) goto out;
    if (!strcmp(p.parent.tag, "extend")) rc = step_extend(&p);
    else rc = step_mapreduce(&p);
    if (stage && cap) snprintf(stage, cap, "%s", p.stage);
out:
    for (size_t i = 0; i < p.n_add; i++) ls_job_free(&p.add[i]);
    ls_free(p.add);
    kids_free(&p.k);
    ls_free(p.doc);
    if (p.set) longseq__settings__free_unpacked(p.set, NULL);
    ls_job_free(&p.parent);
    return rc;
}

void ls_strat_end(const ls_strat_host *h, const ls_job *parent, ls_job_state st, const char *why) {
    h->finish(h->server, parent->id, parent->name, parent->attempts, st, NULL, why); // first: its children's ends find it final
    kids k = {0};
    if (ls_store_children(h->store, parent->id, collect, &k) != LS_OK) ls_err_clear(); // (read whole before any write)
    for (size_t i = 0; i < k.n; i++) {
        if (k.v[i].state == LS_JOB_QUEUED)
            h->finish(h->server, k.v[i].id, "", 0, LS_JOB_CANCELLED, NULL, "cancelled with its parent");
        else if (k.v[i].state == LS_JOB_RUNNING) h->stop_running(h->server, k.v[i].id);
    }
    kids_free(&k);
}
