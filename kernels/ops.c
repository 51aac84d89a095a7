// ops.c — the op API's front: argument checks done once for every backend, then dispatch
// through the backend's interface table; and the attention rules (which keys each query
// sees), which kernels and, later, the shard planner both ask. Tests: tests/unit/test_kernels.c,
// tests/unit/test_attn_rules.c.
#include "attn_rule.h"
#include "backend_impl.h"

#include <math.h>
#include <string.h>

void ls_backend_free(ls_backend_t *b) {
    if (!b) return;
    b->iface->free(b->ctx);
    ls_free(b);
}

const char *ls_backend_name(const ls_backend_t *b) { return b->iface->name; }
int ls_backend_threads(const ls_backend_t *b) { return b->iface->threads(b->ctx); }
void ls_backend_set_act_precision(ls_backend_t *b, ls_act_precision p) { b->iface->set_act_precision(b->ctx, p); }

bool ls_backend_on_host(const ls_backend_t *b) { return b->iface->on_host; }

ls_status ls_backend_alloc(ls_backend_t *b, size_t bytes, void **out) {
    *out = NULL;
    if (bytes == 0) bytes = 1;
    return b->iface->alloc(b->ctx, bytes, out);
}

void ls_backend_release(ls_backend_t *b, void *p) {
    if (p) b->iface->release(b->ctx, p);
}

ls_status ls_backend_upload(ls_backend_t *b, void *dst, const void *host, size_t bytes) {
    return bytes ? b->iface->upload(b->ctx, dst, host, bytes) : LS_OK;
}

ls_status ls_backend_download(ls_backend_t *b, void *host, const void *src, size_t bytes) {
    return bytes ? b->iface->download(b->ctx, host, src, bytes) : LS_OK;
}

ls_status ls_backend_copy(ls_backend_t *b, void *dst, size_t dpitch, const void *src, size_t spitch,
                          size_t width, size_t rows) {
    if (rows > 1 && (dpitch < width || spitch < width))
        return LS_ERR(LS_ERR_INVALID, "copy: rows of %zu bytes do not fit pitches %zu/%zu", width, dpitch, spitch);
    return width && rows ? b->iface->copy(b->ctx, dst, dpitch, src, spitch, width, rows) : LS_OK;
}

ls_status ls_backend_sync(ls_backend_t *b) { return b->iface->sync ? b->iface->sync(b->ctx) : LS_OK; }

ls_status ls_backend_weight_load(ls_backend_t *b, const ls_weight *host, ls_weight *out) {
    *out = *host;
    return b->iface->weight_load ? b->iface->weight_load(b->ctx, host, out) : LS_OK;
}

void ls_backend_weight_release(ls_backend_t *b, ls_weight *w) {
    if (b->iface->weight_release && w->data) b->iface->weight_release(b->ctx, w);
    w->data = NULL;
}

static ls_status check_weight(const ls_weight *w, const char *op) {
    if (!w || !w->data) return LS_ERR(LS_ERR_INVALID, "%s: no weight data", op);
    if (!ls_dequant_supported(w->type))
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: weights of type %s are not supported", op, ls_dtype_name(w->type));
    uint64_t rb;
    if (w->n_in <= 0 || w->n_out <= 0 || !ls_dtype_row_bytes(w->type, (uint64_t)w->n_in, &rb) || rb != w->row_bytes)
        return LS_ERR(LS_ERR_INVALID, "%s: weight [%lld x %lld] of %s with %zu-byte rows is inconsistent", op,
                      (long long)w->n_out, (long long)w->n_in, ls_dtype_name(w->type), w->row_bytes);
    return LS_OK;
}

ls_status ls_op_matmul(ls_backend_t *b, const ls_weight *w, const float *x, float *y, int64_t m) {
    LS_CHECK(check_weight(w, "matmul"));
    if (m < 0 || (m && (!x || !y))) return LS_ERR(LS_ERR_INVALID, "matmul: bad activations (m = %lld)", (long long)m);
    return m ? b->iface->matmul(b->ctx, w, x, y, m) : LS_OK;
}

ls_status ls_op_get_rows(ls_backend_t *b, const ls_weight *w, const int32_t *ids, int64_t m, float *out) {
    LS_CHECK(check_weight(w, "get_rows"));
    for (int64_t i = 0; i < m; i++)
        if (ids[i] < 0 || ids[i] >= w->n_out)
            return LS_ERR(LS_ERR_INVALID, "token id %d at position %lld is outside the vocabulary (0..%lld)",
                          ids[i], (long long)i, (long long)w->n_out - 1);
    return m ? b->iface->get_rows(b->ctx, w, ids, m, out) : LS_OK;
}

