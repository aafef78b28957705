//! The traffic lab's agent (used by the integration tests, not by meshcap): one process per
//! client or server role, started by `tests/it/lab/spawn.rs` inside a network namespace with
//! one set of credentials. It reads requests on stdin, starts servers and sends probes, and
//! writes one reply per request on stdout (the protocol is `tests/it/lab/protocol.rs`); it
//! exits when stdin closes. `cargo test` builds it; the lab finds it next to the test binary
//! (`target/<profile>/examples/lab_agent`) and checks `lab_agent --fingerprint` against the
//! sources first.
//!
//! Every server answers a connection (or datagram) with an [`Answer`]: who answered, on which
//! listener, at which local address, and the original destination it recovered —
//! `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` for REDIRECTed connections, the accepted socket's
//! local address for TPROXY (IP_TRANSPARENT listener, connection accepted for a foreign port).

#[path = "../tests/it/lab/protocol.rs"]
mod protocol;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage, sockopt,
};

use protocol::{Answer, Listen, Observed, Probe, Proto, Reply, Request, Role};

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--fingerprint") {
        println!(
            "{}",
            protocol::fingerprint(&[protocol::SOURCE, include_str!("lab_agent.rs")])
        );
        return;
    }
    serve_requests();
}

fn serve_requests() {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Listen(l)) => match start_server(&l) {
                Ok(addr) => Reply::Listening(addr),
                Err(e) => Reply::Error(format!("listen {:?} {} {}: {e}", l.role, l.proto.name(), l.addr)),
            },
            Ok(Request::Probe(p)) => Reply::Observed(probe(&p)),
            Err(e) => Reply::Error(format!("bad request {line:?}: {e}")),
        };
        let text = serde_json::to_string(&reply).expect("serialize reply");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

fn family_of(addr: &SocketAddr) -> AddressFamily {
    match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn storage(addr: &SocketAddr) -> SockaddrStorage {
    SockaddrStorage::from(*addr)
}

fn std_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*a)));
    }
    s.as_sockaddr_in6().map(|a| SocketAddr::V6(SocketAddrV6::from(*a)))
}

fn local_addr_of(fd: &impl AsRawFd) -> std::io::Result<SocketAddr> {
    let s: SockaddrStorage = socket::getsockname(fd.as_raw_fd())?;
    std_addr(&s).ok_or_else(|| std::io::Error::other("not an inet address"))
}

