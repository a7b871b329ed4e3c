#!/bin/sh
# Exact instructions per translated stream event of llmux-translate-bench binaries, under
# callgrind: for each provider kind and client API, (Ir of N2 events - Ir of N1 events) /
# (N2 - N1), which removes start-up and the per-stream opens' share stays in (one per 1000).
#
#   sh bench/translate/callgrind.sh BENCH_BINARY [BENCH_BINARY...]
set -eu
N1=${N1:-2000}
N2=${N2:-12000}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
printf '%-22s' "kind -> client"
for bin in "$@"; do printf ' %12s' "$(basename "$(dirname "$(dirname "$(dirname "$bin")")")")"; done
echo
for kind in openai anthropic gemini; do
    for client in chat messages responses; do
        printf '%-22s' "$kind -> $client"
        for bin in "$@"; do
            for n in $N1 $N2; do
                valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.$n" "$bin" $n $kind $client \
                    >/dev/null 2>&1
                grep -o "summary: [0-9]*" "$TMP/cg.$n" | cut -d' ' -f2 >"$TMP/ir.$n"
            done
            printf ' %12d' $((($(cat "$TMP/ir.$N2") - $(cat "$TMP/ir.$N1")) / (N2 - N1)))
        done
        echo
    done
done
