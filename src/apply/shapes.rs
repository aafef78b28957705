//! The rules meshcap's plans put in built-in chains that do not jump to an `ISTIO_*` chain,
//! recognised by their shape alone, so that a cleanup given other flags than the apply (or
//! none, as `istio-clean-iptables` often is) still removes them. Only these shapes,
//! in these tables and chains, ever come from a plan (`plan::build`, steps 1, 2 and 19):
//!
//! | table/chain | shape | plan step |
//! |---|---|---|
//! | nat PREROUTING, mangle PREROUTING | `-i IF -j RETURN` | excluded (`-c`) and virtual (`-k`) interfaces |
//! | nat OUTPUT, mangle OUTPUT | `-o IF -j RETURN` | excluded interfaces (`-c`) |
//! | mangle PREROUTING | `-p tcp -m mark --mark M -j CONNMARK --save-mark` | TPROXY |
//! | mangle OUTPUT | `-p tcp -o IF -m mark --mark M -j RETURN` | TPROXY |
//! | mangle OUTPUT | `! -d LOOPBACK -p tcp -o IF -m owner --uid-owner/--gid-owner X -j MARK --set-mark M` | TPROXY |
//! | mangle OUTPUT | `-p tcp -m connmark --mark M -j CONNMARK --restore-mark` | TPROXY |
//!
//! The mark rules are meshcap's by shape alone. `-i IF -j RETURN` is a common shape, so an
//! interface-return rule is meshcap's only when its interface is one meshcap's plans name: a
//! virtual interface (`-k`: it is also matched by a jump to an `ISTIO_*` chain in nat
//! PREROUTING) or an excluded one (`-c`: nat PREROUTING returns `-i IF` *and* nat OUTPUT
//! returns `-o IF`). Shapes are looked for only where meshcap's state is there (an `ISTIO_*`
//! chain or a jump to one).

use std::collections::HashSet;

use crate::iptables::parse::SaveDump;
use crate::model::{Hook, Match, Proto, Rule, TableName, Target};

/// meshcap's rule shapes in one family's live dump.
pub(crate) struct Shapes {
    /// Interfaces meshcap's plans name (virtual and excluded ones), found in the dump.
    ifaces: HashSet<String>,
}

