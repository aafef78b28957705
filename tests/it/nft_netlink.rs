//! The nf_tables netlink codec against the real kernel: a batch built from typed messages,
//! sent over meshcap's own socket into a fresh namespace, leaves the same ruleset as `nft -f`
//! of the equivalent text in a second namespace (both listed with `nft -j list ruleset`, and
//! both dumped back with the codec), and a batch whose last rule the kernel refuses leaves
//! nothing behind and names that rule.

use meshcap::nft::netlink::msg::{
    NF_ACCEPT, NF_INET_LOCAL_OUT, NF_INET_PRE_ROUTING, NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6, NFT_SET_ANONYMOUS,
    NFT_SET_CONSTANT, NFT_SET_ELEM_INTERVAL_END, NFT_SET_INTERVAL,
};
use meshcap::nft::netlink::socket::Error as NlError;
use meshcap::nft::netlink::{
    Chain, CmpOp, CtKey, Data, Expr, Hook, Message, MetaKey, PayloadBase, RangeOp, Register, Rule, Ruleset, Set,
    SetElem, SetElems, Socket, Table, Verdict,
};
use meshcap::sys::netns::Netns as TargetNetns;

use crate::support::netns::{Netns, needs_netns};

const T: &str = "mc";

/// The ruleset as `nft -f` text; [`Builder::ruleset`] is the same, message by message.
const TEXT: &str = r#"add table inet mc
add chain inet mc output { type nat hook output priority -100 ; policy accept ; }
add chain inet mc prerouting { type filter hook prerouting priority -150 ; policy accept ; }
add chain inet mc raw-output { type filter hook output priority -300 ; policy accept ; }
add chain inet mc inbound
add chain inet mc to-proxy
add set inet mc excl4 { type ipv4_addr ; flags interval ; }
add element inet mc excl4 { 10.0.0.0/8, 192.168.1.0/24 }
add set inet mc excl6 { type ipv6_addr ; flags interval ; }
add element inet mc excl6 { 2001:db8::/32 }
add rule inet mc output meta l4proto tcp tcp dport 15008 counter return
add rule inet mc output meta l4proto tcp tcp dport { 22, 8000-8100, 15020-15021, 15090 } counter return
add rule inet mc output tcp dport != { 53, 15008 } counter return
add rule inet mc output udp dport 5000-5100 counter return
add rule inet mc output tcp dport != 5000-5100 counter return
add rule inet mc output oifname lo ip saddr 127.0.0.6/32 counter return
add rule inet mc output oifname lo ip6 saddr ::6/128 counter return
add rule inet mc output oifname lo meta l4proto tcp ip daddr != 127.0.0.1/32 tcp dport != 15008 skuid 1337 counter jump inbound
add rule inet mc output oifname lo skgid != 1337 counter return
add rule inet mc output ip daddr 127.0.0.0/8 counter return
add rule inet mc output ip daddr 172.16.0.0/12 counter goto to-proxy
add rule inet mc output ip6 daddr 2001:db8::/32 counter return
add rule inet mc output ip daddr @excl4 counter return
add rule inet mc output ip6 daddr != @excl6 counter jump to-proxy
add rule inet mc output ip daddr { 10.0.0.0/8, 192.168.1.0/24 } counter accept
add rule inet mc output meta nfproto ipv6 mark 1337 counter drop
add rule inet mc to-proxy meta l4proto tcp counter redirect to :15001
add rule inet mc inbound meta l4proto tcp ct state related,established counter return
add rule inet mc inbound meta l4proto tcp ct mark 1337 counter meta mark set ct mark
add rule inet mc inbound meta l4proto tcp mark 1337 counter ct mark set mark
add rule inet mc inbound iifname veth* counter return
insert rule inet mc inbound iifname eth0 counter return
insert rule inet mc inbound index 2 mark 1338 counter return
add rule inet mc prerouting meta l4proto tcp ip daddr != 127.0.0.0/8 tproxy ip to :15006 meta mark set 1337 counter accept
add rule inet mc prerouting meta l4proto tcp ip6 daddr != ::1/128 tproxy ip6 to :15006 meta mark set 1337 counter accept
add rule inet mc prerouting counter meta mark set 1337
add rule inet mc prerouting meta l4proto tcp counter jump inbound
add rule inet mc raw-output udp dport 53 counter ct zone set 2
add rule inet mc raw-output udp sport 53 skgid 1337 counter ct zone set 1
"#;

