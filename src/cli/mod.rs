//! Command-line syntax (clap derive): which flags exist, their short and long names, and the
//! subcommands. Values stay raw text here; `config` gives them meaning, so one place validates
//! flags and their environment fallbacks alike and names the source of a bad value.

pub(crate) mod environment;
pub(crate) mod manual;

use crate::speed::Lazy;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Set up the traffic capture of a service-mesh sidecar (a drop-in istio-iptables).";

const LONG_ABOUT: &str = "\
meshcap turns istio-iptables flags into a typed rule model for the ISTIO_* chains and renders,
dry-runs or applies it.

`meshcap istio-iptables FLAGS` applies the capture, as Istio's istio-init container does (its
injected arguments name the subcommand). `render` prints the rules and touches nothing; `render`,
`trace` and `check` accept a pasted `istio-iptables FLAGS` list as is. Flags without a command
are refused (exit 2): nothing is applied to the namespace meshcap runs in by accident.

List values (-b, -d, -i, -x, -q, -o, -c, -k, -u, -g and the owner-group variables) are split on
commas; whitespace around an item is trimmed and empty items are skipped (Istio passes ' 443'
on verbatim). Every value is validated before anything is rendered or applied.";

/// The examples and exit codes after `meshcap --help` (a macro: `concat!` appends the
/// environment table to it for the long help).
macro_rules! after_help {
    () => {
        "\
Examples:
  meshcap render -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020
  meshcap render --family v4 -b '*' --redirect-dns --resolv-conf ./resolv.conf
  meshcap render --native-nftables -b '*' -m TPROXY --ipv6
  meshcap istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*' --dry-run

Exit codes: 0 ok, 1 error (bad value, failed apply), 2 usage error, 126 failed --run-validation."
    };
}

/// The examples of `meshcap istio-iptables --help`.
macro_rules! apply_help {
    () => {
        "\
Examples:
  meshcap istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020
  meshcap istio-iptables --network-namespace cni-1234 -i '*' -b '*' --dry-run"
    };
}

const AFTER_HELP: &str = after_help!();

#[derive(Debug, Parser)]
#[command(
    name = "meshcap",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    after_long_help = concat!(after_help!(), "\n\n", environment::environment_help!()),
    args_override_self = true,
    subcommand_precedence_over_arg = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub(crate) capture: CaptureFlags,

    #[command(flatten)]
    pub log: LogFlags,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the capture to this (or --network-namespace's) namespace; Istio's istio-init arguments work as is.
    #[command(
        name = "istio-iptables",
        args_override_self = true,
        after_long_help = concat!(apply_help!(), "\n\n", environment::environment_help!())
    )]
    IstioIptables(Lazy<ApplyArgs>),

    /// Remove every ISTIO_* chain and jump (Istio 1.20's cleanup command).
    #[command(name = "istio-clean-iptables", args_override_self = true)]
    IstioCleanIptables(Lazy<ApplyArgs>),

    /// Print the rules the flags produce; touches nothing.
    ///
    /// iptables (default): each family's iptables-restore payload under a `# ipv4` / `# ipv6`
    /// header, or one payload with --family. With --native-nftables (or NATIVE_NFTABLES=true):
    /// the `nft -f` transaction Istio's nftables mode builds, byte for byte, with no headers.
    #[command(args_override_self = true)]
    Render(Lazy<RenderArgs>),

    /// Print a shell completion script for meshcap.
    #[command(after_help = COMPLETIONS_HELP)]
    Completions(Lazy<CompletionsArgs>),

    /// Print meshcap's man page (roff), or the page of one command.
    #[command(after_help = MAN_HELP)]
    Man(Lazy<ManArgs>),

    /// Follow one packet through the planned rules (or an iptables-save dump); touches nothing.
    #[command(args_override_self = true, after_help = TRACE_HELP)]
    Trace(Lazy<TraceArgs>),

    /// Compare the live rules of a network namespace with the plan; changes nothing.
    #[command(args_override_self = true, after_help = CHECK_HELP)]
    Check(Lazy<CheckArgs>),

    /// Would these pods' istio-init / istio-validation arguments pass meshcap's validation?
    #[command(after_help = AUDIT_HELP)]
    Audit(Lazy<AuditArgs>),
}

