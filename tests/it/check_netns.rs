//! `meshcap check` and the parser against the real kernel, in throw-away namespaces.
//!
//! Istio's payload (what `meshcap render` prints, byte-identical to Istio's) is loaded with the
//! variant's own `iptables-restore --noflush` inside a fresh namespace, never the host's. Then:
//! the kernel's `iptables-save` parses back to the plan (modulo the save's normalisation: match
//! order, `-m tcp`, host bits), `check` reports it in sync, and edits made with `iptables` show
//! up as the right `+`/`-` lines with exit 1.

use std::collections::BTreeMap;

use crate::support::api::{Rule, Strictness, TableName, parse_save};
use crate::support::netfilter::render as render_payload;
use crate::support::{Meshcap, Netns, Run, SIDECAR, TempDir, Variant, needs_netns};

/// The variants, in the order these tests always used.
const VARIANTS: [Variant; 2] = [Variant::Legacy, Variant::Nft];

/// Flag sets covering every table and target meshcap writes.
const CONFIGS: &[&[&str]] = &[
    SIDECAR,
    &[
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-d",
        "15020",
        "-i",
        "10.0.0.0/8,2001:db8::/32",
        "-x",
        "10.1.2.3/16",
        "-c",
        "eth9",
        "-k",
        "veth+",
        "--redirect-dns",
        "--capture-all-dns",
        "--drop-invalid",
        "-q",
        "8000:8100",
        "-o",
        "9000",
        "-u",
        "1337,3",
        "-g",
        "4",
        "--ipv6",
    ],
    &["-b", "80,443", "-k", "eth1,eth2", "-i", "*", "--ipv6"],
];

/// `iptables-VARIANT-WHAT` (family `v4`) or `ip6tables-VARIANT-WHAT` (`v6`).
fn tool(variant: Variant, family: &str, what: &str) -> String {
    variant.tool(if family == "v6" { "ip6tables" } else { "iptables" }, what)
}

/// `meshcap render --family F ARGS`.
fn render(args: &[&str], family: &str) -> String {
    render_payload(args, family, false)
}

