"""summarize's strategies for long documents (issue 19), on a tiny random model with a
1,024-token context (fast; the summaries are noise, the mechanics are what is checked). The
coordinator runs them (settings.strategy; its protocol side: test_strategy.py); summarize
submits one job per document and writes their records:

- map-reduce: a batch of three documents (one short, two longer than the context, one of them a
  single giant "sentence" without whitespace) gets a record for every document, in order, with
  strategy, chunks and levels; the long ones are cut into several chunks (one job each, named
  "part i of n" in their request) and combined over one level or more until one call covers them;
  the short one runs direct;
- --combine-parts 2 combines the summaries in pairs: chunks - 1 combine calls over
  ceil(log2(chunks)) levels;
- the progress lines name the stage (chunk i/n, combine level L) with the share done, tok/s and
  an ETA;
- --strategy auto picks, per document and with the records in file order, from the measured table (LONGSEQ_EFFECTIVE_CONTEXT): direct when the
  document fits the trained context, extend (the table's method, with a factor for the length)
  when the table says an extension retrieves reliably that far, map-reduce otherwise, with the
  table's reliable length as the chunk size (the record's chunk_tokens);
- bad --strategy and --chunk-tokens values are usage errors;
- the coverage judge of bench/longdoc_coverage.py (results.md's coverage table) counts a book
  when a summary names it or its principal persons, as whole words.
"""
import json
import os
import re
import subprocess
import sys

from fixtures import write_tiny_llama
from lsoracle import BIN, check, done, prose, REPO, tmpdir

WORK = tmpdir()
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
ENV.pop("LONGSEQ_EFFECTIVE_CONTEXT", None)


def summarize(model, files, *extra, env=ENV):
    out = WORK / "out.jsonl"
    p = subprocess.run([str(BIN), "summarize", "--model", str(model), "--threads", "1", "--max-tokens", "8",
                        "--out", str(out), *extra, *map(str, files)], env=env, capture_output=True, text=True,
                       timeout=600)
    recs = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return p, recs


def test_map_reduce(tiny):
    short = WORK / "short.txt"
    short.write_text("Ruth gleaned in the field of Boaz.\n")
    long1 = WORK / "long1.txt"
    long1.write_text(prose(150, 1))
    giant = WORK / "giant.txt"
    giant.write_text("x" * 4000)  # one giant "sentence", no whitespace at all
    p, recs = summarize(tiny, [short, long1, giant], "--strategy", "map-reduce", "--chunk-tokens", "600",
                        "--progress", "0.1")
    check(p.returncode == 0, f"summarize --strategy map-reduce: exit {p.returncode}: {p.stderr[-3000:]}")
    check([r["file"] for r in recs] == [str(short), str(long1), str(giant)],
          f"a record for every document of the batch, in order: {[r['file'] for r in recs]}")
    check(all(r["status"] == "done" and r["strategy"] == "map-reduce" for r in recs) and
          all({"chunks", "levels", "calls", "wall_s"} <= set(r) for r in recs), f"records: {recs}")
    s, l1, g = recs
    check(s["chunks"] == 1 and s["levels"] == 0 and s["calls"] == 1, f"a short document is one call: {s}")
    for r in (l1, g):
        check(r["chunks"] >= 3 and r["levels"] >= 1 and r["calls"] >= r["chunks"] + 1,
              f"{r['file']}: several chunks combined over at least one level: {r}")
        check(len(r["parts"]) == r["chunks"] and all(isinstance(x, str) for x in r["parts"]),
              f"{r['file']}: each chunk's own summary in `parts`: {r['parts']}")
    check(re.search(r"\] chunk 2/\d+, \d+%, \d+ tok/s, ETA \d+ s", p.stderr) and
          re.search(r"\] combine level 1, 1/\d+", p.stderr),
          f"progress names the stage, with tok/s and ETA: {p.stderr[-3000:]}")
    p, recs2 = summarize(tiny, [long1], "--strategy", "map-reduce", "--chunk-tokens", "600", "--combine-parts", "2")
    r2 = recs2[0] if recs2 else {}
    check(p.returncode == 0 and r2.get("chunks") == l1["chunks"] and r2["levels"] >= (l1["chunks"] - 1).bit_length() and
          r2["calls"] == l1["chunks"] + l1["chunks"] - 1, f"--combine-parts 2: pairs, level by level: {r2} {p.stderr[-1500:]}")
    print(f"map-reduce: {l1['chunks']} chunks / {l1['levels']} level(s) for {l1['tokens']} tokens, "
          f"{g['chunks']} chunks for a text without whitespace; records for all 3 documents")


