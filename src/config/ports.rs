//! Port settings: the proxy's listener ports (`-p`, `-z`, `-e`), the inbound ports captured
//! (`-b`, `-d`) and the outbound ports always or never captured (`-q`, `-o`).

use super::source::{Input, list_or_empty, text_of};
use crate::error::Result;
use crate::values::{Port, PortSpec};

/// `-b`: all inbound ports, or a list (empty: no inbound capture).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortSelection {
    All,
    List(Vec<PortSpec>),
}

impl PortSelection {
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, PortSelection::List(l) if l.is_empty())
    }
}

/// The proxy's listener ports.
pub(super) struct ProxyPorts {
    /// `-p`: the outbound listener (15001). No environment variable: `ENVOY_PORT` is only
    /// echoed (`docs/istio-compat.md §1.6`).
    pub(crate) proxy: Port,
    /// `-z` / `INBOUND_CAPTURE_PORT`: the inbound listener (15006).
    pub(crate) inbound_capture: Port,
    /// `-e` / `INBOUND_TUNNEL_PORT`: the tunnel (HBONE) port, never captured (15008).
    pub(crate) inbound_tunnel: Port,
}

pub(super) fn proxy_ports(i: &Input) -> Result<ProxyPorts> {
    let port = |flag: &Option<String>, long: &str, primary: Option<&str>, default: u16| -> Result<Port> {
        match i.pick(flag, long, primary, None)? {
            Some(s) => s.parse(Port::parse),
            None => Ok(Port::new_const(default)),
        }
    };
    let f = i.flags;
    Ok(ProxyPorts {
        proxy: port(&f.envoy_port, "envoy-port", None, 15001)?,
        inbound_capture: port(
            &f.inbound_capture_port,
            "inbound-capture-port",
            Some("INBOUND_CAPTURE_PORT"),
            15006,
        )?,
        inbound_tunnel: port(
            &f.inbound_tunnel_port,
            "inbound-tunnel-port",
            Some("INBOUND_TUNNEL_PORT"),
            15008,
        )?,
    })
}

/// The inbound ports captured, and their raw text for the config dump.
pub(super) struct InboundPorts {
    pub(crate) ports: PortSelection,
    /// `-d`: excluded from capture, only with `-b '*'`.
    pub(crate) exclude: Vec<PortSpec>,
    pub(crate) ports_text: String,
    pub(crate) exclude_text: String,
}

/// `-b` / `ISTIO_INBOUND_PORTS` and `-d` / `ISTIO_LOCAL_EXCLUDE_PORTS`; a note when `-d` is
/// given without `-b '*'` (ignored, as in Istio).
pub(super) fn inbound_ports(i: &mut Input) -> Result<InboundPorts> {
    let f = i.flags;
    let ports_src = i.pick(
        &f.inbound_ports,
        "istio-inbound-ports",
        Some("ISTIO_INBOUND_PORTS"),
        None,
    )?;
    let ports = match &ports_src {
        None => PortSelection::List(Vec::new()),
        Some(s) if s.text.trim() == "*" => PortSelection::All,
        Some(s) => PortSelection::List(s.list(PortSpec::parse)?),
    };
    let exclude_src = i.pick(
        &f.local_exclude_ports,
        "istio-local-exclude-ports",
        Some("ISTIO_LOCAL_EXCLUDE_PORTS"),
        None,
    )?;
    let exclude = list_or_empty(&exclude_src, PortSpec::parse)?;
    if !exclude.is_empty() && ports != PortSelection::All {
        i.warn("--istio-local-exclude-ports only applies with --istio-inbound-ports '*'; ignored");
    }
    Ok(InboundPorts {
        ports,
        exclude,
        ports_text: text_of(&ports_src),
        exclude_text: text_of(&exclude_src),
    })
}

/// The outbound ports always (`-q`) and never (`-o`) captured, and their raw text.
pub(super) struct OutboundPorts {
    pub(crate) include: Vec<PortSpec>,
    pub(crate) exclude: Vec<PortSpec>,
    pub(crate) include_text: String,
    pub(crate) exclude_text: String,
}

/// `-q` / `ISTIO_OUTBOUND_PORTS` and `-o` / `ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE`.
pub(super) fn outbound_ports(i: &Input) -> Result<OutboundPorts> {
    let f = i.flags;
    let include_src = i.pick(
        &f.outbound_ports,
        "istio-outbound-ports",
        Some("ISTIO_OUTBOUND_PORTS"),
        None,
    )?;
    let include = list_or_empty(&include_src, PortSpec::parse)?;
    let exclude_src = i.pick(
        &f.local_outbound_ports_exclude,
        "istio-local-outbound-ports-exclude",
        Some("ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE"),
        None,
    )?;
    let exclude = list_or_empty(&exclude_src, PortSpec::parse)?;
    Ok(OutboundPorts {
        include,
        exclude,
        include_text: text_of(&include_src),
        exclude_text: text_of(&exclude_src),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::cfg;
    use super::*;
    use crate::cli::CaptureFlags;

    #[test]
    fn defaults_and_environment() {
        let c = cfg(CaptureFlags::default(), &[]).unwrap();
        assert_eq!(
            [c.proxy_port, c.inbound_capture_port, c.inbound_tunnel_port].map(Port::get),
            [15001, 15006, 15008]
        );
        assert_eq!(c.inbound_ports, PortSelection::List(vec![]));
        let c = cfg(
            CaptureFlags::default(),
            &[("INBOUND_TUNNEL_PORT", "15009"), ("ISTIO_INBOUND_PORTS", " * ")],
        )
        .unwrap();
        assert_eq!(c.inbound_tunnel_port.get(), 15009);
        assert_eq!(c.inbound_ports, PortSelection::All);
        assert_eq!(c.dump.inbound_ports, " * ");
    }

    #[test]
    fn a_bad_port_names_its_flag_and_item() {
        let flags = CaptureFlags {
            inbound_ports: Some("80,x".into()),
            ..Default::default()
        };
        let e = cfg(flags, &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid value 'x' for '--istio-inbound-ports': expected a port in decimal digits"
        );
    }

    #[test]
    fn excluded_inbound_ports_need_all_ports() {
        let flags = CaptureFlags {
            inbound_ports: Some("80".into()),
            local_exclude_ports: Some("22".into()),
            ..Default::default()
        };
        let c = cfg(flags, &[]).unwrap();
        assert_eq!(
            c.warnings,
            ["--istio-local-exclude-ports only applies with --istio-inbound-ports '*'; ignored"]
        );
        let c = cfg(
            CaptureFlags::default(),
            &[("ISTIO_INBOUND_PORTS", "*"), ("ISTIO_LOCAL_EXCLUDE_PORTS", "22")],
        )
        .unwrap();
        assert!(c.warnings.is_empty());
        assert_eq!(c.inbound_exclude_ports.len(), 1);
    }
}
