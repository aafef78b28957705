//! The kernel's rule expressions — nf_tables' register machine — as a typed enum, with their
//! netlink encoding and decoding side by side.
//!
//! A rule is a list of expressions that load packet or connection data into registers
//! (`meta`, `payload`, `ct`, `immediate`), transform it (`bitwise`), test it (`cmp`, `range`,
//! `lookup`) or act (`counter`, `redir`, `tproxy`, `meta`/`ct` set, and verdicts loaded into the
//! verdict register). Only the expressions meshcap's transactions use are typed; anything else
//! the kernel reports decodes to [`Expr::Unknown`] with its raw attributes, never dropped, so a
//! caller can name it as drift. Attribute numbers are the kernel's uapi
//! (`include/uapi/linux/netfilter/nf_tables.h`).
//!
//! The kernel stores some expressions in a normal form and dumps that form back, so
//! `decode(dump(encode(e))) == e` holds for normal-form input only (checked against the
//! kernel in `tests/it/nft_netlink.rs`):
//! - registers are kept in 32-bit units: `NFT_REG32_00 + 4k` is dumped as `NFT_REG_(k+1)`;
//! - `redir` with only a minimum port register is dumped with the maximum register equal to it
//!   and the "port given" NAT flag (`NF_NAT_RANGE_PROTO_SPECIFIED`, 2) set;
//! - `lookup` always dumps its flags (decoded to `invert: false` when zero) and never the
//!   transaction `set_id`: an anonymous set is named by the kernel (`__set0`, …);
//! - `counter` always dumps packets and bytes (zero for a new rule).
//!
//! Byte order inside values is the packet's for payload data (addresses, ports: big-endian)
//! and the host's for meta/ct data (marks, uids, `ct state` bits, the 2-byte `ct zone`).

use super::attr::{self, Attr, DecodeError, RawAttr};

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_CONTINUE: i32 = -1;
const NFT_BREAK: i32 = -2;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

const NFT_LOOKUP_F_INV: u32 = 1;

/// An nf_tables register. The kernel's numbering: `0` is the verdict register, `1..=4` the
/// legacy 16-byte registers, `8..=23` the 4-byte registers `NFT_REG32_00..NFT_REG32_15`
/// (the 16-byte register `k` overlaps the 4-byte registers `4(k-1) .. 4(k-1)+3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Register(pub u32);

impl Register {
    pub const VERDICT: Register = Register(0);
    pub const R1: Register = Register(1);
    pub const R2: Register = Register(2);
    pub const R3: Register = Register(3);
    pub const R4: Register = Register(4);

    /// `NFT_REG32_00 + n` (`n` in `0..16`).
    pub const fn reg32(n: u32) -> Register {
        Register(8 + n)
    }
}

macro_rules! codes {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $val:literal),* $(,)? }) => {
        $(#[$m])*
        ///
        /// `Other` holds a code this enum has no name for (never one of the named codes).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $var,)*
            Other(u32),
        }

        impl $name {
            pub fn code(self) -> u32 {
                match self {
                    $(Self::$var => $val,)*
                    Self::Other(v) => v,
                }
            }

            pub fn from_code(v: u32) -> Self {
                match v {
                    $($val => Self::$var,)*
                    v => Self::Other(v),
                }
            }
        }
    };
}

codes! {
    /// `enum nft_meta_keys`: what a `meta` expression loads or sets.
    MetaKey {
        Len = 0, Protocol = 1, Priority = 2, Mark = 3, Iif = 4, Oif = 5, IifName = 6,
        OifName = 7, IifType = 8, OifType = 9, SkUid = 10, SkGid = 11, NfTrace = 12,
        RtClassId = 13, SecMark = 14, NfProto = 15, L4Proto = 16, PktType = 19, Cpu = 20,
        IifGroup = 21, OifGroup = 22, Cgroup = 23,
    }
}

codes! {
    /// `enum nft_ct_keys`: what a `ct` expression loads or sets.
    CtKey {
        State = 0, Direction = 1, Status = 2, Mark = 3, SecMark = 4, Expiration = 5,
        Helper = 6, L3Protocol = 7, Protocol = 10, ProtoSrc = 11, ProtoDst = 12, Labels = 13,
        Zone = 17, EventMask = 18,
    }
}

