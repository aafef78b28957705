//! The iptables spelling of the model: iptables-restore payloads and single rule texts.
//!
//! The payload follows Istio's builder byte for byte (istio-compat §4.1): tables in `filter`, `mangle`,
//! `nat`, `raw` order, `* <table>` headers, the `-N` lines first (first use as a rule's chain,
//! then as a jump target), the operations in generation order as `-A CHAIN …` / `-I CHAIN n …`,
//! `COMMIT`; every line ends with `\n`; an empty ruleset is the empty string.

use crate::model::{Match, Op, Position, Proto, Rule, Ruleset, Target};
use crate::speed::push_decimal;
use crate::values::{Mark, Spell};

/// The iptables-restore input for a ruleset (`--noflush`).
pub fn restore_payload(rs: &Ruleset) -> String {
    let mut out = String::new();
    write_restore_payload(&mut out, rs);
    out
}

/// [`restore_payload`], appended to `out`.
pub(crate) fn write_restore_payload(out: &mut String, rs: &Ruleset) {
    // Lines are rarely longer than 64 bytes: one allocation instead of a dozen regrowths.
    let ops: usize = rs.tables.iter().map(|t| t.ops.len()).sum();
    out.reserve(64 + ops * 64);
    for table in &rs.tables {
        if table.ops.is_empty() {
            continue;
        }
        out.push_str("* ");
        out.push_str(table.name.as_str());
        out.push('\n');
        for chain in table.declared_chains() {
            out.push_str("-N ");
            out.push_str(chain.as_str());
            out.push('\n');
        }
        for op in &table.ops {
            write_op_line(out, op);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
}

/// `-A CHAIN <rule>` or `-I CHAIN n <rule>`.
pub(crate) fn op_line(op: &Op) -> String {
    let mut out = String::new();
    write_op_line(&mut out, op);
    out
}

fn write_op_line(out: &mut String, op: &Op) {
    match op.position {
        Position::Append => {
            out.push_str("-A ");
            out.push_str(op.chain.as_str());
        }
        Position::Insert(n) => {
            out.push_str("-I ");
            out.push_str(op.chain.as_str());
            out.push(' ');
            push_decimal(out, n);
        }
    }
    for_each_arg(&op.rule, &mut Line(out));
}

/// The rule as iptables arguments after the chain (matches, then `-j TARGET …`), joined by
/// single spaces.
pub(crate) fn rule_spec(rule: &Rule) -> String {
    let mut out = String::new();
    for_each_arg(rule, &mut Line(&mut out));
    // Every word was written with a space before it.
    out.split_off(1.min(out.len()))
}

/// The rule as iptables arguments after the chain.
pub(crate) fn rule_args(rule: &Rule) -> Vec<String> {
    let mut args = Args(Vec::new());
    for_each_arg(rule, &mut args);
    args.0
}

/// Where the words of a rule go. Values are spelled straight into the destination (no
/// formatting machinery, no allocation per word): a render of thousands of rules spends its
/// time here.
trait Sink {
    fn word(&mut self, word: &str);
    fn value(&mut self, value: &dyn Spell);
    fn not(&mut self, negated: bool) {
        if negated {
            self.word("!");
        }
    }
}

/// Appends each word after a space.
struct Line<'a>(&'a mut String);

impl Sink for Line<'_> {
    fn word(&mut self, word: &str) {
        self.0.push(' ');
        self.0.push_str(word);
    }

    fn value(&mut self, value: &dyn Spell) {
        self.0.push(' ');
        value.spell(self.0);
    }
}

/// Collects the words.
struct Args(Vec<String>);

impl Sink for Args {
    fn word(&mut self, word: &str) {
        self.0.push(word.to_string());
    }

    fn value(&mut self, value: &dyn Spell) {
        let mut s = String::new();
        value.spell(&mut s);
        self.0.push(s);
    }
}

/// Feeds the rule's iptables arguments, one word at a time, to `sink`.
fn for_each_arg(rule: &Rule, sink: &mut impl Sink) {
    for m in &rule.matches {
        match_words(m, sink);
    }
    target_words(rule, sink);
}

/// The words of one match.
fn match_words(m: &Match, s: &mut impl Sink) {
    match m {
        Match::InIface(i) => {
            s.word("-i");
            s.word(i.as_str());
        }
        Match::OutIface(i) => {
            s.word("-o");
            s.word(i.as_str());
        }
        Match::Protocol(p) => {
            s.word("-p");
            s.word(p.as_str());
        }
        Match::Source { negated, cidr } => {
            s.not(*negated);
            s.word("-s");
            s.value(cidr);
        }
        Match::Destination { negated, cidr } => {
            s.not(*negated);
            s.word("-d");
            s.value(cidr);
        }
        Match::DestinationIn(cidrs) => {
            // iptables expands a list into one kernel rule per prefix, so a ruleset with
            // this match never passes `validate_for(Backend::Iptables)`; the spelling is
            // still the list iptables would accept.
            s.word("-d");
            s.value(&Joined(cidrs));
        }
        Match::SourcePort { negated, port } => {
            s.not(*negated);
            s.word("--sport");
            s.value(port);
        }
        Match::DestinationPort { negated, port } => {
            s.not(*negated);
            s.word("--dport");
            s.value(port);
        }
        Match::DestinationPorts { negated, ports } => {
            s.word("-m");
            s.word("multiport");
            s.not(*negated);
            s.word("--dports");
            s.value(&Joined(ports));
        }
        Match::UidOwner { negated, owner } => {
            s.word("-m");
            s.word("owner");
            s.not(*negated);
            s.word("--uid-owner");
            s.value(owner);
        }
        Match::GidOwner { negated, owner } => {
            s.word("-m");
            s.word("owner");
            s.not(*negated);
            s.word("--gid-owner");
            s.value(owner);
        }
        Match::ConntrackState(states) => {
            s.word("-m");
            s.word("conntrack");
            s.word("--ctstate");
            let list = states.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
            s.word(&list);
        }
        Match::Mark { negated, mark } => {
            s.word("-m");
            s.word("mark");
            s.not(*negated);
            s.word("--mark");
            s.value(mark);
        }
        Match::ConnMark(mark) => {
            s.word("-m");
            s.word("connmark");
            s.word("--mark");
            s.value(mark);
        }
    }
}

