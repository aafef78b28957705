//! The inverse of [`super::render`]: iptables-save output (or a restore payload) → model.
//!
//! [`parse_save`] reads the text into a [`SaveDump`]: tables → declared chains → rule entries in
//! order (appends and inserts), each with its tokens and, where understood, a typed
//! [`Rule`]. Rules inside `ISTIO_*` chains and rules that jump to one are parsed strictly (an
//! option meshcap does not know is an error naming the line) unless [`Strictness::Lenient`]
//! is asked for; rules of foreign chains are kept as tokens and never fail the parse.
//! Both spellings iptables accepts or prints are understood: `--to-port`/`--to-ports`,
//! `--set-mark`/`--set-xmark M/0xffffffff`, implicit `-m tcp`, hex marks, long option names.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::model::{
    ChainName, CtState, IstioChain, Match, Op, Position, Proto, Rule, Ruleset, Table, TableName, Target,
};
use crate::values::{Cidr, Family, Iface, Mark, Owner, Port, PortSpec, parse_ip};

/// How to treat rules of meshcap's chains that cannot be parsed.
///
/// Decided on purpose: **every reader of live or user-given state is lenient** (apply, check,
/// cleanup, `trace --from-save`, `check --from-save`). A rule meshcap does not understand
/// inside an `ISTIO_*` chain — another tool's or another version's — must still be seen: drift
/// reports it as unexpected (it never equals a planned rule), cleanup removes it by its tokens,
/// and the tracer stops with an error naming it when a packet reaches it. A strict parse would
/// instead fail the whole read, and apply could neither refuse with a diff nor clean up.
/// [`Strictness::Strict`] is the assertion that meshcap's *own* output is fully understood:
/// the round-trip tests, the kernel tests (`check_netns`) and the fuzz targets use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// An unknown option in an `ISTIO_*` chain (or in a jump to one) is an error.
    Strict,
    /// Keep such rules as tokens (`rule: Err(..)`), e.g. to clean up another tool's leftovers.
    Lenient,
}

/// A parse failure, with the 1-based line and the line's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub(crate) line: usize,
    pub(crate) text: String,
    pub(crate) why: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: '{}'", self.line, self.why, self.text)
    }
}

impl std::error::Error for ParseError {}

/// One `-A`/`-I` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedEntry {
    pub(crate) chain: String,
    pub(crate) position: Position,
    /// The tokens after the chain (and insert position), quotes removed.
    pub(crate) tokens: Vec<String>,
    /// The typed rule, or why it could not be understood.
    pub rule: Result<Rule, String>,
    /// The `-j` target as written, if any.
    pub(crate) target: Option<String>,
}

impl SavedEntry {
    /// Whether the rule jumps to (or goes to) a chain named `ISTIO_*`.
    pub(crate) fn jumps_to_istio(&self) -> bool {
        self.target.as_deref().is_some_and(is_istio_name)
    }
}

/// One table of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedTable {
    pub(crate) name: String,
    /// Chains declared with `:CHAIN …` or `-N CHAIN`, in order (built-ins included when the
    /// dump lists them).
    pub(crate) chains: Vec<String>,
    /// Built-in chains' policies as the dump declares them (`:INPUT DROP [0:0]` → `DROP`).
    pub(crate) policies: BTreeMap<String, String>,
    pub(crate) entries: Vec<SavedEntry>,
}

impl SavedTable {
    pub fn table(&self) -> Option<TableName> {
        TableName::from_name(&self.name)
    }

    /// Every chain's entries after applying appends and inserts in order (what the kernel holds).
    pub fn resolved(&self) -> BTreeMap<String, Vec<SavedEntry>> {
        let mut chains: BTreeMap<String, Vec<SavedEntry>> = BTreeMap::new();
        for c in &self.chains {
            chains.entry(c.clone()).or_default();
        }
        for e in &self.entries {
            let list = chains.entry(e.chain.clone()).or_default();
            match e.position {
                Position::Append => list.push(e.clone()),
                Position::Insert(n) => {
                    let at = (n as usize).saturating_sub(1).min(list.len());
                    list.insert(at, e.clone());
                }
            }
        }
        chains
    }
}