codes! {
    /// `enum nft_payload_bases`: where a payload offset counts from.
    PayloadBase { LinkLayer = 0, Network = 1, Transport = 2, Inner = 3 }
}

/// `enum nft_cmp_ops`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl CmpOp {
    const ALL: [CmpOp; 6] = [CmpOp::Eq, CmpOp::Neq, CmpOp::Lt, CmpOp::Lte, CmpOp::Gt, CmpOp::Gte];

    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(v: u32) -> Option<CmpOp> {
        CmpOp::ALL.get(usize::try_from(v).ok()?).copied()
    }
}

/// `enum nft_range_ops`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RangeOp {
    Eq,
    Neq,
}

/// A verdict, as loaded into the verdict register (or a base chain's policy).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Break,
    Return,
    Jump(String),
    Goto(String),
}

/// The data an `immediate` loads: bytes, or a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Data {
    Value(Vec<u8>),
    Verdict(Verdict),
}

/// One rule expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `meta load KEY => dreg`.
    Meta { key: MetaKey, dreg: Register },
    /// `meta set KEY with sreg`.
    MetaSet { key: MetaKey, sreg: Register },
    /// `payload load LEN bytes @ BASE + OFFSET => dreg`.
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: Register,
    },
    /// `cmp OP sreg DATA`.
    Cmp { sreg: Register, op: CmpOp, data: Vec<u8> },
    /// `dreg = (sreg & mask) ^ xor` over `len` bytes.
    Bitwise {
        sreg: Register,
        dreg: Register,
        len: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `immediate dreg DATA` (a verdict goes to [`Register::VERDICT`]).
    Immediate { dreg: Register, data: Data },
    /// `counter` with its current values.
    Counter { packets: u64, bytes: u64 },
    /// `redir` to the port(s) in the given registers; `flags` are `NF_NAT_RANGE_*`.
    Redir {
        proto_min: Option<Register>,
        proto_max: Option<Register>,
        flags: u32,
    },
    /// `tproxy` for `family` (an `NFPROTO_*`), address and port from registers.
    Tproxy {
        family: u32,
        addr: Option<Register>,
        port: Option<Register>,
    },
    /// `ct load KEY => dreg`, with a direction for directional keys.
    Ct {
        key: CtKey,
        dreg: Register,
        direction: Option<u8>,
    },
    /// `ct set KEY with sreg`.
    CtSet {
        key: CtKey,
        sreg: Register,
        direction: Option<u8>,
    },
    /// `lookup sreg in SET` (by name, or by transaction id for a set created in the same
    /// batch); `invert` is `!=`. A `dreg` makes it a map lookup.
    Lookup {
        set: String,
        set_id: Option<u32>,
        sreg: Register,
        dreg: Option<Register>,
        invert: bool,
    },
    /// `range OP sreg FROM TO`.
    Range {
        sreg: Register,
        op: RangeOp,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// An expression this codec does not type (another name, or attributes it does not
    /// know): kept whole. Encoding writes it back as it came.
    Unknown { name: String, data: Vec<RawAttr> },
}

impl Expr {
    /// The kernel's name of the expression type.
    pub fn name(&self) -> &str {
        match self {
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Immediate { .. } => "immediate",
            Expr::Counter { .. } => "counter",
            Expr::Redir { .. } => "redir",
            Expr::Tproxy { .. } => "tproxy",
            Expr::Ct { .. } | Expr::CtSet { .. } => "ct",
            Expr::Lookup { .. } => "lookup",
            Expr::Range { .. } => "range",
            Expr::Unknown { name, .. } => name,
        }
    }

    /// Appends this expression as one `NFTA_LIST_ELEM` of a rule's expression list.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), attr::TooLong> {
        let mut inner = Err(attr::TooLong(0));
        attr::nest(out, NFTA_LIST_ELEM, |o| {
            attr::put_str(o, NFTA_EXPR_NAME, self.name());
            inner = attr::nest(o, NFTA_EXPR_DATA, |d| self.encode_data(d));
        })?;
        inner
    }

    fn encode_data(&self, d: &mut Vec<u8>) {
        let reg = |d: &mut Vec<u8>, kind: u16, r: Register| attr::put_be32(d, kind, r.0);
        match self {
            Expr::Meta { key, dreg } => {
                reg(d, 1, *dreg);
                attr::put_be32(d, 2, key.code());
            }
            Expr::MetaSet { key, sreg } => {
                attr::put_be32(d, 2, key.code());
                reg(d, 3, *sreg);
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                reg(d, 1, *dreg);
                attr::put_be32(d, 2, base.code());
                attr::put_be32(d, 3, *offset);
                attr::put_be32(d, 4, *len);
            }
            Expr::Cmp { sreg, op, data } => {
                reg(d, 1, *sreg);
                attr::put_be32(d, 2, op.code());
                put_value(d, 3, data);
            }
            Expr::Bitwise {
                sreg,
                dreg,
                len,
                mask,
                xor,
            } => {
                reg(d, 1, *sreg);
                reg(d, 2, *dreg);
                attr::put_be32(d, 3, *len);
                put_value(d, 4, mask);
                put_value(d, 5, xor);
            }
            Expr::Immediate { dreg, data } => {
                reg(d, 1, *dreg);
                put_data(d, 2, data);
            }
            Expr::Counter { packets, bytes } => {
                attr::put_be64(d, 1, *bytes);
                attr::put_be64(d, 2, *packets);
            }
            Expr::Redir {
                proto_min,
                proto_max,
                flags,
            } => {
                if let Some(r) = proto_min {
                    reg(d, 1, *r);
                }
                if let Some(r) = proto_max {
                    reg(d, 2, *r);
                }
                if *flags != 0 {
                    attr::put_be32(d, 3, *flags);
                }
            }
            Expr::Tproxy { family, addr, port } => {
                attr::put_be32(d, 1, *family);
                if let Some(r) = addr {
                    reg(d, 2, *r);
                }
                if let Some(r) = port {
                    reg(d, 3, *r);
                }
            }
            Expr::Ct { key, dreg, direction } => {
                reg(d, 1, *dreg);
                attr::put_be32(d, 2, key.code());
                if let Some(dir) = direction {
                    attr::put(d, 3, &[*dir]);
                }
            }
            Expr::CtSet { key, sreg, direction } => {
                attr::put_be32(d, 2, key.code());
                if let Some(dir) = direction {
                    attr::put(d, 3, &[*dir]);
                }
                reg(d, 4, *sreg);
            }
            Expr::Lookup {
                set,
                set_id,
                sreg,
                dreg,
                invert,
            } => {
                attr::put_str(d, 1, set);
                reg(d, 2, *sreg);
                if let Some(r) = dreg {
                    reg(d, 3, *r);
                }
                if let Some(id) = set_id {
                    attr::put_be32(d, 4, *id);
                }
                if *invert {
                    attr::put_be32(d, 5, NFT_LOOKUP_F_INV);
                }
            }
            Expr::Range { sreg, op, from, to } => {
                reg(d, 1, *sreg);
                attr::put_be32(d, 2, *op as u32);
                put_value(d, 3, from);
                put_value(d, 4, to);
            }
            Expr::Unknown { data, .. } => {
                for a in data {
                    attr::put(d, a.kind, &a.value);
                }
            }
        }
    }

    /// Decodes one `NFTA_LIST_ELEM`'s content. Malformed framing is an error; well-formed
    /// content this codec does not type is [`Expr::Unknown`].
    pub fn decode(elem: &[u8]) -> Result<Expr, DecodeError> {
        let mut name = None;
        let mut data = Vec::new();
        for a in attr::parse(elem)? {
            match a.ty() {
                NFTA_EXPR_NAME if name.is_none() => name = Some(a.string().unwrap_or_default()),
                NFTA_EXPR_DATA => data = a.nested()?,
                _ => {
                    return Ok(Expr::Unknown {
                        name: name.unwrap_or_default(),
                        data: attr::parse(elem)?.iter().map(Attr::raw).collect(),
                    });
                }
            }
        }
        let name = name.unwrap_or_default();
        let typed = match name.as_str() {
            "meta" => decode_meta(&data),
            "payload" => decode_payload(&data),
            "cmp" => decode_cmp(&data),
            "bitwise" => decode_bitwise(&data),
            "immediate" => decode_immediate(&data),
            "counter" => decode_counter(&data),
            "redir" => decode_redir(&data),
            "tproxy" => decode_tproxy(&data),
            "ct" => decode_ct(&data),
            "lookup" => decode_lookup(&data),
            "range" => decode_range(&data),
            _ => None,
        };
        Ok(typed.unwrap_or_else(|| Expr::Unknown {
            name,
            data: data.iter().map(Attr::raw).collect(),
        }))
    }

    /// Encodes a rule's expression list (the content of `NFTA_RULE_EXPRESSIONS`).
    pub fn encode_list(exprs: &[Expr], out: &mut Vec<u8>) -> Result<(), attr::TooLong> {
        exprs.iter().try_for_each(|e| e.encode(out))
    }

    /// Decodes a rule's expression list.
    pub fn decode_list(list: &[u8]) -> Result<Vec<Expr>, DecodeError> {
        attr::parse(list)?
            .into_iter()
            .map(|a| {
                if a.ty() == NFTA_LIST_ELEM {
                    Expr::decode(a.value)
                } else {
                    Ok(Expr::Unknown {
                        name: String::new(),
                        data: vec![a.raw()],
                    })
                }
            })
            .collect()
    }
}

