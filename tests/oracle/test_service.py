#!/usr/bin/env python3
"""The job service (`longseq serve` and its clients), checked from outside by an independent
client: this file speaks the protocol of docs/protocol.md with the `protobuf` package and code
generated from proto/longseq.proto (grpc_tools' protoc), not with longseq's own C client.

- protocol: Submit (several documents in one call), Watch (states, prefill progress, text),
  Result, List, Health, Cancel; the text of each job equals `longseq generate` run on the same
  prompt in one process (summarize: the document and the request in the model's chat template);
  perplexity equals `longseq perplexity`; the C client commands (submit, watch, result, jobs,
  cancel) against the same server; `longseq summarize --np 2` end to end with its JSONL;
- batch users: progress lines off a terminal, `submit --watch` text, List / `jobs --json` /
  `result --json` records, queue-position updates; `summarize` stopped mid-batch keeps its
  records and its state with the unreturned jobs; docs/protocol.md's client runs as printed; a
  non-leader rank's death is not reported as the leader's;
- isolation: with the test as the worker group's leader, a watcher of a running job that has
  no text yet is sent no other job's text; a running job cancelled after some text keeps it;
  a watch longer than --idle-timeout does not make its connection idle;
- hostile input: random bytes, truncated frames, oversize lengths, unknown methods, messages
  that do not parse, invalid UTF-8, missing and wrong tokens, too many documents, documents too
  long for the context, idle connections: each gets its status code, and a client watching a
  job on another connection meanwhile is served to the end;
- before authentication: a 64 MiB frame with a wrong token refused after its first bytes (the
  server's memory unchanged, a good client's health calls fast meanwhile), the token not first
  refused, frames and tokens trickled past --frame-timeout / --auth-timeout dropped, a frame
  over --max-buffered refused, and a worker group's leader let in while clients hold every
  --max-conns slot;
- documents: one Submit of good, empty, whitespace-only, non-UTF-8, NUL, too-long, too-many-
  bytes documents and a bad name: the call succeeds, each bad document is a job FAILED with its
  error (the reply's errors, Result, Watch, List), the good ones run; `summarize` with bad files
  writes their error records and the good ones' summaries (exit 3);
- preparation off the loop: while a 60 MiB document is tokenized, health calls on other
  connections answer within 0.5 s; a client that closes, and SIGTERM, mid-preparation;
- durability: 50 jobs, kill -9 of the coordinator in the middle, restart: every job done
  exactly once (job_log), results of jobs finished before the crash unchanged, PRAGMA
  integrity_check ok; SIGTERM: exit 0, the running job is queued again and finishes after a
  restart; a schema-1 store is migrated; a store from a newer longseq is refused;
- worker failure: a rank killed mid-prefill: the job is retried and completes (attempts 2); a
  job whose group is killed on every attempt fails after --attempts with the reason;
- cancel: a queued job at once; a running job within seconds, in prefill and in decode;
- load: 200 concurrent clients each submitting a job and watching it to the end, twice: all
  done; the server's open descriptors return to where they were and its resident memory does
  not grow between the rounds.

`test_service.py --quick` skips the default-model parts (worker failure, cancel, summarize).
"""
import atexit
import os
import random
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from fixtures import write_tiny_llama
from lsoracle import BIN, KJV, MODEL, REPO, check, done, fail, need_file, run, tmpdir

WORK = tmpdir()
subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'proto'}", f"--python_out={WORK}",
                str(REPO / "proto" / "longseq.proto")], check=True)
sys.path.insert(0, str(WORK))
import longseq_pb2 as pb  # noqa: E402

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TOKEN = "s3cret-" + "%016x" % random.getrandbits(64)
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
TOKEN_FILE = WORK / "token"
TOKEN_FILE.write_text(TOKEN + "\n")
TOKEN_FILE.chmod(0o600)  # a token file others may read is refused, as ssh refuses such a key
# The workers' own credential (serve --worker-token-file; external workers read the same file)
WORKER_TOKEN = "w0rker-" + "%016x" % random.getrandbits(64)
WORKER_TOKEN_FILE = WORK / "worker-token"
WORKER_TOKEN_FILE.write_text(WORKER_TOKEN + "\n")
WORKER_TOKEN_FILE.chmod(0o600)
EXTERNAL = ["--workers", "external", "--worker-token-file", str(WORKER_TOKEN_FILE)]
SUMMARIZE_ASK = "Summarize the text above in a few sentences."


# --- the protocol, from the outside --------------------------------------------------------

def frame(msg: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        k = s.recv(n - len(b))
        if not k:
            raise ConnectionError("closed")
        b += k
    return b


def recv_reply(s):
    h = recv_exact(s, 5)
    check(h[0] == 0, f"reply flags byte {h[0]}")
    r = pb.Reply()
    r.ParseFromString(recv_exact(s, struct.unpack(">I", h[1:])[0]))
    return r


def call(s, req, token=TOKEN):
    """Sends a Request; returns (the replies before the status, the status)."""
    if token is not None:
        req.token = token
    s.sendall(frame(req.SerializeToString()))
    out = []
    while True:
        r = recv_reply(s)
        if r.WhichOneof("body") == "status":
            return out, r.status
        out.append(r)


STARTED = []  # every server's process group, killed at exit whatever happened


@atexit.register
def _kill_leftovers():
    for pgid in STARTED:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Server:
    def __init__(self, state, model, np_=1, extra=(), log=None, env=None):
        self.state, self.model = state, model
        self.log = log or (WORK / f"serve-{random.getrandbits(32):08x}.log")
        args = [str(BIN), "serve", "--listen", "127.0.0.1:0", "--state", str(state), "--token-file", str(TOKEN_FILE),
                "--np", str(np_), "--model", str(model), *map(str, extra)]
        self.f = open(self.log, "w")
        self.p = subprocess.Popen(args, stderr=self.f, stdout=self.f, env=env or ENV, start_new_session=True)
        STARTED.append(self.p.pid)
        self.port = None
        deadline = time.time() + 60
        while time.time() < deadline and self.port is None:
            m = re.search(r"\(port (\d+)\)", self.log.read_text())
            if m:
                self.port = int(m.group(1))
            elif self.p.poll() is not None:
                fail(f"longseq serve exited {self.p.returncode}:\n{self.log.read_text()}")
            time.sleep(0.05)
        check(self.port is not None, "the server printed its port")

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=600)
        return s

    def rpc(self, req, token=TOKEN):
        with self.connect() as s:
            return call(s, req, token)

    def submit(self, docs, **settings):
        req = pb.Request(submit=pb.SubmitRequest(documents=[pb.Document(name=n, text=t) for n, t in docs],
                                                 settings=pb.Settings(**settings)))
        replies, st = self.rpc(req)
        check(st.code == pb.OK, f"submit: {pb.Code.Name(st.code)} {st.message}")
        return list(replies[0].submit.job_ids)

    def watch(self, job_id, on_event=None):
        """All events of a job until its stream ends; returns (events, status)."""
        with self.connect() as s:
            s.sendall(frame(pb.Request(token=TOKEN, watch=pb.WatchRequest(job_id=job_id)).SerializeToString()))
            events = []
            while True:
                r = recv_reply(s)
                if r.WhichOneof("body") == "status":
                    return events, r.status
                events.append(r.event)
                if on_event:
                    on_event(r.event)

    def result(self, job_id):
        replies, st = self.rpc(pb.Request(result=pb.ResultRequest(job_id=job_id)))
        check(st.code == pb.OK, f"result {job_id}: {st.message}")
        return replies[0].result

    def health(self):
        replies, st = self.rpc(pb.Request(health=pb.HealthRequest()))
        check(st.code == pb.OK, f"health: {st.message}")
        return replies[0].health

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.health().workers_ready:
                return
            time.sleep(0.2)
        fail(f"the worker group did not connect:\n{self.log.read_text()}")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            fail("the server did not stop after %s" % sig)
        self.f.close()
        return rc

    def kill_all(self):
        """SIGKILL to the server's session (the server, launcher and ranks)."""
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()
        self.f.close()


def worker_pids(server):
    """The ranks of the server's worker group (processes `longseq worker --connect ...:PORT`)."""
    out = subprocess.run(["pgrep", "-f", f"longseq worker --connect 127.0.0.1:{server.port}"], capture_output=True,
                         text=True).stdout.split()
    ranks = []
    for p in out:
        try:
            argv0 = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if argv0.endswith(b"longseq"):  # not the launcher, whose command line holds the same words
            ranks.append(int(p))
    return ranks