/// `-j` and the words of the rule's target (REDIRECT's spelling depends on the protocol).
fn target_words(rule: &Rule, s: &mut impl Sink) {
    s.word("-j");
    match &rule.target {
        Target::Jump(c) => s.word(c.as_str()),
        Target::Return => s.word("RETURN"),
        Target::Accept => s.word("ACCEPT"),
        Target::Drop => s.word("DROP"),
        Target::Redirect { port } => {
            // Istio spells the UDP (DNS) redirect `--to-port` and the TCP ones `--to-ports`;
            // iptables accepts both.
            s.word("REDIRECT");
            s.word(if rule.protocol() == Some(Proto::Udp) {
                "--to-port"
            } else {
                "--to-ports"
            });
            s.value(port);
        }
        Target::Tproxy { mark, port } => {
            s.word("TPROXY");
            s.word("--tproxy-mark");
            s.value(&MaskedMark(*mark));
            s.word("--on-port");
            s.value(port);
        }
        Target::SetMark(mark) => {
            s.word("MARK");
            s.word("--set-mark");
            s.value(mark);
        }
        Target::SaveMark => {
            s.word("CONNMARK");
            s.word("--save-mark");
        }
        Target::RestoreMark => {
            s.word("CONNMARK");
            s.word("--restore-mark");
        }
        Target::CtZone(zone) => {
            s.word("CT");
            s.word("--zone");
            s.value(zone);
        }
    }
}

/// One match as iptables arguments (e.g. `["!", "-d", "127.0.0.1/32"]`).
pub(crate) fn match_args(m: &Match) -> Vec<String> {
    let mut args = Args(Vec::new());
    match_words(m, &mut args);
    args.0
}

/// Values joined by commas (`-m multiport --dports 53,15008`).
struct Joined<'a, T>(&'a [T]);

impl<T: Spell> Spell for Joined<'_, T> {
    fn spell(&self, out: &mut String) {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            p.spell(out);
        }
    }
}

/// `M/0xffffffff`, the TPROXY mark with Istio's explicit full mask.
struct MaskedMark(Mark);

impl Spell for MaskedMark {
    fn spell(&self, out: &mut String) {
        self.0.spell(out);
        out.push_str("/0xffffffff");
    }
}

/// How `--compact` plans are spelled: multiport rules within iptables' 15 slots.
/// The `* TABLE` … `COMMIT` blocks of a restore payload named in `keep` (tests that load or
/// compare part of a plan, as an interrupted restore leaves it).
#[cfg(test)]
pub(crate) fn only_tables(payload: &str, keep: &[&str]) -> String {
    let mut out = String::new();
    let mut on = false;
    for line in payload.lines() {
        if let Some(name) = line.strip_prefix('*') {
            on = keep.contains(&name.trim());
        }
        if on {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod compact_tests {
    use super::restore_payload;
    use crate::model::{Backend, Match};
    use crate::model::{MULTIPORT_SLOTS, multiport_slots};
    use crate::plan::compact::plan;
    use crate::plan::testing::{KNOBS, plan_of};
    use crate::values::Family;

    #[test]
    fn iptables_ports_become_multiport_rules_of_at_most_15_slots() {
        let p = plan(plan_of(KNOBS[8], false), Backend::Iptables);
        let text = restore_payload(&p.ruleset(Family::V4));
        // TPROXY: the excluded ports live in mangle ISTIO_INBOUND (the tunnel port's RETURN in
        // nat); adjacent ports join into one range, which needs no multiport.
        assert!(
            text.contains("-A ISTIO_INBOUND -p tcp --dport 1:17 -j RETURN\n"),
            "{text}"
        );
        let p = plan(
            plan_of(
                &[
                    "-b",
                    "*",
                    "-d",
                    &(1..=40).map(|n| (n * 2).to_string()).collect::<Vec<_>>().join(","),
                ],
                false,
            ),
            Backend::Iptables,
        );
        let rs = p.ruleset(Family::V4);
        let lines: Vec<String> = restore_payload(&rs)
            .lines()
            .filter(|l| l.contains("--dports"))
            .map(str::to_string)
            .collect();
        // 40 ports and the tunnel port: 15 + 15 + 11.
        assert_eq!(lines.len(), 3, "{lines:?}");
        for t in &rs.tables {
            for op in &t.ops {
                for m in &op.rule.matches {
                    if let Match::DestinationPorts { ports, .. } = m {
                        assert!(multiport_slots(ports) <= MULTIPORT_SLOTS);
                    }
                    assert!(!matches!(m, Match::DestinationIn(_)), "no address sets for iptables");
                }
            }
        }
        // Ranges take two slots: 8 ranges need two rules.
        let ranges: Vec<String> = (0..8).map(|i| format!("{}:{}", 100 * i + 1, 100 * i + 50)).collect();
        let p = plan(plan_of(&["-b", "*", "-d", &ranges.join(",")], false), Backend::Iptables);
        let text = restore_payload(&p.ruleset(Family::V4));
        assert_eq!(text.matches("--dports").count(), 2, "{text}");
    }
}
