//! Renderers of the model. Each backend's spelling lives in its own module.

pub mod iptables;
pub mod json;
pub mod nft;
