//! Interface settings: interfaces never captured (`-c`) and virtual interfaces whose inbound
//! traffic is captured as outbound (`-k`).

use super::source::{Input, Sourced, list_or_empty, text_of};
use crate::error::{Error, Result};
use crate::values::Iface;

/// The interface lists and their raw text for the config dump.
pub(super) struct Interfaces {
    pub(crate) exclude: Vec<Iface>,
    pub(crate) virtual_: Vec<Iface>,
    pub(crate) exclude_text: String,
    pub(crate) virtual_text: String,
    /// Where each list came from (for errors that depend on other settings).
    exclude_src: Option<Sourced>,
    virtual_src: Option<Sourced>,
}

impl Interfaces {
    /// With `--native-nftables`, refuses the bare wildcard `+` (every interface): iptables reads
    /// `-i +` as any interface, but nft refuses the all-wildcard name `*` ("All-wildcard strings
    /// are not supported") and has no other spelling of it in a name match, so the transaction
    /// would not load (istio-compat §8.3).
    pub(super) fn check_for_nft(&self, native_nftables: bool) -> Result<()> {
        if !native_nftables {
            return Ok(());
        }
        let lists = [(&self.exclude, &self.exclude_src), (&self.virtual_, &self.virtual_src)];
        for (list, src) in lists {
            if let (true, Some(src)) = (list.iter().any(|i| i.as_str() == "+"), src) {
                return Err(Error::invalid(
                    &src.source,
                    &src.text,
                    "'+' (every interface) cannot be written in nftables (nft refuses an all-wildcard \
                     interface name); with --native-nftables list the interfaces, or use the iptables backend",
                ));
            }
        }
        Ok(())
    }
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
        exclude_src,
        virtual_src,
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

    #[test]
    fn every_interface_is_refused_for_nftables_only() {
        let flags = |native| CaptureFlags {
            exclude_interfaces: Some("eth0,+".into()),
            native_nftables: native,
            ..Default::default()
        };
        assert!(cfg(flags(None), &[]).is_ok(), "iptables reads -i + as any interface");
        let e = cfg(flags(Some("true".into())), &[]).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid value 'eth0,+' for '--istio-exclude-interfaces': '+' (every interface) cannot be written in nftables"),
            "{e}"
        );
        let e = cfg(
            CaptureFlags::default(),
            &[("KUBE_VIRT_INTERFACES", "+"), ("NATIVE_NFTABLES", "true")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("invalid value '+' for 'KUBE_VIRT_INTERFACES'"), "{e}");
        // A prefix wildcard is nft's `veth*`.
        let ok = CaptureFlags {
            kube_virt_interfaces: Some("veth+".into()),
            native_nftables: Some("true".into()),
            ..Default::default()
        };
        assert!(cfg(ok, &[]).is_ok());
    }
}
