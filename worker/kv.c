// kv.c — the paged KV cache (ls_kv.h): a pool of pages in one backend allocation that grows
// (up to its budget) when a sequence needs more pages than the free list holds, page tables
// per sequence, stores with conversion to the element type, re-rotation of kept keys, and
// attention over a sequence's pages. Page ids stay valid when the pool grows (the pages are
// copied to the new allocation in order). Tests: tests/unit/test_kv.c.
#include "ls_kv.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct ls_kv {
    ls_backend_t *be;
    ls_kv_shape shape;
    size_t row, head_bytes, page_bytes; // bytes: a row, one head's slots of a page, a page
    int64_t max_pages, cap, used;       // the budget, pages allocated, pages held by sequences
    void *base;                         // [cap][n_layer][K, V][n_kv_head][LS_KV_PAGE][row]
    int32_t *free_ids;                  // [cap] stack of free pages
    int64_t n_free;
    float *rot;                         // [LS_KV_PAGE][head_dim] f32 scratch for re-rotation
};

struct ls_kv_seq {
    ls_kv_t *kv;
    int32_t *pages; // [n]
    int64_t n, room;
};

static const struct { const char *name; ls_dtype t; } g_types[] = {{"f32", LS_F32}, {"bf16", LS_BF16}, {"q8_0", LS_Q8_0}};

bool ls_kv_type_parse(const char *name, ls_dtype *out) {
    for (size_t i = 0; i < sizeof g_types / sizeof *g_types; i++)
        if (!strcmp(name, g_types[i].name)) {
            *out = g_types[i].t;
            return true;
        }
    return false;
}

const char *ls_kv_type_name(ls_dtype t) {
    for (size_t i = 0; i < sizeof g_types / sizeof *g_types; i++)
        if (g_types[i].t == t) return g_types[i].name;
    return ls_dtype_name(t);
}

uint64_t ls_kv_bytes_per_token(const ls_kv_shape *s) {
    uint64_t row = 0;
    ls_dtype_row_bytes(s->type, (uint64_t)s->head_dim, &row);
    return 2 * (uint64_t)s->n_layer * (uint64_t)s->n_kv_head * row;
}

ls_status ls_kv_init(ls_backend_t *be, const ls_kv_shape *shape, int64_t max_pages, ls_kv_t **out) {
    *out = NULL;
    uint64_t row;
    if (shape->type != LS_F32 && shape->type != LS_BF16 && shape->type != LS_Q8_0)
        return LS_ERR(LS_ERR_UNSUPPORTED, "KV cache of type %s: f32, bf16 or q8_0 only", ls_dtype_name(shape->type));
    if (shape->n_layer < 1 || shape->n_kv_head < 1 || shape->head_dim < 1 ||
        !ls_dtype_row_bytes(shape->type, (uint64_t)shape->head_dim, &row))
        return LS_ERR(LS_ERR_INVALID, "KV cache of %d layers x %d KV heads x %d dimensions in %s (q8_0 needs whole blocks of 32)",
                      shape->n_layer, shape->n_kv_head, shape->head_dim, ls_dtype_name(shape->type));
    if (shape->type != LS_BF16 && !ls_backend_on_host(be)) // its attention kernel reads bf16 pages
        return LS_ERR(LS_ERR_UNSUPPORTED, "a %s KV cache runs on the CPU backend only; the %s backend keeps bf16",
                      ls_kv_type_name(shape->type), ls_backend_name(be));
    ls_kv_t *kv = ls_calloc(1, sizeof *kv);
    kv->be = be, kv->shape = *shape, kv->row = (size_t)row;
    kv->head_bytes = (size_t)LS_KV_PAGE * kv->row;
    kv->page_bytes = kv->head_bytes * (size_t)shape->n_kv_head * 2 * (size_t)shape->n_layer;
    kv->max_pages = max_pages > 0 && max_pages < INT32_MAX ? max_pages : INT32_MAX;
    ls_status rc = ls_backend_alloc(be, (size_t)LS_KV_PAGE * (size_t)shape->head_dim * sizeof(float), (void **)&kv->rot);
    if (rc != LS_OK) {
        ls_kv_free(kv);
        return rc;
    }
    *out = kv;
    return LS_OK;
}

