//! `meshcap check`: are the live rules what the flags plan? The comparison itself is
//! [`drift::compare`] (order-sensitive inside `ISTIO_*` chains, meshcap's jumps in built-in
//! chains, foreign rules ignored); this module runs it per family over dumps the caller read,
//! and spells the result for people (`+`/`-` lines) and programs (JSON). Exit codes: 0 in sync,
//! 1 drift, 2 error (decided by the caller for errors). [`live`] reads a namespace's state the
//! way apply does ([`crate::live`]), so `check` answers "would apply find drift?".

pub(crate) mod routes;

use serde::Serialize;

use crate::config::{Config, Ipv6Setting};
use crate::drift::nft as nft_drift;
use crate::drift::{self, Drift, DriftKind, report};
use crate::error::{Error, Result};
use crate::iptables::parse::SaveDump;
use crate::live;
use crate::plan::{self, Plan};
use crate::sys::exec::{RealSystem, System};
use crate::sys::host::Ids;
use crate::sys::kernel::{Kernel, LinuxKernel, detect_ipv6};
use crate::sys::netns::{self, Netns};
use crate::values::Family;

/// One family's comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FamilyReport {
    pub(crate) drift: Drift,
    /// `ISTIO_*` chains that exist live but are not planned (empty ones too), as (table, chain).
    pub(crate) stale_chains: Vec<(String, String)>,
    /// The save program whose output was compared, when read live (e.g. `iptables-nft-save`).
    pub(crate) source: Option<String>,
    /// Other iptables variants that hold meshcap's chains too (e.g. `iptables-legacy`).
    pub(crate) also_in: Vec<String>,
}

impl FamilyReport {
    pub(crate) fn in_sync(&self) -> bool {
        self.drift.is_clean() && self.stale_chains.is_empty() && self.also_in.is_empty()
    }

    fn summary(&self) -> String {
        let family = match &self.source {
            Some(src) => format!("{} ({src})", self.drift.family),
            None => self.drift.family.to_string(),
        };
        if self.in_sync() {
            return format!("{family}: in sync");
        }
        let mut s = report::iptables_summary(&family, &self.drift, self.stale_chains.len());
        for other in &self.also_in {
            s.push_str(&format!("; meshcap's chains also exist in the {other} tables"));
        }
        s
    }
}

/// The comparison of every checked family, or of the nftables ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Report {
    pub(crate) families: Vec<FamilyReport>,
    /// With `--native-nftables`: meshcap's `inet` tables.
    pub(crate) nft: Option<nft_drift::NftDrift>,
    /// TPROXY policy routing and `::6` (read from a live namespace only, not with --from-save).
    pub(crate) routes: Option<routes::RoutesDrift>,
    /// With the iptables backend: the nftables backend's tables found live (e.g.
    /// `istio-proxy-nat`), a second capture of every packet.
    pub(crate) also_in_nftables: Vec<String>,
    /// With `--native-nftables`: the iptables backend's `ISTIO_*` chains found live (per
    /// family and variant), a second capture of every packet.
    pub(crate) also_in_iptables: Vec<IptablesChains>,
    /// Nothing of the checked backend is live but the other backend's capture is: the
    /// namespace uses the other backend (`iptables` or `nftables`), reported as that instead of
    /// every planned rule missing.
    pub(crate) other_backend: Option<&'static str>,
}

/// The iptables backend's chains in one family and variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IptablesChains {
    /// The save program that listed them (e.g. `iptables-nft-save`).
    pub(crate) source: String,
    pub(crate) family: Family,
    /// (table, chain).
    pub(crate) chains: Vec<(String, String)>,
}

impl Report {
    pub(crate) fn in_sync(&self) -> bool {
        self.families.iter().all(FamilyReport::in_sync)
            && self.nft.as_ref().is_none_or(nft_drift::NftDrift::is_clean)
            && self.routes.as_ref().is_none_or(routes::RoutesDrift::is_clean)
            && self.also_in_nftables.is_empty()
            && self.also_in_iptables.is_empty()
    }

    /// 0 in sync, 1 drift.
    pub(crate) fn exit_code(&self) -> i32 {
        if self.in_sync() { 0 } else { 1 }
    }

