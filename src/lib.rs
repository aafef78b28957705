//! meshcap: the traffic capture of a service-mesh sidecar, as a typed rule model.
//!
//! argv + env → [`cli`] → [`config::Config`] → [`plan::Plan`] → renderers ([`render`]).

pub mod app;
pub mod apply;
pub mod check;
pub mod cli;
pub mod compact;
pub mod config;
pub mod docs;
pub mod drift;
pub mod error;
pub mod exec;
pub mod host;
pub mod kernel;
pub mod logging;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod outfile;
pub mod parse;
pub mod plan;
pub mod render;
pub mod routes;
pub mod trace;
pub mod validate;
pub mod values;
