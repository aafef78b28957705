//! The native nftables backend of the apply command (`--native-nftables`, istio-compat §8) — the
//! same flow as the iptables backend in [`super`] (namespace, lock, IPv6 detection, plan,
//! state check, `--reconcile`, cleanup, routes, dry-run), with one nf_tables batch in place of
//! the restores.
//!
//! Flow: the kernel lists the `inet` tables over netlink (no process); only if one of
//! meshcap's exists is the live state read, with one nf_tables netlink dump
//! ([`live::nft::read_state`], no process), and compared with the state the transaction produces
//! ([`crate::nft::ir::planned`]) by [`crate::drift::nft::compare`], as `check
//! --native-nftables` does: equal → nothing is done; different → refused without `--reconcile`
//! (the `+`/`-` diff names what differs); with `--reconcile` (or `--force-apply`) meshcap's live
//! tables are deleted and rebuilt in the same transaction.
//!
//! Writing needs no `nft` binary and no process: the transaction is lowered to nf_tables
//! messages ([`crate::nft::netlink::from_ir`], the batch `nft -f` of its text would send) and
//! sent as one batch over a `NETLINK_NETFILTER` socket opened inside the target namespace. The
//! kernel commits a batch atomically, so there is no window without capture (no guardrails
//! needed) and a refused batch changed nothing (no rollback needed); a refusal is reported
//! naming the refused operation as `nft` text, with the errno and the kernel's message
//! ([`Error::NftRefused`]). Istio's `nft --version` and `nft --check` probes have no
//! counterpart: there is no nft to check. Spawns: none — fresh namespace, unchanged re-run,
//! refused drift, reconcile and cleanup all run without a process (an iptables backend's
//! residue costs one `<variant>-save` per family where the kernel lists iptables tables).
//! Into a namespace without meshcap's tables the batch leaves out what changes nothing there
//! (`changes_only`: the `flush table` of a new table, tables and chains added only to be
//! deleted), which spares the ~10 ms the kernel makes the socket's close wait after a batch
//! that deletes anything; the log still shows the whole transaction.
//!
//! The iptables backend's rules count as drift too (both live would capture twice): when the
//! kernel lists iptables tables (legacy or iptables-nft, free to ask), one `<variant>-save` per
//! such family and variant looks for `ISTIO_*` chains; `--reconcile` removes them with the
//! iptables backend's cleanup after the nft transaction succeeded, so capture never lapses.
//! The other way round the iptables backend refuses over this backend's tables ([`live::nft::our_tables`],
//! [`live::nft::tables_note`]), even with `--reconcile`: removing them is this backend's cleanup.

use std::path::Path;

use crate::config::Config;
use crate::error::{Error, NftRefusal, Refusal, Result};
use crate::nft::ir::{self, NftChain, NftOp, NftState, NftTable, Transaction};
use crate::nft::lower::{apply_transaction, cleanup_transaction};
use crate::nft::netlink::Message;
use crate::nft::netlink::from_ir::{self, Lowered};
use crate::nft::netlink::socket::{self, Socket};
use crate::plan::Plan;
use crate::sys::exec::{Cmd, System, run_ok};
use crate::sys::host::Ids;
use crate::sys::kernel::Kernel;
use crate::sys::netns::{self, Netns};

use super::payloads;
use crate::live::{self, iptables::Residue};

/// The program Istio runs (named in the dry run's command line; meshcap itself never runs it).
pub(crate) const NFT: &str = "nft";

/// `nft -f -` with `tx` on stdin, in `ns`: the command Istio runs, shown by the dry run.
pub(crate) fn transaction_cmd(tx: &Transaction, ns: Option<&Path>) -> Cmd {
    Cmd::new(NFT, ["-f", "-"]).stdin(tx.to_string()).netns(ns)
}

/// The transaction meshcap applies for `plan` (the rendered one plus the removal of unused
/// tables and chains).
pub(crate) fn planned_transaction(plan: &Plan) -> Result<Transaction> {
    apply_transaction(plan).map_err(|e| Error::inconsistent("nftables", e))
}

/// Sends one nf_tables batch into the target namespace.
pub(crate) trait Netlink {
    fn apply(&self, messages: &[Message]) -> std::result::Result<(), socket::Error>;
}

/// The real kernel: a `NETLINK_NETFILTER` socket opened inside the namespace (or the current
/// one), one per batch.
pub(crate) struct KernelNetlink<'a> {
    pub(crate) netns: Option<&'a Netns>,
}

