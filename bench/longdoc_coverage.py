#!/usr/bin/env python3
"""longdoc_coverage.py — the coverage of long-document summaries (issue 19; the figures are in
docs/results.md). Documents are whole KJV books, one after another with no headings, from
Debian's bible-kjv (as deploy/extract-kjv.sh reads it); a summary covers a book when it names the
book or one of its principal persons or places (BOOKS below, whole words, any case).

  longdoc_coverage.py build OUT.txt BOOK...     write the books as one document
  longdoc_coverage.py judge RECORDS.jsonl BOOK...   per record: strategy, tokens, time, books covered
"""
import json
import re
import subprocess
import sys

# book -> (bible-kjv abbreviation, the names that show a summary covers it)
BOOKS = {
    "Genesis": ("gen", ["Genesis", "Adam", "Eve", "Noah", "Abraham", "Abram", "Isaac", "Jacob", "Joseph", "Esau"]),
    "Ruth": ("ruth", ["Ruth", "Naomi", "Boaz"]),
    "Esther": ("esth", ["Esther", "Mordecai", "Haman", "Ahasuerus"]),
    "Jonah": ("jonah", ["Jonah", "Nineveh", "whale"]),
    "Daniel": ("dan", ["Daniel", "Nebuchadnezzar", "Belshazzar", "Darius", "Shadrach", "Meshach", "Abednego"]),
    "Joel": ("joel", ["Joel", "locust", "locusts", "palmerworm"]),
    "Obadiah": ("obad", ["Obadiah", "Edom"]),  # (not Esau: a principal person of Genesis too)
    "Mark": ("mark", ["Mark", "Jesus", "John the Baptist", "Peter", "Pilate"]),
}


def book_text(book: str) -> str:
    abbr = BOOKS[book][0]
    out = subprocess.run(["bible", "-l0", f"{abbr}1:1-150:200"], capture_output=True, text=True, check=True).stdout
    lines = [re.sub(r"^ +[0-9]+ ", "", ln) for ln in out.splitlines()
             if ln and not re.fullmatch(r"[1-3]? ?[A-Z][A-Za-z ]+ [0-9]+", ln)]
    return "\n".join(lines) + "\n"


def covered(summary: str, books) -> list:
    """The books a summary names or describes through their principal persons."""
    found = []
    for b in books:
        names = BOOKS[b][1]
        if any(re.search(r"\b" + re.escape(n) + r"\b", summary, re.IGNORECASE) for n in names):
            found.append(b)
    return found


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("build", "judge"):
        sys.exit(__doc__)
    books = sys.argv[3:]
    for b in books:
        if b not in BOOKS:
            sys.exit(f"unknown book {b}; known: {', '.join(BOOKS)}")
    if sys.argv[1] == "build":
        with open(sys.argv[2], "w") as f:
            for b in books:
                f.write(book_text(b))
        return
    for line in open(sys.argv[2]):
        r = json.loads(line)
        c = covered(r.get("summary", ""), books)
        print(f"| {r.get('strategy')} | {r['tokens']} | {r.get('chunks')} | {r.get('levels')} | {r.get('wall_s', 0):.0f} s "
              f"| {len(c)}/{len(books)} ({', '.join(c) or 'none'}) | {r['status']} |")


if __name__ == "__main__":
    main()
