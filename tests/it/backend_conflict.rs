//! Both backends in one namespace, for real (namespaces these tests create): the iptables
//! backend refuses where the nftables backend's `inet istio-proxy-*` tables are live (plain,
//! `--reconcile`, `--force-apply`, either variant) and changes nothing; its dry run says what a
//! real run would do; its cleanup removes only its own rules and names the tables it leaves;
//! `check` reports those tables as drift; the reverse (nft over iptables) is still refused; and
//! the fresh-namespace apply still starts exactly one process per family.

use std::process::Output;

use crate::apply::{V, render, show, text, v4_ns};
use crate::support::{NetNs, SIDECAR, meshcap, netns_available};

/// Everything a capture can live in: both variants' saves of both families (raw text, minus
/// the `#` lines with timestamps) and the whole nft ruleset (counter values removed).
fn snapshot(ns: &NetNs) -> String {
    let mut out = String::new();
    for tool in [
        "iptables-nft-save",
        "ip6tables-nft-save",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    ] {
        let o = ns.run(tool, &[]);
        assert!(o.status.success(), "{tool}: {}", show(&o));
        out.push_str(&format!("== {tool}\n"));
        for line in text(&o.stdout).lines().filter(|l| !l.starts_with('#')) {
            // Chain counters ([packets:bytes]) are not state.
            let line = match line.rfind(" [") {
                Some(i) if line.starts_with(':') => &line[..i],
                _ => line,
            };
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("== nft list ruleset\n");
    out.push_str(&nft(ns, &["list", "ruleset"]));
    out
}

/// `nft ARGS` listing in `ns`, counter values removed (`counter packets N bytes M` → `counter`).
fn nft(ns: &NetNs, args: &[&str]) -> String {
    let o = ns.run("nft", args);
    assert!(o.status.success(), "{}", show(&o));
    let mut out = String::new();
    for line in text(&o.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut kept: Vec<&str> = Vec::new();
        let mut i = 0;
        while i < words.len() {
            if (words[i] == "packets" || words[i] == "bytes") && kept.last().is_some_and(|w| *w == "counter") {
                i += 2;
                continue;
            }
            kept.push(words[i]);
            i += 1;
        }
        out.push_str(&kept.join(" "));
        out.push('\n');
    }
    out
}

/// `meshcap ARGS EXTRA --network-namespace NS` with debug logs (the spawn count).
fn run(ns: &NetNs, args: &[&str], extra: &[&str]) -> Output {
    let mut all: Vec<&str> = [&["istio-iptables"][..], args].concat();
    all.extend_from_slice(extra);
    all.extend_from_slice(&["--network-namespace", &ns.name, "--log_output_level=default:debug"]);
    meshcap(&all).output().unwrap()
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

/// `meshcap check BACKEND --network-namespace NS SIDECAR EXTRA`.
fn check(ns: &NetNs, backend: &[&str], extra: &[&str]) -> Output {
    let mut args = vec!["check"];
    args.extend_from_slice(backend);
    args.extend_from_slice(&["--network-namespace", &ns.name]);
    args.extend_from_slice(SIDECAR);
    args.extend_from_slice(extra);
    meshcap(&args).output().unwrap()
}

/// [`check`] as text and as JSON, both exiting 1 (drift): the text and the JSON document.
fn check_drift(ns: &NetNs, backend: &[&str]) -> (String, serde_json::Value) {
    let o = check(ns, backend, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = text(&o.stdout);
    let o = check(ns, backend, &["--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    (out, serde_json::from_slice(&o.stdout).unwrap())
}

const REFUSAL: &str = "meshcap's istio-proxy-* tables also exist in nftables (inet): istio-proxy-nat; with the iptables rules too, packets would be captured twice; nothing was changed; remove them with --cleanup-only --native-nftables (--reconcile and --force-apply do not), or rerun with --native-nftables to keep the nftables backend";

/// A namespace holding the nftables backend's rules for SIDECAR.
fn nft_captured(tag: &str) -> NetNs {
    let ns = v4_ns(tag);
    let o = run(&ns, SIDECAR, &["--native-nftables"]);
    assert!(o.status.success(), "{}", show(&o));
    let tables = text(&ns.run("nft", &["list", "tables"]).stdout);
    assert_eq!(tables, "table inet istio-proxy-nat\n");
    ns
}

#[test]
fn the_iptables_backend_refuses_over_the_nftables_backends_tables() {
    if !netns_available() {
        return;
    }
    let ns = nft_captured("ipt-over-nft");
    let before = snapshot(&ns);
    assert!(!before.contains("ISTIO"), "{before}");
    let forced: [&[&str]; 3] = [
        &[],
        &["--force-iptables-binary", "nft"],
        &["--force-iptables-binary", "legacy"],
    ];
    for variant in forced {
        for mode in [&[][..], &["--reconcile"], &["--force-apply"]] {
            let extra = [variant, mode].concat();
            let o = run(&ns, SIDECAR, &extra);
            assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", show(&o));
            let err = text(&o.stderr);
            assert!(
                err.contains(&format!("meshcap: {REFUSAL}\n")),
                "{extra:?}: {}",
                show(&o)
            );
            assert_eq!(spawns(&o), 0, "refused before any read: {}", show(&o));
            assert_eq!(snapshot(&ns), before, "{extra:?} changed something");
        }
    }
    let legacy_tables = ns.run("cat", &["/proc/net/ip_tables_names"]);
    assert_eq!(text(&legacy_tables.stdout), "", "no legacy table was instantiated");

    // The dry run reports it (and still only prints).
    let o = run(&ns, SIDECAR, &["--dry-run"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        text(&o.stderr).contains(&format!("a real run would refuse: {REFUSAL}")),
        "{}",
        show(&o)
    );
    assert_eq!(snapshot(&ns), before);

    // The remedy works: the nftables cleanup, then the iptables backend applies as usual.
    let o = run(&ns, SIDECAR, &["--cleanup-only", "--native-nftables"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = run(&ns, SIDECAR, &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(spawns(&o), 1, "one restore: {}", show(&o));
    assert!(text(&ns.run("iptables-nft-save", &[]).stdout).contains("ISTIO_OUTPUT"));
}

#[test]
fn the_nftables_backend_still_refuses_over_the_iptables_backends_rules() {
    if !netns_available() {
        return;
    }
    let ns = v4_ns("nft-over-ipt");
    let o = run(&ns, SIDECAR, &[]);
    assert!(o.status.success(), "{}", show(&o));
    let before = snapshot(&ns);
    assert!(before.contains("ISTIO_OUTPUT"), "{before}");
    let o = run(&ns, SIDECAR, &["--native-nftables"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr)
            .contains("meshcap's ISTIO_* chains also exist in the iptables-nft tables (IPv4): nat/ISTIO_INBOUND"),
        "{}",
        show(&o)
    );
    assert_eq!(snapshot(&ns), before, "nothing changed");
}

#[test]
fn the_iptables_cleanup_removes_its_rules_and_names_the_nftables_tables_it_leaves() {
    if !netns_available() {
        return;
    }
    // Both captures live: the nftables backend's tables, and the iptables backend's rules
    // loaded directly (meshcap itself refuses to create this state).
    let ns = nft_captured("ipt-clean");
    let payload = render(SIDECAR, "v4", false);
    let o = ns.run_with_stdin(&V::Nft.tool("iptables", "-restore"), &["--noflush"], &payload);
    assert!(o.status.success(), "{}", show(&o));
    let nft_before = nft(&ns, &["list", "table", "inet", "istio-proxy-nat"]);
    assert!(nft_before.contains("redirect to :15001"), "{nft_before}");

    let o = run(&ns, SIDECAR, &["--cleanup-only"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        text(&o.stderr).contains(
            "meshcap's istio-proxy-* tables also exist in nftables (inet): istio-proxy-nat; the iptables cleanup does not remove them and they still capture packets: remove them with --cleanup-only --native-nftables"
        ),
        "{}",
        show(&o)
    );
    assert_eq!(spawns(&o), 2, "save and restore, no nft: {}", show(&o));
    assert!(!text(&ns.run("iptables-nft-save", &[]).stdout).contains("ISTIO"));
    let nft_after = nft(&ns, &["list", "table", "inet", "istio-proxy-nat"]);
    assert_eq!(nft_after, nft_before, "the nftables tables are left");
}

#[test]
fn check_reports_the_nftables_backends_tables_as_drift() {
    if !netns_available() {
        return;
    }
    let ns = nft_captured("ipt-check");
    let (out, v) = check_drift(&ns, &[]);
    // Nothing of the iptables backend is live: the namespace uses the other backend (issue 16).
    assert!(
        out.starts_with("# this namespace uses the nftables backend (istio-proxy-nat): "),
        "{out}"
    );
    assert_eq!(v["uses_backend"], "nftables", "{v}");
    assert_eq!(v["also_in_nftables"], serde_json::json!(["istio-proxy-nat"]));
    assert_eq!(v["in_sync"], false);

    // In sync once the iptables backend is the only one.
    let o = run(&ns, SIDECAR, &["--cleanup-only", "--native-nftables"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = run(&ns, SIDECAR, &[]);
    assert!(o.status.success(), "{}", show(&o));
    let o = check(&ns, &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
}

#[test]
fn a_fresh_namespace_still_costs_one_restore_per_family() {
    if !netns_available() {
        return;
    }
    let ns = v4_ns("ipt-fresh");
    let o = run(&ns, SIDECAR, &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(spawns(&o), 1, "{}", show(&o));
    let ns = v4_ns("ipt-fresh-ds");
    ns.ip(&["-6", "addr", "add", "fd00::2/128", "dev", "lo"]);
    let o = run(&ns, SIDECAR, &["--dual-stack"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(spawns(&o), 2, "{}", show(&o));
}

#[test]
fn check_native_nftables_reports_the_iptables_backends_chains_as_drift() {
    if !netns_available() {
        return;
    }
    let ns = v4_ns("nft-check-ipt");
    let o = run(&ns, SIDECAR, &[]);
    assert!(o.status.success(), "{}", show(&o));
    let (out, v) = check_drift(&ns, &["--native-nftables"]);
    // None of the nftables backend's tables is live: the namespace uses the other backend.
    assert!(
        out.starts_with("# this namespace uses the iptables backend (iptables-nft-save (IPv4)): "),
        "{out}"
    );
    assert_eq!(v["uses_backend"], "iptables", "{v}");
    assert_eq!(v["also_in_iptables"][0]["source"], "iptables-nft-save", "{v}");
    assert_eq!(v["also_in_iptables"][0]["family"], "ipv4", "{v}");
    assert_eq!(v["also_in_iptables"][0]["chains"][0]["chain"], "ISTIO_INBOUND", "{v}");

    // In sync once the nftables backend is the only one (its apply --reconcile removes the
    // iptables backend's rules after its own are in place).
    let o = run(&ns, SIDECAR, &["--native-nftables", "--reconcile"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = check(&ns, &["--native-nftables"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(!text(&o.stdout).contains("# iptables"), "{}", show(&o));
}
