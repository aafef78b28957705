//! The seam to external programs. A [`Cmd`] is data (program, argv, stdin payload, target
//! network namespace, extra environment); a [`System`] runs it. [`RealSystem`] spawns the
//! program directly (never a shell), entering the target namespace in the child with `setns` on
//! a descriptor the parent opened, with the whole stdin payload in a memfd before it starts; [`Recorder`] records commands instead (dry-run, unit tests of
//! error paths) and answers with scripted outputs.

use std::fmt;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) use crate::error::ExecError;
use crate::error::quote;
use crate::sys::netns::Netns;

/// One external command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cmd {
    /// The program name, looked up in `PATH` (never a shell).
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    /// Bytes written to the program's stdin (`None`: stdin is `/dev/null`).
    pub(crate) stdin: Option<String>,
    /// The network namespace the program runs in (`None`: meshcap's own).
    pub(crate) netns: Option<PathBuf>,
    /// Variables added to the inherited environment.
    pub(crate) env: Vec<(String, String)>,
}

impl Cmd {
    pub(crate) fn new(program: impl Into<String>, args: impl IntoIterator<Item = impl Into<String>>) -> Cmd {
        Cmd {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
            netns: None,
            env: Vec::new(),
        }
    }

    pub(crate) fn stdin(mut self, payload: impl Into<String>) -> Cmd {
        self.stdin = Some(payload.into());
        self
    }

    pub(crate) fn netns(mut self, path: Option<&Path>) -> Cmd {
        self.netns = path.map(Path::to_path_buf);
        self
    }

    pub(crate) fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Cmd {
        self.env.push((key.into(), value.into()));
        self
    }

    /// `program arg…` joined by spaces (arguments never contain spaces or quotes here; the
    /// rendering is for people, the argv vector is what runs).
    pub(crate) fn line(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.env {
            write!(f, "{k}={v} ")?;
        }
        f.write_str(&self.line())?;
        if let Some(ns) = &self.netns {
            write!(f, " (in network namespace {})", ns.display())?;
        }
        Ok(())
    }
}

