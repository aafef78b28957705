//! The IR lowered to nf_tables messages: a [`Transaction`] becomes the batch that leaves the
//! kernel in exactly the state `nft -f` of the same transaction's text leaves it (proved
//! against the kernel for every nft golden case and random configurations in
//! `tests/it/nft_from_ir.rs`: both listings and both netlink dumps equal).
//!
//! What nft 1.0.6 adds or rewrites on its way to the kernel, reproduced here:
//! - **Dependencies** in an `inet` table: a port match without an earlier `meta l4proto` of the
//!   rule gets `meta l4proto P` in front, an address match without an earlier address match
//!   `meta nfproto ipv4|ipv6`.
//! - **Prefixes**: `/full` compares the whole address; a byte-aligned prefix loads and compares
//!   only its bytes (`10.0.0.0/8` is one byte); any other prefix (and `/0`) loads the address,
//!   masks it with `bitwise` and compares the masked network (host bits cleared).
//! - **Ports**: a range is `cmp gte` + `cmp lte`, a negated range one `range neq`; several ports
//!   are an anonymous set, an interval set as soon as one is a range.
//! - **Anonymous sets** (`--compact` address lists, port lists): named `__set%d` with a
//!   transaction id, flags `anonymous|constant` (+ `interval`), the element count as size
//!   hint, nft's user data (key byte order, merge flag for intervals, the `typeof` key
//!   description), created right before their rule. Interval sets are merged (overlapping and
//!   adjacent ranges become one, as nft's auto-merge does) and sent as boundaries: a closing
//!   boundary at zero unless the first range starts there, then each range's start and the
//!   closing boundary after its end; a range reaching the top of the key space has no closing
//!   boundary and its start carries nft's "open interval" element user data (the size hint
//!   still counts the missing boundary). A one-element set is the plain match (nft folds it).
//! - **Interfaces**: the name padded to 16 bytes; a wildcard `eth*` compares the prefix only.
//! - **Values**: marks, ids, `ct` data in host order; addresses and ports in network order;
//!   `ct state` a bit test (`bitwise` with the states' bits, `cmp neq 0`); every expression
//!   uses register 1; `redirect` gives only the minimum port register with the "port given"
//!   flag; `tproxy` without a family is family 0.
//! - **Placement**: every rule gets a transaction id; `insert … index N` goes before the rule
//!   then at `N` (named by its id: it has no handle yet); `flush table` deletes the table's
//!   rules.
//! - **Owners** given by name are resolved to ids from the same `/etc/passwd` and
//!   `/etc/group` nft would read ([`Ids`]).
//!
//! Each message records the operation it came from, so a refusal names that operation's text.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use super::attr::RawAttr;
use super::expr::{CmpOp, CtKey, Data, Expr, MetaKey, PayloadBase, RangeOp, Register, Verdict};
use super::msg::{
    Chain, Hook, Message, NF_ACCEPT, NF_DROP, NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6, NFT_SET_ANONYMOUS,
    NFT_SET_CONSTANT, NFT_SET_ELEM_INTERVAL_END, NFT_SET_INTERVAL, Rule, Set, SetElem, SetElems, Table,
};
use crate::model::{CtState, Hook as NfHook, Proto};
use crate::nft::ir::{Direction, NftChain, NftHook, NftOp, NftRule, NftTable, OwnerKind, Policy, Stmt, Transaction};
use crate::sys::host::Ids;
use crate::values::{Cidr, Family, PortSpec};

const R1: Register = Register::R1;

/// nft's data types of set keys (`ipv4_addr`, `ipv6_addr`, `inet_service`).
const TYPE_IPV4_ADDR: u32 = 7;
const TYPE_IPV6_ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;

/// nft's set user data (`NFTNL_UDATA_SET_*`) and the `typeof` record of a payload key.
const UDATA_KEYBYTEORDER: u8 = 0;
const UDATA_MERGE_ELEMENTS: u8 = 2;
const UDATA_KEY_TYPEOF: u8 = 3;
const BYTEORDER_BIG_ENDIAN: u32 = 2;
const EXPR_PAYLOAD: u32 = 7;
/// nft's protocol description ids (`enum proto_desc_id`).
const DESC_UDP: u32 = 6;
const DESC_TCP: u32 = 8;
const DESC_IP: u32 = 12;
const DESC_IP6: u32 = 13;
/// `NFTA_SET_ELEM_USERDATA` and nft's element flag `NFTNL_SET_ELEM_F_INTERVAL_OPEN`.
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const ELEM_F_INTERVAL_OPEN: u32 = 1;

