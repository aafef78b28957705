//! The netlink decoder against the real kernel: what `nft -f` of meshcap's rendered transaction
//! leaves in a fresh namespace, dumped over netlink and decoded
//! (`meshcap::nft::netlink::to_ir`), is the state the transaction plans — for every nft golden
//! case (Istio's corpus, read from `../shared` at test time, and meshcap's own) and for random
//! configurations, `--compact` with thousands of CIDRs and ports included. "Is" means what drift
//! means by it: no difference at all (every rule understood, in order, no object, no chain or
//! table missing or extra).

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use crate::support::api::{
    Ids, NftRuleset, NftSocket, NftState, Plan, TargetNetns, nft_compare, nft_decode, nft_planned, nft_transaction,
    render_plan,
};
use crate::support::netns::{Netns, needs_netns};
use crate::support::{Meshcap, SIDECAR, TempDir, real};

/// A case: its name, the arguments after `meshcap render`, its environment and directory.
struct Case {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
}

fn read_case(dir: &Path) -> Option<Case> {
    if !dir.join("expected.nft").is_file() {
        return None;
    }
    let args: Vec<String> = fs::read_to_string(dir.join("args"))
        .ok()?
        .lines()
        .map(str::to_string)
        .collect();
    let args = match args.first().map(String::as_str) {
        Some("render") => args[1..].to_vec(),
        _ => args,
    };
    let env = fs::read_to_string(dir.join("env"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Case {
        name: dir.file_name()?.to_string_lossy().into_owned(),
        args,
        env,
        dir: dir.to_path_buf(),
    })
}

/// Every nft golden case: Istio's corpus (when `../shared` is there) and meshcap's own.
fn golden_cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [root.join("../shared/golden-istio/nftables"), root.join("golden")] {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        out.extend(dirs.iter().filter_map(|d| read_case(d)));
    }
    out
}

/// The namespace's ruleset, dumped over meshcap's own netlink socket.
fn dump(ns: &Netns) -> NftRuleset {
    TargetNetns::open(ns.path().to_str().unwrap())
        .expect("open test namespace")
        .run_in(|| {
            NftSocket::open()
                .map_err(|e| e.to_string())?
                .ruleset(0)
                .map_err(|e| e.to_string())
        })
        .expect("enter namespace")
        .expect("dump ruleset")
}

/// The transaction text with each user or group name given to `skuid`/`skgid` replaced by an
/// id of its own (nft resolves names against the host's accounts, which need not have them),
/// and those names as passwd and group texts for drift to resolve the planned side.
fn numeric_owners(text: &str) -> (String, Ids) {
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut owner_next = false;
    for word in text.split(' ') {
        let mut word = word.to_string();
        if owner_next && word != "!=" {
            let bare = word.trim_end_matches('\n');
            if !bare.is_empty() && !bare.bytes().all(|b| b.is_ascii_digit()) {
                let i = names.iter().position(|n| n == bare).unwrap_or_else(|| {
                    names.push(bare.to_string());
                    names.len() - 1
                });
                word = word.replacen(bare, &(40_000 + i).to_string(), 1);
            }
            owner_next = false;
        } else if word == "skuid" || word == "skgid" {
            owner_next = true;
        }
        out.push(word);
    }
    let accounts: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{n}:x:{}:{}::/:/bin/false\n", 40_000 + i, 40_000 + i))
        .collect();
    let groups: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{n}:x:{}:\n", 40_000 + i))
        .collect();
    (out.join(" "), Ids::from_texts(Some(accounts), Some(groups)))
}

/// Applies `plan`'s rendered transaction with `nft -f` (after emptying the namespace) and
/// returns why the decoded dump is not the planned state, if it is not.
fn differs(ns: &Netns, plan: &Plan) -> Option<String> {
    let tx = nft_transaction(plan).expect("a transaction");
    let (text, ids) = numeric_owners(&format!("flush ruleset\n{tx}"));
    let out = ns.run_with_stdin("nft", &["-f", "-"], &text);
    assert!(out.status.success(), "nft -f: {}", String::from_utf8_lossy(&out.stderr));
    let want = nft_planned(&tx);
    let got = nft_decode(&dump(ns));
    why_not_equal(&want, &got, &ids)
}

