//! The JSON spelling of a plan (`meshcap render --format json`): a versioned, stable wire shape.
//!
//! The wire types here are their own serde structs, decoupled from the model: renaming or
//! reshaping a model type must not change the document. Version 1 is documented in docs/json.md.
//! Fields are only ever added within a version; consumers should ignore fields
//! they do not know. [`Document::rulesets`] reads a document back into the model, so
//! `from_json(to_json(plan)) == plan` is testable and the format is a usable input.

use serde::{Deserialize, Serialize};

use crate::iptables::render as iptables;
use crate::model::{
    ChainName, CtState, Hook, IstioChain, Match, Op, Position, Proto, Rule, Ruleset, Table, TableName, Target,
};
use crate::plan::{Plan, Routes};
use crate::values::{Cidr, Family, Iface, Mark, Owner, Port, PortSpec};

/// The document version this module writes and reads.
pub(crate) const VERSION: u32 = 1;

/// The whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Always [`VERSION`].
    pub(crate) version: u32,
    /// One entry per rendered family, IPv4 first.
    pub(crate) families: Vec<FamilyDoc>,
    /// Routing state programmed besides the rules.
    pub(crate) routes: RoutesDoc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FamilyName {
    Ipv4,
    Ipv6,
}

/// One family's rules (what one `iptables-restore` / `ip6tables-restore` receives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FamilyDoc {
    pub(crate) family: FamilyName,
    /// Tables with at least one rule, in payload order (`filter`, `mangle`, `nat`, `raw`).
    pub(crate) tables: Vec<TableDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TableDoc {
    pub(crate) name: String,
    /// meshcap's chains in declaration (`-N`) order, then the built-in chains that get rules,
    /// in hook order; each with its rules in kernel order (inserts applied).
    pub(crate) chains: Vec<ChainDoc>,
    /// The operations in the order the restore applies them.
    pub(crate) ops: Vec<OpDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChainDoc {
    pub(crate) name: String,
    /// True for the kernel's chains (`PREROUTING`, `OUTPUT`, ...), false for created ones.
    pub(crate) builtin: bool,
    pub(crate) rules: Vec<RuleDoc>,
}

/// One operation: a rule appended to a chain or inserted at a 1-based position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OpDoc {
    pub(crate) chain: String,
    pub(crate) position: PositionDoc,
    pub(crate) rule: RuleDoc,
    /// The restore line, e.g. `-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN`.
    pub(crate) iptables: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PositionDoc {
    Append,
    Insert(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RuleDoc {
    /// All matches must hold; in the order the rule writes them.
    pub(crate) matches: Vec<MatchDoc>,
    pub(crate) target: TargetDoc,
    /// The rule as iptables arguments after the chain name, e.g. `-d 127.0.0.1/32 -j RETURN`.
    pub(crate) iptables: String,
}

/// A port (`15008`) or an inclusive range as the rule writes it (`{"from": 9000, "to": 9100}`;
/// `a:a` stays a range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum PortRange {
    Single(u16),
    Range { from: u16, to: u16 },
}

/// A user or group: a number, or a name resolved by iptables when the rule is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OwnerDoc {
    Id(u32),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum MatchDoc {
    InInterface {
        name: String,
    },
    OutInterface {
        name: String,
    },
    Protocol {
        protocol: String,
    },
    Source {
        negated: bool,
        cidr: String,
    },
    Destination {
        negated: bool,
        cidr: String,
    },
    /// The destination is in one of the prefixes (an nft anonymous set, `--compact` only).
    DestinationIn {
        cidrs: Vec<String>,
    },
    SourcePort {
        negated: bool,
        port: PortRange,
    },
    DestinationPort {
        negated: bool,
        port: PortRange,
    },
    DestinationPorts {
        negated: bool,
        ports: Vec<PortRange>,
    },
    UidOwner {
        negated: bool,
        owner: OwnerDoc,
    },
    GidOwner {
        negated: bool,
        owner: OwnerDoc,
    },
    ConntrackState {
        states: Vec<String>,
    },
    Mark {
        negated: bool,
        mark: u32,
    },
    ConnMark {
        mark: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum TargetDoc {
    Jump { chain: String },
    Return,
    Accept,
    Drop,
    Redirect { port: u16 },
    Tproxy { mark: u32, mask: u32, port: u16 },
    SetMark { mark: u32 },
    SaveMark,
    RestoreMark,
    CtZone { zone: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RoutesDoc {
    /// `::6/128` is added to `lo`.
    pub(crate) v6_passthrough_address: bool,
    /// TPROXY policy routing, when inbound capture uses TPROXY.
    pub(crate) tproxy: Option<TproxyRoutesDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TproxyRoutesDoc {
    pub(crate) mark: u32,
    pub(crate) table: u32,
    pub(crate) families: Vec<FamilyName>,
}

/// The document for `plan`, restricted to `families` (each must be one the plan renders): the
/// reference [`write`] streams byte for byte (tests only; `render` writes through [`write`]).
#[cfg(test)]
pub(crate) fn document(plan: &Plan, families: &[Family]) -> Document {
    Document {
        version: VERSION,
        families: families.iter().map(|f| family_doc(&plan.ruleset(*f))).collect(),
        routes: routes_doc(&plan.routes),
    }
}

/// The document as pretty-printed JSON with a final newline, in memory (tests and library
/// users; the command streams it with [`write()`]).
pub fn render(plan: &Plan, families: &[Family]) -> String {
    let mut out = Vec::new();
    write(plan, families, &mut out).expect("writing to memory does not fail");
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// Writes the document, pretty-printed with a final newline, to `out` as it is produced: the
/// same bytes as serialising the plan's [`Document`], but one family's ruleset and one rule's
/// wire form at a time, so memory stays proportional to the plan, not to the text
/// (docs/performance.md).
pub fn write(plan: &Plan, families: &[Family], out: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut ser = serde_json::Serializer::pretty(&mut *out);
    DocumentView { plan, families }
        .serialize(&mut ser)
        .map_err(std::io::Error::from)?;
    out.write_all(b"\n")
}

/// A JSON array produced by an iterator when it is serialised (never collected).
struct Seq<F>(F);

impl<F, I> Serialize for Seq<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

/// [`Document`], field for field, produced while it is written.
struct DocumentView<'a> {
    plan: &'a Plan,
    families: &'a [Family],
}

impl Serialize for DocumentView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Document", 3)?;
        st.serialize_field("version", &VERSION)?;
        st.serialize_field(
            "families",
            &Seq(|| self.families.iter().map(|f| FamilyView(self.plan.ruleset(*f)))),
        )?;
        st.serialize_field("routes", &routes_doc(&self.plan.routes))?;
        st.end()
    }
}

/// [`FamilyDoc`] of one family's ruleset.
struct FamilyView(Ruleset);

impl Serialize for FamilyView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("FamilyDoc", 2)?;
        st.serialize_field("family", &family_name(self.0.family))?;
        st.serialize_field("tables", &Seq(|| self.0.tables.iter().map(TableView)))?;
        st.end()
    }
}

/// [`TableDoc`] of one table ([`table_doc`]'s chains and operations).
struct TableView<'a>(&'a Table);

impl Serialize for TableView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let table = self.0;
        let order = table.resolved_order();
        let mut chains: Vec<(ChainName, bool, &[usize])> = Vec::new();
        for c in table.declared_chains() {
            let name = ChainName::Istio(c);
            chains.push((name, false, order.get(&name).map_or(&[], Vec::as_slice)));
        }
        for h in Hook::ALL {
            let name = ChainName::Builtin(h);
            if let Some(rules) = order.get(&name) {
                chains.push((name, true, rules));
            }
        }
        let mut st = s.serialize_struct("TableDoc", 3)?;
        st.serialize_field("name", table.name.as_str())?;
        st.serialize_field(
            "chains",
            &Seq(|| {
                chains.iter().map(|&(name, builtin, rules)| ChainView {
                    name,
                    builtin,
                    rules,
                    table,
                })
            }),
        )?;
        st.serialize_field("ops", &Seq(|| table.ops.iter().map(op_doc)))?;
        st.end()
    }
}

