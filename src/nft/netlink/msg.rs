//! nf_tables netlink messages — tables, chains, rules, sets, set elements — and the batch
//! that carries a whole transaction, with encoding and decoding side by side.
//!
//! Every message is `nlmsghdr` (16 bytes, host order), `nfgenmsg` (family, version 0,
//! big-endian `res_id`) and attributes. A change is one batch: `NFNL_MSG_BATCH_BEGIN`
//! (`res_id` = `NFNL_SUBSYS_NFTABLES`), the messages each with its own sequence number and
//! `NLM_F_ACK`, `NFNL_MSG_BATCH_END`; the kernel applies all of it or nothing. Dumps
//! (`NFT_MSG_GET*` with `NLM_F_DUMP`) answer with the same `NFT_MSG_NEW*` messages, which
//! decode into the same types; kernel-reported fields (handles, use counts) are `Option`s that
//! the caller leaves `None` when building a change. Attributes a decoder does not know land in
//! the object's `unknown` list, and message kinds it does not know in [`Message::Unknown`]:
//! nothing is skipped silently.

use std::fmt;

use super::attr::{self, Attr, DecodeError, RawAttr, TooLong};
use super::expr::Expr;

/// `NFNL_SUBSYS_NFTABLES`: the high byte of every nf_tables message type.
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN` / `NFNL_MSG_BATCH_END` (`NLMSG_MIN_TYPE` and the next).
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_BATCH_GENID: u16 = 1;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;

/// `NFPROTO_*`: the family of a table (its `nfgenmsg` family).
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

/// Netfilter hook numbers (`enum nf_inet_hooks`).
pub const NF_INET_PRE_ROUTING: u32 = 0;
pub const NF_INET_LOCAL_IN: u32 = 1;
pub const NF_INET_FORWARD: u32 = 2;
pub const NF_INET_LOCAL_OUT: u32 = 3;
pub const NF_INET_POST_ROUTING: u32 = 4;

/// A base chain's policy (`NF_DROP` / `NF_ACCEPT`).
pub const NF_DROP: u32 = 0;
pub const NF_ACCEPT: u32 = 1;

/// Set flags (`enum nft_set_flags`) and element flags.
pub const NFT_SET_ANONYMOUS: u32 = 0x1;
pub const NFT_SET_CONSTANT: u32 = 0x2;
pub const NFT_SET_INTERVAL: u32 = 0x4;
pub const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

/// `enum nf_tables_msg_types`, the low byte of a message type.
mod kind {
    pub const NEWTABLE: u8 = 0;
    pub const GETTABLE: u8 = 1;
    pub const DELTABLE: u8 = 2;
    pub const NEWCHAIN: u8 = 3;
    pub const GETCHAIN: u8 = 4;
    pub const DELCHAIN: u8 = 5;
    pub const NEWRULE: u8 = 6;
    pub const GETRULE: u8 = 7;
    pub const DELRULE: u8 = 8;
    pub const NEWSET: u8 = 9;
    pub const GETSET: u8 = 10;
    pub const NEWSETELEM: u8 = 12;
    pub const GETSETELEM: u8 = 13;
}

/// The space one attribute nest may take (its length is 16 bits); big element lists are split
/// into several messages below it.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 60_000;

/// A table. `flags` are `NFT_TABLE_F_*` (0: an ordinary, active table).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    pub family: u8,
    pub name: String,
    pub flags: u32,
    pub handle: Option<u64>,
    /// Reported by the kernel: how many chains the table holds. Not encoded.
    pub use_count: Option<u32>,
    pub userdata: Option<Vec<u8>>,
    pub unknown: Vec<RawAttr>,
}

/// A base chain's hook: where it is called and in which order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    pub num: u32,
    pub priority: i32,
}

/// A chain: a base chain has a hook, a type (`filter`, `nat`, `route`) and a policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    pub family: u8,
    pub table: String,
    pub name: String,
    pub handle: Option<u64>,
    pub hook: Option<Hook>,
    pub policy: Option<u32>,
    pub chain_type: Option<String>,
    /// `NFT_CHAIN_*` flags; the kernel reports `NFT_CHAIN_BASE` (1) for base chains.
    pub flags: Option<u32>,
    pub id: Option<u32>,
    /// Reported by the kernel: how many rules jump here. Not encoded.
    pub use_count: Option<u32>,
    pub userdata: Option<Vec<u8>>,
    pub unknown: Vec<RawAttr>,
}

/// A rule. Placement when adding: `append` puts it after `position` (a rule handle) or at the
/// end; otherwise it goes before `position` or at the start. `position_id` names a rule added
/// earlier in the same batch by its `id`. A dump reports every rule with `append` set and
/// `position` = the handle of the rule before it (`None` for a chain's first rule).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    pub family: u8,
    pub table: String,
    pub chain: String,
    pub handle: Option<u64>,
    pub append: bool,
    pub position: Option<u64>,
    pub id: Option<u32>,
    pub position_id: Option<u32>,
    pub exprs: Vec<Expr>,
    pub userdata: Option<Vec<u8>>,
    pub unknown: Vec<RawAttr>,
}

/// A set. An anonymous set is named with `%d` (e.g. `__set%d`) when created and gets its real
/// name from the kernel; rules of the same batch refer to it by `id`. The kernel refuses
/// (`EINVAL`) a new set without an `id`, named sets included. `userdata` is nft's own
/// metadata (key byte order, `typeof`, auto-merge); the kernel keeps it opaque.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Set {
    pub family: u8,
    pub table: String,
    pub name: String,
    pub handle: Option<u64>,
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    pub data_type: Option<u32>,
    pub data_len: Option<u32>,
    pub policy: Option<u32>,
    /// `NFTA_SET_DESC_SIZE`: the number of elements, a sizing hint. (The kernel reports an
    /// empty description for a set created without one; that reads as `None`.)
    pub size: Option<u32>,
    pub id: Option<u32>,
    pub userdata: Option<Vec<u8>>,
    /// Reported by newer kernels (`NFTA_SET_TYPE`): the set backend in use. Not encoded.
    pub backend: Option<String>,
    /// Reported by newer kernels (`NFTA_SET_COUNT`): the number of elements. Not encoded.
    pub count: Option<u32>,
    pub unknown: Vec<RawAttr>,
}

/// One set element: a key, or for interval sets a boundary (`NFT_SET_ELEM_INTERVAL_END` in
/// `flags` closes the interval the previous boundary opened).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetElem {
    pub key: Option<Vec<u8>>,
    pub key_end: Option<Vec<u8>>,
    pub flags: u32,
    pub unknown: Vec<RawAttr>,
}

/// Elements of one set (by name, or by the transaction `set_id` of a set in the same batch).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetElems {
    pub family: u8,
    pub table: String,
    pub set: String,
    pub set_id: Option<u32>,
    pub elements: Vec<SetElem>,
    pub unknown: Vec<RawAttr>,
}

/// One nf_tables message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `add table` (`NLM_F_CREATE`: no error when it exists).
    NewTable(Table),
    /// `delete table` (by name, or handle when given): the table and everything in it.
    DelTable(Table),
    /// `add chain`.
    NewChain(Chain),
    /// `delete chain` (by table and name; the chain must hold no rules at commit and no rule
    /// may jump to it).
    DelChain(Chain),
    /// `add rule` / `insert rule`.
    NewRule(Rule),
    /// Deletes rules: the one with `handle`, else every rule of `chain`, else (an empty chain
    /// name) every rule of the table — `flush table`. Only the table, the chain (when not
    /// empty), the handle and unknown attributes are encoded.
    DelRule(Rule),
    /// `add set`.
    NewSet(Set),
    /// `add element`.
    NewSetElems(SetElems),
    /// A message kind this codec does not type, kept whole.
    Unknown {
        msg_type: u16,
        flags: u16,
        family: u8,
        attrs: Vec<RawAttr>,
    },
}

/// One frame of a netlink stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub msg_type: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
    pub payload: &'a [u8],
}

/// Splits a netlink stream into frames.
pub fn frames(buf: &[u8]) -> Result<Vec<Frame<'_>>, DecodeError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let Some(head) = rest.get(..16) else {
            return Err(DecodeError(format!("{} bytes left, a header needs 16", rest.len())));
        };
        let word = |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let len = word(0) as usize;
        if len < 16 || len > rest.len() {
            return Err(DecodeError(format!(
                "message claims {len} bytes, {} are left",
                rest.len()
            )));
        }
        out.push(Frame {
            msg_type: u16::from_ne_bytes([head[4], head[5]]),
            flags: u16::from_ne_bytes([head[6], head[7]]),
            seq: word(8),
            pid: word(12),
            payload: &rest[16..len],
        });
        rest = rest.get(attr::align(len)..).unwrap_or(&[]);
    }
    Ok(out)
}

/// Appends `nlmsghdr` + `nfgenmsg` and the body `f` writes, patching the length.
fn frame(
    out: &mut Vec<u8>,
    msg_type: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    f: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&msg_type.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&res_id.to_be_bytes());
    f(out);
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn nft_type(k: u8) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | u16::from(k)
}

fn family_name(f: u8) -> String {
    match f {
        NFPROTO_INET => "inet".into(),
        NFPROTO_IPV4 => "ip".into(),
        NFPROTO_IPV6 => "ip6".into(),
        3 => "arp".into(),
        5 => "netdev".into(),
        7 => "bridge".into(),
        other => format!("family{other}"),
    }
}

fn put_raw(out: &mut Vec<u8>, unknown: &[RawAttr]) {
    for a in unknown {
        attr::put(out, a.kind, &a.value);
    }
}

impl Message {
    /// The nf_tables message type (low byte) and the header flags this message is sent with.
    fn kind_and_flags(&self) -> (u16, u16) {
        match self {
            Message::NewTable(_) => (nft_type(kind::NEWTABLE), NLM_F_CREATE),
            Message::DelTable(_) => (nft_type(kind::DELTABLE), 0),
            Message::NewChain(_) => (nft_type(kind::NEWCHAIN), NLM_F_CREATE),
            Message::DelChain(_) => (nft_type(kind::DELCHAIN), 0),
            Message::DelRule(_) => (nft_type(kind::DELRULE), 0),
            Message::NewRule(r) => (
                nft_type(kind::NEWRULE),
                NLM_F_CREATE | if r.append { NLM_F_APPEND } else { 0 },
            ),
            Message::NewSet(_) => (nft_type(kind::NEWSET), NLM_F_CREATE),
            Message::NewSetElems(_) => (nft_type(kind::NEWSETELEM), NLM_F_CREATE),
            Message::Unknown { msg_type, flags, .. } => (*msg_type, *flags),
        }
    }

    pub fn family(&self) -> u8 {
        match self {
            Message::NewTable(t) | Message::DelTable(t) => t.family,
            Message::NewChain(c) | Message::DelChain(c) => c.family,
            Message::NewRule(r) | Message::DelRule(r) => r.family,
            Message::NewSet(s) => s.family,
            Message::NewSetElems(e) => e.family,
            Message::Unknown { family, .. } => *family,
        }
    }

    /// Appends this message as one or more frames (`seq`, `seq + 1`, …; only a long element
    /// list takes more than one) and returns how many sequence numbers it used.
    pub fn encode(&self, out: &mut Vec<u8>, seq: u32, extra_flags: u16) -> Result<u32, TooLong> {
        let (msg_type, flags) = self.kind_and_flags();
        let flags = flags | extra_flags | NLM_F_REQUEST;
        let family = self.family();
        if let Message::NewSetElems(e) = self {
            return e.encode(out, msg_type, flags, seq);
        }
        let mut result = Ok(());
        frame(out, msg_type, flags, seq, family, 0, |o| {
            result = self.encode_body(o);
        });
        result.map(|()| 1)
    }

    fn encode_body(&self, o: &mut Vec<u8>) -> Result<(), TooLong> {
        match self {
            Message::NewTable(t) | Message::DelTable(t) => {
                attr::put_str(o, 1, &t.name);
                if t.flags != 0 {
                    attr::put_be32(o, 2, t.flags);
                }
                if let Some(h) = t.handle {
                    attr::put_be64(o, 4, h);
                }
                if let Some(u) = &t.userdata {
                    attr::put(o, 6, u);
                }
                put_raw(o, &t.unknown);
            }
            Message::NewChain(c) | Message::DelChain(c) => {
                attr::put_str(o, 1, &c.table);
                if let Some(h) = c.handle {
                    attr::put_be64(o, 2, h);
                }
                attr::put_str(o, 3, &c.name);
                if let Some(h) = c.hook {
                    attr::nest(o, 4, |n| {
                        attr::put_be32(n, 1, h.num);
                        attr::put_be32(n, 2, h.priority as u32);
                    })?;
                }
                if let Some(p) = c.policy {
                    attr::put_be32(o, 5, p);
                }
                if let Some(t) = &c.chain_type {
                    attr::put_str(o, 7, t);
                }
                if let Some(f) = c.flags {
                    attr::put_be32(o, 10, f);
                }
                if let Some(id) = c.id {
                    attr::put_be32(o, 11, id);
                }
                if let Some(u) = &c.userdata {
                    attr::put(o, 12, u);
                }
                put_raw(o, &c.unknown);
            }
            Message::DelRule(r) => {
                attr::put_str(o, 1, &r.table);
                if !r.chain.is_empty() {
                    attr::put_str(o, 2, &r.chain);
                }
                if let Some(h) = r.handle {
                    attr::put_be64(o, 3, h);
                }
                put_raw(o, &r.unknown);
            }
            Message::NewRule(r) => {
                attr::put_str(o, 1, &r.table);
                attr::put_str(o, 2, &r.chain);
                if let Some(h) = r.handle {
                    attr::put_be64(o, 3, h);
                }
                let mut inner = Ok(());
                attr::nest(o, 4, |n| inner = Expr::encode_list(&r.exprs, n))?;
                inner?;
                if let Some(p) = r.position {
                    attr::put_be64(o, 6, p);
                }
                if let Some(u) = &r.userdata {
                    attr::put(o, 7, u);
                }
                if let Some(id) = r.id {
                    attr::put_be32(o, 9, id);
                }
                if let Some(id) = r.position_id {
                    attr::put_be32(o, 10, id);
                }
                put_raw(o, &r.unknown);
            }
            Message::NewSet(s) => {
                attr::put_str(o, 1, &s.table);
                attr::put_str(o, 2, &s.name);
                if s.flags != 0 {
                    attr::put_be32(o, 3, s.flags);
                }
                attr::put_be32(o, 4, s.key_type);
                attr::put_be32(o, 5, s.key_len);
                if let Some(v) = s.data_type {
                    attr::put_be32(o, 6, v);
                }
                if let Some(v) = s.data_len {
                    attr::put_be32(o, 7, v);
                }
                if let Some(v) = s.policy {
                    attr::put_be32(o, 8, v);
                }
                if let Some(size) = s.size {
                    attr::nest(o, 9, |n| attr::put_be32(n, 1, size))?;
                }
                if let Some(id) = s.id {
                    attr::put_be32(o, 10, id);
                }
                if let Some(u) = &s.userdata {
                    attr::put(o, 13, u);
                }
                if let Some(h) = s.handle {
                    attr::put_be64(o, 16, h);
                }
                put_raw(o, &s.unknown);
            }
            Message::NewSetElems(_) => unreachable!("encoded by SetElems::encode"),
            Message::Unknown { attrs, .. } => put_raw(o, attrs),
        }
        Ok(())
    }

    /// Decodes one frame. A frame of another subsystem or an untyped kind is
    /// [`Message::Unknown`]; bytes that do not parse are an error.
    pub fn decode(f: &Frame<'_>) -> Result<Message, DecodeError> {
        let Some((head, body)) = f.payload.split_at_checked(4) else {
            return Err(DecodeError(format!(
                "message type {:#x}: {} bytes, nfgenmsg needs 4",
                f.msg_type,
                f.payload.len()
            )));
        };
        let family = head[0];
        let attrs = attr::parse(body)?;
        let unknown = || Message::Unknown {
            msg_type: f.msg_type,
            flags: f.flags,
            family,
            attrs: attrs.iter().map(Attr::raw).collect(),
        };
        if f.msg_type >> 8 != NFNL_SUBSYS_NFTABLES || head[1] != 0 {
            return Ok(unknown());
        }
        Ok(match (f.msg_type & 0xff) as u8 {
            kind::NEWTABLE => Message::NewTable(decode_table(family, &attrs)),
            kind::DELTABLE => Message::DelTable(decode_table(family, &attrs)),
            kind::NEWCHAIN => Message::NewChain(decode_chain(family, &attrs)?),
            kind::DELCHAIN => Message::DelChain(decode_chain(family, &attrs)?),
            kind::NEWRULE => Message::NewRule(decode_rule(family, f.flags, &attrs)?),
            kind::DELRULE => Message::DelRule(decode_rule(family, f.flags, &attrs)?),
            kind::NEWSET => Message::NewSet(decode_set(family, &attrs)?),
            kind::NEWSETELEM => Message::NewSetElems(decode_elems(family, &attrs)?),
            _ => unknown(),
        })
    }

    /// A one-line description naming the object, e.g. `add rule inet t c (meta, cmp, counter)`.
    pub fn describe(&self) -> String {
        self.to_string()
    }

    /// Names the part of this message that starts at or contains byte `offset` of its first
    /// frame (the kernel's extended-ack offset): for a rule the expression, e.g.
    /// `expression 2 (immediate)`, otherwise the top-level attribute type.
    pub fn locate(&self, offset: u32) -> Option<String> {
        let mut out = Vec::new();
        self.encode(&mut out, 0, 0).ok()?;
        let first = frames(&out).ok()?.into_iter().next()?;
        // The payload starts after nlmsghdr (16) + nfgenmsg (4).
        let mut pos = 20usize;
        let offset = offset as usize;
        for a in attr::parse(first.payload.get(4..)?).ok()? {
            let len = 4 + a.value.len();
            if (pos..pos + len).contains(&offset) {
                if let (Message::NewRule(r), 4) = (self, a.ty()) {
                    let mut inner = pos + 4;
                    for (i, e) in attr::parse(a.value).ok()?.iter().enumerate() {
                        let elen = 4 + e.value.len();
                        if (inner..inner + elen).contains(&offset) {
                            return Some(format!("expression {} ({})", i + 1, r.exprs.get(i)?.name()));
                        }
                        inner += attr::align(elen);
                    }
                }
                return Some(format!("attribute type {}", a.ty()));
            }
            pos += attr::align(len);
        }
        None
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fam = family_name(self.family());
        match self {
            Message::NewTable(t) => write!(f, "add table {fam} {}", t.name),
            Message::DelTable(t) => write!(f, "delete table {fam} {}", t.name),
            Message::NewChain(c) => {
                write!(f, "add chain {fam} {} {}", c.table, c.name)?;
                if let (Some(h), Some(t)) = (c.hook, &c.chain_type) {
                    write!(f, " {{ type {t} hook {} priority {} }}", h.num, h.priority)?;
                }
                Ok(())
            }
            Message::DelChain(c) => write!(f, "delete chain {fam} {} {}", c.table, c.name),
            Message::DelRule(r) => match (r.chain.as_str(), r.handle) {
                ("", _) => write!(f, "flush table {fam} {}", r.table),
                (c, None) => write!(f, "flush chain {fam} {} {c}", r.table),
                (c, Some(h)) => write!(f, "delete rule {fam} {} {c} handle {h}", r.table),
            },
            Message::NewRule(r) => {
                let verb = if r.append { "add" } else { "insert" };
                write!(f, "{verb} rule {fam} {} {}", r.table, r.chain)?;
                if let Some(p) = r.position {
                    write!(f, " position {p}")?;
                }
                let names: Vec<&str> = r.exprs.iter().map(Expr::name).collect();
                write!(f, " ({})", names.join(", "))
            }
            Message::NewSet(s) => write!(f, "add set {fam} {} {}", s.table, s.name),
            Message::NewSetElems(e) => write!(
                f,
                "add {} element(s) to set {fam} {} {}",
                e.elements.len(),
                e.table,
                e.set
            ),
            Message::Unknown { msg_type, .. } => write!(f, "message type {msg_type:#06x} ({fam})"),
        }
    }
}

impl SetElems {
    fn encode_elem(e: &SetElem) -> Result<Vec<u8>, TooLong> {
        let mut out = Vec::new();
        let mut inner = Ok(());
        attr::nest(&mut out, 1, |o| {
            inner = (|| {
                if let Some(k) = &e.key {
                    attr::nest(o, 1, |d| attr::put(d, 1, k))?;
                }
                if e.flags != 0 {
                    attr::put_be32(o, 3, e.flags);
                }
                if let Some(k) = &e.key_end {
                    attr::nest(o, 10, |d| attr::put(d, 1, k))?;
                }
                put_raw(o, &e.unknown);
                Ok(())
            })();
        })?;
        inner.map(|()| out)
    }

    /// Frames of at most [`ELEMENTS_PER_MESSAGE_BYTES`] of elements each (one empty frame for
    /// an empty list).
    fn encode(&self, out: &mut Vec<u8>, msg_type: u16, flags: u16, seq: u32) -> Result<u32, TooLong> {
        let encoded = self
            .elements
            .iter()
            .map(SetElems::encode_elem)
            .collect::<Result<Vec<_>, _>>()?;
        let mut groups: Vec<&[Vec<u8>]> = Vec::new();
        let mut start = 0;
        let mut size = 0;
        for (i, e) in encoded.iter().enumerate() {
            if size + e.len() > ELEMENTS_PER_MESSAGE_BYTES && i > start {
                groups.push(&encoded[start..i]);
                start = i;
                size = 0;
            }
            size += e.len();
        }
        groups.push(&encoded[start..]);
        let mut n = 0;
        for group in groups {
            let mut result = Ok(());
            frame(out, msg_type, flags, seq.wrapping_add(n), self.family, 0, |o| {
                attr::put_str(o, 1, &self.table);
                attr::put_str(o, 2, &self.set);
                result = attr::nest(o, 3, |l| group.iter().for_each(|e| l.extend_from_slice(e)));
                if let Some(id) = self.set_id {
                    attr::put_be32(o, 4, id);
                }
                put_raw(o, &self.unknown);
            });
            result?;
            n += 1;
        }
        Ok(n)
    }
}

/// Fields by attribute type for an object; the rest (but `pad`) goes to `unknown`.
struct Sorted<'a> {
    by_type: Vec<Option<Attr<'a>>>,
    unknown: Vec<RawAttr>,
}

fn sort<'a>(attrs: &[Attr<'a>], known: &[u16], pad: Option<u16>) -> Sorted<'a> {
    let mut s = Sorted {
        by_type: vec![None; 32],
        unknown: Vec::new(),
    };
    for a in attrs {
        let t = a.ty();
        if Some(t) == pad {
            continue;
        }
        let slot = &mut s.by_type[usize::from(t).min(31)];
        if known.contains(&t) && slot.is_none() {
            *slot = Some(*a);
        } else {
            s.unknown.push(a.raw());
        }
    }
    s
}

impl<'a> Sorted<'a> {
    /// Takes a field through `f`; a value `f` cannot read moves to `unknown`.
    fn take<T>(&mut self, t: u16, f: impl FnOnce(&Attr<'a>) -> Option<T>) -> Option<T> {
        let a = self.by_type[usize::from(t)].take()?;
        let v = f(&a);
        if v.is_none() {
            self.unknown.push(a.raw());
        }
        v
    }

    fn string(&mut self, t: u16) -> String {
        self.take(t, Attr::string).unwrap_or_default()
    }

    fn be32(&mut self, t: u16) -> Option<u32> {
        self.take(t, Attr::be32)
    }

    fn be64(&mut self, t: u16) -> Option<u64> {
        self.take(t, Attr::be64)
    }

    fn bytes(&mut self, t: u16) -> Option<Vec<u8>> {
        self.take(t, |a| Some(a.value.to_vec()))
    }
}

fn decode_table(family: u8, attrs: &[Attr<'_>]) -> Table {
    let mut s = sort(attrs, &[1, 2, 3, 4, 6], Some(5));
    Table {
        family,
        name: s.string(1),
        flags: s.be32(2).unwrap_or(0),
        use_count: s.be32(3),
        handle: s.be64(4),
        userdata: s.bytes(6),
        unknown: s.unknown,
    }
}

fn decode_chain(family: u8, attrs: &[Attr<'_>]) -> Result<Chain, DecodeError> {
    let mut s = sort(attrs, &[1, 2, 3, 4, 5, 6, 7, 10, 11, 12], Some(9));
    let hook = s.take(4, |a| {
        let inner = a.nested().ok()?;
        let f = super::expr::fields(&inner, 2, None)?;
        Some(Hook {
            num: f[1]?.be32()?,
            priority: f[2]?.be32()? as i32,
        })
    });
    Ok(Chain {
        family,
        table: s.string(1),
        handle: s.be64(2),
        name: s.string(3),
        hook,
        policy: s.be32(5),
        use_count: s.be32(6),
        chain_type: s.take(7, Attr::string),
        flags: s.be32(10),
        id: s.be32(11),
        userdata: s.bytes(12),
        unknown: s.unknown,
    })
}

fn decode_rule(family: u8, flags: u16, attrs: &[Attr<'_>]) -> Result<Rule, DecodeError> {
    let mut s = sort(attrs, &[1, 2, 3, 4, 6, 7, 9, 10], Some(8));
    let exprs = match s.by_type[4].take() {
        Some(a) => Expr::decode_list(a.value)?,
        None => Vec::new(),
    };
    Ok(Rule {
        family,
        table: s.string(1),
        chain: s.string(2),
        handle: s.be64(3),
        append: flags & NLM_F_APPEND != 0,
        position: s.be64(6),
        userdata: s.bytes(7),
        id: s.be32(9),
        position_id: s.be32(10),
        exprs,
        unknown: s.unknown,
    })
}

fn decode_set(family: u8, attrs: &[Attr<'_>]) -> Result<Set, DecodeError> {
    let mut s = sort(attrs, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 16, 19, 20], Some(14));
    // An empty description (the kernel reports one for a set created without a size)
    // carries nothing: it reads as no size.
    let size = s
        .take(9, |a| {
            let inner = a.nested().ok()?;
            match inner.as_slice() {
                [] => Some(None),
                _ => super::expr::fields(&inner, 1, None)?[1]?.be32().map(Some),
            }
        })
        .flatten();
    Ok(Set {
        family,
        table: s.string(1),
        name: s.string(2),
        flags: s.be32(3).unwrap_or(0),
        key_type: s.be32(4).unwrap_or(0),
        key_len: s.be32(5).unwrap_or(0),
        data_type: s.be32(6),
        data_len: s.be32(7),
        policy: s.be32(8),
        size,
        id: s.be32(10),
        userdata: s.bytes(13),
        handle: s.be64(16),
        backend: s.take(19, Attr::string),
        count: s.be32(20),
        unknown: s.unknown,
    })
}

fn value_in(a: &Attr<'_>) -> Option<Vec<u8>> {
    match super::expr::data_of(a)? {
        super::expr::Data::Value(v) => Some(v),
        super::expr::Data::Verdict(_) => None,
    }
}

fn decode_elems(family: u8, attrs: &[Attr<'_>]) -> Result<SetElems, DecodeError> {
    let mut s = sort(attrs, &[1, 2, 3, 4], None);
    let mut elements = Vec::new();
    if let Some(list) = s.by_type[3].take() {
        for item in list.nested()? {
            if item.ty() != 1 {
                elements.push(SetElem {
                    unknown: vec![item.raw()],
                    ..SetElem::default()
                });
                continue;
            }
            let inner = item.nested()?;
            let mut e = sort(&inner, &[1, 3, 10], Some(8));
            elements.push(SetElem {
                key: e.take(1, value_in),
                flags: e.be32(3).unwrap_or(0),
                key_end: e.take(10, value_in),
                unknown: e.unknown,
            });
        }
    }
    Ok(SetElems {
        family,
        table: s.string(1),
        set: s.string(2),
        set_id: s.be32(4),
        elements,
        unknown: s.unknown,
    })
}

/// One transaction on the wire, and which message each sequence number carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bytes: Vec<u8>,
    /// The sequence number of `NFNL_MSG_BATCH_BEGIN` (a commit-time failure is reported on it).
    pub begin_seq: u32,
    /// `(first seq, count, message index)` of every message, in order.
    pub seqs: Vec<(u32, u32, usize)>,
}

impl Batch {
    /// Encodes `messages` as one batch starting at sequence number `first_seq`, each message
    /// with `NLM_F_ACK`. `genid`, when given, makes the kernel refuse the batch if the ruleset
    /// changed since that generation (`NFNL_BATCH_GENID`).
    pub fn encode(messages: &[Message], first_seq: u32, genid: Option<u32>) -> Result<Batch, TooLong> {
        let mut bytes = Vec::with_capacity(64 + messages.len() * 256);
        let res = NFNL_SUBSYS_NFTABLES;
        frame(
            &mut bytes,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first_seq,
            0,
            res,
            |o| {
                if let Some(g) = genid {
                    attr::put_be32(o, NFNL_BATCH_GENID, g);
                }
            },
        );
        let mut seq = first_seq.wrapping_add(1);
        let mut seqs = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let n = m.encode(&mut bytes, seq, NLM_F_ACK)?;
            seqs.push((seq, n, i));
            seq = seq.wrapping_add(n);
        }
        frame(&mut bytes, NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, 0, res, |_| {});
        Ok(Batch {
            bytes,
            begin_seq: first_seq,
            seqs,
        })
    }

    /// The index of the message that sequence number `seq` carries.
    pub fn message_of(&self, seq: u32) -> Option<usize> {
        self.seqs
            .iter()
            .find(|(first, n, _)| seq.wrapping_sub(*first) < *n)
            .map(|(_, _, i)| *i)
    }

    /// How many frames between begin and end (the acknowledgements to expect).
    pub fn frames(&self) -> u32 {
        self.seqs.iter().map(|(_, n, _)| n).sum()
    }

    /// Decodes a batch back into its messages (split element lists stay split). The begin and
    /// end markers must be there.
    pub fn decode(bytes: &[u8]) -> Result<Vec<Message>, DecodeError> {
        let all = frames(bytes)?;
        match (all.first(), all.last()) {
            (Some(b), Some(e))
                if all.len() >= 2 && b.msg_type == NFNL_MSG_BATCH_BEGIN && e.msg_type == NFNL_MSG_BATCH_END =>
            {
                all[1..all.len() - 1].iter().map(Message::decode).collect()
            }
            _ => Err(DecodeError("not a batch: begin or end marker missing".into())),
        }
    }
}

/// What to dump (`NFT_MSG_GET*` with `NLM_F_DUMP`); family 0 (`NFPROTO_UNSPEC`) is every
/// family. The kernel answers with `NFT_MSG_NEW*` messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dump {
    Tables {
        family: u8,
    },
    Chains {
        family: u8,
    },
    Rules {
        family: u8,
        table: Option<String>,
        chain: Option<String>,
    },
    Sets {
        family: u8,
        table: Option<String>,
    },
    SetElems {
        family: u8,
        table: String,
        set: String,
    },
}

impl Dump {
    pub fn encode(&self, out: &mut Vec<u8>, seq: u32) {
        let flags = NLM_F_REQUEST | NLM_F_DUMP;
        match self {
            Dump::Tables { family } => frame(out, nft_type(kind::GETTABLE), flags, seq, *family, 0, |_| {}),
            Dump::Chains { family } => frame(out, nft_type(kind::GETCHAIN), flags, seq, *family, 0, |_| {}),
            Dump::Rules { family, table, chain } => frame(out, nft_type(kind::GETRULE), flags, seq, *family, 0, |o| {
                if let Some(t) = table {
                    attr::put_str(o, 1, t);
                }
                if let Some(c) = chain {
                    attr::put_str(o, 2, c);
                }
            }),
            Dump::Sets { family, table } => frame(out, nft_type(kind::GETSET), flags, seq, *family, 0, |o| {
                if let Some(t) = table {
                    attr::put_str(o, 1, t);
                }
            }),
            Dump::SetElems { family, table, set } => {
                frame(out, nft_type(kind::GETSETELEM), flags, seq, *family, 0, |o| {
                    attr::put_str(o, 1, table);
                    attr::put_str(o, 2, set);
                })
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::expr::tests::expr;
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_%-]{0,24}"
    }

    fn opt_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24))
    }

    /// Attributes no decoder knows (types 25..31 are unassigned in every object here).
    fn unknown() -> impl Strategy<Value = Vec<RawAttr>> {
        proptest::collection::vec(
            (25u16..31, proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(kind, value)| RawAttr { kind, value }),
            0..2,
        )
    }

    fn family() -> impl Strategy<Value = u8> {
        prop_oneof![Just(NFPROTO_INET), Just(NFPROTO_IPV4), Just(NFPROTO_IPV6)]
    }

    fn table() -> impl Strategy<Value = Table> {
        (
            family(),
            name(),
            any::<u32>(),
            proptest::option::of(any::<u64>()),
            opt_bytes(),
            unknown(),
        )
            .prop_map(|(family, name, flags, handle, userdata, unknown)| Table {
                family,
                name,
                flags,
                handle,
                use_count: None,
                userdata,
                unknown,
            })
    }

    fn chain() -> impl Strategy<Value = Chain> {
        (
            (family(), name(), name(), proptest::option::of(any::<u64>())),
            proptest::option::of((0u32..5, any::<i32>()).prop_map(|(num, priority)| Hook { num, priority })),
            proptest::option::of(0u32..2),
            proptest::option::of("(filter|nat|route)".prop_map(String::from)),
            (proptest::option::of(any::<u32>()), proptest::option::of(any::<u32>())),
            (opt_bytes(), unknown()),
        )
            .prop_map(
                |((family, table, name, handle), hook, policy, chain_type, (flags, id), (userdata, unknown))| Chain {
                    family,
                    table,
                    name,
                    handle,
                    hook,
                    policy,
                    chain_type,
                    flags,
                    id,
                    use_count: None,
                    userdata,
                    unknown,
                },
            )
    }

    fn rule() -> impl Strategy<Value = Rule> {
        (
            (
                family(),
                name(),
                name(),
                proptest::option::of(any::<u64>()),
                any::<bool>(),
            ),
            (
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<u32>()),
                proptest::option::of(any::<u32>()),
            ),
            proptest::collection::vec(expr(), 0..8),
            (opt_bytes(), unknown()),
        )
            .prop_map(
                |((family, table, chain, handle, append), (position, id, position_id), exprs, (userdata, unknown))| {
                    Rule {
                        family,
                        table,
                        chain,
                        handle,
                        append,
                        position,
                        id,
                        position_id,
                        exprs,
                        userdata,
                        unknown,
                    }
                },
            )
    }

    fn set() -> impl Strategy<Value = Set> {
        (
            (family(), name(), name(), proptest::option::of(any::<u64>())),
            (any::<u32>(), any::<u32>(), 0u32..64),
            (
                proptest::option::of(any::<u32>()),
                proptest::option::of(any::<u32>()),
                proptest::option::of(any::<u32>()),
            ),
            (proptest::option::of(any::<u32>()), proptest::option::of(any::<u32>())),
            (opt_bytes(), unknown()),
        )
            .prop_map(
                |(
                    (family, table, name, handle),
                    (flags, key_type, key_len),
                    (data_type, data_len, policy),
                    (size, id),
                    (userdata, unknown),
                )| Set {
                    family,
                    table,
                    name,
                    handle,
                    flags,
                    key_type,
                    key_len,
                    data_type,
                    data_len,
                    policy,
                    size,
                    id,
                    userdata,
                    backend: None,
                    count: None,
                    unknown,
                },
            )
    }

    fn elems(max: usize) -> impl Strategy<Value = SetElems> {
        let elem =
            (opt_bytes(), opt_bytes(), any::<u32>(), unknown()).prop_map(|(key, key_end, flags, unknown)| SetElem {
                key,
                key_end,
                flags,
                unknown,
            });
        (
            (family(), name(), name(), proptest::option::of(any::<u32>())),
            proptest::collection::vec(elem, 0..max),
            unknown(),
        )
            .prop_map(|((family, table, set, set_id), elements, unknown)| SetElems {
                family,
                table,
                set,
                set_id,
                elements,
                unknown,
            })
    }

    pub fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            table().prop_map(Message::NewTable),
            table().prop_map(Message::DelTable),
            chain().prop_map(Message::NewChain),
            chain().prop_map(Message::DelChain),
            rule().prop_map(Message::NewRule),
            rule().prop_map(|r| Message::DelRule(Rule {
                family: r.family,
                table: r.table,
                chain: r.chain,
                handle: r.handle,
                unknown: r.unknown,
                ..Rule::default()
            })),
            set().prop_map(Message::NewSet),
            elems(20).prop_map(Message::NewSetElems),
            (20u8..26, family(), unknown()).prop_map(|(k, family, attrs)| Message::Unknown {
                msg_type: nft_type(k),
                flags: NLM_F_REQUEST | NLM_F_ACK,
                family,
                attrs
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(m in message()) {
            let mut out = Vec::new();
            let n = m.encode(&mut out, 7, 0).unwrap();
            prop_assert_eq!(n, 1);
            let f = frames(&out).unwrap();
            prop_assert_eq!(f.len(), 1);
            prop_assert_eq!(f[0].seq, 7);
            prop_assert_eq!(Message::decode(&f[0]).unwrap(), m);
        }

        #[test]
        fn batches_round_trip_with_one_seq_per_message(ms in proptest::collection::vec(message(), 0..10), first in any::<u32>()) {
            let b = Batch::encode(&ms, first, None).unwrap();
            let all = frames(&b.bytes).unwrap();
            prop_assert_eq!(all.len(), ms.len() + 2);
            for (i, f) in all[1..all.len() - 1].iter().enumerate() {
                prop_assert_eq!(b.message_of(f.seq), Some(i));
                prop_assert!(f.flags & NLM_F_ACK != 0);
            }
            prop_assert_eq!(b.message_of(first), None);
            prop_assert_eq!(Batch::decode(&b.bytes).unwrap(), ms);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(fs) = frames(&b) {
                for f in &fs {
                    let _ = Message::decode(f);
                }
            }
            let _ = Batch::decode(&b);
        }

        #[test]
        fn framed_garbage_never_panics_the_decoder(
            kind in 0u8..16,
            family in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut out = Vec::new();
            frame(&mut out, nft_type(kind), NLM_F_MULTI, 1, family, 0, |o| o.extend_from_slice(&body));
            for f in frames(&out).unwrap() {
                let _ = Message::decode(&f);
            }
        }
    }

    #[test]
    fn long_element_lists_split_and_map_back_to_their_message() {
        let elements: Vec<SetElem> = (0u32..20_000)
            .map(|i| SetElem {
                key: Some(i.to_be_bytes().to_vec()),
                flags: i % 2,
                ..SetElem::default()
            })
            .collect();
        let m = Message::NewSetElems(SetElems {
            family: NFPROTO_INET,
            table: "t".into(),
            set: "s".into(),
            elements: elements.clone(),
            ..SetElems::default()
        });
        let t = Message::NewTable(Table {
            family: NFPROTO_INET,
            name: "t".into(),
            ..Table::default()
        });
        let b = Batch::encode(&[t, m.clone(), m], 100, Some(5)).unwrap();
        let decoded = Batch::decode(&b.bytes).unwrap();
        assert!(decoded.len() > 5, "{} messages", decoded.len());
        let back: Vec<SetElem> = decoded[1..]
            .iter()
            .flat_map(|m| match m {
                Message::NewSetElems(e) => e.elements.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(back.len(), 40_000);
        assert_eq!(back[..20_000], elements[..]);
        let last = frames(&b.bytes).unwrap()[decoded.len()].seq;
        assert_eq!(b.message_of(last), Some(2));
        assert_eq!(b.message_of(101), Some(0));
        assert_eq!(b.message_of(102), Some(1));
        assert_eq!(b.frames() as usize, decoded.len());
    }

    #[test]
    fn unknown_attributes_and_kinds_are_kept() {
        let mut out = Vec::new();
        frame(
            &mut out,
            nft_type(kind::NEWTABLE),
            NLM_F_MULTI,
            1,
            NFPROTO_INET,
            0,
            |o| {
                attr::put_str(o, 1, "t");
                attr::put_be32(o, 7, 42); // NFTA_TABLE_OWNER: not typed here
                attr::put(o, 5, &[0; 4]); // padding: dropped on purpose
            },
        );
        let f = frames(&out).unwrap();
        let Message::NewTable(t) = Message::decode(&f[0]).unwrap() else {
            panic!()
        };
        assert_eq!(t.name, "t");
        assert_eq!(t.unknown, vec![RawAttr::new(7, &42u32.to_be_bytes())]);
        let mut out = Vec::new();
        frame(&mut out, nft_type(kind::GETGEN_FOR_TEST), 0, 1, 0, 0, |_| {});
        let f = frames(&out).unwrap();
        assert!(matches!(Message::decode(&f[0]).unwrap(), Message::Unknown { .. }));
    }

    #[test]
    fn an_ack_offset_names_the_rule_expression() {
        use super::super::expr::{Data, Register, Verdict};
        let m = Message::NewRule(Rule {
            family: NFPROTO_INET,
            table: "t".into(),
            chain: "c".into(),
            append: true,
            exprs: vec![
                Expr::Counter { packets: 0, bytes: 0 },
                Expr::Immediate {
                    dreg: Register::VERDICT,
                    data: Data::Verdict(Verdict::Jump("nowhere".into())),
                },
            ],
            ..Rule::default()
        });
        let mut out = Vec::new();
        m.encode(&mut out, 1, 0).unwrap();
        // nlmsghdr + nfgenmsg, table "t", chain "c": the expression list starts at 36.
        assert_eq!(m.locate(20).as_deref(), Some("attribute type 1"));
        assert_eq!(m.locate(36).as_deref(), Some("attribute type 4"));
        assert_eq!(m.locate(41).as_deref(), Some("expression 1 (counter)"));
        assert_eq!(
            m.locate(out.len() as u32 - 4).as_deref(),
            Some("expression 2 (immediate)")
        );
        assert_eq!(m.locate(out.len() as u32), None);
    }

    mod kind {
        pub const GETGEN_FOR_TEST: u8 = 16;
        pub use super::super::kind::*;
    }
}
