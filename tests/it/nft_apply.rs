//! `meshcap --native-nftables` for real, in namespaces these tests create (never the machine's
//! own): the applied ruleset equals Istio's transaction loaded with `nft -f` directly, re-runs
//! change nothing (one process), drift is refused and repaired with --reconcile, cleanup
//! leaves foreign tables alone, TPROXY routing, IPv6-only pods, dry-run, configuration
//! switches, writing with no `nft` binary at all (one execve: meshcap's own), and a batch the
//! kernel refuses that changes nothing.

use std::sync::LazyLock;

use crate::support::netfilter::nft_ruleset as ruleset;
use crate::support::{Meshcap, Netns, Run, TPROXY, TempDir, needs_netns};

/// The standard sidecar flags with the proxy's group too (`-g 1337`: the owner rules then
/// match the gid as well).
static SIDECAR: LazyLock<Vec<&str>> = LazyLock::new(|| [crate::support::SIDECAR, &["-g", "1337"]].concat());

/// `meshcap ARGS EXTRA --native-nftables --network-namespace NS` with debug logs (the spawn
/// count).
fn nft_apply_cmd(ns: &Netns, args: &[&str], extra: &[&str]) -> Meshcap {
    Meshcap::new()
        .args(command_for(args))
        .args(args)
        .args(extra)
        .arg("--native-nftables")
        .netns(ns)
        .arg("--log_output_level=default:debug")
}

fn nft_apply(ns: &Netns, args: &[&str], extra: &[&str]) -> Run {
    nft_apply_cmd(ns, args, extra).run()
}

/// Istio's transaction (`meshcap render --native-nftables`) loaded with `nft -f` into a fresh
/// namespace: the reference ruleset.
fn reference(args: &[&str], ipv6: bool) -> String {
    let ipv6: &[&str] = if ipv6 { &["--ipv6"] } else { &[] };
    let tx = Meshcap::new()
        .args(["render", "--native-nftables"])
        .args(args)
        .args(ipv6)
        .stdout();
    let ns = Netns::new("ref");
    let load = ns.run_with_stdin("nft", &["-f", "-"], &tx);
    assert!(load.status.success(), "{load:?}");
    ruleset(&ns)
}

fn nft_ok(ns: &Netns, args: &[&str]) {
    let o = ns.run("nft", args);
    assert!(o.status.success(), "nft {args:?}: {o:?}");
}

/// The handle of the first rule of `chain` whose listing contains `needle`.
fn handle(ns: &Netns, table: &str, chain: &str, needle: &str) -> String {
    let listing = ns.stdout("nft", &["-a", "list", "chain", "inet", table, chain]);
    let line = listing
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no '{needle}' in {listing}"));
    line.rsplit("# handle ").next().unwrap().trim().to_string()
}

#[test]
fn apply_equals_istios_transaction_and_a_rerun_costs_no_process() {
    needs_netns!();
    for args in [&SIDECAR, TPROXY] {
        let ns = Netns::ipv4("nftapply");
        let o = nft_apply(&ns, args, &[]);
        o.success()
            .stderr_contains("nftables rules programmed:\nadd table inet istio-proxy-nat\n");
        assert_eq!(o.spawns(), 0, "one netlink batch, no process:\n{o}");
        let want = reference(args, false);
        assert_eq!(ruleset(&ns), want, "{args:?}");
        assert!(want.contains("table inet istio-proxy-nat"), "{want}");

        let o = nft_apply(&ns, args, &[]);
        o.success().stderr_contains("reconciliation not needed");
        assert_eq!(o.spawns(), 0, "the state is read over netlink:\n{o}");
        assert_eq!(ruleset(&ns), want, "re-run changed the rules");
    }
}

