#!/usr/bin/env python3
"""hf_fixture.py OUT_DIR — writes a small Hugging Face checkpoint for the GPU end-to-end test
(tests/gpu/e2e.py): BF16 random weights (4 layers, embedding 64, heads 2/1, tied), SmolLM2's
real tokenizer as a tokenizer.json (taken from the default model's GGUF), and a PEFT LoRA
adapter on q/k/v/o (OUT_DIR-lora). Written on the VM by tests/gpu/prebuild with the test
virtualenv (numpy, gguf, safetensors, tokenizers), because GPU machines may lack them."""
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "oracle"))
from lsoracle import MODEL, need_file  # noqa: E402
from test_hf import write_tensors  # noqa: E402
from test_tokenizer import hf_tokenizer, vocab_of  # noqa: E402


def bf16(x):
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32)).view(np.float32)


def main(out):
    d, rng = Path(out), np.random.default_rng(7)
    d.mkdir(parents=True, exist_ok=True)
    tokens, types, merges = vocab_of(need_file(MODEL, "the default model"))
    nv, embd, ff, heads, kv, layers = len(tokens), 64, 192, 2, 1, 4  # head dim 32: the CUDA kernel has 32-128
    hd = embd // heads
    cfg = {"model_type": "llama", "hidden_size": embd, "num_hidden_layers": layers, "intermediate_size": ff,
           "num_attention_heads": heads, "num_key_value_heads": kv, "max_position_embeddings": 8192,
           "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": True, "vocab_size": nv}
    (d / "config.json").write_text(json.dumps(cfg))
    t = {"model.embed_tokens.weight": rng.normal(0, 0.05, (nv, embd)), "model.norm.weight": 1 + rng.normal(0, 0.1, embd)}
    shapes = {"self_attn.q_proj": (heads * hd, embd), "self_attn.k_proj": (kv * hd, embd),
              "self_attn.v_proj": (kv * hd, embd), "self_attn.o_proj": (embd, heads * hd),
              "mlp.gate_proj": (ff, embd), "mlp.up_proj": (ff, embd), "mlp.down_proj": (embd, ff)}
    for il in range(layers):
        for n in ("input_layernorm", "post_attention_layernorm"):
            t[f"model.layers.{il}.{n}.weight"] = 1 + rng.normal(0, 0.1, embd)
        for n, s in shapes.items():
            t[f"model.layers.{il}.{n}.weight"] = rng.normal(0, 1 / np.sqrt(s[1]), s)
    write_tensors(d, {k: bf16(v) for k, v in t.items()}, "BF16")
    hf_tokenizer(tokens, types, merges, "smollm").save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}))
    a = Path(str(d) + "-lora")
    a.mkdir(exist_ok=True)
    (a / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                                        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}))
    lora = {}
    for il in range(layers):
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            o, i = shapes["self_attn." + n]
            p = f"base_model.model.model.layers.{il}.self_attn.{n}"
            lora[p + ".lora_A.weight"] = rng.normal(0, 0.05, (8, i)).astype(np.float32)
            lora[p + ".lora_B.weight"] = rng.normal(0, 0.05, (o, 8)).astype(np.float32)
    save_file(lora, str(a / "adapter_model.safetensors"))
    print(f"{d}: {sum(v.size for v in t.values()) / 1e6:.1f}M parameters (bf16), vocabulary {nv}; adapter {a}")


if __name__ == "__main__":
    main(sys.argv[1])
