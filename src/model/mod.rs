//! The syntax-free rule model: tables, chains, rules with typed matches and targets.
//!
//! A [`Ruleset`] is one family's capture as an ordered list of operations per table (append or
//! insert-at-position, exactly the sequence a restore applies). `Table::resolved` computes what
//! the kernel holds afterwards, chain by chain. Nothing here knows how iptables or nft spell a
//! rule; the renderers in `render` do.

use std::collections::BTreeMap;
use std::fmt;

use crate::values::{Cidr, Family, Iface, Mark, Owner, Port, PortSpec};

/// The netfilter tables meshcap writes. Ordered as the restore payload emits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableName {
    Filter,
    Mangle,
    Nat,
    Raw,
}

impl TableName {
    pub(crate) const ALL: [TableName; 4] = [TableName::Filter, TableName::Mangle, TableName::Nat, TableName::Raw];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TableName::Filter => "filter",
            TableName::Mangle => "mangle",
            TableName::Nat => "nat",
            TableName::Raw => "raw",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<TableName> {
        TableName::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Built-in chains (hooks) this table has.
    pub(crate) fn hooks(self) -> &'static [Hook] {
        use Hook::*;
        match self {
            TableName::Filter => &[Input, Forward, Output],
            TableName::Mangle => &[Prerouting, Input, Forward, Output, Postrouting],
            TableName::Nat => &[Prerouting, Input, Output, Postrouting],
            TableName::Raw => &[Prerouting, Output],
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Netfilter hooks, i.e. the built-in chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub(crate) const ALL: [Hook; 5] = [
        Hook::Prerouting,
        Hook::Input,
        Hook::Forward,
        Hook::Output,
        Hook::Postrouting,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Hook::Prerouting => "PREROUTING",
            Hook::Input => "INPUT",
            Hook::Forward => "FORWARD",
            Hook::Output => "OUTPUT",
            Hook::Postrouting => "POSTROUTING",
        }
    }
}

/// The chains meshcap creates. The same name can live in several tables (nat, mangle and raw
/// each have an unrelated `ISTIO_INBOUND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IstioChain {
    Inbound,
    Redirect,
    InRedirect,
    Output,
    OutputDns,
    Divert,
    Tproxy,
    Drop,
}

impl IstioChain {
    pub(crate) const ALL: [IstioChain; 8] = [
        IstioChain::Inbound,
        IstioChain::Redirect,
        IstioChain::InRedirect,
        IstioChain::Output,
        IstioChain::OutputDns,
        IstioChain::Divert,
        IstioChain::Tproxy,
        IstioChain::Drop,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            IstioChain::Inbound => "ISTIO_INBOUND",
            IstioChain::Redirect => "ISTIO_REDIRECT",
            IstioChain::InRedirect => "ISTIO_IN_REDIRECT",
            IstioChain::Output => "ISTIO_OUTPUT",
            IstioChain::OutputDns => "ISTIO_OUTPUT_DNS",
            IstioChain::Divert => "ISTIO_DIVERT",
            IstioChain::Tproxy => "ISTIO_TPROXY",
            IstioChain::Drop => "ISTIO_DROP",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<IstioChain> {
        IstioChain::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// A chain: a built-in hook chain or one of meshcap's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ChainName {
    Builtin(Hook),
    Istio(IstioChain),
}

impl ChainName {
    /// How many chain names there are ([`ChainName::index`] is below this).
    pub(crate) const COUNT: usize = Hook::ALL.len() + IstioChain::ALL.len();

    /// A dense number for the name (built-in hooks first), for per-chain arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            ChainName::Builtin(h) => h as usize,
            ChainName::Istio(c) => Hook::ALL.len() + c as usize,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChainName::Builtin(h) => h.as_str(),
            ChainName::Istio(c) => c.as_str(),
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<ChainName> {
        Hook::ALL
            .into_iter()
            .find(|h| h.as_str() == name)
            .map(ChainName::Builtin)
            .or_else(|| IstioChain::from_name(name).map(ChainName::Istio))
    }
}

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Conntrack states a rule can match. Kept in the order the rule lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum CtState {
    Invalid,
    New,
    Related,
    Established,
}

impl CtState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CtState::Invalid => "INVALID",
            CtState::New => "NEW",
            CtState::Related => "RELATED",
            CtState::Established => "ESTABLISHED",
        }
    }
}

