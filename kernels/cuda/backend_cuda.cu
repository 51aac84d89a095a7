// backend_cuda.cu — the CUDA backend of the op API: one device, one stream, one cuBLAS handle,
// device memory for every tensor. Matmul: weights are bf16 on the device (dequantized once by
// ls_backend_weight_load; other types are dequantized into a scratch tile per call),
// activations are converted to bf16 and cuBLAS multiplies with fp32 accumulation into f32.
// RMSNorm, RoPE, SwiGLU, add and the (output, lse) merge are kernels here; attention is in
// attention.cu, dequantization and get_rows in dequant.cu. CPU twins: kernels/ref.
// Tests: tests/gpu/test_ops.c.
#include "backend_impl.h"
#include "cuda_impl.h"

#include <climits>
#include <cstring>
#include <cmath>

namespace {

// A small host array's device copy that is uploaded again only when the host bytes change:
// RoPE gets the same positions for q and k of every layer, and the same frequencies always.
struct cuda_mirror {
    cuda_scratch dev;
    void *host; // the bytes last uploaded
    size_t bytes;
};

struct cuda_ctx {
    int device;
    cudaStream_t st;
    cublasHandle_t blas;
    cuda_scratch xb, wb, idx, tmp;
    cuda_mirror pos, freq, pages; // pages: a paged KV cache's page table
    cuda_scratch attn[4]; // attention inputs converted to bf16
};

unsigned blocks_for(long long n, int threads) { return (unsigned)((n + threads - 1) / threads); }

// --- kernels ----------------------------------------------------------------------------

// One block per row: sum of squares in f32, reduced over warps.
__global__ void rmsnorm_kernel(const float *x, const float *w, float *y, long long n, float eps) {
    __shared__ float part[32];
    const float *xr = x + (long long)blockIdx.x * n;
    float *yr = y + (long long)blockIdx.x * n;
    float ss = 0.f;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    for (int o = 16; o > 0; o /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        ss = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.f;
        for (int o = 16; o > 0; o /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        if (threadIdx.x == 0) part[0] = ss;
    }
    __syncthreads();
    float inv = rsqrtf(part[0] / (float)n + eps);
    for (long long i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] * inv * w[i];
}

__global__ void swiglu_kernel(const float *gate, const float *up, float *out, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float g = gate[i];
        out[i] = g / (1.f + expf(-g)) * up[i];
    }
}

__global__ void add_kernel(float *y, const float *x, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += x[i];
}

__global__ void fill_f32_kernel(float *y, float v, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = v;
}

// One thread per element of a rows x width block; F32/BF16 either way.
__global__ void convert_kernel(int dst_bf16, void *dst, long long dpitch, int src_bf16, const void *src, long long spitch,
                               long long width, long long total) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    long long r = i / width, c = i % width, d = r * dpitch + c, s = r * spitch + c;
    if (dst_bf16 && src_bf16) ((__nv_bfloat16 *)dst)[d] = ((const __nv_bfloat16 *)src)[s];
    else if (dst_bf16) ((__nv_bfloat16 *)dst)[d] = __float2bfloat16_rn(((const float *)src)[s]);
    else ((float *)dst)[d] = src_bf16 ? __bfloat162float(((const __nv_bfloat16 *)src)[s]) : ((const float *)src)[s];
}

// One thread per rotated pair: the angle pos·inv_freq in f32 from the exact integer
// position, then sincosf (full range reduction; the build never uses fast-math).
__global__ void rope_kernel(float *x, long long m, int n_heads, int head_dim, const int64_t *pos,
                            const float *inv_freq, int half, float attn_factor, int adjacent) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= m * n_heads * half) return;
    int i = (int)(idx % half);
    long long th = idx / half, t = th / n_heads;
    float *v = x + th * head_dim;
    float theta = __fmul_rn((float)pos[t], inv_freq[i]), s, c;
    sincosf(theta, &s, &c);
    c *= attn_factor, s *= attn_factor;
    int a = adjacent ? 2 * i : i, b = adjacent ? 2 * i + 1 : i + half;
    float x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * s;
    v[b] = x0 * s + x1 * c;
}

