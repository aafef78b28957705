//! The plan, lowered to the nftables IR: one transaction for both families.
//!
//! A second lowering of the same [`Plan`] as `iptables::render`: it reads `plan.ops` (Istio's
//! generation order with each operation's families and provenance) and never re-decides policy.
//! The result is a typed [`Transaction`] ([`super::ir`]); `super::text` spells it as the text
//! `nft -f -` reads.
//!
//! # Istio's native nftables mode, reproduced (istio-compat §8.2–8.5)
//!
//! * Three `inet` tables `istio-proxy-nat|mangle|raw`, processed in that order; a table without
//!   rules is left out. Each is `add table`, `flush table`, then `add chain` for every chain of
//!   the table's fixed list (base chains first) that receives a rule, then the rules.
//! * One rule per operation: an operation the plan scoped to both families is written once; a
//!   family-specific one carries its `ip`/`ip6` address match (chosen from the CIDR's family).
//!   Jumps the plan scoped to one family (DNS) are written once too: without an address match
//!   an `inet` rule sees both families, and the chains they enter only match that family's
//!   addresses.
//! * `counter` in every rule, before the verdict or action; TPROXY is one rule
//!   `tproxy ip to :C meta mark set M counter accept`.
//! * Istio spells each rule by hand, so some details follow the plan's `Step` (see the
//!   private `spelling`, one exhaustive match): `meta l4proto tcp` beside a `tcp dport` in some rules but not in others,
//!   ports before addresses in raw DNS rules, and drop-invalid limited to TCP (a real difference
//!   from the iptables rules: other invalid packets are not dropped). Owners are `skuid`/`skgid`
//!   in nat and mangle and `meta skuid`/`meta skgid` in raw; a multiport match is an anonymous
//!   set `{ 53, T }`.
//! * Inserts: iptables' 1-based `-I CHAIN n` becomes nft's 0-based `index n-1`, and an insert
//!   degrades to a plain append when the chain has no rule yet in this transaction or the
//!   index is not below the number of rules written to it so far (§8.4). That is why the
//!   kernel order of the TPROXY `istio-inbound` rules differs from iptables'.
//!
//! # Fixed here (the rendered text stays Istio's for every configuration Istio can apply)
//!
//! * istio-compat §10.2 item 5: a jump whose target chain receives no rule is an error here, and the
//!   plan never writes one (the DNS jumps are scoped to the families with rules), so the
//!   transaction never fails in the kernel with "No such file or directory".
//! * istio-compat §10.2 item 6: [`transaction`] is what Istio pipes to `nft -f` (and what
//!   `meshcap render --native-nftables` prints). [`apply_transaction`] is what meshcap applies:
//!   the same, plus `add table` + `delete table` for each of meshcap's tables without rules in
//!   this configuration and `add chain` + `delete chain` for each chain of a kept table that
//!   gets no rule, so a re-run leaves exactly the rendered ruleset instead of stale tables
//!   (e.g. the old `istio-proxy-mangle` after turning drop-invalid off) and empty chains.
//!   [`cleanup_transaction`] removes all three tables (`--cleanup-only`), as Istio does.
//!   After a reconfiguration `nft list ruleset` may list a table's chains in another order than
//!   after a fresh apply (creation order); the chains and their rules are the same.

use std::collections::BTreeMap;

use super::ir::{Direction, NftChain, NftHook, NftOp, NftRule, NftTable, OwnerKind, Stmt, Transaction};
use crate::model::{ChainName, Hook, Invalid, Match, Position, Proto, Rule, TableName, Target};
use crate::plan::{Plan, Step};
use crate::values::{Cidr, Family};

/// The transaction Istio 1.29 builds for this plan (istio-compat §8.4), byte for byte.
pub fn transaction(plan: &Plan) -> Result<Transaction, Invalid> {
    let mut ops = Vec::new();
    for table in build_tables(plan)? {
        table.emit(&mut ops, false);
    }
    Ok(Transaction { ops })
}

/// The transaction meshcap applies: [`transaction`] plus the removal of meshcap's tables that
/// get no rules and of the chains of kept tables that get none, so the result is the rendered
/// ruleset whatever an earlier run left behind (istio-compat §10.2 item 6).
pub fn apply_transaction(plan: &Plan) -> Result<Transaction, Invalid> {
    let mut tables: Vec<Option<TableRules>> = build_tables(plan)?.into_iter().map(Some).collect();
    let mut ops = Vec::new();
    for name in NftTable::ALL {
        match tables
            .iter_mut()
            .find(|t| t.as_ref().is_some_and(|t| t.table == name))
            .and_then(Option::take)
        {
            Some(table) => table.emit(&mut ops, true),
            None => ops.extend([NftOp::AddTable(name), NftOp::DeleteTable(name)]),
        }
    }
    Ok(Transaction { ops })
}

