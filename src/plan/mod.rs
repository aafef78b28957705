//! Istio's capture policy as a pure function: `Config` + IPv6 enablement → [`Plan`].
//!
//! [`build`] walks Istio 1.29's ordered algorithm (spec §3.2, steps 1–19) once and records every
//! rule as a [`ScopedOp`]: the operation plus the families it belongs to. Family-specific values
//! (loopback prefix, `127.0.0.6`/`::6`, CIDRs, DNS servers) are computed per family right here;
//! no placeholder is substituted later. [`Plan::ruleset`] projects the sequence onto one family
//! (the iptables view); the nft renderer reads the whole sequence, where a rule scoped to both
//! families is written once.

pub mod compact;

use std::net::IpAddr;

use crate::config::{
    CidrSelection, Config, DNS_AGENT_PORT, DNS_PORT, InterceptionMode, OUTBOUND_MARK, OwnerGroups, PortSelection,
};
use crate::model::RulesetView;
use crate::model::{
    Backend, ChainName, CtState, Hook, Invalid, IstioChain, Match, Op, Position, Proto, Rule, Ruleset, Table,
    TableName, Target,
};
use crate::values::{Cidr, Family, Iface, Mark, Owner, PortSpec, RouteTable};

/// The families an operation is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Both,
    Only(Family),
}

impl Scope {
    pub fn includes(self, family: Family) -> bool {
        match self {
            Scope::Both => true,
            Scope::Only(f) => f == family,
        }
    }

    /// Both, one or neither family, from a condition per family.
    fn from_conditions(v4: bool, v6: bool) -> Option<Scope> {
        match (v4, v6) {
            (true, true) => Some(Scope::Both),
            (true, false) => Some(Scope::Only(Family::V4)),
            (false, true) => Some(Scope::Only(Family::V6)),
            (false, false) => None,
        }
    }
}

/// One operation of the capture with its table, families and provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedOp {
    pub scope: Scope,
    pub table: TableName,
    pub op: Op,
    /// The bullet of the algorithm that wrote the operation.
    pub step: Step,
}

/// Which bullet of Istio's algorithm (spec §3.2, numbers in the docs) wrote an operation: the
/// rule's provenance. It never changes what a rule matches or does (that is [`Rule`]); it lets a
/// backend whose Istio counterpart spells each bullet by hand (nft, spec §8.3) reproduce that
/// spelling without re-deriving the policy, and lets diagnostics say why a rule exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// 1. Traffic on an excluded interface is left alone (nat; mangle too in TPROXY mode).
    ExcludedInterface,
    /// 2. A virtual interface's traffic skips inbound capture.
    VirtualInterfaceReturn,
    /// 3. Conntrack-invalid packets jump to the drop chain.
    DropInvalid,
    /// 3. The drop chain's verdict.
    DropVerdict,
    /// 4. The tunnel port is never captured inbound.
    TunnelPortReturn,
    /// 5. The outbound redirect chain.
    OutboundRedirect,
    /// 6. The inbound redirect chain.
    InboundRedirect,
    /// 7 (TPROXY). Mark a diverted packet.
    DivertMark,
    /// 7 (TPROXY). Accept a diverted packet.
    DivertAccept,
    /// 7 (TPROXY). Deliver to the proxy's transparent socket.
    Tproxy,
    /// 7. Jump into inbound capture.
    InboundJump,
    /// 7. An inbound port excluded from capture (with all ports captured).
    InboundPortExclude,
    /// 7 (TPROXY). Established inbound connections are diverted.
    InboundEstablished,
    /// 7. Inbound capture, per port or for all ports.
    InboundCapture,
    /// 8. Locally generated traffic enters ISTIO_OUTPUT.
    OutputJump,
    /// 9. An outbound port never captured.
    OutboundPortExclude,
    /// 10. The proxy's inbound passthrough connections (from 127.0.0.6 / ::6).
    PassthroughReturn,
    /// 11a / 12a. The proxy's loopback traffic to the pod's own address goes to inbound capture.
    ProxyLoopbackRedirect,
    /// 11b / 12b. Other loopback traffic not of the proxy is left alone.
    ProxyLoopbackReturn,
    /// 11c / 12c. The proxy's own traffic is left alone.
    ProxyReturn,
    /// 13. Owner-group include / exclude.
    OwnerGroups,
    /// 14. raw OUTPUT enters the DNS chain.
    DnsOutputJump,
    /// 14. nat ISTIO_OUTPUT enters the DNS chain.
    DnsCaptureJump,
    /// 14. DNS to the agent (TCP and UDP; to all or to the known servers).
    DnsRedirect,
    /// 14. Conntrack zones for the proxy's own DNS traffic.
    DnsProxyZone,
    /// 14. raw PREROUTING enters the DNS reply chain.
    DnsInboundJump,
    /// 14. Conntrack zones for DNS queries and replies (all, or per server).
    DnsZone,
    /// 15. Loopback destinations are never captured.
    LoopbackReturn,
    /// 16. An excluded outbound CIDR.
    CidrExclude,
    /// 17. An outbound port always captured.
    OutboundPortInclude,
    /// 18. Outbound CIDR capture (or all destinations).
    CidrInclude,
    /// 18. A virtual interface's traffic to a captured destination.
    VirtualInterfaceRedirect,
    /// 19. The TPROXY mark is saved on the connection.
    TproxySaveMark,
    /// 19. Marked loopback traffic leaves mangle OUTPUT untouched.
    TproxyMarkedReturn,
    /// 19. The proxy's loopback traffic to non-loopback addresses gets the outbound mark.
    TproxyProxyMark,
    /// 19. The connection mark is restored on the packet.
    TproxyRestoreMark,
    /// 19. Marked packets skip TPROXY inbound capture.
    TproxyInboundMarked,
    /// 19. The passthrough source on `lo` skips TPROXY inbound capture.
    TproxyInboundPassthrough,
    /// 19. Loopback packets without the outbound mark skip TPROXY inbound capture.
    TproxyInboundLoopback,
}