fn why_not_equal(want: &NftState, got: &NftState, ids: &Ids) -> Option<String> {
    let drift = nft_compare(want, got, ids);
    if drift.is_clean() {
        return None;
    }
    let unknown: Vec<String> = got
        .chains
        .iter()
        .flat_map(|((t, c), chain)| {
            chain
                .rules
                .iter()
                .filter_map(move |r| r.stmts.as_ref().err().map(|why| format!("{t} {c}: {why}: {}", r.text)))
        })
        .collect();
    Some(format!(
        "{}\n{}\nnot understood:\n{}",
        drift.summary(),
        drift.lines(),
        unknown.join("\n")
    ))
}

#[test]
fn the_decoder_reads_back_every_golden_case_as_planned() {
    needs_netns!();
    let cases = golden_cases();
    assert!(cases.len() >= 20, "only {} nft golden cases found", cases.len());
    let ns = Netns::new("nldecgold");
    let mut failed = Vec::new();
    for case in &cases {
        let plan = render_plan(&case.args, &case.env, &case.dir).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        if let Some(why) = differs(&ns, &plan) {
            failed.push(format!("{}: {why}", case.name));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n\n")
    );
}

/// Valid random configurations per run; `PROPTEST_CASES=N` overrides it.
const CASES: usize = 110;

fn port() -> impl Strategy<Value = String> {
    (1u32..=65535).prop_map(|p| p.to_string())
}

fn port_list(max: usize) -> impl Strategy<Value = String> {
    let spec = prop_oneof![
        3 => port(),
        1 => (1u32..=65535, 1u32..=65535).prop_map(|(a, b)| format!("{}:{}", a.min(b), a.max(b))),
    ];
    prop::collection::vec(spec, 1..=max).prop_map(|v| v.join(","))
}

fn cidr() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, len)| format!("{}/{len}", std::net::Ipv4Addr::from(a))),
        2 => (any::<u128>(), 0u8..=128).prop_map(|(a, len)| format!("{}/{len}", std::net::Ipv6Addr::from(a))),
        1 => (any::<[u8; 4]>()).prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
        1 => Just("::ffff:10.0.0.0/104".to_string()),
    ]
}

fn cidr_list(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(cidr(), 1..=max).prop_map(|v| v.join(","))
}

fn id_list() -> impl Strategy<Value = String> {
    let id = prop_oneof![9 => (0u32..=4_294_967_294).prop_map(|n| n.to_string()), 1 => Just("root".to_string())];
    prop::collection::vec(id, 1..=3).prop_map(|v| v.join(","))
}

/// One configuration: the arguments after `meshcap render` and a resolv.conf text.
type Generated = (Vec<String>, Vec<(String, String)>, String);

