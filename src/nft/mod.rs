//! nftables: one IR ([`ir`]: tables, chains, rules as statements, the transaction, the state)
//! with its codecs side by side: [`lower`] builds the IR from the plan, `text` spells it as
//! Istio's `nft -f` transaction, [`netlink`] speaks nf_tables to the kernel (and reads its
//! dump back into the IR: the live state), and `model` reads an IR rule in the rule model's
//! terms (for the tracer and drift). `listing` (`nft -j list ruleset` JSON → IR) is no longer
//! on any product path; it stays for tests and the fuzz target (`cfg(test)` / feature
//! `fuzzing`) as a second, independent reader of the kernel's state.

pub mod ir;
#[cfg(any(test, feature = "fuzzing"))]
pub mod listing;
pub mod lower;
pub(crate) mod model;
pub mod netlink;
pub(crate) mod text;