/// TPROXY policy routing: `fwmark <mark> lookup <table>` and `local default dev lo table <table>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TproxyRoutes {
    pub mark: Mark,
    pub table: RouteTable,
    pub families: Vec<Family>,
}

/// The IPv6 inbound passthrough source the proxy binds (`::6`), put on `lo` with IPv6.
pub const PASSTHROUGH_V6: std::net::IpAddr = std::net::IpAddr::V6(std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6));

/// Routing state the capture needs besides rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routes {
    /// `::6/128` on `lo` (the IPv6 inbound passthrough source), when IPv6 is on.
    pub v6_passthrough_address: bool,
    pub tproxy: Option<TproxyRoutes>,
}

/// Everything meshcap will program, for every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ipv6: bool,
    /// All operations in Istio's generation order.
    pub ops: Vec<ScopedOp>,
    pub routes: Routes,
}

impl Plan {
    /// The families the plan programs (IPv4 always, IPv6 when enabled).
    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    /// One family's view: its operations grouped by table (payload order), generation order
    /// kept inside each table. Empty when the family is off.
    pub fn ruleset(&self, family: Family) -> Ruleset {
        let mut tables = Vec::new();
        if family == Family::V4 || self.ipv6 {
            for name in TableName::ALL {
                let ops: Vec<Op> = self
                    .ops
                    .iter()
                    .filter(|s| s.table == name && s.scope.includes(family))
                    .map(|s| s.op.clone())
                    .collect();
                if !ops.is_empty() {
                    tables.push(Table { name, ops });
                }
            }
        }
        Ruleset { family, tables }
    }
}

/// The plan the configuration asks for: [`build`], then, with `--compact`, [`compact::plan`]
/// for the configuration's backend.
pub fn build_for(cfg: &Config, ipv6: bool) -> Plan {
    let plan = build(cfg, ipv6);
    if cfg.compact {
        compact::plan(plan, cfg.backend())
    } else {
        plan
    }
}

impl Plan {
    /// Checks every family's view for `backend` ([`Ruleset::validate_for`]).
    pub fn validate(&self, backend: Backend) -> Result<(), (Family, Invalid)> {
        for family in self.families() {
            let tables = TableName::ALL
                .into_iter()
                .map(|name| {
                    let ops: Vec<&Op> = self
                        .ops
                        .iter()
                        .filter(|s| s.table == name && s.scope.includes(family))
                        .map(|s| &s.op)
                        .collect();
                    (name, ops)
                })
                .filter(|(_, ops)| !ops.is_empty())
                .collect();
            RulesetView { family, tables }
                .validate_for(backend)
                .map_err(|e| (family, e))?;
        }
        Ok(())
    }

    /// Every family's view ([`Plan::ruleset`] for each of [`Plan::families`]), moving the
    /// operations instead of cloning them (an operation for both families is cloned once).
    pub fn into_rulesets(self) -> Vec<Ruleset> {
        let families = self.families();
        let mut per_family: Vec<[Vec<Op>; 4]> = families.iter().map(|_| Default::default()).collect();
        let slot = |t: TableName| TableName::ALL.iter().position(|&n| n == t).expect("a known table");
        for s in self.ops {
            let t = slot(s.table);
            match s.scope {
                Scope::Both => {
                    if let [v4, v6] = per_family.as_mut_slice() {
                        v4[t].push(s.op.clone());
                        v6[t].push(s.op);
                    } else {
                        per_family[0][t].push(s.op);
                    }
                }
                Scope::Only(f) => {
                    if let Some(i) = families.iter().position(|&x| x == f) {
                        per_family[i][t].push(s.op);
                    }
                }
            }
        }
        families
            .into_iter()
            .zip(per_family)
            .map(|(family, tables)| Ruleset {
                family,
                tables: TableName::ALL
                    .into_iter()
                    .zip(tables)
                    .filter(|(_, ops)| !ops.is_empty())
                    .map(|(name, ops)| Table { name, ops })
                    .collect(),
            })
            .collect()
    }
}

