//! Test support: the built binary, a command builder, and throw-away network namespaces.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The flags Istio's injector gives istio-init for a default sidecar (the standard apply).
pub const SIDECAR: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];

/// Path of the `meshcap` binary cargo built for these tests.
pub fn meshcap_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshcap"))
}

/// `meshcap ARGS` with a clean environment (only PATH), stdin from /dev/null.
pub fn meshcap(args: &[&str]) -> Command {
    let mut cmd = Command::new(meshcap_bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    cmd
}

/// Whether this process may create network namespaces. With `CI=true` a missing capability is
/// a failure, elsewhere the netns tests are skipped with a note.
pub fn netns_available() -> bool {
    static CHECK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *CHECK.get_or_init(|| {
        let probe = NetNs::try_new("probe");
        probe.is_ok()
    });
    if !ok && std::env::var("CI").as_deref() == Ok("true") {
        panic!("cannot create network namespaces (need root and 'ip'); CI=true requires them");
    }
    if !ok {
        eprintln!("note: skipping: cannot create network namespaces here");
    }
    ok
}

/// A network namespace created with `ip netns add` under a unique name, deleted on drop.
pub struct NetNs {
    pub name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl NetNs {
    pub fn try_new(tag: &str) -> Result<NetNs, String> {
        let name = format!(
            "mc-{}-{}-{}",
            tag.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(12)
                .collect::<String>(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Ok(ns)
    }

    /// Creates a namespace or panics (call [`netns_available`] first).
    pub fn new(tag: &str) -> NetNs {
        NetNs::try_new(tag).expect("create network namespace")
    }

    /// `/var/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// A command run inside the namespace (`ip netns exec`; test set-up only).
    pub fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a command inside the namespace and returns its output (any exit status).
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.cmd(program, args).output().expect("spawn command in namespace")
    }

    /// Runs a command inside the namespace, feeding `stdin`.
    pub fn run_with_stdin(&self, program: &str, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd(program, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn command in namespace");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `ip ARGS` in the namespace and panics on failure.
    pub fn ip(&self, args: &[&str]) {
        let out = self.run("ip", args);
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Runs `cmd` with piped stdout/stderr and kills it after `timeout`. A timed-out child is an
/// `ErrorKind::TimedOut` error.
pub fn output_with_timeout(cmd: &mut Command, timeout: std::time::Duration) -> std::io::Result<Output> {
    use std::io::Read;
    use std::time::Instant;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).map(|_| buf)
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("killed after {timeout:?}"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    let stdout = out_reader.join().expect("stdout reader")?;
    let stderr = err_reader.join().expect("stderr reader")?;
    Ok(Output { status, stdout, stderr })
}
