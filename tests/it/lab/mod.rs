//! The traffic lab: real packets through a capture installed in a throw-away pod namespace.
//!
//! Topology (every scenario gets its own namespaces, so scenarios run in parallel):
//!
//! ```text
//!   peer ns                     pod ns                                  vm ns (optional)
//!   eth0 198.51.100.2,.3  ───  eth0 198.51.100.1     eth1 198.51.100.17 ───  eth0 198.51.100.18
//!        fd00::2, ::3               fd00::1               fd00:0:0:1::1         fd00:0:0:1::2
//!   Remote :80 :8080 :8443     Proxy :15001 :15006 (uid 1337)              (client; Remote :80)
//!   DnsRemote :53 udp/tcp      DnsAgent 127.0.0.1|::1 :15053 (uid 1337)
//!                              App :8080 :8081 :15008 (uid 1000)
//! ```
//!
//! Clients: the app (uid/gid 1000), the proxy (uid/gid 1337), a proxy known only by its group
//! (uid 2000, gid 1337), the peer and the vm (root in their namespaces). Each runs in an
//! agent process (`examples/lab_agent.rs`, spoken to through [`protocol`]). A [`Scenario`] is
//! data — capture flags, pod stack, resolv.conf and the [`Case`]s with their expected
//! [`Outcome`] — and [`run`] executes it with an [`Installer`], so one scenario list serves
//! every backend and the tracer can be compared with the same cases.

pub mod install;
pub mod protocol;
pub mod spawn;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use install::{Backend, Installer};
use protocol::{Answer, Listen, Observed, Probe, Proto, Reply, Request, Role};
use spawn::{Agent, Cap, Creds};

use crate::support::{Netns, TempDir};

pub const POD4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const PEER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// A second address on the peer (another "remote" host).
pub const ALT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
/// The pod's address on its second link (to the vm).
pub const POD4_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 17);
pub const VM4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 18);
pub const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
pub const ALT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
pub const POD6_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 1);
pub const VM6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 2);
pub const LOOP4: Ipv4Addr = Ipv4Addr::LOCALHOST;
pub const LOOP6: Ipv6Addr = Ipv6Addr::LOCALHOST;
/// Istio's inbound passthrough source addresses.
pub const PASS4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
pub const PASS6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

pub const PROXY_UID: u32 = 1337;
pub const APP_UID: u32 = 1000;
/// The uid of the proxy that is recognised by its group only.
pub const GID_PROXY_UID: u32 = 2000;

/// How long a probe may take to connect, and then to get its answer.
pub const PROBE_TIMEOUT_MS: u64 = 1500;

/// `ip:port` for either family.
pub fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The address families of the pod's eth0 (and eth1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    V4,
    V6,
    Dual,
}

impl Stack {
    pub fn v4(self) -> bool {
        matches!(self, Stack::V4 | Stack::Dual)
    }
    pub fn v6(self) -> bool {
        matches!(self, Stack::V6 | Stack::Dual)
    }
}

/// Who sends a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The application in the pod (uid/gid 1000).
    App,
    /// The sidecar (uid/gid 1337).
    Proxy,
    /// A sidecar matched only by its group (uid 2000, gid 1337).
    ProxyGid,
    /// A host beyond the pod's eth0.
    Peer,
    /// A host beyond the pod's eth1 (the second link).
    Vm,
}

impl From {
    pub fn in_pod(self) -> bool {
        matches!(self, From::App | From::Proxy | From::ProxyGid)
    }

    pub fn creds(self) -> Creds {
        match self {
            From::App => Creds::user(APP_UID, APP_UID),
            From::Proxy => Creds::user(PROXY_UID, PROXY_UID),
            From::ProxyGid => Creds::user(GID_PROXY_UID, PROXY_UID),
            From::Peer | From::Vm => Creds::root(),
        }
    }
}

