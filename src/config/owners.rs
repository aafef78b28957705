//! Owner settings: the proxy's own UIDs and GIDs (`-u`, `-g`; never captured) and the owner
//! groups whose outbound traffic is captured (`ISTIO_OUTBOUND_OWNER_GROUPS*`, env only).

use super::HostFiles;
use super::source::{Input, Sourced, list_or_empty, text_of};
use crate::error::{Error, Result};
use crate::sys::host::{self, Ids};
use crate::values::Owner;

/// Istio's limit on the owner-group include list.
pub(crate) const MAX_OWNER_GROUPS: usize = 64;

/// The most owner groups an include list can have for the iptables backend: the list becomes
/// one rule of `5 × N + 4` words, and iptables-restore takes at most 255 arguments per rule
/// (`MAX_ARGC`, counting its own `iptables -t TABLE`), so 49 is the most that loads
/// (istio-compat §2.7). nft has no such limit.
pub(crate) const IPTABLES_MAX_OWNER_GROUPS: usize = 49;

/// Owner groups whose outbound traffic is captured (env-only settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnerGroups {
    /// `*`: every group, except those listed.
    AllExcept(Vec<Owner>),
    /// Only these groups (an empty list captures no outbound traffic, as in Istio).
    Only(Vec<Owner>),
}

/// The owner groups and the raw text of both variables for the config dump.
pub(super) struct Groups {
    pub(crate) groups: OwnerGroups,
    /// The include list as given, `*` when unset.
    pub(crate) include_text: String,
    pub(crate) exclude_text: String,
}

/// `ISTIO_OUTBOUND_OWNER_GROUPS` (include, `*` by default, at most [`MAX_OWNER_GROUPS`]) and
/// `ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE` (only with `*`; otherwise ignored with a note).
pub(super) fn owner_groups(i: &mut Input) -> Result<Groups> {
    let include = i.env_only("ISTIO_OUTBOUND_OWNER_GROUPS")?;
    let exclude = i.env_only("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE")?;
    let groups = match &include {
        Some(s) if s.text.trim() != "*" => {
            let only = s.list(Owner::parse)?;
            if only.len() > MAX_OWNER_GROUPS {
                return Err(Error::invalid(
                    &s.source,
                    &s.text,
                    format!("at most {MAX_OWNER_GROUPS} owner groups, got {}", only.len()),
                ));
            }
            if let Some(e) = exclude.as_ref().filter(|e| !e.text.trim().is_empty()) {
                i.warn(format!(
                    "{} is ignored because ISTIO_OUTBOUND_OWNER_GROUPS is not '*'",
                    e.source
                ));
            }
            OwnerGroups::Only(only)
        }
        _ => OwnerGroups::AllExcept(list_or_empty(&exclude, Owner::parse)?),
    };
    Ok(Groups {
        groups,
        include_text: include.as_ref().map_or("*".to_string(), |s| s.text.clone()),
        exclude_text: text_of(&exclude),
    })
}

/// The proxy's UIDs and GIDs.
pub(super) struct ProxyOwners {
    pub(crate) uids: Vec<Owner>,
    pub(crate) gids: Vec<Owner>,
    pub(crate) sources: OwnerSources,
}

/// Where the proxy's owner lists came from (`--proxy-uid` or `PROXY_UID`, …), so that a name
/// that does not resolve is reported under the setting that gave it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct OwnerSources {
    pub(crate) uid: String,
    pub(crate) gid: String,
    /// No GID list was given: the UID list is used as the GID list too.
    pub(crate) gid_from_uid: bool,
}

/// With the iptables backend, an include list longer than [`IPTABLES_MAX_OWNER_GROUPS`] as
/// the error naming `ISTIO_OUTBOUND_OWNER_GROUPS` and the count (Istio accepts up to 64, but
/// iptables-restore refuses the rule; `render` still prints Istio's text, with this as a note).
pub(crate) fn too_many_groups_for_iptables(cfg: &super::Config) -> Option<Error> {
    match &cfg.owner_groups {
        OwnerGroups::Only(groups) if !cfg.native_nftables && groups.len() > IPTABLES_MAX_OWNER_GROUPS => {
            Some(Error::invalid(
                "ISTIO_OUTBOUND_OWNER_GROUPS",
                &cfg.dump.owner_groups_include,
                format!(
                    "{} owner groups make one iptables rule of {} words, but iptables-restore takes at most 255 \
                     arguments per rule (its own 3 included): at most {IPTABLES_MAX_OWNER_GROUPS} groups load \
                     (or use --native-nftables)",
                    groups.len(),
                    5 * groups.len() + 4
                ),
            ))
        }
        _ => None,
    }
}

