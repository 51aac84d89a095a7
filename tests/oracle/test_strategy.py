#!/usr/bin/env python3
"""The long-document strategy as a job setting (issue 19 §1): the coordinator runs map-reduce and
extend itself, for any client, through the protocol (docs/protocol.md, "Strategies"). Spoken with
the independent Python client of test_service.py (protobuf from proto/longseq.proto).

- settings: a bad strategy, a strategy on a task that is not summarize, chunk_tokens with
  direct, chunk_tokens below 512: INVALID_ARGUMENT naming the field;
- map-reduce on a tiny model (1,024-token context): one Submit of a document past the context
  and a short one; the long one is a parent job whose watch shows its stages (chunk i/n, then
  combine level L) and ends done with the final summary, strategy, chunks, levels, calls and
  one `parts` entry per chunk; its children are ordinary jobs naming it as their parent, each
  done once; the short one under auto runs direct (strategy direct, chunks 1, no children);
- extend under auto with a table that has an extension: one child with the RoPE stretched;
- cancel of a parent: the parent and every child not finished end cancelled (queued ones at
  once; with the default model, a running one stops at the group's next step);
- a child that fails fails its parent with its reason;
- kill -9 of the coordinator while a parent's chunks run (the default model), then restart: the
  parent completes, every child done exactly once (job_log).

`test_strategy.py --quick` skips the default-model part (the sanitizer build runs it so: a
server that ends with a leak or a sanitizer report fails its exit status).
"""
import json
import os
import sqlite3
import subprocess
import sys
import time

import test_service as ts
from fixtures import write_tiny_llama
from lsoracle import check, done, KJV, MODEL, need_file, prose, tmpdir

pb = ts.pb
WORK = tmpdir()


def submit_status(srv, docs, **settings):
    req = pb.Request(submit=pb.SubmitRequest(documents=[pb.Document(name=n, text=t) for n, t in docs],
                                             settings=pb.Settings(**settings)))
    return srv.rpc(req)


def children(srv, parent):
    jobs = srv.rpc(pb.Request(list=pb.ListRequest(limit=1000)))[0][0].list.jobs
    return [j for j in jobs if j.parent == parent]


def done_counts(state):
    db = sqlite3.connect(state / "jobs.db")
    try:
        rows = db.execute("SELECT job_id, count(*) FROM job_log WHERE state = 2 GROUP BY job_id").fetchall()
        kids = db.execute("SELECT id, parent FROM jobs WHERE parent != ''").fetchall()
        return dict(rows), kids
    finally:
        db.close()


def test_settings(tiny):
    srv = ts.Server(WORK / "state-settings", tiny, extra=["--workers", "external", "--worker-token-file",
                                                             str(ts.WORKER_TOKEN_FILE)])
    try:
        for settings, want in [(dict(strategy="abridge"), "settings.strategy \"abridge\" is not auto, direct, extend or map-reduce"),
                               (dict(strategy="map-reduce", task=pb.GENERATE), "does not apply to task GENERATE"),
                               (dict(strategy="direct", chunk_tokens=1024), "settings.chunk_tokens belongs to settings.strategy map-reduce"),
                               (dict(strategy="extend", combine_parts=2), "settings.combine_parts belongs to"),
                               (dict(strategy="map-reduce", chunk_tokens=100), "settings.chunk_tokens 100 is not an integer in [512"),
                               (dict(strategy="map-reduce", combine_parts=1), "settings.combine_parts 1 is not an integer in [2")]:
            _, st = submit_status(srv, [("d", b"Some text.")], **settings)
            check(st.code == pb.INVALID_ARGUMENT and want in st.message, f"{settings}: {pb.Code.Name(st.code)} {st.message}")
        check(srv.stop() == 0, f"the server exited cleanly: {srv.log.read_text()[-3000:]}")
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print("settings: bad strategies and their fields refused, naming them")


