//! A model of what the kernel's nf_tables commit does with a batch, for the round-trip
//! property only (`cfg(test)` and the `fuzzing` feature; the product never uses it): the
//! messages [`super::from_ir`] sends, applied to a [`Ruleset`], give the ruleset a dump would
//! then report, so `to_ir::decode(commit(lower(tx))) == planned(tx)` is checked without a
//! kernel. The real kernel is the oracle of `tests/it/nft_from_ir.rs`; this model follows it
//! for what meshcap's batches use:
//! - tables, chains and sets get handles from one counter; a table's use count is its chains
//!   and sets, a chain's the rules that jump or go to it; base chains report `NFT_CHAIN_BASE`;
//!   transaction ids (`id`, `set_id`, `position_id`) are never reported;
//! - `add table`/`add chain` of an existing object change nothing (a base chain must keep its
//!   hook and type); deleting a missing object, a chain with rules or a chain something jumps
//!   to, a rule in a missing chain or a lookup of a missing set is refused, as the kernel does;
//! - a rule goes after (`append`) or before (`insert`) the rule named by `position` (a handle)
//!   or `position_id`, else at the end or the start; a dump reports it with `append` and the
//!   handle of the rule before it;
//! - an anonymous set named `__set%d` gets the lowest free number in its table; its elements
//!   come back in descending key order for interval sets (the rbtree backend's dump), and it
//!   is freed with the last rule that uses it (`flush table`, `delete table`).

use std::collections::BTreeMap;

use super::expr::{Data, Expr, Verdict};
use super::msg::{Batch, Chain, Message, NFT_SET_ANONYMOUS, NFT_SET_INTERVAL, Rule, Set, SetElems, Table};
use super::socket::Ruleset;
use super::{from_ir, to_ir};
use crate::nft::ir::{NftState, Transaction};
use crate::sys::host::Ids;

/// The ruleset after the kernel commits `messages` on top of `before` (a dump), or why it
/// would refuse the batch (then nothing changes: the batch is atomic).
pub fn commit(before: &Ruleset, messages: &[Message]) -> Result<Ruleset, String> {
    let mut k = Kernel::from_dump(before);
    for (i, m) in messages.iter().enumerate() {
        k.apply(m).map_err(|why| format!("message {i} ({m}): {why}"))?;
    }
    Ok(k.dump())
}

#[derive(Default)]
struct Kernel {
    next_handle: u64,
    tables: Vec<Table>,
    chains: Vec<Chain>,
    /// Rules of each (table, chain), in chain order.
    rules: BTreeMap<(String, String), Vec<Rule>>,
    sets: Vec<(Set, SetElems)>,
    /// This batch's ids: rule id → handle, set id → (table, name).
    rule_ids: BTreeMap<u32, u64>,
    set_ids: BTreeMap<u32, (String, String)>,
}

impl Kernel {
    fn from_dump(rs: &Ruleset) -> Kernel {
        let mut k = Kernel {
            tables: rs.tables.clone(),
            chains: rs.chains.clone(),
            sets: rs.sets.iter().cloned().zip(rs.elements.iter().cloned()).collect(),
            ..Kernel::default()
        };
        for r in &rs.rules {
            k.rules
                .entry((r.table.clone(), r.chain.clone()))
                .or_default()
                .push(r.clone());
        }
        let handles = rs.tables.iter().filter_map(|t| t.handle);
        let handles = handles.chain(rs.chains.iter().filter_map(|c| c.handle));
        let handles = handles.chain(rs.sets.iter().filter_map(|s| s.handle));
        k.next_handle = handles
            .chain(rs.rules.iter().filter_map(|r| r.handle))
            .max()
            .unwrap_or(0)
            + 1;
        k
    }

    fn handle(&mut self) -> u64 {
        self.next_handle += 1;
        self.next_handle - 1
    }

    fn has_table(&self, t: &str) -> bool {
        self.tables.iter().any(|x| x.name == t)
    }

    fn apply(&mut self, m: &Message) -> Result<(), String> {
        match m {
            Message::NewTable(t) => {
                if !self.has_table(&t.name) {
                    let handle = Some(self.handle());
                    self.tables.push(Table {
                        handle,
                        use_count: None,
                        ..t.clone()
                    });
                }
            }
            Message::DelTable(t) => {
                if !self.has_table(&t.name) {
                    return Err("no such table (ENOENT)".into());
                }
                self.tables.retain(|x| x.name != t.name);
                self.chains.retain(|c| c.table != t.name);
                self.rules.retain(|(table, _), _| *table != t.name);
                self.sets.retain(|(s, _)| s.table != t.name);
            }
            Message::NewChain(c) => self.new_chain(c)?,
            Message::DelChain(c) => {
                let key = (c.table.clone(), c.name.clone());
                if !self.chains.iter().any(|x| x.table == c.table && x.name == c.name) {
                    return Err("no such chain (ENOENT)".into());
                }
                if self.rules.get(&key).is_some_and(|r| !r.is_empty()) || self.jumps_to(&c.table, &c.name) > 0 {
                    return Err("chain in use (EBUSY)".into());
                }
                self.chains.retain(|x| !(x.table == c.table && x.name == c.name));
                self.rules.remove(&key);
            }
            Message::NewRule(r) => self.new_rule(r)?,
            Message::DelRule(r) => self.del_rules(r)?,
            Message::NewSet(s) => self.new_set(s)?,
            Message::NewSetElems(e) => {
                let name = match e.set_id {
                    Some(id) => self.set_ids.get(&id).map(|(_, n)| n.clone()),
                    None => Some(e.set.clone()),
                };
                let set = name
                    .and_then(|n| self.sets.iter_mut().find(|(s, _)| s.table == e.table && s.name == n))
                    .ok_or("no such set (ENOENT)")?;
                set.1.elements.extend(e.elements.iter().cloned());
                set.1.unknown.extend(e.unknown.iter().cloned());
            }
            Message::Unknown { .. } => return Err("a message kind the model does not know".into()),
        }
        Ok(())
    }

