// cuda_impl.h — private to kernels/cuda: the error-check macro, the backend's context and the
// launchers the .cu files share. Tests: tests/gpu/test_ops.c.
#ifndef LS_CUDA_IMPL_H
#define LS_CUDA_IMPL_H

#include "ls_cuda.h"
#include "ls_kernels.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

// Every CUDA runtime call and launch goes through this: an error returns LS_ERR_DEVICE
// naming the call, with file and line (and rank, from ls_err_set).
#define LS_CUDA_CHECK(call)                                                              \
    do {                                                                                 \
        cudaError_t e_ = (call);                                                         \
        if (e_ != cudaSuccess)                                                           \
            return LS_ERR(LS_ERR_DEVICE, "%s failed: %s", #call, cudaGetErrorString(e_)); \
    } while (0)
#define LS_CUBLAS_CHECK(call)                                                                   \
    do {                                                                                        \
        cublasStatus_t s_ = (call);                                                             \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                        \
            return LS_ERR(LS_ERR_DEVICE, "%s failed: %s", #call, cublasGetStatusString(s_));    \
    } while (0)

// A device buffer that grows on demand (scratch for conversions, indices, dequantized tiles).
typedef struct cuda_scratch {
    void *p;
    size_t cap;
} cuda_scratch;
ls_status cuda_scratch_get(cuda_scratch *s, size_t bytes, void **out);

// Launchers (stream st). backend_cuda.cu: rows x width elements, F32/BF16 either way, with
// row pitches in elements (ls_op_convert's kernel; also the bf16 inputs of GEMM and attention).
ls_status cuda_convert(cudaStream_t st, ls_dtype dst_t, void *dst, size_t dpitch, ls_dtype src_t, const void *src,
                       size_t spitch, size_t width, size_t rows);
// dequant.cu
ls_status cuda_get_rows(cudaStream_t st, ls_dtype t, const void *w, size_t row_bytes, int64_t n_in,
                        const int32_t *ids_dev, int64_t m, float *out);
ls_status cuda_dequant_bf16(cudaStream_t st, ls_dtype t, const void *src, __nv_bfloat16 *dst, int64_t n);

// attention.cu, as ls_op_attention. f32: the inputs are converted to bf16 into scr[0..3]
// (q, q_sink, and k, v unless kv_type is already BF16) first; pages: the device copy of
// a->kv_pages (bf16 pages only). bf16: q/q_sink/k/v/out are bf16 (lse stays f32), contiguous.
ls_status cuda_attention_f32(cudaStream_t st, const ls_attn_args *a, cuda_scratch scr[4], const int32_t *pages);
ls_status cuda_attention_bf16(cudaStream_t st, const ls_attn_args *a);

#endif // LS_CUDA_IMPL_H
