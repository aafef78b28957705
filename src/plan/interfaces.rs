//! Steps 1–2 (`docs/istio-compat.md §3.2`): interfaces whose traffic is left alone.
//!
//! ```text
//!  nat PREROUTING ─┬─ -i <excluded>                 RETURN    (1)
//!                  └─ -i <virtual>  (insert at 1)   RETURN    (2)
//!  nat OUTPUT ────── -o <excluded>                  RETURN    (1)
//!  mangle PREROUTING / OUTPUT: the same two rules of 1 in TPROXY mode
//! ```
//!
//! An excluded interface (`-c`) is captured in neither direction. A virtual interface (`-k`)
//! skips inbound capture only: its traffic to captured destinations is redirected as outbound
//! (step 18, in [`super::outbound`]).

use super::Policy;
use super::oplog::{MANGLE_OUTPUT, MANGLE_PREROUTING, NAT_OUTPUT, NAT_PREROUTING, OpLog};
use super::step::Step;
use crate::model::{Match, Target};

/// 1. Excluded interfaces: nat (mangle too in TPROXY mode) PREROUTING `-i` and OUTPUT `-o`
///    RETURN, per interface.
pub(super) fn excluded(log: &mut OpLog, p: &Policy) {
    let nat = (NAT_PREROUTING, NAT_OUTPUT);
    let tables: &[_] = if p.tproxy {
        &[nat, (MANGLE_PREROUTING, MANGLE_OUTPUT)]
    } else {
        &[nat]
    };
    for &(prerouting, output) in tables {
        for iface in &p.cfg.exclude_interfaces {
            let step = Step::ExcludedInterface;
            log.at(step, prerouting)
                .both(vec![Match::InIface(iface.clone())], Target::Return);
            log.at(step, output)
                .both(vec![Match::OutIface(iface.clone())], Target::Return);
        }
    }
}

/// 2. Virtual interfaces skip inbound capture: an insert at 1 into nat PREROUTING, per
///    interface.
pub(super) fn virtual_return(log: &mut OpLog, p: &Policy) {
    for iface in &p.cfg.virtual_interfaces {
        log.at(Step::VirtualInterfaceReturn, NAT_PREROUTING)
            .insert(1)
            .both(vec![Match::InIface(iface.clone())], Target::Return);
    }
}
