// test_model.c — model configuration from metadata: a valid tiny llama file (tied and untied
// output, RoPE keys of every kind, rope_freqs -> llama3) and every inconsistency the loader
// must name: wrong architecture, missing keys, heads that do not divide, tensors that are
// missing or have the wrong shape, unknown RoPE scaling types.
#include "gguf_writer.h"
#include "ls_model.h"
#include "ls_test.h"

typedef struct model_opts {
    const char *arch, *rope_type, *skip_key, *bad_tensor;
    int64_t embd, heads, kv_heads;
    bool untied, rope_freqs, yarn_keys;
} model_opts;

typedef struct tinfo {
    char name[64];
    uint64_t ne[2];
    uint32_t nd;
} tinfo;

static int add_t(tinfo *t, int n, const char *name, uint64_t ne0, uint64_t ne1, const model_opts *o) {
    snprintf(t[n].name, sizeof t[n].name, "%s", name);
    t[n].ne[0] = ne0;
    t[n].ne[1] = ne1;
    t[n].nd = ne1 ? 2 : 1;
    if (o->bad_tensor && !strcmp(o->bad_tensor, name)) t[n].ne[0] += 1;
    return n + 1;
}

// Builds a 1-layer llama with F32 tensors (vocab 4, ffn 16) and opens it.
static ls_status build(gw *w, model_opts o, ls_gguf_t **g) {
    int64_t e = o.embd ? o.embd : 8, h = o.heads ? o.heads : 2, kv = o.kv_heads ? o.kv_heads : 1;
    int64_t hd = e / h, ff = 16, nv = 4;
    tinfo t[16];
    int n = 0;
    n = add_t(t, n, "token_embd.weight", (uint64_t)e, (uint64_t)nv, &o);
    n = add_t(t, n, "output_norm.weight", (uint64_t)e, 0, &o);
    if (o.untied) n = add_t(t, n, "output.weight", (uint64_t)e, (uint64_t)nv, &o);
    if (o.rope_freqs) n = add_t(t, n, "rope_freqs.weight", (uint64_t)hd / 2, 0, &o);
    n = add_t(t, n, "blk.0.attn_norm.weight", (uint64_t)e, 0, &o);
    n = add_t(t, n, "blk.0.attn_q.weight", (uint64_t)e, (uint64_t)(h * hd), &o);
    n = add_t(t, n, "blk.0.attn_k.weight", (uint64_t)e, (uint64_t)(kv * hd), &o);
    n = add_t(t, n, "blk.0.attn_v.weight", (uint64_t)e, (uint64_t)(kv * hd), &o);
    n = add_t(t, n, "blk.0.attn_output.weight", (uint64_t)(h * hd), (uint64_t)e, &o);
    n = add_t(t, n, "blk.0.ffn_norm.weight", (uint64_t)e, 0, &o);
    if (!(o.bad_tensor && !strcmp(o.bad_tensor, "missing")))
        n = add_t(t, n, "blk.0.ffn_gate.weight", (uint64_t)e, (uint64_t)ff, &o);
    n = add_t(t, n, "blk.0.ffn_up.weight", (uint64_t)e, (uint64_t)ff, &o);
    n = add_t(t, n, "blk.0.ffn_down.weight", (uint64_t)ff, (uint64_t)e, &o);

    struct { const char *k; int64_t v; } ints[] = {
        {"llama.context_length", 128}, {"llama.embedding_length", e}, {"llama.block_count", 1},
        {"llama.feed_forward_length", ff}, {"llama.attention.head_count", h},
        {"llama.attention.head_count_kv", kv}};
    int n_kv = 2 + 1 + 1; // arch, tokens, eps, freq_base
    for (size_t i = 0; i < 6; i++) n_kv += !(o.skip_key && !strcmp(o.skip_key, ints[i].k));
    n_kv += (o.rope_type != NULL) + (o.yarn_keys ? 4 : 0);
    gw_header(w, 3, (uint64_t)n, (uint64_t)n_kv);
    gw_kv_str(w, "general.architecture", o.arch ? o.arch : "llama");
    for (size_t i = 0; i < 6; i++)
        if (!(o.skip_key && !strcmp(o.skip_key, ints[i].k))) gw_kv_u32(w, ints[i].k, (uint32_t)ints[i].v);
    gw_kv_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gw_kv_f32(w, "llama.rope.freq_base", 500000.0f);
    if (o.rope_type) gw_kv_str(w, "llama.rope.scaling.type", o.rope_type);
    if (o.yarn_keys) {
        gw_kv_f32(w, "llama.rope.scaling.factor", 4.0f);
        gw_kv_u32(w, "llama.rope.scaling.original_context_length", 32);
        gw_kv_f32(w, "llama.rope.scaling.yarn_beta_fast", 16.0f);
        gw_kv_f32(w, "llama.rope.scaling.attn_factor", 1.5f);
    }
    const char *toks[] = {"a", "b", "c", "d"};
    gw_kv_strs(w, "tokenizer.ggml.tokens", toks, 4);
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        gw_tensor(w, t[i].name, t[i].nd, t[i].ne, LS_F32, off);
        uint64_t bytes = t[i].ne[0] * (t[i].ne[1] ? t[i].ne[1] : 1) * 4;
        off += (bytes + 31) / 32 * 32;
    }
    gw_pad(w, 32);
    gw_zeros(w, off);
    return ls_gguf_open_memory(w->b.data, w->b.len, g);
}

