#!/bin/sh
# Exact user-space instructions per request of two llmux binaries, under callgrind: each serves
# 1,000 and then 3,000 requests (one connection, closed loop, 1 KB body) from mockllm, and
# (Ir at 3,000 - Ir at 1,000) / 2,000 removes start-up and shutdown. Deterministic where the
# machine's timings are not (this VM has no hardware counters for perf stat).
#
#   sh bench/callgrind-ab.sh OLD_LLMUX NEW_LLMUX [--stream] [--tls] [--key]
#
# --key: a gateway key with an rpm limit far above the run (authenticated and admitted each
# request, never refused).
# --tls: the upstream is an HTTPS mockllm (test CA from test/gen-certs.sh); the pool keeps the
# connection, so this is the per-request cost of TLS records. Handshakes (whose number varies:
# valgrind is slow enough for a first attempt to time out) are left out: the instructions spent
# inside mbedtls_ssl_handshake are subtracted.
#
# Needs valgrind; build/ must hold mockllm and llmux-bench (make build). Uses ports 9311-9312
# (CG_PORT=N: N and N+1).
set -eu
OLD=$1
NEW=$2
shift 2
STREAM=""
TLS=""
KEYS=""
HDR=""
for opt in "$@"; do
    case $opt in
    --stream) STREAM=-s ;;
    --tls) TLS=1 ;;
    --key) KEYS=',"keys":[{"name":"cg","key":"sk-cg","rpm":50000000}]' HDR="Authorization: Bearer sk-cg" ;;
    *) echo "unknown option $opt"; exit 2 ;;
    esac
done
MP=${CG_PORT:-9311}
LP=$((MP + 1))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
UPSTREAM="\"base_url\":\"http://127.0.0.1:$MP/v1\""
MOCK_TLS=""
if [ -n "$TLS" ]; then
    sh "$ROOT/test/gen-certs.sh" "$TMP/certs" >/dev/null
    MOCK_TLS="--tls-cert $TMP/certs/localhost.pem --tls-key $TMP/certs/localhost.key"
    UPSTREAM="\"base_url\":\"https://localhost:$MP/v1\",\"ca_file\":\"$TMP/certs/ca.pem\""
fi
# shellcheck disable=SC2086
"$ROOT/build/test/mockllm" --listen 127.0.0.1:$MP --quiet $MOCK_TLS --script 'tokens=16' >/dev/null &
MOCK=$!
trap 'kill $MOCK 2>/dev/null; [ -n "${CG_KEEP:-}" ] && cp "$TMP"/cg.* "$CG_KEEP"/; rm -rf "$TMP"' EXIT
cat >"$TMP/llmux.json" <<J
{"listen":"127.0.0.1:$LP","access_log":"/dev/null","timeouts_ms":{"connect":60000},
 "providers":{"m":{"kind":"openai",$UPSTREAM}},
 "models":{"bench":{"deployments":[{"provider":"m","model":"x"}]}}$KEYS}
J
for who in old new; do
    [ $who = old ] && BIN=$OLD || BIN=$NEW
    for n in 1000 3000; do
        valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.$who.$n" "$BIN" -c "$TMP/llmux.json" \
            >/dev/null 2>"$TMP/cg.$who.$n.log" &
        VP=$!
        i=0
        until curl -s -o /dev/null http://127.0.0.1:$LP/healthz; do
            i=$((i + 1)); [ $i -gt 200 ] && { echo "llmux did not start"; exit 1; }; sleep 0.1
        done
        "$ROOT/build/bench/llmux-bench" -c 1 $STREAM -n $n -q ${HDR:+-H "$HDR"} \
            http://127.0.0.1:$LP/v1/chat/completions >/dev/null
        kill -INT $VP
        wait $VP || true
        ir=$(grep -o "summary: [0-9]*" "$TMP/cg.$who.$n" | cut -d' ' -f2)
        if [ -n "$TLS" ]; then
            hs=$(callgrind_annotate --inclusive=yes "$TMP/cg.$who.$n" 2>/dev/null |
                awk '/:mbedtls_ssl_handshake /{gsub(",", "", $1); print $1; exit}')
            ir=$((ir - ${hs:-0}))
        fi
        echo "$ir" >"$TMP/ir.$who.$n"
    done
    echo "$who ($BIN): $((($(cat "$TMP/ir.$who.3000") - $(cat "$TMP/ir.$who.1000")) / 2000)) instructions per request"
done
