//! What meshcap asks the kernel of the target namespace directly (no process): interface
//! addresses, which legacy iptables tables and which nftables tables exist, and the TPROXY
//! policy routing. [`Kernel`] is the seam (the apply flow's unit tests use a fake);
//! [`LinuxKernel`] answers over netlink sockets created inside the namespace and reads
//! `/proc/thread-self/net/ip{,6}_tables_names` from a thread that entered it (reading those
//! files never instantiates a table, unlike running `iptables-legacy`).
//!
//! [`detect_ipv6`] is Istio's IPv6 enablement rule (istio-compat §2.4) as a pure function.

use std::io;
use std::net::{IpAddr, Ipv6Addr};

use crate::error::{Error, Result};
use crate::model::TableName;
use crate::sys::netlink::Socket;
use crate::sys::netns::{self, Netns};
use crate::values::Family;

/// The kernel of the target namespace.
pub(crate) trait Kernel {
    /// Interface addresses in the kernel's dump order.
    fn addresses(&self) -> Result<Vec<IpAddr>>;
    /// The legacy (`ip_tables`/`ip6_tables`) tables that exist, of the four meshcap uses.
    fn legacy_tables(&self, family: Family) -> Vec<TableName>;
    /// The iptables-nft tables (`ip`/`ip6` family) that exist, of the four; `None` when
    /// nf_tables is not available.
    fn nft_tables(&self, family: Family) -> Option<Vec<TableName>>;
    /// The names of the nftables tables of family `inet`; `None` when they cannot be listed
    /// without a process (nf_tables unavailable, or a kernel double that does not say).
    fn nft_inet_tables(&self) -> Option<Vec<String>> {
        None
    }
    /// Why this namespace's netfilter state cannot be read (no rights: the legacy table names
    /// or the nf_tables listing refused), `None` when it can. A dry run says so instead of
    /// reporting a clean namespace it did not see.
    fn netfilter_unreadable(&self) -> Option<String> {
        None
    }
    /// How many `fwmark <mark> lookup <table>` rules exist.
    fn fwmark_rules(&self, family: Family, mark: u32, table: u32) -> Result<usize>;
    /// The protocol of each `fwmark <mark> lookup <table>` rule (0: unspec, as `ip rule add`
    /// leaves it; 3: boot).
    fn fwmark_rule_protocols(&self, family: Family, mark: u32, table: u32) -> Result<Vec<u8>> {
        Ok(vec![0; self.fwmark_rules(family, mark, table)?])
    }
    fn add_fwmark_rule(&self, family: Family, mark: u32, table: u32) -> Result<()>;
    fn del_fwmark_rule(&self, family: Family, mark: u32, table: u32) -> Result<()>;
    /// Whether `local default dev lo table <table>` exists.
    fn has_local_default(&self, family: Family, table: u32) -> Result<bool>;
    fn add_local_default(&self, family: Family, table: u32) -> Result<()>;
    fn del_local_default(&self, family: Family, table: u32) -> Result<()>;
    /// Whether `ip` is assigned to `lo`.
    fn lo_has_address(&self, ip: IpAddr) -> Result<bool>;
    fn add_lo_address(&self, ip: IpAddr, prefix: u8) -> Result<()>;
    fn del_lo_address(&self, ip: IpAddr, prefix: u8) -> Result<()>;
}

/// The real kernel, reached inside the target namespace.
pub(crate) struct LinuxKernel {
    route: Socket,
    netfilter: io::Result<Socket>,
    legacy_v4: Vec<TableName>,
    legacy_v6: Vec<TableName>,
    /// Why a legacy table-names file could not be read (it exists but is not readable).
    legacy_unreadable: Option<String>,
    lo: std::cell::Cell<Option<u32>>,
}

fn tables_in(text: &str) -> Vec<TableName> {
    let mut out: Vec<TableName> = text.lines().filter_map(|l| TableName::from_name(l.trim())).collect();
    out.sort();
    out.dedup();
    out
}

/// The legacy tables a names file lists, and why it could not be read (then none are assumed).
fn read_names(file: &str) -> (Vec<TableName>, Option<String>) {
    // The file is absent when the legacy module is not loaded: then no legacy table exists.
    let path = format!("/proc/thread-self/net/{file}");
    match std::fs::read_to_string(&path) {
        Ok(t) => (tables_in(&t), None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), None),
        Err(e) => {
            // Mode 0440, root: a non-root meshcap with file capabilities needs
            // CAP_DAC_READ_SEARCH to see the legacy tables. Said, not silently assumed.
            tracing::warn!(
                "cannot read /proc/net/{file} ({e}); legacy tables are assumed absent (run as root or add CAP_DAC_READ_SEARCH)"
            );
            (Vec::new(), Some(format!("cannot read /proc/net/{file}: {e}")))
        }
    }
}