#[test]
fn drift_is_refused_and_reconcile_repairs_it_leaving_foreign_tables() {
    needs_netns!();
    let ns = Netns::ipv4("nftdrift");
    nft_ok(&ns, &["add", "table", "inet", "foreign"]);
    nft_ok(
        &ns,
        &["add chain inet foreign c { type filter hook input priority 0 ; }"],
    );
    nft_ok(&ns, &["add rule inet foreign c tcp dport 22 accept"]);
    nft_apply(&ns, &SIDECAR, &[]).success();
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

    let o = nft_apply(&ns, &SIDECAR, &[]);
    o.expect_exit(1).stderr_contains("--reconcile").stderr_contains(
        "nftables: 1 missing, 1 unexpected, 0 misordered, 1 chain(s) and 0 table(s) differ, 1 unexpected object(s)",
    );
    for line in [
        "+ add rule inet istio-proxy-nat istio-output ip daddr 127.0.0.1/32 counter return  # missing, planned #",
        "- add rule inet istio-proxy-nat istio-output ip daddr 10.0.0.0/8 return  # unexpected, live #1",
        "- add chain inet istio-proxy-nat stale  # unexpected chain",
        "- add set inet istio-proxy-nat extra  # unexpected set",
    ] {
        o.stderr_contains(line);
    }
    assert_eq!(o.spawns(), 0, "drift is read over netlink:\n{o}");
    assert_eq!(ruleset(&ns), drifted, "state kept");

    let o = nft_apply(&ns, &SIDECAR, &["--reconcile"]);
    assert_eq!(o.success().spawns(), 0, "the read and the batch are no process:\n{o}");
    let after = ruleset(&ns);
    let foreign = "table inet foreign {\nchain c {\ntype filter hook input priority filter; policy accept;\ntcp dport 22 accept\n}\n}\n";
    assert!(after.starts_with(foreign), "the foreign table is untouched:\n{after}");
    assert_eq!(after[foreign.len()..], reference(&SIDECAR, false), "repaired");

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
    nft_apply(&ns, &SIDECAR, &[])
        .expect_exit(1)
        .stderr_contains("0 missing, 0 unexpected, 1 misordered");
}

#[test]
fn switching_the_configuration_needs_reconcile_and_leaves_no_stale_table() {
    needs_netns!();
    let ns = Netns::ipv4("nftswitch");
    nft_apply(&ns, &SIDECAR, &["--drop-invalid"]).success();
    assert!(ruleset(&ns).contains("table inet istio-proxy-mangle"));

    nft_apply(&ns, &SIDECAR, &[])
        .expect_exit(1)
        .stderr_contains("- add table inet istio-proxy-mangle  # unexpected table");
    assert!(
        ruleset(&ns).contains("table inet istio-proxy-mangle"),
        "nothing changed"
    );

    nft_apply(&ns, &SIDECAR, &["--reconcile"]).success();
    let now = ruleset(&ns);
    assert!(!now.contains("istio-proxy-mangle"), "stale table removed:\n{now}");
    assert_eq!(now, reference(&SIDECAR, false));

    // And to a configuration using every table, and back.
    for (args, extra) in [
        (TPROXY, &["--drop-invalid", "--reconcile"][..]),
        (&SIDECAR, &["--reconcile"]),
    ] {
        nft_apply(&ns, args, extra).success();
        let mut reference_args = args.to_vec();
        reference_args.extend(extra.iter().filter(|a| **a != "--reconcile"));
        assert_eq!(ruleset(&ns), reference(&reference_args, false), "{args:?} {extra:?}");
    }
}

#[test]
fn cleanup_deletes_meshcaps_tables_and_leaves_the_others() {
    needs_netns!();
    for cleanup_cmd in [false, true] {
        let ns = Netns::dual("nftclean");
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
        assert!(o.status.success(), "{o:?}");
        let before = ruleset(&ns);
        nft_apply(&ns, TPROXY, &["--dual-stack"]).success();
        assert!(ruleset(&ns).contains("table inet istio-proxy-mangle"));

        let o = if cleanup_cmd {
            nft_apply(&ns, &[&["istio-clean-iptables"], TPROXY].concat(), &[])
        } else {
            nft_apply(&ns, TPROXY, &["--cleanup-only"])
        };
        assert_eq!(o.success().spawns(), 0, "{o}");
        assert_eq!(
            ruleset(&ns),
            before,
            "cleanup_cmd={cleanup_cmd}: only the foreign tables remain"
        );
        let rules = ns.stdout("ip", &["rule"]) + &ns.stdout("ip", &["-6", "rule"]);
        assert!(!rules.contains("lookup 133"), "{rules}");
        let lo = ns.stdout("ip", &["-6", "addr", "show", "dev", "lo"]);
        assert!(!lo.contains("::6/128"), "{lo}");

        // Nothing of meshcap's left: no nft process at all.
        let o = nft_apply(&ns, TPROXY, &["--cleanup-only"]);
        assert_eq!(o.success().spawns(), 0, "{o}");
        assert_eq!(ruleset(&ns), before);
    }
}