    fn new_chain(&mut self, c: &Chain) -> Result<(), String> {
        if !self.has_table(&c.table) {
            return Err("no such table (ENOENT)".into());
        }
        if let Some(old) = self.chains.iter().find(|x| x.table == c.table && x.name == c.name) {
            if c.hook.is_some() && (old.hook != c.hook || old.chain_type != c.chain_type) {
                return Err("a base chain cannot change its hook or type (EOPNOTSUPP)".into());
            }
            return Ok(());
        }
        let handle = Some(self.handle());
        self.chains.push(Chain {
            handle,
            flags: Some(u32::from(c.hook.is_some())),
            id: None,
            use_count: None,
            ..c.clone()
        });
        self.rules.entry((c.table.clone(), c.name.clone())).or_default();
        Ok(())
    }

    fn new_rule(&mut self, r: &Rule) -> Result<(), String> {
        let key = (r.table.clone(), r.chain.clone());
        if !self.chains.iter().any(|c| c.table == r.table && c.name == r.chain) {
            return Err("no such chain (ENOENT)".into());
        }
        let mut exprs = Vec::with_capacity(r.exprs.len());
        for e in &r.exprs {
            exprs.push(match e {
                Expr::Lookup {
                    set,
                    set_id,
                    sreg,
                    dreg,
                    invert,
                } => {
                    let name = match set_id {
                        Some(id) => self
                            .set_ids
                            .get(id)
                            .map(|(_, n)| n.clone())
                            .ok_or("no such set id (ENOENT)")?,
                        None => set.clone(),
                    };
                    if !self.sets.iter().any(|(s, _)| s.table == r.table && s.name == name) {
                        return Err(format!("no such set {name} (ENOENT)"));
                    }
                    Expr::Lookup {
                        set: name,
                        set_id: None,
                        sreg: *sreg,
                        dreg: *dreg,
                        invert: *invert,
                    }
                }
                Expr::Immediate {
                    data: Data::Verdict(Verdict::Jump(c) | Verdict::Goto(c)),
                    ..
                } if !self.chains.iter().any(|x| x.table == r.table && x.name == *c) => {
                    return Err(format!("no such chain {c} to jump to (ENOENT)"));
                }
                other => other.clone(),
            });
        }
        let handle = self.handle();
        if let Some(id) = r.id {
            self.rule_ids.insert(id, handle);
        }
        let anchor = match (r.position, r.position_id) {
            (Some(h), _) => Some(h),
            (None, Some(id)) => Some(*self.rule_ids.get(&id).ok_or("no such rule id (ENOENT)")?),
            (None, None) => None,
        };
        let rules = self.rules.entry(key).or_default();
        let at = match anchor {
            None if r.append => rules.len(),
            None => 0,
            Some(h) => {
                let i = rules
                    .iter()
                    .position(|x| x.handle == Some(h))
                    .ok_or("no such rule (ENOENT)")?;
                if r.append { i + 1 } else { i }
            }
        };
        rules.insert(
            at,
            Rule {
                handle: Some(handle),
                append: true,
                position: None,
                id: None,
                position_id: None,
                exprs,
                ..r.clone()
            },
        );
        Ok(())
    }

    fn del_rules(&mut self, r: &Rule) -> Result<(), String> {
        if !self.has_table(&r.table) {
            return Err("no such table (ENOENT)".into());
        }
        for ((table, chain), rules) in &mut self.rules {
            if *table != r.table || (!r.chain.is_empty() && *chain != r.chain) {
                continue;
            }
            match r.handle {
                Some(h) => rules.retain(|x| x.handle != Some(h)),
                None => rules.clear(),
            }
        }
        // Anonymous sets live as long as a rule uses them.
        let used: Vec<(String, String)> = self
            .rules
            .values()
            .flatten()
            .flat_map(|x| {
                x.exprs.iter().filter_map(move |e| match e {
                    Expr::Lookup { set, .. } => Some((x.table.clone(), set.clone())),
                    _ => None,
                })
            })
            .collect();
        self.sets.retain(|(s, _)| {
            s.table != r.table || s.flags & NFT_SET_ANONYMOUS == 0 || used.contains(&(s.table.clone(), s.name.clone()))
        });
        Ok(())
    }

