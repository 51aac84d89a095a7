// ls_kernels.h — the backend-neutral op API. The CPU backend (kernels/cpu) implements it here;
// kernels/ref holds the plain twins every op is tested against (ls_ref.h), and kernels/cuda
// the device versions (ls_cuda.h). Nothing in kernels/ knows about MPI, jobs or sockets.
// Tests: tests/unit/test_kernels.c (CPU vs ref), tests/oracle/test_dequant.py (vs gguf-py),
// tests/gpu/test_ops.c (CUDA vs ref).
#ifndef LS_KERNELS_H
#define LS_KERNELS_H

#include "ls_base.h"

#ifdef __cplusplus
extern "C" {
#endif

// --- half-precision conversions (exact, subnormals included) ------------------------------
float ls_fp16_to_f32(uint16_t h);
uint16_t ls_f32_to_fp16(float f); // round to nearest even, NaN stays NaN
static inline float ls_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}
uint16_t ls_f32_to_bf16(float f); // round to nearest even, NaN stays quiet NaN

// --- dequantization -----------------------------------------------------------------------
// Types with a dequantizer: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K.
bool ls_dequant_supported(ls_dtype t);

// src: one row of n elements stored as type t (n a multiple of the type's block).
// dst: [n] f32. Results are bit-identical to ggml's dequantize_row_* and gguf-py's
// gguf.quants.dequantize. Returns LS_ERR_UNSUPPORTED for types without a dequantizer and
// LS_ERR_INVALID when n is not a multiple of the block.
ls_status ls_dequant_row(ls_dtype t, const void *src, float *dst, int64_t n);

#ifdef __cplusplus
}
#endif

#endif // LS_KERNELS_H
