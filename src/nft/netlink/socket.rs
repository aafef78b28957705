//! A `NETLINK_NETFILTER` socket: sends one batch and reads every acknowledgement, and dumps.
//!
//! A netlink socket belongs to the network namespace of the thread that created it, so
//! [`Socket::open`] is called inside the target namespace (`netns::within` /
//! `Netns::run_in`, the same helper the route netlink uses); the socket keeps working there
//! from any thread afterwards.
//!
//! Applying: the kernel handles a whole batch inside the `send` call, and queues one
//! `NLMSG_ERROR` per message (code 0 for an acknowledged message) plus, when the commit itself
//! fails, one on the batch's begin marker. [`Socket::apply`] reads them all and, if any is an
//! error, reports each refusal with the index of the message that caused it (by sequence
//! number), the errno and the kernel's extended-ack text and attribute offset. The batch is
//! all or nothing, so a refusal means nothing was applied.
//!
//! The socket comes from `netlink-sys` (it wraps `socket`/`bind`/`send`/`recv` and the
//! `NETLINK_EXT_ACK`/`NETLINK_CAP_ACK` options, so this module has no `unsafe`); buffer sizes
//! and the receive timeout go through `nix`, already a dependency.

use std::fmt;
use std::io;

use netlink_sys::{Socket as NlSocket, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::attr::{self, DecodeError, TooLong};
use super::msg::{self, Batch, Dump, Frame, Message, NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR};

/// `NLM_F_CAPPED` / `NLM_F_ACK_TLVS` on an `NLMSG_ERROR`.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_OFFS: u16 = 2;

/// How long a blocking read waits for the kernel.
const TIMEOUT_SECS: i64 = 5;
/// The receive buffer for one datagram (a dump part is at most a few pages).
const RECV_BYTES: usize = 256 * 1024;
/// Dumps interrupted by a concurrent change (`NLM_F_DUMP_INTR`) are retried this often.
const DUMP_TRIES: usize = 5;

/// One message (or the batch as a whole) the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Index of the refused message in what was sent; `None` for the batch as a whole (a
    /// commit-time check) or a dump request.
    pub index: Option<usize>,
    /// What was refused, as text (`add rule inet t c (…)`).
    pub what: String,
    /// The positive errno (`ENOENT`, `EINVAL`, …).
    pub errno: i32,
    /// The kernel's extended-ack message, if it gave one.
    pub extack: Option<String>,
    /// The extended-ack offset of the offending attribute within that message, if given.
    pub offset: Option<u32>,
    /// That offset as a part of the message (`expression 2 (immediate)`), when it maps.
    pub part: Option<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the kernel refused {}: {}",
            self.what,
            io::Error::from_raw_os_error(self.errno)
        )?;
        if let Some(m) = &self.extack {
            write!(f, " ({m})")?;
        }
        match (&self.part, self.offset) {
            (Some(p), _) => write!(f, " in {p}")?,
            (None, Some(o)) => write!(f, " at byte {o} of that message")?,
            (None, None) => {}
        }
        Ok(())
    }
}

