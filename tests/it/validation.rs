//! `--run-validation` against real captures: meshcap runs inside a test pod namespace (as the
//! proxy uid, as root, or from the host with `--network-namespace`) after the capture was
//! installed with the lab's installer, exactly as Istio's `istio-validation` container runs it
//! (`--skip-rule-apply --run-validation`). Passing runs exit 0; missing or wrong rules exit 126
//! with Istio's message and a log line naming each failed path.

use std::time::Duration;

use crate::lab::install::{self, NetnsEtc};
use crate::lab::protocol::{Listen, Proto, Reply, Request, Role};
use crate::lab::spawn::{Agent, Cap, Creds, as_user_in};
use crate::lab::{Installer, Net, PROXY_UID, Scenario, Stack};
use crate::support::{Meshcap, Run, SIDECAR, Variant, needs_netns};

/// Istio's text, written out here so the test pins it independently of the implementation.
const ISTIO_FAILURE: &str = "iptables validation failed; workload is not ready for Istio.
When using Istio CNI, this can occur if a pod is scheduled before the node is ready.

If installed with 'cni.repair.deletePods=true', this pod should automatically be deleted and retry.
Otherwise, this pod will need to be manually removed so that it is scheduled on a node with istio-cni running, allowing iptables rules to be established.
";

