//! The command stream Istio's dry run records (istio-compat §4.6), which meshcap writes to
//! `DRY_RUN_FILE_PATH`: the commands `istio-iptables` runs against a clean namespace, with the
//! plain binary names and no lock flags. It is Istio's stream, for tools that compare it with
//! Istio's files, not meshcap's own commands (those are in the log): meshcap reads the live
//! state only when a table exists, logs the final state only at debug level, and cleans up with
//! one restore per family built from what is live instead of Istio's `-D`/`-F`/`-X` commands.
//!
//! Sequence: `iptables-save`, `ip6tables-save` (state verification, v6 always), then per
//! enabled family the restore payload — or, for a cleanup, the deletes of istio-compat §5.6 — then the
//! final `*-save` of each enabled family.
//!
//! Istio's nftables mode records nothing (it ignores `--dry-run`); meshcap's stream there is the
//! one command Istio runs, `nft -f -` with Istio's transaction (istio-compat §8.4, the text `render`
//! prints), recorded as its lines.

use crate::error::{Error, Result};
use crate::iptables::render::{restore_payload, rule_args};
use crate::model::{ChainName, TableName, Target};
use crate::nft::lower::{cleanup_transaction, transaction};
use crate::plan::Plan;
use crate::sys::exec::Cmd;
use crate::values::Family;

use crate::live::binaries::Binaries;

/// The iptables dry run's stream as commands; render it with [`crate::sys::exec::recorded_stream`].
pub(crate) fn iptables(plan: &Plan, cleanup: bool) -> Vec<Cmd> {
    let save = |family: Family| Cmd::new(Binaries::plain(family).save(), [""; 0]);
    let mut cmds = vec![save(Family::V4), save(Family::V6)];
    for family in plan.families() {
        if cleanup {
            cmds.extend(cleanup_commands(plan, family));
        } else {
            let restore = Binaries::plain(family).restore();
            cmds.push(Cmd::new(restore, [""; 0]).stdin(restore_payload(&plan.ruleset(family))));
        }
    }
    cmds.extend(plan.families().into_iter().map(save));
    cmds
}

/// The nftables dry run's stream: Istio's transaction as one `nft -f -`.
pub(crate) fn nft(plan: &Plan, cleanup: bool) -> Result<Vec<Cmd>> {
    let tx = if cleanup {
        cleanup_transaction()
    } else {
        transaction(plan).map_err(|e| Error::inconsistent("nftables", e))?
    };
    Ok(vec![super::nft::transaction_cmd(&tx, None)])
}

