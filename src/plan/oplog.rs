//! [`OpLog`]: the plan's operations, recorded in generation order through a small builder.
//!
//! Every rule the policy writes reads as one sentence: which bullet writes it ([`Step`]), where
//! it goes (a [`Loc`]: table and chain, e.g. [`NAT_ISTIO_OUTPUT`]), whether it is inserted
//! (default: appended), and for which families:
//!
//! ```text
//! log.at(Step::OutputJump, NAT_OUTPUT).both(vec![], Target::Jump(IstioChain::Output));
//! log.at(Step::VirtualInterfaceReturn, NAT_PREROUTING).insert(1).both(matches, Target::Return);
//! log.at(Step::CidrExclude, NAT_ISTIO_OUTPUT).only(Family::V6, matches, Target::Return);
//! log.at(Step::LoopbackReturn, NAT_ISTIO_OUTPUT).per_family(|f| (matches_for(f), target));
//! ```
//!
//! An IPv6-only rule is not recorded when IPv6 is off; a rule for both families is always
//! recorded (its IPv6 half is simply never projected without IPv6).

use super::{Scope, ScopedOp, Step};
use crate::model::{ChainName, Hook, IstioChain, Match, Op, Position, Rule, TableName, Target};
use crate::values::Family;

/// Where a rule goes: a table and one of its chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loc {
    pub(crate) table: TableName,
    pub(crate) chain: ChainName,
}

const fn builtin(table: TableName, hook: Hook) -> Loc {
    Loc {
        table,
        chain: ChainName::Builtin(hook),
    }
}

const fn istio(table: TableName, chain: IstioChain) -> Loc {
    Loc {
        table,
        chain: ChainName::Istio(chain),
    }
}

use TableName::{Mangle, Nat, Raw};

pub(super) const NAT_PREROUTING: Loc = builtin(Nat, Hook::Prerouting);
pub(super) const NAT_OUTPUT: Loc = builtin(Nat, Hook::Output);
pub(super) const NAT_ISTIO_INBOUND: Loc = istio(Nat, IstioChain::Inbound);
pub(super) const NAT_ISTIO_REDIRECT: Loc = istio(Nat, IstioChain::Redirect);
pub(super) const NAT_ISTIO_IN_REDIRECT: Loc = istio(Nat, IstioChain::InRedirect);
pub(super) const NAT_ISTIO_OUTPUT: Loc = istio(Nat, IstioChain::Output);
pub(super) const NAT_ISTIO_OUTPUT_DNS: Loc = istio(Nat, IstioChain::OutputDns);
pub(super) const MANGLE_PREROUTING: Loc = builtin(Mangle, Hook::Prerouting);
pub(super) const MANGLE_OUTPUT: Loc = builtin(Mangle, Hook::Output);
pub(super) const MANGLE_ISTIO_INBOUND: Loc = istio(Mangle, IstioChain::Inbound);
pub(super) const MANGLE_ISTIO_DIVERT: Loc = istio(Mangle, IstioChain::Divert);
pub(super) const MANGLE_ISTIO_TPROXY: Loc = istio(Mangle, IstioChain::Tproxy);
pub(super) const MANGLE_ISTIO_DROP: Loc = istio(Mangle, IstioChain::Drop);
pub(super) const RAW_PREROUTING: Loc = builtin(Raw, Hook::Prerouting);
pub(super) const RAW_OUTPUT: Loc = builtin(Raw, Hook::Output);
pub(super) const RAW_ISTIO_INBOUND: Loc = istio(Raw, IstioChain::Inbound);
pub(super) const RAW_ISTIO_OUTPUT_DNS: Loc = istio(Raw, IstioChain::OutputDns);

/// The operations recorded so far, in generation order.
pub(super) struct OpLog {
    ipv6: bool,
    ops: Vec<ScopedOp>,
}

impl OpLog {
    /// An empty log; `ipv6` is the resolved IPv6 enablement, `capacity` the expected length.
    pub(crate) fn new(ipv6: bool, capacity: usize) -> OpLog {
        OpLog {
            ipv6,
            ops: Vec::with_capacity(capacity),
        }
    }

    /// Starts a rule written by `step` at `loc` (appended unless [`At::insert`] says otherwise).
    pub(crate) fn at(&mut self, step: Step, loc: Loc) -> At<'_> {
        At {
            log: self,
            step,
            loc,
            position: Position::Append,
        }
    }

    pub(crate) fn into_ops(self) -> Vec<ScopedOp> {
        self.ops
    }
}

/// A rule being written: its step and place are set, its families and text come next.
#[must_use = "a rule is recorded only by both, only, scoped or per_family"]
pub(super) struct At<'a> {
    log: &'a mut OpLog,
    step: Step,
    loc: Loc,
    position: Position,
}

impl At<'_> {
    /// Insert at rule number `n` (1-based, as `iptables -I CHAIN n`) instead of appending.
    pub(crate) fn insert(mut self, n: u32) -> Self {
        self.position = Position::Insert(n);
        self
    }

    /// For both families.
    pub(crate) fn both(mut self, matches: Vec<Match>, target: Target) {
        self.push(Scope::Both, matches, target);
    }

    /// For one family.
    pub(crate) fn only(mut self, family: Family, matches: Vec<Match>, target: Target) {
        self.push(Scope::Only(family), matches, target);
    }

    /// For the families of `scope`.
    pub(crate) fn scoped(mut self, scope: Scope, matches: Vec<Match>, target: Target) {
        self.push(scope, matches, target);
    }

    /// A rule whose text depends on the family: the IPv4 variant, then the IPv6 one.
    pub(crate) fn per_family(mut self, rule: impl Fn(Family) -> (Vec<Match>, Target)) {
        for family in Family::ALL {
            let (matches, target) = rule(family);
            self.push(Scope::Only(family), matches, target);
        }
    }

    fn push(&mut self, scope: Scope, matches: Vec<Match>, target: Target) {
        if scope == Scope::Only(Family::V6) && !self.log.ipv6 {
            return;
        }
        self.log.ops.push(ScopedOp {
            scope,
            table: self.loc.table,
            op: Op {
                chain: self.loc.chain,
                position: self.position,
                rule: Rule::new(matches, target),
            },
            step: self.step,
        });
    }
}
