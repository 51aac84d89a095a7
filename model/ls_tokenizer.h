// ls_tokenizer.h — tokenizers described by GGUF metadata: byte-level BPE
// (tokenizer.ggml.model = gpt2; pre-tokenizers gpt-2, smollm, llama-bpe and their aliases)
// and SentencePiece BPE (llama: scores, byte fallback). Special tokens are matched in the
// raw text first; invalid UTF-8 is carried byte by byte, so detokenize(tokenize(x)) == x for
// any bytes x the vocabulary can represent (a byte-level BPE vocabulary may lack some bytes,
// e.g. 0xFF: such bytes are dropped with a warning, as llama.cpp and Hugging Face drop them).
// Unicode classes come from utf8proc.
// Docs: docs/formats.md §4. Tests: tests/unit/test_tokenizer.c,
// tests/oracle/test_tokenizer.py (against Hugging Face tokenizers and sentencepiece).
#ifndef LS_TOKENIZER_H
#define LS_TOKENIZER_H

#include "ls_gguf.h"

typedef struct ls_tokenizer ls_tokenizer_t;

typedef enum ls_tok_model { LS_TOK_BPE, LS_TOK_SPM } ls_tok_model;

// GGUF token types (tokenizer.ggml.token_type).
typedef enum ls_token_type {
    LS_TOKEN_UNDEFINED = 0, LS_TOKEN_NORMAL = 1, LS_TOKEN_UNKNOWN = 2, LS_TOKEN_CONTROL = 3,
    LS_TOKEN_USER_DEFINED = 4, LS_TOKEN_UNUSED = 5, LS_TOKEN_BYTE = 6
} ls_token_type;

// Builds the tokenizer from a GGUF's tokenizer.* metadata (everything is copied: the GGUF
// may be closed afterwards). Unknown models or pre-tokenizers, arrays of the wrong type or
// length, malformed merges and special ids outside the vocabulary are errors.
ls_status ls_tokenizer_init(const ls_gguf_t *g, ls_tokenizer_t **out);
void ls_tokenizer_free(ls_tokenizer_t *t);

ls_tok_model ls_tokenizer_model(const ls_tokenizer_t *t);
const char *ls_tokenizer_model_name(const ls_tokenizer_t *t); // "gpt2" or "llama"
const char *ls_tokenizer_pre_name(const ls_tokenizer_t *t);   // "" for SentencePiece
int32_t ls_tokenizer_n_vocab(const ls_tokenizer_t *t);
int64_t ls_tokenizer_n_merges(const ls_tokenizer_t *t);
ls_str ls_tokenizer_text(const ls_tokenizer_t *t, int32_t id); // the vocabulary string
ls_token_type ls_tokenizer_type(const ls_tokenizer_t *t, int32_t id);
// Special ids; -1 when the model has none.
int32_t ls_tokenizer_bos(const ls_tokenizer_t *t);
int32_t ls_tokenizer_eos(const ls_tokenizer_t *t);
int32_t ls_tokenizer_eot(const ls_tokenizer_t *t);
int32_t ls_tokenizer_unk(const ls_tokenizer_t *t);
int32_t ls_tokenizer_pad(const ls_tokenizer_t *t);
bool ls_tokenizer_add_bos(const ls_tokenizer_t *t);
bool ls_tokenizer_add_eos(const ls_tokenizer_t *t);
// End of generation: eos, eot, eom and tokens such as <|im_end|>, <|endoftext|>, <|eot_id|>.
bool ls_tokenizer_is_eog(const ls_tokenizer_t *t, int32_t id);
// The id of a vocabulary string, or -1.
int32_t ls_tokenizer_find(const ls_tokenizer_t *t, const char *text, size_t len);

// Appends the ids of text[0..len) to out. add_special: add BOS/EOS as the model's flags say.
// parse_special: control and unknown tokens written literally in the text (e.g. "<|im_start|>")
// become their ids; user-defined tokens always do. Any bytes are accepted.
ls_status ls_tokenize(const ls_tokenizer_t *t, const char *text, size_t len, bool add_special,
                      bool parse_special, ls_vec_i32 *out);

// Tokenizing a long text piece by piece (a stream read in blocks). ls_tokenizer_safe_cut
// gives the longest prefix of text[0..len) after which the text can be cut so that the two
// parts tokenize to exactly the ids of the whole: the cut follows a line break that has a
// non-space ASCII character on both sides (0 when there is none). For SentencePiece a merge
// across such a line break is possible in principle but absent from usual vocabularies.
// ls_tokenize_more tokenizes a part that continues earlier text: no BOS/EOS and no
// SentencePiece dummy prefix.
size_t ls_tokenizer_safe_cut(const char *text, size_t len);
ls_status ls_tokenize_more(const ls_tokenizer_t *t, const char *text, size_t len, bool parse_special,
                           ls_vec_i32 *out);

// Appends the bytes of one token. special: render control tokens (otherwise they produce
// nothing). Invalid ids are LS_ERR_INVALID.
ls_status ls_token_to_bytes(const ls_tokenizer_t *t, int32_t id, bool special, ls_buf *out);
// Appends the bytes of a whole sequence; SentencePiece's leading dummy-prefix space is dropped.
ls_status ls_detokenize(const ls_tokenizer_t *t, const int32_t *ids, size_t n, bool special,
                        ls_buf *out);

#endif // LS_TOKENIZER_H