/// Whether `e` says the caller lacks the rights.
fn denied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

impl LinuxKernel {
    /// Enters `netns` (or stays here) and opens the sockets and facts meshcap needs.
    pub(crate) fn open(netns: Option<&Netns>) -> Result<LinuxKernel> {
        let (route, netfilter, legacy_v4, legacy_v6) = netns::within(netns, || {
            (
                Socket::route(),
                Socket::netfilter(),
                read_names("ip_tables_names"),
                read_names("ip6_tables_names"),
            )
        })?;
        let route = route.map_err(|e| Error::system("cannot open a netlink socket", e))?;
        let ((legacy_v4, why_v4), (legacy_v6, why_v6)) = (legacy_v4, legacy_v6);
        Ok(LinuxKernel {
            route,
            netfilter,
            legacy_v4,
            legacy_v6,
            legacy_unreadable: why_v4.or(why_v6),
            lo: std::cell::Cell::new(None),
        })
    }

    fn lo(&self) -> Result<u32> {
        if let Some(i) = self.lo.get() {
            return Ok(i);
        }
        let i = self
            .route
            .link_index("lo")
            .map_err(|e| Error::system("failed to find 'lo' link", e))?;
        self.lo.set(Some(i));
        Ok(i)
    }
}

fn inet_names(sock: &Socket) -> Option<Vec<String>> {
    let tables = sock.nft_tables().ok()?;
    Some(
        tables
            .into_iter()
            .filter(|(f, _)| *f == crate::sys::netlink::NFPROTO_INET)
            .map(|(_, n)| n)
            .collect(),
    )
}

impl Kernel for LinuxKernel {
    fn addresses(&self) -> Result<Vec<IpAddr>> {
        self.route
            .addresses()
            .map_err(|e| Error::system("cannot list the interface addresses", e))
    }

    fn legacy_tables(&self, family: Family) -> Vec<TableName> {
        match family {
            Family::V4 => self.legacy_v4.clone(),
            Family::V6 => self.legacy_v6.clone(),
        }
    }

    fn nft_tables(&self, family: Family) -> Option<Vec<TableName>> {
        let sock = self.netfilter.as_ref().ok()?;
        let want = crate::sys::netlink::af(family);
        let tables = sock.nft_tables().ok()?;
        let mut out: Vec<TableName> = tables
            .iter()
            .filter(|(f, _)| *f == want)
            .filter_map(|(_, n)| TableName::from_name(n))
            .collect();
        out.sort();
        out.dedup();
        Some(out)
    }

    fn nft_inet_tables(&self) -> Option<Vec<String>> {
        inet_names(self.netfilter.as_ref().ok()?)
    }

