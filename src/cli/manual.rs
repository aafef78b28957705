//! Shell completions (clap_complete) and man pages (clap_mangen), generated from the clap
//! definition in [`crate::cli`], so they always describe the flags this binary accepts. Pure:
//! each returns the text; `app` prints it.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionShell, environment};
use crate::error::{Error, Result};

const BIN: &str = "meshcap";

/// The completion script for `shell`.
pub(crate) fn completions(shell: CompletionShell) -> Vec<u8> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut out);
    out
}

/// The man page of meshcap (`None`) or of one of its commands, `meshcap-<command>(1)`.
pub(crate) fn man_page(command: Option<&str>) -> Result<Vec<u8>> {
    let mut cmd = Cli::command();
    // Resolves display names (meshcap-render) and propagates the global log flags.
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => {
            let commands: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
            match cmd.find_subcommand(name) {
                Some(sub) => sub.clone(),
                None => {
                    let why = format!("expected a meshcap command: {}", commands.join(", "));
                    return Err(Error::invalid("<COMMAND>", name, why));
                }
            }
        }
    };
    let reads_env = command.is_none_or(|name| PLANNING.contains(&name));
    // The long help's environment table becomes a real ENVIRONMENT section below; EXTRA keeps
    // only the examples.
    let page = page.after_long_help(None::<&str>);
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .map_err(|e| Error::system("cannot render the man page", e))?;
    if reads_env {
        out = with_environment(out);
    }
    Ok(out)
}

/// The commands that read the environment (they plan rules).
const PLANNING: [&str; 5] = ["istio-iptables", "istio-clean-iptables", "render", "trace", "check"];

/// `page` with the ENVIRONMENT section before VERSION (or at the end).
fn with_environment(page: Vec<u8>) -> Vec<u8> {
    let section = environment::roff();
    let page = String::from_utf8(page).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    let text = match page.find("\n.SH VERSION") {
        Some(at) => format!("{}\n{section}{}", &page[..at], &page[at + 1..]),
        None if page.ends_with('\n') => format!("{page}{section}"),
        None => format!("{page}\n{section}"),
    };
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn every_shell_completes_the_istio_flags_and_commands() {
        for shell in [CompletionShell::Bash, CompletionShell::Zsh, CompletionShell::Fish] {
            let script = text(completions(shell));
            for word in [
                "istio-inbound-ports",
                "istio-iptables",
                "render",
                "completions",
                "log_output_level",
            ] {
                assert!(script.contains(word), "{shell:?} completion lacks {word}");
            }
        }
    }

    #[test]
    fn completions_offer_the_values_of_the_mode_and_the_variant() {
        // Values, not file names: each shell's spelling of a fixed list.
        let bash = text(completions(CompletionShell::Bash));
        assert!(bash.contains(r#"compgen -W "REDIRECT TPROXY""#), "{bash}");
        assert!(bash.contains(r#"compgen -W "legacy nft""#), "{bash}");
        let zsh = text(completions(CompletionShell::Zsh));
        assert!(zsh.contains(":MODE:(REDIRECT TPROXY)'"), "{zsh}");
        assert!(zsh.contains(":VARIANT:(legacy nft)'"), "{zsh}");
        let fish = text(completions(CompletionShell::Fish));
        let line = |flag: &str| fish.lines().find(|l| l.contains(flag)).unwrap_or_default().to_string();
        assert!(
            line("-l istio-inbound-interception-mode").contains(r#"-f -a "REDIRECT"#),
            "{fish}"
        );
        assert!(line("-l force-iptables-binary").contains(r#"-f -a "legacy"#), "{fish}");
    }

    #[test]
    fn completion_scripts_name_their_shell() {
        assert!(text(completions(CompletionShell::Bash)).contains("complete -F _meshcap"));
        assert!(text(completions(CompletionShell::Zsh)).starts_with("#compdef meshcap"));
        assert!(text(completions(CompletionShell::Fish)).contains("complete -c meshcap"));
    }

    #[test]
    fn man_page_of_meshcap_and_of_a_command() {
        let main = text(man_page(None).unwrap());
        assert!(main.contains(".TH meshcap 1"), "{main}");
        assert!(main.contains(".SH NAME"));
        assert!(main.contains("istio\\-inbound\\-ports"));
        let render = text(man_page(Some("render")).unwrap());
        assert!(render.contains(".TH meshcap-render 1"), "{render}");
        assert!(render.contains("\\-\\-family"));
    }

    #[test]
    fn man_pages_of_planning_commands_have_an_environment_section() {
        for command in [None, Some("istio-iptables"), Some("render"), Some("check")] {
            let page = text(man_page(command).unwrap());
            let env = page.find(".SH ENVIRONMENT").expect("an ENVIRONMENT section");
            assert!(page[env..].contains("ISTIO_OUTBOUND_OWNER_GROUPS"), "{command:?}");
            // Once, and not also as plain text in EXTRA.
            assert_eq!(page.matches("MESHCAP_XTABLES_WAIT").count(), 1, "{command:?}");
            if let Some(version) = page.find(".SH VERSION") {
                assert!(env < version, "{command:?}");
            }
        }
        let completions = text(man_page(Some("completions")).unwrap());
        assert!(!completions.contains(".SH ENVIRONMENT"));
    }

    #[test]
    fn man_page_of_an_unknown_command_is_an_error_naming_it() {
        let e = man_page(Some("nope")).unwrap_err().to_string();
        assert!(e.contains("'nope'") && e.contains("render"), "{e}");
    }
}
