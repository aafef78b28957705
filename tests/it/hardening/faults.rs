//! Faults during apply, each in a namespace the test creates: a restore that commits part of
//! its input and fails, a held xtables lock, SIGKILL at several points, the namespace deleted
//! while meshcap runs, a kernel feature missing, and `--network-namespace` naming things that
//! are not namespaces. Stand-ins for `*-restore` (shell scripts first on `PATH`) create the
//! faults; the state is read back with the real `*-save`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{LIMIT, assert_nothing_applied, wait_for};
use crate::support::netfilter::{add_foreign, iptables_reference as reference, save};
use crate::support::{Meshcap, Netns, SIDECAR, TPROXY, TempDir, Variant as V, needs_netns, real};

/// `meshcap ARGS --network-namespace NS --force-iptables-binary V`, bounded by [`LIMIT`].
fn meshcap_in(ns: &Netns, v: V, args: &[&str]) -> Meshcap {
    Meshcap::new()
        .arg("istio-iptables")
        .args(args)
        .netns(ns)
        .variant(v)
        .time_limit(LIMIT)
}

fn filter_rules(ns: &Netns, v: V, base: &str) -> String {
    ns.stdout(&v.tool(base, "-save"), &["-t", "filter"])
        .lines()
        .filter(|l| l.starts_with("-A"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_partly_committed_ipv6_restore_is_rolled_back_with_ipv4() {
    needs_netns!();
    for v in V::BOTH {
        // The first ip6tables restore commits its first table for real, then fails like a
        // refused second table; later calls (the rollback) are the real program.
        let w = TempDir::new("partial6");
        let restore = v.tool("ip6tables", "-restore");
        let body = format!(
            "if [ -e {m} ]; then exec {real} \"$@\"; fi\ntouch {m}\nawk '{{print}} /^COMMIT$/ {{exit}}' | {real} \"$@\" || exit 3\necho 'ip6tables-restore: line 40 failed' >&2\nexit 1\n",
            m = w.join("called").display(),
            real = real(&restore).display()
        );
        w.script(&restore, &body);
        let ns = Netns::dual("partial6");
        add_foreign(&ns, v);
        let before4 = save(&ns, v, "iptables");
        let before6 = save(&ns, v, "ip6tables");
        meshcap_in(&ns, v, TPROXY)
            .arg("--dual-stack")
            .env("PATH", w.path_first())
            .run()
            .expect_exit(1)
            .stderr_contains("the IPv4 and IPv6 rules were rolled back");
        assert_eq!(save(&ns, v, "iptables"), before4, "{v:?}: IPv4 as before");
        assert_eq!(
            save(&ns, v, "ip6tables"),
            before6,
            "{v:?}: the committed IPv6 table too"
        );
    }
}

#[test]
fn a_held_xtables_lock_makes_meshcap_wait_then_fail_clearly() {
    needs_netns!();
    // The lock is a file of the test's own (XTABLES_LOCKFILE, honoured by legacy iptables
    // ≥ 1.8.6) so the machine's /run/xtables.lock is never held.
    let w = TempDir::new("xtlock");
    let lock = w.write("xtables.lock", "");
    // `-o`: the lock is held by flock itself (not its `sleep` child), so killing it frees it.
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while Command::new("flock")
        .arg("-n")
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(start.elapsed() < LIMIT, "the helper never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ns = Netns::ipv4("xtlock");
    let apply = meshcap_in(&ns, V::Legacy, SIDECAR)
        .env("XTABLES_LOCKFILE", &lock)
        .env("MESHCAP_XTABLES_WAIT", "2");
    let start = Instant::now();
    let run = apply.run();
    let waited = start.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    run.expect_exit(1)
        .stderr_contains("--wait=2")
        .stderr_contains("another process holds the xtables lock; meshcap waited 2s");
    assert!(waited >= Duration::from_secs(2), "it waited ({waited:?})");
    assert!(!save(&ns, V::Legacy, "iptables").contains("ISTIO"), "nothing applied");
    // The lock released, the same run succeeds.
    apply.run().success();
    assert!(save(&ns, V::Legacy, "iptables").contains("ISTIO_OUTPUT"));
}

/// A `*-restore` stand-in that marks `started`, waits until the test says `go` (bounded),
/// runs the real program, and marks `done`.
fn gated_restore(w: &TempDir, name: &str) {
    let body = format!(
        "touch {started}\ni=0\nwhile [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n{real} \"$@\"\nrc=$?\ntouch {done}\nexit $rc\n",
        started = w.join("started").display(),
        go = w.join("go").display(),
        done = w.join("done").display(),
        real = real(name).display()
    );
    w.script(name, &body);
}

#[test]
fn sigkill_while_a_restore_runs_leaves_the_family_entirely_new() {
    needs_netns!();
    for v in V::BOTH {
        let w = TempDir::new("kill-mid");
        gated_restore(&w, &v.tool("iptables", "-restore"));
        let ns = Netns::ipv4("killmid");
        let child = meshcap_in(&ns, v, SIDECAR).env("PATH", w.path_first()).spawn();
        wait_for(&w.join("started"), LIMIT);
        child.kill(); // SIGKILL
        w.write("go", "");
        wait_for(&w.join("done"), LIMIT);
        // The restore had its whole input and finished its transaction(s): entirely new.
        let (want, _) = reference(v, SIDECAR, false);
        assert_eq!(save(&ns, v, "iptables"), want, "{v:?}");
        meshcap_in(&ns, v, SIDECAR)
            .run()
            .success()
            .stderr_contains("reconciliation not needed");
    }
}

#[test]
fn sigkill_between_families_leaves_one_new_one_old_and_a_rerun_completes() {
    needs_netns!();
    for v in V::BOTH {
        // The IPv6 restore kills meshcap before doing anything.
        let w = TempDir::new("kill-between");
        w.script(&v.tool("ip6tables", "-restore"), "kill -9 $PPID\nexit 1\n");
        let ns = Netns::dual("killbetween");
        let apply = meshcap_in(&ns, v, SIDECAR).arg("--dual-stack");
        apply.clone().env("PATH", w.path_first()).run().expect_killed();
        let (want4, want6) = reference(v, SIDECAR, true);
        assert_eq!(save(&ns, v, "iptables"), want4, "{v:?}: IPv4 entirely new");
        assert_eq!(save(&ns, v, "ip6tables"), "", "{v:?}: IPv6 entirely old");
        apply.run().success();
        assert_eq!(save(&ns, v, "iptables"), want4);
        assert_eq!(save(&ns, v, "ip6tables"), want6, "{v:?}: the re-run completed IPv6");
    }
}

/// A `*-restore` stand-in that runs the real program for the first `real_calls` calls and
/// kills its parent (meshcap) on the next.
fn kill_on_call(w: &TempDir, name: &str, real_calls: usize) {
    let mut body = String::new();
    for n in 1..=real_calls {
        body.push_str(&format!(
            "if [ ! -e {m} ]; then touch {m}; exec {real} \"$@\"; fi\n",
            m = w.join(&format!("call{n}")).display(),
            real = real(name).display()
        ));
    }
    body.push_str("kill -9 $PPID\nexit 1\n");
    w.script(name, &body);
}

#[test]
fn sigkill_during_reconcile_keeps_failing_closed_until_the_rules_are_in_place() {
    needs_netns!();
    let v = V::Nft;
    let changed: Vec<&str> = [SIDECAR, &["-q", "9000"]].concat();
    let guardrail = "-A INPUT -p tcp -j DROP";

    // Killed after the guardrails went in, before the rebuild: old rules + guardrails.
    let ns = Netns::ipv4("killguard");
    meshcap_in(&ns, v, SIDECAR).run().success();
    let w = TempDir::new("kill-guard");
    kill_on_call(&w, &v.tool("iptables", "-restore"), 1);
    let reconcile = meshcap_in(&ns, v, &changed).arg("--reconcile");
    reconcile.clone().env("PATH", w.path_first()).run().expect_killed();
    assert!(filter_rules(&ns, v, "iptables").contains(guardrail));
    // Without --reconcile the drift is refused and the guardrails stay (fail closed).
    meshcap_in(&ns, v, &changed)
        .run()
        .expect_exit(1)
        .stderr_contains("the guardrails of an interrupted run are in place");
    assert!(filter_rules(&ns, v, "iptables").contains(guardrail));
    // --reconcile rebuilds and removes them.
    reconcile.run().success();
    assert_eq!(filter_rules(&ns, v, "iptables"), "", "no guardrail left");
    assert_eq!(save(&ns, v, "iptables"), reference(v, &changed, false).0);

    // Killed while removing the guardrails: new rules + guardrails. A plain re-run (what a
    // restarted init container does) finds the rules in place and removes them.
    let ns = Netns::ipv4("killremove");
    meshcap_in(&ns, v, SIDECAR).run().success();
    let w = TempDir::new("kill-remove");
    kill_on_call(&w, &v.tool("iptables", "-restore"), 2);
    meshcap_in(&ns, v, &changed)
        .arg("--reconcile")
        .env("PATH", w.path_first())
        .run()
        .expect_killed();
    assert!(filter_rules(&ns, v, "iptables").contains(guardrail));
    meshcap_in(&ns, v, &changed)
        .run()
        .success()
        .stderr_contains("removing the guardrails an interrupted meshcap run left");
    assert_eq!(filter_rules(&ns, v, "iptables"), "", "no guardrail left");
    assert_eq!(save(&ns, v, "iptables"), reference(v, &changed, false).0);
}

#[test]
fn the_namespace_deleted_while_running_is_a_clear_error() {
    needs_netns!();
    let v = V::Nft;
    let w = TempDir::new("ns-deleted");
    gated_restore(&w, &v.tool("iptables", "-restore"));
    let ns = Netns::ipv4("deleted");
    let child = meshcap_in(&ns, v, SIDECAR).env("PATH", w.path_first()).spawn();
    wait_for(&w.join("started"), LIMIT);
    let o = Command::new(real("ip"))
        .args(["netns", "del", &ns.name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    w.write("go", "");
    child.wait().expect_exit(1).stderr_contains(&format!(
        "network namespace '/var/run/netns/{}' was deleted while meshcap was running",
        ns.name
    ));
}

#[test]
fn a_missing_kernel_feature_is_named() {
    needs_netns!();
    for v in V::BOTH {
        // The first restore fails as iptables does when the kernel lacks the TPROXY target
        // (xt_TPROXY not loadable), pointing at the first TPROXY rule.
        let w = TempDir::new("no-tproxy");
        let restore = v.tool("iptables", "-restore");
        let body = format!(
            "if [ -e {m} ]; then exec {real} \"$@\"; fi\ntouch {m}\nn=$(awk '/-j TPROXY/ {{print NR; exit}}')\necho \"iptables-restore: line $n failed: No chain/target/match by that name.\" >&2\nexit 1\n",
            m = w.join("called").display(),
            real = real(&restore).display()
        );
        w.script(&restore, &body);
        let ns = Netns::ipv4("notproxy");
        meshcap_in(&ns, v, TPROXY)
            .env("PATH", w.path_first())
            .run()
            .expect_exit(1)
            .stderr_contains("of the input: '-A ISTIO_TPROXY ")
            .stderr_contains("it needs target TPROXY")
            .stderr_contains("probably missing");
        assert_nothing_applied(&ns, &format!("{v:?}"));
    }
}

#[test]
fn namespace_paths_that_are_not_namespaces_apply_nothing_here() {
    needs_netns!();
    // meshcap runs inside a throw-away namespace, so "here" is not the machine's namespace.
    let here = Netns::ipv4("nothere");
    let w = TempDir::new("not-ns");
    let fifo = w.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let dir = w.path().display().to_string();
    let fifo = fifo.display().to_string();
    let long = format!("--network-namespace={}", "n".repeat(300));
    let cases: Vec<(String, String)> = vec![
        (
            format!("--network-namespace={fifo}"),
            format!("'{fifo}' is not a network namespace"),
        ),
        (
            format!("--network-namespace={dir}"),
            format!("'{dir}' is not a network namespace"),
        ),
        (
            "--network-namespace=/dev/null".into(),
            "'/dev/null' is not a network namespace".into(),
        ),
        (
            "--network-namespace=-j ACCEPT".into(),
            "cannot open network namespace '/var/run/netns/-j ACCEPT'".into(),
        ),
        (long, "File name too long".into()),
    ];
    for (flag, named) in cases {
        Meshcap::new()
            .arg("istio-iptables")
            .args(SIDECAR)
            .arg(&flag)
            .inside(&here)
            .time_limit(LIMIT)
            .run()
            .expect_exit(1)
            .stderr_contains(&named);
        assert_nothing_applied(&here, &flag);
    }
}
