//! meshcap's integration tests: one binary that runs the built `meshcap`.
//!
//! Modules that touch netfilter, routes or addresses do so only inside network namespaces they
//! create through [`support::Netns`], which deletes them on drop (also when a test fails).
//! Shared helpers (the library imports, running the binary, namespaces, flag sets) live in
//! [`support`]; the traffic lab's agent processes are the `lab_agent` example binary.

mod apply;
mod audit;
mod backend_conflict;
mod backend_routes;
mod check_netns;
mod compact_equivalence;
mod docs;
mod dry_run;
mod dry_run_file;
mod from_pod_spec;
mod golden;
mod hardening;
mod hostile_cleanup;
mod hostile_interrupt;
mod hostile_limits;
mod hostile_reads;
mod lab;
mod license;
mod names;
mod nft_apply;
mod nft_decode;
mod nft_from_ir;
mod nft_netlink;
mod nft_render;
mod packaging;
mod props;
mod roundtrip;
mod support;
mod tracer_vs_kernel;
mod traffic;
mod validation;
