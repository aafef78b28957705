//! Both backends in one namespace, for real (namespaces these tests create): the iptables
//! backend refuses where the nftables backend's `inet istio-proxy-*` tables are live (plain,
//! `--reconcile`, `--force-apply`, either variant) and changes nothing; its dry run says what a
//! real run would do; its cleanup removes only its own rules and names the tables it leaves;
//! `check` reports those tables as drift; the reverse (nft over iptables) is still refused; and
//! the fresh-namespace apply still starts exactly one process per family.

use crate::support::netfilter::{nft_list, render};
use crate::support::{Meshcap, Netns, Run, SIDECAR, Variant, needs_netns};

/// Everything a capture can live in: both variants' saves of both families (raw text, minus
/// the `#` lines with timestamps) and the whole nft ruleset (counter values removed).
fn snapshot(ns: &Netns) -> String {
    let mut out = String::new();
    for tool in [
        "iptables-nft-save",
        "ip6tables-nft-save",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    ] {
        let o = ns.run(tool, &[]);
        assert!(o.status.success(), "{tool}: {o:?}");
        out.push_str(&format!("== {tool}\n"));
        for line in String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
        {
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
    out.push_str(&nft_list(ns, &["list", "ruleset"]));
    out
}

/// `meshcap ARGS EXTRA --network-namespace NS` with debug logs (the spawn count).
fn run(ns: &Netns, args: &[&str], extra: &[&str]) -> Run {
    Meshcap::new()
        .arg("istio-iptables")
        .args(args)
        .args(extra)
        .netns(ns)
        .arg("--log_output_level=default:debug")
        .run()
}

/// `meshcap check BACKEND --network-namespace NS SIDECAR EXTRA`.
fn check(ns: &Netns, backend: &[&str], extra: &[&str]) -> Run {
    Meshcap::new()
        .arg("check")
        .args(backend)
        .netns(ns)
        .args(SIDECAR)
        .args(extra)
        .run()
}

/// [`check`] as text and as JSON, both exiting 1 (drift): the text and the JSON document.
fn check_drift(ns: &Netns, backend: &[&str]) -> (String, serde_json::Value) {
    let text = check(ns, backend, &[]);
    text.expect_exit(1);
    let json = check(ns, backend, &["--format", "json"]);
    json.expect_exit(1);
    (text.stdout, json.json())
}

const REFUSAL: &str = "meshcap's istio-proxy-* tables also exist in nftables (inet): istio-proxy-nat; with the iptables rules too, packets would be captured twice; nothing was changed; remove them with --cleanup-only --native-nftables (--reconcile and --force-apply do not), or rerun with --native-nftables to keep the nftables backend";

/// A namespace holding the nftables backend's rules for SIDECAR.
fn nft_captured(tag: &str) -> Netns {
    let ns = Netns::ipv4(tag);
    run(&ns, SIDECAR, &["--native-nftables"]).success();
    let tables = ns.stdout("nft", &["list", "tables"]);
    assert_eq!(tables, "table inet istio-proxy-nat\n");
    ns
}

#[test]
fn the_iptables_backend_refuses_over_the_nftables_backends_tables() {
    needs_netns!();
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
            o.expect_exit(1).stderr_contains(&format!("meshcap: {REFUSAL}\n"));
            assert_eq!(o.spawns(), 0, "refused before any read:\n{o}");
            assert_eq!(snapshot(&ns), before, "{extra:?} changed something");
        }
    }
    let legacy_tables = ns.stdout("cat", &["/proc/net/ip_tables_names"]);
    assert_eq!(legacy_tables, "", "no legacy table was instantiated");

    // The dry run reports it (and still only prints).
    run(&ns, SIDECAR, &["--dry-run"])
        .success()
        .stderr_contains(&format!("dry run: a real run would refuse: {REFUSAL}"));
    assert_eq!(snapshot(&ns), before);

    // The remedy works: the nftables cleanup, then the iptables backend applies as usual.
    run(&ns, SIDECAR, &["--cleanup-only", "--native-nftables"]).success();
    let o = run(&ns, SIDECAR, &[]);
    assert_eq!(o.success().spawns(), 1, "one restore:\n{o}");
    assert!(ns.stdout("iptables-nft-save", &[]).contains("ISTIO_OUTPUT"));
}