const R1: Register = Register::R1;

fn meta(key: MetaKey) -> Expr {
    Expr::Meta { key, dreg: R1 }
}

fn cmp(op: CmpOp, data: &[u8]) -> Expr {
    Expr::Cmp {
        sreg: R1,
        op,
        data: data.to_vec(),
    }
}

fn eq(data: &[u8]) -> Expr {
    cmp(CmpOp::Eq, data)
}

fn load(base: PayloadBase, offset: u32, len: u32) -> Expr {
    Expr::Payload {
        base,
        offset,
        len,
        dreg: R1,
    }
}

/// `meta l4proto P` (also what nft adds in front of a port match).
fn l4(proto: u8) -> Vec<Expr> {
    vec![meta(MetaKey::L4Proto), eq(&[proto])]
}

/// `meta nfproto F` (what nft adds in front of an `ip`/`ip6` match in an inet table).
fn nf(family: u8) -> Vec<Expr> {
    vec![meta(MetaKey::NfProto), eq(&[family])]
}

/// `iifname`/`oifname`: the name padded to IFNAMSIZ, or only its prefix for `name*`.
fn ifname(key: MetaKey, name: &str) -> Vec<Expr> {
    let data = match name.strip_suffix('*') {
        Some(prefix) => prefix.as_bytes().to_vec(),
        None => {
            let mut d = name.as_bytes().to_vec();
            d.resize(16, 0);
            d
        }
    };
    vec![meta(key), eq(&data)]
}

/// `tcp|udp dport|sport OP port` (after the l4proto dependency).
fn port(proto: u8, offset: u32, op: CmpOp, port: u16) -> Vec<Expr> {
    let mut e = l4(proto);
    e.push(load(PayloadBase::Transport, offset, 2));
    e.push(cmp(op, &port.to_be_bytes()));
    e
}

fn counter() -> Expr {
    Expr::Counter { packets: 0, bytes: 0 }
}

fn verdict(v: Verdict) -> Expr {
    Expr::Immediate {
        dreg: Register::VERDICT,
        data: Data::Verdict(v),
    }
}

fn imm(value: &[u8]) -> Expr {
    Expr::Immediate {
        dreg: R1,
        data: Data::Value(value.to_vec()),
    }
}

fn set_mark(mark: u32) -> Vec<Expr> {
    vec![
        imm(&mark.to_ne_bytes()),
        Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: R1,
        },
    ]
}

fn lookup(set: &str, set_id: Option<u32>, invert: bool) -> Expr {
    Expr::Lookup {
        set: set.into(),
        set_id,
        sreg: R1,
        dreg: None,
        invert,
    }
}

/// nft's set user data: `(type, u32 value)` TLVs (key byte order, merge flag) and, for an
/// anonymous set, the key's `typeof` description as nft writes it.
fn udata(entries: &[(u8, u32)], typeof_: Option<(u32, u32, u32)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, v) in entries {
        out.extend_from_slice(&[*t, 4]);
        out.extend_from_slice(&v.to_ne_bytes());
    }
    if let Some((expr, desc, field)) = typeof_ {
        out.extend_from_slice(&[3, 20, 0, 4]);
        out.extend_from_slice(&expr.to_ne_bytes());
        out.extend_from_slice(&[1, 12, 0, 4]);
        out.extend_from_slice(&desc.to_ne_bytes());
        out.extend_from_slice(&[1, 4]);
        out.extend_from_slice(&field.to_ne_bytes());
    }
    out
}

