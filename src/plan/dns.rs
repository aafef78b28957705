//! Step 14 (`docs/istio-compat.md §3.2`): DNS capture to the agent's DNS proxy (port 15053),
//! when effective ([`Dns::effective`](crate::config::Dns::effective)).
//!
//! Queries on port 53 are redirected to the agent in nat; in raw, conntrack zones keep the two
//! legs of a query apart (the application's leg and the agent's own upstream leg), so replies
//! are not mistaken for each other. All DNS (`--capture-all-dns`) or only DNS to the servers of
//! resolv.conf (`[-d S]`, `[-s S]`).
//!
//! ```text
//!  nat ISTIO_OUTPUT ── ─► ISTIO_OUTPUT_DNS  (families with something to capture)
//!                          ├─ -p tcp --dport 53 [-d S]          REDIRECT 15053
//!                          └─ -p udp --dport 53 [-d S]          REDIRECT 15053
//!  raw OUTPUT ──────── ─► ISTIO_OUTPUT_DNS
//!                          ├─ -p udp --dport 53 <proxy owner>     CT zone 1  (per UID, GID)
//!                          ├─ -p udp --sport 15053 <proxy owner>  CT zone 2  (per UID, GID)
//!                          └─ -p udp --dport 53 [-d S]            CT zone 2
//!  raw PREROUTING ──── ─► ISTIO_INBOUND
//!                          └─ -p udp --sport 53 [-s S]            CT zone 1
//! ```

use std::net::IpAddr;

use super::matches::{OwnerKind, dport, dst, single, sport, src, udp};
use super::oplog::{
    NAT_ISTIO_OUTPUT, NAT_ISTIO_OUTPUT_DNS, OpLog, RAW_ISTIO_INBOUND, RAW_ISTIO_OUTPUT_DNS, RAW_OUTPUT, RAW_PREROUTING,
};
use super::step::Step;
use super::{Policy, Scope};
use crate::config::{DNS_AGENT_PORT, DNS_PORT};
use crate::model::{IstioChain, Match, Proto, Target};
use crate::values::{Cidr, Family};

/// 14. DNS capture, with conntrack zones separating the two legs.
pub(super) fn capture(log: &mut OpLog, p: &Policy) {
    if !p.dns {
        return;
    }
    let dns = &p.cfg.dns;
    let all = dns.capture_all;
    let (has_v4, has_v6) = (all || !dns.servers_v4.is_empty(), all || !dns.servers_v6.is_empty());
    // Only for families with something to capture (Istio's nft backend also jumps when the
    // only servers are IPv6 ones and IPv6 is off, into a chain it never creates).
    let with_servers = Scope::from_conditions(has_v4, has_v6 && p.ipv6);

    log.at(Step::DnsOutputJump, RAW_OUTPUT)
        .both(vec![], Target::Jump(IstioChain::OutputDns));
    if let Some(scope) = with_servers {
        log.at(Step::DnsCaptureJump, NAT_ISTIO_OUTPUT)
            .scoped(scope, vec![], Target::Jump(IstioChain::OutputDns));
    }
    redirects(log, p);
    for u in &p.cfg.proxy_uids {
        proxy_zones(log, OwnerKind::Uid.matches(u, false));
    }
    for g in &p.cfg.proxy_gids {
        proxy_zones(log, OwnerKind::Gid.matches(g, false));
    }
    // One jump for the families with replies to tag; an IPv6 jump without IPv6 rules would
    // lead nowhere (docs/istio-compat.md §10.2 item 5). In a per-family projection this is
    // exactly Istio's "jump, then that family's server rules" sequence.
    if let Some(scope) = with_servers {
        log.at(Step::DnsInboundJump, RAW_PREROUTING)
            .scoped(scope, vec![], Target::Jump(IstioChain::Inbound));
    }
    zones(log, p);
}

/// The servers of one family as host prefixes.
fn servers(p: &Policy, family: Family) -> Vec<Cidr> {
    let dns = &p.cfg.dns;
    match family {
        Family::V4 => dns.servers_v4.iter().map(|s| Cidr::host(IpAddr::V4(*s))).collect(),
        Family::V6 => dns.servers_v6.iter().map(|s| Cidr::host(IpAddr::V6(*s))).collect(),
    }
}

/// DNS to the agent: TCP, then UDP; to all or to the known servers (IPv4, then IPv6).
fn redirects(log: &mut OpLog, p: &Policy) {
    let dns_port = single(DNS_PORT);
    for proto in [Proto::Tcp, Proto::Udp] {
        let redirect = Target::Redirect { port: DNS_AGENT_PORT };
        if p.cfg.dns.capture_all {
            log.at(Step::DnsRedirect, NAT_ISTIO_OUTPUT_DNS)
                .both(vec![Match::Protocol(proto), dport(dns_port)], redirect);
            continue;
        }
        for family in Family::ALL {
            for s in servers(p, family) {
                let matches = vec![Match::Protocol(proto), dport(dns_port), dst(s)];
                log.at(Step::DnsRedirect, NAT_ISTIO_OUTPUT_DNS)
                    .only(family, matches, redirect.clone());
            }
        }
    }
}

/// The proxy's own DNS traffic (one UID or GID): its upstream queries in zone 1, the agent's
/// answers to the applications (from 15053) in zone 2.
fn proxy_zones(log: &mut OpLog, owner: Match) {
    let dns_port = single(DNS_PORT);
    log.at(Step::DnsProxyZone, RAW_ISTIO_OUTPUT_DNS)
        .both(vec![udp(), dport(dns_port), owner.clone()], Target::CtZone(1));
    log.at(Step::DnsProxyZone, RAW_ISTIO_OUTPUT_DNS)
        .both(vec![udp(), sport(single(DNS_AGENT_PORT)), owner], Target::CtZone(2));
}

/// The applications' queries in zone 2 (their leg to the agent) and the servers' replies in
/// zone 1 (the agent's upstream leg): all DNS, or per server (IPv4, then IPv6; query, then
/// reply, for each).
fn zones(log: &mut OpLog, p: &Policy) {
    let dns_port = single(DNS_PORT);
    if p.cfg.dns.capture_all {
        log.at(Step::DnsZone, RAW_ISTIO_OUTPUT_DNS)
            .both(vec![udp(), dport(dns_port)], Target::CtZone(2));
        log.at(Step::DnsZone, RAW_ISTIO_INBOUND)
            .both(vec![udp(), sport(dns_port)], Target::CtZone(1));
        return;
    }
    for family in Family::ALL {
        for s in servers(p, family) {
            log.at(Step::DnsZone, RAW_ISTIO_OUTPUT_DNS).only(
                family,
                vec![udp(), dport(dns_port), dst(s)],
                Target::CtZone(2),
            );
            log.at(Step::DnsZone, RAW_ISTIO_INBOUND).only(
                family,
                vec![udp(), sport(dns_port), src(s)],
                Target::CtZone(1),
            );
        }
    }
}
