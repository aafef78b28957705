//! Routing state the capture needs besides rules (istio-compat §5.8), programmed idempotently through
//! [`Kernel`]: `::6/128` on `lo` when IPv6 is on, and for TPROXY `fwmark <mark> lookup <table>`
//! plus `local default dev lo table <table>` per family. Unlike Istio, a re-run adds no
//! duplicate policy rule (an identical rule is looked for first), and cleanup removes them.

use crate::error::Result;
use crate::plan::{PASSTHROUGH_V6, Routes};
use crate::sys::kernel::Kernel;
use crate::values::{Family, Mark, RouteTable};

/// Programs `routes`; returns what was changed, for the log.
pub(crate) fn apply(kernel: &dyn Kernel, routes: &Routes) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if routes.v6_passthrough_address && !kernel.lo_has_address(PASSTHROUGH_V6)? {
        kernel.add_lo_address(PASSTHROUGH_V6, 128)?;
        done.push("Added ::6 address on the loopback iface".to_string());
    }
    if let Some(t) = &routes.tproxy {
        for &family in &t.families {
            // Only Istio's own spelling (proto unspec) counts as present; a copy an older
            // meshcap added with `proto boot` is left for cleanup and `check` reports it.
            if !kernel.fwmark_rule_protocols(family, t.mark.0, t.table.0)?.contains(&0) {
                kernel.add_fwmark_rule(family, t.mark.0, t.table.0)?;
                done.push(format!(
                    "Added {family} policy rule: fwmark {} lookup {}",
                    t.mark, t.table
                ));
            }
            if !kernel.has_local_default(family, t.table.0)? {
                kernel.add_local_default(family, t.table.0)?;
                done.push(format!("Added {family} route: local default dev lo table {}", t.table));
            }
        }
    }
    Ok(done)
}

/// Removes what [`apply`] adds for `mark`/`table`, in both families (every copy of the policy
/// rule, including duplicates an earlier Istio run left); returns what was removed.
pub(crate) fn cleanup(kernel: &dyn Kernel, mark: Mark, table: RouteTable) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for family in Family::ALL {
        let n = kernel.fwmark_rules(family, mark.0, table.0)?;
        for _ in 0..n {
            kernel.del_fwmark_rule(family, mark.0, table.0)?;
        }
        if n > 0 {
            done.push(format!(
                "Removed {family} policy rule: fwmark {mark} lookup {table} (x{n})"
            ));
        }
        if kernel.has_local_default(family, table.0)? {
            kernel.del_local_default(family, table.0)?;
            done.push(format!("Removed {family} route: local default dev lo table {table}"));
        }
    }
    if kernel.lo_has_address(PASSTHROUGH_V6)? {
        kernel.del_lo_address(PASSTHROUGH_V6, 128)?;
        done.push("Removed ::6 address from the loopback iface".to_string());
    }
    Ok(done)
}
