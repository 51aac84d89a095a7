#!/usr/bin/env python3
"""`longseq generate` on the default model, end to end:
- greedy generation with the chat template answers a simple question (Paris) and stops at
  the end-of-turn token; --json has every field and consistent numbers;
- the streamed text equals the --json text, byte for byte;
- a stop string ends generation and is not printed; -n bounds the length;
- a seed makes sampling reproducible, and a different seed changes it;
- a long prompt (several micro-batches) works; bad arguments get clear errors.
"""
import json

from lsoracle import KJV, MODEL, check, done, need_file, run, tmpdir

QUESTION = "What is the capital of France?"


def gen(*args, check_rc=True):
    return run(["generate", *args], check=check_rc)


def gen_json(*args):
    return json.loads(gen(*args, "--json").stdout)


def main():
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
    done("test_generate")


if __name__ == "__main__":
    main()
