// backend_cpu.c — the CPU backend: its context (thread pool, per-thread scratch), the
// interface table, the SIMD helpers, and the element-wise ops (rmsnorm, swiglu, add,
// get_rows, rope). Matmul and attention have files of their own. Twins: kernels/ref.
// Tests: tests/unit/test_kernels.c.
#include "cpu_impl.h"
#include "simd.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

float *cpu_scratch_get(cpu_scratch *s, size_t n) {
    if (n > s->cap) {
        ls_free(s->data);
        s->cap = n + n / 4 + 1024;
        s->data = ls_aligned_alloc(64, s->cap * sizeof(float));
    }
    return s->data;
}

// --- SIMD helpers ---------------------------------------------------------------------------


float cpu_dot(const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    float sum = 0.0f;
#if defined(__AVX2__)
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    sum = simd_hsum(_mm256_add_ps(acc0, acc1));
#endif
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

void cpu_axpy(float *y, float alpha, const float *x, int64_t n) {
    int64_t i = 0;
#if defined(__AVX2__)
    __m256 va = _mm256_set1_ps(alpha);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
    for (; i < n; i++) y[i] += alpha * x[i];
}

void cpu_scale(float *y, float alpha, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] *= alpha;
}

// --- element-wise ops -------------------------------------------------------------------------
// Each splits its rows (or elements) into tasks of at least `grain` work so small calls run
// on the caller alone.

typedef struct rows_job {
    const float *x, *w;
    float *y;
    const float *x2;
    int64_t m, n, per_task;
    float eps;
} rows_job;

static int64_t n_tasks_for(int64_t items, int64_t grain, int64_t *per_task, int n_threads) {
    int64_t tasks = items / grain;
    if (tasks < 1) tasks = 1;
    if (tasks > 4 * n_threads) tasks = 4 * n_threads;
    *per_task = (items + tasks - 1) / tasks;
    return (items + *per_task - 1) / *per_task;
}

static void rmsnorm_task(void *vj, int64_t task, int thread) {
    (void)thread;
    const rows_job *j = vj;
    for (int64_t r = task * j->per_task; r < j->m && r < (task + 1) * j->per_task; r++) {
        const float *x = j->x + r * j->n;
        float *y = j->y + r * j->n;
        double ss = 0.0;
        for (int64_t i = 0; i < j->n; i++) ss += (double)x[i] * x[i];
        float inv = (float)(1.0 / sqrt(ss / (double)j->n + (double)j->eps));
        for (int64_t i = 0; i < j->n; i++) y[i] = x[i] * inv * j->w[i];
    }
}

ls_status cpu_rmsnorm(void *ctx, const float *x, const float *w, float *y, int64_t m, int64_t n, float eps) {
    cpu_ctx *c = ctx;
    rows_job j = {.x = x, .w = w, .y = y, .m = m, .n = n, .eps = eps};
    int64_t grain = n < 16384 ? 16384 / n : 1; // rows per task, at least
    ls_pool_run(c->pool, n_tasks_for(m, grain, &j.per_task, c->n_threads), rmsnorm_task, &j);
    return LS_OK;
}

static inline float silu(float g) { return g / (1.0f + expf(-g)); }

static void swiglu_task(void *vj, int64_t task, int thread) {
    (void)thread;
    const rows_job *j = vj;
    int64_t end = (task + 1) * j->per_task < j->n ? (task + 1) * j->per_task : j->n;
    for (int64_t i = task * j->per_task; i < end; i++) j->y[i] = silu(j->x[i]) * j->x2[i];
}

ls_status cpu_swiglu(void *ctx, const float *gate, const float *up, float *out, int64_t n) {
    cpu_ctx *c = ctx;
    rows_job j = {.x = gate, .x2 = up, .y = out, .n = n};
    ls_pool_run(c->pool, n_tasks_for(n, 16384, &j.per_task, c->n_threads), swiglu_task, &j);
    return LS_OK;
}

ls_status cpu_add(void *ctx, float *y, const float *x, int64_t n) {
    (void)ctx;
    for (int64_t i = 0; i < n; i++) y[i] += x[i]; // memory-bound: one thread is enough
    return LS_OK;
}

