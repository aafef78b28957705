//! The commands: parse argv, build config and plan, run the chosen command, map the outcome to
//! an exit code. Errors are printed once, here, as `meshcap: <error>`.

use std::ffi::OsString;
use std::io::Write;

use crate::cli::manual as docs;
use crate::cli::{CaptureFlags, CheckArgs, Cli, Command, FamilyArg, Format, OutputFormat, RenderArgs, TraceArgs};
use crate::config::{Config, HostFiles};
use crate::error::{Convention, Error, Result};
use crate::iptables::parse;
use crate::logging::LogSettings;
use crate::model::Backend;
use crate::plan;
use crate::sys::host::Env;
use crate::values::Family;
use crate::{check, trace};
use crate::{iptables, json, nft};

/// Runs meshcap with `args` (`argv[0]` first) and `env`; returns the process exit code.
pub fn main(args: impl IntoIterator<Item = OsString>, env: Env) -> i32 {
    let (convention, outcome) = outcome(args.into_iter().collect(), &env);
    exit_code(convention, outcome, &mut std::io::stderr())
}

/// The exit code of an outcome, reporting its error (if any) on `stderr`.
fn exit_code(convention: Convention, outcome: Result<i32>, stderr: &mut dyn Write) -> i32 {
    match outcome {
        Ok(code) => code,
        Err(e) => {
            report(&e, stderr);
            e.code(convention)
        }
    }
}

/// The one print site of errors: `meshcap: <error>` on `stderr`; clap's usage errors in clap's
/// own words (and colours on a terminal); a failed `--run-validation` as the error-level log
/// lines Istio writes.
fn report(e: &Error, stderr: &mut dyn Write) {
    tracing::debug!("{e:?}");
    match e {
        Error::Usage(clap) => {
            let _ = clap.print();
        }
        Error::Validation { failed, summary } => {
            for line in failed {
                tracing::error!("{line}");
            }
            tracing::error!("{summary}");
            tracing::error!("{}", crate::probe::FAILURE_MESSAGE);
        }
        e => {
            let _ = writeln!(stderr, "meshcap: {e}");
        }
    }
}

/// What the command line asks, done: an exit code, or an error with the exit-code convention
/// of the command that failed (`check`'s own, once it runs).
fn outcome(mut args: Vec<OsString>, env: &Env) -> (Convention, Result<i32>) {
    let istio = |r| (Convention::Istio, r);
    drop_pasted_istio_iptables(&mut args);
    if let Some(e) = non_utf8_argument(&args) {
        return istio(Err(e));
    }
    let cli = match crate::speed::parse_args::<Cli>(args) {
        Ok(cli) => cli,
        Err(e) => {
            if let Some(invalid) = invalid_value(&e) {
                return istio(Err(invalid));
            }
            if e.use_stderr() {
                return istio(Err(Error::Usage(Box::new(e))));
            }
            // --help, --version: clap prints them to stdout; not an error.
            let _ = e.print();
            return istio(Ok(e.exit_code()));
        }
    };
    if let Err(e) = LogSettings::from_flags(&cli.log).map(LogSettings::install) {
        return istio(Err(e));
    }
    if cli.command.is_some() && cli.capture != CaptureFlags::default() {
        return istio(Err(Error::FlagsBeforeSubcommand));
    }
    run(cli.command, env)
}

/// A flag value clap itself refused (a value outside a fixed set such as `--family v5`, or a
/// missing value) as meshcap's one-line invalid-value error. Other clap errors (unknown flags,
/// stray arguments, bad positional values) stay usage errors with clap's own text and exit 2.
fn invalid_value(e: &clap::Error) -> Option<Error> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::InvalidValue {
        return None;
    }
    let flag = match e.get(ContextKind::InvalidArg)? {
        ContextValue::String(s) => s.split([' ', '=']).next()?.to_string(),
        _ => return None,
    };
    // Only flags; a bad positional value (`completions tcsh`) stays a usage error.
    if !flag.starts_with('-') {
        return None;
    }
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let why = match e.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(valid)) if !valid.is_empty() => format!("expected one of: {}", valid.join(", ")),
        _ if value.is_empty() => "a value is required".to_string(),
        _ => "not an accepted value".to_string(),
    };
    Some(Error::invalid(flag, value, why))
}

