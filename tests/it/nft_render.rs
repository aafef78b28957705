//! The nft transactions meshcap renders, loaded into a real kernel inside throw-away network
//! namespaces: `nft -c -f -` (check) and `nft -f -` accept them, `nft list ruleset` shows the
//! declared tables and chains, the apply transaction converges from any earlier configuration,
//! and the cleanup transaction removes meshcap's tables and nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;

use clap::Parser;
use meshcap::cli::{Cli, Command};
use meshcap::nft::ir::Transaction;
use meshcap::nft::lower::{apply_transaction, cleanup_transaction};
use meshcap::plan::Plan;
use meshcap::plan::for_render as plan_for_render;
use meshcap::sys::host::Env;

use crate::support::{NetNs, meshcap, netns_available};

/// A resolv.conf with these lines, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("meshcap-nft-{tag}-{}", std::process::id()));
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Configurations covering every table, base chain and statement kind.
fn configurations(resolv: &TempFile, resolv_v6: &TempFile) -> Vec<(&'static str, Vec<String>)> {
    let owned = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let with_resolv = |args: &[&str], file: &TempFile| {
        let mut v = owned(args);
        v.extend(["--resolv-conf".to_string(), file.path().to_string()]);
        v
    };
    vec![
        (
            "sidecar",
            owned(&[
                "-u",
                "1337",
                "-g",
                "1337",
                "-b",
                "*",
                "-d",
                "15090,15021",
                "-i",
                "*",
                "-x",
                "",
            ]),
        ),
        (
            "tproxy",
            owned(&[
                "-u",
                "1337",
                "-g",
                "1337",
                "-m",
                "TPROXY",
                "-b",
                "*",
                "-d",
                "15020",
                "-c",
                "eth9,veth+,counter,ip,return+",
                "--ipv6",
                "--drop-invalid",
                "--redirect-dns",
                "--capture-all-dns",
            ]),
        ),
        (
            "dns-servers",
            with_resolv(
                &[
                    "-u",
                    "1337,0",
                    "-g",
                    "1337",
                    "--redirect-dns",
                    "--ipv6",
                    "-o",
                    "22,5000:5100",
                    "-q",
                    "80",
                ],
                resolv,
            ),
        ),
        (
            "dns-v6-only-ipv6-off",
            with_resolv(&["-u", "1337", "-g", "1337", "--redirect-dns"], resolv_v6),
        ),
        (
            "virt-cidrs",
            owned(&[
                "-u",
                "1337",
                "-g",
                "1337",
                "-b",
                "80,443",
                "-k",
                "eth1,eth2",
                "-i",
                "10.0.0.0/8,2001:db8::/32",
                "-x",
                "10.1.0.0/16,2001:db8:1::/48",
                "--ipv6",
            ]),
        ),
    ]
}

