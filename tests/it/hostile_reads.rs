//! Unbounded reads: every file meshcap reads — resolv.conf, a `--from-save` dump,
//! /etc/passwd and /etc/group — must be a regular file of bounded size. A device, a FIFO with
//! no writer or an oversized file is refused at once, naming the file; nothing hangs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::cmd::meshcap_command as meshcap;
use crate::support::cmd::run_bounded;

/// A scratch directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("meshcap-reads-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn fifo(&self, name: &str) -> String {
        let p = self.0.join(name);
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        p.display().to_string()
    }
    fn big(&self, name: &str, bytes: usize) -> String {
        let p = self.0.join(name);
        let mut text = "nameserver 10.0.0.1\n".repeat(bytes / 20 + 1);
        text.truncate(bytes);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd` (killed after 20 s: a hang is a failure, not a stuck test run) and returns
/// its stderr, asserting it failed with one `meshcap:` line naming `file` and `why`.
fn refused(cmd: Command, file: &str, why: &str) {
    let out = run_bounded(cmd, None, Duration::from_secs(20)).expect("meshcap must not block");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted; stderr: {stderr}");
    assert!(stderr.contains(file) && stderr.contains(why), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing may be rendered: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn render_dns(resolv: &str) -> Command {
    meshcap(&[
        "render",
        "-u",
        "1337",
        "-g",
        "1337",
        "--redirect-dns",
        "--resolv-conf",
        resolv,
    ])
}

#[test]
fn resolv_conf_device_fifo_and_oversized_are_refused() {
    let dir = Dir::new("resolv");
    refused(render_dns("/dev/zero"), "'/dev/zero'", "character device");
    let fifo = dir.fifo("resolv.conf");
    refused(render_dns(&fifo), &fifo, "a FIFO");
    refused(
        render_dns(dir.0.to_str().unwrap()),
        dir.0.to_str().unwrap(),
        "a directory",
    );
    let big = dir.big("big.conf", (1 << 20) + 1);
    refused(render_dns(&big), &big, "the limit is 1048576");
    // At the size limit it is read; its 52,000 servers then plan 210,000 rules, past the
    // rule limit (tests/it/hostile_limits.rs), which is raised here to render them.
    let ok = dir.big("ok.conf", 1 << 20);
    let out = render_dns(&ok).env("MESHCAP_MAX_RULES", "1000000").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = render_dns(&ok).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the DNS servers of resolv.conf would plan 209,712 rules"),
        "{stderr}"
    );
}

#[test]
fn from_save_dumps_are_bounded_regular_files() {
    let dir = Dir::new("save");
    let fifo = dir.fifo("dump");
    for cmd in ["check", "trace"] {
        let mut args = vec![cmd, "--from-save", "/dev/zero", "-u", "1337"];
        if cmd == "trace" {
            args.push("out tcp 10.0.0.5:3333 -> 10.0.0.6:80 uid=0 gid=0 oif=eth0");
        }
        refused(meshcap(&args), "'/dev/zero'", "character device");
        args[2] = &fifo;
        refused(meshcap(&args), &fifo, "a FIFO");
    }
    let big = dir.big("huge", (64 << 20) + 1);
    refused(
        meshcap(&["check", "--from-save", &big, "-u", "1337"]),
        &big,
        "the limit is 67108864",
    );
}

/// /etc/passwd and /etc/group replaced by a FIFO (bind mounts in a private mount namespace
/// of the child only): the ENVOY_USER lookup and the tracer's name resolution refuse them.
#[test]
fn passwd_and_group_fifos_do_not_hang() {
    crate::support::needs_netns!();
    let dir = Dir::new("accounts");
    let fifo = dir.fifo("fifo");
    let bin = crate::support::meshcap_bin().display().to_string();
    for target in ["/etc/passwd", "/etc/group"] {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#)
            .args(["sh", &fifo, target, &bin, "trace", "-u", "1337", "-g", "1337"])
            .arg("out tcp 10.0.0.5:3333 -> 10.0.0.6:80 uid=0 gid=0 oif=eth0")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        refused(cmd, &format!("'{target}'"), "a FIFO");
    }
    // The ENVOY_USER lookup (render reads /etc/passwd when no UID is given).
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/passwd && shift && exec "$@""#)
        .args(["sh", &fifo, &bin, "render"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    refused(cmd, "'/etc/passwd'", "a FIFO");
}
