//! An nftables rule read in the model's terms, so that the tracer can walk nft rules with the
//! same evaluator as iptables rules and drift can compare rules in one canonical form.

use super::ir::{Direction, NftChain, NftRule, OwnerKind, Stmt};
use crate::model::{Match, Rule, Target};
use crate::values::Family;

/// An nftables rule in the model's terms: its matches (with the words that spell each) and
/// its action, and the one family its `ip`/`ip6` matches or TPROXY restrict it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NftModel {
    pub(crate) rule: Rule,
    pub(crate) shown: Vec<String>,
    pub(crate) family: Option<Family>,
}

/// Reads an nftables rule in the model's terms. A port match brings its implied protocol
/// (`tcp dport` is `meta l4proto tcp tcp dport`); `tproxy … meta mark set M … accept` is
/// iptables' TPROXY target. Anything else the model cannot say is an error saying what.
pub(crate) fn nft_rule_model(rule: &NftRule) -> Result<NftModel, String> {
    let mut matches = Vec::new();
    let mut shown = Vec::new();
    let mut target: Option<Target> = None;
    let mut family: Option<Family> = None;
    let mut restrict = |f: Family| match family.replace(f) {
        Some(other) if other != f => Err("matches of both address families".to_string()),
        _ => Ok(()),
    };
    let mut stmts = rule.stmts.iter();
    while let Some(stmt) = stmts.next() {
        let word = stmt.to_string();
        let mut push = |m: Match| {
            matches.push(m);
            shown.push(word.clone());
        };
        let action = match stmt {
            Stmt::Iface { input: true, name } => {
                push(Match::InIface(name.clone()));
                None
            }
            Stmt::Iface { input: false, name } => {
                push(Match::OutIface(name.clone()));
                None
            }
            Stmt::L4Proto(p) => {
                push(Match::Protocol(*p));
                None
            }
            Stmt::CtState(states) => {
                push(Match::ConntrackState(states.clone()));
                None
            }
            Stmt::Addr {
                direction,
                negated,
                cidr,
            } => {
                restrict(cidr.family())?;
                push(match direction {
                    Direction::Source => Match::Source {
                        negated: *negated,
                        cidr: *cidr,
                    },
                    Direction::Destination => Match::Destination {
                        negated: *negated,
                        cidr: *cidr,
                    },
                });
                None
            }
            Stmt::AddrSet { direction, cidrs } => {
                for c in cidrs {
                    restrict(c.family())?;
                }
                match direction {
                    Direction::Destination => push(Match::DestinationIn(cidrs.clone())),
                    Direction::Source => return Err("a set of source addresses".into()),
                }
                None
            }
            Stmt::Port {
                proto,
                direction,
                negated,
                ports,
            } => {
                push(Match::Protocol(*proto));
                let negated = *negated;
                match (direction, ports.as_slice()) {
                    (Direction::Source, [port]) => push(Match::SourcePort { negated, port: *port }),
                    (Direction::Destination, [port]) => push(Match::DestinationPort { negated, port: *port }),
                    (Direction::Destination, _) => push(Match::DestinationPorts {
                        negated,
                        ports: ports.clone(),
                    }),
                    (Direction::Source, _) => return Err("a set of source ports".into()),
                }
                None
            }
            Stmt::Owner {
                kind, negated, owner, ..
            } => {
                let (negated, owner) = (*negated, owner.clone());
                push(match kind {
                    OwnerKind::Uid => Match::UidOwner { negated, owner },
                    OwnerKind::Gid => Match::GidOwner { negated, owner },
                });
                None
            }
            Stmt::Mark { negated, mark } => {
                push(Match::Mark {
                    negated: *negated,
                    mark: *mark,
                });
                None
            }
            Stmt::CtMark(mark) => {
                push(Match::ConnMark(*mark));
                None
            }
            Stmt::Counter => None,
            Stmt::Jump(NftChain::Regular(c)) => Some(Target::Jump(*c)),
            Stmt::Jump(NftChain::Base(_)) => return Err("a jump to a base chain".into()),
            Stmt::Return => Some(Target::Return),
            Stmt::Accept => Some(Target::Accept),
            Stmt::Drop => Some(Target::Drop),
            Stmt::Redirect(port) => Some(Target::Redirect { port: *port }),
            Stmt::Tproxy { family: f, port } => {
                if let Some(f) = f {
                    restrict(*f)?;
                }
                let (mut mark, mut accepted) = (None, false);
                for next in stmts.by_ref() {
                    match next {
                        Stmt::SetMark(m) if mark.is_none() => mark = Some(*m),
                        Stmt::Counter => {}
                        Stmt::Accept if !accepted => accepted = true,
                        _ => return Err("statements after tproxy other than a mark, counter and accept".into()),
                    }
                }
                match (mark, accepted) {
                    (Some(mark), true) => Some(Target::Tproxy { mark, port: *port }),
                    _ => return Err("tproxy without both a mark and accept".into()),
                }
            }
            Stmt::SetMark(m) => Some(Target::SetMark(*m)),
            Stmt::SaveMark => Some(Target::SaveMark),
            Stmt::RestoreMark => Some(Target::RestoreMark),
            Stmt::CtZone(z) => Some(Target::CtZone(*z)),
        };
        if let Some(a) = action {
            if target.is_some() {
                return Err("more than one action in a rule".into());
            }
            target = Some(a);
        }
    }
    let target = target.ok_or("a rule without a verdict or action")?;
    Ok(NftModel {
        rule: Rule::new(matches, target),
        shown,
        family,
    })
}