/// [`ChainDoc`]: a chain's rules (indices into the table's operations, kernel order).
struct ChainView<'a> {
    name: ChainName,
    builtin: bool,
    rules: &'a [usize],
    table: &'a Table,
}

impl Serialize for ChainView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("ChainDoc", 3)?;
        st.serialize_field("name", self.name.as_str())?;
        st.serialize_field("builtin", &self.builtin)?;
        st.serialize_field(
            "rules",
            &Seq(|| self.rules.iter().map(|&i| rule_doc(&self.table.ops[i].rule))),
        )?;
        st.end()
    }
}

fn family_name(f: Family) -> FamilyName {
    match f {
        Family::V4 => FamilyName::Ipv4,
        Family::V6 => FamilyName::Ipv6,
    }
}

fn family_of(f: FamilyName) -> Family {
    match f {
        FamilyName::Ipv4 => Family::V4,
        FamilyName::Ipv6 => Family::V6,
    }
}

/// One family's part of the document.
#[cfg(test)]
pub(crate) fn family_doc(rs: &Ruleset) -> FamilyDoc {
    FamilyDoc {
        family: family_name(rs.family),
        tables: rs.tables.iter().map(table_doc).collect(),
    }
}

fn table_doc(table: &Table) -> TableDoc {
    let mut resolved = table.resolved();
    let mut chains: Vec<ChainDoc> = Vec::new();
    let mut take = |name: ChainName, builtin: bool| {
        if let Some(rules) = resolved.remove(&name) {
            chains.push(ChainDoc {
                name: name.as_str().to_string(),
                builtin,
                rules: rules.iter().map(rule_doc).collect(),
            });
        }
    };
    for c in table.declared_chains() {
        take(ChainName::Istio(c), false);
    }
    for h in Hook::ALL {
        take(ChainName::Builtin(h), true);
    }
    debug_assert!(resolved.is_empty(), "every resolved chain is declared or built in");
    TableDoc {
        name: table.name.as_str().to_string(),
        chains,
        ops: table.ops.iter().map(op_doc).collect(),
    }
}

