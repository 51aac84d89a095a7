#!/usr/bin/env python3
"""The OpenAI-compatible HTTP front end (`longseq serve --http`), checked from outside with the
official `openai` client, raw HTTP (sockets and urllib) and prometheus_client's parser.

- shapes: chat completion, completion, streaming of both (openai client and raw SSE), usage in
  every answer, /v1/models, /health; each text equals `longseq generate` (greedy) on the same
  prompt (chat: `generate --chat --system`); stop strings end the text before them;
- metrics: /metrics parses with prometheus_client; job, token and histogram counters move as
  completions run; the KV cache gauges are 0 before any job and, after one, the pool's
  allocated bytes equal the formula (2 x layers x KV heads x head_dim x 4 bytes per token, times
  the job's prompt + max_tokens slots rounded up to 64-token pages), none of it in use; with a
  group of 2 ranks the figures cover both ranks and add up to at least that formula;
- hostile HTTP: no or wrong bearer (refused before a declared 1 GiB body is sent), oversize
  headers and bodies (declared and chunked), headers sent slowly past --http-timeout (408 and
  closed), invalid JSON, invalid UTF-8, unknown routes and methods, bad fields, 1000 connections
  at once each answered 401; a good client is served throughout;
- a stream whose worker group is killed midway goes on after the retry without repeating text;
  the restart and the retry are counted in /metrics;
- the Batch API with the openai client: upload, create, poll, output and error files in input
  order (bad lines are error lines), unknown files and batches, cancel; kill -9 of the
  coordinator mid-batch and a restart: every line once, each line's job done once;
- `longseq batch IN --out OUT`: one line per request in order, exit 3 with bad lines, kill -9
  and rerun (every line once), a finished batch not run again;
- /health is 503 with the reason while no worker group is up;
- the long-document strategy under the extension key (`longseq: {strategy: "map-reduce", ...}`)
  on both routes, and per line in a batch file and in `longseq batch`.

All on a tiny model (tests/oracle/fixtures.py).
"""
import atexit
import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
from prometheus_client.parser import text_string_to_metric_families

from fixtures import write_tiny_llama
from lsoracle import BIN, check, done, fail, prose, run, tmpdir

WORK = tmpdir()
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TOKEN = "h77p-" + "%016x" % random.getrandbits(64)
TOKEN_FILE = WORK / "token"
TOKEN_FILE.write_text(TOKEN + "\n")
TOKEN_FILE.chmod(0o600)
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
STARTED = []


@atexit.register
def _kill_leftovers():
    for pgid in STARTED:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Server:
    def __init__(self, model, extra=(), state=None):
        self.log = WORK / f"serve-{random.getrandbits(32):08x}.log"
        self.state = state or WORK / f"state-{random.getrandbits(32):08x}"
        args = [str(BIN), "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--state", str(self.state),
                "--token-file", str(TOKEN_FILE), "--model", str(model), *map(str, extra)]
        self.f = open(self.log, "w")
        self.p = subprocess.Popen(args, stderr=self.f, stdout=self.f, env=ENV, start_new_session=True)
        STARTED.append(self.p.pid)
        self.port = None
        deadline = time.time() + 60
        while time.time() < deadline and self.port is None:
            m = re.search(r"\(http port (\d+)\)", self.log.read_text())
            if m:
                self.port = int(m.group(1))
            elif self.p.poll() is not None:
                fail(f"longseq serve exited {self.p.returncode}:\n{self.log.read_text()}")
            time.sleep(0.05)
        check(self.port is not None, "the server printed its HTTP port")
        self.base = f"http://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, token=TOKEN, headers=None, timeout=120):
        """(status, headers, body bytes)"""
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.request("GET", "/health", token=None)[0] == 200:
                return
            time.sleep(0.2)
        fail(f"the worker group did not come up:\n{self.log.read_text()}")

    def client(self):
        return openai.OpenAI(base_url=self.base + "/v1", api_key=TOKEN, max_retries=0, timeout=120)

    def kill9(self):
        os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait()
        self.f.close()

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            fail("the server did not stop after SIGTERM")
        self.f.close()
        check(rc == 0, f"serve exited {rc} after SIGTERM:\n{self.log.read_text()}")


def generate(model, prompt, n, chat=False, system=None):
    path = WORK / f"prompt-{random.getrandbits(32):08x}.txt"
    path.write_text(prompt)
    args = ["generate", "--model", str(model), "--prompt-file", str(path), "-n", str(n), "--temp", "0", "--json"]
    if chat:
        args.append("--chat")
    if system:
        args += ["--system", system]
    return json.loads(run(args).stdout)


