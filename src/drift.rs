//! Order-sensitive comparison of a planned ruleset with a live dump.
//!
//! Inside `ISTIO_*` chains the live rules must equal the planned ones, in order. In built-in
//! chains only meshcap's rules are compared (rules equal to a planned one, and any jump to an
//! `ISTIO_*` chain); foreign rules there are ignored. Rules are compared in their canonical form
//! (`Rule::canonical`), so iptables-save's reordering of matches and masking of host bits do
//! not count as drift. A rule that is both missing at its planned place and present elsewhere
//! is reported once, as misordered.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::model::{ChainName, Rule, Ruleset, TableName};
use crate::parse::{SaveDump, SavedEntry, is_istio_name};
use crate::render::iptables::rule_spec;
use crate::values::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DriftKind {
    /// Planned, not in the kernel.
    Missing,
    /// In the kernel, not planned.
    Unexpected,
    /// In both, at another place.
    Misordered,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftEntry {
    pub table: String,
    pub chain: String,
    pub kind: DriftKind,
    /// The rule as iptables arguments after the chain.
    pub rule: String,
    /// 1-based position in the planned chain (missing, misordered).
    pub planned_at: Option<usize>,
    /// 1-based position in the live chain (unexpected, misordered).
    pub live_at: Option<usize>,
}

/// The differences of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub family: Family,
    pub entries: Vec<DriftEntry>,
    /// Whether the live dump held anything of meshcap's at all.
    pub live_has_istio: bool,
}

impl Drift {
    pub fn is_clean(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn count(&self, kind: DriftKind) -> usize {
        self.entries.iter().filter(|e| e.kind == kind).count()
    }

    /// A one-line summary, e.g. `IPv4: 2 missing, 1 unexpected, 0 misordered`.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} missing, {} unexpected, {} misordered",
            self.family,
            self.count(DriftKind::Missing),
            self.count(DriftKind::Unexpected),
            self.count(DriftKind::Misordered)
        )
    }
}

impl fmt::Display for Drift {
    /// `+` lines are planned rules the kernel lacks, `-` lines live rules the plan lacks; a
    /// misordered rule shows as `-` at its live place and `+` at its planned place.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            let line = format!("-t {} -A {} {}", e.table, e.chain, e.rule);
            match e.kind {
                DriftKind::Missing => writeln!(f, "+ {line}  # missing, planned #{}", e.planned_at.unwrap_or(0))?,
                DriftKind::Unexpected => writeln!(f, "- {line}  # unexpected, live #{}", e.live_at.unwrap_or(0))?,
                DriftKind::Misordered => {
                    writeln!(f, "- {line}  # misordered, live #{}", e.live_at.unwrap_or(0))?;
                    writeln!(f, "+ {line}  # misordered, planned #{}", e.planned_at.unwrap_or(0))?;
                }
            }
        }
        Ok(())
    }
}

/// One side's rule: its canonical form (None when not understood; it then matches nothing),
/// display text and 1-based position. The key type is the backend's rule model (`Rule` here,
/// the nft rule in `nft_drift`), so both backends share one diff.
pub(crate) struct Item<K> {
    pub key: Option<K>,
    pub text: String,
    pub at: usize,
}

fn live_item(e: &SavedEntry, at: usize) -> Item<Rule> {
    match &e.rule {
        Ok(r) => Item {
            key: Some(r.canonical()),
            text: rule_spec(r),
            at,
        },
        Err(_) => Item {
            key: None,
            text: e.tokens.join(" "),
            at,
        },
    }
}

