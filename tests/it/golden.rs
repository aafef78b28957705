//! The golden runner for the project's own `golden/` directory.
//!
//! Every directory `golden/<case>/` is a case:
//! - `args`: one argument per line (an empty line is an empty argument), passed after `meshcap`;
//! - `env` (optional): `KEY=VALUE` lines, blank and `#` lines ignored. The command runs with a
//!   clean environment holding only `PATH` and these, in the case directory (so input files such
//!   as `resolv.conf` are referenced relatively), with stdin from `/dev/null`;
//! - expected files, each checked when present:
//!   - `expected.v4` / `expected.v6`: exact stdout of `meshcap <args> --family v4|v6`, exit 0;
//!   - `expected.nft`: exact stdout of `meshcap <args>`, exit 0;
//!   - `expected.out`: `exit: N\n--- stdout\n<stdout>--- stderr\n<stderr>` of `meshcap <args>`,
//!     with log timestamps (`YYYY-MM-DDTHH:MM:SS.ffffffZ`) replaced by `<time>`;
//!   - `expected.file`: the exact content of the file `out.file` that `meshcap <args>` leaves in
//!     its working directory (the args or env name it, e.g. `DRY_RUN_FILE_PATH=out.file`). A case
//!     with this file runs every command in a fresh scratch copy of its directory, so the case
//!     may also hold an `out.file` as the file found before the run; the case directory is
//!     never written. Blessing rewrites an existing `expected.file` (create it empty first).
//!
//! Every case also gets `MESHCAP_RENDER_PASSWD=golden/passwd` and
//! `MESHCAP_RENDER_GROUP=golden/group` (absolute): `render` resolves the user and group names
//! the cases use (`istio-proxy`, `java`, `ftp`, `_svc-1`) there, whatever the test machine lists.
//!
//! A case without any expected file fails. `MESHCAP_BLESS=1 cargo test --test it golden`
//! rewrites the expected files from the current binary instead of comparing; a case without
//! expected files then gets `expected.nft` (args contain `--native-nftables`), or
//! `expected.v4` + `expected.v6` (a `render` that succeeds with `--family v4`), or `expected.out`.
//! Blessed files must be reviewed before they are committed (see each case's `notes`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::flags::args_file as parse_args;
use crate::support::{Meshcap, Run, TempDir};

const TIMEOUT: Duration = Duration::from_secs(20);
const KINDS: [&str; 5] = [
    "expected.v4",
    "expected.v6",
    "expected.nft",
    "expected.out",
    "expected.file",
];
/// The file an `expected.file` case compares, in the run's working directory.
const OUT_FILE: &str = "out.file";

struct Case {
    dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The case compares a file it writes: it runs in scratch copies of its directory.
    writes: bool,
}

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn parse_env(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.is_empty() => vars.push((k.to_string(), v.to_string())),
            _ => return Err(format!("env line {}: expected KEY=VALUE, got {line:?}", n + 1)),
        }
    }
    Ok(vars)
}

fn load(dir: &Path) -> Result<Case, String> {
    let args = fs::read_to_string(dir.join("args")).map_err(|e| format!("cannot read args: {e}"))?;
    let env = match fs::read_to_string(dir.join("env")) {
        Ok(text) => parse_env(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("cannot read env: {e}")),
    };
    Ok(Case {
        dir: dir.to_path_buf(),
        args: parse_args(&args),
        env,
        writes: dir.join("expected.file").is_file(),
    })
}

/// A fresh copy of the case directory's files, removed on drop.
fn scratch_copy(dir: &Path) -> Result<TempDir, String> {
    let scratch = TempDir::new("golden");
    for entry in fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.file_type().map_err(|e| e.to_string())?.is_file() {
            fs::copy(entry.path(), scratch.path().join(entry.file_name()))
                .map_err(|e| format!("cannot copy {}: {e}", entry.path().display()))?;
        }
    }
    Ok(scratch)
}

/// Whether the case runs the apply command (`istio-iptables`, `istio-clean-iptables`): its dry
/// run reads the live state of the namespace it runs in.
fn applies(case: &Case) -> bool {
    matches!(
        case.args.first().map(String::as_str),
        Some("istio-iptables" | "istio-clean-iptables")
    )
}

