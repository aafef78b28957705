//! The meshcap library as the integration tests see it. Every `meshcap::` path of the tests is
//! written in this file and nowhere else: when the library's modules move, only these lines
//! change. Besides the re-exports, the plan (or configuration) a command line builds, planned
//! in-process the way the binary plans it.

use std::path::Path;

use clap::Parser;

pub use meshcap::cli::CaptureFlags;
pub use meshcap::config::Config;
pub use meshcap::iptables::parse::{Strictness, parse_save};
pub use meshcap::iptables::render::restore_payload;
pub use meshcap::json;
pub use meshcap::model::{Backend, Rule, Ruleset, TableName};
pub use meshcap::nft::ir::{NftOp, Transaction};
pub use meshcap::nft::lower::{apply_transaction, cleanup_transaction, transaction as nft_transaction};
pub use meshcap::nft::netlink::from_ir::lower as netlink_lower;
pub use meshcap::nft::netlink::socket::Error as NetlinkError;
pub use meshcap::nft::netlink::{Ruleset as NetlinkRuleset, Socket};
pub use meshcap::plan::Plan;
pub use meshcap::sys::host::Ids as HostIds;
pub use meshcap::sys::netns::Netns as TargetNetns;
pub use meshcap::trace::{self, Action, Effect, Ids, Netfilter, Packet, Trace};
pub use meshcap::values::{Cidr, Family, Owner};

use meshcap::cli::{Cli, Command};
use meshcap::config::{HostFiles, Ipv6Setting};
use meshcap::logging::LogSettings;
use meshcap::sys::host::Env;

/// The plan `meshcap render ARGS` prints (ARGS after `render`, empty environment); panics when
/// the arguments are refused.
#[track_caller]
pub fn plan<A: AsRef<str>>(args: &[A]) -> Plan {
    let no_env: [(&str, &str); 0] = [];
    render_plan(args, &no_env, Path::new("/")).unwrap_or_else(|e| panic!("{e}"))
}

/// The plan `meshcap render ARGS` prints with the environment `env`, run in `dir` (a relative
/// `--resolv-conf` is read there). The error is clap's or the configuration's, as text.
pub fn render_plan<A, K, V>(args: &[A], env: &[(K, V)], dir: &Path) -> Result<Plan, String>
where
    A: AsRef<str>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let argv = ["meshcap", "render"].into_iter().chain(args.iter().map(AsRef::as_ref));
    let cli = Cli::try_parse_from(argv).map_err(|e| format!("meshcap render: {e}"))?;
    let Some(Command::Render(mut render)) = cli.command else {
        return Err("not a render command line".into());
    };
    if !render.resolv_conf.starts_with('/') {
        render.resolv_conf = dir.join(&render.resolv_conf).display().to_string();
    }
    let env = Env::from_pairs(env.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
    meshcap::plan::for_render(&render, &env)
        .map(|(_, plan)| plan)
        .map_err(|e| e.to_string())
}

/// The plan for capture flags set field by field (the property tests generate them so), with
/// IPv6 on or off, DNS servers from `resolv_conf` and the environment `env`.
pub fn flags_plan(
    flags: &CaptureFlags,
    ipv6: bool,
    resolv_conf: &str,
    env: &[(String, String)],
) -> Result<Plan, String> {
    let env = Env::from_pairs(env.iter().cloned());
    let ipv6 = if ipv6 { "true" } else { "false" };
    meshcap::plan::for_flags(flags, Some(ipv6), resolv_conf, &env)
        .map(|(_, plan)| plan)
        .map_err(|e| e.to_string())
}

/// `meshcap ARGS` (an istio-iptables command line) parsed with meshcap's own parser, its log
/// flags and capture flags validated as the apply command does, IPv6 off, no host files read.
#[track_caller]
pub fn apply_config(args: &[&str]) -> Config {
    let cli = Cli::try_parse_from(std::iter::once("meshcap").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("meshcap cannot parse {args:?}:\n{e}"));
    LogSettings::from_flags(&cli.log).unwrap_or_else(|e| panic!("log flags of {args:?}: {e}"));
    let Some(Command::IstioIptables(apply)) = &cli.command else {
        panic!("{args:?} must select the istio-iptables command, got {:?}", cli.command);
    };
    let env = Env::from_pairs::<&str, &str>([]);
    Config::from_flags(
        &apply.capture,
        &env,
        &HostFiles::default(),
        Ipv6Setting::Explicit(false),
    )
    .unwrap_or_else(|e| panic!("invalid configuration {args:?}: {e}"))
}

pub use meshcap::drift::nft::compare as nft_compare;
pub use meshcap::nft::ir::{NftState, planned as nft_planned};
pub use meshcap::nft::netlink::to_ir::decode as nft_decode;
pub use meshcap::nft::netlink::{Ruleset as NftRuleset, Socket as NftSocket};