def raw(port, data, read=True, timeout=30):
    """Sends bytes on a new connection; returns what came back until the server closed or went
    quiet."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    out = b""
    if read:
        try:
            while True:
                k = s.recv(65536)
                if not k:
                    break
                out += k
                if b"\r\n\r\n" in out and b"Connection: close" not in out:
                    head, _, rest = out.partition(b"\r\n\r\n")
                    m = re.search(rb"Content-Length: (\d+)", head, re.I)
                    if m and len(rest) >= int(m.group(1)):
                        break
        except (ConnectionResetError, socket.timeout):
            pass
    s.close()
    return out


def status_of(resp):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", resp)
    return int(m.group(1)) if m else None


def error_of(body):
    e = json.loads(body)["error"]
    check(isinstance(e.get("message"), str) and isinstance(e.get("type"), str) and "param" in e and "code" in e,
          f"an OpenAI error object: {e}")
    return e


# --- tests ---------------------------------------------------------------------------------

def test_shapes(srv, tiny):
    c = srv.client()
    models = c.models.list()
    check([m.id for m in models.data] == ["tiny"], f"models: {models}")
    system, user = "Be brief.", "the of and to in a is that"
    want = generate(tiny, user, 12, chat=True, system=system)
    r = c.chat.completions.create(model="tiny", messages=[{"role": "system", "content": system},
                                                          {"role": "user", "content": user}],
                                  max_tokens=12, temperature=0)
    check(r.choices[0].message.content == want["text"] and r.choices[0].message.role == "assistant",
          f"chat text {r.choices[0].message.content!r} == generate --chat {want['text']!r}")
    check(r.usage.prompt_tokens == want["prompt_tokens"] and r.usage.completion_tokens == want["tokens"]
          and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens,
          f"chat usage {r.usage} vs generate {want['prompt_tokens']}, {want['tokens']}")
    check(r.choices[0].finish_reason == ("length" if want["stop"] == "length" else "stop") and r.object == "chat.completion"
          and r.model == "tiny", f"chat answer: {r}")
    print(f"chat: {r.usage.prompt_tokens} + {r.usage.completion_tokens} tokens, text as generate --chat")

    # streaming: the events' text is the same text; the last chunk has the finish reason and usage
    chunks = list(c.chat.completions.create(model="tiny", messages=[{"role": "system", "content": system},
                                                                    {"role": "user", "content": user}],
                                            max_tokens=12, temperature=0, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    check(text == want["text"] and chunks[0].choices[0].delta.role == "assistant", f"streamed {text!r}")
    check(chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason and chunks[-1].usage.completion_tokens
          == want["tokens"] and len({ch.id for ch in chunks}) == 1, f"last chunk {chunks[-1]}")
    print(f"chat stream: {len(chunks)} chunks")

    prompt = "in a is that for it as was with"
    want = generate(tiny, prompt, 16)
    r = c.completions.create(model="tiny", prompt=prompt, max_tokens=16, temperature=0)
    check(r.choices[0].text == want["text"] and r.usage.prompt_tokens == want["prompt_tokens"]
          and r.usage.completion_tokens == want["tokens"], f"completion {r} vs {want}")
    chunks = list(c.completions.create(model="tiny", prompt=prompt, max_tokens=16, temperature=0, stream=True))
    check("".join(ch.choices[0].text for ch in chunks) == want["text"] and chunks[-1].usage.total_tokens
          == want["prompt_tokens"] + want["tokens"], "completion stream: the same text and usage")

    # stop strings: the text ends before the first one (two printable characters of the greedy text)
    full = generate(tiny, prompt, 64)["text"]
    cut = next((i for i in range(1, len(full) - 1) if full[i:i + 2].isascii() and full[i:i + 2].isprintable()
                and full[i:i + 2] not in full[:i + 1]), None)
    if cut is not None:
        stop = full[cut:cut + 2]
        r = c.completions.create(model="tiny", prompt=prompt, max_tokens=64, temperature=0, stop=[stop])
        check(r.choices[0].text == full[:full.index(stop)] and r.choices[0].finish_reason == "stop",
              f"stop {stop!r}: {r.choices[0].text!r} vs {full[:full.index(stop)]!r}")
    else:
        fail(f"no stop string found in {full!r}")

    # raw SSE: data lines, JSON each, then [DONE]; the job id in a header
    st, hdr, body = srv.request("POST", "/v1/completions", {"prompt": prompt, "max_tokens": 4, "stream": True})
    events = [ln[6:] for ln in body.decode().split("\n") if ln.startswith("data: ")]
    check(st == 200 and hdr["Content-Type"] == "text/event-stream" and events[-1] == "[DONE]"
          and all(json.loads(e)["object"] == "text_completion" for e in events[:-1])
          and re.fullmatch(r"j[0-9a-f]{16}", hdr["X-Longseq-Job"] or ""), f"raw SSE: {st} {hdr} {body[:300]!r}")
    # the job is in the store: the protobuf protocol's result shows it
    out = subprocess.run([str(BIN), "result", "--json", "--server", f"127.0.0.1:{srv.proto_port}", "--token-file",
                          str(TOKEN_FILE), hdr["X-Longseq-Job"]], capture_output=True, text=True, env=ENV)
    check(out.returncode == 0 and json.loads(out.stdout)["status"] == "done", f"result of the HTTP job: {out}")

    # the extension key and a bad one
    st, _, body = srv.request("POST", "/v1/completions", {"prompt": prompt, "max_tokens": 4,
                                                          "longseq": {"attention": "window", "window": 8}})
    check(st == 200 and json.loads(body)["longseq"]["attention"].startswith("window"), f"longseq ext: {st} {body!r}")
    st, _, body = srv.request("POST", "/v1/completions", {"prompt": prompt, "longseq": {"attention": "nope"}})
    check(st == 400 and "attention" in error_of(body)["message"], f"bad rule: {st} {body!r}")
    st, _, body = srv.request("POST", "/v1/completions", {"prompt": prompt, "longseq": {"bogus": 1}})
    check(st == 400 and "bogus" in error_of(body)["message"], f"unknown key: {st} {body!r}")
    for bad in ({"prompt": prompt, "max_tokens": 0}, {"prompt": prompt, "temperature": -1}, {"prompt": 5},
                {"prompt": prompt, "n": 2}, {"prompt": prompt, "stop": ["a"] * 9}, {"prompt": "   "}):
        st, _, body = srv.request("POST", "/v1/completions", bad)
        check(st == 400 and error_of(body)["type"] == "invalid_request_error", f"{bad}: {st} {body!r}")
    st, _, body = srv.request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}],
                                                               "model": "gpt-4"})
    check(st == 404 and error_of(body)["code"] == "model_not_found", f"unknown model: {st} {body!r}")
    st, _, body = srv.request("POST", "/v1/completions", {"prompt": "the " * 5000, "max_tokens": 4})
    check(st == 400 and "context" in error_of(body)["message"], f"too long: {st} {body!r}")
    print("extension key, bad fields, unknown model, too long: the right errors")


def metrics(srv):
    st, _, body = srv.request("GET", "/metrics")
    check(st == 200, f"/metrics: {st}")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    vals = {}
    for f in fams.values():
        for s in f.samples:
            key = s.name + ("" if not s.labels else "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}")
            vals[key] = s.value
    return fams, vals


KV_GAUGES = ("longseq_kv_bytes_in_use", "longseq_kv_bytes_allocated", "longseq_kv_bytes_budget",
             "longseq_kv_report_ranks")


def test_kv_before(srv):
    """Before any job the worker group has reported nothing: every KV gauge is 0."""
    fams, vals = metrics(srv)
    for name in KV_GAUGES:
        check(name in fams and fams[name].type == "gauge" and vals[name] == 0, f"{name} before any job: {vals.get(name)}")
    print("KV gauges: 0 before any job")


def test_kv_after(srv, hp):
    """One job larger than any before it: the pool (which, emptied, regrows to exactly what a lone
    sequence wants) holds its slots rounded up to pages; its sequence gave them back at the end."""
    n = 300
    r = srv.client().completions.create(model="tiny", prompt="the of and", max_tokens=n, temperature=0)
    _, vals = metrics(srv)
    per_token = 2 * hp["layers"] * hp["kv_heads"] * hp["head_dim"] * 4  # f32 keys and values: the CPU's default
    slots = r.usage.prompt_tokens + n
    want = -(-slots // 64) * 64 * per_token
    check(vals["longseq_kv_bytes_allocated"] == want,
          f"KV bytes allocated {vals['longseq_kv_bytes_allocated']}, formula {want} ({slots} slots, {per_token} B/token)")
    check(vals["longseq_kv_bytes_in_use"] == 0 and vals["longseq_kv_bytes_budget"] == 0
          and vals["longseq_kv_report_ranks"] == 1, f"KV after the job: {[(k, vals[k]) for k in KV_GAUGES]}")
    print(f"KV gauges after a job of {slots} slots: {want} bytes allocated (= formula), 0 in use, no budget, 1 rank")


def test_kv_group(tiny, hp):
    """A group of 2 ranks: the end-of-job figures are the sum over both. Each rank holds its share
    of the sequence's slots, so the sum is at least the one-sequence formula; the leader's pool
    alone would be about half of it."""
    srv = Server(tiny, ["--np", "2"])
    try:
        srv.wait_ready()
        n = 300
        r = srv.client().completions.create(model="tiny", prompt="the of and", max_tokens=n, temperature=0)
        _, vals = metrics(srv)
    finally:
        srv.stop()
    page = 64 * 2 * hp["layers"] * hp["kv_heads"] * hp["head_dim"] * 4
    want = -(-(r.usage.prompt_tokens + n) // 64) * page
    got = vals["longseq_kv_bytes_allocated"]
    check(vals["longseq_kv_report_ranks"] == 2 and vals["longseq_kv_bytes_in_use"] == 0 and got % page == 0
          and got >= want, f"2 ranks: {[(k, vals[k]) for k in KV_GAUGES]}, at least {want} allocated")
    print(f"KV gauges of a 2-rank group: {got:.0f} bytes allocated over 2 ranks (>= {want} for the whole sequence)")


def test_metrics(srv):
    fams, before = metrics(srv)
    for name in ("longseq_queue_depth", "longseq_jobs", "longseq_prefill_tokens", "longseq_decode_tokens",
                 "longseq_time_to_first_token_seconds", "longseq_request_latency_seconds",
                 "longseq_worker_group_restarts", "longseq_job_retries", "longseq_workers_ready"):
        check(name in fams, f"/metrics has {name}: {sorted(fams)}")
    check(fams["longseq_request_latency_seconds"].type == "histogram", "latency is a histogram")
    r = srv.client().completions.create(model="tiny", prompt="the of and", max_tokens=5, temperature=0)
    _, after = metrics(srv)
    check(after["longseq_jobs{state=done}"] == before["longseq_jobs{state=done}"] + 1, "jobs done +1")
    check(after["longseq_decode_tokens_total"] == before["longseq_decode_tokens_total"] + r.usage.completion_tokens
          and after["longseq_prefill_tokens_total"] == before["longseq_prefill_tokens_total"] + r.usage.prompt_tokens,
          f"token counters moved by the usage {r.usage}")
    check(after["longseq_request_latency_seconds_count"] == before["longseq_request_latency_seconds_count"] + 1
          and after["longseq_time_to_first_token_seconds_count"] >= before["longseq_time_to_first_token_seconds_count"]
          and after["longseq_workers_ready"] == 1, "latency and TTFT histograms counted the job")
    check(after["longseq_http_requests_total"] > before["longseq_http_requests_total"], "HTTP requests counted")
    st, _, _ = srv.request("GET", "/metrics", token=None)
    check(st == 401, f"/metrics without the token: {st}")
    print(f"metrics: {len(fams)} families parsed by prometheus_client; counters moved")


def worker_pids(srv):
    out = subprocess.run(["pgrep", "-f", f"longseq worker --connect 127.0.0.1:{srv.proto_port}"], capture_output=True,
                         text=True).stdout.split()
    pids = []
    for p in out:
        try:
            if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].endswith(b"longseq"):
                pids.append(int(p))
        except OSError:
            pass
    return pids


def test_stream_retry(srv, tiny):
    """The worker group killed while a stream runs: the job runs again and the stream goes on
    where it was (no text twice), as generate's text; the restart and the retry are counted."""
    _, before = metrics(srv)
    prompt, n = "the of and to in a is that", 3000
    want = generate(tiny, prompt, n)
    req = urllib.request.Request(srv.base + "/v1/completions", method="POST", data=json.dumps(
        {"prompt": prompt, "max_tokens": n, "stream": True}).encode(), headers={"Authorization": f"Bearer {TOKEN}"})
    text, killed, last = "", False, None
    with urllib.request.urlopen(req, timeout=300) as r:
        for line in r:
            if not line.startswith(b"data: {"):
                continue
            ev = json.loads(line[6:])
            text += ev["choices"][0]["text"] if ev["choices"] else ""
            last = ev
            if not killed and len(text) > 20:
                pids = worker_pids(srv)
                check(len(pids) == 1, f"one rank to kill: {pids}")
                os.kill(pids[0], signal.SIGKILL)
                killed = True
    check(killed and text == want["text"] and last["usage"]["completion_tokens"] == want["tokens"],
          f"stream across a retry: {len(text)} chars vs generate's {len(want['text'])}")
    _, after = metrics(srv)
    check(after["longseq_worker_group_restarts_total"] == before["longseq_worker_group_restarts_total"] + 1
          and after["longseq_job_retries_total"] == before["longseq_job_retries_total"] + 1,
          "the group's restart and the job's retry counted")
    srv.wait_ready()
    print(f"stream across a killed worker group: {want['tokens']} tokens, text as generate, no text twice")


