//! The dry run tells the truth (issue 16 item 4): in namespaces these tests create, with the
//! real kernel and binaries, `--dry-run` reads the live state read-only and says what a real
//! run would do there — apply (clean state), nothing (already applied), complete an
//! interrupted run, rebuild (`--reconcile`, `--force-apply`), or refuse with the diff the real
//! run prints — naming the binaries the real run would choose, for both backends and the
//! cleanup. Where the state cannot be read (no rights, no binary) it says so and prints the
//! clean namespace's commands. After every dry run the namespace is exactly as before (rules of
//! both backends and variants, legacy tables not even instantiated, routing), and the recorded
//! stream (`DRY_RUN_FILE_PATH`) never depends on what was read.

use std::fs;

use crate::support::netfilter::{Variant as V, nft_ruleset, render, save};
use crate::support::{Meshcap, Netns, Run, SIDECAR, TempDir, needs_netns, real};

/// Everything a run could change: both backends' rules (`nft list ruleset` shows the
/// iptables-nft tables too), the legacy tables (whether they exist at all, then their rules)
/// and the routing state.
fn state(ns: &Netns) -> String {
    let mut out = nft_ruleset(ns);
    for (names, base) in [("ip_tables_names", "iptables"), ("ip6_tables_names", "ip6tables")] {
        let tables = ns.stdout("cat", &[&format!("/proc/net/{names}")]);
        out.push_str(&format!("== legacy {base}: {tables}\n"));
        if !tables.is_empty() {
            out.push_str(&save(ns, V::Legacy, base));
        }
    }
    for args in [
        &["rule"][..],
        &["-6", "rule"],
        &["addr"],
        &["route", "show", "table", "all"],
    ] {
        out.push_str(&ns.stdout("ip", args));
    }
    out
}

/// `meshcap istio-iptables SIDECAR EXTRA --network-namespace NS`.
fn meshcap(ns: &Netns, extra: &[&str]) -> Meshcap {
    Meshcap::new().arg("istio-iptables").args(SIDECAR).args(extra).netns(ns)
}

/// A real run; must succeed.
fn apply(ns: &Netns, extra: &[&str]) {
    meshcap(ns, extra).run().success();
}

/// `--dry-run` with EXTRA: exit 0 and the namespace unchanged.
fn dry(ns: &Netns, extra: &[&str]) -> Run {
    dry_with(ns, meshcap(ns, extra).arg("--dry-run"))
}

fn dry_with(ns: &Netns, cmd: Meshcap) -> Run {
    let before = state(ns);
    let run = cmd.run();
    run.success()
        .stderr_contains("skipping configuring routes due to dry run mode");
    assert_eq!(state(ns), before, "the dry run changed the namespace:\n{run}");
    run
}

const CLEAN_IPT: &str =
    "dry run: IPv4 (iptables-nft): a real run would apply the rules (clean state) with iptables-nft-restore";
const NOTHING_IPT: &str = "dry run: IPv4 (iptables-nft): nothing to do: the rules are already applied and unchanged";
const DRIFT_LINE: &str = "- -t nat -A ISTIO_OUTPUT -d 10.0.0.1/32 -j RETURN  # unexpected";

