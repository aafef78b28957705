//! meshcap's errors as data: one enum with typed variants, one wording (`Display`), one exit
//! code ([`Error::code`]). They are printed once, by `app` (`meshcap: <error>`). Every layer
//! returns them, so this module depends on no other part of meshcap; the exec layer's
//! [`ExecError`] lives here for that reason (`sys::exec` re-exports it).

use std::fmt;

/// A typed cause from another layer (a parse error, a trace error, an OS error code), kept as
/// the error it is; only its `Display` is shown.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub enum Error {
    // The command line.
    /// A flag or environment variable has a value meshcap refuses.
    InvalidValue { source: String, value: String, why: String },
    /// clap refused the command line (unknown flag, stray argument): clap's own text, exit 2.
    Usage(Box<clap::Error>),
    /// Capture flags before a subcommand: meshcap does not guess which command they are for.
    FlagsBeforeSubcommand,
    /// Flags without a command: refused (exit 2, nothing applied). Istio's injected arguments
    /// always name `istio-iptables`, so only a person typing flags on their own machine gets
    /// here, and programming that machine's firewall is never what they meant.
    NoCommand,
    /// `meshcap audit`: the input is not Kubernetes JSON or YAML.
    NotKubernetes { source: String, why: String },
    /// `meshcap audit`: the input holds no Pod, List or workload.
    NoWorkload,
    /// The flags would plan more rules than `MESHCAP_MAX_RULES` allows (counted before any is
    /// built): `cause` names the flags with the most of them (`cause_rules`), `total` is what
    /// `backend` would load, `v4`/`v6` the families' views.
    TooManyRules {
        cause: &'static str,
        cause_rules: u64,
        total: u64,
        v4: u64,
        v6: u64,
        backend: &'static str,
        limit: u64,
    },

    // Files and streams.
    /// A file meshcap had to read could not be read.
    Read { path: String, err: std::io::Error },
    /// A file meshcap writes could not be written; `source` is the setting that named it.
    Write {
        path: String,
        source: String,
        err: std::io::Error,
    },
    /// Standard output could not be written (a closed pipe, a full disk).
    Stdout(std::io::Error),
    /// A dump named on the command line (`--from-save`) does not parse.
    Parse { path: String, err: Cause },
    /// A dump that parsed holds something the tracer cannot load.
    Untraceable { path: String, err: Cause },
    /// The packet cannot be traced (a rule on its way the tracer cannot evaluate).
    Trace(Cause),

    // The system.
    /// An operating-system request failed: what meshcap was doing, then the system's words.
    System { doing: String, err: Cause },
    /// An external program did not run or did not succeed. `err` shows its command line,
    /// namespace, exit status and stderr; `context` (may be empty) says what meshcap was doing,
    /// `notes` (may be empty, starts with `; `) what was done about it.
    Exec {
        context: String,
        err: ExecError,
        notes: String,
    },
    /// A program's output is not what meshcap reads (`cmd`: its command line).
    Output { cmd: String, err: Cause },
    /// No usable iptables binary of a family (`kind`: `iptables`/`ip6tables`, `base`: the one
    /// looked for).
    NoIptables { kind: String, base: String, why: String },
    /// The kernel refused meshcap's nftables batch: nothing of it was applied (the batch is
    /// atomic). Each refusal names the operation as `nft -f` text.
    NftRefused(Vec<NftRefusal>),
    /// `--network-namespace` names a file that is not a network namespace.
    NotNetns { path: String, why: String },
    /// Another meshcap holds the namespace's lock (`netns`: `None` is the current namespace).
    Busy { netns: Option<String>, secs: u64 },
    /// The namespace was deleted while meshcap ran; `run`: how the run itself ended.
    NetnsDeleted { path: String, run: Option<Box<Error>> },
    /// No address to tell the host IP (and whether IPv6 is on) from.
    NoLocalAddress,
    /// `check` cannot tell whether IPv6 is on (why: the error below).
    Ipv6Unknown(Box<Error>),
    /// Programming the TPROXY policy routing failed.
    Routes(Box<Error>),

    // Apply's decisions.
    /// Apply changed nothing because the namespace is not in a state it may overwrite.
    Refused(Refusal),
    /// The rules are in place but the clean-up around them failed (`notes` starts with `; `).
    AppliedBut { notes: String },
    /// A signal arrived while the rules were being changed: the run was finished (or rolled
    /// back) first, then meshcap exits 1 saying so.
    Interrupted { signal: i32, outcome: String },
    /// `--run-validation` failed: the failed paths and the summary, logged at error level with
    /// Istio's fixed message (not as a `meshcap:` line); exit 126.
    Validation { failed: Vec<String>, summary: String },

    /// The plan contradicts itself: a bug in meshcap, never the user's input.
    Internal { plan: String, why: String },
}

