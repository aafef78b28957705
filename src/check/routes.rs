//! `check` for the routing state the capture needs besides rules (istio-compat §5.8, programmed by
//! `apply::routes`): with TPROXY, `fwmark <mark> lookup <table>` and `local default dev lo
//! table <table>` per planned family; with IPv6, `::6/128` on `lo`. Planned but absent is
//! missing; present but not planned (left by an earlier TPROXY run under a REDIRECT plan, or by
//! an IPv6 run when IPv6 is now off) is unexpected, and so is every extra copy of the policy rule
//! (Istio adds one per run), and every copy with a protocol (`proto boot`: Istio's has none).
//! The items are spelled as the `ip` commands that show them.

use crate::error::Result;
use crate::plan::PASSTHROUGH_V6;
use crate::plan::Routes;
use crate::sys::kernel::Kernel;
use crate::values::{Family, Mark, RouteTable};

/// The routing comparison: `ip` command spellings of what is missing and what is unexpected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RoutesDrift {
    pub(crate) missing: Vec<String>,
    pub(crate) unexpected: Vec<String>,
}

impl RoutesDrift {
    pub(crate) fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }

    /// `routes: in sync`, or the counts.
    pub(crate) fn summary(&self) -> String {
        if self.is_clean() {
            "routes: in sync".to_string()
        } else {
            format!(
                "routes: {} missing, {} unexpected",
                self.missing.len(),
                self.unexpected.len()
            )
        }
    }

    /// `+` lines (planned, absent), then `-` lines (present, not planned).
    pub(crate) fn lines(&self) -> String {
        let mut out = String::new();
        for m in &self.missing {
            out.push_str(&format!("+ {m}\n"));
        }
        for u in &self.unexpected {
            out.push_str(&format!("- {u}\n"));
        }
        out
    }
}

/// `ip rule`'s name of a rule protocol (`/etc/iproute2/rt_protos`).
fn protocol_name(p: u8) -> String {
    match p {
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        p => p.to_string(),
    }
}

fn ip_flag(family: Family) -> &'static str {
    match family {
        Family::V4 => "-4",
        Family::V6 => "-6",
    }
}

/// Compares the namespace `kernel` reads with the plan's `routes`. `mark` and `table` are the
/// configured TPROXY values, looked for in every family even when the plan has no TPROXY (as
/// cleanup removes them).
pub(crate) fn compare(kernel: &dyn Kernel, routes: &Routes, mark: Mark, table: RouteTable) -> Result<RoutesDrift> {
    let mut drift = RoutesDrift::default();
    for family in Family::ALL {
        let planned = routes.tproxy.as_ref().filter(|t| t.families.contains(&family));
        let (mark, table) = planned.map_or((mark, table), |t| (t.mark, t.table));
        let rule = format!("ip {} rule fwmark {mark} lookup {table}", ip_flag(family));
        let protocols = kernel.fwmark_rule_protocols(family, mark.0, table.0)?;
        // Istio's rule has no protocol (`ip rule add`): a copy with one (an older meshcap's
        // `proto boot`) is not Istio's state, whatever the plan.
        let istio = protocols.iter().filter(|&&p| p == 0).count();
        for &p in protocols.iter().filter(|&&p| p != 0) {
            drift.unexpected.push(format!("{rule} proto {}", protocol_name(p)));
        }
        match (planned.is_some(), istio) {
            (true, 0) => drift.missing.push(rule),
            (true, n) => {
                for _ in 1..n {
                    drift.unexpected.push(format!("{rule}  # duplicate"));
                }
            }
            (false, n) => {
                for _ in 0..n {
                    drift.unexpected.push(rule.clone());
                }
            }
        }
        let route = format!("ip {} route local default dev lo table {table}", ip_flag(family));
        match (planned.is_some(), kernel.has_local_default(family, table.0)?) {
            (true, false) => drift.missing.push(route),
            (false, true) => drift.unexpected.push(route),
            _ => {}
        }
    }
    let address = format!("ip -6 addr {PASSTHROUGH_V6}/128 dev lo");
    match (routes.v6_passthrough_address, kernel.lo_has_address(PASSTHROUGH_V6)?) {
        (true, false) => drift.missing.push(address),
        (false, true) => drift.unexpected.push(address),
        _ => {}
    }
    Ok(drift)
}
