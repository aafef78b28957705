#!/usr/bin/env bash
# scripts/test.sh - everything meshcap's tests need, then every check CI runs:
#   1. installs iptables (legacy and nft variants), nftables and iproute2 with apt-get when missing;
#   2. checks that network namespaces can be created: required when CI=true; elsewhere, when they
#      cannot be, the netns tests are skipped explicitly (MESHCAP_SKIP_NETNS=1; without it they
#      fail) and the number skipped is printed at the end;
#   3. cargo fmt --check, cargo clippy and cargo doc --no-deps (warnings are errors),
#      cargo build --release,
#      cargo test --release (unit, golden, property and netns tests, and the examples the
#      traffic lab runs);
#      scripts/image.sh build and test --all-arch (the container images, run in pods);
#   4. fails if the tests changed the netfilter rules, ip rules or table-133 routes of the
#      namespace the suite runs in (every test must work in namespaces it created).
# Run it from anywhere; it works on the repository containing it. Needs root (or sudo) for
# apt-get and for the netns tests.
set -euo pipefail

cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "test.sh: need root (or sudo) to run: $*" >&2
        return 1
    fi
}

missing=()
for tool in iptables-legacy-restore iptables-nft-restore ip6tables-legacy-restore ip6tables-nft-restore; do
    command -v "$tool" >/dev/null 2>&1 || { missing+=(iptables); break; }
done
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v strace >/dev/null 2>&1 || missing+=(strace)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "test.sh: installing ${missing[*]} with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found; install a Rust toolchain (https://rustup.rs) first" >&2
    exit 1
fi

# Network namespaces: probe once with a unique name. Without them (and not under CI) every netns
# test is skipped explicitly: MESHCAP_SKIP_NETNS=1 makes each print "SKIPPED (netns): <test>",
# counted after the run. (Without the variable those tests fail, saying why.)
probe="meshcap-probe-$$-$RANDOM"
if ip netns add "$probe" 2>/dev/null; then
    ip netns del "$probe"
else
    if [ "${CI:-}" = "true" ]; then
        echo "test.sh: FAILED: cannot create network namespaces ('ip netns add' failed);" \
            "CI=true requires them (run as root with iproute2)" >&2
        exit 1
    fi
    echo "test.sh: warning: cannot create network namespaces here; the netns tests will be SKIPPED" >&2
    export MESHCAP_SKIP_NETNS=1
fi

# The netfilter and policy-routing state of this (the caller's) namespace, without counters,
# timestamps or handles, to prove afterwards that no test touched it.
host_state() {
    {
        for save in iptables-legacy-save ip6tables-legacy-save iptables-nft-save ip6tables-nft-save; do
            echo "== $save"
            command -v "$save" >/dev/null 2>&1 && as_root "$save" 2>/dev/null | grep -v '^#' |
                sed -E 's/\[[0-9]+:[0-9]+\]//'
        done
        echo "== nft"
        as_root nft list ruleset 2>/dev/null | sed -E 's/ packets [0-9]+ bytes [0-9]+//'
        echo "== ip rule"
        ip rule 2>/dev/null
        ip -6 rule 2>/dev/null
        echo "== table 133"
        ip route show table 133 2>/dev/null
        ip -6 route show table 133 2>/dev/null
    } || true
}

cargo fmt --check
cargo clippy --all-targets -- -D warnings -D clippy::too_many_lines
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps
cargo build --release
before=$(host_state)
status=0
log=$(mktemp "${TMPDIR:-/tmp}/meshcap-test-log.XXXXXX")
trap 'rm -f "$log"' EXIT
cargo test --release 2>&1 | tee "$log" || status=$?
# The container images, built and run in pods (scripts/image.sh; podman inside throw-away
# namespaces, so the comparison below covers them too).
if ip netns add "$probe" 2>/dev/null && ip netns del "$probe"; then
    { scripts/image.sh build --all-arch && scripts/image.sh test --all-arch; } || status=$?
else
    echo "test.sh: warning: no network namespaces here; the image tests are skipped" >&2
fi
after=$(host_state)
# libtest may have started a "test NAME ... " line when a skip line arrives: match anywhere.
skipped=$({ grep -o 'SKIPPED (netns): [^[:space:]]*' "$log" || true; } | sort -u | wc -l)
if [ "${MESHCAP_SKIP_NETNS:-}" = "1" ] || [ "$skipped" -gt 0 ]; then
    echo "test.sh: $skipped tests SKIPPED (netns): network namespaces cannot be created here" >&2
fi
if [ "$before" != "$after" ]; then
    echo "test.sh: FAILED: the tests changed the netfilter/routing state of the namespace they ran in:" >&2
    diff <(echo "$before") <(echo "$after") >&2 || true
    exit 1
fi
exit "$status"
