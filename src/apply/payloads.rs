//! What the iptables backend does with one family's live state ([`crate::live::iptables`]):
//! what is found against the plan (absent, equal, different), the cleanup of everything of
//! meshcap's that is actually there (every `ISTIO_*` chain, every jump to one, and the planned
//! rules of built-in chains), the guardrails, and the rollback to the state read before.
//!
//! Every input is for `iptables-restore --noflush` (except the rollback, which replaces whole
//! tables); one process per family and variant, each table committed atomically.

use std::collections::{BTreeMap, HashMap};

use super::shapes::Shapes;
use crate::drift::{self, Drift};
use crate::iptables::parse::{SaveDump, SavedEntry, is_istio_name};
use crate::iptables::render::{op_line, rule_spec};
use crate::model::{ChainName, Match, Proto, Rule, Ruleset, TableName, Target};
use crate::sys::host::Ids;

/// How the live state relates to the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// Nothing of meshcap's is there.
    Absent,
    /// Exactly the planned rules, in order.
    Equal,
    /// Something of meshcap's is there but differs; the text says what (`+`/`-` lines).
    Differs { summary: String, diff: String },
    /// What a run of this same plan leaves when it is killed between two tables' commits
    /// (iptables-restore commits table by table): these tables hold exactly the planned
    /// rules, the other planned tables nothing of meshcap's. Completed without --reconcile.
    Interrupted {
        applied: Vec<TableName>,
        missing: Vec<TableName>,
    },
}

/// The planned rules of built-in chains that are present live, each matched once, as
/// (table, live entry). Linear: the planned rules of a chain are counted by canonical form,
/// and the live entries looked up in that count (a search per planned rule made cleanup of
/// 90,000 planned rules quadratic).
fn planned_builtin_present(planned: &Ruleset, live: &SaveDump) -> Vec<(TableName, SavedEntry)> {
    let mut out = Vec::new();
    for table in &planned.tables {
        let Some(live_table) = live.table(table.name) else {
            continue;
        };
        let wanted = planned_builtin_counts(table);
        if wanted.is_empty() {
            continue;
        }
        for (chain, entries) in live_table.resolved() {
            let Some(mut counts) = wanted.get(chain.as_str()).cloned() else {
                continue;
            };
            for e in entries {
                if take(&mut counts, &e) {
                    out.push((table.name, e));
                }
            }
        }
    }
    out
}

/// Per built-in chain, how many times each planned non-jump rule (canonical) occurs.
fn planned_builtin_counts(table: &crate::model::Table) -> HashMap<&'static str, HashMap<Rule, usize>> {
    let mut out: HashMap<&'static str, HashMap<Rule, usize>> = HashMap::new();
    for (chain, rules) in table.resolved() {
        let ChainName::Builtin(_) = chain else { continue };
        for rule in rules {
            if matches!(rule.target, Target::Jump(_)) {
                continue; // jumps to ISTIO_* are found by name
            }
            *out.entry(chain.as_str())
                .or_default()
                .entry(rule.canonical())
                .or_default() += 1;
        }
    }
    out
}

