#!/usr/bin/env python3
"""service_flood.py — what strangers cost `longseq serve` before they authenticate
(docs/protocol.md, "The token first" and "Deadlines"): 1000 connections trickling a frame one
byte every 1.5 s (the token never completes) plus one 64 MiB Submit with a wrong token (33
million empty documents, the costliest message to unpack), while a good client (a process of
its own) calls Health on a fresh connection every 20 ms. Prints a table: the good client's
latency (median, 99th percentile, max) and the server's resident memory before, during and
after the flood; then what became of the 64 MiB frame and of the trickling connections.

    ~/.cache/longseq/venv/bin/python bench/service_flood.py [--bin build/longseq] [--model M]
        [--conns 1000] [--seconds 8]

The server runs with --workers external (no worker group is needed to answer Health) and
--max-conns above the flood, so the good client is not refused for lack of a slot. The flood
needs one descriptor per connection on both sides: the script raises its soft `ulimit -n` to
the hard limit (the server inherits it) and stops if that is below 2 x conns + 100.
Only the standard library is used (the frames are written by hand: Request field 1 is the
token; the other field numbers are read from proto/longseq.proto).
"""
import argparse
import os
import resource
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def frame(msg):
    return b"\0" + struct.pack(">I", len(msg)) + msg


def string_field(num, data):
    n, out = len(data), b""
    while True:  # varint length
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            break
    return bytes([num << 3 | 2]) + out + data


def health_request(token):
    # Request { token = 1; health = HealthRequest (its field number in the oneof) }
    return frame(string_field(1, token.encode()) + string_field(HEALTH_FIELD, b""))


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        k = s.recv(n - len(b))
        if not k:
            raise ConnectionError("closed")
        b += k
    return b


