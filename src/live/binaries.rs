//! Which iptables binaries to use per family (istio-compat §5.1), with as few processes as correctness
//! allows and without Istio's legacy pollution (§10.2 item 1).
//!
//! Istio probes every candidate with `B-save`, `B-save --version` and a rule added to and
//! deleted from the `nat` table; that test instantiates the legacy `nat` table, so the next run
//! sees "existing rules" and picks legacy even when the rules are in nft. meshcap asks the
//! kernel instead: the legacy tables that exist are listed in `/proc/net/ip_tables_names`
//! (reading it creates nothing) and the nft tables come from one netlink dump. Legacy is chosen
//! when it holds real rules (an `-A` line or a user chain in `B-legacy-save`, which only runs
//! when a legacy table exists); otherwise nft when the binary is installed and the kernel has
//! nf_tables; otherwise the plain name. A fresh namespace costs no process at all here.

use std::path::Path;

use crate::config::IptablesVariant;
use crate::error::{Error, Result};
use crate::sys::exec::{Cmd, System};
use crate::sys::kernel::Kernel;
use crate::values::Family;

/// One family's chosen binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binaries {
    pub(crate) family: Family,
    /// `iptables-nft`, `ip6tables-legacy`, `iptables`, …
    pub(crate) base: String,
    pub(crate) variant: IptablesVariant,
    /// `(major, minor, patch)` when known.
    pub(crate) version: Option<(u32, u32, u32)>,
}

/// `iptables` or `ip6tables`.
pub(crate) fn prefix(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

impl Binaries {
    pub(crate) fn of(family: Family, variant: IptablesVariant) -> Binaries {
        Binaries {
            family,
            base: format!("{}-{}", prefix(family), variant.name()),
            variant,
            version: None,
        }
    }

    /// The plain names (`iptables-restore`, …), as Istio's dry-run prints them.
    pub(crate) fn plain(family: Family) -> Binaries {
        Binaries {
            family,
            base: prefix(family).to_string(),
            variant: IptablesVariant::Nft,
            version: None,
        }
    }

    pub(crate) fn save(&self) -> String {
        format!("{}-save", self.base)
    }

    pub(crate) fn restore(&self) -> String {
        format!("{}-restore", self.base)
    }

    /// Legacy takes the xtables lock from 1.6.2 on (waiting up to `secs`); nft needs none.
    pub(crate) fn wait_flag(&self, secs: u32) -> Option<String> {
        match (self.variant, self.version) {
            (IptablesVariant::Legacy, Some(v)) if v >= (1, 6, 2) => Some(format!("--wait={secs}")),
            _ => None,
        }
    }

    /// Whether a pod-scoped lock file (`XTABLES_LOCKFILE`) is honoured (legacy ≥ 1.8.6).
    pub(crate) fn lockfile_env(&self) -> bool {
        self.variant == IptablesVariant::Legacy && self.version.is_some_and(|v| v >= (1, 8, 6))
    }
}

/// The first `vX.Y[.Z]` in `text` (a `--version` line or a save header).
pub(crate) fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('v') {
        let rest = &text[i + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let nums: Vec<u32> = rest[..end].split('.').map_while(|p| p.parse().ok()).collect();
        if nums.len() >= 2 && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            return Some((nums[0], nums[1], nums.get(2).copied().unwrap_or(0)));
        }
    }
    None
}

/// Whether a save output holds real rules: an `-A` line or a user-defined chain. Policy lines
/// of an instantiated but empty table (what Istio's probe leaves behind) do not count.
pub(crate) fn holds_rules(save: &str) -> bool {
    save.lines()
        .any(|l| l.starts_with("-A ") || (l.starts_with(':') && l.split_whitespace().nth(1) == Some("-")))
}

/// A family's selection, with the save output read on the way (if any).
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    pub(crate) bins: Binaries,
    /// `B-legacy-save` output read while choosing (legacy tables existed).
    pub(crate) legacy_save: Option<String>,
}

fn missing(family: Family, base: &str, why: &str) -> Error {
    Error::NoIptables {
        kind: prefix(family).to_string(),
        base: base.to_string(),
        why: why.to_string(),
    }
}

