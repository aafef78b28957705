//! The commands: parse argv, build config and plan, run the chosen command, map the outcome to
//! an exit code. Errors are printed once, here, as `meshcap: <error>`.

use std::ffi::OsString;
use std::io::Write;

use crate::cli::manual as docs;
use crate::cli::{CaptureFlags, CheckArgs, Cli, Command, FamilyArg, Format, OutputFormat, RenderArgs, TraceArgs};
use crate::config::{Config, HostFiles};
use crate::error::{Error, Result};
use crate::iptables::parse;
use crate::logging::LogSettings;
use crate::model::Backend;
use crate::plan;
use crate::sys::host::Env;
use crate::values::Family;
use crate::{check, trace};
use crate::{iptables, json, nft};

/// Runs meshcap with `args` (argv[0] first) and `env`; returns the process exit code.
pub fn main(args: impl IntoIterator<Item = OsString>, env: Env) -> i32 {
    let mut args: Vec<OsString> = args.into_iter().collect();
    drop_pasted_istio_iptables(&mut args);
    if let Some(e) = non_utf8_argument(&args) {
        let _ = writeln!(std::io::stderr(), "meshcap: {e}");
        return e.exit_code();
    }
    let cli = match crate::speed::parse_args::<Cli>(args) {
        Ok(cli) => cli,
        Err(e) => {
            if let Some(invalid) = invalid_value(&e) {
                let _ = writeln!(std::io::stderr(), "meshcap: {invalid}");
                return invalid.exit_code();
            }
            let _ = e.print();
            return e.exit_code();
        }
    };
    match run(cli, &env) {
        Ok(code) => code,
        Err(e) => {
            tracing::debug!("{e:?}");
            let _ = writeln!(std::io::stderr(), "meshcap: {e}");
            e.exit_code()
        }
    }
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

fn run(cli: Cli, env: &Env) -> Result<i32> {
    LogSettings::from_flags(&cli.log)?.install();
    if cli.command.is_some() && cli.capture != CaptureFlags::default() {
        return Err(Error::Other(
            "capture flags go after the subcommand (e.g. 'meshcap render -p 15001'), not before it".into(),
        ));
    }
    match cli.command {
        Some(Command::Render(args)) => render_command(&args, env),
        Some(Command::Trace(args)) => trace_command(&args, env),
        Some(Command::Check(args)) => Ok(check_command(&args, env)),
        Some(Command::IstioIptables(args)) => apply_command(&args.capture, env, false),
        Some(Command::IstioCleanIptables(args)) => apply_command(&args.capture, env, true),
        Some(Command::Completions(args)) => print_doc(&docs::completions(args.shell)),
        Some(Command::Man(args)) => print_doc(&docs::man_page(args.command.as_deref())?),
        Some(Command::Audit(args)) => Ok(audit_command(&args)),
        None => Ok(no_command()),
    }
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

/// `meshcap FLAGS` without a command: refused with exit 2 (a usage error), nothing applied.
/// Istio's injected arguments always name `istio-iptables`, so only a person typing flags on
/// their own machine gets here, and programming that machine's firewall is never what they meant.
fn no_command() -> i32 {
    let _ = writeln!(
        std::io::stderr(),
        "meshcap: no command given, nothing applied: to apply the capture to this network namespace \
         run 'meshcap istio-iptables FLAGS' (as Istio's istio-init does); to preview the rules run \
         'meshcap render FLAGS'; see 'meshcap --help'"
    );
    2
}

fn render_command(args: &RenderArgs, env: &Env) -> Result<i32> {
    let (config, plan) = plan::unchecked(&args.capture, args.ipv6.as_deref(), &args.resolv_conf, env)?;
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
    let out = if config.native_nftables {
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
            .map_err(|(family, e)| plan::inconsistent(family, e))?;
        let tx = nft::text::transaction(&plan)
            .map_err(|e| Error::Other(format!("internal error: the nftables plan is inconsistent: {e}")))?;
        let text = tx.text();
        crate::speed::keep_until_exit((plan, tx));
        text
    } else {
        match args.format {
            Format::Iptables => {
                // Each family's ruleset is built once (moved out of the plan), checked, rendered.
                let rulesets = plan.into_rulesets();
                for rs in &rulesets {
                    rs.validate_for(Backend::Iptables)
                        .map_err(|e| plan::inconsistent(rs.family, e))?;
                }
                let payload = |family: Family| {
                    rulesets
                        .iter()
                        .find(|rs| rs.family == family)
                        .map(iptables::render::restore_payload)
                        .unwrap_or_default()
                };
                let out = match args.family {
                    Some(FamilyArg::V4) => payload(Family::V4),
                    Some(FamilyArg::V6) => payload(Family::V6),
                    None => {
                        let mut out = String::new();
                        for rs in &rulesets {
                            out.push_str("# ");
                            out.push_str(rs.family.name());
                            out.push('\n');
                            iptables::render::write_restore_payload(&mut out, rs);
                        }
                        out
                    }
                };
                crate::speed::keep_until_exit(rulesets);
                out
            }
            Format::Json => {
                plan.validate(Backend::Iptables)
                    .map_err(|(family, e)| plan::inconsistent(family, e))?;
                let families = match args.family {
                    Some(FamilyArg::V4) => vec![Family::V4],
                    Some(FamilyArg::V6) => vec![Family::V6],
                    None => plan.families(),
                };
                json::render(&plan, &families)
            }
        }
    };
    write_stdout(&out)?;
    Ok(0)
}

fn write_stdout(out: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::Other(format!("cannot write to stdout: {e}")))
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
            let dump = parse::parse_save(&text, parse::Strictness::Lenient)
                .map_err(|e| Error::Other(format!("cannot parse {}: {e}", crate::error::quote(path))))?;
            trace::Netfilter::from_save(&dump, family)
                .map_err(|e| Error::Other(format!("cannot trace through {}: {e}", crate::error::quote(path))))?
        }
        None => {
            let (config, plan) = plan::for_flags(&args.capture, args.ipv6.as_deref(), &args.resolv_conf, env)?;
            // One inet ruleset with nftables: an IPv6 packet meets the rules written for both
            // families even when the IPv6-only ones are off.
            if !config.native_nftables && family == Family::V6 && !plan.ipv6 {
                notes.push("IPv6 is off: the plan has no IPv6 rules (add --ipv6 to plan them)".to_string());
            }
            trace::Netfilter::from_plan(&plan, family, config.native_nftables)
                .map_err(|e| Error::Other(format!("internal error: {e}")))?
        }
    };
    let mut result = trace::trace(&nf, &packet, &trace::Ids::from_host()).map_err(|e| Error::Other(e.to_string()))?;
    result.notes = notes;
    let out = match args.format {
        OutputFormat::Text => format!("packet: {packet}\n{}", result.text()),
        OutputFormat::Json => result.json(&packet),
    };
    write_stdout(&out)?;
    Ok(0)
}

