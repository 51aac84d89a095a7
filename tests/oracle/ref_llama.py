"""A numpy (float64) reference of the llama forward pass, written independently of the C
engine from the Hugging Face Llama semantics:

- RMSNorm, grouped-query attention (query head h reads KV head h // (H / H_kv)), SwiGLU MLP,
  tied or separate output head;
- RoPE in HF's rotate_half convention on q/k weights *un-permuted* back to HF's layout (the
  GGUF converter interleaves each head's rows; the engine rotates adjacent pairs instead), with
  the angle formed as HF forms it (f32 position times f32 inverse frequency);
- inverse frequencies for every method as in HF's modeling_rope_utils: default, linear,
  NTK-aware, dynamic NTK, YaRN (attention factor on cos and sin), Llama 3, LongRoPE; a changed
  base (ABF) is just the base.
Optionally the matmul activations are rounded as llama.cpp rounds them (8-bit blocks), to
check the engine's like-for-like mode; or every activation is rounded as float32 arithmetic
would (f32_noise), to measure how much each position amplifies rounding (its conditioning):
the tolerance of a float32 engine against this reference is a multiple of that, per position.
"""
from __future__ import annotations

import math

import numpy as np


def rope_inv_freq(d, base, method="none", factor=1.0, orig_ctx=None, seq_len=None, beta_fast=32.0,
                  beta_slow=1.0, low_ff=1.0, high_ff=4.0, divisors=None, long=None, short=None,
                  attn_factor=None):
    """Returns (inv_freq[d/2] float64, attention factor)."""
    i = np.arange(0, d, 2, dtype=np.float64)
    if method == "ntk":
        base = base * factor ** (d / (d - 2))
    if method == "dynamic":
        L = max(seq_len, orig_ctx)
        base = base * (factor * L / orig_ctx - (factor - 1)) ** (d / (d - 2))
    f = 1.0 / base ** (i / d)
    mscale = 1.0
    if method == "linear":
        f = f / factor
    elif method == "yarn":
        corr = lambda r: d * math.log(orig_ctx / (r * 2 * math.pi)) / (2 * math.log(base))
        lo, hi = max(math.floor(corr(beta_fast)), 0), min(math.ceil(corr(beta_slow)), d - 1)
        hi = hi + 0.001 if lo == hi else hi
        ramp = np.clip((np.arange(d // 2) - lo) / (hi - lo), 0, 1)
        f = (f / factor) * ramp + f * (1 - ramp)
        mscale = (0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0) * (attn_factor or 1.0)
    elif method == "llama3":
        if divisors is not None:
            f = f / np.asarray(divisors, dtype=np.float64)
        else:
            wl = 2 * math.pi / f
            lo_wl, hi_wl = orig_ctx / low_ff, orig_ctx / high_ff
            smooth = (orig_ctx / wl - low_ff) / (high_ff - low_ff)
            mid = (1 - smooth) * f / factor + smooth * f
            f = np.where(wl < hi_wl, f, np.where(wl > lo_wl, f / factor, mid))
    elif method == "longrope":
        ext = np.asarray(long if seq_len > orig_ctx else short, dtype=np.float64)
        f = f / ext
        mscale = attn_factor or (math.sqrt(1 + math.log(factor) / math.log(orig_ctx)) if factor > 1 else 1.0)
    return f, mscale


def load_gguf(path):
    """A llama GGUF file (any tensor type gguf-py can dequantize) as the model object the
    forward functions take: hp (heads, kv_heads, head_dim, eps, rope_base, layers, vocab) and
    weights [rows][cols] as float64 (converted once here, not in every forward), in the
    file's layout."""
    import gguf
    r = gguf.GGUFReader(str(path))

    def val(key):
        f = r.fields[key]
        return f.parts[f.data[0]].tolist()[0]
    hp = dict(heads=val("llama.attention.head_count"), kv_heads=val("llama.attention.head_count_kv"),
              eps=val("llama.attention.layer_norm_rms_epsilon"), rope_base=val("llama.rope.freq_base"),
              layers=val("llama.block_count"))
    hp["head_dim"] = val("llama.embedding_length") // hp["heads"]
    weights, types = {}, {}
    for t in r.tensors:
        shape = [int(d) for d in reversed(t.shape.tolist())]
        weights[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(shape)
        types[t.name] = t.tensor_type.name
    hp["vocab"] = weights["token_embd.weight"].shape[0]
    return type("GGUFModel", (), dict(hp=hp, weights=weights, types=types))


def unpermute(w, n_heads):
    """GGUF q/k rows (pairs adjacent within a head) back to HF's layout (halves)."""
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, hd // 2, 2, -1).transpose(0, 2, 1, 3).reshape(w.shape)


def rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def round_acts(x, wtype):
    """llama.cpp's activation rounding before its dot products (see kernels/cpu/act_round.c)."""
    x32 = x.astype(np.float32)
    if wtype in ("F32",):
        return x
    if wtype in ("F16",):
        return x32.astype(np.float16).astype(np.float64)
    if wtype in ("BF16",):
        u = x32.view(np.uint32).astype(np.uint64)
        u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
        return u.astype(np.uint32).view(np.float32).astype(np.float64)
    if wtype in ("Q4_K", "Q5_K", "Q6_K"):
        b = x32.reshape(-1, 256)
        idx = np.abs(b).argmax(axis=1)
        mx = b[np.arange(len(b)), idx]
        with np.errstate(divide="ignore"):
            iscale = np.where(mx != 0, np.float32(-127.0) / mx, 0).astype(np.float32)
        q = np.minimum(np.rint(b * iscale[:, None]), 127)
        inv = np.where(iscale != 0, np.float32(1.0) / np.where(iscale != 0, iscale, 1), 0).astype(np.float32)
        return (q * inv[:, None]).astype(np.float32).reshape(x.shape).astype(np.float64)
    b = x32.reshape(-1, 32)
    amax = np.abs(b).max(axis=1)
    with np.errstate(divide="ignore"):
        ident = np.where(amax != 0, np.float32(127.0) / amax, 0).astype(np.float32)
    d = (amax / np.float32(127.0)).astype(np.float16).astype(np.float32)
    return (np.rint(b * ident[:, None]) * d[:, None]).astype(np.float32).reshape(x.shape).astype(np.float64)


def rule_mask(rule, n, n_heads):
    """[heads][n][n] additive mask (0 visible, -inf hidden) of an attention rule, from its
    definition: s2 = same LongLoRA group and not in the future (groups kG for heads below
    H//2, s + kG after a first group [0, s) for the rest, s = G//2); window = the W previous
    tokens and the query; sink = the S first tokens, the W previous ones and the query (only
    which keys are seen: the sink rule's positions are checked against a token-by-token
    evicting cache, forward_streaming)."""
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    masks = []
    for h in range(n_heads):
        if rule is None or rule["kind"] == "full":
            vis = j <= i
        elif rule["kind"] == "s2":
            g = rule["group"]
            s = g // 2
            grp = (np.arange(n) // g) if h < n_heads // 2 else np.where(np.arange(n) < s, -1, (np.arange(n) - s) // g)
            vis = (j <= i) & (grp[None, :] == grp[:, None])
        elif rule["kind"] == "window":
            vis = (j <= i) & (j >= i - rule["window"])
        elif rule["kind"] == "sink":
            vis = (j <= i) & ((j < rule["sinks"]) | (j >= i - rule["window"]))
        else:
            raise ValueError(rule["kind"])
        masks.append(np.where(vis, 0.0, -np.inf))
    return np.stack(masks)


def f32_rounder(on, seed=0):
    """Rounds an activation to float32, then perturbs it by up to one float32 unit in the
    last place (random sign), as float32 arithmetic would: with `on`, forward(...) becomes an
    emulation of a float32 engine whose difference from the float64 result measures how
    strongly each position amplifies rounding (its conditioning). Identity when off."""
    if not on:
        return lambda a: a
    rng = np.random.default_rng(seed)

    def r(a):
        a32 = np.asarray(a, dtype=np.float32)
        ulp = np.spacing(np.abs(a32)).astype(np.float64)
        return a32.astype(np.float64) + ulp * rng.uniform(-1.0, 1.0, size=a32.shape)
    return r


def forward(model, tokens, rope=None, act_llamacpp=False, rule=None, f32_noise=None, kv_round=None):
    """Logits [n][vocab] (float64) for the token ids, positions 0..n-1, under an attention
    rule (default full causal). The sink rule takes StreamingLLM's positions: the sink keys
    are scored with the query rotated at its cache slot min(i, S + W), the others at its own
    position (equal to forward_streaming, which test_streaming checks). f32_noise=seed rounds
    every activation as float32 would, with a random last-place perturbation (f32_rounder).
    kv_round(x, is_key): applied to the keys (after RoPE) and the values [n][kv_heads][hd] as a
    KV cache would store them (e.g. rounded to bf16); keys are in HF's order here, the model
    file's are in adjacent pairs (values are the same in both)."""
    r32 = f32_rounder(f32_noise is not None, f32_noise or 0)
    hp, W = model.hp, {k: v.astype(np.float64, copy=False) for k, v in model.weights.items()}
    H, KV, hd, eps = hp["heads"], hp["kv_heads"], hp["head_dim"], hp["eps"]
    n = len(tokens)
    rope = dict(rope or {})
    method = rope.pop("method", "none")
    base = rope.pop("base", hp["rope_base"])
    inv, mscale = rope_inv_freq(hd, base, method, seq_len=n, **rope)
    pos = np.arange(n, dtype=np.float32)
    ang = (pos[:, None] * inv.astype(np.float32)[None, :]).astype(np.float64)  # f32 angle, as HF
    cos = np.cos(np.concatenate([ang, ang], axis=1)) * mscale
    sin = np.sin(np.concatenate([ang, ang], axis=1)) * mscale

    def mm(a, name):
        if act_llamacpp:
            a = round_acts(a, model.types[name])
        return a @ W[name].T

    def rot(x, at=slice(None)):  # x [n][heads][hd] at positions `at`, HF rotate_half
        half = hd // 2
        rh = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos[at][:, None, :] + rh * sin[at][:, None, :]

    for key in list(W):
        if key.endswith("attn_q.weight"):
            W[key] = unpermute(W[key], H)
        if key.endswith("attn_k.weight"):
            W[key] = unpermute(W[key], KV)
    x = W["token_embd.weight"][tokens]
    mask = rule_mask(rule, n, H)
    sinks = min(rule["sinks"], n) if rule and rule["kind"] == "sink" else 0
    for il in range(hp["layers"]):
        p = f"blk.{il}."
        h = r32(rms(x, W[p + "attn_norm.weight"], eps))
        qr = r32(mm(h, p + "attn_q.weight")).reshape(n, H, hd)
        q = r32(rot(qr))
        k = r32(rot(r32(mm(h, p + "attn_k.weight")).reshape(n, KV, hd)))
        v = r32(mm(h, p + "attn_v.weight")).reshape(n, KV, hd)
        if kv_round is not None:
            k, v = kv_round(k, True), kv_round(v, False)
        if sinks:
            q_slot = r32(rot(qr, np.minimum(np.arange(n), sinks + rule["window"])))
        out = np.empty((n, H, hd))
        for head in range(H):
            g = head // (H // KV)
            s = q[:, head, :] @ k[:, g, :].T
            if sinks:
                s[:, :sinks] = q_slot[:, head, :] @ k[:sinks, g, :].T
            s = s / math.sqrt(hd) + mask[head]
            s = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, head, :] = (s / s.sum(axis=1, keepdims=True)) @ v[:, g, :]
        x = r32(x + r32(mm(r32(out).reshape(n, H * hd), p + "attn_output.weight")))
        h = r32(rms(x, W[p + "ffn_norm.weight"], eps))
        g = r32(mm(h, p + "ffn_gate.weight"))
        x = r32(x + r32(mm(r32(g / (1 + np.exp(-g)) * r32(mm(h, p + "ffn_up.weight"))), p + "ffn_down.weight")))
    h = r32(rms(x, W["output_norm.weight"], eps))
    return mm(h, "output.weight" if "output.weight" in W else "token_embd.weight")


def forward_streaming(model, tokens, sinks, window, rope=None):
    """StreamingLLM, token by token, as streaming-llm's code does it: keys are cached *before*
    RoPE; at every step all cached keys are rotated at their cache slot 0..L-1 and the new
    query at slot L (the cache length); after the step the cache keeps its first `sinks`
    entries and the last `window`. Returns the logits [n][vocab] (float64)."""
    hp, W = model.hp, {k: v.astype(np.float64) for k, v in model.weights.items()}
    H, KV, hd, eps = hp["heads"], hp["kv_heads"], hp["head_dim"], hp["eps"]
    rope = dict(rope or {})
    method = rope.pop("method", "none")
    base = rope.pop("base", hp["rope_base"])
    inv, mscale = rope_inv_freq(hd, base, method, seq_len=len(tokens), **rope)
    inv32 = inv.astype(np.float32)
    for key in list(W):
        if key.endswith("attn_q.weight"):
            W[key] = unpermute(W[key], H)
        if key.endswith("attn_k.weight"):
            W[key] = unpermute(W[key], KV)

    def rot(x, pos):  # x [m][heads][hd] at positions pos[m]
        ang = (np.asarray(pos, dtype=np.float32)[:, None] * inv32[None, :]).astype(np.float64)
        cos = np.cos(np.concatenate([ang, ang], axis=1)) * mscale
        sin = np.sin(np.concatenate([ang, ang], axis=1)) * mscale
        half = hd // 2
        rh = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos[:, None, :] + rh * sin[:, None, :]

    caches = [([], []) for _ in range(hp["layers"])]  # per layer: pre-RoPE keys, values
    out = []
    for tok in tokens:
        x = W["token_embd.weight"][[tok]]
        for il in range(hp["layers"]):
            p = f"blk.{il}."
            kc, vc = caches[il]
            L = len(kc)
            h = rms(x, W[p + "attn_norm.weight"], eps)
            q = rot((h @ W[p + "attn_q.weight"].T).reshape(1, H, hd), [L])
            k_new = (h @ W[p + "attn_k.weight"].T).reshape(KV, hd)
            v_new = (h @ W[p + "attn_v.weight"].T).reshape(KV, hd)
            keys = rot(np.stack(kc + [k_new]), list(range(L + 1)))  # [L+1][KV][hd] at slots
            vals = np.stack(vc + [v_new])
            att = np.empty((H, hd))
            for head in range(H):
                g = head // (H // KV)
                sc = keys[:, g, :] @ q[0, head, :] / math.sqrt(hd)
                pr = np.exp(sc - sc.max())
                att[head] = (pr / pr.sum()) @ vals[:, g, :]
            kc.append(k_new)
            vc.append(v_new)
            if len(kc) > sinks + window:  # evict: keep the sinks and the last `window`
                del kc[sinks:len(kc) - window]
                del vc[sinks:len(vc) - window]
            x = x + att.reshape(1, H * hd) @ W[p + "attn_output.weight"].T
            h = rms(x, W[p + "ffn_norm.weight"], eps)
            gt = h @ W[p + "ffn_gate.weight"].T
            x = x + (gt / (1 + np.exp(-gt)) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
        h = rms(x, W["output_norm.weight"], eps)
        out.append((h @ W["output.weight" if "output.weight" in W else "token_embd.weight"].T)[0])
    return np.stack(out)
