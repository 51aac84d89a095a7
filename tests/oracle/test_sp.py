#!/usr/bin/env python3
"""Sequence parallelism: one sequence sharded over a worker group of MPI ranks (mpirun, ranks
oversubscribed on this machine's cores) gives the single-process answer, moves exactly the keys
its rule needs, and fails cleanly.

- exactness: `longseq worker --task logits` under mpirun -np 1..5 against the single-process
  engine (tests/logits_dump, itself checked against numpy in test_forward/test_streaming), on
  tiny random models (GQA 4/2 heads, odd 3/1 heads), for every rule (full, s2 with even, odd
  and longer-than-text groups, sink, window), for n not divisible by P or G, n < P (ranks
  owning nothing), prefill then decode; relative error below 1e-5;
- traffic: the per-layer bytes of `--stats` equal what the rule makes necessary, computed here
  independently: for s2/sink/window, for every rank, the keys outside its shard that one of its
  queries sees (from ref_llama.rule_mask) times head_dim x 2 (K and V) x 4 bytes, per KV head
  whose query heads see them; for full, the ring (every other rank's keys); plus, per decode
  step, one all-gather of (n_head x head_dim + n_head) floats; the shards are whole s2 groups,
  contiguous, or the zigzag of full attention;
- default model (SmolLM2): one process and the worker group (np 2..4) both against a float64
  forward of the dequantized model (ref_llama.load_gguf), for every rule, with a bound per
  position of 16 times that position's own sensitivity to float32 rounding (at least 2e-5),
  so no tolerance depends on the CPU's BLAS kernels; traffic as above; greedy
  generation of 64 tokens after a 1.2K-token prompt gives the same tokens sharded as in one
  process for every rule (sink and window in one process run the streaming cache, evicting);
  perplexity (full, s2) with np 2..4 agrees to 1e-6 relative;
- failures: a rank that cannot open its model (MPMD launch), a rank out of memory (its address
  space limited with ulimit -v), a rank killed by SIGKILL in the
  middle of a prefill, a rank stopped by SIGSTOP (LS_COMM_TIMEOUT=5): the group exits non-zero
  within a minute, and the message names the rank.

`test_sp.py --fixtures-only` runs the tiny-model part; the sanitizer build runs it so, with
Open MPI's own allocations suppressed for LeakSanitizer (tests/mpi/lsan.supp).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fixtures import write_tiny_llama
from lsoracle import BIN, KJV, MODEL, check, done, need_file, tmpdir
from ref_llama import forward, load_gguf, rule_mask
from test_forward import engine_logits, rel_err

MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")


def mpirun(np_, args, timeout=300, env=None):
    cmd = ["mpirun", "-np", str(np_), str(BIN), "worker", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or MPI_ENV)


def rule_args(rule):
    a = ["--attn", rule["kind"]]
    for k in ("group", "sinks", "window"):
        if k in rule:
            a += [f"--{k}", rule[k]]
    return a


def parse_stats(stderr):
    plan, stats = {}, {}
    for line in stderr.splitlines():
        m = re.match(r"\[longseq plan\] rank (\d+) owns(.*)$", line)
        if m:
            plan[int(m.group(1))] = [tuple(map(int, r.split("-"))) for r in m.group(2).split()]
        m = re.match(r"\[longseq stats\]\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", line)
        if m:
            layer, rank, sent, recvd = map(int, m.groups())
            stats[layer, rank] = (sent, recvd)
    return plan, stats


def check_plan(name, plan, rule, n, P):
    owned = sorted(p for r in range(P) for lo, hi in plan.get(r, []) for p in range(lo, hi))
    check(owned == list(range(n)), f"{name}: the shards do not cover 0..{n} exactly once: {plan}")
    if rule["kind"] == "full":  # zigzag: 2P chunks, rank r owns chunks r and 2P-1-r
        chunks = sorted((lo, hi, r) for r in range(P) for lo, hi in plan[r] if hi > lo)
        zigzag = iter(list(range(P)) + list(range(P - 1, -1, -1)))
        check(all(any(z == r for z in zigzag) for _, _, r in chunks),  # owners in zigzag order
              f"{name}: not a zigzag layout: {plan}")
        sizes = [sum(hi - lo for lo, hi in plan[r]) for r in range(P)]
        check(max(sizes) - min(sizes) <= 2, f"{name}: unbalanced shards {sizes}")
    else:
        for r in range(P):
            check(len([x for x in plan[r] if x[1] > x[0]]) <= 1, f"{name}: rank {r} owns more than one range")
        if rule["kind"] == "s2":
            for r in range(P):
                for lo, hi in plan[r]:
                    check(lo % rule["group"] == 0 and (hi % rule["group"] == 0 or hi == n),
                          f"{name}: rank {r}'s shard {lo}-{hi} cuts a group of {rule['group']}")


def expected_bytes(rule, plan, n, P, H, KV, hd):
    """Per rank: (sent, received) bytes of one layer's prefill exchange."""
    row = hd * 2 * 4
    own = {r: set(p for lo, hi in plan[r] for p in range(lo, hi)) for r in range(P)}
    if rule["kind"] == "full":
        return {r: ((n - len(own[(r + 1) % P])) * KV * row if P > 1 else 0,
                    (n - len(own[r])) * KV * row if P > 1 else 0) for r in range(P)}
    vis = rule_mask(rule, n, H) == 0  # [H][q][k]
    per_kv = H // KV
    need = {}  # (rank, kv head) -> key positions outside the rank's shard that it needs
    for r in range(P):
        q = sorted(own[r])
        for g in range(KV):
            if not q:
                need[r, g] = set()
                continue
            seen = vis[g * per_kv:(g + 1) * per_kv][:, q, :].any(axis=(0, 1))
            need[r, g] = set(np.nonzero(seen)[0].tolist()) - own[r]
    out = {}
    for r in range(P):
        recvd = sum(len(need[r, g]) for g in range(KV)) * row
        sent = sum(len(need[d, g] & own[r]) for d in range(P) if d != r for g in range(KV)) * row
        out[r] = (sent, recvd)
    return out


