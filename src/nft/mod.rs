//! nftables: the transaction IR with its codecs — text ([`text`], Istio's `nft -f` input), the
//! kernel's JSON listing ([`listing`]) and nf_tables netlink ([`netlink`]) — and an nft rule in
//! the model's terms ([`model`]).

pub mod listing;
pub mod model;
pub mod netlink;
pub mod text;