    /// Per family a `# <family>: ...` summary line, then its `+`/`-` lines.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        if let Some(backend) = self.other_backend {
            out.push_str(&self.other_backend_text(backend));
            if let Some(r) = &self.routes {
                out.push_str(&format!("# {}\n", r.summary()));
                out.push_str(&r.lines());
            }
            return out;
        }
        for f in &self.families {
            out.push_str(&format!("# {}\n", f.summary()));
            out.push_str(&f.drift.to_string());
            for (table, chain) in &f.stale_chains {
                out.push_str(&report::unexpected_chain(table, chain));
            }
        }
        if let Some(d) = &self.nft {
            out.push_str(&format!("# {}\n", d.summary()));
            out.push_str(&d.lines());
        }
        if !self.also_in_nftables.is_empty() {
            // The nftables check's own spelling of a table that should not be there.
            out.push_str("# nftables: meshcap's istio-proxy-* tables also exist, packets are captured twice\n");
            for t in &self.also_in_nftables {
                out.push_str(&report::unexpected_nft_table(t));
            }
        }
        for found in &self.also_in_iptables {
            // The iptables check's own spelling of a chain that should not be there.
            out.push_str(&format!(
                "# iptables ({}, {}): meshcap's ISTIO_* chains also exist, packets are captured twice\n",
                found.source, found.family
            ));
            for (table, chain) in &found.chains {
                out.push_str(&report::unexpected_chain(table, chain));
            }
        }
        if let Some(r) = &self.routes {
            out.push_str(&format!("# {}\n", r.summary()));
            out.push_str(&r.lines());
        }
        out
    }

    /// The lines of a namespace that uses the other backend: which one, what of it is live,
    /// and the flag that checks it.
    fn other_backend_text(&self, backend: &str) -> String {
        let (found, hint) = if backend == "nftables" {
            (self.also_in_nftables.join(", "), "add --native-nftables to check it")
        } else {
            let chains: Vec<String> = self
                .also_in_iptables
                .iter()
                .map(|c| format!("{} ({})", c.source, c.family))
                .collect();
            (chains.join(", "), "drop --native-nftables to check it")
        };
        format!(
            "# this namespace uses the {backend} backend ({found}): nothing of this backend's rules is live; {hint}\n"
        )
    }

    pub(crate) fn json(&self) -> String {
        let doc = ReportDoc {
            version: 1,
            in_sync: self.in_sync(),
            uses_backend: self.other_backend,
            also_in_nftables: self.also_in_nftables.clone(),
            also_in_iptables: self
                .also_in_iptables
                .iter()
                .map(|found| IptablesChainsDoc {
                    source: found.source.clone(),
                    family: found.family.name(),
                    chains: found
                        .chains
                        .iter()
                        .map(|(table, chain)| ChainDoc {
                            table: table.clone(),
                            chain: chain.clone(),
                        })
                        .collect(),
                })
                .collect(),
            families: self
                .families
                .iter()
                .map(|f| {
                    let d = &f.drift;
                    FamilyDoc {
                        family: d.family.name(),
                        source: f.source.clone(),
                        in_sync: f.in_sync(),
                        missing: d.count(DriftKind::Missing),
                        unexpected: d.count(DriftKind::Unexpected),
                        misordered: d.count(DriftKind::Misordered),
                        entries: d
                            .entries
                            .iter()
                            .map(|e| EntryDoc {
                                kind: kind_name(e.kind),
                                table: e.table.clone(),
                                chain: e.chain.clone(),
                                iptables: e.rule.clone(),
                                planned_at: e.planned_at,
                                live_at: e.live_at,
                            })
                            .collect(),
                        unexpected_chains: f
                            .stale_chains
                            .iter()
                            .map(|(table, chain)| ChainDoc {
                                table: table.clone(),
                                chain: chain.clone(),
                            })
                            .collect(),
                        also_in: f.also_in.clone(),
                    }
                })
                .collect(),
            nftables: self.nft.as_ref().map(|d| NftDoc {
                in_sync: d.is_clean(),
                missing: d.count(DriftKind::Missing),
                unexpected: d.count(DriftKind::Unexpected),
                misordered: d.count(DriftKind::Misordered),
                entries: d
                    .rules
                    .iter()
                    .map(|e| NftEntryDoc {
                        kind: kind_name(e.kind),
                        table: e.table.clone(),
                        chain: e.chain.clone(),
                        nft: e.rule.clone(),
                        planned_at: e.planned_at,
                        live_at: e.live_at,
                    })
                    .collect(),
                chains: d.chains.clone(),
                missing_tables: d.missing_tables.clone(),
                unexpected_tables: d.unexpected_tables.clone(),
                unexpected_objects: d
                    .unexpected_objects
                    .iter()
                    .map(|o| format!("{} {} {}", o.kind, o.table, o.name))
                    .collect(),
            }),
            routes: self.routes.as_ref().map(|r| RoutesDoc {
                in_sync: r.is_clean(),
                missing: r.missing.clone(),
                unexpected: r.unexpected.clone(),
            }),
        };
        let mut s = serde_json::to_string_pretty(&doc).expect("a report serialises");
        s.push('\n');
        s
    }
}