/// The wire form of an operation.
fn op_doc(op: &Op) -> OpDoc {
    OpDoc {
        chain: op.chain.as_str().to_string(),
        position: match op.position {
            Position::Append => PositionDoc::Append,
            Position::Insert(n) => PositionDoc::Insert(n),
        },
        rule: rule_doc(&op.rule),
        iptables: iptables::op_line(op),
    }
}

fn port_range(p: &PortSpec) -> PortRange {
    match *p {
        PortSpec::Single(p) => PortRange::Single(p.get()),
        PortSpec::Range(a, b) => PortRange::Range {
            from: a.get(),
            to: b.get(),
        },
    }
}

fn owner_doc(o: &Owner) -> OwnerDoc {
    match o {
        Owner::Id(n) => OwnerDoc::Id(*n),
        Owner::Name(s) => OwnerDoc::Name(s.clone()),
    }
}

/// The wire form of a rule.
pub(crate) fn rule_doc(rule: &Rule) -> RuleDoc {
    RuleDoc {
        matches: rule.matches.iter().map(match_doc).collect(),
        target: target_doc(&rule.target),
        iptables: iptables::rule_spec(rule),
    }
}

fn match_doc(m: &Match) -> MatchDoc {
    match m {
        Match::InIface(i) => MatchDoc::InInterface {
            name: i.as_str().into(),
        },
        Match::OutIface(i) => MatchDoc::OutInterface {
            name: i.as_str().into(),
        },
        Match::Protocol(p) => MatchDoc::Protocol {
            protocol: p.as_str().into(),
        },
        Match::Source { negated, cidr } => MatchDoc::Source {
            negated: *negated,
            cidr: cidr.to_string(),
        },
        Match::Destination { negated, cidr } => MatchDoc::Destination {
            negated: *negated,
            cidr: cidr.to_string(),
        },
        Match::DestinationIn(cidrs) => MatchDoc::DestinationIn {
            cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        },
        Match::SourcePort { negated, port } => MatchDoc::SourcePort {
            negated: *negated,
            port: port_range(port),
        },
        Match::DestinationPort { negated, port } => MatchDoc::DestinationPort {
            negated: *negated,
            port: port_range(port),
        },
        Match::DestinationPorts { negated, ports } => MatchDoc::DestinationPorts {
            negated: *negated,
            ports: ports.iter().map(port_range).collect(),
        },
        Match::UidOwner { negated, owner } => MatchDoc::UidOwner {
            negated: *negated,
            owner: owner_doc(owner),
        },
        Match::GidOwner { negated, owner } => MatchDoc::GidOwner {
            negated: *negated,
            owner: owner_doc(owner),
        },
        Match::ConntrackState(states) => MatchDoc::ConntrackState {
            states: states.iter().map(|s| s.as_str().to_string()).collect(),
        },
        Match::Mark { negated, mark } => MatchDoc::Mark {
            negated: *negated,
            mark: mark.0,
        },
        Match::ConnMark(mark) => MatchDoc::ConnMark { mark: mark.0 },
    }
}

