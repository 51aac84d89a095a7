#!/usr/bin/env python3
"""Fixture generator: tiny random llama models written as GGUF with the `gguf` package, for
every test that needs a model small enough to check against numpy.

    python fixtures.py OUT.gguf [--embd 64] [--layers 2] [--heads 4] [--kv-heads 2]
        [--head-dim D] [--ff 128] [--ctx 256] [--qtype F32|F16|BF16|Q8_0|Q4_0|Q4_1|Q5_0|Q5_1|Q4_K|Q5_K|Q6_K]
        [--untied] [--seed 0] [--rope-base 10000] [--rope-scaling none|linear|yarn] [--rope-factor S]

From Python, `write_tiny_llama(path, ...)` returns the weights as float32 numpy arrays (the
dequantized values the file really holds), keyed by GGUF tensor name, so a numpy reference
forward can use exactly what the engine reads. K-quant tensors (which gguf-py cannot
quantize) are random valid blocks; their reference values come from gguf.quants.dequantize.

The vocabulary is byte-level BPE: the 256 byte characters, a few merges, and the ChatML
control tokens, so the tokenizer path is real as well.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np
import gguf

Q = gguf.GGMLQuantizationType


def byte_chars() -> list[str]:
    """GPT-2's byte -> unicode table (bytes in order 0..255)."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(0x100 + n)
            n += 1
    return [out[b] for b in range(256)]


def tiny_vocab() -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges of the fixtures' byte-level BPE vocabulary."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = byte_chars()
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "a t", "e n", "in g"]
    merged = []
    for m in merges:
        a, b = m.split(" ", 1)
        if a + b not in merged:
            merged.append(a + b)
    tokens = specials + chars + merged
    types = [3] * len(specials) + [1] * (len(chars) + len(merged))
    return tokens, types, merges