fn put_value(d: &mut Vec<u8>, kind: u16, value: &[u8]) {
    put_data(d, kind, &Data::Value(value.to_vec()));
}

/// Writes `nft_data_attributes` nested under `kind`. The data of one expression is far below
/// the attribute limit, so the nest cannot overflow.
fn put_data(d: &mut Vec<u8>, kind: u16, data: &Data) {
    let r = attr::nest(d, kind, |o| match data {
        Data::Value(v) => attr::put(o, NFTA_DATA_VALUE, v),
        Data::Verdict(v) => {
            let _ = attr::nest(o, NFTA_DATA_VERDICT, |vo| {
                let (code, chain) = match v {
                    Verdict::Accept => (NF_ACCEPT, None),
                    Verdict::Drop => (NF_DROP, None),
                    Verdict::Continue => (NFT_CONTINUE, None),
                    Verdict::Break => (NFT_BREAK, None),
                    Verdict::Return => (NFT_RETURN, None),
                    Verdict::Jump(c) => (NFT_JUMP, Some(c)),
                    Verdict::Goto(c) => (NFT_GOTO, Some(c)),
                };
                attr::put_be32(vo, NFTA_VERDICT_CODE, code as u32);
                if let Some(c) = chain {
                    attr::put_str(vo, NFTA_VERDICT_CHAIN, c);
                }
            });
        }
    });
    debug_assert!(r.is_ok(), "expression data over 64 KiB");
}

