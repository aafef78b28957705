//! Order-sensitive comparison of the planned nftables state with the live one (the nft
//! counterpart of `drift`, sharing its per-chain diff).
//!
//! The planned state is what the kernel holds after the transaction meshcap applies
//! ([`expected`] plays `render::nft::apply_transaction` on an empty ruleset: its `add table` +
//! `flush table` and the removal of unused tables and chains make the result independent of
//! what was there before). The live state comes from `parse_nft`.
//!
//! What is compared, table by table of meshcap's three: the table's presence; its sets, maps
//! and other objects (meshcap makes none); its chains by name (their listing order is creation
//! order, which a reconfiguration may change, so it is not compared) with type, hook, priority
//! and policy; and each chain's rules **in order**. Rules are compared in a canonical form
//! ([`canonical`]) that removes what nft's listing changes without changing the meaning: the
//! `meta l4proto` that a `tcp|udp sport|dport` match implies (nft drops it as a dependency),
//! `meta skuid` vs `skuid`, the order of `ct state` flags and of set elements, host bits of
//! prefixes and `/32`/`/128` on single addresses. Counters' values are ignored; a missing or
//! extra `counter` is a difference.

use std::fmt;

use crate::drift::{DriftEntry, DriftKind, Item, diff_chain};
use crate::parse_nft::{BaseSpec, NftState, StateChain, StateRule, StateTable};
use crate::render::nft::{NftChain, NftOp, NftRule, NftTable, Stmt, Transaction};

/// What the kernel holds after `tx` runs in a namespace without meshcap's tables.
pub fn expected(tx: &Transaction) -> NftState {
    let mut st = NftState::default();
    for op in &tx.ops {
        match op {
            NftOp::AddTable(t) => {
                if st.table(*t).is_none() {
                    st.tables.push(StateTable::new(*t));
                }
            }
            NftOp::FlushTable(t) => {
                for c in st.table_mut(*t).map(|x| x.chains.as_mut_slice()).unwrap_or_default() {
                    c.rules.clear();
                }
            }
            NftOp::DeleteTable(t) => st.tables.retain(|x| x.table != *t),
            NftOp::AddChain(t, c) => {
                if let Some(table) = st.table_mut(*t)
                    && table.chain(c.name()).is_none()
                {
                    table.chains.push(StateChain {
                        name: c.name().to_string(),
                        base: match c {
                            NftChain::Base(h) => Some(BaseSpec::planned(*t, *h)),
                            NftChain::Regular(_) => None,
                        },
                        rules: Vec::new(),
                    });
                }
            }
            NftOp::DeleteChain(t, c) => {
                if let Some(table) = st.table_mut(*t) {
                    table.chains.retain(|x| x.name != c.name());
                }
            }
            NftOp::AddRule { table, chain, rule } | NftOp::InsertRule { table, chain, rule, .. } => {
                let Some(c) = st
                    .table_mut(*table)
                    .and_then(|t| t.chains.iter_mut().find(|c| c.name == chain.name()))
                else {
                    continue;
                };
                let r = StateRule::Known(rule.clone());
                match op {
                    NftOp::InsertRule { index, .. } => {
                        let at = (*index as usize).min(c.rules.len());
                        c.rules.insert(at, r);
                    }
                    _ => c.rules.push(r),
                }
            }
        }
    }
    st
}

