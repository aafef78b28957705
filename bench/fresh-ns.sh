#!/bin/sh
# fresh-ns.sh NAME: (re)create the throw-away network namespace NAME the way a fresh IPv4 pod
# looks (lo up, eth0 198.51.100.1/24 on a veth whose peer stays in the namespace). Used as
# hyperfine's --prepare step by run.sh; never touches the caller's namespace.
set -e
name=$1
ip netns del "$name" 2>/dev/null || true
ip netns add "$name"
ip -n "$name" link set lo up
ip -n "$name" link add eth0 type veth peer name eth0p
ip -n "$name" addr add 198.51.100.1/24 dev eth0
ip -n "$name" link set eth0 up
ip -n "$name" link set eth0p up