def rel_err_rows(a, ref):
    """Per position: the largest error relative to |ref| + the rms of all of ref (rel_err's
    measure, row by row)."""
    rms = np.sqrt(np.mean(ref * ref)) + 1e-30
    return np.max(np.abs(a - ref) / (np.abs(ref) + rms), axis=1)


def exact_case(work, name, path, model, tokens, rule, P, decode_from, tol=1e-5, ref=None):
    """The worker group's logits against ref (default: one process of the engine) within tol
    (a number, or one bound per position); checks the plan and the bytes moved."""
    V, H, KV = model.hp["vocab"], model.hp["heads"], model.hp["kv_heads"]
    hd, L = model.hp["head_dim"], model.hp["layers"]
    against = "one process" if ref is None else "the float64 reference"
    if ref is None:
        ref = engine_logits(path, tokens, V, work, *rule_args(rule), "--decode-from", decode_from)
    out = work / "sp.f32"
    p = mpirun(P, ["--task", "logits", "--model", path, "--ids", work / "ids.txt", "--out", out,
                   "--decode-from", decode_from, "--stats", *rule_args(rule)])
    check(p.returncode == 0, f"{name} np={P}: the worker group failed:\n{p.stderr}")
    ours = np.fromfile(out, dtype=np.float32).reshape(len(tokens), V)
    rows, tols = rel_err_rows(ours, ref), np.broadcast_to(tol, (len(tokens),))
    e, worst = float(rows.max()), int(np.argmax(rows / tols))
    check(rows[worst] < tols[worst], f"{name} np={P}: logits at position {worst} differ from {against} by "
                                     f"{rows[worst]:.2e} (tolerance {tols[worst]:.1e})")
    plan, stats = parse_stats(p.stderr)
    k = min(decode_from, len(tokens))
    check_plan(f"{name} np={P}", plan, rule, k, P)
    want = expected_bytes(rule, plan, k, P, H, KV, hd)
    gather = (len(tokens) - k) * (H * hd + H) * 4 * (P - 1)
    for layer in range(L):
        for r in range(P):
            w = (want[r][0] + gather, want[r][1] + gather)
            check(stats.get((layer, r)) == w, f"{name} np={P}: layer {layer} rank {r} moved {stats.get((layer, r))} "
                                              f"bytes (sent, received), the rule needs {w}")
    return e, want