/// What happened to a probe, as the servers and the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the stand-in proxy or DNS agent on `port` through a NAT redirect, which
    /// recovered `original_dst` (None for UDP, where conntrack's original tuple is not readable).
    Redirected {
        port: u16,
        original_dst: Option<SocketAddr>,
    },
    /// Accepted by the stand-in proxy's transparent listener on `port` (TPROXY); the socket's
    /// local address is the original destination.
    Tproxied { port: u16, original_dst: SocketAddr },
    /// Answered by the intended server, at the address the client dialed.
    Direct,
    /// No answer within the timeout.
    Dropped,
    /// Connection refused.
    Refused,
    /// Anything else (answered by the wrong server, error), described.
    Other(String),
}

pub fn redirected(port: u16, original_dst: SocketAddr) -> Outcome {
    Outcome::Redirected {
        port,
        original_dst: Some(original_dst),
    }
}

pub fn tproxied(port: u16, original_dst: SocketAddr) -> Outcome {
    Outcome::Tproxied { port, original_dst }
}

/// A UDP datagram redirected to the DNS agent (original destination not observable).
pub fn dns_agent_udp() -> Outcome {
    Outcome::Redirected {
        port: 15053,
        original_dst: None,
    }
}

impl Outcome {
    fn from_observed(obs: &Observed, dst: SocketAddr) -> Outcome {
        match obs {
            Observed::Answered { answer, .. } => Outcome::from_answer(answer, dst),
            Observed::Timeout => Outcome::Dropped,
            Observed::Refused => Outcome::Refused,
            Observed::Failed(e) => Outcome::Other(e.clone()),
        }
    }

    fn from_answer(a: &Answer, dst: SocketAddr) -> Outcome {
        match a.role {
            Role::Proxy if a.local.port() != a.listener.port() => Outcome::Tproxied {
                port: a.listener.port(),
                original_dst: a.local,
            },
            Role::Proxy | Role::DnsAgent => Outcome::Redirected {
                port: a.listener.port(),
                original_dst: a.original_dst,
            },
            Role::App | Role::Remote | Role::DnsRemote if a.local == dst => Outcome::Direct,
            role => Outcome::Other(format!("answered by {role:?} at {} instead of {dst}", a.local)),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Redirected {
                port,
                original_dst: Some(o),
            } => write!(f, "redirected to :{port} (original {o})"),
            Outcome::Redirected {
                port,
                original_dst: None,
            } => write!(f, "redirected to :{port}"),
            Outcome::Tproxied { port, original_dst } => write!(f, "tproxied to :{port} (original {original_dst})"),
            Outcome::Direct => f.write_str("direct"),
            Outcome::Dropped => f.write_str("dropped (timeout)"),
            Outcome::Refused => f.write_str("refused"),
            Outcome::Other(s) => write!(f, "other: {s}"),
        }
    }
}

/// One probe of a scenario and the outcome Istio's design prescribes for it.
#[derive(Debug, Clone)]
pub struct Case {
    pub from: From,
    pub proto: Proto,
    /// Source address to bind (e.g. 127.0.0.6); the kernel picks otherwise.
    pub src: Option<IpAddr>,
    pub dst: SocketAddr,
    pub expect: Outcome,
    /// Where Istio's nftables rule set behaves differently from its iptables rules: the
    /// outcome with the nftables backend.
    pub expect_nft: Option<Outcome>,
}

pub fn tcp(from: From, dst: SocketAddr, expect: Outcome) -> Case {
    Case {
        from,
        proto: Proto::Tcp,
        src: None,
        dst,
        expect,
        expect_nft: None,
    }
}

pub fn udp(from: From, dst: SocketAddr, expect: Outcome) -> Case {
    Case {
        from,
        proto: Proto::Udp,
        src: None,
        dst,
        expect,
        expect_nft: None,
    }
}

impl Case {
    pub fn bound(mut self, src: impl Into<IpAddr>) -> Case {
        self.src = Some(src.into());
        self
    }

    /// The outcome with Istio's nftables rule set, where it differs from iptables.
    pub fn on_nftables(mut self, outcome: Outcome) -> Case {
        self.expect_nft = Some(outcome);
        self
    }

