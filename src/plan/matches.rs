//! Shorthands for the matches the policy writes, so each rule of `plan/` reads like its
//! iptables spelling (`tcp(), dport(p)` for `-p tcp --dport P`).

use crate::model::{Match, Proto};
use crate::values::{Cidr, Iface, Owner, Port, PortSpec};

/// `-p tcp`
pub(super) fn tcp() -> Match {
    Match::Protocol(Proto::Tcp)
}

/// `-p udp`
pub(super) fn udp() -> Match {
    Match::Protocol(Proto::Udp)
}

/// `--dport P`
pub(super) fn dport(p: PortSpec) -> Match {
    Match::DestinationPort {
        negated: false,
        port: p,
    }
}

/// `! --dport P`
pub(super) fn not_dport(p: PortSpec) -> Match {
    Match::DestinationPort { negated: true, port: p }
}

/// `--sport P`
pub(super) fn sport(p: PortSpec) -> Match {
    Match::SourcePort {
        negated: false,
        port: p,
    }
}

/// `-d C`
pub(super) fn dst(c: Cidr) -> Match {
    Match::Destination {
        negated: false,
        cidr: c,
    }
}

/// `! -d C`
pub(super) fn not_dst(c: Cidr) -> Match {
    Match::Destination { negated: true, cidr: c }
}

/// `-s C`
pub(super) fn src(c: Cidr) -> Match {
    Match::Source {
        negated: false,
        cidr: c,
    }
}

/// The loopback interface.
pub(super) fn lo() -> Iface {
    Iface::parse("lo").expect("lo is a valid name")
}

/// One port as a port match value.
pub(super) fn single(p: Port) -> PortSpec {
    PortSpec::Single(p)
}

/// Which owner match a proxy UID or GID list is written with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum OwnerKind {
    Uid,
    Gid,
}

impl OwnerKind {
    /// `-m owner [!] --uid-owner WHO` or `--gid-owner WHO`.
    pub(crate) fn matches(self, who: &Owner, negated: bool) -> Match {
        match self {
            OwnerKind::Uid => uid(who, negated),
            OwnerKind::Gid => gid(who, negated),
        }
    }
}

/// `-m owner [!] --uid-owner O`
pub(super) fn uid(o: &Owner, negated: bool) -> Match {
    Match::UidOwner {
        negated,
        owner: o.clone(),
    }
}

/// `-m owner [!] --gid-owner O`
pub(super) fn gid(o: &Owner, negated: bool) -> Match {
    Match::GidOwner {
        negated,
        owner: o.clone(),
    }
}
