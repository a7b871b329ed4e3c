#!/bin/sh
# CPU per request of two llmux binaries, measured interleaved (the binaries alternate round by
# round, so a machine that gets busier or quieter moves both): llmux pinned to core 1, mockllm
# and the load client to core 0, 8 keep-alive connections in a closed loop, 1 s of warm-up and
# 4 s measured per round (llmux-bench -p samples the llmux process's CPU time). Prints each
# round and the medians.
#
#   sh bench/ab-cpu.sh OLD_LLMUX NEW_LLMUX [ROUNDS] [-s]
#
# -s: 16-event streams (no pacing) instead of 1 KB non-stream requests. Needs build/ to hold
# mockllm and llmux-bench (make build). Uses ports 9511-9512 (AB_PORT=N: N and N+1).
set -eu
OLD=$1
NEW=$2
ROUNDS=${3:-7}
MODE=${4:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MP=${AB_PORT:-9511}
LP=$((MP + 1))
TMP=$(mktemp -d)
taskset -c 0 "$ROOT/build/test/mockllm" --listen 127.0.0.1:$MP --quiet --script 'tokens=16' \
    >/dev/null 2>&1 &
MOCK=$!
trap 'kill $MOCK 2>/dev/null; rm -rf "$TMP"' EXIT
cat >"$TMP/llmux.json" <<J
{"listen":"127.0.0.1:$LP","access_log":"/dev/null",
 "providers":{"m":{"kind":"openai","base_url":"http://127.0.0.1:$MP/v1"}},
 "models":{"bench":{"deployments":[{"provider":"m","model":"x"}]}}}
J
for r in $(seq "$ROUNDS"); do
    for who in old new; do
        [ $who = old ] && BIN=$OLD || BIN=$NEW
        taskset -c 1 "$BIN" -c "$TMP/llmux.json" >/dev/null 2>&1 &
        L=$!
        i=0
        until curl -s -o /dev/null http://127.0.0.1:$LP/healthz; do
            i=$((i + 1)); [ $i -gt 200 ] && { echo "llmux did not start"; exit 1; }; sleep 0.05
        done
        # shellcheck disable=SC2086
        taskset -c 0 "$ROOT/build/bench/llmux-bench" -c 8 $MODE -w 1 -d 4 -p $L -j - -q \
            http://127.0.0.1:$LP/v1/chat/completions >"$TMP/r.json" 2>/dev/null
        kill $L
        wait $L 2>/dev/null || true
        cpu=$(node -e "console.log(require('$TMP/r.json').process.cpu_us_per_req)")
        echo "round $r $who $cpu" | tee -a "$TMP/all"
    done
done
for who in old new; do
    awk -v w=$who '$3 == w {print $4}' "$TMP/all" | sort -n |
        awk -v w=$who '{x[NR] = $1} END {print w ": median " x[int((NR + 1) / 2)] " µs CPU per request over " NR " rounds"}'
done
