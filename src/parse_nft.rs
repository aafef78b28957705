//! The inverse of `render::nft` for the live state: `nft -j list ruleset` output → [`NftState`],
//! meshcap's `inet` tables with their chains and rules in kernel order, rules as the typed
//! statements the renderer writes ([`Stmt`]).
//!
//! Why JSON (libnftables-json(5), schema version 1) and not the text listing: the text is meant
//! for people and changes its spelling with the version and the context (interface names
//! quoted, marks as `0x00000539`, `priority mangle` instead of `-150`, `counter packets 0 bytes
//! 0`, sets and ranges in several notations); the JSON gives every value typed and unquoted,
//! prefixes as address + length, counters as separate objects and the owning table/chain of
//! every object, so nothing is re-tokenised or guessed. `serde_json` was already a dependency.
//!
//! Only meshcap's three `inet` tables (`istio-proxy-nat|mangle|raw`) are read; other tables
//! and families, and everything in them, are skipped unread. Inside meshcap's tables the parser
//! is strict: a malformed object is an error ([`NftParseError`]); a rule using an expression
//! meshcap never writes (or spelled with options meshcap never uses) is kept as
//! [`StateRule::Unknown`] with its JSON, and sets, maps, flowtables and named objects are listed
//! in [`StateTable::objects`], so that all of these show up as drift instead of being accepted.
//!
//! [`listing_json`] writes a state back in nft's JSON layout (tests, fuzzing, dry-run of
//! `check`); `parse_listing(listing_json(s)) == s` for every parsed `s`.

use std::fmt;

use serde_json::{Map, Value, json};

use crate::model::{CtState, Hook, Proto};
use crate::render::nft::{Direction, NftRule, NftTable, OwnerKind, Stmt, hook_name};
use crate::values::{Cidr, Family, Iface, Mark, Owner, Port, PortSpec, parse_ip};

/// The type, hook, priority and policy of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseSpec {
    /// `filter`, `nat`, `route`.
    pub kind: String,
    pub hook: String,
    pub priority: i64,
    pub policy: String,
}

impl BaseSpec {
    /// The spec meshcap gives the base chain of `table` on `hook` (policy accept).
    pub fn planned(table: NftTable, hook: Hook) -> BaseSpec {
        let (kind, priority) = table.base_spec(hook);
        BaseSpec {
            kind: kind.to_string(),
            hook: hook_name(hook).to_string(),
            priority: priority.into(),
            policy: "accept".to_string(),
        }
    }
}

impl fmt::Display for BaseSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{ type {} hook {} priority {} ; policy {} ; }}",
            self.kind, self.hook, self.priority, self.policy
        )
    }
}

/// A rule of one of meshcap's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateRule {
    /// Made only of statements meshcap writes.
    Known(NftRule),
    /// Anything else: the rule's JSON (its `expr` array, and its comment if it has one).
    Unknown(String),
}

impl fmt::Display for StateRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateRule::Known(r) => write!(f, "{r}"),
            StateRule::Unknown(json) => write!(f, "(not meshcap's syntax) {json}"),
        }
    }
}

/// A chain of one of meshcap's tables (any name: a chain meshcap does not use is drift).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChain {
    pub name: String,
    /// `None` for a regular chain.
    pub base: Option<BaseSpec>,
    pub rules: Vec<StateRule>,
}

/// One of meshcap's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTable {
    pub table: NftTable,
    /// In listing (creation) order.
    pub chains: Vec<StateChain>,
    /// Sets, maps, flowtables and named objects, as (kind, name): meshcap creates none.
    pub objects: Vec<(String, String)>,
}

impl StateTable {
    pub fn new(table: NftTable) -> StateTable {
        StateTable {
            table,
            chains: Vec::new(),
            objects: Vec::new(),
        }
    }

    pub fn chain(&self, name: &str) -> Option<&StateChain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

/// meshcap's `inet` tables, in listing order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NftState {
    pub tables: Vec<StateTable>,
}

impl NftState {
    pub fn table(&self, t: NftTable) -> Option<&StateTable> {
        self.tables.iter().find(|x| x.table == t)
    }

