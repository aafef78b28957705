//! `check --native-nftables`: meshcap's three `inet` tables as the kernel lists them
//! (`nft -j list ruleset`) against the ruleset the plan's transaction leaves
//! ([`nft::apply_transaction`] with its inserts, flushes and deletes applied).
//!
//! The listing is read back into the renderer's own statements ([`nft::Stmt`]), so both sides
//! are spelled alike; rules are compared in a canonical form ([`key`]) that undoes what nft
//! normalises when it lists a ruleset (the `meta l4proto` a port match implies, host bits and
//! `/32`, the order of a `ct state` set, `meta` before `skuid`). Per chain the comparison is
//! order-sensitive, as for iptables. Chains and tables that should not exist, missing chains and
//! base chains with another type, hook or priority count too. Tables other than meshcap's are
//! never looked at.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::drift::DriftKind;
use crate::model::{CtState, Hook, IstioChain, Match, Proto, Rule};
use crate::render::nft::{self, NftChain, NftOp, NftRule, NftTable, OwnerKind, Stmt, Transaction};
use crate::trace::{Ids, nft_rule_model};
use crate::values::{Cidr, Family, Iface, Mark, Owner, Port, PortSpec, parse_ip};

/// A rule's canonical form and the family it is restricted to.
pub type RuleKey = (Option<Family>, Rule);

/// A base chain's `type`, `hook` and `priority`.
type BaseSpec = (String, String, i64);

/// One chain of one of meshcap's tables: its base spec (base chains) and rules in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainState {
    pub base: Option<BaseSpec>,
    pub rules: Vec<LiveRule>,
}

/// A rule: its statements when understood (else why not), and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRule {
    pub stmts: Result<NftRule, String>,
    pub text: String,
}

/// meshcap's tables and their chains, keyed by (table name, chain name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub tables: BTreeSet<String>,
    pub chains: BTreeMap<(String, String), ChainState>,
}

fn hook_name(h: Hook) -> &'static str {
    NftChain::Base(h).name()
}

/// The ruleset `tx` leaves in the kernel.
pub fn planned(tx: &Transaction) -> Ruleset {
    let mut rs = Ruleset::default();
    let key = |t: &NftTable, c: &NftChain| (t.name().to_string(), c.name().to_string());
    for op in &tx.ops {
        match op {
            NftOp::AddTable(t) => {
                rs.tables.insert(t.name().to_string());
            }
            NftOp::FlushTable(t) => {
                for ((table, _), chain) in rs.chains.iter_mut() {
                    if table == t.name() {
                        chain.rules.clear();
                    }
                }
            }
            NftOp::DeleteTable(t) => {
                rs.tables.remove(t.name());
                rs.chains.retain(|(table, _), _| table != t.name());
            }
            NftOp::AddChain(t, c) => {
                let chain = rs.chains.entry(key(t, c)).or_default();
                if let NftChain::Base(h) = c {
                    let (kind, prio) = t.base_spec(*h);
                    chain.base = Some((kind.to_string(), hook_name(*h).to_string(), i64::from(prio)));
                }
            }
            NftOp::DeleteChain(t, c) => {
                rs.chains.remove(&key(t, c));
            }
            NftOp::AddRule { table, chain, rule } => {
                rs.chains.entry(key(table, chain)).or_default().rules.push(LiveRule {
                    stmts: Ok(rule.clone()),
                    text: rule.to_string(),
                });
            }
            NftOp::InsertRule {
                table,
                chain,
                index,
                rule,
            } => {
                let rules = &mut rs.chains.entry(key(table, chain)).or_default().rules;
                let at = (*index as usize).min(rules.len());
                rules.insert(
                    at,
                    LiveRule {
                        stmts: Ok(rule.clone()),
                        text: rule.to_string(),
                    },
                );
            }
        }
    }
    rs
}

fn is_ours(table: &str) -> bool {
    NftTable::ALL.iter().any(|t| t.name() == table)
}