#[test]
fn tproxy_routes_without_duplicates_and_gone_after_cleanup() {
    needs_netns!();
    let ns = Netns::dual("nfttproxy");
    for _ in 0..3 {
        nft_apply(&ns, TPROXY, &["--dual-stack"]).success();
    }
    for family in ["-4", "-6"] {
        let rules = ns.stdout("ip", &[family, "rule"]);
        assert_eq!(rules.matches("fwmark 0x539 lookup 133").count(), 1, "{family}: {rules}");
        let routes = ns.stdout("ip", &[family, "route", "show", "table", "133"]);
        assert!(routes.starts_with("local default dev lo"), "{family}: {routes}");
        assert_eq!(routes.lines().count(), 1, "{routes}");
    }
    let lo = ns.stdout("ip", &["-6", "addr", "show", "dev", "lo"]);
    assert!(lo.contains("inet6 ::6/128"), "{lo}");
    let rules = ruleset(&ns);
    assert!(rules.contains("tproxy ip6 to :15006"), "{rules}");
    assert_eq!(rules, reference(TPROXY, true));

    nft_apply(&ns, TPROXY, &["--cleanup-only"]).success();
    for family in ["-4", "-6"] {
        let rules = ns.stdout("ip", &[family, "rule"]);
        assert!(!rules.contains("lookup 133"), "{rules}");
        let routes = ns.stdout("ip", &[family, "route", "show", "table", "133"]);
        assert_eq!(routes, "", "{family}");
    }
    assert_eq!(ruleset(&ns), "");
}

#[test]
fn an_ipv6_only_namespace_gets_the_ipv6_rules() {
    needs_netns!();
    let ns = Netns::ipv6("nftv6only");
    nft_apply(&ns, &SIDECAR, &[])
        .success()
        .stderr_contains("ENABLE_INBOUND_IPV6=true");
    let got = ruleset(&ns);
    assert_eq!(got, reference(&SIDECAR, true));
    assert!(
        got.contains("oifname \"lo\" ip6 saddr ::6 counter return") && got.contains("ip6 daddr ::1 counter return"),
        "{got}"
    );
    let lo = ns.stdout("ip", &["-6", "addr", "show", "dev", "lo"]);
    assert!(lo.contains("inet6 ::6/128"), "{lo}");
    let o = nft_apply(&ns, &SIDECAR, &[]);
    assert_eq!(o.success().spawns(), 0, "{o}");
}

#[test]
fn dry_run_prints_the_transaction_and_changes_nothing() {
    needs_netns!();
    let ns = Netns::dual("nftdry");
    let before_rules = ns.stdout("ip", &["rule"]);
    let before_addr = ns.stdout("ip", &["addr"]);
    for extra in [
        &["--dry-run"][..],
        &["--dry-run", "--dual-stack", "--reconcile"],
        &["--dry-run", "--cleanup-only"],
    ] {
        let o = nft_apply(&ns, TPROXY, extra);
        o.success();
        for want in [
            "running nftables in dry-run mode, no rule changes will be made",
            "skipping configuring routes due to dry run mode",
            "Istio nftables environment:",
        ] {
            o.stderr_contains(want);
        }
        if extra.contains(&"--cleanup-only") {
            // A clean namespace: nothing to delete, so no transaction.
            o.stderr_contains("No nftables tables of meshcap's exist, nothing to clean up")
                .stderr_lacks("Running nft with the following input");
        } else {
            o.stderr_contains(
                "dry run: nftables (netlink): a real run would apply the rules (clean state) in one nf_tables batch",
            )
            .stderr_contains(&format!("nft -f - (in network namespace /var/run/netns/{})", ns.name))
            .stderr_contains("Running nft with the following input:\nadd table inet istio-proxy-nat\n")
            .stderr_contains("tproxy ip to :15006");
        }
        assert_eq!(
            extra.contains(&"--dual-stack"),
            o.stderr.contains("tproxy ip6 to :15006"),
            "{o}"
        );
    }
    assert_eq!(ruleset(&ns), "", "no table was created");
    assert_eq!(ns.stdout("ip", &["rule"]), before_rules);
    assert_eq!(ns.stdout("ip", &["addr"]), before_addr);

    // Over existing rules too.
    nft_apply(&ns, &SIDECAR, &[]).success();
    let applied = ruleset(&ns);
    for extra in [&["--dry-run", "--reconcile"][..], &["--dry-run", "--cleanup-only"]] {
        nft_apply(&ns, TPROXY, extra).success();
        assert_eq!(ruleset(&ns), applied, "{extra:?}");
    }
}

