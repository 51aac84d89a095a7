#!/usr/bin/env python3
"""deploy/slurm/longseq.sbatch on a real single-node Slurm cluster (tests/slurm/cluster-up:
munge, slurmctld, slurmd, pmix), with CPU ranks on the default model:

- a directory of 3 KJV passages and an empty file, `sbatch -n 2`: the coordinator on the node,
  the worker group of 2 ranks started by srun --mpi=pmix; the results file has one record per
  document: the passages done on 2 ranks, each summary equal to the one-process `longseq
  generate --chat` answer, the empty file failed with its error (the script says so, exit 3);
- a list file of 3 more passages, `scontrol requeue` while the first document runs: the
  requeued run submits nothing twice (submitted.tsv), finishes the rest and writes all
  3 records once.
The cluster is taken down by PID at the end. Skipped (exit 77) when not running as root, since
the daemons need it.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "oracle"))
from lsoracle import BIN, KJV, MODEL, REPO, check, done, fail, need_file, run, tmpdir  # noqa: E402

HERE = Path(__file__).resolve().parent
SBATCH = REPO / "deploy" / "slurm" / "longseq.sbatch"
ASK = "Summarize the text above in a few sentences."


def squeue_state(job):
    p = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%T"], capture_output=True, text=True)
    return p.stdout.strip()


def wait_gone(job, timeout=900):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not squeue_state(job):
            return
        time.sleep(1)
    subprocess.run(["scancel", str(job)])
    fail(f"slurm job {job} did not finish in {timeout} s")


def sbatch(work, docs, out, extra=()):
    env = dict(os.environ, LONGSEQ_BIN=str(BIN), LONGSEQ_OUT=str(out), LONGSEQ_STATE=str(work / "state"),
               LONGSEQ_JOB_ARGS="--max-tokens 16")
    p = subprocess.run(["sbatch", "--parsable", "-n", "2", *extra, str(SBATCH), str(docs)], cwd=work, env=env,
                       capture_output=True, text=True)
    check(p.returncode == 0, f"sbatch: {p.stderr}")
    return int(p.stdout.strip().split(";")[0])


def passages(work, k, start):
    text = need_file(KJV, "the KJV text").read_text().splitlines()
    d = work / "docs"
    d.mkdir(exist_ok=True)
    files = []
    for i in range(k):
        f = d / f"passage{start + i}.txt"
        f.write_text("\n".join(text[1000 * (start + i):1000 * (start + i) + 12]) + "\n")
        files.append(f)
    return files


def expected(f):
    p = f.with_suffix(".prompt")
    p.write_text(f.read_text() + "\n\n" + ASK)
    return json.loads(run(["generate", "--model", str(MODEL), "--prompt-file", str(p), "-n", "16", "--temp", "0",
                           "--repeat-penalty", "1.1", "--chat", "--json"]).stdout)["text"]


def records(out):
    return [json.loads(line) for line in Path(out).read_text().splitlines()]


def test_directory(work):
    files = passages(work, 3, 0)
    empty = files[0].parent / "empty.txt"
    empty.write_text("")
    out = work / "results.jsonl"
    job = sbatch(work, files[0].parent, out)
    wait_gone(job)
    log = (work / f"longseq-{job}.log").read_text()
    recs = records(out) if out.exists() else []
    check(len(recs) == 4, f"4 records ({len(recs)}); log:\n{log[-3000:]}")
    bad = [x for x in recs if x["file"] == str(empty)]
    check(len(bad) == 1 and bad[0]["status"] == "failed" and "the text is empty" in bad[0]["error"] and bad[0]["id"],
          f"the empty file's record: {bad}")
    check("(1 not done)" in log, f"the script says one document was not done:\n{log[-3000:]}")
    for f in files:
        r = [x for x in recs if x["file"] == str(f)]
        check(len(r) == 1 and r[0]["status"] == "done" and r[0]["ranks"] == 2, f"{f.name}: {r}")
        check(r[0]["summary"] == expected(f), f"{f.name}: summary {r[0]['summary']!r} as in one process")
    print(f"sbatch -n 2 on a directory: 3 records done on 2 ranks, the empty file's failed (job {job})")


def test_requeue(work):
    work = work / "requeue"
    work.mkdir()
    files = passages(work, 3, 10)
    lst = work / "list.txt"
    lst.write_text("".join(f"{f}\n" for f in files))
    out = work / "results.jsonl"
    job = sbatch(work, lst, out)
    submitted = work / "state" / "submitted.tsv"
    deadline = time.time() + 300
    while time.time() < deadline and not (submitted.exists() and len(submitted.read_text().splitlines()) == 3):
        time.sleep(0.5)
    check(submitted.exists(), "the documents were submitted")
    time.sleep(1)
    p = subprocess.run(["scontrol", "requeue", str(job)], capture_output=True, text=True)
    check(p.returncode == 0, f"scontrol requeue: {p.stderr}")
    t0 = time.time()
    while time.time() - t0 < 120 and squeue_state(job) not in ("PENDING", "REQUEUED", "CONFIGURING"):
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={job}", "BeginTime=now"], capture_output=True)
    subprocess.run(["scontrol", "release", str(job)], capture_output=True)
    wait_gone(job)
    log = (work / f"longseq-{job}.log").read_text()
    check(log.count("documents, 2 ranks") == 2, f"the job ran twice (requeued):\n{log[-3000:]}")
    check(len(submitted.read_text().splitlines()) == 3, "nothing submitted twice")
    recs = records(out)
    check(len(recs) == 3 and len({r["id"] for r in recs}) == 3 and all(r["status"] == "done" for r in recs),
          f"3 records, each once, all done: {recs}")
    print(f"requeue: ran twice, 3 records once each (job {job})")


def main():
    if os.geteuid() != 0:
        print("SKIP: the Slurm daemons (munge, slurmctld, slurmd) need root; run the suite as root")
        sys.exit(77)
    need_file(MODEL, "the default model")
    work = tmpdir()
    up = subprocess.run([str(HERE / "cluster-up")], capture_output=True, text=True)
    if up.returncode != 0:
        subprocess.run([str(HERE / "cluster-down")])
        fail(f"cluster-up: {up.stdout}{up.stderr}")
    print(up.stdout.strip())
    try:
        test_directory(work)
        test_requeue(work)
    finally:
        subprocess.run(["scancel", "-u", "root"], capture_output=True)
        subprocess.run([str(HERE / "cluster-down")])
        check(subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode != 0, "slurmctld is down")
    done("test_slurm")


if __name__ == "__main__":
    main()
