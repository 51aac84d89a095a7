#!/usr/bin/env python3
"""Worker groups across hosts: a cluster of network namespaces on this machine
(tests/multihost/cluster-up: hosts h1, h2, h3 on veths to a bridge, Open MPI's TCP transport
only, processes started through tests/multihost/agent as ssh would start them):

- placement: `mpirun --host h1:2,h2:2` runs ranks 0-1 in h1 and 2-3 in h2 (each prints its
  host name and its namespace's address);
- `perplexity --np 4 --hosts h1:2,h2:2` with full and s2 attention equals the same group on one
  host (shared memory), value for value, and --stats names each rank's host;
- the job service with its coordinator in h1 and its group of 2 ranks on h2 and h3: a
  generate job completes with the one-process text;
- faults: h3's rank killed mid-job: the launcher fails naming h3 and the job completes on a
  relaunched group; h3's link set down mid-job (LS_COMM_TIMEOUT=5): the rank on h2 fails
  within the timeout naming host h3 (as the silent peer, or in a collective as the group's
  other host), the coordinator relaunches (starts fail until the link is up again) and the
  job completes;
- Slurm across the hosts (tests/multihost/slurm-up: slurmctld here, a slurmd in h1 and in h2):
  `sbatch -N 2 deploy/slurm/longseq.sbatch` summarizes 2 passages on a group of 2 ranks, one
  per host, started by srun --mpi=pmix.
Skipped (exit 77) when not root or network namespaces cannot be made. The cluster is taken
down at the end, whatever happened.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "oracle"))
from lsoracle import BIN, KJV, MODEL, check, done, fail, need_file, tmpdir, wait_for_port  # noqa: E402

HERE = Path(__file__).resolve().parent
MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")


def skip(why):
    print(f"SKIPPED: {why}")
    sys.exit(77)


def sh(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def cluster_env():
    p = sh([str(HERE / "cluster-up"), "--env"])
    check(p.returncode == 0, f"cluster-up --env: {p.stderr}")
    env = dict(MPI_ENV)
    for m in re.finditer(r"^export (\w+)=(.*)$", p.stdout, re.M):
        env[m.group(1)] = m.group(2)
    check("OMPI_MCA_plm_rsh_agent" in env, f"cluster-up --env printed no agent:\n{p.stdout}")
    return env


def ns_pids(host):
    return sh(["ip", "netns", "pids", f"lsmh-{host}"]).stdout.split()


def worker_pids(host):
    """The `longseq worker` processes in host's namespace."""
    out = []
    for p in ns_pids(host):
        try:
            argv = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"longseq") and argv[1:2] == [b"worker"]:
            out.append(p)
    return out


def placement(env):
    p = sh(["mpirun", "--host", "h1:2,h2:2", "-np", "4", "sh", "-c",
            'echo "$OMPI_COMM_WORLD_RANK $(hostname) $(ip -o -4 addr show eth0 | awk \'{print $4}\')"'],
           env=env, timeout=60)
    check(p.returncode == 0, f"mpirun across h1, h2: {p.stderr}")
    got = sorted(tuple(l.split()) for l in p.stdout.splitlines() if l.strip())
    want = [("0", "h1", "10.231.0.1/24"), ("1", "h1", "10.231.0.1/24"), ("2", "h2", "10.231.0.2/24"),
            ("3", "h2", "10.231.0.2/24")]
    check(got == want, f"ranks and their hosts: {got}, expected {want}")
    print(f"  mpirun --host h1:2,h2:2: {', '.join(f'rank {r} on {h} ({a})' for r, h, a in got)}")