/// The name database of every case (`MESHCAP_RENDER_PASSWD`, `MESHCAP_RENDER_GROUP`, which
/// `render` reads): the users and groups the cases name, as a pod image would list them (the
/// same as scripts/image.sh's), so a case does not depend on the test machine's accounts.
fn accounts() -> [(&'static str, String); 2] {
    let root = golden_root();
    let file = |name: &str| root.join(name).to_string_lossy().into_owned();
    [
        ("MESHCAP_RENDER_PASSWD", file("passwd")),
        ("MESHCAP_RENDER_GROUP", file("group")),
    ]
}

/// Runs `meshcap <args> <extra>` in `dir`; a case of the apply command in a fresh, empty
/// network namespace of its own (`unshare -rn`: a user namespace owning it, so no root is
/// needed) whose only address is 198.51.100.2/32 on `lo` (IPv6 detection says IPv4 only, as
/// for a plain pod) and whose state its dry run reads: the log says "clean state" on every
/// machine. Every case gets [`accounts`] and its own environment.
fn run_in(case: &Case, dir: &Path, extra: &[&str]) -> Result<Run, String> {
    const POD: &str = "ip link set lo up && ip addr add 198.51.100.2/32 dev lo && exec \"$@\"";
    let meshcap = if applies(case) {
        Meshcap::new().launcher(["unshare", "--map-root-user", "--net", "--", "sh", "-c", POD, "sh"])
    } else {
        Meshcap::new()
    };
    meshcap
        .args(&case.args)
        .envs(accounts())
        .args(extra)
        .envs(case.env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .time_limit(TIMEOUT)
        .try_run()
}

fn run(case: &Case, extra: &[&str]) -> Result<Run, String> {
    if case.writes {
        let scratch = scratch_copy(&case.dir)?;
        return run_in(case, scratch.path(), extra);
    }
    run_in(case, &case.dir, extra)
}

/// The `out.file` a run of `meshcap <args>` leaves (in a scratch copy of the case directory).
fn written_file(case: &Case) -> Result<Vec<u8>, String> {
    let scratch = scratch_copy(&case.dir)?;
    let out = run_in(case, scratch.path(), &[])?;
    fs::read(scratch.path().join(OUT_FILE)).map_err(|e| {
        format!(
            "[expected.file] cannot read {OUT_FILE} after meshcap {} (exit {:?}): {e}; stderr:\n{}",
            case.args.join(" "),
            out.code,
            out.stderr
        )
    })
}

/// Replaces log timestamps (`2026-08-22T15:00:18.123456Z`) with `<time>`.
fn mask_times(text: &str) -> String {
    const PATTERN: &[u8] = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
    let bytes = text.as_bytes();
    let is_time = |at: usize| {
        bytes.len() >= at + PATTERN.len()
            && PATTERN.iter().zip(&bytes[at..]).all(|(p, b)| match p {
                b'd' => b.is_ascii_digit(),
                p => p == b,
            })
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if is_time(i) {
            out.push_str("<time>");
            i += PATTERN.len();
        } else {
            let c = text[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn record(out: &Run) -> String {
    let code = match out.code {
        Some(c) => c.to_string(),
        None => "killed by a signal".to_string(),
    };
    format!(
        "exit: {code}\n--- stdout\n{}--- stderr\n{}",
        mask_times(&out.stdout),
        mask_times(&out.stderr),
    )
}

/// What `meshcap` produced for one kind of expected file.
fn actual(case: &Case, kind: &str) -> Result<Vec<u8>, String> {
    if kind == "expected.file" {
        return written_file(case);
    }
    let extra: &[&str] = match kind {
        "expected.v4" => &["--family", "v4"],
        "expected.v6" => &["--family", "v6"],
        _ => &[],
    };
    let out = run(case, extra)?;
    if kind == "expected.out" {
        return Ok(record(&out).into_bytes());
    }
    if !out.ok() {
        return Err(format!("[{kind}] {out}"));
    }
    Ok(out.raw_stdout)
}

/// The kinds a new case gets when blessed.
fn new_kinds(case: &Case) -> Result<Vec<&'static str>, String> {
    if case
        .args
        .iter()
        .any(|a| a == "--native-nftables" || a == "--native-nftables=true")
    {
        return Ok(vec!["expected.nft"]);
    }
    if case.args.first().map(String::as_str) == Some("render") && run(case, &["--family", "v4"])?.ok() {
        return Ok(vec!["expected.v4", "expected.v6"]);
    }
    Ok(vec!["expected.out"])
}

/// Checks (or blesses) one case; returns the files it rewrote.
fn check(dir: &Path, bless: bool) -> Result<Vec<String>, String> {
    let case = load(dir)?;
    let mut kinds: Vec<&str> = KINDS.into_iter().filter(|k| dir.join(k).is_file()).collect();
    if kinds.is_empty() {
        if !bless {
            return Err(
                "no expected file (expected.v4/.v6/.nft/.out/.file); create them with MESHCAP_BLESS=1 and review them"
                    .into(),
            );
        }
        kinds = new_kinds(&case)?;
    }
    let mut errors = Vec::new();
    let mut blessed = Vec::new();
    for kind in kinds {
        let got = match actual(&case, kind) {
            Ok(got) => got,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let path = dir.join(kind);
        let want = fs::read(&path).ok();
        if want.as_deref() == Some(got.as_slice()) {
            continue;
        }
        if bless {
            fs::write(&path, &got).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            blessed.push(kind.to_string());
        } else {
            let want = want.unwrap_or_default();
            errors.push(format!(
                "[{kind}] differs (- expected, + actual):\n{}",
                diff(&String::from_utf8_lossy(&want), &String::from_utf8_lossy(&got))
            ));
        }
    }
    if errors.is_empty() {
        Ok(blessed)
    } else {
        Err(errors.join("\n"))
    }
}

/// A line diff (longest common subsequence) with three lines of context; a missing final
/// newline is shown as a marker line.
fn diff(want: &str, got: &str) -> String {
    fn lines(s: &str) -> Vec<String> {
        let mut v: Vec<String> = s.split_inclusive('\n').map(str::to_string).collect();
        if let Some(last) = v.last_mut()
            && !last.ends_with('\n')
        {
            last.push_str("⏎(no newline at end)\n");
        }
        v
    }
    let (a, b) = (lines(want), lines(got));
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut script: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            script.push((' ', &a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            script.push(('-', &a[i]));
            i += 1;
        } else {
            script.push(('+', &b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        script[k.saturating_sub(3)..(k + 4).min(script.len())]
            .iter()
            .any(|(t, _)| *t != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (tag, line)) in script.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            out.push(*tag);
            out.push(' ');
            out.push_str(line);
        } else {
            skipped = true;
        }
    }
    out
}

#[test]
fn golden_cases() {
    let bless = std::env::var("MESHCAP_BLESS").as_deref() == Ok("1");
    let root = golden_root();
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no cases under {}", root.display());
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        match check(dir, bless) {
            Ok(files) => {
                for f in files {
                    eprintln!("blessed golden/{name}/{f}");
                }
            }
            Err(e) => failures.push(format!("golden/{name}: {e}")),
        }
    }
    eprintln!(
        "golden: {} cases, {} failed{}",
        dirs.len(),
        failures.len(),
        if bless { " (MESHCAP_BLESS=1)" } else { "" }
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn runner_parses_args_env_and_masks_times() {
    assert_eq!(parse_args("render\n-b\n\n-x\n"), ["render", "-b", "", "-x"]);
    assert_eq!(parse_args("render"), ["render"]);
    assert!(parse_args("").is_empty());
    assert_eq!(
        parse_env("# c\n\nA=1\nB=\nC=x=y\n").unwrap(),
        [
            ("A".into(), "1".into()),
            ("B".into(), "".into()),
            ("C".into(), "x=y".into())
        ]
    );
    assert!(parse_env("NOEQUALS\n").is_err());
    assert_eq!(
        mask_times("2026-08-22T15:00:18.123456Z\twarn\tx é 2026-08-22T15:00:18Z\n"),
        "<time>\twarn\tx é 2026-08-22T15:00:18Z\n"
    );
    let d = diff("a\nb\nc\n", "a\nB\nc");
    assert!(
        d.contains("- b\n") && d.contains("+ B\n") && d.contains("no newline"),
        "{d}"
    );
}