fn set_transparent(fd: &OwnedFd, addr: &SocketAddr) -> std::io::Result<()> {
    match addr {
        SocketAddr::V4(_) => socket::setsockopt(fd, sockopt::IpTransparent, &true)?,
        SocketAddr::V6(_) => {
            let one: libc::c_int = 1;
            // SAFETY: a valid socket, a c_int option value of the size passed.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_IPV6,
                    libc::IPV6_TRANSPARENT,
                    (&raw const one).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// A bound socket; IPv6 sockets are v6-only so the v4 and v6 servers can share a port.
fn bound_socket(proto: Proto, addr: &SocketAddr, transparent: bool) -> std::io::Result<OwnedFd> {
    let ty = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket::socket(family_of(addr), ty, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    if transparent {
        set_transparent(&fd, addr)?;
    }
    socket::bind(fd.as_raw_fd(), &storage(addr))?;
    Ok(fd)
}

fn start_server(l: &Listen) -> std::io::Result<SocketAddr> {
    let fd = bound_socket(l.proto, &l.addr, l.transparent)?;
    let bound = local_addr_of(&fd)?;
    let role = l.role;
    match l.proto {
        Proto::Tcp => {
            socket::listen(&fd, Backlog::new(64).map_err(std::io::Error::from)?)?;
            let listener = TcpListener::from(fd);
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    std::thread::spawn(move || answer_tcp(role, bound, conn));
                }
            });
        }
        Proto::Udp => {
            let sock = UdpSocket::from(fd);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                loop {
                    let Ok((_, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let answer = Answer {
                        role,
                        listener: bound,
                        local: bound,
                        original_dst: None,
                        peer: from,
                    };
                    let text = serde_json::to_string(&answer).expect("serialize answer");
                    let _ = sock.send_to(text.as_bytes(), from);
                }
            });
        }
    }
    Ok(bound)
}

/// The destination before NAT, from conntrack (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`).
fn original_dst(conn: &TcpStream, local: &SocketAddr) -> Option<SocketAddr> {
    match local {
        SocketAddr::V4(_) => socket::getsockopt(conn, sockopt::OriginalDst)
            .ok()
            .map(|raw| SocketAddr::V4(SocketAddrV4::from(SockaddrIn::from(raw)))),
        SocketAddr::V6(_) => socket::getsockopt(conn, sockopt::Ip6tOriginalDst)
            .ok()
            .map(|raw| SocketAddr::V6(SocketAddrV6::from(SockaddrIn6::from(raw)))),
    }
}

fn answer_tcp(role: Role, listener: SocketAddr, mut conn: TcpStream) {
    let (Ok(local), Ok(peer)) = (conn.local_addr(), conn.peer_addr()) else {
        return;
    };
    let original = match role {
        // A connection accepted for a port other than the listener's was assigned by TPROXY:
        // its local address is the original destination. Otherwise ask conntrack.
        Role::Proxy if local.port() != listener.port() => Some(local),
        Role::Proxy | Role::DnsAgent => original_dst(&conn, &local),
        Role::App | Role::Remote | Role::DnsRemote => None,
    };
    let answer = Answer {
        role,
        listener,
        local,
        original_dst: original,
        peer,
    };
    let mut text = serde_json::to_string(&answer).expect("serialize answer");
    text.push('\n');
    let _ = conn.write_all(text.as_bytes());
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

fn classify_io(e: &std::io::Error) -> Observed {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Observed::Refused,
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Observed::Timeout,
        _ if e.raw_os_error() == Some(libc::EINPROGRESS) => Observed::Timeout,
        _ => Observed::Failed(e.to_string()),
    }
}

fn parse_answer(bytes: &[u8], client: SocketAddr) -> Observed {
    let text = String::from_utf8_lossy(bytes);
    match serde_json::from_str::<Answer>(text.trim()) {
        Ok(answer) => Observed::Answered { answer, client },
        Err(_) => Observed::Failed(format!("unexpected answer {text:?}")),
    }
}

/// Runs one probe; every blocking step is bounded by the probe's timeout.
fn probe(p: &Probe) -> Observed {
    match try_probe(p) {
        Ok(o) => o,
        Err(e) => classify_io(&e),
    }
}

fn try_probe(p: &Probe) -> std::io::Result<Observed> {
    let timeout = Duration::from_millis(p.timeout_ms);
    let ty = match p.proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket::socket(family_of(&p.dst), ty, SockFlag::SOCK_CLOEXEC, None)?;
    if let Some(src) = p.src {
        socket::bind(fd.as_raw_fd(), &storage(&SocketAddr::new(src, 0)))?;
    }
    let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as i64, timeout.subsec_micros() as i64);
    // SO_SNDTIMEO bounds a blocking connect() on Linux; SO_RCVTIMEO bounds the reads.
    socket::setsockopt(&fd, sockopt::SendTimeout, &tv)?;
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &tv)?;
    socket::connect(fd.as_fd().as_raw_fd(), &storage(&p.dst))?;
    let client = local_addr_of(&fd)?;
    let mut buf = Vec::new();
    match p.proto {
        Proto::Tcp => {
            let mut conn = TcpStream::from(fd);
            let mut chunk = [0u8; 1024];
            loop {
                match conn.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if buf.is_empty() => return Err(e),
                    Err(_) => break,
                }
            }
        }
        Proto::Udp => {
            let sock = UdpSocket::from(fd);
            sock.send(b"meshcap lab probe")?;
            let mut chunk = [0u8; 1500];
            let n = sock.recv(&mut chunk)?;
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    if buf.is_empty() {
        return Ok(Observed::Failed("connection closed without an answer".into()));
    }
    Ok(parse_answer(&buf, client))
}
