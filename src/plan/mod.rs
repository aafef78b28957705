//! Istio's capture policy as a pure function: `Config` + IPv6 enablement → [`Plan`].
//!
//! `build` walks Istio 1.29's ordered algorithm (`docs/istio-compat.md §3.2`, steps 1–19) once
//! and records every rule as a `ScopedOp`: the operation plus the families it belongs to and
//! the `Step` that wrote it. Family-specific values (loopback prefix, `127.0.0.6`/`::6`, CIDRs,
//! DNS servers) are computed per family right here; no placeholder is substituted later.
//! [`Plan::ruleset`] projects the sequence onto one family (the iptables view); the nft renderer
//! reads the whole sequence, where a rule scoped to both families is written once.
//!
//! The policy, one file per concern, each with a diagram of the chains it writes:
//! `interfaces.rs` (steps 1–2), `inbound.rs` (3, 4, 6, 7), `tproxy.rs` (the TPROXY parts of 7,
//! and 19), `outbound.rs` (5, 8–13, 15–18), `dns.rs` (14). `oplog.rs` is the builder they record
//! with (`log.at(step, NAT_ISTIO_OUTPUT).both(matches, target)`), `matches.rs` the match
//! shorthands, `step.rs` the `Step` enum. `compact` is a later pass over a built plan
//! (`--compact`). `budget` counts the rules a configuration would plan without building them
//! and refuses it past `MESHCAP_MAX_RULES`; `build_for` (what every command plans with) checks
//! it first.

pub(crate) mod budget;
pub(crate) mod compact;
mod dns;
mod inbound;
mod interfaces;
mod matches;
mod oplog;
mod outbound;
mod step;
mod tproxy;

pub(crate) use step::Step;

use crate::config::{Config, InterceptionMode};
use crate::model::RulesetView;
use crate::model::{Backend, Invalid, Op, Ruleset, Table, TableName};
use crate::values::{Cidr, Family, Mark, PortSpec, RouteTable};
use oplog::OpLog;

/// The families an operation is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    Both,
    Only(Family),
}

impl Scope {
    pub(crate) fn includes(self, family: Family) -> bool {
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
pub(crate) struct ScopedOp {
    pub(crate) scope: Scope,
    pub(crate) table: TableName,
    pub(crate) op: Op,
    /// The bullet of the algorithm that wrote the operation.
    pub(crate) step: Step,
}

/// TPROXY policy routing: `fwmark <mark> lookup <table>` and `local default dev lo table <table>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TproxyRoutes {
    pub(crate) mark: Mark,
    pub(crate) table: RouteTable,
    pub(crate) families: Vec<Family>,
}

/// The IPv6 inbound passthrough source the proxy binds (`::6`), put on `lo` with IPv6.
pub(crate) const PASSTHROUGH_V6: std::net::IpAddr =
    std::net::IpAddr::V6(std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6));

/// Routing state the capture needs besides rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Routes {
    /// `::6/128` on `lo` (the IPv6 inbound passthrough source), when IPv6 is on.
    pub(crate) v6_passthrough_address: bool,
    pub(crate) tproxy: Option<TproxyRoutes>,
}

/// Everything meshcap will program, for every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ipv6: bool,
    /// All operations in Istio's generation order.
    pub(crate) ops: Vec<ScopedOp>,
    pub(crate) routes: Routes,
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

/// The plan the configuration asks for: refused past [`Config::max_rules`]
/// ([`budget::check`], before any rule is built), then [`build`], then, with `--compact`,
/// [`compact::plan`] for the configuration's backend.
pub(crate) fn build_for(cfg: &Config, ipv6: bool) -> crate::error::Result<Plan> {
    budget::check(cfg, ipv6)?;
    let plan = build(cfg, ipv6);
    Ok(if cfg.compact {
        compact::plan(plan, cfg.backend())
    } else {
        plan
    })
}