/// Records operations in order.
struct Recorder {
    ipv6: bool,
    ops: Vec<ScopedOp>,
}

impl Recorder {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        step: Step,
        scope: Scope,
        table: TableName,
        chain: ChainName,
        position: Position,
        matches: Vec<Match>,
        target: Target,
    ) {
        if scope == Scope::Only(Family::V6) && !self.ipv6 {
            return;
        }
        self.ops.push(ScopedOp {
            scope,
            table,
            op: Op {
                chain,
                position,
                rule: Rule::new(matches, target),
            },
            step,
        });
    }

    /// Append to both families.
    fn both(&mut self, step: Step, table: TableName, chain: ChainName, matches: Vec<Match>, target: Target) {
        self.push(step, Scope::Both, table, chain, Position::Append, matches, target);
    }

    /// Append to one family.
    #[allow(clippy::too_many_arguments)]
    fn only(
        &mut self,
        step: Step,
        family: Family,
        table: TableName,
        chain: ChainName,
        matches: Vec<Match>,
        target: Target,
    ) {
        self.push(
            step,
            Scope::Only(family),
            table,
            chain,
            Position::Append,
            matches,
            target,
        );
    }

    /// Append a rule whose text depends on the family: the IPv4 variant, then the IPv6 one.
    fn per_family(
        &mut self,
        step: Step,
        table: TableName,
        chain: ChainName,
        rule: impl Fn(Family) -> (Vec<Match>, Target),
    ) {
        for family in Family::ALL {
            let (matches, target) = rule(family);
            self.only(step, family, table, chain, matches, target);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        step: Step,
        scope: Scope,
        table: TableName,
        chain: ChainName,
        at: u32,
        matches: Vec<Match>,
        target: Target,
    ) {
        self.push(step, scope, table, chain, Position::Insert(at), matches, target);
    }
}

const NAT: TableName = TableName::Nat;
const MANGLE: TableName = TableName::Mangle;
const RAW: TableName = TableName::Raw;
const PREROUTING: ChainName = ChainName::Builtin(Hook::Prerouting);
const OUTPUT: ChainName = ChainName::Builtin(Hook::Output);
const INBOUND: ChainName = ChainName::Istio(IstioChain::Inbound);
const REDIRECT: ChainName = ChainName::Istio(IstioChain::Redirect);
const IN_REDIRECT: ChainName = ChainName::Istio(IstioChain::InRedirect);
const ISTIO_OUTPUT: ChainName = ChainName::Istio(IstioChain::Output);
const OUTPUT_DNS: ChainName = ChainName::Istio(IstioChain::OutputDns);
const DIVERT: ChainName = ChainName::Istio(IstioChain::Divert);
const TPROXY: ChainName = ChainName::Istio(IstioChain::Tproxy);
const DROP: ChainName = ChainName::Istio(IstioChain::Drop);

fn tcp() -> Match {
    Match::Protocol(Proto::Tcp)
}
fn udp() -> Match {
    Match::Protocol(Proto::Udp)
}
fn dport(p: PortSpec) -> Match {
    Match::DestinationPort {
        negated: false,
        port: p,
    }
}
fn not_dport(p: PortSpec) -> Match {
    Match::DestinationPort { negated: true, port: p }
}
fn sport(p: PortSpec) -> Match {
    Match::SourcePort {
        negated: false,
        port: p,
    }
}
fn dst(c: Cidr) -> Match {
    Match::Destination {
        negated: false,
        cidr: c,
    }
}
fn not_dst(c: Cidr) -> Match {
    Match::Destination { negated: true, cidr: c }
}
fn src(c: Cidr) -> Match {
    Match::Source {
        negated: false,
        cidr: c,
    }
}
fn lo() -> Iface {
    Iface::parse("lo").expect("lo is a valid name")
}
fn uid(o: &Owner, negated: bool) -> Match {
    Match::UidOwner {
        negated,
        owner: o.clone(),
    }
}
fn gid(o: &Owner, negated: bool) -> Match {
    Match::GidOwner {
        negated,
        owner: o.clone(),
    }
}
fn single(p: crate::values::Port) -> PortSpec {
    PortSpec::Single(p)
}

#[derive(Clone, Copy)]
enum OwnerKind {
    Uid,
    Gid,
}