/// One match of a rule. The order of matches in a rule is the order the plan wrote them, so a
/// renderer reproduces Istio's word order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Match {
    InIface(Iface),
    OutIface(Iface),
    Protocol(Proto),
    Source {
        negated: bool,
        cidr: Cidr,
    },
    Destination {
        negated: bool,
        cidr: Cidr,
    },
    SourcePort {
        negated: bool,
        port: PortSpec,
    },
    DestinationPort {
        negated: bool,
        port: PortSpec,
    },
    /// Several destination ports in one rule (iptables `-m multiport --dports`, nft `dport
    /// { … }`); iptables takes at most [`MULTIPORT_SLOTS`] (see [`Ruleset::validate_for`]).
    DestinationPorts {
        negated: bool,
        ports: Vec<PortSpec>,
    },
    /// The destination is in one of these prefixes (nft `ip daddr { … }`). Only `compact`
    /// writes it, and only for nft: iptables has no address sets (`-d a,b` becomes one kernel
    /// rule per prefix), so [`Ruleset::validate_for`] refuses it for [`Backend::Iptables`].
    DestinationIn(Vec<Cidr>),
    UidOwner {
        negated: bool,
        owner: Owner,
    },
    GidOwner {
        negated: bool,
        owner: Owner,
    },
    ConntrackState(Vec<CtState>),
    Mark {
        negated: bool,
        mark: Mark,
    },
    ConnMark(Mark),
}

/// What a rule does with a matching packet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Target {
    Jump(IstioChain),
    Return,
    Accept,
    Drop,
    /// nat: rewrite the destination to a local port.
    Redirect {
        port: Port,
    },
    /// mangle: deliver to a local transparent socket and mark the packet.
    Tproxy {
        mark: Mark,
        port: Port,
    },
    SetMark(Mark),
    /// Copy the packet mark to the connection mark.
    SaveMark,
    /// Copy the connection mark to the packet mark.
    RestoreMark,
    /// raw: place the connection in a conntrack zone.
    CtZone(u16),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub(crate) matches: Vec<Match>,
    pub(crate) target: Target,
}

impl Rule {
    pub(crate) fn new(matches: Vec<Match>, target: Target) -> Rule {
        Rule { matches, target }
    }

    /// The rule as the kernel keeps it, for comparing a plan with a live dump: prefixes without
    /// host bits and matches in a fixed order (iptables-save reorders them).
    pub fn canonical(&self) -> Rule {
        let mut matches: Vec<Match> = self
            .matches
            .iter()
            .map(|m| match m {
                Match::Source { negated, cidr } => Match::Source {
                    negated: *negated,
                    cidr: cidr.network(),
                },
                Match::Destination { negated, cidr } => Match::Destination {
                    negated: *negated,
                    cidr: cidr.network(),
                },
                Match::DestinationIn(cidrs) => Match::DestinationIn(cidrs.iter().map(Cidr::network).collect()),
                other => other.clone(),
            })
            .collect();
        matches.sort();
        Rule {
            matches,
            target: self.target.clone(),
        }
    }

    /// The protocol the rule is restricted to, if any.
    pub(crate) fn protocol(&self) -> Option<Proto> {
        self.matches.iter().find_map(|m| match m {
            Match::Protocol(p) => Some(*p),
            _ => None,
        })
    }
}

/// Where an operation puts its rule: at the end of the chain, or before the rule now at the
/// 1-based position `n` (iptables `-I CHAIN n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Position {
    Append,
    Insert(u32),
}

/// Where an operation lands in an nft chain that has `written` rules from this transaction:
/// `Some(i)` is an insert before the rule at 0-based `i`, `None` an append. iptables' `-I CHAIN
/// n` is nft's `index n-1`; Istio degrades it to an append when the chain is still empty or the
/// index is not below its length (istio-compat §8.4).
pub(crate) fn nft_insert_index(position: Position, written: u32) -> Option<u32> {
    match position {
        Position::Insert(n) if n > 0 && n - 1 < written => Some(n - 1),
        Position::Insert(_) | Position::Append => None,
    }
}

/// One step of a restore: put `rule` into `chain` at `position`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Op {
    pub(crate) chain: ChainName,
    pub(crate) position: Position,
    pub(crate) rule: Rule,
}

/// One table's operations, in the order they are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub(crate) name: TableName,
    pub ops: Vec<Op>,
}