impl Netlink for KernelNetlink<'_> {
    fn apply(&self, messages: &[Message]) -> std::result::Result<(), socket::Error> {
        netns::within(self.netns, || Socket::open()?.apply(messages, None))
            .map_err(|e| socket::Error::Io(std::io::Error::other(e.to_string())))?
    }
}

/// `tx` as nf_tables messages, owner names resolved from this host's files.
fn lowered(tx: &Transaction, ids: &Ids) -> Result<Lowered> {
    from_ir::lower(tx, ids).map_err(|e| Error::system("cannot build the nftables batch", e))
}

/// Logs the batch at debug level, one decoded line per message.
fn log_batch(l: &Lowered) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let mut lines = String::new();
    for m in &l.messages {
        lines.push('\n');
        lines.push_str(&m.to_string());
        if let Message::NewRule(r) = m {
            lines.push_str(&format!(": {:?}", r.exprs));
        }
    }
    tracing::debug!("nf_tables batch ({} messages):{lines}", l.messages.len());
}

/// The operations of `tx` that change a namespace holding none of meshcap's tables: without
/// the `flush table` of a table the transaction creates, and without the `add` + `delete` of a
/// table or chain it creates only to delete (what keeps a re-run from leaving stale ones).
/// The kernel ends in the same state either way, but a batch that deletes anything makes the
/// socket's close wait for the kernel's deferred clean-up of the deleted objects (an RCU grace
/// period, ~10 ms: most of a fresh apply's time), so a fresh apply sends only these.
fn changes_only(tx: &Transaction) -> Transaction {
    let with_rules: Vec<NftTable> = tx
        .ops
        .iter()
        .filter_map(|op| match op {
            NftOp::AddRule { table, .. } | NftOp::InsertRule { table, .. } => Some(*table),
            _ => None,
        })
        .collect();
    let dropped_table = |t: &NftTable| !with_rules.contains(t) && tx.ops.contains(&NftOp::DeleteTable(*t));
    let dropped_chain = |t: &NftTable, c: &NftChain| dropped_table(t) || tx.ops.contains(&NftOp::DeleteChain(*t, *c));
    let ops = tx
        .ops
        .iter()
        .filter(|op| match op {
            NftOp::FlushTable(_) => false,
            NftOp::AddTable(t) | NftOp::DeleteTable(t) => !dropped_table(t),
            NftOp::AddChain(t, c) | NftOp::DeleteChain(t, c) => !dropped_chain(t, c),
            NftOp::AddRule { .. } | NftOp::InsertRule { .. } => true,
        })
        .cloned()
        .collect();
    Transaction { ops }
}

/// Dry run: logs the nf_tables batch a real run would send for `tx`, at debug level (one
/// decoded line per message); the printed transaction stays Istio's text.
pub(super) fn log_planned_batch(tx: &Transaction) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        match Ids::from_host().and_then(|ids| lowered(tx, &ids)) {
            Ok(l) => log_batch(&l),
            Err(e) => tracing::debug!("no nf_tables batch: {e}"),
        }
    }
}

/// What an nftables apply does ([`NftCtx::decide`]); a refusal is an error.
pub(super) enum Decision {
    /// Nothing to send; why, in the dry run's words.
    Nothing(&'static str),
    /// One batch, then the removal of the iptables backend's `residue`.
    Run {
        /// meshcap's live tables deleted, then the planned transaction.
        tx: Transaction,
        /// None of meshcap's tables is live: only what changes the namespace is sent
        /// ([`changes_only`]).
        fresh: bool,
        /// What the batch does, in the dry run's words (`apply the rules (clean state)`).
        verb: &'static str,
        residue: Vec<Residue>,
        ids: Ids,
    },
}

/// The nft backend's view of the target namespace.
pub(super) struct NftCtx<'a> {
    pub(crate) sys: &'a dyn System,
    pub(crate) kernel: &'a dyn Kernel,
    pub(crate) config: &'a Config,
    pub(crate) ns: Option<&'a Path>,
    pub(crate) netlink: &'a dyn Netlink,
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