/// A transaction as messages, and for each message the index of the operation it carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lowered {
    pub messages: Vec<Message>,
    pub origin: Vec<usize>,
}

/// An operation that cannot be lowered (nft would refuse its text too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerError {
    /// The operation, as `nft -f` text.
    pub op: String,
    pub why: String,
}

impl fmt::Display for LowerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.why)
    }
}

impl std::error::Error for LowerError {}

/// Lowers `tx`; owner names resolve through `ids`.
pub fn lower(tx: &Transaction, ids: &Ids) -> Result<Lowered, LowerError> {
    let mut l = Lowerer {
        ids,
        out: Lowered::default(),
        next_rule: 1,
        next_set: 1,
        order: HashMap::new(),
        op: 0,
    };
    for (i, op) in tx.ops.iter().enumerate() {
        l.op = i;
        l.lower_op(op).map_err(|why| LowerError {
            op: op.to_string(),
            why,
        })?;
    }
    Ok(l.out)
}

struct Lowerer<'a> {
    ids: &'a Ids,
    out: Lowered,
    next_rule: u32,
    next_set: u32,
    /// The transaction ids of the rules this batch put in each chain, in chain order.
    order: HashMap<(NftTable, NftChain), Vec<u32>>,
    /// The operation being lowered.
    op: usize,
}

fn table_msg(t: NftTable) -> Table {
    Table {
        family: NFPROTO_INET,
        name: t.name().into(),
        ..Table::default()
    }
}

fn chain_msg(t: NftTable, c: NftChain) -> Chain {
    Chain {
        family: NFPROTO_INET,
        table: t.name().into(),
        name: c.name().into(),
        ..Chain::default()
    }
}

fn hook_num(h: NftHook) -> u32 {
    match h {
        NftHook::Netfilter(NfHook::Prerouting) => 0,
        NftHook::Netfilter(NfHook::Input) => 1,
        NftHook::Netfilter(NfHook::Forward) => 2,
        NftHook::Netfilter(NfHook::Output) => 3,
        NftHook::Netfilter(NfHook::Postrouting) => 4,
        NftHook::Ingress => 5,
    }
}

