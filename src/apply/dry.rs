//! The dry run (`--dry-run`, `DRY_RUN=true`) of both backends: it reads the target namespace's
//! live state exactly as a real run reads it — the tables, the iptables variant the run would
//! choose, meshcap's chains or tables, drift against the plan, the other backend's capture, a
//! half-applied run of the same plan — and says what that run would do: apply (clean state),
//! nothing (already applied, unchanged), complete an interrupted run, rebuild (`--reconcile`,
//! `--force-apply`), or refuse, with the same `+`/`-` diff a real run prints, and the commands
//! with the binaries the real run would use. With a cleanup it says what would be removed.
//!
//! Never a write: every command goes through [`ReadOnly`], which runs only reads (`*-save`,
//! `--version`) and refuses anything else; the nftables state is a netlink dump, and the nft
//! decision runs with a netlink writer that refuses to send. The namespace's lock is
//! not held while reading: it is taken for an instant without waiting, only to report a real
//! run in progress (the state read may be half written), and released at once; a real run
//! starting in that instant retries 20 ms later, so a dry run never holds one up longer.
//!
//! Where the state cannot be read (no rights — a laptop as non-root —, the namespace cannot be
//! entered, a binary missing) the dry run says so and why, and prints the commands for a clean
//! namespace with the plain binary names, as Istio's dry run does; it still exits 0.
//!
//! The recorded stream (`DRY_RUN_FILE_PATH`, [`super::stream`]) is Istio's and does not depend
//! on what is read: only the log says what the real run would do.

use std::path::Path;

use crate::config::Config;
use crate::error::{Error, Refusal, Result};
use crate::iptables::parse::{Strictness, parse_save};
use crate::iptables::render::restore_payload;
use crate::live::{self, binaries::Binaries};
use crate::nft::ir::Transaction;
use crate::nft::lower::cleanup_transaction;
use crate::nft::netlink::{Message, socket};
use crate::plan::Plan;
use crate::sys::exec::{Cmd, ExecError, Output, RealSystem, System};
use crate::sys::kernel::{Kernel, LinuxKernel};
use crate::sys::netns::Netns;
use crate::values::Family;

use super::payloads::{self, Found};
use super::{Action, Ctx, FamilyState, Step, lock_mode, nft, restore_cmd};

/// A [`System`] that runs only the commands that read: a save, a `--version`. Anything else
/// is refused without being started.
pub(super) struct ReadOnly<'a>(pub(super) &'a dyn System);

/// Whether `cmd` only reads.
pub(super) fn reads_only(cmd: &Cmd) -> bool {
    let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
    cmd.stdin.is_none() && ((cmd.program.ends_with("-save") && args.is_empty()) || args == ["--version"])
}

impl System for ReadOnly<'_> {
    fn run(&self, cmd: &Cmd) -> Result<Output, ExecError> {
        if reads_only(cmd) {
            self.0.run(cmd)
        } else {
            Err(ExecError::Spawn {
                cmd: cmd.to_string(),
                why: "a dry run runs no command that writes".into(),
            })
        }
    }

    fn has_program(&self, program: &str) -> bool {
        self.0.has_program(program)
    }

    fn spawns(&self) -> usize {
        self.0.spawns()
    }
}

/// Where the dry run looks: the namespace (if one is named) and its kernel, or why the kernel
/// could not be opened.
pub(super) struct Target<'a> {
    pub(super) netns: Option<&'a Netns>,
    pub(super) kernel: std::result::Result<&'a LinuxKernel, &'a Error>,
}

impl Target<'_> {
    fn ns(&self) -> Option<&Path> {
        self.netns.map(Netns::path)
    }

    /// The kernel, when the state can be read; else why not.
    fn readable(&self) -> Result<&LinuxKernel, String> {
        let kernel = self.kernel.map_err(ToString::to_string)?;
        match kernel.netfilter_unreadable() {
            Some(why) => Err(why),
            None => Ok(kernel),
        }
    }

    /// Says when another meshcap works on the namespace now; never waits, holds the lock
    /// for an instant only.
    fn probe_lock(&self) {
        if let Err(Error::Busy { .. }) = crate::sys::netns::lock(self.netns, std::time::Duration::ZERO) {
            tracing::warn!(
                "dry run: another meshcap run is working on this namespace right now; the state read below may be half written"
            );
        }
    }
}

