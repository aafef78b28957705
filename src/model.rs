//! The syntax-free rule model: tables, chains, rules with typed matches and targets.
//!
//! A [`Ruleset`] is one family's capture as an ordered list of operations per table (append or
//! insert-at-position, exactly the sequence a restore applies). [`Table::resolved`] computes what
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
    pub const ALL: [TableName; 4] = [TableName::Filter, TableName::Mangle, TableName::Nat, TableName::Raw];

    pub fn as_str(self) -> &'static str {
        match self {
            TableName::Filter => "filter",
            TableName::Mangle => "mangle",
            TableName::Nat => "nat",
            TableName::Raw => "raw",
        }
    }

    pub fn from_name(name: &str) -> Option<TableName> {
        TableName::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Built-in chains (hooks) this table has.
    pub fn hooks(self) -> &'static [Hook] {
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
    pub const ALL: [Hook; 5] = [
        Hook::Prerouting,
        Hook::Input,
        Hook::Forward,
        Hook::Output,
        Hook::Postrouting,
    ];

    pub fn as_str(self) -> &'static str {
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
    pub const ALL: [IstioChain; 8] = [
        IstioChain::Inbound,
        IstioChain::Redirect,
        IstioChain::InRedirect,
        IstioChain::Output,
        IstioChain::OutputDns,
        IstioChain::Divert,
        IstioChain::Tproxy,
        IstioChain::Drop,
    ];

    pub fn as_str(self) -> &'static str {
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

    pub fn from_name(name: &str) -> Option<IstioChain> {
        IstioChain::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// A chain: a built-in hook chain or one of meshcap's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChainName {
    Builtin(Hook),
    Istio(IstioChain),
}

impl ChainName {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainName::Builtin(h) => h.as_str(),
            ChainName::Istio(c) => c.as_str(),
        }
    }

    pub fn from_name(name: &str) -> Option<ChainName> {
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
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Conntrack states a rule can match. Kept in the order the rule lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtState {
    Invalid,
    New,
    Related,
    Established,
}

impl CtState {
    pub fn as_str(self) -> &'static str {
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
pub enum Match {
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
    /// Several destination ports in one rule (iptables `-m multiport --dports`).
    DestinationPorts {
        negated: bool,
        ports: Vec<PortSpec>,
    },
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
pub enum Target {
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

impl Target {
    /// Whether the target ends the walk of the current chain for a matching packet.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Target::SetMark(_) | Target::SaveMark | Target::RestoreMark | Target::CtZone(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub target: Target,
}

impl Rule {
    pub fn new(matches: Vec<Match>, target: Target) -> Rule {
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
    pub fn protocol(&self) -> Option<Proto> {
        self.matches.iter().find_map(|m| match m {
            Match::Protocol(p) => Some(*p),
            _ => None,
        })
    }
}

/// Where an operation puts its rule: at the end of the chain, or before the rule now at the
/// 1-based position `n` (iptables `-I CHAIN n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Position {
    Append,
    Insert(u32),
}

/// One step of a restore: put `rule` into `chain` at `position`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Op {
    pub chain: ChainName,
    pub position: Position,
    pub rule: Rule,
}

/// One table's operations, in the order they are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: TableName,
    pub ops: Vec<Op>,
}

impl Table {
    /// meshcap's chains this table creates, in the order a restore declares them: first by
    /// first appearance as an operation's chain, then as a jump target without rules.
    pub fn declared_chains(&self) -> Vec<IstioChain> {
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
    pub fn resolved(&self) -> BTreeMap<ChainName, Vec<Rule>> {
        let mut chains: BTreeMap<ChainName, Vec<Rule>> = BTreeMap::new();
        for c in self.declared_chains() {
            chains.insert(ChainName::Istio(c), Vec::new());
        }
        for op in &self.ops {
            let rules = chains.entry(op.chain).or_default();
            match op.position {
                Position::Append => rules.push(op.rule.clone()),
                Position::Insert(n) => {
                    let at = (n as usize).saturating_sub(1).min(rules.len());
                    rules.insert(at, op.rule.clone());
                }
            }
        }
        chains
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
    pub table: TableName,
    pub chain: ChainName,
    pub why: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}: {}", self.table, self.chain, self.why)
    }
}

impl Ruleset {
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(|t| t.ops.is_empty())
    }

    pub fn table(&self, name: TableName) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Checks the structure: tables sorted and unique, built-in chains exist in their table,
    /// every jump resolves to a chain of the same table, inserts land inside the chain, targets
    /// are legal in their table, addresses belong to the ruleset's family, and no jump loops.
    pub fn validate(&self) -> Result<(), Invalid> {
        for pair in self.tables.windows(2) {
            if pair[0].name >= pair[1].name {
                return Err(Invalid {
                    table: pair[1].name,
                    chain: ChainName::Builtin(Hook::Output),
                    why: "tables are not unique and sorted".into(),
                });
            }
        }
        for table in &self.tables {
            self.validate_table(table)?;
        }
        Ok(())
    }

    fn validate_table(&self, table: &Table) -> Result<(), Invalid> {
        let fail = |chain: ChainName, why: String| Invalid {
            table: table.name,
            chain,
            why,
        };
        let mut lengths: BTreeMap<ChainName, u32> = BTreeMap::new();
        let with_rules: std::collections::BTreeSet<ChainName> = table.ops.iter().map(|o| o.chain).collect();
        for op in &table.ops {
            if let ChainName::Builtin(h) = op.chain
                && !table.name.hooks().contains(&h)
            {
                return Err(fail(
                    op.chain,
                    format!("the {} table has no {} chain", table.name, h.as_str()),
                ));
            }
            let len = lengths.entry(op.chain).or_insert(0);
            if let Position::Insert(n) = op.position
                && (n == 0 || n > *len + 1)
            {
                return Err(fail(op.chain, format!("insert at {n} into a chain of {len} rules")));
            }
            *len += 1;
            let rule = &op.rule;
            match &rule.target {
                Target::Jump(c) if !with_rules.contains(&ChainName::Istio(*c)) => {
                    return Err(fail(
                        op.chain,
                        format!("jump to {} which has no rules in this table", c.as_str()),
                    ));
                }
                Target::Redirect { .. } if table.name != TableName::Nat => {
                    return Err(fail(op.chain, "REDIRECT outside the nat table".into()));
                }
                Target::Tproxy { .. } if table.name != TableName::Mangle => {
                    return Err(fail(op.chain, "TPROXY outside the mangle table".into()));
                }
                Target::Tproxy { .. }
                    if op.chain != ChainName::Builtin(Hook::Prerouting) && !matches!(op.chain, ChainName::Istio(_)) =>
                {
                    return Err(fail(op.chain, "TPROXY is only valid from PREROUTING".into()));
                }
                Target::CtZone(_) if table.name != TableName::Raw => {
                    return Err(fail(op.chain, "CT outside the raw table".into()));
                }
                Target::SetMark(_) | Target::SaveMark | Target::RestoreMark if table.name != TableName::Mangle => {
                    return Err(fail(op.chain, "MARK/CONNMARK outside the mangle table".into()));
                }
                _ => {}
            }
            for m in &rule.matches {
                let family = match m {
                    Match::Source { cidr, .. } | Match::Destination { cidr, .. } => Some(cidr.family()),
                    _ => None,
                };
                if family.is_some_and(|f| f != self.family) {
                    return Err(fail(
                        op.chain,
                        format!("a {} address in the {} ruleset", family.unwrap(), self.family),
                    ));
                }
                let needs_proto = matches!(
                    m,
                    Match::SourcePort { .. } | Match::DestinationPort { .. } | Match::DestinationPorts { .. }
                );
                if needs_proto && rule.protocol().is_none() {
                    return Err(fail(op.chain, "a port match without a protocol".into()));
                }
                if let Match::DestinationPorts { ports, .. } = m
                    && (ports.is_empty() || ports.len() > 15)
                {
                    return Err(fail(op.chain, "multiport takes 1 to 15 ports".into()));
                }
            }
        }
        self.validate_no_loops(table)
            .map_err(|c| fail(ChainName::Istio(c), "jumps form a loop".into()))
    }

    fn validate_no_loops(&self, table: &Table) -> Result<(), IstioChain> {
        let resolved = table.resolved();
        fn visit(
            c: IstioChain,
            resolved: &BTreeMap<ChainName, Vec<Rule>>,
            stack: &mut Vec<IstioChain>,
        ) -> Result<(), IstioChain> {
            if stack.contains(&c) {
                return Err(c);
            }
            stack.push(c);
            for r in resolved.get(&ChainName::Istio(c)).into_iter().flatten() {
                if let Target::Jump(next) = r.target {
                    visit(next, resolved, stack)?;
                }
            }
            stack.pop();
            Ok(())
        }
        for c in table.declared_chains() {
            visit(c, &resolved, &mut Vec::new())?;
        }
        Ok(())
    }
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
