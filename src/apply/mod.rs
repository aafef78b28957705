//! The apply command (`meshcap istio-iptables FLAGS`, and `istio-clean-iptables`): program
//! the plan into the kernel of the target network namespace with the iptables backend, safely
//! and idempotently (istio-compat §5, with the improvements of §10.2).
//!
//! Flow: validate → open the namespace → detect IPv6 → plan → refuse where the nftables
//! backend's `inet istio-proxy-*` tables exist (listed over netlink, no process; both would
//! capture every packet; the cleanup leaves them and says so) → per family choose the binaries
//! ([`binaries`]) and read the live state with one `<variant>-save` (only when a table exists)
//! → compare it with the plan, order-sensitively ([`payloads::found`]) → nothing (equal), apply
//! (absent), refuse (different, without `--reconcile`), or rebuild under guardrails (cleanup of
//! what is actually live and the new rules in one restore per family, each table atomic) →
//! roll every touched table back if any restore fails → TPROXY routing ([`crate::apply::routes`])
//! → `--run-validation` ([`crate::probe`]).
//! `--dry-run` reads the live state read-only and says what a real run would do ([`dry`]);
//! it changes nothing. With `--native-nftables` the rules go
//! through the nft backend ([`nft`]) instead; everything around them is shared.

pub(crate) mod diagnose;
mod dry;
pub mod nft;
pub(crate) mod payloads;
pub(crate) mod routes;
pub(crate) mod shapes;
pub(crate) mod stream;

use std::fmt::Write as _;
use std::path::Path;

use crate::cli::CaptureFlags;
use crate::config::{Config, ECHOED_ENV, HostFiles, IptablesVariant, Ipv6Setting};
use crate::error::{Error, Refusal, Result};
use crate::iptables::parse::SaveDump;
use crate::iptables::render::restore_payload;
use crate::model::{Ruleset, TableName};
use crate::nft::ir::NftTable;
use crate::plan::{self, Plan};
use crate::sys::exec::{Cmd, ExecError, RealSystem, System, run_ok};
use crate::sys::host::Env;
use crate::sys::kernel::{Kernel, LinuxKernel, detect_ipv6};
use crate::sys::netns::Netns;
use crate::sys::outfile::Pending;

use crate::probe as validate;
use crate::values::Family;

use crate::live::{self, binaries::Binaries};
use payloads::Found;