/// meshcap's tables in an `nft -j list ruleset` output.
pub fn parse_listing(text: &str) -> Result<Ruleset, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not nft JSON: {e}"))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("no 'nftables' array in the listing")?;
    let mut rs = Ruleset::default();
    let ours = |obj: &Value, field: &str| {
        obj.get("family").and_then(Value::as_str) == Some("inet")
            && obj.get(field).and_then(Value::as_str).is_some_and(is_ours)
    };
    for item in items {
        if let Some(t) = item.get("table") {
            if ours(t, "name") {
                rs.tables.insert(str_field(t, "name")?);
            }
        } else if let Some(c) = item.get("chain") {
            if !ours(c, "table") {
                continue;
            }
            let base = match (c.get("type"), c.get("hook"), c.get("prio")) {
                (Some(kind), Some(hook), Some(prio)) => Some((
                    kind.as_str().unwrap_or_default().to_string(),
                    hook.as_str().unwrap_or_default().to_string(),
                    prio.as_i64().ok_or("a chain priority that is not a number")?,
                )),
                _ => None,
            };
            let chain = rs
                .chains
                .entry((str_field(c, "table")?, str_field(c, "name")?))
                .or_default();
            chain.base = base;
        } else if let Some(r) = item.get("rule") {
            if !ours(r, "table") {
                continue;
            }
            let expr = r.get("expr").and_then(Value::as_array).ok_or("a rule without 'expr'")?;
            let stmts = expr
                .iter()
                .map(stmt)
                .collect::<Result<Vec<_>, _>>()
                .map(|stmts| NftRule { stmts });
            let text = match &stmts {
                Ok(rule) => rule.to_string(),
                Err(_) => Value::Array(expr.clone()).to_string(),
            };
            rs.chains
                .entry((str_field(r, "table")?, str_field(r, "chain")?))
                .or_default()
                .rules
                .push(LiveRule { stmts, text });
        }
    }
    Ok(rs)
}

fn str_field(v: &Value, field: &str) -> Result<String, String> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("an object without '{field}'"))
}

/// One expression of a listed rule as the renderer's statement.
fn stmt(e: &Value) -> Result<Stmt, String> {
    let unknown = || format!("'{e}' is not a statement meshcap writes");
    let obj = e.as_object().filter(|o| o.len() == 1).ok_or_else(unknown)?;
    let (kind, body) = obj.iter().next().expect("one entry");
    Ok(match kind.as_str() {
        "match" => return match_stmt(body).ok_or_else(unknown),
        "counter" => Stmt::Counter,
        "return" => Stmt::Return,
        "accept" => Stmt::Accept,
        "drop" => Stmt::Drop,
        "jump" => {
            let target = body.get("target").and_then(Value::as_str).ok_or_else(unknown)?;
            let chain = IstioChain::ALL
                .into_iter()
                .find(|c| NftChain::Regular(*c).name() == target)
                .ok_or_else(unknown)?;
            Stmt::Jump(NftChain::Regular(chain))
        }
        "redirect" => Stmt::Redirect(port_of(body.get("port")).ok_or_else(unknown)?),
        "tproxy" => {
            if body.get("addr").is_some() {
                return Err(unknown());
            }
            let family = match body.get("family").and_then(Value::as_str) {
                None => None,
                Some("ip") => Some(Family::V4),
                Some("ip6") => Some(Family::V6),
                Some(_) => return Err(unknown()),
            };
            Stmt::Tproxy {
                family,
                port: port_of(body.get("port")).ok_or_else(unknown)?,
            }
        }
        "mangle" => {
            let key = meta_or_ct(body.get("key")).ok_or_else(unknown)?;
            let value = body.get("value").ok_or_else(unknown)?;
            match (key, meta_or_ct(Some(value)), value.as_u64()) {
                (("meta", "mark"), _, Some(m)) => Stmt::SetMark(Mark(u32::try_from(m).map_err(|_| unknown())?)),
                (("meta", "mark"), Some(("ct", "mark")), _) => Stmt::RestoreMark,
                (("ct", "mark"), Some(("meta", "mark")), _) => Stmt::SaveMark,
                (("ct", "zone"), _, Some(z)) => Stmt::CtZone(u16::try_from(z).map_err(|_| unknown())?),
                _ => return Err(unknown()),
            }
        }
        _ => return Err(unknown()),
    })
}