/// Removes all of meshcap's tables; `add table` first makes the delete succeed when a table
/// does not exist (istio-compat §8.4, `--cleanup-only`). Other tables are not touched.
pub fn cleanup_transaction() -> Transaction {
    let ops = NftTable::ALL
        .into_iter()
        .flat_map(|t| [NftOp::AddTable(t), NftOp::DeleteTable(t)])
        .collect();
    Transaction { ops }
}

/// One table's part of the transaction.
struct TableRules {
    table: NftTable,
    /// The chains with at least one rule, in declaration order.
    chains: Vec<NftChain>,
    /// Rule operations in generation order.
    rules: Vec<NftOp>,
}

impl TableRules {
    fn emit(self, ops: &mut Vec<NftOp>, remove_stale: bool) {
        ops.push(NftOp::AddTable(self.table));
        ops.push(NftOp::FlushTable(self.table));
        if remove_stale {
            for &c in self.table.chains().iter().filter(|c| !self.chains.contains(c)) {
                ops.push(NftOp::AddChain(self.table, c));
                ops.push(NftOp::DeleteChain(self.table, c));
            }
        }
        ops.extend(self.chains.iter().map(|&c| NftOp::AddChain(self.table, c)));
        ops.extend(self.rules);
    }
}

/// Groups the plan's operations by table, converts each once, and places it (append or insert
/// with Istio's degradation rule).
fn build_tables(plan: &Plan) -> Result<Vec<TableRules>, Invalid> {
    if let Some(s) = plan.ops.iter().find(|s| NftTable::of(s.table).is_none()) {
        return Err(Invalid {
            table: s.table,
            chain: s.op.chain,
            why: "the filter table has no nft counterpart".into(),
        });
    }
    let mut out = Vec::new();
    for table in NftTable::ALL {
        // (plan chain, nft chain, position, rule) in generation order.
        let mut placed: Vec<(TableName, ChainName, NftChain, Position, NftRule)> = Vec::new();
        for s in plan.ops.iter().filter(|s| NftTable::of(s.table) == Some(table)) {
            let fail = |why: String| Invalid {
                table: s.table,
                chain: s.op.chain,
                why,
            };
            let chain = match s.op.chain {
                ChainName::Builtin(h @ (Hook::Prerouting | Hook::Output)) => NftChain::Base(h),
                ChainName::Builtin(h) => {
                    return Err(fail(format!(
                        "no {} base chain in nft mode",
                        NftHook::Netfilter(h).word()
                    )));
                }
                ChainName::Istio(c) => NftChain::Regular(c),
            };
            if !table.chains().contains(&chain) {
                return Err(fail(format!("{table} has no chain {chain}")));
            }
            let rule = nft_rule(s.step, table, &s.op.rule).map_err(fail)?;
            placed.push((s.table, s.op.chain, chain, s.op.position, rule));
        }
        if placed.is_empty() {
            continue;
        }
        let chains: Vec<NftChain> = table
            .chains()
            .iter()
            .copied()
            .filter(|c| placed.iter().any(|p| p.2 == *c))
            .collect();
        // Rules written to each chain so far in this transaction.
        let mut written: BTreeMap<NftChain, u32> = BTreeMap::new();
        let mut rules = Vec::new();
        for (plan_table, plan_chain, chain, position, rule) in placed {
            if let Some(Stmt::Jump(target)) = rule.stmts.last()
                && !chains.contains(target)
            {
                return Err(Invalid {
                    table: plan_table,
                    chain: plan_chain,
                    why: format!("jump to {target}, which gets no rules in {table}"),
                });
            }
            let k = written.entry(chain).or_insert(0);
            let op = match crate::model::nft_insert_index(position, *k) {
                Some(index) => NftOp::InsertRule {
                    table,
                    chain,
                    index,
                    rule,
                },
                None => NftOp::AddRule { table, chain, rule },
            };
            *k += 1;
            rules.push(op);
        }
        out.push(TableRules { table, chains, rules });
    }
    Ok(out)
}

/// How Istio's nft backend spells the rules of one step (it writes each by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spelling {
    /// `meta l4proto P` is written even though a `P dport|sport` match implies it.
    l4proto_beside_ports: bool,
    /// Port matches come before address matches (otherwise after).
    ports_before_addresses: bool,
    /// The rule is limited to TCP although the plan's rule has no protocol.
    tcp_only: bool,
}

