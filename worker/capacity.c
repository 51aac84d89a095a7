// capacity.c — the capacity planner's cost model (ls_capacity.h); the formulas are the ones in
// docs/deploy.md ("Capacity planner"). Tests: tests/oracle/test_plan_cli.py.
#include "ls_capacity.h"

#include <math.h>
#include <string.h>

// name, layers, d_model, d_ff, heads, KV heads, head dim, vocabulary, trained context (no
// file, no window layers)
static const ls_model_shape SHAPES[] = {
    {"smollm2-135m", 30, 576, 1536, 9, 3, 64, 49152, 8192, 0, 0, 0},
    {"llama2-7b", 32, 4096, 11008, 32, 32, 128, 32000, 4096, 0, 0, 0},
    {"llama2-13b", 40, 5120, 13824, 40, 40, 128, 32000, 4096, 0, 0, 0},
    {"llama2-70b", 80, 8192, 28672, 64, 8, 128, 32000, 4096, 0, 0, 0},
    {"codellama-34b", 48, 8192, 22016, 64, 8, 128, 32000, 16384, 0, 0, 0},
    {"llama3-8b", 32, 4096, 14336, 32, 8, 128, 128256, 8192, 0, 0, 0},
    {"llama3-70b", 80, 8192, 28672, 64, 8, 128, 128256, 8192, 0, 0, 0},
};

ls_status ls_shape_named(const char *name, ls_model_shape *out) {
    ls_buf known = {0};
    for (size_t i = 0; i < sizeof SHAPES / sizeof *SHAPES; i++) {
        if (!strcmp(name, SHAPES[i].name)) {
            *out = SHAPES[i];
            ls_buf_free(&known);
            return LS_OK;
        }
        ls_buf_printf(&known, "%s%s", i ? ", " : "", SHAPES[i].name);
    }
    ls_status rc = LS_ERR(LS_ERR_NOT_FOUND, "no model shape \"%s\" (known: %s)", name, known.data);
    ls_buf_free(&known);
    return rc;
}

void ls_shape_of_config(const ls_model_config *c, double file_bytes, ls_model_shape *out) {
    *out = (ls_model_shape){.n_layer = c->n_layer, .n_embd = c->n_embd, .n_ff = c->n_ff, .n_head = c->n_head,
                            .n_head_kv = c->n_head_kv, .head_dim = c->head_dim, .n_vocab = c->n_vocab,
                            .n_ctx_train = c->n_ctx_train, .file_bytes = file_bytes, .sliding_window = c->sliding_window};
    for (int64_t il = 0; c->layer_window && il < c->n_layer; il++) out->n_window_layers += c->layer_window[il] > 0;
    snprintf(out->name, sizeof out->name, "%s", c->name[0] ? c->name : "model");
}

// Weights of the layers' matrix products, per layer.
static double layer_params(const ls_model_shape *m) {
    double d = (double)m->n_embd, q = (double)(m->n_head * m->head_dim), kv = (double)(m->n_head_kv * m->head_dim);
    return d * q + 2 * d * kv + q * d + 3 * d * (double)m->n_ff;
}

double ls_shape_params(const ls_model_shape *m) {
    return (double)m->n_layer * (layer_params(m) + 2.0 * (double)m->n_embd) + 2.0 * (double)m->n_embd * (double)m->n_vocab;
}

// Keys the queries of [lo, hi) see, summed over positions and query heads (sampled when large).
static double visible_keys(const ls_attn_rule *rule, int64_t lo, int64_t hi) {
    int64_t step = (hi - lo) * rule->n_head > (1 << 24) ? ((hi - lo) * rule->n_head >> 24) + 1 : 1;
    double sum = 0;
    int64_t counted = 0;
    for (int64_t p = lo; p < hi; p += step, counted++)
        for (int h = 0; h < rule->n_head; h++) {
            int64_t a[2], b[2];
            int k = ls_attn_ranges(rule, p, h, a, b);
            for (int j = 0; j < k; j++) sum += (double)(b[j] - a[j] + 1); // inclusive ranges
        }
    return counted ? sum * (double)(hi - lo) / (double)counted : 0;
}

typedef struct rank_work {
    int64_t owned;
    double keys;       // visible keys summed over owned positions and heads, per layer (mean over layers)
    double recv;       // bytes received per layer
    int msgs;          // messages received per layer
    double borrowed;   // positions x KV heads kept from other ranks, per layer
} rank_work;

// The layers' rules as the sharded path plans them (worker/sp.c): shards by the rule, or by the
// model's window when every layer has one; needs covering the window layers too.
typedef struct layer_rules {
    ls_attn_rule shard, win;
    int n_extra;             // 1 when window layers sit next to global ones
    double n_global, n_win;  // layers under each
} layer_rules;

static layer_rules rules_of(const ls_model_shape *m, const ls_attn_rule *rule) {
    layer_rules lr = {.shard = *rule, .win = *rule, .n_global = (double)m->n_layer};
    if (m->n_window_layers <= 0 || m->sliding_window < 2) return lr;
    lr.win = (ls_attn_rule){.kind = LS_ATTN_WINDOW, .window = m->sliding_window - 1, .n_head = rule->n_head};
    lr.n_win = (double)m->n_window_layers;
    lr.n_global = (double)(m->n_layer - m->n_window_layers);
    if (lr.n_global == 0) lr.shard = lr.win;
    else lr.n_extra = 1;
    return lr;
}

