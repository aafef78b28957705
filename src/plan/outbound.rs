//! Steps 5, 8–13 and 15–18 (`docs/istio-compat.md §3.2`): outbound capture into the proxy's
//! outbound listener (the proxy port, 15001 by default).
//!
//! ```text
//!  nat OUTPUT ── ─► ISTIO_OUTPUT                                                        (8)
//!                    ├─ -p tcp|udp --dport <-o port>                  RETURN           (9)
//!                    ├─ -o lo -s 127.0.0.6 / ::6                      RETURN           (10)
//!                    ├─ per proxy UID (11), then per proxy GID (12):
//!                    │    a. -o lo ! -d LB -p tcp <owner> ─► ISTIO_IN_REDIRECT  (to the pod's own IP)
//!                    │    b. -o lo ! <owner>                          RETURN  (no loopback -i prefix)
//!                    │    c. <owner>                                  RETURN
//!                    ├─ owner groups (ISTIO_OUTBOUND_OWNER_GROUPS*)   RETURN           (13)
//!                    ├─ ─► ISTIO_OUTPUT_DNS  (DNS capture, see super::dns)             (14)
//!                    ├─ -d LB                                         RETURN           (15)
//!                    ├─ -d <-x prefix>                                RETURN           (16)
//!                    ├─ -p tcp --dport <-q port> ─► ISTIO_REDIRECT                     (17)
//!                    └─ [-d <-i prefix>] ──────────► ISTIO_REDIRECT                    (18)
//!                                                     └─ -p tcp REDIRECT <proxy port>  (5)
//!  nat PREROUTING ── -i <virtual> [-d <-i prefix>] (insert at 1) ─► ISTIO_REDIRECT     (18)
//! ```
//!
//! `LB` is the family's loopback prefix ([`Policy::loopback`]).

use super::Policy;
use super::matches::{OwnerKind, dport, dst, gid, lo, not_dport, not_dst, single, src, tcp, udp};
use super::oplog::{NAT_ISTIO_OUTPUT, NAT_ISTIO_REDIRECT, NAT_OUTPUT, NAT_PREROUTING, OpLog};
use super::step::Step;
use crate::config::{CidrSelection, DNS_PORT, OwnerGroups};
use crate::model::{IstioChain, Match, Target};
use crate::values::{Cidr, Family, Owner};

/// 5. ISTIO_REDIRECT: to the proxy port (always written).
pub(super) fn redirect_chain(log: &mut OpLog, p: &Policy) {
    log.at(Step::OutboundRedirect, NAT_ISTIO_REDIRECT)
        .both(vec![tcp()], Target::Redirect { port: p.cfg.proxy_port });
}

/// 8. All locally generated traffic enters ISTIO_OUTPUT.
pub(super) fn output_jump(log: &mut OpLog) {
    log.at(Step::OutputJump, NAT_OUTPUT)
        .both(vec![], Target::Jump(IstioChain::Output));
}

/// 9. Outbound ports never captured (`-o`), TCP then UDP.
pub(super) fn port_excludes(log: &mut OpLog, p: &Policy) {
    for port in &p.cfg.outbound_ports_exclude {
        for proto in [tcp(), udp()] {
            log.at(Step::OutboundPortExclude, NAT_ISTIO_OUTPUT)
                .both(vec![proto, dport(*port)], Target::Return);
        }
    }
}

/// 10. The proxy's inbound passthrough connections (from 127.0.0.6 / ::6) go out as they are.
pub(super) fn passthrough_return(log: &mut OpLog) {
    log.at(Step::PassthroughReturn, NAT_ISTIO_OUTPUT)
        .per_family(|f| (vec![Match::OutIface(lo()), src(f.passthrough_source())], Target::Return));
}

/// 11–12. The proxy's own traffic, per UID then per GID: its loopback traffic to a non-loopback
///        address (the pod's own IP) goes to inbound capture; everything else of the proxy is
///        left alone.
pub(super) fn proxy_owners(log: &mut OpLog, p: &Policy) {
    let include_loopback = match &p.cfg.outbound_include {
        CidrSelection::All => false,
        CidrSelection::List(l) => l.iter().any(Cidr::is_loopback),
    };
    for u in &p.cfg.proxy_uids {
        proxy_owner(log, p, OwnerKind::Uid, u, include_loopback);
    }
    for g in &p.cfg.proxy_gids {
        proxy_owner(log, p, OwnerKind::Gid, g, include_loopback);
    }
}