def wait_no_workers(server, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline and worker_pids(server):
        time.sleep(0.2)
    check(not worker_pids(server), f"the worker group of port {server.port} is gone")


def generate_text(model, prompt_path, n, chat=False, penalty=None):
    args = ["generate", "--model", str(model), "--prompt-file", str(prompt_path), "-n", str(n), "--temp", "0", "--json"]
    if chat:
        args.append("--chat")
    if penalty:
        args += ["--repeat-penalty", str(penalty)]
    import json
    return json.loads(run(args).stdout)["text"]


def words(n, seed):
    rng = random.Random(seed)
    vocab = "the of and to in a is that for it as was with be by on not he I this are or his from at which".split()
    return " ".join(rng.choice(vocab) for _ in range(n))


# --- tests ---------------------------------------------------------------------------------

def test_protocol(tiny):
    state = WORK / "state-protocol"
    srv = Server(state, tiny, np_=2)
    try:
        srv.wait_ready()
        h = srv.health()
        check(h.workers_ready and h.ranks == 2 and h.model == "longseq tiny fixture", f"health: {h}")
        docs = [(f"doc{i}.txt", words(40 + 17 * i, i).encode()) for i in range(3)]
        ids = srv.submit(docs, task=pb.GENERATE, max_tokens=12)
        check(len(ids) == 3 and len(set(ids)) == 3, f"three job ids: {ids}")
        events, st = srv.watch(ids[2])
        kinds = [pb.Event.Kind.Name(e.kind) for e in events]
        check(st.code == pb.OK and events[-1].kind == pb.Event.STATE and events[-1].state == pb.DONE,
              f"watch ends with DONE then OK: {kinds} {st}")
        streamed = "".join(e.text for e in events if e.kind == pb.Event.TEXT)
        for i, (name, text) in enumerate(docs):
            r = srv.result(ids[i])
            p = WORK / name
            p.write_bytes(text)
            want = generate_text(tiny, p, 12)
            check(r.state == pb.DONE and r.text == want, f"job {i}: {r.text!r} == one-process generate {want!r}")
            check(r.name == name and r.ranks == 2 and r.attention == "full" and r.generated > 0 and r.attempts == 1,
                  f"record of job {i}: {r}")
            if i == 2:
                check(streamed == want, f"watched text {streamed!r} is the result")
        # summarize: the document and the request in the chat template
        doc = words(60, 7)
        [sid] = srv.submit([("s.txt", doc.encode())], task=pb.SUMMARIZE, max_tokens=10)
        srv.watch(sid)
        p = WORK / "summ-prompt.txt"
        p.write_text(doc + "\n\n" + SUMMARIZE_ASK)
        want = generate_text(tiny, p, 10, chat=True, penalty=1.1)
        check(srv.result(sid).text == want, f"summary {srv.result(sid).text!r} == generate --chat {want!r}")
        # perplexity: as `longseq perplexity`
        long_doc = words(400, 9)
        [pid] = srv.submit([("p.txt", long_doc.encode())], task=pb.PERPLEXITY, ctx=32)
        srv.watch(pid)
        p = WORK / "ppl.txt"
        p.write_text(long_doc)
        import json
        want = json.loads(run(["perplexity", "--model", str(tiny), "--ctx", "32", "--json", str(p)]).stdout)["ppl"]
        got = srv.result(pid).ppl
        check(abs(got - want) <= 1e-6 * want, f"perplexity {got} == longseq perplexity {want}")
        # list: newest first
        replies, st = srv.rpc(pb.Request(list=pb.ListRequest(limit=10)))
        listed = [j.id for j in replies[0].list.jobs]
        check(listed[:5] == [pid, sid, ids[2], ids[1], ids[0]], f"list, newest first: {listed}")
        # the C client commands against this server
        cenv = dict(ENV, LONGSEQ_SERVER=f"127.0.0.1:{srv.port}", LONGSEQ_TOKEN=TOKEN)
        f = WORK / "c-client.txt"
        f.write_bytes(docs[0][1])
        out = subprocess.run([str(BIN), "submit", "--task", "generate", "--max-tokens", "12", str(f)], env=cenv,
                             capture_output=True, text=True)
        cid = out.stdout.strip()
        check(out.returncode == 0 and re.fullmatch(r"j[0-9a-f]{16}", cid), f"longseq submit: {out}")
        w = subprocess.run([str(BIN), "watch", cid], env=cenv, capture_output=True, text=True)
        check(w.returncode == 0 and "done" in w.stderr, f"longseq watch: {w.stderr}")
        r = subprocess.run([str(BIN), "result", cid, "--json"], env=cenv, capture_output=True, text=True)
        rec = json.loads(r.stdout)
        check(rec["text"] == srv.result(ids[0]).text and rec["status"] == "done" and rec["file"] == str(f)
              and rec["task"] == "generate"
              and set(rec) >= {"id", "file", "task", "tokens", "text", "prefill_ms", "decode_ms", "ranks", "attention",
                               "rope", "status", "error"}, f"longseq result --json: {rec}")
        j = subprocess.run([str(BIN), "jobs"], env=cenv, capture_output=True, text=True)
        check(j.returncode == 0 and cid in j.stdout, "longseq jobs lists the job")
        c = subprocess.run([str(BIN), "cancel", cid], env=cenv, capture_output=True, text=True)
        check(c.returncode == 1 and "FAILED_PRECONDITION" in c.stderr and "already done" in c.stderr,
              f"cancelling a finished job: {c.stderr}")
        bad = subprocess.run([str(BIN), "result", cid], env=dict(cenv, LONGSEQ_TOKEN="wrong"), capture_output=True,
                             text=True)
        check(bad.returncode == 1 and "UNAUTHENTICATED" in bad.stderr, f"a wrong token: {bad.stderr}")
        many = WORK / "many"  # more files than one call carries: the client splits them over calls, in order
        many.mkdir()
        paths = []
        for i in range(300):
            paths.append(many / f"f{i:03d}.txt")
            paths[-1].write_text(words(4, 500 + i))
        out = subprocess.run([str(BIN), "submit", "--task", "generate", "--max-tokens", "1", *map(str, paths)], env=cenv,
                             capture_output=True, text=True)
        mids = out.stdout.split()
        check(out.returncode == 0 and len(set(mids)) == 300, f"300 files submitted: {out.stderr[-500:]}")
        check(srv.result(mids[0]).name == str(paths[0]) and srv.result(mids[-1]).name == str(paths[-1]),
              "ids in the files' order across calls")
        check(srv.stop() == 0, "SIGTERM: exit 0")
        wait_no_workers(srv)
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print("protocol: submit/watch/result/list/health/cancel, texts equal one-process runs")


def expect_status(s, code, what):
    try:
        r = recv_reply(s)
    except (ConnectionError, OSError) as e:
        fail(f"{what}: no status, the connection ended ({e})")
    check(r.WhichOneof("body") == "status" and r.status.code == code,
          f"{what}: {pb.Code.Name(code)} expected, got {r}")
    return r.status.message


def expect_closed(s, what):
    s.settimeout(10)
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass


def submit_each(srv, docs, **settings):
    """A Submit of (name, text) pairs; returns (job ids, errors, status) whatever the status."""
    req = pb.Request(submit=pb.SubmitRequest(documents=[pb.Document(name=n, text=t) for n, t in docs],
                                             settings=pb.Settings(**settings)))
    replies, st = srv.rpc(req)
    sub = replies[0].submit if replies else pb.SubmitReply()
    return list(sub.job_ids), list(sub.errors), st


def test_hostile(tiny):
    state = WORK / "state-hostile"
    srv = Server(state, tiny, np_=1, extra=["--max-docs", "4", "--idle-timeout", "3", "--max-frame", "1000000",
                                            "--max-conns", "12", "--max-job-tokens", "3800"])
    try:
        srv.wait_ready()
        # a client watching a job on its own connection throughout
        [long_id] = srv.submit([("long", words(200, 3).encode())], task=pb.GENERATE, max_tokens=3000)
        watched = {}
        watching = threading.Event()
        wt = threading.Thread(target=lambda: watched.update(r=srv.watch(long_id, lambda e: watching.set())))
        wt.start()
        check(watching.wait(60), "the watcher is connected")
        rng = random.Random(5)
        for i in range(20):  # random bytes
            with srv.connect() as s:
                junk = bytes([rng.randrange(1, 256)]) + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
                s.sendall(junk)
                msg = expect_status(s, pb.INVALID_ARGUMENT, "random bytes")
                check("flags byte" in msg, f"the message names the flags byte: {msg}")
                expect_closed(s, "random bytes")
        with srv.connect() as s:  # truncated frame, then the client goes away
            s.sendall(b"\x00\x00\x00\x01\x00abc")
        with srv.connect() as s:  # oversize length
            s.sendall(b"\x00\x7f\xff\xff\xff")
            msg = expect_status(s, pb.RESOURCE_EXHAUSTED, "oversize frame")
            check("2147483647" in msg and "1000000" in msg, f"the numbers are in the message: {msg}")
        with srv.connect() as s:  # a message that does not parse, first: no token first, a stranger's
            s.sendall(frame(b"\xff\xff\xff\xff"))
            expect_status(s, pb.UNAUTHENTICATED, "garbage message on a new connection")
        with srv.connect() as s:  # after a call with the token: it does not parse, the connection stays usable
            call(s, pb.Request(health=pb.HealthRequest()))
            s.sendall(frame(b"\xff\xff\xff\xff"))
            expect_status(s, pb.INVALID_ARGUMENT, "garbage message")
            check(call(s, pb.Request(health=pb.HealthRequest()))[1].code == pb.OK, "a call after it")
        with srv.connect() as s:  # unknown method: a field the server does not know
            body = pb.Request(token=TOKEN).SerializeToString() + b"\xfa\x06\x00"  # field 111, empty bytes
            s.sendall(frame(body))
            expect_status(s, pb.UNIMPLEMENTED, "unknown method")
            _, st = call(s, pb.Request(health=pb.HealthRequest()))  # the connection still works
            check(st.code == pb.OK, "a call after an unknown method on the same connection")
        for token, what in ((None, "missing token"), ("", "empty token"), (TOKEN[:-1], "wrong token"),
                            (TOKEN + "x", "longer token")):
            with srv.connect() as s:
                _, st = call(s, pb.Request(health=pb.HealthRequest()), token=token)
                check(st.code == pb.UNAUTHENTICATED, f"{what}: {st}")
        before = len(srv.rpc(pb.Request(list=pb.ListRequest(limit=1000)))[0][0].list.jobs)
        # a bad document is a failed job of its own (test_documents has more); the call succeeds
        bad_utf8 = [("ok", b"fine text"), ("bad", b"caf\xc3 \xff\xfe broken")]
        ids, errors, st = submit_each(srv, bad_utf8, task=pb.GENERATE, max_tokens=2)
        check(st.code == pb.OK and len(ids) == 2 and not errors[0] and "UTF-8" in errors[1] and "1 failed" in st.message,
              f"invalid UTF-8: {st} {errors}")
        _, st = srv.rpc(pb.Request(submit=pb.SubmitRequest(documents=[pb.Document(name=str(i), text=b"x") for i in range(5)])))
        check(st.code == pb.RESOURCE_EXHAUSTED and "limit is 4" in st.message, f"too many documents: {st}")
        _, [err], st = submit_each(srv, [("huge", words(1500, 1).encode())], task=pb.GENERATE)
        check(st.code == pb.OK and re.search(r"needs \d+ positions", err) and "is 4096" in err,
              f"a document too long for the 4096-token context: {st} {err}")
        # a protocol client is told the fields to set (the command-line clients show their flags)
        check(re.search(r'settings \{ rope_scaling: "yarn" rope_scale: [\d.]+ \}', err) and
              'settings { attention: "sink" }' in err and " --" not in err, f"the hint names settings fields: {err}")
        _, st = srv.rpc(pb.Request(submit=pb.SubmitRequest(documents=[pb.Document(name="x", text=b"abc")],
                                                           settings=pb.Settings(attention="sparse"))))
        check(st.code == pb.INVALID_ARGUMENT and "sparse" in st.message, f"unknown attention: {st}")
        for bad, what in ((dict(attention="s2", group=1), "group"), (dict(attention="full", window=5), "window")):
            _, st = srv.rpc(pb.Request(submit=pb.SubmitRequest(documents=[pb.Document(name="x", text=b"abc")],
                                                               settings=pb.Settings(**bad))))
            check(st.code == pb.INVALID_ARGUMENT and what in st.message, f"an invalid rule {bad}: {st}")
        # a chunk too short for perplexity is refused at submit, naming the field (not a job
        # failing later with the command line's "--ctx")
        _, st = srv.rpc(pb.Request(submit=pb.SubmitRequest(documents=[pb.Document(name="x", text=words(300, 3).encode())],
                                                           settings=pb.Settings(task=pb.PERPLEXITY, ctx=2))))
        check(st.code == pb.INVALID_ARGUMENT and "settings.ctx 2" in st.message, f"perplexity ctx 2: {st}")
        _, [err], st = submit_each(srv, [("big", words(300, 2).encode())], task=pb.GENERATE, max_tokens=3000)
        check(st.code == pb.OK and "at most 3800 per job" in err, f"--max-job-tokens: {st} {err}")
        socks, refused = [], None
        for i in range(14):  # beyond --max-conns 12 (the worker leader and the watcher hold two): refused
            s = srv.connect()
            socks.append(s)
            s.settimeout(0.1)  # (all within the 3 s idle timeout)
            try:
                r = recv_reply(s)
                refused = (i, r.status)
                break
            except (socket.timeout, TimeoutError):
                pass
        check(refused and refused[1].code == pb.RESOURCE_EXHAUSTED and "limit is 12" in refused[1].message
              and refused[0] in (10, 11), f"--max-conns 12: {refused}")  # 11 once the watched job is done
        for s in socks:
            s.close()
        deadline = time.time() + 20  # the server notices the closed connections on its next turns
        while time.time() < deadline and srv.rpc(pb.Request(health=pb.HealthRequest()))[1].code != pb.OK:
            time.sleep(0.1)
        _, st = srv.rpc(pb.Request(result=pb.ResultRequest(job_id="jdoesnotexist")))
        check(st.code == pb.NOT_FOUND, f"unknown job: {st}")
        after = len(srv.rpc(pb.Request(list=pb.ListRequest(limit=1000)))[0][0].list.jobs)
        check(after == before + 4, f"refused calls created no job; bad documents 3 failed ones ({before} -> {after})")
        with srv.connect() as s:  # idle: closed after --idle-timeout 3
            t0 = time.time()
            msg = expect_status(s, pb.DEADLINE_EXCEEDED, "idle connection")
            check(2 <= time.time() - t0 < 15, f"closed after the idle timeout ({time.time() - t0:.1f} s)")
        wt.join(300)
        events, st = watched["r"]
        check(st.code == pb.OK and events[-1].state == pb.DONE, "the watching client was served to the end")
        check(srv.health().workers_ready, "still serving")
        check(srv.stop() == 0, f"exit 0 (under the sanitizers: no leak)\n{srv.log.read_text()[-3000:]}")
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print("hostile input: each refused with its code; other clients unaffected")


def test_settings_limits(tiny):
    """Every numeric setting is bounded, with the same limits as the command-line flags
    (proto/ls_settings.h): the message names the field and the range. rope_scale 3e38 overflowed
    a float -> int64 conversion; top_k 2^32-1 became "top-k off" in the worker."""
    srv = Server(WORK / "state-limits", tiny, extra=EXTERNAL)
    try:
        cases = [(dict(rope_scale=3e38), "settings.rope_scale 3e+38 is not a number in (0, 1024]"),
                 (dict(rope_freq_base=1e30), "settings.rope_freq_base 1e+30 is not a number in (1, 1e+12]"),
                 (dict(top_k=2**32 - 1), "settings.top_k 4294967295 is not an integer in [1, 16777216]"),
                 (dict(attention="s2", group=1), "settings.group 1 is not an integer in [2, 16777216]"),
                 (dict(attention="window", window=2**25), "settings.window 33554432 is not an integer in [1, 16777216]"),
                 (dict(yarn_orig_ctx=2**32 - 1), "settings.yarn_orig_ctx 4294967295 is not an integer in [1, 16777216]"),
                 (dict(task=pb.PERPLEXITY, max_chunks=2**32 - 1), "settings.max_chunks 4294967295"),
                 (dict(attention="sink", sinks=2**21), "settings.sinks 2097152 is not an integer in [0, 1048576]")]
        for settings, want in cases:
            _, st = srv.rpc(pb.Request(submit=pb.SubmitRequest(documents=[pb.Document(name="x", text=b"hello there")],
                                                               settings=pb.Settings(task=settings.pop("task", pb.GENERATE),
                                                                                    **settings))))
            check(st.code == pb.INVALID_ARGUMENT and want in st.message, f"{want}: {pb.Code.Name(st.code)} {st.message}")
        _, st = srv.rpc(pb.Request(submit=pb.SubmitRequest(documents=[pb.Document(name="x", text=b"hello there")],
                                                           settings=pb.Settings(task=pb.GENERATE, attention="sink", sinks=0,
                                                                                max_tokens=2))))
        check(st.code == pb.OK, f"sinks 0 is a value: {st.message}")
        print(f"settings limits: {len(cases)} out-of-range fields refused with their range")
    finally:
        srv.kill_all()
def test_documents(tiny):
    """One Submit of good and bad documents: each bad one is a job FAILED with its error (in the
    reply's errors, Result, Watch and List), the good ones run; ids in order."""
    state = WORK / "state-documents"
    srv = Server(state, tiny, np_=1)
    try:
        srv.wait_ready()
        docs = [("good1", words(30, 1).encode()), ("empty", b""), ("blank", b" \n\t \r\n "), ("latin1", b"caf\xe9 au lait"),
                ("long", words(1500, 1).encode()), ("nul", b"abc\x00def"), ("huge", words(800_000, 2).encode()),
                ("NAME-NOT-UTF-8!", b"a fine text"), ("good2", words(30, 2).encode())]
        req = pb.Request(token=TOKEN, submit=pb.SubmitRequest(documents=[pb.Document(name=n, text=t) for n, t in docs],
                                                              settings=pb.Settings(task=pb.GENERATE, max_tokens=4)))
        body = req.SerializeToString().replace(b"NAME-NOT-UTF-8!", b"\xff" * 15)  # (same length)
        with srv.connect() as sock:
            t0 = time.time()
            sock.sendall(frame(body))
            replies = []
            while (r := recv_reply(sock)).WhichOneof("body") != "status":
                replies.append(r)
            took, st = time.time() - t0, r.status
        check(st.code == pb.OK and st.message == "2 jobs queued, 7 failed", f"the call succeeds: {st}")
        ids, errors = list(replies[0].submit.job_ids), list(replies[0].submit.errors)
        check(len(ids) == 9 == len(set(ids)) == len(errors), f"one id and one error per document: {ids} {errors}")
        want = {0: None, 1: "the text is empty", 2: "only whitespace (7 bytes)", 3: "not valid UTF-8 (at byte 3)",
                4: "positions (", 5: "NUL byte", 6: "no token is longer than 13 bytes", 7: "the name (15 bytes) is not UTF-8",
                8: None}
        for i, needle in want.items():
            check(errors[i] == "" if needle is None else needle in errors[i], f"document {i + 1} {docs[i][0]}: {errors[i]!r}")
        check(re.search(r"needs \d+ positions \(\d+ prompt \+ 4 to generate\)", errors[4]) and
              re.search(r"needs at least \d+ positions \(the text's \d+ bytes are at least \d+ tokens", errors[6]),
              f"tokenized, and refused by its bytes alone: {errors[4]!r} {errors[6]!r}")
        check(took < 5, f"a 3 MB document that cannot fit is refused without tokenizing it ({took:.1f} s)")
        for i in (0, 8):
            events, wst = srv.watch(ids[i])
            check(events[-1].state == pb.DONE and srv.result(ids[i]).text, f"{docs[i][0]} done: {events[-1]}")
        for i in range(1, 8):
            r = srv.result(ids[i])
            check(r.state == pb.FAILED and r.error == errors[i] and r.id == ids[i], f"result of {docs[i][0]}: {r}")
            events, wst = srv.watch(ids[i])
            check(wst.code == pb.OK and events[-1].state == pb.FAILED and events[-1].error == errors[i],
                  f"a watch of {docs[i][0]} ends at once, failed: {events}")
        check(srv.result(ids[7]).name == "\ufffd" * 15 and srv.result(ids[1]).name == "empty", "the names kept (made UTF-8)")
        listed = {j.id: j for j in srv.rpc(pb.Request(list=pb.ListRequest(limit=100)))[0][0].list.jobs}
        check(all(listed[ids[i]].state == (pb.DONE if i in (0, 8) else pb.FAILED) for i in range(9)), "List shows them all")
        # `longseq submit`: an id per file, the refused file's error on stderr, exit 3
        (WORK / "ok.txt").write_text(words(20, 5))
        (WORK / "empty.txt").write_text("")
        cenv = dict(ENV, LONGSEQ_SERVER=f"127.0.0.1:{srv.port}", LONGSEQ_TOKEN=TOKEN)
        with open(WORK / "huge.txt", "wb") as f:  # over the frame limit: never sent, "-" for its id
            f.truncate(64 << 20)
        out = subprocess.run([str(BIN), "submit", "--task", "generate", "--max-tokens", "2", str(WORK / "ok.txt"),
                              str(WORK / "empty.txt"), str(WORK / "huge.txt")], env=cenv, capture_output=True, text=True,
                             timeout=60)
        (WORK / "huge.txt").unlink()
        cids = out.stdout.split()
        check(out.returncode == 3 and len(cids) == 3 and f"empty.txt: job {cids[1]} failed: the text is empty" in out.stderr,
              f"longseq submit with an empty file: {out}")
        check(cids[2] == "-" and "huge.txt: not submitted: " in out.stderr and "larger than the limit" in out.stderr,
              f"a file too large to send: {out}")
        check(srv.result(cids[1]).state == pb.FAILED and srv.watch(cids[0])[0][-1].state == pb.DONE, "its jobs")
        # the call's own problems still refuse the whole call, creating nothing
        _, _, st = submit_each(srv, [], task=pb.GENERATE)
        check(st.code == pb.INVALID_ARGUMENT and "no documents" in st.message, f"no documents: {st}")
        _, _, st = submit_each(srv, [("x", b"abc")], attention="sparse")
        check(st.code == pb.INVALID_ARGUMENT and "sparse" in st.message, f"bad settings: {st}")
        check(len(srv.rpc(pb.Request(list=pb.ListRequest(limit=100)))[0][0].list.jobs) == 11, "refused calls made no jobs")
        check(srv.stop() == 0, f"exit 0\n{srv.log.read_text()[-3000:]}")
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print("documents: bad ones failed jobs with their errors, good ones done, ids in order")


def big_submit(srv, text):
    """A connection with a Submit of one large document sent (its answer not read)."""
    sock = srv.connect()
    req = pb.Request(token=TOKEN, submit=pb.SubmitRequest(documents=[pb.Document(name="big", text=text)],
                                                          settings=pb.Settings(task=pb.GENERATE, attention="sink")))
    sock.sendall(frame(req.SerializeToString()))
    return sock


def test_prep_off_loop(tiny):
    """Documents are prepared off the event loop: while a 60 MiB document is tokenized, another
    client's health call answers at once; a client that goes away meanwhile, and a SIGTERM
    meanwhile (the call gets UNAVAILABLE), do no harm."""
    state = WORK / "state-prep"
    # no workers (nothing runs); a job limit the document passes by its bytes (at least 1/13 of
    # them) but not by its tokens, so it is tokenized in full and then fails: no 40 MB commit
    srv = Server(state, tiny, np_=1, extra=[*EXTERNAL, "--max-job-tokens", "8000000"])
    try:
        chunk = words(100_000, 7).encode() + b"\n"
        text = chunk * (60 * 2**20 // len(chunk) + 1)  # (the tiny vocabulary tokenizes fast: 60 MiB for ~2 s)
        check(60 * 2**20 < len(text) < 63 * 2**20, f"{len(text)} bytes")
        sent, result = threading.Event(), {}

        def submitter():
            with big_submit(srv, text) as sock:
                sent.set()
                result["sent"] = time.time()
                replies = []
                while (r := recv_reply(sock)).WhichOneof("body") != "status":
                    replies.append(r)
                result.update(replies=replies, status=r.status, done=time.time())
        th = threading.Thread(target=submitter)
        th.start()
        sent.wait(60)
        time.sleep(0.3)  # the server has the frame (receiving it is the connection layer's business)
        lat = []
        while th.is_alive():
            h0 = time.time()
            srv.health()
            lat.append(time.time() - h0)
            time.sleep(0.05)
        th.join()
        took = result["done"] - result["sent"]
        print(f"  a {len(text) / 2**20:.1f} MiB document prepared in {took:.1f} s; {len(lat)} health calls meanwhile, "
              f"the slowest {1e3 * max(lat, default=0):.0f} ms")
        # (on the loop, a health call waited for the whole preparation: its latency was `took`)
        check(max(lat) < min(0.5, took / 3), f"health answered within min(0.5 s, a third of the preparation's "
              f"{took:.2f} s) while the document was prepared: {max(lat):.2f} s")
        check(took > 0.5 and len(lat) >= 5, f"the preparation took long enough to measure ({took:.2f} s)")
        st, replies = result["status"], result["replies"]
        err = replies[0].submit.errors[0] if replies else ""
        check(st.code == pb.OK and re.search(r"needs \d+ tokens .* at most 8000000 per job", err),
              f"the document was tokenized in full: {st} {err}")
        # a client that goes away while its document is prepared
        gone = big_submit(srv, text)
        time.sleep(1.0)  # (the server has the frame and is preparing it)
        gone.close()
        check(srv.health().version, "served after a client went away mid-preparation")
        deadline = time.time() + 120
        while time.time() < deadline and "dropped" not in srv.log.read_text():
            time.sleep(0.2)
        check("a submit of 1 documents dropped" in srv.log.read_text(), "its submit was dropped")
        # SIGTERM while a document is prepared: the call gets UNAVAILABLE, the server exits 0
        with big_submit(srv, text) as sock:
            time.sleep(1.0)
            srv.p.send_signal(signal.SIGTERM)
            msg = expect_status(sock, pb.UNAVAILABLE, "submit during shutdown")
            check("stopping" in msg, msg)
        check(srv.p.wait(60) == 0, f"exit 0 (under the sanitizers: no leak)\n{srv.log.read_text()[-3000:]}")
        srv.f.close()
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print("preparation off the loop: other clients served meanwhile; closes and SIGTERM mid-preparation are safe")


def test_summarize_bad_file(tiny):
    """`summarize` with bad files among good ones: a record for every file, in order; the bad
    ones failed with their errors (a file too large to send: no job, id ""), the good ones
    summarized; exit status 3."""
    d = WORK / "summarize-bad"
    d.mkdir(exist_ok=True)
    files = []
    for name, text in (("a.txt", words(40, 1)), ("empty.txt", ""), ("b.txt", words(40, 2)), ("long.txt", words(1500, 3))):
        (d / name).write_text(text)
        files.append(d / name)
    huge = d / "huge.txt"  # over the protocol's frame limit: never sent, its record says why
    with open(huge, "wb") as f:
        f.truncate(64 << 20)
    files.insert(2, huge)
    out = d / "results.jsonl"
    p = subprocess.run([str(BIN), "summarize", "--model", str(tiny), "--np", "1", "--max-tokens", "4", "--out", str(out),
                        "--strategy", "direct", *map(str, files)], capture_output=True, text=True, timeout=600, env=ENV)
    huge.unlink()
    check(p.returncode == 3, f"summarize: exit 3 when some files failed, got {p.returncode}: {p.stderr[-2000:]}")
    import json
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    check([r["file"] for r in recs] == list(map(str, files)), f"one record per file, in order: {recs}")
    check([r["status"] for r in recs] == ["done", "failed", "failed", "done", "failed"], f"statuses: {recs}")
    check("the text is empty" in recs[1]["error"] and re.search(r"needs \d+ positions", recs[4]["error"]),
          f"errors with the numbers: {recs[1]['error']!r} {recs[4]['error']!r}")
    check(recs[2]["id"] == "" and f"{huge} is larger than the limit of 67104768 bytes" in recs[2]["error"],
          f"a file too large to send: no job, the reason: {recs[2]}")
    check(all((r["id"] or r is recs[2]) and set(r) == set(recs[0]) for r in recs),
          f"every record has an id (but the file never sent) and the same keys: {recs}")
    check("the text is empty" in p.stderr, f"the error is shown: {p.stderr[-1000:]}")
    print("summarize: bad files get their error records, the good ones their summaries; exit 3")



def job_log(state):
    db = sqlite3.connect(state / "jobs.db")
    try:
        return db.execute("SELECT job_id, state FROM job_log").fetchall(), db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def test_durability(tiny):
    state = WORK / "state-durable"
    srv = Server(state, tiny, np_=1)
    srv.wait_ready()
    docs = [(f"d{i}", words(30 + i, 100 + i).encode()) for i in range(50)]
    ids = []
    for i in range(0, 50, 10):  # five calls of ten
        ids += srv.submit(docs[i:i + 10], task=pb.GENERATE, max_tokens=40)
    deadline = time.time() + 300
    while time.time() < deadline:
        jobs = srv.rpc(pb.Request(list=pb.ListRequest(limit=100)))[0][0].list.jobs
        finished = [j.id for j in jobs if j.state == pb.DONE]
        if len(finished) >= 8:
            break
        time.sleep(0.05)
    early = {i: srv.result(i).text for i in finished}
    srv.kill_all()  # kill -9: the coordinator and its group
    wait_no_workers(srv)
    rows, integrity = job_log(state)
    check(integrity == "ok", f"integrity after kill -9: {integrity}")
    srv = Server(state, tiny, np_=1)
    try:
        for i in ids:
            events, st = srv.watch(i)
            check(st.code == pb.OK and events[-1].state == pb.DONE, f"job {i} done after the restart")
        rows, integrity = job_log(state)
        check(integrity == "ok", f"integrity: {integrity}")
        dones = {}
        for job, st in rows:
            if st == pb.DONE:
                dones[job] = dones.get(job, 0) + 1
        check(sorted(dones) == sorted(ids) and set(dones.values()) == {1}, "each of the 50 jobs done exactly once")
        jobs = srv.rpc(pb.Request(list=pb.ListRequest(limit=1000)))[0][0].list.jobs
        check(len(jobs) == 50, f"50 jobs, none lost or added ({len(jobs)})")
        for i, text in early.items():
            check(srv.result(i).text == text, f"job {i}'s result kept")
        for i, (name, text) in list(enumerate(docs))[::10]:
            p = WORK / f"dur{i}.txt"
            p.write_bytes(text)
            check(srv.result(ids[i]).text == generate_text(tiny, p, 40), f"job {i}'s text is right")
        # SIGTERM during a job: exit 0, the job is queued again and finishes after a restart.
        # The job takes about 0.1 s on the tiny model; where it finished before the signal
        # arrived (a loaded machine), there was nothing to check: another job, up to 3 times.
        for attempt in range(3):
            if attempt:
                srv = Server(state, tiny, np_=1)
                srv.wait_ready()
            [tid] = srv.submit([("term", words(200, 8 + attempt).encode())], task=pb.GENERATE, max_tokens=200)
            seen = threading.Event()
            th = threading.Thread(target=lambda: srv.watch(tid, lambda e: e.kind == pb.Event.TEXT and seen.set()))
            th.start()
            check(seen.wait(120), "the job started")
            check(srv.stop() == 0, "SIGTERM: exit 0")
            th.join(30)
            wait_no_workers(srv)
            db = sqlite3.connect(state / "jobs.db")
            st = db.execute("SELECT state FROM jobs WHERE id = ?", (tid,)).fetchone()[0]
            db.close()
            if st != pb.DONE:
                break
            print(f"  (SIGTERM try {attempt + 1}: the job had finished before the signal; again)")
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    check(st == pb.QUEUED, f"after SIGTERM the running job is queued ({pb.JobState.Name(st)})")
    srv = Server(state, tiny, np_=1)
    try:
        events, _ = srv.watch(tid)
        check(events[-1].state == pb.DONE, "and done after the restart")
        srv.stop()
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print(f"durability: 50 jobs, kill -9 after {len(early)} were done: all done exactly once; SIGTERM requeues")


def test_external(tiny):
    """serve --workers external: a group started by hand (as an sbatch script would) connects."""
    state = WORK / "state-external"
    srv = Server(state, tiny, np_=2, extra=EXTERNAL)
    group = None
    try:
        check(not srv.health().workers_ready and not worker_pids(srv), "no group launched")
        [jid] = srv.submit([("e", words(30, 4).encode())], task=pb.GENERATE, max_tokens=6)
        group = subprocess.Popen(["mpirun", "-np", "2", str(BIN), "worker", "--connect", f"127.0.0.1:{srv.port}",
                                  "--model", str(tiny), "--token-file", str(WORKER_TOKEN_FILE)], env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        events, _ = srv.watch(jid)
        check(events[-1].state == pb.DONE and srv.result(jid).ranks == 2, "the external group ran the job")
        check(srv.stop() == 0, "exit 0")
        check(group.wait(60) == 0, "the group ends when the coordinator goes away")
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
        if group and group.poll() is None:
            group.kill()
    bad = subprocess.run(["mpirun", "-np", "1", str(BIN), "worker", "--connect", "127.0.0.1:1", "--model", str(tiny)],
                         env=dict(ENV, LONGSEQ_WORKER_TOKEN=WORKER_TOKEN), capture_output=True, text=True, timeout=120)
    check(bad.returncode != 0 and "cannot connect to 127.0.0.1:1" in bad.stderr, f"no coordinator: {bad.stderr[-500:]}")
    print("external workers: a group started by hand serves the queue")


def test_worker_credential(tiny):
    """Workers have their own credential, which clients never see: a client token on
    worker_hello or worker_event is refused (PERMISSION_DENIED, connection closed) and gets no
    job; the worker token on a client method likewise; the real worker still gets the job.
    Before, any client could say hello as the worker group, receive every queued job's tokens
    and mark them done with forged text. The groups a server launches get a fresh credential
    in their environment and not the clients' token."""
    srv = Server(WORK / "state-cred", tiny, extra=EXTERNAL)
    try:
        [jid] = srv.submit([("private", b"the private document of one client")], task=pb.GENERATE, max_tokens=2)
        with srv.connect() as s:
            s.sendall(frame(pb.Request(token=TOKEN, worker_hello=pb.WorkerHello(ranks=1, model="x", pid=1))
                            .SerializeToString()))
            msg = expect_status(s, pb.PERMISSION_DENIED, "worker_hello with the client token")
            check("credential" in msg, f"the refusal says why: {msg}")
            s.settimeout(10)
            rest = b""
            try:
                while (k := s.recv(65536)):
                    rest += k
            except OSError:
                pass
            check(rest == b"", f"nothing after the refusal (no job): {len(rest)} bytes")
        with srv.connect() as s:
            s.sendall(frame(pb.Request(token=TOKEN, worker_event=pb.WorkerEvent(
                job_id=jid, kind=pb.WorkerEvent.DONE, result=pb.JobResult(text="forged"))).SerializeToString()))
            expect_status(s, pb.PERMISSION_DENIED, "worker_event with the client token")
            expect_closed(s, "after a forged worker_event")
        with srv.connect() as s:
            _, st = call(s, pb.Request(health=pb.HealthRequest()), token=WORKER_TOKEN)
            check(st.code == pb.PERMISSION_DENIED, f"health with the worker token: {pb.Code.Name(st.code)} {st.message}")
        res = srv.result(jid)
        check(res.state == pb.QUEUED and res.text == "", f"the job is untouched: {pb.JobState.Name(res.state)} {res.text!r}")
        with srv.connect() as w:
            _, st = call(w, pb.Request(worker_hello=pb.WorkerHello(ranks=1, model="x", pid=1)), token=WORKER_TOKEN)
            check(st.code == pb.OK, f"worker_hello with the worker token: {st.message}")
            r = recv_reply(w)
            check(r.WhichOneof("body") == "run" and r.run.job_id == jid, f"the real worker gets the job: {r}")
    finally:
        srv.kill_all()
    p = subprocess.run([str(BIN), "serve", "--listen", "127.0.0.1:0", "--state", str(WORK / "state-cred2"),
                        "--token-file", str(TOKEN_FILE), "--model", str(tiny), "--workers", "external"],
                       capture_output=True, text=True, timeout=60, env=ENV)
    check(p.returncode == 2 and "--worker-token-file" in p.stderr, f"external workers without a credential: {p.stderr}")
    p = subprocess.run([str(BIN), "serve", "--listen", "127.0.0.1:0", "--state", str(WORK / "state-cred2"),
                        "--token-file", str(TOKEN_FILE), "--model", str(tiny), "--workers", "external",
                        "--worker-token-file", str(TOKEN_FILE)], capture_output=True, text=True, timeout=60, env=ENV)
    check(p.returncode == 1 and "a token of their own" in p.stderr, f"the clients' token as the workers': {p.stderr}")
    # A launched group: its environment has a worker credential and not the clients' token
    # (here the server itself was given it in $LONGSEQ_TOKEN).
    srv = Server(WORK / "state-cred3", tiny, env=dict(ENV, LONGSEQ_TOKEN=TOKEN))
    try:
        srv.wait_ready()
        envs = [Path(f"/proc/{p}/environ").read_bytes().split(b"\0") for p in worker_pids(srv)]
        check(envs and all(any(e.startswith(b"LONGSEQ_WORKER_TOKEN=") for e in env) and
                           not any(e.startswith(b"LONGSEQ_TOKEN=") or TOKEN.encode() in e for e in env) for env in envs),
              "the launched ranks have a worker credential and not the clients' token")
        [jid] = srv.submit([("x", words(20, 1).encode())], task=pb.GENERATE, max_tokens=2)
        events, _ = srv.watch(jid)
        check(events[-1].state == pb.DONE, "the launched group runs jobs with its credential")
    finally:
        srv.kill_all()
    print("worker credential: client token refused on worker methods (no job given), worker token on client "
          "methods; launched groups get their own")


def test_as_leader(tiny):
    """What clients are sent and kept, with the test as the worker group's leader itself (serve
    --workers external), so that it decides when each job's text exists: a watcher of a running
    job that has no text yet is sent none (the coordinator sent its last job's whole text as
    this one's "text so far"); a cancelled job keeps its streamed text; a watch longer than
    --idle-timeout leaves its connection usable."""
    srv = Server(WORK / "state-leak", tiny, extra=EXTERNAL + ["--idle-timeout", "2"])
    leader = srv.connect()
    try:
        _, st = call(leader, pb.Request(worker_hello=pb.WorkerHello(ranks=1, model="fake", pid=os.getpid())),
                     token=WORKER_TOKEN)
        check(st.code == pb.OK, f"worker_hello: {st.message}")
        ja, jb = srv.submit([("a", words(30, 1).encode()), ("b", words(30, 2).encode())], task=pb.GENERATE,
                            max_tokens=4)

        def run_job(want, text=None):
            r = recv_reply(leader)
            check(r.WhichOneof("body") == "run" and r.run.job_id == want, f"the leader was sent {r}")
            if text is not None:
                event(pb.WorkerEvent.TEXT, want, text=text)

        def event(kind, jid, text="", result=None):
            leader.sendall(frame(pb.Request(token=WORKER_TOKEN, worker_event=pb.WorkerEvent(
                job_id=jid, kind=kind, text=text, result=result)).SerializeToString()))

        secret = "the first job's private answer"
        run_job(ja, secret)
        event(pb.WorkerEvent.DONE, ja, result=pb.JobResult(text=secret, generated=4, ranks=1))
        run_job(jb)  # b is running; its worker has produced nothing yet
        with srv.connect() as w:
            w.sendall(frame(pb.Request(token=TOKEN, watch=pb.WatchRequest(job_id=jb)).SerializeToString()))
            first = recv_reply(w)
            check(first.WhichOneof("body") == "event" and first.event.state == pb.RUNNING,
                  f"watching a running job starts with its state: {first}")
            event(pb.WorkerEvent.TEXT, jb, text="b's own text")
            event(pb.WorkerEvent.DONE, jb, result=pb.JobResult(text="b's own text", generated=4, ranks=1))
            texts = []
            while True:
                r = recv_reply(w)
                if r.WhichOneof("body") == "status":
                    break
                if r.event.kind == pb.Event.TEXT:
                    texts.append(r.event.text)
        check(secret not in "".join(texts), f"the watcher of job b was sent job a's text: {texts}")
        check("".join(texts) == "b's own text", f"the watcher of job b got {texts}")
        check(srv.result(jb).text == "b's own text" and srv.result(ja).text == secret, "each job keeps its own text")
        print("a watcher of a running job with no text yet gets no other job's text")

        # A running job cancelled after some text keeps that text in its result (the worker's
        # CANCELLED event carries a result without it).
        [jc] = srv.submit([("c", words(30, 3).encode())], task=pb.GENERATE, max_tokens=4)
        run_job(jc, "the part watchers saw")
        _, st = srv.rpc(pb.Request(cancel=pb.CancelRequest(job_id=jc)))
        check(st.code == pb.OK, f"cancel: {st.message}")
        r = recv_reply(leader)
        check(r.WhichOneof("body") == "cancel_run" and r.cancel_run.job_id == jc, f"the leader was sent {r}")
        event(pb.WorkerEvent.CANCELLED, jc, result=pb.JobResult(generated=2, ranks=1))
        deadline = time.time() + 30
        while srv.result(jc).state != pb.CANCELLED and time.time() < deadline:
            time.sleep(0.05)
        res = srv.result(jc)
        check(res.state == pb.CANCELLED and res.text == "the part watchers saw",
              f"a cancelled job's result: {pb.JobState.Name(res.state)} {res.text!r}")
        print("a cancelled job keeps the text its watchers were sent")

        # A watch longer than --idle-timeout is a call in progress, not idleness: the same
        # connection's next call is served (it was refused DEADLINE_EXCEEDED "idle for 2 s").
        [jd] = srv.submit([("d", words(30, 4).encode())], task=pb.GENERATE, max_tokens=4)
        run_job(jd)
        with srv.connect() as cw:
            cw.sendall(frame(pb.Request(token=TOKEN, watch=pb.WatchRequest(job_id=jd)).SerializeToString()))
            recv_reply(cw)
            time.sleep(3.5)
            event(pb.WorkerEvent.DONE, jd, result=pb.JobResult(text="d", generated=1, ranks=1))
            while recv_reply(cw).WhichOneof("body") != "status":
                pass
            replies, st = call(cw, pb.Request(result=pb.ResultRequest(job_id=jd)))
            check(st.code == pb.OK and replies and replies[0].result.text == "d",
                  f"a call after a 3.5 s watch (--idle-timeout 2): {pb.Code.Name(st.code)} {st.message}")
        print("a connection's call after a watch longer than --idle-timeout is served")
    finally:
        leader.close()
        srv.kill_all()


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def token_head(length, token=TOKEN):
    """The first bytes of a frame of `length` message bytes whose message starts with the token."""
    t = token.encode()
    return frame(b"")[:1] + struct.pack(">I", length) + b"\x0a" + bytes([len(t)]) + t


def test_preauth(tiny):
    """Before authentication a stranger costs nothing: a 64 MiB frame with a wrong token is refused
    after its first bytes (it was unpacked whole: 3.36 GB and an 18 s stall for 63 MiB), a frame
    whose token is not its first field is refused, frames trickled slower than --frame-timeout
    and tokens slower than --auth-timeout are dropped (any byte used to keep a connection alive),
    a frame that would take the buffered input over --max-buffered is refused, and a worker
    group's leader connects while clients hold every --max-conns slot (it was refused "too many
    connections" and a launched group was started again and again)."""
    srv = Server(WORK / "state-preauth", tiny, extra=[*EXTERNAL, "--frame-timeout", "2", "--auth-timeout",
                                                       "2", "--idle-timeout", "60", "--max-buffered", str(96 << 20)])
    try:
        srv.health()
        time.sleep(0.3)
        rss0 = rss_kb(srv.p.pid)
        big = pb.Request(token="not-the-token", submit=pb.SubmitRequest(
            documents=[pb.Document(name="big", text=b"x" * ((64 << 20) - 64))])).SerializeToString()
        check(len(big) <= 64 << 20, f"a frame within --max-frame ({len(big)} bytes)")
        sent = {}
        s = srv.connect()

        def send_big():
            try:
                s.sendall(frame(big))
                sent["all"] = True
            except OSError as e:
                sent["error"] = e
        th = threading.Thread(target=send_big)
        th.start()
        lat = []
        for _ in range(10):  # a good client on another connection meanwhile
            t0 = time.time()
            srv.health()
            lat.append(time.time() - t0)
        msg = expect_status(s, pb.UNAUTHENTICATED, "a 64 MiB frame with a wrong token")
        th.join(60)
        s.close()
        rss1 = rss_kb(srv.p.pid)
        check("all" not in sent, f"the server refused the frame before reading it ({sent})")
        check(rss1 - rss0 < 16384, f"the server's memory stayed put: {rss0} -> {rss1} kB")
        check(max(lat) < 1.0, f"health calls meanwhile: max {max(lat) * 1e3:.0f} ms")
        print(f"  64 MiB frame, wrong token: refused ({msg}); RSS {rss0} -> {rss1} kB; health max "
              f"{max(lat) * 1e3:.1f} ms")
        # the token not first (a valid message, its fields out of order): refused the same way
        with srv.connect() as s:
            body = pb.Request(health=pb.HealthRequest()).SerializeToString() + pb.Request(token=TOKEN).SerializeToString()
            s.sendall(frame(body))
            expect_status(s, pb.UNAUTHENTICATED, "a message whose first field is not the token")
        # a first call far over the pre-authentication bytes is served: its token comes first
        doc = words(30000, 11).encode()
        [jid] = srv.submit([("first", doc)], task=pb.GENERATE, attention="sink", max_tokens=1)
        check(len(doc) > 100000 and srv.result(jid).state == pb.QUEUED,
              f"a {len(doc)}-byte first submit is served: {pb.JobState.Name(srv.result(jid).state)}")
        # slow senders: a frame trickled after a call, a token trickled on a new connection: each
        # dropped after its deadline (2 s; a connection that sends nothing has --idle-timeout)
        with srv.connect() as slow, srv.connect() as slow_token:
            call(slow, pb.Request(health=pb.HealthRequest()))
            t0 = time.time()
            head = token_head(1000)
            closed = {}
            for i in range(40):
                for name, sock, data in (("frame", slow, head), ("token", slow_token, head)):
                    if name not in closed and i < len(data):
                        try:
                            sock.sendall(data[i:i + 1])
                        except OSError:
                            closed[name] = time.time() - t0
                time.sleep(0.25)
                if len(closed) == 2:
                    break
            for name, sock in (("frame", slow), ("token", slow_token)):
                msg = expect_status(sock, pb.DEADLINE_EXCEEDED, f"trickled {name}")
                check(("within 2 s" in msg), f"{name}: the message names the deadline: {msg}")
            dt = time.time() - t0
            check(dt < 8, f"the slow connections were dropped after {dt:.1f} s (deadlines 2 s)")
        # --max-buffered 96 MiB: a second 60 MiB frame in progress does not fit, and is refused
        # at once; when the first goes, a third fits
        a, b, c = srv.connect(), srv.connect(), srv.connect()
        try:
            a.sendall(token_head(60 << 20))
            time.sleep(0.3)
            b.sendall(token_head(60 << 20))
            msg = expect_status(b, pb.RESOURCE_EXHAUSTED, "a frame over --max-buffered")
            check("--max-buffered" in msg and str(96 << 20) in msg, f"the message has the numbers: {msg}")
            a.close()
            time.sleep(0.5)
            c.sendall(token_head(60 << 20))
            c.settimeout(1)
            try:
                r = recv_reply(c)
                fail(f"a frame that fits once the first is gone was refused: {r}")
            except (socket.timeout, TimeoutError):
                pass
        finally:
            a.close(), b.close(), c.close()
        check(rss_kb(srv.p.pid) - rss0 < 16384, "reserving room allocates nothing")
    finally:
        srv.kill_all()
    # a slot is kept for the worker group: with --max-conns 3, two clients hold every client slot
    srv = Server(WORK / "state-spare", tiny, extra=[*EXTERNAL, "--max-conns", "3"])
    held = []
    try:
        for _ in range(2):
            held.append(srv.connect())
            check(call(held[-1], pb.Request(health=pb.HealthRequest()))[1].code == pb.OK, "a client holds a slot")
        with srv.connect() as extra:  # the kept slot: a client in it is refused at its first call
            _, st = call(extra, pb.Request(health=pb.HealthRequest()))
            check(st.code == pb.RESOURCE_EXHAUSTED and "too many connections" in st.message and "limit is 3" in st.message,
                  f"a third client: {pb.Code.Name(st.code)} {st.message}")
        time.sleep(0.3)
        leader = srv.connect()
        held.append(leader)
        _, st = call(leader, pb.Request(worker_hello=pb.WorkerHello(ranks=1, model="fake", pid=os.getpid())),
                     token=WORKER_TOKEN)
        check(st.code == pb.OK, f"the worker group's leader connects while clients hold every slot: {st.message}")
        with srv.connect() as late:  # every slot taken: refused as it connects
            late.settimeout(10)
            msg = expect_status(late, pb.RESOURCE_EXHAUSTED, "a client over --max-conns")
            check("too many connections" in msg, msg)
    finally:
        for h in held:
            h.close()
        srv.kill_all()
    # the same with a launched group whose ranks die while clients hold every slot (one of them
    # connected while the group was down, and silent): the relaunched leader gets the kept slot
    # (it was refused "too many connections" and the group started again and again)
    srv = Server(WORK / "state-spare-launch", tiny, extra=["--max-conns", "3", "--auth-timeout", "2"])
    held = []
    try:
        srv.wait_ready()
        for _ in range(2):
            held.append(srv.connect())
            check(call(held[-1], pb.Request(health=pb.HealthRequest()))[1].code == pb.OK, "a client holds a slot")
        for pid in worker_pids(srv):
            os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 30
        while time.time() < deadline and call(held[0], pb.Request(health=pb.HealthRequest()))[0][0].health.workers_ready:
            time.sleep(0.05)
        held.append(srv.connect())  # the leader's slot, taken by a silent client
        deadline, ready = time.time() + 60, False
        while time.time() < deadline and not ready:
            ready = call(held[0], pb.Request(health=pb.HealthRequest()))[0][0].health.workers_ready
            time.sleep(0.2)
        log = srv.log.read_text()
        check(ready, f"the relaunched group connected while clients held every slot:\n{log[-2000:]}")
        print(f"  relaunched group connected after {log.count('worker group starting') - 1} start(s)")
    finally:
        for h in held:
            h.close()
        srv.kill_all()
    print("before authentication: big frames refused after the token, slow senders dropped, buffered input "
          "capped, a slot kept for the worker group")


def test_batch_user(tiny):
    """What a batch user sees, with the test as the worker group's leader (so it decides when
    progress and text arrive): `submit --watch` off a terminal prints plain progress lines at
    the --progress interval for prefill and decode, then the text; List and `jobs --json` carry
    each job's task, tokens, timings, ranks, rule and stop reason; `result --json` names its task
    and its text; a queued watcher hears its new place in the queue when a job ahead starts."""
    import json
    srv = Server(WORK / "state-batch-user", tiny, extra=EXTERNAL)
    leader = srv.connect()
    cenv = dict(ENV, LONGSEQ_SERVER=f"127.0.0.1:{srv.port}", LONGSEQ_TOKEN=TOKEN)

    def event(kind, jid, **kw):
        leader.sendall(frame(pb.Request(token=WORKER_TOKEN, worker_event=pb.WorkerEvent(
            job_id=jid, kind=kind, **kw)).SerializeToString()))

    def next_run(client=None):
        leader.settimeout(60)
        try:
            r = recv_reply(leader)
        except (socket.timeout, TimeoutError):
            fail("no job reached the leader" + (f": {client.communicate(timeout=10)}" if client else ""))
        check(r.WhichOneof("body") == "run", f"the leader was sent {r}")
        return r.run

    try:
        _, st = call(leader, pb.Request(worker_hello=pb.WorkerHello(ranks=1, model="fake", pid=os.getpid())),
                     token=WORKER_TOKEN)
        check(st.code == pb.OK, f"worker_hello: {st.message}")
        # submit --watch with standard error a pipe: progress lines every 0.5 s, then the text
        f = WORK / "batch-user.txt"
        f.write_text(words(30, 11))
        p = subprocess.Popen([str(BIN), "submit", "--watch", "--progress", "0.5", "--task", "generate",
                              "--max-tokens", "40", str(f)], env=cenv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        run = next_run(p)
        jid = run.job_id
        time.sleep(0.3)  # the client is watching
        for k in range(1, 17):  # 1.6 s of prefill
            event(pb.WorkerEvent.PROGRESS, jid, fraction=k / 16, tok_per_s=100.0)
            time.sleep(0.1)
        for k in range(16):  # 1.6 s of decode, one piece a token
            event(pb.WorkerEvent.TEXT, jid, text=f"w{k} ")
            time.sleep(0.1)
        text = "".join(f"w{k} " for k in range(16))
        event(pb.WorkerEvent.DONE, jid, result=pb.JobResult(
            text=text, generated=16, ranks=1, prefill_ms=1600, decode_ms=1600, attention="full", rope="none",
            stop="length", task=pb.GENERATE))
        out, err = p.communicate(timeout=60)
        check(p.returncode == 0, f"submit --watch: {p.returncode} {err}")
        check(out.split("\n")[0] == jid and text.strip() in out, f"submit --watch prints the id, then the text: {out!r}")
        prefill = re.findall(r"prefill +(\d+)%, 100 tok/s, ETA", err)
        check(len([x for x in prefill if int(x) < 100]) >= 2 and "\r" not in err,
              f"prefill progress lines off a terminal (every 0.5 s, not only at 100%): {err!r}")
        decode = re.findall(r"decode (\d+) tokens, [\d.]+ tok/s, (\d+)% of --max-tokens 40, ETA at most \d+ s", err)
        check(len(decode) >= 2, f"decode progress lines off a terminal: {err!r}")
        # List, jobs --json and result --json: task, tokens, timings, ranks, rule, stop
        [qid] = srv.submit([("queued", words(20, 12).encode())], task=pb.GENERATE, max_tokens=4)
        run = next_run()  # the queued job starts at once: keep it running while listing
        check(run.job_id == qid, "the second job runs")
        jobs = {j.id: j for j in srv.rpc(pb.Request(list=pb.ListRequest(limit=10)))[0][0].list.jobs}
        d, q = jobs[jid], jobs[qid]
        check(d.task == pb.GENERATE and d.tokens > 0, f"list: task and tokens: {d}")
        check(d.prefill_ms == 1600 and d.decode_ms == 1600 and d.ranks == 1 and d.attention == "full"
              and d.stop == "length" and d.generated == 16 and not d.text, f"list: the worker's figures, no text: {d}")
        check(q.task == pb.GENERATE and q.state == pb.RUNNING and q.tokens == len(run.tokens) and q.ranks == 1
              and q.attention == "full", f"list: a running generate job: {q}")
        j = subprocess.run([str(BIN), "jobs", "--json"], env=cenv, capture_output=True, text=True)
        recs = {r["id"]: r for r in map(json.loads, j.stdout.splitlines())}
        check(j.returncode == 0 and recs[jid]["task"] == "generate" and recs[jid]["prefill_ms"] == 1600
              and recs[jid]["stop"] == "length" and recs[jid]["ranks"] == 1 and recs[qid]["task"] == "generate",
              f"jobs --json: {j.stdout} {j.stderr}")
        r = subprocess.run([str(BIN), "result", "--json", jid], env=cenv, capture_output=True, text=True)
        rec = json.loads(r.stdout)
        check(rec["task"] == "generate" and rec["text"] == text and "summary" not in rec, f"result --json: {rec}")
        # a queued watcher hears its place: two jobs behind the running one, then one starts
        a, b = srv.submit([("a", b"one"), ("b", b"two")], task=pb.GENERATE, max_tokens=4)
        with srv.connect() as w:
            w.sendall(frame(pb.Request(token=TOKEN, watch=pb.WatchRequest(job_id=b)).SerializeToString()))
            first = recv_reply(w).event
            check(first.state == pb.QUEUED and first.queue_position == 1, f"b queued behind a: {first}")
            event(pb.WorkerEvent.DONE, qid, result=pb.JobResult(text="q", generated=1, ranks=1))
            check(next_run().job_id == a, "a runs")
            w.settimeout(10)
            try:
                upd = recv_reply(w).event
            except (socket.timeout, TimeoutError):
                fail("the queued watcher was told nothing when the job ahead of it started")
            check(upd.kind == pb.Event.STATE and upd.state == pb.QUEUED and upd.queue_position == 0,
                  f"b is next: {upd}")
            event(pb.WorkerEvent.DONE, a, result=pb.JobResult(text="a", generated=1, ranks=1))
            check(next_run().job_id == b, "b runs")
            check(recv_reply(w).event.state == pb.RUNNING, "then b's watcher sees it running")
            event(pb.WorkerEvent.DONE, b, result=pb.JobResult(text="b", generated=1, ranks=1))
    finally:
        leader.close()
        srv.kill_all()
    print("batch user: progress lines off a terminal, submit --watch text, list/jobs/result carry the job's figures, "
          "queue positions")


def test_summarize_kept(tiny):
    """summarize writes each record the moment its job ends and never deletes a state that still
    holds results it did not return: stopped by SIGTERM mid-batch (as Slurm does at a time
    limit), its --out keeps the finished records and its temporary state is kept and named with
    the way to get the rest (which works). A batch that returns everything leaves no state."""
    import json
    tmp = WORK / "summarize-tmp"
    tmp.mkdir()
    env = dict(ENV, TMPDIR=str(tmp))
    files = []
    for i in range(3):
        files.append(WORK / f"kept{i}.txt")
        files[-1].write_text(words(60, 40 + i))
    out, log = WORK / "kept.jsonl", WORK / "kept.log"
    with open(log, "w") as lf:
        p = subprocess.Popen([str(BIN), "summarize", "--model", str(tiny), "--max-tokens", "3000", "--out", str(out),
                              *map(str, files)], env=env, stdout=subprocess.DEVNULL, stderr=lf, start_new_session=True)
        STARTED.append(p.pid)
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None and not (out.exists() and out.read_text().count("\n")):
            time.sleep(0.02)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(120)
    err = log.read_text()
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    check(rc != 0 and 1 <= len(recs) < 3, f"stopped mid-batch: status {rc}, {len(recs)} records\n{err}")
    check(all(r["status"] == "done" and r["summary"] and r["task"] == "summarize" for r in recs),
          f"the finished records are whole: {recs}")
    m = re.search(r"(\d+) of 3 results were not returned; their jobs are kept in (\S+)\.", err)
    check(m and int(m.group(1)) == 3 - len(recs), f"summarize says what it kept and where: {err}")
    state = Path(m.group(2))
    check(state.parent == tmp and (state / "jobs.db").exists() and (state / "token").exists(),
          f"the state {state} is still there")
    ids = err.split("The jobs:")[1].split()
    check(len(ids) == 3 - len(recs), f"the jobs not returned are named: {ids}")
    # what the message says to do gives the remaining records
    srv_log = WORK / "kept-serve.log"
    with open(srv_log, "w") as lf:
        srv = subprocess.Popen([str(BIN), "serve", "--listen", "127.0.0.1:0", "--state", str(state), "--token-file",
                                str(state / "token"), "--model", str(tiny)], env=ENV, stderr=lf,
                               stdout=subprocess.DEVNULL, start_new_session=True)
    STARTED.append(srv.pid)
    try:
        port = None
        deadline = time.time() + 60
        while port is None and time.time() < deadline:
            m = re.search(r"\(port (\d+)\)", srv_log.read_text())
            port = m and m.group(1)
            time.sleep(0.05)
        cenv = dict(ENV, LONGSEQ_SERVER=f"127.0.0.1:{port}")
        for jid in ids:
            w = subprocess.run([str(BIN), "watch", "--token-file", str(state / "token"), jid], env=cenv,
                               capture_output=True, text=True, timeout=300)
            r = subprocess.run([str(BIN), "result", "--record", "--token-file", str(state / "token"), jid], env=cenv,
                               capture_output=True, text=True)
            rec = json.loads(r.stdout)  # (--record: the record as summarize --out writes it)
            check(w.returncode == 0 and rec["status"] == "done" and rec["summary"] and set(rec) == set(recs[0]),
                  f"job {jid} finished after, its record as in --out: {rec}")
    finally:
        os.killpg(srv.pid, signal.SIGKILL)
        srv.wait()
    # a batch whose results all came back leaves no temporary state
    for d in tmp.iterdir():
        subprocess.run(["rm", "-rf", str(d)])
    p = subprocess.run([str(BIN), "summarize", "--model", str(tiny), "--max-tokens", "4", str(files[0])], env=env,
                       capture_output=True, text=True, timeout=300)
    check(p.returncode == 0 and not list(tmp.iterdir()), f"a complete batch removes its state: {p.stderr}")
    print(f"summarize stopped mid-batch: {len(recs)} record(s) kept in --out, the state with {len(ids)} jobs kept "
          "and named; its results came back through serve --state")


def test_doc_client(tiny):
    """The minimal client of docs/protocol.md, as printed there: it finds the token by the
    documented order ($LONGSEQ_TOKEN here), submits, watches and prints the job's text; its
    recv_exact refuses a connection closed in the middle of a frame."""
    text = (REPO / "docs" / "protocol.md").read_text()
    code = text.split("## A minimal client (Python)")[1].split("```python\n")[1].split("```")[0]
    srv = Server(WORK / "state-doc-client", tiny)
    try:
        srv.wait_ready()
        (WORK / "ruth.txt").write_text(words(40, 21))
        script = WORK / "doc_client.py"
        script.write_text(code.replace('("127.0.0.1", 7070)', f'("127.0.0.1", {srv.port})'))
        p = subprocess.run([sys.executable, str(script)], cwd=WORK, capture_output=True, text=True, timeout=300,
                           env=dict(ENV, LONGSEQ_TOKEN=TOKEN, PYTHONPATH=str(WORK)))
        jobs = srv.rpc(pb.Request(list=pb.ListRequest(limit=1)))[0][0].list.jobs
        want = srv.result(jobs[0].id).text
        check(p.returncode == 0 and p.stdout == want + "\n", f"the documented client: {p.stdout!r} {p.stderr[-500:]}")
        ns = {}
        exec(code.split("token = read_token()")[0], ns)  # its functions, on a connection cut mid-frame
        a, b = socket.socketpair()
        b.sendall(b"\x00\x00\x00")
        b.close()
        try:
            ns["recv_exact"](a, 5)
            fail("recv_exact returned a short frame")
        except ConnectionError as e:
            check("3 of 5 bytes" in str(e), f"a frame cut short: {e}")
        a.close()
        srv.stop()
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print("docs/protocol.md's client: documented token order, text as the server's, a cut frame is an error")


def test_rank_death(tiny):
    """A non-leader rank's death is not reported as the leader's: the leader's connection closes
    too (the launcher stops the group), and the coordinator waits for the launcher's exit to say
    what happened (it said "the worker group's leader closed its connection")."""
    srv = Server(WORK / "state-rank-death", tiny, np_=2)
    try:
        srv.wait_ready()
        pids = worker_pids(srv)
        check(len(pids) == 2, f"two ranks: {pids}")
        ranks = {p: Path(f"/proc/{p}/environ").read_bytes().split(b"OMPI_COMM_WORLD_RANK=")[1].split(b"\0")[0]
                 for p in pids}
        os.kill(next(p for p, r in ranks.items() if r != b"0"), signal.SIGKILL)  # not the leader (rank 0)
        deadline = time.time() + 60
        while time.time() < deadline and "worker group down" not in srv.log.read_text():
            time.sleep(0.1)
        down = [ln for ln in srv.log.read_text().splitlines() if "worker group down" in ln]
        check(down and "leader" not in down[0] and "signal 9" in down[0], f"how the rank's death is told: {down}")
        srv.wait_ready()  # a new group
        check(srv.stop() == 0, "exit 0")
        wait_no_workers(srv)
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print(f"a non-leader rank killed: {down[0].split('down: ')[1]}")


def test_schema(tiny):
    # a store written by schema 1 (jobs only) is migrated, its job kept and run
    state = WORK / "state-v1"
    state.mkdir(mode=0o700)
    db = sqlite3.connect(state / "jobs.db")
    db.executescript("""
      CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
        state INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL,
        finished_ms INTEGER NOT NULL DEFAULT 0, settings BLOB NOT NULL, tokens BLOB NOT NULL,
        n_tokens INTEGER NOT NULL, result BLOB, error TEXT NOT NULL DEFAULT '');
      CREATE INDEX jobs_by_state ON jobs(state, seq);
      PRAGMA user_version = 1;""")
    ids = [int(t) for t in run(["tokenize", "--model", str(tiny), "-"], input=b"hello old store").stdout.split()]
    db.execute("INSERT INTO jobs(id, name, state, created_ms, settings, tokens, n_tokens) VALUES (?,?,?,?,?,?,?)",
               ("j00000000000000aa", "old", 0, 1, pb.Settings(task=pb.GENERATE, max_tokens=5).SerializeToString(),
                struct.pack(f"<{len(ids)}i", *ids), len(ids)))
    db.commit()
    db.close()
    srv = Server(state, tiny)
    try:
        events, _ = srv.watch("j00000000000000aa")
        check(events[-1].state == pb.DONE, "the schema-1 job ran")
        srv.stop()
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    db = sqlite3.connect(state / "jobs.db")
    v = db.execute("PRAGMA user_version").fetchone()[0]
    n = db.execute("SELECT count(*) FROM job_log").fetchone()[0]
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    check(v == 4 and n >= 3, f"migrated to version 4 with a job log ({v}, {n} rows)")
    p = subprocess.run([str(BIN), "serve", "--listen", "127.0.0.1:0", "--state", str(state), "--token-file",
                        str(TOKEN_FILE), "--model", str(tiny)], capture_output=True, text=True, timeout=60, env=ENV)
    check(p.returncode == 1 and "schema version 99" in p.stderr, f"a newer store is refused: {p.stderr}")
    print("schema: version 1 migrated to 4; version 99 refused")


def test_load(tiny):
    state = WORK / "state-load"
    srv = Server(state, tiny, np_=1, extra=["--quiet"])
    try:
        srv.wait_ready()

        def fds():
            return len(os.listdir(f"/proc/{srv.p.pid}/fd"))

        def rss():
            for line in open(f"/proc/{srv.p.pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])

        time.sleep(0.5)  # the readiness checks' connections closed
        base_fds = fds()
        results, rss_after = [], []
        for rnd in range(2):
            errors = []

            def client(i):
                try:
                    with srv.connect() as s:
                        replies, st = call(s, pb.Request(submit=pb.SubmitRequest(
                            documents=[pb.Document(name=f"c{i}", text=words(8, 1000 * rnd + i).encode())],
                            settings=pb.Settings(task=pb.GENERATE, max_tokens=2))))
                        if st.code != pb.OK:
                            errors.append(st.message)
                            return
                        jid = replies[0].submit.job_ids[0]
                        s.sendall(frame(pb.Request(token=TOKEN, watch=pb.WatchRequest(job_id=jid)).SerializeToString()))
                        last = None
                        while True:
                            r = recv_reply(s)
                            if r.WhichOneof("body") == "status":
                                break
                            last = r.event
                        results.append(last.state == pb.DONE)
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))

            threads = [threading.Thread(target=client, args=(i,)) for i in range(200)]
            t0 = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join(600)
            check(not errors, f"round {rnd}: every client answered ({errors[:3]})")
            time.sleep(0.5)
            rss_after.append(rss())
            print(f"  round {rnd}: 200 clients in {time.time() - t0:.1f} s, {fds()} fds, RSS {rss_after[-1]} kB")
        check(len(results) == 400 and all(results), f"400 jobs done ({sum(results)})")
        check(fds() == base_fds, f"descriptors back to {base_fds} ({fds()})")
        if "ASAN_OPTIONS" in os.environ:  # ASan's quarantine holds freed memory: LeakSanitizer checks at exit
            print("  (sanitizer build: leaks are checked by LeakSanitizer when the server exits)")
        else:
            check(rss_after[1] - rss_after[0] < 4096, f"resident memory steady between rounds ({rss_after})")
        check(srv.stop() == 0, f"exit 0 (under the sanitizers: no leak)\n{srv.log.read_text()[-3000:]}")
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print("load: 2 x 200 concurrent clients, all done, no descriptor or memory growth")


def kjv_text(tokens):
    """A KJV passage of about `tokens` tokens of the default model."""
    text = need_file(KJV, "the KJV text").read_text()
    return text[200000:200000 + int(tokens * 4.3)]


def test_worker_failure():
    state = WORK / "state-fail"
    doc = kjv_text(3000).encode()
    srv = Server(state, MODEL, np_=2, extra=["--attempts", "2"])
    try:
        srv.wait_ready()
        # a rank killed mid-prefill: retried, then done
        [jid] = srv.submit([("kjv", doc)], task=pb.GENERATE, max_tokens=8)
        killed = []

        def on_event(e):
            if e.kind == pb.Event.PREFILL and 0.1 < e.fraction < 0.9 and not killed:
                pids = worker_pids(srv)
                os.kill(pids[-1], signal.SIGKILL)
                killed.append(pids[-1])
        events, st = srv.watch(jid, on_event)
        r = srv.result(jid)
        check(killed and r.state == pb.DONE and r.attempts == 2 and r.generated > 0,
              f"killed rank {killed}: the job was retried and completed: {r.state} attempts {r.attempts}")
        states = [(pb.JobState.Name(e.state), e.attempt) for e in events if e.kind == pb.Event.STATE]
        check(("QUEUED", 1) in states and ("RUNNING", 2) in states, f"the watcher saw the retry: {states}")
        # a job whose group dies on every attempt fails after --attempts 2 with the reason
        [jid] = srv.submit([("doomed", doc)], task=pb.GENERATE, max_tokens=8)
        kills = []

        def on_event2(e):
            if e.kind == pb.Event.PREFILL and 0.1 < e.fraction < 0.9:
                pids = worker_pids(srv)
                if pids and pids[0] not in kills:
                    os.kill(pids[0], signal.SIGKILL)
                    kills.append(pids[0])
        events, st = srv.watch(jid, on_event2)
        r = srv.result(jid)
        check(r.state == pb.FAILED and len(kills) == 2 and "each of 2 attempts" in r.error,
              f"failed after 2 attempts with the reason: {r.error!r} ({len(kills)} kills)")
        print(f"  failure message: {r.error}")
        srv.wait_ready()
        check(srv.stop() == 0, "exit 0")
        wait_no_workers(srv)
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print("worker failure: a killed rank's job retried and done; always-killed job failed after 2 attempts")


def test_cancel():
    state = WORK / "state-cancel"
    srv = Server(state, MODEL, np_=2)
    try:
        srv.wait_ready()
        doc = kjv_text(3000).encode()
        a, b = srv.submit([("a", doc), ("b", doc)], task=pb.GENERATE, max_tokens=400)
        # b is queued: cancelled at once
        _, st = srv.rpc(pb.Request(cancel=pb.CancelRequest(job_id=b)))
        check(st.code == pb.OK and srv.result(b).state == pb.CANCELLED, f"queued job cancelled: {st}")
        t = {}

        def on_event(e):  # a in prefill: cancel
            if e.kind == pb.Event.PREFILL and e.fraction > 0.1 and "t" not in t:
                t["t"] = time.time()
                threading.Thread(target=lambda: srv.rpc(pb.Request(cancel=pb.CancelRequest(job_id=a)))).start()
        events, st = srv.watch(a, on_event)
        dt = time.time() - t["t"]
        check(events[-1].state == pb.CANCELLED and dt < 15, f"cancelled in prefill after {dt:.1f} s")
        [c] = srv.submit([("c", kjv_text(300).encode())], task=pb.GENERATE, max_tokens=2000)
        t.clear()

        def on_text(e):  # c in decode: cancel
            if e.kind == pb.Event.TEXT and "t" not in t:
                t["t"] = time.time()
                threading.Thread(target=lambda: srv.rpc(pb.Request(cancel=pb.CancelRequest(job_id=c)))).start()
        events, st = srv.watch(c, on_text)
        dt = time.time() - t["t"]
        r = srv.result(c)
        check(r.state == pb.CANCELLED and dt < 15, f"cancelled in decode after {dt:.1f} s")
        # the group is still there and serves the next job
        [d] = srv.submit([("d", b"In the beginning")], task=pb.GENERATE, max_tokens=4)
        events, _ = srv.watch(d)
        check(events[-1].state == pb.DONE and "group starting" not in srv.log.read_text().split("cancelled")[-1],
              "the next job runs on the same group")
        srv.stop()
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print("cancel: queued at once, running in prefill and in decode within seconds")


def test_summarize_cli():
    doc = WORK / "ruth.txt"
    doc.write_text(kjv_text(600))
    out = WORK / "results.jsonl"
    p = subprocess.run([str(BIN), "summarize", "--np", "2", "--max-tokens", "24", "--out", str(out), str(doc)],
                       capture_output=True, text=True, timeout=600, env=ENV)
    check(p.returncode == 0, f"longseq summarize: {p.stderr}")
    import json
    rec = json.loads(out.read_text().splitlines()[0])
    prompt = WORK / "ruth-prompt.txt"
    prompt.write_text(doc.read_text() + "\n\n" + SUMMARIZE_ASK)
    want = generate_text(MODEL, prompt, 24, chat=True, penalty=1.1)
    check(rec["summary"] == want and rec["summary"] in p.stdout, f"summary {rec['summary']!r} == {want!r}")
    check(rec["status"] == "done" and rec["ranks"] == 2 and rec["file"] == str(doc) and rec["tokens"] > 500,
          f"record: {rec}")
    print(f"summarize --np 2: {rec['tokens']} tokens, summary as one-process generate --chat")


def main():
    quick = "--quick" in sys.argv
    tiny = WORK / "tiny.gguf"
    write_tiny_llama(str(tiny), embd=64, heads=4, kv_heads=2, ff=128, ctx=4096, chat_template=CHATML)
    test_protocol(tiny)
    test_hostile(tiny)
    test_settings_limits(tiny)
    test_documents(tiny)
    test_prep_off_loop(tiny)
    test_summarize_bad_file(tiny)
    test_external(tiny)
    test_worker_credential(tiny)
    test_as_leader(tiny)
    test_preauth(tiny)
    test_batch_user(tiny)
    test_summarize_kept(tiny)
    test_doc_client(tiny)
    test_rank_death(tiny)
    test_schema(tiny)
    test_durability(tiny)
    test_load(tiny)
    if not quick:
        need_file(MODEL, "the default model")
        test_summarize_cli()
        test_cancel()
        test_worker_failure()
    done("test_service")


if __name__ == "__main__":
    main()