def served(srv):
    st, _, body = srv.request("POST", "/v1/completions", {"prompt": "the of", "max_tokens": 2}, timeout=60)
    return st == 200 and json.loads(body)["usage"]["completion_tokens"] >= 1


def test_hostile(srv):
    port = srv.port
    # no bearer, a wrong one, another scheme: 401 before the declared GiB is sent
    for auth in (b"", b"Authorization: Bearer wrong\r\n", b"Authorization: Basic " + TOKEN.encode() + b"\r\n",
                 b"Authorization: Bearer " + TOKEN.encode() + b"x\r\n"):
        resp = raw(port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + auth +
                   b"Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{")
        check(status_of(resp) == 401 and b"WWW-Authenticate: Bearer" in resp and b"authentication_error" in resp,
              f"auth {auth!r}: {resp[:200]!r}")
    # a declared body over --http-max-body, and a chunked one that grows past it
    hdr = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
    resp = raw(port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + hdr + b"Content-Length: 2000000\r\n\r\n")
    check(status_of(resp) == 413, f"declared oversize body: {resp[:200]!r}")
    chunk = b"x" * 100000
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(12)) + b"0\r\n\r\n"
    resp = raw(port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + hdr + b"Transfer-Encoding: chunked\r\n\r\n" + body)
    check(status_of(resp) == 413, f"chunked oversize body: {resp[:200]!r}")
    # oversize headers
    resp = raw(port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + hdr + b"X-Big: " + b"a" * 40000 + b"\r\n\r\n")
    check(status_of(resp) == 431, f"oversize headers: {resp[:200]!r}")
    # invalid JSON, invalid UTF-8, not an object, unknown routes and methods
    for data, want in ((b"{nope", 400), (b'{"prompt": "\xff\xfe"}', 400), (b"[1, 2]", 400), (b"", 400)):
        st, _, body = srv.request("POST", "/v1/completions", data)
        check(st == want and error_of(body)["type"] == "invalid_request_error", f"body {data!r}: {st} {body!r}")
    for method, path, want in (("GET", "/v1/nothing", 404), ("GET", "/v1/completions", 405),
                               ("POST", "/v1/models", 405), ("DELETE", "/health", 405), ("GET", "/", 404)):
        st, _, body = srv.request(method, path, b"{}" if method == "POST" else None)
        check(st == want, f"{method} {path}: {st} {body!r}")
        if body:
            error_of(body)
    check(status_of(raw(port, b"\x16\x03\x01garbage\r\n\r\n")) in (400, None), "garbage bytes: 400 or closed")
    check(served(srv), "a good client is served after the hostile requests")

    # headers sent slowly: answered 408 and closed once --http-timeout (3 s) has passed
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\n")
    got, t0 = b"", time.time()
    while time.time() - t0 < 60:
        try:
            s.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            break
        s.settimeout(0.5)
        try:
            k = s.recv(4096)
            got += k
            if not k:
                break
        except socket.timeout:
            pass
        except ConnectionResetError:
            break
    s.close()
    check(status_of(got) == 408 or got == b"", f"slow headers: answered 408 or closed: {got[:100]!r}")
    print(f"slow headers: closed after {time.time() - t0:.1f} s with {got[:12]!r}")
    check(time.time() - t0 < 60, "slow headers: the connection was closed")
    check(served(srv), "a good client is served after the slow sender")

    # 1000 connections at once, each a request with a wrong token: each answered 401
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    socks = []
    for _ in range(1000):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        socks.append(s)
    good = served(srv)  # while all are open
    for s in socks:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n")
    codes = {}
    for s in socks:
        buf = b""
        while b"\r\n\r\n" not in buf:
            k = s.recv(4096)
            if not k:
                break
            buf += k
        codes[status_of(buf)] = codes.get(status_of(buf), 0) + 1
        s.close()
    check(good, "a good client is served while 1000 connections are open")
    check(codes == {401: 1000}, f"1000 connections: each answered 401: {codes}")
    check(served(srv), "a good client is served after 1000 connections")
    print("hostile HTTP: auth before the body, size limits, slow headers, bad bodies, routes, 1000 connections")