def test_map_reduce(tiny):
    state = WORK / "state-mr"
    srv = ts.Server(state, tiny)
    try:
        srv.wait_ready()
        long_doc = prose(150, 1).encode()
        pid, sid = srv.submit([("long", long_doc), ("short", b"Ruth gleaned in the field of Boaz.")],
                              strategy="map-reduce", chunk_tokens=600, max_tokens=8)
        events, st = srv.watch(pid)
        stages = [e.stage for e in events if e.kind == pb.Event.STAGE]
        check(events[-1].state == pb.DONE, f"the parent ended done: {events[-1]} {srv.log.read_text()[-3000:]}")
        check(any(s.startswith("chunk ") for s in stages) and any(s.startswith("combine level 1") for s in stages),
              f"watch shows the stages: {stages}")
        check(any(e.kind == pb.Event.STAGE and e.tok_per_s > 0 and 0 < e.fraction <= 1 for e in events),
              "stages come with a rate and a fraction")
        r = srv.result(pid)
        check(r.state == pb.DONE and r.strategy == "map-reduce" and r.chunks >= 3 and r.levels >= 1 and
              r.calls >= r.chunks + 1 and len(r.parts) == r.chunks and r.text == events[-2].text and r.tokens > 1024,
              f"the record: {r}")
        kids = children(srv, pid)
        check(len(kids) == r.calls and all(k.state == pb.DONE for k in kids), f"{len(kids)} children, all done")
        check(sum(1 for k in kids if "[chunk " in k.name) == r.chunks, [k.name for k in kids])
        short = srv.result(sid)
        check(short.state == pb.DONE and short.strategy == "map-reduce" and short.chunks == 1 and short.levels == 0 and
              short.calls == 1 and len(children(srv, sid)) == 1, f"a short document under map-reduce is one call: {short}")
        # auto: a short document runs direct; the parent is a strategy parent only past the context
        (aid,) = srv.submit([("short", b"Ruth gleaned in the field of Boaz.")], strategy="auto", max_tokens=8)
        events, _ = srv.watch(aid)
        check(events[-1].state == pb.DONE and not children(srv, aid), "auto: direct when it fits")
        # a long document under auto without a table entry: map-reduce with chunks of the trained context
        (bid,) = srv.submit([("long", prose(300, 2).encode())], strategy="auto", max_tokens=8)
        events, _ = srv.watch(bid)
        rb = srv.result(bid)
        check(rb.state == pb.DONE and rb.strategy == "map-reduce" and rb.chunks >= 2, f"auto past the context: {rb}")
        # auto with the job's own attention rule: read directly, as the job chose
        (did,) = srv.submit([("long", prose(300, 2).encode())], strategy="auto", attention="sink", max_tokens=8)
        srv.watch(did)
        rd = srv.result(did)
        check(rd.state == pb.DONE and rd.strategy == "direct" and rd.chunks == 1 and not children(srv, did),
              f"auto with attention sink: direct: {rd}")
        # chunks with no room for text: refused at submit, naming the settings
        _, st = submit_status(srv, [("long", long_doc)], strategy="map-reduce", chunk_tokens=512, max_tokens=400)
        rn = srv.result(_[0].submit.job_ids[0])
        check(rn.state == pb.FAILED and "give a larger settings.chunk_tokens or a smaller settings.max_tokens" in rn.error,
              f"no room in a chunk: {rn}")
        # a child that fails fails its parent, with its reason
        (cid,) = srv.submit([("long", prose(150, 3).encode())], strategy="map-reduce", chunk_tokens=600, max_tokens=8)
        for _ in range(100):
            kids = [k for k in children(srv, cid) if k.state == pb.QUEUED]
            if kids:
                break
            time.sleep(0.05)
        check(kids, "the parent queued its chunks")
        victim = kids[-1].id
        _, st = srv.rpc(pb.Request(cancel=pb.CancelRequest(job_id=victim)))
        events, _ = srv.watch(cid)
        rc = srv.result(cid)
        check(rc.state == pb.FAILED and victim in rc.error and "cancelled" in rc.error, f"a failed child fails the parent: {rc}")
        deadline = time.time() + 120  # (a running child stops at the worker group's next step)
        while time.time() < deadline and not all(k.state in (pb.DONE, pb.CANCELLED) for k in children(srv, cid)):
            time.sleep(0.1)
        check(all(k.state in (pb.DONE, pb.CANCELLED) for k in children(srv, cid)),
              f"its other children stopped: {[pb.JobState.Name(k.state) for k in children(srv, cid)]}")
        check(srv.stop() == 0, f"the server exited cleanly: {srv.log.read_text()[-3000:]}")
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print(f"map-reduce: {r.chunks} chunks, {r.levels} level(s), {r.calls} calls; stages {sorted(set(stages))[:4]}...")


def test_extend(tiny):
    table = WORK / "table.json"
    table.write_text(json.dumps({"models": [{"name": "longseq tiny fixture", "trained": 1024, "reliable": 700,
                                             "extend": {"method": "linear", "factor": 4, "reliable": 8000}}]}))
    env = dict(ts.ENV, LONGSEQ_EFFECTIVE_CONTEXT=str(table))
    srv = ts.Server(WORK / "state-extend", tiny, env=env)
    try:
        srv.wait_ready()
        (pid,) = srv.submit([("long", prose(150, 1).encode())], strategy="auto", max_tokens=8)
        events, _ = srv.watch(pid)
        r = srv.result(pid)
        kids = children(srv, pid)
        check(r.state == pb.DONE and r.strategy == "extend" and r.chunks == 1 and r.levels == 0 and r.calls == 1 and
              len(kids) == 1 and r.rope.startswith("linear x"), f"extend: {r} {kids}")
        check([e.stage for e in events if e.kind == pb.Event.STAGE][:1] == ["extend"], "its stage")
        check(srv.stop() == 0, f"the server exited cleanly: {srv.log.read_text()[-3000:]}")
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print(f"extend: one call, RoPE {r.rope}")


