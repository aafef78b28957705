//! Issue 16's backend and routing bugs, with the real kernel in namespaces these tests create:
//! `check` of one backend in a namespace the other backend programmed names that backend instead
//! of listing every rule as missing; a cleanup of one backend leaves the TPROXY policy routing to
//! the other backend's capture that still needs it; the TPROXY policy rule is `ip rule add`'s
//! (no protocol, as Istio's) and `check` reports a copy with one.

use std::process::Output;

use crate::support::SIDECAR;
use crate::support::cmd::meshcap_command as meshcap;
use crate::support::netns::{Netns as NetNs, needs_netns};

const TPROXY: &[&str] = &[
    "-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "*",
];

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `meshcap COMMAND FLAGS EXTRA --network-namespace NS` with IPv6 off.
fn run(ns: &NetNs, command: &str, flags: &[&str], extra: &[&str]) -> Output {
    let mut args = vec![command];
    args.extend_from_slice(flags);
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--network-namespace", &ns.name]);
    meshcap(&args).env("ENABLE_INBOUND_IPV6", "false").output().unwrap()
}

fn pod(tag: &str) -> NetNs {
    let ns = NetNs::new(tag);
    ns.ip(&["addr", "add", "198.51.100.2/32", "dev", "lo"]);
    ns
}

fn ip_rules(ns: &NetNs) -> String {
    String::from_utf8_lossy(&ns.run("ip", &["-4", "rule", "show"]).stdout).into_owned()
}

fn table_133(ns: &NetNs) -> String {
    String::from_utf8_lossy(&ns.run("ip", &["-4", "route", "show", "table", "133"]).stdout).into_owned()
}

#[test]
fn check_names_the_backend_a_namespace_uses() {
    needs_netns!();
    let ns = pod("usesnft");
    let o = run(&ns, "istio-iptables", SIDECAR, &["--native-nftables"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = run(&ns, "check", SIDECAR, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        out.starts_with("# this namespace uses the nftables backend (istio-proxy-nat"),
        "{}",
        show(&o)
    );
    assert!(out.contains("add --native-nftables to check it"), "{out}");
    assert!(!out.contains("missing") && !out.contains("captured twice"), "{out}");
    let o = run(&ns, "check", SIDECAR, &["--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["uses_backend"], "nftables", "{doc}");
    assert_eq!(
        run(&ns, "check", SIDECAR, &["--native-nftables"]).status.code(),
        Some(0)
    );

    // Both backends live: not "uses the other backend" but a second capture.
    let mut render = vec!["render", "--family", "v4"];
    render.extend_from_slice(SIDECAR);
    let payload = meshcap(&render).output().unwrap();
    let load = ns.run_with_stdin(
        "iptables-nft-restore",
        &["--noflush"],
        &String::from_utf8_lossy(&payload.stdout),
    );
    assert!(load.status.success(), "{}", show(&load));
    let o = run(&ns, "check", SIDECAR, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(out.starts_with("# IPv4 (iptables-nft-save): in sync\n"), "{out}");
    assert!(
        out.contains("# nftables: meshcap's istio-proxy-* tables also exist, packets are captured twice\n"),
        "{out}"
    );
    assert!(!out.contains("uses the"), "{out}");

    // The other way round.
    let ns = pod("usesipt");
    let o = run(&ns, "istio-iptables", SIDECAR, &[]);
    assert!(o.status.success(), "{}", show(&o));
    let o = run(&ns, "check", SIDECAR, &["--native-nftables"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        out.starts_with("# this namespace uses the iptables backend (iptables-"),
        "{out}"
    );
    assert!(out.contains("drop --native-nftables to check it"), "{out}");
    assert_eq!(run(&ns, "check", SIDECAR, &[]).status.code(), Some(0));
}

#[test]
fn a_cleanup_leaves_the_routes_to_the_other_backends_capture() {
    needs_netns!();
    let ns = pod("keeproutes");
    let o = run(&ns, "istio-iptables", TPROXY, &["--native-nftables"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(ip_rules(&ns).contains("fwmark 0x539 lookup 133"), "{}", ip_rules(&ns));
    assert!(table_133(&ns).contains("local default dev lo"), "{}", table_133(&ns));

    // The iptables backend's cleanup: nothing of its own, the nft tables still need the routes.
    let o = run(&ns, "istio-clean-iptables", TPROXY, &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Kept the policy routing"),
        "{}",
        show(&o)
    );
    assert!(ip_rules(&ns).contains("fwmark 0x539 lookup 133"), "{}", ip_rules(&ns));
    assert!(table_133(&ns).contains("local default dev lo"), "{}", table_133(&ns));
    assert_eq!(run(&ns, "check", TPROXY, &["--native-nftables"]).status.code(), Some(0));

    // The nftables backend's own cleanup removes them: no capture is left that needs them.
    let o = run(&ns, "istio-clean-iptables", TPROXY, &["--native-nftables"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!ip_rules(&ns).contains("lookup 133"), "{}", ip_rules(&ns));
    assert_eq!(table_133(&ns), "");
}

#[test]
fn the_tproxy_policy_rule_has_no_protocol_and_check_compares_it() {
    needs_netns!();
    let ns = pod("ruleproto");
    let o = run(&ns, "istio-iptables", TPROXY, &[]);
    assert!(o.status.success(), "{}", show(&o));
    let rules = ip_rules(&ns);
    let ours: Vec<&str> = rules.lines().filter(|l| l.contains("lookup 133")).collect();
    // `ip rule add fwmark 1337 lookup 133` shows no `proto` (unspec), as after Istio's run.
    assert_eq!(ours.len(), 1, "{rules}");
    assert!(!ours[0].contains("proto"), "{rules}");
    assert_eq!(run(&ns, "check", TPROXY, &[]).status.code(), Some(0));

    // The same rule with a protocol (what an older meshcap added) is not Istio's state.
    ns.ip(&["-4", "rule", "del", "fwmark", "1337", "lookup", "133"]);
    ns.ip(&["-4", "rule", "add", "fwmark", "1337", "lookup", "133", "proto", "boot"]);
    let o = run(&ns, "check", TPROXY, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(out.contains("+ ip -4 rule fwmark 1337 lookup 133\n"), "{out}");
    assert!(
        out.contains("- ip -4 rule fwmark 1337 lookup 133 proto boot\n"),
        "{out}"
    );
    // A re-run adds Istio's rule; cleanup removes every copy.
    let o = run(&ns, "istio-iptables", TPROXY, &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        ip_rules(&ns)
            .lines()
            .any(|l| l.contains("lookup 133") && !l.contains("proto"))
    );
    let o = run(&ns, "istio-clean-iptables", TPROXY, &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!ip_rules(&ns).contains("lookup 133"), "{}", ip_rules(&ns));
}