// One block per row of d: o1 = (e^lse1 o1 + e^lse2 o2) / (e^lse1 + e^lse2).
__global__ void merge_kernel(float *o1, float *lse1, const float *o2, const float *lse2, int d) {
    long long r = blockIdx.x;
    float a = lse1[r], b = lse2[r];
    __syncthreads(); // every thread has read lse1[r] before thread 0 rewrites it
    if (b == -INFINITY) return;
    float mx = fmaxf(a, b), wa = a == -INFINITY ? 0.f : expf(a - mx), wb = expf(b - mx), inv = 1.f / (wa + wb);
    for (int i = threadIdx.x; i < d; i += blockDim.x) o1[r * d + i] = (wa * o1[r * d + i] + wb * o2[r * d + i]) * inv;
    if (threadIdx.x == 0) lse1[r] = mx + logf(wa + wb);
}

// --- ops ----------------------------------------------------------------------------------

template <typename T>
ls_status upload_small(cuda_ctx *c, cuda_scratch *s, const T *host, size_t n, T **dev) {
    void *p = nullptr;
    LS_CHECK(cuda_scratch_get(s, n * sizeof(T), &p));
    LS_CUDA_CHECK(cudaMemcpyAsync(p, host, n * sizeof(T), cudaMemcpyHostToDevice, c->st));
    *dev = (T *)p;
    return LS_OK;
}

// Ordered on the stream like the uploads, so a changed array never races kernels reading the
// old one; an unchanged one costs a memcmp.
ls_status mirror_get(cuda_ctx *c, cuda_mirror *m, const void *host, size_t bytes, void **dev) {
    if (m->dev.p && bytes == m->bytes && !memcmp(m->host, host, bytes)) {
        *dev = m->dev.p;
        return LS_OK;
    }
    LS_CHECK(cuda_scratch_get(&m->dev, bytes, dev));
    LS_CUDA_CHECK(cudaMemcpyAsync(*dev, host, bytes, cudaMemcpyHostToDevice, c->st));
    m->host = ls_realloc(m->host, bytes ? bytes : 1);
    memcpy(m->host, host, bytes);
    m->bytes = bytes;
    return LS_OK;
}

ls_status cu_matmul(void *ctx, const ls_weight *w, const float *x, float *y, int64_t m) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (w->n_in > INT_MAX || w->n_out > INT_MAX || m > INT_MAX)
        return LS_ERR(LS_ERR_RANGE, "CUDA matmul: [%lld x %lld] x %lld rows exceeds cuBLAS's int sizes",
                      (long long)w->n_out, (long long)w->n_in, (long long)m);
    const void *wb = w->data;
    if (w->type != LS_BF16) { // not loaded through weight_load: dequantize into a tile
        void *p = nullptr;
        LS_CHECK(cuda_scratch_get(&c->wb, (size_t)(w->n_in * w->n_out) * 2, &p));
        LS_CHECK(cuda_dequant_bf16(c->st, w->type, w->data, (__nv_bfloat16 *)p, w->n_in * w->n_out));
        wb = p;
    }
    void *xb = nullptr;
    long long n = m * w->n_in;
    LS_CHECK(cuda_scratch_get(&c->xb, (size_t)n * 2, &xb));
    LS_CHECK(cuda_convert(c->st, LS_BF16, xb, 0, LS_F32, x, 0, (size_t)n, 1));
    const float one = 1.f, zero = 0.f;
    // Column-major view: y^T [n_out x m] = W [n_out x n_in] (stored as W^T) · x^T [n_in x m].
    LS_CUBLAS_CHECK(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)w->n_out, (int)m, (int)w->n_in, &one, wb,
                                 CUDA_R_16BF, (int)w->n_in, xb, CUDA_R_16BF, (int)w->n_in, &zero, y, CUDA_R_32F,
                                 (int)w->n_out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return LS_OK;
}

ls_status cu_get_rows(void *ctx, const ls_weight *w, const int32_t *ids, int64_t m, float *out) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    int32_t *dev = nullptr;
    LS_CHECK(upload_small(c, &c->idx, ids, (size_t)m, &dev));
    return cuda_get_rows(c->st, w->type, w->data, w->row_bytes, w->n_in, dev, m, out);
}

ls_status cu_rmsnorm(void *ctx, const float *x, const float *w, float *y, int64_t m, int64_t n, float eps) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (m > INT_MAX) return LS_ERR(LS_ERR_RANGE, "CUDA rmsnorm: %lld rows", (long long)m);
    rmsnorm_kernel<<<(unsigned)m, 256, 0, c->st>>>(x, w, y, n, eps);
    LS_CUDA_CHECK(cudaGetLastError());
    return LS_OK;
}