/// Builds the plan. `ipv6` is the resolved IPv6 enablement.
pub fn build(cfg: &Config, ipv6: bool) -> Plan {
    // The list-driven rules dominate long configurations: size the sequence once.
    let lists = cfg.exclude_interfaces.len() * 4
        + cfg.virtual_interfaces.len() * 2
        + match &cfg.inbound_ports {
            PortSelection::All => cfg.inbound_exclude_ports.len(),
            PortSelection::List(l) => l.len() * 2,
        }
        + cfg.outbound_ports_exclude.len() * 2
        + cfg.outbound_exclude.len()
        + cfg.outbound_ports_include.len()
        + match &cfg.outbound_include {
            CidrSelection::All => 1,
            CidrSelection::List(l) => l.len() * (1 + cfg.virtual_interfaces.len()),
        };
    let mut r = Recorder {
        ipv6,
        ops: Vec::with_capacity(64 + lists),
    };
    let tproxy = cfg.mode == InterceptionMode::Tproxy;
    let loopback = |f: Family| match f {
        Family::V4 => cfg.loopback_v4,
        Family::V6 => Family::v6_loopback(),
    };
    let tunnel = single(cfg.inbound_tunnel_port);
    let dns = cfg.dns.effective();
    let (servers_v4, servers_v6) = (&cfg.dns.servers_v4, &cfg.dns.servers_v6);
    let server = |ip: IpAddr| Cidr::host(ip);
    let include_loopback = match &cfg.outbound_include {
        CidrSelection::All => false,
        CidrSelection::List(l) => l.iter().any(Cidr::is_loopback),
    };

    // 1. Excluded interfaces: neither direction is captured.
    for iface in &cfg.exclude_interfaces {
        r.both(
            Step::ExcludedInterface,
            NAT,
            PREROUTING,
            vec![Match::InIface(iface.clone())],
            Target::Return,
        );
        r.both(
            Step::ExcludedInterface,
            NAT,
            OUTPUT,
            vec![Match::OutIface(iface.clone())],
            Target::Return,
        );
    }
    if tproxy {
        for iface in &cfg.exclude_interfaces {
            r.both(
                Step::ExcludedInterface,
                MANGLE,
                PREROUTING,
                vec![Match::InIface(iface.clone())],
                Target::Return,
            );
            r.both(
                Step::ExcludedInterface,
                MANGLE,
                OUTPUT,
                vec![Match::OutIface(iface.clone())],
                Target::Return,
            );
        }
    }

    // 2. Virtual interfaces skip inbound capture (their traffic is handled as outbound in 18).
    for iface in &cfg.virtual_interfaces {
        r.insert(
            Step::VirtualInterfaceReturn,
            Scope::Both,
            NAT,
            PREROUTING,
            1,
            vec![Match::InIface(iface.clone())],
            Target::Return,
        );
    }

    // 3. Drop conntrack-invalid packets.
    if cfg.drop_invalid {
        r.both(
            Step::DropInvalid,
            MANGLE,
            PREROUTING,
            vec![Match::ConntrackState(vec![CtState::Invalid])],
            Target::Jump(IstioChain::Drop),
        );
        r.both(Step::DropVerdict, MANGLE, DROP, vec![], Target::Drop);
    }

    // 4–6. The tunnel port is never captured inbound; the two redirect chains always exist.
    r.both(
        Step::TunnelPortReturn,
        NAT,
        INBOUND,
        vec![tcp(), dport(tunnel)],
        Target::Return,
    );
    r.both(
        Step::OutboundRedirect,
        NAT,
        REDIRECT,
        vec![tcp()],
        Target::Redirect { port: cfg.proxy_port },
    );
    r.both(
        Step::InboundRedirect,
        NAT,
        IN_REDIRECT,
        vec![tcp()],
        Target::Redirect {
            port: cfg.inbound_capture_port,
        },
    );

    // 7. Inbound capture.
    if !cfg.inbound_ports.is_empty() {
        let table = if tproxy { MANGLE } else { NAT };
        if tproxy {
            r.both(
                Step::DivertMark,
                MANGLE,
                DIVERT,
                vec![],
                Target::SetMark(cfg.tproxy_mark),
            );
            r.both(Step::DivertAccept, MANGLE, DIVERT, vec![], Target::Accept);
            r.per_family(Step::Tproxy, MANGLE, TPROXY, |f| {
                (
                    vec![not_dst(loopback(f)), tcp()],
                    Target::Tproxy {
                        mark: cfg.tproxy_mark,
                        port: cfg.inbound_capture_port,
                    },
                )
            });
        }
        r.both(
            Step::InboundJump,
            table,
            PREROUTING,
            vec![tcp()],
            Target::Jump(IstioChain::Inbound),
        );
        let established = || Match::ConntrackState(vec![CtState::Related, CtState::Established]);
        match &cfg.inbound_ports {
            PortSelection::All => {
                for p in &cfg.inbound_exclude_ports {
                    r.both(
                        Step::InboundPortExclude,
                        table,
                        INBOUND,
                        vec![tcp(), dport(*p)],
                        Target::Return,
                    );
                }
                if tproxy {
                    r.both(
                        Step::InboundEstablished,
                        MANGLE,
                        INBOUND,
                        vec![tcp(), established()],
                        Target::Jump(IstioChain::Divert),
                    );
                    r.both(
                        Step::InboundCapture,
                        MANGLE,
                        INBOUND,
                        vec![tcp()],
                        Target::Jump(IstioChain::Tproxy),
                    );
                } else {
                    r.both(
                        Step::InboundCapture,
                        NAT,
                        INBOUND,
                        vec![tcp()],
                        Target::Jump(IstioChain::InRedirect),
                    );
                }
            }
            PortSelection::List(ports) => {
                for p in ports {
                    if tproxy {
                        r.both(
                            Step::InboundEstablished,
                            MANGLE,
                            INBOUND,
                            vec![tcp(), dport(*p), established()],
                            Target::Jump(IstioChain::Divert),
                        );
                        r.both(
                            Step::InboundCapture,
                            MANGLE,
                            INBOUND,
                            vec![tcp(), dport(*p)],
                            Target::Jump(IstioChain::Tproxy),
                        );
                    } else {
                        r.both(
                            Step::InboundCapture,
                            NAT,
                            INBOUND,
                            vec![tcp(), dport(*p)],
                            Target::Jump(IstioChain::InRedirect),
                        );
                    }
                }
            }
        }
    }

    // 8. All locally generated traffic enters ISTIO_OUTPUT.
    r.both(Step::OutputJump, NAT, OUTPUT, vec![], Target::Jump(IstioChain::Output));

    // 9. Outbound port exclusions (TCP and UDP).
    for p in &cfg.outbound_ports_exclude {
        r.both(
            Step::OutboundPortExclude,
            NAT,
            ISTIO_OUTPUT,
            vec![tcp(), dport(*p)],
            Target::Return,
        );
        r.both(
            Step::OutboundPortExclude,
            NAT,
            ISTIO_OUTPUT,
            vec![udp(), dport(*p)],
            Target::Return,
        );
    }

    // 10. The proxy's inbound passthrough connections (from 127.0.0.6 / ::6) go out as they are.
    r.per_family(Step::PassthroughReturn, NAT, ISTIO_OUTPUT, |f| {
        (vec![Match::OutIface(lo()), src(f.passthrough_source())], Target::Return)
    });

    // 11–12. The proxy's own traffic: loopback traffic to a non-loopback address (the pod's
    // own IP) goes to inbound capture; everything else of the proxy is left alone.
    let owner_rules = |r: &mut Recorder, kind: OwnerKind, who: &Owner| {
        let owner = |negated| match kind {
            OwnerKind::Uid => uid(who, negated),
            OwnerKind::Gid => gid(who, negated),
        };
        // Only the UID rule exempts DNS (port 53) from the loopback redirect; the GID one does
        // not (Istio quirk, kept: it changes no rule text the kernel sees twice).
        let dns_exempt = dns && matches!(kind, OwnerKind::Uid);
        r.per_family(Step::ProxyLoopbackRedirect, NAT, ISTIO_OUTPUT, |f| {
            let port_match = if dns_exempt {
                Match::DestinationPorts {
                    negated: true,
                    ports: vec![single(DNS_PORT), tunnel],
                }
            } else {
                not_dport(tunnel)
            };
            (
                vec![
                    Match::OutIface(lo()),
                    not_dst(loopback(f)),
                    tcp(),
                    port_match,
                    owner(false),
                ],
                Target::Jump(IstioChain::InRedirect),
            )
        });
        if !include_loopback {
            let matches = if dns {
                vec![Match::OutIface(lo()), tcp(), not_dport(single(DNS_PORT)), owner(true)]
            } else {
                vec![Match::OutIface(lo()), owner(true)]
            };
            r.both(Step::ProxyLoopbackReturn, NAT, ISTIO_OUTPUT, matches, Target::Return);
        }
        r.both(Step::ProxyReturn, NAT, ISTIO_OUTPUT, vec![owner(false)], Target::Return);
    };
    for u in &cfg.proxy_uids {
        owner_rules(&mut r, OwnerKind::Uid, u);
    }
    for g in &cfg.proxy_gids {
        owner_rules(&mut r, OwnerKind::Gid, g);
    }

    // 13. Owner groups.
    match &cfg.owner_groups {
        OwnerGroups::AllExcept(excluded) => {
            for g in excluded {
                r.both(
                    Step::OwnerGroups,
                    NAT,
                    ISTIO_OUTPUT,
                    vec![gid(g, false)],
                    Target::Return,
                );
            }
        }
        OwnerGroups::Only(included) => {
            r.both(
                Step::OwnerGroups,
                NAT,
                ISTIO_OUTPUT,
                included.iter().map(|g| gid(g, true)).collect(),
                Target::Return,
            );
        }
    }

    // 14. DNS capture to the agent, with conntrack zones separating the two legs.
    if dns {
        let all = cfg.dns.capture_all;
        let (has_v4, has_v6) = (all || !servers_v4.is_empty(), all || !servers_v6.is_empty());
        let dns_port = single(DNS_PORT);
        r.both(
            Step::DnsOutputJump,
            RAW,
            OUTPUT,
            vec![],
            Target::Jump(IstioChain::OutputDns),
        );
        // Only for families with something to capture (Istio's nft backend also jumps when the
        // only servers are IPv6 ones and IPv6 is off, into a chain it never creates).
        if let Some(scope) = Scope::from_conditions(has_v4, has_v6 && ipv6) {
            r.push(
                Step::DnsCaptureJump,
                scope,
                NAT,
                ISTIO_OUTPUT,
                Position::Append,
                vec![],
                Target::Jump(IstioChain::OutputDns),
            );
        }
        for proto in [Proto::Tcp, Proto::Udp] {
            let redirect = Target::Redirect { port: DNS_AGENT_PORT };
            if all {
                r.both(
                    Step::DnsRedirect,
                    NAT,
                    OUTPUT_DNS,
                    vec![Match::Protocol(proto), dport(dns_port)],
                    redirect,
                );
            } else {
                for s in servers_v4 {
                    let m = vec![Match::Protocol(proto), dport(dns_port), dst(server(IpAddr::V4(*s)))];
                    r.only(Step::DnsRedirect, Family::V4, NAT, OUTPUT_DNS, m, redirect.clone());
                }
                for s in servers_v6 {
                    let m = vec![Match::Protocol(proto), dport(dns_port), dst(server(IpAddr::V6(*s)))];
                    r.only(Step::DnsRedirect, Family::V6, NAT, OUTPUT_DNS, m, redirect.clone());
                }
            }
        }
        let zone_rules = |r: &mut Recorder, owner: Match| {
            r.both(
                Step::DnsProxyZone,
                RAW,
                OUTPUT_DNS,
                vec![udp(), dport(dns_port), owner.clone()],
                Target::CtZone(1),
            );
            r.both(
                Step::DnsProxyZone,
                RAW,
                OUTPUT_DNS,
                vec![udp(), sport(single(DNS_AGENT_PORT)), owner],
                Target::CtZone(2),
            );
        };
        for u in &cfg.proxy_uids {
            zone_rules(&mut r, uid(u, false));
        }
        for g in &cfg.proxy_gids {
            zone_rules(&mut r, gid(g, false));
        }
        // One jump for the families with replies to tag; an IPv6 jump without IPv6 rules would
        // lead nowhere (spec §10.2 item 5). In a per-family projection this is exactly Istio's
        // "jump, then that family's server rules" sequence.
        if let Some(scope) = Scope::from_conditions(has_v4, has_v6 && ipv6) {
            r.push(
                Step::DnsInboundJump,
                scope,
                RAW,
                PREROUTING,
                Position::Append,
                vec![],
                Target::Jump(IstioChain::Inbound),
            );
        }
        if all {
            r.both(
                Step::DnsZone,
                RAW,
                OUTPUT_DNS,
                vec![udp(), dport(dns_port)],
                Target::CtZone(2),
            );
            r.both(
                Step::DnsZone,
                RAW,
                INBOUND,
                vec![udp(), sport(dns_port)],
                Target::CtZone(1),
            );
        } else {
            let servers: [(Family, Vec<Cidr>); 2] = [
                (Family::V4, servers_v4.iter().map(|s| server(IpAddr::V4(*s))).collect()),
                (Family::V6, servers_v6.iter().map(|s| server(IpAddr::V6(*s))).collect()),
            ];
            for (family, list) in servers {
                for s in list {
                    r.only(
                        Step::DnsZone,
                        family,
                        RAW,
                        OUTPUT_DNS,
                        vec![udp(), dport(dns_port), dst(s)],
                        Target::CtZone(2),
                    );
                    r.only(
                        Step::DnsZone,
                        family,
                        RAW,
                        INBOUND,
                        vec![udp(), sport(dns_port), src(s)],
                        Target::CtZone(1),
                    );
                }
            }
        }
    }

    // 15. Loopback destinations are never captured.
    r.per_family(Step::LoopbackReturn, NAT, ISTIO_OUTPUT, |f| {
        (vec![dst(loopback(f))], Target::Return)
    });

    // 16. Excluded outbound CIDRs.
    for family in Family::ALL {
        for c in cfg.outbound_exclude.iter().filter(|c| c.family() == family) {
            r.only(
                Step::CidrExclude,
                family,
                NAT,
                ISTIO_OUTPUT,
                vec![dst(*c)],
                Target::Return,
            );
        }
    }

    // 17. Outbound ports always captured.
    for p in &cfg.outbound_ports_include {
        r.both(
            Step::OutboundPortInclude,
            NAT,
            ISTIO_OUTPUT,
            vec![tcp(), dport(*p)],
            Target::Jump(IstioChain::Redirect),
        );
    }

    // 18. Outbound CIDR capture; virtual interfaces' traffic to the same destinations too.
    match &cfg.outbound_include {
        CidrSelection::All => {
            r.both(
                Step::CidrInclude,
                NAT,
                ISTIO_OUTPUT,
                vec![],
                Target::Jump(IstioChain::Redirect),
            );
            for iface in &cfg.virtual_interfaces {
                r.insert(
                    Step::VirtualInterfaceRedirect,
                    Scope::Both,
                    NAT,
                    PREROUTING,
                    1,
                    vec![Match::InIface(iface.clone())],
                    Target::Jump(IstioChain::Redirect),
                );
            }
        }
        CidrSelection::List(cidrs) => {
            for family in Family::ALL {
                for c in cidrs.iter().filter(|c| c.family() == family) {
                    for iface in &cfg.virtual_interfaces {
                        let m = vec![Match::InIface(iface.clone()), dst(*c)];
                        r.insert(
                            Step::VirtualInterfaceRedirect,
                            Scope::Only(family),
                            NAT,
                            PREROUTING,
                            1,
                            m,
                            Target::Jump(IstioChain::Redirect),
                        );
                    }
                    r.only(
                        Step::CidrInclude,
                        family,
                        NAT,
                        ISTIO_OUTPUT,
                        vec![dst(*c)],
                        Target::Jump(IstioChain::Redirect),
                    );
                }
            }
        }
    }

    // 19. TPROXY: keep the mark on the connection, let the proxy's loopback replies through.
    if tproxy {
        let mark = cfg.tproxy_mark;
        let has_mark = |negated, mark| Match::Mark { negated, mark };
        r.both(
            Step::TproxySaveMark,
            MANGLE,
            PREROUTING,
            vec![tcp(), has_mark(false, mark)],
            Target::SaveMark,
        );
        r.both(
            Step::TproxyMarkedReturn,
            MANGLE,
            OUTPUT,
            vec![tcp(), Match::OutIface(lo()), has_mark(false, mark)],
            Target::Return,
        );
        for (kind, list) in [(OwnerKind::Uid, &cfg.proxy_uids), (OwnerKind::Gid, &cfg.proxy_gids)] {
            for who in list {
                r.per_family(Step::TproxyProxyMark, MANGLE, OUTPUT, |f| {
                    let owner = match kind {
                        OwnerKind::Uid => uid(who, false),
                        OwnerKind::Gid => gid(who, false),
                    };
                    (
                        vec![not_dst(loopback(f)), tcp(), Match::OutIface(lo()), owner],
                        Target::SetMark(OUTBOUND_MARK),
                    )
                });
            }
        }
        r.both(
            Step::TproxyRestoreMark,
            MANGLE,
            OUTPUT,
            vec![tcp(), Match::ConnMark(mark)],
            Target::RestoreMark,
        );
        r.insert(
            Step::TproxyInboundMarked,
            Scope::Both,
            MANGLE,
            INBOUND,
            1,
            vec![tcp(), has_mark(false, mark)],
            Target::Return,
        );
        for family in Family::ALL {
            let m = vec![tcp(), src(family.passthrough_source()), Match::InIface(lo())];
            r.insert(
                Step::TproxyInboundPassthrough,
                Scope::Only(family),
                MANGLE,
                INBOUND,
                2,
                m,
                Target::Return,
            );
        }
        r.insert(
            Step::TproxyInboundLoopback,
            Scope::Both,
            MANGLE,
            INBOUND,
            3,
            vec![tcp(), Match::InIface(lo()), has_mark(true, OUTBOUND_MARK)],
            Target::Return,
        );
    }

    let routes = Routes {
        v6_passthrough_address: ipv6,
        tproxy: (tproxy && !cfg.inbound_ports.is_empty()).then(|| TproxyRoutes {
            mark: cfg.tproxy_mark,
            table: cfg.tproxy_route_table,
            families: if ipv6 {
                vec![Family::V4, Family::V6]
            } else {
                vec![Family::V4]
            },
        }),
    };
    Plan {
        ipv6,
        ops: r.ops,
        routes,
    }
}