    pub fn table_mut(&mut self, t: NftTable) -> Option<&mut StateTable> {
        self.tables.iter_mut().find(|x| x.table == t)
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

/// A parsed `nft -j list ruleset` output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NftListing {
    /// `metainfo.version` (e.g. `1.0.6`), when listed.
    pub version: Option<String>,
    pub state: NftState,
}

/// Why a listing could not be read: the 0-based index of the offending item in the
/// `nftables` array (if any) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftParseError {
    pub item: Option<usize>,
    pub why: String,
}

impl fmt::Display for NftParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            Some(i) => write!(f, "item {i}: {}", self.why),
            None => f.write_str(&self.why),
        }
    }
}

impl std::error::Error for NftParseError {}

/// The single `{"kind": body}` pair of an nft JSON object.
fn single(v: &Value) -> Option<(&str, &Value)> {
    let o = v.as_object()?;
    let mut it = o.iter();
    match (it.next(), it.next()) {
        (Some((k, b)), None) => Some((k.as_str(), b)),
        _ => None,
    }
}

/// Whether the object `v` has exactly the keys `keys`.
fn has_keys(v: &Value, keys: &[&str]) -> bool {
    v.as_object()
        .is_some_and(|o| o.len() == keys.len() && keys.iter().all(|k| o.contains_key(*k)))
}

/// The table an item belongs to, if it is one of meshcap's (`family` inet, `key` naming it).
fn ours(body: &Value, key: &str) -> Option<NftTable> {
    if body.get("family")?.as_str()? != "inet" {
        return None;
    }
    NftTable::from_name(body.get(key)?.as_str()?)
}

/// Reads `nft -j list ruleset [inet]` output.
pub fn parse_listing(text: &str) -> Result<NftListing, NftParseError> {
    let v: Value = serde_json::from_str(text).map_err(|e| NftParseError {
        item: None,
        why: format!("not JSON: {e}"),
    })?;
    let items = v.get("nftables").and_then(Value::as_array).ok_or(NftParseError {
        item: None,
        why: "no \"nftables\" array at the top level".into(),
    })?;
    let mut listing = NftListing::default();
    for (i, item) in items.iter().enumerate() {
        let fail = |why: String| NftParseError { item: Some(i), why };
        let (kind, body) = single(item).ok_or_else(|| fail("expected an object with one key".into()))?;
        match kind {
            "metainfo" => listing.version = body.get("version").and_then(Value::as_str).map(str::to_string),
            "table" => {
                let Some(t) = ours(body, "name") else { continue };
                if listing.state.table(t).is_some() {
                    return Err(fail(format!("table {t} is listed twice")));
                }
                listing.state.tables.push(StateTable::new(t));
            }
            "chain" => {
                let Some(t) = ours(body, "table") else { continue };
                let table = listing
                    .state
                    .table_mut(t)
                    .ok_or_else(|| fail(format!("a chain of {t} before the table")))?;
                let name = str_field(body, "name").map_err(fail)?;
                if table.chain(&name).is_some() {
                    return Err(fail(format!("chain {name} of {t} is listed twice")));
                }
                let base = match body.get("hook") {
                    None => None,
                    Some(_) => Some(BaseSpec {
                        kind: str_field(body, "type").map_err(fail)?,
                        hook: str_field(body, "hook").map_err(fail)?,
                        priority: body
                            .get("prio")
                            .and_then(Value::as_i64)
                            .ok_or_else(|| fail(format!("base chain {name} of {t} without a numeric prio")))?,
                        policy: match body.get("policy") {
                            None => "accept".to_string(),
                            Some(_) => str_field(body, "policy").map_err(fail)?,
                        },
                    }),
                };
                table.chains.push(StateChain {
                    name,
                    base,
                    rules: Vec::new(),
                });
            }
            "rule" => {
                let Some(t) = ours(body, "table") else { continue };
                let chain = str_field(body, "chain").map_err(fail)?;
                let expr = body
                    .get("expr")
                    .and_then(Value::as_array)
                    .ok_or_else(|| fail(format!("a rule of {t} {chain} without an expr array")))?;
                let rule = match rule(t, expr) {
                    Some(r) if body.get("comment").is_none() => StateRule::Known(r),
                    _ => StateRule::Unknown(unknown_text(body)),
                };
                let c = listing
                    .state
                    .table_mut(t)
                    .and_then(|x| x.chains.iter_mut().find(|c| c.name == chain))
                    .ok_or_else(|| fail(format!("a rule of {t} {chain} before its chain")))?;
                c.rules.push(rule);
            }
            other => {
                // Sets, maps, elements, flowtables, counters, quotas, …: meshcap makes none.
                let Some(t) = ours(body, "table") else { continue };
                let name = body.get("name").and_then(Value::as_str).unwrap_or("").to_string();
                let table = listing
                    .state
                    .table_mut(t)
                    .ok_or_else(|| fail(format!("a {other} of {t} before the table")))?;
                table.objects.push((other.to_string(), name));
            }
        }
    }
    Ok(listing)
}