/// `meshcap check`: exit 0 in sync, 1 drift, 2 on any error (printed here, like `diff`).
fn check_command(args: &CheckArgs, env: &Env) -> i32 {
    match check_report(args, env) {
        Ok(report) => {
            let out = match args.format {
                OutputFormat::Text => report.text(),
                OutputFormat::Json => report.json(),
            };
            match write_stdout(&out) {
                Ok(()) => report.exit_code(),
                Err(e) => check_error(&e),
            }
        }
        Err(e) => check_error(&e),
    }
}

fn check_error(e: &Error) -> i32 {
    let _ = writeln!(std::io::stderr(), "meshcap: {e}");
    2
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
        let text = if spec == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| Error::Other(format!("cannot read stdin: {e}")))?;
            s
        } else {
            crate::sys::host::read_file(spec)?
        };
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
        let dump = parse::parse_save(&text, parse::Strictness::Lenient)
            .map_err(|e| Error::Other(format!("cannot parse {}: {e}", crate::error::quote(path))))?;
        return Ok(check::check(&plan, &[(family, dump)]));
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
fn audit_command(args: &crate::cli::AuditArgs) -> i32 {
    let text = if args.input == "-" {
        let mut s = String::new();
        match std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
            Ok(_) => Ok(s),
            Err(e) => Err(Error::Other(format!("cannot read stdin: {e}"))),
        }
    } else {
        crate::sys::host::read_file(&args.input)
    };
    let source = if args.input == "-" {
        "stdin"
    } else {
        args.input.as_str()
    };
    let result = text
        .and_then(|t| crate::audit::read_objects(&t, source))
        .and_then(|objects| crate::audit::audit(&objects));
    match result {
        Ok(a) => {
            let out = match args.format {
                OutputFormat::Text => a.text(),
                OutputFormat::Json => a.json(),
            };
            match write_stdout(&out) {
                Ok(()) => a.exit_code(),
                Err(e) => check_error(&e),
            }
        }
        Err(e) => check_error(&e),
    }
}

fn apply_command(flags: &CaptureFlags, env: &Env, cleanup: bool) -> Result<i32> {
    crate::apply::run(flags, env, cleanup)
}

/// Prints a generated document (completion script, man page) to stdout.
fn print_doc(text: &[u8]) -> Result<i32> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text)
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::Other(format!("cannot write to stdout: {e}")))?;
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