/// Runs the command; `cleanup_cmd` is `istio-clean-iptables`.
pub(crate) fn run(flags: &CaptureFlags, env: &Env, cleanup_cmd: bool) -> Result<()> {
    let ipv6_setting = Config::ipv6_setting(&None, env)?;
    let config = Config::from_flags(flags, env, &HostFiles::default(), ipv6_setting)?;
    // The rule limit before anything is opened: exact with an explicit IPv6 setting, else the
    // IPv4-only count (a lower bound; `plan::build_for` checks the full one once IPv6 is known).
    plan::budget::check(&config, ipv6_setting == Ipv6Setting::Explicit(true))?;
    let native_nft = config.native_nftables;
    let cleanup = cleanup_cmd || config.cleanup_only;
    // Checked before anything else happens; written once the stream is complete.
    let stream_file = config
        .dry_run_file
        .as_ref()
        .map(|f| Pending::open(f, "DRY_RUN_FILE_PATH"))
        .transpose()?;
    if native_nft {
        tracing::info!("native nftables enabled, using nft rules for traffic redirection.");
    }
    if config.dry_run {
        let what = if native_nft { "nftables" } else { "iptables" };
        tracing::info!("running {what} in dry-run mode, no rule changes will be made");
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if !cleanup && !config.dry_run && !config.skip_rule_apply {
        // Before anything runs: what iptables-restore or nft would refuse at load time.
        crate::config::check_loadable_on_host(&config)?;
    }
    if !config.dry_run && env.get("DRY_RUN_FILE_PATH").is_some_and(|v| !v.is_empty()) {
        // Not read (as Istio): a real run records nothing, so say so instead of staying silent.
        tracing::warn!(
            "DRY_RUN_FILE_PATH is set but this is not a dry run: nothing is written to it (add --dry-run or DRY_RUN=true)"
        );
    }
    let netns = config.network_namespace.as_deref().map(Netns::open).transpose()?;
    // Entered once, on this thread, for the whole run (lock, kernel facts, reads, writes).
    let _inside = crate::sys::netns::enter(netns.as_ref());
    // One meshcap at a time per namespace, taken before anything is read, so concurrent runs
    // cannot interleave their reads and writes (a rollback never undoes another run's rules).
    let _lock = if config.dry_run {
        None
    } else {
        Some(crate::sys::netns::lock(
            netns.as_ref(),
            std::time::Duration::from_secs(60),
        )?)
    };
    // A dry run goes on without the kernel (it says why).
    let kernel = match LinuxKernel::open(netns.as_ref()) {
        Err(e) if config.dry_run => Err(e),
        k => Ok(k?),
    };
    let ipv6 = match (ipv6_setting, &kernel) {
        (Ipv6Setting::Explicit(on), _) => on,
        // Cleanup looks at both families whatever the addresses say.
        (Ipv6Setting::Detect, _) if cleanup => true,
        (Ipv6Setting::Detect, Ok(k)) => detect_ipv6(&k.addresses()?, config.dual_stack)?.1,
        (Ipv6Setting::Detect, Err(e)) => {
            tracing::warn!("dry run: IPv6 could not be detected ({e}); showing the IPv4 rules only");
            false
        }
    };
    tracing::info!(
        "{}",
        env_dump_titled(env, if native_nft { "nftables" } else { "iptables" })
    );
    tracing::info!("{}", config_dump(&config, ipv6));
    if config.skip_rule_apply {
        // No rules step, no command: the stream is empty.
        if let Some(file) = stream_file {
            file.commit(b"")?;
        }
        return validate::after_rules(&config, netns.as_ref());
    }
    let plan = plan::build_for(&config, ipv6)?;
    plan.validate(config.backend())
        .map_err(|(family, e)| Error::inconsistent(family, e))?;
    let ns_path = netns.as_ref().map(Netns::path);
    if config.dry_run {
        let target = dry::Target {
            netns: netns.as_ref(),
            kernel: kernel.as_ref(),
        };
        let recorded = if native_nft {
            dry::nftables(&config, &plan, &target, cleanup)?;
            stream::nft(&plan, cleanup)?
        } else {
            dry::iptables(&config, &plan, &target, cleanup)?;
            stream::iptables(&plan, cleanup)
        };
        if let Some(file) = stream_file {
            file.commit(crate::sys::exec::recorded_stream(&recorded).as_bytes())?;
        }
        return validate::after_rules(&config, netns.as_ref());
    }
    let Ok(kernel) = kernel else {
        unreachable!("a real run fails when the kernel cannot be opened")
    };
    // From here until the routes are done, a terminating signal waits for the run to finish
    // (or roll back): a family is never left half applied by a Ctrl-C or a `kill`.
    let deferred = crate::sys::signals::Deferred::new();
    let sys = RealSystem::new(netns.as_ref());
    let result = if native_nft {
        let netlink = nft::KernelNetlink { netns: netns.as_ref() };
        let ctx = nft::NftCtx {
            sys: &sys,
            kernel: &kernel,
            config: &config,
            ns: ns_path,
            live: &live::nft::Netlink { netns: netns.as_ref() },
            netlink: &netlink,
        };
        let result = if cleanup { ctx.cleanup() } else { ctx.apply(&plan) };
        tracing::debug!("{} processes spawned", sys.spawns());
        result
    } else {
        let ctx = Ctx {
            sys: &sys,
            kernel: &kernel,
            config: &config,
            ns: ns_path,
        };
        let result = if cleanup { ctx.cleanup(&plan) } else { ctx.apply(&plan) };
        tracing::debug!("{} processes spawned", sys.spawns());
        if tracing::enabled!(tracing::Level::DEBUG) {
            ctx.final_state_dump(&plan);
        }
        result
    };
    let result = result.and_then(|()| {
        // Routes belong to whichever backend's capture is present: a cleanup of one backend
        // leaves them to the other backend's rules that still need them.
        let other = if cleanup {
            other_backend_capture(&sys, &kernel, &config, ns_path)?
        } else {
            None
        };
        routes_step(&kernel, &config, &plan, cleanup, other.as_deref())
    });
    drop(deferred);
    if let Some(sig) = crate::sys::signals::Deferred::pending() {
        let outcome = match &result {
            Ok(()) => "the run was finished first".to_string(),
            Err(e) => format!("the run failed: {e}"),
        };
        return Err(Error::Interrupted { signal: sig, outcome });
    }
    if let Some(ns) = netns.as_ref().filter(|ns| !ns.still_named()) {
        // meshcap's descriptor kept the namespace alive, so the commands ran, but into a
        // namespace nobody can reach any more: the pod is gone or the path was reused.
        return Err(Error::NetnsDeleted {
            path: ns.path().display().to_string(),
            run: result.err().map(Box::new),
        });
    }
    result?;
    validate::after_rules(&config, netns.as_ref())
}

/// After a cleanup: the capture of the other backend that is still live (the nftables
/// backend's tables after an iptables cleanup, the iptables backend's chains after an nftables
/// one), named for the log; `None` when there is none.
fn other_backend_capture(
    sys: &dyn System,
    kernel: &dyn Kernel,
    config: &Config,
    ns: Option<&Path>,
) -> Result<Option<String>> {
    if config.native_nftables {
        let reader = live::iptables::Reader {
            sys,
            kernel,
            force: config.force_iptables_binary,
            ns,
        };
        let residue = reader.residue()?;
        Ok((!residue.is_empty()).then(|| {
            let bases: Vec<String> = residue.iter().map(|r| r.bins.base.clone()).collect();
            format!("the iptables backend's ISTIO_* chains ({})", bases.join(", "))
        }))
    } else {
        let tables = live::nft::our_tables(kernel).unwrap_or_default();
        Ok((!tables.is_empty()).then(|| {
            let names: Vec<&str> = tables.iter().map(|t| t.name()).collect();
            format!("the nftables backend's tables ({})", names.join(", "))
        }))
    }
}

/// TPROXY policy routing and `::6` (both backends): programmed after the rules, removed on
/// cleanup unless `other` (the other backend's capture) is still live and needs them.
fn routes_step(kernel: &dyn Kernel, config: &Config, plan: &Plan, cleanup: bool, other: Option<&str>) -> Result<()> {
    if let (true, Some(other)) = (cleanup, other) {
        tracing::info!("Kept the policy routing and the ::6 address: {other} still capture with them");
        return Ok(());
    }
    let changes = if cleanup {
        routes::cleanup(kernel, config.tproxy_mark, config.tproxy_route_table)
    } else {
        routes::apply(kernel, &plan.routes)
    }
    .map_err(|e| Error::Routes(Box::new(e)))?;
    for c in changes {
        tracing::info!("{c}");
    }
    Ok(())
}

/// Istio's environment dump (istio-compat §6.1), its header naming the backend (`iptables`,
/// `nftables`).
pub(crate) fn env_dump_titled(env: &Env, backend: &str) -> String {
    let mut s = format!("Istio {backend} environment:\n");
    for name in ECHOED_ENV {
        // Raw, as Istio prints them (a value shadowed by a flag is not validated, so control
        // characters are escaped).
        let _ = writeln!(s, "{name}={}", crate::error::printable(env.get(name).unwrap_or("")));
    }
    s
}

/// Istio's config dump (istio-compat §6.1), with `ENABLE_INBOUND_IPV6` as resolved.
pub(crate) fn config_dump(c: &Config, ipv6: bool) -> String {
    let list = |v: &[crate::values::Owner]| v.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(",");
    let ips = |v: Vec<String>| v.join(" ");
    let d = &c.dump;
    let force = c.force_iptables_binary.map_or("", IptablesVariant::name);
    let mut s = String::from("Istio config:\n");
    let pairs: Vec<(&str, String)> = vec![
        ("PROXY_PORT", c.proxy_port.to_string()),
        ("PROXY_INBOUND_CAPTURE_PORT", c.inbound_capture_port.to_string()),
        ("PROXY_TUNNEL_PORT", c.inbound_tunnel_port.to_string()),
        ("PROXY_UID", list(&c.proxy_uids)),
        ("PROXY_GID", list(&c.proxy_gids)),
        ("INBOUND_INTERCEPTION_MODE", c.mode_text.clone()),
        ("INBOUND_TPROXY_MARK", c.tproxy_mark.to_string()),
        ("INBOUND_TPROXY_ROUTE_TABLE", c.tproxy_route_table.to_string()),
        ("INBOUND_PORTS_INCLUDE", d.inbound_ports.clone()),
        ("INBOUND_PORTS_EXCLUDE", d.inbound_exclude_ports.clone()),
        ("OUTBOUND_OWNER_GROUPS_INCLUDE", d.owner_groups_include.clone()),
        ("OUTBOUND_OWNER_GROUPS_EXCLUDE", d.owner_groups_exclude.clone()),
        ("OUTBOUND_IP_RANGES_INCLUDE", d.outbound_include.clone()),
        ("OUTBOUND_IP_RANGES_EXCLUDE", d.outbound_exclude.clone()),
        ("OUTBOUND_PORTS_INCLUDE", d.outbound_ports_include.clone()),
        ("OUTBOUND_PORTS_EXCLUDE", d.outbound_ports_exclude.clone()),
        ("KUBE_VIRT_INTERFACES", d.virtual_interfaces.clone()),
        ("ENABLE_INBOUND_IPV6", ipv6.to_string()),
        ("DUAL_STACK", c.dual_stack.to_string()),
        ("DNS_CAPTURE", c.dns.redirect.to_string()),
        ("DROP_INVALID", c.drop_invalid.to_string()),
        ("CAPTURE_ALL_DNS", c.dns.capture_all.to_string()),
        (
            "DNS_SERVERS",
            format!(
                "[{}],[{}]",
                ips(c.dns.servers_v4.iter().map(|a| a.to_string()).collect()),
                // Zoned servers as Istio prints them (after the others; Istio keeps file order).
                ips(c
                    .dns
                    .servers_v6
                    .iter()
                    .map(|a| a.to_string())
                    .chain(c.dns.zoned_v6.iter().cloned())
                    .collect())
            ),
        ),
        ("NETWORK_NAMESPACE", c.network_namespace.clone().unwrap_or_default()),
        ("CNI_MODE", c.cni_mode.to_string()),
        ("EXCLUDE_INTERFACES", d.exclude_interfaces.clone()),
        ("RECONCILE", c.reconcile.to_string()),
        ("CLEANUP_ONLY", c.cleanup_only.to_string()),
        ("FORCE_APPLY", c.force_apply.to_string()),
        ("NATIVE_NFTABLES", c.native_nftables.to_string()),
        ("FORCE_IPTABLES_BINARY", force.to_string()),
    ];
    for (k, v) in pairs {
        let _ = writeln!(s, "{k}={v}");
    }
    s
}

fn restore_cmd(bins: &Binaries, input: &str, noflush: bool, ns: Option<&Path>, cni: bool, wait: u32) -> Cmd {
    let mut args: Vec<String> = Vec::new();
    if noflush {
        args.push("--noflush".into());
    }
    args.extend(bins.wait_flag(wait));
    let mut cmd = Cmd::new(bins.restore(), args).stdin(input).netns(ns);
    if cni
        && bins.lockfile_env()
        && let Some(p) = ns
    {
        // Pod-scoped lock; the rest of the environment is kept (Istio replaces it, §10.2 item 8).
        cmd = cmd.env("XTABLES_LOCKFILE", p.display().to_string());
    }
    cmd
}

fn lock_mode(cmd: &Cmd) -> &'static str {
    if cmd.env.iter().any(|(k, _)| k == "XTABLES_LOCKFILE") {
        "local lock by env"
    } else if cmd.args.iter().any(|a| a.starts_with("--wait")) {
        "with global lock"
    } else {
        "without lock"
    }
}

