//! Scalar values of the capture model, each parsed and validated once.
//!
//! Every value that can end up in a rule (ports, CIDRs, owners, interface names, marks) is a
//! newtype here with a strict parser. A value that passed its parser cannot carry whitespace,
//! quotes, option-like text or control characters into a restore payload or an nft transaction,
//! so the renderers never need to escape anything.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::speed::{self, Decimal};

/// Why a piece of text is not a valid value. The caller adds the value and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl Invalid {
    pub(crate) fn new(why: impl Into<String>) -> Self {
        Invalid(why.into())
    }
}

pub(crate) type Parsed<T> = Result<T, Invalid>;

/// An IP family. Rules, loopback addresses and the `::6`/`127.0.0.6` passthrough source are
/// functions of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub(crate) fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The source address of the proxy's inbound passthrough connections (`127.0.0.6` / `::6`).
    pub(crate) fn passthrough_source(self) -> Cidr {
        match self {
            Family::V4 => Cidr::host(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6))),
            Family::V6 => Cidr::host(IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6))),
        }
    }

    /// `::1/128`: the IPv6 loopback is fixed; the IPv4 one is configurable (see `Config`).
    pub(crate) fn v6_loopback() -> Cidr {
        Cidr::host(IpAddr::V6(Ipv6Addr::LOCALHOST))
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Why `*` is refused as one item of a list.
const WILDCARD_ITEM: &str = "'*' (all) is only accepted as the whole value of an include list, not as a list item";

/// A TCP/UDP port, 1–65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(u16);

impl Port {
    pub(crate) const fn new_const(n: u16) -> Port {
        assert!(n != 0);
        Port(n)
    }

    pub(crate) fn get(self) -> u16 {
        self.0
    }

    pub(crate) fn parse(text: &str) -> Parsed<Port> {
        let n = parse_decimal(text, "a port")?;
        if n == 0 || n > 65535 {
            return Err(Invalid::new("a port must be between 1 and 65535"));
        }
        Ok(Port(n as u16))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Decimal::new(u32::from(self.0)).as_str())
    }
}

impl Spell for Port {
    fn spell(&self, out: &mut String) {
        speed::push_decimal(out, u32::from(self.0));
    }
}

/// A port or an inclusive port range `a:b` (as iptables writes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PortSpec {
    Single(Port),
    Range(Port, Port),
}

impl PortSpec {
    pub(crate) fn parse(text: &str) -> Parsed<PortSpec> {
        if text == "*" {
            return Err(Invalid::new(WILDCARD_ITEM));
        }
        match text.split_once(':') {
            None => Ok(PortSpec::Single(Port::parse(text)?)),
            Some((_, hi)) if hi.contains(':') => Err(Invalid::new("a port range has the form a:b")),
            Some((lo, hi)) => {
                let (lo, hi) = (Port::parse(lo)?, Port::parse(hi)?);
                if lo > hi {
                    return Err(Invalid::new("a port range 'a:b' needs a <= b"));
                }
                Ok(PortSpec::Range(lo, hi))
            }
        }
    }

    pub(crate) fn contains(self, port: u16) -> bool {
        match self {
            PortSpec::Single(p) => p.get() == port,
            PortSpec::Range(lo, hi) => lo.get() <= port && port <= hi.get(),
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Single(p) => write!(f, "{p}"),
            PortSpec::Range(lo, hi) => write!(f, "{lo}:{hi}"),
        }
    }
}

impl Spell for PortSpec {
    /// `p` or `a:b` (iptables' spelling, as `Display`).
    fn spell(&self, out: &mut String) {
        match self {
            PortSpec::Single(p) => p.spell(out),
            PortSpec::Range(lo, hi) => {
                lo.spell(out);
                out.push(':');
                hi.spell(out);
            }
        }
    }
}

