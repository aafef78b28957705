//! nftables over netlink: the nf_tables wire codec and a socket, so meshcap programs and reads
//! the kernel's ruleset without the `nft` binary.
//!
//! - [`attr`]: netlink attributes (TLVs), written with nesting, read without panics.
//! - [`expr`]: rule expressions (meta, payload, cmp, bitwise, immediate/verdicts, counter,
//!   redir, tproxy, ct, lookup, range) as a typed enum, encoded and decoded side by side.
//! - [`msg`]: tables, chains, rules, sets, set elements, the batch, and dump requests.
//! - [`from_ir`]: the IR's transaction lowered to the messages `nft -f` of its text sends
//!   (nft's implicit dependencies, prefix and set forms), each tied to its operation.
//! - [`socket`]: a `NETLINK_NETFILTER` socket (opened inside the target namespace) that sends
//!   one atomic batch and maps each refusal to the message that caused it, and dumps.
//! - `kernel_model` (tests and fuzzing only): what the kernel's commit of a batch leaves, as
//!   a dump reads it, for the kernel-free round trip `to_ir(commit(from_ir(tx))) == tx`.
//!
//! Constants are the kernel's uapi (`linux/netfilter/nf_tables.h`, `nfnetlink.h`,
//! `netlink.h`), written here as facts.
//!
//! Libraries: the socket is `netlink-sys` (MIT; with `bytes` and `log` it adds ~10 KiB to the
//! static binary and removes every `unsafe` from this module). The framing and attributes are
//! this module's own (~200 lines): `netlink-packet-core`'s two-pass `Emitable` does not fit
//! nested lists that must be split at 64 KiB, and it does not read extended acks.
//! `netlink-packet-netfilter` 0.4 types six of the eleven expressions meshcap needs (not
//! counter, redir, tproxy, ct, range), keeps the rest as untyped attribute lists, and would pull
//! in `derive_more` 0.99 (syn 1) and `zerocopy`'s derive for the build; a typed enum written from
//! the uapi costs less than the conversions to and from it would.

pub mod attr;
pub mod expr;
pub mod from_ir;
#[cfg(any(test, feature = "fuzzing"))]
pub mod kernel_model;
pub mod msg;
pub mod socket;
pub mod to_ir;

pub use expr::{CmpOp, CtKey, Data, Expr, MetaKey, PayloadBase, RangeOp, Register, Verdict};
pub use msg::{Batch, Chain, Dump, Hook, Message, Rule, Set, SetElem, SetElems, Table};
pub use socket::{Refusal, Ruleset, Socket};