/// Interval elements as nft sends them: a closing boundary at zero first, then each
/// `[from, to)` as an opening key and a closing key flagged `INTERVAL_END` (none when `to`
/// wraps past the key space).
fn intervals(ranges: &[(&[u8], &[u8])]) -> Vec<SetElem> {
    let width = ranges.first().map_or(0, |r| r.0.len());
    let mut out = vec![SetElem {
        key: Some(vec![0; width]),
        flags: NFT_SET_ELEM_INTERVAL_END,
        ..SetElem::default()
    }];
    for (from, to) in ranges {
        out.push(SetElem {
            key: Some(from.to_vec()),
            ..SetElem::default()
        });
        out.push(SetElem {
            key: Some(to.to_vec()),
            flags: NFT_SET_ELEM_INTERVAL_END,
            ..SetElem::default()
        });
    }
    out
}

/// Builds the batch: rules get transaction ids, anonymous sets ids of their own.
struct Builder {
    msgs: Vec<Message>,
    next_id: u32,
    anon: u32,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            msgs: Vec::new(),
            next_id: 1,
            anon: 0,
        }
    }

    fn chain(&mut self, name: &str, base: Option<(&str, u32, i32)>) {
        self.msgs.push(Message::NewChain(Chain {
            family: NFPROTO_INET,
            table: T.into(),
            name: name.into(),
            hook: base.map(|(_, num, priority)| Hook { num, priority }),
            chain_type: base.map(|(t, _, _)| t.into()),
            policy: base.map(|_| NF_ACCEPT),
            ..Chain::default()
        }));
    }

    fn named_set(&mut self, name: &str, key_type: u32, key_len: u32, elements: Vec<SetElem>) {
        self.msgs.push(Message::NewSet(Set {
            family: NFPROTO_INET,
            table: T.into(),
            name: name.into(),
            flags: NFT_SET_INTERVAL,
            key_type,
            key_len,
            // The kernel requires a transaction id on every new set, named ones too.
            id: Some(900 + self.msgs.len() as u32),
            userdata: Some(udata(&[(0, 2)], None)),
            ..Set::default()
        }));
        self.msgs.push(Message::NewSetElems(SetElems {
            family: NFPROTO_INET,
            table: T.into(),
            set: name.into(),
            elements,
            ..SetElems::default()
        }));
    }

    /// An anonymous set for the next rule; returns the lookup expression for it.
    fn anon_set(
        &mut self,
        key: (u32, u32),
        interval: bool,
        typeof_: (u32, u32, u32),
        elements: Vec<SetElem>,
        invert: bool,
    ) -> Expr {
        let id = 1000 + self.anon;
        self.anon += 1;
        let flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | if interval { NFT_SET_INTERVAL } else { 0 };
        let size = elements.len() as u32;
        let entries: &[(u8, u32)] = if interval { &[(0, 2), (2, 1)] } else { &[(0, 2)] };
        self.msgs.push(Message::NewSet(Set {
            family: NFPROTO_INET,
            table: T.into(),
            name: "__set%d".into(),
            flags,
            key_type: key.0,
            key_len: key.1,
            size: Some(size),
            id: Some(id),
            userdata: Some(udata(entries, Some(typeof_))),
            ..Set::default()
        }));
        self.msgs.push(Message::NewSetElems(SetElems {
            family: NFPROTO_INET,
            table: T.into(),
            set: "__set%d".into(),
            set_id: Some(id),
            elements,
            ..SetElems::default()
        }));
        lookup("__set%d", Some(id), invert)
    }

    /// Appends a rule; returns its transaction id.
    fn rule(&mut self, chain: &str, exprs: Vec<Expr>) -> u32 {
        self.place(chain, exprs, true, None)
    }

    fn place(&mut self, chain: &str, exprs: Vec<Expr>, append: bool, position_id: Option<u32>) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.msgs.push(Message::NewRule(Rule {
            family: NFPROTO_INET,
            table: T.into(),
            chain: chain.into(),
            append,
            id: Some(id),
            position_id,
            exprs,
            ..Rule::default()
        }));
        id
    }

    /// [`TEXT`] as messages, in the order `nft -f` creates the objects (so handles agree).
    fn ruleset() -> Vec<Message> {
        use CmpOp::Eq;
        const TCP: u8 = 6;
        const UDP: u8 = 17;
        let mut b = Builder::new();
        b.msgs.push(Message::NewTable(Table {
            family: NFPROTO_INET,
            name: T.into(),
            ..Table::default()
        }));
        b.chain("output", Some(("nat", NF_INET_LOCAL_OUT, -100)));
        b.chain("prerouting", Some(("filter", NF_INET_PRE_ROUTING, -150)));
        b.chain("raw-output", Some(("filter", NF_INET_LOCAL_OUT, -300)));
        b.chain("inbound", None);
        b.chain("to-proxy", None);
        // key types: ipv4_addr 7, ipv6_addr 8, inet_service 13.
        b.named_set(
            "excl4",
            7,
            4,
            intervals(&[(&[10, 0, 0, 0], &[11, 0, 0, 0]), (&[192, 168, 1, 0], &[192, 168, 2, 0])]),
        );
        let db8: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let db9: [u8; 16] = [0x20, 0x01, 0x0d, 0xb9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        b.named_set("excl6", 8, 16, intervals(&[(&db8, &db9)]));

        let ret = || verdict(Verdict::Return);
        let o = "output";
        b.rule(o, [port(TCP, 2, Eq, 15008), vec![counter(), ret()]].concat());

        let p = |n: u16| n.to_be_bytes();
        let ports = intervals(&[
            (&p(22), &p(23)),
            (&p(8000), &p(8101)),
            (&p(15020), &p(15022)),
            (&p(15090), &p(15091)),
        ]);
        // nft's `typeof` record for the key: (7, protocol description 8, field 2) is `th dport`.
        let set = b.anon_set((13, 2), true, (7, 8, 2), ports, false);
        b.rule(
            o,
            [l4(TCP), vec![load(PayloadBase::Transport, 2, 2), set, counter(), ret()]].concat(),
        );

        let singles = [53u16, 15008]
            .iter()
            .map(|n| SetElem {
                key: Some(n.to_be_bytes().to_vec()),
                ..SetElem::default()
            })
            .collect();
        let set = b.anon_set((13, 2), false, (7, 8, 2), singles, true);
        b.rule(
            o,
            [l4(TCP), vec![load(PayloadBase::Transport, 2, 2), set, counter(), ret()]].concat(),
        );

        let mut udp_range = l4(UDP);
        udp_range.extend([
            load(PayloadBase::Transport, 2, 2),
            cmp(CmpOp::Gte, &p(5000)),
            cmp(CmpOp::Lte, &p(5100)),
            counter(),
            ret(),
        ]);
        b.rule(o, udp_range);

        let mut not_range = l4(TCP);
        not_range.extend([
            load(PayloadBase::Transport, 2, 2),
            Expr::Range {
                sreg: R1,
                op: RangeOp::Neq,
                from: p(5000).to_vec(),
                to: p(5100).to_vec(),
            },
            counter(),
            ret(),
        ]);
        b.rule(o, not_range);
        Self::output_rules(&mut b);
        Self::inbound_rules(&mut b);
        b.msgs
    }

    /// The `output` chain's address, owner and interface rules and the redirect of [`ruleset`].
    fn output_rules(b: &mut Builder) {
        use CmpOp::Neq;
        const TCP: u8 = 6;
        let v4 = NFPROTO_IPV4;
        let v6 = NFPROTO_IPV6;
        let ret = || verdict(Verdict::Return);
        let o = "output";
        let p = |n: u16| n.to_be_bytes();
        let db8: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let lo = || ifname(MetaKey::OifName, "lo");
        b.rule(
            o,
            [
                lo(),
                nf(v4),
                vec![load(PayloadBase::Network, 12, 4), eq(&[127, 0, 0, 6]), counter(), ret()],
            ]
            .concat(),
        );
        let mut six = [0u8; 16];
        six[15] = 6;
        b.rule(
            o,
            [
                lo(),
                nf(v6),
                vec![load(PayloadBase::Network, 8, 16), eq(&six), counter(), ret()],
            ]
            .concat(),
        );
        b.rule(
            o,
            [
                lo(),
                l4(TCP),
                nf(v4),
                vec![
                    load(PayloadBase::Network, 16, 4),
                    cmp(Neq, &[127, 0, 0, 1]),
                    load(PayloadBase::Transport, 2, 2),
                    cmp(Neq, &p(15008)),
                    meta(MetaKey::SkUid),
                    eq(&1337u32.to_ne_bytes()),
                    counter(),
                    verdict(Verdict::Jump("inbound".into())),
                ],
            ]
            .concat(),
        );
        b.rule(
            o,
            [
                lo(),
                vec![meta(MetaKey::SkGid), cmp(Neq, &1337u32.to_ne_bytes()), counter(), ret()],
            ]
            .concat(),
        );
        b.rule(
            o,
            [
                nf(v4),
                vec![load(PayloadBase::Network, 16, 1), eq(&[127]), counter(), ret()],
            ]
            .concat(),
        );
        b.rule(
            o,
            [
                nf(v4),
                vec![
                    load(PayloadBase::Network, 16, 4),
                    Expr::Bitwise {
                        sreg: R1,
                        dreg: R1,
                        len: 4,
                        mask: vec![255, 240, 0, 0],
                        xor: vec![0; 4],
                    },
                    eq(&[172, 16, 0, 0]),
                    counter(),
                    verdict(Verdict::Goto("to-proxy".into())),
                ],
            ]
            .concat(),
        );
        b.rule(
            o,
            [
                nf(v6),
                vec![load(PayloadBase::Network, 24, 4), eq(&db8[..4]), counter(), ret()],
            ]
            .concat(),
        );
        b.rule(
            o,
            [
                nf(v4),
                vec![
                    load(PayloadBase::Network, 16, 4),
                    lookup("excl4", None, false),
                    counter(),
                    ret(),
                ],
            ]
            .concat(),
        );
        b.rule(
            o,
            [
                nf(v6),
                vec![
                    load(PayloadBase::Network, 24, 16),
                    lookup("excl6", None, true),
                    counter(),
                    verdict(Verdict::Jump("to-proxy".into())),
                ],
            ]
            .concat(),
        );
        let nets = intervals(&[(&[10, 0, 0, 0], &[11, 0, 0, 0]), (&[192, 168, 1, 0], &[192, 168, 2, 0])]);
        let set = b.anon_set((7, 4), true, (7, 12, 12), nets, false);
        b.rule(
            o,
            [
                nf(v4),
                vec![
                    load(PayloadBase::Network, 16, 4),
                    set,
                    counter(),
                    verdict(Verdict::Accept),
                ],
            ]
            .concat(),
        );
        b.rule(
            o,
            [
                nf(v6),
                vec![
                    meta(MetaKey::Mark),
                    eq(&1337u32.to_ne_bytes()),
                    counter(),
                    verdict(Verdict::Drop),
                ],
            ]
            .concat(),
        );
    }

    /// The `inbound`, `prerouting` and `raw-output` rules of [`ruleset`].
    fn inbound_rules(b: &mut Builder) {
        use CmpOp::{Eq, Neq};
        const TCP: u8 = 6;
        const UDP: u8 = 17;
        let v4 = NFPROTO_IPV4;
        let v6 = NFPROTO_IPV6;
        let ret = || verdict(Verdict::Return);
        let p = |n: u16| n.to_be_bytes();
        let mut redirect = l4(TCP);
        redirect.extend([
            counter(),
            imm(&p(15001)),
            Expr::Redir {
                proto_min: Some(R1),
                proto_max: Some(R1),
                flags: 2,
            },
        ]);
        b.rule("to-proxy", redirect);

        let i = "inbound";
        let ct = |key| Expr::Ct {
            key,
            dreg: R1,
            direction: None,
        };
        b.rule(
            i,
            [
                l4(TCP),
                vec![
                    ct(CtKey::State),
                    Expr::Bitwise {
                        sreg: R1,
                        dreg: R1,
                        len: 4,
                        mask: 6u32.to_ne_bytes().to_vec(),
                        xor: vec![0; 4],
                    },
                    cmp(Neq, &[0; 4]),
                    counter(),
                    ret(),
                ],
            ]
            .concat(),
        );
        let ct_mark = b.rule(
            i,
            [
                l4(TCP),
                vec![
                    ct(CtKey::Mark),
                    eq(&1337u32.to_ne_bytes()),
                    counter(),
                    ct(CtKey::Mark),
                    Expr::MetaSet {
                        key: MetaKey::Mark,
                        sreg: R1,
                    },
                ],
            ]
            .concat(),
        );
        b.rule(
            i,
            [
                l4(TCP),
                vec![
                    meta(MetaKey::Mark),
                    eq(&1337u32.to_ne_bytes()),
                    counter(),
                    meta(MetaKey::Mark),
                    Expr::CtSet {
                        key: CtKey::Mark,
                        sreg: R1,
                        direction: None,
                    },
                ],
            ]
            .concat(),
        );
        b.rule(i, [ifname(MetaKey::IifName, "veth*"), vec![counter(), ret()]].concat());
        // `insert` without index: at the start of the chain.
        b.place(
            i,
            [ifname(MetaKey::IifName, "eth0"), vec![counter(), ret()]].concat(),
            false,
            None,
        );
        // `insert … index 2`: before the rule now at index 2 (eth0, ct state, then ct mark),
        // named by its transaction id since it has no handle yet.
        b.place(
            i,
            vec![meta(MetaKey::Mark), eq(&1338u32.to_ne_bytes()), counter(), ret()],
            false,
            Some(ct_mark),
        );

        let pre = "prerouting";
        let tproxy = |family: u8, dst: Vec<Expr>| {
            [
                l4(TCP),
                nf(family),
                dst,
                vec![
                    imm(&p(15006)),
                    Expr::Tproxy {
                        family: u32::from(family),
                        addr: None,
                        port: Some(R1),
                    },
                ],
                set_mark(1337),
                vec![counter(), verdict(Verdict::Accept)],
            ]
            .concat()
        };
        b.rule(
            pre,
            tproxy(v4, vec![load(PayloadBase::Network, 16, 1), cmp(Neq, &[127])]),
        );
        let mut one = [0u8; 16];
        one[15] = 1;
        b.rule(
            pre,
            tproxy(v6, vec![load(PayloadBase::Network, 24, 16), cmp(Neq, &one)]),
        );
        b.rule(pre, [vec![counter()], set_mark(1337)].concat());
        b.rule(
            pre,
            [l4(TCP), vec![counter(), verdict(Verdict::Jump("inbound".into()))]].concat(),
        );

        let zone = |z: u16| {
            vec![
                counter(),
                imm(&z.to_ne_bytes()),
                Expr::CtSet {
                    key: CtKey::Zone,
                    sreg: R1,
                    direction: None,
                },
            ]
        };
        b.rule("raw-output", [port(UDP, 2, Eq, 53), zone(2)].concat());
        b.rule(
            "raw-output",
            [
                port(UDP, 0, Eq, 53),
                vec![meta(MetaKey::SkGid), eq(&1337u32.to_ne_bytes())],
                zone(1),
            ]
            .concat(),
        );
    }
}

