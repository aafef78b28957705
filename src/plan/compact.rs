//! `--compact`: the same verdicts with fewer rules, as a pass over the typed plan.
//!
//! [`plan`] takes a plan and the backend it will be rendered for and returns a plan whose
//! rules give every packet the same verdict (and the same marks, zones and redirects) with
//! fewer rules. It is not Istio's rule text, by design: the output of `render --compact` is not
//! byte-compatible with istio-iptables.
//!
//! # What is merged
//!
//! Each chain is taken in the order the kernel will hold it (inserts resolved: with
//! [`Table::resolved_order`]'s rule for iptables, with Istio's insert degradation of
//! [`crate::model::nft_insert_index`] for nft) and cut into *runs*: maximal sequences of adjacent
//! rules with the same target, where the target is a final verdict (`RETURN`, `ACCEPT`, `DROP`,
//! `REDIRECT`, `TPROXY`) or a jump into a chain without side effects (every rule it reaches ends
//! in such a target, so entering it twice is the same as entering it once). Inside a run a
//! packet's fate is "the target if any rule matches, else on to the rule after the run", so the
//! rules of a run may be regrouped freely: rules equal except for one destination-port match
//! (or, for nft, one destination-address match) become one rule with the union of the values.
//! Rules with other targets (marks, conntrack zones, jumps into chains that set marks) are
//! kept as they are, in place. Only non-negated matches are merged (a union of negations is
//! not the negation of the union).
//!
//! * iptables: ports become `-m multiport --dports` with at most 15 slots a rule (a range
//!   `a:b` takes two, iptables' own limit); addresses are never merged (iptables has no address
//!   sets: `-d a,b` is one kernel rule per prefix).
//! * nft: ports become one anonymous set `tcp dport { … }` and destination prefixes one set
//!   `ip daddr { … }` ([`Match::DestinationIn`]). Sets are normalised (host bits cleared,
//!   prefixes inside another one dropped, overlapping or adjacent port ranges joined), which
//!   nft needs (it refuses overlapping intervals) and which changes no membership. Rules keep
//!   their provenance ([`Step`]) and families ([`Scope`]), and only rules with the same ones are
//!   merged, so the nft renderer spells them as before.
//!
//! The result has only appends, chain by chain in kernel order. For iptables every operation
//! is scoped to one family (each family's chains are resolved on their own); for nft the scopes
//! are kept. [`Ruleset::validate_for`] enforces what each backend can load: an iptables
//! compaction never writes address sets or more than 15 multiport slots.

use std::collections::HashMap;

use crate::model::nft_insert_index;
use crate::model::{
    Backend, ChainName, IstioChain, MULTIPORT_SLOTS, Match, Op, Position, Rule, TableName, Target, final_order,
    multiport_slots,
};
use crate::plan::{Plan, Scope, ScopedOp, Step};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::values::{Cidr, Family, Port, PortSpec};

#[cfg(doc)]
use crate::model::{Ruleset, Table};

/// The compacted plan for `backend` (see the module documentation).
pub(crate) fn plan(plan: Plan, backend: Backend) -> Plan {
    let Plan { ipv6, ops, routes } = plan;
    let families = if ipv6 {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    };
    let mut out = Output::default();
    match backend {
        Backend::Iptables => {
            for &family in &families {
                for table in TableName::ALL {
                    let members: Vec<usize> = (0..ops.len())
                        .filter(|&i| ops[i].table == table && ops[i].scope.includes(family))
                        .collect();
                    let at = iptables_insert_indices(&ops, &members);
                    compact_table(&ops, &members, &at, backend, Some(Scope::Only(family)), &mut out);
                }
            }
        }
        Backend::Nft => {
            for table in TableName::ALL {
                let members: Vec<usize> = (0..ops.len())
                    .filter(|&i| ops[i].table == table && families.iter().any(|&f| ops[i].scope.includes(f)))
                    .collect();
                let at = nft_insert_indices(&ops, &members);
                compact_table(&ops, &members, &at, backend, None, &mut out);
            }
        }
    }
    Plan {
        ipv6,
        ops: out.finish(ops),
        routes,
    }
}

