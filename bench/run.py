#!/usr/bin/env python3
"""meshcap's benchmark: apply, render, per-connection cost, memory and size.

Run through bench/run.sh (it builds the release binary and the connbench example first), as
root, on a machine where `ip netns add` works. Every namespace it touches is one it created
(`mcbench-*`) and deletes; nothing is applied to the caller's namespace. Traffic goes to
198.51.100.2 inside those namespaces only and is redirected to a local listener.

Method, per section (all ratios are of medians over interleaved rounds: each round runs every
command of the section once, in a shuffled order, so load drifting on a shared machine hits all
of them alike and none always follows the same command; where a section prepares a namespace
before each command, the command is timed after SETTLE_MS (100) ms of quiet, so the kernel's
asynchronous cleanup of the previous namespace does not land on it; CPU is user+system time of
the command and its children, from getrusage):

(a) apply: a fresh namespace per run (lo, eth0 198.51.100.1/24 on a veth, as a fresh IPv4 pod),
    then the command is timed: bare `iptables-nft-restore --noflush` of the same payload, meshcap
    `istio-iptables` (in the pod namespace, as istio-init runs, and from outside with
    `--network-namespace`), and Istio 1.29's command sequence with the real binaries
    (bench/istio-sequence.sh, istio-compat §5.1-5.7; pilot-agent's Go start-up not included). The
    in-namespace commands run under `nsenter --net`, whose own cost is shown too.
(b) render: `meshcap render` with the standard istio-init flags and growing lists (CIDRs in -x,
    ports in -d); instructions from callgrind (deterministic), wall and CPU medians.
(c) per-connection setup: in a fresh namespace with the capture installed, `connbench` opens
    and closes TCP connections to 198.51.100.2:80, which the capture redirects to a local
    listener; every first packet walks nat OUTPUT. 5,000 excluded CIDRs (none containing the
    destination, so all are walked) vs none, Istio's rules and --compact, iptables (meshcap
    apply, iptables-nft) and native nft (`render --native-nftables` + `nft -f`).
(d) peak RSS (GNU time's %M; for apply it is the larger of meshcap and its restore child, so
    meshcap alone is measured with --dry-run) and the size of the release and static binaries.
(e) nft re-run: in a namespace already holding meshcap's nft state, the re-run of
    `istio-iptables --native-nftables` (reads the state back over netlink, compares, writes
    nothing) and `check --native-nftables`, vs a bare `nft -j list ruleset` of that namespace;
    both enter it from outside (--network-namespace / nsenter). Standard flags, and 5,000 CIDRs +
    1,000 ports with --compact.
"""

import json
import os
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
MESHCAP = os.environ.get("MESHCAP", os.path.join(ROOT, "target", "release", "meshcap"))
# The static build the image ships (scripts/build-static.sh), when present.
STATIC = os.environ.get("MESHCAP_STATIC", os.path.join(ROOT, "target", "x86_64-unknown-linux-gnu", "release", "meshcap"))
# Another meshcap binary (e.g. the release build of main) to time beside MESHCAP in the same
# interleaved rounds (`nft-netlink.py` and the `nftread` section), when set.
BASE = os.environ.get("MESHCAP_BASE")
CONNBENCH = os.path.join(ROOT, "target", "release", "examples", "connbench")
ROUNDS = int(os.environ.get("ROUNDS", "30"))
CONN_REPEATS = int(os.environ.get("CONN_REPEATS", "5"))
CONN_COUNT = int(os.environ.get("CONN_COUNT", "1000"))
# Quiet time after a section's prepare step, before the command is timed: deleting the previous
# round's namespace (with its rules) finishes asynchronously in the kernel, and that cleanup,
# run on the same two cores (its RCU callbacks partly charged to whatever process is current),
# would slow the next command down (measured: ≈ 0.1× on the apply ratios without it).
SETTLE_MS = int(os.environ.get("SETTLE_MS", "100"))

# What Istio's injector passes to istio-init (sidecar defaults).
STD = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "",
       "-b", "*", "-d", "15090,15021,15020"]


