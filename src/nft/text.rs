//! The text codec: the IR spelled as the `nft -f` input Istio pipes to nft (and `meshcap render
//! --native-nftables` prints), byte for byte. Every word of nft's text syntax meshcap writes is
//! here; the vocabulary shared with the JSON listing (names, keys, fields) comes from
//! [`super::ir`], the choices of what to write from [`super::lower`].
//!
//! Values Istio passes through verbatim where nft wants another syntax are spelled nft's way
//! (Istio's text is rejected by nft for all three): a port range `a:b` is `a-b`, an interface
//! name with iptables' `+` wildcard is written with nft's `*`, and an interface, user or group
//! name nft cannot read as a bare word (a keyword such as `counter` or `ne`) is quoted
//! (istio-compat §8.3).
//!
//! Everything is written straight onto a string (a transaction of thousands of rules is built
//! without the formatting machinery); `Display` delegates here. Drift reports spell their
//! `add table|chain|rule` lines with [`add_table`], [`add_chain`], [`add_rule`] and
//! [`add_object`], from the names the kernel lists.

use std::fmt;

use super::ir::{
    BaseChain, CtKey, Direction, MetaKey, NftChain, NftOp, NftRule, Object, Policy, Stmt, Transaction, ct_state_word,
    family_word, iface_pattern,
};
use crate::values::{Cidr, Family, Iface, Owner, PortSpec, Spell};

/// `x` spelled into a new string.
fn spelled(x: &dyn Spell) -> String {
    let mut s = String::new();
    x.spell(&mut s);
    s
}

impl fmt::Display for Stmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&spelled(self))
    }
}

/// `meta K ` (with `meta`) or `K `.
fn push_meta(out: &mut String, key: MetaKey, meta: bool) {
    if meta {
        out.push_str("meta ");
    }
    out.push_str(key.word());
    out.push(' ');
}

/// `ct K `.
fn push_ct(out: &mut String, key: CtKey) {
    out.push_str("ct ");
    out.push_str(key.word());
    out.push(' ');
}

/// `!= ` for a negated match.
fn push_not(out: &mut String, negated: bool) {
    if negated {
        out.push_str("!= ");
    }
}

/// `ip saddr ` … `ip6 daddr `.
fn push_addr_field(out: &mut String, family: Family, direction: Direction) {
    out.push_str(family_word(family));
    out.push(' ');
    out.push_str(direction.addr_field());
    out.push(' ');
}

impl Spell for Stmt {
    fn spell(&self, out: &mut String) {
        match self {
            Stmt::Iface { input, name } => {
                push_meta(out, MetaKey::iface(*input), false);
                push_iface_word(out, name);
            }
            Stmt::L4Proto(p) => {
                push_meta(out, MetaKey::L4proto, true);
                out.push_str(p.as_str());
            }
            Stmt::CtState(states) => {
                push_ct(out, CtKey::State);
                for (i, s) in states.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(ct_state_word(*s));
                }
            }
            Stmt::Addr {
                direction,
                negated,
                cidr,
            } => {
                push_addr_field(out, cidr.family(), *direction);
                push_not(out, *negated);
                cidr.spell(out);
            }
            Stmt::AddrSet { direction, cidrs } => {
                push_addr_field(out, cidrs.first().map_or(Family::V4, Cidr::family), *direction);
                push_set(out, cidrs, |out, c| c.spell(out));
            }
            Stmt::Port {
                proto,
                direction,
                negated,
                ports,
            } => {
                out.push_str(proto.as_str());
                out.push(' ');
                out.push_str(direction.port_field());
                out.push(' ');
                push_not(out, *negated);
                match ports.as_slice() {
                    [one] => push_port_word(out, *one),
                    many => push_set(out, many, |out, p| push_port_word(out, *p)),
                }
            }
            Stmt::Owner {
                kind,
                negated,
                owner,
                meta,
            } => {
                push_meta(out, MetaKey::owner(*kind), *meta);
                push_not(out, *negated);
                push_owner_word(out, owner);
            }
            Stmt::Mark { negated, mark } => {
                push_meta(out, MetaKey::Mark, false);
                push_not(out, *negated);
                mark.spell(out);
            }
            Stmt::CtMark(mark) => {
                push_ct(out, CtKey::Mark);
                mark.spell(out);
            }
            Stmt::Counter => out.push_str("counter"),
            Stmt::Jump(c) => {
                out.push_str("jump ");
                out.push_str(c.name());
            }
            Stmt::Return => out.push_str("return"),
            Stmt::Accept => out.push_str("accept"),
            Stmt::Drop => out.push_str("drop"),
            Stmt::Redirect(port) => {
                out.push_str("redirect to :");
                port.spell(out);
            }
            Stmt::Tproxy { family, port } => {
                out.push_str("tproxy ");
                if let Some(f) = family {
                    out.push_str(family_word(*f));
                    out.push(' ');
                }
                out.push_str("to :");
                port.spell(out);
            }
            Stmt::SetMark(mark) => {
                push_meta(out, MetaKey::Mark, true);
                out.push_str("set ");
                mark.spell(out);
            }
            Stmt::SaveMark => {
                // `ct mark set mark`
                push_ct(out, CtKey::Mark);
                out.push_str("set ");
                out.push_str(MetaKey::Mark.word());
            }
            Stmt::RestoreMark => {
                // `meta mark set ct mark`
                push_meta(out, MetaKey::Mark, true);
                out.push_str("set ct ");
                out.push_str(CtKey::Mark.word());
            }
            Stmt::CtZone(zone) => {
                push_ct(out, CtKey::Zone);
                out.push_str("set ");
                zone.spell(out);
            }
        }
    }
}

