//! The native nftables backend of the apply command (`--native-nftables`, istio-compat §8) — the
//! same flow as the iptables backend in [`super`] (namespace, lock, IPv6 detection, plan,
//! state check, `--reconcile`, cleanup, routes, dry-run), with one `nft -f -` transaction in
//! place of the restores.
//!
//! Flow: the kernel lists the `inet` tables over netlink (no process); only if one of
//! meshcap's exists is the live state read, with one nf_tables netlink dump
//! ([`live::nft::read_state`], no process), and compared with the state the transaction produces
//! ([`crate::nft::ir::planned`]) by [`crate::drift::nft::compare`], as `check
//! --native-nftables` does: equal → nothing is done; different → refused without `--reconcile`
//! (the `+`/`-` diff names what differs); with `--reconcile` (or `--force-apply`) meshcap's live
//! tables are deleted and rebuilt in the same transaction. nft commits a transaction
//! atomically, so there is no window without capture (no guardrails needed) and a failed
//! transaction changed nothing (no rollback needed).
//!
//! The nft checks of istio-compat §8.1 step 6 with as few processes as correctness allows: the binary
//! is looked up in `PATH` (no process); its version (≥ 1.0.1) comes from one `nft --version`,
//! and only before a write; Istio's `nft --check` probe is not repeated, since the transaction
//! itself fails atomically with nft's message. Spawns: fresh namespace 2 (`--version`, `-f -`),
//! unchanged re-run 0, refused drift 0, reconcile 2, cleanup 2 (0 when no table of meshcap's
//! exists).
//!
//! The iptables backend's rules count as drift too (both live would capture twice): when the
//! kernel lists iptables tables (legacy or iptables-nft, free to ask), one `<variant>-save` per
//! such family and variant looks for `ISTIO_*` chains; `--reconcile` removes them with the
//! iptables backend's cleanup after the nft transaction succeeded, so capture never lapses.
//! The other way round the iptables backend refuses over this backend's tables ([`live::nft::our_tables`],
//! [`live::nft::tables_note`]), even with `--reconcile`: removing them is this backend's cleanup.

use std::path::Path;

use crate::config::Config;
use crate::error::{Error, Refusal, Result};
use crate::nft::ir::{self, NftOp, NftState, NftTable, Transaction};
use crate::nft::lower::{apply_transaction, cleanup_transaction};
use crate::plan::Plan;
use crate::sys::exec::{Cmd, System, run_ok};
use crate::sys::kernel::Kernel;

use super::payloads;
use crate::live::{self, iptables::Residue};

/// The program, looked up in `PATH`.
pub(crate) const NFT: &str = "nft";

/// The oldest nft meshcap (and Istio) accepts.
pub(crate) const MIN_VERSION: (u32, u32, u32) = (1, 0, 1);

/// `nft -f -` with `tx` on stdin, in `ns`.
pub(crate) fn transaction_cmd(tx: &Transaction, ns: Option<&Path>) -> Cmd {
    Cmd::new(NFT, ["-f", "-"]).stdin(tx.to_string()).netns(ns)
}

/// The transaction meshcap applies for `plan` (the rendered one plus the removal of unused
/// tables and chains).
pub(crate) fn planned_transaction(plan: &Plan) -> Result<Transaction> {
    apply_transaction(plan).map_err(|e| Error::inconsistent("nftables", e))
}

/// Checks an nft version text (`nftables v1.0.6 (Lester Gooch #5)` or `1.0.6`).
pub(crate) fn check_version(text: &str) -> Result<()> {
    let text = text.trim();
    let parsed = crate::live::binaries::parse_version(text)
        .or_else(|| crate::live::binaries::parse_version(&format!("v{text}")));
    match parsed {
        Some(v) if v >= MIN_VERSION => Ok(()),
        Some(_) => Err(Error::NftVersion {
            got: text.to_string(),
            readable: true,
        }),
        None => Err(Error::NftVersion {
            got: text.to_string(),
            readable: false,
        }),
    }
}

/// The nft backend's view of the target namespace.
pub(super) struct NftCtx<'a> {
    pub(crate) sys: &'a dyn System,
    pub(crate) kernel: &'a dyn Kernel,
    pub(crate) config: &'a Config,
    pub(crate) ns: Option<&'a Path>,
    /// The live nftables state (the kernel over netlink; a fixed state in unit tests).
    pub(crate) live: &'a dyn live::nft::NftReader,
}

