#!/usr/bin/env python3
"""service_prep_latency.py — what a large Submit costs the other clients of `longseq serve`
(docs/architecture.md, "The job service": documents are prepared off the event loop). On the
default model, one Submit of KJV text repeated to 16 MiB and to 50 MB, once as a generate job
with attention sink (tokenized in full, queued) and once as a summarize job with full
attention (refused by its bytes before tokenizing); meanwhile a Health call on a fresh
connection every 20 ms. Prints, for each, when the Submit was answered and the Health calls'
median and slowest latency, with the calls over 20 ms (when they started, how long they took).

    ~/.cache/longseq/venv/bin/python bench/service_prep_latency.py      # LONGSEQ_BIN for another binary

Uses the service test's helpers (tests/oracle/test_service.py: the server, frames, tokens).
"""
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "oracle"))
import test_service as t  # noqa: E402
from lsoracle import KJV, MODEL  # noqa: E402

pb = t.pb


def text_of(n):
    kjv = Path(KJV).read_bytes()
    return (kjv * (n // len(kjv) + 1))[:n]


def measure(srv, text, settings, label):
    sent, res = threading.Event(), {}

    def submitter():
        with srv.connect() as s:
            req = pb.Request(token=t.TOKEN, submit=pb.SubmitRequest(documents=[pb.Document(name="big", text=text)],
                                                                    settings=settings))
            res["t0"] = time.time()
            s.sendall(t.frame(req.SerializeToString()))
            sent.set()
            replies = []
            while (r := t.recv_reply(s)).WhichOneof("body") != "status":
                replies.append(r)
            res.update(done=time.time(), st=r.status,
                       err=replies[0].submit.errors[0] if replies and replies[0].submit.errors else "")

    th = threading.Thread(target=submitter)
    th.start()
    sent.wait(120)
    lat, slow = [], []
    while th.is_alive():
        h0 = time.time()
        srv.health()
        lat.append(time.time() - h0)
        if lat[-1] > 0.02:
            slow.append((h0 - res["t0"], lat[-1]))
        time.sleep(0.02)
    th.join()
    print(f"{label}: {len(text)} bytes, answered after {res['done'] - res['t0']:.2f} s ({res['st'].message}; "
          f"{res['err'][:120]!r}); {len(lat)} health calls, median {1e3 * statistics.median(lat):.1f} ms, "
          f"slowest {1e3 * max(lat):.0f} ms; over 20 ms (start s / took ms): "
          + (", ".join(f"{a:.2f}/{1e3 * b:.0f}" for a, b in slow) or "none"), flush=True)


def main():
    srv = t.Server(t.WORK / "state-prep-latency", MODEL, np_=1, extra=[*t.EXTERNAL, "--max-job-tokens", str(1 << 32)])
    try:
        for n, label in ((16 * 2**20, "16 MiB"), (50 * 10**6, "50 MB")):
            text = text_of(n)
            measure(srv, text, pb.Settings(task=pb.GENERATE, attention="sink", max_tokens=16),
                    f"{label} generate, sink (tokenized, queued)")
            measure(srv, text, pb.Settings(task=pb.SUMMARIZE, max_tokens=16), f"{label} summarize, full (refused by its bytes)")
        srv.stop()
    finally:
        if srv.p.poll() is None:
            srv.kill_all()


if __name__ == "__main__":
    main()