/// The form in which two rules that mean the same compare equal (see the module docs).
pub fn canonical(rule: &NftRule) -> NftRule {
    let implied: Vec<_> = rule
        .stmts
        .iter()
        .filter_map(|s| match s {
            Stmt::Port { proto, .. } => Some(*proto),
            _ => None,
        })
        .collect();
    let stmts = rule
        .stmts
        .iter()
        .filter(|s| !matches!(s, Stmt::L4Proto(p) if implied.contains(p)))
        .map(|s| match s {
            Stmt::Owner {
                kind, negated, owner, ..
            } => Stmt::Owner {
                kind: *kind,
                negated: *negated,
                owner: owner.clone(),
                meta: false,
            },
            Stmt::CtState(states) => {
                let mut v = states.clone();
                v.sort();
                v.dedup();
                Stmt::CtState(v)
            }
            Stmt::Port {
                proto,
                direction,
                negated,
                ports,
            } => {
                let mut v = ports.clone();
                v.sort();
                v.dedup();
                Stmt::Port {
                    proto: *proto,
                    direction: *direction,
                    negated: *negated,
                    ports: v,
                }
            }
            Stmt::Addr {
                direction,
                negated,
                cidr,
            } => Stmt::Addr {
                direction: *direction,
                negated: *negated,
                cidr: cidr.network(),
            },
            other => other.clone(),
        })
        .collect();
    NftRule { stmts }
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftDriftEntry {
    /// A table planned and absent (missing), or present and not planned (unexpected).
    Table { kind: DriftKind, table: NftTable },
    /// A chain declaration; a base chain whose type, hook, priority or policy differs shows
    /// as its live declaration unexpected and its planned one missing.
    Chain {
        kind: DriftKind,
        table: NftTable,
        chain: String,
        base: Option<BaseSpec>,
    },
    /// A set, map, flowtable or named object in one of meshcap's tables (always unexpected).
    Object {
        table: NftTable,
        kind: String,
        name: String,
    },
    /// A rule (`table` is the nft table's name).
    Rule(DriftEntry),
}

impl NftDriftEntry {
    pub fn kind(&self) -> DriftKind {
        match self {
            NftDriftEntry::Table { kind, .. } | NftDriftEntry::Chain { kind, .. } => *kind,
            NftDriftEntry::Object { .. } => DriftKind::Unexpected,
            NftDriftEntry::Rule(e) => e.kind,
        }
    }
}

/// The differences between the planned and the live nftables state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NftDrift {
    pub entries: Vec<NftDriftEntry>,
    /// Whether any of meshcap's tables exists live.
    pub live_has_tables: bool,
}

impl NftDrift {
    pub fn is_clean(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn count(&self, kind: DriftKind) -> usize {
        self.entries.iter().filter(|e| e.kind() == kind).count()
    }

    /// A one-line summary, e.g. `nftables: 2 missing, 1 unexpected, 0 misordered`.
    pub fn summary(&self) -> String {
        format!(
            "nftables: {} missing, {} unexpected, {} misordered",
            self.count(DriftKind::Missing),
            self.count(DriftKind::Unexpected),
            self.count(DriftKind::Misordered)
        )
    }
}

fn sign(kind: DriftKind) -> char {
    match kind {
        DriftKind::Missing => '+',
        DriftKind::Unexpected | DriftKind::Misordered => '-',
    }
}

fn word(kind: DriftKind) -> &'static str {
    match kind {
        DriftKind::Missing => "missing",
        DriftKind::Unexpected => "unexpected",
        DriftKind::Misordered => "misordered",
    }
}