impl Table {
    /// meshcap's chains this table creates, in the order a restore declares them: first by
    /// first appearance as an operation's chain, then as a jump target without rules.
    pub(crate) fn declared_chains(&self) -> Vec<IstioChain> {
        let mut seen: Vec<IstioChain> = Vec::new();
        let mut note = |c: IstioChain| {
            if !seen.contains(&c) {
                seen.push(c);
            }
        };
        for op in &self.ops {
            if let ChainName::Istio(c) = op.chain {
                note(c);
            }
        }
        for op in &self.ops {
            if let Target::Jump(c) = op.rule.target {
                note(c);
            }
        }
        seen
    }

    /// The rules each chain holds after every operation was applied in order, as the kernel
    /// would list them. Declared chains without rules are present with an empty list.
    pub(crate) fn resolved(&self) -> BTreeMap<ChainName, Vec<Rule>> {
        let mut chains: BTreeMap<ChainName, Vec<Rule>> = BTreeMap::new();
        for c in self.declared_chains() {
            chains.insert(ChainName::Istio(c), Vec::new());
        }
        for (chain, order) in self.resolved_order() {
            chains.insert(chain, order.into_iter().map(|i| self.ops[i].rule.clone()).collect());
        }
        chains
    }

    /// For each chain with operations, the indices into `ops` of its rules in kernel order.
    /// O(n log n) however many inserts there are (a plan may insert thousands of rules at the
    /// head of PREROUTING; see [`final_order`]).
    pub(crate) fn resolved_order(&self) -> BTreeMap<ChainName, Vec<usize>> {
        let mut per_chain: BTreeMap<ChainName, Vec<usize>> = BTreeMap::new();
        for (i, op) in self.ops.iter().enumerate() {
            per_chain.entry(op.chain).or_default().push(i);
        }
        for idxs in per_chain.values_mut() {
            if idxs.iter().all(|&i| self.ops[i].position == Position::Append) {
                continue;
            }
            // Insert index of each operation at the time it runs (0-based, clamped like the
            // kernel clamps `-I CHAIN n` past the end — validate refuses those anyway).
            let at: Vec<usize> = idxs
                .iter()
                .enumerate()
                .map(|(len, &i)| match self.ops[i].position {
                    Position::Append => len,
                    Position::Insert(n) => (n as usize).saturating_sub(1).min(len),
                })
                .collect();
            *idxs = final_order(&at).into_iter().map(|k| idxs[k]).collect();
        }
        per_chain
    }
}

/// The final order of a chain built by inserting, one after the other, element `k` at 0-based
/// index `at[k]` (at most the chain's length then; an append is `at[k] == k`): the positions
/// `k` of the elements, first rule first. O(n log n): walking the inserts backwards, each
/// takes the `at[k]`-th slot still free, since only later inserts can move it.
pub(crate) fn final_order(at: &[usize]) -> Vec<usize> {
    if at.iter().enumerate().all(|(k, &a)| a >= k) {
        // Appends only.
        return (0..at.len()).collect();
    }
    let mut free = FreeSlots::new(at.len());
    let mut order = vec![usize::MAX; at.len()];
    for (k, &a) in at.iter().enumerate().rev() {
        order[free.take_nth(a.min(k))] = k;
    }
    order
}

/// Slots 0..n, all free at first; `take_nth(k)` takes the k-th (0-based) free slot. A Fenwick
/// tree of free counts, O(log n) per call.
struct FreeSlots {
    tree: Vec<u32>,
    top: usize,
}

impl FreeSlots {
    fn new(n: usize) -> FreeSlots {
        // Every slot free: node j covers (j - lowbit(j), j], so it counts lowbit(j) slots.
        let tree = (0..=n).map(|j| (j & j.wrapping_neg()) as u32).collect();
        let top = if n == 0 {
            0
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        FreeSlots { tree, top }
    }

    fn take_nth(&mut self, k: usize) -> usize {
        let n = self.tree.len() - 1;
        let (mut pos, mut rest) = (0usize, k as u32);
        let mut step = self.top;
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] <= rest {
                pos = next;
                rest -= self.tree[next];
            }
            step >>= 1;
        }
        // `pos` is the last slot (1-based) with fewer than k+1 free slots up to it.
        let slot = pos + 1;
        let mut j = slot;
        while j <= n {
            self.tree[j] -= 1;
            j += j & j.wrapping_neg();
        }
        slot - 1
    }
}

/// One family's capture: the tables with at least one operation, in payload order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub family: Family,
    pub tables: Vec<Table>,
}

