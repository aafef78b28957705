//! The size of a plan before it is built: [`count`] is arithmetic on the `Config` (no rule is
//! made), one function per step of [`super::build`] in the same order, each counting what its
//! step records; [`check`] refuses a configuration past `MESHCAP_MAX_RULES`
//! ([`Config::max_rules`], docs/security.md "Bounded work") with the flags that caused it.
//!
//! Why: the lists multiply (`-k` × `-i`, every `-u`/`-g` id in several steps), so a few kilobytes
//! of pod annotations can ask for millions of rules; refusing them costs microseconds, building
//! them gigabytes. The count is attributed to [`Term`]s (the flag or list a rule is there for)
//! so the error names the cause. Each step counts as the builder records: a rule for both
//! families once, a family-specific rule per family, an IPv6-only rule not at all without IPv6
//! ([`super::oplog`]). The unit tests hold `count == build` for random configurations, so the
//! two cannot drift apart.
//!
//! `--compact` runs on the built plan and only merges rules (for iptables it splits a rule for
//! both families into one per family, which leaves each family's count as it was), so the
//! count bounds the compacted plan too, and the work of building it.

use super::Policy;
use crate::config::{CidrSelection, Config, OwnerGroups, PortSelection};
use crate::error::{Error, Result};
use crate::model::Backend;
use crate::values::{Cidr, Family};

/// What a planned rule is there for: the flag (or list) that writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Term {
    /// Rules every configuration of its kind writes once.
    Fixed,
    ExcludeInterfaces,
    VirtualInterfaces,
    InboundPorts,
    InboundExcludePorts,
    OutboundExcludePorts,
    ProxyUids,
    ProxyGids,
    OwnerGroupsExclude,
    DnsServers,
    OutboundExcludeCidrs,
    OutboundIncludePorts,
    OutboundCidrs,
    VirtualTimesCidrs,
}

impl Term {
    const ALL: [Term; 14] = [
        Term::Fixed,
        Term::ExcludeInterfaces,
        Term::VirtualInterfaces,
        Term::InboundPorts,
        Term::InboundExcludePorts,
        Term::OutboundExcludePorts,
        Term::ProxyUids,
        Term::ProxyGids,
        Term::OwnerGroupsExclude,
        Term::DnsServers,
        Term::OutboundExcludeCidrs,
        Term::OutboundIncludePorts,
        Term::OutboundCidrs,
        Term::VirtualTimesCidrs,
    ];

    /// The flags as the error names them.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Term::Fixed => "the fixed rules",
            Term::ExcludeInterfaces => "-c",
            Term::VirtualInterfaces => "-k",
            Term::InboundPorts => "-b",
            Term::InboundExcludePorts => "-d",
            Term::OutboundExcludePorts => "-o",
            Term::ProxyUids => "-u",
            Term::ProxyGids => "-g",
            Term::OwnerGroupsExclude => "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",
            Term::DnsServers => "the DNS servers of resolv.conf",
            Term::OutboundExcludeCidrs => "-x",
            Term::OutboundIncludePorts => "-q",
            Term::OutboundCidrs => "-i",
            Term::VirtualTimesCidrs => "-k × -i",
        }
    }
}

/// Recorded operations of one term by the families they are scoped to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    both: u64,
    v4: u64,
    v6: u64,
}

impl Tally {
    /// Rules in one family's view (the iptables payload of that family).
    fn family(self, family: Family, ipv6: bool) -> u64 {
        match family {
            Family::V4 => self.both + self.v4,
            Family::V6 if ipv6 => self.both + self.v6,
            Family::V6 => 0,
        }
    }

    /// Rules `backend` loads: iptables both views; nftables one `inet` rule per operation.
    fn loaded(self, backend: Backend, ipv6: bool) -> u64 {
        match backend {
            Backend::Iptables => self.family(Family::V4, ipv6) + self.family(Family::V6, ipv6),
            Backend::Nft => self.both + self.v4 + self.v6,
        }
    }
}

