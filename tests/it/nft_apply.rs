//! `meshcap --native-nftables` for real, in namespaces these tests create (never the machine's
//! own): the applied ruleset equals Istio's transaction loaded with `nft -f` directly, re-runs
//! change nothing (one process), drift is refused and repaired with --reconcile, cleanup
//! leaves foreign tables alone, TPROXY routing, IPv6-only pods, dry-run, configuration
//! switches, the nft checks, and a failing transaction that changes nothing.

use std::path::PathBuf;
use std::process::Output;

use crate::support::{NetNs, meshcap, netns_available};

const SIDECAR: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-g",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];
const TPROXY: &[&str] = &[
    "-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "*", "-d", "15090", "-c", "eth9",
    "-q", "9000",
];

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// A namespace with an IPv4 address on lo (IPv6 detection then says IPv4 only).
fn v4_ns(tag: &str) -> NetNs {
    let ns = NetNs::new(tag);
    ns.ip(&["addr", "add", "198.51.100.2/32", "dev", "lo"]);
    ns
}

/// A namespace with an IPv4 and an IPv6 address (IPv6 on with --dual-stack).
fn dual_ns(tag: &str) -> NetNs {
    let ns = v4_ns(tag);
    ns.ip(&["-6", "addr", "add", "fd00::2/128", "dev", "lo"]);
    ns
}

