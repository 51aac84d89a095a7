#!/usr/bin/env python3
"""`longseq plan`, the capacity planner, against what the system does:

- bytes moved: for every rule, the planner's bytes received per layer (the busiest rank and all
  ranks) equal the `--stats` counters of a real sharded prefill of the default model
  (`longseq generate --np 3 --stats`, 1,000 tokens);
- memory: the KV share is positions x layers x KV heads x head dim x 2 x 4 bytes and falls as
  1/P; weights are the GGUF's tensor bytes on CPU and 2 bytes per parameter on GPUs; a
  Llama-2-7B shape at 1M tokens on one H100 does not fit and on 64 does;
- work: full attention's keys per query are (n + 1) / 2; s2's equal a count from LongLoRA's
  definition of the shifted groups;
- named shapes, token suffixes (100K, 1M), bad input (unknown shape, device, link, rates file).
Predicted times are compared with measurements in docs/results.md, not here (no test fails on
a time).
"""
import json
import re
import subprocess
from pathlib import Path

from lsoracle import BIN, KJV, MODEL, check, done, need_file, run, tmpdir

RULES = {"full": [], "s2": ["--attn", "s2"], "sink": ["--attn", "sink", "--window", "300"],
         "window": ["--attn", "window", "--window", "300"]}


def plan(*args):
    return json.loads(run(["plan", "--json", *map(str, args)]).stdout)


def measured_recv(prompt, rule_args, ranks):
    p = run(["generate", "--prompt-file", str(prompt), "-n", "1", "--temp", "0", "--json", "--np", str(ranks),
             "--stats", *rule_args])
    per_layer = {}
    for line in p.stderr.decode().splitlines():
        m = re.match(r"\[longseq stats\]\s+0\s+(\d+)\s+\d+\s+(\d+)\s", line)  # layer 0, prefill
        if m:
            per_layer[int(m.group(1))] = int(m.group(2))
    return json.loads(p.stdout)["prompt_tokens"], per_layer


def main():
    need_file(MODEL, "the default model")
    work = tmpdir()
    text = need_file(KJV, "the KJV text").read_text()[:6000]
    ids = run(["tokenize", "-"], input=text.encode()).stdout.split()[:1000]
    (work / "ids.txt").write_text(" ".join(i.decode() for i in ids))
    prompt = work / "prompt.txt"
    prompt.write_bytes(run(["detokenize", str(work / "ids.txt")]).stdout)
    for name, args in RULES.items():
        n, recv = measured_recv(prompt, args, 3)
        p = plan("--tokens", n, "--ranks", 3, *args)
        check(p["recv_per_layer_max"] == max(recv.values()) and p["recv_per_layer_all"] == sum(recv.values()),
              f"{name}: predicted bytes {p['recv_per_layer_max']:.0f}/{p['recv_per_layer_all']:.0f} == measured {recv}")
        print(f"  {name}: {int(p['recv_per_layer_all']):,} bytes per layer, as measured")
    row = 30 * 64 * 2 * 4  # layers x head dim x (K, V) x f32, per position and KV head
    for ranks in (1, 2, 4):  # s2, G = 4096: own positions x 3 KV heads + G/2 borrowed x 2 KV heads
        p = plan("--tokens", 16384, "--ranks", ranks, "--attn", "s2")
        want = (16384 // ranks * 3 + (2048 * 2 if ranks > 1 else 0)) * row
        check(p["kv_bytes"] == want, f"KV share at {ranks} ranks: {p['kv_bytes']:.0f} == {want}")
    info = json.loads(run(["inspect", "--json"]).stdout)
    check(plan("--tokens", 1000)["weights_bytes"] == info["total_bytes"], "CPU weights = the GGUF's tensor bytes")
    full = plan("--tokens", 4001)
    check(abs(full["visible_keys_mean"] - 2001) < 1e-6, f"full: (n+1)/2 keys per query ({full['visible_keys_mean']})")
    s2 = plan("--tokens", 4000, "--attn", "s2")
    G, sh, n, H = 1000, 500, 4000, 9  # LongLoRA's groups, counted here from their definition
    keys = sum(i % G + 1 if h < H // 2 else (i + 1 if i < sh else (i - sh) % G + 1) for i in range(n) for h in range(H))
    check(abs(s2["visible_keys_mean"] - keys / (n * H)) < 1e-6,
          f"s2 G=1000: {s2['visible_keys_mean']} keys per query == {keys / (n * H)}")
    one = plan("--model", "llama2-7b", "--tokens", "1M", "--ranks", 1, "--gpu", "h100")
    many = plan("--model", "llama2-7b", "--tokens", "1M", "--ranks", 64, "--gpu", "h100")
    params = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096) + 2 * 4096 * 32000
    check(one["weights_bytes"] == 2 * params and not one["fits"] and many["fits"] and one["tokens"] == 1000000,
          f"llama2-7b @1M: weights {one['weights_bytes']:.3g}, fits on 1 H100: {one['fits']}, on 64: {many['fits']}")
    check(many["prefill_s"] < one["prefill_s"] / 32, "64 GPUs are more than 32x faster than one at 1M tokens")
    for args, needle in ((["--model", "gpt5", "--tokens", "10"], 'no model shape "gpt5"'),
                         (["--tokens", "10", "--gpu", "tpu"], 'no device "tpu"'),
                         (["--tokens", "10", "--link", "carrier-pigeon"], 'no link "carrier-pigeon"'),
                         (["--tokens", "10", "--rates", str(prompt)], "prompt.txt"),
                         (["--tokens", "ten"], "is not a length"), (["--ranks", "2"], "--tokens N is required")):
        p = subprocess.run([str(BIN), "plan", *args], capture_output=True, text=True)
        check(p.returncode in (1, 2) and needle in p.stderr, f"plan {args}: {p.stderr}")
    done("test_plan_cli")


if __name__ == "__main__":
    main()
