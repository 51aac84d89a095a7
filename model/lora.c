// lora.c — LoRA adapters merged into a model under construction: PEFT directories
// (adapter_config.json + adapter_model.safetensors: W += scale * alpha/r * B·A, rsLoRA's
// alpha/sqrt(r), rank and alpha patterns, lora_embedding_A/B, full tensors saved through
// modules_to_save), LoRA+ extra tensors (trainable_params.safetensors: embedding and norms,
// which may grow the vocabulary, e.g. 32000 -> 32001 with LongLoRA's [PAD]), and llama.cpp's
// GGUF adapters (.lora_a / .lora_b, alpha in adapter.lora.alpha). Deltas are formed in f32 with
// OpenBLAS and stored in the weight's own type (quantized weights become F32). PEFT q/k deltas
// get the same row permutation as the HF weights. Docs: docs/formats.md §6,
// docs/howto-longlora.md ("A LoRA+ adapter"). Tests: tests/oracle/test_hf.py,
// tests/unit/test_loader.c (hostile adapters: 0-D tensors, ranks no integer holds).
#include "loader_impl.h"
#include "ls_kernels.h"
#include "ls_safetensors.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

// --- f32 views of tensors --------------------------------------------------------------------

// rows x cols of a tensor's data as f32 (copied first: safetensors data may be unaligned).
static ls_status to_f32(ls_dtype type, const void *data, int64_t rows, int64_t cols, float *out) {
    uint64_t row_bytes;
    if (!ls_dtype_row_bytes(type, (uint64_t)cols, &row_bytes)) return LS_ERR(LS_ERR_FORMAT, "bad row of %lld", (long long)cols);
    void *tmp = ls_malloc(row_bytes);
    ls_status rc = LS_OK;
    for (int64_t r = 0; r < rows && rc == LS_OK; r++) {
        memcpy(tmp, (const char *)data + (size_t)r * row_bytes, row_bytes);
        rc = ls_dequant_row(type, tmp, out + (size_t)r * (size_t)cols, cols);
    }
    ls_free(tmp);
    return rc;
}

// The f32 values in the weight's own type when that is F32/F16/BF16; else F32.
static ls_dtype store_type(ls_dtype t) { return t == LS_F16 || t == LS_BF16 ? t : LS_F32; }

// An f32 work buffer for a tensor that will be stored as t. For F32 it is the result itself
// (owned by the model, so nothing is copied at the end); otherwise scratch to round from.
static float *work_buffer(ld_model *m, ls_dtype t, size_t n) {
    return t == LS_F32 ? ld_alloc(m, n * sizeof(float)) : ls_malloc(n * sizeof(float));
}

static void drop_work(ls_dtype t, float *x) {
    if (t != LS_F32) ls_free(x);
}

// The stored form of a finished work buffer: itself for F32, else rounded to F16/BF16 (the
// scratch is freed).
static const void *stored(ld_model *m, ls_dtype t, float *x, size_t n) {
    if (t == LS_F32) return x;
    uint16_t *o = ld_alloc(m, n * 2);
    for (size_t i = 0; i < n; i++) o[i] = t == LS_F16 ? ls_f32_to_fp16(x[i]) : ls_f32_to_bf16(x[i]);
    ls_free(x);
    return o;
}

// --- merging one delta -----------------------------------------------------------------------

// W[out][in] += s * B[out][r] · A[r][in] for the tensor `name`.
static ls_status merge(ld_model *m, const char *name, const float *B, const float *A, int64_t out, int64_t in, int64_t r,
                       double s) {
    ls_gguf_tensor *w = ld_tensor(m, name);
    if (!w) return LS_ERR(LS_ERR_FORMAT, "the adapter changes '%s', which the model does not have", name);
    if (w->n_dims != 2 || w->ne[0] != in || w->ne[1] != out)
        return LS_ERR(LS_ERR_FORMAT, "the adapter's delta for '%s' is [%lld, %lld] but the weight is [%lld, %lld]", name,
                      (long long)out, (long long)in, (long long)w->ne[1], (long long)w->ne[0]);
    if (m->shapes_only) return LS_OK;
    size_t n = (size_t)out * (size_t)in;
    ls_dtype t = store_type(w->type);
    float *x = work_buffer(m, t, n);
    ls_status rc = to_f32(w->type, w->data, out, in, x);
    if (rc != LS_OK) {
        drop_work(t, x);
        return rc;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)out, (int)in, (int)r, (float)s, B, (int)r, A, (int)in,
                1.0f, x, (int)in);
    ld_tensor_set(m, name, t, 2, (int64_t[]){in, out}, stored(m, t, x, n));
    return LS_OK;
}