/// Why apply refused (exit 1, nothing changed; the differences are logged before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// meshcap's live rules (`rules`) differ from the plan, without `--reconcile`; `guarded`:
    /// an interrupted run's guardrails stay in place.
    Drift {
        rules: &'static str,
        summary: Vec<String>,
        guarded: bool,
    },
    /// The nftables backend's tables are live (`tables`: the note naming them), so iptables
    /// rules would capture every packet a second time.
    NftBackend { tables: String },
}

/// One operation of an nftables batch the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRefusal {
    /// The operation as `nft -f` text (`add rule inet istio-proxy-nat istio-output …`), or
    /// `the batch` for a refusal of the commit as a whole.
    pub what: String,
    /// The positive errno.
    pub errno: i32,
    /// The kernel's extended-ack message, when it gave one.
    pub extack: Option<String>,
    /// The part of the message the kernel pointed at (`expression 2 (immediate)`), if known.
    pub part: Option<String>,
}

impl fmt::Display for NftRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.what == "the batch" {
            self.what.clone()
        } else {
            quote(&self.what)
        };
        write!(f, "{what}: {}", std::io::Error::from_raw_os_error(self.errno))?;
        if let Some(m) = &self.extack {
            write!(f, " ({})", printable(m))?;
        }
        if let Some(p) = &self.part {
            write!(f, " in {p}")?;
        }
        Ok(())
    }
}

/// Why a command did not run or did not succeed (the exec layer's error, `sys::exec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// The program is not in `PATH`.
    NotFound { cmd: String },
    /// The program could not be started (including failing to enter the namespace).
    Spawn { cmd: String, why: String },
    /// The program ran and exited non-zero.
    Failed { cmd: String, code: i32, stderr: String },
}

/// Which exit codes a failed command uses: `check` follows `diff` (1 is drift, so every error
/// is 2); the others follow Istio (1, with 2 for usage and 126 for a failed validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Convention {
    Istio,
    Check,
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// The exit code of `meshcap check` on any error, and of a usage error.
pub(crate) const EXIT_USAGE: i32 = 2;
/// The exit code of a failed `--run-validation` (Istio's).
pub(crate) const EXIT_VALIDATION: i32 = 126;

impl Error {
    pub(crate) fn invalid(source: impl Into<String>, value: impl Into<String>, why: impl Into<String>) -> Error {
        Error::InvalidValue {
            source: source.into(),
            value: value.into(),
            why: why.into(),
        }
    }

    /// The one constructor of internal errors: the `plan` (`v4`, `v6`, `nftables`) is
    /// inconsistent because of `why`.
    pub(crate) fn inconsistent(plan: impl fmt::Display, why: impl fmt::Display) -> Error {
        Error::Internal {
            plan: plan.to_string(),
            why: why.to_string(),
        }
    }

    /// An OS request that failed while meshcap was `doing` something.
    pub(crate) fn system(doing: impl Into<String>, err: impl Into<Cause>) -> Error {
        Error::System {
            doing: doing.into(),
            err: err.into(),
        }
    }

    /// A failed program, with what meshcap was doing (`context`).
    pub(crate) fn exec(context: impl Into<String>, err: ExecError) -> Error {
        Error::Exec {
            context: context.into(),
            err,
            notes: String::new(),
        }
    }