/// The compacted operations as they are decided: planned operations kept (by index, moved
/// out of the plan at the end, cloned only when both families' iptables views keep one) and
/// merged ones.
#[derive(Default)]
struct Output {
    items: Vec<(Item, Option<Scope>)>,
}

enum Item {
    Keep(usize),
    New(ScopedOp),
}

impl Output {
    fn keep(&mut self, i: usize, scope: Option<Scope>) {
        self.items.push((Item::Keep(i), scope));
    }

    fn finish(self, ops: Vec<ScopedOp>) -> Vec<ScopedOp> {
        let mut uses = vec![0u32; ops.len()];
        for (item, _) in &self.items {
            if let Item::Keep(i) = item {
                uses[*i] += 1;
            }
        }
        let mut slots: Vec<Option<ScopedOp>> = ops.into_iter().map(Some).collect();
        self.items
            .into_iter()
            .map(|(item, scope)| {
                let s = match item {
                    Item::New(s) => return s,
                    Item::Keep(i) => {
                        uses[i] -= 1;
                        if uses[i] == 0 {
                            slots[i].take()
                        } else {
                            slots[i].clone()
                        }
                        .expect("each operation is moved out once, last")
                    }
                };
                ScopedOp {
                    scope: scope.unwrap_or(s.scope),
                    op: Op {
                        position: Position::Append,
                        ..s.op
                    },
                    ..s
                }
            })
            .collect()
    }
}

/// Per member operation, its 0-based insert index into its chain at the time it runs
/// (iptables: `-I CHAIN n` is index n-1, clamped to the chain's length; an append is the
/// length).
fn iptables_insert_indices(ops: &[ScopedOp], members: &[usize]) -> Vec<usize> {
    let mut len = [0usize; ChainName::COUNT];
    members
        .iter()
        .map(|&i| {
            let l = &mut len[ops[i].op.chain.index()];
            let at = match ops[i].op.position {
                Position::Append => *l,
                Position::Insert(n) => (n as usize).saturating_sub(1).min(*l),
            };
            *l += 1;
            at
        })
        .collect()
}

/// The same for nft, where Istio degrades an insert into an empty chain, or at an index not
/// below the chain's length, to an append.
fn nft_insert_indices(ops: &[ScopedOp], members: &[usize]) -> Vec<usize> {
    let mut len = [0u32; ChainName::COUNT];
    members
        .iter()
        .map(|&i| {
            let l = &mut len[ops[i].op.chain.index()];
            let at = nft_insert_index(ops[i].op.position, *l).unwrap_or(*l);
            *l += 1;
            at as usize
        })
        .collect()
}

/// Compacts one table's operations (`members`: indices into `ops` in generation order, with
/// their insert indices `at`) chain by chain. `scope` replaces each operation's scope for
/// iptables (one family at a time); for nft (`None`) the operations keep theirs.
fn compact_table(
    ops: &[ScopedOp],
    members: &[usize],
    at: &[usize],
    backend: Backend,
    scope: Option<Scope>,
    out: &mut Output,
) {
    // Each chain's members and insert indices, chains in order of first use.
    let mut chains: Vec<(ChainName, Vec<usize>, Vec<usize>)> = Vec::new();
    for (k, &i) in members.iter().enumerate() {
        let chain = ops[i].op.chain;
        let c = match chains.iter().position(|c| c.0 == chain) {
            Some(c) => c,
            None => {
                chains.push((chain, Vec::new(), Vec::new()));
                chains.len() - 1
            }
        };
        chains[c].1.push(i);
        chains[c].2.push(at[k]);
    }
    let pure = pure_chains(ops, members);
    for (_, idxs, chain_at) in chains {
        let ordered: Vec<usize> = final_order(&chain_at).into_iter().map(|k| idxs[k]).collect();
        compact_chain(ops, &ordered, backend, &pure, scope, out);
    }
}