// --- vocabulary growth (LoRA+ embeddings with added tokens) ----------------------------------

// Appends rows to the untied output head: each new row is the mean of the existing ones, as
// LongLoRA's resize_token_embeddings step makes them.
static ls_status grow_output(ld_model *m, int64_t rows) {
    ls_gguf_tensor *o = ld_tensor(m, "output.weight");
    if (!o || m->shapes_only) {
        if (o) ld_tensor_set(m, "output.weight", store_type(o->type), 2, (int64_t[]){o->ne[0], rows}, o->data);
        return LS_OK;
    }
    int64_t dim = o->ne[0], old = o->ne[1];
    ls_dtype t = store_type(o->type);
    float *x = work_buffer(m, t, (size_t)rows * (size_t)dim);
    ls_status rc = to_f32(o->type, o->data, old, dim, x);
    if (rc != LS_OK) {
        drop_work(t, x);
        return rc;
    }
    double *sum = ls_calloc((size_t)dim, sizeof *sum); // row by row: the matrix is read in order
    for (int64_t v = 0; v < old; v++)
        for (int64_t d = 0; d < dim; d++) sum[d] += x[(size_t)v * (size_t)dim + (size_t)d];
    for (int64_t v = old; v < rows; v++)
        for (int64_t d = 0; d < dim; d++) x[(size_t)v * (size_t)dim + (size_t)d] = (float)(sum[d] / (double)old);
    ls_free(sum);
    ld_tensor_set(m, "output.weight", t, 2, (int64_t[]){dim, rows}, stored(m, t, x, (size_t)rows * (size_t)dim));
    return LS_OK;
}

// New ids n..rows-1: names from the adapter's added_tokens.json when it has them, else
// LongLoRA's "[PAD]" for the first (also the padding id) and "[PAD<id>]" after it.
static ls_status grow_vocab(ld_model *m, int64_t rows, const char *adapter_dir) {
    ld_vocab *v = &m->vocab;
    int32_t first = v->n;
    json_t *added = NULL;
    if (adapter_dir[0]) LS_CHECK(ld_json_load(adapter_dir, "added_tokens.json", 64u << 20, &added));
    while (v->n < rows) {
        const char *text = NULL, *key;
        json_t *id;
        json_object_foreach(added, key, id) if (json_is_integer(id) && json_integer_value(id) == v->n) text = key;
        char pad[32];
        if (!text) {
            snprintf(pad, sizeof pad, v->n == first ? "[PAD]" : "[PAD%d]", v->n);
            text = pad;
        }
        ld_vocab_push(v, text, strlen(text), LS_TOKEN_CONTROL, 0.0f);
    }
    json_decref(added);
    if (v->pad < 0) v->pad = first;
    LS_WARN("%s: the adapter's embeddings have %lld rows: vocabulary grown from %d tokens (new: \"%s\"...)", m->path,
            (long long)rows, first, v->text[first]);
    return grow_output(m, rows);
}

// --- full tensors (LoRA+ extras, modules_to_save) --------------------------------------------

static ls_status replace(ld_model *m, const ls_st_tensor *t, const char *gname, const char *adapter_dir) {
    ls_gguf_tensor *w = ld_tensor(m, gname);
    if (!w) return LS_ERR(LS_ERR_FORMAT, "the adapter replaces '%s' (%s), which the model does not have", gname, t->name);
    if (t->type != LS_F32 && t->type != LS_F16 && t->type != LS_BF16)
        return LS_ERR(LS_ERR_UNSUPPORTED, "adapter tensor '%s' is %s (F32, F16 or BF16 expected)", t->name, ls_dtype_name(t->type));
    if (t->n_dims < 1 || t->n_dims > 2)
        return LS_ERR(LS_ERR_FORMAT, "adapter tensor '%s' has %d dimensions (1 or 2 expected)", t->name, t->n_dims);
    int64_t ne[2] = {t->shape[t->n_dims - 1], t->n_dims == 2 ? t->shape[0] : 1};
    bool embd = !strcmp(gname, "token_embd.weight");
    if ((uint32_t)t->n_dims != w->n_dims || ne[0] != w->ne[0] || (ne[1] != w->ne[1] && !(embd && ne[1] > w->ne[1])))
        return LS_ERR(LS_ERR_FORMAT, "adapter tensor '%s' has shape [%lld, %lld] but '%s' is [%lld, %lld]", t->name,
                      (long long)ne[1], (long long)ne[0], gname, (long long)w->ne[1], (long long)w->ne[0]);
    if (strstr(gname, "attn_q.") || strstr(gname, "attn_k."))
        return LS_ERR(LS_ERR_UNSUPPORTED, "adapter tensor '%s' replaces a q/k projection: merge such adapters into the base first", t->name);
    if (embd && ne[1] > m->vocab.n) LS_CHECK(grow_vocab(m, ne[1], adapter_dir));
    const void *data = t->data;
    size_t esize = t->type == LS_F32 ? 4 : 2;
    if ((uintptr_t)data % esize) {
        void *p = ld_alloc(m, t->bytes);
        memcpy(p, data, t->bytes);
        data = p;
    }
    ld_tensor_set(m, gname, t->type, t->n_dims, ne, data);
    return LS_OK;
}