/// The planned rules, per term and family, for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Count {
    ipv6: bool,
    backend: Backend,
    tallies: [Tally; Term::ALL.len()],
}

impl Count {
    /// Rules in one family's view.
    pub(crate) fn family(&self, family: Family) -> u64 {
        self.tallies.iter().map(|t| t.family(family, self.ipv6)).sum()
    }

    /// Rules the backend loads, both families.
    pub(crate) fn total(&self) -> u64 {
        self.tallies.iter().map(|t| t.loaded(self.backend, self.ipv6)).sum()
    }

    /// Rules of one term the backend loads.
    pub(crate) fn of(&self, term: Term) -> u64 {
        self.tallies[Self::slot(term)].loaded(self.backend, self.ipv6)
    }

    /// Operations the builder records (`Plan::ops` before `--compact`).
    pub(crate) fn ops(&self) -> u64 {
        self.tallies.iter().map(|t| t.both + t.v4 + t.v6).sum()
    }

    /// The term with the most rules (ties: the first, in build order), the fixed rules only
    /// when no list writes any.
    pub(crate) fn largest(&self) -> Term {
        Term::ALL
            .into_iter()
            .filter(|&t| t != Term::Fixed && self.of(t) > 0)
            .rev()
            .max_by_key(|&t| self.of(t))
            .unwrap_or(Term::Fixed)
    }

    fn slot(term: Term) -> usize {
        Term::ALL.iter().position(|&t| t == term).expect("a listed term")
    }

    /// `n` rules of `term` for both families.
    fn both(&mut self, term: Term, n: u64) {
        let t = &mut self.tallies[Self::slot(term)];
        t.both = t.both.saturating_add(n);
    }

    /// `n` rules of `term` for one family (none for IPv6 without IPv6, as the builder).
    fn only(&mut self, term: Term, family: Family, n: u64) {
        let t = &mut self.tallies[Self::slot(term)];
        match family {
            Family::V4 => t.v4 = t.v4.saturating_add(n),
            Family::V6 if self.ipv6 => t.v6 = t.v6.saturating_add(n),
            Family::V6 => {}
        }
    }

    /// `n` family-specific rules of `term`: the IPv4 one and the IPv6 one each time.
    fn per_family(&mut self, term: Term, n: u64) {
        self.only(term, Family::V4, n);
        self.only(term, Family::V6, n);
    }

    /// `n` rules of `term` for the families of a scope (`None`: not written).
    fn scoped(&mut self, term: Term, scope: Option<super::Scope>, n: u64) {
        match scope {
            Some(super::Scope::Both) => self.both(term, n),
            Some(super::Scope::Only(f)) => self.only(term, f, n),
            None => {}
        }
    }
}

/// A list's length as a count.
fn len<T>(list: &[T]) -> u64 {
    list.len() as u64
}

/// The rules [`super::build`] records for `cfg` (`ipv6`: the resolved IPv6 enablement),
/// counted for `cfg`'s backend without building any.
pub(crate) fn count(cfg: &Config, ipv6: bool) -> Count {
    let p = Policy::new(cfg, ipv6);
    let mut c = Count {
        ipv6,
        backend: cfg.backend(),
        tallies: Default::default(),
    };
    interfaces(&mut c, &p); // 1, 2
    inbound(&mut c, &p); // 3, 4, 6, 7
    outbound_head(&mut c, &p); // 5, 8–13
    dns(&mut c, &p); // 14
    outbound_tail(&mut c, &p); // 15–18
    keep_marks(&mut c, &p); // 19
    c
}