    /// What this case must produce with `backend`.
    pub fn expected(&self, backend: Backend) -> &Outcome {
        match (backend, &self.expect_nft) {
            (Backend::Nftables, Some(o)) => o,
            _ => &self.expect,
        }
    }
}

/// A capture configuration and the cases that prove it.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub stack: Stack,
    /// Adds the pod's eth1 and the vm namespace behind it.
    pub second_link: bool,
    /// istio-iptables flags (each element one argument).
    pub flags: Vec<String>,
    /// The pod's /etc/resolv.conf.
    pub resolv_conf: String,
    pub cases: Vec<Case>,
}

impl Scenario {
    pub fn new(name: &'static str, stack: Stack, flags: &[&str]) -> Scenario {
        Scenario {
            name,
            stack,
            second_link: false,
            flags: flags.iter().map(|s| s.to_string()).collect(),
            resolv_conf: String::new(),
            cases: Vec::new(),
        }
    }

    pub fn second_link(mut self) -> Scenario {
        self.second_link = true;
        self
    }

    pub fn resolv_conf(mut self, text: &str) -> Scenario {
        self.resolv_conf = text.to_string();
        self
    }

    pub fn case(mut self, case: Case) -> Scenario {
        self.cases.push(case);
        self
    }

    /// The value of a flag given as `-x VALUE` or `--long VALUE` (the last one wins, as in
    /// meshcap's and Istio's parsers).
    pub fn flag(&self, short: &str, long: &str) -> Option<&str> {
        let pos = self.flags.iter().rposition(|f| f == short || f == long)?;
        self.flags.get(pos + 1).map(String::as_str)
    }

    pub fn has_switch(&self, long: &str) -> bool {
        self.flags.iter().any(|f| f == long || f == &format!("{long}=true"))
    }

    pub fn tproxy(&self) -> bool {
        self.flag("-m", "--istio-inbound-interception-mode") == Some("TPROXY")
    }

    /// Whether Istio enables IPv6 for this pod (istio-compat §2.4): the first non-loopback,
    /// non-link-local address decides (IPv4 addresses are listed first), unless `--dual-stack`.
    pub fn ipv6_enabled(&self) -> bool {
        match self.stack {
            Stack::V4 => false,
            Stack::V6 => true,
            Stack::Dual => self.has_switch("--dual-stack"),
        }
    }
}

/// The namespaces and links of one scenario (no processes).
pub struct Net {
    pub pod: Netns,
    /// Beyond the pod's eth0.
    pub peer: Netns,
    /// Beyond the pod's eth1 (with a second link).
    pub vm: Option<Netns>,
    pub stack: Stack,
    /// Scratch files of this scenario (e.g. the rendered resolv.conf).
    pub dir: TempDir,
}

/// The running namespaces and agents of one scenario.
pub struct Lab {
    pub net: Net,
    proxy: Agent,
    app: Agent,
    proxy_gid: Agent,
    peer_agent: Agent,
    vm_agent: Option<Agent>,
}

fn quiet_ipv6(ns: &Netns) {
    // Addresses are usable at once: no duplicate address detection, for any interface.
    ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
    ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
}

fn addr_cmds(dev: &str, stack: Stack, v4: &[Ipv4Addr], v4_len: u8, v6: &[Ipv6Addr]) -> Vec<String> {
    let mut cmds = Vec::new();
    if stack.v4() {
        for a in v4 {
            cmds.push(format!("addr add {a}/{v4_len} dev {dev}"));
        }
    }
    if stack.v6() {
        for a in v6 {
            cmds.push(format!("addr add {a}/64 dev {dev} nodad"));
        }
    }
    cmds.push(format!("link set {dev} up"));
    cmds
}

fn listen(agent: &mut Agent, role: Role, proto: Proto, addr: SocketAddr, transparent: bool) {
    match agent.call(&Request::Listen(Listen {
        role,
        proto,
        addr,
        transparent,
    })) {
        Reply::Listening(_) => {}
        other => panic!("agent {}: listen {role:?} {addr}: {other:?}", agent.name),
    }
}