/// The refusal of the iptables backend where the nftables backend's tables are live (`tables`
/// not empty): both would capture every packet. Worded like the nftables backend's refusal of
/// the iptables backend's rules (what was found; nothing was changed; the remedy).
pub(crate) fn nft_backend_refusal(tables: &[NftTable]) -> Refusal {
    Refusal::NftBackend {
        tables: live::nft::tables_note(tables),
    }
}

/// What the iptables backend's cleanup says about the nftables backend's tables it leaves.
pub(crate) fn nft_backend_left(tables: &[NftTable]) -> String {
    format!(
        "{}; the iptables cleanup does not remove them and they still capture packets: remove them with --cleanup-only --native-nftables",
        live::nft::tables_note(tables)
    )
}

/// What apply does with each family's live state (the same order as `states`), logged as
/// apply logs it (Istio's lines where they are true, the interrupted run, the `+`/`-` diff);
/// the drift refusal when there is drift and neither `--reconcile` nor `--force-apply`. `dry`:
/// the words of a dry run, which only says what a real run would do.
fn assess(states: &[FamilyState], config: &Config, dry: bool) -> Result<Vec<Action>> {
    let force = config.force_apply;
    let actions: Vec<Action> = states
        .iter()
        .map(|s| match &s.found {
            Found::Equal if force => Action::Rebuild,
            Found::Equal => Action::Nothing,
            Found::Absent if s.planned.is_empty() => Action::Nothing,
            Found::Absent => Action::Apply,
            Found::Differs { .. } | Found::Interrupted { .. } => Action::Rebuild,
        })
        .collect();
    let differs: Vec<&FamilyState> = states
        .iter()
        .filter(|s| matches!(s.found, Found::Differs { .. }))
        .collect();
    for s in states {
        if let Found::Interrupted { applied, missing } = &s.found {
            let names = |t: &[TableName]| t.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ");
            tracing::warn!(
                "[{}] found what an interrupted run of this same plan leaves (tables {} applied, {} missing); {}",
                s.bins.family,
                names(applied),
                names(missing),
                if dry {
                    "a real run would complete it"
                } else {
                    "completing it"
                }
            );
        }
    }
    if states.iter().all(|s| s.found == Found::Absent) {
        tracing::info!("Clean-state detected, new iptables are needed");
    } else if differs.is_empty() {
        tracing::info!("Found compatible residues of old iptables rules/chains, reconciliation not needed");
    } else {
        tracing::info!("Found residues of old iptables rules/chains, reconciliation is recommended");
        for s in &differs {
            if let Found::Differs { diff, summary } = &s.found {
                tracing::info!("{summary}\n{diff}");
            }
        }
        if !config.reconcile && !force {
            let summaries: Vec<String> = differs
                .iter()
                .filter_map(|s| match &s.found {
                    Found::Differs { summary, .. } => Some(summary.clone()),
                    _ => None,
                })
                .collect();
            return Err(Error::Refused(Refusal::Drift {
                rules: "ISTIO_* rules",
                summary: summaries,
                guarded: !leftover_guardrails(states).is_empty(),
            }));
        }
    }
    Ok(actions)
}

