//! The one representation of meshcap's nftables objects, which every nftables codec reads or
//! writes: [`super::lower`] builds a [`Transaction`] from the plan, `super::text` spells it as
//! `nft -f` input, [`super::netlink::to_ir`] reads the kernel's netlink dump into an
//! [`NftState`] (as `listing`, a test-only reader, does the JSON listing), and
//! `super::model` reads a rule in the rule model's terms for the tracer and drift.
//!
//! Two views of the same objects:
//! * the *transaction*: [`NftOp`]s that change the kernel, committed atomically;
//! * the *state*: what meshcap's three `inet` tables hold ([`NftState`]): what a listing reads,
//!   and what [`planned`] computes a transaction leaves, so the two compare directly.
//!
//! The vocabulary both codecs share (table, chain and hook names, chain types and policies,
//! payload fields, `meta`/`ct` keys, conntrack states, families) is written here once; the
//! text and JSON syntax around it lives in the codec that writes it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::model::{CtState, Hook, IstioChain, Proto, TableName};
use crate::values::{Cidr, Family, Iface, Mark, Owner, Port, PortSpec};

/// meshcap's nftables tables (all of family `inet`), in transaction order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NftTable {
    Nat,
    Mangle,
    Raw,
}

impl NftTable {
    pub(crate) const ALL: [NftTable; 3] = [NftTable::Nat, NftTable::Mangle, NftTable::Raw];

    pub(crate) fn name(self) -> &'static str {
        match self {
            NftTable::Nat => "istio-proxy-nat",
            NftTable::Mangle => "istio-proxy-mangle",
            NftTable::Raw => "istio-proxy-raw",
        }
    }

    /// The table called `name` (`istio-proxy-nat`, …), if it is one of meshcap's.
    pub(crate) fn from_name(name: &str) -> Option<NftTable> {
        NftTable::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The nft table holding the rules of the iptables table `table` (none for `filter`).
    pub(crate) fn of(table: TableName) -> Option<NftTable> {
        match table {
            TableName::Nat => Some(NftTable::Nat),
            TableName::Mangle => Some(NftTable::Mangle),
            TableName::Raw => Some(NftTable::Raw),
            TableName::Filter => None,
        }
    }

    /// The iptables table whose rules this table holds.
    pub(crate) fn table_name(self) -> TableName {
        match self {
            NftTable::Nat => TableName::Nat,
            NftTable::Mangle => TableName::Mangle,
            NftTable::Raw => TableName::Raw,
        }
    }

    /// The chains the table may hold, in declaration order (base chains first).
    pub(crate) fn chains(self) -> &'static [NftChain] {
        use IstioChain::*;
        use NftChain::{Base, Regular};
        match self {
            NftTable::Nat => &[
                Base(Hook::Prerouting),
                Base(Hook::Output),
                Regular(Inbound),
                Regular(Redirect),
                Regular(InRedirect),
                Regular(Output),
                Regular(OutputDns),
            ],
            NftTable::Mangle => &[
                Base(Hook::Prerouting),
                Base(Hook::Output),
                Regular(Divert),
                Regular(Tproxy),
                Regular(Inbound),
                Regular(Drop),
            ],
            NftTable::Raw => &[
                Base(Hook::Prerouting),
                Base(Hook::Output),
                Regular(Inbound),
                Regular(OutputDns),
            ],
        }
    }

    /// The declaration of this table's base chain on `hook`: nat at dstnat (-100), mangle at
    /// mangle (-150, output as a route chain so a new mark re-routes), raw at raw (-300);
    /// policy accept.
    pub(crate) fn base_chain(self, hook: Hook) -> BaseChain {
        let (kind, priority) = match (self, hook) {
            (NftTable::Nat, _) => (ChainType::Nat, -100),
            (NftTable::Mangle, Hook::Output) => (ChainType::Route, -150),
            (NftTable::Mangle, _) => (ChainType::Filter, -150),
            (NftTable::Raw, _) => (ChainType::Filter, -300),
        };
        BaseChain {
            kind,
            hook: NftHook::Netfilter(hook),
            priority,
            policy: Policy::Accept,
        }
    }
}

/// The table's name.
impl fmt::Display for NftTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A chain of one of meshcap's tables: a base chain on a hook, or a regular chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NftChain {
    Base(Hook),
    Regular(IstioChain),
}

