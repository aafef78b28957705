//! The tracer against the kernel: every case of every real-traffic scenario (see `traffic`) is
//! also asked of `meshcap trace` with the scenario's flags, and the tracer's verdict must equal
//! what the kernel did with the real packet (redirected to a port, tproxied to a port, passed
//! through, dropped). For the native nftables installer the trace runs with
//! `--native-nftables`, so it walks the nftables ruleset.

use std::net::{IpAddr, SocketAddr};

use crate::lab::{Backend, From, Installer, Outcome, Ran, Scenario};
use crate::support::{Meshcap, TempDir};

/// The tracer's verdict (`action`, `port`) the kernel's outcome corresponds to.
fn kernel_verdict(outcome: &Outcome) -> Option<(&'static str, Option<u16>)> {
    match outcome {
        Outcome::Redirected { port, .. } => Some(("redirect", Some(*port))),
        Outcome::Tproxied { port, .. } => Some(("tproxy", Some(*port))),
        // Delivered (a closed port answers with a reset: netfilter let it through).
        Outcome::Direct | Outcome::Refused => Some(("accept", None)),
        Outcome::Dropped => Some(("drop", None)),
        Outcome::Other(_) => None,
    }
}

/// The packet as `meshcap trace` takes it. The lab describes it with the client address the
/// server saw; when nothing answered it has no source port, and a fixed one stands in (no rule
/// of the capture looks at the client's port).
fn packet(ran: &Ran) -> String {
    let Some((head, rest)) = ran.packet.split_once(" -> ") else {
        return ran.packet.clone();
    };
    let mut words: Vec<String> = head.split(' ').map(str::to_string).collect();
    let src = words.last().cloned().unwrap_or_default();
    let known = src.parse::<SocketAddr>().is_ok_and(|s| s.port() != 0);
    if !known {
        let ip: IpAddr = match src.parse::<SocketAddr>() {
            Ok(s) => s.ip(),
            Err(_) => stand_in_source(&ran.case),
        };
        *words.last_mut().expect("DIR PROTO SRC") = SocketAddr::new(ip, 40000).to_string();
    }
    format!("{} -> {rest}", words.join(" "))
}

/// The source address the kernel would pick, for a probe that got no answer.
fn stand_in_source(case: &crate::lab::Case) -> IpAddr {
    use crate::lab::{PEER4, PEER6, POD4, POD6, VM4, VM6};
    let v4 = case.dst.is_ipv4();
    match case.from {
        _ if case.dst.ip().is_loopback() => case.dst.ip(),
        From::Peer if v4 => PEER4.into(),
        From::Peer => PEER6.into(),
        From::Vm if v4 => VM4.into(),
        From::Vm => VM6.into(),
        _ if v4 => POD4.into(),
        _ => POD6.into(),
    }
}

/// Asks the tracer about every case of `scenario` as run with `installer`; panics listing
/// every disagreement with the kernel. Returns the number of cases compared.
pub fn agree(scenario: &Scenario, installer: Installer, ran: &[Ran]) -> usize {
    let dir = TempDir::new("trace");
    let resolv = dir.write("resolv.conf", &scenario.resolv_conf);
    let mut args: Vec<String> = vec!["trace".into(), "--format".into(), "json".into()];
    args.extend(scenario.flags.iter().cloned());
    args.push(format!("--ipv6={}", scenario.ipv6_enabled()));
    args.push("--resolv-conf".into());
    args.push(resolv.display().to_string());
    if installer.backend() == Backend::Nftables {
        args.push("--native-nftables".into());
    }
    let mut disagreements = Vec::new();
    let mut compared = 0;
    for r in ran {
        let Some(want) = kernel_verdict(&r.outcome) else {
            continue;
        };
        let pkt = packet(r);
        let trace = Meshcap::new().args(&args).arg(&pkt).run();
        let got = serde_json::from_str::<serde_json::Value>(&trace.stdout).ok().map(|v| {
            let action = v["verdict"]["action"].as_str().unwrap_or("?").to_string();
            let port = v["verdict"]["port"].as_u64().map(|p| p as u16);
            (action, port)
        });
        compared += 1;
        if got.as_ref().map(|(a, p)| (a.as_str(), *p)) != Some(want) {
            let text_args = args.iter().filter(|a| *a != "--format" && *a != "json");
            let text = Meshcap::new().args(text_args).arg(&pkt).run();
            disagreements.push(format!(
                "{:?} {}: kernel {} ({}), tracer {:?}\n  packet: {pkt}\n{}{}",
                r.case.from, r.case.dst, r.outcome, want.0, got, text.stdout, text.stderr
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} [{installer}]: the tracer disagrees with the kernel on {} of {compared} cases\nflags: {:?}\n{}",
        scenario.name,
        disagreements.len(),
        scenario.flags,
        disagreements.join("\n")
    );
    compared
}
