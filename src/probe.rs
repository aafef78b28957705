//! `--run-validation` (istio-compat §7): after the rules step, prove with real connections inside the
//! target network namespace that the capture works, before the workload starts. A failure is
//! [`ValidationError`]; the caller logs Istio's fixed [`FAILURE_MESSAGE`] and exits 126.
//!
//! Paths probed, all within the one `--probe-timeout` deadline (each retried until it passes):
//! - `loopback` — Istio's probe: a connection from `127.0.0.1` (`::1`) to `127.0.0.6:<probe
//!   port>` (`[::6]`) made as the proxy must reach a validator listener on the proxy port or the
//!   inbound capture port, which recovers the probe port as original destination.
//! - `inbound` — the pod's own address, `<HostIP>:<probe port>`, connected as the proxy, must
//!   reach the inbound capture port itself (not just any listener) with that original
//!   destination: the ISTIO_IN_REDIRECT leg for the pod address. Connections arriving from
//!   outside the pod cannot be produced from inside it; this is the inbound leg that can.
//! - `dns` — when DNS capture is effective: a UDP query sent as an application (an identity that
//!   is neither a proxy uid nor gid) to port 53 of the first resolv.conf server of the family
//!   (with `--capture-all-dns`: of the pod's own address, so nothing leaves the pod) must arrive
//!   at the validator's listener on `127.0.0.1:15053` (`[::1]`), and the answer must come back
//!   to the client from the address it sent to (reverse NAT, consistent conntrack zones).
//!   Skipped (and logged) where a failure would not mean missing rules: no server of the
//!   family, port 53 excluded (`-o`), excluded interfaces (`-c`), no application identity.
//!
//! Families: HostIP's (as Istio: the first non-loopback, non-link-local address, istio-compat §2.4),
//! and IPv6 as well when dual-stack detection enables it.
//!
//! Identities: `-m owner` matches the filesystem uid/gid a socket was created with. Run as the
//! proxy uid (Istio's `istio-validation` container) the probes are the proxy's and the `dns` path
//! is skipped (it needs another identity); run as root with CAP_SETUID and CAP_SETGID, each
//! socket is created under the identity its path needs (`setfsuid`/`setfsgid` on the validation
//! thread, restored right after); otherwise (any other user, or root with only `istio-init`'s
//! NET_ADMIN/NET_RAW) the probes carry the process's own identity, as in Istio.
//!
//! Everything runs on one thread that entered `--network-namespace` (if given).

use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage, sockopt,
};
use nix::unistd::{Gid, Uid};

use crate::config::{Config, DNS_AGENT_PORT, DNS_PORT, OwnerGroups};
use crate::error::Error;
use crate::sys::kernel::detect_ipv6;
use crate::sys::netns::{self, Netns};
use crate::values::{Family, Owner};

/// What Istio prints (at error level) before exiting 126 (`app` logs it after the failed paths).
pub(crate) const FAILURE_MESSAGE: &str = "iptables validation failed; workload is not ready for Istio.
When using Istio CNI, this can occur if a pod is scheduled before the node is ready.

If installed with 'cni.repair.deletePods=true', this pod should automatically be deleted and retry.
Otherwise, this pod will need to be manually removed so that it is scheduled on a node with istio-cni running, allowing iptables rules to be established.
";

/// How long one attempt of a path may wait for the kernel; attempts repeat until the deadline.
const ATTEMPT: Duration = Duration::from_millis(400);
/// Pause between rounds of attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbePath {
    Loopback,
    Inbound,
    Dns,
}

impl fmt::Display for ProbePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbePath::Loopback => "loopback",
            ProbePath::Inbound => "inbound",
            ProbePath::Dns => "dns",
        })
    }
}

/// How one path of one family ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Passed(String),
    Skipped(String),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    pub(crate) path: ProbePath,
    pub(crate) family: Family,
    pub(crate) outcome: Outcome,
}