/// Chains whose walk has no side effect: every rule in them ends in a final verdict or a jump
/// into another such chain. Entering one twice with the same packet ends like entering it once.
fn pure_chains(ops: &[ScopedOp], members: &[usize]) -> [bool; IstioChain::ALL.len()] {
    let mut pure = [true; IstioChain::ALL.len()];
    loop {
        let mut changed = false;
        for &i in members {
            if let ChainName::Istio(c) = ops[i].op.chain
                && pure[c as usize]
                && !final_or_pure_jump(&ops[i].op.rule.target, &pure)
            {
                pure[c as usize] = false;
                changed = true;
            }
        }
        if !changed {
            return pure;
        }
    }
}

/// Whether rules with this target may be regrouped inside a run (see the module docs).
fn final_or_pure_jump(target: &Target, pure: &[bool; IstioChain::ALL.len()]) -> bool {
    match target {
        Target::Return | Target::Accept | Target::Drop | Target::Redirect { .. } | Target::Tproxy { .. } => true,
        Target::Jump(c) => pure[*c as usize],
        Target::SetMark(_) | Target::SaveMark | Target::RestoreMark | Target::CtZone(_) => false,
    }
}

/// Compacts one chain given in kernel order (indices into `ops`).
fn compact_chain(
    ops: &[ScopedOp],
    ordered: &[usize],
    backend: Backend,
    pure: &[bool; IstioChain::ALL.len()],
    scope: Option<Scope>,
    out: &mut Output,
) {
    let mut i = 0;
    while i < ordered.len() {
        let target = &ops[ordered[i]].op.rule.target;
        let mut j = i + 1;
        if final_or_pure_jump(target, pure) {
            while j < ordered.len() && ops[ordered[j]].op.rule.target == *target {
                j += 1;
            }
            regroup(ops, &ordered[i..j], backend, scope, out);
        } else {
            out.keep(ordered[i], scope);
        }
        i = j;
    }
}

/// The one match of `rule` that compaction may merge for `backend`: its index and whether it
/// is a port match (else an address match). For nft a single non-negated destination-address
/// match if there is one, else (both backends) a single non-negated destination-port match.
fn mergeable(rule: &Rule, backend: Backend) -> Option<(usize, bool)> {
    let find = |ports: bool| -> Option<(usize, bool)> {
        let mut found = None;
        for (i, m) in rule.matches.iter().enumerate() {
            let hit = match m {
                Match::DestinationPort { negated: false, .. } | Match::DestinationPorts { negated: false, .. } => ports,
                Match::Destination { negated: false, .. } | Match::DestinationIn(_) => !ports,
                _ => false,
            };
            if hit {
                if found.is_some() {
                    return None;
                }
                found = Some((i, ports));
            }
        }
        found
    };
    match backend {
        Backend::Nft => find(false).or_else(|| find(true)),
        Backend::Iptables => find(true),
    }
}

/// What must be equal for two rules of a run to merge: everything but the mergeable match
/// (and, for nft, provenance and families, which its spelling follows).
#[derive(PartialEq, Eq, Hash)]
struct Key<'a> {
    before: &'a [Match],
    after: &'a [Match],
    ports: bool,
    scope: Option<Scope>,
    step: Option<Step>,
}

