//! The `trace` packet grammar, then the tracer. Properties: no panic; an accepted packet prints
//! (`Display`) as text that parses back to the same packet; traced through the iptables and the
//! nftables view of one plan, the two verdicts agree whenever both traces succeed and the plan
//! enables the packet's family.
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use meshcap::cli::{Cli, Command};
use meshcap::sys::host::Env;
use meshcap::trace::packet::Packet;
use meshcap::trace::{Ids, Netfilter, trace};

const DEFAULT: &[&str] = &[
    "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d",
    "15090,15021,15020", "--ipv6",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Layout: the packet text, then an optional "\n\n" and NUL-separated `render` flags.
    let (packet_text, argv_part) = text.split_once("\n\n").unwrap_or((text, ""));
    let Ok(packet) = Packet::parse(packet_text) else { return };
    let shown = packet.to_string();
    let again = Packet::parse(&shown).expect("a printed packet parses");
    assert_eq!(again, packet, "{shown}");
    assert_eq!(again.to_string(), shown);

    let mut argv = vec!["meshcap".to_string(), "render".to_string()];
    let words: Vec<String> = argv_part.split('\0').filter(|w| !w.is_empty()).map(str::to_string).collect();
    if words.is_empty() {
        argv.extend(DEFAULT.iter().map(|s| s.to_string()));
    } else {
        argv.extend(words);
    }
    let Ok(cli) = Cli::try_parse_from(&argv) else { return };
    let Some(Command::Render(args)) = cli.command else { return };
    let Ok((_config, plan)) = meshcap::plan::for_render(&args, &Env::default()) else { return };
    let family = packet.family();
    let ipt = Netfilter::from_plan(&plan, family, false).expect("an accepted plan has an iptables view");
    let nft = Netfilter::from_plan(&plan, family, true).expect("an accepted plan has an nft view");
    let ids = Ids::default();
    // With a family off the backends differ by design (as in Istio): the iptables view has no
    // rules for it, while the one inet nft ruleset still applies its family-agnostic rules
    // (e.g. DNS on port 53) to it. Compare the families the plan enables.
    if !plan.families().contains(&family) {
        return;
    }
    if let (Ok(a), Ok(b)) = (trace(&ipt, &packet, &ids), trace(&nft, &packet, &ids)) {
        assert_eq!(a.verdict, b.verdict, "{shown}\n--- iptables\n{}--- nft\n{}", a.text(), b.text());
    }
});