/// Every path checked (passed or skipped; failures make a [`ValidationError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValidationReport {
    pub(crate) checks: Vec<Check>,
}

#[derive(Debug)]
pub(crate) enum ValidationError {
    /// The validator could not start (namespace, no usable local address): exit 1.
    Setup(Error),
    /// No listener could be created (Istio: `Validation failed: no listener available: …`).
    NoListener(Vec<String>),
    /// Some path did not pass before the deadline (Istio: `validation timeout`).
    Timeout(Vec<Check>),
}

/// A setup failure is the error it is; a failed probe is [`Error::Validation`] (exit 126),
/// with the lines Istio logs: each failed path, then the summary.
impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Error {
        let summary = match &e {
            ValidationError::NoListener(_) => format!("Validation failed: {e}"),
            _ => e.to_string(),
        };
        match e {
            ValidationError::Setup(e) => e,
            ValidationError::NoListener(_) => Error::Validation {
                failed: Vec::new(),
                summary,
            },
            ValidationError::Timeout(checks) => Error::Validation {
                failed: checks
                    .iter()
                    .filter_map(|c| match &c.outcome {
                        Outcome::Failed(why) => {
                            Some(format!("validation path {} ({}) failed: {why}", c.path, c.family))
                        }
                        _ => None,
                    })
                    .collect(),
                summary,
            },
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValidationError::Setup(e) => write!(f, "{e}"),
            ValidationError::NoListener(addrs) => write!(f, "no listener available: {}", addrs.join(",")),
            ValidationError::Timeout(_) => f.write_str("validation timeout"),
        }
    }
}

/// Runs the validation for `cfg` inside `netns` (or the current namespace) and reports every
/// path.
pub(crate) fn run(cfg: &Config, netns: Option<&Netns>) -> Result<ValidationReport, ValidationError> {
    netns::within(netns, || Validator::new(cfg)?.run()).map_err(ValidationError::Setup)?
}

/// Step 5 of Istio's flow (istio-compat §2.2), after the rules step: nothing unless
/// `--run-validation`; a failed probe is [`Error::Validation`]: `app` logs its failed paths
/// and Istio's fixed message, and exits 126.
pub(crate) fn after_rules(cfg: &Config, netns: Option<&Netns>) -> crate::error::Result<()> {
    if !cfg.run_validation {
        return Ok(());
    }
    run(cfg, netns).map(drop).map_err(Error::from)
}

/// The addresses of the current thread's network namespace in kernel dump order, each with
/// whether it sits on a loopback interface.
fn local_addresses() -> Result<Vec<(IpAddr, bool)>, ValidationError> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| ValidationError::Setup(Error::system("cannot list the interface addresses", e)))?;
    Ok(addrs
        .filter_map(|ifa| {
            let on_lo = ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK);
            ifa.address.as_ref().and_then(std_addr).map(|a| (a.ip(), on_lo))
        })
        .collect())
}

/// The pod's own address of `family`: the first address Istio's HostIP scan would accept
/// (istio-compat §2.4) that is not on `lo` (where the `::6` passthrough source lives, which that scan
/// can pick).
fn pod_address(addrs: &[(IpAddr, bool)], family: Family) -> Option<IpAddr> {
    addrs
        .iter()
        .filter(|(_, on_lo)| !on_lo)
        .map(|(a, _)| a.to_canonical())
        .find(|a| Family::of(a) == family && detect_ipv6(&[*a], false).is_ok())
}

fn std_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*a)));
    }
    s.as_sockaddr_in6().map(|a| SocketAddr::V6(SocketAddrV6::from(*a)))
}

/// Whose socket a probe uses (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum As {
    Current,
    Ids(u32, u32),
}

fn first_id(owners: &[Owner]) -> Option<u32> {
    owners.iter().find_map(|o| match o {
        Owner::Id(n) => Some(*n),
        Owner::Name(name) => crate::sys::host::lookup_uid("/etc/passwd", name).ok().flatten(),
    })
}