/// Regroups a run of rules with the same regroupable target (see the module docs).
fn regroup(ops: &[ScopedOp], run: &[usize], backend: Backend, scope: Option<Scope>, out: &mut Output) {
    // Groups in order of first appearance: first and last member (positions in `run`), how
    // many, and the mergeable slot if any. Members are linked through `next` (no allocation
    // per rule).
    struct Group {
        first: usize,
        last: usize,
        count: usize,
        slot: Option<(usize, bool)>,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut next: Vec<usize> = vec![usize::MAX; run.len()];
    let mut by_key: HashMap<Key, usize> = HashMap::new();
    for (k, &i) in run.iter().enumerate() {
        let rule = &ops[i].op.rule;
        let single = Group {
            first: k,
            last: k,
            count: 1,
            slot: None,
        };
        let Some((slot, ports)) = mergeable(rule, backend) else {
            groups.push(single);
            continue;
        };
        let nft = backend == Backend::Nft;
        let key = Key {
            before: &rule.matches[..slot],
            after: &rule.matches[slot + 1..],
            ports,
            scope: nft.then_some(ops[i].scope),
            step: nft.then_some(ops[i].step),
        };
        match by_key.get(&key) {
            Some(&g) => {
                let group = &mut groups[g];
                next[group.last] = k;
                group.last = k;
                group.count += 1;
            }
            None => {
                by_key.insert(key, groups.len());
                groups.push(Group {
                    slot: Some((slot, ports)),
                    ..single
                });
            }
        }
    }
    for g in groups {
        match g.slot {
            Some((slot, ports)) if g.count > 1 => {
                let members = std::iter::successors(Some(g.first), |&k| Some(next[k]).filter(|&n| n != usize::MAX))
                    .map(|k| run[k]);
                emit_merged(ops, members, slot, ports, backend, scope, out);
            }
            // A rule that merged with nothing stays exactly as planned.
            _ => out.keep(run[g.first], scope),
        }
    }
}

/// Writes the rule(s) for a group of at least two rules: the first member's rule with the
/// union of the group's values at `slot`.
fn emit_merged(
    ops: &[ScopedOp],
    mut members: impl Iterator<Item = usize> + Clone,
    slot: usize,
    ports: bool,
    backend: Backend,
    scope: Option<Scope>,
    out: &mut Output,
) {
    let first = &ops[members.clone().next().expect("a group has members")];
    let with = |m: Match| {
        let mut rule = first.op.rule.clone();
        rule.matches[slot] = m;
        ScopedOp {
            scope: scope.unwrap_or(first.scope),
            table: first.table,
            op: Op {
                chain: first.op.chain,
                position: Position::Append,
                rule,
            },
            step: first.step,
        }
    };
    let values = members.by_ref().map(|i| &ops[i].op.rule.matches[slot]);
    if ports {
        let mut all = Vec::new();
        for m in values {
            match m {
                Match::DestinationPort { port, .. } => all.push(*port),
                Match::DestinationPorts { ports, .. } => all.extend(ports.iter().copied()),
                _ => unreachable!("a port slot holds a port match"),
            }
        }
        let all = normalise_ports(all);
        let chunks: Vec<Vec<PortSpec>> = match backend {
            Backend::Nft => vec![all],
            Backend::Iptables => multiport_chunks(all),
        };
        for chunk in chunks {
            let m = match chunk.as_slice() {
                [one] => Match::DestinationPort {
                    negated: false,
                    port: *one,
                },
                _ => Match::DestinationPorts {
                    negated: false,
                    ports: chunk,
                },
            };
            out.items.push((Item::New(with(m)), None));
        }
    } else {
        let mut all = Vec::new();
        for m in values {
            match m {
                Match::Destination { cidr, .. } => all.push(*cidr),
                Match::DestinationIn(cidrs) => all.extend(cidrs.iter().copied()),
                _ => unreachable!("an address slot holds an address match"),
            }
        }
        let m = match normalise_cidrs(all).as_slice() {
            [one] => Match::Destination {
                negated: false,
                cidr: *one,
            },
            many => Match::DestinationIn(many.to_vec()),
        };
        out.items.push((Item::New(with(m)), None));
    }
}

/// Splits ports into lists of at most [`MULTIPORT_SLOTS`] slots (a range takes two).
fn multiport_chunks(ports: Vec<PortSpec>) -> Vec<Vec<PortSpec>> {
    let mut chunks: Vec<Vec<PortSpec>> = Vec::new();
    for p in ports {
        match chunks.last_mut() {
            Some(c) if multiport_slots(c) + multiport_slots(&[p]) <= MULTIPORT_SLOTS => c.push(p),
            _ => chunks.push(vec![p]),
        }
    }
    chunks
}

/// The same set of addresses, as the fewest prefixes that cover exactly the union (host bits
/// cleared, nested prefixes dropped, adjacent ones joined where they form a larger prefix),
/// sorted, IPv4 first. This is also the form nft's set listing is read back into (`check`), so
/// two sets compare equal exactly when they hold the same addresses.
pub(crate) fn normalise_cidrs(cidrs: Vec<Cidr>) -> Vec<Cidr> {
    let mut out = Vec::with_capacity(cidrs.len());
    for family in [Family::V4, Family::V6] {
        let bits: u32 = match family {
            Family::V4 => 32,
            Family::V6 => 128,
        };
        let intervals = cidrs.iter().filter(|c| c.family() == family).map(|c| {
            let start = addr_number(&c.network().addr());
            let size_bits = bits - u32::from(c.prefix_len());
            (start, start + (low_mask(size_bits)))
        });
        for (start, end) in join_intervals(intervals.collect()) {
            prefixes_of(start, end, family, bits, &mut out);
        }
    }
    out
}

/// The addresses `start..=end` of `family` as prefixes, appended to `out`.
pub(crate) fn prefixes_of(mut start: u128, end: u128, family: Family, bits: u32, out: &mut Vec<Cidr>) {
    loop {
        // The largest aligned block at `start` that does not pass `end`.
        let mut size_bits = if start == 0 {
            bits
        } else {
            start.trailing_zeros().min(bits)
        };
        while size_bits > 0 && start.checked_add(low_mask(size_bits)).is_none_or(|last| last > end) {
            size_bits -= 1;
        }
        let addr = match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(start as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(start)),
        };
        out.push(Cidr::new(addr, (bits - size_bits) as u8).expect("a length within the family"));
        let last = start + low_mask(size_bits);
        if last >= end {
            return;
        }
        start = last + 1;
    }
}

