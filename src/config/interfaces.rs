//! Interface settings: interfaces never captured (`-c`) and virtual interfaces whose inbound
//! traffic is captured as outbound (`-k`).

use super::source::{Input, list_or_empty, text_of};
use crate::error::Result;
use crate::values::Iface;

/// The interface lists and their raw text for the config dump.
pub(super) struct Interfaces {
    pub(crate) exclude: Vec<Iface>,
    pub(crate) virtual_: Vec<Iface>,
    pub(crate) exclude_text: String,
    pub(crate) virtual_text: String,
}

/// `-c` / `ISTIO_EXCLUDE_INTERFACES` and `-k` / `KUBE_VIRT_INTERFACES`.
pub(super) fn interfaces(i: &Input) -> Result<Interfaces> {
    let f = i.flags;
    let exclude_src = i.pick(
        &f.exclude_interfaces,
        "istio-exclude-interfaces",
        Some("ISTIO_EXCLUDE_INTERFACES"),
        None,
    )?;
    let exclude = list_or_empty(&exclude_src, Iface::parse)?;
    let virtual_src = i.pick(
        &f.kube_virt_interfaces,
        "kube-virt-interfaces",
        Some("KUBE_VIRT_INTERFACES"),
        None,
    )?;
    let virtual_ = list_or_empty(&virtual_src, Iface::parse)?;
    Ok(Interfaces {
        exclude,
        virtual_,
        exclude_text: text_of(&exclude_src),
        virtual_text: text_of(&virtual_src),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::cfg;
    use crate::cli::CaptureFlags;

    #[test]
    fn lists_from_flag_or_environment() {
        let flags = CaptureFlags {
            exclude_interfaces: Some("eth9, veth+".into()),
            ..Default::default()
        };
        let c = cfg(flags, &[("KUBE_VIRT_INTERFACES", "eth1")]).unwrap();
        let names = |l: &[crate::values::Iface]| l.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(names(&c.exclude_interfaces), ["eth9", "veth+"]);
        assert_eq!(names(&c.virtual_interfaces), ["eth1"]);
        assert_eq!(c.dump.exclude_interfaces, "eth9, veth+");
        let e = cfg(CaptureFlags::default(), &[("KUBE_VIRT_INTERFACES", "a b")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid value 'a b' for 'KUBE_VIRT_INTERFACES'"),
            "{e}"
        );
    }
}