/// What a finished program left behind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Output {
    /// The exit code; a signal is reported as 128 + signal number.
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    #[cfg(test)]
    pub(crate) fn ok(stdout: impl Into<String>) -> Output {
        Output {
            code: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    pub(crate) fn success(&self) -> bool {
        self.code == 0
    }
}

/// Runs commands.
pub(crate) trait System {
    /// Runs `cmd` to completion. A non-zero exit is an `Ok` output; see [`run_ok`].
    fn run(&self, cmd: &Cmd) -> Result<Output, ExecError>;

    /// Whether `program` can be found (no process is started).
    fn has_program(&self, program: &str) -> bool;

    /// How many processes this system started so far.
    fn spawns(&self) -> usize;
}

/// Runs `cmd` and turns a non-zero exit into [`ExecError::Failed`].
pub(crate) fn run_ok(sys: &dyn System, cmd: &Cmd) -> Result<Output, ExecError> {
    let out = sys.run(cmd)?;
    if out.success() {
        Ok(out)
    } else {
        Err(ExecError::Failed {
            cmd: cmd.to_string(),
            code: out.code,
            stderr: out.stderr,
        })
    }
}

/// Finds `program` in `path` (a `PATH` value). Names with a `/` are taken as they are.
pub(crate) fn find_in_path(program: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// Spawns real processes. Programs are resolved in `PATH` once and cached.
pub(crate) struct RealSystem<'a> {
    netns: Option<&'a Netns>,
    resolved: Mutex<Vec<(String, Option<PathBuf>)>>,
    spawns: AtomicUsize,
}

impl<'a> RealSystem<'a> {
    /// A system whose commands may run in `netns` (a command naming another namespace is
    /// refused, never run in the current one).
    pub(crate) fn new(netns: Option<&'a Netns>) -> RealSystem<'a> {
        RealSystem {
            netns,
            resolved: Mutex::new(Vec::new()),
            spawns: AtomicUsize::new(0),
        }
    }

    fn resolve(&self, program: &str) -> Option<PathBuf> {
        let mut cache = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = cache.iter().find(|(n, _)| n == program) {
            return p.clone();
        }
        let found = find_in_path(program, std::env::var_os("PATH").as_deref());
        cache.push((program.to_string(), found.clone()));
        found
    }
}

impl System for RealSystem<'_> {
    fn run(&self, cmd: &Cmd) -> Result<Output, ExecError> {
        let shown = cmd.to_string();
        let Some(path) = self.resolve(&cmd.program) else {
            return Err(ExecError::NotFound { cmd: shown });
        };
        let mut command = Command::new(&path);
        command.arg0(&cmd.program).args(&cmd.args);
        command.envs(cmd.env.iter().map(|(k, v)| (k, v)));
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        // Its own process group: a terminal's SIGINT (Ctrl-C) goes to meshcap's group only, so
        // a restore is never cut between two tables' commits; meshcap defers the signal
        // (`sys::signals`) and finishes.
        command.process_group(0);
        let mut piped_payload = None;
        command.stdin(match &cmd.stdin {
            None => Stdio::null(),
            Some(payload) => match payload_file(payload) {
                Ok(file) => Stdio::from(file),
                Err(_) => {
                    piped_payload = Some(payload);
                    Stdio::piped()
                }
            },
        });
        match (&cmd.netns, self.netns) {
            (None, _) => {}
            (Some(want), Some(ns)) if want == ns.path() => {
                let fd = ns.raw_fd();
                // SAFETY: the closure runs in the forked child before exec and only calls
                // setns(2), which is async-signal-safe; `fd` stays open in the parent (owned by
                // `ns`) for the whole call.
                unsafe {
                    command.pre_exec(move || {
                        if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            (Some(want), _) => {
                return Err(ExecError::Spawn {
                    cmd: shown,
                    why: format!(
                        "network namespace {} was not opened",
                        quote(&want.display().to_string())
                    ),
                });
            }
        }
        self.spawns.fetch_add(1, Ordering::Relaxed);
        let mut child = command.spawn().map_err(|e| ExecError::Spawn {
            cmd: shown.clone(),
            why: e.to_string(),
        })?;
        let output = std::thread::scope(|s| {
            if let (Some(payload), Some(mut stdin)) = (piped_payload, child.stdin.take()) {
                // A child that exits early closes its end; the error shows in its exit status.
                s.spawn(move || {
                    let _ = stdin.write_all(payload.as_bytes());
                });
            }
            child.wait_with_output()
        })
        .map_err(|e| ExecError::Spawn {
            cmd: shown,
            why: e.to_string(),
        })?;
        let code = output
            .status
            .code()
            .unwrap_or_else(|| 128 + output.status.signal().unwrap_or(0));
        Ok(Output {
            code,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    fn has_program(&self, program: &str) -> bool {
        self.resolve(program).is_some()
    }

    fn spawns(&self) -> usize {
        self.spawns.load(Ordering::Relaxed)
    }
}

/// The stdin payload as a file the child reads from the start (a memfd: no file system
/// needed). Complete before the child exists, so a meshcap killed after the spawn cannot leave
/// the child with a truncated input (a pipe meshcap writes could be cut off part-way, after
/// the first table's COMMIT). Where memfd is unavailable the caller falls back to a pipe.
fn payload_file(payload: &str) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a valid C string; the descriptor is owned right away.
    let fd = unsafe { libc::memfd_create(c"meshcap-stdin".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is fresh and owned by nobody else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(payload.as_bytes())?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// Commands as Istio's dry-run recorder writes them (istio-compat §4.6): a command with a stdin payload
/// (a restore, an `nft -f -`) as the lines of its payload, any other as `program arg…` joined by
/// single spaces; every entry ends with `\n` (an empty payload records nothing).
pub(crate) fn recorded_stream(cmds: &[Cmd]) -> String {
    let mut out = String::new();
    for cmd in cmds {
        match &cmd.stdin {
            Some(payload) => {
                for line in payload.lines() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(&cmd.line());
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
type Responder = Box<dyn Fn(&Cmd) -> Result<Output, ExecError> + Send + Sync>;

#[cfg(test)]
/// Records commands instead of running them. Answers with `respond` (default: success with
/// empty output, as Istio's dry-run recorder does).
pub(crate) struct Recorder {
    commands: Mutex<Vec<Cmd>>,
    respond: Responder,
    missing: Vec<String>,
}

#[cfg(test)]
impl Default for Recorder {
    fn default() -> Self {
        Recorder::new(|_| Ok(Output::default()))
    }
}

#[cfg(test)]
impl Recorder {
    pub(crate) fn new(respond: impl Fn(&Cmd) -> Result<Output, ExecError> + Send + Sync + 'static) -> Recorder {
        Recorder {
            commands: Mutex::new(Vec::new()),
            respond: Box::new(respond),
            missing: Vec::new(),
        }
    }

    /// Programs [`System::has_program`] reports as absent.
    pub(crate) fn without_programs(mut self, names: &[&str]) -> Recorder {
        self.missing = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The commands recorded so far.
    pub(crate) fn commands(&self) -> Vec<Cmd> {
        self.commands.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
impl System for Recorder {
    fn run(&self, cmd: &Cmd) -> Result<Output, ExecError> {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cmd.clone());
        if self.missing.contains(&cmd.program) {
            return Err(ExecError::NotFound { cmd: cmd.to_string() });
        }
        (self.respond)(cmd)
    }

    fn has_program(&self, program: &str) -> bool {
        !self.missing.iter().any(|m| m == program)
    }

    fn spawns(&self) -> usize {
        self.commands.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_system_runs_argv_and_stdin_without_a_shell() {
        let sys = RealSystem::new(None);
        let out = sys
            .run(&Cmd::new("cat", Vec::<String>::new()).stdin("a b; $(x)\n"))
            .unwrap();
        assert_eq!(out.stdout, "a b; $(x)\n");
        let out = sys.run(&Cmd::new("sh", ["-c", "echo oops >&2; exit 3"])).unwrap();
        assert_eq!(out.code, 3);
        let err = run_ok(&sys, &Cmd::new("sh", ["-c", "echo oops >&2; exit 3"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sh -c echo oops >&2; exit 3 failed with exit status 3: oops"
        );
        assert_eq!(sys.spawns(), 3);
        let err = sys.run(&Cmd::new("meshcap-no-such-program", ["x"])).unwrap_err();
        assert!(matches!(err, ExecError::NotFound { .. }), "{err}");
        assert_eq!(sys.spawns(), 3);
    }

    #[test]
    fn a_namespace_that_was_not_opened_is_refused() {
        let sys = RealSystem::new(None);
        let cmd = Cmd::new("true", Vec::<String>::new()).netns(Some(Path::new("/var/run/netns/x")));
        let err = sys.run(&cmd).unwrap_err();
        assert!(err.to_string().contains("was not opened"), "{err}");
        assert_eq!(sys.spawns(), 0);
    }

    #[test]
    fn recorded_stream_spells_payload_lines_and_argv() {
        let cmds = [
            Cmd::new("iptables-save", [""; 0]),
            Cmd::new("iptables-restore", ["--noflush"]).stdin("* nat\n-N ISTIO_INBOUND\nCOMMIT\n"),
            Cmd::new("ip6tables-restore", [""; 0]).stdin(""),
            Cmd::new("iptables", ["-t", "nat", "-X", "ISTIO_INBOUND"]),
        ];
        assert_eq!(
            recorded_stream(&cmds),
            "iptables-save\n* nat\n-N ISTIO_INBOUND\nCOMMIT\niptables -t nat -X ISTIO_INBOUND\n"
        );
        assert_eq!(recorded_stream(&[]), "");
    }

    #[test]
    fn recorder_records_and_answers() {
        let rec = Recorder::new(|c| Ok(Output::ok(c.program.clone()))).without_programs(&["ip6tables-save"]);
        assert_eq!(
            rec.run(&Cmd::new("iptables-save", [""; 0])).unwrap().stdout,
            "iptables-save"
        );
        assert!(rec.run(&Cmd::new("ip6tables-save", [""; 0])).is_err());
        assert!(!rec.has_program("ip6tables-save"));
        assert_eq!(rec.commands().len(), 2);
    }
}
