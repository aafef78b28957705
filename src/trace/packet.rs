//! The packet a trace follows, and its one-line grammar:
//!
//! `DIR PROTO SRC -> DST [uid=N] [gid=N] [iif=IF] [oif=IF] [mark=N] [connmark=N] [state=S]`
//!
//! - DIR `out`: locally generated (OUTPUT, then POSTROUTING); `in`: arriving (PREROUTING, then
//!   INPUT).
//! - PROTO `tcp` or `udp`; SRC and DST `a.b.c.d:port` or `[v6]:port`, of one family.
//! - `uid`/`gid` (numeric) and `oif` only for `out`, `iif` only for `in`.
//! - `mark` is the packet mark (default 0); `connmark` the connection's mark, needed only for
//!   an established or related connection whose mark a rule reads (a new one's is 0).
//! - `state` is the conntrack state: `new` (default), `established`, `related` or `invalid`.
//!
//! Anything else is an error naming the word.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::error::{Error, Result};
use crate::model::Proto;
use crate::values::{Family, Iface, parse_u32};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Locally generated: OUTPUT, then POSTROUTING.
    Out,
    /// Arriving from an interface: PREROUTING, then INPUT.
    In,
}

/// The packet's conntrack state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    New,
    Established,
    Related,
    Invalid,
}

impl ConnState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConnState::New => "new",
            ConnState::Established => "established",
            ConnState::Related => "related",
            ConnState::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub(crate) dir: Direction,
    pub(crate) proto: Proto,
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) iif: Option<String>,
    pub(crate) oif: Option<String>,
    pub(crate) mark: u32,
    pub(crate) connmark: Option<u32>,
    pub(crate) state: ConnState,
}

impl Packet {
    pub fn family(&self) -> Family {
        Family::of(&self.src.ip())
    }

    /// Parses the packet grammar (words separated by whitespace; the words may come as one
    /// argument or several).
    pub fn parse(text: &str) -> Result<Packet> {
        let bad = |value: &str, why: &str| Error::invalid("PACKET", value, why);
        let words: Vec<&str> = text.split_whitespace().collect();
        let [dir, proto, src, arrow, dst, rest @ ..] = words.as_slice() else {
            return Err(bad(
                text,
                "expected 'DIR PROTO SRC -> DST [key=value...]', e.g. 'out tcp 10.0.0.2:40000 -> 10.0.0.1:80 uid=1000 gid=1000 oif=eth0'",
            ));
        };
        let dir = match *dir {
            "out" => Direction::Out,
            "in" => Direction::In,
            _ => {
                return Err(bad(
                    dir,
                    "the direction is 'out' (locally generated) or 'in' (arriving)",
                ));
            }
        };
        let proto = match *proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(bad(proto, "the protocol is 'tcp' or 'udp'")),
        };
        if *arrow != "->" {
            return Err(bad(arrow, "expected '->' between source and destination"));
        }
        let src = socket_addr(src)?;
        let dst = socket_addr(dst)?;
        if Family::of(&src.ip()) != Family::of(&dst.ip()) {
            return Err(bad(
                &format!("{src} -> {dst}"),
                "source and destination must be of one family",
            ));
        }
        let mut p = Packet {
            dir,
            proto,
            src,
            dst,
            uid: None,
            gid: None,
            iif: None,
            oif: None,
            mark: 0,
            connmark: None,
            state: ConnState::New,
        };
        let mut seen: Vec<&str> = Vec::new();
        for word in rest {
            let Some((key, value)) = word.split_once('=') else {
                return Err(bad(
                    word,
                    "expected key=value (uid, gid, iif, oif, mark, connmark, state)",
                ));
            };
            if seen.contains(&key) {
                return Err(bad(word, "given twice"));
            }
            seen.push(key);
            let number = || -> Result<u32> { parse_u32(value).map_err(|e| Error::invalid("PACKET", *word, e.0)) };
            let only =
                |want: Direction, what: &str| -> Result<()> { if dir == want { Ok(()) } else { Err(bad(word, what)) } };
            match key {
                "uid" => {
                    only(Direction::Out, "only a locally generated ('out') packet has an owner")?;
                    p.uid = Some(decimal(value).ok_or_else(|| bad(word, "a numeric uid (names are not resolved)"))?);
                }
                "gid" => {
                    only(Direction::Out, "only a locally generated ('out') packet has an owner")?;
                    p.gid = Some(decimal(value).ok_or_else(|| bad(word, "a numeric gid (names are not resolved)"))?);
                }
                "iif" => {
                    only(Direction::In, "an 'out' packet has no input interface")?;
                    p.iif = Some(device(word, value)?);
                }
                "oif" => {
                    only(
                        Direction::Out,
                        "an 'in' packet has no output interface in PREROUTING and INPUT",
                    )?;
                    p.oif = Some(device(word, value)?);
                }
                "mark" => p.mark = number()?,
                "connmark" => p.connmark = Some(number()?),
                "state" => {
                    p.state = match value {
                        "new" => ConnState::New,
                        "established" => ConnState::Established,
                        "related" => ConnState::Related,
                        "invalid" => ConnState::Invalid,
                        _ => return Err(bad(word, "the state is new, established, related or invalid")),
                    }
                }
                _ => return Err(bad(word, "unknown key (uid, gid, iif, oif, mark, connmark, state)")),
            }
        }
        if p.state == ConnState::New && p.connmark.is_some_and(|m| m != 0) {
            return Err(bad(
                "connmark",
                "a new connection's mark is 0; connmark= is for established or related ones",
            ));
        }
        Ok(p)
    }
}

