//! The validated intent: istio-iptables flags and their environment fallbacks turned into typed
//! values, with Istio's defaults and precedence (flag > alias env > primary env > default).
//!
//! Every value is checked here, before anything is rendered or applied; a bad one becomes
//! `invalid value '<v>' for '<--flag or VARIABLE>': <why>`. Host lookups (the proxy user in
//! `/etc/passwd`, DNS servers in resolv.conf) happen in [`Config::from_flags`] through
//! [`HostFiles`], which names the files so `render` can point elsewhere. IPv6 enablement is
//! left to the caller ([`Ipv6Setting`]): render takes it from flags, apply detects it.
//!
//! One file per group of settings, each with its unit tests: `source.rs` (precedence, control
//! characters, booleans), `ports.rs`, `interception.rs`, `interfaces.rs`, `destinations.rs`,
//! `owners.rs`, `switches.rs`, `validation.rs`, `execution.rs`, `dns.rs`. [`Config::from_flags`]
//! reads them in a fixed order, which decides which error is reported when several values are
//! bad and the order of the notes for the log.

mod destinations;
mod dns;
mod execution;
mod interception;
mod interfaces;
mod owners;
mod ports;
mod source;
mod switches;
mod validation;

use std::time::Duration;

use crate::cli::CaptureFlags;
use crate::error::Result;
use crate::model::Backend;
use crate::sys::host::Env;
use crate::values::{Cidr, Iface, Mark, OutFile, Owner, Port, PortSpec, RouteTable};

pub(crate) use destinations::CidrSelection;
pub(crate) use dns::Dns;
pub(crate) use interception::InterceptionMode;
pub(crate) use owners::{OwnerGroups, OwnerSources, too_many_groups_for_iptables, unresolved_names};
pub(crate) use ports::PortSelection;

/// The outbound mark the proxy's own loopback traffic gets in TPROXY mode (fixed by Istio).
pub(crate) const OUTBOUND_MARK: Mark = Mark(1338);
/// The port of the DNS proxy in the agent (fixed by Istio).
pub(crate) const DNS_AGENT_PORT: Port = Port::new_const(15053);
/// The DNS port.
pub(crate) const DNS_PORT: Port = Port::new_const(53);

/// The kernel side an iptables binary programs: the legacy x_tables or nf_tables
/// (`--force-iptables-binary`, and the variant apply chooses per family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IptablesVariant {
    Legacy,
    Nft,
}

impl IptablesVariant {
    pub(crate) fn name(self) -> &'static str {
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

/// Raw values of the variables Istio echoes in its environment dump
/// (`docs/istio-compat.md §1.6`).
pub(crate) const ECHOED_ENV: [&str; 12] = [
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
    pub(crate) inbound_tunnel_port: Port,
    pub(crate) proxy_uids: Vec<Owner>,
    pub(crate) proxy_gids: Vec<Owner>,
    /// Where the UID and GID lists came from (for errors about names).
    pub(crate) owner_sources: OwnerSources,
    pub(crate) mode: InterceptionMode,
    /// The mode text as given (Istio prints it in its config dump).
    pub(crate) mode_text: String,
    pub(crate) tproxy_mark: Mark,
    pub(crate) tproxy_route_table: RouteTable,
    pub(crate) inbound_ports: PortSelection,
    pub(crate) inbound_exclude_ports: Vec<PortSpec>,
    pub(crate) exclude_interfaces: Vec<Iface>,
    pub(crate) virtual_interfaces: Vec<Iface>,
    pub(crate) outbound_include: CidrSelection,
    pub(crate) outbound_exclude: Vec<Cidr>,
    pub(crate) outbound_ports_include: Vec<PortSpec>,
    pub(crate) outbound_ports_exclude: Vec<PortSpec>,
    pub(crate) owner_groups: OwnerGroups,
    /// The IPv4 loopback prefix (`ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`), host bits kept.
    pub(crate) loopback_v4: Cidr,
    pub(crate) dns: Dns,
    pub(crate) drop_invalid: bool,
    pub(crate) dual_stack: bool,
    pub(crate) ipv6: Ipv6Setting,
    pub(crate) dry_run: bool,
    /// `DRY_RUN_FILE_PATH`: where a dry run also writes its command stream in Istio's recorded
    /// format (istio-compat §4.6). Read only for a dry run (ignored otherwise, as Istio); empty is unset.
    pub(crate) dry_run_file: Option<OutFile>,
    pub skip_rule_apply: bool,
    pub run_validation: bool,
    pub(crate) probe_port: Port,
    pub(crate) probe_timeout: Duration,
    pub(crate) network_namespace: Option<String>,
    pub(crate) cni_mode: bool,
    pub(crate) reconcile: bool,
    pub(crate) cleanup_only: bool,
    pub(crate) force_apply: bool,
    pub(crate) native_nftables: bool,
    /// `--compact`: fewer rules with the same verdicts (meshcap's own; not Istio's rule text).
    pub(crate) compact: bool,
    pub(crate) force_iptables_binary: Option<IptablesVariant>,
    /// Seconds a legacy restore waits for the xtables lock (`--wait=N`): 30 as Istio, or
    /// `MESHCAP_XTABLES_WAIT` (meshcap's own variable, 1–3600).
    pub(crate) xtables_wait: u32,
    /// The most rules a plan may hold (both families, as the backend loads them): refused
    /// before the plan is built past it (`plan::budget`). `DEFAULT_MAX_RULES`, or
    /// `MESHCAP_MAX_RULES` (meshcap's own variable).
    pub(crate) max_rules: u64,
    /// Raw text of the flags as Istio's config dump prints them.
    pub(crate) dump: DumpText,
    /// Notes for the log (ignored flags, skipped resolv.conf entries), said once by the caller.
    pub(crate) warnings: Vec<String>,
}

/// The raw text of list settings, as Istio prints them in its config dump.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DumpText {
    pub(crate) inbound_ports: String,
    pub(crate) inbound_exclude_ports: String,
    pub(crate) owner_groups_include: String,
    pub(crate) owner_groups_exclude: String,
    pub(crate) outbound_include: String,
    pub(crate) outbound_exclude: String,
    pub(crate) outbound_ports_include: String,
    pub(crate) outbound_ports_exclude: String,
    pub(crate) virtual_interfaces: String,
    pub(crate) exclude_interfaces: String,
}

