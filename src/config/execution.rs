//! Where and with what the rules are applied: the network namespace (`--network-namespace`),
//! the forced iptables variant (`--force-iptables-binary`) and the xtables lock wait
//! (`MESHCAP_XTABLES_WAIT`, meshcap's own), and the most rules a plan may hold
//! (`MESHCAP_MAX_RULES`, meshcap's own; docs/security.md says how the default was chosen).

use super::IptablesVariant;
use super::source::Input;
use crate::error::Result;
use crate::values::Invalid;

/// The execution settings.
pub(super) struct Execution {
    pub(crate) network_namespace: Option<String>,
    pub(crate) force_iptables_binary: Option<IptablesVariant>,
    pub(crate) xtables_wait: u32,
    pub(crate) max_rules: u64,
}

/// The default of `MESHCAP_MAX_RULES`: the most rules one plan may hold, both families
/// together as the backend loads them (docs/security.md, "Bounded work", has the measurements).
pub(crate) const DEFAULT_MAX_RULES: u64 = 20_000;

/// `--network-namespace` / `NETWORK_NAMESPACE` (empty: the current one),
/// `--force-iptables-binary` / `FORCE_IPTABLES_BINARY` (`legacy`, `nft` or empty) and
/// `MESHCAP_XTABLES_WAIT` (1–3600 seconds, default 30 as Istio).
pub(super) fn execution(i: &Input) -> Result<Execution> {
    let f = i.flags;
    let network_namespace = match i.pick(
        &f.network_namespace,
        "network-namespace",
        Some("NETWORK_NAMESPACE"),
        None,
    )? {
        Some(s) if s.text.is_empty() => None,
        Some(s) => Some(s.parse(|t| {
            if t.contains('\0') || t.chars().any(char::is_control) {
                return Err(Invalid::new("a namespace path cannot contain control characters"));
            }
            Ok(t.to_string())
        })?),
        None => None,
    };
    let force_iptables_binary = match i.pick(
        &f.force_iptables_binary,
        "force-iptables-binary",
        Some("FORCE_IPTABLES_BINARY"),
        None,
    )? {
        None => None,
        Some(s) => s.parse(|t| match t {
            "" => Ok(None),
            "legacy" => Ok(Some(IptablesVariant::Legacy)),
            "nft" => Ok(Some(IptablesVariant::Nft)),
            _ => Err(Invalid::new("expected legacy or nft")),
        })?,
    };
    let xtables_wait = match i.env_only("MESHCAP_XTABLES_WAIT")? {
        Some(s) => s.parse(|t| match t.parse::<u32>() {
            Ok(n) if t.bytes().all(|b| b.is_ascii_digit()) && (1..=3600).contains(&n) => Ok(n),
            _ => Err(Invalid::new("expected whole seconds from 1 to 3600")),
        })?,
        None => 30,
    };
    let max_rules = match i.env_only("MESHCAP_MAX_RULES")? {
        Some(s) => s.parse(|t| match t.parse::<u64>() {
            Ok(n) if t.bytes().all(|b| b.is_ascii_digit()) && n >= 1 => Ok(n),
            _ => Err(Invalid::new("expected a whole number of rules, at least 1")),
        })?,
        None => DEFAULT_MAX_RULES,
    };
    Ok(Execution {
        network_namespace,
        force_iptables_binary,
        xtables_wait,
        max_rules,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::cfg;
    use super::*;
    use crate::cli::CaptureFlags;

    #[test]
    fn the_xtables_wait() {
        assert_eq!(cfg(CaptureFlags::default(), &[]).unwrap().xtables_wait, 30);
        let c = cfg(CaptureFlags::default(), &[("MESHCAP_XTABLES_WAIT", "2")]).unwrap();
        assert_eq!(c.xtables_wait, 2);
        for bad in ["0", "3601", "+2", "2s", "", " 2"] {
            let e = cfg(CaptureFlags::default(), &[("MESHCAP_XTABLES_WAIT", bad)]).unwrap_err();
            assert!(e.to_string().contains("'MESHCAP_XTABLES_WAIT'"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_rule_limit() {
        let default = cfg(CaptureFlags::default(), &[]).unwrap();
        assert_eq!(default.max_rules, DEFAULT_MAX_RULES);
        let c = cfg(CaptureFlags::default(), &[("MESHCAP_MAX_RULES", "5000000")]).unwrap();
        assert_eq!(c.max_rules, 5_000_000);
        let c = cfg(CaptureFlags::default(), &[("MESHCAP_MAX_RULES", "1")]).unwrap();
        assert_eq!(c.max_rules, 1);
        for bad in ["0", "-1", "+5", "1e6", "100,000", "", " 5", "99999999999999999999999"] {
            let e = cfg(CaptureFlags::default(), &[("MESHCAP_MAX_RULES", bad)]).unwrap_err();
            assert!(e.to_string().contains("'MESHCAP_MAX_RULES'"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn namespace_and_forced_binary() {
        let c = cfg(
            CaptureFlags::default(),
            &[("NETWORK_NAMESPACE", ""), ("FORCE_IPTABLES_BINARY", "nft")],
        )
        .unwrap();
        assert_eq!(c.network_namespace, None);
        assert_eq!(c.force_iptables_binary, Some(IptablesVariant::Nft));
        let flags = CaptureFlags {
            force_iptables_binary: Some("iptables".into()),
            ..Default::default()
        };
        assert_eq!(
            cfg(flags, &[]).unwrap_err().to_string(),
            "invalid value 'iptables' for '--force-iptables-binary': expected legacy or nft"
        );
    }
}
