// ls_loader.h — opening a model from what users have: a GGUF file, or a Hugging Face Llama
// checkpoint directory (config.json, *.safetensors with their index, tokenizer.json or
// tokenizer.model), with LoRA adapters merged at load (PEFT directories, LoRA+ extra tensors,
// llama.cpp GGUF adapters). Everything comes out as one GGUF handle — an assembled one when
// anything was converted or merged — so the engine, coordinator and tools read every source
// the same way. HF q/k rows are permuted at load to GGUF's adjacent-pair RoPE layout.
// Docs: docs/formats.md §1.5, §3.4, §5 and §6; docs/howto-longlora.md.
// Tests: tests/oracle/test_hf.py (checkpoints, adapters, tokenizers vs numpy and transformers,
// hostile directories and adapters; also under the sanitizers), tests/unit/test_gguf.c.
#ifndef LS_LOADER_H
#define LS_LOADER_H

#include "ls_gguf.h"

typedef struct ls_lora_spec {
    const char *path; // a PEFT directory, its adapter_model.safetensors, or a GGUF adapter
    double scale;     // the user's multiplier of alpha/r (1 = as trained)
} ls_lora_spec;

typedef struct ls_load_opts {
    const ls_lora_spec *lora; // merged in order
    int n_lora;
    // Metadata and shapes only (coordinator, plan, tokenize, inspect): q/k rows keep the
    // checkpoint's order and adapter deltas are not merged, so no weight is copied. The
    // vocabulary, configuration and tensor shapes are exactly those of a full load.
    bool shapes_only;
} ls_load_opts;

// path: a GGUF file or a checkpoint directory (a config.json inside). o may be NULL (no
// adapters, full load). Errors name the file and what is wrong.
ls_status ls_model_open(const char *path, const ls_load_opts *o, ls_gguf_t **out);

#endif // LS_LOADER_H