impl Shapes {
    /// The shapes to look for in `live`; `None` when nothing of meshcap's is there.
    pub(crate) fn of(live: &SaveDump) -> Option<Shapes> {
        if !live.has_istio_state() {
            return None;
        }
        let mut ifaces = HashSet::new();
        let (mut in_returns, mut out_returns) = (HashSet::new(), HashSet::new());
        if let Some(nat) = live.table(TableName::Nat) {
            for e in &nat.entries {
                let Ok(rule) = &e.rule else { continue };
                match (e.chain.as_str(), rule.matches.as_slice(), &rule.target) {
                    ("PREROUTING", [Match::InIface(i)], Target::Return) => {
                        in_returns.insert(i.as_str().to_string());
                    }
                    ("OUTPUT", [Match::OutIface(i)], Target::Return) => {
                        out_returns.insert(i.as_str().to_string());
                    }
                    ("PREROUTING", matches, _) if e.jumps_to_istio() => {
                        for m in matches {
                            if let Match::InIface(i) = m {
                                ifaces.insert(i.as_str().to_string());
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        ifaces.extend(in_returns.intersection(&out_returns).cloned());
        Some(Shapes { ifaces })
    }

    /// Whether `rule` (in canonical form: matches sorted) in `table`/`hook` has a shape only
    /// meshcap's plans give a rule of a built-in chain.
    pub(crate) fn is_ours(&self, table: TableName, hook: Hook, rule: &Rule) -> bool {
        use Match as M;
        let tcp = |m: &Match| matches!(m, M::Protocol(Proto::Tcp));
        let mark = |m: &Match| matches!(m, M::Mark { negated: false, .. });
        let named = |i: &crate::values::Iface| self.ifaces.contains(i.as_str());
        match (table, hook, rule.matches.as_slice(), &rule.target) {
            (TableName::Nat | TableName::Mangle, Hook::Prerouting, [M::InIface(i)], Target::Return) => named(i),
            (TableName::Nat | TableName::Mangle, Hook::Output, [M::OutIface(i)], Target::Return) => named(i),
            (TableName::Mangle, Hook::Prerouting, [p, m], Target::SaveMark) => tcp(p) && mark(m),
            (TableName::Mangle, Hook::Output, [M::OutIface(_), p, m], Target::Return) => tcp(p) && mark(m),
            (TableName::Mangle, Hook::Output, [M::OutIface(_), p, d, o], Target::SetMark(_)) => {
                tcp(p)
                    && matches!(d, M::Destination { negated: true, .. })
                    && matches!(
                        o,
                        M::UidOwner { negated: false, .. } | M::GidOwner { negated: false, .. }
                    )
            }
            (TableName::Mangle, Hook::Output, [p, M::ConnMark(_)], Target::RestoreMark) => tcp(p),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::parse::{Strictness, parse_save};
    use crate::iptables::render::restore_payload;
    use crate::values::Family;

    /// Every non-jump rule of a built-in chain in plans of many flag sets has a known shape,
    /// and common foreign rules do not.
    #[test]
    fn every_planned_builtin_rule_has_a_known_shape() {
        let sets: &[&[&str]] = &[
            &["-m", "TPROXY", "-c", "eth9", "-k", "veth9", "-i", "*", "-b", "*"],
            &[
                "-m",
                "TPROXY",
                "-u",
                "1337",
                "-g",
                "1337,7",
                "-i",
                "10.0.0.0/8",
                "-k",
                "v1,v2",
                "-c",
                "e1",
            ],
            &[
                "-c",
                "eth0,eth1",
                "-k",
                "kv",
                "-i",
                "10.0.0.0/8,fd00::/8",
                "--redirect-dns",
                "--capture-all-dns",
            ],
            &["-m", "TPROXY", "--drop-invalid", "-c", "x"],
        ];
        let mut seen = 0;
        for args in sets {
            let plan = crate::plan::testing::plan(args);
            for family in Family::ALL {
                let rs = plan.ruleset(family);
                let Some(shapes) = Shapes::of(&parse_save(&restore_payload(&rs), Strictness::Lenient).unwrap()) else {
                    continue;
                };
                for table in &rs.tables {
                    for (chain, rules) in table.resolved() {
                        let crate::model::ChainName::Builtin(hook) = chain else {
                            continue;
                        };
                        for rule in rules.iter().filter(|r| !matches!(r.target, Target::Jump(_))) {
                            seen += 1;
                            assert!(
                                shapes.is_ours(table.name, hook, &rule.canonical()),
                                "{args:?}: {} {chain:?} {rule:?}",
                                table.name
                            );
                        }
                    }
                }
            }
        }
        assert!(seen > 20, "{seen}");
        let foreign = parse_save(
            "*mangle\n-A PREROUTING -i lo -j RETURN\n-A OUTPUT -p tcp -j MARK --set-mark 5\n-A PREROUTING -i eth0 -j ACCEPT\n-A OUTPUT -p udp -m connmark --mark 1 -j CONNMARK --restore-mark\nCOMMIT\n*nat\n-A PREROUTING -i eth0 -p tcp -j RETURN\n-A OUTPUT -o lo -j ACCEPT\nCOMMIT\n",
            Strictness::Lenient,
        )
        .unwrap();
        let shapes = Shapes {
            ifaces: HashSet::from(["eth9".to_string()]),
        };
        for t in &foreign.tables {
            for e in &t.entries {
                let hook = match e.chain.as_str() {
                    "OUTPUT" => Hook::Output,
                    _ => Hook::Prerouting,
                };
                let rule = e.rule.as_ref().unwrap().canonical();
                assert!(!shapes.is_ours(t.table().unwrap(), hook, &rule), "{e:?}");
            }
        }
    }
}
