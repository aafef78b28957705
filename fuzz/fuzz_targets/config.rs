//! argv + env → config → plan → payloads. Properties: no panic; an accepted configuration
//! yields rulesets that validate, and every payload parses back (strictly) into exactly the
//! ruleset it was rendered from, i.e. every line is one well-formed rule.
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use meshcap::cli::{Cli, Command};
use meshcap::host::Env;
use meshcap::parse::{Strictness, parse_save};
use meshcap::render::iptables::restore_payload;
use meshcap::values::Family;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Layout: argv words separated by NUL, then an optional "\n\n" and KEY=VALUE env lines.
    let (argv_part, env_part) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut argv = vec!["meshcap".to_string(), "render".to_string()];
    argv.extend(argv_part.split('\0').filter(|w| !w.is_empty()).map(str::to_string));
    let env = Env::from_pairs(env_part.lines().filter_map(|l| l.split_once('=')));
    let Ok(cli) = Cli::try_parse_from(&argv) else { return };
    let Some(Command::Render(args)) = cli.command else { return };
    let Ok((_config, plan)) = meshcap::app::plan_for_render(&args, &env) else { return };
    for family in [Family::V4, Family::V6] {
        let rs = plan.ruleset(family);
        rs.validate().expect("an accepted configuration renders a valid ruleset");
        let payload = restore_payload(&rs);
        let back = parse_save(&payload, Strictness::Strict).expect("payload parses back");
        assert_eq!(back.to_ruleset(family).expect("payload converts back"), rs);
    }
});