/// A whole dump: every table in the order the text lists them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SaveDump {
    pub tables: Vec<SavedTable>,
}

pub(crate) fn is_istio_name(name: &str) -> bool {
    name.starts_with("ISTIO_")
}

impl SaveDump {
    pub(crate) fn table(&self, name: TableName) -> Option<&SavedTable> {
        self.tables.iter().find(|t| t.name == name.as_str())
    }

    /// Every `ISTIO_*` chain (declared or holding rules), as (table, chain).
    pub fn istio_chains(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for t in &self.tables {
            for c in t.resolved().keys().filter(|c| is_istio_name(c)) {
                out.push((t.name.clone(), c.clone()));
            }
        }
        out
    }

    /// Every rule outside an `ISTIO_*` chain that jumps to one, as (table, entry).
    pub fn istio_jumps(&self) -> Vec<(String, SavedEntry)> {
        let mut out = Vec::new();
        for t in &self.tables {
            for (chain, entries) in t.resolved() {
                if is_istio_name(&chain) {
                    continue;
                }
                out.extend(
                    entries
                        .into_iter()
                        .filter(SavedEntry::jumps_to_istio)
                        .map(|e| (t.name.clone(), e)),
                );
            }
        }
        out
    }

    /// Whether the dump holds anything of meshcap's (an `ISTIO_*` chain or a jump to one).
    pub(crate) fn has_istio_state(&self) -> bool {
        !self.istio_chains().is_empty() || !self.istio_jumps().is_empty()
    }

    /// The dump as a model ruleset (every entry of the four tables must be understood). This is
    /// the inverse of the restore payload renderer.
    pub fn to_ruleset(&self, family: Family) -> Result<Ruleset, String> {
        let mut tables = Vec::new();
        for t in &self.tables {
            let Some(name) = t.table() else { continue };
            let mut ops = Vec::new();
            for e in &t.entries {
                let chain = ChainName::from_name(&e.chain).ok_or_else(|| format!("unknown chain '{}'", e.chain))?;
                let rule = e.rule.clone().map_err(|why| format!("{}: {why}", e.chain))?;
                ops.push(Op {
                    chain,
                    position: e.position,
                    rule,
                });
            }
            if !ops.is_empty() {
                tables.push(Table { name, ops });
            }
        }
        tables.sort_by_key(|t| t.name);
        Ok(Ruleset { family, tables })
    }
}

/// Splits a line into tokens: whitespace-separated, `"…"` quoting with `\"` and `\\` escapes
/// (as iptables-save quotes comments).
pub(crate) fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut token = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quote".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => token.push(c),
                        None => return Err("unterminated quote".into()),
                    },
                    Some(c) => token.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                token.push(c);
                chars.next();
            }
        }
        tokens.push(token);
    }
    Ok(tokens)
}