def test_health_down(tiny):
    wt = WORK / "worker-token"
    wt.write_text("w-" + "%016x" % random.getrandbits(64) + "\n")
    wt.chmod(0o600)
    srv = Server(tiny, ["--workers", "external", "--worker-token-file", str(wt), "--max-frame", "1024",
                        "--max-buffered", "1048576", "--http-max-body", "4000000"])
    try:
        st, _, body = srv.request("GET", "/health", token=None)
        check(st == 503 and json.loads(body)["status"] == "unavailable", f"/health without workers: {st} {body!r}")
        # a completion is accepted (a job in the store) and waits; the client gives up, the server goes on
        try:
            srv.request("POST", "/v1/completions", {"prompt": "the of", "max_tokens": 2}, timeout=1)
        except (socket.timeout, TimeoutError, urllib.error.URLError):
            pass
        st, _, _ = srv.request("GET", "/v1/models")
        check(st == 200, "served after a client gave up waiting")
        _, vals = metrics(srv)
        check(vals["longseq_queue_depth"] == 1 and vals["longseq_workers_ready"] == 0, f"queue depth 1: {vals}")
        # bodies under --http-max-body but over --max-buffered (shared with the protocol): 503,
        # by the declared length or, chunked, as the body grows
        hdr = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        resp = raw(srv.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + hdr + b"Content-Length: 1200000\r\n\r\n")
        check(status_of(resp) == 503, f"declared body over --max-buffered: {resp[:200]!r}")
        chunk = b"x" * 100000
        body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(12)) + b"0\r\n\r\n"
        resp = raw(srv.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + hdr + b"Transfer-Encoding: chunked\r\n\r\n" + body)
        check(status_of(resp) == 503, f"chunked body over --max-buffered: {resp[:200]!r}")
        check(srv.request("GET", "/v1/models")[0] == 200, "served after the big bodies")
    finally:
        srv.stop()
    print("health: 503 with the reason while no worker group is up")