/// `2^n - 1` (n ≤ 128).
fn low_mask(n: u32) -> u128 {
    if n >= 128 { u128::MAX } else { (1u128 << n) - 1 }
}

fn addr_number(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// Sorted, with overlapping or adjacent intervals (inclusive bounds) joined.
fn join_intervals(mut spans: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    spans.sort_unstable();
    let mut joined: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
    for (lo, hi) in spans {
        match joined.last_mut() {
            Some(last) if last.1 == u128::MAX || lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => joined.push((lo, hi)),
        }
    }
    joined
}

/// The same set of ports, sorted, overlapping or adjacent ranges joined.
pub(crate) fn normalise_ports(ports: Vec<PortSpec>) -> Vec<PortSpec> {
    let bounds = |p: PortSpec| match p {
        PortSpec::Single(p) => (p.get(), p.get()),
        PortSpec::Range(lo, hi) => (lo.get(), hi.get()),
    };
    let mut spans: Vec<(u16, u16)> = ports.into_iter().map(bounds).collect();
    spans.sort_unstable();
    let mut joined: Vec<(u16, u16)> = Vec::with_capacity(spans.len());
    for (lo, hi) in spans {
        match joined.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => joined.push((lo, hi)),
        }
    }
    let port = |n: u16| Port::new_const(n);
    joined
        .into_iter()
        .map(|(lo, hi)| {
            if lo == hi {
                PortSpec::Single(port(lo))
            } else {
                PortSpec::Range(port(lo), port(hi))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::Ruleset;
    use crate::plan::testing::{KNOBS, plan_of};

    fn rules(p: &Plan, family: Family) -> usize {
        p.ruleset(family).tables.iter().map(|t| t.ops.len()).sum()
    }

    #[test]
    fn compact_plans_are_valid_for_their_backend_and_smaller() {
        for flags in KNOBS {
            for ipv6 in [false, true] {
                let plain = plan_of(flags, ipv6);
                let ipt = plan(plain.clone(), Backend::Iptables);
                ipt.validate(Backend::Iptables)
                    .unwrap_or_else(|e| panic!("{flags:?}: {e:?}"));
                let nf = plan(plain.clone(), Backend::Nft);
                nf.validate(Backend::Nft).unwrap_or_else(|e| panic!("{flags:?}: {e:?}"));
                for family in plain.families() {
                    assert!(rules(&ipt, family) <= rules(&plain, family), "{flags:?}");
                    assert!(rules(&nf, family) <= rules(&plain, family), "{flags:?}");
                    // Compacting again changes nothing.
                    let again = plan(ipt.clone(), Backend::Iptables);
                    assert_eq!(again.ruleset(family), ipt.ruleset(family), "{flags:?}");
                    let again = plan(nf.clone(), Backend::Nft);
                    assert_eq!(again.ruleset(family), nf.ruleset(family), "{flags:?}");
                    // Only appends remain.
                    for t in ipt.ruleset(family).tables.iter().chain(&nf.ruleset(family).tables) {
                        assert!(t.ops.iter().all(|o| o.position == Position::Append));
                    }
                }
            }
        }
    }

    #[test]
    fn rules_with_side_effects_or_negations_stay_as_planned() {
        // DNS zones (CT targets) and the negated multiport stay; nothing merges across targets.
        let plain = plan_of(KNOBS[7], true);
        for backend in [Backend::Iptables, Backend::Nft] {
            let p = plan(plain.clone(), backend);
            for family in plain.families() {
                let before = plain.ruleset(family);
                let after = p.ruleset(family);
                let side_effects = |rs: &Ruleset| -> Vec<crate::model::Rule> {
                    let mut v: Vec<_> = rs
                        .tables
                        .iter()
                        .flat_map(|t| t.ops.iter())
                        .filter(|o| !final_or_pure_jump(&o.rule.target, &[true; IstioChain::ALL.len()]))
                        .map(|o| o.rule.clone())
                        .collect();
                    v.sort();
                    v
                };
                assert_eq!(side_effects(&before), side_effects(&after));
            }
        }
    }

    #[test]
    fn normalisation_keeps_membership() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        assert_eq!(
            normalise_cidrs(vec![c("10.1.2.3/16"), c("10.0.0.0/8"), c("9.0.0.0/8"), c("10.0.0.0/8")]),
            [c("9.0.0.0/8"), c("10.0.0.0/8")]
        );
        // Siblings join; a run that is not one prefix stays several; families stay apart.
        assert_eq!(
            normalise_cidrs(vec![
                c("10.0.1.0/24"),
                c("10.0.0.0/24"),
                c("2001:db8::/33"),
                c("2001:db8:8000::/33")
            ]),
            [c("10.0.0.0/23"), c("2001:db8::/32")]
        );
        assert_eq!(
            normalise_cidrs(vec![c("10.0.1.0/24"), c("10.0.2.0/24")]),
            [c("10.0.1.0/24"), c("10.0.2.0/24")]
        );
        assert_eq!(
            normalise_cidrs(vec![c("0.0.0.0/1"), c("128.0.0.0/1")]),
            [c("0.0.0.0/0")]
        );
        assert_eq!(normalise_cidrs(vec![c("::/0"), c("::1/128")]), [c("::/0")]);
        let mut out = Vec::new();
        prefixes_of(1, 6, Family::V4, 32, &mut out);
        let want: Vec<Cidr> = ["0.0.0.1/32", "0.0.0.2/31", "0.0.0.4/31", "0.0.0.6/32"].map(c).into();
        assert_eq!(out, want);
        let p = |s: &str| PortSpec::parse(s).unwrap();
        assert_eq!(
            normalise_ports(vec![p("10:20"), p("15:30"), p("31"), p("40"), p("5")]),
            [p("5"), p("10:31"), p("40")]
        );
        assert_eq!(normalise_ports(vec![p("65535"), p("1:65534")]), [p("1:65535")]);
    }
}