/// The first argument that is not UTF-8, as an invalid value naming its flag (clap would only
/// say that some argument is not UTF-8, as a usage error).
fn non_utf8_argument(args: &[OsString]) -> Option<Error> {
    use std::os::unix::ffi::OsStrExt;
    let (i, bytes) = args
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, a)| a.to_str().is_none())
        .map(|(i, a)| (i, a.as_bytes()))?;
    let why = "not valid UTF-8";
    if bytes.starts_with(b"-")
        && let Some(eq) = bytes.iter().position(|&b| b == b'=')
    {
        let flag = String::from_utf8_lossy(&bytes[..eq]);
        return Some(Error::invalid(flag, String::from_utf8_lossy(&bytes[eq + 1..]), why));
    }
    let flag = args[i - 1]
        .to_str()
        .filter(|p| i > 1 && p.starts_with('-'))
        .unwrap_or("an argument");
    Some(Error::invalid(flag, String::from_utf8_lossy(bytes), why))
}

fn run(command: Option<Command>, env: &Env) -> (Convention, Result<i32>) {
    let result = match command {
        Some(Command::Render(args)) => render_command(&args, env),
        Some(Command::Trace(args)) => trace_command(&args, env),
        Some(Command::Check(args)) => return (Convention::Check, check_command(&args, env)),
        Some(Command::IstioIptables(args)) => apply_command(&args.capture, env, false),
        Some(Command::IstioCleanIptables(args)) => apply_command(&args.capture, env, true),
        Some(Command::Completions(args)) => print_doc(&docs::completions(args.shell)),
        Some(Command::Man(args)) => docs::man_page(args.command.as_deref()).and_then(|page| print_doc(&page)),
        Some(Command::Audit(args)) => return (Convention::Check, audit_command(&args)),
        None => Err(Error::NoCommand),
    };
    (Convention::Istio, result)
}

/// The subcommands that plan rules without applying them: an injected istio-init argument list
/// (`istio-iptables -p 15001 …`) pasted after them keeps working.
const PREVIEW_COMMANDS: [&str; 3] = ["render", "trace", "check"];

/// Removes the `istio-iptables` word that directly follows `render`, `trace` or `check`, so
/// `meshcap render istio-iptables -p 15001 …` is `meshcap render -p 15001 …`. Only the
/// subcommand position counts: the words before it are logging flags (capture flags there are
/// refused), so a word that is the value of a logging flag (`--log_target render`) is skipped.
fn drop_pasted_istio_iptables(args: &mut Vec<OsString>) {
    let mut i = 1;
    while i < args.len() {
        let Some(word) = args[i].to_str() else { return };
        if word.starts_with('-') {
            // A logging flag given as `--flag value` (not `--flag=value`, not the boolean
            // `--log_as_json`) takes the next word.
            if !word.contains('=') && word != "--log_as_json" && word.starts_with("--") {
                i += 1;
            }
            i += 1;
            continue;
        }
        if PREVIEW_COMMANDS.contains(&word) && args.get(i + 1).and_then(|a| a.to_str()) == Some("istio-iptables") {
            args.remove(i + 1);
        }
        return;
    }
}

/// `render`'s checks of what would not load: user and group names against `--passwd`/`--group`
/// (or `MESHCAP_RENDER_PASSWD`/`MESHCAP_RENDER_GROUP`; an unknown name is then an error) or,
/// without them, this host's files (a warning: the rules are for a pod whose image may list
/// other accounts); too many owner groups for iptables (a warning: the text stays Istio's).
/// Reads only.
fn render_names(args: &RenderArgs, env: &Env, config: &Config) -> Result<()> {
    use crate::sys::host::{GROUP, Ids, PASSWD};
    if let Some(e) = crate::config::too_many_groups_for_iptables(config) {
        tracing::warn!("{e}; this text would not load");
    }
    let given = |flag: &Option<String>, var: Option<&str>| {
        flag.clone()
            .or_else(|| var.filter(|v| !v.is_empty()).map(str::to_string))
    };
    let passwd_given = given(&args.passwd, env.get("MESHCAP_RENDER_PASSWD"));
    let group_given = given(&args.group, env.get("MESHCAP_RENDER_GROUP"));
    let passwd = passwd_given.as_deref().unwrap_or(PASSWD);
    let group = group_given.as_deref().unwrap_or(GROUP);
    let ids = Ids::from_files(passwd, group)?;
    for (is_group, e) in crate::config::unresolved_names(config, &ids, passwd, group) {
        if (is_group && group_given.is_some()) || (!is_group && passwd_given.is_some()) {
            return Err(e);
        }
        tracing::warn!(
            "{e}: loading these rules fails where the name is unknown (give the pod image's files with --passwd/--group to check)"
        );
    }
    Ok(())
}