/// Validates flags and builds the plan for `render` (no host scans), compacted with
/// `--compact`, and checks it for the configuration's backend.
pub fn for_render(args: &crate::cli::RenderArgs, env: &crate::sys::host::Env) -> crate::error::Result<(Config, Plan)> {
    for_flags(&args.capture, args.ipv6.as_deref(), &args.resolv_conf, env)
}

/// Validates capture flags and builds the plan without scanning the host: IPv6 from the
/// `--ipv6` value (or `ENABLE_INBOUND_IPV6`), DNS servers from `resolv_conf`; compacted with
/// `--compact` and checked for the configuration's backend. Shared by `render`, `trace` and
/// `check`.
pub fn for_flags(
    capture: &crate::cli::CaptureFlags,
    ipv6: Option<&str>,
    resolv_conf: &str,
    env: &crate::sys::host::Env,
) -> crate::error::Result<(Config, Plan)> {
    let (config, plan) = unchecked(capture, ipv6, resolv_conf, env)?;
    plan.validate(config.backend())
        .map_err(|(family, e)| crate::error::Error::inconsistent(family, e))?;
    Ok((config, plan))
}

/// [`for_flags`] without the check (the caller checks what it renders).
pub fn unchecked(
    capture: &crate::cli::CaptureFlags,
    ipv6: Option<&str>,
    resolv_conf: &str,
    env: &crate::sys::host::Env,
) -> crate::error::Result<(Config, Plan)> {
    let ipv6 = crate::config::Config::ipv6_setting(&ipv6.map(str::to_string), env)?;
    let files = crate::config::HostFiles {
        resolv_conf: resolv_conf.to_string(),
        ..crate::config::HostFiles::default()
    };
    let config = Config::from_flags(capture, env, &files, ipv6)?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let ipv6 = matches!(ipv6, crate::config::Ipv6Setting::Explicit(true));
    let plan = build_for(&config, ipv6);
    Ok((config, plan))
}