    /// Applies `tx` as one batch of `sent` (`tx`, or the part of it that changes the namespace:
    /// [`changes_only`]); atomic: on a refusal nothing changed.
    fn run(&self, tx: &Transaction, sent: &Transaction, ids: &Ids) -> Result<()> {
        let l = lowered(sent, ids)?;
        log_batch(&l);
        self.netlink.apply(&l.messages).map_err(|e| match e {
            socket::Error::Refused(refusals) => Error::NftRefused(
                refusals
                    .into_iter()
                    .map(|r| NftRefusal {
                        what: r
                            .index
                            .and_then(|i| l.origin.get(i))
                            .and_then(|op| sent.ops.get(*op))
                            .map_or_else(|| "the batch".to_string(), ToString::to_string),
                        errno: r.errno,
                        extack: r.extack,
                        part: r.part,
                    })
                    .collect(),
            ),
            other => Error::system("cannot program nftables over netlink", other),
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

    /// What an apply does with the namespace as it is now: reads meshcap's live tables (only if
    /// the kernel lists one) and the iptables backend's residue, compares them with the plan,
    /// logs what it found as Istio does, and decides. A refusal is the `Err`
    /// ([`Error::Refused`]). The real run executes the decision ([`Self::apply`]), the dry run
    /// logs it (`super::dry`): one decision, two uses.
    pub(super) fn decide(&self, plan: &Plan) -> Result<Decision> {
        let tx = planned_transaction(plan)?;
        let planned = ir::planned(&tx);
        let started = std::time::Instant::now();
        let live = match self.our_tables() {
            Some(t) if t.is_empty() => NftState::default(),
            _ => self.live.read()?,
        };
        let ids = Ids::from_host()?;
        let drift = crate::drift::nft::compare(&planned, &live, &ids);
        tracing::debug!(
            "nftables state read back and compared in {} us",
            started.elapsed().as_micros()
        );
        let residue = self.reader().residue()?;
        let force = self.config.force_apply;
        let verb = if live.is_empty() && residue.is_empty() {
            tracing::info!("Clean-state detected, new nftables rules are needed");
            if planned.is_empty() {
                tracing::info!("There are no nftables rules to log");
                return Ok(Decision::Nothing("no rules are planned and none of meshcap's are live"));
            }
            "apply the rules (clean state)"
        } else if drift.is_clean() && residue.is_empty() {
            tracing::info!("Found compatible nftables rules, reconciliation not needed");
            if !force {
                return Ok(Decision::Nothing("the rules are already applied and unchanged"));
            }
            "rebuild the unchanged rules (--force-apply)"
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
            if self.config.reconcile {
                "rebuild meshcap's tables (--reconcile)"
            } else {
                "rebuild meshcap's tables (--force-apply)"
            }
        };
        // Rebuild: meshcap's live tables are deleted first, in the same transaction, so
        // whatever they held (chains or sets meshcap does not use) goes and the result is
        // exactly a fresh apply; the kernel commits it atomically.
        let mut ops: Vec<NftOp> = live
            .tables
            .iter()
            .filter_map(|t| NftTable::from_name(t))
            .map(NftOp::DeleteTable)
            .collect();
        ops.extend(tx.ops);
        Ok(Decision::Run {
            tx: Transaction { ops },
            fresh: live.is_empty(),
            verb,
            residue,
            ids,
        })
    }

    /// Applies `plan`: executes [`Self::decide`]'s decision.
    pub(crate) fn apply(&self, plan: &Plan) -> Result<()> {
        let Decision::Run {
            tx,
            fresh,
            residue,
            ids,
            ..
        } = self.decide(plan)?
        else {
            return Ok(());
        };
        tracing::info!("Applying nftables rules");
        if fresh {
            self.run(&tx, &changes_only(&tx), &ids)?;
        } else {
            self.run(&tx, &tx, &ids)?;
        }
        self.remove_iptables_residue(plan, &residue)
    }

    /// `--cleanup-only` / `istio-clean-iptables`: deletes meshcap's tables, nothing else.
    pub(crate) fn cleanup(&self) -> Result<()> {
        tracing::info!("Performing cleanup of existing nftables rules");
        if self.our_tables().is_some_and(|t| t.is_empty()) {
            tracing::info!("No nftables tables of meshcap's exist, nothing to clean up");
            return Ok(());
        }
        let tx = cleanup_transaction();
        self.run(&tx, &tx, &Ids::from_host()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::tests::{FakeKernel, config};
    use crate::live::nft::NftReader;
    use crate::nft::netlink::Refusal as NlRefusal;
    use crate::sys::exec::{Output, Recorder};
    use std::cell::RefCell;

    fn lines(rec: &Recorder) -> Vec<String> {
        rec.commands().iter().map(|c| c.line()).collect()
    }

    fn kernel(tables: &[&str]) -> FakeKernel {
        FakeKernel {
            nft_inet: Some(tables.iter().map(|s| s.to_string()).collect()),
            ..FakeKernel::default()
        }
    }

    /// Records every batch; refuses the last message of each with `refuse` (an errno).
    #[derive(Default)]
    struct FakeNetlink {
        batches: RefCell<Vec<Vec<Message>>>,
        refuse: Option<i32>,
    }

    impl Netlink for FakeNetlink {
        fn apply(&self, messages: &[Message]) -> std::result::Result<(), socket::Error> {
            self.batches.borrow_mut().push(messages.to_vec());
            match self.refuse {
                None => Ok(()),
                Some(errno) => Err(socket::Error::Refused(vec![NlRefusal {
                    index: Some(messages.len() - 1),
                    what: messages.last().map(Message::describe).unwrap_or_default(),
                    errno,
                    extack: Some("chain not found".into()),
                    offset: None,
                    part: Some("expression 2 (immediate)".into()),
                }])),
            }
        }
    }

    impl FakeNetlink {
        /// The batches as the `nft` text of the tables, chains and rules they create.
        fn summary(&self) -> Vec<Vec<String>> {
            self.batches
                .borrow()
                .iter()
                .map(|b| b.iter().map(ToString::to_string).collect())
                .collect()
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

    fn run_with(
        sys: &dyn System,
        kernel: &dyn Kernel,
        c: &Config,
        p: &Plan,
        nl: &FakeNetlink,
        live: &Live,
    ) -> Result<()> {
        NftCtx {
            sys,
            kernel,
            config: c,
            ns: None,
            netlink: nl,
            live,
        }
        .apply(p)
    }

    fn run_apply(
        sys: &dyn System,
        kernel: &dyn Kernel,
        c: &Config,
        p: &Plan,
        nl: &FakeNetlink,
        live: &NftState,
    ) -> Result<()> {
        run_with(sys, kernel, c, p, nl, &Live(Ok(live.clone())))
    }

    /// A system where every process succeeds silently (none is expected on the nft path).
    fn nft() -> Recorder {
        Recorder::new(|_| Ok(Output::default()))
    }

    fn sidecar() -> (Config, Plan) {
        config(crate::apply::tests::sidecar(), false)
    }

    #[test]
    fn a_fresh_namespace_costs_no_process_and_one_batch() {
        let (c, p) = sidecar();
        let rec = nft();
        let nl = FakeNetlink::default();
        run_apply(&rec, &kernel(&["foreign"]), &c, &p, &nl, &NftState::default()).unwrap();
        assert!(lines(&rec).is_empty(), "{:?}", lines(&rec));
        let tx = planned_transaction(&p).unwrap();
        let sent_tx = changes_only(&tx);
        let want = from_ir::lower(&sent_tx, &Ids::from_host().unwrap()).unwrap().messages;
        assert_eq!(*nl.batches.borrow(), vec![want]);
        // Nothing that changes nothing: no flush, no table or chain added only to be deleted;
        // and the state it leaves is the full transaction's.
        let sent = &nl.summary()[0];
        assert_eq!(sent[0], "add table inet istio-proxy-nat");
        assert!(
            sent.iter().all(|m| !m.starts_with("delete") && !m.starts_with("flush")),
            "{sent:?}"
        );
        assert!(sent.iter().all(|m| !m.contains("istio-proxy-raw")), "{sent:?}");
        assert!(sent_tx.ops.len() < tx.ops.len());
        assert_eq!(ir::planned(&sent_tx), ir::planned(&tx));
    }

    #[test]
    fn equal_state_costs_no_process_and_drift_is_refused() {
        let (c, p) = sidecar();
        let live = ir::planned(&planned_transaction(&p).unwrap());
        let k = kernel(&["istio-proxy-nat"]);
        let rec = nft();
        let nl = FakeNetlink::default();
        run_apply(&rec, &k, &c, &p, &nl, &live).unwrap();
        assert!(lines(&rec).is_empty(), "{:?}", lines(&rec));
        assert!(nl.batches.borrow().is_empty());

        let mut drifted = live.clone();
        let last = drifted.chains.keys().last().unwrap().clone();
        drifted.chains.remove(&last);
        let rec = nft();
        let e = run_apply(&rec, &k, &c, &p, &nl, &drifted).unwrap_err().to_string();
        assert!(e.contains("--reconcile") && e.contains("nftables: "), "{e}");
        assert!(lines(&rec).is_empty(), "nothing may be written: {:?}", lines(&rec));
        assert!(nl.batches.borrow().is_empty(), "nothing may be written");

        // --reconcile: the live table is rebuilt in the same batch.
        let mut c = c;
        c.reconcile = true;
        let rec = nft();
        run_apply(&rec, &k, &c, &p, &nl, &drifted).unwrap();
        assert!(lines(&rec).is_empty(), "{:?}", lines(&rec));
        let batch = &nl.summary()[0];
        assert_eq!(
            batch[..2],
            ["delete table inet istio-proxy-nat", "add table inet istio-proxy-nat"]
        );
    }

    #[test]
    fn without_a_table_list_the_state_is_read() {
        let (c, p) = sidecar();
        let rec = nft();
        let nl = FakeNetlink::default();
        let live = ir::planned(&planned_transaction(&p).unwrap());
        run_apply(&rec, &FakeKernel::default(), &c, &p, &nl, &live).unwrap();
        assert!(lines(&rec).is_empty(), "{:?}", lines(&rec));
        assert!(nl.batches.borrow().is_empty(), "the read state is the planned one");
    }

    #[test]
    fn no_nft_binary_is_needed_to_write() {
        let (c, p) = sidecar();
        let rec = Recorder::default().without_programs(&[NFT]);
        let nl = FakeNetlink::default();
        run_apply(&rec, &kernel(&[]), &c, &p, &nl, &NftState::default()).unwrap();
        assert!(rec.commands().is_empty());
        assert_eq!(nl.batches.borrow().len(), 1);
    }

    #[test]
    fn a_refused_batch_names_the_operation_as_nft_text() {
        let (c, p) = sidecar();
        let rec = nft();
        let nl = FakeNetlink {
            refuse: Some(libc::ENOENT),
            ..FakeNetlink::default()
        };
        let e = run_apply(&rec, &kernel(&[]), &c, &p, &nl, &NftState::default()).unwrap_err();
        let tx = planned_transaction(&p).unwrap();
        // The fake refuses the batch's last message: the last operation sent (a rule), named
        // as nft text.
        let last = changes_only(&tx).ops.last().unwrap().to_string();
        assert!(last.starts_with("add rule inet "), "{last}");
        let Error::NftRefused(r) = &e else { panic!("{e}") };
        assert_eq!(r[0].what, last);
        assert_eq!(
            e.to_string(),
            format!(
                "the kernel refused the nftables transaction, nothing was changed: '{last}': No such file or \
                 directory (os error 2) (chain not found) in expression 2 (immediate)"
            )
        );
        let e = run_with(&rec, &kernel(&["istio-proxy-raw"]), &c, &p, &nl, &Live(Err("boom")))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read the live nftables ruleset"), "{e}");
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
            _ => Ok(Output::default()),
        };
        let rec = Recorder::new(respond.clone());
        let nl = FakeNetlink::default();
        let e = run_apply(&rec, &k, &c, &p, &nl, &NftState::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("also exist in the iptables-nft tables (IPv4): nat/ISTIO_INBOUND"),
            "{e}"
        );
        assert_eq!(lines(&rec), ["iptables-nft-save"], "nothing written");
        assert!(nl.batches.borrow().is_empty());

        let mut c = c;
        c.reconcile = true;
        let rec = Recorder::new(respond);
        run_apply(&rec, &k, &c, &p, &nl, &NftState::default()).unwrap();
        assert_eq!(lines(&rec), ["iptables-nft-save", "iptables-nft-restore --noflush"]);
        assert_eq!(nl.batches.borrow().len(), 1);
        let cleanup = rec.commands()[1].stdin.clone().unwrap();
        assert!(
            cleanup.contains("-X ISTIO_OUTPUT") && !cleanup.contains("-A "),
            "{cleanup}"
        );
    }

    #[test]
    fn cleanup_runs_only_when_a_table_of_meshcaps_exists() {
        let (c, _) = sidecar();
        let rec = nft();
        let nl = FakeNetlink::default();
        let clean = |k: &FakeKernel| {
            NftCtx {
                sys: &rec,
                kernel: k,
                config: &c,
                ns: None,
                netlink: &nl,
                live: &Live(Ok(NftState::default())),
            }
            .cleanup()
        };
        clean(&kernel(&["foreign"])).unwrap();
        assert!(nl.batches.borrow().is_empty());
        clean(&kernel(&["istio-proxy-mangle", "foreign"])).unwrap();
        assert!(rec.commands().is_empty());
        assert_eq!(
            nl.summary(),
            vec![
                [
                    "add table inet istio-proxy-nat",
                    "delete table inet istio-proxy-nat",
                    "add table inet istio-proxy-mangle",
                    "delete table inet istio-proxy-mangle",
                    "add table inet istio-proxy-raw",
                    "delete table inet istio-proxy-raw",
                ]
                .map(String::from)
                .to_vec()
            ]
        );
    }
}
