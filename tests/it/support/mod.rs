//! What every test module shares, so that each test states only what it checks:
//!
//! - [`api`]: the meshcap library items the tests use, imported there and nowhere else (when
//!   the library's module paths move, that file alone changes), and the plan of a command line;
//! - [`cmd`]: [`Meshcap`], a builder that runs the built binary (bounded in time, clean
//!   environment); [`run`]: the [`Run`] it returns, with assertion helpers that print the
//!   whole run when they fail;
//! - [`flags`]: the standard flag sets ([`SIDECAR`], [`TPROXY`]) and argument-vector helpers;
//! - [`netns`]: [`Netns`], a throw-away network namespace removed on drop, and
//!   [`needs_netns!`], the gate that fails a test loudly when namespaces cannot be created
//!   (or, with `MESHCAP_SKIP_NETNS=1` outside CI, skips it with a `SKIPPED (netns)` line);
//! - [`netfilter`]: reading a namespace's rules back (iptables saves, nft listings);
//! - [`accounts`]: [`Accounts`], a test's own passwd and group files, bind-mounted over
//!   `/etc/passwd` and `/etc/group` in a private mount namespace of one command;
//! - [`files`]: temporary directories, stand-in programs and `PATH` values.

pub mod accounts;
pub mod api;
pub mod cmd;
pub mod files;
pub mod flags;
pub mod netfilter;
pub mod netns;
pub mod run;

pub use accounts::Accounts;
pub use cmd::{Meshcap, meshcap_bin};
pub use files::{TempDir, real};
pub use flags::{SIDECAR, TPROXY, argv};
pub use netfilter::Variant;
pub use netns::Netns;
pub(crate) use netns::needs_netns;
pub use run::Run;
