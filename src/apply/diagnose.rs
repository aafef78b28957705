//! What meshcap can add to a failed `iptables-restore`: the input line the tool names (its
//! text, and the targets and matches it needs, so a missing kernel module or iptables extension
//! such as `TPROXY` is named), a refused table commit, and a held xtables lock.
//!
//! Pure functions over the tool's stderr and the input meshcap wrote; the note is appended to
//! the tool's own message, never replaces it.

use crate::error::quote;
use crate::sys::exec::ExecError;

/// Targets that are verdicts, not extensions.
const VERDICTS: [&str; 4] = ["ACCEPT", "DROP", "RETURN", "QUEUE"];

/// `err` with meshcap's notes appended to the tool's stderr (only for [`ExecError::Failed`]).
pub(crate) fn annotate(err: ExecError, input: &str, wait_secs: u32) -> ExecError {
    match err {
        ExecError::Failed { cmd, code, stderr } => {
            let notes = notes(input, &stderr, wait_secs);
            let stderr = if notes.is_empty() {
                stderr
            } else {
                format!("{}\n{}", stderr.trim_end(), notes.join("\n"))
            };
            ExecError::Failed { cmd, code, stderr }
        }
        other => other,
    }
}

/// The notes for a restore that failed with `stderr` on `input`.
pub(crate) fn notes(input: &str, stderr: &str, wait_secs: u32) -> Vec<String> {
    let mut out = Vec::new();
    if stderr.contains("xtables lock") {
        out.push(format!(
            "another process holds the xtables lock; meshcap waited {wait_secs}s for it (MESHCAP_XTABLES_WAIT sets the wait)"
        ));
    }
    if stderr.contains("can't open lock file") {
        out.push(
            "the xtables lock file cannot be opened (a read-only /run?); create it beforehand, point XTABLES_LOCKFILE at a writable path, or use the nft variant".to_string(),
        );
    }
    let missing = [
        "No chain/target/match by that name",
        "Couldn't load",
        "does not exist",
        "No such file or directory",
        "Extension",
    ]
    .iter()
    .any(|p| stderr.contains(p));
    let Some(n) = failed_line(stderr) else {
        return out;
    };
    let lines: Vec<&str> = input.lines().collect();
    let Some(line) = n.checked_sub(1).and_then(|i| lines.get(i)) else {
        return out;
    };
    let chains = declared_chains(input);
    let (what, needs) = if line.trim() == "COMMIT" {
        let start = lines[..n - 1].iter().rposition(|l| l.starts_with('*')).unwrap_or(0);
        let table = lines
            .get(start)
            .and_then(|l| l.strip_prefix('*'))
            .unwrap_or("?")
            .to_string();
        let needs = extensions(&lines[start..n - 1], &chains);
        (
            format!(
                "the kernel refused the {} table at its COMMIT (line {n})",
                quote(&table)
            ),
            needs,
        )
    } else {
        (
            format!("line {n} of the input: {}", quote(line)),
            extensions(&lines[n - 1..n], &chains),
        )
    };
    out.push(what);
    if missing && !needs.is_empty() {
        out.push(format!(
            "it needs {}: the kernel module or iptables extension for one of them is probably missing",
            needs.join(", ")
        ));
    }
    out
}

/// The input line number a restore error names (`line N failed`, `Error occurred at line: N`).
pub(crate) fn failed_line(stderr: &str) -> Option<usize> {
    let mut rest = stderr;
    while let Some(i) = rest.find("line") {
        let after = rest[i + 4..].trim_start_matches([':', ' ']);
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            return digits.parse().ok();
        }
        rest = &rest[i + 4..];
    }
    None
}

/// User chains the input declares (`:NAME - [0:0]`): a jump to one is not an extension.
fn declared_chains(input: &str) -> Vec<&str> {
    input
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// The targets (`target X`) and matches (`match X`) the rules of `lines` use, in order, once.
fn extensions(lines: &[&str], chains: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in lines.iter().filter(|l| l.starts_with("-A") || l.starts_with("-I")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            let item = match pair {
                ["-j" | "--jump", t] if !VERDICTS.contains(t) && !chains.contains(t) => format!("target {t}"),
                ["-m" | "--match", m] => format!("match {m}"),
                _ => continue,
            };
            if !out.contains(&item) {
                out.push(item);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUT: &str = "*mangle\n:ISTIO_DIVERT - [0:0]\n:ISTIO_TPROXY - [0:0]\n-A PREROUTING -p tcp -j ISTIO_DIVERT\n-A ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff\n-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 0x539/0xffffffff --on-port 15006\n-A ISTIO_DIVERT -j ACCEPT\nCOMMIT\n";

    #[test]
    fn a_missing_target_is_named_with_its_line() {
        let n = notes(
            INPUT,
            "iptables-restore: line 6 failed: No chain/target/match by that name.",
            30,
        );
        assert_eq!(
            n,
            [
                "line 6 of the input: '-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 0x539/0xffffffff --on-port 15006'",
                "it needs target TPROXY: the kernel module or iptables extension for one of them is probably missing",
            ]
        );
        let n = notes(
            INPUT,
            "iptables-restore v1.8.9 (legacy): Couldn't load target `TPROXY':No such file or directory\n\nError occurred at line: 6\n",
            30,
        );
        assert_eq!(n.len(), 2, "{n:?}");
        assert!(n[1].contains("target TPROXY"), "{n:?}");
    }

    #[test]
    fn a_refused_commit_names_the_table_and_what_it_uses() {
        let n = notes(INPUT, "iptables-restore: line 8 failed", 30);
        assert_eq!(n, ["the kernel refused the 'mangle' table at its COMMIT (line 8)"]);
        let n = notes(INPUT, "iptables-restore: line 8 failed: No such file or directory", 30);
        assert_eq!(
            n[1],
            "it needs target MARK, target TPROXY: the kernel module or iptables extension for one of them is probably missing"
        );
    }

    #[test]
    fn the_lock_and_unknown_messages() {
        let n = notes(
            INPUT,
            "Another app is currently holding the xtables lock. Stopped waiting after 2s.",
            2,
        );
        assert_eq!(
            n,
            ["another process holds the xtables lock; meshcap waited 2s for it (MESHCAP_XTABLES_WAIT sets the wait)"]
        );
        let n = notes(
            INPUT,
            "Fatal: can't open lock file /run/xtables.lock: Read-only file system",
            30,
        );
        assert!(n[0].contains("read-only /run"), "{n:?}");
        assert!(notes(INPUT, "something else", 30).is_empty());
        assert!(notes(INPUT, "line 99 failed", 30).is_empty(), "a line past the input");
        assert!(notes(INPUT, "line 0 failed", 30).is_empty());
        assert_eq!(failed_line("Error occurred at line: 12\n"), Some(12));
        assert_eq!(failed_line("no number on this line"), None);
    }

    #[test]
    fn annotate_appends_to_the_tool_message() {
        let e = ExecError::Failed {
            cmd: "iptables-restore --noflush".into(),
            code: 1,
            stderr: "iptables-restore: line 6 failed\n".into(),
        };
        let shown = annotate(e, INPUT, 30).to_string();
        assert!(
            shown.starts_with("iptables-restore --noflush failed with exit status 1: iptables-restore: line 6 failed; line 6 of the input: '-A ISTIO_TPROXY"),
            "{shown}"
        );
        let other = ExecError::NotFound { cmd: "x".into() };
        assert_eq!(annotate(other.clone(), INPUT, 30), other);
    }
}
