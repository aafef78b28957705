//! The parser is the renderer's inverse, and the tracer holds two invariants of the capture:
//!
//! - every golden render payload parses back to a ruleset that renders to the same bytes;
//! - for random configurations, `parse(render(rs)) == rs` per family (iptables-restore text) and
//!   `from_json(render_json(plan)) == plan` (the JSON document);
//! - for random configurations, the tracer sends a proxy-owned packet leaving through a
//!   non-excluded interface nowhere (accept), and an inbound TCP connection to a captured port to
//!   the inbound capture port (REDIRECT or TPROXY, as configured).
//!
//! In-process, through the library; no namespace needed.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::support::TempDir;
use crate::support::api::{
    Action, Backend, CaptureFlags, Family, Ids, Netfilter, Packet, Plan, Ruleset, Strictness, flags_plan, json,
    parse_save, render_plan, restore_payload, trace,
};
use crate::support::flags::args_file;

fn golden_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

#[test]
fn golden_render_payloads_parse_back_to_themselves() {
    let (mut payloads, mut configs) = (0, 0);
    let mut dirs: Vec<_> = std::fs::read_dir(golden_root())
        .expect("golden/ exists")
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let Ok(args) = std::fs::read_to_string(dir.join("args")) else {
            continue;
        };
        let args = args_file(&args);
        if args.first().map(String::as_str) != Some("render") {
            continue;
        }
        // The rendered payloads on file: parse, then render again, byte for byte.
        if !args
            .iter()
            .any(|a| *a == "--format" || a.starts_with("--native-nftables"))
        {
            for (kind, family) in [("expected.v4", Family::V4), ("expected.v6", Family::V6)] {
                let Ok(text) = std::fs::read_to_string(dir.join(kind)) else {
                    continue;
                };
                let dump =
                    parse_save(&text, Strictness::Strict).unwrap_or_else(|e| panic!("{}/{kind}: {e}", dir.display()));
                let rs = dump
                    .to_ruleset(family)
                    .unwrap_or_else(|e| panic!("{}/{kind}: {e}", dir.display()));
                rs.validate()
                    .unwrap_or_else(|e| panic!("{}/{kind}: parsed ruleset invalid: {e}", dir.display()));
                assert_eq!(restore_payload(&rs), text, "{}/{kind}", dir.display());
                payloads += 1;
            }
        }
        // The case's configuration (whatever backend it renders), planned in-process: every
        // family's ruleset survives the iptables text and the JSON document.
        if let Some(plan) = golden_plan(&dir, &args) {
            // A plan compacted for nft (`--compact --native-nftables`) holds address sets, which
            // iptables text cannot carry; the JSON document still must.
            let iptables_text = plan.validate(Backend::Iptables).is_ok();
            for family in plan.families().into_iter().filter(|_| iptables_text) {
                let rs = plan.ruleset(family);
                let back = parse_save(&restore_payload(&rs), Strictness::Strict)
                    .unwrap()
                    .to_ruleset(family)
                    .unwrap();
                assert_eq!(back, rs, "{}", dir.display());
            }
            let doc = json::Document::from_json(&json::render(&plan, &plan.families())).unwrap();
            let want: Vec<Ruleset> = plan.families().into_iter().map(|f| plan.ruleset(f)).collect();
            assert_eq!(doc.rulesets().unwrap(), want, "{}", dir.display());
            configs += 1;
        }
    }
    // The golden set holds dozens of render cases; a silent zero would prove nothing.
    assert!(
        configs >= 10,
        "only {configs} golden render configurations (and {payloads} payloads) found"
    );
}

