// attention.cu — flash-style attention on tensor cores for every rule (full, s2, sink,
// window), returning output and log-sum-exp. Its CPU twin is ls_ref_attention
// (kernels/ref/ops_ref.c); tests: tests/gpu/test_ops.c (op "attention"), benchmark:
// tests/gpu/bench_attention.c.
//
// A block takes 64 queries of one head (4 warps x 16 rows). Each warp keeps its 16 query rows
// as bf16 mma fragments and runs the online softmax in registers (FlashAttention-2's layout):
// for every tile of 64 keys staged in shared memory (K as rows, V transposed, both bf16),
//   S = Q·Kᵀ (mma.sync m16n8k16, fp32 accumulate), masked by the rule, scaled by
//   scale·log2(e); row max and sum across the 4 lanes that share a row; O rescaled; O += P·V
// with P re-packed from the S accumulators without leaving registers.
// Which tiles a block visits comes from the rule alone: per range slot (the sink rule's sinks
// and window, or the one range of the others) the block walks the union of its rows' key
// ranges, so work follows the visible keys; tiles inside every row's range skip the mask.
// The sink rule reads its sink range with q_sink (queries rotated at their cache slot).
#include "attn_rule.h"
#include "cuda_impl.h"

#include <climits>
#include <cstdint>

namespace {

constexpr int WARPS = 4, BQ = 16 * WARPS, BK = 64, THREADS = 32 * WARPS;
constexpr float LN2 = 0.693147180559945309f;

struct params {
    const void *q, *q_sink, *k, *v;
    void *out;
    float *lse;
    long long n_q, q_pos0, n_kv, kv_sinks, kv_pos0, kv_stride;
    int n_head, rep;           // rep = query heads per KV head
    float scale_log2;          // scale * log2(e)
    ls_attn_kind kind;
    long long group, sinks, window;
    int rule_heads;
    bool use_q_sink;           // slot 0 of the sink rule reads q_sink
};

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void put(float *p, float v) { *p = v; }
__device__ __forceinline__ void put(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

__device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); // .x (lo) in the low half
    return *reinterpret_cast<uint32_t *>(&v);
}

__device__ __forceinline__ void load4(const float *p, float x[4]) {
    float4 v = *reinterpret_cast<const float4 *>(p);
    x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
}
__device__ __forceinline__ void load4(const __nv_bfloat16 *p, float x[4]) {
    uint2 raw = *reinterpret_cast<const uint2 *>(p);
    const __nv_bfloat16 *h = reinterpret_cast<const __nv_bfloat16 *>(&raw);
    for (int e = 0; e < 4; e++) x[e] = __bfloat162float(h[e]);
}

// c += a·b for one 16x8 tile: a 16x16 bf16 (row), b 16x8 bf16 (col), c fp32.
__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ int ranges(const params &p, long long i, int h, long long lo[2], long long hi[2]) {
    int64_t l[2], u[2];
    int n = ls_attn_ranges_inl(p.kind, p.group, p.sinks, p.window, p.rule_heads, i, h, l, u);
    for (int k = 0; k < n; k++) lo[k] = l[k], hi[k] = u[k];
    return n;
}

__device__ __forceinline__ long long key_pos(const params &p, long long j) {
    return j < p.kv_sinks ? j : p.kv_pos0 + (j - p.kv_sinks);
}

// The key indices [jl, jh] whose positions lie in [lo, hi] (positions grow with the index).
__device__ __forceinline__ void to_index(const params &p, long long lo, long long hi, long long *jl, long long *jh) {
    *jl = lo < p.kv_sinks ? (lo > 0 ? lo : 0) : p.kv_sinks + (lo > p.kv_pos0 ? lo - p.kv_pos0 : 0);
    long long e = hi >= p.kv_pos0 ? p.kv_sinks + (hi - p.kv_pos0) : (hi < p.kv_sinks - 1 ? hi : p.kv_sinks - 1);
    *jh = e < p.n_kv - 1 ? e : p.n_kv - 1;
}

// Stages keys [j0, j0 + BK) of one KV head: K as rows, V transposed; keys past n_kv are 0.
template <typename T, int HD>
__device__ __forceinline__ void load_tile(const T *kh, const T *vh, long long j0, long long n_kv,
                                          __nv_bfloat16 (*ks)[HD + 8], __nv_bfloat16 (*vt)[BK + 8]) {
    constexpr int CHUNKS = HD / 4;
    for (int c = threadIdx.x; c < BK * CHUNKS; c += THREADS) {
        int r = c / CHUNKS, d = (c % CHUNKS) * 4;
        long long j = j0 + r;
        float kx[4] = {0, 0, 0, 0}, vx[4] = {0, 0, 0, 0};
        if (j < n_kv) {
            load4(kh + j * HD + d, kx);
            load4(vh + j * HD + d, vx);
        }
        *reinterpret_cast<uint2 *>(&ks[r][d]) = make_uint2(pack(kx[0], kx[1]), pack(kx[2], kx[3]));
        for (int e = 0; e < 4; e++) vt[d + e][r] = __float2bfloat16_rn(vx[e]);
    }
}