/// Reads `nft_data_attributes`: exactly one value or one verdict.
pub(super) fn data_of(a: &Attr<'_>) -> Option<Data> {
    let inner = a.nested().ok()?;
    let [one] = inner.as_slice() else { return None };
    match one.ty() {
        NFTA_DATA_VALUE => Some(Data::Value(one.value.to_vec())),
        NFTA_DATA_VERDICT => verdict_of(one).map(Data::Verdict),
        _ => None,
    }
}

fn verdict_of(a: &Attr<'_>) -> Option<Verdict> {
    let f = fields(&a.nested().ok()?, 2, None)?;
    let code = f[NFTA_VERDICT_CODE as usize]?.be32()? as i32;
    let chain = f[NFTA_VERDICT_CHAIN as usize].map(|c| c.string());
    Some(match (code, chain) {
        (NF_ACCEPT, None) => Verdict::Accept,
        (NF_DROP, None) => Verdict::Drop,
        (NFT_CONTINUE, None) => Verdict::Continue,
        (NFT_BREAK, None) => Verdict::Break,
        (NFT_RETURN, None) => Verdict::Return,
        (NFT_JUMP, Some(Some(c))) => Verdict::Jump(c),
        (NFT_GOTO, Some(Some(c))) => Verdict::Goto(c),
        _ => return None,
    })
}

fn value_of(a: Option<Attr<'_>>) -> Option<Vec<u8>> {
    match data_of(&a?)? {
        Data::Value(v) => Some(v),
        Data::Verdict(_) => None,
    }
}

