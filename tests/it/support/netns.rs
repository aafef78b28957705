//! Throw-away network namespaces. Tests that touch netfilter, routes, addresses or links do so
//! only inside a [`Netns`] they created: a unique name, loopback up, deleted on drop (also when
//! the test fails).
//!
//! Such a test starts with [`needs_netns!`]. Where namespaces cannot be created (not root, no
//! `ip`) that fails the test with a message saying why, unless `MESHCAP_SKIP_NETNS=1` is set
//! (and `CI` is not `true`): then the test returns at once after writing
//! `SKIPPED (netns): <test name>` to stderr, past libtest's output capture, so that
//! `scripts/test.sh` can count the skipped tests. A test never passes silently without its
//! namespaces.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

use super::files::{find, real};

/// Set to `1` to skip (not fail) the netns tests where namespaces cannot be created.
pub const SKIP_ENV: &str = "MESHCAP_SKIP_NETNS";

/// Returns from the enclosing test when network namespaces cannot be created and
/// `MESHCAP_SKIP_NETNS=1` allows skipping; fails the test when they cannot and it does not.
macro_rules! needs_netns {
    () => {
        if $crate::support::netns::skip_test() {
            return;
        }
    };
}
pub(crate) use needs_netns;

/// Whether the calling test must be skipped (see the module documentation); panics when
/// namespaces are missing and skipping is not allowed.
pub fn skip_test() -> bool {
    let Err(why) = available() else {
        return false;
    };
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let skip = std::env::var(SKIP_ENV).as_deref() == Ok("1");
    if skip && !ci {
        // Straight to the stderr file descriptor: libtest captures eprintln! of passing tests.
        let _ = writeln!(std::io::stderr(), "SKIPPED (netns): {test}");
        return true;
    }
    panic!("{test}: {}", unavailable_message(why, ci && skip));
}

fn unavailable_message(why: &str, skip_refused_by_ci: bool) -> String {
    let advice = if skip_refused_by_ci {
        format!("{SKIP_ENV}=1 is ignored with CI=true")
    } else {
        format!("run as root with iproute2, or set {SKIP_ENV}=1 to skip the namespace tests")
    };
    format!("cannot create network namespaces ({why}); {advice}")
}

/// Whether this process can create a network namespace (probed once).
fn available() -> Result<(), &'static str> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| Netns::try_new("probe").map(drop))
        .as_ref()
        .map_err(String::as_str)
        .copied()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace created with `ip netns add` under a unique name (`mc-TAG-PID-N`), with
/// loopback up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace; panics, saying why, when it cannot be created.
    pub fn new(tag: &str) -> Netns {
        Netns::try_new(tag).unwrap_or_else(|why| {
            let test = std::thread::current().name().unwrap_or("?").to_string();
            panic!("{test}: {}", unavailable_message(&why, false))
        })
    }

    /// With 198.51.100.2/32 on lo: IPv6 detection then says IPv4 only, as for a plain pod.
    pub fn ipv4(tag: &str) -> Netns {
        let ns = Netns::new(tag);
        ns.ip(&["addr", "add", "198.51.100.2/32", "dev", "lo"]);
        ns
    }

    /// With fd00::2/128 on lo only: an IPv6-only pod.
    pub fn ipv6(tag: &str) -> Netns {
        let ns = Netns::new(tag);
        ns.ip(&["-6", "addr", "add", "fd00::2/128", "dev", "lo"]);
        ns
    }

    /// With 198.51.100.2/32 and fd00::2/128 on lo (IPv6 on with `--dual-stack`).
    pub fn dual(tag: &str) -> Netns {
        let ns = Netns::ipv4(tag);
        ns.ip(&["-6", "addr", "add", "fd00::2/128", "dev", "lo"]);
        ns
    }

    fn try_new(tag: &str) -> Result<Netns, String> {
        let name = format!(
            "mc-{}-{}-{}",
            tag.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(12)
                .collect::<String>(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let ip = find("ip").ok_or("the ip program (iproute2) is not installed")?;
        let out = Command::new(ip)
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("ip netns add: {e}"))?;
        if !out.status.success() {
            return Err(format!("ip netns add: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Ok(ns)
    }

    /// `/var/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// `PROGRAM ARGS` inside the namespace (`ip netns exec`; set-up and inspection).
    pub fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(real("ip"));
        cmd.args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a command inside the namespace (any exit status).
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.cmd(program, args).output().expect("spawn command in namespace")
    }

    /// Runs a command inside the namespace, feeding `stdin` (any exit status).
    pub fn run_with_stdin(&self, program: &str, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .cmd(program, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn command in namespace");
        let mut input = child.stdin.take().unwrap();
        let data = stdin.as_bytes().to_vec();
        let writer = std::thread::spawn(move || drop(input.write_all(&data)));
        let out = child.wait_with_output().unwrap();
        let _ = writer.join();
        out
    }

    /// The stdout of `PROGRAM ARGS` inside the namespace (any exit status).
    pub fn stdout(&self, program: &str, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(program, args).stdout).into_owned()
    }

    /// `ip ARGS` in the namespace; panics on failure.
    pub fn ip(&self, args: &[&str]) {
        let out = self.run("ip", args);
        assert!(
            out.status.success(),
            "ip {args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip -n NS -batch -` with these commands; panics with ip's message on failure.
    pub fn ip_batch(&self, commands: &[String]) {
        let mut child = Command::new(real("ip"))
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip");
        {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(commands.join("\n").as_bytes()).unwrap();
            stdin.write_all(b"\n").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ip -n {} -batch: {}\ncommands:\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr),
            commands.join("\n")
        );
    }

    /// Makes `cmd` start inside the namespace (`setns` between fork and exec).
    pub fn enter(&self, cmd: &mut Command) {
        let file = self.open();
        // SAFETY: the closure makes one syscall on a descriptor opened before the fork.
        unsafe {
            cmd.pre_exec(move || Ok(setns(&file, CloneFlags::CLONE_NEWNET)?));
        }
    }

    /// Runs `f` on a thread that entered the namespace (sysctls and other per-namespace state).
    pub fn on_thread<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = self.open();
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns on a test thread");
            f()
        })
        .join()
        .expect("thread in the namespace")
    }

    /// Sets a sysctl of the namespace (`net.ipv6.conf.all.accept_dad`).
    pub fn sysctl(&self, key: &'static str, value: &'static str) {
        self.on_thread(move || {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
        });
    }

    /// A process sleeping inside the namespace, for addressing it as `/proc/PID/ns/net`.
    pub fn sleeper(&self) -> Sleeper {
        let mut cmd = Command::new(real("sleep"));
        cmd.arg("60").stdin(Stdio::null());
        self.enter(&mut cmd);
        // spawn returns once the child has exec'd, so it is inside the namespace by now.
        Sleeper(cmd.spawn().expect("spawn sleep in namespace"))
    }

    fn open(&self) -> File {
        File::open(self.path()).unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(real("ip")).args(["netns", "del", &self.name]).output();
    }
}

/// See [`Netns::sleeper`]; killed on drop.
pub struct Sleeper(Child);

impl Sleeper {
    /// `/proc/PID/ns/net`.
    pub fn ns_path(&self) -> String {
        format!("/proc/{}/ns/net", self.0.id())
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