#[test]
fn iptables_clean_applied_drifted_and_reconciled() {
    needs_netns!();
    let ns = Netns::ipv4("dry-ipt");
    dry(&ns, &[])
        .stderr_contains("Clean-state detected, new iptables are needed")
        .stderr_contains(CLEAN_IPT)
        .stderr_contains(&format!(
            "Running command (dry run, without lock): iptables-nft-restore --noflush (in network namespace {})",
            ns.path().display()
        ))
        .stderr_contains(
            "Running iptables restore with: iptables-nft-restore and the following input:\n* nat\n-N ISTIO_INBOUND",
        )
        .stderr_lacks("IPv6 (");

    // As a real run reads: a fresh namespace costs no process, an applied one one save.
    const DEBUG: &str = "--log_output_level=default:debug";
    assert_eq!(dry(&ns, &[DEBUG]).spawns(), 0);
    apply(&ns, &[]);
    assert_eq!(dry(&ns, &[DEBUG]).stderr_contains(NOTHING_IPT).spawns(), 1);
    dry(&ns, &[])
        .stderr_contains("Found compatible residues of old iptables rules/chains, reconciliation not needed")
        .stderr_contains(NOTHING_IPT)
        .stderr_lacks("Clean-state detected")
        .stderr_lacks("Running iptables restore");
    dry(&ns, &["--force-apply"]).stderr_contains(
        "dry run: IPv4 (iptables-nft): a real run would rebuild the unchanged rules (--force-apply) with iptables-nft-restore",
    );

    // A hand-made change: the dry run refuses as the real run does, with the same diff.
    let o = ns.run(
        "iptables-nft",
        &["-t", "nat", "-A", "ISTIO_OUTPUT", "-d", "10.0.0.1", "-j", "RETURN"],
    );
    assert!(o.status.success(), "{o:?}");
    dry(&ns, &[])
        .stderr_contains("Found residues of old iptables rules/chains, reconciliation is recommended")
        .stderr_contains(&format!("IPv4: 0 missing, 1 unexpected, 0 misordered\n{DRIFT_LINE}"))
        .stderr_contains("dry run: a real run would refuse: the live ISTIO_* rules differ from the planned ones (IPv4: 0 missing, 1 unexpected, 0 misordered); nothing was changed; rerun with --reconcile to rebuild them")
        .stderr_lacks("Running iptables restore");
    meshcap(&ns, &[])
        .run()
        .expect_exit(1)
        .stderr_contains(DRIFT_LINE)
        .stderr_contains("meshcap: the live ISTIO_* rules differ from the planned ones (IPv4: 0 missing, 1 unexpected, 0 misordered)");

    // --reconcile: the rebuild the real run would do, with its restore input.
    dry(&ns, &["--reconcile"])
        .stderr_contains(DRIFT_LINE)
        .stderr_contains("dry run: IPv4 (iptables-nft): a real run would rebuild meshcap's rules (--reconcile) with iptables-nft-restore")
        .stderr_contains("dry run: a real run would set up guardrails (TCP and UDP dropped while it rebuilds)")
        .stderr_contains("Running iptables restore with: iptables-nft-restore and the following input:\n* nat\n-D OUTPUT -j ISTIO_OUTPUT\n")
        .stderr_contains("-X ISTIO_OUTPUT\n-X ISTIO_REDIRECT\n-N ISTIO_INBOUND\n")
        .stderr_lacks("dry run: a real run would refuse");
    apply(&ns, &["--reconcile"]);
    dry(&ns, &[]).stderr_contains(NOTHING_IPT);

    // The cleanup: what it would remove, then (once removed) that nothing is left.
    dry(&ns, &["--cleanup-only"])
        .stderr_contains("dry run: IPv4 (iptables-nft): a real run would remove meshcap's rules with iptables-nft-restore")
        .stderr_contains("Running iptables restore with: iptables-nft-restore and the following input:\n* nat\n-D OUTPUT -j ISTIO_OUTPUT\n");
    apply(&ns, &["--cleanup-only"]);
    dry(&ns, &["--cleanup-only"])
        .stderr_contains("dry run: nothing to clean up: no iptables rules of meshcap's are live")
        .stderr_lacks("Running iptables restore");
    dry_with(
        &ns,
        Meshcap::new().arg("istio-clean-iptables").netns(&ns).arg("--dry-run"),
    )
    .stderr_contains("dry run: nothing to clean up");
}

#[test]
fn the_variant_named_is_the_one_a_real_run_chooses() {
    needs_netns!();
    let ns = Netns::ipv4("dry-variant");
    // Forced legacy in a clean namespace: named with its lock flag; no legacy table is created
    // (the namespace check in `dry` includes /proc/net/ip_tables_names).
    dry(&ns, &["--force-iptables-binary", "legacy"])
        .stderr_contains("dry run: IPv4 (iptables-legacy): a real run would apply the rules (clean state) with iptables-legacy-restore")
        .stderr_contains("Running command (dry run, with global lock): iptables-legacy-restore --noflush --wait=");
    // Rules in legacy: a real run without the flag keeps to legacy, and so does the dry run.
    apply(&ns, &["--force-iptables-binary", "legacy"]);
    dry(&ns, &[])
        .stderr_contains("dry run: IPv4 (iptables-legacy): nothing to do: the rules are already applied and unchanged");
    // Forcing nft over them: meshcap's chains in the other variant are drift, refused.
    dry(&ns, &["--force-iptables-binary", "nft"])
        .stderr_contains("IPv4: meshcap's chains also exist in the iptables-legacy tables")
        .stderr_contains("dry run: a real run would refuse:");

    let ns = Netns::ipv4("dry-variant-nft");
    apply(&ns, &[]);
    dry(&ns, &[]).stderr_contains(NOTHING_IPT);
}

