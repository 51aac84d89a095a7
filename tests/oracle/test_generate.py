#!/usr/bin/env python3
"""`longseq generate` on the default model, end to end:
- greedy generation with the chat template answers a simple question (Paris) and stops at
  the end-of-turn token; --json has every field and consistent numbers;
- the streamed text equals the --json text, byte for byte;
- a stop string ends generation and is not printed; -n bounds the length;
- a seed makes sampling reproducible, and a different seed changes it;
- a long prompt (several micro-batches) works; bad arguments get clear errors;
- --batch FILE.jsonl (many prompts through the scheduler, prompt chunks beside decodes): each
  line's greedy tokens equal `generate` alone; an empty prompt fails on its own line while the
  others finish; a malformed line is refused, naming it, before anything runs;
- past the model's trained context (a tiny fixture trained on 64 positions), generate and
  perplexity run but warn once, on the leader of a group too, with the numbers and the flags
  that help; those flags silence it, and so does a length within the context.
"""
import json
import math
import re

from fixtures import write_tiny_llama
from lsoracle import KJV, MODEL, check, done, need_file, run, tmpdir

QUESTION = "What is the capital of France?"


def gen(*args, check_rc=True):
    return run(["generate", *args], check=check_rc)


def gen_json(*args):
    return json.loads(gen(*args, "--json").stdout)


def context_warnings(work):
    path = work / "ctx64.gguf"
    write_tiny_llama(str(path), ctx=64)
    prompt = "the quick brown fox jumps over the lazy dog. " * 3

    def warnings(p):
        return [l for l in p.stderr.decode().splitlines() if "warning" in l and "trained context" in l]

    g = ["generate", "--model", str(path), "--temp", "0", "--ignore-eos", "--json", "-n", "40", "--prompt", prompt]
    r = run(g)
    n = json.loads(r.stdout)["prompt_tokens"]
    need, scale = n + 40, math.ceil((n + 40) / 64 * 10) / 10
    w = warnings(r)
    print(f"  generate past the context: {w}")
    check(len(w) == 1, f"generate {n} + 40 tokens on a 64-token model: one warning, got {r.stderr.decode()!r}")
    check(f"{need} positions ({n} prompt + 40 to generate)" in w[0] and "trained context of 64" in w[0],
          f"the warning gives the numbers: {w[0]!r}")
    check(f"--rope-scaling yarn --rope-scale {scale:g}" in w[0] and "--attn sink" in w[0],
          f"the warning names the flags (scale {scale:g}): {w[0]!r}")
    for fix in (["--rope-scaling", "yarn", "--rope-scale", f"{scale:g}"], ["--attn", "sink", "--window", "16"]):
        q = run(g + fix)
        check(not warnings(q), f"generate with {' '.join(fix)}: no warning, got {q.stderr.decode()!r}")
    q = run(["generate", "--model", str(path), "--temp", "0", "-n", "2", "--prompt", "the fox"])
    check(not warnings(q), f"a short prompt: no warning, got {q.stderr.decode()!r}")

    text = work / "text.txt"
    text.write_text(prompt * 20)
    p = ["perplexity", "--model", str(path), "--ctx", "128", "--chunks", "1", "--json", str(text)]
    r = run(p)
    w = warnings(r)
    print(f"  perplexity past the context: {w}")
    check(len(w) == 1 and "128 positions (chunks of --ctx 128)" in w[0] and "trained context of 64" in w[0],
          f"perplexity --ctx 128 on a 64-token model: one warning with the numbers, got {r.stderr.decode()!r}")
    check(re.search(r"--rope-scaling yarn --rope-scale 2(?![\d.])", w[0]) and "--attn sink" in w[0] and "--ctx 64" in w[0],
          f"the warning names the flags: {w[0]!r}")
    q = run(p + ["--rope-scaling", "yarn", "--rope-scale", "2"])
    check(not warnings(q), f"perplexity with YaRN x2 over 128 positions: no warning, got {q.stderr.decode()!r}")
    q = run(p + ["--np", "2"])  # a worker group: the leader warns, once
    check(len(warnings(q)) == 1 and re.search(r"rank 0\] warning", warnings(q)[0]),
          f"perplexity --np 2: one warning, from rank 0, got {q.stderr.decode()!r}")