/// A structural defect of a ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub(crate) table: TableName,
    pub(crate) chain: ChainName,
    pub(crate) why: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}: {}", self.table, self.chain, self.why)
    }
}

/// The rule language a ruleset is written in. What a set-valued match may hold depends on it:
/// iptables' `multiport` takes at most 15 ports (a range counts twice) and iptables has no
/// address sets (`-d a,b` is expanded into one kernel rule per prefix); nft's anonymous sets
/// take any number of either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Iptables,
    Nft,
}

/// iptables' `multiport` limit: 15 slots per rule, a port range `a:b` takes two.
pub(crate) const MULTIPORT_SLOTS: usize = 15;

/// The `multiport` slots a port list takes.
pub(crate) fn multiport_slots(ports: &[PortSpec]) -> usize {
    ports
        .iter()
        .map(|p| match p {
            PortSpec::Single(_) => 1,
            PortSpec::Range(..) => 2,
        })
        .sum()
}

impl Ruleset {
    pub(crate) fn is_empty(&self) -> bool {
        self.tables.iter().all(|t| t.ops.is_empty())
    }

    pub(crate) fn table(&self, name: TableName) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// `Ruleset::validate_for` the iptables backend (every plan's iptables view must pass).
    pub fn validate(&self) -> Result<(), Invalid> {
        self.validate_for(Backend::Iptables)
    }

    /// Checks the structure: tables sorted and unique, built-in chains exist in their table,
    /// every jump resolves to a chain of the same table, inserts land inside the chain, targets
    /// are legal in their table, addresses belong to the ruleset's family, set-valued matches
    /// fit the backend, and no jump loops. Linear in the number of operations.
    pub(crate) fn validate_for(&self, backend: Backend) -> Result<(), Invalid> {
        RulesetView {
            family: self.family,
            tables: self.tables.iter().map(|t| (t.name, t.ops.iter().collect())).collect(),
        }
        .validate_for(backend)
    }
}

/// A ruleset's tables as operations by reference: what [`Ruleset::validate_for`] checks, built
/// without copying rules (a plan validates its family views this way).
#[derive(Debug, Clone)]
pub(crate) struct RulesetView<'a> {
    pub(crate) family: Family,
    pub(crate) tables: Vec<(TableName, Vec<&'a Op>)>,
}