void ls_kv_free(ls_kv_t *kv) {
    if (!kv) return;
    ls_backend_release(kv->be, kv->base);
    ls_backend_release(kv->be, kv->rot);
    ls_free(kv->free_ids);
    ls_free(kv);
}

const ls_kv_shape *ls_kv_shape_of(const ls_kv_t *kv) { return &kv->shape; }
size_t ls_kv_page_bytes(const ls_kv_t *kv) { return kv->page_bytes; }
int64_t ls_kv_pages_used(const ls_kv_t *kv) { return kv->used; }
int64_t ls_kv_pages_held(const ls_kv_t *kv) { return kv->cap; }
int64_t ls_kv_pages_max(const ls_kv_t *kv) { return kv->max_pages; }

ls_kv_usage ls_kv_usage_of(const ls_kv_t *kv) {
    uint64_t page = kv->page_bytes;
    return (ls_kv_usage){.in_use = (uint64_t)kv->used * page, .allocated = (uint64_t)kv->cap * page,
                         .budget = kv->max_pages == INT32_MAX ? 0 : (uint64_t)kv->max_pages * page};
}

// Room for `want` more free pages: a larger allocation (twice the pages, or what is wanted,
// within the budget) with the used pages copied over in order, so page ids stay valid.
static ls_status grow(ls_kv_t *kv, int64_t want) {
    int64_t need = kv->cap + (want - kv->n_free), cap = 2 * kv->cap > need ? 2 * kv->cap : need;
    if (cap > kv->max_pages) cap = kv->max_pages;
    if (need > cap)
        return LS_ERR(LS_ERR_NOMEM, "KV cache: %lld more pages of %d tokens wanted, %lld free of a budget of %lld pages (%.1f MB)",
                      (long long)want, LS_KV_PAGE, (long long)(kv->n_free + kv->max_pages - kv->cap),
                      (long long)kv->max_pages, (double)kv->max_pages * (double)kv->page_bytes / 1e6);
    void *base = NULL;
    if (kv->used == 0) { // nothing to keep: free the old pages first (no double peak)
        ls_backend_release(kv->be, kv->base);
        kv->base = NULL, kv->cap = kv->n_free = 0;
        cap = want; // exactly what is wanted: a lone sequence takes no more than it needs
    }
    ls_status rc = ls_backend_alloc(kv->be, (size_t)cap * kv->page_bytes, &base);
    if (rc != LS_OK) {
        ls_err_clear(); // the backend's message says less than this one
        return LS_ERR(LS_ERR_NOMEM, "cannot allocate a KV cache of %.2f GB (%lld pages of %d tokens) on the %s backend",
                      (double)cap * (double)kv->page_bytes / 1e9, (long long)cap, LS_KV_PAGE, ls_backend_name(kv->be));
    }
    if (kv->base) LS_CHECK(ls_backend_copy(kv->be, base, 0, kv->base, 0, (size_t)kv->cap * kv->page_bytes, 1));
    ls_backend_release(kv->be, kv->base);
    kv->base = base;
    kv->free_ids = ls_realloc(kv->free_ids, (size_t)cap * sizeof *kv->free_ids);
    for (int64_t p = cap - 1; p >= kv->cap; p--) kv->free_ids[kv->n_free++] = (int32_t)p; // lowest ids first
    kv->cap = cap;
    return LS_OK;
}

ls_status ls_kv_seq_init(ls_kv_t *kv, ls_kv_seq_t **out) {
    ls_kv_seq_t *s = ls_calloc(1, sizeof *s);
    s->kv = kv;
    *out = s;
    return LS_OK;
}

void ls_kv_seq_free(ls_kv_seq_t *s) {
    if (!s) return;
    ls_kv_seq_drop(s, 0, s->n);
    ls_free(s->pages);
    ls_free(s);
}