fn kind_name(k: DriftKind) -> &'static str {
    match k {
        DriftKind::Missing => "missing",
        DriftKind::Unexpected => "unexpected",
        DriftKind::Misordered => "misordered",
    }
}

/// `check --format json`, version 1.
#[derive(Serialize)]
struct ReportDoc {
    version: u32,
    in_sync: bool,
    /// The namespace uses the other backend (`iptables` or `nftables`) and nothing of the
    /// checked one is live (left out otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    uses_backend: Option<&'static str>,
    families: Vec<FamilyDoc>,
    /// With the iptables backend: the nftables backend's tables that are live too (left out
    /// when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    also_in_nftables: Vec<String>,
    /// With `--native-nftables`: the iptables backend's chains that are live too (left out
    /// when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    also_in_iptables: Vec<IptablesChainsDoc>,
    /// With `--native-nftables` (the families are then empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    nftables: Option<NftDoc>,
    /// Read from a live namespace only (not with `--from-save`).
    #[serde(skip_serializing_if = "Option::is_none")]
    routes: Option<RoutesDoc>,
}

#[derive(Serialize)]
struct IptablesChainsDoc {
    source: String,
    family: &'static str,
    chains: Vec<ChainDoc>,
}

#[derive(Serialize)]
struct RoutesDoc {
    in_sync: bool,
    /// `ip` command spellings of planned routing state that is absent.
    missing: Vec<String>,
    /// Present but not planned (and extra copies of the policy rule).
    unexpected: Vec<String>,
}

#[derive(Serialize)]
struct NftDoc {
    in_sync: bool,
    missing: usize,
    unexpected: usize,
    misordered: usize,
    entries: Vec<NftEntryDoc>,
    chains: Vec<nft_drift::ChainDrift>,
    missing_tables: Vec<String>,
    unexpected_tables: Vec<String>,
    /// Sets, maps and other objects in meshcap's tables, as `<kind> <table> <name>`.
    unexpected_objects: Vec<String>,
}

#[derive(Serialize)]
struct NftEntryDoc {
    kind: &'static str,
    table: String,
    chain: String,
    /// The rule in `nft` syntax.
    nft: String,
    planned_at: Option<usize>,
    live_at: Option<usize>,
}

#[derive(Serialize)]
struct FamilyDoc {
    family: &'static str,
    /// The save program read (null for --from-save).
    source: Option<String>,
    in_sync: bool,
    missing: usize,
    unexpected: usize,
    misordered: usize,
    entries: Vec<EntryDoc>,
    unexpected_chains: Vec<ChainDoc>,
    also_in: Vec<String>,
}

#[derive(Serialize)]
struct EntryDoc {
    /// `missing` (planned, not live), `unexpected` (live, not planned) or `misordered`.
    kind: &'static str,
    table: String,
    chain: String,
    /// The rule as iptables arguments after the chain.
    iptables: String,
    /// 1-based position in the planned chain.
    planned_at: Option<usize>,
    /// 1-based position in the live chain.
    live_at: Option<usize>,
}

#[derive(Serialize)]
struct ChainDoc {
    table: String,
    chain: String,
}

/// Compares one family's plan with its live dump. A family the plan leaves off (IPv6
/// disabled) has an empty plan, so leftover ISTIO state there is drift.
/// `ids` resolves the plan's owner names as the restore did (iptables-save prints ids).
pub(crate) fn check_family(plan: &Plan, family: Family, live: &SaveDump, ids: &Ids) -> FamilyReport {
    let planned = plan.ruleset(family);
    let stale_chains = drift::stale_chains(&planned, live);
    FamilyReport {
        drift: drift::compare(&planned, live, ids),
        stale_chains,
        source: None,
        also_in: Vec::new(),
    }
}

