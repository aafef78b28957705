//! TPROXY mode (`-m TPROXY`, `docs/istio-compat.md §3.2` steps 7 and 19): inbound connections
//! are delivered to the proxy's transparent socket in mangle instead of being NATed, and marks
//! keep the proxy's own loopback traffic apart.
//!
//! ```text
//!  mangle PREROUTING ─┬─ -p tcp ─► ISTIO_INBOUND                                      (7)
//!                     │             ├─ -p tcp -m mark <mark>                 RETURN   (19, insert 1)
//!                     │             ├─ -p tcp -s 127.0.0.6 / ::6 -i lo       RETURN   (19, insert 2)
//!                     │             ├─ -p tcp -i lo ! -m mark 1338           RETURN   (19, insert 3)
//!                     │             ├─ [--dport P] RELATED,ESTABLISHED ─► ISTIO_DIVERT
//!                     │             │                                  ├─ MARK <mark>
//!                     │             │                                  └─ ACCEPT
//!                     │             └─ [--dport P] ─► ISTIO_TPROXY
//!                     │                                └─ ! -d LB -p tcp  TPROXY <capture port> <mark>
//!                     └─ -p tcp -m mark <mark>            CONNMARK --save-mark        (19)
//!  mangle OUTPUT ─────┬─ -p tcp -o lo -m mark <mark>      RETURN                      (19)
//!                     ├─ ! -d LB -p tcp -o lo <proxy owner>  MARK 1338 (per UID, GID) (19)
//!                     └─ -p tcp -m connmark <mark>        CONNMARK --restore-mark     (19)
//! ```
//!
//! The policy routes (`fwmark <mark> lookup <table>`, `local default dev lo table <table>`)
//! deliver the marked packets locally ([`routes`]).

use super::matches::{OwnerKind, dport, lo, not_dst, src, tcp};
use super::oplog::{
    MANGLE_ISTIO_DIVERT, MANGLE_ISTIO_INBOUND, MANGLE_ISTIO_TPROXY, MANGLE_OUTPUT, MANGLE_PREROUTING, OpLog,
};
use super::step::Step;
use super::{Policy, TproxyRoutes};
use crate::config::OUTBOUND_MARK;
use crate::model::{CtState, IstioChain, Match, Target};
use crate::values::{Family, PortSpec};

/// 7. The ISTIO_DIVERT chain (mark and accept) and the ISTIO_TPROXY chain (deliver to the
///    capture port, except loopback destinations).
pub(super) fn divert_and_tproxy_chains(log: &mut OpLog, p: &Policy) {
    let mark = p.cfg.tproxy_mark;
    log.at(Step::DivertMark, MANGLE_ISTIO_DIVERT)
        .both(vec![], Target::SetMark(mark));
    log.at(Step::DivertAccept, MANGLE_ISTIO_DIVERT)
        .both(vec![], Target::Accept);
    log.at(Step::Tproxy, MANGLE_ISTIO_TPROXY).per_family(|f| {
        (
            vec![not_dst(p.loopback(f)), tcp()],
            Target::Tproxy {
                mark,
                port: p.cfg.inbound_capture_port,
            },
        )
    });
}

/// 7. The capture of one inbound port (or of all, with `None`): established connections are
///    diverted, new ones go to ISTIO_TPROXY.
pub(super) fn capture_port(log: &mut OpLog, port: Option<PortSpec>) {
    let with_port = |extra: Option<Match>| {
        let mut matches = vec![tcp()];
        matches.extend(port.map(dport));
        matches.extend(extra);
        matches
    };
    let established = Match::ConntrackState(vec![CtState::Related, CtState::Established]);
    log.at(Step::InboundEstablished, MANGLE_ISTIO_INBOUND)
        .both(with_port(Some(established)), Target::Jump(IstioChain::Divert));
    log.at(Step::InboundCapture, MANGLE_ISTIO_INBOUND)
        .both(with_port(None), Target::Jump(IstioChain::Tproxy));
}

/// 19. TPROXY mode (even without inbound ports): keep the mark on the connection, let the
///     proxy's loopback replies through, and keep the proxy's marked traffic out of capture.
pub(super) fn keep_marks(log: &mut OpLog, p: &Policy) {
    if !p.tproxy {
        return;
    }
    let mark = p.cfg.tproxy_mark;
    let has_mark = |negated, mark| Match::Mark { negated, mark };
    log.at(Step::TproxySaveMark, MANGLE_PREROUTING)
        .both(vec![tcp(), has_mark(false, mark)], Target::SaveMark);
    log.at(Step::TproxyMarkedReturn, MANGLE_OUTPUT).both(
        vec![tcp(), Match::OutIface(lo()), has_mark(false, mark)],
        Target::Return,
    );
    for (kind, list) in [(OwnerKind::Uid, &p.cfg.proxy_uids), (OwnerKind::Gid, &p.cfg.proxy_gids)] {
        for who in list {
            log.at(Step::TproxyProxyMark, MANGLE_OUTPUT).per_family(|f| {
                (
                    vec![
                        not_dst(p.loopback(f)),
                        tcp(),
                        Match::OutIface(lo()),
                        kind.matches(who, false),
                    ],
                    Target::SetMark(OUTBOUND_MARK),
                )
            });
        }
    }
    log.at(Step::TproxyRestoreMark, MANGLE_OUTPUT)
        .both(vec![tcp(), Match::ConnMark(mark)], Target::RestoreMark);
    log.at(Step::TproxyInboundMarked, MANGLE_ISTIO_INBOUND)
        .insert(1)
        .both(vec![tcp(), has_mark(false, mark)], Target::Return);
    for family in Family::ALL {
        let matches = vec![tcp(), src(family.passthrough_source()), Match::InIface(lo())];
        log.at(Step::TproxyInboundPassthrough, MANGLE_ISTIO_INBOUND)
            .insert(2)
            .only(family, matches, Target::Return);
    }
    log.at(Step::TproxyInboundLoopback, MANGLE_ISTIO_INBOUND)
        .insert(3)
        .both(
            vec![tcp(), Match::InIface(lo()), has_mark(true, OUTBOUND_MARK)],
            Target::Return,
        );
}

/// The TPROXY policy routes, when TPROXY mode captures inbound ports.
pub(super) fn routes(p: &Policy) -> Option<TproxyRoutes> {
    (p.tproxy && !p.cfg.inbound_ports.is_empty()).then(|| TproxyRoutes {
        mark: p.cfg.tproxy_mark,
        table: p.cfg.tproxy_route_table,
        families: if p.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        },
    })
}
