//! argv + env → config → plan → the apply transaction → nf_tables messages (`from_ir`) → the
//! wire → the kernel model's commit → the dump read back (`to_ir`). Input layout as in
//! `config.rs` (argv words separated by NUL, then an optional "\n\n" and KEY=VALUE env lines).
//!
//! Properties: no panic; an accepted configuration lowers to messages (or names the operation
//! nft would refuse too: an owner name the fixed passwd/group do not hold); every message's
//! encode → decode is identity (`kernel_model::through_wire`); the model commits the batch;
//! the state read back has no drift from `ir::planned(tx)` (`drift::nft::compare`), also after
//! a second apply on top of the first (the re-run); the cleanup transaction then leaves none
//! of meshcap's tables, chains or sets.
//!
//! Not covered here (the kernel does it; `tests/it/nft_from_ir.rs` checks against the real
//! one): the handles and set names are the model's, and the kernel's own validation of each
//! expression.
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use meshcap::cli::{Cli, Command};
use meshcap::drift::nft::compare;
use meshcap::nft::ir::{Transaction, planned};
use meshcap::nft::lower::{apply_transaction, cleanup_transaction};
use meshcap::nft::netlink::Ruleset;
use meshcap::nft::netlink::kernel_model::{RoundTrip, apply_and_read};
use meshcap::sys::host::{Env, Ids};

fn ids() -> Ids {
    Ids::from_texts(
        Some("root:x:0:0::/root:/bin/sh\nistio-proxy:x:1337:1337::/:/bin/false\n".into()),
        Some("root:x:0:\nistio-proxy:x:1337:\n".into()),
    )
}

/// Applies `tx` on top of `before`; `None` when from_ir refuses it (an unknown owner name).
fn round_trip(tx: &Transaction, before: &Ruleset, ids: &Ids) -> Option<Ruleset> {
    match apply_and_read(before, tx, ids) {
        Ok((state, after)) => {
            let drift = compare(&planned(tx), &state, ids);
            assert!(drift.is_clean(), "drift after the round trip: {drift:?}\n{tx}");
            Some(after)
        }
        Err(RoundTrip::Refused(e)) => {
            assert!(e.why.contains(" is not in /etc/"), "refused: {e}");
            None
        }
        Err(RoundTrip::Broken(why)) => panic!("{why}\n{tx}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (argv_part, env_part) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut argv = vec!["meshcap".to_string(), "render".to_string()];
    argv.extend(argv_part.split('\0').filter(|w| !w.is_empty()).map(str::to_string));
    let env = Env::from_pairs(env_part.lines().filter_map(|l| l.split_once('=')));
    let Ok(cli) = Cli::try_parse_from(&argv) else { return };
    let Some(Command::Render(args)) = cli.command else {
        return;
    };
    let Ok((_config, plan)) = meshcap::plan::for_render(&args, &env) else {
        return;
    };
    let tx = apply_transaction(&plan).expect("an accepted configuration has an apply transaction");
    let ids = ids();
    let Some(first) = round_trip(&tx, &Ruleset::default(), &ids) else {
        return;
    };
    let again = round_trip(&tx, &first, &ids).expect("the second apply lowers as the first did");
    // The cleanup's planned state is empty: anything left is drift.
    round_trip(&cleanup_transaction(), &again, &ids).expect("the cleanup lowers");
});