impl Lowerer<'_> {
    fn push(&mut self, m: Message) {
        self.out.messages.push(m);
        self.out.origin.push(self.op);
    }

    fn forget_table(&mut self, t: NftTable) {
        self.order.retain(|(table, _), _| *table != t);
    }

    fn lower_op(&mut self, op: &NftOp) -> Result<(), String> {
        match op {
            NftOp::AddTable(t) => self.push(Message::NewTable(table_msg(*t))),
            NftOp::FlushTable(t) => {
                self.forget_table(*t);
                self.push(Message::DelRule(Rule {
                    family: NFPROTO_INET,
                    table: t.name().into(),
                    ..Rule::default()
                }));
            }
            NftOp::DeleteTable(t) => {
                self.forget_table(*t);
                self.push(Message::DelTable(table_msg(*t)));
            }
            NftOp::AddChain(t, c) => {
                let mut m = chain_msg(*t, *c);
                if let NftChain::Base(h) = c {
                    let base = t.base_chain(*h);
                    m.hook = Some(Hook {
                        num: hook_num(base.hook),
                        priority: base.priority,
                    });
                    m.chain_type = Some(base.kind.word().into());
                    m.policy = Some(match base.policy {
                        Policy::Accept => NF_ACCEPT,
                        Policy::Drop => NF_DROP,
                    });
                }
                self.push(Message::NewChain(m));
            }
            NftOp::DeleteChain(t, c) => {
                self.order.remove(&(*t, *c));
                self.push(Message::DelChain(chain_msg(*t, *c)));
            }
            NftOp::AddRule { table, chain, rule } => self.rule(*table, *chain, rule, None)?,
            NftOp::InsertRule {
                table,
                chain,
                index,
                rule,
            } => self.rule(*table, *chain, rule, Some(*index as usize))?,
        }
        Ok(())
    }

    /// A rule (appended, or inserted before the rule now at `insert`), after the anonymous
    /// sets it uses.
    fn rule(&mut self, table: NftTable, chain: NftChain, rule: &NftRule, insert: Option<usize>) -> Result<(), String> {
        let exprs = self.exprs(table, rule)?;
        let id = self.next_rule;
        self.next_rule += 1;
        let order = self.order.entry((table, chain)).or_default();
        let position_id = match insert {
            None => {
                order.push(id);
                None
            }
            Some(at) => {
                let Some(before) = order.get(at).copied() else {
                    return Err(format!(
                        "index {at} is past the {} rule(s) this transaction put in the chain",
                        order.len()
                    ));
                };
                order.insert(at, id);
                Some(before)
            }
        };
        self.push(Message::NewRule(Rule {
            family: NFPROTO_INET,
            table: table.name().into(),
            chain: chain.name().into(),
            append: insert.is_none(),
            id: Some(id),
            position_id,
            exprs,
            ..Rule::default()
        }));
        Ok(())
    }

    /// The rule's expressions; anonymous sets it needs are pushed as they come.
    fn exprs(&mut self, table: NftTable, rule: &NftRule) -> Result<Vec<Expr>, String> {
        let mut cx = RuleCx::default();
        for s in &rule.stmts {
            self.stmt(table, &mut cx, s)?;
        }
        Ok(cx.out)
    }

    fn stmt(&mut self, table: NftTable, cx: &mut RuleCx, s: &Stmt) -> Result<(), String> {
        match s {
            Stmt::Iface { input, name } => {
                let key = if *input { MetaKey::IifName } else { MetaKey::OifName };
                let (body, wildcard) = crate::nft::ir::iface_pattern(name);
                let mut data = body.as_bytes().to_vec();
                if !wildcard {
                    data.resize(16, 0);
                }
                cx.meta(key);
                cx.cmp(CmpOp::Eq, data);
            }
            Stmt::L4Proto(p) => {
                cx.meta(MetaKey::L4Proto);
                cx.cmp(CmpOp::Eq, vec![proto_num(*p)]);
                cx.l4 = Some(*p);
            }
            Stmt::CtState(states) => {
                let bits = states.iter().fold(0u32, |acc, s| acc | ct_state_bit(*s));
                cx.out.push(Expr::Ct {
                    key: CtKey::State,
                    dreg: R1,
                    direction: None,
                });
                cx.out.push(Expr::Bitwise {
                    sreg: R1,
                    dreg: R1,
                    len: 4,
                    mask: bits.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                });
                cx.cmp(CmpOp::Neq, vec![0; 4]);
            }
            Stmt::Addr {
                direction,
                negated,
                cidr,
            } => {
                cx.network(cidr.family())?;
                cx.prefix(*direction, *negated, cidr);
            }
            Stmt::AddrSet { direction, cidrs } => self.addr_set(table, cx, *direction, cidrs)?,
            Stmt::Port {
                proto,
                direction,
                negated,
                ports,
            } => self.ports(table, cx, *proto, *direction, *negated, ports)?,
            Stmt::Owner {
                kind, negated, owner, ..
            } => {
                let group = *kind == OwnerKind::Gid;
                let id = self.ids.resolve(owner, group)?;
                cx.meta(if group { MetaKey::SkGid } else { MetaKey::SkUid });
                cx.cmp(op(*negated), id.to_ne_bytes().to_vec());
            }
            Stmt::Mark { negated, mark } => {
                cx.meta(MetaKey::Mark);
                cx.cmp(op(*negated), mark.0.to_ne_bytes().to_vec());
            }
            Stmt::CtMark(mark) => {
                cx.ct(CtKey::Mark);
                cx.cmp(CmpOp::Eq, mark.0.to_ne_bytes().to_vec());
            }
            Stmt::Counter => cx.out.push(Expr::Counter { packets: 0, bytes: 0 }),
            Stmt::Jump(c) => cx.verdict(Verdict::Jump(c.name().into())),
            Stmt::Return => cx.verdict(Verdict::Return),
            Stmt::Accept => cx.verdict(Verdict::Accept),
            Stmt::Drop => cx.verdict(Verdict::Drop),
            Stmt::Redirect(port) => {
                cx.imm(port.get().to_be_bytes().to_vec());
                cx.out.push(Expr::Redir {
                    proto_min: Some(R1),
                    proto_max: None,
                    // NF_NAT_RANGE_PROTO_SPECIFIED
                    flags: 2,
                });
            }
            Stmt::Tproxy { family, port } => {
                cx.imm(port.get().to_be_bytes().to_vec());
                cx.out.push(Expr::Tproxy {
                    family: family.map_or(0, |f| u32::from(nfproto(f))),
                    addr: None,
                    port: Some(R1),
                });
            }
            Stmt::SetMark(mark) => {
                cx.imm(mark.0.to_ne_bytes().to_vec());
                cx.out.push(Expr::MetaSet {
                    key: MetaKey::Mark,
                    sreg: R1,
                });
            }
            Stmt::SaveMark => {
                cx.meta(MetaKey::Mark);
                cx.out.push(Expr::CtSet {
                    key: CtKey::Mark,
                    sreg: R1,
                    direction: None,
                });
            }
            Stmt::RestoreMark => {
                cx.ct(CtKey::Mark);
                cx.out.push(Expr::MetaSet {
                    key: MetaKey::Mark,
                    sreg: R1,
                });
            }
            Stmt::CtZone(zone) => {
                cx.imm(zone.to_ne_bytes().to_vec());
                cx.out.push(Expr::CtSet {
                    key: CtKey::Zone,
                    sreg: R1,
                    direction: None,
                });
            }
        }
        Ok(())
    }

    /// `ip|ip6 saddr|daddr { … }`: an interval set (one prefix is the plain match).
    fn addr_set(
        &mut self,
        table: NftTable,
        cx: &mut RuleCx,
        direction: Direction,
        cidrs: &[Cidr],
    ) -> Result<(), String> {
        let direction = &direction;
        match cidrs {
            [] => return Err("an empty address set".into()),
            [one] => {
                cx.network(one.family())?;
                cx.prefix(*direction, false, one);
            }
            many => {
                let family = many[0].family();
                if many.iter().any(|c| c.family() != family) {
                    return Err("an address set mixes IPv4 and IPv6".into());
                }
                cx.network(family)?;
                let (offset, len) = addr_field(family, *direction);
                cx.load(PayloadBase::Network, offset, len);
                let ranges = many.iter().map(cidr_range).collect();
                let (key_type, desc, field) = match (family, direction) {
                    (Family::V4, Direction::Source) => (TYPE_IPV4_ADDR, DESC_IP, 11),
                    (Family::V4, Direction::Destination) => (TYPE_IPV4_ADDR, DESC_IP, 12),
                    (Family::V6, Direction::Source) => (TYPE_IPV6_ADDR, DESC_IP6, 8),
                    (Family::V6, Direction::Destination) => (TYPE_IPV6_ADDR, DESC_IP6, 9),
                };
                let key = SetKey {
                    key_type,
                    len: len as usize,
                    typeof_: (desc, field),
                };
                let lookup = self.anon_set(table, &key, Elements::Intervals(ranges), false);
                cx.out.push(lookup);
            }
        }
        Ok(())
    }

    /// `tcp|udp sport|dport`: one port, a range, or a set.
    fn ports(
        &mut self,
        table: NftTable,
        cx: &mut RuleCx,
        proto: Proto,
        direction: Direction,
        negated: bool,
        ports: &[PortSpec],
    ) -> Result<(), String> {
        let (proto, negated) = (&proto, &negated);

        cx.transport(*proto)?;
        let offset = match direction {
            Direction::Source => 0,
            Direction::Destination => 2,
        };
        cx.load(PayloadBase::Transport, offset, 2);
        match ports {
            [] => return Err("an empty port list".into()),
            [PortSpec::Single(p)] => cx.cmp(op(*negated), p.get().to_be_bytes().to_vec()),
            [PortSpec::Range(lo, hi)] => {
                let (lo, hi) = (lo.get().to_be_bytes().to_vec(), hi.get().to_be_bytes().to_vec());
                if *negated {
                    cx.out.push(Expr::Range {
                        sreg: R1,
                        op: RangeOp::Neq,
                        from: lo,
                        to: hi,
                    });
                } else {
                    cx.cmp(CmpOp::Gte, lo);
                    cx.cmp(CmpOp::Lte, hi);
                }
            }
            many => {
                let field = if offset == 0 { 1 } else { 2 };
                let desc = match proto {
                    Proto::Tcp => DESC_TCP,
                    _ => DESC_UDP,
                };
                let key = SetKey {
                    key_type: TYPE_INET_SERVICE,
                    len: 2,
                    typeof_: (desc, field),
                };
                let elements = if many.iter().any(|p| matches!(p, PortSpec::Range(..))) {
                    Elements::Intervals(
                        many.iter()
                            .map(|p| match p {
                                PortSpec::Single(p) => (u128::from(p.get()), u128::from(p.get())),
                                PortSpec::Range(lo, hi) => (u128::from(lo.get()), u128::from(hi.get())),
                            })
                            .collect(),
                    )
                } else {
                    Elements::Keys(
                        many.iter()
                            .filter_map(|p| match p {
                                PortSpec::Single(p) => Some(p.get().to_be_bytes().to_vec()),
                                PortSpec::Range(..) => None,
                            })
                            .collect(),
                    )
                };
                let lookup = self.anon_set(table, &key, elements, *negated);
                cx.out.push(lookup);
            }
        }
        Ok(())
    }

    /// Pushes an anonymous set with its elements; returns the lookup of it.
    fn anon_set(&mut self, table: NftTable, key: &SetKey, elements: Elements, invert: bool) -> Expr {
        let id = self.next_set;
        self.next_set += 1;
        let (interval, elements, size) = match elements {
            Elements::Keys(keys) => {
                let n = keys.len() as u32;
                let elements = keys
                    .into_iter()
                    .map(|k| SetElem {
                        key: Some(k),
                        ..SetElem::default()
                    })
                    .collect();
                (false, elements, n)
            }
            Elements::Intervals(ranges) => {
                let (elements, size) = interval_elements(ranges, key.len);
                (true, elements, size)
            }
        };
        let name = "__set%d".to_string();
        self.push(Message::NewSet(Set {
            family: NFPROTO_INET,
            table: table.name().into(),
            name: name.clone(),
            flags: NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | if interval { NFT_SET_INTERVAL } else { 0 },
            key_type: key.key_type,
            key_len: key.len as u32,
            size: Some(size),
            id: Some(id),
            userdata: Some(set_udata(interval, key.typeof_)),
            ..Set::default()
        }));
        self.push(Message::NewSetElems(SetElems {
            family: NFPROTO_INET,
            table: table.name().into(),
            set: name.clone(),
            set_id: Some(id),
            elements,
            ..SetElems::default()
        }));
        Expr::Lookup {
            set: name,
            set_id: Some(id),
            sreg: R1,
            dreg: None,
            invert,
        }
    }
}

