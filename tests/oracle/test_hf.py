"""Hugging Face checkpoints, LoRA adapters and their tokenizers (issue #8).

Every tiny model here is written twice from the same weights: as GGUF (fixtures.py, gguf-py)
and as a Hugging Face directory (config.json + safetensors written with the `safetensors`
package, q/k rows in HF's rotate-half order). The engine's logits from the directory must be
bit-identical to those from the GGUF and match the numpy reference (ref_llama.py); merged LoRA
adapters (PEFT, LoRA+ extras with a grown vocabulary, llama.cpp GGUF adapters) must match the
reference computed on W + scale * alpha/r * B @ A. Checkpoints saved by transformers 5 itself
(LlamaConfig / LlamaForCausalLM.save_pretrained: its rope_parameters layout, every rope type,
and the same configs rewritten in the older rope_theta + rope_scaling layout) must give
transformers' own per-token log-likelihoods (PyTorch forward) on sequences longer than the
original context, and greedy generation across that context behaves as docs/howto-longlora.md
says. Tokenizer files (tokenizer.json of three pre-tokenizer families, a SentencePiece
tokenizer.model) must tokenize exactly as `transformers` does. Hostile directories and adapters
must fail with a message naming the problem.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import gguf
import numpy as np
import sentencepiece as spm
from safetensors.numpy import save_file
from tokenizers import processors

from fixtures import tiny_vocab, write_tiny_llama
from lsoracle import BUILD, MODEL, REPO, check, done, need_file, run, tmpdir
from ref_llama import forward, unpermute
from test_tokenizer import corpus_files, hf_tokenizer, vocab_of

N_TOKENS = 40
HF_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head",
            "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
            "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
            "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
            "ffn_down": "mlp.down_proj"}


def permute(w, n_heads):
    """HF q/k rows (rotate-half halves) into GGUF's adjacent pairs: the inverse of unpermute."""
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, hd // 2, -1).transpose(0, 2, 1, 3).reshape(w.shape)


def hf_name(gname):
    parts = gname.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{HF_NAMES[parts[2]]}.weight"
    return HF_NAMES[parts[0]] + ".weight"


def hf_weights(model):
    """GGUF-named float32 weights -> HF-named arrays in HF layout."""
    hp, out = model.hp, {}
    for g, w in model.weights.items():
        if g.endswith("attn_q.weight"):
            w = unpermute(w, hp["heads"])
        elif g.endswith("attn_k.weight"):
            w = unpermute(w, hp["kv_heads"])
        out[hf_name(g)] = np.ascontiguousarray(w, dtype=np.float32)
    return out


def save_bf16(path, tensors):
    """A safetensors file of BF16 matrices and F32 vectors, written by hand: numpy has no
    bfloat16 (the values must be bf16-exact, as the GGUF twin stores them)."""
    header, blobs, off = {}, [], 0
    for name, w in sorted(tensors.items()):
        if w.ndim == 1:
            bits, dt = np.ascontiguousarray(w, dtype=np.float32), "F32"
        else:
            bits, dt = (np.ascontiguousarray(w, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16), "BF16"
            check(np.array_equal((bits.astype(np.uint32) << 16).view(np.float32), w.astype(np.float32)),
                  f"{name} is not bf16-exact")
        header[name] = {"dtype": dt, "shape": list(w.shape), "data_offsets": [off, off + bits.nbytes]}
        blobs.append(bits.tobytes())
        off += bits.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def write_tensors(d, tensors, dtype="F32", shards=1):
    names = sorted(tensors)
    groups = [names[i::shards] for i in range(shards)]
    files = ["model.safetensors"] if shards == 1 else \
        [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    for fname, group in zip(files, groups):
        part = {n: tensors[n] for n in group}
        if dtype == "BF16":
            save_bf16(d / fname, part)
        else:
            # vectors (norms) stay F32, as in the GGUF twin
            save_file({n: w if w.dtype.kind != "f" else w.astype(np.float16 if dtype == "F16" and w.ndim == 2 else np.float32)
                       for n, w in part.items()},
                      str(d / fname), metadata={"format": "pt"})
    if shards > 1:
        index = {"metadata": {"total_size": 0},
                 "weight_map": {n: f for f, g in zip(files, groups) for n in g}}
        (d / "model.safetensors.index.json").write_text(json.dumps(index))


def tiny_tokenizer_json(d, model):
    tokens, types, merges = tiny_vocab()  # the fixtures' vocabulary (model.tokens)
    hf_tokenizer(tokens, types, merges, "smollm").save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"add_bos_token": False, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
         "model_max_length": model.hp["ctx"]}))


def hf_dir(work, name, model, *, dtype="F32", shards=1, rope_scaling=None, config=None, tensors=None):
    d = work / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    hp = model.hp
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hp["embd"],
           "num_hidden_layers": hp["layers"], "intermediate_size": hp["ff"],
           "num_attention_heads": hp["heads"], "num_key_value_heads": hp["kv_heads"],
           "max_position_embeddings": hp["ctx"], "rms_norm_eps": hp["eps"], "rope_theta": hp["rope_base"],
           "tie_word_embeddings": hp["tied"], "vocab_size": hp["vocab"], "hidden_act": "silu",
           "rope_scaling": rope_scaling, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
    cfg.update(config or {})
    (d / "config.json").write_text(json.dumps(cfg))
    write_tensors(d, tensors if tensors is not None else hf_weights(model), dtype, shards)
    tiny_tokenizer_json(d, model)
    return d


def logits(path, tokens, n_vocab, work, *args, expect_ok=True):
    ids = work / "ids.txt"
    ids.write_text(" ".join(map(str, tokens)))
    out = work / "logits.f32"
    p = subprocess.run([str(BUILD / "tests" / "logits_dump"), str(path), str(ids), str(out), *map(str, args)],
                       capture_output=True, text=True)
    if not expect_ok:
        return p
    check(p.returncode == 0, f"logits_dump {path} failed: {p.stderr}")
    return np.fromfile(out, dtype=np.float32).reshape(len(tokens), n_vocab), p.stderr


def rel_err(a, b):
    rms = np.sqrt(np.mean(b * b)) + 1e-30
    return float(np.max(np.abs(a - b) / (np.abs(b) + rms)))


