//! Running the built `meshcap`: [`Meshcap`] builds the command line (in the style of the test
//! builders of cargo and just) and runs it; what a run did is a [`Run`].
//!
//! Every run has a clean environment (only `PATH`, plus what the test adds), stdin from
//! `/dev/null` unless the test gives some, and a time limit: a hung run is killed and fails the
//! test instead of hanging the suite.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use super::files::real;
use super::netfilter::Variant;
use super::netns::Netns;
use super::run::Run;

/// The `meshcap` binary cargo built for these tests.
pub fn meshcap_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshcap"))
}

/// How long a run may take unless the test says otherwise.
const TIME_LIMIT: Duration = Duration::from_secs(60);

type Hook = Arc<dyn Fn(&mut Command) + Send + Sync>;

/// A `meshcap` command line to run.
///
/// ```ignore
/// Meshcap::new().args(SIDECAR).netns(&ns).env("MESHCAP_XTABLES_WAIT", "2").run()
///     .expect_exit(1)
///     .stderr_contains("another process holds the xtables lock");
/// ```
#[derive(Clone)]
pub struct Meshcap {
    program: PathBuf,
    launcher: Vec<OsString>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    dir: Option<PathBuf>,
    limit: Duration,
    hooks: Vec<Hook>,
}

impl Default for Meshcap {
    fn default() -> Meshcap {
        Meshcap::new()
    }
}

impl Meshcap {
    /// The built binary, no arguments, environment `PATH` only.
    pub fn new() -> Meshcap {
        Meshcap {
            program: meshcap_bin(),
            launcher: Vec::new(),
            args: Vec::new(),
            env: vec![("PATH".into(), std::env::var_os("PATH").unwrap_or_default())],
            stdin: None,
            dir: None,
            limit: TIME_LIMIT,
            hooks: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Meshcap {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Meshcap
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable (replacing an earlier value, `PATH` included).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Meshcap {
        let key = key.as_ref().to_owned();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.as_ref().to_owned()));
        self
    }

    pub fn envs<I, K, V>(self, vars: I) -> Meshcap
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        vars.into_iter().fold(self, |m, (k, v)| m.env(k, v))
    }

    pub fn stdin(mut self, text: impl Into<Vec<u8>>) -> Meshcap {
        self.stdin = Some(text.into());
        self
    }

    /// `--network-namespace NAME`: meshcap, running here, works on `ns`.
    pub fn netns(self, ns: &Netns) -> Meshcap {
        self.args(["--network-namespace", ns.name.as_str()])
    }

    /// `--force-iptables-binary legacy|nft`.
    pub fn variant(self, v: Variant) -> Meshcap {
        self.args(["--force-iptables-binary", v.name()])
    }

    /// Runs meshcap inside `ns` (`ip netns exec`, as istio-init runs in the pod), so that its
    /// own namespace is a throw-away one.
    pub fn inside(self, ns: &Netns) -> Meshcap {
        let ip = real("ip").into_os_string();
        self.launcher([ip, "netns".into(), "exec".into(), ns.name.clone().into()])
    }

