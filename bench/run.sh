#!/usr/bin/env bash
# bench/run.sh [apply] [render] [connections] [memory] [nftread]: meshcap's benchmark.
#
# Builds the release binary and the connbench example, then runs bench/run.py (method in its
# docstring and in docs/performance.md). Needs root, iproute2, nsenter, iptables-nft,
# nft, GNU time, python3; valgrind for instruction counts. Only throw-away namespaces named
# mcbench-* are touched. ROUNDS (default 30), CONN_REPEATS (5) and CONN_COUNT (1000) tune the
# run; the report is printed and written to bench/results.md (BENCH_OUT to change that).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin meshcap --example connbench
# The static binary the image ships (skip with STATIC=0).
if [ "${STATIC:-1}" != 0 ]; then
    scripts/build-static.sh >/dev/null
fi
exec python3 bench/run.py "$@"