impl fmt::Display for NftDrift {
    /// `+` lines are planned and not live, `-` lines live and not planned, each written as the
    /// nft command that declares the object; a misordered rule shows as `-` at its live place
    /// and `+` at its planned place.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            match e {
                NftDriftEntry::Table { kind, table } => {
                    writeln!(f, "{} add table inet {table}  # {} table", sign(*kind), word(*kind))?
                }
                NftDriftEntry::Chain {
                    kind,
                    table,
                    chain,
                    base,
                } => {
                    let spec = base.as_ref().map(|b| format!(" {b}")).unwrap_or_default();
                    writeln!(
                        f,
                        "{} add chain inet {table} {chain}{spec}  # {} chain",
                        sign(*kind),
                        word(*kind)
                    )?
                }
                NftDriftEntry::Object { table, kind, name } => {
                    writeln!(f, "- add {kind} inet {table} {name}  # unexpected {kind}")?
                }
                NftDriftEntry::Rule(e) => {
                    let line = format!("add rule inet {} {} {}", e.table, e.chain, e.rule);
                    let (p, l) = (e.planned_at.unwrap_or(0), e.live_at.unwrap_or(0));
                    match e.kind {
                        DriftKind::Missing => writeln!(f, "+ {line}  # missing, planned #{p}")?,
                        DriftKind::Unexpected => writeln!(f, "- {line}  # unexpected, live #{l}")?,
                        DriftKind::Misordered => {
                            writeln!(f, "- {line}  # misordered, live #{l}")?;
                            writeln!(f, "+ {line}  # misordered, planned #{p}")?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn items(rules: &[StateRule]) -> Vec<Item<NftRule>> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| Item {
            key: match r {
                StateRule::Known(rule) => Some(canonical(rule)),
                StateRule::Unknown(_) => None,
            },
            text: r.to_string(),
            at: i + 1,
        })
        .collect()
}

/// Everything of `chain` as one side's entries (`kind` missing or unexpected).
fn whole_chain(table: NftTable, chain: &StateChain, kind: DriftKind, out: &mut Vec<NftDriftEntry>) {
    out.push(NftDriftEntry::Chain {
        kind,
        table,
        chain: chain.name.clone(),
        base: chain.base.clone(),
    });
    for item in items(&chain.rules) {
        out.push(NftDriftEntry::Rule(DriftEntry {
            table: table.name().to_string(),
            chain: chain.name.clone(),
            kind,
            rule: item.text,
            planned_at: (kind == DriftKind::Missing).then_some(item.at),
            live_at: (kind == DriftKind::Unexpected).then_some(item.at),
        }));
    }
}

/// Compares the planned state with the live one.
pub fn compare(planned: &NftState, live: &NftState) -> NftDrift {
    let mut out = Vec::new();
    for t in NftTable::ALL {
        let (p, l) = (planned.table(t), live.table(t));
        match (p, l) {
            (None, None) => {}
            (Some(p), None) => {
                out.push(NftDriftEntry::Table {
                    kind: DriftKind::Missing,
                    table: t,
                });
                for c in &p.chains {
                    whole_chain(t, c, DriftKind::Missing, &mut out);
                }
            }
            (p, Some(l)) => {
                if p.is_none() {
                    out.push(NftDriftEntry::Table {
                        kind: DriftKind::Unexpected,
                        table: t,
                    });
                }
                for (kind, name) in &l.objects {
                    out.push(NftDriftEntry::Object {
                        table: t,
                        kind: kind.clone(),
                        name: name.clone(),
                    });
                }
                let planned_chains = p.map(|p| p.chains.as_slice()).unwrap_or_default();
                for pc in planned_chains {
                    let Some(lc) = l.chain(&pc.name) else {
                        whole_chain(t, pc, DriftKind::Missing, &mut out);
                        continue;
                    };
                    if pc.base != lc.base {
                        for (kind, base) in [(DriftKind::Unexpected, &lc.base), (DriftKind::Missing, &pc.base)] {
                            out.push(NftDriftEntry::Chain {
                                kind,
                                table: t,
                                chain: pc.name.clone(),
                                base: base.clone(),
                            });
                        }
                    }
                    let mut rules = Vec::new();
                    diff_chain(t.name(), &pc.name, &items(&pc.rules), &items(&lc.rules), &mut rules);
                    out.extend(rules.into_iter().map(NftDriftEntry::Rule));
                }
                for lc in l
                    .chains
                    .iter()
                    .filter(|lc| !planned_chains.iter().any(|pc| pc.name == lc.name))
                {
                    whole_chain(t, lc, DriftKind::Unexpected, &mut out);
                }
            }
        }
    }
    NftDrift {
        entries: out,
        live_has_tables: !live.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_nft::{listing_json, parse_listing};
    use crate::render::nft::apply_transaction;

    fn state(args: &[&str]) -> NftState {
        expected(&apply_transaction(&crate::parse_nft::tests::test_plan(args)).unwrap())
    }

    #[test]
    fn expected_state_follows_inserts_and_removals() {
        let st = state(&["-m", "TPROXY", "-b", "*", "-i", "*"]);
        let names: Vec<NftTable> = st.tables.iter().map(|t| t.table).collect();
        assert_eq!(names, [NftTable::Nat, NftTable::Mangle], "raw is deleted again");
        let inbound = st.table(NftTable::Mangle).unwrap().chain("istio-inbound").unwrap();
        let first: Vec<String> = inbound.rules.iter().take(4).map(|r| r.to_string()).collect();
        // Spec §8.4: the step-19 inserts give mark, ::6, mark != 1338, 127.0.0.6.
        assert_eq!(
            first,
            [
                "meta l4proto tcp mark 1337 counter return",
                "iifname lo meta l4proto tcp ip6 saddr ::6/128 counter return",
                "iifname lo meta l4proto tcp mark != 1338 counter return",
                "iifname lo meta l4proto tcp ip saddr 127.0.0.6/32 counter return",
            ]
        );
        let nat = st.table(NftTable::Nat).unwrap();
        assert!(nat.chain("istio-output-dns").is_none(), "unused chains are deleted");
    }

    #[test]
    fn nfts_own_spelling_is_not_drift() {
        let planned = state(&["-b", "*", "-i", "10.1.2.3/8", "-d", "80,8000:8100"]);
        // What nft lists: no implied `meta l4proto`, `meta skuid`, masked prefixes, sorted sets.
        let mut live = planned.clone();
        for t in &mut live.tables {
            for c in &mut t.chains {
                for r in &mut c.rules {
                    if let StateRule::Known(rule) = r {
                        *rule = canonical(rule);
                    }
                }
            }
        }
        live.tables[0].chains.reverse();
        let d = compare(&planned, &live);
        assert!(d.is_clean(), "{d}");
        let via_json = parse_listing(&listing_json(Some("1.0.6"), &live)).unwrap().state;
        assert!(compare(&planned, &via_json).is_clean());
    }

    #[test]
    fn differences_are_named() {
        let planned = state(&["-b", "*", "-i", "*"]);
        assert!(compare(&planned, &planned).is_clean());
        let empty = compare(&planned, &NftState::default());
        assert!(!empty.live_has_tables);
        assert_eq!(empty.count(DriftKind::Unexpected), 0);
        assert!(
            empty
                .to_string()
                .starts_with("+ add table inet istio-proxy-nat  # missing table\n"),
            "{empty}"
        );

        let mut live = planned.clone();
        let nat = live.table_mut(NftTable::Nat).unwrap();
        let out = nat.chains.iter_mut().find(|c| c.name == "istio-output").unwrap();
        let last = out.rules.pop().unwrap();
        out.rules.insert(0, last);
        out.rules.push(StateRule::Unknown("{\"expr\":[]}".into()));
        nat.chains.push(StateChain {
            name: "stale".into(),
            base: None,
            rules: vec![],
        });
        nat.objects.push(("set".into(), "s".into()));
        let pre = nat.chains.iter_mut().find(|c| c.name == "prerouting").unwrap();
        pre.base.as_mut().unwrap().priority = -99;
        live.tables.push(StateTable::new(NftTable::Raw));
        let d = compare(&planned, &live);
        let text = d.to_string();
        for want in [
            "- add table inet istio-proxy-raw  # unexpected table\n",
            "- add set inet istio-proxy-nat s  # unexpected set\n",
            "- add chain inet istio-proxy-nat stale  # unexpected chain\n",
            "- add chain inet istio-proxy-nat prerouting { type nat hook prerouting priority -99 ; policy accept ; }  # unexpected chain\n",
            "+ add chain inet istio-proxy-nat prerouting { type nat hook prerouting priority -100 ; policy accept ; }  # missing chain\n",
            "- add rule inet istio-proxy-nat istio-output counter jump istio-redirect  # misordered, live #1\n",
            "- add rule inet istio-proxy-nat istio-output (not meshcap's syntax) {\"expr\":[]}  # unexpected, live #",
        ] {
            assert!(text.contains(want), "{want}\nin\n{text}");
        }
        assert_eq!(d.count(DriftKind::Misordered), 1, "{text}");
        assert_eq!(d.summary(), "nftables: 1 missing, 5 unexpected, 1 misordered");
    }
}
