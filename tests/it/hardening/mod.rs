//! Hostile input, faults and odd environments (issue 9), each in a namespace the test creates:
//! [`inject`] (bad values are refused and nothing is applied), [`faults`] (rollback, a held
//! xtables lock, SIGKILL, a deleted namespace, a missing kernel feature, bad namespace paths),
//! [`environments`] (missing binaries, only one iptables variant, a read-only `/run`).
//!
//! Error paths use stand-in programs put first on `PATH` ([`Wrappers`]); everything else is
//! the real iptables in throw-away namespaces.

mod environments;
mod faults;
mod inject;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::apply::text;
use crate::support::NetNs;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A temporary directory of stand-in programs (shell scripts written by the test, or symlinks
/// to real binaries), removed on drop.
pub struct Wrappers {
    pub dir: PathBuf,
}

impl Wrappers {
    pub fn new(tag: &str) -> Wrappers {
        let dir = std::env::temp_dir().join(format!(
            "meshcap-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Wrappers { dir }
    }

    /// Writes an executable `sh` script `name` with `body`.
    pub fn script(&self, name: &str, body: &str) -> &Wrappers {
        let p = self.dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
        std::fs::set_permissions(&p, mode).unwrap();
        self
    }

    /// Links `name` to the real program `target` (found in `PATH`).
    pub fn link(&self, name: &str, target: &str) -> &Wrappers {
        std::os::unix::fs::symlink(real(target), self.dir.join(name)).unwrap();
        self
    }

    /// A path inside the directory (markers the scripts write).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `PATH` with this directory first.
    pub fn path_first(&self) -> String {
        format!("{}:{}", self.dir.display(), std::env::var("PATH").unwrap_or_default())
    }

    /// `PATH` with only this directory.
    pub fn path_only(&self) -> String {
        self.dir.display().to_string()
    }
}

impl Drop for Wrappers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The real program `name` in `PATH`.
pub fn real(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed"))
}

/// Runs `cmd` with piped output, killing it (and failing the test) after `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}; stderr so far:\n{}", text(&o.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until `path` exists.
pub fn wait_for(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < limit, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts that nothing of netfilter or policy routing was created in `ns`: no legacy table
/// of either family was even instantiated, no nft table exists, no policy rule was added.
pub fn assert_nothing_applied(ns: &NetNs, what: &str) {
    for names in ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"] {
        let o = ns.run("cat", &[names]);
        assert_eq!(text(&o.stdout), "", "{what}: legacy tables in {names}");
    }
    let o = ns.run("nft", &["list", "tables"]);
    assert!(o.status.success(), "nft list tables: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "", "{what}: nft tables");
    // A fresh namespace has 3 IPv4 and 2 IPv6 policy rules (local, main, and default for IPv4).
    for (family, fresh) in [("-4", 3), ("-6", 2)] {
        let rules = text(&ns.run("ip", &[family, "rule"]).stdout);
        assert_eq!(rules.lines().count(), fresh, "{what}: ip {family} rule:\n{rules}");
    }
}
