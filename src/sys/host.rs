//! Facts read from the host's files: the process environment snapshot, `/etc/passwd` and
//! `resolv.conf`. Pure parsers plus thin readers; no NSS, no network, so a static binary works.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::values::Owner;

/// A snapshot of environment variables. Taken once in `main`; tests build their own.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process environment. A value that is not UTF-8 is kept with its bad bytes replaced
    /// by U+FFFD, so a variable meshcap reads is refused by its validator (naming it) instead of
    /// being silently treated as unset; variables with non-UTF-8 names cannot be ones meshcap
    /// reads and are dropped.
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
                .collect(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Env {
        Env {
            vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// Finds `user` in passwd(5) text and returns its numeric UID.
pub fn uid_of(passwd: &str, user: &str) -> Option<u32> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        if name != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?;
        // Decimal digits only (`str::parse` would also take a leading `+`).
        if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        uid.parse().ok()
    })
}

/// Finds `group` in group(5) text and returns its numeric GID.
pub fn gid_of(group_text: &str, group: &str) -> Option<u32> {
    group_text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != group {
            return None;
        }
        let _password = fields.next()?;
        fields.next()?.parse().ok()
    })
}

/// Looks `user` up in the passwd file at `path`; `None` when the file or the user is missing.
pub fn lookup_uid(path: &str, user: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok().and_then(|text| uid_of(&text, user))
}

/// The DNS servers of a resolv.conf (see [`parse_resolv_conf`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// Servers as addresses, in file order.
    pub servers: Vec<IpAddr>,
    /// IPv6 servers with a zone (`fe80::1%eth0`), as written: Istio parses them, but no rule
    /// address can carry the zone (docs/istio-compat.md §2.5).
    pub zoned: Vec<String>,
    /// Entries that are not an address at all.
    pub skipped: Vec<String>,
}

/// DNS servers of a resolv.conf, as Istio collects them: every `nameserver X` line in order
/// (later fields ignored), parsed as one IP address, an IPv6 address possibly with a zone.
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut out = ResolvConf::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = fields.next() else { continue };
        let zoned = addr
            .split_once('%')
            .filter(|(ip, zone)| !zone.is_empty() && crate::values::parse_ip(ip).is_ok_and(|ip| ip.is_ipv6()));
        match crate::values::parse_ip(addr) {
            Ok(ip) => out.servers.push(ip),
            Err(_) if zoned.is_some() => out.zoned.push(addr.to_string()),
            Err(_) => out.skipped.push(addr.to_string()),
        }
    }
    out
}

pub fn read_file(path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|err| Error::Read {
        path: path.to_string(),
        err,
    })
}

/// User and group names for `-m owner` matches that name them (iptables resolves names when it
/// loads a rule; the tracer resolves them the same way, from the files' text).
#[derive(Debug, Clone, Default)]
pub struct Ids {
    pub passwd: Option<String>,
    pub group: Option<String>,
}

impl Ids {
    /// Reads `/etc/passwd` and `/etc/group`; a missing file resolves nothing.
    pub fn from_host() -> Ids {
        Ids {
            passwd: std::fs::read_to_string("/etc/passwd").ok(),
            group: std::fs::read_to_string("/etc/group").ok(),
        }
    }

    /// The numeric id of an owner (`group`: a group), or why it does not resolve.
    pub fn resolve(&self, owner: &Owner, group: bool) -> Result<u32, String> {
        match owner {
            Owner::Id(n) => Ok(*n),
            Owner::Name(name) => {
                let (text, file, what) = if group {
                    (&self.group, "/etc/group", "group")
                } else {
                    (&self.passwd, "/etc/passwd", "user")
                };
                let found = text
                    .as_deref()
                    .and_then(|t| if group { gid_of(t, name) } else { uid_of(t, name) });
                found.ok_or_else(|| format!("{what} '{name}' is not in {file}, so iptables could not load this rule"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup() {
        let text = "root:x:0:0:root:/root:/bin/sh\nistio-proxy:x:1337:1337::/home:/bin/false\n";
        assert_eq!(uid_of(text, "istio-proxy"), Some(1337));
        assert_eq!(uid_of(text, "nobody"), None);
        assert_eq!(uid_of("broken", "broken"), None);
        assert_eq!(gid_of("root:x:0:\njava:x:2001:a,b\n", "java"), Some(2001));
        assert_eq!(gid_of("java:x:2001:\n", "jav"), None);
        assert_eq!(uid_of("p:x:+5:0::/:/bin/sh\n", "p"), None);
        assert_eq!(uid_of("p:x: 5:0::/:/bin/sh\n", "p"), None);
        assert_eq!(uid_of("p:x:99999999999:0::/:/bin/sh\n", "p"), None);
    }

    #[test]
    fn resolv_conf_servers() {
        let r = parse_resolv_conf(
            "# c\nnameserver 10.96.0.10 # x\nsearch a\nnameserver ::127.0.0.53\nnameserver 01.2.3.4\nnameserver fe80::1%eth0\nnameserver\nnameserver 10.0.0.1%eth0\nnameserver fe80::2%\n",
        );
        let s: Vec<String> = r.servers.iter().map(|a| a.to_string()).collect();
        assert_eq!(s, ["10.96.0.10", "::7f00:35"]);
        assert_eq!(r.zoned, ["fe80::1%eth0"]);
        // A zone is IPv6 only and never empty (as Go's netip).
        assert_eq!(r.skipped, ["01.2.3.4", "10.0.0.1%eth0", "fe80::2%"]);
    }
}
