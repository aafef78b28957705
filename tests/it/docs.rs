//! The documentation the binary prints: `--version`, `--help`, `completions <shell>`, `man`.

use std::process::{Command, Stdio};

use crate::support::{Meshcap, Run, TempDir};

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
