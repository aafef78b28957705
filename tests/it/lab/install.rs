//! How a scenario's capture gets into the pod namespace. Scenarios are written once; each
//! installer is one way of programming the same flags (see `traffic.rs` for the list run).
//!
//! - [`Installer::Restore`]: `meshcap render --family v4|v6 FLAGS` piped into the real
//!   `iptables-<variant>-restore --noflush` / `ip6tables-<variant>-restore` inside the pod. What
//!   meshcap's apply does besides rules is done here the way Istio does it (spec §5.8): `::6/128`
//!   on `lo` when IPv6 is on, and for TPROXY `ip rule add fwmark <mark> lookup <table>` plus
//!   `ip route add local default dev lo table <table>` per family.
//!
//! The nftables backend plugs in as one more variant here (e.g. `NativeNft`, running
//! `meshcap istio-iptables --native-nftables FLAGS --network-namespace POD`) plus one line in
//! `traffic.rs`'s installer list; no scenario changes.

use std::fmt;

use super::{Net, Scenario};
use crate::support::{NetNs, meshcap};

/// The iptables binaries used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Legacy,
    Nft,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Legacy => "legacy",
            Variant::Nft => "nft",
        }
    }

    fn tool(self, v6: bool, what: &str) -> String {
        format!("{}-{}-{what}", if v6 { "ip6tables" } else { "iptables" }, self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installer {
    /// `meshcap render` + `iptables-restore --noflush`, routes set up by the lab.
    Restore(Variant),
}

impl fmt::Display for Installer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Installer::Restore(v) => write!(f, "render+{}-restore", v.name()),
        }
    }
}

impl Installer {
    /// Programs the scenario's capture into the lab's pod namespace.
    pub fn install(&self, net: &Net, scenario: &Scenario) -> Result<(), String> {
        match self {
            Installer::Restore(variant) => install_restore(*variant, net, scenario),
        }
    }

    /// The pod's capture state, for failure reports.
    pub fn dump(&self, net: &Net) -> String {
        let variant = match self {
            Installer::Restore(v) => *v,
        };
        let mut out = String::new();
        for v6 in [false, true] {
            let tool = variant.tool(v6, "save");
            out.push_str(&format!("--- {tool}\n{}", net.pod_output(&tool, &[])));
        }
        for args in [&["rule"][..], &["-6", "rule"], &["route", "show", "table", "all"]] {
            out.push_str(&format!("--- ip {}\n{}", args.join(" "), net.pod_output("ip", args)));
        }
        out
    }
}

fn install_restore(variant: Variant, net: &Net, scenario: &Scenario) -> Result<(), String> {
    let resolv = net.dir.0.join("resolv.conf");
    std::fs::write(&resolv, &scenario.resolv_conf).map_err(|e| format!("write {}: {e}", resolv.display()))?;
    let ipv6 = scenario.ipv6_enabled();
    let mut families = vec![false];
    if ipv6 {
        families.push(true);
    }
    for v6 in families {
        let mut cmd = meshcap(&["render", "--family", if v6 { "v6" } else { "v4" }]);
        cmd.args(&scenario.flags);
        cmd.arg(format!("--ipv6={ipv6}"));
        cmd.arg("--resolv-conf").arg(&resolv);
        let out = cmd.output().map_err(|e| format!("run meshcap render: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "meshcap render {:?} failed: {}",
                scenario.flags,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let payload = String::from_utf8(out.stdout).map_err(|e| e.to_string())?;
        if payload.is_empty() {
            continue;
        }
        restore(variant, &net.pod, v6, &payload)?;
    }
    routes_like_apply(net, scenario, ipv6)
}

/// Loads an iptables-restore payload into `pod` with `--noflush`.
pub fn restore(variant: Variant, pod: &NetNs, v6: bool, payload: &str) -> Result<(), String> {
    let tool = variant.tool(v6, "restore");
    let res = pod.run_with_stdin(&tool, &["--noflush", "--wait=10"], payload);
    if !res.status.success() {
        return Err(format!(
            "{tool} --noflush: {}\npayload:\n{payload}",
            String::from_utf8_lossy(&res.stderr)
        ));
    }
    Ok(())
}

/// What meshcap apply (and Istio) does after the rules (spec §5.8).
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