/// Istio's cleanup of one family (istio-compat §5.6), derived from the planned operations in generation
/// order: walking them backwards, delete every rule of a built-in chain and every jump between
/// `ISTIO_*` chains; then, walking backwards again, flush and delete each `ISTIO_*` chain when
/// first seen.
pub(crate) fn cleanup_commands(plan: &Plan, family: Family) -> Vec<Cmd> {
    let program = Binaries::plain(family).base;
    let ops: Vec<(TableName, &crate::model::Op)> = plan
        .ops
        .iter()
        .filter(|s| s.scope.includes(family))
        .map(|s| (s.table, &s.op))
        .rev()
        .collect();
    let mut cmds = Vec::new();
    for (table, op) in &ops {
        let istio_chain = matches!(op.chain, ChainName::Istio(_));
        let istio_target = matches!(op.rule.target, Target::Jump(_));
        if istio_chain && !istio_target {
            continue; // removed by the flush
        }
        let mut args = vec![
            "-t".to_string(),
            table.as_str().to_string(),
            "-D".into(),
            op.chain.as_str().into(),
        ];
        args.extend(rule_args(&op.rule));
        cmds.push(Cmd::new(program.clone(), args));
    }
    let mut seen: Vec<(TableName, ChainName)> = Vec::new();
    for (table, op) in &ops {
        if !matches!(op.chain, ChainName::Istio(_)) || seen.contains(&(*table, op.chain)) {
            continue;
        }
        seen.push((*table, op.chain));
        for verb in ["-F", "-X"] {
            cmds.push(Cmd::new(
                program.clone(),
                ["-t", table.as_str(), verb, op.chain.as_str()],
            ));
        }
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::CaptureFlags;
    use crate::config::{Config, HostFiles, Ipv6Setting};
    use crate::sys::exec::recorded_stream;
    use crate::sys::host::Env;

    fn plan(flags: CaptureFlags, ipv6: bool) -> Plan {
        plan_with(flags, ipv6, "/nonexistent")
    }

    fn plan_with(flags: CaptureFlags, ipv6: bool, resolv_conf: &str) -> Plan {
        let files = HostFiles {
            passwd: "/nonexistent".into(),
            resolv_conf: resolv_conf.into(),
        };
        let config = Config::from_flags(&flags, &Env::default(), &files, Ipv6Setting::Explicit(ipv6)).unwrap();
        crate::plan::build_for(&config, ipv6).unwrap()
    }

    /// istio-compat §5.6's example: the cleanup of the `empty` golden configuration (all defaults).
    #[test]
    fn cleanup_of_the_defaults_is_the_spec_example() {
        let cmds = cleanup_commands(&plan(CaptureFlags::default(), false), Family::V4);
        let got: Vec<String> = cmds.iter().map(Cmd::line).collect();
        let want = [
            "-t nat -D ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
            "-t nat -D ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
            "-t nat -D OUTPUT -j ISTIO_OUTPUT",
            "-t nat -F ISTIO_OUTPUT",
            "-t nat -X ISTIO_OUTPUT",
            "-t nat -F ISTIO_IN_REDIRECT",
            "-t nat -X ISTIO_IN_REDIRECT",
            "-t nat -F ISTIO_REDIRECT",
            "-t nat -X ISTIO_REDIRECT",
            "-t nat -F ISTIO_INBOUND",
            "-t nat -X ISTIO_INBOUND",
        ]
        .map(|l| format!("iptables {l}"));
        assert_eq!(got, want);
        let v6: Vec<String> = cleanup_commands(&plan(CaptureFlags::default(), true), Family::V6)
            .iter()
            .map(Cmd::line)
            .collect();
        assert_eq!(v6[2], "ip6tables -t nat -D OUTPUT -j ISTIO_OUTPUT");
        assert!(v6[0].contains("! -d ::1/128"), "{}", v6[0]);
    }

    /// istio-compat §5.6's second example: the v4 cleanup of the `tproxy` golden configuration, whose
    /// deletes and flushes interleave the tables in generation order.
    #[test]
    fn cleanup_of_tproxy_interleaves_tables_as_the_spec_says() {
        let resolv = std::env::temp_dir().join(format!("meshcap-stream-resolv-{}", std::process::id()));
        std::fs::write(&resolv, "nameserver 127.0.0.53\n").unwrap();
        let flags = CaptureFlags {
            interception_mode: Some("TPROXY".into()),
            inbound_ports: Some("*".into()),
            service_exclude_cidr: Some("1.1.0.0/16".into()),
            service_cidr: Some("9.9.0.0/16".into()),
            redirect_dns: Some("true".into()),
            exclude_interfaces: Some("not-istio-nic".into()),
            ..Default::default()
        };
        let p = plan_with(flags, true, resolv.to_str().unwrap());
        std::fs::remove_file(&resolv).unwrap();
        let got: Vec<String> = cleanup_commands(&p, Family::V4)
            .iter()
            .map(|c| c.line().strip_prefix("iptables ").unwrap().to_string())
            .collect();
        let want = [
            "-t mangle -D OUTPUT -p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark",
            "-t mangle -D OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --gid-owner 1337 -j MARK --set-mark 1338",
            "-t mangle -D OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338",
            "-t mangle -D OUTPUT -p tcp -o lo -m mark --mark 1337 -j RETURN",
            "-t mangle -D PREROUTING -p tcp -m mark --mark 1337 -j CONNMARK --save-mark",
            "-t nat -D ISTIO_OUTPUT -d 9.9.0.0/16 -j ISTIO_REDIRECT",
            "-t raw -D PREROUTING -j ISTIO_INBOUND",
            "-t nat -D ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS",
            "-t raw -D OUTPUT -j ISTIO_OUTPUT_DNS",
            "-t nat -D ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
            "-t nat -D ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
            "-t nat -D OUTPUT -j ISTIO_OUTPUT",
            "-t mangle -D ISTIO_INBOUND -p tcp -j ISTIO_TPROXY",
            "-t mangle -D ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
            "-t mangle -D PREROUTING -p tcp -j ISTIO_INBOUND",
            "-t mangle -D OUTPUT -o not-istio-nic -j RETURN",
            "-t mangle -D PREROUTING -i not-istio-nic -j RETURN",
            "-t nat -D OUTPUT -o not-istio-nic -j RETURN",
            "-t nat -D PREROUTING -i not-istio-nic -j RETURN",
        ];
        assert_eq!(got[..want.len()], want);
        let flushes: Vec<&str> = got[want.len()..]
            .chunks(2)
            .map(|pair| {
                assert_eq!(pair[1], pair[0].replace(" -F ", " -X "));
                pair[0].as_str()
            })
            .collect();
        let want_flushes = [
            "-t mangle -F ISTIO_INBOUND",
            "-t nat -F ISTIO_OUTPUT",
            "-t raw -F ISTIO_INBOUND",
            "-t raw -F ISTIO_OUTPUT_DNS",
            "-t nat -F ISTIO_OUTPUT_DNS",
            "-t mangle -F ISTIO_TPROXY",
            "-t mangle -F ISTIO_DIVERT",
            "-t nat -F ISTIO_IN_REDIRECT",
            "-t nat -F ISTIO_REDIRECT",
            "-t nat -F ISTIO_INBOUND",
        ];
        assert_eq!(flushes, want_flushes);
    }

    #[test]
    fn nft_stream_is_istios_transaction() {
        let p = plan(CaptureFlags::default(), false);
        let tx = transaction(&p).unwrap().to_string();
        assert!(tx.starts_with("add table inet istio-proxy-nat\n"), "{tx}");
        assert_eq!(recorded_stream(&nft(&p, false).unwrap()), tx);
        let cleanup = recorded_stream(&nft(&p, true).unwrap());
        assert_eq!(cleanup.lines().count(), 6);
        assert!(cleanup.ends_with("add table inet istio-proxy-raw\ndelete table inet istio-proxy-raw\n"));
    }

    #[test]
    fn apply_stream_is_saves_payloads_saves() {
        let p = plan(CaptureFlags::default(), false);
        let text = recorded_stream(&iptables(&p, false));
        let payload = restore_payload(&p.ruleset(Family::V4));
        assert_eq!(text, format!("iptables-save\nip6tables-save\n{payload}iptables-save\n"));
        let p = plan(CaptureFlags::default(), true);
        let text = recorded_stream(&iptables(&p, false));
        let v6 = restore_payload(&p.ruleset(Family::V6));
        assert_eq!(
            text,
            format!("iptables-save\nip6tables-save\n{payload}{v6}iptables-save\nip6tables-save\n")
        );
        let text = recorded_stream(&iptables(&p, true));
        assert!(text.starts_with("iptables-save\nip6tables-save\niptables -t nat -D ISTIO_OUTPUT "));
        assert!(text.ends_with("ip6tables -t nat -X ISTIO_INBOUND\niptables-save\nip6tables-save\n"));
    }
}