// --- PEFT adapters ---------------------------------------------------------------------------

typedef struct peft {
    const char *file;
    double alpha, r, scale; // scale: the user's
    bool rslora;
    json_t *rank_pattern, *alpha_pattern;
} peft;

#define MAX_RANK (1 << 24)

// A rank: an integer in 1..MAX_RANK (checked before anything converts it to an integer).
static bool is_rank(double r) { return r >= 1 && r <= MAX_RANK && r == floor(r); }

// Every rank_pattern value is a rank.
static ls_status rank_patterns(const peft *p) {
    const char *key;
    json_t *v;
    json_object_foreach(p->rank_pattern, key, v) if (!json_is_number(v) || !is_rank(json_number_value(v))) {
        char val[32] = "not a number";
        if (json_is_number(v)) snprintf(val, sizeof val, "%g", json_number_value(v));
        return LS_ERR(LS_ERR_FORMAT, "%s: rank_pattern \"%s\" = %s is not a rank (an integer from 1 to %d)", p->file, key,
                      val, MAX_RANK);
    }
    return LS_OK;
}

static ls_status peft_config(peft *p, json_t *c) {
    const char *type = json_string_value(json_object_get(c, "peft_type"));
    if (!type || strcmp(type, "LORA"))
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: peft_type \"%s\" is not supported (LORA)", p->file, type ? type : "?");
    json_t *r = json_object_get(c, "r"), *a = json_object_get(c, "lora_alpha");
    if (!json_is_number(r) || !json_is_number(a))
        return LS_ERR(LS_ERR_FORMAT, "%s needs a positive \"r\" and a \"lora_alpha\"", p->file);
    if (!is_rank(json_number_value(r)))
        return LS_ERR(LS_ERR_FORMAT, "%s: \"r\" = %g is not a rank (an integer from 1 to %d)", p->file,
                      json_number_value(r), MAX_RANK);
    p->r = json_number_value(r);
    p->alpha = json_number_value(a);
    p->rslora = json_is_true(json_object_get(c, "use_rslora"));
    if (json_is_true(json_object_get(c, "use_dora")))
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: DoRA adapters (use_dora) are not supported", p->file);
    if (json_is_true(json_object_get(c, "fan_in_fan_out")))
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: fan_in_fan_out adapters (GPT-2 style Conv1D) do not apply to llama", p->file);
    const char *bias = json_string_value(json_object_get(c, "bias"));
    if (bias && strcmp(bias, "none"))
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: bias \"%s\" adapters are not supported (none)", p->file, bias);
    p->rank_pattern = json_object_get(c, "rank_pattern");
    p->alpha_pattern = json_object_get(c, "alpha_pattern");
    return rank_patterns(p);
}

// A pattern key matches a module whose name is the key or ends with "." + key.
static json_t *pattern(json_t *patterns, const char *module) {
    const char *key;
    json_t *v;
    size_t n = strlen(module);
    json_object_foreach(patterns, key, v) {
        size_t k = strlen(key);
        if (json_is_number(v) && k <= n && !strcmp(module + n - k, key) && (k == n || module[n - k - 1] == '.')) return v;
    }
    return NULL;
}

static double peft_scale(const peft *p, const char *module, int64_t rank) {
    json_t *a = pattern(p->alpha_pattern, module);
    double alpha = a ? json_number_value(a) : p->alpha;
    return p->scale * alpha / (p->rslora ? sqrt((double)rank) : (double)rank);
}

