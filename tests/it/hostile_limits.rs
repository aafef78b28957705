//! Bounded work: a configuration whose lists multiply past `MESHCAP_MAX_RULES` (20,000 rules
//! by default) is refused before any rule is built, by every command that plans (render, its
//! JSON, trace, check, apply, audit), with one line naming the flags and the numbers; nothing
//! is rendered and nothing is applied. The variable raises or lowers the limit; a bad value is
//! refused naming it.

use crate::support::cmd::Meshcap;
use crate::support::netfilter::{Variant as V, add_foreign, nft_ruleset, save};
use crate::support::netns::{Netns, needs_netns};

/// `n` interface names.
fn ifaces(n: usize) -> String {
    (0..n).map(|i| format!("k{i}")).collect::<Vec<_>>().join(",")
}

/// `n` distinct IPv4 /24 prefixes.
fn cidrs(n: usize) -> String {
    (0..n)
        .map(|i| format!("10.{}.{}.0/24", i >> 8 & 255, i & 255))
        .collect::<Vec<_>>()
        .join(",")
}

/// `-k` × `-i` of 2,000 × 2,000: 4 million rules (the 38 KB of annotations).
fn explosion() -> Vec<String> {
    vec!["-k".into(), ifaces(2000), "-i".into(), cidrs(2000)]
}

const EXPLOSION: &str = "-k × -i would plan 4,000,000 rules (4,004,012 in all for iptables: IPv4 4,004,012, IPv6 0)";
const LIMIT: &str = "the limit is 20,000 (set MESHCAP_MAX_RULES to raise it); nothing was done";

/// Asserts a refusal: exit `code`, one `meshcap:` line holding every `want`, no stdout.
fn refused(m: Meshcap, code: i32, want: &[&str]) {
    let r = m.run();
    r.expect_exit(code).stdout_is("");
    for w in want {
        r.stderr_contains(w);
    }
    let lines: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("meshcap: ")).collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
}

#[test]
fn every_planning_command_refuses_the_explosion_naming_the_flags() {
    let k_i = explosion();
    refused(Meshcap::new().arg("render").args(&k_i), 1, &[EXPLOSION, LIMIT]);
    refused(
        Meshcap::new().args(["render", "--format", "json"]).args(&k_i),
        1,
        &[EXPLOSION, LIMIT],
    );
    refused(
        Meshcap::new().args(["render", "--native-nftables"]).args(&k_i),
        1,
        &["-k × -i would plan 4,000,000 rules", "for nftables", LIMIT],
    );
    refused(
        Meshcap::new()
            .arg("trace")
            .args(&k_i)
            .arg("out tcp 10.0.0.5:3333 -> 10.0.0.6:80 uid=0 gid=0 oif=eth0"),
        1,
        &[EXPLOSION, LIMIT],
    );
    // A dry run plans too (and touches nothing anyway); check exits 2 on every error.
    refused(
        Meshcap::new().args(["istio-iptables", "--dry-run"]).args(&k_i),
        1,
        &[EXPLOSION, LIMIT],
    );
    // Refused before the namespace is opened: a missing one is never looked at.
    refused(
        Meshcap::new()
            .args(["istio-iptables", "--network-namespace", "/nonexistent/netns"])
            .args(&k_i),
        1,
        &[EXPLOSION, LIMIT],
    );
    let dump = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
    refused(
        Meshcap::new()
            .args(["check", "--from-save", "/dev/stdin", "--family", "v4"])
            .args(&k_i)
            .stdin(dump),
        2,
        &[EXPLOSION, LIMIT],
    );
}

#[test]
fn owner_ids_count_in_every_step_they_write() {
    // 65,000 ids is the example; 2,000 with TPROXY, DNS and IPv6 already passes the
    // limit: 24,000 rules for -u, as many for -g (the UID list by default).
    let uids = (0..2000).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    refused(
        Meshcap::new().args([
            "render",
            "-u",
            &uids,
            "-m",
            "TPROXY",
            "--redirect-dns",
            "--capture-all-dns",
            "--ipv6",
        ]),
        1,
        &["-u would plan 24,000 rules (48,0", "IPv4 24,0", "IPv6 24,0", LIMIT],
    );
}