/// `nft -j list ruleset` inside `ns`, parsed.
fn listing(ns: &Netns) -> serde_json::Value {
    let out = ns.run("nft", &["-j", "list", "ruleset"]);
    assert!(
        out.status.success(),
        "nft -j list ruleset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nft JSON")
}

fn open(ns: &Netns) -> TargetNetns {
    TargetNetns::open(ns.path().to_str().unwrap()).expect("open test namespace")
}

fn apply(ns: &Netns, msgs: &[Message]) -> Result<(), NlError> {
    let msgs = msgs.to_vec();
    open(ns)
        .run_in(move || Socket::open()?.apply(&msgs, None))
        .expect("enter namespace")
}

fn dump(ns: &Netns) -> Ruleset {
    open(ns)
        .run_in(|| Socket::open().map_err(NlError::Io)?.ruleset(0))
        .expect("enter namespace")
        .expect("dump ruleset")
}

/// Asserts two dumped lists equal, naming the first item that differs.
fn same<T: PartialEq + std::fmt::Debug>(what: &str, netlink: &[T], nft: &[T]) {
    assert_eq!(netlink.len(), nft.len(), "number of {what}");
    for (a, b) in netlink.iter().zip(nft) {
        assert_eq!(a, b, "{what} differ (left: by netlink, right: by nft -f)");
    }
}

