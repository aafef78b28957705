//! Kernel-equal oracle for the netlink writer: for every nft golden case (Istio's corpus beside
//! the checkout, read at test time, and meshcap's own under `golden/`) and for random
//! configurations (the property tests' generator, and `--compact` ones with thousands of
//! CIDRs and ports), meshcap's batch (`from_ir::lower` of the transaction, sent over its own
//! socket) in one fresh namespace and `nft -f` of the same transaction's text in another leave
//! the same kernel state: (a) `nft -j list ruleset` equal without handles, and (b) the raw
//! netlink dumps decoded with the codec equal without handles and transaction ids — which
//! catches what the listing hides (set flags and user data, element boundaries, registers,
//! expression forms).
//!
//! Each golden case also re-applies on top as `--reconcile` does (delete meshcap's tables, then
//! the transaction, in one batch) and then cleans up; the namespaces are flushed between
//! configurations and removed at the end.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use crate::props::{Case, case as prop_case};
use crate::support::api::{
    HostIds, NetlinkError, NetlinkRuleset as Ruleset, NftOp, Socket, TargetNetns, Transaction, apply_transaction,
    cleanup_transaction, netlink_lower, nft_transaction, render_plan,
};
use crate::support::{Netns, TempDir, needs_netns};

/// Random configurations per run (plus [`COMPACT_CASES`]); `PROPTEST_CASES=N` overrides it.
const CASES: usize = 100;
/// `--compact` configurations with thousands of CIDRs and hundreds of ports.
const COMPACT_CASES: usize = 6;

/// Two fresh namespaces: `a` gets meshcap's batch, `b` gets `nft -f`.
struct Pair {
    a: Netns,
    b: Netns,
    ids: HostIds,
    /// How many transactions both sides refused.
    refused: std::cell::Cell<usize>,
}