    /// A program that starts the command so far (e.g. `unshare ... --`, `setpriv ... --`): the
    /// launcher given last runs first. Its first word is looked up in the test's `PATH`.
    pub fn launcher<I, S>(mut self, argv: I) -> Meshcap
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut argv: Vec<OsString> = argv.into_iter().map(|a| a.as_ref().to_owned()).collect();
        if let Some(first) = argv.first_mut()
            && !Path::new(first).is_absolute()
        {
            *first = real(&first.to_string_lossy()).into_os_string();
        }
        argv.append(&mut self.launcher);
        self.launcher = argv;
        self
    }

    /// Runs this file instead of the built binary (e.g. a copy with file capabilities).
    pub fn program(mut self, path: impl Into<PathBuf>) -> Meshcap {
        self.program = path.into();
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Meshcap {
        self.dir = Some(dir.into());
        self
    }

    pub fn time_limit(mut self, limit: Duration) -> Meshcap {
        self.limit = limit;
        self
    }

    /// Runs as `uid`/`gid` (the test runs as root).
    pub fn user(self, uid: u32, gid: u32) -> Meshcap {
        self.configure(move |cmd| {
            cmd.uid(uid).gid(gid);
        })
    }

    /// An adjustment of the [`Command`] once it is built (e.g. entering a namespace as some
    /// user), after those given earlier.
    pub fn configure(mut self, hook: impl Fn(&mut Command) + Send + Sync + 'static) -> Meshcap {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// The command line, for messages.
    pub fn describe(&self) -> String {
        let mut words: Vec<String> = self.launcher.iter().map(|w| w.to_string_lossy().into_owned()).collect();
        let program = if self.program == meshcap_bin() {
            "meshcap".into()
        } else {
            self.program.display().to_string()
        };
        words.push(program);
        words.extend(self.args.iter().map(|a| quote(&a.to_string_lossy())));
        words.join(" ")
    }

    /// The [`Command`] (stdin null; the caller sets up output).
    pub fn command(&self) -> Command {
        let mut cmd = match self.launcher.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(&self.program);
                cmd
            }
            None => Command::new(&self.program),
        };
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        for hook in &self.hooks {
            hook(&mut cmd);
        }
        cmd
    }

    /// Runs to completion; panics when it cannot be started or exceeds its time limit.
    pub fn run(&self) -> Run {
        self.try_run().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs to completion; an error when it cannot be started or exceeds its time limit.
    pub fn try_run(&self) -> Result<Run, String> {
        let output = run_bounded(self.command(), self.stdin.as_deref(), self.limit)
            .map_err(|e| format!("{}: {e}", self.describe()))?;
        Ok(Run::new(self.describe(), output))
    }

    /// Runs to completion, requires exit 0 and returns stdout.
    #[track_caller]
    pub fn stdout(&self) -> String {
        let run = self.run();
        run.success();
        run.stdout
    }

    /// Starts it with piped stdout and stderr; the process is killed if the handle is dropped.
    pub fn spawn(&self) -> Running {
        let child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.describe()));
        Running {
            cmdline: self.describe(),
            child: Some(child),
        }
    }
}

fn quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_=./:,*".contains(c)) {
        arg.to_string()
    } else {
        format!("{arg:?}")
    }
}

/// A started run (see [`Meshcap::spawn`]), killed and reaped when dropped unfinished.
pub struct Running {
    cmdline: String,
    child: Option<Child>,
}

impl Running {
    /// Waits for it to end (unbounded: the test bounds it otherwise).
    pub fn wait(mut self) -> Run {
        let child = self.child.take().expect("running");
        let output = child.wait_with_output().expect("wait for meshcap");
        Run::new(std::mem::take(&mut self.cmdline), output)
    }

    /// SIGKILL, then reaps it.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill meshcap");
            let _ = child.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `cmd` with piped output (and `stdin` fed, or `/dev/null`); SIGKILL after `limit`.
pub fn run_bounded(mut cmd: Command, stdin: Option<&[u8]>, limit: Duration) -> Result<Output, String> {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            // A child that exits without reading its input is not an error.
            Some(std::thread::spawn(move || drop(pipe.write_all(&data))))
        }
        _ => None,
    };
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    let pid = child.id();
    let (tx, rx) = channel::<std::io::Result<ExitStatus>>();
    std::thread::spawn(move || drop(tx.send(child.wait())));
    let status = match rx.recv_timeout(limit) {
        Ok(status) => status.map_err(|e| format!("wait: {e}"))?,
        Err(RecvTimeoutError::Timeout) => {
            // Not reaped yet (the waiter still waits), so the pid is still this child.
            // SAFETY: kill(2) with a pid and a signal number, no memory involved.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            return Err(format!("still running after {limit:?}; killed"));
        }
        Err(RecvTimeoutError::Disconnected) => return Err("the waiter thread died".into()),
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    })
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// `meshcap ARGS` as a plain [`Command`] (clean environment, `PATH` only), for tests that need
/// the process itself (signals, stdin from a file, a wrapper the builder cannot express).
pub fn meshcap_command(args: &[&str]) -> Command {
    Meshcap::new().args(args).command()
}
