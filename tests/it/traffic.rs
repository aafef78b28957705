//! Real-traffic proof of the capture: every scenario sends real packets through a pod namespace
//! with the capture installed and checks each one lands where Istio's design says (the stand-in
//! proxy on 15001/15006 with the right original destination, the DNS agent on 15053, or the
//! intended server). The harness is `lab`; scenarios are data, run once per installer: meshcap's
//! apply path (both iptables variants, and native nftables), render + iptables-restore (both
//! variants), and the native nftables transaction loaded with `nft -f`. Every case is also
//! asked of `meshcap trace` (module `tracer_vs_kernel`): the tracer's verdict must equal what
//! the kernel did.
//!
//! Findings the cases pin (real kernel behaviour, not just rule text):
//! - app → own pod IP is *not* captured: the SYN leaves through `lo`, where ISTIO_OUTPUT returns
//!   for every non-proxy owner, and the looped-back packet never sees nat PREROUTING (its
//!   conntrack entry already has its NAT decision from OUTPUT). In TPROXY mode the mangle
//!   PREROUTING pass does happen, and `-i lo -m mark ! --mark 1338 -j RETURN` lets it go.
//! - the proxy → own pod IP is captured to 15006 by nat OUTPUT (REDIRECT, also in TPROXY mode,
//!   where the rewritten destination 127.0.0.1 then escapes the TPROXY rule's `! -d` match).
//! - a dual-stack pod without `--dual-stack` gets no IPv6 capture at all (IPv4 addresses are
//!   listed first, so Istio sees an IPv4 pod): its IPv6 traffic flows uncaptured both ways.
//! - with Istio's nftables rules the same pod *does* get IPv6 capture: the tables are `inet`,
//!   so every rule without an address match applies to both families (cases marked
//!   `on_nftables`).
//! - a proxy known only by its group (uid ≠ 1337, gid 1337) reaches its own pod IP uncaptured:
//!   `-o lo -m owner ! --uid-owner 1337 -j RETURN` comes before the gid rules.
//! - in TPROXY mode the tunnel port 15008 is captured too: its RETURN lives in nat
//!   ISTIO_INBOUND, which TPROXY mode does not jump to. The proxy's own connection to its pod
//!   IP's 15008 as well: nat OUTPUT exempts it, but mangle OUTPUT marked it 1338, and coming
//!   back in through lo it is tproxied to 15006.
//! - redirected UDP DNS reaches the app from the original server address only because the
//!   agent's reply is put in conntrack zone 2 by its owner (uid 1337); the probe's connected UDP
//!   socket would otherwise never see the answer.

use crate::lab::*;
use crate::support::{SIDECAR, needs_netns};

/// The sidecar flags followed by `extra` (a later flag overrides an earlier one).
fn scenario(name: &'static str, stack: Stack, extra: &[&str]) -> Scenario {
    let mut flags = SIDECAR.to_vec();
    flags.extend_from_slice(extra);
    Scenario::new(name, stack, &flags)
}

