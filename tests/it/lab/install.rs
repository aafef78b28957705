//! How a scenario's capture gets into the pod namespace. Scenarios are written once; each
//! installer is one way of programming the same flags (`traffic.rs` runs every scenario with
//! every installer).
//!
//! - [`Installer::Apply`]: meshcap's apply path, `meshcap istio-iptables FLAGS
//!   --force-iptables-binary <variant> --network-namespace POD`, run from the host namespace; for
//!   scenarios that read resolv.conf it runs inside the pod (`ip netns exec`, which mounts
//!   `/etc/netns/POD/resolv.conf` over `/etc/resolv.conf`, as in a pod) and still names the
//!   namespace. meshcap programs the TPROXY routes and `::6` itself.
//! - [`Installer::Restore`]: `meshcap render --family v4|v6 FLAGS` piped into the real
//!   `iptables-<variant>-restore --noflush` / `ip6tables-<variant>-restore` inside the pod.
//! - [`Installer::ApplyNft`]: the same apply path with `--native-nftables` (meshcap's nft
//!   backend: one nf_tables batch over netlink, routes by meshcap), run with an `nft` on `PATH`
//!   that fails and its debug log checked for "0 processes spawned", then re-run: the state
//!   read back over netlink must equal the plan.
//! - [`Installer::NativeNft`]: `meshcap render --native-nftables FLAGS` (Istio's nftables
//!   transaction) loaded with `nft -f -` inside the pod.
//!
//! For the render installers the lab does what apply does besides rules, the way Istio does it
//! (istio-compat §5.8): `::6/128` on `lo` when IPv6 is on, and for TPROXY `ip rule add fwmark <mark>
//! lookup <table>` plus `ip route add local default dev lo table <table>` per family.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{Net, Scenario};
use crate::support::{Meshcap, Netns, TempDir, Variant};

/// `ip6tables-VARIANT-WHAT` or `iptables-VARIANT-WHAT`.
fn tool(variant: Variant, v6: bool, what: &str) -> String {
    variant.tool(if v6 { "ip6tables" } else { "iptables" }, what)
}

/// The two kinds of rule set the kernel ends up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// iptables rules (either binary variant).
    Iptables,
    /// Istio's native nftables tables.
    Nftables,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installer {
    /// `meshcap istio-iptables --network-namespace POD` (the apply path).
    Apply(Variant),
    /// `meshcap render` + `iptables-restore --noflush`, routes set up by the lab.
    Restore(Variant),
    /// `meshcap render --native-nftables` + `nft -f -`, routes set up by the lab.
    NativeNft,
    /// `meshcap istio-iptables --native-nftables --network-namespace POD`: the netlink
    /// installer, run with an `nft` on `PATH` that fails and checked to spawn no process.
    ApplyNft,
}

impl fmt::Display for Installer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Installer::Apply(v) => write!(f, "apply --force-iptables-binary {}", v.name()),
            Installer::Restore(v) => write!(f, "render+{}-restore", v.name()),
            Installer::NativeNft => f.write_str("render --native-nftables + nft -f"),
            Installer::ApplyNft => f.write_str("apply --native-nftables"),
        }
    }
}

impl Installer {
    pub fn backend(self) -> Backend {
        match self {
            Installer::Apply(_) | Installer::Restore(_) => Backend::Iptables,
            Installer::NativeNft | Installer::ApplyNft => Backend::Nftables,
        }
    }

    /// Programs the scenario's capture into the lab's pod namespace.
    pub fn install(&self, net: &Net, scenario: &Scenario) -> Result<(), String> {
        match self {
            Installer::Apply(variant) => install_apply(&["--force-iptables-binary", variant.name()], net, scenario),
            Installer::ApplyNft => install_netlink(net, scenario),
            Installer::Restore(variant) => install_restore(*variant, net, scenario),
            Installer::NativeNft => install_native_nft(net, scenario),
        }
    }

    /// The pod's capture state, for failure reports.
    pub fn dump(&self, net: &Net) -> String {
        let mut out = String::new();
        match self {
            Installer::Apply(variant) | Installer::Restore(variant) => {
                for v6 in [false, true] {
                    let tool = tool(*variant, v6, "-save");
                    out.push_str(&format!("--- {tool}\n{}", net.pod_output(&tool, &[])));
                }
            }
            Installer::NativeNft | Installer::ApplyNft => {
                out.push_str(&format!(
                    "--- nft list ruleset\n{}",
                    net.pod_output("nft", &["list", "ruleset"])
                ));
            }
        }
        for args in [&["rule"][..], &["-6", "rule"], &["route", "show", "table", "all"]] {
            out.push_str(&format!("--- ip {}\n{}", args.join(" "), net.pod_output("ip", args)));
        }
        out
    }
}

/// `/etc/netns/<ns>/resolv.conf`, which `ip netns exec` mounts over `/etc/resolv.conf`;
/// removed on drop.
pub struct NetnsEtc(PathBuf);

