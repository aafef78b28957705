//! Odd environments: `PATH` holding only some iptables binaries (symlinks in a temporary
//! directory to the real multi-call programs) and a read-only `/run` (a private mount
//! namespace made by `unshare -m` for meshcap alone). The missing `/etc/passwd` is a unit test
//! of `config` (`HostFiles`).

use std::process::Command;
use std::time::Duration;

use super::{Wrappers, assert_nothing_applied, output_within};
use crate::apply::{SIDECAR, V, reference, save, show, text, v4_ns};
use crate::support::{NetNs, meshcap, meshcap_bin, netns_available};

const LIMIT: Duration = Duration::from_secs(30);

/// A directory where every name of `names` links to `multi` (the xtables multi-call binary).
fn only(tag: &str, multi: &str, names: &[&str]) -> Wrappers {
    let w = Wrappers::new(tag);
    for name in names {
        w.link(name, multi);
    }
    w
}

fn names(prefixes: &[&str], variants: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for p in prefixes {
        for v in variants {
            for suffix in ["", "-save", "-restore"] {
                out.push(format!("{p}{v}{suffix}"));
            }
        }
    }
    out
}

fn run_with_path(ns: &NetNs, path: &str, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut args = [&["istio-iptables"][..], SIDECAR].concat();
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--network-namespace", &ns.name]);
    let mut cmd = meshcap(&args);
    cmd.env("PATH", path).envs(env.iter().copied());
    output_within(&mut cmd, LIMIT)
}

