//! The documentation the binary prints: `--version`, `--help`, `completions <shell>`, `man`.

use std::process::{Command, Stdio};

use crate::support::{Meshcap, Run, TempDir, meshcap_bin};

fn run(args: &[&str]) -> Run {
    Meshcap::new().args(args).run()
}

/// stdout of `meshcap ARGS`, which must succeed without writing to stderr.
fn stdout_of(args: &[&str]) -> String {
    let out = run(args);
    out.success().stderr_is("");
    out.stdout
}

#[test]
fn version_names_the_package_version() {
    assert_eq!(
        stdout_of(&["--version"]),
        concat!("meshcap ", env!("CARGO_PKG_VERSION"), "\n")
    );
}

#[test]
fn help_lists_the_commands_with_examples() {
    let help = stdout_of(&["--help"]);
    for word in [
        "istio-iptables",
        "render",
        "completions",
        "man",
        "Examples:",
        "Exit codes:",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    let completions = stdout_of(&["completions", "--help"]);
    assert!(completions.contains("meshcap completions bash >"), "{completions}");
    let man = stdout_of(&["man", "--help"]);
    assert!(man.contains("meshcap man >"), "{man}");
}

#[test]
fn bash_completion_is_valid_bash_and_completes_istio_flags() {
    let script = stdout_of(&["completions", "bash"]);
    assert!(script.contains("--istio-inbound-ports"));
    let dir = TempDir::new("completion");
    let path = dir.write("completion.bash", &script);
    // Source the script and ask its completion function what `meshcap render --istio-inb<TAB>`
    // offers, as bash's programmable completion would.
    const DRIVER: &str = r#"
set -e
source "$1"
COMP_WORDS=(meshcap render --istio-inb)
COMP_CWORD=2
COMP_LINE="meshcap render --istio-inb"
COMP_POINT=${#COMP_LINE}
_meshcap meshcap --istio-inb render
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", DRIVER, "driver"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bash: {stderr}");
    let offered: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let mut expected = vec![
        "--istio-inbound-interception-mode",
        "--istio-inbound-ports",
        "--istio-inbound-tproxy-mark",
        "--istio-inbound-tproxy-route-table",
    ];
    expected.sort_unstable();
    let mut got = offered.clone();
    got.sort_unstable();
    assert_eq!(got, expected, "offered: {offered:?}");
}

#[test]
fn zsh_and_fish_completions_are_for_meshcap() {
    let zsh = stdout_of(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef meshcap"), "{zsh}");
    assert!(zsh.contains("--istio-inbound-ports"));
    let fish = stdout_of(&["completions", "fish"]);
    assert!(fish.contains("complete -c meshcap"));
    assert!(fish.contains("-l istio-inbound-ports"));
}

#[test]
fn an_unsupported_shell_is_a_usage_error() {
    run(&["completions", "tcsh"])
        .expect_exit(2)
        .stderr_contains("'tcsh'")
        .stderr_contains("bash")
        .stdout_is("");
}

#[test]
fn man_page_has_the_standard_sections() {
    let page = stdout_of(&["man"]);
    for section in [
        ".TH meshcap 1",
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH SUBCOMMANDS",
    ] {
        assert!(page.contains(section), "man page lacks {section}");
    }
    assert!(page.contains("meshcap\\-render(1)"), "subcommands refer to their pages");
    let render = stdout_of(&["man", "render"]);
    assert!(render.contains(".TH meshcap-render 1"));
    assert!(render.contains("\\-\\-family"));
}

#[test]
fn man_page_formats_without_warnings() {
    let Ok(status) = Command::new("groff").arg("--version").stdout(Stdio::null()).status() else {
        eprintln!("note: skipping: groff is not installed");
        return;
    };
    assert!(status.success());
    let dir = TempDir::new("man");
    for args in [vec!["man"], vec!["man", "render"]] {
        let path = dir.write("meshcap.1", &stdout_of(&args));
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .expect("run groff");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn man_page_of_an_unknown_command_fails_naming_it() {
    let out = run(&["man", "nope"]);
    out.expect_exit(1).stdout_is("");
    assert!(
        out.stderr.starts_with("meshcap: invalid value 'nope' for '<COMMAND>'"),
        "{out}"
    );
}

// ---- The ENVIRONMENT section lists every variable the code reads ----

/// `src/**/*.rs` without the `#[cfg(test)] mod … { … }` blocks (rustfmt closes a top-level
/// module with a `}` alone in column 0), as (path, text).
fn sources_without_tests() -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with("tests.rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read source");
            let mut kept = Vec::new();
            let (mut skipping, mut after_cfg) = (false, false);
            for line in text.lines() {
                if skipping {
                    skipping = line != "}";
                    continue;
                }
                if line.trim() == "#[cfg(test)]" {
                    after_cfg = true;
                    continue;
                }
                if std::mem::take(&mut after_cfg) && line.starts_with("mod ") {
                    skipping = line.ends_with('{');
                    continue;
                }
                kept.push(line);
            }
            let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().into_owned();
            (rel, kept.join("\n"))
        })
        .collect()
}

/// The string literals of `text` in upper case (`UPPER_SNAKE`), each with its byte offset.
fn upper_snake_literals(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut base = 0;
    while let Some(open) = rest.find('"') {
        let after = &rest[open + 1..];
        let len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let word = &after[..len];
        if after[len..].starts_with('"')
            && len > 1
            && word.starts_with(|c: char| c.is_ascii_uppercase())
            && !word.ends_with('_')
        {
            out.push((base + open + 1, word));
        }
        base += open + 1;
        rest = after;
    }
    out
}

/// Every environment variable the code reads: all names in `src/config/` (the module that
/// resolves flags and their variables: its only upper-case literals are variable names), and
/// the literal argument of every `env.get(` / `env_only(` / `std::env::var_os(` elsewhere.
fn variables_read() -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for (path, text) in sources_without_tests() {
        for (at, name) in upper_snake_literals(&text) {
            let before = &text[..at - 1];
            let direct = ["env.get(", "env_only(", "env::var_os(", "env::var("]
                .iter()
                .any(|call| before.trim_end().ends_with(call));
            // In `config`: a name with an underscore, or the variable right after a flag's long
            // name (`flag_bool(&f.reconcile, "reconcile", "RECONCILE", None)`; `"UID"` and
            // `"TPROXY"` there are not variables).
            let after_flag = || {
                let b = before.trim_end();
                let b = b.strip_suffix("Some(").unwrap_or(b).trim_end();
                let Some(b) = b.strip_suffix(',').map(str::trim_end) else {
                    return false;
                };
                let Some(b) = b.strip_suffix('"') else { return false };
                let long = &b[b.rfind('"').map_or(0, |i| i + 1)..];
                !long.is_empty()
                    && long
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '-' || c.is_ascii_digit())
            };
            let in_config = path.starts_with("src/config/") && (name.contains('_') || after_flag());
            if in_config || direct {
                names.insert(name.to_string());
            }
        }
        // `PATH` has no underscore: found by its call.
        if text.contains("env::var_os(\"PATH\")") {
            names.insert("PATH".to_string());
        }
    }
    names
}

