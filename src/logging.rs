//! Logging on stderr in Istio's layouts: `<time>\t<level>\t<message>` or JSON lines
//! (`--log_as_json`), levels from `--log_output_level` (`scope:level,...`; the `default` scope
//! is this tool's). Rules and reports go to stdout; logs never do.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::LogFlags;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    pub(crate) level: LevelFilter,
    pub(crate) json: bool,
}

/// Parses Istio's `--log_output_level` grammar and returns the `default` scope's level.
pub(crate) fn parse_output_level(text: &str, mut level: LevelFilter) -> Result<LevelFilter> {
    let bad = |why: String| Error::invalid("--log_output_level", text, why);
    for item in text.split(',') {
        let (scope, name) = match item.split_once(':') {
            Some((_, rest)) if rest.contains(':') => {
                return Err(bad(format!("invalid output level format '{item}'")));
            }
            Some((scope, name)) => (scope, name),
            None => ("default", item),
        };
        let parsed = match name {
            "debug" => LevelFilter::DEBUG,
            "info" => LevelFilter::INFO,
            "warn" => LevelFilter::WARN,
            "error" | "fatal" => LevelFilter::ERROR,
            "none" => LevelFilter::OFF,
            _ => return Err(bad(format!("invalid output level '{name}'"))),
        };
        if scope == "default" || scope == "all" {
            level = parsed;
        }
    }
    Ok(level)
}

impl LogSettings {
    pub fn from_flags(flags: &LogFlags) -> Result<LogSettings> {
        let level = match &flags.log_output_level {
            Some(text) if !text.is_empty() => parse_output_level(text, LevelFilter::INFO)?,
            _ => LevelFilter::INFO,
        };
        let json = match flags.log_as_json.as_deref() {
            None | Some("false" | "0" | "f" | "F" | "FALSE" | "False") => false,
            Some("true" | "1" | "t" | "T" | "TRUE" | "True") => true,
            Some(other) => {
                return Err(Error::invalid(
                    "--log_as_json",
                    other,
                    "expected a boolean (true or false)",
                ));
            }
        };
        Ok(LogSettings { level, json })
    }

    /// Installs the subscriber for this process.
    pub(crate) fn install(self) {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(self.level)
            .event_format(IstioFormat { json: self.json })
            .try_init();
    }
}

struct IstioFormat {
    json: bool,
}

#[derive(Default)]
struct Fields {
    message: String,
    labels: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.labels.push((field.name().to_string(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.labels.push((field.name().to_string(), value.to_string()));
        }
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE | Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC.
pub(crate) fn timestamp(now: SystemTime) -> String {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// One JSON log object with Istio's key order: `level`, `time`, `msg`, then the labels.
/// (A `serde_json::Map` would sort the keys.)
fn json_line(level: &str, time: &str, fields: &Fields) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let mut pairs = vec![
        (quote("level"), quote(level)),
        (quote("time"), quote(time)),
        (quote("msg"), quote(&fields.message)),
    ];
    pairs.extend(fields.labels.iter().map(|(k, v)| (quote(k), quote(v))));
    let body: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", body.join(","))
}

impl<S, N> FormatEvent<S, N> for IstioFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = timestamp(SystemTime::now());
        let level = level_name(event.metadata().level());
        if self.json {
            writeln!(w, "{}", json_line(level, &time, &fields))
        } else {
            write!(w, "{time}\t{level}\t{}", fields.message)?;
            if !fields.labels.is_empty() {
                let labels: Vec<String> = fields.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(w, "\t{}", labels.join(" "))?;
            }
            writeln!(w)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn output_levels() {
        assert_eq!(
            parse_output_level("default:debug", LevelFilter::INFO).unwrap(),
            LevelFilter::DEBUG
        );
        assert_eq!(
            parse_output_level("warn", LevelFilter::INFO).unwrap(),
            LevelFilter::WARN
        );
        assert_eq!(
            parse_output_level("grpc:none", LevelFilter::INFO).unwrap(),
            LevelFilter::INFO
        );
        assert!(parse_output_level("a:b:c", LevelFilter::INFO).is_err());
        assert!(parse_output_level("default:loud", LevelFilter::INFO).is_err());
        assert!(parse_output_level("info,", LevelFilter::INFO).is_err());
    }

    #[test]
    fn json_keys_in_istio_order() {
        let fields = Fields {
            message: "a \"b\"".into(),
            labels: vec![("binary".into(), "iptables".into())],
        };
        assert_eq!(
            json_line("warn", "2026-08-22T15:00:18.123456Z", &fields),
            r#"{"level":"warn","time":"2026-08-22T15:00:18.123456Z","msg":"a \"b\"","binary":"iptables"}"#
        );
    }

    #[test]
    fn rfc3339_micros() {
        let t = UNIX_EPOCH + Duration::from_micros(1_787_410_818_123_456);
        assert_eq!(timestamp(t), "2026-08-22T15:00:18.123456Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }
}