/// Plans for unit tests: `meshcap render ARGS` as the binary would build it (no host scans).
#[cfg(test)]
pub(crate) mod testing {
    use super::Plan;
    use crate::config::Config;

    /// The configuration and plan of `meshcap render ARGS` with an empty environment.
    pub fn config_and_plan(args: &[&str]) -> (Config, Plan) {
        use clap::Parser;
        let argv = ["meshcap", "render"].iter().chain(args).copied();
        let cli = crate::cli::Cli::try_parse_from(argv).expect("flags parse");
        let Some(crate::cli::Command::Render(r)) = cli.command else {
            panic!("not a render command")
        };
        super::for_render(&r, &crate::sys::host::Env::default()).expect("a valid configuration")
    }

    /// Configurations with every kind of list, insert and chain.
    pub const KNOBS: [&[&str]; 9] = [
        &[],
        &["-b", "*", "-d", "15090,15021,15020,8000:8100,22"],
        &["-b", "80,443,8080,9000:9010", "-m", "TPROXY"],
        &["-o", "22,53,1000:2000,2001:2002", "-q", "443,8443,1:3"],
        &[
            "-x",
            "10.0.0.0/8,10.1.0.0/16,192.168.0.0/16,2001:db8::/32,2001:db8:1::/48",
            "-i",
            "*",
        ],
        &["-i", "10.0.0.0/8,192.168.1.0/24,2001:db8::/32", "-k", "eth1,eth2"],
        &["-i", "*", "-k", "eth1", "-c", "eth9,veth+"],
        &["--redirect-dns", "-u", "1,2", "-g", "3", "-o", "53"],
        &[
            "--redirect-dns",
            "--capture-all-dns",
            "-m",
            "TPROXY",
            "-b",
            "*",
            "-d",
            "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17",
        ],
    ];