impl Plan {
    /// Checks every family's view for `backend` (`Ruleset::validate_for`).
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
    pub(crate) fn into_rulesets(self) -> Vec<Ruleset> {
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

/// What every step of the policy reads: the configuration and the values derived from it once.
struct Policy<'a> {
    cfg: &'a Config,
    /// The resolved IPv6 enablement.
    ipv6: bool,
    /// TPROXY interception mode (`-m TPROXY`).
    tproxy: bool,
    /// DNS capture is effective ([`crate::config::Dns::effective`]).
    dns: bool,
    /// The tunnel port, never captured.
    tunnel: PortSpec,
}

impl Policy<'_> {
    fn new(cfg: &Config, ipv6: bool) -> Policy<'_> {
        Policy {
            cfg,
            ipv6,
            tproxy: cfg.mode == InterceptionMode::Tproxy,
            dns: cfg.dns.effective(),
            tunnel: PortSpec::Single(cfg.inbound_tunnel_port),
        }
    }

    /// The family's loopback prefix (`LB`): `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`, or `::1/128`.
    fn loopback(&self, family: Family) -> Cidr {
        match family {
            Family::V4 => self.cfg.loopback_v4,
            Family::V6 => Family::v6_loopback(),
        }
    }
}

/// Builds the plan. `ipv6` is the resolved IPv6 enablement.
///
/// The steps of `docs/istio-compat.md §3.2`, in Istio's order (the order of the operations is
/// the order of the restore payload and of the nft transaction, so it never changes).
pub(crate) fn build(cfg: &Config, ipv6: bool) -> Plan {
    let p = Policy::new(cfg, ipv6);
    // Sized exactly: the count is what the steps below record (callers have checked it against
    // the limit; the cap only keeps an unchecked caller from reserving absurd memory up front).
    let capacity = usize::try_from(budget::count(cfg, ipv6).ops()).map_or(1 << 20, |n| n.min(1 << 20));
    let mut ops = OpLog::new(ipv6, capacity);
    let log = &mut ops;
    interfaces::excluded(log, &p); // 1
    interfaces::virtual_return(log, &p); // 2
    inbound::drop_invalid(log, &p); // 3
    inbound::tunnel_port_return(log, &p); // 4
    outbound::redirect_chain(log, &p); // 5
    inbound::redirect_chain(log, &p); // 6
    inbound::capture(log, &p); // 7
    outbound::output_jump(log); // 8
    outbound::port_excludes(log, &p); // 9
    outbound::passthrough_return(log); // 10
    outbound::proxy_owners(log, &p); // 11, 12
    outbound::owner_groups(log, &p); // 13
    dns::capture(log, &p); // 14
    outbound::loopback_return(log, &p); // 15
    outbound::cidr_excludes(log, &p); // 16
    outbound::port_includes(log, &p); // 17
    outbound::cidr_includes(log, &p); // 18
    tproxy::keep_marks(log, &p); // 19
    let routes = Routes {
        v6_passthrough_address: ipv6,
        tproxy: tproxy::routes(&p),
    };
    Plan {
        ipv6,
        ops: ops.into_ops(),
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
pub(crate) fn unchecked(
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
    let plan = build_for(&config, ipv6)?;
    Ok((config, plan))
}

/// Plans for unit tests: `meshcap render ARGS` as the binary would build it (no host scans).
#[cfg(test)]
pub(crate) mod testing {
    use super::Plan;
    use crate::config::Config;

    /// The configuration and plan of `meshcap render ARGS` with an empty environment.
    pub(crate) fn config_and_plan(args: &[&str]) -> (Config, Plan) {
        use clap::Parser;
        let argv = ["meshcap", "render"].iter().chain(args).copied();
        let cli = crate::cli::Cli::try_parse_from(argv).expect("flags parse");
        let Some(crate::cli::Command::Render(r)) = cli.command else {
            panic!("not a render command")
        };
        super::for_render(&r, &crate::sys::host::Env::default()).expect("a valid configuration")
    }

    /// Configurations with every kind of list, insert and chain.
    pub(crate) const KNOBS: [&[&str]; 9] = [
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
    pub(crate) fn plan_of(flags: &[&str], ipv6: bool) -> Plan {
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
    pub(crate) fn plan(args: &[&str]) -> Plan {
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