def exactness(work):
    gqa_path, odd_path = work / "gqa.gguf", work / "odd.gguf"
    gqa = write_tiny_llama(str(gqa_path), embd=64, heads=4, kv_heads=2, ff=128, ctx=64)
    odd = write_tiny_llama(str(odd_path), embd=96, heads=3, kv_heads=1, ff=64, ctx=64, seed=4)
    toks = np.random.default_rng(11).integers(0, gqa.hp["vocab"], size=37).tolist()
    rules = [("full", dict(kind="full")), ("s2 G=8", dict(kind="s2", group=8)),
             ("s2 G=7", dict(kind="s2", group=7)), ("s2 G=64", dict(kind="s2", group=64)),
             ("sink 4+8", dict(kind="sink", sinks=4, window=8)), ("window 9", dict(kind="window", window=9))]
    for name, rule in rules:
        worst = 0.0
        for P in (1, 2, 3, 4):
            e, want = exact_case(work, f"gqa {name}", gqa_path, gqa, toks, rule, P, 30)
            worst = max(worst, e)
        print(f"  gqa 4/2 heads, n=37 (30 + 7 decoded), {name:9s} np=1..4  max rel error {worst:.1e}; "
              f"np=4 bytes received per layer by rank: {[want[r][1] for r in range(4)]}")
    for name, rule in (("full", dict(kind="full")), ("s2 G=6", dict(kind="s2", group=6)),
                       ("sink 2+3", dict(kind="sink", sinks=2, window=3))):
        e, _ = exact_case(work, f"odd {name}", odd_path, odd, toks, rule, 3, 37)
        print(f"  odd 3/1 heads, n=37, {name:9s} np=3  max rel error {e:.1e}")
    short = toks[:3]
    for name, rule in (("full", dict(kind="full")), ("s2 G=2", dict(kind="s2", group=2)),
                       ("window 1", dict(kind="window", window=1))):
        e, _ = exact_case(work, f"short {name}", gqa_path, gqa, short, rule, 5, 2)
        print(f"  n=3 over 5 ranks (2 + 1 decoded), {name:9s}  max rel error {e:.1e}")