const UNSPEC4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
const UNSPEC6: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

impl Net {
    /// Creates the pod and peer namespaces (and the vm behind the pod's eth1 with
    /// `second_link`), with addresses for `stack` and default routes.
    pub fn new(stack: Stack, second_link: bool) -> Net {
        let pod = Netns::new("pod");
        let peer = Netns::new("peer");
        let vm = second_link.then(|| Netns::new("vm"));
        for ns in [&pod, &peer].into_iter().chain(vm.as_ref()) {
            quiet_ipv6(ns);
        }

        // Fixed MACs and permanent neighbour entries: the first IPv6 contact over a fresh veth
        // otherwise loses its first SYN to neighbour discovery and waits a 1 s retransmit.
        let (pod_mac, peer_mac, pod_b_mac, vm_mac) = (
            "02:00:00:00:01:01",
            "02:00:00:00:01:02",
            "02:00:00:00:02:01",
            "02:00:00:00:02:02",
        );
        let neigh = |ips: &[IpAddr], mac: &str, dev: &str| -> Vec<String> {
            ips.iter()
                .filter(|ip| if ip.is_ipv4() { stack.v4() } else { stack.v6() })
                .map(|ip| format!("neigh replace {ip} lladdr {mac} dev {dev} nud permanent"))
                .collect()
        };
        let mut pod_cmds = vec![format!(
            "link add eth0 address {pod_mac} type veth peer name eth0 address {peer_mac} netns {}",
            peer.name
        )];
        pod_cmds.extend(addr_cmds("eth0", stack, &[POD4], 28, &[POD6]));
        pod_cmds.extend(neigh(
            &[PEER4.into(), ALT4.into(), PEER6.into(), ALT6.into()],
            peer_mac,
            "eth0",
        ));
        if stack.v4() {
            pod_cmds.push(format!("route add default via {PEER4}"));
        }
        if stack.v6() {
            pod_cmds.push(format!("route add default via {PEER6}"));
        }
        if let Some(vm) = &vm {
            pod_cmds.push(format!(
                "link add eth1 address {pod_b_mac} type veth peer name eth0 address {vm_mac} netns {}",
                vm.name
            ));
            pod_cmds.extend(addr_cmds("eth1", stack, &[POD4_B], 28, &[POD6_B]));
            pod_cmds.extend(neigh(&[VM4.into(), VM6.into()], vm_mac, "eth1"));
        }
        pod.ip_batch(&pod_cmds);
        let mut peer_cmds = addr_cmds("eth0", stack, &[PEER4, ALT4], 28, &[PEER6, ALT6]);
        peer_cmds.extend(neigh(&[POD4.into(), POD6.into()], pod_mac, "eth0"));
        peer.ip_batch(&peer_cmds);
        if let Some(vm) = &vm {
            let mut cmds = addr_cmds("eth0", stack, &[VM4], 28, &[VM6]);
            cmds.extend(neigh(&[POD4_B.into(), POD6_B.into()], pod_b_mac, "eth0"));
            if stack.v4() {
                cmds.push(format!("route add default via {POD4_B}"));
            }
            if stack.v6() {
                cmds.push(format!("route add default via {POD6_B}"));
            }
            vm.ip_batch(&cmds);
        }

        let dir = TempDir::new("lab");
        Net {
            pod,
            peer,
            vm,
            stack,
            dir,
        }
    }

    /// `PROGRAM ARGS` in the pod namespace (diagnostics): its stdout, or the error.
    pub fn pod_output(&self, program: &str, args: &[&str]) -> String {
        let out = self.pod.run(program, args);
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            s.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        s
    }
}