ls_status cpu_get_rows(void *ctx, const ls_weight *w, const int32_t *ids, int64_t m, float *out) {
    (void)ctx;
    for (int64_t i = 0; i < m; i++)
        LS_CHECK(ls_dequant_row(w->type, (const uint8_t *)w->data + (size_t)ids[i] * w->row_bytes,
                                out + i * w->n_in, w->n_in));
    return LS_OK;
}

// --- rope ---------------------------------------------------------------------------------------

typedef struct rope_job {
    float *x;
    int64_t m;
    int n_heads, head_dim;
    const int64_t *pos;
    const ls_rope_freqs *f;
    cpu_ctx *c;
} rope_job;

static void rope_task(void *vj, int64_t t, int thread) {
    const rope_job *j = vj;
    int half = j->f->n_rot / 2;
    float *cs = cpu_scratch_get(&j->c->thread_scratch[thread], (size_t)j->f->n_rot);
    float p = (float)j->pos[t]; // exact: positions are below 2^24
    for (int i = 0; i < half; i++) {
        float theta = p * j->f->inv_freq[i]; // one f32 product: never accumulated
        double th = (double)theta;           // cos/sin of that f32 angle, reduced exactly
        cs[i] = (float)cos(th) * j->f->attn_factor;
        cs[half + i] = (float)sin(th) * j->f->attn_factor;
    }
    for (int h = 0; h < j->n_heads; h++) {
        float *v = j->x + (t * j->n_heads + h) * j->head_dim;
        for (int i = 0; i < half; i++) {
            int a = j->f->pairing == LS_ROPE_PAIR_ADJACENT ? 2 * i : i;
            int b = j->f->pairing == LS_ROPE_PAIR_ADJACENT ? 2 * i + 1 : i + half;
            float x0 = v[a], x1 = v[b], c = cs[i], s = cs[half + i];
            v[a] = x0 * c - x1 * s;
            v[b] = x0 * s + x1 * c;
        }
    }
}

ls_status cpu_rope(void *ctx, float *x, int64_t m, int n_heads, int head_dim, const int64_t *pos,
                   const ls_rope_freqs *f) {
    cpu_ctx *c = ctx;
    rope_job j = {x, m, n_heads, head_dim, pos, f, c};
    ls_pool_run(c->pool, m, rope_task, &j);
    return LS_OK;
}

// --- attention merge ------------------------------------------------------------------------

ls_status cpu_attn_merge(void *ctx, float *o1, float *lse1, const float *o2, const float *lse2,
                         int64_t n, int d) {
    (void)ctx;
    for (int64_t r = 0; r < n; r++) {
        float a = lse1[r], b = lse2[r];
        if (b == -INFINITY) continue;
        if (a == -INFINITY) {
            memcpy(o1 + r * d, o2 + r * d, (size_t)d * sizeof *o1);
            lse1[r] = b;
            continue;
        }
        float mx = a > b ? a : b, wa = expf(a - mx), wb = expf(b - mx), inv = 1.0f / (wa + wb);
        for (int i = 0; i < d; i++) o1[r * d + i] = (wa * o1[r * d + i] + wb * o2[r * d + i]) * inv;
        lse1[r] = mx + logf(wa + wb);
    }
    return LS_OK;
}

// --- the backend ----------------------------------------------------------------------------

static int cpu_threads(void *ctx) { return ((cpu_ctx *)ctx)->n_threads; }
static void cpu_set_act(void *ctx, ls_act_precision p) { ((cpu_ctx *)ctx)->act = p; }

static void cpu_free(void *ctx) {
    cpu_ctx *c = ctx;
    if (!c) return;
    ls_pool_free(c->pool);
    for (int i = 0; i < c->n_threads && c->thread_scratch; i++) ls_free(c->thread_scratch[i].data);
    ls_free(c->thread_scratch);
    ls_free(c->shared.data);
    ls_free(c);
}

static ls_status cpu_fill(void *ctx, float *y, float value, int64_t n) {
    (void)ctx;
    for (int64_t i = 0; i < n; i++) y[i] = value;
    return LS_OK;
}