/// The files the configuration step reads.
#[derive(Debug, Clone)]
pub struct HostFiles {
    pub(crate) passwd: String,
    pub(crate) resolv_conf: String,
}

impl Default for HostFiles {
    fn default() -> Self {
        HostFiles {
            passwd: "/etc/passwd".into(),
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

/// Before an apply or a live check: refuses an owner-group list iptables-restore cannot load
/// and any user or group name that meshcap's `/etc/passwd` and `/etc/group` do not list — the
/// files iptables-restore and nft read (`--network-namespace` changes only the network
/// namespace, never the mount namespace). Reads only.
pub(crate) fn check_loadable_on_host(cfg: &Config) -> Result<()> {
    use crate::sys::host::{GROUP, Ids, PASSWD};
    if let Some(e) = too_many_groups_for_iptables(cfg) {
        return Err(e);
    }
    let ids = Ids::from_host()?;
    match unresolved_names(cfg, &ids, PASSWD, GROUP).into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

impl Config {
    /// Validates flags and environment, reading the passwd and resolv.conf files of `files`
    /// where the configuration needs them.
    pub fn from_flags(flags: &CaptureFlags, env: &Env, files: &HostFiles, ipv6: Ipv6Setting) -> Result<Config> {
        let i = &mut source::Input {
            flags,
            env,
            warnings: Vec::new(),
        };
        // The order of the reads is the order of the errors and notes (see the module doc).
        let ports = ports::proxy_ports(i)?;
        let interception = interception::interception(i)?;
        let inbound = ports::inbound_ports(i)?;
        let interfaces = interfaces::interfaces(i)?;
        let destinations = destinations::destinations(i)?;
        let outbound_ports = ports::outbound_ports(i)?;
        let groups = owners::owner_groups(i)?;
        let loopback_v4 = destinations::loopback_v4(i)?;
        let switches = switches::switches(i)?;
        interfaces.check_for_nft(switches.native_nftables)?;
        switches::removed_flags(i)?;
        let probe = validation::probe(i)?;
        let execution = execution::execution(i)?;
        let owners = owners::proxy_owners(i, files)?;
        let dns = dns::dns(i, files, switches.redirect_dns, switches.capture_all_dns)?;

        Ok(Config {
            proxy_port: ports.proxy,
            inbound_capture_port: ports.inbound_capture,
            inbound_tunnel_port: ports.inbound_tunnel,
            proxy_uids: owners.uids,
            proxy_gids: owners.gids,
            owner_sources: owners.sources,
            mode: interception.mode,
            mode_text: interception.mode_text,
            tproxy_mark: interception.tproxy_mark,
            tproxy_route_table: interception.tproxy_route_table,
            inbound_ports: inbound.ports,
            inbound_exclude_ports: inbound.exclude,
            exclude_interfaces: interfaces.exclude,
            virtual_interfaces: interfaces.virtual_,
            outbound_include: destinations.include,
            outbound_exclude: destinations.exclude,
            outbound_ports_include: outbound_ports.include,
            outbound_ports_exclude: outbound_ports.exclude,
            owner_groups: groups.groups,
            loopback_v4,
            dns,
            drop_invalid: switches.drop_invalid,
            dual_stack: switches.dual_stack,
            ipv6,
            dry_run: switches.dry_run,
            dry_run_file: switches.dry_run_file,
            skip_rule_apply: switches.skip_rule_apply,
            run_validation: switches.run_validation,
            probe_port: probe.port,
            probe_timeout: probe.timeout,
            network_namespace: execution.network_namespace,
            cni_mode: switches.cni_mode,
            reconcile: switches.reconcile,
            cleanup_only: switches.cleanup_only,
            force_apply: switches.force_apply,
            native_nftables: switches.native_nftables,
            compact: switches.compact,
            force_iptables_binary: execution.force_iptables_binary,
            xtables_wait: execution.xtables_wait,
            max_rules: execution.max_rules,
            dump: DumpText {
                inbound_ports: inbound.ports_text,
                inbound_exclude_ports: inbound.exclude_text,
                owner_groups_include: groups.include_text,
                owner_groups_exclude: groups.exclude_text,
                outbound_include: destinations.include_text,
                outbound_exclude: destinations.exclude_text,
                outbound_ports_include: outbound_ports.include_text,
                outbound_ports_exclude: outbound_ports.exclude_text,
                virtual_interfaces: interfaces.virtual_text,
                exclude_interfaces: interfaces.exclude_text,
            },
            warnings: std::mem::take(&mut i.warnings),
        })
    }

    /// The rule language the capture is written in.
    pub(crate) fn backend(&self) -> Backend {
        if self.native_nftables {
            Backend::Nft
        } else {
            Backend::Iptables
        }
    }

    /// `--native-nftables` / `NATIVE_NFTABLES`, parsed as every boolean is (for commands that
    /// must know the backend before a whole configuration exists, such as `--from-save`).
    pub(crate) fn native_nftables(flags: &CaptureFlags, env: &Env) -> Result<bool> {
        let input = source::Input {
            flags,
            env,
            warnings: Vec::new(),
        };
        input.flag_bool(&flags.native_nftables, "native-nftables", "NATIVE_NFTABLES", None)
    }

    /// `ENABLE_INBOUND_IPV6` / `--ipv6` as an explicit setting, if present.
    pub(crate) fn ipv6_setting(flag: &Option<String>, env: &Env) -> Result<Ipv6Setting> {
        match source::pick(flag, "ipv6", env, Some("ENABLE_INBOUND_IPV6"), None)? {
            Some(s) => Ok(Ipv6Setting::Explicit(source::parse_bool(&s)?)),
            None => Ok(Ipv6Setting::Detect),
        }
    }
}

/// The configuration of a test: flags and environment, no passwd or resolv.conf, IPv6 off.
#[cfg(test)]
mod testing {
    use super::*;

    pub(crate) fn cfg(flags: CaptureFlags, env: &[(&str, &str)]) -> Result<Config> {
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
}

#[cfg(test)]
mod tests {
    use super::testing::cfg;
    use super::*;

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
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn the_first_bad_value_in_reading_order_is_reported() {
        let flags = CaptureFlags {
            inbound_ports: Some("x".into()),
            ..Default::default()
        };
        let env = [("DRY_RUN", "yes"), ("INBOUND_TUNNEL_PORT", "0")];
        let e = cfg(flags, &env).unwrap_err().to_string();
        assert!(e.starts_with("invalid value '0' for 'INBOUND_TUNNEL_PORT'"), "{e}");
    }

    #[test]
    fn notes_keep_their_order() {
        let flags = CaptureFlags {
            inbound_ports: Some("80".into()),
            local_exclude_ports: Some("22".into()),
            restore_format: Some("true".into()),
            ..Default::default()
        };
        let env = [
            ("ISTIO_OUTBOUND_OWNER_GROUPS", "1"),
            ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "2"),
        ];
        let c = cfg(flags, &env).unwrap();
        assert_eq!(
            c.warnings,
            [
                "--istio-local-exclude-ports only applies with --istio-inbound-ports '*'; ignored",
                "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE is ignored because ISTIO_OUTBOUND_OWNER_GROUPS is not '*'",
                "--restore-format was removed in Istio 1.24 and has no effect",
            ]
        );
    }
}