/// Parses iptables-save output or an iptables-restore payload.
pub fn parse_save(text: &str, strictness: Strictness) -> Result<SaveDump, ParseError> {
    let mut dump = SaveDump::default();
    // The chains declared so far in the current table: a linear search of `chains` per
    // declaration made a dump of 100,000 chains take 8.5 s.
    let mut declared: HashSet<String> = HashSet::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let fail = |why: String| ParseError {
            line: index + 1,
            text: line.to_string(),
            why,
        };
        if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            let name = name.trim();
            if name.is_empty() {
                return Err(fail("a table header without a name".into()));
            }
            dump.tables.push(SavedTable {
                name: name.to_string(),
                chains: Vec::new(),
                policies: BTreeMap::new(),
                entries: Vec::new(),
            });
            declared.clear();
            continue;
        }
        let Some(table) = dump.tables.last_mut() else {
            return Err(fail("a line before any table header".into()));
        };
        if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let chain = words.next().unwrap_or_default();
            if chain.is_empty() {
                return Err(fail("a chain declaration without a name".into()));
            }
            if let Some(policy) = words.next().filter(|p| *p != "-") {
                table.policies.insert(chain.to_string(), policy.to_string());
            }
            if declared.insert(chain.to_string()) {
                table.chains.push(chain.to_string());
            }
            continue;
        }
        let tokens = tokenize(line).map_err(&fail)?;
        let (op, rest) = tokens.split_first().ok_or_else(|| fail("an empty line".into()))?;
        match op.as_str() {
            "-N" | "--new-chain" | "--new" => {
                let [chain] = rest else {
                    return Err(fail("-N takes one chain name".into()));
                };
                if declared.insert(chain.clone()) {
                    table.chains.push(chain.clone());
                }
            }
            "-A" | "--append" | "-I" | "--insert" => {
                let (chain, mut rest) = rest
                    .split_first()
                    .ok_or_else(|| fail(format!("{op} without a chain")))?;
                let mut position = Position::Append;
                if op == "-I" || op == "--insert" {
                    position = Position::Insert(1);
                    if let Some(n) = rest.first().and_then(|t| t.parse::<u32>().ok()) {
                        position = Position::Insert(n);
                        rest = &rest[1..];
                    }
                }
                let target = target_name(rest);
                let rule = parse_rule(rest);
                let ours = is_istio_name(chain) || target.as_deref().is_some_and(is_istio_name);
                if let (Err(why), true, Strictness::Strict) = (&rule, ours, strictness)
                    && TableName::from_name(&table.name).is_some()
                {
                    return Err(fail(why.clone()));
                }
                table.entries.push(SavedEntry {
                    chain: chain.clone(),
                    position,
                    tokens: rest.to_vec(),
                    rule,
                    target,
                });
            }
            _ => return Err(fail(format!("unexpected '{op}'"))),
        }
    }
    Ok(dump)
}

fn target_name(tokens: &[String]) -> Option<String> {
    let at = tokens
        .iter()
        .position(|t| t == "-j" || t == "--jump" || t == "-g" || t == "--goto")?;
    tokens.get(at + 1).cloned()
}

