#!/bin/sh
# Builds meshcap as a fully static x86_64 Linux executable (glibc, +crt-static, static-pie):
# no ELF interpreter, no shared libraries, so it runs in an empty root filesystem.
#
#   scripts/build-static.sh [extra cargo build args...]
#
# The only line printed on stdout is the absolute path of the binary (cargo's output goes to
# stderr): ${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/meshcap
#
# Why a script and not .cargo/config.toml: `-C target-feature=+crt-static` given for every build
# (RUSTFLAGS, or `[target.x86_64-unknown-linux-gnu] rustflags` without `--target`) also reaches the
# proc-macro crates (clap_derive, serde_derive), and rustc refuses to build a proc-macro for a
# crt-static target. With an explicit `--target`, cargo applies RUSTFLAGS only to the target
# artifacts and builds host artifacts (proc macros, build scripts) normally, so plain
# `cargo build` / `cargo test` stay untouched and dynamically linked.
set -eu

triple=x86_64-unknown-linux-gnu
cd "$(dirname "$0")/.."

# With an explicit --target, RUSTFLAGS reaches only the target artifacts. It is used (rather than
# the target-specific variable) because a RUSTFLAGS set by the caller would otherwise take
# precedence and silently drop +crt-static; the caller's flags are kept.
if [ -n "${CARGO_ENCODED_RUSTFLAGS:-}" ]; then
    echo "build-static.sh: CARGO_ENCODED_RUSTFLAGS is set and would override +crt-static; unset it" >&2
    exit 2
fi
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
export RUSTFLAGS

"${CARGO:-cargo}" build --release --locked --target "$triple" "$@" >&2

dir=${CARGO_TARGET_DIR:-target}
case $dir in
/*) ;;
*) dir="$(pwd)/$dir" ;;
esac
echo "$dir/$triple/release/meshcap"