/// `{"meta": {"key": K}}` → ("meta", K); `{"ct": {"key": K}}` → ("ct", K).
fn meta_or_ct(v: Option<&Value>) -> Option<(&'static str, &str)> {
    let obj = v?.as_object()?;
    let (kind, body) = obj.iter().next()?;
    let kind = match kind.as_str() {
        "meta" => "meta",
        "ct" => "ct",
        _ => return None,
    };
    Some((kind, body.get("key")?.as_str()?))
}

fn port_of(v: Option<&Value>) -> Option<Port> {
    Port::parse(&v?.as_u64()?.to_string()).ok()
}

fn port_spec(v: &Value) -> Option<PortSpec> {
    if let Some(range) = v.get("range").and_then(Value::as_array) {
        let [a, b] = range.as_slice() else { return None };
        return Some(PortSpec::Range(port_of(Some(a))?, port_of(Some(b))?));
    }
    Some(PortSpec::Single(port_of(Some(v))?))
}

/// A set element that is a prefix or a single address.
fn set_cidr(e: &Value) -> Option<Cidr> {
    match e.get("prefix") {
        Some(prefix) => Cidr::new(
            parse_ip(prefix.get("addr")?.as_str()?).ok()?,
            u8::try_from(prefix.get("len")?.as_u64()?).ok()?,
        )
        .ok(),
        None => Some(Cidr::host(parse_ip(e.as_str()?).ok()?)),
    }
}