fn target_doc(t: &Target) -> TargetDoc {
    match t {
        Target::Jump(c) => TargetDoc::Jump {
            chain: c.as_str().into(),
        },
        Target::Return => TargetDoc::Return,
        Target::Accept => TargetDoc::Accept,
        Target::Drop => TargetDoc::Drop,
        Target::Redirect { port } => TargetDoc::Redirect { port: port.get() },
        Target::Tproxy { mark, port } => TargetDoc::Tproxy {
            mark: mark.0,
            mask: u32::MAX,
            port: port.get(),
        },
        Target::SetMark(m) => TargetDoc::SetMark { mark: m.0 },
        Target::SaveMark => TargetDoc::SaveMark,
        Target::RestoreMark => TargetDoc::RestoreMark,
        Target::CtZone(z) => TargetDoc::CtZone { zone: *z },
    }
}

fn routes_doc(r: &Routes) -> RoutesDoc {
    RoutesDoc {
        v6_passthrough_address: r.v6_passthrough_address,
        tproxy: r.tproxy.as_ref().map(|t| TproxyRoutesDoc {
            mark: t.mark.0,
            table: t.table.0,
            families: t.families.iter().map(|f| family_name(*f)).collect(),
        }),
    }
}

/// Why a document could not be read back into the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError(pub String);

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(what: &str, value: impl std::fmt::Display, why: impl std::fmt::Display) -> ReadError {
    ReadError(format!("{what} '{value}': {why}"))
}

impl Document {
    /// Parses a JSON document of this version.
    pub fn from_json(text: &str) -> Result<Document, ReadError> {
        let doc: Document = serde_json::from_str(text).map_err(|e| ReadError(format!("not a plan document: {e}")))?;
        if doc.version != VERSION {
            return Err(bad(
                "unsupported document version",
                doc.version,
                format!("expected {VERSION}"),
            ));
        }
        Ok(doc)
    }

    /// The families' rulesets, rebuilt from the operations (the `chains` views are derived
    /// data and are checked against the operations).
    pub fn rulesets(&self) -> Result<Vec<Ruleset>, ReadError> {
        self.families
            .iter()
            .map(|fam| {
                let family = family_of(fam.family);
                let mut tables = Vec::new();
                for t in &fam.tables {
                    let name = TableName::from_name(&t.name)
                        .ok_or_else(|| bad("unknown table", &t.name, "expected filter, mangle, nat or raw"))?;
                    let ops = t
                        .ops
                        .iter()
                        .map(|op| {
                            Ok(Op {
                                chain: chain_name(&op.chain)?,
                                position: match op.position {
                                    PositionDoc::Append => Position::Append,
                                    PositionDoc::Insert(n) => Position::Insert(n),
                                },
                                rule: op.rule.to_model()?,
                            })
                        })
                        .collect::<Result<Vec<_>, ReadError>>()?;
                    let table = Table { name, ops };
                    if table_doc(&table).chains != t.chains {
                        return Err(bad("table", &t.name, "its chains do not match its operations"));
                    }
                    tables.push(table);
                }
                Ok(Ruleset { family, tables })
            })
            .collect()
    }
}

fn chain_name(name: &str) -> Result<ChainName, ReadError> {
    ChainName::from_name(name).ok_or_else(|| bad("unknown chain", name, "not a built-in or ISTIO_* chain"))
}

fn port_spec(p: &PortRange) -> Result<PortSpec, ReadError> {
    let port = |n: u16| Port::parse(&n.to_string()).map_err(|e| bad("port", n, e.0));
    match *p {
        PortRange::Single(n) => Ok(PortSpec::Single(port(n)?)),
        PortRange::Range { from, to } => match (port(from)?, port(to)?) {
            (a, b) if a <= b => Ok(PortSpec::Range(a, b)),
            _ => Err(bad("port range", format!("{from}:{to}"), "from > to")),
        },
    }
}