impl NetnsEtc {
    pub fn resolv_conf(ns: &str, text: &str) -> NetnsEtc {
        let dir = PathBuf::from("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/<ns>");
        std::fs::write(dir.join("resolv.conf"), text).expect("write resolv.conf");
        NetnsEtc(dir)
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether the flags make meshcap read resolv.conf.
fn reads_resolv_conf(scenario: &Scenario) -> bool {
    scenario.has_switch("--redirect-dns") && !scenario.has_switch("--capture-all-dns")
}

/// `meshcap istio-iptables FLAGS BACKEND_ARGS --network-namespace POD`.
fn install_apply(backend_args: &[&str], net: &Net, scenario: &Scenario) -> Result<(), String> {
    let (apply, _etc) = apply_cmd(backend_args, net, scenario);
    let run = apply.try_run()?;
    if !run.ok() {
        return Err(run.to_string());
    }
    Ok(())
}

/// The command of [`install_apply`], and the pod's resolv.conf it reads (keep it while it runs).
fn apply_cmd(backend_args: &[&str], net: &Net, scenario: &Scenario) -> (Meshcap, Option<NetnsEtc>) {
    let mut apply = Meshcap::new()
        .arg("istio-iptables")
        .args(&scenario.flags)
        .args(backend_args)
        .netns(&net.pod)
        .time_limit(Duration::from_secs(30));
    // Inside the pod, so that `ip netns exec` mounts the pod's resolv.conf for meshcap to read.
    let reads = reads_resolv_conf(scenario);
    let etc = reads.then(|| NetnsEtc::resolv_conf(&net.pod.name, &scenario.resolv_conf));
    if reads {
        apply = apply.inside(&net.pod);
    }
    (apply, etc)
}

/// `meshcap istio-iptables FLAGS --native-nftables --network-namespace POD` with an `nft` on
/// `PATH` that fails (`/bin/false`): the netlink installer, which must spawn no process at all
/// (its debug log counts them). Run twice: the re-run reads the kernel's state back over
/// netlink and must find it equal to the plan (no drift, nothing changed).
fn install_netlink(net: &Net, scenario: &Scenario) -> Result<(), String> {
    let bin = TempDir::new("lab-nonft");
    bin.link("nft", "false");
    for (round, expect) in ["nftables rules programmed", "reconciliation not needed"]
        .iter()
        .enumerate()
    {
        let (apply, _etc) = apply_cmd(
            &["--native-nftables", "--log_output_level=default:debug"],
            net,
            scenario,
        );
        let run = apply.env("PATH", bin.path_first()).try_run()?;
        if !run.ok() {
            return Err(format!("run {}: {run}", round + 1));
        }
        if !run.stderr.contains("\t0 processes spawned") || !run.stderr.contains(expect) {
            return Err(format!(
                "run {}: expected {expect:?} and no process:\n{}",
                round + 1,
                run.stderr
            ));
        }
    }
    Ok(())
}

/// `meshcap render ARGS FLAGS --ipv6=X --resolv-conf FILE`: the rendered text.
fn render(net: &Net, scenario: &Scenario, args: &[&str]) -> Result<String, String> {
    let resolv = net.dir.write("resolv.conf", &scenario.resolv_conf);
    let run = Meshcap::new()
        .arg("render")
        .args(args)
        .args(&scenario.flags)
        .arg(format!("--ipv6={}", scenario.ipv6_enabled()))
        .arg("--resolv-conf")
        .arg(&resolv)
        .try_run()?;
    if !run.ok() {
        return Err(run.to_string());
    }
    Ok(run.stdout)
}

fn install_native_nft(net: &Net, scenario: &Scenario) -> Result<(), String> {
    let tx = render(net, scenario, &["--native-nftables"])?;
    if !tx.is_empty() {
        let res = net.pod.run_with_stdin("nft", &["-f", "-"], &tx);
        if !res.status.success() {
            return Err(format!(
                "nft -f -: {}\ntransaction:\n{tx}",
                String::from_utf8_lossy(&res.stderr)
            ));
        }
    }
    routes_like_apply(net, scenario, scenario.ipv6_enabled())
}

fn install_restore(variant: Variant, net: &Net, scenario: &Scenario) -> Result<(), String> {
    let ipv6 = scenario.ipv6_enabled();
    let mut families = vec![false];
    if ipv6 {
        families.push(true);
    }
    for v6 in families {
        let payload = render(net, scenario, &["--family", if v6 { "v6" } else { "v4" }])?;
        if payload.is_empty() {
            continue;
        }
        restore(variant, &net.pod, v6, &payload)?;
    }
    routes_like_apply(net, scenario, ipv6)
}

/// Loads an iptables-restore payload into `pod` with `--noflush`.
pub fn restore(variant: Variant, pod: &Netns, v6: bool, payload: &str) -> Result<(), String> {
    let tool = tool(variant, v6, "-restore");
    let res = pod.run_with_stdin(&tool, &["--noflush", "--wait=10"], payload);
    if !res.status.success() {
        return Err(format!(
            "{tool} --noflush: {}\npayload:\n{payload}",
            String::from_utf8_lossy(&res.stderr)
        ));
    }
    Ok(())
}

/// What meshcap apply (and Istio) does after the rules (istio-compat §5.8).
fn routes_like_apply(net: &Net, scenario: &Scenario, ipv6: bool) -> Result<(), String> {
    let mut cmds: Vec<Vec<String>> = Vec::new();
    let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    if ipv6 {
        cmds.push(words("-6 addr add ::6/128 dev lo nodad"));
    }
    let inbound = scenario
        .flag("-b", "--istio-inbound-ports")
        .is_some_and(|p| !p.trim().is_empty());
    if scenario.tproxy() && inbound {
        let mark = scenario.flag("-t", "--istio-inbound-tproxy-mark").unwrap_or("1337");
        let table = scenario
            .flag("-r", "--istio-inbound-tproxy-route-table")
            .unwrap_or("133");
        for fam in if ipv6 { &["-4", "-6"][..] } else { &["-4"][..] } {
            cmds.push(words(&format!("{fam} rule add fwmark {mark} lookup {table}")));
            let default = if *fam == "-4" { "0.0.0.0/0" } else { "::/0" };
            cmds.push(words(&format!("{fam} route add local {default} dev lo table {table}")));
        }
    }
    for args in cmds {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = net.pod.run("ip", &args);
        if !out.status.success() {
            return Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}
