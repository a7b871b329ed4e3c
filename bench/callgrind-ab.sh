#!/bin/sh
# Exact user-space instructions per request of two llmux binaries, under callgrind: each serves
# 1,000 and then 3,000 requests (one connection, closed loop, 1 KB body) from mockllm, and
# (Ir at 3,000 - Ir at 1,000) / 2,000 removes start-up and shutdown. Deterministic where the
# machine's timings are not (this VM has no hardware counters for perf stat).
#
#   sh bench/callgrind-ab.sh OLD_LLMUX NEW_LLMUX [--stream]
#
# Needs valgrind; build/ must hold mockllm and llmux-bench (make build). Uses ports 9311-9312.
set -eu
OLD=$1
NEW=$2
MODE=${3:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
"$ROOT/build/test/mockllm" --listen 127.0.0.1:9311 --quiet --script 'tokens=16' >/dev/null &
MOCK=$!
trap 'kill $MOCK 2>/dev/null; rm -rf "$TMP"' EXIT
cat >"$TMP/llmux.json" <<J
{"listen":"127.0.0.1:9312","access_log":"/dev/null",
 "providers":{"m":{"kind":"openai","base_url":"http://127.0.0.1:9311/v1"}},
 "models":{"bench":{"deployments":[{"provider":"m","model":"x"}]}}}
J
STREAM=""
[ "$MODE" = --stream ] && STREAM=-s
for who in old new; do
    [ $who = old ] && BIN=$OLD || BIN=$NEW
    for n in 1000 3000; do
        valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.$who.$n" "$BIN" -c "$TMP/llmux.json" \
            >/dev/null 2>"$TMP/cg.$who.$n.log" &
        VP=$!
        i=0
        until curl -s -o /dev/null http://127.0.0.1:9312/healthz; do
            i=$((i + 1)); [ $i -gt 200 ] && { echo "llmux did not start"; exit 1; }; sleep 0.1
        done
        "$ROOT/build/bench/llmux-bench" -c 1 $STREAM -n $n -q http://127.0.0.1:9312/v1/chat/completions >/dev/null
        kill -INT $VP
        wait $VP || true
        grep -o "summary: [0-9]*" "$TMP/cg.$who.$n" | cut -d' ' -f2 >"$TMP/ir.$who.$n"
    done
    echo "$who ($BIN): $((($(cat "$TMP/ir.$who.3000") - $(cat "$TMP/ir.$who.1000")) / 2000)) instructions per request"
done