/// Guardrails a killed `--reconcile` left behind: removed once meshcap's rules are in place;
/// kept (failing closed) while they are not.
fn leftover_guardrails(states: &[FamilyState]) -> Vec<&FamilyState> {
    states
        .iter()
        .filter(|s| s.enabled && payloads::guardrails_present(&s.live))
        .collect()
}

/// One restore a run performs: the binaries, the save output read before it (for a rollback)
/// and the `--noflush` input.
struct Step {
    bins: Binaries,
    before: String,
    input: String,
}

/// Each family's restores in order (the other variant's cleanup first, then the family's own
/// input), empty inputs left out.
fn restore_steps(states: &[FamilyState], actions: &[Action]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (s, action) in states.iter().zip(actions) {
        match action {
            Action::Nothing => {}
            Action::Apply => steps.push(Step {
                bins: s.bins.clone(),
                before: s.before.clone(),
                input: restore_payload(&s.planned),
            }),
            Action::Rebuild => {
                for (ob, text, dump) in &s.others {
                    steps.push(Step {
                        bins: ob.clone(),
                        before: text.clone(),
                        input: payloads::restore_input(&payloads::cleanup_lines(&s.planned, dump), None),
                    });
                }
                steps.push(Step {
                    bins: s.bins.clone(),
                    before: s.before.clone(),
                    input: payloads::restore_input(&payloads::cleanup_lines(&s.planned, &s.live), Some(&s.planned)),
                });
            }
        }
    }
    steps.retain(|s| !s.input.is_empty());
    steps
}