def random_k_blocks(qtype, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random but well-scaled K-quant blocks: random bytes with small fp16 scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    nb = rows * cols // block
    raw = rng.integers(0, 256, size=(nb, size), dtype=np.uint8)
    d = rng.uniform(0.0002, 0.002, size=nb).astype(np.float16).view(np.uint8).reshape(nb, 2)
    dmin = rng.uniform(0.0, 0.001, size=nb).astype(np.float16).view(np.uint8).reshape(nb, 2)
    if qtype in (Q.Q4_K, Q.Q5_K):
        raw[:, 0:2], raw[:, 2:4] = d, dmin
    elif qtype == Q.Q6_K:
        raw[:, 208:210] = d
        raw[:, 192:208] = rng.integers(-8, 8, size=(nb, 16), dtype=np.int8).view(np.uint8)
    return raw.reshape(rows, cols // block * size)


def storable_type(qtype, cols: int):
    """qtype if a row of `cols` elements is whole blocks, else Q8_0 or F32 (as llama.cpp's
    quantizer falls back for such tensors)."""
    if cols % gguf.GGML_QUANT_SIZES[qtype][0] == 0:
        return qtype
    return Q.Q8_0 if cols % 32 == 0 else Q.F32


def encode_tensor(w: np.ndarray, qtype, rng) -> tuple[np.ndarray, np.ndarray]:
    """Returns (bytes or array to store, the float32 values the file will really hold)."""
    if qtype == Q.F32:
        return w.astype(np.float32), w.astype(np.float32)
    if qtype == Q.F16:
        h = w.astype(np.float16)
        return h, h.astype(np.float32)
    if qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        raw = random_k_blocks(qtype, w.shape[0], w.shape[1], rng)
    else:
        raw = gguf.quants.quantize(w.astype(np.float32), qtype)
    return raw, gguf.quants.dequantize(raw, qtype).reshape(w.shape).astype(np.float32)


@dataclass
class TinyModel:
    path: str
    hp: dict
    weights: dict = field(default_factory=dict)  # GGUF name -> float32, numpy (out, in) order
    types: dict = field(default_factory=dict)    # GGUF name -> stored type name ("Q4_K", ...)
    tokens: list = field(default_factory=list)


def write_tiny_llama(path: str, *, embd=64, layers=2, heads=4, kv_heads=2, head_dim=None,
                     ff=128, ctx=256, qtype="F32", tied=True, seed=0, rope_base=10000.0,
                     rope_scaling="none", rope_factor=1.0, rope_orig_ctx=None,
                     rope_freqs=None, rope_factors=None, yarn_betas=None, chat_template=None) -> TinyModel:
    """rope_freqs: Llama-3 divisors [head_dim/2] (the rope_freqs tensor); rope_factors:
    (long, short) LongRoPE factor lists, written as rope_factors_long/short; yarn_betas:
    (beta_fast, beta_slow) written as rope.scaling.yarn_beta_fast/slow."""
    rng = np.random.default_rng(seed)
    qt = Q[qtype]
    hd = head_dim or embd // heads
    assert hd * heads == embd, "this fixture keeps n_embd == n_head * head_dim"
    tokens, types, merges = tiny_vocab()
    nv = len(tokens)
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_name("longseq tiny fixture")
    w.add_context_length(ctx)
    w.add_embedding_length(embd)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(rope_base)
    w.add_vocab_size(nv)
    if rope_scaling != "none":
        w.add_rope_scaling_type(gguf.RopeScalingType(rope_scaling))
        w.add_rope_scaling_factor(rope_factor)
        w.add_rope_scaling_orig_ctx_len(rope_orig_ctx or ctx)
    if yarn_betas is not None:
        w.add_float32("llama.rope.scaling.yarn_beta_fast", yarn_betas[0])
        w.add_float32("llama.rope.scaling.yarn_beta_slow", yarn_betas[1])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    if chat_template:
        w.add_chat_template(chat_template)
    model = TinyModel(path, dict(embd=embd, layers=layers, heads=heads, kv_heads=kv_heads,
                                 head_dim=hd, ff=ff, ctx=ctx, vocab=nv, rope_base=rope_base,
                                 eps=1e-5, qtype=qtype, tied=tied), tokens=tokens)

    def mat(name, rows, cols, scale, qtype=qt):
        x = rng.normal(0.0, scale, size=(rows, cols)).astype(np.float32)
        t = storable_type(qtype, cols)
        stored, real = encode_tensor(x, t, rng)
        if t in (Q.F32, Q.F16):
            w.add_tensor(name, stored)
        else:
            w.add_tensor(name, stored, raw_dtype=t)
        model.weights[name] = real
        model.types[name] = t.name

    def vec(name, n):
        x = (1.0 + rng.normal(0.0, 0.1, size=n)).astype(np.float32)
        w.add_tensor(name, x)
        model.weights[name] = x
        model.types[name] = "F32"

    # Embeddings stay Q8_0 when the layers are quantized, as in the default model.
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, dtype=np.float32))
    if rope_factors is not None:
        w.add_tensor("rope_factors_long.weight", np.asarray(rope_factors[0], dtype=np.float32))
        w.add_tensor("rope_factors_short.weight", np.asarray(rope_factors[1], dtype=np.float32))
    mat("token_embd.weight", nv, embd, 0.5, qt if qt in (Q.F32, Q.F16, Q.BF16) else Q.Q8_0)
    vec("output_norm.weight", embd)
    if not tied:
        mat("output.weight", nv, embd, 0.2)
    for il in range(layers):
        p = f"blk.{il}."
        vec(p + "attn_norm.weight", embd)
        mat(p + "attn_q.weight", heads * hd, embd, 0.15)
        mat(p + "attn_k.weight", kv_heads * hd, embd, 0.15)
        mat(p + "attn_v.weight", kv_heads * hd, embd, 0.15)
        mat(p + "attn_output.weight", embd, heads * hd, 0.15)
        vec(p + "ffn_norm.weight", embd)
        mat(p + "ffn_gate.weight", ff, embd, 0.15)
        mat(p + "ffn_up.weight", ff, embd, 0.15)
        mat(p + "ffn_down.weight", embd, ff, 0.15)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


def write_tokenizer_gguf(path: str, tokens, types, *, model="gpt2", pre=None, merges=None,
                         scores=None, bos=None, eos=None, unk=None, add_bos=None,
                         add_space_prefix=None, chat_template=None) -> None:
    """A GGUF that holds only tokenizer metadata (no tensors)."""
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_tokenizer_model(model)
    if pre:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if merges is not None:
        w.add_token_merges(merges)
    if scores is not None:
        w.add_token_scores(scores)
    for fn, v in ((w.add_bos_token_id, bos), (w.add_eos_token_id, eos), (w.add_unk_token_id, unk),
                  (w.add_add_bos_token, add_bos), (w.add_add_space_prefix, add_space_prefix)):
        if v is not None:
            fn(v)
    if chat_template:
        w.add_chat_template(chat_template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--embd", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int)
    ap.add_argument("--ff", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--qtype", default="F32")
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rope-base", type=float, default=10000.0)
    ap.add_argument("--rope-scaling", default="none")
    ap.add_argument("--rope-factor", type=float, default=1.0)
    a = ap.parse_args()
    write_tiny_llama(a.out, embd=a.embd, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads,
                     head_dim=a.head_dim, ff=a.ff, ctx=a.ctx, qtype=a.qtype, tied=not a.untied,
                     seed=a.seed, rope_base=a.rope_base, rope_scaling=a.rope_scaling,
                     rope_factor=a.rope_factor)
    print(a.out)


if __name__ == "__main__":
    main()