impl Lab {
    /// Builds the namespaces, links and servers for `scenario` (no capture yet).
    pub fn new(scenario: &Scenario) -> Lab {
        let net = Net::new(scenario.stack, scenario.second_link);
        let stack = net.stack;
        let tproxy = scenario.tproxy();
        let proxy_creds = if tproxy {
            From::Proxy.creds().with_cap(Cap::NetAdmin)
        } else {
            From::Proxy.creds()
        };
        let mut proxy = Agent::spawn("proxy", &net.pod, &proxy_creds);
        let mut app = Agent::spawn("app", &net.pod, &From::App.creds());
        let proxy_gid = Agent::spawn("proxy-gid", &net.pod, &From::ProxyGid.creds());
        let mut peer_agent = Agent::spawn("peer", &net.peer, &From::Peer.creds());
        let mut vm_agent = net.vm.as_ref().map(|vm| Agent::spawn("vm", vm, &From::Vm.creds()));

        for any in [UNSPEC4, UNSPEC6] {
            listen(&mut proxy, Role::Proxy, Proto::Tcp, sa(any, 15001), false);
            listen(&mut proxy, Role::Proxy, Proto::Tcp, sa(any, 15006), tproxy);
            for port in [8080, 8081, 15008] {
                listen(&mut app, Role::App, Proto::Tcp, sa(any, port), false);
            }
            for port in [80, 8080, 8443] {
                listen(&mut peer_agent, Role::Remote, Proto::Tcp, sa(any, port), false);
            }
            if let Some(vm_agent) = vm_agent.as_mut() {
                listen(vm_agent, Role::Remote, Proto::Tcp, sa(any, 80), false);
            }
        }
        for lo in [IpAddr::V4(LOOP4), IpAddr::V6(LOOP6)] {
            for proto in [Proto::Udp, Proto::Tcp] {
                listen(&mut proxy, Role::DnsAgent, proto, sa(lo, 15053), false);
            }
        }
        let mut dns_servers: Vec<IpAddr> = Vec::new();
        if stack.v4() {
            dns_servers.extend([IpAddr::V4(PEER4), IpAddr::V4(ALT4)]);
        }
        if stack.v6() {
            dns_servers.extend([IpAddr::V6(PEER6), IpAddr::V6(ALT6)]);
        }
        for server in dns_servers {
            for proto in [Proto::Udp, Proto::Tcp] {
                listen(&mut peer_agent, Role::DnsRemote, proto, sa(server, 53), false);
            }
        }

        Lab {
            net,
            proxy,
            app,
            proxy_gid,
            peer_agent,
            vm_agent,
        }
    }

    fn agent(&mut self, from: From) -> &mut Agent {
        match from {
            From::App => &mut self.app,
            From::Proxy => &mut self.proxy,
            From::ProxyGid => &mut self.proxy_gid,
            From::Peer => &mut self.peer_agent,
            From::Vm => self.vm_agent.as_mut().expect("this scenario has no vm (second_link)"),
        }
    }

    /// Sends one probe and reports what happened.
    pub fn probe(&mut self, case: &Case) -> (Outcome, Observed) {
        let request = Request::Probe(Probe {
            proto: case.proto,
            dst: case.dst,
            src: case.src,
            timeout_ms: PROBE_TIMEOUT_MS,
        });
        let agent = self.agent(case.from);
        let observed = match agent.call(&request) {
            Reply::Observed(o) => o,
            other => panic!("agent {}: probe {case:?}: {other:?}", agent.name),
        };
        (Outcome::from_observed(&observed, case.dst), observed)
    }

    /// The pod's interface a packet to or from `addr` uses.
    pub fn pod_iface(&self, addr: &IpAddr) -> &'static str {
        let local = [
            IpAddr::V4(POD4),
            IpAddr::V4(POD4_B),
            IpAddr::V6(POD6),
            IpAddr::V6(POD6_B),
        ];
        if addr.is_loopback() || local.contains(addr) || *addr == IpAddr::V4(PASS4) || *addr == IpAddr::V6(PASS6) {
            "lo"
        } else if [IpAddr::V4(VM4), IpAddr::V6(VM6)].contains(addr) {
            "eth1"
        } else {
            "eth0"
        }
    }

    /// The packet as `meshcap trace` describes one, as seen by the pod.
    pub fn trace_packet(&self, case: &Case, client: Option<SocketAddr>) -> String {
        let src = client.map_or_else(
            || case.src.map_or("?".to_string(), |s| sa(s, 0).to_string()),
            |c| c.to_string(),
        );
        let proto = case.proto.name();
        let dst = case.dst;
        if case.from.in_pod() {
            let c = case.from.creds();
            let oif = self.pod_iface(&dst.ip());
            format!("out {proto} {src} -> {dst} uid={} gid={} oif={oif}", c.uid, c.gid)
        } else {
            let iif = if case.from == From::Vm { "eth1" } else { "eth0" };
            format!("in {proto} {src} -> {dst} iif={iif}")
        }
    }
}