ls_status cu_swiglu(void *ctx, const float *gate, const float *up, float *out, int64_t n) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    swiglu_kernel<<<blocks_for(n, 256), 256, 0, c->st>>>(gate, up, out, n);
    LS_CUDA_CHECK(cudaGetLastError());
    return LS_OK;
}

ls_status cu_add(void *ctx, float *y, const float *x, int64_t n) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    add_kernel<<<blocks_for(n, 256), 256, 0, c->st>>>(y, x, n);
    LS_CUDA_CHECK(cudaGetLastError());
    return LS_OK;
}

ls_status cu_fill(void *ctx, float *y, float value, int64_t n) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    fill_f32_kernel<<<blocks_for(n, 256), 256, 0, c->st>>>(y, value, n);
    LS_CUDA_CHECK(cudaGetLastError());
    return LS_OK;
}

ls_status cu_convert(void *ctx, ls_dtype dst_t, void *dst, size_t dpitch, ls_dtype src_t, const void *src,
                     size_t spitch, size_t width, size_t rows) {
    return cuda_convert(((cuda_ctx *)ctx)->st, dst_t, dst, dpitch, src_t, src, spitch, width, rows);
}

ls_status cu_rope(void *ctx, float *x, int64_t m, int n_heads, int head_dim, const int64_t *pos,
                  const ls_rope_freqs *f) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    void *pos_dev = nullptr, *freq_dev = nullptr;
    int half = f->n_rot / 2;
    LS_CHECK(mirror_get(c, &c->pos, pos, (size_t)m * sizeof *pos, &pos_dev));
    LS_CHECK(mirror_get(c, &c->freq, f->inv_freq, (size_t)half * sizeof *f->inv_freq, &freq_dev));
    long long n = m * n_heads * half;
    rope_kernel<<<blocks_for(n, 256), 256, 0, c->st>>>(x, m, n_heads, head_dim, (const int64_t *)pos_dev, (const float *)freq_dev, half,
                                                       f->attn_factor, f->pairing == LS_ROPE_PAIR_ADJACENT);
    LS_CUDA_CHECK(cudaGetLastError());
    return LS_OK;
}

ls_status cu_attention(void *ctx, const ls_attn_args *a) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    void *pages = nullptr;
    long long spanned = a->n_kv + (a->n_kv > a->kv_sinks ? a->kv_gap : 0);
    if (a->kv_pages && spanned > 0) { // the entries the keys span; the same table for every layer is uploaded once
        size_t n = (size_t)((spanned + a->kv_page_len - 1) / a->kv_page_len);
        LS_CHECK(mirror_get(c, &c->pages, a->kv_pages, n * sizeof(int32_t), &pages));
    }
    return cuda_attention_f32(c->st, a, c->attn, (const int32_t *)pages);
}

ls_status cu_attn_merge(void *ctx, float *o1, float *lse1, const float *o2, const float *lse2, int64_t n, int d) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (n > INT_MAX) return LS_ERR(LS_ERR_RANGE, "CUDA attn_merge: %lld rows", (long long)n);
    merge_kernel<<<(unsigned)n, 128, 0, c->st>>>(o1, lse1, o2, lse2, d);
    LS_CUDA_CHECK(cudaGetLastError());
    return LS_OK;
}

// --- memory -------------------------------------------------------------------------------

ls_status cu_alloc(void *ctx, size_t bytes, void **out) {
    (void)ctx;
    cudaError_t e = cudaMalloc(out, bytes);
    if (e != cudaSuccess) {
        *out = NULL;
        (void)cudaGetLastError(); // clear the sticky-free error state
        return LS_ERR(LS_ERR_NOMEM, "cannot allocate %.3f GB of device memory: %s", (double)bytes / 1e9,
                      cudaGetErrorString(e));
    }
    return LS_OK;
}

void cu_release(void *ctx, void *p) {
    (void)ctx;
    cudaFree(p);
}

ls_status cu_upload(void *ctx, void *dst, const void *host, size_t bytes) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    LS_CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, c->st));
    return LS_OK;
}

ls_status cu_download(void *ctx, void *host, const void *src, size_t bytes) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    LS_CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, c->st));
    LS_CUDA_CHECK(cudaStreamSynchronize(c->st));
    return LS_OK;
}

