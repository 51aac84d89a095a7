#!/usr/bin/env bash
# errors.sh — the binary's behaviour on bad input: each case must exit with the right status
# and print an error that names the problem, never crash. Uses $LONGSEQ_BIN.
set -uo pipefail
bin=${LONGSEQ_BIN:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0 n=0

# expect STATUS NEEDLE -- ARGS...   (stdin from $input if set; the output must not contain
# $unwanted if set)
expect() {
    local want=$1 needle=$2; shift 3
    local out rc
    out=$("$bin" "$@" 2>&1 < "${input:-/dev/null}"); rc=$?
    n=$((n + 1))
    if [ "$rc" != "$want" ] || ! grep -qF -- "$needle" <<<"$out" || { [ -n "${unwanted:-}" ] && grep -qF -- "$unwanted" <<<"$out"; }; then
        echo "FAIL: longseq $* -> status $rc (want $want${unwanted:+, without \"$unwanted\"}), output: $out"
        fails=$((fails + 1))
    fi
}

printf 'GGUF\x03\x00\x00\x00' > "$work/trunc.gguf"
head -c 1000 /dev/urandom > "$work/random.gguf"
printf 'hello' > "$work/text.txt"
expect 2 "usage: longseq" -- 
expect 2 'unknown command "frobnicate"' -- frobnicate
expect 2 "unknown option" -- tokenize --bogus
expect 0 "usage: longseq inspect" -- inspect --help
expect 1 "cannot open /nonexistent.gguf" -- inspect /nonexistent.gguf
expect 1 "trunc.gguf: GGUF truncated" -- inspect "$work/trunc.gguf"
expect 1 "not a GGUF file" -- inspect "$work/random.gguf"
expect 1 "not a GGUF file" -- tokenize --model "$work/random.gguf" "$work/text.txt"
expect 1 "cannot open /nonexistent.txt" -- tokenize /nonexistent.txt
printf '12 abc 7' > "$work/ids.txt"
expect 1 'entry 1 ("abc") is not a token id' -- detokenize "$work/ids.txt"
printf '12 99999999 7' > "$work/ids.txt"
expect 1 "token id 99999999 is outside the vocabulary" -- detokenize "$work/ids.txt"
expect 1 'unknown chat template "vicuna"' -- tokenize --chat --chat-template vicuna "$work/text.txt"
input=$work/text.txt expect 0 "" -- tokenize -
kjv=${LONGSEQ_HOME:-$HOME/.cache/longseq}/data/kjv.txt
expect 2 '--attn "dense" is not one of full, s2, sink, window' -- generate --prompt x --attn dense
# The attention rule's and the other settings' limits are the job protocol's (proto/ls_settings.h):
# one-shot flags, job flags and protocol fields refuse the same values, with the range.
expect 2 "--group 1 is not an integer in [2, 16777216]" -- generate --prompt x -n 1 --attn s2 --group 1
expect 2 "--group 0 is not an integer in [2, 16777216]" -- generate --prompt x -n 1 --attn s2 --group 0
expect 2 "--group 0 is not an integer in [2, 16777216]" -- perplexity --ctx 64 --attn s2 --group 0 "$kjv"
expect 2 "--group 0 is not an integer in [2, 16777216]" -- submit --attn s2 --group 0 "$work/text.txt"
expect 2 "--group 0 is not an integer in [2, 16777216]" -- summarize --attn s2 --group 0 "$work/text.txt"
expect 2 "--rope-scale 3e+38 is not a number in (0, 1024]" -- generate --prompt x -n 1 --rope-scale 3e38
expect 2 "--rope-scale 3e+38 is not a number in (0, 1024]" -- submit --rope-scale 3e38 "$work/text.txt"
expect 2 "--rope-scale 3e+38 is not a number in (0, 1024]" -- summarize --rope-scale 3e38 "$work/text.txt"
expect 2 "--rope-scale 3e+38 is not a number in (0, 1024]" -- serve --rope-scale 3e38
expect 2 "--rope-freq-base 1e+30 is not a number in (1, 1e+12]" -- submit --rope-freq-base 1e30 "$work/text.txt"
expect 2 "--top-k 4294967295 is not an integer in [1, 16777216]" -- submit --top-k 4294967295 "$work/text.txt"
expect 2 '--strategy is auto, direct, extend or map-reduce, not "abridge"' -- submit --strategy abridge "$work/text.txt"
expect 2 "--chunk-tokens 511 is not an integer in [512, 1048576]" -- submit --strategy map-reduce --chunk-tokens 511 "$work/text.txt"
expect 2 "--temp 1000 is not a number in [0, 100]" -- generate --prompt x -n 1 --temp 1000
expect 2 "--repeat-penalty -1 is not a number in (0, 10]" -- generate --prompt x -n 1 --repeat-penalty -1
expect 2 "--sinks 4.5 is not an integer in [0, 1048576]" -- generate --prompt x -n 1 --attn sink --sinks 4.5
expect 2 "--window 0 is not an integer in [1, 16777216]" -- generate --prompt x -n 1 --attn sink --window 0
expect 1 "--sinks belongs to --attn sink, not full" -- generate --prompt x -n 1 --sinks 4
expect 1 "--group belongs to --attn s2, not window" -- perplexity --ctx 64 --attn window --group 8 "$kjv"
expect 1 "--group-ratio belongs to --attn s2, not window" -- perplexity --ctx 64 --attn window --group-ratio 0.5 "$kjv"
expect 1 "does not fit in a cache of 512 tokens" -- perplexity --ctx 512 --chunks 1 --attn sink "$kjv"
expect 1 "streaming needs the sink or window rule: full attention keeps every key" -- perplexity --stream "$kjv"
expect 2 "--chunks and --score apply to chunks, not to --stream" -- perplexity --stream --attn sink --chunks 2 "$kjv"
# RoPE settings that would give NaN are refused (and a perplexity that is not finite is an error)
expect 1 "YaRN beta_fast = 0 must be a finite positive number" -- perplexity --ctx 64 --chunks 1 --rope-scaling yarn --rope-scale 2 --yarn-beta-fast 0 --yarn-beta-slow 0 "$kjv"
expect 2 "--yarn-orig-ctx 1e+300 is not an integer in [1, 16777216]" -- perplexity --ctx 64 --chunks 1 --rope-scaling yarn --rope-scale 2 --yarn-orig-ctx 1e300 "$kjv"
expect 2 '--np expects an integer from 1 to 4096, not "0"' -- generate --prompt x --np 0
expect 2 '--np expects an integer from 1 to 4096, not "0"' -- generate --prompt x --np=0
expect 1 'cannot start the launcher "/nonexistent/mpirun"' -- generate --prompt x --np=2 --launcher=/nonexistent/mpirun
expect 2 "--launcher is empty" -- generate --prompt x --np 2 --launcher ""
expect 1 'cannot start the launcher "/nonexistent/mpirun"' -- perplexity --np 2 --launcher /nonexistent/mpirun --ctx 64 "$kjv"
# what a worker group cannot do is refused before anything is launched (the launcher here
# does not exist, so a refusal that came from the group would read "cannot start the launcher")
expect 2 "--stream runs in one process, not a worker group: drop --np" -- perplexity --np 2 --launcher /nonexistent/mpirun --stream --attn sink "$kjv"
expect 2 "--nll-out is written by one process, not a worker group: drop --np" -- perplexity --np 2 --launcher /nonexistent/mpirun --ctx 64 --nll-out "$work/nll" "$kjv"
expect 2 "--ctx N is required (or --stream)" -- perplexity --np 2 --launcher /nonexistent/mpirun "$kjv"
expect 2 "give exactly one of --prompt and --prompt-file" -- generate --np 2 --launcher /nonexistent/mpirun
expect 2 "--batch runs in one process: drop --np" -- generate --batch x.jsonl --np 2 --launcher /nonexistent/mpirun
expect 2 '--batch-tokens expects an integer from 1 to 1048576, not "0"' -- generate --batch x.jsonl --batch-tokens 0
expect 2 "unknown option" -- generate --np 2 --launcher /nonexistent/mpirun --prompt x --bogus
# where the ranks go (--hosts/--hostfile become mpirun's --host/--hostfile): refused before launching
expect 2 '--hosts: the slots of "h1:0" must be a number from 1 to 4096' -- perplexity --np 2 --launcher /nonexistent/mpirun --hosts h1:0 --ctx 64 "$kjv"
expect 2 '--hosts: empty host name in ""' -- generate --prompt x --np 2 --launcher /nonexistent/mpirun --hosts=h1:1,,h2:1
expect 2 '--hosts: "h1;x" is not NAME[:SLOTS]' -- serve --hosts 'h1;x'
expect 2 "give one of --hosts and --hostfile, not both" -- generate --prompt x --np 2 --launcher /nonexistent/mpirun --hosts h1 --hostfile "$kjv"
expect 2 "--hostfile /nonexistent/hosts: No such file or directory" -- perplexity --np 2 --launcher /nonexistent/mpirun --hostfile /nonexistent/hosts --ctx 64 "$kjv"
expect 2 "under srun, Slurm's allocation places them" -- generate --prompt x --np 2 --launcher "/usr/bin/srun --mpi=pmix" --hosts h1:2
# well-formed placement reaches the launcher (which does not exist here)
expect 1 'cannot start the launcher "/nonexistent/mpirun"' -- generate --prompt x --np 2 --launcher /nonexistent/mpirun --hosts h1:1,node-2.example:3
echo '{"bandwidth": 0, "latency": 1e-3}' > "$work/link.json"
expect 1 "--link $work/link.json: expected {\"bandwidth\": bytes/s > 0" -- plan --tokens 4K --ranks 2 --link "$work/link.json"
expect 2 '--kv-type "q4_0" is not f32, bf16 or q8_0' -- generate --prompt x --kv-type q4_0
expect 2 '--kv-type "f16" is not f32, bf16 or q8_0' -- serve --kv-type f16
# the worker command's own help (it is what mpirun/srun run; its usage errors point at it)
expect 0 "usage: longseq worker --task generate|perplexity|logits" -- worker --help
expect 0 "usage: longseq worker --task generate|perplexity|logits" -- worker -h
# the service's commands
expect 2 "give at least one FILE" -- submit
expect 2 "give exactly one job id" -- watch
expect 2 "--task is summarize, generate or perplexity" -- submit --task translate "$work/text.txt"
printf 'tok' > "$work/token"
chmod 600 "$work/token"
expect 1 "cannot connect to 127.0.0.1:1" -- jobs --server 127.0.0.1:1 --token-file "$work/token"
# user-facing errors name the problem, not the source line (unless --verbose)
unwanted="wire.c:" expect 1 "cannot connect to 127.0.0.1:1" -- jobs --server 127.0.0.1:1 --token-file "$work/token"
expect 1 "[wire.c:" -- --verbose jobs --server 127.0.0.1:1 --token-file "$work/token"
unwanted=".c:" expect 1 "cannot open /nonexistent.gguf" -- inspect /nonexistent.gguf
expect 1 "the token file" -- result j1 --token-file /nonexistent/token
expect 1 'address "nocolon" is not HOST:PORT' -- jobs --server nocolon --token-file "$work/token"
# a token file others may read, a state directory others may write: refused, with the fix
chmod 644 "$work/text.txt"
expect 1 "the token file $work/text.txt has mode 0644: group or others may read it; run chmod 600 $work/text.txt" -- jobs --server 127.0.0.1:1 --token-file "$work/text.txt"
expect 1 "has mode 0644" -- serve --listen 127.0.0.1:0 --state "$work/state" --token-file "$work/text.txt"
mkdir -m 777 "$work/open-state"
expect 1 "the state directory $work/open-state has mode 0777: group or others may write to it; run chmod 700 $work/open-state" -- serve --listen 127.0.0.1:0 --state "$work/open-state" --token-file "$work/token"
expect 2 "--max-conns" -- serve --max-conns 1 --token-file "$work/token"
# serve --chat-template: a name it does not know stops the start (summarize's: tests/oracle/test_chat.py)
expect 1 'unknown chat template "vicuna" (known: chatml|llama2|llama3|mistral|gemma|phi3)' -- serve --listen 127.0.0.1:0 --state "$work/state" --token-file "$work/token" --chat-template vicuna
expect 1 'unknown chat template "vicuna"' -- batch "$work/text.txt" --out "$work/batch-out.jsonl" --chat-template vicuna
expect 1 "--max-buffered 1048576 is less than one frame of --max-frame 67108864 bytes" -- serve --max-buffered 1048576 --state "$work/state" --token-file "$work/token"
expect 2 '--workers is launch or external, not "maybe"' -- serve --workers maybe
expect 1 "cannot listen on 192.0.2.1:7070" -- serve --listen 192.0.2.1:7070 --state "$work/state" --token-file "$work/token"
# the HTTP front end's address and limits, and the offline batch's arguments
expect 1 "--http: cannot listen on 192.0.2.1:8080" -- serve --listen 127.0.0.1:0 --http 192.0.2.1:8080 --state "$work/state" --token-file "$work/token"
expect 1 'address "nocolon" is not HOST:PORT' -- serve --listen 127.0.0.1:0 --http nocolon --state "$work/state" --token-file "$work/token"
expect 2 "--http-max-body expects an integer from 1024 to 4294967296, not \"10\"" -- serve --http-max-body 10
expect 2 "--http-timeout expects an integer from 1 to 3600, not \"0\"" -- serve --http-timeout 0
expect 2 "--out F is required" -- batch "$work/text.txt"
expect 2 "give one input file IN.jsonl" -- batch --out "$work/out.jsonl"
expect 1 "cannot read /nonexistent.jsonl" -- batch /nonexistent.jsonl --out "$work/out.jsonl"
expect 0 "usage: longseq batch" -- batch --help
expect 1 "cannot read /nonexistent.txt" -- summarize /nonexistent.txt
# summarize exits 3 when it wrote every file's record but some did not end done
expect 3 "the worker group could not be started" -- summarize --launcher /nonexistent/mpirun "$work/text.txt"
# The service's messages name settings fields (docs/protocol.md); on the command line they
# come out as the flags that set them. 60 KB of KJV are 15214 tokens: past the default
# model's 8192 (the document's job fails at submit, before any worker is needed).
head -c 60000 "$kjv" > "$work/long.txt"
unwanted=settings expect 3 "stretch RoPE over it (--rope-scaling yarn --rope-scale 1.9) or bound the attention distance (--attn sink)" -- summarize --strategy direct --launcher /nonexistent/mpirun "$work/long.txt"
unwanted=settings expect 1 '--attn "dense" is not full, s2, sink or window' -- summarize --launcher /nonexistent/mpirun --attn dense "$work/text.txt"
unwanted=settings expect 1 "--group belongs to --attn s2, not sink" -- summarize --launcher /nonexistent/mpirun --attn sink --group 8 "$work/text.txt"
# summarize's coordinator is its own: its refusals are not "the server's"
unwanted="the server says" expect 1 '--attn "dense" is not full, s2, sink or window' -- summarize --launcher /nonexistent/mpirun --attn dense "$work/text.txt"
expect 2 "--progress is from 0.1 to 86400 seconds" -- watch --progress 0 j1
expect 2 "--idle-timeout expects an integer from 1 to 86400" -- summarize --idle-timeout 0 "$work/text.txt"
# Long documents (issue 19): the strategy is named, chunks are at least 512 tokens; past the
# context, auto no longer refuses the document: it is cut into chunks (map-reduce), whose jobs
# then need the worker group
expect 2 '--strategy is auto, direct, extend or map-reduce, not "abridge"' -- summarize --strategy abridge "$work/text.txt"
expect 2 "--chunk-tokens 100 is not an integer in [512, 1048576]" -- summarize --chunk-tokens 100 "$work/text.txt"
expect 2 "--combine-parts 1 is not an integer in [2, 100000]" -- summarize --combine-parts 1 "$work/text.txt"
expect 3 "chunk 1/" -- summarize --launcher /nonexistent/mpirun "$work/long.txt"

# Every --flag that a message or help text of the sources mentions is an option of some
# command (its --help names it): a hint never points at an option that does not exist.
src=$(cd "$(dirname "$0")/../.." && pwd)
helps=$("$bin" --help; for c in $("$bin" --help | awk '/^  [a-z]/ {print $1}'); do "$bin" "$c" --help; done 2>&1)
for flag in $(cat "$src"/{cli,coordinator,worker,model,proto,base}/*.[ch] "$src"/kernels/*.[ch] "$src"/kernels/*/*.{c,h,cu} 2>/dev/null |
              sed -E 's#(^|[[:space:]])//.*##' | grep -ohE '"([^"\\]|\\.)*"' | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u); do
    n=$((n + 1))
    case $flag in --mpi) continue ;; esac # srun's own option, in the launcher examples
    if ! grep -qE -- "$flag([^a-z0-9-]|\$)" <<<"$helps"; then
        echo "FAIL: the sources mention $flag, which no command's --help names"
        fails=$((fails + 1))
    fi
done

echo "cli errors: $((n - fails)) of $n cases behaved"
[ $fails = 0 ]