def tokens_for(model, seed=0, vocab=None):
    return np.random.default_rng(seed).integers(0, vocab or model.hp["vocab"], size=N_TOKENS).tolist()


# --- checkpoints ---------------------------------------------------------------------------------

def check_checkpoints(work):
    print("checkpoints (HF directory vs the same weights as GGUF vs numpy):")
    args = ("--ubatch", 7, "--decode-from", 23)
    shapes = [("f32-gqa-untied-sharded", dict(embd=96, heads=3, kv_heads=1, ff=160, tied=False), "F32", 3),
              ("f16-tied", dict(embd=128, heads=4, kv_heads=2, ff=96, qtype="F16"), "F16", 1),
              ("bf16-mha-untied", dict(embd=64, heads=2, kv_heads=2, ff=128, qtype="BF16", tied=False), "BF16", 2)]
    for name, kw, dtype, shards in shapes:
        gg = work / f"{name}.gguf"
        model = write_tiny_llama(str(gg), **kw)
        d = hf_dir(work, name, model, dtype=dtype, shards=shards)
        toks = tokens_for(model)
        a, _ = logits(gg, toks, model.hp["vocab"], work, *args)
        b, _ = logits(d, toks, model.hp["vocab"], work, *args)
        e = rel_err(b, forward(model, toks))
        check(np.array_equal(a, b), f"{name}: HF and GGUF logits differ (max {np.abs(a - b).max():.2e})")
        check(e < 1e-4, f"{name}: HF logits differ from the numpy reference by {e:.2e}")
        print(f"  {name:30s} identical to GGUF; vs numpy {e:.1e}")


def check_rope_configs(work):
    print("rope_scaling from config.json (embedding 64, heads 4/2):")
    half = 8
    long, short = np.linspace(1.0, 6.0, half), np.linspace(1.0, 1.5, half)
    g4 = 1 + 0.1 * np.log(4.0)
    cases = [
        ("linear-4", 64, {"rope_type": "linear", "factor": 4.0}, dict(method="linear", factor=4.0)),
        ("dynamic-4", 16, {"type": "dynamic", "factor": 4.0}, dict(method="dynamic", factor=4.0, orig_ctx=16)),
        ("yarn-4", 64, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                        "attention_factor": 1.2},
         dict(method="yarn", factor=4.0, orig_ctx=16, attn_factor=1.2 / g4)),
        ("llama3-8", 64, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 2.0,
                          "original_max_position_embeddings": 16},
         dict(method="llama3", factor=8.0, orig_ctx=16, low_ff=1.0, high_ff=2.0)),
        ("longrope", 64, {"rope_type": "longrope", "long_factor": long.tolist(), "short_factor": short.tolist(),
                          "original_max_position_embeddings": 16},
         dict(method="longrope", factor=4.0, orig_ctx=16, long=long, short=short)),
    ]
    for name, ctx, rs, ref in cases:
        gg = work / f"rope-{name}.gguf"
        model = write_tiny_llama(str(gg), embd=64, heads=4, kv_heads=2, ff=128, ctx=ctx)
        d = hf_dir(work, f"rope-{name}", model, rope_scaling=rs)
        toks = tokens_for(model, 1)
        ours, _ = logits(d, toks, model.hp["vocab"], work)
        e = rel_err(ours, forward(model, toks, ref))
        # YaRN's attention factor and LongRoPE's lists pass through f32 keys: 1e-4 still holds.
        check(e < 1e-4, f"rope {name}: logits differ from the numpy reference by {e:.2e}")
        print(f"  {name:30s} vs numpy {e:.1e}")


def check_rope_warning(work):
    gg = work / "warn.gguf"
    model = write_tiny_llama(str(gg), embd=64, heads=4, kv_heads=2, ff=128, ctx=256)
    d = hf_dir(work, "tiny-longlora-32k-ft", model)
    toks = tokens_for(model)
    _, err = logits(d, toks, model.hp["vocab"], work)
    check("--rope-scaling linear --rope-scale 128" in err and "its name says 32k" in err,
          f"no warning about the missing rope_scaling: {err!r}")
    _, err = logits(d, toks, model.hp["vocab"], work, "--rope-scaling", "linear", "--rope-scale", 128)
    check("rope_scaling" not in err, f"the warning stays after the override: {err!r}")
    d2 = hf_dir(work, "tiny-longlora-32k-fixed", model, rope_scaling={"type": "linear", "factor": 128.0})
    _, err = logits(d2, toks, model.hp["vocab"], work)
    check("rope_scaling" not in err, f"a warning although config.json has rope_scaling: {err!r}")
    # SmolLM2's own name: "8k" is its context, "Lc100K" a data mix, not a claim
    d3 = hf_dir(work, "Smollm2 135M 8k Lc100K Mix1", model, config={"max_position_embeddings": 8192})
    _, err = logits(d3, toks, model.hp["vocab"], work)
    check("rope_scaling" not in err, f"a warning for a name whose 100K is not a word of its own: {err!r}")
    print("  missing rope_scaling: warned with the fix (--rope-scale 128); quiet after the override, with scaling, "
          "or for 'Lc100K'")


# --- checkpoints written by transformers itself -------------------------------------------------