const AUDIT_HELP: &str = "\
Reads Kubernetes objects as JSON or YAML (several YAML documents, or a List): Pods, and the pod
templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs. For every
istio-init and istio-validation init container, its args and literal env values go through the
parsing and validation of 'meshcap istio-iptables' (nothing is applied, no host file is read;
env set with valueFrom is reported as not evaluated). Per container: OK, or the exact error
meshcap would exit with.

Examples:
  kubectl get pods -A -o json | meshcap audit -
  kubectl get deploy,sts,ds -A -o yaml | meshcap audit - --format json
  meshcap audit pod.yaml

Exit codes: 0 every container passes, 1 some would fail, 2 bad input (unreadable, not JSON or YAML).";

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The file to read, or - for stdin.
    #[arg(value_name = "FILE")]
    pub(crate) input: String,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) format: OutputFormat,
}

const CHECK_HELP: &str = "\
Reads the live rules (the iptables-save of the variant apply would use, in the namespace of
--network-namespace, or this one) and compares them with the plan of the same flags, order by
order: rules missing from or unexpected in ISTIO_* chains, rules out of place, and the jumps
from built-in chains into them. Foreign rules are ignored. Output: per family a '# ' summary,
then '+' lines (planned, not live) and '-' lines (live, not planned).

IPv6 is checked as apply enables it: --ipv6 (or ENABLE_INBOUND_IPV6), else detected from the
namespace's addresses. With IPv6 off, any ISTIO state in ip6tables is drift.

Examples:
  meshcap check --network-namespace pod1 -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*'
  meshcap check --from-save saved.v4 -i '*' -b '*'
  meshcap check --network-namespace /proc/4242/ns/net --from-pod-spec pod.json

Exit codes: 0 in sync, 1 drift, 2 error (namespace missing, state unreadable, bad flags).";

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub(crate) capture: CaptureFlags,

    /// Plan IPv6 rules too (default: detect as apply does; env ENABLE_INBOUND_IPV6).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) ipv6: Option<String>,

    /// resolv.conf to read DNS servers from (with --redirect-dns and without --capture-all-dns).
    #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
    pub(crate) resolv_conf: String,

    /// Compare this iptables-save dump (of --family, default v4) instead of reading a namespace.
    #[arg(long, value_name = "FILE")]
    pub(crate) from_save: Option<String>,

    /// Take the capture flags and env from the istio-init (or istio-validation) container of
    /// this pod spec (Kubernetes JSON or YAML; - for stdin) instead of the command line.
    #[arg(long, value_name = "FILE")]
    pub(crate) from_pod_spec: Option<String>,

    /// The family of the --from-save dump.
    #[arg(long, value_enum, requires = "from_save")]
    pub(crate) family: Option<FamilyArg>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) format: OutputFormat,
}

const TRACE_HELP: &str = "\
PACKET: DIR PROTO SRC -> DST [uid=N] [gid=N] [iif=IF] [oif=IF] [mark=N] [connmark=N] [state=S]
  DIR    out (locally generated: OUTPUT, then POSTROUTING) or in (arriving: PREROUTING, then INPUT)
  PROTO  tcp or udp; SRC and DST a.b.c.d:port or [v6]:port
  uid, gid, oif for out packets; iif for in packets; mark defaults to 0; state is new (default),
  established, related or invalid; connmark is the connection's mark (0 for a new connection)

Every match a visited rule uses must be decidable from the packet: a missing fact is an error
naming the rule, never a guess. A packet to a loopback address leaves through lo.

Examples:
  meshcap trace -i '*' -b '*' 'out tcp 198.51.100.2:40000 -> 198.51.100.1:80 uid=1000 gid=1000 oif=eth0'
  meshcap trace -b '*' -m TPROXY 'in tcp 198.51.100.9:5000 -> 198.51.100.2:8080 iif=eth0'
  meshcap trace --from-save saved.v4 --format json 'out udp 10.0.0.5:3333 -> 10.96.0.10:53 uid=0 gid=0 oif=eth0'

