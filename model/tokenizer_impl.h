// tokenizer_impl.h — private to model/: the tokenizer's state shared by tokenizer.c (setup,
// special tokens, detokenization), pretok.c (pre-tokenizer scanners), bpe.c and spm.c.
#ifndef LS_TOKENIZER_IMPL_H
#define LS_TOKENIZER_IMPL_H

#include "ls_tokenizer.h"

typedef enum pretok_kind { PRETOK_GPT2, PRETOK_SMOLLM, PRETOK_LLAMA3, PRETOK_QWEN2 } pretok_kind;

struct ls_tokenizer {
    ls_tok_model model;
    char pre_name[64];
    pretok_kind pretok;
    bool ignore_merges;   // llama-bpe: a piece that is a whole token is emitted directly
    bool add_space_prefix; // SentencePiece dummy prefix
    bool add_bos, add_eos;
    int32_t bos, eos, eot, eom, unk, pad;

    int32_t n_vocab;
    ls_buf text_pool;      // all vocabulary strings back to back
    uint64_t *text_off;    // [n_vocab + 1] offsets into text_pool
    uint8_t *types;        // [n_vocab] ls_token_type
    float *scores;         // [n_vocab] (SentencePiece), else NULL
    bool *eog;             // [n_vocab]
    ls_strmap *vocab;      // text -> id

    int32_t *specials;     // ids matched in raw text, longest text first
    int32_t n_specials;

    // Byte-level BPE. Symbols are vocabulary ids, plus ids >= n_vocab for strings that
    // appear only in merges. pairs: (left << 32 | right) -> (rank << 32 | merged).
    int64_t n_merges;
    ls_u64map *pairs;
    int32_t byte_sym[256];   // symbol of the byte-level character for each byte, or -1
    int32_t byte_token[256]; // its vocabulary id, or -1
    int32_t spm_byte_token[256]; // SentencePiece "<0xNN>" ids, or -1
};

// A decoded stretch of UTF-8: code points with their byte extents. Invalid bytes become
// single-byte units with cp = UNIT_INVALID, classified like U+FFFD.
#define UNIT_INVALID 0xFFFFFFFFu
typedef struct text_unit {
    uint32_t cp;
    uint32_t off; // byte offset of the unit in the fragment
    uint8_t len;  // bytes
    uint8_t cls;  // CLS_* bits
} text_unit;
enum { CLS_LETTER = 1, CLS_NUMBER = 2, CLS_SPACE = 4 };

// Decodes text[0..len) into units (grows *units, returns the count).
size_t ls_utf8_units(const char *text, size_t len, text_unit **units, size_t *cap);

// Pre-tokenizes units[0..n) and calls emit(ctx, first_unit, end_unit) for each piece in order.
typedef ls_status (*piece_fn)(void *ctx, size_t a, size_t b);
ls_status ls_pretokenize(pretok_kind kind, const text_unit *u, size_t n, piece_fn emit, void *ctx);

// Scratch for the merge loops, reused across pieces of one ls_tokenize call.
typedef struct merge_scratch {
    struct merge_sym { int32_t sym; uint32_t start, len; int32_t prev, next; } *syms;
    size_t syms_cap;
    // Queued pairs; key: lower merges first (rank or negated score, then left index).
    struct merge_cand { uint64_t key; int32_t left, right, a, b, merged; uint32_t size; } *heap;
    size_t heap_len, heap_cap;
    ls_buf chars; // byte-level text of a piece
    size_t dropped;        // bytes with no token in the vocabulary (byte-level BPE)
    uint8_t first_dropped; // the first such byte
} merge_scratch;
void ls_merge_scratch_free(merge_scratch *s);
// One symbol per unit [i, i+1) of n units (start = i, len = 1, linked list); empties the heap.
void ls_merge_init(merge_scratch *s, size_t n);
void ls_merge_push(merge_scratch *s, struct merge_cand c);
struct merge_cand ls_merge_pop(merge_scratch *s); // the smallest key; heap must be non-empty

ls_status ls_bpe_init(ls_tokenizer_t *t, const ls_gguf_t *g);
// Appends the tokens of one pre-tokenized piece (raw bytes).
ls_status ls_bpe_piece(const ls_tokenizer_t *t, const char *p, size_t n, merge_scratch *s,
                       ls_vec_i32 *out);
void ls_bpe_free(ls_tokenizer_t *t);
// Appends the bytes a byte-level BPE token's text stands for.
void ls_bpe_decode_text(ls_str text, ls_buf *out);

// Appends the tokens of one raw SentencePiece fragment (dummy prefix already applied).
ls_status ls_spm_fragment(const ls_tokenizer_t *t, const char *p, size_t n, merge_scratch *s,
                          ls_vec_i32 *out);

#endif // LS_TOKENIZER_IMPL_H
