//! The netlink codec's reading half: a dumped [`Ruleset`] (what the kernel holds) read into the
//! IR's state view ([`NftState`]), so drift compares it with [`crate::nft::ir::planned`]
//! exactly as it compared the JSON listing. Only meshcap's `istio-proxy-*` tables of family
//! `inet` are read; every other table is ignored unread.
//!
//! Rules are read back into the IR's statements by recognising the expression sequences
//! `nft -f` writes for meshcap's text (one register-machine program per statement):
//! - `iifname`/`oifname`: `meta` load + `cmp ==` of the name padded to 16 bytes, or of the bare
//!   prefix for a `name*` wildcard;
//! - `ip|ip6 saddr|daddr`: the implicit `meta nfproto` dependency, a network-header `payload`
//!   of the prefix's whole bytes, an optional `bitwise` mask for the rest, `cmp ==|!=`; a
//!   `lookup` of an anonymous (interval) set for `{ … }` (`--compact`);
//! - `tcp|udp sport|dport`: the implicit `meta l4proto` dependency (absent when an explicit one
//!   came first), a transport `payload`, then `cmp ==|!=`, `cmp >=` + `cmp <=` (a range),
//!   `range !=`, or a `lookup` (inverted for `!=`) of an anonymous set;
//! - `ct state` (`bitwise` of the state bits + `cmp != 0`), `ct mark`, `mark`, `skuid`/`skgid`
//!   (numbers: the kernel holds no names; drift resolves planned names, see `drift::nft::key`);
//! - `counter`, verdicts (`immediate` into the verdict register), `redirect to :P` and
//!   `tproxy [ip|ip6] to :P` (an `immediate` port), `meta mark set`, `ct mark set mark`,
//!   `meta mark set ct mark`, `ct zone set`.
//!
//! Nothing inside meshcap's tables is skipped: an expression or sequence not recognised makes
//! its rule unknown ([`StateRule`] with `Err(why)`, its text the statements read so far and the
//! rest in brackets), and named sets, maps, objects the dump does not carry (named counters,
//! quotas, flowtables: counted from the table's use count), comments and flags become
//! [`Object`]s — all of it drift, named.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::attr::RawAttr;
use super::expr::{CmpOp, CtKey as NlCt, Data, Expr, MetaKey as NlMeta, PayloadBase, RangeOp, Register, Verdict};
use super::msg::{
    self, NF_ACCEPT, NF_DROP, NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6, NFT_SET_ANONYMOUS, NFT_SET_ELEM_INTERVAL_END,
    NFT_SET_INTERVAL,
};
use super::socket::Ruleset;
use crate::model::{CtState, Hook, Proto};
use crate::nft::ir::{
    BaseChain, ChainState, ChainType, Direction, NftChain, NftHook, NftRule, NftState, NftTable, Object, OwnerKind,
    Policy, StateRule, Stmt, iface_from_pattern,
};
use crate::values::{Cidr, Family, Iface, Mark, Owner, Port, PortSpec};

/// `NF_INET_INGRESS`: the inet family's ingress hook.
const NF_INET_INGRESS: u32 = 5;
/// `NFT_SET_MAP` / `NFT_SET_OBJECT`: a set with data is a map.
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_OBJECT: u32 = 0x40;
/// `NFTA_SET_ELEM_USERDATA`: nft marks the start of an interval open to the end of the key
/// space with one TLV there, `NFTNL_UDATA_SET_ELEM_FLAGS` (1), 4 bytes (host order),
/// `NFTNL_SET_ELEM_F_INTERVAL_OPEN` (1).
const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// `NF_NAT_RANGE_PROTO_SPECIFIED`: the flag the kernel reports on a redirect to a port.
const NAT_PROTO_SPECIFIED: u32 = 2;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

fn ours(family: u8, table: &str) -> bool {
    family == NFPROTO_INET && NftTable::from_name(table).is_some()
}