/// A set's key: nft's data type, its width in bytes, and the `typeof` (description, field).
struct SetKey {
    key_type: u32,
    len: usize,
    typeof_: (u32, u32),
}

enum Elements {
    /// Single keys (network order).
    Keys(Vec<Vec<u8>>),
    /// Inclusive ranges of keys as numbers.
    Intervals(Vec<(u128, u128)>),
}

/// nft's user data of an anonymous set: key byte order, the merge flag of interval sets, and
/// the key's `typeof` (a payload field).
fn set_udata(interval: bool, (desc, field): (u32, u32)) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    let u32_tlv = |out: &mut Vec<u8>, t: u8, v: u32| {
        out.extend_from_slice(&[t, 4]);
        out.extend_from_slice(&v.to_ne_bytes());
    };
    u32_tlv(&mut out, UDATA_KEYBYTEORDER, BYTEORDER_BIG_ENDIAN);
    if interval {
        u32_tlv(&mut out, UDATA_MERGE_ELEMENTS, 1);
    }
    // typeof: { expr type 0: payload; data 1: { desc 0, field 1 } }
    out.extend_from_slice(&[UDATA_KEY_TYPEOF, 20, 0, 4]);
    out.extend_from_slice(&EXPR_PAYLOAD.to_ne_bytes());
    out.extend_from_slice(&[1, 12, 0, 4]);
    out.extend_from_slice(&desc.to_ne_bytes());
    out.extend_from_slice(&[1, 4]);
    out.extend_from_slice(&field.to_ne_bytes());
    out
}