# transformers 5 writes config.json with "rope_parameters" (rope_theta and rope_type inside) and
# no top-level rope_theta / rope_scaling; the configs below are LlamaConfig(...).save_pretrained,
# the weights LlamaForCausalLM(config).save_pretrained, and the reference is transformers' own
# forward pass (PyTorch, pinned in tests/requirements.txt). Every sequence is longer than the
# original context (32), so every scaling is in force.
HF_CTX, HF_N = 32, 96
HF_LONG, HF_SHORT = np.linspace(1.0, 6.0, 8).tolist(), np.linspace(1.0, 1.5, 8).tolist()
HF_CASES = [  # name, max_position_embeddings, rope_parameters, tied
    ("default-abf-1e5", HF_CTX, {"rope_type": "default", "rope_theta": 1e5}, False),
    ("linear-4", 4 * HF_CTX, {"rope_type": "linear", "rope_theta": 1e5, "factor": 4.0}, True),
    ("dynamic-4", HF_CTX, {"rope_type": "dynamic", "rope_theta": 1e5, "factor": 4.0}, False),
    ("yarn-4", 4 * HF_CTX, {"rope_type": "yarn", "rope_theta": 1e5, "factor": 4.0, "beta_fast": 16.0, "beta_slow": 2.0,
                            "original_max_position_embeddings": HF_CTX}, False),
    ("yarn-8-mscale", 8 * HF_CTX, {"rope_type": "yarn", "rope_theta": 1e5, "factor": 8.0, "mscale": 1.0,
                                   "mscale_all_dim": 0.5, "original_max_position_embeddings": HF_CTX}, True),
    ("llama3-8", 8 * HF_CTX, {"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 2 * HF_CTX}, False),
    ("longrope", 4 * HF_CTX, {"rope_type": "longrope", "rope_theta": 1e5, "long_factor": HF_LONG,
                              "short_factor": HF_SHORT, "original_max_position_embeddings": HF_CTX}, False),
]


def torch_llama(d, ctx, rope_parameters, tied, seed, init=0.1):
    """A tiny LlamaForCausalLM saved by transformers (config.json, model.safetensors), with the
    fixtures' tokenizer beside it; returns the model (eval mode) for the reference forward."""
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    shutil.rmtree(d, ignore_errors=True)
    cfg = LlamaConfig(vocab_size=len(tiny_vocab()[0]), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=ctx, rms_norm_eps=1e-5,
                      rope_parameters=dict(rope_parameters), tie_word_embeddings=tied, initializer_range=init,
                      bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(str(d))
    (d / "tokenizer.json").unlink(missing_ok=True)
    hf_tokenizer(*tiny_vocab(), "smollm").save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False, "bos_token": "<|im_start|>",
                                                         "eos_token": "<|im_end|>"}))
    return model


def torch_logits(model, toks):
    import torch
    with torch.no_grad():
        return model(torch.tensor([toks])).logits[0].double().numpy()


def token_ll(logits, toks):
    """Per-token log-likelihood: log p(toks[i + 1] | toks[..i]) in float64."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    lp = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    return lp[np.arange(len(toks) - 1), toks[1:]]


def old_layout(cfg, key="type"):
    """A transformers 5 config.json in the layout earlier versions wrote: rope_theta at the top,
    rope_scaling (with "type" or "rope_type") or null."""
    cfg = dict(cfg)
    rp = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rp.pop("rope_theta")
    t = rp.pop("rope_type")
    cfg["rope_scaling"] = None if t == "default" else {key: t, **rp}
    return cfg


def check_transformers_checkpoints(work):
    from transformers import LlamaForCausalLM
    print(f"checkpoints saved by transformers {__import__('transformers').__version__} (rope_parameters), "
          f"per-token log-likelihood vs its forward over {HF_N} tokens (original context {HF_CTX}):")
    nv = len(tiny_vocab()[0])
    for i, (name, ctx, rp, tied) in enumerate(HF_CASES):
        d = work / f"tf-{name}"
        model = torch_llama(d, ctx, rp, tied, seed=100 + i)
        cfg = json.loads((d / "config.json").read_text())
        check("rope_theta" not in cfg and "rope_scaling" not in cfg and cfg["rope_parameters"]["rope_type"] ==
              rp["rope_type"], f"{name}: transformers wrote an unexpected layout: {cfg}")
        toks = np.random.default_rng(i).integers(0, nv, size=HF_N).tolist()
        ref = token_ll(torch_logits(model, toks), toks)
        ours_logits, _ = logits(d, toks, nv, work, "--ubatch", 7, "--decode-from", HF_N - 8)
        ours = token_ll(ours_logits, toks)
        e = float(np.abs(ours - ref).max())
        # what a reader of the top-level keys alone got: base 10000, no scaling
        bug = token_ll(logits(d, toks, nv, work, "--rope-scaling", "none", "--rope-freq-base", 10000)[0], toks)
        eb = float(np.abs(bug - ref).max())
        check(e < 1e-4, f"{name}: per-token log-likelihood differs from transformers' by up to {e:.2e} nats "
                        f"(base 10000 without scaling would be off by {eb:.2e})")
        check(eb > 1e3 * 1e-4, f"{name}: the test cannot tell the layouts apart ({eb:.2e})")
        # the same checkpoint in the older layout: transformers reads it to the same model, and so do we
        for key in ("type", "rope_type"):
            od = work / f"tf-{name}-old-{key}"
            shutil.rmtree(od, ignore_errors=True)
            shutil.copytree(d, od)
            (od / "config.json").write_text(json.dumps(old_layout(cfg, key)))
            old = LlamaForCausalLM.from_pretrained(str(od)).eval()
            check(np.array_equal(torch_logits(old, toks), torch_logits(model, toks)),
                  f"{name}: transformers reads the old layout ({key}) differently")
            b, _ = logits(od, toks, nv, work, "--ubatch", 7, "--decode-from", HF_N - 8)
            check(np.array_equal(b, ours_logits), f"{name}: the old layout ({key}) gives other logits")
        ppl = lambda ll: float(np.exp(-ll.mean()))
        print(f"  {name:16s} max |dLL| {e:.1e} nats; ppl {ppl(ours):.4f} (transformers {ppl(ref):.4f}, "
              f"base 10000 unscaled {ppl(bug):+.2%} off, max |dLL| {eb:.2f}); old layout identical"
              .replace(f"{ppl(bug):+.2%}", f"{ppl(bug) / ppl(ref) - 1:+.2%}"))
    check_both_layouts(work)
    check_rope_defaults(work)


def check_rope_defaults(work):
    """Values a config leaves out, taken as transformers 5 takes them: the reference is
    transformers' forward on the very directory (from_pretrained)."""
    from transformers import LlamaForCausalLM
    nv = len(tiny_vocab()[0])
    edits = [("llama3 without original_max_position_embeddings", 5,
              lambda c: c["rope_scaling"].pop("original_max_position_embeddings")),  # = max_position_embeddings
             ("yarn with beta_fast 0, beta_slow null", 3,
              lambda c: c["rope_scaling"].update(beta_fast=0, beta_slow=None))]  # `or 32`, `or 1`
    for tag, i, edit in edits:
        name = HF_CASES[i][0]
        d = work / f"tf-defaults-{i}"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(work / f"tf-{name}", d)
        cfg = old_layout(json.loads((d / "config.json").read_text()))
        edit(cfg)
        (d / "config.json").write_text(json.dumps(cfg))
        toks = np.random.default_rng(i).integers(0, nv, size=HF_N).tolist()
        ref = token_ll(torch_logits(LlamaForCausalLM.from_pretrained(str(d)).eval(), toks), toks)
        e = float(np.abs(token_ll(logits(d, toks, nv, work)[0], toks) - ref).max())
        check(e < 1e-4, f"{tag}: per-token log-likelihood differs from transformers' by up to {e:.2e} nats")
        print(f"  {tag}: as transformers reads it (max |dLL| {e:.1e})")


