//! The validated intent: istio-iptables flags and their environment fallbacks turned into typed
//! values, with Istio's defaults and precedence (flag > alias env > primary env > default).
//!
//! Every value is checked here, before anything is rendered or applied; a bad one becomes
//! `invalid value '<v>' for '<--flag or VARIABLE>': <why>`. Host lookups (the proxy user in
//! `/etc/passwd`, DNS servers in resolv.conf) happen in [`Config::from_flags`] through
//! [`HostFiles`], which names the files so `render` can point elsewhere. IPv6 enablement is
//! left to the caller ([`Ipv6Setting`]): render takes it from flags, apply detects it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::cli::CaptureFlags;
use crate::error::{Error, Result};
use crate::model::Backend;
use crate::sys::host::{self, Env};
use crate::values::{
    Cidr, Iface, Invalid, Mark, OutFile, Owner, Port, PortSpec, RouteTable, list_len_bound, split_list,
};

/// The outbound mark the proxy's own loopback traffic gets in TPROXY mode (fixed by Istio).
pub const OUTBOUND_MARK: Mark = Mark(1338);
/// The port of the DNS proxy in the agent (fixed by Istio).
pub const DNS_AGENT_PORT: Port = Port::new_const(15053);
/// The DNS port.
pub const DNS_PORT: Port = Port::new_const(53);
/// Istio's limit on the owner-group include list.
pub const MAX_OWNER_GROUPS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    Redirect,
    Tproxy,
}

/// `-b`: all inbound ports, or a list (empty: no inbound capture).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSelection {
    All,
    List(Vec<PortSpec>),
}

impl PortSelection {
    pub fn is_empty(&self) -> bool {
        matches!(self, PortSelection::List(l) if l.is_empty())
    }
}

/// `-i`: all outbound destinations, or a list of prefixes (empty: no outbound CIDR capture).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrSelection {
    All,
    List(Vec<Cidr>),
}

/// Owner groups whose outbound traffic is captured (env-only settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerGroups {
    /// `*`: every group, except those listed.
    AllExcept(Vec<Owner>),
    /// Only these groups (an empty list captures no outbound traffic, as in Istio).
    Only(Vec<Owner>),
}

/// The kernel side an iptables binary programs: the legacy x_tables or nf_tables
/// (`--force-iptables-binary`, and the variant apply chooses per family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesVariant {
    Legacy,
    Nft,
}

impl IptablesVariant {
    pub fn name(self) -> &'static str {
        match self {
            IptablesVariant::Legacy => "legacy",
            IptablesVariant::Nft => "nft",
        }
    }
}

/// Whether IPv6 rules are wanted: explicitly (`--ipv6`, `ENABLE_INBOUND_IPV6`) or detected from
/// the namespace's addresses at apply time (as Istio does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Setting {
    Explicit(bool),
    Detect,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    /// `--redirect-dns` as configured.
    pub redirect: bool,
    pub capture_all: bool,
    pub servers_v4: Vec<Ipv4Addr>,
    pub servers_v6: Vec<Ipv6Addr>,
    /// IPv6 servers with a zone (`fe80::1%eth0`): they keep DNS capture on as in Istio, but no
    /// rule names them (no ip6tables or nft address carries a zone; docs/istio-compat.md §2.5).
    pub zoned_v6: Vec<String>,
}

impl Dns {
    /// DNS capture is effective only when requested and either capturing all DNS or knowing at
    /// least one server (Istio 1.29 disables it otherwise, with a warning).
    pub fn effective(&self) -> bool {
        self.redirect
            && (self.capture_all
                || !self.servers_v4.is_empty()
                || !self.servers_v6.is_empty()
                || !self.zoned_v6.is_empty())
    }
}