/// An address prefix. Host bits are kept (`10.1.2.3/8` stays as written, as Istio does); the
/// address is printed in canonical form (`2001:DB8:0::/32` → `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub(crate) fn new(addr: IpAddr, len: u8) -> Parsed<Cidr> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if len > max {
            return Err(Invalid::new("prefix length out of range"));
        }
        Ok(Cidr { addr, len })
    }

    pub(crate) fn host(addr: IpAddr) -> Cidr {
        let len = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        Cidr { addr, len }
    }

    /// Parses `address/bits` strictly: dotted IPv4 with four parts and no leading zeros, or
    /// IPv6 without a zone; bits in decimal without sign or leading zeros.
    pub fn parse(text: &str) -> Parsed<Cidr> {
        if let Some((addr, len)) = speed::parse_v4_prefix(text) {
            let c = Cidr {
                addr: IpAddr::V4(addr),
                len,
            };
            return Ok(c);
        }
        if text == "*" {
            return Err(Invalid::new(WILDCARD_ITEM));
        }
        let (addr, bits) = text
            .split_once('/')
            .ok_or_else(|| Invalid::new("a CIDR needs a '/' and a prefix length"))?;
        let addr = parse_ip(addr)?;
        if bits.is_empty()
            || !bits.bytes().all(|b| b.is_ascii_digit())
            || (bits.len() > 1 && bits.starts_with('0'))
            || bits.len() > 3
        {
            return Err(Invalid::new(format!("bad prefix length after slash: '{bits}'")));
        }
        // Up to three digits can exceed a u8 (`/313`): out of range, not a panic.
        let len: u16 = bits.parse().expect("checked: one to three digits");
        let len = u8::try_from(len).map_err(|_| Invalid::new("prefix length out of range"))?;
        Cidr::new(addr, len)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    pub(crate) fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }

    /// The prefix with host bits cleared, as the kernel stores it (`10.1.2.3/8` → `10.0.0.0/8`).
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = if self.len == 0 { 0 } else { u32::MAX << (32 - self.len) };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len)
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Cidr { addr, len: self.len }
    }

    /// Whether `ip` falls inside the prefix (host bits of the prefix are ignored, as the kernel
    /// masks them).
    pub(crate) fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.len == 0 { 0 } else { u32::MAX << (32 - self.len) };
                (u32::from(net) & mask) == (u32::from(*ip) & mask)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len)
                };
                (u128::from(net) & mask) == (u128::from(*ip) & mask)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => {
                let mut buf = [0u8; 18];
                f.write_str(speed::v4_prefix_text(a, self.len, &mut buf))
            }
            IpAddr::V6(a) => write!(f, "{a}/{}", self.len),
        }
    }
}

impl Spell for Cidr {
    fn spell(&self, out: &mut String) {
        match self.addr {
            IpAddr::V4(a) => {
                let [a, b, c, d] = a.octets();
                out.reserve(18);
                out.push_str(speed::small_decimal(a));
                out.push('.');
                out.push_str(speed::small_decimal(b));
                out.push('.');
                out.push_str(speed::small_decimal(c));
                out.push('.');
                out.push_str(speed::small_decimal(d));
                out.push('/');
                out.push_str(speed::small_decimal(self.len));
            }
            IpAddr::V6(a) => {
                use fmt::Write as _;
                let _ = write!(out, "{a}/{}", self.len);
            }
        }
    }
}

/// Parses an IP address strictly (see [`Cidr::parse`]).
pub(crate) fn parse_ip(text: &str) -> Parsed<IpAddr> {
    if text.contains('%') {
        return Err(Invalid::new(format!(
            "'{text}' has an IPv6 zone, which rules cannot use"
        )));
    }
    text.parse::<IpAddr>()
        .map_err(|_| Invalid::new(format!("'{text}' is not an IP address")))
}

/// A proxy UID or GID as `-m owner` takes it: a number, or a user/group name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    Id(u32),
    Name(String),
}

impl Owner {
    /// The largest id: `(uid_t)-1` (4294967295) means "no id" to the kernel, and iptables'
    /// owner match refuses it.
    pub const MAX_ID: u32 = u32::MAX - 1;

