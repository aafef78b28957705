//! Where a setting's text comes from: the flag if given, else the alias variable, else the
//! primary one (`docs/istio-compat.md §1.4`), and how a bad value is reported.
//!
//! Every value passes through [`Input::pick`] or [`Input::env_only`], which remember the source
//! (`--long-flag` or the variable's name) so an error names it: `invalid value '<v>' for
//! '<source>': <why>`. Control characters are refused here, in every value.

use crate::cli::CaptureFlags;
use crate::error::{Error, Result};
use crate::sys::host::Env;
use crate::values::{Invalid, list_len_bound, split_list};

/// A value and where it came from (`--long-flag` or an environment variable's name).
pub(super) struct Sourced {
    pub(crate) text: String,
    pub(crate) source: String,
}

impl Sourced {
    /// The value parsed by `parse`; an error names the source and the whole value.
    pub(crate) fn parse<T>(&self, parse: impl FnOnce(&str) -> Result<T, Invalid>) -> Result<T> {
        parse(&self.text).map_err(|Invalid(why)| Error::invalid(&self.source, &self.text, why))
    }

    /// The value as a comma-separated list, each item parsed by `parse`; an error names the
    /// source and the item.
    pub(crate) fn list<T>(&self, parse: impl Fn(&str) -> Result<T, Invalid>) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(list_len_bound(&self.text));
        for item in split_list(&self.text) {
            out.push(parse(item).map_err(|Invalid(why)| Error::invalid(&self.source, item, why))?);
        }
        Ok(out)
    }
}

/// An optional list setting's items (none when unset).
pub(super) fn list_or_empty<T>(s: &Option<Sourced>, parse: impl Fn(&str) -> Result<T, Invalid>) -> Result<Vec<T>> {
    s.as_ref().map_or(Ok(Vec::new()), |s| s.list(parse))
}

/// The raw text of an optional list setting, as Istio's config dump prints it (empty if unset).
pub(super) fn text_of(s: &Option<Sourced>) -> String {
    s.as_ref().map(|s| s.text.clone()).unwrap_or_default()
}

/// A value as given. Control characters (newline, tab, carriage return, escape, …) are refused
/// in every value, whatever it is for: no setting needs one, and a newline would otherwise be
/// trimmed from a list item or echoed into the log.
fn sourced(text: &str, source: String) -> Result<Sourced> {
    if text.chars().any(char::is_control) {
        return Err(Error::invalid(
            &source,
            text,
            "control characters (newline, tab, carriage return, ...) are not allowed",
        ));
    }
    Ok(Sourced {
        text: text.to_string(),
        source,
    })
}

/// Resolves one setting: the flag if given, else the alias variable, else the primary one.
pub(super) fn pick(
    flag: &Option<String>,
    long: &str,
    env: &Env,
    primary: Option<&str>,
    alias: Option<&str>,
) -> Result<Option<Sourced>> {
    if let Some(text) = flag {
        return sourced(text, format!("--{long}")).map(Some);
    }
    for name in [alias, primary].into_iter().flatten() {
        if let Some(text) = env.get(name) {
            return sourced(text, name.to_string()).map(Some);
        }
    }
    Ok(None)
}

/// Go's `strconv.ParseBool` set. An empty environment value means false (Istio's effect).
pub(super) fn parse_bool(s: &Sourced) -> Result<bool> {
    match s.text.as_str() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        "" if !s.source.starts_with("--") => Ok(false),
        _ => Err(Error::invalid(&s.source, &s.text, "expected a boolean (true or false)")),
    }
}

/// What the configuration is read from, and the notes it leaves for the log.
pub(super) struct Input<'a> {
    pub(crate) flags: &'a CaptureFlags,
    pub(crate) env: &'a Env,
    /// Notes for the log (ignored flags, skipped resolv.conf entries), in the order they arise.
    pub(crate) warnings: Vec<String>,
}

impl Input<'_> {
    /// [`pick`] in this input's environment.
    pub(crate) fn pick(
        &self,
        flag: &Option<String>,
        long: &str,
        primary: Option<&str>,
        alias: Option<&str>,
    ) -> Result<Option<Sourced>> {
        pick(flag, long, self.env, primary, alias)
    }

    /// An environment-only setting.
    pub(crate) fn env_only(&self, name: &str) -> Result<Option<Sourced>> {
        self.env
            .get(name)
            .map(|text| sourced(text, name.to_string()))
            .transpose()
    }

    /// A boolean setting (false when unset).
    pub(crate) fn flag_bool(
        &self,
        flag: &Option<String>,
        long: &str,
        primary: &str,
        alias: Option<&str>,
    ) -> Result<bool> {
        self.pick(flag, long, Some(primary), alias)?
            .map_or(Ok(false), |s| parse_bool(&s))
    }

    pub(crate) fn warn(&mut self, note: impl Into<String>) {
        self.warnings.push(note.into());
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::cfg;
    use crate::cli::CaptureFlags;

    #[test]
    fn flag_beats_alias_beats_primary() {
        let env = [
            ("REDIRECT_DNS", "false"),
            ("ISTIO_META_DNS_CAPTURE", "true"),
            ("CAPTURE_ALL_DNS", "true"),
        ];
        assert!(cfg(CaptureFlags::default(), &env).unwrap().dns.redirect);
        let flags = CaptureFlags {
            redirect_dns: Some("false".into()),
            ..Default::default()
        };
        assert!(!cfg(flags, &env).unwrap().dns.redirect);
        let env = [("INBOUND_CAPTURE_PORT", "16000")];
        assert_eq!(
            cfg(CaptureFlags::default(), &env).unwrap().inbound_capture_port.get(),
            16000
        );
    }

    #[test]
    fn control_characters_are_refused_in_every_value() {
        for (flags, source) in [
            (
                CaptureFlags {
                    exclude_interfaces: Some("eth0\n-j ACCEPT".into()),
                    ..Default::default()
                },
                "--istio-exclude-interfaces",
            ),
            (
                CaptureFlags {
                    inbound_ports: Some("80,\n443".into()),
                    ..Default::default()
                },
                "--istio-inbound-ports",
            ),
            (
                CaptureFlags {
                    proxy_uid: Some("\n".into()),
                    ..Default::default()
                },
                "--proxy-uid",
            ),
            (
                CaptureFlags {
                    iptables_version: Some("1.8\r".into()),
                    ..Default::default()
                },
                "--iptables-version",
            ),
        ] {
            let e = cfg(flags, &[]).unwrap_err().to_string();
            assert!(e.contains(&format!("for '{source}': control characters")), "{e}");
        }
        for (name, value) in [
            ("ISTIO_OUTBOUND_OWNER_GROUPS", "*\n"),
            ("ISTIO_SERVICE_CIDR", "10.0.0.0/8\t"),
            ("DRY_RUN", "true\u{1b}"),
            ("NETWORK_NAMESPACE", "pod\n"),
        ] {
            let e = cfg(CaptureFlags::default(), &[(name, value)]).unwrap_err().to_string();
            assert!(e.contains(&format!("for '{name}': control characters")), "{e}");
        }
        // Spaces around list items are still trimmed.
        let flags = CaptureFlags {
            inbound_ports: Some(" 80, 443 ".into()),
            ..Default::default()
        };
        assert!(cfg(flags, &[]).is_ok());
    }
}