/// Compares the plan with each family's live dump.
pub(crate) fn check(plan: &Plan, live: &[(Family, SaveDump)], ids: &Ids) -> Report {
    Report {
        families: live.iter().map(|(f, dump)| check_family(plan, *f, dump, ids)).collect(),
        ..Report::default()
    }
}

/// Reads the live iptables state of the namespace `config` names (or this one) exactly as apply
/// would (same binary choice, same reads, under the per-namespace lock) and compares it with the
/// plan, both families. IPv6 as apply enables it: explicit, or detected from the addresses.
pub(crate) fn live(config: &Config, ipv6_setting: Ipv6Setting) -> Result<Report> {
    // A name the restore could not have resolved, or a rule it could not have loaded, is an
    // error here as in apply, not a list of drift.
    crate::config::check_loadable_on_host(config)?;
    let netns = config.network_namespace.as_deref().map(Netns::open).transpose()?;
    // Entered once, on this thread, for the whole check (lock, kernel facts, dump).
    let _inside = netns::enter(netns.as_ref());
    // Not while another meshcap is changing this namespace (its guardrails would show as drift).
    let _lock = netns::lock(netns.as_ref(), std::time::Duration::from_secs(10))?;
    let kernel = LinuxKernel::open(netns.as_ref())?;
    let ipv6 = match ipv6_setting {
        Ipv6Setting::Explicit(on) => on,
        Ipv6Setting::Detect => {
            detect_ipv6(&kernel.addresses()?, config.dual_stack)
                .map_err(|e| Error::Ipv6Unknown(Box::new(e)))?
                .1
        }
    };
    let plan = plan::build_for(config, ipv6)?;
    plan.validate(config.backend())
        .map_err(|(family, e)| Error::inconsistent(family, e))?;
    let sys = RealSystem::new(netns.as_ref());
    let ns_path = netns.as_ref().map(Netns::path);
    let routes = Some(routes::compare(
        &kernel,
        &plan.routes,
        config.tproxy_mark,
        config.tproxy_route_table,
    )?);
    let reader = live::iptables::Reader {
        sys: &sys,
        kernel: &kernel,
        force: config.force_iptables_binary,
        ns: ns_path,
    };
    if config.native_nftables {
        let tx = crate::nft::lower::apply_transaction(&plan).map_err(|e| Error::inconsistent("nftables", e))?;
        let live = live::nft::read_state(netns.as_ref())?;
        let drift = nft_drift::compare(&crate::nft::ir::planned(&tx), &live, &Ids::from_host()?);
        let also_in_iptables: Vec<IptablesChains> = reader
            .residue()?
            .into_iter()
            .map(|r| IptablesChains {
                source: r.bins.save(),
                family: r.bins.family,
                chains: r.dump.istio_chains(),
            })
            .collect();
        // None of meshcap's tables is live, but the iptables backend's chains are.
        let other_backend = (live
            .tables
            .iter()
            .all(|t| crate::nft::ir::NftTable::from_name(t).is_none())
            && !also_in_iptables.is_empty())
        .then_some("iptables");
        return Ok(Report {
            nft: Some(drift),
            routes,
            also_in_iptables,
            other_backend,
            ..Report::default()
        });
    }
    // Owner names as the restore resolved them: iptables-save prints the ids.
    let ids = Ids::from_host()?;
    let mut families = Vec::new();
    // Whether any of the iptables backend's state is live, in any family or variant.
    let mut any_live = false;
    for family in Family::ALL {
        let enabled = family == Family::V4 || ipv6;
        let report = match reader.read_family(family, enabled)? {
            Some(live) => {
                any_live |= live.live.has_istio_state() || !live.others.is_empty();
                FamilyReport {
                    source: Some(live.bins.save()),
                    also_in: live.others.iter().map(|(b, _, _)| b.base.clone()).collect(),
                    ..check_family(&plan, family, &live.live, &ids)
                }
            }
            // The family is off and none of its tables exists: nothing of meshcap's there.
            None => check_family(&plan, family, &SaveDump::default(), &ids),
        };
        families.push(report);
    }
    // As apply refuses over them: the nftables backend's tables (netlink, no process).
    let also_in_nftables: Vec<String> = live::nft::our_tables(&kernel)
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.name().to_string())
        .collect();
    tracing::debug!("{} processes spawned", sys.spawns());
    let other_backend = (!any_live && !also_in_nftables.is_empty()).then_some("nftables");
    Ok(Report {
        families,
        routes,
        also_in_nftables,
        other_backend,
        ..Report::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::parse::{Strictness, parse_save};
    use crate::iptables::render::restore_payload;

    fn plan(args: &[&str]) -> Plan {
        crate::plan::testing::plan(args)
    }

    fn dump(text: &str) -> SaveDump {
        parse_save(text, Strictness::Lenient).unwrap()
    }

    #[test]
    fn in_sync_and_drift() {
        let p = plan(&["-b", "*", "-i", "*", "--ipv6"]);
        let v4 = restore_payload(&p.ruleset(Family::V4));
        let v6 = restore_payload(&p.ruleset(Family::V6));
        let r = check(&p, &[(Family::V4, dump(&v4)), (Family::V6, dump(&v6))], &Ids::default());
        assert!(r.in_sync(), "{}", r.text());
        assert_eq!(r.exit_code(), 0);
        assert_eq!(r.text(), "# IPv4: in sync\n# IPv6: in sync\n");

        let broken = v4.replace("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n", "");
        let r = check(
            &p,
            &[(Family::V4, dump(&broken)), (Family::V6, dump(&v6))],
            &Ids::default(),
        );
        assert_eq!(r.exit_code(), 1);
        let text = r.text();
        assert!(
            text.starts_with(
                "# IPv4: 1 missing, 0 unexpected, 0 misordered\n+ -t nat -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN"
            ),
            "{text}"
        );
        assert!(text.ends_with("# IPv6: in sync\n"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["in_sync"], false);
        assert_eq!(v["families"][0]["missing"], 1);
        assert_eq!(v["families"][0]["entries"][0]["kind"], "missing");
        assert_eq!(v["families"][0]["entries"][0]["iptables"], "-d 127.0.0.1/32 -j RETURN");
        assert_eq!(v["families"][1]["in_sync"], true);
    }

    #[test]
    fn ipv6_off_means_no_istio_state_in_ipv6() {
        let p = plan(&["-b", "*"]);
        let v4 = restore_payload(&p.ruleset(Family::V4));
        // The IPv4 payload loaded into ip6tables is all unexpected there.
        let r = check(&p, &[(Family::V4, dump(&v4)), (Family::V6, dump(&v4))], &Ids::default());
        assert!(r.families[0].in_sync());
        assert!(r.families[1].drift.count(DriftKind::Unexpected) > 0, "{}", r.text());
        assert_eq!(r.families[1].stale_chains.len(), 4, "{}", r.text());
        let r = check(
            &p,
            &[(Family::V4, dump(&v4)), (Family::V6, SaveDump::default())],
            &Ids::default(),
        );
        assert!(r.in_sync());
    }

    #[test]
    fn foreign_rules_are_ignored() {
        let p = plan(&["-b", "*"]);
        let v4 = restore_payload(&p.ruleset(Family::V4)).replace(
            "-A OUTPUT -j ISTIO_OUTPUT\n",
            "-A OUTPUT -m comment --comment kube -j KUBE-SERVICES\n-A OUTPUT -j ISTIO_OUTPUT\n",
        );
        let r = check(&p, &[(Family::V4, dump(&v4))], &Ids::default());
        assert!(r.in_sync(), "{}", r.text());
    }

    #[test]
    fn the_nftables_backends_tables_are_drift_in_the_iptables_check() {
        let p = plan(&["-b", "*"]);
        let v4 = restore_payload(&p.ruleset(Family::V4));
        let mut r = check(&p, &[(Family::V4, dump(&v4))], &Ids::default());
        assert!(!r.json().contains("also_in_nftables"), "left out when empty");
        r.also_in_nftables = vec!["istio-proxy-nat".into(), "istio-proxy-raw".into()];
        assert!(r.families[0].in_sync());
        assert_eq!(r.exit_code(), 1);
        assert_eq!(
            r.text(),
            "# IPv4: in sync\n\
             # nftables: meshcap's istio-proxy-* tables also exist, packets are captured twice\n\
             - add table inet istio-proxy-nat  # unexpected table\n\
             - add table inet istio-proxy-raw  # unexpected table\n"
        );
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["in_sync"], false);
        assert_eq!(v["also_in_nftables"][1], "istio-proxy-raw");
    }
}