fn strip_handles(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("handle");
            m.values_mut().for_each(strip_handles);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

/// The dump without what differs by construction: handles (and rule positions, which are
/// handles), transaction ids; set elements in key order.
fn normalized(mut rs: Ruleset) -> Ruleset {
    for t in &mut rs.tables {
        t.handle = None;
    }
    for c in &mut rs.chains {
        (c.handle, c.id) = (None, None);
    }
    for s in &mut rs.sets {
        (s.handle, s.id) = (None, None);
    }
    for r in &mut rs.rules {
        (r.handle, r.position, r.id, r.position_id) = (None, None, None, None);
    }
    for e in &mut rs.elements {
        e.set_id = None;
        e.elements.sort_by(|x, y| (&x.key, x.flags).cmp(&(&y.key, y.flags)));
    }
    rs
}

/// The first lines where two texts differ.
fn first_differences(a: &str, b: &str) -> String {
    let diff: Vec<String> = a
        .lines()
        .zip(b.lines())
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .take(12)
        .map(|(i, (x, y))| format!("line {i}:\n  netlink: {x}\n  nft -f:  {y}"))
        .collect();
    format!(
        "{} (netlink {} lines, nft -f {} lines)",
        diff.join("\n"),
        a.lines().count(),
        b.lines().count()
    )
}

impl Pair {
    fn new() -> Pair {
        Pair {
            a: Netns::new("fromir-nl"),
            b: Netns::new("fromir-nft"),
            ids: HostIds::from_host().expect("read /etc/passwd and /etc/group"),
            refused: std::cell::Cell::new(0),
        }
    }

    fn reset(&self) {
        for ns in [&self.a, &self.b] {
            let out = ns.run("nft", &["flush", "ruleset"]);
            assert!(out.status.success(), "nft flush ruleset failed");
        }
    }

    fn listing(ns: &Netns) -> serde_json::Value {
        let out = ns.run("nft", &["-j", "list", "ruleset"]);
        assert!(
            out.status.success(),
            "nft -j list ruleset: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft JSON");
        strip_handles(&mut v);
        v
    }

    fn dump(ns: &Netns) -> Ruleset {
        let target = TargetNetns::open(ns.path().to_str().unwrap()).expect("open namespace");
        let rs = target
            .run_in(|| Socket::open().map_err(NetlinkError::Io)?.ruleset(0))
            .expect("enter namespace")
            .expect("dump the ruleset");
        normalized(rs)
    }

    /// Applies `tx` both ways on top of what the namespaces hold and compares the results.
    fn check(&self, tx: &Transaction) -> Result<(), String> {
        let text = tx.to_string();
        // A transaction nft cannot program (an owner name /etc/passwd or /etc/group lacks)
        // cannot be lowered either: both sides then refuse and leave the state alone.
        let ours: Result<(), String> = match netlink_lower(tx, &self.ids) {
            Err(e) => Err(format!("lowering refused: {e}")),
            Ok(lowered) => {
                let target = TargetNetns::open(self.a.path().to_str().unwrap()).expect("open namespace");
                let msgs = lowered.messages;
                target
                    .run_in(move || Socket::open().map_err(NetlinkError::Io)?.apply(&msgs, None))
                    .expect("enter namespace")
                    .map_err(|e| e.to_string())
            }
        };
        let theirs = self.b.run_with_stdin("nft", &["-f", "-"], &text);
        match (&ours, theirs.status.success()) {
            (Ok(()), true) => {}
            (Err(e), true) => return Err(format!("the kernel refused meshcap's batch: {e}\n{text}")),
            (Ok(()), false) => {
                return Err(format!(
                    "nft -f refused what meshcap's batch applied: {}\n{text}",
                    String::from_utf8_lossy(&theirs.stderr)
                ));
            }
            // Both refused: both must have left the state as it was (compared below).
            (Err(e), false) => {
                eprintln!("REFUSED: {e}");
                self.refused.set(self.refused.get() + 1)
            }
        }
        let (la, lb) = (Self::listing(&self.a), Self::listing(&self.b));
        if la != lb {
            let (x, y) = (
                serde_json::to_string_pretty(&la).unwrap(),
                serde_json::to_string_pretty(&lb).unwrap(),
            );
            return Err(format!("listings differ:\n{}", first_differences(&x, &y)));
        }
        let (da, db) = (Self::dump(&self.a), Self::dump(&self.b));
        if da != db {
            let (x, y) = (format!("{da:#?}"), format!("{db:#?}"));
            return Err(format!("netlink dumps differ:\n{}", first_differences(&x, &y)));
        }
        if !da.unknown.is_empty() {
            return Err(format!(
                "the dump holds messages the codec does not type: {:?}",
                da.unknown
            ));
        }
        Ok(())
    }

    /// A configuration from scratch: its transaction, the `--reconcile` rebuild on top (its
    /// tables deleted and built again in one batch), and with `cleanup` the clean-up.
    fn check_config(&self, tx: &Transaction, cleanup: bool) -> Result<(), String> {
        self.reset();
        self.check(tx).map_err(|e| format!("fresh apply: {e}"))?;
        let mut reconcile = Transaction::default();
        // `--reconcile` deletes the tables that are live: those the transaction left.
        let mut live = Vec::new();
        for op in &tx.ops {
            match op {
                NftOp::AddTable(t) if !live.contains(t) => live.push(*t),
                NftOp::DeleteTable(t) => live.retain(|x| x != t),
                _ => {}
            }
        }
        reconcile.ops = live.into_iter().map(NftOp::DeleteTable).collect();
        reconcile.ops.extend(tx.ops.iter().cloned());
        self.check(&reconcile).map_err(|e| format!("rebuild on top: {e}"))?;
        if cleanup {
            self.check(&cleanup_transaction())
                .map_err(|e| format!("cleanup: {e}"))?;
        }
        Ok(())
    }
}

/// `args` lines (an empty line is an empty argument) and `env` lines of a case directory.
fn read_case(dir: &Path) -> (Vec<String>, Vec<(String, String)>) {
    let args = std::fs::read_to_string(dir.join("args")).expect("read args");
    let mut args: Vec<String> = args.lines().map(String::from).collect();
    if args.first().map(String::as_str) == Some("render") {
        args.remove(0);
    }
    let env = std::fs::read_to_string(dir.join("env")).unwrap_or_default();
    let env = env
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (args, env)
}

/// Every nft render case: Istio's corpus (when it is beside the checkout) and meshcap's own.
fn golden_cases() -> (Vec<PathBuf>, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let shared = root.join("../shared/golden-istio/nftables");
    if let Ok(dirs) = std::fs::read_dir(&shared) {
        out.extend(dirs.flatten().map(|d| d.path()).filter(|p| p.join("args").is_file()));
    }
    let shared_count = out.len();
    for d in std::fs::read_dir(root.join("golden")).expect("golden/").flatten() {
        let p = d.path();
        let args = std::fs::read_to_string(p.join("args")).unwrap_or_default();
        if p.join("expected.nft").is_file() && args.lines().any(|l| l == "--native-nftables") {
            out.push(p);
        }
    }
    out.sort();
    (out, shared_count)
}

#[test]
fn every_nft_golden_case_programs_the_kernel_as_nft_f_does() {
    needs_netns!();
    let (cases, shared) = golden_cases();
    if shared == 0 {
        eprintln!("note: Istio's corpus (../shared/golden-istio/nftables) is not beside the checkout");
    } else {
        assert_eq!(shared, 20, "Istio's nftables corpus has 20 cases");
    }
    assert!(
        cases.len() - shared >= 20,
        "meshcap's own nft goldens: {}",
        cases.len() - shared
    );
    let pair = Pair::new();
    let mut failures = Vec::new();
    for dir in &cases {
        let (args, env) = read_case(dir);
        let plan = render_plan(&args, &env, dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let rendered = nft_transaction(&plan).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let applied = apply_transaction(&plan).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for (what, tx, cleanup) in [("rendered", &rendered, false), ("applied", &applied, true)] {
            if let Err(e) = pair.check_config(tx, cleanup) {
                failures.push(format!("{} ({what}): {e}", dir.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn cidr_v4() -> impl Strategy<Value = String> {
    (any::<[u8; 4]>(), 8u8..=32).prop_map(|(a, len)| format!("{}/{len}", std::net::Ipv4Addr::from(a)))
}

fn cidr_v6() -> impl Strategy<Value = String> {
    (any::<u128>(), 16u8..=128).prop_map(|(a, len)| format!("{}/{len}", std::net::Ipv6Addr::from(a)))
}

fn ports(n: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => (1u16..=65535).prop_map(|p| p.to_string()),
            1 => (1u16..=65535, 0u16..200).prop_map(|(a, w)| format!("{a}:{}", a.saturating_add(w))),
        ],
        n,
    )
    .prop_map(|v| v.join(","))
}

prop_compose! {
    /// `--compact` with thousands of CIDRs of both families and long port lists.
    fn compact_case()(
        v4 in prop::collection::vec(cidr_v4(), 1000..3000),
        v6 in prop::collection::vec(cidr_v6(), 0..600),
        split in 0usize..1000,
        tproxy in any::<bool>(),
        include_all in any::<bool>(),
        p in (ports(50..300), ports(50..300), ports(0..100)),
    ) -> Case {
        let mut all: Vec<String> = v4;
        all.extend(v6);
        let at = split.min(all.len());
        let (include, exclude) = all.split_at(at);
        let mut args: Vec<String> = ["render", "-p", "15001", "-z", "15006", "-u", "1337", "-g", "1337"]
            .map(String::from)
            .to_vec();
        args.extend(["-m".into(), if tproxy { "TPROXY" } else { "REDIRECT" }.into()]);
        let include = if include_all || include.is_empty() { "*".to_string() } else { include.join(",") };
        args.extend(["-i".into(), include, "-x".into(), exclude.join(",")]);
        args.extend(["-b".into(), p.0, "-d".into(), p.1, "-o".into(), p.2]);
        args.extend(["--compact".into(), "--ipv6".into()]);
        Case { args, env: Vec::new(), resolv_conf: None }
    }
}

#[test]
fn random_configurations_program_the_kernel_as_nft_f_does() {
    needs_netns!();
    let tmp = TempDir::new("fromir");
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let count = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let mut cases: Vec<Case> = (0..count)
        .map(|_| prop_case().new_tree(&mut runner).expect("generate a case").current())
        .collect();
    cases.extend((0..COMPACT_CASES).map(|_| compact_case().new_tree(&mut runner).expect("generate").current()));
    let pair = Pair::new();
    let mut checked = 0;
    for (i, c) in cases.iter().enumerate() {
        let mut args: Vec<String> = c.args[1..].to_vec();
        args.push("--native-nftables".into());
        if let Some(text) = &c.resolv_conf {
            let path = tmp.path().join(format!("resolv-{i}.conf"));
            std::fs::write(&path, text).expect("write resolv.conf");
            args.extend(["--resolv-conf".into(), path.display().to_string()]);
        }
        let plan = render_plan(&args, &c.env, tmp.path()).unwrap_or_else(|e| panic!("case {c:?}: {e}"));
        let tx = apply_transaction(&plan).unwrap_or_else(|e| panic!("case {c:?}: {e}"));
        if let Err(e) = pair.check_config(&tx, false) {
            panic!("case {i} differs: {e}\ncase: {c:#?}");
        }
        checked += 1;
    }
    assert!(checked >= 100, "{checked} configurations");
    // Refused by both sides (owner names this host lacks): compared, but not programmed.
    assert!(
        pair.refused.get() * 10 < checked,
        "{} of {checked} refused",
        pair.refused.get()
    );
}
