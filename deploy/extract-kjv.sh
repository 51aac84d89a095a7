#!/usr/bin/env bash
# extract-kjv.sh OUT — writes the King James Bible (public domain) as plain text, one verse per
# line, from Debian's bible-kjv package (docs/ops.md §4): 31,102 lines, ~4.1 MB.
set -euo pipefail
out=$1
command -v bible >/dev/null || { echo "extract-kjv: the 'bible' program (Debian package bible-kjv) is not installed" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
bible -l0 'gen1:1-rev22:21' | grep -vE '^$|^[1-3]? ?[A-Z][A-Za-z ]+ [0-9]+$' | sed -E 's/^ +[0-9]+ //' > "$out.part"
lines=$(wc -l < "$out.part")
[ "$lines" -gt 30000 ] || { echo "extract-kjv: only $lines lines extracted" >&2; exit 1; }
mv "$out.part" "$out"