/// meshcap's tables of a dump, read into the IR's state.
pub fn decode(rs: &Ruleset) -> NftState {
    let mut state = NftState::default();
    // Chains and sets seen per table, to compare with the kernel's use count.
    let mut held: BTreeMap<&str, u32> = BTreeMap::new();
    for t in rs.tables.iter().filter(|t| ours(t.family, &t.name)) {
        state.tables.insert(t.name.clone());
        held.insert(&t.name, 0);
        let mut odd = Vec::new();
        if t.flags != 0 {
            odd.push(format!("flags {:#x}", t.flags));
        }
        if t.userdata.is_some() {
            odd.push("a comment".to_string());
        }
        if !t.unknown.is_empty() {
            odd.push(format!("{} attribute(s) meshcap does not know", t.unknown.len()));
        }
        if !odd.is_empty() {
            state.objects.insert(object(&t.name, "table property", odd.join(", ")));
        }
    }
    for c in rs.chains.iter().filter(|c| ours(c.family, &c.table)) {
        *held.entry(&c.table).or_default() += 1;
        let base = match base_chain(c) {
            Ok(b) => b,
            Err(why) => {
                state
                    .objects
                    .insert(object(&c.table, "chain", format!("{} ({why})", c.name)));
                continue;
            }
        };
        let mut odd = Vec::new();
        // NFT_CHAIN_BASE (1) is the kernel's own report of a hook; any other flag (hardware
        // offload, binding) is not meshcap's.
        if let Some(f) = c.flags
            && f & !1 != 0
        {
            odd.push(format!("flags {f:#x}"));
        }
        if c.userdata.is_some() {
            odd.push("a comment".to_string());
        }
        if !c.unknown.is_empty() {
            odd.push(format!("{} attribute(s) meshcap does not know", c.unknown.len()));
        }
        if !odd.is_empty() {
            let what = format!("{}: {}", c.name, odd.join(", "));
            state.objects.insert(object(&c.table, "chain property", what));
        }
        let chain = ChainState {
            base,
            rules: Vec::new(),
        };
        state.chains.insert((c.table.clone(), c.name.clone()), chain);
    }
    let sets = Sets::new(rs);
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    for r in rs.rules.iter().filter(|r| ours(r.family, &r.table)) {
        let rule = read_rule(r, &sets, &mut used);
        match state.chains.get_mut(&(r.table.clone(), r.chain.clone())) {
            Some(chain) => chain.rules.push(rule),
            None => {
                let what = format!("{}: {}", r.chain, rule.text);
                state.objects.insert(object(&r.table, "rule of an unread chain", what));
            }
        }
    }
    for s in rs.sets.iter().filter(|s| ours(s.family, &s.table)) {
        *held.entry(&s.table).or_default() += 1;
        let anonymous = s.flags & NFT_SET_ANONYMOUS != 0;
        if anonymous && used.contains(&(s.table.clone(), s.name.clone())) {
            continue;
        }
        let kind = if s.flags & (NFT_SET_MAP | NFT_SET_OBJECT) != 0 {
            "map"
        } else if anonymous {
            "anonymous set"
        } else {
            "set"
        };
        state.objects.insert(object(&s.table, kind, s.name.clone()));
    }
    // The kernel counts chains, sets, stateful objects and flowtables in a table's use count;
    // the dump carries the first two, so the difference is objects meshcap never reads.
    for t in rs.tables.iter().filter(|t| ours(t.family, &t.name)) {
        let seen = held.get(t.name.as_str()).copied().unwrap_or(0);
        if let Some(n) = t.use_count
            && n > seen
        {
            let what = format!("{} named object(s) or flowtable(s)", n - seen);
            state.objects.insert(object(&t.name, "object", what));
        }
    }
    for m in &rs.unknown {
        if m.family() == NFPROTO_INET {
            state.objects.insert(object("", "message", m.describe()));
        }
    }
    state
}

fn object(table: &str, kind: &str, name: String) -> Object {
    Object {
        table: table.to_string(),
        kind: kind.to_string(),
        name,
    }
}

/// A chain's declaration: `None` for a regular chain, the base chain's words otherwise.
fn base_chain(c: &msg::Chain) -> Result<Option<BaseChain>, String> {
    let Some(hook) = c.hook else {
        return match (&c.chain_type, c.policy) {
            (None, None) => Ok(None),
            _ => Err("a type or policy without a hook".into()),
        };
    };
    let kind = c.chain_type.as_deref().unwrap_or_default();
    let hook_word = match hook.num {
        0 => NftHook::Netfilter(Hook::Prerouting),
        1 => NftHook::Netfilter(Hook::Input),
        2 => NftHook::Netfilter(Hook::Forward),
        3 => NftHook::Netfilter(Hook::Output),
        4 => NftHook::Netfilter(Hook::Postrouting),
        NF_INET_INGRESS => NftHook::Ingress,
        n => return Err(format!("hook number {n}")),
    };
    let policy = match c.policy {
        None | Some(NF_ACCEPT) => Policy::Accept,
        Some(NF_DROP) => Policy::Drop,
        Some(p) => return Err(format!("policy {p}")),
    };
    Ok(Some(BaseChain {
        kind: ChainType::from_word(kind).ok_or_else(|| format!("type '{kind}'"))?,
        hook: hook_word,
        priority: hook.priority,
        policy,
    }))
}

/// The sets of the dump by table and name, with their elements.
struct Sets<'a> {
    by_name: BTreeMap<(&'a str, &'a str), usize>,
    sets: &'a [msg::Set],
    elems: &'a [msg::SetElems],
}

