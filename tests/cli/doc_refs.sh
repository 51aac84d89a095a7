#!/usr/bin/env bash
# doc_refs.sh — the repository explains itself. Checks every tracked file:
#   1. no citation of the team's notes outside the repository (the shared folder beside a clone, its spec/
#      and design pages): what the code relies on is explained in docs/;
#   2. every document cited exists: docs/X.md, or a bare X.md that is in docs/ or beside the
#      citing file, with each section it names: "§N" / "§N.M" (a heading numbered so) or
#      ("Heading") (a heading that starts with those words);
#   3. every source file cited by path (tests/oracle/test_hf.py, model/rope.c, ...) exists.
# docs/results.md is a dated log: only its docs/ links are checked. Prints every finding and
# exits 1 if there is one. Usage: doc_refs.sh [REPO_ROOT]   (default: this script's repository)
set -uo pipefail
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$root" || exit 2
self=tests/cli/doc_refs.sh

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files)
else # a copy without git: everything but build trees
    mapfile -t files < <(find . -type f -not -path './.git/*' -not -path './build*' | sed 's|^\./||' | sort)
fi

findings=0
say() {
    echo "$1"
    findings=$((findings + 1))
}

# 1. Citations of material outside the repository.
outside='\.\./shared|shared/(spec|design)|\bspec/[a-z_]+\.(md|py)|\bdesign\.md|rope_vectors\.py|\bspec §'
for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    case "$f" in "$self" | docs/results.md) continue ;; esac
    while IFS= read -r hit; do
        say "$f:$hit  <- cites notes outside the repository; cite docs/ instead"
    done < <(grep -InE "$outside" "$f" 2>/dev/null | cut -c1-160)
done

# 2. Every cited document, and every section it names, exists.
# has_section DOC SECTION: SECTION is "N" / "N.M" or a quoted heading start.
has_section() {
    local doc=$1 sec=$2
    if [[ $sec =~ ^[0-9]+(\.[0-9]+)*$ ]]; then
        grep -qE "^#+ ${sec//./\\.}\.?( |$)" "$doc"
    else
        awk -v h="$sec" '/^#+ / { sub(/^#+ /, ""); if (index($0, h) == 1) found = 1 } END { exit !found }' "$doc"
    fi
}

ref='([A-Za-z0-9_./-]*/)?[A-Za-z0-9_-]+\.md( ?\("[^"]+"\)| §[0-9]+(\.[0-9]+)*((,| and) §[0-9]+(\.[0-9]+)*)*)?'
for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    [ "$f" = "$self" ] && continue
    dir=$(dirname "$f")
    while IFS=: read -r line cite; do
        path=${cite%%[ (]*}
        case "$path" in */shared/* | http* | *//*) continue ;; esac # part 1's, or a URL
        [ "$f" = docs/results.md ] && [[ $path != docs/* ]] && continue
        doc=
        for cand in "$path" "docs/$path" "$dir/$path"; do
            [ -f "$cand" ] && { doc=$cand; break; }
        done
        if [ -z "$doc" ]; then
            case "$path" in
            */*) say "$f:$line: cites $path, which does not exist" ;;
            *) [[ $path =~ ^[a-z] ]] && say "$f:$line: cites $path, which is neither in docs/ nor beside $f" ;;
            esac
            continue
        fi
        rest=${cite#"$path"}
        if [[ $rest =~ \(\"([^\"]+)\"\) ]]; then
            sec=${BASH_REMATCH[1]}
            has_section "$doc" "$sec" || say "$f:$line: $doc has no heading \"$sec\""
        fi
        while [[ $rest =~ §([0-9]+(\.[0-9]+)*) ]]; do
            sec=${BASH_REMATCH[1]}
            rest=${rest#*"§$sec"}
            has_section "$doc" "$sec" || say "$f:$line: $doc has no section §$sec"
        done
    done < <(grep -IonE "$ref" "$f" 2>/dev/null)
done

# 3. Source files cited by path, from the repository root or from the citing file's folder.
src='(?<![\w./$-])(base|bench|cli|coordinator|deploy|kernels|model|proto|tests|tools|worker)/[\w./-]+\.(c|h|cu|py|sh|proto|json)\b'
for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    case "$f" in "$self" | docs/results.md) continue ;; esac
    dir=$(dirname "$f")
    while IFS=: read -r line path; do
        [ -e "$path" ] || [ -e "$dir/$path" ] || say "$f:$line: cites $path, which does not exist"
    done < <(grep -IonP "$src" "$f" 2>/dev/null)
done

if [ $findings -gt 0 ]; then
    echo "doc_refs: $findings finding(s) in ${#files[@]} files"
    exit 1
fi
echo "doc_refs: ${#files[@]} files, every citation resolves inside the repository"
