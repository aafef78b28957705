//! Raw netlink, just what meshcap needs: interface addresses (IPv6 detection), policy rules,
//! routes and the `::6` address (TPROXY routing) over `NETLINK_ROUTE`, and the list of
//! nftables tables over `NETLINK_NETFILTER` (to know, without starting a process, whether the
//! iptables-nft tables exist). A socket belongs to the network namespace of the thread that
//! created it, so [`Socket::open`] is called inside the target namespace (`netns::within`).
//!
//! Wire format: `nlmsghdr` (16 bytes), a fixed family header, then `rtattr`s (length, type,
//! value, padded to 4 bytes); all in host byte order except nfnetlink's `res_id`.
//!
//! The socket is `netlink-sys`'s (the crate the nf_tables codec's socket uses too), so this
//! module has no `unsafe`; the receive timeout goes through `nix`.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_sys::Socket as NlSocket;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::values::Family;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const RTM_GETRULE: u16 = 34;

const IFLA_IFNAME: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const FRA_PROTOCOL: u16 = 21;
const FR_ACT_TO_TBL: u8 = 1;
const RTN_LOCAL: u8 = 2;
const RT_SCOPE_HOST: u8 = 254;
const RTPROT_BOOT: u8 = 3;
/// A policy rule's protocol when none was given (`ip rule add` without `protocol`).
pub(crate) const RTPROT_UNSPEC: u8 = 0;

const NETLINK_NETFILTER: isize = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
/// `ifaddrmsg.ifa_flags`: no duplicate address detection (the address is usable at once).
const IFA_F_NODAD: u8 = 0x02;
/// The nftables `inet` family (both IPv4 and IPv6), as a table's `nfgenmsg` family.
pub(crate) const NFPROTO_INET: u8 = 1;

/// `AF_INET` / `AF_INET6` of a family.
pub(crate) fn af(family: Family) -> u8 {
    match family {
        Family::V4 => libc::AF_INET as u8,
        Family::V6 => libc::AF_INET6 as u8,
    }
}

/// A netlink socket bound in the namespace it was created in.
pub struct Socket {
    sock: NlSocket,
    seq: Cell<u32>,
}

fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

/// The attributes after a fixed header of `skip` bytes.
fn attrs(payload: &[u8], skip: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = payload.get(skip..).unwrap_or(&[]);
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        out.push((kind, &rest[4..len]));
        rest = rest.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
    }
    out
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