impl NftCtx<'_> {
    fn reader(&self) -> live::iptables::Reader<'_> {
        live::iptables::Reader {
            sys: self.sys,
            kernel: self.kernel,
            force: self.config.force_iptables_binary,
            ns: self.ns,
        }
    }

    /// meshcap's tables that exist, when the kernel can tell without a process.
    fn our_tables(&self) -> Option<Vec<NftTable>> {
        live::nft::our_tables(self.kernel)
    }

    fn require_nft(&self) -> Result<()> {
        if self.sys.has_program(NFT) {
            Ok(())
        } else {
            Err(Error::NoNft {
                cni: self.config.cni_mode,
            })
        }
    }

    /// Checks the version, from the listing if one was read, else with `nft --version`.
    fn version_ok(&self, listed: Option<&str>) -> Result<()> {
        match listed {
            Some(v) => check_version(v),
            None => {
                let cmd = Cmd::new(NFT, ["--version"]);
                tracing::debug!("Running command (without lock): {cmd}");
                let out = run_ok(self.sys, &cmd).map_err(|e| Error::exec("could not run nftables command", e))?;
                check_version(&out.stdout)
            }
        }
    }

    /// Runs `tx` (atomic: on failure nothing changed).
    fn run(&self, tx: &Transaction) -> Result<()> {
        let cmd = transaction_cmd(tx, self.ns);
        tracing::debug!("Running command (without lock): {cmd}");
        run_ok(self.sys, &cmd).map_err(|err| Error::Exec {
            context: "nftables run failed".into(),
            err,
            notes: "; nothing was changed (the transaction is atomic)".into(),
        })?;
        tracing::info!("nftables rules programmed:\n{tx} \n");
        Ok(())
    }

    /// Removes the iptables backend's rules (after the nft rules are in place, so capture
    /// never lapses).
    fn remove_iptables_residue(&self, plan: &Plan, residue: &[Residue]) -> Result<()> {
        for r in residue {
            let input = payloads::restore_input(&payloads::cleanup_lines(&plan.ruleset(r.bins.family), &r.dump), None);
            tracing::info!(
                "Running iptables restore with: {} and the following input:\n{}",
                r.bins.restore(),
                input.trim()
            );
            let cmd = super::restore_cmd(
                &r.bins,
                &input,
                true,
                self.ns,
                self.config.cni_mode,
                self.config.xtables_wait,
            );
            tracing::debug!("Running command ({}): {cmd}", super::lock_mode(&cmd));
            run_ok(self.sys, &cmd).map_err(|e| {
                Error::exec(
                    "the nftables rules were applied, but removing meshcap's iptables rules failed",
                    e,
                )
            })?;
        }
        Ok(())
    }

    pub(crate) fn apply(&self, plan: &Plan) -> Result<()> {
        self.require_nft()?;
        let tx = planned_transaction(plan)?;
        let planned = ir::planned(&tx);
        let started = std::time::Instant::now();
        let live = match self.our_tables() {
            Some(t) if t.is_empty() => NftState::default(),
            _ => self.live.read()?,
        };
        let drift = crate::drift::nft::compare(&planned, &live, &crate::sys::host::Ids::from_host()?);
        tracing::debug!(
            "nftables state read back and compared in {} us",
            started.elapsed().as_micros()
        );
        let residue = self.reader().residue()?;
        let force = self.config.force_apply;
        if live.is_empty() && residue.is_empty() {
            tracing::info!("Clean-state detected, new nftables rules are needed");
            if planned.is_empty() {
                tracing::info!("There are no nftables rules to log");
                return Ok(());
            }
        } else if drift.is_clean() && residue.is_empty() {
            tracing::info!("Found compatible nftables rules, reconciliation not needed");
            if !force {
                return Ok(());
            }
        } else {
            if !live.is_empty() && !drift.is_clean() {
                tracing::info!("Found residues of old nftables rules, reconciliation is recommended");
            }
            if !residue.is_empty() {
                tracing::info!(
                    "Found residues of the iptables backend's rules (ISTIO_* chains), reconciliation is recommended"
                );
            }
            let mut summary = vec![drift.summary()];
            if !drift.is_clean() {
                tracing::info!("{}\n{}", drift.summary(), drift.lines());
            }
            for r in &residue {
                tracing::info!("{}", r.note());
                summary.push(r.note());
            }
            if !self.config.reconcile && !force {
                return Err(Error::Refused(Refusal::Drift {
                    rules: "istio-proxy-* nftables rules",
                    summary,
                    guarded: false,
                }));
            }
        }
        self.version_ok(live.version.as_deref())?;
        // Rebuild: meshcap's live tables are deleted first, in the same transaction, so
        // whatever they held (chains or sets meshcap does not use) goes and the result is
        // exactly a fresh apply; nft commits it atomically.
        let mut ops: Vec<NftOp> = live
            .tables
            .iter()
            .filter_map(|t| NftTable::from_name(t))
            .map(NftOp::DeleteTable)
            .collect();
        ops.extend(tx.ops);
        tracing::info!("Applying nftables rules");
        self.run(&Transaction { ops })?;
        self.remove_iptables_residue(plan, &residue)
    }

    /// `--cleanup-only` / `istio-clean-iptables`: deletes meshcap's tables, nothing else.
    pub(crate) fn cleanup(&self) -> Result<()> {
        tracing::info!("Performing cleanup of existing nftables rules");
        if self.our_tables().is_some_and(|t| t.is_empty()) {
            tracing::info!("No nftables tables of meshcap's exist, nothing to clean up");
            return Ok(());
        }
        self.require_nft()?;
        self.version_ok(None)?;
        self.run(&cleanup_transaction())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::tests::{FakeKernel, config};
    use crate::live::nft::NftReader;
    use crate::sys::exec::{Output, Recorder};

    fn lines(rec: &Recorder) -> Vec<String> {
        rec.commands().iter().map(|c| c.line()).collect()
    }

    fn kernel(tables: &[&str]) -> FakeKernel {
        FakeKernel {
            nft_inet: Some(tables.iter().map(|s| s.to_string()).collect()),
            ..FakeKernel::default()
        }
    }

    /// The live state the kernel would report, or a read that fails.
    struct Live(std::result::Result<NftState, &'static str>);

    impl NftReader for Live {
        fn read(&self) -> Result<NftState> {
            self.0
                .clone()
                .map_err(|why| Error::system("cannot read the live nftables ruleset", std::io::Error::other(why)))
        }
    }

    fn run_apply(sys: &dyn System, kernel: &dyn Kernel, c: &Config, p: &Plan, live: &NftState) -> Result<()> {
        NftCtx {
            sys,
            kernel,
            config: c,
            ns: None,
            live: &Live(Ok(live.clone())),
        }
        .apply(p)
    }

    /// Answers `--version` like nft `version`.
    fn nft(version: &'static str) -> Recorder {
        Recorder::new(move |cmd| match cmd.args.first().map(String::as_str) {
            Some("--version") => Ok(Output::ok(format!("nftables v{version} (Lester Gooch #5)\n"))),
            _ => Ok(Output::default()),
        })
    }

    fn sidecar() -> (Config, Plan) {
        config(crate::apply::tests::sidecar(), false)
    }

    #[test]
    fn a_fresh_namespace_costs_a_version_check_and_one_transaction() {
        let (c, p) = sidecar();
        let rec = nft("1.0.6");
        run_apply(&rec, &kernel(&["foreign"]), &c, &p, &NftState::default()).unwrap();
        assert_eq!(lines(&rec), ["nft --version", "nft -f -"]);
        let tx = planned_transaction(&p).unwrap().to_string();
        assert_eq!(rec.commands()[1].stdin.as_deref(), Some(tx.as_str()));
        assert!(tx.starts_with("add table inet istio-proxy-nat\nflush table inet istio-proxy-nat\n"));
    }

    #[test]
    fn equal_state_costs_no_process_and_drift_is_refused() {
        let (c, p) = sidecar();
        let live = ir::planned(&planned_transaction(&p).unwrap());
        let k = kernel(&["istio-proxy-nat"]);
        let rec = nft("1.0.6");
        run_apply(&rec, &k, &c, &p, &live).unwrap();
        assert!(lines(&rec).is_empty(), "{:?}", lines(&rec));

        let mut drifted = live.clone();
        let last = drifted.chains.keys().last().unwrap().clone();
        drifted.chains.remove(&last);
        let rec = nft("1.0.6");
        let e = run_apply(&rec, &k, &c, &p, &drifted).unwrap_err().to_string();
        assert!(e.contains("--reconcile") && e.contains("nftables: "), "{e}");
        assert!(lines(&rec).is_empty(), "nothing may be written: {:?}", lines(&rec));

        // --reconcile: the live table is rebuilt.
        let mut c = c;
        c.reconcile = true;
        let rec = nft("1.0.6");
        run_apply(&rec, &k, &c, &p, &drifted).unwrap();
        assert_eq!(lines(&rec), ["nft --version", "nft -f -"]);
        let input = rec.commands()[1].stdin.clone().unwrap();
        assert!(
            input.starts_with("delete table inet istio-proxy-nat\nadd table inet istio-proxy-nat\n"),
            "{input}"
        );
    }

    #[test]
    fn without_a_table_list_the_state_is_read() {
        let (c, p) = sidecar();
        let rec = nft("1.0.6");
        let live = ir::planned(&planned_transaction(&p).unwrap());
        run_apply(&rec, &FakeKernel::default(), &c, &p, &live).unwrap();
        assert!(lines(&rec).is_empty(), "{:?}", lines(&rec));
    }

    #[test]
    fn nft_missing_or_too_old_is_named() {
        let (c, p) = sidecar();
        let rec = Recorder::default().without_programs(&[NFT]);
        let e = run_apply(&rec, &kernel(&[]), &c, &p, &NftState::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs the nft binary") && e.contains("'nft'"), "{e}");
        assert!(rec.commands().is_empty());
        for old in ["1.0.0", "0.9.8"] {
            let rec = nft(old);
            let e = run_apply(&rec, &kernel(&[]), &c, &p, &NftState::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("nft version must be v1.0.1 or later") && e.contains(old),
                "{e}"
            );
            assert_eq!(lines(&rec), ["nft --version"], "nothing written");
        }
        check_version("1.0.1").unwrap();
        check_version("nftables v1.1.0 (Commodore Bullmoose #1)").unwrap();
        assert!(check_version("garbage").is_err());
    }

    #[test]
    fn a_failed_transaction_is_reported_with_nfts_message() {
        let (c, p) = sidecar();
        let rec = Recorder::new(|cmd| match cmd.args.first().map(String::as_str) {
            Some("--version") => Ok(Output::ok("nftables v1.0.6\n")),
            _ => Ok(Output {
                code: 1,
                stdout: String::new(),
                stderr: "Error: Could not process rule: Operation not supported\n".into(),
            }),
        });
        let e = run_apply(&rec, &kernel(&[]), &c, &p, &NftState::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("nftables run failed: nft -f - failed with exit status 1: Error: Could not process rule"),
            "{e}"
        );
        assert!(e.contains("nothing was changed"), "{e}");
        let rec = nft("1.0.6");
        let e = NftCtx {
            sys: &rec,
            kernel: &kernel(&["istio-proxy-raw"]),
            config: &c,
            ns: None,
            live: &Live(Err("boom")),
        }
        .apply(&p)
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("cannot read the live nftables ruleset") && e.contains("boom"),
            "{e}"
        );
        assert!(rec.commands().is_empty(), "nothing may be written");
    }

    #[test]
    fn the_iptables_backends_rules_are_drift_and_reconcile_removes_them() {
        let (c, p) = sidecar();
        let save = crate::iptables::render::restore_payload(&p.ruleset(crate::values::Family::V4));
        let k = FakeKernel {
            nft: [Some(vec![crate::model::TableName::Nat]), Some(vec![])],
            nft_inet: Some(vec![]),
            ..FakeKernel::default()
        };
        let respond = move |cmd: &Cmd| match cmd.program.as_str() {
            "iptables-nft-save" => Ok(Output::ok(save.clone())),
            _ => Ok(Output::ok("nftables v1.0.6\n")),
        };
        let rec = Recorder::new(respond.clone());
        let e = run_apply(&rec, &k, &c, &p, &NftState::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("also exist in the iptables-nft tables (IPv4): nat/ISTIO_INBOUND"),
            "{e}"
        );
        assert_eq!(lines(&rec), ["iptables-nft-save"], "nothing written");

        let mut c = c;
        c.reconcile = true;
        let rec = Recorder::new(respond);
        run_apply(&rec, &k, &c, &p, &NftState::default()).unwrap();
        assert_eq!(
            lines(&rec),
            [
                "iptables-nft-save",
                "nft --version",
                "nft -f -",
                "iptables-nft-restore --noflush"
            ]
        );
        let cleanup = rec.commands()[3].stdin.clone().unwrap();
        assert!(
            cleanup.contains("-X ISTIO_OUTPUT") && !cleanup.contains("-A "),
            "{cleanup}"
        );
    }

    #[test]
    fn cleanup_runs_only_when_a_table_of_meshcaps_exists() {
        let (c, _) = sidecar();
        let rec = nft("1.0.6");
        let clean = |k: &FakeKernel| {
            NftCtx {
                sys: &rec,
                kernel: k,
                config: &c,
                ns: None,
                live: &Live(Err("a cleanup reads no state")),
            }
            .cleanup()
        };
        clean(&kernel(&["foreign"])).unwrap();
        assert!(rec.commands().is_empty());
        clean(&kernel(&["istio-proxy-mangle", "foreign"])).unwrap();
        assert_eq!(lines(&rec), ["nft --version", "nft -f -"]);
        assert_eq!(
            rec.commands()[1].stdin.as_deref(),
            Some(cleanup_transaction().to_string().as_str())
        );
    }
}
