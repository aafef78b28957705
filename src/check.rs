//! `meshcap check`: are the live rules what the flags plan? The comparison itself is
//! [`drift::compare`] (order-sensitive inside `ISTIO_*` chains, meshcap's jumps in built-in
//! chains, foreign rules ignored); this module runs it per family over dumps the caller read,
//! and spells the result for people (`+`/`-` lines) and programs (JSON). Exit codes: 0 in sync,
//! 1 drift, 2 error (decided by the caller for errors).

use serde::Serialize;

use crate::drift::{self, Drift, DriftKind};
use crate::parse::SaveDump;
use crate::plan::Plan;
use crate::values::Family;

/// The drift of every checked family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub families: Vec<Drift>,
}

impl Report {
    pub fn in_sync(&self) -> bool {
        self.families.iter().all(Drift::is_clean)
    }

    /// 0 in sync, 1 drift.
    pub fn exit_code(&self) -> i32 {
        if self.in_sync() { 0 } else { 1 }
    }

    /// Per family a `# <family>: ...` summary line, then its `+`/`-` rule lines.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for d in &self.families {
            if d.is_clean() {
                out.push_str(&format!("# {}: in sync\n", d.family));
            } else {
                out.push_str(&format!("# {}\n", d.summary()));
                out.push_str(&d.to_string());
            }
        }
        out
    }

    pub fn json(&self) -> String {
        let doc = ReportDoc {
            version: 1,
            in_sync: self.in_sync(),
            families: self
                .families
                .iter()
                .map(|d| FamilyDoc {
                    family: d.family.name(),
                    in_sync: d.is_clean(),
                    missing: d.count(DriftKind::Missing),
                    unexpected: d.count(DriftKind::Unexpected),
                    misordered: d.count(DriftKind::Misordered),
                    entries: d
                        .entries
                        .iter()
                        .map(|e| EntryDoc {
                            kind: match e.kind {
                                DriftKind::Missing => "missing",
                                DriftKind::Unexpected => "unexpected",
                                DriftKind::Misordered => "misordered",
                            },
                            table: e.table.clone(),
                            chain: e.chain.clone(),
                            iptables: e.rule.clone(),
                            planned_at: e.planned_at,
                            live_at: e.live_at,
                        })
                        .collect(),
                })
                .collect(),
        };
        let mut s = serde_json::to_string_pretty(&doc).expect("a report serialises");
        s.push('\n');
        s
    }
}

/// `check --format json`, version 1.
#[derive(Serialize)]
struct ReportDoc {
    version: u32,
    in_sync: bool,
    families: Vec<FamilyDoc>,
}

#[derive(Serialize)]
struct FamilyDoc {
    family: &'static str,
    in_sync: bool,
    missing: usize,
    unexpected: usize,
    misordered: usize,
    entries: Vec<EntryDoc>,
}

#[derive(Serialize)]
struct EntryDoc {
    /// `missing` (planned, not live), `unexpected` (live, not planned) or `misordered`.
    kind: &'static str,
    table: String,
    chain: String,
    /// The rule as iptables arguments after the chain.
    iptables: String,
    /// 1-based position in the planned chain.
    planned_at: Option<usize>,
    /// 1-based position in the live chain.
    live_at: Option<usize>,
}

/// Compares the plan with each family's live dump. A family the plan leaves off (IPv6
/// disabled) is compared with an empty plan, so leftover ISTIO state there is drift.
pub fn check(plan: &Plan, live: &[(Family, SaveDump)]) -> Report {
    Report {
        families: live
            .iter()
            .map(|(family, dump)| drift::compare(&plan.ruleset(*family), dump))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Strictness, parse_save};
    use crate::render::iptables::restore_payload;

    fn plan(args: &[&str]) -> Plan {
        use clap::Parser;
        let mut argv = vec!["meshcap", "render"];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let Some(crate::cli::Command::Render(r)) = cli.command else {
            panic!("not render")
        };
        crate::app::plan_for_render(&r, &crate::host::Env::default()).unwrap().1
    }

    fn dump(text: &str) -> SaveDump {
        parse_save(text, Strictness::Lenient).unwrap()
    }

    #[test]
    fn in_sync_and_drift() {
        let p = plan(&["-b", "*", "-i", "*", "--ipv6"]);
        let v4 = restore_payload(&p.ruleset(Family::V4));
        let v6 = restore_payload(&p.ruleset(Family::V6));
        let r = check(&p, &[(Family::V4, dump(&v4)), (Family::V6, dump(&v6))]);
        assert!(r.in_sync(), "{}", r.text());
        assert_eq!(r.exit_code(), 0);
        assert_eq!(r.text(), "# IPv4: in sync\n# IPv6: in sync\n");

        let broken = v4.replace("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n", "");
        let r = check(&p, &[(Family::V4, dump(&broken)), (Family::V6, dump(&v6))]);
        assert_eq!(r.exit_code(), 1);
        let text = r.text();
        assert!(
            text.starts_with(
                "# IPv4: 1 missing, 0 unexpected, 0 misordered\n+ -t nat -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN"
            ),
            "{text}"
        );
        assert!(text.ends_with("# IPv6: in sync\n"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["in_sync"], false);
        assert_eq!(v["families"][0]["missing"], 1);
        assert_eq!(v["families"][0]["entries"][0]["kind"], "missing");
        assert_eq!(v["families"][0]["entries"][0]["iptables"], "-d 127.0.0.1/32 -j RETURN");
        assert_eq!(v["families"][1]["in_sync"], true);
    }

    #[test]
    fn ipv6_off_means_no_istio_state_in_ipv6() {
        let p = plan(&["-b", "*"]);
        let v4 = restore_payload(&p.ruleset(Family::V4));
        // The IPv4 payload loaded into ip6tables is all unexpected there.
        let r = check(&p, &[(Family::V4, dump(&v4)), (Family::V6, dump(&v4))]);
        assert!(r.families[0].is_clean());
        assert!(r.families[1].count(DriftKind::Unexpected) > 0, "{}", r.text());
        let r = check(&p, &[(Family::V4, dump(&v4)), (Family::V6, SaveDump::default())]);
        assert!(r.in_sync());
    }

    #[test]
    fn foreign_rules_are_ignored() {
        let p = plan(&["-b", "*"]);
        let v4 = restore_payload(&p.ruleset(Family::V4)).replace(
            "-A OUTPUT -j ISTIO_OUTPUT\n",
            "-A OUTPUT -m comment --comment kube -j KUBE-SERVICES\n-A OUTPUT -j ISTIO_OUTPUT\n",
        );
        let r = check(&p, &[(Family::V4, dump(&v4))]);
        assert!(r.in_sync(), "{}", r.text());
    }
}