fn str_field(body: &Value, key: &str) -> Result<String, String> {
    body.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("no string \"{key}\""))
}

fn unknown_text(body: &Value) -> String {
    let mut o = Map::new();
    for k in ["expr", "comment"] {
        if let Some(v) = body.get(k) {
            o.insert(k.to_string(), v.clone());
        }
    }
    Value::Object(o).to_string()
}

/// A rule made only of statements meshcap writes, or `None`.
fn rule(table: NftTable, expr: &[Value]) -> Option<NftRule> {
    let stmts = expr.iter().map(|e| stmt(table, e)).collect::<Option<Vec<Stmt>>>()?;
    Some(NftRule { stmts })
}

/// `{"meta": {"key": K}}` → ("meta", K); `{"ct": {"key": K}}` → ("ct", K) (no direction).
fn selector(v: &Value) -> Option<(&str, &str)> {
    let (kind, body) = single(v)?;
    if !matches!(kind, "meta" | "ct") || !has_keys(body, &["key"]) {
        return None;
    }
    Some((kind, body.get("key")?.as_str()?))
}

/// `{"payload": {"protocol": P, "field": F}}` → (P, F).
fn payload(v: &Value) -> Option<(&str, &str)> {
    let (kind, body) = single(v)?;
    if kind != "payload" || !has_keys(body, &["protocol", "field"]) {
        return None;
    }
    Some((body.get("protocol")?.as_str()?, body.get("field")?.as_str()?))
}