template <typename T, int HD>
__global__ void __launch_bounds__(THREADS) attn_kernel(params p) {
    __shared__ __align__(16) __nv_bfloat16 ks[BK][HD + 8];
    __shared__ __align__(16) __nv_bfloat16 vt[HD][BK + 8];
    __shared__ long long env_lo[2], env_hi[2], in_lo[2], in_hi[2];
    __shared__ int n_slots;

    const int h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const long long row0 = (long long)blockIdx.x * BQ;
    const T *kh = (const T *)p.k + (long long)(h / p.rep) * p.kv_stride * HD;
    const T *vh = (const T *)p.v + (long long)(h / p.rep) * p.kv_stride * HD;

    // The block's key envelope per slot (union of its rows' ranges) and the part every row sees.
    if (threadIdx.x < 2) {
        env_lo[threadIdx.x] = LLONG_MAX, env_hi[threadIdx.x] = -1;
        in_lo[threadIdx.x] = LLONG_MIN, in_hi[threadIdx.x] = LLONG_MAX;
    }
    if (threadIdx.x == 0) n_slots = 0;
    __syncthreads();
    if (threadIdx.x < BQ && row0 + threadIdx.x < p.n_q) {
        long long lo[2], hi[2];
        int n = ranges(p, p.q_pos0 + row0 + threadIdx.x, h, lo, hi);
        atomicMax(&n_slots, n);
        for (int k = 0; k < 2; k++) {
            long long jl = LLONG_MAX, jh = -1;
            if (k < n) to_index(p, lo[k], hi[k], &jl, &jh);
            if (jl <= jh) atomicMin(&env_lo[k], jl), atomicMax(&env_hi[k], jh);
            else jl = LLONG_MAX, jh = -1;
            atomicMax(&in_lo[k], jl);
            atomicMin(&in_hi[k], jh);
        }
    }
    __syncthreads();

    // This thread's two rows: g and g + 8 of the warp's 16.
    long long qi[2], rlo[2][2], rhi[2][2];
    int rn[2];
    for (int r = 0; r < 2; r++) {
        qi[r] = row0 + warp * 16 + g + 8 * r;
        rn[r] = qi[r] < p.n_q ? ranges(p, p.q_pos0 + qi[r], h, rlo[r], rhi[r]) : 0;
    }

    float o[HD / 8][4];
    for (int dt = 0; dt < HD / 8; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
    float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.f, 0.f};

    for (int k = 0; k < n_slots; k++) {
        if (env_lo[k] > env_hi[k]) continue;
        const T *qs = (const T *)(k == 0 && p.use_q_sink ? p.q_sink : p.q);
        uint32_t qa[HD / 16][4];
        for (int kt = 0; kt < HD / 16; kt++)
            for (int half = 0; half < 2; half++) // a[0],a[1]: cols 2tq..; a[2],a[3]: cols 2tq+8..
                for (int r = 0; r < 2; r++) {
                    float x0 = 0.f, x1 = 0.f;
                    if (qi[r] < p.n_q) {
                        const T *src = qs + (qi[r] * p.n_head + h) * HD + kt * 16 + half * 8 + 2 * tq;
                        x0 = to_f(src[0]), x1 = to_f(src[1]);
                    }
                    qa[kt][2 * half + r] = pack(x0, x1);
                }

        for (long long j0 = env_lo[k]; j0 <= env_hi[k]; j0 += BK) {
            __syncthreads(); // the previous tile is consumed
            load_tile<T, HD>(kh, vh, j0, p.n_kv, ks, vt);
            __syncthreads();
            const bool unmasked = j0 >= in_lo[k] && j0 + BK - 1 <= in_hi[k];

            float s[BK / 8][4];
            for (int nt = 0; nt < BK / 8; nt++) {
                s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
                for (int kt = 0; kt < HD / 16; kt++) {
                    uint32_t b0 = *reinterpret_cast<const uint32_t *>(&ks[nt * 8 + g][kt * 16 + 2 * tq]);
                    uint32_t b1 = *reinterpret_cast<const uint32_t *>(&ks[nt * 8 + g][kt * 16 + 8 + 2 * tq]);
                    mma(s[nt], qa[kt], b0, b1);
                }
            }
            for (int nt = 0; nt < BK / 8; nt++)
                for (int e = 0; e < 4; e++) {
                    int r = e >> 1;
                    float v = s[nt][e] * p.scale_log2;
                    if (!unmasked) {
                        long long j = j0 + nt * 8 + 2 * tq + (e & 1), pos = key_pos(p, j);
                        bool seen = j < p.n_kv && k < rn[r] && pos >= rlo[r][k] && pos <= rhi[r][k];
                        v = seen ? v : -INFINITY;
                    }
                    s[nt][e] = v;
                }
            for (int r = 0; r < 2; r++) { // online softmax for row r
                float mx = -INFINITY;
                for (int nt = 0; nt < BK / 8; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                float nm = fmaxf(m_r[r], mx), base = nm == -INFINITY ? 0.f : nm;
                float corr = nm == -INFINITY ? 1.f : exp2f(m_r[r] - nm), sum = 0.f;
                for (int nt = 0; nt < BK / 8; nt++)
                    for (int e = 2 * r; e < 2 * r + 2; e++) {
                        float pv = exp2f(s[nt][e] - base);
                        s[nt][e] = pv;
                        sum += pv;
                    }
                l_r[r] = l_r[r] * corr + sum;
                m_r[r] = nm;
                for (int dt = 0; dt < HD / 8; dt++) o[dt][2 * r] *= corr, o[dt][2 * r + 1] *= corr;
            }
            for (int kk = 0; kk < BK / 16; kk++) { // O += P·V, P straight from the S registers
                uint32_t a[4] = {pack(s[2 * kk][0], s[2 * kk][1]), pack(s[2 * kk][2], s[2 * kk][3]),
                                 pack(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
                for (int dt = 0; dt < HD / 8; dt++) {
                    uint32_t b0 = *reinterpret_cast<const uint32_t *>(&vt[dt * 8 + g][kk * 16 + 2 * tq]);
                    uint32_t b1 = *reinterpret_cast<const uint32_t *>(&vt[dt * 8 + g][kk * 16 + 8 + 2 * tq]);
                    mma(o[dt], a, b0, b1);
                }
            }
        }
    }

    for (int r = 0; r < 2; r++) {
        float l = l_r[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        if (qi[r] >= p.n_q) continue;
        float inv = l > 0.f ? 1.f / l : 0.f;
        T *dst = (T *)p.out + (qi[r] * p.n_head + h) * HD + 2 * tq;
        for (int dt = 0; dt < HD / 8; dt++) {
            put(dst + dt * 8, o[dt][2 * r] * inv);
            put(dst + dt * 8 + 1, o[dt][2 * r + 1] * inv);
        }
        if (p.lse && tq == 0) p.lse[qi[r] * p.n_head + h] = l > 0.f ? (m_r[r] + log2f(l)) * LN2 : -INFINITY;
    }
}

template <typename T>
ls_status launch(cudaStream_t st, const ls_attn_args *a) {
    const ls_attn_rule *r = &a->rule;
    params p = {a->q, a->q_sink, a->k, a->v, a->out, a->lse, a->n_q, a->q_pos0, a->n_kv, a->kv_sinks, a->kv_pos0,
                a->kv_stride, a->n_head, a->n_head / a->n_kv_head,
                a->scale * 1.4426950408889634f, r->kind, r->group, r->sinks, r->window, r->n_head,
                r->kind == LS_ATTN_SINK && a->q_sink != nullptr};
    if (((uintptr_t)a->k | (uintptr_t)a->v) % (4 * sizeof(T)))
        return LS_ERR(LS_ERR_INVALID, "CUDA attention: keys and values must be %zu-byte aligned", 4 * sizeof(T));
    if (a->n_q == 0) return LS_OK;
    long long blocks = (a->n_q + BQ - 1) / BQ;
    if (blocks > INT_MAX || a->n_head > 65535) return LS_ERR(LS_ERR_RANGE, "CUDA attention: grid too large");
    dim3 grid((unsigned)blocks, (unsigned)a->n_head);
    switch (a->head_dim) {
    case 32: attn_kernel<T, 32><<<grid, THREADS, 0, st>>>(p); break;
    case 64: attn_kernel<T, 64><<<grid, THREADS, 0, st>>>(p); break;
    case 96: attn_kernel<T, 96><<<grid, THREADS, 0, st>>>(p); break;
    case 128: attn_kernel<T, 128><<<grid, THREADS, 0, st>>>(p); break;
    default:
        return LS_ERR(LS_ERR_UNSUPPORTED, "CUDA attention: head dimension %d (supported: 32, 64, 96, 128)", a->head_dim);
    }
    LS_CUDA_CHECK(cudaGetLastError());
    return LS_OK;
}

} // namespace

ls_status cuda_attention_f32(cudaStream_t st, const ls_attn_args *a) { return launch<float>(st, a); }
ls_status cuda_attention_bf16(cudaStream_t st, const ls_attn_args *a) { return launch<__nv_bfloat16>(st, a); }
