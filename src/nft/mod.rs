//! nftables: the transaction IR with its text codec ([`text`], Istio's `nft -f` input) and the
//! reader of the kernel's JSON listing ([`listing`]).

pub mod listing;
pub mod model;
pub mod text;
