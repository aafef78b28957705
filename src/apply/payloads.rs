//! The live state of one family in one iptables variant, and the restore inputs built from it:
//! the verdict against the plan (absent, equal, different), the cleanup of everything of
//! meshcap's that is actually there (every `ISTIO_*` chain, every jump to one, and the planned
//! rules of built-in chains), the guardrails, and the rollback to the state read before.
//!
//! Every input is for `iptables-restore --noflush` (except the rollback, which replaces whole
//! tables); one process per family and variant, each table committed atomically.

use std::collections::BTreeMap;

use crate::drift::{self, Drift};
use crate::iptables::parse::{SaveDump, SavedEntry};
use crate::iptables::render::{op_line, rule_spec};
use crate::model::{ChainName, Match, Proto, Rule, Ruleset, TableName, Target};

/// How the live state relates to the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing of meshcap's is there.
    Absent,
    /// Exactly the planned rules, in order.
    Equal,
    /// Something of meshcap's is there but differs; the text says what (`+`/`-` lines).
    Differs { summary: String, diff: String },
}

/// The planned rules of built-in chains that are present live, each matched once, as
/// (table, live entry).
fn planned_builtin_present(planned: &Ruleset, live: &SaveDump) -> Vec<(TableName, SavedEntry)> {
    let mut out = Vec::new();
    for table in &planned.tables {
        let Some(live_table) = live.table(table.name) else {
            continue;
        };
        let live_chains = live_table.resolved();
        for (chain, rules) in table.resolved() {
            let ChainName::Builtin(_) = chain else { continue };
            let mut candidates: Vec<SavedEntry> = live_chains.get(chain.as_str()).cloned().unwrap_or_default();
            for rule in rules {
                if matches!(rule.target, Target::Jump(_)) {
                    continue; // jumps to ISTIO_* are found by name
                }
                let key = rule.canonical();
                if let Some(i) = candidates
                    .iter()
                    .position(|e| e.rule.as_ref().is_ok_and(|r| r.canonical() == key))
                {
                    out.push((table.name, candidates.remove(i)));
                }
            }
        }
    }
    out
}

/// `ISTIO_*` chains that are live but not planned, as (table, chain).
fn stale_chains(planned: &Ruleset, live: &SaveDump) -> Vec<(String, String)> {
    live.istio_chains()
        .into_iter()
        .filter(|(t, c)| {
            let declared = TableName::from_name(t)
                .and_then(|t| planned.table(t))
                .map(|t| t.declared_chains())
                .unwrap_or_default();
            !declared.iter().any(|d| d.as_str() == c)
        })
        .collect()
}

/// Compares the plan of one family with the live dump of the variant in use.
pub fn verdict(planned: &Ruleset, live: &SaveDump) -> Verdict {
    if !live.has_istio_state() && planned_builtin_present(planned, live).is_empty() {
        return Verdict::Absent;
    }
    let d: Drift = drift::compare(planned, live);
    let stale = stale_chains(planned, live);
    if d.is_clean() && stale.is_empty() {
        return Verdict::Equal;
    }
    let mut diff = d.to_string();
    for (t, c) in &stale {
        diff.push_str(&drift::report::unexpected_chain(t, c));
    }
    let summary = drift::report::iptables_summary(&d.family.to_string(), &d, stale.len());
    Verdict::Differs { summary, diff }
}