    /// The process exit code for this error, the one place that decides it.
    pub(crate) fn code(&self, convention: Convention) -> i32 {
        match (self, convention) {
            (Error::Usage(_) | Error::NoCommand, _) | (_, Convention::Check) => EXIT_USAGE,
            (Error::Validation { .. }, Convention::Istio) => EXIT_VALIDATION,
            (_, Convention::Istio) => 1,
        }
    }
}

impl From<ExecError> for Error {
    fn from(err: ExecError) -> Error {
        Error::exec("", err)
    }
}

/// Quotes a value for a one-line message: control characters and quotes are escaped.
pub(crate) fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A count with thousands separators (`4,000,000`), as the limit's message spells numbers.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A value for a log line, as is but with control characters escaped (`\n`, `\u{1b}`), so
/// no value can start a forged log line or drive a terminal.
pub(crate) fn printable(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidValue { source, value, why } => {
                // The reason may quote part of the value: escaped too, the message stays one line.
                write!(f, "invalid value {} for '{}': {}", quote(value), source, printable(why))
            }
            Error::Usage(e) => write!(f, "{e}"),
            Error::FlagsBeforeSubcommand => {
                f.write_str("capture flags go after the subcommand (e.g. 'meshcap render -p 15001'), not before it")
            }
            Error::NotKubernetes { source, why } => {
                write!(f, "cannot read {} as Kubernetes JSON or YAML: {why}", quote(source))
            }
            Error::NoWorkload => f.write_str(
                "no Pod, List or workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) found in the input",
            ),
            Error::NoCommand => f.write_str(
                "no command given, nothing applied: to apply the capture to this network namespace run \
                 'meshcap istio-iptables FLAGS' (as Istio's istio-init does); to preview the rules run \
                 'meshcap render FLAGS'; see 'meshcap --help'",
            ),
            Error::TooManyRules {
                cause,
                cause_rules,
                total,
                v4,
                v6,
                backend,
                limit,
            } => write!(
                f,
                "{cause} would plan {} rules ({} in all for {backend}: IPv4 {}, IPv6 {}); the limit is {} \
                 (set MESHCAP_MAX_RULES to raise it); nothing was done",
                thousands(*cause_rules),
                thousands(*total),
                thousands(*v4),
                thousands(*v6),
                thousands(*limit)
            ),
            Error::Read { path, err } => write!(f, "cannot read {}: {}", quote(path), err),
            Error::Write { path, source, err } => write!(f, "cannot write {} ({source}): {err}", quote(path)),
            Error::Stdout(err) => write!(f, "cannot write to stdout: {err}"),
            Error::Parse { path, err } => write!(f, "cannot parse {}: {err}", quote(path)),
            Error::Untraceable { path, err } => write!(f, "cannot trace through {}: {err}", quote(path)),
            Error::Trace(err) => write!(f, "{err}"),
            Error::System { doing, err } => write!(f, "{doing}: {err}"),
            Error::Exec { context, err, notes } => {
                if !context.is_empty() {
                    write!(f, "{context}: ")?;
                }
                write!(f, "{err}{notes}")
            }
            Error::Output { cmd, err } => write!(f, "cannot read the output of {cmd}: {err}"),
            Error::NoIptables { kind, base, why } => write!(f, "did not find a usable {kind} binary '{base}': {why}"),
            Error::NftRefused(refusals) => {
                let parts: Vec<String> = refusals.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "the kernel refused the nftables transaction, nothing was changed: {}",
                    parts.join("; ")
                )
            }
            Error::NotNetns { path, why } => write!(f, "{} is not a network namespace: {why}", quote(path)),
            Error::Busy { netns, secs } => {
                let shown = netns.as_deref().map_or("the current network namespace".into(), quote);
                write!(f, "another meshcap is still working on {shown}; gave up after {secs}s")
            }
            Error::NetnsDeleted { path, run } => {
                write!(
                    f,
                    "network namespace {} was deleted while meshcap was running; ",
                    quote(path)
                )?;
                match run {
                    None => f.write_str("the rules went into the orphaned namespace"),
                    Some(e) => write!(f, "the run failed too: {e}"),
                }
            }
            Error::NoLocalAddress => f.write_str("no valid local IP address found"),
            Error::Ipv6Unknown(e) => write!(
                f,
                "{e}; cannot tell whether IPv6 is on: pass --ipv6=true or --ipv6=false"
            ),
            Error::Routes(e) => write!(f, "failed to configure routes: {e}"),
            Error::Refused(r) => write!(f, "{r}"),
            Error::AppliedBut { notes } => write!(f, "the rules were applied, but{notes}"),
            Error::Interrupted { signal, outcome } => write!(f, "interrupted by signal {signal}; {outcome}"),
            Error::Validation { summary, .. } => f.write_str(summary),
            Error::Internal { plan, why } => write!(f, "internal error: the {plan} plan is inconsistent: {why}"),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Drift {
                rules,
                summary,
                guarded,
            } => {
                write!(
                    f,
                    "the live {rules} differ from the planned ones ({}); nothing was changed; rerun with --reconcile to rebuild them",
                    summary.join("; ")
                )?;
                if *guarded {
                    f.write_str(
                        "; the guardrails of an interrupted run are in place (TCP and UDP are dropped) until then",
                    )?;
                }
                Ok(())
            }
            Refusal::NftBackend { tables } => write!(
                f,
                "{tables}; with the iptables rules too, packets would be captured twice; nothing was changed; remove them with --cleanup-only --native-nftables (--reconcile and --force-apply do not), or rerun with --native-nftables to keep the nftables backend"
            ),
        }
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::NotFound { cmd } => write!(f, "cannot run {cmd}: program not found in PATH"),
            ExecError::Spawn { cmd, why } => write!(f, "cannot run {cmd}: {why}"),
            ExecError::Failed { cmd, code, stderr } => {
                write!(f, "{cmd} failed with exit status {code}")?;
                let stderr = stderr.trim();
                if !stderr.is_empty() {
                    write!(f, ": {}", stderr.replace('\n', "; "))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ExecError {}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(msg: &str) -> std::io::Error {
        std::io::Error::other(msg.to_string())
    }

    /// One of every variant, with the text it prints.
    fn every_variant() -> Vec<(Error, &'static str)> {
        let mut all = every_cli_and_file_variant();
        all.extend(every_system_variant());
        all
    }

    /// The command-line, file and trace variants of [`every_variant`].
    fn every_cli_and_file_variant() -> Vec<(Error, &'static str)> {
        use clap::{Arg, Command};
        let clap = Command::new("meshcap")
            .arg(Arg::new("x").long("x"))
            .try_get_matches_from(["meshcap", "--bogus"])
            .unwrap_err();
        let failed = ExecError::Failed {
            cmd: "iptables-restore --noflush (in network namespace /run/netns/p)".into(),
            code: 2,
            stderr: "line 3 failed\n".into(),
        };
        vec![
            (
                Error::invalid("--envoy-port", "0", "a port must be between 1 and 65535"),
                "invalid value '0' for '--envoy-port': a port must be between 1 and 65535",
            ),
            (Error::Usage(Box::new(clap)), ""),
            (
                Error::FlagsBeforeSubcommand,
                "capture flags go after the subcommand (e.g. 'meshcap render -p 15001'), not before it",
            ),
            (
                Error::Read {
                    path: "/x".into(),
                    err: io("gone"),
                },
                "cannot read '/x': gone",
            ),
            (
                Error::Write {
                    path: "/x".into(),
                    source: "DRY_RUN_FILE_PATH".into(),
                    err: io("full"),
                },
                "cannot write '/x' (DRY_RUN_FILE_PATH): full",
            ),
            (Error::Stdout(io("broken pipe")), "cannot write to stdout: broken pipe"),
            (
                Error::Parse {
                    path: "d".into(),
                    err: "line 1: bad".into(),
                },
                "cannot parse 'd': line 1: bad",
            ),
            (
                Error::Untraceable {
                    path: "d".into(),
                    err: "policy".into(),
                },
                "cannot trace through 'd': policy",
            ),
            (Error::Trace("cannot evaluate x".into()), "cannot evaluate x"),
            (
                Error::system("cannot list the routes", io("EPERM")),
                "cannot list the routes: EPERM",
            ),
            (
                Error::from(ExecError::NotFound { cmd: "nft -f -".into() }),
                "cannot run nft -f -: program not found in PATH",
            ),
            (
                Error::exec(
                    "cannot read the live IPv4 rules",
                    ExecError::Spawn {
                        cmd: "iptables-save".into(),
                        why: "EACCES".into(),
                    },
                ),
                "cannot read the live IPv4 rules: cannot run iptables-save: EACCES",
            ),
            (
                Error::Exec {
                    context: String::new(),
                    err: failed,
                    notes: "; rolled back".into(),
                },
                "iptables-restore --noflush (in network namespace /run/netns/p) failed with exit status 2: line 3 failed; rolled back",
            ),
            (
                Error::Output {
                    cmd: "nft -j list ruleset inet".into(),
                    err: "not JSON".into(),
                },
                "cannot read the output of nft -j list ruleset inet: not JSON",
            ),
        ]
    }

    /// The tools, namespaces and apply decisions of [`every_variant`].
    fn every_system_variant() -> Vec<(Error, &'static str)> {
        vec![
            (
                Error::NoIptables {
                    kind: "ip6tables".into(),
                    base: "ip6tables-nft".into(),
                    why: "not installed".into(),
                },
                "did not find a usable ip6tables binary 'ip6tables-nft': not installed",
            ),
            (
                Error::NftRefused(vec![NftRefusal {
                    what: "add rule inet istio-proxy-nat istio-output counter jump istio-x".into(),
                    errno: 2,
                    extack: Some("chain not\nfound".into()),
                    part: Some("expression 2 (immediate)".into()),
                }]),
                "the kernel refused the nftables transaction, nothing was changed: 'add rule inet istio-proxy-nat \
                 istio-output counter jump istio-x': No such file or directory (os error 2) (chain not\\nfound) in \
                 expression 2 (immediate)",
            ),
            (
                Error::NotNetns {
                    path: "/tmp/f".into(),
                    why: "not a namespace file".into(),
                },
                "'/tmp/f' is not a network namespace: not a namespace file",
            ),
            (
                Error::Busy { netns: None, secs: 60 },
                "another meshcap is still working on the current network namespace; gave up after 60s",
            ),
            (
                Error::Busy {
                    netns: Some("/run/netns/p".into()),
                    secs: 10,
                },
                "another meshcap is still working on '/run/netns/p'; gave up after 10s",
            ),
            (
                Error::NetnsDeleted {
                    path: "/run/netns/p".into(),
                    run: None,
                },
                "network namespace '/run/netns/p' was deleted while meshcap was running; the rules went into the orphaned namespace",
            ),
            (
                Error::NetnsDeleted {
                    path: "/run/netns/p".into(),
                    run: Some(Box::new(Error::NoLocalAddress)),
                },
                "network namespace '/run/netns/p' was deleted while meshcap was running; the run failed too: no valid local IP address found",
            ),
            (
                Error::Ipv6Unknown(Box::new(Error::NoLocalAddress)),
                "no valid local IP address found; cannot tell whether IPv6 is on: pass --ipv6=true or --ipv6=false",
            ),
            (
                Error::Routes(Box::new(Error::system("failed to add route", io("EEXIST")))),
                "failed to configure routes: failed to add route: EEXIST",
            ),
            (
                Error::Refused(Refusal::Drift {
                    rules: "ISTIO_* rules",
                    summary: vec!["a".into(), "b".into()],
                    guarded: true,
                }),
                "the live ISTIO_* rules differ from the planned ones (a; b); nothing was changed; rerun with --reconcile to rebuild them; the guardrails of an interrupted run are in place (TCP and UDP are dropped) until then",
            ),
            (
                Error::Refused(Refusal::NftBackend { tables: "T".into() }),
                "T; with the iptables rules too, packets would be captured twice; nothing was changed; remove them with --cleanup-only --native-nftables (--reconcile and --force-apply do not), or rerun with --native-nftables to keep the nftables backend",
            ),
            (
                Error::AppliedBut {
                    notes: "; removing the guardrails failed".into(),
                },
                "the rules were applied, but; removing the guardrails failed",
            ),
            (
                Error::Interrupted {
                    signal: 2,
                    outcome: "the run was finished first".into(),
                },
                "interrupted by signal 2; the run was finished first",
            ),
            (
                Error::Validation {
                    failed: Vec::new(),
                    summary: "validation timeout".into(),
                },
                "validation timeout",
            ),
            (
                Error::inconsistent("nftables", "a jump to nowhere"),
                "internal error: the nftables plan is inconsistent: a jump to nowhere",
            ),
            (Error::NoLocalAddress, "no valid local IP address found"),
            (
                Error::NotKubernetes {
                    source: "pods.json".into(),
                    why: "EOF".into(),
                },
                "cannot read 'pods.json' as Kubernetes JSON or YAML: EOF",
            ),
            (
                Error::TooManyRules {
                    cause: "-k × -i",
                    cause_rules: 4_000_000,
                    total: 4_000_022,
                    v4: 4_000_022,
                    v6: 0,
                    backend: "iptables",
                    limit: 100_000,
                },
                "-k × -i would plan 4,000,000 rules (4,000,022 in all for iptables: IPv4 4,000,022, IPv6 0); \
                 the limit is 100,000 (set MESHCAP_MAX_RULES to raise it); nothing was done",
            ),
            (
                Error::NoWorkload,
                "no Pod, List or workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) found in the input",
            ),
            (
                Error::NoCommand,
                "no command given, nothing applied: to apply the capture to this network namespace run 'meshcap istio-iptables FLAGS' (as Istio's istio-init does); to preview the rules run 'meshcap render FLAGS'; see 'meshcap --help'",
            ),
        ]
    }

    #[test]
    fn thousands_separators() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (100_000, "100,000"),
            (u64::MAX, "18,446,744,073,709,551,615"),
        ] {
            assert_eq!(thousands(n), text);
        }
    }

    #[test]
    fn every_variant_has_its_text() {
        for (e, text) in every_variant() {
            if let Error::Usage(_) = e {
                continue; // clap's own text
            }
            assert_eq!(e.to_string(), text, "{e:?}");
        }
    }

    #[test]
    fn exit_codes_are_decided_here() {
        for (e, _) in every_variant() {
            // Exhaustive on purpose: a new variant must say its exit code (and join the list).
            let istio = match e {
                Error::Usage(_) | Error::NoCommand => EXIT_USAGE,
                Error::Validation { .. } => EXIT_VALIDATION,
                Error::InvalidValue { .. }
                | Error::TooManyRules { .. }
                | Error::FlagsBeforeSubcommand
                | Error::NotKubernetes { .. }
                | Error::NoWorkload
                | Error::Read { .. }
                | Error::Write { .. }
                | Error::Stdout(_)
                | Error::Parse { .. }
                | Error::Untraceable { .. }
                | Error::Trace(_)
                | Error::System { .. }
                | Error::Exec { .. }
                | Error::Output { .. }
                | Error::NoIptables { .. }
                | Error::NftRefused(_)
                | Error::NotNetns { .. }
                | Error::Busy { .. }
                | Error::NetnsDeleted { .. }
                | Error::NoLocalAddress
                | Error::Ipv6Unknown(_)
                | Error::Routes(_)
                | Error::Refused(_)
                | Error::AppliedBut { .. }
                | Error::Interrupted { .. }
                | Error::Internal { .. } => 1,
            };
            assert_eq!(e.code(Convention::Istio), istio, "{e:?}");
            // `check`: 1 is drift, so every error is 2.
            assert_eq!(e.code(Convention::Check), 2, "{e:?}");
        }
        assert_eq!((EXIT_USAGE, EXIT_VALIDATION), (2, 126));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(quote("a'b\nc"), "'a\\'b\\nc'");
        assert_eq!(printable("eth0"), "eth0");
        assert_eq!(printable("1\n2\t3\u{1b}[2J"), "1\\n2\\t3\\u{1b}[2J");
    }
}
