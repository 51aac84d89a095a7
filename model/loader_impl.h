// loader_impl.h — private to model/: a model being put together (metadata, vocabulary and
// tensors) before it becomes an assembled GGUF handle. hf.c fills it from a Hugging Face
// checkpoint, hf_tok.c reads the tokenizer files, lora.c merges adapters into it, loader.c
// builds it from a GGUF and finishes it.
#ifndef LS_LOADER_IMPL_H
#define LS_LOADER_IMPL_H

#include "ls_loader.h"

#include "ls_tokenizer.h"

#include <jansson.h>

typedef struct ld_vocab {
    int32_t n, cap;
    bool spm;          // SentencePiece: the tokens carry scores
    char **text;       // [n] owned copies (may contain NUL-free UTF-8 of any bytes)
    size_t *len;       // [n]
    int32_t *type;     // [n] ls_token_type
    float *scores;     // [n] when spm, else NULL
    int64_t n_merges;  // byte-level BPE only (HF source)
    char **merge;
    size_t *merge_len;
    // The remaining tokenizer keys, written only for HF sources (a GGUF source keeps its own).
    bool from_hf;
    char model[16], pre[32];
    int32_t bos, eos, unk, pad;     // -1: none
    int add_bos, add_eos, add_space_prefix, remove_extra_ws; // -1: unset
    char *chat_template;
} ld_vocab;

typedef struct ld_model {
    const char *path;       // for messages
    bool shapes_only;
    ls_gguf_meta meta;      // every key/value except the vocabulary's
    ld_vocab vocab;
    ls_gguf_tensor *t;      // tensors so far (names owned)
    int64_t n_t, cap_t;
    ls_strmap *index;       // name -> index in t
    struct ld_keep { void *ctx; void (*release)(void *); } *keep;
    int64_t n_keep;
    int64_t n_embd, n_head, n_head_kv, head_dim; // what adapters need
    bool rope_halves;       // q/k rows stay in HF's rotate-half order (qwen2): adapters are not permuted
} ld_model;

// --- loader.c ---
void ld_init(ld_model *m, const char *path, bool shapes_only);
void ld_free(ld_model *m);
void ld_keep(ld_model *m, void *ctx, void (*release)(void *));
void *ld_alloc(ld_model *m, size_t bytes); // zeroed, 64-byte aligned, freed with the model
// Adds or replaces a tensor (ne in GGUF order: ne[0] innermost).
void ld_tensor_set(ld_model *m, const char *name, ls_dtype type, int n_dims, const int64_t *ne, const void *data);
ls_gguf_tensor *ld_tensor(ld_model *m, const char *name); // NULL if absent
// Appends a token (copied).
void ld_vocab_push(ld_vocab *v, const char *text, size_t len, int32_t type, float score);
ls_status ld_finish(ld_model *m, ls_gguf_t **out);

// --- hf.c ---
ls_status ld_from_hf(ld_model *m, const char *dir);
// Reads dir/name as JSON (at most max_bytes; a file inside dir, ls_dir_file). *out is NULL
// when the file does not exist; errors name the file, line and column.
ls_status ld_json_load(const char *dir, const char *name, size_t max_bytes, json_t **out);
// The GGUF name of an HF module ("model.layers.3.self_attn.q_proj" -> "blk.3.attn_q"), or
// false when it is not one longseq maps. perm_heads: 1 for q, 2 for k (their rows are
// permuted), 0 for the others.
bool ld_hf_name(const char *hf, char *out, size_t cap, int *perm);
// Row permutation of HF q/k (rotate-half pairs) into GGUF order (adjacent pairs): dst row
// h*hd + 2i + j = src row h*hd + j*hd/2 + i. rows = heads * hd; row_bytes each.
void ld_permute_rows(void *dst, const void *src, int64_t rows, int64_t hd, size_t row_bytes);

// --- hf_tok.c ---
// Fills v from dir's tokenizer.model or tokenizer.json (+ tokenizer_config.json). *found is
// false when the directory has neither. Token ids must be below max_tokens (the embedding's
// rows): an added token far beyond them is refused before the vocabulary is padded up to it.
ls_status ld_vocab_from_hf(ld_vocab *v, const char *dir, int64_t max_tokens, bool *found);

// --- lora.c ---
ls_status ld_apply_lora(ld_model *m, const ls_lora_spec *spec);

#endif // LS_LOADER_IMPL_H