ls_status cu_copy(void *ctx, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t rows) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (rows == 1) {
        const char *d = (const char *)dst, *s = (const char *)src;
        if (d < s + width && s < d + width && d != s) { // overlapping move: through a scratch copy
            void *tmp;
            LS_CHECK(cuda_scratch_get(&c->tmp, width, &tmp));
            LS_CUDA_CHECK(cudaMemcpyAsync(tmp, src, width, cudaMemcpyDeviceToDevice, c->st));
            src = tmp;
        }
        LS_CUDA_CHECK(cudaMemcpyAsync(dst, src, width, cudaMemcpyDeviceToDevice, c->st));
        return LS_OK;
    }
    LS_CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, rows, cudaMemcpyDeviceToDevice, c->st));
    return LS_OK;
}

ls_status cu_weight_load(void *ctx, const ls_weight *host, ls_weight *out) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    size_t n = (size_t)(host->n_in * host->n_out), raw_bytes = host->row_bytes * (size_t)host->n_out;
    void *dst;
    LS_CHECK(cu_alloc(ctx, n * 2, &dst));
    ls_status rc = LS_OK;
    if (host->type == LS_BF16) {
        rc = cu_upload(ctx, dst, host->data, raw_bytes);
    } else {
        void *raw;
        rc = cuda_scratch_get(&c->wb, raw_bytes, &raw);
        if (rc == LS_OK) rc = cu_upload(ctx, raw, host->data, raw_bytes);
        if (rc == LS_OK) rc = cuda_dequant_bf16(c->st, host->type, raw, (__nv_bfloat16 *)dst, (int64_t)n);
    }
    if (rc == LS_OK && cudaStreamSynchronize(c->st) != cudaSuccess)
        rc = LS_ERR(LS_ERR_DEVICE, "uploading a weight of %zu bytes failed", raw_bytes);
    if (rc != LS_OK) {
        cudaFree(dst);
        return rc;
    }
    *out = (ls_weight){.type = LS_BF16, .n_in = host->n_in, .n_out = host->n_out,
                       .row_bytes = (size_t)host->n_in * 2, .data = dst};
    return LS_OK;
}

void cu_weight_release(void *ctx, ls_weight *w) { cu_release(ctx, (void *)w->data); }

int cu_threads(void *ctx) {
    (void)ctx;
    return 1;
}

ls_status cu_sync(void *ctx) {
    LS_CUDA_CHECK(cudaStreamSynchronize(((cuda_ctx *)ctx)->st));
    return LS_OK;
}

void cu_set_act(void *ctx, ls_act_precision p) { (void)ctx, (void)p; } // always bf16 GEMM inputs

void scratch_free(cuda_scratch *s) {
    if (s->p) cudaFree(s->p);
    s->p = NULL, s->cap = 0;
}

void cu_free(void *ctx) {
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c) return;
    cudaStreamSynchronize(c->st);
    scratch_free(&c->xb), scratch_free(&c->wb), scratch_free(&c->idx), scratch_free(&c->tmp);
    scratch_free(&c->pos.dev), scratch_free(&c->freq.dev), scratch_free(&c->pages.dev);
    ls_free(c->pos.host), ls_free(c->freq.host), ls_free(c->pages.host);
    for (int i = 0; i < 4; i++) scratch_free(&c->attn[i]);
    if (c->blas) cublasDestroy(c->blas);
    if (c->st) cudaStreamDestroy(c->st);
    ls_free(c);
}

const ls_backend_iface g_cuda_iface = {
    .name = "cuda",
    .threads = cu_threads,
    .set_act_precision = cu_set_act,
    .matmul = cu_matmul,
    .get_rows = cu_get_rows,
    .rmsnorm = cu_rmsnorm,
    .swiglu = cu_swiglu,
    .add = cu_add,
    .fill = cu_fill,
    .convert = cu_convert,
    .rope = cu_rope,
    .attention = cu_attention,
    .attn_merge = cu_attn_merge,
    .on_host = false,
    .alloc = cu_alloc,
    .release = cu_release,
    .upload = cu_upload,
    .download = cu_download,
    .copy = cu_copy,
    .weight_load = cu_weight_load,
    .weight_release = cu_weight_release,
    .sync = cu_sync,
    .free = cu_free,
};

