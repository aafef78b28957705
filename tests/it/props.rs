//! Property: every valid configuration renders payloads the kernel's tools accept.
//!
//! Random valid flag sets (ports, ranges, lists, CIDRs of both families, numeric UIDs/GIDs,
//! interception modes, DNS with a generated resolv.conf, IPv6 on/off, drop-invalid, owner groups
//! and the loopback prefix through the environment, some lists through their environment form)
//! are planned through the library and rendered by the real binary. For each case:
//! - `plan_for_render` accepts the configuration and `Ruleset::validate()` holds per family;
//! - `meshcap render --family v4|v6` exits 0 and prints exactly the library's payload (no bytes
//!   for v6 when IPv6 is off);
//! - every non-empty payload passes `iptables-legacy-restore --test --noflush` and
//!   `iptables-nft-restore --test --noflush` (ip6tables-* for v6), and is then really loaded with
//!   `--noflush` (as apply will) by both variants. All of it inside a fresh network namespace per
//!   case (never the host's), so each payload meets an empty ruleset as in a new pod.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::support::api::{Family, Owner, render_plan, restore_payload};
use crate::support::{Meshcap, Netns, needs_netns};

/// Cases per run; `PROPTEST_CASES=N` overrides it for a longer local run.
const CASES: usize = 64;
/// Worker threads; each case gets its own namespace.
const THREADS: usize = 8;

/// One generated configuration: arguments after `meshcap`, environment, resolv.conf text.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) resolv_conf: Option<String>,
}

fn port() -> impl Strategy<Value = String> {
    (1u32..=65535).prop_map(|p| p.to_string())
}

fn port_spec() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => port(),
        1 => (1u32..=65535, 1u32..=65535).prop_map(|(a, b)| format!("{}:{}", a.min(b), a.max(b))),
    ]
}

fn port_list(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(port_spec(), 0..=max).prop_map(|v| v.join(","))
}

fn cidr() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, len)| format!("{}/{len}", std::net::Ipv4Addr::from(a))),
        (any::<u128>(), 0u8..=128).prop_map(|(a, len)| format!("{}/{len}", std::net::Ipv6Addr::from(a))),
        Just("127.1.2.3/32".to_string()),
        Just("::1/128".to_string()),
        Just("::ffff:10.0.0.0/104".to_string()),
    ]
}

fn cidr_list() -> impl Strategy<Value = String> {
    prop::collection::vec(cidr(), 0..=3).prop_map(|v| v.join(","))
}

fn iface_list() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9_][a-z0-9._@=%-]{0,12}\\+?", 0..=2).prop_map(|v| v.join(","))
}

fn id_list() -> impl Strategy<Value = String> {
    // Numeric ids, or `root`: the one name every host resolves (iptables looks names up).
    let id = prop_oneof![9 => (0u32..=Owner::MAX_ID).prop_map(|n| n.to_string()), 1 => Just("root".to_string())];
    prop::collection::vec(id, 1..=3).prop_map(|v| v.join(","))
}

fn server() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
        any::<u128>().prop_map(|a| std::net::Ipv6Addr::from(a).to_string()),
    ]
}

/// `-x` or its environment variable, chosen at random, so both sources are exercised.
fn flag_or_env(short: &str, var: &str, value: Option<String>, use_env: bool, case: &mut Case) {
    if let Some(v) = value {
        if use_env {
            case.env.push((var.to_string(), v));
        } else {
            case.args.extend([short.to_string(), v]);
        }
    }
}

prop_compose! {
    pub(crate) fn case()(
        ports in (port(), port(), port()),
        ids in (prop::option::of(id_list()), prop::option::of(id_list())),
        mode in prop::option::of(prop_oneof![Just(""), Just("REDIRECT"), Just("TPROXY")]),
        mark in (1u32..=u32::MAX).prop_filter("not the outbound mark", |m| *m != 1338),
        inbound in prop::option::of(prop_oneof![1 => Just("*".to_string()), 3 => port_list(3)]),
        inbound_exclude in prop::option::of(port_list(3)),
        outbound in (prop::option::of(port_list(3)), prop::option::of(port_list(3))),
        include in prop::option::of(prop_oneof![1 => Just("*".to_string()), 3 => cidr_list()]),
        exclude in prop::option::of(cidr_list()),
        ifaces in (prop::option::of(iface_list()), prop::option::of(iface_list())),
        dns in prop::option::of((any::<bool>(), prop::collection::vec(server(), 0..=3))),
        switches in (any::<bool>(), any::<bool>()),
        groups in (
            prop::option::of(prop_oneof![Just("*".to_string()), Just(String::new()), id_list()]),
            prop::option::of(id_list()),
        ),
        loopback in prop::option::of((any::<[u8; 3]>(), 8u8..=32)),
        env_forms in any::<[bool; 4]>(),
    ) -> Case {
        let mut c = Case { args: vec!["render".into()], env: Vec::new(), resolv_conf: None };
        c.args.extend(["-p".into(), ports.0, "-z".into(), ports.1, "-e".into(), ports.2]);
        if let Some(u) = ids.0 { c.args.extend(["-u".into(), u]); } else { c.env.push(("ENVOY_USER".into(), "meshcap-prop-nobody".into())); }
        if let Some(g) = ids.1 { c.args.extend(["-g".into(), g]); }
        if let Some(m) = mode { c.args.extend(["-m".into(), m.into()]); }
        c.args.extend(["-t".into(), mark.to_string()]);
        flag_or_env("-b", "ISTIO_INBOUND_PORTS", inbound, env_forms[0], &mut c);
        flag_or_env("-d", "ISTIO_LOCAL_EXCLUDE_PORTS", inbound_exclude, env_forms[1], &mut c);
        flag_or_env("-q", "ISTIO_OUTBOUND_PORTS", outbound.0, env_forms[2], &mut c);
        flag_or_env("-o", "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE", outbound.1, env_forms[3], &mut c);
        flag_or_env("-i", "ISTIO_SERVICE_CIDR", include, env_forms[0], &mut c);
        flag_or_env("-x", "ISTIO_SERVICE_EXCLUDE_CIDR", exclude, env_forms[1], &mut c);
        flag_or_env("-c", "ISTIO_EXCLUDE_INTERFACES", ifaces.0, env_forms[2], &mut c);
        flag_or_env("-k", "KUBE_VIRT_INTERFACES", ifaces.1, env_forms[3], &mut c);
        if let Some((capture_all, servers)) = dns {
            c.args.push("--redirect-dns".into());
            if capture_all {
                c.args.push("--capture-all-dns".into());
            }
            c.resolv_conf = Some(servers.iter().map(|s| format!("nameserver {s}\n")).collect());
        }
        if switches.0 { c.args.push("--ipv6".into()); }
        if switches.1 { c.args.push("--drop-invalid".into()); }
        if let Some(g) = groups.0 { c.env.push(("ISTIO_OUTBOUND_OWNER_GROUPS".into(), g)); }
        if let Some(g) = groups.1 { c.env.push(("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE".into(), g)); }
        if let Some(([a, b, d], len)) = loopback {
            c.env.push(("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR".into(), format!("127.{a}.{b}.{d}/{len}")));
        }
        c
    }
}