    /// A number (0 to [`Owner::MAX_ID`]), or a name matching `[a-z_][a-z0-9_-]*` of at most
    /// 32 bytes.
    pub(crate) fn parse(text: &str) -> Parsed<Owner> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse::<u32>()
                .ok()
                .filter(|&n| n <= Owner::MAX_ID)
                .map(Owner::Id)
                .ok_or_else(|| Invalid::new(format!("a numeric id must be at most {}", Owner::MAX_ID)));
        }
        let mut bytes = text.bytes();
        let first_ok = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'));
        let rest_ok = bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        if !first_ok || !rest_ok || text.len() > 32 {
            return Err(Invalid::new(
                "expected a numeric id or a name matching [a-z_][a-z0-9_-]* (at most 32 bytes)",
            ));
        }
        Ok(Owner::Name(text.to_string()))
    }
}

impl Spell for Owner {
    fn spell(&self, out: &mut String) {
        match self {
            Owner::Id(n) => speed::push_decimal(out, *n),
            Owner::Name(s) => out.push_str(s),
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Id(n) => write!(f, "{n}"),
            Owner::Name(s) => f.write_str(s),
        }
    }
}

/// A network interface name as the kernel accepts it: 1–15 bytes, no whitespace, `/`, `:`,
/// quotes, control characters; a trailing `+` is iptables' prefix wildcard. `*` is refused: the
/// two backends would read it differently (a literal in iptables, a wildcard in nft).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Iface(String);

impl Iface {
    pub(crate) fn parse(text: &str) -> Parsed<Iface> {
        if text.is_empty() || text.len() > 15 {
            return Err(Invalid::new("an interface name has 1 to 15 bytes"));
        }
        if text == "." || text == ".." {
            return Err(Invalid::new("'.' and '..' are not interface names"));
        }
        let body = text.strip_suffix('+').unwrap_or(text);
        if body.contains('*') {
            // iptables would match a literal '*', nft reads it as a wildcard (and refuses "*").
            return Err(Invalid::new(
                "an interface name cannot contain '*' (use a trailing '+' to match a prefix)",
            ));
        }
        if let Some(bad) = body.chars().find(|&c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(
                    c,
                    '/' | ':' | '"' | '\'' | '`' | '\\' | '+' | '!' | '{' | '}' | ',' | ';' | '#' | '$'
                )
                || !c.is_ascii()
        }) {
            return Err(Invalid::new(format!("an interface name cannot contain {bad:?}")));
        }
        if body.starts_with('-') {
            return Err(Invalid::new("an interface name cannot start with '-'"));
        }
        Ok(Iface(text.to_string()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a concrete interface name matches (honouring the `+` wildcard).
    pub(crate) fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('+') {
            Some(prefix) => name.starts_with(prefix),
            None => self.0 == name,
        }
    }
}

impl fmt::Display for Iface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A packet / connection mark (u32). Printed in decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Mark(pub u32);

impl Mark {
    /// Decimal or `0x` hexadecimal, without a mask (the rules add `/0xffffffff` themselves).
    pub(crate) fn parse(text: &str) -> Parsed<Mark> {
        if text.contains('/') {
            return Err(Invalid::new(
                "expected a mark without a mask (the mask /0xffffffff is added)",
            ));
        }
        parse_u32(text).map(Mark)
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Decimal::new(self.0).as_str())
    }
}

impl Spell for Mark {
    fn spell(&self, out: &mut String) {
        speed::push_decimal(out, self.0);
    }
}

/// A policy-routing table id (u32, not 0, and not one of the kernel's reserved tables
/// `local`/`main`/`default`, which a `local default dev lo` route would break).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RouteTable(pub u32);

impl RouteTable {
    pub(crate) fn parse(text: &str) -> Parsed<RouteTable> {
        let n = parse_u32(text)?;
        if n == 0 || n == 253 || n == 254 || n == 255 {
            return Err(Invalid::new(
                "route table 0 (unspec), 253 (default), 254 (main) and 255 (local) are reserved",
            ));
        }
        Ok(RouteTable(n))
    }
}