impl RulesetView<'_> {
    /// See [`Ruleset::validate_for`].
    pub(crate) fn validate_for(&self, backend: Backend) -> Result<(), Invalid> {
        for pair in self.tables.windows(2) {
            if pair[0].0 >= pair[1].0 {
                return Err(Invalid {
                    table: pair[1].0,
                    chain: ChainName::Builtin(Hook::Output),
                    why: "tables are not unique and sorted".into(),
                });
            }
        }
        for (name, ops) in &self.tables {
            self.validate_table(*name, ops, backend)?;
        }
        Ok(())
    }

    fn validate_table(&self, name: TableName, ops: &[&Op], backend: Backend) -> Result<(), Invalid> {
        let fail = |chain: ChainName, why: String| Invalid {
            table: name,
            chain,
            why,
        };
        let mut lengths = [0u32; ChainName::COUNT];
        let mut with_rules = [false; ChainName::COUNT];
        for op in ops {
            with_rules[op.chain.index()] = true;
        }
        for op in ops {
            if let ChainName::Builtin(h) = op.chain
                && !name.hooks().contains(&h)
            {
                return Err(fail(op.chain, format!("the {name} table has no {} chain", h.as_str())));
            }
            let len = &mut lengths[op.chain.index()];
            if let Position::Insert(n) = op.position
                && (n == 0 || n > *len + 1)
            {
                return Err(fail(op.chain, format!("insert at {n} into a chain of {len} rules")));
            }
            *len += 1;
            let rule = &op.rule;
            match &rule.target {
                Target::Jump(c) if !with_rules[ChainName::Istio(*c).index()] => {
                    return Err(fail(
                        op.chain,
                        format!("jump to {} which has no rules in this table", c.as_str()),
                    ));
                }
                Target::Redirect { .. } if name != TableName::Nat => {
                    return Err(fail(op.chain, "REDIRECT outside the nat table".into()));
                }
                Target::Tproxy { .. } if name != TableName::Mangle => {
                    return Err(fail(op.chain, "TPROXY outside the mangle table".into()));
                }
                Target::Tproxy { .. }
                    if op.chain != ChainName::Builtin(Hook::Prerouting) && !matches!(op.chain, ChainName::Istio(_)) =>
                {
                    return Err(fail(op.chain, "TPROXY is only valid from PREROUTING".into()));
                }
                Target::CtZone(_) if name != TableName::Raw => {
                    return Err(fail(op.chain, "CT outside the raw table".into()));
                }
                Target::SetMark(_) | Target::SaveMark | Target::RestoreMark if name != TableName::Mangle => {
                    return Err(fail(op.chain, "MARK/CONNMARK outside the mangle table".into()));
                }
                _ => {}
            }
            for m in &rule.matches {
                self.validate_match(m, rule, backend)
                    .map_err(|why| fail(op.chain, why))?;
            }
        }
        validate_no_loops(ops).map_err(|c| fail(ChainName::Istio(c), "jumps form a loop".into()))
    }

    fn validate_match(&self, m: &Match, rule: &Rule, backend: Backend) -> Result<(), String> {
        let wrong_family = |cidr: &Cidr| {
            (cidr.family() != self.family)
                .then(|| format!("a {} address in the {} ruleset", cidr.family(), self.family))
        };
        match m {
            Match::Source { cidr, .. } | Match::Destination { cidr, .. } => {
                if let Some(why) = wrong_family(cidr) {
                    return Err(why);
                }
            }
            Match::DestinationIn(cidrs) => {
                if backend == Backend::Iptables {
                    return Err("an address set, which iptables would expand into one rule per prefix".into());
                }
                if cidrs.is_empty() {
                    return Err("an empty address set".into());
                }
                if let Some(why) = cidrs.iter().find_map(wrong_family) {
                    return Err(why);
                }
            }
            Match::DestinationPorts { ports, .. } => {
                let fits = match backend {
                    Backend::Iptables => (1..=MULTIPORT_SLOTS).contains(&multiport_slots(ports)),
                    Backend::Nft => !ports.is_empty(),
                };
                if !fits {
                    return Err("multiport takes 1 to 15 ports (a range counts twice)".into());
                }
            }
            Match::InIface(_)
            | Match::OutIface(_)
            | Match::Protocol(_)
            | Match::SourcePort { .. }
            | Match::DestinationPort { .. }
            | Match::UidOwner { .. }
            | Match::GidOwner { .. }
            | Match::ConntrackState(_)
            | Match::Mark { .. }
            | Match::ConnMark(_) => {}
        }
        let needs_proto = matches!(
            m,
            Match::SourcePort { .. } | Match::DestinationPort { .. } | Match::DestinationPorts { .. }
        );
        if needs_proto && rule.protocol().is_none() {
            return Err("a port match without a protocol".into());
        }
        Ok(())
    }
}