/// The attributes of an expression by type (`1..=max`), or `None` when one is outside that
/// range, repeated, or type 0. `pad` names a padding type to skip.
pub(super) fn fields<'a>(data: &[Attr<'a>], max: u16, pad: Option<u16>) -> Option<[Option<Attr<'a>>; 16]> {
    let mut out = [None; 16];
    for a in data {
        let t = a.ty();
        if Some(t) == pad {
            continue;
        }
        if t == 0 || t > max || usize::from(t) >= out.len() || out[usize::from(t)].is_some() {
            return None;
        }
        out[usize::from(t)] = Some(*a);
    }
    Some(out)
}

fn reg_of(a: Option<Attr<'_>>) -> Option<Register> {
    a?.be32().map(Register)
}

/// `Some(None)` when absent, `Some(Some(r))` when valid, `None` when malformed.
fn opt_reg(a: Option<Attr<'_>>) -> Option<Option<Register>> {
    match a {
        None => Some(None),
        Some(a) => a.be32().map(|r| Some(Register(r))),
    }
}

fn decode_meta(data: &[Attr<'_>]) -> Option<Expr> {
    let f = fields(data, 3, None)?;
    let key = MetaKey::from_code(f[2]?.be32()?);
    match (f[1], f[3]) {
        (Some(d), None) => Some(Expr::Meta {
            key,
            dreg: reg_of(Some(d))?,
        }),
        (None, Some(s)) => Some(Expr::MetaSet {
            key,
            sreg: reg_of(Some(s))?,
        }),
        _ => None,
    }
}

fn decode_payload(data: &[Attr<'_>]) -> Option<Expr> {
    let f = fields(data, 4, None)?;
    Some(Expr::Payload {
        dreg: reg_of(f[1])?,
        base: PayloadBase::from_code(f[2]?.be32()?),
        offset: f[3]?.be32()?,
        len: f[4]?.be32()?,
    })
}

fn decode_cmp(data: &[Attr<'_>]) -> Option<Expr> {
    let f = fields(data, 3, None)?;
    Some(Expr::Cmp {
        sreg: reg_of(f[1])?,
        op: CmpOp::from_code(f[2]?.be32()?)?,
        data: value_of(f[3])?,
    })
}

fn decode_bitwise(data: &[Attr<'_>]) -> Option<Expr> {
    const NFT_BITWISE_MASK_XOR: u32 = 0;
    let f = fields(data, 6, None)?;
    if let Some(op) = f[6]
        && op.be32()? != NFT_BITWISE_MASK_XOR
    {
        return None;
    }
    Some(Expr::Bitwise {
        sreg: reg_of(f[1])?,
        dreg: reg_of(f[2])?,
        len: f[3]?.be32()?,
        mask: value_of(f[4])?,
        xor: value_of(f[5])?,
    })
}

fn decode_immediate(data: &[Attr<'_>]) -> Option<Expr> {
    let f = fields(data, 2, None)?;
    Some(Expr::Immediate {
        dreg: reg_of(f[1])?,
        data: data_of(&f[2]?)?,
    })
}

fn decode_counter(data: &[Attr<'_>]) -> Option<Expr> {
    const NFTA_COUNTER_PAD: u16 = 3;
    let f = fields(data, 2, Some(NFTA_COUNTER_PAD))?;
    let get = |a: Option<Attr<'_>>| a.map_or(Some(0), |a| a.be64());
    Some(Expr::Counter {
        bytes: get(f[1])?,
        packets: get(f[2])?,
    })
}

fn decode_redir(data: &[Attr<'_>]) -> Option<Expr> {
    let f = fields(data, 3, None)?;
    Some(Expr::Redir {
        proto_min: opt_reg(f[1])?,
        proto_max: opt_reg(f[2])?,
        flags: f[3].map_or(Some(0), |a| a.be32())?,
    })
}

fn decode_tproxy(data: &[Attr<'_>]) -> Option<Expr> {
    let f = fields(data, 3, None)?;
    Some(Expr::Tproxy {
        family: f[1]?.be32()?,
        addr: opt_reg(f[2])?,
        port: opt_reg(f[3])?,
    })
}

fn decode_ct(data: &[Attr<'_>]) -> Option<Expr> {
    let f = fields(data, 4, None)?;
    let key = CtKey::from_code(f[2]?.be32()?);
    let direction = match f[3] {
        None => None,
        Some(a) => match a.value {
            [d] => Some(*d),
            _ => return None,
        },
    };
    match (f[1], f[4]) {
        (Some(d), None) => Some(Expr::Ct {
            key,
            dreg: reg_of(Some(d))?,
            direction,
        }),
        (None, Some(s)) => Some(Expr::CtSet {
            key,
            sreg: reg_of(Some(s))?,
            direction,
        }),
        _ => None,
    }
}

fn decode_lookup(data: &[Attr<'_>]) -> Option<Expr> {
    let f = fields(data, 5, None)?;
    let flags = f[5].map_or(Some(0), |a| a.be32())?;
    if flags & !NFT_LOOKUP_F_INV != 0 {
        return None;
    }
    Some(Expr::Lookup {
        set: f[1]?.string()?,
        sreg: reg_of(f[2])?,
        dreg: opt_reg(f[3])?,
        set_id: match f[4] {
            None => None,
            Some(a) => Some(a.be32()?),
        },
        invert: flags & NFT_LOOKUP_F_INV != 0,
    })
}

fn decode_range(data: &[Attr<'_>]) -> Option<Expr> {
    let f = fields(data, 4, None)?;
    Some(Expr::Range {
        sreg: reg_of(f[1])?,
        op: match f[2]?.be32()? {
            0 => RangeOp::Eq,
            1 => RangeOp::Neq,
            _ => return None,
        },
        from: value_of(f[3])?,
        to: value_of(f[4])?,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn register() -> impl Strategy<Value = Register> {
        prop_oneof![(0u32..5).prop_map(Register), (0u32..16).prop_map(Register::reg32)]
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..=max)
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z_%0-9-]{1,20}"
    }

    fn meta_key() -> impl Strategy<Value = MetaKey> {
        (0u32..40).prop_map(MetaKey::from_code)
    }

    fn ct_key() -> impl Strategy<Value = CtKey> {
        (0u32..30).prop_map(CtKey::from_code)
    }

    pub fn verdict() -> impl Strategy<Value = Verdict> {
        prop_oneof![
            Just(Verdict::Accept),
            Just(Verdict::Drop),
            Just(Verdict::Continue),
            Just(Verdict::Break),
            Just(Verdict::Return),
            name().prop_map(Verdict::Jump),
            name().prop_map(Verdict::Goto),
        ]
    }

    /// Every typed expression kind, and unknown ones.
    pub fn expr() -> impl Strategy<Value = Expr> {
        prop_oneof![
            (meta_key(), register()).prop_map(|(key, dreg)| Expr::Meta { key, dreg }),
            (meta_key(), register()).prop_map(|(key, sreg)| Expr::MetaSet { key, sreg }),
            (
                (0u32..6).prop_map(PayloadBase::from_code),
                any::<u32>(),
                any::<u32>(),
                register()
            )
                .prop_map(|(base, offset, len, dreg)| Expr::Payload {
                    base,
                    offset,
                    len,
                    dreg
                }),
            (register(), (0u32..6), bytes(16)).prop_map(|(sreg, op, data)| Expr::Cmp {
                sreg,
                op: CmpOp::from_code(op).unwrap(),
                data
            }),
            (register(), register(), any::<u32>(), bytes(16), bytes(16)).prop_map(|(sreg, dreg, len, mask, xor)| {
                Expr::Bitwise {
                    sreg,
                    dreg,
                    len,
                    mask,
                    xor,
                }
            }),
            (register(), bytes(16)).prop_map(|(dreg, v)| Expr::Immediate {
                dreg,
                data: Data::Value(v)
            }),
            verdict().prop_map(|v| Expr::Immediate {
                dreg: Register::VERDICT,
                data: Data::Verdict(v)
            }),
            (any::<u64>(), any::<u64>()).prop_map(|(packets, bytes)| Expr::Counter { packets, bytes }),
            (
                proptest::option::of(register()),
                proptest::option::of(register()),
                any::<u32>()
            )
                .prop_map(|(proto_min, proto_max, flags)| Expr::Redir {
                    proto_min,
                    proto_max,
                    flags
                }),
            (
                any::<u32>(),
                proptest::option::of(register()),
                proptest::option::of(register())
            )
                .prop_map(|(family, addr, port)| Expr::Tproxy { family, addr, port }),
            (ct_key(), register(), proptest::option::of(any::<u8>())).prop_map(|(key, dreg, direction)| Expr::Ct {
                key,
                dreg,
                direction
            }),
            (ct_key(), register(), proptest::option::of(any::<u8>())).prop_map(|(key, sreg, direction)| Expr::CtSet {
                key,
                sreg,
                direction
            }),
            (
                name(),
                proptest::option::of(any::<u32>()),
                register(),
                proptest::option::of(register()),
                any::<bool>()
            )
                .prop_map(|(set, set_id, sreg, dreg, invert)| Expr::Lookup {
                    set,
                    set_id,
                    sreg,
                    dreg,
                    invert
                }),
            (register(), any::<bool>(), bytes(16), bytes(16)).prop_map(|(sreg, neq, from, to)| Expr::Range {
                sreg,
                op: if neq { RangeOp::Neq } else { RangeOp::Eq },
                from,
                to
            }),
            (
                "(log|limit|nat|masq|quota)",
                proptest::collection::vec((1u16..8, bytes(12)), 0..4)
            )
                .prop_map(|(name, attrs)| Expr::Unknown {
                    name,
                    data: attrs.into_iter().map(|(k, v)| RawAttr { kind: k, value: v }).collect()
                }),
        ]
    }

    fn round_trip(e: &Expr) -> Expr {
        let mut out = Vec::new();
        e.encode(&mut out).unwrap();
        let list = Expr::decode_list(&out).unwrap();
        assert_eq!(list.len(), 1);
        list.into_iter().next().unwrap()
    }

    proptest! {
        #[test]
        fn every_expression_round_trips(e in expr()) {
            prop_assert_eq!(round_trip(&e), e);
        }

        #[test]
        fn expression_lists_round_trip(list in proptest::collection::vec(expr(), 0..12)) {
            let mut out = Vec::new();
            Expr::encode_list(&list, &mut out).unwrap();
            prop_assert_eq!(Expr::decode_list(&out).unwrap(), list);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Expr::decode_list(&b);
            let _ = Expr::decode(&b);
        }
    }

    #[test]
    fn unknown_attributes_make_an_expression_unknown() {
        // A payload write (it has an SREG): this codec types payload loads only.
        let mut data = Vec::new();
        attr::put_be32(&mut data, 2, 1);
        attr::put_be32(&mut data, 3, 16);
        attr::put_be32(&mut data, 4, 4);
        attr::put_be32(&mut data, 5, 1);
        let mut elem = Vec::new();
        attr::put_str(&mut elem, NFTA_EXPR_NAME, "payload");
        attr::put(&mut elem, NFTA_EXPR_DATA | attr::NLA_F_NESTED, &data);
        match Expr::decode(&elem).unwrap() {
            Expr::Unknown { name, data } => {
                assert_eq!(name, "payload");
                assert_eq!(data.len(), 4);
            }
            other => panic!("typed an unknown payload form: {other:?}"),
        }
        // A known name with a shift (not mask/xor) is unknown too.
        let mut bw = Vec::new();
        Expr::Bitwise {
            sreg: Register::R1,
            dreg: Register::R1,
            len: 4,
            mask: vec![0xff; 4],
            xor: vec![0; 4],
        }
        .encode(&mut bw)
        .unwrap();
        let lists = attr::parse(&bw).unwrap();
        let mut data = Vec::new();
        for a in attr::parse(lists[0].value).unwrap() {
            if a.ty() == NFTA_EXPR_DATA {
                data = a.value.to_vec();
            }
        }
        attr::put_be32(&mut data, 6, 1);
        let mut elem = Vec::new();
        attr::put_str(&mut elem, NFTA_EXPR_NAME, "bitwise");
        attr::put(&mut elem, NFTA_EXPR_DATA | attr::NLA_F_NESTED, &data);
        assert!(matches!(Expr::decode(&elem).unwrap(), Expr::Unknown { .. }));
    }
}
