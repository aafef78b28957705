//! Drift for the nftables backend: meshcap's three `inet` tables as the kernel holds them
//! ([`crate::nft::netlink::to_ir`]) against the state the plan's transaction leaves
//! ([`crate::nft::ir::planned`]), chain by chain and in order, as for iptables
//! (`super::diff_chain`). The report's `+`/`-` lines are spelled in `super::report`.
//!
//! Rules are compared in a canonical form ([`key`]) that undoes what nft normalises when it
//! lists a ruleset (the `meta l4proto` a port match implies, host bits and `/32`, the order of
//! a `ct state` set, `meta` before `skuid`). Chains and tables that should not exist, missing
//! chains and base chains with another type, hook, priority or policy count too, and so do
//! sets, maps and other objects in meshcap's tables (meshcap makes none). `check
//! --native-nftables` and the nft apply backend's state check both use [`compare`].

use std::collections::BTreeSet;

use serde::Serialize;

use super::{DriftEntry, DriftKind, Item, diff_chain};
use crate::model::{Match, Rule};
use crate::nft::ir::{ChainState, NftRule, NftState, Object, StateRule};
use crate::nft::model::nft_rule_model;
use crate::nft::text as nft;
use crate::sys::host::Ids;
use crate::values::Family;

/// A rule's canonical form and the family it is restricted to.
pub(crate) type RuleKey = (Option<Family>, Rule);

/// The canonical form two spellings of one rule share: the model rule in the kernel's spelling
/// (`drift::kernel_spelling`: owners as ids, `a-a` as `a`), matches sorted and deduplicated,
/// prefixes without host bits, `ct state` and port sets sorted, and the family it is
/// restricted to. `None` for a rule the model cannot say.
pub fn key(rule: &NftRule, ids: &Ids) -> Option<RuleKey> {
    let m = nft_rule_model(rule).ok()?;
    let matches = m
        .rule
        .matches
        .iter()
        .map(|x| {
            let mut x = match x {
                Match::ConntrackState(states) => {
                    let mut states = states.clone();
                    states.sort();
                    Match::ConntrackState(states)
                }
                Match::DestinationIn(cidrs) => {
                    Match::DestinationIn(crate::plan::compact::normalise_cidrs(cidrs.clone()))
                }
                // A port set is merged (nft's auto-merge) and read back sorted.
                Match::DestinationPorts { negated, ports } => Match::DestinationPorts {
                    negated: *negated,
                    ports: crate::plan::compact::normalise_ports(ports.clone()),
                },
                other => other.clone(),
            };
            // Owners as ids, `80-80` as `80` (found by fuzzing, `roundtrip_netlink`: `-q
            // 80:80` made every re-run report drift).
            super::kernel_spelling(&mut x, ids);
            x
        })
        .collect();
    let mut canonical = Rule::new(matches, m.rule.target).canonical();
    canonical.matches.dedup();
    Some((m.family, canonical))
}

/// What is wrong with a chain as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChainIssue {
    Missing,
    Unexpected,
    /// A base chain with another type, hook or priority.
    Differs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ChainDrift {
    pub(crate) table: String,
    pub(crate) chain: String,
    pub(crate) issue: ChainIssue,
    /// `add chain …` as planned (missing, differs) or as live (unexpected).
    pub(crate) text: String,
}

/// One rule's difference (the same shape as the iptables backend's).
pub(crate) type RuleDrift = DriftEntry;

/// The difference between the planned and the live nftables ruleset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftDrift {
    pub(crate) rules: Vec<RuleDrift>,
    pub(crate) chains: Vec<ChainDrift>,
    /// meshcap's tables that exist but should not.
    pub(crate) unexpected_tables: Vec<String>,
    /// meshcap's tables that should exist but do not.
    pub(crate) missing_tables: Vec<String>,
    /// Sets, maps and other objects in meshcap's tables.
    pub(crate) unexpected_objects: Vec<Object>,
}