/// Inclusive ranges, merged as nft's auto-merge does, as interval boundaries of `width`
/// bytes; and the size hint nft gives (the boundaries, counting a missing last one).
fn interval_elements(mut ranges: Vec<(u128, u128)>, width: usize) -> (Vec<SetElem>, u32) {
    let max = if width >= 16 {
        u128::MAX
    } else {
        (1u128 << (width * 8)) - 1
    };
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if last.1 == max || lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let key = |v: u128| v.to_be_bytes()[16 - width..].to_vec();
    let end = |v: u128| SetElem {
        key: Some(key(v)),
        flags: NFT_SET_ELEM_INTERVAL_END,
        ..SetElem::default()
    };
    let mut out = Vec::with_capacity(merged.len() * 2 + 1);
    if merged.first().is_some_and(|(lo, _)| *lo != 0) {
        out.push(end(0));
    }
    let mut open = false;
    for (lo, hi) in merged {
        let mut start = SetElem {
            key: Some(key(lo)),
            ..SetElem::default()
        };
        if hi == max {
            let mut udata = vec![1, 4];
            udata.extend_from_slice(&ELEM_F_INTERVAL_OPEN.to_ne_bytes());
            start.unknown.push(RawAttr {
                kind: NFTA_SET_ELEM_USERDATA,
                value: udata,
            });
            out.push(start);
            open = true;
        } else {
            out.push(start);
            out.push(end(hi + 1));
        }
    }
    let size = out.len() as u32 + u32::from(open);
    (out, size)
}

