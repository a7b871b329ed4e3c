#!/bin/sh
# Runs one libFuzzer target over its committed seeds and regression inputs.
#   run.sh BINARY NAME SECONDS OUTDIR [libFuzzer options...]
# New inputs go to OUTDIR/NAME/new and crash artifacts to OUTDIR/NAME/crashes/; the committed
# corpus (test/fuzz/corpus/NAME) and regressions (test/fuzz/regressions/NAME) are only read:
# libFuzzer writes to the first corpus directory it is given, which is OUTDIR/NAME/new.
# Used by ctest (a smoke of a few seconds) and by `make fuzz` (long runs).
set -eu
bin=$1
name=$2
secs=$3
out=$4
shift 4
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/$name/new" "$out/$name/crashes"
set -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/$name/crashes/" "$@"
[ -f "$here/$name.dict" ] && set -- "$@" -dict="$here/$name.dict"
set -- "$@" "$out/$name/new"
[ -d "$here/corpus/$name" ] && set -- "$@" "$here/corpus/$name"
[ -d "$here/regressions/$name" ] && set -- "$@" "$here/regressions/$name"
exec "$bin" "$@"
