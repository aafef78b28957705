//! nftables: one IR ([`ir`]: tables, chains, rules as statements, the transaction, the state)
//! with its codecs side by side: [`lower`] builds the IR from the plan, [`text`] spells it as
//! Istio's `nft -f` transaction, [`listing`] reads the kernel's JSON listing into it,
//! [`netlink`] speaks nf_tables to the kernel, and [`model`] reads an IR rule in the rule
//! model's terms (for the tracer and drift).

pub mod ir;
pub mod listing;
pub mod lower;
pub(crate) mod model;
pub mod netlink;
pub(crate) mod text;
