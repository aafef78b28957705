//! The ENVIRONMENT section of `meshcap --help`, `meshcap istio-iptables --help` and the man
//! pages: every environment variable meshcap reads, in one table, so help and man page cannot
//! disagree. `tests/it/docs.rs` checks the table against the variables the code reads.
//!
//! The table is a string literal (a macro, so `concat!` can append it to a command's examples):
//! building it at run time would cost every invocation, `render` included, about a quarter more
//! instructions (clap builds the help texts of the top-level command on every parse).

/// The section as `--help` prints it: a title line, then one line per variable, its name padded
/// to a column of 37, then what it sets. The flags' fallbacks come first.
macro_rules! environment_help {
    () => {
        "\
Environment (a flag on the command line wins over its variable; docs/flags.md):
  INBOUND_CAPTURE_PORT                 -z, --inbound-capture-port
  INBOUND_TUNNEL_PORT                  -e, --inbound-tunnel-port
  PROXY_UID                            -u, --proxy-uid
  PROXY_GID                            -g, --proxy-gid
  ISTIO_INBOUND_INTERCEPTION_MODE      -m, --istio-inbound-interception-mode
  ISTIO_INBOUND_PORTS                  -b, --istio-inbound-ports
  ISTIO_LOCAL_EXCLUDE_PORTS            -d, --istio-local-exclude-ports
  ISTIO_EXCLUDE_INTERFACES             -c, --istio-exclude-interfaces
  ISTIO_SERVICE_CIDR                   -i, --istio-service-cidr
  ISTIO_SERVICE_EXCLUDE_CIDR           -x, --istio-service-exclude-cidr
  ISTIO_OUTBOUND_PORTS                 -q, --istio-outbound-ports
  ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE   -o, --istio-local-outbound-ports-exclude
  KUBE_VIRT_INTERFACES                 -k, --kube-virt-interfaces
  ISTIO_INBOUND_TPROXY_MARK            -t, --istio-inbound-tproxy-mark
  ISTIO_INBOUND_TPROXY_ROUTE_TABLE     -r, --istio-inbound-tproxy-route-table
  DRY_RUN                              -n, --dry-run
  IPTABLES_PROBE_PORT                  --iptables-probe-port
  PROBE_TIMEOUT                        --probe-timeout
  SKIP_RULE_APPLY                      --skip-rule-apply
  RUN_VALIDATION                       --run-validation
  REDIRECT_DNS                         --redirect-dns
  ISTIO_META_DNS_CAPTURE               --redirect-dns (wins over REDIRECT_DNS)
  DROP_INVALID                         --drop-invalid
  INVALID_DROP                         --drop-invalid (wins over DROP_INVALID)
  DUAL_STACK                           --dual-stack
  ISTIO_DUAL_STACK                     --dual-stack (wins over DUAL_STACK)
  CAPTURE_ALL_DNS                      --capture-all-dns
  NETWORK_NAMESPACE                    --network-namespace
  CNI_MODE                             --cni-mode
  RECONCILE                            --reconcile
  CLEANUP_ONLY                         --cleanup-only
  FORCE_APPLY                          --force-apply
  NATIVE_NFTABLES                      --native-nftables
  FORCE_IPTABLES_BINARY                --force-iptables-binary
  MESHCAP_COMPACT                      --compact (meshcap only)
  ENABLE_INBOUND_IPV6                  true/false: IPv6 on/off, no detection; every command
  ISTIO_OUTBOUND_OWNER_GROUPS          groups whose outbound traffic is captured [*]
  ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE  groups never captured (with the '*' above)
  ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR    IPv4 loopback prefix of the rules [127.0.0.1/32]
  ENVOY_USER                           user whose uid is the default -u [istio-proxy]
  DRY_RUN_FILE_PATH                    dry run: also write Istio's command stream here
  MESHCAP_XTABLES_WAIT                 seconds to wait for the xtables lock [30]
  MESHCAP_MAX_RULES                    most rules a configuration may plan [20000]
  MESHCAP_RENDER_PASSWD                render: the pod image's passwd file for user names
  MESHCAP_RENDER_GROUP                 render: the pod image's group file for group names
  PATH                                 where the iptables, ip6tables and nft programs are found
  RESTORE_FORMAT                       read and ignored (removed in Istio 1.24)
  IPTABLES_TRACE_LOGGING               read and ignored (removed in Istio 1.26)
  IPTABLES_VERSION                     read and ignored (removed in Istio 1.22)
  ENVOY_PORT                           only echoed in the apply log, as Istio (-p has no variable)"
    };
}
pub(crate) use environment_help;

/// Width of the name column (after the two-space indent).
#[cfg(test)]
const NAME_WIDTH: usize = 37;

/// One row of the table: the variable and what it sets.
pub(crate) struct Var<'a> {
    pub(crate) name: &'a str,
    pub(crate) meaning: &'a str,
}

/// The title and the rows of [`environment_help!`].
pub(crate) fn table() -> (&'static str, Vec<Var<'static>>) {
    let mut lines = environment_help!().lines();
    let title = lines.next().unwrap_or_default();
    let rows = lines
        .filter_map(|line| {
            let line = line.strip_prefix("  ")?;
            let (name, meaning) = line.split_once(' ')?;
            Some(Var {
                name,
                meaning: meaning.trim_start(),
            })
        })
        .collect();
    (title, rows)
}

/// The section as roff for a man page (`.SH ENVIRONMENT`, one `.TP` per variable).
pub(crate) fn roff() -> String {
    let (title, rows) = table();
    let mut s = String::from(".SH ENVIRONMENT\n");
    s.push_str(&roff_text(title));
    s.push('\n');
    for v in rows {
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
    fn every_line_is_a_row_of_the_table_and_each_variable_is_listed_once() {
        let text = environment_help!();
        let (title, rows) = table();
        assert!(title.starts_with("Environment ("), "{title}");
        assert_eq!(rows.len(), text.lines().count() - 1, "a line that is not a row");
        let mut names: Vec<&str> = rows.iter().map(|v| v.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a variable is listed twice");
        for (line, v) in text.lines().skip(1).zip(&rows) {
            assert!(
                v.name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{line}"
            );
            // The meaning starts in the same column on every line.
            assert_eq!(line, format!("  {:<NAME_WIDTH$}{}", v.name, v.meaning), "{line}");
            assert!(v.name.len() < NAME_WIDTH && !v.meaning.is_empty(), "{line}");
        }
        assert!(!text.ends_with('\n'));
    }

    #[test]
    fn the_roff_section_carries_every_row() {
        let roff = roff();
        assert!(roff.starts_with(".SH ENVIRONMENT\n"));
        for v in table().1 {
            assert!(roff.contains(&format!(
                ".TP\n\\fB{}\\fR\n{}\n",
                roff_text(v.name),
                roff_text(v.meaning)
            )));
        }
        assert!(roff.contains("\\-z, \\-\\-inbound\\-capture\\-port"));
    }
}