fn owner(o: &OwnerDoc) -> Result<Owner, ReadError> {
    match o {
        OwnerDoc::Id(n) => Ok(Owner::Id(*n)),
        OwnerDoc::Name(s) => match Owner::parse(s).map_err(|e| bad("owner", s, e.0))? {
            Owner::Name(s) => Ok(Owner::Name(s)),
            Owner::Id(_) => Err(bad("owner", s, "a numeric name; write it as an id")),
        },
    }
}

fn cidr(text: &str) -> Result<Cidr, ReadError> {
    Cidr::parse(text).map_err(|e| bad("address", text, e.0))
}

fn iface(text: &str) -> Result<Iface, ReadError> {
    Iface::parse(text).map_err(|e| bad("interface", text, e.0))
}

impl RuleDoc {
    /// The model rule this wire rule describes. The `iptables` text must agree with it.
    pub(crate) fn to_model(&self) -> Result<Rule, ReadError> {
        let matches = self
            .matches
            .iter()
            .map(MatchDoc::to_model)
            .collect::<Result<Vec<_>, _>>()?;
        let rule = Rule::new(matches, self.target.to_model()?);
        let text = iptables::rule_spec(&rule);
        if text != self.iptables {
            return Err(bad(
                "rule",
                &self.iptables,
                format!("its typed form renders as '{text}'"),
            ));
        }
        Ok(rule)
    }
}

