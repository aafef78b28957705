//! `--compact` changes no verdict: for configurations with long lists (ports, ranges, nested,
//! adjacent and overlapping prefixes of both families, virtual interfaces, TPROXY, DNS), the
//! tracer walks 10,000 random packets per configuration through Istio's rules and through the
//! compact ones, for the iptables view and for the nftables ruleset, and both must end the same
//! way: the same verdict and the same marks, connection marks, conntrack zones and redirects on
//! the way. (The real-traffic suite runs every scenario with `--compact` as well.)
//!
//! In-process, through the library; no namespace needed.

use std::path::Path;

use crate::support::TempDir;
use crate::support::api::{Cidr, Effect, Family, Ids, Netfilter, Packet, Plan, Trace, render_plan, trace};

/// A small deterministic generator (xorshift), so a failure names a reproducible packet.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

struct Case {
    name: &'static str,
    flags: Vec<(&'static str, String)>,
    ipv6: bool,
    /// Whether compaction finds something to merge (TPROXY's per-port inbound rules alternate
    /// between two targets, so a port list there stays as it is).
    merges: bool,
}

fn case(name: &'static str, ipv6: bool, flags: &[(&'static str, &str)]) -> Case {
    Case {
        name,
        flags: flags.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        ipv6,
        merges: true,
    }
}

/// Many /24 and /16 prefixes of both families, some nested and some adjacent.
fn many_cidrs() -> String {
    let mut v: Vec<String> = (0..150)
        .map(|i| format!("10.{}.{}.0/24", i / 7, (i * 37) % 256))
        .collect();
    v.extend((0..40).map(|i| format!("172.{}.0.0/16", 16 + i % 16)));
    v.extend((0..30).map(|i| format!("2001:db8:{:x}::/48", i * 3)));
    v.extend(["10.0.0.0/16".into(), "10.0.1.0/24".into(), "fd00:1::/64".into()]);
    v.join(",")
}

