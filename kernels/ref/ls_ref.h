// ls_ref.h — naive twins of the ops in ls_kernels.h. Written for obviousness, straight from
// the format specs (one output element at a time), never for speed; the CPU and CUDA kernels
// are tested against them. Tests: tests/unit/test_kernels.c, tests/gpu/test_ops.c.
#ifndef LS_REF_H
#define LS_REF_H

#include "ls_base.h"

#ifdef __cplusplus
extern "C" {
#endif

// Element j of a row of type t (j counts from the row start). Mirrors the spec's formulas
// in ../shared/spec/formats.md §1, evaluated in f32 in the order given there.
float ls_ref_dequant_elem(ls_dtype t, const void *row, int64_t j);
// The whole row, element by element. Same contract as ls_dequant_row.
ls_status ls_ref_dequant_row(ls_dtype t, const void *src, float *dst, int64_t n);

#ifdef __cplusplus
}
#endif

#endif // LS_REF_H
