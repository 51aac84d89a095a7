// batch_dump.c — test helper: runs several sequences through ls_engine_forward_batch and
// writes the logits of each one's batched tokens as raw f32 (tests/oracle/test_forward.py
// compares them with the numpy reference). SPEC has one sequence per line:
//   RULE G S W STREAM START SPLIT LF id id id ...
// RULE full|s2|sink|window with group G, sinks S, window W; STREAM 0/1. Tokens [0, START) are
// prefilled alone first (ls_engine_forward), so the sequences start the batch at different
// positions; tokens [START, SPLIT) then run as one item of a ragged batch of every sequence
// (logits from the item's token LF on), and the rest as decode batches, one token of every
// unfinished sequence per call. OUT gets, per sequence in order, rows [START, n) of
// [n_vocab] logits; rows not asked for are NaN. With --bad 1 a first batch call carries an
// extra item with an id outside the vocabulary: it must be refused naming that item, with no
// sequence changed, before the batch runs without it.
//   batch_dump MODEL SPEC OUT [--ubatch N] [--rope-scaling S] [--rope-scale X] [--yarn-orig-ctx N] [--bad 1]
#include "ls_engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SEQS 16

typedef struct seq_spec {
    ls_seq_opts so;
    int64_t start, split, lf;
    ls_vec_i32 ids;
    ls_seq_t *seq;
    float *out; // [n - start][n_vocab]
    int64_t n_vocab, row0;  // row0: the out row of the current item's index 0
} seq_spec;

static ls_status keep_row(void *ctx, int64_t index, const float *logits) {
    seq_spec *s = ctx;
    memcpy(s->out + (s->row0 + index) * s->n_vocab, logits, (size_t)s->n_vocab * sizeof *logits);
    return LS_OK;
}

static ls_status parse_line(char *line, seq_spec *s) {
    char rule[16];
    int stream, used;
    long long g, sk, w, start, split, lf;
    if (sscanf(line, "%15s %lld %lld %lld %d %lld %lld %lld%n", rule, &g, &sk, &w, &stream, &start, &split, &lf, &used) != 8)
        return LS_ERR(LS_ERR_INVALID, "bad spec line: %s", line);
    *s = (seq_spec){.so = {.rule = {.group = g, .sinks = sk, .window = w}, .stream = stream != 0}, .start = start,
                    .split = split, .lf = lf};
    if (!ls_attn_kind_parse(rule, &s->so.rule.kind)) return LS_ERR(LS_ERR_INVALID, "bad rule %s", rule);
    for (char *p = line + used, *end;; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p) break;
        ls_vec_i32_push(&s->ids, (int32_t)v);
    }
    int64_t n = (int64_t)s->ids.len;
    if (!(0 <= start && start <= split && split <= n && n > start))
        return LS_ERR(LS_ERR_INVALID, "spec: START %lld, SPLIT %lld, %lld tokens", start, split, (long long)n);
    return LS_OK;
}

// The extra bad item must be refused naming it, and no sequence may move.
static ls_status check_refusal(ls_engine_t *e, ls_batch_item *items, int64_t n, seq_spec *specs, int ns) {
    int32_t bad_id = (int32_t)ls_engine_config(e)->n_vocab;
    ls_seq_t *extra;
    LS_CHECK(ls_seq_init(e, 4, &extra));
    items[n] = (ls_batch_item){.seq = extra, .tokens = &bad_id, .n_tokens = 1};
    int64_t lens[MAX_SEQS], bad = -2;
    for (int i = 0; i < ns; i++) lens[i] = ls_seq_len(specs[i].seq);
    ls_status rc = ls_engine_forward_batch(e, items, n + 1, &bad);
    ls_seq_free(extra);
    if (rc == LS_OK || bad != n) return ls_err_clear(), LS_ERR(LS_ERR_INTERNAL, "the bad item was not refused (rc %d, bad %lld)", rc, (long long)bad);
    char want[32], got[512];
    snprintf(want, sizeof want, "batch item %lld", (long long)n);
    snprintf(got, sizeof got, "%s", ls_err_msg());
    ls_err_clear();
    if (!strstr(got, want)) return LS_ERR(LS_ERR_INTERNAL, "the refusal does not name item %lld: %s", (long long)n, got);
    fprintf(stderr, "refused as expected: %s\n", got);
    for (int i = 0; i < ns; i++)
        if (ls_seq_len(specs[i].seq) != lens[i]) return LS_ERR(LS_ERR_INTERNAL, "sequence %d moved in a refused batch", i);
    return LS_OK;
}