/// The plan of a golden `render` case (its env file, its resolv.conf relative to the case),
/// or `None` for a case meant to fail.
fn golden_plan(dir: &Path, args: &[String]) -> Option<Plan> {
    let env: Vec<(String, String)> = std::fs::read_to_string(dir.join("env"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    render_plan(&args[1..], &env, dir).ok()
}

/// One random configuration.
#[derive(Debug, Clone)]
struct Conf {
    flags: CaptureFlags,
    ipv6: bool,
    env: Vec<(String, String)>,
}

fn list<T: std::fmt::Debug + Clone>(pool: &'static [T], max: usize) -> impl Strategy<Value = Vec<T>> {
    proptest::sample::subsequence(pool, 0..=max)
}

fn join(items: &[&str]) -> String {
    items.join(",")
}

const PORTS: &[&str] = &[
    "80",
    "443",
    "8080",
    "9000:9100",
    "7:7",
    "15020",
    "15021",
    "15090",
    "53",
    "15008",
];
const CIDRS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.2.3/16",
    "192.168.0.0/24",
    "2001:db8::/32",
    "fd00:1::/64",
    "127.1.2.3/32",
];
const IFACES: &[&str] = &["eth1", "eth2", "veth+", "not-istio-nic"];
const OWNERS: &[&str] = &["1337", "0", "3", "4242"];

fn conf() -> impl Strategy<Value = Conf> {
    let ports_sel = prop_oneof![
        Just("*".to_string()),
        Just(String::new()),
        list(PORTS, 4).prop_map(|l| join(&l))
    ];
    let cidr_sel = prop_oneof![
        Just("*".to_string()),
        Just(String::new()),
        list(CIDRS, 4).prop_map(|l| join(&l))
    ];
    (
        (
            ports_sel,
            list(PORTS, 3),
            cidr_sel,
            list(CIDRS, 3),
            list(PORTS, 2),
            list(PORTS, 2),
            list(IFACES, 2),
            list(IFACES, 2),
        ),
        (
            list(OWNERS, 3),
            proptest::option::of(list(OWNERS, 2)),
            any::<bool>(),
            0u8..3,
            any::<bool>(),
            any::<bool>(),
            prop_oneof![
                Just(None),
                Just(Some(("ISTIO_OUTBOUND_OWNER_GROUPS", "202,5"))),
                Just(Some(("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888")))
            ],
        ),
    )
        .prop_map(
            |(
                (inb, inb_ex, incl, excl, oports, oports_ex, ex_if, virt_if),
                (uids, gids, tproxy, dns, drop_invalid, ipv6, groups),
            )| {
                let excl: Vec<&str> = excl.into_iter().filter(|c| !c.starts_with("127.")).collect();
                let flags = CaptureFlags {
                    inbound_ports: Some(inb),
                    local_exclude_ports: Some(join(&inb_ex)),
                    service_cidr: Some(incl),
                    service_exclude_cidr: Some(join(&excl)),
                    outbound_ports: Some(join(&oports)),
                    local_outbound_ports_exclude: Some(join(&oports_ex)),
                    exclude_interfaces: Some(join(&ex_if)),
                    kube_virt_interfaces: Some(join(&virt_if)),
                    proxy_uid: (!uids.is_empty()).then(|| join(&uids)),
                    proxy_gid: gids.filter(|g| !g.is_empty()).map(|g| join(&g)),
                    interception_mode: Some(if tproxy { "TPROXY" } else { "REDIRECT" }.into()),
                    redirect_dns: Some((dns > 0).to_string()),
                    capture_all_dns: Some((dns == 2).to_string()),
                    drop_invalid: Some(drop_invalid.to_string()),
                    ..CaptureFlags::default()
                };
                let env = groups
                    .map(|(k, v)| vec![(k.to_string(), v.to_string())])
                    .unwrap_or_default();
                Conf { flags, ipv6, env }
            },
        )
}

/// A resolv.conf with one server of each family.
fn resolv_conf() -> (TempDir, String) {
    let dir = TempDir::new("roundtrip");
    let path = dir.write("resolv.conf", "nameserver 10.96.0.10\nnameserver fd00::10\n");
    (dir, path.display().to_string())
}

fn plan(c: &Conf, resolv: &str) -> Plan {
    flags_plan(&c.flags, c.ipv6, resolv, &c.env)
        .unwrap_or_else(|e| panic!("a generated configuration was refused: {e}\n{c:?}"))
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn random_configurations_round_trip_through_the_parser_and_json() {
    let (_dir, resolv) = resolv_conf();
    runner()
        .run(&conf(), |c| {
            let plan = plan(&c, &resolv);
            let families = plan.families();
            let mut rulesets: Vec<Ruleset> = Vec::new();
            for family in &families {
                let rs = plan.ruleset(*family);
                let text = restore_payload(&rs);
                let dump = parse_save(&text, Strictness::Strict).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let back = dump.to_ruleset(*family).map_err(TestCaseError::fail)?;
                prop_assert_eq!(&back, &rs, "payload:\n{}", text);
                rulesets.push(rs);
            }
            let doc = json::Document::from_json(&json::render(&plan, &families))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = doc.rulesets().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, rulesets);
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_configurations_trace_the_capture_invariants() {
    let (_dir, resolv) = resolv_conf();
    runner()
        .run(&(conf(), 0usize..16, any::<bool>()), |(c, pick, v6)| {
            let plan = plan(&c, &resolv);
            let family = if v6 && plan.ipv6 { Family::V6 } else { Family::V4 };
            let nf = Netfilter::from_plan(&plan, family, false).unwrap();
            let (pod, peer) = match family {
                Family::V4 => ("198.51.100.2", "203.0.113.7"),
                Family::V6 => ("[fd00::2]", "[fd00:1:2::7]"),
            };
            let ids = Ids::default();
            let go = |text: &str| {
                let p = Packet::parse(text).unwrap();
                trace::trace(&nf, &p, &ids).map_err(|e| TestCaseError::fail(format!("{text}: {e}\n{c:?}")))
            };

            // The proxy's own outbound traffic is never captured.
            let uid = c
                .flags
                .proxy_uid
                .as_deref()
                .map_or("1337", |u| u.split(',').next().unwrap());
            let out = format!("out tcp {pod}:40000 -> {peer}:8080 uid={uid} gid=99999 oif=eth9");
            let t = go(&out)?;
            prop_assert_eq!(t.verdict.action, Action::Accept, "{}\n{}", out, t.text());

            // Inbound TCP to a captured port reaches the inbound capture port.
            let inbound = c.flags.inbound_ports.as_deref().unwrap_or("");
            let excluded: Vec<&str> = c
                .flags
                .local_exclude_ports
                .as_deref()
                .unwrap_or("")
                .split(',')
                .collect();
            let candidates: Vec<u16> = if inbound == "*" {
                [80u16, 443, 8080, 9050, 15020, 15021, 15090, 53]
                    .into_iter()
                    .filter(|p| !excluded.iter().any(|e| covers(e, *p)))
                    .collect()
            } else {
                inbound
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.split(':').next().unwrap().parse().unwrap())
                    .filter(|p| *p != 15008)
                    .collect()
            };
            if let Some(port) = candidates.get(pick % candidates.len().max(1)) {
                let inb = format!("in tcp {peer}:5000 -> {pod}:{port} iif=eth9");
                let t = go(&inb)?;
                let want = if c.flags.interception_mode.as_deref() == Some("TPROXY") {
                    Action::Tproxy
                } else {
                    Action::Redirect
                };
                prop_assert_eq!(t.verdict.action, want, "{}\n{}", inb, t.text());
                prop_assert_eq!(t.verdict.port, Some(15006));
            }
            Ok(())
        })
        .unwrap();
}

fn covers(spec: &str, port: u16) -> bool {
    match spec.split_once(':') {
        Some((a, b)) => a.parse::<u16>().is_ok_and(|a| a <= port) && b.parse::<u16>().is_ok_and(|b| port <= b),
        None => spec.parse::<u16>() == Ok(port),
    }
}

/// The nftables ruleset and the iptables rules of one plan send every packet the same way,
/// except where Istio's nftables rules knowingly differ (drop-invalid matches TCP only; an
/// `inet` table also sees IPv6 packets when IPv6 is off), which these packets avoid.
#[test]
fn random_configurations_nft_and_iptables_agree() {
    let (_dir, resolv) = resolv_conf();
    let compared = std::sync::atomic::AtomicUsize::new(0);
    runner()
        .run(&(conf(), any::<bool>()), |(c, v6)| {
            let plan = plan(&c, &resolv);
            let family = if v6 && plan.ipv6 { Family::V6 } else { Family::V4 };
            let ipt = Netfilter::from_plan(&plan, family, false).unwrap();
            let nft = Netfilter::from_plan(&plan, family, true).unwrap();
            let (pod, peer, dns, six) = match family {
                Family::V4 => ("198.51.100.2", "203.0.113.7", "10.96.0.10", "127.0.0.6"),
                Family::V6 => ("[fd00::2]", "[fd00:1:2::7]", "[fd00::10]", "[::6]"),
            };
            let uid = c
                .flags
                .proxy_uid
                .as_deref()
                .map_or("1337", |u| u.split(',').next().unwrap());
            let packets = [
                format!("out tcp {pod}:40000 -> {peer}:8080 uid=1000 gid=1000 oif=eth0"),
                format!("out tcp {pod}:40000 -> {peer}:9050 uid=1000 gid=202 oif=eth0"),
                format!("out tcp {pod}:40000 -> {peer}:8080 uid={uid} gid=1 oif=eth0"),
                format!("out tcp {pod}:40000 -> {pod}:8080 uid={uid} gid=1 oif=lo"),
                format!("out tcp {pod}:40000 -> {pod}:8080 uid=1000 gid=1000 oif=lo"),
                format!("out tcp {six}:40000 -> {pod}:8080 uid={uid} gid=1 oif=lo"),
                format!("out udp {pod}:40000 -> {dns}:53 uid=1000 gid=1000 oif=eth0"),
                format!("out tcp {pod}:40000 -> {dns}:53 uid=1000 gid=1000 oif=eth0"),
                format!("out udp {pod}:40000 -> {dns}:53 uid={uid} gid=1 oif=eth0"),
                format!("out tcp {pod}:8080 -> {peer}:5000 uid=1000 gid=1000 oif=eth0 state=established connmark=1337"),
                format!("in tcp {peer}:5000 -> {pod}:8080 iif=eth0"),
                format!("in tcp {peer}:5000 -> {pod}:15008 iif=eth0"),
                format!("in tcp {peer}:5000 -> {pod}:15020 iif=eth0"),
                format!("in tcp {peer}:5000 -> {pod}:443 iif=eth0 state=established"),
                format!("in tcp {peer}:5000 -> {pod}:443 iif=eth0 state=invalid"),
                format!("in tcp {peer}:5000 -> {pod}:443 iif=eth1"),
                format!("in tcp {peer}:5000 -> {pod}:80 iif=veth3"),
                format!("in tcp {six}:5000 -> {pod}:8080 iif=lo"),
                format!("in tcp {pod}:5000 -> {pod}:8080 iif=lo mark=1338"),
                format!("in udp {dns}:53 -> {pod}:40000 iif=eth0 state=established"),
            ];
            for text in &packets {
                let p = Packet::parse(text).unwrap();
                let a = trace::trace(&ipt, &p, &Ids::default())
                    .map_err(|e| TestCaseError::fail(format!("iptables {text}: {e}")))?;
                let b = trace::trace(&nft, &p, &Ids::default())
                    .map_err(|e| TestCaseError::fail(format!("nft {text}: {e}")))?;
                prop_assert_eq!(
                    a.verdict,
                    b.verdict,
                    "{}\n--- iptables\n{}--- nft\n{}",
                    text,
                    a.text(),
                    b.text()
                );
                compared.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    assert!(compared.into_inner() >= 256 * 20);
}