def check_both_layouts(work):
    """rope_parameters next to rope_theta / rope_scaling: read when they agree, refused (naming
    both keys) when they do not."""
    name, ctx, rp, tied = HF_CASES[3]  # yarn-4
    d = work / f"tf-{name}"
    nv = len(tiny_vocab()[0])
    toks = np.random.default_rng(3).integers(0, nv, size=HF_N).tolist()
    want, _ = logits(d, toks, nv, work)
    cfg = json.loads((d / "config.json").read_text())

    def variant(tag, edit):
        v = work / f"tf-both-{tag}"
        shutil.rmtree(v, ignore_errors=True)
        shutil.copytree(d, v)
        c = json.loads(json.dumps(cfg))
        edit(c)
        (v / "config.json").write_text(json.dumps(c))
        return v

    def both(c):
        old = old_layout(c)
        c["rope_theta"], c["rope_scaling"] = old["rope_theta"], old["rope_scaling"]
    v = variant("agree", both)
    got, _ = logits(v, toks, nv, work)
    check(np.array_equal(got, want), "rope_parameters with an agreeing rope_scaling gives other logits")
    bad = [("theta", lambda c: (both(c), c.update(rope_theta=10000)),
            "rope_theta = 10000 but rope_parameters.rope_theta = 100000"),
           ("factor", lambda c: (both(c), c["rope_scaling"].update(factor=2)),
            "rope_scaling.factor = 2 but rope_parameters.factor = 4"),
           ("type", lambda c: (both(c), c["rope_scaling"].update(type="linear")),
            "rope_scaling.type = \"linear\" but rope_parameters.rope_type = \"yarn\""),
           ("extra", lambda c: (both(c), c["rope_scaling"].update(attention_factor=1.5)),
            "rope_scaling.attention_factor = 1.5 but rope_parameters.attention_factor = absent"),
           ("orig", lambda c: c.update(original_max_position_embeddings=64),
            "original_max_position_embeddings = 64 but rope_parameters.original_max_position_embeddings = 32")]
    for tag, edit, needle in bad:
        p = logits(variant(tag, edit), toks, nv, work, expect_ok=False)
        check(p.returncode != 0 and needle in p.stderr, f"layouts disagreeing on {tag}: expected {needle!r}, "
                                                        f"got {p.stderr!r}")
    print("  rope_parameters next to agreeing rope_theta + rope_scaling: identical logits; disagreeing "
          f"({', '.join(t for t, _, _ in bad)}): refused, naming both keys")


def check_transformers_generation(work):
    """Dynamic NTK and LongRoPE depend on the length. longseq fixes a sequence's frequencies from
    its capacity (generate: prompt + -n), for the prompt and every new token; transformers
    recomputes them from the current length at each call, leaving cached keys as they were
    rotated (docs/howto-longlora.md, "Dynamic NTK and LongRoPE during generation"). Expected:
    - greedy `longseq generate` across the original context = the argmax of transformers' one
      forward pass over prompt + output (its length is the capacity, so the same frequencies);
    - transformers' own generate() departs from that once the sequence crosses the context;
    - when prompt + -n stays within the context, both are the unscaled model and agree."""
    import torch
    print("generation across the original context (dynamic NTK, LongRoPE; greedy, prompt < context < "
          "prompt + -n):")
    prompt_txt = work / "gen-prompt.txt"
    prompt_txt.write_text("".join(np.random.default_rng(5).choice(list("abcdefgh ijklmnop"), size=22)))
    for name, ctx, rp, tied in (HF_CASES[2], HF_CASES[6]):
        d = work / f"tf-gen-{name}"
        model = torch_llama(d, ctx, rp, tied, seed=7)
        prompt = [int(x) for x in run(["tokenize", "--model", str(d), str(prompt_txt)]).stdout.split()]
        P = len(prompt)
        check(P < HF_CTX, f"the prompt ({P} tokens) must fit the original context {HF_CTX}")

        def ours(n):
            r = json.loads(run(["generate", "--model", str(d), "--prompt-file", str(prompt_txt), "--temp", "0", "-n",
                                str(n), "--ignore-eos", "--json"]).stdout)
            check(r["prompt_tokens"] == P and len(r["ids"]) == n, f"{name}: generate -n {n}: {r}")
            return r["ids"]

        def theirs(n):
            with torch.no_grad():
                out = model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
            return out[0].tolist()[P:]
        n = 40
        gen = ours(n)
        one = torch_logits(model, prompt + gen)[P - 1:P - 1 + n]  # one pass over all P + n tokens
        gap = one.max(axis=1) - one[np.arange(n), gen]  # 0 where ours is transformers' argmax
        check(gap.max() < 1e-4, f"{name}: token {int(gap.argmax())} of greedy generate is not the argmax of "
                                f"transformers' forward over prompt + output (logit gap {gap.max():.2e})")
        hf = theirs(n)
        first = next((i for i in range(n) if hf[i] != gen[i]), None)
        check(first is not None, f"{name}: transformers' generate() no longer departs from its one-pass forward "
                                 "across the context; docs/howto-longlora.md says it does")
        short = HF_CTX - P  # prompt + -n = the context: no scaling on either side
        check(ours(short) == theirs(short), f"{name}: generate -n {short} within the context differs from "
                                            "transformers' generate()")
        print(f"  {name:10s} prompt {P}, -n {n}: {n} of {n} tokens are transformers' one-pass argmax; its generate() "
              f"departs from new token {first + 1} (position {P + first}); -n {short} (within the context): identical "
              f"to its generate()")


# --- adapters ------------------------------------------------------------------------------------

