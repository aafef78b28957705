//! Child processes of the lab: enter a network namespace and take on a uid/gid before `exec`.
//!
//! The parent opens the namespace file; the child (in `pre_exec`, between fork and exec) calls
//! `setns`, then drops to the requested credentials with `setgroups`/`setgid`/`setuid`, keeping
//! only the capabilities asked for as ambient capabilities (e.g. CAP_NET_ADMIN for a TPROXY
//! proxy, which needs IP_TRANSPARENT — as Istio gives Envoy), and asks for SIGKILL when the
//! parent thread dies. Every [`Agent`] (the `lab_agent` example binary) is killed and reaped
//! when dropped, so a failing test leaves no process behind.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};

use super::protocol::{Reply, Request, SOURCE, fingerprint};
use crate::support::Netns;

/// Who a child runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (set exactly; empty clears root's).
    pub groups: Vec<u32>,
    /// Capabilities kept across the uid change (as ambient capabilities).
    pub caps: Vec<Cap>,
    /// Capabilities removed from the bounding set (root keeps the rest across exec).
    pub dropped: Vec<Cap>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    SetGid,
    SetUid,
    NetAdmin,
}

impl Cap {
    fn number(self) -> u32 {
        match self {
            Cap::SetGid => 6,
            Cap::SetUid => 7,
            Cap::NetAdmin => 12,
        }
    }
}

impl Creds {
    pub fn root() -> Creds {
        Creds::user(0, 0)
    }

    pub fn user(uid: u32, gid: u32) -> Creds {
        Creds {
            uid,
            gid,
            groups: Vec::new(),
            caps: Vec::new(),
            dropped: Vec::new(),
        }
    }

    /// Without `cap` even as root (e.g. `istio-init`: root with only NET_ADMIN and NET_RAW).
    pub fn without(mut self, cap: Cap) -> Creds {
        self.dropped.push(cap);
        self
    }