#[test]
fn the_nftables_backend_still_refuses_over_the_iptables_backends_rules() {
    needs_netns!();
    let ns = Netns::ipv4("nft-over-ipt");
    run(&ns, SIDECAR, &[]).success();
    let before = snapshot(&ns);
    assert!(before.contains("ISTIO_OUTPUT"), "{before}");
    run(&ns, SIDECAR, &["--native-nftables"])
        .expect_exit(1)
        .stderr_contains("meshcap's ISTIO_* chains also exist in the iptables-nft tables (IPv4): nat/ISTIO_INBOUND");
    assert_eq!(snapshot(&ns), before, "nothing changed");
}

#[test]
fn the_iptables_cleanup_removes_its_rules_and_names_the_nftables_tables_it_leaves() {
    needs_netns!();
    // Both captures live: the nftables backend's tables, and the iptables backend's rules
    // loaded directly (meshcap itself refuses to create this state).
    let ns = nft_captured("ipt-clean");
    let payload = render(SIDECAR, "v4", false);
    let o = ns.run_with_stdin(&Variant::Nft.tool("iptables", "-restore"), &["--noflush"], &payload);
    assert!(o.status.success(), "{o:?}");
    let nft_before = nft_list(&ns, &["list", "table", "inet", "istio-proxy-nat"]);
    assert!(nft_before.contains("redirect to :15001"), "{nft_before}");

    let o = run(&ns, SIDECAR, &["--cleanup-only"]);
    o.success().stderr_contains(
        "meshcap's istio-proxy-* tables also exist in nftables (inet): istio-proxy-nat; the iptables cleanup does not remove them and they still capture packets: remove them with --cleanup-only --native-nftables",
    );
    assert_eq!(o.spawns(), 2, "save and restore, no nft:\n{o}");
    assert!(!ns.stdout("iptables-nft-save", &[]).contains("ISTIO"));
    let nft_after = nft_list(&ns, &["list", "table", "inet", "istio-proxy-nat"]);
    assert_eq!(nft_after, nft_before, "the nftables tables are left");
}

#[test]
fn check_reports_the_nftables_backends_tables_as_drift() {
    needs_netns!();
    let ns = nft_captured("ipt-check");
    let (out, v) = check_drift(&ns, &[]);
    // Nothing of the iptables backend is live: the namespace uses the other backend.
    assert!(
        out.starts_with("# this namespace uses the nftables backend (istio-proxy-nat): "),
        "{out}"
    );
    assert_eq!(v["uses_backend"], "nftables", "{v}");
    assert_eq!(v["also_in_nftables"], serde_json::json!(["istio-proxy-nat"]));
    assert_eq!(v["in_sync"], false);

    // In sync once the iptables backend is the only one.
    run(&ns, SIDECAR, &["--cleanup-only", "--native-nftables"]).success();
    run(&ns, SIDECAR, &[]).success();
    check(&ns, &[], &[]).success();
}

#[test]
fn a_fresh_namespace_still_costs_one_restore_per_family() {
    needs_netns!();
    let ns = Netns::ipv4("ipt-fresh");
    let o = run(&ns, SIDECAR, &[]);
    assert_eq!(o.success().spawns(), 1, "{o}");
    let ns = Netns::dual("ipt-fresh-ds");
    let o = run(&ns, SIDECAR, &["--dual-stack"]);
    assert_eq!(o.success().spawns(), 2, "{o}");
}

#[test]
fn check_native_nftables_reports_the_iptables_backends_chains_as_drift() {
    needs_netns!();
    let ns = Netns::ipv4("nft-check-ipt");
    run(&ns, SIDECAR, &[]).success();
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
    run(&ns, SIDECAR, &["--native-nftables", "--reconcile"]).success();
    check(&ns, &["--native-nftables"], &[])
        .success()
        .stdout_lacks("# iptables");
}
