//! The live state of the nftables backend: which of meshcap's `inet` tables exist and what
//! they hold, both asked over netlink with no process: the tables from the kernel seam
//! ([`Kernel::nft_inet_tables`]), the whole state from one nf_tables dump of the `inet`
//! family ([`read_state`]: tables, chains, sets with their elements, rules) read into the IR
//! by [`crate::nft::netlink::to_ir`].

use crate::error::{Error, Result};
use crate::nft::ir::{NftState, NftTable};
use crate::nft::netlink::msg::NFPROTO_INET;
use crate::nft::netlink::{Socket, socket, to_ir};
use crate::sys::kernel::Kernel;
use crate::sys::netns::{self, Netns};

/// Where apply reads the live nftables state from: the kernel ([`Netlink`]), or a fixed state
/// in the apply flow's unit tests.
pub(crate) trait NftReader {
    fn read(&self) -> Result<NftState>;
}

/// The kernel of `netns` (this namespace without one), over netlink.
pub(crate) struct Netlink<'a> {
    pub(crate) netns: Option<&'a Netns>,
}

impl NftReader for Netlink<'_> {
    fn read(&self) -> Result<NftState> {
        read_state(self.netns)
    }
}

/// The live state of meshcap's tables in `netns`: one dump of the `inet` family over a
/// `NETLINK_NETFILTER` socket opened inside the namespace. Everything in meshcap's tables that
/// the decoder does not understand is in the state, as drift.
pub(crate) fn read_state(netns: Option<&Netns>) -> Result<NftState> {
    let dumped = netns::within(netns, || {
        Socket::open()
            .map_err(socket::Error::Io)
            .and_then(|mut s| s.ruleset(NFPROTO_INET))
    })?;
    let rs = dumped.map_err(|e| Error::system("cannot read the live nftables ruleset", e))?;
    tracing::debug!(
        "Read the nftables ruleset over netlink: {} table(s), {} chain(s), {} rule(s), {} set(s)",
        rs.tables.len(),
        rs.chains.len(),
        rs.rules.len(),
        rs.sets.len()
    );
    Ok(to_ir::decode(&rs))
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
