#!/bin/sh
# istio-sequence.sh PAYLOAD: the commands Istio 1.29's istio-init runs for a fresh IPv4 pod
# (istio-compat §5.1-5.7), with the real binaries, run inside the pod's namespace by run.sh. Go start-up
# of pilot-agent is not included.
#
# Binary probing, per family (v4, then v6 even with IPv6 off): iptables-legacy is probed (save,
# save --version, the nat kernel test and its removal, with --wait=30 as legacy >= 1.6.2), holds
# no rules in a fresh namespace so is not chosen, then iptables-nft is probed and chosen.
# State verification reads both families; the IPv4 payload is restored (no IPv6 restore when
# IPv6 is off); the final state of IPv4 is saved for the log.
payload=$1
probe() {
    "$1-save" >/dev/null 2>&1 || return 0
    "$1-save" --version >/dev/null 2>&1
    "$1" -t nat -A INPUT -p 255 -j RETURN $2 >/dev/null 2>&1 || return 0
    "$1" -t nat -D INPUT -p 255 -j RETURN $2 >/dev/null 2>&1
    return 0
}
for family in iptables ip6tables; do
    probe "$family-legacy" --wait=30
    probe "$family-nft" ""
done
iptables-nft-save >/dev/null
ip6tables-nft-save >/dev/null
iptables-nft-restore --noflush "$payload"
iptables-nft-save >/dev/null