fn match_stmt(m: &Value) -> Option<Stmt> {
    let negated = match m.get("op")?.as_str()? {
        "==" | "in" => false,
        "!=" => true,
        _ => return None,
    };
    let left = m.get("left")?;
    let right = m.get("right")?;
    if let Some(p) = left.get("payload") {
        let field = p.get("field")?.as_str()?;
        return match p.get("protocol")?.as_str()? {
            "ip" | "ip6" if right.get("set").is_some() => {
                // An anonymous set (`--compact`): prefixes, addresses and the ranges nft's
                // automerge makes of adjacent prefixes, read back as the fewest prefixes.
                if negated || field != "daddr" {
                    return None;
                }
                let mut cidrs = Vec::new();
                for e in right.get("set")?.as_array()? {
                    if let Some(range) = e.get("range").and_then(Value::as_array) {
                        let [a, b] = range.as_slice() else { return None };
                        let (a, b) = (parse_ip(a.as_str()?).ok()?, parse_ip(b.as_str()?).ok()?);
                        let (family, bits, lo, hi) = match (a, b) {
                            (IpAddr::V4(a), IpAddr::V4(b)) => {
                                (Family::V4, 32, u32::from(a).into(), u32::from(b).into())
                            }
                            (IpAddr::V6(a), IpAddr::V6(b)) => (Family::V6, 128, u128::from(a), u128::from(b)),
                            _ => return None,
                        };
                        crate::compact::prefixes_of(lo, hi, family, bits, &mut cidrs);
                    } else {
                        cidrs.push(set_cidr(e)?);
                    }
                }
                Some(Stmt::AddrSet {
                    direction: nft::Direction::Destination,
                    cidrs: crate::compact::normalise_cidrs(cidrs),
                })
            }
            "ip" | "ip6" => {
                let cidr = match right.get("prefix") {
                    Some(prefix) => Cidr::new(
                        parse_ip(prefix.get("addr")?.as_str()?).ok()?,
                        u8::try_from(prefix.get("len")?.as_u64()?).ok()?,
                    )
                    .ok()?,
                    None => Cidr::host(parse_ip(right.as_str()?).ok()?),
                };
                let direction = match field {
                    "saddr" => nft::Direction::Source,
                    "daddr" => nft::Direction::Destination,
                    _ => return None,
                };
                Some(Stmt::Addr {
                    direction,
                    negated,
                    cidr,
                })
            }
            proto @ ("tcp" | "udp") => {
                let proto = if proto == "tcp" { Proto::Tcp } else { Proto::Udp };
                let direction = match field {
                    "sport" => nft::Direction::Source,
                    "dport" => nft::Direction::Destination,
                    _ => return None,
                };
                let ports = match right.get("set").and_then(Value::as_array) {
                    Some(set) => set.iter().map(port_spec).collect::<Option<Vec<_>>>()?,
                    None => vec![port_spec(right)?],
                };
                Some(Stmt::Port {
                    proto,
                    direction,
                    negated,
                    ports,
                })
            }
            _ => None,
        };
    }
    let number = || right.as_u64().and_then(|n| u32::try_from(n).ok());
    match meta_or_ct(Some(left))? {
        ("meta", key @ ("iifname" | "oifname")) => {
            let name = right.as_str()?;
            let name = match name.strip_suffix('*') {
                Some(prefix) => format!("{prefix}+"),
                None => name.to_string(),
            };
            if negated {
                return None;
            }
            Some(Stmt::Iface {
                input: key == "iifname",
                name: Iface::parse(&name).ok()?,
            })
        }
        ("meta", "l4proto") if !negated => Some(Stmt::L4Proto(match right.as_str()? {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return None,
        })),
        ("meta", key @ ("skuid" | "skgid")) => Some(Stmt::Owner {
            kind: if key == "skuid" { OwnerKind::Uid } else { OwnerKind::Gid },
            negated,
            owner: Owner::Id(number()?),
            meta: true,
        }),
        ("meta", "mark") => Some(Stmt::Mark {
            negated,
            mark: Mark(number()?),
        }),
        ("ct", "mark") if !negated => Some(Stmt::CtMark(Mark(number()?))),
        ("ct", "state") if !negated => {
            let names: Vec<&str> = match right {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().map(Value::as_str).collect::<Option<_>>()?,
                _ => return None,
            };
            let states = names
                .into_iter()
                .map(|n| match n {
                    "invalid" => Some(CtState::Invalid),
                    "new" => Some(CtState::New),
                    "related" => Some(CtState::Related),
                    "established" => Some(CtState::Established),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Stmt::CtState(states))
        }
        _ => None,
    }
}

/// The canonical form two spellings of one rule share: the model rule (owner names resolved
/// where `ids` can, matches sorted and deduplicated, prefixes without host bits, `ct state`
/// sets sorted) and the family it is restricted to. `None` for a rule the model cannot say.
pub fn key(rule: &NftRule, ids: &Ids) -> Option<RuleKey> {
    let m = nft_rule_model(rule).ok()?;
    let resolve = |owner: &Owner, group: bool| match owner {
        Owner::Name(_) => ids
            .resolve(owner, group)
            .map(Owner::Id)
            .unwrap_or_else(|_| owner.clone()),
        id => id.clone(),
    };
    let matches = m
        .rule
        .matches
        .iter()
        .map(|x| match x {
            Match::UidOwner { negated, owner } => Match::UidOwner {
                negated: *negated,
                owner: resolve(owner, false),
            },
            Match::GidOwner { negated, owner } => Match::GidOwner {
                negated: *negated,
                owner: resolve(owner, true),
            },
            Match::ConntrackState(states) => {
                let mut states = states.clone();
                states.sort();
                Match::ConntrackState(states)
            }
            Match::DestinationIn(cidrs) => Match::DestinationIn(crate::compact::normalise_cidrs(cidrs.clone())),
            other => other.clone(),
        })
        .collect();
    let mut canonical = Rule::new(matches, m.rule.target).canonical();
    canonical.matches.dedup();
    Some((m.family, canonical))
}

/// What is wrong with a chain as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainIssue {
    Missing,
    Unexpected,
    /// A base chain with another type, hook or priority.
    Differs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainDrift {
    pub table: String,
    pub chain: String,
    pub issue: ChainIssue,
    /// `add chain …` as planned (missing, differs) or as live (unexpected).
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDrift {
    pub kind: DriftKind,
    pub table: String,
    pub chain: String,
    pub rule: String,
    pub planned_at: Option<usize>,
    pub live_at: Option<usize>,
}

/// The difference between the planned and the live nftables ruleset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftDrift {
    pub rules: Vec<RuleDrift>,
    pub chains: Vec<ChainDrift>,
    /// meshcap's tables that exist but should not.
    pub unexpected_tables: Vec<String>,
    /// meshcap's tables that should exist but do not.
    pub missing_tables: Vec<String>,
}

impl NftDrift {
    pub fn is_clean(&self) -> bool {
        self.rules.is_empty()
            && self.chains.is_empty()
            && self.unexpected_tables.is_empty()
            && self.missing_tables.is_empty()
    }

    pub fn count(&self, kind: DriftKind) -> usize {
        self.rules.iter().filter(|r| r.kind == kind).count()
    }

    /// `+`/`-` lines in `nft -f` syntax.
    pub fn lines(&self) -> String {
        let mut out = String::new();
        for t in &self.missing_tables {
            out.push_str(&format!("+ add table inet {t}  # missing table\n"));
        }
        for t in &self.unexpected_tables {
            out.push_str(&format!("- add table inet {t}  # unexpected table\n"));
        }
        for c in &self.chains {
            let (sign, why) = match c.issue {
                ChainIssue::Missing => ('+', "missing chain"),
                ChainIssue::Unexpected => ('-', "unexpected chain"),
                ChainIssue::Differs => ('+', "chain differs"),
            };
            out.push_str(&format!("{sign} {}  # {why}\n", c.text));
        }
        for r in &self.rules {
            let line = format!("add rule inet {} {} {}", r.table, r.chain, r.rule);
            match r.kind {
                DriftKind::Missing => out.push_str(&format!(
                    "+ {line}  # missing, planned #{}\n",
                    r.planned_at.unwrap_or(0)
                )),
                DriftKind::Unexpected => {
                    out.push_str(&format!("- {line}  # unexpected, live #{}\n", r.live_at.unwrap_or(0)))
                }
                DriftKind::Misordered => {
                    out.push_str(&format!("- {line}  # misordered, live #{}\n", r.live_at.unwrap_or(0)));
                    out.push_str(&format!(
                        "+ {line}  # misordered, planned #{}\n",
                        r.planned_at.unwrap_or(0)
                    ));
                }
            }
        }
        out
    }
}

fn chain_text(table: &str, chain: &str, base: &Option<BaseSpec>) -> String {
    match base {
        Some((kind, hook, prio)) => {
            format!("add chain inet {table} {chain} {{ type {kind} hook {hook} priority {prio} ; }}")
        }
        None => format!("add chain inet {table} {chain}"),
    }
}

/// Compares the planned ruleset with the live one.
pub fn compare(planned: &Ruleset, live: &Ruleset, ids: &Ids) -> NftDrift {
    let mut d = NftDrift {
        unexpected_tables: live.tables.difference(&planned.tables).cloned().collect(),
        missing_tables: planned.tables.difference(&live.tables).cloned().collect(),
        ..NftDrift::default()
    };
    let names: BTreeSet<&(String, String)> = planned
        .chains
        .keys()
        .chain(live.chains.keys().filter(|(t, _)| planned.tables.contains(t)))
        .collect();
    for name in names {
        let (table, chain) = name;
        let empty = ChainState::default();
        let (p, l) = (planned.chains.get(name), live.chains.get(name));
        match (p, l) {
            (Some(p), None) => d.chains.push(ChainDrift {
                table: table.clone(),
                chain: chain.clone(),
                issue: ChainIssue::Missing,
                text: chain_text(table, chain, &p.base),
            }),
            (None, Some(l)) => d.chains.push(ChainDrift {
                table: table.clone(),
                chain: chain.clone(),
                issue: ChainIssue::Unexpected,
                text: chain_text(table, chain, &l.base),
            }),
            (Some(p), Some(l)) if p.base != l.base => d.chains.push(ChainDrift {
                table: table.clone(),
                chain: chain.clone(),
                issue: ChainIssue::Differs,
                text: format!(
                    "{} (live: {})",
                    chain_text(table, chain, &p.base),
                    chain_text(table, chain, &l.base)
                ),
            }),
            _ => {}
        }
        let keyed = |rules: &[LiveRule]| -> Vec<Keyed> {
            rules
                .iter()
                .map(|r| (r.stmts.as_ref().ok().and_then(|s| key(s, ids)), r.text.clone()))
                .collect()
        };
        let planned_rules = keyed(&p.unwrap_or(&empty).rules);
        let live_rules = keyed(&l.unwrap_or(&empty).rules);
        diff_rules(table, chain, &planned_rules, &live_rules, &mut d.rules);
    }
    d
}

/// A rule's canonical key (see [`key`]) and its text.
type Keyed = (Option<RuleKey>, String);

/// Order-sensitive difference of one chain: a longest common subsequence of the keys; the rest
/// is missing or unexpected, and a rule both missing and unexpected is misordered.
fn diff_rules(table: &str, chain: &str, planned: &[Keyed], live: &[Keyed], out: &mut Vec<RuleDrift>) {
    // The same bounded LCS as the iptables comparison (trimmed ends, matching beyond a size).
    let pk: Vec<Option<&RuleKey>> = planned.iter().map(|k| k.0.as_ref()).collect();
    let lk: Vec<Option<&RuleKey>> = live.iter().map(|k| k.0.as_ref()).collect();
    let pairs = crate::drift::common_subsequence(&pk, &lk);
    let moved = crate::drift::misplaced(&pk, &lk, &pairs);
    let mut kept_p = vec![false; planned.len()];
    let mut kept_l = vec![false; live.len()];
    for &(i, j) in &pairs {
        kept_p[i] = true;
        kept_l[j] = true;
    }
    let mut entries = Vec::new();
    for i in (0..planned.len()).filter(|&i| !kept_p[i]) {
        let (kind, live_at) = match moved[i] {
            Some(j) => {
                kept_l[j] = true;
                (DriftKind::Misordered, Some(j + 1))
            }
            None => (DriftKind::Missing, None),
        };
        entries.push(RuleDrift {
            kind,
            table: table.to_string(),
            chain: chain.to_string(),
            rule: planned[i].1.clone(),
            planned_at: Some(i + 1),
            live_at,
        });
    }
    for j in (0..live.len()).filter(|&j| !kept_l[j]) {
        entries.push(RuleDrift {
            kind: DriftKind::Unexpected,
            table: table.to_string(),
            chain: chain.to_string(),
            rule: live[j].1.clone(),
            planned_at: None,
            live_at: Some(j + 1),
        });
    }
    entries.sort_by_key(|e| (e.planned_at.or(e.live_at), e.kind));
    out.extend(entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(args: &[&str]) -> Transaction {
        use clap::Parser;
        let mut argv = vec!["meshcap", "render"];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let Some(crate::cli::Command::Render(r)) = cli.command else {
            panic!("not render")
        };
        let (_, plan) = crate::app::plan_for_render(&r, &crate::host::Env::default()).unwrap();
        nft::apply_transaction(&plan).unwrap()
    }

    /// A listing as `nft -j` prints it, written by hand for a few rules.
    const LISTING: &str = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
      {"table": {"family": "inet", "name": "istio-proxy-nat", "handle": 1}},
      {"table": {"family": "inet", "name": "kube-proxy", "handle": 2}},
      {"chain": {"family": "inet", "table": "istio-proxy-nat", "name": "output", "handle": 2, "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}},
      {"chain": {"family": "inet", "table": "istio-proxy-nat", "name": "istio-output", "handle": 6}},
      {"chain": {"family": "inet", "table": "kube-proxy", "name": "services", "handle": 1}},
      {"rule": {"family": "inet", "table": "istio-proxy-nat", "chain": "output", "handle": 9, "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "istio-output"}}]}},
      {"rule": {"family": "inet", "table": "istio-proxy-nat", "chain": "istio-output", "handle": 10, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "lo"}}, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "127.0.0.1"}}, {"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [53, {"range": [15000, 15010]}]}}}, {"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 1337}}, {"counter": {"packets": 3, "bytes": 180}}, {"jump": {"target": "istio-in-redirect"}}]}},
      {"rule": {"family": "inet", "table": "istio-proxy-nat", "chain": "istio-output", "handle": 11, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "veth*"}}, {"counter": null}, {"mangle": {"key": {"ct": {"key": "mark"}}, "value": {"meta": {"key": "mark"}}}}]}},
      {"rule": {"family": "inet", "table": "istio-proxy-nat", "chain": "istio-output", "handle": 12, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}, {"counter": null}, {"return": null}]}},
      {"rule": {"family": "inet", "table": "kube-proxy", "chain": "services", "handle": 3, "expr": [{"goto": {"target": "x"}}]}}
    ]}"#;

    #[test]
    fn reads_the_kernels_listing_into_statements() {
        let rs = parse_listing(LISTING).unwrap();
        assert_eq!(rs.tables.iter().collect::<Vec<_>>(), ["istio-proxy-nat"]);
        let out = &rs.chains[&("istio-proxy-nat".to_string(), "output".to_string())];
        assert_eq!(out.base, Some(("nat".into(), "output".into(), -100)));
        let rules = &rs.chains[&("istio-proxy-nat".to_string(), "istio-output".to_string())].rules;
        assert_eq!(
            rules[0].text,
            "oifname lo ip daddr != 127.0.0.1/32 tcp dport != { 53, 15000-15010 } meta skuid 1337 counter jump istio-in-redirect"
        );
        assert_eq!(
            rules[1].text,
            "ct state established,related iifname veth* counter ct mark set mark"
        );
        assert!(
            rules[2].stmts.as_ref().unwrap_err().contains("nfproto"),
            "{:?}",
            rules[2]
        );
        assert!(!rs.chains.keys().any(|(t, _)| t == "kube-proxy"));
    }

    #[test]
    fn keys_undo_nft_normalisation() {
        let ids = Ids::default();
        let planned = planned(&tx(&["-b", "*", "-m", "TPROXY", "--ipv6"]));
        let mangle_inbound = &planned.chains[&("istio-proxy-mangle".to_string(), "istio-inbound".to_string())];
        // `meta l4proto tcp tcp dport 15008` and `tcp dport 15008` are one rule.
        let spelled = |stmts: Vec<Stmt>| key(&NftRule { stmts }, &ids);
        let dport = Stmt::Port {
            proto: Proto::Tcp,
            direction: nft::Direction::Destination,
            negated: false,
            ports: vec![PortSpec::Single(Port::new_const(15008))],
        };
        assert_eq!(
            spelled(vec![
                Stmt::L4Proto(Proto::Tcp),
                dport.clone(),
                Stmt::Counter,
                Stmt::Return
            ]),
            spelled(vec![dport, Stmt::Return])
        );
        // TPROXY mode's istio-inbound starts with the three inserted RETURN rules, IPv6 one second.
        let texts: Vec<&str> = mangle_inbound.rules.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts[1], "iifname lo meta l4proto tcp ip6 saddr ::6/128 counter return");
        assert_eq!(
            texts[3],
            "iifname lo meta l4proto tcp ip saddr 127.0.0.6/32 counter return"
        );
    }

    #[test]
    fn compares_in_order() {
        let ids = Ids::default();
        let p = planned(&tx(&["-b", "*", "-i", "*"]));
        assert!(compare(&p, &p, &ids).is_clean());
        // One rule gone, one added, two swapped, a chain and a table too many.
        let mut live = p.clone();
        let out = live
            .chains
            .get_mut(&("istio-proxy-nat".to_string(), "istio-output".to_string()))
            .unwrap();
        let gone = out.rules.remove(0);
        out.rules.swap(1, 2);
        out.rules.push(LiveRule {
            stmts: Err("x".into()),
            text: "meta nfproto ipv4 counter return".into(),
        });
        live.chains
            .insert(("istio-proxy-nat".into(), "istio-extra".into()), ChainState::default());
        live.tables.insert("istio-proxy-raw".into());
        let d = compare(&p, &live, &ids);
        assert_eq!(d.count(DriftKind::Missing), 1, "{}", d.lines());
        assert_eq!(d.count(DriftKind::Misordered), 1, "{}", d.lines());
        assert_eq!(d.count(DriftKind::Unexpected), 1, "{}", d.lines());
        assert_eq!(d.unexpected_tables, ["istio-proxy-raw"]);
        let lines = d.lines();
        assert!(
            lines.contains(&format!(
                "+ add rule inet istio-proxy-nat istio-output {}  # missing, planned #1\n",
                gone.text
            )),
            "{lines}"
        );
        assert!(
            lines.contains("- add chain inet istio-proxy-nat istio-extra  # unexpected chain\n"),
            "{lines}"
        );
        assert!(
            lines.contains("- add table inet istio-proxy-raw  # unexpected table\n"),
            "{lines}"
        );
        // An empty live ruleset: every table missing.
        let d = compare(&p, &Ruleset::default(), &ids);
        assert_eq!(d.missing_tables, ["istio-proxy-nat"]);
        assert!(!d.is_clean());
    }
}