/// `{ a, b, c }`.
fn push_set<T>(out: &mut String, items: &[T], mut each: impl FnMut(&mut String, &T)) {
    out.push_str("{ ");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        each(out, item);
    }
    out.push_str(" }");
}

/// A port, or a range `a-b` (nft's spelling of iptables' `a:b`).
fn push_port_word(out: &mut String, p: PortSpec) {
    match p {
        PortSpec::Single(p) => p.spell(out),
        PortSpec::Range(lo, hi) => {
            lo.spell(out);
            out.push('-');
            hi.spell(out);
        }
    }
}

/// Words nft's scanner reads as keywords where a rule expects a value (its initial scanner
/// state, nftables 1.0.6 to 1.1): `iifname counter` is a syntax error, `iifname "counter"` the
/// interface. Checked against nft 1.0.6 (every word here that it knows fails there bare: each
/// quoted word of nft's scanner, 1.0.6 to 1.1.6, was tried bare and quoted after `iifname`,
/// `oifname`, `meta skuid` and `meta skgid`; the relational words `eq`, `ne`, `lt`, `gt`, `le`,
/// `ge`, `not` among them), plus the keywords newer versions added. Sorted, for
/// `binary_search`.
const NFT_KEYWORDS: &[&str] = &[
    "accept",
    "add",
    "ah",
    "all",
    "and",
    "arp",
    "auto-merge",
    "bridge",
    "cgroup",
    "chain",
    "comment",
    "comp",
    "constant",
    "continue",
    "counter",
    "cpu",
    "create",
    "ct",
    "day",
    "dccp",
    "define",
    "delete",
    "describe",
    "destroy",
    "device",
    "devices",
    "dnat",
    "drop",
    "dst",
    "dup",
    "dynamic",
    "ecn",
    "element",
    "elements",
    "eq",
    "esp",
    "ether",
    "exists",
    "expires",
    "export",
    "exthdr",
    "fib",
    "flags",
    "flow",
    "flowtable",
    "flush",
    "frag",
    "fwd",
    "gc-interval",
    "ge",
    "geneve",
    "get",
    "goto",
    "gre",
    "gretap",
    "gt",
    "handle",
    "hbh",
    "hook",
    "hour",
    "ibriport",
    "ibrname",
    "icmp",
    "icmpv6",
    "igmp",
    "iif",
    "iifgroup",
    "iifname",
    "iiftype",
    "import",
    "include",
    "index",
    "inet",
    "insert",
    "interval",
    "ip",
    "ip6",
    "ipsec",
    "jhash",
    "jump",
    "last",
    "le",
    "limit",
    "list",
    "log",
    "lshift",
    "lt",
    "map",
    "mark",
    "masquerade",
    "meta",
    "meter",
    "mh",
    "missing",
    "monitor",
    "ne",
    "netdev",
    "nftrace",
    "not",
    "notrack",
    "numgen",
    "obriport",
    "obrname",
    "offload",
    "oif",
    "oifgroup",
    "oifname",
    "oiftype",
    "or",
    "osf",
    "pkttype",
    "policy",
    "position",
    "priority",
    "queue",
    "quota",
    "random",
    "redefine",
    "redirect",
    "reject",
    "rename",
    "replace",
    "reset",
    "return",
    "rshift",
    "rt",
    "rt0",
    "rt2",
    "rtclassid",
    "rule",
    "ruleset",
    "sctp",
    "secmark",
    "set",
    "size",
    "skgid",
    "skuid",
    "snat",
    "socket",
    "srh",
    "symhash",
    "synproxy",
    "table",
    "tcp",
    "th",
    "time",
    "timeout",
    "tproxy",
    "tunnel",
    "type",
    "typeof",
    "udp",
    "udplite",
    "undefine",
    "update",
    "vlan",
    "vmap",
    "vni",
    "vxlan",
    "xor",
    "xt",
];