def ppl(args, env, text):
    p = sh([str(BIN), "perplexity", "--np", "4", *args, "--ctx", "512", "--chunks", "1", "--json", "--stats",
            str(text)], env=env, timeout=300)
    check(p.returncode == 0, f"perplexity {' '.join(args)}: exit {p.returncode}\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def perplexity_across(env, work):
    text = work / "text.txt"
    text.write_text("".join(need_file(KJV, "the KJV text").read_text().splitlines(True)[:120]))
    for rule in ("full", "s2"):
        one, _ = ppl(["--attn", rule], MPI_ENV, text)
        two, err = ppl(["--attn", rule, "--hosts", "h1:2,h2:2"], env, text)
        hosts = re.findall(r"rank (\d) on (\S+) peak resident memory", err)
        check(hosts == [("0", "h1"), ("1", "h1"), ("2", "h2"), ("3", "h2")], f"{rule}: ranks' hosts in --stats: {hosts}")
        check(two["ppl"] == one["ppl"] and two["tokens"] == one["tokens"],
              f"{rule}: perplexity over 2 hosts {two['ppl']!r} ({two['tokens']} tokens), on one host {one['ppl']!r}")
        print(f"  perplexity --np 4 --attn {rule}: {two['ppl']:.6f} over h1:2,h2:2 = {one['ppl']:.6f} on one host")


class Service:
    """`longseq serve` in h1's namespace, its group of 2 ranks on h2 and h3."""

    def __init__(self, env, work, extra_env=None):
        self.work, self.log = work, work / "serve.log"
        self.token = work / "token"
        self.token.write_text("multihost-test-token\n")
        self.token.chmod(0o600)
        senv = dict(env, **(extra_env or {}))
        args = [str(HERE / "agent"), "h1", str(BIN), "serve", "--listen", "0.0.0.0:0", "--advertise", "h1",
                "--np", "2", "--hosts", "h2:1,h3:1", "--state", str(work / "state"), "--token-file", str(self.token),
                "--model", str(MODEL), "--threads", "1", "--attempts", "3"]
        self.f = open(self.log, "w")
        self.p = subprocess.Popen(args, stdout=self.f, stderr=self.f, env=senv, start_new_session=True)
        self.port = wait_for_port(self.p, self.log)
        check(self.port is not None, f"the coordinator printed its port:\n{self.log.read_text()}")

    def cli(self, *args, timeout=120):
        return sh([str(BIN), *args, "--server", f"h1:{self.port}", "--token-file", str(self.token)], timeout=timeout)

    def submit(self, doc, *settings):
        p = self.cli("submit", "--task", "generate", *settings, str(doc))
        check(p.returncode == 0, f"submit: {p.stderr}")
        return p.stdout.split()[0]

    def record(self, job):
        p = self.cli("result", job, "--json")
        return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None

    def state(self, job):
        """The job's line of `longseq jobs --json` (its "status", "attempts"), {} when absent."""
        p = self.cli("jobs", "--json")
        for line in p.stdout.splitlines() if p.returncode == 0 else []:
            j = json.loads(line)
            if j.get("id") == job:
                return j
        return {}

    def wait(self, job, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.state(job).get("status")
            if st in ("done", "failed", "cancelled"):
                return st
            time.sleep(0.5)
        fail(f"job {job} did not end within {timeout} s:\n{self.log.read_text()[-4000:]}")

    def wait_running(self, job, host, timeout=180):
        """Until the job is running and host's rank has worked on it for a moment."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.state(job).get("status") == "running":
                time.sleep(2)
                return
            time.sleep(0.2)
        fail(f"job {job} did not start within {timeout} s:\n{self.log.read_text()[-4000:]}")

    def stop(self):
        os.killpg(self.p.pid, 15)  # the agent's shell and the server in it
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, 9)
            self.p.wait()
        self.f.close()


def one_process_text(doc, n):
    p = sh([str(BIN), "generate", "--model", str(MODEL), "--prompt-file", str(doc), "-n", str(n), "--temp", "0", "--json"], timeout=300)
    check(p.returncode == 0, f"one-process generate: {p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])["text"]


def service(env, work):
    doc = work / "short.txt"
    doc.write_text("In the beginning God created the heaven and the earth.")
    long_doc = work / "long.txt"
    long_doc.write_text("".join(need_file(KJV, "the KJV text").read_text().splitlines(True)[:100]))
    srv = Service(env, work, {"LS_COMM_TIMEOUT": "5"})
    try:
        job = srv.submit(doc, "--max-tokens", "8")
        check(srv.wait(job, 240) == "done", f"job {job} across h2, h3:\n{srv.log.read_text()[-4000:]}")
        rec = srv.record(job)
        want = one_process_text(doc, 8)
        check(rec and rec.get("text") == want, f"job {job}: text {rec and rec.get('text')!r}, one process {want!r}")
        ranks = {h: worker_pids(h) for h in ("h2", "h3")}
        check(all(ranks.values()), f"the group's ranks in h2 and h3: {ranks}")
        print(f"  coordinator in h1, group on h2 and h3: job {job} done, text = one process's ({want!r})")

        # h3's rank killed mid-job: Open MPI's launcher names the host and exits, the job reruns
        job = srv.submit(long_doc, "--max-tokens", "4")
        srv.wait_running(job, "h3")
        t0, mark = time.time(), len(srv.log.read_text())
        subprocess.run(["kill", "-9", *worker_pids("h3")])
        check(srv.wait(job, 300) == "done", f"job {job} after h3's rank was killed:\n{srv.log.read_text()[-4000:]}")
        log = srv.log.read_text()[mark:]
        check(re.search(r"on node h3\b", log) is not None,
              f"the coordinator's log does not name h3 after its rank was killed:\n{log[-4000:]}")
        att = srv.state(job).get("attempts")
        check(att == 2, f"job {job}: {att} attempts after h3's rank was killed, expected 2")
        print(f"  h3's rank killed mid-job (kill -9): relaunched, job {job} done on attempt {att} ({time.time() - t0:.0f} s)")

        # h3's link down mid-job: the ranks give up after LS_COMM_TIMEOUT naming h3, the job reruns
        job = srv.submit(long_doc, "--max-tokens", "4")
        srv.wait_running(job, "h3")
        mark = len(srv.log.read_text())
        subprocess.run([str(HERE / "link"), "down", "h3"], check=True, capture_output=True)
        t0 = time.time()
        line = None
        while time.time() - t0 < 60 and line is None:
            line = next((l for l in srv.log.read_text()[mark:].splitlines()
                         if re.search(r"no answer from rank \d \(host h3\)|the other hosts: h3\b", l)), None)
            time.sleep(0.2)
        took = time.time() - t0
        subprocess.run([str(HERE / "link"), "up", "h3"], check=True, capture_output=True)
        check(line is not None, f"h3's link down: no rank named host h3 within 60 s:\n{srv.log.read_text()[mark:][-4000:]}")
        check(srv.wait(job, 300) == "done", f"job {job} after h3's link was down:\n{srv.log.read_text()[-4000:]}")
        att = srv.state(job).get("attempts")
        check(att is not None and att >= 2, f"job {job}: {att} attempts after h3's link was down")
        print(f"  h3's link down mid-job: after {took:.0f} s \"{line.strip()}\"; job {job} done on attempt {att}")
    finally:
        srv.stop()


def slurm(env, work):
    """deploy/slurm/longseq.sbatch with `sbatch -N 2`: one slurmd per namespaced host."""
    up = sh([str(HERE / "slurm-up"), "2"], timeout=300)
    check(up.returncode == 0, f"slurm-up 2: exit {up.returncode}\n{up.stderr[-3000:]}")
    try:
        senv = {k: v for k, v in env.items() if k != "OMPI_MCA_plm_rsh_agent"}  # srun starts the ranks
        senv.update(SLURM_CONF="/run/lsmh-slurm/slurm.conf", LONGSEQ_BIN=str(BIN), LONGSEQ_OUT=str(work / "slurm.jsonl"),
                    LONGSEQ_STATE=str(work / "slurm-state"), LONGSEQ_JOB_ARGS="--max-tokens 8",
                    LONGSEQ_ENGINE_ARGS="--threads 1", LONGSEQ_MODEL=str(MODEL))
        docs = work / "slurm-docs"
        docs.mkdir()
        lines = need_file(KJV, "the KJV text").read_text().splitlines(True)
        for i in range(2):
            (docs / f"passage{i}.txt").write_text("".join(lines[40 * i:40 * i + 8]))
        p = sh(["sbatch", "--parsable", "-N", "2", "-n", "2", "-o", str(work / "slurm-%j.out"),
                str(HERE.parents[1] / "deploy" / "slurm" / "longseq.sbatch"), str(docs)], env=senv, cwd=work)
        check(p.returncode == 0, f"sbatch -N 2: {p.stderr}")
        job = p.stdout.strip().split(";")[0]
        deadline = time.time() + 300
        while time.time() < deadline and sh(["squeue", "-h", "-j", job], env=senv).stdout.strip():
            time.sleep(1)
        log = (work / f"slurm-{job}.out").read_text()
        check("2 ranks on h[1-2]" in log, f"the sbatch job did not run on h1 and h2:\n{log[-3000:]}")
        recs = [json.loads(l) for l in (work / "slurm.jsonl").read_text().splitlines()] if (work / "slurm.jsonl").exists() else []
        check(len(recs) == 2 and all(r["status"] == "done" and r["ranks"] == 2 for r in recs),
              f"sbatch -N 2: records {recs}\n{log[-3000:]}")
        print(f"  sbatch -N 2 deploy/slurm/longseq.sbatch: slurmd on h1 and h2, {len(recs)} documents done on 2 ranks")
    finally:
        sh([str(HERE / "slurm-down")])


def main():
    if os.geteuid() != 0:
        skip("network namespaces need root")
    if sh(["ip", "netns", "add", "lsmh-probe"]).returncode != 0:
        skip("this machine does not allow network namespaces (ip netns add failed)")
    sh(["ip", "netns", "del", "lsmh-probe"])
    need_file(MODEL, "the default model")
    work = tmpdir()
    up = sh([str(HERE / "cluster-up"), "3"])
    try:
        check(up.returncode == 0, f"cluster-up 3: exit {up.returncode}\n{up.stderr}")
        env = cluster_env()
        placement(env)
        perplexity_across(env, work)
        service(env, work)
        slurm(env, work)
    finally:
        sh([str(HERE / "cluster-down")])
    done("multihost")


if __name__ == "__main__":
    main()
