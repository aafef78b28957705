//! Outbound destinations: the prefixes captured (`-i`) and excluded (`-x`), and the IPv4
//! loopback prefix never captured (`ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`).

use std::net::{IpAddr, Ipv4Addr};

use super::source::{Input, text_of};
use crate::error::{Error, Result};
use crate::values::{Cidr, Invalid};

/// `-i`: all outbound destinations, or a list of prefixes (empty: no outbound CIDR capture).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CidrSelection {
    All,
    List(Vec<Cidr>),
}

/// The outbound prefixes and their raw text for the config dump.
pub(super) struct Destinations {
    pub(crate) include: CidrSelection,
    pub(crate) exclude: Vec<Cidr>,
    pub(crate) include_text: String,
    pub(crate) exclude_text: String,
}

/// `-i` / `ISTIO_SERVICE_CIDR` and `-x` / `ISTIO_SERVICE_EXCLUDE_CIDR` (which cannot be `*`).
pub(super) fn destinations(i: &Input) -> Result<Destinations> {
    let f = i.flags;
    let include_src = i.pick(&f.service_cidr, "istio-service-cidr", Some("ISTIO_SERVICE_CIDR"), None)?;
    let include = match &include_src {
        None => CidrSelection::List(Vec::new()),
        Some(s) if s.text.trim() == "*" => CidrSelection::All,
        Some(s) => CidrSelection::List(s.list(Cidr::parse)?),
    };
    let exclude_src = i.pick(
        &f.service_exclude_cidr,
        "istio-service-exclude-cidr",
        Some("ISTIO_SERVICE_EXCLUDE_CIDR"),
        None,
    )?;
    let exclude = match &exclude_src {
        Some(s) if s.text.trim() == "*" => {
            return Err(Error::invalid(
                &s.source,
                &s.text,
                "'*' cannot be excluded (it would disable all outbound capture; use an empty --istio-service-cidr)",
            ));
        }
        Some(s) => s.list(Cidr::parse)?,
        None => Vec::new(),
    };
    Ok(Destinations {
        include,
        exclude,
        include_text: text_of(&include_src),
        exclude_text: text_of(&exclude_src),
    })
}

/// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`: an IPv4 loopback prefix with a mask in [8, 32], host
/// bits kept (default `127.0.0.1/32`).
pub(super) fn loopback_v4(i: &Input) -> Result<Cidr> {
    let Some(s) = i.env_only("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR")? else {
        return Ok(Cidr::host(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    };
    s.parse(|t| {
        let c = Cidr::parse(t)?;
        match c.addr() {
            IpAddr::V4(a) if a.is_loopback() => {}
            a => {
                return Err(Invalid::new(format!(
                    "expected an IPv4 loopback address (127.0.0.0/8), found {a}"
                )));
            }
        }
        if !(8..=32).contains(&c.prefix_len()) {
            return Err(Invalid::new(format!(
                "expected a mask in [8, 32], found {}",
                c.prefix_len()
            )));
        }
        Ok(c)
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::cfg;
    use crate::cli::CaptureFlags;

    #[test]
    fn all_destinations_cannot_be_excluded() {
        let flags = CaptureFlags {
            service_exclude_cidr: Some("*".into()),
            ..Default::default()
        };
        let e = cfg(flags, &[]).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid value '*' for '--istio-service-exclude-cidr'"),
            "{e}"
        );
    }

    #[test]
    fn the_loopback_prefix_is_ipv4_loopback() {
        assert_eq!(
            cfg(CaptureFlags::default(), &[]).unwrap().loopback_v4.to_string(),
            "127.0.0.1/32"
        );
        let ok = cfg(
            CaptureFlags::default(),
            &[("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1/8")],
        );
        assert_eq!(ok.unwrap().loopback_v4.to_string(), "127.0.0.1/8");
        for (bad, why) in [("10.0.0.1/8", "loopback"), ("127.0.0.1/7", "mask")] {
            let e = cfg(CaptureFlags::default(), &[("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", bad)]).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
    }
}