def test_auto(tiny):
    doc = WORK / "auto.txt"
    doc.write_text(prose(70, 3))  # about 2,700 tokens: past the 1,024-token context, within 4x
    short = WORK / "short-auto.txt"
    short.write_text("Ruth gleaned in the field of Boaz.\n")
    table = WORK / "table.json"

    def with_table(ext):
        table.write_text(json.dumps({"models": [{"name": "longseq tiny fixture", "trained": 1024, "reliable": 700,
                                                 "measured": "by the test", "extend": ext}]}))
        return dict(ENV, LONGSEQ_EFFECTIVE_CONTEXT=str(table))

    p, recs = summarize(tiny, [short, doc], env=with_table({"method": "linear", "factor": 4, "reliable": 4096}))
    check(p.returncode == 0 and [r["strategy"] for r in recs] == ["direct", "extend"],
          f"auto, the table's extension reaches the length: direct for the short one, extend for the long: {recs} {p.stderr[-2000:]}")
    check(recs[1]["rope"].startswith("linear x"), f"extend used the table's method: {recs[1]}")
    p, recs = summarize(tiny, [doc, short, short], env=with_table(None))
    check(p.returncode == 0 and [r["strategy"] for r in recs] == ["map-reduce", "direct", "direct"] and recs[0]["chunks"] >= 2,
          f"auto, no extension measured to work: map-reduce: {recs} {p.stderr[-2000:]}")
    check([r["file"] for r in recs] == [str(doc), str(short), str(short)], f"the records in file order: {recs}")
    check(recs[0].get("chunk_tokens") == 700, f"the chunk size is the table's reliable length: {recs[0]}")
    table.write_text(json.dumps({"models": [{"name": "longseq tiny fixture", "trained": 1024, "reliable": 900,
                                             "chunk": 600, "extend": None}]}))
    p, recs = summarize(tiny, [doc], env=dict(ENV, LONGSEQ_EFFECTIVE_CONTEXT=str(table)))
    check(p.returncode == 0 and recs and recs[0].get("chunk_tokens") == 600, f"the table's measured chunk, when it has one: {recs}")
    p, recs = summarize(tiny, [doc], env=with_table({"method": "yarn", "factor": 2, "reliable": 1500}))
    check(p.returncode == 0 and recs and recs[0]["strategy"] == "map-reduce",
          f"auto, an extension measured only to 1,500 tokens: map-reduce for a longer document: {recs}")
    print("auto: direct / extend / map-reduce as the measured table says")


def test_usage(tiny):
    p = subprocess.run([str(BIN), "summarize", "--strategy", "abridge", "x"], capture_output=True, text=True)
    check(p.returncode == 2 and "--strategy is auto, direct, extend or map-reduce" in p.stderr, p.stderr)
    p = subprocess.run([str(BIN), "summarize", "--chunk-tokens", "10", "x"], capture_output=True, text=True)
    check(p.returncode == 2 and "--chunk-tokens" in p.stderr, p.stderr)
    bad = WORK / "bad-table.json"
    bad.write_text('{"models": [{"name": "longseq tiny fixture", "trained": 1024, "reliable": 9000}]}')
    doc = WORK / "auto.txt"
    p, _ = summarize(tiny, [doc], env=dict(ENV, LONGSEQ_EFFECTIVE_CONTEXT=str(bad)))
    check(p.returncode == 1 and "reliable 9000 must be from 256 to the trained 1024" in p.stderr,
          f"a table with a reliable length past the trained context is refused: {p.stderr[-1000:]}")
    print("usage errors and a bad table refused")


def test_coverage_judge():
    sys.path.insert(0, str(REPO / "bench"))
    from longdoc_coverage import covered
    books = ["Ruth", "Esther", "Jonah", "Daniel", "Joel", "Obadiah", "Mark"]
    check(covered("Naomi returns from Moab; the king Ahasuerus makes Esther queen.", books) == ["Ruth", "Esther"],
          "persons name their books")
    check(covered("Markets and remarks; a danielle; the joeliest text.", books) == [],
          "whole words only (Mark is not in Markets)")
    check(covered("The prophet JONAH went to nineveh.", books) == ["Jonah"], "any case")
    print("coverage judge: names and persons, whole words")


def main():
    tiny = WORK / "tiny.gguf"
    write_tiny_llama(str(tiny), embd=64, heads=4, kv_heads=2, ff=128, ctx=1024, chat_template=CHATML)
    test_map_reduce(tiny)
    test_auto(tiny)
    test_usage(tiny)
    test_coverage_judge()
    done("test_longdoc")


if __name__ == "__main__":
    main()
