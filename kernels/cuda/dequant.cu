// dequant.cu — CUDA dequantization of every supported type to f32 and bf16, one thread per
// output element, and the embedding lookup (get_rows) built on it (the formulas of kernels/ref/dequant_ref.c, its CPU twin). Products and sums
// use __fmul_rn/__fadd_rn so nvcc cannot fuse them into FMAs: the f32 output is bit-identical
// to ggml's and to the CPU path. Also the small runtime helpers declared in ls_cuda.h.
// Tests: tests/gpu/test_ops.c.
#include "cuda_impl.h"

// --- runtime helpers ----------------------------------------------------------------------

static char g_why[256];

extern "C" bool ls_cuda_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(g_why, sizeof g_why, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        return false;
    }
    if (n <= 0) {
        snprintf(g_why, sizeof g_why, "no CUDA device is visible");
        return false;
    }
    return true;
}

extern "C" const char *ls_cuda_why_unavailable(void) { return g_why; }

extern "C" int ls_cuda_device_count(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

extern "C" ls_status ls_cuda_malloc(void **dev, size_t bytes) {
    LS_CUDA_CHECK(cudaMalloc(dev, bytes));
    return LS_OK;
}
extern "C" ls_status ls_cuda_free(void *dev) {
    LS_CUDA_CHECK(cudaFree(dev));
    return LS_OK;
}
extern "C" ls_status ls_cuda_upload(void *dev, const void *host, size_t bytes) {
    LS_CUDA_CHECK(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    return LS_OK;
}
extern "C" ls_status ls_cuda_download(void *host, const void *dev, size_t bytes) {
    LS_CUDA_CHECK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
    return LS_OK;
}
extern "C" ls_status ls_cuda_sync(void) {
    LS_CUDA_CHECK(cudaDeviceSynchronize());
    return LS_OK;
}

// --- element dequantizers -----------------------------------------------------------------

__device__ static float rd_half(const uint8_t *p) {
    __half_raw r;
    r.x = (unsigned short)(p[0] | p[1] << 8);
    return __half2float(__half(r));
}

__device__ static void scale_min_k4(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// x*q - m*n with each product rounded separately, as ggml's K-quant code computes it.
__device__ static float kq(float d, int sc, int q, float dmin, int mn) {
    return __fsub_rn(__fmul_rn(__fmul_rn(d, (float)sc), (float)q), __fmul_rn(dmin, (float)mn));
}

__device__ static float dequant_elem(int t, const uint8_t *row, long long j, int block, int bytes) {
    const uint8_t *b = row + (j / block) * bytes;
    int k = (int)(j % block), lo = k % 16, hi = k >= 16;
    switch (t) {
    case LS_F32: return ((const float *)row)[j];
    case LS_F16: return rd_half(row + 2 * j);
    case LS_BF16: return __uint_as_float((unsigned)(row[2 * j] | row[2 * j + 1] << 8) << 16);
    case LS_Q8_0: return __fmul_rn((float)(int8_t)b[2 + k], rd_half(b));
    case LS_Q4_0: return __fmul_rn(rd_half(b), (float)((hi ? b[2 + lo] >> 4 : b[2 + lo] & 15) - 8));
    case LS_Q4_1:
        return __fadd_rn(__fmul_rn(rd_half(b), (float)(hi ? b[4 + lo] >> 4 : b[4 + lo] & 15)), rd_half(b + 2));
    case LS_Q5_0: case LS_Q5_1: {
        int off = t == LS_Q5_0 ? 2 : 4;
        unsigned h = b[off] | b[off + 1] << 8 | b[off + 2] << 16 | (unsigned)b[off + 3] << 24;
        int q = (hi ? b[off + 4 + lo] >> 4 : b[off + 4 + lo] & 15) | (int)((h >> k) & 1) << 4;
        if (t == LS_Q5_0) return __fmul_rn(rd_half(b), (float)(q - 16));
        return __fadd_rn(__fmul_rn(rd_half(b), (float)q), rd_half(b + 2));
    }
    case LS_Q4_K: case LS_Q5_K: {
        int chunk = k / 64, l = k % 32, high = (k % 64) >= 32, sc, mn;
        const uint8_t *qs = b + (t == LS_Q4_K ? 16 : 48);
        scale_min_k4(b + 4, 2 * chunk + high, &sc, &mn);
        int q = high ? qs[32 * chunk + l] >> 4 : qs[32 * chunk + l] & 15;
        if (t == LS_Q5_K) q += 16 * ((b[16 + l] >> (2 * chunk + high)) & 1);
        return kq(rd_half(b), sc, q, rd_half(b + 2), mn);
    }
    case LS_Q6_K: {
        int h = k / 128, r = k % 128, quarter = r / 32, l = r % 32;
        const uint8_t *QL = b + 64 * h, *QH = b + 128 + 32 * h;
        int low4 = (quarter & 1) ? QL[l + 32] : QL[l];
        low4 = quarter >= 2 ? low4 >> 4 : low4 & 15;
        int q = (low4 | ((QH[l] >> (2 * quarter)) & 3) << 4) - 32;
        int s = (int8_t)b[192 + 8 * h + l / 16 + 2 * quarter];
        return __fmul_rn(__fmul_rn(rd_half(b + 208), (float)s), (float)q);
    }
    }
    return __int_as_float(0x7fc00000); // unreachable: the host checks the type
}

__device__ static void store(float *dst, float v) { *dst = v; }
__device__ static void store(__nv_bfloat16 *dst, float v) { *dst = __float2bfloat16_rn(v); }

template <typename T>
__global__ static void dequant_kernel(int t, const uint8_t *src, T *dst, long long n, int block, int bytes) {
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < n) store(dst + j, dequant_elem(t, src, j, block, bytes));
}

template <typename T>
static ls_status launch(ls_dtype t, const void *src, T *dst, int64_t n, cudaStream_t st = 0) {
    if (!ls_dequant_supported(t))
        return LS_ERR(LS_ERR_UNSUPPORTED, "no CUDA dequantizer for type %s", ls_dtype_name(t));
    if (n < 0 || n % ls_dtype_get(t)->block)
        return LS_ERR(LS_ERR_INVALID, "row of %lld elements is not a whole number of %s blocks",
                      (long long)n, ls_dtype_name(t));
    const ls_dtype_info *ti = ls_dtype_get(t);
    unsigned grid = (unsigned)((n + 255) / 256);
    if (grid == 0) return LS_OK;
    dequant_kernel<T><<<grid, 256, 0, st>>>((int)t, (const uint8_t *)src, dst, n, (int)ti->block, (int)ti->block_bytes);
    LS_CUDA_CHECK(cudaGetLastError());
    return LS_OK;
}

extern "C" ls_status ls_cuda_dequant_f32(ls_dtype t, const void *src, float *dst, int64_t n) {
    return launch(t, src, dst, n);
}

extern "C" ls_status ls_cuda_dequant_bf16(ls_dtype t, const void *src, uint16_t *dst, int64_t n) {
    return launch(t, src, (__nv_bfloat16 *)dst, n);
}

ls_status cuda_dequant_bf16(cudaStream_t st, ls_dtype t, const void *src, __nv_bfloat16 *dst, int64_t n) {
    return launch(t, src, dst, n, st);
}

// out[i][j] = row ids[i] of w, element j; one block per row.
__global__ static void get_rows_kernel(int t, const uint8_t *w, size_t row_bytes, long long n_in, const int32_t *ids,
                                       float *out, int block, int bytes) {
    const uint8_t *row = w + (size_t)ids[blockIdx.x] * row_bytes;
    for (long long j = threadIdx.x; j < n_in; j += blockDim.x)
        out[(long long)blockIdx.x * n_in + j] = dequant_elem(t, row, j, block, bytes);
}

ls_status cuda_get_rows(cudaStream_t st, ls_dtype t, const void *w, size_t row_bytes, int64_t n_in,
                        const int32_t *ids_dev, int64_t m, float *out) {
    const ls_dtype_info *ti = ls_dtype_get(t);
    if (m > INT32_MAX) return LS_ERR(LS_ERR_RANGE, "get_rows: %lld rows", (long long)m);
    get_rows_kernel<<<(unsigned)m, 256, 0, st>>>((int)t, (const uint8_t *)w, row_bytes, n_in, ids_dev, out,
                                                 (int)ti->block, (int)ti->block_bytes);
    LS_CUDA_CHECK(cudaGetLastError());
    return LS_OK;
}
