//! Reading a namespace's current capture state, for both backends: what `apply` compares
//! before it writes and what `check` reports. One reader, so the two can never disagree.
//!
//! [`binaries`] chooses the iptables variant per family; [`iptables`] reads the saves;
//! [`nft`] lists meshcap's nftables tables (over netlink) and reads their rules.

pub(crate) mod binaries;
pub(crate) mod iptables;
pub mod nft;
