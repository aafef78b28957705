//! `nft -j list ruleset` JSON → meshcap's nftables state → drift against a fixed plan.
//! Properties: no panic; a parsed state written back in nft's JSON layout parses to the same
//! state; the canonical form of every rule is a fixed point; a state without unknown rules and
//! objects (which meshcap never plans, so they are always drift) has no drift against itself.
#![no_main]

use std::sync::OnceLock;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use meshcap::cli::{Cli, Command};
use meshcap::host::Env;
use meshcap::nft_drift::{canonical, compare, expected};
use meshcap::parse_nft::{NftState, StateRule, listing_json, parse_listing};

/// The state a TPROXY + DNS + drop-invalid configuration with IPv6 produces (every table).
fn planned() -> &'static NftState {
    static PLANNED: OnceLock<NftState> = OnceLock::new();
    PLANNED.get_or_init(|| {
        let argv = [
            "meshcap", "render", "--native-nftables", "--ipv6", "-m", "TPROXY", "-b", "*", "-i", "*",
            "--drop-invalid", "--redirect-dns", "--capture-all-dns", "-c", "veth+",
        ];
        let Ok(cli) = Cli::try_parse_from(argv) else { panic!("argv") };
        let Some(Command::Render(args)) = cli.command else { panic!("render") };
        let (_, plan) = meshcap::app::plan_for_render(&args, &Env::default()).expect("plan");
        expected(&meshcap::render::nft::apply_transaction(&plan).expect("transaction"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(listing) = parse_listing(text) else { return };
    let state = &listing.state;
    let again = parse_listing(&listing_json(listing.version.as_deref(), state)).expect("written state parses");
    assert_eq!(&again.state, state);
    assert_eq!(again.version, listing.version);
    let mut unknown = false;
    for t in &state.tables {
        unknown |= !t.objects.is_empty();
        for c in &t.chains {
            for r in &c.rules {
                match r {
                    StateRule::Known(rule) => {
                        let once = canonical(rule);
                        assert_eq!(canonical(&once), once);
                        let _ = rule.to_string();
                    }
                    StateRule::Unknown(_) => unknown = true,
                }
            }
        }
    }
    if !unknown {
        let d = compare(state, state);
        assert!(d.is_clean(), "{d}");
    }
    let d = compare(planned(), state);
    let _ = (d.to_string(), d.summary());
    let d = compare(state, planned());
    let _ = d.to_string();
});