def batch_lines(n_good, bad=True, max_tokens=None):
    """Request lines for a chat batch: good ones with their own settings, and (bad) four bad
    ones among them; returns (the JSONL, [(custom_id, user text, max_tokens) for good lines],
    [custom_id of bad lines])"""
    good, bads, out = [], [], []
    for i in range(n_good):
        user, n = " ".join(random.Random(i).choice("the of and to in a is that".split()) for _ in range(6 + i)), 3 + i % 5
        n = max_tokens or n
        body = {"model": "tiny", "messages": [{"role": "user", "content": user}], "max_tokens": n}
        out.append(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}))
        good.append((f"req-{i}", user, n))
        if bad and i == 1:
            out.append('{"custom_id": "broken", "method": "POST", "url": ')
            bads.append("")
        if bad and i == 2:
            out.append(json.dumps({"custom_id": "wrong-url", "method": "POST", "url": "/v1/completions", "body": body}))
            bads.append("wrong-url")
            out.append(json.dumps({"custom_id": "bad-temp", "method": "POST", "url": "/v1/chat/completions",
                                   "body": dict(body, temperature=-1)}))
            bads.append("bad-temp")
            out.append(json.dumps({"custom_id": "too-long", "method": "POST", "url": "/v1/chat/completions",
                                   "body": dict(body, messages=[{"role": "user", "content": "the " * 5000}])}))
            bads.append("too-long")
    return "\n".join(out) + "\n", good, bads