static ls_status run_batches(ls_engine_t *e, seq_spec *specs, int ns, bool bad) {
    ls_batch_item items[MAX_SEQS + 1];
    int64_t n = 0;
    for (int i = 0; i < ns; i++) { // the ragged prefill batch
        seq_spec *s = &specs[i];
        if (s->split == s->start) continue;
        s->row0 = 0;
        items[n++] = (ls_batch_item){.seq = s->seq, .tokens = s->ids.data + s->start, .n_tokens = s->split - s->start,
                                     .logits_from = s->lf, .on_logits = keep_row, .ctx = s};
    }
    if (bad) LS_CHECK(check_refusal(e, items, n, specs, ns));
    LS_CHECK(ls_engine_forward_batch(e, items, n, NULL));
    for (int64_t step = 0;; step++) { // decode: one token of every unfinished sequence
        n = 0;
        for (int i = 0; i < ns; i++) {
            seq_spec *s = &specs[i];
            int64_t t = s->split + step;
            if (t >= (int64_t)s->ids.len) continue;
            s->row0 = t - s->start;
            items[n++] = (ls_batch_item){.seq = s->seq, .tokens = s->ids.data + t, .n_tokens = 1, .on_logits = keep_row, .ctx = s};
        }
        if (!n) return LS_OK;
        LS_CHECK(ls_engine_forward_batch(e, items, n, NULL));
    }
}

static ls_status run(int argc, char **argv) {
    ls_engine_opts o = ls_engine_opts_default();
    bool bad = false;
    for (int i = 4; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--ubatch")) o.ubatch = atoll(v);
        else if (!strcmp(k, "--rope-scaling")) {
            ls_rope_scaling s;
            if (!ls_rope_scaling_parse(v, &s)) return LS_ERR(LS_ERR_INVALID, "bad scaling %s", v);
            o.rope.scaling = (int)s;
        } else if (!strcmp(k, "--rope-scale")) o.rope.factor = atof(v);
        else if (!strcmp(k, "--yarn-orig-ctx")) o.rope.orig_ctx = atof(v);
        else if (!strcmp(k, "--bad")) bad = atoi(v) != 0;
        else return LS_ERR(LS_ERR_INVALID, "unknown option %s", k);
    }
    ls_buf text = {0};
    LS_CHECK(ls_file_read_all(argv[2], 1 << 24, &text));
    seq_spec specs[MAX_SEQS];
    int ns = 0;
    for (char *line = strtok(text.data, "\n"); line && ns < MAX_SEQS; line = strtok(NULL, "\n"))
        LS_CHECK(parse_line(line, &specs[ns++]));
    ls_engine_t *e;
    LS_CHECK(ls_engine_load(argv[1], &o, &e));
    int64_t V = ls_engine_config(e)->n_vocab;
    for (int i = 0; i < ns; i++) {
        seq_spec *s = &specs[i];
        int64_t n = (int64_t)s->ids.len;
        s->so.capacity = n;
        s->n_vocab = V;
        LS_CHECK(ls_seq_init_opts(e, &s->so, &s->seq));
        s->out = ls_malloc((size_t)((n - s->start) * V) * sizeof *s->out);
        for (int64_t j = 0; j < (n - s->start) * V; j++) s->out[j] = NAN;
        LS_CHECK(ls_engine_forward(e, s->seq, s->ids.data, s->start, NULL));
    }
    LS_CHECK(run_batches(e, specs, ns, bad));
    FILE *f = fopen(argv[3], "wb");
    if (!f) return LS_ERR(LS_ERR_IO, "cannot write %s", argv[3]);
    for (int i = 0; i < ns; i++) {
        size_t rows = (size_t)((int64_t)specs[i].ids.len - specs[i].start);
        fwrite(specs[i].out, sizeof(float), rows * (size_t)V, f);
        ls_free(specs[i].out);
        ls_seq_free(specs[i].seq);
        ls_vec_i32_free(&specs[i].ids);
    }
    fclose(f);
    ls_engine_free(e);
    ls_buf_free(&text);
    return LS_OK;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: batch_dump MODEL SPEC OUT [options]\n");
        return 2;
    }
    if (run(argc, argv) != LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    return 0;
}
