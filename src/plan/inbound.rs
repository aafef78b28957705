//! Steps 3, 4, 6 and 7 (`docs/istio-compat.md §3.2`): inbound capture into the proxy's inbound
//! listener (the capture port, 15006 by default).
//!
//! REDIRECT mode (nat):
//!
//! ```text
//!  nat PREROUTING ── -p tcp ─► ISTIO_INBOUND                                         (7)
//!                               ├─ --dport <tunnel>               RETURN              (4)
//!                               ├─ --dport <-d port>              RETURN   (-b '*')   (7)
//!                               └─ [--dport <-b port>] ─► ISTIO_IN_REDIRECT          (7)
//!                                                          └─ -p tcp REDIRECT <capture port> (6)
//! ```
//!
//! TPROXY mode (mangle; the chains and marks are in [`super::tproxy`]):
//!
//! ```text
//!  mangle PREROUTING ─┬─ ctstate INVALID ─► ISTIO_DROP ── DROP    (3, --drop-invalid, both modes)
//!                     └─ -p tcp ─► ISTIO_INBOUND                                       (7)
//!                                   ├─ --dport <-d port>          RETURN   (-b '*')
//!                                   ├─ [--dport P] RELATED,ESTABLISHED ─► ISTIO_DIVERT
//!                                   └─ [--dport P] ─► ISTIO_TPROXY
//! ```
//!
//! The tunnel-port RETURN (4) and ISTIO_IN_REDIRECT (6) are written in both modes.

use super::Policy;
use super::matches::{dport, tcp};
use super::oplog::{
    MANGLE_ISTIO_DROP, MANGLE_ISTIO_INBOUND, MANGLE_PREROUTING, NAT_ISTIO_IN_REDIRECT, NAT_ISTIO_INBOUND,
    NAT_PREROUTING, OpLog,
};
use super::step::Step;
use super::tproxy;
use crate::config::PortSelection;
use crate::model::{CtState, IstioChain, Match, Target};
use crate::values::PortSpec;

/// 3. `--drop-invalid`: conntrack-invalid packets jump to ISTIO_DROP, which drops them.
pub(super) fn drop_invalid(log: &mut OpLog, p: &Policy) {
    if !p.cfg.drop_invalid {
        return;
    }
    log.at(Step::DropInvalid, MANGLE_PREROUTING).both(
        vec![Match::ConntrackState(vec![CtState::Invalid])],
        Target::Jump(IstioChain::Drop),
    );
    log.at(Step::DropVerdict, MANGLE_ISTIO_DROP).both(vec![], Target::Drop);
}

/// 4. The tunnel port is never captured inbound.
pub(super) fn tunnel_port_return(log: &mut OpLog, p: &Policy) {
    log.at(Step::TunnelPortReturn, NAT_ISTIO_INBOUND)
        .both(vec![tcp(), dport(p.tunnel)], Target::Return);
}

/// 6. ISTIO_IN_REDIRECT: to the inbound capture port (always written).
pub(super) fn redirect_chain(log: &mut OpLog, p: &Policy) {
    log.at(Step::InboundRedirect, NAT_ISTIO_IN_REDIRECT).both(
        vec![tcp()],
        Target::Redirect {
            port: p.cfg.inbound_capture_port,
        },
    );
}

/// 7. Inbound capture, only with inbound ports (`-b`): in TPROXY mode first the ISTIO_DIVERT and
///    ISTIO_TPROXY chains, then the PREROUTING jump, then the capture rules: with `-b '*'` the
///    excluded ports (`-d`) return and every other port is captured; with a list, each port is
///    captured (and `-d` is ignored).
pub(super) fn capture(log: &mut OpLog, p: &Policy) {
    if p.cfg.inbound_ports.is_empty() {
        return;
    }
    let (prerouting, inbound) = if p.tproxy {
        tproxy::divert_and_tproxy_chains(log, p);
        (MANGLE_PREROUTING, MANGLE_ISTIO_INBOUND)
    } else {
        (NAT_PREROUTING, NAT_ISTIO_INBOUND)
    };
    log.at(Step::InboundJump, prerouting)
        .both(vec![tcp()], Target::Jump(IstioChain::Inbound));
    match &p.cfg.inbound_ports {
        PortSelection::All => {
            for port in &p.cfg.inbound_exclude_ports {
                log.at(Step::InboundPortExclude, inbound)
                    .both(vec![tcp(), dport(*port)], Target::Return);
            }
            capture_port(log, p, None);
        }
        PortSelection::List(ports) => {
            for port in ports {
                capture_port(log, p, Some(*port));
            }
        }
    }
}

/// The capture of one inbound port (or of all, with `None`).
fn capture_port(log: &mut OpLog, p: &Policy, port: Option<PortSpec>) {
    if p.tproxy {
        tproxy::capture_port(log, port);
    } else {
        let mut matches = vec![tcp()];
        matches.extend(port.map(dport));
        log.at(Step::InboundCapture, NAT_ISTIO_INBOUND)
            .both(matches, Target::Jump(IstioChain::InRedirect));
    }
}