/// The three rules (a, b, c) of one proxy UID or GID.
fn proxy_owner(log: &mut OpLog, p: &Policy, kind: OwnerKind, who: &Owner, include_loopback: bool) {
    // Only the UID rule exempts DNS (port 53) from the loopback redirect; the GID one does
    // not (Istio quirk, kept: it changes no rule text the kernel sees twice).
    let dns_exempt = p.dns && kind == OwnerKind::Uid;
    log.at(Step::ProxyLoopbackRedirect, NAT_ISTIO_OUTPUT).per_family(|f| {
        let port_match = if dns_exempt {
            Match::DestinationPorts {
                negated: true,
                ports: vec![single(DNS_PORT), p.tunnel],
            }
        } else {
            not_dport(p.tunnel)
        };
        (
            vec![
                Match::OutIface(lo()),
                not_dst(p.loopback(f)),
                tcp(),
                port_match,
                kind.matches(who, false),
            ],
            Target::Jump(IstioChain::InRedirect),
        )
    });
    if !include_loopback {
        let matches = if p.dns {
            vec![
                Match::OutIface(lo()),
                tcp(),
                not_dport(single(DNS_PORT)),
                kind.matches(who, true),
            ]
        } else {
            vec![Match::OutIface(lo()), kind.matches(who, true)]
        };
        log.at(Step::ProxyLoopbackReturn, NAT_ISTIO_OUTPUT)
            .both(matches, Target::Return);
    }
    log.at(Step::ProxyReturn, NAT_ISTIO_OUTPUT)
        .both(vec![kind.matches(who, false)], Target::Return);
}

/// 13. Owner groups: with `*`, a RETURN per excluded group; otherwise one RETURN for every
///     group outside the include list.
pub(super) fn owner_groups(log: &mut OpLog, p: &Policy) {
    match &p.cfg.owner_groups {
        OwnerGroups::AllExcept(excluded) => {
            for g in excluded {
                log.at(Step::OwnerGroups, NAT_ISTIO_OUTPUT)
                    .both(vec![gid(g, false)], Target::Return);
            }
        }
        OwnerGroups::Only(included) => {
            log.at(Step::OwnerGroups, NAT_ISTIO_OUTPUT)
                .both(included.iter().map(|g| gid(g, true)).collect(), Target::Return);
        }
    }
}

/// 15. Loopback destinations are never captured.
pub(super) fn loopback_return(log: &mut OpLog, p: &Policy) {
    log.at(Step::LoopbackReturn, NAT_ISTIO_OUTPUT)
        .per_family(|f| (vec![dst(p.loopback(f))], Target::Return));
}

/// 16. Excluded outbound prefixes (`-x`), IPv4 then IPv6.
pub(super) fn cidr_excludes(log: &mut OpLog, p: &Policy) {
    for family in Family::ALL {
        for c in p.cfg.outbound_exclude.iter().filter(|c| c.family() == family) {
            log.at(Step::CidrExclude, NAT_ISTIO_OUTPUT)
                .only(family, vec![dst(*c)], Target::Return);
        }
    }
}

/// 17. Outbound ports always captured (`-q`).
pub(super) fn port_includes(log: &mut OpLog, p: &Policy) {
    for port in &p.cfg.outbound_ports_include {
        log.at(Step::OutboundPortInclude, NAT_ISTIO_OUTPUT)
            .both(vec![tcp(), dport(*port)], Target::Jump(IstioChain::Redirect));
    }
}

/// 18. Outbound capture (`-i`): all destinations, or per prefix (IPv4 then IPv6); a virtual
///     interface's traffic to the same destinations is captured too (inserts into nat
///     PREROUTING).
pub(super) fn cidr_includes(log: &mut OpLog, p: &Policy) {
    let redirect = || Target::Jump(IstioChain::Redirect);
    match &p.cfg.outbound_include {
        CidrSelection::All => {
            log.at(Step::CidrInclude, NAT_ISTIO_OUTPUT).both(vec![], redirect());
            for iface in &p.cfg.virtual_interfaces {
                log.at(Step::VirtualInterfaceRedirect, NAT_PREROUTING)
                    .insert(1)
                    .both(vec![Match::InIface(iface.clone())], redirect());
            }
        }
        CidrSelection::List(cidrs) => {
            for family in Family::ALL {
                for c in cidrs.iter().filter(|c| c.family() == family) {
                    for iface in &p.cfg.virtual_interfaces {
                        let matches = vec![Match::InIface(iface.clone()), dst(*c)];
                        log.at(Step::VirtualInterfaceRedirect, NAT_PREROUTING).insert(1).only(
                            family,
                            matches,
                            redirect(),
                        );
                    }
                    log.at(Step::CidrInclude, NAT_ISTIO_OUTPUT)
                        .only(family, vec![dst(*c)], redirect());
                }
            }
        }
    }
}