typedef struct pair {
    char module[160];
    const ls_st_tensor *a, *b;
    bool embedding;
} pair;

// Strips PEFT's "base_model.model." prefix if present (trainable_params files lack it).
static const char *hf_module_name(const char *name) {
    const char *p = "base_model.model.";
    return strncmp(name, p, strlen(p)) ? name : name + strlen(p);
}

static ls_status merge_pair(ld_model *m, const peft *p, const pair *q) {
    char gname[96];
    int perm;
    if (!ld_hf_name(q->module, gname, sizeof gname - 8, &perm))
        return LS_ERR(LS_ERR_UNSUPPORTED, "%s: LoRA on '%s', a module longseq does not map", p->file, q->module);
    strcat(gname, ".weight");
    const ls_st_tensor *a = q->a, *b = q->b;
    if (!a || !b) return LS_ERR(LS_ERR_FORMAT, "%s: '%s' has lora_A without lora_B or the reverse", p->file, q->module);
    if (a->n_dims != 2 || b->n_dims != 2 || a->shape[0] != b->shape[1])
        return LS_ERR(LS_ERR_FORMAT, "%s: '%s' lora_A and lora_B shapes do not chain", p->file, q->module);
    int64_t r = a->shape[0], in = a->shape[1], out = b->shape[0];
    json_t *rp = pattern(p->rank_pattern, q->module);
    double want = rp ? json_number_value(rp) : p->r; // both checked to be ranks
    if ((double)r != want) LS_WARN("%s: '%s' has rank %lld, not the configured %g", p->file, q->module, (long long)r, want);
    double s = peft_scale(p, q->module, r);
    float *A = ls_malloc((size_t)(r * in) * sizeof *A), *B = ls_malloc((size_t)(out * r) * sizeof *B);
    ls_status rc = m->shapes_only ? LS_OK : to_f32(a->type, a->data, r, in, A);
    if (rc == LS_OK && !m->shapes_only) rc = to_f32(b->type, b->data, out, r, B);
    if (rc == LS_OK && q->embedding) { // E[vocab][dim] += s * A^T B^T: B' = A^T [vocab, r], A' = B^T [r, dim]
        float *At = ls_malloc((size_t)(r * in) * sizeof *At), *Bt = ls_malloc((size_t)(out * r) * sizeof *Bt);
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < in; j++) At[j * r + i] = A[i * in + j];
        for (int64_t i = 0; i < out; i++)
            for (int64_t j = 0; j < r; j++) Bt[j * out + i] = B[i * r + j];
        rc = merge(m, gname, At, Bt, in, out, r, s);
        ls_free(At);
        ls_free(Bt);
    } else if (rc == LS_OK) {
        if (perm && !m->shapes_only && !m->rope_halves) {
            int64_t heads = perm == 1 ? m->n_head : m->n_head_kv;
            if (out != heads * m->head_dim)
                rc = LS_ERR(LS_ERR_FORMAT, "%s: '%s' lora_B has %lld rows, expected %lld", p->file, q->module,
                            (long long)out, (long long)(heads * m->head_dim));
            float *Bp = ls_malloc((size_t)(out * r) * sizeof *Bp);
            if (rc == LS_OK) ld_permute_rows(Bp, B, out, m->head_dim, (size_t)r * sizeof *B);
            ls_free(B);
            B = Bp;
        }
        if (rc == LS_OK) rc = merge(m, gname, B, A, out, in, r, s);
    }
    ls_free(A);
    ls_free(B);
    return rc;
}

static pair *find_pair(pair **pairs, int64_t *n, const char *module, size_t len) {
    for (int64_t i = 0; i < *n; i++)
        if (strlen((*pairs)[i].module) == len && !strncmp((*pairs)[i].module, module, len)) return &(*pairs)[i];
    *pairs = ls_realloc(*pairs, (size_t)(*n + 1) * sizeof **pairs);
    pair *q = &(*pairs)[(*n)++];
    *q = (pair){0};
    snprintf(q->module, sizeof q->module, "%.*s", (int)len, module);
    return q;
}

