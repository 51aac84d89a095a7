// cmd_inspect.c — `longseq inspect FILE.gguf|DIR [--json]`: the file header, metadata, the model
// configuration (hyperparameters, RoPE), the tokenizer summary and the tensor table with
// totals. A valid GGUF that is not a loadable llama model still gets its metadata and tensor
// table, with the reason printed. Tests: tests/oracle/test_inspect.py.
#include "cli.h"
#include "ls_chat.h"
#include "ls_model.h"

#include <getopt.h>
#include <jansson.h>
#include <string.h>
#include <utf8proc.h>

typedef struct inspect_info {
    const char *path;
    ls_gguf_t *g;
    ls_model_config cfg;
    bool cfg_ok;
    char cfg_error[1024];
    ls_tokenizer_t *tok;
    char tok_error[1024];
    const char *chat; // "chatml", "llama2", "other" or NULL
} inspect_info;

static void shape_text(const ls_gguf_tensor *t, char *buf, size_t n) {
    int k = snprintf(buf, n, "[%lld", (long long)t->ne[0]);
    for (uint32_t d = 1; d < t->n_dims && k > 0 && (size_t)k < n; d++)
        k += snprintf(buf + k, n - (size_t)k, ", %lld", (long long)t->ne[d]);
    if (k > 0 && (size_t)k < n) snprintf(buf + k, n - (size_t)k, "]");
}

static void human_bytes(uint64_t b, char *buf, size_t n) {
    if (b >= 1000000000ull) snprintf(buf, n, "%.2f GB", b / 1e9);
    else if (b >= 1000000ull) snprintf(buf, n, "%.1f MB", b / 1e6);
    else if (b >= 1000ull) snprintf(buf, n, "%.1f kB", b / 1e3);
    else snprintf(buf, n, "%llu B", (unsigned long long)b);
}

static void print_special(const ls_tokenizer_t *t, const char *what, int32_t id) {
    if (id < 0) return;
    ls_str s = ls_tokenizer_text(t, id);
    printf(", %s %d %.*s", what, id, (int)(s.len > 24 ? 24 : s.len), s.ptr);
}

static void print_rope(const ls_rope_config *r) {
    printf("rope           base %g, %d rotary dims, scaling %s", r->freq_base, r->n_rot,
           ls_rope_scaling_name(r->scaling));
    if (r->scaling != LS_ROPE_NONE) printf(" (factor %g, original context %lld)", r->factor, (long long)r->orig_ctx);
    if (r->scaling == LS_ROPE_YARN) printf(", beta fast %g slow %g", r->yarn_beta_fast, r->yarn_beta_slow);
    if (r->attn_factor) printf(", attention factor %g", r->attn_factor);
    if (r->freq_factors) printf(", rope_freqs tensor");
    if (r->factors_long) printf(", rope_factors_long/short tensors");
    printf("\n");
}

// Each layer's attention, runs of equal layers together: the model's sliding window (HF's
// sliding_window: the keys a query sees, itself included), or global (the --attn rule).
static void print_layer_rules(const ls_model_config *c) {
    printf("attention      ");
    for (int64_t a = 0, b; a < c->n_layer; a = b) {
        for (b = a + 1; b < c->n_layer && c->layer_window[b] == c->layer_window[a];) b++;
        printf("%slayer%s %lld", a ? "; " : "", b - a > 1 ? "s" : "", (long long)a);
        if (b - a > 1) printf("-%lld", (long long)b - 1);
        if (c->layer_window[a]) printf(" sliding window of %lld keys", (long long)c->layer_window[a]);
        else printf(" global (the --attn rule, full by default)");
    }
    printf("\n");
}

