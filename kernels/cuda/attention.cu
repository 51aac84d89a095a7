// attention.cu — flash-style attention on tensor cores for every rule (full, s2, sink,
// window), returning output and log-sum-exp. Its CPU twin is ls_ref_attention
// (kernels/ref/ops_ref.c); tests: tests/gpu/test_ops.c (op "attention"), benchmark:
// tests/gpu/bench_attention.c.
//
// The kernel reads bf16 (f32 inputs are converted once per call into scratch, dropping the KV
// stride). A block takes 128 queries of one head (8 warps x 16 rows). Each warp keeps its 16
// query rows as bf16 mma fragments and runs the online softmax in registers
// (FlashAttention-2's layout): tiles of 64 keys are copied to shared memory with cp.async,
// two stages deep so the next tile loads while this one computes; K and V stay row-major and
// ldmatrix (.trans for V) feeds the tensor cores;
//   S = Q·Kᵀ (mma.sync m16n8k16, fp32 accumulate), masked by the rule, scaled by
//   scale·log2(e); row max and sum across the 4 lanes that share a row; O rescaled; O += P·V
// with P re-packed from the S accumulators without leaving registers.
// Which tiles a block visits comes from the rule alone: per range slot (the sink rule's sinks
// and window, or the one range of the others) the block walks the union of its rows' key
// ranges, so work follows the visible keys; tiles inside every row's range skip the mask.
// The sink rule reads its sink range with q_sink (queries rotated at their cache slot).
// Keys and values may lie in pages of a paged bf16 cache (worker/kv.c): a tile's rows are then
// fetched row by row through the page table (a device copy of the host array), and the window
// of a stream may start kv_gap slots after its sinks.
#include "attn_rule.h"
#include "cuda_impl.h"

#include <climits>
#include <cstdint>

namespace {

constexpr int WARPS = 8, BQ = 16 * WARPS, BK = 64, THREADS = 32 * WARPS;
constexpr float LN2 = 0.693147180559945309f;
typedef __nv_bfloat16 bf16;

struct params {
    const bf16 *q, *q_sink, *k, *v;
    void *out;
    float *lse;
    long long n_q, q_pos0, n_kv, kv_sinks, kv_pos0, kv_stride;
    int n_head, rep;           // rep = query heads per KV head
    float scale_log2;          // scale * log2(e)
    ls_attn_kind kind;
    long long group, sinks, window;
    int rule_heads;
    bool use_q_sink;           // slot 0 of the sink rule (the sinks, S > 0) reads q_sink
    const int32_t *pages;      // device page table, or null: one array per KV head
    long long page_len, page_stride, kv_gap; // slots per page, elements from page to page
};

// Row of key j of one KV head (kh: the head's first row, in page 0 when paged).
template <int HD>
__device__ __forceinline__ const bf16 *key_row(const params &p, const bf16 *kh, long long j) {
    long long s = j < p.kv_sinks ? j : j + p.kv_gap;
    if (!p.pages) return kh + s * HD;
    return kh + (long long)p.pages[s / p.page_len] * p.page_stride + (s % p.page_len) * HD;
}

__device__ __forceinline__ void put(float *p, float v) { *p = v; }
__device__ __forceinline__ void put(bf16 *p, float v) { *p = __float2bfloat16_rn(v); }

__device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); // .x (lo) in the low half
    return *reinterpret_cast<uint32_t *>(&v);
}

