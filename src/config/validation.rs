//! The `--run-validation` probe's settings: its port (`--iptables-probe-port`, Go's integer
//! syntax) and timeout (`--probe-timeout`, a Go duration).

use std::time::Duration;

use super::source::Input;
use crate::error::Result;
use crate::values::{Invalid, Port};

/// The probe's port and timeout.
pub(super) struct Probe {
    pub(crate) port: Port,
    pub(crate) timeout: Duration,
}

/// `--iptables-probe-port` / `IPTABLES_PROBE_PORT` (15002) and `--probe-timeout` /
/// `PROBE_TIMEOUT` (5s, never 0).
pub(super) fn probe(i: &Input) -> Result<Probe> {
    let f = i.flags;
    let port = match i.pick(
        &f.iptables_probe_port,
        "iptables-probe-port",
        Some("IPTABLES_PROBE_PORT"),
        None,
    )? {
        Some(s) => s.parse(parse_probe_port)?,
        None => Port::new_const(15002),
    };
    let timeout = match i.pick(&f.probe_timeout, "probe-timeout", Some("PROBE_TIMEOUT"), None)? {
        Some(s) => s.parse(|t| {
            let d = parse_go_duration(t)?;
            if d.is_zero() {
                return Err(Invalid::new("the probe timeout must be longer than 0"));
            }
            Ok(d)
        })?,
        None => Duration::from_secs(5),
    };
    Ok(Probe { port, timeout })
}

/// Parses a Go duration (`5s`, `500ms`, `1m30s`, `1.5h`; a bare `0`). Negative durations are
/// refused.
pub(crate) fn parse_go_duration(text: &str) -> Result<Duration, Invalid> {
    let bad = || Invalid::new("expected a duration such as 5s, 500ms or 1m30s");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = tail;
    }
    if !total.is_finite() || total > 1e9 {
        return Err(Invalid::new("duration out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Go's `strconv.ParseUint(s, 0, 16)` (decimal, `0x`, `0o`, `0b`, leading-zero octal), then
/// 1–65535.
fn parse_probe_port(text: &str) -> Result<Port, Invalid> {
    let t = text.replace('_', "");
    let (digits, radix) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (h, 16)
    } else if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        (o, 8)
    } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        (b, 2)
    } else if t.len() > 1 && t.starts_with('0') {
        (&t[1..], 8)
    } else {
        (t.as_str(), 10)
    };
    let n = u16::from_str_radix(digits, radix).map_err(|_| Invalid::new("expected a port number 1-65535"))?;
    Port::parse(&n.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::testing::cfg;
    use super::*;
    use crate::cli::CaptureFlags;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_go_duration("1.5h").unwrap(), Duration::from_secs(5400));
        for bad in ["5", "", "s", "-1s", "1x", "1..5s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn probe_port_bases() {
        assert_eq!(parse_probe_port("0x3a9a").unwrap().get(), 15002);
        assert_eq!(parse_probe_port("15002").unwrap().get(), 15002);
        assert!(parse_probe_port("70000").is_err());
    }

    #[test]
    fn defaults_and_a_zero_timeout() {
        let c = cfg(CaptureFlags::default(), &[]).unwrap();
        assert_eq!((c.probe_port.get(), c.probe_timeout), (15002, Duration::from_secs(5)));
        let e = cfg(CaptureFlags::default(), &[("PROBE_TIMEOUT", "0")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value '0' for 'PROBE_TIMEOUT': the probe timeout must be longer than 0"
        );
    }
}