/// The names in the ENVIRONMENT section of `--help` (two-space indent, then the name).
fn environment_of_help(help: &str) -> Vec<String> {
    let start = help.find("\nEnvironment").expect("--help has an Environment section");
    help[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn help_and_man_page_list_every_environment_variable_the_code_reads() {
    let read = variables_read();
    // The scan itself works: it finds variables of each kind of read.
    for known in [
        "ISTIO_OUTBOUND_OWNER_GROUPS",
        "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",
        "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
        "MESHCAP_XTABLES_WAIT",
        "DRY_RUN_FILE_PATH",
        "ENVOY_USER",
        "ENABLE_INBOUND_IPV6",
        "ISTIO_META_DNS_CAPTURE",
        "RECONCILE",
        "PATH",
    ] {
        assert!(read.contains(known), "the source scan missed {known}: {read:?}");
    }
    for args in [&["--help"][..], &["istio-iptables", "--help"]] {
        let listed = environment_of_help(&stdout_of(args));
        for name in &read {
            assert!(listed.contains(name), "`meshcap {args:?}` does not list {name}");
        }
        for name in &listed {
            assert!(
                read.contains(name),
                "`meshcap {args:?}` lists {name}, which the code does not read"
            );
        }
    }
    for args in [&["man"][..], &["man", "istio-iptables"], &["man", "render"]] {
        let page = stdout_of(args);
        let section = &page[page.find(".SH ENVIRONMENT").expect("an ENVIRONMENT section")..];
        let section = &section[..section[1..].find("\n.SH").map_or(section.len(), |i| i + 1)];
        for name in &read {
            assert!(
                section.contains(&format!("\\fB{name}\\fR")),
                "`meshcap {args:?}` does not list {name}"
            );
        }
    }
}

// ---- The README's examples and the golden-diff recipe run as written ----

/// Runs `script` with bash in `dir`, in an environment of `PATH` only (the built meshcap
/// first), as a reader would paste it into a shell on their laptop.
fn bash_in(dir: &std::path::Path, script: &str) -> std::process::Output {
    let bin_dir = meshcap_bin().parent().expect("the binary's directory").to_path_buf();
    let mut path = std::ffi::OsString::from(bin_dir.as_os_str());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-c", script])
        .env_clear()
        .env("PATH", path)
        .current_dir(dir);
    crate::support::cmd::run_bounded(cmd, None, std::time::Duration::from_secs(60)).expect("run bash")
}

/// A documented command and the output the page shows for it.
struct Example {
    command: String,
    /// The exit code the page states (`# exits N` at the end of the command), else 0.
    exit: i32,
    stdout: String,
}

/// The `$ command` lines of a page's ```console blocks, each with the lines shown under it.
fn console_examples(page: &str) -> Vec<Example> {
    let mut examples: Vec<Example> = Vec::new();
    let mut in_block = false;
    for line in page.lines() {
        if !in_block {
            in_block = line == "```console";
            continue;
        }
        if line == "```" {
            in_block = false;
        } else if let Some(command) = line.strip_prefix("$ ") {
            let exit = command.rsplit_once("# exits ").map_or(0, |(_, rest)| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap_or("")
                    .parse()
                    .expect("# exits N")
            });
            examples.push(Example {
                command: command.to_string(),
                exit,
                stdout: String::new(),
            });
        } else {
            let last = examples.last_mut().expect("output before the first command");
            last.stdout.push_str(line);
            last.stdout.push('\n');
        }
    }
    examples
}

#[test]
fn readme_examples_print_what_the_readme_shows() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let examples = console_examples(&readme);
    let commands: Vec<&str> = examples
        .iter()
        .map(|e| e.command.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    for needed in ["render", "trace", "check"] {
        assert!(
            commands.contains(&needed),
            "the README has no `meshcap {needed}` example: {commands:?}"
        );
    }
    // One directory for all, in order: a later example may read what an earlier one wrote.
    let dir = TempDir::new("readme");
    for e in &examples {
        assert!(
            e.command.starts_with("meshcap "),
            "not a meshcap example: {}",
            e.command
        );
        let out = bash_in(dir.path(), &e.command);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(e.exit), "{}\nstderr: {stderr}", e.command);
        assert_eq!(stderr, "", "{}", e.command);
        assert_eq!(stdout, e.stdout, "README.md shows another output for: {}", e.command);
    }
}