fn decimal(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 10 {
        return None;
    }
    text.parse().ok()
}

fn device(word: &str, value: &str) -> Result<String> {
    let iface = Iface::parse(value).map_err(|e| Error::invalid("PACKET", word, e.0))?;
    if iface.as_str().ends_with('+') {
        return Err(Error::invalid(
            "PACKET",
            word,
            "a packet has one concrete interface; '+' is a rule wildcard",
        ));
    }
    Ok(iface.as_str().to_string())
}

fn socket_addr(text: &str) -> Result<SocketAddr> {
    let bad = |why: &str| Error::invalid("PACKET", text, why);
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| bad("an IPv6 endpoint is written [address]:port"))?;
        (host, port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| bad("an endpoint is address:port"))?;
        if host.contains(':') {
            return Err(bad("an IPv6 endpoint is written [address]:port"));
        }
        (host, port)
    };
    let ip: IpAddr = crate::values::parse_ip(host).map_err(|e| bad(&e.0))?;
    let port = crate::values::Port::parse(port).map_err(|e| bad(&e.0))?;
    Ok(SocketAddr::new(ip, port.get()))
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.dir {
            Direction::Out => "out",
            Direction::In => "in",
        };
        write!(f, "{dir} {} {} -> {}", self.proto.as_str(), self.src, self.dst)?;
        if let Some(u) = self.uid {
            write!(f, " uid={u}")?;
        }
        if let Some(g) = self.gid {
            write!(f, " gid={g}")?;
        }
        if let Some(i) = &self.iif {
            write!(f, " iif={i}")?;
        }
        if let Some(o) = &self.oif {
            write!(f, " oif={o}")?;
        }
        write!(f, " mark={}", self.mark)?;
        if let Some(c) = self.connmark {
            write!(f, " connmark={c}")?;
        }
        write!(f, " state={}", self.state.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_example() {
        let p = Packet::parse("out tcp 198.51.100.2:40000 -> 198.51.100.1:80 uid=1000 gid=1000 oif=eth0").unwrap();
        assert_eq!(p.dir, Direction::Out);
        assert_eq!(p.proto, Proto::Tcp);
        assert_eq!(p.dst.port(), 80);
        assert_eq!((p.uid, p.gid, p.oif.as_deref()), (Some(1000), Some(1000), Some("eth0")));
        assert_eq!(p.state, ConnState::New);
        assert_eq!(p.family(), Family::V4);
        assert_eq!(
            p.to_string(),
            "out tcp 198.51.100.2:40000 -> 198.51.100.1:80 uid=1000 gid=1000 oif=eth0 mark=0 state=new"
        );
        let p =
            Packet::parse("in udp [fd00::2]:53 -> [fd00::1]:5353 iif=veth0 mark=0x539 state=established connmark=7")
                .unwrap();
        assert_eq!((p.family(), p.mark, p.connmark), (Family::V6, 1337, Some(7)));
        assert_eq!(p.src.to_string(), "[fd00::2]:53");
    }

    #[test]
    fn refuses_bad_packets() {
        for (text, needle) in [
            ("out tcp 1.2.3.4:1 => 1.2.3.5:2", "'->'"),
            ("up tcp 1.2.3.4:1 -> 1.2.3.5:2", "direction"),
            ("out icmp 1.2.3.4:1 -> 1.2.3.5:2", "protocol"),
            ("out tcp 1.2.3.4 -> 1.2.3.5:2", "address:port"),
            ("out tcp 1.2.3.4:0 -> 1.2.3.5:2", "between 1 and 65535"),
            ("out tcp 1.2.3.4:1 -> [::1]:2", "one family"),
            ("out tcp fd00::1:1 -> [::1]:2", "[address]:port"),
            ("out tcp 1.2.3.4:1 -> 1.2.3.5:2 uid=istio", "numeric uid"),
            ("out tcp 1.2.3.4:1 -> 1.2.3.5:2 iif=eth0", "no input interface"),
            ("in tcp 1.2.3.4:1 -> 1.2.3.5:2 uid=1", "owner"),
            ("in tcp 1.2.3.4:1 -> 1.2.3.5:2 oif=eth0", "no output interface"),
            ("in tcp 1.2.3.4:1 -> 1.2.3.5:2 iif=eth+", "concrete"),
            ("in tcp 1.2.3.4:1 -> 1.2.3.5:2 state=bogus", "state is"),
            ("in tcp 1.2.3.4:1 -> 1.2.3.5:2 mark=1 mark=2", "twice"),
            ("in tcp 1.2.3.4:1 -> 1.2.3.5:2 colour=red", "unknown key"),
            ("in tcp 1.2.3.4:1 -> 1.2.3.5:2 mark", "key=value"),
            ("in tcp 1.2.3.4:1 -> 1.2.3.5:2 connmark=5", "new connection"),
            ("in tcp", "expected 'DIR"),
        ] {
            let e = Packet::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.contains("'PACKET'"), "{e}");
        }
    }
}
