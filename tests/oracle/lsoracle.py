"""Shared helpers for the Python oracle tests: where things are, running the longseq binary,
and a small assertion/reporting layer so every test prints what it compared.

Paths come from the environment that tests/run (through ctest) sets:
  LONGSEQ_BIN    the longseq binary          LONGSEQ_HOME  cache (models, data)
  LONGSEQ_MODEL  the default model (optional; else $LONGSEQ_HOME/models/...)
  LS_BUILD_DIR   the build directory (test helper programs live there)
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOME = Path(os.environ.get("LONGSEQ_HOME", Path.home() / ".cache" / "longseq"))
BUILD = Path(os.environ.get("LS_BUILD_DIR", REPO / "build"))
BIN = Path(os.environ.get("LONGSEQ_BIN", BUILD / "longseq"))
MODEL = Path(os.environ.get("LONGSEQ_MODEL", HOME / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
KJV = HOME / "data" / "kjv.txt"
CORPUS = REPO / "tests" / "corpus"


def need_file(path: Path, what: str) -> Path:
    """Fails (never skips) when a file the test needs is missing, saying how to get it."""
    if not path.exists():
        fail(f"{what} not found at {path}; run deploy/setup.sh (tests/run does) to fetch it")
    return path


def run(args: list[str], *, input: bytes | None = None, check: bool = True,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs the longseq binary (args without the program name) and returns the result."""
    p = subprocess.run([str(BIN), *args], input=input, capture_output=True, env=env)
    if check and p.returncode != 0:
        fail(f"longseq {' '.join(args)} exited {p.returncode}:\n{p.stderr.decode(errors='replace')}")
    return p


def tmpdir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="lsoracle-"))
    return d


_checks = 0


def check(cond: bool, msg: str) -> None:
    global _checks
    _checks += 1
    if not cond:
        fail(msg)


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def done(name: str) -> None:
    print(f"{name}: {_checks} checks passed")


# Sentences of a few Book-of-Ruth words with a paragraph break every six: a document whose
# chunk boundaries (paragraphs, sentence ends) the long-document tests can predict.
def prose(n_sentences, seed):
    words = ["Naomi", "went", "unto", "Moab", "and", "Boaz", "said", "the", "field", "of", "barley", "in", "Bethlehem"]
    out = []
    for i in range(n_sentences):
        out.append(" ".join(words[(seed + i * 7 + k) % len(words)] for k in range(6 + i % 5)).capitalize() + ".")
        if i % 6 == 5:
            out.append("\n\n")
    return " ".join(out)


def wait_for_port(p: subprocess.Popen, log: Path, timeout: float = 60) -> int | None:
    """The port a starting `longseq serve` prints in its log ("(port N)"), or None after timeout
    seconds; a server that exits first fails the test with its log."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = re.search(r"\(port (\d+)\)", log.read_text())
        if m:
            return int(m.group(1))
        if p.poll() is not None:
            fail(f"longseq serve exited {p.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    return None