/// Words nft 1.0.6 reads as keywords after `meta skuid`/`meta skgid` but not after
/// `iifname`/`oifname` (a user or group named so is quoted; an interface stays bare, as Istio
/// writes it). Sorted.
const OWNER_ONLY_KEYWORDS: &[&str] = &["length", "protocol"];

/// An interface name as an nft word ([`iface_pattern`]: iptables' trailing `+` wildcard is
/// nft's `*`); a name that is not a plain word (letters first, then letters, digits, `-`, `_`,
/// `.`) or that nft reads as a keyword ([`NFT_KEYWORDS`]) is quoted, so nft neither rejects it
/// nor reads `&`, `|` or `^` as operators. (`counter*` is one wildcard word to nft, so
/// wildcards stay bare.)
fn push_iface_word(out: &mut String, name: &Iface) {
    let (body, wildcard) = iface_pattern(name);
    // `ne*` is one wildcard word to nft, whatever its prefix; `*` alone is refused by the
    // configuration (istio-compat §8.3).
    let plain = if wildcard {
        body.is_empty() || is_word_shaped(body)
    } else {
        is_plain_word(body)
    };
    let quote = if plain { "" } else { "\"" };
    out.push_str(quote);
    out.push_str(body);
    if wildcard {
        out.push('*');
    }
    out.push_str(quote);
}

/// Whether nft reads `word` as one plain word (letters first, then letters, digits, `-`, `_`,
/// `.`) rather than an operator or a number; keywords are checked apart.
fn is_word_shaped(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_alphabetic())
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A plain word that is none of nft's keywords ([`NFT_KEYWORDS`]).
fn is_plain_word(word: &str) -> bool {
    is_word_shaped(word) && NFT_KEYWORDS.binary_search(&word).is_err()
}

/// A user or group as an nft word: a number, or a name written bare as Istio writes it
/// (`meta skgid ftp`, `skgid _svc-1`: every `[a-z_][a-z0-9_-]*` name is one word to nft) unless
/// nft reads it as a keyword (`counter`, `ne`, `length`), which is quoted (`meta skuid
/// "counter"`: nft resolves a quoted name the same way).
fn push_owner_word(out: &mut String, owner: &Owner) {
    match owner {
        Owner::Name(name)
            if NFT_KEYWORDS.binary_search(&name.as_str()).is_ok()
                || OWNER_ONLY_KEYWORDS.binary_search(&name.as_str()).is_ok() =>
        {
            out.push('"');
            out.push_str(name);
            out.push('"');
        }
        _ => owner.spell(out),
    }
}

/// Statements joined by single spaces.
impl fmt::Display for NftRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&spelled(self))
    }
}

impl Spell for NftRule {
    fn spell(&self, out: &mut String) {
        for (i, s) in self.stmts.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            s.spell(out);
        }
    }
}

/// `<verb> inet <table>`, e.g. `add table inet istio-proxy-nat`.
fn push_head(out: &mut String, verb: &str, table: &str) {
    out.push_str(verb);
    out.push_str(" inet ");
    out.push_str(table);
}

/// `<verb> inet <table> <chain>`.
fn push_chain_head(out: &mut String, verb: &str, table: &str, chain: &str) {
    push_head(out, verb, table);
    out.push(' ');
    out.push_str(chain);
}

/// ` { type T hook H priority P ; }`, with ` policy X ;` before the `}` unless it accepts.
fn push_base(out: &mut String, base: &BaseChain) {
    out.push_str(" { type ");
    out.push_str(base.kind.word());
    out.push_str(" hook ");
    out.push_str(base.hook.word());
    out.push_str(" priority ");
    if base.priority < 0 {
        out.push('-');
    }
    base.priority.unsigned_abs().spell(out);
    out.push_str(" ;");
    if base.policy != Policy::Accept {
        out.push_str(" policy ");
        out.push_str(base.policy.word());
        out.push_str(" ;");
    }
    out.push_str(" }");
}