fn owner_ids(owners: &[Owner]) -> Vec<u32> {
    owners
        .iter()
        .filter_map(|o| match o {
            Owner::Id(n) => Some(*n),
            Owner::Name(name) => crate::sys::host::lookup_uid("/etc/passwd", name).ok().flatten(),
        })
        .collect()
}

/// Whether this thread may take other filesystem ids (root with CAP_SETUID and CAP_SETGID;
/// `istio-init` runs as root with only NET_ADMIN and NET_RAW). `setfsuid` reports no error, so
/// the switch is tried and read back (an invalid id changes nothing and returns the current).
fn fsids_switchable() -> bool {
    let probe = 65534;
    let old_uid = nix::unistd::setfsuid(Uid::from_raw(probe));
    let uid_now = nix::unistd::setfsuid(Uid::from_raw(u32::MAX));
    nix::unistd::setfsuid(old_uid);
    let old_gid = nix::unistd::setfsgid(Gid::from_raw(probe));
    let gid_now = nix::unistd::setfsgid(Gid::from_raw(u32::MAX));
    nix::unistd::setfsgid(old_gid);
    uid_now.as_raw() == probe && gid_now.as_raw() == probe
}

/// The identities for proxy probes and application probes (an error: no usable application
/// identity, and why).
fn identities(cfg: &Config) -> (As, Result<As, String>) {
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    let proxy_uids = owner_ids(&cfg.proxy_uids);
    let proxy_gids = owner_ids(&cfg.proxy_gids);
    let is_proxy = |uid: u32, gid: u32| proxy_uids.contains(&uid) || proxy_gids.contains(&gid);
    let captured_group = |gid: u32| match &cfg.owner_groups {
        OwnerGroups::AllExcept(excl) => !owner_ids(excl).contains(&gid),
        OwnerGroups::Only(groups) => owner_ids(groups).contains(&gid),
    };
    if euid != 0 || !fsids_switchable() {
        if euid == 0 && !is_proxy(euid, egid) {
            tracing::info!(
                "running as root without CAP_SETUID/CAP_SETGID: the probes carry uid 0, which the capture does not treat as the proxy"
            );
        }
        let app = if is_proxy(euid, egid) {
            Err(format!(
                "it needs an application identity and the validator runs as the proxy (uid {euid})"
            ))
        } else if !captured_group(egid) {
            Err(format!("the validator's group {egid} is not captured"))
        } else {
            Ok(As::Current)
        };
        return (As::Current, app);
    }
    let proxy = match first_id(&cfg.proxy_uids) {
        Some(uid) => As::Ids(uid, first_id(&cfg.proxy_gids).unwrap_or(uid)),
        None => As::Current,
    };
    let candidates = [65534u32, 65533, 65532, 4242];
    let gid = match &cfg.owner_groups {
        OwnerGroups::Only(groups) => owner_ids(groups).into_iter().find(|g| !proxy_gids.contains(g)),
        OwnerGroups::AllExcept(_) => candidates
            .into_iter()
            .find(|g| !proxy_gids.contains(g) && captured_group(*g)),
    };
    let uid = candidates.into_iter().find(|u| !proxy_uids.contains(u));
    let app = match (uid, gid) {
        (Some(uid), Some(gid)) => Ok(As::Ids(uid, gid)),
        _ => Err("no application uid/gid outside the proxy's and inside the captured owner groups".into()),
    };
    (proxy, app)
}

/// Creates a socket whose owner is `who` (filesystem ids of this thread, restored at once).
fn socket_as(who: As, family: Family, ty: SockType) -> nix::Result<OwnedFd> {
    let af = match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    match who {
        As::Current => socket::socket(af, ty, flags, None),
        As::Ids(uid, gid) => {
            let old_gid = nix::unistd::setfsgid(Gid::from_raw(gid));
            let old_uid = nix::unistd::setfsuid(Uid::from_raw(uid));
            let sock = socket::socket(af, ty, flags, None);
            nix::unistd::setfsuid(old_uid);
            nix::unistd::setfsgid(old_gid);
            sock
        }
    }
}

