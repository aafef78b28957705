//! nftables: the netlink codec (more codecs join it here as the restructure lands).

pub mod netlink;
