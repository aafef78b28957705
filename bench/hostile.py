#!/usr/bin/env python3
"""meshcap's hostile-scale benchmark: work bounded by the input's size.

Run as root on a machine where `ip netns add` works, after `cargo build --release`:
`python3 bench/hostile.py [parse] [live] [cleanup] [limits]` (all sections by default).
MESHCAP points at the binary to measure (default target/release/meshcap), so the same script
gives the before and after figures of a change. Every namespace it touches is one it created
(`mchost-*`) and deletes; nothing is applied to the caller's namespace.

Sections (wall time of one run, best of ROUNDS (3); peak RSS from GNU time's %M):

parse    `meshcap check --from-save DUMP` of a dump declaring 25k/50k/100k foreign chains
         (linear: a doubling of the chains must roughly double the time), and 60k rules.
live     apply and `check` in a namespace holding 50k foreign chains (nat table).
cleanup  `istio-clean-iptables` after an apply of `-c` with 16,000 interfaces, and of
         300 × 300 `-k`/`-i` (the apply time is shown beside it).
limits   the rule-count limit (MESHCAP_MAX_RULES, 20,000 by default): the refusal of
         2,000 × 2,000 -k/-i (4 million rules; render, JSON, apply: must be instant), and
         render (text, JSON, nft) and apply (iptables, nft) of two configurations just under
         the limit: 18 × 1,000 -k/-i (19,032 IPv4 rules) and 830 proxy ids with TPROXY, DNS
         and IPv6 (19,970 iptables rules, 13,309 nft; 5 matches each, the heaviest per rule). Peak RSS at the limit
         must stay ≤ 100 MB. An apply's peak RSS is the largest of meshcap and its restore
         child (GNU time reports the process tree's largest). SKIP_REFUSAL=1 skips the refusal
         rows (for a binary without the limit).

Figures (2 shared cores under heavy load from other builds, one run each; before = the
release binary of the base branch, after = the linear parser and cleanup):

  case                                   before        after
  parse 25k / 50k / 100k chains          3.4 / 14.5 / 64.1 s   0.09 / 0.18 / 0.49 s
  parse 60k rules                        0.78 s        0.40 s
  live 50k foreign chains: apply, check  6.4 s, 5.9 s  0.52 s, 0.71 s
  cleanup -c 16,000 (apply 0.6-0.8 s)    7.2 s         0.99 s
  cleanup 300 x 300 -k/-i (apply 2.0 s)  125.1 s       9.1 s

limits (before = the base commit's release binary, without the limit; after = the limit and the
streamed JSON; one run, shared machine, so times are ±2x; RSS is stable):

  case                                   before              after
  render 2,000 x 2,000 -k/-i             3.54 s, 840 MiB     refused: 9-16 ms, 4.0 MiB
  JSON / apply of the same               -                   refused: 7-10 / 13-35 ms, 4.1 / 4.5 MiB
  18 x 1,000 -k/-i: render / JSON        8.3 / 47.9 MiB      8.2 / 10.6 MiB
    nft render / apply ipt / apply nft   14.2 / 29.0 / 94.4  14.1 / 29.2 / 94.2 MiB (apply: the child)
  830 ids: render / JSON                 10.0 / 62.3 MiB     9.4 / 9.0 MiB
    nft render / apply ipt / apply nft   13.0 / 13.3 / 82.7  13.2 / 13.1 / 82.8 MiB
"""

import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESHCAP = os.environ.get("MESHCAP", os.path.join(ROOT, "target", "release", "meshcap"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def run(argv, ok=(0,), stdin=None, timeout=900):
    """(wall seconds, peak RSS KiB, stderr) of one run of argv; its exit code must be in ok."""
    with tempfile.NamedTemporaryFile(mode="r") as tf:
        start = time.perf_counter()
        res = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name] + argv, stdin=stdin,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
        wall = time.perf_counter() - start
        rss = int(tf.read().strip().splitlines()[-1])
    if res.returncode not in ok:
        sys.exit(f"failed ({res.returncode}): {' '.join(argv)[:300]}\n{res.stderr.decode(errors='replace')[-2000:]}")
    return wall, rss, res.stderr.decode(errors="replace")


def best(argv, ok=(0,), prepare=None, rounds=None):
    """Best wall time and the largest peak RSS over ROUNDS runs (prepare() before each)."""
    walls, rss = [], 0
    for _ in range(rounds or ROUNDS):
        if prepare:
            prepare()
        w, r, _ = run(argv, ok)
        walls.append(w)
        rss = max(rss, r)
    return min(walls), rss


def row(name, wall, rss=None):
    extra = f"  peak RSS {rss / 1024:7.1f} MiB" if rss is not None else ""
    print(f"  {name:<52} {wall * 1000:9.1f} ms{extra}", flush=True)


class Ns:
    """A throw-away network namespace, deleted on exit."""

    def __init__(self, tag):
        self.name = f"mchost-{tag}-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        # An IPv4 pod address (IPv6 detection then says IPv4 only).
        subprocess.run(["ip", "-n", self.name, "addr", "add", "198.51.100.2/32", "dev", "lo"], check=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)

    def restore(self, text, v6=False):
        prog = "ip6tables-nft-restore" if v6 else "iptables-nft-restore"
        subprocess.run(["ip", "netns", "exec", self.name, prog, "--noflush"], input=text.encode(), check=True)

    def meshcap(self, *args):
        return [MESHCAP, *args, "--network-namespace", f"/run/netns/{self.name}"]


def chains_dump(n):
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]"]
    lines += [f":FOREIGN_{i} - [0:0]" for i in range(n)]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def rules_dump(n):
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]", ":FOREIGN - [0:0]"]
    lines += [f"-A FOREIGN -d 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32 -j RETURN" for i in range(n)]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def section_parse():
    print("parse: meshcap check --from-save DUMP -u 1337 (exit 1: drift)")
    with tempfile.TemporaryDirectory() as d:
        for name, text in [("25k chain declarations", chains_dump(25_000)),
                           ("50k chain declarations", chains_dump(50_000)),
                           ("100k chain declarations", chains_dump(100_000)),
                           ("60k rules", rules_dump(60_000))]:
            path = os.path.join(d, "dump")
            with open(path, "w") as f:
                f.write(text)
            wall, rss = best([MESHCAP, "check", "--from-save", path, "-u", "1337"], ok=(1,))
            row(name, wall, rss)


