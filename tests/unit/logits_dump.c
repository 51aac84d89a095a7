// logits_dump.c — test helper: runs token ids through the engine and writes the logits of
// every position as raw f32 [n][n_vocab] (tests/oracle/test_forward.py compares them with a
// numpy reference). The first K tokens are prefilled in micro-batches, the rest fed one at a
// time as in decoding; RoPE overrides are passed as in the CLI.
//   logits_dump MODEL IDS_FILE OUT [--ubatch N] [--decode-from K] [--act llamacpp]
//               [--rope-scaling S] [--rope-scale X] [--rope-freq-base B] [--yarn-orig-ctx N]
//               [--yarn-beta-fast B] [--yarn-beta-slow B]
//               [--lora DIR [--lora-scale X]]...
//               [--attn full|s2|sink|window] [--group G] [--sinks S] [--window W] [--stream 1]
//               [--kv-type f32|bf16|q8_0]
#include "ls_engine.h"
#include "ls_kv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct sink {
    FILE *f;
    int64_t n_vocab;
} sink;

static ls_status write_row(void *ctx, int64_t index, const float *logits) {
    sink *s = ctx;
    (void)index;
    if (fwrite(logits, sizeof *logits, (size_t)s->n_vocab, s->f) != (size_t)s->n_vocab)
        return LS_ERR(LS_ERR_IO, "short write");
    return LS_OK;
}

static ls_status run(int argc, char **argv) {
    ls_engine_opts o = ls_engine_opts_default();
    ls_seq_opts so = {.rule = {.kind = LS_ATTN_FULL}};
    int64_t decode_from = -1;
    ls_lora_spec lora[8];
    int n_lora = 0;
    for (int i = 4; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--ubatch")) o.ubatch = atoll(v);
        else if (!strcmp(k, "--decode-from")) decode_from = atoll(v);
        else if (!strcmp(k, "--act")) o.act = strcmp(v, "llamacpp") ? LS_ACT_F32 : LS_ACT_LLAMACPP;
        else if (!strcmp(k, "--rope-scaling")) {
            ls_rope_scaling s;
            if (!ls_rope_scaling_parse(v, &s)) return LS_ERR(LS_ERR_INVALID, "bad scaling %s", v);
            o.rope.scaling = (int)s;
        } else if (!strcmp(k, "--rope-scale")) o.rope.factor = atof(v);
        else if (!strcmp(k, "--rope-freq-base")) o.rope.freq_base = atof(v);
        else if (!strcmp(k, "--yarn-orig-ctx")) o.rope.orig_ctx = atof(v);
        else if (!strcmp(k, "--yarn-beta-fast")) o.rope.beta_fast = atof(v);
        else if (!strcmp(k, "--yarn-beta-slow")) o.rope.beta_slow = atof(v);
        else if (!strcmp(k, "--attn")) {
            if (!ls_attn_kind_parse(v, &so.rule.kind)) return LS_ERR(LS_ERR_INVALID, "bad rule %s", v);
        } else if (!strcmp(k, "--group")) so.rule.group = atoll(v);
        else if (!strcmp(k, "--sinks")) so.rule.sinks = atoll(v);
        else if (!strcmp(k, "--window")) so.rule.window = atoll(v);
        else if (!strcmp(k, "--stream")) so.stream = atoi(v) != 0;
        else if (!strcmp(k, "--kv-type")) {
            if (!ls_kv_type_parse(v, &o.kv_type)) return LS_ERR(LS_ERR_INVALID, "bad KV type %s", v);
            o.kv_type_set = true;
        }
        else if (!strcmp(k, "--lora") && n_lora < 8) lora[n_lora++] = (ls_lora_spec){.path = v, .scale = 1.0};
        else if (!strcmp(k, "--lora-scale") && n_lora) lora[n_lora - 1].scale = atof(v);
        else return LS_ERR(LS_ERR_INVALID, "unknown option %s", k);
    }
    ls_buf text = {0};
    LS_CHECK(ls_file_read_all(argv[2], 1 << 26, &text));
    ls_vec_i32 ids = {0};
    for (char *p = text.data, *end; *p; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p) break;
        ls_vec_i32_push(&ids, (int32_t)v);
    }
    ls_buf_free(&text);
    ls_engine_t *e;
    o.load = (ls_load_opts){.lora = lora, .n_lora = n_lora};
    ls_status rc = ls_engine_load(argv[1], &o, &e);
    if (rc != LS_OK) {
        ls_vec_i32_free(&ids); // the loader's error paths run under LeakSanitizer (test_hf.py)
        return rc;
    }
    ls_seq_t *s;
    so.capacity = (int64_t)ids.len;
    LS_CHECK(ls_seq_init_opts(e, &so, &s));
    sink sk = {fopen(argv[3], "wb"), ls_engine_config(e)->n_vocab};
    if (!sk.f) return LS_ERR(LS_ERR_IO, "cannot write %s", argv[3]);
    int64_t n = (int64_t)ids.len, k = decode_from < 0 || decode_from > n ? n : decode_from;
    ls_forward_opts fo = {.logits_from = 0, .on_logits = write_row, .ctx = &sk};
    LS_CHECK(ls_engine_forward(e, s, ids.data, k, &fo));
    for (int64_t i = k; i < n; i++) LS_CHECK(ls_engine_forward(e, s, ids.data + i, 1, &fo));
    fclose(sk.f);
    ls_seq_free(s);
    ls_engine_free(e);
    ls_vec_i32_free(&ids);
    return LS_OK;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: logits_dump MODEL IDS_FILE OUT [options]\n");
        return 2;
    }
    if (run(argc, argv) != LS_OK) {
        ls_err_report(stderr);
        return 1;
    }
    return 0;
}