    pub fn with_cap(mut self, cap: Cap) -> Creds {
        self.caps.push(cap);
        self
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// Sets up namespace and credentials in the forked child. Only async-signal-safe work here:
/// raw syscalls on values prepared by the parent.
fn enter(ns: &File, creds: &Creds, groups: &[Gid]) -> std::io::Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET)?;
    for cap in &creds.dropped {
        // SAFETY: plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap.number() as libc::c_ulong, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if creds.uid == 0 && creds.gid == 0 && creds.caps.is_empty() {
        return Ok(());
    }
    let mask: u32 = creds.caps.iter().fold(0, |m, c| m | (1 << c.number()));
    // SAFETY: plain prctl/capset syscalls with valid arguments.
    unsafe {
        if mask != 0 && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    setgroups(groups)?;
    setgid(Gid::from_raw(creds.gid))?;
    setuid(Uid::from_raw(creds.uid))?;
    if mask != 0 {
        let header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let data = [
            CapData {
                effective: mask,
                permitted: mask,
                inheritable: mask,
            },
            CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
        ];
        // SAFETY: capset with a v3 header and two data structs, as the ABI requires.
        unsafe {
            if libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for cap in &creds.caps {
                let rc = libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap.number() as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                );
                if rc != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
    }
    Ok(())
}

/// Prepares `cmd` to run inside the namespace at `ns` as `creds` (the parent must stay alive
/// while it runs).
pub fn in_namespace(cmd: &mut Command, ns: &Path, creds: &Creds) {
    let file = File::open(ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
    let creds = creds.clone();
    let groups: Vec<Gid> = creds.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    // SAFETY: the closure only makes syscalls on data prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            enter(&file, &creds, &groups)?;
            // After the credential change, which clears it: die with the spawning thread.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// [`in_namespace`] as a [`Meshcap`](crate::support::Meshcap) hook: the run starts inside `ns`
/// as `creds`.
pub fn as_user_in(ns: &Netns, creds: &Creds) -> impl Fn(&mut Command) + Send + Sync + 'static {
    let (path, creds) = (ns.path(), creds.clone());
    move |cmd| in_namespace(cmd, &path, &creds)
}

/// How long the lab waits for an agent's reply (probes bound themselves more tightly).
const REPLY_TIMEOUT: Duration = Duration::from_secs(6);

/// The agent binary, `examples/lab_agent.rs`, which cargo builds next to this test binary
/// (`target/<profile>/examples/lab_agent`). Panics, saying how to build it, when it is missing
/// or was built from other sources than this test binary sees (`cargo test --test it` builds
/// only the test binary, not the examples).
fn agent_binary() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BIN.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| format!("the test binary's path: {e}"))?;
        // target/<profile>/deps/it-HASH
        let profile_dir = exe.parent().and_then(Path::parent).ok_or("no target directory")?;
        let bin = profile_dir.join("examples").join("lab_agent");
        let build = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("release") => "cargo build --release --example lab_agent".to_string(),
            Some(other) if other != "debug" => format!("cargo build --profile {other} --example lab_agent"),
            _ => "cargo build --example lab_agent".to_string(),
        };
        let out = Command::new(&bin).arg("--fingerprint").output().map_err(|e| {
            format!(
                "the traffic lab's agent {} cannot run ({e}): build it with `{build}` (`cargo test` without `--test` does)",
                bin.display()
            )
        })?;
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab_agent.rs");
        let source = std::fs::read_to_string(&source).map_err(|e| format!("read {}: {e}", source.display()))?;
        let want = fingerprint(&[SOURCE, &source]);
        if String::from_utf8_lossy(&out.stdout).trim() != want {
            return Err(format!(
                "the traffic lab's agent {} was built from other sources than examples/lab_agent.rs and tests/it/lab/protocol.rs: rebuild it with `{build}`",
                bin.display()
            ));
        }
        Ok(bin)
    });
    found.as_deref().unwrap_or_else(|e| panic!("{e}"))
}

/// A running agent (`examples/lab_agent.rs`) in a namespace, as some user; killed and reaped
/// when dropped.
pub struct Agent {
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    pub fn spawn(name: &str, ns: &Netns, creds: &Creds) -> Agent {
        let mut cmd = Command::new(agent_binary());
        cmd.env_clear()
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        in_namespace(&mut cmd, &ns.path(), creds);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn agent {name}: {e}"));
        let stdin = child.stdin.take().expect("agent stdin");
        let stdout = child.stdout.take().expect("agent stdout");
        let stderr_pipe = child.stderr.take().expect("agent stderr");
        let (tx, replies) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Agent {
            name: name.to_string(),
            child,
            stdin,
            replies,
            stderr,
        }
    }

    /// Sends a request and waits (bounded) for its reply.
    pub fn call(&mut self, request: &Request) -> Reply {
        let line = serde_json::to_string(request).expect("serialize request");
        if let Err(e) = writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush()) {
            let d = self.diagnostics();
            panic!("agent {}: cannot send request: {e}\n{d}", self.name);
        }
        match self.replies.recv_timeout(REPLY_TIMEOUT) {
            Ok(text) => {
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("agent {}: bad reply {text:?}: {e}", self.name))
            }
            Err(RecvTimeoutError::Timeout) => {
                let d = self.diagnostics();
                panic!("agent {}: no reply to {line} within {REPLY_TIMEOUT:?}\n{d}", self.name)
            }
            Err(RecvTimeoutError::Disconnected) => {
                let d = self.diagnostics();
                panic!("agent {}: exited before replying to {line}\n{d}", self.name)
            }
        }
    }

    fn diagnostics(&mut self) -> String {
        let status = self.child.try_wait().ok().flatten();
        std::thread::sleep(Duration::from_millis(20));
        format!(
            "agent status: {status:?}\nagent stderr:\n{}",
            self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
