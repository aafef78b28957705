//! `check --native-nftables`: meshcap's three `inet` tables as the kernel lists them
//! (`nft -j list ruleset`) against the ruleset the plan's transaction leaves
//! ([`nft::apply_transaction`] with its inserts, flushes and deletes applied).
//!
//! The listing is read back into the renderer's own statements ([`nft::Stmt`]), so both sides
//! are spelled alike; rules are compared in a canonical form ([`key`]) that undoes what nft
//! normalises when it lists a ruleset (the `meta l4proto` a port match implies, host bits and
//! `/32`, the order of a `ct state` set, `meta` before `skuid`). Per chain the comparison is
//! order-sensitive, as for iptables. Chains and tables that should not exist, missing chains and
//! base chains with another type, hook, priority or policy count too, and so do sets, maps and
//! other objects in meshcap's tables (meshcap makes none). Tables other than meshcap's are
//! never looked at.
//!
//! This is the one reader of the live nftables state: `check --native-nftables` and the nft
//! apply backend (`apply::nft`, its state check before writing) both use [`read_live`] and
//! [`compare`]. The parser is strict inside meshcap's tables: an expression or an option
//! meshcap never writes (a named counter, `redirect … random`, `ct original mark`, …) makes the
//! rule unknown (so it never equals a planned one) rather than being read as something close.
//! Why JSON and not the text listing: values come typed and unquoted (interface names, marks as
//! numbers, prefixes as address + length), counters apart, every object with its table and
//! chain; nothing is re-tokenised.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::Value;

use serde_json::{Map, json};

use crate::model::{CtState, Hook, IstioChain, Proto};
use crate::nft::text::{self as nft, NftChain, NftOp, NftRule, NftTable, OwnerKind, Stmt, Transaction};

use crate::values::{Cidr, Family, Iface, Mark, Owner, Port, PortSpec, parse_ip};

/// A base chain's `type`, `hook`, `priority` and `policy`.
pub type BaseSpec = (String, String, i64, String);

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
    /// Sets, maps, flowtables, named counters, … in meshcap's tables, as (table, kind, name).
    pub objects: BTreeSet<(String, String, String)>,
    /// The listing's `metainfo.version` (e.g. `1.0.6`).
    pub version: Option<String>,
}

impl Ruleset {
    /// Whether none of meshcap's tables exists.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
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
                    chain.base = Some((
                        kind.to_string(),
                        hook_name(*h).to_string(),
                        i64::from(prio),
                        "accept".to_string(),
                    ));
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

/// meshcap's tables in an `nft -j list ruleset` output. Items of other tables are skipped
/// unread; inside meshcap's tables a malformed item is an error.
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
    for (i, item) in items.iter().enumerate() {
        let at = |why: String| format!("item {i}: {why}");
        let (kind, body) = single(item).ok_or_else(|| at("not an object with one key".into()))?;
        match kind {
            "metainfo" => rs.version = body.get("version").and_then(Value::as_str).map(str::to_string),
            "table" => {
                if ours(body, "name") {
                    rs.tables.insert(str_field(body, "name").map_err(at)?);
                }
            }
            "chain" => {
                if !ours(body, "table") {
                    continue;
                }
                let base = match body.get("hook") {
                    None => None,
                    Some(_) => Some((
                        str_field(body, "type").map_err(at)?,
                        str_field(body, "hook").map_err(at)?,
                        body.get("prio")
                            .and_then(Value::as_i64)
                            .ok_or_else(|| at("a chain priority that is not a number".into()))?,
                        match body.get("policy") {
                            None => "accept".to_string(),
                            Some(_) => str_field(body, "policy").map_err(at)?,
                        },
                    )),
                };
                let key = (
                    str_field(body, "table").map_err(at)?,
                    str_field(body, "name").map_err(at)?,
                );
                if rs.chains.contains_key(&key) {
                    return Err(at(format!("chain {} {} listed twice", key.0, key.1)));
                }
                rs.chains.insert(
                    key,
                    ChainState {
                        base,
                        rules: Vec::new(),
                    },
                );
            }
            "rule" => {
                if !ours(body, "table") {
                    continue;
                }
                let expr = body
                    .get("expr")
                    .and_then(Value::as_array)
                    .ok_or_else(|| at("a rule without 'expr'".into()))?;
                let mut stmts = expr
                    .iter()
                    .map(stmt)
                    .collect::<Result<Vec<_>, _>>()
                    .map(|stmts| NftRule { stmts });
                if let Some(c) = body.get("comment") {
                    stmts = Err(format!("a comment ({c}), which meshcap never writes"));
                }
                let text = match &stmts {
                    Ok(rule) => rule.to_string(),
                    Err(_) => unknown_text(body),
                };
                let key = (
                    str_field(body, "table").map_err(at)?,
                    str_field(body, "chain").map_err(at)?,
                );
                let chain = rs
                    .chains
                    .get_mut(&key)
                    .ok_or_else(|| at(format!("a rule of {} {} before its chain", key.0, key.1)))?;
                chain.rules.push(LiveRule { stmts, text });
            }
            other => {
                // Sets, maps, elements, flowtables, named counters, quotas, …
                if ours(body, "table") {
                    let table = str_field(body, "table").map_err(at)?;
                    let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                    rs.objects.insert((table, other.to_string(), name));
                }
            }
        }
    }
    Ok(rs)
}