int64_t ls_kv_seq_pages(const ls_kv_seq_t *s) { return s->n; }

ls_status ls_kv_seq_reserve(ls_kv_seq_t *s, int64_t n_slots) {
    ls_kv_t *kv = s->kv;
    int64_t want = (n_slots + LS_KV_PAGE - 1) / LS_KV_PAGE - s->n;
    if (want <= 0) return LS_OK;
    if (want > kv->n_free) LS_CHECK(grow(kv, want));
    if (s->n + want > s->room) {
        s->room = s->n + want > 2 * s->room ? s->n + want : 2 * s->room;
        s->pages = ls_realloc(s->pages, (size_t)s->room * sizeof *s->pages);
    }
    for (int64_t i = 0; i < want; i++) s->pages[s->n++] = kv->free_ids[--kv->n_free];
    kv->used += want;
    return LS_OK;
}

ls_status ls_kv_seq_drop(ls_kv_seq_t *s, int64_t first, int64_t n) {
    if (first < 0 || n < 0 || first + n > s->n)
        return LS_ERR(LS_ERR_INVALID, "KV cache: pages %lld..%lld of a sequence holding %lld", (long long)first,
                      (long long)(first + n - 1), (long long)s->n);
    if (n == 0) return LS_OK; // (pages may still be NULL)
    for (int64_t i = 0; i < n; i++) s->kv->free_ids[s->kv->n_free++] = s->pages[first + i];
    memmove(s->pages + first, s->pages + first + n, (size_t)(s->n - first - n) * sizeof *s->pages);
    s->n -= n, s->kv->used -= n;
    return LS_OK;
}

// Where slot `slot` of KV head g of layer il's keys (v = 0) or values (v = 1) lies.
static char *row_at(const ls_kv_seq_t *s, int64_t il, int v, int g, int64_t slot) {
    const ls_kv_t *kv = s->kv;
    size_t layer = (size_t)il * 2 + (size_t)v;
    return (char *)kv->base + (size_t)s->pages[slot / LS_KV_PAGE] * kv->page_bytes +
           (layer * (size_t)kv->shape.n_kv_head + (size_t)g) * kv->head_bytes + (size_t)(slot % LS_KV_PAGE) * kv->row;
}

static ls_status check_slots(const ls_kv_seq_t *s, int64_t slot0, int64_t n) {
    if (slot0 < 0 || n < 0 || slot0 + n > s->n * LS_KV_PAGE)
        return LS_ERR(LS_ERR_RANGE, "KV cache: slots %lld..%lld outside the %lld reserved", (long long)slot0,
                      (long long)(slot0 + n - 1), (long long)(s->n * LS_KV_PAGE));
    return LS_OK;
}

ls_status ls_kv_store(ls_kv_seq_t *s, int64_t il, const float *k, const float *v, int64_t slot0, int64_t m) {
    const ls_kv_t *kv = s->kv;
    LS_CHECK(check_slots(s, slot0, m));
    size_t hd = (size_t)kv->shape.head_dim, nkv = (size_t)kv->shape.n_kv_head;
    for (int64_t t0 = 0; t0 < m;) { // one run of rows per page
        int64_t sl = slot0 + t0, rows = LS_KV_PAGE - sl % LS_KV_PAGE;
        if (rows > m - t0) rows = m - t0;
        for (size_t g = 0; g < nkv; g++) { // rows of hd, nkv*hd apart in the batch, hd apart in the page
            size_t src = ((size_t)t0 * nkv + g) * hd;
            LS_CHECK(ls_op_convert(kv->be, kv->shape.type, row_at(s, il, 0, (int)g, sl), hd, LS_F32, k + src, nkv * hd, hd, (size_t)rows));
            LS_CHECK(ls_op_convert(kv->be, kv->shape.type, row_at(s, il, 1, (int)g, sl), hd, LS_F32, v + src, nkv * hd, hd, (size_t)rows));
        }
        t0 += rows;
    }
    return LS_OK;
}