/// One case as run: the expectation, what happened, and the packet for the tracer.
#[derive(Debug, Clone)]
pub struct Ran {
    pub case: Case,
    /// What Istio's design prescribes for the installer's backend.
    pub expected: Outcome,
    pub outcome: Outcome,
    pub observed: Observed,
    pub packet: String,
}

/// Sanity check before the capture: the lab's links and servers work.
fn baseline(lab: &mut Lab) -> Vec<String> {
    let mut probes = Vec::new();
    if lab.net.stack.v4() {
        probes.push(tcp(From::App, sa(PEER4, 80), Outcome::Direct));
        probes.push(tcp(From::Peer, sa(POD4, 8080), Outcome::Direct));
    }
    if lab.net.stack.v6() {
        probes.push(tcp(From::App, sa(PEER6, 80), Outcome::Direct));
        probes.push(tcp(From::Peer, sa(POD6, 8080), Outcome::Direct));
    }
    let mut problems = Vec::new();
    for p in probes {
        let (got, _) = lab.probe(&p);
        if got != p.expect {
            problems.push(format!("baseline {:?} -> {}: {got}", p.from, p.dst));
        }
    }
    problems
}

/// Runs `scenario` with `installer`: builds the lab, checks the baseline, installs the
/// capture, sends every case and returns what happened (the caller asserts). Panics with the
/// pod's rules when a case's outcome differs from its expectation.
pub fn run(scenario: &Scenario, installer: Installer) -> Vec<Ran> {
    let mut lab = Lab::new(scenario);
    let problems = baseline(&mut lab);
    assert!(
        problems.is_empty(),
        "{}: lab is broken before any capture: {problems:#?}",
        scenario.name
    );
    if let Err(e) = installer.install(&lab.net, scenario) {
        panic!("{} [{installer}]: installing the capture failed: {e}", scenario.name);
    }
    let mut ran = Vec::new();
    for case in &scenario.cases {
        let (outcome, observed) = lab.probe(case);
        let client = match &observed {
            Observed::Answered { client, .. } => Some(*client),
            _ => None,
        };
        let packet = lab.trace_packet(case, client);
        ran.push(Ran {
            case: case.clone(),
            expected: case.expected(installer.backend()).clone(),
            outcome,
            observed,
            packet,
        });
    }
    let failures: Vec<&Ran> = ran.iter().filter(|r| r.outcome != r.expected).collect();
    if !failures.is_empty() {
        let mut report = format!(
            "{} [{installer}]: {} of {} cases differ from Istio's design\n",
            scenario.name,
            failures.len(),
            ran.len()
        );
        for r in &ran {
            let ok = r.outcome == r.expected;
            let mark = if ok { "ok  " } else { "FAIL" };
            report.push_str(&format!(
                "{mark} {:?} {} {}-> {}: expected {}, got {}\n     packet: {}\n",
                r.case.from,
                r.case.proto.name(),
                r.case.src.map(|s| format!("from {s} ")).unwrap_or_default(),
                r.case.dst,
                r.expected,
                r.outcome,
                r.packet
            ));
            if !ok {
                report.push_str(&format!("     observed: {:?}\n", r.observed));
            }
        }
        report.push_str(&format!("flags: {:?}\n", scenario.flags));
        report.push_str(&installer.dump(&lab.net));
        panic!("{report}");
    }
    ran
}