/// Loops need only the jump graph between meshcap's chains (built-in chains cannot be jumped
/// to), not the rule order.
fn validate_no_loops(ops: &[&Op]) -> Result<(), IstioChain> {
    const N: usize = IstioChain::ALL.len();
    let mut edges = [[false; N]; N];
    for op in ops {
        if let (ChainName::Istio(from), Target::Jump(to)) = (op.chain, &op.rule.target) {
            edges[from as usize][*to as usize] = true;
        }
    }
    // 0 unvisited, 1 on the stack, 2 done.
    fn visit(c: usize, edges: &[[bool; N]; N], state: &mut [u8; N]) -> Result<(), IstioChain> {
        match state[c] {
            1 => return Err(IstioChain::ALL[c]),
            2 => return Ok(()),
            _ => {}
        }
        state[c] = 1;
        for next in (0..N).filter(|&n| edges[c][n]) {
            visit(next, edges, state)?;
        }
        state[c] = 2;
        Ok(())
    }
    let mut state = [0u8; N];
    for c in 0..N {
        visit(c, &edges, &mut state)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(chain: ChainName, position: Position, target: Target) -> Op {
        Op {
            chain,
            position,
            rule: Rule::new(vec![], target),
        }
    }

    #[test]
    fn inserts_resolve_like_the_kernel() {
        let pre = ChainName::Builtin(Hook::Prerouting);
        let t = Table {
            name: TableName::Nat,
            ops: vec![
                op(pre, Position::Append, Target::Return),
                op(pre, Position::Insert(1), Target::Accept),
                op(pre, Position::Insert(2), Target::Drop),
            ],
        };
        let r = t.resolved();
        let targets: Vec<_> = r[&pre].iter().map(|r| r.target.clone()).collect();
        assert_eq!(targets, [Target::Accept, Target::Drop, Target::Return]);
    }

    #[test]
    fn resolution_matches_inserting_one_by_one() {
        let pre = ChainName::Builtin(Hook::Prerouting);
        let out = ChainName::Builtin(Hook::Output);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..300 {
            let mut ops = Vec::new();
            let mut naive: BTreeMap<ChainName, Vec<Rule>> = BTreeMap::new();
            for k in 0..next(60) {
                let chain = if next(2) == 0 { pre } else { out };
                let rules = naive.entry(chain).or_default();
                let rule = Rule::new(vec![], Target::CtZone(k as u16));
                let position = match next(3) {
                    0 => Position::Append,
                    _ => Position::Insert(1 + next(rules.len() as u64 + 1) as u32),
                };
                match position {
                    Position::Append => rules.push(rule.clone()),
                    Position::Insert(n) => rules.insert(n as usize - 1, rule.clone()),
                }
                ops.push(Op { chain, position, rule });
            }
            let t = Table {
                name: TableName::Raw,
                ops,
            };
            assert_eq!(t.resolved(), naive);
        }
        // Thousands of inserts at the head: the last one ends first.
        let many: Vec<usize> = vec![0; 50_000];
        let order = final_order(&many);
        assert_eq!(order[0], 49_999);
        assert_eq!(order[49_999], 0);
    }

    #[test]
    fn multiport_counts_ranges_twice() {
        let p = |s: &str| PortSpec::parse(s).unwrap();
        let rule = |ports: Vec<PortSpec>| Ruleset {
            family: Family::V4,
            tables: vec![Table {
                name: TableName::Nat,
                ops: vec![Op {
                    chain: ChainName::Builtin(Hook::Output),
                    position: Position::Append,
                    rule: Rule::new(
                        vec![
                            Match::Protocol(Proto::Tcp),
                            Match::DestinationPorts { negated: false, ports },
                        ],
                        Target::Return,
                    ),
                }],
            }],
        };
        // iptables 1.8.9: 7 ranges and a port fit, 8 ranges do not (checked with the binary).
        let fits: Vec<PortSpec> = (0..7)
            .map(|i| p(&format!("{}:{}", 10 * i + 1, 10 * i + 2)))
            .chain([p("99")])
            .collect();
        assert_eq!(multiport_slots(&fits), 15);
        assert!(rule(fits).validate().is_ok());
        let over: Vec<PortSpec> = (0..8).map(|i| p(&format!("{}:{}", 10 * i + 1, 10 * i + 2))).collect();
        assert!(rule(over.clone()).validate().is_err());
        assert!(rule(over).validate_for(Backend::Nft).is_ok());
        let set = Ruleset {
            family: Family::V4,
            tables: vec![Table {
                name: TableName::Nat,
                ops: vec![Op {
                    chain: ChainName::Builtin(Hook::Output),
                    position: Position::Append,
                    rule: Rule::new(
                        vec![Match::DestinationIn(vec![Cidr::parse("10.0.0.0/8").unwrap()])],
                        Target::Return,
                    ),
                }],
            }],
        };
        assert!(set.validate().unwrap_err().why.contains("address set"));
        assert!(set.validate_for(Backend::Nft).is_ok());
        let mut v6 = set.clone();
        v6.family = Family::V6;
        assert!(v6.validate_for(Backend::Nft).is_err());
    }

    #[test]
    fn validate_rejects_dangling_jump_and_wrong_table() {
        let out = ChainName::Builtin(Hook::Output);
        let rs = Ruleset {
            family: Family::V4,
            tables: vec![Table {
                name: TableName::Nat,
                ops: vec![op(out, Position::Append, Target::Jump(IstioChain::Output))],
            }],
        };
        assert!(rs.validate().unwrap_err().why.contains("no rules"));
        let rs = Ruleset {
            family: Family::V4,
            tables: vec![Table {
                name: TableName::Nat,
                ops: vec![op(out, Position::Append, Target::CtZone(1))],
            }],
        };
        assert!(rs.validate().is_err());
        let rs = Ruleset {
            family: Family::V4,
            tables: vec![Table {
                name: TableName::Raw,
                ops: vec![op(ChainName::Builtin(Hook::Input), Position::Append, Target::Return)],
            }],
        };
        assert!(rs.validate().is_err());
    }
}