/// Every user and group name of the configuration that `ids` does not resolve, each as the
/// error `invalid value 'NAME' for 'SETTING': no such user in FILE` (`passwd`, `group`: the
/// files `ids` was read from, for the message). iptables-restore and nft resolve names when
/// they load a rule, so an unknown name would fail the restore after planning; checked before
/// anything runs instead. Names stay in the rules as given (Istio's text). Each item says
/// whether the name is a group's.
pub(crate) fn unresolved_names(cfg: &super::Config, ids: &Ids, passwd: &str, group: &str) -> Vec<(bool, Error)> {
    let mut out = Vec::new();
    let mut check = |owners: &[Owner], source: &str, is_group: bool, note: &str| {
        for o in owners {
            if matches!(o, Owner::Name(_)) && ids.id_of(o, is_group).is_none() {
                let (what, file) = if is_group { ("group", group) } else { ("user", passwd) };
                let e = Error::invalid(source, o.to_string(), format!("no such {what} in {file}{note}"));
                out.push((is_group, e));
            }
        }
    };
    let src = &cfg.owner_sources;
    check(&cfg.proxy_uids, &src.uid, false, "");
    let note = if src.gid_from_uid {
        " (without a GID list the UID list is the GID list too; give -g)"
    } else {
        ""
    };
    check(&cfg.proxy_gids, &src.gid, true, note);
    match &cfg.owner_groups {
        OwnerGroups::Only(groups) => check(groups, "ISTIO_OUTBOUND_OWNER_GROUPS", true, ""),
        OwnerGroups::AllExcept(groups) => check(groups, "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", true, ""),
    }
    out
}

/// `-u` / `PROXY_UID`: the list, else `ENVOY_USER`'s uid in passwd (default user `istio-proxy`),
/// else 1337. `-g` / `PROXY_GID`: the list, else the UID list. Blank counts as unset.
pub(super) fn proxy_owners(i: &Input, files: &HostFiles) -> Result<ProxyOwners> {
    let f = i.flags;
    let uid_src = i
        .pick(&f.proxy_uid, "proxy-uid", Some("PROXY_UID"), None)?
        .filter(|s| !s.text.trim().is_empty());
    let mut sources = OwnerSources {
        uid: uid_src
            .as_ref()
            .map_or_else(|| "--proxy-uid".into(), |s| s.source.clone()),
        ..OwnerSources::default()
    };
    let (uids, uid_text) = match &uid_src {
        Some(s) => (owner_list(s, "UID", "leave it empty for the default")?, s.text.clone()),
        None => {
            let uid = host::envoy_user_uid(i.env, &files.passwd)?;
            (vec![Owner::Id(uid)], uid.to_string())
        }
    };
    let gid_src = i
        .pick(&f.proxy_gid, "proxy-gid", Some("PROXY_GID"), None)?
        .filter(|s| !s.text.trim().is_empty());
    let gids = match &gid_src {
        Some(s) => {
            sources.gid = s.source.clone();
            owner_list(s, "GID", "leave it empty to use the UID list")?
        }
        None => {
            sources.gid = sources.uid.clone();
            sources.gid_from_uid = true;
            Sourced {
                text: uid_text,
                source: sources.uid.clone(),
            }
            .list(Owner::parse)?
        }
    };
    Ok(ProxyOwners { uids, gids, sources })
}