impl NftChain {
    pub(crate) fn name(self) -> &'static str {
        match self {
            NftChain::Base(h) => NftHook::Netfilter(h).word(),
            NftChain::Regular(c) => match c {
                IstioChain::Inbound => "istio-inbound",
                IstioChain::Redirect => "istio-redirect",
                IstioChain::InRedirect => "istio-in-redirect",
                IstioChain::Output => "istio-output",
                IstioChain::OutputDns => "istio-output-dns",
                IstioChain::Divert => "istio-divert",
                IstioChain::Tproxy => "istio-tproxy",
                IstioChain::Drop => "istio-drop",
            },
        }
    }

    /// The regular chain called `name` (`istio-output`, …), if meshcap has one.
    pub(crate) fn regular_named(name: &str) -> Option<NftChain> {
        IstioChain::ALL
            .into_iter()
            .map(NftChain::Regular)
            .find(|c| c.name() == name)
    }
}

/// The chain's name.
impl fmt::Display for NftChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A base chain's declaration: `type T hook H priority P ; policy X ;`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BaseChain {
    pub(crate) kind: ChainType,
    pub(crate) hook: NftHook,
    pub(crate) priority: i32,
    pub(crate) policy: Policy,
}

/// A base chain's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ChainType {
    Filter,
    Nat,
    Route,
}

impl ChainType {
    pub(crate) const ALL: [ChainType; 3] = [ChainType::Filter, ChainType::Nat, ChainType::Route];

    pub(crate) fn word(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }

    pub(crate) fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.word() == word)
    }
}

/// The hooks of the `inet` family: netfilter's five, and `ingress` (which iptables has not;
/// meshcap never declares one, but a listing may hold one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum NftHook {
    Netfilter(Hook),
    Ingress,
}

impl NftHook {
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) const ALL: [NftHook; 6] = [
        NftHook::Netfilter(Hook::Prerouting),
        NftHook::Netfilter(Hook::Input),
        NftHook::Netfilter(Hook::Forward),
        NftHook::Netfilter(Hook::Output),
        NftHook::Netfilter(Hook::Postrouting),
        NftHook::Ingress,
    ];

    /// nft's name of the hook (also the name of meshcap's base chain on it).
    pub(crate) fn word(self) -> &'static str {
        match self {
            NftHook::Netfilter(Hook::Prerouting) => "prerouting",
            NftHook::Netfilter(Hook::Input) => "input",
            NftHook::Netfilter(Hook::Forward) => "forward",
            NftHook::Netfilter(Hook::Output) => "output",
            NftHook::Netfilter(Hook::Postrouting) => "postrouting",
            NftHook::Ingress => "ingress",
        }
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.word() == word)
    }
}

/// A base chain's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Policy {
    Accept,
    Drop,
}

impl Policy {
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) const ALL: [Policy; 2] = [Policy::Accept, Policy::Drop];

    pub(crate) fn word(self) -> &'static str {
        match self {
            Policy::Accept => "accept",
            Policy::Drop => "drop",
        }
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.word() == word)
    }
}

/// Which end of a packet a match looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Direction {
    Source,
    Destination,
}

impl Direction {
    /// The address field: `saddr` / `daddr`.
    pub(crate) fn addr_field(self) -> &'static str {
        match self {
            Direction::Source => "saddr",
            Direction::Destination => "daddr",
        }
    }

    /// The port field: `sport` / `dport`.
    pub(crate) fn port_field(self) -> &'static str {
        match self {
            Direction::Source => "sport",
            Direction::Destination => "dport",
        }
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_addr_field(word: &str) -> Option<Direction> {
        [Direction::Source, Direction::Destination]
            .into_iter()
            .find(|d| d.addr_field() == word)
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_port_field(word: &str) -> Option<Direction> {
        [Direction::Source, Direction::Destination]
            .into_iter()
            .find(|d| d.port_field() == word)
    }
}

/// Which socket owner a match looks at: `skuid` or `skgid` ([`MetaKey::owner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum OwnerKind {
    Uid,
    Gid,
}

/// The network-layer protocol of an address match (and of `tproxy ip|ip6`): `ip` / `ip6`.
pub(crate) fn family_word(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn family_from_word(word: &str) -> Option<Family> {
    Family::ALL.into_iter().find(|f| family_word(*f) == word)
}

/// The transport protocol called `word` (`tcp` / `udp`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn proto_from_word(word: &str) -> Option<Proto> {
    [Proto::Tcp, Proto::Udp].into_iter().find(|p| p.as_str() == word)
}