def wait_batch(c, bid, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = c.batches.retrieve(bid)
        if b.status in ("completed", "cancelled", "failed", "expired"):
            return b
        time.sleep(0.2)
    fail(f"batch {bid} did not end: {b}")


def check_output(c, b, good, bads, tiny, expect=None):
    out = [json.loads(ln) for ln in c.files.content(b.output_file_id).text.splitlines()]
    err = [json.loads(ln) for ln in c.files.content(b.error_file_id).text.splitlines()]
    check([o["custom_id"] for o in out] == [g[0] for g in good], f"output lines in order: {[o['custom_id'] for o in out]}")
    check([e["custom_id"] for e in err] == bads and all(e["response"] is None and e["error"]["message"] for e in err),
          f"error lines in order: {err}")
    for o, (cid, user, n) in zip(out, good):
        if expect is None:
            want = generate(tiny, user, n, chat=True)
            check(o["response"]["status_code"] == 200 and o["response"]["body"]["choices"][0]["message"]["content"]
                  == want["text"] and o["response"]["body"]["usage"]["completion_tokens"] == want["tokens"],
                  f"{cid}: {o} vs generate --chat {want['text']!r}")
    check(b.request_counts.total == len(good) + len(bads) and b.request_counts.completed == len(good)
          and b.request_counts.failed == len(bads), f"request counts {b.request_counts}")
    return out, err


def test_batch(srv, tiny):
    c = srv.client()
    jsonl, good, bads = batch_lines(5)
    f = c.files.create(file=("in.jsonl", jsonl.encode()), purpose="batch")
    check(f.purpose == "batch" and f.bytes == len(jsonl.encode()) and c.files.retrieve(f.id).id == f.id, f"file {f}")
    check(c.files.content(f.id).content == jsonl.encode(), "the input file reads back")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                         metadata={"who": "test_http"})
    check(b.status == "in_progress" and b.metadata == {"who": "test_http"}, f"batch {b}")
    b = wait_batch(c, b.id)
    check(b.status == "completed", f"batch ended {b.status}")
    check_output(c, b, good, bads, tiny)
    listed = c.batches.list(limit=5)
    check([x.id for x in listed.data][:1] == [b.id] and listed.data[0].status == "completed", f"list: {listed}")
    # the wrong shapes
    st, _, body = srv.request("POST", "/v1/batches", {"input_file_id": "file-nope", "endpoint": "/v1/chat/completions"})
    check(st == 404, f"unknown input file: {st} {body!r}")
    st, _, body = srv.request("POST", "/v1/batches", {"input_file_id": f.id, "endpoint": "/v1/embeddings"})
    check(st == 400 and "endpoint" in error_of(body)["message"], f"bad endpoint: {st} {body!r}")
    st, _, body = srv.request("POST", "/v1/files", b"{}")
    check(st == 400, f"a file not as multipart: {st} {body!r}")
    st, _, _ = srv.request("GET", "/v1/batches/batch_nope")
    check(st == 404, "unknown batch: 404")
    st, _, _ = srv.request("DELETE", f"/v1/batches/{b.id}")
    check(st == 405, "DELETE a batch: 405")
    # cancel: every line still ends up in exactly one of the two files
    jsonl, good, _ = batch_lines(30, bad=False)
    f = c.files.create(file=("many.jsonl", jsonl.encode()), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = c.batches.cancel(b.id)
    check(b.status == "cancelling", f"cancel: {b.status}")
    b = wait_batch(c, b.id)
    out = [json.loads(ln)["custom_id"] for ln in c.files.content(b.output_file_id).text.splitlines()]
    err = [json.loads(ln)["custom_id"] for ln in c.files.content(b.error_file_id).text.splitlines()]
    check(b.status == "cancelled" and sorted(out + err) == sorted(g[0] for g in good) and len(err) > 0,
          f"cancelled batch: {len(out)} done + {len(err)} cancelled of {len(good)}")
    print(f"batch: upload, create, poll, output and error files in order; cancel: {len(out)} done, {len(err)} cancelled")


def test_batch_kill(tiny):
    """kill -9 of the coordinator (and its workers) during a batch: after a restart on the same
    state every line is in the output exactly once, and each line's job ran to done once."""
    state = WORK / "state-batch-kill"
    srv = Server(tiny, state=state)
    srv.wait_ready()
    c = srv.client()
    jsonl, good, _ = batch_lines(40, bad=False, max_tokens=200)
    f = c.files.create(file=("kill.jsonl", jsonl.encode()), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.time() + 120
    while time.time() < deadline and c.batches.retrieve(b.id).request_counts.completed < 5:
        time.sleep(0.05)
    done_before = c.batches.retrieve(b.id).request_counts.completed
    check(5 <= done_before < len(good), f"killed mid-batch ({done_before} of {len(good)} done)")
    srv.kill9()
    srv = Server(tiny, state=state)
    try:
        srv.wait_ready()
        c = srv.client()
        b = wait_batch(c, b.id)
        out = [json.loads(ln) for ln in c.files.content(b.output_file_id).text.splitlines()]
        check(b.status == "completed" and [o["custom_id"] for o in out] == [g[0] for g in good],
              f"after the restart: every line once, in order ({len(out)} lines)")
    finally:
        srv.stop()
    import sqlite3
    db = sqlite3.connect(state / "jobs.db")
    jobs = [r[0] for r in db.execute("SELECT job FROM batch_lines WHERE batch = ? ORDER BY line", (b.id,))]
    done_rows = dict(db.execute("SELECT job_id, count(*) FROM job_log WHERE state = 2 GROUP BY job_id").fetchall())
    n_jobs = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
    db.close()
    check(len(set(jobs)) == len(good) and all(done_rows.get(j) == 1 for j in jobs) and n_jobs == len(good),
          f"one job per line, each done once ({n_jobs} jobs for {len(good)} lines)")
    print(f"batch kill -9 after {done_before} of {len(good)} lines: completed after the restart, every line once")


def test_offline_batch(tiny):
    """longseq batch IN --out OUT: one line per request in order (bad lines as error lines, exit
    3), texts as generate; killed with -9 midway and run again: it goes on, every line once; run
    once more: nothing runs again."""
    jsonl, good, bads = batch_lines(4)
    inp, out = WORK / "offline.jsonl", WORK / "offline-out.jsonl"
    inp.write_text(jsonl)
    args = [str(BIN), "batch", str(inp), "--out", str(out), "--model", str(tiny)]
    p = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600)
    check(p.returncode == 3 and "4 lines failed" in p.stderr, f"longseq batch: {p.returncode} {p.stderr}")
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    def cid_of(ln):
        try:
            return json.loads(ln)["custom_id"]
        except ValueError:
            return ""  # not JSON: its error line has no custom_id
    order = [cid_of(ln) for ln in jsonl.splitlines()]
    check([ln["custom_id"] for ln in lines] == order, f"one line per request, in order: {[ln['custom_id'] for ln in lines]}")
    by_id = {ln["custom_id"]: ln for ln in lines}
    for cid, user, n in good:
        want = generate(tiny, user, n, chat=True)
        check(by_id[cid]["response"]["body"]["choices"][0]["message"]["content"] == want["text"], f"{cid} as generate")
    check(all(by_id[b]["error"]["message"] for b in bads if b), "bad lines carry their errors")

    # killed midway, then run again: it goes on; every line once
    jsonl, good, _ = batch_lines(30, bad=False, max_tokens=200)
    inp.write_text(jsonl)
    out = WORK / "offline-kill.jsonl"
    args = [str(BIN), "batch", str(inp), "--out", str(out), "--model", str(tiny)]
    k = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    STARTED.append(k.pid)
    db_path = WORK / "offline-kill.jsonl.state" / "jobs.db"
    import sqlite3
    deadline, n_done = time.time() + 300, 0
    while time.time() < deadline and n_done < 5 and k.poll() is None:
        time.sleep(0.1)
        try:
            db = sqlite3.connect(db_path)
            n_done = db.execute("SELECT count(*) FROM jobs WHERE state = 2").fetchone()[0]
            db.close()
        except sqlite3.Error:
            pass
    os.killpg(k.pid, signal.SIGKILL)
    k.wait()
    check(5 <= n_done < len(good) and not out.exists(), f"killed midway ({n_done} of {len(good)} done, no output yet)")
    p = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600)
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    check(p.returncode == 0 and [ln["custom_id"] for ln in lines] == [g[0] for g in good]
          and all(ln["response"]["status_code"] == 200 for ln in lines), f"rerun: {p.returncode} {p.stderr}")
    db = sqlite3.connect(db_path)
    n_jobs = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
    done_rows = db.execute("SELECT count(*), count(DISTINCT job_id) FROM job_log WHERE state = 2").fetchone()
    db.close()
    check(n_jobs == len(good) and done_rows == (len(good), len(good)), f"each line's job done once: {n_jobs}, {done_rows}")
    # once more: nothing runs, the same output
    before = out.read_text()
    p = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600)
    db = sqlite3.connect(db_path)
    n_jobs2 = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
    db.close()
    check(p.returncode == 0 and out.read_text() == before and n_jobs2 == n_jobs, "a finished batch is not run again")
    print(f"longseq batch: in order with error lines; killed after {n_done} of {len(good)}, resumed, every line once")


