//! The boolean switches (`--dry-run`, `--redirect-dns`, `--native-nftables`, …) with their
//! variables, `DRY_RUN_FILE_PATH`, and the flags Istio removed (accepted, with a note).

use super::source::Input;
use crate::error::Result;
use crate::values::OutFile;

/// The boolean settings, in the order they are read (a bad value is reported in that order).
pub(super) struct Switches {
    pub(crate) dry_run: bool,
    /// `DRY_RUN_FILE_PATH`, read only for a dry run.
    pub(crate) dry_run_file: Option<OutFile>,
    pub(crate) skip_rule_apply: bool,
    pub(crate) run_validation: bool,
    pub(crate) redirect_dns: bool,
    pub(crate) drop_invalid: bool,
    pub(crate) dual_stack: bool,
    pub(crate) capture_all_dns: bool,
    pub(crate) cni_mode: bool,
    pub(crate) reconcile: bool,
    pub(crate) cleanup_only: bool,
    pub(crate) force_apply: bool,
    pub(crate) native_nftables: bool,
    pub(crate) compact: bool,
}

/// Every switch: the flag, else the alias variable, else the primary one; false when unset.
pub(super) fn switches(i: &Input) -> Result<Switches> {
    let f = i.flags;
    let dry_run = i.flag_bool(&f.dry_run, "dry-run", "DRY_RUN", None)?;
    Ok(Switches {
        dry_run,
        dry_run_file: dry_run_file(i, dry_run)?,
        skip_rule_apply: i.flag_bool(&f.skip_rule_apply, "skip-rule-apply", "SKIP_RULE_APPLY", None)?,
        run_validation: i.flag_bool(&f.run_validation, "run-validation", "RUN_VALIDATION", None)?,
        redirect_dns: i.flag_bool(
            &f.redirect_dns,
            "redirect-dns",
            "REDIRECT_DNS",
            Some("ISTIO_META_DNS_CAPTURE"),
        )?,
        drop_invalid: i.flag_bool(&f.drop_invalid, "drop-invalid", "DROP_INVALID", Some("INVALID_DROP"))?,
        dual_stack: i.flag_bool(&f.dual_stack, "dual-stack", "DUAL_STACK", Some("ISTIO_DUAL_STACK"))?,
        capture_all_dns: i.flag_bool(&f.capture_all_dns, "capture-all-dns", "CAPTURE_ALL_DNS", None)?,
        cni_mode: i.flag_bool(&f.cni_mode, "cni-mode", "CNI_MODE", None)?,
        reconcile: i.flag_bool(&f.reconcile, "reconcile", "RECONCILE", None)?,
        cleanup_only: i.flag_bool(&f.cleanup_only, "cleanup-only", "CLEANUP_ONLY", None)?,
        force_apply: i.flag_bool(&f.force_apply, "force-apply", "FORCE_APPLY", None)?,
        native_nftables: i.flag_bool(&f.native_nftables, "native-nftables", "NATIVE_NFTABLES", None)?,
        compact: i.flag_bool(&f.compact, "compact", "MESHCAP_COMPACT", None)?,
    })
}

/// `DRY_RUN_FILE_PATH` (empty: unset). Not read at all without a dry run (a real apply never
/// fails over it, as Istio ignores it).
fn dry_run_file(i: &Input, dry_run: bool) -> Result<Option<OutFile>> {
    if !dry_run {
        return Ok(None);
    }
    match i.env_only("DRY_RUN_FILE_PATH")? {
        Some(s) if !s.text.is_empty() => Ok(Some(s.parse(OutFile::parse)?)),
        _ => Ok(None),
    }
}

/// Flags removed from Istio: accepted, with a note when given as a flag (their variables are
/// read, so a control character in one is still refused, but otherwise ignored silently).
pub(super) fn removed_flags(i: &mut Input) -> Result<()> {
    let f = i.flags;
    for (flag, long, primary, since) in [
        (&f.restore_format, "restore-format", "RESTORE_FORMAT", "1.24"),
        (
            &f.iptables_trace_logging,
            "iptables-trace-logging",
            "IPTABLES_TRACE_LOGGING",
            "1.26",
        ),
        (&f.iptables_version, "iptables-version", "IPTABLES_VERSION", "1.22"),
    ] {
        if let Some(s) = i.pick(flag, long, Some(primary), None)?
            && s.source.starts_with("--")
        {
            i.warn(format!("{} was removed in Istio {since} and has no effect", s.source));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::cfg;
    use crate::cli::CaptureFlags;

    #[test]
    fn a_bad_boolean_names_its_source() {
        let e = cfg(CaptureFlags::default(), &[("DRY_RUN", "yes")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid value 'yes' for 'DRY_RUN': expected a boolean (true or false)"
        );
        // Empty means false in the environment, not on the command line.
        assert!(!cfg(CaptureFlags::default(), &[("DRY_RUN", "")]).unwrap().dry_run);
        let flags = CaptureFlags {
            compact: Some(String::new()),
            ..Default::default()
        };
        assert!(cfg(flags, &[]).is_err());
    }

    #[test]
    fn removed_flags_are_noted() {
        let flags = CaptureFlags {
            iptables_version: Some("1.8".into()),
            ..Default::default()
        };
        let c = cfg(flags, &[("RESTORE_FORMAT", "true")]).unwrap();
        assert_eq!(
            c.warnings,
            ["--iptables-version was removed in Istio 1.22 and has no effect"]
        );
    }

    #[test]
    fn dry_run_file_is_read_only_for_a_dry_run() {
        let dry = |v: &str| {
            cfg(
                CaptureFlags::default(),
                &[("DRY_RUN", "true"), ("DRY_RUN_FILE_PATH", v)],
            )
        };
        assert_eq!(dry("out/stream").unwrap().dry_run_file.unwrap().as_str(), "out/stream");
        assert_eq!(dry("").unwrap().dry_run_file, None);
        assert_eq!(
            dry("out/").unwrap_err().to_string(),
            "invalid value 'out/' for 'DRY_RUN_FILE_PATH': the path names a directory; name a file"
        );
        let e = dry("s\ntream").unwrap_err().to_string();
        assert!(e.contains("for 'DRY_RUN_FILE_PATH': control characters"), "{e}");
        // The flag counts as the dry run too.
        let flags = CaptureFlags {
            dry_run: Some("true".into()),
            ..Default::default()
        };
        assert!(
            cfg(flags, &[("DRY_RUN_FILE_PATH", "s")])
                .unwrap()
                .dry_run_file
                .is_some()
        );
        // Not a dry run: ignored, not even validated (as Istio ignores it).
        for env in [
            &[("DRY_RUN_FILE_PATH", "s\n")][..],
            &[("DRY_RUN", "false"), ("DRY_RUN_FILE_PATH", "d/")],
        ] {
            assert_eq!(cfg(CaptureFlags::default(), env).unwrap().dry_run_file, None);
        }
    }
}
