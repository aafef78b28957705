//! Drift spelled for people: the `+`/`-` lines in each backend's own syntax (iptables
//! arguments, `nft -f` commands via [`crate::nft::text`]) with a `# why` comment, and the
//! one-line summaries. `check` prints them and the apply backends quote them when they refuse;
//! this is the one place that writes them.
//!
//! `+` lines are planned state the kernel lacks, `-` lines live state the plan lacks; a
//! misordered rule shows as `-` at its live place and `+` at its planned place.

use std::fmt;

use super::nft::{ChainIssue, NftDrift};
use super::{Drift, DriftEntry, DriftKind};
use crate::nft::text as nft;

/// The lines of one rule's difference, `line` being the rule's command.
fn push_entry(out: &mut String, line: &str, e: &DriftEntry) {
    let mut push = |sign: char, why: &str, at: Option<usize>| {
        out.push_str(&format!("{sign} {line}  # {why} #{}\n", at.unwrap_or(0)));
    };
    match e.kind {
        DriftKind::Missing => push('+', "missing, planned", e.planned_at),
        DriftKind::Unexpected => push('-', "unexpected, live", e.live_at),
        DriftKind::Misordered => {
            push('-', "misordered, live", e.live_at);
            push('+', "misordered, planned", e.planned_at);
        }
    }
}

/// `<label>: M missing, U unexpected, O misordered`, with `, N unexpected chain(s)` when
/// `stale_chains` `ISTIO_*` chains are live but not planned.
pub(crate) fn iptables_summary(label: &str, d: &Drift, stale_chains: usize) -> String {
    let mut s = format!(
        "{label}: {} missing, {} unexpected, {} misordered",
        d.count(DriftKind::Missing),
        d.count(DriftKind::Unexpected),
        d.count(DriftKind::Misordered)
    );
    if stale_chains > 0 {
        s.push_str(&format!(", {stale_chains} unexpected chain(s)"));
    }
    s
}

/// `- -t T -N C  # unexpected chain`: an `ISTIO_*` chain that is live but not planned.
pub(crate) fn unexpected_chain(table: &str, chain: &str) -> String {
    format!("- -t {table} -N {chain}  # unexpected chain\n")
}

/// `- add table inet T  # unexpected table`: one of meshcap's tables that should not exist.
pub(crate) fn unexpected_nft_table(table: &str) -> String {
    format!("- {}  # unexpected table\n", nft::add_table(table))
}

impl Drift {
    /// A one-line summary, e.g. `IPv4: 2 missing, 1 unexpected, 0 misordered`.
    #[cfg(test)]
    pub(crate) fn summary(&self) -> String {
        iptables_summary(&self.family.to_string(), self, 0)
    }
}

/// The `+`/`-` lines, as `-t T -A C <rule>`.
impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for e in &self.entries {
            push_entry(&mut out, &format!("-t {} -A {} {}", e.table, e.chain, e.rule), e);
        }
        f.write_str(&out)
    }
}

impl NftDrift {
    /// `nftables: in sync`, or e.g. `nftables: 1 missing, 2 unexpected, 0 misordered, 1
    /// chain(s) and 0 table(s) differ` (`, 1 unexpected object(s)` when there are any).
    pub fn summary(&self) -> String {
        if self.is_clean() {
            return "nftables: in sync".to_string();
        }
        let mut s = format!(
            "nftables: {} missing, {} unexpected, {} misordered, {} chain(s) and {} table(s) differ",
            self.count(DriftKind::Missing),
            self.count(DriftKind::Unexpected),
            self.count(DriftKind::Misordered),
            self.chains.len(),
            self.missing_tables.len() + self.unexpected_tables.len()
        );
        if !self.unexpected_objects.is_empty() {
            s.push_str(&format!(", {} unexpected object(s)", self.unexpected_objects.len()));
        }
        s
    }

    /// `+`/`-` lines in `nft -f` syntax.
    pub fn lines(&self) -> String {
        let mut out = String::new();
        for t in &self.missing_tables {
            out.push_str(&format!("+ {}  # missing table\n", nft::add_table(t)));
        }
        for t in &self.unexpected_tables {
            out.push_str(&unexpected_nft_table(t));
        }
        for o in &self.unexpected_objects {
            out.push_str(&format!("- {}  # unexpected {}\n", nft::add_object(o), o.kind));
        }
        for c in &self.chains {
            let (sign, why) = match c.issue {
                ChainIssue::Missing => ('+', "missing chain"),
                ChainIssue::Unexpected => ('-', "unexpected chain"),
                ChainIssue::Differs => ('+', "chain differs"),
            };
            out.push_str(&format!("{sign} {}  # {why}\n", c.text));
        }
        for r in &self.rules {
            push_entry(&mut out, &nft::add_rule(&r.table, &r.chain, &r.rule), r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Family;

    #[test]
    fn iptables_lines_and_summary() {
        let entry = |kind, planned_at, live_at| DriftEntry {
            table: "nat".into(),
            chain: "ISTIO_OUTPUT".into(),
            kind,
            rule: "-j RETURN".into(),
            planned_at,
            live_at,
        };
        let d = Drift {
            family: Family::V4,
            entries: vec![
                entry(DriftKind::Missing, Some(1), None),
                entry(DriftKind::Unexpected, None, Some(2)),
                entry(DriftKind::Misordered, Some(3), Some(4)),
            ],
            live_has_istio: true,
        };
        assert_eq!(
            d.to_string(),
            "+ -t nat -A ISTIO_OUTPUT -j RETURN  # missing, planned #1\n\
             - -t nat -A ISTIO_OUTPUT -j RETURN  # unexpected, live #2\n\
             - -t nat -A ISTIO_OUTPUT -j RETURN  # misordered, live #4\n\
             + -t nat -A ISTIO_OUTPUT -j RETURN  # misordered, planned #3\n"
        );
        assert_eq!(d.summary(), "IPv4: 1 missing, 1 unexpected, 1 misordered");
        assert_eq!(
            iptables_summary("IPv4 (iptables-nft-save)", &d, 2),
            "IPv4 (iptables-nft-save): 1 missing, 1 unexpected, 1 misordered, 2 unexpected chain(s)"
        );
        assert_eq!(
            unexpected_chain("nat", "ISTIO_X"),
            "- -t nat -N ISTIO_X  # unexpected chain\n"
        );
        assert_eq!(
            unexpected_nft_table("istio-proxy-raw"),
            "- add table inet istio-proxy-raw  # unexpected table\n"
        );
    }
}
