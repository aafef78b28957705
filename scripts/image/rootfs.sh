#!/bin/sh
# Assembles the root filesystem of meshcap's init-container image (the Dockerfile's `userland`
# stage runs it): only the programs meshcap runs, their shared libraries and the xtables
# extensions the rules load, copied out of a tree of unpacked Debian packages. Nothing is run
# from that tree, so it may be of another architecture (the arm64 image is assembled on amd64).
#
#   rootfs.sh ARCH PACKAGES OUT      ARCH: amd64 | arm64; PACKAGES: a tree holding Debian's
#                                    iptables package with its dependencies
#                                    unpacked (installed or `mmdebstrap --variant=extract`)
#
# The lists below are the whole content. They are fixed on purpose, not computed: an image that
# grows only when this file changes. scripts/image.sh test proves them: every ELF file's
# DT_NEEDED libraries are in the image, and every golden configuration is applied (both iptables
# variants, and nftables over netlink) and then checked with the image's own programs.
set -eu

[ $# -eq 3 ] || { echo "usage: rootfs.sh ARCH PACKAGES OUT" >&2; exit 2; }
arch=$1 src=$2 out=$3

case $arch in
amd64) triplet=x86_64-linux-gnu loader=/lib64/ld-linux-x86-64.so.2 ;;
arm64) triplet=aarch64-linux-gnu loader=/lib/ld-linux-aarch64.so.1 ;;
*) echo "rootfs.sh: invalid architecture '$arch' (expected amd64 or arm64)" >&2; exit 2 ;;
esac

# The programs (Debian's multi-call binaries) and the names meshcap and Istio call them by.
# No nft: meshcap's --native-nftables backend programs and reads nf_tables over netlink.
programs="xtables-legacy-multi xtables-nft-multi"
legacy_names="iptables-legacy iptables-legacy-save iptables-legacy-restore
ip6tables-legacy ip6tables-legacy-save ip6tables-legacy-restore"
nft_names="iptables-nft iptables-nft-save iptables-nft-restore
ip6tables-nft ip6tables-nft-save ip6tables-nft-restore
iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore"

# The shared libraries of those programs (the closure of their DT_NEEDED entries).
libraries="libc.so.6
libxtables.so.12 libip4tc.so.2 libip6tc.so.2
libmnl.so.0 libnftnl.so.11"

# The xtables extensions the rules meshcap writes load (iptables-restore and iptables-save,
# both variants): standard targets (RETURN, ACCEPT, DROP, jumps), -p tcp/udp, and the -m/-j
# modules of every golden configuration. Tracing openat(2) over scripts/image.sh's apply and
# check of every golden configuration (both variants) showed exactly these being loaded.
extensions="standard tcp udp owner mark MARK CONNMARK connmark conntrack multiport TPROXY CT REDIRECT"

die() { echo "rootfs.sh: $*" >&2; exit 1; }

# The file of a library in the package tree (/usr/lib or /lib, unmerged or merged).
lib_path() {
    for dir in "usr/lib/$triplet" "lib/$triplet"; do
        if [ -e "$src/$dir/$1" ]; then
            echo "$src/$dir/$1"
            return
        fi
    done
    die "$1 is not in $src (usr/lib/$triplet, lib/$triplet)"
}

[ -d "$src" ] || die "no package tree at $src"
[ ! -e "$out" ] || die "$out exists"

libdir=$out/usr/lib/$triplet
mkdir -p "$out/usr/sbin" "$out/usr/local/bin" "$libdir/xtables" \
    "$out/etc" "$out/proc" "$out/sys" "$out/dev" "$out/run" "$out/tmp"
chmod 1777 "$out/tmp"
# Merged /usr, as in Debian.
ln -s usr/sbin "$out/sbin"
ln -s usr/lib "$out/lib"

for p in $programs; do
    [ -f "$src/usr/sbin/$p" ] || die "$p is not in $src/usr/sbin"
    cp "$src/usr/sbin/$p" "$out/usr/sbin/$p"
done
for n in $legacy_names; do ln -s xtables-legacy-multi "$out/usr/sbin/$n"; done
for n in $nft_names; do ln -s xtables-nft-multi "$out/usr/sbin/$n"; done

for l in $libraries; do
    cp -L "$(lib_path "$l")" "$libdir/$l"
done
# The dynamic loader, at the path the programs name (PT_INTERP).
name=$(basename "$loader")
cp -L "$(lib_path "$name")" "$libdir/$name"
case $loader in
/lib64/*)
    mkdir -p "$out/usr/lib64"
    ln -s usr/lib64 "$out/lib64"
    ln -s "../lib/$triplet/$name" "$out/usr/lib64/$name"
    ;;
/lib/*) ln -s "$triplet/$name" "$out/usr/lib/$name" ;;
esac

# Extensions: libxt_NAME.so (both families) or libipt_/libip6t_ (one family). Some are links
# to a shared file (libxt_REDIRECT.so -> libxt_NAT.so); links are kept so the file is stored
# once.
xdir=$(dirname "$(lib_path xtables/libxt_standard.so)")
for e in $extensions; do
    found=
    for f in "libxt_$e.so" "libipt_$e.so" "libip6t_$e.so"; do
        [ -e "$xdir/$f" ] || continue
        found=1
        if [ -L "$xdir/$f" ]; then
            target=$(readlink "$xdir/$f")
            case $target in */*) die "extension link $f points outside its directory: $target" ;; esac
            [ -e "$libdir/xtables/$target" ] || cp "$xdir/$target" "$libdir/xtables/$target"
            ln -s "$target" "$libdir/xtables/$f"
        else
            cp "$xdir/$f" "$libdir/xtables/$f"
        fi
    done
    [ -n "$found" ] || die "extension $e is not in $xdir"
done

# No file of /etc: meshcap reads /etc/passwd and /etc/group only to resolve user and group
# names, its netlink reader needs no /etc/protocols, and libxtables knows tcp and udp without
# it. The container engine provides /proc, /sys, /dev, /etc/hosts and /etc/resolv.conf; /run
# holds iptables-legacy's lock (a tmpfs where the root file system is read-only).