/// Fixed addresses of a family (istio-compat §7).
struct FamilyAddrs {
    listen: IpAddr,
    probe: IpAddr,
}

fn family_addrs(family: Family) -> FamilyAddrs {
    match family {
        Family::V4 => FamilyAddrs {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            probe: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)),
        },
        Family::V6 => FamilyAddrs {
            listen: IpAddr::V6(Ipv6Addr::LOCALHOST),
            probe: IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6)),
        },
    }
}

fn log_addr(addr: &SocketAddr) -> String {
    addr.to_string()
}

/// A probe still to run.
struct Pending {
    path: ProbePath,
    family: Family,
    kind: ProbeKind,
    last_error: String,
}

enum ProbeKind {
    /// TCP from `src` (port 0) to `dst`; passes when one of `accept_on` listeners gets it with
    /// original destination `want`.
    Tcp {
        src: Option<IpAddr>,
        dst: SocketAddr,
        accept_on: Vec<u16>,
        want: SocketAddr,
    },
    /// UDP DNS query to `dst`, answered by the validator's listener.
    Dns { dst: SocketAddr, who: As },
}

struct Listener {
    addr: SocketAddr,
    sock: TcpListener,
}

struct Validator<'a> {
    cfg: &'a Config,
    proxy: As,
    listeners: Vec<Listener>,
    dns: Vec<(Family, std::net::UdpSocket)>,
    pending: Vec<Pending>,
    done: Vec<Check>,
    query_id: u16,
}

/// The DNS path of `family`: the validator's listener (created as the proxy, so the
/// conntrack-zone rules for the agent apply to its answers) and the probe; or why it is skipped.
fn dns_probe(
    cfg: &Config,
    family: Family,
    pod_addr: Option<IpAddr>,
    proxy: As,
    app: &Result<As, String>,
) -> Result<(std::net::UdpSocket, Pending), String> {
    let target = if cfg.dns.capture_all {
        pod_addr
    } else {
        match family {
            Family::V4 => cfg.dns.servers_v4.first().map(|a| IpAddr::V4(*a)),
            Family::V6 => cfg.dns.servers_v6.first().map(|a| IpAddr::V6(*a)),
        }
    };
    let target = target.ok_or_else(|| format!("no {family} DNS server to send to"))?;
    if cfg.outbound_ports_exclude.iter().any(|p| p.contains(DNS_PORT.get())) {
        return Err("port 53 is excluded from outbound capture".into());
    }
    if !cfg.exclude_interfaces.is_empty() {
        // The query's route may leave through an excluded interface, which is rightly not
        // captured; a failure would not mean the rules are missing.
        return Err("interfaces are excluded from capture (-c)".into());
    }
    let who = app.clone()?;
    let listen = SocketAddr::new(family_addrs(family).listen, DNS_AGENT_PORT.get());
    let sock = udp_socket_as(proxy, listen).map_err(|e| format!("cannot listen on {}: {e}", log_addr(&listen)))?;
    let probe = Pending {
        path: ProbePath::Dns,
        family,
        kind: ProbeKind::Dns {
            dst: SocketAddr::new(target, DNS_PORT.get()),
            who,
        },
        last_error: "not tried".into(),
    };
    Ok((sock, probe))
}

