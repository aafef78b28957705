//! The traffic lab's wire protocol between the tests and the agent processes
//! (`examples/lab_agent.rs`, which includes this file): requests come on the agent's stdin and
//! replies go to its stdout, one JSON document per line; servers answer every connection (or
//! datagram) with an [`Answer`] in JSON.
//!
//! An agent runs inside one network namespace with one set of credentials (`lab::spawn`
//! arranges both before it starts), starts servers and sends probes on request, and exits
//! when its stdin closes. Started with `--fingerprint`, it prints the [`fingerprint`] of the
//! sources it was built from instead, so that the lab can refuse an agent built from others.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// This file's text, as compiled into the agent and into the tests.
pub const SOURCE: &str = include_str!("protocol.rs");

/// A fingerprint of source texts (64-bit FNV-1a, each text terminated), printed in hex.
pub fn fingerprint(texts: &[&str]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for text in texts {
        for byte in text.bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// What a server stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The sidecar proxy on 15001 / 15006.
    Proxy,
    /// The DNS proxy of the agent on 15053.
    DnsAgent,
    /// The application in the pod.
    App,
    /// A server outside the pod.
    Remote,
    /// A DNS server outside the pod.
    DnsRemote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A server to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listen {
    pub role: Role,
    pub proto: Proto,
    pub addr: SocketAddr,
    /// IP_TRANSPARENT / IPV6_TRANSPARENT (TPROXY listeners; needs CAP_NET_ADMIN).
    pub transparent: bool,
}

/// A connection (TCP) or a datagram exchange (UDP) to try.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub proto: Proto,
    pub dst: SocketAddr,
    /// Source address to bind (port 0) before connecting.
    pub src: Option<IpAddr>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Listen(Listen),
    Probe(Probe),
}

/// A server's answer to one connection or datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub role: Role,
    /// The address the answering listener is bound to.
    pub listener: SocketAddr,
    /// The connection's local address (for UDP: the bound address).
    pub local: SocketAddr,
    /// The destination the client originally dialed, when the server could recover it.
    pub original_dst: Option<SocketAddr>,
    /// The client as the server saw it.
    pub peer: SocketAddr,
}

/// What a probe observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observed {
    Answered {
        answer: Answer,
        /// The client's own address (source of the probe).
        client: SocketAddr,
    },
    /// No connection / no reply within the timeout.
    Timeout,
    /// Connection refused (RST or ICMP unreachable).
    Refused,
    /// Anything else (unreachable network, garbled answer, ...).
    Failed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Listening(SocketAddr),
    Observed(Observed),
    Error(String),
}