#[test]
fn without_ip6tables_ipv4_works_while_ipv6_is_off_and_fails_clearly_when_on() {
    if !netns_available() {
        return;
    }
    let all = names(&["iptables"], &["-nft", "-legacy"]);
    let nft: Vec<&str> = all.iter().map(String::as_str).filter(|n| n.contains("nft")).collect();
    let legacy: Vec<&str> = all
        .iter()
        .map(String::as_str)
        .filter(|n| n.contains("legacy"))
        .collect();
    let w = Wrappers::new("no-ip6tables");
    for n in &nft {
        w.link(n, "xtables-nft-multi");
    }
    for n in &legacy {
        w.link(n, "xtables-legacy-multi");
    }
    let ns = v4_ns("noip6");
    let o = run_with_path(&ns, &w.path_only(), &[], &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(save(&ns, V::Nft, "iptables"), reference(V::Nft, SIDECAR, false).0);

    let ns = v4_ns("noip6on");
    let o = run_with_path(&ns, &w.path_only(), &[], &[("ENABLE_INBOUND_IPV6", "true")]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("did not find a usable ip6tables binary"),
        "{}",
        show(&o)
    );
    assert_nothing_applied(&ns, "IPv6 on without ip6tables");
}

#[test]
fn only_legacy_installed() {
    if !netns_available() {
        return;
    }
    let all = names(&["iptables", "ip6tables"], &["", "-legacy"]);
    let w = only(
        "only-legacy",
        "xtables-legacy-multi",
        &all.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let ns = v4_ns("onlylegacy");
    for round in 0..2 {
        let o = run_with_path(&ns, &w.path_only(), &[], &[]);
        assert!(o.status.success(), "round {round}: {}", show(&o));
    }
    assert_eq!(save(&ns, V::Legacy, "iptables"), reference(V::Legacy, SIDECAR, false).0);
    assert_eq!(text(&ns.run("nft", &["list", "tables"]).stdout), "", "nothing in nft");
    let ns = v4_ns("onlylegacyf");
    let o = run_with_path(&ns, &w.path_only(), &["--force-iptables-binary", "nft"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("'iptables-nft': not installed"),
        "{}",
        show(&o)
    );
    assert_nothing_applied(&ns, "forced nft without it");
}

#[test]
fn only_nft_installed() {
    if !netns_available() {
        return;
    }
    let all = names(&["iptables", "ip6tables"], &["", "-nft"]);
    let w = only(
        "only-nft",
        "xtables-nft-multi",
        &all.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let ns = v4_ns("onlynft");
    for round in 0..2 {
        let o = run_with_path(&ns, &w.path_only(), &[], &[]);
        assert!(o.status.success(), "round {round}: {}", show(&o));
    }
    assert_eq!(save(&ns, V::Nft, "iptables"), reference(V::Nft, SIDECAR, false).0);
    let legacy = text(&ns.run("cat", &["/proc/net/ip_tables_names"]).stdout);
    assert_eq!(legacy, "", "no legacy table");
    let ns = v4_ns("onlynftf");
    let o = run_with_path(&ns, &w.path_only(), &["--force-iptables-binary", "legacy"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("'iptables-legacy': not installed"),
        "{}",
        show(&o)
    );
    assert_nothing_applied(&ns, "forced legacy without it");
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// meshcap with `args` in a private mount namespace whose `/run` is read-only (the namespace
/// mounts under `/run/netns` stay usable), with `env` added.
fn with_read_only_run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let script = "mount --rbind /run /run && mount -o remount,bind,ro /run || exit 97\n\
                  if touch /run/meshcap-ro-probe 2>/dev/null; then rm -f /run/meshcap-ro-probe; exit 98; fi\n\
                  exec \"$0\" \"$@\"";
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c", script])
        .arg(meshcap_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null());
    output_within(&mut cmd, LIMIT)
}

#[test]
fn a_read_only_run() {
    if !netns_available() {
        return;
    }
    let args_for = |ns: &NetNs, v: V, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["istio-iptables"]
            .iter()
            .chain(SIDECAR)
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(["--network-namespace".into(), ns.name.clone()]);
        a.extend(["--force-iptables-binary".into(), v.name().into()]);
        a
    };

    // nft needs no file: meshcap's own lock is an abstract socket in the namespace.
    let ns = v4_ns("ronft");
    let a = args_for(&ns, V::Nft, &[]);
    let o = with_read_only_run(&refs(&a), &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(save(&ns, V::Nft, "iptables"), reference(V::Nft, SIDECAR, false).0);

    // Legacy whose lock file does not exist yet and cannot be created: a clear error.
    let ns = v4_ns("rolegacy");
    let lock = format!("/run/meshcap-no-such-lock-{}", std::process::id());
    let a = args_for(&ns, V::Legacy, &[]);
    let o = with_read_only_run(&refs(&a), &[("XTABLES_LOCKFILE", &lock)]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("can't open lock file {lock}")) && err.contains("read-only /run"),
        "{err}"
    );
    assert!(!save(&ns, V::Legacy, "iptables").contains("ISTIO"), "nothing applied");

    // Legacy in CNI mode locks the namespace file, which exists: it works.
    let ns = v4_ns("rocni");
    let a = args_for(&ns, V::Legacy, &["--cni-mode"]);
    let o = with_read_only_run(&refs(&a), &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(save(&ns, V::Legacy, "iptables"), reference(V::Legacy, SIDECAR, false).0);
}

/// A directory `nobody` can enter, with a copy of meshcap and of the nft multi-call binary
/// (with its `iptables-nft-*` names), each with the given file capabilities.
fn with_file_caps(meshcap_caps: &str, xtables_caps: Option<&str>) -> Wrappers {
    let w = Wrappers::new("caps");
    let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(&w.dir, mode).unwrap();
    std::fs::copy(meshcap_bin(), w.file("meshcap")).unwrap();
    std::fs::copy(super::real("xtables-nft-multi"), w.file("xtables-nft-multi")).unwrap();
    for name in ["iptables-nft", "iptables-nft-save", "iptables-nft-restore"] {
        std::os::unix::fs::symlink("xtables-nft-multi", w.file(name)).unwrap();
    }
    let setcap = |caps: &str, file: &str| {
        let o = Command::new("setcap").arg(caps).arg(w.file(file)).output().unwrap();
        assert!(o.status.success(), "setcap {caps}: {}", show(&o));
    };
    setcap(meshcap_caps, "meshcap");
    if let Some(caps) = xtables_caps {
        setcap(caps, "xtables-nft-multi");
    }
    w
}

/// meshcap from `w`, as `nobody`, with only `w` on `PATH`.
fn as_nobody(w: &Wrappers, ns: &NetNs) -> std::process::Output {
    let mut cmd = Command::new(super::real("setpriv"));
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(w.file("meshcap"))
        .arg("istio-iptables")
        .args(SIDECAR)
        .args(["--network-namespace", &ns.name])
        .env_clear()
        .env("PATH", w.path_only())
        .stdin(std::process::Stdio::null());
    output_within(&mut cmd, LIMIT)
}

#[test]
fn non_root_with_file_capabilities() {
    if !netns_available() {
        return;
    }
    let tools_present = ["setcap", "setpriv"]
        .iter()
        .all(|t| std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(t).is_file()));
    if !tools_present {
        eprintln!("note: skipping: setcap/setpriv not installed");
        return;
    }
    // The documented set: meshcap needs NET_ADMIN (netlink), SYS_ADMIN (to enter the pod's
    // namespace) and DAC_READ_SEARCH (the root-only legacy table list); the iptables binary
    // it runs needs NET_ADMIN and NET_RAW of its own (capabilities are not inherited).
    let w = with_file_caps(
        "cap_net_admin,cap_net_raw,cap_sys_admin,cap_dac_read_search+ep",
        Some("cap_net_admin,cap_net_raw+ep"),
    );
    let ns = v4_ns("caps");
    let o = as_nobody(&w, &ns);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!text(&o.stderr).contains("cannot read /proc/net"), "{}", show(&o));
    assert_eq!(save(&ns, V::Nft, "iptables"), reference(V::Nft, SIDECAR, false).0);

    // Without SYS_ADMIN the namespace cannot be entered: a clear error, nothing applied.
    let w = with_file_caps("cap_net_admin,cap_net_raw+ep", Some("cap_net_admin,cap_net_raw+ep"));
    let ns = v4_ns("capsnosys");
    let o = as_nobody(&w, &ns);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains(&format!("cannot enter network namespace '/var/run/netns/{}'", ns.name)),
        "{}",
        show(&o)
    );
    assert_nothing_applied(&ns, "without CAP_SYS_ADMIN");

    // Without capabilities on the iptables binary its restore fails: a clear error naming it.
    let w = with_file_caps("cap_net_admin,cap_net_raw,cap_sys_admin,cap_dac_read_search+ep", None);
    let ns = v4_ns("capsnoxt");
    let o = as_nobody(&w, &ns);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("iptables-nft-restore --noflush"),
        "{}",
        show(&o)
    );
    assert_nothing_applied(&ns, "iptables without capabilities");
}