/// A token as iptables-restore reads it back (quoted when it holds spaces or quotes).
fn requote(token: &str) -> String {
    if !token.is_empty() && !token.chars().any(|c| c.is_whitespace() || c == '"' || c == '\\') {
        return token.to_string();
    }
    let mut s = String::from("\"");
    for c in token.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

fn delete_line(e: &SavedEntry) -> String {
    let mut line = format!("-D {}", e.chain);
    for t in &e.tokens {
        line.push(' ');
        line.push_str(&requote(t));
    }
    line
}

/// The cleanup of what is live, per table: delete every jump to an `ISTIO_*` chain outside
/// those chains and every planned built-in rule that is present, then flush every `ISTIO_*`
/// chain, then delete them. Foreign rules and chains are left alone.
pub fn cleanup_lines(planned: &Ruleset, live: &SaveDump) -> BTreeMap<TableName, Vec<String>> {
    let mut out: BTreeMap<TableName, Vec<String>> = BTreeMap::new();
    for (table, entry) in live.istio_jumps() {
        if let Some(t) = TableName::from_name(&table) {
            out.entry(t).or_default().push(delete_line(&entry));
        }
    }
    for (t, entry) in planned_builtin_present(planned, live) {
        out.entry(t).or_default().push(delete_line(&entry));
    }
    let chains = live.istio_chains();
    for (table, chain) in &chains {
        if let Some(t) = TableName::from_name(table) {
            out.entry(t).or_default().push(format!("-F {chain}"));
        }
    }
    for (table, chain) in &chains {
        if let Some(t) = TableName::from_name(table) {
            out.entry(t).or_default().push(format!("-X {chain}"));
        }
    }
    out
}

/// A restore input: per table (in table order), the cleanup lines, then the planned lines.
/// Each table's block is committed atomically, so old and new never coexist in one table.
pub fn restore_input(cleanup: &BTreeMap<TableName, Vec<String>>, planned: Option<&Ruleset>) -> String {
    let mut out = String::new();
    for name in TableName::ALL {
        let clean = cleanup.get(&name).map(Vec::as_slice).unwrap_or_default();
        let table = planned.and_then(|p| p.table(name)).filter(|t| !t.ops.is_empty());
        if clean.is_empty() && table.is_none() {
            continue;
        }
        out.push_str(&format!("* {name}\n"));
        for l in clean {
            out.push_str(l);
            out.push('\n');
        }
        if let Some(table) = table {
            for c in table.declared_chains() {
                out.push_str(&format!("-N {}\n", c.as_str()));
            }
            for op in &table.ops {
                out.push_str(&op_line(op));
                out.push('\n');
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// The guardrail rules (spec §5.5): DROP TCP and UDP in filter INPUT, FORWARD and OUTPUT.
fn guardrails() -> Vec<(&'static str, Rule)> {
    let mut out = Vec::new();
    for chain in ["INPUT", "FORWARD", "OUTPUT"] {
        for proto in [Proto::Tcp, Proto::Udp] {
            out.push((chain, Rule::new(vec![Match::Protocol(proto)], Target::Drop)));
        }
    }
    out
}

/// Installs the guardrails at the top of the filter chains, first removing one leftover copy
/// of each (from an interrupted earlier run), as Istio does.
pub fn guardrails_input(live: &SaveDump) -> String {
    let filter = live.table(TableName::Filter).map(|t| t.resolved()).unwrap_or_default();
    let mut out = String::from("* filter\n");
    for (chain, rule) in guardrails() {
        let key = rule.canonical();
        let present = filter
            .get(chain)
            .is_some_and(|es| es.iter().any(|e| e.rule.as_ref().is_ok_and(|r| r.canonical() == key)));
        if present {
            out.push_str(&format!("-D {chain} {}\n", rule_spec(&rule)));
        }
    }
    for (chain, rule) in guardrails() {
        out.push_str(&format!("-I {chain} 1 {}\n", rule_spec(&rule)));
    }
    out.push_str("COMMIT\n");
    out
}

/// Removes the guardrails [`guardrails_input`] installed.
pub fn guardrails_removal() -> String {
    let mut out = String::from("* filter\n");
    for line in guardrail_deletes() {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

/// The filter-table lines that delete one copy of each guardrail.
pub fn guardrail_deletes() -> Vec<String> {
    guardrails()
        .into_iter()
        .map(|(chain, rule)| format!("-D {chain} {}", rule_spec(&rule)))
        .collect()
}

/// Whether the whole guardrail set is live: what a meshcap killed during `--reconcile` leaves
/// behind (TCP and UDP dropped for good, since the rules may well be in place). Holding the
/// namespace lock, meshcap knows no other run is rebuilding right now.
pub fn guardrails_present(live: &SaveDump) -> bool {
    let Some(filter) = live.table(TableName::Filter).map(|t| t.resolved()) else {
        return false;
    };
    guardrails().into_iter().all(|(chain, rule)| {
        let key = rule.canonical();
        filter
            .get(chain)
            .is_some_and(|es| es.iter().any(|e| e.rule.as_ref().is_ok_and(|r| r.canonical() == key)))
    })
}

/// The tables a restore input writes.
pub fn tables_of(input: &str) -> Vec<TableName> {
    let mut out: Vec<TableName> = input
        .lines()
        .filter_map(|l| l.strip_prefix('*'))
        .filter_map(|n| TableName::from_name(n.trim()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// An input for `iptables-restore` (without `--noflush`) that puts `tables` back as the save
/// output `before` shows them; a table absent before is emptied. With `guardrails`, the filter
/// table keeps the guardrails (they are removed separately).
pub fn rollback_input(before: &str, tables: &[TableName], guardrails_on: bool) -> String {
    let mut blocks: BTreeMap<TableName, Vec<&str>> = BTreeMap::new();
    let mut current: Option<TableName> = None;
    for line in before.lines() {
        let l = line.trim_end();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(name) = l.strip_prefix('*') {
            current = TableName::from_name(name.trim());
            continue;
        }
        if l == "COMMIT" {
            current = None;
            continue;
        }
        if let Some(t) = current {
            blocks.entry(t).or_default().push(l);
        }
    }
    let mut out = String::new();
    for &t in tables {
        out.push_str(&format!("*{t}\n"));
        for l in blocks.get(&t).map(Vec::as_slice).unwrap_or_default() {
            out.push_str(l);
            out.push('\n');
        }
        if t == TableName::Filter && guardrails_on {
            for (chain, rule) in guardrails() {
                out.push_str(&format!("-I {chain} 1 {}\n", rule_spec(&rule)));
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::parse::{Strictness, parse_save};
    use crate::iptables::render::restore_payload;
    use crate::values::Family;

    fn plan(args: &[&str]) -> Ruleset {
        let plan = crate::plan::testing::plan(args);
        plan.ruleset(Family::V4)
    }

    fn dump(text: &str) -> SaveDump {
        parse_save(text, Strictness::Lenient).unwrap()
    }

    #[test]
    fn verdicts() {
        let rs = plan(&["-b", "*", "-i", "*"]);
        let payload = restore_payload(&rs);
        assert_eq!(verdict(&rs, &dump("")), Verdict::Absent);
        assert_eq!(
            verdict(&rs, &dump("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j KUBE\nCOMMIT\n")),
            Verdict::Absent
        );
        assert_eq!(verdict(&rs, &dump(&payload)), Verdict::Equal);
        let with_stale = payload.replace("COMMIT", "-N ISTIO_DIVERT\nCOMMIT");
        let Verdict::Differs { diff, .. } = verdict(&rs, &dump(&with_stale)) else {
            panic!("a stale empty chain is drift")
        };
        assert!(diff.contains("ISTIO_DIVERT"), "{diff}");
        let other = restore_payload(&plan(&["-b", "*", "-i", "*", "-p", "15002"]));
        assert!(matches!(verdict(&rs, &dump(&other)), Verdict::Differs { .. }));
    }

    #[test]
    fn cleanup_removes_ours_only_and_the_input_swaps_atomically() {
        let rs = plan(&["-b", "*", "-i", "*", "-c", "eth9"]);
        let live = restore_payload(&rs).replace(
            "COMMIT\n",
            "-N KUBE-X\n-A KUBE-X -j ISTIO_OUTPUT\n-A OUTPUT -m comment --comment \"a b\" -j KUBE-X\nCOMMIT\n",
        );
        let lines = cleanup_lines(&rs, &dump(&live));
        let nat = &lines[&TableName::Nat];
        assert!(nat.contains(&"-D OUTPUT -j ISTIO_OUTPUT".to_string()), "{nat:?}");
        assert!(nat.contains(&"-D KUBE-X -j ISTIO_OUTPUT".to_string()), "{nat:?}");
        assert!(nat.contains(&"-D PREROUTING -i eth9 -j RETURN".to_string()), "{nat:?}");
        assert!(
            !nat.iter()
                .any(|l| l.contains("KUBE-X -j") && l.starts_with("-D OUTPUT"))
        );
        assert!(nat.contains(&"-X ISTIO_REDIRECT".to_string()));
        let flush_at = nat.iter().position(|l| l.starts_with("-F")).unwrap();
        let delete_at = nat.iter().position(|l| l.starts_with("-X")).unwrap();
        assert!(nat[..flush_at].iter().all(|l| l.starts_with("-D")));
        assert!(nat[flush_at..delete_at].iter().all(|l| l.starts_with("-F")));
        let input = restore_input(&lines, Some(&rs));
        assert!(input.starts_with("* nat\n-D "), "{input}");
        assert!(input.find("-X ISTIO_OUTPUT").unwrap() < input.find("-N ISTIO_OUTPUT").unwrap());
        assert_eq!(requote("a b"), "\"a b\"");
    }

    #[test]
    fn guardrails_and_rollback() {
        assert!(!guardrails_present(&dump("")));
        assert!(!guardrails_present(&dump("*filter\n-A INPUT -p tcp -j DROP\nCOMMIT\n")));
        let all = "*filter\n-A INPUT -p tcp -j DROP\n-A INPUT -p udp -j DROP\n-A FORWARD -p tcp -j DROP\n-A FORWARD -p udp -j DROP\n-A OUTPUT -p tcp -j DROP\n-A OUTPUT -p udp -j DROP\nCOMMIT\n";
        assert!(guardrails_present(&dump(all)));
        assert_eq!(guardrail_deletes()[0], "-D INPUT -p tcp -j DROP");
        let g = guardrails_input(&dump(""));
        assert_eq!(g.lines().filter(|l| l.starts_with("-I")).count(), 6);
        assert!(!g.contains("-D"));
        let g = guardrails_input(&dump("*filter\n-A INPUT -p tcp -j DROP\nCOMMIT\n"));
        assert!(g.contains("-D INPUT -p tcp -j DROP\n"), "{g}");
        assert_eq!(guardrails_removal().lines().filter(|l| l.starts_with("-D")).count(), 6);
        let before = "# Generated\n*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j KUBE\nCOMMIT\n# Completed\n";
        let rb = rollback_input(before, &[TableName::Mangle, TableName::Nat], false);
        assert_eq!(
            rb,
            "*mangle\nCOMMIT\n*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j KUBE\nCOMMIT\n"
        );
        assert_eq!(tables_of(&rb), [TableName::Mangle, TableName::Nat]);
    }
}