impl<'a> Sets<'a> {
    fn new(rs: &'a Ruleset) -> Sets<'a> {
        Sets {
            by_name: rs
                .sets
                .iter()
                .enumerate()
                .map(|(i, s)| ((s.table.as_str(), s.name.as_str()), i))
                .collect(),
            sets: &rs.sets,
            elems: &rs.elements,
        }
    }

    /// The inclusive key intervals of the anonymous set `name` of `table`, whose keys are
    /// `len`-byte big-endian numbers (ports, addresses), in ascending order.
    fn intervals(&self, table: &str, name: &str, len: u32) -> Result<Vec<(u128, u128)>, String> {
        let i = *self
            .by_name
            .get(&(table, name))
            .ok_or_else(|| format!("a lookup in set {name}, which the dump does not hold"))?;
        let s = &self.sets[i];
        if s.flags & NFT_SET_ANONYMOUS == 0 {
            return Err(format!("a lookup in the named set @{name}, which meshcap never makes"));
        }
        if s.flags & (NFT_SET_MAP | NFT_SET_OBJECT) != 0 || s.data_type.is_some() {
            return Err(format!("a lookup in the map {name}, which meshcap never makes"));
        }
        if s.key_len != len || len > 16 || !s.unknown.is_empty() {
            return Err(format!("a lookup in set {name} of {}-byte keys, not {len}", s.key_len));
        }
        let elems = self.elems.get(i).map_or(&[][..], |e| e.elements.as_slice());
        let number = |k: &Option<Vec<u8>>| -> Result<u128, String> {
            match k {
                Some(k) if k.len() == len as usize => Ok(k.iter().fold(0u128, |n, b| (n << 8) | u128::from(*b))),
                _ => Err(format!("an element of set {name} without a {len}-byte key")),
            }
        };
        let mut bounds = Vec::with_capacity(elems.len());
        let mut out = Vec::new();
        for e in elems {
            // nft marks the start of an interval that runs to the end of the key space with
            // its element flag "open interval" in the element's user data.
            let open_interval = |a: &RawAttr| {
                a.kind == NFTA_SET_ELEM_USERDATA
                    && matches!(a.value.as_slice(), [1, 4, flag @ ..] if flag == 1u32.to_ne_bytes())
            };
            if !e.unknown.iter().all(open_interval) || e.flags & !NFT_SET_ELEM_INTERVAL_END != 0 {
                return Err(format!("an element of set {name} with options meshcap never writes"));
            }
            let key = number(&e.key)?;
            match &e.key_end {
                Some(_) => out.push((key, number(&e.key_end)?)),
                None if s.flags & NFT_SET_INTERVAL == 0 => out.push((key, key)),
                // Ends sort before starts at the same key: an end closes what came before.
                None => bounds.push((key, e.flags & NFT_SET_ELEM_INTERVAL_END == 0)),
            }
        }
        bounds.sort_unstable();
        let max = if len == 16 { u128::MAX } else { (1u128 << (8 * len)) - 1 };
        let mut open: Option<u128> = None;
        for (key, start) in bounds {
            match (start, open) {
                (true, None) => open = Some(key),
                (false, Some(from)) if key > from => {
                    out.push((from, key - 1));
                    open = None;
                }
                // nft's leading end marker at zero closes nothing.
                (false, None) => {}
                _ => return Err(format!("set {name} holds overlapping intervals")),
            }
        }
        if let Some(from) = open {
            out.push((from, max));
        }
        out.sort_unstable();
        Ok(out)
    }
}

/// One rule: its statements when every expression is understood.
fn read_rule(r: &msg::Rule, sets: &Sets<'_>, used: &mut BTreeSet<(String, String)>) -> StateRule {
    let mut reader = Reader {
        exprs: &r.exprs,
        at: 0,
        l4: None,
        table: &r.table,
        sets,
        used: Vec::new(),
        stmts: Vec::new(),
    };
    let mut result = reader.read_all();
    let mut extra = None;
    if result.is_ok()
        && let Some(data) = &r.userdata
    {
        let shown = comment(data).map_or_else(|| "user data".to_string(), |c| format!("comment {c:?}"));
        result = Err(format!("a {shown}, which meshcap never writes"));
        extra = Some(shown);
    }
    if result.is_ok() && !r.unknown.is_empty() {
        let shown = format!("{} rule attribute(s) meshcap does not know", r.unknown.len());
        result = Err(shown.clone());
        extra = Some(shown);
    }
    used.extend(reader.used.iter().map(|s| (r.table.clone(), s.clone())));
    let at = reader.at;
    let read = NftRule { stmts: reader.stmts };
    match result {
        Ok(()) => StateRule {
            text: read.to_string(),
            stmts: Ok(read),
        },
        Err(why) => {
            let mut rest: Vec<String> = r.exprs.get(at..).unwrap_or_default().iter().map(expr_text).collect();
            rest.extend(extra);
            let mut text = read.to_string();
            if !text.is_empty() {
                text.push(' ');
            }
            text.push('[');
            text.push_str(&rest.join(" "));
            text.push(']');
            StateRule { stmts: Err(why), text }
        }
    }
}

/// The comment in nft's rule user data: TLV `NFTNL_UDATA_RULE_COMMENT` (0), a NUL-terminated
/// string.
fn comment(data: &[u8]) -> Option<String> {
    let (&[kind, len], rest) = data.split_first_chunk::<2>()?;
    let text = rest.get(..usize::from(len))?;
    let text = text.strip_suffix(&[0]).unwrap_or(text);
    (kind == 0).then(|| String::from_utf8_lossy(text).into_owned())
}

/// A short readable form of an expression (for rules not understood).
fn expr_text(e: &Expr) -> String {
    match e {
        Expr::Meta { key, .. } => format!("meta load {key:?}"),
        Expr::MetaSet { key, .. } => format!("meta set {key:?}"),
        Expr::Payload { base, offset, len, .. } => format!("payload {base:?} @{offset}+{len}"),
        Expr::Cmp { op, data, .. } => format!("cmp {op:?} {}", hex(data)),
        Expr::Bitwise { mask, xor, .. } => format!("bitwise & {} ^ {}", hex(mask), hex(xor)),
        Expr::Immediate {
            data: Data::Verdict(v), ..
        } => format!("verdict {v:?}"),
        Expr::Immediate {
            data: Data::Value(v), ..
        } => format!("immediate {}", hex(v)),
        Expr::Counter { .. } => "counter".into(),
        Expr::Redir { .. } => "redir".into(),
        Expr::Tproxy { family, .. } => format!("tproxy family {family}"),
        Expr::Ct { key, .. } => format!("ct load {key:?}"),
        Expr::CtSet { key, .. } => format!("ct set {key:?}"),
        Expr::Lookup { set, invert, .. } => format!("lookup{} {set}", if *invert { " !=" } else { "" }),
        Expr::Range { op, from, to, .. } => format!("range {op:?} {}-{}", hex(from), hex(to)),
        Expr::Unknown { name, .. } => format!("{name} (an expression meshcap never writes)"),
    }
}

fn hex(b: &[u8]) -> String {
    let digits: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("0x{digits}")
}

fn u32_ne(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.try_into().ok()?))
}

