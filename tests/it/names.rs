//! Names the kernel tools resolve or parse: interface, user and group names (issue 17).
//!
//! - A property: random accepted configurations whose interface, user and group names include
//!   nft keywords (`ne`, `not`, `counter`, `meta`, …) render text that loads — `nft -c -f` for
//!   `--native-nftables`, `iptables-nft-restore --test` / `ip6tables-nft-restore --test`
//!   otherwise — in a throw-away network namespace whose tools see the case's own accounts
//!   ([`Accounts`]; `render` is pointed at the same files with `--passwd`/`--group`).
//! - The golden configurations that name users and groups, or the range `1:1`, applied for
//!   real in a namespace with both iptables variants: `check` then exits 0 (iptables-save
//!   prints ids and `1`).
//! - Unknown names and too many owner groups are refused before anything is applied.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use crate::support::accounts::bind_accounts;
use crate::support::flags::args_file;
use crate::support::{Accounts, Meshcap, Netns, Variant, needs_netns};

/// Cases per run (`PROPTEST_CASES=N` for more): each is one render and one or two loads.
const CASES: usize = 24;

/// Words nft reads as keywords, and names Istio writes bare that must stay loadable.
const KEYWORDS: [&str; 16] = [
    "ne", "eq", "lt", "gt", "le", "ge", "not", "counter", "meta", "ip", "length", "protocol", "accept", "return",
    "tcp", "skuid",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(KEYWORDS.to_vec()).prop_map(str::to_string),
        1 => "[a-z_][a-z0-9_-]{0,8}",
    ]
}

fn iface() -> impl Strategy<Value = String> {
    (word(), any::<bool>()).prop_map(|(w, wild)| if wild { format!("{w}+") } else { w })
}

fn owner() -> impl Strategy<Value = Result<u32, String>> {
    prop_oneof![1 => (0u32..70000).prop_map(Ok), 3 => word().prop_map(Err)]
}

#[derive(Debug, Clone)]
struct Case {
    native: bool,
    tproxy: bool,
    ipv6: bool,
    dns: bool,
    exclude_ifaces: Vec<String>,
    virt_ifaces: Vec<String>,
    uids: Vec<Result<u32, String>>,
    gids: Vec<Result<u32, String>>,
    groups: Option<(bool, Vec<Result<u32, String>>)>,
}

prop_compose! {
    fn case()(
        native in any::<bool>(),
        tproxy in any::<bool>(),
        ipv6 in any::<bool>(),
        dns in any::<bool>(),
        exclude_ifaces in prop::collection::vec(iface(), 0..=3),
        virt_ifaces in prop::collection::vec(iface(), 0..=2),
        uids in prop::collection::vec(owner(), 1..=3),
        gids in prop::collection::vec(owner(), 0..=3),
        groups in prop::option::of((any::<bool>(), prop::collection::vec(owner(), 1..=4))),
    ) -> Case {
        Case { native, tproxy, ipv6, dns, exclude_ifaces, virt_ifaces, uids, gids, groups }
    }
}