// c += a·b for one 16x8 tile: a 16x16 bf16 (row), b 16x8 bf16 (col), c fp32.
__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 bf16 matrices from shared memory; lane l gives the address of row l % 8 of matrix
// l / 8. Plain: lane gets (row lane/4, cols 2(lane%4)..+1) of each; .trans: the transpose.
__device__ __forceinline__ void ldsm4(uint32_t r[4], const bf16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void ldsm4_t(uint32_t r[4], const bf16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

// 16 bytes global -> shared without registers; src_bytes 0 writes zeros.
__device__ __forceinline__ void cp16(bf16 *dst, const bf16 *src, int src_bytes) {
    unsigned a = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_wait_all_but_one() { asm volatile("cp.async.wait_group 1;\n" ::); }

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

// Starts copying keys and values [j0, j0 + BK) of one KV head into a stage; past n_kv: 0.
template <int HD>
__device__ __forceinline__ void issue_tile(const params &p, const bf16 *kh, const bf16 *vh, long long j0, bf16 *ks,
                                           bf16 *vs) {
    constexpr int CH = HD / 8, LD = HD + 8;
    for (int c = threadIdx.x; c < BK * CH; c += THREADS) {
        int r = c / CH, d = (c % CH) * 8;
        long long j = j0 + r;
        bool in = j < p.n_kv;
        cp16(ks + r * LD + d, in ? key_row<HD>(p, kh, j) + d : kh, in ? 16 : 0);
        cp16(vs + r * LD + d, in ? key_row<HD>(p, vh, j) + d : vh, in ? 16 : 0);
    }
}

template <typename TO, int HD>
__global__ void __launch_bounds__(THREADS) attn_kernel(params p) {
    constexpr int LD = HD + 8, STAGE = BK * LD; // padded rows: ldmatrix rows fall in distinct banks
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *ks = reinterpret_cast<bf16 *>(smem_raw), *vs = ks + 2 * STAGE; // [2][BK][LD] each
    __shared__ long long env_lo[2], env_hi[2], in_lo[2], in_hi[2];
    __shared__ int n_slots;

    const int h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const long long row0 = (long long)blockIdx.x * BQ;
    const long long head_rows = p.pages ? p.page_len : p.kv_stride; // rows from one KV head to the next
    const bf16 *kh = p.k + (long long)(h / p.rep) * head_rows * HD;
    const bf16 *vh = p.v + (long long)(h / p.rep) * head_rows * HD;

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
    // ldmatrix row addresses of this lane: matrix lane/8, row lane%8
    const int mi = lane / 8, mr = lane % 8;

    for (int k = 0; k < n_slots; k++) {
        if (env_lo[k] > env_hi[k]) continue;
        const bf16 *qs = k == 0 && p.use_q_sink ? p.q_sink : p.q;
        uint32_t qa[HD / 16][4];
        for (int kt = 0; kt < HD / 16; kt++)
            for (int half = 0; half < 2; half++) // a[0],a[1]: cols 2tq..; a[2],a[3]: cols 2tq+8..
                for (int r = 0; r < 2; r++)
                    qa[kt][2 * half + r] =
                        qi[r] < p.n_q ? *reinterpret_cast<const uint32_t *>(qs + (qi[r] * p.n_head + h) * HD + kt * 16 +
                                                                            half * 8 + 2 * tq)
                                      : 0u;

        const long long first = env_lo[k];
        const int n_tiles = (int)((env_hi[k] - first) / BK + 1);
        issue_tile<HD>(p, kh, vh, first, ks, vs);
        cp_commit();
        for (int t = 0; t < n_tiles; t++) {
            const long long j0 = first + (long long)t * BK;
            if (t + 1 < n_tiles) issue_tile<HD>(p, kh, vh, j0 + BK, ks + ((t + 1) & 1) * STAGE, vs + ((t + 1) & 1) * STAGE);
            cp_commit();
            cp_wait_all_but_one(); // tile t has landed
            __syncthreads();
            const bf16 *kt_s = ks + (t & 1) * STAGE, *vt_s = vs + (t & 1) * STAGE;
            const bool unmasked = j0 >= in_lo[k] && j0 + BK - 1 <= in_hi[k];

            float s[BK / 8][4];
            for (int nt = 0; nt < BK / 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
            for (int nt = 0; nt < BK / 8; nt += 2)
                for (int kt = 0; kt < HD / 16; kt++) { // matrices: (nt, d lo), (nt, d hi), (nt+1, lo), (nt+1, hi)
                    uint32_t b[4];
                    ldsm4(b, kt_s + ((nt + (mi >> 1)) * 8 + mr) * LD + kt * 16 + (mi & 1) * 8);
                    mma(s[nt], qa[kt], b[0], b[1]);
                    mma(s[nt + 1], qa[kt], b[2], b[3]);
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
                for (int dt = 0; dt < HD / 8; dt += 2) { // matrices: (keys lo, dt), (keys hi, dt), (lo, dt+1), (hi, dt+1)
                    uint32_t b[4];
                    ldsm4_t(b, vt_s + (kk * 16 + (mi & 1) * 8 + mr) * LD + (dt + (mi >> 1)) * 8);
                    mma(o[dt], a, b[0], b[1]);
                    mma(o[dt + 1], a, b[2], b[3]);
                }
            }
            __syncthreads(); // this stage is free for the tile after next
        }
    }

    for (int r = 0; r < 2; r++) {
        float l = l_r[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        if (qi[r] >= p.n_q) continue;
        float inv = l > 0.f ? 1.f / l : 0.f;
        TO *dst = (TO *)p.out + (qi[r] * p.n_head + h) * HD + 2 * tq;
        for (int dt = 0; dt < HD / 8; dt++) {
            put(dst + dt * 8, o[dt][2 * r] * inv);
            put(dst + dt * 8 + 1, o[dt][2 * r + 1] * inv);
        }
        if (p.lse && tq == 0) p.lse[qi[r] * p.n_head + h] = l > 0.f ? (m_r[r] + log2f(l)) * LN2 : -INFINITY;
    }
}

template <typename TO, int HD>
ls_status launch_hd(cudaStream_t st, dim3 grid, const params &p) {
    constexpr size_t smem = 2 * 2 * BK * (HD + 8) * sizeof(bf16); // K and V, two stages
    static bool sized = false;
    if (!sized) {
        LS_CUDA_CHECK(cudaFuncSetAttribute(attn_kernel<TO, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        sized = true;
    }
    attn_kernel<TO, HD><<<grid, THREADS, smem, st>>>(p);
    LS_CUDA_CHECK(cudaGetLastError());
    return LS_OK;
}

// pages: the device copy of a->kv_pages (null: contiguous keys, kv_stride rows per head).
template <typename TO>
ls_status launch(cudaStream_t st, const ls_attn_args *a, const bf16 *q, const bf16 *q_sink, const bf16 *k,
                 const bf16 *v, long long kv_stride, const int32_t *pages) {
    const ls_attn_rule *r = &a->rule;
    params p = {q, q_sink, k, v, a->out, a->lse, a->n_q, a->q_pos0, a->n_kv, a->kv_sinks, a->kv_pos0,
                kv_stride, a->n_head, a->n_head / a->n_kv_head,
                a->scale * 1.4426950408889634f, r->kind, r->group, r->sinks, r->window, r->n_head,
                r->kind == LS_ATTN_SINK && r->sinks > 0 && q_sink != nullptr, // slot 0 is the window when S = 0
                pages, a->kv_page_len, (long long)(a->kv_page_bytes / sizeof(bf16)), a->kv_gap};
    if (((uintptr_t)k | (uintptr_t)v) % 16 || (pages && a->kv_page_bytes % 16))
        return LS_ERR(LS_ERR_INVALID, "CUDA attention: keys, values and pages must be 16-byte aligned");
    long long blocks = (a->n_q + BQ - 1) / BQ;
    if (blocks > INT_MAX || a->n_head > 65535) return LS_ERR(LS_ERR_RANGE, "CUDA attention: grid too large");
    dim3 grid((unsigned)blocks, (unsigned)a->n_head);
    switch (a->head_dim) {
    case 32: return launch_hd<TO, 32>(st, grid, p);
    case 64: return launch_hd<TO, 64>(st, grid, p);
    case 96: return launch_hd<TO, 96>(st, grid, p);
    case 128: return launch_hd<TO, 128>(st, grid, p);
    default:
        return LS_ERR(LS_ERR_UNSUPPORTED, "CUDA attention: head dimension %d (supported: 32, 64, 96, 128)", a->head_dim);
    }
}

// x (f32, rows spitch elements apart) into scratch s as bf16 rows of `width`, packed.
ls_status to_scratch(cudaStream_t st, cuda_scratch *s, const float *x, size_t width, size_t rows, size_t spitch, bf16 **out) {
    void *p = nullptr;
    LS_CHECK(cuda_scratch_get(s, width * rows * sizeof(bf16), &p));
    LS_CHECK(cuda_convert(st, LS_BF16, p, width, LS_F32, x, spitch, width, rows));
    *out = (bf16 *)p;
    return LS_OK;
}

} // namespace

ls_status cuda_attention_f32(cudaStream_t st, const ls_attn_args *a, cuda_scratch scr[4], const int32_t *pages) {
    if (a->n_q == 0) return LS_OK;
    if (a->kv_type == LS_Q8_0 || (a->kv_pages && a->kv_type != LS_BF16))
        return LS_ERR(LS_ERR_UNSUPPORTED, "CUDA attention: keys and values of type %s%s (the CUDA backend reads f32 or "
                                          "bf16 arrays, and bf16 pages)",
                      ls_dtype_name(a->kv_type), a->kv_pages ? " in pages" : "");
    bf16 *q, *qs = nullptr, *k, *v;
    size_t nq = (size_t)(a->n_q * a->n_head * a->head_dim);
    LS_CHECK(to_scratch(st, &scr[0], a->q, nq, 1, nq, &q));
    if (a->q_sink) LS_CHECK(to_scratch(st, &scr[1], a->q_sink, nq, 1, nq, &qs));
    if (a->kv_type == LS_BF16) // a bf16 cache: read in place
        return launch<float>(st, a, q, qs, (const bf16 *)a->k, (const bf16 *)a->v, a->kv_stride, pages);
    // per KV head, the rows its keys span (n_kv, and the gap), dropping the stride
    long long slots = a->n_kv + (a->n_kv > a->kv_sinks ? a->kv_gap : 0);
    size_t width = (size_t)(slots * a->head_dim), spitch = (size_t)(a->kv_stride * a->head_dim);
    LS_CHECK(to_scratch(st, &scr[2], a->k, width, (size_t)a->n_kv_head, spitch, &k));
    LS_CHECK(to_scratch(st, &scr[3], a->v, width, (size_t)a->n_kv_head, spitch, &v));
    return launch<float>(st, a, q, qs, k, v, slots, nullptr);
}

ls_status cuda_attention_bf16(cudaStream_t st, const ls_attn_args *a) {
    if (a->n_q == 0) return LS_OK;
    if (a->kv_pages || a->kv_type != LS_F32) // (kv_type F32 is the default: the pointers hold bf16 here)
        return LS_ERR(LS_ERR_UNSUPPORTED, "ls_cuda_attention_bf16: contiguous bf16 keys only");
    return launch<bf16>(st, a, (const bf16 *)a->q, (const bf16 *)a->q_sink, (const bf16 *)a->k, (const bf16 *)a->v,
                        a->kv_stride, nullptr);
}