/// Whether `e` is one of the rules counted in `counts` (then counted off).
fn take(counts: &mut HashMap<Rule, usize>, e: &SavedEntry) -> bool {
    let Ok(rule) = &e.rule else { return false };
    match counts.get_mut(&rule.canonical()) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

/// Compares the plan of one family with the live dump of the variant in use.
pub(crate) fn found(planned: &Ruleset, live: &SaveDump, ids: &Ids) -> Found {
    if !live.has_istio_state() && planned_builtin_present(planned, live).is_empty() {
        return Found::Absent;
    }
    // Before the comparison, which reports every rule of a planned table missing whole as
    // missing (drift, refused without --reconcile): only this plan's own half-applied state
    // is completed.
    if let Some(found) = interrupted(planned, live, ids) {
        return found;
    }
    let d: Drift = drift::compare(planned, live, ids);
    let stale = drift::stale_chains(planned, live);
    if d.is_clean() && stale.is_empty() {
        return Found::Equal;
    }
    let mut diff = d.to_string();
    for (t, c) in &stale {
        diff.push_str(&drift::report::unexpected_chain(t, c));
    }
    let summary = drift::report::iptables_summary(&d.family.to_string(), &d, stale.len());
    Found::Differs { summary, diff }
}

/// [`Found::Interrupted`] when every table of `live` holding meshcap's state holds exactly
/// the planned rules of that table (nothing foreign inside the `ISTIO_*` chains, no stale
/// chain), and every other planned table holds nothing of meshcap's: only planned objects
/// are missing, and only whole tables, as an interrupted restore of this plan leaves them.
fn interrupted(planned: &Ruleset, live: &SaveDump, ids: &Ids) -> Option<Found> {
    let (mut applied, mut missing) = (Vec::new(), Vec::new());
    for name in TableName::ALL {
        let planned_table = Ruleset {
            family: planned.family,
            tables: planned.table(name).into_iter().cloned().collect(),
        };
        let live_table = SaveDump {
            tables: live
                .tables
                .iter()
                .filter(|t| t.name == name.as_str())
                .cloned()
                .collect(),
        };
        let present = live_table.has_istio_state() || !planned_builtin_present(&planned_table, &live_table).is_empty();
        if !present {
            if !planned_table.is_empty() {
                missing.push(name);
            }
            continue;
        }
        if !drift::compare(&planned_table, &live_table, ids).is_clean()
            || !drift::stale_chains(&planned_table, &live_table).is_empty()
        {
            return None;
        }
        applied.push(name);
    }
    (!applied.is_empty() && !missing.is_empty()).then_some(Found::Interrupted { applied, missing })
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

fn entry_line(op: &str, chain: &str, e: &SavedEntry) -> String {
    let mut line = format!("{op} {}", requote(chain));
    for t in &e.tokens {
        line.push(' ');
        line.push_str(&requote(t));
    }
    line
}

/// Up to this many of meshcap's rules in one chain are deleted one `-D` at a time; past it
/// the chain is rebuilt (flushed, its foreign rules appended again in order), since each
/// `-D` searches the chain and many of them made cleanup quadratic: 16,000 `-c` interfaces
/// took 5.6 s to clean, 300 × 300 `-k`/`-i` 134 s. Below it, `-D` keeps the
/// foreign rules' counters and any rule added after the dump was read.
const DELETE_MAX: usize = 8;

/// Why a live rule of a chain other than `ISTIO_*` is meshcap's.
#[derive(Clone, Copy)]
enum Kind {
    Jump,
    Planned,
    Shape,
}

/// The cleanup of what is live, per table: remove every jump to an `ISTIO_*` chain outside
/// those chains, every planned built-in rule that is present and, where meshcap's state is
/// there, every built-in rule of a shape only meshcap's plans produce
/// ([`super::shapes`]: so a cleanup without the apply's flags removes them too); then flush
/// every `ISTIO_*` chain, then delete them. Foreign rules and chains are left alone, in order.
/// Every token read from the live state is quoted as iptables-restore reads it back.
pub(crate) fn cleanup_lines(planned: &Ruleset, live: &SaveDump) -> BTreeMap<TableName, Vec<String>> {
    let mut out: BTreeMap<TableName, Vec<String>> = BTreeMap::new();
    let shapes = Shapes::of(live);
    for table in &live.tables {
        let Some(t) = TableName::from_name(&table.name) else {
            continue;
        };
        let planned_counts = planned.table(t).map(planned_builtin_counts).unwrap_or_default();
        let mut istio_chains = Vec::new();
        // The `-D` lines in the order Istio's cleanup deletes (and the goldens hold): jumps
        // first, then the planned rules per built-in chain in hook order, then the shapes;
        // rebuilt chains after them.
        let (mut jumps, mut planned_lines, mut shaped, mut rebuilt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (chain, entries) in table.resolved() {
            if is_istio_name(&chain) {
                istio_chains.push(chain);
                continue;
            }
            let hook = ChainName::from_name(&chain).and_then(|c| match c {
                ChainName::Builtin(h) => Some(h),
                ChainName::Istio(_) => None,
            });
            // Which entries of this chain are meshcap's: planned ones are matched once each,
            // in order; the rest by their jump or by their shape.
            let mut counts = planned_counts.get(chain.as_str()).cloned().unwrap_or_default();
            let ours: Vec<Option<Kind>> = entries
                .iter()
                .map(|e| {
                    if take(&mut counts, e) {
                        Some(Kind::Planned)
                    } else if e.jumps_to_istio() {
                        Some(Kind::Jump)
                    } else if shapes
                        .as_ref()
                        .zip(hook)
                        .is_some_and(|(s, h)| e.rule.as_ref().is_ok_and(|r| s.is_ours(t, h, &r.canonical())))
                    {
                        Some(Kind::Shape)
                    } else {
                        None
                    }
                })
                .collect();
            let count = ours.iter().filter(|o| o.is_some()).count();
            if count == 0 {
                continue;
            }
            if count <= DELETE_MAX {
                for (e, kind) in entries.iter().zip(&ours) {
                    let line = entry_line("-D", &chain, e);
                    match kind {
                        Some(Kind::Jump) => jumps.push(line),
                        Some(Kind::Planned) => planned_lines.push((hook.map(|h| h as usize), line)),
                        Some(Kind::Shape) => shaped.push(line),
                        None => {}
                    }
                }
            } else {
                rebuilt.push(format!("-F {}", requote(&chain)));
                rebuilt.extend(
                    entries
                        .iter()
                        .zip(&ours)
                        .filter(|(_, o)| o.is_none())
                        .map(|(e, _)| entry_line("-A", &chain, e)),
                );
            }
        }
        planned_lines.sort_by_key(|(hook, _)| *hook);
        let lines: Vec<String> = jumps
            .into_iter()
            .chain(planned_lines.into_iter().map(|(_, l)| l))
            .chain(shaped)
            .chain(rebuilt)
            .collect();
        if !lines.is_empty() {
            out.entry(t).or_default().extend(lines);
        }
        if !istio_chains.is_empty() {
            let lines = out.entry(t).or_default();
            lines.extend(istio_chains.iter().map(|c| format!("-F {}", requote(c))));
            lines.extend(istio_chains.iter().map(|c| format!("-X {}", requote(c))));
        }
    }
    out
}

/// A restore input: per table (in table order), the cleanup lines, then the planned lines.
/// Each table's block is committed atomically, so old and new never coexist in one table.
pub(crate) fn restore_input(cleanup: &BTreeMap<TableName, Vec<String>>, planned: Option<&Ruleset>) -> String {
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

/// The guardrail rules (istio-compat §5.5): DROP TCP and UDP in filter INPUT, FORWARD and OUTPUT.
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
pub(crate) fn guardrails_input(live: &SaveDump) -> String {
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
pub(crate) fn guardrails_removal() -> String {
    let mut out = String::from("* filter\n");
    for line in guardrail_deletes() {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

/// The filter-table lines that delete one copy of each guardrail.
pub(crate) fn guardrail_deletes() -> Vec<String> {
    guardrails()
        .into_iter()
        .map(|(chain, rule)| format!("-D {chain} {}", rule_spec(&rule)))
        .collect()
}

/// Whether the whole guardrail set is live: what a meshcap killed during `--reconcile` leaves
/// behind (TCP and UDP dropped for good, since the rules may well be in place). Holding the
/// namespace lock, meshcap knows no other run is rebuilding right now.
pub(crate) fn guardrails_present(live: &SaveDump) -> bool {
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
pub(crate) fn tables_of(input: &str) -> Vec<TableName> {
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
pub(crate) fn rollback_input(before: &str, tables: &[TableName], guardrails_on: bool) -> String {
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
        assert_eq!(found(&rs, &dump(""), &Ids::default()), Found::Absent);
        assert_eq!(
            found(
                &rs,
                &dump("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j KUBE\nCOMMIT\n"),
                &Ids::default()
            ),
            Found::Absent
        );
        assert_eq!(found(&rs, &dump(&payload), &Ids::default()), Found::Equal);
        let with_stale = payload.replace("COMMIT", "-N ISTIO_DIVERT\nCOMMIT");
        let Found::Differs { diff, .. } = found(&rs, &dump(&with_stale), &Ids::default()) else {
            panic!("a stale empty chain is drift")
        };
        assert!(diff.contains("ISTIO_DIVERT"), "{diff}");
        let other = restore_payload(&plan(&["-b", "*", "-i", "*", "-p", "15002"]));
        assert!(matches!(
            found(&rs, &dump(&other), &Ids::default()),
            Found::Differs { .. }
        ));
    }

    #[test]
    fn a_table_missing_whole_is_interrupted_or_drift_never_equal() {
        let rs = plan(&["-m", "TPROXY", "-b", "*"]);
        let payload = restore_payload(&rs);
        let nat = rs.table(TableName::Nat).unwrap().ops.len();
        let interrupted = |applied: TableName, missing: TableName| Found::Interrupted {
            applied: vec![applied],
            missing: vec![missing],
        };
        let mangle = crate::iptables::render::only_tables(&payload, &["mangle"]);
        assert_eq!(
            found(&rs, &dump(&mangle), &Ids::default()),
            interrupted(TableName::Mangle, TableName::Nat)
        );
        let builtin_nat = format!("{mangle}*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
        assert_eq!(
            found(&rs, &dump(&builtin_nat), &Ids::default()),
            interrupted(TableName::Mangle, TableName::Nat)
        );
        assert_eq!(
            found(
                &rs,
                &dump(&crate::iptables::render::only_tables(&payload, &["nat"])),
                &Ids::default()
            ),
            interrupted(TableName::Nat, TableName::Mangle)
        );
        // Not this plan's half: drift, and the summary counts the missing table's rules.
        let tampered = mangle.replace("COMMIT\n", "-A ISTIO_DIVERT -p udp -j RETURN\nCOMMIT\n");
        let Found::Differs { summary, diff } = found(&rs, &dump(&tampered), &Ids::default()) else {
            panic!("a foreign rule and a missing table are drift")
        };
        assert_eq!(summary, format!("IPv4: {nat} missing, 1 unexpected, 0 misordered"));
        assert!(
            diff.contains("+ -t nat -A OUTPUT -j ISTIO_OUTPUT  # missing, planned #1\n"),
            "{diff}"
        );
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