    /// The plan for `meshcap render FLAGS` (no --compact: the tests compact it themselves).
    pub fn plan_of(flags: &[&str], ipv6: bool) -> Plan {
        use crate::cli::{Cli, Command};
        use crate::config::{HostFiles, Ipv6Setting};
        use clap::Parser;
        let argv = ["meshcap", "render"].iter().chain(flags).copied();
        let Some(Command::Render(args)) = Cli::try_parse_from(argv).expect("flags parse").command else {
            panic!("not a render command");
        };
        let files = HostFiles {
            passwd: "/nonexistent".into(),
            resolv_conf: "/dev/null".into(),
        };
        let mut cfg = Config::from_flags(
            &args.capture,
            &crate::sys::host::Env::default(),
            &files,
            Ipv6Setting::Explicit(ipv6),
        )
        .expect("config");
        cfg.dns.servers_v4 = vec!["10.0.0.53".parse().unwrap(), "10.0.0.54".parse().unwrap()];
        cfg.dns.servers_v6 = vec!["2001:db8::53".parse().unwrap()];
        super::build(&cfg, ipv6)
    }

    /// The plan of `meshcap render ARGS` with an empty environment.
    pub fn plan(args: &[&str]) -> Plan {
        config_and_plan(args).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::config::{HostFiles, Ipv6Setting};
    use crate::sys::host::Env;
    use clap::Parser;

    #[test]
    fn moved_rulesets_equal_the_family_views() {
        for flags in [
            &["-b", "*", "-i", "10.0.0.0/8,2001:db8::/32", "-k", "eth1"][..],
            &["-m", "TPROXY", "-b", "80", "-x", "10.0.0.0/8"],
            &["--redirect-dns", "--capture-all-dns", "--drop-invalid"],
        ] {
            for ipv6 in [false, true] {
                let argv = ["meshcap", "render"].iter().chain(flags).copied();
                let Some(Command::Render(args)) = Cli::try_parse_from(argv).unwrap().command else {
                    panic!()
                };
                let files = HostFiles {
                    passwd: "/nonexistent".into(),
                    resolv_conf: "/dev/null".into(),
                };
                let cfg =
                    Config::from_flags(&args.capture, &Env::default(), &files, Ipv6Setting::Explicit(ipv6)).unwrap();
                let plan = build(&cfg, ipv6);
                let views: Vec<Ruleset> = plan.families().into_iter().map(|f| plan.ruleset(f)).collect();
                plan.validate(Backend::Iptables).unwrap();
                assert_eq!(plan.into_rulesets(), views, "{flags:?} ipv6={ipv6}");
            }
        }
    }
}
