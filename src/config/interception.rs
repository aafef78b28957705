//! How inbound traffic is intercepted (`-m`): REDIRECT (nat) or TPROXY (mangle), with the
//! TPROXY mark (`-t`) and policy-routing table (`-r`).

use super::OUTBOUND_MARK;
use super::source::Input;
use crate::error::Result;
use crate::values::{Invalid, Mark, RouteTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InterceptionMode {
    Redirect,
    Tproxy,
}

/// The interception settings.
pub(super) struct Interception {
    pub(crate) mode: InterceptionMode,
    /// The mode text as given (Istio prints it in its config dump).
    pub(crate) mode_text: String,
    pub(crate) tproxy_mark: Mark,
    pub(crate) tproxy_route_table: RouteTable,
}

/// `-m` / `ISTIO_INBOUND_INTERCEPTION_MODE`, `-t` / `ISTIO_INBOUND_TPROXY_MARK` (1337) and
/// `-r` / `ISTIO_INBOUND_TPROXY_ROUTE_TABLE` (133).
pub(super) fn interception(i: &Input) -> Result<Interception> {
    let f = i.flags;
    // Only REDIRECT (or empty) and TPROXY; Istio treats any other text as REDIRECT, meshcap
    // refuses it.
    let mode_src = i.pick(
        &f.interception_mode,
        "istio-inbound-interception-mode",
        Some("ISTIO_INBOUND_INTERCEPTION_MODE"),
        None,
    )?;
    let mode_text = mode_src.as_ref().map(|s| s.text.clone()).unwrap_or_default();
    let mode = match &mode_src {
        None => InterceptionMode::Redirect,
        Some(s) => s.parse(|t| match t {
            "" | "REDIRECT" => Ok(InterceptionMode::Redirect),
            "TPROXY" => Ok(InterceptionMode::Tproxy),
            _ => Err(Invalid::new("expected REDIRECT or TPROXY (exact, upper case)")),
        })?,
    };
    let tproxy_mark = match i.pick(
        &f.tproxy_mark,
        "istio-inbound-tproxy-mark",
        Some("ISTIO_INBOUND_TPROXY_MARK"),
        None,
    )? {
        Some(s) => s.parse(|t| {
            let m = Mark::parse(t)?;
            if m.0 == 0 || m == OUTBOUND_MARK {
                return Err(Invalid::new(
                    "the TPROXY mark cannot be 0 (it would match every packet) or 1338 (the outbound mark)",
                ));
            }
            Ok(m)
        })?,
        None => Mark(1337),
    };
    let tproxy_route_table = match i.pick(
        &f.tproxy_route_table,
        "istio-inbound-tproxy-route-table",
        Some("ISTIO_INBOUND_TPROXY_ROUTE_TABLE"),
        None,
    )? {
        Some(s) => s.parse(RouteTable::parse)?,
        None => RouteTable(133),
    };
    Ok(Interception {
        mode,
        mode_text,
        tproxy_mark,
        tproxy_route_table,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::cfg;
    use super::*;
    use crate::cli::CaptureFlags;

    #[test]
    fn only_the_exact_mode_names() {
        let mode = |m: &str| {
            let flags = CaptureFlags {
                interception_mode: Some(m.into()),
                ..Default::default()
            };
            cfg(flags, &[]).map(|c| c.mode)
        };
        assert_eq!(mode("TPROXY").unwrap(), InterceptionMode::Tproxy);
        assert_eq!(mode("").unwrap(), InterceptionMode::Redirect);
        assert_eq!(
            mode("tproxy").unwrap_err().to_string(),
            "invalid value 'tproxy' for '--istio-inbound-interception-mode': expected REDIRECT or TPROXY \
             (exact, upper case)"
        );
    }

    #[test]
    fn the_mark_is_neither_0_nor_the_outbound_mark() {
        assert_eq!(cfg(CaptureFlags::default(), &[]).unwrap().tproxy_mark, Mark(1337));
        for bad in ["0", "1338"] {
            let e = cfg(CaptureFlags::default(), &[("ISTIO_INBOUND_TPROXY_MARK", bad)]).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid value '{bad}' for 'ISTIO_INBOUND_TPROXY_MARK'")),
                "{e}"
            );
        }
    }
}
