//! Where does a packet go? [`trace`] walks one packet through one family's netfilter tables in
//! kernel order and reports every rule it visits and the verdict.
//!
//! Order: per hook, the tables by priority — `out`: OUTPUT (raw, mangle, nat, filter), then
//! POSTROUTING (mangle, nat); `in`: PREROUTING (raw, mangle, nat), then INPUT (mangle, filter,
//! nat). The nat table is consulted only for the first packet of a new connection. Chains are
//! walked in their resolved order (`Table::resolved`, inserts applied), jumps and RETURN
//! work as in the kernel, a built-in chain ends in its policy (ACCEPT unless a dump says
//! otherwise).
//!
//! State: the packet mark and the connection mark change with MARK / CONNMARK / TPROXY and
//! later rules see the change; REDIRECT rewrites the destination (OUTPUT: loopback address and
//! `lo`); CT zones are reported and change no verdict. The verdict is the first delivery to a
//! local port (REDIRECT or TPROXY; a TPROXY listener on the port is assumed), `drop`, or
//! `accept`.
//!
//! Strict: a rule is decided only when every match is known to hold, or one is known to fail.
//! A match that needs a fact the packet does not carry (no `uid=`, no `oif=`, an unknown
//! connection mark, a destination only the kernel knows after REDIRECT), a rule the tracer does
//! not understand (a foreign match in a dump), an owner name that does not resolve, or a
//! conntrack match in the raw table (which runs before conntrack) is an error naming the rule,
//! never "assumed to match".

pub mod packet;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::iptables::parse::SaveDump;
use crate::model::{Backend, CtState, Hook, IstioChain, Match, Rule, Ruleset, TableName, Target};
pub use crate::sys::host::Ids;
use crate::values::Family;
use crate::{iptables::render as iptables, nft::ir as nft};

pub use packet::{ConnState, Direction, Packet};

/// The deepest chain nesting the tracer follows (the kernel's own limit is far higher, but no
/// capture needs more than a few levels; deeper means a loop in a foreign dump).
const MAX_DEPTH: usize = 32;

/// A rule as the tracer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A rule the tracer can evaluate, with the text to show for it and, per match, the words
    /// that spell that match (named when it fails).
    Rule {
        rule: Rule,
        text: String,
        shown: Vec<String>,
    },
    /// A rule it cannot evaluate (a foreign match or target): visiting it is an error.
    Opaque { text: String, why: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Policy {
    Accept,
    Drop,
}

/// The name of `t` in the backend's spelling: iptables (`nat`) or meshcap's nftables tables
/// (`istio-proxy-nat`).
fn table_name(backend: Backend, t: TableName) -> String {
    match (backend, t) {
        (Backend::Nft, TableName::Nat) => nft::NftTable::Nat.name().into(),
        (Backend::Nft, TableName::Mangle) => nft::NftTable::Mangle.name().into(),
        (Backend::Nft, TableName::Raw) => nft::NftTable::Raw.name().into(),
        _ => t.as_str().into(),
    }
}

/// The name of the built-in chain of `h` (`OUTPUT`, nft `output`).
fn hook_name(backend: Backend, h: Hook) -> &'static str {
    match backend {
        Backend::Iptables => h.as_str(),
        Backend::Nft => nft::NftChain::Base(h).name(),
    }
}

/// The name of an Istio chain (`ISTIO_OUTPUT`, nft `istio-output`).
fn chain_name(backend: Backend, c: IstioChain) -> &'static str {
    match backend {
        Backend::Iptables => c.as_str(),
        Backend::Nft => nft::NftChain::Regular(c).name(),
    }
}

/// One family's tables as the kernel holds them: chains (by table and name) in resolved order,
/// and the built-in chains' policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netfilter {
    pub(crate) family: Family,
    /// Packet marks that policy routing sends to `lo` (TPROXY's `fwmark M lookup T` with
    /// `local default dev lo table T`).
    local_marks: Vec<u32>,
    /// Whether `local_marks` is all the policy routing there is (a plan's routes), so another
    /// mark keeps the packet's route; from a dump nothing is known about routing.
    routes_known: bool,
    backend: Backend,
    chains: BTreeMap<(TableName, String), Vec<Entry>>,
    policies: BTreeMap<(TableName, String), Policy>,
}

fn iptables_entry(rule: Rule, text: String) -> Entry {
    let shown = rule.matches.iter().map(|m| iptables::match_args(m).join(" ")).collect();
    Entry::Rule { rule, text, shown }
}

impl Netfilter {
    /// The kernel state after restoring `rs` into empty tables (policies ACCEPT).
    pub(crate) fn from_ruleset(rs: &Ruleset) -> Netfilter {
        let mut chains = BTreeMap::new();
        for table in &rs.tables {
            for (name, rules) in table.resolved() {
                let entries = rules
                    .into_iter()
                    .map(|rule| {
                        let text = iptables::rule_spec(&rule);
                        iptables_entry(rule, text)
                    })
                    .collect();
                chains.insert((table.name, name.as_str().to_string()), entries);
            }
        }
        Netfilter {
            family: rs.family,
            local_marks: Vec::new(),
            routes_known: false,
            backend: Backend::Iptables,
            chains,
            policies: BTreeMap::new(),
        }
    }

    /// The state an iptables-save dump describes. Rules meshcap does not understand stay
    /// opaque (an error only if a packet reaches them); tables other than filter, mangle, nat
    /// and raw are ignored.
    pub(crate) fn from_save(dump: &SaveDump, family: Family) -> Result<Netfilter, UnknownPolicy> {
        let mut chains = BTreeMap::new();
        let mut policies = BTreeMap::new();
        for t in &dump.tables {
            let Some(name) = t.table() else { continue };
            for (chain, entries) in t.resolved() {
                let entries = entries
                    .into_iter()
                    .map(|e| {
                        let text = e.tokens.iter().map(|t| shown_token(t)).collect::<Vec<_>>().join(" ");
                        match e.rule {
                            Ok(rule) => iptables_entry(rule, text),
                            Err(why) => Entry::Opaque { text, why },
                        }
                    })
                    .collect();
                chains.insert((name, chain), entries);
            }
            for (chain, policy) in &t.policies {
                let p = match policy.as_str() {
                    "ACCEPT" => Policy::Accept,
                    "DROP" => Policy::Drop,
                    other => {
                        return Err(UnknownPolicy {
                            table: t.name.clone(),
                            chain: chain.clone(),
                            policy: other.to_string(),
                        });
                    }
                };
                policies.insert((name, chain.clone()), p);
            }
        }
        Ok(Netfilter {
            family,
            local_marks: Vec::new(),
            routes_known: false,
            backend: Backend::Iptables,
            chains,
            policies,
        })
    }

    /// The kernel state the plan programs for `family`: its rules (iptables, or the nftables
    /// transaction with `nft`) and its TPROXY policy routing.
    pub fn from_plan(plan: &crate::plan::Plan, family: Family, nft: bool) -> crate::error::Result<Netfilter> {
        let mut nf = if nft {
            let tx = crate::nft::lower::apply_transaction(plan)
                .map_err(|e| crate::error::Error::inconsistent("nftables", e))?;
            Netfilter::from_nft(&nft::planned(&tx), family)
        } else {
            Netfilter::from_ruleset(&plan.ruleset(family))
        };
        if let Some(t) = &plan.routes.tproxy
            && t.families.contains(&family)
        {
            nf.local_marks.push(t.mark.0);
        }
        nf.routes_known = true;
        Ok(nf)
    }

