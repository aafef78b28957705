//! Netlink bytes → nf_tables messages → meshcap's nftables state (`nft::netlink::to_ir`, the
//! reader of apply's re-run, drift, `check --native-nftables`). Two shapes of input, chosen by
//! the first byte:
//! - even: a netlink stream (frames of any message kind), sorted into a dump as the socket
//!   sorts it;
//! - odd: the expression list of one rule in `istio-proxy-nat istio-output`, beside two anonymous
//!   sets (2-byte keys, interval; 4-byte keys, plain) whose elements come from the input's tail.
//!
//! Properties: no panic; every rule in the state is either understood (its text is the nft
//! spelling of its statements) or names why not and shows the rest in brackets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshcap::nft::netlink::msg::{
    self, NFPROTO_INET, NFT_SET_ANONYMOUS, NFT_SET_ELEM_INTERVAL_END, NFT_SET_INTERVAL,
};
use meshcap::nft::netlink::{Chain, Expr, Message, Rule, Ruleset, Set, SetElem, SetElems, Table, to_ir};

const T: &str = "istio-proxy-nat";

fn from_frames(data: &[u8]) -> Option<Ruleset> {
    let mut rs = Ruleset::default();
    for f in msg::frames(data).ok()? {
        match Message::decode(&f).ok()? {
            Message::NewTable(t) => rs.tables.push(t),
            Message::NewChain(c) => rs.chains.push(c),
            Message::NewSet(s) => rs.sets.push(s),
            Message::NewSetElems(e) => rs.elements.push(e),
            Message::NewRule(r) => rs.rules.push(r),
            other => rs.unknown.push(other),
        }
    }
    Some(rs)
}

fn set(name: &str, key_len: u32, flags: u32, keys: &[u8], with_flags: bool) -> (Set, SetElems) {
    let step = key_len as usize + usize::from(with_flags);
    let elements = keys
        .chunks_exact(step)
        .map(|c| SetElem {
            key: Some(c[..key_len as usize].to_vec()),
            flags: if with_flags && c[key_len as usize] & 1 == 1 { NFT_SET_ELEM_INTERVAL_END } else { 0 },
            ..SetElem::default()
        })
        .collect();
    let s = Set {
        family: NFPROTO_INET,
        table: T.into(),
        name: name.into(),
        flags: NFT_SET_ANONYMOUS | flags,
        key_len,
        ..Set::default()
    };
    let e = SetElems {
        family: NFPROTO_INET,
        table: T.into(),
        set: name.into(),
        elements,
        ..SetElems::default()
    };
    (s, e)
}

fn one_rule(data: &[u8]) -> Option<Ruleset> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let cut = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (list, tail) = rest.split_at(cut);
    let exprs = Expr::decode_list(list).ok()?;
    let (half_a, half_b) = tail.split_at(tail.len() / 2);
    let (s0, e0) = set("__set0", 2, NFT_SET_INTERVAL, half_a, true);
    let (s1, e1) = set("__set1", 4, 0, half_b, false);
    Some(Ruleset {
        tables: vec![Table {
            family: NFPROTO_INET,
            name: T.into(),
            ..Table::default()
        }],
        chains: vec![Chain {
            family: NFPROTO_INET,
            table: T.into(),
            name: "istio-output".into(),
            ..Chain::default()
        }],
        sets: vec![s0, s1],
        elements: vec![e0, e1],
        rules: vec![Rule {
            family: NFPROTO_INET,
            table: T.into(),
            chain: "istio-output".into(),
            exprs,
            ..Rule::default()
        }],
        unknown: Vec::new(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let rs = if mode % 2 == 0 { from_frames(rest) } else { one_rule(rest) };
    let Some(rs) = rs else { return };
    let state = to_ir::decode(&rs);
    for chain in state.chains.values() {
        for r in &chain.rules {
            match &r.stmts {
                Ok(rule) => assert_eq!(r.text, rule.to_string()),
                Err(why) => assert!(!why.is_empty() && r.text.contains('['), "{why}: {}", r.text),
            }
        }
    }
});
