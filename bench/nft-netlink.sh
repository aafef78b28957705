#!/usr/bin/env bash
# bench/nft-netlink.sh: meshcap's netlink nft apply vs bare `nft -f` (method in
# bench/nft-netlink.py and docs/performance.md). Needs root, iproute2, nsenter, nft, GNU time,
# python3. Only the throw-away namespace mcbench-nl is touched. ROUNDS (default 30) and
# SETTLE_MS tune the run; the report is printed and written to bench/results-nft-netlink.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin meshcap
exec python3 bench/nft-netlink.py "$@"