def strategy_lines():
    """A chat batch whose lines each carry their own strategy (and one a bad one)."""
    doc = prose(60, 5)
    lines = [("direct", {"messages": [{"role": "user", "content": "Ruth gleaned in the field of Boaz."}]}),
             ("mr", {"messages": [{"role": "user", "content": doc}], "longseq": {"strategy": "map-reduce", "chunk_tokens": 600}}),
             ("extend", {"messages": [{"role": "user", "content": doc}], "longseq": {"strategy": "extend"}}),
             ("bad", {"messages": [{"role": "user", "content": doc}], "longseq": {"strategy": "abridge"}})]
    return "".join(json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                               "body": dict(body, model="tiny", max_tokens=6)}) + "\n" for cid, body in lines)


def check_strategy_lines(by_id):
    ext = {cid: (ln["response"] or {}).get("body", {}).get("longseq", {}) for cid, ln in by_id.items()}
    check("strategy" not in ext["direct"] and by_id["direct"]["response"]["status_code"] == 200, f"direct: {by_id['direct']}")
    check(ext["mr"].get("strategy") == "map-reduce" and ext["mr"]["chunks"] >= 3 and ext["mr"]["levels"] >= 1, f"mr: {ext['mr']}")
    check(ext["extend"].get("strategy") == "extend" and ext["extend"]["chunks"] == 1 and ext["extend"]["calls"] == 1,
          f"extend: {ext['extend']}")
    check(by_id["bad"]["response"] is None and "settings.strategy \"abridge\"" in by_id["bad"]["error"]["message"],
          f"a bad strategy is an error line: {by_id['bad']}")


