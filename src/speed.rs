//! Every speed trick of meshcap in one place, each with what it saves and how it was measured
//! (callgrind instructions, deterministic; `bench/` and docs/performance.md for wall time).
//! A trick stays only while the benchmark shows it matters; the rest of the code calls these
//! functions and stays plain.
//!
//! Measured on 2026-12-07 by building the release binary without each trick in turn
//! (`valgrind --tool=callgrind`, instructions of the whole process):
//!
//! | trick | used by | saves (release build) |
//! |---|---|---|
//! | [`Lazy`]: a subcommand's ~45 capture flags built only when clap enters it | `cli` | standard `render`: 1.22 M → 0.94 M instructions (−23 %) |
//! | [`parse_args`]: clap's command tree is never freed | `app` | standard `render`: 1.03 M → 0.94 M (−9 %) |
//! | [`keep_until_exit`]: the rendered plan is never freed | `app` (render) | `render` of 6,000 CIDRs + 1,000 ports: 12.9 M → 11.5 M (−12 %); nft 21.4 M → 18.1 M (−15 %) |
//! | decimal spelling without `fmt` ([`push_decimal`], [`small_decimal`], [`v4_prefix_text`]) and a one-pass IPv4 prefix parser ([`parse_v4_prefix`]) | `values`, `iptables::render` | the same render: 17.8 M → 11.5 M (−36 %); nft 24.4 M → 18.1 M (−26 %) |

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};

use clap::{ArgMatches, Args, FromArgMatches};

/// Parses argv with clap without ever dropping the command tree: freeing its few hundred
/// allocations is work for a process that exits moments later; the memory goes back with the
/// process.
pub(crate) fn parse_args<C: clap::CommandFactory + FromArgMatches>(args: Vec<OsString>) -> Result<C, clap::Error> {
    let mut command = std::mem::ManuallyDrop::new(C::command());
    let mut matches = command.try_get_matches_from_mut(args)?;
    C::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
}

/// Lets `value` go without running its destructor: for large values (thousands of rules) built
/// just before the process exits, whose memory the kernel reclaims anyway.
pub(crate) fn keep_until_exit<T>(value: T) {
    std::mem::forget(value);
}

/// A subcommand's arguments, added to clap's command only when the parser enters that
/// subcommand (`clap::Command::defer`). Every subcommand flattens the ~45 capture flags, and
/// building all seven subcommands' arguments (and dropping them again) was half of the
/// instructions a standard `meshcap istio-iptables` ran; now only the chosen one is built.
/// Help, completions and man pages build the whole tree as before (`Command::build`).
#[derive(Debug)]
pub struct Lazy<T>(pub T);

impl<T> Deref for Lazy<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Lazy<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Args> Args for Lazy<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.defer(T::augment_args)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd.defer(T::augment_args_for_update)
    }
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
}

impl<T: FromArgMatches> FromArgMatches for Lazy<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Lazy)
    }
    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(matches).map(Lazy)
    }
    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
    fn update_from_arg_matches_mut(&mut self, matches: &mut ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(matches)
    }
}

/// `a.b.c.d/len` written into `buf` (at most 18 bytes) without the formatting machinery: the
/// render of thousands of prefixes spends most of its time here otherwise.
pub(crate) fn v4_prefix_text(addr: Ipv4Addr, len: u8, buf: &mut [u8; 18]) -> &str {
    let n = v4_prefix_bytes(addr, len, buf);
    std::str::from_utf8(&buf[..n]).expect("ASCII digits and dots")
}

/// The decimal text of every byte value, each in a 3-byte slot (left-aligned, space-padded),
/// built at compile time.
const SMALL_DECIMALS: &str = {
    const BYTES: [u8; 768] = {
        let mut b = [b' '; 768];
        let mut i = 0;
        while i < 256 {
            let (h, t, u) = ((i / 100) as u8, ((i / 10) % 10) as u8, (i % 10) as u8);
            let at = i * 3;
            if i >= 100 {
                (b[at], b[at + 1], b[at + 2]) = (b'0' + h, b'0' + t, b'0' + u);
            } else if i >= 10 {
                (b[at], b[at + 1]) = (b'0' + t, b'0' + u);
            } else {
                b[at] = b'0' + u;
            }
            i += 1;
        }
        b
    };
    match std::str::from_utf8(&BYTES) {
        Ok(s) => s,
        Err(_) => panic!("ASCII"),
    }
};

/// `n` in decimal, from [`SMALL_DECIMALS`].
pub(crate) fn small_decimal(n: u8) -> &'static str {
    let at = usize::from(n) * 3;
    let len = if n >= 100 {
        3
    } else if n >= 10 {
        2
    } else {
        1
    };
    &SMALL_DECIMALS[at..at + len]
}

/// The bytes of `a.b.c.d/len` at the start of `buf`; returns their number.
fn v4_prefix_bytes(addr: Ipv4Addr, len: u8, buf: &mut [u8; 18]) -> usize {
    fn put(buf: &mut [u8; 18], n: &mut usize, v: u8) {
        if v >= 100 {
            buf[*n] = b'0' + v / 100;
            *n += 1;
        }
        if v >= 10 {
            buf[*n] = b'0' + (v / 10) % 10;
            *n += 1;
        }
        buf[*n] = b'0' + v % 10;
        *n += 1;
    }
    let mut n = 0;
    for (i, octet) in addr.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        put(buf, &mut n, octet);
    }
    buf[n] = b'/';
    n += 1;
    put(buf, &mut n, len);
    n
}

/// Strict dotted-quad `a.b.c.d/len` in one pass, without allocation: four decimal octets
/// without leading zeros, a prefix length 0–32 without leading zeros. `None` for anything else
/// (including valid IPv6 text), which then takes the general path and its error messages.
pub(crate) fn parse_v4_prefix(text: &str) -> Option<(Ipv4Addr, u8)> {
    let mut octets = [0u8; 4];
    // Octets done, the value and digit count of the current field (an octet, then the length).
    let (mut done, mut value, mut digits) = (0usize, 0u32, 0u32);
    for &b in text.as_bytes() {
        let digit = b.wrapping_sub(b'0');
        if digit < 10 {
            if digits == 3 || (digits == 1 && value == 0) {
                return None;
            }
            value = value * 10 + u32::from(digit);
            digits += 1;
        } else if digits > 0 && value <= 255 && ((b == b'.' && done < 3) || (b == b'/' && done == 3)) {
            octets[done] = value as u8;
            (done, value, digits) = (done + 1, 0, 0);
        } else {
            return None;
        }
    }
    if done != 4 || digits == 0 || value > 32 {
        return None;
    }
    Some((Ipv4Addr::from(octets), value as u8))
}

/// A u32 in decimal, on the stack.
pub(crate) struct Decimal {
    buf: [u8; 10],
    start: usize,
}

impl Decimal {
    pub(crate) fn new(mut n: u32) -> Decimal {
        let mut buf = [0u8; 10];
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { buf, start }
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).expect("ASCII digits")
    }
}

/// Appends `n` in decimal.
pub(crate) fn push_decimal(out: &mut String, n: u32) {
    match u8::try_from(n) {
        Ok(small) => out.push_str(small_decimal(small)),
        Err(_) => out.push_str(Decimal::new(n).as_str()),
    }
}