prop_compose! {
    fn configuration()(
        ports in (port(), port(), port()),
        ids in (prop::option::of(id_list()), prop::option::of(id_list())),
        mode in prop::option::of(prop_oneof![Just("REDIRECT"), Just("TPROXY")]),
        mark in (1u32..=u32::MAX).prop_filter("not the outbound mark", |m| *m != 1338),
        inbound in prop::option::of(prop_oneof![1 => Just("*".to_string()), 3 => port_list(6)]),
        excluded_ports in (prop::option::of(port_list(6)), prop::option::of(port_list(6)), prop::option::of(port_list(6))),
        include in prop::option::of(prop_oneof![1 => Just("*".to_string()), 3 => cidr_list(6)]),
        exclude in prop::option::of(cidr_list(6)),
        ifaces in (prop::option::of("veth[a-z0-9]{0,8}\\+?"), prop::option::of("eth[0-9]{0,3}[a-z]{0,3}\\+?")),
        dns in prop::option::of((any::<bool>(), prop::collection::vec(cidr().prop_map(|c| c.split('/').next().unwrap().to_string()), 0..=3))),
        switches in any::<[bool; 3]>(),
        groups in (prop::option::of(id_list()), prop::option::of(id_list())),
        big in prop::option::of((500usize..4000, prop::collection::vec(cidr(), 1..=64), prop::collection::vec(port(), 1..=64))),
    ) -> Generated {
        let mut a: Vec<String> = ["--native-nftables", "-p", &ports.0, "-z", &ports.1, "-e", &ports.2]
            .map(str::to_string).to_vec();
        let mut env = Vec::new();
        let mut resolv = String::new();
        let mut flag = |f: &str, v: Option<String>| if let Some(v) = v { a.extend([f.to_string(), v]); };
        flag("-u", ids.0.or(Some("1337".into())));
        flag("-g", ids.1);
        flag("-m", mode.map(str::to_string));
        flag("-t", Some(mark.to_string()));
        flag("-b", inbound);
        flag("-d", excluded_ports.0);
        flag("-q", excluded_ports.1);
        flag("-o", excluded_ports.2);
        flag("-i", include);
        flag("-c", ifaces.0);
        flag("-k", ifaces.1);
        // Thousands of CIDRs and ports (repeated and shifted seeds), merged by --compact.
        let exclude = match big {
            Some((n, seeds, ports)) => {
                let many: Vec<String> = (0..n).map(|i| {
                    let c = &seeds[i % seeds.len()];
                    let (addr, len) = c.split_once('/').unwrap_or((c, "32"));
                    match addr.parse::<std::net::Ipv4Addr>() {
                        Ok(v4) => {
                            let mut o = v4.octets();
                            o[2] = o[2].wrapping_add((i / 256) as u8);
                            o[3] = o[3].wrapping_add(i as u8);
                            format!("{}/{}", std::net::Ipv4Addr::from(o), len.parse::<u8>().unwrap().max(24))
                        }
                        Err(_) => c.clone(),
                    }
                }).collect();
                let many_ports: Vec<String> = (0..n).map(|i| {
                    let p: u32 = ports[i % ports.len()].parse().unwrap();
                    (((p + i as u32 * 7) % 65535) + 1).to_string()
                }).collect();
                flag("-o", Some(many_ports.join(",")));
                Some(many.join(","))
            }
            None => exclude,
        };
        flag("-x", exclude);
        if let Some((all, servers)) = dns {
            a.push("--redirect-dns".into());
            if all { a.push("--capture-all-dns".into()); }
            resolv = servers.iter().map(|s| format!("nameserver {s}\n")).collect();
        }
        if switches[0] { a.push("--ipv6".into()); }
        if switches[1] { a.push("--drop-invalid".into()); }
        if switches[2] { a.push("--compact".into()); }
        if let Some(g) = groups.0 { env.push(("ISTIO_OUTBOUND_OWNER_GROUPS".to_string(), g)); }
        if let Some(g) = groups.1 { env.push(("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE".to_string(), g)); }
        (a, env, resolv)
    }
}