fn render_command(args: &RenderArgs, env: &Env) -> Result<i32> {
    let (config, plan) = plan::unchecked(&args.capture, args.ipv6.as_deref(), &args.resolv_conf, env)?;
    render_names(args, env, &config)?;
    let ignored = args.capture.apply_only_given();
    if !ignored.is_empty() {
        tracing::warn!(
            "render ignores {}: only the apply command (meshcap istio-iptables) uses them; render prints the rules and touches nothing",
            ignored.join(", ")
        );
    }
    if args.family == Some(FamilyArg::V6) && !plan.ipv6 && !config.native_nftables {
        tracing::warn!(
            "IPv6 is off, so there are no IPv6 rules to print: add --ipv6 (or ENABLE_INBOUND_IPV6=true) to plan them"
        );
    }
    if config.native_nftables {
        if args.format == Format::Json {
            return Err(Error::invalid(
                "--format",
                "json",
                "the JSON document describes the iptables rules of the plan; drop --native-nftables to get it",
            ));
        }
        if let Some(family) = args.family {
            return Err(Error::invalid(
                "--family",
                family.name(),
                "the nftables transaction is one inet ruleset for both families; drop --family with --native-nftables",
            ));
        }
        plan.validate(Backend::Nft)
            .map_err(|(family, e)| Error::inconsistent(family, e))?;
        let tx = nft::lower::transaction(&plan).map_err(|e| Error::inconsistent("nftables", e))?;
        let text = tx.text();
        crate::speed::keep_until_exit((plan, tx));
        return write_stdout(&text).map(|()| 0);
    }
    match args.format {
        Format::Iptables => {
            // Each family's ruleset is built once (moved out of the plan), checked, rendered.
            let rulesets = plan.into_rulesets();
            for rs in &rulesets {
                rs.validate_for(Backend::Iptables)
                    .map_err(|e| Error::inconsistent(rs.family, e))?;
            }
            let payload = |family: Family| {
                rulesets
                    .iter()
                    .find(|rs| rs.family == family)
                    .map(iptables::render::restore_payload)
                    .unwrap_or_default()
            };
            match args.family {
                Some(FamilyArg::V4) => write_stdout(&payload(Family::V4))?,
                Some(FamilyArg::V6) => write_stdout(&payload(Family::V6))?,
                None => {
                    // One family at a time: the text in memory is one payload, not both.
                    for rs in &rulesets {
                        let mut out = format!("# {}\n", rs.family.name());
                        iptables::render::write_restore_payload(&mut out, rs);
                        write_stdout(&out)?;
                    }
                }
            }
            crate::speed::keep_until_exit(rulesets);
        }
        Format::Json => {
            plan.validate(Backend::Iptables)
                .map_err(|(family, e)| Error::inconsistent(family, e))?;
            let families = match args.family {
                Some(FamilyArg::V4) => vec![Family::V4],
                Some(FamilyArg::V6) => vec![Family::V6],
                None => plan.families(),
            };
            // Streamed: written while it is produced (json::write), never one big string.
            let mut stdout = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
            json::write(&plan, &families, &mut stdout)
                .and_then(|()| stdout.flush())
                .map_err(Error::Stdout)?;
        }
    }
    Ok(0)
}

fn write_stdout(out: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(Error::Stdout)
}