/// Set elements in key order (the kernel's dump order is its tree's).
fn sorted(mut rs: Ruleset) -> Ruleset {
    for e in &mut rs.elements {
        e.elements.sort_by(|a, b| (&a.key, a.flags).cmp(&(&b.key, b.flags)));
    }
    rs
}

#[test]
fn a_netlink_batch_leaves_what_nft_f_leaves() {
    needs_netns!();
    let by_netlink = Netns::new("nlbatch");
    let by_nft = Netns::new("nlnft");
    let msgs = Builder::ruleset();
    apply(&by_netlink, &msgs).unwrap_or_else(|e| panic!("netlink apply: {e}"));
    let out = by_nft.run_with_stdin("nft", &["-f", "-"], TEXT);
    assert!(out.status.success(), "nft -f: {}", String::from_utf8_lossy(&out.stderr));

    let (ours, theirs) = (listing(&by_netlink), listing(&by_nft));
    if ours != theirs {
        let a = serde_json::to_string_pretty(&ours).unwrap();
        let b = serde_json::to_string_pretty(&theirs).unwrap();
        let diff: Vec<String> = a
            .lines()
            .zip(b.lines())
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .take(20)
            .map(|(i, (x, y))| format!("line {i}: netlink {x} | nft {y}"))
            .collect();
        panic!("listings differ:\n{}", diff.join("\n"));
    }

    // The codec reads both back identically, with no unknown part.
    let (ours, theirs) = (sorted(dump(&by_netlink)), sorted(dump(&by_nft)));
    same("tables", &ours.tables, &theirs.tables);
    same("chains", &ours.chains, &theirs.chains);
    same("sets", &ours.sets, &theirs.sets);
    same("set elements", &ours.elements, &theirs.elements);
    same("rules", &ours.rules, &theirs.rules);
    assert_eq!(ours, theirs);
    assert!(ours.unknown.is_empty());
    assert!(ours.rules.iter().all(|r| r.unknown.is_empty()));
    assert!(ours.sets.iter().all(|s| s.unknown.is_empty()), "{:?}", ours.sets);
    assert!(
        ours.rules
            .iter()
            .flat_map(|r| &r.exprs)
            .all(|e| !matches!(e, Expr::Unknown { .. }))
    );

    // And what was sent is what the kernel reports, rule by rule, once the kernel's own
    // naming of anonymous sets replaces the transaction ids.
    let sent: Vec<(String, Vec<Expr>)> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::NewRule(r) => Some((r.chain.clone(), r.exprs.iter().map(anon_named).collect())),
            _ => None,
        })
        .collect();
    for chain in ["output", "prerouting", "raw-output", "inbound", "to-proxy"] {
        let got: Vec<&Vec<Expr>> = ours
            .rules
            .iter()
            .filter(|r| r.chain == chain)
            .map(|r| &r.exprs)
            .collect();
        let want: Vec<&Vec<Expr>> = sent.iter().filter(|(c, _)| c == chain).map(|(_, e)| e).collect();
        assert_eq!(got.len(), want.len(), "rules in {chain}");
        for w in want {
            assert!(got.contains(&w), "{chain}: sent {w:?} is not in the dump");
        }
    }
}