/// `nft list ruleset` in `ns`, counters' values removed.
fn ruleset(ns: &NetNs) -> String {
    let o = ns.run("nft", &["list", "ruleset"]);
    assert!(o.status.success(), "{}", show(&o));
    let mut out = String::new();
    for line in text(&o.stdout).lines() {
        let mut words: Vec<&str> = Vec::new();
        let mut skip = 0;
        for w in line.split_whitespace() {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if (w == "packets" || w == "bytes")
                && words
                    .last()
                    .is_some_and(|l| *l == "counter" || l.parse::<u64>().is_ok())
            {
                skip = 1;
                continue;
            }
            words.push(w);
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

/// meshcap ARGS EXTRA --native-nftables --network-namespace NS, with debug logs.
fn nft_apply(ns: &NetNs, args: &[&str], extra: &[&str]) -> Output {
    nft_apply_with_path(ns, args, extra, None)
}

fn nft_apply_with_path(ns: &NetNs, args: &[&str], extra: &[&str], path: Option<&str>) -> Output {
    let mut all: Vec<&str> = [&["istio-iptables"][..], args].concat();
    all.extend_from_slice(extra);
    all.extend_from_slice(&[
        "--native-nftables",
        "--network-namespace",
        &ns.name,
        "--log_output_level=default:debug",
    ]);
    let mut cmd = meshcap(&all);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    cmd.output().unwrap()
}

/// Istio's transaction (`meshcap render --native-nftables`) loaded with `nft -f` into a fresh
/// namespace: the reference ruleset.
fn reference(args: &[&str], ipv6: bool) -> String {
    let mut all = vec!["render", "--native-nftables"];
    all.extend_from_slice(args);
    if ipv6 {
        all.push("--ipv6");
    }
    let o = meshcap(&all).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let ns = NetNs::new("ref");
    let load = ns.run_with_stdin("nft", &["-f", "-"], &text(&o.stdout));
    assert!(load.status.success(), "{}", show(&load));
    ruleset(&ns)
}

/// The `N processes spawned` figure of a debug run.
fn spawns(o: &Output) -> usize {
    let err = text(&o.stderr);
    let line = err
        .lines()
        .find(|l| l.ends_with(" processes spawned"))
        .unwrap_or_else(|| panic!("no spawn count in {err}"));
    let n = line.trim_end_matches(" processes spawned");
    n.rsplit(|c: char| c.is_whitespace()).next().unwrap().parse().unwrap()
}

fn nft_ok(ns: &NetNs, args: &[&str]) {
    let o = ns.run("nft", args);
    assert!(o.status.success(), "nft {args:?}: {}", show(&o));
}

/// The handle of the first rule of `chain` whose listing contains `needle`.
fn handle(ns: &NetNs, table: &str, chain: &str, needle: &str) -> String {
    let o = ns.run("nft", &["-a", "list", "chain", "inet", table, chain]);
    let listing = text(&o.stdout);
    let line = listing
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no '{needle}' in {listing}"));
    line.rsplit("# handle ").next().unwrap().trim().to_string()
}

#[test]
fn apply_equals_istios_transaction_and_a_rerun_costs_one_process() {
    if !netns_available() {
        return;
    }
    for args in [SIDECAR, TPROXY] {
        let ns = v4_ns("nftapply");
        let o = nft_apply(&ns, args, &[]);
        assert!(o.status.success(), "{}", show(&o));
        assert_eq!(spawns(&o), 2, "nft --version and nft -f -: {}", show(&o));
        assert!(text(&o.stderr).contains("nftables rules programmed:\nadd table inet istio-proxy-nat\n"));
        let want = reference(args, false);
        assert_eq!(ruleset(&ns), want, "{args:?}");
        assert!(want.contains("table inet istio-proxy-nat"), "{want}");

        let o = nft_apply(&ns, args, &[]);
        assert!(o.status.success(), "re-run: {}", show(&o));
        assert!(text(&o.stderr).contains("reconciliation not needed"), "{}", show(&o));
        assert_eq!(spawns(&o), 1, "only the listing: {}", show(&o));
        assert_eq!(ruleset(&ns), want, "re-run changed the rules");
    }
}

#[test]
fn drift_is_refused_and_reconcile_repairs_it_leaving_foreign_tables() {
    if !netns_available() {
        return;
    }
    let ns = v4_ns("nftdrift");
    nft_ok(&ns, &["add", "table", "inet", "foreign"]);
    nft_ok(
        &ns,
        &["add chain inet foreign c { type filter hook input priority 0 ; }"],
    );
    nft_ok(&ns, &["add rule inet foreign c tcp dport 22 accept"]);
    let o = nft_apply(&ns, SIDECAR, &[]);
    assert!(o.status.success(), "{}", show(&o));
    // Someone deletes one of meshcap's rules, adds one of their own, a chain and a set.
    let h = handle(&ns, "istio-proxy-nat", "istio-output", "ip daddr 127.0.0.1 counter");
    nft_ok(
        &ns,
        &[
            "delete",
            "rule",
            "inet",
            "istio-proxy-nat",
            "istio-output",
            "handle",
            &h,
        ],
    );
    nft_ok(
        &ns,
        &["insert rule inet istio-proxy-nat istio-output ip daddr 10.0.0.0/8 return"],
    );
    nft_ok(&ns, &["add chain inet istio-proxy-nat stale"]);
    nft_ok(&ns, &["add set inet istio-proxy-nat extra { type ipv4_addr ; }"]);
    let drifted = ruleset(&ns);

    let o = nft_apply(&ns, SIDECAR, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains("--reconcile") && err.contains(
            "nftables: 1 missing, 1 unexpected, 0 misordered, 1 chain(s) and 0 table(s) differ, 1 unexpected object(s)"
        ),
        "{err}"
    );
    for line in [
        "+ add rule inet istio-proxy-nat istio-output ip daddr 127.0.0.1/32 counter return  # missing, planned #",
        "- add rule inet istio-proxy-nat istio-output ip daddr 10.0.0.0/8 return  # unexpected, live #1",
        "- add chain inet istio-proxy-nat stale  # unexpected chain",
        "- add set inet istio-proxy-nat extra  # unexpected set",
    ] {
        assert!(err.contains(line), "{line}\nin\n{err}");
    }
    assert_eq!(spawns(&o), 1);
    assert_eq!(ruleset(&ns), drifted, "state kept");

    let o = nft_apply(&ns, SIDECAR, &["--reconcile"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(spawns(&o), 2, "listing and transaction: {}", show(&o));
    let after = ruleset(&ns);
    let foreign = "table inet foreign {\nchain c {\ntype filter hook input priority filter; policy accept;\ntcp dport 22 accept\n}\n}\n";
    assert!(after.starts_with(foreign), "the foreign table is untouched:\n{after}");
    assert_eq!(after[foreign.len()..], reference(SIDECAR, false), "repaired");

    // Reordering alone is drift too.
    let h = handle(&ns, "istio-proxy-nat", "istio-output", "jump istio-redirect");
    nft_ok(
        &ns,
        &[
            "delete",
            "rule",
            "inet",
            "istio-proxy-nat",
            "istio-output",
            "handle",
            &h,
        ],
    );
    nft_ok(
        &ns,
        &["insert rule inet istio-proxy-nat istio-output counter jump istio-redirect"],
    );
    let o = nft_apply(&ns, SIDECAR, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("0 missing, 0 unexpected, 1 misordered"),
        "{}",
        show(&o)
    );
}

#[test]
fn switching_the_configuration_needs_reconcile_and_leaves_no_stale_table() {
    if !netns_available() {
        return;
    }
    let ns = v4_ns("nftswitch");
    let o = nft_apply(&ns, SIDECAR, &["--drop-invalid"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(ruleset(&ns).contains("table inet istio-proxy-mangle"));

    let o = nft_apply(&ns, SIDECAR, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("- add table inet istio-proxy-mangle  # unexpected table"),
        "{}",
        show(&o)
    );
    assert!(
        ruleset(&ns).contains("table inet istio-proxy-mangle"),
        "nothing changed"
    );

    let o = nft_apply(&ns, SIDECAR, &["--reconcile"]);
    assert!(o.status.success(), "{}", show(&o));
    let now = ruleset(&ns);
    assert!(!now.contains("istio-proxy-mangle"), "stale table removed:\n{now}");
    assert_eq!(now, reference(SIDECAR, false));

    // And to a configuration using every table, and back.
    for (args, extra) in [
        (TPROXY, &["--drop-invalid", "--reconcile"][..]),
        (SIDECAR, &["--reconcile"]),
    ] {
        let o = nft_apply(&ns, args, extra);
        assert!(o.status.success(), "{}", show(&o));
        let mut reference_args = args.to_vec();
        reference_args.extend(extra.iter().filter(|a| **a != "--reconcile"));
        assert_eq!(ruleset(&ns), reference(&reference_args, false), "{args:?} {extra:?}");
    }
}

#[test]
fn cleanup_deletes_meshcaps_tables_and_leaves_the_others() {
    if !netns_available() {
        return;
    }
    for cleanup_cmd in [false, true] {
        let ns = dual_ns("nftclean");
        nft_ok(&ns, &["add", "table", "inet", "foreign"]);
        nft_ok(&ns, &["add", "table", "ip", "istio-proxy-nat"]);
        nft_ok(
            &ns,
            &["add chain ip istio-proxy-nat c { type nat hook output priority 0 ; }"],
        );
        nft_ok(&ns, &["add rule ip istio-proxy-nat c udp dport 53 return"]);
        let o = ns.run(
            "iptables-nft",
            &["-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "RETURN"],
        );
        assert!(o.status.success(), "{}", show(&o));
        let before = ruleset(&ns);
        let o = nft_apply(&ns, TPROXY, &["--dual-stack"]);
        assert!(o.status.success(), "{}", show(&o));
        assert!(ruleset(&ns).contains("table inet istio-proxy-mangle"));

        let o = if cleanup_cmd {
            let mut args = vec!["istio-clean-iptables"];
            args.extend_from_slice(TPROXY);
            args.extend_from_slice(&["--native-nftables", "--network-namespace", &ns.name]);
            meshcap(&args).arg("--log_output_level=default:debug").output().unwrap()
        } else {
            nft_apply(&ns, TPROXY, &["--cleanup-only"])
        };
        assert!(o.status.success(), "{}", show(&o));
        assert_eq!(spawns(&o), 2, "{}", show(&o));
        assert_eq!(
            ruleset(&ns),
            before,
            "cleanup_cmd={cleanup_cmd}: only the foreign tables remain"
        );
        let rules = text(&ns.run("ip", &["rule"]).stdout) + &text(&ns.run("ip", &["-6", "rule"]).stdout);
        assert!(!rules.contains("lookup 133"), "{rules}");
        let lo = text(&ns.run("ip", &["-6", "addr", "show", "dev", "lo"]).stdout);
        assert!(!lo.contains("::6/128"), "{lo}");

        // Nothing of meshcap's left: no nft process at all.
        let o = nft_apply(&ns, TPROXY, &["--cleanup-only"]);
        assert!(o.status.success(), "{}", show(&o));
        assert_eq!(spawns(&o), 0, "{}", show(&o));
        assert_eq!(ruleset(&ns), before);
    }
}

#[test]
fn tproxy_routes_without_duplicates_and_gone_after_cleanup() {
    if !netns_available() {
        return;
    }
    let ns = dual_ns("nfttproxy");
    for _ in 0..3 {
        let o = nft_apply(&ns, TPROXY, &["--dual-stack"]);
        assert!(o.status.success(), "{}", show(&o));
    }
    for family in ["-4", "-6"] {
        let rules = text(&ns.run("ip", &[family, "rule"]).stdout);
        assert_eq!(rules.matches("fwmark 0x539 lookup 133").count(), 1, "{family}: {rules}");
        let routes = text(&ns.run("ip", &[family, "route", "show", "table", "133"]).stdout);
        assert!(routes.starts_with("local default dev lo"), "{family}: {routes}");
        assert_eq!(routes.lines().count(), 1, "{routes}");
    }
    let lo = text(&ns.run("ip", &["-6", "addr", "show", "dev", "lo"]).stdout);
    assert!(lo.contains("inet6 ::6/128"), "{lo}");
    let rules = ruleset(&ns);
    assert!(rules.contains("tproxy ip6 to :15006"), "{rules}");
    assert_eq!(rules, reference(TPROXY, true));

    let o = nft_apply(&ns, TPROXY, &["--cleanup-only"]);
    assert!(o.status.success(), "{}", show(&o));
    for family in ["-4", "-6"] {
        let rules = text(&ns.run("ip", &[family, "rule"]).stdout);
        assert!(!rules.contains("lookup 133"), "{rules}");
        let routes = text(&ns.run("ip", &[family, "route", "show", "table", "133"]).stdout);
        assert_eq!(routes, "", "{family}");
    }
    assert_eq!(ruleset(&ns), "");
}

#[test]
fn an_ipv6_only_namespace_gets_the_ipv6_rules() {
    if !netns_available() {
        return;
    }
    let ns = NetNs::new("nftv6only");
    ns.ip(&["-6", "addr", "add", "fd00::2/128", "dev", "lo"]);
    let o = nft_apply(&ns, SIDECAR, &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("ENABLE_INBOUND_IPV6=true"), "{}", show(&o));
    let got = ruleset(&ns);
    assert_eq!(got, reference(SIDECAR, true));
    assert!(
        got.contains("oifname \"lo\" ip6 saddr ::6 counter return") && got.contains("ip6 daddr ::1 counter return"),
        "{got}"
    );
    let lo = text(&ns.run("ip", &["-6", "addr", "show", "dev", "lo"]).stdout);
    assert!(lo.contains("inet6 ::6/128"), "{lo}");
    let o = nft_apply(&ns, SIDECAR, &[]);
    assert!(o.status.success() && spawns(&o) == 1, "{}", show(&o));
}

#[test]
fn dry_run_prints_the_transaction_and_changes_nothing() {
    if !netns_available() {
        return;
    }
    let ns = dual_ns("nftdry");
    let before_rules = text(&ns.run("ip", &["rule"]).stdout);
    let before_addr = text(&ns.run("ip", &["addr"]).stdout);
    for extra in [
        &["--dry-run"][..],
        &["--dry-run", "--dual-stack", "--reconcile"],
        &["--dry-run", "--cleanup-only"],
    ] {
        let o = nft_apply(&ns, TPROXY, extra);
        assert!(o.status.success(), "{}", show(&o));
        let err = text(&o.stderr);
        for want in [
            "running nftables in dry-run mode, no rule changes will be made",
            "skipping configuring routes due to dry run mode",
            "Istio nftables environment:",
            &format!("nft -f - (in network namespace /var/run/netns/{})", ns.name),
            "Running nft with the following input:\nadd table inet istio-proxy-nat\n",
        ] {
            assert!(err.contains(want), "{extra:?}: {want}\nin\n{err}");
        }
        if extra.contains(&"--cleanup-only") {
            assert!(err.contains("delete table inet istio-proxy-raw"), "{err}");
        } else {
            assert!(err.contains("tproxy ip to :15006"), "{err}");
        }
        assert_eq!(
            extra.contains(&"--dual-stack"),
            err.contains("tproxy ip6 to :15006"),
            "{err}"
        );
    }
    assert_eq!(ruleset(&ns), "", "no table was created");
    assert_eq!(text(&ns.run("ip", &["rule"]).stdout), before_rules);
    assert_eq!(text(&ns.run("ip", &["addr"]).stdout), before_addr);

    // Over existing rules too.
    let o = nft_apply(&ns, SIDECAR, &[]);
    assert!(o.status.success(), "{}", show(&o));
    let applied = ruleset(&ns);
    for extra in [&["--dry-run", "--reconcile"][..], &["--dry-run", "--cleanup-only"]] {
        let o = nft_apply(&ns, TPROXY, extra);
        assert!(o.status.success(), "{}", show(&o));
        assert_eq!(ruleset(&ns), applied, "{extra:?}");
    }
}

/// A directory with an `nft` stand-in first on PATH: `--version` prints `version`; `-f -`
/// appends a line nft rejects to the transaction and hands it to the real nft (so the kernel
/// sees a failing transaction); anything else goes to the real nft.
fn nft_wrapper(tag: &str, version: &str, break_transactions: bool) -> (PathBuf, String) {
    let real = meshcap::sys::exec::find_in_path("nft", std::env::var_os("PATH").as_deref()).expect("nft in PATH");
    let real = real.display();
    let dir = std::env::temp_dir().join(format!("meshcap-nftw-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let transaction = if break_transactions {
        format!(
            "if [ \"$1\" = \"-f\" ]; then\n  {{ cat; echo 'add rule inet istio-proxy-nat no-such-chain counter'; }} | {real} -f -\n  exit $?\nfi\n"
        )
    } else {
        String::new()
    };
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then echo 'nftables v{version} (test)'; exit 0; fi\n{transaction}exec {real} \"$@\"\n"
    );
    let p = dir.join("nft");
    std::fs::write(&p, script).unwrap();
    let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(&p, mode).unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    (dir, path)
}

#[test]
fn a_failing_transaction_changes_nothing() {
    if !netns_available() {
        return;
    }
    let (dir, path) = nft_wrapper("fail", "1.0.6", true);
    let ns = dual_ns("nftfail");
    let o = nft_apply(&ns, SIDECAR, &[]);
    assert!(o.status.success(), "{}", show(&o));
    let before = ruleset(&ns);
    let before_rules = text(&ns.run("ip", &["rule"]).stdout);

    let o = nft_apply_with_path(&ns, TPROXY, &["--reconcile", "--dual-stack"], Some(&path));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains("nftables run failed: nft -f - (in network namespace") && err.contains("no-such-chain"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(ruleset(&ns), before, "the previous state is intact");
    assert_eq!(
        text(&ns.run("ip", &["rule"]).stdout),
        before_rules,
        "no routes after a failure"
    );

    // In a fresh namespace: nothing at all.
    let fresh = v4_ns("nftfail2");
    let o = nft_apply_with_path(&fresh, SIDECAR, &[], Some(&path));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(ruleset(&fresh), "");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_or_old_nft_is_named_and_nothing_is_applied() {
    if !netns_available() {
        return;
    }
    let ns = v4_ns("nftcheck");
    let empty = std::env::temp_dir().join(format!("meshcap-nonft-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let o = nft_apply_with_path(&ns, SIDECAR, &[], Some(empty.to_str().unwrap()));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("meshcap: --native-nftables needs the nft binary, but 'nft' is not in PATH"),
        "{}",
        show(&o)
    );
    let _ = std::fs::remove_dir_all(&empty);

    let (dir, path) = nft_wrapper("old", "1.0.0", false);
    let o = nft_apply_with_path(&ns, SIDECAR, &[], Some(&path));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("nft version must be v1.0.1 or later (got 'nftables v1.0.0 (test)')"),
        "{}",
        show(&o)
    );
    assert_eq!(ruleset(&ns), "", "nothing applied");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_namespace_by_pid_and_concurrent_runs() {
    if !netns_available() {
        return;
    }
    let want = reference(SIDECAR, false);
    let by_pid = v4_ns("nftpid");
    let mut sleeper = by_pid.cmd("sleep", &["30"]).spawn().unwrap();
    let proc_path = format!("/proc/{}/ns/net", sleeper.id());
    // `ip netns exec` enters the namespace before exec'ing sleep: until then the pid's
    // namespace is this process's own. Wait (bounded) until it is the test namespace, and
    // never run meshcap on the pid before.
    let inode = |p: &str| {
        std::fs::metadata(p)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
    };
    let want_inode = inode(by_pid.path().to_str().unwrap());
    let entered = (0..200).any(|_| {
        let ok = want_inode.is_some() && inode(&proc_path) == want_inode;
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        ok
    });
    if !entered {
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        panic!("the sleeper never entered {}", by_pid.name);
    }
    let mut args = [&["istio-iptables"][..], SIDECAR].concat();
    args.extend_from_slice(&["--native-nftables", "--network-namespace", &proc_path]);
    let o = meshcap(&args).output().unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(ruleset(&by_pid), want);

    // Concurrent runs in one namespace take turns (the shared namespace lock).
    let ns = v4_ns("nftconc");
    let mut args = [&["istio-iptables"][..], SIDECAR].concat();
    args.extend_from_slice(&["--native-nftables", "--network-namespace", &ns.name]);
    let children: Vec<_> = (0..6)
        .map(|_| {
            meshcap(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
    }
    assert_eq!(ruleset(&ns), want);
}

/// The `table inet istio-proxy-*` blocks of a ruleset listing.
fn meshcap_tables(listing: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in listing.lines() {
        if line.starts_with("table ") {
            inside = line.starts_with("table inet istio-proxy-");
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn switching_from_the_iptables_backend_needs_reconcile_and_removes_its_rules() {
    if !netns_available() {
        return;
    }
    let ns = v4_ns("nftswitchbk");
    let mut args = [&["istio-iptables"][..], SIDECAR].concat();
    args.extend_from_slice(&["--network-namespace", &ns.name, "--force-iptables-binary", "nft"]);
    let o = meshcap(&args).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let save = |ns: &NetNs| text(&ns.run("iptables-nft-save", &[]).stdout);
    assert!(save(&ns).contains("ISTIO_OUTPUT"));

    let o = nft_apply(&ns, SIDECAR, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("also exist in the iptables-nft tables (IPv4): nat/ISTIO_INBOUND"),
        "{}",
        show(&o)
    );
    assert!(!ruleset(&ns).contains("istio-proxy"), "nothing applied");

    let o = nft_apply(&ns, SIDECAR, &["--reconcile"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        !save(&ns).contains("ISTIO"),
        "the iptables rules are gone: {}",
        save(&ns)
    );
    assert_eq!(meshcap_tables(&ruleset(&ns)), reference(SIDECAR, false));
    let o = nft_apply(&ns, SIDECAR, &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("reconciliation not needed"), "{}", show(&o));
}

#[test]
fn proxy_owners_given_by_name_are_not_drift() {
    if !netns_available() {
        return;
    }
    // nft resolves `skuid root` and lists it as `meta skuid 0`; the comparison resolves too.
    let ns = v4_ns("nftnames");
    let args = [
        "-p", "15001", "-z", "15006", "-u", "root", "-g", "root", "-b", "*", "-i", "*",
    ];
    let o = nft_apply(&ns, &args, &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(ruleset(&ns).contains("meta skuid 0 counter return"), "{}", ruleset(&ns));
    let o = nft_apply(&ns, &args, &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("reconciliation not needed"), "{}", show(&o));
    assert_eq!(spawns(&o), 1);
}