    fn netfilter_unreadable(&self) -> Option<String> {
        if let Some(why) = &self.legacy_unreadable {
            return Some(why.clone());
        }
        let listed = match self.netfilter.as_ref() {
            Ok(sock) => sock.nft_tables().map(drop),
            Err(e) => Err(io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0))),
        };
        match listed {
            Err(e) if denied(&e) => Some(format!(
                "the kernel refuses to list the nftables tables ({e}): CAP_NET_ADMIN in the namespace is needed"
            )),
            // No nf_tables at all: nothing can be there, as a real run finds too.
            _ => None,
        }
    }

    fn fwmark_rules(&self, family: Family, mark: u32, table: u32) -> Result<usize> {
        let rules = self
            .route
            .rules(family)
            .map_err(|e| Error::system("cannot list the policy rules", e))?;
        Ok(rules.iter().filter(|r| r.is_fwmark_lookup(mark, table)).count())
    }

    fn fwmark_rule_protocols(&self, family: Family, mark: u32, table: u32) -> Result<Vec<u8>> {
        let rules = self
            .route
            .rules(family)
            .map_err(|e| Error::system("cannot list the policy rules", e))?;
        Ok(rules
            .iter()
            .filter(|r| r.is_fwmark_lookup(mark, table))
            .map(|r| r.protocol)
            .collect())
    }

    fn add_fwmark_rule(&self, family: Family, mark: u32, table: u32) -> Result<()> {
        self.route
            .add_rule(family, mark, table)
            .map_err(|e| Error::system("failed to configure netlink rule", e))
    }

    fn del_fwmark_rule(&self, family: Family, mark: u32, table: u32) -> Result<()> {
        self.route
            .del_rule(family, mark, table)
            .map_err(|e| Error::system("failed to delete netlink rule", e))
    }

    fn has_local_default(&self, family: Family, table: u32) -> Result<bool> {
        let lo = self.lo()?;
        let routes = self
            .route
            .routes(family)
            .map_err(|e| Error::system("cannot list the routes", e))?;
        Ok(routes.iter().any(|r| r.is_local_default(table, lo)))
    }

    fn add_local_default(&self, family: Family, table: u32) -> Result<()> {
        let lo = self.lo()?;
        match self.route.add_local_default(family, table, lo) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map_err(|e| Error::system("failed to add route", e)),
        }
    }

    fn del_local_default(&self, family: Family, table: u32) -> Result<()> {
        let lo = self.lo()?;
        match self.route.del_local_default(family, table, lo) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r.map_err(|e| Error::system("failed to delete route", e)),
        }
    }

    fn lo_has_address(&self, ip: IpAddr) -> Result<bool> {
        // Only meshcap's ::6 is asked about, and `lo` is the only interface holding it.
        Ok(self.addresses()?.contains(&ip))
    }

    fn add_lo_address(&self, ip: IpAddr, prefix: u8) -> Result<()> {
        let lo = self.lo()?;
        match self.route.add_address(ip, prefix, lo) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map_err(|e| Error::system("failed to add IPv6 inbound address", e)),
        }
    }

    fn del_lo_address(&self, ip: IpAddr, prefix: u8) -> Result<()> {
        let lo = self.lo()?;
        match self.route.del_address(ip, prefix, lo) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            r => r.map_err(|e| Error::system("failed to delete the IPv6 inbound address", e)),
        }
    }
}

/// Istio's IPv6 enablement (istio-compat §2.4) from the addresses in dump order: returns the host
/// address and whether IPv6 is enabled.
pub(crate) fn detect_ipv6(addrs: &[IpAddr], dual_stack: bool) -> Result<(IpAddr, bool)> {
    let mut first: Option<IpAddr> = None;
    let mut last_v6 = false;
    for addr in addrs {
        let addr = match addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(*addr, IpAddr::V4),
            a => *a,
        };
        let skip = match addr {
            IpAddr::V4(a) => a.is_loopback() || a.is_link_local() || (a.octets()[..3] == [224, 0, 0]),
            IpAddr::V6(a) => {
                a == Ipv6Addr::LOCALHOST || (a.segments()[0] & 0xffc0) == 0xfe80 || (a.segments()[0] & 0xff0f) == 0xff02
            }
        };
        if skip {
            continue;
        }
        first.get_or_insert(addr);
        last_v6 = addr.is_ipv6();
        if !dual_stack || last_v6 {
            break;
        }
    }
    match first {
        Some(host) => Ok((host, last_v6)),
        None => Err(Error::NoLocalAddress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ipv6_detection_follows_istio() {
        let v6 = |l: &[&str], ds| detect_ipv6(&ips(l), ds).map(|r| r.1).ok();
        assert_eq!(v6(&["127.0.0.1", "1.2.3.5"], false), Some(false));
        assert_eq!(v6(&["::1", "2222:3333::1"], false), Some(true));
        let mixed = ["::1", "127.0.0.1", "1.2.3.5", "2222:3333::1"];
        assert_eq!(v6(&mixed, false), Some(false));
        assert_eq!(v6(&mixed, true), Some(true));
        assert_eq!(detect_ipv6(&ips(&mixed), true).unwrap().0, ips(&["1.2.3.5"])[0]);
        assert_eq!(v6(&["::ffff:10.0.0.1"], false), Some(false));
        assert_eq!(
            v6(&["fe80::1", "169.254.1.1", "224.0.0.5", "ff02::1", "fd00::1"], false),
            Some(true)
        );
        let e = detect_ipv6(&ips(&["127.0.0.1", "::1"]), false).unwrap_err();
        assert_eq!(e.to_string(), "no valid local IP address found");
    }

    #[test]
    fn table_names_file() {
        assert_eq!(
            tables_in("nat\nfilter\nsecurity\n"),
            [TableName::Filter, TableName::Nat]
        );
        assert!(tables_in("").is_empty());
    }
}