def test_cancel(tiny):
    srv = ts.Server(WORK / "state-cancel", tiny, extra=ts.EXTERNAL)
    try:  # no worker group: the children wait in the queue
        (pid,) = srv.submit([("long", prose(300, 4).encode())], strategy="map-reduce", chunk_tokens=600, max_tokens=8)
        _, st = srv.rpc(pb.Request(cancel=pb.CancelRequest(job_id=pid)))
        check(st.code == pb.OK, st.message)
        r = srv.result(pid)
        kids = children(srv, pid)
        check(r.state == pb.CANCELLED and kids and all(k.state == pb.CANCELLED for k in kids),
              f"the parent and its {len(kids)} children cancelled: {r} {[k.state for k in kids]}")
        check(srv.stop() == 0, f"the server exited cleanly: {srv.log.read_text()[-3000:]}")
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    print(f"cancel: the parent and its {len(kids)} children")


def test_cancel_running():
    """Cancel of a parent while a child runs (the default model): the running child stops, the
    queued ones are cancelled."""
    text = need_file(KJV, "the KJV text").read_text()[400000:400000 + 12000]
    state = WORK / "state-cancel-running"
    srv = ts.Server(state, MODEL)
    try:
        srv.wait_ready()
        (pid,) = srv.submit([("kjv", text.encode())], strategy="map-reduce", chunk_tokens=700, max_tokens=8)
        deadline = time.time() + 300
        while time.time() < deadline and not any(k.state == pb.RUNNING for k in children(srv, pid)):
            time.sleep(0.05)
        _, st = srv.rpc(pb.Request(cancel=pb.CancelRequest(job_id=pid)))
        check(st.code == pb.OK and srv.result(pid).state == pb.CANCELLED, f"the parent cancelled: {st}")
        deadline = time.time() + 120  # (the running child stops at the group's next step)
        while time.time() < deadline and not all(k.state in (pb.DONE, pb.CANCELLED) for k in children(srv, pid)):
            time.sleep(0.1)
        kids = children(srv, pid)
        check(all(k.state in (pb.DONE, pb.CANCELLED) for k in kids) and sum(k.state == pb.CANCELLED for k in kids) >= len(kids) - 1,
              f"its children stopped: {[pb.JobState.Name(k.state) for k in kids]}")
        check(srv.stop() == 0, "the server exited cleanly")
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    db = sqlite3.connect(state / "jobs.db")
    stopped = db.execute("SELECT count(*) FROM jobs j WHERE j.parent = ? AND j.state = 4 AND EXISTS "
                         "(SELECT 1 FROM job_log l WHERE l.job_id = j.id AND l.state = 1)", (pid,)).fetchone()[0]
    db.close()
    check(stopped == 1, f"the child that was running ended cancelled ({stopped})")
    print(f"cancel while a child runs: it stopped, the other {len(kids) - 1} cancelled")


def test_restart():
    """kill -9 while a parent's chunks run on the default model; the restarted coordinator finishes it."""
    text = need_file(KJV, "the KJV text").read_text()[300000:300000 + 12000]
    state = WORK / "state-restart"
    srv = ts.Server(state, MODEL)
    try:
        srv.wait_ready()
        (pid,) = srv.submit([("kjv", text.encode())], strategy="map-reduce", chunk_tokens=700, max_tokens=8)
        seen = []

        def on_event(e):
            if e.kind == pb.Event.STAGE:
                seen.append(e.stage)
                if e.stage.startswith("chunk 2/"):
                    raise StopIteration
        try:
            srv.watch(pid, on_event)
        except StopIteration:
            pass
        check(seen and seen[-1].startswith("chunk 2/"), f"a chunk finished before the kill: {seen}")
    finally:
        srv.kill_all()
    ts.wait_no_workers(srv)
    srv = ts.Server(state, MODEL)
    try:
        events, _ = srv.watch(pid)
        r = srv.result(pid)
        check(r.state == pb.DONE and r.strategy == "map-reduce" and len(r.parts) == r.chunks and r.chunks >= 3,
              f"after the restart the parent completed: {r} {srv.log.read_text()[-2000:]}")
        check(srv.stop() == 0, f"the server exited cleanly: {srv.log.read_text()[-3000:]}")
    finally:
        if srv.p.poll() is None:
            srv.kill_all()
    counts, kids = done_counts(state)
    check(len(kids) == r.calls and all(counts.get(k) == 1 for k, _ in kids) and counts.get(pid) == 1,
          f"every child done exactly once: {counts}")
    print(f"restart: kill -9 at {seen[-1]}; after it the parent finished: {r.chunks} chunks, {r.calls} calls, each once")


def main():
    tiny = WORK / "tiny.gguf"
    write_tiny_llama(str(tiny), embd=64, heads=4, kv_heads=2, ff=128, ctx=1024, chat_template=ts.CHATML)
    test_settings(tiny)
    test_map_reduce(tiny)
    test_extend(tiny)
    test_cancel(tiny)
    if "--quick" not in sys.argv:
        need_file(MODEL, "the default model")
        test_cancel_running()
        test_restart()
    done("test_strategy")


if __name__ == "__main__":
    main()
