//! meshcap's integration tests: one binary that runs the built `meshcap`.
//!
//! Modules that touch netfilter, routes or addresses do so only inside network namespaces they
//! create through [`support::NetNs`], which deletes them on drop (also when a test fails).

mod apply;
mod audit;
mod backend_conflict;
mod backend_routes;
mod check_netns;
mod compact_equivalence;
mod docs;
mod dry_run_file;
mod from_pod_spec;
mod golden;
mod hardening;
mod lab;
mod license;
mod nft_apply;
mod nft_render;
mod packaging;
mod props;
mod roundtrip;
mod support;
mod tracer_vs_kernel;
mod traffic;
mod validation;