ls_status ls_op_rmsnorm(ls_backend_t *b, const float *x, const float *w, float *y, int64_t m,
                        int64_t n, float eps) {
    if (m < 0 || n <= 0 || !(eps > 0)) return LS_ERR(LS_ERR_INVALID, "rmsnorm: bad shape or eps");
    return m ? b->iface->rmsnorm(b->ctx, x, w, y, m, n, eps) : LS_OK;
}

ls_status ls_op_swiglu(ls_backend_t *b, const float *gate, const float *up, float *out, int64_t n) {
    if (n < 0) return LS_ERR(LS_ERR_INVALID, "swiglu: bad length");
    return n ? b->iface->swiglu(b->ctx, gate, up, out, n) : LS_OK;
}

ls_status ls_op_add(ls_backend_t *b, float *y, const float *x, int64_t n) {
    if (n < 0) return LS_ERR(LS_ERR_INVALID, "add: bad length");
    return n ? b->iface->add(b->ctx, y, x, n) : LS_OK;
}

ls_status ls_op_fill(ls_backend_t *b, float *y, float value, int64_t n) {
    if (n < 0) return LS_ERR(LS_ERR_INVALID, "fill: bad length");
    return n ? b->iface->fill(b->ctx, y, value, n) : LS_OK;
}

ls_status ls_op_convert(ls_backend_t *b, ls_dtype dst_t, void *dst, size_t dpitch, ls_dtype src_t, const void *src,
                        size_t spitch, size_t width, size_t rows) {
    bool half = (dst_t == LS_F32 || dst_t == LS_BF16) && (src_t == LS_F32 || src_t == LS_BF16);
    bool q8 = (dst_t == LS_Q8_0 && src_t == LS_F32) || (dst_t == LS_F32 && src_t == LS_Q8_0);
    if (!half && !(q8 && b->iface->on_host))
        return LS_ERR(LS_ERR_UNSUPPORTED, "convert: %s to %s on the %s backend", ls_dtype_name(src_t), ls_dtype_name(dst_t),
                      b->iface->name);
    if (q8 && (width % 32 || (rows > 1 && (dst_t == LS_Q8_0 ? dpitch : spitch) % 32)))
        return LS_ERR(LS_ERR_INVALID, "convert: q8_0 rows of %zu elements (pitches %zu/%zu) are not whole blocks of 32",
                      width, dpitch, spitch);
    if (rows > 1 && (dpitch < width || spitch < width))
        return LS_ERR(LS_ERR_INVALID, "convert: rows of %zu elements do not fit pitches %zu/%zu", width, dpitch, spitch);
    return width && rows ? b->iface->convert(b->ctx, dst_t, dst, dpitch, src_t, src, spitch, width, rows) : LS_OK;
}

ls_status ls_op_rope(ls_backend_t *b, float *x, int64_t m, int n_heads, int head_dim,
                     const int64_t *pos, const ls_rope_freqs *f) {
    if (m < 0 || n_heads <= 0 || head_dim <= 0 || f->n_rot <= 0 || f->n_rot % 2 || f->n_rot > head_dim)
        return LS_ERR(LS_ERR_INVALID, "rope: %d rotary dimensions do not fit heads of %d", f->n_rot, head_dim);
    for (int64_t t = 0; t < m; t++)
        if (pos[t] < -(1ll << 24) || pos[t] > (1ll << 24))
            return LS_ERR(LS_ERR_INVALID, "rope: position %lld is outside [-2^24, 2^24] (f32 holds exact integers only up to there)",
                          (long long)pos[t]);
    return m ? b->iface->rope(b->ctx, x, m, n_heads, head_dim, pos, f) : LS_OK;
}

static const char *g_attn_names[LS_ATTN_KIND_COUNT] = {"full", "s2", "sink", "window"};

const char *ls_attn_kind_name(ls_attn_kind k) {
    return (unsigned)k < LS_ATTN_KIND_COUNT ? g_attn_names[k] : "invalid";
}

bool ls_attn_kind_parse(const char *name, ls_attn_kind *out) {
    for (int k = 0; k < LS_ATTN_KIND_COUNT; k++)
        if (!strcmp(name, g_attn_names[k])) {
            *out = (ls_attn_kind)k;
            return true;
        }
    return false;
}