/// A CIDR as an inclusive range of addresses (host bits ignored, as nft masks them).
fn cidr_range(c: &Cidr) -> (u128, u128) {
    let (bits, value) = match c.network().addr() {
        IpAddr::V4(a) => (32u32, u128::from(u32::from(a))),
        IpAddr::V6(a) => (128u32, u128::from(a)),
    };
    let host = bits - u32::from(c.prefix_len());
    let span = if host >= 128 { u128::MAX } else { (1u128 << host) - 1 };
    (value, value | span)
}

fn op(negated: bool) -> CmpOp {
    if negated { CmpOp::Neq } else { CmpOp::Eq }
}

fn proto_num(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        _ => 17,
    }
}

fn nfproto(f: Family) -> u8 {
    match f {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
    }
}

/// The `ct state` bit of a state (`NF_CT_STATE_BIT`).
fn ct_state_bit(s: CtState) -> u32 {
    match s {
        CtState::Invalid => 1,
        CtState::Established => 2,
        CtState::Related => 4,
        CtState::New => 8,
    }
}

/// Offset and length of the source or destination address in the network header.
fn addr_field(f: Family, d: Direction) -> (u32, u32) {
    match (f, d) {
        (Family::V4, Direction::Source) => (12, 4),
        (Family::V4, Direction::Destination) => (16, 4),
        (Family::V6, Direction::Source) => (8, 16),
        (Family::V6, Direction::Destination) => (24, 16),
    }
}

/// One rule's expressions as they are built, with the protocol context nft keeps to decide
/// which dependencies to add.
#[derive(Default)]
struct RuleCx {
    out: Vec<Expr>,
    l3: Option<Family>,
    l4: Option<Proto>,
}

impl RuleCx {
    fn meta(&mut self, key: MetaKey) {
        self.out.push(Expr::Meta { key, dreg: R1 });
    }

    fn ct(&mut self, key: CtKey) {
        self.out.push(Expr::Ct {
            key,
            dreg: R1,
            direction: None,
        });
    }

    fn cmp(&mut self, op: CmpOp, data: Vec<u8>) {
        self.out.push(Expr::Cmp { sreg: R1, op, data });
    }

    fn imm(&mut self, value: Vec<u8>) {
        self.out.push(Expr::Immediate {
            dreg: R1,
            data: Data::Value(value),
        });
    }

    fn verdict(&mut self, v: Verdict) {
        self.out.push(Expr::Immediate {
            dreg: Register::VERDICT,
            data: Data::Verdict(v),
        });
    }

    fn load(&mut self, base: PayloadBase, offset: u32, len: u32) {
        self.out.push(Expr::Payload {
            base,
            offset,
            len,
            dreg: R1,
        });
    }

    /// `meta nfproto` before the rule's first address match.
    fn network(&mut self, f: Family) -> Result<(), String> {
        match self.l3 {
            Some(have) if have == f => Ok(()),
            Some(have) => Err(format!("conflicting protocols {have} and {f} in one rule")),
            None => {
                self.meta(MetaKey::NfProto);
                self.cmp(CmpOp::Eq, vec![nfproto(f)]);
                self.l3 = Some(f);
                Ok(())
            }
        }
    }