/// Refuses `cfg` when its plan would hold more rules than [`Config::max_rules`]; the count
/// otherwise.
pub(crate) fn check(cfg: &Config, ipv6: bool) -> Result<Count> {
    let c = count(cfg, ipv6);
    let total = c.total();
    if total <= cfg.max_rules {
        return Ok(c);
    }
    let cause = c.largest();
    Err(Error::TooManyRules {
        cause: cause.label(),
        cause_rules: c.of(cause),
        total,
        v4: c.family(Family::V4),
        v6: c.family(Family::V6),
        backend: match c.backend {
            Backend::Iptables => "iptables",
            Backend::Nft => "nftables",
        },
        limit: cfg.max_rules,
    })
}

/// Steps 1–2 ([`super::interfaces`]).
fn interfaces(c: &mut Count, p: &Policy) {
    let tables = if p.tproxy { 2 } else { 1 };
    c.both(Term::ExcludeInterfaces, tables * 2 * len(&p.cfg.exclude_interfaces));
    c.both(Term::VirtualInterfaces, len(&p.cfg.virtual_interfaces));
}

/// Steps 3, 4, 6, 7 ([`super::inbound`], [`super::tproxy::divert_and_tproxy_chains`]).
fn inbound(c: &mut Count, p: &Policy) {
    if p.cfg.drop_invalid {
        c.both(Term::Fixed, 2);
    }
    c.both(Term::Fixed, 1); // 4
    c.both(Term::Fixed, 1); // 5 (ISTIO_REDIRECT, written before 6)
    c.both(Term::Fixed, 1); // 6
    if p.cfg.inbound_ports.is_empty() {
        return;
    }
    if p.tproxy {
        c.both(Term::Fixed, 2);
        c.per_family(Term::Fixed, 1);
    }
    c.both(Term::Fixed, 1); // the jump
    let per_port = if p.tproxy { 2 } else { 1 };
    match &p.cfg.inbound_ports {
        PortSelection::All => {
            c.both(Term::InboundExcludePorts, len(&p.cfg.inbound_exclude_ports));
            c.both(Term::Fixed, per_port);
        }
        PortSelection::List(ports) => c.both(Term::InboundPorts, per_port * len(ports)),
    }
}

/// Steps 8–13 ([`super::outbound`]; step 5 is counted with the inbound chains).
fn outbound_head(c: &mut Count, p: &Policy) {
    c.both(Term::Fixed, 1); // 8
    c.both(Term::OutboundExcludePorts, 2 * len(&p.cfg.outbound_ports_exclude));
    c.per_family(Term::Fixed, 1); // 10
    let include_loopback = match &p.cfg.outbound_include {
        CidrSelection::All => false,
        CidrSelection::List(l) => l.iter().any(Cidr::is_loopback),
    };
    let both_per_owner = if include_loopback { 1 } else { 2 };
    for (term, owners) in [
        (Term::ProxyUids, &p.cfg.proxy_uids),
        (Term::ProxyGids, &p.cfg.proxy_gids),
    ] {
        c.per_family(term, len(owners));
        c.both(term, both_per_owner * len(owners));
    }
    match &p.cfg.owner_groups {
        OwnerGroups::AllExcept(excluded) => c.both(Term::OwnerGroupsExclude, len(excluded)),
        OwnerGroups::Only(_) => c.both(Term::Fixed, 1),
    }
}

/// Step 14 ([`super::dns`]).
fn dns(c: &mut Count, p: &Policy) {
    if !p.dns {
        return;
    }
    let dns = &p.cfg.dns;
    let all = dns.capture_all;
    let (has_v4, has_v6) = (all || !dns.servers_v4.is_empty(), all || !dns.servers_v6.is_empty());
    let with_servers = super::Scope::from_conditions(has_v4, has_v6 && p.ipv6);
    c.both(Term::Fixed, 1);
    c.scoped(Term::Fixed, with_servers, 1);
    // Two redirects (TCP, UDP) and two zones (query, reply) per server, or for all DNS.
    if all {
        c.both(Term::Fixed, 4);
    } else {
        c.only(Term::DnsServers, Family::V4, 4 * len(&dns.servers_v4));
        c.only(Term::DnsServers, Family::V6, 4 * len(&dns.servers_v6));
    }
    c.both(Term::ProxyUids, 2 * len(&p.cfg.proxy_uids));
    c.both(Term::ProxyGids, 2 * len(&p.cfg.proxy_gids));
    c.scoped(Term::Fixed, with_servers, 1);
}