/// Why an apply or a dump failed.
#[derive(Debug)]
pub enum Error {
    /// The socket itself failed (or the kernel did not answer in time).
    Io(io::Error),
    /// The kernel's answer did not parse.
    Decode(DecodeError),
    /// A message did not fit netlink's limits.
    Encode(TooLong),
    /// The kernel refused: nothing of the batch was applied.
    Refused(Vec<Refusal>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "nf_tables netlink: {e}"),
            Error::Decode(e) => write!(f, "nf_tables netlink: {e}"),
            Error::Encode(e) => write!(f, "nf_tables netlink: {e}"),
            Error::Refused(r) => {
                let parts: Vec<String> = r.iter().map(ToString::to_string).collect();
                write!(f, "{}", parts.join("; "))
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Error {
        Error::Decode(e)
    }
}

impl From<TooLong> for Error {
    fn from(e: TooLong) -> Error {
        Error::Encode(e)
    }
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// An `NLMSG_ERROR` read apart.
struct Ack {
    seq: u32,
    errno: i32,
    extack: Option<String>,
    offset: Option<u32>,
}

fn parse_ack(f: &Frame<'_>) -> Result<Ack, DecodeError> {
    let p = f.payload;
    let code = p
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| DecodeError("an error message without its code".into()))?;
    let orig_len = p
        .get(4..8)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| DecodeError("an error message without the request header".into()))?;
    let mut ack = Ack {
        seq: f.seq,
        errno: code.saturating_neg(),
        extack: None,
        offset: None,
    };
    if f.flags & NLM_F_ACK_TLVS != 0 {
        // Capped (or a plain ack): only the request's header is echoed; otherwise all of it.
        let echoed = if f.flags & NLM_F_CAPPED != 0 || code == 0 {
            16
        } else {
            orig_len
        };
        let tlvs = p.get(4 + attr::align(echoed)..).unwrap_or(&[]);
        for a in attr::parse(tlvs)? {
            match a.ty() {
                NLMSGERR_ATTR_MSG => ack.extack = a.string(),
                NLMSGERR_ATTR_OFFS => {
                    ack.offset = a.value.try_into().ok().map(u32::from_ne_bytes);
                }
                _ => {}
            }
        }
    }
    Ok(ack)
}

/// Everything of one family the kernel holds, as dumped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub tables: Vec<msg::Table>,
    pub chains: Vec<msg::Chain>,
    pub sets: Vec<msg::Set>,
    /// The elements of each set in `sets`, in the same order.
    pub elements: Vec<msg::SetElems>,
    pub rules: Vec<msg::Rule>,
    /// Dumped messages of a kind none of the lists above holds.
    pub unknown: Vec<Message>,
}