fn ip_of(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?))),
        _ => None,
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl Socket {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's namespace.
    pub(crate) fn route() -> io::Result<Socket> {
        Socket::open(libc::NETLINK_ROUTE as isize)
    }

    /// Opens a `NETLINK_NETFILTER` socket in the calling thread's namespace.
    pub(crate) fn netfilter() -> io::Result<Socket> {
        Socket::open(NETLINK_NETFILTER)
    }

    fn open(protocol: isize) -> io::Result<Socket> {
        let mut sock = NlSocket::new(protocol)?;
        sock.bind_auto()?;
        setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(5, 0)).map_err(io::Error::from)?;
        Ok(Socket {
            sock,
            seq: Cell::new(1),
        })
    }

    /// Sends one request and collects the answer: the payloads (after `nlmsghdr`) of every data
    /// message, until the dump ends or the kernel acknowledges. A kernel error becomes the
    /// matching `io::Error` (e.g. `EEXIST`, `ESRCH`, `EPERM`).
    fn request(&self, kind: u16, flags: u16, body: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        self.sock.send(&msg, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        // Not zeroed: the kernel writes what we read, and zeroing 64 KiB per request (with the
        // page faults it takes) was a measurable share of a fresh apply.
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        // Bounded: a dump of this size never needs more; a runaway answer is an error.
        for _ in 0..100_000 {
            // Into the buffer's spare capacity (not zeroed: the kernel writes what is read).
            buf.clear();
            self.sock.recv(&mut buf, 0)?;
            let mut rest = &buf[..];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let mtype = u16::from_ne_bytes([rest[4], rest[5]]);
                let mseq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
                if len < 16 || len > rest.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
                }
                let payload = &rest[16..len];
                rest = rest.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
                if mseq != seq {
                    continue;
                }
                match mtype {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4")));
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    _ => out.push((mtype, payload.to_vec())),
                }
            }
            if !dump && flags & NLM_F_ACK == 0 && !out.is_empty() {
                return Ok(out);
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "netlink answer did not end"))
    }

    /// Every interface address in kernel dump order (IPv4 first, then IPv6, each by interface
    /// index). IPv4 uses the local address (`IFA_LOCAL`) where there is one.
    pub(crate) fn addresses(&self) -> io::Result<Vec<IpAddr>> {
        let body = [0u8; 8]; // ifaddrmsg, AF_UNSPEC
        let mut out = Vec::new();
        for (kind, payload) in self.request(RTM_GETADDR, NLM_F_DUMP, &body)? {
            if kind != RTM_NEWADDR {
                continue;
            }
            let a = attrs(&payload, 8);
            let pick = |t| a.iter().find(|(k, _)| *k == t).and_then(|(_, v)| ip_of(v));
            if let Some(ip) = pick(IFA_LOCAL).or_else(|| pick(IFA_ADDRESS)) {
                out.push(ip);
            }
        }
        Ok(out)
    }

    /// The index of interface `name`.
    pub(crate) fn link_index(&self, name: &str) -> io::Result<u32> {
        let mut body = vec![0u8; 16]; // ifinfomsg
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        attr(&mut body, IFLA_IFNAME, &cname);
        for (kind, payload) in self.request(RTM_GETLINK, 0, &body)? {
            if kind == RTM_NEWLINK && payload.len() >= 8 {
                return Ok(i32::from_ne_bytes(payload[4..8].try_into().expect("4 bytes")) as u32);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface '{name}'"),
        ))
    }

    /// The policy rules of a family.
    pub(crate) fn rules(&self, family: Family) -> io::Result<Vec<PolicyRule>> {
        let mut body = vec![0u8; 12];
        body[0] = af(family);
        let mut out = Vec::new();
        for (kind, payload) in self.request(RTM_GETRULE, NLM_F_DUMP, &body)? {
            if kind != RTM_NEWRULE || payload.len() < 12 {
                continue;
            }
            let a = attrs(&payload, 12);
            let get = |t| a.iter().find(|(k, _)| *k == t).and_then(|(_, v)| u32_of(v));
            out.push(PolicyRule {
                priority: get(FRA_PRIORITY).unwrap_or(0),
                fwmark: get(FRA_FWMARK),
                fwmask: get(FRA_FWMASK),
                table: get(FRA_TABLE).unwrap_or(payload[4] as u32),
                to_table: payload[7] == FR_ACT_TO_TBL,
                protocol: a
                    .iter()
                    .find(|(k, _)| *k == FRA_PROTOCOL)
                    .and_then(|(_, v)| v.first().copied())
                    .unwrap_or(RTPROT_UNSPEC),
            });
        }
        Ok(out)
    }

    fn rule_body(family: Family, mark: u32, table: u32, with_mask: bool) -> Vec<u8> {
        let mut body = vec![0u8; 12];
        body[0] = af(family);
        body[4] = if table < 256 { table as u8 } else { 0 };
        body[7] = FR_ACT_TO_TBL;
        attr(&mut body, FRA_FWMARK, &mark.to_ne_bytes());
        if with_mask {
            attr(&mut body, FRA_FWMASK, &u32::MAX.to_ne_bytes());
        }
        attr(&mut body, FRA_TABLE, &table.to_ne_bytes());
        body
    }

    /// `ip rule add fwmark <mark> lookup <table>` (no priority: the kernel picks one; no
    /// protocol: `proto unspec`, as `ip rule add` leaves it, docs/istio-compat.md §5.8).
    pub(crate) fn add_rule(&self, family: Family, mark: u32, table: u32) -> io::Result<()> {
        let body = Socket::rule_body(family, mark, table, false);
        self.request(RTM_NEWRULE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &body)
            .map(drop)
    }

    /// Deletes one `fwmark <mark>/0xffffffff lookup <table>` rule.
    pub(crate) fn del_rule(&self, family: Family, mark: u32, table: u32) -> io::Result<()> {
        let body = Socket::rule_body(family, mark, table, true);
        self.request(RTM_DELRULE, NLM_F_ACK, &body).map(drop)
    }

    /// The routes of every table of a family.
    pub(crate) fn routes(&self, family: Family) -> io::Result<Vec<RouteEntry>> {
        let mut body = vec![0u8; 12];
        body[0] = af(family);
        let mut out = Vec::new();
        for (kind, payload) in self.request(RTM_GETROUTE, NLM_F_DUMP, &body)? {
            if kind != RTM_NEWROUTE || payload.len() < 12 {
                continue;
            }
            let a = attrs(&payload, 12);
            let get = |t| a.iter().find(|(k, _)| *k == t).and_then(|(_, v)| u32_of(v));
            out.push(RouteEntry {
                dst_len: payload[1],
                has_dst: a.iter().any(|(k, _)| *k == RTA_DST),
                table: get(RTA_TABLE).unwrap_or(payload[4] as u32),
                local: payload[7] == RTN_LOCAL,
                oif: get(RTA_OIF),
            });
        }
        Ok(out)
    }

    fn local_default_body(family: Family, table: u32, oif: u32) -> Vec<u8> {
        let mut body = vec![0u8; 12];
        body[0] = af(family);
        body[4] = if table < 256 { table as u8 } else { 0 };
        body[5] = RTPROT_BOOT;
        body[6] = RT_SCOPE_HOST;
        body[7] = RTN_LOCAL;
        attr(&mut body, RTA_TABLE, &table.to_ne_bytes());
        attr(&mut body, RTA_OIF, &oif.to_ne_bytes());
        body
    }

    /// `ip route add local default dev <oif> table <table>` (`EEXIST` when present).
    pub(crate) fn add_local_default(&self, family: Family, table: u32, oif: u32) -> io::Result<()> {
        let body = Socket::local_default_body(family, table, oif);
        self.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &body)
            .map(drop)
    }

    /// Deletes `local default dev <oif> table <table>`.
    pub(crate) fn del_local_default(&self, family: Family, table: u32, oif: u32) -> io::Result<()> {
        let body = Socket::local_default_body(family, table, oif);
        self.request(RTM_DELROUTE, NLM_F_ACK, &body).map(drop)
    }

    fn addr_body(ip: IpAddr, prefix: u8, index: u32) -> Vec<u8> {
        let mut body = vec![0u8; 8];
        body[0] = af(Family::of(&ip));
        body[1] = prefix;
        body[4..8].copy_from_slice(&index.to_ne_bytes());
        attr(&mut body, IFA_LOCAL, &ip_bytes(ip));
        attr(&mut body, IFA_ADDRESS, &ip_bytes(ip));
        body
    }

    /// `ip addr add <ip>/<prefix> dev <index> nodad` (`EEXIST` when present). Without `nodad`
    /// an IPv6 address stays tentative until the kernel's DAD work runs, shortly after the
    /// request is acknowledged, and a proxy binding `::6` in that window gets
    /// `EADDRNOTAVAIL`; loopback addresses need no duplicate detection.
    pub(crate) fn add_address(&self, ip: IpAddr, prefix: u8, index: u32) -> io::Result<()> {
        let mut body = Socket::addr_body(ip, prefix, index);
        body[2] = IFA_F_NODAD;
        self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &body)
            .map(drop)
    }

    /// `ip addr del <ip>/<prefix> dev <index>`.
    pub(crate) fn del_address(&self, ip: IpAddr, prefix: u8, index: u32) -> io::Result<()> {
        let body = Socket::addr_body(ip, prefix, index);
        self.request(RTM_DELADDR, NLM_F_ACK, &body).map(drop)
    }

    /// The nftables tables as `(family, name)` (`NFPROTO_IPV4` = 2, `NFPROTO_IPV6` = 10, …).
    pub(crate) fn nft_tables(&self) -> io::Result<Vec<(u8, String)>> {
        let body = [0u8; 4]; // nfgenmsg: NFPROTO_UNSPEC, version 0, res_id 0
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE;
        let mut out = Vec::new();
        for (_, payload) in self.request(kind, NLM_F_DUMP, &body)? {
            let Some(&family) = payload.first() else { continue };
            for (k, v) in attrs(&payload, 4) {
                if k == NFTA_TABLE_NAME {
                    let name = v.split(|&b| b == 0).next().unwrap_or(&[]);
                    out.push((family, String::from_utf8_lossy(name).into_owned()));
                }
            }
        }
        Ok(out)
    }
}