def cidrs(n):
    """n distinct, non-adjacent /24 prefixes in 10.0.0.0/8 (never 198.51.100.0/24)."""
    return ",".join(f"10.{i // 128}.{(i % 128) * 2}.0/24" for i in range(n))


def ports(n):
    """n distinct, non-adjacent ports above the ones Istio uses."""
    return ",".join(str(20000 + 3 * i) for i in range(n))


def flags(x="", d="15090,15021,15020", extra=()):
    args = list(STD)
    args[args.index("-x") + 1] = x
    args[args.index("-d") + 1] = d
    return args + list(extra)


def lists(n_cidrs, n_ports):
    d = "15090,15021,15020" + ("," + ports(n_ports) if n_ports else "")
    return flags(x=cidrs(n_cidrs), d=d)


def run(argv, **kw):
    return subprocess.run(argv, check=True, **kw)


def fresh_ns(name):
    run([os.path.join(BENCH, "fresh-ns.sh"), name])


def del_ns(name):
    subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)


def nsenter(name, argv):
    return ["nsenter", f"--net=/run/netns/{name}"] + list(argv)


def timed(argv, stdin=None):
    """(wall ms, cpu ms) of one run; the command must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = (time.perf_counter() - start) * 1e3
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        sys.exit(f"benchmark command failed ({res.returncode}): {shlex.join(argv)[:300]}\n"
                 f"{res.stderr.decode(errors='replace')[:2000]}")
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e3
    return wall, cpu


def interleaved(cmds, rounds, prepare=None):
    """{name: argv} -> {name: (median wall, median cpu, min wall)}, rounds interleaved.

    Each round runs every command once, in a shuffled order (fixed seed, so runs are
    comparable), so no command always follows the same one; with a prepare step, the command
    is timed after SETTLE_MS of quiet."""
    walls = {k: [] for k in cmds}
    cpus = {k: [] for k in cmds}
    order = list(cmds)
    shuffle = random.Random(7).shuffle
    for _ in range(rounds):
        shuffle(order)
        for k in order:
            argv = cmds[k]
            if prepare:
                prepare()
                time.sleep(SETTLE_MS / 1000)
            w, c = timed(argv)
            walls[k].append(w)
            cpus[k].append(c)
    return {k: (statistics.median(walls[k]), statistics.median(cpus[k]), min(walls[k])) for k in cmds}


def instructions(argv):
    """Instructions executed by one run (callgrind, the process itself, no children)."""
    with tempfile.NamedTemporaryFile() as out:
        res = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}"] + argv,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in res.stderr.splitlines():
        if "Collected :" in line:
            return int(line.split(":")[-1].strip().replace(",", ""))
    sys.exit(f"callgrind failed: {res.stderr[-2000:]}")


def peak_rss_kib(argv):
    with tempfile.NamedTemporaryFile(mode="r") as out:
        run(["/usr/bin/time", "-f", "%M", "-o", out.name] + argv,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return int(out.read().strip().splitlines()[-1])


def ms(v):
    return f"{v:.2f}"


def ratio(a, b):
    return f"{a / b:.2f}×"


def section_apply(report):
    ns = "mcbench-apply"
    with tempfile.TemporaryDirectory() as tmp:
        payload = os.path.join(tmp, "payload.v4")
        with open(payload, "w") as f:
            run([MESHCAP, "render", "--family", "v4"] + flags(), stdout=f)
        # Process spawns of one apply into a fresh namespace (meshcap logs them at debug).
        fresh_ns(ns)
        log = subprocess.run(nsenter(ns, [MESHCAP, "istio-iptables"] + flags() + ["--log_output_level=debug"]),
                             capture_output=True, text=True, check=True).stderr
        spawns = next((l.split()[-3] for l in log.splitlines() if "processes spawned" in l), "?")
        cmds = {
            "nsenter --net (wrapper alone)": nsenter(ns, ["true"]),
            "bare iptables-nft-restore --noflush": nsenter(ns, ["iptables-nft-restore", "--noflush", payload]),
            "meshcap istio-iptables (in the pod netns)": nsenter(ns, [MESHCAP, "istio-iptables"] + flags()),
            "meshcap istio-iptables --network-namespace": [MESHCAP, "istio-iptables"] + flags()
            + ["--network-namespace", ns],
            "meshcap istio-iptables --compact": nsenter(ns, [MESHCAP, "istio-iptables", "--compact"] + flags()),
        }
        if os.path.exists(STATIC):
            cmds["meshcap istio-iptables, static build (in the pod netns)"] = nsenter(
                ns, [STATIC, "istio-iptables"] + flags()
            )
        cmds |= {
            "Istio 1.29 command sequence (20 processes)": nsenter(ns, ["sh", os.path.join(BENCH, "istio-sequence.sh"),
                                                                       payload]),
        }
        res = interleaved(cmds, ROUNDS, prepare=lambda: fresh_ns(ns))
        del_ns(ns)
    bare = res["bare iptables-nft-restore --noflush"]
    istio = res["Istio 1.29 command sequence (20 processes)"]
    report.append("### (a) apply into a fresh namespace (standard istio-init flags)\n")
    report.append(f"meshcap spawns {spawns} process(es) for this apply (one restore); Istio's sequence spawns 20.\n")
    report.append("| command | wall median ms | wall min ms | CPU median ms | wall ÷ bare restore | wall ÷ Istio | CPU ÷ bare |")
    report.append("|---|---|---|---|---|---|---|")
    for k, (w, c, mn) in res.items():
        report.append(f"| {k} | {ms(w)} | {ms(mn)} | {ms(c)} | {ratio(w, bare[0])} | {ratio(w, istio[0])} | {ratio(c, bare[1])} |")
    report.append("")
    return res


def section_nftread(report):
    """(e) The nft backend's re-run: meshcap reads the live state back over netlink and compares
    it with the plan, in a namespace that already holds exactly that state (so nothing is
    written), vs a bare `nft -j list ruleset` of the same namespace. Both enter the namespace
    from outside: meshcap with --network-namespace, nft under nsenter (whose own cost is shown).
    Standard flags, and 5,000 CIDRs + 1,000 ports with --compact (big anonymous sets)."""
    ns = "mcbench-nftread"
    res_all = {}
    report.append("### (e) nft re-run (read back + compare, unchanged namespace) vs bare `nft -j list ruleset`\n")
    report.append("| case | command | wall median ms | wall min ms | CPU median ms | wall ÷ bare listing |")
    report.append("|---|---|---|---|---|---|")
    for label, args in [("standard flags", flags()),
                        ("5,000 CIDRs + 1,000 ports, --compact", lists(5000, 1000) + ["--compact"])]:
        fresh_ns(ns)
        run([MESHCAP, "istio-iptables", "--native-nftables"] + args + ["--network-namespace", ns],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = subprocess.run([MESHCAP, "istio-iptables", "--native-nftables"] + args
                             + ["--network-namespace", ns, "--log_output_level=debug"],
                             capture_output=True, text=True, check=True).stderr
        if "reconciliation not needed" not in log:
            sys.exit(f"the nft re-run did not find its state unchanged:\n{log[-2000:]}")
        spawns = next((l.split()[-3] for l in log.splitlines() if "processes spawned" in l), "?")
        cmds = {
            "nsenter --net (wrapper alone)": nsenter(ns, ["true"]),
            "bare nft -j list ruleset": nsenter(ns, ["nft", "-j", "list", "ruleset"]),
            "meshcap istio-iptables --native-nftables re-run": [MESHCAP, "istio-iptables", "--native-nftables"]
            + args + ["--network-namespace", ns],
            "meshcap check --native-nftables": [MESHCAP, "check", "--native-nftables"] + args
            + ["--network-namespace", ns],
        }
        if BASE:
            cmds["MESHCAP_BASE re-run"] = [BASE, "istio-iptables", "--native-nftables"] + args + [
                "--network-namespace", ns]
            cmds["MESHCAP_BASE check"] = [BASE, "check", "--native-nftables"] + args + ["--network-namespace", ns]
        res = interleaved(cmds, ROUNDS)
        # The re-run's own read back + compare (netlink dump, decode, drift), as it logs it.
        inner = []
        for _ in range(ROUNDS):
            log = subprocess.run([MESHCAP, "istio-iptables", "--native-nftables"] + args
                                 + ["--network-namespace", ns, "--log_output_level=debug"],
                                 capture_output=True, text=True, check=True).stderr
            inner += [int(l.split()[-2]) / 1e3 for l in log.splitlines() if "read back and compared in" in l]
        del_ns(ns)
        bare = res["bare nft -j list ruleset"]
        if inner:
            res["read back + compare inside the re-run (logged)"] = (statistics.median(inner), 0.0, min(inner))
        for k, (w, c, mn) in res.items():
            cpu = ms(c) if c else "—"
            report.append(f"| {label} | {k} | {ms(w)} | {ms(mn)} | {cpu} | {ratio(w, bare[0])} |")
        report.append(f"| {label} | processes spawned by the re-run | {spawns} | | | |")
        res_all[label] = res
    report.append("")
    return res_all


def section_render(report):
    sizes = [(0, 0), (10, 10), (100, 100), (1000, 500), (6000, 1000)]
    cmds = {}
    for c, p in sizes:
        name = "seed (standard flags)" if c == 0 else f"{c} CIDRs + {p} ports"
        cmds[name] = [MESHCAP, "render"] + lists(c, p)
    cmds["6000 CIDRs + 1000 ports --compact"] = [MESHCAP, "render", "--compact"] + lists(6000, 1000)
    cmds["6000 CIDRs + 1000 ports --native-nftables"] = [MESHCAP, "render", "--native-nftables"] + lists(6000, 1000)
    res = interleaved(cmds, ROUNDS)
    have_valgrind = subprocess.run(["which", "valgrind"], capture_output=True).returncode == 0
    instr = {k: instructions(argv) if have_valgrind else None for k, argv in cmds.items()}
    seed = "seed (standard flags)"
    report.append("### (b) render time vs list size (-x CIDRs, -d ports)\n")
    report.append("| render | instructions | ÷ seed | wall median ms | ÷ seed | CPU median ms | ÷ seed | extra instructions per list item |")
    report.append("|---|---|---|---|---|---|---|---|")
    for (k, (w, c, _)), size in zip(res.items(), sizes + [(6000, 1000), (6000, 1000)]):
        items = size[0] + size[1]
        i = instr[k]
        per = "" if not i or not items else f"{(i - instr[seed]) / items:.0f}"
        i_text = f"{i:,}" if i else "n/a"
        i_ratio = ratio(i, instr[seed]) if i else "n/a"
        report.append(f"| {k} | {i_text} | {i_ratio} | {ms(w)} | {ratio(w, res[seed][0])} | {ms(c)} | {ratio(c, res[seed][1])} | {per} |")
    report.append("")
    return res, instr


def install(ns, backend, compact, n_excluded):
    args = flags(x=cidrs(n_excluded)) + (["--compact"] if compact else [])
    if backend == "iptables":
        run([MESHCAP, "istio-iptables"] + args + ["--network-namespace", ns],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        tx = run([MESHCAP, "render", "--native-nftables"] + args, capture_output=True).stdout
        run(nsenter(ns, ["nft", "-f", "-"]), input=tx)


def section_connections(report):
    configs = [(b, c, n) for b in ("iptables", "nft") for c in (False, True) for n in (0, 5000)]
    samples = {cfg: [] for cfg in configs}
    ns = "mcbench-conn"
    for _ in range(CONN_REPEATS):
        for cfg in configs:
            fresh_ns(ns)
            install(ns, *cfg)
            out = run(nsenter(ns, [CONNBENCH, "15001", "198.51.100.2:80", str(CONN_COUNT), "5"]),
                      capture_output=True, text=True).stdout
            samples[cfg].append(float(out.strip()))
    del_ns(ns)
    report.append("### (c) per-connection setup cost through the capture\n")
    report.append(f"µs per TCP connection (connect + close through nat OUTPUT → REDIRECT), median of {CONN_REPEATS} "
                  f"fresh namespaces × 5 rounds × {CONN_COUNT} connections.\n")
    report.append("| backend | rules | no exclusions µs | 5,000 excluded CIDRs µs | ratio |")
    report.append("|---|---|---|---|---|")
    med = {cfg: statistics.median(v) for cfg, v in samples.items()}
    for b in ("iptables", "nft"):
        for c in (False, True):
            base, big = med[(b, c, 0)], med[(b, c, 5000)]
            kind = "--compact" if c else "Istio's"
            report.append(f"| {b} | {kind} | {base:.1f} | {big:.1f} | {ratio(big, base)} |")
    report.append("")
    return med


def section_memory(report):
    ns = "mcbench-rss"
    out = []
    for name, argv in [
        ("render, standard flags", [MESHCAP, "render"] + flags()),
        ("render, 6000 CIDRs + 1000 ports", [MESHCAP, "render"] + lists(6000, 1000)),
        ("render --native-nftables --compact, 6000 + 1000", [MESHCAP, "render", "--native-nftables", "--compact"]
         + lists(6000, 1000)),
    ]:
        out.append((name, peak_rss_kib(argv)))
    with tempfile.TemporaryDirectory() as tmp:
        for label, args in [("standard flags", flags()), ("6000 CIDRs + 1000 ports", lists(6000, 1000))]:
            payload = os.path.join(tmp, "payload.v4")
            with open(payload, "w") as f:
                run([MESHCAP, "render", "--family", "v4"] + args, stdout=f)
            # meshcap's own process: everything up to the restore (--dry-run stops there).
            fresh_ns(ns)
            out.append((f"apply, {label}: meshcap alone (--dry-run)",
                        peak_rss_kib([MESHCAP, "istio-iptables", "--dry-run"] + args + ["--network-namespace", ns])))
            # GNU time reports the largest of the process and its children: here the restore.
            fresh_ns(ns)
            out.append((f"apply, {label}: with its iptables-nft-restore child",
                        peak_rss_kib([MESHCAP, "istio-iptables"] + args + ["--network-namespace", ns])))
            fresh_ns(ns)
            out.append((f"bare iptables-nft-restore of the same payload ({label})",
                        peak_rss_kib(nsenter(ns, ["iptables-nft-restore", "--noflush", payload]))))
    del_ns(ns)
    report.append("### (d) peak RSS and binary size\n")
    report.append("| run | peak RSS KiB |")
    report.append("|---|---|")
    for name, kib in out:
        report.append(f"| {name} | {kib} |")
    report.append("")
    for path in [MESHCAP, STATIC]:
        if os.path.exists(path):
            size = os.path.getsize(path)
            report.append(f"binary `{os.path.relpath(path, ROOT)}`: {size:,} bytes ({size / 1048576:.2f} MiB)  ")
    report.append("")
    return out


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (the benchmark creates network namespaces)")
    for tool in ["ip", "nsenter", "iptables-nft-restore", "nft", "/usr/bin/time"]:
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            sys.exit(f"missing tool: {tool}")
    only = sys.argv[1:] or ["apply", "render", "connections", "memory", "nftread"]
    report = [f"## meshcap benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
              f"{ROUNDS} interleaved rounds, settle {SETTLE_MS} ms)\n"]
    results = {}
    try:
        if "apply" in only:
            results["apply"] = section_apply(report)
        if "render" in only:
            results["render"] = section_render(report)
        if "connections" in only:
            results["connections"] = section_connections(report)
        if "memory" in only:
            results["memory"] = section_memory(report)
        if "nftread" in only:
            results["nftread"] = section_nftread(report)
    finally:
        for ns in ["mcbench-apply", "mcbench-conn", "mcbench-rss", "mcbench-nftread"]:
            del_ns(ns)
    text = "\n".join(report)
    print(text)
    with open(os.environ.get("BENCH_OUT", os.path.join(BENCH, "results.md")), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
