//! Faults during apply, each in a namespace the test creates: a restore that commits part of
//! its input and fails, a held xtables lock, SIGKILL at several points, the namespace deleted
//! while meshcap runs, a kernel feature missing, and `--network-namespace` naming things that
//! are not namespaces. Stand-ins for `*-restore` (shell scripts first on `PATH`) create the
//! faults; the state is read back with the real `*-save`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Wrappers, assert_nothing_applied, output_within, real, wait_for};
use crate::apply::{SIDECAR, TPROXY, V, add_foreign, reference, save, show, text, v4_ns};
use crate::support::{NetNs, meshcap, meshcap_bin, netns_available};

const LIMIT: Duration = Duration::from_secs(30);

/// `args` + `--network-namespace ns --force-iptables-binary v` + `extra`.
fn args_for<'a>(ns: &'a NetNs, v: V, args: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = [&["istio-iptables"][..], args].concat();
    all.extend_from_slice(extra);
    all.extend_from_slice(&["--network-namespace", &ns.name, "--force-iptables-binary", v.name()]);
    all
}

fn dual_stack_ns(tag: &str) -> NetNs {
    let ns = v4_ns(tag);
    ns.ip(&["-6", "addr", "add", "fd00::2/128", "dev", "lo"]);
    ns
}

fn filter_rules(ns: &NetNs, v: V, base: &str) -> String {
    let o = ns.run(&v.tool(base, "-save"), &["-t", "filter"]);
    text(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("-A"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_partly_committed_ipv6_restore_is_rolled_back_with_ipv4() {
    if !netns_available() {
        return;
    }
    for v in [V::Nft, V::Legacy] {
        // The first ip6tables restore commits its first table for real, then fails like a
        // refused second table; later calls (the rollback) are the real program.
        let w = Wrappers::new("partial6");
        let restore = v.tool("ip6tables", "-restore");
        let body = format!(
            "if [ -e {m} ]; then exec {real} \"$@\"; fi\ntouch {m}\nawk '{{print}} /^COMMIT$/ {{exit}}' | {real} \"$@\" || exit 3\necho 'ip6tables-restore: line 40 failed' >&2\nexit 1\n",
            m = w.file("called").display(),
            real = real(&restore).display()
        );
        w.script(&restore, &body);
        let ns = dual_stack_ns("partial6");
        add_foreign(&ns, v);
        let before4 = save(&ns, v, "iptables");
        let before6 = save(&ns, v, "ip6tables");
        let o = meshcap(&args_for(&ns, v, TPROXY, &["--dual-stack"]))
            .env("PATH", w.path_first())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{v:?}: {}", show(&o));
        let err = text(&o.stderr);
        assert!(err.contains("the IPv4 and IPv6 rules were rolled back"), "{v:?}: {err}");
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
    if !netns_available() {
        return;
    }
    // The lock is a file of the test's own (XTABLES_LOCKFILE, honoured by legacy iptables
    // ≥ 1.8.6) so the machine's /run/xtables.lock is never held.
    let w = Wrappers::new("xtlock");
    let lock = w.file("xtables.lock");
    std::fs::write(&lock, "").unwrap();
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
    let ns = v4_ns("xtlock");
    let run = || {
        let mut cmd = meshcap(&args_for(&ns, V::Legacy, SIDECAR, &[]));
        cmd.env("XTABLES_LOCKFILE", &lock).env("MESHCAP_XTABLES_WAIT", "2");
        cmd
    };
    let start = Instant::now();
    let o = output_within(&mut run(), LIMIT);
    let waited = start.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(err.contains("--wait=2"), "the restore was told to wait: {err}");
    assert!(
        err.contains("another process holds the xtables lock; meshcap waited 2s"),
        "{err}"
    );
    assert!(waited >= Duration::from_secs(2), "it waited ({waited:?})");
    assert!(!save(&ns, V::Legacy, "iptables").contains("ISTIO"), "nothing applied");
    // The lock released, the same run succeeds.
    let o = output_within(&mut run(), LIMIT);
    assert!(o.status.success(), "{}", show(&o));
    assert!(save(&ns, V::Legacy, "iptables").contains("ISTIO_OUTPUT"));
}

/// A `*-restore` stand-in that marks `started`, waits until the test says `go` (bounded),
/// runs the real program, and marks `done`.
fn gated_restore(w: &Wrappers, name: &str) {
    let body = format!(
        "touch {started}\ni=0\nwhile [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n{real} \"$@\"\nrc=$?\ntouch {done}\nexit $rc\n",
        started = w.file("started").display(),
        go = w.file("go").display(),
        done = w.file("done").display(),
        real = real(name).display()
    );
    w.script(name, &body);
}

#[test]
fn sigkill_while_a_restore_runs_leaves_the_family_entirely_new() {
    if !netns_available() {
        return;
    }
    for v in [V::Nft, V::Legacy] {
        let w = Wrappers::new("kill-mid");
        gated_restore(&w, &v.tool("iptables", "-restore"));
        let ns = v4_ns("killmid");
        let mut child = meshcap(&args_for(&ns, v, SIDECAR, &[]))
            .env("PATH", w.path_first())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&w.file("started"), LIMIT);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        std::fs::write(w.file("go"), "").unwrap();
        wait_for(&w.file("done"), LIMIT);
        // The restore had its whole input and finished its transaction(s): entirely new.
        let (want, _) = reference(v, SIDECAR, false);
        assert_eq!(save(&ns, v, "iptables"), want, "{v:?}");
        let o = meshcap(&args_for(&ns, v, SIDECAR, &[])).output().unwrap();
        assert!(o.status.success(), "{v:?} re-run: {}", show(&o));
        assert!(text(&o.stderr).contains("reconciliation not needed"), "{}", show(&o));
    }
}

#[test]
fn sigkill_between_families_leaves_one_new_one_old_and_a_rerun_completes() {
    if !netns_available() {
        return;
    }
    for v in [V::Nft, V::Legacy] {
        // The IPv6 restore kills meshcap before doing anything.
        let w = Wrappers::new("kill-between");
        w.script(&v.tool("ip6tables", "-restore"), "kill -9 $PPID\nexit 1\n");
        let ns = dual_stack_ns("killbetween");
        let args = args_for(&ns, v, SIDECAR, &["--dual-stack"]);
        let o = output_within(meshcap(&args).env("PATH", w.path_first()), LIMIT);
        assert_eq!(o.status.code(), None, "killed: {}", show(&o));
        let (want4, want6) = reference(v, SIDECAR, true);
        assert_eq!(save(&ns, v, "iptables"), want4, "{v:?}: IPv4 entirely new");
        assert_eq!(save(&ns, v, "ip6tables"), "", "{v:?}: IPv6 entirely old");
        let o = output_within(&mut meshcap(&args), LIMIT);
        assert!(o.status.success(), "{v:?} re-run: {}", show(&o));
        assert_eq!(save(&ns, v, "iptables"), want4);
        assert_eq!(save(&ns, v, "ip6tables"), want6, "{v:?}: the re-run completed IPv6");
    }
}

/// A `*-restore` stand-in that runs the real program for the first `real_calls` calls and
/// kills its parent (meshcap) on the next.
fn kill_on_call(w: &Wrappers, name: &str, real_calls: usize) {
    let mut body = String::new();
    for n in 1..=real_calls {
        body.push_str(&format!(
            "if [ ! -e {m} ]; then touch {m}; exec {real} \"$@\"; fi\n",
            m = w.file(&format!("call{n}")).display(),
            real = real(name).display()
        ));
    }
    body.push_str("kill -9 $PPID\nexit 1\n");
    w.script(name, &body);
}

#[test]
fn sigkill_during_reconcile_keeps_failing_closed_until_the_rules_are_in_place() {
    if !netns_available() {
        return;
    }
    let v = V::Nft;
    let changed: Vec<&str> = SIDECAR.iter().copied().chain(["-q", "9000"]).collect();
    let guardrail = "-A INPUT -p tcp -j DROP";

    // Killed after the guardrails went in, before the rebuild: old rules + guardrails.
    let ns = v4_ns("killguard");
    let o = meshcap(&args_for(&ns, v, SIDECAR, &[])).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let w = Wrappers::new("kill-guard");
    kill_on_call(&w, &v.tool("iptables", "-restore"), 1);
    let o = output_within(
        meshcap(&args_for(&ns, v, &changed, &["--reconcile"])).env("PATH", w.path_first()),
        LIMIT,
    );
    assert_eq!(o.status.code(), None, "killed: {}", show(&o));
    assert!(filter_rules(&ns, v, "iptables").contains(guardrail));
    // Without --reconcile the drift is refused and the guardrails stay (fail closed).
    let o = meshcap(&args_for(&ns, v, &changed, &[])).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("the guardrails of an interrupted run are in place"),
        "{}",
        show(&o)
    );
    assert!(filter_rules(&ns, v, "iptables").contains(guardrail));
    // --reconcile rebuilds and removes them.
    let o = meshcap(&args_for(&ns, v, &changed, &["--reconcile"])).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(filter_rules(&ns, v, "iptables"), "", "no guardrail left");
    assert_eq!(save(&ns, v, "iptables"), reference(v, &changed, false).0);

    // Killed while removing the guardrails: new rules + guardrails. A plain re-run (what a
    // restarted init container does) finds the rules in place and removes them.
    let ns = v4_ns("killremove");
    let o = meshcap(&args_for(&ns, v, SIDECAR, &[])).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let w = Wrappers::new("kill-remove");
    kill_on_call(&w, &v.tool("iptables", "-restore"), 2);
    let o = output_within(
        meshcap(&args_for(&ns, v, &changed, &["--reconcile"])).env("PATH", w.path_first()),
        LIMIT,
    );
    assert_eq!(o.status.code(), None, "killed: {}", show(&o));
    assert!(filter_rules(&ns, v, "iptables").contains(guardrail));
    let o = meshcap(&args_for(&ns, v, &changed, &[])).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("removing the guardrails an interrupted meshcap run left"),
        "{}",
        show(&o)
    );
    assert_eq!(filter_rules(&ns, v, "iptables"), "", "no guardrail left");
    assert_eq!(save(&ns, v, "iptables"), reference(v, &changed, false).0);
}

#[test]
fn the_namespace_deleted_while_running_is_a_clear_error() {
    if !netns_available() {
        return;
    }
    let v = V::Nft;
    let w = Wrappers::new("ns-deleted");
    gated_restore(&w, &v.tool("iptables", "-restore"));
    let ns = v4_ns("deleted");
    let child = meshcap(&args_for(&ns, v, SIDECAR, &[]))
        .env("PATH", w.path_first())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&w.file("started"), LIMIT);
    let o = Command::new("ip").args(["netns", "del", &ns.name]).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    std::fs::write(w.file("go"), "").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(
            "network namespace '/var/run/netns/{}' was deleted while meshcap was running",
            ns.name
        )),
        "{err}"
    );
}