/// The first ```sh block after the line `marker` of `page`.
fn sh_block_after<'a>(page: &'a str, marker: &str) -> &'a str {
    let from = page.find(marker).expect("the marker of the tested block");
    let rest = &page[from..];
    let start = rest.find("```sh\n").expect("a ```sh block after the marker") + "```sh\n".len();
    let len = rest[start..].find("\n```").expect("the end of the block") + 1;
    &rest[start..start + len]
}

/// An `iptables-save` of a namespace after `meshcap istio-iptables -p 15001 -z 15006 -u 1337 -m
/// REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020` (iptables 1.8.9, nf_tables), as saved.
const POD_SAVE_V4: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables) on Mon Dec  7 16:45:13 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
# Completed on Mon Dec  7 16:45:13 2026
";

#[test]
fn golden_diff_recipe_passes_when_nothing_changed_and_fails_when_rules_change() {
    if Command::new("git")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("note: skipping: git is not installed");
        return;
    }
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/golden-diff.md"))
        .expect("docs/golden-diff.md");
    let script = sh_block_after(&page, "<!-- tests/it/docs.rs runs the block below");
    let dir = TempDir::new("golden-diff");
    std::fs::create_dir(dir.join("rules")).expect("mkdir rules");
    dir.write("rules/resolv.conf", "nameserver 10.96.0.10\n");
    dir.write("rules/pod.v4", POD_SAVE_V4);
    dir.write("ci.sh", script);
    let run = |what: &str| {
        let out = bash_in(dir.path(), what);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let commit = "git add -A && git -c user.name=docs -c user.email=docs@example.invalid commit -qm rules";
    let (code, text) = run(&format!("git init -q && {commit}"));
    assert_eq!(code, Some(0), "{text}");

    // First run: the rendered files are new, so the diff fails and shows them.
    let (code, text) = run("bash ci.sh");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("+++ b/rules/sidecar.v4") && text.contains("+-A ISTIO_OUTPUT -j ISTIO_REDIRECT"),
        "{text}"
    );
    for file in ["sidecar", "tproxy", "dns"]
        .iter()
        .flat_map(|n| [format!("{n}.v4"), format!("{n}.v6")])
    {
        let text = std::fs::read_to_string(dir.join(&format!("rules/{file}"))).expect("a rendered file");
        assert!(
            text.starts_with("* ") && text.ends_with("COMMIT\n"),
            "rules/{file}: {text}"
        );
    }
    let (code, text) = run(commit);
    assert_eq!(code, Some(0), "{text}");

    // Committed, nothing changed: the job passes, and the saved pod dump is in sync.
    let (code, text) = run("bash ci.sh");
    assert_eq!((code, text.as_str()), (Some(0), "# IPv4: in sync\n"));

    // A changed flag changes the rules: the diff names the rule and fails the job.
    let changed = script.replacen("-d 15090,15021,15020)", "-d 15090,15021)", 1);
    assert_ne!(changed, script);
    dir.write("ci.sh", &changed);
    let (code, text) = run("bash ci.sh");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("--- a/rules/sidecar.v4")
            && text.contains("\n--A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN\n"),
        "{text}"
    );
    run("git checkout -q -- rules/");

    // A newly saved (and committed) dump with two rules swapped: the check fails, naming the
    // rule out of place.
    dir.write("ci.sh", script);
    let swapped = POD_SAVE_V4.replace(
        "--dport 15090 -j RETURN\n-A ISTIO_INBOUND -p tcp -m tcp --dport 15021",
        "--dport 15021 -j RETURN\n-A ISTIO_INBOUND -p tcp -m tcp --dport 15090",
    );
    assert_ne!(swapped, POD_SAVE_V4);
    dir.write("rules/pod.v4", &swapped);
    let (code, text) = run(commit);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run("bash ci.sh");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.starts_with("# IPv4: 0 missing, 0 unexpected, 1 misordered\n"),
        "{text}"
    );
}

/// The relative links of a Markdown page: the targets of `](target)`, without `#anchor`.
fn relative_links(page: &str) -> Vec<&str> {
    page.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|target| target.split('#').next().unwrap_or_default())
        .filter(|t| !t.is_empty() && !t.contains("://") && !t.starts_with("mailto:"))
        .collect()
}

#[test]
fn links_of_the_readme_and_the_docs_resolve() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![
        root.join("README.md"),
        root.join("deploy/README.md"),
        root.join("golden/README.md"),
    ];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).expect("a page");
        let dir = page.parent().expect("the page's directory");
        for target in relative_links(&text) {
            if !dir.join(target).exists() {
                broken.push(format!(
                    "{}: {target}",
                    page.strip_prefix(root).unwrap_or(page).display()
                ));
            }
        }
    }
    assert!(pages.len() > 10, "{pages:?}");
    assert!(broken.is_empty(), "links to nothing:\n{}", broken.join("\n"));
}
