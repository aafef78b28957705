//! The JSON codec: `nft -j list ruleset` read into the IR's state view ([`NftState`]), for
//! drift (`check --native-nftables`, the nft apply backend's state check before writing; see
//! `drift::nft`). Tables other than meshcap's are never looked at.
//!
//! The listing is read back into the IR's own statements ([`Stmt`]), with the vocabulary the
//! text codec spells ([`super::ir`]), so both sides of a comparison are alike. The reader is
//! strict inside meshcap's tables: an expression or an option meshcap never writes (a named
//! counter, `redirect … random`, `ct original mark`, …) makes the rule unknown (so it never
//! equals a planned one) rather than being read as something close, and a malformed item is
//! an error. A base chain's type, hook and policy are read into the IR's words, which cover
//! every word nft lists for an `inet` chain (`ingress` too, though meshcap never declares one:
//! such a chain is drift); any other word makes the listing malformed. Why JSON and not the text listing: values come typed and unquoted (interface
//! names, marks as numbers, prefixes as address + length), counters apart, every object with
//! its table and chain; nothing is re-tokenised.
//!
//! The writer of the same layout (`listing_json`) exists for tests and the fuzz target only
//! (`cfg(test)` or the `fuzzing` feature); the product never writes a listing.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::ir::{
    BaseChain, ChainState, ChainType, CtKey, Direction, MetaKey, NftChain, NftHook, NftRule, NftState, NftTable,
    Object, OwnerKind, Policy, StateRule, Stmt, ct_state_from_word, family_from_word, iface_from_pattern,
    proto_from_word,
};
use crate::values::{Cidr, Family, Mark, Owner, Port, PortSpec, parse_ip};

#[cfg(any(test, feature = "fuzzing"))]
pub use writer::listing_json;

fn is_ours(table: &str) -> bool {
    NftTable::from_name(table).is_some()
}

/// meshcap's tables in an `nft -j list ruleset` output. Items of other tables are skipped
/// unread; inside meshcap's tables a malformed item is an error.
pub fn parse_listing(text: &str) -> Result<NftState, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not nft JSON: {e}"))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("no 'nftables' array in the listing")?;
    let mut rs = NftState::default();
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
                    Some(_) => Some(base_chain(body).map_err(at)?),
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
                chain.rules.push(StateRule { stmts, text });
            }
            other => {
                // Sets, maps, elements, flowtables, named counters, quotas, …
                if ours(body, "table") {
                    let table = str_field(body, "table").map_err(at)?;
                    let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                    rs.objects.insert(Object {
                        table,
                        kind: other.to_string(),
                        name,
                    });
                }
            }
        }
    }
    Ok(rs)
}

/// A base chain's `type`, `hook`, `prio` and `policy` (accept when not listed). nft lists no
/// other words for an `inet` chain; another one is a malformed listing.
fn base_chain(body: &Value) -> Result<BaseChain, String> {
    let kind = str_field(body, "type")?;
    let hook = str_field(body, "hook")?;
    let priority = body
        .get("prio")
        .and_then(Value::as_i64)
        .ok_or("a chain priority that is not a number")?;
    let policy = match body.get("policy") {
        None => Policy::Accept.word().to_string(),
        Some(_) => str_field(body, "policy")?,
    };
    let unknown = |what: &str, word: &str| format!("a chain {what} '{word}' nft does not have");
    Ok(BaseChain {
        kind: ChainType::from_word(&kind).ok_or_else(|| unknown("type", &kind))?,
        hook: NftHook::from_word(&hook).ok_or_else(|| unknown("hook", &hook))?,
        priority: i32::try_from(priority).map_err(|_| format!("a chain priority {priority} out of range"))?,
        policy: Policy::from_word(&policy).ok_or_else(|| unknown("policy", &policy))?,
    })
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

/// The key of a `meta` or `ct` expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Meta(MetaKey),
    Ct(CtKey),
}

/// `{"meta": {"key": K}}` or `{"ct": {"key": K}}` with a key meshcap uses (no direction, no
/// family: meshcap writes neither).
fn key_of(v: Option<&Value>) -> Option<Key> {
    let (kind, body) = single(v?)?;
    if !has_keys(body, &["key"]) {
        return None;
    }
    let key = body.get("key")?.as_str()?;
    match kind {
        "meta" => MetaKey::from_word(key).map(Key::Meta),
        "ct" => CtKey::from_word(key).map(Key::Ct),
        _ => None,
    }
}