ls_status ls_kv_load(const ls_kv_seq_t *s, int64_t il, int g, int64_t slot0, int64_t n, float *k, float *v) {
    const ls_kv_t *kv = s->kv;
    LS_CHECK(check_slots(s, slot0, n));
    size_t hd = (size_t)kv->shape.head_dim;
    for (int64_t t0 = 0; t0 < n;) { // one run of rows per page
        int64_t sl = slot0 + t0, rows = LS_KV_PAGE - sl % LS_KV_PAGE;
        if (rows > n - t0) rows = n - t0;
        LS_CHECK(ls_op_convert(kv->be, LS_F32, k + (size_t)t0 * hd, hd, kv->shape.type, row_at(s, il, 0, g, sl), hd, hd, (size_t)rows));
        LS_CHECK(ls_op_convert(kv->be, LS_F32, v + (size_t)t0 * hd, hd, kv->shape.type, row_at(s, il, 1, g, sl), hd, hd, (size_t)rows));
        t0 += rows;
    }
    return LS_OK;
}

// Rotates n rows of keys at p (one head, within a page) by pos; other types through f32.
static ls_status rotate_rows(ls_kv_t *kv, void *p, int64_t n, const int64_t *pos, const ls_rope_freqs *f) {
    int hd = kv->shape.head_dim;
    ls_dtype t = kv->shape.type;
    if (t == LS_F32) return ls_op_rope(kv->be, p, n, 1, hd, pos, f);
    size_t w = (size_t)(n * hd);
    LS_CHECK(ls_op_convert(kv->be, LS_F32, kv->rot, w, t, p, w, w, 1));
    LS_CHECK(ls_op_rope(kv->be, kv->rot, n, 1, hd, pos, f));
    return ls_op_convert(kv->be, t, p, w, LS_F32, kv->rot, w, w, 1);
}

ls_status ls_kv_rotate(ls_kv_seq_t *s, int64_t slot0, int64_t n, const int64_t *pos, const ls_rope_freqs *f) {
    ls_kv_t *kv = s->kv;
    LS_CHECK(check_slots(s, slot0, n));
    for (int64_t t0 = 0; t0 < n;) {
        int64_t sl = slot0 + t0, rows = LS_KV_PAGE - sl % LS_KV_PAGE;
        if (rows > n - t0) rows = n - t0;
        for (int64_t il = 0; il < kv->shape.n_layer; il++)
            for (int g = 0; g < kv->shape.n_kv_head; g++) LS_CHECK(rotate_rows(kv, row_at(s, il, 0, g, sl), rows, pos + t0, f));
        t0 += rows;
    }
    return LS_OK;
}

ls_status ls_kv_attend(const ls_kv_seq_t *s, int64_t il, const ls_attn_args *a) {
    const ls_kv_t *kv = s->kv;
    int64_t slots = a->n_kv + (a->n_kv > a->kv_sinks ? a->kv_gap : 0);
    LS_CHECK(check_slots(s, 0, slots));
    if (il < 0 || il >= kv->shape.n_layer || a->n_kv_head != kv->shape.n_kv_head || a->head_dim != kv->shape.head_dim)
        return LS_ERR(LS_ERR_INVALID, "KV cache: layer %lld with %d KV heads of %d for a cache of %d layers x %d x %d",
                      (long long)il, a->n_kv_head, a->head_dim, kv->shape.n_layer, kv->shape.n_kv_head, kv->shape.head_dim);
    ls_attn_args p = *a;
    size_t layer = (size_t)il * 2 * (size_t)kv->shape.n_kv_head * kv->head_bytes; // K of layer il in page 0
    p.k = (const float *)((const char *)kv->base + layer);
    p.v = (const float *)((const char *)kv->base + layer + (size_t)kv->shape.n_kv_head * kv->head_bytes);
    p.kv_type = kv->shape.type, p.kv_pages = s->pages, p.kv_page_len = LS_KV_PAGE, p.kv_page_bytes = kv->page_bytes;
    p.kv_stride = 0;
    return ls_op_attention(kv->be, &p);
}