impl MatchDoc {
    fn to_model(&self) -> Result<Match, ReadError> {
        Ok(match self {
            MatchDoc::InInterface { name } => Match::InIface(iface(name)?),
            MatchDoc::OutInterface { name } => Match::OutIface(iface(name)?),
            MatchDoc::Protocol { protocol } => Match::Protocol(match protocol.as_str() {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                other => return Err(bad("protocol", other, "expected tcp or udp")),
            }),
            MatchDoc::Source { negated, cidr: c } => Match::Source {
                negated: *negated,
                cidr: cidr(c)?,
            },
            MatchDoc::Destination { negated, cidr: c } => Match::Destination {
                negated: *negated,
                cidr: cidr(c)?,
            },
            MatchDoc::DestinationIn { cidrs } => {
                Match::DestinationIn(cidrs.iter().map(|c| cidr(c)).collect::<Result<_, _>>()?)
            }
            MatchDoc::SourcePort { negated, port } => Match::SourcePort {
                negated: *negated,
                port: port_spec(port)?,
            },
            MatchDoc::DestinationPort { negated, port } => Match::DestinationPort {
                negated: *negated,
                port: port_spec(port)?,
            },
            MatchDoc::DestinationPorts { negated, ports } => Match::DestinationPorts {
                negated: *negated,
                ports: ports.iter().map(port_spec).collect::<Result<_, _>>()?,
            },
            MatchDoc::UidOwner { negated, owner: o } => Match::UidOwner {
                negated: *negated,
                owner: owner(o)?,
            },
            MatchDoc::GidOwner { negated, owner: o } => Match::GidOwner {
                negated: *negated,
                owner: owner(o)?,
            },
            MatchDoc::ConntrackState { states } => Match::ConntrackState(
                states
                    .iter()
                    .map(|s| {
                        [CtState::Invalid, CtState::New, CtState::Related, CtState::Established]
                            .into_iter()
                            .find(|c| c.as_str() == s)
                            .ok_or_else(|| bad("conntrack state", s, "expected INVALID, NEW, RELATED or ESTABLISHED"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            MatchDoc::Mark { negated, mark } => Match::Mark {
                negated: *negated,
                mark: Mark(*mark),
            },
            MatchDoc::ConnMark { mark } => Match::ConnMark(Mark(*mark)),
        })
    }
}

impl TargetDoc {
    fn to_model(&self) -> Result<Target, ReadError> {
        let port = |n: u16| Port::parse(&n.to_string()).map_err(|e| bad("port", n, e.0));
        Ok(match self {
            TargetDoc::Jump { chain } => match IstioChain::from_name(chain) {
                Some(c) => Target::Jump(c),
                None => return Err(bad("jump target", chain, "not an ISTIO_* chain")),
            },
            TargetDoc::Return => Target::Return,
            TargetDoc::Accept => Target::Accept,
            TargetDoc::Drop => Target::Drop,
            TargetDoc::Redirect { port: p } => Target::Redirect { port: port(*p)? },
            TargetDoc::Tproxy { mark, mask, port: p } => {
                if *mask != u32::MAX {
                    return Err(bad(
                        "TPROXY mark mask",
                        format!("{mask:#x}"),
                        "only 0xffffffff is supported",
                    ));
                }
                Target::Tproxy {
                    mark: Mark(*mark),
                    port: port(*p)?,
                }
            }
            TargetDoc::SetMark { mark } => Target::SetMark(Mark(*mark)),
            TargetDoc::SaveMark => Target::SaveMark,
            TargetDoc::RestoreMark => Target::RestoreMark,
            TargetDoc::CtZone { zone } => Target::CtZone(*zone),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::CaptureFlags;
    use crate::plan::for_flags as plan_for_flags;
    use crate::sys::host::Env;

    fn plan(flags: CaptureFlags, ipv6: bool) -> Plan {
        let env = Env::from_pairs([("ENABLE_INBOUND_IPV6", if ipv6 { "true" } else { "false" })]);
        plan_for_flags(&flags, None, "/nonexistent-resolv.conf", &env)
            .unwrap()
            .1
    }

    fn tproxy_flags() -> CaptureFlags {
        CaptureFlags {
            interception_mode: Some("TPROXY".into()),
            inbound_ports: Some("*".into()),
            local_exclude_ports: Some("15020".into()),
            service_cidr: Some("10.0.0.0/8,2001:db8::/32".into()),
            service_exclude_cidr: Some("10.1.0.0/16".into()),
            exclude_interfaces: Some("eth9".into()),
            kube_virt_interfaces: Some("veth+".into()),
            redirect_dns: Some("true".into()),
            capture_all_dns: Some("true".into()),
            drop_invalid: Some("true".into()),
            proxy_uid: Some("1337,1338".into()),
            proxy_gid: Some("1337".into()),
            outbound_ports: Some("8000:8100".into()),
            local_outbound_ports_exclude: Some("9000".into()),
            ..CaptureFlags::default()
        }
    }

    #[test]
    fn round_trips_through_the_model() {
        for (flags, ipv6) in [
            (CaptureFlags::default(), false),
            (tproxy_flags(), true),
            (tproxy_flags(), false),
        ] {
            let p = plan(flags, ipv6);
            let families = p.families();
            let text = render(&p, &families);
            let doc = Document::from_json(&text).unwrap();
            assert_eq!(doc, document(&p, &families));
            let back = doc.rulesets().unwrap();
            let want: Vec<Ruleset> = families.iter().map(|f| p.ruleset(*f)).collect();
            assert_eq!(back, want);
            for (fam, rs) in doc.families.iter().zip(&want) {
                for (t, model) in fam.tables.iter().zip(&rs.tables) {
                    let in_chains: usize = t.chains.iter().map(|c| c.rules.len()).sum();
                    assert_eq!(in_chains, model.ops.len());
                    assert_eq!(t.ops.len(), model.ops.len());
                }
            }
        }
    }

    /// The streamed document is the serialised [`Document`], byte for byte, for every kind of
    /// configuration (compacted too) and family selection.
    #[test]
    fn the_stream_is_the_document() {
        use crate::plan::testing::{KNOBS, config_and_plan};
        for flags in KNOBS {
            for extra in [&[][..], &["--ipv6"], &["--ipv6", "--compact"], &["--compact"]] {
                let args: Vec<&str> = flags.iter().chain(extra).copied().collect();
                let (_, p) = config_and_plan(&args);
                let mut selections = vec![p.families()];
                selections.extend(p.families().into_iter().map(|f| vec![f]));
                for families in selections {
                    let mut want = serde_json::to_string_pretty(&document(&p, &families)).unwrap();
                    want.push('\n');
                    assert_eq!(render(&p, &families), want, "{args:?} {families:?}");
                }
            }
        }
    }

    #[test]
    fn wire_shape_is_stable() {
        let p = plan(CaptureFlags::default(), false);
        let v: serde_json::Value = serde_json::from_str(&render(&p, &[Family::V4])).unwrap();
        assert_eq!(v["version"], 1);
        let nat = &v["families"][0]["tables"][0];
        assert_eq!(v["families"][0]["family"], "ipv4");
        assert_eq!(nat["name"], "nat");
        let names: Vec<&str> = nat["chains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "ISTIO_INBOUND",
                "ISTIO_REDIRECT",
                "ISTIO_IN_REDIRECT",
                "ISTIO_OUTPUT",
                "OUTPUT"
            ]
        );
        let rule = &nat["chains"][3]["rules"][1];
        assert_eq!(
            rule["iptables"],
            "-o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT"
        );
        assert_eq!(
            rule["matches"][1],
            serde_json::json!({"type": "destination", "negated": true, "cidr": "127.0.0.1/32"})
        );
        assert_eq!(rule["matches"][3]["port"], 15008);
        assert_eq!(rule["matches"][4]["owner"], serde_json::json!({"id": 1337}));
        assert_eq!(
            rule["target"],
            serde_json::json!({"type": "jump", "chain": "ISTIO_IN_REDIRECT"})
        );
        assert_eq!(nat["ops"][0]["position"], "append");
        assert_eq!(
            nat["ops"][0]["iptables"],
            "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN"
        );
    }

    #[test]
    fn inserts_are_positions_and_chains_show_kernel_order() {
        let flags = CaptureFlags {
            kube_virt_interfaces: Some("eth1,eth2".into()),
            service_cidr: Some("*".into()),
            ..CaptureFlags::default()
        };
        let doc = document(&plan(flags, false), &[Family::V4]);
        let nat = &doc.families[0].tables[0];
        assert_eq!(nat.ops[0].position, PositionDoc::Insert(1));
        let pre = nat.chains.iter().find(|c| c.name == "PREROUTING").unwrap();
        assert!(pre.builtin);
        let texts: Vec<&str> = pre.rules.iter().map(|r| r.iptables.as_str()).collect();
        assert_eq!(
            texts,
            [
                "-i eth2 -j ISTIO_REDIRECT",
                "-i eth1 -j ISTIO_REDIRECT",
                "-i eth2 -j RETURN",
                "-i eth1 -j RETURN"
            ]
        );
    }

    #[test]
    fn ranges_stay_ranges() {
        let flags = CaptureFlags {
            inbound_ports: Some("1:1,80".into()),
            outbound_ports: Some("8000:8100".into()),
            ..CaptureFlags::default()
        };
        let p = plan(flags, false);
        let v: serde_json::Value = serde_json::from_str(&render(&p, &[Family::V4])).unwrap();
        let ops = v["families"][0]["tables"][0]["ops"].as_array().unwrap();
        let port = |text: &str| {
            let op = ops
                .iter()
                .find(|o| o["iptables"].as_str().unwrap().contains(text))
                .unwrap();
            op["rule"]["matches"][1]["port"].clone()
        };
        assert_eq!(port("--dport 1:1 "), serde_json::json!({"from": 1, "to": 1}));
        assert_eq!(port("--dport 80 "), 80);
        assert_eq!(
            port("--dport 8000:8100 "),
            serde_json::json!({"from": 8000, "to": 8100})
        );
        let back = Document::from_json(&render(&p, &[Family::V4]))
            .unwrap()
            .rulesets()
            .unwrap();
        assert_eq!(back, [p.ruleset(Family::V4)]);
    }

    #[test]
    fn rejects_inconsistent_documents() {
        let p = plan(CaptureFlags::default(), false);
        let mut doc = document(&p, &[Family::V4]);
        doc.families[0].tables[0].ops[0].rule.iptables = "-j ACCEPT".into();
        assert!(doc.rulesets().unwrap_err().0.contains("renders as"));
        let mut doc = document(&p, &[Family::V4]);
        doc.families[0].tables[0].chains.pop();
        assert!(doc.rulesets().unwrap_err().0.contains("do not match"));
        let text = render(&p, &[Family::V4]).replace("\"version\": 1", "\"version\": 2");
        assert!(Document::from_json(&text).unwrap_err().0.contains("version"));
    }
}
