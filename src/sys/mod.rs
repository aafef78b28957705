//! The operating-system seam: processes ([`exec`]), network namespaces ([`netns`]), raw netlink
//! ([`netlink`]) and what meshcap asks the kernel through it ([`kernel`]), host files
//! ([`host`]), files written whole ([`outfile`]) and deferred signals ([`signals`]). Nothing here knows Istio's policy.

pub mod exec;
pub mod host;
pub mod kernel;
pub mod netlink;
pub mod netns;
pub mod outfile;
pub mod signals;