    /// An nftables state (e.g. what a transaction leaves, [`crate::nft::ir::planned`]) as a
    /// packet of `family` sees it: rules whose address match or TPROXY is of the other family
    /// never match it and are left out; a port match brings its implied protocol; a base
    /// chain's policy is its declared one.
    pub(crate) fn from_nft(state: &nft::NftState, family: Family) -> Netfilter {
        let mut chains = BTreeMap::new();
        let mut policies = BTreeMap::new();
        for ((table, chain), c) in &state.chains {
            let Some(table) = nft::NftTable::from_name(table) else {
                continue;
            };
            let key = (table.table_name(), chain.clone());
            if let Some(base) = &c.base {
                let policy = match base.policy {
                    nft::Policy::Accept => Policy::Accept,
                    nft::Policy::Drop => Policy::Drop,
                };
                policies.insert(key.clone(), policy);
            }
            chains.insert(key, c.rules.iter().filter_map(|r| nft_entry(r, family)).collect());
        }
        Netfilter {
            family,
            local_marks: Vec::new(),
            routes_known: false,
            backend: Backend::Nft,
            chains,
            policies,
        }
    }

    /// Whether the ruleset has any chain on `hook` in `table`.
    fn has_hook(&self, table: TableName, hook: Hook) -> bool {
        self.chain(table, hook_name(self.backend, hook)).is_some()
    }

    fn chain(&self, table: TableName, name: &str) -> Option<&[Entry]> {
        self.chains.get(&(table, name.to_string())).map(Vec::as_slice)
    }

    fn policy(&self, table: TableName, name: &str) -> Policy {
        self.policies
            .get(&(table, name.to_string()))
            .copied()
            .unwrap_or(Policy::Accept)
    }
}

/// An nftables rule as the tracer sees it for a packet of `family`; `None` when the rule can
/// never see such a packet (an `ip`/`ip6` match or TPROXY of the other family).
fn nft_entry(rule: &nft::StateRule, family: Family) -> Option<Entry> {
    let text = rule.text.clone();
    let model = match &rule.stmts {
        Ok(r) => crate::nft::model::nft_rule_model(r),
        Err(why) => Err(why.clone()),
    };
    match model {
        Ok(m) if m.family.is_some_and(|f| f != family) => None,
        Ok(m) => Some(Entry::Rule {
            rule: m.rule,
            text,
            shown: m.shown,
        }),
        Err(why) => Some(Entry::Opaque { text, why }),
    }
}

/// A dump token as iptables-save prints it: quoted when it holds whitespace or a quote.
fn shown_token(t: &str) -> String {
    if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == '"') {
        format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        t.to_string()
    }
}

/// What the packet finally meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Redirect,
    Tproxy,
    Accept,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub action: Action,
    /// The local port for `redirect` and `tproxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Verdict {
    pub(crate) fn accept() -> Verdict {
        Verdict {
            action: Action::Accept,
            port: None,
        }
    }
    pub(crate) fn drop() -> Verdict {
        Verdict {
            action: Action::Drop,
            port: None,
        }
    }
    pub(crate) fn redirect(port: u16) -> Verdict {
        Verdict {
            action: Action::Redirect,
            port: Some(port),
        }
    }
    pub(crate) fn tproxy(port: u16) -> Verdict {
        Verdict {
            action: Action::Tproxy,
            port: Some(port),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.action, self.port) {
            (Action::Redirect, Some(p)) => write!(f, "redirect to port {p}"),
            (Action::Tproxy, Some(p)) => write!(f, "tproxy to port {p}"),
            (Action::Drop, _) => f.write_str("drop"),
            _ => f.write_str("accept"),
        }
    }
}

/// What one visited rule (or a chain's end) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    /// The rule does not match; `because` is the first match that fails.
    NoMatch {
        because: String,
    },
    Jump {
        chain: String,
    },
    Return,
    /// The end of a non-built-in chain: back to the caller.
    EndOfChain,
    Accept,
    Drop,
    Redirect {
        port: u16,
        destination: String,
    },
    Tproxy {
        port: u16,
        mark: u32,
    },
    SetMark {
        mark: u32,
    },
    SaveMark {
        connmark: u32,
    },
    RestoreMark {
        mark: u32,
    },
    CtZone {
        zone: u16,
    },
    /// A built-in chain ended (or returned): its policy applies.
    Policy {
        policy: Policy,
    },
    /// The chain was not consulted.
    Skipped {
        why: String,
    },
    /// Sent through lo, the packet arrives again on lo (PREROUTING, INPUT follow).
    Loopback,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::NoMatch { because } => write!(f, "no match ({because})"),
            Effect::Jump { chain } => write!(f, "jump to {chain}"),
            Effect::Return => f.write_str("return"),
            Effect::EndOfChain => f.write_str("end of chain, return"),
            Effect::Accept => f.write_str("accept (ends this table)"),
            Effect::Drop => f.write_str("drop"),
            Effect::Redirect { port, destination } => {
                write!(f, "redirect to port {port} (destination now {destination})")
            }
            Effect::Tproxy { port, mark } => write!(f, "tproxy to port {port}, mark set to {mark}"),
            Effect::SetMark { mark } => write!(f, "mark set to {mark}"),
            Effect::SaveMark { connmark } => write!(f, "connection mark set to {connmark}"),
            Effect::RestoreMark { mark } => write!(f, "mark restored from the connection: {mark}"),
            Effect::CtZone { zone } => write!(f, "conntrack zone {zone} (no verdict change)"),
            Effect::Policy { policy } => match policy {
                Policy::Accept => f.write_str("policy ACCEPT"),
                Policy::Drop => f.write_str("policy DROP"),
            },
            Effect::Skipped { why } => write!(f, "skipped ({why})"),
            Effect::Loopback => f.write_str("sent through lo, the packet arrives again on lo"),
        }
    }
}

/// One line of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Visit {
    pub(crate) table: String,
    pub(crate) chain: String,
    /// 1-based rule number in the chain; none for a chain's end or a skipped chain.
    pub(crate) rule: Option<usize>,
    /// The rule as rendered: iptables arguments after the chain, or the nftables rule.
    pub(crate) text: Option<String>,
    pub effect: Effect,
}

impl fmt::Display for Visit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.rule, &self.text) {
            _ if self.effect == Effect::Loopback => write!(f, "loopback: {}", self.effect),
            (Some(n), Some(text)) => write!(f, "{}/{} #{n}  {text}  =>  {}", self.table, self.chain, self.effect),
            _ => write!(f, "{}/{}: {}", self.table, self.chain, self.effect),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trace {
    pub verdict: Verdict,
    pub steps: Vec<Visit>,
    /// Facts about the trace as a whole, said before the verdict (e.g. IPv6 is off).
    pub(crate) notes: Vec<String>,
}

impl Trace {
    /// The text form: one line per step, then `verdict: ...`.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            out.push_str(&s.to_string());
            out.push('\n');
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out.push_str(&format!("verdict: {}\n", self.verdict));
        out
    }
}

/// `trace --format json`: the packet as understood, the verdict, the steps.
#[derive(Serialize)]
struct TraceDoc<'a> {
    packet: String,
    verdict: &'a Verdict,
    steps: &'a [Visit],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notes: &'a [String],
}

impl Trace {
    /// The JSON form: `{"packet": ..., "verdict": {"action": ..., "port": N}, "steps": [...]}`.
    pub(crate) fn json(&self, packet: &Packet) -> String {
        let doc = TraceDoc {
            packet: packet.to_string(),
            verdict: &self.verdict,
            steps: &self.steps,
            notes: &self.notes,
        };
        let mut s = serde_json::to_string_pretty(&doc).expect("a trace serialises");
        s.push('\n');
        s
    }
}

/// Why a trace stopped without a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError {
    /// `table/CHAIN #n 'rule'`, when a rule is to blame.
    pub(crate) at: Option<String>,
    pub(crate) why: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "cannot evaluate {at}: {}", self.why),
            None => f.write_str(&self.why),
        }
    }
}

impl std::error::Error for TraceError {}