pub fn outbound_app_captured() -> Scenario {
    scenario("outbound_app_captured", Stack::V4, &[])
        .case(tcp(From::App, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
        .case(tcp(From::App, sa(ALT4, 8443), redirected(15001, sa(ALT4, 8443))))
        // Only TCP is captured outbound; without DNS capture UDP flows untouched.
        .case(udp(From::App, sa(PEER4, 53), Outcome::Direct))
}

pub fn outbound_proxy_uid_not_captured() -> Scenario {
    scenario("outbound_proxy_uid_not_captured", Stack::V4, &[])
        .case(tcp(From::Proxy, sa(PEER4, 80), Outcome::Direct))
        .case(tcp(From::Proxy, sa(ALT4, 8080), Outcome::Direct))
        .case(tcp(From::App, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
}

pub fn outbound_proxy_gid_not_captured() -> Scenario {
    scenario(
        "outbound_proxy_gid_not_captured",
        Stack::V4,
        &["-u", "1337", "-g", "1337"],
    )
    .case(tcp(From::ProxyGid, sa(PEER4, 80), Outcome::Direct))
    // On lo, `-o lo -m owner ! --uid-owner 1337 -j RETURN` comes before the gid rules, so
    // a proxy known only by its group reaches its own pod IP uncaptured.
    .case(tcp(From::ProxyGid, sa(POD4, 8080), Outcome::Direct))
    .case(tcp(From::App, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
}

pub fn inbound_redirect() -> Scenario {
    scenario("inbound_redirect", Stack::V4, &[])
        .case(tcp(From::Peer, sa(POD4, 8080), redirected(15006, sa(POD4, 8080))))
        .case(tcp(From::Peer, sa(POD4, 8081), redirected(15006, sa(POD4, 8081))))
        // The tunnel port is never captured.
        .case(tcp(From::Peer, sa(POD4, 15008), Outcome::Direct))
}

pub fn inbound_excluded_ports() -> Scenario {
    scenario("inbound_excluded_ports", Stack::V4, &["-d", "8081"])
        .case(tcp(From::Peer, sa(POD4, 8081), Outcome::Direct))
        .case(tcp(From::Peer, sa(POD4, 8080), redirected(15006, sa(POD4, 8080))))
}

pub fn inbound_port_list() -> Scenario {
    scenario("inbound_port_list", Stack::V4, &["-b", "8080"])
        .case(tcp(From::Peer, sa(POD4, 8080), redirected(15006, sa(POD4, 8080))))
        .case(tcp(From::Peer, sa(POD4, 8081), Outcome::Direct))
}

pub fn inbound_tproxy() -> Scenario {
    scenario("inbound_tproxy", Stack::V4, &["-m", "TPROXY", "-d", "8081"])
        .case(tcp(From::Peer, sa(POD4, 8080), tproxied(15006, sa(POD4, 8080))))
        .case(tcp(From::Peer, sa(POD4, 8081), Outcome::Direct))
        // The tunnel port's exemption lives in nat ISTIO_INBOUND, which TPROXY mode does not
        // use: Istio tproxies 15008 too.
        .case(tcp(From::Peer, sa(POD4, 15008), tproxied(15006, sa(POD4, 15008))))
        .case(tcp(From::App, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
        .case(tcp(From::Proxy, sa(POD4, 8080), redirected(15006, sa(POD4, 8080))))
        // The proxy to its own tunnel port: nat OUTPUT leaves 15008 alone, but mangle OUTPUT
        // marked the packet 1338, so when it comes back in through lo mangle PREROUTING
        // tproxies it (the tracer follows the packet through lo to say so).
        .case(tcp(From::Proxy, sa(POD4, 15008), tproxied(15006, sa(POD4, 15008))))
        .case(tcp(From::Proxy, sa(POD4, 8080), Outcome::Direct).bound(PASS4))
        .case(tcp(From::App, sa(POD4, 8080), Outcome::Direct))
        .case(tcp(From::App, sa(LOOP4, 8080), Outcome::Direct))
}

pub fn outbound_cidr_exclude() -> Scenario {
    scenario("outbound_cidr_exclude", Stack::V4, &["-x", "198.51.100.3/32"])
        .case(tcp(From::App, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
        .case(tcp(From::App, sa(ALT4, 80), Outcome::Direct))
}

pub fn outbound_cidr_include() -> Scenario {
    scenario("outbound_cidr_include", Stack::V4, &["-i", "198.51.100.2/32"])
        .case(tcp(From::App, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
        .case(tcp(From::App, sa(PEER4, 8443), redirected(15001, sa(PEER4, 8443))))
        .case(tcp(From::App, sa(ALT4, 80), Outcome::Direct))
}

pub fn outbound_port_include() -> Scenario {
    scenario("outbound_port_include", Stack::V4, &["-i", "", "-q", "8443"])
        .case(tcp(From::App, sa(PEER4, 8443), redirected(15001, sa(PEER4, 8443))))
        .case(tcp(From::App, sa(PEER4, 80), Outcome::Direct))
        .case(tcp(From::Proxy, sa(PEER4, 8443), Outcome::Direct))
}

pub fn outbound_port_exclude() -> Scenario {
    scenario("outbound_port_exclude", Stack::V4, &["-o", "8080"])
        .case(tcp(From::App, sa(PEER4, 8080), Outcome::Direct))
        .case(tcp(From::App, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
}

/// One-port ranges (`8443:8443`): the kernel holds `>= 8443, <= 8443`, which the nft reader
/// reads back as port 8443 (found by fuzzing: the re-run of `--native-nftables` saw drift).
pub fn outbound_one_port_ranges() -> Scenario {
    scenario(
        "outbound_one_port_ranges",
        Stack::V4,
        &["-o", "8080:8080", "-q", "8443:8443"],
    )
    .case(tcp(From::App, sa(PEER4, 8080), Outcome::Direct))
    .case(tcp(From::App, sa(PEER4, 8443), redirected(15001, sa(PEER4, 8443))))
    .case(tcp(From::App, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
}

pub fn pod_local_traffic() -> Scenario {
    scenario("pod_local_traffic", Stack::V4, &[])
        .case(tcp(From::App, sa(LOOP4, 8080), Outcome::Direct))
        .case(tcp(From::App, sa(POD4, 8080), Outcome::Direct))
        .case(tcp(From::Proxy, sa(LOOP4, 8080), Outcome::Direct))
        .case(tcp(From::Proxy, sa(POD4, 8080), redirected(15006, sa(POD4, 8080))))
}

pub fn passthrough_source() -> Scenario {
    scenario("passthrough_source", Stack::V4, &[])
        .case(tcp(From::Proxy, sa(POD4, 8080), Outcome::Direct).bound(PASS4))
        .case(tcp(From::Proxy, sa(POD4, 8081), Outcome::Direct).bound(PASS4))
        .case(tcp(From::Proxy, sa(POD4, 8080), redirected(15006, sa(POD4, 8080))))
}

pub fn dns_resolv_conf() -> Scenario {
    scenario("dns_resolv_conf", Stack::V4, &["--redirect-dns"])
        .resolv_conf("nameserver 198.51.100.2\n")
        .case(udp(From::App, sa(PEER4, 53), dns_agent_udp()))
        .case(tcp(From::App, sa(PEER4, 53), redirected(15053, sa(PEER4, 53))))
        // Not a resolv.conf server: UDP goes out, TCP is ordinary outbound traffic.
        .case(udp(From::App, sa(ALT4, 53), Outcome::Direct))
        .case(tcp(From::App, sa(ALT4, 53), redirected(15001, sa(ALT4, 53))))
        .case(udp(From::Proxy, sa(PEER4, 53), Outcome::Direct))
        .case(tcp(From::Proxy, sa(PEER4, 53), Outcome::Direct))
        .case(udp(From::ProxyGid, sa(PEER4, 53), Outcome::Direct))
}

pub fn dns_capture_all() -> Scenario {
    scenario("dns_capture_all", Stack::V4, &["--redirect-dns", "--capture-all-dns"])
        .resolv_conf("nameserver 198.51.100.2\n")
        .case(udp(From::App, sa(ALT4, 53), dns_agent_udp()))
        .case(tcp(From::App, sa(ALT4, 53), redirected(15053, sa(ALT4, 53))))
        .case(udp(From::App, sa(PEER4, 53), dns_agent_udp()))
        .case(udp(From::Proxy, sa(ALT4, 53), Outcome::Direct))
        .case(tcp(From::Proxy, sa(ALT4, 53), Outcome::Direct))
}

pub fn exclude_interface() -> Scenario {
    scenario("exclude_interface", Stack::V4, &["-c", "eth1"])
        .second_link()
        .case(tcp(From::Vm, sa(POD4_B, 8080), Outcome::Direct))
        .case(tcp(From::Peer, sa(POD4, 8080), redirected(15006, sa(POD4, 8080))))
        .case(tcp(From::App, sa(VM4, 80), Outcome::Direct))
        .case(tcp(From::App, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
}

pub fn virtual_interface() -> Scenario {
    scenario("virtual_interface", Stack::V4, &["-k", "eth1"])
        .second_link()
        // Arriving on the virtual interface counts as the pod's outbound traffic.
        .case(tcp(From::Vm, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
        .case(tcp(From::Vm, sa(POD4_B, 8080), redirected(15001, sa(POD4_B, 8080))))
        .case(tcp(From::Peer, sa(POD4, 8080), redirected(15006, sa(POD4, 8080))))
}

pub fn virtual_interface_cidr() -> Scenario {
    scenario(
        "virtual_interface_cidr",
        Stack::V4,
        &["-k", "eth1", "-i", "198.51.100.2/32"],
    )
    .second_link()
    .case(tcp(From::Vm, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
    // Not in the include list: returned before inbound capture, reaches the app.
    .case(tcp(From::Vm, sa(POD4_B, 8080), Outcome::Direct))
    .case(tcp(From::Peer, sa(POD4, 8080), redirected(15006, sa(POD4, 8080))))
}

pub fn ipv6_only() -> Scenario {
    scenario("ipv6_only", Stack::V6, &["--redirect-dns"])
        .resolv_conf("nameserver fd00::2\n")
        .case(tcp(From::App, sa(PEER6, 80), redirected(15001, sa(PEER6, 80))))
        .case(tcp(From::Peer, sa(POD6, 8080), redirected(15006, sa(POD6, 8080))))
        .case(tcp(From::Proxy, sa(PEER6, 80), Outcome::Direct))
        .case(tcp(From::Proxy, sa(POD6, 8080), redirected(15006, sa(POD6, 8080))))
        .case(tcp(From::Proxy, sa(POD6, 8080), Outcome::Direct).bound(PASS6))
        .case(tcp(From::App, sa(LOOP6, 8080), Outcome::Direct))
        .case(tcp(From::App, sa(POD6, 8080), Outcome::Direct))
        .case(udp(From::App, sa(PEER6, 53), dns_agent_udp()))
        .case(tcp(From::App, sa(PEER6, 53), redirected(15053, sa(PEER6, 53))))
        .case(udp(From::Proxy, sa(PEER6, 53), Outcome::Direct))
}

pub fn ipv6_only_tproxy() -> Scenario {
    scenario("ipv6_only_tproxy", Stack::V6, &["-m", "TPROXY"])
        .case(tcp(From::Peer, sa(POD6, 8080), tproxied(15006, sa(POD6, 8080))))
        .case(tcp(From::Proxy, sa(POD6, 8080), redirected(15006, sa(POD6, 8080))))
        .case(tcp(From::Proxy, sa(POD6, 8080), Outcome::Direct).bound(PASS6))
        .case(tcp(From::App, sa(POD6, 8080), Outcome::Direct))
        .case(tcp(From::App, sa(PEER6, 80), redirected(15001, sa(PEER6, 80))))
}

pub fn dual_stack() -> Scenario {
    scenario(
        "dual_stack",
        Stack::Dual,
        &["--dual-stack", "-x", "198.51.100.3/32,fd00::3/128"],
    )
    .case(tcp(From::App, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
    .case(tcp(From::App, sa(PEER6, 80), redirected(15001, sa(PEER6, 80))))
    .case(tcp(From::App, sa(ALT4, 80), Outcome::Direct))
    .case(tcp(From::App, sa(ALT6, 80), Outcome::Direct))
    .case(tcp(From::Peer, sa(POD4, 8080), redirected(15006, sa(POD4, 8080))))
    .case(tcp(From::Peer, sa(POD6, 8080), redirected(15006, sa(POD6, 8080))))
    .case(tcp(From::Proxy, sa(PEER6, 80), Outcome::Direct))
}

pub fn dual_stack_tproxy() -> Scenario {
    scenario("dual_stack_tproxy", Stack::Dual, &["--dual-stack", "-m", "TPROXY"])
        .case(tcp(From::Peer, sa(POD4, 8080), tproxied(15006, sa(POD4, 8080))))
        .case(tcp(From::Peer, sa(POD6, 8080), tproxied(15006, sa(POD6, 8080))))
        // nft orders the passthrough returns differently (istio-compat §8.4); the outcome is the same.
        .case(tcp(From::Proxy, sa(POD6, 8080), Outcome::Direct).bound(PASS6))
        .case(tcp(From::Proxy, sa(POD4, 8080), Outcome::Direct).bound(PASS4))
        .case(tcp(From::Proxy, sa(POD6, 8080), redirected(15006, sa(POD6, 8080))))
}

pub fn dual_stack_without_flag() -> Scenario {
    // Istio sees an IPv4 pod (ENABLE_INBOUND_IPV6=false): iptables gets no IPv6 rules at all,
    // but the nftables tables are `inet`, so every rule without an address match (the
    // wildcard outbound jump, the inbound capture) applies to IPv6 as well.
    scenario("dual_stack_without_flag", Stack::Dual, &[])
        .case(tcp(From::App, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
        .case(tcp(From::App, sa(PEER6, 80), Outcome::Direct).on_nftables(redirected(15001, sa(PEER6, 80))))
        .case(tcp(From::Peer, sa(POD4, 8080), redirected(15006, sa(POD4, 8080))))
        .case(tcp(From::Peer, sa(POD6, 8080), Outcome::Direct).on_nftables(redirected(15006, sa(POD6, 8080))))
        // The proxy's own IPv6 traffic to its pod address: the IN_REDIRECT rules carry an
        // `ip daddr`/`ip6 daddr` match, so nft only has the IPv4 one here.
        .case(tcp(From::Proxy, sa(POD6, 8080), Outcome::Direct))
}

/// Lists long enough for `--compact` to merge rules (ports into one multiport rule or set,
/// prefixes into one nft set), with the ports the lab serves on both sides of each decision.
pub fn lists_exclude() -> Scenario {
    scenario(
        "lists_exclude",
        Stack::V4,
        &[
            "-x",
            "10.0.0.0/8,198.51.100.3/32,192.0.2.0/24,203.0.113.7/32",
            "-o",
            "22,8080,9000:9100",
            "-d",
            "15090,15021,15020,8081,7000:7010",
        ],
    )
    .case(tcp(From::App, sa(ALT4, 80), Outcome::Direct))
    .case(tcp(From::App, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
    .case(tcp(From::App, sa(PEER4, 8080), Outcome::Direct))
    .case(tcp(From::App, sa(PEER4, 8443), redirected(15001, sa(PEER4, 8443))))
    .case(tcp(From::Peer, sa(POD4, 8081), Outcome::Direct))
    .case(tcp(From::Peer, sa(POD4, 8080), redirected(15006, sa(POD4, 8080))))
    .case(tcp(From::Peer, sa(POD4, 15008), Outcome::Direct))
}

pub fn lists_include_ports() -> Scenario {
    scenario(
        "lists_include_ports",
        Stack::V4,
        &["-i", "", "-q", "8443,22,8080,9000:9100"],
    )
    .case(tcp(From::App, sa(PEER4, 8443), redirected(15001, sa(PEER4, 8443))))
    .case(tcp(From::App, sa(PEER4, 8080), redirected(15001, sa(PEER4, 8080))))
    .case(tcp(From::App, sa(PEER4, 80), Outcome::Direct))
}

pub fn lists_dual_stack() -> Scenario {
    scenario(
        "lists_dual_stack",
        Stack::Dual,
        &[
            "--dual-stack",
            "-x",
            "198.51.100.3/32,192.0.2.0/24,fd00::3/128,2001:db8::/32",
            "-i",
            "10.0.0.0/8,198.51.100.0/24,fd00::/64,2001:db8:1::/48",
        ],
    )
    .case(tcp(From::App, sa(PEER4, 80), redirected(15001, sa(PEER4, 80))))
    .case(tcp(From::App, sa(PEER6, 80), redirected(15001, sa(PEER6, 80))))
    .case(tcp(From::App, sa(ALT4, 80), Outcome::Direct))
    .case(tcp(From::App, sa(ALT6, 80), Outcome::Direct))
    .case(tcp(From::Peer, sa(POD6, 8080), redirected(15006, sa(POD6, 8080))))
}

/// Runs one scenario with one installer, then
/// asks the tracer about every case: its verdict must be what the kernel did. With `compact`,
/// meshcap also gets `--compact` (fewer rules, same verdicts): every case must end exactly as
/// without it, in the kernel and in the tracer (which then walks the compact rules).
pub fn check(scenario: fn() -> Scenario, installer: Installer, compact: bool) {
    needs_netns!();
    let mut scenario = scenario();
    if compact {
        scenario.flags.push("--compact".into());
    }
    let ran = run(&scenario, installer);
    let n = crate::tracer_vs_kernel::agree(&scenario, installer, &ran);
    let mode = if compact { " --compact" } else { "" };
    eprintln!(
        "tracer agrees with the kernel: {} [{installer}{mode}]: {n} cases",
        scenario.name
    );
}

/// One `#[test]` per scenario for the given installer and mode; the scenario list lives here
/// only.
macro_rules! scenario_tests {
    ($installer:expr, $compact:expr) => {
        scenario_tests!(@ $installer, $compact;
            outbound_app_captured,
            outbound_proxy_uid_not_captured,
            outbound_proxy_gid_not_captured,
            inbound_redirect,
            inbound_excluded_ports,
            inbound_port_list,
            inbound_tproxy,
            outbound_cidr_exclude,
            outbound_cidr_include,
            outbound_port_include,
            outbound_port_exclude,
            outbound_one_port_ranges,
            pod_local_traffic,
            passthrough_source,
            dns_resolv_conf,
            dns_capture_all,
            exclude_interface,
            virtual_interface,
            virtual_interface_cidr,
            ipv6_only,
            ipv6_only_tproxy,
            dual_stack,
            dual_stack_tproxy,
            dual_stack_without_flag,
            lists_exclude,
            lists_include_ports,
            lists_dual_stack,
        );
    };
    (@ $installer:expr, $compact:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                crate::traffic::check(crate::traffic::$name, $installer, $compact);
            }
        )*
    };
}

/// The installers every scenario runs with (one module each; the test names say which), as
/// Istio's rules and, under `compact::`, with `--compact`.
macro_rules! installer_modules {
    ($compact:expr) => {
        mod apply_legacy {
            use crate::lab::Installer;
            use crate::support::Variant;
            scenario_tests!(Installer::Apply(Variant::Legacy), $compact);
        }

        mod apply_nft {
            use crate::lab::Installer;
            use crate::support::Variant;
            scenario_tests!(Installer::Apply(Variant::Nft), $compact);
        }

        mod restore_legacy {
            use crate::lab::Installer;
            use crate::support::Variant;
            scenario_tests!(Installer::Restore(Variant::Legacy), $compact);
        }

        mod restore_nft {
            use crate::lab::Installer;
            use crate::support::Variant;
            scenario_tests!(Installer::Restore(Variant::Nft), $compact);
        }

        mod native_nft {
            use crate::lab::Installer;
            scenario_tests!(Installer::NativeNft, $compact);
        }

        mod apply_native_nft {
            use crate::lab::Installer;
            scenario_tests!(Installer::ApplyNft, $compact);
        }
    };
}

installer_modules!(false);

mod compact {
    installer_modules!(true);
}
