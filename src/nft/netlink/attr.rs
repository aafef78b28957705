//! Netlink attributes (TLVs): a writer that nests, and a reader that never panics.
//!
//! An attribute is a 4-byte header (`u16` length including the header, `u16` type whose top two
//! bits are `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`), the value, and zero padding to 4 bytes.
//! nf_tables carries its numbers big-endian (`be32`/`be64`) and its names NUL-terminated.

use std::fmt;

/// `NLA_F_NESTED`: the value is itself a list of attributes.
pub const NLA_F_NESTED: u16 = 1 << 15;
/// `NLA_F_NET_BYTEORDER`: the value is in network byte order.
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
/// The type bits of an attribute's type field.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// Malformed bytes: a length that does not fit, a header cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed netlink data: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// An attribute kept as it came: its full type field (flags included) and its value. Decoders
/// put whatever they do not understand here, so nothing is dropped on the way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttr {
    pub kind: u16,
    pub value: Vec<u8>,
}

impl RawAttr {
    pub fn new(kind: u16, value: &[u8]) -> RawAttr {
        RawAttr {
            kind,
            value: value.to_vec(),
        }
    }
}

/// Rounds `n` up to the 4-byte netlink alignment.
pub fn align(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Appends one attribute.
pub fn put(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    debug_assert!(len <= usize::from(u16::MAX), "attribute too long");
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align(out.len()), 0);
}

/// Appends a NUL-terminated string attribute.
pub fn put_str(out: &mut Vec<u8>, kind: u16, value: &str) {
    let mut v = Vec::with_capacity(value.len() + 1);
    v.extend_from_slice(value.as_bytes());
    v.push(0);
    put(out, kind, &v);
}

/// Appends a big-endian `u32` attribute.
pub fn put_be32(out: &mut Vec<u8>, kind: u16, value: u32) {
    put(out, kind, &value.to_be_bytes());
}

/// Appends a big-endian `u64` attribute.
pub fn put_be64(out: &mut Vec<u8>, kind: u16, value: u64) {
    put(out, kind, &value.to_be_bytes());
}

/// Appends a nested attribute whose content `f` writes. Fails when the content does not fit
/// the 16-bit length (the caller splits its lists before that).
pub fn nest(out: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) -> Result<(), TooLong> {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    f(out);
    let len = out.len() - start;
    let Ok(len) = u16::try_from(len) else {
        out.truncate(start);
        return Err(TooLong(len));
    };
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    Ok(())
}

/// A nested attribute longer than netlink's 16-bit attribute length allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong(pub usize);

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a nested netlink attribute of {} bytes exceeds 65535", self.0)
    }
}

impl std::error::Error for TooLong {}

/// The attributes of `buf` as `(type without flags, flags, value)`. Up to three trailing bytes
/// (padding) are allowed; any other misfit is an error.
pub fn parse(buf: &[u8]) -> Result<Vec<Attr<'_>>, DecodeError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]);
        if len < 4 || len > rest.len() {
            return Err(DecodeError(format!(
                "attribute type {} claims {len} bytes, {} are left",
                kind & NLA_TYPE_MASK,
                rest.len()
            )));
        }
        out.push(Attr {
            kind,
            value: &rest[4..len],
        });
        rest = rest.get(align(len)..).unwrap_or(&[]);
    }
    Ok(out)
}

/// One attribute borrowed from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// The full type field, flags included.
    pub kind: u16,
    pub value: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The type without the nested/byte-order flags.
    pub fn ty(&self) -> u16 {
        self.kind & NLA_TYPE_MASK
    }

    pub fn raw(&self) -> RawAttr {
        RawAttr::new(self.kind, self.value)
    }

    /// The value as a big-endian `u32` (exactly 4 bytes).
    pub fn be32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.value.try_into().ok()?))
    }

    /// The value as a big-endian `u64` (exactly 8 bytes).
    pub fn be64(&self) -> Option<u64> {
        Some(u64::from_be_bytes(self.value.try_into().ok()?))
    }

    /// The value as a NUL-terminated UTF-8 string without inner NULs.
    pub fn string(&self) -> Option<String> {
        let (last, body) = self.value.split_last()?;
        if *last != 0 || body.contains(&0) {
            return None;
        }
        String::from_utf8(body.to_vec()).ok()
    }

    /// The nested attributes (the flag is not required: old kernels and tools omit it).
    pub fn nested(&self) -> Result<Vec<Attr<'a>>, DecodeError> {
        parse(self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_patches_the_length_and_pads() {
        let mut out = Vec::new();
        nest(&mut out, 4, |o| {
            put_str(o, 1, "ab");
            put_be32(o, 2, 7);
        })
        .unwrap();
        let top = parse(&out).unwrap();
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].ty(), 4);
        assert_eq!(top[0].kind, 4 | NLA_F_NESTED);
        let inner = top[0].nested().unwrap();
        assert_eq!(inner[0].string().as_deref(), Some("ab"));
        assert_eq!(inner[1].be32(), Some(7));
    }

    #[test]
    fn overlong_nests_are_refused_and_leave_nothing_behind() {
        let mut out = vec![1, 2, 3, 4];
        let e = nest(&mut out, 1, |o| put(o, 1, &[0; 65000]))
            .and_then(|()| nest(&mut out, 1, |o| (0..2).for_each(|_| put(o, 1, &[0; 40000]))));
        assert!(matches!(e, Err(TooLong(_))));
        assert_eq!(out.len(), 4 + 65008);
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(parse(&[3, 0, 1, 0]).is_err());
        assert!(parse(&[9, 0, 1, 0, 0]).is_err());
        assert_eq!(parse(&[0, 0, 0]).unwrap(), vec![]);
        let a = Attr {
            kind: 1,
            value: b"a\0b\0",
        };
        assert_eq!(a.string(), None);
    }
}
