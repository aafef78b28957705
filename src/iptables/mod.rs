//! The iptables grammar both ways: [`render`] spells the model as iptables-restore payloads
//! and rule texts; [`parse`] reads iptables-save output back into the model.

pub mod parse;
pub mod render;