Exit codes: 0 traced, 1 error (bad packet or flags, a rule that cannot be evaluated).";

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub(crate) capture: CaptureFlags,

    /// Plan IPv6 rules too (needed for an IPv6 packet; env ENABLE_INBOUND_IPV6).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) ipv6: Option<String>,

    /// resolv.conf to read DNS servers from (with --redirect-dns and without --capture-all-dns).
    #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
    pub(crate) resolv_conf: String,

    /// Trace through this iptables-save (or ip6tables-save) dump instead of the planned rules.
    #[arg(long, value_name = "FILE")]
    pub(crate) from_save: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) format: OutputFormat,

    /// The packet (one argument, or several words).
    #[arg(value_name = "PACKET", required = true, num_args = 1.., allow_hyphen_values = true)]
    pub(crate) packet: Vec<String>,
}

/// Output format of `trace` and `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub capture: CaptureFlags,

    /// Positional arguments are accepted and ignored, as Istio does.
    #[arg(hide = true)]
    pub(crate) ignored: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub(crate) capture: CaptureFlags,

    /// Render IPv6 rules too (render never scans interfaces; env ENABLE_INBOUND_IPV6).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) ipv6: Option<String>,

    /// resolv.conf to read DNS servers from (with --redirect-dns and without --capture-all-dns).
    #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
    pub resolv_conf: String,

    /// passwd file that resolves the user names of -u (the pod image's; an unknown name is then
    /// an error; env MESHCAP_RENDER_PASSWD). Without it, /etc/passwd is read and an unknown
    /// name is only a warning.
    #[arg(long, value_name = "FILE")]
    pub(crate) passwd: Option<String>,

    /// group file that resolves the group names of -g and ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]
    /// (the pod image's; an unknown name is then an error; env MESHCAP_RENDER_GROUP). Without
    /// it, /etc/group is read and an unknown name is only a warning.
    #[arg(long, value_name = "FILE")]
    pub(crate) group: Option<String>,

    /// Print only this family's payload, exactly as the restore receives it (iptables only:
    /// rejected with --native-nftables, whose one inet transaction covers both families).
    #[arg(long, value_enum)]
    pub(crate) family: Option<FamilyArg>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Iptables)]
    pub(crate) format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FamilyArg {
    V4,
    V6,
}

impl FamilyArg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FamilyArg::V4 => "v4",
            FamilyArg::V6 => "v6",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// iptables-restore input.
    Iptables,
    /// A versioned JSON document of the plan (see docs/json.md).
    Json,
}

// The istio-iptables flags (Istio 1.29 plus the removed 1.20 ones). Raw text; see `config`.
// A plain comment, not a doc comment: clap's derive would make a doc comment the `about` of
// every command that flattens these flags, and a deferred subcommand (`Lazy`) adds its
// arguments after its own `about` is set.
#[derive(Debug, Default, Clone, PartialEq, Eq, Args)]
pub struct CaptureFlags {
    /// Envoy port to which all outbound TCP traffic is redirected [default: 15001]
    #[arg(short = 'p', long = "envoy-port", value_name = "PORT", allow_hyphen_values = true)]
    pub envoy_port: Option<String>,