def lora_factors(model, rng, r, modules=("q", "k", "v", "o")):
    """{layer, module: (A [r, in], B [out, r])} in HF layout."""
    hp, out = model.hp, {}
    hd = hp["head_dim"]
    dims = {"q": (hp["embd"], hp["heads"] * hd), "k": (hp["embd"], hp["kv_heads"] * hd),
            "v": (hp["embd"], hp["kv_heads"] * hd), "o": (hp["heads"] * hd, hp["embd"])}
    for il in range(hp["layers"]):
        for m in modules:
            i, o = dims[m]
            out[il, m] = (rng.normal(0, 0.2, (r, i)).astype(np.float32), rng.normal(0, 0.2, (o, r)).astype(np.float32))
    return out


GG = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output"}
HF = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj"}


def merged(model, factors, s):
    """A copy of the model with W + s * B @ A (q/k deltas permuted into GGUF rows)."""
    import copy
    m = copy.deepcopy(model)
    for (il, mod), (A, B) in factors.items():
        delta = (B.astype(np.float64) @ A.astype(np.float64))
        if mod == "q":
            delta = permute(delta, m.hp["heads"])
        elif mod == "k":
            delta = permute(delta, m.hp["kv_heads"])
        key = f"blk.{il}.{GG[mod]}.weight"
        m.weights[key] = (m.weights[key].astype(np.float64) + s * delta).astype(np.float32)
    return m


def peft_dir(work, name, factors, r, alpha, extra=None, config=None):
    d = work / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
           "bias": "none", "fan_in_fan_out": False, "lora_dropout": 0.05, "task_type": "CAUSAL_LM"}
    cfg.update(config or {})
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    t = {}
    for (il, mod), (A, B) in factors.items():
        p = f"base_model.model.model.layers.{il}.{HF[mod]}"
        t[p + ".lora_A.weight"], t[p + ".lora_B.weight"] = A, B
    save_file(t, str(d / "adapter_model.safetensors"))
    if extra:
        save_file(extra, str(d / "trainable_params.safetensors"))
    return d


def gguf_adapter(path, factors, alpha, heads, kv_heads):
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(alpha))
    for (il, mod), (A, B) in sorted(factors.items()):
        if mod in ("q", "k"):
            B = permute(B, heads if mod == "q" else kv_heads)
        base = f"blk.{il}.{GG[mod]}.weight"
        w.add_tensor(base + ".lora_a", np.ascontiguousarray(A))
        w.add_tensor(base + ".lora_b", np.ascontiguousarray(B))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def compare_lora(name, work, path, model_ref, toks, vocab, *args):
    ours, _ = logits(path, toks, vocab, work, *args)
    e = rel_err(ours, forward(model_ref, toks))
    check(e < 1e-4, f"{name}: logits differ from the merged numpy reference by {e:.2e}")
    print(f"  {name:40s} vs numpy {e:.1e}")
    return ours


def check_lora(work):
    print("LoRA adapters (embedding 96, heads 4/2, rank 4, alpha 8):")
    gg = work / "lora-base.gguf"
    model = write_tiny_llama(str(gg), embd=96, heads=4, kv_heads=2, ff=128, tied=False, seed=3)
    base = hf_dir(work, "lora-base", model)
    rng = np.random.default_rng(11)
    r, alpha = 4, 8
    f = lora_factors(model, rng, r)
    ad = peft_dir(work, "peft", f, r, alpha)
    toks = tokens_for(model, 2)
    nv = model.hp["vocab"]
    a = compare_lora("PEFT on the HF checkpoint", work, base, merged(model, f, alpha / r), toks, nv, "--lora", ad)
    b = compare_lora("PEFT on the GGUF", work, gg, merged(model, f, alpha / r), toks, nv, "--lora", ad)
    check(np.allclose(a, b, rtol=0, atol=1e-5), "PEFT merged into HF and GGUF bases differ")
    compare_lora("PEFT, the .safetensors file named", work, base, merged(model, f, alpha / r), toks, nv,
                 "--lora", ad / "adapter_model.safetensors")
    compare_lora("PEFT --lora-scale 0.5", work, base, merged(model, f, 0.5 * alpha / r), toks, nv,
                 "--lora", ad, "--lora-scale", 0.5)
    ad_rs = peft_dir(work, "peft-rslora", f, r, alpha, config={"use_rslora": True})
    compare_lora("rsLoRA (alpha / sqrt(r))", work, base, merged(model, f, alpha / np.sqrt(r)), toks, nv, "--lora", ad_rs)
    gl = work / "adapter.gguf"
    gguf_adapter(gl, f, alpha, model.hp["heads"], model.hp["kv_heads"])
    compare_lora("llama.cpp GGUF adapter on the GGUF", work, gg, merged(model, f, alpha / r), toks, nv, "--lora", gl)
    f2 = lora_factors(model, np.random.default_rng(12), 2, modules=("v",))
    ad2 = peft_dir(work, "peft2", f2, 2, 2)
    both = merged(merged(model, f, alpha / r), f2, 1.0)
    compare_lora("two adapters in a row", work, base, both, toks, nv, "--lora", ad, "--lora", ad2)
    check_lora_plus(work, model, base, f, r, alpha)
    check_lora_embedding(work, model, base)