/// The lookup of an anonymous set (transaction id `1000 + n`) as the kernel reports it.
fn anon_named(e: &Expr) -> Expr {
    match e {
        Expr::Lookup {
            set_id: Some(id),
            sreg,
            dreg,
            invert,
            ..
        } => Expr::Lookup {
            set: format!("__set{}", id - 1000),
            set_id: None,
            sreg: *sreg,
            dreg: *dreg,
            invert: *invert,
        },
        Expr::Lookup { .. } => e.clone(),
        other => other.clone(),
    }
}

#[test]
fn a_batch_whose_last_rule_is_refused_leaves_nothing_and_names_that_rule() {
    needs_netns!();
    let ns = Netns::new("nlatomic");
    let mut msgs: Vec<Message> = Builder::ruleset();
    msgs.push(Message::NewRule(Rule {
        family: NFPROTO_INET,
        table: T.into(),
        chain: "output".into(),
        append: true,
        exprs: vec![counter(), verdict(Verdict::Jump("no-such-chain".into()))],
        ..Rule::default()
    }));
    let last = msgs.len() - 1;
    let err = apply(&ns, &msgs).expect_err("the kernel must refuse a jump to a missing chain");
    let NlError::Refused(refusals) = &err else {
        panic!("not a refusal: {err}")
    };
    assert_eq!(refusals.len(), 1, "{err}");
    let r = &refusals[0];
    assert_eq!(r.index, Some(last), "{err}");
    assert_eq!(r.errno, libc::ENOENT, "{err}");
    assert!(r.what.starts_with("add rule inet mc output"), "{err}");
    let text = err.to_string();
    assert_eq!(r.part.as_deref(), Some("expression 2 (immediate)"), "{err}");
    assert_eq!(
        text,
        "the kernel refused add rule inet mc output (counter, immediate): No such file or directory (os error 2) \
         in expression 2 (immediate)"
    );

    // Nothing of the batch exists: not the table, not a chain, not a set.
    let after = dump(&ns);
    assert_eq!(after, Ruleset::default(), "{after:?}");
    let listed = listing(&ns);
    assert_eq!(listed["nftables"].as_array().map(Vec::len), Some(1), "{listed}");
}