fn fail(what: &str, case: &Case, detail: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{what}\ncase: {case:#?}\n{detail}"))
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check(dir: &Path, case: &Case) -> Result<(), TestCaseError> {
    let mut args = case.args.clone();
    if let Some(text) = &case.resolv_conf {
        let path = dir.join("resolv.conf");
        std::fs::write(&path, text).expect("write resolv.conf");
        args.extend(["--resolv-conf".into(), path.display().to_string()]);
    }

    // The library: the configuration is valid and every family's ruleset is well formed.
    let plan = render_plan(&args[1..], &case.env, dir).map_err(|e| fail("configuration refused", case, e))?;
    let mut expected = Vec::new();
    for family in [Family::V4, Family::V6] {
        let rs = plan.ruleset(family);
        rs.validate()
            .map_err(|e| fail("Ruleset::validate failed", case, format!("{family}: {e}")))?;
        expected.push(restore_payload(&rs));
    }

    let ns = Netns::new("props");
    for (family, want) in [("v4", &expected[0]), ("v6", &expected[1])] {
        // The binary prints exactly the library's payload.
        let run = Meshcap::new()
            .args(&args)
            .args(["--family", family])
            .envs(case.env.iter().cloned())
            .time_limit(Duration::from_secs(20))
            .try_run()
            .map_err(|e| fail("meshcap render did not finish", case, e))?;
        if !run.ok() || run.raw_stdout != want.as_bytes() {
            return Err(fail(
                &format!("meshcap render --family {family} differs from the library"),
                case,
                format!("{run}\nlibrary payload:\n{want}"),
            ));
        }
        if want.is_empty() {
            prop_assert!(family == "v6" && !plan.ipv6, "empty v4 payload for {case:?}");
            continue;
        }
        // Both iptables variants parse it, then really load it, inside the case's namespace.
        let prefix = if family == "v4" { "iptables" } else { "ip6tables" };
        for variant in ["legacy", "nft"] {
            let restore = format!("{prefix}-{variant}-restore");
            for mode in [&["--test", "--noflush"][..], &["--noflush"][..]] {
                let out = ns.run_with_stdin(&restore, mode, want);
                if !out.status.success() {
                    return Err(fail(
                        &format!("{restore} {} refused the {family} payload", mode.join(" ")),
                        case,
                        format!("{}\npayload:\n{want}", describe(&out)),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Generates the cases with proptest, checks them on a few threads (the restores mostly wait
/// on the kernel), then shrinks the first failure sequentially.
#[test]
fn random_valid_configurations_render_payloads_iptables_accepts() {
    needs_netns!();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("props-{}", std::process::id()));
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let count = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let strategy = case();
    let mut trees: Vec<_> = (0..count)
        .map(|_| strategy.new_tree(&mut runner).expect("generate a case"))
        .collect();
    let cases: Vec<Case> = trees.iter().map(|t| t.current()).collect();

    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(usize, TestCaseError)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for worker in 0..THREADS {
            let (dir, cases, next, failures) = (dir.join(worker.to_string()), &cases, &next, &failures);
            scope.spawn(move || {
                std::fs::create_dir_all(&dir).expect("create temp dir");
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    if let Err(e) = check(&dir, case) {
                        failures.lock().unwrap().push((i, e));
                    }
                }
            });
        }
    });

    let failures = failures.into_inner().unwrap();
    if let Some((i, first)) = failures.iter().min_by_key(|(i, _)| *i) {
        // Shrink the failing case: simplify while it keeps failing.
        let tree = &mut trees[*i];
        let shrink_dir = dir.join("shrink");
        std::fs::create_dir_all(&shrink_dir).expect("create temp dir");
        let mut smallest = first.to_string();
        for _ in 0..512 {
            if !tree.simplify() {
                break;
            }
            match check(&shrink_dir, &tree.current()) {
                Err(e) => smallest = e.to_string(),
                Ok(()) => {
                    if !tree.complicate() {
                        break;
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!(
            "{} of {count} cases failed; smallest failing case:\n{smallest}",
            failures.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