/// An unknown rule as text: its `expr` (and `comment`) JSON.
fn unknown_text(body: &Value) -> String {
    let mut o = Map::new();
    for k in ["expr", "comment"] {
        if let Some(v) = body.get(k) {
            o.insert(k.to_string(), v.clone());
        }
    }
    Value::Object(o).to_string()
}

fn str_field(v: &Value, field: &str) -> Result<String, String> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("an object without '{field}'"))
}

/// The single `{"kind": body}` pair of an nft JSON object.
fn single(v: &Value) -> Option<(&str, &Value)> {
    let o = v.as_object()?;
    let mut it = o.iter();
    match (it.next(), it.next()) {
        (Some((k, b)), None) => Some((k.as_str(), b)),
        _ => None,
    }
}

/// Whether `v` is an object with exactly the keys `keys`.
fn has_keys(v: &Value, keys: &[&str]) -> bool {
    v.as_object()
        .is_some_and(|o| o.len() == keys.len() && keys.iter().all(|k| o.contains_key(*k)))
}

/// One expression of a listed rule as the renderer's statement.
fn stmt(e: &Value) -> Result<Stmt, String> {
    let unknown = || format!("'{e}' is not a statement meshcap writes");
    let (kind, body) = single(e).ok_or_else(unknown)?;
    Ok(match kind {
        "match" => return match_stmt(body).ok_or_else(unknown),
        "counter" => {
            // Anonymous counters only (`"counter": "name"` is a named counter object).
            let anonymous = body.is_null()
                || body.as_object().is_some_and(|o| {
                    o.iter()
                        .all(|(k, v)| matches!(k.as_str(), "packets" | "bytes") && v.is_u64())
                });
            if !anonymous {
                return Err(unknown());
            }
            Stmt::Counter
        }
        "return" if body.is_null() => Stmt::Return,
        "accept" if body.is_null() => Stmt::Accept,
        "drop" if body.is_null() => Stmt::Drop,
        "jump" if has_keys(body, &["target"]) => {
            let target = body.get("target").and_then(Value::as_str).ok_or_else(unknown)?;
            let chain = IstioChain::ALL
                .into_iter()
                .find(|c| NftChain::Regular(*c).name() == target)
                .ok_or_else(unknown)?;
            Stmt::Jump(NftChain::Regular(chain))
        }
        "redirect" if has_keys(body, &["port"]) => Stmt::Redirect(port_of(body.get("port")).ok_or_else(unknown)?),
        "tproxy" => {
            let family = match body.get("family").map(Value::as_str) {
                None => None,
                Some(Some("ip")) => Some(Family::V4),
                Some(Some("ip6")) => Some(Family::V6),
                Some(_) => return Err(unknown()),
            };
            let keys: &[&str] = if family.is_some() {
                &["family", "port"]
            } else {
                &["port"]
            };
            if !has_keys(body, keys) {
                return Err(unknown());
            }
            Stmt::Tproxy {
                family,
                port: port_of(body.get("port")).ok_or_else(unknown)?,
            }
        }
        "mangle" if has_keys(body, &["key", "value"]) => {
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

/// `{"meta": {"key": K}}` → ("meta", K); `{"ct": {"key": K}}` → ("ct", K) (no direction,
/// no family: meshcap writes neither).
fn meta_or_ct(v: Option<&Value>) -> Option<(&'static str, &str)> {
    let (kind, body) = single(v?)?;
    let kind = match kind {
        "meta" => "meta",
        "ct" => "ct",
        _ => return None,
    };
    if !has_keys(body, &["key"]) {
        return None;
    }
    Some((kind, body.get("key")?.as_str()?))
}

fn port_of(v: Option<&Value>) -> Option<Port> {
    Port::parse(&v?.as_u64()?.to_string()).ok()
}

fn port_spec(v: &Value) -> Option<PortSpec> {
    if v.is_number() {
        return Some(PortSpec::Single(port_of(Some(v))?));
    }
    let (kind, range) = single(v)?;
    let [a, b] = range.as_array().filter(|_| kind == "range")?.as_slice() else {
        return None;
    };
    let (lo, hi) = (port_of(Some(a))?, port_of(Some(b))?);
    (lo <= hi).then_some(PortSpec::Range(lo, hi))
}

/// A set element that is a prefix or a single address.
fn set_cidr(e: &Value) -> Option<Cidr> {
    match single(e) {
        Some(("prefix", prefix)) if has_keys(prefix, &["addr", "len"]) => Cidr::new(
            parse_ip(prefix.get("addr")?.as_str()?).ok()?,
            u8::try_from(prefix.get("len")?.as_u64()?).ok()?,
        )
        .ok(),
        _ => Some(Cidr::host(parse_ip(e.as_str()?).ok()?)),
    }
}

fn match_stmt(m: &Value) -> Option<Stmt> {
    if !has_keys(m, &["op", "left", "right"]) {
        return None;
    }
    let negated = match m.get("op")?.as_str()? {
        "==" | "in" => false,
        "!=" => true,
        _ => return None,
    };
    let left = m.get("left")?;
    let right = m.get("right")?;
    if let Some(("payload", p)) = single(left) {
        if !has_keys(p, &["protocol", "field"]) {
            return None;
        }
        let field = p.get("field")?.as_str()?;
        return match p.get("protocol")?.as_str()? {
            protocol @ ("ip" | "ip6") if matches!(single(right), Some(("set", _))) => {
                // An anonymous set (`--compact`): prefixes, addresses and the ranges nft's
                // automerge makes of adjacent prefixes, read back as the fewest prefixes.
                let family = if protocol == "ip" { Family::V4 } else { Family::V6 };
                let Some(("set", Value::Array(set))) = single(right) else {
                    return None;
                };
                if negated || field != "daddr" || set.is_empty() {
                    return None;
                }
                let mut cidrs = Vec::new();
                for e in set {
                    match single(e) {
                        Some(("range", Value::Array(range))) => {
                            let [a, b] = range.as_slice() else { return None };
                            let (a, b) = (parse_ip(a.as_str()?).ok()?, parse_ip(b.as_str()?).ok()?);
                            let (lo, hi, bits) = match (a, b) {
                                (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a).into(), u32::from(b).into(), 32),
                                (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
                                _ => return None,
                            };
                            if lo > hi || (bits == 32) != (family == Family::V4) {
                                return None;
                            }
                            crate::plan::compact::prefixes_of(lo, hi, family, bits, &mut cidrs);
                        }
                        _ => cidrs.push(set_cidr(e).filter(|c| c.family() == family)?),
                    }
                }
                Some(Stmt::AddrSet {
                    direction: nft::Direction::Destination,
                    cidrs: crate::plan::compact::normalise_cidrs(cidrs),
                })
            }
            protocol @ ("ip" | "ip6") => {
                let cidr = match single(right) {
                    Some(("prefix", prefix)) if has_keys(prefix, &["addr", "len"]) => Cidr::new(
                        parse_ip(prefix.get("addr")?.as_str()?).ok()?,
                        u8::try_from(prefix.get("len")?.as_u64()?).ok()?,
                    )
                    .ok()?,
                    _ => Cidr::host(parse_ip(right.as_str()?).ok()?),
                };
                let family = if protocol == "ip" { Family::V4 } else { Family::V6 };
                if cidr.family() != family {
                    return None;
                }
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
                let ports = match single(right) {
                    Some(("set", Value::Array(set))) if !set.is_empty() => {
                        set.iter().map(port_spec).collect::<Option<Vec<_>>>()?
                    }
                    _ => vec![port_spec(right)?],
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
            if negated || name.ends_with('+') {
                // meshcap never negates an interface; a literal `+` is not iptables' wildcard.
                return None;
            }
            let name = match name.strip_suffix('*') {
                Some(prefix) => format!("{prefix}+"),
                None => name.to_string(),
            };
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
                Value::Array(a) if !a.is_empty() => a.iter().map(Value::as_str).collect::<Option<_>>()?,
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

/// `rs` in `nft -j list ruleset` layout (metainfo, tables, objects, chains, then rules chain by
/// chain), for tests and fuzzing: `parse_listing(&listing_json(&rs)) == Ok(rs)` for every `rs`
/// the parser returns.
pub fn listing_json(rs: &Ruleset) -> String {
    let mut items = Vec::new();
    if let Some(v) = &rs.version {
        items.push(json!({"metainfo": {"version": v, "json_schema_version": 1}}));
    }
    for t in &rs.tables {
        items.push(json!({"table": {"family": "inet", "name": t}}));
    }
    for (table, kind, name) in &rs.objects {
        let mut o = Map::new();
        o.insert(kind.clone(), json!({"family": "inet", "table": table, "name": name}));
        items.push(Value::Object(o));
    }
    for ((table, name), c) in &rs.chains {
        let mut body = json!({"family": "inet", "table": table, "name": name});
        if let Some((kind, hook, prio, policy)) = &c.base {
            body["type"] = json!(kind);
            body["hook"] = json!(hook);
            body["prio"] = json!(prio);
            body["policy"] = json!(policy);
        }
        items.push(json!({ "chain": body }));
    }
    for ((table, name), c) in &rs.chains {
        for r in &c.rules {
            let mut body = json!({"family": "inet", "table": table, "chain": name});
            match &r.stmts {
                Ok(rule) => body["expr"] = Value::Array(rule.stmts.iter().map(stmt_json).collect()),
                Err(_) => {
                    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&r.text) {
                        for (k, v) in o {
                            body[k] = v;
                        }
                    }
                }
            }
            items.push(json!({ "rule": body }));
        }
    }
    json!({ "nftables": items }).to_string()
}

fn match_json(negated: bool, left: Value, right: Value) -> Value {
    json!({"match": {"op": if negated { "!=" } else { "==" }, "left": left, "right": right}})
}

fn port_json(p: &PortSpec) -> Value {
    match p {
        PortSpec::Single(p) => json!(p.get()),
        PortSpec::Range(lo, hi) => json!({"range": [lo.get(), hi.get()]}),
    }
}

/// One statement as nft lists it in JSON.
fn stmt_json(s: &Stmt) -> Value {
    let meta = |key: &str| json!({"meta": {"key": key}});
    let ct = |key: &str| json!({"ct": {"key": key}});
    match s {
        Stmt::Iface { input, name } => {
            let text = match name.as_str().strip_suffix('+') {
                Some(body) => format!("{body}*"),
                None => name.to_string(),
            };
            match_json(false, meta(if *input { "iifname" } else { "oifname" }), json!(text))
        }
        Stmt::L4Proto(p) => match_json(false, meta("l4proto"), json!(p.as_str())),
        Stmt::CtState(states) => {
            let words: Vec<&str> = states
                .iter()
                .map(|s| match s {
                    CtState::Invalid => "invalid",
                    CtState::New => "new",
                    CtState::Related => "related",
                    CtState::Established => "established",
                })
                .collect();
            let right = match words.as_slice() {
                [one] => json!(one),
                many => json!(many),
            };
            json!({"match": {"op": "in", "left": ct("state"), "right": right}})
        }
        Stmt::Addr {
            direction,
            negated,
            cidr,
        } => {
            let (protocol, full) = match cidr.family() {
                Family::V4 => ("ip", 32),
                Family::V6 => ("ip6", 128),
            };
            let field = match direction {
                nft::Direction::Source => "saddr",
                nft::Direction::Destination => "daddr",
            };
            let right = if cidr.prefix_len() == full {
                json!(cidr.addr().to_string())
            } else {
                json!({"prefix": {"addr": cidr.addr().to_string(), "len": cidr.prefix_len()}})
            };
            match_json(
                *negated,
                json!({"payload": {"protocol": protocol, "field": field}}),
                right,
            )
        }
        Stmt::AddrSet { direction, cidrs } => {
            let protocol = match cidrs.first().map_or(Family::V4, Cidr::family) {
                Family::V4 => "ip",
                Family::V6 => "ip6",
            };
            let field = match direction {
                nft::Direction::Source => "saddr",
                nft::Direction::Destination => "daddr",
            };
            let elements: Vec<Value> = cidrs
                .iter()
                .map(|c| {
                    let full = if c.family() == Family::V4 { 32 } else { 128 };
                    if c.prefix_len() == full {
                        json!(c.addr().to_string())
                    } else {
                        json!({"prefix": {"addr": c.addr().to_string(), "len": c.prefix_len()}})
                    }
                })
                .collect();
            match_json(
                false,
                json!({"payload": {"protocol": protocol, "field": field}}),
                json!({ "set": elements }),
            )
        }
        Stmt::Port {
            proto,
            direction,
            negated,
            ports,
        } => {
            let field = match direction {
                nft::Direction::Source => "sport",
                nft::Direction::Destination => "dport",
            };
            let right = match ports.as_slice() {
                [one] => port_json(one),
                many => json!({"set": many.iter().map(port_json).collect::<Vec<_>>()}),
            };
            match_json(
                *negated,
                json!({"payload": {"protocol": proto.as_str(), "field": field}}),
                right,
            )
        }
        Stmt::Owner {
            kind, negated, owner, ..
        } => {
            let key = match kind {
                OwnerKind::Uid => "skuid",
                OwnerKind::Gid => "skgid",
            };
            let right = match owner {
                Owner::Id(n) => json!(n),
                Owner::Name(s) => json!(s),
            };
            match_json(*negated, meta(key), right)
        }
        Stmt::Mark { negated, mark } => match_json(*negated, meta("mark"), json!(mark.0)),
        Stmt::CtMark(mark) => match_json(false, ct("mark"), json!(mark.0)),
        Stmt::Counter => json!({"counter": {"packets": 0, "bytes": 0}}),
        Stmt::Jump(c) => json!({"jump": {"target": c.name()}}),
        Stmt::Return => json!({"return": null}),
        Stmt::Accept => json!({"accept": null}),
        Stmt::Drop => json!({"drop": null}),
        Stmt::Redirect(p) => json!({"redirect": {"port": p.get()}}),
        Stmt::Tproxy { family, port } => match family {
            Some(f) => json!({"tproxy": {"family": if *f == Family::V4 { "ip" } else { "ip6" }, "port": port.get()}}),
            None => json!({"tproxy": {"port": port.get()}}),
        },
        Stmt::SetMark(m) => json!({"mangle": {"key": meta("mark"), "value": m.0}}),
        Stmt::SaveMark => json!({"mangle": {"key": ct("mark"), "value": meta("mark")}}),
        Stmt::RestoreMark => json!({"mangle": {"key": meta("mark"), "value": ct("mark")}}),
        Stmt::CtZone(z) => json!({"mangle": {"key": ct("zone"), "value": z}}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(out.base, Some(("nat".into(), "output".into(), -100, "accept".into())));
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
    fn malformed_items_of_meshcaps_tables_are_errors() {
        let wrap = |items: &str| format!(r#"{{"nftables": [{items}]}}"#);
        let table = r#"{"table": {"family": "inet", "name": "istio-proxy-raw"}}"#;
        let chain = r#"{"chain": {"family": "inet", "table": "istio-proxy-raw", "name": "x"}}"#;
        for (text, why) in [
            ("[]".to_string(), "no 'nftables' array"),
            ("{".to_string(), "not nft JSON"),
            (wrap(r#"{"a": 1, "b": 2}"#), "item 0: not an object with one key"),
            (wrap(&format!("{table}, {chain}, {chain}")), "listed twice"),
            (
                wrap(&format!(
                    r#"{table}, {{"rule": {{"family": "inet", "table": "istio-proxy-raw", "chain": "x", "expr": []}}}}"#
                )),
                "before its chain",
            ),
            (
                wrap(&format!(
                    r#"{table}, {{"chain": {{"family": "inet", "table": "istio-proxy-raw", "name": "o", "hook": "output", "type": "filter"}}}}"#
                )),
                "priority that is not a number",
            ),
        ] {
            let e = parse_listing(&text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
        // Other tables' items are never looked at.
        let foreign = wrap(r#"{"rule": {"family": "inet", "table": "kube-proxy", "chain": "x", "expr": "junk"}}"#);
        assert_eq!(parse_listing(&foreign).unwrap(), Ruleset::default());
    }

    #[test]
    fn options_meshcap_never_writes_make_a_rule_unknown() {
        let rule = |expr: &str| {
            let text = format!(
                r#"{{"nftables": [{{"table": {{"family": "inet", "name": "istio-proxy-raw"}}}},
                {{"chain": {{"family": "inet", "table": "istio-proxy-raw", "name": "istio-inbound"}}}},
                {{"rule": {{"family": "inet", "table": "istio-proxy-raw", "chain": "istio-inbound", "expr": [{expr}]}}}}]}}"#
            );
            let rs = parse_listing(&text).unwrap();
            rs.chains[&("istio-proxy-raw".to_string(), "istio-inbound".to_string())].rules[0].clone()
        };
        for expr in [
            r#"{"jump": {"target": "elsewhere"}}"#,
            r#"{"goto": {"target": "istio-inbound"}}"#,
            r#"{"counter": "named"}"#,
            r#"{"return": {"x": 1}}"#,
            r#"{"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}"#,
            r#"{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth+"}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "::1"}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 0}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"range": [9, 3]}}}"#,
            r#"{"match": {"op": "<", "left": {"meta": {"key": "mark"}}, "right": 1}}"#,
            r#"{"redirect": {"port": 15001, "flags": ["random"]}}"#,
            r#"{"tproxy": {"family": "ip", "addr": "10.0.0.1", "port": 1}}"#,
            r#"{"mangle": {"key": {"ct": {"key": "zone", "dir": "original"}}, "value": 1}}"#,
            r#"{"mangle": {"key": {"ct": {"key": "mark"}}, "value": {"meta": {"key": "mark"}}, "x": 1}}"#,
        ] {
            assert!(rule(expr).stmts.is_err(), "{expr}");
        }
    }
}