/// One policy-routing rule, as far as meshcap looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PolicyRule {
    pub(crate) priority: u32,
    pub(crate) fwmark: Option<u32>,
    pub(crate) fwmask: Option<u32>,
    pub(crate) table: u32,
    pub(crate) to_table: bool,
    /// `FRA_PROTOCOL` (`ip rule` shows `proto boot` for 3); [`RTPROT_UNSPEC`] when absent.
    pub(crate) protocol: u8,
}

impl PolicyRule {
    /// Whether this is `fwmark <mark> lookup <table>` with the full mask.
    pub(crate) fn is_fwmark_lookup(&self, mark: u32, table: u32) -> bool {
        self.to_table && self.fwmark == Some(mark) && self.fwmask.unwrap_or(u32::MAX) == u32::MAX && self.table == table
    }
}

/// One route, as far as meshcap looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteEntry {
    pub(crate) dst_len: u8,
    pub(crate) has_dst: bool,
    pub(crate) table: u32,
    pub(crate) local: bool,
    pub(crate) oif: Option<u32>,
}

impl RouteEntry {
    /// Whether this is `local default dev <oif> table <table>`.
    pub(crate) fn is_local_default(&self, table: u32, oif: u32) -> bool {
        self.local && self.dst_len == 0 && self.table == table && self.oif == Some(oif)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding() {
        let mut body = vec![9u8; 4];
        attr(&mut body, 3, b"lo\0");
        attr(&mut body, 15, &133u32.to_ne_bytes());
        assert_eq!(body.len(), 4 + 8 + 8);
        let a = attrs(&body, 4);
        assert_eq!(a, [(3, &b"lo\0"[..]), (15, &133u32.to_ne_bytes()[..])]);
        assert_eq!(ip_of(&[127, 0, 0, 6]), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6))));
    }

    #[test]
    fn fwmark_rule_matching() {
        let r = PolicyRule {
            priority: 32765,
            fwmark: Some(1337),
            fwmask: Some(u32::MAX),
            table: 133,
            to_table: true,
            protocol: RTPROT_UNSPEC,
        };
        assert!(r.is_fwmark_lookup(1337, 133));
        assert!(!r.is_fwmark_lookup(1337, 134));
        assert!(
            !PolicyRule {
                fwmask: Some(0xff),
                ..r
            }
            .is_fwmark_lookup(1337, 133)
        );
    }
}
