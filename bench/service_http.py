#!/usr/bin/env python3
"""service_http.py — the HTTP front end of `longseq serve --http` (docs/protocol.md, "HTTP")
under load and on real work. Prints three tables:

1. a good client's latency for GET /v1/models (a fresh connection each call, every 20 ms):
   quiet, with N idle connections open, and with N connections sending their headers one byte
   every 0.5 s (past --http-timeout they are answered 408 and shut), with the server's resident
   memory;
2. one chat completion on the model, non-streaming and streaming: time to the first text event,
   total time, and the server's own prefill/decode figures;
3. `longseq batch` over K request lines: wall time, lines per second, and a rerun (nothing runs
   again).

    ~/.cache/longseq/venv/bin/python bench/service_http.py [--bin build/longseq] [--model M]
        [--conns 1000] [--seconds 6] [--lines 8] [--max-tokens 32]

Only the standard library is used. The flood needs one descriptor per connection on both
sides: the script raises its soft `ulimit -n` to the hard limit (the server inherits it).
"""
import argparse
import json
import os
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def good_client(port, token, seconds):
    lat, end = [], time.time() + seconds
    while time.time() < end:
        t = time.perf_counter()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
        lat.append((time.perf_counter() - t) * 1e3)
        time.sleep(0.02)
    return lat


def row(name, lat, rss):
    lat = sorted(lat)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(f"| {name} | {len(lat)} | {statistics.median(lat):.2f} | {p99:.2f} | {lat[-1]:.2f} | {rss} |")


def flood(port, n, slow, seconds, stop):
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break
    if slow:
        for s in socks:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\n")
        while not stop.is_set():
            for s in socks:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
            time.sleep(0.5)
    else:
        stop.wait(seconds + 5)
    for s in socks:
        s.close()


def table1(a, port, token, pid):
    print("\n| good client (GET /v1/models) | calls | median ms | p99 ms | max ms | server RSS kB |\n|---|---|---|---|---|---|")
    row("quiet", good_client(port, token, a.seconds), rss_kb(pid))
    for slow in (False, True):
        stop = threading.Event()
        t = threading.Thread(target=flood, args=(port, a.conns, slow, a.seconds, stop))
        t.start()
        time.sleep(1.0)
        lat = good_client(port, token, a.seconds)
        rss = rss_kb(pid)
        stop.set()
        t.join()
        row(f"{a.conns} {'slow senders (1 byte / 0.5 s)' if slow else 'idle connections'}", lat, rss)
    time.sleep(1)
    row("after", good_client(port, token, 2), rss_kb(pid))


def post(port, token, path, body, stream=False):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    t0 = time.perf_counter()
    first, events, last = None, [], None
    with urllib.request.urlopen(req, timeout=600) as r:
        if not stream:
            return json.loads(r.read()), None, (time.perf_counter() - t0) * 1e3
        for line in r:
            if line.startswith(b"data: {"):
                ev = json.loads(line[6:])
                if first is None and ev["choices"] and ev["choices"][0]["delta"].get("content"):
                    first = (time.perf_counter() - t0) * 1e3
                last = ev
    return last, first, (time.perf_counter() - t0) * 1e3


def table2(a, port, token):
    text = (REPO / "tests" / "corpus" / "multilingual.txt").read_text()[:3000]
    body = {"messages": [{"role": "user", "content": text + "\n\nSummarize the text above."}], "max_tokens": a.max_tokens}
    post(port, token, "/v1/chat/completions", dict(body, max_tokens=2))  # warm the worker group
    print("\n| chat completion | prompt tokens | generated | first text ms | total ms | server prefill ms | server decode ms |"
          "\n|---|---|---|---|---|---|---|")
    for stream in (False, True):
        ans, first, total = post(port, token, "/v1/chat/completions", dict(body, stream=stream), stream)
        u, x = ans["usage"], ans["longseq"]
        print(f"| {'stream' if stream else 'JSON'} | {u['prompt_tokens']} | {u['completion_tokens']} | "
              f"{'-' if first is None else f'{first:.0f}'} | {total:.0f} | {x['prefill_ms']:.0f} | {x['decode_ms']:.0f} |")


def table3(a, work):
    lines = []
    for i in range(a.lines):
        msg = f"Write one sentence about the number {i}."
        lines.append(json.dumps({"custom_id": f"n{i}", "method": "POST", "url": "/v1/chat/completions",
                                 "body": {"messages": [{"role": "user", "content": msg}], "max_tokens": a.max_tokens}}))
    inp, out = work / "in.jsonl", work / "out.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    args = [a.bin, "batch", str(inp), "--out", str(out)] + (["--model", a.model] if a.model else [])
    print("\n| longseq batch | lines | wall s | lines/s | exit |\n|---|---|---|---|---|")
    for name in ("first run", "rerun (all finished)"):
        t0 = time.perf_counter()
        p = subprocess.run(args, capture_output=True, env=ENV)
        dt = time.perf_counter() - t0
        print(f"| {name} | {a.lines} | {dt:.1f} | {a.lines / dt:.2f} | {p.returncode} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(REPO / "build" / "longseq"))
    ap.add_argument("--model")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--lines", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = Path(tempfile.mkdtemp(prefix="service-http-"))
    token = secrets.token_hex(16)
    (work / "token").write_text(token + "\n")
    (work / "token").chmod(0o600)
    log = open(work / "serve.log", "w")
    args = [a.bin, "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--state", str(work / "state"),
            "--token-file", str(work / "token"), "--http-max-conns", str(a.conns + 100), "--http-timeout", "3"]
    p = subprocess.Popen(args + (["--model", a.model] if a.model else []), stderr=log, stdout=log, env=ENV,
                         start_new_session=True)
    try:
        port = None
        for _ in range(600):
            for line in (work / "serve.log").read_text().splitlines():
                if "(http port " in line:
                    port = int(line.rsplit("(http port ", 1)[1].rstrip(")"))
            if port:
                break
            time.sleep(0.1)
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
                break
            except OSError:
                time.sleep(0.2)
        table1(a, port, token, p.pid)
        table2(a, port, token)
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait()
    table3(a, work)


if __name__ == "__main__":
    main()