/// Raw values of the variables Istio echoes in its environment dump (§1.6).
pub const ECHOED_ENV: [&str; 12] = [
    "ENVOY_PORT",
    "INBOUND_CAPTURE_PORT",
    "ISTIO_INBOUND_INTERCEPTION_MODE",
    "ISTIO_INBOUND_TPROXY_ROUTE_TABLE",
    "ISTIO_INBOUND_PORTS",
    "ISTIO_OUTBOUND_PORTS",
    "ISTIO_LOCAL_EXCLUDE_PORTS",
    "ISTIO_EXCLUDE_INTERFACES",
    "ISTIO_SERVICE_CIDR",
    "ISTIO_SERVICE_EXCLUDE_CIDR",
    "ISTIO_META_DNS_CAPTURE",
    "INVALID_DROP",
];

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub proxy_port: Port,
    pub inbound_capture_port: Port,
    pub inbound_tunnel_port: Port,
    pub proxy_uids: Vec<Owner>,
    pub proxy_gids: Vec<Owner>,
    pub mode: InterceptionMode,
    /// The mode text as given (Istio prints it in its config dump).
    pub mode_text: String,
    pub tproxy_mark: Mark,
    pub tproxy_route_table: RouteTable,
    pub inbound_ports: PortSelection,
    pub inbound_exclude_ports: Vec<PortSpec>,
    pub exclude_interfaces: Vec<Iface>,
    pub virtual_interfaces: Vec<Iface>,
    pub outbound_include: CidrSelection,
    pub outbound_exclude: Vec<Cidr>,
    pub outbound_ports_include: Vec<PortSpec>,
    pub outbound_ports_exclude: Vec<PortSpec>,
    pub owner_groups: OwnerGroups,
    /// The IPv4 loopback prefix (`ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`), host bits kept.
    pub loopback_v4: Cidr,
    pub dns: Dns,
    pub drop_invalid: bool,
    pub dual_stack: bool,
    pub ipv6: Ipv6Setting,
    pub dry_run: bool,
    /// `DRY_RUN_FILE_PATH`: where a dry run also writes its command stream in Istio's recorded
    /// format (spec §4.6). Read only for a dry run (ignored otherwise, as Istio); empty is unset.
    pub dry_run_file: Option<OutFile>,
    pub skip_rule_apply: bool,
    pub run_validation: bool,
    pub probe_port: Port,
    pub probe_timeout: Duration,
    pub network_namespace: Option<String>,
    pub cni_mode: bool,
    pub reconcile: bool,
    pub cleanup_only: bool,
    pub force_apply: bool,
    pub native_nftables: bool,
    /// `--compact`: fewer rules with the same verdicts (meshcap's own; not Istio's rule text).
    pub compact: bool,
    pub force_iptables_binary: Option<IptablesVariant>,
    /// Seconds a legacy restore waits for the xtables lock (`--wait=N`): 30 as Istio, or
    /// `MESHCAP_XTABLES_WAIT` (meshcap's own variable, 1–3600).
    pub xtables_wait: u32,
    /// Raw text of the flags as Istio's config dump prints them.
    pub dump: DumpText,
    /// Notes for the log (ignored flags, skipped resolv.conf entries), said once by the caller.
    pub warnings: Vec<String>,
}

/// The raw text of list settings, as Istio prints them in its config dump.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DumpText {
    pub inbound_ports: String,
    pub inbound_exclude_ports: String,
    pub owner_groups_include: String,
    pub owner_groups_exclude: String,
    pub outbound_include: String,
    pub outbound_exclude: String,
    pub outbound_ports_include: String,
    pub outbound_ports_exclude: String,
    pub virtual_interfaces: String,
    pub exclude_interfaces: String,
}

/// The files the configuration step reads.
#[derive(Debug, Clone)]
pub struct HostFiles {
    pub passwd: String,
    pub resolv_conf: String,
}

