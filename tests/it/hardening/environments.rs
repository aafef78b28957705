//! Odd environments: `PATH` holding only some iptables binaries (symlinks in a temporary
//! directory to the real multi-call programs) and a read-only `/run` (a private mount
//! namespace made by `unshare -m` for meshcap alone). The missing `/etc/passwd` is a unit test
//! of `config` (`HostFiles`).

use std::process::Command;

use super::{LIMIT, assert_nothing_applied};
use crate::support::netfilter::{iptables_reference as reference, save};
use crate::support::{Meshcap, Netns, Run, SIDECAR, TempDir, Variant as V, files, needs_netns, real};

/// A directory where every name of `names` links to `multi` (the xtables multi-call binary).
fn only(tag: &str, multi: &str, names: &[String]) -> TempDir {
    let w = TempDir::new(tag);
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

/// The sidecar apply on `ns` with `PATH` set to `path`, bounded by [`LIMIT`].
fn apply_with_path(ns: &Netns, path: &str) -> Meshcap {
    Meshcap::new()
        .arg("istio-iptables")
        .args(SIDECAR)
        .netns(ns)
        .env("PATH", path)
        .time_limit(LIMIT)
}

#[test]
fn without_ip6tables_ipv4_works_while_ipv6_is_off_and_fails_clearly_when_on() {
    needs_netns!();
    let all = names(&["iptables"], &["-nft", "-legacy"]);
    let w = TempDir::new("no-ip6tables");
    for n in &all {
        let multi = if n.contains("nft") {
            "xtables-nft-multi"
        } else {
            "xtables-legacy-multi"
        };
        w.link(n, multi);
    }
    let ns = Netns::ipv4("noip6");
    apply_with_path(&ns, &w.path_only()).run().success();
    assert_eq!(save(&ns, V::Nft, "iptables"), reference(V::Nft, SIDECAR, false).0);

    let ns = Netns::ipv4("noip6on");
    apply_with_path(&ns, &w.path_only())
        .env("ENABLE_INBOUND_IPV6", "true")
        .run()
        .expect_exit(1)
        .stderr_contains("did not find a usable ip6tables binary");
    assert_nothing_applied(&ns, "IPv6 on without ip6tables");
}

#[test]
fn only_legacy_installed() {
    needs_netns!();
    let w = only(
        "only-legacy",
        "xtables-legacy-multi",
        &names(&["iptables", "ip6tables"], &["", "-legacy"]),
    );
    let ns = Netns::ipv4("onlylegacy");
    for _round in 0..2 {
        apply_with_path(&ns, &w.path_only()).run().success();
    }
    assert_eq!(save(&ns, V::Legacy, "iptables"), reference(V::Legacy, SIDECAR, false).0);
    assert_eq!(ns.stdout("nft", &["list", "tables"]), "", "nothing in nft");
    let ns = Netns::ipv4("onlylegacyf");
    apply_with_path(&ns, &w.path_only())
        .variant(V::Nft)
        .run()
        .expect_exit(1)
        .stderr_contains("'iptables-nft': not installed");
    assert_nothing_applied(&ns, "forced nft without it");
}

#[test]
fn only_nft_installed() {
    needs_netns!();
    let w = only(
        "only-nft",
        "xtables-nft-multi",
        &names(&["iptables", "ip6tables"], &["", "-nft"]),
    );
    let ns = Netns::ipv4("onlynft");
    for _round in 0..2 {
        apply_with_path(&ns, &w.path_only()).run().success();
    }
    assert_eq!(save(&ns, V::Nft, "iptables"), reference(V::Nft, SIDECAR, false).0);
    let legacy = ns.stdout("cat", &["/proc/net/ip_tables_names"]);
    assert_eq!(legacy, "", "no legacy table");
    let ns = Netns::ipv4("onlynftf");
    apply_with_path(&ns, &w.path_only())
        .variant(V::Legacy)
        .run()
        .expect_exit(1)
        .stderr_contains("'iptables-legacy': not installed");
    assert_nothing_applied(&ns, "forced legacy without it");
}

/// The sidecar apply on `ns` with variant `v`, in a private mount namespace whose `/run` is
/// read-only (the namespace mounts under `/run/netns` stay usable).
fn with_read_only_run(ns: &Netns, v: V) -> Meshcap {
    let script = "mount --rbind /run /run && mount -o remount,bind,ro /run || exit 97\n\
                  if touch /run/meshcap-ro-probe 2>/dev/null; then rm -f /run/meshcap-ro-probe; exit 98; fi\n\
                  exec \"$0\" \"$@\"";
    Meshcap::new()
        .arg("istio-iptables")
        .launcher([
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
        ])
        .args(SIDECAR)
        .netns(ns)
        .variant(v)
        .time_limit(LIMIT)
}

#[test]
fn a_read_only_run() {
    needs_netns!();
    // nft needs no file: meshcap's own lock is an abstract socket in the namespace.
    let ns = Netns::ipv4("ronft");
    with_read_only_run(&ns, V::Nft).run().success();
    assert_eq!(save(&ns, V::Nft, "iptables"), reference(V::Nft, SIDECAR, false).0);

    // Legacy whose lock file does not exist yet and cannot be created: a clear error.
    let ns = Netns::ipv4("rolegacy");
    let lock = format!("/run/meshcap-no-such-lock-{}", std::process::id());
    let run = with_read_only_run(&ns, V::Legacy).env("XTABLES_LOCKFILE", &lock).run();
    run.expect_exit(1)
        .stderr_contains(&format!("can't open lock file {lock}"))
        .stderr_contains("read-only /run");
    assert!(!save(&ns, V::Legacy, "iptables").contains("ISTIO"), "nothing applied");

    // Legacy in CNI mode locks the namespace file, which exists: it works.
    let ns = Netns::ipv4("rocni");
    with_read_only_run(&ns, V::Legacy).arg("--cni-mode").run().success();
    assert_eq!(save(&ns, V::Legacy, "iptables"), reference(V::Legacy, SIDECAR, false).0);
}

/// A directory `nobody` can enter, with a copy of meshcap and of the nft multi-call binary
/// (with its `iptables-nft-*` names), each with the given file capabilities.
fn with_file_caps(meshcap_caps: &str, xtables_caps: Option<&str>) -> TempDir {
    let w = TempDir::new("caps");
    let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(w.path(), mode).unwrap();
    std::fs::copy(crate::support::meshcap_bin(), w.join("meshcap")).unwrap();
    std::fs::copy(real("xtables-nft-multi"), w.join("xtables-nft-multi")).unwrap();
    for name in ["iptables-nft", "iptables-nft-save", "iptables-nft-restore"] {
        std::os::unix::fs::symlink("xtables-nft-multi", w.join(name)).unwrap();
    }
    let setcap = |caps: &str, file: &str| {
        let o = Command::new("setcap").arg(caps).arg(w.join(file)).output().unwrap();
        assert!(o.status.success(), "setcap {caps}: {o:?}");
    };
    setcap(meshcap_caps, "meshcap");
    if let Some(caps) = xtables_caps {
        setcap(caps, "xtables-nft-multi");
    }
    w
}

/// meshcap from `w`, as `nobody`, with only `w` on `PATH`.
fn as_nobody(w: &TempDir, ns: &Netns) -> Run {
    Meshcap::new()
        .arg("istio-iptables")
        .launcher(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .program(w.join("meshcap"))
        .args(SIDECAR)
        .netns(ns)
        .env("PATH", w.path_only())
        .time_limit(LIMIT)
        .run()
}

#[test]
fn non_root_with_file_capabilities() {
    needs_netns!();
    if files::find("setcap").is_none() || files::find("setpriv").is_none() {
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
    let ns = Netns::ipv4("caps");
    as_nobody(&w, &ns).success().stderr_lacks("cannot read /proc/net");
    assert_eq!(save(&ns, V::Nft, "iptables"), reference(V::Nft, SIDECAR, false).0);

    // Without SYS_ADMIN the namespace cannot be entered: a clear error, nothing applied.
    let w = with_file_caps("cap_net_admin,cap_net_raw+ep", Some("cap_net_admin,cap_net_raw+ep"));
    let ns = Netns::ipv4("capsnosys");
    as_nobody(&w, &ns)
        .expect_exit(1)
        .stderr_contains(&format!("cannot enter network namespace '/var/run/netns/{}'", ns.name));
    assert_nothing_applied(&ns, "without CAP_SYS_ADMIN");

    // Without capabilities on the iptables binary its restore fails: a clear error naming it.
    let w = with_file_caps("cap_net_admin,cap_net_raw,cap_sys_admin,cap_dac_read_search+ep", None);
    let ns = Netns::ipv4("capsnoxt");
    as_nobody(&w, &ns)
        .expect_exit(1)
        .stderr_contains("iptables-nft-restore --noflush");
    assert_nothing_applied(&ns, "iptables without capabilities");
}