def check_lora_plus(work, model, base, f, r, alpha):
    """LongLoRA's LoRA+: trained embeddings (one row more: [PAD]) and norms, plus LoRA on q/k/v/o."""
    import copy
    rng = np.random.default_rng(21)
    hp, nv = model.hp, model.hp["vocab"]
    ref = merged(model, f, alpha / r)
    extra = {"model.embed_tokens.weight": rng.normal(0, 0.5, (nv + 1, hp["embd"])).astype(np.float32),
             "model.norm.weight": (1 + rng.normal(0, 0.1, hp["embd"])).astype(np.float32)}
    for il in range(hp["layers"]):
        for hfn in ("input_layernorm", "post_attention_layernorm"):
            extra[f"model.layers.{il}.{hfn}.weight"] = (1 + rng.normal(0, 0.1, hp["embd"])).astype(np.float32)
    ref = copy.deepcopy(ref)
    ref.weights["token_embd.weight"] = extra["model.embed_tokens.weight"]
    ref.weights["output_norm.weight"] = extra["model.norm.weight"]
    for il in range(hp["layers"]):
        ref.weights[f"blk.{il}.attn_norm.weight"] = extra[f"model.layers.{il}.input_layernorm.weight"]
        ref.weights[f"blk.{il}.ffn_norm.weight"] = extra[f"model.layers.{il}.post_attention_layernorm.weight"]
    out = ref.weights["output.weight"]
    ref.weights["output.weight"] = np.vstack([out, out.astype(np.float64).mean(axis=0, keepdims=True)]).astype(np.float32)
    ref.hp = dict(ref.hp, vocab=nv + 1)
    ad = peft_dir(work, "lora-plus", f, r, alpha, extra=extra)
    toks = tokens_for(model, 4, nv + 1)
    toks[5] = nv  # the new [PAD] row
    a = compare_lora("LoRA+ (embedding 32001-style growth, norms)", work, base, ref, toks, nv + 1, "--lora", ad)
    # The same adapter as LongLoRA ships it (PyTorch pickles), through the documented converter.
    pt = work / "lora-plus-pt"
    shutil.rmtree(pt, ignore_errors=True)
    pt.mkdir()
    shutil.copy(ad / "adapter_config.json", pt)
    t = {}
    for (il, mod), (A, B) in f.items():
        p = f"base_model.model.model.layers.{il}.{HF[mod]}"
        t[p + ".lora_A.weight"], t[p + ".lora_B.weight"] = A, B
    torch_zip(pt / "adapter_model.bin", t)
    torch_zip(pt / "trainable_params.bin", extra)
    p = subprocess.run([sys.executable, str(REPO / "tools" / "longlora_to_safetensors.py"), str(pt)],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"longlora_to_safetensors.py failed: {p.stderr}")
    b, _ = logits(base, toks, nv + 1, work, "--lora", pt)
    check(np.array_equal(a, b), "the converted .bin adapter differs from the safetensors one")
    print("  LoRA+ from PyTorch .bin files via tools/longlora_to_safetensors.py: identical logits")
    txt = work / "pad.txt"
    txt.write_text("the[PAD]")
    ids = [int(x) for x in run(["tokenize", "--model", str(base), "--lora", str(ad), "--raw", "--parse-special",
                                str(txt)]).stdout.split()]
    check(ids[-1] == nv, f"tokenize --lora: '[PAD]' is not the new id {nv}: {ids}")
    back = run(["detokenize", "--model", str(base), "--lora", str(ad), "--special"], input=f"{nv}".encode()).stdout
    check(back == b"[PAD]", f"detokenize --lora: {back!r}")
    print("  LoRA+: vocabulary grown to", nv + 1, "([PAD] appended; output row = mean of the others; "
          "tokenize/detokenize --lora see it)")


def torch_zip(path, state):
    """A PyTorch zip checkpoint laid out as torch.save writes it (archive/data.pkl with
    persistent storage ids, archive/data/<key>), written without PyTorch: stand-in classes
    named torch.FloatStorage and torch._utils._rebuild_tensor_v2 exist only while pickling."""
    import io
    import pickle
    import types
    import zipfile
    from collections import OrderedDict
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    storage = type("FloatStorage", (), {"__module__": "torch"})

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, torch._utils, utils._rebuild_tensor_v2 = storage, utils, _rebuild_tensor_v2

    class Storage:
        def __init__(self, key, n):
            self.key, self.n = key, n

    class Tensor:
        def __init__(self, s, shape):
            self.s, self.shape = s, shape

        def __reduce__(self):
            strides = tuple(int(np.prod(self.shape[i + 1:])) for i in range(len(self.shape)))
            return _rebuild_tensor_v2, (self.s, 0, tuple(self.shape), strides, False, OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", storage, obj.key, "cpu", obj.n) if isinstance(obj, Storage) else None

    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        buf, blobs, d = io.BytesIO(), {}, OrderedDict()
        for i, (name, w) in enumerate(state.items()):
            blobs[str(i)] = np.ascontiguousarray(w, dtype=np.float32).tobytes()
            d[name] = Tensor(Storage(str(i), w.size), w.shape)
        Pickler(buf, protocol=2).dump(d)
    finally:
        del sys.modules["torch"], sys.modules["torch._utils"]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/version", "3\n")
        for k, b in blobs.items():
            z.writestr(f"archive/data/{k}", b)


def check_lora_embedding(work, model, base):
    """PEFT lora_embedding_A [r, vocab] / lora_embedding_B [dim, r] on embed_tokens."""
    import copy
    rng = np.random.default_rng(31)
    hp, nv, r = model.hp, model.hp["vocab"], 3
    A = rng.normal(0, 0.3, (r, nv)).astype(np.float32)
    B = rng.normal(0, 0.3, (hp["embd"], r)).astype(np.float32)
    d = work / "peft-emb"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": 6,
                                                       "target_modules": ["embed_tokens"]}))
    save_file({"base_model.model.model.embed_tokens.lora_embedding_A": A,
               "base_model.model.model.embed_tokens.lora_embedding_B": B}, str(d / "adapter_model.safetensors"))
    ref = copy.deepcopy(model)
    ref.weights["token_embd.weight"] = (ref.weights["token_embd.weight"] + 2.0 * (A.T @ B.T)).astype(np.float32)
    compare_lora("PEFT lora_embedding on embed_tokens", work, base, ref, tokens_for(model, 6), nv, "--lora", d)


# --- tokenizers ----------------------------------------------------------------------------------

def tokenizer_dir(work, name, n_vocab, write):
    """A minimal checkpoint (tiny random weights) around a tokenizer, for `longseq tokenize`."""
    d = work / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    embd, ff = 32, 32
    cfg = {"model_type": "llama", "hidden_size": embd, "num_hidden_layers": 1, "intermediate_size": ff,
           "num_attention_heads": 2, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
           "tie_word_embeddings": True, "vocab_size": n_vocab}
    (d / "config.json").write_text(json.dumps(cfg))
    z = lambda *s: np.zeros(s, dtype=np.float16)
    t = {"model.embed_tokens.weight": z(n_vocab, embd), "model.norm.weight": z(embd)}
    for n, s in (("input_layernorm", (embd,)), ("post_attention_layernorm", (embd,)),
                 ("self_attn.q_proj", (embd, embd)), ("self_attn.k_proj", (embd, embd)),
                 ("self_attn.v_proj", (embd, embd)), ("self_attn.o_proj", (embd, embd)),
                 ("mlp.gate_proj", (ff, embd)), ("mlp.up_proj", (ff, embd)), ("mlp.down_proj", (embd, ff))):
        t[f"model.layers.0.{n}.weight"] = z(*s)
    save_file(t, str(d / "model.safetensors"))
    write(d)
    return d