/// An `nft -i` session in `ns` that created `table` with the `owner` flag and keeps it open:
/// while it lives, the kernel refuses any other change to that table (`EPERM`).
struct OwnedTable {
    child: std::process::Child,
}

impl OwnedTable {
    fn new(ns: &Netns, table: &str) -> OwnedTable {
        use std::io::Write;
        let mut child = ns
            .cmd("nft", &["-i"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nft -i");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "add table inet {table} {{ flags owner ; }}").unwrap();
        child.stdin = Some(stdin);
        // Owned from here: dropped (killed and reaped) also when the wait below fails.
        let owned = OwnedTable { child };
        // Wait (bounded) until the table is there.
        for _ in 0..100 {
            if ns.stdout("nft", &["list", "tables"]).contains(table) {
                return owned;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("nft -i did not create {table}");
    }
}

impl Drop for OwnedTable {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_batch_the_kernel_refuses_changes_nothing_and_names_the_operation() {
    needs_netns!();
    let ns = Netns::dual("nftfail");
    nft_apply(&ns, TPROXY, &["--dual-stack"]).success();
    let before_rules = ns.stdout("ip", &["rule"]);
    // Another program owns a table of meshcap's name: the clean-up batch deletes meshcap's nat
    // and mangle tables first, then must touch that one, and the kernel refuses the whole
    // batch. (The clean-up reads no listing: nft 1.0.6 cannot write an owned table as JSON.)
    let owned = OwnedTable::new(&ns, "istio-proxy-raw");
    let before = ruleset(&ns);
    assert!(before.contains("table inet istio-proxy-mangle"), "{before}");
    nft_apply_cmd(&ns, TPROXY, &["--cleanup-only"])
        .run()
        .expect_exit(1)
        .stderr_contains(
            "meshcap: the kernel refused the nftables transaction, nothing was changed: \
             'add table inet istio-proxy-raw': Operation not permitted (os error 1)",
        )
        .stderr_contains("0 processes spawned");
    assert_eq!(ruleset(&ns), before, "the previous state is intact");
    assert_eq!(
        ns.stdout("ip", &["rule"]),
        before_rules,
        "the routes stay with the rules"
    );
    drop(owned);
    nft_apply(&ns, TPROXY, &["--cleanup-only"]).success();
    assert_eq!(ruleset(&ns), "", "cleaned up once the owner is gone");
}

/// `strace` recording every execve and thread of a run into `log`.
fn strace(log: &std::path::Path) -> Vec<std::ffi::OsString> {
    let mut argv: Vec<std::ffi::OsString> = ["strace", "-f", "-qq", "-e", "trace=execve,clone,clone3", "-o"]
        .map(Into::into)
        .into();
    argv.push(log.into());
    argv
}

#[test]
fn no_nft_binary_is_needed_to_apply_or_clean_up() {
    needs_netns!();
    // `nft` on PATH is /bin/false: running it would fail the run.
    let bin = TempDir::new("nonft");
    bin.link("nft", "false");
    let path = bin.path_first();
    let trace = TempDir::new("strace");
    for (i, args) in [&SIDECAR[..], TPROXY].into_iter().enumerate() {
        let ns = Netns::dual("nftnobin");
        let log = trace.path().join(format!("apply-{i}"));
        nft_apply_cmd(&ns, args, &["--dual-stack"])
            .env("PATH", &path)
            .launcher(strace(&log))
            .run()
            .success()
            .stderr_contains("nftables rules programmed:")
            .stderr_contains("0 processes spawned");
        assert_eq!(ruleset(&ns), reference(args, true), "{args:?}");
        let clean = trace.path().join(format!("cleanup-{i}"));
        nft_apply_cmd(&ns, args, &["--cleanup-only"])
            .env("PATH", &path)
            .launcher(strace(&clean))
            .run()
            .success()
            .stderr_contains("0 processes spawned");
        assert_eq!(ruleset(&ns), "", "cleaned up");
        for file in [log, clean] {
            let text = std::fs::read_to_string(&file).expect("strace log");
            let execs: Vec<&str> = text.lines().filter(|l| l.contains("execve(")).collect();
            assert_eq!(execs.len(), 1, "exactly meshcap's own execve:\n{text}");
            assert!(execs[0].contains("meshcap"), "{text}");
            // The namespace is entered once, on meshcap's own thread: no thread, no process.
            assert!(!text.contains("clone"), "no thread or process started:\n{text}");
        }
    }
}

#[test]
fn the_namespace_by_pid_and_concurrent_runs() {
    needs_netns!();
    let want = reference(&SIDECAR, false);
    let by_pid = Netns::ipv4("nftpid");
    let sleeper = by_pid.sleeper();
    Meshcap::new()
        .arg("istio-iptables")
        .args(SIDECAR.iter())
        .args(["--native-nftables", "--network-namespace", &sleeper.ns_path()])
        .run()
        .success();
    assert_eq!(ruleset(&by_pid), want);

    // Concurrent runs in one namespace take turns (the shared namespace lock).
    let ns = Netns::ipv4("nftconc");
    let apply = Meshcap::new()
        .arg("istio-iptables")
        .args(SIDECAR.iter())
        .arg("--native-nftables")
        .netns(&ns);
    let children: Vec<_> = (0..6).map(|_| apply.spawn()).collect();
    for child in children {
        child.wait().success();
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
    needs_netns!();
    let ns = Netns::ipv4("nftswitchbk");
    Meshcap::new()
        .arg("istio-iptables")
        .args(SIDECAR.iter())
        .netns(&ns)
        .args(["--force-iptables-binary", "nft"])
        .run()
        .success();
    let save = |ns: &Netns| ns.stdout("iptables-nft-save", &[]);
    assert!(save(&ns).contains("ISTIO_OUTPUT"));

    nft_apply(&ns, &SIDECAR, &[])
        .expect_exit(1)
        .stderr_contains("also exist in the iptables-nft tables (IPv4): nat/ISTIO_INBOUND");
    assert!(!ruleset(&ns).contains("istio-proxy"), "nothing applied");

    nft_apply(&ns, &SIDECAR, &["--reconcile"]).success();
    assert!(
        !save(&ns).contains("ISTIO"),
        "the iptables rules are gone: {}",
        save(&ns)
    );
    assert_eq!(meshcap_tables(&ruleset(&ns)), reference(&SIDECAR, false));
    nft_apply(&ns, &SIDECAR, &[])
        .success()
        .stderr_contains("reconciliation not needed");
}

#[test]
fn proxy_owners_given_by_name_are_not_drift() {
    needs_netns!();
    // nft resolves `skuid root` and lists it as `meta skuid 0`; the comparison resolves too.
    let ns = Netns::ipv4("nftnames");
    let args = [
        "-p", "15001", "-z", "15006", "-u", "root", "-g", "root", "-b", "*", "-i", "*",
    ];
    nft_apply(&ns, &args, &[]).success();
    assert!(ruleset(&ns).contains("meta skuid 0 counter return"), "{}", ruleset(&ns));
    let o = nft_apply(&ns, &args, &[]);
    o.success().stderr_contains("reconciliation not needed");
    assert_eq!(o.spawns(), 0);
}

/// `istio-iptables` before `args`, unless they name a command themselves (`istio-clean-iptables`).
fn command_for<'a>(args: &[&'a str]) -> Vec<&'a str> {
    match args.first() {
        Some(first) if first.starts_with("istio-") => Vec::new(),
        _ => vec!["istio-iptables"],
    }
}