static void expect_ok(model_opts o, ls_model_config *c, gw *w, ls_gguf_t **g) {
    TEST_COND(build(w, o, g) == LS_OK, "fixture opens: %s", ls_err_msg());
    TEST_COND(ls_model_config_load(*g, c) == LS_OK, "config loads: %s", ls_err_msg());
    ls_err_clear();
}

static void test_valid(void) {
    gw w = {0};
    ls_gguf_t *g = NULL;
    ls_model_config c;
    expect_ok((model_opts){0}, &c, &w, &g);
    TEST_COND(c.n_embd == 8 && c.n_head == 2 && c.n_head_kv == 1 && c.head_dim == 4 && c.n_ff == 16 &&
                  c.n_vocab == 4 && c.n_layer == 1 && c.n_ctx_train == 128, "hyperparameters");
    TEST_COND(c.tied_output && c.output == c.tok_embd, "tied output");
    TEST_COND(c.rope.scaling == LS_ROPE_NONE && c.rope.freq_base == 500000.0 && c.rope.n_rot == 4 &&
                  c.rope.orig_ctx == 128 && c.rope.yarn_beta_fast == 32.0, "RoPE defaults");
    TEST_COND(c.layers[0].wq && c.layers[0].bq == NULL, "layer tensors");
    ls_model_config_free(&c);
    ls_gguf_free(g);
    ls_buf_free(&w.b);

    w = (gw){0};
    expect_ok((model_opts){.untied = true, .rope_type = "yarn", .yarn_keys = true}, &c, &w, &g);
    TEST_COND(!c.tied_output && c.output != c.tok_embd, "separate output");
    TEST_COND(c.rope.scaling == LS_ROPE_YARN && c.rope.factor == 4.0 && c.rope.orig_ctx == 32 &&
                  c.rope.yarn_beta_fast == 16.0 && c.rope.attn_factor == 1.5, "YaRN keys");
    ls_model_config_free(&c);
    ls_gguf_free(g);
    ls_buf_free(&w.b);

    w = (gw){0};
    expect_ok((model_opts){.rope_freqs = true}, &c, &w, &g);
    TEST_COND(c.rope.scaling == LS_ROPE_LLAMA3 && c.rope.freq_factors != NULL, "rope_freqs means llama3 divisors");
    ls_model_config_free(&c);
    ls_gguf_free(g);
    ls_buf_free(&w.b);
}

static void expect_error(model_opts o, ls_status code, const char *needle) {
    gw w = {0};
    ls_gguf_t *g = NULL;
    ls_model_config c;
    TEST_COND(build(&w, o, &g) == LS_OK, "fixture opens: %s", ls_err_msg());
    if (g) TEST_ERR(ls_model_config_load(g, &c), code, needle);
    ls_gguf_free(g);
    ls_buf_free(&w.b);
}

static void test_errors(void) {
    expect_error((model_opts){.arch = "gpt2"}, LS_ERR_UNSUPPORTED, "architecture \"gpt2\" is not supported");
    expect_error((model_opts){.skip_key = "llama.embedding_length"}, LS_ERR_FORMAT, "no llama.embedding_length");
    expect_error((model_opts){.skip_key = "llama.context_length"}, LS_ERR_FORMAT, "no llama.context_length");
    expect_error((model_opts){.heads = 3}, LS_ERR_FORMAT, "head_count = 3 does not divide the embedding length 8");
    expect_error((model_opts){.embd = 12, .heads = 4, .kv_heads = 3}, LS_ERR_FORMAT, "head_count_kv = 3 does not divide head_count = 4");
    expect_error((model_opts){.bad_tensor = "blk.0.attn_k.weight"}, LS_ERR_FORMAT,
                 "tensor 'blk.0.attn_k.weight' has shape [9, 4, 1, 1], expected [8, 4]");
    expect_error((model_opts){.bad_tensor = "output_norm.weight"}, LS_ERR_FORMAT, "expected [8]");
    expect_error((model_opts){.bad_tensor = "missing"}, LS_ERR_FORMAT, "no tensor 'blk.0.ffn_gate.weight'");
    expect_error((model_opts){.rope_type = "xpos"}, LS_ERR_UNSUPPORTED, "rope.scaling.type = \"xpos\" is not supported");
    expect_error((model_opts){.rope_type = "longrope"}, LS_ERR_FORMAT, "rope_factors_long");
}

int main(void) {
    test_valid();
    test_errors();
    return TEST_REPORT("test_model");
}
