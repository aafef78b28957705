//! The ENVIRONMENT section of `meshcap --help`, `meshcap istio-iptables --help` and the man
//! pages: every environment variable meshcap reads, in one table, so help and man page cannot
//! disagree. `tests/it/docs.rs` checks the table against the variables the code reads.

/// One row: the variable and what it sets.
pub(crate) struct Var {
    pub(crate) name: &'static str,
    pub(crate) meaning: &'static str,
}

const fn var(name: &'static str, meaning: &'static str) -> Var {
    Var { name, meaning }
}

/// The title of the section.
const TITLE: &str = "Environment (a flag on the command line wins over its variable; docs/flags.md):";

/// Every variable meshcap reads, the flags' fallbacks first (in `--help` order).
pub(crate) const VARIABLES: &[Var] = &[
    var("INBOUND_CAPTURE_PORT", "-z, --inbound-capture-port"),
    var("INBOUND_TUNNEL_PORT", "-e, --inbound-tunnel-port"),
    var("PROXY_UID", "-u, --proxy-uid"),
    var("PROXY_GID", "-g, --proxy-gid"),
    var(
        "ISTIO_INBOUND_INTERCEPTION_MODE",
        "-m, --istio-inbound-interception-mode",
    ),
    var("ISTIO_INBOUND_PORTS", "-b, --istio-inbound-ports"),
    var("ISTIO_LOCAL_EXCLUDE_PORTS", "-d, --istio-local-exclude-ports"),
    var("ISTIO_EXCLUDE_INTERFACES", "-c, --istio-exclude-interfaces"),
    var("ISTIO_SERVICE_CIDR", "-i, --istio-service-cidr"),
    var("ISTIO_SERVICE_EXCLUDE_CIDR", "-x, --istio-service-exclude-cidr"),
    var("ISTIO_OUTBOUND_PORTS", "-q, --istio-outbound-ports"),
    var(
        "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
        "-o, --istio-local-outbound-ports-exclude",
    ),
    var("KUBE_VIRT_INTERFACES", "-k, --kube-virt-interfaces"),
    var("ISTIO_INBOUND_TPROXY_MARK", "-t, --istio-inbound-tproxy-mark"),
    var(
        "ISTIO_INBOUND_TPROXY_ROUTE_TABLE",
        "-r, --istio-inbound-tproxy-route-table",
    ),
    var("DRY_RUN", "-n, --dry-run"),
    var("IPTABLES_PROBE_PORT", "--iptables-probe-port"),
    var("PROBE_TIMEOUT", "--probe-timeout"),
    var("SKIP_RULE_APPLY", "--skip-rule-apply"),
    var("RUN_VALIDATION", "--run-validation"),
    var("REDIRECT_DNS", "--redirect-dns"),
    var("ISTIO_META_DNS_CAPTURE", "--redirect-dns (wins over REDIRECT_DNS)"),
    var("DROP_INVALID", "--drop-invalid"),
    var("INVALID_DROP", "--drop-invalid (wins over DROP_INVALID)"),
    var("DUAL_STACK", "--dual-stack"),
    var("ISTIO_DUAL_STACK", "--dual-stack (wins over DUAL_STACK)"),
    var("CAPTURE_ALL_DNS", "--capture-all-dns"),
    var("NETWORK_NAMESPACE", "--network-namespace"),
    var("CNI_MODE", "--cni-mode"),
    var("RECONCILE", "--reconcile"),
    var("CLEANUP_ONLY", "--cleanup-only"),
    var("FORCE_APPLY", "--force-apply"),
    var("NATIVE_NFTABLES", "--native-nftables"),
    var("FORCE_IPTABLES_BINARY", "--force-iptables-binary"),
    var("MESHCAP_COMPACT", "--compact (meshcap only)"),
    var(
        "ENABLE_INBOUND_IPV6",
        "true/false: IPv6 on/off, no detection; every command",
    ),
    var(
        "ISTIO_OUTBOUND_OWNER_GROUPS",
        "groups whose outbound traffic is captured [*]",
    ),
    var(
        "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",
        "groups never captured (with the '*' above)",
    ),
    var(
        "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
        "IPv4 loopback prefix of the rules [127.0.0.1/32]",
    ),
    var("ENVOY_USER", "user whose uid is the default -u [istio-proxy]"),
    var("DRY_RUN_FILE_PATH", "dry run: also write Istio's command stream here"),
    var("MESHCAP_XTABLES_WAIT", "seconds to wait for the xtables lock [30]"),
    var(
        "MESHCAP_MAX_RULES",
        "the most rules a configuration may plan before meshcap refuses it; see docs/security.md",
    ),
    var("PATH", "where the iptables, ip6tables and nft programs are found"),
    var("RESTORE_FORMAT", "read and ignored (removed in Istio 1.24)"),
    var("IPTABLES_TRACE_LOGGING", "read and ignored (removed in Istio 1.26)"),
    var("IPTABLES_VERSION", "read and ignored (removed in Istio 1.22)"),
    var(
        "ENVOY_PORT",
        "only echoed in the apply log, as Istio (-p has no variable)",
    ),
];

/// Width of the name column in `--help`.
const NAME_WIDTH: usize = 37;

/// The section as plain text for `--help`, after `before` (the command's examples).
pub(crate) fn help_after(before: &str) -> String {
    let mut s = format!("{before}\n\n{TITLE}\n");
    for v in VARIABLES {
        s.push_str(&format!("  {:<NAME_WIDTH$}{}\n", v.name, v.meaning));
    }
    s.pop();
    s
}

/// The section as roff for a man page (`.SH ENVIRONMENT`, one `.TP` per variable).
pub(crate) fn roff() -> String {
    let mut s = String::from(".SH ENVIRONMENT\n");
    s.push_str(&roff_text(TITLE));
    s.push('\n');
    for v in VARIABLES {
        s.push_str(".TP\n\\fB");
        s.push_str(&roff_text(v.name));
        s.push_str("\\fR\n");
        s.push_str(&roff_text(v.meaning));
        s.push('\n');
    }
    s
}

/// Text escaped for roff: backslashes and hyphens (`\-`, an ASCII hyphen-minus), and a leading
/// `.` or `'` that would read as a request.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_is_listed_once_and_fits_its_column() {
        let mut names: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a variable is listed twice");
        for v in VARIABLES {
            assert!(v.name.len() < NAME_WIDTH, "{} is wider than its column", v.name);
            assert!(!v.meaning.is_empty());
        }
    }

    #[test]
    fn help_and_roff_carry_every_variable() {
        let help = help_after("Examples:");
        assert!(help.starts_with("Examples:\n\nEnvironment"));
        let roff = roff();
        assert!(roff.starts_with(".SH ENVIRONMENT\n"));
        for v in VARIABLES {
            assert!(help.contains(&format!("  {:<NAME_WIDTH$}{}", v.name, v.meaning)));
            assert!(roff.contains(&format!(".TP\n\\fB{}\\fR\n", roff_text(v.name))));
        }
        assert!(roff.contains("\\-z, \\-\\-inbound\\-capture\\-port"));
    }
}
