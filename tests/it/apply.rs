//! `meshcap [istio-iptables]` for real, in namespaces these tests create (never the machine's
//! own): the applied state equals Istio's payload restored directly, re-runs change nothing,
//! drift is refused and repaired with --reconcile, cleanup leaves exactly the foreign rules,
//! TPROXY routing, IPv6-only pods, dry-run, rollback, and namespace addressing.

use crate::support::netfilter::{add_foreign, iptables_reference as reference, render, save};
use crate::support::{Meshcap, Netns, Run, SIDECAR, TPROXY, TempDir, Variant as V, needs_netns};

/// `meshcap ARGS EXTRA --network-namespace NS --force-iptables-binary V`.
fn apply(ns: &Netns, v: V, args: &[&str], extra: &[&str]) -> Run {
    Meshcap::new()
        .args(command_for(args))
        .args(args)
        .args(extra)
        .netns(ns)
        .variant(v)
        .run()
}

#[test]
fn apply_equals_istio_payload_and_a_rerun_changes_nothing() {
    needs_netns!();
    // Istio's rules, and the same with --compact (multiport rules read back from the kernel
    // must compare equal, so the re-run is a no-op too).
    let compact: [&[&str]; 2] = [&[], &["--compact"]];
    for v in V::BOTH {
        for (args, mode) in [SIDECAR, TPROXY].into_iter().flat_map(|a| compact.map(|c| (a, c))) {
            let args: &[&str] = &[args, mode].concat();
            let ns = Netns::ipv4("apply");
            apply(&ns, v, args, &[]).success();
            let (want4, want6) = reference(v, args, false);
            let got = save(&ns, v, "iptables");
            assert_eq!(got, want4, "{v:?} {args:?}");
            assert!(got.contains("ISTIO_OUTPUT"));
            assert_eq!(save(&ns, v, "ip6tables"), want6);
            assert!(
                !save(&ns, v.other(), "iptables").contains("ISTIO"),
                "{v:?}: nothing in the other variant"
            );

            apply(&ns, v, args, &[])
                .success()
                .stderr_contains("reconciliation not needed");
            assert_eq!(save(&ns, v, "iptables"), want4, "re-run changed the rules");
        }
    }
}

#[test]
fn the_variant_is_chosen_without_polluting_legacy() {
    needs_netns!();
    let ns = Netns::ipv4("choose");
    for _ in 0..2 {
        Meshcap::new()
            .arg("istio-iptables")
            .args(SIDECAR)
            .netns(&ns)
            .run()
            .success();
    }
    assert!(
        save(&ns, V::Nft, "iptables").contains("ISTIO_OUTPUT"),
        "nft is the default"
    );
    let legacy_tables = ns.stdout("cat", &["/proc/net/ip_tables_names"]);
    assert_eq!(legacy_tables, "", "no legacy table was instantiated");

    // A namespace whose legacy tables hold rules gets legacy.
    let ns = Netns::ipv4("legacy");
    let o = ns.run(
        "iptables-legacy",
        &["-t", "nat", "-A", "POSTROUTING", "-o", "lo", "-j", "RETURN"],
    );
    assert!(o.status.success(), "{o:?}");
    Meshcap::new()
        .arg("istio-iptables")
        .args(SIDECAR)
        .netns(&ns)
        .run()
        .success();
    assert!(save(&ns, V::Legacy, "iptables").contains("ISTIO_OUTPUT"));
    assert!(!save(&ns, V::Nft, "iptables").contains("ISTIO"));
}