/// `meshcap trace`: one packet through the planned rules (or a dump), step by step.
fn trace_command(args: &TraceArgs, env: &Env) -> Result<i32> {
    let packet = trace::Packet::parse(&args.packet.join(" "))?;
    let family = packet.family();
    let mut notes = Vec::new();
    let nf = match &args.from_save {
        Some(_) if Config::native_nftables(&args.capture, env)? => {
            return Err(Error::invalid(
                "--from-save",
                args.from_save.clone().unwrap_or_default(),
                "a dump is iptables-save output; drop --native-nftables to trace through it",
            ));
        }
        Some(path) => {
            let text = crate::sys::host::read_file(path)?;
            let dump = parse::parse_save(&text, parse::Strictness::Lenient).map_err(|e| Error::Parse {
                path: path.clone(),
                err: e.into(),
            })?;
            trace::Netfilter::from_save(&dump, family).map_err(|e| Error::Untraceable {
                path: path.clone(),
                err: e.into(),
            })?
        }
        None => {
            let (config, plan) = plan::for_flags(&args.capture, args.ipv6.as_deref(), &args.resolv_conf, env)?;
            // One inet ruleset with nftables: an IPv6 packet meets the rules written for both
            // families even when the IPv6-only ones are off.
            if !config.native_nftables && family == Family::V6 && !plan.ipv6 {
                notes.push("IPv6 is off: the plan has no IPv6 rules (add --ipv6 to plan them)".to_string());
            }
            trace::Netfilter::from_plan(&plan, family, config.native_nftables)?
        }
    };
    let mut result = trace::trace(&nf, &packet, &trace::Ids::from_host()?).map_err(|e| Error::Trace(e.into()))?;
    result.notes = notes;
    let out = match args.format {
        OutputFormat::Text => format!("packet: {packet}\n{}", result.text()),
        OutputFormat::Json => result.json(&packet),
    };
    write_stdout(&out)?;
    Ok(0)
}

/// `meshcap check`: exit 0 in sync, 1 drift; its errors exit 2 ([`Convention::Check`]).
fn check_command(args: &CheckArgs, env: &Env) -> Result<i32> {
    let report = check_report(args, env)?;
    let out = match args.format {
        OutputFormat::Text => report.text(),
        OutputFormat::Json => report.json(),
    };
    write_stdout(&out)?;
    Ok(report.exit_code())
}

fn check_report(args: &CheckArgs, env: &Env) -> Result<check::Report> {
    if let Some(spec) = &args.from_pod_spec {
        // The pod's own argument list and env, exactly as its istio-init ran them.
        let given = CaptureFlags {
            network_namespace: None,
            ..args.capture.clone()
        };
        if given != CaptureFlags::default() {
            return Err(Error::invalid(
                "--from-pod-spec",
                spec,
                "the capture flags come from the pod spec; give them there or on the command line, not both",
            ));
        }
        let text = read_input(spec)?;
        let (capture, pod_env, notes) = crate::audit::pod_spec_flags(&text, spec)?;
        for n in notes {
            tracing::warn!("{n} (in --from-pod-spec {})", crate::error::printable(spec));
        }
        let mut from_spec = CheckArgs {
            capture,
            ipv6: args.ipv6.clone(),
            resolv_conf: args.resolv_conf.clone(),
            from_save: args.from_save.clone(),
            from_pod_spec: None,
            family: args.family,
            format: args.format,
        };
        // --network-namespace stays the command line's: the spec names no namespace.
        from_spec.capture.network_namespace = args.capture.network_namespace.clone();
        return check_report(&from_spec, &pod_env);
    }
    if let Some(path) = &args.from_save {
        if Config::native_nftables(&args.capture, env)? {
            return Err(Error::invalid(
                "--from-save",
                path,
                "a dump is iptables-save output; drop --native-nftables to compare it",
            ));
        }
        let (_config, plan) = plan::for_flags(&args.capture, args.ipv6.as_deref(), &args.resolv_conf, env)?;
        let family = match args.family {
            Some(FamilyArg::V6) => Family::V6,
            _ => Family::V4,
        };
        let text = crate::sys::host::read_file(path)?;
        let dump = parse::parse_save(&text, parse::Strictness::Lenient).map_err(|e| Error::Parse {
            path: path.clone(),
            err: e.into(),
        })?;
        // Owner names resolved with this host's accounts (the dump shows ids).
        let ids = crate::sys::host::Ids::from_host()?;
        return Ok(check::check(&plan, &[(family, dump)], &ids));
    }
    let ipv6_setting = Config::ipv6_setting(&args.ipv6, env)?;
    let files = HostFiles {
        resolv_conf: args.resolv_conf.clone(),
        ..HostFiles::default()
    };
    let config = Config::from_flags(&args.capture, env, &files, ipv6_setting)?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    check::live(&config, ipv6_setting)
}