impl fmt::Display for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A file meshcap writes (`DRY_RUN_FILE_PATH`): a non-empty path naming a file, not a
/// directory. Whether its directory exists and is writable is the writer's concern (it needs the
/// OS); this is the syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutFile(String);

impl OutFile {
    pub(crate) fn parse(text: &str) -> Parsed<OutFile> {
        if text.is_empty() {
            return Err(Invalid::new("expected a file path"));
        }
        if text.contains('\u{fffd}') {
            // The environment snapshot replaced bytes that are not UTF-8: the name meant is unknown.
            return Err(Invalid::new("not valid UTF-8"));
        }
        let path = std::path::Path::new(text);
        if text.ends_with('/') || path.file_name().is_none() || text.ends_with("/.") || text == "." {
            return Err(Invalid::new("the path names a directory; name a file"));
        }
        Ok(OutFile(text.to_string()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

fn parse_decimal(text: &str, what: &str) -> Parsed<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 10 {
        return Err(Invalid::new(format!("expected {what} in decimal digits")));
    }
    text.parse::<u64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Invalid::new(format!("{what} is out of range")))
}

/// A u32 in decimal or `0x` hexadecimal.
pub(crate) fn parse_u32(text: &str) -> Parsed<u32> {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || hex.len() > 8 {
            return Err(Invalid::new("expected a 32-bit number (decimal or 0x hex)"));
        }
        return Ok(u32::from_str_radix(hex, 16).expect("checked hex digits"));
    }
    parse_decimal(text, "a 32-bit number")
}

/// Splits a comma-separated list: items are trimmed of surrounding whitespace and empty items
/// are skipped. (Istio does not trim; it passes `" 443"` on verbatim. meshcap trims.)
pub(crate) fn split_list(text: &str) -> impl Iterator<Item = &str> {
    // A byte scan for the comma: `str::split` with a char pattern costs several times more per
    // item on lists of thousands of short items.
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().position(|b| b == b',') {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
    .map(trim)
    .filter(|s| !s.is_empty())
}

/// An upper bound of the number of items [`split_list`] yields (to size a vector once).
pub(crate) fn list_len_bound(text: &str) -> usize {
    text.bytes().filter(|&b| b == b',').count() + 1
}

/// `str::trim`, with a fast path for the usual item that neither starts nor ends with a space.
fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(a), Some(z)) if a.is_ascii_graphic() && z.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// A value written onto the end of a string, without the formatting machinery (the renderers
/// write tens of thousands of values; `Display` stays for everything else and agrees).
pub(crate) trait Spell {
    fn spell(&self, out: &mut String);
}

impl Spell for u16 {
    fn spell(&self, out: &mut String) {
        speed::push_decimal(out, u32::from(*self));
    }
}

impl Spell for u32 {
    fn spell(&self, out: &mut String) {
        speed::push_decimal(out, *self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_files_name_a_file() {
        for good in ["stream.txt", "/tmp/x/stream", "./s", "a/../b", " spaced name"] {
            assert_eq!(OutFile::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", ".", "..", "/", "dir/", "dir/.", "dir/..", "a\u{fffd}b"] {
            assert!(OutFile::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            OutFile::parse("d/").unwrap_err().0,
            "the path names a directory; name a file"
        );
    }

    #[test]
    fn ports_and_ranges() {
        assert_eq!(Port::parse("15001").unwrap().get(), 15001);
        for bad in ["0", "65536", "", "-1", "+1", "0x10", " 1", "99999999999"] {
            assert!(Port::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(PortSpec::parse("10:20").unwrap().to_string(), "10:20");
        assert!(PortSpec::parse("20:10").is_err());
        assert!(PortSpec::parse("10:").is_err());
        assert!(PortSpec::parse("*").unwrap_err().0.contains("whole value"));
        assert!(Cidr::parse("*").unwrap_err().0.contains("whole value"));
        assert_eq!(PortSpec::parse("1:2:3").unwrap_err().0, "a port range has the form a:b");
        assert!(PortSpec::parse("10:20").unwrap().contains(15));
    }

    #[test]
    fn cidrs_keep_host_bits_and_canonicalise() {
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap().to_string(), "10.1.2.3/8");
        assert_eq!(Cidr::parse("2001:DB8:0::/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(Cidr::parse("::ffff:10.0.0.0/104").unwrap().family(), Family::V6);
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0.1/08",
            "010.0.0.1/8",
            "1.2.3/8",
            "fe80::1%eth0/64",
            "::/129",
            "1.2.3.4/-1",
            "1.2.3.4/ 8",
            // Found by fuzzing (parse_save): three digits above 255 panicked.
            "127.0.0.1/313",
            "10.0.0.0/256",
            "::/999",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        let c = Cidr::parse("10.1.2.3/8").unwrap();
        assert!(c.contains(&"10.200.0.1".parse().unwrap()));
        assert!(!c.contains(&"11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(&"1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn fast_paths_agree_with_the_general_ones() {
        for text in [
            "0.0.0.0/0",
            "255.255.255.255/32",
            "10.1.2.3/8",
            "1.20.255.9/24",
            "2001:db8::/32",
            "::ffff:1.2.3.4/128",
        ] {
            let c = Cidr::parse(text).unwrap();
            let general = format!("{}/{}", c.addr(), c.prefix_len());
            assert_eq!(c.to_string(), general);
            let mut s = String::new();
            c.spell(&mut s);
            assert_eq!(s, general);
            assert_eq!(general, text);
        }
        for bad in [
            "1.2.3.4/33",
            "1.2.3.256/8",
            "1.2.3.4.5/8",
            "1..3.4/8",
            "01.2.3.4/8",
            "1.2.3.4/",
            "1.2.3.4/+1",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        for n in (0u32..=300).chain([65535, 4_294_967_295]) {
            let mut s = String::new();
            n.spell(&mut s);
            assert_eq!(s, n.to_string());
            assert_eq!(Mark(n).to_string(), n.to_string());
        }
        let mut s = String::new();
        PortSpec::parse("10:20").unwrap().spell(&mut s);
        Owner::parse("java").unwrap().spell(&mut s);
        assert_eq!(s, "10:20java");
        assert_eq!(split_list(" a ,b,\u{a0}c\u{a0},,").collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn owners() {
        assert_eq!(Owner::parse("1337").unwrap(), Owner::Id(1337));
        assert_eq!(Owner::parse("java").unwrap(), Owner::Name("java".into()));
        assert_eq!(Owner::parse("4294967294").unwrap(), Owner::Id(4294967294));
        assert!(Owner::parse("4294967295").is_err(), "(uid_t)-1 is not an id");
        for bad in ["", "Java", "a b", "-x", "1x", "x;y", "99999999999", "a\nb"] {
            assert!(Owner::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interfaces() {
        assert!(Iface::parse("eth0").is_ok());
        assert!(Iface::parse("veth+").is_ok());
        assert!(Iface::parse("not-istio-nic").is_ok());
        for bad in [
            "",
            "eth0 -j ACCEPT",
            "a/b",
            "a:b",
            "a\"b",
            "sixteen-bytes-xx",
            "a\nb",
            "-x",
            "e+th",
            "*",
            "eth*",
            "a*b",
            "eth0\r",
        ] {
            assert!(Iface::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Iface::parse("veth+").unwrap().matches("veth12"));
    }

    #[test]
    fn marks_and_tables() {
        assert_eq!(Mark::parse("0x539").unwrap(), Mark(1337));
        assert_eq!(Mark::parse("1337").unwrap(), Mark(1337));
        assert!(Mark::parse("1337/0xff").unwrap_err().0.contains("without a mask"));
        assert!(Mark::parse("4294967296").is_err());
        assert!(RouteTable::parse("254").is_err());
        assert!(RouteTable::parse("133").is_ok());
    }

    #[test]
    fn lists_trim_and_skip_empty() {
        assert_eq!(split_list("80, 443,,").collect::<Vec<_>>(), ["80", "443"]);
        assert_eq!(split_list("").count(), 0);
    }
}