ls_status ls_attn_rule_check(const ls_attn_rule *r) {
    switch (r->kind) {
    case LS_ATTN_FULL: return LS_OK;
    case LS_ATTN_S2:
        if (r->group < 2) return LS_ERR(LS_ERR_INVALID, "s2 attention needs a group of at least 2 tokens (got %lld)", (long long)r->group);
        if (r->n_head < 1) return LS_ERR(LS_ERR_INVALID, "s2 attention needs the number of query heads");
        return LS_OK;
    case LS_ATTN_SINK:
        if (r->sinks < 0) return LS_ERR(LS_ERR_INVALID, "sink attention needs 0 or more sinks (got %lld)", (long long)r->sinks);
        __attribute__((fallthrough)); // sink has a window too
    case LS_ATTN_WINDOW:
        if (r->window < 1) return LS_ERR(LS_ERR_INVALID, "%s attention needs a window of at least 1 token (got %lld)",
                                         ls_attn_kind_name(r->kind), (long long)r->window);
        return LS_OK;
    default: return LS_ERR(LS_ERR_INVALID, "unknown attention rule %d", (int)r->kind);
    }
}

int ls_attn_ranges(const ls_attn_rule *r, int64_t i, int h, int64_t lo[2], int64_t hi[2]) {
    return ls_attn_ranges_inl(r->kind, r->group, r->sinks, r->window, r->n_head, i, h, lo, hi);
}

// The key layout of a (paged or contiguous) cache: types, page sizes, enough slots.
static ls_status check_kv_layout(const ls_attn_args *a) {
    if (a->kv_type != LS_F32 && a->kv_type != LS_BF16 && a->kv_type != LS_Q8_0)
        return LS_ERR(LS_ERR_UNSUPPORTED, "attention: keys and values of type %s (f32, bf16 or q8_0 only)",
                      ls_dtype_name(a->kv_type));
    uint64_t row;
    if (!ls_dtype_row_bytes(a->kv_type, (uint64_t)a->head_dim, &row))
        return LS_ERR(LS_ERR_INVALID, "attention: a head of %d elements is not a whole number of %s blocks", a->head_dim,
                      ls_dtype_name(a->kv_type));
    int64_t slots = a->n_kv + (a->n_kv > a->kv_sinks ? a->kv_gap : 0); // slots the keys span
    if (a->kv_gap < 0) return LS_ERR(LS_ERR_INVALID, "attention: key gap %lld", (long long)a->kv_gap);
    if (!a->kv_pages) {
        if (a->kv_stride < slots)
            return LS_ERR(LS_ERR_INVALID, "attention: %lld keys (gap %lld) do not fit a stride of %lld", (long long)a->n_kv,
                          (long long)a->kv_gap, (long long)a->kv_stride);
        return LS_OK;
    }
    if (a->kv_page_len < 1 || a->kv_page_bytes < (uint64_t)a->n_kv_head * (uint64_t)a->kv_page_len * row)
        return LS_ERR(LS_ERR_INVALID, "attention: pages of %lld tokens x %d KV heads x %llu bytes do not fit %zu bytes apart",
                      (long long)a->kv_page_len, a->n_kv_head, (unsigned long long)row, a->kv_page_bytes);
    return LS_OK;
}

ls_status ls_op_attention(ls_backend_t *b, const ls_attn_args *a) {
    if (a->n_q < 0 || a->n_kv < 0 || a->n_head <= 0 || a->n_kv_head <= 0 || a->head_dim <= 0 ||
        a->n_head % a->n_kv_head || a->q_pos0 < 0 || a->kv_pos0 < 0 ||
        a->kv_sinks < 0 || a->kv_sinks > a->n_kv || a->kv_pos0 < a->kv_sinks)
        return LS_ERR(LS_ERR_INVALID, "attention: inconsistent shape (%lld queries, %lld keys, stride %lld, heads %d/%d, dim %d)",
                      (long long)a->n_q, (long long)a->n_kv, (long long)a->kv_stride, a->n_head,
                      a->n_kv_head, a->head_dim);
    if (!(a->scale > 0) || !isfinite(a->scale)) return LS_ERR(LS_ERR_INVALID, "attention: bad scale");
    LS_CHECK(check_kv_layout(a));
    LS_CHECK(ls_attn_rule_check(&a->rule));
    return a->n_q ? b->iface->attention(b->ctx, a) : LS_OK;
}

ls_status ls_op_attn_merge(ls_backend_t *b, float *o1, float *lse1, const float *o2,
                           const float *lse2, int64_t n, int d) {
    if (n < 0 || d <= 0) return LS_ERR(LS_ERR_INVALID, "attn_merge: bad shape");
    if (!b->iface->attn_merge) return LS_ERR(LS_ERR_UNSUPPORTED, "attn_merge is not implemented by the %s backend", b->iface->name);
    return n ? b->iface->attn_merge(b->ctx, o1, lse1, o2, lse2, n, d) : LS_OK;
}