// Sorts an adapter file's tensors into LoRA pairs and full tensors; applies the full ones.
static ls_status collect(ld_model *m, const peft *p, ls_safetensors_t *st, const char *dir, pair **pairs, int64_t *n) {
    static const struct { const char *tag; bool b, embedding; } tags[] = {
        {".lora_A.", false, false}, {".lora_B.", true, false},
        {".lora_embedding_A", false, true}, {".lora_embedding_B", true, true}};
    for (int64_t i = 0; i < ls_safetensors_count(st); i++) {
        const ls_st_tensor *t = ls_safetensors_at(st, i);
        const char *name = hf_module_name(t->name), *hit = NULL;
        size_t k = 0;
        for (; k < sizeof tags / sizeof *tags && !hit; k++) hit = strstr(name, tags[k].tag);
        if (hit) {
            pair *q = find_pair(pairs, n, name, (size_t)(hit - name));
            q->embedding = tags[k - 1].embedding;
            if (tags[k - 1].b) q->b = t;
            else q->a = t;
            continue;
        }
        char module[160], gname[96];
        int perm;
        size_t len = strlen(name);
        if (len < 8 || strcmp(name + len - 7, ".weight") || len - 7 >= sizeof module)
            return LS_ERR(LS_ERR_FORMAT, "%s: tensor '%s' is neither a LoRA factor nor a module weight", p->file, t->name);
        snprintf(module, sizeof module, "%.*s", (int)(len - 7), name);
        if (!ld_hf_name(module, gname, sizeof gname - 8, &perm))
            return LS_ERR(LS_ERR_UNSUPPORTED, "%s: tensor '%s' replaces a module longseq does not map", p->file, t->name);
        strcat(gname, ".weight");
        LS_CHECK(replace(m, t, gname, dir));
    }
    return LS_OK;
}

static void st_release(void *st) { ls_safetensors_free(st); }

// One safetensors file of an adapter (path: as messages name it; real: what is opened): full
// tensors, then every LoRA pair.
static ls_status apply_file(ld_model *m, const peft *p, const char *path, const char *real, const char *dir) {
    ls_safetensors_t *st;
    LS_CHECK(ls_safetensors_open(real, &st));
    ld_keep(m, st, st_release);
    pair *pairs = NULL;
    int64_t n = 0;
    peft pf = *p;
    pf.file = path;
    ls_status rc = collect(m, &pf, st, dir, &pairs, &n);
    for (int64_t i = 0; i < n && rc == LS_OK; i++) rc = merge_pair(m, &pf, &pairs[i]);
    ls_free(pairs);
    return rc;
}