fn u16_be(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.try_into().ok()?))
}

fn port_of(n: u128) -> Result<Port, String> {
    match u16::try_from(n) {
        Ok(p) if p != 0 => Ok(Port::new_const(p)),
        _ => Err(format!("port {n}, which meshcap never matches")),
    }
}

fn proto_of(p: u8) -> Option<Proto> {
    match p {
        IPPROTO_TCP => Some(Proto::Tcp),
        IPPROTO_UDP => Some(Proto::Udp),
        _ => None,
    }
}

/// `==` / `!=` as a negation flag.
fn negation(op: CmpOp) -> Option<bool> {
    match op {
        CmpOp::Eq => Some(false),
        CmpOp::Neq => Some(true),
        _ => None,
    }
}

/// The conntrack states of a `ct state` bit mask (`NF_CT_STATE_INVALID_BIT` and the
/// `IP_CT_ESTABLISHED`/`RELATED`/`NEW` bits).
fn ct_states(mask: u32) -> Option<Vec<CtState>> {
    let bits = [
        (1, CtState::Invalid),
        (2, CtState::Established),
        (4, CtState::Related),
        (8, CtState::New),
    ];
    if mask == 0 || mask & !15 != 0 {
        return None;
    }
    Some(bits.iter().filter(|(b, _)| mask & b != 0).map(|(_, s)| *s).collect())
}

/// Whether `mask` is `bits` one bits followed by zeros.
fn prefix_mask(mask: &[u8]) -> Option<u32> {
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let want = (0..mask.len()).map(|i| {
        let left = ones.saturating_sub(8 * i as u32).min(8);
        if left == 0 { 0 } else { 0xffu8 << (8 - left) }
    });
    want.eq(mask.iter().copied()).then_some(ones)
}

/// The interface of an `iifname`/`oifname` comparison: the name padded with NULs to 16 bytes,
/// or a wildcard's bare prefix.
fn iface(data: &[u8]) -> Option<Iface> {
    match data.iter().position(|b| *b == 0) {
        Some(end) if data.len() == 16 && data[end..].iter().all(|b| *b == 0) => {
            iface_from_pattern(std::str::from_utf8(&data[..end]).ok()?)
        }
        Some(_) => None,
        None => iface_from_pattern(&format!("{}*", std::str::from_utf8(data).ok()?)),
    }
}

/// Walks a rule's expressions, statement by statement.
struct Reader<'a> {
    exprs: &'a [Expr],
    at: usize,
    /// The transport protocol the rule matched last (a port match needs one).
    l4: Option<Proto>,
    table: &'a str,
    sets: &'a Sets<'a>,
    /// The anonymous sets the rule's lookups read.
    used: Vec<String>,
    stmts: Vec<Stmt>,
}

/// A statement and how many expressions it took.
type Step = Result<(Stmt, usize), String>;

