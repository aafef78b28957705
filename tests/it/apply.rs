//! `meshcap [istio-iptables]` for real, in namespaces these tests create (never the machine's
//! own): the applied state equals Istio's payload restored directly, re-runs change nothing,
//! drift is refused and repaired with --reconcile, cleanup leaves exactly the foreign rules,
//! TPROXY routing, IPv6-only pods, dry-run, rollback, and namespace addressing.

use std::path::PathBuf;
use std::process::Output;

use crate::support::{NetNs, meshcap, netns_available};

pub(crate) use crate::support::SIDECAR;
pub(crate) const TPROXY: &[&str] = &[
    "-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "*", "-d", "15090", "-c", "eth9",
    "-q", "9000",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum V {
    Legacy,
    Nft,
}

impl V {
    pub(crate) fn name(self) -> &'static str {
        match self {
            V::Legacy => "legacy",
            V::Nft => "nft",
        }
    }
    pub(crate) fn tool(self, base: &str, suffix: &str) -> String {
        format!("{base}-{}{suffix}", self.name())
    }
}

pub(crate) fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

pub(crate) fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// A namespace with a loopback IPv4 address (IPv6 detection then says IPv4 only).
pub(crate) fn v4_ns(tag: &str) -> NetNs {
    let ns = NetNs::new(tag);
    ns.ip(&["addr", "add", "198.51.100.2/32", "dev", "lo"]);
    ns
}

/// The save output without comments and counters, and without tables that hold nothing.
pub(crate) fn normalize(save: &str) -> String {
    let mut blocks: Vec<String> = Vec::new();
    let mut block: Vec<String> = Vec::new();
    for line in save.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let line = match line.rfind(" [") {
            Some(i) if line.starts_with(':') => line[..i].to_string(),
            _ => line.to_string(),
        };
        block.push(line.clone());
        if line == "COMMIT" {
            let meaningful = block
                .iter()
                .any(|l| l.starts_with("-A") || (l.starts_with(':') && l.ends_with(" -")));
            if meaningful {
                blocks.push(block.join("\n") + "\n");
            }
            block.clear();
        }
    }
    // Legacy lists tables in creation order, nft in a fixed one.
    blocks.sort();
    blocks.concat()
}

pub(crate) fn save(ns: &NetNs, v: V, base: &str) -> String {
    let o = ns.run(&v.tool(base, "-save"), &[]);
    assert!(o.status.success(), "{}", show(&o));
    normalize(&text(&o.stdout))
}

/// Runs meshcap with `args` then `--network-namespace <ns>` (and the forced variant).
pub(crate) fn apply(ns: &NetNs, v: V, args: &[&str], extra: &[&str]) -> Output {
    let mut all: Vec<&str> = [&["istio-iptables"][..], args].concat();
    all.extend_from_slice(extra);
    all.extend_from_slice(&["--network-namespace", &ns.name, "--force-iptables-binary", v.name()]);
    meshcap(&all).output().unwrap()
}

