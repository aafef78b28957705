//! The operating-system seam: processes (`exec`), network namespaces ([`netns`]), raw netlink
//! (`netlink`) and what meshcap asks the kernel through it (`kernel`), host files
//! ([`host`]), files written whole (`outfile`) and deferred signals (`signals`). Nothing here knows Istio's policy.

pub(crate) mod exec;
pub mod host;
pub(crate) mod kernel;
pub(crate) mod netlink;
pub mod netns;
pub(crate) mod outfile;
pub(crate) mod signals;
