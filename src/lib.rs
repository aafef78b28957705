//! meshcap: the traffic capture of a service-mesh sidecar, as a typed rule model.
//!
//! argv + env → [`cli`] → [`config::Config`] → [`plan::Plan`] → codecs ([`iptables`], [`nft`],
//! [`json`]) / [`trace`] / [`drift`] / [`live`] / [`apply`]. The layers and their one-way order
//! are in `docs/architecture.md`.

pub mod app;
pub mod apply;
pub mod audit;
pub mod check;
pub mod cli;
pub mod config;
pub mod drift;
pub mod error;
pub mod iptables;
pub mod json;
pub mod live;
pub mod logging;
pub mod model;
pub mod nft;
pub mod plan;
pub mod probe;
pub mod speed;
pub mod sys;
pub mod trace;
pub mod values;

#[cfg(test)]
mod architecture_tests;