impl<'a> Validator<'a> {
    fn new(cfg: &'a Config) -> Result<Validator<'a>, ValidationError> {
        let addrs = local_addresses()?;
        let all: Vec<IpAddr> = addrs.iter().map(|(a, _)| *a).collect();
        let (host, ipv6) = detect_ipv6(&all, cfg.dual_stack).map_err(ValidationError::Setup)?;
        let mut families = vec![Family::of(&host)];
        if ipv6 && host.is_ipv4() {
            families.push(Family::V6);
        }
        let pod_addr = |family: Family| pod_address(&addrs, family);
        let (proxy, app) = identities(cfg);

        tracing::info!(
            "Starting iptables validation. This check verifies that iptables rules are properly established for the network."
        );
        let mut listeners = Vec::new();
        let mut failed = Vec::new();
        for family in &families {
            let fa = family_addrs(*family);
            for port in [cfg.proxy_port.get(), cfg.inbound_capture_port.get()] {
                let addr = SocketAddr::new(fa.listen, port);
                tracing::info!("Listening on {}", log_addr(&addr));
                match tcp_listener(addr) {
                    Ok(sock) => listeners.push(Listener { addr, sock }),
                    Err(e) => {
                        tracing::error!("Error on listening: {e}");
                        failed.push(log_addr(&addr));
                    }
                }
            }
        }
        if listeners.is_empty() {
            return Err(ValidationError::NoListener(failed));
        }

        let probe_port = cfg.probe_port.get();
        let cap = cfg.inbound_capture_port.get();
        let mut pending = Vec::new();
        let mut done = Vec::new();
        let mut dns = Vec::new();
        for family in &families {
            let fa = family_addrs(*family);
            let dst = SocketAddr::new(fa.probe, probe_port);
            pending.push(Pending {
                path: ProbePath::Loopback,
                family: *family,
                kind: ProbeKind::Tcp {
                    src: Some(fa.listen),
                    dst,
                    accept_on: vec![cfg.proxy_port.get(), cap],
                    want: dst,
                },
                last_error: "not tried".into(),
            });
            match pod_addr(*family) {
                Some(ip) => {
                    let dst = SocketAddr::new(ip, probe_port);
                    pending.push(Pending {
                        path: ProbePath::Inbound,
                        family: *family,
                        kind: ProbeKind::Tcp {
                            src: None,
                            dst,
                            accept_on: vec![cap],
                            want: dst,
                        },
                        last_error: "not tried".into(),
                    });
                }
                None => done.push(Check {
                    path: ProbePath::Inbound,
                    family: *family,
                    outcome: Outcome::Skipped(format!("the pod has no {family} address")),
                }),
            }
            if cfg.dns.effective() {
                match dns_probe(cfg, *family, pod_addr(*family), proxy, &app) {
                    Ok((sock, probe)) => {
                        dns.push((*family, sock));
                        pending.push(probe);
                    }
                    Err(why) => done.push(Check {
                        path: ProbePath::Dns,
                        family: *family,
                        outcome: Outcome::Skipped(why),
                    }),
                }
            }
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id();
        Ok(Validator {
            cfg,
            proxy,
            listeners,
            dns,
            pending,
            done,
            query_id: (seed & 0xffff) as u16,
        })
    }

    fn run(mut self) -> Result<ValidationReport, ValidationError> {
        let deadline = Instant::now() + self.cfg.probe_timeout;
        loop {
            let mut still = Vec::new();
            for mut p in std::mem::take(&mut self.pending) {
                let budget = deadline.saturating_duration_since(Instant::now()).min(ATTEMPT);
                match self.attempt(&p, budget) {
                    Ok(detail) => {
                        tracing::info!("validation path {} ({}) passed: {detail}", p.path, p.family);
                        self.done.push(Check {
                            path: p.path,
                            family: p.family,
                            outcome: Outcome::Passed(detail),
                        });
                    }
                    Err(e) => {
                        if e != p.last_error {
                            tracing::debug!("validation path {} ({}): {e}", p.path, p.family);
                        }
                        p.last_error = e;
                        still.push(p);
                    }
                }
            }
            self.pending = still;
            if self.pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now())));
        }
        for c in &self.done {
            if let Outcome::Skipped(why) = &c.outcome {
                tracing::info!("validation path {} ({}) skipped: {why}", c.path, c.family);
            }
        }
        if self.pending.is_empty() {
            tracing::info!("Validation passed, iptables rules established");
            return Ok(ValidationReport { checks: self.done });
        }
        let failed = self
            .pending
            .into_iter()
            .map(|p| Check {
                path: p.path,
                family: p.family,
                outcome: Outcome::Failed(p.last_error),
            })
            .collect();
        Err(ValidationError::Timeout(failed))
    }

    fn attempt(&mut self, p: &Pending, budget: Duration) -> Result<String, String> {
        match &p.kind {
            ProbeKind::Tcp {
                src,
                dst,
                accept_on,
                want,
            } => self.tcp_attempt(p.family, *src, *dst, accept_on, *want, budget),
            ProbeKind::Dns { dst, who } => self.dns_attempt(p.family, *dst, *who, budget),
        }
    }

    fn tcp_attempt(
        &self,
        family: Family,
        src: Option<IpAddr>,
        dst: SocketAddr,
        accept_on: &[u16],
        want: SocketAddr,
        budget: Duration,
    ) -> Result<String, String> {
        let start = Instant::now();
        let connecting = |e: String| format!("Error connecting to {}: {e}", log_addr(&dst));
        let sock = socket_as(self.proxy, family, SockType::Stream).map_err(|e| connecting(e.to_string()))?;
        if let Some(src) = src {
            socket::bind(sock.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(src, 0)))
                .map_err(|e| connecting(e.to_string()))?;
        }
        match socket::connect(sock.as_raw_fd(), &SockaddrStorage::from(dst)) {
            Ok(()) | Err(Errno::EINPROGRESS) => {}
            Err(e) => return Err(connecting(e.to_string())),
        }
        if !wait_ready(&[sock.as_fd()], PollFlags::POLLOUT, budget).map_err(|e| connecting(e.to_string()))? {
            return Err(connecting("i/o timeout".into()));
        }
        let err = socket::getsockopt(&sock, sockopt::SocketError).map_err(|e| connecting(e.to_string()))?;
        if err != 0 {
            return Err(connecting(Errno::from_raw(err).to_string()));
        }
        let client: SockaddrStorage = socket::getsockname(sock.as_raw_fd()).map_err(|e| e.to_string())?;
        let client = std_addr(&client).ok_or("client address is not an inet address")?;
        loop {
            let left = budget.saturating_sub(start.elapsed());
            let fds: Vec<_> = self.listeners.iter().map(|l| l.sock.as_fd()).collect();
            if !wait_ready(&fds, PollFlags::POLLIN, left).map_err(|e| e.to_string())? {
                return Err(format!(
                    "connected to {} but no validator listener accepted it (not redirected)",
                    log_addr(&dst)
                ));
            }
            for l in &self.listeners {
                let Ok((conn, peer)) = l.sock.accept() else { continue };
                let original = answer(&conn, peer);
                if peer != client {
                    continue;
                }
                let Some(original) = original else {
                    return Err("the original destination could not be read".into());
                };
                if accept_on.contains(&l.addr.port()) && original == want {
                    return Ok(format!(
                        "{} reached {} with original destination {}",
                        log_addr(&dst),
                        log_addr(&l.addr),
                        log_addr(&original)
                    ));
                }
                return Err(format!(
                    "{} reached {} with original destination {} (want one of ports {:?}, original {})",
                    log_addr(&dst),
                    log_addr(&l.addr),
                    log_addr(&original),
                    accept_on,
                    log_addr(&want)
                ));
            }
        }
    }

    fn dns_attempt(&mut self, family: Family, dst: SocketAddr, who: As, budget: Duration) -> Result<String, String> {
        let start = Instant::now();
        self.query_id = self.query_id.wrapping_add(1);
        let id = self.query_id;
        let server = &self
            .dns
            .iter()
            .find(|(f, _)| *f == family)
            .ok_or("no DNS listener for this family")?
            .1;
        let client = socket_as(who, family, SockType::Datagram).map_err(|e| e.to_string())?;
        socket::connect(client.as_raw_fd(), &SockaddrStorage::from(dst))
            .map_err(|e| format!("cannot send to {}: {e}", log_addr(&dst)))?;
        let client = std::net::UdpSocket::from(client);
        client
            .send(&dns_query(id))
            .map_err(|e| format!("cannot send to {}: {e}", log_addr(&dst)))?;
        let mut buf = [0u8; 512];
        let mut received = false;
        while !received {
            let left = budget.saturating_sub(start.elapsed());
            if !wait_ready(&[server.as_fd()], PollFlags::POLLIN, left).map_err(|e| e.to_string())? {
                return Err(format!(
                    "a query to {} did not reach {} (not redirected)",
                    log_addr(&dst),
                    server.local_addr().map(|a| log_addr(&a)).unwrap_or_default()
                ));
            }
            let Ok((n, from)) = server.recv_from(&mut buf) else {
                continue;
            };
            if is_query(&buf[..n], id) {
                received = true;
                let _ = server.send_to(&dns_reply(&buf[..n]), from);
            }
        }
        loop {
            let left = budget.saturating_sub(start.elapsed());
            if !wait_ready(&[client.as_fd()], PollFlags::POLLIN, left).map_err(|e| e.to_string())? {
                return Err(format!(
                    "a query to {} was redirected but its answer did not come back from {} (reverse NAT / conntrack zones)",
                    log_addr(&dst),
                    log_addr(&dst)
                ));
            }
            match client.recv(&mut buf) {
                Ok(n) if is_reply(&buf[..n], id) => {
                    return Ok(format!(
                        "a query to {} reached {} and was answered from {}",
                        log_addr(&dst),
                        server.local_addr().map(|a| log_addr(&a)).unwrap_or_default(),
                        log_addr(&dst)
                    ));
                }
                Ok(_) => continue,
                Err(e) => return Err(format!("no answer from {}: {e}", log_addr(&dst))),
            }
        }
    }
}