    fn new_set(&mut self, s: &Set) -> Result<(), String> {
        if !self.has_table(&s.table) {
            return Err("no such table (ENOENT)".into());
        }
        let Some(id) = s.id else {
            return Err("a set without an id (EINVAL)".into());
        };
        let name = match s.name.split_once("%d") {
            Some((head, tail)) => (0..)
                .map(|n| format!("{head}{n}{tail}"))
                .find(|n| !self.sets.iter().any(|(x, _)| x.table == s.table && x.name == *n))
                .unwrap_or_default(),
            None if self.sets.iter().any(|(x, _)| x.table == s.table && x.name == s.name) => return Ok(()),
            None => s.name.clone(),
        };
        self.set_ids.insert(id, (s.table.clone(), name.clone()));
        let handle = Some(self.handle());
        let set = Set {
            name: name.clone(),
            handle,
            id: None,
            ..s.clone()
        };
        let elems = SetElems {
            family: s.family,
            table: s.table.clone(),
            set: name,
            ..SetElems::default()
        };
        self.sets.push((set, elems));
        Ok(())
    }

    fn jumps_to(&self, table: &str, chain: &str) -> u32 {
        let n = self
            .rules
            .iter()
            .filter(|((t, _), _)| t == table)
            .flat_map(|(_, rules)| rules.iter().flat_map(|r| &r.exprs))
            .filter(|e| {
                matches!(e, Expr::Immediate { data: Data::Verdict(Verdict::Jump(c) | Verdict::Goto(c)), .. } if c == chain)
            })
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// What `Socket::ruleset` would read: tables, chains, sets with their elements, rules.
    fn dump(self) -> Ruleset {
        let mut rs = Ruleset::default();
        for t in &self.tables {
            let chains = self.chains.iter().filter(|c| c.table == t.name).count();
            let sets = self.sets.iter().filter(|(s, _)| s.table == t.name).count();
            rs.tables.push(Table {
                use_count: u32::try_from(chains + sets).ok(),
                ..t.clone()
            });
        }
        for c in &self.chains {
            rs.chains.push(Chain {
                use_count: Some(self.jumps_to(&c.table, &c.name)),
                ..c.clone()
            });
        }
        for (s, e) in &self.sets {
            let mut e = e.clone();
            if s.flags & NFT_SET_INTERVAL != 0 {
                e.elements.sort_by(|a, b| b.key.cmp(&a.key).then(a.flags.cmp(&b.flags)));
            }
            rs.sets.push(s.clone());
            rs.elements.push(e);
        }
        for c in &self.chains {
            let mut before = None;
            for r in self.rules.get(&(c.table.clone(), c.name.clone())).into_iter().flatten() {
                rs.rules.push(Rule {
                    position: before,
                    ..r.clone()
                });
                before = r.handle;
            }
        }
        rs
    }
}

/// `messages` as one batch on the wire and back: the decoded batch, with element lists the
/// encoder split over several frames joined again, must be `messages` exactly.
pub fn through_wire(messages: &[Message]) -> Result<Vec<Message>, String> {
    let batch = Batch::encode(messages, 1, None).map_err(|e| format!("cannot encode the batch: {e:?}"))?;
    let decoded = Batch::decode(&batch.bytes).map_err(|e| format!("cannot decode the batch: {e:?}"))?;
    let mut joined: Vec<Message> = Vec::with_capacity(messages.len());
    for (seq, m) in decoded.into_iter().enumerate() {
        let first = batch.seqs.iter().any(|(s, _, _)| *s == 2 + seq as u32);
        match (first, joined.last_mut(), m) {
            (false, Some(Message::NewSetElems(into)), Message::NewSetElems(more)) => {
                into.elements.extend(more.elements);
                into.unknown.extend(more.unknown);
            }
            (_, _, m) => joined.push(m),
        }
    }
    if joined.len() != messages.len() {
        return Err(format!("{} messages sent, {} decoded", messages.len(), joined.len()));
    }
    for (i, (sent, got)) in messages.iter().zip(&joined).enumerate() {
        if sent != got {
            return Err(format!(
                "message {i} changed on the wire:\n sent {sent:?}\n  got {got:?}"
            ));
        }
    }
    Ok(joined)
}

/// Why a transaction cannot be checked: from_ir refused it (nft would refuse its text too),
/// or the round trip broke (a bug).
#[derive(Debug)]
pub enum RoundTrip {
    Refused(super::from_ir::LowerError),
    Broken(String),
}

/// `tx` lowered, sent through the wire, committed on top of `before` by the model and read
/// back by `to_ir`: the state and the dump it was read from.
pub fn apply_and_read(before: &Ruleset, tx: &Transaction, ids: &Ids) -> Result<(NftState, Ruleset), RoundTrip> {
    let lowered = from_ir::lower(tx, ids).map_err(RoundTrip::Refused)?;
    let sent = through_wire(&lowered.messages).map_err(RoundTrip::Broken)?;
    let after = commit(before, &sent).map_err(RoundTrip::Broken)?;
    Ok((to_ir::decode(&after), after))
}