/// Istio's per-step spelling choices (istio-compat §8.3). Only the flags relevant to a step's rules
/// matter; the others keep the common value.
fn spelling(step: Step, rule: &Rule) -> Spelling {
    let common = Spelling {
        l4proto_beside_ports: true,
        ports_before_addresses: false,
        tcp_only: false,
    };
    let implied = Spelling {
        l4proto_beside_ports: false,
        ..common
    };
    match step {
        // Rules with a port match and an explicit `meta l4proto tcp`.
        Step::TunnelPortReturn
        | Step::InboundPortExclude
        | Step::InboundEstablished
        | Step::InboundCapture
        | Step::ProxyLoopbackRedirect
        | Step::ProxyLoopbackReturn => common,
        // Rules with a port match and no `meta l4proto`.
        Step::OutboundPortExclude | Step::OutboundPortInclude | Step::DnsProxyZone => implied,
        // Only the capture-all TCP redirect says `meta l4proto tcp tcp dport 53`.
        Step::DnsRedirect => {
            let all_tcp = rule.protocol() == Some(Proto::Tcp) && address_family(rule).is_none();
            if all_tcp { common } else { implied }
        }
        Step::DnsZone => Spelling {
            ports_before_addresses: true,
            ..implied
        },
        // Istio's nft backend drops invalid TCP packets only (iptables: every protocol).
        Step::DropInvalid => Spelling {
            tcp_only: true,
            ..common
        },
        // Rules without port matches: `meta l4proto` is their only protocol match.
        Step::ExcludedInterface
        | Step::VirtualInterfaceReturn
        | Step::DropVerdict
        | Step::OutboundRedirect
        | Step::InboundRedirect
        | Step::DivertMark
        | Step::DivertAccept
        | Step::Tproxy
        | Step::InboundJump
        | Step::OutputJump
        | Step::PassthroughReturn
        | Step::ProxyReturn
        | Step::OwnerGroups
        | Step::DnsOutputJump
        | Step::DnsCaptureJump
        | Step::DnsInboundJump
        | Step::LoopbackReturn
        | Step::CidrExclude
        | Step::CidrInclude
        | Step::VirtualInterfaceRedirect
        | Step::TproxySaveMark
        | Step::TproxyMarkedReturn
        | Step::TproxyProxyMark
        | Step::TproxyRestoreMark
        | Step::TproxyInboundMarked
        | Step::TproxyInboundPassthrough
        | Step::TproxyInboundLoopback => common,
    }
}

/// The family of the rule's first address match, if it has one.
fn address_family(rule: &Rule) -> Option<Family> {
    rule.matches.iter().find_map(|m| match m {
        Match::Source { cidr, .. } | Match::Destination { cidr, .. } => Some(cidr.family()),
        Match::DestinationIn(cidrs) => cidrs.first().map(Cidr::family),
        Match::InIface(_)
        | Match::OutIface(_)
        | Match::Protocol(_)
        | Match::SourcePort { .. }
        | Match::DestinationPort { .. }
        | Match::DestinationPorts { .. }
        | Match::UidOwner { .. }
        | Match::GidOwner { .. }
        | Match::ConntrackState(_)
        | Match::Mark { .. }
        | Match::ConnMark(_) => None,
    })
}

