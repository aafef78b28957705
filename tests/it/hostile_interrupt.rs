//! Interrupted runs, with the real iptables in namespaces these tests create.
//! iptables-restore commits table by table, so a meshcap killed mid-restore leaves a family
//! with some tables applied and others not. The next run of the same plan recognises exactly
//! that state and completes it without `--reconcile`; anything else stays refused. A SIGINT
//! (as a terminal's Ctrl-C, to meshcap's whole process group) never leaves a half-applied
//! family: the restore child runs in its own group and meshcap finishes first.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use crate::support::cmd::meshcap_command as meshcap;
use crate::support::netfilter::{Variant as V, render, save};
use crate::support::netns::{Netns as NetNs, needs_netns};
use crate::support::run::{show, text};

fn v4_ns(tag: &str) -> NetNs {
    NetNs::ipv4(tag)
}

const FLAGS: &[&str] = &[
    "-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "*", "-c", "eth9",
];

fn apply(ns: &NetNs, extra: &[&str]) -> std::process::Output {
    let mut all = vec!["istio-iptables"];
    all.extend_from_slice(FLAGS);
    all.extend_from_slice(extra);
    all.extend_from_slice(&["--network-namespace", &ns.name]);
    meshcap(&all).output().unwrap()
}

/// The `*table` … `COMMIT` block of a restore payload.
fn block(payload: &str, table: &str) -> String {
    let start = payload.find(&format!("* {table}\n")).expect("table in payload");
    let end = start + payload[start..].find("COMMIT\n").unwrap() + "COMMIT\n".len();
    payload[start..end].to_string()
}

/// The state of a namespace after a clean apply of FLAGS.
fn reference() -> String {
    let ns = v4_ns("intref");
    let o = apply(&ns, &[]);
    assert!(o.status.success(), "{}", show(&o));
    save(&ns, V::Nft, "iptables")
}

#[test]
fn an_interrupted_apply_of_the_same_plan_is_completed() {
    needs_netns!();
    let want = reference();
    let payload = render(FLAGS, "v4", false);
    for applied in ["mangle", "nat"] {
        let ns = v4_ns("interrupted");
        let partial = block(&payload, applied);
        let o = ns.run_with_stdin("iptables-nft-restore", &["--noflush"], &partial);
        assert!(o.status.success(), "{}", show(&o));
        let o = apply(&ns, &[]);
        assert!(o.status.success(), "{applied:?}: {}", show(&o));
        assert!(
            text(&o.stderr).contains("interrupted run of this same plan"),
            "{}",
            show(&o)
        );
        assert_eq!(save(&ns, V::Nft, "iptables"), want, "{applied:?}");
    }
}

#[test]
fn other_partial_states_stay_refused() {
    needs_netns!();
    // Another plan's mangle table (another mark).
    let mut other: Vec<&str> = FLAGS.to_vec();
    other.extend_from_slice(&["-t", "1234"]);
    let other_payload = render(&other, "v4", false);
    // This plan's mangle table with a foreign rule in an ISTIO_* chain.
    let payload = render(FLAGS, "v4", false);
    let tampered = block(&payload, "mangle").replace("COMMIT\n", "-A ISTIO_DIVERT -p udp -j RETURN\nCOMMIT\n");
    // This plan's mangle table, and part of its nat table.
    let nat = block(&payload, "nat");
    let half_nat: String = nat
        .lines()
        .take(nat.lines().count() - 3)
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + "COMMIT\n";
    for (what, partial) in [
        ("another plan", block(&other_payload, "mangle")),
        ("a foreign rule", tampered),
        ("a table half there", block(&payload, "mangle") + &half_nat),
    ] {
        let ns = v4_ns("refused");
        let o = ns.run_with_stdin("iptables-nft-restore", &["--noflush"], &partial);
        assert!(o.status.success(), "{what}: {}", show(&o));
        let before = save(&ns, V::Nft, "iptables");
        let o = apply(&ns, &[]);
        assert!(!o.status.success(), "{what}: accepted\n{}", show(&o));
        assert!(text(&o.stderr).contains("--reconcile"), "{what}: {}", show(&o));
        assert_eq!(save(&ns, V::Nft, "iptables"), before, "{what}: nothing changed");
    }
}

/// SIGINT to meshcap's process group (what a terminal's Ctrl-C does) while it applies a large
/// plan: the family is never left half applied — either nothing of meshcap's is there (the
/// signal came before any change) or exactly the plan.
#[test]
fn sigint_to_the_process_group_never_leaves_a_half_applied_family() {
    needs_netns!();
    let ifaces: Vec<String> = (0..3000).map(|i| format!("x{i}")).collect();
    let list = ifaces.join(",");
    let mut flags: Vec<&str> = FLAGS.to_vec();
    flags.extend_from_slice(&["-k", &list]);
    for delay_ms in [50u64, 150, 300, 600] {
        let ns = v4_ns("sigint");
        let mut args = vec!["istio-iptables"];
        args.extend_from_slice(&flags);
        args.extend_from_slice(&["--network-namespace", &ns.name]);
        let mut cmd = meshcap(&args);
        cmd.process_group(0).stdout(Stdio::null()).stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: signals the process group this test created (the child's pid is its id).
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGINT);
        }
        let o = child.wait_with_output().unwrap();
        let live = save(&ns, V::Nft, "iptables");
        if live.contains("ISTIO_") {
            let mut check = vec!["check"];
            check.extend_from_slice(&flags);
            check.extend_from_slice(&["--network-namespace", &ns.name]);
            let c = meshcap(&check).output().unwrap();
            assert_eq!(
                c.status.code(),
                Some(0),
                "{delay_ms} ms: not the whole plan\n{}\nmeshcap: {}",
                show(&c),
                show(&o)
            );
        }
        if o.status.success() {
            continue;
        }
        // Killed before the guard, or finished and reported the signal.
        let err = text(&o.stderr);
        assert!(
            o.status.code().is_none() || err.contains("interrupted by signal 2"),
            "{delay_ms} ms: {}",
            show(&o)
        );
    }
}