#[test]
fn the_kernel_reports_its_normal_forms() {
    needs_netns!();
    let ns = Netns::new("nlnormal");
    let table = Message::NewTable(Table {
        family: NFPROTO_IPV4,
        name: T.into(),
        ..Table::default()
    });
    let mut b = Builder::new();
    b.msgs.push(table);
    b.msgs.push(Message::NewChain(Chain {
        family: NFPROTO_IPV4,
        table: T.into(),
        name: "out".into(),
        hook: Some(Hook {
            num: NF_INET_LOCAL_OUT,
            priority: -100,
        }),
        chain_type: Some("nat".into()),
        ..Chain::default()
    }));
    // The 4-byte register NFT_REG32_00 and a redirect with only a minimum port register.
    let r32 = Register::reg32(0);
    let sent = vec![
        Expr::Meta {
            key: MetaKey::Mark,
            dreg: r32,
        },
        Expr::Cmp {
            sreg: r32,
            op: CmpOp::Eq,
            data: 7u32.to_ne_bytes().to_vec(),
        },
        Expr::Immediate {
            dreg: Register::reg32(1),
            data: Data::Value(15001u16.to_be_bytes().to_vec()),
        },
        Expr::Redir {
            proto_min: Some(Register::reg32(1)),
            proto_max: None,
            flags: 0,
        },
    ];
    b.msgs.push(Message::NewRule(Rule {
        family: NFPROTO_IPV4,
        table: T.into(),
        chain: "out".into(),
        append: true,
        exprs: sent,
        ..Rule::default()
    }));
    apply(&ns, &b.msgs).unwrap_or_else(|e| panic!("netlink apply: {e}"));
    let rs = dump(&ns);
    let chain = &rs.chains[0];
    // A base chain is reported with the BASE flag and the default policy (accept).
    assert_eq!((chain.flags, chain.policy), (Some(1), Some(NF_ACCEPT)));
    let got = &rs.rules[0].exprs;
    assert_eq!(
        got,
        &vec![
            Expr::Meta {
                key: MetaKey::Mark,
                dreg: Register::R1,
            },
            Expr::Cmp {
                sreg: Register::R1,
                op: CmpOp::Eq,
                data: 7u32.to_ne_bytes().to_vec(),
            },
            Expr::Immediate {
                dreg: Register::reg32(1),
                data: Data::Value(15001u16.to_be_bytes().to_vec()),
            },
            // The kernel fills in the maximum and the "port given" NAT flag.
            Expr::Redir {
                proto_min: Some(Register::reg32(1)),
                proto_max: Some(Register::reg32(1)),
                flags: 2,
            },
        ]
    );
}