#[test]
fn the_namespace_by_name_by_path_by_pid_and_from_inside() {
    needs_netns!();
    let (want, _) = reference(V::Nft, SIDECAR, false);
    let check = |ns: &Netns, run: Run| {
        run.success();
        assert_eq!(save(ns, V::Nft, "iptables"), want);
    };
    let sidecar = Meshcap::new().arg("istio-iptables").args(SIDECAR);

    let by_name = Netns::ipv4("name");
    check(&by_name, sidecar.clone().netns(&by_name).run());

    let by_path = Netns::ipv4("path");
    let path = by_path.path();
    check(&by_path, sidecar.clone().arg("--network-namespace").arg(&path).run());

    let by_pid = Netns::ipv4("pid");
    let sleeper = by_pid.sleeper();
    let run = sidecar.clone().args(["--network-namespace", &sleeper.ns_path()]).run();
    check(&by_pid, run);

    let inside = Netns::ipv4("inside");
    check(&inside, sidecar.inside(&inside).run());
}

#[test]
fn a_bad_namespace_fails_and_nothing_is_applied_here() {
    needs_netns!();
    // meshcap runs inside a throw-away namespace, so "here" is not the machine's namespace.
    let here = Netns::ipv4("here");
    for (target, named) in [
        ("/etc/hostname", "'/etc/hostname' is not a network namespace"),
        ("/proc/self/ns/uts", "is not a network namespace"),
        ("mc-no-such-namespace", "'/var/run/netns/mc-no-such-namespace'"),
    ] {
        Meshcap::new()
            .arg("istio-iptables")
            .args(SIDECAR)
            .args(["--network-namespace", target])
            .inside(&here)
            .run()
            .expect_exit(1)
            .stderr_contains(named);
        for v in V::BOTH {
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
    needs_netns!();
    for v in V::BOTH {
        let ns = Netns::ipv4("drift");
        apply(&ns, v, SIDECAR, &[]).success();
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

        apply(&ns, v, SIDECAR, &[])
            .expect_exit(1)
            .stderr_contains("--reconcile")
            .stderr_contains("1 missing, 1 unexpected")
            .stderr_contains("+ -t nat -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN");
        assert_eq!(save(&ns, v, "iptables"), drifted, "state kept");

        // Reordering alone is drift too (Istio's check is order-blind).
        apply(&ns, v, SIDECAR, &["--reconcile"]).success();
        let (want, _) = reference(v, SIDECAR, false);
        assert_eq!(save(&ns, v, "iptables"), want, "repaired");
        let filter = ns.stdout(&v.tool("iptables", "-save"), &["-t", "filter"]);
        assert!(!filter.contains("DROP"), "guardrails removed: {filter}");

        // A new configuration replaces the old one, stale chains included.
        apply(&ns, v, TPROXY, &["--reconcile"]).success();
        let (want, _) = reference(v, TPROXY, false);
        assert_eq!(save(&ns, v, "iptables"), want);
    }
}

#[test]
fn misordered_rules_are_drift() {
    needs_netns!();
    let ns = Netns::ipv4("order");
    let payload = render(SIDECAR, "v4", false).replace(
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n",
    );
    let o = ns.run_with_stdin("iptables-nft-restore", &["--noflush"], &payload);
    assert!(o.status.success(), "{o:?}");
    apply(&ns, V::Nft, SIDECAR, &[])
        .expect_exit(1)
        .stderr_contains("1 misordered");
}

#[test]
fn cleanup_leaves_exactly_the_foreign_rules() {
    needs_netns!();
    for v in V::BOTH {
        for cleanup in [&["--cleanup-only"][..], &["istio-clean-iptables"][..]] {
            let ns = Netns::dual("clean");
            add_foreign(&ns, v);
            let before = (save(&ns, v, "iptables"), save(&ns, v, "ip6tables"));
            apply(&ns, v, TPROXY, &["--dual-stack"]).success();
            assert!(save(&ns, v, "ip6tables").contains("ISTIO_TPROXY"));

            if cleanup[0] == "istio-clean-iptables" {
                let args = [cleanup, TPROXY].concat();
                apply(&ns, v, &args, &[]).success();
            } else {
                apply(&ns, v, TPROXY, cleanup).success();
            }
            let after = (save(&ns, v, "iptables"), save(&ns, v, "ip6tables"));
            assert_eq!(after, before, "{v:?} {cleanup:?}: only the foreign rules remain");
            let rules = ns.stdout("ip", &["rule"]) + &ns.stdout("ip", &["-6", "rule"]);
            assert!(!rules.contains("lookup 133"), "{rules}");
            let lo = ns.stdout("ip", &["-6", "addr", "show", "dev", "lo"]);
            assert!(!lo.contains("::6/128"), "{lo}");
        }
    }
}

#[test]
fn tproxy_routes_without_duplicates_and_gone_after_cleanup() {
    needs_netns!();
    let ns = Netns::dual("tproxy");
    for _ in 0..3 {
        apply(&ns, V::Nft, TPROXY, &["--dual-stack"]).success();
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
    let mangle = save(&ns, V::Nft, "iptables");
    assert!(mangle.contains("-j TPROXY --on-port 15006"), "{mangle}");

    apply(&ns, V::Nft, TPROXY, &["--cleanup-only"]).success();
    for family in ["-4", "-6"] {
        let rules = ns.stdout("ip", &[family, "rule"]);
        assert!(!rules.contains("lookup 133"), "{rules}");
        let routes = ns.stdout("ip", &[family, "route", "show", "table", "133"]);
        assert_eq!(routes, "", "{family}");
    }
    assert_eq!(save(&ns, V::Nft, "iptables"), "");
}

#[test]
fn an_ipv6_only_namespace_programs_ip6tables() {
    needs_netns!();
    for v in V::BOTH {
        let ns = Netns::ipv6("v6only");
        apply(&ns, v, SIDECAR, &[])
            .success()
            .stderr_contains("ENABLE_INBOUND_IPV6=true");
        let (want4, want6) = reference(v, SIDECAR, true);
        let got6 = save(&ns, v, "ip6tables");
        assert_eq!(got6, want6);
        assert!(
            got6.contains("-s ::6/128 -o lo -j RETURN") && got6.contains("-d ::1/128 -j RETURN"),
            "{got6}"
        );
        assert_eq!(save(&ns, v, "iptables"), want4);
        let lo = ns.stdout("ip", &["-6", "addr", "show", "dev", "lo"]);
        assert!(lo.contains("inet6 ::6/128"), "{lo}");
    }
}

#[test]
fn dry_run_changes_nothing() {
    needs_netns!();
    let ns = Netns::dual("dry");
    let before_rules = ns.stdout("ip", &["rule"]);
    let before_addr = ns.stdout("ip", &["addr"]);
    for extra in [
        &["--dry-run"][..],
        &["--dry-run", "--dual-stack", "--reconcile"],
        &["--dry-run", "--cleanup-only"],
    ] {
        let run = Meshcap::new()
            .arg("istio-iptables")
            .args(TPROXY)
            .args(extra)
            .netns(&ns)
            .run();
        run.success()
            .stderr_contains("running iptables in dry-run mode, no rule changes will be made")
            .stderr_contains("skipping configuring routes due to dry run mode");
        // A clean namespace: the rules a real run would apply, with the binaries it would use
        // (iptables-nft: no legacy table exists); a cleanup finds nothing to remove.
        if extra.contains(&"--cleanup-only") {
            run.stderr_contains("dry run: nothing to clean up: no iptables rules of meshcap's are live");
        } else {
            run.stderr_contains("Clean-state detected, new iptables are needed")
                .stderr_contains("dry run: IPv4 (iptables-nft): a real run would apply the rules (clean state) with iptables-nft-restore")
                .stderr_contains("Running iptables restore with: iptables-nft-restore and the following input:\n* mangle")
                .stderr_contains(&format!(
                    "iptables-nft-restore --noflush (in network namespace /var/run/netns/{})",
                    ns.name
                ));
        }
        if extra.contains(&"--dual-stack") {
            run.stderr_contains("ip6tables-nft-restore and the following input");
        }
    }
    for v in V::BOTH {
        assert_eq!(save(&ns, v, "iptables"), "");
        assert_eq!(save(&ns, v, "ip6tables"), "");
    }
    let nft = ns.stdout("nft", &["list", "ruleset"]);
    assert_eq!(nft.trim(), "", "no table was created");
    let tables = ns.stdout("cat", &["/proc/net/ip_tables_names"]);
    assert_eq!(tables, "");
    assert_eq!(ns.stdout("ip", &["rule"]), before_rules);
    assert_eq!(ns.stdout("ip", &["addr"]), before_addr);
}

#[test]
fn a_failed_ipv6_restore_rolls_ipv4_back() {
    needs_netns!();
    // Failing `ip6tables-*-restore` stand-ins first on PATH.
    let fail6 = TempDir::new("fail6");
    for name in ["ip6tables-nft-restore", "ip6tables-legacy-restore", "ip6tables-restore"] {
        fail6.script(name, "echo \"ip6tables-restore: line 2 failed\" >&2\nexit 1\n");
    }
    for v in V::BOTH {
        let ns = Netns::dual("rollback");
        add_foreign(&ns, v);
        let before = save(&ns, v, "iptables");
        Meshcap::new()
            .arg("istio-iptables")
            .args(TPROXY)
            .arg("--dual-stack")
            .netns(&ns)
            .variant(v)
            .env("PATH", fail6.path_first())
            .run()
            .expect_exit(1)
            .stderr_contains("line 2 failed")
            .stderr_contains("rolled back");
        assert_eq!(save(&ns, v, "iptables"), before, "{v:?}: IPv4 is as it was");
        let rules = ns.stdout("ip", &["rule"]);
        assert!(!rules.contains("lookup 133"), "no routes after a failure: {rules}");
    }
}

#[test]
fn concurrent_applies_take_turns() {
    needs_netns!();
    // Legacy in CNI mode too: the children's pod-scoped xtables lock (XTABLES_LOCKFILE on the
    // namespace path) must not fight meshcap's own namespace lock.
    for (v, extra) in [(V::Nft, &[][..]), (V::Legacy, &["--cni-mode"][..])] {
        let ns = Netns::ipv4("concurrent");
        let run = Meshcap::new()
            .arg("istio-iptables")
            .args(SIDECAR)
            .args(extra)
            .netns(&ns)
            .variant(v);
        let children: Vec<_> = (0..10).map(|_| run.spawn()).collect();
        for child in children {
            child.wait().success();
        }
        let (want, _) = reference(v, SIDECAR, false);
        assert_eq!(save(&ns, v, "iptables"), want, "{v:?}");
    }
}

#[test]
fn reconcile_moves_the_rules_between_variants() {
    needs_netns!();
    let ns = Netns::ipv4("move");
    apply(&ns, V::Nft, SIDECAR, &[]).success();
    // The same rules wanted in legacy: meshcap's chains in nft are drift (double capture).
    apply(&ns, V::Legacy, SIDECAR, &[])
        .expect_exit(1)
        .stderr_contains("also exist in the iptables-nft tables");
    assert!(!save(&ns, V::Legacy, "iptables").contains("ISTIO"), "nothing applied");
    apply(&ns, V::Legacy, SIDECAR, &["--reconcile"]).success();
    let (want, _) = reference(V::Legacy, SIDECAR, false);
    assert_eq!(save(&ns, V::Legacy, "iptables"), want);
    assert!(!save(&ns, V::Nft, "iptables").contains("ISTIO"), "the nft copy is gone");
}

/// `istio-iptables` before `args`, unless they name a command themselves (`istio-clean-iptables`).
fn command_for<'a>(args: &[&'a str]) -> Vec<&'a str> {
    match args.first() {
        Some(first) if first.starts_with("istio-") => Vec::new(),
        _ => vec!["istio-iptables"],
    }
}