def call_health(port, token):
    """One Health call on a fresh connection: seconds, or None if refused."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(health_request(token))
        while True:  # replies until the Status (Reply field 1 is status in longseq.proto)
            h = recv_exact(s, 5)
            body = recv_exact(s, struct.unpack(">I", h[1:])[0])
            if body[:1] == bytes([STATUS_FIELD << 3 | 2]):
                ok = b"serving" in body or b"workers not ready" in body
                return time.perf_counter() - t0 if ok else None


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def field_numbers():
    """Request.health and Reply.status field numbers, read from the .proto."""
    text = (REPO / "proto" / "longseq.proto").read_text()
    req = text[text.index("message Request"):]
    rep = text[text.index("message Reply"):]
    import re
    h = int(re.search(r"HealthRequest\s+health\s*=\s*(\d+)", req).group(1))
    sub = int(re.search(r"SubmitRequest\s+submit\s*=\s*(\d+)", req).group(1))
    st = int(re.search(r"Status\s+status\s*=\s*(\d+)", rep).group(1))
    return h, sub, st


HEALTH_FIELD, SUBMIT_FIELD, STATUS_FIELD = field_numbers()


def good_client(port, token, seconds, out):
    """The good client, in a process of its own (the flood's threads do not delay it): a Health
    call every 20 ms for `seconds`; sends back [(start, seconds or None if refused)]."""
    calls, end = [], time.time() + seconds
    while time.time() < end:
        t = time.time()
        calls.append((t, call_health(port, token)))
        time.sleep(0.02)
    out.send(calls)


def measure(port, token, pid, seconds):
    """The good client's calls and the server's RSS (every 20 ms) over `seconds`."""
    import multiprocessing as mp
    here, there = mp.Pipe()
    p = mp.get_context("fork").Process(target=good_client, args=(port, token, seconds, there))
    p.start()
    rss = []
    while p.is_alive() and not here.poll():
        rss.append(rss_kb(pid))
        time.sleep(0.02)
    calls = here.recv()
    p.join()
    return {"lat": [dt for _, dt in calls if dt is not None], "refused": sum(dt is None for _, dt in calls),
            "rss": rss or [rss_kb(pid)], "calls": calls}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(REPO / "build" / "longseq"))
    ap.add_argument("--model", default=None, help="the server's model (default: longseq's default model)")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the flood (under --auth-timeout)")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * a.conns + 100
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"ulimit -n: the hard limit {hard} is below the {need} descriptors this flood needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need) if hard == resource.RLIM_INFINITY else hard, hard))

    work = Path(tempfile.mkdtemp(prefix="service-flood-"))
    token = secrets.token_hex(32)
    tf = work / "token"
    tf.write_text(token)
    tf.chmod(0o600)
    wf = work / "worker-token"  # external workers need a credential of their own (none connects here)
    wf.write_text(secrets.token_hex(32))
    wf.chmod(0o600)
    args = [a.bin, "serve", "--listen", "127.0.0.1:0", "--state", str(work / "state"), "--token-file", str(tf),
            "--workers", "external", "--worker-token-file", str(wf), "--max-conns", str(a.conns + 100), "--quiet"]
    if a.model:
        args += ["--model", a.model]
    log = open(work / "serve.log", "w+")
    srv = subprocess.Popen(args, stdout=log, stderr=log)
    port = None
    for _ in range(600):
        log.seek(0)
        text = log.read()
        if "(port " in text:
            port = int(text.split("(port ")[1].split(")")[0])
            break
        if srv.poll() is not None:
            sys.exit(f"longseq serve exited:\n{text}")
        time.sleep(0.05)
    try:
        run_flood(a, port, token, srv)
    finally:
        srv.terminate()
        srv.wait(30)


def run_flood(a, port, token, srv):
    call_health(port, token)
    rows = [("before", measure(port, token, srv.pid, 3))]

    # the flood: conns strangers each trickling a frame (a wrong token, never complete)
    slow = []
    for _ in range(a.conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        slow.append(s)
    trickle = frame(string_field(1, b"x" * 64) + string_field(HEALTH_FIELD, b""))
    stop = threading.Event()
    dropped = {}

    def trickler():
        i, t0 = 0, time.time()
        while not stop.is_set() and i < len(trickle):
            for k, s in enumerate(slow):
                if k in dropped:
                    continue
                try:
                    s.send(trickle[i:i + 1])
                except OSError:
                    dropped[k] = time.time() - t0
            i += 1
            stop.wait(1.5)

    big = {"sent": 0}

    def big_sender():  # one 64 MiB Submit with a wrong token: 33 million empty documents, the
        # costliest shape to unpack (an object per document)
        docs = b"\x0a\x00" * (((64 << 20) - 64) // 2)  # SubmitRequest.documents (field 1), empty
        body = string_field(1, b"not-the-token") + string_field(SUBMIT_FIELD, docs)
        data = frame(body)
        big["len"] = len(data)
        s = socket.create_connection(("127.0.0.1", port))
        t0 = time.time()
        try:
            view = memoryview(data)
            while big["sent"] < len(data):
                big["sent"] += s.send(view[big["sent"]:big["sent"] + (1 << 20)])
            s.settimeout(120)  # then wait for the answer, as a client does
            s.recv(4096)
        except OSError as e:
            big["error"] = e.__class__.__name__
        big["answered"] = time.time() - t0
        s.close()

    threads = [threading.Thread(target=trickler, daemon=True), threading.Thread(target=big_sender, daemon=True)]
    for t in threads:
        t.start()
    rows.append((f"during: {a.conns} trickling + 64 MiB frame", measure(port, token, srv.pid, a.seconds)))
    t_end = time.time()
    # after: the tricklers miss their --auth-timeout (10 s from connecting) and are dropped
    deadline = time.time() + 20
    while time.time() < deadline and len(dropped) < a.conns:
        time.sleep(0.5)
    stop.set()
    rows.append(("after", measure(port, token, srv.pid, 3)))
    for s in slow:
        s.close()

    print(f"service flood: {a.conns} connections trickling a frame one byte every 1.5 s, one 64 MiB frame "
          f"with a wrong token; a good client's Health call on a fresh connection every 20 ms")
    print("| phase | health calls | refused | median ms | p99 ms | max ms | server RSS MiB (max) |")
    print("|---|---|---|---|---|---|---|")
    for name, m in rows:
        lat = m["lat"]
        med = statistics.median(lat) * 1e3 if lat else float("nan")
        mx = max(lat) * 1e3 if lat else float("nan")
        p99 = sorted(lat)[int(0.99 * (len(lat) - 1))] * 1e3 if lat else float("nan")
        print(f"| {name} | {len(lat)} | {m['refused']} | {med:.1f} | {p99:.1f} | {mx:.1f} | {max(m['rss']) / 1024:.1f} |")
    sent = big["sent"]
    print(f"64 MiB frame ({big['len']} bytes): {sent / 2**20:.2f} MiB went into the socket, "
          f"{'then ' + big['error'] if 'error' in big else 'all of it'}; refused after "
          f"{big.get('answered', float('nan')):.2f} s")
    if dropped:
        print(f"trickling connections dropped by the server: {len(dropped)} of {a.conns}, after "
              f"{min(dropped.values()):.1f}-{max(dropped.values()):.1f} s (--auth-timeout 10 s; seen at the next byte)")
    print(f"(flood measured for {a.seconds:.0f} s, ended {time.time() - t_end:.0f} s before the last phase)")


if __name__ == "__main__":
    main()