static void print_human(const inspect_info *in) {
    char sz[32];
    if (ls_is_dir(in->path)) {
        human_bytes(ls_model_weight_bytes(in->g), sz, sizeof sz);
        printf("checkpoint     %s (Hugging Face, %s of tensors; shown as the GGUF it becomes)\n", in->path, sz);
    } else {
        human_bytes(ls_gguf_file_size(in->g), sz, sizeof sz);
        printf("file           %s (%s, GGUF v%u, alignment %u)\n", in->path, sz, ls_gguf_version(in->g),
               ls_gguf_alignment(in->g));
    }
    if (in->cfg_ok) {
        const ls_model_config *c = &in->cfg;
        printf("architecture   %s%s%s%s\n", c->arch, c->name[0] ? " (" : "", c->name, c->name[0] ? ")" : "");
        printf("context        %lld tokens (trained)\n", (long long)c->n_ctx_train);
        printf("shape          %lld layers, embedding %lld, ffn %lld, heads %lld (kv %lld, head dim %lld), vocab %lld, rms eps %g\n",
               (long long)c->n_layer, (long long)c->n_embd, (long long)c->n_ff, (long long)c->n_head,
               (long long)c->n_head_kv, (long long)c->head_dim, (long long)c->n_vocab, c->rms_eps);
        printf("output         %s\n", c->tied_output ? "tied to token_embd.weight" : "output.weight");
        print_layer_rules(c);
        print_rope(&c->rope);
    } else {
        printf("model          not loadable: %s\n", in->cfg_error);
    }
    if (in->tok) {
        const ls_tokenizer_t *t = in->tok;
        printf("tokenizer      %s", ls_tokenizer_model_name(t));
        if (ls_tokenizer_pre_name(t)[0]) printf(" (pre %s)", ls_tokenizer_pre_name(t));
        printf(", %d tokens", ls_tokenizer_n_vocab(t));
        if (ls_tokenizer_model(t) == LS_TOK_BPE) printf(", %lld merges", (long long)ls_tokenizer_n_merges(t));
        print_special(t, "bos", ls_tokenizer_bos(t));
        print_special(t, "eos", ls_tokenizer_eos(t));
        print_special(t, "unk", ls_tokenizer_unk(t));
        printf(", add bos %s\n", ls_tokenizer_add_bos(t) ? "yes" : "no");
    } else {
        printf("tokenizer      none: %s\n", in->tok_error);
    }
    printf("chat template  %s\n", in->chat ? in->chat : "none");

    printf("\nmetadata (%lld keys)\n", (long long)ls_gguf_n_kv(in->g));
    ls_buf v = {0};
    for (int64_t i = 0; i < ls_gguf_n_kv(in->g); i++) {
        v.len = 0;
        ls_gguf_kv_render(in->g, i, 6, &v);
        printf("  %-44s %s\n", ls_gguf_kv_key(in->g, i), v.data ? v.data : "");
    }
    ls_buf_free(&v);

    int64_t n = ls_gguf_n_tensors(in->g);
    printf("\ntensors (%lld)\n  %-32s %-6s %-16s %12s\n", (long long)n, "name", "type", "shape", "bytes");
    uint64_t by_type[LS_DTYPE_COUNT] = {0}, count_type[LS_DTYPE_COUNT] = {0}, total = 0;
    for (int64_t i = 0; i < n; i++) {
        const ls_gguf_tensor *t = ls_gguf_tensor_at(in->g, i);
        char shape[96];
        shape_text(t, shape, sizeof shape);
        printf("  %-32s %-6s %-16s %12llu\n", t->name, ls_dtype_name(t->type), shape, (unsigned long long)t->nbytes);
        by_type[t->type] += t->nbytes;
        count_type[t->type]++;
        total += t->nbytes;
    }
    human_bytes(total, sz, sizeof sz);
    printf("\ntotal          %lld tensors, %llu bytes (%s):", (long long)n, (unsigned long long)total, sz);
    for (int ty = 0; ty < LS_DTYPE_COUNT; ty++)
        if (count_type[ty]) printf(" %s x%llu", ls_dtype_name((uint32_t)ty), (unsigned long long)count_type[ty]);
    printf("\n");
}

// --- JSON ---------------------------------------------------------------------------------

static json_t *json_scalar_at(const ls_gguf_arr *a, uint64_t k) {
    if (a->type == LS_GGUF_STRING) {
        ls_str s = ls_gguf_arr_str(a, k);
        return cli_json_str(s.ptr, s.len);
    }
    if (a->type == LS_GGUF_F32 || a->type == LS_GGUF_F64) return json_real(ls_gguf_arr_float(a, k));
    if (a->type == LS_GGUF_BOOL) return json_boolean(a->data[k]);
    return json_integer(ls_gguf_arr_int(a, k));
}