/// Parses the tokens after `-A CHAIN` into a typed rule.
pub(crate) fn parse_rule(tokens: &[String]) -> Result<Rule, String> {
    let mut matches = Vec::new();
    let mut target = None;
    let mut module: Option<String> = None;
    let mut i = 0;
    let mut negated = false;
    let next = |i: &mut usize, what: &str| -> Result<String, String> {
        *i += 1;
        tokens.get(*i).cloned().ok_or_else(|| format!("{what} needs a value"))
    };
    while i < tokens.len() {
        let tok = tokens[i].as_str();
        if tok == "!" {
            if negated {
                return Err("'!' twice".into());
            }
            negated = true;
            i += 1;
            continue;
        }
        let neg = std::mem::take(&mut negated);
        let no_neg = |what: &str| {
            if neg {
                Err(format!("'!' is not supported before {what}"))
            } else {
                Ok(())
            }
        };
        match tok {
            "-i" | "--in-interface" => {
                no_neg(tok)?;
                matches.push(Match::InIface(iface(&next(&mut i, tok)?)?));
            }
            "-o" | "--out-interface" => {
                no_neg(tok)?;
                matches.push(Match::OutIface(iface(&next(&mut i, tok)?)?));
            }
            "-p" | "--protocol" => {
                no_neg(tok)?;
                let p = match next(&mut i, tok)?.as_str() {
                    "tcp" | "6" => Proto::Tcp,
                    "udp" | "17" => Proto::Udp,
                    other => return Err(format!("protocol '{other}' is not one meshcap uses")),
                };
                matches.push(Match::Protocol(p));
            }
            "-s" | "--source" | "--src" => matches.push(Match::Source {
                negated: neg,
                cidr: cidr(&next(&mut i, tok)?)?,
            }),
            "-d" | "--destination" | "--dst" => matches.push(Match::Destination {
                negated: neg,
                cidr: cidr(&next(&mut i, tok)?)?,
            }),
            "-m" | "--match" => {
                no_neg(tok)?;
                let m = next(&mut i, tok)?;
                match m.as_str() {
                    "tcp" | "udp" | "multiport" | "owner" | "conntrack" | "state" | "mark" | "connmark" => {}
                    other => return Err(format!("match module '{other}' is not one meshcap uses")),
                }
                module = Some(m);
            }
            "--dport" | "--destination-port" => matches.push(Match::DestinationPort {
                negated: neg,
                port: port_spec(&next(&mut i, tok)?)?,
            }),
            "--sport" | "--source-port" => matches.push(Match::SourcePort {
                negated: neg,
                port: port_spec(&next(&mut i, tok)?)?,
            }),
            "--dports" | "--destination-ports" => {
                if module.as_deref() != Some("multiport") {
                    return Err("--dports outside -m multiport".into());
                }
                let list = next(&mut i, tok)?;
                let ports = list.split(',').map(port_spec).collect::<Result<Vec<_>, _>>()?;
                matches.push(Match::DestinationPorts { negated: neg, ports });
            }
            "--uid-owner" | "--gid-owner" => {
                if module.as_deref() != Some("owner") {
                    return Err(format!("{tok} outside -m owner"));
                }
                let owner = Owner::parse(&next(&mut i, tok)?).map_err(|e| e.0)?;
                matches.push(if tok == "--uid-owner" {
                    Match::UidOwner { negated: neg, owner }
                } else {
                    Match::GidOwner { negated: neg, owner }
                });
            }
            "--ctstate" | "--state" => {
                no_neg(tok)?;
                let list = next(&mut i, tok)?;
                let states = list
                    .split(',')
                    .map(|s| match s {
                        "INVALID" => Ok(CtState::Invalid),
                        "NEW" => Ok(CtState::New),
                        "RELATED" => Ok(CtState::Related),
                        "ESTABLISHED" => Ok(CtState::Established),
                        other => Err(format!("conntrack state '{other}' is not one meshcap uses")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                matches.push(Match::ConntrackState(states));
            }
            "--mark" => {
                let mark = full_mask_mark(&next(&mut i, tok)?)?;
                match module.as_deref() {
                    Some("mark") => matches.push(Match::Mark { negated: neg, mark }),
                    Some("connmark") if !neg => matches.push(Match::ConnMark(mark)),
                    _ => return Err("--mark outside -m mark / -m connmark".into()),
                }
            }
            "-j" | "--jump" => {
                no_neg(tok)?;
                let name = next(&mut i, tok)?;
                let (t, used) = parse_target(&name, &tokens[i + 1..])?;
                target = Some(t);
                i += used;
            }
            other => return Err(format!("option '{other}' is not one meshcap uses")),
        }
        i += 1;
    }
    if negated {
        return Err("a trailing '!'".into());
    }
    let target = target.ok_or("a rule without -j")?;
    Ok(Rule { matches, target })
}

/// Parses a target and its options; returns it and how many tokens it consumed.
fn parse_target(name: &str, rest: &[String]) -> Result<(Target, usize), String> {
    let mut opts: Vec<(&str, Option<&str>)> = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        let key = rest[i].as_str();
        let takes_value = !matches!(key, "--save-mark" | "--restore-mark");
        if !key.starts_with("--") {
            return Err(format!("unexpected '{key}' after -j {name}"));
        }
        let value = if takes_value {
            i += 1;
            Some(
                rest.get(i)
                    .map(String::as_str)
                    .ok_or_else(|| format!("{key} needs a value"))?,
            )
        } else {
            None
        };
        opts.push((key, value));
        i += 1;
    }
    let get = |key: &str| opts.iter().find(|(k, _)| *k == key).and_then(|(_, v)| *v);
    let allow = |allowed: &[&str]| -> Result<(), String> {
        match opts.iter().find(|(k, _)| !allowed.contains(k)) {
            Some((k, _)) => Err(format!("option '{k}' of -j {name} is not one meshcap uses")),
            None => Ok(()),
        }
    };
    let target = match name {
        "RETURN" | "ACCEPT" | "DROP" => {
            allow(&[])?;
            match name {
                "RETURN" => Target::Return,
                "ACCEPT" => Target::Accept,
                _ => Target::Drop,
            }
        }
        "REDIRECT" => {
            allow(&["--to-ports", "--to-port"])?;
            let p = get("--to-ports")
                .or(get("--to-port"))
                .ok_or("REDIRECT without --to-ports")?;
            Target::Redirect {
                port: Port::parse(p).map_err(|e| e.0)?,
            }
        }
        "TPROXY" => {
            allow(&["--on-port", "--on-ip", "--tproxy-mark"])?;
            if let Some(ip) = get("--on-ip")
                && ip != "0.0.0.0"
                && ip != "::"
            {
                return Err(format!("TPROXY --on-ip '{ip}' is not one meshcap uses"));
            }
            let port = Port::parse(get("--on-port").ok_or("TPROXY without --on-port")?).map_err(|e| e.0)?;
            let mark = full_mask_mark(get("--tproxy-mark").ok_or("TPROXY without --tproxy-mark")?)?;
            Target::Tproxy { mark, port }
        }
        "MARK" => {
            allow(&["--set-mark", "--set-xmark"])?;
            let m = get("--set-mark")
                .or(get("--set-xmark"))
                .ok_or("MARK without --set-mark")?;
            Target::SetMark(full_mask_mark(m)?)
        }
        "CONNMARK" => {
            allow(&["--save-mark", "--restore-mark", "--nfmask", "--ctmask", "--mask"])?;
            for key in ["--nfmask", "--ctmask", "--mask"] {
                if let Some(v) = get(key)
                    && Mark::parse(v).map(|m| m.0) != Ok(u32::MAX)
                {
                    return Err(format!("CONNMARK {key} '{v}' is not one meshcap uses"));
                }
            }
            let save = opts.iter().any(|(k, _)| *k == "--save-mark");
            let restore = opts.iter().any(|(k, _)| *k == "--restore-mark");
            match (save, restore) {
                (true, false) => Target::SaveMark,
                (false, true) => Target::RestoreMark,
                _ => return Err("CONNMARK needs exactly one of --save-mark / --restore-mark".into()),
            }
        }
        "CT" => {
            allow(&["--zone"])?;
            let z = get("--zone").ok_or("CT without --zone")?;
            Target::CtZone(z.parse().map_err(|_| format!("CT zone '{z}' is not a number"))?)
        }
        chain => {
            allow(&[])?;
            let c = IstioChain::from_name(chain).ok_or_else(|| format!("target '{chain}' is not one meshcap uses"))?;
            Target::Jump(c)
        }
    };
    Ok((target, rest.len()))
}

fn iface(text: &str) -> Result<Iface, String> {
    Iface::parse(text).map_err(|e| e.0)
}

fn cidr(text: &str) -> Result<Cidr, String> {
    if text.contains('/') {
        Cidr::parse(text).map_err(|e| e.0)
    } else {
        parse_ip(text).map(Cidr::host).map_err(|e| e.0)
    }
}

fn port_spec(text: &str) -> Result<PortSpec, String> {
    PortSpec::parse(text).map_err(|e| e.0)
}

/// A mark, optionally with the full mask `/0xffffffff` (the only mask meshcap writes).
fn full_mask_mark(text: &str) -> Result<Mark, String> {
    let (value, mask) = match text.split_once('/') {
        Some((v, m)) => (v, Some(m)),
        None => (text, None),
    };
    if let Some(m) = mask
        && Mark::parse(m).map(|m| m.0) != Ok(u32::MAX)
    {
        return Err(format!("mark mask '{m}' is not one meshcap uses"));
    }
    Mark::parse(value).map_err(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::render::rule_spec;

    const SAVED: &str = "\
# Generated by iptables-nft-save v1.8.9 (nf_tables) on Sat Nov 28 06:29:54 2026
*mangle
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_DIVERT - [0:0]
:ISTIO_TPROXY - [0:0]
-A PREROUTING -p tcp -m mark --mark 0x539 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff
-A ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff
-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff
COMMIT
*nat
:OUTPUT ACCEPT [0:0]
:FOREIGN - [0:0]
:ISTIO_OUTPUT - [0:0]
-A OUTPUT -m comment --comment \"kube \\\"svc\\\"\" -j FOREIGN
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -p tcp -m tcp ! --dport 53 -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT_DNS -d 127.0.0.53/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053
COMMIT
";

    #[test]
    fn parses_kernel_spelling() {
        let dump = parse_save(SAVED, Strictness::Strict).unwrap();
        let mangle = dump.table(TableName::Mangle).unwrap();
        let r = mangle.resolved();
        assert_eq!(r["PREROUTING"][0].rule.as_ref().unwrap().target, Target::SaveMark);
        assert_eq!(
            r["OUTPUT"][0].rule.as_ref().unwrap().target,
            Target::SetMark(Mark(1338))
        );
        assert_eq!(
            rule_spec(r["ISTIO_TPROXY"][0].rule.as_ref().unwrap()),
            "! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006"
        );
        let nat = dump.table(TableName::Nat).unwrap().resolved();
        assert_eq!(nat["OUTPUT"][0].tokens[3], "kube \"svc\"");
        assert!(nat["OUTPUT"][0].rule.is_err());
        assert_eq!(
            rule_spec(nat["ISTIO_OUTPUT"][1].rule.as_ref().unwrap()),
            "-o lo -p tcp ! --dport 53 -m owner ! --uid-owner 1337 -j RETURN"
        );
        assert_eq!(dump.istio_jumps().len(), 1);
        assert_eq!(dump.istio_chains().len(), 4);
    }

    #[test]
    fn strict_in_istio_chains_only() {
        let bad = "*nat\n-A ISTIO_OUTPUT -m comment --comment x -j RETURN\nCOMMIT\n";
        let e = parse_save(bad, Strictness::Strict).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.why.contains("comment"), "{e}");
        assert!(parse_save(bad, Strictness::Lenient).is_ok());
        let foreign = "*nat\n-A OUTPUT -m comment --comment x -j KUBE-SVC\nCOMMIT\n";
        assert!(parse_save(foreign, Strictness::Strict).is_ok());
        assert!(parse_save("-A X -j RETURN\n", Strictness::Lenient).is_err());
    }

    #[test]
    fn inserts_apply_in_order() {
        let text = "* nat\n-A PREROUTING -j RETURN\n-I PREROUTING 1 -i eth0 -j RETURN\n-I PREROUTING -i eth1 -j RETURN\nCOMMIT\n";
        let dump = parse_save(text, Strictness::Strict).unwrap();
        let r = dump.table(TableName::Nat).unwrap().resolved();
        let order: Vec<_> = r["PREROUTING"].iter().map(|e| e.tokens.join(" ")).collect();
        assert_eq!(order, ["-i eth1 -j RETURN", "-i eth0 -j RETURN", "-j RETURN"]);
    }

    #[test]
    fn an_out_of_range_prefix_is_an_error_not_a_panic() {
        // Found by `cargo fuzz run parse_save`: a three-digit prefix above 255 panicked.
        let text = "*nat\n:ISTIO_OUTPUT - [0:0]\n-A ISTIO_OUTPUT ! -d 127.0.0.1/313 -j RETURN\nCOMMIT\n";
        for strictness in [Strictness::Strict, Strictness::Lenient] {
            if let Ok(dump) = parse_save(text, strictness) {
                assert!(dump.to_ruleset(Family::V4).is_err());
            }
        }
    }
}