impl NftDrift {
    pub fn is_clean(&self) -> bool {
        self.rules.is_empty()
            && self.chains.is_empty()
            && self.unexpected_tables.is_empty()
            && self.missing_tables.is_empty()
            && self.unexpected_objects.is_empty()
    }

    pub(crate) fn count(&self, kind: DriftKind) -> usize {
        self.rules.iter().filter(|r| r.kind == kind).count()
    }
}

/// Compares the planned ruleset with the live one.
pub fn compare(planned: &NftState, live: &NftState, ids: &Ids) -> NftDrift {
    let mut d = NftDrift {
        unexpected_tables: live.tables.difference(&planned.tables).cloned().collect(),
        missing_tables: planned.tables.difference(&live.tables).cloned().collect(),
        unexpected_objects: live.objects.iter().cloned().collect(),
        ..NftDrift::default()
    };
    let names: BTreeSet<&(String, String)> = planned
        .chains
        .keys()
        .chain(live.chains.keys().filter(|(t, _)| planned.tables.contains(t)))
        .collect();
    for name in names {
        let (table, chain) = name;
        let empty = ChainState::default();
        let (p, l) = (planned.chains.get(name), live.chains.get(name));
        match (p, l) {
            (Some(p), None) => d.chains.push(ChainDrift {
                table: table.clone(),
                chain: chain.clone(),
                issue: ChainIssue::Missing,
                text: nft::add_chain(table, chain, p.base.as_ref()),
            }),
            (None, Some(l)) => d.chains.push(ChainDrift {
                table: table.clone(),
                chain: chain.clone(),
                issue: ChainIssue::Unexpected,
                text: nft::add_chain(table, chain, l.base.as_ref()),
            }),
            (Some(p), Some(l)) if p.base != l.base => d.chains.push(ChainDrift {
                table: table.clone(),
                chain: chain.clone(),
                issue: ChainIssue::Differs,
                text: format!(
                    "{} (live: {})",
                    nft::add_chain(table, chain, p.base.as_ref()),
                    nft::add_chain(table, chain, l.base.as_ref())
                ),
            }),
            _ => {}
        }
        let keyed = |rules: &[StateRule]| -> Vec<Item<RuleKey>> {
            rules
                .iter()
                .enumerate()
                .map(|(i, r)| Item {
                    key: r.stmts.as_ref().ok().and_then(|s| key(s, ids)),
                    text: r.text.clone(),
                    at: i + 1,
                })
                .collect()
        };
        let planned_rules = keyed(&p.unwrap_or(&empty).rules);
        let live_rules = keyed(&l.unwrap_or(&empty).rules);
        diff_chain(table, chain, &planned_rules, &live_rules, &mut d.rules);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;
    use crate::nft::ir::{BaseChain, ChainType, Direction, NftHook, Policy, Stmt, Transaction, planned};
    use crate::nft::listing::{listing_json, parse_listing};
    use crate::values::{Port, PortSpec};

    fn tx(args: &[&str]) -> Transaction {
        let plan = crate::plan::testing::plan(args);
        crate::nft::lower::apply_transaction(&plan).unwrap()
    }

    #[test]
    fn keys_undo_nft_normalisation() {
        let ids = Ids::default();
        let planned = planned(&tx(&["-b", "*", "-m", "TPROXY", "--ipv6"]));
        let mangle_inbound = &planned.chains[&("istio-proxy-mangle".to_string(), "istio-inbound".to_string())];
        // `meta l4proto tcp tcp dport 15008` and `tcp dport 15008` are one rule.
        let spelled = |stmts: Vec<Stmt>| key(&NftRule { stmts }, &ids);
        let dport = Stmt::Port {
            proto: Proto::Tcp,
            direction: Direction::Destination,
            negated: false,
            ports: vec![PortSpec::Single(Port::new_const(15008))],
        };
        assert_eq!(
            spelled(vec![
                Stmt::L4Proto(Proto::Tcp),
                dport.clone(),
                Stmt::Counter,
                Stmt::Return
            ]),
            spelled(vec![dport, Stmt::Return])
        );
        // TPROXY mode's istio-inbound starts with the three inserted RETURN rules, IPv6 one second.
        let texts: Vec<&str> = mangle_inbound.rules.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts[1], "iifname lo meta l4proto tcp ip6 saddr ::6/128 counter return");
        assert_eq!(
            texts[3],
            "iifname lo meta l4proto tcp ip saddr 127.0.0.6/32 counter return"
        );
    }

    #[test]
    fn compares_in_order() {
        let ids = Ids::default();
        let p = planned(&tx(&["-b", "*", "-i", "*"]));
        assert!(compare(&p, &p, &ids).is_clean());
        // One rule gone, one added, two swapped, a chain and a table too many.
        let mut live = p.clone();
        let out = live
            .chains
            .get_mut(&("istio-proxy-nat".to_string(), "istio-output".to_string()))
            .unwrap();
        let gone = out.rules.remove(0);
        out.rules.swap(1, 2);
        out.rules.push(StateRule {
            stmts: Err("x".into()),
            text: "meta nfproto ipv4 counter return".into(),
        });
        live.chains
            .insert(("istio-proxy-nat".into(), "istio-extra".into()), ChainState::default());
        live.tables.insert("istio-proxy-raw".into());
        let d = compare(&p, &live, &ids);
        assert_eq!(d.count(DriftKind::Missing), 1, "{}", d.lines());
        assert_eq!(d.count(DriftKind::Misordered), 1, "{}", d.lines());
        assert_eq!(d.count(DriftKind::Unexpected), 1, "{}", d.lines());
        assert_eq!(d.unexpected_tables, ["istio-proxy-raw"]);
        let lines = d.lines();
        assert!(
            lines.contains(&format!(
                "+ add rule inet istio-proxy-nat istio-output {}  # missing, planned #1\n",
                gone.text
            )),
            "{lines}"
        );
        assert!(
            lines.contains("- add chain inet istio-proxy-nat istio-extra  # unexpected chain\n"),
            "{lines}"
        );
        assert!(
            lines.contains("- add table inet istio-proxy-raw  # unexpected table\n"),
            "{lines}"
        );
        // An empty live ruleset: every table missing.
        let d = compare(&p, &NftState::default(), &ids);
        assert_eq!(d.missing_tables, ["istio-proxy-nat"]);
        assert!(!d.is_clean());
    }

    #[test]
    fn every_statement_meshcap_writes_reads_back_from_nfts_json() {
        let ids = Ids::default();
        for args in [
            &[
                "-m",
                "TPROXY",
                "-b",
                "*",
                "-d",
                "8000:8100",
                "-c",
                "veth+,a@b",
                "--drop-invalid",
                "--ipv6",
            ][..],
            &[
                "--redirect-dns",
                "--capture-all-dns",
                "-u",
                "1,2",
                "-g",
                "3",
                "-o",
                "53,1000:2000",
                "--ipv6",
            ],
            &[
                "-b",
                "80,443",
                "-k",
                "eth1",
                "-i",
                "10.1.2.3/8,2001:db8::/32",
                "-x",
                "10.9.0.0/16",
                "--ipv6",
            ],
        ] {
            let p = planned(&tx(args));
            let back = parse_listing(&listing_json(&p)).unwrap();
            let d = compare(&p, &back, &ids);
            assert!(d.is_clean(), "{args:?}: {}", d.lines());
            assert_eq!(parse_listing(&listing_json(&back)).unwrap(), back, "{args:?}");
        }
    }

    #[test]
    fn objects_and_policies_are_drift() {
        let ids = Ids::default();
        let p = planned(&tx(&["-b", "*", "-i", "*"]));
        let mut live = p.clone();
        let extra = Object {
            table: "istio-proxy-nat".into(),
            kind: "set".into(),
            name: "extra".into(),
        };
        live.objects.insert(extra.clone());
        let out = live
            .chains
            .get_mut(&("istio-proxy-nat".to_string(), "output".to_string()))
            .unwrap();
        out.base.as_mut().unwrap().policy = Policy::Drop;
        let d = compare(&p, &live, &ids);
        assert_eq!(d.unexpected_objects, [extra]);
        let lines = d.lines();
        assert!(
            lines.contains("- add set inet istio-proxy-nat extra  # unexpected set\n"),
            "{lines}"
        );
        assert!(
            lines.contains(
                "(live: add chain inet istio-proxy-nat output { type nat hook output priority -100 ; policy drop ; })"
            ),
            "{lines}"
        );
        assert_eq!(
            d.summary(),
            "nftables: 0 missing, 0 unexpected, 0 misordered, 1 chain(s) and 0 table(s) differ, 1 unexpected object(s)"
        );
        // Through nft's JSON and back: the same differences.
        let back = parse_listing(&listing_json(&live)).unwrap();
        assert_eq!(compare(&p, &back, &ids), d);

        // A base chain on a hook meshcap never uses is drift too, shown as nft lists it.
        let mut live = p.clone();
        let ingress = BaseChain {
            kind: ChainType::Filter,
            hook: NftHook::Ingress,
            priority: 0,
            policy: Policy::Accept,
        };
        live.chains.insert(
            ("istio-proxy-nat".into(), "in".into()),
            ChainState {
                base: Some(ingress),
                rules: Vec::new(),
            },
        );
        let d = compare(&p, &live, &ids);
        assert_eq!(
            d.lines(),
            "- add chain inet istio-proxy-nat in { type filter hook ingress priority 0 ; }  # unexpected chain\n"
        );
    }

    /// The kernel-free round trip (the proptest twin of `fuzz/fuzz_targets/roundtrip_netlink.rs`):
    /// a configuration's apply transaction lowered to netlink messages (`from_ir`), through the
    /// wire (encode → decode is identity), committed by the kernel model on an empty namespace
    /// and again on top of its own result (a re-run), read back (`to_ir`): no drift from
    /// `planned(tx)` either time; the cleanup transaction then leaves none of meshcap's tables.
    mod round_trip {
        use super::*;
        use crate::nft::lower::{apply_transaction, cleanup_transaction};
        use crate::nft::netlink::Ruleset;
        use crate::nft::netlink::kernel_model::apply_and_read;
        use proptest::prelude::*;

        fn ids() -> Ids {
            Ids::from_texts(
                Some("root:x:0:0::/root:/bin/sh\nistio-proxy:x:1337:1337::/:/bin/false\n".into()),
                Some("root:x:0:\nistio-proxy:x:1337:\n".into()),
            )
        }

        fn list(item: BoxedStrategy<String>, n: usize) -> BoxedStrategy<String> {
            proptest::collection::vec(item, 0..n).prop_map(|v| v.join(",")).boxed()
        }

        fn port() -> BoxedStrategy<String> {
            prop_oneof![
                (1u16..=65535).prop_map(|p| p.to_string()),
                (1u16..=65000, prop_oneof![Just(0u16), 0u16..500]).prop_map(|(a, d)| format!("{a}:{}", a + d)),
            ]
            .boxed()
        }

        fn cidr() -> BoxedStrategy<String> {
            prop_oneof![
                (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| format!("{}.{}.{}.{}/{l}", a[0], a[1], a[2], a[3])),
                (any::<u16>(), 0u8..=128).prop_map(|(a, l)| format!("2001:db8:{a:x}::/{l}")),
            ]
            .boxed()
        }

        fn iface() -> BoxedStrategy<String> {
            prop_oneof![
                Just("eth0".to_string()),
                Just("veth+".to_string()),
                Just("lo".to_string())
            ]
            .boxed()
        }

        fn owner() -> BoxedStrategy<String> {
            prop_oneof![
                (0u32..70000).prop_map(|n| n.to_string()),
                Just("istio-proxy".to_string())
            ]
            .boxed()
        }

        prop_compose! {
            fn flags()(
                lists in (list(port(), 5), list(port(), 5), list(port(), 4), list(cidr(), 6), list(cidr(), 6)),
                more in (list(iface(), 3), list(iface(), 3), list(owner(), 3), list(owner(), 3)),
                switches in proptest::collection::vec(any::<bool>(), 7),
            ) -> (Vec<String>, bool, bool) {
                let (b, d, o, i, x) = lists;
                let (k, c, u, g) = more;
                let b = if switches[6] { "*".to_string() } else { b };
                let mut flags = Vec::new();
                for (flag, value) in [("-b", b), ("-d", d), ("-o", o), ("-i", i), ("-x", x), ("-k", k), ("-c", c), ("-u", u), ("-g", g)] {
                    if !value.is_empty() {
                        flags.push(flag.to_string());
                        flags.push(value);
                    }
                }
                for (on, flag) in [(switches[0], "-m=TPROXY"), (switches[1], "--redirect-dns"), (switches[2], "--capture-all-dns"), (switches[3], "--drop-invalid")] {
                    if on {
                        flags.push(flag.to_string());
                    }
                }
                (flags, switches[4], switches[5])
            }
        }

        fn check(tx: &Transaction, before: &Ruleset, ids: &Ids) -> Result<Ruleset, String> {
            let (state, after) = apply_and_read(before, tx, ids).map_err(|e| format!("{e:?}"))?;
            let drift = compare(&planned(tx), &state, ids);
            if drift.is_clean() {
                Ok(after)
            } else {
                Err(format!("drift after the round trip: {drift:?}\ntx:\n{tx}"))
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn apply_reads_back_as_planned((flags, ipv6, compact) in flags()) {
                let words: Vec<&str> = flags.iter().map(String::as_str).collect();
                let plan = crate::plan::testing::plan_of(&words, ipv6);
                let plan = if compact { crate::plan::compact::plan(plan, crate::model::Backend::Nft) } else { plan };
                let tx = apply_transaction(&plan).expect("an accepted configuration lowers");
                let ids = ids();
                let first = check(&tx, &Ruleset::default(), &ids).map_err(TestCaseError::fail)?;
                let again = check(&tx, &first, &ids).map_err(TestCaseError::fail)?;
                // The cleanup's planned state is empty: anything left is drift.
                check(&cleanup_transaction(), &again, &ids).map_err(TestCaseError::fail)?;
            }
        }

        /// Found by `roundtrip_netlink`: the kernel's `80-80` reads back as port 80.
        #[test]
        fn a_one_port_range_is_no_drift() {
            let plan = crate::plan::testing::plan_of(&["-b", "*", "-q", "80:80", "-o", "22:22,53:53,8000:8010"], true);
            let tx = apply_transaction(&plan).unwrap();
            let first = check(&tx, &Ruleset::default(), &ids()).unwrap();
            check(&tx, &first, &ids()).unwrap();
        }

        #[test]
        fn every_knob_reads_back_as_planned() {
            let ids = ids();
            for knobs in crate::plan::testing::KNOBS {
                for ipv6 in [false, true] {
                    let plan = crate::plan::testing::plan_of(knobs, ipv6);
                    for plan in [
                        plan.clone(),
                        crate::plan::compact::plan(plan, crate::model::Backend::Nft),
                    ] {
                        let tx = apply_transaction(&plan).unwrap();
                        let first = check(&tx, &Ruleset::default(), &ids).unwrap_or_else(|e| panic!("{knobs:?}: {e}"));
                        check(&tx, &first, &ids).unwrap_or_else(|e| panic!("{knobs:?} again: {e}"));
                    }
                }
            }
        }
    }
}