/// One expression of a listed rule as the IR's statement.
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
            Stmt::Jump(NftChain::regular_named(target).ok_or_else(unknown)?)
        }
        "redirect" if has_keys(body, &["port"]) => Stmt::Redirect(port_of(body.get("port")).ok_or_else(unknown)?),
        "tproxy" => {
            let family = match body.get("family").map(Value::as_str) {
                None => None,
                Some(Some(word)) => Some(family_from_word(word).ok_or_else(unknown)?),
                Some(None) => return Err(unknown()),
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
            let key = key_of(body.get("key")).ok_or_else(unknown)?;
            let value = body.get("value").ok_or_else(unknown)?;
            match (key, key_of(Some(value)), value.as_u64()) {
                (Key::Meta(MetaKey::Mark), _, Some(m)) => Stmt::SetMark(Mark(u32::try_from(m).map_err(|_| unknown())?)),
                (Key::Meta(MetaKey::Mark), Some(Key::Ct(CtKey::Mark)), _) => Stmt::RestoreMark,
                (Key::Ct(CtKey::Mark), Some(Key::Meta(MetaKey::Mark)), _) => Stmt::SaveMark,
                (Key::Ct(CtKey::Zone), _, Some(z)) => Stmt::CtZone(u16::try_from(z).map_err(|_| unknown())?),
                _ => return Err(unknown()),
            }
        }
        _ => return Err(unknown()),
    })
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

/// A prefix (`{"prefix": {"addr": A, "len": N}}`) or a single address.
fn cidr_of(e: &Value) -> Option<Cidr> {
    match single(e) {
        Some(("prefix", prefix)) if has_keys(prefix, &["addr", "len"]) => Cidr::new(
            parse_ip(prefix.get("addr")?.as_str()?).ok()?,
            u8::try_from(prefix.get("len")?.as_u64()?).ok()?,
        )
        .ok(),
        _ => Some(Cidr::host(parse_ip(e.as_str()?).ok()?)),
    }
}

/// An anonymous set of addresses of `family` (`--compact`): prefixes, addresses and the
/// ranges nft's automerge makes of adjacent prefixes, read back as the fewest prefixes.
fn addr_set(set: &[Value], family: Family) -> Option<Vec<Cidr>> {
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
            _ => cidrs.push(cidr_of(e).filter(|c| c.family() == family)?),
        }
    }
    Some(crate::plan::compact::normalise_cidrs(cidrs))
}

/// A `payload` match: addresses (`ip|ip6 saddr|daddr`) or ports (`tcp|udp sport|dport`).
fn payload_stmt(p: &Value, negated: bool, right: &Value) -> Option<Stmt> {
    if !has_keys(p, &["protocol", "field"]) {
        return None;
    }
    let field = p.get("field")?.as_str()?;
    let protocol = p.get("protocol")?.as_str()?;
    if let Some(family) = family_from_word(protocol) {
        let direction = Direction::from_addr_field(field)?;
        if let Some(("set", set)) = single(right) {
            let set = set.as_array()?;
            if negated || direction != Direction::Destination || set.is_empty() {
                return None;
            }
            return Some(Stmt::AddrSet {
                direction,
                cidrs: addr_set(set, family)?,
            });
        }
        let cidr = cidr_of(right)?;
        if cidr.family() != family {
            return None;
        }
        return Some(Stmt::Addr {
            direction,
            negated,
            cidr,
        });
    }
    let proto = proto_from_word(protocol)?;
    let direction = Direction::from_port_field(field)?;
    let ports = match single(right) {
        Some(("set", Value::Array(set))) if !set.is_empty() => set.iter().map(port_spec).collect::<Option<Vec<_>>>()?,
        _ => vec![port_spec(right)?],
    };
    Some(Stmt::Port {
        proto,
        direction,
        negated,
        ports,
    })
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
        return payload_stmt(p, negated, right);
    }
    let number = || right.as_u64().and_then(|n| u32::try_from(n).ok());
    match key_of(Some(left))? {
        // meshcap never negates an interface.
        Key::Meta(key @ (MetaKey::Iifname | MetaKey::Oifname)) if !negated => Some(Stmt::Iface {
            input: key == MetaKey::Iifname,
            name: iface_from_pattern(right.as_str()?)?,
        }),
        Key::Meta(MetaKey::L4proto) if !negated => Some(Stmt::L4Proto(proto_from_word(right.as_str()?)?)),
        Key::Meta(key @ (MetaKey::Skuid | MetaKey::Skgid)) => Some(Stmt::Owner {
            kind: if key == MetaKey::Skuid {
                OwnerKind::Uid
            } else {
                OwnerKind::Gid
            },
            negated,
            owner: Owner::Id(number()?),
            meta: true,
        }),
        Key::Meta(MetaKey::Mark) => Some(Stmt::Mark {
            negated,
            mark: Mark(number()?),
        }),
        Key::Ct(CtKey::Mark) if !negated => Some(Stmt::CtMark(Mark(number()?))),
        Key::Ct(CtKey::State) if !negated => {
            let names: Vec<&str> = match right {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) if !a.is_empty() => a.iter().map(Value::as_str).collect::<Option<_>>()?,
                _ => return None,
            };
            let states = names.into_iter().map(ct_state_from_word).collect::<Option<Vec<_>>>()?;
            Some(Stmt::CtState(states))
        }
        _ => None,
    }
}

