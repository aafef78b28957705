//! `nft -j list ruleset` JSON → meshcap's nftables state (`nft::listing`, the reader both
//! `check --native-nftables` and the nft apply backend use) → drift against a fixed plan.
//! Properties: no panic; a parsed state written back in nft's JSON layout parses to the same
//! state (unknown rules' raw text aside, see `shape`); a state without unknown rules (no canonical key) and objects (which meshcap never
//! plans, so they are always drift) has no drift against itself.
#![no_main]

use std::sync::OnceLock;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use meshcap::drift::nft::{compare, key};
use meshcap::nft::ir::{NftState, planned};
use meshcap::nft::listing::{listing_json, parse_listing};
use meshcap::cli::{Cli, Command};
use meshcap::sys::host::Env;
use meshcap::trace::Ids;

/// The state a TPROXY + DNS + drop-invalid configuration with IPv6 leaves (every table).
fn plan_state() -> &'static NftState {
    static PLANNED: OnceLock<NftState> = OnceLock::new();
    PLANNED.get_or_init(|| {
        let argv = [
            "meshcap", "render", "--native-nftables", "--ipv6", "-m", "TPROXY", "-b", "*", "-i", "*",
            "--drop-invalid", "--redirect-dns", "--capture-all-dns", "-c", "veth+",
        ];
        let Ok(cli) = Cli::try_parse_from(argv) else { panic!("argv") };
        let Some(Command::Render(args)) = cli.command else { panic!("render") };
        let (_, plan) = meshcap::plan::for_render(&args, &Env::default()).expect("plan");
        planned(&meshcap::nft::lower::apply_transaction(&plan).expect("transaction"))
    })
}

/// A state with unknown rules reduced to "unknown": their raw JSON text may come back with a
/// float printed one ulp apart (serde_json's float parsing is not exactly round-trip; nft
/// never lists floats), everything else must be identical.
fn shape(rs: &NftState) -> NftState {
    let mut out = rs.clone();
    for c in out.chains.values_mut() {
        for r in &mut c.rules {
            if r.stmts.is_err() {
                r.stmts = Err("unknown".into());
                r.text = "unknown".into();
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(live) = parse_listing(text) else { return };
    let again = parse_listing(&listing_json(&live)).expect("written state parses");
    assert_eq!(shape(&again), shape(&live));
    let ids = Ids::default();
    // Rules without a canonical key (not understood, or beyond the model) never match.
    let unknown = !live.objects.is_empty()
        || live.chains.values().any(|c| {
            c.rules
                .iter()
                .any(|r| r.stmts.as_ref().ok().and_then(|s| key(s, &ids)).is_none())
        });
    if !unknown {
        let d = compare(&live, &live, &ids);
        assert!(d.is_clean(), "{}", d.lines());
    }
    let d = compare(plan_state(), &live, &ids);
    let _ = (d.lines(), d.summary());
    let _ = compare(&live, plan_state(), &ids).lines();
});