static json_t *json_kv(const ls_gguf_t *g, int64_t i) {
    const char *key = ls_gguf_kv_key(g, i);
    ls_gguf_vtype t = ls_gguf_kv_type(g, i);
    ls_str s;
    int64_t iv;
    double fv;
    bool bv;
    if (t == LS_GGUF_STRING && ls_gguf_get_str(g, key, &s) == LS_OK) return cli_json_str(s.ptr, s.len);
    if (t == LS_GGUF_BOOL && ls_gguf_get_bool(g, key, &bv) == LS_OK) return json_boolean(bv);
    if ((t == LS_GGUF_F32 || t == LS_GGUF_F64) && ls_gguf_get_float(g, key, &fv) == LS_OK) return json_real(fv);
    if (t != LS_GGUF_ARRAY) {
        if (ls_gguf_get_int(g, key, &iv) == LS_OK) return json_integer(iv);
        ls_err_clear(); // a u64 beyond int64: show it as text
        ls_buf b = {0};
        ls_gguf_kv_render(g, i, 0, &b);
        json_t *j = json_string(b.data);
        ls_buf_free(&b);
        return j;
    }
    ls_gguf_arr a;
    ls_gguf_get_arr(g, key, &a);
    json_t *o = json_pack("{s:s, s:I}", "type", ls_gguf_vtype_name(a.type), "count", (json_int_t)a.count);
    if (a.count <= 64) {
        json_t *vals = json_array();
        for (uint64_t k = 0; k < a.count; k++) json_array_append_new(vals, json_scalar_at(&a, k));
        json_object_set_new(o, "values", vals);
    }
    return o;
}

static json_t *json_rope(const ls_rope_config *r) {
    return json_pack("{s:s, s:f, s:i, s:f, s:I, s:f, s:f, s:f, s:b, s:b}", "scaling",
                     ls_rope_scaling_name(r->scaling), "freq_base", r->freq_base, "n_rot", r->n_rot,
                     "factor", r->factor, "original_context", (json_int_t)r->orig_ctx,
                     "yarn_beta_fast", r->yarn_beta_fast, "yarn_beta_slow", r->yarn_beta_slow,
                     "attn_factor", r->attn_factor, "rope_freqs", r->freq_factors != NULL,
                     "rope_factors_long_short", r->factors_long != NULL);
}

static json_t *json_tokenizer(const ls_tokenizer_t *t) {
    return json_pack("{s:s, s:s, s:i, s:I, s:i, s:i, s:i, s:i, s:b, s:b}", "model",
                     ls_tokenizer_model_name(t), "pre", ls_tokenizer_pre_name(t), "n_vocab",
                     ls_tokenizer_n_vocab(t), "n_merges", (json_int_t)ls_tokenizer_n_merges(t), "bos",
                     ls_tokenizer_bos(t), "eos", ls_tokenizer_eos(t), "unk", ls_tokenizer_unk(t), "pad",
                     ls_tokenizer_pad(t), "add_bos", ls_tokenizer_add_bos(t), "add_eos",
                     ls_tokenizer_add_eos(t));
}

static json_t *json_tensors(const ls_gguf_t *g, uint64_t *total) {
    json_t *arr = json_array();
    *total = 0;
    for (int64_t i = 0; i < ls_gguf_n_tensors(g); i++) {
        const ls_gguf_tensor *t = ls_gguf_tensor_at(g, i);
        json_t *shape = json_array();
        for (uint32_t d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer(t->ne[d]));
        json_array_append_new(arr, json_pack("{s:s, s:s, s:o, s:I, s:I}", "name", t->name, "type",
                                             ls_dtype_name(t->type), "shape", shape, "bytes",
                                             (json_int_t)t->nbytes, "offset", (json_int_t)t->offset));
        *total += t->nbytes;
    }
    return arr;
}