/// `meshcap audit`: exit 0 all pass, 1 some would fail, 2 bad input (printed here, like check).
fn audit_command(args: &crate::cli::AuditArgs) -> Result<i32> {
    let text = read_input(&args.input)?;
    let source = if args.input == "-" {
        "stdin"
    } else {
        args.input.as_str()
    };
    let audit = crate::audit::audit(&crate::audit::read_objects(&text, source)?)?;
    let out = match args.format {
        OutputFormat::Text => audit.text(),
        OutputFormat::Json => audit.json(),
    };
    write_stdout(&out)?;
    Ok(audit.exit_code())
}

/// A file named on the command line, or standard input for `-` (pod specs for `audit` and
/// `check --from-pod-spec`).
fn read_input(path: &str) -> Result<String> {
    if path != "-" {
        return crate::sys::host::read_file(path);
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|err| Error::Read {
        path: "stdin".into(),
        err,
    })?;
    Ok(text)
}

fn apply_command(flags: &CaptureFlags, env: &Env, cleanup: bool) -> Result<i32> {
    crate::apply::run(flags, env, cleanup).map(|()| 0)
}

/// Prints a generated document (completion script, man page) to stdout.
fn print_doc(text: &[u8]) -> Result<i32> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text)
        .and_then(|()| stdout.flush())
        .map_err(Error::Stdout)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse_err(args: &[&str]) -> clap::Error {
        Cli::try_parse_from(args).unwrap_err()
    }

    #[test]
    fn clap_value_errors_become_invalid_values() {
        let e = invalid_value(&parse_err(&["meshcap", "render", "--family", "v5"])).unwrap();
        assert_eq!(
            e.to_string(),
            "invalid value 'v5' for '--family': expected one of: v4, v6"
        );
        let e = invalid_value(&parse_err(&["meshcap", "render", "-p"])).unwrap();
        assert_eq!(
            e.to_string(),
            "invalid value '' for '--envoy-port': a value is required"
        );
        assert!(invalid_value(&parse_err(&["meshcap", "render", "--bogus"])).is_none());
        assert!(invalid_value(&parse_err(&["meshcap", "completions", "tcsh"])).is_none());
    }

    #[test]
    fn values_starting_with_a_hyphen_reach_validation() {
        let cli = Cli::try_parse_from(["meshcap", "render", "-r", "-1", "--probe-timeout", "-1s"]).unwrap();
        let Some(Command::Render(args)) = cli.command else {
            panic!("render expected")
        };
        assert_eq!(args.capture.tproxy_route_table.as_deref(), Some("-1"));
        let e = plan::for_render(&args, &Env::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value '-1' for '--istio-inbound-tproxy-route-table': expected a 32-bit number in decimal digits"
        );
    }

    /// The exit code and the stderr text of `meshcap ARGS` (argv[0] added).
    fn exit(args: &[&str]) -> (i32, String) {
        let argv = std::iter::once("meshcap")
            .chain(args.iter().copied())
            .map(OsString::from);
        let (convention, outcome) = outcome(argv.collect(), &Env::default());
        let mut stderr = Vec::new();
        let code = exit_code(convention, outcome, &mut stderr);
        (code, String::from_utf8(stderr).unwrap())
    }

    #[test]
    fn errors_are_printed_once_with_the_exit_code_of_their_command() {
        // A bad value: 1, as Istio; the same value under `check`: 2 (1 is drift there).
        let bad = "meshcap: invalid value '0' for '--envoy-port': a port must be between 1 and 65535\n";
        assert_eq!(exit(&["render", "-p", "0"]), (1, bad.to_string()));
        assert_eq!(exit(&["check", "--from-save", "x", "-p", "0"]), (2, bad.to_string()));
        let (code, text) = exit(&["check", "--from-save", "/nonexistent/meshcap-dump"]);
        assert_eq!(code, 2);
        assert!(
            text.starts_with("meshcap: cannot read '/nonexistent/meshcap-dump': "),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
        // Refused before any command runs: Istio's convention, also for `check`.
        let (code, text) = exit(&["-p", "15001", "check"]);
        assert_eq!(
            (code, text.as_str()),
            (
                1,
                "meshcap: capture flags go after the subcommand (e.g. 'meshcap render -p 15001'), not before it\n"
            )
        );
        let (code, text) = exit(&["check", "--log_output_level=loud"]);
        assert_eq!(code, 1, "{text}");
        // clap's usage errors: 2, in clap's words (printed by clap, not as a `meshcap:` line).
        assert_eq!(exit(&["--bogus"]), (2, String::new()));
        assert_eq!(exit(&["check", "--bogus"]), (2, String::new()));
        // Nothing printed on success.
        assert_eq!(exit_code(Convention::Check, Ok(1), &mut Vec::new()), 1);
    }

    #[test]
    fn a_failed_validation_is_logged_not_printed() {
        let e = Error::Validation {
            failed: vec!["validation path inbound (IPv4) failed: timed out".into()],
            summary: "validation timeout".into(),
        };
        let mut stderr = Vec::new();
        assert_eq!(exit_code(Convention::Istio, Err(e), &mut stderr), 126);
        assert!(stderr.is_empty());
    }

    fn pasted(args: &[&str]) -> Vec<String> {
        let mut args: Vec<OsString> = args.iter().map(OsString::from).collect();
        drop_pasted_istio_iptables(&mut args);
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn a_pasted_istio_iptables_word_after_a_preview_command_is_dropped() {
        assert_eq!(
            pasted(&["m", "render", "istio-iptables", "-p", "1"]),
            ["m", "render", "-p", "1"]
        );
        assert_eq!(
            pasted(&["m", "--log_output_level", "debug", "check", "istio-iptables"]),
            ["m", "--log_output_level", "debug", "check"]
        );
        assert_eq!(
            pasted(&["m", "--log_as_json", "trace", "istio-iptables", "x"]),
            ["m", "--log_as_json", "trace", "x"]
        );
        // Not after the command: kept (and refused by clap as a stray word where it is one).
        assert_eq!(pasted(&["m", "render", "-p", "1", "istio-iptables"]).len(), 5);
        // The apply command itself, and a logging flag's value that happens to be a command name.
        assert_eq!(pasted(&["m", "istio-iptables", "-p", "1"]).len(), 4);
        assert_eq!(pasted(&["m", "--log_target", "render", "istio-iptables"]).len(), 4);
    }

    #[test]
    fn apply_only_flags_are_named_for_render() {
        let cli = Cli::try_parse_from([
            "meshcap",
            "render",
            "-p",
            "1",
            "--cleanup-only",
            "--network-namespace",
            "x",
        ])
        .unwrap();
        let Some(Command::Render(args)) = cli.command else {
            panic!("render expected")
        };
        assert_eq!(
            args.capture.apply_only_given(),
            ["--network-namespace", "--cleanup-only"]
        );
    }

    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn non_utf8_arguments_name_their_flag() {
        let bad = OsString::from_vec(b"eth\xff0".to_vec());
        let args = |v: Vec<OsString>| -> Vec<OsString> { v };
        let e = non_utf8_argument(&args(vec!["meshcap".into(), "render".into(), "-c".into(), bad.clone()])).unwrap();
        assert_eq!(e.to_string(), "invalid value 'eth\u{fffd}0' for '-c': not valid UTF-8");
        let long = OsString::from_vec(b"--istio-exclude-interfaces=eth\xff0".to_vec());
        let e = non_utf8_argument(&args(vec!["meshcap".into(), long])).unwrap();
        assert!(e.to_string().contains("for '--istio-exclude-interfaces'"), "{e}");
        let e = non_utf8_argument(&args(vec!["meshcap".into(), bad])).unwrap();
        assert!(e.to_string().contains("for 'an argument'"), "{e}");
        assert!(non_utf8_argument(&args(vec!["meshcap".into(), "render".into()])).is_none());
    }
}