impl Default for HostFiles {
    fn default() -> Self {
        HostFiles {
            passwd: "/etc/passwd".into(),
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

/// A value and where it came from (`--long-flag` or an environment variable's name).
struct Sourced {
    text: String,
    source: String,
}

impl Sourced {
    fn parse<T>(&self, parse: impl FnOnce(&str) -> Result<T, Invalid>) -> Result<T> {
        parse(&self.text).map_err(|Invalid(why)| Error::invalid(&self.source, &self.text, why))
    }

    fn list<T>(&self, parse: impl Fn(&str) -> Result<T, Invalid>) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(list_len_bound(&self.text));
        for item in split_list(&self.text) {
            out.push(parse(item).map_err(|Invalid(why)| Error::invalid(&self.source, item, why))?);
        }
        Ok(out)
    }
}

/// A value as given. Control characters (newline, tab, carriage return, escape, …) are refused
/// in every value, whatever it is for: no setting needs one, and a newline would otherwise be
/// trimmed from a list item or echoed into the log.
fn sourced(text: &str, source: String) -> Result<Sourced> {
    if text.chars().any(char::is_control) {
        return Err(Error::invalid(
            &source,
            text,
            "control characters (newline, tab, carriage return, ...) are not allowed",
        ));
    }
    Ok(Sourced {
        text: text.to_string(),
        source,
    })
}

/// Resolves one setting: the flag if given, else the alias variable, else the primary one.
fn pick(
    flag: &Option<String>,
    long: &str,
    env: &Env,
    primary: Option<&str>,
    alias: Option<&str>,
) -> Result<Option<Sourced>> {
    if let Some(text) = flag {
        return sourced(text, format!("--{long}")).map(Some);
    }
    for name in [alias, primary].into_iter().flatten() {
        if let Some(text) = env.get(name) {
            return sourced(text, name.to_string()).map(Some);
        }
    }
    Ok(None)
}

fn env_only(env: &Env, name: &str) -> Result<Option<Sourced>> {
    env.get(name).map(|text| sourced(text, name.to_string())).transpose()
}

/// A proxy UID/GID list that is given must name at least one owner. Istio renders no owner
/// rules for a list such as `,`, which lets the proxy capture its own traffic; meshcap refuses it.
fn owner_list(s: &Sourced, what: &str, hint: &str) -> Result<Vec<Owner>> {
    let list = s.list(Owner::parse)?;
    if list.is_empty() {
        return Err(Error::invalid(
            &s.source,
            &s.text,
            format!("the list names no {what} ({hint})"),
        ));
    }
    Ok(list)
}

/// Go's `strconv.ParseBool` set. An empty environment value means false (Istio's effect).
fn parse_bool(s: &Sourced) -> Result<bool> {
    match s.text.as_str() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        "" if !s.source.starts_with("--") => Ok(false),
        _ => Err(Error::invalid(&s.source, &s.text, "expected a boolean (true or false)")),
    }
}

fn flag_bool(flag: &Option<String>, long: &str, env: &Env, primary: &str, alias: Option<&str>) -> Result<bool> {
    pick(flag, long, env, Some(primary), alias)?.map_or(Ok(false), |s| parse_bool(&s))
}

/// Parses a Go duration (`5s`, `500ms`, `1m30s`, `1.5h`; a bare `0`). Negative durations are
/// refused.
pub fn parse_go_duration(text: &str) -> Result<Duration, Invalid> {
    let bad = || Invalid::new("expected a duration such as 5s, 500ms or 1m30s");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = tail;
    }
    if !total.is_finite() || total > 1e9 {
        return Err(Invalid::new("duration out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Go's `strconv.ParseUint(s, 0, 16)` (decimal, `0x`, `0o`, `0b`, leading-zero octal), then
/// 1–65535.
fn parse_probe_port(text: &str) -> Result<Port, Invalid> {
    let t = text.replace('_', "");
    let (digits, radix) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (h, 16)
    } else if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        (o, 8)
    } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        (b, 2)
    } else if t.len() > 1 && t.starts_with('0') {
        (&t[1..], 8)
    } else {
        (t.as_str(), 10)
    };
    let n = u16::from_str_radix(digits, radix).map_err(|_| Invalid::new("expected a port number 1-65535"))?;
    Port::parse(&n.to_string())
}

impl Config {
    /// Validates flags and environment, reading the passwd and resolv.conf files of `files`
    /// where the configuration needs them.
    pub fn from_flags(flags: &CaptureFlags, env: &Env, files: &HostFiles, ipv6: Ipv6Setting) -> Result<Config> {
        let f = flags;
        let port = |flag: &Option<String>, long: &str, primary: Option<&str>, default: u16| -> Result<Port> {
            match pick(flag, long, env, primary, None)? {
                Some(s) => s.parse(Port::parse),
                None => Ok(Port::new_const(default)),
            }
        };
        let proxy_port = port(&f.envoy_port, "envoy-port", None, 15001)?;
        let inbound_capture_port = port(
            &f.inbound_capture_port,
            "inbound-capture-port",
            Some("INBOUND_CAPTURE_PORT"),
            15006,
        )?;
        let inbound_tunnel_port = port(
            &f.inbound_tunnel_port,
            "inbound-tunnel-port",
            Some("INBOUND_TUNNEL_PORT"),
            15008,
        )?;

        let mut warnings = Vec::new();

        // Interception mode: only REDIRECT (or empty) and TPROXY; Istio treats any other text
        // as REDIRECT, meshcap refuses it.
        let mode_src = pick(
            &f.interception_mode,
            "istio-inbound-interception-mode",
            env,
            Some("ISTIO_INBOUND_INTERCEPTION_MODE"),
            None,
        )?;
        let mode_text = mode_src.as_ref().map(|s| s.text.clone()).unwrap_or_default();
        let mode = match &mode_src {
            None => InterceptionMode::Redirect,
            Some(s) => s.parse(|t| match t {
                "" | "REDIRECT" => Ok(InterceptionMode::Redirect),
                "TPROXY" => Ok(InterceptionMode::Tproxy),
                _ => Err(Invalid::new("expected REDIRECT or TPROXY (exact, upper case)")),
            })?,
        };

        let tproxy_mark = match pick(
            &f.tproxy_mark,
            "istio-inbound-tproxy-mark",
            env,
            Some("ISTIO_INBOUND_TPROXY_MARK"),
            None,
        )? {
            Some(s) => s.parse(|t| {
                let m = Mark::parse(t)?;
                if m.0 == 0 || m == OUTBOUND_MARK {
                    return Err(Invalid::new(
                        "the TPROXY mark cannot be 0 (it would match every packet) or 1338 (the outbound mark)",
                    ));
                }
                Ok(m)
            })?,
            None => Mark(1337),
        };
        let tproxy_route_table = match pick(
            &f.tproxy_route_table,
            "istio-inbound-tproxy-route-table",
            env,
            Some("ISTIO_INBOUND_TPROXY_ROUTE_TABLE"),
            None,
        )? {
            Some(s) => s.parse(RouteTable::parse)?,
            None => RouteTable(133),
        };

        let list_src = |flag: &Option<String>, long: &str, primary: &str| pick(flag, long, env, Some(primary), None);
        let text_of = |s: &Option<Sourced>| s.as_ref().map(|s| s.text.clone()).unwrap_or_default();

        let inbound_src = list_src(&f.inbound_ports, "istio-inbound-ports", "ISTIO_INBOUND_PORTS")?;
        let inbound_ports = match &inbound_src {
            None => PortSelection::List(Vec::new()),
            Some(s) if s.text.trim() == "*" => PortSelection::All,
            Some(s) => PortSelection::List(s.list(PortSpec::parse)?),
        };
        let inbound_excl_src = list_src(
            &f.local_exclude_ports,
            "istio-local-exclude-ports",
            "ISTIO_LOCAL_EXCLUDE_PORTS",
        )?;
        let inbound_exclude_ports = inbound_excl_src
            .as_ref()
            .map_or(Ok(Vec::new()), |s| s.list(PortSpec::parse))?;
        if !inbound_exclude_ports.is_empty() && inbound_ports != PortSelection::All {
            warnings
                .push("--istio-local-exclude-ports only applies with --istio-inbound-ports '*'; ignored".to_string());
        }

        let excl_if_src = list_src(
            &f.exclude_interfaces,
            "istio-exclude-interfaces",
            "ISTIO_EXCLUDE_INTERFACES",
        )?;
        let exclude_interfaces = excl_if_src.as_ref().map_or(Ok(Vec::new()), |s| s.list(Iface::parse))?;
        let virt_src = list_src(&f.kube_virt_interfaces, "kube-virt-interfaces", "KUBE_VIRT_INTERFACES")?;
        let virtual_interfaces = virt_src.as_ref().map_or(Ok(Vec::new()), |s| s.list(Iface::parse))?;

        let incl_src = list_src(&f.service_cidr, "istio-service-cidr", "ISTIO_SERVICE_CIDR")?;
        let outbound_include = match &incl_src {
            None => CidrSelection::List(Vec::new()),
            Some(s) if s.text.trim() == "*" => CidrSelection::All,
            Some(s) => CidrSelection::List(s.list(Cidr::parse)?),
        };
        let excl_src = list_src(
            &f.service_exclude_cidr,
            "istio-service-exclude-cidr",
            "ISTIO_SERVICE_EXCLUDE_CIDR",
        )?;
        let outbound_exclude = match &excl_src {
            Some(s) if s.text.trim() == "*" => {
                return Err(Error::invalid(
                    &s.source,
                    &s.text,
                    "'*' cannot be excluded (it would disable all outbound capture; use an empty --istio-service-cidr)",
                ));
            }
            Some(s) => s.list(Cidr::parse)?,
            None => Vec::new(),
        };

        let oports_src = list_src(&f.outbound_ports, "istio-outbound-ports", "ISTIO_OUTBOUND_PORTS")?;
        let outbound_ports_include = oports_src
            .as_ref()
            .map_or(Ok(Vec::new()), |s| s.list(PortSpec::parse))?;
        let oexcl_src = list_src(
            &f.local_outbound_ports_exclude,
            "istio-local-outbound-ports-exclude",
            "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
        )?;
        let outbound_ports_exclude = oexcl_src.as_ref().map_or(Ok(Vec::new()), |s| s.list(PortSpec::parse))?;

        // Owner groups (env only): include `*` (default) with an exclude list, or an include list.
        let groups_incl = env_only(env, "ISTIO_OUTBOUND_OWNER_GROUPS")?;
        let groups_excl = env_only(env, "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE")?;
        let owner_groups = match &groups_incl {
            Some(s) if s.text.trim() != "*" => {
                let only = s.list(Owner::parse)?;
                if only.len() > MAX_OWNER_GROUPS {
                    return Err(Error::invalid(
                        &s.source,
                        &s.text,
                        format!("at most {MAX_OWNER_GROUPS} owner groups, got {}", only.len()),
                    ));
                }
                if let Some(e) = groups_excl.as_ref().filter(|e| !e.text.trim().is_empty()) {
                    warnings.push(format!(
                        "{} is ignored because ISTIO_OUTBOUND_OWNER_GROUPS is not '*'",
                        e.source
                    ));
                }
                OwnerGroups::Only(only)
            }
            _ => OwnerGroups::AllExcept(groups_excl.as_ref().map_or(Ok(Vec::new()), |s| s.list(Owner::parse))?),
        };

        let loopback_v4 = match env_only(env, "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR")? {
            None => Cidr::host(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Some(s) => s.parse(|t| {
                let c = Cidr::parse(t)?;
                match c.addr() {
                    IpAddr::V4(a) if a.is_loopback() => {}
                    a => {
                        return Err(Invalid::new(format!(
                            "expected an IPv4 loopback address (127.0.0.0/8), found {a}"
                        )));
                    }
                }
                if !(8..=32).contains(&c.prefix_len()) {
                    return Err(Invalid::new(format!(
                        "expected a mask in [8, 32], found {}",
                        c.prefix_len()
                    )));
                }
                Ok(c)
            })?,
        };

        let dry_run = flag_bool(&f.dry_run, "dry-run", env, "DRY_RUN", None)?;
        // Not read at all without a dry run (a real apply never fails over it).
        let dry_run_file = match dry_run
            .then(|| env_only(env, "DRY_RUN_FILE_PATH"))
            .transpose()?
            .flatten()
        {
            Some(s) if !s.text.is_empty() => Some(s.parse(OutFile::parse)?),
            _ => None,
        };
        let skip_rule_apply = flag_bool(&f.skip_rule_apply, "skip-rule-apply", env, "SKIP_RULE_APPLY", None)?;
        let run_validation = flag_bool(&f.run_validation, "run-validation", env, "RUN_VALIDATION", None)?;
        let redirect_dns = flag_bool(
            &f.redirect_dns,
            "redirect-dns",
            env,
            "REDIRECT_DNS",
            Some("ISTIO_META_DNS_CAPTURE"),
        )?;
        let drop_invalid = flag_bool(
            &f.drop_invalid,
            "drop-invalid",
            env,
            "DROP_INVALID",
            Some("INVALID_DROP"),
        )?;
        let dual_stack = flag_bool(&f.dual_stack, "dual-stack", env, "DUAL_STACK", Some("ISTIO_DUAL_STACK"))?;
        let capture_all_dns = flag_bool(&f.capture_all_dns, "capture-all-dns", env, "CAPTURE_ALL_DNS", None)?;
        let cni_mode = flag_bool(&f.cni_mode, "cni-mode", env, "CNI_MODE", None)?;
        let reconcile = flag_bool(&f.reconcile, "reconcile", env, "RECONCILE", None)?;
        let cleanup_only = flag_bool(&f.cleanup_only, "cleanup-only", env, "CLEANUP_ONLY", None)?;
        let force_apply = flag_bool(&f.force_apply, "force-apply", env, "FORCE_APPLY", None)?;
        let native_nftables = flag_bool(&f.native_nftables, "native-nftables", env, "NATIVE_NFTABLES", None)?;
        let compact = flag_bool(&f.compact, "compact", env, "MESHCAP_COMPACT", None)?;

        for (flag, long, primary, since) in [
            (&f.restore_format, "restore-format", "RESTORE_FORMAT", "1.24"),
            (
                &f.iptables_trace_logging,
                "iptables-trace-logging",
                "IPTABLES_TRACE_LOGGING",
                "1.26",
            ),
            (&f.iptables_version, "iptables-version", "IPTABLES_VERSION", "1.22"),
        ] {
            if let Some(s) = pick(flag, long, env, Some(primary), None)?
                && s.source.starts_with("--")
            {
                warnings.push(format!("{} was removed in Istio {since} and has no effect", s.source));
            }
        }

        let probe_port = match pick(
            &f.iptables_probe_port,
            "iptables-probe-port",
            env,
            Some("IPTABLES_PROBE_PORT"),
            None,
        )? {
            Some(s) => s.parse(parse_probe_port)?,
            None => Port::new_const(15002),
        };
        let probe_timeout = match pick(&f.probe_timeout, "probe-timeout", env, Some("PROBE_TIMEOUT"), None)? {
            Some(s) => s.parse(|t| {
                let d = parse_go_duration(t)?;
                if d.is_zero() {
                    return Err(Invalid::new("the probe timeout must be longer than 0"));
                }
                Ok(d)
            })?,
            None => Duration::from_secs(5),
        };

        let network_namespace = match pick(
            &f.network_namespace,
            "network-namespace",
            env,
            Some("NETWORK_NAMESPACE"),
            None,
        )? {
            Some(s) if s.text.is_empty() => None,
            Some(s) => Some(s.parse(|t| {
                if t.contains('\0') || t.chars().any(char::is_control) {
                    return Err(Invalid::new("a namespace path cannot contain control characters"));
                }
                Ok(t.to_string())
            })?),
            None => None,
        };
        let force_iptables_binary = match pick(
            &f.force_iptables_binary,
            "force-iptables-binary",
            env,
            Some("FORCE_IPTABLES_BINARY"),
            None,
        )? {
            None => None,
            Some(s) => s.parse(|t| match t {
                "" => Ok(None),
                "legacy" => Ok(Some(IptablesVariant::Legacy)),
                "nft" => Ok(Some(IptablesVariant::Nft)),
                _ => Err(Invalid::new("expected legacy or nft")),
            })?,
        };

        let xtables_wait = match env_only(env, "MESHCAP_XTABLES_WAIT")? {
            Some(s) => s.parse(|t| match t.parse::<u32>() {
                Ok(n) if t.bytes().all(|b| b.is_ascii_digit()) && (1..=3600).contains(&n) => Ok(n),
                _ => Err(Invalid::new("expected whole seconds from 1 to 3600")),
            })?,
            None => 30,
        };

        // Proxy UID: the flag/env list, else ENVOY_USER's uid from passwd, else 1337.
        let uid_src =
            pick(&f.proxy_uid, "proxy-uid", env, Some("PROXY_UID"), None)?.filter(|s| !s.text.trim().is_empty());
        let (proxy_uids, uid_text) = match &uid_src {
            Some(s) => (owner_list(s, "UID", "leave it empty for the default")?, s.text.clone()),
            None => {
                let user = env.get("ENVOY_USER").unwrap_or("istio-proxy");
                let uid = host::lookup_uid(&files.passwd, user).unwrap_or(1337);
                (vec![Owner::Id(uid)], uid.to_string())
            }
        };
        let gid_src =
            pick(&f.proxy_gid, "proxy-gid", env, Some("PROXY_GID"), None)?.filter(|s| !s.text.trim().is_empty());
        let proxy_gids = match &gid_src {
            Some(s) => owner_list(s, "GID", "leave it empty to use the UID list")?,
            None => Sourced {
                text: uid_text,
                source: "--proxy-uid".into(),
            }
            .list(Owner::parse)?,
        };

        let mut dns = Dns {
            redirect: redirect_dns,
            capture_all: capture_all_dns,
            ..Dns::default()
        };
        if redirect_dns && !capture_all_dns {
            let text = host::read_file(&files.resolv_conf)?;
            let host::ResolvConf {
                servers,
                zoned,
                skipped,
            } = host::parse_resolv_conf(&text);
            for s in skipped {
                warnings.push(format!(
                    "ignoring un-parsable DNS server {} in {}",
                    crate::error::quote(&s),
                    crate::error::printable(&files.resolv_conf)
                ));
            }
            for s in &zoned {
                warnings.push(format!(
                    "DNS server {} in {} has an IPv6 zone: it keeps DNS capture on (as Istio), but no rule address can carry a zone, so no rule matches it (Istio's IPv6 rules with it fail to load); --capture-all-dns captures its queries",
                    crate::error::quote(s),
                    crate::error::printable(&files.resolv_conf)
                ));
            }
            dns.zoned_v6 = zoned;
            for s in servers {
                match s {
                    IpAddr::V4(a) => dns.servers_v4.push(a),
                    IpAddr::V6(a) => dns.servers_v6.push(a),
                }
            }
            if !dns.effective() {
                warnings.push("REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS servers provided. DNS capture disabled.".into());
            }
        }

        Ok(Config {
            proxy_port,
            inbound_capture_port,
            inbound_tunnel_port,
            proxy_uids,
            proxy_gids,
            mode,
            mode_text,
            tproxy_mark,
            tproxy_route_table,
            inbound_ports,
            inbound_exclude_ports,
            exclude_interfaces,
            virtual_interfaces,
            outbound_include,
            outbound_exclude,
            outbound_ports_include,
            outbound_ports_exclude,
            owner_groups,
            loopback_v4,
            dns,
            drop_invalid,
            dual_stack,
            ipv6,
            dry_run,
            dry_run_file,
            skip_rule_apply,
            run_validation,
            probe_port,
            probe_timeout,
            network_namespace,
            cni_mode,
            reconcile,
            cleanup_only,
            force_apply,
            native_nftables,
            compact,
            force_iptables_binary,
            xtables_wait,
            dump: DumpText {
                inbound_ports: text_of(&inbound_src),
                inbound_exclude_ports: text_of(&inbound_excl_src),
                owner_groups_include: groups_incl.as_ref().map_or("*".to_string(), |s| s.text.clone()),
                owner_groups_exclude: text_of(&groups_excl),
                outbound_include: text_of(&incl_src),
                outbound_exclude: text_of(&excl_src),
                outbound_ports_include: text_of(&oports_src),
                outbound_ports_exclude: text_of(&oexcl_src),
                virtual_interfaces: text_of(&virt_src),
                exclude_interfaces: text_of(&excl_if_src),
            },
            warnings,
        })
    }

    /// The rule language the capture is written in.
    pub fn backend(&self) -> Backend {
        if self.native_nftables {
            Backend::Nft
        } else {
            Backend::Iptables
        }
    }

    /// `--native-nftables` / `NATIVE_NFTABLES`, parsed as every boolean is (for commands that
    /// must know the backend before a whole configuration exists, such as `--from-save`).
    pub fn native_nftables(flags: &CaptureFlags, env: &Env) -> Result<bool> {
        flag_bool(&flags.native_nftables, "native-nftables", env, "NATIVE_NFTABLES", None)
    }

    /// `ENABLE_INBOUND_IPV6` / `--ipv6` as an explicit setting, if present.
    pub fn ipv6_setting(flag: &Option<String>, env: &Env) -> Result<Ipv6Setting> {
        match pick(flag, "ipv6", env, Some("ENABLE_INBOUND_IPV6"), None)? {
            Some(s) => Ok(Ipv6Setting::Explicit(parse_bool(&s)?)),
            None => Ok(Ipv6Setting::Detect),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(flags: CaptureFlags, env: &[(&str, &str)]) -> Result<Config> {
        let files = HostFiles {
            passwd: "/nonexistent".into(),
            resolv_conf: "/nonexistent".into(),
        };
        Config::from_flags(
            &flags,
            &Env::from_pairs(env.iter().copied()),
            &files,
            Ipv6Setting::Explicit(false),
        )
    }

    #[test]
    fn defaults_follow_istio() {
        let c = cfg(CaptureFlags::default(), &[]).unwrap();
        assert_eq!(c.proxy_port.get(), 15001);
        assert_eq!(c.proxy_uids, [Owner::Id(1337)]);
        assert_eq!(c.proxy_gids, [Owner::Id(1337)]);
        assert_eq!(c.mode, InterceptionMode::Redirect);
        assert_eq!(c.owner_groups, OwnerGroups::AllExcept(vec![]));
        assert_eq!(c.loopback_v4.to_string(), "127.0.0.1/32");
        assert_eq!(c.probe_timeout, Duration::from_secs(5));
    }

    #[test]
    fn flag_beats_alias_beats_primary() {
        let env = [
            ("REDIRECT_DNS", "false"),
            ("ISTIO_META_DNS_CAPTURE", "true"),
            ("CAPTURE_ALL_DNS", "true"),
        ];
        assert!(cfg(CaptureFlags::default(), &env).unwrap().dns.redirect);
        let flags = CaptureFlags {
            redirect_dns: Some("false".into()),
            ..Default::default()
        };
        assert!(!cfg(flags, &env).unwrap().dns.redirect);
        let env = [("INBOUND_CAPTURE_PORT", "16000")];
        assert_eq!(
            cfg(CaptureFlags::default(), &env).unwrap().inbound_capture_port.get(),
            16000
        );
    }

    #[test]
    fn bad_values_name_their_source() {
        let flags = CaptureFlags {
            inbound_ports: Some("80,x".into()),
            ..Default::default()
        };
        let e = cfg(flags, &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid value 'x' for '--istio-inbound-ports': expected a port in decimal digits"
        );
        let e = cfg(CaptureFlags::default(), &[("DRY_RUN", "yes")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid value 'yes' for 'DRY_RUN'"), "{e}");
        let flags = CaptureFlags {
            interception_mode: Some("tproxy".into()),
            ..Default::default()
        };
        assert!(cfg(flags, &[]).is_err());
        let flags = CaptureFlags {
            service_exclude_cidr: Some("*".into()),
            ..Default::default()
        };
        assert!(cfg(flags, &[]).is_err());
        let e = cfg(
            CaptureFlags::default(),
            &[("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "10.0.0.1/8")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("loopback"));
    }

    #[test]
    fn owner_lists_without_items_are_refused() {
        let flags = CaptureFlags {
            proxy_uid: Some(" , ".into()),
            ..Default::default()
        };
        assert_eq!(
            cfg(flags, &[]).unwrap_err().to_string(),
            "invalid value ' , ' for '--proxy-uid': the list names no UID (leave it empty for the default)"
        );
        let e = cfg(CaptureFlags::default(), &[("PROXY_GID", ",")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid value ',' for 'PROXY_GID': the list names no GID (leave it empty to use the UID list)"
        );
        // Empty (or blank) still means "the default", as in Istio.
        let flags = CaptureFlags {
            proxy_uid: Some(" ".into()),
            ..Default::default()
        };
        assert_eq!(cfg(flags, &[]).unwrap().proxy_uids, [Owner::Id(1337)]);
    }

    #[test]
    fn dry_run_file_is_read_only_for_a_dry_run() {
        let dry = |v: &str| {
            cfg(
                CaptureFlags::default(),
                &[("DRY_RUN", "true"), ("DRY_RUN_FILE_PATH", v)],
            )
        };
        assert_eq!(dry("out/stream").unwrap().dry_run_file.unwrap().as_str(), "out/stream");
        assert_eq!(dry("").unwrap().dry_run_file, None);
        assert_eq!(
            dry("out/").unwrap_err().to_string(),
            "invalid value 'out/' for 'DRY_RUN_FILE_PATH': the path names a directory; name a file"
        );
        let e = dry("s\ntream").unwrap_err().to_string();
        assert!(e.contains("for 'DRY_RUN_FILE_PATH': control characters"), "{e}");
        // The flag counts as the dry run too.
        let flags = CaptureFlags {
            dry_run: Some("true".into()),
            ..Default::default()
        };
        assert!(
            cfg(flags, &[("DRY_RUN_FILE_PATH", "s")])
                .unwrap()
                .dry_run_file
                .is_some()
        );
        // Not a dry run: ignored, not even validated (as Istio ignores it).
        for env in [
            &[("DRY_RUN_FILE_PATH", "s\n")][..],
            &[("DRY_RUN", "false"), ("DRY_RUN_FILE_PATH", "d/")],
        ] {
            assert_eq!(cfg(CaptureFlags::default(), env).unwrap().dry_run_file, None);
        }
    }

    #[test]
    fn control_characters_are_refused_in_every_value() {
        for (flags, source) in [
            (
                CaptureFlags {
                    exclude_interfaces: Some("eth0\n-j ACCEPT".into()),
                    ..Default::default()
                },
                "--istio-exclude-interfaces",
            ),
            (
                CaptureFlags {
                    inbound_ports: Some("80,\n443".into()),
                    ..Default::default()
                },
                "--istio-inbound-ports",
            ),
            (
                CaptureFlags {
                    proxy_uid: Some("\n".into()),
                    ..Default::default()
                },
                "--proxy-uid",
            ),
            (
                CaptureFlags {
                    iptables_version: Some("1.8\r".into()),
                    ..Default::default()
                },
                "--iptables-version",
            ),
        ] {
            let e = cfg(flags, &[]).unwrap_err().to_string();
            assert!(e.contains(&format!("for '{source}': control characters")), "{e}");
        }
        for (name, value) in [
            ("ISTIO_OUTBOUND_OWNER_GROUPS", "*\n"),
            ("ISTIO_SERVICE_CIDR", "10.0.0.0/8\t"),
            ("DRY_RUN", "true\u{1b}"),
            ("NETWORK_NAMESPACE", "pod\n"),
        ] {
            let e = cfg(CaptureFlags::default(), &[(name, value)]).unwrap_err().to_string();
            assert!(e.contains(&format!("for '{name}': control characters")), "{e}");
        }
        // Spaces around list items are still trimmed.
        let flags = CaptureFlags {
            inbound_ports: Some(" 80, 443 ".into()),
            ..Default::default()
        };
        assert!(cfg(flags, &[]).is_ok());
    }

    #[test]
    fn the_proxy_uid_falls_back_to_1337_without_passwd() {
        let dir = std::env::temp_dir().join(format!("meshcap-passwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let passwd = dir.join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\nistio-proxy:x:2000:2000::/:/bin/false\nodd:x:+7:0::/:/bin/false\n",
        )
        .unwrap();
        let with = |passwd: &str, env: &[(&str, &str)]| {
            let files = HostFiles {
                passwd: passwd.into(),
                resolv_conf: "/nonexistent".into(),
            };
            Config::from_flags(
                &CaptureFlags::default(),
                &Env::from_pairs(env.iter().copied()),
                &files,
                Ipv6Setting::Explicit(false),
            )
            .unwrap()
            .proxy_uids
        };
        let p = passwd.to_str().unwrap();
        assert_eq!(with(p, &[]), [Owner::Id(2000)], "istio-proxy from passwd");
        assert_eq!(with(p, &[("ENVOY_USER", "root")]), [Owner::Id(0)]);
        assert_eq!(with(p, &[("ENVOY_USER", "nobody")]), [Owner::Id(1337)], "unknown user");
        assert_eq!(
            with(p, &[("ENVOY_USER", "odd")]),
            [Owner::Id(1337)],
            "a uid that is not digits"
        );
        assert_eq!(with(p, &[("ENVOY_USER", "root:x:0")]), [Owner::Id(1337)]);
        assert_eq!(with("/nonexistent/passwd", &[]), [Owner::Id(1337)], "no passwd");
        assert_eq!(with(dir.to_str().unwrap(), &[]), [Owner::Id(1337)], "a directory");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_xtables_wait() {
        assert_eq!(cfg(CaptureFlags::default(), &[]).unwrap().xtables_wait, 30);
        let c = cfg(CaptureFlags::default(), &[("MESHCAP_XTABLES_WAIT", "2")]).unwrap();
        assert_eq!(c.xtables_wait, 2);
        for bad in ["0", "3601", "+2", "2s", "", " 2"] {
            let e = cfg(CaptureFlags::default(), &[("MESHCAP_XTABLES_WAIT", bad)]).unwrap_err();
            assert!(e.to_string().contains("'MESHCAP_XTABLES_WAIT'"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn gid_defaults_to_uid_list() {
        let flags = CaptureFlags {
            proxy_uid: Some("3,4".into()),
            ..Default::default()
        };
        assert_eq!(cfg(flags, &[]).unwrap().proxy_gids, [Owner::Id(3), Owner::Id(4)]);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_go_duration("1.5h").unwrap(), Duration::from_secs(5400));
        for bad in ["5", "", "s", "-1s", "1x", "1..5s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn probe_port_bases() {
        assert_eq!(parse_probe_port("0x3a9a").unwrap().get(), 15002);
        assert_eq!(parse_probe_port("15002").unwrap().get(), 15002);
        assert!(parse_probe_port("70000").is_err());
    }
}
