//! The live iptables state of a namespace, read exactly as apply reads it before deciding —
//! and as `check` reads it, so that `check` answers "would apply find drift?": per family the
//! variant apply would use ([`super::binaries`]), one `<variant>-save` only where the kernel
//! lists a table, and the other variant's dump when it holds meshcap's chains too.

use std::path::Path;

use crate::config::IptablesVariant;
use crate::error::{Error, Result};
use crate::iptables::parse::{SaveDump, Strictness, parse_save};
use crate::sys::exec::{Cmd, System, run_ok};
use crate::sys::kernel::Kernel;
use crate::values::Family;

use super::binaries::{Binaries, parse_version, prefix, select};

/// One family's live state in the variant apply would use.
#[derive(Debug, Clone)]
pub(crate) struct LiveFamily {
    /// The binaries apply would use (and whose save was read).
    pub(crate) bins: Binaries,
    /// The save output read ("" when the variant had no table).
    pub(crate) before: String,
    pub(crate) live: SaveDump,
    /// Another variant that holds meshcap's rules too: its binaries, save output and dump.
    pub(crate) others: Vec<(Binaries, String, SaveDump)>,
}

/// meshcap's iptables rules (the iptables backend's `ISTIO_*` chains) found in one family and
/// variant, where the nftables backend looks: with both backends live, packets would be
/// captured twice.
#[derive(Debug, Clone)]
pub(crate) struct Residue {
    pub(crate) bins: Binaries,
    pub(crate) dump: SaveDump,
}

impl Residue {
    /// The note the nftables backend logs and reports for this residue.
    pub(crate) fn note(&self) -> String {
        let chains: Vec<String> = self
            .dump
            .istio_chains()
            .into_iter()
            .map(|(t, c)| format!("{t}/{c}"))
            .collect();
        format!(
            "meshcap's ISTIO_* chains also exist in the {} tables ({}): {}",
            self.bins.base,
            self.bins.family,
            chains.join(", ")
        )
    }
}

/// Reads iptables state in one namespace (`ns`; `None` is the current one).
pub(crate) struct Reader<'a> {
    pub(crate) sys: &'a dyn System,
    pub(crate) kernel: &'a dyn Kernel,
    /// `--force-iptables-binary`.
    pub(crate) force: Option<IptablesVariant>,
    pub(crate) ns: Option<&'a Path>,
}

impl Reader<'_> {
    pub(crate) fn save(&self, bins: &Binaries) -> Result<String> {
        let cmd = Cmd::new(bins.save(), [""; 0]).netns(self.ns);
        tracing::debug!("Running command (without lock): {cmd}");
        run_ok(self.sys, &cmd)
            .map(|o| o.stdout)
            .map_err(|e| Error::exec(format!("cannot read the live {} rules", bins.family), e))
    }

    pub(crate) fn parse(&self, bins: &Binaries, text: &str) -> Result<SaveDump> {
        parse_save(text, Strictness::Lenient).map_err(|e| Error::Output {
            cmd: bins.save(),
            err: e.into(),
        })
    }

    /// Whether the kernel lists any of `family`'s tables for `variant` (no process).
    pub(crate) fn has_tables(&self, family: Family, variant: IptablesVariant) -> bool {
        match variant {
            IptablesVariant::Legacy => !self.kernel.legacy_tables(family).is_empty(),
            IptablesVariant::Nft => self.kernel.nft_tables(family).is_some_and(|t| !t.is_empty()),
        }
    }

    /// Whether any of the four tables exists for `family` in either variant.
    fn any_tables(&self, family: Family) -> bool {
        self.has_tables(family, IptablesVariant::Legacy) || self.has_tables(family, IptablesVariant::Nft)
    }

    /// Chooses the binaries and reads the live state of `family`. `None` when the family is
    /// off and no usable binary exists (a warning is logged) or nothing can be there.
    pub(crate) fn read_family(&self, family: Family, enabled: bool) -> Result<Option<LiveFamily>> {
        if !enabled && !self.any_tables(family) {
            return Ok(None);
        }
        let choice = match select(self.sys, self.kernel, family, self.force, self.ns) {
            Ok(c) => c,
            Err(e) if !enabled && family == Family::V6 => {
                tracing::warn!(
                    "Failed to detect a working ip6tables binary; continuing because IPv6 support is disabled (ENABLE_INBOUND_IPV6=false): {e}"
                );
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let bins = choice.bins;
        let plain = bins.base == prefix(family);
        let before = if plain {
            self.save(&bins)?
        } else {
            match bins.variant {
                IptablesVariant::Legacy => choice.legacy_save.clone().unwrap_or_default(),
                IptablesVariant::Nft if self.kernel.nft_tables(family).is_some_and(|t| !t.is_empty()) => {
                    self.save(&bins)?
                }
                IptablesVariant::Nft => String::new(),
            }
        };
        let live = self.parse(&bins, &before)?;
        let mut others = Vec::new();
        if !plain {
            let other = match bins.variant {
                IptablesVariant::Legacy => {
                    let nft = Binaries::of(family, IptablesVariant::Nft);
                    let has = self.kernel.nft_tables(family).is_some_and(|t| !t.is_empty());
                    if has && self.sys.has_program(&nft.save()) {
                        let text = self.save(&nft)?;
                        Some((nft, text))
                    } else {
                        None
                    }
                }
                IptablesVariant::Nft => choice
                    .legacy_save
                    .clone()
                    .map(|text| (Binaries::of(family, IptablesVariant::Legacy), text)),
            };
            if let Some((mut ob, text)) = other {
                let dump = self.parse(&ob, &text)?;
                if dump.has_istio_state() {
                    ob.version = parse_version(&text);
                    others.push((ob, text, dump));
                }
            }
        }
        Ok(Some(LiveFamily {
            bins,
            before,
            live,
            others,
        }))
    }

    /// The iptables backend's rules, looked for only in the iptables tables the kernel lists
    /// (a fresh pod costs no process): what the nftables backend treats as the other backend.
    pub(crate) fn residue(&self) -> Result<Vec<Residue>> {
        let mut out = Vec::new();
        for family in Family::ALL {
            for variant in [IptablesVariant::Legacy, IptablesVariant::Nft] {
                if !self.has_tables(family, variant) {
                    continue;
                }
                let mut bins = Binaries::of(family, variant);
                if !self.sys.has_program(&bins.save()) {
                    tracing::warn!(
                        "{} tables exist but {} is not installed: meshcap's iptables rules there cannot be checked",
                        variant.name(),
                        bins.save()
                    );
                    continue;
                }
                let cmd = Cmd::new(bins.save(), [""; 0]).netns(self.ns);
                tracing::debug!("Running command (without lock): {cmd}");
                let text = run_ok(self.sys, &cmd)
                    .map_err(|e| Error::exec(format!("cannot read the live {family} iptables rules"), e))?
                    .stdout;
                let dump = parse_save(&text, Strictness::Lenient).map_err(|e| Error::Output {
                    cmd: bins.save(),
                    err: e.into(),
                })?;
                if dump.has_istio_state() {
                    bins.version = parse_version(&text);
                    out.push(Residue { bins, dump });
                }
            }
        }
        Ok(out)
    }
}