/// Converts one rule of the plan: matches in nft's order (interfaces, protocol, conntrack
/// state, addresses, ports, owners, marks; ports first where the step says so), `counter`,
/// then the verdict or action.
fn nft_rule(step: Step, table: NftTable, rule: &Rule) -> Result<NftRule, String> {
    let spell = spelling(step, rule);
    let proto = rule.protocol();
    let has_ports = rule.matches.iter().any(|m| {
        matches!(
            m,
            Match::SourcePort { .. } | Match::DestinationPort { .. } | Match::DestinationPorts { .. }
        )
    });
    let port_proto = || proto.ok_or_else(|| "a port match without a protocol".to_string());
    let (addr_rank, port_rank) = if spell.ports_before_addresses { (4, 3) } else { (3, 4) };
    let mut ranked: Vec<(u8, Stmt)> = Vec::with_capacity(rule.matches.len() + 1);
    if spell.tcp_only && proto.is_none() {
        ranked.push((1, Stmt::L4Proto(Proto::Tcp)));
    }
    for m in &rule.matches {
        let item = match m {
            Match::InIface(name) => (
                0,
                Stmt::Iface {
                    input: true,
                    name: name.clone(),
                },
            ),
            Match::OutIface(name) => (
                0,
                Stmt::Iface {
                    input: false,
                    name: name.clone(),
                },
            ),
            Match::Protocol(p) => {
                if has_ports && !spell.l4proto_beside_ports {
                    continue;
                }
                (1, Stmt::L4Proto(*p))
            }
            Match::ConntrackState(states) => (2, Stmt::CtState(states.clone())),
            Match::Source { negated, cidr } => (
                addr_rank,
                Stmt::Addr {
                    direction: Direction::Source,
                    negated: *negated,
                    cidr: *cidr,
                },
            ),
            Match::Destination { negated, cidr } => (
                addr_rank,
                Stmt::Addr {
                    direction: Direction::Destination,
                    negated: *negated,
                    cidr: *cidr,
                },
            ),
            Match::DestinationIn(cidrs) => (
                addr_rank,
                Stmt::AddrSet {
                    direction: Direction::Destination,
                    cidrs: cidrs.clone(),
                },
            ),
            Match::SourcePort { negated, port } => (
                port_rank,
                Stmt::Port {
                    proto: port_proto()?,
                    direction: Direction::Source,
                    negated: *negated,
                    ports: vec![*port],
                },
            ),
            Match::DestinationPort { negated, port } => (
                port_rank,
                Stmt::Port {
                    proto: port_proto()?,
                    direction: Direction::Destination,
                    negated: *negated,
                    ports: vec![*port],
                },
            ),
            Match::DestinationPorts { negated, ports } => (
                port_rank,
                Stmt::Port {
                    proto: port_proto()?,
                    direction: Direction::Destination,
                    negated: *negated,
                    ports: ports.clone(),
                },
            ),
            Match::UidOwner { negated, owner } => (
                5,
                Stmt::Owner {
                    kind: OwnerKind::Uid,
                    negated: *negated,
                    owner: owner.clone(),
                    meta: table == NftTable::Raw,
                },
            ),
            Match::GidOwner { negated, owner } => (
                5,
                Stmt::Owner {
                    kind: OwnerKind::Gid,
                    negated: *negated,
                    owner: owner.clone(),
                    meta: table == NftTable::Raw,
                },
            ),
            Match::Mark { negated, mark } => (
                6,
                Stmt::Mark {
                    negated: *negated,
                    mark: *mark,
                },
            ),
            Match::ConnMark(mark) => (6, Stmt::CtMark(*mark)),
        };
        ranked.push(item);
    }
    ranked.sort_by_key(|(rank, _)| *rank);
    let mut stmts: Vec<Stmt> = Vec::with_capacity(ranked.len() + 4);
    stmts.extend(ranked.into_iter().map(|(_, s)| s));
    let action = match &rule.target {
        Target::Jump(c) => Stmt::Jump(NftChain::Regular(*c)),
        Target::Return => Stmt::Return,
        Target::Accept => Stmt::Accept,
        Target::Drop => Stmt::Drop,
        Target::Redirect { port } => Stmt::Redirect(*port),
        // One rule for iptables' TPROXY target: deliver, mark, count, accept.
        Target::Tproxy { mark, port } => {
            stmts.extend([
                Stmt::Tproxy {
                    family: address_family(rule),
                    port: *port,
                },
                Stmt::SetMark(*mark),
            ]);
            Stmt::Accept
        }
        Target::SetMark(mark) => Stmt::SetMark(*mark),
        Target::SaveMark => Stmt::SaveMark,
        Target::RestoreMark => Stmt::RestoreMark,
        Target::CtZone(zone) => Stmt::CtZone(*zone),
    };
    stmts.extend([Stmt::Counter, action]);
    Ok(NftRule { stmts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::config::{Config, HostFiles, Ipv6Setting};
    use crate::model::{IstioChain, Op};
    use crate::plan::{self, Scope, ScopedOp};
    use crate::sys::host::Env;
    use clap::Parser;

    /// The plan for `meshcap render FLAGS` with `env`, then `tweak` on the config (DNS servers).
    fn plan_with(flags: &[&str], env: &[(&str, &str)], ipv6: bool, tweak: impl FnOnce(&mut Config)) -> Plan {
        let argv = ["meshcap", "render"].iter().chain(flags).copied();
        let Some(Command::Render(args)) = Cli::try_parse_from(argv).expect("flags parse").command else {
            panic!("not a render command");
        };
        let files = HostFiles {
            passwd: "/nonexistent".into(),
            // No servers; the tests set them on the config.
            resolv_conf: "/dev/null".into(),
        };
        let env = Env::from_pairs(env.iter().copied());
        let mut cfg = Config::from_flags(&args.capture, &env, &files, Ipv6Setting::Explicit(ipv6)).expect("config");
        tweak(&mut cfg);
        let plan = plan::build(&cfg, ipv6);
        for family in plan.families() {
            plan.ruleset(family).validate().expect("the iptables view is valid");
        }
        plan
    }

    fn plan(flags: &[&str]) -> Plan {
        plan_with(flags, &[], false, |_| {})
    }

    fn text(plan: &Plan) -> String {
        transaction(plan).expect("transaction").to_string()
    }

    /// Every jump enters a chain the same table declares, and every insert index is below the
    /// number of rules its chain has at that point (what nft needs to accept the transaction).
    fn assert_loadable(tx: &Transaction) {
        let mut declared: Vec<(NftTable, NftChain)> = Vec::new();
        let mut counts: BTreeMap<(NftTable, NftChain), u32> = BTreeMap::new();
        for op in &tx.ops {
            match op {
                NftOp::AddChain(t, c) => declared.push((*t, *c)),
                NftOp::DeleteChain(t, c) => declared.retain(|d| d != &(*t, *c)),
                NftOp::AddTable(_) | NftOp::FlushTable(_) | NftOp::DeleteTable(_) => {}
                NftOp::AddRule { table, chain, rule } | NftOp::InsertRule { table, chain, rule, .. } => {
                    assert!(declared.contains(&(*table, *chain)), "rule in undeclared {chain}: {op}");
                    for s in &rule.stmts {
                        if let Stmt::Jump(target) = s {
                            assert!(declared.contains(&(*table, *target)), "jump to undeclared chain: {op}");
                        }
                    }
                    let n = counts.entry((*table, *chain)).or_insert(0);
                    if let NftOp::InsertRule { index, .. } = op {
                        assert!(index < n, "insert beyond the chain: {op}");
                    }
                    *n += 1;
                }
            }
        }
    }

    #[test]
    fn default_capture_is_the_spec_example() {
        // istio-compat §8.5: the transaction for all defaults, IPv4 only.
        let expected = "\
add table inet istio-proxy-nat
flush table inet istio-proxy-nat
add chain inet istio-proxy-nat output { type nat hook output priority -100 ; }
add chain inet istio-proxy-nat istio-inbound
add chain inet istio-proxy-nat istio-redirect
add chain inet istio-proxy-nat istio-in-redirect
add chain inet istio-proxy-nat istio-output
add rule inet istio-proxy-nat istio-inbound meta l4proto tcp tcp dport 15008 counter return
add rule inet istio-proxy-nat istio-redirect meta l4proto tcp counter redirect to :15001
add rule inet istio-proxy-nat istio-in-redirect meta l4proto tcp counter redirect to :15006
add rule inet istio-proxy-nat output counter jump istio-output
add rule inet istio-proxy-nat istio-output oifname lo ip saddr 127.0.0.6/32 counter return
add rule inet istio-proxy-nat istio-output oifname lo meta l4proto tcp ip daddr != 127.0.0.1/32 tcp dport != 15008 skuid 1337 counter jump istio-in-redirect
add rule inet istio-proxy-nat istio-output oifname lo skuid != 1337 counter return
add rule inet istio-proxy-nat istio-output skuid 1337 counter return
add rule inet istio-proxy-nat istio-output oifname lo meta l4proto tcp ip daddr != 127.0.0.1/32 tcp dport != 15008 skgid 1337 counter jump istio-in-redirect
add rule inet istio-proxy-nat istio-output oifname lo skgid != 1337 counter return
add rule inet istio-proxy-nat istio-output skgid 1337 counter return
add rule inet istio-proxy-nat istio-output ip daddr 127.0.0.1/32 counter return
";
        assert_eq!(text(&plan(&["-u", "1337", "-g", "1337"])), expected);
    }

    fn op(chain: ChainName, position: Position, target: Target) -> ScopedOp {
        ScopedOp {
            scope: Scope::Both,
            table: TableName::Nat,
            op: Op {
                chain,
                position,
                rule: Rule::new(vec![], target),
            },
            step: Step::ExcludedInterface,
        }
    }

    fn bare_plan(ops: Vec<ScopedOp>) -> Plan {
        Plan {
            ipv6: false,
            ops,
            routes: Default::default(),
        }
    }

    #[test]
    fn inserts_become_zero_based_or_degrade_to_appends() {
        let pre = ChainName::Builtin(Hook::Prerouting);
        let p = bare_plan(vec![
            op(pre, Position::Insert(1), Target::Return), // empty chain: append
            op(pre, Position::Insert(1), Target::Accept), // index 0 < 1
            op(pre, Position::Insert(3), Target::Drop),   // index 2, not below 2: append
            op(pre, Position::Insert(2), Target::Return), // index 1 < 3
            op(pre, Position::Append, Target::Accept),
        ]);
        let lines: Vec<String> = transaction(&p)
            .unwrap()
            .ops
            .iter()
            .skip(3)
            .map(|o| o.to_string())
            .collect();
        assert_eq!(
            lines,
            [
                "add rule inet istio-proxy-nat prerouting counter return",
                "insert rule inet istio-proxy-nat prerouting index 0 counter accept",
                "add rule inet istio-proxy-nat prerouting counter drop",
                "insert rule inet istio-proxy-nat prerouting index 1 counter return",
                "add rule inet istio-proxy-nat prerouting counter accept",
            ]
        );
    }

    #[test]
    fn a_jump_into_a_chain_without_rules_is_refused() {
        let p = bare_plan(vec![op(
            ChainName::Builtin(Hook::Output),
            Position::Append,
            Target::Jump(IstioChain::OutputDns),
        )]);
        let err = transaction(&p).unwrap_err();
        assert!(err.why.contains("jump to istio-output-dns"), "{err}");
        assert!(apply_transaction(&p).is_err());
    }

    #[test]
    fn ipv6_dns_servers_with_ipv6_off_jump_nowhere_missing() {
        // istio-compat §10.2 item 5: Istio writes `istio-output → istio-output-dns` and raw
        // `prerouting → istio-inbound` although both chains stay empty (the IPv6 server rules
        // are dropped), and nft rejects the whole transaction.
        let v6_only = |ipv6| {
            plan_with(&["--redirect-dns"], &[], ipv6, |c| {
                c.dns.servers_v6 = vec!["2001:db8::53".parse().unwrap()];
            })
        };
        let off = transaction(&v6_only(false)).unwrap();
        assert_loadable(&off);
        let off_text = off.to_string();
        assert!(!off_text.contains("istio-output-dns counter"), "{off_text}");
        assert!(
            !off_text.contains("jump istio-output-dns\nadd rule inet istio-proxy-nat"),
            "{off_text}"
        );
        assert!(!off_text.contains("ip6 "), "{off_text}");
        assert!(!off_text.contains("istio-proxy-nat istio-output-dns"), "{off_text}");
        assert!(!off_text.contains("istio-proxy-raw prerouting"), "{off_text}");
        // The proxy's own DNS is still zoned (raw output), and port 53 stays exempt.
        assert!(off_text.contains("add rule inet istio-proxy-raw output counter jump istio-output-dns\n"));
        assert!(off_text.contains("udp dport 53 meta skuid 1337 counter ct zone set 1\n"));
        assert!(off_text.contains("tcp dport != { 53, 15008 } skuid 1337"));

        // With IPv6 on, the same servers are captured, with one jump each.
        let on = transaction(&v6_only(true)).unwrap();
        assert_loadable(&on);
        let on_text = on.to_string();
        assert_eq!(
            on_text.matches("counter jump istio-output-dns\n").count(),
            2,
            "{on_text}"
        );
        assert!(on_text.contains(
            "add rule inet istio-proxy-nat istio-output-dns ip6 daddr 2001:db8::53/128 udp dport 53 counter redirect to :15053\n"
        ));
        assert!(on_text.contains("add rule inet istio-proxy-raw prerouting counter jump istio-inbound\n"));
        assert!(on_text.contains(
            "add rule inet istio-proxy-raw istio-inbound udp sport 53 ip6 saddr 2001:db8::53/128 counter ct zone set 1\n"
        ));
    }

    #[test]
    fn family_agnostic_dns_jumps_are_written_once() {
        let both = plan_with(&["--redirect-dns"], &[], true, |c| {
            c.dns.servers_v4 = vec!["10.0.0.53".parse().unwrap()];
            c.dns.servers_v6 = vec!["2001:db8::53".parse().unwrap()];
        });
        let t = text(&both);
        assert_eq!(
            t.matches("add rule inet istio-proxy-nat istio-output counter jump istio-output-dns\n")
                .count(),
            1
        );
        assert_eq!(
            t.matches("add rule inet istio-proxy-raw prerouting counter jump istio-inbound\n")
                .count(),
            1
        );
        // The raw jump precedes every server's zone rules, IPv4 ones first.
        let jump = t.find("raw prerouting counter jump").unwrap();
        let v4 = t.find("ip daddr 10.0.0.53/32 counter ct zone set 2").unwrap();
        let v6 = t.find("ip6 daddr 2001:db8::53/128 counter ct zone set 2").unwrap();
        assert!(jump < v4 && v4 < v6, "{t}");
    }

    #[test]
    fn drop_invalid_is_tcp_only_and_raw_owners_say_meta() {
        let t = text(&plan_with(
            &["--drop-invalid", "--redirect-dns", "--capture-all-dns"],
            &[],
            false,
            |_| {},
        ));
        assert!(t.contains(
            "add rule inet istio-proxy-mangle prerouting meta l4proto tcp ct state invalid counter jump istio-drop\n"
        ));
        assert!(t.contains("add rule inet istio-proxy-mangle istio-drop counter drop\n"));
        assert!(t.contains(
            "add rule inet istio-proxy-raw istio-output-dns udp sport 15053 meta skuid 1337 counter ct zone set 2\n"
        ));
        assert!(t.contains("add rule inet istio-proxy-nat istio-output oifname lo meta l4proto tcp tcp dport != 53 skuid != 1337 counter return\n"));
        // Capture-all: TCP with `meta l4proto`, UDP without (Istio's spelling).
        assert!(t.contains("istio-output-dns meta l4proto tcp tcp dport 53 counter redirect to :15053\n"));
        assert!(t.contains("istio-output-dns udp dport 53 counter redirect to :15053\n"));
        assert!(t.contains("add rule inet istio-proxy-raw istio-inbound udp sport 53 counter ct zone set 1\n"));
    }

    #[test]
    fn interfaces_ports_and_tproxy_spelling() {
        let p = plan_with(
            &[
                "-m",
                "TPROXY",
                "-b",
                "*",
                "-d",
                "8000:8100",
                "-c",
                "veth+,a@b,counter,ip,return+",
                "-o",
                "1000:2000",
            ],
            &[],
            true,
            |_| {},
        );
        let t = text(&p);
        assert!(
            t.contains("add rule inet istio-proxy-nat prerouting iifname veth* counter return\n"),
            "{t}"
        );
        assert!(
            t.contains("add rule inet istio-proxy-mangle output oifname \"a@b\" counter return\n"),
            "{t}"
        );
        // nft keywords are quoted (bare, `iifname counter` is a syntax error); a keyword with the
        // wildcard is one word to nft and stays bare.
        assert!(
            t.contains("add rule inet istio-proxy-nat prerouting iifname \"counter\" counter return\n"),
            "{t}"
        );
        assert!(t.contains("prerouting iifname \"ip\" counter return\n"), "{t}");
        assert!(t.contains("prerouting iifname return* counter return\n"), "{t}");
        assert!(
            t.contains("istio-inbound meta l4proto tcp tcp dport 8000-8100 counter return\n"),
            "{t}"
        );
        assert!(
            t.contains("add rule inet istio-proxy-nat istio-output udp dport 1000-2000 counter return\n"),
            "{t}"
        );
        assert!(t.contains(
            "istio-tproxy meta l4proto tcp ip6 daddr != ::1/128 tproxy ip6 to :15006 meta mark set 1337 counter accept\n"
        ));
        assert_loadable(&transaction(&p).unwrap());
    }

    #[test]
    fn apply_transaction_removes_what_this_configuration_does_not_use() {
        let p = plan(&[]);
        let render = transaction(&p).unwrap();
        let apply = apply_transaction(&p).unwrap();
        assert_loadable(&apply);
        let lines: Vec<String> = apply.ops.iter().map(|o| o.to_string()).collect();
        assert_eq!(
            lines[..6],
            [
                "add table inet istio-proxy-nat",
                "flush table inet istio-proxy-nat",
                "add chain inet istio-proxy-nat prerouting { type nat hook prerouting priority -100 ; }",
                "delete chain inet istio-proxy-nat prerouting",
                "add chain inet istio-proxy-nat istio-output-dns",
                "delete chain inet istio-proxy-nat istio-output-dns",
            ]
        );
        assert_eq!(
            lines[lines.len() - 4..],
            [
                "add table inet istio-proxy-mangle",
                "delete table inet istio-proxy-mangle",
                "add table inet istio-proxy-raw",
                "delete table inet istio-proxy-raw",
            ]
        );
        // Same chains and rules as the rendered transaction, in the same order.
        let kept = |tx: &Transaction| -> Vec<NftOp> {
            tx.ops
                .iter()
                .filter(|o| matches!(o, NftOp::AddRule { .. } | NftOp::InsertRule { .. }))
                .cloned()
                .collect()
        };
        assert_eq!(kept(&apply), kept(&render));
        assert_eq!(apply.tables_with_rules(), [NftTable::Nat]);

        // A configuration using every table deletes none.
        let full = plan_with(
            &[
                "-m",
                "TPROXY",
                "-b",
                "*",
                "--drop-invalid",
                "--redirect-dns",
                "--capture-all-dns",
            ],
            &[],
            true,
            |_| {},
        );
        let apply = apply_transaction(&full).unwrap().to_string();
        assert!(!apply.contains("delete table"), "{apply}");
        assert!(
            apply.contains("add chain inet istio-proxy-nat istio-output-dns\nadd rule"),
            "{apply}"
        );
    }

    #[test]
    fn cleanup_deletes_the_three_tables() {
        assert_eq!(
            cleanup_transaction().to_string(),
            "add table inet istio-proxy-nat\ndelete table inet istio-proxy-nat\n\
             add table inet istio-proxy-mangle\ndelete table inet istio-proxy-mangle\n\
             add table inet istio-proxy-raw\ndelete table inet istio-proxy-raw\n"
        );
    }

    #[test]
    fn every_knob_combination_yields_a_loadable_transaction() {
        let knobs: [&[&str]; 10] = [
            &[],
            &["-m", "TPROXY", "-b", "*", "-d", "15090,15021"],
            &["-m", "TPROXY", "-b", ""],
            &["-b", "80,443", "-k", "eth1,eth2", "-i", "10.0.0.0/8,2001:db8::/32"],
            &["-k", "eth1", "-i", "*", "-x", "10.1.0.0/16"],
            &["--redirect-dns", "--capture-all-dns", "-u", "1,2", "-g", "3"],
            &["-q", "80", "-o", "53,1000:2000", "-c", "eth9"],
            &["--drop-invalid", "-i", "127.1.2.3/32"],
            &["--redirect-dns", "-m", "TPROXY", "-b", "80", "-c", "eth0"],
            &["-i", ""],
        ];
        for flags in knobs {
            for ipv6 in [false, true] {
                for servers in [0, 1, 2, 3] {
                    let p = plan_with(flags, &[("ISTIO_OUTBOUND_OWNER_GROUPS", "10,20")], ipv6, |c| {
                        if servers & 1 != 0 {
                            c.dns.servers_v4 = vec!["10.0.0.53".parse().unwrap()];
                        }
                        if servers & 2 != 0 {
                            c.dns.servers_v6 = vec!["2001:db8::53".parse().unwrap()];
                        }
                    });
                    // A rule without addresses sees both families in an inet table: the plan
                    // may scope such a rule to one family only if it is a jump (into a chain
                    // whose rules carry that family's addresses).
                    for s in &p.ops {
                        if s.scope != Scope::Both && address_family(&s.op.rule).is_none() {
                            assert!(matches!(s.op.rule.target, Target::Jump(_)), "{flags:?}: {s:?}");
                        }
                    }
                    let tx = transaction(&p).unwrap_or_else(|e| panic!("{flags:?} ipv6={ipv6}: {e}"));
                    assert_loadable(&tx);
                    assert_loadable(&apply_transaction(&p).unwrap());
                    if !ipv6 {
                        assert!(!tx.to_string().contains("ip6 "), "{flags:?}: {tx}");
                    }
                }
            }
        }
    }
}

/// How `--compact` plans are spelled: anonymous sets of normalised values.
#[cfg(test)]
mod compact_tests {
    use super::{apply_transaction, transaction};
    use crate::model::Backend;
    use crate::plan::compact::plan;
    use crate::plan::testing::{KNOBS, plan_of};

    #[test]
    fn compact_plans_render_as_transactions() {
        for flags in KNOBS {
            for ipv6 in [false, true] {
                let nf = plan(plan_of(flags, ipv6), Backend::Nft);
                transaction(&nf).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
                apply_transaction(&nf).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
            }
        }
    }

    #[test]
    fn nft_sets_hold_normalised_values_per_family_and_provenance() {
        let p = plan(plan_of(KNOBS[4], true), Backend::Nft);
        let text = transaction(&p).unwrap().to_string();
        // Host bits cleared, covered prefixes dropped, one set per family.
        assert!(
            text.contains("istio-output ip daddr { 10.0.0.0/8, 192.168.0.0/16 } counter return\n"),
            "{text}"
        );
        assert!(
            text.contains("istio-output ip6 daddr 2001:db8::/32 counter return\n"),
            "{text}"
        );
        let p = plan(plan_of(KNOBS[3], false), Backend::Nft);
        let text = transaction(&p).unwrap().to_string();
        assert!(
            text.contains("istio-output tcp dport { 22, 53, 1000-2002 } counter return\n"),
            "{text}"
        );
        assert!(
            text.contains("istio-output udp dport { 22, 53, 1000-2002 } counter return\n"),
            "{text}"
        );
        assert!(
            text.contains("istio-output tcp dport { 1-3, 443, 8443 } counter jump istio-redirect\n"),
            "{text}"
        );
        // Virtual interfaces: the inserted PREROUTING rules, one set per interface.
        let p = plan(plan_of(KNOBS[5], true), Backend::Nft);
        let text = transaction(&p).unwrap().to_string();
        assert!(
            text.contains(
                "prerouting iifname eth1 ip daddr { 10.0.0.0/8, 192.168.1.0/24 } counter jump istio-redirect\n"
            ),
            "{text}"
        );
    }
}
