// attn_rule.h — private to kernels/: the attention rules' key ranges as one inline function
// that host code (ops.c: ls_attn_ranges) and CUDA kernels (cuda/attention.cu) share, so the
// two can never disagree. The rules are described in ls_kernels.h. Tests:
// tests/unit/test_attn_rules.c, tests/gpu/test_ops.c.
#ifndef LS_ATTN_RULE_H
#define LS_ATTN_RULE_H

#include "ls_kernels.h"

#ifdef __CUDACC__
#define LS_HD __host__ __device__
#else
#define LS_HD
#endif

static inline LS_HD int ls_attn_ranges_inl(ls_attn_kind kind, int64_t group, int64_t sinks, int64_t window,
                                           int n_head, int64_t i, int h, int64_t lo[2], int64_t hi[2]) {
    if (i < 0) return 0;
    switch (kind) {
    case LS_ATTN_FULL:
        lo[0] = 0, hi[0] = i;
        return 1;
    case LS_ATTN_S2: {
        int64_t s = group / 2;
        if (h < n_head / 2) lo[0] = group * (i / group);      // unshifted half
        else lo[0] = i < s ? 0 : s + group * ((i - s) / group); // shifted half, no wrap-around
        hi[0] = i;
        return 1;
    }
    case LS_ATTN_SINK: {
        int n = 0;
        int64_t w = i - window > sinks ? i - window : sinks;
        if (sinks > 0) lo[n] = 0, hi[n] = i < sinks - 1 ? i : sinks - 1, n++;
        if (w <= i) lo[n] = w, hi[n] = i, n++;
        return n;
    }
    case LS_ATTN_WINDOW:
        lo[0] = i - window > 0 ? i - window : 0, hi[0] = i;
        return 1;
    default: return 0;
    }
}

#endif // LS_ATTN_RULE_H
