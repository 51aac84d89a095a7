#!/usr/bin/env python3
"""Architectures with llama's layout (issue #22): Mistral (a sliding window on every layer),
Qwen2 (q/k/v biases, HF's rotate-half q/k order kept as llama.cpp keeps it, YaRN, a sliding
window on the layers from max_window_layers on: window layers next to a global one) and Phi-3
(fused qkv and gate/up weights, LongRoPE long/short factors, a sliding window).

Each tiny random model is written by transformers' own save_pretrained (the pinned version in
tests/requirements.txt) and, from the same weights, as GGUF by gguf-py (the keys and tensor
names llama.cpp uses, plus attention.sliding_window and attention.sliding_window_pattern). On a
sequence longer than the window (and, for Qwen2, past its original context with YaRN):
- the HF directory's logits follow transformers' forward (per-token log-likelihood within 1e-4
  nats; the same without the window would be far off, so the window is what is tested);
- the GGUF's logits equal the directory's;
- `inspect` shows each layer's rule;
- a worker group of 2 and 3 ranks (mpirun) gives the logits of one process, for the per-layer
  rules under --attn full (zigzag ring with window layers) and --attn window (shards and needs
  covering both rules), and the bytes --stats reports per layer equal those the rules need;
- `longseq plan` (the capacity planner) predicts those bytes, and counts each layer's keys by
  its own rule;
- streaming (which evicts keys by one window for every layer) is refused, saying why.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import gguf
import numpy as np

from fixtures import tiny_vocab
from lsoracle import BIN, BUILD, check, done, run, tmpdir
from test_sp import expected_bytes, parse_stats
from test_tokenizer import hf_tokenizer

N = 40        # tokens: 5 windows of 8, 2.5 original contexts of 16
WINDOW = 8    # HF sliding_window: the keys a query sees, itself included
MPI_ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}
HF_GGUF = {"embed_tokens": "token_embd", "norm": "output_norm", "input_layernorm": "attn_norm",
           "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
           "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "self_attn.qkv_proj": "attn_qkv",
           "mlp.gate_up_proj": "ffn_up"}


MODELS = {"mistral": lambda: __import__("transformers").MistralForCausalLM,
          "qwen2": lambda: __import__("transformers").Qwen2ForCausalLM,
          "phi3": lambda: __import__("transformers").Phi3ForCausalLM}


def cases():
    yarn = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16}
    rng = np.random.default_rng(5)  # head dim 16: 8 factors each
    longrope = {"rope_type": "longrope", "rope_theta": 10000.0, "long_factor": (1 + 3 * rng.random(8)).tolist(),
                "short_factor": (1 + 0.2 * rng.random(8)).tolist()}
    return [
        ("mistral", dict(sliding_window=WINDOW, max_position_embeddings=64,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
        ("qwen2", dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1,
                       max_position_embeddings=64, rope_parameters=yarn)),
        ("phi3", dict(sliding_window=WINDOW, max_position_embeddings=64, original_max_position_embeddings=16,
                      pad_token_id=0, rope_parameters=longrope)),
    ]


def save_hf(arch, d, extra, seed):
    import torch
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    Config = {"mistral": transformers.MistralConfig, "qwen2": transformers.Qwen2Config,
              "phi3": transformers.Phi3Config}[arch]
    Model = MODELS[arch]()
    shutil.rmtree(d, ignore_errors=True)
    cfg = Config(vocab_size=len(tiny_vocab()[0]), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=False,
                 initializer_range=0.15, bos_token_id=1, eos_token_id=2, **extra)
    torch.manual_seed(seed)
    model = Model(cfg).eval()
    if arch == "qwen2":  # random biases: transformers initializes them to 0
        with torch.no_grad():
            for layer in model.model.layers:
                for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    p.bias.normal_(0, 0.3)
    model.save_pretrained(str(d))
    cfg_json = json.loads((d / "config.json").read_text())
    # Mistral's config.json has no layer_types: its window is on every layer
    types = cfg_json.get("layer_types") or ["sliding_attention"] * cfg_json["num_hidden_layers"]
    hf_tokenizer(*tiny_vocab(), "smollm").save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False, "bos_token": "<|im_start|>",
                                                         "eos_token": "<|im_end|>"}))
    return model, cfg_json, types


def adjacent(w, heads):
    """HF rotate-half q/k rows into llama GGUF's adjacent pairs."""
    hd = w.shape[0] // heads
    return w.reshape(heads, 2, hd // 2, -1).transpose(0, 2, 1, 3).reshape(w.shape)


def write_gguf(path, arch, model, cfg, layer_types):
    """The same weights as llama.cpp's converter stores them: llama's names; mistral's q/k rows
    permuted to adjacent pairs, qwen2's kept in HF order (llama.cpp's NEOX rope)."""
    tokens, types, merges = tiny_vocab()
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    rp = cfg["rope_parameters"]
    w.add_rope_freq_base(rp["rope_theta"])
    if rp["rope_type"] == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rp["factor"])
        w.add_rope_scaling_orig_ctx_len(rp["original_max_position_embeddings"])
    if rp["rope_type"] == "longrope":  # as llama.cpp's converter writes Phi-3: no type, the factors as tensors
        orig = cfg["original_max_position_embeddings"]
        s = cfg["max_position_embeddings"] / orig
        w.add_rope_scaling_orig_ctx_len(orig)
        w.add_rope_scaling_attn_factors(float(np.sqrt(1 + np.log(s) / np.log(orig))))
        w.add_tensor("rope_factors_long.weight", np.asarray(rp["long_factor"], dtype=np.float32))
        w.add_tensor("rope_factors_short.weight", np.asarray(rp["short_factor"], dtype=np.float32))
    w.add_sliding_window(cfg["sliding_window"])
    w.add_array(f"{arch}.attention.sliding_window_pattern", [t == "sliding_attention" for t in layer_types])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    heads = {"attn_q": cfg["num_attention_heads"], "attn_k": cfg["num_key_value_heads"]}
    for name, t in model.state_dict().items():
        x = t.detach().float().numpy()
        if name == "lm_head.weight":
            w.add_tensor("output.weight", x)
            continue
        parts = name.split(".")  # model.layers.N.self_attn.q_proj.weight
        if parts[1] == "layers":
            g = HF_GGUF[".".join(parts[3:-1])]
            if arch == "mistral" and g in heads:
                x = adjacent(x, heads[g])
            w.add_tensor(f"blk.{parts[2]}.{g}.{parts[-1]}", x)
        else:
            w.add_tensor(f"{HF_GGUF[parts[1]]}.weight", x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def our_logits(path, toks, nv, work, *args):
    ids, out = work / "ids.txt", work / "logits.f32"
    ids.write_text(" ".join(map(str, toks)))
    p = subprocess.run([str(BUILD / "tests" / "logits_dump"), str(path), str(ids), str(out), *map(str, args)],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"logits_dump {path} failed: {p.stderr}")
    return np.fromfile(out, dtype=np.float32).reshape(len(toks), nv)


def token_ll(logits, toks):
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    lp = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    return lp[np.arange(len(toks) - 1), toks[1:]]


def torch_logits(model, toks):
    import torch
    with torch.no_grad():
        return model(torch.tensor([toks])).logits[0].double().numpy()


def rel_err(a, b):
    rms = np.sqrt(np.mean(b * b)) + 1e-30
    return float(np.max(np.abs(a - b) / (np.abs(b) + rms)))


def sharded(work, name, path, toks, nv, cfg, attn, plan_rule, layer_types):
    """np 2 and 3 against one process; --stats bytes of every layer against what plan_rule's
    shards need (the union of the layers' rules: the widest window, or the ring of full)."""
    ref = our_logits(path, toks, nv, work, *attn, "--decode-from", N - 4)
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, k = cfg["hidden_size"] // H, N - 4
    for P in (2, 3):
        out = work / "sp.f32"
        p = subprocess.run(["mpirun", "-np", str(P), str(BIN), "worker", "--task", "logits", "--model", str(path),
                            "--ids", str(work / "ids.txt"), "--out", str(out), "--decode-from", str(N - 4),
                            "--stats", *attn], capture_output=True, text=True, timeout=300, env=MPI_ENV)
        check(p.returncode == 0, f"{name} {attn} np={P}: the worker group failed:\n{p.stderr}")
        e = rel_err(np.fromfile(out, dtype=np.float32).reshape(len(toks), nv), ref)
        check(e < 1e-5, f"{name} {attn} np={P}: logits differ from one process by {e:.2e}")
        plan, stats = parse_stats(p.stderr)
        want = expected_bytes(plan_rule, plan, k, P, H, KV, hd)
        gather = (N - k) * (H * hd + H) * 4 * (P - 1)
        for layer in range(cfg["num_hidden_layers"]):
            for r in range(P):
                w = (want[r][0] + gather, want[r][1] + gather)
                check(stats.get((layer, r)) == w, f"{name} {attn} np={P}: layer {layer} rank {r} moved "
                                                  f"{stats.get((layer, r))} bytes, the rules need {w}")
        # the capacity planner: the same bytes, and each layer's keys counted by its own rule
        pl = json.loads(run(["plan", "--json", "--model", str(path), "--tokens", str(k), "--ranks", str(P), *attn]).stdout)
        recv = [want[r][1] for r in range(P)]
        check(pl["recv_per_layer_max"] == max(recv) and pl["recv_per_layer_all"] == sum(recv),
              f"{name} {attn} np={P}: plan predicts {pl['recv_per_layer_max']}/{pl['recv_per_layer_all']} bytes, "
              f"--stats shows {recv}")
        per_layer = [mean_keys(WINDOW - 1 if t == "sliding_attention" else user_window(attn), k) for t in layer_types]
        keys = sum(per_layer) / len(per_layer)
        check(abs(pl["visible_keys_mean"] - keys) < 1e-9 * keys,
              f"{name} {attn}: plan counts {pl['visible_keys_mean']} keys per query, the layers' rules {keys}")
        print(f"  {name:8s} {' '.join(attn):26s} np={P}: max rel error vs one process {e:.1e}; bytes received "
              f"per layer by rank {recv} ({plan_rule}) = plan; {keys:.2f} keys per query = plan")


def stream_refused(work, arch, path):
    """Streaming evicts keys by one window for every layer: refused for now, with the reason."""
    text = work / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog " * 8)
    p = run(["perplexity", "--model", str(path), "--stream", "--attn", "window", "--window", "12", str(text)], check=False)
    err = p.stderr.decode()
    check(p.returncode == 1 and "streaming is not supported for a model with sliding-window layers" in err,
          f"{arch}: perplexity --stream: {err!r}")


def user_window(attn):
    return int(attn[attn.index("--window") + 1]) if "--window" in attn else None


def mean_keys(window, n):
    """Keys a query sees, averaged over positions 0..n-1: i + 1 under full attention, at most
    window + 1 under the window rule."""
    return float(np.mean([i + 1 if window is None else min(i + 1, window + 1) for i in range(n)]))


def main():
    work = tmpdir()
    nv = len(tiny_vocab()[0])
    for i, (arch, extra) in enumerate(cases()):
        d = work / f"hf-{arch}"
        model, cfg, types = save_hf(arch, d, extra, seed=200 + i)
        check(cfg["model_type"] == arch and cfg["sliding_window"] == WINDOW, f"{arch}: config.json {cfg}")
        toks = np.random.default_rng(i).integers(0, nv, size=N).tolist()
        ref = token_ll(torch_logits(model, toks), toks)
        hf = our_logits(d, toks, nv, work, "--ubatch", 7, "--decode-from", N - 8)
        e = float(np.abs(token_ll(hf, toks) - ref).max())
        # the same model with every layer global: what ignoring the window would give
        nowin = Config_without_window(model, arch, extra)
        eb = float(np.abs(token_ll(torch_logits(nowin, toks), toks) - ref).max())
        check(e < 1e-4, f"{arch}: per-token log-likelihood differs from transformers' by {e:.2e} nats")
        check(eb > 1e-2, f"{arch}: the window makes no difference on this sequence ({eb:.2e})")
        g = work / f"{arch}.gguf"
        write_gguf(g, arch, model, cfg, types)
        gl = our_logits(g, toks, nv, work, "--ubatch", 7, "--decode-from", N - 8)
        check(np.array_equal(gl, hf), f"{arch}: the GGUF's logits differ from the directory's by {rel_err(gl, hf):.2e}")
        for path in (d, g):
            info = json.loads(run(["inspect", "--json", str(path)]).stdout)
            want = [WINDOW if t == "sliding_attention" else 0 for t in types]
            check(info["architecture"] == arch and info["layer_window"] == want,
                  f"{arch}: inspect {path.name} says {info['architecture']} {info.get('layer_window')}, not {want}")
        text = run(["inspect", str(g)]).stdout.decode()
        line = next(l for l in text.splitlines() if l.startswith("attention"))
        print(f"  {arch:8s} {types}: max |dLL| vs transformers {e:.1e} nats (all global: {eb:.2f}); "
              f"GGUF identical\n           inspect: {line}")
        stream_refused(work, arch, g)
        all_window = all(t == "sliding_attention" for t in types)
        model_rule = {"kind": "window", "window": WINDOW - 1}
        sharded(work, arch, g, toks, nv, cfg, ["--attn", "full"], model_rule if all_window else {"kind": "full"}, types)
        sharded(work, arch, g, toks, nv, cfg, ["--attn", "window", "--window", "12"],
                model_rule if all_window else {"kind": "window", "window": 12}, types)
    done("test_archs")


def Config_without_window(model, arch, extra):
    """The same weights with the sliding window turned off (the control of the window check)."""
    import copy
    import transformers
    cfg = copy.deepcopy(model.config)
    cfg.sliding_window = None
    cfg.layer_types = ["full_attention"] * cfg.num_hidden_layers
    if arch == "qwen2":
        cfg.use_sliding_window = False
    m = MODELS[arch]()(cfg).eval()
    m.load_state_dict(model.state_dict())
    return m


if __name__ == "__main__":
    main()