/// A dump's built-in chain policy other than ACCEPT and DROP (the tracer knows only those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownPolicy {
    pub(crate) table: String,
    pub(crate) chain: String,
    pub(crate) policy: String,
}

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy '{}' of {}/{} is not ACCEPT or DROP",
            self.policy, self.table, self.chain
        )
    }
}

impl std::error::Error for UnknownPolicy {}

/// A device the packet has: none at this hook, a name, or one the tracer does not know.
#[derive(Debug, Clone)]
enum Dev {
    Absent,
    Named(String),
    Unknown(String),
}

/// The packet's facts as the walk changes them. `Err` holds why a fact is not known.
#[derive(Debug, Clone)]
struct State {
    src: IpAddr,
    sport: u16,
    dst: Result<IpAddr, String>,
    dport: u16,
    iif: Dev,
    oif: Dev,
    uid: Result<u32, String>,
    gid: Result<u32, String>,
    mark: u32,
    connmark: Result<u32, String>,
}

enum Eval {
    Yes,
    No,
    Unknown(String),
}

fn yes_if(b: bool) -> Eval {
    if b { Eval::Yes } else { Eval::No }
}

/// How one table's pass over a hook ended.
enum Outcome {
    /// The packet goes on to the next table (ACCEPT, policy ACCEPT).
    Continue,
    Drop,
    Deliver(Verdict),
}

struct Walker<'a> {
    nf: &'a Netfilter,
    packet: &'a Packet,
    ids: &'a Ids,
    state: State,
    steps: Vec<Visit>,
}

/// Traces `packet` through `nf`.
pub fn trace(nf: &Netfilter, packet: &Packet, ids: &Ids) -> Result<Trace, TraceError> {
    if packet.family() != nf.family {
        return Err(TraceError {
            at: None,
            why: format!("the packet is {} but the rules are {}", packet.family(), nf.family),
        });
    }
    let loopback_dst = packet.dst.ip().is_loopback();
    let owner_unknown = |what: &str| format!("the packet's owner {what} is not known (give {what}=N)");
    let state = State {
        src: packet.src.ip(),
        sport: packet.src.port(),
        dst: Ok(packet.dst.ip()),
        dport: packet.dst.port(),
        iif: match (packet.dir, &packet.iif) {
            (Direction::Out, _) => Dev::Absent,
            (Direction::In, Some(i)) => Dev::Named(i.clone()),
            (Direction::In, None) => Dev::Unknown("the input interface is not known (give iif=NAME)".into()),
        },
        oif: match (packet.dir, &packet.oif) {
            (Direction::In, _) => Dev::Absent,
            (Direction::Out, Some(o)) => Dev::Named(o.clone()),
            // A loopback destination is always routed through lo.
            (Direction::Out, None) if loopback_dst => Dev::Named("lo".into()),
            (Direction::Out, None) => Dev::Unknown("the output interface is not known (give oif=NAME)".into()),
        },
        uid: packet.uid.ok_or_else(|| owner_unknown("uid")),
        gid: packet.gid.ok_or_else(|| owner_unknown("gid")),
        mark: packet.mark,
        connmark: match (packet.connmark, packet.state) {
            (Some(m), _) => Ok(m),
            (None, ConnState::New) => Ok(0),
            (None, s) => Err(format!(
                "the connection mark of a {} connection is not known (give connmark=N)",
                s.as_str()
            )),
        },
    };
    let mut w = Walker {
        nf,
        packet,
        ids,
        state,
        steps: Vec::new(),
    };
    use TableName::*;
    const LOCAL_OUT: [(Hook, &[TableName]); 2] = [
        (Hook::Output, &[Raw, Mangle, Nat, Filter]),
        (Hook::Postrouting, &[Mangle, Nat]),
    ];
    const LOCAL_IN: [(Hook, &[TableName]); 2] = [
        (Hook::Prerouting, &[Raw, Mangle, Nat]),
        (Hook::Input, &[Mangle, Filter, Nat]),
    ];
    // A packet arriving on lo was sent by this host: nat decided its connection at OUTPUT and
    // POSTROUTING, and is not consulted again.
    let from_lo = matches!(&w.state.iif, Dev::Named(i) if i == "lo");
    let passes: &[(_, bool)] = match packet.dir {
        Direction::Out => &[(LOCAL_OUT, false)],
        Direction::In => &[(LOCAL_IN, from_lo)],
    };
    let mut delivered: Option<Verdict> = None;
    let mut passes = passes.to_vec();
    let mut i = 0;
    while let Some(&(hooks, nat_decided)) = passes.get(i) {
        i += 1;
        for (hook, tables) in hooks {
            for &table in tables {
                if !w.nf.has_hook(table, hook) {
                    continue;
                }
                let skip = if table != Nat {
                    None
                } else if nat_decided {
                    Some(
                        "arriving on lo, the packet was sent by this host: nat decided its connection at OUTPUT"
                            .to_string(),
                    )
                } else if packet.state != ConnState::New {
                    Some(format!(
                        "nat sees only the first packet of a new connection; this one is {}",
                        packet.state.as_str()
                    ))
                } else {
                    None
                };
                if let Some(why) = skip {
                    w.steps.push(Visit {
                        table: table_name(nf.backend, table),
                        chain: hook_name(nf.backend, hook).into(),
                        rule: None,
                        text: None,
                        effect: Effect::Skipped { why },
                    });
                    continue;
                }
                match w.walk(table, hook)? {
                    Outcome::Continue => {}
                    Outcome::Drop => {
                        return Ok(Trace {
                            verdict: Verdict::drop(),
                            steps: w.steps,
                            notes: Vec::new(),
                        });
                    }
                    Outcome::Deliver(v) => {
                        delivered.get_or_insert(v);
                    }
                }
            }
        }
        // Sent through lo, the packet arrives again on lo: PREROUTING and INPUT follow.
        if packet.dir == Direction::Out && passes.len() == 1 {
            match &w.state.oif {
                Dev::Named(o) if o == "lo" => {
                    w.steps.push(Visit {
                        table: "lo".into(),
                        chain: String::new(),
                        rule: None,
                        text: None,
                        effect: Effect::Loopback,
                    });
                    w.state.iif = Dev::Named("lo".into());
                    w.state.oif = Dev::Absent;
                    passes.push((LOCAL_IN, true));
                }
                Dev::Unknown(why) => {
                    return Err(TraceError {
                        at: None,
                        why: format!("cannot tell whether the packet loops back through lo: {why}"),
                    });
                }
                _ => {}
            }
        }
    }
    Ok(Trace {
        verdict: delivered.unwrap_or_else(Verdict::accept),
        steps: w.steps,
        notes: Vec::new(),
    })
}