impl Reader<'_> {
    fn read_all(&mut self) -> Result<(), String> {
        while self.at < self.exprs.len() {
            let (stmt, n) = self.next()?;
            self.stmts.push(stmt);
            self.at += n;
        }
        Ok(())
    }

    /// Why the expression at the cursor is not understood.
    fn odd(&self, what: &str) -> String {
        format!(
            "{what} at expression {} ({}) is not one meshcap writes",
            self.at + 1,
            expr_text(&self.exprs[self.at])
        )
    }

    /// The next statement.
    fn next(&mut self) -> Step {
        let rest = &self.exprs[self.at..];
        match rest {
            [
                Expr::Meta {
                    key: NlMeta::NfProto,
                    dreg,
                },
                Expr::Cmp {
                    sreg,
                    op: CmpOp::Eq,
                    data,
                },
                tail @ ..,
            ] if dreg == sreg => {
                let family = match data.as_slice() {
                    [NFPROTO_IPV4] => Family::V4,
                    [NFPROTO_IPV6] => Family::V6,
                    _ => return Err(self.odd("a meta nfproto match")),
                };
                let (stmt, n) = self.address(family, tail)?;
                Ok((stmt, n + 2))
            }
            [
                Expr::Meta {
                    key: NlMeta::L4Proto,
                    dreg,
                },
                Expr::Cmp {
                    sreg,
                    op: CmpOp::Eq,
                    data,
                },
                tail @ ..,
            ] if dreg == sreg => {
                let proto = match data.as_slice() {
                    [p] => proto_of(*p).ok_or_else(|| self.odd("a meta l4proto match"))?,
                    _ => return Err(self.odd("a meta l4proto match")),
                };
                self.l4 = Some(proto);
                // The dependency nft writes right before a port match belongs to it.
                if let [
                    Expr::Payload {
                        base: PayloadBase::Transport,
                        ..
                    },
                    ..,
                ] = tail
                {
                    let (stmt, n) = self.port(proto, tail)?;
                    return Ok((stmt, n + 2));
                }
                Ok((Stmt::L4Proto(proto), 2))
            }
            [
                Expr::Payload {
                    base: PayloadBase::Transport,
                    ..
                },
                ..,
            ] => {
                let proto = self.l4.ok_or_else(|| self.odd("a port match without its protocol"))?;
                self.port(proto, rest)
            }
            [Expr::Meta { key, dreg }, Expr::Cmp { sreg, op, data }, ..] if dreg == sreg => {
                self.meta_match(*key, *op, data)
            }
            [Expr::Ct { .. }, ..] => self.ct(rest),
            [
                Expr::Meta {
                    key: NlMeta::Mark,
                    dreg,
                },
                Expr::CtSet {
                    key: NlCt::Mark,
                    sreg,
                    direction: None,
                },
                ..,
            ] if dreg == sreg => Ok((Stmt::SaveMark, 2)),
            [Expr::Counter { .. }, ..] => Ok((Stmt::Counter, 1)),
            [
                Expr::Immediate {
                    dreg: Register::VERDICT,
                    data: Data::Verdict(v),
                },
                ..,
            ] => {
                let stmt = match v {
                    Verdict::Accept => Stmt::Accept,
                    Verdict::Drop => Stmt::Drop,
                    Verdict::Return => Stmt::Return,
                    Verdict::Jump(c) => Stmt::Jump(
                        NftChain::regular_named(c).ok_or_else(|| self.odd("a jump to a chain meshcap never makes"))?,
                    ),
                    _ => return Err(self.odd("a verdict")),
                };
                Ok((stmt, 1))
            }
            [
                Expr::Immediate {
                    dreg,
                    data: Data::Value(v),
                },
                action,
                ..,
            ] => self.action(*dreg, v, action),
            _ => Err(self.odd("an expression")),
        }
    }

    /// `ct state`, `ct mark` and `meta mark set ct mark`, starting at a `ct` load.
    fn ct(&self, rest: &[Expr]) -> Step {
        match rest {
            [
                Expr::Ct {
                    key: NlCt::State,
                    dreg,
                    direction: None,
                },
                Expr::Bitwise {
                    sreg,
                    dreg: d2,
                    len: 4,
                    mask,
                    xor,
                },
                Expr::Cmp {
                    sreg: s2,
                    op: CmpOp::Neq,
                    data,
                },
                ..,
            ] if dreg == sreg && d2 == s2 && xor.iter().all(|b| *b == 0) && data.as_slice() == [0; 4] => {
                let states = u32_ne(mask)
                    .and_then(ct_states)
                    .ok_or_else(|| self.odd("a ct state mask"))?;
                Ok((Stmt::CtState(states), 3))
            }
            [
                Expr::Ct {
                    key: NlCt::Mark,
                    dreg,
                    direction: None,
                },
                Expr::Cmp {
                    sreg,
                    op: CmpOp::Eq,
                    data,
                },
                ..,
            ] if dreg == sreg => {
                let m = u32_ne(data).ok_or_else(|| self.odd("a ct mark match"))?;
                Ok((Stmt::CtMark(Mark(m)), 2))
            }
            [
                Expr::Ct {
                    key: NlCt::Mark,
                    dreg,
                    direction: None,
                },
                Expr::MetaSet {
                    key: NlMeta::Mark,
                    sreg,
                },
                ..,
            ] if dreg == sreg => Ok((Stmt::RestoreMark, 2)),
            _ => Err(self.odd("a ct expression")),
        }
    }

    /// `meta K ==|!= V` for an interface, owner or mark.
    fn meta_match(&self, key: NlMeta, op: CmpOp, data: &[u8]) -> Step {
        let negated = negation(op).ok_or_else(|| self.odd("a comparison"))?;
        let stmt = match key {
            NlMeta::IifName | NlMeta::OifName if !negated => Stmt::Iface {
                input: key == NlMeta::IifName,
                name: iface(data).ok_or_else(|| self.odd("an interface name"))?,
            },
            NlMeta::SkUid | NlMeta::SkGid => Stmt::Owner {
                kind: if key == NlMeta::SkUid {
                    OwnerKind::Uid
                } else {
                    OwnerKind::Gid
                },
                negated,
                owner: Owner::Id(u32_ne(data).ok_or_else(|| self.odd("an owner id"))?),
                meta: false,
            },
            NlMeta::Mark => Stmt::Mark {
                negated,
                mark: Mark(u32_ne(data).ok_or_else(|| self.odd("a mark"))?),
            },
            _ => return Err(self.odd("a meta match")),
        };
        Ok((stmt, 2))
    }
}