/// nft's name of a conntrack state.
pub(crate) fn ct_state_word(s: CtState) -> &'static str {
    match s {
        CtState::Invalid => "invalid",
        CtState::New => "new",
        CtState::Related => "related",
        CtState::Established => "established",
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn ct_state_from_word(word: &str) -> Option<CtState> {
    [CtState::Invalid, CtState::New, CtState::Related, CtState::Established]
        .into_iter()
        .find(|s| ct_state_word(*s) == word)
}

/// An interface name as nft matches it: iptables' trailing `+` wildcard is nft's `*`. Returns
/// the name without the wildcard and whether it has one.
pub(crate) fn iface_pattern(name: &Iface) -> (&str, bool) {
    match name.as_str().strip_suffix('+') {
        Some(body) => (body, true),
        None => (name.as_str(), false),
    }
}

/// The interface name of the nft pattern `word` (`veth*` is iptables' `veth+`); `None` for a
/// name with a literal `+` (not a wildcard to nft, but one to the model) or not a valid name.
pub(crate) fn iface_from_pattern(word: &str) -> Option<Iface> {
    if word.ends_with('+') {
        return None;
    }
    match word.strip_suffix('*') {
        Some(prefix) => Iface::parse(&format!("{prefix}+")).ok(),
        None => Iface::parse(word).ok(),
    }
}

/// A `meta` expression's key, as meshcap uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MetaKey {
    Iifname,
    Oifname,
    L4proto,
    Skuid,
    Skgid,
    Mark,
}

impl MetaKey {
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) const ALL: [MetaKey; 6] = [
        MetaKey::Iifname,
        MetaKey::Oifname,
        MetaKey::L4proto,
        MetaKey::Skuid,
        MetaKey::Skgid,
        MetaKey::Mark,
    ];

    pub(crate) fn word(self) -> &'static str {
        match self {
            MetaKey::Iifname => "iifname",
            MetaKey::Oifname => "oifname",
            MetaKey::L4proto => "l4proto",
            MetaKey::Skuid => "skuid",
            MetaKey::Skgid => "skgid",
            MetaKey::Mark => "mark",
        }
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.word() == word)
    }

    /// `iifname` for an input interface, `oifname` for an output one.
    pub(crate) fn iface(input: bool) -> MetaKey {
        if input { MetaKey::Iifname } else { MetaKey::Oifname }
    }

    pub(crate) fn owner(kind: OwnerKind) -> MetaKey {
        match kind {
            OwnerKind::Uid => MetaKey::Skuid,
            OwnerKind::Gid => MetaKey::Skgid,
        }
    }
}

/// A `ct` expression's key, as meshcap uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CtKey {
    State,
    Mark,
    Zone,
}

impl CtKey {
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) const ALL: [CtKey; 3] = [CtKey::State, CtKey::Mark, CtKey::Zone];

    pub(crate) fn word(self) -> &'static str {
        match self {
            CtKey::State => "state",
            CtKey::Mark => "mark",
            CtKey::Zone => "zone",
        }
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.word() == word)
    }
}

/// One statement of a rule: a match, `counter`, a verdict or an action. A match of several
/// values (addresses with `--compact`, ports) is a lookup in an anonymous set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Stmt {
    /// `iifname` / `oifname`.
    Iface {
        input: bool,
        name: Iface,
    },
    /// `meta l4proto`.
    L4Proto(Proto),
    /// `ct state`.
    CtState(Vec<CtState>),
    /// `ip|ip6 saddr|daddr`, the family from the prefix.
    Addr {
        direction: Direction,
        negated: bool,
        cidr: Cidr,
    },
    /// `ip|ip6 saddr|daddr { … }`: an anonymous set of prefixes of one family (`--compact`).
    AddrSet {
        direction: Direction,
        cidrs: Vec<Cidr>,
    },
    /// `tcp|udp sport|dport`; more than one port is an anonymous set.
    Port {
        proto: Proto,
        direction: Direction,
        negated: bool,
        ports: Vec<PortSpec>,
    },
    /// `skuid` / `skgid`, with the optional `meta` keyword.
    Owner {
        kind: OwnerKind,
        negated: bool,
        owner: Owner,
        meta: bool,
    },
    /// `mark` (the packet mark).
    Mark {
        negated: bool,
        mark: Mark,
    },
    /// `ct mark` (the connection mark).
    CtMark(Mark),
    Counter,
    Jump(NftChain),
    Return,
    Accept,
    Drop,
    /// `redirect to :P`.
    Redirect(Port),
    /// `tproxy [ip|ip6] to :P`.
    Tproxy {
        family: Option<Family>,
        port: Port,
    },
    /// `meta mark set M`.
    SetMark(Mark),
    /// `ct mark set mark`.
    SaveMark,
    /// `meta mark set ct mark`.
    RestoreMark,
    /// `ct zone set N`.
    CtZone(u16),
}