/// `meshcap render --native-nftables ARGS` (the real binary), which must succeed.
fn render(args: &[String]) -> String {
    let out = meshcap(&["render", "--native-nftables"])
        .args(args)
        .output()
        .expect("run meshcap");
    assert!(
        out.status.success(),
        "meshcap render {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The plan `meshcap render ARGS` builds (library view, for the apply transaction).
fn plan(args: &[String]) -> Plan {
    let argv = ["meshcap", "render"]
        .into_iter()
        .map(String::from)
        .chain(args.iter().cloned());
    let Some(Command::Render(render_args)) = Cli::try_parse_from(argv).expect("flags parse").command else {
        panic!("not a render command");
    };
    plan_for_render(&render_args, &Env::from_pairs([("PATH", "/usr/bin")]))
        .expect("plan")
        .1
}

fn nft(ns: &NetNs, args: &[&str], stdin: &str) -> Output {
    ns.run_with_stdin("nft", args, stdin)
}

fn load(ns: &NetNs, what: &str, text: &str) {
    for args in [&["-c", "-f", "-"][..], &["-f", "-"][..]] {
        let out = nft(ns, args, text);
        assert!(
            out.status.success(),
            "nft {args:?} rejected the {what} transaction: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn ruleset(ns: &NetNs) -> String {
    let out = ns.run("nft", &["list", "ruleset"]);
    assert!(
        out.status.success(),
        "nft list ruleset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 ruleset")
}

/// `(table, chain)` for every `add chain` line of a transaction text.
fn declared_chains(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("add chain inet "))
        .map(|rest| {
            let mut words = rest.split(' ');
            (words.next().unwrap().to_string(), words.next().unwrap().to_string())
        })
        .collect()
}

/// The chain names of one table in `nft list ruleset` output.
fn listed_chains(listing: &str, table: &str) -> Vec<String> {
    let header = format!("table inet {table} {{");
    let Some(start) = listing.find(&header) else {
        return Vec::new();
    };
    let body = &listing[start + header.len()..];
    let body = &body[..body.find("\n}").unwrap_or(body.len())];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("chain "))
        .map(|rest| rest.trim_end_matches(" {").to_string())
        .collect()
}

/// A listing as table → chain → rule lines. nft lists a table's chains in creation order, which
/// after a reconfiguration differs from a fresh apply without any effect on packets (base
/// chains run by hook and priority, regular chains only when jumped to).
fn normalized(listing: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut tables: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let (mut table, mut chain) = (String::new(), String::new());
    for line in listing.lines() {
        if let Some(t) = line.strip_prefix("table ") {
            table = t.trim_end_matches(" {").to_string();
            tables.entry(table.clone()).or_default();
        } else if let Some(c) = line.trim().strip_prefix("chain ") {
            chain = c.trim_end_matches(" {").to_string();
            tables
                .entry(table.clone())
                .or_default()
                .entry(chain.clone())
                .or_default();
        } else if line.starts_with("\t\t") {
            let rules = tables
                .entry(table.clone())
                .or_default()
                .entry(chain.clone())
                .or_default();
            rules.push(line.trim().to_string());
        }
    }
    tables
}

fn meshcap_tables(listing: &str) -> Vec<&str> {
    listing
        .lines()
        .filter_map(|l| l.strip_prefix("table inet istio-proxy-"))
        .collect()
}

#[test]
fn rendered_transactions_load_into_the_kernel_and_clean_up() {
    if !netns_available() {
        return;
    }
    let resolv = TempFile::new("resolv", "nameserver 198.51.100.53\nnameserver fd00::53\n");
    let resolv_v6 = TempFile::new("resolv6", "nameserver fd00::53\n");
    // Every configuration as Istio's rules and with --compact (anonymous sets), which must load
    // the same way.
    let both = configurations(&resolv, &resolv_v6)
        .into_iter()
        .flat_map(|(name, args)| {
            let mut compact = args.clone();
            compact.push("--compact".into());
            [(name, args), (name, compact)]
        });
    for (name, args) in both {
        let text = render(&args);
        let ns = NetNs::new(name);
        // A table that is not meshcap's must survive everything below.
        load(&ns, "foreign", "add table inet other\nadd chain inet other keep\n");
        load(&ns, name, &text);
        let listing = ruleset(&ns);
        let declared = declared_chains(&text);
        assert!(!declared.is_empty(), "{name}: no chains in\n{text}");
        for (table, chain) in &declared {
            assert!(
                listed_chains(&listing, table).contains(chain),
                "{name}: {table}/{chain} missing from the kernel:\n{listing}"
            );
        }
        // Exactly the rules rendered: one listed rule per add/insert line (all carry counters).
        let rules = text
            .lines()
            .filter(|l| l.starts_with("add rule") || l.starts_with("insert rule"))
            .count();
        assert_eq!(listing.matches("counter packets ").count(), rules, "{name}:\n{listing}");
        // Re-applying the same transaction is idempotent (add table + flush table).
        load(&ns, name, &text);
        assert_eq!(ruleset(&ns), listing, "{name}: a second run changed the ruleset");

        load(&ns, "cleanup", &cleanup_transaction().to_string());
        let after = ruleset(&ns);
        assert!(meshcap_tables(&after).is_empty(), "{name}: left behind:\n{after}");
        assert!(
            after.contains("table inet other {") && after.contains("chain keep {"),
            "{after}"
        );
        // Cleanup of an already clean namespace succeeds too.
        load(&ns, "cleanup", &cleanup_transaction().to_string());
    }
}

#[test]
fn native_nftables_env_selects_nft_and_family_is_refused() {
    let flag = render(&["-u".into(), "1337".into(), "-g".into(), "1337".into()]);
    let env = meshcap(&["render", "-u", "1337", "-g", "1337"])
        .env("NATIVE_NFTABLES", "true")
        .output()
        .unwrap();
    assert!(env.status.success());
    assert_eq!(String::from_utf8(env.stdout).unwrap(), flag);
    assert!(flag.starts_with("add table inet istio-proxy-nat\n"), "{flag}");

    let out = meshcap(&["render", "--native-nftables", "--family", "v6"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("invalid value 'v6' for '--family'"), "{err}");
}

/// Applies `tx` and returns the resulting ruleset listing.
fn apply(ns: &NetNs, what: &str, tx: &Transaction) -> String {
    load(ns, what, &tx.to_string());
    ruleset(ns)
}

#[test]
fn apply_transaction_converges_from_an_earlier_configuration() {
    if !netns_available() {
        return;
    }
    let resolv = TempFile::new("resolv-apply", "nameserver 198.51.100.53\nnameserver fd00::53\n");
    let resolv_v6 = TempFile::new("resolv6-apply", "nameserver fd00::53\n");
    let configs = configurations(&resolv, &resolv_v6);
    let plans: Vec<(&str, Plan)> = configs.iter().map(|(n, a)| (*n, plan(a))).collect();

    // Each configuration applied fresh: the reference listing.
    let mut fresh = Vec::new();
    for (name, p) in &plans {
        let ns = NetNs::new("fresh");
        fresh.push(apply(&ns, name, &apply_transaction(p).unwrap()));
    }
    // Every configuration applied over every other one ends in the fresh state; a plain
    // Istio-style transaction does not (stale tables or chains stay behind) for at least one pair.
    let mut istio_style_differs = false;
    for (i, (from, p_from)) in plans.iter().enumerate() {
        for (j, (to, p_to)) in plans.iter().enumerate() {
            if i == j {
                continue;
            }
            let ns = NetNs::new("converge");
            apply(&ns, from, &apply_transaction(p_from).unwrap());
            let listing = apply(&ns, to, &apply_transaction(p_to).unwrap());
            assert_eq!(
                normalized(&listing),
                normalized(&fresh[j]),
                "applying {to} over {from} did not converge"
            );
            // Idempotent, down to the listing order.
            assert_eq!(apply(&ns, to, &apply_transaction(p_to).unwrap()), listing);

            let ns = NetNs::new("istio");
            apply(&ns, from, &meshcap::nft::lower::transaction(p_from).unwrap());
            let istio = apply(&ns, to, &meshcap::nft::lower::transaction(p_to).unwrap());
            istio_style_differs |= normalized(&istio) != normalized(&fresh[j]);
        }
    }
    assert!(
        istio_style_differs,
        "expected Istio's transaction to leave stale state for some pair"
    );
    // Cleanup after the last apply leaves nothing of meshcap's.
    let ns = NetNs::new("cleanup");
    apply(&ns, plans[1].0, &apply_transaction(&plans[1].1).unwrap());
    let after = apply(&ns, "cleanup", &cleanup_transaction());
    assert!(meshcap_tables(&after).is_empty(), "{after}");
}