impl Walker<'_> {
    fn step(&mut self, table: TableName, chain: &str, rule: Option<(usize, &str)>, effect: Effect) {
        self.steps.push(Visit {
            table: table_name(self.nf.backend, table),
            chain: chain.into(),
            rule: rule.map(|r| r.0),
            text: rule.map(|r| r.1.to_string()),
            effect,
        });
    }

    /// One table's pass over one hook.
    fn walk(&mut self, table: TableName, hook: Hook) -> Result<Outcome, TraceError> {
        let nf = self.nf;
        let builtin = hook_name(nf.backend, hook);
        // (chain name, index of the next rule)
        let mut stack: Vec<(String, usize)> = vec![(builtin.to_string(), 0)];
        loop {
            let (chain, index) = stack.last().cloned().expect("the built-in chain stays on the stack");
            let entries = nf.chain(table, &chain).unwrap_or_default();
            let Some(entry) = entries.get(index) else {
                if stack.len() == 1 {
                    return Ok(self.policy(table, builtin));
                }
                self.step(table, &chain, None, Effect::EndOfChain);
                stack.pop();
                continue;
            };
            stack.last_mut().expect("non-empty").1 += 1;
            let n = index + 1;
            let at = |text: &str| Some(format!("{table}/{chain} #{n} '{text}'"));
            let (rule, text, shown) = match entry {
                Entry::Rule { rule, text, shown } => (rule, text.as_str(), shown),
                Entry::Opaque { text, why } => {
                    return Err(TraceError {
                        at: at(text),
                        why: format!("the tracer does not understand this rule ({why})"),
                    });
                }
            };
            let fail = |why: String| TraceError { at: at(text), why };
            if let Some(because) = self.matches(rule, shown, table, hook).map_err(fail)? {
                self.step(table, &chain, Some((n, text)), Effect::NoMatch { because });
                continue;
            }
            let fail = |why: String| TraceError { at: at(text), why };
            match &rule.target {
                Target::Jump(c) => {
                    let next = chain_name(nf.backend, *c);
                    if nf.chain(table, next).is_none() {
                        return Err(fail(format!("chain {next} does not exist in the {table} table")));
                    }
                    if stack.len() >= MAX_DEPTH {
                        return Err(fail(format!("more than {MAX_DEPTH} nested jumps (a loop?)")));
                    }
                    self.step(table, &chain, Some((n, text)), Effect::Jump { chain: next.into() });
                    stack.push((next.to_string(), 0));
                }
                Target::Return => {
                    self.step(table, &chain, Some((n, text)), Effect::Return);
                    stack.pop();
                    if stack.is_empty() {
                        return Ok(self.policy(table, builtin));
                    }
                }
                Target::Accept => {
                    self.step(table, &chain, Some((n, text)), Effect::Accept);
                    return Ok(Outcome::Continue);
                }
                Target::Drop => {
                    self.step(table, &chain, Some((n, text)), Effect::Drop);
                    return Ok(Outcome::Drop);
                }
                Target::Redirect { port } => {
                    if table != TableName::Nat || !matches!(hook, Hook::Prerouting | Hook::Output) {
                        return Err(fail("REDIRECT works only in nat PREROUTING and OUTPUT".into()));
                    }
                    let port = port.get();
                    self.state.dport = port;
                    let destination = if hook == Hook::Output {
                        // Locally generated: to the loopback address, rerouted through lo.
                        let lo = match nf.family {
                            Family::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
                            Family::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
                        };
                        self.state.dst = Ok(lo);
                        self.state.oif = Dev::Named("lo".into());
                        std::net::SocketAddr::new(lo, port).to_string()
                    } else {
                        self.state.dst = Err(
                            "after REDIRECT in PREROUTING the destination is an address of the input interface, which the tracer does not know"
                                .into(),
                        );
                        format!("port {port} of the input interface's address")
                    };
                    self.step(table, &chain, Some((n, text)), Effect::Redirect { port, destination });
                    return Ok(Outcome::Deliver(Verdict::redirect(port)));
                }
                Target::Tproxy { mark, port } => {
                    if table != TableName::Mangle || hook != Hook::Prerouting {
                        return Err(fail("TPROXY works only in mangle PREROUTING".into()));
                    }
                    self.state.mark = mark.0;
                    let port = port.get();
                    self.step(table, &chain, Some((n, text)), Effect::Tproxy { port, mark: mark.0 });
                    return Ok(Outcome::Deliver(Verdict::tproxy(port)));
                }
                Target::SetMark(m) => {
                    self.set_mark(m.0, hook);
                    self.step(table, &chain, Some((n, text)), Effect::SetMark { mark: m.0 });
                }
                Target::SaveMark => {
                    self.state.connmark = Ok(self.state.mark);
                    let connmark = self.state.mark;
                    self.step(table, &chain, Some((n, text)), Effect::SaveMark { connmark });
                }
                Target::RestoreMark => {
                    let mark = self.state.connmark.clone().map_err(fail)?;
                    self.set_mark(mark, hook);
                    self.step(table, &chain, Some((n, text)), Effect::RestoreMark { mark });
                }
                Target::CtZone(zone) => {
                    if table != TableName::Raw {
                        return Err(fail("CT works only in the raw table".into()));
                    }
                    self.step(table, &chain, Some((n, text)), Effect::CtZone { zone: *zone });
                }
            }
        }
    }

    fn policy(&mut self, table: TableName, builtin: &str) -> Outcome {
        let policy = self.nf.policy(table, builtin);
        self.step(table, builtin, None, Effect::Policy { policy });
        match policy {
            Policy::Accept => Outcome::Continue,
            Policy::Drop => Outcome::Drop,
        }
    }

    /// A new packet mark. In OUTPUT the kernel reroutes a packet whose mark changed: one to a
    /// local address stays on lo, one with a mark policy routing sends to lo goes there; with
    /// the plan's routes (no other policy rule) any other keeps its route, with a dump's rules
    /// (routing unknown) it may leave through another interface.
    fn set_mark(&mut self, mark: u32, hook: Hook) {
        let changed = mark != self.state.mark;
        self.state.mark = mark;
        if changed && hook == Hook::Output && self.nf.local_marks.contains(&mark) {
            // Policy routing: this mark looks up a table whose default route is local (lo).
            self.state.oif = Dev::Named("lo".into());
        } else if changed
            && hook == Hook::Output
            && !self.nf.routes_known
            && !matches!(&self.state.oif, Dev::Named(o) if o == "lo")
        {
            self.state.oif = Dev::Unknown(
                "the output interface may have changed: the packet was rerouted after its mark changed".into(),
            );
        }
    }

    /// `Ok(None)` when every match holds, `Ok(Some(match))` naming the first that fails, `Err`
    /// when the rule cannot be decided.
    fn matches(&self, rule: &Rule, shown: &[String], table: TableName, hook: Hook) -> Result<Option<String>, String> {
        let mut unknown: Option<String> = None;
        let mut failed: Option<String> = None;
        // Every match is evaluated (not only up to the first failure), so a rule that could not
        // have been loaded (an unknown owner name, conntrack in raw) is reported wherever it is.
        for (i, m) in rule.matches.iter().enumerate() {
            match self.eval(m, table, hook)? {
                Eval::Yes => {}
                Eval::No => {
                    failed.get_or_insert_with(|| shown.get(i).cloned().unwrap_or_default());
                }
                Eval::Unknown(why) => {
                    unknown.get_or_insert(why);
                }
            }
        }
        match (failed, unknown) {
            (Some(f), _) => Ok(Some(f)),
            (None, Some(why)) => Err(why),
            (None, None) => Ok(None),
        }
    }

    fn eval(&self, m: &Match, table: TableName, hook: Hook) -> Result<Eval, String> {
        let st = &self.state;
        let xor = |hit: bool, negated: bool| yes_if(hit != negated);
        let dev = |d: &Dev, iface: &crate::values::Iface| match d {
            Dev::Absent => Eval::No,
            Dev::Named(name) => yes_if(iface.matches(name)),
            Dev::Unknown(why) => Eval::Unknown(why.clone()),
        };
        let owner_ok = || {
            if matches!(hook, Hook::Output | Hook::Postrouting) {
                Ok(())
            } else {
                Err(format!(
                    "an owner match is valid only in OUTPUT and POSTROUTING, not {}",
                    hook.as_str()
                ))
            }
        };
        Ok(match m {
            Match::InIface(i) => dev(&st.iif, i),
            Match::OutIface(i) => dev(&st.oif, i),
            Match::Protocol(p) => yes_if(*p == self.packet.proto),
            Match::Source { negated, cidr } => xor(cidr.contains(&st.src), *negated),
            Match::Destination { negated, cidr } => match &st.dst {
                Ok(ip) => xor(cidr.contains(ip), *negated),
                Err(why) => Eval::Unknown(why.clone()),
            },
            Match::DestinationIn(cidrs) => match &st.dst {
                Ok(ip) => yes_if(cidrs.iter().any(|c| c.contains(ip))),
                Err(why) => Eval::Unknown(why.clone()),
            },
            Match::SourcePort { negated, port } => xor(port.contains(st.sport), *negated),
            Match::DestinationPort { negated, port } => xor(port.contains(st.dport), *negated),
            Match::DestinationPorts { negated, ports } => xor(ports.iter().any(|p| p.contains(st.dport)), *negated),
            Match::UidOwner { negated, owner } => {
                owner_ok()?;
                let want = self.ids.resolve(owner, false)?;
                match &st.uid {
                    Ok(uid) => xor(*uid == want, *negated),
                    Err(why) => Eval::Unknown(why.clone()),
                }
            }
            Match::GidOwner { negated, owner } => {
                owner_ok()?;
                let want = self.ids.resolve(owner, true)?;
                match &st.gid {
                    Ok(gid) => xor(*gid == want, *negated),
                    Err(why) => Eval::Unknown(why.clone()),
                }
            }
            Match::ConntrackState(states) => {
                if table == TableName::Raw {
                    return Err("the raw table runs before connection tracking; a conntrack state match cannot be decided there".into());
                }
                let state = match self.packet.state {
                    ConnState::New => CtState::New,
                    ConnState::Established => CtState::Established,
                    ConnState::Related => CtState::Related,
                    ConnState::Invalid => CtState::Invalid,
                };
                yes_if(states.contains(&state))
            }
            Match::Mark { negated, mark } => xor(st.mark == mark.0, *negated),
            Match::ConnMark(mark) => {
                if table == TableName::Raw {
                    return Err(
                        "the raw table runs before connection tracking; the connection mark is not known there".into(),
                    );
                }
                match &st.connmark {
                    Ok(cm) => yes_if(*cm == mark.0),
                    Err(why) => Eval::Unknown(why.clone()),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::parse::{Strictness, parse_save};

    /// The planned rules of `meshcap render ARGS` for `family`.
    fn planned(args: &[&str], family: Family) -> Netfilter {
        let plan = crate::plan::testing::plan(args);
        Netfilter::from_plan(&plan, family, false).unwrap()
    }

    fn run(nf: &Netfilter, packet: &str) -> Result<Trace, TraceError> {
        trace(nf, &Packet::parse(packet).unwrap(), &Ids::default())
    }

    fn verdict(args: &[&str], packet: &str) -> Verdict {
        let p = Packet::parse(packet).unwrap();
        let nf = planned(args, p.family());
        match trace(&nf, &p, &Ids::default()) {
            Ok(t) => t.verdict,
            Err(e) => panic!("{args:?} {packet}: {e}"),
        }
    }

    fn error(args: &[&str], packet: &str) -> String {
        let p = Packet::parse(packet).unwrap();
        let nf = planned(args, p.family());
        trace(&nf, &p, &Ids::default()).unwrap_err().to_string()
    }

    /// A typical sidecar: all inbound ports but the agent's, all outbound destinations.
    const SIDECAR: &[&str] = &[
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        "*",
        "-x",
        "",
        "-b",
        "*",
        "-d",
        "15090,15021,15020",
    ];
    const SIDECAR6: &[&str] = &["-i", "*", "-b", "*", "-d", "15090,15021,15020", "--ipv6"];
    const TPROXY: &[&str] = &["-m", "TPROXY", "-i", "*", "-b", "*", "-d", "15020", "--ipv6"];

    const APP_OUT: &str = "out tcp 198.51.100.2:40000 -> 203.0.113.7:80 uid=1000 gid=1000 oif=eth0";

    #[test]
    fn app_outbound_goes_to_15001() {
        assert_eq!(verdict(SIDECAR, APP_OUT), Verdict::redirect(15001));
        let t = run(&planned(SIDECAR, Family::V4), APP_OUT).unwrap();
        let last = t.steps.iter().rev().find(|s| s.rule.is_some()).unwrap();
        assert_eq!(
            last.to_string(),
            "nat/ISTIO_REDIRECT #1  -p tcp -j REDIRECT --to-ports 15001  =>  redirect to port 15001 (destination now 127.0.0.1:15001)"
        );
        assert_eq!(
            verdict(
                SIDECAR6,
                "out tcp [fd00::2]:40000 -> [fd00:1::7]:443 uid=1000 gid=1000 oif=eth0"
            ),
            Verdict::redirect(15001)
        );
        // UDP is not captured outbound (only TCP is redirected).
        assert_eq!(
            verdict(
                SIDECAR,
                "out udp 198.51.100.2:40000 -> 203.0.113.7:9999 uid=1000 gid=1000 oif=eth0"
            ),
            Verdict::accept()
        );
        // Later packets of the connection never see nat again.
        let t = run(&planned(SIDECAR, Family::V4), &format!("{APP_OUT} state=established")).unwrap();
        assert_eq!(t.verdict, Verdict::accept());
        assert!(matches!(t.steps[0].effect, Effect::Skipped { .. }), "{}", t.text());
    }

    #[test]
    fn proxy_is_exempt_by_uid_and_by_gid() {
        let by_uid = "out tcp 198.51.100.2:40000 -> 203.0.113.7:80 uid=1337 gid=1000 oif=eth0";
        assert_eq!(verdict(SIDECAR, by_uid), Verdict::accept());
        let by_gid = "out tcp 198.51.100.2:40000 -> 203.0.113.7:80 uid=1000 gid=1337 oif=eth0";
        assert_eq!(verdict(SIDECAR, by_gid), Verdict::accept());
        assert_eq!(
            verdict(&[SIDECAR, &["-u", "3,4", "-g", "5"]].concat(), by_uid),
            Verdict::redirect(15001)
        );
        assert_eq!(
            verdict(
                &[SIDECAR, &["-u", "3,4", "-g", "5"]].concat(),
                "out tcp 198.51.100.2:1 -> 203.0.113.7:80 uid=4 gid=9 oif=eth0"
            ),
            Verdict::accept()
        );
    }

    #[test]
    fn loopback_traffic() {
        // App to localhost: oif lo inferred, not captured.
        assert_eq!(
            verdict(SIDECAR, "out tcp 127.0.0.1:40000 -> 127.0.0.1:8080 uid=1000 gid=1000"),
            Verdict::accept()
        );
        assert_eq!(
            verdict(SIDECAR6, "out tcp [::1]:40000 -> [::1]:8080 uid=1000 gid=1000"),
            Verdict::accept()
        );
        // App to its own pod IP (through lo): not captured.
        let own = "out tcp 198.51.100.2:40000 -> 198.51.100.2:8080 uid=1000 gid=1000 oif=lo";
        assert_eq!(verdict(SIDECAR, own), Verdict::accept());
        // The proxy to its own pod IP: inbound capture.
        let proxy_own = "out tcp 198.51.100.2:40000 -> 198.51.100.2:8080 uid=1337 gid=1337 oif=lo";
        assert_eq!(verdict(SIDECAR, proxy_own), Verdict::redirect(15006));
        // ... but not to the tunnel port.
        let tunnel = "out tcp 198.51.100.2:40000 -> 198.51.100.2:15008 uid=1337 gid=1337 oif=lo";
        assert_eq!(verdict(SIDECAR, tunnel), Verdict::accept());
        // The proxy's passthrough source 127.0.0.6 / ::6 goes out as it is.
        let pass = "out tcp 127.0.0.6:40000 -> 198.51.100.2:8080 uid=1337 gid=1337 oif=lo";
        assert_eq!(verdict(SIDECAR, pass), Verdict::accept());
        let pass6 = "out tcp [::6]:40000 -> [fd00::2]:8080 uid=1337 gid=1337 oif=lo";
        assert_eq!(verdict(SIDECAR6, pass6), Verdict::accept());
        // An -i list with a loopback prefix keeps app loopback traffic in capture (no RETURN rule).
        let lb = ["-i", "127.1.2.3/32", "-b", ""];
        assert_eq!(
            verdict(&lb, "out tcp 127.0.0.1:4 -> 127.1.2.3:80 uid=1000 gid=1000"),
            Verdict::redirect(15001)
        );
    }

    #[test]
    fn inbound_redirect_and_exclusions() {
        let inb = |port: u16| format!("in tcp 203.0.113.9:5000 -> 198.51.100.2:{port} iif=eth0");
        assert_eq!(verdict(SIDECAR, &inb(8080)), Verdict::redirect(15006));
        assert_eq!(verdict(SIDECAR, &inb(15008)), Verdict::accept());
        assert_eq!(verdict(SIDECAR, &inb(15020)), Verdict::accept());
        assert_eq!(verdict(SIDECAR, &inb(15090)), Verdict::accept());
        // A port list captures only those ports.
        assert_eq!(verdict(&["-b", "8080,9000:9100"], &inb(9050)), Verdict::redirect(15006));
        assert_eq!(verdict(&["-b", "8080,9000:9100"], &inb(9101)), Verdict::accept());
        // No inbound ports: nothing captured inbound.
        assert_eq!(verdict(&["-b", ""], &inb(8080)), Verdict::accept());
        // UDP is never captured inbound.
        assert_eq!(
            verdict(SIDECAR, "in udp 203.0.113.9:5000 -> 198.51.100.2:8080 iif=eth0"),
            Verdict::accept()
        );
        // The after-REDIRECT destination is unknown but no later rule needs it.
        let t = run(&planned(SIDECAR, Family::V4), &inb(8080)).unwrap();
        assert!(
            t.text()
                .contains("redirect to port 15006 (destination now port 15006 of the input interface's address)")
        );
    }

    #[test]
    fn inbound_tproxy() {
        let inb = "in tcp 203.0.113.9:5000 -> 198.51.100.2:8080 iif=eth0";
        let t = run(&planned(TPROXY, Family::V4), inb).unwrap();
        assert_eq!(t.verdict, Verdict::tproxy(15006), "{}", t.text());
        assert!(t.steps.iter().any(|s| s.effect
            == Effect::Tproxy {
                port: 15006,
                mark: 1337
            }));
        assert_eq!(
            verdict(TPROXY, "in tcp [fd00::9]:5000 -> [fd00::2]:8080 iif=eth0"),
            Verdict::tproxy(15006)
        );
        assert_eq!(
            verdict(TPROXY, "in tcp 203.0.113.9:5000 -> 198.51.100.2:15020 iif=eth0"),
            Verdict::accept()
        );
        // Established: ISTIO_DIVERT marks and accepts; nat is skipped.
        let est = run(&planned(TPROXY, Family::V4), &format!("{inb} state=established")).unwrap();
        assert_eq!(est.verdict, Verdict::accept());
        assert!(
            est.steps.iter().any(|s| s.effect == Effect::SetMark { mark: 1337 }),
            "{}",
            est.text()
        );
        assert!(
            est.steps
                .iter()
                .any(|s| s.chain == "ISTIO_DIVERT" && s.effect == Effect::Accept)
        );
        // A packet already carrying the mark returns early, and its mark is saved on the connection.
        let marked = run(&planned(TPROXY, Family::V4), &format!("{inb} mark=1337")).unwrap();
        assert_eq!(marked.verdict, Verdict::accept(), "{}", marked.text());
        assert!(
            marked
                .steps
                .iter()
                .any(|s| s.effect == Effect::SaveMark { connmark: 1337 })
        );
        // The proxy's passthrough connection arriving on lo from 127.0.0.6 is not captured again.
        assert_eq!(
            verdict(TPROXY, "in tcp 127.0.0.6:5000 -> 198.51.100.2:8080 iif=lo"),
            Verdict::accept()
        );
        // Loopback traffic without the proxy's outbound mark is left alone; with it, captured.
        assert_eq!(
            verdict(TPROXY, "in tcp 198.51.100.2:5000 -> 198.51.100.2:8080 iif=lo"),
            Verdict::accept()
        );
        assert_eq!(
            verdict(TPROXY, "in tcp 198.51.100.2:5000 -> 198.51.100.2:8080 iif=lo mark=1338"),
            Verdict::tproxy(15006)
        );
    }

    #[test]
    fn tproxy_marks_flow_through_output() {
        // The proxy to its own pod IP through lo: mangle marks it 1338, nat sends it to 15006.
        let nf = planned(TPROXY, Family::V4);
        let t = run(
            &nf,
            "out tcp 198.51.100.2:40000 -> 198.51.100.2:8080 uid=1337 gid=1337 oif=lo",
        )
        .unwrap();
        assert_eq!(t.verdict, Verdict::redirect(15006), "{}", t.text());
        assert!(
            t.steps
                .iter()
                .any(|s| s.table == "mangle" && s.effect == Effect::SetMark { mark: 1338 })
        );
        // A reply of a TPROXY connection restores the connection's mark.
        let reply =
            "out tcp 198.51.100.2:8080 -> 203.0.113.9:5000 uid=1000 gid=1000 oif=eth0 state=established connmark=1337";
        let t = run(&nf, reply).unwrap();
        assert!(
            t.steps.iter().any(|s| s.effect == Effect::RestoreMark { mark: 1337 }),
            "{}",
            t.text()
        );
        // Without the connection mark the tracer refuses to guess.
        let e = run(
            &nf,
            "out tcp 198.51.100.2:8080 -> 203.0.113.9:5000 uid=1 gid=1 oif=eth0 state=established",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("mangle/OUTPUT #") && e.contains("connmark=N"), "{e}");
    }

    #[test]
    fn excluded_and_included_outbound() {
        let to = |dst: &str| {
            let src = if dst.starts_with('[') {
                "[fd00::2]"
            } else {
                "198.51.100.2"
            };
            format!("out tcp {src}:40000 -> {dst} uid=1000 gid=1000 oif=eth0")
        };
        let args = ["-i", "10.0.0.0/8,2001:db8::/32", "-x", "10.1.0.0/16", "--ipv6"];
        assert_eq!(verdict(&args, &to("10.2.3.4:80")), Verdict::redirect(15001));
        assert_eq!(verdict(&args, &to("10.1.3.4:80")), Verdict::accept());
        assert_eq!(verdict(&args, &to("11.0.0.1:80")), Verdict::accept());
        assert_eq!(verdict(&args, &to("[2001:db8::1]:80")), Verdict::redirect(15001));
        assert_eq!(verdict(&args, &to("[2001:db9::1]:80")), Verdict::accept());
        // Outbound ports: -q always captured, -o never.
        let args = ["-i", "10.0.0.0/8", "-q", "8000:8100", "-o", "9000"];
        assert_eq!(verdict(&args, &to("11.0.0.1:8050")), Verdict::redirect(15001));
        assert_eq!(verdict(&args, &to("10.0.0.1:9000")), Verdict::accept());
        assert_eq!(verdict(&args, &to("10.0.0.1:9001")), Verdict::redirect(15001));
    }

    #[test]
    fn excluded_and_virtual_interfaces() {
        let args = ["-i", "*", "-b", "*", "-c", "eth9", "-k", "veth+"];
        assert_eq!(
            verdict(&args, "out tcp 198.51.100.2:4 -> 203.0.113.7:80 uid=1 gid=1 oif=eth9"),
            Verdict::accept()
        );
        assert_eq!(
            verdict(&args, "in tcp 203.0.113.9:5 -> 198.51.100.2:8080 iif=eth9"),
            Verdict::accept()
        );
        assert_eq!(
            verdict(&args, "in tcp 203.0.113.9:5 -> 198.51.100.2:8080 iif=eth0"),
            Verdict::redirect(15006)
        );
        // Traffic from a virtual interface is treated as outbound.
        assert_eq!(
            verdict(&args, "in tcp 10.244.0.9:5 -> 203.0.113.7:80 iif=veth12"),
            Verdict::redirect(15001)
        );
        // With an -i list, only to those destinations.
        let args = ["-i", "10.96.0.0/12", "-b", "*", "-k", "eth1"];
        assert_eq!(
            verdict(&args, "in tcp 10.244.0.9:5 -> 10.96.0.1:80 iif=eth1"),
            Verdict::redirect(15001)
        );
        assert_eq!(
            verdict(&args, "in tcp 10.244.0.9:5 -> 10.200.0.1:80 iif=eth1"),
            Verdict::accept()
        );
        // TPROXY mode excludes interfaces in mangle too.
        let args = ["-m", "TPROXY", "-b", "*", "-c", "eth9"];
        assert_eq!(
            verdict(&args, "in tcp 203.0.113.9:5 -> 198.51.100.2:8080 iif=eth9"),
            Verdict::accept()
        );
    }

    #[test]
    fn dns_capture() {
        let dir = std::env::temp_dir().join(format!("meshcap-trace-dns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.96.0.10\nnameserver fd00::a\n").unwrap();
        let resolv = resolv.to_str().unwrap().to_string();
        let args = ["--redirect-dns", "--resolv-conf", &resolv, "--ipv6", "-i", "*"];
        let q = |proto: &str, dst: &str, uid: u32| {
            let src = if dst.starts_with('[') {
                "[fd00::2]"
            } else {
                "198.51.100.2"
            };
            format!("out {proto} {src}:3333 -> {dst} uid={uid} gid={uid} oif=eth0")
        };
        assert_eq!(
            verdict(&args, &q("udp", "10.96.0.10:53", 1000)),
            Verdict::redirect(15053)
        );
        assert_eq!(
            verdict(&args, &q("tcp", "10.96.0.10:53", 1000)),
            Verdict::redirect(15053)
        );
        assert_eq!(
            verdict(&args, &q("udp", "[fd00::a]:53", 1000)),
            Verdict::redirect(15053)
        );
        // Other servers are not captured (UDP passes; TCP goes to the outbound capture).
        assert_eq!(verdict(&args, &q("udp", "8.8.8.8:53", 1000)), Verdict::accept());
        assert_eq!(verdict(&args, &q("tcp", "8.8.8.8:53", 1000)), Verdict::redirect(15001));
        // The proxy's own DNS is not captured; its conntrack zone is set in raw.
        let t = run(&planned(&args, Family::V4), &q("udp", "10.96.0.10:53", 1337)).unwrap();
        assert_eq!(t.verdict, Verdict::accept());
        assert!(
            t.steps
                .iter()
                .any(|s| s.table == "raw" && s.effect == Effect::CtZone { zone: 1 }),
            "{}",
            t.text()
        );
        // Capture all DNS.
        let all = ["--redirect-dns", "--capture-all-dns", "-i", "*"];
        assert_eq!(verdict(&all, &q("udp", "8.8.8.8:53", 1000)), Verdict::redirect(15053));
        assert_eq!(verdict(&all, &q("udp", "8.8.8.8:53", 1337)), Verdict::accept());
        // DNS to a local resolver on lo by the app.
        assert_eq!(
            verdict(&all, "out udp 127.0.0.1:3333 -> 127.0.0.53:53 uid=1000 gid=1000"),
            Verdict::redirect(15053)
        );
        // A DNS answer arriving from a server goes into conntrack zone 1 in raw PREROUTING.
        let t = run(
            &planned(&all, Family::V4),
            "in udp 8.8.8.8:53 -> 198.51.100.2:3333 iif=eth0 state=established",
        )
        .unwrap();
        assert!(
            t.steps.iter().any(|s| s.effect == Effect::CtZone { zone: 1 }),
            "{}",
            t.text()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn drop_invalid() {
        let args = ["--drop-invalid", "-b", "*"];
        assert_eq!(
            verdict(
                &args,
                "in tcp 203.0.113.9:5 -> 198.51.100.2:8080 iif=eth0 state=invalid"
            ),
            Verdict::drop()
        );
        assert_eq!(
            verdict(&args, "in tcp 203.0.113.9:5 -> 198.51.100.2:8080 iif=eth0"),
            Verdict::redirect(15006)
        );
    }

    #[test]
    fn owner_groups() {
        // Include list: groups outside it are not captured.
        let p = |gid: u32| format!("out tcp 198.51.100.2:4 -> 203.0.113.7:80 uid=1000 gid={gid} oif=eth0");
        let nf = |env: (&str, &str)| {
            let env = crate::sys::host::Env::from_pairs([env]);
            let flags = crate::cli::CaptureFlags {
                service_cidr: Some("*".into()),
                ..Default::default()
            };
            let (_, plan) = crate::plan::for_flags(&flags, None, "/nonexistent", &env).unwrap();
            Netfilter::from_ruleset(&plan.ruleset(Family::V4))
        };
        let only = nf(("ISTIO_OUTBOUND_OWNER_GROUPS", "202,java"));
        let ids = Ids {
            passwd: None,
            group: Some("java:x:2001:\n".into()),
        };
        let go = |nf: &Netfilter, gid| trace(nf, &Packet::parse(&p(gid)).unwrap(), &ids).map(|t| t.verdict);
        assert_eq!(go(&only, 202).unwrap(), Verdict::redirect(15001));
        assert_eq!(go(&only, 2001).unwrap(), Verdict::redirect(15001));
        assert_eq!(go(&only, 7).unwrap(), Verdict::accept());
        // A name that does not resolve: iptables could not have loaded the rule.
        let e = trace(&only, &Packet::parse(&p(7)).unwrap(), &Ids::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("group 'java' is not in /etc/group"), "{e}");
        let except = nf(("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888"));
        assert_eq!(go(&except, 888).unwrap(), Verdict::accept());
        assert_eq!(go(&except, 889).unwrap(), Verdict::redirect(15001));
    }

    #[test]
    fn refuses_to_guess() {
        // No uid: the owner rule cannot be decided.
        let e = error(SIDECAR, "out tcp 198.51.100.2:4 -> 203.0.113.7:80 gid=1000 oif=eth0");
        assert!(
            e.starts_with("cannot evaluate nat/ISTIO_OUTPUT #4 '-m owner --uid-owner 1337 -j RETURN'"),
            "{e}"
        );
        assert!(e.contains("give uid=N"), "{e}");
        // No oif (and not a loopback destination): rules #1 and #2 are decided by known facts
        // (the source is not 127.0.0.6; uid 1 is not 1337), #3 needs the interface.
        let e = error(SIDECAR, "out tcp 198.51.100.2:4 -> 203.0.113.7:80 uid=1 gid=1");
        assert!(
            e.starts_with("cannot evaluate nat/ISTIO_OUTPUT #3 '-o lo -m owner ! --uid-owner 1337 -j RETURN'"),
            "{e}"
        );
        assert!(e.contains("give oif=NAME"), "{e}");
        // No iif for an arriving packet.
        let e = error(&["-b", "*", "-c", "eth9"], "in tcp 203.0.113.9:5 -> 198.51.100.2:80");
        assert!(
            e.contains("nat/PREROUTING #1 '-i eth9 -j RETURN'") && e.contains("iif=NAME"),
            "{e}"
        );
        // IPv6 packet, IPv4 rules.
        let nf = planned(SIDECAR, Family::V4);
        let e = run(&nf, "out tcp [fd00::2]:4 -> [fd00::3]:80 uid=1 gid=1 oif=eth0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("IPv6") && e.contains("IPv4"), "{e}");
    }

    const DUMP: &str = "\
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FW - [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -m comment --comment \"kube\" -j KUBE-FW
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 22 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
COMMIT
";

    #[test]
    fn dumps_with_foreign_rules_and_policies() {
        let dump = parse_save(DUMP, Strictness::Lenient).unwrap();
        let nf = Netfilter::from_save(&dump, Family::V4).unwrap();
        // Port 22: not captured, accepted by filter INPUT before the foreign rule.
        let t = run(
            &nf,
            "in tcp 203.0.113.9:5 -> 198.51.100.2:22 iif=eth0 state=established",
        )
        .unwrap();
        assert_eq!(t.verdict, Verdict::accept(), "{}", t.text());
        // Port 8080 reaches the foreign rule in filter INPUT: an error naming it, no guess.
        let e = run(
            &nf,
            "in tcp 203.0.113.9:5 -> 198.51.100.2:8080 iif=eth0 state=established",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("filter/INPUT #2 '-m comment --comment kube -j KUBE-FW'"),
            "{e}"
        );
        // Conntrack state in raw cannot be decided.
        let raw = "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m conntrack --ctstate NEW -j ACCEPT\nCOMMIT\n";
        let nf_raw = Netfilter::from_save(&parse_save(raw, Strictness::Lenient).unwrap(), Family::V4).unwrap();
        let e = run(&nf_raw, "in tcp 203.0.113.9:5 -> 198.51.100.2:22 iif=eth0")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("raw/PREROUTING #1") && e.contains("before connection tracking"),
            "{e}"
        );
        // A DROP policy drops.
        let text = DUMP.replace("-A INPUT -m comment --comment \"kube\" -j KUBE-FW\n", "");
        let nf = Netfilter::from_save(&parse_save(&text, Strictness::Lenient).unwrap(), Family::V4).unwrap();
        let t = run(
            &nf,
            "in tcp 203.0.113.9:5 -> 198.51.100.2:8080 iif=eth0 state=established",
        )
        .unwrap();
        assert_eq!(t.verdict, Verdict::drop(), "{}", t.text());
        assert_eq!(t.steps.last().unwrap().to_string(), "filter/INPUT: policy DROP");
    }

    #[test]
    fn rules_are_walked_in_kernel_order() {
        // `-k eth1,eth2 -i '*'`: the four PREROUTING inserts end up eth2, eth1 (ISTIO_REDIRECT),
        // eth2, eth1 (RETURN); the first visited for eth1 is rule #2.
        let args = ["-k", "eth1,eth2", "-i", "*"];
        let t = run(&planned(&args, Family::V4), "in tcp 10.0.0.9:5 -> 10.0.0.1:80 iif=eth1").unwrap();
        assert_eq!(
            t.steps[0].to_string(),
            "nat/PREROUTING #1  -i eth2 -j ISTIO_REDIRECT  =>  no match (-i eth2)"
        );
        assert_eq!(
            t.steps[1].to_string(),
            "nat/PREROUTING #2  -i eth1 -j ISTIO_REDIRECT  =>  jump to ISTIO_REDIRECT"
        );
        assert_eq!(t.verdict, Verdict::redirect(15001));
    }

    fn planned_nft(args: &[&str], family: Family) -> Netfilter {
        let plan = crate::plan::testing::plan(args);
        Netfilter::from_plan(&plan, family, true).unwrap()
    }

    #[test]
    fn nftables_ruleset_in_its_own_names() {
        let nf = planned_nft(SIDECAR, Family::V4);
        let t = run(&nf, APP_OUT).unwrap();
        assert_eq!(t.verdict, Verdict::redirect(15001));
        assert_eq!(
            t.steps[0].to_string(),
            "istio-proxy-nat/output #1  counter jump istio-output  =>  jump to istio-output"
        );
        assert_eq!(
            t.steps[1].to_string(),
            "istio-proxy-nat/istio-output #1  oifname lo ip saddr 127.0.0.6/32 counter return  =>  no match (oifname lo)"
        );
        // The IPv6 twin of a rule is invisible to an IPv4 packet, and vice versa.
        let nf6 = planned_nft(TPROXY, Family::V6);
        let t = run(&nf6, "in tcp [fd00::9]:5000 -> [fd00::2]:8080 iif=eth0").unwrap();
        assert_eq!(t.verdict, Verdict::tproxy(15006));
        assert!(!t.text().contains("127.0.0.6"), "{}", t.text());
        assert!(t.text().contains("ip6 saddr ::6/128"), "{}", t.text());
        // Istio's nftables drop-invalid is TCP only (istio-compat §8.7): a UDP packet in state INVALID
        // is dropped by the iptables rules but not by the nftables ones.
        let args = ["--drop-invalid", "-b", "*"];
        let udp = "in udp 203.0.113.9:5 -> 198.51.100.2:8080 iif=eth0 state=invalid";
        assert_eq!(run(&planned(&args, Family::V4), udp).unwrap().verdict, Verdict::drop());
        assert_eq!(
            run(&planned_nft(&args, Family::V4), udp).unwrap().verdict,
            Verdict::accept()
        );
        let tcp = "in tcp 203.0.113.9:5 -> 198.51.100.2:8080 iif=eth0 state=invalid";
        assert_eq!(
            run(&planned_nft(&args, Family::V4), tcp).unwrap().verdict,
            Verdict::drop()
        );
    }

    #[test]
    fn packets_sent_through_lo_come_back_in() {
        // TPROXY mode, the proxy to its own pod IP's tunnel port: nat OUTPUT exempts 15008, but
        // mangle OUTPUT marks it 1338, and back in through lo mangle PREROUTING tproxies it
        // (the kernel does the same: see the traffic test inbound_tproxy).
        let t = run(
            &planned(TPROXY, Family::V4),
            "out tcp 198.51.100.2:40000 -> 198.51.100.2:15008 uid=1337 gid=1337 oif=lo",
        )
        .unwrap();
        assert_eq!(t.verdict, Verdict::tproxy(15006), "{}", t.text());
        let lo = t.steps.iter().position(|s| s.effect == Effect::Loopback).unwrap();
        assert!(
            t.steps[lo + 1..]
                .iter()
                .all(|s| s.table != "nat" || matches!(s.effect, Effect::Skipped { .. }))
        );
        // Arriving on lo, nat is not consulted again (it decided at OUTPUT).
        let t = run(
            &planned(SIDECAR, Family::V4),
            "in tcp 198.51.100.2:5 -> 198.51.100.2:8080 iif=lo",
        )
        .unwrap();
        assert_eq!(t.verdict, Verdict::accept(), "{}", t.text());
        assert!(matches!(&t.steps[0].effect, Effect::Skipped { why } if why.contains("arriving on lo")));
        // Leaving through eth0: no second pass; redirected (to 127.0.0.1), through lo.
        let proxy = "out tcp 198.51.100.2:4 -> 203.0.113.7:80 uid=1337 gid=1337 oif=eth0";
        let t = run(&planned(SIDECAR, Family::V4), proxy).unwrap();
        assert!(!t.steps.iter().any(|s| s.effect == Effect::Loopback), "{}", t.text());
        let t = run(&planned(SIDECAR, Family::V4), APP_OUT).unwrap();
        assert!(t.steps.iter().any(|s| s.effect == Effect::Loopback), "{}", t.text());
    }

    #[test]
    fn json_shape() {
        let t = run(&planned(SIDECAR, Family::V4), APP_OUT).unwrap();
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["verdict"], serde_json::json!({"action": "redirect", "port": 15001}));
        assert_eq!(
            v["steps"][0],
            serde_json::json!({"table": "nat", "chain": "OUTPUT", "rule": 1, "text": "-j ISTIO_OUTPUT", "effect": {"type": "jump", "chain": "ISTIO_OUTPUT"}})
        );
        let v = serde_json::to_value(Verdict::accept()).unwrap();
        assert_eq!(v, serde_json::json!({"action": "accept"}));
    }
}