def s2_boundary_formula(work):
    """The issue's formula for s2: per boundary between shards, G - G/2 positions of the KV
    heads that the shifted query heads read (SmolLM2-like 9/3 heads: heads 4..8 -> kv 1, 2)."""
    path = work / "s2f.gguf"
    m = write_tiny_llama(str(path), embd=144, heads=9, kv_heads=3, ff=64, ctx=256, seed=2)
    n, G, P, hd = 200, 21, 4, 16
    toks = np.random.default_rng(1).integers(0, m.hp["vocab"], size=n).tolist()
    rule = dict(kind="s2", group=G)
    _, want = exact_case(work, "s2 formula", path, m, toks, rule, P, n)
    per_boundary = (G - G // 2) * 2 * hd * 2 * 4  # shifted heads 4..8 read kv heads 1 and 2
    for r in range(1, P):
        check(want[r][1] == per_boundary, f"s2 formula: rank {r} needs {want[r][1]} bytes, formula {per_boundary}")
    print(f"  s2 G=21, 9/3 heads, np=4: {per_boundary} bytes per boundary per layer = (G - G/2) x 2 kv x hd x 2 x 4")


def f64_bounds(model, toks, rule):
    """The float64 forward of the dequantized model under the rule, and per position the
    tolerance for a float32 engine: 16 times that position's own sensitivity to float32
    rounding (the larger of two float32-emulating runs, ref_llama.f32_rounder), at least 2e-5.
    Positions that amplify rounding get room in proportion; the bound does not depend on
    which BLAS kernels this CPU picks (docs/results.md, 2026-12-03)."""
    run = lambda seed: forward(model, toks, rule=rule, f32_noise=seed)
    ref = run(None)
    noise = np.maximum(rel_err_rows(run(1), ref), rel_err_rows(run(2), ref))
    return ref, np.maximum(2e-5, 16 * noise), noise


def default_model(work):
    need_file(MODEL, "the default model")
    text = need_file(KJV, "the KJV text").read_text()
    model = load_gguf(MODEL)
    ids = subprocess.run([str(BIN), "tokenize", "-"], input=text[2000:4000], capture_output=True, text=True)
    check(ids.returncode == 0, f"tokenize failed: {ids.stderr}")
    toks = list(map(int, ids.stdout.split()))[:300]
    for name, rule, P in (("full", dict(kind="full"), 3), ("s2 G=64", dict(kind="s2", group=64), 2),
                          ("sink 4+60", dict(kind="sink", sinks=4, window=60), 4),
                          ("window 50", dict(kind="window", window=50), 2)):
        # Both sides against float64: one process of the engine, then the worker group. Where
        # a position amplifies rounding (s2 G=64 at 288, where the shifted heads see only the
        # token itself and the model forms a massive activation), every float32 path is off
        # by more there, whatever its order of operations; the bound follows the position.
        ref, tol, noise = f64_bounds(model, toks, rule)
        one = rel_err_rows(engine_logits(MODEL, toks, 49152, work, *rule_args(rule), "--decode-from", 280), ref)
        w1 = int(np.argmax(one / tol))
        check(one[w1] < tol[w1], f"SmolLM2 {name}: one process differs from the float64 reference by {one[w1]:.2e} "
                                 f"at position {w1} (tolerance {tol[w1]:.1e})")
        e, _ = exact_case(work, f"SmolLM2 {name}", MODEL, model, toks, rule, P, 280, tol, ref=ref)
        hot = int(np.argmax(noise))
        print(f"  SmolLM2, n=300 (280 + 20 decoded), {name:9s} vs float64: one process {one.max():.1e}, np={P} {e:.1e}; "
              f"most sensitive position {hot} (f32 emulation {noise[hot]:.1e}, bound {tol[hot]:.1e}); bytes as the rule needs")

    prompt = work / "prompt.txt"
    prompt.write_text(text[1000:6000])
    gen = lambda *a: subprocess.run([str(BIN), "generate", "--prompt-file", str(prompt), "--temp", "0", "-n", "64",
                                     "--json", *a], capture_output=True, text=True, env=MPI_ENV, timeout=600)
    for extra, np_ in (((), 2), (("--attn", "s2", "--group", "256"), 3), (("--attn", "sink"), 2),
                       (("--attn", "window", "--window", "700"), 4)):
        one, many = gen(*extra), gen(*extra, "--np", str(np_))
        check(one.returncode == 0 and many.returncode == 0, f"generate {extra} failed:\n{one.stderr}\n{many.stderr}")
        a, b = json.loads(one.stdout), json.loads(many.stdout)
        check(a["ids"] == b["ids"], f"generate {' '.join(extra) or 'full'}: --np {np_} gave other tokens:\n"
                                    f"{a['text']!r}\n{b['text']!r}")
        check(len(b["ids"]) == 64, f"generate {extra}: {len(b['ids'])} tokens, not 64")
        print(f"  generate {' '.join(extra) or '(full)':28s} --np {np_}: same 64 greedy tokens "
              f"after a {b['prompt_tokens']}-token prompt")
    ppl = lambda *a: subprocess.run([str(BIN), "perplexity", "--ctx", "512", "--chunks", "2", "--json", *a, str(KJV)],
                                    capture_output=True, text=True, env=MPI_ENV, timeout=600)
    for extra, nps in (((), (2, 3)), (("--attn", "s2", "--group", "128"), (4,))):
        base = ppl(*extra)
        check(base.returncode == 0, f"perplexity failed:\n{base.stderr}")
        p1 = json.loads(base.stdout)["ppl"]
        for np_ in nps:
            r = ppl(*extra, "--np", str(np_))
            check(r.returncode == 0, f"perplexity --np {np_} failed:\n{r.stderr}")
            pn = json.loads(r.stdout)["ppl"]
            check(abs(pn - p1) / p1 < 1e-6, f"perplexity {extra} --np {np_}: {pn} vs {p1} in one process")
            print(f"  perplexity ctx 512 x 2 {' '.join(extra) or '(full)':18s}: one process {p1:.7f}, --np {np_} {pn:.7f}")


def rank_pids(marker, rank):
    """Processes of our worker group (their command line contains marker) with this rank."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmd and b"worker" in cmd and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            pids.append(int(d.name))
    return pids


def signalled_rank(work, sig, env, label):
    """Starts a long sharded prefill, sends sig to rank 1 once it is computing, and returns the
    group's exit status, its standard error and the seconds from the signal to the exit."""
    prompt = work / f"long-{label}.txt"
    prompt.write_text(KJV.read_text()[:40000])
    cmd = [str(BIN), "generate", "--np", "2", "--prompt-file", str(prompt), "-n", "4", "--temp", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    victim = []
    try:
        t_end = time.time() + 60
        while not victim and time.time() < t_end:
            victim = rank_pids(str(prompt), 1)
            time.sleep(0.2)
        check(bool(victim), f"{label}: rank 1 of the group never appeared")
        time.sleep(4)  # model loaded, prompt shared: in the middle of the prefill
        os.kill(victim[0], sig)
        t0 = time.time()
        _, err = proc.communicate(timeout=120)
        return proc.returncode, err, time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in victim:  # never leave a stopped process behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def failures(work):
    ids = work / "ids.txt"
    ids.write_text("1 2 3 4 5 6 7 8")
    tiny = work / "gqa.gguf"
    bad = ["mpirun", "-np", "1", str(BIN), "worker", "--task", "logits", "--model", str(tiny), "--ids", str(ids),
           "--out", str(work / "o.f32"), ":", "-np", "1", str(BIN), "worker", "--task", "logits", "--model",
           str(work / "missing.gguf"), "--ids", str(ids), "--out", str(work / "o.f32")]
    t0 = time.time()
    p = subprocess.run(bad, capture_output=True, text=True, env=MPI_ENV, timeout=120)
    check(p.returncode != 0, "a rank without its model: the group exited 0")
    check("rank 1" in p.stderr and "missing.gguf" in p.stderr,
          f"a rank without its model: the message does not name rank 1 and the file:\n{p.stderr}")
    print(f"  rank 1 cannot open its model: exit {p.returncode} after {time.time() - t0:.1f} s, "
          f"\"{next(l for l in p.stderr.splitlines() if 'missing.gguf' in l).strip()}\"")

    # out of memory on one rank: its address space is limited to 3 GB, its KV share needs 4.6 GB
    prompt = work / "p.txt"
    prompt.write_text("In the beginning God created the heaven and the earth.")
    gen = f"{BIN} worker --task generate --prompt-file {prompt} -n 200000"
    p = subprocess.run(["mpirun", "-np", "1", *gen.split(), ":", "-np", "1", "bash", "-c", f"ulimit -v 3000000; exec {gen}"],
                       capture_output=True, text=True, env=MPI_ENV, timeout=120)
    check(p.returncode != 0, "a rank out of memory: the group exited 0")
    line = next((l for l in p.stderr.splitlines() if "rank 1: cannot allocate" in l), None)
    check(line is not None, f"a rank out of memory: no message naming rank 1:\n{p.stderr}")
    print(f"  rank 1 out of memory: exit {p.returncode}, \"{line.strip()}\"")

    rc, err, secs = signalled_rank(work, signal.SIGKILL, MPI_ENV, "kill")
    check(rc != 0, "rank 1 killed: the group exited 0")
    check(secs < 60, f"rank 1 killed: the group took {secs:.0f} s to stop")
    check("rank 1" in err, f"rank 1 killed: the message does not name rank 1:\n{err}")
    print(f"  rank 1 killed (SIGKILL) mid-prefill: exit {rc} after {secs:.1f} s")

    rc, err, secs = signalled_rank(work, signal.SIGSTOP, dict(MPI_ENV, LS_COMM_TIMEOUT="5"), "stop")
    check(rc != 0, "rank 1 stopped: the group exited 0")
    check(secs < 60, f"rank 1 stopped: the group took {secs:.0f} s to give up")
    line = next((l for l in err.splitlines() if "no answer from rank 1" in l), None)
    check(line is not None, f"rank 1 stopped: no error naming rank 1:\n{err}")
    print(f"  rank 1 stopped (SIGSTOP), LS_COMM_TIMEOUT=5: exit {rc} after {secs:.1f} s, \"{line.strip()}\"")


def main():
    check(shutil.which("mpirun") is not None, "mpirun not found (deploy/setup.sh installs openmpi-bin)")
    work = tmpdir()
    exactness(work)
    s2_boundary_formula(work)
    if "--fixtures-only" not in sys.argv[1:]:  # the sanitizer build runs the part above
        failures(work)
        default_model(work)
    shutil.rmtree(work, ignore_errors=True)
    done("test_sp")


if __name__ == "__main__":
    main()