fn cases() -> Vec<Case> {
    let many_ports: String = (0..45)
        .map(|i| {
            if i % 4 == 0 {
                format!("{}:{}", 20000 + i * 10, 20000 + i * 10 + 5)
            } else {
                (30000 + i * 3).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let many = many_cidrs();
    vec![
        case(
            "sidecar-lists",
            true,
            &[
                ("-b", "*"),
                ("-d", "15090,15021,15020,8000:8100,22,23,24,9000,9001"),
                ("-o", "53,1000:2000,2001,3000:3005,3003,3007"),
                ("-q", "443,8443,1:3,7000:7100"),
                (
                    "-x",
                    "10.0.0.0/8,10.1.2.3/16,192.168.0.0/16,192.168.1.0/24,172.16.0.0/12,203.0.113.0/25,203.0.113.128/25,2001:db8::/32,2001:db8:1::/48,fd00:1::/64",
                ),
                ("-i", "*"),
            ],
        ),
        case(
            "include-lists-virtual-interfaces",
            true,
            &[
                ("-b", "80,443,8080,9000:9010"),
                (
                    "-i",
                    "10.0.0.0/8,192.168.1.0/24,198.51.100.0/24,2001:db8::/32,fd00::/64",
                ),
                ("-x", "10.9.0.0/16,fd00::5/128"),
                ("-k", "eth1,eth2"),
            ],
        ),
        Case {
            merges: false,
            ..case(
                "tproxy-port-list",
                true,
                &[
                    ("-m", "TPROXY"),
                    ("-b", "80,443,8080,9000:9010,15020"),
                    ("-i", "*"),
                    ("-c", "eth2"),
                ],
            )
        },
        case(
            "tproxy-all-ports",
            false,
            &[
                ("-m", "TPROXY"),
                ("-b", "*"),
                ("-d", &many_ports),
                ("-i", "*"),
                ("--drop-invalid", "true"),
            ],
        ),
        case(
            "dns-servers",
            true,
            &[
                ("-b", "*"),
                ("-i", "*"),
                ("--redirect-dns", "true"),
                ("-o", "5353,8053,9053"),
                ("-u", "1337,0"),
                ("-g", "1337"),
            ],
        ),
        case(
            "dns-all-owner-groups",
            false,
            &[
                ("-b", "*"),
                ("-i", "*"),
                ("--redirect-dns", "true"),
                ("--capture-all-dns", "true"),
                ("-q", "80,81,82,83"),
            ],
        ),
        case(
            "many-ports",
            true,
            &[
                ("-b", "*"),
                ("-d", &many_ports),
                ("-o", &many_ports),
                ("-q", "1000:1010,2000"),
            ],
        ),
        case(
            "many-cidrs",
            true,
            &[("-b", "*"), ("-d", "15090,15021,15020"), ("-i", "*"), ("-x", &many)],
        ),
    ]
}

/// The plan of `meshcap render FLAGS --compact=C --native-nftables=N --ipv6=… --resolv-conf R`.
fn plan(c: &Case, compact: bool, nft: bool, resolv: &Path) -> Plan {
    let mut args: Vec<String> = Vec::new();
    for (k, v) in &c.flags {
        if k.starts_with("--") {
            args.push(format!("{k}={v}"));
        } else {
            args.extend([k.to_string(), v.clone()]);
        }
    }
    args.extend([
        format!("--compact={compact}"),
        format!("--native-nftables={nft}"),
        format!("--ipv6={}", c.ipv6),
        "--resolv-conf".into(),
        resolv.display().to_string(),
    ]);
    let env = [("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888")];
    render_plan(&args, &env, Path::new("/")).unwrap_or_else(|e| panic!("{}: {e}", c.name))
}

/// The values packets are drawn from, for one configuration and family: addresses around
/// every listed prefix (first, last, middle, just outside), the DNS servers, the pod's usual
/// peers; ports on both sides of every listed port or range, and Istio's own.
struct Pools {
    family: Family,
    fixed: Vec<String>,
    dns: Vec<String>,
    listed: Vec<String>,
    base_ports: Vec<u16>,
    listed_ports: Vec<u16>,
}

impl Pools {
    fn new(c: &Case, family: Family) -> Pools {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (fixed, dns) = match family {
            Family::V4 => (
                strings(&["198.51.100.2", "203.0.113.7", "127.0.0.1", "127.0.0.6", "8.8.8.8"]),
                strings(&["10.96.0.10", "10.96.0.11"]),
            ),
            Family::V6 => (
                strings(&["fd00::2", "fd00:1:2::7", "::1", "::6", "2606:4700::1"]),
                strings(&["fd00::10"]),
            ),
        };
        let mut listed = Vec::new();
        let mut listed_ports = Vec::new();
        for (k, v) in &c.flags {
            for item in v.split(',').filter(|s| !s.is_empty() && *s != "*") {
                match *k {
                    "-x" | "-i" => listed.extend(around(item, family)),
                    "-b" | "-d" | "-o" | "-q" => {
                        let (lo, hi) = match item.split_once(':') {
                            Some((a, b)) => (a.parse::<u16>().unwrap(), b.parse::<u16>().unwrap()),
                            None => (item.parse().unwrap(), item.parse().unwrap()),
                        };
                        listed_ports.extend([
                            lo.saturating_sub(1).max(1),
                            lo,
                            lo / 2 + hi / 2,
                            hi,
                            hi.saturating_add(1),
                        ]);
                    }
                    _ => {}
                }
            }
        }
        Pools {
            family,
            fixed,
            dns,
            listed,
            base_ports: vec![
                80, 443, 8080, 15001, 15006, 15008, 15020, 15021, 15053, 15090, 53, 5000, 40000,
            ],
            listed_ports,
        }
    }

    /// A destination-like address: listed prefixes first, then DNS servers, then the others.
    fn address<'a>(&'a self, rng: &mut Rng) -> &'a str {
        let roll = rng.below(100);
        if roll < 45 && !self.listed.is_empty() {
            rng.pick(&self.listed).as_str()
        } else if roll < 65 {
            rng.pick(&self.dns).as_str()
        } else {
            rng.pick(&self.fixed).as_str()
        }
    }

    fn port(&self, rng: &mut Rng) -> u16 {
        let roll = rng.below(100);
        if roll < 45 && !self.listed_ports.is_empty() {
            *rng.pick(&self.listed_ports)
        } else if roll < 60 {
            53
        } else {
            *rng.pick(&self.base_ports)
        }
    }
}

/// Addresses at and just around a prefix of `family` (nothing for the other family).
fn around(cidr: &str, family: Family) -> Vec<String> {
    let c = Cidr::parse(cidr).unwrap();
    if c.family() != family {
        return Vec::new();
    }
    let bits = if family == Family::V4 { 32 } else { 128 };
    let host = bits - u32::from(c.prefix_len());
    let first: u128 = match c.network().addr() {
        std::net::IpAddr::V4(a) => u32::from(a).into(),
        std::net::IpAddr::V6(a) => a.into(),
    };
    let size = if host >= 128 { u128::MAX } else { (1u128 << host) - 1 };
    let max = if family == Family::V4 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    [
        first.wrapping_sub(1),
        first,
        first + size / 2,
        first.saturating_add(size),
        first.saturating_add(size).saturating_add(1),
    ]
    .into_iter()
    .filter(|&n| n <= max)
    .map(|n| match family {
        Family::V4 => std::net::Ipv4Addr::from(n as u32).to_string(),
        Family::V6 => std::net::Ipv6Addr::from(n).to_string(),
    })
    .collect()
}

/// One packet in the tracer's grammar; the facts are weighted toward the ones the rules test
/// (new connections, the app's identity, addresses and ports at list boundaries).
fn packet(rng: &mut Rng, pools: &Pools) -> String {
    let ip = |s: &str| match pools.family {
        Family::V4 => s.to_string(),
        Family::V6 => format!("[{s}]"),
    };
    let (pod, six) = match pools.family {
        Family::V4 => ("198.51.100.2", "127.0.0.6"),
        Family::V6 => ("fd00::2", "::6"),
    };
    let proto = *rng.pick(&["tcp", "tcp", "udp"]);
    let (sport, dport) = (pools.port(rng), pools.port(rng));
    let state = *rng.pick(&["new", "new", "new", "new", "new", "established", "related", "invalid"]);
    let mark = *rng.pick(&[0u32, 0, 0, 1337, 1338]);
    let mut extra = format!("mark={mark} state={state}");
    if state == "established" || state == "related" {
        extra.push_str(&format!(" connmark={}", rng.pick(&[0u32, 1337])));
    }
    if rng.below(2) == 0 {
        let any = pools.address(rng);
        let src = *rng.pick(&[pod, pod, pod, six, any]);
        let dst = pools.address(rng);
        let uid = *rng.pick(&[1000u32, 1000, 1000, 1337, 0]);
        let gid = *rng.pick(&[1000u32, 1000, 1337, 888, 5]);
        let oif = *rng.pick(&["eth0", "eth0", "eth0", "lo", "eth1", "eth2", "veth3"]);
        format!(
            "out {proto} {}:{sport} -> {}:{dport} uid={uid} gid={gid} oif={oif} {extra}",
            ip(src),
            ip(dst)
        )
    } else {
        let src = pools.address(rng);
        let any = pools.address(rng);
        let dst = *rng.pick(&[pod, pod, any]);
        let iif = *rng.pick(&["eth0", "eth0", "eth0", "lo", "eth1", "eth2", "veth3"]);
        format!(
            "in {proto} {}:{sport} -> {}:{dport} iif={iif} {extra}",
            ip(src),
            ip(dst)
        )
    }
}

/// What a trace changed besides its verdict, in order.
fn effects(t: &Trace) -> Vec<Effect> {
    t.steps
        .iter()
        .map(|s| s.effect.clone())
        .filter(|e| {
            matches!(
                e,
                Effect::Redirect { .. }
                    | Effect::Tproxy { .. }
                    | Effect::SetMark { .. }
                    | Effect::SaveMark { .. }
                    | Effect::RestoreMark { .. }
                    | Effect::CtZone { .. }
                    | Effect::Loopback
                    | Effect::Accept
                    | Effect::Drop
            )
        })
        .collect()
}

#[test]
fn compact_rules_give_every_packet_the_same_fate() {
    const PACKETS: usize = 10_000;
    let dir = TempDir::new("compact-eq");
    let resolv = dir.write(
        "resolv.conf",
        "nameserver 10.96.0.10\nnameserver 10.96.0.11\nnameserver fd00::10\n",
    );
    let resolv = resolv.as_path();
    let ids = Ids::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for c in cases() {
        for nft in [false, true] {
            let plain = plan(&c, false, nft, resolv);
            let compact = plan(&c, true, nft, resolv);
            let rules = |p: &Plan| {
                p.families()
                    .iter()
                    .map(|&f| p.ruleset(f).tables.iter().map(|t| t.ops.len()).sum::<usize>())
                    .sum::<usize>()
            };
            if c.merges {
                assert!(rules(&compact) < rules(&plain), "{}: --compact merged nothing", c.name);
            } else {
                assert_eq!(rules(&compact), rules(&plain), "{}", c.name);
            }
            let (mut compared, mut both_refused) = (0, 0);
            for family in plain.families() {
                let a_nf = Netfilter::from_plan(&plain, family, nft).unwrap();
                let b_nf = Netfilter::from_plan(&compact, family, nft).unwrap();
                let pools = Pools::new(&c, family);
                for _ in 0..PACKETS / plain.families().len() {
                    let text = packet(&mut rng, &pools);
                    let p = Packet::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                    match (trace::trace(&a_nf, &p, &ids), trace::trace(&b_nf, &p, &ids)) {
                        (Ok(a), Ok(b)) => {
                            assert!(
                                a.verdict == b.verdict && effects(&a) == effects(&b),
                                "{} (nft={nft}): {text}\n--- Istio's rules\n{}--- --compact\n{}",
                                c.name,
                                a.text(),
                                b.text()
                            );
                            compared += 1;
                        }
                        (Err(_), Err(_)) => both_refused += 1,
                        (a, b) => panic!(
                            "{} (nft={nft}): {text}: only one side could be traced\nIstio's: {:?}\ncompact: {:?}",
                            c.name,
                            a.map(|t| t.verdict),
                            b.map(|t| t.verdict)
                        ),
                    }
                }
            }
            // Most random packets carry every fact the rules ask for.
            assert!(
                compared >= PACKETS * 3 / 5,
                "{} (nft={nft}): only {compared} traced, {both_refused} refused by both",
                c.name
            );
        }
    }
}