pub(crate) fn render(args: &[&str], family: &str, ipv6: bool) -> String {
    let mut all = vec!["render"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--family", family]);
    if ipv6 {
        all.push("--ipv6");
    }
    let o = meshcap(&all).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    text(&o.stdout)
}

/// Istio's payload, restored directly into a fresh namespace: the reference state.
pub(crate) fn reference(v: V, args: &[&str], ipv6: bool) -> (String, String) {
    let ns = NetNs::new("ref");
    let mut out = Vec::new();
    for (family, base) in [("v4", "iptables"), ("v6", "ip6tables")] {
        let payload = render(args, family, ipv6);
        if !payload.is_empty() {
            let o = ns.run_with_stdin(&v.tool(base, "-restore"), &["--noflush"], &payload);
            assert!(o.status.success(), "{}", show(&o));
        }
        out.push(save(&ns, v, base));
    }
    (out.remove(0), out.remove(0))
}

#[test]
fn apply_equals_istio_payload_and_a_rerun_changes_nothing() {
    if !netns_available() {
        return;
    }
    // Istio's rules, and the same with --compact (multiport rules read back from the kernel
    // must compare equal, so the re-run is a no-op too).
    let compact: [&[&str]; 2] = [&[], &["--compact"]];
    for v in [V::Nft, V::Legacy] {
        for (args, mode) in [SIDECAR, TPROXY].into_iter().flat_map(|a| compact.map(|c| (a, c))) {
            let args: &[&str] = &[args, mode].concat();
            let ns = v4_ns("apply");
            let o = apply(&ns, v, args, &[]);
            assert!(o.status.success(), "{v:?}: {}", show(&o));
            let (want4, want6) = reference(v, args, false);
            let got = save(&ns, v, "iptables");
            assert_eq!(got, want4, "{v:?} {args:?}");
            assert!(got.contains("ISTIO_OUTPUT"));
            assert_eq!(save(&ns, v, "ip6tables"), want6);
            let other = if v == V::Nft { V::Legacy } else { V::Nft };
            assert!(
                !save(&ns, other, "iptables").contains("ISTIO"),
                "{v:?}: nothing in the other variant"
            );

            let o = apply(&ns, v, args, &[]);
            assert!(o.status.success(), "re-run {v:?}: {}", show(&o));
            assert!(text(&o.stderr).contains("reconciliation not needed"), "{}", show(&o));
            assert_eq!(save(&ns, v, "iptables"), want4, "re-run changed the rules");
        }
    }
}

#[test]
fn the_variant_is_chosen_without_polluting_legacy() {
    if !netns_available() {
        return;
    }
    let ns = v4_ns("choose");
    for _ in 0..2 {
        let mut args = [&["istio-iptables"][..], SIDECAR].concat();
        args.extend_from_slice(&["--network-namespace", &ns.name]);
        let o = meshcap(&args).output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
    }
    assert!(
        save(&ns, V::Nft, "iptables").contains("ISTIO_OUTPUT"),
        "nft is the default"
    );
    let legacy_tables = ns.run("cat", &["/proc/net/ip_tables_names"]);
    assert_eq!(text(&legacy_tables.stdout), "", "no legacy table was instantiated");

    // A namespace whose legacy tables hold rules gets legacy.
    let ns = v4_ns("legacy");
    let o = ns.run(
        "iptables-legacy",
        &["-t", "nat", "-A", "POSTROUTING", "-o", "lo", "-j", "RETURN"],
    );
    assert!(o.status.success(), "{}", show(&o));
    let mut args = [&["istio-iptables"][..], SIDECAR].concat();
    args.extend_from_slice(&["--network-namespace", &ns.name]);
    let o = meshcap(&args).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(save(&ns, V::Legacy, "iptables").contains("ISTIO_OUTPUT"));
    assert!(!save(&ns, V::Nft, "iptables").contains("ISTIO"));
}

#[test]
fn the_namespace_by_name_by_path_by_pid_and_from_inside() {
    if !netns_available() {
        return;
    }
    let (want, _) = reference(V::Nft, SIDECAR, false);
    let check = |ns: &NetNs, o: Output| {
        assert!(o.status.success(), "{}", show(&o));
        assert_eq!(save(ns, V::Nft, "iptables"), want);
    };
    let by_name = v4_ns("name");
    let mut args = [&["istio-iptables"][..], SIDECAR].concat();
    args.extend_from_slice(&["--network-namespace", &by_name.name]);
    check(&by_name, meshcap(&args).output().unwrap());

    let by_path = v4_ns("path");
    let path = by_path.path();
    let mut args = [&["istio-iptables"][..], SIDECAR].concat();
    args.extend_from_slice(&["--network-namespace", path.to_str().unwrap()]);
    check(&by_path, meshcap(&args).output().unwrap());

    let by_pid = v4_ns("pid");
    let mut sleeper = by_pid.cmd("sleep", &["30"]).spawn().unwrap();
    let proc_path = format!("/proc/{}/ns/net", sleeper.id());
    // `ip netns exec` enters the namespace before exec'ing sleep: until then the pid's
    // namespace is this process's own. Wait (bounded) until it is the test namespace.
    let inode = |p: &str| {
        std::fs::metadata(p)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
    };
    let want_inode = inode(by_pid.path().to_str().unwrap());
    let mut entered = false;
    for _ in 0..200 {
        if want_inode.is_some() && inode(&proc_path) == want_inode {
            entered = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(entered, "the sleeper never entered {}", by_pid.name);
    let mut args = [&["istio-iptables"][..], SIDECAR].concat();
    args.extend_from_slice(&["--network-namespace", &proc_path]);
    let o = meshcap(&args).output().unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    check(&by_pid, o);

    let inside = v4_ns("inside");
    let bin = crate::support::meshcap_bin();
    let o = inside
        .cmd(bin.to_str().unwrap(), &[&["istio-iptables"][..], SIDECAR].concat())
        .output()
        .unwrap();
    check(&inside, o);
}

#[test]
fn a_bad_namespace_fails_and_nothing_is_applied_here() {
    if !netns_available() {
        return;
    }
    // meshcap runs inside a throw-away namespace, so "here" is not the machine's namespace.
    let here = v4_ns("here");
    let bin = crate::support::meshcap_bin();
    for (target, named) in [
        ("/etc/hostname", "'/etc/hostname' is not a network namespace"),
        ("/proc/self/ns/uts", "is not a network namespace"),
        ("mc-no-such-namespace", "'/var/run/netns/mc-no-such-namespace'"),
    ] {
        let mut args = [&["istio-iptables"][..], SIDECAR].concat();
        args.extend_from_slice(&["--network-namespace", target]);
        let o = here.cmd(bin.to_str().unwrap(), &args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        assert!(text(&o.stderr).contains(named), "{target}: {}", show(&o));
        for v in [V::Nft, V::Legacy] {
            assert_eq!(
                save(&here, v, "iptables"),
                "",
                "{target}: nothing applied in the current namespace"
            );
        }
    }
}

#[test]
fn drift_is_refused_and_reconcile_repairs_it() {
    if !netns_available() {
        return;
    }
    for v in [V::Nft, V::Legacy] {
        let ns = v4_ns("drift");
        let o = apply(&ns, v, SIDECAR, &[]);
        assert!(o.status.success(), "{}", show(&o));
        // Someone deletes one of meshcap's rules and adds one of their own to ISTIO_OUTPUT.
        let ipt = v.tool("iptables", "");
        assert!(
            ns.run(
                &ipt,
                &["-t", "nat", "-D", "ISTIO_OUTPUT", "-d", "127.0.0.1/32", "-j", "RETURN"]
            )
            .status
            .success()
        );
        assert!(
            ns.run(
                &ipt,
                &[
                    "-t",
                    "nat",
                    "-I",
                    "ISTIO_OUTPUT",
                    "1",
                    "-d",
                    "10.0.0.0/8",
                    "-j",
                    "RETURN"
                ]
            )
            .status
            .success()
        );
        let drifted = save(&ns, v, "iptables");

        let o = apply(&ns, v, SIDECAR, &[]);
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        let err = text(&o.stderr);
        assert!(
            err.contains("--reconcile") && err.contains("1 missing, 1 unexpected"),
            "{err}"
        );
        assert!(
            err.contains("+ -t nat -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN"),
            "{err}"
        );
        assert_eq!(save(&ns, v, "iptables"), drifted, "state kept");

        // Reordering alone is drift too (Istio's check is order-blind).
        let o = apply(&ns, v, SIDECAR, &["--reconcile"]);
        assert!(o.status.success(), "{}", show(&o));
        let (want, _) = reference(v, SIDECAR, false);
        assert_eq!(save(&ns, v, "iptables"), want, "repaired");
        let filter = text(&ns.run(&v.tool("iptables", "-save"), &["-t", "filter"]).stdout);
        assert!(!filter.contains("DROP"), "guardrails removed: {filter}");

        // A new configuration replaces the old one, stale chains included.
        let o = apply(&ns, v, TPROXY, &["--reconcile"]);
        assert!(o.status.success(), "{}", show(&o));
        let (want, _) = reference(v, TPROXY, false);
        assert_eq!(save(&ns, v, "iptables"), want);
    }
}

#[test]
fn misordered_rules_are_drift() {
    if !netns_available() {
        return;
    }
    let ns = v4_ns("order");
    let payload = render(SIDECAR, "v4", false).replace(
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n",
    );
    let o = ns.run_with_stdin("iptables-nft-restore", &["--noflush"], &payload);
    assert!(o.status.success(), "{}", show(&o));
    let o = apply(&ns, V::Nft, SIDECAR, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("1 misordered"), "{}", show(&o));
}

pub(crate) fn add_foreign(ns: &NetNs, v: V) {
    for base in ["iptables", "ip6tables"] {
        let ipt = v.tool(base, "");
        for args in [
            &["-t", "nat", "-N", "FOREIGN"][..],
            &["-t", "nat", "-A", "FOREIGN", "-p", "udp", "-j", "RETURN"],
            &["-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "FOREIGN"],
            &["-t", "mangle", "-A", "PREROUTING", "-i", "lo", "-j", "RETURN"],
            &[
                "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
            ],
        ] {
            let o = ns.run(&ipt, args);
            assert!(o.status.success(), "{ipt} {args:?}: {}", show(&o));
        }
    }
}

#[test]
fn cleanup_leaves_exactly_the_foreign_rules() {
    if !netns_available() {
        return;
    }
    for v in [V::Nft, V::Legacy] {
        for cleanup in [&["--cleanup-only"][..], &["istio-clean-iptables"][..]] {
            let ns = NetNs::new("clean");
            ns.ip(&["addr", "add", "198.51.100.2/32", "dev", "lo"]);
            ns.ip(&["-6", "addr", "add", "fd00::2/128", "dev", "lo"]);
            add_foreign(&ns, v);
            let before = (save(&ns, v, "iptables"), save(&ns, v, "ip6tables"));
            let o = apply(&ns, v, TPROXY, &["--dual-stack"]);
            assert!(o.status.success(), "{}", show(&o));
            assert!(save(&ns, v, "ip6tables").contains("ISTIO_TPROXY"));

            let o = if cleanup[0] == "istio-clean-iptables" {
                let mut args = vec!["istio-clean-iptables"];
                args.extend_from_slice(TPROXY);
                args.extend_from_slice(&["--network-namespace", &ns.name, "--force-iptables-binary", v.name()]);
                meshcap(&args).output().unwrap()
            } else {
                apply(&ns, v, TPROXY, cleanup)
            };
            assert!(o.status.success(), "{}", show(&o));
            let after = (save(&ns, v, "iptables"), save(&ns, v, "ip6tables"));
            assert_eq!(after, before, "{v:?} {cleanup:?}: only the foreign rules remain");
            let rules = text(&ns.run("ip", &["rule"]).stdout) + &text(&ns.run("ip", &["-6", "rule"]).stdout);
            assert!(!rules.contains("lookup 133"), "{rules}");
            let lo = text(&ns.run("ip", &["-6", "addr", "show", "dev", "lo"]).stdout);
            assert!(!lo.contains("::6/128"), "{lo}");
        }
    }
}

#[test]
fn tproxy_routes_without_duplicates_and_gone_after_cleanup() {
    if !netns_available() {
        return;
    }
    let ns = NetNs::new("tproxy");
    ns.ip(&["addr", "add", "198.51.100.2/32", "dev", "lo"]);
    ns.ip(&["-6", "addr", "add", "fd00::2/128", "dev", "lo"]);
    for _ in 0..3 {
        let o = apply(&ns, V::Nft, TPROXY, &["--dual-stack"]);
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
    let mangle = save(&ns, V::Nft, "iptables");
    assert!(mangle.contains("-j TPROXY --on-port 15006"), "{mangle}");

    let o = apply(&ns, V::Nft, TPROXY, &["--cleanup-only"]);
    assert!(o.status.success(), "{}", show(&o));
    for family in ["-4", "-6"] {
        let rules = text(&ns.run("ip", &[family, "rule"]).stdout);
        assert!(!rules.contains("lookup 133"), "{rules}");
        let routes = text(&ns.run("ip", &[family, "route", "show", "table", "133"]).stdout);
        assert_eq!(routes, "", "{family}");
    }
    assert_eq!(save(&ns, V::Nft, "iptables"), "");
}

#[test]
fn an_ipv6_only_namespace_programs_ip6tables() {
    if !netns_available() {
        return;
    }
    for v in [V::Nft, V::Legacy] {
        let ns = NetNs::new("v6only");
        ns.ip(&["-6", "addr", "add", "fd00::2/128", "dev", "lo"]);
        let o = apply(&ns, v, SIDECAR, &[]);
        assert!(o.status.success(), "{}", show(&o));
        assert!(text(&o.stderr).contains("ENABLE_INBOUND_IPV6=true"), "{}", show(&o));
        let (want4, want6) = reference(v, SIDECAR, true);
        let got6 = save(&ns, v, "ip6tables");
        assert_eq!(got6, want6);
        assert!(
            got6.contains("-s ::6/128 -o lo -j RETURN") && got6.contains("-d ::1/128 -j RETURN"),
            "{got6}"
        );
        assert_eq!(save(&ns, v, "iptables"), want4);
        let lo = text(&ns.run("ip", &["-6", "addr", "show", "dev", "lo"]).stdout);
        assert!(lo.contains("inet6 ::6/128"), "{lo}");
    }
}

#[test]
fn dry_run_changes_nothing() {
    if !netns_available() {
        return;
    }
    let ns = v4_ns("dry");
    ns.ip(&["-6", "addr", "add", "fd00::2/128", "dev", "lo"]);
    let before_rules = text(&ns.run("ip", &["rule"]).stdout);
    let before_addr = text(&ns.run("ip", &["addr"]).stdout);
    for extra in [
        &["--dry-run"][..],
        &["--dry-run", "--dual-stack", "--reconcile"],
        &["--dry-run", "--cleanup-only"],
    ] {
        let mut args = [&["istio-iptables"][..], TPROXY].concat();
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--network-namespace", &ns.name]);
        let o = meshcap(&args).output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
        let err = text(&o.stderr);
        assert!(
            err.contains("running iptables in dry-run mode, no rule changes will be made"),
            "{err}"
        );
        assert!(err.contains("skipping configuring routes due to dry run mode"), "{err}");
        if !extra.contains(&"--cleanup-only") {
            assert!(
                err.contains("Running iptables restore with: iptables-restore and the following input:\n* mangle"),
                "{err}"
            );
            assert!(
                err.contains(&format!(
                    "iptables-restore --noflush (in network namespace /var/run/netns/{})",
                    ns.name
                )),
                "{err}"
            );
        }
        if extra.contains(&"--dual-stack") {
            assert!(err.contains("ip6tables-restore and the following input"), "{err}");
        }
    }
    for v in [V::Nft, V::Legacy] {
        assert_eq!(save(&ns, v, "iptables"), "");
        assert_eq!(save(&ns, v, "ip6tables"), "");
    }
    let nft = text(&ns.run("nft", &["list", "ruleset"]).stdout);
    assert_eq!(nft.trim(), "", "no table was created");
    let tables = text(&ns.run("cat", &["/proc/net/ip_tables_names"]).stdout);
    assert_eq!(tables, "");
    assert_eq!(text(&ns.run("ip", &["rule"]).stdout), before_rules);
    assert_eq!(text(&ns.run("ip", &["addr"]).stdout), before_addr);
}

/// A directory with failing `ip6tables-*-restore` stand-ins, to put first on PATH.
fn failing_v6_restore() -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("meshcap-fail6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["ip6tables-nft-restore", "ip6tables-legacy-restore", "ip6tables-restore"] {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\necho \"ip6tables-restore: line 2 failed\" >&2\nexit 1\n").unwrap();
        let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
        std::fs::set_permissions(&p, mode).unwrap();
    }
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    (dir, path)
}

#[test]
fn a_failed_ipv6_restore_rolls_ipv4_back() {
    if !netns_available() {
        return;
    }
    let (dir, path) = failing_v6_restore();
    for v in [V::Nft, V::Legacy] {
        let ns = NetNs::new("rollback");
        ns.ip(&["addr", "add", "198.51.100.2/32", "dev", "lo"]);
        ns.ip(&["-6", "addr", "add", "fd00::2/128", "dev", "lo"]);
        add_foreign(&ns, v);
        let before = save(&ns, v, "iptables");
        let mut args = [&["istio-iptables"][..], TPROXY].concat();
        args.extend_from_slice(&[
            "--dual-stack",
            "--network-namespace",
            &ns.name,
            "--force-iptables-binary",
            v.name(),
        ]);
        let o = meshcap(&args).env("PATH", &path).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        let err = text(&o.stderr);
        assert!(err.contains("line 2 failed") && err.contains("rolled back"), "{err}");
        assert_eq!(save(&ns, v, "iptables"), before, "{v:?}: IPv4 is as it was");
        let rules = text(&ns.run("ip", &["rule"]).stdout);
        assert!(!rules.contains("lookup 133"), "no routes after a failure: {rules}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn concurrent_applies_take_turns() {
    if !netns_available() {
        return;
    }
    // Legacy in CNI mode too: the children's pod-scoped xtables lock (XTABLES_LOCKFILE on the
    // namespace path) must not fight meshcap's own namespace lock.
    for (v, extra) in [(V::Nft, &[][..]), (V::Legacy, &["--cni-mode"][..])] {
        let ns = v4_ns("concurrent");
        let mut args = [&["istio-iptables"][..], SIDECAR].concat();
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--network-namespace", &ns.name, "--force-iptables-binary", v.name()]);
        let children: Vec<_> = (0..10)
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
            assert!(o.status.success(), "{v:?}: {}", show(&o));
        }
        let (want, _) = reference(v, SIDECAR, false);
        assert_eq!(save(&ns, v, "iptables"), want, "{v:?}");
    }
}

#[test]
fn reconcile_moves_the_rules_between_variants() {
    if !netns_available() {
        return;
    }
    let ns = v4_ns("move");
    let o = apply(&ns, V::Nft, SIDECAR, &[]);
    assert!(o.status.success(), "{}", show(&o));
    // The same rules wanted in legacy: meshcap's chains in nft are drift (double capture).
    let o = apply(&ns, V::Legacy, SIDECAR, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("also exist in the iptables-nft tables"),
        "{}",
        show(&o)
    );
    assert!(!save(&ns, V::Legacy, "iptables").contains("ISTIO"), "nothing applied");
    let o = apply(&ns, V::Legacy, SIDECAR, &["--reconcile"]);
    assert!(o.status.success(), "{}", show(&o));
    let (want, _) = reference(V::Legacy, SIDECAR, false);
    assert_eq!(save(&ns, V::Legacy, "iptables"), want);
    assert!(!save(&ns, V::Nft, "iptables").contains("ISTIO"), "the nft copy is gone");
}