/// A rule: its statements in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NftRule {
    pub(crate) stmts: Vec<Stmt>,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NftOp {
    AddTable(NftTable),
    FlushTable(NftTable),
    DeleteTable(NftTable),
    /// A base chain is declared with `NftTable::base_chain`.
    AddChain(NftTable, NftChain),
    DeleteChain(NftTable, NftChain),
    AddRule {
        table: NftTable,
        chain: NftChain,
        rule: NftRule,
    },
    /// Insert before the rule now at 0-based `index`.
    InsertRule {
        table: NftTable,
        chain: NftChain,
        index: u32,
        rule: NftRule,
    },
}

/// An nft transaction: its operations, committed atomically.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transaction {
    pub ops: Vec<NftOp>,
}

impl Transaction {
    /// The tables the transaction fills with rules.
    #[cfg(test)]
    pub(crate) fn tables_with_rules(&self) -> Vec<NftTable> {
        let mut out: Vec<NftTable> = Vec::new();
        for op in &self.ops {
            if let NftOp::AddRule { table, .. } | NftOp::InsertRule { table, .. } = op
                && !out.contains(table)
            {
                out.push(*table);
            }
        }
        out
    }
}

/// The state of meshcap's tables: which exist, their chains (by table and chain name, as the
/// kernel names them) and the objects meshcap never makes. Tables other than meshcap's are
/// never part of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftState {
    pub(crate) tables: BTreeSet<String>,
    pub chains: BTreeMap<(String, String), ChainState>,
    /// Sets, maps, flowtables, named counters, … in meshcap's tables.
    pub objects: BTreeSet<Object>,
    /// The listing's `metainfo.version` (e.g. `1.0.6`).
    pub(crate) version: Option<String>,
}

impl NftState {
    /// Whether none of meshcap's tables exists.
    pub(crate) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Applies one operation, as the kernel does.
    pub(crate) fn apply(&mut self, op: &NftOp) {
        let key = |t: &NftTable, c: &NftChain| (t.name().to_string(), c.name().to_string());
        let state_rule = |rule: &NftRule| StateRule {
            stmts: Ok(rule.clone()),
            text: rule.to_string(),
        };
        match op {
            NftOp::AddTable(t) => {
                self.tables.insert(t.name().to_string());
            }
            NftOp::FlushTable(t) => {
                for ((table, _), chain) in self.chains.iter_mut() {
                    if table == t.name() {
                        chain.rules.clear();
                    }
                }
            }
            NftOp::DeleteTable(t) => {
                self.tables.remove(t.name());
                self.chains.retain(|(table, _), _| table != t.name());
            }
            NftOp::AddChain(t, c) => {
                let chain = self.chains.entry(key(t, c)).or_default();
                if let NftChain::Base(h) = c {
                    chain.base = Some(t.base_chain(*h));
                }
            }
            NftOp::DeleteChain(t, c) => {
                self.chains.remove(&key(t, c));
            }
            NftOp::AddRule { table, chain, rule } => {
                self.chains
                    .entry(key(table, chain))
                    .or_default()
                    .rules
                    .push(state_rule(rule));
            }
            NftOp::InsertRule {
                table,
                chain,
                index,
                rule,
            } => {
                let rules = &mut self.chains.entry(key(table, chain)).or_default().rules;
                let at = (*index as usize).min(rules.len());
                rules.insert(at, state_rule(rule));
            }
        }
    }
}

/// The state `tx` leaves when applied to a namespace without meshcap's tables.
pub fn planned(tx: &Transaction) -> NftState {
    let mut state = NftState::default();
    for op in &tx.ops {
        state.apply(op);
    }
    state
}

/// One chain of one of meshcap's tables: its declaration (base chains) and rules in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainState {
    pub(crate) base: Option<BaseChain>,
    pub rules: Vec<StateRule>,
}

/// A rule of the state: its statements when understood (else why not), and its text (the
/// `nft` spelling of the statements, or the listing's own form of a rule not understood).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRule {
    pub stmts: Result<NftRule, String>,
    pub text: String,
}

/// An object other than a table, chain or rule in one of meshcap's tables (meshcap makes none).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Object {
    pub(crate) table: String,
    /// The listing's kind: `set`, `map`, `flowtable`, `counter`, …
    pub(crate) kind: String,
    pub(crate) name: String,
}