#[test]
fn the_variable_raises_and_lowers_the_limit() {
    // 30 × 1,000: 30,000 + 1,030 rules, over the default.
    let k_i = ["-k".to_string(), ifaces(30), "-i".into(), cidrs(1000)];
    refused(
        Meshcap::new().args(["render", "--family", "v4"]).args(&k_i),
        1,
        &["-k × -i would plan 30,000 rules (31,0", LIMIT],
    );
    let raised = Meshcap::new()
        .args(["render", "--family", "v4"])
        .args(&k_i)
        .env("MESHCAP_MAX_RULES", "40000")
        .run();
    raised.success();
    let rules = raised
        .stdout
        .lines()
        .filter(|l| l.starts_with("-A ") || l.starts_with("-I "))
        .count();
    assert!((31_000..31_100).contains(&rules), "{rules} rules");
    // Lowered: even the default configuration is refused; the flags with most rules are named.
    refused(
        Meshcap::new().arg("render").env("MESHCAP_MAX_RULES", "10"),
        1,
        &["-u would plan ", "the limit is 10 (set MESHCAP_MAX_RULES"],
    );
    Meshcap::new()
        .arg("render")
        .env("MESHCAP_MAX_RULES", "100")
        .run()
        .success();
    for bad in ["0", "abc", "-5", "1e6", "20,000", ""] {
        refused(
            Meshcap::new().arg("render").env("MESHCAP_MAX_RULES", bad),
            1,
            &[&format!("invalid value '{bad}' for 'MESHCAP_MAX_RULES'")],
        );
    }
}

#[test]
fn audit_reports_the_limit_for_the_pod() {
    let k = ifaces(300);
    let i = cidrs(300);
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "big", "namespace": "default"},
        "spec": {"initContainers": [{
            "name": "istio-init",
            "args": ["istio-iptables", "-p", "15001", "-k", k, "-i", i],
        }], "containers": [{"name": "app"}]},
    });
    let r = Meshcap::new().args(["audit", "-"]).stdin(pod.to_string()).run();
    r.expect_exit(1)
        .stdout_contains("FAIL meshcap: -k × -i would plan 90,000 rules")
        .stdout_contains("the limit is 20,000");
    // Raised in the container's own environment, the pod passes.
    let mut pod = pod;
    pod["spec"]["initContainers"][0]["env"] = serde_json::json!([{"name": "MESHCAP_MAX_RULES", "value": "200000"}]);
    Meshcap::new()
        .args(["audit", "-"])
        .stdin(pod.to_string())
        .run()
        .success();
}

/// Apply over the limit, both backends, in a namespace holding foreign rules: refused, and the
/// namespace is exactly as before (no meshcap chain, no nft table, no route).
#[test]
fn apply_over_the_limit_leaves_the_namespace_untouched() {
    needs_netns!();
    let ns = Netns::ipv4("limits");
    add_foreign(&ns, V::Nft);
    let before = (save(&ns, V::Nft, "iptables"), nft_ruleset(&ns));
    let k_i = explosion();
    for backend in [&[][..], &["--native-nftables"][..]] {
        refused(
            Meshcap::new()
                .arg("istio-iptables")
                .args(backend)
                .args(["-m", "TPROXY", "-b", "*"])
                .args(&k_i)
                .netns(&ns),
            1,
            &["-k × -i would plan 4,000,000 rules", LIMIT],
        );
        assert_eq!((save(&ns, V::Nft, "iptables"), nft_ruleset(&ns)), before);
        let rules = String::from_utf8_lossy(&ns.run("ip", &["rule"]).stdout).into_owned();
        assert!(!rules.contains("lookup 133"), "{rules}");
    }
}

/// Without an IPv6 setting apply counts IPv4 first (before opening anything), then the full
/// plan once the namespace's addresses say IPv6 is on: an IPv6 pod over the limit is refused
/// with nothing applied, while the same flags fit an IPv4 pod.
#[test]
fn apply_counts_ipv6_once_it_is_detected() {
    needs_netns!();
    let flags = ["istio-iptables", "-p", "15001", "-z", "15006", "-b", "*", "-u", "1337"];
    let v6 = Netns::ipv6("limits6");
    let before = (save(&v6, V::Nft, "ip6tables"), nft_ruleset(&v6));
    refused(
        Meshcap::new().args(flags).env("MESHCAP_MAX_RULES", "20").netns(&v6),
        1,
        &["(28 in all for iptables: IPv4 14, IPv6 14); the limit is 20 "],
    );
    assert_eq!((save(&v6, V::Nft, "ip6tables"), nft_ruleset(&v6)), before);
    let v4 = Netns::ipv4("limits4");
    Meshcap::new()
        .args(flags)
        .env("MESHCAP_MAX_RULES", "20")
        .netns(&v4)
        .run()
        .success();
    assert!(save(&v4, V::Nft, "iptables").contains("-A ISTIO_OUTPUT"));
}