/// Chooses the binaries of `family`.
pub(crate) fn select(
    sys: &dyn System,
    kernel: &dyn Kernel,
    family: Family,
    forced: Option<IptablesVariant>,
    netns: Option<&Path>,
) -> Result<Choice> {
    let p = prefix(family);
    let legacy = Binaries::of(family, IptablesVariant::Legacy);
    let nft = Binaries::of(family, IptablesVariant::Nft);
    let read_legacy = || -> Result<Option<String>> {
        if kernel.legacy_tables(family).is_empty() {
            return Ok(None);
        }
        if !sys.has_program(&legacy.save()) {
            tracing::warn!(
                "legacy {} tables exist but {} is not installed: rules there cannot be checked",
                family,
                legacy.save()
            );
            return Ok(None);
        }
        let out = sys.run(&Cmd::new(legacy.save(), [""; 0]).netns(netns))?;
        Ok(out.success().then_some(out.stdout))
    };
    let with_version = |mut bins: Binaries, save: &Option<String>| -> Result<Binaries> {
        bins.version = save.as_deref().and_then(parse_version);
        if bins.variant == IptablesVariant::Legacy && bins.version.is_none() {
            // Only when no legacy table exists yet (no save header to read it from).
            let out = sys.run(&Cmd::new(bins.save(), ["--version"]))?;
            bins.version = if out.stderr.contains("unrecognized option") || !out.success() {
                Some((0, 0, 0))
            } else {
                parse_version(&out.stdout)
            };
        }
        Ok(bins)
    };
    let nft_usable = || sys.has_program(&nft.restore()) && sys.has_program(&nft.save());
    match forced {
        Some(IptablesVariant::Legacy) => {
            if !sys.has_program(&legacy.restore()) || !sys.has_program(&legacy.save()) {
                return Err(missing(
                    family,
                    &legacy.base,
                    "not installed (--force-iptables-binary=legacy)",
                ));
            }
            let save = read_legacy()?;
            Ok(Choice {
                bins: with_version(legacy, &save)?,
                legacy_save: save,
            })
        }
        Some(IptablesVariant::Nft) => {
            if !nft_usable() {
                return Err(missing(
                    family,
                    &nft.base,
                    "not installed (--force-iptables-binary=nft)",
                ));
            }
            if kernel.nft_tables(family).is_none() {
                return Err(missing(family, &nft.base, "the kernel has no nf_tables support"));
            }
            Ok(Choice {
                bins: nft,
                legacy_save: read_legacy()?,
            })
        }
        None => {
            let save = read_legacy()?;
            if save.as_deref().is_some_and(holds_rules) {
                tracing::debug!("found existing rules for {}", legacy.save());
                return Ok(Choice {
                    bins: with_version(legacy, &save)?,
                    legacy_save: save,
                });
            }
            if nft_usable() && kernel.nft_tables(family).is_some() {
                return Ok(Choice {
                    bins: nft,
                    legacy_save: save,
                });
            }
            let plain = Binaries::plain(family);
            if !sys.has_program(&plain.restore()) {
                return Err(missing(
                    family,
                    p,
                    &format!("none of {}, {} and {} is usable", legacy.base, nft.base, p),
                ));
            }
            let out = sys.run(&Cmd::new(plain.save(), ["--version"]))?;
            let variant = if out.stdout.contains("nf_tables") {
                IptablesVariant::Nft
            } else {
                IptablesVariant::Legacy
            };
            Ok(Choice {
                bins: Binaries {
                    variant,
                    version: parse_version(&out.stdout).or(Some((0, 0, 0))),
                    ..plain
                },
                legacy_save: save,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("iptables-save v1.8.9 (legacy)"), Some((1, 8, 9)));
        assert_eq!(
            parse_version("# Generated by iptables-save v1.6.1 on Sat"),
            Some((1, 6, 1))
        );
        assert_eq!(parse_version("nothing here"), None);
        let b = Binaries {
            version: Some((1, 6, 2)),
            ..Binaries::of(Family::V4, IptablesVariant::Legacy)
        };
        assert_eq!(b.wait_flag(30).as_deref(), Some("--wait=30"));
        assert!(!b.lockfile_env());
        assert_eq!(Binaries::of(Family::V6, IptablesVariant::Nft).wait_flag(30), None);
        assert_eq!(
            Binaries::of(Family::V6, IptablesVariant::Nft).restore(),
            "ip6tables-nft-restore"
        );
    }

    #[test]
    fn empty_tables_are_not_rules() {
        let polluted = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";
        assert!(!holds_rules(polluted));
        assert!(holds_rules("*nat\n:X - [0:0]\nCOMMIT\n"));
        assert!(holds_rules("*nat\n-A OUTPUT -j RETURN\nCOMMIT\n"));
    }
}