/// One family's live state in the variant in use.
struct FamilyState {
    planned: Ruleset,
    /// Whether IPv6/IPv4 rules are wanted for this family (guardrails follow it).
    enabled: bool,
    bins: Binaries,
    /// The save output read before any change ("" when the variant had no table).
    before: String,
    live: SaveDump,
    /// Another variant that holds meshcap's rules too: its binaries, save output and dump.
    others: Vec<(Binaries, String, SaveDump)>,
    found: Found,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Nothing,
    Apply,
    Rebuild,
}

/// Tables a restore touched, to put back if a later step fails.
struct Touched {
    bins: Binaries,
    before: String,
    tables: Vec<TableName>,
}

struct Ctx<'a> {
    sys: &'a dyn System,
    kernel: &'a dyn Kernel,
    config: &'a Config,
    ns: Option<&'a Path>,
}

impl Ctx<'_> {
    fn restore(&self, bins: &Binaries, input: &str, noflush: bool) -> Result<(), ExecError> {
        let cmd = restore_cmd(
            bins,
            input,
            noflush,
            self.ns,
            self.config.cni_mode,
            self.config.xtables_wait,
        );
        tracing::debug!("Running command ({}): {cmd}", lock_mode(&cmd));
        run_ok(self.sys, &cmd)
            .map(drop)
            .map_err(|e| diagnose::annotate(e, input, self.config.xtables_wait))
    }

    /// The reader of the live iptables state, as `check` uses it too.
    fn reader(&self) -> live::iptables::Reader<'_> {
        live::iptables::Reader {
            sys: self.sys,
            kernel: self.kernel,
            force: self.config.force_iptables_binary,
            ns: self.ns,
        }
    }

    /// Reads `family`'s live state and compares it with the plan. `None` when the family is
    /// off and nothing of it can be there.
    fn read_family(&self, family: Family, planned: Ruleset, enabled: bool) -> Result<Option<FamilyState>> {
        let Some(l) = self.reader().read_family(family, enabled)? else {
            return Ok(None);
        };
        // Owner names as the restore resolved them (istio-iptables-save prints ids).
        let mut found = payloads::found(&planned, &l.live, &crate::sys::host::Ids::from_host()?);
        for (ob, _, _) in &l.others {
            let note = format!("meshcap's chains also exist in the {} tables", ob.base);
            found = match found {
                Found::Differs { summary, diff } => Found::Differs {
                    summary: format!("{summary}; {note}"),
                    diff,
                },
                _ => Found::Differs {
                    summary: format!("{family}: {note}"),
                    diff: String::new(),
                },
            };
        }
        tracing::debug!(
            "[{family}] using {} ({:?}); live state: {:?}",
            l.bins.base,
            l.bins.version,
            found
        );
        Ok(Some(FamilyState {
            planned,
            enabled,
            bins: l.bins,
            before: l.before,
            live: l.live,
            others: l.others,
            found,
        }))
    }

    /// The nftables backend's live tables (none when the kernel cannot list them: then
    /// nf_tables is unusable and none can exist, or the rights to ask are missing, and
    /// iptables-nft would fail as well).
    fn nft_backend_tables(&self) -> Vec<NftTable> {
        live::nft::our_tables(self.kernel).unwrap_or_else(|| {
            tracing::debug!(
                "the kernel does not list the nftables tables; meshcap's istio-proxy-* tables were not looked for"
            );
            Vec::new()
        })
    }

    /// Every family's live state, compared with the plan, as apply reads it before deciding.
    fn read_states(&self, plan: &Plan) -> Result<Vec<FamilyState>> {
        let mut states = Vec::new();
        for family in Family::ALL {
            let enabled = plan.families().contains(&family);
            if let Some(s) = self.read_family(family, plan.ruleset(family), enabled)? {
                states.push(s);
            }
        }
        Ok(states)
    }

    fn apply(&self, plan: &Plan) -> Result<()> {
        // Before anything is read or written: the nftables backend's tables are there (netlink,
        // no process), so these rules would capture every packet a second time.
        let theirs = self.nft_backend_tables();
        if !theirs.is_empty() {
            return Err(Error::Refused(nft_backend_refusal(&theirs)));
        }
        let states = self.read_states(plan)?;
        let force = self.config.force_apply;
        let actions = assess(&states, self.config, false)?;
        let leftovers = leftover_guardrails(&states);
        if actions.iter().all(|a| *a == Action::Nothing) {
            return self.remove_leftover_guardrails(&leftovers);
        }
        let rebuild = actions.contains(&Action::Rebuild);
        let mut guarded: Vec<&FamilyState> = Vec::new();
        if rebuild {
            tracing::info!("Setting up guardrails");
            for s in states.iter().filter(|s| s.enabled) {
                let input = payloads::guardrails_input(&s.live);
                if let Err(e) = self.restore(&s.bins, &input, true) {
                    let removal = self.remove_guardrails(&guarded);
                    return Err(Error::Exec {
                        context: "failed to set up the guardrails".into(),
                        err: e,
                        notes: removal,
                    });
                }
                guarded.push(s);
            }
            tracing::info!("Performing cleanup of existing iptables");
        }
        tracing::info!("Applying iptables chains and rules");
        let (mut touched, failure) = self.run_restores(&states, &actions);
        let mut notes = String::new();
        if failure.is_some() {
            // The failed restore may have committed some of its tables (each COMMIT is its
            // own transaction); skip its rollback only when a fresh read shows no change.
            if let Some(last) = touched.last()
                && self.unchanged(last)
            {
                touched.pop();
            }
            notes.push_str(&self.roll_back(&touched, &guarded));
        }
        if !guarded.is_empty() {
            tracing::info!("Removing guardrails");
            notes.push_str(&self.remove_guardrails(&guarded));
        }
        if let Some(err) = failure {
            return Err(Error::Exec {
                context: String::new(),
                err,
                notes,
            });
        }
        if !notes.is_empty() {
            return Err(Error::AppliedBut { notes });
        }
        if !rebuild {
            // (A rebuild replaced them with its own, removed above.)
            self.remove_leftover_guardrails(&leftovers)?;
        }
        if force && states.iter().any(|s| s.found == Found::Equal) {
            tracing::warn!(
                "The forced apply of iptables changes succeeded despite the presence of conflicting rules or chains. If you encounter this message, please consider reporting it as an issue."
            );
        }
        Ok(())
    }

    /// Runs each family's restores in order (the other variant's cleanup first, then the
    /// family's own input); stops at the first failure. Returns what was touched, for a
    /// rollback, and the failure.
    fn run_restores(&self, states: &[FamilyState], actions: &[Action]) -> (Vec<Touched>, Option<ExecError>) {
        let mut touched: Vec<Touched> = Vec::new();
        for Step { bins, before, input } in restore_steps(states, actions) {
            tracing::info!(
                "Running iptables restore with: {} and the following input:\n{}",
                bins.restore(),
                input.trim()
            );
            touched.push(Touched {
                tables: payloads::tables_of(&input),
                bins: bins.clone(),
                before,
            });
            if let Err(e) = self.restore(&bins, &input, true) {
                return (touched, Some(e));
            }
        }
        (touched, None)
    }

    /// Whether the tables of `t` still hold what was read before (counters and comments aside).
    fn unchanged(&self, t: &Touched) -> bool {
        let Ok(now) = self.reader().save(&t.bins) else {
            return false;
        };
        let keep = |text: &str| payloads::rollback_input(text, &t.tables, false);
        let strip = |text: String| -> String {
            text.lines()
                .map(|l| match l.rfind(" [") {
                    Some(i) if l.starts_with(':') => &l[..i],
                    _ => l,
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        strip(keep(&now)) == strip(keep(&t.before))
    }

    /// Puts every touched table back as it was read; returns a note for the error message.
    fn roll_back(&self, touched: &[Touched], guarded: &[&FamilyState]) -> String {
        let mut failed = Vec::new();
        for t in touched.iter().rev() {
            let guard = guarded.iter().any(|g| g.bins == t.bins);
            let input = payloads::rollback_input(&t.before, &t.tables, guard);
            tracing::info!(
                "Rolling back with: {} and the following input:\n{}",
                t.bins.restore(),
                input.trim()
            );
            if let Err(e) = self.restore(&t.bins, &input, false) {
                failed.push(e.to_string());
            }
        }
        let families: Vec<String> = {
            let mut f: Vec<Family> = touched.iter().map(|t| t.bins.family).collect();
            f.dedup();
            f.iter().map(|f| f.to_string()).collect()
        };
        if failed.is_empty() {
            if families.is_empty() {
                String::new()
            } else {
                format!("; the {} rules were rolled back", families.join(" and "))
            }
        } else {
            format!(
                "; the rollback failed too, the rules may be half applied: {}",
                failed.join("; ")
            )
        }
    }

    /// Removes the guardrails an interrupted run left, now that the rules are in place.
    fn remove_leftover_guardrails(&self, leftovers: &[&FamilyState]) -> Result<()> {
        for s in leftovers {
            tracing::warn!(
                "removing the guardrails an interrupted meshcap run left in the {} filter table",
                s.bins.family
            );
            self.restore(&s.bins, &payloads::guardrails_removal(), true)
                .map_err(|e| {
                    Error::exec(
                        "cannot remove the guardrails an interrupted run left (TCP and UDP are dropped)",
                        e,
                    )
                })?;
        }
        Ok(())
    }

    /// Removes the guardrails of `guarded`; returns a note for the error message ("" if fine).
    fn remove_guardrails(&self, guarded: &[&FamilyState]) -> String {
        let mut failed = Vec::new();
        for s in guarded {
            if let Err(e) = self.restore(&s.bins, &payloads::guardrails_removal(), true) {
                failed.push(e.to_string());
            }
        }
        if failed.is_empty() {
            String::new()
        } else {
            format!(
                "; removing the guardrails failed, TCP and UDP traffic is being dropped: {}",
                failed.join("; ")
            )
        }
    }

    /// `--cleanup-only` / `istio-clean-iptables`: remove meshcap's rules from both families,
    /// in every variant that holds them.
    fn cleanup(&self, plan: &Plan) -> Result<()> {
        tracing::info!("Performing cleanup of existing iptables");
        for (bins, input) in self.cleanup_steps(plan, false)? {
            tracing::info!(
                "Running iptables restore with: {} and the following input:\n{}",
                bins.restore(),
                input.trim()
            );
            self.restore(&bins, &input, true)?;
        }
        // The nftables backend's tables are not this backend's to remove (its cleanup is one
        // atomic nft transaction); said, so the capture they keep is no surprise.
        let theirs = self.nft_backend_tables();
        if !theirs.is_empty() {
            tracing::warn!("{}", nft_backend_left(&theirs));
        }
        Ok(())
    }

    /// The cleanup's restores: per family and variant holding meshcap's rules (or the
    /// guardrails an interrupted run left), its binaries and `--noflush` input. Reads only;
    /// `dry`: the words of a dry run.
    fn cleanup_steps(&self, plan: &Plan, dry: bool) -> Result<Vec<(Binaries, String)>> {
        let mut steps = Vec::new();
        for family in Family::ALL {
            let planned = plan.ruleset(family);
            for variant in [IptablesVariant::Legacy, IptablesVariant::Nft] {
                if !self.reader().has_tables(family, variant) {
                    continue;
                }
                let mut bins = Binaries::of(family, variant);
                if !self.sys.has_program(&bins.save()) || !self.sys.has_program(&bins.restore()) {
                    tracing::warn!(
                        "{} tables exist but {} is not installed; they {} cleaned",
                        variant.name(),
                        bins.base,
                        if dry { "would not be" } else { "were not" }
                    );
                    continue;
                }
                let text = self.reader().save(&bins)?;
                bins.version = live::binaries::parse_version(&text);
                let dump = self.reader().parse(&bins, &text)?;
                let mut lines = payloads::cleanup_lines(&planned, &dump);
                if payloads::guardrails_present(&dump) {
                    tracing::warn!(
                        "{} the guardrails an interrupted meshcap run left in {}",
                        if dry { "a real run would remove" } else { "removing" },
                        bins.base
                    );
                    lines
                        .entry(TableName::Filter)
                        .or_default()
                        .extend(payloads::guardrail_deletes());
                }
                let input = payloads::restore_input(&lines, None);
                if !input.is_empty() {
                    steps.push((bins, input));
                }
            }
        }
        Ok(steps)
    }

    fn final_state_dump(&self, plan: &Plan) {
        for family in plan.families() {
            let Ok(choice) = live::binaries::select(
                self.sys,
                self.kernel,
                family,
                self.config.force_iptables_binary,
                self.ns,
            ) else {
                continue;
            };
            if let Ok(text) = self.reader().save(&choice.bins) {
                tracing::debug!("Final iptables state ({family}):\n{text}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