    /// Port to which all inbound TCP traffic is redirected [default: 15006; env INBOUND_CAPTURE_PORT]
    #[arg(
        short = 'z',
        long = "inbound-capture-port",
        value_name = "PORT",
        allow_hyphen_values = true
    )]
    pub inbound_capture_port: Option<String>,

    /// Istio tunnel (HBONE) port, always exempted [default: 15008; env INBOUND_TUNNEL_PORT]
    #[arg(
        short = 'e',
        long = "inbound-tunnel-port",
        value_name = "PORT",
        allow_hyphen_values = true
    )]
    pub inbound_tunnel_port: Option<String>,

    /// UIDs whose traffic is not redirected [default: uid of ENVOY_USER, else 1337; env PROXY_UID]
    #[arg(short = 'u', long = "proxy-uid", value_name = "UIDS", allow_hyphen_values = true)]
    pub proxy_uid: Option<String>,

    /// GIDs whose traffic is not redirected [default: the UID list; env PROXY_GID]
    #[arg(short = 'g', long = "proxy-gid", value_name = "GIDS", allow_hyphen_values = true)]
    pub proxy_gid: Option<String>,

    /// Inbound interception mode: REDIRECT or TPROXY [env ISTIO_INBOUND_INTERCEPTION_MODE]
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        value_name = "MODE",
        allow_hyphen_values = true,
        value_parser = Suggest(&["REDIRECT", "TPROXY"]),
        hide_possible_values = true
    )]
    pub interception_mode: Option<String>,

    /// Inbound ports to redirect; '*' for all, empty for none [env ISTIO_INBOUND_PORTS]
    #[arg(
        short = 'b',
        long = "istio-inbound-ports",
        value_name = "PORTS",
        allow_hyphen_values = true
    )]
    pub inbound_ports: Option<String>,

    /// Inbound ports excluded from redirection (with -b '*') [env ISTIO_LOCAL_EXCLUDE_PORTS]
    #[arg(
        short = 'd',
        long = "istio-local-exclude-ports",
        value_name = "PORTS",
        allow_hyphen_values = true
    )]
    pub local_exclude_ports: Option<String>,

    /// Interfaces whose traffic is never captured [env ISTIO_EXCLUDE_INTERFACES]
    #[arg(
        short = 'c',
        long = "istio-exclude-interfaces",
        value_name = "IFACES",
        allow_hyphen_values = true
    )]
    pub exclude_interfaces: Option<String>,

    /// Outbound CIDRs to redirect; '*' for all, empty for none [env ISTIO_SERVICE_CIDR]
    #[arg(
        short = 'i',
        long = "istio-service-cidr",
        value_name = "CIDRS",
        allow_hyphen_values = true
    )]
    pub service_cidr: Option<String>,

    /// Outbound CIDRs excluded from redirection [env ISTIO_SERVICE_EXCLUDE_CIDR]
    #[arg(
        short = 'x',
        long = "istio-service-exclude-cidr",
        value_name = "CIDRS",
        allow_hyphen_values = true
    )]
    pub service_exclude_cidr: Option<String>,

    /// Outbound ports always redirected [env ISTIO_OUTBOUND_PORTS]
    #[arg(
        short = 'q',
        long = "istio-outbound-ports",
        value_name = "PORTS",
        allow_hyphen_values = true
    )]
    pub outbound_ports: Option<String>,

    /// Outbound ports never redirected [env ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE]
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        value_name = "PORTS",
        allow_hyphen_values = true
    )]
    pub local_outbound_ports_exclude: Option<String>,

    /// Virtual interfaces whose inbound traffic is treated as outbound [env KUBE_VIRT_INTERFACES]
    #[arg(
        short = 'k',
        long = "kube-virt-interfaces",
        value_name = "IFACES",
        allow_hyphen_values = true
    )]
    pub kube_virt_interfaces: Option<String>,

    /// fwmark used by TPROXY mode [default: 1337; env ISTIO_INBOUND_TPROXY_MARK]
    #[arg(
        short = 't',
        long = "istio-inbound-tproxy-mark",
        value_name = "MARK",
        allow_hyphen_values = true
    )]
    pub tproxy_mark: Option<String>,

    /// Policy-routing table used by TPROXY mode [default: 133; env ISTIO_INBOUND_TPROXY_ROUTE_TABLE]
    #[arg(
        short = 'r',
        long = "istio-inbound-tproxy-route-table",
        value_name = "TABLE",
        allow_hyphen_values = true
    )]
    pub tproxy_route_table: Option<String>,

    /// Print what would be done; change nothing [env DRY_RUN]
    ///
    /// Like a real run it detects IPv6 from the namespace's addresses, so it fails in a namespace
    /// without a non-loopback address unless ENABLE_INBOUND_IPV6=true|false pins IPv6 (`render`
    /// needs no namespace). With DRY_RUN_FILE_PATH set, the dry run also writes Istio's recorded
    /// command stream to that file (replaced whole, once complete). DRY_RUN_FILE_PATH is ignored
    /// without a dry run.
    #[arg(short = 'n', long = "dry-run", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub dry_run: Option<String>,

    /// Port the --run-validation client dials [default: 15002; env IPTABLES_PROBE_PORT]
    #[arg(long = "iptables-probe-port", value_name = "PORT", allow_hyphen_values = true)]
    pub iptables_probe_port: Option<String>,

    /// --run-validation timeout, a Go duration [default: 5s; env PROBE_TIMEOUT]
    #[arg(long = "probe-timeout", value_name = "DURATION", allow_hyphen_values = true)]
    pub probe_timeout: Option<String>,

    /// Do not apply rules [env SKIP_RULE_APPLY]
    #[arg(long = "skip-rule-apply", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub skip_rule_apply: Option<String>,

    /// Check that redirection works after applying [env RUN_VALIDATION]
    #[arg(long = "run-validation", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub run_validation: Option<String>,

    /// Capture DNS to the agent on 15053 [env REDIRECT_DNS, ISTIO_META_DNS_CAPTURE]
    #[arg(long = "redirect-dns", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub redirect_dns: Option<String>,

    /// Drop packets in conntrack state INVALID [env DROP_INVALID, INVALID_DROP]
    #[arg(long = "drop-invalid", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub drop_invalid: Option<String>,

    /// Detect IPv6 on dual-stack pods [env DUAL_STACK, ISTIO_DUAL_STACK]
    #[arg(long = "dual-stack", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub dual_stack: Option<String>,

    /// Capture all DNS on port 53, not only to resolv.conf servers [env CAPTURE_ALL_DNS]
    #[arg(long = "capture-all-dns", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub capture_all_dns: Option<String>,

    /// Network namespace to program: a path or a name under /var/run/netns [env NETWORK_NAMESPACE]
    #[arg(long = "network-namespace", value_name = "NS", allow_hyphen_values = true)]
    pub network_namespace: Option<String>,

    /// Run as CNI plugin (pod-scoped xtables lock) [env CNI_MODE]
    #[arg(long = "cni-mode", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub cni_mode: Option<String>,

    /// Rebuild drifted ISTIO state instead of failing [env RECONCILE]
    #[arg(long = "reconcile", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub reconcile: Option<String>,

    /// Remove the capture; create nothing [env CLEANUP_ONLY]
    #[arg(long = "cleanup-only", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub cleanup_only: Option<String>,

    /// Apply even when the rules appear to be in place [env FORCE_APPLY]
    #[arg(long = "force-apply", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub force_apply: Option<String>,

    /// Use native nftables instead of iptables [env NATIVE_NFTABLES]
    #[arg(long = "native-nftables", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub native_nftables: Option<String>,

    /// Same verdicts, fewer rules: ports grouped into `-m multiport` (iptables) or sets, address
    /// lists into sets (nft). NOT byte-compatible with Istio's rules, by design [env MESHCAP_COMPACT]
    #[arg(long = "compact", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub compact: Option<String>,

    /// Force the iptables variant: legacy or nft [env FORCE_IPTABLES_BINARY]
    #[arg(
        long = "force-iptables-binary",
        value_name = "VARIANT",
        allow_hyphen_values = true,
        value_parser = Suggest(&["legacy", "nft"]),
        hide_possible_values = true
    )]
    pub force_iptables_binary: Option<String>,

    /// Removed in Istio 1.24; accepted, no effect
    #[arg(short = 'f', long = "restore-format", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", hide = true)]
    pub restore_format: Option<String>,

    /// Removed in Istio 1.26; accepted, no effect
    #[arg(long = "iptables-trace-logging", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", hide = true)]
    pub iptables_trace_logging: Option<String>,

    /// Removed in Istio 1.22; accepted, no effect
    #[arg(
        long = "iptables-version",
        value_name = "VERSION",
        hide = true,
        allow_hyphen_values = true
    )]
    pub iptables_version: Option<String>,
}