// F32 <-> Q8_0 rows (a q8_0 KV cache); pitches in elements, all multiples of 32 (ops.c checks).
static ls_status convert_q8(ls_dtype dst_t, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                            size_t rows) {
    const size_t bb = 34; // bytes per block: fp16 scale + 32 int8
    for (size_t r = 0; r < rows; r++) {
        if (dst_t == LS_F32) {
            LS_CHECK(ls_dequant_row(LS_Q8_0, (const char *)src + r * spitch / 32 * bb, (float *)dst + r * dpitch, (int64_t)width));
            continue;
        }
        const float *x = (const float *)src + r * spitch;
        uint8_t *out = (uint8_t *)dst + r * dpitch / 32 * bb;
        for (size_t b = 0; b < width / 32; b++) {
            int8_t q[32];
            uint16_t d = ls_f32_to_fp16(cpu_q8_block(x + 32 * b, q));
            memcpy(out + b * bb, &d, 2);
            memcpy(out + b * bb + 2, q, 32);
        }
    }
    return LS_OK;
}

static ls_status cpu_convert(void *ctx, ls_dtype dst_t, void *dst, size_t dpitch, ls_dtype src_t, const void *src,
                             size_t spitch, size_t width, size_t rows) {
    (void)ctx;
    if (dst_t == LS_Q8_0 || src_t == LS_Q8_0) return convert_q8(dst_t, dst, dpitch, src, spitch, width, rows);
    if (dst_t == src_t) { // a copy (the f32 KV cache)
        size_t e = dst_t == LS_F32 ? 4 : 2;
        for (size_t r = 0; r < rows; r++) memmove((char *)dst + r * dpitch * e, (const char *)src + r * spitch * e, width * e);
        return LS_OK;
    }
    for (size_t r = 0; r < rows; r++)
        for (size_t i = 0; i < width; i++) {
            size_t d = r * dpitch + i, s = r * spitch + i;
            float v = src_t == LS_F32 ? ((const float *)src)[s] : ls_bf16_to_f32(((const uint16_t *)src)[s]);
            if (dst_t == LS_F32) ((float *)dst)[d] = v;
            else ((uint16_t *)dst)[d] = src_t == LS_BF16 ? ((const uint16_t *)src)[s] : ls_f32_to_bf16(v);
        }
    return LS_OK;
}

// Host memory: plain allocations (64-byte aligned) and memcpy/memmove.
static ls_status cpu_alloc(void *ctx, size_t bytes, void **out) {
    (void)ctx;
    if (posix_memalign(out, 64, bytes) != 0) {
        *out = NULL;
        return LS_ERR(LS_ERR_NOMEM, "cannot allocate %.3f GB of host memory", (double)bytes / 1e9);
    }
    return LS_OK;
}
static void cpu_release(void *ctx, void *p) { (void)ctx, free(p); }
static ls_status cpu_move(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx, memmove(dst, src, bytes);
    return LS_OK;
}
static ls_status cpu_copy(void *ctx, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                          size_t rows) {
    (void)ctx;
    for (size_t r = 0; r < rows; r++) memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    return LS_OK;
}

static const ls_backend_iface g_cpu_iface = {
    .name = "cpu",
    .threads = cpu_threads,
    .set_act_precision = cpu_set_act,
    .matmul = cpu_matmul,
    .get_rows = cpu_get_rows,
    .rmsnorm = cpu_rmsnorm,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .fill = cpu_fill,
    .convert = cpu_convert,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .attn_merge = cpu_attn_merge,
    .on_host = true,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_move,
    .download = cpu_move,
    .copy = cpu_copy,
    .free = cpu_free,
};

ls_status ls_backend_cpu_init(int n_threads, int first_cpu, ls_backend_t **out) {
    *out = NULL;
    cpu_ctx *c = ls_calloc(1, sizeof *c);
    ls_status rc = cpu_isa_choose(&c->isa);
    if (rc == LS_OK) rc = ls_pool_init(n_threads, first_cpu, &c->pool);
    if (rc != LS_OK) {
        ls_free(c);
        return rc;
    }
    c->n_threads = ls_pool_threads(c->pool);
    c->thread_scratch = ls_calloc((size_t)c->n_threads, sizeof *c->thread_scratch);
    openblas_set_num_threads(1); // our pool parallelizes; each sgemm runs on one thread
    ls_backend_t *b = ls_malloc(sizeof *b);
    b->iface = &g_cpu_iface;
    b->ctx = c;
    *out = b;
    return LS_OK;
}
