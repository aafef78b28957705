//! Order-sensitive comparison of a planned ruleset with a live dump.
//!
//! Inside `ISTIO_*` chains the live rules must equal the planned ones, in order. In built-in
//! chains only meshcap's rules are compared (rules equal to a planned one, and any jump to an
//! `ISTIO_*` chain); foreign rules there are ignored. Rules are compared in their canonical form
//! (`Rule::canonical`, see `key`), so iptables-save's reordering of matches and masking of
//! host bits, its numeric owners (`--uid-owner 1337` for the planned `istio-proxy`) and its
//! `--dport 1` for the planned range `1:1` do not count as drift. A rule that is both missing
//! at its planned place and present elsewhere is reported once, as misordered.

pub mod nft;
pub(crate) mod report;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::Hash;

use crate::iptables::parse::{SaveDump, SavedEntry, is_istio_name};
use crate::iptables::render::rule_spec;
use crate::model::{ChainName, Match, Rule, Ruleset, TableName};
use crate::sys::host::Ids;
use crate::values::{Family, Owner, PortSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DriftKind {
    /// Planned, not in the kernel.
    Missing,
    /// In the kernel, not planned.
    Unexpected,
    /// In both, at another place.
    Misordered,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DriftEntry {
    pub(crate) table: String,
    pub(crate) chain: String,
    pub(crate) kind: DriftKind,
    /// The rule as iptables arguments after the chain.
    pub(crate) rule: String,
    /// 1-based position in the planned chain (missing, misordered).
    pub(crate) planned_at: Option<usize>,
    /// 1-based position in the live chain (unexpected, misordered).
    pub(crate) live_at: Option<usize>,
}

/// The differences of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub(crate) family: Family,
    pub(crate) entries: Vec<DriftEntry>,
    /// Whether the live dump held anything of meshcap's at all.
    pub(crate) live_has_istio: bool,
}

impl Drift {
    pub(crate) fn is_clean(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn count(&self, kind: DriftKind) -> usize {
        self.entries.iter().filter(|e| e.kind == kind).count()
    }
}

/// One side's rule: its canonical form (None when not understood; it then matches nothing),
/// display text and 1-based position. The key type is the backend's rule model (`Rule` here,
/// the nft rule in `nft_drift`), so both backends share one diff.
pub(crate) struct Item<K> {
    pub(crate) key: Option<K>,
    pub(crate) text: String,
    pub(crate) at: usize,
}

/// The comparison key of a rule: its canonical form in the kernel's spelling
/// ([`kernel_spelling`]). Both sides go through it.
pub(crate) fn key(rule: &Rule, ids: &Ids) -> Rule {
    let mut r = rule.canonical();
    for m in &mut r.matches {
        kernel_spelling(m, ids);
    }
    r.matches.sort();
    r
}

/// A match as the kernel keeps it, for both backends' comparison keys: user and group names as
/// the numeric ids `ids` resolves them to (the kernel keeps ids, and iptables-save and nft's
/// dump give them back; a name `ids` does not know stays a name, so it never matches an id),
/// and a range `a:a` as the port `a` (iptables-save prints `1` for `1:1`; nf_tables holds
/// `80-80` as `>= 80, <= 80`, read back as `80`).
pub(crate) fn kernel_spelling(m: &mut Match, ids: &Ids) {
    let port = |p: &mut PortSpec| {
        if let PortSpec::Range(lo, hi) = *p
            && lo == hi
        {
            *p = PortSpec::Single(lo);
        }
    };
    let owner = |o: &mut Owner, group: bool| {
        if let Some(id) = ids.id_of(o, group) {
            *o = Owner::Id(id);
        }
    };
    match m {
        Match::SourcePort { port: p, .. } | Match::DestinationPort { port: p, .. } => port(p),
        Match::DestinationPorts { ports, .. } => ports.iter_mut().for_each(port),
        Match::UidOwner { owner: o, .. } => owner(o, false),
        Match::GidOwner { owner: o, .. } => owner(o, true),
        _ => {}
    }
}

fn live_item(e: &SavedEntry, at: usize, ids: &Ids) -> Item<Rule> {
    match &e.rule {
        Ok(r) => Item {
            key: Some(key(r, ids)),
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

/// Above this many cells (planned × live rules left after trimming) the exact quadratic table
/// is not built; [`lcs_by_matching`] takes over (4 MiB of `u32`).
const MAX_LCS_CELLS: usize = 1 << 20;

/// Whether two rules are the same (an unknown rule never is).
fn same<K: PartialEq>(a: Option<&K>, b: Option<&K>) -> bool {
    a.is_some() && a == b
}

/// A longest common subsequence of two key lists (unknown keys, `None`, never match), as index
/// pairs. The common prefix and suffix are matched first (a chain in sync, or one rule off,
/// costs linear time and no table); what is left is solved exactly by dynamic programming when
/// small and by [`lcs_by_matching`] otherwise, so time and memory stay near-linear for chains
/// of thousands of rules.
pub(crate) fn common_subsequence<K: Eq + Hash>(a: &[Option<&K>], b: &[Option<&K>]) -> Vec<(usize, usize)> {
    let (n, m) = (a.len(), b.len());
    let mut pre = 0;
    while pre < n && pre < m && same(a[pre], b[pre]) {
        pre += 1;
    }
    let mut suf = 0;
    while suf < n - pre && suf < m - pre && same(a[n - 1 - suf], b[m - 1 - suf]) {
        suf += 1;
    }
    let (am, bm) = (&a[pre..n - suf], &b[pre..m - suf]);
    let middle = if am.len().saturating_mul(bm.len()) <= MAX_LCS_CELLS {
        lcs_table(am, bm)
    } else {
        lcs_by_matching(am, bm)
    };
    let mut pairs: Vec<(usize, usize)> = (0..pre).map(|i| (i, i)).collect();
    pairs.extend(middle.into_iter().map(|(i, j)| (i + pre, j + pre)));
    pairs.extend((0..suf).map(|k| (n - suf + k, m - suf + k)));
    pairs
}

fn keys<K>(items: &[Item<K>]) -> Vec<Option<&K>> {
    items.iter().map(|i| i.key.as_ref()).collect()
}

/// The exact LCS by the classic O(n·m) table.
fn lcs_table<K: Eq>(a: &[Option<&K>], b: &[Option<&K>]) -> Vec<(usize, usize)> {
    let (n, m) = (a.len(), b.len());
    let mut dp = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            dp[i][j] = if same(a[i], b[j]) {
                dp[i + 1][j + 1] + 1
            } else {
                dp[i + 1][j].max(dp[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut pairs) = (0, 0, Vec::new());
    while i < n && j < m {
        if same(a[i], b[j]) {
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

/// A common subsequence in O((n + m) log m): pair each planned rule with the first unused equal
/// live rule, then keep the longest run of pairs whose live positions increase (patience
/// sorting). Exact when no rule occurs twice in a chain (the usual case: a repeated rule
/// would be dead); with repeats it may keep fewer pairs than the optimum, which only reports
/// more rules as misordered, never a difference that is not there.
fn lcs_by_matching<K: Eq + Hash>(a: &[Option<&K>], b: &[Option<&K>]) -> Vec<(usize, usize)> {
    let mut positions: HashMap<&K, VecDeque<usize>> = HashMap::new();
    for (j, key) in b.iter().enumerate() {
        if let Some(k) = key {
            positions.entry(k).or_default().push_back(j);
        }
    }
    let pairs: Vec<(usize, usize)> = a
        .iter()
        .enumerate()
        .filter_map(|(i, key)| {
            let j = positions.get_mut((*key)?)?.pop_front()?;
            Some((i, j))
        })
        .collect();
    // Longest strictly increasing subsequence of the live positions.
    let mut tails: Vec<usize> = Vec::new(); // index into `pairs` of the smallest tail per length
    let mut prev: Vec<Option<usize>> = vec![None; pairs.len()];
    for (k, &(_, j)) in pairs.iter().enumerate() {
        let len = tails.partition_point(|&t| pairs[t].1 < j);
        prev[k] = len.checked_sub(1).map(|l| tails[l]);
        if len == tails.len() {
            tails.push(k);
        } else {
            tails[len] = k;
        }
    }
    let mut chosen = Vec::with_capacity(tails.len());
    let mut at = tails.last().copied();
    while let Some(k) = at {
        chosen.push(pairs[k]);
        at = prev[k];
    }
    chosen.reverse();
    chosen
}

/// Diffs one chain's planned and live rules into `out` (missing, unexpected, misordered): a
/// longest common subsequence of the keys ([`common_subsequence`]) stays; a planned rule
/// outside it that is live elsewhere (first come, first served, in live order) is misordered,
/// the rest missing or unexpected. Near-linear in time and memory.
pub(crate) fn diff_chain<K: Eq + Hash>(
    table: &str,
    chain: &str,
    planned: &[Item<K>],
    live: &[Item<K>],
    out: &mut Vec<DriftEntry>,
) {
    let (pk, lk) = (keys(planned), keys(live));
    let pairs = common_subsequence(&pk, &lk);
    let mut kept_p = vec![false; planned.len()];
    let mut kept_l = vec![false; live.len()];
    for &(i, j) in &pairs {
        kept_p[i] = true;
        kept_l[j] = true;
    }
    let mut elsewhere: HashMap<&K, VecDeque<usize>> = HashMap::new();
    for (j, key) in lk.iter().enumerate().filter(|(j, _)| !kept_l[*j]) {
        if let Some(k) = key {
            elsewhere.entry(k).or_default().push_back(j);
        }
    }
    let mut entries = Vec::new();
    for (i, p) in planned.iter().enumerate().filter(|(i, _)| !kept_p[*i]) {
        let found = pk[i].and_then(|k| elsewhere.get_mut(k)).and_then(VecDeque::pop_front);
        let (kind, live_at) = match found {
            Some(j) => {
                kept_l[j] = true;
                (DriftKind::Misordered, Some(live[j].at))
            }
            None => (DriftKind::Missing, None),
        };
        entries.push(DriftEntry {
            table: table.to_string(),
            chain: chain.to_string(),
            kind,
            rule: p.text.clone(),
            planned_at: Some(p.at),
            live_at,
        });
    }
    for (_, l) in live.iter().enumerate().filter(|(j, _)| !kept_l[*j]) {
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

/// Compares one family's plan with that family's live dump. Every planned table is walked
/// whether or not the dump lists it, so a table missing whole (as an apply interrupted between
/// two tables' commits leaves it) reports each of its planned rules as missing. `ids` resolves
/// owner names for the comparison (`key`): the accounts the restore resolved them with.
pub fn compare(planned: &Ruleset, live: &SaveDump, ids: &Ids) -> Drift {
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
                            key: Some(key(r, ids)),
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
                    .map(|(j, e)| live_item(e, j + 1, ids))
                    .collect()
            } else {
                // Built-in chain: only meshcap's rules take part.
                let planned_keys: BTreeSet<&Rule> = planned_rules.iter().filter_map(|p| p.key.as_ref()).collect();
                live_entries
                    .iter()
                    .enumerate()
                    .map(|(j, e)| live_item(e, j + 1, ids))
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

/// `ISTIO_*` chains that are live but not planned, as (table, chain).
pub(crate) fn stale_chains(planned: &Ruleset, live: &SaveDump) -> Vec<(String, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::parse::{Strictness, parse_save};
    use crate::iptables::render::restore_payload;

    fn plan_v4(args: &[&str]) -> Ruleset {
        let plan = crate::plan::testing::plan(args);
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
        let d = compare(&rs, &dump, &Ids::default());
        assert!(d.is_clean(), "{d}");
        assert_eq!(dump.to_ruleset(Family::V4).unwrap(), rs);
    }

    /// iptables-save prints owners as ids and the range `1:1` as `1`: neither is drift when the
    /// names resolve as the restore resolved them; a name that does not resolve is.
    #[test]
    fn kernel_spelling_of_owners_and_single_port_ranges_is_in_sync() {
        let rs = plan_v4(&["-b", "*", "-d", "15000:15099,1:1", "-u", "istio-proxy,7", "-g", "java"]);
        let kernel = save_like(&restore_payload(&rs))
            .replace("--dport 1:1 ", "--dport 1 ")
            .replace("--uid-owner istio-proxy", "--uid-owner 1337")
            .replace("--gid-owner java", "--gid-owner 2002");
        assert!(
            kernel.contains("--dport 1 -j RETURN") && !kernel.contains("istio-proxy"),
            "{kernel}"
        );
        let dump = parse_save(&kernel, Strictness::Strict).unwrap();
        let ids = Ids {
            passwd: Some("root:x:0:0::/:/bin/sh\nistio-proxy:x:1337:1337::/:/bin/false\n".into()),
            group: Some("java:x:2002:\n".into()),
        };
        let d = compare(&rs, &dump, &ids);
        assert!(d.is_clean(), "{d}");
        // Without the accounts the names stay names, which no id matches.
        let d = compare(&rs, &dump, &Ids::default());
        assert!(
            d.count(DriftKind::Missing) > 0 && d.count(DriftKind::Unexpected) > 0,
            "{d}"
        );
        // A range stays a range.
        let wide = save_like(&restore_payload(&rs)).replace("--dport 15000:15099 ", "--dport 15000 ");
        let d = compare(&rs, &parse_save(&wide, Strictness::Strict).unwrap(), &ids);
        assert!(!d.is_clean());
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
        let d = compare(&rs, &dump, &Ids::default());
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
        let d = compare(&rs, &parse_save(&text, Strictness::Strict).unwrap(), &Ids::default());
        assert_eq!((d.count(DriftKind::Misordered), d.entries.len()), (1, 1), "{d}");
    }

    fn items(keys: &[u32]) -> Vec<Item<Rule>> {
        use crate::model::{Match, Target};
        use crate::values::{Port, PortSpec};
        keys.iter()
            .enumerate()
            .map(|(i, &k)| Item {
                key: Some(Rule::new(
                    vec![
                        Match::Protocol(crate::model::Proto::Tcp),
                        Match::DestinationPort {
                            negated: false,
                            port: PortSpec::Single(Port::parse(&(k + 1).to_string()).unwrap()),
                        },
                    ],
                    Target::Return,
                )),
                text: k.to_string(),
                at: i + 1,
            })
            .collect()
    }

    fn is_common_subsequence(a: &[Item<Rule>], b: &[Item<Rule>], pairs: &[(usize, usize)]) -> bool {
        pairs.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && pairs.iter().all(|&(i, j)| same(a[i].key.as_ref(), b[j].key.as_ref()))
    }

    #[test]
    fn matching_lcs_equals_the_table_without_repeated_rules() {
        // A small deterministic generator (no dependency): permutations with a few rules
        // dropped and moved.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let n = 1 + next(40) as u32;
            let planned: Vec<u32> = (0..n).collect();
            let mut live: Vec<u32> = planned.iter().copied().filter(|_| next(5) != 0).collect();
            for _ in 0..next(4) {
                if live.len() > 1 {
                    let (x, y) = (next(live.len() as u64) as usize, next(live.len() as u64) as usize);
                    let v = live.remove(x);
                    live.insert(y.min(live.len()), v);
                }
            }
            live.extend((0..next(3)).map(|k| 1000 + k as u32));
            let (a, b) = (items(&planned), items(&live));
            let exact = lcs_table(&keys(&a), &keys(&b));
            let fast = lcs_by_matching(&keys(&a), &keys(&b));
            assert!(is_common_subsequence(&a, &b, &fast));
            assert_eq!(fast.len(), exact.len(), "{planned:?} {live:?}");
            let trimmed = common_subsequence(&keys(&a), &keys(&b));
            assert!(is_common_subsequence(&a, &b, &trimmed));
            assert_eq!(trimmed.len(), exact.len());
        }
    }

    #[test]
    fn long_chains_diff_in_near_linear_time_and_memory() {
        // 20,000 rules: the table would need 1.6 GB; one rule moved from the end to the front.
        let planned: Vec<u32> = (0..20_000).collect();
        let mut live = planned.clone();
        let last = live.pop().unwrap();
        live.insert(0, last);
        let (a, b) = (items(&planned), items(&live));
        let pairs = common_subsequence(&keys(&a), &keys(&b));
        assert_eq!(pairs.len(), 19_999);
        let mut out = Vec::new();
        diff_chain("nat", "ISTIO_OUTPUT", &a, &b, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, DriftKind::Misordered);
        assert_eq!((out[0].planned_at, out[0].live_at), (Some(20_000), Some(1)));
    }

    #[test]
    fn empty_live_state_is_all_missing_and_stale_chains_unexpected() {
        let rs = plan_v4(&[]);
        let d = compare(&rs, &SaveDump::default(), &Ids::default());
        assert_eq!(d.count(DriftKind::Missing), rs.table(TableName::Nat).unwrap().ops.len());
        assert!(!d.live_has_istio);
        let stale = "*mangle\n:ISTIO_DIVERT - [0:0]\n-A ISTIO_DIVERT -j ACCEPT\n-A PREROUTING -p tcp -j ISTIO_INBOUND\nCOMMIT\n";
        let d = compare(
            &Ruleset {
                family: Family::V4,
                tables: vec![],
            },
            &parse_save(stale, Strictness::Lenient).unwrap(),
            &Ids::default(),
        );
        assert_eq!(d.count(DriftKind::Unexpected), 2, "{d}");
    }

    #[test]
    fn a_planned_table_missing_whole_is_all_missing() {
        let rs = plan_v4(&["-m", "TPROXY", "-b", "*"]);
        let payload = save_like(&restore_payload(&rs));
        let nat = rs.table(TableName::Nat).unwrap().ops.len();
        assert!(nat > 0 && rs.table(TableName::Mangle).is_some());
        // Absent, a table present with only built-in chains, and one declaring no ISTIO_* chain.
        let mangle = crate::iptables::render::only_tables(&payload, &["mangle"]);
        let variants = [
            mangle.clone(),
            format!("{mangle}*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"),
            format!("{mangle}*nat\n:KUBE-X - [0:0]\n-A OUTPUT -j KUBE-X\nCOMMIT\n"),
        ];
        for text in variants {
            let d = compare(&rs, &parse_save(&text, Strictness::Strict).unwrap(), &Ids::default());
            let missing: Vec<&DriftEntry> = d.entries.iter().filter(|e| e.table == "nat").collect();
            assert_eq!(missing.len(), nat, "{text}\n{d}");
            assert!(
                missing
                    .iter()
                    .all(|e| e.kind == DriftKind::Missing && e.planned_at.is_some()),
                "{d}"
            );
            assert_eq!(d.count(DriftKind::Missing), nat, "{d}");
            assert!(
                d.summary().starts_with(&format!("IPv4: {nat} missing, 0 unexpected")),
                "{}",
                d.summary()
            );
            assert!(d.live_has_istio);
        }
    }
}
