//! Hostile input, faults and odd environments, each in a namespace the test creates:
//! [`inject`] (bad values are refused and nothing is applied), [`faults`] (rollback, a held
//! xtables lock, SIGKILL, a deleted namespace, a missing kernel feature, bad namespace paths),
//! [`environments`] (missing binaries, only one iptables variant, a read-only `/run`).
//!
//! Error paths use stand-in programs put first on `PATH` (scripts in a
//! [`TempDir`](crate::support::TempDir)); everything else is the real iptables in throw-away
//! namespaces.

mod environments;
mod faults;
mod inject;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::Netns;

/// How long one meshcap run of these tests may take.
const LIMIT: Duration = Duration::from_secs(30);

/// Waits (bounded) until `path` exists.
fn wait_for(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < limit, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts that nothing of netfilter or policy routing was created in `ns`: no legacy table
/// of either family was even instantiated, no nft table exists, no policy rule was added.
fn assert_nothing_applied(ns: &Netns, what: &str) {
    for names in ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"] {
        assert_eq!(ns.stdout("cat", &[names]), "", "{what}: legacy tables in {names}");
    }
    let o = ns.run("nft", &["list", "tables"]);
    assert!(o.status.success(), "nft list tables: {o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "", "{what}: nft tables");
    // A fresh namespace has 3 IPv4 and 2 IPv6 policy rules (local, main, and default for IPv4).
    for (family, fresh) in [("-4", 3), ("-6", 2)] {
        let rules = ns.stdout("ip", &[family, "rule"]);
        assert_eq!(rules.lines().count(), fresh, "{what}: ip {family} rule:\n{rules}");
    }
}
