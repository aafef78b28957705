//! argv + env → config → plan → payloads. Properties: no panic; an accepted configuration
//! yields rulesets that validate, every iptables payload parses back (strictly) into exactly
//! the ruleset it was rendered from, i.e. every line is one well-formed rule; and the nft
//! renderer accepts the same plan, writing one operation per line (no value can add a line,
//! a statement or an unbalanced quote).
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use meshcap::cli::{Cli, Command};
use meshcap::sys::host::Env;
use meshcap::iptables::parse::{Strictness, parse_save};
use meshcap::iptables::render::restore_payload;
use meshcap::nft::ir::Transaction;
use meshcap::values::Family;

fn one_op_per_line(tx: &Transaction) {
    let text = tx.to_string();
    assert_eq!(text.lines().count(), tx.ops.len(), "one line per operation:\n{text}");
    for (op, line) in tx.ops.iter().zip(text.lines()) {
        assert_eq!(op.to_string(), line);
        assert!(
            ["add ", "insert ", "flush ", "delete "].iter().any(|v| line.starts_with(v)),
            "{line}"
        );
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert_eq!(line.matches('"').count() % 2, 0, "balanced quotes: {line}");
        assert!(!line.contains(';') || line.contains("{ type "), "one statement: {line}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Layout: argv words separated by NUL, then an optional "\n\n" and KEY=VALUE env lines.
    let (argv_part, env_part) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut argv = vec!["meshcap".to_string(), "render".to_string()];
    argv.extend(argv_part.split('\0').filter(|w| !w.is_empty()).map(str::to_string));
    let env = Env::from_pairs(env_part.lines().filter_map(|l| l.split_once('=')));
    let Ok(cli) = Cli::try_parse_from(&argv) else { return };
    let Some(Command::Render(args)) = cli.command else { return };
    let Ok((_config, plan)) = meshcap::plan::for_render(&args, &env) else { return };
    for family in [Family::V4, Family::V6] {
        let rs = plan.ruleset(family);
        rs.validate().expect("an accepted configuration renders a valid ruleset");
        let payload = restore_payload(&rs);
        let back = parse_save(&payload, Strictness::Strict).expect("payload parses back");
        assert_eq!(back.to_ruleset(family).expect("payload converts back"), rs);
    }
    let tx = meshcap::nft::lower::transaction(&plan).expect("an accepted configuration renders an nft transaction");
    one_op_per_line(&tx);
    let tx = meshcap::nft::lower::apply_transaction(&plan).expect("and its apply transaction");
    one_op_per_line(&tx);
});