static void print_json(const inspect_info *in) {
    json_t *root = json_object(), *meta = json_object();
    json_object_set_new(root, "file", cli_json_str(in->path, strlen(in->path)));
    json_object_set_new(root, "gguf_version", json_integer(ls_gguf_version(in->g)));
    json_object_set_new(root, "alignment", json_integer(ls_gguf_alignment(in->g)));
    for (int64_t i = 0; i < ls_gguf_n_kv(in->g); i++)
        json_object_set_new(meta, ls_gguf_kv_key(in->g, i), json_kv(in->g, i));
    ls_str arch;
    json_object_set_new(root, "architecture", ls_gguf_get_str(in->g, "general.architecture", &arch) == LS_OK
                                                  ? cli_json_str(arch.ptr, arch.len) : json_null());
    if (in->cfg_ok) {
        const ls_model_config *c = &in->cfg;
        json_object_set_new(root, "context_length", json_integer(c->n_ctx_train));
        json_object_set_new(root, "hparams",
                            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:b}", "n_embd",
                                      (json_int_t)c->n_embd, "n_layer", (json_int_t)c->n_layer, "n_ff",
                                      (json_int_t)c->n_ff, "n_head", (json_int_t)c->n_head, "n_head_kv",
                                      (json_int_t)c->n_head_kv, "head_dim", (json_int_t)c->head_dim,
                                      "n_vocab", (json_int_t)c->n_vocab, "rms_eps", c->rms_eps,
                                      "tied_output", c->tied_output));
        json_object_set_new(root, "rope", json_rope(&c->rope));
        json_t *lw = json_array(); // per layer: its sliding window (keys seen, the query included), 0: global
        for (int64_t il = 0; il < c->n_layer; il++) json_array_append_new(lw, json_integer(c->layer_window[il]));
        json_object_set_new(root, "layer_window", lw);
    } else {
        json_object_set_new(root, "context_length", json_null());
        json_object_set_new(root, "rope", json_null());
        json_object_set_new(root, "model_error", json_string(in->cfg_error));
    }
    json_object_set_new(root, "tokenizer", in->tok ? json_tokenizer(in->tok) : json_null());
    json_object_set_new(root, "chat_template", in->chat ? json_string(in->chat) : json_null());
    json_object_set_new(root, "metadata", meta);
    uint64_t total;
    json_object_set_new(root, "tensors", json_tensors(in->g, &total));
    json_object_set_new(root, "n_tensors", json_integer(ls_gguf_n_tensors(in->g)));
    json_object_set_new(root, "total_bytes", json_integer((json_int_t)total));
    json_dumpf(root, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    printf("\n");
    json_decref(root);
}

// --- command ------------------------------------------------------------------------------

static void collect(inspect_info *in) {
    if (ls_model_config_load(in->g, &in->cfg) == LS_OK) {
        in->cfg_ok = true;
    } else {
        snprintf(in->cfg_error, sizeof in->cfg_error, "%s", ls_err_msg());
        ls_err_clear();
    }
    if (ls_tokenizer_init(in->g, &in->tok) != LS_OK) {
        snprintf(in->tok_error, sizeof in->tok_error, "%s", ls_err_msg());
        ls_err_clear();
    }
    ls_str tmpl;
    ls_chat_kind kind;
    if (ls_gguf_get_str(in->g, "tokenizer.chat_template", &tmpl) == LS_OK)
        in->chat = !ls_chat_detect(tmpl.ptr, tmpl.len, &kind) ? "other" : ls_chat_kind_name(kind);
}

int cmd_inspect(int argc, char **argv) {
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bool json = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j') json = true;
        else if (c == 'h') {
            printf("usage: longseq inspect [--json] [FILE.gguf|DIR]\n"
                   "Shows the model's architecture, hyperparameters, RoPE configuration, tokenizer,\n"
                   "metadata and tensor table (name, type, shape, bytes). Default FILE: the default model.\n");
            return 0;
        } else return cli_usage_error("inspect", "unknown option");
    }
    if (argc - optind > 1) return cli_usage_error("inspect", "expected one file");
    inspect_info in = {.path = optind < argc ? argv[optind] : ls_default_model_path()};
    if (ls_model_open(in.path, &(ls_load_opts){.shapes_only = true}, &in.g) != LS_OK) return cli_fail();
    collect(&in);
    if (json) print_json(&in);
    else print_human(&in);
    ls_tokenizer_free(in.tok);
    ls_model_config_free(&in.cfg);
    ls_gguf_free(in.g);
    return 0;
}