static ls_status plan_work(const ls_model_shape *m, const layer_rules *lr, int64_t n, int P, double kv_elem,
                           rank_work *w, bool *ring) {
    ls_plan_t *plan;
    LS_CHECK(ls_plan_init_layers(&lr->shard, &lr->win, lr->n_extra, n, P, (int)m->n_head_kv, &plan));
    *ring = ls_plan_ring(plan);
    double L = lr->n_global + lr->n_win;
    double row = (double)m->head_dim * 2 * kv_elem; // K and V of one position and KV head
    for (int r = 0; r < P; r++) {
        ls_range own[2];
        int k = ls_plan_owned(plan, r, own);
        w[r] = (rank_work){.owned = ls_plan_owned_count(plan, r)};
        for (int i = 0; i < k; i++) {
            double g = lr->n_global > 0 ? visible_keys(&lr->shard, own[i].lo, own[i].hi) : 0;
            double wk = lr->n_win > 0 ? visible_keys(&lr->win, own[i].lo, own[i].hi) : 0;
            w[r].keys += (lr->n_global * g + lr->n_win * wk) / L;
        }
        if (ls_plan_ring(plan)) {
            w[r].recv = (double)(n - w[r].owned) * (double)m->n_head_kv * row;
            w[r].msgs = P - 1;
            continue;
        }
        ls_need need[LS_PLAN_MAX_NEEDS];
        int nn = ls_plan_needs(plan, r, need);
        for (int i = 0; i < nn; i++) {
            double kv = (double)__builtin_popcountll(need[i].kv_mask);
            w[r].recv += (double)(need[i].pos.hi - need[i].pos.lo) * kv * row;
            w[r].borrowed += (double)(need[i].pos.hi - need[i].pos.lo) * kv;
        }
        w[r].msgs = nn;
    }
    ls_plan_free(plan);
    return LS_OK;
}

ls_status ls_capacity_predict(const ls_model_shape *m, const ls_attn_rule *rule_in, int64_t n, int P,
                              const ls_device_rates *d, const ls_link_rates *l, ls_capacity *out) {
    if (n < 1 || P < 1 || P > LS_PLAN_MAX_RANKS)
        return LS_ERR(LS_ERR_INVALID, "plan: %lld tokens over %d ranks (1..%d ranks)", (long long)n, P, LS_PLAN_MAX_RANKS);
    if (!(d->matmul_flops > 0 && d->attention_flops > 0 && d->stream_bytes > 0 && l->bandwidth > 0))
        return LS_ERR(LS_ERR_INVALID, "plan: the device and link rates must be positive");
    ls_attn_rule rule = *rule_in;
    rule.n_head = (int)m->n_head;
    layer_rules lr = rules_of(m, &rule);
    rank_work *w = ls_calloc((size_t)P, sizeof *w);
    bool ring = false;
    ls_status rc = plan_work(m, &lr, n, P, d->kv_bytes, w, &ring);
    if (rc != LS_OK) {
        ls_free(w);
        return rc;
    }
    double L = (double)m->n_layer, hd = (double)m->head_dim, H = (double)m->n_head, K = (double)m->n_head_kv;
    double dm = (double)m->n_embd, kv_row = hd * 2 * d->kv_bytes;
    double tok_flop = 2 * L * layer_params(m), logits_flop = 2 * dm * (double)m->n_vocab;
    double params = ls_shape_params(m);
    double weights = d->weight_bytes > 0 ? params * d->weight_bytes : m->file_bytes > 0 ? m->file_bytes : params * 0.5625;
    *out = (ls_capacity){.weights = weights, .runtime = d->runtime_bytes};
    double keys_all = 0;
    int64_t owned_max = 0;
    for (int r = 0; r < P; r++) {
        const rank_work *x = &w[r];
        double mm = ((double)x->owned * tok_flop + (r == 0 ? logits_flop : 0)) / d->matmul_flops;
        double att = 4 * hd * x->keys * L / d->attention_flops;
        double comm_layer = x->msgs * l->latency + x->recv / l->bandwidth, total;
        if (P > 1 && ring) total = mm + fmax(att, L * comm_layer); // the ring overlaps compute
        else total = mm + att + L * comm_layer;
        if (total > out->prefill_s)
            out->prefill_s = total, out->prefill_matmul_s = mm, out->prefill_attention_s = att,
            out->prefill_comm_s = L * comm_layer;
        out->recv_per_layer_max = fmax(out->recv_per_layer_max, x->recv);
        out->recv_per_layer_all += x->recv;
        double kv = ((double)x->owned * K + x->borrowed) * L * kv_row;
        if (P > 1 && ring) kv += 2 * (double)x->owned * K * kv_row; // the ring's two buffers
        out->kv = fmax(out->kv, kv);
        keys_all += x->keys;
        if (x->owned > owned_max) owned_max = x->owned;
    }
    double ub = (double)(d->ubatch > 0 ? d->ubatch : 512);
    out->activations = (double)owned_max * (3 * dm + H * hd + 2 * H) * 4 +
                       fmin(ub, (double)owned_max) * (2 * (double)m->n_ff + 3 * dm + (H + 2 * K) * hd) * 4;
    out->total = out->weights + out->kv + out->activations + out->runtime;
    out->fits = d->memory_bytes <= 0 || out->total <= d->memory_bytes;
    out->matmul_flop = (double)n * tok_flop + logits_flop;
    out->attention_flop = 4 * hd * keys_all * L;
    out->visible_keys_mean = keys_all / ((double)n * H);
    // decode at context n: every rank streams the weights (the hidden state is replicated) and
    // its keys; one all-gather of (output, lse) per layer; the leader adds the logits.
    double kv_read = (double)owned_max * K * L * kv_row;
    double step = fmax(weights / d->stream_bytes, (tok_flop + logits_flop) / d->matmul_flops) + kv_read / d->stream_bytes;
    if (P > 1) step += L * (ceil(log2((double)P)) * l->latency + (double)(P - 1) * (H * hd + H) * 4 / l->bandwidth);
    out->decode_s = step;
    ls_free(w);
    return LS_OK;
}