#[test]
fn the_decoder_reads_back_random_configurations_as_planned() {
    needs_netns!();
    let count = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = configuration();
    let dir = TempDir::new("nldecprop");
    let ns = Netns::new("nldecprop");
    let (mut failed, mut planned, mut compact, mut big) = (Vec::new(), 0, 0, 0);
    let mut tried = 0;
    while planned < count && tried < count * 3 {
        tried += 1;
        let (mut args, env, resolv) = strategy.new_tree(&mut runner).expect("generate a case").current();
        dir.write("resolv.conf", &resolv);
        args.extend(["--resolv-conf".to_string(), "resolv.conf".to_string()]);
        // A configuration meshcap refuses (e.g. an exclusion with host bits) is no case.
        let Ok(plan) = render_plan(&args, &env, dir.path()) else {
            continue;
        };
        planned += 1;
        compact += usize::from(args.iter().any(|a| a == "--compact"));
        big += usize::from(args.iter().any(|a| a.len() > 5000));
        if let Some(why) = differs(&ns, &plan) {
            failed.push(format!("meshcap render {} (env {env:?}):\n{why}", args.join(" ")));
        }
    }
    assert_eq!(planned, count, "only {planned} of {tried} configurations were valid");
    assert!(
        compact > 0 && big > 0,
        "no --compact ({compact}) or no long-list ({big}) case"
    );
    assert!(
        failed.is_empty(),
        "{} of {planned}:\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}

/// Adds `line` (an `nft` command) inside `ns`.
fn nft_add(ns: &Netns, line: &str) {
    let out = ns.run("nft", &[line]);
    assert!(
        out.status.success(),
        "nft {line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn foreign_additions_in_meshcaps_tables_are_drift_named_by_check() {
    needs_netns!();
    let ns = Netns::ipv4("nldecforeign");
    Meshcap::new()
        .arg("istio-iptables")
        .args(SIDECAR)
        .arg("--native-nftables")
        .netns(&ns)
        .run()
        .success();
    let check = || {
        Meshcap::new()
            .args(["check", "--native-nftables"])
            .args(SIDECAR)
            .netns(&ns)
            .run()
    };
    check().success().stdout_contains("in sync");
    // Another table's objects are none of meshcap's business.
    nft_add(&ns, "add table inet other");
    nft_add(&ns, "add set inet other s { type ipv4_addr ; }");
    nft_add(&ns, "add chain inet other c { type filter hook output priority 0 ; }");
    nft_add(&ns, "add rule inet other c log prefix \"x\" accept");
    check().success().stdout_contains("in sync");

    let t = "inet istio-proxy-nat";
    for (addition, named) in [
        (
            format!("add rule {t} istio-output log prefix \"seen\" counter accept"),
            "add rule inet istio-proxy-nat istio-output [log (an expression meshcap never writes) counter verdict Accept]",
        ),
        (
            format!("add rule {t} istio-output ip ttl 1 counter return"),
            "add rule inet istio-proxy-nat istio-output [meta load NfProto cmp Eq 0x02 payload Network @8+1",
        ),
        (
            format!("add rule {t} istio-output tcp dport 80 counter goto istio-redirect"),
            "tcp dport 80 counter [verdict Goto(\"istio-redirect\")]",
        ),
        (
            format!("add rule {t} istio-output counter return comment \"mine\""),
            "add rule inet istio-proxy-nat istio-output counter return [comment \"mine\"]  # unexpected",
        ),
        (format!("add set {t} blocked {{ type ipv4_addr ; }}"), "blocked"),
        (
            format!("add chain {t} foreign-chain"),
            "add chain inet istio-proxy-nat foreign-chain",
        ),
        (format!("add counter {t} seen"), "1 named object(s) or flowtable(s)"),
    ] {
        nft_add(&ns, &addition);
        let out = check();
        out.expect_exit(1).stdout_contains(named);
    }
    // And apply refuses over all of it, naming it the same way, without running nft.
    let o = Meshcap::new()
        .arg("istio-iptables")
        .args(SIDECAR)
        .args(["--native-nftables", "--log_output_level=default:debug"])
        .netns(&ns)
        .run();
    o.expect_exit(1)
        .stderr_contains("--reconcile")
        .stderr_contains("[log (an expression meshcap never writes)")
        .stderr_contains("unexpected set");
    assert_eq!(o.spawns(), 0, "{o}");
}

#[test]
fn check_reads_the_state_without_nft_or_any_file_of_etc() {
    needs_netns!();
    let ns = Netns::ipv4("nldecnoetc");
    Meshcap::new()
        .arg("istio-iptables")
        .args(SIDECAR)
        .arg("--native-nftables")
        .netns(&ns)
        .run()
        .success();
    // A private mount namespace with an empty /etc (no protocols, passwd or group: what
    // `nft -j list` needs to name `meta l4proto tcp`) and no `nft` in PATH.
    let empty = TempDir::new("nldecnoetc");
    Meshcap::new()
        .args(["check", "--native-nftables"])
        .args(SIDECAR)
        .netns(&ns)
        .env("PATH", empty.path())
        .launcher([
            "unshare".into(),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            real("sh").display().to_string(),
            "-c".into(),
            format!("{} -t tmpfs none /etc && exec \"$@\"", real("mount").display()),
            "sh".into(),
        ])
        .run()
        .success()
        .stdout_contains("# nftables: in sync");
}