/// Istio's validator behaviour for an accepted connection: log it, read the original
/// destination, write its port back.
fn answer(conn: &TcpStream, peer: SocketAddr) -> Option<SocketAddr> {
    let local = conn.local_addr().ok();
    if let Some(local) = local {
        tracing::info!("Local addr {}", log_addr(&local));
    }
    let original = match peer {
        SocketAddr::V4(_) => socket::getsockopt(conn, sockopt::OriginalDst)
            .map(|raw| SocketAddr::V4(SocketAddrV4::from(SockaddrIn::from(raw))))
            .map_err(|e| tracing::error!("Error ipv4 getsockopt: {e}")),
        SocketAddr::V6(_) => socket::getsockopt(conn, sockopt::Ip6tOriginalDst)
            .map(|raw| SocketAddr::V6(SocketAddrV6::from(SockaddrIn6::from(raw))))
            .map_err(|e| tracing::error!("Error to ipv6 getsockopt: {e}")),
    };
    match original {
        Ok(original) => {
            tracing::info!("Original addr {}: {}", peer.ip(), original.port());
            let mut conn = conn;
            let _ = conn.write_all(original.port().to_string().as_bytes());
            Some(original)
        }
        Err(()) => {
            tracing::error!("Error getting original dst: not available");
            None
        }
    }
}