fn load(ns: &Netns, variant: Variant, family: &str, payload: &str) {
    let out = ns.run_with_stdin(&tool(variant, family, "-restore"), &["--noflush"], payload);
    assert!(
        out.status.success(),
        "restore: {}\n{payload}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn save(ns: &Netns, variant: Variant, family: &str) -> String {
    let out = ns.run(&tool(variant, family, "-save"), &[]);
    assert!(out.status.success(), "save: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Every chain's rules in kernel order, canonical (the save's normalisation undone).
fn canonical_chains(text: &str) -> BTreeMap<(TableName, String), Vec<Rule>> {
    let dump = parse_save(text, Strictness::Strict).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut out = BTreeMap::new();
    for t in &dump.tables {
        let name = t.table().unwrap();
        for (chain, entries) in t.resolved() {
            let rules: Vec<Rule> = entries
                .iter()
                .map(|e| {
                    e.rule
                        .clone()
                        .unwrap_or_else(|why| panic!("{chain}: {why}"))
                        .canonical()
                })
                .collect();
            if !rules.is_empty() {
                out.insert((name, chain), rules);
            }
        }
    }
    out
}

/// `(exit code, stdout, stderr)` of a run.
fn outcome(run: Run) -> (i32, String, String) {
    (run.code.unwrap_or(-1), run.stdout, run.stderr)
}

/// `meshcap check --from-save DUMP --family F ARGS` with the dump in a file (meshcap reads
/// only regular files) → (exit, stdout, stderr).
fn check_dump(dump: &str, family: &str, args: &[&str]) -> (i32, String, String) {
    let dir = TempDir::new("ckdump");
    let file = dir.write("dump", dump);
    let file = file.to_str().expect("UTF-8 path");
    let check = Meshcap::new().args(["check", "--from-save", file, "--family", family]);
    outcome(check.args(args).run())
}

#[test]
fn kernel_save_parses_back_to_the_plan_and_checks_clean() {
    needs_netns!();
    let mut compared = 0;
    for variant in VARIANTS {
        for args in CONFIGS {
            let ns = Netns::new("ckparse");
            for family in ["v4", "v6"] {
                let payload = render(args, family);
                if payload.is_empty() {
                    continue;
                }
                load(&ns, variant, family, &payload);
                let saved = save(&ns, variant, family);
                // The payload itself is a dump of the plan (parse(render(x)) == x is proven
                // elsewhere); the kernel's save must hold the same chains in the same order.
                assert_eq!(
                    canonical_chains(&saved),
                    canonical_chains(&payload),
                    "{variant} {family} {args:?}\n--- saved\n{saved}"
                );
                let (code, stdout, stderr) = check_dump(&saved, family, args);
                assert_eq!(
                    (code, stderr.as_str()),
                    (0, ""),
                    "{variant} {family} {args:?}: {stdout}"
                );
                assert!(stdout.ends_with(": in sync\n"), "{stdout}");
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 2 * (1 + 2 + 2));
}

#[test]
fn check_reports_extra_missing_and_misordered_rules() {
    needs_netns!();
    let args = CONFIGS[0];
    for variant in VARIANTS {
        let ns = Netns::new("ckdrift");
        let ipt = tool(variant, "v4", "");
        load(&ns, variant, "v4", &render(args, "v4"));
        let run = |argv: &[&str]| {
            let out = ns.run(&ipt, argv);
            assert!(
                out.status.success(),
                "{ipt} {argv:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };

        // An extra rule in an ISTIO chain; a foreign rule in a built-in chain is ignored.
        run(&[
            "-t",
            "nat",
            "-I",
            "ISTIO_OUTPUT",
            "3",
            "-d",
            "10.9.9.9/32",
            "-j",
            "RETURN",
        ]);
        run(&[
            "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
        ]);
        let (code, out, _) = check_dump(&save(&ns, variant, "v4"), "v4", args);
        assert_eq!(code, 1, "{variant}: {out}");
        assert!(
            out.starts_with("# IPv4: 0 missing, 1 unexpected, 0 misordered\n"),
            "{variant}: {out}"
        );
        assert!(
            out.contains("- -t nat -A ISTIO_OUTPUT -d 10.9.9.9/32 -j RETURN  # unexpected, live #3"),
            "{out}"
        );

        // A missing rule (and the extra one removed again).
        run(&["-t", "nat", "-D", "ISTIO_OUTPUT", "3"]);
        run(&[
            "-t",
            "nat",
            "-D",
            "ISTIO_INBOUND",
            "-p",
            "tcp",
            "--dport",
            "15021",
            "-j",
            "RETURN",
        ]);
        let (code, out, _) = check_dump(&save(&ns, variant, "v4"), "v4", args);
        assert_eq!(code, 1, "{out}");
        assert_eq!(
            out,
            "# IPv4: 1 missing, 0 unexpected, 0 misordered\n+ -t nat -A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN  # missing, planned #3\n"
        );

        // Put it back at the end: now it is out of place.
        run(&[
            "-t",
            "nat",
            "-A",
            "ISTIO_INBOUND",
            "-p",
            "tcp",
            "--dport",
            "15021",
            "-j",
            "RETURN",
        ]);
        let (code, out, _) = check_dump(&save(&ns, variant, "v4"), "v4", args);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.starts_with("# IPv4: 0 missing, 0 unexpected, 1 misordered\n"),
            "{out}"
        );

        // A jump from a built-in chain removed: drift in the built-in chain.
        let ns2 = Netns::new("ckjump");
        load(&ns2, variant, "v4", &render(args, "v4"));
        let out = ns2.run(&ipt, &["-t", "nat", "-D", "OUTPUT", "-j", "ISTIO_OUTPUT"]);
        assert!(out.status.success());
        let (code, out, _) = check_dump(&save(&ns2, variant, "v4"), "v4", args);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("+ -t nat -A OUTPUT -j ISTIO_OUTPUT  # missing, planned #1"),
            "{out}"
        );
    }
}

#[test]
fn check_of_an_empty_namespace_is_all_missing() {
    needs_netns!();
    let ns = Netns::new("ckempty");
    let args = CONFIGS[0];
    let planned = render(args, "v4")
        .lines()
        .filter(|l| l.starts_with("-A ") || l.starts_with("-I "))
        .count();
    for variant in VARIANTS {
        let (code, out, _) = check_dump(&save(&ns, variant, "v4"), "v4", args);
        assert_eq!(code, 1, "{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("+ ")).count(), planned, "{out}");
        assert!(!out.lines().any(|l| l.starts_with("- ")), "{out}");
    }
}

/// What apply programs besides the rules (istio-compat §5.8, default mark 1337 and table 133): TPROXY's
/// policy rule and local route per enabled family, and `::6` on `lo` with IPv6. For tests that
/// load rules without meshcap's apply.
fn add_apply_routes(ns: &Netns, tproxy: bool, ipv6: bool) {
    let families: &[&str] = if ipv6 { &["-4", "-6"] } else { &["-4"] };
    for family in families.iter().filter(|_| tproxy) {
        ns.ip(&[family, "rule", "add", "fwmark", "1337", "lookup", "133"]);
        ns.ip(&[family, "route", "add", "local", "default", "dev", "lo", "table", "133"]);
    }
    if ipv6 {
        ns.ip(&["-6", "addr", "add", "::6/128", "dev", "lo"]);
    }
}

/// `meshcap check --network-namespace NS ARGS` → (exit, stdout, stderr).
fn check_ns(ns: &str, args: &[&str]) -> (i32, String, String) {
    outcome(
        Meshcap::new()
            .args(["check", "--network-namespace", ns])
            .args(args)
            .run(),
    )
}

#[test]
fn check_reads_the_namespace_both_variants() {
    needs_netns!();
    let args = CONFIGS[0];
    for variant in VARIANTS {
        // A pod-like namespace: one IPv4 address, so IPv6 detection says off (as apply would).
        let ns = Netns::ipv4("cklive");

        // Empty namespace: everything missing, exit 1.
        let (code, out, err) = check_ns(&ns.name, args);
        assert_eq!(code, 1, "{out}{err}");
        let planned = render(args, "v4").lines().filter(|l| l.starts_with("-A ")).count();
        assert_eq!(out.lines().filter(|l| l.starts_with("+ ")).count(), planned, "{out}");
        assert!(out.ends_with("# IPv6: in sync\n# routes: in sync\n"), "{out}");

        // Istio's payload loaded by the variant's own restore: in sync, read with that variant.
        load(&ns, variant, "v4", &render(args, "v4"));
        let (code, out, err) = check_ns(&ns.name, args);
        assert_eq!((code, err.as_str()), (0, ""), "{variant}: {out}");
        assert_eq!(
            out,
            format!("# IPv4 (iptables-{variant}-save): in sync\n# IPv6: in sync\n# routes: in sync\n")
        );
        // By path too, and as JSON.
        let path = ns.path();
        let (code, out, _) = check_ns(path.to_str().unwrap(), &[args, &["--format", "json"]].concat());
        assert_eq!(code, 0, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["in_sync"], true);
        assert_eq!(v["families"][0]["source"], format!("iptables-{variant}-save"));

        // An extra rule and a missing one.
        let ipt = tool(variant, "v4", "");
        let run = |argv: &[&str]| assert!(ns.run(&ipt, argv).status.success(), "{ipt} {argv:?}");
        run(&["-t", "nat", "-A", "ISTIO_OUTPUT", "-d", "10.9.9.9/32", "-j", "RETURN"]);
        run(&[
            "-t",
            "nat",
            "-D",
            "ISTIO_INBOUND",
            "-p",
            "tcp",
            "--dport",
            "15090",
            "-j",
            "RETURN",
        ]);
        let (code, out, _) = check_ns(&ns.name, args);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.starts_with(&format!(
                "# IPv4 (iptables-{variant}-save): 1 missing, 1 unexpected, 0 misordered\n"
            )),
            "{out}"
        );
        assert!(
            out.contains("+ -t nat -A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN  # missing, planned #2\n"),
            "{out}"
        );
        assert!(
            out.contains("- -t nat -A ISTIO_OUTPUT -d 10.9.9.9/32 -j RETURN  # unexpected, live #"),
            "{out}"
        );

        // Flags that plan something else: drift, not an error.
        let (code, out, _) = check_ns(&ns.name, &["-b", ""]);
        assert_eq!(code, 1, "{out}");
    }
}

#[test]
fn check_flags_leftovers_and_errors() {
    needs_netns!();
    // An empty ISTIO chain left behind is drift (apply would refuse it too).
    let ns = Netns::new("ckstale");
    load(&ns, Variant::Nft, "v4", &render(&["-b", "*"], "v4"));
    assert!(
        ns.run("iptables-nft", &["-t", "mangle", "-N", "ISTIO_DIVERT"])
            .status
            .success()
    );
    let (code, out, _) = check_ns(&ns.name, &["-b", "*", "--ipv6=false"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("- -t mangle -N ISTIO_DIVERT  # unexpected chain\n"),
        "{out}"
    );

    // meshcap's chains in both variants: the one apply would not use is reported.
    let ns = Netns::new("ckboth");
    let payload = render(&["-b", "*"], "v4");
    load(&ns, Variant::Legacy, "v4", &payload);
    load(&ns, Variant::Nft, "v4", &payload);
    let (code, out, _) = check_ns(&ns.name, &["-b", "*", "--ipv6=false"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("meshcap's chains also exist in the iptables-nft tables"),
        "{out}"
    );

    // IPv6 on (explicitly) with only IPv4 rules: the IPv6 rules are missing.
    let ns = Netns::new("ckv6");
    load(&ns, Variant::Nft, "v4", &render(&["-b", "*", "--ipv6"], "v4"));
    let (code, out, _) = check_ns(&ns.name, &["-b", "*", "--ipv6"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("# IPv4 (iptables-nft-save): in sync\n# IPv6 (ip6tables-nft-save): "),
        "{out}"
    );

    // A namespace with no address and no --ipv6: IPv6 cannot be detected, exit 2.
    let (code, out, err) = check_ns(&ns.name, &["-b", "*"]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("pass --ipv6=true or --ipv6=false"), "{err}");

    // A missing namespace: exit 2 naming it, nothing read anywhere else.
    let (code, out, err) = check_ns("mc-no-such-namespace", &["-b", "*"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(
        err,
        "meshcap: cannot open network namespace '/var/run/netns/mc-no-such-namespace': No such file or directory (os error 2)\n"
    );
    // A file that is not a namespace.
    let (code, _, err) = check_ns("/etc/hostname", &["-b", "*"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a network namespace"), "{err}");
}

#[test]
fn check_agrees_with_apply() {
    needs_netns!();
    for args in CONFIGS {
        let args: Vec<&str> = args.iter().copied().filter(|a| *a != "--ipv6").collect();
        let ns = Netns::ipv4("ckapply");
        Meshcap::new()
            .arg("istio-iptables")
            .netns(&ns)
            .args(&args)
            .run()
            .success();
        let (code, out, err) = check_ns(&ns.name, &args);
        assert_eq!((code, err.as_str()), (0, ""), "{args:?}: {out}");
        assert!(out.starts_with("# IPv4 (iptables-"), "{out}");
    }
}

#[test]
fn check_compares_tproxy_routes_and_the_passthrough_address() {
    needs_netns!();
    let ns = Netns::dual("ckroutes");
    let tproxy = ["-m", "TPROXY", "-b", "*", "-i", "*", "--ipv6=true"];
    let apply = Meshcap::new()
        .arg("istio-iptables")
        .netns(&ns)
        .args(&tproxy[..6])
        .env("ENABLE_INBOUND_IPV6", "true");
    apply.run().success();
    let (code, out, err) = check_ns(&ns.name, &tproxy);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(out.ends_with("# routes: in sync\n"), "{out}");

    // A lost route and a policy rule added twice (as a second Istio run would).
    ns.ip(&["-6", "route", "del", "local", "default", "dev", "lo", "table", "133"]);
    ns.ip(&["rule", "add", "fwmark", "1337", "lookup", "133"]);
    let (code, out, _) = check_ns(&ns.name, &tproxy);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.ends_with(
            "# routes: 1 missing, 1 unexpected\n\
             + ip -6 route local default dev lo table 133\n\
             - ip -4 rule fwmark 1337 lookup 133  # duplicate\n"
        ),
        "{out}"
    );
    let mut json = vec!["--format", "json"];
    json.extend_from_slice(&tproxy);
    let (code, out, _) = check_ns(&ns.name, &json);
    assert_eq!(code, 1, "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["routes"]["missing"][0], "ip -6 route local default dev lo table 133",
        "{out}"
    );
    assert_eq!(doc["routes"]["in_sync"], false, "{out}");

    // A re-run of apply puts the route back; the duplicate stays (apply adds, never removes).
    apply.run().success();
    let (_, out, _) = check_ns(&ns.name, &tproxy);
    assert!(
        out.ends_with("# routes: 0 missing, 1 unexpected\n- ip -4 rule fwmark 1337 lookup 133  # duplicate\n"),
        "{out}"
    );

    // After cleanup, checking REDIRECT flags finds no routing leftovers; TPROXY ones are missing.
    apply.arg("--cleanup-only").run().success();
    let (_, out, _) = check_ns(&ns.name, &["-b", "*", "-i", "*", "--ipv6=false"]);
    assert!(out.ends_with("# routes: in sync\n"), "{out}");
    let (_, out, _) = check_ns(&ns.name, &tproxy);
    assert!(out.contains("# routes: 5 missing, 0 unexpected\n"), "{out}");
    assert!(out.contains("+ ip -6 addr ::6/128 dev lo\n"), "{out}");
}

#[test]
fn check_native_nftables_against_the_kernel() {
    needs_netns!();
    let configs: [&[&str]; 3] = [
        CONFIGS[0],
        CONFIGS[1],
        &[
            "-b",
            "80,443",
            "-k",
            "eth1,eth2",
            "-i",
            "*",
            "--ipv6",
            "--drop-invalid",
            "-m",
            "TPROXY",
        ],
    ];
    for args in configs {
        let ns = Netns::new("cknft");
        let tx = Meshcap::new().args(["render", "--native-nftables"]).args(args).stdout();
        let ipv6 = if args.contains(&"--ipv6") {
            "--ipv6=true"
        } else {
            "--ipv6=false"
        };
        let check = |extra: &[&str]| {
            let mut a: Vec<&str> = args.iter().copied().filter(|a| *a != "--ipv6").collect();
            a.extend_from_slice(&["--native-nftables", ipv6]);
            a.extend_from_slice(extra);
            check_ns(&ns.name, &a)
        };
        // Nothing there yet: every table missing.
        let (code, out, _) = check(&[]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("+ add table inet istio-proxy-nat  # missing table\n"),
            "{out}"
        );

        // Loaded by nft itself (which normalises what it lists), plus the routing state apply
        // adds besides the rules: in sync.
        let load = ns.run_with_stdin("nft", &["-f", "-"], &tx);
        assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
        add_apply_routes(&ns, args.contains(&"TPROXY"), args.contains(&"--ipv6"));
        // A foreign table is none of check's business.
        assert!(ns.run("nft", &["add", "table", "inet", "kube-proxy"]).status.success());
        let (code, out, err) = check(&[]);
        assert_eq!((code, err.as_str()), (0, ""), "{args:?}: {out}");
        assert_eq!(out, "# nftables: in sync\n# routes: in sync\n");

        // A rule added, a chain added.
        let nft = |words: &[&str]| assert!(ns.run("nft", words).status.success(), "nft {words:?}");
        nft(&[
            "add",
            "rule",
            "inet",
            "istio-proxy-nat",
            "istio-output",
            "ip",
            "daddr",
            "10.9.9.9",
            "counter",
            "return",
        ]);
        nft(&["add", "chain", "inet", "istio-proxy-nat", "istio-extra"]);
        let (code, out, _) = check(&[]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(
                "- add rule inet istio-proxy-nat istio-output ip daddr 10.9.9.9/32 counter return  # unexpected, live #"
            ),
            "{out}"
        );
        assert!(
            out.contains("- add chain inet istio-proxy-nat istio-extra  # unexpected chain\n"),
            "{out}"
        );
        let (code, out, _) = check(&["--format", "json"]);
        assert_eq!(code, 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["nftables"]["unexpected"], 1);

        // A chain emptied: its rules are missing, in order.
        let planned_in_redirect = tx
            .lines()
            .filter(|l| l.contains("istio-proxy-nat istio-in-redirect ") && l.starts_with("add rule"))
            .count();
        nft(&["flush", "chain", "inet", "istio-proxy-nat", "istio-in-redirect"]);
        let (code, out, _) = check(&[]);
        assert_eq!(code, 1);
        assert_eq!(
            out.matches("+ add rule inet istio-proxy-nat istio-in-redirect ")
                .count(),
            planned_in_redirect,
            "{out}"
        );
    }
    // --from-save is iptables-save text: refused with --native-nftables, exit 2.
    let (code, _, err) = check_dump("", "v4", &["--native-nftables"]);
    assert_eq!(code, 2, "{err}");
}

/// `--compact` rules read back from the kernel compare equal to the plan: nft's listing of an
/// anonymous set (automerged, adjacent prefixes shown as a range) and iptables-save's
/// `-m multiport` rules.
#[test]
fn check_compact_rules_against_the_kernel() {
    needs_netns!();
    let args: &[&str] = &[
        "-b",
        "*",
        "-d",
        "15090,15021,15020,8000:8100,22,23,24",
        "-o",
        "53,1000:2000",
        "-x",
        "10.0.1.0/24,10.0.2.0/24,10.0.4.0/24,10.0.5.0/24,10.1.2.3/16,192.168.0.0/16,2001:db8::/33,2001:db8:8000::/33,fd00:1::/64",
        "-i",
        "*",
        "--compact",
    ];
    // nft: loaded by nft itself, then checked.
    let ns = Netns::new("ckcompact");
    let tx = Meshcap::new()
        .args(["render", "--native-nftables", "--ipv6"])
        .args(args)
        .stdout();
    assert!(tx.contains("ip daddr { "), "{tx}");
    let load = ns.run_with_stdin("nft", &["-f", "-"], &tx);
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    // What apply adds besides the rules (check compares it too).
    add_apply_routes(&ns, args.contains(&"TPROXY"), true);
    let mut check_args: Vec<&str> = args.to_vec();
    check_args.extend_from_slice(&["--native-nftables", "--ipv6=true"]);
    let (code, out, err) = check_ns(&ns.name, &check_args);
    assert_eq!((code, err.as_str()), (0, ""), "{out}\n{tx}");
    // One address too many in the live set is drift.
    let extra = tx.replace("192.168.0.0/16 }", "192.168.0.0/16, 203.0.113.0/24 }");
    assert_ne!(extra, tx);
    let load = ns.run_with_stdin("nft", &["-f", "-"], &extra);
    assert!(load.status.success());
    let (code, out, _) = check_ns(&ns.name, &check_args);
    assert_eq!(code, 1, "{out}");
    drop(ns);

    // iptables: meshcap applies, check reads iptables-save back (multiport rules).
    let ns = Netns::ipv4("ckcompact");
    Meshcap::new()
        .arg("istio-iptables")
        .args(args)
        .netns(&ns)
        .run()
        .success();
    let mut check_args: Vec<&str> = args.to_vec();
    check_args.push("--ipv6=false");
    let (code, out, err) = check_ns(&ns.name, &check_args);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(out.contains("in sync"), "{out}");
}

/// The `* TABLE` … `COMMIT` block of a restore payload.
fn table_block(payload: &str, table: &str) -> String {
    let start = payload.find(&format!("* {table}\n")).expect("table in payload");
    let end = start + payload[start..].find("COMMIT\n").unwrap() + "COMMIT\n".len();
    payload[start..end].to_string()
}

/// What an apply interrupted between its two tables' commits leaves: the plan's mangle table
/// alone. Every planned nat rule is missing (text and JSON), whether the nat table is absent,
/// there with only its built-in chains, or there with a foreign chain.
#[test]
fn check_reports_a_planned_table_missing_whole() {
    needs_netns!();
    let args = ["-m", "TPROXY", "-b", "*"];
    let payload = render(&args, "v4");
    let nat = table_block(&payload, "nat");
    let nat_rules = nat
        .lines()
        .filter(|l| l.starts_with("-A ") || l.starts_with("-I "))
        .count();
    assert!(nat_rules > 0, "{payload}");
    for variant in VARIANTS {
        let ipt = tool(variant, "v4", "");
        let nat_states: [(&str, &[&[&str]]); 3] = [
            ("absent", &[]),
            ("built-in chains only", &[&["-t", "nat", "-L", "-n"]]),
            (
                "a foreign chain",
                &[
                    &["-t", "nat", "-N", "KUBE-X"],
                    &["-t", "nat", "-A", "OUTPUT", "-j", "KUBE-X"],
                ],
            ),
        ];
        for (what, commands) in nat_states {
            let ns = Netns::ipv4("ckhalf");
            add_apply_routes(&ns, true, false);
            load(&ns, variant, "v4", &table_block(&payload, "mangle"));
            for argv in commands {
                assert!(ns.run(&ipt, argv).status.success(), "{ipt} {argv:?}");
            }
            let (code, out, err) = check_ns(&ns.name, &args);
            assert_eq!(code, 1, "{variant} {what}: {out}{err}");
            assert!(
                out.starts_with(&format!(
                    "# IPv4 (iptables-{variant}-save): {nat_rules} missing, 0 unexpected, 0 misordered\n"
                )),
                "{variant} {what}: {out}"
            );
            let missing: Vec<&str> = out.lines().filter(|l| l.starts_with("+ -t nat -A ")).collect();
            assert_eq!(missing.len(), nat_rules, "{variant} {what}: {out}");
            assert!(
                out.contains("+ -t nat -A OUTPUT -j ISTIO_OUTPUT  # missing, planned #1\n"),
                "{variant} {what}: {out}"
            );
            assert!(!out.contains("-t mangle"), "{variant} {what}: {out}");

            let (code, out, _) = check_ns(&ns.name, &[&args[..], &["--format", "json"]].concat());
            assert_eq!(code, 1, "{out}");
            let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
            let v4 = &doc["families"][0];
            assert_eq!(v4["in_sync"], false, "{out}");
            assert_eq!(v4["missing"], nat_rules, "{out}");
            let entries = v4["entries"].as_array().unwrap();
            assert_eq!(entries.len(), nat_rules, "{out}");
            assert!(
                entries
                    .iter()
                    .all(|e| e["kind"] == "missing" && e["table"] == "nat" && e["planned_at"].is_u64()),
                "{out}"
            );
        }
    }
}

/// A dump piped in (`--from-save /dev/stdin`) is not a regular file: refused at once, naming
/// it, instead of reading an unbounded stream (docs/security.md).
#[test]
fn a_piped_dump_is_refused_naming_the_file() {
    Meshcap::new()
        .args(["check", "--from-save", "/dev/stdin"])
        .stdin("*nat\nCOMMIT\n")
        .run()
        .expect_exit(2)
        .stderr_contains("'/dev/stdin'")
        .stderr_contains("not a regular file");
}