impl Reader<'_> {
    /// An address match after its `meta nfproto` dependency (`rest` starts at the payload).
    fn address(&mut self, family: Family, rest: &[Expr]) -> Step {
        let (full, src, dst) = match family {
            Family::V4 => (4u32, 12, 16),
            Family::V6 => (16, 8, 24),
        };
        let [
            Expr::Payload {
                base: PayloadBase::Network,
                offset,
                len,
                dreg: reg,
            },
            tail @ ..,
        ] = rest
        else {
            return Err(self.odd("a meta nfproto match without an address"));
        };
        let direction = match *offset {
            o if o == src => Direction::Source,
            o if o == dst => Direction::Destination,
            _ => return Err(self.odd("an address field")),
        };
        let len = *len;
        if len == 0 || len > full {
            return Err(self.odd("an address length"));
        }
        let cidr = |data: &[u8], bits: u32| -> Option<Cidr> {
            if data.len() != len as usize {
                return None;
            }
            let mut bytes = [0u8; 16];
            bytes[..data.len()].copy_from_slice(data);
            let addr = match family {
                Family::V4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
                Family::V6 => IpAddr::V6(Ipv6Addr::from(bytes)),
            };
            Cidr::new(addr, u8::try_from(bits).ok()?).ok()
        };
        let (stmt, n) = match tail {
            [
                Expr::Bitwise {
                    sreg,
                    dreg,
                    len: blen,
                    mask,
                    xor,
                },
                Expr::Cmp { sreg: s2, op, data },
                ..,
            ] if sreg == reg && dreg == s2 && *blen == len && xor.iter().all(|b| *b == 0) => {
                let (Some(negated), Some(cidr)) = (negation(*op), prefix_mask(mask).and_then(|bits| cidr(data, bits)))
                else {
                    return Err(self.odd("an address prefix"));
                };
                (
                    Stmt::Addr {
                        direction,
                        negated,
                        cidr,
                    },
                    3,
                )
            }
            [Expr::Cmp { sreg, op, data }, ..] if sreg == reg => {
                let (Some(negated), Some(cidr)) = (negation(*op), cidr(data, len * 8)) else {
                    return Err(self.odd("an address"));
                };
                (
                    Stmt::Addr {
                        direction,
                        negated,
                        cidr,
                    },
                    2,
                )
            }
            [
                Expr::Lookup {
                    set,
                    sreg,
                    dreg: None,
                    invert: false,
                    ..
                },
                ..,
            ] if sreg == reg && len == full => {
                let mut cidrs = Vec::new();
                for (from, to) in self.sets.intervals(self.table, set, full)? {
                    crate::plan::compact::prefixes_of(from, to, family, full * 8, &mut cidrs);
                }
                if cidrs.is_empty() {
                    return Err(format!("a lookup in the empty set {set}"));
                }
                self.used.push(set.clone());
                (Stmt::AddrSet { direction, cidrs }, 2)
            }
            _ => return Err(self.odd("an address match")),
        };
        Ok((stmt, n))
    }

    /// A port match starting at its transport payload load (`rest[0]`).
    fn port(&mut self, proto: Proto, rest: &[Expr]) -> Step {
        let [
            Expr::Payload {
                offset,
                len: 2,
                dreg: reg,
                ..
            },
            tail @ ..,
        ] = rest
        else {
            return Err(self.odd("a transport header match"));
        };
        let direction = match offset {
            0 => Direction::Source,
            2 => Direction::Destination,
            _ => return Err(self.odd("a transport header field")),
        };
        let single = |data: &[u8]| u16_be(data).map(u128::from).ok_or_else(|| self.odd("a port"));
        let (negated, found, n) = match tail {
            [
                Expr::Cmp {
                    sreg,
                    op: CmpOp::Gte,
                    data: lo,
                },
                Expr::Cmp {
                    sreg: s2,
                    op: CmpOp::Lte,
                    data: hi,
                },
                ..,
            ] if sreg == reg && s2 == reg => (false, vec![(single(lo)?, single(hi)?)], 3),
            [Expr::Cmp { sreg, op, data }, ..] if sreg == reg => {
                let negated = negation(*op).ok_or_else(|| self.odd("a port comparison"))?;
                let p = single(data)?;
                (negated, vec![(p, p)], 2)
            }
            [Expr::Range { sreg, op, from, to }, ..] if sreg == reg => {
                (*op == RangeOp::Neq, vec![(single(from)?, single(to)?)], 2)
            }
            [
                Expr::Lookup {
                    set,
                    sreg,
                    dreg: None,
                    invert,
                    ..
                },
                ..,
            ] if sreg == reg => {
                let found = self.sets.intervals(self.table, set, 2)?;
                if found.is_empty() {
                    return Err(format!("a lookup in the empty set {set}"));
                }
                self.used.push(set.clone());
                (*invert, found, 2)
            }
            _ => return Err(self.odd("a port match")),
        };
        let ports = found
            .into_iter()
            .map(|(lo, hi)| {
                Ok(if lo == hi {
                    PortSpec::Single(port_of(lo)?)
                } else {
                    PortSpec::Range(port_of(lo)?, port_of(hi)?)
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let stmt = Stmt::Port {
            proto,
            direction,
            negated,
            ports,
        };
        Ok((stmt, n))
    }

    /// An action fed by an `immediate` value in `reg`: redirect, tproxy, mark or zone set.
    fn action(&self, reg: Register, v: &[u8], action: &Expr) -> Step {
        let port =
            |what: &str| -> Result<Port, String> { port_of(u128::from(u16_be(v).ok_or_else(|| self.odd(what))?)) };
        let stmt = match action {
            Expr::Redir {
                proto_min: Some(min),
                proto_max,
                flags,
            } if *min == reg
                && proto_max.is_none_or(|m| m == reg)
                && (*flags == 0 || *flags == NAT_PROTO_SPECIFIED) =>
            {
                Stmt::Redirect(port("a redirect port")?)
            }
            Expr::Tproxy {
                family,
                addr: None,
                port: Some(p),
            } if *p == reg => {
                let family = match u8::try_from(*family) {
                    Ok(0) => None,
                    Ok(NFPROTO_IPV4) => Some(Family::V4),
                    Ok(NFPROTO_IPV6) => Some(Family::V6),
                    _ => return Err(self.odd("a tproxy family")),
                };
                Stmt::Tproxy {
                    family,
                    port: port("a tproxy port")?,
                }
            }
            Expr::MetaSet {
                key: NlMeta::Mark,
                sreg,
            } if *sreg == reg => Stmt::SetMark(Mark(u32_ne(v).ok_or_else(|| self.odd("a mark"))?)),
            Expr::CtSet {
                key: NlCt::Zone,
                sreg,
                direction: None,
            } if *sreg == reg => {
                let zone: [u8; 2] = v.try_into().map_err(|_| self.odd("a ct zone"))?;
                Stmt::CtZone(u16::from_ne_bytes(zone))
            }
            _ => return Err(self.odd("a value")),
        };
        Ok((stmt, 2))
    }
}

#[cfg(test)]
mod tests {
    use super::super::expr::tests::expr;
    use super::super::msg::{Chain, Rule, Set, SetElem, SetElems, Table};
    use super::*;
    use proptest::prelude::*;

    const T: &str = "istio-proxy-nat";

    fn ruleset(exprs: Vec<Expr>, set: Option<(Set, Vec<SetElem>)>) -> Ruleset {
        let mut rs = Ruleset {
            tables: vec![Table {
                family: NFPROTO_INET,
                name: T.into(),
                ..Table::default()
            }],
            chains: vec![Chain {
                family: NFPROTO_INET,
                table: T.into(),
                name: "istio-output".into(),
                ..Chain::default()
            }],
            rules: vec![Rule {
                family: NFPROTO_INET,
                table: T.into(),
                chain: "istio-output".into(),
                exprs,
                ..Rule::default()
            }],
            ..Ruleset::default()
        };
        if let Some((s, elements)) = set {
            rs.elements.push(SetElems {
                family: NFPROTO_INET,
                table: T.into(),
                set: s.name.clone(),
                elements,
                ..SetElems::default()
            });
            rs.sets.push(s);
        }
        rs
    }

    fn only_rule(state: &NftState) -> &StateRule {
        &state.chains[&(T.to_string(), "istio-output".to_string())].rules[0]
    }

    proptest! {
        #[test]
        fn arbitrary_rules_never_panic_and_unknown_ones_are_named(exprs in proptest::collection::vec(expr(), 0..8)) {
            let state = decode(&ruleset(exprs, None));
            let rule = only_rule(&state);
            if let Err(why) = &rule.stmts {
                prop_assert!(!why.is_empty() && rule.text.contains('['), "{why}: {}", rule.text);
            }
        }
    }

    fn lookup(set: &str, invert: bool) -> Vec<Expr> {
        let r = Register::R1;
        vec![
            Expr::Meta {
                key: NlMeta::L4Proto,
                dreg: r,
            },
            Expr::Cmp {
                sreg: r,
                op: CmpOp::Eq,
                data: vec![IPPROTO_TCP],
            },
            Expr::Payload {
                base: PayloadBase::Transport,
                offset: 2,
                len: 2,
                dreg: r,
            },
            Expr::Lookup {
                set: set.into(),
                set_id: None,
                sreg: r,
                dreg: None,
                invert,
            },
            Expr::Immediate {
                dreg: Register::VERDICT,
                data: Data::Verdict(Verdict::Return),
            },
        ]
    }

    fn port_set(name: &str, flags: u32, keys: &[(u16, u32)]) -> (Set, Vec<SetElem>) {
        let set = Set {
            family: NFPROTO_INET,
            table: T.into(),
            name: name.into(),
            flags,
            key_type: 13,
            key_len: 2,
            ..Set::default()
        };
        let elements = keys
            .iter()
            .map(|(k, f)| SetElem {
                key: Some(k.to_be_bytes().to_vec()),
                flags: *f,
                ..SetElem::default()
            })
            .collect();
        (set, elements)
    }

    #[test]
    fn interval_sets_read_back_in_key_order_and_open_at_the_top() {
        let end = NFT_SET_ELEM_INTERVAL_END;
        // Dumped in the kernel's (descending) order, with nft's leading end marker at zero and
        // an interval open to the top of the key space.
        let set = port_set(
            "__set0",
            NFT_SET_ANONYMOUS | NFT_SET_INTERVAL,
            &[(65000, 0), (8101, end), (8000, 0), (54, end), (53, 0), (0, end)],
        );
        let state = decode(&ruleset(lookup("__set0", true), Some(set)));
        assert_eq!(
            only_rule(&state).text,
            "tcp dport != { 53, 8000-8100, 65000-65535 } return"
        );
        assert!(state.objects.is_empty(), "{:?}", state.objects);
    }

    #[test]
    fn named_sets_maps_and_odd_sets_are_drift_naming_them() {
        let named = port_set("allowed", 0, &[(22, 0)]);
        let state = decode(&ruleset(lookup("allowed", false), Some(named)));
        let why = only_rule(&state).stmts.clone().unwrap_err();
        assert!(why.contains("named set @allowed"), "{why}");
        assert_eq!(
            state.objects.iter().map(|o| o.kind.as_str()).collect::<Vec<_>>(),
            ["set"]
        );

        let end = NFT_SET_ELEM_INTERVAL_END;
        let overlapping = port_set(
            "__set1",
            NFT_SET_ANONYMOUS | NFT_SET_INTERVAL,
            &[(5, 0), (7, 0), (9, end)],
        );
        let state = decode(&ruleset(lookup("__set1", false), Some(overlapping)));
        let why = only_rule(&state).stmts.clone().unwrap_err();
        assert!(why.contains("overlapping"), "{why}");
        // A set the rule does not read any more is still named (never skipped).
        assert_eq!(
            state.objects.iter().map(|o| o.kind.as_str()).collect::<Vec<_>>(),
            ["anonymous set"]
        );

        let missing = decode(&ruleset(lookup("__set9", false), None));
        assert!(only_rule(&missing).stmts.clone().unwrap_err().contains("does not hold"));
    }

    #[test]
    fn other_tables_and_families_are_not_read() {
        let mut rs = ruleset(vec![Expr::Counter { packets: 1, bytes: 2 }], None);
        rs.rules[0].family = NFPROTO_IPV4;
        rs.tables.push(Table {
            family: NFPROTO_INET,
            name: "kube-proxy".into(),
            ..Table::default()
        });
        let state = decode(&rs);
        assert_eq!(state.tables.iter().collect::<Vec<_>>(), [T]);
        assert!(
            state.chains[&(T.to_string(), "istio-output".to_string())]
                .rules
                .is_empty()
        );
    }

    #[test]
    fn objects_the_dump_does_not_carry_are_counted_from_the_tables_use() {
        let mut rs = ruleset(vec![], None);
        rs.tables[0].use_count = Some(3);
        let state = decode(&rs);
        let names: Vec<&str> = state.objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["2 named object(s) or flowtable(s)"]);
    }
}