#[test]
fn an_interrupted_run_would_be_completed() {
    needs_netns!();
    const FLAGS: &[&str] = &[
        "-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "*", "-c", "eth9",
    ];
    let ns = Netns::ipv4("dry-interrupted");
    // What a run killed between its two tables' commits leaves: nat applied, mangle not.
    let payload = render(FLAGS, "v4", false);
    let start = payload.find("* nat\n").unwrap();
    let nat = &payload[start..start + payload[start..].find("COMMIT\n").unwrap() + "COMMIT\n".len()];
    let o = ns.run_with_stdin("iptables-nft-restore", &["--noflush"], nat);
    assert!(o.status.success(), "{o:?}");
    let cmd = Meshcap::new()
        .arg("istio-iptables")
        .args(FLAGS)
        .netns(&ns)
        .arg("--dry-run");
    dry_with(&ns, cmd)
        .stderr_contains("[IPv4] found what an interrupted run of this same plan leaves (tables nat applied, mangle missing); a real run would complete it")
        .stderr_contains("dry run: IPv4 (iptables-nft): a real run would complete an interrupted run of this plan with iptables-nft-restore")
        .stderr_lacks("would refuse");
}

/// `--native-nftables` and EXTRA.
fn nft<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--native-nftables"];
    v.extend_from_slice(extra);
    v
}