fn flags(extra: &[&str]) -> Vec<String> {
    SIDECAR.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// A pod with `extra` sidecar flags installed (render + iptables-legacy-restore).
fn pod_with_capture(stack: Stack, extra: &[&str]) -> Net {
    pod_installed_by(Installer::Restore(Variant::Legacy), stack, extra, "")
}

/// A pod with `extra` sidecar flags installed by `installer`, reading `resolv` as its
/// resolv.conf when the flags ask for it.
fn pod_installed_by(installer: Installer, stack: Stack, extra: &[&str], resolv: &str) -> Net {
    let mut scenario = Scenario::new("validation", stack, &[]).resolv_conf(resolv);
    scenario.flags = flags(extra);
    let net = Net::new(stack, false);
    installer
        .install(&net, &scenario)
        .unwrap_or_else(|e| panic!("install: {e}"));
    net
}

/// `meshcap istio-iptables --skip-rule-apply --run-validation FLAGS`, the istio-validation
/// container's command line.
fn validation(extra: &[&str]) -> Meshcap {
    Meshcap::new()
        .args(["istio-iptables", "--skip-rule-apply", "--run-validation"])
        .args(flags(extra))
        .time_limit(Duration::from_secs(10))
}

/// [`validation`] inside the pod as `creds`.
fn validate_in_pod(net: &Net, creds: &Creds, extra: &[&str]) -> Run {
    validation(extra).configure(as_user_in(&net.pod, creds)).run()
}

fn proxy() -> Creds {
    Creds::user(PROXY_UID, PROXY_UID)
}

#[track_caller]
fn assert_passed(out: &Run, paths: &[&str]) {
    assert_eq!(out.code, Some(0), "validation should pass:\n{}", out.stderr);
    assert_eq!(out.stdout, "", "logs go to stderr only");
    assert!(
        out.stderr
            .contains("\tinfo\tValidation passed, iptables rules established\n"),
        "{}",
        out.stderr
    );
    for path in paths {
        assert!(
            out.stderr.contains(&format!("validation path {path} passed")),
            "missing '{path} passed':\n{}",
            out.stderr
        );
    }
}

#[track_caller]
fn assert_failed(out: &Run, failed: &[&str], passed: &[&str]) {
    assert_eq!(out.code, Some(126), "validation should fail:\n{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("\terror\t{ISTIO_FAILURE}")),
        "Istio's message missing:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("\terror\tvalidation timeout\n"), "{}", out.stderr);
    for path in failed {
        assert!(
            out.stderr
                .contains(&format!("\terror\tvalidation path {path} failed: ")),
            "missing '{path} failed':\n{}",
            out.stderr
        );
    }
    for path in passed {
        assert!(
            out.stderr.contains(&format!("validation path {path} passed")),
            "missing '{path} passed':\n{}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("Validation passed"), "{}", out.stderr);
}

#[test]
fn passes_as_the_proxy_uid() {
    needs_netns!();
    let net = pod_with_capture(Stack::V4, &[]);
    let out = validate_in_pod(&net, &proxy(), &["--probe-timeout", "3s"]);
    assert_passed(&out, &["loopback (IPv4)", "inbound (IPv4)"]);
    // Istio's own log lines around the probe.
    for line in [
        "\tinfo\tStarting iptables validation. This check verifies that iptables rules are properly established for the network.\n",
        "\tinfo\tListening on 127.0.0.1:15001\n",
        "\tinfo\tListening on 127.0.0.1:15006\n",
        "\tinfo\tLocal addr 127.0.0.1:15006\n",
        "\tinfo\tOriginal addr 127.0.0.1: 15002\n",
    ] {
        assert!(out.stderr.contains(line), "missing {line:?}:\n{}", out.stderr);
    }
    assert!(!out.stderr.contains("path dns"), "{}", out.stderr);
}

#[test]
fn passes_as_root_and_checks_dns() {
    needs_netns!();
    let dns = ["--redirect-dns", "--capture-all-dns"];
    let net = pod_with_capture(Stack::V4, &dns);
    let out = validate_in_pod(&net, &Creds::root(), &[&dns[..], &["--probe-timeout", "3s"]].concat());
    assert_passed(&out, &["loopback (IPv4)", "inbound (IPv4)", "dns (IPv4)"]);
}

#[test]
fn as_the_proxy_the_dns_path_is_skipped() {
    needs_netns!();
    let dns = ["--redirect-dns", "--capture-all-dns"];
    let net = pod_with_capture(Stack::V4, &dns);
    let out = validate_in_pod(&net, &proxy(), &[&dns[..], &["--probe-timeout", "3s"]].concat());
    assert_passed(&out, &["loopback (IPv4)", "inbound (IPv4)"]);
    assert!(
        out.stderr
            .contains("validation path dns (IPv4) skipped: it needs an application identity"),
        "{}",
        out.stderr
    );
}

#[test]
fn passes_with_resolv_conf_servers() {
    needs_netns!();
    let resolv = "nameserver 198.51.100.2\n";
    let mut scenario = Scenario::new("validation", Stack::V4, &[]).resolv_conf(resolv);
    scenario.flags = flags(&["--redirect-dns"]);
    let net = Net::new(Stack::V4, false);
    Installer::Restore(Variant::Legacy).install(&net, &scenario).unwrap();
    let _etc = NetnsEtc::resolv_conf(&net.pod.name, resolv);
    // As istio-init would: inside the pod (ip netns exec), as root, reading /etc/resolv.conf.
    let out = validation(&["--redirect-dns", "--probe-timeout", "3s"])
        .inside(&net.pod)
        .run();
    assert_passed(&out, &["loopback (IPv4)", "inbound (IPv4)", "dns (IPv4)"]);
    assert!(
        out.stderr
            .contains("a query to 198.51.100.2:53 reached 127.0.0.1:15053"),
        "{}",
        out.stderr
    );
}

#[test]
fn passes_in_tproxy_mode() {
    needs_netns!();
    let net = pod_with_capture(Stack::V4, &["-m", "TPROXY"]);
    let out = validate_in_pod(&net, &Creds::root(), &["-m", "TPROXY", "--probe-timeout", "3s"]);
    assert_passed(&out, &["loopback (IPv4)", "inbound (IPv4)"]);
}

#[test]
fn passes_on_an_ipv6_only_pod() {
    needs_netns!();
    let net = pod_with_capture(Stack::V6, &[]);
    let out = validate_in_pod(&net, &proxy(), &["--probe-timeout", "3s"]);
    assert_passed(&out, &["loopback (IPv6)", "inbound (IPv6)"]);
    assert!(
        out.stderr.contains("\tinfo\tListening on [::1]:15006\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn checks_both_families_on_a_dual_stack_pod() {
    needs_netns!();
    let net = pod_with_capture(Stack::Dual, &["--dual-stack"]);
    let out = validate_in_pod(&net, &proxy(), &["--dual-stack", "--probe-timeout", "3s"]);
    assert_passed(
        &out,
        &["loopback (IPv4)", "inbound (IPv4)", "loopback (IPv6)", "inbound (IPv6)"],
    );
}

#[test]
fn enters_the_network_namespace_given() {
    needs_netns!();
    let net = pod_with_capture(Stack::V4, &[]);
    // From the host namespace, as root: the validator itself enters the pod.
    let out = validation(&["--probe-timeout", "3s"]).netns(&net.pod).run();
    assert_passed(&out, &["loopback (IPv4)", "inbound (IPv4)"]);
    assert!(
        out.stderr.contains("original destination 198.51.100.1:15002"),
        "{}",
        out.stderr
    );
}

#[test]
fn fails_without_rules() {
    needs_netns!();
    let net = Net::new(Stack::V4, false);
    let out = validate_in_pod(&net, &proxy(), &["--probe-timeout", "1s"]);
    assert_failed(&out, &["loopback (IPv4)", "inbound (IPv4)"], &[]);
}

#[test]
fn fails_when_only_the_loopback_probe_is_redirected() {
    needs_netns!();
    // Wrong rules that satisfy Istio's single probe (127.0.0.6 lands on 15001) but capture
    // nothing else: meshcap's inbound path notices.
    let net = Net::new(Stack::V4, false);
    let payload = "*nat\n-A OUTPUT -d 127.0.0.6/32 -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n";
    install::restore(Variant::Legacy, &net.pod, false, payload).unwrap();
    let out = validate_in_pod(&net, &proxy(), &["--probe-timeout", "1s"]);
    assert_failed(&out, &["inbound (IPv4)"], &["loopback (IPv4)"]);
}

#[test]
fn fails_when_dns_capture_is_missing() {
    needs_netns!();
    let net = pod_with_capture(Stack::V4, &[]);
    let out = validate_in_pod(
        &net,
        &Creds::root(),
        &["--redirect-dns", "--capture-all-dns", "--probe-timeout", "1s"],
    );
    assert_failed(&out, &["dns (IPv4)"], &["loopback (IPv4)", "inbound (IPv4)"]);
}

#[test]
fn fails_when_no_listener_can_be_created() {
    needs_netns!();
    let net = pod_with_capture(Stack::V4, &[]);
    // Another user already listens on both validator ports.
    let mut squatter = Agent::spawn("squatter", &net.pod, &Creds::user(1000, 1000));
    for port in [15001, 15006] {
        let reply = squatter.call(&Request::Listen(Listen {
            role: Role::App,
            proto: Proto::Tcp,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            transparent: false,
        }));
        assert!(matches!(reply, Reply::Listening(_)), "{reply:?}");
    }
    let out = validate_in_pod(&net, &proxy(), &["--probe-timeout", "1s"]);
    assert_eq!(out.code, Some(126), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("\terror\tValidation failed: no listener available: 127.0.0.1:15001,127.0.0.1:15006\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("\terror\t{ISTIO_FAILURE}")),
        "{}",
        out.stderr
    );
}

#[test]
fn apply_then_validate_in_one_run() {
    needs_netns!();
    let net = Net::new(Stack::V4, false);
    let out = Meshcap::new()
        .arg("istio-iptables")
        .args(flags(&["--run-validation", "--probe-timeout", "3s"]))
        .netns(&net.pod)
        .time_limit(Duration::from_secs(20))
        .run();
    assert_passed(&out, &["loopback (IPv4)", "inbound (IPv4)"]);
    // The rules step ran first (with whichever iptables variant meshcap chose).
    let saved: String = ["iptables-legacy-save", "iptables-nft-save"]
        .iter()
        .map(|tool| net.pod.stdout(tool, &[]))
        .collect();
    assert!(saved.contains("-A ISTIO_OUTPUT"), "{saved}");
}

#[test]
fn dry_run_validates_with_real_sockets() {
    needs_netns!();
    // As Istio: --dry-run changes nothing, yet the probe is real, so it fails on an empty pod.
    let net = Net::new(Stack::V4, false);
    let out = Meshcap::new()
        .arg("istio-iptables")
        .args(flags(&["--dry-run", "--run-validation", "--probe-timeout", "1s"]))
        .netns(&net.pod)
        .time_limit(Duration::from_secs(20))
        .run();
    assert_failed(&out, &["loopback (IPv4)", "inbound (IPv4)"], &[]);
}

#[test]
fn root_without_setuid_probes_as_root_like_istio() {
    needs_netns!();
    // istio-init's privileges: root without CAP_SETUID/CAP_SETGID. The probes carry uid 0,
    // which the capture rightly does not treat as the proxy, so (as with Istio) they fail;
    // the log says why.
    let net = pod_with_capture(Stack::V4, &[]);
    let root = Creds::root().without(Cap::SetUid).without(Cap::SetGid);
    let out = validate_in_pod(&net, &root, &["--probe-timeout", "1s"]);
    assert!(
        out.stderr.contains("running as root without CAP_SETUID/CAP_SETGID"),
        "{}",
        out.stderr
    );
    assert_failed(&out, &["loopback (IPv4)", "inbound (IPv4)"], &[]);
}

#[test]
fn validates_a_native_nftables_capture() {
    needs_netns!();
    // Istio CNI with nftables: the istio-validation container carries --native-nftables.
    let mut scenario = Scenario::new("validation", Stack::V4, &[]);
    scenario.flags = flags(&[]);
    let net = Net::new(Stack::V4, false);
    Installer::NativeNft.install(&net, &scenario).unwrap();
    let out = validate_in_pod(&net, &proxy(), &["--native-nftables", "--probe-timeout", "3s"]);
    assert_passed(&out, &["loopback (IPv4)", "inbound (IPv4)"]);
}

/// The capture as the netlink installer programs it (`--native-nftables`, no `nft` on `PATH`
/// that works, no process: `Installer::ApplyNft`) for every kind of scenario, then validated
/// the way the istio-validation container of a native-nftables pod runs (`--native-nftables`).
mod netlink_installer {
    use super::*;

    const NFT: &str = "--native-nftables";

    fn pod(stack: Stack, extra: &[&str]) -> Net {
        pod_installed_by(Installer::ApplyNft, stack, extra, "")
    }

    #[test]
    fn passes_as_the_proxy_uid() {
        needs_netns!();
        let net = pod(Stack::V4, &[]);
        let out = validate_in_pod(&net, &proxy(), &[NFT, "--probe-timeout", "3s"]);
        assert_passed(&out, &["loopback (IPv4)", "inbound (IPv4)"]);
    }

    #[test]
    fn passes_as_root_and_checks_dns_zones() {
        needs_netns!();
        let dns = ["--redirect-dns", "--capture-all-dns"];
        let net = pod(Stack::V4, &dns);
        let out = validate_in_pod(
            &net,
            &Creds::root(),
            &[&dns[..], &[NFT, "--probe-timeout", "3s"]].concat(),
        );
        assert_passed(&out, &["loopback (IPv4)", "inbound (IPv4)", "dns (IPv4)"]);
    }

    #[test]
    fn passes_with_resolv_conf_servers() {
        needs_netns!();
        let resolv = "nameserver 198.51.100.2\n";
        let net = pod_installed_by(Installer::ApplyNft, Stack::V4, &["--redirect-dns"], resolv);
        let _etc = NetnsEtc::resolv_conf(&net.pod.name, resolv);
        let out = validation(&["--redirect-dns", NFT, "--probe-timeout", "3s"])
            .inside(&net.pod)
            .run();
        assert_passed(&out, &["loopback (IPv4)", "inbound (IPv4)", "dns (IPv4)"]);
        assert!(
            out.stderr
                .contains("a query to 198.51.100.2:53 reached 127.0.0.1:15053"),
            "{}",
            out.stderr
        );
    }

    #[test]
    fn passes_in_tproxy_mode() {
        needs_netns!();
        let net = pod(Stack::V4, &["-m", "TPROXY"]);
        let out = validate_in_pod(&net, &Creds::root(), &["-m", "TPROXY", NFT, "--probe-timeout", "3s"]);
        assert_passed(&out, &["loopback (IPv4)", "inbound (IPv4)"]);
    }

    #[test]
    fn passes_on_an_ipv6_only_pod() {
        needs_netns!();
        let net = pod(Stack::V6, &[]);
        let out = validate_in_pod(&net, &proxy(), &[NFT, "--probe-timeout", "3s"]);
        assert_passed(&out, &["loopback (IPv6)", "inbound (IPv6)"]);
    }

    #[test]
    fn checks_both_families_on_a_dual_stack_pod_in_tproxy_mode() {
        needs_netns!();
        let extra = ["--dual-stack", "-m", "TPROXY"];
        let net = pod(Stack::Dual, &extra);
        let out = validate_in_pod(
            &net,
            &Creds::root(),
            &[&extra[..], &[NFT, "--probe-timeout", "3s"]].concat(),
        );
        assert_passed(
            &out,
            &["loopback (IPv4)", "inbound (IPv4)", "loopback (IPv6)", "inbound (IPv6)"],
        );
    }

    #[test]
    fn passes_with_compact_lists() {
        needs_netns!();
        let extra = [
            "--dual-stack",
            "--compact",
            "--redirect-dns",
            "--capture-all-dns",
            "-x",
            "203.0.113.0/25,203.0.113.128/25,2001:db8:1::/48,2001:db8:2::/48",
            "-d",
            "15090,15021,15020,8000:8100,22",
            "-o",
            "22,25,1000:2000",
        ];
        let net = pod(Stack::Dual, &extra);
        let out = validate_in_pod(
            &net,
            &Creds::root(),
            &[&extra[..], &[NFT, "--probe-timeout", "3s"]].concat(),
        );
        assert_passed(
            &out,
            &[
                "loopback (IPv4)",
                "inbound (IPv4)",
                "dns (IPv4)",
                "loopback (IPv6)",
                "inbound (IPv6)",
                "dns (IPv6)",
            ],
        );
    }

    #[test]
    fn fails_when_dns_capture_is_missing() {
        needs_netns!();
        let net = pod(Stack::V4, &[]);
        let out = validate_in_pod(
            &net,
            &Creds::root(),
            &["--redirect-dns", "--capture-all-dns", NFT, "--probe-timeout", "1s"],
        );
        assert_failed(&out, &["dns (IPv4)"], &["loopback (IPv4)", "inbound (IPv4)"]);
    }

    #[test]
    fn apply_then_validate_in_one_run() {
        needs_netns!();
        let net = Net::new(Stack::Dual, false);
        let out = Meshcap::new()
            .arg("istio-iptables")
            .args(flags(&[
                "--dual-stack",
                NFT,
                "--run-validation",
                "--probe-timeout",
                "3s",
            ]))
            .netns(&net.pod)
            .time_limit(Duration::from_secs(20))
            .run();
        assert_passed(
            &out,
            &["loopback (IPv4)", "inbound (IPv4)", "loopback (IPv6)", "inbound (IPv6)"],
        );
        let listed = net.pod.stdout("nft", &["list", "table", "inet", "istio-proxy-nat"]);
        assert!(listed.contains("chain istio-output"), "{listed}");
    }
}
