"""`longseq eval passkey|niah` (issue 19), fast:

- on a tiny random model (1,024-token context), also on a worker group of 2 ranks (--np 2): the JSONL has one trial per length x depth x
  method x rule, each prompt within a few tokens of its length; a length past the context is
  refused with the model's RoPE and runs with linear stretched to it (factor 2); the table has a
  row per length and a column per method and rule; the niah grid is a depth x length table and
  a niah prompt at the model's whole context leaves room for the answer (runs, not refused);
  tools/niah_heatmap.py draws it as a PNG, each panel with its own trials' lengths (a file that
  combines runs of different lengths per method shows no cell as refused that was never asked);
- the same trials as ordinary jobs of a running `longseq serve` (--server): the same records;
- the scoring: the default model finds a passkey in 512 tokens, and a trial is wrong when the
  answer's first number is not the key (a model that cannot retrieve scores 0).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

from fixtures import write_tiny_llama
from lsoracle import BIN, KJV, MODEL, REPO, check, done, need_file, tmpdir

WORK = tmpdir()
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")


def evaluate(test, *args, model=None):
    out = WORK / f"{test}.jsonl"
    cmd = [str(BIN), "eval", test, "--threads", "1", "--out", str(out), *args]
    if model:
        cmd += ["--model", str(model)]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    check(p.returncode == 0, f"eval {test} {args}: exit {p.returncode}: {p.stderr[-3000:]}")
    return p.stdout, [json.loads(line) for line in out.read_text().splitlines()]


def test_passkey_tiny(tiny):
    table, trials = evaluate("passkey", "--lengths", "300,700,2048", "--depths", "0.2,0.8", "--rope-scaling",
                             "model,linear", model=tiny)
    check(len(trials) == 3 * 2 * 2, f"one trial per length, depth and method: {len(trials)}")
    ran = [t for t in trials if not t["error"]]
    # (the tiny model spells the filler byte by byte: one filler line is about 90 of its tokens)
    check(all(abs(t["tokens"] - t["length"]) <= 100 for t in ran),
          f"prompts of the asked length: {[(t['length'], t['tokens']) for t in ran]}")
    model_2k = [t for t in trials if t["length"] == 2048 and t["rope"] == "model"]
    lin_2k = [t for t in trials if t["length"] == 2048 and t["rope"] == "linear"]
    check(all("context" in t["error"] for t in model_2k), f"2048 tokens past the 1,024 context refused: {model_2k}")
    check(all(not t["error"] and t["factor"] == 2.0 for t in lin_2k), f"linear stretched x2 over 2048: {lin_2k}")
    check(all(re.fullmatch(r"\d{5}", t["key"]) for t in trials) and len({t["key"] for t in trials}) > 6,
          "5-digit random keys")
    check(not any(t["right"] for t in trials), "a random model does not find the keys (the scoring is not lenient)")
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    check(rows[0] == "| length | model, full | linear, full |" and len(rows) == 4 and "refused" in rows[3],
          f"the table: {table}")
    print(f"passkey on the tiny model: {len(trials)} trials, refused past the context with its own RoPE")


def test_group(tiny):
    _, trials = evaluate("passkey", "--lengths", "600", "--depths", "0.5", "--np", "2", model=tiny)
    check(len(trials) == 1 and not trials[0]["error"] and trials[0]["ranks"] == 2,
          f"--np 2: the trial ran on a worker group of 2 ranks: {trials}")
    print("eval --np 2: a worker group of 2 ranks")


def test_niah_heatmap(tiny):
    need_file(KJV, "the KJV text")
    table, trials = evaluate("niah", "--lengths", "256,512", "--depths", "0,0.5,1", "--attn", "full,window",
                             "--window", "128", model=tiny)
    check(len(trials) == 2 * 3 * 2 and all(re.fullmatch(r"\d{7}", t["key"]) for t in trials), f"{trials[:2]}")
    check(table.count("needle in a haystack") == 2 and table.count("| 0.50 |") == 2, f"a grid per rule: {table}")
    png = WORK / "niah.png"
    p = subprocess.run([sys.executable, str(REPO / "tools" / "niah_heatmap.py"), str(WORK / "niah.jsonl"), str(png)],
                       capture_output=True, text=True)
    check(p.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000,
          f"the heatmap PNG: {p.stderr}")
    print("niah: depth x length grids and the heatmap")


def test_niah_fits(tiny):
    need_file(KJV, "the KJV text")
    _, trials = evaluate("niah", "--lengths", "1024", "--trials", "2", model=tiny)
    check(len(trials) == 10 and all(not t["error"] and t["tokens"] <= 1024 - 12 for t in trials),
          f"niah at the model's whole context: every prompt leaves room for the 12 answer tokens and runs: "
          f"{[(t['tokens'], t['error'][:60]) for t in trials]}")
    print(f"niah at the context: prompts of {min(t['tokens'] for t in trials)}-{max(t['tokens'] for t in trials)} tokens")


def test_heatmap_panels():
    sys.path.insert(0, str(REPO / "tools"))
    import niah_heatmap

    def trial(rope, length, depth, right, error=""):
        return {"rope": rope, "attention": "full", "length": length, "depth": depth, "right": right, "error": error,
                "factor": 1.5 if rope == "yarn" else 1.0}

    trials = [trial("model", 1024, 0.0, True), trial("model", 1024, 1.0, False),
              trial("model", 12288, 0.0, False, "past the context"), trial("model", 12288, 1.0, False, "past the context"),
              trial("yarn", 12288, 0.0, False), trial("yarn", 12288, 0.0, True)]
    got = {p: (d, n, g.tolist()) for p, d, n, g in niah_heatmap.grids(trials)}
    model, yarn = got[("model", "full")], got[("yarn", "full")]
    check(model[:2] == ([0.0, 1.0], [1024, 12288]) and model[2][0][0] == 1.0 and model[2][1][0] == 0.0
          and all(x != x for x in (model[2][0][1], model[2][1][1])), f"model: 1K ran, 12K refused (NaN): {model}")
    check(yarn == ([0.0], [12288], [[0.5]]), f"yarn: only the length and depth it ran, 1 of 2 right: {yarn}")
    names = [niah_heatmap.title(p, trials) for p in got]
    check(names == ["RoPE model, full", "RoPE yarn x1.5, full"], f"panel titles name the factor: {names}")
    print("niah heatmap: each panel has its own lengths and depths")


def test_service(tiny):
    state = WORK / "state"
    token = WORK / "token"
    token.write_text("t0ken-for-eval-test\n")
    token.chmod(0o600)
    log = WORK / "serve.log"
    with open(log, "w") as lf:
        srv = subprocess.Popen([str(BIN), "serve", "--listen", "127.0.0.1:0", "--state", str(state), "--token-file",
                                str(token), "--model", str(tiny), "--threads", "1"], env=ENV, stderr=lf,
                               stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        port, deadline = None, time.time() + 60
        while port is None and time.time() < deadline:
            m = re.search(r"\(port (\d+)\)", log.read_text())
            port = m and m.group(1)
            time.sleep(0.05)
        check(port, f"serve started: {log.read_text()}")
        out = WORK / "served.jsonl"
        p = subprocess.run([str(BIN), "eval", "passkey", "--server", f"127.0.0.1:{port}", "--token-file", str(token),
                            "--model", str(tiny), "--lengths", "300", "--depths", "0.5", "--trials", "2", "--out",
                            str(out)], env=ENV, capture_output=True, text=True, timeout=300)
        trials = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        check(p.returncode == 0 and len(trials) == 2 and all(not t["error"] for t in trials),
              f"eval through a running service: {p.stderr[-2000:]} {trials}")
        jobs = subprocess.run([str(BIN), "jobs", "--server", f"127.0.0.1:{port}", "--token-file", str(token)],
                              env=ENV, capture_output=True, text=True)
        check(jobs.stdout.count("passkey 300 d=0.50") == 2, f"the trials are the service's jobs: {jobs.stdout}")
    finally:
        os.killpg(srv.pid, signal.SIGKILL)
        srv.wait()
    print("eval --server: the trials are ordinary jobs of the service")


def test_scoring():
    need_file(MODEL, "the default model")
    table, trials = evaluate("passkey", "--lengths", "512", "--depths", "0.5")
    check(len(trials) == 1 and trials[0]["right"] and trials[0]["key"] in trials[0]["answer"],
          f"the default model finds the passkey in 512 tokens: {trials}")
    check("| 512 | 100% (1/1) |" in table, table)
    print(f"scoring: the default model answers {trials[0]['answer']!r} for key {trials[0]['key']}")


def main():
    tiny = WORK / "tiny.gguf"
    write_tiny_llama(str(tiny), embd=64, heads=4, kv_heads=2, ff=128, ctx=1024)
    test_passkey_tiny(tiny)
    test_group(tiny)
    test_niah_heatmap(tiny)
    test_niah_fits(tiny)
    test_heatmap_panels()
    test_service(tiny)
    test_scoring()
    done("test_eval")


if __name__ == "__main__":
    main()
