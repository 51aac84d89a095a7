// backend_impl.h — private to kernels/: the interface every backend implements. ls_op_*
// (ops.c) validate their arguments once and then call through this table, so a backend sees
// only consistent shapes. Slots marked (optional) may be NULL: the op then reports
// LS_ERR_UNSUPPORTED naming the backend.
#ifndef LS_BACKEND_IMPL_H
#define LS_BACKEND_IMPL_H

#include "ls_kernels.h"

typedef struct ls_backend_iface {
    const char *name;
    int (*threads)(void *ctx);
    void (*set_act_precision)(void *ctx, ls_act_precision p);
    ls_status (*matmul)(void *ctx, const ls_weight *w, const float *x, float *y, int64_t m);
    ls_status (*get_rows)(void *ctx, const ls_weight *w, const int32_t *ids, int64_t m, float *out);
    ls_status (*rmsnorm)(void *ctx, const float *x, const float *w, float *y, int64_t m, int64_t n, float eps);
    ls_status (*swiglu)(void *ctx, const float *gate, const float *up, float *out, int64_t n);
    ls_status (*add)(void *ctx, float *y, const float *x, int64_t n);
    ls_status (*fill)(void *ctx, float *y, float value, int64_t n);
    ls_status (*convert)(void *ctx, ls_dtype dst_t, void *dst, size_t dpitch, ls_dtype src_t, const void *src,
                         size_t spitch, size_t width, size_t rows);
    ls_status (*rope)(void *ctx, float *x, int64_t m, int n_heads, int head_dim, const int64_t *pos,
                      const ls_rope_freqs *f);
    ls_status (*attention)(void *ctx, const ls_attn_args *a);
    ls_status (*attn_merge)(void *ctx, float *o1, float *lse1, const float *o2, const float *lse2,
                            int64_t n, int d); // (optional)
    // memory (see ls_kernels.h); on_host backends may leave weight_load NULL (used in place)
    bool on_host;
    ls_status (*alloc)(void *ctx, size_t bytes, void **out);
    void (*release)(void *ctx, void *p);
    ls_status (*upload)(void *ctx, void *dst, const void *host, size_t bytes);
    ls_status (*download)(void *ctx, void *host, const void *src, size_t bytes);
    ls_status (*copy)(void *ctx, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                      size_t rows);
    ls_status (*weight_load)(void *ctx, const ls_weight *host, ls_weight *out); // (optional)
    void (*weight_release)(void *ctx, ls_weight *w);                           // (optional)
    ls_status (*sync)(void *ctx);                                              // (optional)
    void (*free)(void *ctx);
} ls_backend_iface;

struct ls_backend {
    const ls_backend_iface *iface;
    void *ctx;
};

#endif // LS_BACKEND_IMPL_H
