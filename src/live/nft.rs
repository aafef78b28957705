//! The live state of the nftables backend: which of meshcap's `inet` tables exist (asked over
//! netlink, no process) and, where one does, their rules (one `nft -j list ruleset inet`, read
//! by [`crate::nft::listing`]).

use std::path::Path;

use crate::error::{Error, Result};
use crate::nft::ir::{NftState, NftTable};
use crate::nft::listing::parse_listing;
use crate::sys::exec::{Cmd, System, run_ok};
use crate::sys::kernel::Kernel;

/// The live state of meshcap's tables in `ns`: one `nft -j list ruleset inet`.
pub(crate) fn read_listing(sys: &dyn System, ns: Option<&Path>) -> Result<NftState> {
    let cmd = Cmd::new("nft", ["-j", "list", "ruleset", "inet"]).netns(ns);
    tracing::debug!("Running command (without lock): {cmd}");
    let out = run_ok(sys, &cmd).map_err(|e| Error::exec("cannot read the live nftables ruleset", e))?;
    parse_listing(&out.stdout).map_err(|e| Error::Output {
        cmd: cmd.line(),
        err: e.into(),
    })
}

/// meshcap's `inet` tables that exist, in transaction order, when the kernel can tell without
/// a process (`None`: nf_tables unavailable or not listable, so nothing is known).
pub(crate) fn our_tables(kernel: &dyn Kernel) -> Option<Vec<NftTable>> {
    kernel.nft_inet_tables().map(|names| tables_named(&names))
}

/// meshcap's tables among the `inet` table `names`, in transaction order.
pub(crate) fn tables_named(names: &[String]) -> Vec<NftTable> {
    NftTable::ALL
        .into_iter()
        .filter(|t| names.iter().any(|n| n == t.name()))
        .collect()
}

/// The note naming the nftables backend's live tables, as the iptables backend reports them
/// (the counterpart of [`super::iptables::Residue::note`]): with both live, packets are
/// captured twice.
pub(crate) fn tables_note(tables: &[NftTable]) -> String {
    let names: Vec<&str> = tables.iter().map(|t| t.name()).collect();
    format!(
        "meshcap's istio-proxy-* tables also exist in nftables (inet): {}",
        names.join(", ")
    )
}
