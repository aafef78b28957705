//! Cleanup that always cleans, with the real iptables in namespaces these tests
//! create: `istio-clean-iptables` without the apply's flags removes every rule meshcap put in
//! built-in chains (found by shape), a cleanup of many rules rebuilds the affected chains
//! keeping foreign rules in order, and live chain names that need quoting (`ISTIO_x"y`) are
//! quoted in the restore input.

use crate::support::cmd::meshcap_command as meshcap;
use crate::support::netfilter::{Variant as V, add_foreign, save};
use crate::support::netns::{Netns as NetNs, needs_netns};
use crate::support::run::{show, text};

fn v4_ns(tag: &str) -> NetNs {
    NetNs::ipv4(tag)
}

fn run(ns: &NetNs, args: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--network-namespace", &ns.name]);
    meshcap(&all).output().unwrap()
}

const APPLY: &[&str] = &[
    "istio-iptables",
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "TPROXY",
    "-i",
    "*",
    "-b",
    "*",
    "-c",
    "eth9",
    "-k",
    "veth9",
];

#[test]
fn cleanup_without_the_apply_flags_removes_everything_of_meshcaps() {
    needs_netns!();
    let ns = v4_ns("cleannoflags");
    add_foreign(&ns, V::Nft);
    let before = save(&ns, V::Nft, "iptables");
    let o = run(&ns, APPLY);
    assert!(o.status.success(), "{}", show(&o));
    let applied = save(&ns, V::Nft, "iptables");
    assert!(
        applied.contains("-i eth9 -j RETURN") && applied.contains("--save-mark"),
        "{applied}"
    );
    // A foreign rule added after the apply, between meshcap's rules, keeps its place.
    let o = ns.run(
        "iptables-nft",
        &["-t", "nat", "-I", "PREROUTING", "2", "-i", "late0", "-j", "ACCEPT"],
    );
    assert!(o.status.success(), "{}", show(&o));

    let o = run(&ns, &["istio-clean-iptables"]);
    assert!(o.status.success(), "{}", show(&o));
    let after = save(&ns, V::Nft, "iptables");
    let without_late = after.replace("-A PREROUTING -i late0 -j ACCEPT\n", "");
    assert_eq!(without_late, before, "only the foreign rules remain:\n{after}");
    assert!(after.contains("-A PREROUTING -i late0 -j ACCEPT"), "{after}");
    let rules = text(&ns.run("ip", &["rule"]).stdout);
    assert!(!rules.contains("lookup 133"), "{rules}");

    // A re-apply finds nothing of meshcap's and succeeds.
    let o = run(&ns, APPLY);
    assert!(o.status.success(), "{}", show(&o));
}

/// Many interfaces (past the point where chains are rebuilt instead of `-D` per rule), with
/// foreign rules before, between and after meshcap's: all foreign rules stay, in order.
#[test]
fn a_large_cleanup_rebuilds_chains_keeping_foreign_rules_in_order() {
    needs_netns!();
    let ns = v4_ns("cleanbig");
    let ifaces: Vec<String> = (0..40).map(|i| format!("x{i}")).collect();
    let list = ifaces.join(",");
    let flags = [
        "-p", "15001", "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "*", "-c", &list, "-k", &list,
    ];
    let first = ns.run(
        "iptables-nft",
        &["-t", "nat", "-A", "PREROUTING", "-s", "10.1.0.0/16", "-j", "ACCEPT"],
    );
    assert!(first.status.success(), "{}", show(&first));
    let mut args = vec!["istio-iptables"];
    args.extend_from_slice(&flags);
    let o = run(&ns, &args);
    assert!(o.status.success(), "{}", show(&o));
    for (pos, tag) in [("5", "10.2.0.0/16"), ("30", "10.3.0.0/16")] {
        let o = ns.run(
            "iptables-nft",
            &[
                "-t",
                "nat",
                "-I",
                "PREROUTING",
                pos,
                "-s",
                tag,
                "-m",
                "comment",
                "--comment",
                "a \"b\"",
                "-j",
                "ACCEPT",
            ],
        );
        assert!(o.status.success(), "{}", show(&o));
    }
    let o = ns.run(
        "iptables-nft",
        &["-t", "nat", "-A", "PREROUTING", "-s", "10.4.0.0/16", "-j", "ACCEPT"],
    );
    assert!(o.status.success(), "{}", show(&o));

    // The foreign rules in their live order (meshcap's `-k` rules are inserted at the top,
    // so the first foreign rule is now below them).
    let live = save(&ns, V::Nft, "iptables");
    let foreign: Vec<&str> = live.lines().filter(|l| l.starts_with("-A PREROUTING -s 10.")).collect();
    assert_eq!(foreign.len(), 4, "{live}");
    assert!(
        live.lines().filter(|l| l.starts_with("-A PREROUTING")).count() > 100,
        "{live}"
    );

    let mut args = vec!["istio-clean-iptables"];
    args.extend_from_slice(&flags);
    let o = run(&ns, &args);
    assert!(o.status.success(), "{}", show(&o));
    let after = save(&ns, V::Nft, "iptables");
    let pre: Vec<&str> = after.lines().filter(|l| l.starts_with("-A PREROUTING")).collect();
    assert_eq!(pre, foreign, "{after}");
    assert!(!after.contains("ISTIO_") && !after.contains("-i x1 "), "{after}");
}

/// Foreign `ISTIO_*` chains whose names need quoting: cleanup and `--reconcile` remove them.
#[test]
fn chain_names_from_live_state_are_quoted() {
    needs_netns!();
    for how in ["cleanup", "reconcile"] {
        let ns = v4_ns("quote");
        let o = run(&ns, &["istio-iptables", "-p", "15001", "-u", "1337", "-i", "*"]);
        assert!(o.status.success(), "{}", show(&o));
        let payload = "*nat\n-N \"ISTIO_x\\\"y\"\n-N \"ISTIO_a\\\\\\\"b\"\n-A \"ISTIO_x\\\"y\" -j RETURN\n-A OUTPUT -p udp -j \"ISTIO_x\\\"y\"\nCOMMIT\n";
        let o = ns.run_with_stdin("iptables-nft-restore", &["--noflush"], payload);
        assert!(o.status.success(), "{}", show(&o));
        let live = save(&ns, V::Nft, "iptables");
        assert!(live.contains(":ISTIO_x\"y") && live.contains(":ISTIO_a\\\"b"), "{live}");
        let o = if how == "cleanup" {
            run(&ns, &["istio-clean-iptables"])
        } else {
            run(
                &ns,
                &["istio-iptables", "-p", "15001", "-u", "1337", "-i", "*", "--reconcile"],
            )
        };
        assert!(o.status.success(), "{how}: {}", show(&o));
        let after = save(&ns, V::Nft, "iptables");
        assert!(
            !after.contains("ISTIO_x") && !after.contains("ISTIO_a"),
            "{how}: {after}"
        );
        if how == "reconcile" {
            assert!(after.contains("-A OUTPUT -j ISTIO_OUTPUT"), "{after}");
        }
    }
}