def our_ids(d, path, *flags):
    return [int(x) for x in run(["tokenize", "--model", str(d), *flags, str(path)]).stdout.split()]


def compare_ids(name, ours, ref):
    if ours != ref:
        n = min(len(ours), len(ref))
        k = next((i for i in range(n) if ours[i] != ref[i]), n)
        check(False, f"{name}: {len(ours)} ids vs transformers' {len(ref)}; first difference at {k}: "
                     f"ours {ours[k:k + 6]} transformers {ref[k:k + 6]}")


def check_tokenizers(work):
    from transformers import PreTrainedTokenizerFast
    print("tokenizers (against transformers):")
    files = corpus_files(work)
    texts = [p for p in files if p.stat().st_size < 3_000_000]  # all but the KJV
    tokens, types, merges = vocab_of(need_file(MODEL, "the default model"))
    template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    for pre in ("smollm", "gpt-2", "llama-bpe", "qwen2"):
        tk = hf_tokenizer(tokens, types, merges, pre)
        if pre == "llama-bpe":  # Llama 3 adds BOS through its post-processor
            tk.post_processor = processors.TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", 1)])

        def write(d, tk=tk):
            tk.save(str(d / "tokenizer.json"))
            (d / "tokenizer_config.json").write_text(json.dumps(
                {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template}))
        d = tokenizer_dir(work, f"tok-{pre}", len(tokens), write)
        hf = PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
        n = 0
        for p in texts:
            text = p.read_bytes().decode("utf-8")
            ref = hf(text, add_special_tokens=False)["input_ids"]
            compare_ids(f"{pre} {p.name}", our_ids(d, p, "--raw", "--parse-special"), ref)
            n += len(ref)
        ref = hf(texts[0].read_text(), add_special_tokens=True)["input_ids"]
        compare_ids(f"{pre} with special tokens", our_ids(d, texts[0]), ref)
        print(f"  tokenizer.json {pre:10s} {len(texts)} files, {n} tokens identical")
    check_spm_model(work, files, texts)


def check_spm_model(work, files, texts):
    from transformers import LlamaTokenizer
    train = work / "spm_train.txt"
    train.write_bytes(b"".join(p.read_bytes()[:200_000] for p in files))
    prefix = str(work / "spm")
    spm.SentencePieceTrainer.train(input=str(train), model_prefix=prefix, vocab_size=4000, model_type="bpe",
                                   byte_fallback=True, character_coverage=0.995, normalization_rule_name="identity",
                                   remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=True,
                                   num_threads=2, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")

    def write(d):
        shutil.copy(prefix + ".model", d / "tokenizer.model")
        (d / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "add_eos_token": False}))
    d = tokenizer_dir(work, "tok-spm", sp.get_piece_size(), write)
    hf = LlamaTokenizer.from_pretrained(str(d), legacy=False)  # converted from tokenizer.model
    n, differ = 0, []
    for p in texts:
        text = p.read_bytes().decode("utf-8")
        if "\u2581" in text:
            continue  # SentencePiece cannot tell a literal U+2581 from an escaped space
        ours = our_ids(d, p)
        compare_ids(f"spm {p.name} (sentencepiece)", ours, [sp.bos_id()] + sp.encode(text))
        # literal "<s>" stays text, as SentencePiece and llama.cpp keep it (transformers' legacy
        # flags change how it treats spaces around parsed special tokens)
        ref = hf(text, add_special_tokens=True, split_special_tokens=True)["input_ids"]
        if ours != ref and not text.strip() and ref != [sp.bos_id()] + sp.encode(text):
            differ.append(p.name)  # transformers' Metaspace departs from SentencePiece on blank texts
            continue
        compare_ids(f"spm {p.name}", ours, ref)
        n += len(ref)
    print(f"  tokenizer.model (SentencePiece BPE, byte fallback): {n} tokens identical to transformers "
          f"(literal <s> kept as text), BOS included; every file identical to sentencepiece "
          f"(transformers departs from it on the blank texts {differ or 'none'})")


# --- hostile input -------------------------------------------------------------------------------

