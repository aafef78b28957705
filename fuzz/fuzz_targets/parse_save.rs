//! iptables-save text → dump → drift against a fixed plan. Properties: no panic, and a dump
//! that converts to a ruleset renders a payload that parses back to the same ruleset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshcap::iptables::parse::{Strictness, parse_save};
use meshcap::iptables::render::restore_payload;
use meshcap::values::Family;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for strictness in [Strictness::Strict, Strictness::Lenient] {
        let Ok(dump) = parse_save(text, strictness) else { continue };
        let _ = dump.istio_chains();
        let _ = dump.istio_jumps();
        let empty = meshcap::model::Ruleset { family: Family::V4, tables: vec![] };
        let _ = meshcap::drift::compare(&empty, &dump).to_string();
        if let Ok(rs) = dump.to_ruleset(Family::V4) {
            let payload = restore_payload(&rs);
            let again = parse_save(&payload, Strictness::Strict).expect("rendered payload parses");
            assert_eq!(again.to_ruleset(Family::V4).expect("converts"), rs);
        }
    }
});