#[test]
fn a_missing_kernel_feature_is_named() {
    if !netns_available() {
        return;
    }
    for v in [V::Nft, V::Legacy] {
        // The first restore fails as iptables does when the kernel lacks the TPROXY target
        // (xt_TPROXY not loadable), pointing at the first TPROXY rule.
        let w = Wrappers::new("no-tproxy");
        let restore = v.tool("iptables", "-restore");
        let body = format!(
            "if [ -e {m} ]; then exec {real} \"$@\"; fi\ntouch {m}\nn=$(awk '/-j TPROXY/ {{print NR; exit}}')\necho \"iptables-restore: line $n failed: No chain/target/match by that name.\" >&2\nexit 1\n",
            m = w.file("called").display(),
            real = real(&restore).display()
        );
        w.script(&restore, &body);
        let ns = v4_ns("notproxy");
        let o = meshcap(&args_for(&ns, v, TPROXY, &[]))
            .env("PATH", w.path_first())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{v:?}: {}", show(&o));
        let err = text(&o.stderr);
        assert!(err.contains("of the input: '-A ISTIO_TPROXY "), "{v:?}: {err}");
        assert!(
            err.contains("it needs target TPROXY") && err.contains("probably missing"),
            "{v:?}: {err}"
        );
        assert_nothing_applied(&ns, &format!("{v:?}"));
    }
}

#[test]
fn namespace_paths_that_are_not_namespaces_apply_nothing_here() {
    if !netns_available() {
        return;
    }
    // meshcap runs inside a throw-away namespace, so "here" is not the machine's namespace.
    let here = v4_ns("nothere");
    let w = Wrappers::new("not-ns");
    let fifo = w.file("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let dir = w.dir.display().to_string();
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
    let bin = meshcap_bin();
    for (flag, named) in cases {
        let mut args = [&["istio-iptables"][..], SIDECAR].concat();
        args.push(flag.as_str());
        let o = output_within(&mut here.cmd(bin.to_str().unwrap(), &args), LIMIT);
        assert_eq!(o.status.code(), Some(1), "{flag}: {}", show(&o));
        assert!(text(&o.stderr).contains(&named), "{flag}: {}", show(&o));
        assert_nothing_applied(&here, &flag);
    }
}