/// Steps 15–18 ([`super::outbound`]).
fn outbound_tail(c: &mut Count, p: &Policy) {
    c.per_family(Term::Fixed, 1); // 15
    for family in Family::ALL {
        let n = p.cfg.outbound_exclude.iter().filter(|x| x.family() == family).count();
        c.only(Term::OutboundExcludeCidrs, family, n as u64);
    }
    c.both(Term::OutboundIncludePorts, len(&p.cfg.outbound_ports_include));
    let virtual_interfaces = len(&p.cfg.virtual_interfaces);
    match &p.cfg.outbound_include {
        CidrSelection::All => {
            c.both(Term::Fixed, 1);
            c.both(Term::VirtualInterfaces, virtual_interfaces);
        }
        CidrSelection::List(cidrs) => {
            for family in Family::ALL {
                let n = cidrs.iter().filter(|x| x.family() == family).count() as u64;
                c.only(Term::VirtualTimesCidrs, family, n.saturating_mul(virtual_interfaces));
                c.only(Term::OutboundCidrs, family, n);
            }
        }
    }
}

/// Step 19 ([`super::tproxy::keep_marks`]).
fn keep_marks(c: &mut Count, p: &Policy) {
    if !p.tproxy {
        return;
    }
    c.both(Term::Fixed, 3); // save, marked return, restore
    c.per_family(Term::ProxyUids, len(&p.cfg.proxy_uids));
    c.per_family(Term::ProxyGids, len(&p.cfg.proxy_gids));
    c.both(Term::Fixed, 2); // inbound marked, inbound loopback
    c.per_family(Term::Fixed, 1); // inbound passthrough
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::config::{HostFiles, Ipv6Setting};
    use crate::model::TableName;
    use crate::sys::host::Env;
    use clap::Parser;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// One random configuration: flags, environment, IPv6 and resolv.conf's servers.
    #[derive(Debug, Clone)]
    struct Case {
        flags: Vec<String>,
        env: Vec<(String, String)>,
        ipv6: bool,
        servers_v4: Vec<Ipv4Addr>,
        servers_v6: Vec<Ipv6Addr>,
    }

    fn config(case: &Case) -> Config {
        let argv = ["meshcap".to_string(), "render".into()]
            .into_iter()
            .chain(case.flags.clone());
        let Some(Command::Render(args)) = Cli::try_parse_from(argv).expect("flags parse").command else {
            panic!("not a render command")
        };
        let files = HostFiles {
            passwd: "/nonexistent".into(),
            resolv_conf: "/dev/null".into(),
        };
        let env = Env::from_pairs(case.env.iter().cloned());
        let mut cfg = Config::from_flags(&args.capture, &env, &files, Ipv6Setting::Explicit(case.ipv6))
            .unwrap_or_else(|e| panic!("{case:?}: {e}"));
        cfg.dns.servers_v4.clone_from(&case.servers_v4);
        cfg.dns.servers_v6.clone_from(&case.servers_v6);
        cfg
    }

    fn list(item: BoxedStrategy<String>, max: usize) -> BoxedStrategy<String> {
        proptest::collection::vec(item, 0..=max)
            .prop_map(|v| v.join(","))
            .boxed()
    }

    fn ids() -> BoxedStrategy<String> {
        (0u32..5000).prop_map(|n| n.to_string()).boxed()
    }

    fn ports() -> BoxedStrategy<String> {
        (1u16..=65535).prop_map(|n| n.to_string()).boxed()
    }

    fn ifaces() -> BoxedStrategy<String> {
        (0u32..50).prop_map(|n| format!("eth{n}")).boxed()
    }

    /// IPv4 and IPv6 prefixes, loopback ones among them (they change steps 11–12).
    fn cidrs() -> BoxedStrategy<String> {
        prop_oneof![
            (0u8..=255, 8u8..=32).prop_map(|(a, l)| format!("10.{a}.0.0/{l}")),
            (0u16..=0xffff).prop_map(|a| format!("2001:db8:{a:x}::/48")),
            Just("127.0.0.1/32".to_string()),
            Just("::1/128".to_string()),
        ]
        .boxed()
    }

    /// `*`, empty or a list.
    fn selection(item: BoxedStrategy<String>) -> BoxedStrategy<String> {
        prop_oneof![Just("*".to_string()), Just(String::new()), list(item, 6)].boxed()
    }

    prop_compose! {
        fn case()(
            lists in (
                list(ifaces(), 4), list(ifaces(), 4), selection(ports()), list(ports(), 4),
                list(ports(), 4), list(ports(), 4), selection(cidrs()), list(cidrs(), 5),
            ),
            owners in (list(ids(), 3), list(ids(), 3), 0u8..3, list(ids(), 3)),
            switches in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
            ipv6 in any::<bool>(),
            servers_v4 in proptest::collection::vec(any::<u32>().prop_map(Ipv4Addr::from), 0..3),
            servers_v6 in proptest::collection::vec(any::<u128>().prop_map(Ipv6Addr::from), 0..3),
        ) -> Case {
            let (c, k, b, d, o, q, i, x) = lists;
            let (u, g, groups, group_list) = owners;
            let (tproxy, redirect_dns, capture_all_dns, drop_invalid, nft, compact) = switches;
            let mut flags = Vec::new();
            for (flag, value) in [("-c", c), ("-k", k), ("-b", b), ("-d", d), ("-o", o), ("-q", q), ("-i", i), ("-x", x)] {
                flags.push(flag.to_string());
                flags.push(value);
            }
            // An empty -u/-g is Istio's default (1337); a list replaces it.
            for (flag, value) in [("-u", u), ("-g", g)] {
                if !value.is_empty() {
                    flags.push(flag.to_string());
                    flags.push(value);
                }
            }
            for (on, flag) in [
                (tproxy, "-m=TPROXY"),
                (redirect_dns, "--redirect-dns"),
                (capture_all_dns, "--capture-all-dns"),
                (drop_invalid, "--drop-invalid"),
                (nft, "--native-nftables"),
                (compact, "--compact"),
            ] {
                if on {
                    flags.push(flag.to_string());
                }
            }
            let env = match (groups, group_list.is_empty()) {
                (1, false) => vec![("ISTIO_OUTBOUND_OWNER_GROUPS".to_string(), group_list)],
                (2, _) => vec![("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE".to_string(), group_list)],
                _ => vec![],
            };
            Case { flags, env, ipv6, servers_v4, servers_v6 }
        }
    }

    /// Rules in one family's view of a plan.
    fn view(plan: &super::super::Plan, family: Family) -> u64 {
        let r = plan.ruleset(family);
        r.tables.iter().map(|t| t.ops.len() as u64).sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The count is the plan: per family, in operations, and as the backend loads it
        /// (iptables: both views; nftables: one `inet` rule per operation, `nft::lower`).
        #[test]
        fn the_count_is_the_built_plan(case in case()) {
            let cfg = config(&case);
            let c = count(&cfg, case.ipv6);
            let plan = super::super::build(&cfg, case.ipv6);
            prop_assert_eq!(c.ops(), plan.ops.len() as u64, "{:?}", case);
            prop_assert_eq!(c.family(Family::V4), view(&plan, Family::V4), "{:?}", case);
            prop_assert_eq!(c.family(Family::V6), view(&plan, Family::V6), "{:?}", case);
            let loaded = match cfg.backend() {
                Backend::Iptables => view(&plan, Family::V4) + view(&plan, Family::V6),
                Backend::Nft => plan.ops.len() as u64,
            };
            prop_assert_eq!(c.total(), loaded, "{:?}", case);
            let terms: u64 = Term::ALL.into_iter().map(|t| c.of(t)).sum();
            prop_assert_eq!(terms, c.total());
            // --compact only merges: every family holds at most the counted rules.
            let compacted = super::super::compact::plan(plan, cfg.backend());
            prop_assert!(view(&compacted, Family::V4) <= c.family(Family::V4), "{:?}", case);
            prop_assert!(view(&compacted, Family::V6) <= c.family(Family::V6), "{:?}", case);
            if cfg.backend() == Backend::Nft {
                prop_assert!(compacted.ops.len() as u64 <= c.total(), "{:?}", case);
            }
        }
    }

    fn case_of(flags: &[&str], ipv6: bool) -> Config {
        config(&Case {
            flags: flags.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            ipv6,
            servers_v4: vec![],
            servers_v6: vec![],
        })
    }

    fn names(prefix: &str, n: usize) -> String {
        (0..n).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>().join(",")
    }

    #[test]
    fn the_largest_product_is_named_with_the_numbers() {
        let cidrs = (0..300)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect::<Vec<_>>()
            .join(",");
        let mut cfg = case_of(&["-k", &names("k", 400), "-i", &cidrs], false);
        cfg.max_rules = 100_000;
        let e = check(&cfg, false).unwrap_err().to_string();
        assert!(e.starts_with("-k × -i would plan 120,000 rules (120,7"), "{e}");
        assert!(e.contains("for iptables: IPv4 120,7"), "{e}");
        assert!(
            e.contains("the limit is 100,000 (set MESHCAP_MAX_RULES to raise it)"),
            "{e}"
        );
        // At the limit it passes; one below, it is refused.
        let total = count(&cfg, false).total();
        cfg.max_rules = total;
        assert!(check(&cfg, false).is_ok());
        cfg.max_rules = total - 1;
        assert!(check(&cfg, false).is_err());
    }

    #[test]
    fn owners_count_in_every_step_they_write() {
        // -u in steps 11–12, 14 (DNS zones) and 19 (TPROXY marks), IPv6 on.
        let mut cfg = case_of(
            &[
                "-u",
                &names("", 2000),
                "-m",
                "TPROXY",
                "--redirect-dns",
                "--capture-all-dns",
            ],
            true,
        );
        cfg.max_rules = 10_000;
        let e = check(&cfg, true).unwrap_err().to_string();
        // Per UID and family: the loopback redirect and the mark (family-specific), two
        // returns and two zones (both families): 6, so 12 in the two iptables payloads.
        assert!(e.starts_with("-u would plan 24,000 rules (48,0"), "{e}");
        let nft = case_of(
            &[
                "-u",
                &names("", 2000),
                "-m",
                "TPROXY",
                "--redirect-dns",
                "--capture-all-dns",
                "--native-nftables",
            ],
            true,
        );
        // nftables writes a rule for both families once: 2 + 2 family-specific, 4 shared.
        assert_eq!(count(&nft, true).of(Term::ProxyUids), 16_000);
        assert_eq!(count(&nft, true).largest(), Term::ProxyUids);
    }

    #[test]
    fn every_table_is_counted_when_everything_is_on() {
        let cfg = case_of(
            &[
                "-m",
                "TPROXY",
                "-b",
                "*",
                "-c",
                "eth9",
                "--drop-invalid",
                "--redirect-dns",
                "--capture-all-dns",
            ],
            true,
        );
        let plan = super::super::build(&cfg, true);
        for table in [TableName::Nat, TableName::Mangle, TableName::Raw] {
            assert!(plan.ops.iter().any(|s| s.table == table), "{table:?}");
        }
        assert_eq!(count(&cfg, true).ops(), plan.ops.len() as u64);
    }
}