def batch(work):
    prompts = [("The capital of France is", 8), ("Once upon a time", 12), ("Water boils at", 6)]
    f = work / "batch.jsonl"
    lines = [json.dumps({"prompt": p, "n": n, "id": f"p{i}"}) for i, (p, n) in enumerate(prompts)]
    lines.insert(1, json.dumps({"prompt": "", "id": "empty"}))
    f.write_text("\n".join(lines) + "\n\n")
    r = run(["generate", "--batch", str(f), "--temp", "0", "--batch-tokens", "5"], check=False)
    check(r.returncode == 1 and b"1 of 4 prompts failed" in r.stderr, f"--batch with an empty prompt: {r.stderr!r}")
    out = {o["id"]: o for o in map(json.loads, r.stdout.decode().splitlines())}
    check(set(out) == {"p0", "p1", "p2", "empty"}, f"--batch printed {sorted(out)}")
    check(out["empty"]["line"] == 2 and "the prompt is empty" in out["empty"]["error"], f"empty line: {out['empty']}")
    for i, (p, n) in enumerate(prompts):
        alone = gen_json("--prompt", p, "-n", str(n), "--temp", "0")
        b = out[f"p{i}"]
        check(b["ids"] == alone["ids"] and b["text"] == alone["text"] and b["stop"] == alone["stop"],
              f"--batch {p!r}: {b['text']!r}, alone {alone['text']!r}")
    print(f"  --batch: 3 prompts, the same greedy tokens as alone; an empty one fails on its own line")
    f.write_text('{"prompt": "x"}\n{"prompt": 3}\n')
    r = run(["generate", "--batch", str(f), "--temp", "0"], check=False)
    check(r.returncode == 1 and b"line 2: \"prompt\" must be a string" in r.stderr and not r.stdout,
          f"malformed line: {r.returncode} {r.stderr!r}")


def main():
    context_warnings(tmpdir())
    need_file(MODEL, "the default model")
    r = gen_json("--chat", "--prompt", QUESTION, "--temp", "0", "-n", "48")
    print(f"  greedy chat answer: {r['text']!r} ({r['tokens']} tokens, stop {r['stop']})")
    check("Paris" in r["text"], f"the answer does not name Paris: {r['text']!r}")
    check(r["stop"] == "eog" and r["tokens"] == len(r["ids"]) < 48, f"stops at end of turn: {r}")
    check(r["prompt_tokens"] > 20 and r["prefill_ms"] > 0 and r["decode_ms"] > 0, "prompt and timings")
    check(abs(r["decode_tok_per_s"] - r["tokens"] / (r["decode_ms"] / 1e3)) < 1e-6 * r["decode_tok_per_s"] + 1e-9,
          "decode tok/s = tokens / decode time")
    streamed = gen("--chat", "--prompt", QUESTION, "--temp", "0", "-n", "48").stdout.decode()
    check(streamed == r["text"] + "\n", f"streamed {streamed!r} vs json {r['text']!r}")

    s = gen_json("--chat", "--prompt", QUESTION, "--temp", "0", "-n", "48", "--stop", "Paris")
    check(s["stop"] == "stop" and "Paris" not in s["text"] and r["text"].startswith(s["text"]),
          f"stop string: {s['text']!r}")
    n = gen_json("--prompt", "In the beginning", "--temp", "0", "-n", "7", "--ignore-eos")
    check(n["tokens"] == 7 and n["stop"] == "length", f"-n 7: {n['tokens']} tokens, stop {n['stop']}")

    a = gen_json("--prompt", "The king said", "--temp", "1.0", "--seed", "42", "-n", "24", "--ignore-eos")
    b = gen_json("--prompt", "The king said", "--temp", "1.0", "--seed", "42", "-n", "24", "--ignore-eos")
    c = gen_json("--prompt", "The king said", "--temp", "1.0", "--seed", "43", "-n", "24", "--ignore-eos")
    check(a["ids"] == b["ids"], "the same seed gives the same tokens")
    check(a["ids"] != c["ids"], "another seed gives other tokens")

    need_file(KJV, "the KJV text")
    long = tmpdir() / "long.txt"
    long.write_text("\n".join(KJV.read_text().splitlines()[:120]))
    l = gen_json("--prompt-file", str(long), "--temp", "0", "-n", "4", "--ignore-eos", "--ubatch", "256")
    check(l["prompt_tokens"] > 1000 and l["tokens"] == 4, f"long prompt: {l['prompt_tokens']} tokens")

    bad = gen("--prompt", "x", "--prompt-file", "y", check_rc=False)
    check(bad.returncode == 2 and b"exactly one of --prompt and --prompt-file" in bad.stderr, "both prompts")
    bad = gen("--prompt", "x", "--temp", "warm", check_rc=False)
    check(bad.returncode == 2 and b'--temp expects a number, not "warm"' in bad.stderr, "bad number")
    bad = gen("--prompt", "", check_rc=False)
    check(bad.returncode == 1 and b"the prompt is empty" in bad.stderr, f"empty prompt: {bad.stderr!r}")
    bad = gen("--prompt", "x", "--rope-scaling", "xpos", check_rc=False)
    check(bad.returncode == 2 and b"not one of none, linear" in bad.stderr, "bad rope scaling")
    o = gen("--prompt", "x", "-n", "1", "--rope-freq-base", "1000000", "--json")
    check(b"rope: freq base 1e+06 (the model file says 100000)" in o.stderr, f"override note: {o.stderr!r}")
    batch(tmpdir())
    done("test_generate")


if __name__ == "__main__":
    main()