/// Longest common subsequence of two key lists (unknown keys never match).
fn lcs<K: PartialEq>(a: &[Item<K>], b: &[Item<K>]) -> Vec<(usize, usize)> {
    let (n, m) = (a.len(), b.len());
    let mut dp = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            dp[i][j] = if a[i].key.is_some() && a[i].key == b[j].key {
                dp[i + 1][j + 1] + 1
            } else {
                dp[i + 1][j].max(dp[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut pairs) = (0, 0, Vec::new());
    while i < n && j < m {
        if a[i].key.is_some() && a[i].key == b[j].key {
            pairs.push((i, j));
            i += 1;
            j += 1;
        } else if dp[i + 1][j] >= dp[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    pairs
}

/// Diffs one chain's planned and live rules into `out` (missing, unexpected, misordered).
pub(crate) fn diff_chain<K: PartialEq>(
    table: &str,
    chain: &str,
    planned: &[Item<K>],
    live: &[Item<K>],
    out: &mut Vec<DriftEntry>,
) {
    let pairs = lcs(planned, live);
    let kept_p: BTreeSet<usize> = pairs.iter().map(|p| p.0).collect();
    let kept_l: BTreeSet<usize> = pairs.iter().map(|p| p.1).collect();
    let mut unexpected: Vec<&Item<K>> = live
        .iter()
        .enumerate()
        .filter(|(j, _)| !kept_l.contains(j))
        .map(|(_, x)| x)
        .collect();
    let mut entries = Vec::new();
    for (i, p) in planned.iter().enumerate().filter(|(i, _)| !kept_p.contains(i)) {
        let elsewhere = unexpected.iter().position(|l| l.key.is_some() && l.key == p.key);
        let (kind, live_at) = match elsewhere {
            Some(k) => (DriftKind::Misordered, Some(unexpected.remove(k).at)),
            None => (DriftKind::Missing, None),
        };
        let _ = i;
        entries.push(DriftEntry {
            table: table.to_string(),
            chain: chain.to_string(),
            kind,
            rule: p.text.clone(),
            planned_at: Some(p.at),
            live_at,
        });
    }
    for l in unexpected {
        entries.push(DriftEntry {
            table: table.to_string(),
            chain: chain.to_string(),
            kind: DriftKind::Unexpected,
            rule: l.text.clone(),
            planned_at: None,
            live_at: Some(l.at),
        });
    }
    entries.sort_by_key(|e| (e.planned_at.or(e.live_at), e.kind));
    out.extend(entries);
}

/// Compares one family's plan with that family's live dump.
pub fn compare(planned: &Ruleset, live: &SaveDump) -> Drift {
    let mut entries = Vec::new();
    for table in TableName::ALL {
        let plan_chains: BTreeMap<ChainName, Vec<Rule>> =
            planned.table(table).map(|t| t.resolved()).unwrap_or_default();
        let live_chains: BTreeMap<String, Vec<SavedEntry>> =
            live.table(table).map(|t| t.resolved()).unwrap_or_default();
        let mut names: BTreeSet<String> = plan_chains.keys().map(|c| c.as_str().to_string()).collect();
        names.extend(live_chains.keys().filter(|c| is_istio_name(c)).cloned());
        // Built-in chains holding a jump to meshcap's chains count too (a stale jump).
        for (name, rules) in &live_chains {
            if rules.iter().any(SavedEntry::jumps_to_istio) {
                names.insert(name.clone());
            }
        }
        for name in names {
            let planned_rules: Vec<Item<Rule>> = ChainName::from_name(&name)
                .and_then(|c| plan_chains.get(&c))
                .map(|rules| {
                    rules
                        .iter()
                        .enumerate()
                        .map(|(i, r)| Item {
                            key: Some(r.canonical()),
                            text: rule_spec(r),
                            at: i + 1,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let live_entries = live_chains.get(&name).map(Vec::as_slice).unwrap_or_default();
            let live_rules: Vec<Item<Rule>> = if is_istio_name(&name) {
                live_entries
                    .iter()
                    .enumerate()
                    .map(|(j, e)| live_item(e, j + 1))
                    .collect()
            } else {
                // Built-in chain: only meshcap's rules take part.
                let planned_keys: BTreeSet<&Rule> = planned_rules.iter().filter_map(|p| p.key.as_ref()).collect();
                live_entries
                    .iter()
                    .enumerate()
                    .map(|(j, e)| live_item(e, j + 1))
                    .zip(live_entries)
                    .filter(|(item, e)| {
                        e.jumps_to_istio() || item.key.as_ref().is_some_and(|k| planned_keys.contains(k))
                    })
                    .map(|(item, _)| item)
                    .collect()
            };
            diff_chain(table.as_str(), &name, &planned_rules, &live_rules, &mut entries);
        }
    }
    Drift {
        family: planned.family,
        entries,
        live_has_istio: live.has_istio_state(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Strictness, parse_save};
    use crate::render::iptables::restore_payload;

    fn plan_v4(args: &[&str]) -> Ruleset {
        use clap::Parser;
        let mut argv = vec!["meshcap", "render"];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let Some(crate::cli::Command::Render(r)) = cli.command else {
            panic!()
        };
        let (_, plan) = crate::app::plan_for_render(&r, &crate::host::Env::default()).unwrap();
        plan.ruleset(Family::V4)
    }

    fn save_like(payload: &str) -> String {
        // The kernel's spelling of a few rules, as iptables-save prints them.
        payload.replace("-p tcp --dport", "-p tcp -m tcp --dport")
    }

    #[test]
    fn own_payload_is_in_sync() {
        let rs = plan_v4(&["-b", "*", "-i", "10.1.2.3/8", "-k", "eth1", "-m", "TPROXY"]);
        let dump = parse_save(&save_like(&restore_payload(&rs)), Strictness::Strict).unwrap();
        let d = compare(&rs, &dump);
        assert!(d.is_clean(), "{d}");
        assert_eq!(dump.to_ruleset(Family::V4).unwrap(), rs);
    }

    #[test]
    fn reports_missing_unexpected_misordered() {
        let rs = plan_v4(&["-b", "*", "-i", "*"]);
        let mut text = restore_payload(&rs);
        // Drop one rule, add a foreign and a stray rule, swap two rules.
        text = text.replace("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n", "");
        text = text.replace(
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n",
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN\n-A OUTPUT -j KUBE-X\n",
        );
        text = text.replace(
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n-A ISTIO_IN_REDIRECT",
            "-A ISTIO_IN_REDIRECT",
        );
        text = text.replace(
            "COMMIT\n",
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n",
        );
        let dump = parse_save(&text, Strictness::Strict).unwrap();
        let d = compare(&rs, &dump);
        assert_eq!(d.count(DriftKind::Missing), 1, "{d}");
        assert_eq!(d.count(DriftKind::Unexpected), 1, "{d}");
        assert_eq!(d.count(DriftKind::Misordered), 0, "{d}");
        assert!(
            d.to_string()
                .contains("+ -t nat -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN"),
            "{d}"
        );

        // Misordered: two ISTIO_OUTPUT rules swapped.
        let text = restore_payload(&rs).replace(
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n",
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n",
        );
        let d = compare(&rs, &parse_save(&text, Strictness::Strict).unwrap());
        assert_eq!((d.count(DriftKind::Misordered), d.entries.len()), (1, 1), "{d}");
    }

    #[test]
    fn empty_live_state_is_all_missing_and_stale_chains_unexpected() {
        let rs = plan_v4(&[]);
        let d = compare(&rs, &SaveDump::default());
        assert_eq!(d.count(DriftKind::Missing), rs.table(TableName::Nat).unwrap().ops.len());
        assert!(!d.live_has_istio);
        let stale = "*mangle\n:ISTIO_DIVERT - [0:0]\n-A ISTIO_DIVERT -j ACCEPT\n-A PREROUTING -p tcp -j ISTIO_INBOUND\nCOMMIT\n";
        let d = compare(
            &Ruleset {
                family: Family::V4,
                tables: vec![],
            },
            &parse_save(stale, Strictness::Lenient).unwrap(),
        );
        assert_eq!(d.count(DriftKind::Unexpected), 2, "{d}");
    }
}