/// A value parser that takes any text (`config` validates it and names the flag in its error)
/// but tells shell completions the accepted values.
#[derive(Clone)]
struct Suggest(&'static [&'static str]);

impl clap::builder::TypedValueParser for Suggest {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        clap::builder::StringValueParser::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(self.0.iter().copied().map(clap::builder::PossibleValue::new)))
    }
}

impl CaptureFlags {
    /// The flags given that change only what the apply command does (how and where it runs),
    /// never the rules: `render` warns that it ignores them.
    pub(crate) fn apply_only_given(&self) -> Vec<&'static str> {
        [
            (&self.dry_run, "--dry-run"),
            (&self.iptables_probe_port, "--iptables-probe-port"),
            (&self.probe_timeout, "--probe-timeout"),
            (&self.skip_rule_apply, "--skip-rule-apply"),
            (&self.run_validation, "--run-validation"),
            (&self.dual_stack, "--dual-stack"),
            (&self.network_namespace, "--network-namespace"),
            (&self.cni_mode, "--cni-mode"),
            (&self.reconcile, "--reconcile"),
            (&self.cleanup_only, "--cleanup-only"),
            (&self.force_apply, "--force-apply"),
            (&self.force_iptables_binary, "--force-iptables-binary"),
        ]
        .into_iter()
        .filter(|(value, _)| value.is_some())
        .map(|(_, name)| name)
        .collect()
    }
}