def check_errors(work):
    print("hostile checkpoints and adapters:")
    gg = work / "err.gguf"
    model = write_tiny_llama(str(gg), embd=64, heads=4, kv_heads=2, ff=128)
    toks = tokens_for(model)
    nv = model.hp["vocab"]

    def expect(name, path, needle, *args):
        p = logits(path, toks, nv, work, *args, expect_ok=False)
        check(p.returncode != 0 and needle in p.stderr, f"{name}: expected an error with {needle!r}, got {p.stderr!r}")
        check("Sanitizer" not in p.stderr, f"{name}: a sanitizer report on the error path:\n{p.stderr}")
        print(f"  {name:36s} -> ...{needle}...")

    d = hf_dir(work, "e-json", model)
    (d / "config.json").write_text('{"model_type": "llama", "hidden_size": 64,')
    expect("truncated config.json", d, "invalid JSON at line 1")
    d = hf_dir(work, "e-arch", model, config={"model_type": "gemma3"})
    expect("model_type gemma3", d, "model_type \"gemma3\" is not supported (supported: llama, mistral, qwen2, phi3)")
    d = hf_dir(work, "e-heads", model, config={"num_attention_heads": 5})
    expect("heads not dividing hidden_size", d, "does not divide hidden_size")
    d = hf_dir(work, "e-rope", model, rope_scaling={"rope_type": "turbo", "factor": 2})
    expect("unknown rope_scaling type", d, "rope_scaling type \"turbo\" is not supported")
    # transformers 5's rope_parameters (config.json otherwise as hf_dir writes it, minus the old keys)
    for tag, rp, needle in [
            ("unknown rope_type", {"rope_type": "turbo", "rope_theta": 1e4, "factor": 2},
             "rope_parameters type \"turbo\" is not supported"),
            ("rope_type proportional", {"rope_type": "proportional", "rope_theta": 1e4, "partial_rotary_factor": 0.5},
             "rope_parameters type \"proportional\" is not supported"),
            ("rope_parameters per layer type", {"full_attention": {"rope_type": "default", "rope_theta": 1e4}},
             "rope_parameters.full_attention: RoPE parameters per layer type are not supported"),
            ("a factor without rope_type", {"rope_theta": 1e4, "factor": 4.0},
             "rope_parameters has \"factor\" but no \"rope_type\""),
            ("partial_rotary_factor 0.5", {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0,
                                           "partial_rotary_factor": 0.5},
             "partial_rotary_factor = 0.5: longseq rotates the whole head"),
            ("yarn truncate false", {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0, "truncate": False,
                                     "original_max_position_embeddings": 64},
             "rope_parameters.truncate = false (an unrounded YaRN ramp) is not supported"),
            ("rope_parameters not an object", [1e4], "rope_parameters must be an object or null"),
            ("rope_theta below 1", {"rope_type": "default", "rope_theta": 0.5},
             "rope_parameters.rope_theta = 0.5 must be greater than 1")]:
        d = hf_dir(work, "e-rp", model, config={"rope_parameters": rp, "rope_theta": None})
        expect(tag, d, needle)
    d = hf_dir(work, "e-notok", model)
    (d / "tokenizer.json").unlink()
    expect("no tokenizer", d, "has no tokenizer.model or tokenizer.json")
    w = hf_weights(model)
    w["model.layers.0.self_attn.q_proj.weight"] = w["model.layers.0.self_attn.q_proj.weight"][:-16]
    d = hf_dir(work, "e-shape", model, tensors=w)
    expect("q_proj with missing rows", d, "model.layers.0.self_attn.q_proj.weight' has 48 rows")
    w = hf_weights(model)
    w["model.layers.1.mlp.up_proj.weight"] = w["model.layers.1.mlp.up_proj.weight"].astype(np.int32)
    d = hf_dir(work, "e-dtype", model, tensors=w)
    expect("I32 weights", d, "longseq loads F32, F16 and BF16 checkpoints")
    d = hf_dir(work, "e-nohead", model, config={"tie_word_embeddings": False})
    expect("untied without lm_head", d, "has no lm_head.weight")
    d = hf_dir(work, "e-tok", model)
    (d / "tokenizer.json").write_text('{"model": {"type": "WordPiece", "vocab": {}}}')
    expect("WordPiece tokenizer", d, "model type \"WordPiece\" is not supported")

    base = hf_dir(work, "e-base", model)
    f = lora_factors(model, np.random.default_rng(1), 4)
    ad = peft_dir(work, "e-dora", f, 4, 8, config={"use_dora": True})
    expect("DoRA adapter", base, "DoRA adapters (use_dora) are not supported", "--lora", ad)
    bad = dict(f)
    A, B = bad[0, "q"]
    bad[0, "q"] = (A, B[:, :3])
    ad = peft_dir(work, "e-chain", bad, 4, 8)
    expect("lora_A/lora_B ranks differ", base, "lora_A and lora_B shapes do not chain", "--lora", ad)
    bad = dict(f)
    A, B = bad[1, "v"]
    bad[1, "v"] = (A[:, :32], B)
    ad = peft_dir(work, "e-delta", bad, 4, 8)
    expect("delta of the wrong shape", base, "the adapter's delta for 'blk.1.attn_v.weight'", "--lora", ad)
    ad = peft_dir(work, "e-bin", f, 4, 8)
    (ad / "adapter_model.safetensors").rename(ad / "adapter_model.bin")
    expect("pickle adapter", base, "tools/longlora_to_safetensors.py", "--lora", ad)
    expect("a model as an adapter", base, "is not a LoRA adapter", "--lora", gg)
    ad = peft_dir(work, "e-extra", f, 4, 8, extra={"model.norm.weight": np.ones(32, np.float32)})
    expect("LoRA+ norm of the wrong size", base, "adapter tensor 'model.norm.weight' has shape", "--lora", ad)
    check_rope_errors(work, gg, model, expect)


def check_rope_errors(work, gg, model, expect):
    """RoPE settings that would give NaN logits are refused wherever they come from."""
    kw = dict(embd=64, heads=4, kv_heads=2, ff=128)
    # (config.json's 0 means transformers' default, `beta_fast or 32`: a negative beta is the bad one there)
    d = hf_dir(work, "e-yarn-neg", model, rope_scaling={"rope_type": "yarn", "factor": 4.0, "beta_fast": -1, "beta_slow": -1})
    expect("YaRN betas -1 in config.json", d, "YaRN beta_fast = -1 must be a finite positive number")
    g = work / "e-yarn0.gguf"
    write_tiny_llama(str(g), **kw, rope_scaling="yarn", rope_factor=4.0, yarn_betas=(0.0, 0.0))
    expect("YaRN betas 0 in GGUF keys", g, "YaRN beta_fast = 0 must be a finite positive number")
    expect("YaRN beta_slow 0 on the command line", gg, "YaRN beta_slow = 0 must be a finite positive number",
           "--rope-scaling", "yarn", "--rope-scale", 4, "--yarn-beta-slow", 0)
    g = work / "e-freqs0.gguf"
    write_tiny_llama(str(g), **kw, rope_freqs=np.zeros(8))
    expect("all-zero rope_freqs tensor", g, "rope_freqs.weight[0] = 0 must be a finite positive number")
    g = work / "e-longrope0.gguf"
    write_tiny_llama(str(g), **kw, rope_scaling="longrope", rope_factor=4.0, rope_factors=(np.zeros(8), np.ones(8)))
    expect("all-zero rope_factors_long tensor", g, "rope_factors_long.weight[0] = 0")


def main():
    """--loader-only: checkpoints, adapters and errors, not the tokenizer comparisons (the
    sanitizer build runs these)."""
    work = tmpdir()
    check_checkpoints(work)
    check_rope_configs(work)
    check_rope_warning(work)
    check_transformers_checkpoints(work)
    if "--loader-only" not in sys.argv:
        check_transformers_generation(work)
    check_lora(work)
    if "--loader-only" not in sys.argv:
        check_tokenizers(work)
    check_errors(work)
    done("test_hf")


if __name__ == "__main__":
    main()