ls_status init_ctx(cuda_ctx *c, int device) {
    LS_CUDA_CHECK(cudaSetDevice(device));
    // A blocking stream: work on the legacy default stream (plain cudaMemcpy, as the
    // ls_cuda_* helpers use) waits for it, so mixing the two stays ordered.
    LS_CUDA_CHECK(cudaStreamCreate(&c->st));
    LS_CUBLAS_CHECK(cublasCreate(&c->blas));
    LS_CUBLAS_CHECK(cublasSetStream(c->blas, c->st));
    return LS_OK;
}

} // namespace

ls_status cuda_convert(cudaStream_t st, ls_dtype dst_t, void *dst, size_t dpitch, ls_dtype src_t, const void *src,
                       size_t spitch, size_t width, size_t rows) {
    long long total = (long long)(width * rows);
    if (!total) return LS_OK;
    convert_kernel<<<blocks_for(total, 256), 256, 0, st>>>(dst_t == LS_BF16, dst, (long long)dpitch, src_t == LS_BF16, src,
                                                           (long long)spitch, (long long)width, total);
    LS_CUDA_CHECK(cudaGetLastError());
    return LS_OK;
}

ls_status cuda_scratch_get(cuda_scratch *s, size_t bytes, void **out) {
    if (bytes > s->cap) {
        if (s->p) LS_CUDA_CHECK(cudaFree(s->p)); // cudaFree waits for work that may still read it
        s->p = NULL, s->cap = 0;
        size_t cap = bytes + bytes / 4 + 4096;
        cudaError_t e = cudaMalloc(&s->p, cap);
        if (e != cudaSuccess) {
            s->p = NULL;
            (void)cudaGetLastError();
            return LS_ERR(LS_ERR_NOMEM, "cannot allocate %.3f GB of device scratch: %s", (double)cap / 1e9,
                          cudaGetErrorString(e));
        }
        s->cap = cap;
    }
    *out = s->p;
    return LS_OK;
}

extern "C" ls_status ls_backend_cuda_init(int device, ls_backend_t **out) {
    *out = NULL;
    if (!ls_cuda_available()) return LS_ERR(LS_ERR_DEVICE, "no GPU for the CUDA backend: %s", ls_cuda_why_unavailable());
    cuda_ctx *c = (cuda_ctx *)ls_calloc(1, sizeof *c);
    c->device = device;
    ls_status rc = init_ctx(c, device);
    if (rc != LS_OK) {
        cu_free(c);
        return rc;
    }
    ls_backend_t *b = (ls_backend_t *)ls_malloc(sizeof *b);
    b->iface = &g_cuda_iface;
    b->ctx = c;
    *out = b;
    return LS_OK;
}

extern "C" ls_status ls_cuda_attention_bf16(ls_backend_t *b, const ls_attn_args *a) {
    if (b->iface != &g_cuda_iface) return LS_ERR(LS_ERR_INVALID, "ls_cuda_attention_bf16 needs the CUDA backend");
    LS_CHECK(ls_attn_rule_check(&a->rule));
    return cuda_attention_bf16(((cuda_ctx *)b->ctx)->st, a);
}

// Uniform values in [-scale, scale] from a hash of (seed, index): the same data for the same
// seed on any GPU, no host transfer.
__global__ static void fill_kernel(__nv_bfloat16 *p, long long n, unsigned seed, float scale) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned long long x = (unsigned long long)i * 0x9E3779B97F4A7C15ull + seed;
    x ^= x >> 33, x *= 0xff51afd7ed558ccdull, x ^= x >> 33, x *= 0xc4ceb9fe1a85ec53ull, x ^= x >> 33;
    p[i] = __float2bfloat16_rn(((float)(x >> 40) / 16777216.0f * 2.f - 1.f) * scale);
}

extern "C" ls_status ls_cuda_fill_bf16(void *dev, int64_t n, unsigned seed, float scale) {
    if (n <= 0) return LS_OK;
    fill_kernel<<<blocks_for(n, 256), 256>>>((__nv_bfloat16 *)dev, n, seed, scale);
    LS_CUDA_CHECK(cudaGetLastError());
    LS_CUDA_CHECK(cudaDeviceSynchronize());
    return LS_OK;
}

extern "C" ls_status ls_cuda_device_name(int device, char *buf, size_t size) {
    cudaDeviceProp prop;
    LS_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    snprintf(buf, size, "%s (%d SMs, %.0f GiB)", prop.name, prop.multiProcessorCount,
             (double)prop.totalGlobalMem / (1024.0 * 1024 * 1024));
    return LS_OK;
}
