//! meshcap: the traffic capture of a service-mesh sidecar, as a typed rule model.
//!
//! argv + env → [`cli`] → [`config::Config`] → [`plan::Plan`] → codecs ([`iptables`], [`nft`],
//! [`json`]) / [`trace`] / [`drift`] / `live` / `apply`. The layers and their one-way order
//! are in `docs/architecture.md`.
//!
//! A citation `istio-compat §N.N` (or a bare `§N.N`) names a section of
//! `docs/istio-compat.md`, the project's account of Istio compatibility and of its deliberate
//! deviations; a unit test checks that every cited section exists.

pub mod app;
pub(crate) mod apply;
pub(crate) mod audit;
pub(crate) mod check;
pub mod cli;
pub mod config;
pub mod drift;
pub(crate) mod error;
pub mod iptables;
pub mod json;
pub(crate) mod live;
pub mod logging;
pub mod model;
pub mod nft;
pub mod plan;
pub(crate) mod probe;
pub(crate) mod speed;
pub mod sys;
pub mod trace;
pub mod values;

#[cfg(test)]
mod architecture_tests;
