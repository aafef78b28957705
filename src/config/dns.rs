//! DNS capture: `--redirect-dns` and `--capture-all-dns` (read with the other switches) and the
//! DNS servers of resolv.conf, which limit the capture when not capturing all DNS.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::HostFiles;
use super::source::Input;
use crate::error::Result;
use crate::sys::host;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Dns {
    /// `--redirect-dns` as configured.
    pub(crate) redirect: bool,
    pub(crate) capture_all: bool,
    pub(crate) servers_v4: Vec<Ipv4Addr>,
    pub(crate) servers_v6: Vec<Ipv6Addr>,
    /// IPv6 servers with a zone (`fe80::1%eth0`): they keep DNS capture on as in Istio, but no
    /// rule names them (no ip6tables or nft address carries a zone; docs/istio-compat.md §2.5).
    pub(crate) zoned_v6: Vec<String>,
}

impl Dns {
    /// DNS capture is effective only when requested and either capturing all DNS or knowing at
    /// least one server (Istio 1.29 disables it otherwise, with a warning).
    pub(crate) fn effective(&self) -> bool {
        self.redirect
            && (self.capture_all
                || !self.servers_v4.is_empty()
                || !self.servers_v6.is_empty()
                || !self.zoned_v6.is_empty())
    }
}

/// The DNS setting: with `redirect` and without `capture_all`, the servers of `files`'s
/// resolv.conf (a note for each entry that is not an address, and when none is left).
pub(super) fn dns(i: &mut Input, files: &HostFiles, redirect: bool, capture_all: bool) -> Result<Dns> {
    let mut dns = Dns {
        redirect,
        capture_all,
        ..Dns::default()
    };
    if !redirect || capture_all {
        return Ok(dns);
    }
    let text = host::read_capped(&files.resolv_conf, host::RESOLV_CONF_MAX)?;
    let host::ResolvConf {
        servers,
        zoned,
        skipped,
    } = host::parse_resolv_conf(&text);
    for s in skipped {
        i.warn(format!(
            "ignoring un-parsable DNS server {} in {}",
            crate::error::quote(&s),
            crate::error::printable(&files.resolv_conf)
        ));
    }
    for s in &zoned {
        i.warn(format!(
            "DNS server {} in {} has an IPv6 zone: it keeps DNS capture on (as Istio), but no rule address can carry a zone, so no rule matches it (Istio's IPv6 rules with it fail to load); --capture-all-dns captures its queries",
            crate::error::quote(s),
            crate::error::printable(&files.resolv_conf)
        ));
    }
    dns.zoned_v6 = zoned;
    for s in servers {
        match s {
            IpAddr::V4(a) => dns.servers_v4.push(a),
            IpAddr::V6(a) => dns.servers_v6.push(a),
        }
    }
    if !dns.effective() {
        i.warn("REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS servers provided. DNS capture disabled.");
    }
    Ok(dns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::CaptureFlags;
    use crate::config::{Config, Ipv6Setting};
    use crate::sys::host::Env;

    fn with_resolv_conf(name: &str, text: &str, env: &[(&str, &str)]) -> Config {
        let dir = std::env::temp_dir().join(format!("meshcap-resolv-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(&path, text).unwrap();
        let files = HostFiles {
            passwd: "/nonexistent".into(),
            resolv_conf: path.to_str().unwrap().into(),
        };
        let c = Config::from_flags(
            &CaptureFlags::default(),
            &Env::from_pairs(env.iter().copied()),
            &files,
            Ipv6Setting::Explicit(false),
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        c
    }

    #[test]
    fn servers_by_family_with_notes() {
        let c = with_resolv_conf(
            "families",
            "nameserver 10.0.0.53\nnameserver 2001:db8::53\nnameserver bogus\n",
            &[("REDIRECT_DNS", "true")],
        );
        assert_eq!(c.dns.servers_v4, [Ipv4Addr::new(10, 0, 0, 53)]);
        assert_eq!(c.dns.servers_v6, ["2001:db8::53".parse::<Ipv6Addr>().unwrap()]);
        assert!(c.dns.effective());
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].starts_with("ignoring un-parsable DNS server 'bogus' in "),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn no_servers_disable_the_capture() {
        let c = with_resolv_conf("none", "search example\n", &[("REDIRECT_DNS", "true")]);
        assert!(!c.dns.effective());
        assert_eq!(
            c.warnings,
            ["REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS servers provided. DNS capture disabled."]
        );
        // Capturing all DNS needs no servers, and resolv.conf is not read.
        let c = with_resolv_conf("all", "", &[("REDIRECT_DNS", "true"), ("CAPTURE_ALL_DNS", "true")]);
        assert!(c.dns.effective() && c.dns.servers_v4.is_empty() && c.warnings.is_empty());
    }
}
