#!/bin/sh
# Builds meshcap as a fully static Linux executable (glibc, +crt-static, static-pie): no ELF
# interpreter, no shared libraries, so it runs in an empty root filesystem.
#
#   scripts/build-static.sh [--arch amd64|arm64] [extra cargo build args...]
#
# --arch picks the target (Debian/OCI architecture names): amd64 = x86_64-unknown-linux-gnu,
# arm64 = aarch64-unknown-linux-gnu; the default is the machine's own. A cross build needs the
# Rust target (`rustup target add aarch64-unknown-linux-gnu`) and a cross linker with a static
# glibc (Debian: gcc-aarch64-linux-gnu, libc6-dev-arm64-cross); the linker defaults to
# <arch>-linux-gnu-gcc unless CARGO_TARGET_<TRIPLE>_LINKER is set.
#
# The only line printed on stdout is the absolute path of the binary (cargo's output goes to
# stderr): ${CARGO_TARGET_DIR:-target}/<triple>/release/meshcap
#
# Why a script and not .cargo/config.toml: `-C target-feature=+crt-static` given for every build
# (RUSTFLAGS, or `[target.x86_64-unknown-linux-gnu] rustflags` without `--target`) also reaches the
# proc-macro crates (clap_derive, serde_derive), and rustc refuses to build a proc-macro for a
# crt-static target. With an explicit `--target`, cargo applies RUSTFLAGS only to the target
# artifacts and builds host artifacts (proc macros, build scripts) normally, so plain
# `cargo build` / `cargo test` stay untouched and dynamically linked.
set -eu

cd "$(dirname "$0")/.."

case $(uname -m) in
x86_64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
*) arch=$(uname -m) ;;
esac
if [ "${1:-}" = "--arch" ]; then
    [ $# -ge 2 ] || { echo "build-static.sh: --arch needs a value (amd64 or arm64)" >&2; exit 2; }
    arch=$2
    shift 2
fi
case $arch in
amd64) triple=x86_64-unknown-linux-gnu gcc=x86_64-linux-gnu-gcc ;;
arm64) triple=aarch64-unknown-linux-gnu gcc=aarch64-linux-gnu-gcc ;;
*)
    echo "build-static.sh: invalid value '$arch' for --arch (expected amd64 or arm64)" >&2
    exit 2
    ;;
esac

# A cross build links with the cross gcc unless the caller chose a linker.
linker_var=CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_LINKER
if [ -z "$(printenv "$linker_var" || true)" ] && ! [ "$(uname -m)" = "${triple%%-*}" ]; then
    export "$linker_var=$gcc"
fi

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