/// One line of `nft -f` input, without its `\n`.
impl fmt::Display for NftOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&spelled(self))
    }
}

impl Spell for NftOp {
    fn spell(&self, out: &mut String) {
        match self {
            NftOp::AddTable(t) => push_head(out, "add table", t.name()),
            NftOp::FlushTable(t) => push_head(out, "flush table", t.name()),
            NftOp::DeleteTable(t) => push_head(out, "delete table", t.name()),
            NftOp::AddChain(t, c) => {
                push_chain_head(out, "add chain", t.name(), c.name());
                if let NftChain::Base(hook) = c {
                    push_base(out, &t.base_chain(*hook));
                }
            }
            NftOp::DeleteChain(t, c) => push_chain_head(out, "delete chain", t.name(), c.name()),
            NftOp::AddRule { table, chain, rule } => {
                push_chain_head(out, "add rule", table.name(), chain.name());
                out.push(' ');
                rule.spell(out);
            }
            NftOp::InsertRule {
                table,
                chain,
                index,
                rule,
            } => {
                push_chain_head(out, "insert rule", table.name(), chain.name());
                out.push_str(" index ");
                index.spell(out);
                out.push(' ');
                rule.spell(out);
            }
        }
    }
}

/// The `nft -f` input: one operation per line, each ending in `\n`; empty for no operations.
impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl Transaction {
    /// The `nft -f` input (the same as `Display`), built in one string.
    pub(crate) fn text(&self) -> String {
        let mut out = String::with_capacity(64 + self.ops.len() * 96);
        for op in &self.ops {
            op.spell(&mut out);
            out.push('\n');
        }
        out
    }
}

/// `add table inet T`, for a table as the kernel names it.
pub(crate) fn add_table(table: &str) -> String {
    let mut out = String::new();
    push_head(&mut out, "add table", table);
    out
}

/// `add chain inet T C`, with the base chain's declaration (`{ type … }`) when it has one.
pub(crate) fn add_chain(table: &str, chain: &str, base: Option<&BaseChain>) -> String {
    let mut out = String::new();
    push_chain_head(&mut out, "add chain", table, chain);
    if let Some(base) = base {
        push_base(&mut out, base);
    }
    out
}

/// `add rule inet T C <rule>`, for a rule already spelled (or a listed rule's own text).
pub(crate) fn add_rule(table: &str, chain: &str, rule: &str) -> String {
    let mut out = String::new();
    push_chain_head(&mut out, "add rule", table, chain);
    out.push(' ');
    out.push_str(rule);
    out
}