fn list(owners: &[Result<u32, String>]) -> String {
    owners
        .iter()
        .map(|o| match o {
            Ok(n) => n.to_string(),
            Err(name) => name.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn names(owners: &[Result<u32, String>]) -> Vec<&str> {
    owners
        .iter()
        .filter_map(|o| o.as_ref().err().map(String::as_str))
        .collect()
}

impl Case {
    /// The `render` arguments and environment.
    fn command(&self, accounts: &Accounts) -> (Vec<String>, Vec<(String, String)>) {
        let mut args: Vec<String> = vec!["render".into(), "-i".into(), "*".into(), "-b".into(), "*".into()];
        let mut push = |flag: &str, value: String| args.extend([flag.to_string(), value]);
        push("-u", list(&self.uids));
        if !self.gids.is_empty() {
            push("-g", list(&self.gids));
        }
        if !self.exclude_ifaces.is_empty() {
            push("-c", self.exclude_ifaces.join(","));
        }
        if !self.virt_ifaces.is_empty() {
            push("-k", self.virt_ifaces.join(","));
        }
        if self.tproxy {
            push("-m", "TPROXY".into());
        }
        push("--passwd", accounts.passwd().display().to_string());
        push("--group", accounts.group().display().to_string());
        if self.dns {
            args.extend(["--redirect-dns".into(), "--capture-all-dns".into()]);
        }
        if self.ipv6 {
            args.push("--ipv6".into());
        }
        if self.native {
            args.push("--native-nftables".into());
        }
        let mut env = Vec::new();
        if let Some((include, groups)) = &self.groups {
            let var = if *include {
                "ISTIO_OUTBOUND_OWNER_GROUPS"
            } else {
                "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"
            };
            env.push((var.to_string(), list(groups)));
        }
        (args, env)
    }

    /// The accounts the case names: users of `-u`, groups of `-g` (or of `-u` without it) and
    /// of the owner-group lists.
    fn accounts(&self) -> Accounts {
        let users = names(&self.uids);
        let mut groups = names(if self.gids.is_empty() { &self.uids } else { &self.gids });
        if let Some((_, g)) = &self.groups {
            groups.extend(names(g));
        }
        Accounts::new(&dedup(users), &dedup(groups))
    }
}

fn dedup(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v.dedup();
    v
}

/// Runs `program args` in `ns` with the accounts of `accounts`, feeding `stdin`.
fn load(ns: &Netns, accounts: &Accounts, program: &str, args: &[&str], stdin: &str) -> Result<(), String> {
    let mut cmd = std::process::Command::new(crate::support::real(program));
    cmd.args(args);
    ns.enter(&mut cmd);
    accounts.apply_to(&mut cmd);
    let out = crate::support::cmd::run_bounded(cmd, Some(stdin.as_bytes()), Duration::from_secs(20))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} refused it: {}\ntext:\n{stdin}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn check(case: &Case) -> Result<(), String> {
    let accounts = case.accounts();
    let (args, env) = case.command(&accounts);
    let ns = Netns::new("names");
    let render = |extra: &[&str]| {
        Meshcap::new()
            .args(&args)
            .args(extra)
            .envs(env.iter().cloned())
            .time_limit(Duration::from_secs(20))
            .try_run()
    };
    if case.native {
        let run = render(&[])?;
        if !run.ok() {
            return Err(format!("render refused an accepted configuration: {run}"));
        }
        return load(&ns, &accounts, "nft", &["-c", "-f", "-"], &run.stdout);
    }
    for (family, tool) in [("v4", "iptables-nft-restore"), ("v6", "ip6tables-nft-restore")] {
        let run = render(&["--family", family])?;
        if !run.ok() {
            return Err(format!("render refused an accepted configuration: {run}"));
        }
        if !run.stdout.is_empty() {
            load(&ns, &accounts, tool, &["--test", "--noflush"], &run.stdout)?;
        }
    }
    Ok(())
}

/// `-c +` / `-k +` is refused for nft (no all-wildcard name there): not an accepted case.
fn accepted(case: &Case) -> bool {
    !(case.native && case.exclude_ifaces.iter().chain(&case.virt_ifaces).any(|i| i == "+"))
}

#[test]
fn random_configurations_with_keyword_names_load() {
    needs_netns!();
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let count = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let strategy = case();
    for _ in 0..count {
        let mut tree = strategy.new_tree(&mut runner).expect("generate a case");
        if !accepted(&tree.current()) {
            continue;
        }
        let Err(first) = check(&tree.current()) else { continue };
        // Shrink: simplify while it keeps failing.
        let mut smallest = (tree.current(), first);
        for _ in 0..128 {
            if !tree.simplify() {
                break;
            }
            let c = tree.current();
            match accepted(&c).then(|| check(&c)) {
                Some(Err(e)) => smallest = (c, e),
                _ => {
                    if !tree.complicate() {
                        break;
                    }
                }
            }
        }
        panic!("smallest failing case: {:#?}\n{}", smallest.0, smallest.1);
    }
}

/// The golden cases that name users and groups, or exclude the range `1:1`.
const GOLDEN: [&str; 5] = [
    "render-uid-gid-names",
    "render-owner-groups-dns",
    "render-owner-groups-exclude",
    "render-owner-groups-include",
    "render-inbound-exclude-port-ranges",
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// The golden accounts (`golden/passwd`, `golden/group`) for a command.
fn golden_accounts(m: Meshcap) -> Meshcap {
    let (p, g) = (golden_dir().join("passwd"), golden_dir().join("group"));
    m.configure(move |cmd| bind_accounts(cmd, &p, &g))
}

/// The case's arguments after `render`, and its environment.
fn golden_case(name: &str) -> (Vec<String>, Vec<(String, String)>) {
    let dir = golden_dir().join(name);
    let args = args_file(&std::fs::read_to_string(dir.join("args")).unwrap());
    assert_eq!(args[0], "render");
    let env = std::fs::read_to_string(dir.join("env"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    (args[1..].to_vec(), env)
}

#[test]
fn golden_configurations_with_names_apply_and_check_clean() {
    needs_netns!();
    for name in GOLDEN {
        let (args, env) = golden_case(name);
        for v in Variant::BOTH {
            let ns = Netns::ipv4("names");
            let run = |cmd: &str| {
                golden_accounts(Meshcap::new())
                    .arg(cmd)
                    .args(&args)
                    .envs(env.iter().cloned())
                    .netns(&ns)
                    .variant(v)
                    .run()
            };
            run("istio-iptables").success();
            let saved = crate::support::netfilter::save(&ns, v, "iptables");
            assert!(
                saved.contains("ISTIO_OUTPUT"),
                "{name} ({}): nothing applied:\n{saved}",
                v.name()
            );
            run("check").success();
        }
    }
}

#[test]
fn unknown_names_and_too_many_groups_are_refused_before_anything_runs() {
    needs_netns!();
    let ns = Netns::ipv4("names");
    let apply = |args: &[&str], env: &[(&str, &str)]| {
        golden_accounts(Meshcap::new())
            .arg("istio-iptables")
            .args(args)
            .envs(env.iter().copied())
            .netns(&ns)
            .variant(Variant::Nft)
            .run()
    };
    apply(&["-u", "nosuchuser", "-i", "*"], &[])
        .expect_exit(1)
        .stderr_contains("invalid value 'nosuchuser' for '--proxy-uid': no such user in /etc/passwd");
    apply(&["-u", "1337", "-g", "nosuchgroup"], &[])
        .expect_exit(1)
        .stderr_contains("invalid value 'nosuchgroup' for '--proxy-gid': no such group in /etc/group");
    // -u's names are the GID list too without -g.
    let only_user = Accounts::new(&["proxy-user"], &[]);
    let (p, g) = (only_user.passwd(), only_user.group());
    Meshcap::new()
        .configure(move |cmd| bind_accounts(cmd, &p, &g))
        .args(["istio-iptables", "-u", "proxy-user"])
        .netns(&ns)
        .variant(Variant::Nft)
        .run()
        .expect_exit(1)
        .stderr_contains("invalid value 'proxy-user' for '--proxy-uid': no such group in /etc/group (without a GID list the UID list is the GID list too; give -g)");
    apply(&["-u", "1337"], &[("ISTIO_OUTBOUND_OWNER_GROUPS", "java,nosuchgroup")])
        .expect_exit(1)
        .stderr_contains("invalid value 'nosuchgroup' for 'ISTIO_OUTBOUND_OWNER_GROUPS': no such group in /etc/group");
    apply(
        &["-u", "1337"],
        &[("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "ftp,counter")],
    )
    .expect_exit(1)
    .stderr_contains("'counter' for 'ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE': no such group");
    let many = (1000..1050).map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    apply(&["-u", "1337"], &[("ISTIO_OUTBOUND_OWNER_GROUPS", &many)])
        .expect_exit(1)
        .stderr_contains("50 owner groups make one iptables rule of 254 words");
    // check says so too (exit 2, an error), instead of listing the rules as drift.
    golden_accounts(Meshcap::new())
        .args(["check", "-u", "nosuchuser"])
        .netns(&ns)
        .run()
        .expect_exit(2)
        .stderr_contains("invalid value 'nosuchuser' for '--proxy-uid': no such user in /etc/passwd");
    let saved = crate::support::netfilter::save(&ns, Variant::Nft, "iptables");
    assert!(!saved.contains("ISTIO"), "something was applied:\n{saved}");
    // 49 groups load.
    let most = (1000..1049).map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    apply(&["-u", "1337", "-i", "*"], &[("ISTIO_OUTBOUND_OWNER_GROUPS", &most)]).success();
}

#[test]
fn render_checks_names_against_the_given_accounts() {
    let accounts = Accounts::new(&["counter"], &["meta"]);
    let (p, g) = (
        accounts.passwd().display().to_string(),
        accounts.group().display().to_string(),
    );
    let render = |extra: &[&str]| {
        Meshcap::new()
            .args(["render", "--passwd", &p, "--group", &g])
            .args(extra)
            .run()
    };
    render(&["-u", "counter", "-g", "meta", "--native-nftables"])
        .success()
        .stdout_contains("skuid \"counter\"")
        .stdout_contains("skgid \"meta\"");
    render(&["-u", "nobody-here", "-g", "meta"])
        .expect_exit(1)
        .stderr_is(&format!(
            "meshcap: invalid value 'nobody-here' for '--proxy-uid': no such user in {p}\n"
        ));
    // Without --passwd/--group: this host's files, and only a warning.
    Meshcap::new()
        .args(["render", "-u", "meshcap-no-such-user", "-g", "0"])
        .run()
        .success()
        .stdout_contains("--uid-owner meshcap-no-such-user")
        .stderr_contains("no such user in /etc/passwd: loading these rules fails where the name is unknown");
    // `+` (every interface) has no nft spelling.
    render(&["-c", "+", "--native-nftables"])
        .expect_exit(1)
        .stderr_contains(
            "invalid value '+' for '--istio-exclude-interfaces': '+' (every interface) cannot be written in nftables",
        );
}
