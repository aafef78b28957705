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
            out.push_str(&op_line(op));
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// `-A CHAIN <rule>` or `-I CHAIN n <rule>`.
pub fn op_line(op: &Op) -> String {
    let head = match op.position {
        Position::Append => format!("-A {}", op.chain),
        Position::Insert(n) => format!("-I {} {}", op.chain, n),
    };
    let body = rule_spec(&op.rule);
    if body.is_empty() {
        head
    } else {
        format!("{head} {body}")
    }
}

/// The rule as iptables arguments after the chain (matches, then `-j TARGET …`), joined by
/// single spaces.
pub fn rule_spec(rule: &Rule) -> String {
    rule_args(rule).join(" ")
}

/// The rule as iptables arguments after the chain.
pub fn rule_args(rule: &Rule) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |words: &[&str]| args.extend(words.iter().map(|w| w.to_string()));
    let not = |negated: bool| if negated { "!" } else { "" };
    for m in &rule.matches {
        match m {
            Match::InIface(i) => push(&["-i", i.as_str()]),
            Match::OutIface(i) => push(&["-o", i.as_str()]),
            Match::Protocol(p) => push(&["-p", p.as_str()]),
            Match::Source { negated, cidr } => push(&[not(*negated), "-s", &cidr.to_string()]),
            Match::Destination { negated, cidr } => push(&[not(*negated), "-d", &cidr.to_string()]),
            Match::SourcePort { negated, port } => push(&[not(*negated), "--sport", &port.to_string()]),
            Match::DestinationPort { negated, port } => push(&[not(*negated), "--dport", &port.to_string()]),
            Match::DestinationPorts { negated, ports } => {
                let list = ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
                push(&["-m", "multiport", not(*negated), "--dports", &list])
            }
            Match::UidOwner { negated, owner } => {
                push(&["-m", "owner", not(*negated), "--uid-owner", &owner.to_string()])
            }
            Match::GidOwner { negated, owner } => {
                push(&["-m", "owner", not(*negated), "--gid-owner", &owner.to_string()])
            }
            Match::ConntrackState(states) => {
                let list = states.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
                push(&["-m", "conntrack", "--ctstate", &list])
            }
            Match::Mark { negated, mark } => push(&["-m", "mark", not(*negated), "--mark", &mark.to_string()]),
            Match::ConnMark(mark) => push(&["-m", "connmark", "--mark", &mark.to_string()]),
        }
    }
    args.retain(|a| !a.is_empty());
    args.push("-j".into());
    match &rule.target {
        Target::Jump(c) => args.push(c.as_str().into()),
        Target::Return => args.push("RETURN".into()),
        Target::Accept => args.push("ACCEPT".into()),
        Target::Drop => args.push("DROP".into()),
        Target::Redirect { port } => {
            // Istio spells the UDP (DNS) redirect `--to-port` and the TCP ones `--to-ports`;
            // iptables accepts both.
            let option = if rule.protocol() == Some(Proto::Udp) {
                "--to-port"
            } else {
                "--to-ports"
            };
            args.extend(["REDIRECT".into(), option.into(), port.to_string()]);
        }
        Target::Tproxy { mark, port } => args.extend([
            "TPROXY".into(),
            "--tproxy-mark".into(),
            format!("{mark}/0xffffffff"),
            "--on-port".into(),
            port.to_string(),
        ]),
        Target::SetMark(mark) => args.extend(["MARK".into(), "--set-mark".into(), mark.to_string()]),
        Target::SaveMark => args.extend(["CONNMARK".into(), "--save-mark".into()]),
        Target::RestoreMark => args.extend(["CONNMARK".into(), "--restore-mark".into()]),
        Target::CtZone(zone) => args.extend(["CT".into(), "--zone".into(), zone.to_string()]),
    }
    args
}
