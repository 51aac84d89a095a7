// ls_cuda.h — the CUDA backend of the op API in ls_kernels.h (backend_cuda.cu, attention.cu,
// dequant.cu). Built when nvcc, cuBLAS and
// NCCL are found (LS_HAVE_CUDA); every entry point checks every CUDA call (LS_CUDA_CHECK) and
// returns LS_ERR_DEVICE with the call text, file and line. Each kernel's CPU twin lives in
// kernels/ref. Tests: tests/gpu/test_ops.c (run by tests/gpu/run on a GPU machine).
#ifndef LS_CUDA_H
#define LS_CUDA_H

#include "ls_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

// True when the CUDA runtime sees at least one device. Any error (no driver, no device)
// counts as "no GPU"; the reason is kept for ls_cuda_why_unavailable().
bool ls_cuda_available(void);
const char *ls_cuda_why_unavailable(void);
int ls_cuda_device_count(void); // 0 when none is visible

// The CUDA backend on GPU `device`: ops run in order on one stream of that device; tensors
// are device memory (ls_backend_alloc), weights bf16 on the device (ls_backend_weight_load).
ls_status ls_backend_cuda_init(int device, ls_backend_t **out);
// "NVIDIA H100 80GB HBM3 (132 SMs, 79 GiB)".
ls_status ls_cuda_device_name(int device, char *buf, size_t size);
// Attention as ls_op_attention, with q, q_sink, k, v and out in bf16 (lse stays f32); on the
// backend's stream. For benchmarks and a bf16 KV cache.
ls_status ls_cuda_attention_bf16(ls_backend_t *b, const ls_attn_args *a);

// n bf16 values, uniform in [-scale, scale], from a hash of (seed, index). For benchmarks.
ls_status ls_cuda_fill_bf16(void *dev, int64_t n, unsigned seed, float scale);

// Device memory helpers (for tests and the backend's own setup).
ls_status ls_cuda_malloc(void **dev, size_t bytes);
ls_status ls_cuda_free(void *dev);
ls_status ls_cuda_upload(void *dev, const void *host, size_t bytes);
ls_status ls_cuda_download(void *host, const void *dev, size_t bytes);
ls_status ls_cuda_sync(void);

// src_dev: one row of n elements of type t in device memory; dst_dev: [n] f32 (or bf16 bits
// for the _bf16 variant). Same results as ls_dequant_row (f32 variant: bit-identical).
ls_status ls_cuda_dequant_f32(ls_dtype t, const void *src_dev, float *dst_dev, int64_t n);
ls_status ls_cuda_dequant_bf16(ls_dtype t, const void *src_dev, uint16_t *dst_dev, int64_t n);

#ifdef __cplusplus
}
#endif

#endif // LS_CUDA_H
