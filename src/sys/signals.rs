//! Signals during the part of a run that changes rules: a terminal's Ctrl-C, a `kill` or a
//! hang-up must not cut meshcap between two restore transactions (iptables-restore commits
//! table by table, so a family would be left half applied). While a [`Deferred`] guard lives,
//! SIGINT, SIGTERM, SIGHUP and SIGQUIT are only recorded; meshcap finishes (or rolls back),
//! then reports the signal as a failure (the caller asks [`Deferred::pending`]). The restore
//! children run in their own process group ([`super::exec`]), so a terminal's SIGINT reaches
//! meshcap only. SIGKILL cannot be deferred: the next run recognises what it leaves
//! (`apply::payloads::Found::Interrupted`).

use std::sync::atomic::{AtomicI32, Ordering};

const DEFERRED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The first signal received while deferred (0: none).
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: libc::c_int) {
    // Async-signal-safe: one atomic compare-and-swap.
    let _ = PENDING.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// Defers the terminating signals until dropped (see the module doc).
pub(crate) struct Deferred {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl Deferred {
    pub(crate) fn new() -> Deferred {
        let mut previous = Vec::new();
        for sig in DEFERRED {
            // SAFETY: a zeroed sigaction is a valid value; the handler only stores an atomic.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = record as extern "C" fn(libc::c_int) as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &action, &mut old) == 0 {
                    // A signal ignored on entry (nohup, an init process) stays ignored.
                    if old.sa_sigaction == libc::SIG_IGN {
                        libc::sigaction(sig, &old, std::ptr::null_mut());
                    } else {
                        previous.push((sig, old));
                    }
                }
            }
        }
        Deferred { previous }
    }

    /// The signal received so far, if any.
    pub(crate) fn pending() -> Option<i32> {
        Some(PENDING.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }
}

impl Default for Deferred {
    fn default() -> Self {
        Deferred::new()
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: restores the disposition saved in `new`.
            unsafe {
                libc::sigaction(*sig, old, std::ptr::null_mut());
            }
        }
    }
}