    /// `meta l4proto` before a port match unless the rule already matched the protocol.
    fn transport(&mut self, p: Proto) -> Result<(), String> {
        match self.l4 {
            Some(have) if have == p => Ok(()),
            Some(have) => Err(format!(
                "conflicting protocols {} and {} in one rule",
                have.as_str(),
                p.as_str()
            )),
            None => {
                self.meta(MetaKey::L4Proto);
                self.cmp(CmpOp::Eq, vec![proto_num(p)]);
                self.l4 = Some(p);
                Ok(())
            }
        }
    }

    /// An address prefix match as nft linearizes it.
    fn prefix(&mut self, d: Direction, negated: bool, cidr: &Cidr) {
        let (offset, full) = addr_field(cidr.family(), d);
        let bytes = match cidr.network().addr() {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let len = u32::from(cidr.prefix_len());
        if len == full * 8 || (len > 0 && len % 8 == 0) {
            let n = if len == full * 8 { full } else { len / 8 };
            self.load(PayloadBase::Network, offset, n);
            self.cmp(op(negated), bytes[..n as usize].to_vec());
        } else {
            self.load(PayloadBase::Network, offset, full);
            let mut mask = vec![0u8; full as usize];
            for (i, m) in mask.iter_mut().enumerate() {
                let bits = len.saturating_sub(i as u32 * 8).min(8);
                *m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
            }
            self.out.push(Expr::Bitwise {
                sreg: R1,
                dreg: R1,
                len: full,
                mask,
                xor: vec![0; full as usize],
            });
            self.cmp(op(negated), bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_merge_and_close_like_nft() {
        // { 10.0.0.0/8, 192.168.1.0/24, 10.1.0.0/16 }: two ranges after the merge.
        let c = |s: &str| cidr_range(&Cidr::parse(s).unwrap());
        let (els, size) = interval_elements(vec![c("10.0.0.0/8"), c("192.168.1.0/24"), c("10.1.0.0/16")], 4);
        let keys: Vec<(Vec<u8>, u32)> = els.iter().map(|e| (e.key.clone().unwrap(), e.flags)).collect();
        assert_eq!(
            keys,
            vec![
                (vec![0, 0, 0, 0], 1),
                (vec![10, 0, 0, 0], 0),
                (vec![11, 0, 0, 0], 1),
                (vec![192, 168, 1, 0], 0),
                (vec![192, 168, 2, 0], 1),
            ]
        );
        assert_eq!(size, 5);
        // { 0.0.0.0/1, 255.255.255.255/32 }: no leading boundary, an open last range.
        let (els, size) = interval_elements(vec![c("0.0.0.0/1"), c("255.255.255.255/32")], 4);
        assert_eq!(els.len(), 3);
        assert_eq!(size, 4);
        assert_eq!(els[2].unknown.len(), 1);
        // Adjacent port ranges merge: { 1000-2000, 2001 }.
        let (els, size) = interval_elements(vec![(1000, 2000), (2001, 2001)], 2);
        assert_eq!(els.len(), 3);
        assert_eq!(size, 3);
        assert_eq!(els[2].key.as_deref(), Some(&2002u16.to_be_bytes()[..]));
    }

    #[test]
    fn prefixes_linearize_like_nft() {
        let mut cx = RuleCx::default();
        cx.prefix(Direction::Destination, false, &Cidr::parse("10.1.2.3/8").unwrap());
        assert_eq!(
            cx.out[1],
            Expr::Cmp {
                sreg: R1,
                op: CmpOp::Eq,
                data: vec![10]
            }
        );
        let mut cx = RuleCx::default();
        cx.prefix(Direction::Destination, true, &Cidr::parse("10.16.0.0/12").unwrap());
        assert!(matches!(&cx.out[1], Expr::Bitwise { mask, .. } if mask == &vec![255, 240, 0, 0]));
        let mut cx = RuleCx::default();
        cx.prefix(Direction::Source, false, &Cidr::parse("::/0").unwrap());
        assert!(matches!(&cx.out[1], Expr::Bitwise { mask, len: 16, .. } if mask == &vec![0; 16]));
    }
}