/// Waits until one of `fds` is ready for `events`; false on timeout.
fn wait_ready(fds: &[std::os::fd::BorrowedFd<'_>], events: PollFlags, timeout: Duration) -> nix::Result<bool> {
    if fds.is_empty() {
        std::thread::sleep(timeout);
        return Ok(false);
    }
    let mut pfds: Vec<PollFd> = fds.iter().map(|fd| PollFd::new(*fd, events)).collect();
    let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    loop {
        match poll(&mut pfds, ms) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn tcp_listener(addr: SocketAddr) -> nix::Result<TcpListener> {
    let af = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(
        af,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    if let Err(e) = socket::setsockopt(&fd, sockopt::ReuseAddr, &true) {
        tracing::error!("Fail to set fd {} SO_REUSEADDR with error {e}", fd.as_raw_fd());
    }
    if let Err(e) = socket::setsockopt(&fd, sockopt::ReusePort, &true) {
        tracing::error!("Fail to set fd {} SO_REUSEPORT with error {e}", fd.as_raw_fd());
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    socket::listen(&fd, Backlog::new(128)?)?;
    Ok(TcpListener::from(fd))
}

fn udp_socket_as(who: As, addr: SocketAddr) -> nix::Result<std::net::UdpSocket> {
    let fd = socket_as(who, Family::of(&addr.ip()), SockType::Datagram)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(std::net::UdpSocket::from(fd))
}

/// The name the DNS probe asks for (under `.invalid`, which no resolver answers positively).
const QUERY_NAME: &[&str] = &["meshcap-validation", "invalid"];

/// A standard query (recursion desired) for `QUERY_NAME` type A, class IN.
pub(crate) fn dns_query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(48);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in QUERY_NAME {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The validator's answer to its own query: same id and question, QR set, rcode REFUSED.
pub(crate) fn dns_reply(query: &[u8]) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] = 0x81;
    r[3] = 0x85;
    r
}

fn is_query(msg: &[u8], id: u16) -> bool {
    msg == dns_query(id).as_slice()
}

fn is_reply(msg: &[u8], id: u16) -> bool {
    msg == dns_reply(&dns_query(id)).as_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_address_skips_lo_and_link_local() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        let addrs = vec![
            (a("127.0.0.1"), true),
            (a("::6"), true),
            (a("fe80::1"), false),
            (a("fd00::1"), false),
            (a("::ffff:198.51.100.1"), false),
        ];
        assert_eq!(pod_address(&addrs, Family::V6), Some(a("fd00::1")));
        assert_eq!(pod_address(&addrs, Family::V4), Some(a("198.51.100.1")));
        assert_eq!(pod_address(&addrs[..3], Family::V6), None);
    }

    #[test]
    fn dns_messages() {
        let q = dns_query(0x1234);
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(q.len(), 12 + 1 + 18 + 1 + 7 + 1 + 4);
        assert!(is_query(&q, 0x1234));
        assert!(!is_query(&q, 0x1235));
        let r = dns_reply(&q);
        assert!(is_reply(&r, 0x1234));
        assert!(!is_reply(&q, 0x1234));
    }

    #[test]
    fn errors_map_to_exit_codes() {
        use crate::error::Convention::Istio;
        let setup = Error::from(ValidationError::Setup(Error::NoLocalAddress));
        assert!(matches!(setup, Error::NoLocalAddress), "{setup:?}");
        assert_eq!(setup.code(Istio), 1);
        let failed = Check {
            path: ProbePath::Inbound,
            family: Family::V4,
            outcome: Outcome::Failed("timed out".into()),
        };
        let passed = Check {
            outcome: Outcome::Passed("ok".into()),
            ..failed.clone()
        };
        let Error::Validation { failed, summary } = Error::from(ValidationError::Timeout(vec![passed, failed])) else {
            panic!("a timeout is a validation failure")
        };
        assert_eq!(failed, ["validation path inbound (IPv4) failed: timed out"]);
        assert_eq!(summary, "validation timeout");
        let e = ValidationError::NoListener(vec!["127.0.0.1:15001".into(), "127.0.0.1:15006".into()]);
        assert_eq!(e.to_string(), "no listener available: 127.0.0.1:15001,127.0.0.1:15006");
        let e = Error::from(e);
        assert_eq!(e.code(Istio), 126);
        assert_eq!(
            e.to_string(),
            "Validation failed: no listener available: 127.0.0.1:15001,127.0.0.1:15006"
        );
        assert!(FAILURE_MESSAGE.ends_with("established.\n"));
    }
}