fn u32_of(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn port_of(v: &Value) -> Option<Port> {
    let n = v.as_u64()?;
    Port::parse(&n.to_string()).ok()
}

fn port_spec(v: &Value) -> Option<PortSpec> {
    if v.is_number() {
        return port_of(v).map(PortSpec::Single);
    }
    let (kind, body) = single(v)?;
    match (kind, body.as_array().map(Vec::as_slice)) {
        ("range", Some([lo, hi])) => {
            let (lo, hi) = (port_of(lo)?, port_of(hi)?);
            (lo <= hi).then_some(PortSpec::Range(lo, hi))
        }
        _ => None,
    }
}

fn ct_state(v: &Value) -> Option<CtState> {
    match v.as_str()? {
        "invalid" => Some(CtState::Invalid),
        "new" => Some(CtState::New),
        "related" => Some(CtState::Related),
        "established" => Some(CtState::Established),
        _ => None,
    }
}

fn cidr(v: &Value, family: Family) -> Option<Cidr> {
    let c = match v {
        Value::String(s) => Cidr::host(parse_ip(s).ok()?),
        _ => {
            let (kind, body) = single(v)?;
            if kind != "prefix" || !has_keys(body, &["addr", "len"]) {
                return None;
            }
            let addr = parse_ip(body.get("addr")?.as_str()?).ok()?;
            let len = u8::try_from(body.get("len")?.as_u64()?).ok()?;
            Cidr::new(addr, len).ok()?
        }
    };
    (c.family() == family).then_some(c)
}

/// An interface name as nft lists it: a trailing `*` is the prefix wildcard (iptables' `+`).
fn iface(v: &Value) -> Option<Iface> {
    let s = v.as_str()?;
    if s.ends_with('+') {
        return None; // a literal `+`, which the model would read as iptables' wildcard
    }
    let name = match s.strip_suffix('*') {
        Some(body) => format!("{body}+"),
        None => s.to_string(),
    };
    Iface::parse(&name).ok()
}

fn owner(v: &Value) -> Option<Owner> {
    match v {
        Value::Number(_) => u32_of(v).map(Owner::Id),
        Value::String(s) => Owner::parse(s).ok(),
        _ => None,
    }
}

fn proto(v: &Value) -> Option<Proto> {
    match v {
        Value::String(s) if s == "tcp" => Some(Proto::Tcp),
        Value::String(s) if s == "udp" => Some(Proto::Udp),
        Value::Number(n) if n.as_u64() == Some(6) => Some(Proto::Tcp),
        Value::Number(n) if n.as_u64() == Some(17) => Some(Proto::Udp),
        _ => None,
    }
}

/// A `match` expression meshcap writes.
fn matched(body: &Value) -> Option<Stmt> {
    if !has_keys(body, &["op", "left", "right"]) {
        return None;
    }
    let (left, right) = (body.get("left")?, body.get("right")?);
    let op = body.get("op")?.as_str()?;
    let negated = match op {
        "==" | "in" => false,
        "!=" => true,
        _ => return None,
    };
    if let Some((kind, key)) = selector(left) {
        return match (kind, key) {
            ("meta", "iifname" | "oifname") if !negated => Some(Stmt::Iface {
                input: key == "iifname",
                name: iface(right)?,
            }),
            ("meta", "l4proto") if !negated => Some(Stmt::L4Proto(proto(right)?)),
            ("meta", "skuid" | "skgid") => Some(Stmt::Owner {
                kind: if key == "skuid" { OwnerKind::Uid } else { OwnerKind::Gid },
                negated,
                owner: owner(right)?,
                meta: false,
            }),
            ("meta", "mark") => Some(Stmt::Mark {
                negated,
                mark: Mark(u32_of(right)?),
            }),
            ("ct", "mark") if !negated => Some(Stmt::CtMark(Mark(u32_of(right)?))),
            ("ct", "state") if !negated => {
                let states = match right {
                    Value::Array(list) if !list.is_empty() => list.iter().map(ct_state).collect::<Option<Vec<_>>>()?,
                    one => vec![ct_state(one)?],
                };
                Some(Stmt::CtState(states))
            }
            _ => None,
        };
    }
    let (protocol, field) = payload(left)?;
    let direction = match field {
        "saddr" | "sport" => Direction::Source,
        "daddr" | "dport" => Direction::Destination,
        _ => return None,
    };
    match (protocol, field) {
        ("ip" | "ip6", "saddr" | "daddr") => {
            let family = if protocol == "ip" { Family::V4 } else { Family::V6 };
            Some(Stmt::Addr {
                direction,
                negated,
                cidr: cidr(right, family)?,
            })
        }
        ("tcp" | "udp", "sport" | "dport") => {
            let ports = match single(right) {
                Some(("set", Value::Array(list))) if !list.is_empty() => {
                    list.iter().map(port_spec).collect::<Option<Vec<_>>>()?
                }
                _ => vec![port_spec(right)?],
            };
            Some(Stmt::Port {
                proto: if protocol == "tcp" { Proto::Tcp } else { Proto::Udp },
                direction,
                negated,
                ports,
            })
        }
        _ => None,
    }
}

/// One statement meshcap writes, or `None`.
fn stmt(table: NftTable, e: &Value) -> Option<Stmt> {
    let (kind, body) = single(e)?;
    match kind {
        "match" => matched(body),
        "counter" => {
            let anonymous = body.is_null()
                || body.as_object().is_some_and(|o| {
                    o.iter()
                        .all(|(k, v)| matches!(k.as_str(), "packets" | "bytes") && v.is_u64())
                });
            anonymous.then_some(Stmt::Counter)
        }
        "jump" if has_keys(body, &["target"]) => table.chain(body.get("target")?.as_str()?).map(Stmt::Jump),
        "return" if body.is_null() => Some(Stmt::Return),
        "accept" if body.is_null() => Some(Stmt::Accept),
        "drop" if body.is_null() => Some(Stmt::Drop),
        "redirect" if has_keys(body, &["port"]) => Some(Stmt::Redirect(port_of(body.get("port")?)?)),
        "tproxy" => {
            let family = match body.get("family") {
                None => None,
                Some(f) => Some(match f.as_str()? {
                    "ip" => Family::V4,
                    "ip6" => Family::V6,
                    _ => return None,
                }),
            };
            let keys = if family.is_some() {
                &["family", "port"][..]
            } else {
                &["port"]
            };
            if !has_keys(body, keys) {
                return None;
            }
            Some(Stmt::Tproxy {
                family,
                port: port_of(body.get("port")?)?,
            })
        }
        "mangle" if has_keys(body, &["key", "value"]) => {
            let value = body.get("value")?;
            match selector(body.get("key")?)? {
                ("meta", "mark") if value.is_number() => Some(Stmt::SetMark(Mark(u32_of(value)?))),
                ("meta", "mark") if selector(value) == Some(("ct", "mark")) => Some(Stmt::RestoreMark),
                ("ct", "mark") if selector(value) == Some(("meta", "mark")) => Some(Stmt::SaveMark),
                ("ct", "zone") => Some(Stmt::CtZone(u16::try_from(value.as_u64()?).ok()?)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn match_json(op: bool, left: Value, right: Value) -> Value {
    json!({"match": {"op": if op { "!=" } else { "==" }, "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn ct(key: &str) -> Value {
    json!({"ct": {"key": key}})
}

fn port_json(p: &PortSpec) -> Value {
    match p {
        PortSpec::Single(p) => json!(p.get()),
        PortSpec::Range(lo, hi) => json!({"range": [lo.get(), hi.get()]}),
    }
}

fn ct_state_word(s: CtState) -> &'static str {
    match s {
        CtState::Invalid => "invalid",
        CtState::New => "new",
        CtState::Related => "related",
        CtState::Established => "established",
    }
}

/// One statement as nft lists it in JSON.
fn stmt_json(s: &Stmt) -> Value {
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
            let words: Vec<&str> = states.iter().map(|s| ct_state_word(*s)).collect();
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
            let protocol = match cidr.family() {
                Family::V4 => "ip",
                Family::V6 => "ip6",
            };
            let field = match direction {
                Direction::Source => "saddr",
                Direction::Destination => "daddr",
            };
            let full = match cidr.family() {
                Family::V4 => 32,
                Family::V6 => 128,
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
        Stmt::Port {
            proto,
            direction,
            negated,
            ports,
        } => {
            let field = match direction {
                Direction::Source => "sport",
                Direction::Destination => "dport",
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
            kind,
            negated,
            owner,
            meta: _,
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

/// `state` in nft's JSON listing layout (metainfo, then per table: the table, its objects, its
/// chains, then the rules chain by chain).
pub fn listing_json(version: Option<&str>, state: &NftState) -> String {
    let mut items = Vec::new();
    if let Some(v) = version {
        items.push(json!({"metainfo": {"version": v, "json_schema_version": 1}}));
    }
    for (h, t) in state.tables.iter().enumerate() {
        let table = t.table.name();
        items.push(json!({"table": {"family": "inet", "name": table, "handle": h + 1}}));
        for (kind, name) in &t.objects {
            let mut o = Map::new();
            o.insert(kind.clone(), json!({"family": "inet", "table": table, "name": name}));
            items.push(Value::Object(o));
        }
        for c in &t.chains {
            let mut body = json!({"family": "inet", "table": table, "name": c.name});
            if let Some(b) = &c.base {
                body["type"] = json!(b.kind);
                body["hook"] = json!(b.hook);
                body["prio"] = json!(b.priority);
                body["policy"] = json!(b.policy);
            }
            items.push(json!({ "chain": body }));
        }
        for c in &t.chains {
            for r in &c.rules {
                let mut body = json!({"family": "inet", "table": table, "chain": c.name});
                match r {
                    StateRule::Known(rule) => {
                        body["expr"] = Value::Array(rule.stmts.iter().map(stmt_json).collect());
                    }
                    StateRule::Unknown(text) => {
                        if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(text) {
                            for (k, v) in o {
                                body[k] = v;
                            }
                        }
                    }
                }
                items.push(json!({ "rule": body }));
            }
        }
    }
    json!({ "nftables": items }).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two rules of the live listing seen in a namespace (nft 1.0.6), trimmed.
    const LISTING: &str = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
      {"table": {"family": "ip", "name": "nat", "handle": 9}},
      {"chain": {"family": "ip", "table": "nat", "name": "OUTPUT", "handle": 1, "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}},
      {"rule": {"family": "ip", "table": "nat", "chain": "OUTPUT", "handle": 2, "expr": [{"xt": {"type": "target", "name": "foo"}}]}},
      {"table": {"family": "inet", "name": "istio-proxy-nat", "handle": 1}},
      {"chain": {"family": "inet", "table": "istio-proxy-nat", "name": "output", "handle": 2, "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}},
      {"chain": {"family": "inet", "table": "istio-proxy-nat", "name": "istio-output", "handle": 6}},
      {"chain": {"family": "inet", "table": "istio-proxy-nat", "name": "istio-in-redirect", "handle": 5}},
      {"rule": {"family": "inet", "table": "istio-proxy-nat", "chain": "output", "handle": 20, "expr": [{"counter": {"packets": 3, "bytes": 180}}, {"jump": {"target": "istio-output"}}]}},
      {"rule": {"family": "inet", "table": "istio-proxy-nat", "chain": "istio-output", "handle": 22, "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "lo"}},
        {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "127.0.0.1"}},
        {"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [53, 15008]}}},
        {"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 1337}},
        {"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "istio-in-redirect"}}]}},
      {"rule": {"family": "inet", "table": "istio-proxy-nat", "chain": "istio-output", "handle": 23, "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}, {"counter": null}, {"return": null}]}},
      {"set": {"family": "inet", "table": "istio-proxy-nat", "name": "extra", "type": "ipv4_addr", "handle": 7}},
      {"table": {"family": "inet", "name": "kube-proxy", "handle": 3}},
      {"rule": {"family": "inet", "table": "kube-proxy", "chain": "x", "handle": 2, "expr": "not even an array"}}
    ]}"#;

    /// The plan `meshcap render --ipv6 ARGS` would render.
    pub(crate) fn test_plan(args: &[&str]) -> crate::plan::Plan {
        use clap::Parser;
        let mut argv = vec!["meshcap", "render", "--ipv6", "--native-nftables"];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let Some(crate::cli::Command::Render(r)) = cli.command else {
            panic!("not a render command")
        };
        crate::app::plan_for_render(&r, &crate::host::Env::default()).unwrap().1
    }

    #[test]
    fn reads_meshcaps_tables_and_skips_the_others() {
        let l = parse_listing(LISTING).unwrap();
        assert_eq!(l.version.as_deref(), Some("1.0.6"));
        assert_eq!(l.state.tables.len(), 1);
        let t = l.state.table(NftTable::Nat).unwrap();
        assert_eq!(t.objects, [("set".to_string(), "extra".to_string())]);
        let names: Vec<&str> = t.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["output", "istio-output", "istio-in-redirect"]);
        assert_eq!(
            t.chain("output").unwrap().base,
            Some(BaseSpec::planned(NftTable::Nat, Hook::Output))
        );
        assert_eq!(
            t.chain("output").unwrap().rules[0].to_string(),
            "counter jump istio-output"
        );
        let out = &t.chain("istio-output").unwrap().rules;
        assert_eq!(
            out[0].to_string(),
            "oifname lo ip daddr != 127.0.0.1/32 tcp dport != { 53, 15008 } skuid 1337 counter jump istio-in-redirect"
        );
        assert!(
            matches!(&out[1], StateRule::Unknown(j) if j.contains("nfproto")),
            "{:?}",
            out[1]
        );
    }

    #[test]
    fn every_statement_meshcap_writes_round_trips() {
        // Every configuration knob, through the renderer, the kernel-state model and JSON.
        let plan_args: &[&[&str]] = &[
            &[
                "-m",
                "TPROXY",
                "-b",
                "*",
                "-d",
                "8000:8100",
                "-c",
                "veth+,a@b",
                "--drop-invalid",
            ],
            &[
                "--redirect-dns",
                "--capture-all-dns",
                "-u",
                "1,2",
                "-g",
                "3",
                "-o",
                "53,1000:2000",
            ],
            &[
                "-b",
                "80,443",
                "-k",
                "eth1",
                "-i",
                "10.1.2.3/8,2001:db8::/32",
                "-x",
                "10.9.0.0/16",
            ],
        ];
        for args in plan_args {
            let plan = test_plan(args);
            let tx = crate::render::nft::apply_transaction(&plan).unwrap();
            let state = crate::nft_drift::expected(&tx);
            let json = listing_json(Some("1.0.6"), &state);
            let back = parse_listing(&json).unwrap();
            assert_eq!(back.version.as_deref(), Some("1.0.6"));
            // Equal up to the spelling-only `meta` keyword of raw owners.
            let d = crate::nft_drift::compare(&state, &back.state);
            assert!(d.is_clean(), "{args:?}: {d}");
            assert_eq!(back.state.tables.len(), state.tables.len());
            assert_eq!(
                parse_listing(&listing_json(None, &back.state)).unwrap().state,
                back.state
            );
        }
    }

    #[test]
    fn malformed_items_of_meshcaps_tables_are_errors() {
        let wrap = |items: &str| format!(r#"{{"nftables": [{items}]}}"#);
        let table = r#"{"table": {"family": "inet", "name": "istio-proxy-raw"}}"#;
        for (text, why) in [
            ("[]".to_string(), "no \"nftables\" array"),
            ("{".to_string(), "not JSON"),
            (wrap(r#"{"a": 1, "b": 2}"#), "one key"),
            (
                wrap(r#"{"chain": {"family": "inet", "table": "istio-proxy-raw", "name": "x"}}"#),
                "before the table",
            ),
            (wrap(&format!("{table}, {table}")), "listed twice"),
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
                "numeric prio",
            ),
        ] {
            let e = parse_listing(&text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn unknown_spellings_are_kept_as_unknown_rules() {
        let rule = |expr: &str| {
            let text = format!(
                r#"{{"nftables": [{{"table": {{"family": "inet", "name": "istio-proxy-raw"}}}},
                {{"chain": {{"family": "inet", "table": "istio-proxy-raw", "name": "istio-inbound"}}}},
                {{"rule": {{"family": "inet", "table": "istio-proxy-raw", "chain": "istio-inbound", "expr": [{expr}]}}}}]}}"#
            );
            parse_listing(&text).unwrap().state.tables[0].chains[0].rules[0].clone()
        };
        for expr in [
            r#"{"jump": {"target": "elsewhere"}}"#,
            r#"{"goto": {"target": "istio-inbound"}}"#,
            r#"{"counter": "named"}"#,
            r#"{"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "::1"}}"#,
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 0}}"#,
            r#"{"match": {"op": "<", "left": {"meta": {"key": "mark"}}, "right": 1}}"#,
            r#"{"redirect": {"port": 15001, "flags": ["random"]}}"#,
            r#"{"mangle": {"key": {"ct": {"key": "zone", "dir": "original"}}, "value": 1}}"#,
        ] {
            assert!(matches!(rule(expr), StateRule::Unknown(_)), "{expr}");
        }
        assert_eq!(
            rule(r#"{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}"#)
                .to_string(),
            "ct state established,related"
        );
        assert_eq!(
            rule(r#"{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "veth*"}}"#).to_string(),
            "iifname veth*"
        );
    }
}