/// The writer of the listing layout, for tests and fuzzing (never compiled into the product).
#[cfg(any(test, feature = "fuzzing"))]
mod writer {
    use serde_json::{Map, Value, json};

    use crate::nft::ir::{CtKey, MetaKey, NftState, Stmt, ct_state_word, family_word, iface_pattern};
    use crate::values::{Cidr, Family, Owner, PortSpec};

    /// `rs` in `nft -j list ruleset` layout (metainfo, tables, objects, chains, then rules chain
    /// by chain): `parse_listing(&listing_json(&rs)) == Ok(rs)` for every `rs` the parser returns.
    pub fn listing_json(rs: &NftState) -> String {
        let mut items = Vec::new();
        if let Some(v) = &rs.version {
            items.push(json!({"metainfo": {"version": v, "json_schema_version": 1}}));
        }
        for t in &rs.tables {
            items.push(json!({"table": {"family": "inet", "name": t}}));
        }
        for o in &rs.objects {
            let mut m = Map::new();
            m.insert(
                o.kind.clone(),
                json!({"family": "inet", "table": o.table, "name": o.name}),
            );
            items.push(Value::Object(m));
        }
        for ((table, name), c) in &rs.chains {
            let mut body = json!({"family": "inet", "table": table, "name": name});
            if let Some(base) = &c.base {
                body["type"] = json!(base.kind.word());
                body["hook"] = json!(base.hook.word());
                body["prio"] = json!(base.priority);
                body["policy"] = json!(base.policy.word());
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

    fn match_json(op: &str, left: Value, right: Value) -> Value {
        json!({"match": {"op": op, "left": left, "right": right}})
    }

    fn eq_or_ne(negated: bool) -> &'static str {
        if negated { "!=" } else { "==" }
    }

    fn meta(key: MetaKey) -> Value {
        json!({"meta": {"key": key.word()}})
    }

    fn ct(key: CtKey) -> Value {
        json!({"ct": {"key": key.word()}})
    }

    fn payload(protocol: &str, field: &str) -> Value {
        json!({"payload": {"protocol": protocol, "field": field}})
    }

    fn port_json(p: &PortSpec) -> Value {
        match p {
            PortSpec::Single(p) => json!(p.get()),
            PortSpec::Range(lo, hi) => json!({"range": [lo.get(), hi.get()]}),
        }
    }

    /// A prefix, or a bare address for a host prefix.
    fn cidr_json(c: &Cidr) -> Value {
        let full = if c.family() == Family::V4 { 32 } else { 128 };
        if c.prefix_len() == full {
            json!(c.addr().to_string())
        } else {
            json!({"prefix": {"addr": c.addr().to_string(), "len": c.prefix_len()}})
        }
    }

    /// One statement as nft lists it in JSON.
    fn stmt_json(s: &Stmt) -> Value {
        match s {
            Stmt::Iface { input, name } => {
                let (body, wildcard) = iface_pattern(name);
                let word = if wildcard { format!("{body}*") } else { body.to_string() };
                match_json("==", meta(MetaKey::iface(*input)), json!(word))
            }
            Stmt::L4Proto(p) => match_json("==", meta(MetaKey::L4proto), json!(p.as_str())),
            Stmt::CtState(states) => {
                let words: Vec<&str> = states.iter().map(|s| ct_state_word(*s)).collect();
                let right = match words.as_slice() {
                    [one] => json!(one),
                    many => json!(many),
                };
                match_json("in", ct(CtKey::State), right)
            }
            Stmt::Addr {
                direction,
                negated,
                cidr,
            } => match_json(
                eq_or_ne(*negated),
                payload(family_word(cidr.family()), direction.addr_field()),
                cidr_json(cidr),
            ),
            Stmt::AddrSet { direction, cidrs } => {
                let family = cidrs.first().map_or(Family::V4, Cidr::family);
                let elements: Vec<Value> = cidrs.iter().map(cidr_json).collect();
                match_json(
                    "==",
                    payload(family_word(family), direction.addr_field()),
                    json!({ "set": elements }),
                )
            }
            Stmt::Port {
                proto,
                direction,
                negated,
                ports,
            } => {
                let right = match ports.as_slice() {
                    [one] => port_json(one),
                    many => json!({"set": many.iter().map(port_json).collect::<Vec<_>>()}),
                };
                match_json(
                    eq_or_ne(*negated),
                    payload(proto.as_str(), direction.port_field()),
                    right,
                )
            }
            Stmt::Owner {
                kind, negated, owner, ..
            } => {
                let right = match owner {
                    Owner::Id(n) => json!(n),
                    Owner::Name(s) => json!(s),
                };
                match_json(eq_or_ne(*negated), meta(MetaKey::owner(*kind)), right)
            }
            Stmt::Mark { negated, mark } => match_json(eq_or_ne(*negated), meta(MetaKey::Mark), json!(mark.0)),
            Stmt::CtMark(mark) => match_json("==", ct(CtKey::Mark), json!(mark.0)),
            Stmt::Counter => json!({"counter": {"packets": 0, "bytes": 0}}),
            Stmt::Jump(c) => json!({"jump": {"target": c.name()}}),
            Stmt::Return => json!({"return": null}),
            Stmt::Accept => json!({"accept": null}),
            Stmt::Drop => json!({"drop": null}),
            Stmt::Redirect(p) => json!({"redirect": {"port": p.get()}}),
            Stmt::Tproxy { family, port } => match family {
                Some(f) => json!({"tproxy": {"family": family_word(*f), "port": port.get()}}),
                None => json!({"tproxy": {"port": port.get()}}),
            },
            Stmt::SetMark(m) => json!({"mangle": {"key": meta(MetaKey::Mark), "value": m.0}}),
            Stmt::SaveMark => json!({"mangle": {"key": ct(CtKey::Mark), "value": meta(MetaKey::Mark)}}),
            Stmt::RestoreMark => json!({"mangle": {"key": meta(MetaKey::Mark), "value": ct(CtKey::Mark)}}),
            Stmt::CtZone(z) => json!({"mangle": {"key": ct(CtKey::Zone), "value": z}}),
        }
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
        assert_eq!(out.base, Some(NftTable::Nat.base_chain(crate::model::Hook::Output)));
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
            (
                wrap(&format!(
                    r#"{table}, {{"chain": {{"family": "inet", "table": "istio-proxy-raw", "name": "o", "hook": "egress", "type": "filter", "prio": 0}}}}"#
                )),
                "a chain hook 'egress' nft does not have",
            ),
            (
                wrap(&format!(
                    r#"{table}, {{"chain": {{"family": "inet", "table": "istio-proxy-raw", "name": "o", "hook": "output", "type": "mangle", "prio": 0}}}}"#
                )),
                "a chain type 'mangle' nft does not have",
            ),
            (
                wrap(&format!(
                    r#"{table}, {{"chain": {{"family": "inet", "table": "istio-proxy-raw", "name": "o", "hook": "output", "type": "filter", "prio": 0, "policy": "queue"}}}}"#
                )),
                "a chain policy 'queue' nft does not have",
            ),
            (
                wrap(&format!(
                    r#"{table}, {{"chain": {{"family": "inet", "table": "istio-proxy-raw", "name": "o", "hook": "output", "type": "filter", "prio": 4294967296}}}}"#
                )),
                "a chain priority 4294967296 out of range",
            ),
        ] {
            let e = parse_listing(&text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
        // An ingress chain (which meshcap never declares) is read, to be reported as drift.
        let ingress = wrap(&format!(
            r#"{table}, {{"chain": {{"family": "inet", "table": "istio-proxy-raw", "name": "i", "hook": "ingress", "type": "filter", "prio": 0, "dev": "lo"}}}}"#
        ));
        let rs = parse_listing(&ingress).unwrap();
        let base = rs.chains[&("istio-proxy-raw".to_string(), "i".to_string())]
            .base
            .unwrap();
        assert_eq!(base.hook, NftHook::Ingress);
        assert_eq!(base.policy, Policy::Accept);
        // Other tables' items are never looked at.
        let foreign = wrap(r#"{"rule": {"family": "inet", "table": "kube-proxy", "chain": "x", "expr": "junk"}}"#);
        assert_eq!(parse_listing(&foreign).unwrap(), NftState::default());
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