/// A proxy UID/GID list that is given must name at least one owner. Istio renders no owner
/// rules for a list such as `,`, which lets the proxy capture its own traffic; meshcap refuses it.
fn owner_list(s: &Sourced, what: &str, hint: &str) -> Result<Vec<Owner>> {
    let list = s.list(Owner::parse)?;
    if list.is_empty() {
        return Err(Error::invalid(
            &s.source,
            &s.text,
            format!("the list names no {what} ({hint})"),
        ));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::super::testing::cfg;
    use super::*;
    use crate::cli::CaptureFlags;
    use crate::config::{Config, Ipv6Setting};
    use crate::sys::host::Env;

    #[test]
    fn owner_lists_without_items_are_refused() {
        let flags = CaptureFlags {
            proxy_uid: Some(" , ".into()),
            ..Default::default()
        };
        assert_eq!(
            cfg(flags, &[]).unwrap_err().to_string(),
            "invalid value ' , ' for '--proxy-uid': the list names no UID (leave it empty for the default)"
        );
        let e = cfg(CaptureFlags::default(), &[("PROXY_GID", ",")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid value ',' for 'PROXY_GID': the list names no GID (leave it empty to use the UID list)"
        );
        // Empty (or blank) still means "the default", as in Istio.
        let flags = CaptureFlags {
            proxy_uid: Some(" ".into()),
            ..Default::default()
        };
        assert_eq!(cfg(flags, &[]).unwrap().proxy_uids, [Owner::Id(1337)]);
    }

    #[test]
    fn the_proxy_uid_falls_back_to_1337_without_passwd() {
        let dir = std::env::temp_dir().join(format!("meshcap-passwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let passwd = dir.join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\nistio-proxy:x:2000:2000::/:/bin/false\nodd:x:+7:0::/:/bin/false\n",
        )
        .unwrap();
        let with = |passwd: &str, env: &[(&str, &str)]| {
            let files = HostFiles {
                passwd: passwd.into(),
                resolv_conf: "/nonexistent".into(),
            };
            Config::from_flags(
                &CaptureFlags::default(),
                &Env::from_pairs(env.iter().copied()),
                &files,
                Ipv6Setting::Explicit(false),
            )
            .unwrap()
            .proxy_uids
        };
        let p = passwd.to_str().unwrap();
        assert_eq!(with(p, &[]), [Owner::Id(2000)], "istio-proxy from passwd");
        assert_eq!(with(p, &[("ENVOY_USER", "root")]), [Owner::Id(0)]);
        assert_eq!(with(p, &[("ENVOY_USER", "nobody")]), [Owner::Id(1337)], "unknown user");
        assert_eq!(
            with(p, &[("ENVOY_USER", "odd")]),
            [Owner::Id(1337)],
            "a uid that is not digits"
        );
        assert_eq!(with(p, &[("ENVOY_USER", "root:x:0")]), [Owner::Id(1337)]);
        assert_eq!(with("/nonexistent/passwd", &[]), [Owner::Id(1337)], "no passwd");
        assert_eq!(with(dir.to_str().unwrap(), &[]), [Owner::Id(1337)], "a directory");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn gid_defaults_to_uid_list() {
        let flags = CaptureFlags {
            proxy_uid: Some("3,4".into()),
            ..Default::default()
        };
        assert_eq!(cfg(flags, &[]).unwrap().proxy_gids, [Owner::Id(3), Owner::Id(4)]);
    }

    #[test]
    fn owner_groups_include_or_all_except() {
        let c = cfg(CaptureFlags::default(), &[]).unwrap();
        assert_eq!(c.owner_groups, OwnerGroups::AllExcept(vec![]));
        assert_eq!(c.dump.owner_groups_include, "*");
        let env = [
            ("ISTIO_OUTBOUND_OWNER_GROUPS", "1,2"),
            ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "5"),
        ];
        let c = cfg(CaptureFlags::default(), &env).unwrap();
        assert_eq!(c.owner_groups, OwnerGroups::Only(vec![Owner::Id(1), Owner::Id(2)]));
        assert_eq!(
            c.warnings,
            ["ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE is ignored because ISTIO_OUTBOUND_OWNER_GROUPS is not '*'"]
        );
        let many = (1..=65).map(|n| n.to_string()).collect::<Vec<_>>().join(",");
        let e = cfg(CaptureFlags::default(), &[("ISTIO_OUTBOUND_OWNER_GROUPS", &many)]).unwrap_err();
        assert!(e.to_string().ends_with("at most 64 owner groups, got 65"), "{e}");
    }
}
