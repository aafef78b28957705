//! What one run of `meshcap` did ([`Run`]), with assertion helpers.

use std::fmt;
use std::process::Output;

/// What one run did. The assertion helpers print the whole run (command line, exit code,
/// stdout, stderr) when they fail, and return the run for the next assertion.
#[derive(Debug, Clone)]
pub struct Run {
    pub cmdline: String,
    /// The exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// stdout as written (for byte-exact comparisons).
    pub raw_stdout: Vec<u8>,
}

impl Run {
    pub fn new(cmdline: String, output: Output) -> Run {
        Run {
            cmdline,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            raw_stdout: output.stdout,
        }
    }

    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    #[track_caller]
    pub fn success(&self) -> &Run {
        self.expect_exit(0)
    }

    #[track_caller]
    pub fn expect_exit(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "expected exit {code}:\n{self}");
        self
    }

    /// Ended by a signal (e.g. SIGKILL from a stand-in program).
    #[track_caller]
    pub fn expect_killed(&self) -> &Run {
        assert_eq!(self.code, None, "expected to be killed:\n{self}");
        self
    }

    #[track_caller]
    pub fn stdout_is(&self, want: &str) -> &Run {
        assert_eq!(self.stdout, want, "stdout of:\n{self}");
        self
    }

    #[track_caller]
    pub fn stderr_is(&self, want: &str) -> &Run {
        assert_eq!(self.stderr, want, "stderr of:\n{self}");
        self
    }

    #[track_caller]
    pub fn stdout_contains(&self, want: &str) -> &Run {
        assert!(self.stdout.contains(want), "stdout lacks {want:?}:\n{self}");
        self
    }

    #[track_caller]
    pub fn stderr_contains(&self, want: &str) -> &Run {
        assert!(self.stderr.contains(want), "stderr lacks {want:?}:\n{self}");
        self
    }

    #[track_caller]
    pub fn stdout_lacks(&self, unwanted: &str) -> &Run {
        assert!(!self.stdout.contains(unwanted), "stdout has {unwanted:?}:\n{self}");
        self
    }

    #[track_caller]
    pub fn stderr_lacks(&self, unwanted: &str) -> &Run {
        assert!(!self.stderr.contains(unwanted), "stderr has {unwanted:?}:\n{self}");
        self
    }

    /// stdout as a JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }

    /// The `N processes spawned` figure of a run with `--log_output_level=default:debug`.
    #[track_caller]
    pub fn spawns(&self) -> usize {
        let line = self
            .stderr
            .lines()
            .find(|l| l.ends_with(" processes spawned"))
            .unwrap_or_else(|| panic!("no spawn count in:\n{self}"));
        let n = line.trim_end_matches(" processes spawned");
        n.rsplit(char::is_whitespace).next().unwrap().parse().unwrap()
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code.map_or("killed by a signal".to_string(), |c| c.to_string());
        write!(
            f,
            "$ {}\nexit {code}\n--- stdout\n{}--- stderr\n{}",
            self.cmdline, self.stdout, self.stderr
        )
    }
}

/// A captured stream as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A raw [`Output`] for an assertion message: exit code, stdout, stderr.
pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}
