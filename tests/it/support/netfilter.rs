//! Reading a namespace's rules back for comparisons: the two iptables [`Variant`]s, saves
//! without comments, counters and empty tables, nft listings without counter values, and the
//! reference state (Istio's payload restored directly into a fresh namespace).

use super::cmd::Meshcap;
use super::netns::Netns;

/// The iptables binaries: `iptables-legacy*` or `iptables-nft*` (and `ip6tables-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Legacy,
    Nft,
}

impl Variant {
    pub const BOTH: [Variant; 2] = [Variant::Nft, Variant::Legacy];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Legacy => "legacy",
            Variant::Nft => "nft",
        }
    }

    /// `BASE-VARIANT SUFFIX`: `tool("ip6tables", "-save")` is `ip6tables-nft-save`.
    pub fn tool(self, base: &str, suffix: &str) -> String {
        format!("{base}-{}{suffix}", self.name())
    }

    pub fn other(self) -> Variant {
        match self {
            Variant::Legacy => Variant::Nft,
            Variant::Nft => Variant::Legacy,
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An iptables-save output without comments and counters, and without tables that hold nothing.
pub fn normalize_save(save: &str) -> String {
    let mut blocks: Vec<String> = Vec::new();
    let mut block: Vec<String> = Vec::new();
    for line in save.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let line = match line.rfind(" [") {
            Some(i) if line.starts_with(':') => line[..i].to_string(),
            _ => line.to_string(),
        };
        block.push(line.clone());
        if line == "COMMIT" {
            let meaningful = block
                .iter()
                .any(|l| l.starts_with("-A") || (l.starts_with(':') && l.ends_with(" -")));
            if meaningful {
                blocks.push(block.join("\n") + "\n");
            }
            block.clear();
        }
    }
    // Legacy lists tables in creation order, nft in a fixed one.
    blocks.sort();
    blocks.concat()
}

/// `BASE-VARIANT-save` in `ns` (`base` is `iptables` or `ip6tables`), normalized.
pub fn save(ns: &Netns, v: Variant, base: &str) -> String {
    let o = ns.run(&v.tool(base, "-save"), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    normalize_save(&String::from_utf8_lossy(&o.stdout))
}

/// `nft ARGS` in `ns` (a listing), counter values removed (`counter packets N bytes M` is
/// `counter`) and every line's words joined by one space.
pub fn nft_list(ns: &Netns, args: &[&str]) -> String {
    let o = ns.run("nft", args);
    assert!(
        o.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut out = String::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut kept: Vec<&str> = Vec::new();
        let mut i = 0;
        while i < words.len() {
            if (words[i] == "packets" || words[i] == "bytes") && kept.last() == Some(&"counter") {
                i += 2;
                continue;
            }
            kept.push(words[i]);
            i += 1;
        }
        out.push_str(&kept.join(" "));
        out.push('\n');
    }
    out
}

/// `nft list ruleset` in `ns`, as [`nft_list`].
pub fn nft_ruleset(ns: &Netns) -> String {
    nft_list(ns, &["list", "ruleset"])
}

/// `meshcap render ARGS --family v4|v6 [--ipv6]`: Istio's iptables-restore payload.
pub fn render(args: &[&str], family: &str, ipv6: bool) -> String {
    let ipv6: &[&str] = if ipv6 { &["--ipv6"] } else { &[] };
    Meshcap::new()
        .arg("render")
        .args(args)
        .args(["--family", family])
        .args(ipv6)
        .stdout()
}

/// Istio's payload for `args` restored by the variant's own `*-restore --noflush` into a fresh
/// namespace: the reference state, `(IPv4 save, IPv6 save)`, normalized.
pub fn iptables_reference(v: Variant, args: &[&str], ipv6: bool) -> (String, String) {
    let ns = Netns::new("ref");
    let mut out = Vec::new();
    for (family, base) in [("v4", "iptables"), ("v6", "ip6tables")] {
        let payload = render(args, family, ipv6);
        if !payload.is_empty() {
            let o = ns.run_with_stdin(&v.tool(base, "-restore"), &["--noflush"], &payload);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        out.push(save(&ns, v, base));
    }
    (out.remove(0), out.remove(0))
}

/// Someone else's rules in both families of `v`: a chain of their own in nat, jumps and rules
/// in built-in chains of nat, mangle and filter.
pub fn add_foreign(ns: &Netns, v: Variant) {
    for base in ["iptables", "ip6tables"] {
        let ipt = v.tool(base, "");
        for args in [
            &["-t", "nat", "-N", "FOREIGN"][..],
            &["-t", "nat", "-A", "FOREIGN", "-p", "udp", "-j", "RETURN"],
            &["-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "FOREIGN"],
            &["-t", "mangle", "-A", "PREROUTING", "-i", "lo", "-j", "RETURN"],
            &[
                "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
            ],
        ] {
            let o = ns.run(&ipt, args);
            assert!(
                o.status.success(),
                "{ipt} {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}