/// A `NETLINK_NETFILTER` socket in the namespace it was opened in.
pub struct Socket {
    sock: NlSocket,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Socket> {
        let mut sock = NlSocket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.set_ext_ack(true)?;
        sock.set_cap_ack(true)?;
        setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(TIMEOUT_SECS, 0)).map_err(nix_io)?;
        // Start from a time-derived sequence so answers to an earlier socket cannot match.
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
        Ok(Socket {
            sock,
            seq,
            buf: Vec::with_capacity(RECV_BYTES),
        })
    }

    fn take_seqs(&mut self, n: u32) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(n);
        first
    }

    /// Grows a socket buffer to `bytes` (with `*BUFFORCE` when allowed, which passes
    /// `net.core.{w,r}mem_max`).
    fn grow(&self, send: bool, bytes: usize) -> io::Result<()> {
        let bytes = bytes.max(256 * 1024);
        let forced = if send {
            setsockopt(&self.sock, sockopt::SndBufForce, &bytes)
        } else {
            setsockopt(&self.sock, sockopt::RcvBufForce, &bytes)
        };
        if forced.is_ok() {
            return Ok(());
        }
        let plain = if send {
            setsockopt(&self.sock, sockopt::SndBuf, &bytes)
        } else {
            setsockopt(&self.sock, sockopt::RcvBuf, &bytes)
        };
        plain.map_err(nix_io)
    }

    /// Reads one datagram into the buffer; `Ok(false)` when none is queued and `wait` is off.
    fn recv(&mut self, wait: bool) -> io::Result<bool> {
        self.buf.clear();
        let flags = libc::MSG_TRUNC | if wait { 0 } else { libc::MSG_DONTWAIT };
        match self.sock.recv(&mut self.buf, flags) {
            Ok(n) if n > self.buf.len() => Err(io::Error::other(format!(
                "a {n}-byte netlink answer did not fit the {RECV_BYTES}-byte buffer"
            ))),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !wait => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the kernel did not answer within {TIMEOUT_SECS}s"),
            )),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Err(io::Error::new(
                e.kind(),
                "the kernel's answers overflowed the socket buffer; the outcome is unknown",
            )),
            Err(e) => Err(e),
        }
    }

    /// Sends `messages` as one batch and waits for the verdict on every one. `Ok` means the
    /// whole batch is committed; [`Error::Refused`] means none of it is.
    pub fn apply(&mut self, messages: &[Message], genid: Option<u32>) -> Result<(), Error> {
        let first = self.seq;
        let batch = Batch::encode(messages, first, genid)?;
        self.take_seqs(batch.frames() + 2);
        let end = first.wrapping_add(batch.frames() + 1);
        self.grow(true, batch.bytes.len() + 4096)?;
        // With CAP_ACK an acknowledgement is small, but each costs an skb of socket memory.
        self.grow(false, (batch.frames() as usize + 8) * 1024)?;
        let sent = self.sock.send(&batch.bytes, 0)?;
        if sent != batch.bytes.len() {
            return Err(Error::Io(io::Error::other(format!(
                "sent {sent} of {} batch bytes",
                batch.bytes.len()
            ))));
        }
        let mut acked = 0u32;
        let mut refusals = Vec::new();
        loop {
            let got = self.recv(false)?;
            if !got {
                if !refusals.is_empty() || acked >= batch.frames() {
                    break;
                }
                // Everything is normally queued by the time `send` returns; wait if not.
                self.recv(true)?;
            }
            for f in msg::frames(&self.buf)? {
                if f.msg_type != NLMSG_ERROR || f.seq.wrapping_sub(first) > end.wrapping_sub(first) {
                    continue;
                }
                let ack = parse_ack(&f)?;
                if ack.errno == 0 {
                    acked += 1;
                    continue;
                }
                let index = batch.message_of(ack.seq);
                let message = index.and_then(|i| messages.get(i));
                refusals.push(Refusal {
                    index,
                    what: message.map_or_else(|| "the batch".to_string(), Message::describe),
                    errno: ack.errno,
                    extack: ack.extack,
                    part: message.zip(ack.offset).and_then(|(m, o)| m.locate(o)),
                    offset: ack.offset,
                });
            }
        }
        if refusals.is_empty() {
            Ok(())
        } else {
            Err(Error::Refused(refusals))
        }
    }

    /// One dump: every message the kernel sends for it, decoded.
    pub fn dump(&mut self, what: &Dump) -> Result<Vec<Message>, Error> {
        for _ in 0..DUMP_TRIES {
            match self.dump_once(what)? {
                Some(out) => return Ok(out),
                None => continue,
            }
        }
        Err(Error::Io(io::Error::other(format!(
            "the ruleset kept changing during {DUMP_TRIES} dumps of {what:?}"
        ))))
    }

    /// `None` when the dump was interrupted by a concurrent change.
    fn dump_once(&mut self, what: &Dump) -> Result<Option<Vec<Message>>, Error> {
        let seq = self.take_seqs(1);
        let mut req = Vec::new();
        what.encode(&mut req, seq);
        self.sock.send(&req, 0)?;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            self.recv(true)?;
            for f in msg::frames(&self.buf)? {
                if f.seq != seq {
                    continue;
                }
                interrupted |= f.flags & NLM_F_DUMP_INTR != 0;
                match f.msg_type {
                    NLMSG_DONE => return Ok((!interrupted).then_some(out)),
                    NLMSG_ERROR => {
                        let ack = parse_ack(&f)?;
                        if ack.errno == libc::EINTR {
                            return Ok(None);
                        }
                        return Err(Error::Refused(vec![Refusal {
                            index: None,
                            what: format!("the dump {what:?}"),
                            errno: ack.errno,
                            extack: ack.extack,
                            offset: ack.offset,
                            part: None,
                        }]));
                    }
                    _ => out.push(Message::decode(&f)?),
                }
            }
        }
    }

    /// Tables, chains, sets with their elements, and rules of `family` (`0`: all families).
    pub fn ruleset(&mut self, family: u8) -> Result<Ruleset, Error> {
        let mut rs = Ruleset::default();
        let sort = |rs: &mut Ruleset, ms: Vec<Message>| {
            for m in ms {
                match m {
                    Message::NewTable(t) => rs.tables.push(t),
                    Message::NewChain(c) => rs.chains.push(c),
                    Message::NewSet(s) => rs.sets.push(s),
                    Message::NewSetElems(e) => rs.elements.push(e),
                    Message::NewRule(r) => rs.rules.push(r),
                    other => rs.unknown.push(other),
                }
            }
        };
        sort(&mut rs, self.dump(&Dump::Tables { family })?);
        sort(&mut rs, self.dump(&Dump::Chains { family })?);
        sort(&mut rs, self.dump(&Dump::Sets { family, table: None })?);
        for s in rs.sets.clone() {
            let parts = self.dump(&Dump::SetElems {
                family: s.family,
                table: s.table.clone(),
                set: s.name.clone(),
            })?;
            // A set's elements may come in several messages: one entry per set.
            let mut all = msg::SetElems {
                family: s.family,
                table: s.table.clone(),
                set: s.name.clone(),
                ..msg::SetElems::default()
            };
            for m in parts {
                match m {
                    Message::NewSetElems(e) => {
                        all.elements.extend(e.elements);
                        all.unknown.extend(e.unknown);
                    }
                    other => rs.unknown.push(other),
                }
            }
            rs.elements.push(all);
        }
        sort(
            &mut rs,
            self.dump(&Dump::Rules {
                family,
                table: None,
                chain: None,
            })?,
        );
        Ok(rs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An `NLMSG_ERROR` as the kernel writes it with `NETLINK_CAP_ACK` and `NETLINK_EXT_ACK`.
    fn error_frame(seq: u32, code: i32, msg: Option<&str>, offs: Option<u32>) -> Vec<u8> {
        let mut p = code.to_ne_bytes().to_vec();
        // The echoed request header: length, type, flags, seq, pid.
        p.extend_from_slice(&200u32.to_ne_bytes());
        p.extend_from_slice(&0x0a06u16.to_ne_bytes());
        p.extend_from_slice(&0x0c05u16.to_ne_bytes());
        p.extend_from_slice(&seq.to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        if let Some(m) = msg {
            attr::put_str(&mut p, NLMSGERR_ATTR_MSG, m);
        }
        if let Some(o) = offs {
            attr::put(&mut p, NLMSGERR_ATTR_OFFS, &o.to_ne_bytes());
        }
        let flags = NLM_F_CAPPED
            | if msg.is_some() || offs.is_some() {
                NLM_F_ACK_TLVS
            } else {
                0
            };
        let mut out = ((16 + p.len()) as u32).to_ne_bytes().to_vec();
        out.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&p);
        out
    }

    #[test]
    fn errors_carry_errno_text_and_offset() {
        let bytes = error_frame(42, -libc::ENOENT, Some("chain not found"), Some(88));
        let f = msg::frames(&bytes).unwrap();
        let ack = parse_ack(&f[0]).unwrap();
        assert_eq!((ack.seq, ack.errno), (42, libc::ENOENT));
        assert_eq!(ack.extack.as_deref(), Some("chain not found"));
        assert_eq!(ack.offset, Some(88));
        let bytes = error_frame(43, 0, None, None);
        let ack = parse_ack(&msg::frames(&bytes).unwrap()[0]).unwrap();
        assert_eq!((ack.errno, ack.extack, ack.offset), (0, None, None));
    }

    #[test]
    fn refusals_read_as_one_line_naming_the_object() {
        let r = Refusal {
            index: Some(3),
            what: "add rule inet t c (counter, immediate)".into(),
            errno: libc::ENOENT,
            extack: Some("chain not found".into()),
            offset: Some(88),
            part: Some("expression 2 (immediate)".into()),
        };
        assert_eq!(
            Error::Refused(vec![r]).to_string(),
            "the kernel refused add rule inet t c (counter, immediate): No such file or directory (os error 2) \
             (chain not found) in expression 2 (immediate)"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_error_payloads_never_panic(flags in any::<u16>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let f = Frame { msg_type: NLMSG_ERROR, flags, seq: 1, pid: 0, payload: &body };
            let _ = parse_ack(&f);
        }
    }
}
