//! The apply flow against a recording system and a fake kernel: which commands run, in which
//! order, and what happens when one fails.

use std::cell::RefCell;
use std::net::IpAddr;

use super::*;
use crate::sys::exec::{Output, Recorder};

#[derive(Default)]
pub(crate) struct FakeKernel {
    pub(crate) legacy: [Vec<TableName>; 2],
    pub(crate) nft: [Option<Vec<TableName>>; 2],
    /// The `inet` tables (`None`: the kernel does not say).
    pub(crate) nft_inet: Option<Vec<String>>,
    pub(crate) log: RefCell<Vec<String>>,
}

fn idx(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl Kernel for FakeKernel {
    fn addresses(&self) -> Result<Vec<IpAddr>> {
        Ok(vec!["198.51.100.2".parse().unwrap()])
    }
    fn legacy_tables(&self, family: Family) -> Vec<TableName> {
        self.legacy[idx(family)].clone()
    }
    fn nft_tables(&self, family: Family) -> Option<Vec<TableName>> {
        self.nft[idx(family)].clone()
    }
    fn nft_inet_tables(&self) -> Option<Vec<String>> {
        self.nft_inet.clone()
    }
    fn fwmark_rules(&self, _: Family, _: u32, _: u32) -> Result<usize> {
        Ok(0)
    }
    fn add_fwmark_rule(&self, f: Family, m: u32, t: u32) -> Result<()> {
        self.log.borrow_mut().push(format!("rule {f} {m} {t}"));
        Ok(())
    }
    fn del_fwmark_rule(&self, _: Family, _: u32, _: u32) -> Result<()> {
        Ok(())
    }
    fn has_local_default(&self, _: Family, _: u32) -> Result<bool> {
        Ok(false)
    }
    fn add_local_default(&self, f: Family, t: u32) -> Result<()> {
        self.log.borrow_mut().push(format!("route {f} {t}"));
        Ok(())
    }
    fn del_local_default(&self, _: Family, _: u32) -> Result<()> {
        Ok(())
    }
    fn lo_has_address(&self, _: IpAddr) -> Result<bool> {
        Ok(false)
    }
    fn add_lo_address(&self, ip: IpAddr, _: u8) -> Result<()> {
        self.log.borrow_mut().push(format!("addr {ip}"));
        Ok(())
    }
    fn del_lo_address(&self, _: IpAddr, _: u8) -> Result<()> {
        Ok(())
    }
}

fn nft_kernel() -> FakeKernel {
    FakeKernel {
        nft: [Some(vec![]), Some(vec![])],
        ..FakeKernel::default()
    }
}

pub(crate) fn config(flags: CaptureFlags, ipv6: bool) -> (Config, Plan) {
    let files = HostFiles {
        passwd: "/nonexistent".into(),
        resolv_conf: "/nonexistent".into(),
    };
    let c = Config::from_flags(&flags, &Env::default(), &files, Ipv6Setting::Explicit(ipv6)).unwrap();
    let p = plan::build(&c, ipv6);
    (c, p)
}

pub(crate) fn sidecar() -> CaptureFlags {
    CaptureFlags {
        service_cidr: Some("*".into()),
        inbound_ports: Some("*".into()),
        ..CaptureFlags::default()
    }
}

fn run_apply(sys: &dyn System, kernel: &dyn Kernel, c: &Config, p: &Plan) -> Result<()> {
    Ctx {
        sys,
        kernel,
        config: c,
        ns: None,
    }
    .apply(p)
}

fn lines(rec: &Recorder) -> Vec<String> {
    rec.commands().iter().map(|c| c.line()).collect()
}

#[test]
fn a_fresh_namespace_costs_one_restore() {
    let (c, p) = config(sidecar(), false);
    let rec = Recorder::default();
    run_apply(&rec, &nft_kernel(), &c, &p).unwrap();
    assert_eq!(lines(&rec), ["iptables-nft-restore --noflush"]);
    assert_eq!(
        rec.commands()[0].stdin.as_deref(),
        Some(restore_payload(&p.ruleset(Family::V4)).as_str())
    );
    assert_eq!(rec.spawns(), 1);
}

#[test]
fn equal_state_changes_nothing_and_drift_is_refused() {
    let (c, p) = config(sidecar(), false);
    let live = restore_payload(&p.ruleset(Family::V4));
    let kernel = FakeKernel {
        nft: [Some(vec![TableName::Nat]), Some(vec![])],
        ..FakeKernel::default()
    };
    let rec = Recorder::new(move |_| Ok(Output::ok(live.clone())));
    run_apply(&rec, &kernel, &c, &p).unwrap();
    assert_eq!(lines(&rec), ["iptables-nft-save"]);

    let other = restore_payload(&p.ruleset(Family::V4)).replace("15001", "15002");
    let rec = Recorder::new(move |_| Ok(Output::ok(other.clone())));
    let e = run_apply(&rec, &kernel, &c, &p).unwrap_err().to_string();
    assert!(
        e.contains("--reconcile") && e.contains("1 missing, 1 unexpected"),
        "{e}"
    );
    assert_eq!(lines(&rec), ["iptables-nft-save"], "nothing may be written");
}

#[test]
fn a_failed_ipv6_restore_rolls_ipv4_back() {
    let (c, p) = config(sidecar(), true);
    let before = "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j KUBE\nCOMMIT\n";
    let kernel = FakeKernel {
        nft: [Some(vec![TableName::Nat]), Some(vec![])],
        ..FakeKernel::default()
    };
    let rec = Recorder::new(
        move |cmd| match (cmd.program.as_str(), cmd.args.first().map(String::as_str)) {
            ("iptables-nft-save", _) => Ok(Output::ok(before)),
            ("ip6tables-nft-restore", Some("--noflush")) => Ok(Output {
                code: 2,
                stdout: String::new(),
                stderr: "ip6tables-restore: line 3 failed".into(),
            }),
            _ => Ok(Output::default()),
        },
    );
    let e = run_apply(&rec, &kernel, &c, &p).unwrap_err().to_string();
    assert!(
        e.contains("ip6tables-nft-restore --noflush failed with exit status 2"),
        "{e}"
    );
    assert!(e.contains("the IPv4 rules were rolled back"), "{e}");
    assert_eq!(
        lines(&rec),
        [
            "iptables-nft-save",
            "iptables-nft-restore --noflush",
            "ip6tables-nft-restore --noflush",
            // The failed IPv6 restore changed nothing (a fresh read shows it), so only IPv4
            // is rolled back.
            "ip6tables-nft-save",
            "iptables-nft-restore",
        ]
    );
    let cmds = rec.commands();
    assert_eq!(cmds[4].stdin.as_deref(), Some(before));
}

#[test]
fn reconcile_runs_under_guardrails_and_removes_them_when_the_restore_fails() {
    let flags = CaptureFlags {
        reconcile: Some("true".into()),
        ..sidecar()
    };
    let (c, p) = config(flags, false);
    let old = restore_payload(&p.ruleset(Family::V4)).replace("15001", "15002");
    let kernel = FakeKernel {
        nft: [Some(vec![TableName::Nat]), Some(vec![])],
        ..FakeKernel::default()
    };
    let saves = std::sync::atomic::AtomicUsize::new(0);
    let rec = Recorder::new(move |cmd| match cmd.program.as_str() {
        // The second read (after the failure) shows a half-committed state.
        "iptables-nft-save" if saves.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 => {
            Ok(Output::ok(old.clone()))
        }
        "iptables-nft-save" => Ok(Output::ok("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")),
        _ if cmd.stdin.as_deref().is_some_and(|s| s.contains("-X ISTIO_OUTPUT")) => Ok(Output {
            code: 4,
            stdout: String::new(),
            stderr: "no TPROXY".into(),
        }),
        _ => Ok(Output::default()),
    });
    let e = run_apply(&rec, &kernel, &c, &p).unwrap_err().to_string();
    assert!(e.contains("rolled back"), "{e}");
    let cmds = rec.commands();
    let inputs: Vec<&str> = cmds.iter().filter_map(|c| c.stdin.as_deref()).collect();
    assert_eq!(inputs.len(), 4, "{inputs:?}");
    assert!(inputs[0].contains("-I INPUT 1 -p tcp -j DROP"), "guardrails first");
    assert!(inputs[1].contains("-X ISTIO_OUTPUT") && inputs[1].contains("-N ISTIO_OUTPUT"));
    assert!(
        inputs[2].contains("--to-ports 15002"),
        "rollback restores the old rules"
    );
    assert_eq!(inputs[3], payloads::guardrails_removal());
}

#[test]
fn failing_guardrails_stop_everything() {
    let flags = CaptureFlags {
        reconcile: Some("true".into()),
        ..sidecar()
    };
    let (c, p) = config(flags, false);
    let old = restore_payload(&p.ruleset(Family::V4)).replace("15001", "15002");
    let kernel = FakeKernel {
        nft: [Some(vec![TableName::Nat]), Some(vec![])],
        ..FakeKernel::default()
    };
    let rec = Recorder::new(move |cmd| match cmd.program.as_str() {
        "iptables-nft-save" => Ok(Output::ok(old.clone())),
        _ => Ok(Output {
            code: 1,
            stdout: String::new(),
            stderr: "locked".into(),
        }),
    });
    let e = run_apply(&rec, &kernel, &c, &p).unwrap_err().to_string();
    assert!(e.starts_with("failed to set up the guardrails"), "{e}");
    assert_eq!(lines(&rec), ["iptables-nft-save", "iptables-nft-restore --noflush"]);
}

#[test]
fn missing_ip6tables_is_tolerated_only_with_ipv6_off() {
    let kernel = FakeKernel {
        nft: [Some(vec![]), Some(vec![TableName::Nat])],
        ..FakeKernel::default()
    };
    let missing = ["ip6tables-nft-restore", "ip6tables-nft-save", "ip6tables-restore"];
    let (c, p) = config(sidecar(), false);
    let rec = Recorder::default().without_programs(&missing);
    run_apply(&rec, &kernel, &c, &p).unwrap();
    assert_eq!(lines(&rec), ["iptables-nft-restore --noflush"]);
    let (c, p) = config(sidecar(), true);
    let rec = Recorder::default().without_programs(&missing);
    let e = run_apply(&rec, &kernel, &c, &p).unwrap_err().to_string();
    assert!(e.contains("did not find a usable ip6tables binary"), "{e}");
    assert!(
        lines(&rec).is_empty(),
        "fails before writing anything: {:?}",
        lines(&rec)
    );
}

#[test]
fn an_empty_legacy_table_does_not_make_legacy_the_choice() {
    let (c, p) = config(sidecar(), false);
    let kernel = FakeKernel {
        legacy: [vec![TableName::Nat], vec![]],
        nft: [Some(vec![]), Some(vec![])],
        ..FakeKernel::default()
    };
    let polluted = "# Generated by iptables-save v1.8.9\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";
    let rec = Recorder::new(move |cmd| match cmd.program.as_str() {
        "iptables-legacy-save" => Ok(Output::ok(polluted)),
        _ => Ok(Output::default()),
    });
    run_apply(&rec, &kernel, &c, &p).unwrap();
    assert_eq!(lines(&rec), ["iptables-legacy-save", "iptables-nft-restore --noflush"]);

    // Real legacy rules: legacy is used, with the lock, and its save is the live state.
    let kube = "# Generated by iptables-save v1.8.9\n*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j KUBE\nCOMMIT\n";
    let rec = Recorder::new(move |cmd| match cmd.program.as_str() {
        "iptables-legacy-save" => Ok(Output::ok(kube)),
        _ => Ok(Output::default()),
    });
    run_apply(&rec, &kernel, &c, &p).unwrap();
    assert_eq!(
        lines(&rec),
        ["iptables-legacy-save", "iptables-legacy-restore --noflush --wait=30"]
    );
}

#[test]
fn istio_rules_in_the_other_variant_are_drift() {
    let (c, p) = config(sidecar(), false);
    let kernel = FakeKernel {
        legacy: [vec![TableName::Nat], vec![]],
        nft: [Some(vec![TableName::Nat]), Some(vec![])],
        ..FakeKernel::default()
    };
    let ours = restore_payload(&p.ruleset(Family::V4));
    let rec = Recorder::new(move |cmd| match cmd.program.as_str() {
        "iptables-legacy-save" => Ok(Output::ok(ours.clone())),
        _ => Ok(Output::ok(ours.clone())),
    });
    // Legacy holds the rules, so legacy is chosen; nft holds them too: drift.
    let e = run_apply(&rec, &kernel, &c, &p).unwrap_err().to_string();
    assert!(e.contains("also exist in the iptables-nft tables"), "{e}");
}

#[test]
fn cni_mode_sets_a_pod_scoped_lock_without_wiping_the_environment() {
    let b = Binaries {
        version: Some((1, 8, 9)),
        ..Binaries::of(Family::V4, IptablesVariant::Legacy)
    };
    let cmd = restore_cmd(&b, "", true, Some(Path::new("/var/run/netns/p")), true, 30);
    assert_eq!(
        cmd.env,
        [("XTABLES_LOCKFILE".to_string(), "/var/run/netns/p".to_string())]
    );
    assert_eq!(cmd.args, ["--noflush", "--wait=30"]);
    let cmd = restore_cmd(
        &Binaries::of(Family::V4, IptablesVariant::Nft),
        "",
        true,
        None,
        true,
        30,
    );
    assert!(cmd.env.is_empty());
}

#[test]
fn tproxy_routes_follow_the_plan() {
    let flags = CaptureFlags {
        interception_mode: Some("TPROXY".into()),
        ..sidecar()
    };
    let (_, p) = config(flags, true);
    let k = nft_kernel();
    let done = routes::apply(&k, &p.routes).unwrap();
    assert_eq!(done.len(), 5, "{done:?}");
    assert_eq!(
        *k.log.borrow(),
        [
            "addr ::6",
            "rule IPv4 1337 133",
            "route IPv4 133",
            "rule IPv6 1337 133",
            "route IPv6 133"
        ]
    );
}

#[test]
fn the_nftables_backends_tables_are_refused_before_anything_runs() {
    let (c, p) = config(sidecar(), false);
    let kernel = FakeKernel {
        nft: [Some(vec![TableName::Nat]), Some(vec![])],
        nft_inet: Some(vec![
            "foreign".into(),
            "istio-proxy-raw".into(),
            "istio-proxy-nat".into(),
        ]),
        ..FakeKernel::default()
    };
    let want = "meshcap's istio-proxy-* tables also exist in nftables (inet): istio-proxy-nat, istio-proxy-raw; \
                with the iptables rules too, packets would be captured twice; nothing was changed; \
                remove them with --cleanup-only --native-nftables (--reconcile and --force-apply do not), \
                or rerun with --native-nftables to keep the nftables backend";
    for (reconcile, force_apply) in [(false, false), (true, false), (false, true)] {
        let c = Config {
            reconcile,
            force_apply,
            ..c.clone()
        };
        let rec = Recorder::default();
        let e = run_apply(&rec, &kernel, &c, &p).unwrap_err().to_string();
        assert_eq!(e, want, "reconcile {reconcile}, force {force_apply}");
        assert!(rec.commands().is_empty(), "nothing read or written: {:?}", lines(&rec));
    }
    // Tables of other names (an `ip istio-proxy-nat` is not listed as inet) are not meshcap's.
    let kernel = FakeKernel {
        nft_inet: Some(vec!["istio-proxy".into(), "kube-proxy".into()]),
        ..nft_kernel()
    };
    let rec = Recorder::default();
    run_apply(&rec, &kernel, &c, &p).unwrap();
    assert_eq!(
        lines(&rec),
        ["iptables-nft-restore --noflush"],
        "a fresh apply, one process"
    );
}

#[test]
fn cleanup_removes_its_own_rules_and_leaves_the_nftables_backends_tables() {
    let (c, p) = config(sidecar(), false);
    let live = restore_payload(&p.ruleset(Family::V4));
    let kernel = FakeKernel {
        nft: [Some(vec![TableName::Nat]), Some(vec![])],
        nft_inet: Some(vec!["istio-proxy-mangle".into()]),
        ..FakeKernel::default()
    };
    let rec = Recorder::new(move |_| Ok(Output::ok(live.clone())));
    Ctx {
        sys: &rec,
        kernel: &kernel,
        config: &c,
        ns: None,
    }
    .cleanup(&p)
    .unwrap();
    assert_eq!(lines(&rec), ["iptables-nft-save", "iptables-nft-restore --noflush"]);
    assert!(
        rec.commands().iter().all(|c| !c.program.starts_with("nft")),
        "no nft process"
    );
    assert_eq!(
        nft_backend_left(&[NftTable::Mangle]),
        "meshcap's istio-proxy-* tables also exist in nftables (inet): istio-proxy-mangle; the iptables cleanup does not remove them and they still capture packets: remove them with --cleanup-only --native-nftables"
    );
}
