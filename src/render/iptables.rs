//! The iptables spelling of the model: iptables-restore payloads and single rule texts.
//!
//! The payload follows Istio's builder byte for byte (spec §4.1): tables in `filter`, `mangle`,
//! `nat`, `raw` order, `* <table>` headers, the `-N` lines first (first use as a rule's chain,
//! then as a jump target), the operations in generation order as `-A CHAIN …` / `-I CHAIN n …`,
//! `COMMIT`; every line ends with `\n`; an empty ruleset is the empty string.

use std::fmt::Write;

use crate::model::{Match, Op, Position, Proto, Rule, Ruleset, Target};

/// The iptables-restore input for a ruleset (`--noflush`).
pub fn restore_payload(rs: &Ruleset) -> String {
    let mut out = String::new();
    for table in &rs.tables {
        if table.ops.is_empty() {
            continue;
        }
        let _ = writeln!(out, "* {}", table.name);
        for chain in table.declared_chains() {
            let _ = writeln!(out, "-N {}", chain.as_str());
        }
        for op in &table.ops {
            write_op_line(&mut out, op);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// `-A CHAIN <rule>` or `-I CHAIN n <rule>`.
pub fn op_line(op: &Op) -> String {
    let mut out = String::new();
    write_op_line(&mut out, op);
    out
}

fn write_op_line(out: &mut String, op: &Op) {
    match op.position {
        Position::Append => {
            let _ = write!(out, "-A {}", op.chain);
        }
        Position::Insert(n) => {
            let _ = write!(out, "-I {} {}", op.chain, n);
        }
    }
    for_each_arg(&op.rule, |word| {
        out.push(' ');
        out.push_str(word);
    });
}

/// The rule as iptables arguments after the chain (matches, then `-j TARGET …`), joined by
/// single spaces.
pub fn rule_spec(rule: &Rule) -> String {
    let mut out = String::new();
    for_each_arg(rule, |word| {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    });
    out
}

/// The rule as iptables arguments after the chain.
pub fn rule_args(rule: &Rule) -> Vec<String> {
    let mut args = Vec::new();
    for_each_arg(rule, |word| args.push(word.to_string()));
    args
}

/// Feeds the rule's iptables arguments, one word at a time, to `emit`.
fn for_each_arg(rule: &Rule, mut emit: impl FnMut(&str)) {
    let mut buf = String::new();
    let mut show = |emit: &mut dyn FnMut(&str), value: &dyn std::fmt::Display| {
        buf.clear();
        let _ = write!(buf, "{value}");
        emit(&buf);
    };
    let not = |emit: &mut dyn FnMut(&str), negated: bool| {
        if negated {
            emit("!");
        }
    };
    let e: &mut dyn FnMut(&str) = &mut emit;
    for m in &rule.matches {
        match m {
            Match::InIface(i) => {
                e("-i");
                e(i.as_str());
            }
            Match::OutIface(i) => {
                e("-o");
                e(i.as_str());
            }
            Match::Protocol(p) => {
                e("-p");
                e(p.as_str());
            }
            Match::Source { negated, cidr } => {
                not(e, *negated);
                e("-s");
                show(e, cidr);
            }
            Match::Destination { negated, cidr } => {
                not(e, *negated);
                e("-d");
                show(e, cidr);
            }
            Match::SourcePort { negated, port } => {
                not(e, *negated);
                e("--sport");
                show(e, port);
            }
            Match::DestinationPort { negated, port } => {
                not(e, *negated);
                e("--dport");
                show(e, port);
            }
            Match::DestinationPorts { negated, ports } => {
                e("-m");
                e("multiport");
                not(e, *negated);
                e("--dports");
                let list = ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
                e(&list);
            }
            Match::UidOwner { negated, owner } => {
                e("-m");
                e("owner");
                not(e, *negated);
                e("--uid-owner");
                show(e, owner);
            }
            Match::GidOwner { negated, owner } => {
                e("-m");
                e("owner");
                not(e, *negated);
                e("--gid-owner");
                show(e, owner);
            }
            Match::ConntrackState(states) => {
                e("-m");
                e("conntrack");
                e("--ctstate");
                let list = states.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
                e(&list);
            }
            Match::Mark { negated, mark } => {
                e("-m");
                e("mark");
                not(e, *negated);
                e("--mark");
                show(e, mark);
            }
            Match::ConnMark(mark) => {
                e("-m");
                e("connmark");
                e("--mark");
                show(e, mark);
            }
        }
    }
    e("-j");
    match &rule.target {
        Target::Jump(c) => e(c.as_str()),
        Target::Return => e("RETURN"),
        Target::Accept => e("ACCEPT"),
        Target::Drop => e("DROP"),
        Target::Redirect { port } => {
            // Istio spells the UDP (DNS) redirect `--to-port` and the TCP ones `--to-ports`;
            // iptables accepts both.
            e("REDIRECT");
            e(if rule.protocol() == Some(Proto::Udp) {
                "--to-port"
            } else {
                "--to-ports"
            });
            show(e, port);
        }
        Target::Tproxy { mark, port } => {
            e("TPROXY");
            e("--tproxy-mark");
            e(&format!("{mark}/0xffffffff"));
            e("--on-port");
            show(e, port);
        }
        Target::SetMark(mark) => {
            e("MARK");
            e("--set-mark");
            show(e, mark);
        }
        Target::SaveMark => {
            e("CONNMARK");
            e("--save-mark");
        }
        Target::RestoreMark => {
            e("CONNMARK");
            e("--restore-mark");
        }
        Target::CtZone(zone) => {
            e("CT");
            e("--zone");
            show(e, zone);
        }
    }
}

/// One match as iptables arguments (e.g. `["!", "-d", "127.0.0.1/32"]`).
pub fn match_args(m: &Match) -> Vec<String> {
    let mut args = Vec::new();
    for_each_arg(&Rule::new(vec![m.clone()], Target::Return), |word| {
        args.push(word.to_string())
    });
    args.truncate(args.len() - 2); // `-j RETURN`
    args
}