/// `add <kind> inet T N`, e.g. `add set inet istio-proxy-nat extra`.
pub(crate) fn add_object(o: &Object) -> String {
    let mut out = String::from("add ");
    out.push_str(&o.kind);
    out.push_str(" inet ");
    out.push_str(&o.table);
    out.push(' ');
    out.push_str(&o.name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CtState, Hook, IstioChain, Proto};
    use crate::nft::ir::{ChainType, NftHook, NftTable, OwnerKind};
    use crate::values::{Mark, Owner, Port};

    #[test]
    fn nft_keywords_are_sorted_for_binary_search() {
        assert!(NFT_KEYWORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(OWNER_ONLY_KEYWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    /// Interface, user and group names nft reads as keywords are quoted; every other name is
    /// written bare, as Istio writes it.
    #[test]
    fn keyword_names_are_quoted() {
        let iface = |s: &str, input| {
            Stmt::Iface {
                input,
                name: Iface::parse(s).unwrap(),
            }
            .to_string()
        };
        for w in ["ne", "eq", "lt", "gt", "le", "ge", "not", "counter", "meta"] {
            assert_eq!(iface(w, true), format!("iifname \"{w}\""));
            assert_eq!(iface(w, false), format!("oifname \"{w}\""));
            assert_eq!(iface(&format!("{w}+"), true), format!("iifname {w}*"));
        }
        assert_eq!(iface("length", true), "iifname length", "loads bare after iifname");
        assert_eq!(iface("eth0", true), "iifname eth0");
        let owner = |name: &str, kind, meta| {
            Stmt::Owner {
                kind,
                negated: false,
                owner: Owner::Name(name.into()),
                meta,
            }
            .to_string()
        };
        for w in ["counter", "meta", "ne", "not", "length", "protocol"] {
            assert_eq!(owner(w, OwnerKind::Uid, false), format!("skuid \"{w}\""));
            assert_eq!(owner(w, OwnerKind::Gid, true), format!("meta skgid \"{w}\""));
        }
        for w in ["ftp", "_svc-1", "istio-proxy"] {
            assert_eq!(owner(w, OwnerKind::Gid, false), format!("skgid {w}"));
        }
    }

    #[test]
    fn every_statement_is_spelled() {
        let iface = |s: &str| Iface::parse(s).unwrap();
        let port = Port::new_const;
        let cases = [
            (
                Stmt::Iface {
                    input: true,
                    name: iface("veth+"),
                },
                "iifname veth*",
            ),
            (
                Stmt::Iface {
                    input: false,
                    name: iface("a@b"),
                },
                "oifname \"a@b\"",
            ),
            (
                Stmt::Iface {
                    input: true,
                    name: iface("counter"),
                },
                "iifname \"counter\"",
            ),
            (Stmt::L4Proto(Proto::Udp), "meta l4proto udp"),
            (
                Stmt::CtState(vec![CtState::Related, CtState::Established]),
                "ct state related,established",
            ),
            (
                Stmt::Addr {
                    direction: Direction::Source,
                    negated: true,
                    cidr: Cidr::parse("::6/128").unwrap(),
                },
                "ip6 saddr != ::6/128",
            ),
            (
                Stmt::AddrSet {
                    direction: Direction::Destination,
                    cidrs: vec![
                        Cidr::parse("10.0.0.0/8").unwrap(),
                        Cidr::parse("192.168.0.0/16").unwrap(),
                    ],
                },
                "ip daddr { 10.0.0.0/8, 192.168.0.0/16 }",
            ),
            (
                Stmt::Port {
                    proto: Proto::Tcp,
                    direction: Direction::Destination,
                    negated: true,
                    ports: vec![PortSpec::Single(port(53)), PortSpec::Range(port(1000), port(2000))],
                },
                "tcp dport != { 53, 1000-2000 }",
            ),
            (
                Stmt::Owner {
                    kind: OwnerKind::Gid,
                    negated: false,
                    owner: Owner::Id(7),
                    meta: true,
                },
                "meta skgid 7",
            ),
            (
                Stmt::Mark {
                    negated: true,
                    mark: Mark(1337),
                },
                "mark != 1337",
            ),
            (Stmt::CtMark(Mark(1)), "ct mark 1"),
            (
                Stmt::Jump(NftChain::Regular(IstioChain::OutputDns)),
                "jump istio-output-dns",
            ),
            (Stmt::Redirect(port(15001)), "redirect to :15001"),
            (
                Stmt::Tproxy {
                    family: None,
                    port: port(1),
                },
                "tproxy to :1",
            ),
            (
                Stmt::Tproxy {
                    family: Some(Family::V6),
                    port: port(1),
                },
                "tproxy ip6 to :1",
            ),
            (Stmt::SetMark(Mark(5)), "meta mark set 5"),
            (Stmt::SaveMark, "ct mark set mark"),
            (Stmt::RestoreMark, "meta mark set ct mark"),
            (Stmt::CtZone(2), "ct zone set 2"),
        ];
        for (stmt, text) in cases {
            assert_eq!(stmt.to_string(), text);
        }
    }

    #[test]
    fn report_lines_spell_listed_names() {
        let base = BaseChain {
            kind: ChainType::Nat,
            hook: NftHook::Netfilter(Hook::Output),
            priority: -100,
            policy: Policy::Drop,
        };
        assert_eq!(
            add_chain("istio-proxy-nat", "output", Some(&base)),
            "add chain inet istio-proxy-nat output { type nat hook output priority -100 ; policy drop ; }"
        );
        assert_eq!(
            NftOp::AddChain(NftTable::Raw, NftChain::Base(Hook::Prerouting)).to_string(),
            "add chain inet istio-proxy-raw prerouting { type filter hook prerouting priority -300 ; }"
        );
        assert_eq!(add_table("t"), "add table inet t");
        assert_eq!(add_rule("t", "c", "counter"), "add rule inet t c counter");
        let o = Object {
            table: "t".into(),
            kind: "set".into(),
            name: "s".into(),
        };
        assert_eq!(add_object(&o), "add set inet t s");
    }
}
