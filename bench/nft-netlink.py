#!/usr/bin/env python3
"""The netlink nft backend against bare `nft -f`: apply speed and memory.

Run as root after `cargo build --release --bin meshcap` (bench/nft-netlink.sh does both), on a
machine where `ip netns add` works; only the throw-away namespace `mcbench-nl` is touched.
Uses run.py's helpers and method: a fresh namespace per command (lo, eth0 on a veth, as a
fresh IPv4 pod), SETTLE_MS of quiet, then the command is timed; rounds interleaved in a
shuffled order; ratios of medians.

(a) apply into a fresh namespace, both entering it from outside: `meshcap istio-iptables
    --native-nftables --network-namespace NS` (one netlink batch, no process) vs `nsenter
    --net nft -f FILE` of the very transaction meshcap applies (taken from its dry run), and
    meshcap under `nsenter` too, for the same entry cost on both sides;
(b) the same with 5,000 excluded CIDRs and --compact (one interval set);
(c) peak RSS of those applies (GNU time's %M; meshcap starts no child now).
MESHCAP_BASE=<another meshcap binary> times it too, in the same rounds (before/after figures).
"""

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402

NS = "mcbench-nl"


def applied_text(args):
    """The transaction meshcap applies for `args`, from its dry run's log."""
    res = subprocess.run([bench.MESHCAP, "istio-iptables"] + args + ["--native-nftables", "--dry-run"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    lines = res.stderr.splitlines()
    start = next(i for i, l in enumerate(lines) if l.endswith("Running nft with the following input:")) + 1
    out = []
    for line in lines[start:]:
        if "\tinfo\t" in line:
            break
        out.append(line)
    return "\n".join(out) + "\n"


def section(report, title, args):
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
        f.write(applied_text(args))
        f.flush()
        cmds = {
            "nft -f (nsenter)": bench.nsenter(NS, ["nft", "-f", f.name]),
            "meshcap --network-namespace": [bench.MESHCAP, "istio-iptables"] + args
            + ["--native-nftables", "--network-namespace", NS],
            "meshcap (nsenter)": bench.nsenter(NS, [bench.MESHCAP, "istio-iptables"] + args + ["--native-nftables"]),
            "nsenter true": bench.nsenter(NS, ["true"]),
        }
        if os.path.exists(bench.STATIC):
            cmds["static meshcap --network-namespace"] = [bench.STATIC, "istio-iptables"] + args + [
                "--native-nftables", "--network-namespace", NS]
        if bench.BASE:
            cmds["MESHCAP_BASE --network-namespace"] = [bench.BASE, "istio-iptables"] + args + [
                "--native-nftables", "--network-namespace", NS]
        res = bench.interleaved(cmds, bench.ROUNDS, prepare=lambda: bench.fresh_ns(NS))
        nft = res["nft -f (nsenter)"][0]
        report.append(f"\n### {title} ({bench.ROUNDS} rounds, wall ms medians)\n")
        report.append("| command | wall ms | cpu ms | min wall ms | ÷ nft -f |")
        report.append("|---|---|---|---|---|")
        for k, (w, c, mn) in res.items():
            report.append(f"| {k} | {bench.ms(w)} | {bench.ms(c)} | {bench.ms(mn)} | {w / nft:.2f}× |")
        bench.fresh_ns(NS)
        rss = bench.peak_rss_kib([bench.MESHCAP, "istio-iptables"] + args + ["--native-nftables", "--network-namespace", NS])
        bench.fresh_ns(NS)
        rss_nft = bench.peak_rss_kib(bench.nsenter(NS, ["nft", "-f", f.name]))
        report.append(f"\npeak RSS: meshcap {rss / 1024:.1f} MB, nft -f {rss_nft / 1024:.1f} MB")
        return res


def main():
    report = ["# nft over netlink: meshcap apply vs bare nft -f"]
    try:
        section(report, "standard sidecar, fresh namespace", bench.flags())
        section(report, "5,000 excluded CIDRs, --compact", bench.flags(x=bench.cidrs(5000), extra=["--compact"]))
    finally:
        bench.del_ns(NS)
    text = "\n".join(report)
    print(text)
    with open(os.environ.get("BENCH_OUT", os.path.join(bench.BENCH, "results-nft-netlink.md")), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
