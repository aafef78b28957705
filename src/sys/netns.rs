//! The target network namespace: `--network-namespace` as a path (`/var/run/netns/NAME`,
//! `/proc/PID/ns/net`) or a bare name (looked up as `/var/run/netns/NAME`), opened once and
//! checked to really be a network namespace. meshcap enters it itself: children with `setns` in
//! `pre_exec` (see `exec`), and its own netlink and `/proc` work (`within`) either on the
//! thread that runs the command, entered once for the whole command (`enter`), or, where that
//! did not happen, on a dedicated thread per call ([`Netns::run_in`]). Entering once matters on
//! a loaded machine: every new thread waits for a core before it runs (measured: up to ~4 ms
//! each), and a command used to enter three or four times (the lock, the kernel facts, the
//! nft dump, the batch). Failing to open or enter it is an error naming the path; nothing ever
//! falls back to the current namespace.

use std::cell::Cell;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, quote};

/// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`): the `CLONE_NEW*` type of an nsfs file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// An opened network namespace.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    file: File,
    /// The namespace's identity (device and inode of its nsfs file).
    id: (u64, u64),
}

thread_local! {
    /// The namespace this thread entered with [`enter`] (its identity), while it is inside.
    static INSIDE: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// The path `--network-namespace` names: a value with a `/` is a path, anything else a name
/// under `/var/run/netns`.
pub(crate) fn resolve(spec: &str) -> Result<PathBuf> {
    if spec.contains('/') {
        return Ok(PathBuf::from(spec));
    }
    if spec == "." || spec == ".." {
        return Err(Error::invalid(
            "--network-namespace",
            spec,
            "expected a namespace name or a path",
        ));
    }
    Ok(Path::new("/var/run/netns").join(spec))
}

impl Netns {
    /// Opens the namespace `spec` names and checks that it is a network namespace.
    pub fn open(spec: &str) -> Result<Netns> {
        let path = resolve(spec)?;
        let shown = quote(&path.display().to_string());
        // Non-blocking: a FIFO (or a device) named by mistake or malice must not hang the open.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
            .map_err(|e| Error::system(format!("cannot open network namespace {shown}"), e))?;
        // SAFETY: ioctl on a descriptor we own; NS_GET_NSTYPE takes no argument.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind < 0 {
            let e = std::io::Error::last_os_error();
            let why = if e.raw_os_error() == Some(libc::ENOTTY) || e.raw_os_error() == Some(libc::EINVAL) {
                "not a namespace file".to_string()
            } else {
                e.to_string()
            };
            return Err(Error::NotNetns {
                path: path.display().to_string(),
                why,
            });
        }
        if kind != libc::CLONE_NEWNET {
            return Err(Error::NotNetns {
                path: path.display().to_string(),
                why: "it is another kind of namespace".into(),
            });
        }
        let meta = file
            .metadata()
            .map_err(|e| Error::system(format!("cannot open network namespace {shown}"), e))?;
        Ok(Netns {
            path,
            file,
            id: (meta.dev(), meta.ino()),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path still names the namespace that was opened. When the namespace is
    /// deleted (`ip netns del`, the process of `/proc/PID/ns/net` exits) while meshcap holds
    /// it, meshcap's descriptor keeps it alive but nobody else can reach it any more.
    pub(crate) fn still_named(&self) -> bool {
        let Ok(held) = self.file.metadata() else { return false };
        std::fs::metadata(&self.path).is_ok_and(|now| now.dev() == held.dev() && now.ino() == held.ino())
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on a new thread that first entered this namespace. Sockets `f` creates belong to
    /// the namespace for their whole life, whichever thread uses them later.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on this thread only, with a descriptor `self` keeps open.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
        })
        .map_err(|e| {
            Error::system(
                format!(
                    "cannot enter network namespace {}",
                    quote(&self.path.display().to_string())
                ),
                e,
            )
        })
    }
}

/// An exclusive lock on a network namespace, held until dropped (or the process exits).
///
/// It is an abstract unix socket name (`@meshcap/lock`) bound inside the namespace: abstract
/// names are scoped to the network namespace, only one socket can hold a name, the kernel
/// frees it when the holder dies, and no file system is needed. Concurrent meshcap runs in
/// one namespace therefore take turns (the second finds the rules in place), whichever path
/// named the namespace, and without touching the `flock` the xtables lock uses on the
/// namespace path in CNI mode.
#[derive(Debug)]
pub(crate) struct NsLock {
    _socket: OwnedFd,
}

const LOCK_NAME: &[u8] = b"\0meshcap/lock";

fn bind_lock(deadline: std::time::Instant) -> std::io::Result<Option<OwnedFd>> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is fresh and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_un is valid; the name fits in sun_path.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(LOCK_NAME) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + LOCK_NAME.len()) as libc::socklen_t;
    loop {
        // SAFETY: binding our socket to an initialised address of length `len`.
        let r = unsafe { libc::bind(fd.as_raw_fd(), &addr as *const _ as *const libc::sockaddr, len) };
        if r == 0 {
            return Ok(Some(fd));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EADDRINUSE) {
            return Err(e);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Locks `netns` (or the current namespace), waiting at most `timeout`.
pub(crate) fn lock(netns: Option<&Netns>, timeout: std::time::Duration) -> Result<NsLock> {
    let shown = netns.map_or("the current network namespace".to_string(), |n| {
        quote(&n.path.display().to_string())
    });
    let deadline = std::time::Instant::now() + timeout;
    match within(netns, move || bind_lock(deadline))? {
        Ok(Some(socket)) => Ok(NsLock { _socket: socket }),
        Ok(None) => Err(Error::Busy {
            netns: netns.map(|n| n.path.display().to_string()),
            secs: timeout.as_secs(),
        }),
        Err(e) => Err(Error::system(format!("cannot lock {shown}"), e)),
    }
}

/// Runs `f` in `netns`: right here when this thread is inside it ([`enter`]) or no namespace
/// is named, else on a dedicated thread that enters it first.
pub(crate) fn within<T: Send>(netns: Option<&Netns>, f: impl FnOnce() -> T + Send) -> Result<T> {
    match netns {
        Some(ns) if INSIDE.get() != Some(ns.id) => ns.run_in(f),
        _ => Ok(f()),
    }
}

/// The current thread inside a network namespace, until dropped: then it returns to the
/// namespace it came from.
#[derive(Debug)]
pub(crate) struct Entered {
    original: File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        INSIDE.set(None);
        // SAFETY: setns on this thread with a descriptor we own.
        if unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            // The command is over by then; only a library caller's thread would notice.
            tracing::debug!(
                "cannot return to the original network namespace: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Enters `netns` on the current thread for the rest of a command (until the guard drops), so
/// every [`within`] after it runs right here: one `setns`, no thread. `None` when no namespace is
/// named, or when it cannot be entered this way (no `/proc` to come back by, no rights): then
/// each [`within`] enters on its own thread as before and reports its own error, naming the
/// path.
pub(crate) fn enter(netns: Option<&Netns>) -> Option<Entered> {
    let ns = netns?;
    let original = match File::open("/proc/thread-self/ns/net") {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("the namespace is entered per call: cannot open /proc/thread-self/ns/net ({e})");
            return None;
        }
    };
    // SAFETY: setns on this thread only, with a descriptor `ns` keeps open.
    if unsafe { libc::setns(ns.raw_fd(), libc::CLONE_NEWNET) } != 0 {
        tracing::debug!("the namespace is entered per call: {}", std::io::Error::last_os_error());
        return None;
    }
    INSIDE.set(Some(ns.id));
    Some(Entered { original })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(resolve("pod1").unwrap(), Path::new("/var/run/netns/pod1"));
        assert_eq!(resolve("/proc/1/ns/net").unwrap(), Path::new("/proc/1/ns/net"));
        assert_eq!(resolve("./x").unwrap(), Path::new("./x"));
        assert!(resolve("..").is_err());
    }

    #[test]
    fn files_that_are_not_network_namespaces_are_refused() {
        let e = Netns::open("/etc/hostname").unwrap_err().to_string();
        assert!(e.contains("'/etc/hostname' is not a network namespace"), "{e}");
        let dir = std::env::temp_dir().join(format!("meshcap-netns-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path we own, with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A FIFO without a writer would block a plain open forever.
        let e = Netns::open(fifo.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("is not a network namespace"), "{e}");
        let e = Netns::open(dir.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("is not a network namespace"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        let e = Netns::open("/dev/null").unwrap_err().to_string();
        assert!(e.contains("'/dev/null' is not a network namespace"), "{e}");
        let e = Netns::open("/nonexistent/ns").unwrap_err().to_string();
        assert!(e.starts_with("cannot open network namespace '/nonexistent/ns'"), "{e}");
        if Path::new("/proc/self/ns/uts").exists() {
            let e = Netns::open("/proc/self/ns/uts").unwrap_err().to_string();
            assert!(e.contains("another kind of namespace"), "{e}");
        }
    }

    #[test]
    fn the_namespace_lock_excludes_a_second_holder() {
        let first = lock(None, std::time::Duration::from_secs(1)).unwrap();
        let e = lock(None, std::time::Duration::from_millis(50))
            .unwrap_err()
            .to_string();
        assert!(e.contains("another meshcap"), "{e}");
        drop(first);
        lock(None, std::time::Duration::from_millis(50)).unwrap();
    }

    #[test]
    fn the_current_namespace_opens() {
        let ns = Netns::open("/proc/self/ns/net").unwrap();
        assert!(ns.still_named());
        let inode = |p: &str| {
            std::fs::metadata(p)
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .ok()
        };
        let inside = ns.run_in(|| inode("/proc/thread-self/ns/net"));
        // Entering needs CAP_SYS_ADMIN; without it the error names the path.
        match inside {
            Ok(i) => assert_eq!(i, inode("/proc/self/ns/net")),
            Err(e) => assert!(e.to_string().contains("/proc/self/ns/net"), "{e}"),
        }
    }

    #[test]
    fn once_entered_within_runs_on_this_thread() {
        let ns = Netns::open("/proc/self/ns/net").unwrap();
        let here = std::thread::current().id();
        assert_ne!(within(Some(&ns), || std::thread::current().id()).ok(), Some(here));
        let Some(inside) = enter(Some(&ns)) else {
            return; // no CAP_SYS_ADMIN: every call enters on its own thread, as above
        };
        assert_eq!(within(Some(&ns), || std::thread::current().id()).unwrap(), here);
        drop(inside);
        assert_ne!(within(Some(&ns), || std::thread::current().id()).ok(), Some(here));
        assert!(enter(None).is_none());
    }
}