def section_live():
    print("live: a namespace holding 50k foreign chains (nat)")
    std = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "*"]
    with Ns("live") as ns:
        ns.restore(chains_dump(50_000).replace("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n"
                                               ":OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n", "*nat\n"))
        wall, rss, _ = run(ns.meshcap("istio-iptables", *std))
        row("apply", wall, rss)
        wall, rss = best(ns.meshcap("check", *std))
        row("check", wall, rss)


def section_cleanup():
    print("cleanup: istio-clean-iptables after an apply (same flags), IPv4 pod")
    ifaces = ",".join(f"c{i}" for i in range(16_000))
    k300 = ",".join(f"k{i}" for i in range(300))
    i300 = ",".join(f"10.{i >> 8}.{i & 255}.0/24" for i in range(300))
    base = ["-p", "15001", "-z", "15006", "-u", "1337", "-b", "*"]
    cases = [("-c of 16,000 interfaces", base + ["-i", "*", "-c", ifaces])]
    if os.environ.get("BIG", "1") != "0":
        cases.append(("300 x 300 -k/-i", base + ["-k", k300, "-i", i300]))
    for name, flags in cases:
        with Ns("clean") as ns:
            wall, rss, _ = run(ns.meshcap("istio-iptables", *flags))
            row(f"{name}: apply", wall, rss)
            wall, rss, _ = run(ns.meshcap("istio-clean-iptables", *flags))
            row(f"{name}: cleanup", wall, rss)


def limits_cases():
    """The configurations just under the limit: (name, flags)."""
    ki = ["-k", ",".join(f"k{i}" for i in range(18)),
          "-i", ",".join(f"10.{i >> 8}.{i & 255}.0/24" for i in range(1000))]
    ids = ",".join(str(1000 + i) for i in range(830))
    owners = ["-u", ids, "-m", "TPROXY", "-b", "*", "--redirect-dns", "--capture-all-dns"]
    return [("18 x 1,000 -k/-i", ki, False), ("830 ids -u/-g, TPROXY, DNS, IPv6", owners, True)]


def section_limits():
    print("limits: MESHCAP_MAX_RULES (default 20,000)")
    base = ["-p", "15001", "-z", "15006", "-b", "*"]
    if os.environ.get("SKIP_REFUSAL") != "1":
        k = ",".join(f"k{i}" for i in range(2000))
        i = ",".join(f"10.{n >> 8}.{n & 255}.0/24" for n in range(2000))
        boom = base + ["-k", k, "-i", i]
        wall, rss = best([MESHCAP, "render", *boom], ok=(1,))
        row("refusal: render 2,000 x 2,000 -k/-i (4M rules)", wall, rss)
        wall, rss = best([MESHCAP, "render", "--format", "json", *boom], ok=(1,))
        row("refusal: render --format json, same", wall, rss)
        with Ns("limits") as ns:
            wall, rss = best(ns.meshcap("istio-iptables", *boom), ok=(1,))
            row("refusal: apply, same", wall, rss)
    for name, flags, ipv6 in limits_cases():
        v6 = ["--ipv6"] if ipv6 else ["--ipv6=false"]
        print(f"  at the limit: {name}")
        wall, rss = best([MESHCAP, "render", *base, *flags, *v6])
        row("render (iptables text)", wall, rss)
        wall, rss = best([MESHCAP, "render", "--format", "json", *base, *flags, *v6])
        row("render --format json", wall, rss)
        wall, rss = best([MESHCAP, "render", "--native-nftables", *base, *flags, *v6])
        row("render --native-nftables", wall, rss)
        for backend in ([], ["--native-nftables"]):
            with Ns("limits") as ns:
                # istio-iptables has no --ipv6: Istio's variable says it (env execs meshcap).
                env = ["env", f"ENABLE_INBOUND_IPV6={'true' if ipv6 else 'false'}"]
                wall, rss, _ = run(env + ns.meshcap("istio-iptables", *backend, *base, *flags))
                row(f"apply {'nft' if backend else 'iptables'} (fresh namespace)", wall, rss)


SECTIONS = {"parse": section_parse, "live": section_live, "cleanup": section_cleanup,
            "limits": section_limits}

if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root (namespaces)")
    wanted = sys.argv[1:] or list(SECTIONS)
    print(f"binary: {MESHCAP}")
    for s in wanted:
        SECTIONS[s]()