def test_strategy(srv, tiny):
    """longseq.strategy under the extension key: a long document summarized by map-reduce on the
    server (the record's strategy, chunks and levels in the answer's `longseq`), on both routes,
    streamed too (the final summary in the events, as the answer not streamed);
    a batch file and `longseq batch` whose lines carry different strategies."""
    doc = prose(60, 5)
    c = srv.client()
    r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": doc}], max_tokens=6,
                                  extra_body={"longseq": {"strategy": "map-reduce", "chunk_tokens": 600}})
    ext = r.model_extra["longseq"]
    check(ext["strategy"] == "map-reduce" and ext["chunks"] >= 3 and ext["levels"] >= 1 and ext["calls"] > ext["chunks"]
          and r.usage.prompt_tokens > 1000, f"chat with map-reduce: {ext} {r.usage}")
    parts = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": doc}], max_tokens=6, stream=True,
                                      extra_body={"longseq": {"strategy": "map-reduce", "chunk_tokens": 600}})
    chunks = list(parts)
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    check(streamed == r.choices[0].message.content and chunks[-1].model_extra["longseq"]["strategy"] == "map-reduce",
          f"streamed, the same summary (greedy): {streamed!r} vs {r.choices[0].message.content!r}")
    st, _, body = srv.request("POST", "/v1/completions", {"model": "tiny", "prompt": doc, "max_tokens": 6,
                                                          "longseq": {"strategy": "map-reduce", "chunk_tokens": 600,
                                                                      "combine_parts": 2}})
    ext = json.loads(body)["longseq"] if st == 200 else {}
    check(st == 200 and ext["strategy"] == "map-reduce" and ext["calls"] == 2 * ext["chunks"] - 1,
          f"completion with map-reduce, parts in pairs: {st} {body[:500]!r}")
    st, _, body = srv.request("POST", "/v1/completions", {"model": "tiny", "prompt": doc, "longseq": {"strategy": 3}})
    check(st == 400 and "longseq.strategy must be a string" in error_of(body)["message"], f"{st} {body!r}")
    st, _, body = srv.request("POST", "/v1/chat/completions", {"model": "tiny", "longseq": {"strategy": "map-reduce"},
                                                               "messages": [{"role": "user", "content": doc},
                                                                            {"role": "assistant", "content": "ok"}]})
    check(st == 400 and "the last message must be the user's document" in error_of(body)["message"], f"{st} {body!r}")
    jsonl = strategy_lines()
    f = c.files.create(file=("strategies.jsonl", jsonl.encode()), purpose="batch")
    b = wait_batch(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    lines = [json.loads(ln) for ln in c.files.content(b.output_file_id).text.splitlines()]
    lines += [json.loads(ln) for ln in c.files.content(b.error_file_id).text.splitlines()]
    check_strategy_lines({ln["custom_id"]: ln for ln in lines})
    inp, out = WORK / "strategies.jsonl", WORK / "strategies-out.jsonl"
    inp.write_text(jsonl)
    p = subprocess.run([str(BIN), "batch", str(inp), "--out", str(out), "--model", str(tiny)], capture_output=True,
                       text=True, env=ENV, timeout=600)
    lines = [json.loads(ln) for ln in out.read_text().splitlines()] if out.exists() else []
    check(p.returncode == 3 and [ln["custom_id"] for ln in lines] == ["direct", "mr", "extend", "bad"],
          f"longseq batch: {p.returncode} {p.stderr[-2000:]}")
    check_strategy_lines({ln["custom_id"]: ln for ln in lines})
    print(f"strategy: map-reduce over HTTP ({ext['chunks']} chunks, {ext['calls']} calls in pairs), "
          "per-line strategies in a batch file and in longseq batch")


def main():
    tiny = WORK / "tiny.gguf"
    hp = write_tiny_llama(str(tiny), embd=64, heads=4, kv_heads=2, ff=128, ctx=4096, chat_template=CHATML).hp
    srv = Server(tiny, ["--http-max-body", "1000000", "--http-max-header", "16384", "--http-timeout", "3",
                        "--http-max-conns", "1100"])
    m = re.search(r"\(port (\d+)\)", srv.log.read_text())
    srv.proto_port = int(m.group(1))
    try:
        srv.wait_ready()
        test_kv_before(srv)
        test_shapes(srv, tiny)
        test_metrics(srv)
        test_kv_after(srv, hp)
        test_hostile(srv)
        test_batch(srv, tiny)
        test_strategy(srv, tiny)
        test_stream_retry(srv, tiny)
    finally:
        srv.stop()
    test_batch_kill(tiny)
    test_offline_batch(tiny)
    test_health_down(tiny)
    test_kv_group(tiny, hp)
    done("test_http")


if __name__ == "__main__":
    main()