#[test]
fn nftables_clean_applied_drifted_and_reconciled() {
    needs_netns!();
    let ns = Netns::ipv4("dry-nft");
    dry(&ns, &nft(&[]))
        .stderr_contains("Clean-state detected, new nftables rules are needed")
        .stderr_contains(
            "dry run: nftables (netlink): a real run would apply the rules (clean state) in one nf_tables batch",
        )
        .stderr_contains("Running nft with the following input:\nadd table inet istio-proxy-nat\n");

    apply(&ns, &nft(&[]));
    dry(&ns, &nft(&[]))
        .stderr_contains("Found compatible nftables rules, reconciliation not needed")
        .stderr_contains("dry run: nftables (netlink): nothing to do: the rules are already applied and unchanged")
        .stderr_lacks("Running nft with");

    let o = ns.run(
        "nft",
        &[
            "add",
            "rule",
            "inet",
            "istio-proxy-nat",
            "istio-output",
            "ip",
            "daddr",
            "10.0.0.1",
            "counter",
            "return",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let diff = "- add rule inet istio-proxy-nat istio-output ip daddr 10.0.0.1/32 counter return  # unexpected";
    dry(&ns, &nft(&[]))
        .stderr_contains("Found residues of old nftables rules, reconciliation is recommended")
        .stderr_contains(diff)
        .stderr_contains(
            "dry run: a real run would refuse: the live istio-proxy-* nftables rules differ from the planned ones",
        )
        .stderr_lacks("Running nft with");
    meshcap(&ns, &nft(&[])).run().expect_exit(1).stderr_contains(diff);
    dry(&ns, &nft(&["--reconcile"]))
        .stderr_contains("dry run: nftables (netlink): a real run would rebuild meshcap's tables (--reconcile) in one nf_tables batch")
        .stderr_contains("Running nft with the following input:\ndelete table inet istio-proxy-nat\nadd table inet istio-proxy-nat\n");

    dry(&ns, &nft(&["--cleanup-only"]))
        .stderr_contains("dry run: a real run would delete meshcap's nftables tables (istio-proxy-nat) in one transaction")
        .stderr_contains("Running nft with the following input:\nadd table inet istio-proxy-nat\ndelete table inet istio-proxy-nat\n");
    apply(&ns, &nft(&["--cleanup-only"]));
    dry(&ns, &nft(&["--cleanup-only"]))
        .stderr_contains("No nftables tables of meshcap's exist, nothing to clean up")
        .stderr_lacks("Running nft with");

    // The iptables backend's rules: drift for this backend, refused; --reconcile would remove
    // them after its transaction.
    apply(&ns, &[]);
    dry(&ns, &nft(&[]))
        .stderr_contains(
            "Found residues of the iptables backend's rules (ISTIO_* chains), reconciliation is recommended",
        )
        .stderr_contains("meshcap's ISTIO_* chains also exist in the iptables-nft tables (IPv4)")
        .stderr_contains("dry run: a real run would refuse:");
    dry(&ns, &nft(&["--reconcile"]))
        .stderr_contains("dry run: after the transaction a real run would remove the iptables backend's rules with iptables-nft-restore:\n* nat\n");
    // And the other way round: the iptables backend over the nftables backend's tables.
    apply(&ns, &["--cleanup-only"]);
    apply(&ns, &nft(&[]));
    dry(&ns, &[])
        .stderr_contains("dry run: a real run would refuse: meshcap's istio-proxy-* tables also exist in nftables (inet): istio-proxy-nat")
        .stderr_lacks("Running iptables restore");
}

/// The stream a dry run records, from `cmd`.
fn recorded(cmd: Meshcap) -> String {
    let dir = TempDir::new("dry-stream");
    let file = dir.join("out.file");
    cmd.env("DRY_RUN_FILE_PATH", &file).run().success();
    fs::read_to_string(&file).unwrap()
}

#[test]
fn an_unreadable_state_is_said_and_the_clean_commands_printed() {
    needs_netns!();
    let ns = Netns::ipv4("dry-unread");
    apply(&ns, &[]);
    let unread = "dry run: the live state could not be read (";
    let clean = "); showing what a real run would do in a clean namespace";
    // Inside the namespace without CAP_NET_ADMIN over it (a user namespace of its own): as on
    // a laptop without root. The namespace holds rules, yet nothing is claimed about them.
    let unprivileged = |extra: &[&str]| {
        Meshcap::new()
            .arg("istio-iptables")
            .args(SIDECAR)
            .args(extra)
            .arg("--dry-run")
            .launcher(["unshare", "--user", "--"])
            .inside(&ns)
    };
    dry_with(&ns, unprivileged(&[]))
        .stderr_contains(&format!("{unread}the kernel refuses to list the nftables tables (Operation not permitted (os error 1)): CAP_NET_ADMIN in the namespace is needed{clean}"))
        .stderr_contains("Running command (dry run, without lock): iptables-restore --noflush\n")
        .stderr_contains("Running iptables restore with: iptables-restore and the following input:\n* nat\n-N ISTIO_INBOUND")
        .stderr_lacks("Clean-state detected")
        .stderr_lacks("nothing to do");
    dry_with(&ns, unprivileged(&nft(&[])))
        .stderr_contains(unread)
        .stderr_contains("Running nft with the following input:\nadd table inet istio-proxy-nat\n");

    // A namespace named but not enterable: IPv6 is not detected either; both said.
    let outside = Meshcap::new()
        .arg("istio-iptables")
        .args(SIDECAR)
        .netns(&ns)
        .arg("--dry-run")
        .launcher(["unshare", "--user", "--"]);
    let entering = format!(
        "cannot enter network namespace '{}': Operation not permitted (os error 1)",
        ns.path().display()
    );
    dry_with(&ns, outside.clone())
        .stderr_contains(&format!(
            "dry run: IPv6 could not be detected ({entering}); showing the IPv4 rules only"
        ))
        .stderr_contains(&format!("{unread}{entering}{clean}"))
        .stderr_contains("Running iptables restore with: iptables-restore and the following input:");

    // No iptables binary at all: the real run would fail; said, and still printed.
    dry_with(&ns, meshcap(&ns, &["--dry-run"]).env("PATH", "/nonexistent"))
        .stderr_contains(&format!("{unread}did not find a usable iptables binary 'iptables'"))
        .stderr_contains("Running iptables restore with: iptables-restore and the following input:");

    // The recorded stream is Istio's, whatever was read: unreadable, applied, clean.
    let unreadable = recorded(unprivileged(&[]).env("ENABLE_INBOUND_IPV6", "false"));
    let applied = recorded(meshcap(&ns, &["--dry-run"]).env("ENABLE_INBOUND_IPV6", "false"));
    let fresh = Netns::ipv4("dry-unread-clean");
    let clean_ns = recorded(meshcap(&fresh, &["--dry-run"]).env("ENABLE_INBOUND_IPV6", "false"));
    assert!(
        unreadable.starts_with("iptables-save\nip6tables-save\n* nat\n"),
        "{unreadable}"
    );
    assert_eq!(unreadable, applied);
    assert_eq!(unreadable, clean_ns);
}

#[test]
fn a_run_in_progress_is_said() {
    needs_netns!();
    let ns = Netns::ipv4("dry-busy");
    // A real run holds the namespace's lock until it exits; here its restore takes 4 s.
    let slow = TempDir::new("dry-slow");
    slow.script(
        "iptables-nft-restore",
        &format!("sleep 4\nexec {} \"$@\"\n", real("iptables-nft-restore").display()),
    );
    let running = meshcap(&ns, &[]).env("PATH", slow.path_first()).spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let o = meshcap(&ns, &["--dry-run"]).run();
        o.success();
        if o.stderr.contains(
            "dry run: another meshcap run is working on this namespace right now; the state read below may be half written",
        ) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the busy lock was never reported:\n{o}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The dry runs never held it: the real run finishes as usual.
    running.wait().success();
    dry(&ns, &[]).stderr_contains(NOTHING_IPT);
}