/// Istio's global logging flags. Logs always go to stderr; rules go to stdout.
#[derive(Debug, Default, Clone, Args)]
pub struct LogFlags {
    /// Log levels: `<scope>:<level>,...` or `<level>` (debug, info, warn, error, fatal, none)
    #[arg(global = true, long = "log_output_level", value_name = "LEVELS")]
    pub(crate) log_output_level: Option<String>,

    /// Log as JSON lines
    #[arg(global = true, long = "log_as_json", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) log_as_json: Option<String>,

    /// Accepted for compatibility; meshcap logs to stderr
    #[arg(global = true, long = "log_target", value_name = "TARGET", hide = true)]
    pub(crate) log_target: Vec<String>,

    /// Accepted for compatibility
    #[arg(global = true, long = "log_caller", value_name = "SCOPES", hide = true)]
    pub(crate) log_caller: Option<String>,

    /// Accepted for compatibility
    #[arg(global = true, long = "log_stacktrace_level", value_name = "LEVELS", hide = true)]
    pub(crate) log_stacktrace_level: Option<String>,

    /// Accepted for compatibility (Istio 1.20)
    #[arg(global = true, long = "log_rotate", value_name = "PATH", hide = true)]
    pub(crate) log_rotate: Option<String>,

    /// Accepted for compatibility (Istio 1.20)
    #[arg(global = true, long = "log_rotate_max_age", value_name = "DAYS", hide = true)]
    pub(crate) log_rotate_max_age: Option<String>,

    /// Accepted for compatibility (Istio 1.20)
    #[arg(global = true, long = "log_rotate_max_size", value_name = "MB", hide = true)]
    pub(crate) log_rotate_max_size: Option<String>,

    /// Accepted for compatibility (Istio 1.20)
    #[arg(global = true, long = "log_rotate_max_backups", value_name = "N", hide = true)]
    pub(crate) log_rotate_max_backups: Option<String>,

    /// Accepted for compatibility
    #[arg(global = true, long = "vklog", value_name = "LEVEL", hide = true)]
    pub(crate) vklog: Option<String>,
}

const COMPLETIONS_HELP: &str = "\
Examples:
  meshcap completions bash > /etc/bash_completion.d/meshcap
  meshcap completions zsh > \"${fpath[1]}/_meshcap\"
  meshcap completions fish > ~/.config/fish/completions/meshcap.fish";

const MAN_HELP: &str = "\
Examples:
  meshcap man > /usr/local/share/man/man1/meshcap.1
  meshcap man render > /usr/local/share/man/man1/meshcap-render.1
  meshcap man | man -l -";

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub(crate) shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// A command (e.g. render) whose own page to print, named meshcap-COMMAND(1).
    #[arg(value_name = "COMMAND")]
    pub(crate) command: Option<String>,
}