// The file `name` of the adapter directory, when it has one: applied.
static ls_status apply_dir_file(ld_model *m, const peft *p, const char *dir, const char *name, bool *found) {
    char path[PATH_MAX], real[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    LS_CHECK(ls_dir_file(dir, name, real, sizeof real, found));
    return *found ? apply_file(m, p, path, real, dir) : LS_OK;
}

// Why a PEFT directory has no adapter_model.safetensors.
static ls_status no_adapter_file(const char *dir) {
    char real[PATH_MAX];
    bool pickle;
    LS_CHECK(ls_dir_file(dir, "adapter_model.bin", real, sizeof real, &pickle));
    if (!pickle) return LS_ERR(LS_ERR_NOT_FOUND, "%s has no adapter_model.safetensors", dir);
    return LS_ERR(LS_ERR_UNSUPPORTED, "%s holds adapter_model.bin (a PyTorch pickle): convert it with "
                  "tools/longlora_to_safetensors.py (docs/howto-longlora.md)", dir);
}

// dir: the PEFT directory; given: its adapter safetensors (NULL: adapter_model.safetensors).
static ls_status apply_peft(ld_model *m, const char *dir, const char *given, double scale) {
    char cfg[PATH_MAX];
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    peft p = {.file = cfg, .scale = scale};
    json_t *c;
    LS_CHECK(ld_json_load(dir, "adapter_config.json", 16u << 20, &c));
    if (!c) return LS_ERR(LS_ERR_NOT_FOUND, "%s has no adapter_config.json", dir);
    ls_status rc = peft_config(&p, c);
    bool found = true;
    if (rc == LS_OK && given) rc = apply_file(m, &p, given, given, dir);
    else if (rc == LS_OK) rc = apply_dir_file(m, &p, dir, "adapter_model.safetensors", &found);
    if (rc == LS_OK && !found) rc = no_adapter_file(dir);
    if (rc == LS_OK) rc = apply_dir_file(m, &p, dir, "trainable_params.safetensors", &found); // LoRA+ extras
    json_decref(c);
    return rc;
}

// --- llama.cpp GGUF adapters -----------------------------------------------------------------

static void gguf_release(void *g) { ls_gguf_free(g); }

static ls_status gguf_pair(ld_model *m, const ls_gguf_t *g, const ls_gguf_tensor *a, double alpha, double scale) {
    char base[96], bname[112];
    size_t n = strlen(a->name) - strlen(".lora_a");
    snprintf(base, sizeof base, "%.*s", (int)n, a->name);
    snprintf(bname, sizeof bname, "%s.lora_b", base);
    const ls_gguf_tensor *b = ls_gguf_find_tensor(g, bname);
    if (!b) return LS_ERR(LS_ERR_FORMAT, "the adapter has '%s' but no '%s'", a->name, bname);
    int64_t r = a->ne[1], in = a->ne[0], out = b->ne[1];
    if (a->n_dims != 2 || b->n_dims != 2 || b->ne[0] != r)
        return LS_ERR(LS_ERR_FORMAT, "'%s' [%lld, %lld] and '%s' [%lld, %lld] do not chain", a->name, (long long)a->ne[0],
                      (long long)a->ne[1], bname, (long long)b->ne[0], (long long)b->ne[1]);
    float *A = ls_malloc((size_t)(r * in) * sizeof *A), *B = ls_malloc((size_t)(out * r) * sizeof *B);
    ls_status rc = m->shapes_only ? LS_OK : to_f32(a->type, a->data, r, in, A);
    if (rc == LS_OK && !m->shapes_only) rc = to_f32(b->type, b->data, out, r, B);
    if (rc == LS_OK) rc = merge(m, base, B, A, out, in, r, scale * (alpha > 0 ? alpha : (double)r) / (double)r);
    ls_free(A);
    ls_free(B);
    return rc;
}

static ls_status apply_gguf(ld_model *m, const char *path, double scale) {
    ls_gguf_t *g;
    LS_CHECK(ls_gguf_open(path, &g));
    ld_keep(m, g, gguf_release);
    ls_str type = {0}, atype = {0};
    double alpha = 0;
    bool ok = ls_gguf_get_str(g, "general.type", &type) == LS_OK && type.len == 7 && !memcmp(type.ptr, "adapter", 7) &&
              ls_gguf_get_str(g, "adapter.type", &atype) == LS_OK && atype.len == 4 && !memcmp(atype.ptr, "lora", 4);
    ls_err_clear();
    if (!ok) return LS_ERR(LS_ERR_FORMAT, "%s is not a LoRA adapter (general.type \"adapter\", adapter.type \"lora\")", path);
    ls_status rc = ls_gguf_get_float(g, "adapter.lora.alpha", &alpha);
    if (rc != LS_OK && rc != LS_ERR_NOT_FOUND) return rc;
    int64_t pairs = 0;
    for (int64_t i = 0; i < ls_gguf_n_tensors(g); i++) {
        const ls_gguf_tensor *t = ls_gguf_tensor_at(g, i);
        size_t n = strlen(t->name);
        if (n > 7 && !strcmp(t->name + n - 7, ".lora_a")) {
            LS_CHECK(gguf_pair(m, g, t, alpha, scale));
            pairs++;
        } else if (n < 7 || strcmp(t->name + n - 7, ".lora_b")) {
            return LS_ERR(LS_ERR_FORMAT, "%s: tensor '%s' is not a .lora_a/.lora_b factor", path, t->name);
        }
    }
    if (!pairs) return LS_ERR(LS_ERR_FORMAT, "%s holds no LoRA factors", path);
    return LS_OK;
}

ls_status ld_apply_lora(ld_model *m, const ls_lora_spec *spec) {
    if (!(spec->scale >= 0 && isfinite(spec->scale))) return LS_ERR(LS_ERR_INVALID, "LoRA scale %g", spec->scale);
    ls_status rc;
    size_t n = strlen(spec->path);
    if (ls_is_dir(spec->path)) {
        rc = apply_peft(m, spec->path, NULL, spec->scale);
    } else if (n > 5 && !strcmp(spec->path + n - 5, ".gguf")) {
        rc = apply_gguf(m, spec->path, spec->scale);
    } else if (n > 12 && !strcmp(spec->path + n - 12, ".safetensors")) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", spec->path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else snprintf(dir, sizeof dir, ".");
        rc = apply_peft(m, dir, spec->path, spec->scale);
    } else {
        rc = LS_ERR(LS_ERR_INVALID, "LoRA adapter \"%s\": give a PEFT directory, a .safetensors in one, or a GGUF adapter",
                    spec->path);
    }
    if (rc != LS_OK) ls_err_prefix("LoRA %s: ", spec->path);
    return rc;
}
