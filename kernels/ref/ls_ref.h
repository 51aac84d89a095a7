// ls_ref.h — naive twins of the ops in ls_kernels.h. Written for obviousness, straight from
// their contracts and docs/formats.md §2 (one output element at a time), never for speed; the
// CPU and CUDA kernels are tested against them. Tests: tests/unit/test_kernels.c,
// tests/gpu/test_ops.c.
#ifndef LS_REF_H
#define LS_REF_H

#include "ls_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

// Element j of a row of type t (j counts from the row start). Mirrors the formulas
// of docs/formats.md §2.2, evaluated in f32 in the order given there.
float ls_ref_dequant_elem(ls_dtype t, const void *row, int64_t j);
// The whole row, element by element. Same contract as ls_dequant_row.
ls_status ls_ref_dequant_row(ls_dtype t, const void *src, float *dst, int64_t n);

// Twins of the ls_op_* ops (same arguments, no backend), accumulating in double.
void ls_ref_matmul(const ls_weight *w, const float *x, float *y, int64_t m);
void ls_ref_get_rows(const ls_weight *w, const int32_t *ids, int64_t m, float *out);
void ls_ref_rmsnorm(const float *x, const float *w, float *y, int64_t m, int64_t n, float eps);
void ls_ref_swiglu(const float *gate, const float *up, float *out, int64_t n);
void ls_ref_rope(float *x, int64_t m, int n_heads, int head_dim, const int64_t *pos, const ls_rope_freqs *f);
// Every (query, head) on its own: all visible scores, softmax in double, output and lse.
void ls_ref_attention(const ls_attn_args *a);
void ls_ref_attn_merge(float *o1, float *lse1, const float *o2, const float *lse2, int64_t n, int d);

#ifdef __cplusplus
}
#endif

#endif // LS_REF_H