/// The warning that the live state was not read, and why.
fn unreadable(why: &str) {
    tracing::warn!(
        "dry run: the live state could not be read ({why}); showing what a real run would do in a clean namespace"
    );
}

/// A family's binaries as the log names them: `iptables-nft`, or the plain name with the
/// variant it turned out to be (`iptables, legacy`).
fn variant_name(b: &Binaries) -> String {
    if b.base.contains('-') {
        b.base.clone()
    } else {
        format!("{}, {}", b.base, b.variant.name())
    }
}

/// The iptables backend's dry run.
pub(super) fn iptables(config: &Config, plan: &Plan, target: &Target, cleanup: bool) -> Result<()> {
    let real = RealSystem::new(target.netns);
    let result = iptables_with(&real, config, plan, target, cleanup);
    tracing::debug!("{} processes spawned", real.spawns());
    result
}

fn iptables_with(real: &RealSystem, config: &Config, plan: &Plan, target: &Target, cleanup: bool) -> Result<()> {
    let kernel = match target.readable() {
        Ok(k) => k,
        Err(why) => {
            unreadable(&why);
            return clean_preview(config, plan, target.ns(), cleanup);
        }
    };
    target.probe_lock();
    let sys = ReadOnly(real);
    let ctx = Ctx {
        sys: &sys,
        kernel,
        config,
        ns: target.ns(),
    };
    let theirs = ctx.nft_backend_tables();
    if cleanup {
        tracing::info!("Performing cleanup of existing iptables");
        let steps = match ctx.cleanup_steps(plan, true) {
            Ok(s) => s,
            Err(e) => return unread_preview(config, plan, target.ns(), cleanup, &e),
        };
        if steps.is_empty() {
            tracing::info!("dry run: nothing to clean up: no iptables rules of meshcap's are live");
        }
        for (bins, input) in &steps {
            tracing::info!(
                "dry run: {} ({}): a real run would remove meshcap's rules with {}",
                bins.family,
                variant_name(bins),
                bins.restore()
            );
            show_restore(config, target.ns(), bins, input);
        }
        if !theirs.is_empty() {
            tracing::warn!("{}", super::nft_backend_left(&theirs));
        }
        routes_skipped();
        return Ok(());
    }
    if !theirs.is_empty() {
        // A real run refuses before it reads anything else.
        refused(&super::nft_backend_refusal(&theirs));
        routes_skipped();
        return Ok(());
    }
    let states = match ctx.read_states(plan) {
        Ok(s) => s,
        Err(e) => return unread_preview(config, plan, target.ns(), cleanup, &e),
    };
    let actions = match super::assess(&states, config, true) {
        Ok(a) => a,
        Err(Error::Refused(r)) => {
            refused(&r);
            routes_skipped();
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for (s, a) in states.iter().zip(&actions) {
        tracing::info!(
            "dry run: {} ({}): {}",
            s.bins.family,
            variant_name(&s.bins),
            verdict(s, *a, config)
        );
    }
    let leftovers = super::leftover_guardrails(&states);
    if actions.iter().all(|a| *a == Action::Nothing) {
        for s in leftovers {
            tracing::warn!(
                "dry run: a real run would remove the guardrails an interrupted meshcap run left in the {} filter table",
                s.bins.family
            );
        }
        routes_skipped();
        return Ok(());
    }
    if actions.contains(&Action::Rebuild) {
        tracing::info!(
            "dry run: a real run would set up guardrails (TCP and UDP dropped while it rebuilds), clean up meshcap's live rules and apply the plan in one restore per family, then remove the guardrails"
        );
    }
    tracing::info!("Applying iptables chains and rules");
    for Step { bins, input, .. } in super::restore_steps(&states, &actions) {
        show_restore(config, target.ns(), &bins, &input);
    }
    routes_skipped();
    Ok(())
}

/// What a real run does with one family, in words.
fn verdict(s: &FamilyState, action: Action, config: &Config) -> String {
    let with = s.bins.restore();
    match (action, &s.found) {
        (Action::Nothing, Found::Equal) => "nothing to do: the rules are already applied and unchanged".into(),
        (Action::Nothing, _) => {
            "nothing to do: no rules are planned for this family and none of meshcap's are live".into()
        }
        (Action::Apply, _) => format!("a real run would apply the rules (clean state) with {with}"),
        (Action::Rebuild, Found::Interrupted { .. }) => {
            format!("a real run would complete an interrupted run of this plan with {with}")
        }
        (Action::Rebuild, Found::Equal) => {
            format!("a real run would rebuild the unchanged rules (--force-apply) with {with}")
        }
        (Action::Rebuild, _) => {
            let why = if config.reconcile {
                "--reconcile"
            } else {
                "--force-apply"
            };
            format!("a real run would rebuild meshcap's rules ({why}) with {with}")
        }
    }
}

fn refused(r: &Refusal) {
    tracing::warn!("dry run: a real run would refuse: {r}");
}

fn routes_skipped() {
    tracing::info!("skipping configuring routes due to dry run mode");
}

/// One restore as a real run would start it, and its input.
fn show_restore(config: &Config, ns: Option<&Path>, bins: &Binaries, input: &str) {
    let cmd = restore_cmd(bins, input, true, ns, config.cni_mode, config.xtables_wait);
    tracing::info!("Running command (dry run, {}): {cmd}", lock_mode(&cmd));
    tracing::info!(
        "Running iptables restore with: {} and the following input:\n{}",
        bins.restore(),
        input.trim()
    );
}

/// The state could not be read part way (a save failed, a binary is missing): said, then the
/// clean namespace's commands.
fn unread_preview(config: &Config, plan: &Plan, ns: Option<&Path>, cleanup: bool, e: &Error) -> Result<()> {
    unreadable(&e.to_string());
    clean_preview(config, plan, ns, cleanup)
}

/// The commands a clean namespace gets, with the plain binary names (or the forced variant),
/// as Istio's dry run prints them.
fn clean_preview(config: &Config, plan: &Plan, ns: Option<&Path>, cleanup: bool) -> Result<()> {
    let bins = |f: Family| match config.force_iptables_binary {
        Some(variant) => Binaries::of(f, variant),
        None => Binaries::plain(f),
    };
    if cleanup {
        tracing::info!("Performing cleanup of existing iptables");
        for family in plan.families() {
            // What the cleanup removes from a namespace holding exactly this configuration.
            let rs = plan.ruleset(family);
            let live =
                parse_save(&restore_payload(&rs), Strictness::Lenient).map_err(|e| Error::inconsistent(family, e))?;
            let input = payloads::restore_input(&payloads::cleanup_lines(&rs, &live), None);
            if !input.is_empty() {
                show_restore(config, ns, &bins(family), &input);
            }
        }
    } else {
        tracing::info!("Applying iptables chains and rules");
        for family in plan.families() {
            show_restore(config, ns, &bins(family), &restore_payload(&plan.ruleset(family)));
        }
    }
    routes_skipped();
    Ok(())
}

/// The nftables backend's dry run (`--native-nftables`).
pub(super) fn nftables(config: &Config, plan: &Plan, target: &Target, cleanup: bool) -> Result<()> {
    let real = RealSystem::new(target.netns);
    let result = nftables_with(&real, config, plan, target, cleanup);
    tracing::debug!("{} processes spawned", real.spawns());
    result
}

fn nftables_with(real: &RealSystem, config: &Config, plan: &Plan, target: &Target, cleanup: bool) -> Result<()> {
    let kernel = match target.readable() {
        Ok(k) => k,
        Err(why) => {
            unreadable(&why);
            return nft_clean_preview(plan, target.ns(), cleanup);
        }
    };
    target.probe_lock();
    let sys = ReadOnly(real);
    let ours = live::nft::our_tables(kernel);
    if cleanup {
        tracing::info!("Performing cleanup of existing nftables rules");
        match ours {
            Some(t) if t.is_empty() => {
                tracing::info!("No nftables tables of meshcap's exist, nothing to clean up");
                tracing::info!("dry run: nothing to clean up: no nftables tables of meshcap's are live");
            }
            _ => {
                let names = ours.map_or("not listable over netlink".to_string(), |t| {
                    t.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
                });
                tracing::info!(
                    "dry run: a real run would delete meshcap's nftables tables ({names}) in one transaction"
                );
                show_nft(&cleanup_transaction(), target.ns());
            }
        }
        routes_skipped();
        return Ok(());
    }
    let ctx = nft::NftCtx {
        sys: &sys,
        kernel,
        config,
        ns: target.ns(),
        netlink: &NoBatch,
        live: &live::nft::Netlink { netns: target.netns },
    };
    let label = "nftables (netlink)";
    match ctx.decide(plan) {
        Ok(nft::Decision::Nothing(why)) => tracing::info!("dry run: {label}: nothing to do: {why}"),
        Ok(nft::Decision::Run { tx, verb, residue, .. }) => {
            tracing::info!("dry run: {label}: a real run would {verb} in one nf_tables batch");
            for r in &residue {
                let input =
                    payloads::restore_input(&payloads::cleanup_lines(&plan.ruleset(r.bins.family), &r.dump), None);
                tracing::info!(
                    "dry run: after the transaction a real run would remove the iptables backend's rules with {}:\n{}",
                    r.bins.restore(),
                    input.trim()
                );
            }
            tracing::info!("Applying nftables rules");
            show_nft(&tx, target.ns());
        }
        Err(Error::Refused(r)) => refused(&r),
        Err(e) => {
            unreadable(&e.to_string());
            return nft_clean_preview(plan, target.ns(), cleanup);
        }
    }
    routes_skipped();
    Ok(())
}

/// The dry run's [`nft::Netlink`]: it sends no batch (the decision it logs never reaches it).
struct NoBatch;

impl nft::Netlink for NoBatch {
    fn apply(&self, _: &[Message]) -> std::result::Result<(), socket::Error> {
        Err(socket::Error::Io(std::io::Error::other("a dry run sends no batch")))
    }
}

fn show_nft(tx: &Transaction, ns: Option<&Path>) {
    tracing::info!(
        "Running command (dry run, without lock): {}",
        nft::transaction_cmd(tx, ns)
    );
    tracing::info!("Running nft with the following input:\n{}", tx.to_string().trim_end());
    nft::log_planned_batch(tx);
}

/// The transaction a namespace without meshcap's tables gets (or the cleanup's), printed with
/// its command.
fn nft_clean_preview(plan: &Plan, ns: Option<&Path>, cleanup: bool) -> Result<()> {
    let tx = if cleanup {
        tracing::info!("Performing cleanup of existing nftables rules");
        cleanup_transaction()
    } else {
        nft::planned_transaction(plan)?
    };
    show_nft(&tx, ns);
    routes_skipped();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::exec::Recorder;

    #[test]
    fn only_reads_are_run() {
        let rec = Recorder::default();
        let ro = ReadOnly(&rec);
        for cmd in [
            Cmd::new("iptables-nft-save", [""; 0]),
            Cmd::new("ip6tables-legacy-save", ["--version"]),
            Cmd::new("nft", ["--version"]),
        ] {
            ro.run(&cmd).unwrap();
        }
        for cmd in [
            Cmd::new("iptables-nft-restore", ["--noflush"]).stdin("*nat\nCOMMIT\n"),
            Cmd::new("iptables-restore", [""; 0]),
            Cmd::new("nft", ["-f", "-"]).stdin("add table inet x\n"),
            Cmd::new("iptables-save", [""; 0]).stdin("x"),
            Cmd::new("nft", ["flush", "ruleset"]),
            Cmd::new("iptables", ["-t", "nat", "-F"]),
        ] {
            let e = ro.run(&cmd).unwrap_err().to_string();
            assert!(e.contains("a dry run runs no command that writes"), "{e}");
        }
        assert_eq!(rec.commands().len(), 3, "only the reads were started");
    }
}
